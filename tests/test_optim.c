// optim/: schedules, gradient norm and clipping, AdamW in both weight-decay modes.
#include <math.h>
#include <string.h>

#include "model/tensors.h"
#include "optim/adamw.h"
#include "optim/optim.h"
#include "tests/testing.h"

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
static void check_adamw(enum wd_mode mode)
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
    adamw_init(&a, 4);
    adamw_update_compute(&a, upd, params, grads, &tt, &oc, lr_t);
    for (int i = 0; i < 4; i++) {
        double g = grads[i];
        double delta = g / (fabs(g) + 1e-8);
        double wd = i < 2 ? 0.1 : 0.0;
        double want = mode == WD_INDEPENDENT ? lr_t * delta + 0.5 * wd * params[i]
                                             : lr_t * (delta + wd * params[i]);
        expect_near(upd[i], want, 1e-7);
    }
    expect_near(a.m[0], 0.1f * 0.2f, 1e-8);
    expect_near(a.v[1], 0.05f * 0.01f, 1e-9);
    // second step: bias correction with t = 2
    adamw_update_compute(&a, upd, params, grads, &tt, &oc, lr_t);
    double m = 0.9 * 0.02 + 0.1 * 0.2, v = 0.95 * 0.002 + 0.05 * 0.04;
    double d = (m / (1 - 0.81)) / (sqrt(v / (1 - 0.9025)) + 1e-8);
    double want = mode == WD_INDEPENDENT ? lr_t * d + 0.5 * 0.1 * 0.5 : lr_t * (d + 0.1 * 0.5);
    expect_near(upd[0], want, 1e-7);
    float p0 = params[0];
    optim_update_apply(params, upd, 4);
    expect_near(params[0], p0 - upd[0], 0.0);
    adamw_free(&a);
    tensor_table_free(&tt);
}

static void test_adamw_independent_decay(void **state)
{
    check_adamw(WD_INDEPENDENT);
}

static void test_adamw_coupled_decay(void **state)
{
    check_adamw(WD_COUPLED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schedule_warmup_then_decay),
        cmocka_unit_test(test_clip_scales_to_threshold),
        cmocka_unit_test(test_adamw_independent_decay),
        cmocka_unit_test(test_adamw_coupled_decay),
    };
    return cmocka_run_group_tests_name("optim", tests, NULL, NULL);
}
