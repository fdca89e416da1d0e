// provides: struct model_config, struct model — the dense decoder-only transformer assembled from
//           the layers in this folder, its tensor table, activation arena and weight init.
//
// Pre-LN blocks, no biases, untied embedding and head (reference/papers.md §1.1):
//   x0 = tok_embed[tokens] (+ pos_embed[t])
//   x  = x + wo·attn(qk_norm?(wq·n1(x)), qk_norm?(wk·n1(x)), wv·n1(x))     (RoPE on q, k)
//   x  = x + w2·act(w1·n2(x) [, w3·n2(x)])
//   logits = head·nf(x)
// What it is not: the loss (losses/), the optimizer (optim/) or any communication (dist/).
#ifndef CANARY_MODEL_MODEL_H
#define CANARY_MODEL_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "model/mlp.h"
#include "model/moe.h"
#include "model/norm.h"
#include "model/matmul.h"
#include "model/tensors.h"

enum pos_kind { POS_ROPE = 0, POS_LEARNED = 1 };
enum attn_kind { ATTN_MHA = 0, ATTN_MLA = 1 };
// µParam (Wortsman et al. 2023 §3.2.4), relative to a base model of width mup_base_width (the
// same model with dim, the attention width and the MLP width scaled by base / dim):
//   simple:       each hidden matrix's AdamW LR × base_fan_in / fan_in = base / dim
//   intermediate: and the head's init std sqrt(base_fan_in) / fan_in = sqrt(base) / dim
//   full:         and the attention scale 1/d_qk instead of 1/sqrt(d_qk), and W_q zero at init
enum mup_level { MUP_OFF = 0, MUP_SIMPLE = 1, MUP_INTERMEDIATE = 2, MUP_FULL = 3 };

struct model_config {
    int dim;       // residual width C
    int layers;    // blocks L
    int heads;     // attention heads H
    int head_dim;  // d_h; 0 in a config file means dim / heads (model_config_resolve)
    int seq_len;   // context T
    int vocab;     // V
    int mlp_ratio; // F = mlp_ratio · dim (for SwiGLU too)
    enum norm_kind norm;
    int qk_norm; // per-head norm of q and k, one d_h gain shared by the heads
    enum pos_kind pos;
    enum mlp_kind mlp;
    // mixture of experts (experts = 0: dense); see model/moe.h
    int experts;            // E routed experts per MoE block
    int top_k;              // k experts per token
    int gate_renorm;        // gates renormalised over the chosen k
    int shared_experts;     // S always-on experts
    double capacity_factor; // expert capacity = ceil(factor · k · group tokens / E)
    int moe_every;          // blocks l with (l + 1) % moe_every == 0 are MoE
    // multi-head latent attention (attention = mla; see model/model_mla.h)
    enum attn_kind attention;
    int kv_rank;  // d_c, the KV latent (resolved: 0 in a config means dim / 2)
    int q_rank;   // d_c', the query latent; 0 = no query compression
    int rope_dim; // d_R, the decoupled RoPE part of q and k (0 with learned positions)
    // MoE again (last, so positional initialisers of the fields above stay valid)
    int moe_group; // tokens per routing group (capacity, balance loss); 0: seq_len
    // logit soft-capping (Gemma 2): s → c·tanh(s/c); 0 = off
    double attn_softcap;  // attention logits, before the causal softmax
    double final_softcap; // output logits, before the loss
    enum mup_level mup;
    int mup_base_width;
};

// Activations of one block for a micro-batch of B sequences, kept for backward.
struct block_acts {
    float *x_in;                                  // [B·T, C] block input (residual stream)
    float *n1, *n1_mean, *n1_rstd;                // [B·T, C], [B·T], [B·T]
    float *qkv;                                   // [B·T, 3·I] projections, I = H·d_h
    float *q_raw, *k_raw;                         // [B, H, T, d_h] before qk-norm
    float *qn_mean, *qn_rstd, *kn_mean, *kn_rstd; // [B·H·T] qk-norm statistics
    float *q, *k, *v;              // [B, H, T, d_h] as attended (after qk-norm and RoPE)
    float *p;                      // [B, H, T, T] attention probabilities
    float *capt;                   // [B, H, T, T] tanh(s / attn_softcap) (attn_softcap > 0 only)
    float *o;                      // [B, H, T, d_h] attention output per head
    float *att;                    // [B·T, I] heads merged
    float *x_mid;                  // [B·T, C] residual after attention
    float *n2, *n2_mean, *n2_rstd; // [B·T, C], [B·T], [B·T]
    float *u;                      // [B·T, F] (GELU) or [B·T, 2F] (SwiGLU: gate | up)
    float *a;                      // [B·T, F] activation
    // MoE blocks (N = B·T tokens, k choices, U = F or 2F; see model/moe.h). u and a above then
    // hold the shared experts': [S, N, U] and [S, N, F].
    float *probs, *lse;  // [N, E] router softmax, [N] its logsumexp
    float *gates;        // [N, k]
    int *sel, *slot;     // [N, k] chosen experts, their rows in the expert buffers (−1 dropped)
    int *slot_tok;       // [N·k] token of each expert-buffer row
    int *off;            // [E + 1] first row of each expert
    float *eh, *ea, *ey; // [N·k, U], [N·k, F], [N·k, C] experts' pre-activation, activation,
                         // output (rows expert after expert)
    // MLA blocks (d_qk = d_h + d_R; q, k, q_raw, k_raw above are then [B, H, T, d_qk], qkv unused)
    float *cq, *cq_rstd, *cqn; // [N, d_c'], [N], [N, d_c'] query latent, before / after its norm
    float *qf;                 // [N, H·d_qk] query projection
    float *kva;                // [N, d_c + d_R] the KV down-projection (latent | shared rope key)
    float *ckv, *ckv_rstd;     // [N, d_c], [N] the KV latent before its norm
    float *ckvn;               // [N, d_c] after it
    float *kvb;                // [N, 2·H·d_h] up-projection: k content heads | v heads
};

// The activation arena: every buffer forward and backward need, carved from one allocation
// sized at init for the largest micro-batch. Nothing is allocated during a step.
struct model_acts {
    float *base;
    size_t floats;
    struct block_acts *blocks;               // [L]
    float *x_final, *nf, *nf_mean, *nf_rstd; // [B·T, C], [B·T, C], [B·T], [B·T]
    float *logits;                           // [B·T, V]; the loss overwrites it with dlogits
    float *rope;                             // [T, d_h/2, 2]
    float *attn_stats; // [L, B·H, ATTN_STATS] when probe_attention is set (attention.h)
    // backward scratch, shared by the layers (only one is in backward at a time)
    float *dx, *dn;             // [B·T, C] residual gradient, norm-output gradient
    float *dqkv;                // [B·T, 3·I]
    float *datt;                // [B·T, I]
    float *dq, *dk, *dv, *dout; // [B, H, T, d_h]
    float *dq_raw, *dk_raw;     // [B, H, T, d_h]
    float *dp;                  // [B, H, T, T]
    float *du, *da;             // [B·T, 2F], [B·T, F]
    // MoE scratch (N = B·T, k choices)
    float *moe_x, *moe_dx, *moe_dy; // [N·k, C] gathered inputs, their gradient, dL/dy
    float *moe_dh, *moe_da;         // [N·k, U], [N·k, F]
    float *moe_dlogits;             // [N, E]
    float *moe_dgate;               // [N, k]
    float *moe_tmp;                 // [N, C] an input gradient before it is added
    // MLA scratch
    float *mla_dqf;              // [N, H·d_qk]
    float *mla_dkvb;             // [N, 2·H·d_h]
    float *mla_dkva;             // [N, d_c + d_R]
    float *mla_dlat, *mla_dlatn; // [N, max(d_c, d_c')] a latent's gradient after / before norm
    float *mla_tmp;              // [N, C]
    float *rope_r;               // [T, d_R/2, 2] the decoupled RoPE table
    int *ibase;                  // the int arena (sel, slot, slot_tok, off of every block)
    size_t ints;
};

// Table indices of one block's tensors (wk, wv follow wq; w3 follows w1 for SwiGLU). A MoE block
// has w1 = w2 = −1 and a router, E routed experts and S shared ones (each w1 | w3, w2).
// An MLA block has wq (no query latent) or wq_a, q_lat_norm, wq_b; and wkv_a, kv_lat_norm, wkv_b.
struct block_index {
    int n1, wq, q_norm, k_norm, wo, n2, w1, w2;
    int wq_a, q_lat_norm, wq_b, wkv_a, kv_lat_norm, wkv_b; // −1 unless MLA
    int moe, router;
    int *ew1, *ew2; // [E] owned
    int *sw1, *sw2; // [S] owned
};

struct model {
    struct model_config cfg;
    int inner;              // I = H · d_h
    int dqk;                // per-head width of q and k: d_h, or d_h + d_R with MLA
    float attn_scale;       // logit = q·k · attn_scale: 1/sqrt(d_qk), or 1/d_qk with µParam full
    struct matmul_prec *mm; // the linear layers' precision and backend (model_set_precision);
                            // NULL: fp32 on OpenBLAS
    float *attn_pr; // bf16 attention: [L, max_batch·H·T·T] rounded probabilities, or NULL
    int ffn;        // F
    int max_batch;  // B the arena holds
    struct tensor_table table;
    int tok_embed, pos_embed, final_norm, head; // table indices (pos_embed −1 for RoPE)
    struct block_index *blocks;                 // [L]
    struct model_acts acts;
    int probe_attention; // forwards record attention statistics (model_set_probing)
    // MoE
    int moe_layers;                  // blocks with the MoE feed-forward
    double balance_coef, z_coef;     // the aux losses' coefficients (model_set_aux_coefs)
    struct moe_stats *moe_stats;     // [L] last forward's routing statistics (MoE blocks)
    double *moe_counts, *moe_mean_p; // [L, 2E] chosen and kept pairs per expert, [L, E] P_i
    double *moe_group_counts;        // [L, groups, E] chosen pairs per routing group
    int moe_group;                   // tokens per routing group (cfg.moe_group resolved)
    int moe_groups_max;              // groups of the largest micro-batch (+1), per layer
};

// Fills in the model's defaults (head_dim = dim / heads; MLA: kv_rank = dim / 2, rope_dim a
// quarter of the head) and checks what the model config alone decides (head_dim divides, RoPE
// pairs, MLA ranks, top_k and routing groups, table size). Returns 0, or -1 with a one-line
// message in err naming the keys. Call before model_init (launch/config.c does).
int model_config_resolve(struct model_config *cfg, char *err, size_t errlen);

// The widest per-token row any kernel of the model works on (logits, fused projections, expert
// buffers, MLA queries, a head's attention row across heads): with the tokens of a micro-batch
// it bounds the int indices the kernels use.
double model_max_row_width(const struct model_config *cfg);

// 1 when block l has the MoE feed-forward.
int model_block_is_moe(const struct model_config *cfg, int l);

// Called during backward when the gradients of tensors [first, table.n) are final, so the caller
// can start reducing them. May be NULL.
typedef void (*model_grads_ready_fn)(void *ctx, int first_tensor);

// Builds the tensor table and the activation arena for micro-batches of up to max_batch
// sequences. The config must be validated (launch/config.c). Aborts on allocation failure.
void model_init(struct model *m, const struct model_config *cfg, int max_batch);
void model_free(struct model *m);

// Wortsman et al. init, a pure function of (seed, tensor name): embeddings N(0, 1/sqrt(C)),
// matrices and head truncated normal (±2σ) with std 1/sqrt(fan_in), gains 1.
void model_params_init(const struct model *m, float *params, uint64_t seed);

// The MoE auxiliary losses of one forward, already times their coefficients: means over the MoE
// blocks of the load-balancing loss and of the router z-loss (0 for a dense model).
struct model_aux {
    double balance, router_z;
};

// The coefficients of the MoE auxiliary losses (optim.balance_loss, optim.router_z_loss); 0
// until set.
void model_set_aux_coefs(struct model *m, double balance, double router_z);

// The linear layers' precision and backend: bf16 = 1 rounds both operands of every linear
// layer's products (forward and backward) to bf16 with fp32 accumulation (model/matmul.h); 0 is
// fp32. attention = 1 (with bf16) also rounds attention's products: q, k, v as attended, the
// probabilities for p·v (a rounded copy: the softmax backward keeps fp32 p), and in backward the
// output gradient and the softmax's input gradient (always on OpenBLAS). onednn = 1: the linear
// layers' products run as oneDNN matmul primitives (model/matmul_dnnl.h; check
// mm_dnnl_available first), made here by one planning forward and backward (which overwrites the
// arena and the MoE routing statistics); 0: OpenBLAS. Allocates the rounding scratch: call at
// setup, on a model fresh from model_init, not in a step.
void model_set_precision(struct model *m, int bf16, int attention, int onednn);
// About the bytes model_set_precision allocates for micro-batches of B sequences: 0 for fp32,
// 16-bit scratch on oneDNN (onednn = 1; oneDNN's own JIT code and scratchpad not counted), 32-bit
// for the emulation (an upper bound while the backend is not chosen yet).
double model_precision_bytes(const struct model_config *c, int B, int bf16, int attention,
                             int onednn);

// Forward for B ≤ max_batch sequences of T tokens (tokens[B, T], already < vocab); leaves the
// logits in m->acts.logits [B·T, V] and keeps what backward needs. Returns the MoE auxiliary
// losses, which the caller adds to the loss.
struct model_aux model_forward(struct model *m, const float *params, const int *tokens, int B);

// Backward from dlogits (in m->acts.logits, written by the loss) after model_forward with the
// same tokens and B. ACCUMULATES into grads. loss_scale: the scale the caller gave the loss
// gradient (1/micro-batches when the step's loss is a mean over them); the auxiliary losses'
// gradients get the same. Calls ready() as tail ranges become final.
void model_backward(struct model *m, const float *params, float *grads, const int *tokens, int B,
                    float loss_scale, model_grads_ready_fn ready, void *ready_ctx);

// Bytes of parameters, gradients, update, AdamW moments and the activation arena for micro-batches
// of B sequences, in double so that absurd configs do not wrap: an estimate to refuse a run
// before anything is allocated (the exact arena size is model.acts.floats after model_init).
double model_memory_estimate(const struct model_config *cfg, int B, double *acts_bytes,
                             double *state_bytes);

// Floats of the arena that the attention halves of all blocks keep for backward (projections,
// latents, q, k, v, probabilities, outputs), for the benchmark's memory comparison.
size_t model_attention_act_floats(const struct model *m);

// What the probes read from one forward (model_probes.c). Every field is a sum over the B
// sequences of that forward, or a maximum, so the caller can combine forwards and ranks
// (probes/partials.h). Arrays the model has no use for (no MLA, no MoE) may be NULL.
struct model_probe_sums {
    double *attn_max;     // [L, H] max |q·k|·scale over causal pairs (the pre-softmax logit)
    double *attn_entropy; // [L, H] Σ over query rows of −Σ_j p log p (nats)
    double *q_sumsq;      // [L, H] Σ q² as attended (after qk-norm and RoPE), d_qk wide
    double *k_sumsq;      // [L, H] Σ k² as attended
    double *resid_sumsq;  // [L] Σ x² of the residual stream after each block
    double *kv_latent_sumsq, *q_latent_sumsq; // [L] MLA: Σ c_kv², Σ c_q² before their norms
    double *moe_kept;    // [MoE blocks, E] token-expert pairs each expert kept (capacity)
    double *moe_z;       // [MoE blocks] Σ over tokens of logsumexp(router logits)²
    double *moe_entropy; // [MoE blocks] Σ over tokens of the router softmax entropy
};

// Whether the coming forwards record attention statistics (they cost a little).
void model_set_probing(struct model *m, int on);
// The probe sums of the last forward of B sequences, which ran with probing on. OVERWRITES the
// arrays in out.
void model_probe_sums(const struct model *m, int B, const struct model_probe_sums *out);
// out[L, H]: the max signed attention logit (before capping) over the B sequences of the last
// forward, which ran with probing on (QK-clip's S before the max over micro-batches and ranks).
// OVERWRITES. NaN when a logit was NaN.
void model_attn_max_signed(const struct model *m, int B, double *out);
// chosen[MoE blocks, E]: token-expert pairs the last forward's router chose, before capacity.
// OVERWRITES. Independent of probing (routing always counts).
void model_moe_chosen(const struct model *m, double *chosen);

// Matmul FLOPs of one forward over B sequences (backward is 2× this).
double model_forward_flops(const struct model_config *cfg, int B);

#endif
