// provides: struct optim_config, gradient norms and clipping, update apply.
//
// The optimizer step is two calls, kept apart so probes can read the update before it lands
// (DESIGN.md §3): *_update_compute writes update[] = the amount to subtract from each parameter,
// then optim_update_apply subtracts it. No MPI here: gradients arrive already averaged.
#ifndef CANARY_OPTIM_OPTIM_H
#define CANARY_OPTIM_OPTIM_H

#include <stddef.h>

#include "model/tensors.h"

enum optim_name { OPTIM_ADAMW = 0, OPTIM_MUON = 1 };
enum muon_scale { MUON_SCALE_SHAPE = 0, MUON_SCALE_RMS_MATCH = 1 };
enum wd_mode { WD_INDEPENDENT = 0, WD_COUPLED = 1 };
enum schedule_kind { SCHEDULE_COSINE = 0, SCHEDULE_LINEAR = 1, SCHEDULE_CONSTANT = 2 };

struct optim_config {
    enum optim_name name;
    double lr;     // peak learning rate η
    double min_lr; // floor of the cosine / linear decay
    double beta1, beta2, eps;
    double weight_decay; // λ
    enum wd_mode wd_mode;
    double clip; // global-norm clip threshold; 0 disables
    enum schedule_kind schedule;
    int warmup_steps;
    double z_loss; // output z-loss coefficient
    // MoE auxiliary losses (model.experts > 0), each a mean over the MoE layers
    double balance_loss;  // α of the Switch load-balancing loss
    double router_z_loss; // coefficient of the ST-MoE router z-loss
    // Muon (optim.name = muon): hidden matrices; AdamW keeps the other tensors
    double momentum; // β of the momentum buffer (Nesterov)
    int ns_steps;    // Newton–Schulz iterations
    enum muon_scale muon_scale;
    double muon_lr_scale;     // the Muon group's lr = schedule lr × this
    double muon_weight_decay; // λ of the Muon group (wd_mode as for AdamW)
    // QK-clip (MuonClip, Kimi K2): after each update, heads whose max logit S exceeds qk_clip
    // get their query and key projections scaled so that S becomes qk_clip
    double qk_clip;       // τ; 0 = off
    double qk_clip_alpha; // the query's share of the scaling, η^α on W_q, η^(1−α) on W_k
    int qk_clip_log_only; // 1: record η, leave the weights
    // StableAdamW (Wortsman et al. 2023b): AdamW's lr per tensor / max(1, RMS(g²/v̂))
    int stable_adamw;
    // Update guards (optim/guard.h), over the previous guard_window steps once guard_min values
    // are there: skip-step (OLMo-core) skips the update, optimizer state untouched, when the
    // loss or the gradient norm exceeds mean + skip_sigma·σ; update-norm clipping (Levanter)
    // scales the update down to mean + update_clip_sigma·σ of the previous unclipped norms
    double skip_sigma;        // 0 = off
    double update_clip_sigma; // 0 = off
    int guard_window, guard_min;
};

// The optimizer group of a tensor: 1 when Muon updates it (optim.name = muon and a hidden 2-D
// matrix: attention, MLP, expert or router), 0 for AdamW.
int optim_uses_muon(const struct optim_config *oc, enum tensor_kind kind);

// The coefficient c of the weight-decay term c·θ in a tensor's update (AdamW's or Muon's) that
// does not scale with the learning rate: with wd_mode = independent, (lr_t / lr)·λ of the
// tensor's group; 0 with wd_mode = coupled (the term lr_t·λ·θ scales with the learning rate, as
// the rest of the update) and for tensors without decay. The LR probe scales only the rest.
double optim_independent_wd(const struct optim_config *oc, enum tensor_kind kind, double lr_t);

// Per-tensor Σ g² into sumsq[table.n] (double), each tensor summed in a fixed order; returns the
// global L2 norm. Thread-count independent.
double optim_grad_norm(double *sumsq, const float *grads, const struct tensor_table *tt);

// Scales grads so that their global norm is at most clip (no-op when clip ≤ 0 or norm ≤ clip).
// Returns the factor applied (1 when not clipped).
double optim_clip(float *grads, size_t n, double norm, double clip);

// params[i] −= update[i].
void optim_update_apply(float *params, const float *update, size_t n);

// Learning rate at step (0-based) of total_steps: linear warmup to η over warmup_steps
// (lr·(step+1)/warmup), then cosine or linear decay to min_lr, or constant.
double schedule_lr(const struct optim_config *oc, long step, long total_steps);

#endif
