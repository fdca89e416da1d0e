// provides: multi-head latent attention for a block (private to model/; reference/papers.md §3).
//
// For N = B·T tokens with n1 = the block's normed input:
//   q    = wq n1, or wq_b RMSNorm(wq_a n1)                         [N, H·d_qk], d_qk = d_h + d_R
//   kva  = wkv_a n1 = [c_kv | k_R]                                 [N, d_c + d_R]
//   kvb  = wkv_b RMSNorm(c_kv) = [k_C heads | v heads]             [N, 2·H·d_h]
//   per head: q_h = [q_C ; q_R] (as projected), k_h = [k_C,h ; k_R] (one rope key for all heads);
//   qk-norm, when on, normalises these materialised q_h, k_h over d_qk (gain of d_qk);
//   RoPE (table of d_R) on the last d_R of each q_h and k_h;
//   att = causal softmax(q kᵀ / sqrt(d_qk)) v, heads merged              [N, H·d_h]
// The block's wo, residual and norms stay in model.c.
#ifndef CANARY_MODEL_MODEL_MLA_H
#define CANARY_MODEL_MODEL_MLA_H

#include "model/model.h"

// Fills the block's acts from a->n1 up to a->att (merged heads), attention statistics included.
void mla_forward(struct model *m, const float *params, int l, int B);

// Given g->datt = dL/d att, ACCUMULATES the MLA tensors' gradients and OVERWRITES g->dn with
// dL/d n1.
void mla_backward(struct model *m, const float *params, float *grads, int l, int B);

#endif
