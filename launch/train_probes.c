// Probes of a training run: what each one means is its registration's description, which is
// also stored in probes.h5. Rank 0 writes; attention and output probes describe rank 0's last
// micro-batch of the step, per-tensor probes the reduced gradients and the shared parameters.
#include "launch/train_probes.h"

#include <cblas.h>
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
#include "probes/stats.h"
#include "util/error.h"
#include "util/fpenv.h"

#ifndef CANARY_GIT_SHA
#define CANARY_GIT_SHA "unknown"
#endif
#ifndef CANARY_COMPILE_FLAGS
#define CANARY_COMPILE_FLAGS "unknown"
#endif

char *openblas_get_config(void);

static void register_all(struct run_probes *p, int muon, int moe, const struct model_config *mc)
{
    struct probe_set *s = &p->set;
    p->loss_total = probe_register(s, "loss/total", PROBE_SCALAR, 1,
                                   "training loss of the step: ce + z (+ aux), mean over the "
                                   "global batch");
    p->loss_ce = probe_register(s, "loss/ce", PROBE_SCALAR, 1, "cross-entropy part of the loss");
    p->loss_z = probe_register(s, "loss/z", PROBE_SCALAR, 1,
                               "output z-loss part: optim.z_loss * mean(log^2 Z)");
    p->loss_aux = probe_register(s, "loss/aux", PROBE_SCALAR, 1,
                                 "auxiliary (MoE) losses; 0 for dense models");
    p->lr = probe_register(s, "lr", PROBE_SCALAR, 1, "learning rate used by the step");
    p->grad_norm = probe_register(s, "grad/global_norm", PROBE_SCALAR, 1,
                                  "L2 norm of the whole gradient before clipping");
    p->clip = probe_register(s, "grad/clip_factor", PROBE_SCALAR, 1,
                             "factor applied by global-norm clipping (1 = not clipped)");
    p->tokens_per_s = probe_register(s, "tokens_per_s", PROBE_SCALAR, 1,
                                     "training throughput of the step, all ranks");
    p->attn_max_logit = probe_register(
        s, "attn/max_logit", PROBE_LAYER_HEADS, 0,
        "[layer, head] max |q.k|/sqrt(d_qk) over causal pairs (Wortsman's attention-logit "
        "growth; d_qk = d_h, or d_h + rope_dim with MLA)");
    p->attn_entropy = probe_register(
        s, "attn/entropy", PROBE_LAYER_HEADS, 0,
        "[layer, head] mean attention entropy -sum p log p over query rows (nats; entropy "
        "collapse precedes instability)");
    p->attn_q_rms = probe_register(s, "attn/q_rms", PROBE_LAYER_HEADS, 0,
                                   "[layer, head] RMS of q as attended (after qk-norm and RoPE)");
    p->attn_k_rms = probe_register(s, "attn/k_rms", PROBE_LAYER_HEADS, 0,
                                   "[layer, head] RMS of k as attended (after qk-norm and RoPE)");
    p->logz_mean = probe_register(s, "output/logz_mean", PROBE_SCALAR, 1,
                                  "mean over tokens of log Z of the output softmax (drifts "
                                  "negative before output-logit divergence)");
    p->logz_std = probe_register(s, "output/logz_std", PROBE_SCALAR, 1,
                                 "standard deviation over tokens of log Z");
    p->logz_max = probe_register(s, "output/logz_max", PROBE_SCALAR, 1, "max over tokens of log Z");
    p->logit_rms =
        probe_register(s, "output/logit_rms", PROBE_SCALAR, 1, "RMS of the output logits");
    p->resid_rms = probe_register(s, "resid/rms", PROBE_LAYERS, 0,
                                  "[layer] RMS of the residual stream after each block");
    p->grad_rms = probe_register(s, "grad/rms", PROBE_TENSORS, 0,
                                 "[tensor] gradient RMS before clipping (names: /tensors/names; "
                                 "compare with AdamW eps)");
    p->param_rms =
        probe_register(s, "param/rms", PROBE_TENSORS, 0, "[tensor] parameter RMS after the update");
    p->update_rms = probe_register(s, "update/rms", PROBE_TENSORS, 0,
                                   "[tensor] RMS of the update applied at this step");
    p->adam_sqrt_v_rms = probe_register(s, "adam/sqrt_v_rms", PROBE_TENSORS, 0,
                                        "[tensor] RMS of sqrt(v_hat), AdamW's bias-corrected "
                                        "second moment (0 for Muon's matrices)");
    p->adam_eps_frac = probe_register(s, "adam/eps_frac", PROBE_TENSORS, 0,
                                      "[tensor] fraction of entries with sqrt(v_hat) < eps: "
                                      "where eps, not the gradient, sets the update size");
    p->kv_latent_rms = p->q_latent_rms = -1;
    if (mc->attention == ATTN_MLA) {
        p->kv_latent_rms = probe_register(s, "attn/kv_latent_rms", PROBE_LAYERS, 0,
                                          "[layer] MLA: RMS of the KV latent c_kv before its "
                                          "RMSNorm");
        if (mc->q_rank > 0)
            p->q_latent_rms = probe_register(s, "attn/q_latent_rms", PROBE_LAYERS, 0,
                                             "[layer] MLA: RMS of the query latent c_q before "
                                             "its RMSNorm");
    }
    p->loss_balance = p->loss_router_z = p->moe_load = p->moe_dropped = -1;
    p->moe_router_z = p->moe_entropy = p->moe_dead = -1;
    if (moe) {
        p->loss_balance = probe_register(s, "loss/balance", PROBE_SCALAR, 1,
                                         "MoE load-balancing loss, scaled: optim.balance_loss * "
                                         "experts * sum_i f_i P_i, mean over MoE blocks");
        p->loss_router_z = probe_register(s, "loss/router_z", PROBE_SCALAR, 1,
                                          "MoE router z-loss, scaled: optim.router_z_loss * "
                                          "mean(logsumexp(router logits)^2), mean over MoE blocks");
        p->moe_load = probe_register(s, "moe/load", PROBE_MOE_EXPERTS, 0,
                                     "[MoE block, expert] fraction of the token-expert choices "
                                     "that went to the expert, before capacity (1/experts = even)");
        p->moe_dropped = probe_register(s, "moe/dropped", PROBE_MOE_EXPERTS, 0,
                                        "[MoE block, expert] fraction of the expert's choices "
                                        "dropped by the capacity");
        p->moe_router_z = probe_register(s, "moe/router_z", PROBE_MOE_LAYERS, 0,
                                         "[MoE block] mean over tokens of logsumexp(router "
                                         "logits)^2 (unscaled)");
        p->moe_entropy = probe_register(s, "moe/router_entropy", PROBE_MOE_LAYERS, 0,
                                        "[MoE block] mean over tokens of the router softmax "
                                        "entropy (nats; log(experts) = uniform)");
        p->moe_dead = probe_register(s, "moe/dead_experts", PROBE_MOE_LAYERS, 0,
                                     "[MoE block] experts with no token over the last "
                                     "probes.dead_window steps");
    }
    p->muon_ortho = p->muon_momentum_rms = -1;
    if (muon) {
        p->muon_ortho = probe_register(s, "muon/ortho_err", PROBE_TENSORS, 0,
                                       "[tensor] Muon: |O O^T - I|_F / sqrt(min(rows, cols)) of "
                                       "the Newton-Schulz output (0 for AdamW's tensors)");
        p->muon_momentum_rms = probe_register(s, "muon/momentum_rms", PROBE_TENSORS, 0,
                                              "[tensor] Muon: RMS of the momentum buffer (0 for "
                                              "AdamW's tensors)");
    }
}

int run_h5_provenance(struct h5file *f, const struct run *r, char *err, size_t errlen)
{
    const struct config *c = &r->cfg;
    char buf[64], host[256] = "unknown", h5v[64], mpi[512], blas[512];
    time_t now = time(NULL);
    struct tm tm;
    gethostname(host, sizeof(host));
    host[sizeof(host) - 1] = '\0';
    gmtime_r(&now, &tm);
    strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
    h5_version(h5v, sizeof(h5v));
    dist_library_version(mpi, sizeof(mpi));
    blas_core_describe(blas, sizeof(blas));
    const char *prov = "/provenance";
    if (h5_attr_str(f, prov, "git_sha", CANARY_GIT_SHA, err, errlen) ||
        h5_attr_str(f, prov, "compiler", "gcc " __VERSION__, err, errlen) ||
        h5_attr_str(f, prov, "compile_flags", CANARY_COMPILE_FLAGS, err, errlen) ||
        h5_attr_str(f, prov, "hdf5_version", h5v, err, errlen) ||
        h5_attr_str(f, prov, "openblas", openblas_get_config(), err, errlen) ||
        h5_attr_str(f, prov, "blas_core", blas_core_name(), err, errlen) ||
        h5_attr_str(f, prov, "blas_core_reason", blas, err, errlen) ||
        h5_attr_str(f, prov, "subnormals",
                    fpenv_flushing() ? "flushed to zero (FTZ and DAZ on every computing thread)"
                                     : "computed in full (no flush control on this CPU)",
                    err, errlen) ||
        h5_attr_str(f, prov, "mpi", mpi, err, errlen) ||
        h5_attr_str(f, prov, "host", host, err, errlen) ||
        h5_attr_str(f, prov, "start_time_utc", buf, err, errlen) ||
        h5_attr_i64(f, prov, "world_size", r->dist->size, err, errlen) ||
        h5_attr_i64(f, prov, "threads_per_rank", c->train.threads, err, errlen) ||
        h5_attr_i64(f, prov, "seed", c->train.seed, err, errlen))
        return -1;
    return 0;
}

int run_h5_config(struct h5file *f, const struct config *c, char *err, size_t errlen)
{
    for (int i = 0; i < config_key_count; i++) {
        const struct config_key *k = &config_keys[i];
        char name[160], value[CONFIG_PATH_MAX + 32];
        const char *field = (const char *)c + k->offset;
        snprintf(name, sizeof(name), "%s.%s", k->section, k->key);
        int rc = 0;
        if (k->type == CT_INT || k->type == CT_BOOL)
            rc = h5_attr_i64(f, "/config", name, *(const int *)field, err, errlen);
        else if (k->type == CT_I64)
            rc = h5_attr_i64(f, "/config", name, *(const int64_t *)field, err, errlen);
        else if (k->type == CT_DOUBLE)
            rc = h5_attr_f64(f, "/config", name, *(const double *)field, err, errlen);
        else if (config_get_string(c, name, value, sizeof(value)) == 0)
            rc = h5_attr_str(f, "/config", name, value, err, errlen);
        if (rc)
            return -1;
    }
    // The same config as INI text, so a checkpoint alone can rebuild the run.
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    if (!mem) {
        snprintf(err, errlen, "write config text: out of memory");
        return -1;
    }
    config_write(c, mem);
    fclose(mem);
    int rc = h5_attr_str(f, "/config", "ini", text, err, errlen);
    free(text);
    return rc;
}

static int write_attributes(struct run *r, char *err, size_t errlen)
{
    struct h5file *f = r->probes.set.file;
    if (run_h5_provenance(f, r, err, errlen) || run_h5_config(f, &r->cfg, err, errlen) ||
        h5_attr_str(f, "/", "description",
                    "canary probes: per-step series (rows aligned with /step), probe-cadence "
                    "series (rows aligned with /probe_step), /eval (the row at step 0 is l0, the "
                    "loss at initialisation), /tensors/names for per-tensor series; every "
                    "dataset has a description attribute",
                    err, errlen))
        return -1;
    int n = r->model.table.n;
    const char **names = xcalloc((size_t)n, sizeof(*names));
    for (int i = 0; i < n; i++)
        names[i] = r->model.table.t[i].name;
    int rc = h5_write_strings(f, "/tensors/names", names, n, err, errlen);
    free(names);
    return rc;
}

// Drops the rows of a table (a step column and its companions) after `step`.
static int truncate_table(struct h5file *f, int step_series, const int *others, int n, long step,
                          char *err, size_t errlen)
{
    long rows = h5_series_rows(f, step_series);
    double s = 0.0;
    while (rows > 0) {
        if (h5_series_read_row(f, step_series, rows - 1, &s, err, errlen) != 0)
            return -1;
        if ((long)s <= step)
            break;
        rows--;
    }
    if (h5_series_truncate(f, step_series, rows, err, errlen) != 0)
        return -1;
    for (int i = 0; i < n; i++)
        if (h5_series_truncate(f, others[i], rows, err, errlen) != 0)
            return -1;
    return 0;
}

static int truncate_eval(struct run_probes *p, long step, char *err, size_t errlen)
{
    int eval[1] = {p->eval_loss}, lr[1] = {p->lr_loss}, ev[2] = {p->ev_kind, p->ev_detail};
    struct h5file *f = p->set.file;
    return truncate_table(f, p->eval_step, eval, 1, step, err, errlen) ||
                   truncate_table(f, p->lr_step, lr, 1, step, err, errlen) ||
                   truncate_table(f, p->ev_step, ev, 2, step, err, errlen)
               ? -1
               : 0;
}

// After a resume: l0 from the /eval row at step 0, and the spike windows and threshold state from
// the rows up to the checkpoint, so events continue as in an uninterrupted run.
static int restore_state(struct run *r, char *err, size_t errlen)
{
    struct run_probes *p = &r->probes;
    struct h5file *f = p->set.file;
    double v = 0.0, w = 0.0;
    if (h5_series_rows(f, p->eval_step) > 0 &&
        h5_series_read_row(f, p->eval_step, 0, &v, err, errlen) == 0 && v == 0.0 &&
        h5_series_read_row(f, p->eval_loss, 0, &w, err, errlen) == 0)
        r->l0 = w;
    long rows = h5_series_rows(f, p->set.p[p->loss_total].series);
    int win = r->cfg.probes.spike_window;
    long first = rows > win ? rows - win : 0;
    for (long i = first; i < rows; i++) {
        if (h5_series_read_row(f, p->set.p[p->loss_total].series, i, &v, err, errlen) != 0 ||
            h5_series_read_row(f, p->set.p[p->grad_norm].series, i, &w, err, errlen) != 0)
            return -1;
        if (!isfinite(v) || !isfinite(w))
            continue; // skipped steps stay out of the windows, as in the run
        p->win_loss[p->win_pos] = v;
        p->win_gnorm[p->win_pos] = w;
        p->win_pos = (p->win_pos + 1) % win;
        p->win_n += p->win_n < win;
    }
    long prows = h5_series_rows(f, p->set.p[p->attn_max_logit].series);
    if (prows > 0) {
        int n = r->cfg.model.layers * r->cfg.model.heads;
        double *row = xcalloc((size_t)n, sizeof(double));
        int rc =
            h5_series_read_row(f, p->set.p[p->attn_max_logit].series, prows - 1, row, err, errlen);
        for (int i = 0; rc == 0 && i < n; i++)
            p->above_threshold |= row[i] > r->cfg.probes.logit_threshold;
        free(row);
        if (rc != 0)
            return -1;
    }
    return 0;
}

int run_probes_open(struct run *r, const char *out_dir, char *err, size_t errlen)
{
    struct run_probes *p = &r->probes;
    char path[CONFIG_PATH_MAX + 32];
    int dims[1], four[1] = {4};
    probe_set_init(&p->set, r->cfg.model.layers, r->cfg.model.heads, r->model.table.n,
                   r->cfg.probes.every);
    probe_set_moe(&p->set, r->model.moe_layers, r->cfg.model.experts);
    register_all(p, r->muon_on, r->model.moe_layers > 0, &r->cfg.model);
    free(p->moe_last_seen);
    p->moe_last_seen = NULL;
    if (r->model.moe_layers > 0) { // the window goes on from a checkpoint, else starts now
        size_t n = (size_t)r->model.moe_layers * r->cfg.model.experts;
        p->moe_last_seen = xcalloc(n, sizeof(long));
        for (size_t i = 0; i < n; i++)
            p->moe_last_seen[i] = r->step - (r->moe_age ? (long)r->moe_age[i] : 0);
        free(r->moe_age);
        r->moe_age = NULL;
    }
    p->active = r->dist->rank == 0 && r->cfg.probes.enabled;
    p->win_loss = xcalloc((size_t)r->cfg.probes.spike_window, sizeof(double));
    p->win_gnorm = xcalloc((size_t)r->cfg.probes.spike_window, sizeof(double));
    p->win_n = p->win_pos = p->above_threshold = 0;
    if (!p->active)
        return 0;
    snprintf(path, sizeof(path), "%s/probes.h5", out_dir);
    if (r->step > 0 && access(path, F_OK) == 0) {
        // Resuming: keep the rows of steps up to the checkpoint, drop the rest.
        if (probe_set_reopen(&p->set, path, r->step, err, errlen) != 0 ||
            h5_series_open(p->set.file, "/eval/step", &p->eval_step, err, errlen) != 0 ||
            h5_series_open(p->set.file, "/eval/loss", &p->eval_loss, err, errlen) != 0 ||
            h5_series_open(p->set.file, "/lr_probe/step", &p->lr_step, err, errlen) != 0 ||
            h5_series_open(p->set.file, "/lr_probe/loss", &p->lr_loss, err, errlen) != 0 ||
            h5_series_open(p->set.file, "/events/step", &p->ev_step, err, errlen) != 0 ||
            h5_series_open(p->set.file, "/events/kind", &p->ev_kind, err, errlen) != 0 ||
            h5_series_open(p->set.file, "/events/detail", &p->ev_detail, err, errlen) != 0 ||
            truncate_eval(p, r->step, err, errlen) != 0 ||
            run_h5_config(p->set.file, &r->cfg, err, errlen) != 0 ||
            restore_state(r, err, errlen) != 0 || probe_set_start(&p->set, err, errlen) != 0) {
            probe_set_free(&p->set);
            p->active = 0;
            return -1;
        }
        return 0;
    }
    if (probe_set_create(&p->set, path, err, errlen) != 0 ||
        h5_series_create(p->set.file, "/eval/step", 0, dims, "step of each evaluation",
                         &p->eval_step, err, errlen) != 0 ||
        h5_series_create(p->set.file, "/eval/loss", 0, dims,
                         "held-out loss (ce + z) on the fixed evaluation batches; the row at "
                         "step 0 is l0",
                         &p->eval_loss, err, errlen) != 0 ||
        h5_series_create(p->set.file, "/lr_probe/step", 0, dims,
                         "step of each local LR-sensitivity probe", &p->lr_step, err,
                         errlen) != 0 ||
        h5_series_create(p->set.file, "/lr_probe/loss", 1, four,
                         "[f] loss of the fixed probe batch (held-out sequences 0..micro_batch-1) "
                         "at theta - f * update for f = 0, 1/2, 1, 2: the step's update with the "
                         "learning rate scaled by f, weights untouched",
                         &p->lr_loss, err, errlen) != 0 ||
        h5_series_create(p->set.file, "/events/step", 0, dims, "step of each event", &p->ev_step,
                         err, errlen) != 0 ||
        h5_series_create_str(p->set.file, "/events/kind", "non-finite, spike or threshold",
                             &p->ev_kind, err, errlen) != 0 ||
        h5_series_create_str(p->set.file, "/events/detail", "what happened, in words",
                             &p->ev_detail, err, errlen) != 0 ||
        write_attributes(r, err, errlen) != 0 || probe_set_start(&p->set, err, errlen) != 0) {
        probe_set_free(&p->set);
        p->active = 0;
        return -1;
    }
    return 0;
}

// Attention, output and residual rows from the activations of the last micro-batch.
void run_probes_moe_seen(struct run *r)
{
    const struct model *m = &r->model;
    int E = m->cfg.experts, i = 0;
    if (!r->probes.moe_last_seen)
        return;
    for (int l = 0; l < m->cfg.layers; l++) {
        if (!m->blocks[l].moe)
            continue;
        for (int e = 0; e < E; e++)
            if (m->moe_counts[(size_t)l * 2 * E + e] > 0)
                r->probes.moe_last_seen[(size_t)i * E + e] = r->step + 1;
        i++;
    }
}

// MoE rows (probe steps) from the last micro-batch's routing.
static void fill_moe_rows(struct run *r)
{
    struct run_probes *p = &r->probes;
    const struct model *m = &r->model;
    int E = m->cfg.experts, i = 0;
    double pairs = (double)r->micro_batch * m->cfg.seq_len * m->cfg.top_k;
    double *load = probe_row(&p->set, p->moe_load), *drop = probe_row(&p->set, p->moe_dropped);
    for (int l = 0; l < m->cfg.layers; l++) {
        if (!m->blocks[l].moe)
            continue;
        const double *counts = m->moe_counts + (size_t)l * 2 * E;
        int dead = 0;
        for (int e = 0; e < E; e++) {
            load[i * E + e] = counts[e] / pairs;
            drop[i * E + e] = counts[e] > 0 ? 1.0 - counts[E + e] / counts[e] : 0.0;
            dead += p->moe_last_seen[(size_t)i * E + e] <= r->step + 1 - r->cfg.probes.dead_window;
        }
        probe_row(&p->set, p->moe_router_z)[i] = m->moe_stats[l].z;
        probe_row(&p->set, p->moe_entropy)[i] = m->moe_stats[l].entropy;
        probe_row(&p->set, p->moe_dead)[i] = dead;
        i++;
    }
}

void run_probes_fill_model(struct run *r)
{
    struct run_probes *p = &r->probes;
    const struct model *m = &r->model;
    const struct model_config *c = &m->cfg;
    int B = r->micro_batch, H = c->heads, T = c->seq_len, L = c->layers, hd = m->dqk;
    double *mx = probe_row(&p->set, p->attn_max_logit), *ent = probe_row(&p->set, p->attn_entropy);
    double *qr = probe_row(&p->set, p->attn_q_rms), *kr = probe_row(&p->set, p->attn_k_rms);
    for (int l = 0; l < L; l++) {
        const float *st = m->acts.attn_stats + (size_t)l * B * H * 2;
        const struct block_acts *a = &m->acts.blocks[l];
        for (int h = 0; h < H; h++) {
            double best = 0.0, esum = 0.0, qs = 0.0, ks = 0.0;
            for (int b = 0; b < B; b++) {
                size_t bh = (size_t)b * H + h;
                best = fmax(best, st[2 * bh]);
                esum += st[2 * bh + 1];
                qs += stats_sumsq(a->q + bh * T * hd, (size_t)T * hd);
                ks += stats_sumsq(a->k + bh * T * hd, (size_t)T * hd);
            }
            mx[l * H + h] = best;
            ent[l * H + h] = esum / ((double)B * T);
            qr[l * H + h] = stats_rms(qs, (double)B * T * hd);
            kr[l * H + h] = stats_rms(ks, (double)B * T * hd);
        }
        if (p->kv_latent_rms >= 0) { // MLA: the latents before their norms
            size_t n = (size_t)B * T;
            probe_row(&p->set, p->kv_latent_rms)[l] =
                stats_rms(stats_sumsq(a->ckv, n * c->kv_rank), (double)n * c->kv_rank);
            if (p->q_latent_rms >= 0)
                probe_row(&p->set, p->q_latent_rms)[l] =
                    stats_rms(stats_sumsq(a->cq, n * c->q_rank), (double)n * c->q_rank);
        }
        const float *x_out = l + 1 < L ? m->acts.blocks[l + 1].x_in : m->acts.x_final;
        probe_row(&p->set, p->resid_rms)[l] =
            stats_rms(stats_sumsq(x_out, (size_t)B * T * c->dim), (double)B * T * c->dim);
    }
    if (p->moe_load >= 0)
        fill_moe_rows(r);
}

// Output rows (every step) from the loss's log Z per token and the logits' Σ².
static void fill_output_rows(struct run *r)
{
    struct run_probes *p = &r->probes;
    size_t n = (size_t)r->micro_batch * r->cfg.model.seq_len;
    struct stats_moments mo;
    double zmax = -INFINITY;
    stats_moments_of(&mo, r->logz, n);
    for (size_t i = 0; i < n; i++)
        zmax = fmax(zmax, r->logz[i]);
    probe_row(&p->set, p->logz_mean)[0] = mo.mean;
    probe_row(&p->set, p->logz_std)[0] = stats_moments_std(&mo);
    probe_row(&p->set, p->logz_max)[0] = zmax;
    probe_row(&p->set, p->logit_rms)[0] = stats_rms(r->logit_sumsq, (double)n * r->cfg.model.vocab);
}

// Per-tensor rows from the reduced gradient (Σg² of the step), the parameters, the update and
// AdamW's second moment.
static void fill_tensor_rows(struct run *r)
{
    struct run_probes *p = &r->probes;
    const struct tensor_table *tt = &r->model.table;
    double bc2 = 1.0 - pow(r->cfg.optim.beta2, (double)r->adamw.t);
    double eps = r->cfg.optim.eps;
    for (int i = 0; i < tt->n; i++) {
        const struct tensor *t = &tt->t[i];
        const float *v = r->adamw.v + t->offset;
        // sqrt(v̂) < ε  ⇔  v < ε²·(1 − β₂ᵗ): no square root or division per entry
        double n = (double)t->size;
        float vsmall = (float)(eps * eps * bc2);
        double vs = stats_sum(v, t->size) / bc2;
        double small = (double)stats_count_below(v, t->size, vsmall);
        probe_row(&p->set, p->grad_rms)[i] = stats_rms(r->tensor_sumsq[i], n);
        probe_row(&p->set, p->param_rms)[i] =
            stats_rms(stats_sumsq(r->params + t->offset, t->size), n);
        probe_row(&p->set, p->update_rms)[i] =
            stats_rms(stats_sumsq(r->update + t->offset, t->size), n);
        int adam = !(r->muon_on && r->muon_owner[i] >= 0); // AdamW's group only
        probe_row(&p->set, p->adam_sqrt_v_rms)[i] = adam ? sqrt(vs / n) : 0.0;
        probe_row(&p->set, p->adam_eps_frac)[i] = adam ? (double)small / n : 0.0;
        if (p->muon_ortho >= 0) {
            int m = r->muon_owner[i] >= 0;
            probe_row(&p->set, p->muon_ortho)[i] = m ? r->muon_ortho[i] : 0.0;
            probe_row(&p->set, p->muon_momentum_rms)[i] =
                m ? stats_rms(stats_sumsq(r->muon.momentum + t->offset, t->size), n) : 0.0;
        }
    }
}

static int check_events(struct run *r, const struct step_result *res, long step, char *err,
                        size_t errlen)
{
    struct run_probes *p = &r->probes;
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
        const double *mx = probe_row(&p->set, p->attn_max_logit);
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
    struct run_probes *p = &r->probes;
    long step = r->step; // the step just taken, counted from 1
    if (!p->active)
        return 0;
    probe_row(&p->set, p->loss_total)[0] = res->loss.total;
    probe_row(&p->set, p->loss_ce)[0] = res->loss.ce;
    probe_row(&p->set, p->loss_z)[0] = res->loss.z;
    probe_row(&p->set, p->loss_aux)[0] = res->loss.aux;
    if (p->loss_balance >= 0) {
        probe_row(&p->set, p->loss_balance)[0] = res->loss.balance;
        probe_row(&p->set, p->loss_router_z)[0] = res->loss.router_z;
    }
    probe_row(&p->set, p->lr)[0] = res->lr;
    probe_row(&p->set, p->grad_norm)[0] = res->grad_norm;
    probe_row(&p->set, p->clip)[0] = res->clip_factor;
    probe_row(&p->set, p->tokens_per_s)[0] = tokens_per_s;
    fill_output_rows(r);
    if (probe_set_due(&p->set, step))
        fill_tensor_rows(r); // the model rows were filled inside the step

    if (probe_set_write(&p->set, step, err, errlen) != 0)
        return -1;
    if (r->lr_probe_due) {
        double s = (double)step;
        if (h5_series_append(p->set.file, p->lr_step, &s, err, errlen) != 0 ||
            h5_series_append(p->set.file, p->lr_loss, r->lr_probe_loss, err, errlen) != 0)
            return -1;
    }
    if (check_events(r, res, step, err, errlen) != 0)
        return -1;
    if (step % r->cfg.probes.flush_every == 0)
        return probe_set_flush(&p->set, err, errlen);
    return 0;
}

int run_probes_event(struct run *r, long step, const char *kind, const char *detail, char *err,
                     size_t errlen)
{
    struct run_probes *p = &r->probes;
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
    struct run_probes *p = &r->probes;
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
    return r->probes.active ? probe_set_flush(&r->probes.set, err, errlen) : 0;
}

void run_probes_close(struct run *r)
{
    probe_set_free(&r->probes.set);
    free(r->probes.win_loss);
    free(r->probes.win_gnorm);
    free(r->probes.moe_last_seen);
    r->probes.win_loss = r->probes.win_gnorm = NULL;
    r->probes.moe_last_seen = NULL;
    r->probes.active = 0;
}
