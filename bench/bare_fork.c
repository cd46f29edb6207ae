/*
 * bare_fork: the physical limit of fork -> _exit -> waitpid for a process
 * with a given resident memory.
 *
 * usage: bare_fork <MB> <iterations>
 * prints: per_op_us=<float> rss_kb=<VmRSS of this process>
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long vm_rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s <MB> <iterations>\n", argv[0]);
        return 2;
    }
    long mb = strtol(argv[1], NULL, 10);
    long iters = strtol(argv[2], NULL, 10);
    if (mb < 0 || iters <= 0) {
        fprintf(stderr, "bare_fork: MB must be >= 0 and iterations > 0\n");
        return 2;
    }

    size_t size = (size_t)mb << 20;
    char *heap = NULL;
    if (size > 0) {
        heap = malloc(size);
        if (!heap) {
            perror("malloc");
            return 1;
        }
        memset(heap, 0x5a, size); /* non-zero: every page really resident */
    }

    double start = now_s();
    for (long i = 0; i < iters; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 1;
        }
        if (pid == 0)
            _exit(0);
        int status;
        while (waitpid(pid, &status, 0) < 0) {
            if (errno != EINTR) {
                perror("waitpid");
                return 1;
            }
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "bare_fork: child ended abnormally (status %d)\n", status);
            return 1;
        }
    }
    double elapsed = now_s() - start;

    /* keep the heap alive (and used) until after the measurement */
    volatile char sink = heap ? heap[size - 1] : 0;
    (void)sink;

    printf("per_op_us=%.1f rss_kb=%ld\n", elapsed / (double)iters * 1e6, vm_rss_kb());
    free(heap);
    return 0;
}
