// Thin wrappers over cblas_sgemm (and cblas_ssyrk). Kept in one file so that BLAS is swappable and
// so that the FLOP accounting and thread control sit next to the only calls.
#include "model/matmul.h"

#include <cblas.h>
#include <omp.h>
#include <stdlib.h>

#include "model/matmul_dnnl.h"
#include "util/bf16.h"
#include "util/error.h"
#include "util/timer.h"

#include "util/fpenv.h"

void openblas_set_num_threads(int num_threads);
int openblas_get_parallel(void);
char *openblas_get_config(void);

// OpenBLAS's pthread build computes on a pool of its own threads, made when the library loads:
// they race canary's OpenMP threads for the cores and do not carry the subnormal flush
// (util/fpenv.h). With that build (blas_core_select warns) BLAS runs single-threaded and the
// large products are split over canary's OpenMP threads here instead.
static int blas_own_pool(void)
{
    return openblas_get_parallel() == 1;
}

void matmul_sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a,
                  int lda, const float *b, int ldb, float beta, float *c, int ldc)
{
    if (blas_own_pool() && m >= 64 && !omp_in_parallel() && omp_get_max_threads() > 1) {
        // rows of C in contiguous blocks, one per thread (op(A)'s rows are A's columns if trans_a)
#pragma omp parallel
        {
            int nt = omp_get_num_threads(), id = omp_get_thread_num();
            int lo = (int)((long)m * id / nt), hi = (int)((long)m * (id + 1) / nt);
            if (hi > lo)
                cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                            trans_b ? CblasTrans : CblasNoTrans, hi - lo, n, k, alpha,
                            a + (trans_a ? (size_t)lo : (size_t)lo * lda), lda, b, ldb, beta,
                            c + (size_t)lo * ldc, ldc);
        }
        return;
    }
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void matmul_prec_init(struct matmul_prec *p, int bf16, int onednn, int rows, size_t cap_act,
                      size_t cap_w)
{
    *p = (struct matmul_prec){.bf16 = bf16};
    if (onednn) {
        p->dnnl = mm_dnnl_create(bf16, rows, cap_act, cap_w);
        return;
    }
    p->cap_act = bf16 ? cap_act : 0;
    p->cap_w = bf16 ? cap_w : 0;
    p->a = bf16 ? xcalloc(cap_act, sizeof(float)) : NULL;
    p->b = bf16 ? xcalloc(cap_w, sizeof(float)) : NULL;
    p->c = bf16 ? xcalloc(cap_act, sizeof(float)) : NULL;
}

void matmul_prec_free(struct matmul_prec *p)
{
    mm_dnnl_free(p->dnnl);
    free(p->a);
    free(p->b);
    free(p->c);
    *p = (struct matmul_prec){0};
}

// The scratch slots: an activation (input or output gradient), a weight, a second activation.
enum operand_slot { SLOT_ACT, SLOT_W, SLOT_ACT2 };

// x[count] rounded to bf16 into the slot's scratch (returned), or x itself in fp32.
static const float *operand(const struct matmul_prec *p, enum operand_slot slot, const float *x,
                            size_t count)
{
    if (!p || !p->bf16)
        return x;
    float *buf = slot == SLOT_W ? p->b : slot == SLOT_ACT ? p->a : p->c;
    size_t cap = slot == SLOT_W ? p->cap_w : p->cap_act;
    if (count > cap)
        FATAL("bf16 operand of %zu floats exceeds the %zu sized at init", count, cap);
    bf16_round_array(buf, x, count);
    return buf;
}

// out = in · wᵀ + beta · out
static void forward_beta(struct matmul_prec *p, float *out, const float *in, const float *w, int n,
                         int in_dim, int out_dim, float beta)
{
    const float *a = operand(p, SLOT_ACT, in, (size_t)n * in_dim);
    const float *b = operand(p, SLOT_W, w, (size_t)out_dim * in_dim);
    matmul_sgemm(0, 1, n, out_dim, in_dim, 1.0f, a, in_dim, b, in_dim, beta, out, out_dim);
}

void matmul_forward(struct matmul_prec *p, float *out, const float *in, const float *w, int n,
                    int in_dim, int out_dim)
{
    if (p && p->dnnl) {
        mm_dnnl_forward(p->dnnl, out, in, w, n, in_dim, out_dim, 0);
        return;
    }
    forward_beta(p, out, in, w, n, in_dim, out_dim, 0.0f);
}

void matmul_forward_acc(struct matmul_prec *p, float *out, const float *in, const float *w, int n,
                        int in_dim, int out_dim)
{
    if (p && p->dnnl) {
        mm_dnnl_forward(p->dnnl, out, in, w, n, in_dim, out_dim, 1);
        return;
    }
    forward_beta(p, out, in, w, n, in_dim, out_dim, 1.0f);
}

void matmul_backward(struct matmul_prec *p, float *din, float *dw, const float *dout,
                     const float *in, const float *w, int n, int in_dim, int out_dim)
{
    if (p && p->dnnl) {
        mm_dnnl_backward(p->dnnl, din, dw, dout, in, w, n, in_dim, out_dim);
        return;
    }
    const float *d = operand(p, SLOT_ACT, dout, (size_t)n * out_dim);
    if (din) {
        const float *b = operand(p, SLOT_W, w, (size_t)out_dim * in_dim);
        matmul_sgemm(0, 0, n, in_dim, out_dim, 1.0f, d, out_dim, b, in_dim, 0.0f, din, in_dim);
    }
    const float *x = operand(p, SLOT_ACT2, in, (size_t)n * in_dim);
    matmul_sgemm(1, 0, out_dim, in_dim, n, 1.0f, d, out_dim, x, in_dim, 1.0f, dw, in_dim);
}

void matmul_gram(int trans, int n, int k, float alpha, const float *a, int lda, float *c, int ldc)
{
    cblas_ssyrk(CblasRowMajor, CblasUpper, trans ? CblasTrans : CblasNoTrans, n, k, alpha, a, lda,
                0.0f, c, ldc);
    // c[i][j] ← c[j][i] below the diagonal, in 32 x 32 tiles (a plain column walk costs 2.5x as
    // much, ~7% of a 512 x 512 Newton–Schulz)
    for (int ib = 0; ib < n; ib += 32)
        for (int jb = 0; jb <= ib; jb += 32)
            for (int i = ib; i < ib + 32 && i < n; i++)
                for (int j = jb; j < jb + 32 && j < i; j++)
                    c[(size_t)i * ldc + j] = c[(size_t)j * ldc + i];
}

void matmul_set_threads(int threads)
{
    ASSERT(threads >= 1);
    omp_set_num_threads(threads);
    openblas_set_num_threads(blas_own_pool() ? 1 : threads);
    fpenv_flush_subnormals_all(threads);
}

const char *matmul_blas_config(void)
{
    return openblas_get_config();
}

double matmul_rate_gflops(int n, int reps, matmul_bench_fn product, void *ctx)
{
    size_t nn = (size_t)n * (size_t)n;
    float *a = xmalloc(nn * sizeof(float));
    float *b = xmalloc(nn * sizeof(float));
    float *c = xmalloc(nn * sizeof(float));
    double best = 1e30;
    int saved = omp_get_max_threads();
    for (size_t i = 0; i < nn; i++) {
        a[i] = (float)((i * 7 % 13) - 6) * 0.01f;
        b[i] = (float)((i * 5 % 11) - 5) * 0.01f;
    }
    matmul_set_threads(1);
    for (int r = 0; r < reps + 1; r++) {
        double t0 = timer_now();
        product(ctx, a, b, c, n);
        double dt = timer_now() - t0;
        if (r > 0 && dt < best) // the first call warms caches and thread pools
            best = dt;
    }
    matmul_set_threads(saved);
    free(a);
    free(b);
    free(c);
    return 2.0 * (double)n * (double)n * (double)n / best * 1e-9;
}

static void sgemm_product(void *ctx, const float *a, const float *b, float *c, int n)
{
    (void)ctx;
    matmul_sgemm(0, 0, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
}

double matmul_peak_gflops(int n, int reps)
{
    return matmul_rate_gflops(n, reps, sgemm_product, NULL);
}
