"""canary replay: a spike replayed bit for bit (dense, MoE, Muon; np 1 and 2; a deterministic run
at another rank count), the counterfactual branches' files, a planted bad sample found and ranked
first, a replay that parts from the run, one at another thread count, a run resumed with other
settings, and bad input."""
import os
import re
import subprocess

import h5py
import numpy as np
import pytest

from conftest import ROOT

from test_checkpoint import canary_np, train_args
from test_moe import MOE

# 30 steps, checkpoints at 10 and 20 (and the final one at 30); step 22 replays from 10 with
# K = 6 (steps 11 .. 28), from the state before 22
RUN_SETS = ("train.steps=30", "train.eval_every=0", "train.keep_checkpoints=5")
S, K = 22, 6


def train(canary, config, out, np_, *sets, env=None):
    r = canary_np(canary, np_, *train_args(config, out, *RUN_SETS, *sets), env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def replay(canary, out, np_, *args, env=None):
    return canary_np(canary, np_, "replay", "--run", str(out), "--step", str(S), "--window",
                     str(K), "--set", "train.threads=1", *args, env=env)


def tsv(path):
    lines = path.read_text().splitlines()
    head = lines[0].split("\t")
    return [dict(zip(head, l.split("\t"))) for l in lines[1:]]


def metric_rows(path):
    return {int(r["step"]): r for r in tsv(path) if r["kind"] == "train"}


def assert_reproduced(out, first, last):
    """The replay's rows and its probes' loss equal the run's, step for step."""
    rep = out / "replay" / f"step_{S}"
    run, again = metric_rows(out / "metrics.tsv"), metric_rows(rep / "metrics.tsv")
    assert sorted(again) == list(range(first, last + 1))
    cols = ("loss", "ce", "z", "lr", "grad_norm", "clip_factor")
    for s in again:
        assert [run[s][c] for c in cols] == [again[s][c] for c in cols], s
    with h5py.File(out / "probes.h5") as a, h5py.File(rep / "probes.h5") as b:
        steps_a, steps_b = a["step"][:], b["step"][:]
        la, lb = a["loss/total"][:], b["loss/total"][:]
        for i, s in enumerate(steps_b):
            j = int(np.flatnonzero(steps_a == s)[0])
            assert la[j] == lb[i], s
        assert b["probe_step"].shape[0] == last - first + 1  # every probe at cadence 1
        assert b["lr_probe/step"].shape[0] == last - first + 1


@pytest.mark.parametrize("np_,sets", [
    (0, ()),
    (2, ()),
    (0, MOE),
    (2, MOE),
    (0, ("optim.name=muon",)),
    (2, ("optim.name=muon",)),
])
def test_replay_is_bitwise(canary, small_config, tmp_path, np_, sets):
    out = tmp_path / "run"
    train(canary, small_config, out, np_, *sets)
    r = replay(canary, out, np_)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "reproduced: the 18 replayed steps" in r.stdout
    assert "from" in r.stdout and "step_00000010.h5" in r.stdout
    assert_reproduced(out, 11, S + K)
    rep = out / "replay" / f"step_{S}"
    assert (rep / "ckpt" / f"step_{S - 1:08d}.h5").exists()  # the state before S
    branches = tsv(rep / "branches.tsv")
    assert [b["branch"] for b in branches] == ["as_run", "drop", "unseen", "half_lr", "reset_m",
                                               "skip", "guard_skip", "guard_clip"]
    for b in branches[1:]:
        assert b["ran"] == "1", b
        assert len(metric_rows(rep / f"branch_{b['branch']}" / "metrics.tsv")) == K + 1
    # the batch of S is the same in the replay and in every branch that trains on it
    same = {b["branch"]: b["loss_at_S"] for b in branches}
    assert same["half_lr"] == same["as_run"] == same["skip"] == same["reset_m"]
    assert same["drop"] != same["as_run"] and same["unseen"] != same["as_run"]
    # the replay's own row: its loss and gradient norm at S are the run's
    run = metric_rows(out / "metrics.tsv")
    assert float(branches[0]["loss_at_S"]) == pytest.approx(float(run[S]["loss"]), rel=1e-8)
    assert float(branches[0]["grad_norm_at_S"]) == pytest.approx(float(run[S]["grad_norm"]),
                                                                  rel=1e-8)
    assert float(branches[0]["loss_at_end"]) == pytest.approx(float(run[S + K]["loss"]),
                                                               rel=1e-8)
    summary = {r["key"]: r["value"] for r in tsv(rep / "summary.tsv")}
    assert summary["reproduced"] == "1" and summary["start_step"] == "10"


def test_skip_branch_keeps_the_weights_of_step_s_minus_1(canary, small_config, tmp_path):
    """The skip branch's parameters after S are those before S: its param/rms row at S equals the
    replay's at S - 1, and the replay's own row at S differs."""
    out = tmp_path / "run"
    train(canary, small_config, out, 0)
    assert replay(canary, out, 0).returncode == 0
    rep = out / "replay" / f"step_{S}"
    with h5py.File(rep / "probes.h5") as a, h5py.File(rep / "branch_skip" / "probes.h5") as b:
        pa, pb = a["param/rms"][:], b["param/rms"][:]
        sa, sb = list(a["probe_step"][:]), list(b["probe_step"][:])
        before, at = pa[sa.index(S - 1)], pa[sa.index(S)]
        assert np.array_equal(pb[sb.index(S)], before)
        assert not np.array_equal(at, before)
        assert b["update/skipped"][list(b["step"][:]).index(S)] == 1


def test_deterministic_run_replays_at_another_rank_count(canary, small_config, tmp_path):
    out = tmp_path / "run"
    train(canary, small_config, out, 2, "train.deterministic=true", "train.grad_accum=2")
    r = replay(canary, out, 0)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "reproduced" in r.stdout
    assert_reproduced(out, 11, S + K)


def test_planted_bad_sample_is_ranked_first(canary, small_config, tmp_path):
    """A sequence of one repeated byte, planted in the batch of S on rank 1 at a high LR, tops
    the ranking of batch S, far above the batch mean; the replay (with the same fault hook)
    still reproduces the run, and the branches that do not train on that batch see another
    loss at S."""
    out = tmp_path / "run"
    env = {"CANARY_FAULT": f"repeat:1:{S}"}
    train(canary, small_config, out, 2, "optim.lr=3e-2", env=env)
    r = replay(canary, out, 2, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = tsv(out / "replay" / f"step_{S}" / "batch.tsv")
    assert rows[0]["rank"] == "1"
    assert rows[0]["sequence"] == "4"  # rank 1's first sequence of a global batch of 8
    assert rows[0]["text"] == "\\xff" * 33
    assert float(rows[0]["loss_minus_mean"]) > 1.0
    assert float(rows[1]["loss_minus_mean"]) < float(rows[0]["loss_minus_mean"]) / 2
    # the analysis lists the replay with the same ranking and who moved first
    a = subprocess.run([os.path.join(ROOT, "analysis", "canary-analyze"), "spikes", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert a.returncode == 0, a.stderr
    assert "**Reproduced**" in a.stdout
    assert "| 1 | 4 | " in a.stdout and "`" + "\\xff" * 20 in a.stdout
    # a tensor crossed 3 sigma at S itself (the bad sample's gradient), listed first
    assert re.search(r"^\| 1 \| \S+ \| %d \| (grad|update)/rms \|" % S, a.stdout, re.M), a.stdout
    # the branches that do not train on that batch see a lower loss at S
    br = {b["branch"]: float(b["loss_at_S"]) for b in tsv(out / "replay" / f"step_{S}" /
                                                       "branches.tsv")}
    assert br["drop"] < br["as_run"] and br["unseen"] < br["as_run"]


def test_replay_that_parts_from_the_run_says_where(canary, small_config, tmp_path):
    out = tmp_path / "run"
    train(canary, small_config, out, 0)
    lines = (out / "metrics.tsv").read_text().splitlines()
    for i, l in enumerate(lines):
        f = l.split("\t")
        if f[0] == "train" and f[1] == "15":
            f[4] = repr(float(f[4]) * (1 + 1e-15) + 1e-300)  # z: the last bits
            lines[i] = "\t".join(f)
    (out / "metrics.tsv").write_text("\n".join(lines) + "\n")
    r = replay(canary, out, 0)
    assert r.returncode == 5, r.stdout + r.stderr
    assert "parts from the run at step 15 (z " in r.stdout


def _threshold(values, k):
    w = np.asarray(values, dtype=np.float64)
    return w.mean() + k * w.std(ddof=1)


def test_replay_guard_branches_use_the_steps_before_s(canary, small_config, tmp_path):
    """The guard branches arm their windows with the steps before S: at S the skip branch's
    loss and gradient-norm thresholds are mean + k sigma of the run's losses and gradient norms
    of steps 1 .. S-1, and the clip branch's that of the replay's update norms of steps
    start+1 .. S-1 (read from its probes, since each guard's decisions follow from them)."""
    out = tmp_path / "run"
    train(canary, small_config, out, 0)
    r = replay(canary, out, 0, "--skip-sigma", "0.5", "--update-clip-sigma", "0.5")
    assert r.returncode == 0, r.stdout + r.stderr
    rep = out / "replay" / f"step_{S}"
    br = {b["branch"]: b for b in tsv(rep / "branches.tsv")}
    # skip-step reads the run's rows (steps 1 .. S-1), update clipping the replayed update
    # norms (steps 11 .. S-1)
    assert br["guard_skip"]["note"] == f"0.5 sigma over the {S - 1} steps before S"
    assert br["guard_clip"]["note"] == f"0.5 sigma over the {S - 11} steps before S"
    assert br["guard_skip"]["ran"] == br["guard_clip"]["ran"] == "1"
    run = metric_rows(out / "metrics.tsv")
    before = range(1, S)
    with h5py.File(rep / "branch_guard_skip" / "probes.h5") as f:
        i = int(np.flatnonzero(f["step"][:] == S)[0])
        got = f["optim/skip_loss_threshold"][i], f["optim/skip_grad_norm_threshold"][i]
    want = (_threshold([float(run[s]["loss"]) for s in before], 0.5),
            _threshold([float(run[s]["grad_norm"]) for s in before], 0.5))
    np.testing.assert_allclose(got, want, rtol=1e-12)
    with h5py.File(rep / "probes.h5") as f:  # the update norms, from the per-tensor RMS
        steps, sizes = f["step"][:], np.prod(f["tensors/shape"][:], axis=1)
        unorm = np.sqrt((f["update/rms"][:] ** 2 * sizes).sum(axis=1))
    with h5py.File(rep / "branch_guard_clip" / "probes.h5") as f:
        i = int(np.flatnonzero(f["step"][:] == S)[0])
        got = f["optim/update_clip_threshold"][i]
    want = _threshold([unorm[int(np.flatnonzero(steps == s)[0])] for s in range(11, S)], 0.5)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_replay_at_another_thread_count_parts_as_expected(canary, small_config, tmp_path):
    """OpenBLAS's threaded sgemm sums in another order at another thread count, so such a
    replay cannot be bitwise: where it parts is reported, as expected, and it exits 0."""
    out = tmp_path / "run"
    train(canary, small_config, out, 0, "train.threads=1")
    r = canary_np(canary, 0, "replay", "--run", str(out), "--step", str(S), "--window", str(K),
                  "--set", "train.threads=2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"parts from the run at step \d+ \(.*\), as expected: it runs 2 threads "
                     r"per rank where the run ran 1", r.stdout), r.stdout
    assert "NOT REPRODUCED" not in r.stdout


@pytest.mark.parametrize("np_", [0, 2])
def test_replay_of_a_run_resumed_with_other_settings(canary, small_config, tmp_path, np_):
    """A resume with --set keeps the earlier config as config.ini.to_step_N; a replay reruns
    steps with the config they ran with, and refuses a window that the resume splits."""
    out = tmp_path / "run"
    train(canary, small_config, out, np_, "train.steps=20")
    r = canary_np(canary, np_, "train", "--resume", str(out), "--set", "train.steps=30",
                  "--set", "optim.lr=0.002")
    assert r.returncode == 0, r.stdout + r.stderr
    assert ("resumed with other settings than steps 1 .. 20 ran with (those are kept in "
            "config.ini.to_step_00000020)") in r.stdout, r.stdout
    assert "train.steps 20 -> 30" in r.stdout and "optim.lr " in r.stdout
    kept = (out / "config.ini.to_step_00000020").read_text()
    assert re.search(r"^steps = 20", kept, re.M) and re.search(r"^steps = 30",
                                                             (out / "config.ini").read_text(), re.M)
    # steps 11 .. 28 from the checkpoint at 10 cross the resume at 20: refused
    r = replay(canary, out, np_)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "resumed after step 20 with other settings" in r.stderr, r.stderr
    assert not (out / "replay" / f"step_{S}").exists()
    # on either side of it, each with its own config, bit for bit
    for step, window in ((15, 3), (25, 3)):
        r = canary_np(canary, np_, "replay", "--run", str(out), "--step", str(step), "--window",
                      str(window), "--set", "train.threads=1")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "reproduced: the 8 replayed steps" in r.stdout, r.stdout
    assert sorted(p.name for p in out.glob("config.ini*")) == ["config.ini",
                                                              "config.ini.to_step_00000020"]


def test_second_resume_from_the_same_step_keeps_what_ran(canary, small_config, tmp_path):
    """A resume with other settings that dies before its next checkpoint, resumed again from
    the same step with yet other settings: config.ini.to_step_N still holds what steps 1 .. N
    ran with, and the header compares with that."""
    out = tmp_path / "run"
    train(canary, small_config, out, 0, "train.steps=20")
    lr0 = re.search(r"^lr = (\S+)", (out / "config.ini").read_text(), re.M).group(1)
    r = canary_np(canary, 0, "train", "--resume", str(out), "--set", "train.steps=30",
                  "--set", "optim.lr=0.002", env={"CANARY_FAULT": "abort:0:23"})
    assert r.returncode != 0 and "fault injected" in r.stderr, r.stdout + r.stderr
    r = canary_np(canary, 0, "train", "--resume", str(out), "--set", "train.steps=30",
                  "--set", "optim.lr=0.004")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"optim.lr {lr0} -> 0.004" in r.stdout, r.stdout
    kept = (out / "config.ini.to_step_00000020").read_text()
    assert re.search(rf"^lr = {re.escape(lr0)}(\s|$)", kept, re.M), kept
    assert re.search(r"^steps = 20", kept, re.M)
    r = canary_np(canary, 0, "replay", "--run", str(out), "--step", "15", "--window", "3",
                  "--set", "train.threads=1")
    assert r.returncode == 0 and "reproduced" in r.stdout, r.stdout + r.stderr


def test_replay_bad_input(canary, small_config, tmp_path):
    out = tmp_path / "run"
    train(canary, small_config, out, 0)
    r = canary_np(canary, 0, "replay", "--run", str(out), "--step", "31")
    assert r.returncode == 1 and "step 31 is outside the run" in r.stderr, r.stderr
    assert "stopped at" not in r.stderr  # the run finished: no step after its last
    r = canary_np(canary, 0, "replay", "--run", str(out), "--step", "0")
    assert r.returncode == 1 and "--step takes a number" in r.stderr, r.stderr
    r = canary_np(canary, 0, "replay", "--run", str(out))
    assert r.returncode == 1 and "--run DIR and --step S are required" in r.stderr
    r = canary_np(canary, 0, "replay", "--run", str(tmp_path / "nope"), "--step", "3")
    assert r.returncode == 1 and "nope" in r.stderr
    r = canary_np(canary, 2, "replay", "--run", str(out), "--step", "5")
    assert r.returncode == 1 and "trained on 1 rank(s); replay it on as many" in r.stderr
    r = canary_np(canary, 0, "replay", "--run", str(out), "--step", "5", "--set", "optim.lr=1")
    assert r.returncode == 1 and "only train.threads may differ" in r.stderr, r.stderr
    # a second replay of the same step does not overwrite the first, unless --force
    assert canary_np(canary, 0, "replay", "--run", str(out), "--step", "5").returncode == 0
    r = canary_np(canary, 0, "replay", "--run", str(out), "--step", "5")
    assert r.returncode == 1 and "replay/step_5 already holds a replay" in r.stderr, r.stderr
    (out / "replay" / "step_5" / "summary.tsv").unlink()
    r = canary_np(canary, 0, "replay", "--run", str(out), "--step", "5", "--force")
    assert r.returncode == 0, r.stderr
    assert (out / "replay" / "step_5" / "summary.tsv").exists()
    for p in (out / "ckpt").iterdir():
        p.unlink()
    r = canary_np(canary, 0, "replay", "--run", str(out), "--step", "7")
    assert r.returncode == 1 and "has no checkpoint" in r.stderr, r.stderr


def test_replay_of_the_step_a_run_stopped_at(canary, small_config, tmp_path):
    """A run that stopped at step 25 (as on a non-finite loss: no row for it) replays through
    25: steps 11..24 checked against the run, 25 taken, and the branches run from before it."""
    out = tmp_path / "run"
    train(canary, small_config, out, 0)
    lines = (out / "metrics.tsv").read_text().splitlines()
    keep = [l for l in lines if not l.startswith("train") or int(l.split("\t")[1]) < 25]
    (out / "metrics.tsv").write_text("\n".join(keep) + "\n")
    r = canary_np(canary, 0, "replay", "--run", str(out), "--step", "26")
    assert r.returncode == 1 and "and the step it stopped at, 25" in r.stderr, r.stderr
    r = canary_np(canary, 0, "replay", "--run", str(out), "--step", "25", "--window", "6")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "reproduced: the 15 replayed steps" in r.stdout
    rep = out / "replay" / "step_25"
    assert sorted(metric_rows(rep / "metrics.tsv")) == list(range(11, 26))
    branches = tsv(rep / "branches.tsv")
    assert len(branches) == 8 and all(b["ran"] == "1" for b in branches)
    assert len(metric_rows(rep / "branch_skip" / "metrics.tsv")) == 1


def test_replay_records_the_runs_spike_events(canary, small_config, tmp_path):
    """The replay's spike windows start from the run's rows, so the run's spike events inside the
    replayed steps come back, step for step, also those within a window of the replay's start
    (step 10), which an empty window could not see (a low line makes events likely)."""
    out = tmp_path / "run"
    sets = ("probes.spike_window=16", "probes.spike_sigma=0.3")
    train(canary, small_config, out, 0, *sets)
    assert replay(canary, out, 0).returncode == 0

    def spikes(path, first, last):
        with h5py.File(path) as f:
            return [(int(s), d) for s, k, d in zip(f["events/step"][:],
                                                   f["events/kind"].asstr()[:],
                                                   f["events/detail"].asstr()[:])
                    if k == "spike" and first <= s <= last]
    want = spikes(out / "probes.h5", 11, S + K)
    assert any(s <= 10 + 16 for s, _ in want), want  # the test needs such events
    assert spikes(out / "replay" / f"step_{S}" / "probes.h5", 11, S + K) == want
