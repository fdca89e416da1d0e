// util/: the counter-based RNG.
#include <math.h>
#include <stdint.h>

#include "tests/testing.h"
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rng_pure_function_of_keys),
        cmocka_unit_test(test_rng_distributions),
    };
    return cmocka_run_group_tests_name("util", tests, NULL, NULL);
}
