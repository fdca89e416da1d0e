// What the probes read from a forward, as sums over its sequences (see model.h). The model keeps
// no probe state: launch/ asks after a forward and hands the sums to probes/.
#include <math.h>
#include <string.h>

#include "model/attention.h"
#include "model/model.h"
#include "util/lanes.h"

void model_set_probing(struct model *m, int on)
{
    m->probe_attention = on;
}

void model_probe_sums(const struct model *m, int B, const struct model_probe_sums *out)
{
    const struct model_config *c = &m->cfg;
    int H = c->heads, T = c->seq_len, L = c->layers, E = c->experts, dqk = m->dqk, i = 0;
    size_t per_head = (size_t)T * dqk, N = (size_t)B * T;
    for (int l = 0; l < L; l++) {
        const float *st = m->acts.attn_stats + (size_t)l * B * H * ATTN_STATS;
        const struct block_acts *a = &m->acts.blocks[l];
        for (int h = 0; h < H; h++) {
            double mx = 0.0, ent = 0.0, qs = 0.0, ks = 0.0;
            for (int b = 0; b < B; b++) {
                size_t bh = (size_t)b * H + h;
                float am = st[ATTN_STATS * bh];
                mx = am > mx || am != am ? am : mx; // NaN stays
                ent += st[ATTN_STATS * bh + 1];
                qs += lanes_dot(a->q + bh * per_head, a->q + bh * per_head, per_head);
                ks += lanes_dot(a->k + bh * per_head, a->k + bh * per_head, per_head);
            }
            out->attn_max[l * H + h] = mx;
            out->attn_entropy[l * H + h] = ent;
            out->q_sumsq[l * H + h] = qs;
            out->k_sumsq[l * H + h] = ks;
        }
        const float *x_out = l + 1 < L ? m->acts.blocks[l + 1].x_in : m->acts.x_final;
        out->resid_sumsq[l] = lanes_dot(x_out, x_out, N * c->dim);
        if (c->attention == ATTN_MLA && out->kv_latent_sumsq) {
            out->kv_latent_sumsq[l] = lanes_dot(a->ckv, a->ckv, N * c->kv_rank);
            if (out->q_latent_sumsq)
                out->q_latent_sumsq[l] =
                    c->q_rank > 0 ? lanes_dot(a->cq, a->cq, N * c->q_rank) : 0.0;
        }
        if (m->blocks[l].moe && out->moe_kept) {
            const double *counts = m->moe_counts + (size_t)l * 2 * E;
            memcpy(out->moe_kept + (size_t)i * E, counts + E, (size_t)E * sizeof(double));
            out->moe_z[i] = m->moe_stats[l].z * (double)N;
            out->moe_entropy[i] = m->moe_stats[l].entropy * (double)N;
            i++;
        }
    }
}

void model_attn_max_signed(const struct model *m, int B, double *out)
{
    int H = m->cfg.heads;
    for (int l = 0; l < m->cfg.layers; l++) {
        const float *st = m->acts.attn_stats + (size_t)l * B * H * ATTN_STATS;
        for (int h = 0; h < H; h++) {
            double mx = -INFINITY;
            for (int b = 0; b < B; b++) {
                float s = st[ATTN_STATS * ((size_t)b * H + h) + 2];
                mx = s > mx || s != s ? s : mx; // NaN stays
            }
            out[l * H + h] = mx;
        }
    }
}

void model_moe_chosen(const struct model *m, double *chosen)
{
    int E = m->cfg.experts, i = 0;
    for (int l = 0; l < m->cfg.layers; l++)
        if (m->blocks[l].moe)
            memcpy(chosen + (size_t)(i++) * E, m->moe_counts + (size_t)l * 2 * E,
                   (size_t)E * sizeof(double));
}
