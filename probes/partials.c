// Per-micro-batch probe records and their fold (see partials.h).
#include "probes/partials.h"

#include <math.h>

#include "probes/stats.h"
#include "util/error.h"

void partial_layout_init(struct partial_layout *l)
{
    l->nseg = 0;
    l->size = 0;
}

int partial_layout_add(struct partial_layout *l, enum partial_op op, int count)
{
    ASSERT(l->nseg < PARTIAL_SEGMENTS_MAX && count >= 0);
    int off = l->size;
    l->seg[l->nseg].offset = off;
    l->seg[l->nseg].count = count;
    l->seg[l->nseg].op = op;
    l->nseg++;
    l->size += op == PARTIAL_MOMENTS ? 3 * count : count;
    return off;
}

void partial_identity(const struct partial_layout *l, double *rec)
{
    for (int s = 0; s < l->nseg; s++) {
        int n = l->seg[s].op == PARTIAL_MOMENTS ? 3 * l->seg[s].count : l->seg[s].count;
        double v = l->seg[s].op == PARTIAL_MAX ? -INFINITY : 0.0;
        for (int i = 0; i < n; i++)
            rec[l->seg[s].offset + i] = v;
    }
}

void partial_fold(const struct partial_layout *l, double *acc, const double *rec)
{
    for (int s = 0; s < l->nseg; s++) {
        double *a = acc + l->seg[s].offset;
        const double *b = rec + l->seg[s].offset;
        int n = l->seg[s].count;
        switch (l->seg[s].op) {
        case PARTIAL_SUM:
            for (int i = 0; i < n; i++)
                a[i] += b[i];
            break;
        case PARTIAL_MAX:
            for (int i = 0; i < n; i++)
                a[i] = b[i] > a[i] || isnan(b[i]) ? b[i] : a[i];
            break;
        case PARTIAL_MOMENTS:
            for (int i = 0; i < n; i++) {
                struct stats_moments x = {a[3 * i], a[3 * i + 1], a[3 * i + 2]};
                struct stats_moments y = {b[3 * i], b[3 * i + 1], b[3 * i + 2]};
                stats_moments_merge(&x, &y);
                a[3 * i] = x.n, a[3 * i + 1] = x.mean, a[3 * i + 2] = x.m2;
            }
            break;
        }
    }
}

void partials_combine(const struct partial_layout *l, const double *recs, size_t stride, int n,
                      double *out)
{
    partial_identity(l, out);
    for (int k = 0; k < n; k++)
        partial_fold(l, out, recs + (size_t)k * stride);
}
