// provides: attention_forward/backward (causal softmax attention core) and the head
//           split/merge permutations between [B·T, H·d_h] and [B, H, T, d_h].
//
// The core works on per-head contiguous q, k [B, H, T, d_qk] and v [B, H, T, d_v] (d_qk = d_v =
// d_h for standard attention; MLA's q and k carry the decoupled RoPE part on top); projections,
// qk-norm and RoPE are composed around it in model.c and model_mla.c.
#ifndef CANARY_MODEL_ATTENTION_H
#define CANARY_MODEL_ATTENTION_H

// out[B,H,T,d_v] = softmax(cap(q kᵀ · scale), causal) v. Writes the probabilities p[B,H,T,T]
// (zeros above the diagonal), kept for backward. Overwrites out and p.
// softcap > 0: each logit s becomes softcap·tanh(s/softcap) (Gemma 2's soft-capping) and
// capt[B,H,T,T] receives tanh(s/softcap) on the causal entries, for backward; softcap = 0: no
// capping, capt unused (may be NULL).
// When stats is not NULL it receives, per (batch, head), the max |logit| before capping (logit =
// q·k·scale over the causal entries), the attention entropy summed over query rows and the max
// signed logit before capping (QK-clip's S): stats[B·H, ATTN_STATS].
enum { ATTN_STATS = 3 };
// pr[B,H,T,T], when not NULL (bf16 attention), receives the probabilities rounded to bf16, and
// the output is computed from them (the caller rounds q, k and v): p stays fp32 for the softmax
// backward.
void attention_forward(float *out, float *p, float *stats, const float *q, const float *k,
                       const float *v, int B, int H, int T, int dqk, int dv, float scale,
                       float softcap, float *capt, float *pr);

// Given dout[B,H,T,d_v] and the forward's p, q, k, v: OVERWRITES dq, dk [B,H,T,d_qk] and
// dv [B,H,T,d_v] (dvd = d_v).
// dp[B,H,T,T] is scratch. softcap and capt as the forward had them.
// pr: the forward's rounded probabilities, or NULL. With pr, dv = prᵀ dout and the softmax's
// input gradient is rounded to bf16 before dq, dk (the caller rounds dout, as q, k, v).
void attention_backward(float *dq, float *dk, float *dv, float *dp, const float *dout,
                        const float *p, const float *q, const float *k, const float *v, int B,
                        int H, int T, int dqk, int dvd, float scale, float softcap,
                        const float *capt, const float *pr);

// 1 when attention_forward/backward use their direct loops (narrow heads, causal triangle only)
// for these sizes rather than sgemm over the full T×T square; both give the same values to
// rounding.
int attention_direct(int T, int dqk, int dv);

// x[B·T, ld] columns [col0, col0 + H·d_h) → heads[B, H, T, d_h]. Overwrites heads.
void attention_split_heads(float *heads, const float *x, int ld, int col0, int B, int H, int T,
                           int hd);
// heads[B, H, T, d_h] → x[B·T, ld] columns [col0, col0 + H·d_h). Overwrites those columns.
void attention_merge_heads(float *x, const float *heads, int ld, int col0, int B, int H, int T,
                           int hd);

#endif
