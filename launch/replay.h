// provides: the engine of `canary replay` (launch/cmd_replay.c has the command line and the
//           files): rerun a window of a trained run around a step S bit for bit, rank the
//           sequences of batch S by their own loss, and run the counterfactual branches from the
//           state just before S.
//
// Steps are counted from 1, as in metrics.tsv and /events: step S is the one a run takes with
// r->step == S − 1 and whose row says S. Every function here is collective over the run's ranks
// unless it says rank 0.
#ifndef CANARY_LAUNCH_REPLAY_H
#define CANARY_LAUNCH_REPLAY_H

#include <stdio.h>

#include "launch/train.h"
#include "util/error.h"

// One row of a run's metrics.tsv: the step's loss parts, LR, gradient norm and clip factor.
struct replay_row {
    double loss, ce, z, lr, grad_norm, clip;
    int present; // the run wrote this step's row
};

// Where the replay starts and what it compares with (launch/replay_plan.c).
struct replay_plan {
    long S, K, end; // the spike step, the window, the last step replayed
    long start;     // the step of the state the replay starts from (0: initial weights)
    char ckpt[CONFIG_PATH_MAX + 64]; // its checkpoint ("" for the initial weights)
    int ranks;                       // ranks that trained the run
    int run_threads;                 // train.threads the replayed steps ran with
    int above_start; // the run's max attention logit was above probes.logit_threshold at start
    int above_S;     // the replay's, before step S (the branches start with it)
    int have_state;  // the replay wrote the state before S (the branches need it)
    long pre_first;  // the pre-spike window: steps pre_first .. S − 1 of the run
    double pre_mean, pre_sd; // its losses' mean and sample standard deviation
    struct replay_row *rows; // the run's metrics rows by step, [0, nrows)
    long nrows;
};

// Rank 0: reads run_dir's metrics.tsv and checkpoints and plans a replay of `step` with
// `window` steps each side; refuses a step outside the run, a run without checkpoints, and a
// rank count (size) that cannot reproduce it. 0, or -1 with err.
int replay_plan_make(struct replay_plan *p, const char *run_dir, long step, long window,
                     const struct config *cfg, int size, char *err, size_t errlen);
// Rank 0: the config file steps first .. last of the run in run_dir ran with, into path:
// config.ini, or the config.ini.to_step_N a resume with other settings kept (the smallest N ≥
// last). -1 with err when such a resume lies inside first .. last.
int replay_config_for(const char *run_dir, long first, long last, char *path, size_t len, char *err,
                      size_t errlen);
// Every rank: the run's config, with opts' --set (train.threads) and the replay's probe
// cadence, from config_path (run_dir/config.ini on entry; rank 0 replaces it by the file the
// replayed steps ran with when the run was resumed with other settings); rank 0 also makes the
// plan (p->run_threads: the run's own thread count). 1; 0 with rank 0's reason in err; -1 when
// the config failed to load (printed).
struct cli_config_opts;
int replay_load(struct cli_config_opts *opts, char *config_path, size_t pathlen,
                const char *run_dir, long step, long window, struct dist_ctx *d, struct config *cfg,
                struct replay_plan *p, char *err, size_t errlen);
// Rank 0's plan to every rank.
void replay_plan_bcast(struct dist_ctx *d, struct replay_plan *p);
void replay_plan_free(struct replay_plan *p);
// After run_probes_open: a rerun taking step `next` next carries the run's spike windows (from
// its metrics rows) and the threshold state `above`, so its events are the run's.
void replay_seed_probes(struct run *r, const struct replay_plan *p, long next, int above);

// Where a rerun writes: rank 0's metrics.tsv (train rows in the run's format) and log, or NULL.
struct replay_out {
    FILE *metrics, *log;
};

// What a rerun records per step, indexed by step − first (n entries; NaN where not taken).
struct replay_trace {
    long first, n;
    double *loss, *grad_norm; // the step's loss and gradient norm (before clipping)
    double *update_norm;      // the global norm of the update it applied
};

void replay_trace_init(struct replay_trace *t, long first, long last);
void replay_trace_free(struct replay_trace *t);

// Takes steps until r->step == end (or a non-finite step under train.on_nonfinite = stop: then
// returns 1), writing each step's metrics row, probes and guard events, and its loss and update
// norm into trace. With `run` (the run's rows, indexed by step, [0, nrows)), compares every step
// with the run's row; the first step that differs goes to *parted (0: none) with what differed in
// parted_what. Returns 0, 1, or -1 when probes.h5 could not be written (err).
int replay_steps(struct run *r, long end, struct replay_out *o, struct replay_trace *trace,
                 const struct replay_row *run, long nrows, long *parted, char *parted_what,
                 size_t whatlen, char *err, size_t errlen);

// The sequences of the global batch of step S (r->step must be S − 1, the weights those S
// trains from) with their own loss (ce + z), in global order: loss[B], and tokens[B, T + 1]
// (inputs, then the last target). Rank 0 computes it alone (the other ranks return at once);
// the CANARY_FAULT data hook applies to each rank's slice as in training. Overwrites the
// activations and batch buffers (the next step reloads them).
void replay_batch_losses(struct run *r, double *loss, int *tokens);

// The counterfactual branches, in the order of the table.
enum replay_branch_id {
    RB_DROP,
    RB_UNSEEN,
    RB_HALF_LR,
    RB_RESET_M,
    RB_SKIP,
    RB_GUARD_SKIP,
    RB_GUARD_CLIP,
    RB_COUNT,
};
extern const char *const replay_branch_names[RB_COUNT];
extern const char *const replay_branch_what[RB_COUNT];

// One row of the branch table.
struct replay_branch_result {
    const char *name, *what;
    int ran; // 0: not run (note says why)
    char note[160];
    double loss_S, loss_end, loss_max; // the training loss at S, at the last step, the worst
    double gnorm_S;                    // the gradient norm at S (before clipping)
    int recovered;                     // loss_end <= pre-spike mean + 1 sigma
};

// Fills the losses and the verdict of a branch from its trace (steps S .. end).
void replay_branch_summarise(struct replay_branch_result *b, const struct replay_trace *t,
                             double pre_mean, double pre_sd);

// Rank 0's output (launch/replay_report.c). replay_say prints a line to stdout and log (may be
// NULL). replay_open_dir makes a rerun's directory: config.ini, metrics.tsv with its header and,
// with_log, log.txt. replay_fopen / replay_fclose: a file of dir written as NAME.tmp and renamed
// to NAME by the close once every write succeeded (summary.tsv marks a finished replay).
void replay_say(FILE *log, int rank0, const char *fmt, ...) CANARY_PRINTF(3, 4);
int replay_open_dir(const char *dir, const struct config *c, struct replay_out *o, int with_log,
                    char *err, size_t errlen);
int replay_close_out(struct replay_out *o);
FILE *replay_fopen(const char *dir, const char *name, char *err, size_t errlen);
int replay_fclose(FILE *f, const char *dir, const char *name, char *err, size_t errlen);

// batch.tsv (every sequence of batch S, the worst first, decoded by the tokenizer of tf, the
// training file c->data.train) and the `worst` first printed.
int replay_report_batch(const char *dir, FILE *log, const struct config *c,
                        const struct token_file *tf, long S, const double *loss, const int *tokens,
                        int worst, char *err, size_t errlen);
// branches.tsv and the printed table.
int replay_report_branches(const char *dir, FILE *log, long S, long end, double pre_mean,
                           double pre_sd, const struct replay_branch_result *res, int n, char *err,
                           size_t errlen);

#endif
