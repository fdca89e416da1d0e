// provides: timer_now (monotonic seconds) — for progress lines and benchmarks only.
#ifndef CANARY_UTIL_TIMER_H
#define CANARY_UTIL_TIMER_H

#include <time.h>

static inline double timer_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#endif
