"""An independent computation of canary's probes (the definitions in probes.h5's descriptions),
in float64 with PyTorch, on given weights and one batch: used by tests/cli/test_probe_values.py.
Reuses the reference model's building blocks (tests/torch_model.py) and records what the probes
look at: q and k as attended, the attention logits, the residual stream, log Z, the logits."""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_model as tm  # noqa: E402


def probes(cfg, params, x, y):
    """Returns a dict of probe values for tokens x [B, T] and targets y [B, T]."""
    m = cfg["model"]
    B, T = x.shape
    H, hd, L = m["heads"], tm.head_dim(cfg), m["layers"]
    out = {"attn/max_logit": torch.zeros(L, H, dtype=torch.float64),
           "attn/entropy": torch.zeros(L, H, dtype=torch.float64),
           "attn/q_rms": torch.zeros(L, H, dtype=torch.float64),
           "attn/k_rms": torch.zeros(L, H, dtype=torch.float64),
           "resid/rms": torch.zeros(L, dtype=torch.float64)}
    h = F.embedding(x, params["tok_embed"])
    rope = None
    if m["pos"] == "learned":
        h = h + params["pos_embed"][:T]
    else:
        rope = tm.rope_tables(T, hd, h.dtype)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for l in range(L):
        pre = "blocks.%d." % l
        a = tm.apply_norm(h, params[pre + "ln1.gain"], m["norm"])
        q = F.linear(a, params[pre + "attn.wq"]).view(B, T, H, hd)
        k = F.linear(a, params[pre + "attn.wk"]).view(B, T, H, hd)
        v = F.linear(a, params[pre + "attn.wv"]).view(B, T, H, hd)
        if m["qk_norm"]:
            q = tm.apply_norm(q, params[pre + "attn.q_norm.gain"], m["norm"])
            k = tm.apply_norm(k, params[pre + "attn.k_norm.gain"], m["norm"])
        if rope is not None:
            q, k = tm.apply_rope(q, *rope), tm.apply_rope(k, *rope)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, T, hd]
        z = (q @ k.transpose(-2, -1)) / math.sqrt(hd)
        out["attn/max_logit"][l] = z.abs().masked_fill(~causal, 0).amax(dim=(0, 2, 3))
        p = torch.softmax(z.masked_fill(~causal, float("-inf")), dim=-1)
        ent = -(p * torch.log(p.clamp_min(1e-300))).masked_fill(~causal, 0).sum(-1)
        out["attn/entropy"][l] = ent.mean(dim=(0, 2))
        out["attn/q_rms"][l] = q.pow(2).mean(dim=(0, 2, 3)).sqrt()
        out["attn/k_rms"][l] = k.pow(2).mean(dim=(0, 2, 3)).sqrt()
        o = (p @ v).transpose(1, 2).reshape(B, T, H * hd)
        h = h + F.linear(o, params[pre + "attn.wo"])
        a = tm.apply_norm(h, params[pre + "ln2.gain"], m["norm"])
        h = h + tm.mlp(cfg, params, pre + "mlp.", a, False)
        out["resid/rms"][l] = h.pow(2).mean().sqrt()
    hf = tm.apply_norm(h, params["final_norm.gain"], m["norm"])
    logits = F.linear(hf, params["head"])
    logz = torch.logsumexp(logits, dim=-1)
    out["output/logz_mean"] = logz.mean()
    out["output/logz_std"] = logz.std(unbiased=False)
    out["output/logz_max"] = logz.max()
    out["output/logit_rms"] = logits.pow(2).mean().sqrt()
    total, _, _ = tm.loss_parts(cfg, logits, y)
    return out, total
