"""Every probe is a statistic of the whole global batch (all micro-batches of all ranks), so the
same config gives the same probes.h5 at 1, 2 and 4 ranks: bitwise in deterministic mode, within
1e-6 relative in the default mode; for dense, MoE and MLA models."""
import os
import subprocess

import h5py
import numpy as np
import pytest

from test_mpi import mpirun

VARIANTS = {
    "dense": [],
    "moe": ["model.experts=4", "model.top_k=2", "model.capacity_factor=1.0",
            "optim.balance_loss=1e-2", "optim.router_z_loss=1e-3"],
    "mla": ["model.attention=mla", "model.kv_rank=16", "model.q_rank=8", "model.rope_dim=4"],
    "softcap": ["model.attn_softcap=2", "model.final_softcap=3"],
    "qk_clip": ["optim.qk_clip=2", "optim.lr=3e-2"],
    "stable_adamw": ["optim.stable_adamw=true", "optim.lr=3e-2"],
    "mup": ["model.mup=full", "model.mup_base_width=16", "model.qk_norm=true"],  # zero W_q
    "bf16": ["train.precision=bf16"],
    "onednn": ["train.matmul_backend=onednn"],
    # expert products on oneDNN's runtime-rows primitives (their rows change every step)
    "onednn_moe": ["train.matmul_backend=onednn", "model.experts=4", "model.top_k=2",
                   "model.capacity_factor=1.0", "optim.balance_loss=1e-2"],
    # both guards act within 16 steps: update-norm clipping during the warmup, skip-step after
    "guards": ["optim.skip_sigma=0.3", "optim.update_clip_sigma=0.3", "optim.guard_window=4",
               "optim.guard_min=2", "optim.warmup_steps=8", "train.steps=16"],
}
# rows that measure the machine, not the model
SKIP = {"tokens_per_s"}
GRADIENT_DERIVED = ("grad/", "update/", "adam/", "param/", "muon/", "lr_probe/")


def train(canary, np_, config, out, *sets):
    args = ["train", "--config", str(config), "--out", str(out)]
    for s in ("train.steps=6", "train.threads=1", "probes.every=2", "probes.lr_probe_every=3",
              "optim.lr=3e-2", "train.eval_every=3") + sets:
        args += ["--set", s]
    r = mpirun(canary, np_, *args)
    assert r.returncode == 0, r.stdout + r.stderr
    return out / "probes.h5"


def series(path):
    got = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and name not in SKIP and obj.dtype.kind == "f":
                got[name] = np.array(obj)
        f.visititems(visit)
    return got


def loaded(canary, small_config, tmp_path, variant, mode_sets, nps):
    return {n: series(train(canary, n, small_config, tmp_path / f"{variant}_np{n}",
                            *VARIANTS[variant], *mode_sets(n)))
            for n in nps}


def bitwise_equal(a, b, what):
    assert set(a) == set(b), what
    for name, want in b.items():
        got = a[name]
        assert got.shape == want.shape, (what, name)
        # bitwise, NaN where NaN
        bits = f"u{want.dtype.itemsize}"
        assert np.array_equal(got.view(bits), want.view(bits)), (what, name, got, want)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_probes_bitwise_at_any_rank_count_deterministic(canary, small_config, tmp_path, variant):
    """The same micro-batches (grad_accum of them in the global batch) on 1, 2 or 4 ranks."""
    det = ["train.deterministic=true"]
    runs = loaded(canary, small_config, tmp_path, variant,
                  lambda n: det + ["train.grad_accum=4"], (1, 2, 4))
    ref = runs[1]
    assert "attn/max_logit" in ref and "output/logz_std" in ref
    if variant == "moe":
        assert "moe/dead_experts" in ref and "moe/load" in ref
    if variant == "mla":
        assert "attn/kv_latent_rms" in ref
    if variant == "softcap":
        assert "attn/max_logit_capped" in ref and "output/logit_max_capped" in ref
    if variant == "qk_clip":
        assert "optim/qk_clip_eta" in ref and max(ref["optim/qk_clip_count"]) > 0
    if variant == "stable_adamw":
        assert "adam/stable_factor" in ref and max(ref["optim/stable_scaled"]) > 0
    if variant == "mup":
        assert ref["tensors/lr_scale"].min() == 0.5 and ref["tensors/lr_scale"].max() == 1  # 16 / 32
    if variant == "guards":  # both guards act
        assert np.nanmax(ref["optim/guard_skipped"]) > 0
        assert np.nanmin(ref["optim/update_clip_factor"]) < 1
    for n in (2, 4):
        bitwise_equal(runs[n], ref, f"np={n} against np=1, grad_accum 4")
    ga2 = {n: series(train(canary, n, small_config, tmp_path / f"{variant}_ga2_np{n}",
                           *VARIANTS[variant], *det, "train.grad_accum=2"))
           for n in (1, 2)}
    bitwise_equal(ga2[2], ga2[1], "np=2 against np=1, grad_accum 2")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_probes_close_at_any_rank_count_default(canary, small_config, tmp_path, variant):
    """grad_accum 1: one micro-batch of 8 sequences at np = 1, two of 4 at np = 2 and four of 2
    at np = 4, so the records fold over different splits of the same global batch. The first
    step starts from the same weights at every rank count: its rows of what the forward sees
    agree to 1e-6. What derives from the reduced gradient (grad/, update/, adam/, the clip
    factor, the LR probe) carries the fp32 rounding of a gradient summed over another split
    (sgemm over 8 rows against two sums of 4 and an allreduce): 1e-5, Adam's first update being
    a ratio g/(|g| + eps). Later rows also carry the drift of the default mode's gradient sums
    (as the losses do; test_mpi.py): they agree to 1e-3."""
    runs = loaded(canary, small_config, tmp_path, variant, lambda n: ["probes.every=1"],
                  (1, 2, 4))
    # and two micro-batches of 4 on one rank
    runs["ga2"] = series(train(canary, 1, small_config, tmp_path / f"{variant}_ga2",
                               *VARIANTS[variant], "probes.every=1", "train.grad_accum=2"))
    ref = runs[1]
    for n in (2, 4, "ga2"):
        for name, want in ref.items():
            got = runs[n][name]
            assert got.shape == want.shape, (n, name)
            if name.startswith("axes/") or name == "tensors/shape":
                assert np.array_equal(got, want), name
                continue
            rel = np.abs(got[:1] - want[:1]) / (np.abs(want[:1]) + 1e-12)
            tol = 1e-5 if name.startswith(GRADIENT_DERIVED) else 1e-6
            if variant == "bf16":  # an fp32 sum in another order can round to the other bf16
                tol *= 100         # value, a step of 2^-8 relative in that operand
            assert np.allclose(got[:1], want[:1], rtol=tol, atol=1e-12, equal_nan=True), \
                (n, name, np.nanmax(rel))
            # later rows: the default mode's drift (bf16 roundings amplify it)
            later = 1e-2 if variant == "bf16" else 1e-3
            assert np.allclose(got, want, rtol=later, atol=1e-9, equal_nan=True), (n, name)


def test_sweep_report_same_at_any_rank_count(canary, tmp_path, corpus):
    """The analysis of a sweep run at np = 1 and of the same sweep at np = 2 (deterministic, each
    run on 2 ranks) gives the same report: its tables come from probes.h5 and metrics.tsv."""
    from conftest import ROOT, SMALL_CONFIG

    study = tmp_path / "study.ini"
    study.write_text(SMALL_CONFIG.replace("steps = 12", "steps = 16") +
                     "\n[probes]\nevery = 4\nlr_probe_every = 8\n"
                     "\n[sweep]\noptim.lr = 1e-3, 1e-2, 3e-1\nranks_per_run = {rpr}\n" +
                     f"\n[data]\ntrain = {corpus}\n")
    reports = []
    for np_, rpr in ((1, 1), (2, 2)):
        ini = tmp_path / f"study{np_}.ini"
        ini.write_text(study.read_text().replace("{rpr}", str(rpr)))
        out = tmp_path / f"sweep{np_}"
        r = mpirun(canary, np_, "sweep", "--config", str(ini), "--out", str(out),
                   "--set", "train.deterministic=true", "--set", "train.grad_accum=2",
                   "--set", "train.threads=1")
        assert r.returncode == 0, r.stdout + r.stderr
        rep = subprocess.run([os.path.join(ROOT, "analysis", "canary-analyze"), "report",
                              str(out), "--out", str(tmp_path / f"report{np_}")],
                             capture_output=True, text=True, timeout=300)
        assert rep.returncode == 0, rep.stdout + rep.stderr
        text = (tmp_path / f"report{np_}" / "report.md").read_text()
        reports.append([l for l in text.splitlines() if l.startswith("|")])
    assert reports[0] and reports[0] == reports[1]
