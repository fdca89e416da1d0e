// provides: struct probe_leaf — what one micro-batch (a leaf of the global batch) contributes to
//           the probes, and the probe rows computed from the combination of all leaves.
//
// Two records per leaf (probes/partials.h): `every` at every step (output log Z moments and
// maximum, Σ logit², max |logit|, MoE choices) and `step` at probe steps only (attention, residual,
// MLA latents, MoE capacity and router statistics). launch/ fills them from the model after each
// forward, dist/ gathers them, partials_combine folds them in global order, and
// probe_leaf_rows turns the folded sums into the rows of probes.h5. Every row is thus a
// statistic of the whole global batch: maxima over it, means over all its tokens.
#ifndef CANARY_PROBES_LEAF_H
#define CANARY_PROBES_LEAF_H

#include <stddef.h>

#include "probes/partials.h"

struct probe_leaf {
    struct partial_layout every, step;
    int layers, heads, moe_layers, experts;
    // offsets in an `every` record
    int logz;        // moments (n, mean, m2) of log Z over the leaf's tokens
    int logz_max;    // max log Z
    int logit_sumsq; // Σ logit²
    int logit_max;   // max |logit|
    int moe_chosen;  // [moe_layers, experts] token-expert pairs chosen
    // offsets in a `step` record
    int attn_max, attn_entropy, q_sumsq, k_sumsq; // [layers, heads] max, Σ row entropy, Σq², Σk²
    int resid_sumsq;                              // [layers]
    int kv_latent_sumsq, q_latent_sumsq;          // [layers], or −1 without MLA / query latent
    int moe_kept;                                 // [moe_layers, experts]
    int moe_z, moe_entropy;                       // [moe_layers] Σ over tokens
};

void probe_leaf_init(struct probe_leaf *pl, int layers, int heads, int moe_layers, int experts,
                     int kv_latent, int q_latent);

// The output part of an `every` record: log Z of the leaf's n tokens and its logits' Σ².
void probe_leaf_output(const struct probe_leaf *pl, double *every, const float *logz, size_t n,
                       double logit_sumsq);

// c·tanh(x/c), or x when c = 0: a maximum as the soft-capped softmax or loss sees it.
double probe_softcap(double x, double c);

// Sizes that turn sums into means: tokens of the global batch, widths of what was summed.
struct probe_leaf_norms {
    double tokens; // sequences × seq_len of the global batch
    int vocab, dqk, dim, kv_rank, q_rank, top_k;
    double attn_softcap, final_softcap; // 0: off
};

// Row buffers to fill; a NULL pointer is skipped. Shapes as the probes of the same name.
struct probe_leaf_rows {
    double *logz_mean, *logz_std, *logz_max, *logit_rms;         // scalars
    double *logit_max, *logit_max_capped;                        // scalars
    double *attn_max_capped;                                     // [layers, heads]
    double *attn_max, *attn_entropy, *attn_q_rms, *attn_k_rms;   // [layers, heads]
    double *resid_rms, *kv_latent_rms, *q_latent_rms;            // [layers]
    double *moe_load, *moe_dropped, *moe_router_z, *moe_entropy; // [moe, E], [moe, E], [moe]
};

// Rows from the folded records: `every` always, `step` (may be NULL) at probe steps.
void probe_leaf_rows(const struct probe_leaf *pl, const double *every, const double *step,
                     const struct probe_leaf_norms *nm, const struct probe_leaf_rows *out);

#endif
