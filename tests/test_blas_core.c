// model/blas_core: which OpenBLAS core canary runs on, and the sgemm self-check.
#include <stdlib.h>
#include <string.h>

#include "model/blas_core.h"
#include "model/matmul.h"
#include "tests/testing.h"

static void test_blas_core_levels(void **state)
{
    assert_int_equal(blas_core_level("Prescott"), ISA_SSE3);
    assert_int_equal(blas_core_level("sandybridge"), ISA_AVX); // OPENBLAS_CORETYPE is any case
    assert_int_equal(blas_core_level("Haswell"), ISA_AVX2);
    assert_int_equal(blas_core_level("Zen"), ISA_AVX2);
    assert_int_equal(blas_core_level("SkylakeX"), ISA_AVX512);
    assert_int_equal(blas_core_level("NoSuchCore"), ISA_UNKNOWN);
    assert_int_equal(blas_core_level(NULL), ISA_UNKNOWN);
    assert_string_equal(blas_core_for_level(ISA_AVX512, 0), "SkylakeX");
    assert_string_equal(blas_core_for_level(ISA_AVX2, 1), "Zen");
    assert_string_equal(blas_core_for_level(ISA_AVX2, 0), "Haswell");
}

// The case of the issue: OpenBLAS 0.3.21 does not know a new Xeon and loads Prescott.
static void test_blas_core_upgrades_a_fallback(void **state)
{
    struct blas_choice ch;
    blas_core_decide(&ch, "Prescott", NULL, NULL, ISA_AVX512, ISA_AVX512, 0, "");
    assert_true(ch.reexec && !ch.fatal);
    assert_string_equal(ch.core, "SkylakeX");
    assert_non_null(strstr(ch.note, "OpenBLAS chose Prescott"));
    assert_non_null(strstr(ch.note, "AVX-512"));
    blas_core_decide(&ch, "Sandybridge", NULL, NULL, ISA_AVX2, ISA_AVX2, 1, "");
    assert_true(ch.reexec);
    assert_string_equal(ch.core, "Zen");
}

static void test_blas_core_keeps_a_right_choice(void **state)
{
    struct blas_choice ch;
    blas_core_decide(&ch, "Zen", NULL, NULL, ISA_AVX2, ISA_AVX2, 1, "");
    assert_false(ch.reexec);
    assert_string_equal(ch.core, "Zen");
    assert_non_null(strstr(ch.note, "OpenBLAS's own choice"));
    // Haswell on an AMD AVX2 CPU is as good: no re-exec for a sideways move
    blas_core_decide(&ch, "Haswell", NULL, NULL, ISA_AVX2, ISA_AVX2, 1, "");
    assert_false(ch.reexec);
    // a core canary does not know is left alone
    blas_core_decide(&ch, "Armv8", NULL, NULL, ISA_AVX2, ISA_AVX2, 0, "");
    assert_false(ch.reexec);
}

static void test_blas_core_user_choice(void **state)
{
    struct blas_choice ch;
    // a weaker core the user asked for is honoured
    blas_core_decide(&ch, "Sandybridge", "Sandybridge", NULL, ISA_AVX512, ISA_AVX512, 0, "");
    assert_false(ch.reexec);
    assert_non_null(strstr(ch.note, "forced by OPENBLAS_CORETYPE=Sandybridge"));
    // a name OpenBLAS does not know is ignored by it: the note says which core it loaded
    blas_core_decide(&ch, "Haswell", "Bogus", NULL, ISA_AVX2, ISA_AVX2, 0, "");
    assert_false(ch.reexec);
    assert_non_null(strstr(ch.note, "OPENBLAS_CORETYPE=Bogus is not a core this OpenBLAS has: it "
                                    "loaded Haswell"));
    // one the CPU cannot run is replaced, never run into an illegal instruction
    blas_core_decide(&ch, "SkylakeX", "SkylakeX", NULL, ISA_AVX2, ISA_AVX2, 0, "");
    assert_true(ch.reexec);
    assert_string_equal(ch.core, "Haswell");
    assert_non_null(strstr(ch.note, "needs AVX-512, which this CPU does not have"));
    // the CPU has AVX-512 but CANARY_CPU_ISA capped the level: the note blames the cap
    blas_core_decide(&ch, "SkylakeX", "SkylakeX", NULL, ISA_AVX2, ISA_AVX512, 0, "");
    assert_true(ch.reexec);
    assert_non_null(strstr(ch.note, "needs AVX-512, which CANARY_CPU_ISA rules out"));
}

static void test_blas_core_after_reexec(void **state)
{
    struct blas_choice ch;
    setenv("CANARY_BLAS_NOTE", "why it was chosen", 1);
    blas_core_decide(&ch, "SkylakeX", NULL, "SkylakeX", ISA_AVX512, ISA_AVX512, 0, "");
    assert_false(ch.reexec);
    assert_string_equal(ch.note, "why it was chosen");
    // the build lacked the core asked for: say so, do not loop
    blas_core_decide(&ch, "Haswell", NULL, "SkylakeX", ISA_AVX512, ISA_AVX512, 0, "");
    assert_false(ch.reexec);
    assert_non_null(strstr(ch.note, "canary asked for SkylakeX but OpenBLAS loaded Haswell"));
    unsetenv("CANARY_BLAS_NOTE");
}

// A core whose sgemm gave wrong results steps down one kernel set at a time; when all failed,
// nothing is run.
static void test_blas_core_selfcheck_fallback(void **state)
{
    struct blas_choice ch;
    blas_core_decide(&ch, "SkylakeX", NULL, NULL, ISA_AVX512, ISA_AVX512, 0, "SkylakeX");
    assert_true(ch.reexec);
    assert_string_equal(ch.core, "Haswell");
    assert_non_null(strstr(ch.note, "SkylakeX failed canary's sgemm self-check"));
    blas_core_decide(&ch, "Haswell", NULL, "Haswell", ISA_AVX512, ISA_AVX512, 0,
                     "SkylakeX,Haswell");
    assert_true(ch.reexec);
    assert_string_equal(ch.core, "Zen");
    blas_core_decide(&ch, "Zen", NULL, "Zen", ISA_AVX512, ISA_AVX512, 0, "SkylakeX,Haswell,Zen");
    assert_string_equal(ch.core, "Sandybridge");
    blas_core_decide(&ch, "Prescott", NULL, "Prescott", ISA_AVX512, ISA_AVX512, 0,
                     "SkylakeX,Haswell,Zen,Sandybridge,Prescott");
    assert_true(ch.fatal);
    assert_false(ch.reexec);
    // a user's forced core that fails is replaced too
    blas_core_decide(&ch, "Sandybridge", "Sandybridge", NULL, ISA_AVX2, ISA_AVX2, 0, "Sandybridge");
    assert_true(ch.reexec);
    assert_string_equal(ch.core, "Prescott");
}

// Wrong sgemms the self-check must catch: one whose edge tile misses its last column (a kernel
// tail bug), one that drops beta·C.
static void gemm_edge_bug(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                          const float *b, int ldb, float beta, float *c, int ldc)
{
    float saved[128];
    for (int i = 0; i < m; i++)
        saved[i] = c[(size_t)i * ldc + n - 1];
    matmul_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    for (int i = 0; i < m; i++)
        c[(size_t)i * ldc + n - 1] = saved[i] * beta;
}

static void gemm_no_beta(int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                         const float *b, int ldb, float beta, float *c, int ldc)
{
    (void)beta;
    matmul_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, 0.0f, c, ldc);
}

static void test_blas_core_selfcheck_passes_on_this_blas(void **state)
{
    double err = blas_selfcheck();
    assert_true(err <= 1e-5);
    assert_true(blas_selfcheck_of(matmul_sgemm) <= 1e-5); // canary's own wrapper too
    assert_true(blas_selfcheck_of(gemm_edge_bug) > 1e-5);
    assert_true(blas_selfcheck_of(gemm_no_beta) > 1e-5);
}

static void test_blas_cpu_level_cap(void **state)
{
    int native = blas_cpu_level();
    setenv("CANARY_CPU_ISA", "avx", 1);
    int capped = blas_cpu_level();
    assert_int_equal(capped, native < ISA_AVX ? native : ISA_AVX);
    setenv("CANARY_CPU_ISA", "avx512", 1); // a cap never raises the level
    assert_int_equal(blas_cpu_level(), native);
    unsetenv("CANARY_CPU_ISA");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blas_core_levels),
        cmocka_unit_test(test_blas_core_upgrades_a_fallback),
        cmocka_unit_test(test_blas_core_keeps_a_right_choice),
        cmocka_unit_test(test_blas_core_user_choice),
        cmocka_unit_test(test_blas_core_after_reexec),
        cmocka_unit_test(test_blas_core_selfcheck_fallback),
        cmocka_unit_test(test_blas_core_selfcheck_passes_on_this_blas),
        cmocka_unit_test(test_blas_cpu_level_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
