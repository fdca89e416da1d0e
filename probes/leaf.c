// Per-micro-batch probe records and the rows made from their fold (see leaf.h).
#include "probes/leaf.h"

#include <math.h>

#include "probes/stats.h"

void probe_leaf_init(struct probe_leaf *pl, int layers, int heads, int moe_layers, int experts,
                     int kv_latent, int q_latent)
{
    int LH = layers * heads, ME = moe_layers * experts;
    pl->layers = layers, pl->heads = heads, pl->moe_layers = moe_layers, pl->experts = experts;
    partial_layout_init(&pl->every);
    pl->logz = partial_layout_add(&pl->every, PARTIAL_MOMENTS, 1);
    pl->logz_max = partial_layout_add(&pl->every, PARTIAL_MAX, 1);
    pl->logit_sumsq = partial_layout_add(&pl->every, PARTIAL_SUM, 1);
    pl->logit_max = partial_layout_add(&pl->every, PARTIAL_MAX, 1);
    pl->moe_chosen = partial_layout_add(&pl->every, PARTIAL_SUM, ME);
    partial_layout_init(&pl->step);
    pl->attn_max = partial_layout_add(&pl->step, PARTIAL_MAX, LH);
    pl->attn_entropy = partial_layout_add(&pl->step, PARTIAL_SUM, LH);
    pl->q_sumsq = partial_layout_add(&pl->step, PARTIAL_SUM, LH);
    pl->k_sumsq = partial_layout_add(&pl->step, PARTIAL_SUM, LH);
    pl->resid_sumsq = partial_layout_add(&pl->step, PARTIAL_SUM, layers);
    pl->kv_latent_sumsq = kv_latent ? partial_layout_add(&pl->step, PARTIAL_SUM, layers) : -1;
    pl->q_latent_sumsq = q_latent ? partial_layout_add(&pl->step, PARTIAL_SUM, layers) : -1;
    pl->moe_kept = partial_layout_add(&pl->step, PARTIAL_SUM, ME);
    pl->moe_z = partial_layout_add(&pl->step, PARTIAL_SUM, moe_layers);
    pl->moe_entropy = partial_layout_add(&pl->step, PARTIAL_SUM, moe_layers);
}

double probe_softcap(double x, double c)
{
    return c > 0.0 ? c * tanh(x / c) : x;
}

void probe_leaf_output(const struct probe_leaf *pl, double *every, const float *logz, size_t n,
                       double logit_sumsq)
{
    struct stats_moments m;
    double mx = -INFINITY;
    stats_moments_of(&m, logz, n);
    for (size_t i = 0; i < n; i++)
        mx = logz[i] > mx || isnan(logz[i]) ? logz[i] : mx;
    every[pl->logz] = m.n, every[pl->logz + 1] = m.mean, every[pl->logz + 2] = m.m2;
    every[pl->logz_max] = mx;
    every[pl->logit_sumsq] = logit_sumsq;
}

void probe_leaf_rows(const struct probe_leaf *pl, const double *every, const double *step,
                     const struct probe_leaf_norms *nm, const struct probe_leaf_rows *out)
{
    int LH = pl->layers * pl->heads, E = pl->experts;
    double tok = nm->tokens;
    struct stats_moments m = {every[pl->logz], every[pl->logz + 1], every[pl->logz + 2]};
    if (out->logz_mean)
        *out->logz_mean = m.mean;
    if (out->logz_std)
        *out->logz_std = stats_moments_std(&m);
    if (out->logz_max)
        *out->logz_max = every[pl->logz_max];
    if (out->logit_rms)
        *out->logit_rms = stats_rms(every[pl->logit_sumsq], tok * nm->vocab);
    if (out->logit_max)
        *out->logit_max = every[pl->logit_max];
    if (out->logit_max_capped)
        *out->logit_max_capped = probe_softcap(every[pl->logit_max], nm->final_softcap);
    if (!step)
        return;
    for (int i = 0; out->attn_max && i < LH; i++) {
        out->attn_max[i] = step[pl->attn_max + i];
        if (out->attn_max_capped)
            out->attn_max_capped[i] = probe_softcap(step[pl->attn_max + i], nm->attn_softcap);
        out->attn_entropy[i] = step[pl->attn_entropy + i] / tok; // mean over query positions
        out->attn_q_rms[i] = stats_rms(step[pl->q_sumsq + i], tok * nm->dqk);
        out->attn_k_rms[i] = stats_rms(step[pl->k_sumsq + i], tok * nm->dqk);
    }
    for (int l = 0; l < pl->layers; l++) {
        if (out->resid_rms)
            out->resid_rms[l] = stats_rms(step[pl->resid_sumsq + l], tok * nm->dim);
        if (out->kv_latent_rms && pl->kv_latent_sumsq >= 0)
            out->kv_latent_rms[l] = stats_rms(step[pl->kv_latent_sumsq + l], tok * nm->kv_rank);
        if (out->q_latent_rms && pl->q_latent_sumsq >= 0)
            out->q_latent_rms[l] = stats_rms(step[pl->q_latent_sumsq + l], tok * nm->q_rank);
    }
    for (int i = 0; out->moe_load && i < pl->moe_layers; i++) {
        for (int e = 0; e < E; e++) {
            double chosen = every[pl->moe_chosen + i * E + e];
            out->moe_load[i * E + e] = chosen / (tok * nm->top_k);
            out->moe_dropped[i * E + e] =
                chosen > 0 ? 1.0 - step[pl->moe_kept + i * E + e] / chosen : 0.0;
        }
        out->moe_router_z[i] = step[pl->moe_z + i] / tok;
        out->moe_entropy[i] = step[pl->moe_entropy + i] / tok;
    }
}
