// provides: the oneDNN backend of the linear layers' products (model/matmul.h; the only code in
//           canary that includes oneDNN): bf16 x bf16 -> fp32 matmul where the CPU has AMX or
//           AVX512-BF16, and oneDNN's fp32 matmul on any CPU (train.matmul_backend = onednn).
//
// Every product is a oneDNN matmul primitive on the caller's plain row-major layouts with fp32
// output and accumulation. bf16 operands are converted into scratch first by util/bf16.h's
// rounding, so they are bitwise the operands of the emulation backend (round, then sgemm); only
// the order of the fp32 sums differs. fp32 operands are passed as they are.
//
// Primitives are made at setup, in planning mode: model_set_precision runs one forward and
// backward whose products only make the primitives they would use. For each product shape two
// are made: one for the micro-batch's rows (B·T; its memory objects are made once too, so a step
// only points them at the data) and one with the rows as oneDNN's runtime dimension (an MoE
// expert's rows vary from step to step; evaluation may run fewer sequences). A product whose
// shape planning did not see makes its primitive when first met (counted: mm_dnnl_late).
//
// What allocates in a step: a runtime-rows product makes and frees its three memory objects (a
// handle each, the data is the caller's); oneDNN's gemm-based implementations (gemm:jit, the
// fp32 path on AVX2) allocate their packing buffers per call; a late primitive is compiled.
//
// One caller at a time: the memory objects and the bf16 scratch are shared by all products (the
// products themselves run on oneDNN's OpenMP threads).
#ifndef CANARY_MODEL_MATMUL_DNNL_H
#define CANARY_MODEL_MATMUL_DNNL_H

#include <stddef.h>

struct mm_dnnl;

// 1 when oneDNN makes a matmul primitive of this operand type (bf16 = 1: bf16, else fp32) on
// this CPU, for bf16 only with bf16 instructions (AVX512-BF16 or AMX: on plain AVX-512 oneDNN
// 2.6 converts to fp32 inside its kernels, no faster than the emulation); 0 with the reason in
// why.
int mm_dnnl_available(int bf16, char *why, size_t whylen);

// "oneDNN 2.6.3, instruction set avx2": the library's version and the CPU instruction set it
// dispatches to here ("avx512_core_amx" on AMX), for the run header and provenance.
void mm_dnnl_describe(char *buf, size_t len);

// A backend for operands of type bf16 (1) or fp32 (0), whose usual product has `rows` rows (the
// micro-batch's tokens). The bf16 scratch holds operands of up to cap_act activation floats and
// cap_w weight floats (as struct matmul_prec's). Aborts if oneDNN fails (call
// mm_dnnl_available first).
struct mm_dnnl *mm_dnnl_create(int bf16, int rows, size_t cap_act, size_t cap_w);
void mm_dnnl_free(struct mm_dnnl *d);

// Planning on: the products below make their primitives and compute nothing (outputs untouched).
void mm_dnnl_set_planning(struct mm_dnnl *d, int on);

// Primitives made, and how many of them were made outside planning.
int mm_dnnl_count(const struct mm_dnnl *d);
int mm_dnnl_late(const struct mm_dnnl *d);

// The distinct oneDNN implementations of the exact-rows primitives (runtime_rows = 0) or of the
// runtime-rows ones (1), comma-separated ("brg:avx512_core_amx_bf16", "gemm:jit"), or "" before
// planning.
const char *mm_dnnl_impl(const struct mm_dnnl *d, int runtime_rows);

// out[n, out_dim] = in[n, in_dim] · w[out_dim, in_dim]ᵀ, overwriting out, or adding into it
// when acc is 1. As matmul_forward / matmul_forward_acc.
void mm_dnnl_forward(struct mm_dnnl *d, float *out, const float *in, const float *w, int n,
                     int in_dim, int out_dim, int acc);

// din[n, in_dim] = dout · w (overwrites; skipped when din is NULL); dw[out_dim, in_dim] +=
// doutᵀ · in (accumulates). As matmul_backward.
void mm_dnnl_backward(struct mm_dnnl *d, float *din, float *dw, const float *dout, const float *in,
                      const float *w, int n, int in_dim, int out_dim);

// oneDNN's matmul rate in GFLOP/s on an n x n x n product of this operand type, on one thread,
// best of reps: the primitive alone, operands already converted (the benchmark's peak, beside
// sgemm's; matmul_rate_gflops). Allocates; call outside the training step.
double mm_dnnl_peak_gflops(int bf16, int n, int reps);

#endif
