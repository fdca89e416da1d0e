// Probes of a training run, step by step (opening probes.h5: train_probes_open.c): what each one
// means is its registration's description, which is also stored in probes.h5. Rank 0 writes.
// Attention, output, residual and MoE probes are statistics of the whole global batch: every
// micro-batch of every rank contributes a record (probes/leaf.h), folded in global order (train.c,
// step_loss). Per-tensor probes read the reduced gradient and the parameters, which every rank
// shares.
#include "launch/train_probes.h"

#include <stdlib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dist/dist.h"
#include "launch/config_keys.h"
#include "launch/train.h"
#include "model/blas_core.h"
#include "model/matmul.h"
#include "probes/stats.h"
#include "probes/tensor_rows.h"
#include "util/error.h"
#include "util/fpenv.h"

// MoE: experts any token of the global batch chose in this step are alive at this step.
static void note_moe_seen(struct run *r)
{
    struct run_probes *p = r->probes;
    size_t n = (size_t)p->leaf.moe_layers * p->leaf.experts;
    for (size_t i = 0; i < n; i++)
        if (p->every_sum[p->leaf.moe_chosen + i] > 0)
            p->moe_last_seen[i] = r->step;
}

// The output rows (every step) and, at probe steps, the attention, residual, MLA and MoE rows,
// from the step's records folded over the global batch (train.c, step_loss).
static void fill_global_rows(struct run *r, int probe_step)
{
    struct run_probes *p = r->probes;
    struct probe_set *s = &p->set;
    const struct model_config *c = &r->cfg.model;
    struct probe_leaf_norms nm = {.tokens = (double)r->cfg.train.batch_size * c->seq_len,
                                  .vocab = c->vocab,
                                  .dqk = r->model.dqk,
                                  .dim = c->dim,
                                  .kv_rank = c->kv_rank,
                                  .q_rank = c->q_rank,
                                  .top_k = c->top_k,
                                  .attn_softcap = c->attn_softcap,
                                  .final_softcap = c->final_softcap};
    int moe = probe_has(&p->set, PROBE_MOE_LOAD);
    // probe_row is NULL for a probe the run does not have: probe_leaf_rows skips it
    struct probe_leaf_rows rows = {
        .logz_mean = probe_row(s, PROBE_LOGZ_MEAN),
        .logz_std = probe_row(s, PROBE_LOGZ_STD),
        .logz_max = probe_row(s, PROBE_LOGZ_MAX),
        .logit_rms = probe_row(s, PROBE_LOGIT_RMS),
        .logit_max = probe_row(s, PROBE_LOGIT_MAX),
        .logit_max_capped = probe_row(s, PROBE_LOGIT_MAX_CAPPED),
        .attn_max_capped = probe_row(s, PROBE_ATTN_MAX_LOGIT_CAPPED),
        .attn_max = probe_row(s, PROBE_ATTN_MAX_LOGIT),
        .attn_entropy = probe_row(s, PROBE_ATTN_ENTROPY),
        .attn_q_rms = probe_row(s, PROBE_ATTN_Q_RMS),
        .attn_k_rms = probe_row(s, PROBE_ATTN_K_RMS),
        .resid_rms = probe_row(s, PROBE_RESID_RMS),
        .kv_latent_rms = probe_row(s, PROBE_KV_LATENT_RMS),
        .q_latent_rms = probe_row(s, PROBE_Q_LATENT_RMS),
        .moe_load = moe ? probe_row(s, PROBE_MOE_LOAD) : NULL,
        .moe_dropped = moe ? probe_row(s, PROBE_MOE_DROPPED) : NULL,
        .moe_router_z = moe ? probe_row(s, PROBE_MOE_ROUTER_Z) : NULL,
        .moe_entropy = moe ? probe_row(s, PROBE_MOE_ENTROPY) : NULL,
    };
    probe_leaf_rows(&p->leaf, p->every_sum, probe_step ? p->step_sum : NULL, &nm, &rows);
    if (!moe)
        return;
    note_moe_seen(r);
    if (!probe_step)
        return;
    double *dead = probe_row(s, PROBE_MOE_DEAD);
    for (int i = 0; i < p->leaf.moe_layers; i++) {
        dead[i] = 0;
        for (int e = 0; e < p->leaf.experts; e++)
            dead[i] += p->moe_last_seen[(size_t)i * p->leaf.experts + e] <=
                       r->step - r->cfg.probes.dead_window;
    }
}

// Per-tensor rows from the reduced gradient (Σg² of the step), the parameters, the update and
// AdamW's second moment.
static void fill_tensor_rows(struct run *r, int skipped)
{
    struct probe_set *s = &r->probes->set;
    const struct tensor_table *tt = &r->model.table;
    struct probe_tensor_in in = {tt->n,
                                 r->probes->tensor_offset,
                                 r->probes->tensor_size,
                                 r->tensor_sumsq,
                                 r->params,
                                 r->update,
                                 r->adamw.v,
                                 r->adamw.t,
                                 r->cfg.optim.beta2,
                                 r->cfg.optim.eps,
                                 r->probes->tensor_muon,
                                 r->muon ? r->muon->state.momentum : NULL,
                                 r->muon ? r->muon->ortho : NULL,
                                 skipped};
    struct probe_tensor_out out = {
        probe_row(s, PROBE_GRAD_RMS),      probe_row(s, PROBE_PARAM_RMS),
        probe_row(s, PROBE_UPDATE_RMS),    probe_row(s, PROBE_ADAM_SQRT_V_RMS),
        probe_row(s, PROBE_ADAM_EPS_FRAC), probe_row(s, PROBE_ADAM_V_ZERO_FRAC),
        probe_row(s, PROBE_MUON_ORTHO),    probe_row(s, PROBE_MUON_MOMENTUM_RMS)};
    probe_tensor_rows(&in, &out);
}

static int check_events(struct run *r, const struct step_result *res, long step, char *err,
                        size_t errlen)
{
    struct run_probes *p = r->probes;
    const struct probes_config *pc = &r->cfg.probes;
    char detail[256];
    double z = 0.0;
    if (p->win_n == pc->spike_window) {
        if (stats_spike_z(p->win_loss, p->win_n, res->loss.total, &z) && z > pc->spike_sigma) {
            snprintf(detail, sizeof(detail),
                     "loss %.6g is %.1f sigma above the mean of the last %d steps", res->loss.total,
                     z, p->win_n);
            if (run_probes_event(r, step, "spike", detail, err, errlen) != 0)
                return -1;
        }
        if (stats_spike_z(p->win_gnorm, p->win_n, res->grad_norm, &z) && z > pc->spike_sigma) {
            snprintf(detail, sizeof(detail),
                     "gradient norm %.6g is %.1f sigma above the mean of the last %d steps",
                     res->grad_norm, z, p->win_n);
            if (run_probes_event(r, step, "spike", detail, err, errlen) != 0)
                return -1;
        }
    }
    if (isfinite(res->loss.total) && isfinite(res->grad_norm)) { // a skipped step stays out
        p->win_loss[p->win_pos] = res->loss.total;
        p->win_gnorm[p->win_pos] = res->grad_norm;
        p->win_pos = (p->win_pos + 1) % pc->spike_window;
        if (p->win_n < pc->spike_window)
            p->win_n++;
    }
    if (r->probe_step) {
        const double *mx = probe_row(&p->set, PROBE_ATTN_MAX_LOGIT);
        int worst = 0, n = r->cfg.model.layers * r->cfg.model.heads;
        for (int i = 1; i < n; i++)
            worst = mx[i] > mx[worst] ? i : worst;
        int above = mx[worst] > pc->logit_threshold;
        if (above && !p->above_threshold) {
            snprintf(detail, sizeof(detail),
                     "max attention logit %.6g in layer %d head %d crossed probes.logit_threshold "
                     "= %g",
                     mx[worst], worst / r->cfg.model.heads, worst % r->cfg.model.heads,
                     pc->logit_threshold);
            if (run_probes_event(r, step, "threshold", detail, err, errlen) != 0)
                return -1;
        }
        p->above_threshold = above;
    }
    return 0;
}

int run_probes_step(struct run *r, const struct step_result *res, double tokens_per_s, char *err,
                    size_t errlen)
{
    struct run_probes *p = r->probes;
    long step = r->step; // the step just taken, counted from 1
    if (!p->active)
        return 0;
    probe_row(&p->set, PROBE_LOSS_TOTAL)[0] = res->loss.total;
    probe_row(&p->set, PROBE_LOSS_CE)[0] = res->loss.ce;
    probe_row(&p->set, PROBE_LOSS_Z)[0] = res->loss.z;
    probe_row(&p->set, PROBE_LOSS_AUX)[0] = res->loss.aux;
    if (probe_has(&p->set, PROBE_LOSS_BALANCE)) {
        probe_row(&p->set, PROBE_LOSS_BALANCE)[0] = res->loss.balance;
        probe_row(&p->set, PROBE_LOSS_ROUTER_Z)[0] = res->loss.router_z;
    }
    probe_row(&p->set, PROBE_LR)[0] = res->lr;
    probe_row(&p->set, PROBE_GRAD_NORM)[0] = res->grad_norm;
    // a skipped step (non-finite, train.on_nonfinite = skip) computed no update
    probe_row(&p->set, PROBE_CLIP)[0] = res->finite ? res->clip_factor : NAN;
    probe_row(&p->set, PROBE_TOKENS_PER_S)[0] = tokens_per_s;
    probe_row(&p->set, PROBE_SKIPPED)[0] = !res->applied;
    if (probe_has(&p->set, PROBE_GUARD_SKIP)) {
        probe_row(&p->set, PROBE_GUARD_SKIP)[0] = res->guard_skipped;
        probe_row(&p->set, PROBE_GUARD_LOSS_THR)[0] = res->loss_thr;
        probe_row(&p->set, PROBE_GUARD_GNORM_THR)[0] = res->gnorm_thr;
    }
    if (probe_has(&p->set, PROBE_UPDATE_NORM)) {
        probe_row(&p->set, PROBE_UPDATE_NORM)[0] = res->update_norm;
        probe_row(&p->set, PROBE_UPDATE_THR)[0] = res->update_thr;
        probe_row(&p->set, PROBE_UPDATE_CLIP)[0] = res->applied ? res->update_clip_factor : NAN;
    }
    if (r->qk_max) { // a skipped step computed no η
        int lh = r->cfg.model.layers * r->cfg.model.heads;
        probe_row(&p->set, PROBE_QK_CLIP_COUNT)[0] = res->applied ? r->qk_clipped : NAN;
        for (int i = 0; r->probe_step && i < lh; i++)
            probe_row(&p->set, PROBE_QK_CLIP_ETA)[i] = res->applied ? r->qk_eta[i] : NAN;
    }
    if (r->adamw.stable) {
        probe_row(&p->set, PROBE_STABLE_SCALED)[0] = res->applied ? r->adamw.stable_scaled : NAN;
        for (int i = 0; r->probe_step && i < r->model.table.n; i++)
            probe_row(&p->set, PROBE_STABLE_FACTOR)[i] = res->applied ? r->adamw.stable[i] : NAN;
    }
    // r->probe_step: the step just taken collected the probe-step records (train_loop decides)
    fill_global_rows(r, r->probe_step);
    if (r->probe_step)
        fill_tensor_rows(r, !res->applied);

    if (probe_set_write(&p->set, step, r->probe_step, err, errlen) != 0)
        return -1;
    if (r->lr_probe && r->lr_probe->due && res->applied) { // a skipped step ran no LR probe
        double s = (double)step;
        if (h5_series_append(p->set.file, p->lr_step, &s, err, errlen) != 0 ||
            h5_series_append(p->set.file, p->lr_loss, r->lr_probe->loss, err, errlen) != 0)
            return -1;
    }
    if (check_events(r, res, step, err, errlen) != 0)
        return -1;
    if (step % r->cfg.probes.flush_every == 0)
        return probe_set_flush(&p->set, err, errlen);
    return 0;
}

void run_probes_seed(struct run *r, const double *loss, const double *gnorm, int n,
                     int above_threshold)
{
    struct run_probes *p = r->probes;
    int win = r->cfg.probes.spike_window;
    p->win_n = p->win_pos = 0;
    for (int i = n > win ? n - win : 0; i < n; i++) {
        if (!isfinite(loss[i]) || !isfinite(gnorm[i]))
            continue; // as check_events: skipped steps stay out
        p->win_loss[p->win_pos] = loss[i];
        p->win_gnorm[p->win_pos] = gnorm[i];
        p->win_pos = (p->win_pos + 1) % win;
        p->win_n += p->win_n < win;
    }
    p->above_threshold = above_threshold;
}

int run_probes_event(struct run *r, long step, const char *kind, const char *detail, char *err,
                     size_t errlen)
{
    struct run_probes *p = r->probes;
    double s = (double)step;
    if (r->dist->rank != 0)
        return 0;
    fprintf(stderr, "canary: %s%s%sevent at step %ld: %s: %s\n", r->tag ? "[" : "",
            r->tag ? r->tag : "", r->tag ? "] " : "", step, kind, detail);
    if (!p->active)
        return 0;
    if (h5_series_append(p->set.file, p->ev_step, &s, err, errlen) != 0 ||
        h5_series_append_str(p->set.file, p->ev_kind, kind, err, errlen) != 0 ||
        h5_series_append_str(p->set.file, p->ev_detail, detail, err, errlen) != 0)
        return -1;
    return probe_set_flush(&p->set, err, errlen); // the rows leading up to it reach the disk
}

int run_probes_eval(struct run *r, long step, double loss, char *err, size_t errlen)
{
    struct run_probes *p = r->probes;
    double s = (double)step;
    if (!p->active)
        return 0;
    if (h5_series_append(p->set.file, p->eval_step, &s, err, errlen) != 0 ||
        h5_series_append(p->set.file, p->eval_loss, &loss, err, errlen) != 0)
        return -1;
    return probe_set_flush(&p->set, err, errlen);
}

int run_probes_flush(struct run *r, char *err, size_t errlen)
{
    return r->probes->active ? probe_set_flush(&r->probes->set, err, errlen) : 0;
}

void run_probes_close(struct run *r)
{
    probe_set_free(&r->probes->set);
    free(r->probes->win_loss);
    free(r->probes->win_gnorm);
    free(r->probes->moe_last_seen);
    r->probes->win_loss = r->probes->win_gnorm = NULL;
    r->probes->moe_last_seen = NULL;
    free(r->probes->tensor_offset);
    free(r->probes->tensor_size);
    free(r->probes->tensor_muon);
    r->probes->tensor_offset = r->probes->tensor_size = NULL;
    r->probes->tensor_muon = NULL;
    r->probes->active = r->probes->collect = 0;
}
