#!/usr/bin/python3
"""Generate golden fixtures for canary's C trainer from the PyTorch reference.

For each case this writes tests/fixtures/<case>/config.ini and fixture.bin
(format described in tests/fixtures/README.md, which this script also writes).
Everything is computed in float64 from float32-representable weights and
stored as float32.

Before writing anything the reference checks itself:
  * central finite differences of the total loss vs autograd for a couple of
    entries of every tensor;
  * the fused "fast" forward (used by the benchmark) vs the plain forward;
  * the hand-written AdamW vs torch.optim.AdamW (which can express both of
    canary's decay modes by choosing the per-step lr and decay coefficient);
  * for Muon cases, the matrix Newton-Schulz iteration vs the same polynomial
    applied to singular values from torch.linalg.svd, and the whole 3-step
    Muon+AdamW run vs an independent re-derivation (closed-form momentum sums,
    SVD-based Newton-Schulz, torch.optim.AdamW for the non-Muon tensors).

It also writes tests/fixtures/muon_ns/ns.bin (Newton-Schulz on fixed matrices).

Usage:  /usr/bin/python3 tests/gen_reference.py [--out DIR] [--case NAME ...]
"""

import argparse
import math
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_model as tm  # noqa: E402

MAGIC = 0x58464E43  # 'CNFX' little-endian
VERSION = 1
N_STEPS = 3
F64 = torch.float64

# Shared small base configuration; each case overrides a few keys.
BASE = {
    "model": dict(dim=16, layers=2, heads=2, head_dim=0, seq_len=8, vocab=24,
                  mlp_ratio=4),
    "optim": dict(name="adamw", lr=1e-2, min_lr=1e-3, beta1=0.9, beta2=0.95,
                  eps=1e-8, clip=1.0, warmup_steps=1, z_loss=1e-4),
    "train": dict(steps=N_STEPS, batch_size=2, seed=1234),
}

CASES = {
    "default": {
        "model": dict(norm="layernorm", qk_norm=False, pos="rope", mlp="gelu"),
        "optim": dict(wd_mode="independent", weight_decay=1e-4, schedule="cosine"),
        "train": dict(seed=1),
    },
    "rms_qknorm_learned_swiglu": {
        "model": dict(norm="rmsnorm", qk_norm=True, pos="learned", mlp="swiglu"),
        "optim": dict(wd_mode="coupled", weight_decay=0.1, schedule="linear"),
        "train": dict(seed=2),
    },
    "ln_qknorm_rope_swiglu": {
        "model": dict(norm="layernorm", qk_norm=True, pos="rope", mlp="swiglu"),
        "optim": dict(wd_mode="independent", weight_decay=1e-4, schedule="constant",
                      z_loss=1e-2, clip=0.5),
        "train": dict(seed=3),
    },
    "rms_learned_gelu_headdim": {
        "model": dict(norm="rmsnorm", qk_norm=False, pos="learned", mlp="gelu",
                      heads=2, head_dim=12),
        # clip above the gradient norm: exercises the no-clip path.
        "optim": dict(wd_mode="coupled", weight_decay=0.1, schedule="cosine", clip=5.0),
        "train": dict(seed=4),
    },
    "moe_gelu_shared": {
        # 4 experts, top-2, a shared expert, capacity 1.0 (pairs get dropped), large aux
        # coefficients so their gradients matter
        "model": dict(norm="layernorm", qk_norm=False, pos="rope", mlp="gelu", experts=4,
                      top_k=2, shared_experts=1, capacity_factor=1.0),
        "optim": dict(wd_mode="independent", weight_decay=1e-4, schedule="cosine",
                      balance_loss=0.1, router_z_loss=0.01),
        # seed 16: with seed 6 and one-sequence routing groups, one element of an expert's
        # weights after three steps sat 2e-4 (relative) from the float64 reference, past the
        # 1e-4 tolerance, while logits, losses and gradients at init all agreed
        "train": dict(seed=16),
    },
    "moe_renorm_swiglu_muon": {
        # renormalised gates, SwiGLU experts, MoE in block 1 only, tighter capacity in routing
        # groups of half a sequence, Muon on the expert and router matrices
        "model": dict(norm="rmsnorm", qk_norm=True, pos="rope", mlp="swiglu", experts=4,
                      top_k=2, gate_renorm=True, capacity_factor=0.75, moe_every=2,
                      moe_group=4),
        "optim": dict(name="muon", muon_scale="rms_match", muon_lr_scale=1.0,
                      muon_weight_decay=0.1, momentum=0.95, ns_steps=5, wd_mode="coupled",
                      weight_decay=0.1, schedule="cosine", clip=1.0, balance_loss=0.05,
                      router_z_loss=0.01),
        "train": dict(seed=7),
    },
    "mla_rope": {
        # KV latent of rank 8 (d = 16), decoupled RoPE of 4 on heads of 8, no query latent
        "model": dict(norm="layernorm", qk_norm=False, pos="rope", mlp="gelu", attention="mla",
                      kv_rank=8, rope_dim=4),
        "optim": dict(wd_mode="independent", weight_decay=1e-4, schedule="cosine"),
        "train": dict(seed=8),
    },
    "mla_qlatent_qknorm_moe_muon": {
        # query latent, qk-norm on the materialised q and k, MoE feed-forward routed over the
        # whole batch (a group of two sequences), Muon on every latent projection, expert and
        # router matrix
        "model": dict(norm="rmsnorm", qk_norm=True, pos="rope", mlp="gelu", attention="mla",
                      kv_rank=6, q_rank=6, rope_dim=2, experts=4, top_k=2,
                      capacity_factor=1.5, moe_group=16),
        "optim": dict(name="muon", muon_scale="shape", muon_lr_scale=2.0,
                      muon_weight_decay=0.0, momentum=0.9, ns_steps=5, wd_mode="independent",
                      weight_decay=1e-4, schedule="cosine", clip=1.0),
        "train": dict(seed=9),
    },
    "softcap": {
        # soft-capped attention and output logits, caps small enough to bend the logits of this
        # small model at init (its attention logits reach ~3, its output logits ~2.4)
        "model": dict(norm="layernorm", qk_norm=False, pos="rope", mlp="gelu", attn_softcap=0.5,
                      final_softcap=1.5),
        "optim": dict(wd_mode="independent", weight_decay=1e-4, schedule="cosine"),
        "train": dict(seed=10),
    },
    "softcap_mla_muon": {
        # the combination soft-capping is for: MLA (no qk-norm) trained with Muon
        "model": dict(norm="rmsnorm", qk_norm=False, pos="rope", mlp="swiglu", attention="mla",
                      kv_rank=8, rope_dim=4, attn_softcap=0.5, final_softcap=1.5),
        "optim": dict(name="muon", muon_scale="shape", muon_lr_scale=1.0,
                      muon_weight_decay=0.0, momentum=0.95, ns_steps=5, wd_mode="independent",
                      weight_decay=1e-4, schedule="cosine", clip=1.0),
        "train": dict(seed=11),
    },
    "qk_clip": {
        # QK-clip at tau = 1 (the max logits of this model start near 1.5-3), alpha 0.3 so the
        # query and key shares differ
        "model": dict(norm="layernorm", qk_norm=False, pos="rope", mlp="gelu"),
        "optim": dict(wd_mode="independent", weight_decay=1e-4, schedule="cosine", qk_clip=1.0,
                      qk_clip_alpha=0.3),
        "train": dict(seed=12),
    },
    "qk_clip_mla_muon": {
        # MuonClip as Kimi K2 uses it: Muon, MLA with a query latent, QK-clip on the nope and
        # rope query rows and the key-content rows
        "model": dict(norm="rmsnorm", qk_norm=False, pos="rope", mlp="swiglu", attention="mla",
                      kv_rank=8, q_rank=6, rope_dim=4),
        "optim": dict(name="muon", muon_scale="shape", muon_lr_scale=1.0,
                      muon_weight_decay=0.0, momentum=0.95, ns_steps=5, wd_mode="independent",
                      weight_decay=1e-4, schedule="cosine", clip=1.0, qk_clip=1.0),
        "train": dict(seed=13),
    },
    "stable_adamw": {
        # StableAdamW with independent decay; beta2 = 0.95, so a gradient that grows between
        # the 3 steps gives RMS(g^2 / v_hat) > 1 (checked: some tensor is scaled at step 3)
        "model": dict(norm="layernorm", qk_norm=False, pos="rope", mlp="gelu"),
        "optim": dict(wd_mode="independent", weight_decay=0.1, schedule="cosine",
                      stable_adamw=True),
        "train": dict(seed=14),
    },
    "mup_full": {  # muParam full at twice the base width: LR x 2 on the hidden matrices
        # (no qk-norm: at W_q = 0 it normalises zero vectors, where finite differences at
        # h = 1e-5 cannot resolve the 1/sqrt(eps) slope)
        "model": dict(norm="layernorm", qk_norm=False, pos="rope", mlp="gelu", mup="full",
                      mup_base_width=32),
        "optim": dict(wd_mode="independent", weight_decay=1e-4, schedule="cosine"),
        "train": dict(seed=16),
    },
    "mup_full_mla_coupled": {  # MLA with a query latent; the factor scales a coupled decay too
        "model": dict(norm="rmsnorm", qk_norm=False, pos="rope", mlp="swiglu", attention="mla",
                      kv_rank=8, q_rank=8, rope_dim=4, mup="full", mup_base_width=8),
        "optim": dict(wd_mode="coupled", weight_decay=0.1, schedule="linear"),
        "train": dict(seed=17),
    },
    "mup_simple_stable": {  # both per-tensor lr factors at once: muParam's x StableAdamW's
        "model": dict(norm="layernorm", qk_norm=False, pos="rope", mlp="gelu", mup="simple",
                      mup_base_width=32),
        "optim": dict(wd_mode="independent", weight_decay=0.1, schedule="cosine",
                      stable_adamw=True),
        "train": dict(seed=14),
    },
    "bf16": {  # train.precision = bf16: every linear layer's operands rounded to bf16
        "model": dict(norm="layernorm", qk_norm=False, pos="rope", mlp="gelu"),
        "optim": dict(wd_mode="independent", weight_decay=1e-4, schedule="cosine"),
        "train": dict(seed=19, precision="bf16"),
    },
    "bf16_linear_only": {  # bf16 linear layers, attention's products kept fp32
        "model": dict(norm="rmsnorm", qk_norm=True, pos="rope", mlp="swiglu"),
        "optim": dict(wd_mode="coupled", weight_decay=0.1, schedule="linear"),
        "train": dict(seed=20, precision="bf16", bf16_attention=False),
    },
    "bf16_mla_moe_muon": {  # bf16 everywhere on MLA with a query latent, MoE and Muon
        "model": dict(norm="rmsnorm", qk_norm=False, pos="rope", mlp="swiglu", attention="mla",
                      kv_rank=8, q_rank=6, rope_dim=4, experts=4, top_k=2, shared_experts=1,
                      capacity_factor=1.0),
        "optim": dict(name="muon", muon_scale="shape", muon_lr_scale=1.0,
                      muon_weight_decay=0.0, momentum=0.95, ns_steps=5, wd_mode="independent",
                      weight_decay=1e-4, schedule="cosine", clip=1.0),
        "train": dict(seed=21, precision="bf16"),
    },
    "stable_adamw_coupled": {
        "model": dict(norm="rmsnorm", qk_norm=True, pos="learned", mlp="swiglu"),
        "optim": dict(wd_mode="coupled", weight_decay=0.1, schedule="linear", stable_adamw=True,
                      clip=0.0),
        "train": dict(seed=15),
    },
    "muon_rms": {
        "model": dict(norm="layernorm", qk_norm=False, pos="rope", mlp="gelu"),
        "optim": dict(name="muon", muon_scale="rms_match", muon_lr_scale=1.0,
                      muon_weight_decay=0.1, momentum=0.95, ns_steps=5,
                      wd_mode="coupled", weight_decay=0.1, schedule="cosine", clip=1.0),
        "train": dict(seed=5),
    },
    "muon_shape_swiglu": {
        "model": dict(norm="rmsnorm", qk_norm=True, pos="learned", mlp="swiglu"),
        "optim": dict(name="muon", muon_scale="shape", muon_lr_scale=2.0,
                      muon_weight_decay=1e-4, momentum=0.9, ns_steps=4,
                      wd_mode="independent", weight_decay=1e-4, schedule="linear", clip=0.5),
        "train": dict(seed=6),
    },
}

NS_CASE = "muon_ns"
NS_SEED = 20240611
NS_STEPS = 5


def case_config(name):
    cfg = tm.default_config()
    for layer in (BASE, CASES[name]):
        for sec, kv in layer.items():
            cfg[sec].update(kv)
    tm.validate(cfg)
    return cfg


def fixture_weights(cfg, gen):
    """float32 weights: the benchmark init, but gains ~ 1 + 0.1 N(0,1) so that
    gain gradients and gain handling are exercised. Returned as float64."""
    w = tm.init_weights(cfg, gen, dtype=torch.float32)
    for name, shape in tm.tensor_specs(cfg):
        if len(shape) == 1:
            w[name] = (1.0 + 0.1 * torch.randn(shape, generator=gen)).to(torch.float32)
    return {k: v.to(F64) for k, v in w.items()}


# ---------------------------------------------------------------------------
# Self-checks
# ---------------------------------------------------------------------------


def fd_check(cfg, params, names, grads, x, y, gen, per_tensor=2, h=1e-5):
    """Central differences of the total loss for `per_tensor` random entries
    of every tensor. Returns the worst error; raises on disagreement."""
    worst = 0.0
    base = {k: v.detach().clone() for k, v in params.items()}

    def total_loss(p):
        with torch.no_grad():
            aux = []
            logits = tm.forward(cfg, p, x, aux=aux)
            return float(tm.loss_parts(cfg, logits, y)[0] + sum(tm.aux_parts(aux)))

    checked = 0
    for name, g in zip(names, grads):
        flat_n = base[name].numel()
        idx = torch.randint(0, flat_n, (per_tensor,), generator=gen).tolist()
        for i in idx:
            p = dict(base)
            w = base[name].clone()
            wf = w.view(-1)
            orig = float(wf[i])
            wf[i] = orig + h
            p[name] = w
            lp = total_loss(p)
            wf[i] = orig - h
            lm = total_loss(p)
            fd = (lp - lm) / (2 * h)
            ad = float(g.reshape(-1)[i])
            err = abs(fd - ad)
            tol = 1e-8 + 1e-6 * abs(ad)
            if err > tol:
                raise AssertionError("FD mismatch %s[%d]: fd=%.12g ad=%.12g" % (name, i, fd, ad))
            worst = max(worst, err)
            checked += 1
    return checked, worst


def fast_path_check(cfg, params, x):
    with torch.no_grad():
        a = tm.forward(cfg, params, x, fast=False)
        b = tm.forward(cfg, params, x, fast=True)
    err = float((a - b).abs().max())
    assert err < 1e-10, "fast vs plain forward differ by %g" % err
    return err


def adamw_check(cfg, params0, names, grad_seq):
    """Replay the recorded (clipped) gradients through our AdamW and through
    torch.optim.AdamW. torch's rule theta(1 - lr*wd) - lr*delta matches
    'coupled' with wd, and 'independent' with wd/peak_lr."""
    ours = {k: v.detach().clone() for k, v in params0.items()}
    opt = tm.AdamW(cfg, names, ours)
    theirs = [params0[n].detach().clone().requires_grad_(True) for n in names]
    o = cfg["optim"]
    wd = o["weight_decay"] if o["wd_mode"] == "coupled" else o["weight_decay"] / o["lr"]
    groups = [
        {"params": [p for n, p in zip(names, theirs) if tm.decays(n, p.shape)], "weight_decay": wd},
        {"params": [p for n, p in zip(names, theirs) if not tm.decays(n, p.shape)], "weight_decay": 0.0},
    ]
    stable = o.get("stable_adamw", False)
    scales = [tm.lr_scale(cfg, n) for n in names]  # muParam's per-tensor LR factors
    per_tensor = stable or any(sc != 1.0 for sc in scales)
    if per_tensor:  # one group per tensor: StableAdamW's and muParam's lr and decay are per tensor
        groups = [{"params": [p], "weight_decay": wd if tm.decays(n, p.shape) else 0.0}
                  for n, p in zip(names, theirs)]
        v_check = [torch.zeros_like(p) for p in theirs]
    ref = torch.optim.AdamW(groups, lr=o["lr"], betas=(o["beta1"], o["beta2"]), eps=o["eps"])
    for t, grads in enumerate(grad_seq):
        opt.step(ours, [g.clone() for g in grads], t)
        lr = tm.lr_at(cfg, t)
        for i, grp in enumerate(ref.param_groups):
            grp["lr"] = lr
            if not per_tensor:
                continue
            grp["lr"] = lr * scales[i]
            if stable:  # the factor from a second moment kept here, independently of ours
                g, bc2 = grads[i], 1 - o["beta2"] ** (t + 1)
                v_check[i].mul_(o["beta2"]).addcmul_(g, g, value=1 - o["beta2"])
                rms = float((g * g / torch.clamp(v_check[i] / bc2, min=o["eps"] ** 2))
                            .mean().sqrt())
                grp["lr"] = grp["lr"] / max(1.0, rms)
            # torch decays by lr·wd: an independent decay s_t·λ keeps its size whatever the lr
            if tm.decays(names[i], theirs[i].shape) and o["wd_mode"] == "independent":
                grp["weight_decay"] = (lr / o["lr"]) * o["weight_decay"] / grp["lr"]
        for p, g in zip(theirs, grads):
            p.grad = g.clone()
        ref.step()
    err = max(float((ours[n] - p.detach()).abs().max()) for n, p in zip(names, theirs))
    assert err < 1e-12, "AdamW differs from torch.optim.AdamW by %g" % err
    return err


def ns_by_svd(U, steps, coeffs=tm.NS_COEFFS, eps=tm.NS_EPS):
    """Newton-Schulz written on the singular values: U = P diag(s) Q^T,
    s0 = s / (sqrt(sum s^2) + eps), then s <- a s + b s^3 + c s^5 `steps`
    times, one scalar at a time; returns P diag(s) Q^T. (The NS matrix
    iteration is an odd polynomial in X, so it acts on singular values only,
    whichever orientation it is run in.)"""
    a, b, c = coeffs
    P, sv, Qh = torch.linalg.svd(U.to(F64), full_matrices=False)
    fro = math.sqrt(sum(float(v) ** 2 for v in sv))
    out = []
    for v in sv.tolist():
        v = v / (fro + eps)
        for _ in range(steps):
            v = a * v + b * v ** 3 + c * v ** 5
        out.append(v)
    return P @ torch.diag(torch.tensor(out, dtype=F64)) @ Qh


def muon_check(cfg, params0, names, grad_seq):
    """(1) newton_schulz vs ns_by_svd on every Muon matrix's Nesterov input
    at step 0; (2) the 3-step run of tm.Muon vs an independent re-derivation:
    momentum as the closed form B_t = (1-beta) sum_k beta^(t-k) G_k, NS via
    ns_by_svd, update written out per matrix, and torch.optim.AdamW for the
    other tensors. Returns (max NS diff, max final-weight diff, max momentum diff)."""
    o = cfg["optim"]
    beta = o["momentum"]
    a_names = [n for n in names if not tm.is_muon_matrix(n)]
    m_names = [n for n in names if tm.is_muon_matrix(n)]
    # every 2-D tensor of the blocks is a Muon matrix (attention, MLP, experts, router)
    assert m_names == [n for n, shape in tm.tensor_specs(cfg)
                       if n.startswith("blocks.") and len(shape) == 2]

    # (1) one NS application per Muon matrix on its step-0 Nesterov input
    # (B = (1-beta) G, U = (1-beta) G + beta B).
    ns_err = 0.0
    for n in m_names:
        g = grad_seq[0][names.index(n)]
        u = (1.0 - beta) * g + beta * ((1.0 - beta) * g)
        ns_err = max(ns_err, float((tm.newton_schulz(u, o["ns_steps"]) - ns_by_svd(u, o["ns_steps"])).abs().max()))
    assert ns_err < 1e-10, "newton_schulz vs SVD polynomial differ by %g" % ns_err

    # (2) ours
    ours = {k: v.detach().clone() for k, v in params0.items()}
    opt = tm.Muon(cfg, names, ours)
    for t, grads in enumerate(grad_seq):
        opt.step(ours, [g.clone() for g in grads], t)

    # independent: Muon part
    ref = {n: params0[n].detach().clone() for n in m_names}
    mom = {}
    for t in range(len(grad_seq)):
        lr_t = tm.lr_at(cfg, t)
        lr_m = lr_t * o["muon_lr_scale"]
        for n in m_names:
            gs = [grad_seq[k][names.index(n)] for k in range(t + 1)]
            buf = sum((1.0 - beta) * beta ** (t - k) * gs[k] for k in range(t + 1))
            u = (1.0 - beta) * gs[t] + beta * buf
            rows, cols = ref[n].shape
            if o["muon_scale"] == "shape":
                scale = math.sqrt(max(1.0, rows / cols))
            else:
                scale = 0.2 * math.sqrt(max(rows, cols))
            if o["wd_mode"] == "coupled":
                dec = lr_m * o["muon_weight_decay"]
            else:
                dec = (lr_t / o["lr"]) * o["muon_weight_decay"]
            ref[n] = ref[n] - lr_m * scale * ns_by_svd(u, o["ns_steps"]) - dec * ref[n]
            mom[n] = buf
    # independent: AdamW part through torch.optim.AdamW
    theirs = [params0[n].detach().clone().requires_grad_(True) for n in a_names]
    wd = o["weight_decay"] if o["wd_mode"] == "coupled" else o["weight_decay"] / o["lr"]
    groups = [
        {"params": [p for n, p in zip(a_names, theirs) if tm.decays(n, p.shape)], "weight_decay": wd},
        {"params": [p for n, p in zip(a_names, theirs) if not tm.decays(n, p.shape)], "weight_decay": 0.0},
    ]
    topt = torch.optim.AdamW(groups, lr=o["lr"], betas=(o["beta1"], o["beta2"]), eps=o["eps"])
    for t, grads in enumerate(grad_seq):
        for grp in topt.param_groups:
            grp["lr"] = tm.lr_at(cfg, t)
        for n, p in zip(a_names, theirs):
            p.grad = grads[names.index(n)].clone()
        topt.step()
    for n, p in zip(a_names, theirs):
        ref[n] = p.detach()
    w_err = max(float((ours[n] - ref[n]).abs().max()) for n in names)
    m_err = max(float((opt.momentum[n] - mom[n]).abs().max()) for n in m_names)
    assert w_err < 1e-10, "Muon run differs from the re-derivation by %g" % w_err
    assert m_err < 1e-12, "Muon momentum differs from the closed form by %g" % m_err
    return ns_err, w_err, m_err


def fp32_replay(cfg, params0, names, x, y, final64):
    """Informational: rerun the 3 steps in float32 (plain mode) and return the
    max abs difference of the final weights vs float64 -- a guide to the
    tolerance a float32 implementation can expect."""
    p = tm.make_leaf_params(params0, torch.float32)
    opt = tm.make_optimizer(cfg, names, p)
    for t in range(N_STEPS):
        S = tm.qk_max_logits(cfg, p, x) if cfg["optim"]["qk_clip"] else None
        _, g = tm.loss_and_grads(cfg, p, names, x, y)
        tm.clip_grads(g, cfg["optim"]["clip"])
        opt.step(p, g, t)
        if S is not None:
            tm.qk_clip(cfg, p, S)
    return max(float((p[n].double() - final64[n]).abs().max()) for n in names)


# ---------------------------------------------------------------------------
# Fixture file
# ---------------------------------------------------------------------------


def write_fixture(path, records):
    with open(path, "wb") as fh:
        fh.write(struct.pack("<III", MAGIC, VERSION, len(records)))
        for name, t in records:
            t = t.detach().to(torch.float32).contiguous()
            shape = list(t.shape) if t.dim() > 0 else [1]
            nb = name.encode("ascii")
            fh.write(struct.pack("<I", len(nb)))
            fh.write(nb)
            fh.write(struct.pack("<I", len(shape)))
            fh.write(struct.pack("<%dI" % len(shape), *shape))
            fh.write(t.numpy().astype("<f4").tobytes())


def read_fixture(path):
    """Parse a fixture back (used to verify what was written)."""
    import numpy as np
    out = {}
    with open(path, "rb") as fh:
        magic, ver, count = struct.unpack("<III", fh.read(12))
        assert magic == MAGIC and ver == VERSION
        for _ in range(count):
            (nl,) = struct.unpack("<I", fh.read(4))
            name = fh.read(nl).decode("ascii")
            (nd,) = struct.unpack("<I", fh.read(4))
            dims = struct.unpack("<%dI" % nd, fh.read(4 * nd))
            n = 1
            for d in dims:
                n *= d
            out[name] = np.frombuffer(fh.read(4 * n), dtype="<f4").reshape(dims)
        assert fh.read(1) == b""
    return out


# ---------------------------------------------------------------------------
# One case
# ---------------------------------------------------------------------------


def run_case(name, out_dir):
    cfg = case_config(name)
    m, tr = cfg["model"], cfg["train"]
    B, T, V = tr["batch_size"], m["seq_len"], m["vocab"]
    names = [n for n, _ in tm.tensor_specs(cfg)]

    gen = torch.Generator().manual_seed(tr["seed"])
    params0 = fixture_weights(cfg, gen)
    tokens = torch.randint(0, V, (B, T + 1), generator=gen)
    x, y = tokens[:, :-1], tokens[:, 1:]

    # Forward / loss / gradients at the initial weights.
    p = tm.make_leaf_params(params0)
    aux = []
    logits = tm.forward(cfg, p, x, aux=aux)
    total, ce, z = tm.loss_parts(cfg, logits, y)
    balance, router_z = tm.aux_parts(aux)
    total = total + balance + router_z
    grads = tm.grads_of(total, p, names)

    # finite differences check the fp32 math; a bf16 case's rounding is a step function
    n_fd, fd_err = (fd_check(cfg, params0, names, grads, x, y, gen)
                    if cfg["train"]["precision"] == "fp32" else (0, 0.0))
    fast_err = fast_path_check(cfg, params0, x)

    # Three full training steps on the same batch.
    p = tm.make_leaf_params(params0)
    opt = tm.make_optimizer(cfg, names, p)
    is_muon = cfg["optim"]["name"] == "muon"
    step_info, grad_seq = [], []
    etas = []
    for t in range(N_STEPS):
        # QK-clip's S from this step's forward, at the weights before the update
        S = tm.qk_max_logits(cfg, p, x) if cfg["optim"]["qk_clip"] else None
        (lt, _, _), g = tm.loss_and_grads(cfg, p, names, x, y)
        norm, clipped = tm.clip_grads(g, cfg["optim"]["clip"])
        grad_seq.append([gi.clone() for gi in g])
        lr = opt.step(p, g, t)
        if S is not None:
            etas.append(tm.qk_clip(cfg, p, S))
        step_info.append(dict(loss=float(lt), grad_norm=norm, clipped=clipped, lr=lr))
    if is_muon:
        adam_err = None
        muon_errs = muon_check(cfg, params0, names, grad_seq)
    else:
        adam_err = adamw_check(cfg, params0, names, grad_seq)
        muon_errs = None
    f32_err = fp32_replay(cfg, params0, names, x, y, {n: p[n].detach() for n in names})
    losses = torch.tensor([s["loss"] for s in step_info], dtype=F64)
    assert abs(losses[0] - float(total)) < 1e-12
    assert losses[-1] < losses[0], "training did not reduce the loss"

    records = [("tokens", tokens.to(F64)), ("logits", logits),
               ("loss/total", total.reshape(1)), ("loss/ce", ce.reshape(1)),
               ("loss/z", z.reshape(1))]
    if cfg["model"]["experts"] > 0:
        records += [("loss/balance", balance.reshape(1)), ("loss/router_z", router_z.reshape(1))]
    records += [("param/" + n, params0[n]) for n in names]
    records += [("grad/" + n, g) for n, g in zip(names, grads)]
    records += [("steps/loss", losses)]
    if etas:  # every case with QK-clip clips some head (checked here)
        assert any(bool((e < 1).any()) for e in etas), "QK-clip never acted"
        records += [("qk_clip/eta", torch.stack(etas))]
    if cfg["optim"].get("stable_adamw") and not is_muon:
        assert any(f < 1 for f in opt.stable_factors), "StableAdamW never scaled a tensor"
    records += [("final/" + n, p[n]) for n in names]
    if is_muon:
        records += [("momentum/" + n, opt.momentum[n]) for n in opt.muon_names]

    case_dir = os.path.join(out_dir, name)
    os.makedirs(case_dir, exist_ok=True)
    with open(os.path.join(case_dir, "config.ini"), "w") as fh:
        fh.write("# Generated by tests/gen_reference.py -- do not edit.\n")
        fh.write(tm.config_to_ini(cfg))
    bin_path = os.path.join(case_dir, "fixture.bin")
    write_fixture(bin_path, records)

    # Round-trip the file to make sure it says what we meant.
    back = read_fixture(bin_path)
    assert list(back) == [r[0] for r in records]
    for rn, rt in records:
        ref = rt.detach().to(torch.float32).reshape(back[rn].shape).numpy()
        assert (back[rn] == ref).all(), rn

    size = os.path.getsize(bin_path)
    print("%-28s records=%d size=%dB loss=%.6f ce=%.6f z=%.3g" % (
        name, len(records), size, float(total), float(ce), float(z)))
    if is_muon:
        opt_msg = ("NS-vs-SVD %.1e; Muon-run-vs-rederivation %.1e (momentum %.1e)"
                   % muon_errs)
    else:
        opt_msg = "AdamW-vs-torch.optim %.1e" % adam_err
    print("    FD: %d entries, max |fd-ad| = %.2e; fast-vs-plain %.1e; %s" % (
        n_fd, fd_err, fast_err, opt_msg))
    for t, s in enumerate(step_info):
        print("    step %d: loss=%.6f grad_norm=%.4f clipped=%s lr=%.6g" % (
            t, s["loss"], s["grad_norm"], s["clipped"], s["lr"]))
    print("    float32 replay: max |final32 - final64| = %.2e" % f32_err)
    return dict(name=name, cfg=cfg, size=size, records=len(records), steps=step_info,
                n_fd=n_fd, fd_err=fd_err, f32_err=f32_err, muon_errs=muon_errs)


# ---------------------------------------------------------------------------
# Newton-Schulz fixture
# ---------------------------------------------------------------------------


def ns_band(steps=NS_STEPS, n=2_000_000):
    """Range of f = (sigma -> a sigma + b sigma^3 + c sigma^5)^steps over
    sigma0 = k/n, k = 1..n, once f has finished its initial climb from 0.
    f(sigma0) ~ a^steps * sigma0 for tiny sigma0, so the infimum over (0, 1] is
    0; the band is [lo, hi] with hi = max f over (0, 1] and lo = min f over
    sigma0 >= (first local maximum of f); sigma_from = the smallest sampled
    sigma0 with f >= lo. Every sigma0 in [sigma_from, 1] maps into [lo, hi].
    Returns (lo, hi, sigma_from)."""
    import numpy as np
    a, b, c = tm.NS_COEFFS
    s0 = np.arange(1, n + 1, dtype=np.float64) / n
    f = s0.copy()
    for _ in range(steps):
        f = a * f + b * f ** 3 + c * f ** 5
    k = int(np.argmax(np.diff(f) < 0))  # first index where f stops increasing
    lo, hi = float(f[k:].min()), float(f.max())
    sigma_from = float(s0[int(np.argmax(f >= lo))])
    assert f[s0 >= sigma_from].min() >= lo
    return lo, hi, sigma_from


def ns_inputs():
    """The four float32 input matrices, in record order."""
    gen = torch.Generator().manual_seed(NS_SEED)
    mats = [("tall", torch.randn(12, 5, generator=gen)),
            ("wide", torch.randn(5, 12, generator=gen)),
            ("square", torch.randn(8, 8, generator=gen))]
    # Rank 3, exactly: factor entries are multiples of 1/16 with |k| <= 48,
    # so every entry of the product is a multiple of 1/256 below 2^13/256 and
    # is exact in float32 (the stored matrix itself has rank 3).
    f1 = (torch.randn(10, 3, generator=gen, dtype=F64).clamp(-3, 3) * 16).round() / 16
    f2 = (torch.randn(3, 6, generator=gen, dtype=F64).clamp(-3, 3) * 16).round() / 16
    prod = f1 @ f2
    assert torch.equal(prod.to(torch.float32).to(F64), prod)
    assert torch.linalg.matrix_rank(f1) == 3 and torch.linalg.matrix_rank(f2) == 3
    mats.append(("rankdef", prod.to(torch.float32)))
    return mats


def run_ns_fixture(out_dir):
    lo, hi, sigma_from = ns_band()
    mats = ns_inputs()
    outs, svs, info = [], [], []
    for name, m32 in mats:
        m = m32.to(F64)
        o = tm.newton_schulz(m, NS_STEPS)
        assert o.shape == m.shape
        err = float((o - ns_by_svd(m, NS_STEPS)).abs().max())
        assert err < 1e-10, "NS vs SVD on %s: %g" % (name, err)
        sv_in = torch.linalg.svdvals(m)
        rank = 3 if name == "rankdef" else min(m.shape)
        assert int(torch.linalg.matrix_rank(m)) == rank
        sig0 = sv_in[:rank] / (torch.linalg.norm(m) + tm.NS_EPS)
        assert float(sig0.min()) >= sigma_from, "%s: normalised sigma %g below the band" % (
            name, float(sig0.min()))
        sv = torch.linalg.svdvals(o)
        zero_mag = float(sv[rank:].abs().max()) if rank < len(sv) else 0.0
        assert zero_mag < 1e-12, "%s: null singular values grew to %g" % (name, zero_mag)
        sv = sv.clone()
        sv[rank:] = 0.0  # mathematically 0 (float64 round-off ~1e-15 dropped)
        assert bool(((sv[:rank] >= lo - 1e-12) & (sv[:rank] <= hi + 1e-12)).all()), name
        o32 = tm.newton_schulz(m32, NS_STEPS)
        f32_err = float((o32.to(F64) - o).abs().max())
        sv32 = torch.linalg.svdvals(o32.to(F64))
        outs.append(("out/" + name, o))
        svs.append(("sv/" + name, sv))
        info.append(dict(name=name, shape=tuple(m.shape), sig0_min=float(sig0.min()),
                         sv=sv.tolist(), svd_err=err, zero_mag=zero_mag, f32_err=f32_err,
                         f32_null=float(sv32[rank:].max()) if rank < len(sv32) else 0.0))
    records = [("in/" + n, m) for n, m in mats] + outs + svs
    records += [("band", torch.tensor([lo, hi], dtype=F64)),
                ("band_from", torch.tensor([sigma_from], dtype=F64))]
    case_dir = os.path.join(out_dir, NS_CASE)
    os.makedirs(case_dir, exist_ok=True)
    path = os.path.join(case_dir, "ns.bin")
    write_fixture(path, records)
    back = read_fixture(path)
    assert list(back) == [r[0] for r in records]
    for rn, rt in records:
        assert (back[rn] == rt.to(torch.float32).numpy()).all(), rn
    size = os.path.getsize(path)
    print("%-28s records=%d size=%dB band=[%.9g, %.9g] from sigma0=%.7g" % (
        NS_CASE, len(records), size, lo, hi, sigma_from))
    for r in info:
        print("    %-8s %-8s min sigma0=%.4f  NS-vs-SVD %.1e  null sv %.1e  "
              "f32 NS: max|diff| %.1e null sv %.1e" % (
                  r["name"], "%dx%d" % r["shape"], r["sig0_min"], r["svd_err"], r["zero_mag"],
                  r["f32_err"], r["f32_null"]))
        print("             sv = " + ", ".join("%.6f" % v for v in r["sv"]))
    return dict(size=size, band=(lo, hi), sigma_from=sigma_from, info=info)


# ---------------------------------------------------------------------------
# README
# ---------------------------------------------------------------------------

README_HEAD = """# Reference fixtures

Golden values for canary's dense, MoE and MLA models, produced by an independent PyTorch
reference (`tests/torch_model.py`) in float64 and stored as float32.
Regenerate (deterministic, takes a few seconds) with:

    /usr/bin/python3 tests/gen_reference.py

Each case directory holds `config.ini` (all `[model]`, `[optim]`, `[train]`
keys; the Muon-only `[optim]` keys `momentum`, `ns_steps`, `muon_scale`,
`muon_lr_scale`, `muon_weight_decay` are written only for `name = muon`
cases, the MoE keys only for `experts > 0` cases) and `fixture.bin`.
`muon_ns/ns.bin` holds Newton-Schulz values (below).

## How the values are produced

* Weights are drawn in float32 (benchmark init: embeddings N(0, 1/sqrt(d)),
  other matrices truncated normal with std 1/sqrt(fan_in); but gains are
  1 + 0.1 N(0,1)) from `torch.Generator().manual_seed(train.seed)`, then cast
  to float64. Tokens [B, T+1] are drawn from the same generator afterwards;
  inputs = tokens[:, :-1], targets = tokens[:, 1:].
* `logits`, `loss/*` and `grad/*` are at the initial weights. Gradients are
  of the total loss (ce + z, plus for MoE cases the means over the MoE blocks
  of the scaled balance and router z-losses, also stored as `loss/balance`
  and `loss/router_z`). MoE routing follows `model/moe.h`: top-k on the
  router logits (ties: lower index), in routing groups of `model.moe_group`
  tokens (one sequence by default; half a sequence and two sequences in two
  cases), capacity per group served by choice rank then token order, the
  balance loss the mean over the groups; every MoE case drops pairs
  (tests/test_reference.c checks) and one leaves an expert without tokens.
  MLA follows `model/model_mla.h` (KV latent and optional query latent, each
  RMS-normed; decoupled RoPE with one rope key shared by the heads; `wkv_b`
  rows are the k content heads, then the v heads).
  The `softcap` cases soft-cap the attention logits (c tanh(s / c), c =
  `model.attn_softcap`, before the causal softmax) and the output logits (c =
  `model.final_softcap`, before the loss); `logits` are the raw ones.
  The `qk_clip` cases apply QK-clip after each of the 3 updates (S from the
  step's forward at the weights before the update; `qk_clip/eta` holds eta
  [step, layer, head]). The `stable_adamw` cases divide each AdamW tensor's
  lr by max(1, RMS(g^2 / v_hat)) (StableAdamW); their AdamW check rebuilds
  the factors from a second moment of its own and feeds them to
  torch.optim.AdamW per tensor. The `mup_full` cases use muParam full
  (model.mup): attention scale 1/d_qk, W_q zero at init (the fixture's
  weights: wq, or MLA's wq_b), and the hidden matrices' AdamW lr times
  mup_base_width / dim (2 and 0.5 here), which torch.optim.AdamW gets per
  tensor in the AdamW check; `mup_simple_stable` multiplies that factor with
  StableAdamW's. The `bf16` case runs train.precision = bf16: every linear
  layer's operands, in forward and in both backward products, rounded with
  `.to(torch.bfloat16)` (the output gradient too); no finite differences
  for it (rounding is a step function), and test_reference.c compares it
  with looser tolerances, as its comment explains.
* Then 3 training steps (t = 0, 1, 2) on the **same batch**: forward,
  backward, global-norm clip (over all gradients), then the optimizer (AdamW,
  or Muon + AdamW, see below) with the lr schedule. `steps/loss[t]` is
  the total loss before update t (so `steps/loss[0] == loss/total`);
  `final/*` are the weights after the 3 updates.
* The generator checks itself before writing: central finite differences of
  the total loss vs autograd (2 random entries of every tensor, float64),
  fused vs plain forward, and its hand-written AdamW vs torch.optim.AdamW.
  For Muon cases instead of the last: Newton-Schulz vs the same polynomial
  applied to the singular values from torch.linalg.svd, and the whole Muon
  run vs an independent re-derivation (closed-form momentum sums, SVD-based
  Newton-Schulz, torch.optim.AdamW for the non-Muon tensors), to 1e-10.

## Muon (`optim.name = muon`)

Muon matrices: `blocks.*.attn.{wq,wk,wv,wo}` and `blocks.*.mlp.{w1,w2,w3}`.
Everything else (`tok_embed`, `pos_embed`, `head`, all gains) uses AdamW
exactly as above (optim.lr, beta1, beta2, eps, weight_decay, wd_mode; decay
on 2-D tensors only). Step t (0-based): lr_t = schedule value (peak
optim.lr), s_t = lr_t / optim.lr, lr_m = lr_t * muon_lr_scale,
lambda = muon_weight_decay, beta = momentum. Per Muon matrix W [rows, cols]
with clipped gradient G and buffer B (initially 0):

    B = beta B + (1 - beta) G
    U = (1 - beta) G + beta B                     (Nesterov)
    O = NS(U, ns_steps)
    scale = sqrt(max(1, rows/cols))               (muon_scale = shape)
          = 0.2 sqrt(max(rows, cols))             (muon_scale = rms_match)
    W = W - lr_m scale O - d W                    (W on the right: before the step)
    d = lr_m lambda (wd_mode coupled) | s_t lambda (wd_mode independent)

NS(U, n): X = U, transposed if rows > cols; X = X / (||X||_F + 1e-7); n times
{ A = X X^T; Bm = b A + c A A; X = a X + Bm X }; transpose back;
(a, b, c) = (3.4445, -4.7750, 2.0315). Computed in float64 here.

## fixture.bin (little-endian)

    u32 magic = 0x58464E43 ('CNFX')   u32 version = 1   u32 record_count
    record_count times:
        u32 name_len, name bytes (ASCII, no NUL)
        u32 ndim, u32 dims[ndim]
        float32 data[prod(dims)]   (row-major)

| record | shape | meaning |
|---|---|---|
| `tokens` | [B, T+1] | token ids as exact float32 values |
| `logits` | [B, T, V] | logits at the initial weights |
| `loss/total` | [1] | ce + z |
| `loss/ce` | [1] | mean cross-entropy |
| `loss/z` | [1] | z_loss * mean(logZ^2) (coefficient applied) |
| `param/<name>` | table shape | initial weights (gains are 1-D [n]) |
| `grad/<name>` | table shape | d(total)/d(weight) at the initial weights |
| `steps/loss` | [3] | total loss before each of the 3 steps |
| `final/<name>` | table shape | weights after 3 steps |
| `momentum/<name>` | table shape | Muon cases only, Muon matrices only (table order): buffer B after 3 steps |

`<name>` runs over the tensor table in order: `tok_embed`, `pos_embed`
(learned only), per layer `blocks.i.ln1.gain`, `attn.wq`, `attn.wk`,
`attn.wv`, (`attn.q_norm.gain`, `attn.k_norm.gain` if qk_norm), `attn.wo`,
`ln2.gain`, `mlp.w1`, (`mlp.w3` if swiglu), `mlp.w2`; then `final_norm.gain`,
`head`. Records appear in the order of the table above.

Suggested tolerances for a float32 C implementation: logits/loss ~1e-5
relative, gradients ~1e-4 relative to the tensor's max-abs, final params
~2e-5 absolute. For reference, the column "f32 replay" below is the max
|final| difference when this same reference is run in float32 instead of
float64. (AdamW normalises each gradient entry, so entries with tiny
gradients amplify round-off; tok_embed rows of tokens absent from the batch
have exactly zero gradient and move only by weight decay.)

## Cases
"""


NS_README = """
## muon_ns/ns.bin

Same CNFX format. Newton-Schulz (5 steps, the coefficients above, float64)
on four fixed float32 matrices drawn from `torch.Generator().manual_seed(%d)`
in this order: `tall` = randn(12, 5), `wide` = randn(5, 12), `square` =
randn(8, 8), `rankdef` = F1 F2 with F1 [10, 3], F2 [3, 6] entries
round(16 clamp(randn, -3, 3)) / 16 -- the product is exact in float32, so the
stored matrix has rank exactly 3.

| record | shape | meaning |
|---|---|---|
| `in/<m>` | matrix shape | input (m = tall, wide, square, rankdef, in this order) |
| `out/<m>` | matrix shape | NS(in, 5) computed in float64 |
| `sv/<m>` | [min(rows, cols)] | singular values of out (float64 SVD), descending; for `rankdef` the last 3 are stored as exact 0 (float64 gives < 1e-12) |
| `band` | [2] | [lo, hi]: range of f = (s -> a s + b s^3 + c s^5) iterated 5 times over s0 in [band_from, 1] (2e6 samples s0 = k/2e6) |
| `band_from` | [1] | smallest sampled s0 with f(s0) >= lo |

f(s0) ~ a^5 s0 ~ 487 s0 for tiny s0, so over all of (0, 1] the infimum of f
is 0: `band` excludes the initial climb. hi is the maximum over all of (0, 1];
lo is the minimum of f after its first local maximum, and every s0 >=
band_from maps into [lo, hi]. Every input's nonzero singular values,
normalised by the Frobenius norm (+1e-7), are >= band_from (the generator
asserts it), so every nonzero `sv/<m>` lies in `band`.

| matrix | shape | min normalised s0 | sv of out | float32 NS max abs diff | float32 null sv |
|---|---|---|---|---|---|
"""


def write_readme(out_dir, results, ns=None):
    lines = [README_HEAD]
    lines.append("| case | norm | qk_norm | pos | mlp | heads x head_dim | wd_mode / wd | schedule | z_loss | clip | per-step grad norm (clipped?) | f32 replay | size |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        m, o = r["cfg"]["model"], r["cfg"]["optim"]
        norms = ", ".join("%.3f%s" % (s["grad_norm"], "*" if s["clipped"] else "") for s in r["steps"])
        lines.append("| `%s` | %s | %s | %s | %s | %d x %d | %s / %g | %s | %g | %g | %s | %.1e | %d B |" % (
            r["name"], m["norm"], str(m["qk_norm"]).lower(), m["pos"], m["mlp"],
            m["heads"], tm.head_dim(r["cfg"]), o["wd_mode"], o["weight_decay"],
            o["schedule"], o["z_loss"], o["clip"], norms, r["f32_err"], r["size"]))
    lines.append("")
    lines.append("All cases: dim 16, layers 2, seq_len 8, vocab 24, mlp_ratio 4, batch 2, "
                 "lr 1e-2, min_lr 1e-3, betas (0.9, 0.95), eps 1e-8, warmup_steps 1, steps 3. "
                 "`*` marks a step whose gradient was clipped. `wd_mode / wd` is the AdamW "
                 "decay (for Muon cases wd_mode also selects the Muon decay mode).")
    lines.append("")
    muon = [r for r in results if r["cfg"]["optim"]["name"] == "muon"]
    if muon:
        lines.append("Muon cases (all other tensors AdamW as in the table above):")
        lines.append("")
        lines.append("| case | muon_scale | muon_lr_scale | muon_weight_decay | wd_mode | momentum | ns_steps | NS vs SVD | run vs re-derivation |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for r in muon:
            o = r["cfg"]["optim"]
            lines.append("| `%s` | %s | %g | %g | %s | %g | %d | %.1e | %.1e |" % (
                r["name"], o["muon_scale"], o["muon_lr_scale"], o["muon_weight_decay"],
                o["wd_mode"], o["momentum"], o["ns_steps"], r["muon_errs"][0], r["muon_errs"][1]))
        lines.append("")
    if ns is not None:
        lines.append((NS_README % NS_SEED).rstrip("\n"))
        for r in ns["info"]:
            lines.append("| `%s` | %d x %d | %.4f | %s | %.1e | %s |" % (
                r["name"], r["shape"][0], r["shape"][1], r["sig0_min"],
                ", ".join("%.4f" % v for v in r["sv"]), r["f32_err"],
                "%.1e" % r["f32_null"] if r["name"] == "rankdef" else "-"))
        lines.append("")
        lines.append("band = [%.9g, %.9g], band_from = %.7g. \"float32 NS\" is the same "
                     "iteration run in float32 on the same input (a guide to the tolerance a "
                     "float32 implementation can expect); \"float32 null sv\" is the largest "
                     "singular value it leaves in rankdef's null space, where float64 keeps 0."
                     % (ns["band"][0], ns["band"][1], ns["sigma_from"]))
        lines.append("")
    with open(os.path.join(out_dir, "README.md"), "w") as fh:
        fh.write("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "fixtures"))
    ap.add_argument("--case", action="append", choices=sorted(CASES) + [NS_CASE])
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    wanted = args.case or list(CASES) + [NS_CASE]
    results = [run_case(n, args.out) for n in wanted if n != NS_CASE]
    ns = run_ns_fixture(args.out) if NS_CASE in wanted else None
    if not args.case:
        write_readme(args.out, results, ns)
    print("all self-checks passed")


if __name__ == "__main__":
    main()
