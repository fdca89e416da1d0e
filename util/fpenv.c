// Flush-to-zero / denormals-are-zero control (see fpenv.h for why and for the effect on values).
#include "util/fpenv.h"

#include <omp.h>

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
enum { MXCSR_FTZ = 1 << 15, MXCSR_DAZ = 1 << 6 };

int fpenv_flush_subnormals(void)
{
    _mm_setcsr(_mm_getcsr() | MXCSR_FTZ | MXCSR_DAZ);
    return 0;
}

int fpenv_flushing(void)
{
    unsigned csr = _mm_getcsr();
    return (csr & MXCSR_FTZ) && (csr & MXCSR_DAZ);
}
#elif defined(__aarch64__)
// FPCR.FZ (bit 24) flushes both subnormal inputs and results for single and double precision.
static unsigned long fpcr_read(void)
{
    unsigned long v;
    __asm__ volatile("mrs %0, fpcr" : "=r"(v));
    return v;
}

int fpenv_flush_subnormals(void)
{
    unsigned long v = fpcr_read() | (1ul << 24);
    __asm__ volatile("msr fpcr, %0" : : "r"(v));
    return 0;
}

int fpenv_flushing(void)
{
    return (fpcr_read() >> 24) & 1;
}
#else
int fpenv_flush_subnormals(void)
{
    return -1;
}

int fpenv_flushing(void)
{
    return 0;
}
#endif

void fpenv_flush_subnormals_all(int threads)
{
    fpenv_flush_subnormals();
    // one region at the team size the computing regions use; libgomp keeps these threads, so
    // every later region of at most this size runs on threads that carry the flags
#pragma omp parallel num_threads(threads)
    fpenv_flush_subnormals();
}
