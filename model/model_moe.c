// The MoE feed-forward of a block. Each expert's tokens sit contiguously in the expert buffers
// (model/moe.c packs them), so every expert is two sgemms on its rows: no per-token loops over
// weights.
#include "model/model_moe.h"

#include <string.h>

#include "model/matmul.h"

static const float *W(const struct model *m, const float *base, int idx)
{
    return base + m->table.t[idx].offset;
}

static float *G(const struct model *m, float *base, int idx)
{
    return base + m->table.t[idx].offset;
}

static void act_forward(const struct model *m, float *out, const float *in, int rows)
{
    if (m->cfg.mlp == MLP_SWIGLU)
        swiglu_forward(out, in, rows, m->ffn);
    else
        gelu_forward(out, in, (size_t)rows * m->ffn);
}

static void act_backward(const struct model *m, float *din, const float *dout, const float *in,
                         int rows)
{
    if (m->cfg.mlp == MLP_SWIGLU)
        swiglu_backward(din, dout, in, rows, m->ffn);
    else
        gelu_backward(din, dout, in, (size_t)rows * m->ffn);
}

static void add_into(float *y, const float *x, size_t n)
{
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++)
        y[i] += x[i];
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

    matmul_forward(a->probs, a->n2, W(m, params, bi->router), N, C, E); // logits, then softmax
    m->moe_stats[l] = moe_route_forward(a->probs, a->lse, a->sel, a->gates, a->slot, a->slot_tok,
                                        a->off, counts, mean_p, N, E, k, c->gate_renorm,
                                        moe_capacity(N, E, k, c->capacity_factor));
    memcpy(x_out, a->x_mid, (size_t)N * C * sizeof(float));
    moe_gather(g->moe_x, a->n2, a->slot_tok, a->off[E], C);
    for (int e = 0; e < E; e++) {
        int r0 = a->off[e], n = a->off[e + 1] - r0;
        if (n == 0)
            continue;
        matmul_forward(a->eh + (size_t)r0 * U, g->moe_x + (size_t)r0 * C, W(m, params, bi->ew1[e]),
                       n, C, U);
        act_forward(m, a->ea + (size_t)r0 * F, a->eh + (size_t)r0 * U, n);
        matmul_forward(a->ey + (size_t)r0 * C, a->ea + (size_t)r0 * F, W(m, params, bi->ew2[e]), n,
                       F, C);
    }
    moe_combine_forward(x_out, a->ey, a->gates, a->slot, N, k, C);
    for (int s = 0; s < c->shared_experts; s++) {
        float *u = a->u + (size_t)s * N * U, *act = a->a + (size_t)s * N * F;
        matmul_forward(u, a->n2, W(m, params, bi->sw1[s]), N, C, U);
        act_forward(m, act, u, N);
        matmul_forward(g->moe_tmp, act, W(m, params, bi->sw2[s]), N, F, C);
        add_into(x_out, g->moe_tmp, (size_t)N * C);
    }
}

void moe_block_backward(struct model *m, const float *params, float *grads, int l, int B)
{
    const struct model_config *c = &m->cfg;
    const struct block_index *bi = &m->blocks[l];
    struct block_acts *a = &m->acts.blocks[l];
    struct model_acts *g = &m->acts;
    int N = B * c->seq_len, C = c->dim, E = c->experts, k = c->top_k, F = m->ffn;
    int U = c->mlp == MLP_SWIGLU ? 2 * F : F;
    const double *counts = m->moe_counts + (size_t)l * 2 * E;

    // dn collects dL/d n2 from the shared experts, the routed experts and the router
    memset(g->dn, 0, (size_t)N * C * sizeof(float));
    for (int s = 0; s < c->shared_experts; s++) {
        const float *u = a->u + (size_t)s * N * U, *act = a->a + (size_t)s * N * F;
        matmul_backward(g->da, G(m, grads, bi->sw2[s]), g->dx, act, W(m, params, bi->sw2[s]), N, F,
                        C);
        act_backward(m, g->du, g->da, u, N);
        matmul_backward(g->moe_tmp, G(m, grads, bi->sw1[s]), g->du, a->n2, W(m, params, bi->sw1[s]),
                        N, C, U);
        add_into(g->dn, g->moe_tmp, (size_t)N * C);
    }
    moe_combine_backward(g->moe_dy, g->moe_dgate, g->dx, a->ey, a->gates, a->slot, N, k, C);
    moe_gather(g->moe_x, a->n2, a->slot_tok, a->off[E], C);
    for (int e = 0; e < E; e++) {
        int r0 = a->off[e], n = a->off[e + 1] - r0;
        if (n == 0)
            continue;
        matmul_backward(g->moe_da + (size_t)r0 * F, G(m, grads, bi->ew2[e]),
                        g->moe_dy + (size_t)r0 * C, a->ea + (size_t)r0 * F,
                        W(m, params, bi->ew2[e]), n, F, C);
        act_backward(m, g->moe_dh + (size_t)r0 * U, g->moe_da + (size_t)r0 * F,
                     a->eh + (size_t)r0 * U, n);
        matmul_backward(g->moe_dx + (size_t)r0 * C, G(m, grads, bi->ew1[e]),
                        g->moe_dh + (size_t)r0 * U, g->moe_x + (size_t)r0 * C,
                        W(m, params, bi->ew1[e]), n, C, U);
    }
    moe_scatter_add(g->dn, g->moe_dx, a->slot, N, k, C);
    double scale = (double)m->loss_scale / m->moe_layers;
    moe_route_backward(g->moe_dlogits, g->moe_dgate, a->probs, a->lse, a->sel, a->gates, counts, N,
                       E, k, c->gate_renorm, m->balance_coef * scale, m->z_coef * scale);
    matmul_backward(g->moe_tmp, G(m, grads, bi->router), g->moe_dlogits, a->n2,
                    W(m, params, bi->router), N, C, E);
    add_into(g->dn, g->moe_tmp, (size_t)N * C);
    norm_backward(g->dx, G(m, grads, bi->n2), g->dn, a->x_mid, W(m, params, bi->n2), a->n2_mean,
                  a->n2_rstd, N, C, c->norm);
}
