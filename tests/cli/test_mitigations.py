"""Mitigations of issue 15 in whole runs: QK-clip holds every head's max logit near tau while the
unclipped run's logits grow; its log-only mode leaves the weights bitwise as without it and still
records eta; it refuses qk-norm. Soft-capping changes the run and records both maxima."""
import re

import h5py
import pytest
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


# Update guards with windows short enough to act within a small run: a tight sigma makes ordinary
# step-to-step noise cross the thresholds, so both guards act several times.
GUARDS = ("optim.guard_window=8", "optim.guard_min=4", "train.steps=40", "probes.every=1",
          "train.threads=1", "optim.lr=1e-2")


def _threshold(prev, k, window, minimum):
    """mean + k sigma (sample std) of the last `window` of prev, NaN below `minimum` values."""
    w = np.asarray(prev[-window:], dtype=np.float64)
    return w.mean() + k * w.std(ddof=1) if len(w) >= minimum else np.nan


def test_skip_step_skips_exactly_and_leaves_the_state(canary, small_config, tmp_path):
    k = 0.5
    out = _runs(canary, small_config, tmp_path,
                (("skip", (*GUARDS, f"optim.skip_sigma={k}")),))["skip"]
    with h5py.File(out / "probes.h5", "r") as f:
        loss, gnorm = np.array(f["loss/total"]), np.array(f["grad/global_norm"])
        skipped, guard = np.array(f["update/skipped"]), np.array(f["optim/guard_skipped"])
        lthr, gthr = np.array(f["optim/skip_loss_threshold"]), np.array(
            f["optim/skip_grad_norm_threshold"])
        prms, vrms = np.array(f["param/rms"]), np.array(f["adam/sqrt_v_rms"])
        urms = np.array(f["update/rms"])
        kinds = [x.decode() if isinstance(x, bytes) else x for x in f["events/kind"][:]]
    assert 0 < guard.sum() < len(guard) // 2 and (skipped == guard).all()
    for i in range(len(loss)):
        want_l = _threshold(loss[:i], k, 8, 4)
        want_g = _threshold(gnorm[:i], k, 8, 4)
        np.testing.assert_allclose([lthr[i], gthr[i]], [want_l, want_g], rtol=1e-12)
        over = (i >= 4) and (loss[i] > want_l or gnorm[i] > want_g)
        assert bool(guard[i]) == over, i
        if guard[i]:  # parameters and AdamW's moments exactly as after the step before
            assert np.array_equal(prms[i], prms[i - 1]) and np.array_equal(vrms[i], vrms[i - 1])
            assert np.isnan(urms[i]).all()
        else:
            assert not np.array_equal(prms[i], prms[i - 1]) if i else True
    assert kinds.count("skip") == guard.sum()


def test_update_clip_caps_the_update_norm(canary, small_config, tmp_path):
    # a long warmup: the update norm grows with the LR, so each step's norm stands above the
    # previous ones' (after it, Adam's update norm only shrinks in a run this smooth)
    k, sets = 0.5, (*GUARDS, "optim.warmup_steps=30")
    outs = _runs(canary, small_config, tmp_path,
                 (("off", sets), ("clip", (*sets, f"optim.update_clip_sigma={k}"))))
    assert _checksum(outs["off"]) != _checksum(outs["clip"])
    with h5py.File(outs["clip"] / "probes.h5", "r") as f:
        norm, thr = np.array(f["update/global_norm"]), np.array(f["optim/update_clip_threshold"])
        factor = np.array(f["optim/update_clip_factor"])
        urms, sizes = np.array(f["update/rms"]), np.prod(np.array(f["tensors/shape"]), axis=1)
        kinds = [x.decode() if isinstance(x, bytes) else x for x in f["events/kind"][:]]
    assert (factor < 1).sum() > 0 and kinds.count("update_clip") == (factor < 1).sum()
    for i in range(len(norm)):
        want = _threshold(norm[:i], k, 8, 4)  # over the previous unclipped norms
        np.testing.assert_allclose(thr[i], want, rtol=1e-12)
        np.testing.assert_allclose(factor[i], min(1.0, want / norm[i]) if i >= 4 else 1.0,
                                   rtol=1e-12)
        # the update that landed (update/rms over every tensor) has norm min(norm, threshold)
        applied = np.sqrt((urms[i] ** 2 * sizes).sum())
        np.testing.assert_allclose(applied, norm[i] * factor[i], rtol=1e-5)


GUARD_RESUME = ("optim.guard_window=8", "optim.guard_min=4", "optim.skip_sigma=0.5",
                "optim.update_clip_sigma=0.5", "train.steps=20", "optim.lr=1e-2")


@pytest.mark.parametrize("np_", [0, 2])
def test_guards_resume_bitwise(canary, small_config, tmp_path, np_):
    from test_checkpoint import assert_resume_is_bitwise
    assert_resume_is_bitwise(canary, small_config, tmp_path, GUARD_RESUME, np_=np_)


def test_guards_resume_with_a_smaller_window(canary, small_config, tmp_path):
    """--resume --set optim.guard_window=N smaller than the checkpoint's keeps its newest N
    values: the same as a run that had the smaller window... only from the checkpoint on, so
    the test checks what the window holds, through the next step's threshold."""
    from test_checkpoint import canary_np, train_args
    out = tmp_path / "run"
    r = canary_np(canary, 0, *train_args(small_config, out, *GUARD_RESUME, "probes.every=1"),
                  env={"CANARY_FAULT": "abort:0:13"})
    assert r.returncode != 0 and (out / "ckpt" / "step_00000010.h5").exists()
    r = canary_np(canary, 0, "train", "--resume", str(out), "--set", "optim.guard_window=4")
    assert r.returncode == 0, r.stdout + r.stderr
    with h5py.File(out / "probes.h5", "r") as f:
        loss, thr = np.array(f["loss/total"]), np.array(f["optim/skip_loss_threshold"])
    # step 11 (row 10) saw the last 4 of steps 1..10 (0.5 sigma, guard_min 4)
    np.testing.assert_allclose(thr[10], _threshold(loss[:10], 0.5, 4, 4), rtol=1e-12)
    assert not np.isclose(thr[10], _threshold(loss[:10], 0.5, 8, 4), rtol=1e-6)


def test_bf16_changes_the_run_and_resumes_bitwise(canary, small_config, tmp_path):
    """train.precision = bf16 trains close to fp32 but not equal to it, names itself in the
    provenance, and (fp32 checkpoints) resumes bit for bit."""
    from test_checkpoint import assert_resume_is_bitwise
    outs = _runs(canary, small_config, tmp_path,
                 (("fp32", ()), ("bf16", ("train.precision=bf16",))))
    assert _checksum(outs["fp32"]) != _checksum(outs["bf16"])
    with h5py.File(outs["bf16"] / "probes.h5", "r") as f:
        assert "bf16" in f["provenance"].attrs["precision"]
        lb = np.array(f["loss/total"])
    with h5py.File(outs["fp32"] / "probes.h5", "r") as f:
        assert f["provenance"].attrs["precision"] == "fp32; backend: OpenBLAS sgemm"
        lf = np.array(f["loss/total"])
    assert lb[0] != lf[0] and abs(lb[-1] - lf[-1]) < 0.05 * lf[-1]
    assert_resume_is_bitwise(canary, small_config, tmp_path / "resume",
                             ("train.precision=bf16",), np_=0)


def test_guard_min_above_the_window_is_refused(canary, small_config, tmp_path):
    out = tmp_path / "run"
    check_refused(train(canary, small_config, out, "optim.skip_sigma=6", "optim.guard_window=16",
                        "optim.guard_min=32"), out,
                  "optim.guard_min = 32 is larger than optim.guard_window = 16")
