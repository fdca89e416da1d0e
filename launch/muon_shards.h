// provides: struct muon_shards — Muon across the ranks of a run: the optimizer state (every rank
//           keeps the whole momentum), which rank orthogonalises each matrix, and the gather
//           that shares the results. The step's Muon half (DESIGN.md §3 phase 6).
//
// Each matrix's Newton–Schulz runs on one rank, chosen longest-processing-time first over the
// ranks (balanced by FLOPs; the same plan on every rank). The gather copies bits, so any rank
// count gives the unsharded result.
#ifndef CANARY_LAUNCH_MUON_SHARDS_H
#define CANARY_LAUNCH_MUON_SHARDS_H

#include <stddef.h>

#include "dist/dist.h"
#include "dist/reduce.h"
#include "model/tensors.h"
#include "optim/muon.h"
#include "optim/optim.h"

struct muon_shards {
    struct muon state;         // momentum [table.total] and Newton–Schulz scratch
    int *owner;                // [table.n] rank that orthogonalises the tensor, −1 not Muon
    float *send, *recv;        // packed updates shared after the sharded Newton–Schulz
    struct dist_gather gather; // how many floats each rank sends and where they land
    double *ortho;             // [table.n] ‖OOᵀ − I‖_F/sqrt(r) at probe steps (0 elsewhere)
};

// Allocates the state and plans the shards over dist's ranks. Returns NULL with a message in
// err when the model has no matrix Muon takes (optim.name = muon cannot work).
struct muon_shards *muon_shards_init(const struct tensor_table *tt, const struct optim_config *oc,
                                     struct dist_ctx *dist, char *err, size_t errlen);
void muon_shards_free(struct muon_shards *s);

// 1 when tensor i is updated by Muon (s may be NULL: AdamW only).
static inline int muon_shards_owns(const struct muon_shards *s, int i)
{
    return s && s->owner[i] >= 0;
}

// Muon's half of phase 6: momentum for every Muon matrix (from grads into update), the
// Newton–Schulz of the matrices this rank owns, the finished update of each (lr_t, weight
// decay on params), then every rank gathers the others'. probe: record s->ortho.
void muon_shards_step(struct muon_shards *s, struct dist_ctx *dist, const struct tensor_table *tt,
                      const struct optim_config *oc, float *update, const float *grads,
                      const float *params, double lr_t, int probe);

#endif
