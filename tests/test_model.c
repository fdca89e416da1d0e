// model/: every layer's backward against central finite differences, the whole model's gradient
// for each variant, the tensor table and the initialisation.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "losses/xent.h"
#include "model/attention.h"
#include "model/embed.h"
#include "util/fastmath.h"
#include "model/matmul.h"
#include "util/bf16.h"
#include "model/mlp.h"
#include "model/model.h"
#include "model/qk_clip.h"
#include "model/norm.h"
#include "model/rope.h"
#include "tests/testing.h"
#include "util/error.h"

#define FD_TOL 2e-2 // fp32 forward, eps 1e-2: truncation + rounding stay well below this

// Σ out·w in double: the scalar whose gradient w.r.t. out is w.
static double dot(const float *out, const float *w, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)out[i] * (double)w[i];
    return s;
}

// ---- norm ----
struct norm_ctx {
    float *out, *mean, *rstd, *in, *gain, *w;
    int n, c;
    enum norm_kind kind;
};

static double norm_loss(void *p)
{
    struct norm_ctx *x = p;
    norm_forward(x->out, x->mean, x->rstd, x->in, x->gain, x->n, x->c, x->kind);
    return dot(x->out, x->w, (size_t)x->n * x->c);
}

static void check_norm(enum norm_kind kind)
{
    enum { N = 6, C = 20 };
    float out[N * C], mean[N], rstd[N], in[N * C], gain[C], w[N * C], din[N * C], dgain[C];
    struct norm_ctx x = {out, mean, rstd, in, gain, w, N, C, kind};
    testing_fill(in, N * C, 1, 2.0f);
    for (int i = 0; i < N * C; i++)
        in[i] += 0.5f; // a non-zero mean, so LayerNorm's centring matters
    testing_fill(gain, C, 2, 0.5f);
    for (int i = 0; i < C; i++)
        gain[i] += 1.0f;
    testing_fill(w, N * C, 3, 1.0f);
    norm_loss(&x);
    memset(din, 0, sizeof(din));
    memset(dgain, 0, sizeof(dgain));
    norm_backward(din, dgain, w, in, gain, mean, rstd, N, C, kind);
    assert_true(testing_fd_check("norm din", norm_loss, &x, in, din, N * C, N * C, 1e-2f) < FD_TOL);
    assert_true(testing_fd_check("norm dgain", norm_loss, &x, gain, dgain, C, C, 1e-2f) < FD_TOL);
}

static void test_norm_layernorm_backward_matches_fd(void **state)
{
    check_norm(NORM_LAYERNORM);
}

static void test_norm_rmsnorm_backward_matches_fd(void **state)
{
    check_norm(NORM_RMSNORM);
}

static void test_norm_backward_accumulates(void **state)
{
    enum { N = 3, C = 8 };
    float out[N * C], mean[N], rstd[N], in[N * C], gain[C], dout[N * C];
    float d1[N * C] = {0}, g1[C] = {0}, d2[N * C], g2[C];
    testing_fill(in, N * C, 4, 1.0f);
    testing_fill(dout, N * C, 5, 1.0f);
    for (int i = 0; i < C; i++)
        gain[i] = 1.0f;
    norm_forward(out, mean, rstd, in, gain, N, C, NORM_LAYERNORM);
    norm_backward(d1, g1, dout, in, gain, mean, rstd, N, C, NORM_LAYERNORM);
    for (int i = 0; i < N * C; i++)
        d2[i] = 1.0f;
    for (int i = 0; i < C; i++)
        g2[i] = 2.0f;
    norm_backward(d2, g2, dout, in, gain, mean, rstd, N, C, NORM_LAYERNORM);
    for (int i = 0; i < N * C; i++)
        expect_near(d2[i], d1[i] + 1.0f, 1e-6);
    for (int i = 0; i < C; i++)
        expect_near(g2[i], g1[i] + 2.0f, 1e-6);
}

// ---- rope ----
struct rope_ctx {
    float *x, *y, *w, *cs;
    int rows, T, hd;
};

static double rope_loss(void *p)
{
    struct rope_ctx *c = p;
    memcpy(c->y, c->x, (size_t)c->rows * c->hd * sizeof(float));
    rope_forward(c->y, c->cs, c->rows, c->T, c->hd);
    return dot(c->y, c->w, (size_t)c->rows * c->hd);
}

static void test_rope_backward_matches_fd(void **state)
{
    enum { T = 5, HD = 8, ROWS = 2 * T };
    float x[ROWS * HD], y[ROWS * HD], w[ROWS * HD], dx[ROWS * HD], cs[T * HD];
    struct rope_ctx c = {x, y, w, cs, ROWS, T, HD};
    rope_table_init(cs, T, HD);
    testing_fill(x, ROWS * HD, 6, 1.0f);
    testing_fill(w, ROWS * HD, 7, 1.0f);
    memcpy(dx, w, sizeof(dx));
    rope_backward(dx, cs, ROWS, T, HD);
    assert_true(testing_fd_check("rope", rope_loss, &c, x, dx, ROWS * HD, ROWS * HD, 1e-2f) <
                FD_TOL);
    // position 0 is the identity; position 1 pair 0 rotates by exactly 1 radian
    rope_loss(&c);
    expect_near(y[0], x[0], 1e-6);
    expect_near(y[HD], x[HD] * cosf(1.0f) - x[HD + 1] * sinf(1.0f), 1e-5);
}

// ---- attention core ----
struct att_ctx {
    float *q, *k, *v, *out, *p, *w;
    int B, H, T, dqk, dv;
    float cap;   // attention soft-capping (0: off)
    float *capt; // [B, H, T, T] when cap > 0
};

static double att_loss(void *ptr)
{
    struct att_ctx *a = ptr;
    attention_forward(a->out, a->p, NULL, a->q, a->k, a->v, a->B, a->H, a->T, a->dqk, a->dv,
                      1.0f / sqrtf((float)a->dqk), a->cap, a->capt, NULL);
    return dot(a->out, a->w, (size_t)a->B * a->H * a->T * a->dv);
}

// q and k wider than v, as in MLA (d_qk = d_h + d_rope).
static void test_attention_backward_matches_fd(void **state)
{
    enum { B = 2, H = 2, T = 5, DQK = 6, DV = 4, NQ = B * H * T * DQK, NV = B * H * T * DV };
    float q[NQ], k[NQ], v[NV], out[NV], p[B * H * T * T], w[NV];
    float dq[NQ], dk[NQ], dv[NV], dp[B * H * T * T];
    struct att_ctx a = {q, k, v, out, p, w, B, H, T, DQK, DV, 0.0f, NULL};
    testing_fill(q, NQ, 8, 1.5f);
    testing_fill(k, NQ, 9, 1.5f);
    testing_fill(v, NV, 10, 1.0f);
    testing_fill(w, NV, 11, 1.0f);
    att_loss(&a);
    attention_backward(dq, dk, dv, dp, w, p, q, k, v, B, H, T, DQK, DV, 1.0f / sqrtf((float)DQK),
                       0.0f, NULL, NULL);
    assert_true(testing_fd_check("attention dq", att_loss, &a, q, dq, NQ, NQ, 1e-2f) < FD_TOL);
    assert_true(testing_fd_check("attention dk", att_loss, &a, k, dk, NQ, NQ, 1e-2f) < FD_TOL);
    assert_true(testing_fd_check("attention dv", att_loss, &a, v, dv, NV, NV, 1e-2f) < FD_TOL);
}

// Soft-capped attention logits (Gemma 2) on both paths (sgemm blocks and the direct kernels):
// the gradients through c·tanh(s/c) match finite differences, the raw-logit statistic is of the
// logits before capping, and the output differs from the uncapped one.
static void check_attention_softcap(int T, int DQK, int DV, uint64_t seed)
{
    enum { B = 1, H = 2, MAXN = 2 * 13 * 16, MAXP = 2 * 13 * 13 };
    int NQ = B * H * T * DQK, NV = B * H * T * DV;
    float q[MAXN], k[MAXN], v[MAXN], out[MAXN], p[MAXP], w[MAXN], capt[MAXP];
    float dq[MAXN], dk[MAXN], dv[MAXN], dp[MAXP], plain[MAXN], stats[ATTN_STATS * B * H];
    const float cap = 1.0f, scale = 1.0f / sqrtf((float)DQK);
    struct att_ctx a = {q, k, v, out, p, w, B, H, T, DQK, DV, cap, capt};
    testing_fill(q, NQ, seed, 2.0f); // logits of a few units: tanh bends them
    testing_fill(k, NQ, seed + 1, 2.0f);
    testing_fill(v, NV, seed + 2, 1.0f);
    testing_fill(w, NV, seed + 3, 1.0f);
    attention_forward(plain, p, NULL, q, k, v, B, H, T, DQK, DV, scale, 0.0f, NULL, NULL);
    attention_forward(out, p, stats, q, k, v, B, H, T, DQK, DV, scale, cap, capt, NULL);
    double raw = 0.0, diff = 0.0;
    for (int i = 0; i < T; i++)
        for (int j = 0; j <= i; j++) {
            double s = 0.0;
            for (int e = 0; e < DQK; e++)
                s += (double)q[i * DQK + e] * k[j * DQK + e];
            raw = fmax(raw, fabs(s * scale));
        }
    expect_near(stats[0], raw, 1e-4 * raw); // head 0: the maximum before capping
    assert_true(raw > 2.0 * cap);
    for (int i = 0; i < NV; i++)
        diff = fmax(diff, fabs((double)out[i] - plain[i]));
    assert_true(diff > 1e-2);
    att_loss(&a);
    attention_backward(dq, dk, dv, dp, w, p, q, k, v, B, H, T, DQK, DV, scale, cap, capt, NULL);
    assert_true(testing_fd_check("softcap dq", att_loss, &a, q, dq, NQ, 64, 1e-2f) < FD_TOL);
    assert_true(testing_fd_check("softcap dk", att_loss, &a, k, dk, NQ, 64, 1e-2f) < FD_TOL);
    assert_true(testing_fd_check("softcap dv", att_loss, &a, v, dv, NV, 64, 1e-2f) < FD_TOL);
}

static void test_attention_softcap_matches_fd(void **state)
{
    check_attention_softcap(5, 6, 4, 60);   // sgemm in causal blocks
    check_attention_softcap(13, 16, 8, 70); // the direct kernels
    assert_true(attention_direct(13, 16, 8) && !attention_direct(5, 6, 4));
}

// The direct kernels for narrow heads (attention_direct): T not a multiple of 8, so the tail keys
// are exercised too; d_qk ≠ d_v as in MLA.
static void test_attention_direct_backward_matches_fd(void **state)
{
    enum { B = 1, H = 2, T = 13, DQK = 16, DV = 8, NQ = B * H * T * DQK, NV = B * H * T * DV };
    float q[NQ], k[NQ], v[NV], out[NV], p[B * H * T * T], w[NV];
    float dq[NQ], dk[NQ], dv[NV], dp[B * H * T * T];
    struct att_ctx a = {q, k, v, out, p, w, B, H, T, DQK, DV, 0.0f, NULL};
    assert_true(attention_direct(T, DQK, DV));
    assert_false(attention_direct(5, 6, 4)); // the sgemm path of the test above
    testing_fill(q, NQ, 18, 1.0f);
    testing_fill(k, NQ, 19, 1.0f);
    testing_fill(v, NV, 20, 1.0f);
    testing_fill(w, NV, 21, 1.0f);
    att_loss(&a);
    attention_backward(dq, dk, dv, dp, w, p, q, k, v, B, H, T, DQK, DV, 1.0f / sqrtf((float)DQK),
                       0.0f, NULL, NULL);
    assert_true(testing_fd_check("direct dq", att_loss, &a, q, dq, NQ, 64, 1e-2f) < FD_TOL);
    assert_true(testing_fd_check("direct dk", att_loss, &a, k, dk, NQ, 64, 1e-2f) < FD_TOL);
    assert_true(testing_fd_check("direct dv", att_loss, &a, v, dv, NV, NV, 1e-2f) < FD_TOL);
}

// Probabilities and outputs of one head [T, dqk] · [T, dv] against a written-out double
// computation.
static void check_attention_forward_double(int T, int DQK, int DV, uint64_t seed)
{
    float *q = malloc(sizeof(float) * T * DQK), *k = malloc(sizeof(float) * T * DQK);
    float *v = malloc(sizeof(float) * T * DV), *o = malloc(sizeof(float) * T * DV);
    float *p = malloc(sizeof(float) * T * T);
    double *z = malloc(sizeof(double) * T);
    float scale = 1.0f / sqrtf((float)DQK);
    testing_fill(q, (size_t)T * DQK, seed, 1.0f);
    testing_fill(k, (size_t)T * DQK, seed + 1, 1.0f);
    testing_fill(v, (size_t)T * DV, seed + 2, 1.0f);
    attention_forward(o, p, NULL, q, k, v, 1, 1, T, DQK, DV, scale, 0.0f, NULL, NULL);
    for (int i = 0; i < T; i++) {
        double mx = -1e300, sum = 0.0;
        for (int j = 0; j <= i; j++) {
            z[j] = 0.0;
            for (int e = 0; e < DQK; e++)
                z[j] += (double)q[i * DQK + e] * k[j * DQK + e];
            z[j] *= scale;
            mx = fmax(mx, z[j]);
        }
        for (int j = 0; j <= i; j++)
            sum += exp(z[j] - mx);
        for (int e = 0; e < DV; e++) {
            double acc = 0.0;
            for (int j = 0; j <= i; j++)
                acc += exp(z[j] - mx) / sum * v[j * DV + e];
            expect_near(o[i * DV + e], acc, 1e-5);
        }
        for (int j = 0; j < T; j++)
            expect_near(p[i * T + j], j <= i ? exp(z[j] - mx) / sum : 0.0, 1e-6);
    }
    free(q), free(k), free(v), free(o), free(p), free(z);
}

static void test_attention_direct_forward_matches_double(void **state)
{
    assert_true(attention_direct(20, 32, 32));
    check_attention_forward_double(20, 32, 32, 22);
}

// Wider heads go through sgemm in causal blocks of 64 query rows: T = 150 has two full blocks
// and a partial one, so every block shape (and the skipped keys right of each block) is
// exercised; d_qk ≠ d_v as in MLA.
static void test_attention_blocked_matches_double_and_fd(void **state)
{
    enum { B = 1, H = 1, T = 150, DQK = 40, DV = 24, NQ = T * DQK, NV = T * DV };
    static float q[NQ], k[NQ], v[NV], out[NV], p[T * T], w[NV], dq[NQ], dk[NQ], dv[NV], dp[T * T];
    struct att_ctx a = {q, k, v, out, p, w, B, H, T, DQK, DV, 0.0f, NULL};
    assert_false(attention_direct(T, DQK, DV));
    check_attention_forward_double(T, DQK, DV, 40);
    testing_fill(q, NQ, 44, 1.0f);
    testing_fill(k, NQ, 45, 1.0f);
    testing_fill(v, NV, 46, 1.0f);
    testing_fill(w, NV, 47, 1.0f);
    att_loss(&a);
    attention_backward(dq, dk, dv, dp, w, p, q, k, v, B, H, T, DQK, DV, 1.0f / sqrtf((float)DQK),
                       0.0f, NULL, NULL);
    assert_true(testing_fd_check("blocked dq", att_loss, &a, q, dq, NQ, 97, 1e-2f) < FD_TOL);
    assert_true(testing_fd_check("blocked dk", att_loss, &a, k, dk, NQ, 97, 1e-2f) < FD_TOL);
    assert_true(testing_fd_check("blocked dv", att_loss, &a, v, dv, NV, 97, 1e-2f) < FD_TOL);
}

static void test_attention_is_causal(void **state)
{
    // Changing a later key or value must not change earlier outputs.
    enum { B = 1, H = 1, T = 6, HD = 4, N = T * HD };
    float q[N], k[N], v[N], o1[N], o2[N], p[T * T];
    testing_fill(q, N, 12, 1.0f);
    testing_fill(k, N, 13, 1.0f);
    testing_fill(v, N, 14, 1.0f);
    attention_forward(o1, p, NULL, q, k, v, B, H, T, HD, HD, 0.5f, 0.0f, NULL, NULL);
    for (int j = 0; j < T; j++)
        for (int i = j + 1; i < T; i++)
            assert_true(p[j * T + i] == 0.0f);
    k[(T - 1) * HD] += 3.0f;
    v[(T - 1) * HD] += 3.0f;
    attention_forward(o2, p, NULL, q, k, v, B, H, T, HD, HD, 0.5f, 0.0f, NULL, NULL);
    assert_memory_equal(o1, o2, (T - 1) * HD * sizeof(float));
    assert_true(o1[(T - 1) * HD] != o2[(T - 1) * HD]);
}

static void test_attention_stats_match_hand_computation(void **state)
{
    // One head, T = 3, d_h = 2: logits z_ij = q_i·k_j·scale for j ≤ i, computed by hand here.
    float q[6] = {1, 0, 0, 2, -1, 1}, k[6] = {3, 1, -2, 0.5f, 1, -4}, v[6] = {0}, o[6];
    float p[9], stats[ATTN_STATS];
    float scale = 0.7f;
    attention_forward(o, p, stats, q, k, v, 1, 1, 3, 2, 2, scale, 0.0f, NULL, NULL);
    double max_abs = 0.0, entropy = 0.0, max_signed = -1e30;
    for (int i = 0; i < 3; i++) {
        double z[3], mx = -1e30, sum = 0.0;
        for (int j = 0; j <= i; j++) {
            z[j] = scale * (q[2 * i] * k[2 * j] + q[2 * i + 1] * k[2 * j + 1]);
            max_abs = fmax(max_abs, fabs(z[j]));
            mx = fmax(mx, z[j]);
        }
        max_signed = fmax(max_signed, mx);
        for (int j = 0; j <= i; j++)
            sum += exp(z[j] - mx);
        for (int j = 0; j <= i; j++) {
            double pj = exp(z[j] - mx) / sum;
            entropy -= pj * log(pj);
            expect_near(p[3 * i + j], pj, 1e-6);
        }
    }
    expect_near(stats[0], max_abs, 1e-5);
    expect_near(stats[1], entropy, 1e-5);
    expect_near(stats[2], max_signed, 1e-5);
    assert_true(max_signed < max_abs - 0.1); // a negative logit is the largest in magnitude
    // a NaN score at a later position of a row (key 1: rows 1 and 2 start with a finite score,
    // so the max/min scans may skip it) makes every statistic NaN, not a quiet maximum
    k[2] = NAN;
    attention_forward(o, p, stats, q, k, v, 1, 1, 3, 2, 2, scale, 0.0f, NULL, NULL);
    assert_true(isnan(stats[0]) && isnan(stats[1]) && isnan(stats[2]));
}

// ---- activations ----
struct act_ctx {
    float *in, *out, *w;
    int rows, f;
    int swiglu;
};

static double act_loss(void *p)
{
    struct act_ctx *a = p;
    if (a->swiglu)
        swiglu_forward(a->out, a->in, a->rows, a->f);
    else
        gelu_forward(a->out, a->in, (size_t)a->rows * a->f);
    return dot(a->out, a->w, (size_t)a->rows * a->f);
}

static void test_mlp_gelu_backward_matches_fd(void **state)
{
    enum { R = 4, F = 16 };
    float in[R * F], out[R * F], w[R * F], din[R * F];
    struct act_ctx a = {in, out, w, R, F, 0};
    testing_fill(in, R * F, 15, 3.0f);
    testing_fill(w, R * F, 16, 1.0f);
    gelu_forward(out, in, R * F);
    gelu_backward(din, w, in, out, R * F);
    assert_true(testing_fd_check("gelu", act_loss, &a, in, din, R * F, R * F, 1e-2f) < FD_TOL);
    // the derivative from the forward's output against the tanh formula in double, over zero,
    // tiny, moderate and saturated inputs; a NaN stays NaN
    float us[] = {0.0f,  -0.0f, 1e-30f, -1e-20f, 1e-4f,  0.3f,  -0.7f,  1.5f,
                  -2.5f, 4.0f,  -6.0f,  9.0f,    -12.0f, 40.0f, -40.0f, NAN};
    enum { NU = sizeof(us) / sizeof(us[0]) };
    float hs[NU], ones[NU], ds[NU];
    for (int i = 0; i < NU; i++)
        ones[i] = 1.0f;
    gelu_forward(hs, us, NU);
    gelu_backward(ds, ones, us, hs, NU);
    for (int i = 0; i < NU - 1; i++) {
        double u = us[i], kk = 0.7978845608028654, th = tanh(kk * (u + 0.044715 * u * u * u));
        double want = 0.5 * (1 + th) + 0.5 * u * (1 - th * th) * kk * (1 + 3 * 0.044715 * u * u);
        expect_near(ds[i], want, 2e-6);
    }
    assert_true(isnan(ds[NU - 1]));
    // tanh-GELU(1) = 0.841192
    float one = 1.0f, g = 0.0f;
    gelu_forward(&g, &one, 1);
    expect_near(g, 0.8411920f, 1e-6);
}

static void test_mlp_swiglu_backward_matches_fd(void **state)
{
    enum { R = 4, F = 8 };
    float in[R * 2 * F], out[R * F], w[R * F], din[R * 2 * F];
    struct act_ctx a = {in, out, w, R, F, 1};
    testing_fill(in, R * 2 * F, 17, 3.0f);
    testing_fill(w, R * F, 18, 1.0f);
    swiglu_backward(din, w, in, R, F);
    assert_true(testing_fd_check("swiglu", act_loss, &a, in, din, R * 2 * F, R * 2 * F, 1e-2f) <
                FD_TOL);
}

// ---- matmul and embedding ----
struct mm_ctx {
    float *in, *wt, *out, *w;
    int n, i, o;
};

static double mm_loss(void *p)
{
    struct mm_ctx *m = p;
    matmul_forward(NULL, m->out, m->in, m->wt, m->n, m->i, m->o);
    return dot(m->out, m->w, (size_t)m->n * m->o);
}

static void test_matmul_backward_matches_fd(void **state)
{
    enum { N = 5, I = 7, O = 3 };
    float in[N * I], wt[O * I], out[N * O], w[N * O], din[N * I], dwt[O * I] = {0};
    struct mm_ctx m = {in, wt, out, w, N, I, O};
    testing_fill(in, N * I, 19, 1.0f);
    testing_fill(wt, O * I, 20, 1.0f);
    testing_fill(w, N * O, 21, 1.0f);
    matmul_backward(NULL, din, dwt, w, in, wt, N, I, O);
    assert_true(testing_fd_check("matmul din", mm_loss, &m, in, din, N * I, N * I, 1e-2f) < FD_TOL);
    assert_true(testing_fd_check("matmul dw", mm_loss, &m, wt, dwt, O * I, O * I, 1e-2f) < FD_TOL);
}

// bf16 precision: each product equals sgemm on operands rounded beforehand (forward, din and
// the accumulated dw), bitwise; the operands themselves are left as they were; and the result
// differs from fp32's.
static void test_matmul_bf16_rounds_both_operands(void **state)
{
    enum { N = 33, I = 40, O = 24 };
    static float in[N * I], wt[O * I], dout[N * O], rin[N * I], rwt[O * I], rdout[N * O];
    static float out[N * O], want[N * O], fp[N * O], din[N * I], dwant[N * I];
    static float dw[O * I], dwwant[O * I];
    struct matmul_prec p;
    matmul_prec_init(&p, 1, 0, N, N * I, O * I);
    testing_fill(in, N * I, 31, 1.0f);
    testing_fill(wt, O * I, 32, 1.0f);
    testing_fill(dout, N * O, 33, 1.0f);
    bf16_round_array(rin, in, N * I);
    bf16_round_array(rwt, wt, O * I);
    bf16_round_array(rdout, dout, N * O);
    float in0 = in[0];
    matmul_forward(&p, out, in, wt, N, I, O);
    matmul_forward(NULL, want, rin, rwt, N, I, O);
    matmul_forward(NULL, fp, in, wt, N, I, O);
    assert_memory_equal(out, want, sizeof(out));
    assert_memory_not_equal(out, fp, sizeof(out));
    assert_true(in[0] == in0 && rin[0] != in0);
    for (int i = 0; i < O * I; i++)
        dw[i] = dwwant[i] = 0.5f; // dw accumulates
    matmul_backward(&p, din, dw, dout, in, wt, N, I, O);
    matmul_backward(NULL, dwant, dwwant, rdout, rin, rwt, N, I, O);
    assert_memory_equal(din, dwant, sizeof(din));
    assert_memory_equal(dw, dwwant, sizeof(dw));
    matmul_prec_free(&p);
}

struct emb_ctx {
    float *wte, *wpe, *out, *w;
    int *tok;
    int B, T, C;
};

static double emb_loss(void *p)
{
    struct emb_ctx *e = p;
    embed_forward(e->out, e->tok, e->wte, e->wpe, e->B, e->T, e->C);
    return dot(e->out, e->w, (size_t)e->B * e->T * e->C);
}

static void test_embed_backward_matches_fd(void **state)
{
    enum { V = 5, B = 2, T = 4, C = 3 };
    float wte[V * C], wpe[T * C], out[B * T * C], w[B * T * C];
    float dwte[V * C] = {0}, dwpe[T * C] = {0};
    int tok[B * T] = {1, 3, 3, 0, 4, 1, 1, 1}; // repeats exercise the scatter-add
    struct emb_ctx e = {wte, wpe, out, w, tok, B, T, C};
    testing_fill(wte, V * C, 22, 1.0f);
    testing_fill(wpe, T * C, 23, 1.0f);
    testing_fill(w, B * T * C, 24, 1.0f);
    embed_backward(dwte, dwpe, w, tok, B, T, C);
    assert_true(testing_fd_check("embed wte", emb_loss, &e, wte, dwte, V * C, V * C, 1e-2f) <
                FD_TOL);
    assert_true(testing_fd_check("embed wpe", emb_loss, &e, wpe, dwpe, T * C, T * C, 1e-2f) <
                FD_TOL);
    for (int c = 0; c < C; c++)
        expect_near(dwte[2 * C + c], 0.0f, 0.0); // token 2 never appears
}

// ---- whole model ----
struct model_ctx {
    struct model *m;
    float *params;
    int *in, *tg;
    int B;
};

static double model_loss(void *p)
{
    struct model_ctx *c = p;
    struct loss_parts lp;
    struct model_aux aux = model_forward(c->m, c->params, c->in, c->B);
    xent_forward(&lp, c->m->acts.logits, c->tg, c->B * c->m->cfg.seq_len, c->m->cfg.vocab, 1e-2f,
                 (float)c->m->cfg.final_softcap);
    return lp.total + aux.balance + aux.router_z; // the MoE losses (0 for dense models)
}

// Every gradient of the whole model (24 sampled entries per tensor) against finite differences
// of the loss, auxiliary MoE losses included.
static void check_model_cfg(const struct model_config *cfg)
{
    struct model m;
    int B = 2, n_tok = B * cfg->seq_len;
    int in[16], tg[16];
    assert_true(n_tok <= 16);
    model_init(&m, cfg, B);
    model_set_aux_coefs(&m, 0.3, 0.05); // large enough that a wrong aux gradient shows
    float *params = xcalloc(m.table.total, sizeof(float));
    float *grads = xcalloc(m.table.total, sizeof(float));
    model_params_init(&m, params, 5);
    // perturb gains away from 1 so their gradients are generic
    for (int i = 0; i < m.table.n; i++)
        if (m.table.t[i].kind == TENSOR_GAIN)
            for (size_t j = 0; j < m.table.t[i].size; j++)
                params[m.table.t[i].offset + j] += 0.1f * ((float)(j % 5) - 2.0f);
    for (int i = 0; i < n_tok; i++) {
        in[i] = (i * 7 + 3) % cfg->vocab;
        tg[i] = (i * 5 + 1) % cfg->vocab;
    }
    struct model_ctx c = {&m, params, in, tg, B};
    struct loss_parts lp;
    model_forward(&m, params, in, B);
    xent_forward_backward(&lp, m.acts.logits, NULL, tg, n_tok, cfg->vocab, 1e-2f, 1.0f,
                          (float)cfg->final_softcap);
    model_backward(&m, params, grads, in, B, 1.0f, NULL, NULL);
    for (int i = 0; i < m.table.n; i++) {
        const struct tensor *t = &m.table.t[i];
        // MoE and MLA: a smaller step (the latent norms curve the loss more; truncation error
        // reached 2e-2 at 1e-2); MoE: at most 2 of 24 samples may sit across a routing switch
        float eps = cfg->experts || cfg->attention == ATTN_MLA ? 3e-3f : 1e-2f;
        double err = cfg->experts
                         ? testing_fd_check_kinks(t->name, model_loss, &c, params + t->offset,
                                                  grads + t->offset, t->size, 24, eps, 2)
                         : testing_fd_check(t->name, model_loss, &c, params + t->offset,
                                            grads + t->offset, t->size, 24, eps);
        if (!(err < FD_TOL))
            fail_msg("model gradient of %s off by %.2e", t->name, err);
    }
    free(params);
    free(grads);
    model_free(&m);
}

static void check_model(enum norm_kind norm, int qk, enum pos_kind pos, enum mlp_kind mlp)
{
    struct model_config cfg = {
        8,   2,   2,       4, 4,   11, 2,        norm, qk, pos, mlp,
        0,   0,   0,       0, 0.0, 1,  ATTN_MHA, 0,    0,  0,   0 /* moe_group */,
        0.0, 0.0, MUP_OFF, 0};
    check_model_cfg(&cfg);
}

static void test_model_default_backward_matches_fd(void **state)
{
    check_model(NORM_LAYERNORM, 0, POS_ROPE, MLP_GELU);
}

static void test_model_variants_backward_matches_fd(void **state)
{
    check_model(NORM_RMSNORM, 1, POS_LEARNED, MLP_SWIGLU);
    check_model(NORM_LAYERNORM, 1, POS_ROPE, MLP_SWIGLU);
}

// The 8-wide two-block model of the finite-difference tests (layernorm, RoPE, GELU, dense).
static struct model_config tiny_config(enum attn_kind attention)
{
    return (struct model_config){.dim = 8,
                                 .layers = 2,
                                 .heads = 2,
                                 .head_dim = 4,
                                 .seq_len = 4,
                                 .vocab = 11,
                                 .mlp_ratio = 2,
                                 .norm = NORM_LAYERNORM,
                                 .pos = POS_ROPE,
                                 .mlp = MLP_GELU,
                                 .moe_every = 1,
                                 .attention = attention};
}

// Soft-capped attention and output logits (caps small enough to bend the logits at init), in
// the dense model and in MLA.
static void test_model_softcap_backward_matches_fd(void **state)
{
    struct model_config cfg = tiny_config(ATTN_MHA);
    cfg.attn_softcap = 0.3, cfg.final_softcap = 0.5;
    check_model_cfg(&cfg);
    cfg.attention = ATTN_MLA, cfg.kv_rank = 6, cfg.rope_dim = 2;
    check_model_cfg(&cfg);
}

// MoE: router, routed and shared experts, gates with and without renorm, a capacity that drops
// pairs, dense blocks between MoE blocks; the aux losses' gradients are in the check.
static void test_model_moe_backward_matches_fd(void **state)
{
    struct model_config cfg = {8,
                               2,
                               2,
                               4,
                               4,
                               11,
                               2,
                               NORM_LAYERNORM,
                               0,
                               POS_ROPE,
                               MLP_GELU,
                               4 /* experts */,
                               2 /* top_k */,
                               0,
                               1 /* shared */,
                               1.0,
                               1,
                               ATTN_MHA,
                               0,
                               0,
                               0,
                               0 /* moe_group */,
                               0.0,
                               0.0,
                               MUP_OFF,
                               0};
    struct model m;
    model_init(&m, &cfg, 2);
    assert_int_equal(m.moe_layers, 2);
    model_free(&m);
    check_model_cfg(&cfg);
    cfg.gate_renorm = 1;
    cfg.mlp = MLP_SWIGLU;
    cfg.shared_experts = 0;
    cfg.capacity_factor = 0.6; // drops a good share of the pairs
    check_model_cfg(&cfg);
    cfg.moe_group = 2; // routing groups of half a sequence
    check_model_cfg(&cfg);
    cfg.moe_every = 2; // block 0 dense, block 1 MoE
    cfg.top_k = 1;
    cfg.qk_norm = 1;
    cfg.moe_group = 8; // one routing group of both sequences
    check_model_cfg(&cfg);
}

// MLA: query latent or not, decoupled RoPE, qk-norm on the materialised q and k, learned
// positions without a rope part, and MLA with MoE.
static void test_model_mla_backward_matches_fd(void **state)
{
    struct model_config cfg = tiny_config(ATTN_MLA);
    cfg.kv_rank = 6, cfg.rope_dim = 2;
    struct model m;
    model_init(&m, &cfg, 2);
    assert_int_equal(m.dqk, 6);
    assert_true(tensor_table_find(&m.table, "blocks.0.attn.wkv_a") >= 0);
    assert_int_equal(m.table.t[tensor_table_find(&m.table, "blocks.0.attn.wkv_a")].rows, 8);
    assert_int_equal(m.table.t[tensor_table_find(&m.table, "blocks.1.attn.wkv_b")].rows, 16);
    assert_int_equal(tensor_table_find(&m.table, "blocks.0.attn.wk"), -1);
    model_free(&m);
    check_model_cfg(&cfg);
    cfg.q_rank = 5;
    cfg.qk_norm = 1;
    cfg.norm = NORM_RMSNORM;
    cfg.rope_dim = 4;
    check_model_cfg(&cfg);
    cfg.pos = POS_LEARNED;
    cfg.rope_dim = 0;
    cfg.experts = 3;
    cfg.top_k = 2;
    cfg.capacity_factor = 2.0;
    cfg.mlp = MLP_SWIGLU;
    check_model_cfg(&cfg);
}

// QK-clip, one layer at a time (a later layer's inputs move when an earlier one is clipped): with
// tau between the layer's heads' max logits, the heads above it end with their max logit at tau
// (every logit of the head scales by eta), the others and the layers before keep every bit; MHA,
// MLA with and without a query latent.
static void check_qk_clip(const struct model_config *cfg)
{
    enum { B = 2 };
    struct model m;
    model_init(&m, cfg, B);
    int L = cfg->layers, H = cfg->heads, n = B * cfg->seq_len;
    float *params = xcalloc(m.table.total, sizeof(float));
    double s0[16], s1[16], eta[16];
    int in[32];
    assert_true(L * H <= 16 && n <= 32);
    for (int i = 0; i < n; i++)
        in[i] = (i * 5 + 2) % cfg->vocab;
    model_set_probing(&m, 1);
    for (int lt = 0; lt < L; lt++) {
        model_params_init(&m, params, 9);
        model_forward(&m, params, in, B);
        model_attn_max_signed(&m, B, s0);
        double lo = 1e30, hi = -1e30;
        for (int h = 0; h < H; h++)
            lo = fmin(lo, s0[lt * H + h]), hi = fmax(hi, s0[lt * H + h]);
        assert_true(lo > 0.0 && hi > 1.05 * lo);
        double tau = 0.5 * (lo + hi);
        int clipped = qk_clip_eta(s0 + lt * H, H, tau, eta + lt * H);
        assert_true(clipped > 0 && clipped < H);
        for (int i = 0; i < L * H; i++)
            if (i / H != lt)
                eta[i] = 1.0;
        qk_clip_apply(&m, params, eta, 0.3);
        model_forward(&m, params, in, B);
        model_attn_max_signed(&m, B, s1);
        for (int i = 0; i < (lt + 1) * H; i++) {
            if (i / H == lt && s0[i] > tau)
                expect_near(s1[i], tau, 1e-5 * tau);
            else
                assert_true(s1[i] == s0[i]);
        }
    }
    free(params);
    model_free(&m);
}

// µParam at each level, width 64 against a base of 16: the hidden matrices' LR factor is
// base / dim = 1/4 from simple on (gains, embeddings and head keep 1); the head's init std is
// sqrt(base) / dim from intermediate on (1/sqrt(dim) below); full uses the 1/d_qk attention
// scale and zero W_q (MLA with a query latent: wq_b), leaving W_k as it was.
static double tensor_std(const float *w, size_t n)
{
    double s = 0.0, ss = 0.0;
    for (size_t i = 0; i < n; i++)
        s += w[i], ss += (double)w[i] * w[i];
    return sqrt(ss / n - (s / n) * (s / n));
}

static void check_mup_level(struct model_config *cfg, enum mup_level level)
{
    cfg->mup = level, cfg->mup_base_width = 16;
    struct model m;
    model_init(&m, cfg, 1);
    float *params = malloc(sizeof(float) * m.table.total);
    model_params_init(&m, params, 3);
    int dqk = m.dqk;
    expect_near(m.attn_scale, level == MUP_FULL ? 1.0 / dqk : 1.0 / sqrt((double)dqk), 1e-7);
    for (int i = 0; i < m.table.n; i++) {
        const struct tensor *t = &m.table.t[i];
        int hidden = t->kind == TENSOR_MATRIX;
        assert_true(t->lr_scale == (hidden && level != MUP_OFF ? 16.0 / 64.0 : 1.0));
    }
    const struct tensor *head = &m.table.t[m.head];
    double want = level >= MUP_INTERMEDIATE ? 4.0 / 64.0 : 1.0 / 8.0;
    expect_near(tensor_std(params + head->offset, head->size), want, 0.03 * want);
    const struct block_index *bi = &m.blocks[1];
    const struct tensor *wq = &m.table.t[bi->wq_b >= 0 ? bi->wq_b : bi->wq];
    double q_std = tensor_std(params + wq->offset, wq->size);
    assert_true(level == MUP_FULL ? q_std == 0.0 : q_std > 0.5 / sqrt((double)wq->cols));
    const struct tensor *wk = &m.table.t[bi->wq_b >= 0 ? bi->wkv_b : bi->wq + 1];
    assert_true(tensor_std(params + wk->offset, wk->size) > 0.5 / sqrt((double)wk->cols));
    free(params);
    model_free(&m);
}

static void test_mup_levels_scale_lr_init_and_attention(void **state)
{
    struct model_config cfg = {
        64, 2,   4, 16,       6, 512, 2, NORM_LAYERNORM,    0,   POS_ROPE, MLP_GELU, 0, 0, 0,
        0,  0.0, 1, ATTN_MHA, 0, 0,   0, 0 /* moe_group */, 0.0, 0.0,      MUP_OFF,  0};
    for (int level = MUP_OFF; level <= MUP_FULL; level++)
        check_mup_level(&cfg, (enum mup_level)level);
    cfg.attention = ATTN_MLA, cfg.kv_rank = 32, cfg.q_rank = 24, cfg.rope_dim = 4;
    check_mup_level(&cfg, MUP_FULL);
    check_mup_level(&cfg, MUP_SIMPLE);
}

static void test_qk_clip_scales_each_heads_logits(void **state)
{
    struct model_config cfg = {
        16, 2,   4, 4,        6, 11, 2, NORM_LAYERNORM,    0,   POS_ROPE, MLP_GELU, 0, 0, 0,
        0,  0.0, 1, ATTN_MHA, 0, 0,  0, 0 /* moe_group */, 0.0, 0.0,      MUP_OFF,  0};
    check_qk_clip(&cfg);
    cfg.attention = ATTN_MLA, cfg.kv_rank = 8, cfg.rope_dim = 2;
    check_qk_clip(&cfg);
    cfg.q_rank = 6;
    check_qk_clip(&cfg);
    double eta[3], s[3] = {2.0, 0.5, NAN};
    assert_int_equal(qk_clip_eta(s, 3, 1.0, eta), 1);
    expect_near(eta[0], 0.5, 0.0);
    expect_near(eta[1], 1.0, 0.0);
    assert_true(isnan(eta[2]));
}

// At a large vocabulary the logits dominate the arena: the fused loss overwrites them with their
// gradient, so the arena holds exactly one [B·T, V] buffer per micro-batch (issue 16: 268 MB at
// V = 32768 for 8 x 256 tokens; a second one would double it).
static void test_model_one_logits_buffer(void **state)
{
    struct model_config c = {
        64, 2,   4, 16,       32, 1000, 4, NORM_LAYERNORM,    1,   POS_ROPE, MLP_GELU, 0, 0, 0,
        0,  0.0, 1, ATTN_MHA, 0,  0,    0, 0 /* moe_group */, 0.0, 0.0,      MUP_OFF,  0};
    struct model m;
    int B = 3;
    model_init(&m, &c, B);
    size_t small = m.acts.floats;
    model_free(&m);
    c.vocab = 5000;
    model_init(&m, &c, B);
    assert_int_equal(m.acts.floats - small, (size_t)B * c.seq_len * (5000 - 1000));
    model_free(&m);
}

// The memory estimate that refuses oversized runs before allocating must track the real arena
// and state for every variant (within 10% for activations, 1% for parameters and state).
static void test_model_memory_estimate_tracks_the_arena(void **state)
{
    struct model_config base = {
        64, 3,   4, 16,       32, 100, 4, NORM_LAYERNORM,    1,   POS_ROPE, MLP_SWIGLU, 0, 0, 0,
        0,  0.0, 1, ATTN_MHA, 0,  0,   0, 0 /* moe_group */, 0.0, 0.0,      MUP_OFF,    0};
    struct model_config cfgs[8];
    for (int i = 0; i < 8; i++)
        cfgs[i] = base;
    cfgs[7].attn_softcap = 30.0; // the tanh of each attention logit is kept too
    cfgs[1].experts = 8, cfgs[1].top_k = 2, cfgs[1].shared_experts = 1, cfgs[1].capacity_factor = 1;
    cfgs[2].attention = ATTN_MLA, cfgs[2].kv_rank = 32, cfgs[2].q_rank = 24, cfgs[2].rope_dim = 8;
    cfgs[3] = cfgs[2];
    cfgs[3].experts = 4, cfgs[3].top_k = 1, cfgs[3].moe_every = 2, cfgs[3].mlp = MLP_GELU;
    cfgs[4].qk_norm = 0, cfgs[4].pos = POS_LEARNED;
    cfgs[5] = cfgs[2];
    cfgs[5].layers = 1; // the shared backward scratch weighs more with one block
    cfgs[6] = cfgs[5];
    cfgs[6].head_dim = 4, cfgs[6].rope_dim = 64, cfgs[6].q_rank = 0; // a wide rope part
    for (int i = 0; i < 8; i++) {
        struct model m;
        int B = 3;
        double acts = 0.0, st = 0.0;
        model_memory_estimate(&cfgs[i], B, &acts, &st);
        model_init(&m, &cfgs[i], B);
        double real_acts = (double)m.acts.floats * 4.0, real_state = 20.0 * m.table.total;
        fprintf(stderr, "  config %d: acts %.0f vs %.0f, state %.0f vs %.0f\n", i, acts, real_acts,
                st, real_state);
        assert_true(fabs(acts - real_acts) <= 0.10 * real_acts);
        assert_true(fabs(st - real_state) <= 0.01 * real_state);
        // the attention share of the arena: at least q, k, v, p, o and merged heads, and less
        // than the whole arena
        size_t BT = (size_t)B * cfgs[i].seq_len, I = (size_t)m.inner;
        size_t attn = model_attention_act_floats(&m),
               least = (size_t)cfgs[i].layers *
                       (5 * BT * I + (size_t)B * cfgs[i].heads * cfgs[i].seq_len * cfgs[i].seq_len);
        assert_true(attn >= least && attn < m.acts.floats);
        model_free(&m);
    }
}

// Routing on hand-made logits: the top-k order, ties to the lower index, the capacity served by
// choice rank then token order, gates with and without renorm, the statistics.
static void test_moe_routing_rules(void **state)
{
    enum { N = 4, E = 3, K = 2 };
    // token 0: experts 1 > 0 = 2 (tie: 0 first); token 1: 2 > 1 > 0; tokens 2, 3: 1 > 2 > 0
    const float logits[N * E] = {0, 1, 0, 0, 1, 2, -1, 3, 2, -1, 3, 2};
    float probs[N * E], lse[N], gates[N * K];
    int sel[N * K], slot[N * K], slot_tok[N * K], off[E + 1];
    double counts[2 * E], mean_p[E], gcounts[N * E];
    assert_int_equal(moe_capacity(N, E, K, 1.0), 3); // ceil(1.0 · 2 · 4 / 3)
    assert_int_equal(moe_capacity(N, E, K, 100.0), N);
    memcpy(probs, logits, sizeof(probs));
    // one routing group of all 4 tokens
    struct moe_stats st = moe_route_forward(probs, lse, sel, gates, slot, slot_tok, off, counts,
                                            mean_p, gcounts, N, E, K, 0, N, 2);
    const int want_sel[N * K] = {1, 0, 2, 1, 1, 2, 1, 2};
    for (int i = 0; i < N * K; i++)
        assert_int_equal(sel[i], want_sel[i]);
    // capacity 2: first choices (t0→1, t1→2, t2→1, t3→1: the third is dropped), then second
    // choices (t0→0, t1→1: full, dropped, t2→2, t3→2: full, dropped)
    const int kept[N * K] = {1, 1, 1, 0, 1, 1, 0, 0};
    for (int i = 0; i < N * K; i++)
        assert_int_equal(slot[i] >= 0, kept[i]);
    assert_int_equal(off[0], 0);
    assert_int_equal(off[1], 1); // expert 0: t0
    assert_int_equal(off[2], 3); // expert 1: t0, t2
    assert_int_equal(off[3], 5); // expert 2: t1, t2
    assert_int_equal(slot_tok[slot[0]], 0);
    assert_int_equal(slot_tok[slot[5]], 2);
    expect_near(st.dropped, 3.0 / 8.0, 1e-12);
    for (int t = 0; t < N; t++) {
        double s = 0.0, z = 0.0;
        for (int e = 0; e < E; e++)
            z += exp((double)logits[t * E + e]);
        for (int e = 0; e < E; e++) {
            expect_near(probs[t * E + e], exp((double)logits[t * E + e]) / z, 1e-6);
            s += probs[t * E + e];
        }
        expect_near(s, 1.0, 1e-6);
        expect_near(lse[t], log(z), 1e-6);
        expect_near(gates[t * K], probs[t * E + sel[t * K]], 0.0);
    }
    // balance = E Σ f_i P_i with f = chosen pairs / (N k) = (1/8, 4/8, 3/8)
    double bal = 0.0, f[E] = {1.0 / 8, 4.0 / 8, 3.0 / 8};
    for (int e = 0; e < E; e++)
        bal += f[e] * mean_p[e];
    expect_near(st.balance, E * bal, 1e-12);
    memcpy(probs, logits, sizeof(probs));
    for (int e = 0; e < E; e++)
        expect_near(gcounts[e], f[e] * N * K, 0.0);
    memcpy(probs, logits, sizeof(probs));
    moe_route_forward(probs, lse, sel, gates, slot, slot_tok, off, counts, mean_p, gcounts, N, E, K,
                      1, N, 2);
    for (int t = 0; t < N; t++)
        expect_near(gates[t * K] + gates[t * K + 1], 1.0, 1e-6); // renormalised
    // two groups of 2 tokens, capacity 2 in each: nothing is dropped (expert 1 takes t0, t1 in
    // group 0 and t2, t3 in group 1), where one group of 4 dropped 3 pairs
    memcpy(probs, logits, sizeof(probs));
    st = moe_route_forward(probs, lse, sel, gates, slot, slot_tok, off, counts, mean_p, gcounts, N,
                           E, K, 0, 2, 2);
    for (int i = 0; i < N * K; i++)
        assert_true(slot[i] >= 0);
    expect_near(st.dropped, 0.0, 0.0);
    assert_int_equal(off[E], N * K);
    // balance: the mean over the groups of E Σ f_i P_i, with each group's f and P
    const double fg[2][E] = {{1.0 / 4, 2.0 / 4, 1.0 / 4}, {0.0, 2.0 / 4, 2.0 / 4}};
    double want = 0.0;
    for (int g = 0; g < 2; g++)
        for (int e = 0; e < E; e++) {
            double pg = 0.5 * ((double)probs[(2 * g) * E + e] + probs[(2 * g + 1) * E + e]);
            want += E * fg[g][e] * pg / 2;
            expect_near(gcounts[g * E + e], fg[g][e] * 2 * K, 0.0);
        }
    expect_near(st.balance, want, 1e-12);
}

// ---- fast math ----
static void test_fastmath_accuracy(void **state)
{
    double worst_exp = 0.0, worst_tanh = 0.0;
    for (int i = -86000; i <= 87000; i += 7) { // inside the clamp
        float x = (float)i * 1e-3f;
        double want = exp((double)x);
        worst_exp = fmax(worst_exp, fabs((double)fm_expf(x) - want) / want);
    }
    for (int i = -20000; i <= 20000; i++) {
        float x = (float)i * 1e-3f;
        worst_tanh = fmax(worst_tanh, fabs((double)fm_tanhf(x) - tanh((double)x)));
    }
    fprintf(stderr, "  fm_expf max rel err %.2e, fm_tanhf max abs err %.2e\n", worst_exp,
            worst_tanh);
    assert_true(worst_exp < 4e-7);
    assert_true(worst_tanh < 3e-7);
    assert_true(fm_expf(-1000.0f) > 0.0f && fm_expf(1000.0f) < INFINITY); // clamped, finite
    float v[11] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
    expect_near(lanes_sum(v, 11), 66.0, 0.0);
    expect_near(fm_max(v, 11), 11.0f, 0.0);
}

// ---- tensor table and init ----
static void test_model_table_names_and_order(void **state)
{
    struct model_config cfg = {
        16, 2,   2, 8,        8, 32, 4, NORM_LAYERNORM,    1,   POS_LEARNED, MLP_SWIGLU, 0, 0, 0,
        0,  0.0, 1, ATTN_MHA, 0, 0,  0, 0 /* moe_group */, 0.0, 0.0,         MUP_OFF,    0};
    struct model m;
    const char *want[] = {"tok_embed",
                          "pos_embed",
                          "blocks.0.ln1.gain",
                          "blocks.0.attn.wq",
                          "blocks.0.attn.wk",
                          "blocks.0.attn.wv",
                          "blocks.0.attn.q_norm.gain",
                          "blocks.0.attn.k_norm.gain",
                          "blocks.0.attn.wo",
                          "blocks.0.ln2.gain",
                          "blocks.0.mlp.w1",
                          "blocks.0.mlp.w3",
                          "blocks.0.mlp.w2"};
    model_init(&m, &cfg, 1);
    assert_int_equal(m.table.n, 2 + 2 * 11 + 2);
    for (int i = 0; i < (int)(sizeof(want) / sizeof(want[0])); i++)
        assert_string_equal(m.table.t[i].name, want[i]);
    assert_string_equal(m.table.t[m.table.n - 1].name, "head");
    const struct tensor *wo = &m.table.t[tensor_table_find(&m.table, "blocks.1.attn.wo")];
    assert_int_equal(wo->rows, 16);
    assert_int_equal(wo->cols, 16);
    assert_int_equal(wo->layer, 1);
    size_t sum = 0;
    for (int i = 0; i < m.table.n; i++) {
        assert_int_equal(m.table.t[i].offset, sum); // contiguous, in order
        sum += m.table.t[i].size;
    }
    assert_int_equal(m.table.total, sum);
    model_free(&m);
}

static void test_model_init_statistics_and_name_keying(void **state)
{
    struct model_config a = {
        64, 2,   4, 16,       8, 256, 4, NORM_LAYERNORM,    0,   POS_ROPE, MLP_GELU, 0, 0, 0,
        0,  0.0, 1, ATTN_MHA, 0, 0,   0, 0 /* moe_group */, 0.0, 0.0,      MUP_OFF,  0};
    struct model_config b = a;
    struct model ma, mb;
    b.layers = 3;
    model_init(&ma, &a, 1);
    model_init(&mb, &b, 1);
    float *pa = xcalloc(ma.table.total, sizeof(float));
    float *pb = xcalloc(mb.table.total, sizeof(float));
    model_params_init(&ma, pa, 7);
    model_params_init(&mb, pb, 7);
    for (int i = 0; i < ma.table.n; i++) {
        const struct tensor *t = &ma.table.t[i];
        const struct tensor *u = &mb.table.t[tensor_table_find(&mb.table, t->name)];
        // same seed and name → same values, whatever else the model holds
        assert_memory_equal(pa + t->offset, pb + u->offset, t->size * sizeof(float));
        double s = 0.0, mx = 0.0;
        for (size_t j = 0; j < t->size; j++) {
            s += (double)pa[t->offset + j] * pa[t->offset + j];
            mx = fmax(mx, fabs(pa[t->offset + j]));
        }
        double rms = sqrt(s / t->size);
        if (t->kind == TENSOR_GAIN) {
            expect_near(rms, 1.0, 1e-12);
        } else {
            double want = 1.0 / sqrt(t->kind == TENSOR_EMBEDDING ? 64.0 : (double)t->cols);
            if (fabs(rms / want - 1.0) > 0.05)
                fail_msg("%s: init rms %.4f, want %.4f", t->name, rms, want);
            if (t->kind == TENSOR_MATRIX) // truncated at 2σ of the pre-scaling normal
                assert_true(mx <= 2.0 * want / 0.87962566103423978 + 1e-6);
        }
    }
    model_params_init(&ma, pb, 8);
    assert_true(memcmp(pa, pb, ma.table.total * sizeof(float)) != 0);
    free(pa);
    free(pb);
    model_free(&ma);
    model_free(&mb);
}

static void test_model_same_threads_bitwise_repeatable(void **state)
{
    struct model_config cfg = {
        32, 2,   4, 8,        16, 64, 4, NORM_LAYERNORM,    1,   POS_ROPE, MLP_GELU, 0, 0, 0,
        0,  0.0, 1, ATTN_MHA, 0,  0,  0, 0 /* moe_group */, 0.0, 0.0,      MUP_OFF,  0};
    struct model m;
    int B = 4, n = B * cfg.seq_len;
    int *in = xcalloc((size_t)n, sizeof(int)), *tg = xcalloc((size_t)n, sizeof(int));
    matmul_set_threads(2);
    model_init(&m, &cfg, B);
    float *p = xcalloc(m.table.total, sizeof(float));
    float *g1 = xcalloc(m.table.total, sizeof(float)), *g2 = xcalloc(m.table.total, sizeof(float));
    model_params_init(&m, p, 3);
    for (int i = 0; i < n; i++) {
        in[i] = (i * 13) % 64;
        tg[i] = (i * 29 + 5) % 64;
    }
    for (int rep = 0; rep < 2; rep++) {
        struct loss_parts lp;
        model_forward(&m, p, in, B);
        xent_forward_backward(&lp, m.acts.logits, NULL, tg, n, 64, 1e-4f, 1.0f, 0.0f);
        model_backward(&m, p, rep ? g2 : g1, in, B, 1.0f, NULL, NULL);
    }
    assert_memory_equal(g1, g2, m.table.total * sizeof(float));
    matmul_set_threads(1);
    free(p);
    free(g1);
    free(g2);
    free(in);
    free(tg);
    model_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_norm_layernorm_backward_matches_fd),
        cmocka_unit_test(test_norm_rmsnorm_backward_matches_fd),
        cmocka_unit_test(test_norm_backward_accumulates),
        cmocka_unit_test(test_rope_backward_matches_fd),
        cmocka_unit_test(test_attention_backward_matches_fd),
        cmocka_unit_test(test_attention_direct_backward_matches_fd),
        cmocka_unit_test(test_attention_softcap_matches_fd),
        cmocka_unit_test(test_attention_direct_forward_matches_double),
        cmocka_unit_test(test_attention_blocked_matches_double_and_fd),
        cmocka_unit_test(test_attention_is_causal),
        cmocka_unit_test(test_attention_stats_match_hand_computation),
        cmocka_unit_test(test_mlp_gelu_backward_matches_fd),
        cmocka_unit_test(test_mlp_swiglu_backward_matches_fd),
        cmocka_unit_test(test_matmul_backward_matches_fd),
        cmocka_unit_test(test_matmul_bf16_rounds_both_operands),
        cmocka_unit_test(test_embed_backward_matches_fd),
        cmocka_unit_test(test_model_default_backward_matches_fd),
        cmocka_unit_test(test_model_variants_backward_matches_fd),
        cmocka_unit_test(test_model_softcap_backward_matches_fd),
        cmocka_unit_test(test_qk_clip_scales_each_heads_logits),
        cmocka_unit_test(test_model_moe_backward_matches_fd),
        cmocka_unit_test(test_model_mla_backward_matches_fd),
        cmocka_unit_test(test_model_memory_estimate_tracks_the_arena),
        cmocka_unit_test(test_model_one_logits_buffer),
        cmocka_unit_test(test_moe_routing_rules),
        cmocka_unit_test(test_fastmath_accuracy),
        cmocka_unit_test(test_model_table_names_and_order),
        cmocka_unit_test(test_model_init_statistics_and_name_keying),
        cmocka_unit_test(test_model_same_threads_bitwise_repeatable),
        cmocka_unit_test(test_mup_levels_scale_lr_init_and_attention),
    };
    return cmocka_run_group_tests_name("model", tests, NULL, NULL);
}
