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
    canary's decay modes by choosing the per-step lr and decay coefficient).

Usage:  /usr/bin/python3 tests/gen_reference.py [--out DIR] [--case NAME ...]
"""

import argparse
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
}


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
            return float(tm.loss_parts(cfg, tm.forward(cfg, p, x), y)[0])

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
    ref = torch.optim.AdamW(groups, lr=o["lr"], betas=(o["beta1"], o["beta2"]), eps=o["eps"])
    for t, grads in enumerate(grad_seq):
        opt.step(ours, [g.clone() for g in grads], t)
        for grp in ref.param_groups:
            grp["lr"] = tm.lr_at(cfg, t)
        for p, g in zip(theirs, grads):
            p.grad = g.clone()
        ref.step()
    err = max(float((ours[n] - p.detach()).abs().max()) for n, p in zip(names, theirs))
    assert err < 1e-12, "AdamW differs from torch.optim.AdamW by %g" % err
    return err


def fp32_replay(cfg, params0, names, x, y, final64):
    """Informational: rerun the 3 steps in float32 (plain mode) and return the
    max abs difference of the final weights vs float64 -- a guide to the
    tolerance a float32 implementation can expect."""
    p = tm.make_leaf_params(params0, torch.float32)
    opt = tm.AdamW(cfg, names, p)
    for t in range(N_STEPS):
        _, g = tm.loss_and_grads(cfg, p, names, x, y)
        tm.clip_grads(g, cfg["optim"]["clip"])
        opt.step(p, g, t)
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
    logits = tm.forward(cfg, p, x)
    total, ce, z = tm.loss_parts(cfg, logits, y)
    grads = torch.autograd.grad(total, [p[n] for n in names])

    n_fd, fd_err = fd_check(cfg, params0, names, grads, x, y, gen)
    fast_err = fast_path_check(cfg, params0, x)

    # Three full training steps on the same batch.
    p = tm.make_leaf_params(params0)
    opt = tm.AdamW(cfg, names, p)
    step_info, grad_seq = [], []
    for t in range(N_STEPS):
        (lt, _, _), g = tm.loss_and_grads(cfg, p, names, x, y)
        norm, clipped = tm.clip_grads(g, cfg["optim"]["clip"])
        grad_seq.append([gi.clone() for gi in g])
        lr = opt.step(p, g, t)
        step_info.append(dict(loss=float(lt), grad_norm=norm, clipped=clipped, lr=lr))
    adam_err = adamw_check(cfg, params0, names, grad_seq)
    f32_err = fp32_replay(cfg, params0, names, x, y, {n: p[n].detach() for n in names})
    losses = torch.tensor([s["loss"] for s in step_info], dtype=F64)
    assert abs(losses[0] - float(total)) < 1e-12
    assert losses[-1] < losses[0], "training did not reduce the loss"

    records = [("tokens", tokens.to(F64)), ("logits", logits),
               ("loss/total", total.reshape(1)), ("loss/ce", ce.reshape(1)),
               ("loss/z", z.reshape(1))]
    records += [("param/" + n, params0[n]) for n in names]
    records += [("grad/" + n, g) for n, g in zip(names, grads)]
    records += [("steps/loss", losses)]
    records += [("final/" + n, p[n]) for n in names]

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
    print("    FD: %d entries, max |fd-ad| = %.2e; fast-vs-plain %.1e; "
          "AdamW-vs-torch.optim %.1e" % (n_fd, fd_err, fast_err, adam_err))
    for t, s in enumerate(step_info):
        print("    step %d: loss=%.6f grad_norm=%.4f clipped=%s lr=%.6g" % (
            t, s["loss"], s["grad_norm"], s["clipped"], s["lr"]))
    print("    float32 replay: max |final32 - final64| = %.2e" % f32_err)
    return dict(name=name, cfg=cfg, size=size, records=len(records), steps=step_info,
                n_fd=n_fd, fd_err=fd_err, f32_err=f32_err)


# ---------------------------------------------------------------------------
# README
# ---------------------------------------------------------------------------

README_HEAD = """# Reference fixtures

Golden values for canary's dense model, produced by an independent PyTorch
reference (`tests/torch_model.py`) in float64 and stored as float32.
Regenerate (deterministic, takes a few seconds) with:

    /usr/bin/python3 tests/gen_reference.py

Each case directory holds `config.ini` (all `[model]`, `[optim]`, `[train]`
keys) and `fixture.bin`.

## How the values are produced

* Weights are drawn in float32 (benchmark init: embeddings N(0, 1/sqrt(d)),
  other matrices truncated normal with std 1/sqrt(fan_in); but gains are
  1 + 0.1 N(0,1)) from `torch.Generator().manual_seed(train.seed)`, then cast
  to float64. Tokens [B, T+1] are drawn from the same generator afterwards;
  inputs = tokens[:, :-1], targets = tokens[:, 1:].
* `logits`, `loss/*` and `grad/*` are at the initial weights. Gradients are
  of the total loss (ce + z).
* Then 3 training steps (t = 0, 1, 2) on the **same batch**: forward,
  backward, global-norm clip, AdamW with the lr schedule. `steps/loss[t]` is
  the total loss before update t (so `steps/loss[0] == loss/total`);
  `final/*` are the weights after the 3 updates.
* The generator checks itself before writing: central finite differences of
  the total loss vs autograd (2 random entries of every tensor, float64),
  fused vs plain forward, and its hand-written AdamW vs torch.optim.AdamW.

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


def write_readme(out_dir, results):
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
                 "`*` marks a step whose gradient was clipped.")
    lines.append("")
    with open(os.path.join(out_dir, "README.md"), "w") as fh:
        fh.write("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "fixtures"))
    ap.add_argument("--case", action="append", choices=sorted(CASES))
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    results = [run_case(n, args.out) for n in (args.case or list(CASES))]
    if not args.case:
        write_readme(args.out, results)
    print("all self-checks passed")


if __name__ == "__main__":
    main()
