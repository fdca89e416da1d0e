"""An independent computation of canary's probes (the definitions in probes.h5's descriptions),
in float64 with PyTorch, on given weights and one batch: used by tests/cli/test_probe_values.py.
Runs the reference model (tests/torch_model.py), which records what the probes look at: q and k
as attended, the residual stream, MLA's latents, MoE's routing; then log Z and the logits."""
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_model as tm  # noqa: E402


def probes(cfg, params, x, y):
    """Returns a dict of probe values for tokens x [B, T] and targets y [B, T], and the loss.
    Every statistic is over the whole batch: maxima over it, means over all its tokens."""
    m = cfg["model"]
    B, T = x.shape
    L = m["layers"]
    rec, aux = [], []
    logits = tm.forward(cfg, params, x, aux=aux, rec=rec)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    out = {}
    f64 = dict(dtype=torch.float64)
    for key in ("attn/max_logit", "attn/entropy", "attn/q_rms", "attn/k_rms"):
        out[key] = torch.zeros(L, m["heads"], **f64)
    out["resid/rms"] = torch.zeros(L, **f64)
    mla = m["attention"] == "mla"
    if mla:
        out["attn/kv_latent_rms"] = torch.zeros(L, **f64)
        if m["q_rank"] > 0:
            out["attn/q_latent_rms"] = torch.zeros(L, **f64)
    acap, fcap = m["attn_softcap"], m["final_softcap"]
    if acap:
        out["attn/max_logit_capped"] = torch.zeros(L, m["heads"], **f64)
    moe_rows = []
    for l, r in enumerate(rec):
        q, k = r["q"], r["k"]  # [B, H, T, d_qk] as attended
        z = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
        out["attn/max_logit"][l] = z.abs().masked_fill(~causal, 0).amax(dim=(0, 2, 3))
        if acap:  # the softmax sees the capped logits; the raw maximum is the probe
            zc = tm.softcap(z, acap)
            out["attn/max_logit_capped"][l] = zc.abs().masked_fill(~causal, 0).amax(dim=(0, 2, 3))
            z = zc
        pr = torch.softmax(z.masked_fill(~causal, float("-inf")), dim=-1)
        ent = -(pr * torch.log(pr.clamp_min(1e-300))).masked_fill(~causal, 0).sum(-1)
        out["attn/entropy"][l] = ent.mean(dim=(0, 2))
        out["attn/q_rms"][l] = q.pow(2).mean(dim=(0, 2, 3)).sqrt()
        out["attn/k_rms"][l] = k.pow(2).mean(dim=(0, 2, 3)).sqrt()
        out["resid/rms"][l] = r["resid"].pow(2).mean().sqrt()
        if mla:
            out["attn/kv_latent_rms"][l] = r["ckv"].pow(2).mean().sqrt()
            if "cq" in r:
                out["attn/q_latent_rms"][l] = r["cq"].pow(2).mean().sqrt()
        if "sel" in r:
            moe_rows.append(r)
    if moe_rows:
        E, k = m["experts"], m["top_k"]
        load, dropped, rz, rent = [], [], [], []
        for r in moe_rows:
            chosen = torch.bincount(r["sel"].reshape(-1), minlength=E).to(torch.float64)
            kept = torch.bincount(r["sel"][r["keep"]].reshape(-1), minlength=E).to(torch.float64)
            load.append(chosen / (B * T * k))
            dropped.append(torch.where(chosen > 0, 1 - kept / chosen.clamp_min(1), 0 * chosen))
            rz.append((r["lse"] ** 2).mean())
            p_ = r["probs"]
            rent.append(-(p_ * torch.log(p_.clamp_min(1e-300))).sum(-1).mean())
        out["moe/load"] = torch.stack(load)
        out["moe/dropped"] = torch.stack(dropped)
        out["moe/router_z"] = torch.stack(rz)
        out["moe/router_entropy"] = torch.stack(rent)
    out["output/logit_max"] = logits.abs().max()
    out["output/logit_rms"] = logits.pow(2).mean().sqrt()  # of the raw logits
    if fcap:
        out["output/logit_max_capped"] = tm.softcap(logits, fcap).abs().max()
    logz = torch.logsumexp(tm.softcap(logits, fcap), dim=-1)  # as the loss sees it
    out["output/logz_mean"] = logz.mean()
    out["output/logz_std"] = logz.std(unbiased=False)
    out["output/logz_max"] = logz.max()
    total, _, _ = tm.loss_parts(cfg, logits, y)
    balance, router_z = tm.aux_parts(aux)
    return out, total + balance + router_z
