// provides: struct grad_tree — deterministic mode's gradient sum: every micro-batch's gradient
//           is computed alone and the gradients are summed along a balanced binary tree over
//           the micro-batches of the global batch, first locally (a binary counter of partial
//           sums, one buffer per level: log2(micro-batches) + 1), then across ranks
//           (dist_tree_allreduce_f32). The tree is the same for any power-of-two rank count,
//           so are the bits.
#ifndef CANARY_LAUNCH_GRAD_TREE_H
#define CANARY_LAUNCH_GRAD_TREE_H

#include <stddef.h>

#include "dist/dist.h"

struct grad_tree {
    size_t n;       // floats per gradient
    int levels;     // buffers
    float **sum;    // [levels][n] partial sums, the deepest last
    int *level;     // level of each stacked partial sum
    int depth;      // partial sums on the stack
    float *scratch; // [n] receive buffer of the cross-rank tree (more than one rank)
};

// For micro_steps (a power of two) local micro-batches of n-float gradients.
struct grad_tree *grad_tree_init(size_t n, int micro_steps, int ranks);
void grad_tree_free(struct grad_tree *t);

// The zeroed buffer the next micro-batch's gradient accumulates into.
float *grad_tree_leaf(struct grad_tree *t);
// Folds the gradient just computed in grad_tree_leaf's buffer into the tree (left + right).
void grad_tree_push(struct grad_tree *t);
// After the last micro-batch: grads[n] ← the sum over the global batch (the local root, summed
// across ranks along the same tree). Empties the tree.
void grad_tree_finish(struct grad_tree *t, float *grads, struct dist_ctx *d);

#endif
