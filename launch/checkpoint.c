// Checkpoints in HDF5 through probes/h5.h.
#include "launch/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <limits.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "launch/config_keys.h"
#include "launch/train.h"
#include "probes/h5.h"
#include "util/error.h"

// The dead-expert window (probes.dead_window) as each expert's age — steps since any token of
// the global batch last chose it, capped at 2^24 (exact in float32; older is just as dead) — so a
// resumed run counts dead experts as an uninterrupted one would, also under a changed window.
// Only rank 0 with probes on tracks it; other writers leave it out (a resume restarts the window).
static int write_moe_age(struct run *r, struct h5file *f, char *err, size_t errlen)
{
    const long *seen = r->probes->moe_last_seen;
    if (!seen || !r->probes->active)
        return 0;
    size_t dims[2] = {(size_t)r->model.moe_layers, (size_t)r->cfg.model.experts};
    float *age = xcalloc(dims[0] * dims[1], sizeof(float));
    for (size_t i = 0; i < dims[0] * dims[1]; i++) {
        long a = r->step - seen[i];
        age[i] = (float)(a < 0 ? 0 : a < (1L << 24) ? a : (1L << 24));
    }
    int rc = h5_write_f32(f, "/state/moe_expert_age", 2, dims, age, err, errlen);
    free(age);
    return rc;
}

// Reads write_moe_age's dataset into r->moe_age when the model has MoE blocks and the file has
// it (a checkpoint from before it was written resumes with the window restarted).
static int read_moe_age(struct run *r, struct h5file *f, char *why, size_t whylen)
{
    size_t n = (size_t)r->model.moe_layers * (size_t)r->cfg.model.experts, dims[4];
    int nd = 0;
    free(r->moe_age);
    r->moe_age = NULL;
    if (n == 0 || !h5_exists(f, "/state/moe_expert_age"))
        return 0;
    r->moe_age = xcalloc(n, sizeof(float));
    if (h5_read_f32(f, "/state/moe_expert_age", r->moe_age, n, &nd, dims, why, whylen))
        return -1;
    for (size_t i = 0; i < n; i++)
        if (!(r->moe_age[i] >= 0.0f && r->moe_age[i] <= (float)(1L << 24)) ||
            r->moe_age[i] != floorf(r->moe_age[i])) {
            snprintf(why, whylen, "/state/moe_expert_age[%zu] = %g is not a step count", i,
                     (double)r->moe_age[i]);
            return -1;
        }
    return 0;
}

// The update guards' windows (optim/guard.h), each as /state/guard_<what>: its guard_window
// slots, the values held first (oldest first), the count in the attribute n. Exact doubles, so
// a resumed run takes the same decisions bitwise.
static const char *const guard_paths[3] = {"/state/guard_loss", "/state/guard_grad_norm",
                                           "/state/guard_update_norm"};

static struct guard_window *guard_of(struct run *r, int i)
{
    struct guard_window *w[3] = {&r->guard_loss, &r->guard_gnorm, &r->guard_unorm};
    return w[i]->v ? w[i] : NULL;
}

static int write_guards(struct run *r, struct h5file *f, char *err, size_t errlen)
{
    for (int i = 0; i < 3; i++) {
        struct guard_window *w = guard_of(r, i);
        if (!w)
            continue;
        double *buf = xcalloc((size_t)w->cap, sizeof(double));
        guard_window_get(w, buf);
        size_t dims[1] = {(size_t)w->cap};
        int rc = h5_write_f64(f, guard_paths[i], 1, dims, buf, err, errlen) ||
                 h5_attr_i64(f, guard_paths[i], "n", w->n, err, errlen) ||
                 h5_attr_i64(f, guard_paths[i], "cap", w->cap, err, errlen) ||
                 h5_attr_str(f, guard_paths[i], "description",
                             "update guard window: the previous steps' values (the first n, "
                             "oldest first) behind its mean + k sigma threshold",
                             err, errlen);
        free(buf);
        if (rc)
            return -1;
    }
    return 0;
}

// A checkpoint without a window (written with the guard off) restarts it empty.
static int read_guards(struct run *r, struct h5file *f, char *why, size_t whylen)
{
    for (int i = 0; i < 3; i++) {
        struct guard_window *w = guard_of(r, i);
        if (!w)
            continue;
        w->n = w->head = 0;
        if (!h5_exists(f, guard_paths[i]))
            continue;
        // the window as written (optim.guard_window may have changed since: --set on resume
        // keeps the newest values that fit)
        int64_t n = -1, cap = -1;
        if (h5_attr_read_i64(f, guard_paths[i], "n", &n, why, whylen) ||
            h5_attr_read_i64(f, guard_paths[i], "cap", &cap, why, whylen))
            return -1;
        if (cap < 1 || cap > 1000000 || n < 0 || n > cap) {
            snprintf(why, whylen, "%s has n = %lld values in %lld slots (need 0 <= n <= slots)",
                     guard_paths[i], (long long)n, (long long)cap);
            return -1;
        }
        double *buf = xcalloc((size_t)cap, sizeof(double));
        size_t dims[4];
        int nd = 0;
        int rc = h5_read_f64(f, guard_paths[i], buf, (size_t)cap, &nd, dims, why, whylen);
        int keep = n < w->cap ? (int)n : w->cap;
        if (rc == 0)
            guard_window_set(w, buf + (n - keep), keep);
        free(buf);
        if (rc)
            return -1;
    }
    return 0;
}

static int ckpt_body(struct run *r, struct h5file *f, char *err, size_t errlen)
{
    const struct tensor_table *tt = &r->model.table;
    char path[TENSOR_NAME_MAX + 32];
    for (int i = 0; i < tt->n; i++) {
        const struct tensor *t = &tt->t[i];
        size_t dims[2] = {(size_t)t->rows, (size_t)t->cols};
        int nd = t->rows == 1 ? 1 : 2;
        const size_t *shape = nd == 1 ? dims + 1 : dims; // gains are 1-D, like torch
        snprintf(path, sizeof(path), "/params/%s", t->name);
        if (h5_write_f32(f, path, nd, shape, r->params + t->offset, err, errlen))
            return -1;
        snprintf(path, sizeof(path), "/optim/%s/m", t->name);
        if (h5_write_f32(f, path, nd, shape, r->adamw.m + t->offset, err, errlen))
            return -1;
        snprintf(path, sizeof(path), "/optim/%s/v", t->name);
        if (h5_write_f32(f, path, nd, shape, r->adamw.v + t->offset, err, errlen))
            return -1;
        if (muon_shards_owns(r->muon, i)) {
            snprintf(path, sizeof(path), "/optim/%s/momentum", t->name);
            if (h5_write_f32(f, path, nd, shape, r->muon->state.momentum + t->offset, err, errlen))
                return -1;
        }
    }
    if (write_moe_age(r, f, err, errlen) != 0 || write_guards(r, f, err, errlen) != 0)
        return -1;
    if (h5_attr_i64(f, "/state", "step", r->step, err, errlen) ||
        h5_attr_i64(f, "/state", "adam_t", r->adamw.t, err, errlen) ||
        h5_attr_i64(f, "/state", "data_cursor", r->step * (int64_t)r->cfg.train.batch_size, err,
                    errlen) ||
        h5_attr_i64(f, "/state", "seed", r->cfg.train.seed, err, errlen) ||
        h5_attr_str(f, "/state", "description",
                    "step: optimizer steps taken; adam_t: AdamW bias-correction count; "
                    "data_cursor: global samples consumed (sample i is keyed by (seed, i)); the "
                    "lr schedule is a function of step; moe_expert_age (MoE only): steps since "
                    "any token of the global batch last chose each expert (at most 2^24)",
                    err, errlen) ||
        h5_attr_str(f, "/", "description",
                    "canary checkpoint: /params/<name> (row-major [out, in] like torch.nn.Linear; "
                    "gains 1-D), /optim/<name>/{m,v} AdamW moments (and /momentum of Muon's "
                    "matrices), /state, /config, /provenance",
                    err, errlen))
        return -1;
    return run_h5_config(f, &r->cfg, err, errlen) || run_h5_provenance(f, r, err, errlen) ? -1 : 0;
}

// Deletes all but the newest `keep` step_*.h5 files of dir.
static void ckpt_prune(const char *dir, int keep)
{
    struct dirent *e = NULL;
    long steps[4096];
    int n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return;
    while ((e = readdir(d)) != NULL && n < 4096) {
        long s = 0;
        char tail[8];
        if (sscanf(e->d_name, "step_%ld.%7s", &s, tail) == 2 && strcmp(tail, "h5") == 0)
            steps[n++] = s;
    }
    closedir(d);
    for (int i = 0; i < n; i++) {
        int newer = 0;
        for (int j = 0; j < n; j++)
            newer += steps[j] > steps[i];
        if (newer >= keep) {
            char path[CONFIG_PATH_MAX + 64];
            snprintf(path, sizeof(path), "%s/step_%08ld.h5", dir, steps[i]);
            unlink(path);
        }
    }
}

int ckpt_write(struct run *r, const char *run_dir, char *err, size_t errlen)
{
    char dir[CONFIG_PATH_MAX + 16], path[CONFIG_PATH_MAX + 64], tmp[CONFIG_PATH_MAX + 80];
    struct h5file *f = NULL;
    snprintf(dir, sizeof(dir), "%s/ckpt", run_dir);
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "create checkpoint directory '%s': %s", dir, strerror(errno));
        return -1;
    }
    snprintf(path, sizeof(path), "%s/step_%08ld.h5", dir, r->step);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    // Built in memory and written with plain writes: a full disk is an ordinary error here and
    // never leaves HDF5 holding a half-written file.
    char why[1200];
    if (h5_open(&f, tmp, H5_MEMORY, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "write checkpoint at step %ld: %s", r->step, why);
        return -1;
    }
    int rc = ckpt_body(r, f, why, sizeof(why));
    if (rc == 0)
        rc = h5_write_image(f, tmp, why, sizeof(why));
    h5_close(f);
    if (rc != 0)
        snprintf(err, errlen, "write checkpoint at step %ld: %s", r->step, why);
    if (rc == 0 && rename(tmp, path) != 0) {
        snprintf(err, errlen, "rename checkpoint '%s': %s", tmp, strerror(errno));
        rc = -1;
    }
    if (rc != 0) {
        unlink(tmp); // the previous checkpoints stay as they were
        return -1;
    }
    // The rename must be durable before older checkpoints go: a crash in between must not leave
    // the directory without a complete checkpoint.
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    ckpt_prune(dir, r->cfg.train.keep_checkpoints);
    return 0;
}

// The config stored in f.
static int read_config(struct h5file *f, const char *path, struct config *c, char *err,
                       size_t errlen)
{
    size_t cap = 1 << 16;
    char *text = malloc(cap);
    int rc = -1;
    if (!text) {
        snprintf(err, errlen, "read checkpoint '%s': out of memory", path);
        return -1;
    }
    if (h5_attr_read_str(f, "/config", "ini", text, cap, err, errlen) == 0) {
        config_defaults(c);
        rc = config_load_string(c, text, path, err, errlen);
    }
    free(text);
    return rc;
}

int ckpt_read_config(const char *path, struct config *c, char *err, size_t errlen)
{
    struct h5file *f = NULL;
    char why[600];
    if (h5_open(&f, path, H5_SEALED, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "read checkpoint: %s", why);
        return -1;
    }
    int rc = read_config(f, path, c, err, errlen);
    h5_close(f);
    return rc;
}

int ckpt_read_world_size(const char *path, int *ranks, char *err, size_t errlen)
{
    struct h5file *f = NULL;
    char why[600];
    int64_t n = 0;
    if (h5_open(&f, path, H5_SEALED, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "read checkpoint: %s", why);
        return -1;
    }
    int rc = h5_attr_read_i64(f, "/provenance", "world_size", &n, why, sizeof(why));
    h5_close(f);
    if (rc != 0 || n < 1 || n > 1 << 24) {
        snprintf(err, errlen, "read checkpoint '%s': no world size in /provenance%s%s", path,
                 rc ? ": " : "", rc ? why : "");
        return -1;
    }
    *ranks = (int)n;
    return 0;
}

#define CKPT_MAX_STEP (1LL << 50) // beyond any run; a larger step is damage

// A checkpoint is only written after a finite update, so non-finite weights or moments (or a
// negative second moment) mean a damaged or foreign file, even with intact checksums.
static int check_values(const struct run *r, char *err, size_t errlen)
{
    const struct tensor_table *tt = &r->model.table;
    for (int i = 0; i < tt->n; i++) {
        const struct tensor *t = &tt->t[i];
        for (size_t j = 0; j < t->size; j++) {
            float p = r->params[t->offset + j], m = r->adamw.m[t->offset + j],
                  v = r->adamw.v[t->offset + j];
            if (!isfinite(p) || !isfinite(m) || !isfinite(v) || v < 0) {
                snprintf(err, errlen,
                         "tensor '%s' holds %s at index %zu (weight %g, m %g, v %g): a checkpoint "
                         "is only written after a finite step",
                         t->name, v < 0 ? "a negative second moment" : "a non-finite value", j,
                         (double)p, (double)m, (double)v);
                return -1;
            }
        }
    }
    return 0;
}

// Whether the checkpoint's config can continue this run: every [model] key equal (the tensors
// would not fit otherwise; head_dim compared resolved), the same seed and batch size (the data
// order is keyed by (seed, step · batch_size)), the same optimizer. 0, or -2 with the message.
static int check_compatible(const struct config *saved_in, const struct config *cfg,
                            const char *path, char *err, size_t errlen)
{
    struct config saved = *saved_in;
    if (saved.model.head_dim == 0 && saved.model.heads > 0)
        saved.model.head_dim = saved.model.dim / saved.model.heads;
    for (int i = 0; i < config_key_count; i++) {
        const struct config_key *k = &config_keys[i];
        char a[128], b[128], name[128];
        if (strcmp(k->section, "model") != 0)
            continue;
        snprintf(name, sizeof(name), "model.%s", k->key);
        config_get_string(&saved, name, a, sizeof(a));
        config_get_string(cfg, name, b, sizeof(b));
        if (strcmp(a, b) != 0) {
            snprintf(err, errlen,
                     "checkpoint '%s' is of another model: %s = %s there, %s in this run", path,
                     name, a, b);
            return -2;
        }
    }
    if (saved.train.seed != cfg->train.seed || saved.train.batch_size != cfg->train.batch_size) {
        snprintf(err, errlen,
                 "checkpoint '%s' has train.seed = %lld and train.batch_size = %d, this run %lld "
                 "and %d: the data would not continue where it stopped",
                 path, (long long)saved.train.seed, saved.train.batch_size,
                 (long long)cfg->train.seed, cfg->train.batch_size);
        return -2;
    }
    if (saved.optim.name != cfg->optim.name) {
        snprintf(err, errlen,
                 "checkpoint '%s' was written with another optimizer (optim.name differs); its "
                 "state cannot continue this run",
                 path);
        return -2;
    }
    return 0;
}

// One float dataset of exactly t's size into dst. 0, or -1 with why.
static int read_tensor_data(struct h5file *f, const char *ds, float *dst, const struct tensor *t,
                            int check_shape, char *why, size_t whylen)
{
    size_t dims[4];
    int nd = 0;
    if (h5_read_f32(f, ds, dst, t->size, &nd, dims, why, whylen))
        return -1;
    if (check_shape && !(nd == 2 && dims[0] == (size_t)t->rows && dims[1] == (size_t)t->cols) &&
        !(nd == 1 && t->rows == 1 && dims[0] == (size_t)t->cols)) {
        snprintf(why, whylen, "'%s' has another shape than [%d, %d]", ds, t->rows, t->cols);
        return -1;
    }
    return 0;
}

// Every tensor's parameters, AdamW moments and (Muon's tensors) momentum, by name.
static int read_tensors(struct run *r, struct h5file *f, char *why, size_t whylen)
{
    const struct tensor_table *tt = &r->model.table;
    char ds[TENSOR_NAME_MAX + 32];
    for (int i = 0; i < tt->n; i++) {
        const struct tensor *t = &tt->t[i];
        snprintf(ds, sizeof(ds), "/params/%s", t->name);
        if (read_tensor_data(f, ds, r->params + t->offset, t, 1, why, whylen))
            return -1;
        snprintf(ds, sizeof(ds), "/optim/%s/m", t->name);
        if (read_tensor_data(f, ds, r->adamw.m + t->offset, t, 0, why, whylen))
            return -1;
        snprintf(ds, sizeof(ds), "/optim/%s/v", t->name);
        if (read_tensor_data(f, ds, r->adamw.v + t->offset, t, 0, why, whylen))
            return -1;
        snprintf(ds, sizeof(ds), "/optim/%s/momentum", t->name);
        if (muon_shards_owns(r->muon, i) &&
            read_tensor_data(f, ds, r->muon->state.momentum + t->offset, t, 0, why, whylen))
            return -1;
    }
    return 0;
}

// /state's step and AdamW's count of applied updates (smaller than step after skipped steps).
static int read_state(struct run *r, struct h5file *f, char *why, size_t whylen)
{
    int64_t step = 0, adam_t = 0;
    if (h5_attr_read_i64(f, "/state", "step", &step, why, whylen) ||
        h5_attr_read_i64(f, "/state", "adam_t", &adam_t, why, whylen))
        return -1;
    if (step < 0 || step > CKPT_MAX_STEP || adam_t < 0 || adam_t > step) {
        snprintf(why, whylen, "/state has step %lld and adam_t %lld (need 0 <= adam_t <= step)",
                 (long long)step, (long long)adam_t);
        return -1;
    }
    r->step = (long)step;
    r->adamw.t = (long)adam_t;
    return 0;
}

int ckpt_read(struct run *r, const char *path, char *err, size_t errlen)
{
    struct h5file *f = NULL;
    struct config saved;
    char why[800];
    int rc = -1;
    if (h5_open(&f, path, H5_SEALED, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "read checkpoint: %s", why);
        return -1;
    }
    if (read_config(f, path, &saved, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "read checkpoint '%s': no readable config (%s)", path, why);
    } else if ((rc = check_compatible(&saved, &r->cfg, path, err, errlen)) == 0) {
        long step_before = r->step, t_before = r->adamw.t;
        if (read_tensors(r, f, why, sizeof(why)) != 0 || read_state(r, f, why, sizeof(why)) != 0 ||
            check_values(r, why, sizeof(why)) != 0 || read_moe_age(r, f, why, sizeof(why)) != 0 ||
            read_guards(r, f, why, sizeof(why)) != 0) {
            r->step = step_before;
            r->adamw.t = t_before;
            snprintf(err, errlen, "read checkpoint '%s': %s", path, why);
            rc = -1;
        }
    }
    // precision and matmul backend (run_backend_describe): another one here is allowed, but the
    // run is then not bitwise the one that would have gone on (the header says so)
    char was[sizeof(r->resumed_precision)], now[sizeof(r->resumed_precision)];
    r->resumed_precision[0] = '\0';
    if (rc == 0 &&
        h5_attr_read_str(f, "/provenance", "precision", was, sizeof(was), why, sizeof(why)) == 0) {
        run_backend_describe(&r->cfg, &r->backend, &r->model, now, sizeof(now));
        // checkpoints from before the backend was recorded ("fp32", "bf16: ...") ran on OpenBLAS
        int before = !strstr(was, "backend: ");
        if (before ? strncmp(was, now, 4) != 0 || r->backend.onednn : strcmp(was, now) != 0)
            snprintf(r->resumed_precision, sizeof(r->resumed_precision), "%s", was);
    }
    h5_close(f);
    return rc;
}

// The checkpoint of run_dir with the largest (newest) or smallest step in [lo, hi). 0 or -1.
static int ckpt_scan(const char *run_dir, long lo, long hi, int newest, char *out, size_t outlen,
                     long *step)
{
    char dir[CONFIG_PATH_MAX + 16];
    struct dirent *e = NULL;
    long best = -1;
    snprintf(dir, sizeof(dir), "%s/ckpt", run_dir);
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    while ((e = readdir(d)) != NULL) {
        long s = 0;
        char tail[8];
        if (sscanf(e->d_name, "step_%ld.%7s", &s, tail) == 2 && strcmp(tail, "h5") == 0 &&
            s >= lo && s < hi && (best < 0 || (newest ? s > best : s < best)))
            best = s;
    }
    closedir(d);
    if (best < 0)
        return -1;
    snprintf(out, outlen, "%s/step_%08ld.h5", dir, best);
    *step = best;
    return 0;
}

int ckpt_find_before(const char *run_dir, long below, char *out, size_t outlen, long *step)
{
    return ckpt_scan(run_dir, 0, below, 1, out, outlen, step);
}

int ckpt_find_from(const char *run_dir, long from, char *out, size_t outlen, long *step)
{
    return ckpt_scan(run_dir, from, LONG_MAX, 0, out, outlen, step);
}

int ckpt_find_latest(const char *run_dir, char *out, size_t outlen)
{
    long step = 0;
    return ckpt_find_before(run_dir, LONG_MAX, out, outlen, &step);
}
