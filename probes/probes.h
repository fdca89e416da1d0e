// provides: struct probe_set — the probe registry and its HDF5 series (probes.h5).
//
// A probe is one registration: a name ("attn/max_logit"), a row shape (scalar, [layers],
// [layers, heads] or [tensors]), a cadence and a description, which is stored as the dataset's
// "description" attribute so the file explains itself. Code that already has a value writes it
// into the probe's row buffer; probe_set_write() appends the rows of every probe due at a step.
// Rows of cadence-1 probes align with /step; the others with /probe_step (their cadence is
// probes.every). Nothing here knows about models: launch/ fills the rows.
#ifndef CANARY_PROBES_PROBES_H
#define CANARY_PROBES_PROBES_H

#include <stddef.h>

#include "probes/h5.h"

// PROBE_MOE_LAYERS: [MoE blocks]; PROBE_MOE_EXPERTS: [MoE blocks, experts] (see probe_set_moe).
enum probe_shape {
    PROBE_SCALAR,
    PROBE_LAYERS,
    PROBE_LAYER_HEADS,
    PROBE_TENSORS,
    PROBE_MOE_LAYERS,
    PROBE_MOE_EXPERTS
};

#define PROBE_MAX 64

struct probe {
    char name[64];
    char description[240];
    enum probe_shape shape;
    int every_step; // 1: a row at every step; 0: at the probe cadence
    int size;       // values per row
    double *row;    // [size], filled by the producer before probe_set_write
    int series;     // h5 series handle
};

struct probe_set {
    struct probe p[PROBE_MAX];
    int n;
    int layers, heads, tensors;
    int moe_layers, experts; // for the MoE shapes
    int every;               // the probe cadence (probes.every)
    struct h5file *file;     // NULL until probe_set_open
    int step_series;         // /step
    int probe_step_series;   // /probe_step
};

void probe_set_init(struct probe_set *ps, int layers, int heads, int tensors, int every);
// The sizes of the MoE shapes (before registering probes of those shapes).
void probe_set_moe(struct probe_set *ps, int moe_layers, int experts);
void probe_set_free(struct probe_set *ps);

// Registers a probe; returns its index. Registration happens before probe_set_open.
int probe_register(struct probe_set *ps, const char *name, enum probe_shape shape, int every_step,
                   const char *description);
// The row buffer of probe i.
double *probe_row(struct probe_set *ps, int i);

// Creates path with every registered series; the caller then adds attributes (provenance,
// config) through ps->file and calls probe_set_start to let readers in. Returns 0 or -1.
int probe_set_create(struct probe_set *ps, const char *path, char *err, size_t errlen);
// Opens an existing file to continue a run: series beyond `rows_through_step` (steps > step) are
// dropped so that no step appears twice. Returns 0 or -1.
int probe_set_reopen(struct probe_set *ps, const char *path, long step, char *err, size_t errlen);
// Switches the file to SWMR: h5py can read it while the run goes on.
int probe_set_start(struct probe_set *ps, char *err, size_t errlen);

// True when probe-cadence rows are due at step.
int probe_set_due(const struct probe_set *ps, long step);
// Appends the rows due at step (every-step probes always; the others when due).
int probe_set_write(struct probe_set *ps, long step, char *err, size_t errlen);
int probe_set_flush(struct probe_set *ps, char *err, size_t errlen);
int probe_set_close(struct probe_set *ps);

#endif
