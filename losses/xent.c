// Fused softmax cross-entropy + z-loss. Rows in parallel; per-row results go to small arrays
// and are summed in row order afterwards, so the reported loss does not depend on thread count.
#include "losses/xent.h"

#include <math.h>
#include <stddef.h>

// log Z of one row, in double for the sum.
static double row_logz(const float *x, int vocab)
{
    float mx = x[0];
    for (int j = 1; j < vocab; j++)
        mx = x[j] > mx ? x[j] : mx;
    double sum = 0.0;
    for (int j = 0; j < vocab; j++)
        sum += exp((double)(x[j] - mx));
    return (double)mx + log(sum);
}

void xent_forward_backward(struct loss_parts *parts, float *logits, float *logz,
                           const int *targets, int n, int vocab, float z_coef, float grad_scale)
{
    // Per-row values are summed in row order through fixed blocks of stack scratch (a per-call
    // [n] buffer would break the no-allocation rule).
    enum { BLOCK = 256 };
    double ce_blk[BLOCK], lz_blk[BLOCK];
    double sce = 0.0, sz = 0.0;
    for (int r0 = 0; r0 < n; r0 += BLOCK) {
        int r1 = r0 + BLOCK < n ? r0 + BLOCK : n;
#pragma omp parallel for schedule(static)
        for (int r = r0; r < r1; r++) {
            float *x = logits + (size_t)r * vocab;
            double lz = row_logz(x, vocab);
            int y = targets[r];
            ce_blk[r - r0] = lz - (double)x[y];
            lz_blk[r - r0] = lz;
            if (logz)
                logz[r] = (float)lz;
            // d/dx_j [ce + c·lz²]/n = (p_j − [j = y] + 2c·lz·p_j) / n
            float lzf = (float)lz;
            float coef = (1.0f + 2.0f * z_coef * lzf) * grad_scale / (float)n;
            float onehot = grad_scale / (float)n;
            for (int j = 0; j < vocab; j++) {
                float p = expf(x[j] - lzf);
                x[j] = p * coef;
            }
            x[y] -= onehot;
        }
        for (int r = r0; r < r1; r++) {
            sce += ce_blk[r - r0];
            sz += lz_blk[r - r0] * lz_blk[r - r0];
        }
    }
    parts->ce = sce / n;
    parts->z = z_coef * sz / n;
    parts->aux = 0.0;
    parts->total = parts->ce + parts->z;
}

void xent_forward(struct loss_parts *parts, const float *logits, const int *targets, int n,
                  int vocab, float z_coef)
{
    enum { BLOCK = 256 };
    double ce_blk[BLOCK], lz_blk[BLOCK];
    double sce = 0.0, sz = 0.0;
    for (int r0 = 0; r0 < n; r0 += BLOCK) {
        int r1 = r0 + BLOCK < n ? r0 + BLOCK : n;
#pragma omp parallel for schedule(static)
        for (int r = r0; r < r1; r++) {
            const float *x = logits + (size_t)r * vocab;
            double lz = row_logz(x, vocab);
            ce_blk[r - r0] = lz - (double)x[targets[r]];
            lz_blk[r - r0] = lz;
        }
        for (int r = r0; r < r1; r++) {
            sce += ce_blk[r - r0];
            sz += lz_blk[r - r0] * lz_blk[r - r0];
        }
    }
    parts->ce = sce / n;
    parts->z = z_coef * sz / n;
    parts->aux = 0.0;
    parts->total = parts->ce + parts->z;
}
