// Fatal-error reporting and checked allocation. See error.h for the two error tiers.
#include "util/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"

void error_fatal(const char *file, int line, const char *func, const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fprintf(stderr, "[%d] %s:%d %s: ", dist_world_rank(), file, line, func);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    dist_world_abort(134);
}

void *xmalloc(size_t bytes)
{
    void *p = NULL;
    size_t rounded = (bytes + 63) / 64 * 64;
    if (rounded == 0)
        rounded = 64;
    p = aligned_alloc(64, rounded);
    if (!p)
        FATAL("out of memory allocating %zu bytes", bytes);
    return p;
}

void *xcalloc(size_t count, size_t size)
{
    void *p = NULL;
    if (size != 0 && count > (size_t)-1 / size)
        FATAL("allocation size overflow: %zu x %zu", count, size);
    p = xmalloc(count * size);
    memset(p, 0, count * size);
    return p;
}

void err_printf(const char *fmt, ...)
{
    va_list ap;
    int size = dist_world_size();
    fflush(stdout);
    if (size > 1)
        fprintf(stderr, "canary [rank %d]: ", dist_world_rank());
    else
        fputs("canary: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
}
