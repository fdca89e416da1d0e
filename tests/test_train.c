// launch/train: the training step as a whole — gradient accumulation, the grads-ready callback
// that the bucketed allreduce will hang on, the non-finite guard, canary replay's counterfactual
// branches and the bad-sample fault hook.
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

// A run over real (sampled) data: run_init with random tokens, then the sampler pointed at a
// token array (the caller frees it after run_free), as canary replay's branches need batch
// indices to mean something. No token is 63 (= vocab - 1, the fault hook's).
static uint16_t *branch_run(struct run *r, struct config *c, struct dist_ctx *solo)
{
    char err[256];
    size_t n = 8192;
    uint16_t *tok = malloc(n * sizeof(*tok));
    small_config(c);
    for (size_t i = 0; i < n; i++)
        tok[i] = (uint16_t)((i * 7 + i / 13 + (i * i) % 11) % 60);
    assert_int_equal(run_init(r, c, solo, 1, err, sizeof(err)), 0);
    r->random_data = 0;
    r->sampler.train = tok;
    r->sampler.n_train = 6000;
    r->sampler.val = tok + 6000;
    r->sampler.n_val = n - 6000;
    r->sampler.seq_len = c->model.seq_len;
    r->sampler.seed = 5;
    return tok;
}

static void steps(struct run *r, int n)
{
    struct step_result res;
    for (int i = 0; i < n; i++) {
        train_step(r, &res);
        assert_true(res.finite);
    }
}

static void test_train_branch_skip_leaves_params(void **state)
{
    struct config c;
    struct run r;
    struct dist_ctx solo = {0, 1, NULL, 0};
    struct step_result res;
    uint16_t *tok = branch_run(&r, &c, &solo);
    steps(&r, 3);
    size_t n = r.model.table.total, bytes = n * sizeof(float);
    float *p = malloc(bytes), *m = malloc(bytes), *v = malloc(bytes);
    memcpy(p, r.params, bytes);
    memcpy(m, r.adamw.m, bytes);
    memcpy(v, r.adamw.v, bytes);
    long t = r.adamw.t;
    r.branch = (struct run_branch){BRANCH_SKIP, 3};
    train_step(&r, &res); // step 4 (r.step 3): skipped
    assert_true(res.finite);
    assert_false(res.applied);
    assert_int_equal(r.step, 4);
    assert_memory_equal(p, r.params, bytes);
    assert_memory_equal(m, r.adamw.m, bytes);
    assert_memory_equal(v, r.adamw.v, bytes);
    assert_int_equal(r.adamw.t, t);
    train_step(&r, &res); // the next step updates again
    assert_true(res.applied);
    assert_true(memcmp(p, r.params, bytes) != 0);
    free(p);
    free(m);
    free(v);
    run_free(&r);
    free(tok);
}

static void test_train_branch_drop_and_unseen_batches(void **state)
{
    struct config c;
    struct run a, b;
    struct dist_ctx solo = {0, 1, NULL, 0};
    uint16_t *ta = branch_run(&a, &c, &solo), *tb = branch_run(&b, &c, &solo);
    size_t tok = (size_t)a.local_batch * c.model.seq_len * sizeof(int);
    int *want = malloc(tok);
    b.branch = (struct run_branch){BRANCH_DROP, 2};
    steps(&a, 4); // a.inputs: the batch of step 4 (index 3)
    memcpy(want, a.inputs, tok);
    steps(&b, 2);
    assert_int_equal(run_batch_index(&b), 3); // the batch of index 2 is never drawn
    steps(&b, 1);
    assert_memory_equal(want, b.inputs, tok);
    assert_int_equal(run_batch_index(&b), 4);
    // unseen: a batch index no step of the run draws, at that step only
    b.branch = (struct run_branch){BRANCH_UNSEEN, b.step};
    assert_int_equal(run_batch_index(&b), c.train.steps + b.step);
    b.step++;
    assert_int_equal(run_batch_index(&b), b.step);
    free(want);
    run_free(&a);
    run_free(&b);
    free(ta);
    free(tb);
}

static void test_train_branch_half_lr_and_reset_m(void **state)
{
    struct config c;
    struct run a, b;
    struct dist_ctx solo = {0, 1, NULL, 0};
    struct step_result ra, rb;
    uint16_t *ta = branch_run(&a, &c, &solo), *tb = branch_run(&b, &c, &solo);
    steps(&a, 3);
    steps(&b, 3);
    b.branch = (struct run_branch){BRANCH_HALF_LR, 3};
    train_step(&a, &ra);
    train_step(&b, &rb);
    assert_true(rb.lr == 0.5 * ra.lr && ra.lr > 0.0);
    // the same gradients and moments, so the update itself is half (and the weights differ)
    size_t bad_half = 0;
    for (size_t i = 0; i < a.model.table.total; i++)
        bad_half += fabsf(b.update[i] - 0.5f * a.update[i]) > 1e-6f * fabsf(a.update[i]);
    assert_int_equal(bad_half, 0);
    assert_true(memcmp(a.params, b.params, a.model.table.total * sizeof(float)) != 0);
    train_step(&a, &ra);
    train_step(&b, &rb);
    assert_true(rb.lr == ra.lr); // one step only
    // reset: the first moment before the update was zero, so after it m = (1 - beta1) g
    b.branch = (struct run_branch){BRANCH_RESET_M, b.step};
    train_step(&b, &rb);
    double b1 = c.optim.beta1;
    size_t n = b.model.table.total, bad = 0;
    for (size_t i = 0; i < n; i++) {
        double want = (1.0 - b1) * b.grads[i];
        bad += fabs(b.adamw.m[i] - want) > 1e-6 * fabs(want) + 1e-12;
    }
    assert_int_equal(bad, 0);
    run_free(&a);
    run_free(&b);
    free(ta);
    free(tb);
}

// CANARY_FAULT=repeat:0:3: the first sequence of rank 0's slice of batch 2 (step 3) is one token
static void test_train_fault_repeat_corrupts_one_batch(void **state)
{
    struct config c;
    struct run r;
    struct dist_ctx solo = {0, 1, NULL, 0};
    setenv("CANARY_FAULT", "repeat:0:3", 1);
    uint16_t *tok = branch_run(&r, &c, &solo);
    unsetenv("CANARY_FAULT");
    int T = c.model.seq_len;
    for (uint64_t batch = 0; batch < 4; batch++) {
        run_load_batch(&r, batch);
        int all = 1, other = 0;
        for (int t = 0; t < T; t++)
            all &= r.inputs[t] == c.model.vocab - 1 && r.targets[t] == c.model.vocab - 1;
        for (int t = T; t < 2 * T; t++)
            other |= r.inputs[t] == c.model.vocab - 1;
        assert_int_equal(all, batch == 2);
        assert_false(other);
    }
    run_free(&r);
    free(tok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_train_grad_accum_matches_full_batch),
        cmocka_unit_test(test_train_ready_callback_reports_final_tails),
        cmocka_unit_test(test_train_nonfinite_step_leaves_params),
        cmocka_unit_test(test_train_branch_skip_leaves_params),
        cmocka_unit_test(test_train_branch_drop_and_unseen_batches),
        cmocka_unit_test(test_train_branch_half_lr_and_reset_m),
        cmocka_unit_test(test_train_fault_repeat_corrupts_one_batch),
    };
    return cmocka_run_group_tests_name("train", tests, NULL, NULL);
}
