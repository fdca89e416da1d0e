// Model assembly: the tensor table, the activation arena, init and free, the weight init, and the
// memory and FLOP estimates (the passes: model.c).
#include "model/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/attention.h"
#include "model/embed.h"
#include "model/matmul.h"
#include "model/matmul_dnnl.h"
#include "model/model_mla.h"
#include "model/model_moe.h"
#include "model/model_private.h"
#include "model/rope.h"
#include "util/error.h"
#include "util/rng.h"

// ---- tensor table ----

static void model_table_build(struct model *m)
{
    const struct model_config *c = &m->cfg;
    char name[TENSOR_NAME_MAX];
    struct tensor_table *tt = &m->table;
    tensor_table_init(tt);
    m->tok_embed = tensor_table_add(tt, "tok_embed", c->vocab, c->dim, TENSOR_EMBEDDING, -1);
    m->pos_embed = -1;
    if (c->pos == POS_LEARNED)
        m->pos_embed =
            tensor_table_add(tt, "pos_embed", c->seq_len, c->dim, TENSOR_POS_EMBEDDING, -1);
    for (int l = 0; l < c->layers; l++) {
        struct block_index *bi = &m->blocks[l];
#define ADD(field, suffix, rows, cols, kind)                                                       \
    do {                                                                                           \
        snprintf(name, sizeof(name), "blocks.%d.%s", l, suffix);                                   \
        field = tensor_table_add(tt, name, rows, cols, kind, l);                                   \
    } while (0)
        ADD(bi->n1, "ln1.gain", 1, c->dim, TENSOR_GAIN);
        int wk = 0, wv = 0, w3 = 0;
        bi->wq = bi->wq_a = bi->q_lat_norm = bi->wq_b = -1;
        bi->wkv_a = bi->kv_lat_norm = bi->wkv_b = -1;
        if (c->attention == ATTN_MLA) {
            int H = c->heads, dc = c->kv_rank, dq = c->q_rank;
            if (dq > 0) {
                ADD(bi->wq_a, "attn.wq_a", dq, c->dim, TENSOR_MATRIX);
                ADD(bi->q_lat_norm, "attn.q_latent_norm.gain", 1, dq, TENSOR_GAIN);
                ADD(bi->wq_b, "attn.wq_b", H * m->dqk, dq, TENSOR_MATRIX);
            } else {
                ADD(bi->wq, "attn.wq", H * m->dqk, c->dim, TENSOR_MATRIX);
            }
            ADD(bi->wkv_a, "attn.wkv_a", dc + c->rope_dim, c->dim, TENSOR_MATRIX);
            ADD(bi->kv_lat_norm, "attn.kv_latent_norm.gain", 1, dc, TENSOR_GAIN);
            ADD(bi->wkv_b, "attn.wkv_b", 2 * H * c->head_dim, dc, TENSOR_MATRIX);
        } else {
            ADD(bi->wq, "attn.wq", m->inner, c->dim, TENSOR_MATRIX);
            ADD(wk, "attn.wk", m->inner, c->dim, TENSOR_MATRIX);
            ADD(wv, "attn.wv", m->inner, c->dim, TENSOR_MATRIX);
        }
        bi->q_norm = bi->k_norm = -1;
        if (c->qk_norm) {
            ADD(bi->q_norm, "attn.q_norm.gain", 1, m->dqk, TENSOR_GAIN);
            ADD(bi->k_norm, "attn.k_norm.gain", 1, m->dqk, TENSOR_GAIN);
        }
        ADD(bi->wo, "attn.wo", c->dim, m->inner, TENSOR_MATRIX);
        ADD(bi->n2, "ln2.gain", 1, c->dim, TENSOR_GAIN);
        bi->moe = model_block_is_moe(c, l);
        bi->w1 = bi->w2 = bi->router = -1;
        if (bi->moe) {
            char part[48];
            ADD(bi->router, "mlp.router", c->experts, c->dim, TENSOR_ROUTER);
            for (int e = 0; e < c->experts + c->shared_experts; e++) {
                int shared = e >= c->experts, i = shared ? e - c->experts : e;
                int *w1 = shared ? &bi->sw1[i] : &bi->ew1[i],
                    *w2 = shared ? &bi->sw2[i] : &bi->ew2[i];
                const char *group = shared ? "shared" : "experts";
                snprintf(part, sizeof(part), "mlp.%s.%d.w1", group, i);
                ADD(*w1, part, m->ffn, c->dim, TENSOR_EXPERT);
                if (c->mlp == MLP_SWIGLU) {
                    snprintf(part, sizeof(part), "mlp.%s.%d.w3", group, i);
                    ADD(w3, part, m->ffn, c->dim, TENSOR_EXPERT);
                    ASSERT(tt->t[w3].offset == tt->t[*w1].offset + tt->t[*w1].size);
                }
                snprintf(part, sizeof(part), "mlp.%s.%d.w2", group, i);
                ADD(*w2, part, c->dim, m->ffn, TENSOR_EXPERT);
            }
        } else {
            ADD(bi->w1, "mlp.w1", m->ffn, c->dim, TENSOR_MATRIX);
            if (c->mlp == MLP_SWIGLU)
                ADD(w3, "mlp.w3", m->ffn, c->dim, TENSOR_MATRIX);
            ADD(bi->w2, "mlp.w2", c->dim, m->ffn, TENSOR_MATRIX);
        }
#undef ADD
        // The fused projections rely on adjacency in the flat array.
        ASSERT(c->attention == ATTN_MLA ||
               tt->t[wk].offset == tt->t[bi->wq].offset + tt->t[bi->wq].size);
        ASSERT(c->attention == ATTN_MLA || tt->t[wv].offset == tt->t[wk].offset + tt->t[wk].size);
        ASSERT(bi->moe || c->mlp != MLP_SWIGLU ||
               tt->t[w3].offset == tt->t[bi->w1].offset + tt->t[bi->w1].size);
    }
    m->final_norm = tensor_table_add(tt, "final_norm.gain", 1, c->dim, TENSOR_GAIN, -1);
    m->head = tensor_table_add(tt, "head", c->vocab, c->dim, TENSOR_HEAD, -1);
}

// ---- activation arena ----

// Walks the arena layout once; with base == NULL it only counts floats (and ints, in *ints).
// Keeping sizing and carving in one function means they cannot disagree.
static size_t model_acts_carve(const struct model_config *c, int B, struct model_acts *a,
                               float *base, int *ibase, size_t *ints)
{
    size_t n = 0, ni = 0;
    size_t BT = (size_t)B * c->seq_len, C = (size_t)c->dim, T = (size_t)c->seq_len;
    size_t I = (size_t)c->heads * c->head_dim, F = (size_t)c->mlp_ratio * c->dim;
    size_t U = c->mlp == MLP_SWIGLU ? 2 * F : F;
    size_t BHT = (size_t)B * c->heads * T, P = BHT * T;
    size_t cap = c->attn_softcap > 0.0 ? 1 : 0; // tanh of the capped logits, for backward
    size_t qk = c->qk_norm ? 1 : 0; // pre-norm q, k and their statistics only with qk-norm
    size_t E = (size_t)c->experts, K = c->experts > 0 ? (size_t)c->top_k : 0;
    // MLA: q and k heads are d_qk wide, the dense qkv buffer is not used
    size_t mla = c->attention == ATTN_MLA ? 1 : 0, DR = mla * (size_t)c->rope_dim;
    size_t DQK = (size_t)c->head_dim + DR, IQK = (size_t)c->heads * DQK;
    size_t DC = mla * (size_t)c->kv_rank, DQ = mla * (size_t)c->q_rank;
    size_t DLAT = DC > DQ ? DC : DQ;
    size_t S = (size_t)c->shared_experts, NK = BT * K;
#define TAKE(ptr, count)                                                                           \
    do {                                                                                           \
        if (base)                                                                                  \
            ptr = base + n;                                                                        \
        n += ((count) + 15) / 16 * 16; /* 64-byte aligned buffers */                               \
    } while (0)
#define TAKE_INT(ptr, count)                                                                       \
    do {                                                                                           \
        if (ibase)                                                                                 \
            ptr = ibase + ni;                                                                      \
        ni += ((count) + 15) / 16 * 16;                                                            \
    } while (0)
    for (int l = 0; l < c->layers; l++) {
        struct block_acts dummy, *b = a && a->blocks ? &a->blocks[l] : &dummy;
        size_t moe = model_block_is_moe(c, l) ? 1 : 0;
        TAKE(b->x_in, BT * C);
        TAKE(b->n1, BT * C);
        TAKE(b->n1_mean, BT);
        TAKE(b->n1_rstd, BT);
        TAKE(b->qkv, (1 - mla) * BT * 3 * I);
        TAKE(b->cq, BT * DQ);
        TAKE(b->cq_rstd, (DQ ? 1 : 0) * BT);
        TAKE(b->cqn, BT * DQ);
        TAKE(b->qf, mla * BT * IQK);
        TAKE(b->kva, BT * (DC + DR));
        TAKE(b->ckv, BT * DC);
        TAKE(b->ckv_rstd, mla * BT);
        TAKE(b->ckvn, BT * DC);
        TAKE(b->kvb, mla * BT * 2 * I);
        TAKE(b->q_raw, qk * BT * IQK);
        TAKE(b->k_raw, qk * BT * IQK);
        TAKE(b->qn_mean, qk * BHT);
        TAKE(b->qn_rstd, qk * BHT);
        TAKE(b->kn_mean, qk * BHT);
        TAKE(b->kn_rstd, qk * BHT);
        TAKE(b->q, BT * IQK);
        TAKE(b->k, BT * IQK);
        TAKE(b->v, BT * I);
        TAKE(b->p, P);
        TAKE(b->capt, cap * P);
        TAKE(b->o, BT * I);
        TAKE(b->att, BT * I);
        TAKE(b->x_mid, BT * C);
        TAKE(b->n2, BT * C);
        TAKE(b->n2_mean, BT);
        TAKE(b->n2_rstd, BT);
        TAKE(b->u, (moe ? S : 1) * BT * U);
        TAKE(b->a, (moe ? S : 1) * BT * F);
        TAKE(b->probs, moe * BT * E);
        TAKE(b->lse, moe * BT);
        TAKE(b->gates, moe * NK);
        TAKE(b->eh, moe * NK * U);
        TAKE(b->ea, moe * NK * F);
        TAKE(b->ey, moe * NK * C);
        TAKE_INT(b->sel, moe * NK);
        TAKE_INT(b->slot, moe * NK);
        TAKE_INT(b->slot_tok, moe * NK);
        TAKE_INT(b->off, moe * (E + 1));
    }
    struct model_acts dummy_a, *g = a ? a : &dummy_a;
    TAKE(g->x_final, BT * C);
    TAKE(g->nf, BT * C);
    TAKE(g->nf_mean, BT);
    TAKE(g->nf_rstd, BT);
    TAKE(g->logits, BT * (size_t)c->vocab);
    TAKE(g->rope, T * (size_t)c->head_dim);
    TAKE(g->attn_stats, (size_t)c->layers * B * c->heads * ATTN_STATS);
    TAKE(g->dx, BT * C);
    TAKE(g->dn, BT * C);
    TAKE(g->dqkv, BT * 3 * I);
    TAKE(g->datt, BT * I);
    TAKE(g->dq, BT * IQK);
    TAKE(g->dk, BT * IQK);
    TAKE(g->dv, BT * I);
    TAKE(g->dout, BT * I);
    TAKE(g->dq_raw, qk * BT * IQK);
    TAKE(g->dk_raw, qk * BT * IQK);
    TAKE(g->mla_dqf, mla * BT * IQK);
    TAKE(g->mla_dkvb, mla * BT * 2 * I);
    TAKE(g->mla_dkva, BT * (DC + DR));
    TAKE(g->mla_dlat, BT * DLAT);
    TAKE(g->mla_dlatn, BT * DLAT);
    TAKE(g->mla_tmp, mla * BT * (C > DR ? C : DR));
    TAKE(g->rope_r, mla * T * DR);
    TAKE(g->dp, P);
    TAKE(g->du, BT * U);
    TAKE(g->da, BT * F);
    TAKE(g->moe_x, NK * C);
    TAKE(g->moe_dx, NK * C);
    TAKE(g->moe_dy, NK * C);
    TAKE(g->moe_dh, NK * U);
    TAKE(g->moe_da, NK * F);
    TAKE(g->moe_dlogits, BT * E);
    TAKE(g->moe_dgate, NK);
    TAKE(g->moe_tmp, (K ? 1 : 0) * BT * C);
#undef TAKE
#undef TAKE_INT
    if (ints)
        *ints = ni;
    return n;
}

size_t model_attention_act_floats(const struct model *m)
{
    // model_acts_carve lays a block's attention buffers out from qkv up to x_mid
    size_t n = 0;
    for (int l = 0; l < m->cfg.layers; l++)
        n += (size_t)(m->acts.blocks[l].x_mid - m->acts.blocks[l].qkv);
    return n;
}

int model_block_is_moe(const struct model_config *cfg, int l)
{
    return cfg->experts > 0 && (l + 1) % cfg->moe_every == 0;
}

void model_init(struct model *m, const struct model_config *cfg, int max_batch)
{
    memset(m, 0, sizeof(*m));
    m->cfg = *cfg;
    ASSERT(cfg->head_dim > 0 && cfg->dim > 0 && cfg->layers > 0 && max_batch > 0);
    m->inner = cfg->heads * cfg->head_dim;
    m->dqk = cfg->head_dim + (cfg->attention == ATTN_MLA ? cfg->rope_dim : 0);
    m->ffn = cfg->mlp_ratio * cfg->dim;
    m->max_batch = max_batch;
    m->blocks = xcalloc((size_t)cfg->layers, sizeof(*m->blocks));
    for (int l = 0; l < cfg->layers; l++) {
        struct block_index *bi = &m->blocks[l];
        if (!model_block_is_moe(cfg, l))
            continue;
        m->moe_layers++;
        bi->ew1 = xcalloc((size_t)cfg->experts, sizeof(int));
        bi->ew2 = xcalloc((size_t)cfg->experts, sizeof(int));
        bi->sw1 = xcalloc((size_t)cfg->shared_experts + 1, sizeof(int));
        bi->sw2 = xcalloc((size_t)cfg->shared_experts + 1, sizeof(int));
    }
    model_table_build(m);
    m->attn_scale = cfg->mup == MUP_FULL ? 1.0f / (float)m->dqk : 1.0f / sqrtf((float)m->dqk);
    if (cfg->mup != MUP_OFF) // every hidden matrix's fan-in scales with dim (model.h)
        for (int i = 0; i < m->table.n; i++) {
            enum tensor_kind k = m->table.t[i].kind;
            if (k == TENSOR_MATRIX || k == TENSOR_EXPERT || k == TENSOR_ROUTER)
                m->table.t[i].lr_scale = (double)cfg->mup_base_width / cfg->dim;
        }
    m->moe_stats = xcalloc((size_t)cfg->layers, sizeof(*m->moe_stats));
    m->moe_counts = xcalloc((size_t)cfg->layers * 2 * (cfg->experts + 1), sizeof(double));
    m->moe_group = cfg->moe_group > 0 ? cfg->moe_group : cfg->seq_len;
    m->moe_groups_max = (int)((size_t)max_batch * cfg->seq_len / m->moe_group) + 1;
    m->moe_group_counts = xcalloc(
        (size_t)cfg->layers * (cfg->experts + 1) * (size_t)m->moe_groups_max, sizeof(double));
    m->moe_mean_p = xcalloc((size_t)cfg->layers * (cfg->experts + 1), sizeof(double));
    m->acts.blocks = xcalloc((size_t)cfg->layers, sizeof(*m->acts.blocks));
    m->acts.floats = model_acts_carve(cfg, max_batch, NULL, NULL, NULL, &m->acts.ints);
    m->acts.base = xcalloc(m->acts.floats, sizeof(float));
    m->acts.ibase = xcalloc(m->acts.ints + 1, sizeof(int));
    model_acts_carve(cfg, max_batch, &m->acts, m->acts.base, m->acts.ibase, NULL);
    if (cfg->pos == POS_ROPE && cfg->attention != ATTN_MLA)
        rope_table_init(m->acts.rope, cfg->seq_len, cfg->head_dim);
    if (cfg->attention == ATTN_MLA && cfg->rope_dim > 0)
        rope_table_init(m->acts.rope_r, cfg->seq_len, cfg->rope_dim);
}

// The widest operand row of a linear layer: model_max_row_width and the latents' widths.
static double precision_row_width(const struct model_config *c)
{
    double width = model_max_row_width(c);
    double others[] = {c->dim, (double)c->kv_rank + c->rope_dim, c->q_rank,
                       2.0 * c->heads * c->head_dim, 2.0 * c->mlp_ratio * c->dim};
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++)
        width = others[i] > width ? others[i] : width;
    return width;
}

double model_precision_bytes(const struct model_config *c, int B, int bf16, int attention,
                             int onednn)
{
    if (!bf16)
        return 0.0;
    double T = c->seq_len, C = c->dim, F = (double)c->mlp_ratio * c->dim;
    double I = (double)c->heads * c->head_dim, widest = c->vocab;
    widest = F > widest ? F : widest;
    widest = 3.0 * I > widest ? 3.0 * I : widest; // per weight row, fused wq|wk|wv included
    double probs = attention ? (double)c->layers * B * c->heads * T * T : 0.0;
    double operand = onednn ? 2.0 : 4.0; // bf16 as 16 bits (oneDNN) or in a float (emulation)
    return 4.0 * probs + operand * (2.0 * B * T * precision_row_width(c) + 3.0 * widest * C);
}

// One forward and backward of a full micro-batch with the oneDNN backend planning, so that
// every product's primitives are made here at setup (model/matmul_dnnl.h). The products compute
// nothing; parameters, gradients and tokens are zero scratch (allocated before the run's own
// parameters, gradients and optimizer state, so below their peak). It overwrites the arena and
// the MoE routing statistics, which every forward overwrites again. On zero activations every
// router ties, so each token goes to experts 0..k-1: the most rows an expert can get.
static void plan_products(struct model *m)
{
    size_t n = m->table.total, tok = (size_t)m->max_batch * m->cfg.seq_len;
    float *params = xcalloc(n, sizeof(float)), *grads = xcalloc(n, sizeof(float));
    int *tokens = xcalloc(tok, sizeof(int));
    mm_dnnl_set_planning(m->mm->dnnl, 1);
    model_forward(m, params, tokens, m->max_batch);
    model_backward(m, params, grads, tokens, m->max_batch, 1.0f, NULL, NULL);
    mm_dnnl_set_planning(m->mm->dnnl, 0);
    free(params);
    free(grads);
    free(tokens);
}

void model_set_precision(struct model *m, int bf16, int attention, int onednn)
{
    const struct model_config *c = &m->cfg;
    if (m->mm) {
        matmul_prec_free(m->mm);
        free(m->mm);
        m->mm = NULL;
    }
    free(m->attn_pr);
    m->attn_pr = NULL;
    if (!bf16 && !onednn)
        return;
    if (bf16 && attention)
        m->attn_pr = xcalloc((size_t)c->layers * model_attn_probs(m), sizeof(float));
    // activations: every linear layer's input or output gradient is at most a row per token of at
    // most the widest row (model_max_row_width counts the expert buffers' top_k rows per token)
    size_t rows = (size_t)m->max_batch * c->seq_len;
    double width = precision_row_width(c);
    size_t cap_w = 0;
    for (int i = 0; i < m->table.n; i++)
        cap_w = m->table.t[i].size > cap_w ? m->table.t[i].size : cap_w;
    m->mm = xcalloc(1, sizeof(*m->mm));
    // adjacent tensors multiplied as one: wq|wk|wv (three), w1|w3 (two)
    matmul_prec_init(m->mm, bf16, onednn, (int)rows, rows * (size_t)width, 3 * cap_w);
    if (onednn)
        plan_products(m);
}

void model_free(struct model *m)
{
    model_set_precision(m, 0, 0, 0);
    for (int l = 0; m->blocks && l < m->cfg.layers; l++) {
        free(m->blocks[l].ew1);
        free(m->blocks[l].ew2);
        free(m->blocks[l].sw1);
        free(m->blocks[l].sw2);
    }
    free(m->acts.base);
    free(m->acts.ibase);
    free(m->acts.blocks);
    free(m->blocks);
    free(m->moe_stats);
    free(m->moe_counts);
    free(m->moe_group_counts);
    free(m->moe_mean_p);
    tensor_table_free(&m->table);
    memset(m, 0, sizeof(*m));
}

// ---- init ----

void model_params_init(const struct model *m, float *params, uint64_t seed)
{
    // The ±2σ truncated unit normal has std 0.8796; divide it out so the std is exact
    // (as JAX's truncated-normal variance scaling does).
    const double trunc_std = 0.87962566103423978;
    for (int i = 0; i < m->table.n; i++) {
        const struct tensor *t = &m->table.t[i];
        uint64_t stream = rng_stream_of(t->name);
        float *w = params + t->offset;
        switch (t->kind) {
        case TENSOR_GAIN:
            for (size_t j = 0; j < t->size; j++)
                w[j] = 1.0f;
            break;
        case TENSOR_EMBEDDING:
        case TENSOR_POS_EMBEDDING: {
            double std = 1.0 / sqrt((double)m->cfg.dim);
            for (size_t j = 0; j < t->size; j++)
                w[j] = (float)(std * rng_normal(seed, stream, j));
            break;
        }
        case TENSOR_MATRIX:
        case TENSOR_EXPERT:
        case TENSOR_ROUTER:
        case TENSOR_HEAD: {
            double std = 1.0 / sqrt((double)t->cols) / trunc_std;
            if (t->kind == TENSOR_HEAD && m->cfg.mup >= MUP_INTERMEDIATE) // sqrt(base) / fan_in
                std = sqrt((double)m->cfg.mup_base_width) / t->cols / trunc_std;
            for (size_t j = 0; j < t->size; j++)
                w[j] = (float)(std * rng_trunc_normal(seed, stream, j));
            break;
        }
        }
    }
    if (m->cfg.mup == MUP_FULL) // zero queries at init: the query projection (MLA: its up-part)
        for (int l = 0; l < m->cfg.layers; l++) {
            const struct block_index *bi = &m->blocks[l];
            const struct tensor *t = &m->table.t[bi->wq_b >= 0 ? bi->wq_b : bi->wq];
            memset(params + t->offset, 0, t->size * sizeof(float));
        }
}

double model_memory_estimate(const struct model_config *c, int B, double *acts_bytes,
                             double *state_bytes)
{
    double C = c->dim, L = c->layers, T = c->seq_len, V = c->vocab, H = c->heads;
    double hd = c->head_dim > 0 ? c->head_dim : C / H;
    double I = H * hd, F = (double)c->mlp_ratio * C, U = c->mlp == MLP_SWIGLU ? 2 * F : F;
    double BT = (double)B * T, P = BT * H * T, qk = c->qk_norm ? 1.0 : 0.0;
    double per_block_params = 2 * C + 3 * C * I + I * C + C * U + F * C + qk * 2 * hd;
    double cap = c->attn_softcap > 0.0 ? 1.0 : 0.0; // softcap: the tanh of each logit too
    double per_block = BT * (5 * C + 3 * I + I * (6 + 2 * qk) + U + F) + (1 + cap) * P,
           mla_scratch = 0;
    if (c->attention == ATTN_MLA) { // latent projections instead of wq, wk, wv
        double dr = c->rope_dim, dc = c->kv_rank > 0 ? c->kv_rank : C / 2, dq = c->q_rank;
        double iqk = H * (hd + dr);
        double q_params = dq > 0 ? C * dq + dq + dq * iqk : C * iqk;
        per_block_params += q_params + C * (dc + dr) + dc + dc * 2 * I - 3 * C * I + qk * 2 * dr;
        per_block +=
            BT * (2 * dq + 1 + iqk + 3 * dc + dr + 1 + 2 * I - 3 * I + (2 + 2 * qk) * (iqk - I));
        // backward scratch: wider dq, dk; the latents' gradients; the decoupled RoPE table
        mla_scratch = BT * ((2 + 2 * qk) * (iqk - I) + iqk + 2 * I + dc + dr +
                            2 * (dc > dq ? dc : dq) + (C > dr ? C : dr)) +
                      T * dr;
    }
    // MoE blocks: router, E + S experts; routing state, k rows per token in the expert buffers,
    // and the shared experts' activations instead of the MLP's
    double E = c->experts, K = c->experts > 0 ? c->top_k : 0, S = c->shared_experts;
    double moe_blocks = 0;
    for (int l = 0; l < c->layers; l++)
        moe_blocks += model_block_is_moe(c, l);
    double moe_params = E * C + (E + S) * (C * U + F * C) - (C * U + F * C);
    double moe_acts = BT * (E + 1 + 4 * K + K * (U + F + C)) + (S - 1) * BT * (U + F);
    double params = L * per_block_params + moe_blocks * moe_params + 2 * V * C + C +
                    (c->pos == POS_LEARNED ? T * C : 0);
    double acts = L * per_block + moe_blocks * moe_acts +
                  BT * (3 * C + V + 3 * I + 5 * I + 2 * qk * I + U + F) + P +
                  (K > 0 ? BT * (K * (3 * C + U + F + 1) + E + C) : 0) + mla_scratch;
    *acts_bytes = 4.0 * acts;
    *state_bytes = 4.0 * 5.0 * params; // params, grads, update, m, v
    return *acts_bytes + *state_bytes;
}

double model_forward_flops(const struct model_config *c, int B)
{
    double BT = (double)B * c->seq_len, C = c->dim, T = c->seq_len;
    double I = (double)c->heads * c->head_dim, F = (double)c->mlp_ratio * c->dim;
    double up = c->mlp == MLP_SWIGLU ? 2 * F : F;
    double qkv = 2 * BT * C * 3 * I, scores = 2 * BT * T * I;
    if (c->attention == ATTN_MLA) {
        double dr = c->rope_dim, dc = c->kv_rank, dq = c->q_rank,
               iqk = c->heads * (c->head_dim + dr);
        qkv = 2 * BT * (dq > 0 ? C * dq + dq * iqk : C * iqk) + 2 * BT * C * (dc + dr) +
              2 * BT * dc * 2 * I;
        scores = 2 * BT * T * iqk;
    }
    double per_block = qkv               // projections of q, k, v
                       + scores          // q·k (full square, as computed)
                       + 2 * BT * T * I  // p·v
                       + 2 * BT * I * C  // wo
                       + 2 * BT * C * up // w1 (| w3)
                       + 2 * BT * F * C; // w2
    // a MoE block: router, k routed experts per token (none dropped), the shared experts
    double moe = 0;
    for (int l = 0; l < c->layers; l++)
        if (model_block_is_moe(c, l))
            moe += 2 * BT * C * c->experts +
                   (c->top_k + c->shared_experts - 1) * (2 * BT * C * up + 2 * BT * F * C);
    return c->layers * per_block + moe + 2 * BT * C * c->vocab;
}
