// provides: struct muon — Muon for the hidden 2-D matrices: Nesterov momentum, Newton–Schulz
//           orthogonalisation (fp32 through BLAS), the update scale and weight decay.
//
// For W [rows, cols] with gradient G (reference/papers.md §2):
//   B ← β·B + (1−β)·G;  U = (1−β)·G + β·B;  O = NS(U)
//   update = lr_m·s·O + (coupled: lr_m·λ·W | independent: s_t·λ·W),  lr_m = lr_t·muon_lr_scale
//   s = sqrt(max(1, rows/cols)) (shape) or 0.2·sqrt(max(rows, cols)) (rms_match)
// NS: X = U / (‖U‖_F + 1e-7), then ns_steps times, for rows <= cols
//   A = X Xᵀ;  X = a·X + (b·A + c·A·A)·X,  (a, b, c) = (3.4445, −4.7750, 2.0315),
// and for rows > cols the same on Xᵀ, computed untransposed: A = Xᵀ X;  X = a·X + X·(b·A + c·A·A).
// A and A·A are symmetric, so they come from ssyrk (half an sgemm); cost in muon_ns_flops.
// The three parts are separate calls so that launch/ can run the orthogonalisation of each
// matrix on one rank only and share the results (no MPI here).
#ifndef CANARY_OPTIM_MUON_H
#define CANARY_OPTIM_MUON_H

#include <stddef.h>

#include "model/tensors.h"
#include "optim/optim.h"

struct muon {
    float *momentum; // [table.total] (only the Muon tensors' ranges are used)
    float *x, *xn;   // scratch [max rows·cols]
    float *a, *a2;   // scratch [max r²], r = min(rows, cols)
};

void muon_init(struct muon *m, const struct tensor_table *tt, const struct optim_config *oc);
void muon_free(struct muon *m);

// Momentum step for tensor i: updates its buffer and writes the Nesterov input U into
// update[i's range].
void muon_momentum(struct muon *m, float *update, const float *grads, const struct tensor *t,
                   const struct optim_config *oc);

// In place: x[rows, cols] ← NS(x). When ortho_err is not NULL it receives
// ‖O Oᵀ − I‖_F / sqrt(r) of the result (r = min(rows, cols)).
void muon_newton_schulz(struct muon *m, float *x, int rows, int cols, int steps, double *ortho_err);

// update[i's range] (holding O) ← lr_m·s·O + weight decay term, for the step's lr_t.
void muon_finish(float *update, const float *params, const struct tensor *t,
                 const struct optim_config *oc, double lr_t);

// FLOPs of NS on a [rows, cols] matrix (for balancing the shards).
double muon_ns_flops(int rows, int cols, int steps);

#endif
