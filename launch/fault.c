// The CANARY_FAULT test hooks (see fault.h).
#include "launch/fault.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "launch/stop.h"
#include "util/error.h"

struct fault *fault_init(int my_rank)
{
    const char *env = getenv("CANARY_FAULT");
    char kind[16];
    int rank = 0;
    long step = 0;
    if (!env || sscanf(env, "%15[a-z]:%d:%ld", kind, &rank, &step) != 3)
        return NULL;
    if (strcmp(kind, "fsize") == 0) {
        if (rank == my_rank) {
            // A disk that fills: files of this process may not grow past `step` bytes from now
            // on (after MPI is up, whose shared-memory files need more); writes then fail with
            // EFBIG.
            struct rlimit lim = {(rlim_t)step, (rlim_t)step};
            signal(SIGXFSZ, SIG_IGN);
            setrlimit(RLIMIT_FSIZE, &lim);
        }
        return NULL;
    }
    struct fault *f = xcalloc(1, sizeof(*f));
    f->kind = strcmp(kind, "abort") == 0     ? FAULT_ABORT
              : strcmp(kind, "perturb") == 0 ? FAULT_PERTURB
              : strcmp(kind, "stall") == 0   ? FAULT_STALL
              : strcmp(kind, "repeat") == 0  ? FAULT_REPEAT
                                             : FAULT_NONE;
    f->rank = rank;
    f->step = step;
    return f;
}

void fault_free(struct fault *f)
{
    free(f);
}

void fault_inject(const struct fault *f, int rank, long step, float *param)
{
    if (!f || f->kind == FAULT_NONE || f->kind == FAULT_REPEAT || rank != f->rank ||
        step != f->step)
        return;
    if (f->kind == FAULT_ABORT)
        FATAL("fault injected by CANARY_FAULT at step %ld", step);
    if (f->kind == FAULT_STALL) {
        struct timespec tick = {0, 10 * 1000 * 1000};
        for (int i = 0; i < 6000 && !stop_requested(); i++)
            nanosleep(&tick, NULL);
        return;
    }
    *param += 1.0f;
}

void fault_corrupt_batch(const struct fault *f, int rank, unsigned long long batch, int *inputs,
                         int *targets, int T, int vocab)
{
    if (!f || f->kind != FAULT_REPEAT || rank != f->rank || f->step < 1 ||
        batch != (unsigned long long)(f->step - 1))
        return;
    for (int t = 0; t < T; t++)
        inputs[t] = targets[t] = vocab - 1;
}
