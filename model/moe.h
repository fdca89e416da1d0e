// provides: the routing half of a mixture-of-experts feed-forward (reference/papers.md §4) —
//           router softmax, top-k choice, capacity and token dropping, the gather / combine
//           between tokens and expert buffers, and the auxiliary losses with their gradients.
//           The experts' matmuls are composed in model_moe.c.
//
// For N tokens, E experts, k choices per token:
//   p_t = softmax(r_t) over the router logits r_t = W_r x_t;  lse_t = logsumexp(r_t)
//   chosen: the k largest logits (ties: the lower expert index), in descending order;
//   gate g_tj = p_t[e_tj], or p_t[e_tj] / Σ_j p_t[e_tj] with renorm (Mixtral);
//   tokens are routed in groups of G consecutive tokens (model.moe_group, one sequence by
//   default); per group, capacity c = ceil(capacity_factor · k · G / E), at most G: the pairs
//   (t, j) are served first by choice rank j, then in token order; a pair beyond its expert's
//   capacity in its group is dropped and adds nothing (the token keeps its residual);
//   y_t = Σ_{kept j} g_tj · expert_{e_tj}(x_t).
// Auxiliary losses of one layer (their means over the MoE layers are added to the loss):
//   balance = α · E · mean over groups of Σ_i f_i P_i,  f_i = (chosen pairs of expert i in the
//   group) / (G k),  P_i = mean over the group's tokens of p_t[i]
//   (f counts choices before dropping; it is not differentiated, as in Switch);
//   router_z = c_z · mean_t lse_t²  (ST-MoE).
#ifndef CANARY_MODEL_MOE_H
#define CANARY_MODEL_MOE_H

#include <stddef.h>

// Statistics of one routing, for the aux losses, their gradients and the probes.
struct moe_stats {
    double balance; // E · Σ f_i P_i (1 at uniform routing), before α
    double z;       // mean lse², before c_z
    double entropy; // mean over tokens of −Σ p log p (nats)
    double dropped; // fraction of chosen pairs dropped by the capacity
};

// The expert capacity of a routing group of N tokens.
int moe_capacity(int N, int E, int k, double capacity_factor);

// Routing of N tokens in groups of `group` consecutive tokens (N a multiple of it; a group is
// model.moe_group tokens, one sequence by default), so that how a token is routed depends on
// its group only, not on the micro-batch or rank count. probs[N, E] holds the router logits on
// entry and the softmax on return; lse[N] gets logsumexp. sel[N, k] the chosen experts,
// gates[N, k] their gates, slot[N, k] the row of the pair in the packed expert buffer (−1 when
// dropped: the expert already kept `capacity` pairs of the group), slot_tok[rows] the token of
// each buffer row, off[E + 1] where each expert's rows start (rows = off[E] ≤ N k).
// counts[2E]: chosen pairs, then kept pairs, per expert over all groups; mean_p[E] = P_i over
// all tokens; group_counts[N / group, E] the chosen pairs per group and expert (the balance
// loss's f, for the backward). The balance statistic is the mean over the groups of
// E Σ_i f_i P_i. Returns the statistics.
struct moe_stats moe_route_forward(float *probs, float *lse, int *sel, float *gates, int *slot,
                                   int *slot_tok, int *off, double *counts, double *mean_p,
                                   double *group_counts, int N, int E, int k, int renorm, int group,
                                   int capacity);

// buf[rows, C] = x[slot_tok[r], :] (the experts' inputs, expert after expert).
void moe_gather(float *buf, const float *x, const int *slot_tok, int rows, int C);
// dx[t, :] += dbuf[slot[t, j], :] for the kept pairs of each token, in choice order.
void moe_scatter_add(float *dx, const float *dbuf, const int *slot, int N, int k, int C);

// out[t] += Σ_{kept j} gates[t, j] · y[slot[t, j]]   (y[rows, C]: the experts' outputs).
void moe_combine_forward(float *out, const float *y, const float *gates, const int *slot, int N,
                         int k, int C);
// dy[slot[t, j]] = gates[t, j] · dout[t] (OVERWRITES the kept rows) and
// dgate[t, j] = dout[t] · y[slot[t, j]] (0 when dropped).
void moe_combine_backward(float *dy, float *dgate, const float *dout, const float *y,
                          const float *gates, const int *slot, int N, int k, int C);

// dlogits[N, E] (OVERWRITTEN) = the gradient of the router logits from the gates' gradient
// dgate[N, k], plus balance_coef · d(balance)/dr and z_coef · d(z)/dr, where the coefficients
// already include the loss scale and the 1 / (MoE layers) of the mean. group_counts and group as
// given to moe_route_forward.
void moe_route_backward(float *dlogits, const float *dgate, const float *probs, const float *lse,
                        const int *sel, const float *gates, const double *group_counts, int N,
                        int E, int k, int group, int renorm, double balance_coef, double z_coef);

#endif
