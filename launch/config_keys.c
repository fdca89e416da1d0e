// The config key table. Adding a key: one line here (and the field it fills); the parser, the
// range check, `canary config`, the resolved config.ini and docs/config.md follow from it.
#include "launch/config_keys.h"

#include <stddef.h>

#include "launch/config.h"

#define OFF(field) offsetof(struct config, field)
#define BIG        1e9

const struct config_key config_keys[] = {
    // [model]
    {"model", "dim", CT_INT, OFF(model.dim), "64", 1, 65536, 0, NULL, "residual width d"},
    {"model", "layers", CT_INT, OFF(model.layers), "2", 1, 1024, 0, NULL, "transformer blocks"},
    {"model", "heads", CT_INT, OFF(model.heads), "4", 1, 1024, 0, NULL, "attention heads"},
    {"model", "head_dim", CT_INT, OFF(model.head_dim), "0", 0, 4096, 0, NULL,
     "per-head dimension d_h; 0 = dim / heads (dim must then divide by heads)"},
    {"model", "seq_len", CT_INT, OFF(model.seq_len), "64", 1, 1048576, 0, NULL,
     "context length T (tokens per sequence)"},
    {"model", "vocab", CT_INT, OFF(model.vocab), "256", 2, 65536, 0, NULL,
     "vocabulary size; token files store uint16, so at most 65536"},
    {"model", "norm", CT_ENUM, OFF(model.norm), "layernorm", 0, 0, 0, "layernorm|rmsnorm",
     "block, final and qk norm: LayerNorm without bias, or RMSNorm (eps 1e-6)"},
    {"model", "qk_norm", CT_BOOL, OFF(model.qk_norm), "false", 0, 1, 0, NULL,
     "per-head norm of q and k with one d_h gain shared by the heads (Wortsman's qk-layernorm)"},
    {"model", "attn_softcap", CT_DOUBLE, OFF(model.attn_softcap), "0", 0, 1e6, 0, NULL,
     "attention-logit soft-capping (Gemma 2): each logit s = q.k * scale (1/sqrt(d_qk); 1/d_qk "
     "with model.mup = full) becomes "
     "c * tanh(s / c) before the causal softmax; 0 = off"},
    {"model", "final_softcap", CT_DOUBLE, OFF(model.final_softcap), "0", 0, 1e6, 0, NULL,
     "output-logit soft-capping (Gemma 2): each logit z becomes c * tanh(z / c) before the "
     "cross-entropy and the z-loss (log Z is of the capped logits); 0 = off"},
    {"model", "mup", CT_ENUM, OFF(model.mup), "off", 0, 0, 0, "off|simple|intermediate|full",
     "muParam (Wortsman et al. 3.2.4) against a model of width mup_base_width: simple scales "
     "each hidden matrix's AdamW LR by base/dim; intermediate also inits the head with std "
     "sqrt(base)/dim; full also uses the attention scale 1/d_qk (d_h, MLA d_h + rope_dim) and "
     "zero-inits W_q (Muon's "
     "matrices keep Muon's own shape scaling: docs/mitigations.md)"},
    {"model", "mup_base_width", CT_INT, OFF(model.mup_base_width), "256", 1, 65536, 0, NULL,
     "the base model's dim for model.mup (the paper: 256)"},
    {"model", "pos", CT_ENUM, OFF(model.pos), "rope", 0, 0, 0, "rope|learned",
     "positions: RoPE (theta 1e4, on q and k after qk-norm) or a learned [seq_len, dim] table"},
    {"model", "mlp", CT_ENUM, OFF(model.mlp), "gelu", 0, 0, 0, "gelu|swiglu",
     "MLP: w2(gelu_tanh(w1 x)) or w2(silu(w1 x) * w3 x)"},
    {"model", "mlp_ratio", CT_INT, OFF(model.mlp_ratio), "4", 1, 64, 0, NULL,
     "MLP hidden width as a multiple of dim (for SwiGLU too, and for each expert)"},
    {"model", "attention", CT_ENUM, OFF(model.attention), "mha", 0, 0, 0, "mha|mla",
     "attention: standard multi-head, or multi-head latent attention (DeepSeek-V2)"},
    {"model", "kv_rank", CT_INT, OFF(model.kv_rank), "0", 0, 65536, 0, NULL,
     "MLA: rank of the KV latent (RMS-normed); 0 = dim / 2"},
    {"model", "q_rank", CT_INT, OFF(model.q_rank), "0", 0, 65536, 0, NULL,
     "MLA: rank of the query latent (RMS-normed); 0 = no query compression"},
    {"model", "rope_dim", CT_INT, OFF(model.rope_dim), "0", 0, 4096, 0, NULL,
     "MLA: width of the decoupled RoPE part of q and k (one rope key shared by the heads), "
     "even; 0 = head_dim / 2 with model.pos = rope (must stay 0 with learned positions)"},
    {"model", "experts", CT_INT, OFF(model.experts), "0", 0, 4096, 0, NULL,
     "routed experts per MoE layer (each an MLP of model.mlp); 0 = dense model"},
    {"model", "top_k", CT_INT, OFF(model.top_k), "2", 1, 64, 0, NULL,
     "MoE: experts per token, chosen by router softmax probability (ties: lower index)"},
    {"model", "gate_renorm", CT_BOOL, OFF(model.gate_renorm), "false", 0, 1, 0, NULL,
     "MoE: gates renormalised over the chosen top_k (Mixtral); false: the softmax probabilities "
     "(Switch, DeepSeek)"},
    {"model", "shared_experts", CT_INT, OFF(model.shared_experts), "0", 0, 64, 0, NULL,
     "MoE: always-on experts added to the routed ones (DeepSeekMoE)"},
    {"model", "capacity_factor", CT_DOUBLE, OFF(model.capacity_factor), "1.25", 0, 1e6, 1, NULL,
     "MoE: tokens an expert takes per routing group (model.moe_group) = ceil(factor * top_k * "
     "group tokens / experts); first choices are served first, in token order; a dropped "
     "token-expert pair adds nothing (the token keeps its residual)"},
    {"model", "moe_every", CT_INT, OFF(model.moe_every), "1", 1, 1024, 0, NULL,
     "MoE: every n-th block has the MoE feed-forward (blocks n-1, 2n-1, ...), the others dense"},
    {"model", "moe_group", CT_INT, OFF(model.moe_group), "0", 0, 1 << 30, 0, NULL,
     "MoE: tokens per routing group, over which capacity, token dropping and the balance loss's "
     "statistics are computed (0: one sequence, seq_len); a divisor of seq_len or a multiple of "
     "it that divides each micro-batch, so routing does not depend on the rank count"},
    // [optim]
    {"optim", "name", CT_ENUM, OFF(optim.name), "adamw", 0, 0, 0, "adamw|muon",
     "optimizer: AdamW for every tensor, or Muon for the hidden 2-D matrices (attention and MLP) "
     "with AdamW for embeddings, head and gains"},
    {"optim", "lr", CT_DOUBLE, OFF(optim.lr), "1e-3", 0, 100, 1, NULL,
     "peak learning rate (after warmup)"},
    {"optim", "min_lr", CT_DOUBLE, OFF(optim.min_lr), "1e-5", 0, 100, 0, NULL,
     "learning rate at the end of the cosine or linear decay (<= lr)"},
    {"optim", "beta1", CT_DOUBLE, OFF(optim.beta1), "0.9", 0, 0.999999, 0, NULL,
     "AdamW first-moment decay, in [0, 1)"},
    {"optim", "beta2", CT_DOUBLE, OFF(optim.beta2), "0.95", 0, 0.999999999, 0, NULL,
     "AdamW second-moment decay, in [0, 1)"},
    {"optim", "eps", CT_DOUBLE, OFF(optim.eps), "1e-8", 0, 1, 1, NULL, "AdamW epsilon (> 0)"},
    {"optim", "weight_decay", CT_DOUBLE, OFF(optim.weight_decay), "1e-4", 0, 10, 0, NULL,
     "weight decay lambda on every 2-D tensor (not gains)"},
    {"optim", "wd_mode", CT_ENUM, OFF(optim.wd_mode), "independent", 0, 0, 0, "independent|coupled",
     "independent: p -= s_t(lr*D + wd*p); coupled: p -= s_t*lr*(D + wd*p) (s_t = schedule factor)"},
    {"optim", "clip", CT_DOUBLE, OFF(optim.clip), "1.0", 0, BIG, 0, NULL,
     "global gradient-norm clip threshold; 0 disables"},
    {"optim", "schedule", CT_ENUM, OFF(optim.schedule), "cosine", 0, 0, 0, "cosine|linear|constant",
     "decay after the linear warmup, down to min_lr"},
    {"optim", "warmup_steps", CT_INT, OFF(optim.warmup_steps), "0", 0, BIG, 0, NULL,
     "linear warmup steps (lr * (step+1) / warmup_steps); at most train.steps"},
    {"optim", "z_loss", CT_DOUBLE, OFF(optim.z_loss), "1e-4", 0, 10, 0, NULL,
     "output z-loss coefficient: adds z_loss * mean(log^2 Z) to the loss; 0 disables"},
    {"optim", "qk_clip", CT_DOUBLE, OFF(optim.qk_clip), "0", 0, 1e6, 0, NULL,
     "QK-clip (MuonClip, Kimi K2): after each update, a head whose max pre-softmax logit S over "
     "the global batch exceeds tau = qk_clip gets eta = tau / S applied to its query and key "
     "projections (optimizer state untouched); 0 = off"},
    {"optim", "qk_clip_alpha", CT_DOUBLE, OFF(optim.qk_clip_alpha), "0.5", 0, 1, 0, NULL,
     "QK-clip: W_q rows of the head scale by eta^alpha, W_k rows by eta^(1 - alpha) (MLA: the "
     "rope query rows by eta, the shared rope key and V untouched)"},
    {"optim", "qk_clip_log_only", CT_BOOL, OFF(optim.qk_clip_log_only), "false", 0, 1, 0, NULL,
     "QK-clip: compute and record eta (probes optim/qk_clip_*) but leave the weights as they are"},
    {"optim", "stable_adamw", CT_BOOL, OFF(optim.stable_adamw), "false", 0, 1, 0, NULL,
     "StableAdamW (Wortsman et al. 2023b): per tensor of AdamW's group, the step's lr (and a "
     "coupled decay) divided by max(1, sqrt(mean(g^2 / max(v_hat, eps^2)))), v_hat including "
     "this step's g; an independent decay is not scaled"},
    {"optim", "skip_sigma", CT_DOUBLE, OFF(optim.skip_sigma), "0", 0, 1e6, 0, NULL,
     "skip-step guard (OLMo-core uses 6): skip a step's update, the optimizer state untouched, "
     "when its loss or gradient norm exceeds mean + skip_sigma * sigma of the previous "
     "guard_window steps (once guard_min values exist); 0 = off"},
    {"optim", "update_clip_sigma", CT_DOUBLE, OFF(optim.update_clip_sigma), "0", 0, 1e6, 0, NULL,
     "update-norm clipping (Levanter uses 3): scale the step's whole update down to norm mean + "
     "update_clip_sigma * sigma of the previous guard_window unclipped update norms (once "
     "guard_min values exist); 0 = off"},
    {"optim", "guard_window", CT_INT, OFF(optim.guard_window), "128", 2, 1000000, 0, NULL,
     "update guards: how many previous steps' values the mean and sigma are over"},
    {"optim", "guard_min", CT_INT, OFF(optim.guard_min), "64", 2, 1000000, 0, NULL,
     "update guards: values needed before a guard acts (at most guard_window)"},
    {"optim", "balance_loss", CT_DOUBLE, OFF(optim.balance_loss), "1e-2", 0, 10, 0, NULL,
     "MoE: Switch load-balancing loss alpha * experts * sum_i f_i P_i (mean over MoE layers), "
     "added to the training loss; evaluations report ce + z"},
    {"optim", "router_z_loss", CT_DOUBLE, OFF(optim.router_z_loss), "1e-3", 0, 10, 0, NULL,
     "MoE: ST-MoE router z-loss coefficient on mean(logsumexp(router logits)^2) (mean over MoE "
     "layers)"},
    {"optim", "momentum", CT_DOUBLE, OFF(optim.momentum), "0.95", 0, 0.999999, 0, NULL,
     "Muon: Nesterov momentum beta, in [0, 1)"},
    {"optim", "ns_steps", CT_INT, OFF(optim.ns_steps), "5", 1, 100, 0, NULL,
     "Muon: Newton-Schulz iterations (quintic, coefficients 3.4445, -4.7750, 2.0315)"},
    {"optim", "muon_scale", CT_ENUM, OFF(optim.muon_scale), "rms_match", 0, 0, 0, "shape|rms_match",
     "Muon update scale: shape = sqrt(max(1, rows/cols)) (Keller Jordan); rms_match = "
     "0.2*sqrt(max(rows, cols)) (Moonlight: AdamW's lr and weight decay carry over)"},
    {"optim", "muon_lr_scale", CT_DOUBLE, OFF(optim.muon_lr_scale), "1", 0, 1e6, 1, NULL,
     "Muon group's learning rate = the schedule's lr (peak optim.lr) times this, so one lr "
     "sweep moves both groups"},
    {"optim", "muon_weight_decay", CT_DOUBLE, OFF(optim.muon_weight_decay), "1e-4", 0, 10, 0, NULL,
     "Muon group's weight decay (optim.wd_mode applies: coupled W(1 - lr*wd), "
     "independent W(1 - s_t*wd))"},
    // [train]
    {"train", "steps", CT_INT, OFF(train.steps), "500", 1, BIG, 0, NULL, "optimizer steps"},
    {"train", "batch_size", CT_INT, OFF(train.batch_size), "32", 1, BIG, 0, NULL,
     "global batch in sequences; must divide by ranks * grad_accum"},
    {"train", "grad_accum", CT_INT, OFF(train.grad_accum), "1", 1, 65536, 0, NULL,
     "micro-batches per step and rank (activation memory scales with the micro-batch)"},
    {"train", "seed", CT_I64, OFF(train.seed), "1", 0, 9.2e18, 0, NULL,
     "seed of weight init and data sampling"},
    {"train", "eval_every", CT_INT, OFF(train.eval_every), "100", 0, BIG, 0, NULL,
     "steps between held-out evaluations; 0 = only at step 0 and at the end"},
    {"train", "eval_batches", CT_INT, OFF(train.eval_batches), "4", 1, 65536, 0, NULL,
     "held-out batches (of batch_size sequences) per evaluation, the same ones every time"},
    {"train", "threads", CT_INT, OFF(train.threads), "1", 1, 1024, 0, NULL,
     "BLAS and OpenMP threads per rank (keep ranks x threads <= cores)"},
    {"train", "log_every", CT_INT, OFF(train.log_every), "10", 1, BIG, 0, NULL,
     "steps between progress lines"},
    {"train", "deterministic", CT_BOOL, OFF(train.deterministic), "false", 0, 1, 0, NULL,
     "fixed-order gradient reduction: bitwise identical runs for 1, 2, 4, ... ranks; "
     "grad_accum then counts the micro-batches of the global batch (a power of two, a multiple "
     "of the ranks)"},
    {"train", "bucket_mb", CT_DOUBLE, OFF(train.bucket_mb), "2", 0, 4096, 1, NULL,
     "gradient allreduce bucket size in MiB (buckets close at tensor boundaries)"},
    {"train", "overlap_reduce", CT_BOOL, OFF(train.overlap_reduce), "true", 0, 1, 0, NULL,
     "start each bucket's allreduce while backward continues (false: reduce after backward)"},
    {"train", "check_every", CT_INT, OFF(train.check_every), "100", 0, BIG, 0, NULL,
     "steps between cross-rank parameter checksums (a mismatch aborts naming the tensor); 0 "
     "never"},
    {"train", "checkpoint_every", CT_INT, OFF(train.checkpoint_every), "250", 0, BIG, 0, NULL,
     "steps between checkpoints in ckpt/ (one is always written at the end); 0 = only at the "
     "end"},
    {"train", "on_nonfinite", CT_ENUM, OFF(train.on_nonfinite), "stop", 0, 0, 0, "stop|skip",
     "a non-finite loss or gradient: stop the run (exit code 3) or skip the step's update and "
     "go on (an event either way)"},
    {"train", "precision", CT_ENUM, OFF(train.precision), "fp32", 0, 0, 0, "fp32|bf16",
     "bf16: both operands of every linear layer's products (forward, and both backward "
     "products; the attention, MLP, MLA, expert, router and head weights and the activations "
     "they multiply) are rounded to bf16, to nearest even, then multiplied with fp32 "
     "accumulation (an exact emulation: round, then sgemm; or oneDNN's bf16 matmul, "
     "train.matmul_backend). Master weights, gradients, optimizer state, norms, softmax, the "
     "loss and the allreduce stay fp32; checkpoints are fp32. Attention's own products: "
     "train.bf16_attention"},
    {"train", "matmul_backend", CT_ENUM, OFF(train.matmul_backend), "auto", 0, 0, 0,
     "auto|openblas|onednn",
     "who multiplies the linear layers: openblas (sgemm; with bf16 the operands are rounded "
     "first, an exact emulation), onednn (oneDNN's matmul: bf16 x bf16 -> fp32 on CPUs with "
     "AMX or AVX512-BF16, refused elsewhere; fp32 on any CPU), or auto (bf16: onednn where the "
     "CPU has it, else openblas; fp32: openblas). Attention's own products always use "
     "OpenBLAS. With train.deterministic, bf16 ranks on different backends are refused (their "
     "sums differ in order)"},
    {"train", "bf16_attention", CT_BOOL, OFF(train.bf16_attention), "true", 0, 1, 0, NULL,
     "with train.precision = bf16: attention's q.k and p.v products take bf16 operands too (q, k "
     "and v as attended, the probabilities for p.v while the softmax backward keeps fp32 p, and "
     "in backward the output gradient and the softmax's input gradient), fp32 accumulation; "
     "false keeps them fp32 (they matter most for attention-logit growth). Costs one more "
     "[batch, heads, seq_len, seq_len] buffer per layer"},
    {"train", "keep_checkpoints", CT_INT, OFF(train.keep_checkpoints), "2", 1, 100000, 0, NULL,
     "newest checkpoints kept; older ones are deleted"},
    // [data]
    {"data", "train", CT_PATH, OFF(data.train), "", 0, 0, 0, NULL,
     "training token file (llm.c .bin layout; 'canary tokenize' makes one); {section.key} is "
     "replaced by that key's value (data/brown_{model.vocab}.bin)"},
    {"data", "val", CT_PATH, OFF(data.val), "", 0, 0, 0, NULL,
     "held-out token file ({section.key} as in data.train); empty = the tail val_fraction of "
     "data.train"},
    {"data", "val_fraction", CT_DOUBLE, OFF(data.val_fraction), "0.05", 0, 0.5, 1, NULL,
     "fraction of data.train held out (its tail) when data.val is empty"},
    // [probes]
    {"probes", "enabled", CT_BOOL, OFF(probes.enabled), "true", 0, 1, 0, NULL,
     "write probes.h5 in the run directory"},
    {"probes", "every", CT_INT, OFF(probes.every), "10", 1, BIG, 0, NULL,
     "steps between rows of the attention, output, residual and per-tensor probes (loss, lr, "
     "gradient norm and throughput get a row every step)"},
    {"probes", "flush_every", CT_INT, OFF(probes.flush_every), "50", 1, BIG, 0, NULL,
     "steps between flushes of probes.h5; a reader (or a crash) sees every row up to the last "
     "flush"},
    {"probes", "lr_probe_every", CT_INT, OFF(probes.lr_probe_every), "100", 0, BIG, 0, NULL,
     "steps between local LR-sensitivity probes: the mean loss of a fixed held-out batch "
     "(the first batch_size held-out sequences) after the step's learning-rate part of the "
     "update scaled by 0, 1/2, 1, 2 (weights untouched); 0 never"},
    {"probes", "spike_sigma", CT_DOUBLE, OFF(probes.spike_sigma), "6", 0, 1000, 1, NULL,
     "a loss or gradient norm this many standard deviations above its rolling mean is a spike "
     "event"},
    {"probes", "spike_window", CT_INT, OFF(probes.spike_window), "128", 2, 1000000, 0, NULL,
     "steps in the rolling window of the spike test"},
    {"probes", "logit_threshold", CT_DOUBLE, OFF(probes.logit_threshold), "1e4", 0, 1e30, 1, NULL,
     "max attention logit that records a threshold event (Wortsman: above 1e4 runs "
     "diverged)"},
    {"probes", "dead_window", CT_INT, OFF(probes.dead_window), "100", 1, BIG, 0, NULL,
     "MoE: an expert is dead when no token of the global batch chose it in any of the last "
     "dead_window steps (the checkpoint carries the window across a resume)"},
};

const int config_key_count = (int)(sizeof(config_keys) / sizeof(config_keys[0]));
