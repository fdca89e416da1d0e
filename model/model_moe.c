// The MoE feed-forward of a block. Each expert's tokens sit contiguously in the expert buffers
// (model/moe.c packs them), so every expert is two sgemms on its rows: no per-token loops over
// weights.
#include "model/model_moe.h"

#include <string.h>

#include "model/matmul.h"
#include "model/model_private.h"

// Block l's per-group choice counts: [groups of the micro-batch, E] (room for max_batch).
static double *moe_block_group_counts(const struct model *m, int l)
{
    return m->moe_group_counts + (size_t)l * m->moe_groups_max * m->cfg.experts;
}

void moe_block_forward(struct model *m, const float *params, int l, int B, float *x_out)
{
    const struct model_config *c = &m->cfg;
    const struct block_index *bi = &m->blocks[l];
    struct block_acts *a = &m->acts.blocks[l];
    struct model_acts *g = &m->acts;
    int N = B * c->seq_len, C = c->dim, E = c->experts, k = c->top_k, F = m->ffn;
    int U = c->mlp == MLP_SWIGLU ? 2 * F : F;
    double *counts = m->moe_counts + (size_t)l * 2 * E, *mean_p = m->moe_mean_p + (size_t)l * E;
    double *group_counts = moe_block_group_counts(m, l);

    matmul_forward(m->mm, a->probs, a->n2, tensor_ptr(m, params, bi->router), N, C,
                   E); // logits, then softmax
    m->moe_stats[l] =
        moe_route_forward(a->probs, a->lse, a->sel, a->gates, a->slot, a->slot_tok, a->off, counts,
                          mean_p, group_counts, N, E, k, c->gate_renorm, m->moe_group,
                          moe_capacity(m->moe_group, E, k, c->capacity_factor));
    memcpy(x_out, a->x_mid, (size_t)N * C * sizeof(float));
    moe_gather(g->moe_x, a->n2, a->slot_tok, a->off[E], C);
    for (int e = 0; e < E; e++) {
        int r0 = a->off[e], n = a->off[e + 1] - r0;
        if (n == 0)
            continue;
        matmul_forward(m->mm, a->eh + (size_t)r0 * U, g->moe_x + (size_t)r0 * C,
                       tensor_ptr(m, params, bi->ew1[e]), n, C, U);
        mlp_act_forward(m->cfg.mlp, a->ea + (size_t)r0 * F, a->eh + (size_t)r0 * U, n, F);
        matmul_forward(m->mm, a->ey + (size_t)r0 * C, a->ea + (size_t)r0 * F,
                       tensor_ptr(m, params, bi->ew2[e]), n, F, C);
    }
    moe_combine_forward(x_out, a->ey, a->gates, a->slot, N, k, C);
    for (int s = 0; s < c->shared_experts; s++) {
        float *u = a->u + (size_t)s * N * U, *act = a->a + (size_t)s * N * F;
        matmul_forward(m->mm, u, a->n2, tensor_ptr(m, params, bi->sw1[s]), N, C, U);
        mlp_act_forward(m->cfg.mlp, act, u, N, F);
        matmul_forward_acc(m->mm, x_out, act, tensor_ptr(m, params, bi->sw2[s]), N, F, C);
    }
}

void moe_block_backward(struct model *m, const float *params, float *grads, int l, int B,
                        float loss_scale)
{
    const struct model_config *c = &m->cfg;
    const struct block_index *bi = &m->blocks[l];
    struct block_acts *a = &m->acts.blocks[l];
    struct model_acts *g = &m->acts;
    int N = B * c->seq_len, C = c->dim, E = c->experts, k = c->top_k, F = m->ffn;
    int U = c->mlp == MLP_SWIGLU ? 2 * F : F;

    // dn collects dL/d n2 from the shared experts, the routed experts and the router
    memset(g->dn, 0, (size_t)N * C * sizeof(float));
    for (int s = 0; s < c->shared_experts; s++) {
        const float *u = a->u + (size_t)s * N * U, *act = a->a + (size_t)s * N * F;
        matmul_backward(m->mm, g->da, tensor_ptr_mut(m, grads, bi->sw2[s]), g->dx, act,
                        tensor_ptr(m, params, bi->sw2[s]), N, F, C);
        mlp_act_backward(m->cfg.mlp, g->du, g->da, u, act, N, F);
        matmul_backward(m->mm, g->moe_tmp, tensor_ptr_mut(m, grads, bi->sw1[s]), g->du, a->n2,
                        tensor_ptr(m, params, bi->sw1[s]), N, C, U);
        model_add_into(g->dn, g->moe_tmp, (size_t)N * C);
    }
    moe_combine_backward(g->moe_dy, g->moe_dgate, g->dx, a->ey, a->gates, a->slot, N, k, C);
    moe_gather(g->moe_x, a->n2, a->slot_tok, a->off[E], C);
    for (int e = 0; e < E; e++) {
        int r0 = a->off[e], n = a->off[e + 1] - r0;
        if (n == 0)
            continue;
        matmul_backward(m->mm, g->moe_da + (size_t)r0 * F, tensor_ptr_mut(m, grads, bi->ew2[e]),
                        g->moe_dy + (size_t)r0 * C, a->ea + (size_t)r0 * F,
                        tensor_ptr(m, params, bi->ew2[e]), n, F, C);
        mlp_act_backward(m->cfg.mlp, g->moe_dh + (size_t)r0 * U, g->moe_da + (size_t)r0 * F,
                         a->eh + (size_t)r0 * U, a->ea + (size_t)r0 * F, n, F);
        matmul_backward(m->mm, g->moe_dx + (size_t)r0 * C, tensor_ptr_mut(m, grads, bi->ew1[e]),
                        g->moe_dh + (size_t)r0 * U, g->moe_x + (size_t)r0 * C,
                        tensor_ptr(m, params, bi->ew1[e]), n, C, U);
    }
    moe_scatter_add(g->dn, g->moe_dx, a->slot, N, k, C);
    double scale = (double)loss_scale / m->moe_layers;
    moe_route_backward(g->moe_dlogits, g->moe_dgate, a->probs, a->lse, a->sel, a->gates,
                       moe_block_group_counts(m, l), N, E, k, m->moe_group, c->gate_renorm,
                       m->balance_coef * scale, m->z_coef * scale);
    matmul_backward(m->mm, g->moe_tmp, tensor_ptr_mut(m, grads, bi->router), g->moe_dlogits, a->n2,
                    tensor_ptr(m, params, bi->router), N, C, E);
    model_add_into(g->dn, g->moe_tmp, (size_t)N * C);
    norm_backward(g->dx, tensor_ptr_mut(m, grads, bi->n2), g->dn, a->x_mid,
                  tensor_ptr(m, params, bi->n2), a->n2_mean, a->n2_rstd, N, C, c->norm);
}
