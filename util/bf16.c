// bf16 rounding of arrays (util/bf16.h).
#include "util/bf16.h"

void bf16_round_array(float *dst, const float *src, size_t n)
{
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++)
        dst[i] = bf16_round(src[i]);
}
