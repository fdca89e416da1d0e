// The probes' arithmetic (probes/stats.h) against values worked out by hand.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "probes/stats.h"
#include "testing.h"

static void test_stats_sums_hand_values(void **state)
{
    (void)state;
    // 11 values: one full lane block of 8 and a tail of 3
    const float x[11] = {1, -2, 3, -4, 5, -6, 7, -8, 9, -10, 0.5f};
    expect_near(stats_sum(x, 11), -4.5, 0.0);
    expect_near(stats_sumsq(x, 11), 385.25, 0.0); // 1² + … + 10² = 385, + 0.25
    expect_near(stats_sumsq(x, 0), 0.0, 0.0);
    expect_near(stats_rms(385.25, 11), sqrt(385.25 / 11), 1e-15);
    expect_near(stats_rms(1.0, 0), 0.0, 0.0);
    assert_int_equal(stats_count_below(x, 11, 0.5f), 5); // −2, −4, −6, −8, −10
    assert_int_equal(stats_count_below(x, 11, 0.6f), 6);
    const float nan_in[3] = {NAN, -1, 2};
    assert_int_equal(stats_count_below(nan_in, 3, 0.0f), 1);
    assert_true(isnan(stats_sumsq(nan_in, 3)));
}

// A double sum in one accumulator loses the small terms after a large one; the lanes keep the
// order fixed, so the result is the same for the same input (and vectorises). Same bits twice,
// and close to the exact value.
static void test_stats_sumsq_fixed_order(void **state)
{
    (void)state;
    enum { N = 1003 };
    float x[N];
    double exact = 0.0;
    for (int i = 0; i < N; i++) {
        x[i] = (float)(i % 17) * 0.25f - 2.0f;
        exact += (double)x[i] * x[i];
    }
    double a = stats_sumsq(x, N), b = stats_sumsq(x, N);
    assert_memory_equal(&a, &b, sizeof(a));
    expect_near(a, exact, 1e-9 * exact);
}

// Welford: the sample {2, 4, 4, 4, 5, 5, 7, 9} has mean 5, population variance 4 (std 2) and
// sample variance 32/7.
static void test_stats_moments_hand_values(void **state)
{
    (void)state;
    const float x[8] = {2, 4, 4, 4, 5, 5, 7, 9};
    struct stats_moments m;
    stats_moments_of(&m, x, 8);
    expect_near(m.n, 8.0, 0.0);
    expect_near(m.mean, 5.0, 1e-15);
    expect_near(m.m2, 32.0, 1e-13);
    expect_near(stats_moments_std(&m), 2.0, 1e-15);
    expect_near(stats_moments_sample_std(&m), sqrt(32.0 / 7.0), 1e-15);
    struct stats_moments empty;
    stats_moments_of(&empty, x, 0);
    expect_near(stats_moments_std(&empty), 0.0, 0.0);
    expect_near(stats_moments_sample_std(&empty), 0.0, 0.0);
}

// Merging the moments of parts gives the moments of the whole, for any split; and an empty side
// changes nothing.
static void test_stats_moments_merge_equals_whole(void **state)
{
    (void)state;
    const float x[8] = {2, 4, 4, 4, 5, 5, 7, 9};
    for (int cut = 0; cut <= 8; cut++) {
        struct stats_moments a, b;
        stats_moments_of(&a, x, (size_t)cut);
        stats_moments_of(&b, x + cut, (size_t)(8 - cut));
        stats_moments_merge(&a, &b);
        expect_near(a.n, 8.0, 0.0);
        expect_near(a.mean, 5.0, 1e-14);
        expect_near(a.m2, 32.0, 1e-12);
    }
}

// Log Z sits near ln V with a spread of hundredths: Σx²/n − mean² cancels catastrophically in
// float-sized data, Welford keeps the spread. Values 5.545 ± 0.001 (mean 5.545, std 0.001).
static void test_stats_moments_small_spread(void **state)
{
    (void)state;
    enum { N = 4096 };
    float *x = malloc(sizeof(float) * N);
    for (int i = 0; i < N; i++)
        x[i] = 5.545f + (i % 2 ? 0.001f : -0.001f);
    struct stats_moments m;
    stats_moments_of(&m, x, N);
    double want = 0.0; // the std of the float values as stored
    for (int i = 0; i < N; i++)
        want += ((double)x[i] - m.mean) * ((double)x[i] - m.mean);
    want = sqrt(want / N);
    expect_near(stats_moments_std(&m), want, 1e-9 * want);
    free(x);
}

// Spike z: window {1, 2, 3, 4, 5} has mean 3 and sample std sqrt(2.5); x = 8 is 5/sqrt(2.5) above.
static void test_stats_spike_z_hand_values(void **state)
{
    (void)state;
    const double win[5] = {1, 2, 3, 4, 5}, flat[3] = {2, 2, 2};
    double z = -1.0;
    assert_true(stats_spike_z(win, 5, 8.0, &z));
    expect_near(z, 5.0 / sqrt(2.5), 1e-14);
    assert_false(stats_spike_z(flat, 3, 9.0, &z));
    expect_near(z, 0.0, 0.0);
    assert_false(stats_spike_z(win, 1, 9.0, &z));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stats_sums_hand_values),
        cmocka_unit_test(test_stats_sumsq_fixed_order),
        cmocka_unit_test(test_stats_moments_hand_values),
        cmocka_unit_test(test_stats_moments_merge_equals_whole),
        cmocka_unit_test(test_stats_moments_small_spread),
        cmocka_unit_test(test_stats_spike_z_hand_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
