// provides: fm_expf, fm_tanhf, fm_sigmoidf — branch-free float approximations the compiler can
//           vectorise (glibc's expf/tanhf are scalar calls and took ~45% of a small model's step).
//
// fm_expf: range reduction x = n·ln2 + r, |r| ≤ ln2/2, degree-6 polynomial for e^r (truncation
// ≤ 1.2e-7 relative, i.e. about 1 ulp), scaled by 2^n through the exponent bits. Inputs are
// clamped to [−87, 88], so the result never overflows or goes denormal. Used where the reference
// comparison (≤1e-4) and the loss statistics (double sums) leave ample margin.
#ifndef CANARY_UTIL_FASTMATH_H
#define CANARY_UTIL_FASTMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "util/lanes.h"

static inline float fm_expf(float x)
{
    const float log2e = 1.44269504088896341f;
    const float ln2_hi = 0.693359375f;    // exact in float: n·ln2_hi has no rounding error
    const float ln2_lo = -2.12194440e-4f; // ln2 − ln2_hi
    x = x < -87.0f ? -87.0f : x;          // NaN passes both selects
    x = x > 88.0f ? 88.0f : x;
    // With x in [−87, 88], n is in [−126, 127]: 2^n is a normal float and needs no clamp of
    // its own. Only a NaN must not reach the int conversion (undefined behaviour); r, and so
    // the result, stay NaN. Every clamp here is a comparison, not fminf/fmaxf: without
    // -ffinite-math-only GCC calls libm for those and every loop that inlines fm_expf stops
    // vectorising (GELU, SwiGLU, softmax: 2.3x a small model's step); and as few as possible,
    // since GCC threads each select through the rest (a nested clamp of x plus two of n made
    // it evaluate the polynomial three times: 2.5 ns per GELU). tests/test_vectorised.c fails
    // when either happens.
    float n = floorf(x * log2e + 0.5f);
    n = n == n ? n : 0.0f;
    float r = x - n * ln2_hi - n * ln2_lo;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof(scale));
    return p * scale;
}

// tanh(x) = 1 − 2/(e^{2x} + 1); absolute error ~1e-7 (relative error grows only for |x| < 1e-3,
// where callers multiply by x anyway).
static inline float fm_tanhf(float x)
{
    return 1.0f - 2.0f / (fm_expf(2.0f * x) + 1.0f);
}

static inline float fm_sigmoidf(float x)
{
    return 1.0f / (1.0f + fm_expf(-x));
}

// max of x[0..n), n ≥ 1. A NaN may be skipped here; callers subtract the max from every element,
// so a NaN still reaches their result.
static inline float fm_max(const float *x, int n)
{
    float m = x[0];
    for (int j = 1; j < n; j++)
        m = x[j] > m ? x[j] : m;
    return m;
}

// min of x[0..n), n ≥ 1 (a NaN may be skipped, as in fm_max).
static inline float fm_min(const float *x, int n)
{
    float m = x[0];
    for (int j = 1; j < n; j++)
        m = x[j] < m ? x[j] : m;
    return m;
}

#endif
