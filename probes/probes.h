// provides: struct probe_set — the probes of one run (the catalogue's entries its model has) and
//           their HDF5 series (probes.h5).
//
// What each probe is lives in probes/catalogue.c, whose description is stored as the dataset's
// "description" attribute so the file explains itself. Code that has a value writes it into the
// probe's row buffer (probe_row); probe_set_write() appends the rows of every probe due at a
// step. Rows of cadence-1 probes align with /step; the others with /probe_step (their cadence is
// probes.every). Nothing here knows about models: launch/ fills the rows.
#ifndef CANARY_PROBES_PROBES_H
#define CANARY_PROBES_PROBES_H

#include <stddef.h>

#include "probes/catalogue.h"
#include "probes/h5.h"

#define PROBE_MAX 64

struct probe {
    const struct probe_entry *entry; // name, shape, cadence, description
    int size;                        // values per row
    double *row;                     // [size], filled by the producer before probe_set_write
    int series;                      // h5 series handle
};

struct probe_set {
    struct probe p[PROBE_MAX];
    int n;
    int slot[PROBE_IDS]; // index in p of each catalogue entry, −1 when the run has none
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

// What a run has, for the catalogue's probe_needs.
struct probe_features {
    int mla, q_latent, moe, muon;
    int attn_cap, final_cap; // model.attn_softcap, model.final_softcap > 0
    int qk_clip;             // optim.qk_clip > 0
    int stable;              // optim.stable_adamw
    int skip, update_clip;   // optim.skip_sigma, optim.update_clip_sigma > 0
};
// Takes every catalogue entry the run's features allow (before probe_set_create).
void probe_set_register(struct probe_set *ps, const struct probe_features *f);
// The row buffer of a probe, or NULL when the run does not have it.
double *probe_row(struct probe_set *ps, enum probe_id id);
// 1 when the run has the probe.
int probe_has(const struct probe_set *ps, enum probe_id id);

// Creates path with every registered series; the caller then adds attributes (provenance,
// config) through ps->file and calls probe_set_start to let readers in. Returns 0 or -1.
int probe_set_create(struct probe_set *ps, const char *path, char *err, size_t errlen);
// Opens an existing file to continue a run: series beyond `rows_through_step` (steps > step) are
// dropped so that no step appears twice. Returns 0 or -1.
int probe_set_reopen(struct probe_set *ps, const char *path, long step, char *err, size_t errlen);
// Dimension scales for generic readers (h5py's dims, xarray): dimension 0 of every series is
// /step or /probe_step; the others are /axes/layer, /axes/head, /axes/moe_block (the block
// index of each MoE block, moe_blocks[moe_layers]), /axes/expert, and tensor_names (a string
// dataset the caller wrote, one per tensor). After probe_set_create, before probe_set_start.
int probe_set_scales(struct probe_set *ps, const char *tensor_names, const int *moe_blocks,
                     char *err, size_t errlen);
// Switches the file to SWMR: h5py can read it while the run goes on.
int probe_set_start(struct probe_set *ps, char *err, size_t errlen);

// True when probe-cadence rows are due at step.
int probe_set_due(const struct probe_set *ps, long step);
// Appends the rows of step: every-step probes always, the probe-cadence ones when due (the
// caller's decision, normally probe_set_due(step), which it made before the step).
int probe_set_write(struct probe_set *ps, long step, int due, char *err, size_t errlen);
int probe_set_flush(struct probe_set *ps, char *err, size_t errlen);
int probe_set_close(struct probe_set *ps);

#endif
