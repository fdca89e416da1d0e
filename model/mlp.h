// provides: gelu_forward/backward (tanh approximation), swiglu_forward/backward, and
//           mlp_act_forward/backward (the activation of an mlp_kind).
//
// The MLP's projections are matmuls composed in model.c; these are its activations.
#ifndef CANARY_MODEL_MLP_H
#define CANARY_MODEL_MLP_H

#include <stddef.h>

enum mlp_kind { MLP_GELU = 0, MLP_SWIGLU = 1 };

// out[n] = 0.5·u·(1 + tanh(sqrt(2/π)·(u + 0.044715·u³))). Overwrites out.
void gelu_forward(float *out, const float *in, size_t n);
// din[n] = dout · gelu'(in), given out = gelu_forward(in) (unchanged since). OVERWRITES din.
void gelu_backward(float *din, const float *dout, const float *in, const float *out, size_t n);

// in[rows, 2F] = [gate | up] (w1 x | w3 x); out[rows, F] = silu(gate) · up. Overwrites out.
void swiglu_forward(float *out, const float *in, int rows, int f);
// din[rows, 2F] from dout[rows, F]. OVERWRITES din.
void swiglu_backward(float *din, const float *dout, const float *in, int rows, int f);

// The MLP activation of kind on rows: in[rows, U] → out[rows, f], U = 2f for SwiGLU, f for GELU.
// Overwrites out.
void mlp_act_forward(enum mlp_kind kind, float *out, const float *in, int rows, int f);
// din[rows, U] from dout[rows, f] (U as above), given in and the forward's out. OVERWRITES din.
void mlp_act_backward(enum mlp_kind kind, float *din, const float *dout, const float *in,
                      const float *out, int rows, int f);

#endif
