// provides: QK-clip (MuonClip, Kimi K2, arXiv 2507.20534): the per-head factors η from the
//           heads' max logits and their application to the query and key projections.
//
// A head h whose max pre-softmax logit S_h (over the global batch) exceeds τ gets η = τ / S_h;
// its logits q·k scale by η when W_q's rows of the head scale by η^α and W_k's by η^(1−α). With
// MLA the head's non-rope query rows scale by η^α, its rope query rows by η, and its key-content
// rows of the KV up-projection by η^(1−α); the rope key, shared by the heads, and V stay. Every
// logit of the head then scales by exactly η (up to float rounding). Optimizer state is not
// touched.
#ifndef CANARY_MODEL_QK_CLIP_H
#define CANARY_MODEL_QK_CLIP_H

#include "model/model.h"

// eta[n] = min(1, tau / max_logit[n]) (1 when max_logit ≤ tau, NaN when it is NaN). Returns the
// number of heads with eta < 1.
int qk_clip_eta(const double *max_logit, int n, double tau, double *eta);

// Scales the rows of every head with eta < 1 in params (the model's table), as above.
// eta [layers, heads].
void qk_clip_apply(const struct model *m, float *params, const double *eta, double alpha);

#endif
