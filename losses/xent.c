// Fused softmax cross-entropy + z-loss. Rows in parallel; per-row results go to small arrays
// and are summed in row order afterwards, so the reported loss does not depend on thread count.
#include "losses/xent.h"

#include <math.h>
#include <stddef.h>

#include "util/fastmath.h"

enum { XENT_BLOCK = 256 }; // rows per block of stack scratch for the ordered sums

static void parts_set(struct loss_parts *parts, double sce, double sz, int n, float z_coef)
{
    parts->ce = sce / n;
    parts->z = z_coef * sz / n;
    parts->aux = parts->balance = parts->router_z = 0.0;
    parts->total = parts->ce + parts->z;
}

void xent_forward_backward(struct loss_parts *parts, float *logits, float *logz, const int *targets,
                           int n, int vocab, float z_coef, float grad_scale)
{
    double ce_blk[XENT_BLOCK], lz_blk[XENT_BLOCK];
    double sce = 0.0, sz = 0.0;
    for (int r0 = 0; r0 < n; r0 += XENT_BLOCK) {
        int r1 = r0 + XENT_BLOCK < n ? r0 + XENT_BLOCK : n;
#pragma omp parallel for schedule(static)
        for (int r = r0; r < r1; r++) {
            float *x = logits + (size_t)r * vocab;
            int y = targets[r];
            float xy = x[y];
            float mx = fm_max(x, vocab);
            for (int j = 0; j < vocab; j++)
                x[j] = fm_expf(x[j] - mx);
            // the same lane order as xent_forward, so both report identical losses
            double sum = lanes_sum(x, vocab);
            double lz = (double)mx + log(sum);
            ce_blk[r - r0] = lz - (double)xy;
            lz_blk[r - r0] = lz;
            if (logz)
                logz[r] = (float)lz;
            // d/dx_j [ce + c·lz²]/n = (p_j − [j = y] + 2c·lz·p_j) / n, with p_j = e_j / Σe
            float coef = (float)((1.0 + 2.0 * z_coef * lz) * grad_scale / n / sum);
            for (int j = 0; j < vocab; j++)
                x[j] *= coef;
            x[y] -= grad_scale / (float)n;
        }
        for (int r = r0; r < r1; r++) {
            sce += ce_blk[r - r0];
            sz += lz_blk[r - r0] * lz_blk[r - r0];
        }
    }
    parts_set(parts, sce, sz, n, z_coef);
}

void xent_forward(struct loss_parts *parts, const float *logits, const int *targets, int n,
                  int vocab, float z_coef)
{
    double ce_blk[XENT_BLOCK], lz_blk[XENT_BLOCK];
    double sce = 0.0, sz = 0.0;
    for (int r0 = 0; r0 < n; r0 += XENT_BLOCK) {
        int r1 = r0 + XENT_BLOCK < n ? r0 + XENT_BLOCK : n;
#pragma omp parallel for schedule(static)
        for (int r = r0; r < r1; r++) {
            const float *x = logits + (size_t)r * vocab;
            float mx = fm_max(x, vocab);
            double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            int j = 0;
            for (; j + 8 <= vocab; j += 8)
                for (int k = 0; k < 8; k++)
                    lane[k] += (double)fm_expf(x[j + k] - mx);
            for (; j < vocab; j++)
                lane[0] += (double)fm_expf(x[j] - mx);
            double s = lanes8_total(lane);
            double lz = (double)mx + log(s);
            ce_blk[r - r0] = lz - (double)x[targets[r]];
            lz_blk[r - r0] = lz;
        }
        for (int r = r0; r < r1; r++) {
            sce += ce_blk[r - r0];
            sz += lz_blk[r - r0] * lz_blk[r - r0];
        }
    }
    parts_set(parts, sce, sz, n, z_coef);
}

void loss_parts_pack(const struct loss_parts *p, double *out)
{
    out[0] = p->total;
    out[1] = p->ce;
    out[2] = p->z;
    out[3] = p->aux;
    out[4] = p->balance;
    out[5] = p->router_z;
}

void loss_parts_unpack(struct loss_parts *p, const double *in)
{
    p->total = in[0];
    p->ce = in[1];
    p->z = in[2];
    p->aux = in[3];
    p->balance = in[4];
    p->router_z = in[5];
}
