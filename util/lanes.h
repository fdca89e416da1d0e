// provides: lanes_sum, lanes_dot, lanes_sumsq_dev — sums of floats in double through eight
//           lanes in a fixed order: vectorisable (a single double accumulator is a serial
//           dependency GCC may not reorder without -ffast-math) and the same bits for the same
//           input on any thread or rank count. Shared by the model's norms, softmax and loss
//           (util/fastmath.h) and the probes (probes/stats.c).
#ifndef CANARY_UTIL_LANES_H
#define CANARY_UTIL_LANES_H

#include <stddef.h>

// The fixed-order total of eight double lanes (the pairing every lane sum here uses, so the same
// inputs give the same bits on any thread count).
static inline double lanes8_total(const double lane[8])
{
    return ((lane[0] + lane[1]) + (lane[2] + lane[3])) +
           ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

// Σ x[0..n) in double through eight lanes (vectorisable, fixed order: the same bits for the
// same input on any thread count).
static inline double lanes_sum(const float *x, size_t n)
{
    double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int k = 0; k < 8; k++)
            lane[k] += (double)x[j + k];
    for (; j < n; j++)
        lane[0] += (double)x[j];
    return lanes8_total(lane);
}

// Σ a[j]·b[j] over [0..n) in double through eight lanes, as lanes_sum (a plain double
// accumulator is a serial dependency GCC may not reorder without -ffast-math: scalar code).
static inline double lanes_dot(const float *a, const float *b, size_t n)
{
    double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int k = 0; k < 8; k++)
            lane[k] += (double)a[j + k] * (double)b[j + k];
    for (; j < n; j++)
        lane[0] += (double)a[j] * (double)b[j];
    return lanes8_total(lane);
}

// Σ (x[j] − m)² over [0..n) in double through eight lanes.
static inline double lanes_sumsq_dev(const float *x, double m, size_t n)
{
    double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int k = 0; k < 8; k++) {
            double d = (double)x[j + k] - m;
            lane[k] += d * d;
        }
    for (; j < n; j++) {
        double d = (double)x[j] - m;
        lane[0] += d * d;
    }
    return lanes8_total(lane);
}

#endif
