// MLP activations. Elementwise, parallel over static chunks; no reductions.
#include "model/mlp.h"

#include "util/fastmath.h"

#define GELU_K 0.7978845608028654f // sqrt(2/π)

void gelu_forward(float *out, const float *in, size_t n)
{
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) {
        float u = in[i];
        out[i] = 0.5f * u * (1.0f + fm_tanhf(GELU_K * (u + 0.044715f * u * u * u)));
    }
}

void gelu_backward(float *din, const float *dout, const float *in, const float *out, size_t n)
{
    // With q = (1 + tanh)/2 = out/u the derivative needs no second tanh (it was half the cost):
    //   gelu'(u) = q + 0.5·u·(1 − tanh²)·k·(1 + 3c·u²) = q + out·(2 − 2q)·k·(1 + 3c·u²),
    // since 1 − tanh² = 2q·(2 − 2q) and u·q = out. At u = 0, q = 1/2. A NaN in u or out stays NaN.
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) {
        float u = in[i], h = out[i];
        float q = u != 0.0f ? h / u : 0.5f;
        float d = q + h * (2.0f - 2.0f * q) * GELU_K * (1.0f + 3.0f * 0.044715f * u * u);
        din[i] = dout[i] * d;
    }
}

void swiglu_forward(float *out, const float *in, int rows, int f)
{
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const float *g = in + (size_t)r * 2 * f;
        const float *u = g + f;
        float *y = out + (size_t)r * f;
        for (int i = 0; i < f; i++) {
            float sig = fm_sigmoidf(g[i]);
            y[i] = g[i] * sig * u[i];
        }
    }
}

void swiglu_backward(float *din, const float *dout, const float *in, int rows, int f)
{
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const float *g = in + (size_t)r * 2 * f;
        const float *u = g + f;
        const float *dy = dout + (size_t)r * f;
        float *dg = din + (size_t)r * 2 * f;
        float *du = dg + f;
        for (int i = 0; i < f; i++) {
            float sig = fm_sigmoidf(g[i]);
            float silu = g[i] * sig;
            du[i] = dy[i] * silu;
            dg[i] = dy[i] * u[i] * sig * (1.0f + g[i] * (1.0f - sig));
        }
    }
}

void mlp_act_forward(enum mlp_kind kind, float *out, const float *in, int rows, int f)
{
    if (kind == MLP_SWIGLU)
        swiglu_forward(out, in, rows, f);
    else
        gelu_forward(out, in, (size_t)rows * f);
}

void mlp_act_backward(enum mlp_kind kind, float *din, const float *dout, const float *in,
                      const float *out, int rows, int f)
{
    if (kind == MLP_SWIGLU)
        swiglu_backward(din, dout, in, rows, f);
    else
        gelu_backward(din, dout, in, out, (size_t)rows * f);
}
