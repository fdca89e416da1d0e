// The probe registry and its series in probes.h5.
#include "probes/probes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/error.h"

void probe_set_init(struct probe_set *ps, int layers, int heads, int tensors, int every)
{
    memset(ps, 0, sizeof(*ps));
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
}

int probe_register(struct probe_set *ps, const char *name, enum probe_shape shape, int every_step,
                   const char *description)
{
    ASSERT(ps->n < PROBE_MAX && ps->file == NULL);
    struct probe *p = &ps->p[ps->n];
    snprintf(p->name, sizeof(p->name), "%s", name);
    p->shape = shape;
    p->every_step = every_step;
    p->size = shape == PROBE_SCALAR        ? 1
              : shape == PROBE_LAYERS      ? ps->layers
              : shape == PROBE_LAYER_HEADS ? ps->layers * ps->heads
              : shape == PROBE_MOE_LAYERS  ? ps->moe_layers
              : shape == PROBE_MOE_EXPERTS ? ps->moe_layers * ps->experts
                                           : ps->tensors;
    ASSERT(p->size > 0);
    p->row = xcalloc((size_t)p->size, sizeof(double));
    snprintf(p->description, sizeof(p->description), "%s", description);
    return ps->n++;
}

double *probe_row(struct probe_set *ps, int i)
{
    return ps->p[i].row;
}

static int probe_dims(const struct probe_set *ps, const struct probe *p, int *dims)
{
    switch (p->shape) {
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
    for (int i = 0; i < ps->n; i++) {
        struct probe *p = &ps->p[i];
        char desc[400];
        int nd = probe_dims(ps, p, dims);
        snprintf(desc, sizeof(desc), "%s (rows aligned with %s)", p->description,
                 p->every_step ? "/step" : "/probe_step");
        if (h5_series_create(ps->file, p->name, nd, dims, desc, &p->series, err, errlen) != 0)
            return -1;
    }
    return 0;
}

int probe_set_reopen(struct probe_set *ps, const char *path, long step, char *err, size_t errlen)
{
    double s = 0.0;
    if (h5_open(&ps->file, path, H5_READWRITE, err, errlen) != 0)
        return -1;
    if (h5_series_open(ps->file, "/step", &ps->step_series, err, errlen) != 0 ||
        h5_series_open(ps->file, "/probe_step", &ps->probe_step_series, err, errlen) != 0)
        return -1;
    for (int i = 0; i < ps->n; i++)
        if (h5_series_open(ps->file, ps->p[i].name, &ps->p[i].series, err, errlen) != 0)
            return -1;
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
            if (ps->p[i].every_step == (a == 0) &&
                h5_series_truncate(ps->file, ps->p[i].series, rows, err, errlen) != 0)
                return -1;
    }
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

int probe_set_write(struct probe_set *ps, long step, char *err, size_t errlen)
{
    double s = (double)step;
    int due = probe_set_due(ps, step);
    if (h5_series_append(ps->file, ps->step_series, &s, err, errlen) != 0)
        return -1;
    if (due && h5_series_append(ps->file, ps->probe_step_series, &s, err, errlen) != 0)
        return -1;
    for (int i = 0; i < ps->n; i++) {
        struct probe *p = &ps->p[i];
        if ((p->every_step || due) &&
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
