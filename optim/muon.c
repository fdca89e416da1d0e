// Muon. Elementwise parts parallel over static chunks; the Newton–Schulz products go through
// BLAS (ssyrk, sgemm), so the result depends only on the matrix and the thread count, not on which
// rank runs it.
#include "optim/muon.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/matmul.h"
#include "util/error.h"

#define NS_A 3.4445f
#define NS_B -4.7750f
#define NS_C 2.0315f

void muon_init(struct muon *m, const struct tensor_table *tt, const struct optim_config *oc)
{
    size_t big = 1, sq = 1;
    memset(m, 0, sizeof(*m));
    for (int i = 0; i < tt->n; i++) {
        const struct tensor *t = &tt->t[i];
        if (!optim_uses_muon(oc, t->kind))
            continue;
        size_t r = (size_t)(t->rows < t->cols ? t->rows : t->cols);
        big = t->size > big ? t->size : big;
        sq = r * r > sq ? r * r : sq;
    }
    m->momentum = xcalloc(tt->total, sizeof(float));
    m->x = xcalloc(big, sizeof(float));
    m->xn = xcalloc(big, sizeof(float));
    m->a = xcalloc(sq, sizeof(float));
    m->a2 = xcalloc(sq, sizeof(float));
}

void muon_free(struct muon *m)
{
    free(m->momentum);
    free(m->x);
    free(m->xn);
    free(m->a);
    free(m->a2);
    memset(m, 0, sizeof(*m));
}

void muon_momentum(struct muon *m, float *update, const float *grads, const struct tensor *t,
                   const struct optim_config *oc)
{
    float beta = (float)oc->momentum;
    float *b = m->momentum + t->offset;
    const float *g = grads + t->offset;
    float *u = update + t->offset;
#pragma omp parallel for simd schedule(static)
    for (size_t j = 0; j < t->size; j++) {
        float bj = beta * b[j] + (1.0f - beta) * g[j];
        b[j] = bj;
        u[j] = (1.0f - beta) * g[j] + beta * bj;
    }
}

void muon_newton_schulz(struct muon *m, float *x, int rows, int cols, int steps, double *ortho_err)
{
    // The Gram matrix is taken on the short side: A = X Xᵀ [rows²] when wide, Xᵀ X [cols²] when
    // tall, where the step becomes X ← a·X + X·B — NS of the transpose, without transposing.
    int tall = rows > cols;
    int r = tall ? cols : rows, c = tall ? rows : cols;
    size_t n = (size_t)rows * cols;
    float *X = m->x, *Xn = m->xn, *A = m->a, *A2 = m->a2;
    double ss = 0.0;
    for (size_t j = 0; j < n; j++)
        ss += (double)x[j] * (double)x[j];
    float inv = (float)(1.0 / (sqrt(ss) + 1e-7));
    for (size_t j = 0; j < n; j++)
        X[j] = x[j] * inv;
    // A and A² are symmetric: both come from matmul_gram (half an sgemm's FLOPs; for A², A·Aᵀ
    // is A·A). Only the update of X needs a full product.
    for (int s = 0; s < steps; s++) {
        matmul_gram(tall, r, c, 1.0f, X, cols, A, r); // A = X Xᵀ (wide) or Xᵀ X (tall)
        matmul_gram(0, r, r, NS_C, A, r, A2, r);      // c·A²
        for (size_t j = 0; j < (size_t)r * r; j++)
            A2[j] += NS_B * A[j]; // B = b·A + c·A²
        memcpy(Xn, X, n * sizeof(float));
        if (tall) // a·X + X·B   [rows, r]·[r, r]
            matmul_sgemm(0, 0, c, r, r, 1.0f, X, r, A2, r, NS_A, Xn, r);
        else // a·X + B·X   [r, r]·[r, cols]
            matmul_sgemm(0, 0, r, c, r, 1.0f, A2, r, X, c, NS_A, Xn, c);
        float *t = X;
        X = Xn;
        Xn = t;
    }
    if (ortho_err) {
        matmul_gram(tall, r, c, 1.0f, X, cols, A, r);
        double e = 0.0;
        for (int i = 0; i < r; i++)
            for (int j = 0; j < r; j++) {
                double d = (double)A[(size_t)i * r + j] - (i == j ? 1.0 : 0.0);
                e += d * d;
            }
        *ortho_err = sqrt(e / r);
    }
    memcpy(x, X, n * sizeof(float));
}

void muon_finish(float *update, const float *params, const struct tensor *t,
                 const struct optim_config *oc, double lr_t)
{
    double lr_m = lr_t * oc->muon_lr_scale;
    double s = oc->muon_scale == MUON_SCALE_SHAPE
                   ? sqrt(fmax(1.0, (double)t->rows / (double)t->cols))
                   : 0.2 * sqrt((double)(t->rows > t->cols ? t->rows : t->cols));
    double wd = oc->wd_mode == WD_COUPLED ? lr_m * oc->muon_weight_decay
                                          : lr_t / oc->lr * oc->muon_weight_decay;
    float f = (float)(lr_m * s), w = (float)wd;
    float *u = update + t->offset;
    const float *p = params + t->offset;
#pragma omp parallel for simd schedule(static)
    for (size_t j = 0; j < t->size; j++)
        u[j] = f * u[j] + w * p[j];
}

double muon_ns_flops(int rows, int cols, int steps)
{
    double r = rows < cols ? rows : cols, c = rows < cols ? cols : rows;
    return steps * (r * r * c + r * r * r + 2.0 * r * r * c); // two Gram products, one sgemm
}
