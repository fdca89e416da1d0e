// provides: the probe catalogue — every series probes.h5 can hold: its name, row shape, cadence,
//           what the model must have for it to exist, and the description stored beside it.
//
// A static table, like launch/config_keys.c: adding a probe is one enum entry and one row here.
// Rows of cadence-1 probes align with /step; the others with /probe_step (probes.every).
// Whether a probe of a run exists follows from the model and the optimizer alone (a dense model
// has no moe/ series), so the layout of probes.h5 is known before the first step.
#ifndef CANARY_PROBES_CATALOGUE_H
#define CANARY_PROBES_CATALOGUE_H

enum probe_id {
    PROBE_LOSS_TOTAL,
    PROBE_LOSS_CE,
    PROBE_LOSS_Z,
    PROBE_LOSS_AUX,
    PROBE_LR,
    PROBE_GRAD_NORM,
    PROBE_CLIP,
    PROBE_TOKENS_PER_S,
    PROBE_SKIPPED,
    PROBE_ATTN_MAX_LOGIT,
    PROBE_ATTN_ENTROPY,
    PROBE_ATTN_Q_RMS,
    PROBE_ATTN_K_RMS,
    PROBE_LOGZ_MEAN,
    PROBE_LOGZ_STD,
    PROBE_LOGZ_MAX,
    PROBE_LOGIT_RMS,
    PROBE_RESID_RMS,
    PROBE_GRAD_RMS,
    PROBE_PARAM_RMS,
    PROBE_UPDATE_RMS,
    PROBE_ADAM_SQRT_V_RMS,
    PROBE_ADAM_EPS_FRAC,
    PROBE_ADAM_V_ZERO_FRAC,
    PROBE_KV_LATENT_RMS,
    PROBE_Q_LATENT_RMS,
    PROBE_LOSS_BALANCE,
    PROBE_LOSS_ROUTER_Z,
    PROBE_MOE_LOAD,
    PROBE_MOE_DROPPED,
    PROBE_MOE_ROUTER_Z,
    PROBE_MOE_ENTROPY,
    PROBE_MOE_DEAD,
    PROBE_MUON_ORTHO,
    PROBE_MUON_MOMENTUM_RMS,
    PROBE_LOGIT_MAX,
    PROBE_LOGIT_MAX_CAPPED,
    PROBE_ATTN_MAX_LOGIT_CAPPED,
    PROBE_QK_CLIP_COUNT,
    PROBE_QK_CLIP_ETA,
    PROBE_STABLE_SCALED,
    PROBE_STABLE_FACTOR,
    PROBE_GUARD_SKIP,
    PROBE_GUARD_LOSS_THR,
    PROBE_GUARD_GNORM_THR,
    PROBE_UPDATE_NORM,
    PROBE_UPDATE_THR,
    PROBE_UPDATE_CLIP,
    PROBE_IDS
};

// Row shapes. PROBE_MOE_LAYERS: [MoE blocks]; PROBE_MOE_EXPERTS: [MoE blocks, experts].
enum probe_shape {
    PROBE_SCALAR,
    PROBE_LAYERS,
    PROBE_LAYER_HEADS,
    PROBE_TENSORS,
    PROBE_MOE_LAYERS,
    PROBE_MOE_EXPERTS
};

// What a run needs for a probe to exist.
enum probe_needs {
    PROBE_NEEDS_NOTHING,
    PROBE_NEEDS_MLA,        // attention = mla
    PROBE_NEEDS_Q_LATENT,   // attention = mla with a query latent (q_rank > 0)
    PROBE_NEEDS_MOE,        // experts > 0
    PROBE_NEEDS_MUON,       // optim.name = muon
    PROBE_NEEDS_ATTN_CAP,   // model.attn_softcap > 0
    PROBE_NEEDS_FINAL_CAP,  // model.final_softcap > 0
    PROBE_NEEDS_QK_CLIP,    // optim.qk_clip > 0
    PROBE_NEEDS_STABLE,     // optim.stable_adamw
    PROBE_NEEDS_SKIP,       // optim.skip_sigma > 0
    PROBE_NEEDS_UPDATE_CLIP // optim.update_clip_sigma > 0
};

struct probe_entry {
    enum probe_id id;
    const char *name;
    enum probe_shape shape;
    int every_step; // 1: a row at every step; 0: at the probe cadence
    enum probe_needs needs;
    const char *description;
};

// Indexed by enum probe_id.
extern const struct probe_entry probe_catalogue[PROBE_IDS];

#endif
