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

// The capped logit c·tanh(z/c), or z when c = 0.
static inline float cap(float z, float c, float inv)
{
    return c > 0.0f ? c * fm_tanhf(z * inv) : z;
}

// Σ_j exp(cap(x_j) − mx) over a row in eight double lanes, the tail in lane 0 (the order every
// loss of this file uses, so they report the same bits). c = 0: no capping.
static inline double exp_sum(const float *x, int n, float mx, float c, float inv)
{
    double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int j = 0;
    for (; j + 8 <= n; j += 8)
        for (int k = 0; k < 8; k++)
            lane[k] += (double)fm_expf(cap(x[j + k], c, inv) - mx);
    for (; j < n; j++)
        lane[0] += (double)fm_expf(cap(x[j], c, inv) - mx);
    return lanes8_total(lane);
}

// The row's max (returned), Σx² and max |x| in one pass over x[0..n), n ≥ 1: eight lanes of
// max, min and a double sum of squares (vectorised; the row max is exact, so the loss does not
// change by fusing). A NaN makes *sumsq NaN, and then *absmax too.
static inline float row_scan(const float *x, int n, double *sumsq, double *absmax)
{
    float hi[8], lo[8];
    double sq[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int k = 0; k < 8; k++)
        hi[k] = lo[k] = x[0];
    int j = 0;
    for (; j + 8 <= n; j += 8)
        for (int k = 0; k < 8; k++) {
            float v = x[j + k];
            hi[k] = v > hi[k] ? v : hi[k];
            lo[k] = v < lo[k] ? v : lo[k];
            sq[k] += (double)v * (double)v;
        }
    for (; j < n; j++) {
        float v = x[j];
        hi[0] = v > hi[0] ? v : hi[0];
        lo[0] = v < lo[0] ? v : lo[0];
        sq[0] += (double)v * (double)v;
    }
    float mx = hi[0], mn = lo[0];
    for (int k = 1; k < 8; k++) {
        mx = hi[k] > mx ? hi[k] : mx;
        mn = lo[k] < mn ? lo[k] : mn;
    }
    *sumsq = lanes8_total(sq);
    *absmax = *sumsq != *sumsq ? NAN : fmax(fabs((double)mx), fabs((double)mn));
    return mx;
}

// One row with soft-capped logits z' = c·tanh(z/c): the loss of z', its gradient with respect to
// the raw z (the softmax gradient times 1 − tanh²) into x. Returns log Z of the capped row; *ce
// gets its cross-entropy. The exponentials are computed twice (no scratch row).
static double capped_row(float *x, int y, int vocab, float c, float z_coef, float scale_n,
                         double *ce)
{
    float inv = 1.0f / c;
    for (int j = 0; j < vocab; j++)
        x[j] = c * fm_tanhf(x[j] * inv);
    float mx = fm_max(x, vocab);
    double sum = exp_sum(x, vocab, mx, 0.0f, 0.0f); // x is capped already
    double lz = (double)mx + log(sum);
    *ce = lz - (double)x[y];
    float coef = (float)((1.0 + 2.0 * z_coef * lz) * scale_n / sum);
    float xy = x[y];
    // 1 − tanh², from the capped value x = c·t (t = x/c may pass 1 by an ulp: kept ≥ 0)
    for (int j = 0; j < vocab; j++) {
        float t = x[j] * inv, d = 1.0f - t * t;
        x[j] = coef * fm_expf(x[j] - mx) * (d > 0.0f ? d : 0.0f);
    }
    float ty = xy * inv, dy = 1.0f - ty * ty;
    x[y] -= scale_n * (dy > 0.0f ? dy : 0.0f);
    return lz;
}

void xent_forward_backward(struct loss_parts *parts, float *logits, struct xent_probe *probe,
                           const int *targets, int n, int vocab, float z_coef, float grad_scale,
                           float softcap)
{
    double ce_blk[XENT_BLOCK], lz_blk[XENT_BLOCK], sq_blk[XENT_BLOCK], am_blk[XENT_BLOCK];
    double sce = 0.0, sz = 0.0, ssq = 0.0, amax = 0.0;
    float *logz = probe ? probe->logz : NULL;
    for (int r0 = 0; r0 < n; r0 += XENT_BLOCK) {
        int r1 = r0 + XENT_BLOCK < n ? r0 + XENT_BLOCK : n;
#pragma omp parallel for schedule(static)
        for (int r = r0; r < r1; r++) {
            float *x = logits + (size_t)r * vocab;
            int y = targets[r];
            float mx = 0.0f; // the row max (the capped path finds its own)
            if (probe)
                mx = row_scan(x, vocab, &sq_blk[r - r0], &am_blk[r - r0]);
            else if (softcap <= 0.0f)
                mx = fm_max(x, vocab);
            if (softcap > 0.0f) {
                double ce;
                double lz = capped_row(x, y, vocab, softcap, z_coef, grad_scale / (float)n, &ce);
                ce_blk[r - r0] = ce;
                lz_blk[r - r0] = lz;
                if (logz)
                    logz[r] = (float)lz;
                continue;
            }
            float xy = x[y];
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
            if (probe) {
                ssq += sq_blk[r - r0];
                double a = am_blk[r - r0];
                amax = a > amax || a != a ? a : amax;
            }
        }
    }
    parts_set(parts, sce, sz, n, z_coef);
    if (probe) {
        probe->sumsq = ssq;
        probe->absmax = amax;
    }
}

void xent_forward(struct loss_parts *parts, const float *logits, const int *targets, int n,
                  int vocab, float z_coef, float softcap)
{
    float inv = softcap > 0.0f ? 1.0f / softcap : 0.0f;
    double ce_blk[XENT_BLOCK], lz_blk[XENT_BLOCK];
    double sce = 0.0, sz = 0.0;
    for (int r0 = 0; r0 < n; r0 += XENT_BLOCK) {
        int r1 = r0 + XENT_BLOCK < n ? r0 + XENT_BLOCK : n;
#pragma omp parallel for schedule(static)
        for (int r = r0; r < r1; r++) {
            const float *x = logits + (size_t)r * vocab;
            float mx;
            if (softcap > 0.0f) { // capping is monotone: the capped maximum, as in backward
                mx = cap(x[0], softcap, inv);
                for (int j = 1; j < vocab; j++)
                    mx = fmaxf(mx, cap(x[j], softcap, inv));
            } else {
                mx = fm_max(x, vocab);
            }
            double s = exp_sum(x, vocab, mx, softcap, inv);
            double lz = (double)mx + log(s);
            ce_blk[r - r0] = lz - (double)cap(x[targets[r]], softcap, inv);
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
