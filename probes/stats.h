// provides: the arithmetic of the probes as pure functions on plain arrays — sums of squares and
//           RMS, Welford moments and their merge (Chan et al.), the spike test of a window.
//
// Every sum runs in double through eight lanes in a fixed order, so the compiler vectorises it
// and the same input gives the same bits on any thread or rank count. Nothing here knows about
// models, ranks or files: launch/ hands buffers over, probes/partials.h combines what the
// micro-batches of all ranks contributed.
#ifndef CANARY_PROBES_STATS_H
#define CANARY_PROBES_STATS_H

#include <stddef.h>

// Σ x[i]² over [0, n), in double.
double stats_sumsq(const float *x, size_t n);

// Σ x[i] over [0, n), in double.
double stats_sum(const float *x, size_t n);

// max |x[i]| over [0, n): NaN when any x[i] is NaN (a diverging run must show), 0 for n = 0.
double stats_absmax(const float *x, size_t n);

// How many of x[0, n) are below bound (a NaN is not).
size_t stats_count_below(const float *x, size_t n, float bound);

// How many of x[0, n) are zero (either sign).
size_t stats_count_zero(const float *x, size_t n);

// sqrt(sumsq / n); 0 for n = 0.
double stats_rms(double sumsq, double n);

// Count, mean and Σ(x − mean)² of a sample (Welford). Merged pairwise with Chan et al.'s update,
// which keeps the precision a Σx²/n − mean² formula loses when the spread is small against the
// mean (log Z sits near ln V with a spread of a few hundredths).
struct stats_moments {
    double n, mean, m2;
};

// The moments of x[0, n) (Welford's recurrence, in order).
void stats_moments_of(struct stats_moments *m, const float *x, size_t n);
// The moments of a double sample.
void stats_moments_of_f64(struct stats_moments *m, const double *x, size_t n);
// into ← the moments of (into's sample ∪ b's sample). An empty side leaves the other unchanged.
void stats_moments_merge(struct stats_moments *into, const struct stats_moments *b);
// Population standard deviation sqrt(m2 / n); 0 for n = 0.
double stats_moments_std(const struct stats_moments *m);
// Sample standard deviation sqrt(m2 / (n − 1)); 0 for n < 2.
double stats_moments_sample_std(const struct stats_moments *m);

// The spike test of x against a window of n earlier values: z = (x − mean) / s with the sample
// standard deviation s of the window (Welford). Returns 0 (and z = 0) when s is 0 or n < 2.
int stats_spike_z(const double *win, int n, double x, double *z);

#endif
