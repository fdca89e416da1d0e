// LayerNorm / RMSNorm forward and backward. Row statistics accumulate in double (DESIGN.md §4).
// Rows are independent: parallel over rows; the gain gradient is reduced over rows in a fixed
// order per column block, so results do not depend on the thread count.
#include "model/norm.h"

#include <math.h>
#include <stddef.h>

#include "util/fastmath.h"

void norm_forward(float *out, float *mean, float *rstd, const float *in, const float *gain, int n,
                  int c, enum norm_kind kind)
{
#pragma omp parallel for schedule(static)
    for (int r = 0; r < n; r++) {
        const float *x = in + (size_t)r * c;
        float *y = out + (size_t)r * c;
        double m = kind == NORM_LAYERNORM ? lanes_sum(x, c) / c : 0.0;
        double v = lanes_sumsq_dev(x, m, c) / c;
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
        // eight double lanes each (vectorisable, fixed order), as util/fastmath.h's sums
        double lg[8] = {0, 0, 0, 0, 0, 0, 0, 0}, lgx[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        int i0 = 0;
        for (; i0 + 8 <= c; i0 += 8)
            for (int k = 0; k < 8; k++) {
                float g = dy[i0 + k] * gain[i0 + k];
                lg[k] += g;
                lgx[k] += (double)g * (double)((x[i0 + k] - m) * s);
            }
        for (; i0 < c; i0++) {
            float g = dy[i0] * gain[i0];
            lg[0] += g;
            lgx[0] += (double)g * (double)((x[i0] - m) * s);
        }
        double sum_g = lanes8_total(lg), sum_gx = lanes8_total(lgx);
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
