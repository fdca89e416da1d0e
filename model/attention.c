// Causal attention core. One (batch, head) pair per loop iteration, spread over OpenMP threads;
// the two T×T products per pair go through sgemm (single-threaded inside the parallel region with
// OpenBLAS's OpenMP build). Softmax statistics in double.
#include "model/attention.h"

#include <math.h>
#include <stddef.h>

#include "model/fastmath.h"
#include "model/matmul.h"

void attention_forward(float *out, float *p, float *stats, const float *q, const float *k,
                       const float *v, int B, int H, int T, int dqk, int dv, float scale)
{
#pragma omp parallel for schedule(static)
    for (int bh = 0; bh < B * H; bh++) {
        size_t off = (size_t)bh * T * dqk, voff = (size_t)bh * T * dv;
        float *pp = p + (size_t)bh * T * T;
        // scores = q kᵀ · scale, full square; the masked half is overwritten below.
        matmul_sgemm(0, 1, T, T, dqk, scale, q + off, dqk, k + off, dqk, 0.0f, pp, T);
        double max_abs = 0.0, entropy = 0.0;
        for (int i = 0; i < T; i++) {
            float *row = pp + (size_t)i * T;
            float mx = fm_max(row, i + 1);
            double tilt = 0.0; // Σ e_j (z_j − max), for the entropy
            if (stats) {
                float mn = fm_min(row, i + 1);
                max_abs = fmax(max_abs, fmax(fabs((double)mx), fabs((double)mn)));
                // tilt in eight double lanes (vectorisable), as fm_sum_f64
                double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
                int j = 0;
                for (; j + 8 <= i + 1; j += 8)
                    for (int l = 0; l < 8; l++) {
                        float t = row[j + l] - mx;
                        row[j + l] = fm_expf(t);
                        lane[l] += (double)row[j + l] * (double)t;
                    }
                for (; j <= i; j++) {
                    float t = row[j] - mx;
                    row[j] = fm_expf(t);
                    lane[0] += (double)row[j] * (double)t;
                }
                tilt = fm_lanes8_total(lane);
            } else {
                for (int j = 0; j <= i; j++)
                    row[j] = fm_expf(row[j] - mx);
            }
            double sum = fm_sum_f64(row, i + 1);
            float inv = (float)(1.0 / sum);
            for (int j = 0; j <= i; j++)
                row[j] *= inv;
            for (int j = i + 1; j < T; j++)
                row[j] = 0.0f;
            if (stats) // H = −Σ p log p = log Σe − Σ p (z − max)
                entropy += log(sum) - tilt / sum;
        }
        if (stats) {
            stats[2 * bh] = (float)max_abs;
            stats[2 * bh + 1] = (float)entropy;
        }
        matmul_sgemm(0, 0, T, dv, T, 1.0f, pp, T, v + voff, dv, 0.0f, out + voff, dv);
    }
}

void attention_backward(float *dq, float *dk, float *dv, float *dp, const float *dout,
                        const float *p, const float *q, const float *k, const float *v, int B,
                        int H, int T, int dqk, int dvd, float scale)
{
#pragma omp parallel for schedule(static)
    for (int bh = 0; bh < B * H; bh++) {
        size_t off = (size_t)bh * T * dqk, voff = (size_t)bh * T * dvd;
        const float *pp = p + (size_t)bh * T * T;
        float *dpp = dp + (size_t)bh * T * T;
        // dv = pᵀ dout;  dp = dout vᵀ
        matmul_sgemm(1, 0, T, dvd, T, 1.0f, pp, T, dout + voff, dvd, 0.0f, dv + voff, dvd);
        matmul_sgemm(0, 1, T, T, dvd, 1.0f, dout + voff, dvd, v + voff, dvd, 0.0f, dpp, T);
        // softmax backward: ds_ij = p_ij (dp_ij − Σ_j p_ij dp_ij), times the score scale.
        for (int i = 0; i < T; i++) {
            const float *prow = pp + (size_t)i * T;
            float *drow = dpp + (size_t)i * T;
            float fdot = (float)fm_dot_f64(prow, drow, i + 1);
            for (int j = 0; j <= i; j++)
                drow[j] = prow[j] * (drow[j] - fdot) * scale;
            for (int j = i + 1; j < T; j++)
                drow[j] = 0.0f;
        }
        // dq = ds k;  dk = dsᵀ q
        matmul_sgemm(0, 0, T, dqk, T, 1.0f, dpp, T, k + off, dqk, 0.0f, dq + off, dqk);
        matmul_sgemm(1, 0, T, dqk, T, 1.0f, dpp, T, q + off, dqk, 0.0f, dk + off, dqk);
    }
}

void attention_split_heads(float *heads, const float *x, int ld, int col0, int B, int H, int T,
                           int hd)
{
#pragma omp parallel for schedule(static)
    for (int bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H;
        for (int t = 0; t < T; t++) {
            const float *src = x + ((size_t)b * T + t) * ld + col0 + (size_t)h * hd;
            float *dst = heads + ((size_t)bh * T + t) * hd;
            for (int i = 0; i < hd; i++)
                dst[i] = src[i];
        }
    }
}

void attention_merge_heads(float *x, const float *heads, int ld, int col0, int B, int H, int T,
                           int hd)
{
#pragma omp parallel for schedule(static)
    for (int bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H;
        for (int t = 0; t < T; t++) {
            const float *src = heads + ((size_t)bh * T + t) * hd;
            float *dst = x + ((size_t)b * T + t) * ld + col0 + (size_t)h * hd;
            for (int i = 0; i < hd; i++)
                dst[i] = src[i];
        }
    }
}
