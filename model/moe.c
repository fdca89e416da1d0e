// MoE routing: softmax, top-k, capacity, gather/combine, auxiliary losses. Per-token work runs in
// parallel; the capacity assignment and the statistics run in token order, so the result does
// not depend on the thread count.
#include "model/moe.h"

#include <math.h>
#include <string.h>

#include "util/error.h"

int moe_capacity(int N, int E, int k, double capacity_factor)
{
    double c = ceil(capacity_factor * (double)k * (double)N / (double)E);
    return c < 1.0 ? 1 : c > (double)N ? N : (int)c;
}

// The k largest of r[E] into sel[k], descending; ties go to the lower index. k ≤ E is small:
// a selection pass per choice.
static void top_k(int *sel, const float *r, int E, int k)
{
    for (int j = 0; j < k; j++) {
        int best = -1;
        for (int e = 0; e < E; e++) {
            int taken = 0;
            for (int i = 0; i < j; i++)
                taken |= sel[i] == e;
            if (!taken && (best < 0 || r[e] > r[best]))
                best = e;
        }
        sel[j] = best;
    }
}

struct moe_stats moe_route_forward(float *probs, float *lse, int *sel, float *gates, int *slot,
                                   int *slot_tok, int *off, double *counts, double *mean_p,
                                   double *group_counts, int N, int E, int k, int renorm, int group,
                                   int capacity)
{
    struct moe_stats st = {0.0, 0.0, 0.0, 0.0};
    ASSERT(k >= 1 && k <= E);
#pragma omp parallel for schedule(static)
    for (int t = 0; t < N; t++) {
        float *p = probs + (size_t)t * E;
        int *s = sel + (size_t)t * k;
        top_k(s, p, E, k); // on the logits: the same order as the probabilities, without rounding
        float mx = p[0];
        for (int e = 1; e < E; e++)
            mx = fmaxf(mx, p[e]);
        double sum = 0.0;
        for (int e = 0; e < E; e++)
            sum += exp((double)p[e] - mx);
        lse[t] = (float)(mx + log(sum));
        for (int e = 0; e < E; e++)
            p[e] = (float)(exp((double)p[e] - mx) / sum);
        double chosen = 0.0;
        for (int j = 0; j < k; j++)
            chosen += p[s[j]];
        for (int j = 0; j < k; j++)
            gates[(size_t)t * k + j] = renorm ? (float)(p[s[j]] / chosen) : p[s[j]];
    }
    // Capacity per routing group of `group` tokens: within a group, choice rank first, then
    // token order (GShard's priority for first choices); groups one after the other. A token's
    // routing thus depends only on its own group, whatever the micro-batch or rank count.
    ASSERT(group >= 1 && N % group == 0);
    int groups = N / group;
    memset(counts, 0, 2 * (size_t)E * sizeof(double));
    memset(group_counts, 0, (size_t)groups * E * sizeof(double));
    for (int t = 0; t < N; t++)
        for (int j = 0; j < k; j++) {
            counts[sel[(size_t)t * k + j]] += 1.0;
            group_counts[(size_t)(t / group) * E + sel[(size_t)t * k + j]] += 1.0;
        }
    double *fill = counts + E; // kept pairs per expert over all groups, in priority order
    int kept_total = 0;
    for (int g = 0; g < groups; g++) {
        int *gfill = off; // off[] is free until the offsets below: the group's kept per expert
        for (int e = 0; e < E; e++)
            gfill[e] = 0;
        for (int j = 0; j < k; j++)
            for (int t = g * group; t < (g + 1) * group; t++) {
                int e = sel[(size_t)t * k + j];
                int keep = gfill[e] < capacity;
                slot[(size_t)t * k + j] = keep ? (int)fill[e] : -1; // rank within the expert
                gfill[e] += keep;
                fill[e] += keep;
                kept_total += keep;
            }
    }
    off[0] = 0;
    for (int e = 0; e < E; e++)
        off[e + 1] = off[e] + (int)fill[e];
    ASSERT(off[E] == kept_total);
    for (int t = 0; t < N; t++)
        for (int j = 0; j < k; j++) {
            int *sl = &slot[(size_t)t * k + j];
            if (*sl >= 0) {
                *sl += off[sel[(size_t)t * k + j]];
                slot_tok[*sl] = t;
            }
        }
    // Statistics in token order (deterministic). The balance loss is the mean over the groups
    // of E·Σ_i f_i P_i with each group's own choice fractions f and mean probabilities P.
    for (int e = 0; e < E; e++)
        mean_p[e] = 0.0;
    double zsum = 0.0, hsum = 0.0, bal = 0.0, gp[4096];
    ASSERT(E <= 4096);
    for (int g = 0; g < groups; g++) {
        for (int e = 0; e < E; e++)
            gp[e] = 0.0;
        for (int t = g * group; t < (g + 1) * group; t++) {
            const float *p = probs + (size_t)t * E;
            double h = 0.0;
            for (int e = 0; e < E; e++) {
                gp[e] += p[e];
                if (p[e] > 0.0f)
                    h -= (double)p[e] * log((double)p[e]);
            }
            hsum += h;
            zsum += (double)lse[t] * lse[t];
        }
        double gb = 0.0;
        for (int e = 0; e < E; e++) {
            mean_p[e] += gp[e];
            gb += group_counts[(size_t)g * E + e] / ((double)group * k) * (gp[e] / group);
        }
        bal += gb;
    }
    for (int e = 0; e < E; e++)
        mean_p[e] /= N;
    st.balance = E * bal / groups;
    st.z = zsum / N;
    st.entropy = hsum / N;
    st.dropped = 1.0 - (double)kept_total / ((double)N * k);
    return st;
}

void moe_gather(float *buf, const float *x, const int *slot_tok, int rows, int C)
{
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++)
        memcpy(buf + (size_t)r * C, x + (size_t)slot_tok[r] * C, (size_t)C * sizeof(float));
}

// out[t] += Σ_j gate[t, j] · y[slot[t, j]] over the kept pairs (gate 1 when gates is NULL; 1·y is
// y exactly, so the scatter-add is this with no gates).
static void combine(float *out, const float *y, const float *gates, const int *slot, int N, int k,
                    int C)
{
#pragma omp parallel for schedule(static)
    for (int t = 0; t < N; t++)
        for (int j = 0; j < k; j++) {
            int s = slot[(size_t)t * k + j];
            if (s < 0)
                continue;
            float g = gates ? gates[(size_t)t * k + j] : 1.0f, *o = out + (size_t)t * C;
            const float *ys = y + (size_t)s * C;
            for (int c = 0; c < C; c++)
                o[c] += g * ys[c];
        }
}

void moe_scatter_add(float *dx, const float *dbuf, const int *slot, int N, int k, int C)
{
    combine(dx, dbuf, NULL, slot, N, k, C);
}

void moe_combine_forward(float *out, const float *y, const float *gates, const int *slot, int N,
                         int k, int C)
{
    combine(out, y, gates, slot, N, k, C);
}

void moe_combine_backward(float *dy, float *dgate, const float *dout, const float *y,
                          const float *gates, const int *slot, int N, int k, int C)
{
#pragma omp parallel for schedule(static)
    for (int t = 0; t < N; t++)
        for (int j = 0; j < k; j++) {
            int s = slot[(size_t)t * k + j];
            if (s < 0) {
                dgate[(size_t)t * k + j] = 0.0f;
                continue;
            }
            float g = gates[(size_t)t * k + j], *d = dy + (size_t)s * C;
            const float *o = dout + (size_t)t * C, *ys = y + (size_t)s * C;
            double dot = 0.0;
            for (int c = 0; c < C; c++) {
                d[c] = g * o[c];
                dot += (double)o[c] * ys[c];
            }
            dgate[(size_t)t * k + j] = (float)dot;
        }
}

void moe_route_backward(float *dlogits, const float *dgate, const float *probs, const float *lse,
                        const int *sel, const float *gates, const double *group_counts, int N,
                        int E, int k, int group, int renorm, double balance_coef, double z_coef)
{
    ASSERT(E <= 4096 && group >= 1 && N % group == 0);
#pragma omp parallel for schedule(static)
    for (int t = 0; t < N; t++) {
        const float *p = probs + (size_t)t * E;
        const int *s = sel + (size_t)t * k;
        const float *dg = dgate + (size_t)t * k, *g = gates + (size_t)t * k;
        const double *gc = group_counts + (size_t)(t / group) * E;
        float *dr = dlogits + (size_t)t * E;
        // dL/dp from the balance loss (and the gates without renorm), then through the softmax.
        // balance = (1/groups) Σ_g E Σ_i f_i^g P_i^g, so d/dp_t[i] = α E f_i^g / N for t in g.
        double dp[4096], dot = 0.0;
        for (int e = 0; e < E; e++)
            dp[e] = balance_coef * E * (gc[e] / ((double)group * k)) / N;
        if (!renorm)
            for (int j = 0; j < k; j++)
                dp[s[j]] += dg[j];
        for (int e = 0; e < E; e++)
            dot += p[e] * dp[e];
        double zt = z_coef * 2.0 * lse[t] / N;
        for (int e = 0; e < E; e++)
            dr[e] = (float)(p[e] * (dp[e] - dot) + zt * p[e]);
        if (renorm) { // gates = softmax over the chosen logits
            double gdot = 0.0;
            for (int j = 0; j < k; j++)
                gdot += (double)g[j] * dg[j];
            for (int j = 0; j < k; j++)
                dr[s[j]] += (float)(g[j] * (dg[j] - gdot));
        }
    }
}
