// provides: norm_forward/backward — LayerNorm (no bias) or RMSNorm with a gain, over rows.
//
// Used for the pre-LN block norms ([tokens, dim]) and for per-head qk-norm ([rows, head_dim],
// one gain shared by all heads). eps = 1e-6 as in Wortsman et al. (Flax default).
#ifndef CANARY_MODEL_NORM_H
#define CANARY_MODEL_NORM_H

enum norm_kind { NORM_LAYERNORM = 0, NORM_RMSNORM = 1 };

#define NORM_EPS 1e-6f

// out[n, c] = norm(in[n, c]) * gain[c]. Writes mean[n] (layernorm; unused for rmsnorm, may be
// NULL then) and rstd[n] = 1/sqrt(var + eps) (or 1/sqrt(mean(x²) + eps)). Overwrites out.
void norm_forward(float *out, float *mean, float *rstd, const float *in, const float *gain, int n,
                  int c, enum norm_kind kind);

// din[n, c] += dL/din and dgain[c] += dL/dgain given dout and the forward's in, mean, rstd.
// ACCUMULATES into both (din is usually the residual stream's gradient).
void norm_backward(float *din, float *dgain, const float *dout, const float *in, const float *gain,
                   const float *mean, const float *rstd, int n, int c, enum norm_kind kind);

#endif
