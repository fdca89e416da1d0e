// provides: blas_core_select (run on the best OpenBLAS core this CPU supports, checked by an sgemm
//           self-test; may re-execute the process), blas_core_describe (the run header's line),
//           blas_core_decide / blas_core_level / blas_cpu_level (the pure parts, for tests).
//
// Debian's OpenBLAS (0.3.21) is a DYNAMIC_ARCH build: at load time it picks a kernel set ("core")
// from cpuid, or from OPENBLAS_CORETYPE. CPUs newer than the library fall back to its generic
// Prescott (SSE3) core: on an AVX-512 Xeon sgemm then runs at a fifth of the machine's rate, and
// nothing says so. The core is fixed when the library initialises, before main(), so choosing
// another means setting OPENBLAS_CORETYPE and executing the program again (execv of
// /proc/self/exe, before MPI_Init: the process keeps its pid, so mpirun's bookkeeping holds).
//
// Environment (the contract between the two executions, and the user's controls):
//   OPENBLAS_CORETYPE       the user's choice; kept unless the CPU cannot run it
//   CANARY_BLAS_CORE        set by canary to the core it put into OPENBLAS_CORETYPE
//   CANARY_BLAS_NOTE        set by canary: why this core (the header line and provenance)
//   CANARY_BLAS_REJECTED    set by canary: cores that failed the self-check, comma-separated
//   CANARY_CPU_ISA          caps the ISA canary assumes: sse3, avx, avx2 or avx512 (a cluster
//                           of mixed nodes can run one kernel everywhere)
//   CANARY_BLAS_AS_DETECTED test hook: treat OPENBLAS_CORETYPE as OpenBLAS's own detection, so
//                           a misdetected CPU can be reproduced on any machine
#ifndef CANARY_MODEL_BLAS_CORE_H
#define CANARY_MODEL_BLAS_CORE_H

#include <stddef.h>

// ISA levels, weakest first; a core needs the level of its widest kernels.
enum blas_isa { ISA_UNKNOWN = 0, ISA_SSE3, ISA_AVX, ISA_AVX2, ISA_AVX512 };

// The ISA level an OpenBLAS x86 core name needs (case-insensitive), ISA_UNKNOWN if not listed.
int blas_core_level(const char *core);

// The best ISA level this CPU and OS support (cpuid and xgetbv), capped by CANARY_CPU_ISA.
int blas_cpu_level(void);

// The core canary selects for an ISA level (AMD at AVX2: Zen; otherwise Haswell).
const char *blas_core_for_level(int level, int amd);

// What to do with the core OpenBLAS loaded.
struct blas_choice {
    int reexec;     // 1: execute again with OPENBLAS_CORETYPE = core
    int fatal;      // 1: no core is safe to run (message in note)
    char core[32];  // the core to run on
    char note[256]; // one line: which core and why
};

// Decides from: the loaded core; the user's OPENBLAS_CORETYPE (NULL if not set by the user); the
// core canary set before a re-exec (NULL on the first execution); the CPU's level (capped by
// CANARY_CPU_ISA) and its level without the cap (raw_level, to say which of the two rules a core
// out); AMD or not; the cores rejected by the self-check (comma-separated, "" for none). Pure.
void blas_core_decide(struct blas_choice *out, const char *loaded, const char *user,
                      const char *mine, int cpu_level, int raw_level, int amd,
                      const char *rejected);

// sgemm against a plain double loop on odd sizes, all four transpose pairs. Returns the largest
// error relative to Σ|a||b| of the element (≤ 1e-5 for a correct fp32 sgemm).
double blas_selfcheck(void);

// The same check of any row-major sgemm (C = alpha·op(A)·op(B) + beta·C, matmul_sgemm's
// arguments), so that a test can show it catches a wrong one.
typedef void (*blas_sgemm_fn)(int trans_a, int trans_b, int m, int n, int k, float alpha,
                              const float *a, int lda, const float *b, int ldb, float beta,
                              float *c, int ldc);
double blas_selfcheck_of(blas_sgemm_fn gemm);

// Called first in main(), before MPI_Init and any BLAS call: may re-execute the program with
// argv; returns when the loaded core is the one to use. Exits 1 (with a message) when no core
// is safe. Prints a line on stderr when it changes the core or overrides the user's choice.
// Also warns when the OpenBLAS build runs its own thread pool (see matmul.h's safe mode).
void blas_core_select(char **argv);

// "OpenBLAS 0.3.21 core Haswell (OpenMP build): <note>" into buf.
void blas_core_describe(char *buf, size_t len);

// The loaded core's name ("Haswell").
const char *blas_core_name(void);

#endif
