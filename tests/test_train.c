// launch/train: the training step as a whole — gradient accumulation, the grads-ready callback
// that the bucketed allreduce will hang on, and the non-finite guard.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "launch/config.h"
#include "launch/train.h"
#include "tests/testing.h"

static void small_config(struct config *c)
{
    char err[256];
    config_defaults(c);
    c->model.dim = 32;
    c->model.heads = 4;
    c->model.seq_len = 16;
    c->model.vocab = 64;
    c->train.batch_size = 8;
    c->train.steps = 10;
    c->optim.lr = 1e-2;
    assert_int_equal(config_validate(c, 1, 0, err, sizeof(err)), 0);
}

static void test_train_grad_accum_matches_full_batch(void **state)
{
    struct config c1, c2;
    struct run r1, r2;
    struct dist_ctx solo = {0, 1, NULL, 0};
    char err[256];
    small_config(&c1);
    c2 = c1;
    c2.train.grad_accum = 4;
    assert_int_equal(run_init(&r1, &c1, &solo, 1, err, sizeof(err)), 0);
    assert_int_equal(run_init(&r2, &c2, &solo, 1, err, sizeof(err)), 0);
    assert_int_equal(r2.micro_batch, 2);
    for (int s = 0; s < 3; s++) {
        struct step_result a, b;
        train_step(&r1, &a);
        train_step(&r2, &b);
        expect_near(a.loss.total, b.loss.total, 1e-5 * a.loss.total);
        expect_near(a.grad_norm, b.grad_norm, 1e-4 * a.grad_norm);
    }
    // Adam turns a near-zero gradient's rounding difference into up to ±lr: the worst element
    // differs by 6e-5 (tanh-GELU backward) to 1.1e-4 (GELU backward from the forward's output),
    // both rounding; a wrong accumulation differs by O(1)
    expect_close("params after 3 steps, accum 4 vs 1", r2.params, r1.params, r1.model.table.total,
                 3e-4);
    run_free(&r1);
    run_free(&r2);
}

struct ready_log {
    int calls;
    int firsts[64];
    float *snapshots[64]; // copy of the gradients' final tail at each call
    const float *grads;
    const struct tensor_table *tt;
};

static void on_ready(void *ctx, int first)
{
    struct ready_log *log = ctx;
    if (log->calls < 64) {
        size_t lo = log->tt->t[first].offset, n = log->tt->total - lo;
        log->firsts[log->calls] = first;
        log->snapshots[log->calls] = malloc(n * sizeof(float) + 1);
        memcpy(log->snapshots[log->calls], log->grads + lo, n * sizeof(float));
    }
    log->calls++;
}

static void test_train_ready_callback_reports_final_tails(void **state)
{
    struct config c;
    struct run r;
    struct dist_ctx solo = {0, 1, NULL, 0};
    struct ready_log log;
    struct loss_parts lp;
    char err[256];
    small_config(&c);
    assert_int_equal(run_init(&r, &c, &solo, 1, err, sizeof(err)), 0);
    memset(&log, 0, sizeof(log));
    log.grads = r.grads;
    log.tt = &r.model.table;
    model_forward(&r.model, r.params, r.inputs, r.micro_batch);
    xent_forward_backward(&lp, r.model.acts.logits, NULL, r.targets,
                          r.micro_batch * c.model.seq_len, c.model.vocab, 0.0f, 1.0f, 0.0f);
    memset(r.grads, 0, r.model.table.total * sizeof(float));
    model_backward(&r.model, r.params, r.grads, r.inputs, r.micro_batch, 1.0f, on_ready, &log);
    // head + final norm, then each block's MLP half and attention half, then the embeddings
    assert_int_equal(log.calls, 2 * c.model.layers + 2);
    assert_int_equal(log.firsts[0], r.model.final_norm);
    assert_int_equal(log.firsts[1], r.model.blocks[c.model.layers - 1].n2);
    assert_int_equal(log.firsts[2], r.model.blocks[c.model.layers - 1].n1);
    assert_int_equal(log.firsts[log.calls - 1], 0);
    for (int i = 0; i < log.calls; i++) {
        if (i > 0)
            assert_true(log.firsts[i] < log.firsts[i - 1]);
        // what was reported final must not change afterwards
        size_t lo = r.model.table.t[log.firsts[i]].offset;
        assert_memory_equal(log.snapshots[i], r.grads + lo,
                            (r.model.table.total - lo) * sizeof(float));
        free(log.snapshots[i]);
    }
    run_free(&r);
}

static void test_train_nonfinite_step_leaves_params(void **state)
{
    struct config c;
    struct run r;
    struct dist_ctx solo = {0, 1, NULL, 0};
    struct step_result res;
    char err[256];
    small_config(&c);
    assert_int_equal(run_init(&r, &c, &solo, 1, err, sizeof(err)), 0);
    const struct tensor *head = &r.model.table.t[r.model.head];
    r.params[head->offset + 3] = NAN;
    size_t bytes = r.model.table.total * sizeof(float);
    float *before = malloc(bytes);
    memcpy(before, r.params, bytes);
    train_step(&r, &res);
    assert_false(res.finite);
    assert_int_equal(r.step, 0);
    assert_memory_equal(before, r.params, bytes);
    free(before);
    run_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_train_grad_accum_matches_full_batch),
        cmocka_unit_test(test_train_ready_callback_reports_final_tails),
        cmocka_unit_test(test_train_nonfinite_step_leaves_params),
    };
    return cmocka_run_group_tests_name("train", tests, NULL, NULL);
}
