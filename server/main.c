/*
 * main.c - apiaryd's command line.
 *
 *   apiaryd [-c FILE] [-p PIDFILE] [-o KEY=VALUE]... [-d]   run the server
 *   apiaryd ... -t                  test the configuration, print it
 *   apiaryd ... -s stop|quit|reload|reopen   signal the running master
 *   apiaryd ... migrate             apply pending sql/ migrations
 *
 * Settings are applied in SPEC 7 order: defaults, then the file, then
 * APIARY_* environment variables, then flags (-p, -o) in the order given.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bsd/unistd.h>

#include "config.h"
#include "edge.h"
#include "log.h"
#include "master.h"
#include "migrate.h"

extern char **environ;

static void
usage(FILE *out)
{
    fprintf(out,
            "usage: apiaryd [-c FILE] [-p PIDFILE] [-o KEY=VALUE]... [-d]\n"
            "       apiaryd [-c FILE] ... -t\n"
            "       apiaryd [-c FILE] [-p PIDFILE] -s "
            "stop|quit|reload|reopen\n"
            "       apiaryd [-c FILE] [-o KEY=VALUE]... migrate\n"
            "\n"
            "  -c FILE        configuration file (key = value lines)\n"
            "  -o KEY=VALUE   set one configuration key (repeatable)\n"
            "  -p PIDFILE     pidfile path (same as -o pidfile=...)\n"
            "  -d             run in the background (daemonize)\n"
            "  -t             test the configuration, print the effective "
            "settings, exit\n"
            "  -s SIGNAL      send stop (TERM), quit (QUIT), reload (HUP) or "
            "reopen (USR1)\n"
            "                 to the master named by the pidfile\n"
            "  -h             this help\n");
}

static int
send_signal(const struct config *cfg, const char *name)
{
    static const struct {
        const char *name;
        int signo;
    } sigs[] = {{"stop", SIGTERM},
                {"quit", SIGQUIT},
                {"reload", SIGHUP},
                {"reopen", SIGUSR1}};
    char buf[32];
    FILE *f;
    long pid;
    int signo = 0;

    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        if (strcmp(name, sigs[i].name) == 0)
            signo = sigs[i].signo;
    if (signo == 0) {
        fprintf(stderr,
                "apiaryd: -s: unknown signal \"%s\" (want stop, quit, "
                "reload or reopen)\n",
                name);
        return 1;
    }
    f = fopen(cfg->pidfile, "r");
    if (f == NULL) {
        fprintf(stderr, "apiaryd: cannot open pidfile %s: %s\n", cfg->pidfile,
                strerror(errno));
        return 1;
    }
    if (fgets(buf, sizeof(buf), f) == NULL ||
        (pid = strtol(buf, NULL, 10)) <= 1) {
        fprintf(stderr, "apiaryd: pidfile %s does not hold a pid\n",
                cfg->pidfile);
        fclose(f);
        return 1;
    }
    fclose(f);
    if (kill((pid_t)pid, signo) < 0) {
        fprintf(stderr, "apiaryd: kill(%ld, %s) failed: %s\n", pid, name,
                strerror(errno));
        return 1;
    }
    return 0;
}

int
main(int argc, char *argv[])
{
    struct config cfg;
    char diag[CONFIG_DIAG_MAX];
    const char *conf_file = NULL, *signal_name = NULL;
    int test_only = 0, daemonize = 0, opt;
    char diag_log[256];

    setproctitle_init(argc, argv, environ);
    config_defaults(&cfg);

    /* first pass: find -c, so the file applies before the other flags */
    opterr = 0;
    while ((opt = getopt(argc, argv, "c:o:p:s:dth")) != -1)
        if (opt == 'c')
            conf_file = optarg;
    if (conf_file &&
        config_load_file(&cfg, conf_file, diag, sizeof(diag)) < 0) {
        fprintf(stderr, "apiaryd: %s\n", diag);
        return 1;
    }
    if (config_load_env(&cfg, environ, diag, sizeof(diag)) < 0) {
        fprintf(stderr, "apiaryd: %s\n", diag);
        return 1;
    }

    optind = 1;
    opterr = 1;
    while ((opt = getopt(argc, argv, "c:o:p:s:dth")) != -1) {
        switch (opt) {
        case 'c':
            break;
        case 'o': {
            char key[64];
            const char *eq = optarg ? strchr(optarg, '=') : NULL;
            size_t kl = eq ? (size_t)(eq - optarg) : 0;
            if (eq == NULL || kl == 0 || kl >= sizeof(key)) {
                fprintf(stderr, "apiaryd: -o %s: expected KEY=VALUE\n", optarg);
                return 1;
            }
            memcpy(key, optarg, kl);
            key[kl] = '\0';
            if (config_set(&cfg, key, eq + 1, "-o", diag, sizeof(diag)) < 0) {
                fprintf(stderr, "apiaryd: %s\n", diag);
                return 1;
            }
            break;
        }
        case 'p':
            if (config_set(&cfg, "pidfile", optarg, "-p", diag, sizeof(diag)) <
                0) {
                fprintf(stderr, "apiaryd: %s\n", diag);
                return 1;
            }
            break;
        case 's':
            signal_name = optarg;
            break;
        case 'd':
            daemonize = 1;
            break;
        case 't':
            test_only = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 1;
        }
    }
    if (optind < argc && strcmp(argv[optind], "migrate") == 0 &&
        optind + 1 == argc) {
        config_finish(&cfg);
        return migrate_run(&cfg);
    }
    if (optind < argc) {
        fprintf(stderr, "apiaryd: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        return 1;
    }
    config_finish(&cfg);

    if (signal_name)
        return send_signal(&cfg, signal_name);
    /* issue 10: what would stop every worker is a config error here */
    char edge_err[CONFIG_DIAG_MAX], edge_warn[CONFIG_DIAG_MAX];
    if (edge_config_check(&cfg, edge_err, sizeof(edge_err), edge_warn,
                          sizeof(edge_warn)) < 0) {
        fprintf(stderr, "apiaryd: %s\n", edge_err);
        return 1;
    }
    if (test_only) {
        printf("# apiaryd effective configuration%s%s\n",
               conf_file ? " from " : "", conf_file ? conf_file : "");
        config_print(&cfg, stdout);
        if (edge_warn[0])
            fprintf(stderr, "apiaryd: warning: %s\n", edge_warn);
        fprintf(stderr, "apiaryd: configuration OK\n");
        return 0;
    }

    log_min_level = (enum log_level)cfg.log_level;
    if (log_open(cfg.error_log, cfg.access_log, diag_log, sizeof(diag_log)) <
        0) {
        fprintf(stderr, "apiaryd: %s\n", diag_log);
        return 1;
    }
    return master_run(&cfg, daemonize);
}
