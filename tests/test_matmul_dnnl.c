// Tests of the oneDNN backend (model/matmul_dnnl.h): its products against OpenBLAS's in fp32
// (oneDNN's fp32 matmul runs on any x86-64 CPU), planning, whole models, and the bf16 matmul
// where the CPU has one (against the emulation), or its refusal where it has none.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/matmul.h"
#include "model/matmul_dnnl.h"
#include "model/model.h"
#include "tests/testing.h"
#include "util/bf16.h"
#include "util/error.h"

// |got - want| ≤ tol · (Σ_k |a_k||b_k| + tiny) elementwise, with bound[] holding that sum: the
// order of an fp32 sum moves it by at most about K · 2^-24 of the sum of magnitudes.
static void expect_within_bound(const char *what, const float *got, const float *want,
                                const double *bound, size_t n, double tol)
{
    for (size_t i = 0; i < n; i++)
        if (!(fabs((double)got[i] - want[i]) <= tol * (bound[i] + 1e-30)))
            fail_msg("%s[%zu]: %.9g against %.9g (bound %.3g)", what, i, got[i], want[i],
                     tol * bound[i]);
}

// bound[i, j] = Σ_k |a[i, k]| |b[j, k]| for a [n, K], b [m, K] (the magnitudes of out = a · bᵀ)
static void abs_products(double *bound, const float *a, const float *b, int n, int m, int K,
                         int a_trans, int b_trans)
{
    for (int i = 0; i < n; i++)
        for (int j = 0; j < m; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++) {
                float x = a_trans ? a[(size_t)k * n + i] : a[(size_t)i * K + k];
                float y = b_trans ? b[(size_t)k * m + j] : b[(size_t)j * K + k];
                s += fabs((double)x * y);
            }
            bound[(size_t)i * m + j] = s;
        }
}

enum { N = 24, I = 40, O = 20 };

struct products {
    float in[N * I], w[O * I], dout[N * O];
    float out[N * O], din[N * I], dw[O * I];
    double bout[N * O], bdin[N * I], bdw[O * I];
};

// The three products of a linear layer with n rows through p (dw starts at 0.5: it accumulates;
// out starts at 0.25 and, with acc, is added into).
static void run_products(struct matmul_prec *p, struct products *x, int n, int acc)
{
    for (int i = 0; i < O * I; i++)
        x->dw[i] = 0.5f;
    for (int i = 0; i < N * O; i++)
        x->out[i] = 0.25f;
    if (acc)
        matmul_forward_acc(p, x->out, x->in, x->w, n, I, O);
    else
        matmul_forward(p, x->out, x->in, x->w, n, I, O);
    matmul_backward(p, x->din, x->dw, x->dout, x->in, x->w, n, I, O);
}

static void fill_products(struct products *x)
{
    testing_fill(x->in, N * I, 41, 1.0f);
    testing_fill(x->w, O * I, 42, 1.0f);
    testing_fill(x->dout, N * O, 43, 1.0f);
    abs_products(x->bout, x->in, x->w, N, O, I, 0, 0);
    // din = dout · w: b[j, k] = w[k, j], w read transposed as [I, O]
    abs_products(x->bdin, x->dout, x->w, N, I, O, 0, 1);
    abs_products(x->bdw, x->dout, x->in, O, I, N, 1, 1);
    for (int i = 0; i < N * O; i++)
        x->bout[i] += 0.25;
    for (int i = 0; i < O * I; i++)
        x->bdw[i] += 0.5;
}

// fp32 on oneDNN: each product (overwriting and accumulating forward, din, the accumulated dw),
// at the planned rows and at other row counts (the runtime-rows primitive), equals OpenBLAS's up
// to the order of the sums; the result is not simply left untouched.
static void test_dnnl_fp32_products_match_openblas(void **state)
{
    static struct products a, b;
    fill_products(&a);
    fill_products(&b);
    struct matmul_prec p;
    matmul_prec_init(&p, 0, 1, N, 0, 0);
    int rows[] = {N, N - 7, 1};
    for (int r = 0; r < 3; r++)
        for (int acc = 0; acc < 2; acc++) {
            int n = rows[r];
            run_products(&p, &a, n, acc);
            run_products(NULL, &b, n, acc);
            expect_within_bound("out", a.out, b.out, a.bout, (size_t)n * O, 1e-6 * I);
            expect_within_bound("din", a.din, b.din, a.bdin, (size_t)n * I, 1e-6 * O);
            expect_within_bound("dw", a.dw, b.dw, a.bdw, O * I, 1e-6 * N);
            assert_true(a.out[0] != 0.25f && a.dw[0] != 0.5f);
            if (acc) // the accumulation really adds: out - 0.25 is the overwriting product
                assert_true(fabsf(a.out[1] - 0.25f - (b.out[1] - 0.25f)) < 1e-4f);
        }
    // without planning every primitive was made late: the exact and runtime forms of four
    // products (forward, forward_acc, din, dw)
    assert_int_equal(mm_dnnl_count(p.dnnl), 8);
    assert_int_equal(mm_dnnl_late(p.dnnl), 8);
    assert_non_null(strstr(mm_dnnl_impl(p.dnnl, 0), ":"));
    assert_non_null(strstr(mm_dnnl_impl(p.dnnl, 1), ":"));
    // din NULL: dw alone, still accumulated as OpenBLAS does
    matmul_backward(&p, NULL, a.dw, a.dout, a.in, a.w, N, I, O);
    matmul_backward(NULL, NULL, b.dw, b.dout, b.in, b.w, N, I, O);
    expect_within_bound("dw without din", a.dw, b.dw, a.bdw, O * I, 2e-6 * N);
    // no rows: nothing computed, nothing made
    int made = mm_dnnl_count(p.dnnl);
    float keep = a.out[0], keepw = a.dw[0];
    matmul_forward(&p, a.out, a.in, a.w, 0, I, O);
    matmul_backward(&p, a.din, a.dw, a.dout, a.in, a.w, 0, I, O);
    assert_true(a.out[0] == keep && a.dw[0] == keepw);
    assert_int_equal(mm_dnnl_count(p.dnnl), made);
    matmul_prec_free(&p);
}

// Planning makes the primitives without computing; afterwards no product makes one.
static void test_dnnl_planning_computes_nothing(void **state)
{
    static struct products a;
    fill_products(&a);
    struct matmul_prec p;
    matmul_prec_init(&p, 0, 1, N, 0, 0);
    mm_dnnl_set_planning(p.dnnl, 1);
    for (int i = 0; i < N * I; i++)
        a.din[i] = 0.75f;
    run_products(&p, &a, N, 0);
    run_products(&p, &a, N, 1);
    for (int i = 0; i < N * O; i++)
        assert_true(a.out[i] == 0.25f);
    for (int i = 0; i < N * I; i++)
        assert_true(a.din[i] == 0.75f);
    for (int i = 0; i < O * I; i++)
        assert_true(a.dw[i] == 0.5f);
    mm_dnnl_set_planning(p.dnnl, 0);
    int made = mm_dnnl_count(p.dnnl);
    assert_int_equal(made, 8); // exact and runtime rows of four products
    assert_int_equal(mm_dnnl_late(p.dnnl), 0);
    run_products(&p, &a, N, 0);
    run_products(&p, &a, 5, 1);
    assert_int_equal(mm_dnnl_count(p.dnnl), made);
    assert_int_equal(mm_dnnl_late(p.dnnl), 0);
    matmul_prec_free(&p);
}

// Whether /proc/cpuinfo lists a flag (whole word).
static int cpu_has(const char *flag)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return 0;
    char line[8192];
    int found = 0;
    size_t len = strlen(flag);
    while (!found && fgets(line, sizeof(line), f)) {
        if (strncmp(line, "flags", 5) != 0)
            continue;
        for (char *s = strstr(line, flag); s && !found; s = strstr(s + 1, flag))
            found = s[-1] == ' ' && (s[len] == ' ' || s[len] == '\n');
    }
    fclose(f);
    return found;
}

// oneDNN runs bf16 matmul exactly where the CPU has AVX512-BF16 or AMX. Where it does, its
// products equal the emulation's (the same rounded operands) up to the order of the fp32 sums;
// where it does not, the refusal says why.
static void test_dnnl_bf16_where_the_cpu_has_it(void **state)
{
    int has = cpu_has("avx512_bf16") || cpu_has("amx_bf16");
    char why[256] = "";
    int avail = mm_dnnl_available(1, why, sizeof(why));
    printf("# CPU bf16: %s; oneDNN bf16 matmul: %s %s\n", has ? "yes" : "no",
           avail ? "available" : "refused:", why);
    assert_int_equal(avail, has);
    assert_true(mm_dnnl_available(0, why, sizeof(why))); // fp32 everywhere
    if (!avail) {
        mm_dnnl_available(1, why, sizeof(why));
        assert_non_null(strstr(why, "no bf16 matmul on this CPU"));
        assert_non_null(strstr(why, "AMX"));
        return;
    }
    static struct products a, b, r;
    fill_products(&a);
    fill_products(&b);
    fill_products(&r);
    bf16_round_array(r.in, a.in, N * I);
    bf16_round_array(r.w, a.w, O * I);
    bf16_round_array(r.dout, a.dout, N * O);
    abs_products(r.bout, r.in, r.w, N, O, I, 0, 0);
    abs_products(r.bdin, r.dout, r.w, N, I, O, 0, 1);
    abs_products(r.bdw, r.dout, r.in, O, I, N, 1, 1);
    struct matmul_prec dn, em;
    matmul_prec_init(&dn, 1, 1, N, N * I, O * I);
    matmul_prec_init(&em, 1, 0, N, N * I, O * I);
    // the planned rows and the runtime-rows primitive (an MoE expert's rows)
    for (int rows = N; rows >= N - 7; rows -= 7)
        for (int acc = 0; acc < 2; acc++) {
            run_products(&dn, &a, rows, acc);
            run_products(&em, &b, rows, acc);
            expect_within_bound("bf16 out", a.out, b.out, r.bout, (size_t)rows * O,
                                1e-6 * I + 1e-6);
            expect_within_bound("bf16 din", a.din, b.din, r.bdin, (size_t)rows * I, 1e-6 * O);
            expect_within_bound("bf16 dw", a.dw, b.dw, r.bdw, O * I, 1e-6 * N + 1e-6);
        }
    matmul_prec_free(&dn);
    matmul_prec_free(&em);
}

// A whole model on oneDNN's fp32 matmul: the logits and every gradient equal OpenBLAS's up to the
// order of the sums, and planning made every primitive a step and a smaller evaluation batch use.
static void check_model_on_dnnl(struct model_config cfg)
{
    enum { B = 2 };
    struct model ma, mb;
    model_init(&ma, &cfg, B);
    model_init(&mb, &cfg, B);
    model_set_precision(&ma, 0, 0, 1);
    assert_int_equal(mm_dnnl_late(ma.mm->dnnl), 0);
    int made = mm_dnnl_count(ma.mm->dnnl);
    assert_true(made > 0);
    size_t n = ma.table.total, nl = (size_t)B * cfg.seq_len * cfg.vocab;
    float *params = xcalloc(n, sizeof(float));
    float *ga = xcalloc(n, sizeof(float)), *gb = xcalloc(n, sizeof(float));
    model_params_init(&ma, params, 9);
    int tok[2 * 16];
    for (int i = 0; i < B * cfg.seq_len; i++)
        tok[i] = (i * 7 + 3) % cfg.vocab;
    model_forward(&ma, params, tok, B);
    model_forward(&mb, params, tok, B);
    expect_close("logits", ma.acts.logits, mb.acts.logits, nl, 1e-5);
    for (size_t i = 0; i < nl; i++) // an arbitrary output gradient, the same for both
        ma.acts.logits[i] = mb.acts.logits[i] = 1e-2f * (float)((i * 13) % 7) - 0.03f;
    model_backward(&ma, params, ga, tok, B, 1.0f, NULL, NULL);
    model_backward(&mb, params, gb, tok, B, 1.0f, NULL, NULL);
    for (int i = 0; i < ma.table.n; i++) {
        const struct tensor *t = &ma.table.t[i];
        expect_close(t->name, ga + t->offset, gb + t->offset, t->size, 1e-4);
    }
    model_forward(&ma, params, tok, 1); // an evaluation of fewer sequences
    assert_int_equal(mm_dnnl_late(ma.mm->dnnl), 0);
    assert_int_equal(mm_dnnl_count(ma.mm->dnnl), made);
    free(params);
    free(ga);
    free(gb);
    model_free(&ma);
    model_free(&mb);
}

static struct model_config small_model(void)
{
    return (struct model_config){.dim = 16,
                                 .layers = 2,
                                 .heads = 2,
                                 .head_dim = 8,
                                 .seq_len = 8,
                                 .vocab = 19,
                                 .mlp_ratio = 2,
                                 .norm = NORM_RMSNORM,
                                 .qk_norm = 1,
                                 .pos = POS_ROPE,
                                 .mlp = MLP_SWIGLU,
                                 .moe_every = 1,
                                 .attention = ATTN_MHA};
}

static void test_dnnl_models_match_openblas(void **state)
{
    struct model_config dense = small_model();
    check_model_on_dnnl(dense);
    struct model_config moe = small_model();
    moe.experts = 4, moe.top_k = 2, moe.shared_experts = 1, moe.capacity_factor = 1.0;
    check_model_on_dnnl(moe);
    struct model_config mla = small_model();
    mla.attention = ATTN_MLA, mla.kv_rank = 8, mla.q_rank = 8, mla.rope_dim = 4;
    check_model_on_dnnl(mla);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dnnl_fp32_products_match_openblas),
        cmocka_unit_test(test_dnnl_planning_computes_nothing),
        cmocka_unit_test(test_dnnl_bf16_where_the_cpu_has_it),
        cmocka_unit_test(test_dnnl_models_match_openblas),
    };
    return cmocka_run_group_tests_name("matmul_dnnl", tests, NULL, NULL);
}
