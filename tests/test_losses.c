// losses/: fused softmax cross-entropy + z-loss — values and gradient.
#include <math.h>
#include <string.h>

#include "losses/xent.h"
#include "tests/testing.h"

struct xent_ctx {
    float *logits, *work;
    int *targets;
    int n, v;
    float z;
    float cap; // final soft-capping (0: off)
};

static double xent_loss(void *p)
{
    struct xent_ctx *c = p;
    struct loss_parts lp;
    xent_forward(&lp, c->logits, c->targets, c->n, c->v, c->z, c->cap);
    return lp.total;
}

static void test_xent_gradient_matches_fd(void **state)
{
    enum { N = 6, V = 9 };
    float logits[N * V], grad[N * V], logz[N];
    int targets[N] = {0, 8, 3, 3, 5, 1};
    struct loss_parts lp, lf;
    struct xent_ctx c = {logits, NULL, targets, N, V, 0.05f, 0.0f};
    testing_fill(logits, N * V, 30, 4.0f);
    for (int i = 0; i < N * V; i++)
        logits[i] += 3.0f; // log Z far from 0, so the z-loss gradient is large
    memcpy(grad, logits, sizeof(grad));
    xent_forward_backward(&lp, grad, &(struct xent_probe){logz, 0, 0}, targets, N, V, 0.05f, 1.0f,
                          0.0f);
    xent_forward(&lf, logits, targets, N, V, 0.05f, 0.0f);
    assert_true(lp.total == lf.total && lp.ce == lf.ce && lp.z == lf.z);
    assert_true(testing_fd_check("xent+z", xent_loss, &c, logits, grad, N * V, N * V, 1e-2f) <
                1e-2);
    // grad_scale multiplies the gradient only
    float g2[N * V];
    memcpy(g2, logits, sizeof(g2));
    xent_forward_backward(&lp, g2, NULL, targets, N, V, 0.05f, 0.25f, 0.0f);
    for (int i = 0; i < N * V; i++)
        expect_near(g2[i], 0.25f * grad[i], 1e-7);
    expect_near(lp.total, lf.total, 1e-12);
}

// Soft-capped logits (Gemma 2): the loss is that of c·tanh(z/c), computed in double here; the
// gradient with respect to the raw logits matches finite differences; forward and fused
// backward report the same loss.
static void test_xent_softcap_value_and_gradient(void **state)
{
    enum { N = 5, V = 11 };
    const float cap = 2.0f, zc = 0.05f;
    float logits[N * V], grad[N * V], logz[N];
    int targets[N] = {0, 10, 3, 7, 5};
    struct loss_parts lp, lf;
    struct xent_ctx c = {logits, NULL, targets, N, V, zc, cap};
    testing_fill(logits, N * V, 31, 5.0f); // |z| up to 5: well into tanh's curve at c = 2
    double ce = 0.0, z2 = 0.0;
    for (int r = 0; r < N; r++) {
        double mx = -1e300, s = 0.0, zy = 0.0;
        for (int j = 0; j < V; j++)
            mx = fmax(mx, cap * tanh(logits[r * V + j] / (double)cap));
        for (int j = 0; j < V; j++) {
            double zj = cap * tanh(logits[r * V + j] / (double)cap);
            s += exp(zj - mx);
            if (j == targets[r])
                zy = zj;
        }
        double lz = mx + log(s);
        ce += lz - zy;
        z2 += lz * lz;
    }
    memcpy(grad, logits, sizeof(grad));
    struct xent_probe xp = {logz, 0, 0};
    xent_forward_backward(&lp, grad, &xp, targets, N, V, zc, 1.0f, cap);
    double sq = 0.0, am = 0.0; // the probe statistics are of the raw logits, not the capped ones
    for (int i = 0; i < N * V; i++) {
        sq += (double)logits[i] * logits[i];
        am = fmax(am, fabs((double)logits[i]));
    }
    expect_near(xp.sumsq, sq, 1e-9 * sq);
    assert_true(xp.absmax == am && am > cap);
    xent_forward(&lf, logits, targets, N, V, zc, cap);
    expect_near(lp.ce, ce / N, 1e-5);
    expect_near(lp.z, zc * z2 / N, 1e-6);
    expect_near(lf.total, lp.total, 1e-6);
    for (int r = 0; r < N; r++) // log Z of the capped row: below log V + cap
        assert_true(logz[r] <= logf((float)V) + cap + 1e-5f);
    assert_true(testing_fd_check("xent softcap", xent_loss, &c, logits, grad, N * V, N * V, 1e-2f) <
                1e-2);
    // without the cap the same logits give another loss (the test would not notice a no-op)
    xent_forward(&lf, logits, targets, N, V, zc, 0.0f);
    assert_true(fabs(lf.total - lp.total) > 1e-2);
}

static void test_xent_uniform_logits_give_log_vocab(void **state)
{
    enum { N = 4, V = 256 };
    static float logits[N * V];
    int targets[N] = {0, 1, 2, 255};
    struct loss_parts lp;
    for (int i = 0; i < N * V; i++)
        logits[i] = 0.0f;
    xent_forward(&lp, logits, targets, N, V, 1e-4f, 0.0f);
    expect_near(lp.ce, log(256.0), 1e-6);
    expect_near(lp.z, 1e-4 * log(256.0) * log(256.0), 1e-9);
    expect_near(lp.total, lp.ce + lp.z, 1e-12);
    // shifting all logits changes log Z (and the z-loss) but not the cross-entropy
    for (int i = 0; i < N * V; i++)
        logits[i] = -7.0f;
    xent_forward(&lp, logits, targets, N, V, 0.0f, 0.0f);
    expect_near(lp.ce, log(256.0), 1e-5);
    expect_near(lp.z, 0.0, 0.0);
}

// log Z per row, Σ logit² and max |logit| over the raw logits (the output probes' inputs); a
// NaN logit makes the maximum NaN.
static void test_xent_logz_reported_per_row(void **state)
{
    float logits[2 * 3] = {0.0f, 0.0f, -4.0f, 1.0f, 2.0f, 3.0f};
    int targets[2] = {0, 2};
    float logz[2];
    struct loss_parts lp;
    struct xent_probe xp = {logz, 0, 0};
    xent_forward_backward(&lp, logits, &xp, targets, 2, 3, 0.0f, 1.0f, 0.0f);
    assert_true(xp.sumsq == 30.0 && xp.absmax == 4.0); // 16 + 1 + 4 + 9; |−4| beats 3
    expect_near(logz[0], log(2.0 + exp(-4.0)), 1e-6);
    expect_near(logz[1], log(exp(1.0) + exp(2.0) + exp(3.0)), 1e-5);
    // the gradient rows sum to zero (softmax minus one-hot)
    expect_near(logits[0] + logits[1] + logits[2], 0.0f, 1e-6);
    float bad[2 * 3] = {0.0f, 0.0f, 9.0f, 1.0f, NAN, 3.0f};
    xent_forward_backward(&lp, bad, &xp, targets, 2, 3, 0.0f, 1.0f, 0.0f);
    assert_true(isnan(xp.absmax) && isnan(xp.sumsq));
}

static void test_xent_nonfinite_logits_propagate(void **state)
{
    // a NaN or +Inf anywhere in a row (not only first) must make the loss non-finite
    enum { V = 16 };
    float logits[2 * V];
    int targets[2] = {1, 2};
    struct loss_parts lp;
    for (int bad = 0; bad < 3; bad++) {
        for (int pos = 0; pos < V; pos += 5) {
            for (int i = 0; i < 2 * V; i++)
                logits[i] = 0.1f * (float)(i % 7);
            logits[V + pos] = bad == 0 ? NAN : bad == 1 ? INFINITY : -INFINITY;
            // -Inf is a masked logit (exp = 0): the loss stays finite, unless it is the target's
            int target_masked = bad == 2 && pos == targets[1];
            xent_forward(&lp, logits, targets, 2, V, 1e-4f, 0.0f);
            assert_true(bad < 2 || target_masked ? !isfinite(lp.total) : isfinite(lp.total));
            xent_forward_backward(&lp, logits, NULL, targets, 2, V, 1e-4f, 1.0f, 0.0f);
            assert_true(bad < 2 || target_masked ? !isfinite(lp.total) : isfinite(lp.total));
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_xent_gradient_matches_fd),
        cmocka_unit_test(test_xent_softcap_value_and_gradient),
        cmocka_unit_test(test_xent_uniform_logits_give_log_vocab),
        cmocka_unit_test(test_xent_logz_reported_per_row),
        cmocka_unit_test(test_xent_nonfinite_logits_propagate),
    };
    return cmocka_run_group_tests_name("losses", tests, NULL, NULL);
}
