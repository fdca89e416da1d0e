// provides: struct adamw — AdamW state and its update computation.
//
// Δ = m̂ / (sqrt(v̂) + ε) with bias-corrected moments. Weight decay λ on the tensors whose kind
// decays (every 2-D tensor, not gains), in one of two forms (reference/papers.md §1.5), with
// s_t = lr_t / η the schedule factor:
//   independent: θ ← θ − (lr_t·Δ + s_t·λ·θ)
//   coupled:     θ ← θ − lr_t·(Δ + λ·θ)
#ifndef CANARY_OPTIM_ADAMW_H
#define CANARY_OPTIM_ADAMW_H

#include <stddef.h>

#include "model/tensors.h"
#include "optim/optim.h"

struct adamw {
    float *m, *v; // [table.total] first and second moments, owned
    size_t n;
    long t;            // updates taken so far (bias correction uses t + 1 for the next)
    double *stable;    // [table.n] StableAdamW: the last step's lr factor 1/max(1, RMS) per
                       // tensor (1 for Muon's); NULL unless optim.stable_adamw (adamw_init)
    int stable_scaled; // tensors with a factor below 1 at the last step
};

// n floats of state; ntensors > 0 allocates the StableAdamW factors (optim.stable_adamw).
void adamw_init(struct adamw *a, size_t n, int ntensors);
void adamw_free(struct adamw *a);

// Advances the moments with grads and writes update[] (to be subtracted from params) for the
// learning rate lr_t of this step, for the tensors of AdamW's group (all of them unless
// optim.name = muon). Does not modify params. Each tensor's lr is lr_t × its table lr_scale
// (µParam; 1 otherwise), a coupled decay scaling with it. With optim.stable_adamw each tensor's lr
// (and a coupled decay) is divided by max(1, RMS), RMS² = mean over the tensor of g² / max(v̂, ε²)
// with v̂ the bias-corrected second moment including this g (summed in a fixed order: the same
// bits on any thread count).
void adamw_update_compute(struct adamw *a, float *update, const float *params, const float *grads,
                          const struct tensor_table *tt, const struct optim_config *oc,
                          double lr_t);

#endif
