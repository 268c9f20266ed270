/*
 * main.c - apiaryd's command line.
 *
 *   apiaryd [-c FILE] [-p PIDFILE] [-o KEY=VALUE]... [-d]   run the server
 *   apiaryd ... -t                  test the configuration, print it
 *   apiaryd ... -s stop|quit|reload|reopen|upgrade   signal the master
 *   apiaryd ... migrate             apply pending sql/ migrations
 *
 * Settings are applied in SPEC 7 order: defaults, then the file, then
 * APIARY_* environment variables, then flags (-p, -o) in the order given.
 * load_config() does that from the saved command line, at start and again
 * for every reload (HUP), so a reload sees exactly what a restart would.
 */
#include <errno.h>
#include <limits.h>
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
            "stop|quit|reload|reopen|upgrade\n"
            "       apiaryd [-c FILE] [-o KEY=VALUE]... migrate\n"
            "\n"
            "  -c FILE        configuration file (key = value lines)\n"
            "  -o KEY=VALUE   set one configuration key (repeatable)\n"
            "  -p PIDFILE     pidfile path (same as -o pidfile=...)\n"
            "  -d             run in the background (daemonize)\n"
            "  -t             test the configuration, print the effective "
            "settings, exit\n"
            "  -e             print an example configuration (every key, "
            "documented)\n"
            "  -s SIGNAL      send stop (TERM), quit (QUIT), reload (HUP), "
            "reopen (USR1)\n"
            "                 or upgrade (USR2) to the master named by the "
            "pidfile\n"
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
                {"reopen", SIGUSR1},
                {"upgrade", SIGUSR2}};
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
                "reload, reopen or upgrade)\n",
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

static int saved_argc;
static char **saved_argv;

/*
 * Defaults, file, environment, then -p/-o flags in order, from the saved
 * command line (master_load_fn).  0, or -1 with diag filled.
 */
static int
load_config(struct config *cfg, char *diag, size_t diag_len)
{
    const char *conf_file = NULL;
    int opt;

    config_defaults(cfg);
    opterr = 0;
    optind = 1;
    while ((opt = getopt(saved_argc, saved_argv, "c:o:p:s:dteh")) != -1)
        if (opt == 'c')
            conf_file = optarg;
    if (conf_file && config_load_file(cfg, conf_file, diag, diag_len) < 0)
        return -1;
    if (config_load_env(cfg, environ, diag, diag_len) < 0)
        return -1;
    optind = 1;
    while ((opt = getopt(saved_argc, saved_argv, "c:o:p:s:dteh")) != -1) {
        if (opt == 'o') {
            char key[64];
            const char *eq = optarg ? strchr(optarg, '=') : NULL;
            size_t kl = eq ? (size_t)(eq - optarg) : 0;
            if (eq == NULL || kl == 0 || kl >= sizeof(key)) {
                snprintf(diag, diag_len, "-o %s: expected KEY=VALUE", optarg);
                return -1;
            }
            memcpy(key, optarg, kl);
            key[kl] = '\0';
            if (config_set(cfg, key, eq + 1, "-o", diag, diag_len) < 0)
                return -1;
        } else if (opt == 'p') {
            if (config_set(cfg, "pidfile", optarg, "-p", diag, diag_len) < 0)
                return -1;
        }
    }
    config_finish(cfg);
    return 0;
}

int
main(int argc, char *argv[])
{
    static char exe[PATH_MAX];
    struct config cfg;
    char diag[CONFIG_DIAG_MAX];
    const char *conf_file = NULL, *signal_name = NULL;
    int test_only = 0, daemonize = 0, opt;
    char diag_log[256];
    ssize_t n;

    /* before setproctitle_init() moves argv around: the binary's path
     * (the USR2 upgrade starts whatever file is there then) and a copy of
     * the command line it was started with */
    n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    exe[n > 0 ? n : 0] = '\0';
    saved_argc = argc;
    saved_argv = calloc((size_t)argc + 1, sizeof(char *));
    if (saved_argv == NULL) {
        fprintf(stderr, "apiaryd: out of memory\n");
        return 1;
    }
    for (int i = 0; i < argc; i++)
        if ((saved_argv[i] = strdup(argv[i])) == NULL) {
            fprintf(stderr, "apiaryd: out of memory\n");
            return 1;
        }
    setproctitle_init(argc, argv, environ);

    /* the flags that are not settings; bad usage is reported here */
    opterr = 1;
    optind = 1;
    while ((opt = getopt(saved_argc, saved_argv, "c:o:p:s:dteh")) != -1) {
        switch (opt) {
        case 'c':
            conf_file = optarg;
            break;
        case 'o':
        case 'p':
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
        case 'e':
            config_print_example(stdout);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 1;
        }
    }
    int first_arg = optind;
    if (load_config(&cfg, diag, sizeof(diag)) < 0) {
        fprintf(stderr, "apiaryd: %s\n", diag);
        return 1;
    }
    if (first_arg < argc && strcmp(saved_argv[first_arg], "migrate") == 0 &&
        first_arg + 1 == argc)
        return migrate_run(&cfg);
    if (first_arg < argc) {
        fprintf(stderr, "apiaryd: unexpected argument \"%s\"\n",
                saved_argv[first_arg]);
        usage(stderr);
        return 1;
    }

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
    if (daemonize && strcmp(cfg.error_log, "-") == 0)
        fprintf(stderr, "apiaryd: warning: error_log is stderr, which a "
                        "daemon closes once it serves; set error_log to a "
                        "file to keep the log\n");
    const struct master_opts mo = {
        .daemonize = daemonize != 0,
        .load = load_config,
        .exe = exe[0] ? exe : NULL,
        .argv = saved_argv,
    };
    return master_run(&cfg, &mo);
}
