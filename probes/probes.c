// The probe registry and its series in probes.h5.
#include "probes/probes.h"

#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/error.h"

void probe_set_init(struct probe_set *ps, int layers, int heads, int tensors, int every)
{
    memset(ps, 0, sizeof(*ps));
    for (int id = 0; id < PROBE_IDS; id++)
        ps->slot[id] = -1;
    ps->layers = layers;
    ps->heads = heads;
    ps->tensors = tensors;
    ps->every = every > 0 ? every : 1;
}

void probe_set_moe(struct probe_set *ps, int moe_layers, int experts)
{
    ps->moe_layers = moe_layers;
    ps->experts = experts;
}

void probe_set_free(struct probe_set *ps)
{
    probe_set_close(ps);
    for (int i = 0; i < ps->n; i++)
        free(ps->p[i].row);
    ps->n = 0;
    for (int id = 0; id < PROBE_IDS; id++)
        ps->slot[id] = -1;
}

static int needs_met(enum probe_needs n, const struct probe_features *f)
{
    switch (n) {
    case PROBE_NEEDS_NOTHING:
        return 1;
    case PROBE_NEEDS_MLA:
        return f->mla;
    case PROBE_NEEDS_Q_LATENT:
        return f->q_latent;
    case PROBE_NEEDS_MOE:
        return f->moe;
    case PROBE_NEEDS_MUON:
        return f->muon;
    case PROBE_NEEDS_ATTN_CAP:
        return f->attn_cap;
    case PROBE_NEEDS_FINAL_CAP:
        return f->final_cap;
    case PROBE_NEEDS_QK_CLIP:
        return f->qk_clip;
    case PROBE_NEEDS_STABLE:
        return f->stable;
    case PROBE_NEEDS_SKIP:
        return f->skip;
    case PROBE_NEEDS_UPDATE_CLIP:
        return f->update_clip;
    }
    return 0;
}

void probe_set_register(struct probe_set *ps, const struct probe_features *f)
{
    ASSERT(ps->file == NULL && ps->n == 0);
    for (int id = 0; id < PROBE_IDS; id++) {
        const struct probe_entry *e = &probe_catalogue[id];
        ASSERT(e->id == (enum probe_id)id); // the table is in enum order
        ps->slot[id] = -1;
        if (!needs_met(e->needs, f))
            continue;
        ASSERT(ps->n < PROBE_MAX);
        struct probe *p = &ps->p[ps->n];
        p->entry = e;
        p->size = e->shape == PROBE_SCALAR        ? 1
                  : e->shape == PROBE_LAYERS      ? ps->layers
                  : e->shape == PROBE_LAYER_HEADS ? ps->layers * ps->heads
                  : e->shape == PROBE_MOE_LAYERS  ? ps->moe_layers
                  : e->shape == PROBE_MOE_EXPERTS ? ps->moe_layers * ps->experts
                                                  : ps->tensors;
        ASSERT(p->size > 0);
        p->row = xcalloc((size_t)p->size, sizeof(double));
        ps->slot[id] = ps->n++;
    }
}

double *probe_row(struct probe_set *ps, enum probe_id id)
{
    return ps->slot[id] >= 0 ? ps->p[ps->slot[id]].row : NULL;
}

int probe_has(const struct probe_set *ps, enum probe_id id)
{
    return ps->slot[id] >= 0;
}

static int probe_dims(const struct probe_set *ps, const struct probe *p, int *dims)
{
    switch (p->entry->shape) {
    case PROBE_SCALAR:
        return 0;
    case PROBE_LAYERS:
        dims[0] = ps->layers;
        return 1;
    case PROBE_LAYER_HEADS:
        dims[0] = ps->layers;
        dims[1] = ps->heads;
        return 2;
    case PROBE_TENSORS:
        dims[0] = ps->tensors;
        return 1;
    case PROBE_MOE_LAYERS:
        dims[0] = ps->moe_layers;
        return 1;
    case PROBE_MOE_EXPERTS:
        dims[0] = ps->moe_layers;
        dims[1] = ps->experts;
        return 2;
    }
    return 0;
}

// One probe's extendible series, its description naming the row axis.
static int create_series(struct probe_set *ps, struct probe *p, char *err, size_t errlen)
{
    int dims[2];
    char desc[400];
    int nd = probe_dims(ps, p, dims);
    snprintf(desc, sizeof(desc), "%s (rows aligned with %s)", p->entry->description,
             p->entry->every_step ? "/step" : "/probe_step");
    return h5_series_create(ps->file, p->entry->name, nd, dims, desc, &p->series, err, errlen);
}

int probe_set_create(struct probe_set *ps, const char *path, char *err, size_t errlen)
{
    int dims[2];
    if (h5_open(&ps->file, path, H5_CREATE, err, errlen) != 0)
        return -1;
    if (h5_series_create(ps->file, "/step", 0, dims,
                         "training step of each row of the every-step series", &ps->step_series,
                         err, errlen) != 0 ||
        h5_series_create(ps->file, "/probe_step", 0, dims,
                         "training step of each row of the probe-cadence series",
                         &ps->probe_step_series, err, errlen) != 0)
        return -1;
    for (int i = 0; i < ps->n; i++)
        if (create_series(ps, &ps->p[i], err, errlen) != 0)
            return -1;
    return 0;
}

// /axes/<name> = values[0, n), made a dimension scale called name.
static int axis(struct probe_set *ps, const char *name, const int32_t *values, int n,
                const char *description, char *err, size_t errlen)
{
    char path[64];
    size_t dims[1] = {(size_t)n};
    snprintf(path, sizeof(path), "/axes/%s", name);
    return h5_write_i32(ps->file, path, 1, dims, values, err, errlen) ||
           h5_dim_scale(ps->file, path, name, err, errlen) ||
           h5_attr_str(ps->file, path, "description", description, err, errlen);
}

// The dimension scales of one probe's series: its row axis, then its shape's axes.
static int attach_axes(struct probe_set *ps, const struct probe *p, const char *tensor_names,
                       char *err, size_t errlen)
{
    const struct probe_entry *e = p->entry;
    int rc;
    const char *axes[2] = {NULL, NULL};
    switch (e->shape) {
    case PROBE_SCALAR:
        break;
    case PROBE_LAYERS:
        axes[0] = "/axes/layer";
        break;
    case PROBE_LAYER_HEADS:
        axes[0] = "/axes/layer", axes[1] = "/axes/head";
        break;
    case PROBE_TENSORS:
        axes[0] = tensor_names;
        break;
    case PROBE_MOE_LAYERS:
        axes[0] = "/axes/moe_block";
        break;
    case PROBE_MOE_EXPERTS:
        axes[0] = "/axes/moe_block", axes[1] = "/axes/expert";
        break;
    }
    rc = h5_dim_attach(ps->file, e->name, 0, e->every_step ? "/step" : "/probe_step", err, errlen);
    for (int d = 0; rc == 0 && d < 2 && axes[d]; d++)
        rc = h5_dim_attach(ps->file, e->name, d + 1, axes[d], err, errlen);
    return rc;
}

int probe_set_scales(struct probe_set *ps, const char *tensor_names, const int *moe_blocks,
                     char *err, size_t errlen)
{
    int big = ps->layers > ps->heads ? ps->layers : ps->heads, rc = 0;
    big = big > ps->experts ? big : ps->experts;
    int32_t *idx = xcalloc((size_t)big + 1, sizeof(int32_t));
    for (int i = 0; i <= big; i++)
        idx[i] = i;
    rc = h5_dim_scale(ps->file, "/step", "step", err, errlen) ||
         h5_dim_scale(ps->file, "/probe_step", "probe_step", err, errlen) ||
         h5_dim_scale(ps->file, tensor_names, "tensor", err, errlen) ||
         axis(ps, "layer", idx, ps->layers, "block index of the layer axis", err, errlen) ||
         axis(ps, "head", idx, ps->heads, "attention head index", err, errlen);
    if (rc == 0 && ps->moe_layers > 0) {
        int32_t *blocks = xcalloc((size_t)ps->moe_layers, sizeof(int32_t));
        for (int i = 0; i < ps->moe_layers; i++)
            blocks[i] = moe_blocks[i];
        rc = axis(ps, "moe_block", blocks, ps->moe_layers,
                  "block index of each MoE block (the moe_block axis)", err, errlen) ||
             axis(ps, "expert", idx, ps->experts, "routed expert index", err, errlen);
        free(blocks);
    }
    free(idx);
    for (int i = 0; rc == 0 && i < ps->n; i++)
        rc = attach_axes(ps, &ps->p[i], tensor_names, err, errlen);
    return rc ? -1 : 0;
}

int probe_set_reopen(struct probe_set *ps, const char *path, long step, char *err, size_t errlen)
{
    double s = 0.0;
    if (h5_open(&ps->file, path, H5_READWRITE, err, errlen) != 0)
        return -1;
    if (h5_series_open(ps->file, "/step", &ps->step_series, err, errlen) != 0 ||
        h5_series_open(ps->file, "/probe_step", &ps->probe_step_series, err, errlen) != 0)
        return -1;
    int missing[PROBE_MAX] = {0};
    for (int i = 0; i < ps->n; i++) {
        struct probe *pr = &ps->p[i];
        if (!h5_exists(ps->file, pr->entry->name)) { // a probe added since the file was made
            missing[i] = 1;
            if (create_series(ps, pr, err, errlen) != 0)
                return -1;
        } else if (h5_series_open(ps->file, pr->entry->name, &pr->series, err, errlen) != 0) {
            return -1;
        }
    }
    // Keep the rows of steps ≤ step; both axes are sorted by step.
    int axes[2] = {ps->step_series, ps->probe_step_series};
    for (int a = 0; a < 2; a++) {
        long rows = h5_series_rows(ps->file, axes[a]);
        while (rows > 0) {
            if (h5_series_read_row(ps->file, axes[a], rows - 1, &s, err, errlen) != 0)
                return -1;
            if ((long)s <= step)
                break;
            rows--;
        }
        if (h5_series_truncate(ps->file, axes[a], rows, err, errlen) != 0)
            return -1;
        for (int i = 0; i < ps->n; i++)
            if (ps->p[i].entry->every_step == (a == 0) &&
                h5_series_truncate(ps->file, ps->p[i].series, rows, err, errlen) != 0)
                return -1;
        // a new probe has no value for the steps before the resume: NaN rows keep it aligned
        for (int i = 0; i < ps->n; i++) {
            struct probe *pr = &ps->p[i];
            if (!missing[i] || pr->entry->every_step != (a == 0))
                continue;
            for (int j = 0; j < pr->size; j++)
                pr->row[j] = NAN;
            for (long r = 0; r < rows; r++)
                if (h5_series_append(ps->file, pr->series, pr->row, err, errlen) != 0)
                    return -1;
        }
    }
    // Its axes: a file from before the dimension scales has none to attach (the analysis warns
    // about such files), so a failure here is not an error.
    for (int i = 0; i < ps->n; i++)
        if (missing[i] && attach_axes(ps, &ps->p[i], "/tensors/names", err, errlen) != 0)
            err[0] = '\0';
    return 0;
}

int probe_set_start(struct probe_set *ps, char *err, size_t errlen)
{
    if (h5_flush(ps->file, err, errlen) != 0)
        return -1;
    return h5_start_swmr(ps->file, err, errlen);
}

int probe_set_due(const struct probe_set *ps, long step)
{
    return step % ps->every == 0;
}

int probe_set_write(struct probe_set *ps, long step, int due, char *err, size_t errlen)
{
    double s = (double)step;
    if (h5_series_append(ps->file, ps->step_series, &s, err, errlen) != 0)
        return -1;
    if (due && h5_series_append(ps->file, ps->probe_step_series, &s, err, errlen) != 0)
        return -1;
    for (int i = 0; i < ps->n; i++) {
        struct probe *p = &ps->p[i];
        if ((p->entry->every_step || due) &&
            h5_series_append(ps->file, p->series, p->row, err, errlen) != 0)
            return -1;
    }
    return 0;
}

int probe_set_flush(struct probe_set *ps, char *err, size_t errlen)
{
    return ps->file ? h5_flush(ps->file, err, errlen) : 0;
}

int probe_set_close(struct probe_set *ps)
{
    int rc = h5_close(ps->file);
    ps->file = NULL;
    return rc;
}
