// The helpers model.c, model_mla.c and model_moe.c share (declared in model_private.h): qk-norm
// over a block's head rows and y += x. They live here, not in model.c, so that the block files
// depend on this unit and model.c on them, with no call going back.
#include <string.h>

#include "model/model_private.h"
#include "util/bf16.h"
#include "model/norm.h"

void model_qk_norm_forward(struct model *m, const float *params, int l, int BHT)
{
    const struct block_index *bi = &m->blocks[l];
    struct block_acts *a = &m->acts.blocks[l];
    norm_forward(a->q, a->qn_mean, a->qn_rstd, a->q_raw, tensor_ptr(m, params, bi->q_norm), BHT,
                 m->dqk, m->cfg.norm);
    norm_forward(a->k, a->kn_mean, a->kn_rstd, a->k_raw, tensor_ptr(m, params, bi->k_norm), BHT,
                 m->dqk, m->cfg.norm);
}

void model_qk_norm_backward(struct model *m, const float *params, float *grads, int l, int BHT)
{
    const struct block_index *bi = &m->blocks[l];
    struct block_acts *a = &m->acts.blocks[l];
    struct model_acts *g = &m->acts;
    size_t n = (size_t)BHT * m->dqk;
    memset(g->dq_raw, 0, n * sizeof(float));
    memset(g->dk_raw, 0, n * sizeof(float));
    norm_backward(g->dq_raw, tensor_ptr_mut(m, grads, bi->q_norm), g->dq, a->q_raw,
                  tensor_ptr(m, params, bi->q_norm), a->qn_mean, a->qn_rstd, BHT, m->dqk,
                  m->cfg.norm);
    norm_backward(g->dk_raw, tensor_ptr_mut(m, grads, bi->k_norm), g->dk, a->k_raw,
                  tensor_ptr(m, params, bi->k_norm), a->kn_mean, a->kn_rstd, BHT, m->dqk,
                  m->cfg.norm);
}

void model_add_into(float *y, const float *x, size_t n)
{
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++)
        y[i] += x[i];
}

void model_attn_round(const struct model *m, float *x, size_t n)
{
    if (m->attn_pr)
        bf16_round_array(x, x, n);
}
