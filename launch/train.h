// provides: struct run and the training loop behind `canary train` (and the step the benchmark
//           times).
//
// A run owns everything sized at init: model and arena, the flat params / grads / update arrays,
// optimizer state, the batch buffers. train_step() is the step of DESIGN.md §3, phase by phase;
// it allocates nothing and does no file I/O. Output (progress, log, metrics) happens between
// steps in train_run().
#ifndef CANARY_LAUNCH_TRAIN_H
#define CANARY_LAUNCH_TRAIN_H

#include <stdio.h>

#include "data/sampler.h"
#include "data/tokens.h"
#include "dist/dist.h"
#include "dist/reduce.h"
#include "launch/config.h"
#include "launch/train_probes.h"
#include "util/timer.h"
#include "losses/xent.h"
#include "model/model.h"
#include "optim/adamw.h"
#include "optim/guard.h"
#include "launch/fault.h"
#include "launch/grad_tree.h"
#include "launch/lr_probe.h"
#include "launch/muon_shards.h"
#include "launch/run_backend.h"

// Exit codes of `canary train`.
enum train_exit {
    TRAIN_EXIT_OK = 0,
    TRAIN_EXIT_INPUT = 1,     // bad config, data or arguments: nothing was trained
    TRAIN_EXIT_IO = 2,        // a file could not be written during the run
    TRAIN_EXIT_NONFINITE = 3, // the loss or gradient became NaN/Inf
    TRAIN_EXIT_STOPPED = 4,   // stopped by a signal (preemption) after writing a checkpoint
};

struct step_result {
    struct loss_parts loss; // mean over the global batch
    double lr;
    double grad_norm;   // global, before clipping
    double clip_factor; // 1 when not clipped
    int finite;         // 0: loss or gradient non-finite; the update was not applied
    int applied;        // 1: the update was computed and applied (not a skipped step)
    // update guards (optim.skip_sigma, optim.update_clip_sigma); the thresholds are NaN until
    // the windows hold optim.guard_min values
    int guard_skipped;          // the skip-step guard skipped this step's update
    double loss_thr, gnorm_thr; // skip-step's thresholds on the loss and the gradient norm
    double update_norm;         // the update's global L2 norm before update-norm clipping
    double update_thr;          // update-norm clipping's cap
    double update_clip_factor;  // the factor applied to the update (1: not clipped)
    double seconds_grads;       // phases 1–5: batch, forward, loss, backward, reduction, clipping
    double seconds_optim;       // phase 6: the optimizers (Muon's sharded NS and gather included)
};

// A counterfactual at one step, for `canary replay` (launch/replay.h): train_step takes step
// `at` (r->step == at before it; row at + 1 of metrics.tsv) differently. BRANCH_NONE: as trained.
enum branch_kind {
    BRANCH_NONE = 0,
    BRANCH_DROP,    // the batch of step `at` is never seen: steps from `at` on draw the next one
    BRANCH_UNSEEN,  // step `at` draws a batch no step of the run draws (index train.steps + at)
    BRANCH_HALF_LR, // step `at` updates with half the scheduled learning rate
    BRANCH_RESET_M, // the first moments (AdamW's m, Muon's momentum) are zeroed before step `at`
    BRANCH_SKIP,    // step `at` applies no update, optimizer state untouched; the data moves on
};

struct run_branch {
    enum branch_kind kind;
    long at;
};

struct run {
    struct config cfg;
    struct dist_ctx *dist;
    struct model model;
    float *params, *grads, *update; // [table.total] each
    double *tensor_sumsq;           // [table.n] per-tensor Σg² of the last step
    struct adamw adamw;
    struct muon_shards *muon; // optim.name = muon, else NULL (launch/muon_shards.h)
    struct token_file train_file, val_file;
    struct sampler sampler;
    int local_batch;       // sequences per rank per step
    int micro_batch;       // sequences per forward/backward
    int micro_steps;       // forward/backward passes per rank per step
    int leaves;            // micro-batches in the global batch (micro_steps · ranks)
    int *inputs, *targets; // [local_batch, T]
    long step;             // next step to take
    float *moe_age;        // [MoE blocks · experts] from a resumed checkpoint, or NULL: steps
                           // since rank 0 last saw each expert (run_probes_open consumes it)
    int random_data;       // benchmark: fixed random tokens instead of the sampler
    double step_flops;     // model FLOPs of one step on this rank (fwd + bwd)

    struct run_backend backend;   // who multiplies the linear layers (train.matmul_backend)
    char resumed_precision[1280]; // the checkpoint's precision and backend when they differ
                                  // from this run's (ckpt_read), else ""

    // gradient reduction
    struct dist_reducer reducer; // bucketed, overlapped averaging (default mode)
    struct grad_tree *tree;      // deterministic mode's tree sum (launch/grad_tree.h), or NULL
    // One record per micro-batch (leaf): its loss parts (LOSS_PARTS), then, when the run
    // collects probes, its `every` probe record and at probe steps its `step` record
    // (probes/leaf.h). All ranks' records are gathered in global order every step.
    double *leaf_loss;      // [leaves · leaf_stride_max] every rank's records, in global order
    double *leaf_loss_mine; // [micro_steps · leaf_stride_max] this rank's
    int leaf_stride;        // doubles per record in this step
    int leaf_stride_max;
    int io_failed;                      // a probe row or event of rank 0 could not be written
    int eval_chunks;                    // micro-batches in one evaluation (all ranks)
    double *eval_loss, *eval_loss_mine; // [LOSS_PARTS · eval_chunks] per-chunk loss parts

    // cross-rank consistency
    unsigned long long *checksums; // [3 · table.n]: values, then scratch for the min and max

    struct fault *fault;      // test hooks (CANARY_FAULT, launch/fault.h), or NULL
    struct run_branch branch; // canary replay's counterfactual (kind BRANCH_NONE otherwise)

    // probes
    struct run_probes *probes; // launch/train_probes.h (every run has one; probes may be off)
    int probe_step;            // set by the loop: the coming step writes probe-cadence rows
    float *logz;               // [micro_batch · T] log Z of the micro-batch in progress
    struct lr_probe *lr_probe; // the local LR-sensitivity probe (launch/lr_probe.h), or NULL

    // QK-clip (optim.qk_clip > 0, else NULL): per [layer, head] the step's max signed logit
    // over its micro-batches and then over the ranks, a scratch row, and η of the last update
    double *qk_max, *qk_tmp, *qk_eta;
    int qk_clipped; // heads with η < 1 at the last update

    // update guards (optim/guard.h): the previous steps' loss, gradient norm and unclipped update
    // norm (windows allocated when their guard is on), and per-tensor Σu² scratch [table.n]
    struct guard_window guard_loss, guard_gnorm, guard_unorm;
    double *update_sumsq;

    // outcome, for sweeps
    double l0;         // held-out loss at step 0
    double final_eval; // held-out loss at the end (NaN when the run stopped early)
    const char *tag;   // prefix of printed lines (the run id in a sweep), may be NULL
    int quiet;         // 1: only the first and last lines and evaluations are printed
};

// Loads data, builds the model, initialises weights and state. The config must be validated.
// With random_data (the benchmark) no token file is read: batches are random tokens.
// Returns 0, or -1 with a message in err.
int run_init(struct run *r, const struct config *cfg, struct dist_ctx *dist, int random_data,
             char *err, size_t errlen);
void run_free(struct run *r);

// Phases 1–6 of DESIGN.md §3 for step r->step; advances r->step unless the loss or gradient was
// non-finite (the caller decides then). A step the skip-step guard skips advances with no update.
void train_step(struct run *r, struct step_result *res);

// The index of the global batch step r->step draws: the step itself, unless a replay branch
// moves it (DROP, UNSEEN). Batch b is global samples b·batch_size … b·batch_size + batch_size − 1.
uint64_t run_batch_index(const struct run *r);

// This rank's slice of global batch `batch` into r->inputs / r->targets, with the CANARY_FAULT
// data hook applied (launch/fault.h). Between steps or in phase 1 only.
void run_load_batch(struct run *r, uint64_t batch);

// Compares parameter checksums across the ranks of the run; aborts the job naming the first
// tensor that differs. No-op with one rank.
void train_check_consistency(struct run *r);

// FNV-1a over the bits of all parameters: a fingerprint of the weights for comparing runs.
unsigned long long train_params_checksum(const struct run *r);

// The mean of per-micro-batch loss parts over n records per rank of `stride` doubles (the loss
// parts first; `mine` holds this rank's, `all` room for every rank's), gathered and summed in
// global order so the result does not depend on the rank count. Returns the records in global
// order (all, or mine with one rank).
const double *run_mean_in_global_order(struct run *r, const double *mine, double *all, int n,
                                       int stride, struct loss_parts *out);

// Mean held-out loss over train.eval_batches batches (all ranks take part).
void train_eval(struct run *r, struct loss_parts *out);

// Between steps (launch/train_loop.c, also used by canary replay): the update guards' events
// of the step just taken (kind "skip" or "update_clip"; step counted from 0 as r->step was),
// and a non-finite step's description ("non-finite loss nan (…)" or the first tensor whose
// gradient is not finite).
void train_guard_events(struct run *r, const struct step_result *res, long step);
void train_nonfinite_detail(const struct run *r, const struct step_result *res, char *out,
                            size_t len);

#define TRAIN_METRICS_HEADER "kind\tstep\tloss\tce\tz\tlr\tgrad_norm\tclip_factor\ttokens_per_s\n"
// A "train" row of metrics.tsv (step counted from 1), at full precision, flushed.
void train_metrics_row(FILE *f, long step, const struct step_result *res, double tokens_per_s);

// The `canary train` loop: step-0 evaluation, steps, progress, evaluation, final summary.
// Writes log.txt and metrics.tsv under out_dir (rank 0). Returns an enum train_exit.
int train_run(struct run *r, const char *out_dir);

#endif
