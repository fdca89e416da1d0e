// provides: ASSERT, FATAL (bugs and broken invariants: print and abort the whole job),
//           xmalloc/xcalloc (abort on exhaustion), err_printf (recoverable errors to stderr).
//
// Two tiers of errors (DESIGN.md §9). This header is the first tier only: a failed ASSERT or a
// FATAL prints "[rank] file:line func: message" ("[rank on host]" with several ranks) and aborts
// every rank through dist/. Recoverable failures (config, files, data) return an int and are
// reported by their caller (err_printf names the rank and host with several ranks); no macro
// here returns or jumps.
#ifndef CANARY_UTIL_ERROR_H
#define CANARY_UTIL_ERROR_H

#include <stddef.h>

#if defined(__GNUC__)
#define CANARY_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define CANARY_NORETURN     __attribute__((noreturn))
#else
#define CANARY_PRINTF(a, b)
#define CANARY_NORETURN
#endif

// Prints the message with its origin and aborts the job. Never returns.
CANARY_NORETURN void error_fatal(const char *file, int line, const char *func, const char *fmt, ...)
    CANARY_PRINTF(4, 5);

#define FATAL(...) error_fatal(__FILE__, __LINE__, __func__, __VA_ARGS__)
#define ASSERT(cond)                                                                               \
    do {                                                                                           \
        if (!(cond))                                                                               \
            error_fatal(__FILE__, __LINE__, __func__, "assertion failed: %s", #cond);              \
    } while (0)

// Allocation that aborts with the requested size on failure; memory is 64-byte aligned so that
// vectorised loops over parameter ranges start on a cache line. Free with free().
void *xmalloc(size_t bytes);
void *xcalloc(size_t count, size_t size);

// A recoverable error message for the user: "canary: <message>\n" on stderr, rank-prefixed when
// the job has more than one rank.
void err_printf(const char *fmt, ...) CANARY_PRINTF(1, 2);

#endif
