// LayerNorm / RMSNorm forward and backward. Row statistics accumulate in double (DESIGN.md §4).
// Rows are independent: parallel over rows; the gain gradient is reduced over rows in a fixed
// order per column block, so results do not depend on the thread count.
#include "model/norm.h"

#include <math.h>
#include <stddef.h>

void norm_forward(float *out, float *mean, float *rstd, const float *in, const float *gain, int n,
                  int c, enum norm_kind kind)
{
#pragma omp parallel for schedule(static)
    for (int r = 0; r < n; r++) {
        const float *x = in + (size_t)r * c;
        float *y = out + (size_t)r * c;
        double m = 0.0, v = 0.0;
        if (kind == NORM_LAYERNORM) {
            for (int i = 0; i < c; i++)
                m += x[i];
            m /= c;
        }
        for (int i = 0; i < c; i++) {
            double d = x[i] - m;
            v += d * d;
        }
        v /= c;
        float s = (float)(1.0 / sqrt(v + NORM_EPS));
        float mf = (float)m;
        for (int i = 0; i < c; i++)
            y[i] = (x[i] - mf) * s * gain[i];
        if (mean)
            mean[r] = mf;
        rstd[r] = s;
    }
}

void norm_backward(float *din, float *dgain, const float *dout, const float *in, const float *gain,
                   const float *mean, const float *rstd, int n, int c, enum norm_kind kind)
{
    // With xhat = (x - m)·s and g = dout·gain:
    //   layernorm: dx = s·(g − mean(g) − xhat·mean(g·xhat))
    //   rmsnorm:   dx = s·(g − xhat·mean(g·xhat))
#pragma omp parallel for schedule(static)
    for (int r = 0; r < n; r++) {
        const float *x = in + (size_t)r * c;
        const float *dy = dout + (size_t)r * c;
        float *dx = din + (size_t)r * c;
        float m = kind == NORM_LAYERNORM ? mean[r] : 0.0f;
        float s = rstd[r];
        double sum_g = 0.0, sum_gx = 0.0;
        for (int i = 0; i < c; i++) {
            float g = dy[i] * gain[i];
            sum_g += g;
            sum_gx += (double)g * (double)((x[i] - m) * s);
        }
        float mg = kind == NORM_LAYERNORM ? (float)(sum_g / c) : 0.0f;
        float mgx = (float)(sum_gx / c);
        for (int i = 0; i < c; i++) {
            float xhat = (x[i] - m) * s;
            dx[i] += s * (dy[i] * gain[i] - mg - xhat * mgx);
        }
    }
    // dgain[i] = Σ_r dout[r,i]·xhat[r,i]: columns split across threads, rows summed in order.
#pragma omp parallel
    {
#pragma omp for schedule(static)
        for (int blk = 0; blk < (c + 15) / 16; blk++) {
            int lo = blk * 16, hi = lo + 16 < c ? lo + 16 : c;
            double acc[16] = {0};
            for (int r = 0; r < n; r++) {
                const float *x = in + (size_t)r * c;
                const float *dy = dout + (size_t)r * c;
                float m = kind == NORM_LAYERNORM ? mean[r] : 0.0f;
                float s = rstd[r];
                for (int i = lo; i < hi; i++)
                    acc[i - lo] += (double)(dy[i] * ((x[i] - m) * s));
            }
            for (int i = lo; i < hi; i++)
                dgain[i] += (float)acc[i - lo];
        }
    }
}
