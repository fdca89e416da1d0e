// The update guards' rolling windows (guard.h).
#include "optim/guard.h"

#include <math.h>
#include <stdlib.h>

#include "util/error.h"

void guard_window_init(struct guard_window *w, int cap)
{
    ASSERT(cap >= 1);
    w->v = xcalloc((size_t)cap, sizeof(double));
    w->cap = cap;
    w->n = w->head = 0;
}

void guard_window_free(struct guard_window *w)
{
    free(w->v);
    w->v = NULL;
    w->cap = w->n = w->head = 0;
}

void guard_window_push(struct guard_window *w, double x)
{
    if (!isfinite(x))
        return;
    w->v[w->head] = x;
    w->head = (w->head + 1) % w->cap;
    if (w->n < w->cap)
        w->n++;
}

// The i-th value held, oldest first.
static double value_at(const struct guard_window *w, int i)
{
    return w->v[(w->head - w->n + i + w->cap) % w->cap];
}

int guard_window_threshold(const struct guard_window *w, double k, int min, double *thr,
                           double *mean, double *sd)
{
    if (w->n < min || w->n < 2)
        return 0;
    double s = 0.0, ss = 0.0;
    for (int i = 0; i < w->n; i++)
        s += value_at(w, i);
    double m = s / w->n;
    for (int i = 0; i < w->n; i++) {
        double d = value_at(w, i) - m;
        ss += d * d;
    }
    double sigma = sqrt(ss / (w->n - 1));
    *thr = m + k * sigma;
    if (mean)
        *mean = m;
    if (sd)
        *sd = sigma;
    return 1;
}

void guard_window_get(const struct guard_window *w, double *out)
{
    for (int i = 0; i < w->n; i++)
        out[i] = value_at(w, i);
}

void guard_window_set(struct guard_window *w, const double *in, int n)
{
    ASSERT(n >= 0 && n <= w->cap);
    for (int i = 0; i < n; i++)
        w->v[i] = in[i];
    w->n = n;
    w->head = n % w->cap;
}
