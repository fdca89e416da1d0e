// provides: matmul_forward/backward (linear layers), matmul_sgemm (row-major GEMM), matmul_gram
//           (A·Aᵀ), thread setup.
//
// The only code in canary that calls BLAS. Everything is row-major fp32; a weight is [out, in]
// like torch.nn.Linear.
#ifndef CANARY_MODEL_MATMUL_H
#define CANARY_MODEL_MATMUL_H

#include <stddef.h>

// The linear layers' precision (train.precision) and backend (train.matmul_backend). NULL, or
// bf16 = 0 and no dnnl: fp32 sgemm. bf16 = 1 on OpenBLAS: both operands of every product
// (forward, and both backward products) are rounded to bf16 (to nearest, ties to even:
// util/bf16.h) into the scratch buffers here, then multiplied by sgemm with fp32 accumulation:
// an exact emulation of a bf16 x bf16 -> fp32 GEMM up to the order of the fp32 sums. With dnnl
// the products are oneDNN's (model/matmul_dnnl.h): bf16 operands rounded the same way, or fp32.
// Sized at init (matmul_prec_init); a product larger than the scratch is a bug.
struct matmul_prec {
    int bf16;
    struct mm_dnnl *dnnl; // the oneDNN backend, or NULL: OpenBLAS
    float *a, *b, *c;     // emulation's rounded operands: [cap_act], [cap_w], [cap_act]
    size_t cap_act;       // floats of the largest activation operand (rows × width)
    size_t cap_w;         // floats of the largest weight
};

// onednn = 1: oneDNN's matmul (check mm_dnnl_available first), whose usual product has `rows`
// rows; 0: OpenBLAS.
void matmul_prec_init(struct matmul_prec *p, int bf16, int onednn, int rows, size_t cap_act,
                      size_t cap_w);
void matmul_prec_free(struct matmul_prec *p);

// out[n, out_dim] = in[n, in_dim] · w[out_dim, in_dim]ᵀ   (overwrites out); p: precision or NULL
void matmul_forward(struct matmul_prec *p, float *out, const float *in, const float *w, int n,
                    int in_dim, int out_dim);

// out[n, out_dim] += in[n, in_dim] · w[out_dim, in_dim]ᵀ   (ACCUMULATES into out). A residual
// branch lands this way: the caller copies the stream into out first, which costs less than
// BLAS zeroing C for beta = 0 and a separate add pass.
void matmul_forward_acc(struct matmul_prec *p, float *out, const float *in, const float *w, int n,
                        int in_dim, int out_dim);

// din[n, in_dim] = dout · w      (OVERWRITES din; skipped when din is NULL)
// dw[out_dim, in_dim] += doutᵀ · in   (ACCUMULATES into dw)
void matmul_backward(struct matmul_prec *p, float *din, float *dw, const float *dout,
                     const float *in, const float *w, int n, int in_dim, int out_dim);

// C[m, n] = alpha · op(A) · op(B) + beta · C, row-major; op(X) = Xᵀ when trans_x is nonzero.
void matmul_sgemm(int trans_a, int trans_b, int m, int n, int k, float alpha, const float *a,
                  int lda, const float *b, int ldb, float beta, float *c, int ldc);

// C[n, n] = alpha · A · Aᵀ for A [n, k] (trans = 0), or alpha · Aᵀ · A for A [k, n] (trans = 1);
// lda is A's row stride. C is the full symmetric matrix (row stride ldc). Half the FLOPs of the
// sgemm: BLAS fills one triangle (ssyrk), which is mirrored.
void matmul_gram(int trans, int n, int k, float alpha, const float *a, int lda, float *c, int ldc);

// Sets the BLAS and OpenMP thread counts for this process (train.threads), and the subnormal
// flush on every OpenMP thread (util/fpenv.h). With OpenBLAS's pthread build (its own thread
// pool, which races the OpenMP threads and does not carry the flush) BLAS stays single-threaded
// and matmul_sgemm splits the rows of C over the OpenMP threads instead.
void matmul_set_threads(int threads);

// The BLAS library's build description (OpenBLAS: version, core, threading), for provenance.
const char *matmul_blas_config(void);

// Single-thread sgemm rate in GFLOP/s on an n×n×n product, best of reps (for the benchmark and
// the progress line's % of peak). Allocates; call outside the training step.
double matmul_peak_gflops(int n, int reps);

// c[n, n] = a[n, n] · b[n, n] by some backend (ctx: its state).
typedef void (*matmul_bench_fn)(void *ctx, const float *a, const float *b, float *c, int n);

// The single-thread rate in GFLOP/s of `product` on n×n×n operands filled here: the best of reps
// timed calls after one untimed call (caches, thread pools, and any one-off conversion the
// product makes on its first call). matmul_peak_gflops is this for sgemm. Allocates.
double matmul_rate_gflops(int n, int reps, matmul_bench_fn product, void *ctx);

#endif
