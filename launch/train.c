// Run setup and the training step (DESIGN.md §3). The step is written as its phases, in order.
#include "launch/train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/matmul.h"
#include "model/matmul_dnnl.h"
#include "model/qk_clip.h"
#include "probes/stats.h"
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

// Buckets close at tensor boundaries (default mode); deterministic mode sums along a tree
// (grad_tree.h). Also the per-micro-batch records, the checksums and the evaluation buffers.
static void run_init_reduction(struct run *r)
{
    const struct tensor_table *tt = &r->model.table;
    size_t *bounds = xcalloc((size_t)tt->n + 1, sizeof(size_t));
    for (int i = 0; i < tt->n; i++)
        bounds[i] = tt->t[i].offset;
    bounds[tt->n] = tt->total;
    size_t bucket = (size_t)(r->cfg.train.bucket_mb * 1048576.0 / sizeof(float));
    dist_reducer_init(&r->reducer, r->dist, bounds, tt->n, bucket ? bucket : 1,
                      r->cfg.train.overlap_reduce);
    free(bounds);
    const struct model_config *mc = &r->cfg.model;
    struct probe_leaf *pl = &r->probes->leaf;
    probe_leaf_init(pl, mc->layers, mc->heads, r->model.moe_layers, mc->experts,
                    mc->attention == ATTN_MLA, mc->attention == ATTN_MLA && mc->q_rank > 0);
    r->leaf_stride_max = LOSS_PARTS + pl->every.size + pl->step.size;
    r->leaf_stride = LOSS_PARTS;
    r->leaf_loss = xcalloc((size_t)r->leaf_stride_max * r->leaves, sizeof(double));
    r->leaf_loss_mine = xcalloc((size_t)r->leaf_stride_max * r->micro_steps, sizeof(double));
    r->probes->every_sum = xcalloc((size_t)pl->every.size + 1, sizeof(double));
    r->probes->step_sum = xcalloc((size_t)pl->step.size + 1, sizeof(double));
    r->checksums = xcalloc(3 * (size_t)tt->n, sizeof(unsigned long long));
    r->eval_chunks = r->cfg.train.eval_batches * (r->cfg.train.batch_size / r->micro_batch);
    r->eval_loss = xcalloc(LOSS_PARTS * (size_t)r->eval_chunks, sizeof(double));
    r->eval_loss_mine = xcalloc(LOSS_PARTS * (size_t)r->eval_chunks, sizeof(double));
    if (r->cfg.train.deterministic)
        r->tree = grad_tree_init(tt->total, r->micro_steps, r->dist->size);
}

int run_init(struct run *r, const struct config *cfg, struct dist_ctx *dist, int random_data,
             char *err, size_t errlen)
{
    memset(r, 0, sizeof(*r));
    r->cfg = *cfg;
    r->dist = dist;
    r->random_data = random_data;
    r->local_batch = cfg->train.batch_size / dist->size;
    if (cfg->train.deterministic) {
        // grad_accum counts the micro-batches of the global batch: their size does not depend on
        // the rank count, which is what makes the reduction tree the same for any rank count.
        r->leaves = cfg->train.grad_accum;
        r->micro_batch = cfg->train.batch_size / r->leaves;
        r->micro_steps = r->leaves / dist->size;
    } else {
        r->micro_steps = cfg->train.grad_accum;
        r->micro_batch = r->local_batch / r->micro_steps;
        r->leaves = r->micro_steps * dist->size;
    }
    r->l0 = r->final_eval = NAN;
    const struct model_config *mcfg = &cfg->model;
    int group = mcfg->moe_group > 0 ? mcfg->moe_group : mcfg->seq_len;
    if (mcfg->experts > 0 && ((long)r->micro_batch * mcfg->seq_len) % group != 0) {
        snprintf(err, errlen,
                 "model.moe_group = %d tokens does not divide a micro-batch of %d sequences of "
                 "%d tokens: a routing group would straddle micro-batches (change "
                 "model.moe_group, train.batch_size or train.grad_accum)",
                 group, r->micro_batch, mcfg->seq_len);
        return -1;
    }
    // every rank reaches this (the checks above depend on the config and the rank count): it is
    // collective
    char why[256] = "";
    int avail = (cfg->train.precision || cfg->train.matmul_backend == MATMUL_ONEDNN) &&
                mm_dnnl_available(cfg->train.precision, why, sizeof(why));
    if (run_choose_backend(dist, cfg, avail, why, &r->backend, err, errlen) != 0)
        return -1;
    if (!random_data && run_load_data(r, err, errlen) != 0) {
        run_free(r);
        return -1;
    }
    matmul_set_threads(cfg->train.threads);
    model_init(&r->model, &cfg->model, r->micro_batch);
    model_set_aux_coefs(&r->model, cfg->optim.balance_loss, cfg->optim.router_z_loss);
    model_set_precision(&r->model, cfg->train.precision, cfg->train.bf16_attention,
                        r->backend.onednn);
    size_t n = r->model.table.total;
    r->params = xcalloc(n, sizeof(float));
    r->grads = xcalloc(n, sizeof(float));
    r->update = xcalloc(n, sizeof(float));
    r->tensor_sumsq = xcalloc((size_t)r->model.table.n, sizeof(double));
    adamw_init(&r->adamw, n, cfg->optim.stable_adamw ? r->model.table.n : 0);
    model_params_init(&r->model, r->params, (uint64_t)cfg->train.seed);
    size_t tok = (size_t)r->local_batch * cfg->model.seq_len;
    r->inputs = xcalloc(tok, sizeof(int));
    r->logz = xcalloc((size_t)r->micro_batch * cfg->model.seq_len, sizeof(float));
    r->lr_probe = lr_probe_init(r);
    if (cfg->optim.qk_clip > 0.0) {
        size_t lh = (size_t)cfg->model.layers * cfg->model.heads;
        r->qk_max = xcalloc(lh, sizeof(double));
        r->qk_tmp = xcalloc(lh, sizeof(double));
        r->qk_eta = xcalloc(lh, sizeof(double));
    }
    if (cfg->optim.skip_sigma > 0.0) {
        guard_window_init(&r->guard_loss, cfg->optim.guard_window);
        guard_window_init(&r->guard_gnorm, cfg->optim.guard_window);
    }
    if (cfg->optim.update_clip_sigma > 0.0) {
        guard_window_init(&r->guard_unorm, cfg->optim.guard_window);
        r->update_sumsq = xcalloc((size_t)r->model.table.n, sizeof(double));
    }
    r->targets = xcalloc(tok, sizeof(int));
    if (random_data) {
        for (size_t i = 0; i < tok; i++) {
            r->inputs[i] = (int)(rng_u64(1, RNG_STREAM_BENCH_TOKENS, 2 * i) % cfg->model.vocab);
            r->targets[i] =
                (int)(rng_u64(1, RNG_STREAM_BENCH_TOKENS, 2 * i + 1) % cfg->model.vocab);
        }
    }
    r->step_flops = 3.0 * model_forward_flops(&cfg->model, r->local_batch);
    r->probes = xcalloc(1, sizeof(*r->probes));
    run_init_reduction(r);
    r->fault = fault_init(dist->rank);
    if (cfg->optim.name == OPTIM_MUON &&
        !(r->muon = muon_shards_init(&r->model.table, &cfg->optim, dist, err, errlen))) {
        run_free(r);
        return -1;
    }
    return 0;
}

void run_free(struct run *r)
{
    if (r->params) {
        model_free(&r->model);
        dist_reducer_free(&r->reducer);
    }
    grad_tree_free(r->tree);
    free(r->leaf_loss);
    free(r->leaf_loss_mine);
    if (r->probes) {
        free(r->probes->every_sum);
        free(r->probes->step_sum);
        free(r->probes);
    }
    free(r->checksums);
    muon_shards_free(r->muon);
    fault_free(r->fault);
    free(r->moe_age);
    free(r->logz);
    lr_probe_free(r->lr_probe);
    free(r->qk_max);
    free(r->qk_tmp);
    free(r->qk_eta);
    guard_window_free(&r->guard_loss);
    guard_window_free(&r->guard_gnorm);
    guard_window_free(&r->guard_unorm);
    free(r->update_sumsq);
    free(r->eval_loss);
    free(r->eval_loss_mine);
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

// Backward's grads-ready callback: tensors [first, n) are final on this rank.
static void on_grads_ready(void *ctx, int first)
{
    struct run *r = ctx;
    dist_reducer_ready(&r->reducer, r->model.table.t[first].offset);
}

// The probe records of micro-batch k (probes/leaf.h) from the forward just run (the logit
// statistics come from the loss: micro_step).
static void leaf_probes_forward(struct run *r, double *rec)
{
    const struct probe_leaf *pl = &r->probes->leaf;
    struct model *m = &r->model;
    double *every = rec + LOSS_PARTS, *step = every + pl->every.size;
    if (pl->moe_layers > 0)
        model_moe_chosen(m, every + pl->moe_chosen);
    if (!r->probe_step)
        return;
    struct model_probe_sums sums = {
        step + pl->attn_max,
        step + pl->attn_entropy,
        step + pl->q_sumsq,
        step + pl->k_sumsq,
        step + pl->resid_sumsq,
        pl->kv_latent_sumsq >= 0 ? step + pl->kv_latent_sumsq : NULL,
        pl->q_latent_sumsq >= 0 ? step + pl->q_latent_sumsq : NULL,
        pl->moe_layers > 0 ? step + pl->moe_kept : NULL,
        pl->moe_layers > 0 ? step + pl->moe_z : NULL,
        pl->moe_layers > 0 ? step + pl->moe_entropy : NULL,
    };
    model_probe_sums(m, r->micro_batch, &sums);
}

// One micro-batch: forward, loss, backward into grads (accumulating). The loss gradient is
// scaled by 1/leaves so that the sum over all micro-batches of all ranks is the mean. Its loss
// parts and, when the run collects probes, its probe records go to record k.
static void micro_step(struct run *r, int k, float *grads, int reduce)
{
    const struct config *c = &r->cfg;
    int T = c->model.seq_len, mb = r->micro_batch;
    const int *in = r->inputs + (size_t)k * mb * T;
    const int *tg = r->targets + (size_t)k * mb * T;
    double *rec = r->leaf_loss_mine + (size_t)k * r->leaf_stride;
    int collect = r->probes->collect;
    struct loss_parts lp;
    model_set_probing(&r->model, r->probe_step || r->qk_max); // QK-clip reads every step's logits
    struct model_aux aux = model_forward(&r->model, r->params, in, mb);
    if (r->qk_max) { // the max over this rank's micro-batches (ranks: train_step)
        model_attn_max_signed(&r->model, mb, r->qk_tmp);
        for (int i = 0; i < c->model.layers * c->model.heads; i++) {
            double s = r->qk_tmp[i];
            r->qk_max[i] = s > r->qk_max[i] || s != s ? s : r->qk_max[i];
        }
    }
    if (collect)
        leaf_probes_forward(r, rec);
    struct xent_probe xp = {r->logz, 0.0, 0.0};
    xent_forward_backward(&lp, r->model.acts.logits, collect ? &xp : NULL, tg, mb * T,
                          c->model.vocab, (float)c->optim.z_loss, 1.0f / (float)r->leaves,
                          (float)c->model.final_softcap);
    if (collect) {
        rec[LOSS_PARTS + r->probes->leaf.logit_sumsq] = xp.sumsq;
        rec[LOSS_PARTS + r->probes->leaf.logit_max] = xp.absmax;
        probe_leaf_output(&r->probes->leaf, rec + LOSS_PARTS, r->logz, (size_t)mb * T, xp.sumsq);
    }
    // the MoE losses' gradients get the loss's scale
    model_backward(&r->model, r->params, grads, in, mb, 1.0f / (float)r->leaves,
                   reduce ? on_grads_ready : NULL, r);
    lp.balance = aux.balance;
    lp.router_z = aux.router_z;
    lp.aux = lp.balance + lp.router_z;
    lp.total += lp.aux;
    loss_parts_pack(&lp, rec);
}

// Default mode: micro-batches accumulate into grads; the last one's backward starts the bucket
// allreduces, which finish after it.
static void grads_accumulate_overlapped(struct run *r)
{
    size_t n = r->model.table.total;
    memset(r->grads, 0, n * sizeof(float));
    dist_reducer_begin(&r->reducer, r->grads);
    for (int k = 0; k < r->micro_steps; k++)
        micro_step(r, k, r->grads, k == r->micro_steps - 1);
    dist_reducer_finish(&r->reducer); // Σ over ranks of Σ_k g_k / leaves: the mean
}

// Deterministic mode: each micro-batch's gradient alone, summed along the fixed tree
// (launch/grad_tree.h).
static void grads_accumulate_tree(struct run *r)
{
    for (int k = 0; k < r->micro_steps; k++) {
        micro_step(r, k, grad_tree_leaf(r->tree), 0);
        grad_tree_push(r->tree);
    }
    grad_tree_finish(r->tree, r->grads, r->dist);
}

// (train.h) Summed in global order: the result does not depend on the rank count.
const double *run_mean_in_global_order(struct run *r, const double *mine, double *all, int n,
                                       int stride, struct loss_parts *out)
{
    const double *recs = mine;
    double sum[LOSS_PARTS] = {0.0};
    int total = n * r->dist->size;
    if (r->dist->size > 1) {
        dist_allgather_f64(r->dist, mine, all, (size_t)stride * n);
        recs = all;
    }
    for (int k = 0; k < total; k++)
        for (int j = 0; j < LOSS_PARTS; j++)
            sum[j] += recs[(size_t)stride * k + j];
    for (int j = 0; j < LOSS_PARTS; j++)
        sum[j] /= total;
    loss_parts_unpack(out, sum);
    return recs;
}

// Loss parts of the global batch: the mean over all micro-batches, summed in global order so the
// reported loss is the same for any rank count; and the probe records of all micro-batches,
// folded in the same order (probes/partials.h) into the global batch's sums.
static void step_loss(struct run *r, struct loss_parts *out)
{
    struct run_probes *p = r->probes;
    int stride = r->leaf_stride;
    const double *recs =
        run_mean_in_global_order(r, r->leaf_loss_mine, r->leaf_loss, r->micro_steps, stride, out);
    if (!p->collect)
        return;
    partials_combine(&p->leaf.every, recs + LOSS_PARTS, (size_t)stride, r->leaves, p->every_sum);
    if (r->probe_step)
        partials_combine(&p->leaf.step, recs + LOSS_PARTS + p->leaf.every.size, (size_t)stride,
                         r->leaves, p->step_sum);
}

// Skip-step (optim.skip_sigma > 0): 1 when this step's loss or gradient norm exceeds its
// window's threshold. Both values join their windows either way, so a lasting shift is absorbed
// after a window. The values are global-batch statistics and the same on every rank; the
// decision is agreed anyway, so no rank can update alone.
static int guard_skip(struct run *r, struct step_result *res)
{
    const struct optim_config *oc = &r->cfg.optim;
    res->loss_thr = res->gnorm_thr = NAN;
    if (oc->skip_sigma <= 0.0)
        return 0;
    double tl, tg;
    int skip = 0;
    if (guard_window_threshold(&r->guard_loss, oc->skip_sigma, oc->guard_min, &tl, NULL, NULL)) {
        res->loss_thr = tl;
        skip |= res->loss.total > tl;
    }
    if (guard_window_threshold(&r->guard_gnorm, oc->skip_sigma, oc->guard_min, &tg, NULL, NULL)) {
        res->gnorm_thr = tg;
        skip |= res->grad_norm > tg;
    }
    guard_window_push(&r->guard_loss, res->loss.total);
    guard_window_push(&r->guard_gnorm, res->grad_norm);
    res->guard_skipped = dist_max_f64(r->dist, skip) > 0.0;
    return res->guard_skipped;
}

// Update-norm clipping (optim.update_clip_sigma > 0): scales the computed update down to the
// window's threshold when its global norm (per-tensor sums in a fixed order, as the gradient
// norm) exceeds it; the unclipped norm joins the window.
static void guard_update_clip(struct run *r, struct step_result *res)
{
    const struct optim_config *oc = &r->cfg.optim;
    res->update_clip_factor = 1.0;
    res->update_norm = res->update_thr = NAN;
    if (oc->update_clip_sigma <= 0.0)
        return;
    double un = optim_grad_norm(r->update_sumsq, r->update, &r->model.table), thr;
    res->update_norm = un;
    if (guard_window_threshold(&r->guard_unorm, oc->update_clip_sigma, oc->guard_min, &thr, NULL,
                               NULL)) {
        res->update_thr = thr;
        res->update_clip_factor = optim_clip(r->update, r->model.table.total, un, thr);
    }
    guard_window_push(&r->guard_unorm, un);
}

void train_step(struct run *r, struct step_result *res)
{
    const struct config *c = &r->cfg;
    struct model *m = &r->model;
    size_t n = m->table.total;
    memset(res, 0, sizeof(*res));
    res->loss_thr = res->gnorm_thr = res->update_norm = res->update_thr = NAN;
    res->update_clip_factor = 1.0;
    double t0 = timer_now();

    // 1. this rank's slice of the global batch
    if (!r->random_data)
        run_load_batch(r, run_batch_index(r));
    int branch_here = r->branch.kind != BRANCH_NONE && r->step == r->branch.at;

    // 2–4. forward, loss, backward per micro-batch (the last backward starts the reduction);
    // each micro-batch's record holds its loss parts and probe sums
    if (r->qk_max)
        for (int i = 0; i < c->model.layers * c->model.heads; i++)
            r->qk_max[i] = -INFINITY;
    r->leaf_stride = LOSS_PARTS + (r->probes->collect ? r->probes->leaf.every.size : 0) +
                     (r->probes->collect && r->probe_step ? r->probes->leaf.step.size : 0);
    // 5. finish the gradient reduction (mean over the global batch), norm, clipping
    if (c->train.deterministic)
        grads_accumulate_tree(r);
    else
        grads_accumulate_overlapped(r);
    step_loss(r, &res->loss);
    res->grad_norm = optim_grad_norm(r->tensor_sumsq, r->grads, &m->table);
    res->lr = schedule_lr(&c->optim, r->step, c->train.steps);
    if (branch_here && r->branch.kind == BRANCH_HALF_LR)
        res->lr *= 0.5;
    res->finite = loss_finite(&res->loss) && isfinite(res->grad_norm);
    if (!res->finite)
        return; // the caller reports it, then stops or skips; parameters stay as they were
    res->clip_factor = optim_clip(r->grads, n, res->grad_norm, c->optim.clip);
    double t1 = timer_now();
    res->seconds_grads = t1 - t0;
    // no update, optimizer state untouched; the data moves on (a replay's skip branch: the
    // guard windows do not see the step either)
    if ((branch_here && r->branch.kind == BRANCH_SKIP) || guard_skip(r, res)) {
        res->seconds_optim = timer_now() - t1;
        r->step++;
        return;
    }

    // 6. optimizer: compute the update, then apply it
    if (branch_here && r->branch.kind == BRANCH_RESET_M) {
        memset(r->adamw.m, 0, n * sizeof(float));
        if (r->muon)
            memset(r->muon->state.momentum, 0, n * sizeof(float));
    }
    adamw_update_compute(&r->adamw, r->update, r->params, r->grads, &m->table, &c->optim, res->lr);
    if (r->muon) {
        int probe = c->probes.enabled && (r->step + 1) % c->probes.every == 0;
        muon_shards_step(r->muon, r->dist, &m->table, &c->optim, r->update, r->grads, r->params,
                         res->lr, probe);
    }
    guard_update_clip(r, res);
    if (r->qk_max) { // QK-clip's eta from the step's global max logits (the LR probe uses it)
        dist_allreduce_max_f64(r->dist, r->qk_max, (size_t)c->model.layers * c->model.heads);
        r->qk_clipped =
            qk_clip_eta(r->qk_max, c->model.layers * c->model.heads, c->optim.qk_clip, r->qk_eta);
    }
    if (r->lr_probe && r->lr_probe->due)
        lr_probe_run(r->lr_probe, r, res->lr, res->update_clip_factor);
    optim_update_apply(r->params, r->update, n);
    if (r->qk_max && !c->optim.qk_clip_log_only) // on the updated weights
        qk_clip_apply(m, r->params, r->qk_eta, c->optim.qk_clip_alpha);
    res->applied = 1;
    res->seconds_optim = timer_now() - t1;
    r->step++;
}

// FNV-1a over a tensor's bits.
static unsigned long long tensor_checksum(const float *x, size_t n)
{
    unsigned long long h = 0xcbf29ce484222325ULL;
    const unsigned char *b = (const unsigned char *)x;
    for (size_t i = 0; i < n * sizeof(float); i++) {
        h ^= b[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

unsigned long long train_params_checksum(const struct run *r)
{
    return tensor_checksum(r->params, r->model.table.total);
}

void train_check_consistency(struct run *r)
{
    const struct tensor_table *tt = &r->model.table;
    if (r->dist->size == 1)
        return;
    for (int i = 0; i < tt->n; i++)
        r->checksums[i] = tensor_checksum(r->params + tt->t[i].offset, tt->t[i].size);
    int bad = dist_first_mismatch_u64(r->dist, r->checksums, r->checksums + tt->n, tt->n);
    if (bad >= 0)
        FATAL("parameters differ across ranks after step %ld: first differing tensor '%s'", r->step,
              tt->t[bad].name);
}
