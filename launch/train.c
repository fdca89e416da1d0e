// Run setup and the training step (DESIGN.md §3). The step is written as its phases, in order.
#include "launch/train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/matmul.h"
#include "optim/optim.h"
#include "util/error.h"
#include "util/rng.h"

static int run_load_data(struct run *r, char *err, size_t errlen)
{
    const struct config *c = &r->cfg;
    int T = c->model.seq_len;
    if (tokens_open(&r->train_file, c->data.train, c->model.vocab, err, errlen) != 0)
        return -1;
    r->sampler.seq_len = T;
    r->sampler.seed = (uint64_t)c->train.seed;
    if (c->data.val[0]) {
        if (tokens_open(&r->val_file, c->data.val, c->model.vocab, err, errlen) != 0)
            return -1;
        r->sampler.train = r->train_file.tokens;
        r->sampler.n_train = r->train_file.n;
        r->sampler.val = r->val_file.tokens;
        r->sampler.n_val = r->val_file.n;
    } else {
        size_t n_val = (size_t)((double)r->train_file.n * c->data.val_fraction);
        r->sampler.train = r->train_file.tokens;
        r->sampler.n_train = r->train_file.n - n_val;
        r->sampler.val = r->train_file.tokens + r->sampler.n_train;
        r->sampler.n_val = n_val;
    }
    // Training needs at least one start position with T+1 tokens; evaluation one sequence.
    if (r->sampler.n_train < (size_t)T + 2) {
        snprintf(err, errlen,
                 "model.seq_len = %d is larger than the training data: '%s' has %zu training "
                 "tokens (needs at least seq_len + 2)",
                 T, c->data.train, r->sampler.n_train);
        return -1;
    }
    if (r->sampler.n_val < (size_t)T + 1) {
        snprintf(err, errlen,
                 "model.seq_len = %d is larger than the held-out data: %zu tokens in %s (needs at "
                 "least seq_len + 1; raise data.val_fraction or give data.val)",
                 T, r->sampler.n_val, c->data.val[0] ? c->data.val : "the tail of data.train");
        return -1;
    }
    return 0;
}

int run_init(struct run *r, const struct config *cfg, struct dist_ctx *dist, int random_data,
             char *err, size_t errlen)
{
    memset(r, 0, sizeof(*r));
    r->cfg = *cfg;
    r->dist = dist;
    r->random_data = random_data;
    r->local_batch = cfg->train.batch_size / dist->size;
    r->micro_batch = r->local_batch / cfg->train.grad_accum;
    if (!random_data && run_load_data(r, err, errlen) != 0) {
        run_free(r);
        return -1;
    }
    matmul_set_threads(cfg->train.threads);
    model_init(&r->model, &cfg->model, r->micro_batch);
    size_t n = r->model.table.total;
    r->params = xcalloc(n, sizeof(float));
    r->grads = xcalloc(n, sizeof(float));
    r->update = xcalloc(n, sizeof(float));
    r->tensor_sumsq = xcalloc((size_t)r->model.table.n, sizeof(double));
    adamw_init(&r->adamw, n);
    model_params_init(&r->model, r->params, (uint64_t)cfg->train.seed);
    size_t tok = (size_t)r->local_batch * cfg->model.seq_len;
    r->inputs = xcalloc(tok, sizeof(int));
    r->targets = xcalloc(tok, sizeof(int));
    if (random_data) {
        for (size_t i = 0; i < tok; i++) {
            r->inputs[i] = (int)(rng_u64(1, RNG_STREAM_BENCH_TOKENS, 2 * i) % cfg->model.vocab);
            r->targets[i] =
                (int)(rng_u64(1, RNG_STREAM_BENCH_TOKENS, 2 * i + 1) % cfg->model.vocab);
        }
    }
    r->step_flops = 3.0 * model_forward_flops(&cfg->model, r->local_batch);
    return 0;
}

void run_free(struct run *r)
{
    if (r->params)
        model_free(&r->model);
    free(r->params);
    free(r->grads);
    free(r->update);
    free(r->tensor_sumsq);
    adamw_free(&r->adamw);
    free(r->inputs);
    free(r->targets);
    tokens_close(&r->train_file);
    tokens_close(&r->val_file);
    memset(r, 0, sizeof(*r));
}

static int loss_finite(const struct loss_parts *p)
{
    return isfinite(p->total) && isfinite(p->ce) && isfinite(p->z);
}

void train_step(struct run *r, struct step_result *res)
{
    const struct config *c = &r->cfg;
    struct model *m = &r->model;
    int T = c->model.seq_len, accum = c->train.grad_accum, mb = r->micro_batch;
    size_t n = m->table.total;
    memset(res, 0, sizeof(*res));

    // 1. this rank's slice of the global batch
    if (!r->random_data) {
        uint64_t first = (uint64_t)r->step * (uint64_t)c->train.batch_size +
                         (uint64_t)r->dist->rank * (uint64_t)r->local_batch;
        sampler_train_batch(&r->sampler, r->inputs, r->targets, first, r->local_batch);
    }

    // 2–4. forward, loss, backward per micro-batch; gradients accumulate
    memset(r->grads, 0, n * sizeof(float));
    double parts[3] = {0.0, 0.0, 0.0}; // total, ce, z summed over micro-batches
    for (int k = 0; k < accum; k++) {
        const int *in = r->inputs + (size_t)k * mb * T;
        const int *tg = r->targets + (size_t)k * mb * T;
        struct loss_parts lp;
        model_forward(m, r->params, in, mb);
        xent_forward_backward(&lp, m->acts.logits, NULL, tg, mb * T, c->model.vocab,
                              (float)c->optim.z_loss, 1.0f / (float)accum);
        model_backward(m, r->params, r->grads, in, mb, NULL, NULL);
        parts[0] += lp.total;
        parts[1] += lp.ce;
        parts[2] += lp.z;
    }

    // 5. gradient reduction (mean over ranks), norm, clipping
    if (r->dist->size > 1) {
        dist_allreduce_sum_f32(r->dist, r->grads, n);
        dist_allreduce_sum_f64(r->dist, parts, 3);
        float inv = 1.0f / (float)r->dist->size;
        for (size_t i = 0; i < n; i++)
            r->grads[i] *= inv;
    }
    double denom = (double)accum * r->dist->size;
    res->loss.total = parts[0] / denom;
    res->loss.ce = parts[1] / denom;
    res->loss.z = parts[2] / denom;
    res->grad_norm = optim_grad_norm(r->tensor_sumsq, r->grads, &m->table);
    res->lr = schedule_lr(&c->optim, r->step, c->train.steps);
    res->finite = loss_finite(&res->loss) && isfinite(res->grad_norm);
    if (!res->finite)
        return; // the caller reports and stops; parameters stay as they were
    res->clip_factor = optim_clip(r->grads, n, res->grad_norm, c->optim.clip);

    // 6. optimizer: compute the update, then apply it
    adamw_update_compute(&r->adamw, r->update, r->params, r->grads, &m->table, &c->optim, res->lr);
    optim_update_apply(r->params, r->update, n);
    r->step++;
}

void train_eval(struct run *r, struct loss_parts *out)
{
    const struct config *c = &r->cfg;
    struct model *m = &r->model;
    int T = c->model.seq_len, mb = r->micro_batch;
    long total = (long)c->train.eval_batches * c->train.batch_size;
    long per_rank = total / r->dist->size; // batch_size divides by ranks
    double sums[3] = {0.0, 0.0, 0.0};
    for (long s = 0; s < per_rank; s += mb) {
        int b = (int)(per_rank - s < mb ? per_rank - s : mb);
        struct loss_parts lp;
        sampler_eval_batch(&r->sampler, r->inputs, r->targets,
                           (uint64_t)(r->dist->rank * per_rank + s), b);
        model_forward(m, r->params, r->inputs, b);
        xent_forward(&lp, m->acts.logits, r->targets, b * T, c->model.vocab,
                     (float)c->optim.z_loss);
        // weight by sequences so a short last chunk counts for what it holds
        sums[0] += lp.total * b;
        sums[1] += lp.ce * b;
        sums[2] += lp.z * b;
    }
    if (r->dist->size > 1)
        dist_allreduce_sum_f64(r->dist, sums, 3);
    memset(out, 0, sizeof(*out));
    out->total = sums[0] / (double)total;
    out->ce = sums[1] / (double)total;
    out->z = sums[2] / (double)total;
}
