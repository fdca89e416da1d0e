// provides: struct config (every key of DESIGN.md §6 that canary implements), loading from INI
//           through libinih, --set overrides, validation, and writing (INI and the markdown
//           reference in docs/config.md).
//
// One key table (config_keys.c) drives defaults, parsing, range checks, docs and the resolved
// output; a key exists in exactly one place. struct config is plain data so rank 0 can read the
// file and broadcast the bytes.
#ifndef CANARY_LAUNCH_CONFIG_H
#define CANARY_LAUNCH_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "model/model.h"
#include "optim/optim.h"

#define CONFIG_PATH_MAX   1024
#define CONFIG_ORIGIN_MAX 96
#define CONFIG_MAX_KEYS   96

struct train_config {
    int steps;
    int batch_size; // global, sequences
    int grad_accum; // micro-batches per step and rank
    int64_t seed;
    int eval_every;       // steps between evaluations (0: only at the start and end)
    int eval_batches;     // held-out batches (of batch_size sequences) per evaluation
    int threads;          // BLAS/OpenMP threads per rank
    int log_every;        // steps between progress lines
    int deterministic;    // fixed-order reduction: bitwise identical for any power-of-two ranks
    double bucket_mb;     // gradient allreduce bucket size (MiB)
    int overlap_reduce;   // start bucket allreduces during backward (0: all after backward)
    int check_every;      // steps between cross-rank parameter checksums (0: never)
    int checkpoint_every; // steps between checkpoints (0: only at the end)
    int on_nonfinite;     // 0 stop, 1 skip the step
    int keep_checkpoints; // newest checkpoints kept
    int precision;        // 0 fp32, 1 bf16 (the linear layers' operands; model_set_precision)
    int bf16_attention;   // with bf16: attention's q·k and p·v products rounded too
    int matmul_backend;   // 0 auto, 1 openblas, 2 onednn (launch/run_backend.h)
};

struct probes_config {
    int enabled;     // write probes.h5
    int every;       // steps between rows of the per-layer / per-head / per-tensor probes
    int flush_every; // steps between flushes of probes.h5 (readers see rows up to the last flush)
    int lr_probe_every;     // steps between local LR-sensitivity probes (0: never)
    double spike_sigma;     // z-score of a loss or gradient-norm spike event
    int spike_window;       // steps in the rolling window of the spike z-score
    double logit_threshold; // max attention logit that records a threshold event
    int dead_window;        // MoE: steps without a token that make an expert dead
};

struct data_config {
    char train[CONFIG_PATH_MAX]; // token file
    char val[CONFIG_PATH_MAX];   // held-out token file; empty: the tail of train
    double val_fraction;         // tail of train held out when val is empty
};

#define SWEEP_MAX_KEYS   16
#define SWEEP_VALUES_MAX 1024

// The [sweep] section: swept keys with their raw value lists ("3e-4, 1e-3"), in file order.
struct sweep_config {
    int nkeys;
    char key[SWEEP_MAX_KEYS][64];                  // "optim.lr"
    char values[SWEEP_MAX_KEYS][SWEEP_VALUES_MAX]; // comma-separated, as written
    int line[SWEEP_MAX_KEYS];                      // where it was set, for messages
    int ranks_per_run;
};

struct config {
    struct model_config model;
    struct optim_config optim;
    struct train_config train;
    struct data_config data;
    struct probes_config probes;
    struct sweep_config sweep;
    char source[CONFIG_PATH_MAX];                    // the file read, or empty
    char origin[CONFIG_MAX_KEYS][CONFIG_ORIGIN_MAX]; // per key: "default", "file:line", "--set"
};

// All defaults.
void config_defaults(struct config *c);

// Reads an INI file over c. Returns 0, or -1 with "file:line: ..." in err.
int config_load_file(struct config *c, const char *path, char *err, size_t errlen);

// Reads INI text (a checkpoint's resolved config) over c; name labels messages.
int config_load_string(struct config *c, const char *text, const char *name, char *err,
                       size_t errlen);

// Applies "section.key=value" (a --set argument). Returns 0 or -1 with a reason in err.
int config_set(struct config *c, const char *assignment, char *err, size_t errlen);
// Where section.key's value came from ("default", "file:line", "--set", ...), or NULL for no
// such key.
const char *config_origin(const struct config *c, const char *dotted_key);

// The same, recording origin ("sweep", ...) as where the value came from.
int config_set_from(struct config *c, const char *assignment, const char *origin, char *err,
                    size_t errlen);

// Cross-key checks and resolution (head_dim 0 → dim/heads) for a job of world_size ranks.
// need_data: the command reads data.train. Returns 0 or -1 with a reason in err.
int config_validate(struct config *c, int world_size, int need_data, char *err, size_t errlen);

// The resolved config as INI (every key, with its origin as a comment).
void config_write(const struct config *c, FILE *f);
// docs/config.md: every key with its type, default, range and description.
void config_write_markdown(FILE *f);

// Value of key "section.key" as text (for provenance and tests); returns 0 or -1.
int config_get_string(const struct config *c, const char *dotted, char *out, size_t outlen);

#endif
