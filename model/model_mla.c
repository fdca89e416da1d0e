// Multi-head latent attention (DeepSeek-V2) for training: the latents are projected up and the
// per-head q and k materialised, so the attention core, qk-norm and the probes are those of
// standard attention, on heads of d_h + d_R.
#include "model/model_mla.h"

#include <math.h>
#include <string.h>

#include "model/attention.h"
#include "model/matmul.h"
#include "model/model_private.h"
#include "model/rope.h"

// rows[N, ld] columns [col0, col0 + w) → dst[N, w]
static void take_cols(float *dst, const float *src, int N, int ld, int col0, int w)
{
#pragma omp parallel for schedule(static)
    for (int r = 0; r < N; r++)
        memcpy(dst + (size_t)r * w, src + (size_t)r * ld + col0, (size_t)w * sizeof(float));
}

// dst[N, ld] columns [col0, col0 + w) = src[N, w]
static void put_cols(float *dst, const float *src, int N, int ld, int col0, int w)
{
#pragma omp parallel for schedule(static)
    for (int r = 0; r < N; r++)
        memcpy(dst + (size_t)r * ld + col0, src + (size_t)r * w, (size_t)w * sizeof(float));
}

// k_h = [k_C,h ; k_R] for every head: k[B, H, T, d_qk] from kvb's content columns and kr[N, d_R].
static void assemble_k(float *k, const float *kvb, const float *kr, int B, int H, int T, int dh,
                       int dr)
{
    int dqk = dh + dr;
#pragma omp parallel for schedule(static)
    for (int bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H;
        for (int t = 0; t < T; t++) {
            size_t row = (size_t)b * T + t;
            float *dst = k + ((size_t)bh * T + t) * dqk;
            memcpy(dst, kvb + row * 2 * H * dh + (size_t)h * dh, (size_t)dh * sizeof(float));
            memcpy(dst + dh, kr + row * dr, (size_t)dr * sizeof(float));
        }
    }
}

void mla_forward(struct model *m, const float *params, int l, int B)
{
    const struct model_config *c = &m->cfg;
    const struct block_index *bi = &m->blocks[l];
    struct block_acts *a = &m->acts.blocks[l];
    int T = c->seq_len, C = c->dim, H = c->heads, dh = c->head_dim, dr = c->rope_dim;
    int dc = c->kv_rank, dcq = c->q_rank, dqk = m->dqk, N = B * T, BHT = B * H * T;

    if (dcq > 0) {
        matmul_forward(m->mm, a->cq, a->n1, tensor_ptr(m, params, bi->wq_a), N, C, dcq);
        norm_forward(a->cqn, NULL, a->cq_rstd, a->cq, tensor_ptr(m, params, bi->q_lat_norm), N, dcq,
                     NORM_RMSNORM);
        matmul_forward(m->mm, a->qf, a->cqn, tensor_ptr(m, params, bi->wq_b), N, dcq, H * dqk);
    } else {
        matmul_forward(m->mm, a->qf, a->n1, tensor_ptr(m, params, bi->wq), N, C, H * dqk);
    }
    matmul_forward(m->mm, a->kva, a->n1, tensor_ptr(m, params, bi->wkv_a), N, C, dc + dr);
    take_cols(a->ckv, a->kva, N, dc + dr, 0, dc);
    norm_forward(a->ckvn, NULL, a->ckv_rstd, a->ckv, tensor_ptr(m, params, bi->kv_lat_norm), N, dc,
                 NORM_RMSNORM);
    matmul_forward(m->mm, a->kvb, a->ckvn, tensor_ptr(m, params, bi->wkv_b), N, dc, 2 * H * dh);
    float *q = c->qk_norm ? a->q_raw : a->q, *k = c->qk_norm ? a->k_raw : a->k;
    attention_split_heads(q, a->qf, H * dqk, 0, B, H, T, dqk);
    take_cols(m->acts.mla_tmp, a->kva, N, dc + dr, dc, dr); // k_R [N, d_R] (scratch)
    assemble_k(k, a->kvb, m->acts.mla_tmp, B, H, T, dh, dr);
    attention_split_heads(a->v, a->kvb, 2 * H * dh, H * dh, B, H, T, dh);
    if (c->qk_norm)
        model_qk_norm_forward(m, params, l, BHT);
    if (dr > 0) {
        rope_forward_strided(a->q + dh, m->acts.rope_r, BHT, T, dqk, dr);
        rope_forward_strided(a->k + dh, m->acts.rope_r, BHT, T, dqk, dr);
    }
    float *stats = m->probe_attention ? m->acts.attn_stats + (size_t)l * B * H * ATTN_STATS : NULL;
    model_attn_round(m, a->q, (size_t)BHT * dqk);
    model_attn_round(m, a->k, (size_t)BHT * dqk);
    model_attn_round(m, a->v, (size_t)BHT * dh);
    attention_forward(a->o, a->p, stats, a->q, a->k, a->v, B, H, T, dqk, dh, m->attn_scale,
                      (float)c->attn_softcap, a->capt,
                      m->attn_pr ? m->attn_pr + (size_t)l * model_attn_probs(m) : NULL);
    attention_merge_heads(a->att, a->o, H * dh, 0, B, H, T, dh);
}

void mla_backward(struct model *m, const float *params, float *grads, int l, int B)
{
    const struct model_config *c = &m->cfg;
    const struct block_index *bi = &m->blocks[l];
    struct block_acts *a = &m->acts.blocks[l];
    struct model_acts *g = &m->acts;
    int T = c->seq_len, C = c->dim, H = c->heads, dh = c->head_dim, dr = c->rope_dim;
    int dc = c->kv_rank, dcq = c->q_rank, dqk = m->dqk, N = B * T, BHT = B * H * T;

    attention_split_heads(g->dout, g->datt, H * dh, 0, B, H, T, dh);
    model_attn_round(m, g->dout, (size_t)BHT * dh);
    attention_backward(g->dq, g->dk, g->dv, g->dp, g->dout, a->p, a->q, a->k, a->v, B, H, T, dqk,
                       dh, m->attn_scale, (float)c->attn_softcap, a->capt,
                       m->attn_pr ? m->attn_pr + (size_t)l * model_attn_probs(m) : NULL);
    if (dr > 0) {
        rope_backward_strided(g->dq + dh, g->rope_r, BHT, T, dqk, dr);
        rope_backward_strided(g->dk + dh, g->rope_r, BHT, T, dqk, dr);
    }
    float *dq = g->dq, *dk = g->dk;
    if (c->qk_norm) {
        model_qk_norm_backward(m, params, grads, l, BHT);
        dq = g->dq_raw;
        dk = g->dk_raw;
    }
    // keys: the content parts go to kvb's first H·d_h columns, the rope parts sum over the heads
    // into the shared key's columns of dkva
    attention_merge_heads(g->mla_dkvb, g->dv, 2 * H * dh, H * dh, B, H, T, dh);
    memset(g->mla_dkva, 0, (size_t)N * (dc + dr) * sizeof(float));
#pragma omp parallel for schedule(static)
    for (int row = 0; row < N; row++) {
        int b = row / T, t = row % T;
        float *dkr = g->mla_dkva + (size_t)row * (dc + dr) + dc;
        for (int h = 0; h < H; h++) {
            const float *src = dk + (((size_t)b * H + h) * T + t) * dqk;
            memcpy(g->mla_dkvb + (size_t)row * 2 * H * dh + (size_t)h * dh, src,
                   (size_t)dh * sizeof(float));
            for (int i = 0; i < dr; i++)
                dkr[i] += src[dh + i];
        }
    }
    // kvb = wkv_b ckvn;  ckvn = RMSNorm(ckv)
    matmul_backward(m->mm, g->mla_dlatn, tensor_ptr_mut(m, grads, bi->wkv_b), g->mla_dkvb, a->ckvn,
                    tensor_ptr(m, params, bi->wkv_b), N, dc, 2 * H * dh);
    memset(g->mla_dlat, 0, (size_t)N * dc * sizeof(float));
    norm_backward(g->mla_dlat, tensor_ptr_mut(m, grads, bi->kv_lat_norm), g->mla_dlatn, a->ckv,
                  tensor_ptr(m, params, bi->kv_lat_norm), NULL, a->ckv_rstd, N, dc, NORM_RMSNORM);
    put_cols(g->mla_dkva, g->mla_dlat, N, dc + dr, 0, dc);
    matmul_backward(m->mm, g->dn, tensor_ptr_mut(m, grads, bi->wkv_a), g->mla_dkva, a->n1,
                    tensor_ptr(m, params, bi->wkv_a), N, C, dc + dr);
    // queries
    attention_merge_heads(g->mla_dqf, dq, H * dqk, 0, B, H, T, dqk);
    if (dcq > 0) {
        matmul_backward(m->mm, g->mla_dlatn, tensor_ptr_mut(m, grads, bi->wq_b), g->mla_dqf, a->cqn,
                        tensor_ptr(m, params, bi->wq_b), N, dcq, H * dqk);
        memset(g->mla_dlat, 0, (size_t)N * dcq * sizeof(float));
        norm_backward(g->mla_dlat, tensor_ptr_mut(m, grads, bi->q_lat_norm), g->mla_dlatn, a->cq,
                      tensor_ptr(m, params, bi->q_lat_norm), NULL, a->cq_rstd, N, dcq,
                      NORM_RMSNORM);
        matmul_backward(m->mm, g->mla_tmp, tensor_ptr_mut(m, grads, bi->wq_a), g->mla_dlat, a->n1,
                        tensor_ptr(m, params, bi->wq_a), N, C, dcq);
    } else {
        matmul_backward(m->mm, g->mla_tmp, tensor_ptr_mut(m, grads, bi->wq), g->mla_dqf, a->n1,
                        tensor_ptr(m, params, bi->wq), N, C, H * dqk);
    }
    model_add_into(g->dn, g->mla_tmp, (size_t)N * C);
}
