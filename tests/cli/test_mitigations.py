"""Mitigations of issue 15 in whole runs: QK-clip holds every head's max logit near tau while the
unclipped run's logits grow; its log-only mode leaves the weights bitwise as without it and still
records eta; it refuses qk-norm. Soft-capping changes the run and records both maxima."""
import re

import h5py
import numpy as np

from test_bad_input import check_refused, train


def _checksum(out):
    m = re.search(r"parameter checksum ([0-9a-f]{16})", (out / "log.txt").read_text())
    assert m, "no parameter checksum in the log"
    return m.group(1)


def _runs(canary, config, tmp_path, variants):
    """{name: run directory} of one training run per (name, extra --set values)."""
    outs = {}
    for name, extra in variants:
        out = tmp_path / name
        r = train(canary, config, out, *FAST, *extra)
        assert r.returncode == 0, r.stderr
        outs[name] = out
    return outs


# a learning rate at which the small model's attention logits grow well past tau within 40 steps
FAST = ("model.qk_norm=false", "optim.lr=5e-2", "train.steps=40", "probes.every=5",
        "train.threads=1")


def test_qk_clip_bounds_the_logits_and_log_only_changes_nothing(canary, small_config, tmp_path):
    tau = 4.0
    runs = {}
    outs = _runs(canary, small_config, tmp_path,
                 (("off", ()), ("on", (f"optim.qk_clip={tau}",)),
                  ("log", (f"optim.qk_clip={tau}", "optim.qk_clip_log_only=true"))))
    for name, out in outs.items():
        with h5py.File(out / "probes.h5", "r") as f:
            runs[name] = {k: np.array(f[k]) for k in ("attn/max_logit", "optim/qk_clip_eta",
                                                     "optim/qk_clip_count") if k in f}
        runs[name]["checksum"] = _checksum(out)
    off, on, log = runs["off"], runs["on"], runs["log"]
    assert "optim/qk_clip_eta" not in off
    assert off["attn/max_logit"][-1].max() > 3 * tau  # without the clip the logits grow
    # With it the logits stay small: QK-clip bounds each head's largest signed logit at tau
    # after every update (attn/max_logit is the largest |logit|, negative ones included, and
    # reads the step's forward before its clip)
    assert on["attn/max_logit"][-1].max() < 2.5 * tau
    assert on["attn/max_logit"][-1].max() < 0.5 * off["attn/max_logit"][-1].max()
    assert on["optim/qk_clip_count"].sum() > 0 and (on["optim/qk_clip_eta"] < 1).any()
    # log-only: the weights of the run without QK-clip, bit for bit, and eta recorded
    assert log["checksum"] == off["checksum"] != on["checksum"]
    assert (log["optim/qk_clip_eta"] < 1).any()
    # the same weights, the same logits: a clipped head's S = tau / eta is at most its max |logit|
    eta, s = log["optim/qk_clip_eta"][-1], off["attn/max_logit"][-1]
    clipped = eta < 1
    assert clipped.any() and (tau / eta[clipped] <= s[clipped] * (1 + 1e-6)).all()


def test_qk_clip_refuses_qk_norm(canary, small_config, tmp_path):
    out = tmp_path / "run"
    check_refused(train(canary, small_config, out, "optim.qk_clip=5", "model.qk_norm=true"), out,
                  "optim.qk_clip = 5 with model.qk_norm = true", "use one or the other")


def test_stable_adamw_scales_the_tensors_it_names(canary, small_config, tmp_path):
    outs = _runs(canary, small_config, tmp_path,
                 (("off", ()), ("stable", ("optim.stable_adamw=true",))))
    assert _checksum(outs["off"]) != _checksum(outs["stable"])
    with h5py.File(outs["stable"] / "probes.h5", "r") as f:
        scaled = np.array(f["optim/stable_scaled"])
        factor = np.array(f["adam/stable_factor"])
        assert scaled.sum() > 0 and ((factor > 0) & (factor <= 1)).all() and (factor < 1).any()
        # the count of every probe step agrees with its per-tensor row
        steps, pstep = np.array(f["step"]), np.array(f["probe_step"])
        for i, s in enumerate(pstep):
            assert scaled[np.searchsorted(steps, s)] == (factor[i] < 1).sum()
    with h5py.File(outs["off"] / "probes.h5", "r") as f:
        assert "adam/stable_factor" not in f


def test_softcap_changes_the_run_and_records_both_maxima(canary, small_config, tmp_path):
    outs = _runs(canary, small_config, tmp_path,
                 (("off", ()), ("cap", ("model.attn_softcap=2", "model.final_softcap=3"))))
    assert _checksum(outs["off"]) != _checksum(outs["cap"])
    with h5py.File(outs["cap"] / "probes.h5", "r") as f:
        raw, capped = np.array(f["attn/max_logit"]), np.array(f["attn/max_logit_capped"])
        assert np.allclose(capped, 2 * np.tanh(raw / 2), rtol=1e-12)
        assert (capped < 2).all() and raw.max() > 2
        out_raw, out_cap = np.array(f["output/logit_max"]), np.array(f["output/logit_max_capped"])
        assert np.allclose(out_cap, 3 * np.tanh(out_raw / 3), rtol=1e-12)
        # log Z of the capped logits is bounded by log V + cap
        assert np.array(f["output/logz_max"]).max() <= np.log(256) + 3 + 1e-6
