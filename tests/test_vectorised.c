// The vectorisation guard: each hot elementwise loop, over 4M floats (64 passes over 64K floats,
// which stay in L2, so the loops are compute-bound and a scalar loop shows its full cost), must
// cost less than a fixed multiple of a vectorised yardstick loop over the same floats. A loop that
// stopped vectorising (a libm call slipped into an inlined helper, a double reduction the compiler
// may not reorder) runs 5-20x slower than its vector form and fails here; timing noise on a shared
// machine moves a ratio by far less than the margins (best of several repeats, both sides measured
// back to back in one process).
//
// Limits sit near the geometric mean of the vector and the scalar cost, in yardsticks, measured
// at one thread on an AMD EPYC (Zen 3), release build: GELU 4.1 (scalar, with fm_expf's clamp as
// fminf/fmaxf: 26; its backward reuses the forward's output, no exp; 7.6 while jump threading
// made fm_expf evaluate its polynomial twice or three times), SwiGLU 2.5 (23),
// softmax-CE 7.5 (20), LayerNorm 6.3 (14; its double sums are 4 lanes wide), RoPE 0.9 (3.1),
// AdamW 1.2 (9.2). The attention core itself (attention_forward + backward at d_h = 8, its
// products included): 8.0 (libm's expf in its rows: 15); with the probes' statistics 9.7
// (17); soft-capped 12.9 (libm's tanhf and expf: 43). Only meaningful in an optimised build: CMake
// registers it for Release builds without sanitizers.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "losses/xent.h"
#include "model/attention.h"
#include "util/fastmath.h"
#include "model/matmul.h"
#include "model/mlp.h"
#include "model/norm.h"
#include "model/rope.h"
#include "optim/adamw.h"
#include "tests/testing.h"
#include "util/error.h"
#include "util/timer.h"

enum { N = 1 << 16, PASSES = 64, REPS = 9 };

struct bufs {
    float *x, *y, *z, *w;
};

static struct bufs bufs_new(void)
{
    struct bufs b = {xmalloc(N * sizeof(float)), xmalloc(N * sizeof(float)),
                     xmalloc(N * sizeof(float)), xmalloc(N * sizeof(float))};
    testing_fill(b.x, N, 1, 2.0f);
    testing_fill(b.y, N, 2, 1.0f);
    testing_fill(b.z, N, 3, 1.0f);
    testing_fill(b.w, N, 4, 1.0f);
    return b;
}

static void bufs_free(struct bufs *b)
{
    free(b->x);
    free(b->y);
    free(b->z);
    free(b->w);
}

// The yardstick: a degree-8 polynomial per element (8 multiplies and 8 adds, no calls),
// compute-bound like the kernels, so a busy host slows both alike; it vectorises in any
// optimised build. Kept unfused (the build contracts a·b + c into FMAs elsewhere), so its cost,
// and the limits calibrated against it, do not depend on that flag.
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("fp-contract=off")))
#endif
static void
poly(float *y, const float *x)
{
    for (size_t i = 0; i < N; i++) {
        float v = x[i], p = 0.01f;
        p = p * v + 0.02f;
        p = p * v + 0.03f;
        p = p * v + 0.04f;
        p = p * v + 0.05f;
        p = p * v + 0.06f;
        p = p * v + 0.07f;
        p = p * v + 0.08f;
        y[i] = p * v + 0.09f;
    }
}

typedef void (*kernel_fn)(struct bufs *b, void *ctx);

static void k_poly(struct bufs *b, void *ctx)
{
    poly(b->y, b->x);
}

static double time_once(kernel_fn k, struct bufs *b, void *ctx)
{
    double t0 = timer_now();
    for (int p = 0; p < PASSES; p++)
        k(b, ctx);
    return timer_now() - t0;
}

// ratio of kernel k to the yardstick, each the best of REPS runs taken alternately (a busy
// moment hits both); fails above limit
static void expect_ratio(const char *what, kernel_fn k, void *ctx, double limit)
{
    struct bufs b = bufs_new();
    k(&b, ctx); // touch every page once before timing
    double t_k = 1e30, t_y = 1e30;
    for (int r = 0; r < REPS; r++) {
        double y = time_once(k_poly, &b, NULL), kk = time_once(k, &b, ctx);
        t_y = y < t_y ? y : t_y;
        t_k = kk < t_k ? kk : t_k;
    }
    double ratio = t_k / t_y;
    printf("vectorised: %-34s %6.2f ms, yardstick %6.2f ms, ratio %5.2f (limit %.1f)\n", what,
           t_k * 1e3, t_y * 1e3, ratio, limit);
    bufs_free(&b);
    if (!(ratio < limit))
        fail_msg("%s costs %.1fx the yardstick polynomial over the same floats (limit %.1f): a "
                 "hot loop stopped vectorising",
                 what, ratio, limit);
}

static void k_gelu(struct bufs *b, void *ctx)
{
    gelu_forward(b->y, b->x, N);
    gelu_backward(b->z, b->w, b->x, b->y, N);
}

static void test_vectorised_gelu(void **state)
{
    expect_ratio("gelu forward+backward", k_gelu, NULL, 10.0);
}

static void k_swiglu(struct bufs *b, void *ctx)
{
    // N floats of input = N/2 rows... of [gate | up] with f = 512
    int f = 512, rows = N / (2 * f);
    swiglu_forward(b->y, b->x, rows, f);
    swiglu_backward(b->z, b->w, b->x, rows, f);
}

static void test_vectorised_swiglu(void **state)
{
    expect_ratio("swiglu forward+backward", k_swiglu, NULL, 8.0);
}

static void k_xent(struct bufs *b, void *ctx)
{
    int *targets = ctx, vocab = 256, rows = N / vocab;
    struct loss_parts parts;
    memcpy(b->y, b->x, N * sizeof(float)); // the fused loss overwrites logits with gradients
    xent_forward_backward(&parts, b->y, &(struct xent_probe){b->z, 0, 0}, targets, rows, vocab,
                          1e-4f, 1.0f, 0.0f);
}

static void test_vectorised_softmax_xent(void **state)
{
    int rows = N / 256;
    int *targets = xmalloc((size_t)rows * sizeof(int));
    for (int r = 0; r < rows; r++)
        targets[r] = (r * 37) % 256;
    expect_ratio("softmax cross-entropy rows", k_xent, targets, 12.0);
    free(targets);
}

// The attention core as a step runs it (attention_forward + attention_backward), at head width
// 8 where its products are cheap direct loops and the softmax rows between them (exp, the
// row sums, the entropy's double lanes, tanh when soft-capped) take most of the time: 4 (batch,
// head) pairs of 128 x 128 causal scores, so p fills one buffer.
struct attn_ctx {
    float *capt, *stats; // [N] tanh of the capped scores; [4, ATTN_STATS]
    int with_stats;      // the probes' statistics (max |s|, max s, entropy)
    float softcap;       // 0: none
};

static void k_attention(struct bufs *b, void *ctx)
{
    const struct attn_ctx *a = ctx;
    enum { BH = 4, T = 128, D = 8, QN = BH * T * D };
    const float *q = b->x, *k = b->x + QN, *v = b->x + 2 * QN, *dout = b->x + 3 * QN;
    float *dq = b->w, *dk = b->w + QN, *dv = b->w + 2 * QN, *o = b->w + 3 * QN;
    attention_forward(o, b->y, a->with_stats ? a->stats : NULL, q, k, v, 1, BH, T, D, D, 0.35f,
                      a->softcap, a->capt, NULL);
    attention_backward(dq, dk, dv, b->z, dout, b->y, q, k, v, 1, BH, T, D, D, 0.35f, a->softcap,
                       a->capt, NULL);
}

static void expect_attention(const char *what, int with_stats, float softcap, double limit)
{
    float stats[4 * ATTN_STATS];
    struct attn_ctx a = {xmalloc(N * sizeof(float)), stats, with_stats, softcap};
    assert_true(attention_direct(128, 8, 8));
    expect_ratio(what, k_attention, &a, limit);
    free(a.capt);
}

static void test_vectorised_attention_rows(void **state)
{
    expect_attention("attention fwd+bwd, d_h 8", 0, 0.0f, 11.0);
}

static void test_vectorised_attention_rows_stats(void **state)
{
    expect_attention("attention fwd+bwd, d_h 8, stats", 1, 0.0f, 13.0);
}

static void test_vectorised_attention_rows_softcap(void **state)
{
    expect_attention("attention fwd+bwd, d_h 8, soft-capped", 1, 30.0f, 22.0);
}

static void k_norm(struct bufs *b, void *ctx)
{
    int c = 256, rows = N / c;
    float *mean = ctx, *rstd = mean + rows, *gain = rstd + rows, *dgain = gain + c;
    norm_forward(b->y, mean, rstd, b->x, gain, rows, c, NORM_LAYERNORM);
    memset(b->z, 0, N * sizeof(float));
    norm_backward(b->z, dgain, b->w, b->x, gain, mean, rstd, rows, c, NORM_LAYERNORM);
}

static void test_vectorised_norm(void **state)
{
    int c = 256, rows = N / c;
    float *scratch = xcalloc(2 * (size_t)rows + 2 * (size_t)c, sizeof(float));
    for (int i = 0; i < c; i++)
        scratch[2 * rows + i] = 1.0f + 0.01f * (float)i;
    expect_ratio("layernorm forward+backward", k_norm, scratch, 9.5);
    free(scratch);
}

static void k_rope(struct bufs *b, void *ctx)
{
    int hd = 64, T = 256, rows = N / hd;
    rope_forward(b->y, ctx, rows, T, hd);
    rope_backward(b->y, ctx, rows, T, hd);
}

static void test_vectorised_rope(void **state)
{
    float *cs = xmalloc(256 * 64 * sizeof(float));
    rope_table_init(cs, 256, 64);
    expect_ratio("rope forward+backward", k_rope, cs, 1.7);
    free(cs);
}

struct adamw_ctx {
    struct adamw a;
    struct tensor_table tt;
    struct optim_config oc;
};

static void k_adamw(struct bufs *b, void *ctx)
{
    struct adamw_ctx *c = ctx;
    adamw_update_compute(&c->a, b->y, b->x, b->z, &c->tt, &c->oc, 1e-3);
}

static void test_vectorised_adamw(void **state)
{
    struct adamw_ctx c;
    memset(&c, 0, sizeof(c));
    tensor_table_init(&c.tt);
    tensor_table_add(&c.tt, "w", N / 1024, 1024, TENSOR_MATRIX, 0);
    adamw_init(&c.a, N, 0);
    c.oc.name = OPTIM_ADAMW;
    c.oc.lr = 1e-3;
    c.oc.beta1 = 0.9;
    c.oc.beta2 = 0.95;
    c.oc.eps = 1e-8;
    c.oc.weight_decay = 0.1;
    expect_ratio("adamw update", k_adamw, &c, 3.3);
    adamw_free(&c.a);
    tensor_table_free(&c.tt);
}

int main(void)
{
    matmul_set_threads(1); // the yardstick is one thread; so are the kernels' parallel loops
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectorised_gelu),
        cmocka_unit_test(test_vectorised_swiglu),
        cmocka_unit_test(test_vectorised_softmax_xent),
        cmocka_unit_test(test_vectorised_norm),
        cmocka_unit_test(test_vectorised_attention_rows),
        cmocka_unit_test(test_vectorised_attention_rows_stats),
        cmocka_unit_test(test_vectorised_attention_rows_softcap),
        cmocka_unit_test(test_vectorised_rope),
        cmocka_unit_test(test_vectorised_adamw),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
