"""Every probe (with the LR probe running at the same steps, reusing the activation arena)
against an independent computation (tests/torch_probes.py, float64 PyTorch) on a
tiny model. The corpus is varied text, so every sequence of a batch differs and a probe that
read the wrong sequence, or only some of them, would miss; the batch of each step comes from a
Python copy of canary's sampler (counter-based: a pure function of seed and position).
Checkpoints at every step give the weights the step started from, and the update that landed,
against which the LR probe's four trial losses are checked."""
import os
import sys

import h5py
import numpy as np
import torch

from conftest import ROOT, run, write_tokens

sys.path.insert(0, os.path.join(ROOT, "tests"))
import torch_model as tm  # noqa: E402
import torch_probes  # noqa: E402

CONFIG = """
[model]
dim = 16
layers = 2
heads = 2
seq_len = 8
vocab = 32
qk_norm = {qk}
pos = {pos}
[optim]
lr = {lr}
warmup_steps = 0
z_loss = 1e-2
eps = 1e-3
weight_decay = 0
[train]
steps = 3
batch_size = 2
eval_every = 0
eval_batches = 1
checkpoint_every = 1
keep_checkpoints = 10
[probes]
every = 1
lr_probe_every = 1
"""


M64 = (1 << 64) - 1


def _mix64(z):
    z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & M64
    z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & M64
    return z ^ (z >> 31)


def rng_u64(seed, stream, index):
    """util/rng.c's rng_u64."""
    h = _mix64((seed + 0x9e3779b97f4a7c15) & M64)
    h = _mix64(h ^ ((stream * 0xd6e8feb86659fd93 + 0x632be59bd9b4e019) & M64))
    return _mix64(h ^ ((index + 0x9e3779b97f4a7c15) & M64))


def train_batch(tokens, n_train, seed, step, batch, T):
    """data/sampler.c's training batch of step `step` (0-based): inputs and targets [B, T]."""
    starts = n_train - T
    xs, ys = [], []
    for b in range(batch):
        s0 = rng_u64(seed, 1, step * batch + b) % starts  # RNG_STREAM_SAMPLE = 1
        xs.append(tokens[s0:s0 + T])
        ys.append(tokens[s0 + 1:s0 + T + 1])
    return torch.tensor(xs, dtype=torch.long), torch.tensor(ys, dtype=torch.long)


def load(ckpt, cfg):
    with h5py.File(ckpt, "r") as f:
        params = {n: torch.tensor(np.array(f["params"][n]), dtype=torch.float64)
                  for n, _ in tm.tensor_specs(cfg)}
        v = {n: np.array(f["optim"][n]["v"], dtype=np.float64) for n, _ in tm.tensor_specs(cfg)}
        t = int(f["state"].attrs["adam_t"])
    return params, v, t


def check(canary, tmp_path, qk, pos, extra="", lr=1e-2):
    data = tmp_path / "varied.bin"
    rng = np.random.default_rng(5)
    tokens = [int(t) for t in rng.integers(0, 32, 4000)]
    write_tokens(data, tokens)
    ini = tmp_path / "tiny.ini"
    text = CONFIG.format(qk=qk, pos=pos, lr=lr).replace("[optim]\n", extra + "\n[optim]\n")
    ini.write_text(text + f"\n[data]\ntrain = {data}\n")
    out = tmp_path / f"run_{qk}_{pos}"
    r = run(canary, "train", "--config", str(ini), "--out", str(out))
    assert r.returncode == 0, r.stderr
    cfg = tm.load_config(str(ini))
    n_train = 4000 - int(4000 * 0.05)  # data.val_fraction's tail is held out
    # step 3 (0-based 2) of batch_size 2 at train.seed = 1, the default
    x, y = train_batch(tokens, n_train, 1, 2, 2, 8)
    assert not torch.equal(x[0], x[1])
    with h5py.File(out / "probes.h5", "r") as f:
        names = list(f["tensors/names"].asstr()[:])
        keys = ["attn/max_logit", "attn/entropy", "attn/q_rms", "attn/k_rms", "resid/rms",
                "output/logz_mean", "output/logz_std", "output/logz_max", "output/logit_rms",
                "grad/rms", "param/rms", "update/rms", "adam/sqrt_v_rms", "adam/eps_frac",
                "adam/v_zero_frac", "loss/total"]
        keys += ["output/logit_max"]
        keys += [k for k in ("attn/kv_latent_rms", "attn/q_latent_rms", "moe/load",
                             "moe/dropped", "moe/router_z", "moe/router_entropy",
                             "attn/max_logit_capped", "output/logit_max_capped") if k in f]
        got = {k: f[k][2] for k in keys}
        lr_loss = f["lr_probe/loss"][2]
    # step 3 started from the weights of checkpoint 2 and ended at checkpoint 3
    p2, _, _ = load(out / "ckpt" / "step_00000002.h5", cfg)
    p3, v3, t3 = load(out / "ckpt" / "step_00000003.h5", cfg)
    leaves = {n: p.clone().requires_grad_(True) for n, p in p2.items()}
    want, loss = torch_probes.probes(cfg, leaves, x, y)
    loss.backward()
    assert set(want) <= set(got), set(want) - set(got)
    for k, w in want.items():
        w = w.detach().numpy()
        assert np.allclose(got[k], w, rtol=1e-4, atol=1e-6), (k, got[k], w)
    assert abs(got["loss/total"] - float(loss)) <= 1e-5 * float(loss)
    beta2, eps = cfg["optim"]["beta2"], cfg["optim"]["eps"]
    # optim.eps = 1e-3 puts part of the entries on either side of the bound, so a wrong bias
    # correction in the bound moves the fraction
    assert any(0 < f < 1 for f in got["adam/eps_frac"]), got["adam/eps_frac"]
    for i, n in enumerate(names):
        g = leaves[n].grad.numpy()
        assert np.isclose(got["grad/rms"][i], np.sqrt(np.mean(g * g)), rtol=1e-3), n
        assert np.isclose(got["param/rms"][i], np.sqrt(np.mean(p3[n].numpy() ** 2)), rtol=1e-6), n
        upd = (p2[n] - p3[n]).numpy()
        assert np.isclose(got["update/rms"][i], np.sqrt(np.mean(upd * upd)), rtol=1e-3,
                          atol=1e-9), n
        vhat = v3[n] / (1 - beta2 ** t3)
        assert np.isclose(got["adam/sqrt_v_rms"][i], np.sqrt(np.mean(vhat)), rtol=1e-5), n
        assert np.isclose(got["adam/eps_frac"][i], np.mean(np.sqrt(vhat) < eps)), n
        assert np.isclose(got["adam/v_zero_frac"][i], np.mean(v3[n] == 0)), n
    # the LR probe of step 3: the loss of the probe batch (the first batch_size held-out
    # sequences) at p2 - f·(p2 - p3), the update that landed scaled as if the LR were (weight
    # decay 0, so all of the update scales)
    val = tokens[n_train:]
    xe = torch.tensor([val[8 * k:8 * k + 8] for k in range(2)], dtype=torch.long)
    ye = torch.tensor([val[8 * k + 1:8 * k + 9] for k in range(2)], dtype=torch.long)
    for i, f in enumerate((0.0, 0.5, 1.0, 2.0)):
        trial = {n: p2[n] - f * (p2[n] - p3[n]) for n in p2}
        _, lf = torch_probes.probes(cfg, trial, xe, ye)
        assert abs(lr_loss[i] - float(lf)) <= 1e-5 * float(lf), (f, lr_loss[i], float(lf))
    return lr_loss


def test_probe_values_rope(canary, tmp_path):
    check(canary, tmp_path, "false", "rope")


def test_probe_values_lr_probe_factors(canary, tmp_path):
    """At LR 0.3 the update moves the probe batch's loss far more than the tolerance, so the
    check above tells the factors ½, 1 and 2 apart (at LR 1e-2 they differ by ~1e-6)."""
    lr_loss = check(canary, tmp_path, "false", "rope", lr=0.3)
    gaps = np.abs(np.subtract.outer(lr_loss, lr_loss))[np.triu_indices(4, 1)]
    assert gaps.min() > 1e-3 * lr_loss[0], lr_loss


def test_probe_values_qknorm_learned(canary, tmp_path):
    check(canary, tmp_path, "true", "learned")


def test_probe_values_moe(canary, tmp_path):
    # capacity 1.0 in routing groups of one sequence: pairs get dropped
    check(canary, tmp_path, "false", "rope",
          "experts = 4\ntop_k = 2\ncapacity_factor = 1.0\nshared_experts = 1\n")


def test_probe_values_softcap(canary, tmp_path):
    """Soft-capped attention and output logits: the raw maxima, the capped ones, the entropy
    of the capped softmax and log Z of the capped logits, against the reference."""
    check(canary, tmp_path, "false", "rope", "attn_softcap = 0.5\nfinal_softcap = 1.5\n")


def test_probe_values_mla(canary, tmp_path):
    check(canary, tmp_path, "true", "rope",
          "attention = mla\nkv_rank = 8\nq_rank = 6\nrope_dim = 4\n")
