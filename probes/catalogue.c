// The probe catalogue (see catalogue.h). Descriptions say exactly what each row is computed
// over: "global batch" means every micro-batch of every rank of the step.
#include "probes/catalogue.h"

const struct probe_entry probe_catalogue[PROBE_IDS] = {
    {PROBE_LOSS_TOTAL, "loss/total", PROBE_SCALAR, 1, PROBE_NEEDS_NOTHING,
     "training loss of the step: ce + z (+ aux), mean over the global batch"},
    {PROBE_LOSS_CE, "loss/ce", PROBE_SCALAR, 1, PROBE_NEEDS_NOTHING,
     "cross-entropy part of the loss"},
    {PROBE_LOSS_Z, "loss/z", PROBE_SCALAR, 1, PROBE_NEEDS_NOTHING,
     "output z-loss part: optim.z_loss * mean(log^2 Z)"},
    {PROBE_LOSS_AUX, "loss/aux", PROBE_SCALAR, 1, PROBE_NEEDS_NOTHING,
     "auxiliary (MoE) losses; 0 for dense models"},
    {PROBE_LR, "lr", PROBE_SCALAR, 1, PROBE_NEEDS_NOTHING, "learning rate used by the step"},
    {PROBE_GRAD_NORM, "grad/global_norm", PROBE_SCALAR, 1, PROBE_NEEDS_NOTHING,
     "L2 norm of the whole gradient before clipping"},
    {PROBE_CLIP, "grad/clip_factor", PROBE_SCALAR, 1, PROBE_NEEDS_NOTHING,
     "factor applied by global-norm clipping (1 = not clipped)"},
    {PROBE_TOKENS_PER_S, "tokens_per_s", PROBE_SCALAR, 1, PROBE_NEEDS_NOTHING,
     "training throughput of the step, all ranks"},
    {PROBE_SKIPPED, "update/skipped", PROBE_SCALAR, 1, PROBE_NEEDS_NOTHING,
     "1 when the step applied no update: its loss or gradient was not finite and "
     "train.on_nonfinite = skip, or the skip-step guard skipped it (optim/guard_skipped); its "
     "update/rms and muon/ortho_err are NaN and it has no /lr_probe row (grad/clip_factor is "
     "NaN for a non-finite step only)"},
    {PROBE_ATTN_MAX_LOGIT, "attn/max_logit", PROBE_LAYER_HEADS, 0, PROBE_NEEDS_NOTHING,
     "[layer, head] max |q.k| * scale over the causal pairs of every sequence of "
     "the global batch (Wortsman's attention-logit growth; scale = 1/sqrt(d_qk), or 1/d_qk "
     "with model.mup = full; d_qk = d_h, or d_h + rope_dim with MLA)"},
    {PROBE_ATTN_ENTROPY, "attn/entropy", PROBE_LAYER_HEADS, 0, PROBE_NEEDS_NOTHING,
     "[layer, head] attention entropy -sum p log p (nats), mean over every query "
     "position of the global batch (entropy collapse precedes instability)"},
    {PROBE_ATTN_Q_RMS, "attn/q_rms", PROBE_LAYER_HEADS, 0, PROBE_NEEDS_NOTHING,
     "[layer, head] RMS of q as attended (after qk-norm and RoPE; rounded to bf16 with "
     "train.bf16_attention), global batch"},
    {PROBE_ATTN_K_RMS, "attn/k_rms", PROBE_LAYER_HEADS, 0, PROBE_NEEDS_NOTHING,
     "[layer, head] RMS of k as attended (after qk-norm and RoPE; rounded to bf16 with "
     "train.bf16_attention), global batch"},
    {PROBE_LOGZ_MEAN, "output/logz_mean", PROBE_SCALAR, 1, PROBE_NEEDS_NOTHING,
     "mean over the tokens of the global batch of log Z of the output softmax "
     "(drifts negative before output-logit divergence)"},
    {PROBE_LOGZ_STD, "output/logz_std", PROBE_SCALAR, 1, PROBE_NEEDS_NOTHING,
     "standard deviation (population) of log Z over the tokens of the global batch"},
    {PROBE_LOGZ_MAX, "output/logz_max", PROBE_SCALAR, 1, PROBE_NEEDS_NOTHING,
     "max of log Z over the tokens of the global batch"},
    {PROBE_LOGIT_RMS, "output/logit_rms", PROBE_SCALAR, 1, PROBE_NEEDS_NOTHING,
     "RMS of the output logits of the global batch, before any soft-capping (the log Z "
     "series read the capped logits the loss sees)"},
    {PROBE_RESID_RMS, "resid/rms", PROBE_LAYERS, 0, PROBE_NEEDS_NOTHING,
     "[layer] RMS of the residual stream after each block, global batch"},
    {PROBE_GRAD_RMS, "grad/rms", PROBE_TENSORS, 0, PROBE_NEEDS_NOTHING,
     "[tensor] gradient RMS of the global batch before clipping: the optimizer sees "
     "it times grad/clip_factor (names: /tensors/names; compare with AdamW eps)"},
    {PROBE_PARAM_RMS, "param/rms", PROBE_TENSORS, 0, PROBE_NEEDS_NOTHING,
     "[tensor] parameter RMS after the update"},
    {PROBE_UPDATE_RMS, "update/rms", PROBE_TENSORS, 0, PROBE_NEEDS_NOTHING,
     "[tensor] RMS of the optimizer's update applied at this step (QK-clip's rescaling of "
     "W_q and W_k after it is not in it)"},
    {PROBE_ADAM_SQRT_V_RMS, "adam/sqrt_v_rms", PROBE_TENSORS, 0, PROBE_NEEDS_NOTHING,
     "[tensor] RMS of sqrt(v_hat), AdamW's bias-corrected second moment (0 for "
     "Muon's matrices)"},
    {PROBE_ADAM_EPS_FRAC, "adam/eps_frac", PROBE_TENSORS, 0, PROBE_NEEDS_NOTHING,
     "[tensor] fraction of the tensor's entries with sqrt(v_hat) < eps: where eps, not "
     "the gradient, sets the update size; entries with v = 0 count (see "
     "adam/v_zero_frac; 0 for Muon's matrices)"},
    {PROBE_ADAM_V_ZERO_FRAC, "adam/v_zero_frac", PROBE_TENSORS, 0, PROBE_NEEDS_NOTHING,
     "[tensor] fraction of entries whose second moment v is exactly 0: never updated "
     "(embedding rows of tokens never seen) or decayed to 0 after their gradient stayed 0 "
     "(0 for Muon's matrices)"},
    {PROBE_KV_LATENT_RMS, "attn/kv_latent_rms", PROBE_LAYERS, 0, PROBE_NEEDS_MLA,
     "[layer] MLA: RMS of the KV latent c_kv before its RMSNorm"},
    {PROBE_Q_LATENT_RMS, "attn/q_latent_rms", PROBE_LAYERS, 0, PROBE_NEEDS_Q_LATENT,
     "[layer] MLA: RMS of the query latent c_q before its RMSNorm"},
    {PROBE_LOSS_BALANCE, "loss/balance", PROBE_SCALAR, 1, PROBE_NEEDS_MOE,
     "MoE load-balancing loss, scaled: optim.balance_loss * experts * sum_i f_i P_i of "
     "each routing group (model.moe_group tokens), mean over the groups of the global "
     "batch and over the MoE blocks"},
    {PROBE_LOSS_ROUTER_Z, "loss/router_z", PROBE_SCALAR, 1, PROBE_NEEDS_MOE,
     "MoE router z-loss, scaled: optim.router_z_loss * mean(logsumexp(router "
     "logits)^2), mean over MoE blocks"},
    {PROBE_MOE_LOAD, "moe/load", PROBE_MOE_EXPERTS, 0, PROBE_NEEDS_MOE,
     "[MoE block, expert] fraction of the global batch's token-expert choices that "
     "went to the expert, before capacity (1/experts = even)"},
    {PROBE_MOE_DROPPED, "moe/dropped", PROBE_MOE_EXPERTS, 0, PROBE_NEEDS_MOE,
     "[MoE block, expert] fraction of the expert's choices in the global batch "
     "dropped by the capacity"},
    {PROBE_MOE_ROUTER_Z, "moe/router_z", PROBE_MOE_LAYERS, 0, PROBE_NEEDS_MOE,
     "[MoE block] mean over the tokens of the global batch of logsumexp(router "
     "logits)^2 (unscaled)"},
    {PROBE_MOE_ENTROPY, "moe/router_entropy", PROBE_MOE_LAYERS, 0, PROBE_NEEDS_MOE,
     "[MoE block] mean over the tokens of the global batch of the router softmax "
     "entropy (nats; log(experts) = uniform)"},
    {PROBE_MOE_DEAD, "moe/dead_experts", PROBE_MOE_LAYERS, 0, PROBE_NEEDS_MOE,
     "[MoE block] experts that no token of any global batch chose in the last "
     "probes.dead_window steps"},
    {PROBE_MUON_ORTHO, "muon/ortho_err", PROBE_TENSORS, 0, PROBE_NEEDS_MUON,
     "[tensor] Muon: |O O^T - I|_F / sqrt(min(rows, cols)) of the Newton-Schulz "
     "output (0 for AdamW's tensors)"},
    {PROBE_MUON_MOMENTUM_RMS, "muon/momentum_rms", PROBE_TENSORS, 0, PROBE_NEEDS_MUON,
     "[tensor] Muon: RMS of the momentum buffer (0 for AdamW's tensors)"},
    {PROBE_LOGIT_MAX, "output/logit_max", PROBE_SCALAR, 1, PROBE_NEEDS_NOTHING,
     "max |logit| of the output logits of the global batch, before any soft-capping"},
    {PROBE_LOGIT_MAX_CAPPED, "output/logit_max_capped", PROBE_SCALAR, 1, PROBE_NEEDS_FINAL_CAP,
     "the same maximum as the loss sees it: c * tanh(output/logit_max / c), c = "
     "model.final_softcap (capping is monotone)"},
    {PROBE_ATTN_MAX_LOGIT_CAPPED, "attn/max_logit_capped", PROBE_LAYER_HEADS, 0,
     PROBE_NEEDS_ATTN_CAP,
     "[layer, head] attn/max_logit as the softmax sees it: c * tanh(attn/max_logit / c), c = "
     "model.attn_softcap (capping is monotone); attn/max_logit stays the raw maximum"},
    {PROBE_QK_CLIP_COUNT, "optim/qk_clip_count", PROBE_SCALAR, 1, PROBE_NEEDS_QK_CLIP,
     "QK-clip: heads (of all layers) whose max signed logit S = max q.k * scale over the "
     "global batch (not attn/max_logit, which is the max of |q.k| * scale) exceeded "
     "optim.qk_clip at this step, so eta < 1 (NaN for a skipped step)"},
    {PROBE_QK_CLIP_ETA, "optim/qk_clip_eta", PROBE_LAYER_HEADS, 0, PROBE_NEEDS_QK_CLIP,
     "[layer, head] QK-clip factor eta = min(1, qk_clip / S) of this step, S the head's max "
     "signed logit over the global batch; applied to W_q, W_k after the update unless "
     "optim.qk_clip_log_only (NaN for a skipped step)"},
    {PROBE_STABLE_SCALED, "optim/stable_scaled", PROBE_SCALAR, 1, PROBE_NEEDS_STABLE,
     "StableAdamW: tensors of AdamW's group whose lr this step was divided by their "
     "sqrt(mean(g^2 / max(v_hat, eps^2))) > 1, as adam/stable_factor (NaN for a skipped "
     "step)"},
    {PROBE_STABLE_FACTOR, "adam/stable_factor", PROBE_TENSORS, 0, PROBE_NEEDS_STABLE,
     "[tensor] StableAdamW: the step's lr factor 1 / max(1, sqrt(mean(g^2 / max(v_hat, "
     "eps^2)))) (1 for Muon's tensors; NaN for a skipped step)"},
    {PROBE_GUARD_SKIP, "optim/guard_skipped", PROBE_SCALAR, 1, PROBE_NEEDS_SKIP,
     "skip-step guard: 1 when this step's update was skipped (optimizer state untouched) because "
     "its loss (global-batch mean) or gradient norm exceeded the threshold below"},
    {PROBE_GUARD_LOSS_THR, "optim/skip_loss_threshold", PROBE_SCALAR, 1, PROBE_NEEDS_SKIP,
     "skip-step guard: mean + optim.skip_sigma * sigma (sample std) of the global-batch training "
     "loss over the previous optim.guard_window steps; NaN until optim.guard_min values exist"},
    {PROBE_GUARD_GNORM_THR, "optim/skip_grad_norm_threshold", PROBE_SCALAR, 1, PROBE_NEEDS_SKIP,
     "skip-step guard: the same threshold on the global gradient norm (before clipping)"},
    {PROBE_UPDATE_NORM, "update/global_norm", PROBE_SCALAR, 1, PROBE_NEEDS_UPDATE_CLIP,
     "L2 norm of the whole update (every tensor, decay included) before update-norm clipping; NaN "
     "for a skipped step"},
    {PROBE_UPDATE_THR, "optim/update_clip_threshold", PROBE_SCALAR, 1, PROBE_NEEDS_UPDATE_CLIP,
     "update-norm clipping: mean + optim.update_clip_sigma * sigma (sample std) of the previous "
     "optim.guard_window unclipped update norms; NaN until optim.guard_min values exist"},
    {PROBE_UPDATE_CLIP, "optim/update_clip_factor", PROBE_SCALAR, 1, PROBE_NEEDS_UPDATE_CLIP,
     "update-norm clipping: the factor the update was scaled by, min(1, threshold / norm) (NaN "
     "for a skipped step)"},
};
