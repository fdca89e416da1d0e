// provides: helpers the block files of model/ share (model.c, model_mla.c, model_moe.c): a tensor's
//           slice of a table-sized buffer, qk-norm, and y += x (model_shared.c). Private to
//           model/.
#ifndef CANARY_MODEL_MODEL_PRIVATE_H
#define CANARY_MODEL_MODEL_PRIVATE_H

#include <stddef.h>

#include "model/model.h"

// Tensor idx of the table inside base (params or grads, [table.total]).
// Floats of one layer's attention probabilities for the largest micro-batch: B·H·T·T.
static inline size_t model_attn_probs(const struct model *m)
{
    return (size_t)m->max_batch * m->cfg.heads * m->cfg.seq_len * m->cfg.seq_len;
}

// bf16 attention: rounds x[n] in place (the operands of attention's products), else nothing.
void model_attn_round(const struct model *m, float *x, size_t n);

static inline const float *tensor_ptr(const struct model *m, const float *base, int idx)
{
    return base + m->table.t[idx].offset;
}

static inline float *tensor_ptr_mut(const struct model *m, float *base, int idx)
{
    return base + m->table.t[idx].offset;
}

// qk-norm of block l over its BHT head rows of width m->dqk (MHA and MLA alike):
// forward a->q, a->k ← norm(a->q_raw, a->k_raw); backward g->dq, g->dk (dL/d normed) →
// g->dq_raw, g->dk_raw (OVERWRITTEN), the gains' gradients ACCUMULATED into grads.
void model_qk_norm_forward(struct model *m, const float *params, int l, int BHT);
void model_qk_norm_backward(struct model *m, const float *params, float *grads, int l, int BHT);

// y[n] += x[n] (parallel over static chunks).
void model_add_into(float *y, const float *x, size_t n);

#endif
