// The model's forward and backward passes over its blocks (dense, MoE or MLA), on the tensor
// table and arena model_build.c sets up.
#include "model/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/attention.h"
#include "model/embed.h"
#include "model/matmul.h"
#include "model/model_mla.h"
#include "model/model_moe.h"
#include "model/model_private.h"
#include "model/rope.h"
#include "util/error.h"
#include "util/rng.h"

// ---- forward ----

// Standard attention from a->n1 to a->att (merged heads).
static void mha_forward(struct model *m, const float *params, int l, int B)
{
    const struct model_config *c = &m->cfg;
    const struct block_index *bi = &m->blocks[l];
    struct block_acts *a = &m->acts.blocks[l];
    int T = c->seq_len, C = c->dim, H = c->heads, hd = c->head_dim, I = m->inner;
    int BT = B * T, BHT = B * H * T;
    float scale = m->attn_scale;
    matmul_forward(m->mm, a->qkv, a->n1, tensor_ptr(m, params, bi->wq), BT, C, 3 * I);
    attention_split_heads(a->v, a->qkv, 3 * I, 2 * I, B, H, T, hd);
    if (c->qk_norm) {
        attention_split_heads(a->q_raw, a->qkv, 3 * I, 0, B, H, T, hd);
        attention_split_heads(a->k_raw, a->qkv, 3 * I, I, B, H, T, hd);
        model_qk_norm_forward(m, params, l, BHT);
    } else {
        attention_split_heads(a->q, a->qkv, 3 * I, 0, B, H, T, hd);
        attention_split_heads(a->k, a->qkv, 3 * I, I, B, H, T, hd);
    }
    if (c->pos == POS_ROPE) {
        rope_forward(a->q, m->acts.rope, BHT, T, hd);
        rope_forward(a->k, m->acts.rope, BHT, T, hd);
    }
    float *stats = m->probe_attention ? m->acts.attn_stats + (size_t)l * B * H * ATTN_STATS : NULL;
    model_attn_round(m, a->q, (size_t)BHT * hd);
    model_attn_round(m, a->k, (size_t)BHT * hd);
    model_attn_round(m, a->v, (size_t)BHT * hd);
    attention_forward(a->o, a->p, stats, a->q, a->k, a->v, B, H, T, hd, hd, scale,
                      (float)c->attn_softcap, a->capt,
                      m->attn_pr ? m->attn_pr + (size_t)l * model_attn_probs(m) : NULL);
    attention_merge_heads(a->att, a->o, I, 0, B, H, T, hd);
}

// The feed-forward half: x_out = x_mid + mlp(n2(x_mid)) (dense or MoE).
static void feed_forward(struct model *m, const float *params, int l, int B, float *x_out)
{
    const struct model_config *c = &m->cfg;
    const struct block_index *bi = &m->blocks[l];
    struct block_acts *a = &m->acts.blocks[l];
    int C = c->dim, F = m->ffn, BT = B * c->seq_len;
    norm_forward(a->n2, a->n2_mean, a->n2_rstd, a->x_mid, tensor_ptr(m, params, bi->n2), BT, C,
                 c->norm);
    if (bi->moe) {
        moe_block_forward(m, params, l, B, x_out);
        return;
    }
    int U = c->mlp == MLP_SWIGLU ? 2 * F : F;
    matmul_forward(m->mm, a->u, a->n2, tensor_ptr(m, params, bi->w1), BT, C, U);
    mlp_act_forward(c->mlp, a->a, a->u, BT, F);
    memcpy(x_out, a->x_mid, (size_t)BT * C * sizeof(float));
    matmul_forward_acc(m->mm, x_out, a->a, tensor_ptr(m, params, bi->w2), BT, F, C);
}

static void block_forward(struct model *m, const float *params, int l, int B, float *x_out)
{
    const struct model_config *c = &m->cfg;
    const struct block_index *bi = &m->blocks[l];
    struct block_acts *a = &m->acts.blocks[l];
    int C = c->dim, I = m->inner, BT = B * c->seq_len;
    norm_forward(a->n1, a->n1_mean, a->n1_rstd, a->x_in, tensor_ptr(m, params, bi->n1), BT, C,
                 c->norm);
    if (c->attention == ATTN_MLA)
        mla_forward(m, params, l, B);
    else
        mha_forward(m, params, l, B);
    memcpy(a->x_mid, a->x_in, (size_t)BT * C * sizeof(float));
    matmul_forward_acc(m->mm, a->x_mid, a->att, tensor_ptr(m, params, bi->wo), BT, I, C);
    feed_forward(m, params, l, B, x_out);
}

void model_set_aux_coefs(struct model *m, double balance, double router_z)
{
    m->balance_coef = balance;
    m->z_coef = router_z;
}

struct model_aux model_forward(struct model *m, const float *params, const int *tokens, int B)
{
    const struct model_config *c = &m->cfg;
    struct model_acts *a = &m->acts;
    int BT = B * c->seq_len;
    ASSERT(B >= 1 && B <= m->max_batch);
    embed_forward(a->blocks[0].x_in, tokens, tensor_ptr(m, params, m->tok_embed),
                  m->pos_embed >= 0 ? tensor_ptr(m, params, m->pos_embed) : NULL, B, c->seq_len,
                  c->dim);
    for (int l = 0; l < c->layers; l++) {
        float *x_out = l + 1 < c->layers ? a->blocks[l + 1].x_in : a->x_final;
        block_forward(m, params, l, B, x_out);
    }
    // The auxiliary losses: means over the MoE blocks, scaled by their coefficients.
    struct model_aux aux = {0.0, 0.0};
    for (int l = 0; l < c->layers; l++)
        if (m->blocks[l].moe) {
            aux.balance += m->balance_coef * m->moe_stats[l].balance / m->moe_layers;
            aux.router_z += m->z_coef * m->moe_stats[l].z / m->moe_layers;
        }
    norm_forward(a->nf, a->nf_mean, a->nf_rstd, a->x_final, tensor_ptr(m, params, m->final_norm),
                 BT, c->dim, c->norm);
    matmul_forward(m->mm, a->logits, a->nf, tensor_ptr(m, params, m->head), BT, c->dim, c->vocab);
    return aux;
}

// ---- backward ----

// dx holds dL/d(block output) on entry and dL/d(x_mid) on exit (MLP half of the block).
static void block_backward_mlp(struct model *m, const float *params, float *grads, int l, int B,
                               float loss_scale)
{
    const struct model_config *c = &m->cfg;
    const struct block_index *bi = &m->blocks[l];
    struct block_acts *a = &m->acts.blocks[l];
    struct model_acts *g = &m->acts;
    int C = c->dim, F = m->ffn, BT = B * c->seq_len;
    if (bi->moe) {
        moe_block_backward(m, params, grads, l, B, loss_scale);
        return;
    }

    // MLP: x_out = x_mid + w2·act(w1·n2(x_mid))
    matmul_backward(m->mm, g->da, tensor_ptr_mut(m, grads, bi->w2), g->dx, a->a,
                    tensor_ptr(m, params, bi->w2), BT, F, C);
    mlp_act_backward(c->mlp, g->du, g->da, a->u, a->a, BT, F);
    matmul_backward(m->mm, g->dn, tensor_ptr_mut(m, grads, bi->w1), g->du, a->n2,
                    tensor_ptr(m, params, bi->w1), BT, C, c->mlp == MLP_SWIGLU ? 2 * F : F);
    norm_backward(g->dx, tensor_ptr_mut(m, grads, bi->n2), g->dn, a->x_mid,
                  tensor_ptr(m, params, bi->n2), a->n2_mean, a->n2_rstd, BT, C, c->norm);
}

// dx holds dL/d(x_mid) on entry and dL/d(block input) on exit (attention half of the block).
static void block_backward_attn(struct model *m, const float *params, float *grads, int l, int B)
{
    const struct model_config *c = &m->cfg;
    const struct block_index *bi = &m->blocks[l];
    struct block_acts *a = &m->acts.blocks[l];
    struct model_acts *g = &m->acts;
    int T = c->seq_len, C = c->dim, H = c->heads, hd = c->head_dim, I = m->inner;
    int BT = B * T, BHT = B * H * T;
    float scale = m->attn_scale;

    // attention: x_mid = x_in + wo·attn(...)
    matmul_backward(m->mm, g->datt, tensor_ptr_mut(m, grads, bi->wo), g->dx, a->att,
                    tensor_ptr(m, params, bi->wo), BT, I, C);
    if (c->attention == ATTN_MLA) {
        mla_backward(m, params, grads, l, B);
        norm_backward(g->dx, tensor_ptr_mut(m, grads, bi->n1), g->dn, a->x_in,
                      tensor_ptr(m, params, bi->n1), a->n1_mean, a->n1_rstd, BT, C, c->norm);
        return;
    }
    attention_split_heads(g->dout, g->datt, I, 0, B, H, T, hd);
    model_attn_round(m, g->dout, (size_t)BHT * hd);
    attention_backward(g->dq, g->dk, g->dv, g->dp, g->dout, a->p, a->q, a->k, a->v, B, H, T, hd, hd,
                       scale, (float)c->attn_softcap, a->capt,
                       m->attn_pr ? m->attn_pr + (size_t)l * model_attn_probs(m) : NULL);
    if (c->pos == POS_ROPE) {
        rope_backward(g->dq, g->rope, BHT, T, hd);
        rope_backward(g->dk, g->rope, BHT, T, hd);
    }
    float *dq = g->dq, *dk = g->dk;
    if (c->qk_norm) {
        model_qk_norm_backward(m, params, grads, l, BHT);
        dq = g->dq_raw;
        dk = g->dk_raw;
    }
    attention_merge_heads(g->dqkv, dq, 3 * I, 0, B, H, T, hd);
    attention_merge_heads(g->dqkv, dk, 3 * I, I, B, H, T, hd);
    attention_merge_heads(g->dqkv, g->dv, 3 * I, 2 * I, B, H, T, hd);
    matmul_backward(m->mm, g->dn, tensor_ptr_mut(m, grads, bi->wq), g->dqkv, a->n1,
                    tensor_ptr(m, params, bi->wq), BT, C, 3 * I);
    norm_backward(g->dx, tensor_ptr_mut(m, grads, bi->n1), g->dn, a->x_in,
                  tensor_ptr(m, params, bi->n1), a->n1_mean, a->n1_rstd, BT, C, c->norm);
}

void model_backward(struct model *m, const float *params, float *grads, const int *tokens, int B,
                    float loss_scale, model_grads_ready_fn ready, void *ready_ctx)
{
    const struct model_config *c = &m->cfg;
    struct model_acts *a = &m->acts;
    int BT = B * c->seq_len;
    ASSERT(B >= 1 && B <= m->max_batch);

    // logits = head·nf(x_final)
    matmul_backward(m->mm, a->dn, tensor_ptr_mut(m, grads, m->head), a->logits, a->nf,
                    tensor_ptr(m, params, m->head), BT, c->dim, c->vocab);
    memset(a->dx, 0, (size_t)BT * c->dim * sizeof(float));
    norm_backward(a->dx, tensor_ptr_mut(m, grads, m->final_norm), a->dn, a->x_final,
                  tensor_ptr(m, params, m->final_norm), a->nf_mean, a->nf_rstd, BT, c->dim,
                  c->norm);
    if (ready)
        ready(ready_ctx, m->final_norm);
    // Tensors are in forward order, so after each half-block a tail range is final: the MLP's
    // (from ln2 on) and then the whole block's (from ln1 on).
    for (int l = c->layers - 1; l >= 0; l--) {
        block_backward_mlp(m, params, grads, l, B, loss_scale);
        if (ready)
            ready(ready_ctx, m->blocks[l].n2);
        block_backward_attn(m, params, grads, l, B);
        if (ready)
            ready(ready_ctx, m->blocks[l].n1);
    }
    embed_backward(tensor_ptr_mut(m, grads, m->tok_embed),
                   m->pos_embed >= 0 ? tensor_ptr_mut(m, grads, m->pos_embed) : NULL, a->dx, tokens,
                   B, c->seq_len, c->dim);
    if (ready)
        ready(ready_ctx, 0);
}
