// util/fpenv: subnormals flushed on every computing thread, and what that buys (DESIGN.md §4).
#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/attention.h"
#include "model/matmul.h"
#include "tests/testing.h"
#include "util/error.h"
#include "util/fpenv.h"
#include "util/timer.h"

// Every thread of the team train.threads asks for carries the flags once matmul_set_threads ran
// (main() never set them in this test binary, so nothing is inherited).
static void test_fpenv_every_openmp_thread_flushes(void **state)
{
    int threads = 2, seen = 0, flushing = 0;
    matmul_set_threads(threads);
#pragma omp parallel num_threads(threads) reduction(+ : seen, flushing)
    {
        seen += 1;
        flushing += fpenv_flushing();
    }
    assert_int_equal(seen, threads);
    assert_int_equal(flushing, threads);
}

// The flags act where it counts: a subnormal result becomes 0, and a subnormal operand reads as 0.
static void test_fpenv_flushes_results_and_operands(void **state)
{
    matmul_set_threads(1);
    volatile float tiny = FLT_MIN, half = 0.5f, sub_bits;
    float r = tiny * half; // 5.9e-39 would be subnormal
    assert_true(r == 0.0f);
    unsigned u = 0x00400000u; // a subnormal, 5.9e-39
    float s;
    memcpy(&s, &u, sizeof(s));
    sub_bits = s;
    volatile float big = 1e30f;
    assert_true(sub_bits * big == 0.0f); // without DAZ: 5.9e-9
}

// OpenBLAS computes a large product on its OpenMP worker threads: every block of C must see the
// subnormal operand as zero, so no worker ran without the flags.
static void test_fpenv_blas_threads_flush(void **state)
{
    enum { n = 384 };
    float *a = xmalloc(n * n * sizeof(float)), *b = xmalloc(n * n * sizeof(float));
    float *c = xmalloc(n * n * sizeof(float));
    unsigned u = 0x00400000u;
    float sub;
    memcpy(&sub, &u, sizeof(sub));
    for (int i = 0; i < n * n; i++) {
        a[i] = sub;
        b[i] = 1e30f;
    }
    matmul_set_threads(2);
    matmul_sgemm(0, 0, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
    int nonzero = 0;
    for (int i = 0; i < n * n; i++)
        nonzero += c[i] != 0.0f;
    if (nonzero)
        fail_msg("%d of %d elements of C read the subnormal operand (a BLAS thread without DAZ)",
                 nonzero, n * n);
    matmul_set_threads(1);
    free(a);
    free(b);
    free(c);
}

struct attn_case {
    int B, H, T, d;
    float *q, *k, *v, *out, *p, *dout, *dq, *dk, *dv, *dp;
};

static double attn_step_seconds(struct attn_case *c, float qk_scale)
{
    size_t n = (size_t)c->B * c->H * c->T * c->d;
    testing_fill(c->q, n, 11, qk_scale);
    testing_fill(c->k, n, 12, qk_scale);
    double t0 = timer_now();
    attention_forward(c->out, c->p, NULL, c->q, c->k, c->v, c->B, c->H, c->T, c->d, c->d,
                      1.0f / sqrtf((float)c->d), 0.0f, NULL, NULL);
    attention_backward(c->dq, c->dk, c->dv, c->dp, c->dout, c->p, c->q, c->k, c->v, c->B, c->H,
                       c->T, c->d, c->d, 1.0f / sqrtf((float)c->d), 0.0f, NULL, NULL);
    return timer_now() - t0;
}

// Attention whose logits are in the thousands (a high-LR run without qk-norm): its softmax rows
// are full of probabilities below 1.2e-38. With the flush, forward+backward costs what a normal
// step costs; without it, sgemm over subnormal operands ran 100x slower (ratio ~5-10 here).
static void test_fpenv_underflowing_attention_costs_a_normal_step(void **state)
{
    struct attn_case c = {.B = 4, .H = 4, .T = 256, .d = 64};
    size_t n = (size_t)c.B * c.H * c.T * c.d, nn = (size_t)c.B * c.H * c.T * c.T;
    float **bufs[] = {&c.q, &c.k, &c.v, &c.out, &c.dout, &c.dq, &c.dk, &c.dv};
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
        *bufs[i] = xcalloc(n, sizeof(float));
    c.p = xcalloc(nn, sizeof(float));
    c.dp = xcalloc(nn, sizeof(float));
    testing_fill(c.v, n, 13, 1.0f);
    testing_fill(c.dout, n, 14, 1.0f);
    matmul_set_threads(1);
    // at scale 30 most probabilities sit at e^-87 (fm_expf's floor) and their score gradients
    // ds = p (dp − p·dp) / sqrt(d) below 1.2e-38: count them beyond the masked upper half
    attn_step_seconds(&c, 30.0f);
    size_t tiny = 0;
    for (size_t i = 0; i < nn; i++)
        tiny += fabsf(c.dp[i]) < FLT_MIN;
    printf("score gradients below 1.2e-38 (or flushed): %.1f%% (masked half: 50%%)\n",
           100.0 * (double)tiny / (double)nn);
    assert_true(tiny > nn / 2 + nn / 8);
    double normal = 1e30, huge = 1e30;
    for (int r = 0; r < 5; r++) {
        double t = attn_step_seconds(&c, 1.0f);
        normal = t < normal ? t : normal;
        t = attn_step_seconds(&c, 30.0f);
        huge = t < huge ? t : huge;
    }
    printf("attention fwd+bwd: logits O(1) %.2f ms, logits O(1e3) %.2f ms, ratio %.2f\n",
           normal * 1e3, huge * 1e3, huge / normal);
    if (!(huge < 1.5 * normal))
        fail_msg("attention with underflowing probabilities costs %.1fx a normal step (limit "
                 "1.5): subnormals are computed in full",
                 huge / normal);
    for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
        free(*bufs[i]);
    free(c.p);
    free(c.dp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fpenv_every_openmp_thread_flushes),
        cmocka_unit_test(test_fpenv_flushes_results_and_operands),
        cmocka_unit_test(test_fpenv_blas_threads_flush),
        cmocka_unit_test(test_fpenv_underflowing_attention_costs_a_normal_step),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
