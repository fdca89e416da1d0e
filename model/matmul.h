// provides: matmul_forward/backward (linear layers), matmul_sgemm (row-major GEMM), matmul_gram
//           (A·Aᵀ), thread setup.
//
// The only code in canary that calls BLAS. Everything is row-major fp32; a weight is [out, in]
// like torch.nn.Linear.
#ifndef CANARY_MODEL_MATMUL_H
#define CANARY_MODEL_MATMUL_H

// out[n, out_dim] = in[n, in_dim] · w[out_dim, in_dim]ᵀ   (overwrites out)
void matmul_forward(float *out, const float *in, const float *w, int n, int in_dim, int out_dim);

// out[n, out_dim] += in[n, in_dim] · w[out_dim, in_dim]ᵀ   (ACCUMULATES into out). A residual
// branch lands this way: the caller copies the stream into out first, which costs less than
// BLAS zeroing C for beta = 0 and a separate add pass.
void matmul_forward_acc(float *out, const float *in, const float *w, int n, int in_dim,
                        int out_dim);

// din[n, in_dim] = dout · w      (OVERWRITES din; skipped when din is NULL)
// dw[out_dim, in_dim] += doutᵀ · in   (ACCUMULATES into dw)
void matmul_backward(float *din, float *dw, const float *dout, const float *in, const float *w,
                     int n, int in_dim, int out_dim);

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

#endif
