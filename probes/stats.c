// The probes' arithmetic (see stats.h). Pure functions: no state, no allocation.
#include "probes/stats.h"

#include <math.h>

#include "util/lanes.h"

double stats_sumsq(const float *x, size_t n)
{
    return lanes_dot(x, x, n);
}

double stats_sum(const float *x, size_t n)
{
    return lanes_sum(x, n);
}

double stats_absmax(const float *x, size_t n)
{
    // eight lanes of `a > m ? a : m` (a MAXPS without -ffast-math) and a NaN flag beside them
    float m[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int nan = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) {
            float a = fabsf(x[i + l]);
            m[l] = a > m[l] ? a : m[l];
            nan |= a != a;
        }
    for (; i < n; i++) {
        float a = fabsf(x[i]);
        m[0] = a > m[0] ? a : m[0];
        nan |= a != a;
    }
    float best = m[0];
    for (int l = 1; l < 8; l++)
        best = m[l] > best ? m[l] : best;
    return nan ? NAN : (double)best;
}

size_t stats_count_below(const float *x, size_t n, float bound)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += x[i] < bound;
    return c;
}

size_t stats_count_zero(const float *x, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += x[i] == 0.0f;
    return c;
}

double stats_rms(double sumsq, double n)
{
    return n > 0 ? sqrt(sumsq / n) : 0.0;
}

void stats_moments_of(struct stats_moments *m, const float *x, size_t n)
{
    m->n = 0.0, m->mean = 0.0, m->m2 = 0.0;
    for (size_t i = 0; i < n; i++) {
        double v = x[i], d = v - m->mean;
        m->n += 1.0;
        m->mean += d / m->n;
        m->m2 += d * (v - m->mean);
    }
}

void stats_moments_of_f64(struct stats_moments *m, const double *x, size_t n)
{
    m->n = 0.0, m->mean = 0.0, m->m2 = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = x[i] - m->mean;
        m->n += 1.0;
        m->mean += d / m->n;
        m->m2 += d * (x[i] - m->mean);
    }
}

void stats_moments_merge(struct stats_moments *into, const struct stats_moments *b)
{
    if (b->n == 0.0)
        return;
    if (into->n == 0.0) {
        *into = *b;
        return;
    }
    double n = into->n + b->n, d = b->mean - into->mean;
    into->mean += d * (b->n / n);
    into->m2 += b->m2 + d * d * (into->n * b->n / n);
    into->n = n;
}

// m2 ≥ 0 up to rounding; a NaN passes (fmax would turn it into 0)
static double root_of_nonneg(double v)
{
    return v < 0.0 ? 0.0 : sqrt(v);
}

double stats_moments_std(const struct stats_moments *m)
{
    return m->n > 0.0 ? root_of_nonneg(m->m2 / m->n) : 0.0;
}

double stats_moments_sample_std(const struct stats_moments *m)
{
    return m->n > 1.0 ? root_of_nonneg(m->m2 / (m->n - 1.0)) : 0.0;
}

int stats_spike_z(const double *win, int n, double x, double *z)
{
    struct stats_moments m;
    stats_moments_of_f64(&m, win, n > 0 ? (size_t)n : 0);
    double sd = stats_moments_sample_std(&m);
    *z = sd > 0.0 ? (x - m.mean) / sd : 0.0;
    return sd > 0.0;
}
