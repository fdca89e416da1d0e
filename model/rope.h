// provides: rope_table_init, rope_forward/backward — rotary positions, interleaved pairs.
//
// Pair j of a head vector (elements 2j, 2j+1) at position t rotates by t·θ^(−2j/d_h), θ = 1e4.
// Applied in place to q or k laid out [B, H, T, d_h] (row r has position r % T).
#ifndef CANARY_MODEL_ROPE_H
#define CANARY_MODEL_ROPE_H

#define ROPE_THETA 10000.0

// cos_sin[T, d_h/2, 2]: cos and sin of each (position, pair). Overwrites.
void rope_table_init(float *cos_sin, int seq_len, int head_dim);

// x[rows, d_h] rotated forward in place.
void rope_forward(float *x, const float *cos_sin, int rows, int seq_len, int head_dim);
// dx[rows, d_h] rotated backward (by −angle) in place: the rotation is orthogonal, so the
// gradient of y = R x is dx = Rᵀ dy.
void rope_backward(float *dx, const float *cos_sin, int rows, int seq_len, int head_dim);
// The same on the first d elements of rows stride apart (MLA: the decoupled RoPE part at the end
// of each q or k row; x points at the part of row 0). cos_sin is a table built for d.
void rope_forward_strided(float *x, const float *cos_sin, int rows, int seq_len, int stride, int d);
void rope_backward_strided(float *dx, const float *cos_sin, int rows, int seq_len, int stride,
                           int d);

#endif
