// model_config_resolve: the model's own defaults (head_dim, MLA's kv_rank and rope_dim) and the
// checks that need nothing but the model config. launch/config.c calls it first and adds what
// depends on the run (ranks, batch, memory) and on where keys came from.
#include <stdio.h>

#include "model/model.h"

static int fail(char *err, size_t errlen, const char *msg)
{
    snprintf(err, errlen, "%s", msg);
    return -1;
}

// MLA: kv_rank 0 → dim / 2; rope_dim 0 with RoPE → a quarter of the head, even, at least 2.
static int resolve_mla(struct model_config *m, char *err, size_t errlen)
{
    char msg[300];
    if (m->kv_rank == 0)
        m->kv_rank = m->dim / 2 > 0 ? m->dim / 2 : 1;
    if (m->rope_dim == 0 && m->pos == POS_ROPE)
        m->rope_dim = m->head_dim / 2 / 2 * 2 > 0 ? m->head_dim / 2 / 2 * 2 : 2;
    if (m->rope_dim % 2 != 0) {
        snprintf(msg, sizeof(msg), "model.rope_dim = %d must be even (RoPE rotates pairs)",
                 m->rope_dim);
        return fail(err, errlen, msg);
    }
    if (m->rope_dim > 0 && m->pos != POS_ROPE) {
        snprintf(msg, sizeof(msg),
                 "model.rope_dim = %d needs model.pos = rope (MLA's decoupled RoPE); with "
                 "learned positions leave it 0",
                 m->rope_dim);
        return fail(err, errlen, msg);
    }
    if (m->kv_rank > m->dim || m->q_rank > m->dim) {
        snprintf(msg, sizeof(msg),
                 "MLA latent ranks must not exceed model.dim = %d (kv_rank %d, q_rank %d): a "
                 "latent wider than the input compresses nothing",
                 m->dim, m->kv_rank, m->q_rank);
        return fail(err, errlen, msg);
    }
    return 0;
}

static int check_moe(const struct model_config *m, char *err, size_t errlen)
{
    char msg[300];
    if (m->experts == 0)
        return 0;
    if (m->top_k > m->experts) {
        snprintf(msg, sizeof(msg), "model.top_k = %d exceeds model.experts = %d", m->top_k,
                 m->experts);
        return fail(err, errlen, msg);
    }
    if (m->gate_renorm && m->top_k == 1)
        return fail(err, errlen,
                    "model.gate_renorm with model.top_k = 1 makes every gate 1: the router "
                    "would learn from the auxiliary losses only; use top_k >= 2 or "
                    "gate_renorm = false");
    if (m->moe_group > 0 && m->seq_len % m->moe_group != 0 && m->moe_group % m->seq_len != 0) {
        snprintf(msg, sizeof(msg),
                 "model.moe_group = %d tokens neither divides model.seq_len = %d nor is a "
                 "multiple of it: a routing group must not straddle sequences",
                 m->moe_group, m->seq_len);
        return fail(err, errlen, msg);
    }
    if (m->moe_every > m->layers) {
        snprintf(msg, sizeof(msg),
                 "model.moe_every = %d exceeds model.layers = %d: no block would be MoE",
                 m->moe_every, m->layers);
        return fail(err, errlen, msg);
    }
    return 0;
}

int model_config_resolve(struct model_config *m, char *err, size_t errlen)
{
    char msg[300];
    if (m->head_dim == 0) {
        if (m->dim % m->heads != 0) {
            snprintf(msg, sizeof(msg),
                     "model.dim = %d is not divisible by model.heads = %d; set model.head_dim "
                     "or change one of them",
                     m->dim, m->heads);
            return fail(err, errlen, msg);
        }
        m->head_dim = m->dim / m->heads;
    }
    if (m->pos == POS_ROPE && m->attention != ATTN_MLA && m->head_dim % 2 != 0) {
        snprintf(msg, sizeof(msg), "model.head_dim = %d must be even for RoPE (model.pos = rope)",
                 m->head_dim);
        return fail(err, errlen, msg);
    }
    if ((double)m->heads * m->head_dim > 1048576.0) {
        snprintf(msg, sizeof(msg), "model.heads * head_dim = %.0f is too large",
                 (double)m->heads * m->head_dim);
        return fail(err, errlen, msg);
    }
    if (m->attention == ATTN_MLA && resolve_mla(m, err, errlen) != 0)
        return -1;
    if (check_moe(m, err, errlen) != 0)
        return -1;
    // Every tensor is a checkpoint dataset, a probe column and a Muon assignment: a table of
    // millions (layers x experts) is a config mistake, not a study.
    double tensors = (double)m->layers * (12.0 + (3.0 * (m->experts + m->shared_experts)));
    if (tensors > 200000.0) {
        snprintf(msg, sizeof(msg),
                 "model.layers = %d with %d experts makes about %.0f parameter tensors (at most "
                 "200000): lower model.experts or model.layers",
                 m->layers, m->experts + m->shared_experts, tensors);
        return fail(err, errlen, msg);
    }
    return 0;
}

double model_max_row_width(const struct model_config *m)
{
    double w = m->vocab;
    if (3.0 * m->heads * m->head_dim > w)
        w = 3.0 * m->heads * m->head_dim;
    if (2.0 * m->mlp_ratio * m->dim > w)
        w = 2.0 * m->mlp_ratio * m->dim;
    if (m->experts > 0) { // the expert buffers have top_k rows per token
        double e = 2.0 * m->mlp_ratio * m->dim > m->dim ? 2.0 * m->mlp_ratio * m->dim : m->dim;
        if (m->top_k * e > w)
            w = m->top_k * e;
    }
    if (m->attention == ATTN_MLA && (double)m->heads * (m->head_dim + m->rope_dim) > w)
        w = (double)m->heads * (m->head_dim + m->rope_dim);
    if ((double)m->heads * m->seq_len > w) // the attention probabilities, a row per query
        w = (double)m->heads * m->seq_len;
    return w;
}
