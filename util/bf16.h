// provides: bf16_round — a float rounded to the nearest bfloat16 (round to nearest, ties to
//           even), kept in a float, and bf16_round_array; bf16_bits_array, the same rounding
//           stored as 16-bit bf16 (the operands of a bf16 GEMM library).
//
// bfloat16 is float32's upper 16 bits: the same 8-bit exponent, 7 stored mantissa bits. The
// rounding is integer arithmetic on the bits, so it does not depend on the FPU's modes (the
// subnormal flush of util/fpenv.h included): ±inf stay, a NaN stays a NaN (quiet, even one whose
// payload sits only in the dropped bits), values past bf16's largest finite value
// (3.3895e38) round to ±inf, and float subnormals round to bf16 subnormals (or 0).
#ifndef CANARY_UTIL_BF16_H
#define CANARY_UTIL_BF16_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline float bf16_round(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof(u));
    if ((u & 0x7fffffffu) > 0x7f800000u) // NaN: quiet it so truncation cannot make it ±inf
        u |= 0x00400000u;
    else
        u += 0x7fffu + ((u >> 16) & 1u); // to nearest, ties to the even upper half
    u &= 0xffff0000u;
    memcpy(&x, &u, sizeof(u));
    return x;
}

// dst[i] = bf16_round(src[i]) for i < n (dst may equal src). Vectorises (integer lanes).
void bf16_round_array(float *dst, const float *src, size_t n);

// dst[i] = the upper 16 bits of bf16_round(src[i]): bf16 numbers as GEMM libraries take them
// (oneDNN's bf16), rounded exactly as bf16_round_array rounds. Vectorises.
void bf16_bits_array(uint16_t *dst, const float *src, size_t n);

#endif
