// Fatal-error reporting and checked allocation. See error.h for the two error tiers.
#include "util/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dist/dist.h"

// "[3 on node7] " with more than one rank ("[0] " alone), so a message from a cluster names
// the host it came from.
static void rank_prefix(char *out, size_t len, const char *open, const char *close)
{
    char host[128] = "?";
    if (dist_world_size() <= 1) {
        snprintf(out, len, "%s%d%s", open, dist_world_rank(), close);
        return;
    }
    gethostname(host, sizeof(host));
    host[sizeof(host) - 1] = '\0';
    snprintf(out, len, "%s%d on %s%s", open, dist_world_rank(), host, close);
}

void error_fatal(const char *file, int line, const char *func, const char *fmt, ...)
{
    va_list ap;
    char who[192];
    fflush(stdout);
    rank_prefix(who, sizeof(who), "[", "]");
    fprintf(stderr, "%s %s:%d %s: ", who, file, line, func);
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
    char who[192];
    fflush(stdout);
    if (dist_world_size() > 1) {
        rank_prefix(who, sizeof(who), "canary [rank ", "]: ");
        fputs(who, stderr);
    } else {
        fputs("canary: ", stderr);
    }
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
}
