// Causal attention core. One (batch, head) pair per loop iteration, spread over OpenMP threads.
// The T×T products per pair go through sgemm (single-threaded inside the parallel region with
// OpenBLAS's OpenMP build) in causal row blocks, or, for narrow heads, through the direct loops
// below; both skip (most of) the masked upper triangle. Softmax statistics in double.
#include "model/attention.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#include "util/bf16.h"
#include "util/fastmath.h"
#include "model/matmul.h"

// Narrow heads (d_qk, d_v ∈ {8, 16, 24, 32}): sgemm's packing and the zeroing of C cost more than
// the few FMAs per output of a K = 16 product (about 20% of a step at d_h = 16, perf), and half
// its square is masked anyway. The direct loops below skip the masked half and work on eight
// floats at a time (GCC vector extensions: AVX where compiled for it, SSE pairs otherwise), with
// the accumulators in registers; a transposed copy of k or v lives on the stack (64 KiB).
enum { ATTN_DIRECT_D = 32, ATTN_DIRECT_T = 512 };

int attention_direct(int T, int dqk, int dv)
{
    return dqk % 8 == 0 && dv % 8 == 0 && dqk <= ATTN_DIRECT_D && dv <= ATTN_DIRECT_D &&
           T <= ATTN_DIRECT_T;
}

typedef float v8f __attribute__((vector_size(32)));

// Without AVX (CANARY_NATIVE=OFF, the valgrind build) GCC warns that a 32-byte vector return
// changes the ABI; these helpers are static and always inlined, so no call crosses an ABI.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

static inline __attribute__((always_inline)) v8f v8_load(const float *p)
{
    v8f v;
    memcpy(&v, p, sizeof(v));
    return v;
}

static inline __attribute__((always_inline)) void v8_store(float *p, v8f v)
{
    memcpy(p, &v, sizeof(v));
}

// xt[d, T] = x[T, d]ᵀ
static void transpose_into(float *xt, const float *x, int T, int d)
{
    for (int t = 0; t < T; t++)
        for (int e = 0; e < d; e++)
            xt[(size_t)e * T + t] = x[(size_t)t * d + e];
}

// The kernels are inlined with d a constant (8, 16, 24 or 32: the only widths attention_direct
// admits), so their accumulators stay in registers; independent accumulators (four key blocks,
// four rows) hide the FMA latency that one running sum per output would expose.
#define ATTN_INLINE static inline __attribute__((always_inline))

// s[i, j] = scale · a_i · b_j for j ≤ i (entries past i up to the next multiple of 8 are written
// too; callers overwrite the masked half). a [T, d], bt = bᵀ [d, T].
ATTN_INLINE void scores_d(float *s, const float *a, const float *bt, int T, int d, float scale)
{
    for (int i = 0; i < T; i++) {
        float *row = s + (size_t)i * T;
        const float *ai = a + (size_t)i * d;
        int j0 = 0;
        for (; j0 <= i && j0 + 32 <= T; j0 += 32) {
            v8f acc0 = {0}, acc1 = {0}, acc2 = {0}, acc3 = {0};
            for (int e = 0; e < d; e++) {
                const float *b = bt + (size_t)e * T + j0;
                acc0 += ai[e] * v8_load(b);
                acc1 += ai[e] * v8_load(b + 8);
                acc2 += ai[e] * v8_load(b + 16);
                acc3 += ai[e] * v8_load(b + 24);
            }
            v8_store(row + j0, acc0 * scale);
            v8_store(row + j0 + 8, acc1 * scale);
            v8_store(row + j0 + 16, acc2 * scale);
            v8_store(row + j0 + 24, acc3 * scale);
        }
        for (; j0 <= i && j0 + 8 <= T; j0 += 8) {
            v8f acc = {0};
            for (int e = 0; e < d; e++)
                acc += ai[e] * v8_load(bt + (size_t)e * T + j0);
            v8_store(row + j0, acc * scale);
        }
        for (int j = j0; j <= i; j++) { // T not a multiple of 8: the last keys one by one
            float acc = 0.0f;
            for (int e = 0; e < d; e++)
                acc += ai[e] * bt[(size_t)e * T + j];
            row[j] = acc * scale;
        }
    }
}

// c[i, :] = Σ_{j ≤ i} s[i, j] · x[j, :] (OVERWRITES c); s [T, T] lower triangle, x and c [T, d].
// Four keys per pass into four accumulators, summed in a fixed order.
ATTN_INLINE void rows_times_d(float *c, const float *s, const float *x, int T, int d)
{
    enum { W = ATTN_DIRECT_D / 8 };
    for (int i = 0; i < T; i++) {
        v8f acc[4][W] = {{{0}}};
        const float *si = s + (size_t)i * T;
        int j = 0;
        for (; j + 4 <= i + 1; j += 4)
            for (int u = 0; u < 4; u++)
                for (int k = 0; k < d / 8; k++)
                    acc[u][k] += si[j + u] * v8_load(x + (size_t)(j + u) * d + 8 * k);
        for (; j <= i; j++)
            for (int k = 0; k < d / 8; k++)
                acc[0][k] += si[j] * v8_load(x + (size_t)j * d + 8 * k);
        for (int k = 0; k < d / 8; k++)
            v8_store(c + (size_t)i * d + 8 * k, (acc[0][k] + acc[1][k]) + (acc[2][k] + acc[3][k]));
    }
}

// c[j, :] = Σ_{i ≥ j} s[i, j] · x[i, :] (OVERWRITES c): sᵀ x over the lower triangle, four query
// rows per pass as above.
ATTN_INLINE void cols_times_d(float *c, const float *s, const float *x, int T, int d)
{
    enum { W = ATTN_DIRECT_D / 8 };
    for (int j = 0; j < T; j++) {
        v8f acc[4][W] = {{{0}}};
        int i = j;
        for (; i + 4 <= T; i += 4)
            for (int u = 0; u < 4; u++)
                for (int k = 0; k < d / 8; k++)
                    acc[u][k] +=
                        s[(size_t)(i + u) * T + j] * v8_load(x + (size_t)(i + u) * d + 8 * k);
        for (; i < T; i++)
            for (int k = 0; k < d / 8; k++)
                acc[0][k] += s[(size_t)i * T + j] * v8_load(x + (size_t)i * d + 8 * k);
        for (int k = 0; k < d / 8; k++)
            v8_store(c + (size_t)j * d + 8 * k, (acc[0][k] + acc[1][k]) + (acc[2][k] + acc[3][k]));
    }
}

// One call per admitted width, each with d a constant.
static void direct_scores(float *s, const float *a, const float *b, int T, int d, float scale)
{
    float bt[ATTN_DIRECT_D * ATTN_DIRECT_T];
    transpose_into(bt, b, T, d);
    switch (d) {
    case 8:
        scores_d(s, a, bt, T, 8, scale);
        break;
    case 16:
        scores_d(s, a, bt, T, 16, scale);
        break;
    case 24:
        scores_d(s, a, bt, T, 24, scale);
        break;
    default:
        scores_d(s, a, bt, T, 32, scale);
        break;
    }
}

static void direct_rows_times(float *c, const float *s, const float *x, int T, int d)
{
    switch (d) {
    case 8:
        rows_times_d(c, s, x, T, 8);
        break;
    case 16:
        rows_times_d(c, s, x, T, 16);
        break;
    case 24:
        rows_times_d(c, s, x, T, 24);
        break;
    default:
        rows_times_d(c, s, x, T, 32);
        break;
    }
}

static void direct_cols_times(float *c, const float *s, const float *x, int T, int d)
{
    switch (d) {
    case 8:
        cols_times_d(c, s, x, T, 8);
        break;
    case 16:
        cols_times_d(c, s, x, T, 16);
        break;
    case 24:
        cols_times_d(c, s, x, T, 24);
        break;
    default:
        cols_times_d(c, s, x, T, 32);
        break;
    }
}

// Wider heads: sgemm in blocks of ATTN_BLOCK query rows. Rows [i0, i1) of a causal product
// touch key columns [0, i1) only, so a T = 256 square costs 10/16 of the full one at 64-row
// blocks (36/64 at T = 512). Entries right of a block's last column are not written: the
// softmax loops zero every j > i before anything reads them.
enum { ATTN_BLOCK = 64 };

static int block_end(int i0, int T)
{
    return i0 + ATTN_BLOCK < T ? i0 + ATTN_BLOCK : T;
}

// s[i][j] = scale · a_i · b_j for j < (end of i's block); a [T, d], b [T, d], s [T, T]
static void blocked_scores(float *s, const float *a, const float *b, int T, int d, float scale)
{
    for (int i0 = 0; i0 < T; i0 += ATTN_BLOCK) {
        int i1 = block_end(i0, T);
        matmul_sgemm(0, 1, i1 - i0, i1, d, scale, a + (size_t)i0 * d, d, b, d, 0.0f,
                     s + (size_t)i0 * T, T);
    }
}

// c = s x for a causal s (zero above the diagonal): row i sums over j ≤ i; c [T, d], x [T, d]
static void blocked_rows_times(float *c, const float *s, const float *x, int T, int d)
{
    for (int i0 = 0; i0 < T; i0 += ATTN_BLOCK) {
        int i1 = block_end(i0, T);
        matmul_sgemm(0, 0, i1 - i0, d, i1, 1.0f, s + (size_t)i0 * T, T, x, d, 0.0f,
                     c + (size_t)i0 * d, d);
    }
}

// c = sᵀ x for a causal s: row j of c sums over i ≥ j
static void blocked_cols_times(float *c, const float *s, const float *x, int T, int d)
{
    for (int j0 = 0; j0 < T; j0 += ATTN_BLOCK) {
        int j1 = block_end(j0, T);
        matmul_sgemm(1, 0, j1 - j0, d, T - j0, 1.0f, s + (size_t)j0 * T + j0, T, x + (size_t)j0 * d,
                     d, 0.0f, c + (size_t)j0 * d, d);
    }
}

// Row i of the scores (j ≤ i) → softcap·tanh(s/softcap); tanh(s/softcap) kept in t for backward.
static void cap_row(float *row, float *t, int n, float softcap)
{
    float inv = 1.0f / softcap;
    for (int j = 0; j < n; j++) {
        t[j] = fm_tanhf(row[j] * inv);
        row[j] = softcap * t[j];
    }
}

void attention_forward(float *out, float *p, float *stats, const float *q, const float *k,
                       const float *v, int B, int H, int T, int dqk, int dv, float scale,
                       float softcap, float *capt, float *pr)
{
    int direct = attention_direct(T, dqk, dv);
#pragma omp parallel for schedule(static)
    for (int bh = 0; bh < B * H; bh++) {
        size_t off = (size_t)bh * T * dqk, voff = (size_t)bh * T * dv;
        float *pp = p + (size_t)bh * T * T;
        // scores = q kᵀ · scale; the masked half is overwritten below.
        if (direct)
            direct_scores(pp, q + off, k + off, T, dqk, scale);
        else
            blocked_scores(pp, q + off, k + off, T, dqk, scale);
        double max_abs = 0.0, entropy = 0.0, max_signed = -INFINITY;
        for (int i = 0; i < T; i++) {
            float *row = pp + (size_t)i * T;
            float mx = fm_max(row, i + 1);
            double tilt = 0.0; // Σ e_j (z_j − max), for the entropy
            if (stats) {       // the raw logits' maximum |s| and maximum s, before any capping
                float mn = fm_min(row, i + 1);
                max_abs = fmax(max_abs, fmax(fabs((double)mx), fabs((double)mn)));
                max_signed = mx > max_signed || mx != mx ? mx : max_signed; // NaN stays
            }
            if (softcap > 0.0f) {
                cap_row(row, capt + (size_t)bh * T * T + (size_t)i * T, i + 1, softcap);
                mx = fm_max(row, i + 1);
            }
            if (stats) {
                // tilt in eight double lanes (vectorisable), as lanes_sum
                double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
                int j = 0;
                for (; j + 8 <= i + 1; j += 8)
                    for (int l = 0; l < 8; l++) {
                        float t = row[j + l] - mx;
                        row[j + l] = fm_expf(t);
                        lane[l] += (double)row[j + l] * (double)t;
                    }
                for (; j <= i; j++) {
                    float t = row[j] - mx;
                    row[j] = fm_expf(t);
                    lane[0] += (double)row[j] * (double)t;
                }
                tilt = lanes8_total(lane);
            } else {
                for (int j = 0; j <= i; j++)
                    row[j] = fm_expf(row[j] - mx);
            }
            double sum = lanes_sum(row, i + 1);
            float inv = (float)(1.0 / sum);
            for (int j = 0; j <= i; j++)
                row[j] *= inv;
            for (int j = i + 1; j < T; j++)
                row[j] = 0.0f;
            if (stats) // H = −Σ p log p = log Σe − Σ p (z − max)
                entropy += log(sum) - tilt / sum;
        }
        if (stats) {
            // fmax, fm_max and fm_min may skip a NaN score, but the NaN reaches the row's exp
            // sum and so the entropy: a diverged head reads NaN here too, not a quiet maximum
            stats[ATTN_STATS * bh] = entropy == entropy ? (float)max_abs : NAN;
            stats[ATTN_STATS * bh + 1] = (float)entropy;
            stats[ATTN_STATS * bh + 2] = entropy == entropy ? (float)max_signed : NAN;
        }
        const float *pv = pp; // the probabilities the output is made of
        if (pr) {
            float *prr = pr + (size_t)bh * T * T;
            for (int i = 0; i < T; i++) { // the causal part; above the diagonal stays 0
                const float *row = pp + (size_t)i * T;
                float *rrow = prr + (size_t)i * T;
                for (int j = 0; j <= i; j++)
                    rrow[j] = bf16_round(row[j]);
                for (int j = i + 1; j < T; j++)
                    rrow[j] = 0.0f;
            }
            pv = prr;
        }
        if (direct)
            direct_rows_times(out + voff, pv, v + voff, T, dv);
        else
            blocked_rows_times(out + voff, pv, v + voff, T, dv);
    }
}

void attention_backward(float *dq, float *dk, float *dv, float *dp, const float *dout,
                        const float *p, const float *q, const float *k, const float *v, int B,
                        int H, int T, int dqk, int dvd, float scale, float softcap,
                        const float *capt, const float *pr)
{
    int direct = attention_direct(T, dqk, dvd);
#pragma omp parallel for schedule(static)
    for (int bh = 0; bh < B * H; bh++) {
        size_t off = (size_t)bh * T * dqk, voff = (size_t)bh * T * dvd;
        const float *pp = p + (size_t)bh * T * T;
        const float *pv = pr ? pr + (size_t)bh * T * T : pp; // as the forward's output used
        float *dpp = dp + (size_t)bh * T * T;
        // dv = pᵀ dout;  dp = dout vᵀ (causal part; the rest is zeroed below)
        if (direct) {
            direct_cols_times(dv + voff, pv, dout + voff, T, dvd);
            direct_scores(dpp, dout + voff, v + voff, T, dvd, 1.0f);
        } else {
            blocked_cols_times(dv + voff, pv, dout + voff, T, dvd);
            blocked_scores(dpp, dout + voff, v + voff, T, dvd, 1.0f);
        }
        // softmax backward: ds_ij = p_ij (dp_ij − Σ_j p_ij dp_ij), times the score scale.
        for (int i = 0; i < T; i++) {
            const float *prow = pp + (size_t)i * T;
            float *drow = dpp + (size_t)i * T;
            float fdot = (float)lanes_dot(prow, drow, i + 1);
            for (int j = 0; j <= i; j++)
                drow[j] = prow[j] * (drow[j] - fdot) * scale;
            if (softcap > 0.0f) { // d(c·tanh(s/c))/ds = 1 − tanh²
                const float *trow = capt + (size_t)bh * T * T + (size_t)i * T;
                for (int j = 0; j <= i; j++)
                    drow[j] *= 1.0f - trow[j] * trow[j];
            }
            for (int j = i + 1; j < T; j++)
                drow[j] = 0.0f;
            if (pr) // bf16: ds is an operand of the two products below
                for (int j = 0; j <= i; j++)
                    drow[j] = bf16_round(drow[j]);
        }
        // dq = ds k;  dk = dsᵀ q
        if (direct) {
            direct_rows_times(dq + off, dpp, k + off, T, dqk);
            direct_cols_times(dk + off, dpp, q + off, T, dqk);
        } else {
            blocked_rows_times(dq + off, dpp, k + off, T, dqk);
            blocked_cols_times(dk + off, dpp, q + off, T, dqk);
        }
    }
}

void attention_split_heads(float *heads, const float *x, int ld, int col0, int B, int H, int T,
                           int hd)
{
#pragma omp parallel for schedule(static)
    for (int bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H;
        for (int t = 0; t < T; t++) {
            const float *src = x + ((size_t)b * T + t) * ld + col0 + (size_t)h * hd;
            float *dst = heads + ((size_t)bh * T + t) * hd;
            for (int i = 0; i < hd; i++)
                dst[i] = src[i];
        }
    }
}

void attention_merge_heads(float *x, const float *heads, int ld, int col0, int B, int H, int T,
                           int hd)
{
#pragma omp parallel for schedule(static)
    for (int bh = 0; bh < B * H; bh++) {
        int b = bh / H, h = bh % H;
        for (int t = 0; t < T; t++) {
            const float *src = heads + ((size_t)bh * T + t) * hd;
            float *dst = x + ((size_t)b * T + t) * ld + col0 + (size_t)h * hd;
            for (int i = 0; i < hd; i++)
                dst[i] = src[i];
        }
    }
}
