// provides: checkpoints — write (atomic, Fletcher32), read and verify against the run, find the
//           newest in a run directory, prune old ones.
//
// Layout (DESIGN.md §7): /params/<name> with the tensor's shape, /optim/<name>/{m,v},
// /state (attributes: step, adam_t, data_cursor, seed; with MoE the dataset moe_expert_age
// [MoE blocks, experts], the dead-expert window), /config (every key,
// typed, and the INI text), /provenance. The RNG is counter-based and the sampler is keyed by
// the step, so the step is the whole of the RNG and data state. Rank 0 writes (every rank holds
// the same parameters and optimizer state); every rank reads.
#ifndef CANARY_LAUNCH_CHECKPOINT_H
#define CANARY_LAUNCH_CHECKPOINT_H

#include <stddef.h>

struct run;
struct config;

// Writes run_dir/ckpt/step_NNNNNNNN.h5 for r->step through a temporary name and a rename, then
// deletes all but the newest train.keep_checkpoints. On failure the previous checkpoints are
// untouched. Returns 0 or -1 with err.
int ckpt_write(struct run *r, const char *run_dir, char *err, size_t errlen);

// Loads path into r (built from a compatible config): parameters by name and shape, AdamW
// state, step. Returns 0; -1 with err when the file cannot be read (missing, corrupt: an older
// checkpoint may do); -2 with err when it belongs to another run (a model key, the seed, the
// batch size or the optimizer differ, named).
int ckpt_read(struct run *r, const char *path, char *err, size_t errlen);

// The config stored in a checkpoint (for `canary eval`). Returns 0 or -1 with err.
int ckpt_read_config(const char *path, struct config *c, char *err, size_t errlen);

// The number of ranks that trained the run a checkpoint belongs to (/provenance world_size).
// Returns 0 or -1 with err.
int ckpt_read_world_size(const char *path, int *ranks, char *err, size_t errlen);

// The newest checkpoint of run_dir into out; returns 0, or -1 when there is none.
int ckpt_find_latest(const char *run_dir, char *out, size_t outlen);
// The newest checkpoint of run_dir with a step below `below`, into out and *step; 0 or -1.
int ckpt_find_before(const char *run_dir, long below, char *out, size_t outlen, long *step);
// The oldest checkpoint of run_dir with a step of at least `from`; 0 or -1.
int ckpt_find_from(const char *run_dir, long from, char *out, size_t outlen, long *step);

#endif
