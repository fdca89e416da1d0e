// Opening a run's probes.h5: the probe set, provenance and config attributes, the tensor
// table, and on resume the rows up to the checkpoint (the rows each step writes: train_probes.c).
// What each probe means is its registration's description, which is also stored in probes.h5. Rank
// 0 writes. Attention, output, residual and MoE probes are statistics of the whole global batch:
// every micro-batch of every rank contributes a record (probes/leaf.h), folded in global order
// (train.c, step_loss). Per-tensor probes read the reduced gradient and the parameters, which every
// rank shares.
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

#ifndef CANARY_GIT_SHA
#define CANARY_GIT_SHA "unknown"
#endif
#ifndef CANARY_COMPILE_FLAGS
#define CANARY_COMPILE_FLAGS "unknown"
#endif

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
    char prec[1280];
    run_backend_describe(&r->cfg, &r->backend, &r->model, prec, sizeof(prec));
    const char *prov = "/provenance";
    if (h5_attr_str(f, prov, "git_sha", CANARY_GIT_SHA, err, errlen) ||
        h5_attr_str(f, prov, "compiler", "gcc " __VERSION__, err, errlen) ||
        h5_attr_str(f, prov, "compile_flags", CANARY_COMPILE_FLAGS, err, errlen) ||
        h5_attr_str(f, prov, "hdf5_version", h5v, err, errlen) ||
        h5_attr_str(f, prov, "openblas", matmul_blas_config(), err, errlen) ||
        h5_attr_str(f, prov, "blas_core", blas_core_name(), err, errlen) ||
        h5_attr_str(f, prov, "blas_core_reason", blas, err, errlen) ||
        h5_attr_str(f, prov, "precision", prec, err, errlen) ||
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
    struct h5file *f = r->probes->set.file;
    if (run_h5_provenance(f, r, err, errlen) || run_h5_config(f, &r->cfg, err, errlen) ||
        h5_attr_str(f, "/", "description",
                    "canary probes: per-step series (rows aligned with /step), probe-cadence "
                    "series (rows aligned with /probe_step), /eval (the row at step 0 is l0, the "
                    "loss at initialisation), /tensors for per-tensor series; every series has "
                    "HDF5 dimension scales (/step or /probe_step, /axes/*, /tensors/names) and "
                    "a description attribute; attention, output, residual and MoE series are "
                    "statistics of the whole global batch (all micro-batches of all ranks)",
                    err, errlen))
        return -1;
    // /tensors: what analysis needs to count parameters and group them exactly
    const struct tensor_table *tt = &r->model.table;
    int n = tt->n;
    const char **names = xcalloc((size_t)n, sizeof(*names));
    const char **kinds = xcalloc((size_t)n, sizeof(*kinds));
    const char **opts = xcalloc((size_t)n, sizeof(*opts));
    int32_t *shape = xcalloc(2 * (size_t)n, sizeof(int32_t));
    float *lr_scale = xcalloc((size_t)n, sizeof(float));
    int *moe_blocks = xcalloc((size_t)r->model.moe_layers + 1, sizeof(int));
    for (int i = 0; i < n; i++) {
        names[i] = tt->t[i].name;
        kinds[i] = tensor_kind_name(tt->t[i].kind);
        opts[i] = muon_shards_owns(r->muon, i) ? "muon" : "adamw";
        shape[2 * i] = tt->t[i].rows, shape[2 * i + 1] = tt->t[i].cols;
        lr_scale[i] = muon_shards_owns(r->muon, i) ? 1.0f : (float)tt->t[i].lr_scale;
    }
    for (int l = 0, i = 0; l < r->cfg.model.layers; l++)
        if (r->model.blocks[l].moe)
            moe_blocks[i++] = l;
    size_t dims[2] = {(size_t)n, 2}, ndims[1] = {(size_t)n};
    int rc = h5_write_strings(f, "/tensors/names", names, n, err, errlen) ||
             h5_write_strings(f, "/tensors/kind", kinds, n, err, errlen) ||
             h5_write_strings(f, "/tensors/optimizer", opts, n, err, errlen) ||
             h5_write_i32(f, "/tensors/shape", 2, dims, shape, err, errlen) ||
             h5_write_f32(f, "/tensors/lr_scale", 1, ndims, lr_scale, err, errlen) ||
             h5_attr_str(f, "/tensors", "description",
                         "one entry per tensor of the model, in the order of the per-tensor "
                         "series: names, shape [rows, cols] (a gain is [1, n]), kind and the "
                         "optimizer that updates it (adamw or muon), its learning-rate multiplier",
                         err, errlen) ||
             h5_attr_str(f, "/tensors/names", "description",
                         "dotted tensor name, PyTorch-like; the tensor axis", err, errlen) ||
             h5_attr_str(f, "/tensors/shape", "description",
                         "[rows, cols] of each tensor (row-major [out, in])", err, errlen) ||
             h5_attr_str(f, "/tensors/kind", "description",
                         "embedding, pos_embedding, matrix, gain, head, expert or router", err,
                         errlen) ||
             h5_attr_str(f, "/tensors/optimizer", "description",
                         "the optimizer that updates the tensor: adamw or muon", err, errlen) ||
             h5_attr_str(f, "/tensors/lr_scale", "description",
                         "the tensor's learning rate as a multiple of the schedule's: muParam's "
                         "base_fan_in / fan_in for AdamW's hidden matrices (model.mup), else 1 "
                         "(Muon's matrices: Muon's own shape factor, not included)",
                         err, errlen) ||
             probe_set_scales(&r->probes->set, "/tensors/names", moe_blocks, err, errlen);
    free(names);
    free(kinds);
    free(opts);
    free(shape);
    free(lr_scale);
    free(moe_blocks);
    return rc ? -1 : 0;
}

// The step columns of /eval, /lr_probe and /events as the dimension scales of their companions,
// and the LR probe's factors as the second axis of /lr_probe/loss.
static int table_scales(struct run_probes *p, char *err, size_t errlen)
{
    struct h5file *f = p->set.file;
    const float factors[4] = {0.0f, 0.5f, 1.0f, 2.0f};
    size_t four[1] = {4};
    return h5_write_f32(f, "/axes/lr_factor", 1, four, factors, err, errlen) ||
                   h5_attr_str(f, "/axes/lr_factor", "description",
                               "the LR probe's factors f of the update", err, errlen) ||
                   h5_dim_scale(f, "/axes/lr_factor", "lr_factor", err, errlen) ||
                   h5_dim_scale(f, "/eval/step", "eval_step", err, errlen) ||
                   h5_dim_scale(f, "/lr_probe/step", "lr_probe_step", err, errlen) ||
                   h5_dim_scale(f, "/events/step", "event_step", err, errlen) ||
                   h5_dim_attach(f, "/eval/loss", 0, "/eval/step", err, errlen) ||
                   h5_dim_attach(f, "/lr_probe/loss", 0, "/lr_probe/step", err, errlen) ||
                   h5_dim_attach(f, "/lr_probe/loss", 1, "/axes/lr_factor", err, errlen) ||
                   h5_dim_attach(f, "/events/kind", 0, "/events/step", err, errlen) ||
                   h5_dim_attach(f, "/events/detail", 0, "/events/step", err, errlen)
               ? -1
               : 0;
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
    struct run_probes *p = r->probes;
    struct h5file *f = p->set.file;
    double v = 0.0, w = 0.0;
    if (h5_series_rows(f, p->eval_step) > 0 &&
        h5_series_read_row(f, p->eval_step, 0, &v, err, errlen) == 0 && v == 0.0 &&
        h5_series_read_row(f, p->eval_loss, 0, &w, err, errlen) == 0)
        r->l0 = w;
    long rows = h5_series_rows(f, p->set.p[p->set.slot[PROBE_LOSS_TOTAL]].series);
    int win = r->cfg.probes.spike_window;
    long first = rows > win ? rows - win : 0;
    for (long i = first; i < rows; i++) {
        if (h5_series_read_row(f, p->set.p[p->set.slot[PROBE_LOSS_TOTAL]].series, i, &v, err,
                               errlen) != 0 ||
            h5_series_read_row(f, p->set.p[p->set.slot[PROBE_GRAD_NORM]].series, i, &w, err,
                               errlen) != 0)
            return -1;
        if (!isfinite(v) || !isfinite(w))
            continue; // skipped steps stay out of the windows, as in the run
        p->win_loss[p->win_pos] = v;
        p->win_gnorm[p->win_pos] = w;
        p->win_pos = (p->win_pos + 1) % win;
        p->win_n += p->win_n < win;
    }
    long prows = h5_series_rows(f, p->set.p[p->set.slot[PROBE_ATTN_MAX_LOGIT]].series);
    if (prows > 0) {
        int n = r->cfg.model.layers * r->cfg.model.heads;
        double *row = xcalloc((size_t)n, sizeof(double));
        int rc = h5_series_read_row(f, p->set.p[p->set.slot[PROBE_ATTN_MAX_LOGIT]].series,
                                    prows - 1, row, err, errlen);
        for (int i = 0; rc == 0 && i < n; i++)
            p->above_threshold |= row[i] > r->cfg.probes.logit_threshold;
        free(row);
        if (rc != 0)
            return -1;
    }
    return 0;
}

// The probe set, the MoE dead-expert window (continued from a checkpoint, else starting now),
// the tensor table as plain arrays for probes/, and the spike windows: every rank.
static void probes_setup(struct run *r)
{
    struct run_probes *p = r->probes;
    const struct model_config *mc = &r->cfg.model;
    probe_set_init(&p->set, mc->layers, mc->heads, r->model.table.n, r->cfg.probes.every);
    probe_set_moe(&p->set, r->model.moe_layers, mc->experts);
    struct probe_features feat = {
        mc->attention == ATTN_MLA,     mc->attention == ATTN_MLA && mc->q_rank > 0,
        r->model.moe_layers > 0,       r->muon != NULL,
        mc->attn_softcap > 0.0,        mc->final_softcap > 0.0,
        r->cfg.optim.qk_clip > 0.0,    r->cfg.optim.stable_adamw,
        r->cfg.optim.skip_sigma > 0.0, r->cfg.optim.update_clip_sigma > 0.0};
    probe_set_register(&p->set, &feat);
    free(p->moe_last_seen);
    p->moe_last_seen = NULL;
    if (r->model.moe_layers > 0) {
        size_t n = (size_t)r->model.moe_layers * mc->experts;
        p->moe_last_seen = xcalloc(n, sizeof(long));
        for (size_t i = 0; i < n; i++)
            p->moe_last_seen[i] = r->step - (r->moe_age ? (long)r->moe_age[i] : 0);
        free(r->moe_age);
        r->moe_age = NULL;
    }
    p->active = r->dist->rank == 0 && r->cfg.probes.enabled;
    p->collect = r->cfg.probes.enabled;
    free(p->tensor_offset);
    free(p->tensor_size);
    free(p->tensor_muon);
    p->tensor_offset = xcalloc((size_t)r->model.table.n, sizeof(size_t));
    p->tensor_size = xcalloc((size_t)r->model.table.n, sizeof(size_t));
    p->tensor_muon = xcalloc((size_t)r->model.table.n, sizeof(int));
    for (int i = 0; i < r->model.table.n; i++) {
        p->tensor_offset[i] = r->model.table.t[i].offset;
        p->tensor_size[i] = r->model.table.t[i].size;
        p->tensor_muon[i] = muon_shards_owns(r->muon, i);
    }
    p->win_loss = xcalloc((size_t)r->cfg.probes.spike_window, sizeof(double));
    p->win_gnorm = xcalloc((size_t)r->cfg.probes.spike_window, sizeof(double));
    p->win_n = p->win_pos = p->above_threshold = 0;
}

// Resuming (rank 0): keep the rows of steps up to the checkpoint, drop the rest.
static int probes_reopen(struct run *r, const char *path, char *err, size_t errlen)
{
    struct run_probes *p = r->probes;
    struct h5file *f;
    if (probe_set_reopen(&p->set, path, r->step, err, errlen) != 0)
        return -1;
    f = p->set.file;
    return h5_series_open(f, "/eval/step", &p->eval_step, err, errlen) != 0 ||
                   h5_series_open(f, "/eval/loss", &p->eval_loss, err, errlen) != 0 ||
                   h5_series_open(f, "/lr_probe/step", &p->lr_step, err, errlen) != 0 ||
                   h5_series_open(f, "/lr_probe/loss", &p->lr_loss, err, errlen) != 0 ||
                   h5_series_open(f, "/events/step", &p->ev_step, err, errlen) != 0 ||
                   h5_series_open(f, "/events/kind", &p->ev_kind, err, errlen) != 0 ||
                   h5_series_open(f, "/events/detail", &p->ev_detail, err, errlen) != 0 ||
                   truncate_eval(p, r->step, err, errlen) != 0 ||
                   run_h5_config(f, &r->cfg, err, errlen) != 0 ||
                   restore_state(r, err, errlen) != 0 || probe_set_start(&p->set, err, errlen) != 0
               ? -1
               : 0;
}

// A new probes.h5 (rank 0): the probe series, evaluation, LR-probe and event series, the
// attributes and the tensor table's scales.
static int probes_create(struct run *r, const char *path, char *err, size_t errlen)
{
    struct run_probes *p = r->probes;
    int dims[1], four[1] = {4};
    if (probe_set_create(&p->set, path, err, errlen) != 0)
        return -1;
    struct h5file *f = p->set.file;
    return h5_series_create(f, "/eval/step", 0, dims, "step of each evaluation", &p->eval_step, err,
                            errlen) != 0 ||
                   h5_series_create(f, "/eval/loss", 0, dims,
                                    "held-out loss (ce + z) on the fixed evaluation batches; the "
                                    "row at step 0 is l0",
                                    &p->eval_loss, err, errlen) != 0 ||
                   h5_series_create(f, "/lr_probe/step", 0, dims,
                                    "step of each local LR-sensitivity probe", &p->lr_step, err,
                                    errlen) != 0 ||
                   h5_series_create(f, "/lr_probe/loss", 1, four,
                                    "[f] mean loss of the fixed probe batch (held-out sequences "
                                    "0..batch_size-1, all ranks) at theta for f = 0 and at theta "
                                    "- f * (update - c theta) - c theta for f = 1/2, 1, 2: the "
                                    "step's update with the learning rate scaled by f, an "
                                    "independent weight decay c theta kept whole; weights "
                                    "untouched",
                                    &p->lr_loss, err, errlen) != 0 ||
                   h5_series_create(f, "/events/step", 0, dims, "step of each event", &p->ev_step,
                                    err, errlen) != 0 ||
                   h5_series_create_str(f, "/events/kind",
                                        "non-finite, spike, threshold, stopped, skip (the "
                                        "skip-step guard) or update_clip (update-norm clipping)",
                                        &p->ev_kind, err, errlen) != 0 ||
                   h5_series_create_str(f, "/events/detail", "what happened, in words",
                                        &p->ev_detail, err, errlen) != 0 ||
                   write_attributes(r, err, errlen) != 0 || table_scales(p, err, errlen) != 0 ||
                   probe_set_start(&p->set, err, errlen) != 0
               ? -1
               : 0;
}

int run_probes_open(struct run *r, const char *out_dir, char *err, size_t errlen)
{
    struct run_probes *p = r->probes;
    char path[CONFIG_PATH_MAX + 32];
    probes_setup(r);
    if (!p->active)
        return 0;
    snprintf(path, sizeof(path), "%s/probes.h5", out_dir);
    int resume = r->step > 0 && access(path, F_OK) == 0;
    if ((resume ? probes_reopen(r, path, err, errlen) : probes_create(r, path, err, errlen)) != 0) {
        probe_set_free(&p->set);
        p->active = 0;
        return -1;
    }
    return 0;
}
