// Rotary position embedding. Angles are computed in double once at init.
#include "model/rope.h"

#include <math.h>
#include <stddef.h>

void rope_table_init(float *cos_sin, int seq_len, int head_dim)
{
    int half = head_dim / 2;
    for (int t = 0; t < seq_len; t++) {
        for (int j = 0; j < half; j++) {
            double freq = pow(ROPE_THETA, -2.0 * j / head_dim);
            double angle = t * freq;
            cos_sin[((size_t)t * half + j) * 2] = (float)cos(angle);
            cos_sin[((size_t)t * half + j) * 2 + 1] = (float)sin(angle);
        }
    }
}

static void rope_rotate(float *x, const float *cos_sin, int rows, int seq_len, int stride,
                        int head_dim, float sign)
{
    int half = head_dim / 2;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        float *v = x + (size_t)r * stride;
        const float *cs = cos_sin + (size_t)(r % seq_len) * half * 2;
        for (int j = 0; j < half; j++) {
            float c = cs[2 * j], s = sign * cs[2 * j + 1];
            float x0 = v[2 * j], x1 = v[2 * j + 1];
            v[2 * j] = x0 * c - x1 * s;
            v[2 * j + 1] = x0 * s + x1 * c;
        }
    }
}

void rope_forward(float *x, const float *cos_sin, int rows, int seq_len, int head_dim)
{
    rope_rotate(x, cos_sin, rows, seq_len, head_dim, head_dim, 1.0f);
}

void rope_backward(float *dx, const float *cos_sin, int rows, int seq_len, int head_dim)
{
    rope_rotate(dx, cos_sin, rows, seq_len, head_dim, head_dim, -1.0f);
}

void rope_forward_strided(float *x, const float *cos_sin, int rows, int seq_len, int stride, int d)
{
    rope_rotate(x, cos_sin, rows, seq_len, stride, d, 1.0f);
}

void rope_backward_strided(float *dx, const float *cos_sin, int rows, int seq_len, int stride,
                           int d)
{
    rope_rotate(dx, cos_sin, rows, seq_len, stride, d, -1.0f);
}
