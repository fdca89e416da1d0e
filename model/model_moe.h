// provides: the feed-forward half of a MoE block (private to model/): router, routed and shared
//           experts, composed from model/moe.h's routing and matmuls.
#ifndef CANARY_MODEL_MODEL_MOE_H
#define CANARY_MODEL_MODEL_MOE_H

#include "model/model.h"

// x_out[B·T, C] = x_mid + Σ shared experts(n2) + Σ_{kept} gate · expert(n2), for block l.
// Records the routing statistics in m->moe_stats[l] and the block's counts.
void moe_block_forward(struct model *m, const float *params, int l, int B, float *x_out);

// dx holds dL/d(block output) on entry and dL/d(x_mid) on exit; accumulates into grads (router,
// experts, ln2 gain), including the auxiliary losses' gradients (m->balance_coef, m->z_coef,
// scaled by loss_scale and averaged over the MoE layers).
void moe_block_backward(struct model *m, const float *params, float *grads, int l, int B,
                        float loss_scale);

#endif
