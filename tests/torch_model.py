"""Independent PyTorch reference of canary's dense transformer.

This module re-implements, in plain PyTorch, exactly the model, loss, learning
rate schedule, gradient clipping and the AdamW and Muon updates that the C
trainer uses.
It is used in two ways:

  * tests/gen_reference.py runs it in float64 ("plain" mode: every operation
    written out explicitly) to produce the golden fixtures the C code is
    checked against;
  * bench/torch_bench.py runs it in float32 ("fast" mode: fused PyTorch
    kernels such as F.layer_norm and scaled_dot_product_attention) as the
    PyTorch baseline for the throughput benchmark.

Both modes compute the same mathematical function; gen_reference.py checks
that they agree in float64.

Conventions (must match the C side bit-for-bit in meaning):
  * weights are row-major [out, in] like torch.nn.Linear; no biases anywhere;
  * pre-LN blocks, norm eps 1e-6 inside the square root, gains but no bias;
  * optional per-head q/k norm (same norm type, one gain of size head_dim);
  * RoPE theta 1e4 on INTERLEAVED pairs (2j, 2j+1), applied after q/k norm;
  * causal softmax attention with scale 1/sqrt(head_dim), the logits optionally
    soft-capped c tanh(s / c) before the softmax (model.attn_softcap);
  * gelu is the tanh approximation; swiglu is w2(silu(w1 x) * (w3 x));
  * loss = mean(logZ - logit[y]) + z_loss * mean(logZ^2), of the output logits
    soft-capped c tanh(z / c) first when model.final_softcap > 0.
"""

import configparser
import math
import re

import torch
import torch.nn.functional as F

NORM_EPS = 1e-6
ROPE_THETA = 1e4
# Standard deviation of a unit normal truncated to [-2, 2].
TRUNC_STD = 0.87962566103423978

# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------

# Every key the reference understands, with a default. The type of the
# default decides how a value read from an INI file is parsed.
DEFAULTS = {
    "model": {
        "dim": 64,
        "layers": 2,
        "heads": 4,
        "head_dim": 0,  # 0 -> dim / heads
        "seq_len": 64,
        "vocab": 256,
        "norm": "layernorm",  # layernorm | rmsnorm
        "qk_norm": False,
        "pos": "rope",  # rope | learned
        "mlp": "gelu",  # gelu | swiglu
        "mlp_ratio": 4,
        # multi-head latent attention (attention = mla)
        "attention": "mha",  # mha | mla
        "kv_rank": 0,  # 0 -> dim / 2
        "q_rank": 0,  # 0 -> no query compression
        "rope_dim": 0,  # 0 -> head_dim / 2 (even) with rope, 0 with learned positions
        # mixture of experts (experts = 0: dense)
        "experts": 0,
        "top_k": 2,
        "gate_renorm": False,
        "shared_experts": 0,
        "capacity_factor": 1.25,
        "moe_every": 1,
        "moe_group": 0,  # tokens per routing group; 0 -> seq_len (one sequence)
        # logit soft-capping (Gemma 2): s -> c tanh(s / c); 0 = off
        "attn_softcap": 0.0,  # attention logits, before the causal softmax
        "final_softcap": 0.0,  # output logits, before the loss
        # muParam (Wortsman et al. 3.2.4) against a model of width mup_base_width: simple scales
        # the hidden matrices' AdamW LR by base / dim; intermediate also inits the head with std
        # sqrt(base) / dim; full also uses the attention scale 1/d_qk and zero-inits W_q
        "mup": "off",
        "mup_base_width": 256,
    },
    "optim": {
        "name": "adamw",
        "lr": 3e-4,
        "min_lr": 0.0,
        "beta1": 0.9,
        "beta2": 0.95,
        "eps": 1e-8,
        "weight_decay": 0.1,
        "wd_mode": "independent",  # independent | coupled
        "clip": 1.0,
        "schedule": "cosine",  # cosine | linear | constant
        "warmup_steps": 0,
        "z_loss": 1e-4,
        "balance_loss": 1e-2,
        "router_z_loss": 1e-3,
        # Muon (optim.name = muon): hidden 2-D matrices only, AdamW elsewhere.
        "momentum": 0.95,
        "ns_steps": 5,
        "muon_scale": "rms_match",  # shape | rms_match
        "muon_lr_scale": 1.0,
        "muon_weight_decay": 1e-4,
        # QK-clip (MuonClip): after each update, heads with max logit S > qk_clip get
        # eta = qk_clip / S on their query (eta^alpha) and key (eta^(1 - alpha)) rows
        "qk_clip": 0.0,
        "qk_clip_alpha": 0.5,
        "qk_clip_log_only": False,
        # StableAdamW: AdamW's lr per tensor / max(1, sqrt(mean(g^2 / max(v_hat, eps^2))))
        "stable_adamw": False,
    },
    "train": {
        "steps": 100,
        "batch_size": 8,
        "seed": 1,
        "precision": "fp32",  # bf16: the linear layers' operands rounded (see linear())
        "bf16_attention": True,  # with bf16: attention's q.k and p.v too (see attn_mm())
    },
}

# Keys only meaningful for optim.name = muon. config_to_ini leaves them out of
# AdamW configs, so those files stay loadable by parsers that predate Muon.
MUON_KEYS = ("momentum", "ns_steps", "muon_scale", "muon_lr_scale", "muon_weight_decay")
# Keys only meaningful with model.experts > 0: canary refuses them on a dense model.
MOE_KEYS = {"model": ("top_k", "gate_renorm", "shared_experts", "capacity_factor", "moe_every",
                       "moe_group"),
            "optim": ("balance_loss", "router_z_loss")}
# Keys only meaningful with model.attention = mla.
MLA_KEYS = ("kv_rank", "q_rank", "rope_dim")
# written into config.ini only when set, so the cases without them keep their files
SOFTCAP_KEYS = ("attn_softcap", "final_softcap")
QK_CLIP_KEYS = ("qk_clip", "qk_clip_alpha", "qk_clip_log_only")
STABLE_KEYS = ("stable_adamw",)
MUP_KEYS = ("mup", "mup_base_width")
PRECISION_KEYS = ("precision", "bf16_attention")

_CHOICES = {
    ("optim", "name"): ("adamw", "muon"),
    ("optim", "muon_scale"): ("shape", "rms_match"),
    ("model", "norm"): ("layernorm", "rmsnorm"),
    ("model", "pos"): ("rope", "learned"),
    ("model", "mlp"): ("gelu", "swiglu"),
    ("model", "attention"): ("mha", "mla"),
    ("model", "mup"): ("off", "simple", "intermediate", "full"),
    ("train", "precision"): ("fp32", "bf16"),
    ("optim", "wd_mode"): ("independent", "coupled"),
    ("optim", "schedule"): ("cosine", "linear", "constant"),
}


def _parse_value(default, text):
    """Parse an INI string into the type of the default value."""
    text = text.strip()
    if isinstance(default, bool):
        low = text.lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise ValueError("not a boolean: %r" % text)
    if isinstance(default, int):
        return int(text)
    if isinstance(default, float):
        return float(text)
    return text


def default_config():
    """A fresh copy of the default configuration (dict of section dicts)."""
    return {sec: dict(keys) for sec, keys in DEFAULTS.items()}


def set_value(cfg, dotted, text):
    """Apply one 'section.key=value' style override (value given as text)."""
    sec, key = dotted.split(".", 1)
    if sec not in DEFAULTS or key not in DEFAULTS[sec]:
        raise KeyError("unknown config key %s.%s" % (sec, key))
    cfg[sec][key] = _parse_value(DEFAULTS[sec][key], text)


def load_config(path=None, overrides=()):
    """Read an INI file (unknown sections/keys are ignored, missing keys take
    the defaults above) and apply 'section.key=value' overrides."""
    cfg = default_config()
    if path is not None:
        ini = configparser.ConfigParser(inline_comment_prefixes=("#", ";"))
        with open(path) as fh:
            ini.read_file(fh)
        for sec in DEFAULTS:
            if not ini.has_section(sec):
                continue
            for key, text in ini.items(sec):
                if key in DEFAULTS[sec]:
                    cfg[sec][key] = _parse_value(DEFAULTS[sec][key], text)
    for item in overrides:
        dotted, text = item.split("=", 1)
        set_value(cfg, dotted.strip(), text)
    validate(cfg)
    return cfg


def validate(cfg):
    for (sec, key), allowed in _CHOICES.items():
        if cfg[sec][key] not in allowed:
            raise ValueError("%s.%s must be one of %s" % (sec, key, allowed))
    m = cfg["model"]
    if m["head_dim"] == 0 and m["dim"] % m["heads"] != 0:
        raise ValueError("dim must be divisible by heads when head_dim = 0")
    if m["pos"] == "rope" and m["attention"] != "mla" and head_dim(cfg) % 2 != 0:
        raise ValueError("rope needs an even head_dim")
    if cfg["optim"]["ns_steps"] < 1:
        raise ValueError("optim.ns_steps must be >= 1")
    if m["attention"] == "mla":  # resolve the MLA defaults as canary does
        if m["kv_rank"] == 0:
            m["kv_rank"] = max(1, m["dim"] // 2)
        if m["rope_dim"] == 0 and m["pos"] == "rope":
            m["rope_dim"] = max(2, head_dim(cfg) // 2 // 2 * 2)
        if m["rope_dim"] % 2 != 0:
            raise ValueError("model.rope_dim must be even")


def config_to_ini(cfg, muon_keys=None):
    """Render a config as INI text with all keys of all three sections.
    The Muon-only keys (MUON_KEYS) are written when muon_keys is true; the
    default (None) writes them only when optim.name = muon."""
    if muon_keys is None:
        muon_keys = cfg["optim"]["name"] == "muon"
    lines = []
    for sec in ("model", "optim", "train"):
        lines.append("[%s]" % sec)
        for key in DEFAULTS[sec]:
            if sec == "optim" and key in MUON_KEYS and not muon_keys:
                continue
            if key in MOE_KEYS.get(sec, ()) and cfg["model"]["experts"] == 0:
                continue
            if sec == "model" and key in MLA_KEYS and cfg["model"]["attention"] != "mla":
                continue
            if sec == "model" and key in SOFTCAP_KEYS and not cfg["model"][key]:
                continue
            if sec == "model" and key in MUP_KEYS and cfg["model"]["mup"] == "off":
                continue
            if sec == "train" and key in PRECISION_KEYS and cfg["train"]["precision"] == "fp32":
                continue
            if sec == "optim" and key in QK_CLIP_KEYS and not cfg["optim"]["qk_clip"]:
                continue
            if sec == "optim" and key in STABLE_KEYS and not cfg["optim"][key]:
                continue
            val = cfg[sec][key]
            if isinstance(val, bool):
                text = "true" if val else "false"
            elif isinstance(val, float):
                text = repr(val)
            else:
                text = str(val)
            lines.append("%s = %s" % (key, text))
        lines.append("")
    return "\n".join(lines)


def head_dim(cfg):
    m = cfg["model"]
    return m["head_dim"] if m["head_dim"] > 0 else m["dim"] // m["heads"]


# ---------------------------------------------------------------------------
# Tensor table
# ---------------------------------------------------------------------------


def tensor_specs(cfg):
    """Ordered list of (name, shape) in canary's tensor table order."""
    m = cfg["model"]
    d, V, T = m["dim"], m["vocab"], m["seq_len"]
    hd = head_dim(cfg)
    inner = m["heads"] * hd
    Fdim = m["mlp_ratio"] * d
    specs = [("tok_embed", (V, d))]
    if m["pos"] == "learned":
        specs.append(("pos_embed", (T, d)))
    for i in range(m["layers"]):
        p = "blocks.%d." % i
        specs.append((p + "ln1.gain", (d,)))
        dqk = hd
        if m["attention"] == "mla":
            dr, dc, dq = m["rope_dim"], m["kv_rank"], m["q_rank"]
            dqk = hd + dr
            if dq > 0:
                specs.append((p + "attn.wq_a", (dq, d)))
                specs.append((p + "attn.q_latent_norm.gain", (dq,)))
                specs.append((p + "attn.wq_b", (m["heads"] * dqk, dq)))
            else:
                specs.append((p + "attn.wq", (m["heads"] * dqk, d)))
            specs.append((p + "attn.wkv_a", (dc + dr, d)))
            specs.append((p + "attn.kv_latent_norm.gain", (dc,)))
            specs.append((p + "attn.wkv_b", (2 * inner, dc)))
        else:
            specs.append((p + "attn.wq", (inner, d)))
            specs.append((p + "attn.wk", (inner, d)))
            specs.append((p + "attn.wv", (inner, d)))
        if m["qk_norm"]:
            specs.append((p + "attn.q_norm.gain", (dqk,)))
            specs.append((p + "attn.k_norm.gain", (dqk,)))
        specs.append((p + "attn.wo", (d, inner)))
        specs.append((p + "ln2.gain", (d,)))
        if is_moe_block(cfg, i):
            specs.append((p + "mlp.router", (m["experts"], d)))
            experts = [("experts", e) for e in range(m["experts"])]
            experts += [("shared", e) for e in range(m["shared_experts"])]
            for group, e in experts:
                q = "%smlp.%s.%d." % (p, group, e)
                specs.append((q + "w1", (Fdim, d)))
                if m["mlp"] == "swiglu":
                    specs.append((q + "w3", (Fdim, d)))
                specs.append((q + "w2", (d, Fdim)))
            continue
        specs.append((p + "mlp.w1", (Fdim, d)))
        if m["mlp"] == "swiglu":
            specs.append((p + "mlp.w3", (Fdim, d)))
        specs.append((p + "mlp.w2", (d, Fdim)))
    specs.append(("final_norm.gain", (d,)))
    specs.append(("head", (V, d)))
    return specs


def is_moe_block(cfg, i):
    """Blocks i with (i + 1) % moe_every == 0 have the MoE feed-forward."""
    m = cfg["model"]
    return m["experts"] > 0 and (i + 1) % m["moe_every"] == 0


def attn_scale(cfg, dqk):
    """The attention logit scale: 1/sqrt(d_qk), or 1/d_qk with muParam full."""
    return 1.0 / dqk if cfg["model"]["mup"] == "full" else 1.0 / math.sqrt(dqk)


def is_query_projection(cfg, name):
    """The tensor muParam full zero-inits: W_q (MLA: wq_b with a query latent, else wq)."""
    leaf = name.rsplit(".", 1)[-1]
    if cfg["model"]["attention"] == "mla" and cfg["model"]["q_rank"] > 0:
        return leaf == "wq_b"
    return leaf == "wq"


def lr_scale(cfg, name):
    """muParam's AdamW LR multiplier: base / dim for the hidden matrices (the tensors Muon would
    take: attention, MLP, expert and router weights), 1 for the rest and without muParam."""
    m = cfg["model"]
    if m["mup"] == "off" or not is_muon_matrix(name):
        return 1.0
    return m["mup_base_width"] / m["dim"]


def decays(name, shape):
    """Weight decay applies to 2-D tensors only (embeddings, matrices, head)."""
    return len(shape) == 2


def _trunc_normal_unit(shape, generator):
    """Unit normal truncated to [-2, 2], sampled by inverting the CDF
    (uniform on [Phi(-2), Phi(2)] -> Phi^-1). Computed in float64."""
    lo = 0.5 * (1.0 + math.erf(-2.0 / math.sqrt(2.0)))
    hi = 0.5 * (1.0 + math.erf(2.0 / math.sqrt(2.0)))
    u = torch.rand(shape, generator=generator, dtype=torch.float64)
    p = lo + (hi - lo) * u
    z = math.sqrt(2.0) * torch.erfinv(2.0 * p - 1.0)
    return z.clamp_(-2.0, 2.0)


def init_weights(cfg, generator, dtype=torch.float32):
    """Benchmark initialisation:
      tok_embed, pos_embed ~ N(0, 1/sqrt(d));
      other 2-D weights ~ truncated normal (+-2 sigma) rescaled so the
        post-truncation std is exactly 1/sqrt(fan_in), fan_in = #columns;
      gains = 1.
    Tensors are drawn in table order from the one generator."""
    d = cfg["model"]["dim"]
    params = {}
    for name, shape in tensor_specs(cfg):
        if name in ("tok_embed", "pos_embed"):
            w = torch.randn(shape, generator=generator, dtype=torch.float64)
            w = w / math.sqrt(d)
        elif len(shape) == 2:
            std = 1.0 / math.sqrt(shape[1])
            if name == "head" and cfg["model"]["mup"] in ("intermediate", "full"):
                std = math.sqrt(cfg["model"]["mup_base_width"]) / shape[1]
            w = _trunc_normal_unit(shape, generator) * (std / TRUNC_STD)
            if cfg["model"]["mup"] == "full" and is_query_projection(cfg, name):
                w = torch.zeros_like(w)
        else:
            w = torch.ones(shape, dtype=torch.float64)
        params[name] = w.to(dtype)
    return params


# ---------------------------------------------------------------------------
# Forward pass
# ---------------------------------------------------------------------------

_HAS_SDPA = hasattr(F, "scaled_dot_product_attention")


def apply_norm(x, gain, kind, fast=False):
    """Normalise over the last axis and multiply by gain (no bias).
    layernorm: (x - mean) / sqrt(biased var + eps); rmsnorm: x / sqrt(mean(x^2) + eps)."""
    if kind == "layernorm":
        if fast:
            return F.layer_norm(x, x.shape[-1:], gain, None, NORM_EPS)
        mu = x.mean(dim=-1, keepdim=True)
        xc = x - mu
        var = (xc * xc).mean(dim=-1, keepdim=True)
        return xc / torch.sqrt(var + NORM_EPS) * gain
    if fast:
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + NORM_EPS) * gain
    ms = (x * x).mean(dim=-1, keepdim=True)
    return x / torch.sqrt(ms + NORM_EPS) * gain


def rope_tables(T, hd, dtype, device=None):
    """cos/sin of angle t * theta^(-2j/hd) for t < T, j < hd/2, shape [T, hd/2].
    Computed in float64 then cast."""
    j = torch.arange(hd // 2, dtype=torch.float64)
    inv_freq = ROPE_THETA ** (-2.0 * j / hd)
    t = torch.arange(T, dtype=torch.float64)
    ang = t[:, None] * inv_freq[None, :]
    return ang.cos().to(dtype=dtype, device=device), ang.sin().to(dtype=dtype, device=device)


def apply_rope(x, cos, sin):
    """x: [B, T, H, D]. Rotate interleaved pairs (x[2j], x[2j+1]):
    (x0, x1) -> (x0 cos - x1 sin, x0 sin + x1 cos)."""
    x0 = x[..., 0::2]
    x1 = x[..., 1::2]
    c = cos[:, None, :]  # [T, 1, D/2], broadcast over batch and heads
    s = sin[:, None, :]
    r0 = x0 * c - x1 * s
    r1 = x0 * s + x1 * c
    return torch.stack((r0, r1), dim=-1).flatten(-2)


_MASKS = {}


def _causal_mask(T, device):
    """Boolean [T, T] mask, True above the diagonal (future positions); cached."""
    key = (T, str(device))
    if key not in _MASKS:
        _MASKS[key] = torch.ones(T, T, dtype=torch.bool, device=device).triu(1)
    return _MASKS[key]


def apply_rope_complex(x, cos, sin):
    """Same rotation as apply_rope, written the usual PyTorch way: view each
    interleaved pair (x[2j], x[2j+1]) as the complex number x[2j] + i x[2j+1]
    and multiply by exp(i * angle). Used in fast mode."""
    xc = torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2))
    rot = torch.complex(cos, sin)[:, None, :]  # [T, 1, D/2]
    return torch.view_as_real(xc * rot).flatten(-2)


def softcap(s, c):
    """Gemma 2's soft-capping c tanh(s / c); s itself when c is 0."""
    return c * torch.tanh(s / c) if c else s


def attention(cfg, p, prefix, h, rope, fast, rec=None):
    """rec, a dict, receives q and k as attended ([B, H, T, hd]) for the probes."""
    m = cfg["model"]
    B, T, _ = h.shape
    H, hd = m["heads"], head_dim(cfg)
    q = linear(cfg, h, p[prefix + "wq"]).view(B, T, H, hd)
    k = linear(cfg, h, p[prefix + "wk"]).view(B, T, H, hd)
    v = linear(cfg, h, p[prefix + "wv"]).view(B, T, H, hd)
    if m["qk_norm"]:
        q = apply_norm(q, p[prefix + "q_norm.gain"], m["norm"], fast)
        k = apply_norm(k, p[prefix + "k_norm.gain"], m["norm"], fast)
    if rope is not None:
        rot = apply_rope_complex if fast else apply_rope
        q = rot(q, *rope)
        k = rot(k, *rope)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, T, hd]
    if rec is not None:
        rec.update(q=q, k=k)
    plain_attn = cfg["train"].get("precision", "fp32") == "fp32"
    if fast and _HAS_SDPA and not m["attn_softcap"] and m["mup"] != "full" and plain_attn:
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    else:
        scores = softcap(attn_mm(cfg, q, k.transpose(-2, -1)) * attn_scale(cfg, hd),
                         m["attn_softcap"])
        mask = _causal_mask(T, h.device)
        scores = scores.masked_fill(mask, float("-inf"))
        o = attn_mm(cfg, torch.softmax(scores, dim=-1), v)
    o = o.transpose(1, 2).reshape(B, T, H * hd)
    return linear(cfg, o, p[prefix + "wo"])


def mla_attention(cfg, p, prefix, h, fast, rec=None):
    """Multi-head latent attention (canary's model/model_mla.h, written
    independently). q = wq h or wq_b rms(wq_a h); [c_kv | k_R] = wkv_a h;
    [k_C | v] = wkv_b rms(c_kv), k_C and v each [H * hd] (heads contiguous);
    q_h = [q_C,h ; q_R,h], k_h = [k_C,h ; k_R] (k_R shared by the heads);
    optional qk-norm over the hd + dr wide q_h, k_h; RoPE (table of dr) on
    their last dr; softmax scale 1/sqrt(hd + dr). rec, a dict, receives q and k as attended
    and the latents c_kv and c_q before their norms, for the probes."""
    m = cfg["model"]
    B, T, _ = h.shape
    H, hd, dr, dc = m["heads"], head_dim(cfg), m["rope_dim"], m["kv_rank"]
    dqk = hd + dr
    if m["q_rank"] > 0:
        cq_raw = linear(cfg, h, p[prefix + "wq_a"])
        cq = apply_norm(cq_raw, p[prefix + "q_latent_norm.gain"], "rmsnorm", fast)
        q = linear(cfg, cq, p[prefix + "wq_b"])
        if rec is not None:
            rec["cq"] = cq_raw
    else:
        q = linear(cfg, h, p[prefix + "wq"])
    q = q.view(B, T, H, dqk)
    kva = linear(cfg, h, p[prefix + "wkv_a"])
    ckv, kr = kva[..., :dc], kva[..., dc:]
    kvb = linear(cfg, apply_norm(ckv, p[prefix + "kv_latent_norm.gain"], "rmsnorm", fast),
                   p[prefix + "wkv_b"])
    kc = kvb[..., :H * hd].reshape(B, T, H, hd)
    v = kvb[..., H * hd:].reshape(B, T, H, hd)
    k = torch.cat([kc, kr.unsqueeze(2).expand(B, T, H, dr)], dim=-1)
    if m["qk_norm"]:
        q = apply_norm(q, p[prefix + "q_norm.gain"], m["norm"], fast)
        k = apply_norm(k, p[prefix + "k_norm.gain"], m["norm"], fast)
    if dr > 0:
        cos, sin = rope_tables(T, dr, h.dtype, h.device)
        rot = apply_rope_complex if fast else apply_rope
        q = torch.cat([q[..., :hd], rot(q[..., hd:], cos, sin)], dim=-1)
        k = torch.cat([k[..., :hd], rot(k[..., hd:], cos, sin)], dim=-1)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    if rec is not None:
        rec.update(q=q, k=k, ckv=ckv)
    scores = softcap(attn_mm(cfg, q, k.transpose(-2, -1)) * attn_scale(cfg, dqk),
                     m["attn_softcap"])
    scores = scores.masked_fill(_causal_mask(T, h.device), float("-inf"))
    o = attn_mm(cfg, torch.softmax(scores, dim=-1), v).transpose(1, 2).reshape(B, T, H * hd)
    return linear(cfg, o, p[prefix + "wo"])



class _BF16Linear(torch.autograd.Function):
    """x @ w.T with both operands rounded to bf16 (round to nearest even), and in backward both
    products on rounded operands too: dx = bf16(g) @ bf16(w), dw = bf16(g).T @ bf16(x), as
    canary's train.precision = bf16 (accumulation in the operands' dtype)."""

    @staticmethod
    def forward(ctx, x, w):
        xr, wr = bf16(x), bf16(w)
        ctx.save_for_backward(xr, wr)
        return xr @ wr.t()

    @staticmethod
    def backward(ctx, g):
        xr, wr = ctx.saved_tensors
        gr = bf16(g)
        gx = gr @ wr
        gw = gr.reshape(-1, gr.shape[-1]).t() @ xr.reshape(-1, xr.shape[-1])
        return gx, gw


class _BF16Matmul(torch.autograd.Function):
    """a @ b with both operands rounded to bf16, and the incoming gradient rounded in backward:
    da = bf16(g) @ bf16(b).T, db = bf16(a).T @ bf16(g) (attention's products under bf16)."""

    @staticmethod
    def forward(ctx, a, b):
        ar, br = bf16(a), bf16(b)
        ctx.save_for_backward(ar, br)
        return ar @ br

    @staticmethod
    def backward(ctx, g):
        ar, br = ctx.saved_tensors
        gr = bf16(g)
        return gr @ br.transpose(-2, -1), ar.transpose(-2, -1) @ gr


def attn_mm(cfg, a, b):
    """One of attention's products (q k^T or p v) in the run's precision."""
    t = cfg["train"]
    if t.get("precision", "fp32") == "bf16" and t.get("bf16_attention", True):
        return _BF16Matmul.apply(a, b)
    return a @ b


def bf16(t):
    """t rounded to bfloat16 and back to its dtype."""
    return t.to(torch.bfloat16).to(t.dtype)


def linear(cfg, x, w):
    """A linear layer in the run's precision (train.precision)."""
    if cfg["train"].get("precision", "fp32") == "bf16":
        return _BF16Linear.apply(x, w)
    return F.linear(x, w)

def gelu_tanh(u):
    return 0.5 * u * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (u + 0.044715 * u * u * u)))


def mlp(cfg, p, prefix, h, fast):
    a = linear(cfg, h, p[prefix + "w1"])
    if cfg["model"]["mlp"] == "gelu":
        a = F.gelu(a, approximate="tanh") if fast else gelu_tanh(a)
    else:
        b = linear(cfg, h, p[prefix + "w3"])
        a = (F.silu(a) if fast else a * torch.sigmoid(a)) * b
    return linear(cfg, a, p[prefix + "w2"])


def route_plain(r, k, cap):
    """Routing written out: sel [N, k] the k largest logits per token (descending, ties to the
    lower expert), keep [N, k] whether the pair fits the expert's capacity, served by choice rank
    j, then token order."""
    N, E = r.shape
    rd = r.tolist()
    sel = torch.tensor([sorted(range(E), key=lambda e: (-row[e], e))[:k] for row in rd],
                       dtype=torch.long)
    fill = [0] * E
    keep = torch.zeros(N, k, dtype=torch.bool)
    for j in range(k):
        for t in range(N):
            e = int(sel[t, j])
            if fill[e] < cap:
                keep[t, j] = True
                fill[e] += 1
    return sel, keep


def route_fast(r, k, cap):
    """route_plain vectorised (the benchmark's fast mode): a stable sort of -r keeps ties in
    expert order; a running count over the pairs in (choice rank, token) order gives each pair's
    place in its expert's queue."""
    N, E = r.shape
    sel = torch.sort(-r, dim=-1, stable=True).indices[:, :k]
    onehot = F.one_hot(sel.t().reshape(-1), E)  # [k·N, E], rank-major
    place = (onehot.cumsum(0) * onehot).sum(-1)  # 1-based place in the queue
    return sel, (place <= cap).reshape(k, N).t()


def moe(cfg, p, prefix, h, fast, aux, rec=None):
    """The MoE feed-forward (canary's model/moe.h, written independently):
      r = router logits, p = softmax(r), lse = logsumexp(r) per token;
      the k largest logits per token (ties: lower expert index), descending;
      gate = p of the chosen expert, or renormalised over the chosen k;
      tokens are routed in groups of G consecutive tokens (model.moe_group, 0 -> seq_len):
      capacity c = min(G, max(1, ceil(capacity_factor * k * G / E))) per group, pairs
      served by choice rank, then token order within the group; dropped pairs add nothing;
      out = sum over kept pairs of gate * expert(x) + sum of shared experts(x).
    Appends (balance, router_z) to aux: balance = balance_loss * E * mean over groups of
    sum f_i P_i with f_i = chosen pairs of i in the group / (G k) (not differentiated), P_i =
    mean p_i over the group; router_z = router_z_loss * mean(lse^2). rec, a dict, receives the
    routing (sel, keep, probs, lse) for the probes."""
    m, o = cfg["model"], cfg["optim"]
    E, k = m["experts"], m["top_k"]
    B, T, C = h.shape
    N = B * T
    G = m["moe_group"] or T
    assert N % G == 0, "moe_group must divide the batch's tokens"
    x = h.reshape(N, C)
    r = linear(cfg, x, p[prefix + "router"])
    lse = torch.logsumexp(r, dim=-1)
    probs = torch.softmax(r, dim=-1)
    cap = min(G, max(1, math.ceil(m["capacity_factor"] * k * G / E)))
    route = route_fast if fast else route_plain
    sels, keeps = zip(*(route(r.detach()[g:g + G], k, cap) for g in range(0, N, G)))
    sel, keep = torch.cat(sels), torch.cat(keeps)
    if rec is not None:
        rec.update(sel=sel, keep=keep, probs=probs, lse=lse)
    chosen = probs.gather(1, sel)
    gates = chosen / chosen.sum(dim=-1, keepdim=True) if m["gate_renorm"] else chosen
    out = torch.zeros_like(x)
    for e in range(E):
        ts, js = torch.nonzero((sel == e) & keep, as_tuple=True)
        if len(ts) == 0:
            continue
        y = mlp(cfg, p, "%sexperts.%d." % (prefix, e), x[ts], fast)
        out = out.index_add(0, ts, gates[ts, js].unsqueeze(-1) * y)
    for s_ in range(m["shared_experts"]):
        out = out + mlp(cfg, p, "%sshared.%d." % (prefix, s_), x, fast)
    groups = N // G
    counts = F.one_hot(sel.reshape(groups, G * k), E).sum(1).to(probs.dtype)  # [groups, E]
    f = counts / (G * k)
    balance = o["balance_loss"] * E * (f * probs.reshape(groups, G, E).mean(dim=1)).sum(-1).mean()
    router_z = o["router_z_loss"] * (lse * lse).mean()
    if aux is not None:
        aux.append((balance, router_z))
    return out.reshape(B, T, C)


def forward(cfg, params, x, fast=False, aux=None, rec=None):
    """Logits [B, T, V] for integer tokens x [B, T].
    fast=False: every op written out (fixture mode); fast=True: fused kernels.
    aux, a list, receives (balance, router_z) of every MoE block; rec, a list, a dict per block
    of what the probes look at (tests/torch_probes.py)."""
    m = cfg["model"]
    T = x.shape[1]
    h = F.embedding(x, params["tok_embed"])
    if m["pos"] == "learned":
        h = h + params["pos_embed"][:T]
        rope = None
    else:
        rope = rope_tables(T, head_dim(cfg), h.dtype, h.device)
    for i in range(m["layers"]):
        pre = "blocks.%d." % i
        r = {} if rec is not None else None
        a = apply_norm(h, params[pre + "ln1.gain"], m["norm"], fast)
        if m["attention"] == "mla":
            h = h + mla_attention(cfg, params, pre + "attn.", a, fast, r)
        else:
            h = h + attention(cfg, params, pre + "attn.", a, rope, fast, r)
        a = apply_norm(h, params[pre + "ln2.gain"], m["norm"], fast)
        if is_moe_block(cfg, i):
            h = h + moe(cfg, params, pre + "mlp.", a, fast, aux, r)
        else:
            h = h + mlp(cfg, params, pre + "mlp.", a, fast)
        if rec is not None:
            r["resid"] = h
            rec.append(r)
    h = apply_norm(h, params["final_norm.gain"], m["norm"], fast)
    return linear(cfg, h, params["head"])


def loss_parts(cfg, logits, y):
    """(total, ce, z) with logZ = logsumexp(logits) per token,
    ce = mean(logZ - logit[y]), z = z_loss * mean(logZ^2), total = ce + z, of the logits
    soft-capped first when model.final_softcap > 0."""
    logits = softcap(logits, cfg["model"]["final_softcap"])
    logz = torch.logsumexp(logits, dim=-1)
    tgt = logits.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    ce = (logz - tgt).mean()
    z = cfg["optim"]["z_loss"] * (logz * logz).mean()
    return ce + z, ce, z


def aux_parts(aux):
    """(balance, router_z): the means over the MoE blocks of the scaled
    auxiliary losses collected by forward (0, 0 for a dense model)."""
    if not aux:
        return 0.0, 0.0
    n = len(aux)
    return sum(b for b, _ in aux) / n, sum(z for _, z in aux) / n


# ---------------------------------------------------------------------------
# Schedule, clipping, AdamW
# ---------------------------------------------------------------------------


def lr_at(cfg, t):
    """Learning rate for 0-based step t (linear warmup, then the schedule)."""
    o = cfg["optim"]
    eta, lo, W = o["lr"], o["min_lr"], o["warmup_steps"]
    if t < W:
        return eta * (t + 1) / W
    p = (t - W) / max(1, cfg["train"]["steps"] - W)
    if o["schedule"] == "cosine":
        return lo + (eta - lo) * 0.5 * (1.0 + math.cos(math.pi * p))
    if o["schedule"] == "linear":
        return eta + (lo - eta) * p
    return eta


def global_grad_norm(grads):
    """sqrt of the sum of squares of every gradient entry (in grad dtype)."""
    sq = torch.zeros((), dtype=grads[0].dtype)
    for g in grads:
        sq = sq + (g * g).sum()
    return sq.sqrt()


def clip_grads(grads, clip):
    """Scale all gradients in place by clip/norm when norm > clip > 0.
    Returns (norm before clipping as float, whether clipping happened)."""
    norm = float(global_grad_norm(grads))
    if clip > 0 and norm > clip:
        scale = clip / norm
        for g in grads:
            g.mul_(scale)
        return norm, True
    return norm, False


class AdamW:
    """Hand-written AdamW with canary's two weight-decay modes.

    Per element with n = t + 1:
      m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
      delta = (m / (1-b1^n)) / (sqrt(v / (1-b2^n)) + eps)
    2-D tensors, independent: theta -= lr_t*delta + s_t*wd*theta  (s_t = lr_t/lr)
    2-D tensors, coupled:     theta -= lr_t*(delta + wd*theta)
    other tensors:            theta -= lr_t*delta
    The decay term always uses theta from before the update. StableAdamW (optim.stable_adamw):
    per tensor lr_t -> lr_t / max(1, sqrt(mean(g^2 / max(v / (1-b2^n), eps^2)))) with v already
    updated, for the delta term and a coupled decay; an independent decay is not scaled.
    self.stable_factors holds the last step's factors (names order).
    """

    def __init__(self, cfg, names, params):
        o = cfg["optim"]
        self.cfg = cfg
        self.names = list(names)
        self.b1, self.b2, self.eps = o["beta1"], o["beta2"], o["eps"]
        self.wd, self.mode, self.peak = o["weight_decay"], o["wd_mode"], o["lr"]
        self.m = [torch.zeros_like(params[n]) for n in self.names]
        self.v = [torch.zeros_like(params[n]) for n in self.names]
        self.decay = [decays(n, params[n].shape) for n in self.names]
        self.stable = bool(o.get("stable_adamw", False))
        self.stable_factors = []
        self.lr_scale = [lr_scale(cfg, n) for n in self.names]

    @torch.no_grad()
    def step(self, params, grads, t):
        """Update params (dict, in place) from grads (list in self.names order)
        for 0-based step t. Returns lr_t."""
        lr = lr_at(self.cfg, t)
        s = lr / self.peak if self.peak != 0 else 0.0
        n = t + 1
        bc1 = 1.0 - self.b1 ** n
        bc2 = 1.0 - self.b2 ** n
        self.stable_factors = []
        for name, g, m, v, dec, sc in zip(self.names, grads, self.m, self.v, self.decay,
                                          self.lr_scale):
            w = params[name]
            m.mul_(self.b1).add_(g, alpha=1.0 - self.b1)
            v.mul_(self.b2).addcmul_(g, g, value=1.0 - self.b2)
            lr_w = lr * sc  # muParam's factor (1 without it)
            if self.stable:
                rms = float((g * g / torch.clamp(v / bc2, min=self.eps ** 2)).mean().sqrt())
                self.stable_factors.append(1.0 / max(1.0, rms))
                lr_w = lr_w / max(1.0, rms)
            # Decay first (uses the pre-update theta; delta does not depend on theta).
            if dec and self.wd != 0.0:
                factor = s * self.wd if self.mode == "independent" else lr_w * self.wd
                w.mul_(1.0 - factor)
            denom = (v / bc2).sqrt_().add_(self.eps)
            w.addcdiv_(m, denom, value=-lr_w / bc1)
        return lr


# ---------------------------------------------------------------------------
# One training step
# ---------------------------------------------------------------------------


def make_leaf_params(params, dtype=None):
    """Copies of the weights as leaf tensors that require grad."""
    out = {}
    for k, w in params.items():
        w = w.detach().clone()
        if dtype is not None:
            w = w.to(dtype)
        out[k] = w.requires_grad_(True)
    return out


def qk_max_logits(cfg, params, x):
    """[layers, heads] the max signed pre-softmax logit q.k/sqrt(d_qk) over the causal pairs of
    every sequence of x: QK-clip's S_h (before any soft-capping)."""
    rec = []
    with torch.no_grad():
        forward(cfg, params, x, rec=rec)
    T = x.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    rows = []
    for r in rec:
        z = (r["q"] @ r["k"].transpose(-2, -1)) * attn_scale(cfg, r["q"].shape[-1])
        rows.append(z.masked_fill(~causal, float("-inf")).amax(dim=(0, 2, 3)))
    return torch.stack(rows)


def qk_clip(cfg, params, S):
    """QK-clip after an update: eta = min(1, tau / S) per head; the head's query rows times
    eta^alpha and key rows times eta^(1 - alpha); with MLA the head's rope query rows times eta,
    its key-content rows of wkv_b times eta^(1 - alpha), the shared rope key and V untouched.
    Returns eta [layers, heads]; the weights are left alone with qk_clip_log_only."""
    m, o = cfg["model"], cfg["optim"]
    tau, alpha = o["qk_clip"], o["qk_clip_alpha"]
    eta = torch.where(S > tau, tau / S, torch.ones_like(S))
    if o["qk_clip_log_only"]:
        return eta
    hd, dr = head_dim(cfg), m["rope_dim"]
    with torch.no_grad():
        for l in range(m["layers"]):
            pre = "blocks.%d.attn." % l
            for h in range(m["heads"]):
                e = float(eta[l, h])
                if e >= 1.0:
                    continue
                if m["attention"] == "mla":
                    wq = params[pre + ("wq_b" if m["q_rank"] > 0 else "wq")]
                    dqk = hd + dr
                    wq[h * dqk:h * dqk + hd] *= e ** alpha
                    wq[h * dqk + hd:(h + 1) * dqk] *= e
                    params[pre + "wkv_b"][h * hd:(h + 1) * hd] *= e ** (1 - alpha)
                else:
                    params[pre + "wq"][h * hd:(h + 1) * hd] *= e ** alpha
                    params[pre + "wk"][h * hd:(h + 1) * hd] *= e ** (1 - alpha)
    return eta


def loss_and_grads(cfg, params, names, x, y, fast=False):
    """Forward + backward. Returns ((total, ce, z) detached, grads list)."""
    aux = []
    logits = forward(cfg, params, x, fast, aux)
    total, ce, z = loss_parts(cfg, logits, y)
    balance, router_z = aux_parts(aux)
    total = total + balance + router_z
    return (total.detach(), ce.detach(), z.detach()), grads_of(total, params, names)


def grads_of(total, params, names):
    """d total / d params[n] for n in names; an expert that got no token has a
    zero gradient (autograd reports it as unused)."""
    grads = torch.autograd.grad(total, [params[n] for n in names], allow_unused=True)
    return [torch.zeros_like(params[n]) if g is None else g for n, g in zip(names, grads)]


def train_step(cfg, params, names, opt, x, y, t, fast=False):
    """Forward, backward, clip, AdamW for 0-based step t.
    Returns dict with the loss (before the update), grad norm, clipped flag, lr."""
    (total, ce, z), grads = loss_and_grads(cfg, params, names, x, y, fast)
    norm, clipped = clip_grads(grads, cfg["optim"]["clip"])
    lr = opt.step(params, grads, t)
    return {"loss": total, "ce": ce, "z": z, "grad_norm": norm, "clipped": clipped, "lr": lr}


# ---------------------------------------------------------------------------
# Muon
# ---------------------------------------------------------------------------

# Quintic Newton-Schulz coefficients: each iteration maps every singular value
# sigma of X to a*sigma + b*sigma^3 + c*sigma^5.
NS_COEFFS = (3.4445, -4.7750, 2.0315)
NS_EPS = 1e-7

_MUON_RE = re.compile(r"^blocks\.\d+\.(attn\.(wq|wk|wv|wo|wq_a|wq_b|wkv_a|wkv_b)|"
                      r"mlp\.(w1|w2|w3|router)|"
                      r"mlp\.(experts|shared)\.\d+\.(w1|w2|w3))$")


def is_muon_matrix(name):
    """Hidden 2-D matrices (attention, MLP, expert and router weights of every
    block) are updated by Muon; everything else (embeddings, head, gains) by
    AdamW."""
    return _MUON_RE.match(name) is not None


def newton_schulz(U, steps, coeffs=NS_COEFFS, eps=NS_EPS):
    """Approximate orthogonalisation of the 2-D tensor U, in U's dtype.

    X = U (transposed when rows > cols, so that X X^T is the small Gram
    matrix); X /= ||X||_F + eps; then `steps` times
        A = X X^T;  Bm = b A + c A A;  X = a X + Bm X
    and transpose back. Returns a new tensor of U's shape."""
    a, b, c = coeffs
    X = U
    transposed = U.shape[0] > U.shape[1]
    if transposed:
        X = X.t()
    X = X / (torch.linalg.norm(X) + eps)
    for _ in range(steps):
        A = X @ X.t()
        Bm = b * A + c * (A @ A)
        X = a * X + Bm @ X
    if transposed:
        X = X.t()
    return X.contiguous()


def muon_shape_scale(kind, rows, cols):
    """Update scale: shape -> sqrt(max(1, rows/cols)); rms_match -> 0.2*sqrt(max(rows, cols))."""
    if kind == "shape":
        return math.sqrt(max(1.0, rows / cols))
    return 0.2 * math.sqrt(max(rows, cols))


class Muon:
    """Muon for the hidden matrices, the hand-written AdamW for the rest.

    For 0-based step t, lr_t = lr_at(cfg, t), s_t = lr_t / optim.lr,
    lr_m = lr_t * muon_lr_scale, lambda = muon_weight_decay. Per Muon matrix W
    [rows, cols] with (already clipped) gradient G and buffer B (init 0):
        B = beta B + (1 - beta) G
        U = (1 - beta) G + beta B            (Nesterov)
        O = newton_schulz(U, ns_steps)
        W -= lr_m * scale * O + d * W_old,   d = lr_m * lambda  (coupled)
                                             d = s_t * lambda   (independent)
    Other tensors: AdamW exactly as with optim.name = adamw (same t).
    """

    def __init__(self, cfg, names, params):
        o = cfg["optim"]
        self.cfg = cfg
        self.names = list(names)
        self.beta, self.steps = o["momentum"], o["ns_steps"]
        self.kind, self.lr_scale = o["muon_scale"], o["muon_lr_scale"]
        self.wd, self.mode, self.peak = o["muon_weight_decay"], o["wd_mode"], o["lr"]
        self.is_muon = [is_muon_matrix(n) for n in self.names]
        for n, mu in zip(self.names, self.is_muon):
            assert not mu or params[n].dim() == 2, n
        self.muon_names = [n for n, mu in zip(self.names, self.is_muon) if mu]
        self.adam_names = [n for n, mu in zip(self.names, self.is_muon) if not mu]
        self.adamw = AdamW(cfg, self.adam_names, params)
        self.momentum = {n: torch.zeros_like(params[n]) for n in self.muon_names}

    @torch.no_grad()
    def step(self, params, grads, t):
        """Update params (dict, in place) from grads (list in self.names order)
        for 0-based step t. Returns lr_t."""
        lr = lr_at(self.cfg, t)
        s = lr / self.peak if self.peak != 0 else 0.0
        lr_m = lr * self.lr_scale
        decay = lr_m * self.wd if self.mode == "coupled" else s * self.wd
        beta = self.beta
        adam_grads = []
        for name, g, mu in zip(self.names, grads, self.is_muon):
            if not mu:
                adam_grads.append(g)
                continue
            w = params[name]
            buf = self.momentum[name]
            buf.mul_(beta).add_(g, alpha=1.0 - beta)
            u = (1.0 - beta) * g + beta * buf
            o = newton_schulz(u, self.steps)
            scale = muon_shape_scale(self.kind, w.shape[0], w.shape[1])
            update = (lr_m * scale) * o
            if decay != 0.0:
                update = update + decay * w
            w.sub_(update)
        self.adamw.step(params, adam_grads, t)
        return lr


def make_optimizer(cfg, names, params):
    """AdamW or Muon according to optim.name."""
    if cfg["optim"]["name"] == "muon":
        return Muon(cfg, names, params)
    return AdamW(cfg, names, params)
