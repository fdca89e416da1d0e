// optim/: schedules, gradient norm and clipping, AdamW in both weight-decay modes.
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "model/tensors.h"
#include "optim/adamw.h"
#include "optim/guard.h"
#include "optim/muon.h"
#include "optim/optim.h"
#include "tests/testing.h"
#include <stdio.h>
#include <stdlib.h>

static struct optim_config base_config(void)
{
    struct optim_config oc;
    memset(&oc, 0, sizeof(oc));
    oc.lr = 1e-2;
    oc.min_lr = 1e-4;
    oc.beta1 = 0.9;
    oc.beta2 = 0.95;
    oc.eps = 1e-8;
    oc.weight_decay = 0.1;
    oc.warmup_steps = 10;
    oc.schedule = SCHEDULE_COSINE;
    return oc;
}

static void test_schedule_warmup_then_decay(void **state)
{
    struct optim_config oc = base_config();
    expect_near(schedule_lr(&oc, 0, 110), 1e-3, 1e-15);
    expect_near(schedule_lr(&oc, 9, 110), 1e-2, 1e-15);
    expect_near(schedule_lr(&oc, 10, 110), 1e-2, 1e-15);                       // start of the decay
    expect_near(schedule_lr(&oc, 60, 110), 1e-4 + (1e-2 - 1e-4) * 0.5, 1e-12); // midpoint
    expect_near(schedule_lr(&oc, 110, 110), 1e-4, 1e-15);
    oc.schedule = SCHEDULE_LINEAR;
    expect_near(schedule_lr(&oc, 35, 110), 1e-2 + (1e-4 - 1e-2) * 0.25, 1e-12);
    oc.schedule = SCHEDULE_CONSTANT;
    expect_near(schedule_lr(&oc, 80, 110), 1e-2, 0.0);
    oc.warmup_steps = 0;
    expect_near(schedule_lr(&oc, 0, 110), 1e-2, 0.0);
}

static void test_clip_scales_to_threshold(void **state)
{
    struct tensor_table tt;
    float g[7] = {3.0f, 4.0f, 0.0f, 0.0f, 0.0f, 12.0f, 0.0f};
    double sumsq[2];
    tensor_table_init(&tt);
    tensor_table_add(&tt, "a", 1, 2, TENSOR_GAIN, -1);
    tensor_table_add(&tt, "b", 5, 1, TENSOR_MATRIX, 0);
    double norm = optim_grad_norm(sumsq, g, &tt);
    expect_near(norm, 13.0, 1e-12);
    expect_near(sumsq[0], 25.0, 1e-12);
    expect_near(sumsq[1], 144.0, 1e-12);
    expect_near(optim_clip(g, 7, norm, 20.0), 1.0, 0.0); // below threshold: untouched
    expect_near(g[0], 3.0f, 0.0);
    expect_near(optim_clip(g, 7, norm, 1.3), 0.1, 1e-12);
    expect_near(g[1], 0.4f, 1e-7);
    expect_near(optim_grad_norm(sumsq, g, &tt), 1.3, 1e-6);
    expect_near(optim_clip(g, 7, 100.0, 0.0), 1.0, 0.0); // clip 0 disables
    tensor_table_free(&tt);
}

// One AdamW step by hand: m = (1−β1)g, v = (1−β2)g², Δ = m̂/(sqrt(v̂)+ε) = g/(|g|+ε) at t = 1.
// The matrix carries the table LR factor sc (µParam): its lr, and a coupled decay, scale by it.
static void check_adamw(enum wd_mode mode, double sc)
{
    struct tensor_table tt;
    struct optim_config oc = base_config();
    struct adamw a;
    float params[4] = {0.5f, -2.0f, 1.5f, 3.0f}, grads[4] = {0.2f, -0.1f, 0.3f, 0.0f}, upd[4];
    double lr_t = 5e-3; // s_t = 0.5
    oc.wd_mode = mode;
    tensor_table_init(&tt);
    tensor_table_add(&tt, "w", 1, 2, TENSOR_MATRIX, 0); // decays
    tensor_table_add(&tt, "g", 1, 2, TENSOR_GAIN, 0);   // does not
    tt.t[0].lr_scale = sc;
    adamw_init(&a, 4, 0);
    adamw_update_compute(&a, upd, params, grads, &tt, &oc, lr_t);
    for (int i = 0; i < 4; i++) {
        double g = grads[i];
        double delta = g / (fabs(g) + 1e-8);
        double wd = i < 2 ? 0.1 : 0.0, lr = i < 2 ? lr_t * sc : lr_t;
        double want = mode == WD_INDEPENDENT ? lr * delta + 0.5 * wd * params[i]
                                             : lr * (delta + wd * params[i]);
        expect_near(upd[i], want, 1e-7);
    }
    expect_near(a.m[0], 0.1f * 0.2f, 1e-8);
    expect_near(a.v[1], 0.05f * 0.01f, 1e-9);
    // second step: bias correction with t = 2
    adamw_update_compute(&a, upd, params, grads, &tt, &oc, lr_t);
    double m = 0.9 * 0.02 + 0.1 * 0.2, v = 0.95 * 0.002 + 0.05 * 0.04;
    double d = (m / (1 - 0.81)) / (sqrt(v / (1 - 0.9025)) + 1e-8);
    double lr = lr_t * sc;
    double want = mode == WD_INDEPENDENT ? lr * d + 0.5 * 0.1 * 0.5 : lr * (d + 0.1 * 0.5);
    expect_near(upd[0], want, 1e-7);
    float p0 = params[0];
    optim_update_apply(params, upd, 4);
    expect_near(params[0], p0 - upd[0], 0.0);
    adamw_free(&a);
    tensor_table_free(&tt);
}

// StableAdamW, worked by hand: step 1 has v_hat = g², so RMS = 1 and nothing is scaled; a step
// whose gradient jumps has g² > v_hat and its tensor's lr (and coupled decay) divided by the RMS;
// an independent decay keeps its size; a tensor whose gradient shrank keeps its lr.
static void test_stable_adamw_hand_values(void **state)
{
    for (int mode = 0; mode < 2; mode++) {
        struct tensor_table tt;
        struct optim_config oc = base_config();
        struct adamw a;
        float params[4] = {0.5f, -2.0f, 1.5f, 3.0f}, upd[4];
        float g1[4] = {0.1f, -0.1f, 0.4f, 0.2f}, g2[4] = {0.5f, -0.3f, 0.1f, 0.1f};
        double lr_t = 5e-3; // s_t = 0.5
        oc.wd_mode = mode ? WD_COUPLED : WD_INDEPENDENT;
        oc.stable_adamw = 1;
        tensor_table_init(&tt);
        tensor_table_add(&tt, "w", 1, 2, TENSOR_MATRIX, 0); // decays
        tensor_table_add(&tt, "g", 1, 2, TENSOR_GAIN, 0);   // does not
        adamw_init(&a, 4, tt.n);
        adamw_update_compute(&a, upd, params, g1, &tt, &oc, lr_t);
        expect_near(a.stable[0], 1.0, 0.0);
        expect_near(a.stable[1], 1.0, 0.0);
        assert_int_equal(a.stable_scaled, 0);
        adamw_update_compute(&a, upd, params, g2, &tt, &oc, lr_t);
        double bc2 = 1.0 / (1.0 - 0.95 * 0.95), bc1 = 1.0 / (1.0 - 0.9 * 0.9), r[2];
        for (int t = 0; t < 2; t++) {
            double sum = 0.0;
            for (int j = 2 * t; j < 2 * t + 2; j++) {
                double v = 0.95 * 0.05 * g1[j] * g1[j] + 0.05 * g2[j] * g2[j];
                sum += (double)g2[j] * g2[j] / (v * bc2);
            }
            r[t] = sqrt(sum / 2);
        }
        assert_true(r[0] > 1.2 && r[1] < 1.0); // w's gradient jumped, g's shrank
        expect_near(a.stable[0], 1.0 / r[0], 1e-6);
        expect_near(a.stable[1], 1.0, 0.0);
        assert_int_equal(a.stable_scaled, 1);
        for (int j = 0; j < 4; j++) {
            double f = j < 2 ? 1.0 / r[0] : 1.0, wd = j < 2 ? 0.1 : 0.0;
            double m = 0.9 * 0.1 * g1[j] + 0.1 * g2[j];
            double v = 0.95 * 0.05 * g1[j] * g1[j] + 0.05 * g2[j] * g2[j];
            double d = m * bc1 / (sqrt(v * bc2) + 1e-8);
            double want =
                mode ? lr_t * f * (d + wd * params[j]) : lr_t * f * d + 0.5 * wd * params[j];
            expect_near(upd[j], want, 2e-7);
        }
        adamw_free(&a);
        tensor_table_free(&tt);
    }
}

// An entry whose gradient and second moment are 0 (an embedding row never seen) adds nothing to
// StableAdamW's mean, even with an eps whose square is below float's range: the tensor is still
// scaled by the other entries.
static void test_stable_adamw_zero_entries_and_tiny_eps(void **state)
{
    struct tensor_table tt;
    struct optim_config oc = base_config();
    struct adamw a;
    float params[4] = {1, 1, 1, 1}, upd[4];
    float g1[4] = {0.1f, 0.1f, 0.1f, 0.0f}, g2[4] = {1.0f, 1.0f, 1.0f, 0.0f};
    oc.stable_adamw = 1;
    oc.eps = 1e-30;
    oc.weight_decay = 0.0;
    tensor_table_init(&tt);
    tensor_table_add(&tt, "w", 2, 2, TENSOR_MATRIX, 0);
    adamw_init(&a, 4, tt.n);
    adamw_update_compute(&a, upd, params, g1, &tt, &oc, 1e-3);
    adamw_update_compute(&a, upd, params, g2, &tt, &oc, 1e-3);
    double v = 0.95 * 0.05 * 0.01 + 0.05 * 1.0, vhat = v / (1 - 0.95 * 0.95);
    double rms = sqrt(3.0 * (1.0 / vhat) / 4.0);
    assert_true(rms > 1.1);
    expect_near(a.stable[0], 1.0 / rms, 1e-6);
    assert_int_equal(a.stable_scaled, 1);
    assert_true(upd[3] == 0.0f); // the unseen entry does not move
    adamw_free(&a);
    tensor_table_free(&tt);
}

// The guards' window: a ring of the last cap values, oldest first; mean + k·σ (n − 1) once min
// values are held; non-finite values stay out; get/set round trip (a checkpoint).
static void test_guard_window_rolls_and_thresholds(void **state)
{
    struct guard_window w;
    double out[4], thr = 0.0, mean = 0.0, sd = 0.0;
    guard_window_init(&w, 4);
    guard_window_push(&w, 1.0);
    assert_int_equal(guard_window_threshold(&w, 2.0, 2, &thr, &mean, &sd), 0); // 1 < min
    guard_window_push(&w, NAN);
    guard_window_push(&w, INFINITY);
    assert_int_equal(w.n, 1);
    for (int i = 2; i <= 10; i++)
        guard_window_push(&w, (double)i);
    assert_int_equal(w.n, 4);
    guard_window_get(&w, out);
    for (int i = 0; i < 4; i++)
        expect_near(out[i], 7.0 + i, 0.0);                                     // 7, 8, 9, 10
    assert_int_equal(guard_window_threshold(&w, 2.0, 5, &thr, NULL, NULL), 0); // 4 < min 5
    assert_int_equal(guard_window_threshold(&w, 2.0, 4, &thr, &mean, &sd), 1);
    double s = sqrt((1.5 * 1.5 * 2 + 0.5 * 0.5 * 2) / 3.0); // sample std of 7..10
    expect_near(mean, 8.5, 1e-15);
    expect_near(sd, s, 1e-15);
    expect_near(thr, 8.5 + 2.0 * s, 1e-14);
    struct guard_window v;
    guard_window_init(&v, 4);
    guard_window_set(&v, out + 1, 3); // 8, 9, 10
    guard_window_push(&v, 11.0);
    guard_window_push(&v, 12.0); // 8 leaves
    guard_window_get(&v, out);
    for (int i = 0; i < 4; i++)
        expect_near(out[i], 9.0 + i, 0.0);
    guard_window_free(&v);
    guard_window_free(&w);
}

static void test_adamw_independent_decay(void **state)
{
    check_adamw(WD_INDEPENDENT, 1.0);
    check_adamw(WD_INDEPENDENT, 0.25);
}

static void test_adamw_coupled_decay(void **state)
{
    check_adamw(WD_COUPLED, 1.0);
    check_adamw(WD_COUPLED, 0.25);
}

// Eigenvalues of a symmetric n×n matrix (cyclic Jacobi, double), into w[n].
static void sym_eigenvalues(double *a, int n, double *w)
{
    for (int sweep = 0; sweep < 100; sweep++) {
        double off = 0.0;
        for (int p = 0; p < n; p++)
            for (int q = p + 1; q < n; q++)
                off += a[p * n + q] * a[p * n + q];
        if (off < 1e-30)
            break;
        for (int p = 0; p < n; p++) {
            for (int q = p + 1; q < n; q++) {
                if (fabs(a[p * n + q]) < 1e-300)
                    continue;
                double theta = (a[q * n + q] - a[p * n + p]) / (2.0 * a[p * n + q]);
                double t = (theta >= 0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1.0));
                double c = 1.0 / sqrt(t * t + 1.0), s = t * c;
                for (int k = 0; k < n; k++) { // rotate columns p, q
                    double akp = a[k * n + p], akq = a[k * n + q];
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for (int k = 0; k < n; k++) { // rotate rows p, q
                    double apk = a[p * n + k], aqk = a[q * n + k];
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
            }
        }
    }
    for (int i = 0; i < n; i++)
        w[i] = a[i * n + i];
}

static int cmp_desc(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a < b) - (a > b);
}

// Newton–Schulz in fp32 against the float64 reference (tests/gen_reference.py, PyTorch
// float64) on tall, wide, square and rank-deficient matrices; the singular values of the
// result lie in the band the quintic maps (0, 1] into, and a rank-deficient input stays so.
static void test_muon_newton_schulz_matches_float64(void **state)
{
    struct fixture fx;
    char path[512];
    const char *names[4] = {"tall", "wide", "square", "rankdef"};
    struct tensor_table tt;
    struct optim_config oc = base_config();
    struct muon m;
    oc.name = OPTIM_MUON;
    tensor_table_init(&tt);
    tensor_table_add(&tt, "scratch", 16, 16, TENSOR_MATRIX, 0);
    muon_init(&m, &tt, &oc);
    snprintf(path, sizeof(path), "%s/tests/fixtures/muon_ns/ns.bin", CANARY_SOURCE_DIR);
    assert_int_equal(fixture_load(&fx, path), 0);
    const struct fixture_record *band = fixture_find(&fx, "band");
    assert_non_null(band);
    for (int k = 0; k < 4; k++) {
        char rec[64];
        snprintf(rec, sizeof(rec), "in/%s", names[k]);
        const struct fixture_record *in = fixture_find(&fx, rec);
        snprintf(rec, sizeof(rec), "out/%s", names[k]);
        const struct fixture_record *want = fixture_find(&fx, rec);
        snprintf(rec, sizeof(rec), "sv/%s", names[k]);
        const struct fixture_record *sv = fixture_find(&fx, rec);
        assert_non_null(in);
        assert_non_null(want);
        assert_non_null(sv);
        int rows = in->dims[0], cols = in->dims[1], r = rows < cols ? rows : cols;
        float x[256];
        double ortho = 0.0;
        memcpy(x, in->data, in->count * sizeof(float));
        muon_newton_schulz(&m, x, rows, cols, 5, &ortho);
        expect_close(rec, x, want->data, in->count, 1e-4);
        // singular values: square roots of the eigenvalues of O Oᵀ (or Oᵀ O), r of them
        double g[256], w[16];
        for (int i = 0; i < r; i++)
            for (int j = 0; j < r; j++) {
                double acc = 0.0;
                if (rows <= cols)
                    for (int l = 0; l < cols; l++)
                        acc += (double)x[i * cols + l] * x[j * cols + l];
                else
                    for (int l = 0; l < rows; l++)
                        acc += (double)x[l * cols + i] * x[l * cols + j];
                g[i * r + j] = acc;
            }
        sym_eigenvalues(g, r, w);
        for (int i = 0; i < r; i++)
            w[i] = sqrt(fmax(0.0, w[i]));
        qsort(w, (size_t)r, sizeof(double), cmp_desc);
        for (int i = 0; i < r; i++) {
            expect_near(w[i], sv->data[i], 1e-4);
            if (sv->data[i] == 0.0f) {
                assert_true(w[i] < 1e-3); // rank deficiency survives
            } else {
                assert_true(w[i] >= band->data[0] - 1e-5 && w[i] <= band->data[1] + 1e-5);
            }
        }
        assert_true(ortho > 0.0 && ortho < 1.0);
    }
    fixture_free(&fx);
    muon_free(&m);
    tensor_table_free(&tt);
}

// Newton–Schulz of X [r, c] (r <= c) in double, written out: the plain sgemm-free definition the
// fp32 path (symmetric products through ssyrk, tall matrices without a transpose) must match.
static void ns_double(double *x, int r, int c, int steps)
{
    double ss = 0.0, *a = calloc((size_t)r * r, sizeof(double));
    double *b = calloc((size_t)r * r, sizeof(double)), *y = calloc((size_t)r * c, sizeof(double));
    for (int i = 0; i < r * c; i++)
        ss += x[i] * x[i];
    for (int i = 0; i < r * c; i++)
        x[i] /= sqrt(ss) + 1e-7;
    for (int s = 0; s < steps; s++) {
        for (int i = 0; i < r; i++)
            for (int j = 0; j < r; j++) {
                double acc = 0.0;
                for (int l = 0; l < c; l++)
                    acc += x[i * c + l] * x[j * c + l];
                a[i * r + j] = acc;
            }
        for (int i = 0; i < r; i++)
            for (int j = 0; j < r; j++) {
                double acc = 0.0;
                for (int l = 0; l < r; l++)
                    acc += a[i * r + l] * a[l * r + j];
                b[i * r + j] = (double)-4.7750f * a[i * r + j] + (double)2.0315f * acc;
            }
        for (int i = 0; i < r; i++)
            for (int j = 0; j < c; j++) {
                double acc = 0.0;
                for (int l = 0; l < r; l++)
                    acc += b[i * r + l] * x[l * c + j];
                y[i * c + j] = (double)3.4445f * x[i * c + j] + acc;
            }
        memcpy(x, y, (size_t)r * c * sizeof(double));
    }
    free(a);
    free(b);
    free(y);
}

// Sizes past OpenBLAS's small-matrix paths (blocked ssyrk, the mirrored triangle at a row stride
// that is not a multiple of the block): a wide 150 x 420 and its transpose, a tall 420 x 150 that
// the fp32 path orthogonalises through Xᵀ X, against ns_double (rel. err <= 1e-4).
static void test_muon_newton_schulz_large_matches_double(void **state)
{
    enum { R = 150, C = 420 };
    struct tensor_table tt;
    struct optim_config oc = base_config();
    struct muon m;
    oc.name = OPTIM_MUON;
    tensor_table_init(&tt);
    tensor_table_add(&tt, "w", C, R, TENSOR_MATRIX, 0);
    muon_init(&m, &tt, &oc);
    float *x = malloc(sizeof(float) * R * C), *xt = malloc(sizeof(float) * R * C);
    float *want = malloc(sizeof(float) * R * C), *want_t = malloc(sizeof(float) * R * C);
    double *d = malloc(sizeof(double) * R * C);
    uint64_t s = 12345;
    for (int i = 0; i < R * C; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        // a decaying spectrum: a few strong directions over noise, like a gradient
        x[i] = (float)((double)(s >> 40) / (double)(1ull << 24) - 0.5) * (i % C < 8 ? 4.0f : 1.0f);
        d[i] = x[i];
    }
    for (int i = 0; i < R; i++)
        for (int j = 0; j < C; j++)
            xt[j * R + i] = x[i * C + j];
    ns_double(d, R, C, 5);
    for (int i = 0; i < R; i++)
        for (int j = 0; j < C; j++) {
            want[i * C + j] = (float)d[i * C + j];
            want_t[j * R + i] = (float)d[i * C + j];
        }
    muon_newton_schulz(&m, x, R, C, 5, NULL);
    expect_close("wide", x, want, (size_t)R * C, 1e-4);
    muon_newton_schulz(&m, xt, C, R, 5, NULL);
    expect_close("tall", xt, want_t, (size_t)R * C, 1e-4);
    free(x);
    free(xt);
    free(want);
    free(want_t);
    free(d);
    muon_free(&m);
    tensor_table_free(&tt);
}

// One Muon update by hand: the momentum buffer and Nesterov input, then the scale and weight
// decay applied to a given orthogonalised O, for both scales and both decay modes.
static void test_muon_momentum_and_update_formulas(void **state)
{
    struct tensor_table tt;
    struct optim_config oc = base_config();
    struct muon m;
    float params[6] = {1, 2, 3, 4, 5, 6}, grads[6] = {0.5f, -1, 2, 0, 1, -2}, update[6];
    oc.name = OPTIM_MUON;
    oc.momentum = 0.9;
    oc.muon_lr_scale = 2.0;
    oc.muon_weight_decay = 0.1;
    tensor_table_init(&tt);
    tensor_table_add(&tt, "w", 2, 3, TENSOR_MATRIX, 0);
    muon_init(&m, &tt, &oc);
    muon_momentum(&m, update, grads, &tt.t[0], &oc);
    for (int j = 0; j < 6; j++) {
        double b = 0.1 * grads[j], u = 0.1 * grads[j] + 0.9 * b;
        expect_near(m.momentum[j], b, 1e-7);
        expect_near(update[j], u, 1e-7);
    }
    // take the Nesterov input as O: muon_finish turns O into lr_m·s·O + decay
    float o[6];
    memcpy(o, update, sizeof(o));
    for (int mode = 0; mode < 2; mode++) {
        oc.wd_mode = mode == 0 ? WD_COUPLED : WD_INDEPENDENT;
        oc.muon_scale = mode == 0 ? MUON_SCALE_RMS_MATCH : MUON_SCALE_SHAPE;
        memcpy(update, o, sizeof(o));
        muon_finish(update, params, &tt.t[0], &oc, 5e-3);          // s_t = 0.5
        double lr_m = 1e-2, s = mode == 0 ? 0.2 * sqrt(3.0) : 1.0; // rows 2 < cols 3
        for (int j = 0; j < 6; j++) {
            double wd = mode == 0 ? lr_m * 0.1 : 0.5 * 0.1;
            expect_near(update[j], lr_m * s * o[j] + wd * params[j], 1e-7);
        }
    }
    assert_true(optim_uses_muon(&oc, TENSOR_MATRIX) && !optim_uses_muon(&oc, TENSOR_GAIN) &&
                !optim_uses_muon(&oc, TENSOR_EMBEDDING) && !optim_uses_muon(&oc, TENSOR_HEAD));
    muon_free(&m);
    tensor_table_free(&tt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schedule_warmup_then_decay),
        cmocka_unit_test(test_clip_scales_to_threshold),
        cmocka_unit_test(test_adamw_independent_decay),
        cmocka_unit_test(test_guard_window_rolls_and_thresholds),
        cmocka_unit_test(test_adamw_coupled_decay),
        cmocka_unit_test(test_stable_adamw_hand_values),
        cmocka_unit_test(test_stable_adamw_zero_entries_and_tiny_eps),
        cmocka_unit_test(test_muon_newton_schulz_matches_float64),
        cmocka_unit_test(test_muon_newton_schulz_large_matches_double),
        cmocka_unit_test(test_muon_momentum_and_update_formulas),
    };
    return cmocka_run_group_tests_name("optim", tests, NULL, NULL);
}
