// provides: the probes of a training run — registration, filling the rows from values the step
//           already computed, and probes.h5 with its provenance and config attributes.
#ifndef CANARY_LAUNCH_TRAIN_PROBES_H
#define CANARY_LAUNCH_TRAIN_PROBES_H

#include <stddef.h>

#include "probes/leaf.h"
#include "probes/probes.h"

struct run;
struct step_result;

// Indices of the registered probes.
struct run_probes {
    struct probe_set set;
    int active;             // rank 0 of the run with probes.enabled: writes probes.h5
    int collect;            // every rank of such a run: fills its micro-batches' probe records
    struct probe_leaf leaf; // the records' layout (set up by run_init)
    double *every_sum;      // [leaf.every.size] the step's records folded over the global batch
    double *step_sum;       // [leaf.step.size] the same for the probe-step records
    long *moe_last_seen;    // [MoE blocks, experts] last step in which any token chose it
    size_t *tensor_offset, *tensor_size; // [tensors] the table as plain arrays, for
    int *tensor_muon;                    // probe_tensor_rows (filled by run_probes_open)
    int eval_step, eval_loss;            // h5 series handles of /eval
    int lr_step, lr_loss;                // /lr_probe/step, /lr_probe/loss
    int ev_step, ev_kind, ev_detail;     // /events/{step,kind,detail}
    // spike test: rolling windows of the loss and the gradient norm (steps before this one)
    double *win_loss, *win_gnorm; // [spike_window]
    int win_n, win_pos;
    int above_threshold; // the max attention logit was above probes.logit_threshold
};

struct config;

// /provenance (git sha, compiler and flags, library versions, host, time, world size, threads,
// seed) and /config (every key, typed, plus the resolved INI text as "ini") on any canary file.
int run_h5_provenance(struct h5file *f, const struct run *r, char *err, size_t errlen);
int run_h5_config(struct h5file *f, const struct config *c, char *err, size_t errlen);

// Registers every probe (all ranks, so the layout is known) and, on rank 0, creates
// out_dir/probes.h5 with /provenance, /config and /tensors. Returns 0 or -1 with err.
int run_probes_open(struct run *r, const char *out_dir, char *err, size_t errlen);
// Fills and appends the rows of this step (rank 0). Call after train_step.
int run_probes_step(struct run *r, const struct step_result *res, double tokens_per_s, char *err,
                    size_t errlen);
// Records an event (rank 0): a row of /events, a line on stderr, and a flush so the rows leading
// up to it are on disk. kind: "non-finite", "spike", "threshold".
int run_probes_event(struct run *r, long step, const char *kind, const char *detail, char *err,
                     size_t errlen);

// After run_probes_open, for a rerun that starts mid-run (canary replay): the spike windows
// hold the last probes.spike_window of the n steps' loss and gradient norm (oldest first,
// non-finite ones left out), and the threshold state is above_threshold, as the run had them.
void run_probes_seed(struct run *r, const double *loss, const double *gnorm, int n,
                     int above_threshold);

// Appends an evaluation row (/eval/step, /eval/loss).
int run_probes_eval(struct run *r, long step, double loss, char *err, size_t errlen);
int run_probes_flush(struct run *r, char *err, size_t errlen);
void run_probes_close(struct run *r);

#endif
