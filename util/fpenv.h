// provides: fpenv_flush_subnormals (this thread), fpenv_flush_subnormals_all (every OpenMP thread),
//           fpenv_flushing (whether this thread flushes).
//
// canary computes with subnormal floats (|x| < 1.18e-38) flushed to zero: results that would be
// subnormal become ±0 (FTZ) and subnormal inputs read as ±0 (DAZ). Large attention logits drive
// softmax probabilities and their gradients below 1e-38; on x86 every arithmetic operation on
// such a value takes a microcode assist, and OpenBLAS's sgemm ran 100-200x slower on them,
// making the high-LR runs of a stability study 4-10x slower than the rest. A value below 1.2e-38
// contributes nothing a float could still add to a sum of O(1) terms, so flushing changes no
// loss, gradient or probe beyond the last bit of sums that already carry rounding error.
//
// The flags live in each thread's control register (MXCSR on x86, FPCR on AArch64). New threads
// inherit the creating thread's, so main() sets them first; fpenv_flush_subnormals_all also sets
// them in every thread of the OpenMP pool, which OpenBLAS's OpenMP build computes on.
#ifndef CANARY_UTIL_FPENV_H
#define CANARY_UTIL_FPENV_H

// Sets flush-to-zero and denormals-are-zero for the calling thread. Returns 0, or -1 where the
// architecture has no such control (then subnormals are computed in full, slowly).
int fpenv_flush_subnormals(void);

// The same on every thread of the OpenMP pool at `threads` threads (the team train.threads asks
// for). Call after omp_set_num_threads and before the first computing parallel region.
void fpenv_flush_subnormals_all(int threads);

// 1 when the calling thread flushes subnormals (both FTZ and DAZ where they are separate), else 0.
int fpenv_flushing(void);

#endif
