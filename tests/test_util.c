// util/: the counter-based RNG.
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tests/testing.h"
#include "util/bf16.h"
#include "util/rng.h"

static void test_rng_pure_function_of_keys(void **state)
{
    assert_true(rng_u64(1, 2, 3) == rng_u64(1, 2, 3));
    assert_true(rng_u64(1, 2, 3) != rng_u64(2, 2, 3));
    assert_true(rng_u64(1, 2, 3) != rng_u64(1, 3, 3));
    assert_true(rng_u64(1, 2, 3) != rng_u64(1, 2, 4));
    // swapping keys gives another stream
    assert_true(rng_u64(2, 1, 3) != rng_u64(1, 2, 3));
    assert_true(rng_stream_of("blocks.0.attn.wq") != rng_stream_of("blocks.0.attn.wk"));
}

static void test_rng_distributions(void **state)
{
    enum { N = 200000 };
    double su = 0, sn = 0, sn2 = 0, st2 = 0, tmax = 0, umin = 1, umax = 0;
    for (uint64_t i = 0; i < N; i++) {
        double u = rng_uniform(7, 1, i), z = rng_normal(7, 2, i), t = rng_trunc_normal(7, 3, i);
        su += u;
        sn += z;
        sn2 += z * z;
        st2 += t * t;
        tmax = fmax(tmax, fabs(t));
        umin = fmin(umin, u);
        umax = fmax(umax, u);
    }
    assert_true(umin > 0.0 && umax < 1.0);
    expect_near(su / N, 0.5, 0.005);
    expect_near(sn / N, 0.0, 0.01);
    expect_near(sn2 / N, 1.0, 0.01);
    // a unit normal truncated at ±2 has variance 0.7737
    expect_near(st2 / N, 0.7737, 0.01);
    assert_true(tmax <= 2.0);
}

static uint32_t bits_of(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof(u));
    return u;
}

static float float_of(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof(x));
    return x;
}

// Rounding written a second way: the two bf16 neighbours of x (truncation toward zero and the
// next magnitude up, 2^128 standing for the first value past bf16's largest), compared in
// double; a tie goes to the neighbour whose last kept bit is 0.
static uint32_t bf16_reference(uint32_t u)
{
    uint32_t lo = u & 0xffff0000u, hi = lo + 0x10000u;
    double x = fabs((double)float_of(u)), vlo = fabs((double)float_of(lo));
    double vhi = (hi & 0x7fffffffu) == 0x7f800000u ? ldexp(1.0, 128) : fabs((double)float_of(hi));
    if (x - vlo < vhi - x)
        return lo;
    if (x - vlo > vhi - x)
        return hi;
    return (lo & 0x10000u) ? hi : lo;
}

static void test_bf16_round_to_nearest_even(void **state)
{
    // ties: 1 + 2^-8 sits halfway between 1 and 1 + 2^-7 (even: 1); 1 + 3 * 2^-8 between
    // 1 + 2^-7 (odd) and 1 + 2^-6 (even)
    assert_int_equal(bits_of(bf16_round(float_of(0x3f808000u))), 0x3f800000u);
    assert_int_equal(bits_of(bf16_round(float_of(0x3f818000u))), 0x3f820000u);
    assert_int_equal(bits_of(bf16_round(float_of(0x3f808001u))), 0x3f810000u); // above the tie
    assert_int_equal(bits_of(bf16_round(float_of(0xbf818000u))), 0xbf820000u); // sign kept
    // ±inf stay; the largest floats overflow to inf; bf16's largest finite value stays
    assert_int_equal(bits_of(bf16_round(INFINITY)), 0x7f800000u);
    assert_int_equal(bits_of(bf16_round(-INFINITY)), 0xff800000u);
    assert_int_equal(bits_of(bf16_round(float_of(0x7f7fffffu))), 0x7f800000u);
    assert_int_equal(bits_of(bf16_round(float_of(0x7f7f0000u))), 0x7f7f0000u);
    // NaN stays NaN, also with its payload only in the dropped bits (truncation would give inf)
    assert_true(isnan(bf16_round(float_of(0x7f800001u))));
    assert_true(isnan(bf16_round(float_of(0xff800001u))));
    assert_true(isnan(bf16_round(NAN)));
    // subnormals: ties to even in the subnormal range, the smallest halves to 0
    assert_int_equal(bits_of(bf16_round(float_of(0x00018000u))), 0x00020000u);
    assert_int_equal(bits_of(bf16_round(float_of(0x00008000u))), 0x00000000u);
    assert_int_equal(bits_of(bf16_round(float_of(0x00008001u))), 0x00010000u);
    assert_int_equal(bits_of(bf16_round(-0.0f)), 0x80000000u);
    // random bit patterns (every exponent) against the reference, and the array form
    enum { N = 1 << 20 };
    float *x = malloc(sizeof(float) * N), *y = malloc(sizeof(float) * N);
    for (int i = 0; i < N; i++) {
        uint32_t u = (uint32_t)rng_u64(5, 1, (uint64_t)i);
        x[i] = float_of((u & 0x7f800000u) == 0x7f800000u ? u & 0xbfffffffu : u); // no inf/NaN
    }
    bf16_round_array(y, x, N);
    for (int i = 0; i < N; i++)
        if (bits_of(y[i]) != bf16_reference(bits_of(x[i])))
            fail_msg("bf16 of %08x: got %08x want %08x", bits_of(x[i]), bits_of(y[i]),
                     bf16_reference(bits_of(x[i])));
    // the 16-bit form (oneDNN's operands) is the same rounding, specials included
    uint16_t *h = malloc(sizeof(uint16_t) * N);
    x[0] = NAN;
    x[1] = float_of(0x7f800001u);
    x[2] = -INFINITY;
    x[3] = float_of(0x00018000u);
    x[4] = float_of(0x7f7fffffu);
    bf16_bits_array(h, x, N);
    assert_int_equal(h[1] & 0x7f80u, 0x7f80u); // NaN: exponent all ones and
    assert_true((h[1] & 0x7fu) != 0);          // a nonzero mantissa (not inf)
    assert_true((h[0] & 0x7fu) != 0 && (h[0] & 0x7f80u) == 0x7f80u);
    assert_int_equal(h[2], 0xff80u);
    assert_int_equal(h[3], 0x0002u);
    assert_int_equal(h[4], 0x7f80u);
    for (int i = 5; i < N; i++)
        if ((uint32_t)h[i] << 16 != bf16_reference(bits_of(x[i])))
            fail_msg("bf16 bits of %08x: got %04x want %08x", bits_of(x[i]), h[i],
                     bf16_reference(bits_of(x[i])));
    free(h);
    free(x);
    free(y);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rng_pure_function_of_keys),
        cmocka_unit_test(test_rng_distributions),
        cmocka_unit_test(test_bf16_round_to_nearest_even),
    };
    return cmocka_run_group_tests_name("util", tests, NULL, NULL);
}
