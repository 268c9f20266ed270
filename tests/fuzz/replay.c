/*
 * replay.c - runs a libFuzzer target without libFuzzer.
 *
 * Linked with one tests/fuzz/fuzz_<name>.c by the Makefile's replay rule
 * (gcc, the normal or the sanitizer build), it calls LLVMFuzzerTestOneInput
 * once for every regular file in every directory named on the command line:
 * the committed corpus and the past crashes.  A directory that does not
 * exist is skipped (a target may have no regressions yet); names starting
 * with '.' (.gitkeep) are skipped.  Files run in name order, and each is
 * passed in a malloc'd buffer of exactly its size, so ASan catches
 * over-reads as libFuzzer would.  Exits 0 after printing how many files
 * ran, 1 if a directory or file cannot be read; a failing invariant in the
 * target aborts.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reads path into a buffer of exactly its size; -1 on error. */
static int
run_file(const char *path)
{
    struct stat st;
    uint8_t *data;
    size_t size;
    FILE *f;

    if (stat(path, &st) != 0) {
        fprintf(stderr, "replay: stat(\"%s\") failed: %s\n", path,
                strerror(errno));
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        return 0;
    }
    size = (size_t)st.st_size;
    data = malloc(size > 0 ? size : 1);
    f = fopen(path, "rb");
    if (data == NULL || f == NULL) {
        fprintf(stderr, "replay: cannot read \"%s\": %s\n", path,
                strerror(errno));
        free(data);
        if (f != NULL) {
            (void)fclose(f);
        }
        return -1;
    }
    if (fread(data, 1, size, f) != size) {
        fprintf(stderr, "replay: short read on \"%s\"\n", path);
        (void)fclose(f);
        free(data);
        return -1;
    }
    if (fclose(f) != 0) {
        fprintf(stderr, "replay: fclose(\"%s\") failed: %s\n", path,
                strerror(errno));
        free(data);
        return -1;
    }
    (void)LLVMFuzzerTestOneInput(data, size);
    free(data);
    return 1;
}

static int
not_hidden(const struct dirent *d)
{
    return d->d_name[0] != '.';
}

int
main(int argc, char **argv)
{
    unsigned long files = 0, dirs = 0;
    int i, status = 0;

    for (i = 1; i < argc; i++) {
        struct dirent **names;
        int n, k;

        n = scandir(argv[i], &names, not_hidden, alphasort);
        if (n < 0) {
            if (errno == ENOENT) {
                continue;
            }
            fprintf(stderr, "replay: scandir(\"%s\") failed: %s\n", argv[i],
                    strerror(errno));
            status = 1;
            continue;
        }
        dirs++;
        for (k = 0; k < n; k++) {
            size_t len = strlen(argv[i]) + strlen(names[k]->d_name) + 2;
            char *path = malloc(len);
            int rc = -1;

            if (path != NULL) {
                (void)snprintf(path, len, "%s/%s", argv[i], names[k]->d_name);
                rc = run_file(path);
            }
            if (rc < 0) {
                status = 1;
            } else {
                files += (unsigned long)rc;
            }
            free(path);
            free(names[k]);
        }
        free(names);
    }
    printf("%s: ran %lu files from %lu directories\n", argv[0], files, dirs);
    return status;
}
