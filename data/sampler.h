// provides: struct sampler — training batches keyed by (seed, global sample index) and fixed
//           held-out evaluation batches.
//
// Training sample i (global, counted across steps and ranks) is the T+1 tokens starting at
// hash(seed, i) mod (train_tokens − T). Step s of a global batch of B sequences uses samples
// s·B … s·B + B − 1; a rank takes its slice. So the data depend only on (seed, step), never on the
// world size, and the data cursor of a checkpoint is just the step.
// Held-out: the tail val_fraction of the training file (or a separate file); evaluation
// sequence k starts at k·T within it (wrapping), the same batches at every evaluation.
#ifndef CANARY_DATA_SAMPLER_H
#define CANARY_DATA_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

struct sampler {
    const uint16_t *train; // [n_train]
    size_t n_train;
    const uint16_t *val; // [n_val]
    size_t n_val;
    int seq_len;
    uint64_t seed;
};

// inputs[B, T] and targets[B, T] for global samples first … first + B − 1. Overwrites.
void sampler_train_batch(const struct sampler *s, int *inputs, int *targets, uint64_t first, int B);
// Evaluation sequences first … first + B − 1. Overwrites.
void sampler_eval_batch(const struct sampler *s, int *inputs, int *targets, uint64_t first, int B);
// Number of distinct evaluation sequences the held-out split holds.
size_t sampler_eval_sequences(const struct sampler *s);

#endif
