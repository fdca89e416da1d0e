// bf16 rounding of arrays (util/bf16.h).
#include "util/bf16.h"

void bf16_round_array(float *dst, const float *src, size_t n)
{
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++)
        dst[i] = bf16_round(src[i]);
}

void bf16_bits_array(uint16_t *dst, const float *src, size_t n)
{
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) {
        float r = bf16_round(src[i]);
        uint32_t u;
        memcpy(&u, &r, sizeof(u));
        dst[i] = (uint16_t)(u >> 16);
    }
}
