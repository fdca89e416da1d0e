// Embedding lookup and its scatter-add backward.
#include "model/embed.h"

#include <stddef.h>

void embed_forward(float *out, const int *tokens, const float *wte, const float *wpe, int B, int T,
                   int C)
{
#pragma omp parallel for schedule(static)
    for (int bt = 0; bt < B * T; bt++) {
        const float *e = wte + (size_t)tokens[bt] * C;
        const float *p = wpe ? wpe + (size_t)(bt % T) * C : NULL;
        float *y = out + (size_t)bt * C;
        for (int i = 0; i < C; i++)
            y[i] = p ? e[i] + p[i] : e[i];
    }
}

void embed_backward(float *dwte, float *dwpe, const float *dout, const int *tokens, int B, int T,
                    int C)
{
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < (C + 15) / 16; blk++) {
        int lo = blk * 16, hi = lo + 16 < C ? lo + 16 : C;
        for (int bt = 0; bt < B * T; bt++) {
            const float *dy = dout + (size_t)bt * C;
            float *de = dwte + (size_t)tokens[bt] * C;
            for (int i = lo; i < hi; i++)
                de[i] += dy[i];
            if (dwpe) {
                float *dp = dwpe + (size_t)(bt % T) * C;
                for (int i = lo; i < hi; i++)
                    dp[i] += dy[i];
            }
        }
    }
}
