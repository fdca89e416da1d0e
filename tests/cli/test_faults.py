"""Faults across ranks (issue 8): a rank SIGKILLed mid-run brings the job down within 10 s naming
the rank, and the run resumes bitwise from its last checkpoint; SIGTERM / SIGINT / SIGUSR1 (a
scheduler's preemption, Ctrl-C) stop every rank at the next step boundary with a checkpoint,
flushed probes, a `stopped` event and exit code 4. The full disk during a checkpoint is in
test_checkpoint.py. A rank is stopped at a known step with CANARY_FAULT=stall:RANK:STEP."""
import os
import signal
import subprocess
import time

import h5py
import numpy as np
import pytest

from test_checkpoint import canary_np, checksum, probe_arrays, rows, train_args, ENV


def start(canary, np_, config, out, stall_rank=1):
    e = dict(os.environ, **ENV, CANARY_FAULT=f"stall:{stall_rank if np_ else 0}:10")
    cmd = [canary, *train_args(config, out)]
    if np_:
        cmd = ["mpiexec", "-n", str(np_), "--oversubscribe", *cmd]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=e)


def wait_for(path, proc, timeout=120):
    end = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < end, f"{path} never appeared"
        time.sleep(0.05)
    time.sleep(0.3)  # the rank is now in its stall


def rank_pid(mpiexec, rank):
    """The pid of one rank among mpiexec's children (Open MPI sets OMPI_COMM_WORLD_RANK)."""
    kids = subprocess.run(["pgrep", "-P", str(mpiexec.pid)], capture_output=True, text=True)
    for pid in kids.stdout.split():
        with open(f"/proc/{pid}/environ", "rb") as f:
            if f"OMPI_COMM_WORLD_RANK={rank}".encode() in f.read().split(b"\0"):
                return int(pid)
    raise AssertionError(f"rank {rank} not found among the children of mpiexec")


def straight_run(canary, config, out, np_=2):
    r = canary_np(canary, np_, *train_args(config, out))
    assert r.returncode == 0, r.stderr
    return out


def test_sigkill_of_one_rank_ends_the_job_and_resume_is_bitwise(canary, small_config, tmp_path):
    straight = straight_run(canary, small_config, tmp_path / "straight")
    out = tmp_path / "killed"
    p = start(canary, 2, small_config, out)
    wait_for(out / "ckpt" / "step_00000010.h5", p)
    os.kill(rank_pid(p, 1), signal.SIGKILL)
    t0 = time.time()
    stdout, stderr = p.communicate(timeout=60)
    took = time.time() - t0
    assert p.returncode != 0
    assert took < 10, f"the job took {took:.1f} s to end"
    assert "rank 1" in stdout + stderr and "signal 9" in stdout + stderr, stdout + stderr

    r = canary_np(canary, 2, "train", "--resume", str(out), "--set", "train.threads=1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resumed from step 10" in r.stdout
    assert checksum(out) == checksum(straight)
    assert rows(out) == rows(straight)


@pytest.mark.parametrize("how", ["TERM to rank 1", "INT to rank 0", "USR1 to mpiexec",
                                 "TERM to both ranks", "INT without mpiexec"])
def test_stop_signal_checkpoints_and_exits_4(canary, small_config, tmp_path, how):
    name, target = how.split(" ", 1)
    sig = getattr(signal, "SIG" + name)
    np_ = 0 if target == "without mpiexec" else 2
    straight = straight_run(canary, small_config, tmp_path / "straight", np_)
    out = tmp_path / "stopped"
    # the stalled rank (stuck after step 10, until a signal reaches it) is the signalled one
    stall_rank = int(target[-1]) if target.startswith("to rank") else 1
    p = start(canary, np_, small_config, out, stall_rank)
    wait_for(out / "ckpt" / "step_00000010.h5", p)
    if np_ == 0 or target == "to mpiexec":
        pids = [p.pid]
    elif target == "to both ranks":  # what Slurm does on preemption
        pids = [rank_pid(p, 0), rank_pid(p, 1)]
    else:
        pids = [rank_pid(p, int(target[-1]))]
    for pid in pids:
        os.kill(pid, sig)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 4, stdout + stderr
    # a rank stalled after step 10, so every rank stops at the end of step 11
    assert (out / "ckpt" / "step_00000011.h5").exists()
    assert "checkpoint at step 11, then exit" in stdout, stdout
    with h5py.File(out / "probes.h5", "r") as f:  # flushed and closed: every row is there
        kinds = list(f["events/kind"].asstr()[:])
        assert kinds[-1] == "stopped", kinds
        assert f["events/step"][-1] == 11
        assert f["step"][-1] == 11 and len(f["step"]) == 11

    r = canary_np(canary, np_, "train", "--resume", str(out), "--set", "train.threads=1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resumed from step 11" in r.stdout
    assert checksum(out) == checksum(straight)
    assert rows(out) == rows(straight)
    a, b = probe_arrays(straight), probe_arrays(out)
    for k in a:
        if not k.startswith("events/"):  # the stopped run has one event more
            assert np.array_equal(a[k], b[k], equal_nan=True), k


ABSURD = [
    (["model.dim=1000000000"], "out of range"),
    (["model.seq_len=1000000000"], "out of range"),
    (["model.vocab=1000000000"], "out of range"),
    (["model.layers=1000000"], "out of range"),
    (["train.batch_size=1000000000"], "needs about"),
    (["model.dim=65536"], "needs about"),
    (["model.seq_len=1048576"], "needs about"),
    (["model.layers=1024", "model.dim=65536", "model.heads=64"], "needs about"),
    (["model.experts=1000000"], "out of range"),
    (["model.experts=4096", "model.dim=4096", "model.heads=64"], "needs about"),
    (["model.attention=mla", "model.seq_len=1048576"], "needs about"),
    (["model.layers=1024", "model.experts=4096", "model.dim=2", "model.heads=1",
      "model.mlp_ratio=1"], "parameter tensors"),
]


@pytest.mark.parametrize("sets,message", ABSURD, ids=[" ".join(s) for s, _ in ABSURD])
@pytest.mark.parametrize("command", ["train", "bench"])
def test_absurd_sizes_are_refused_before_any_allocation(canary, small_config, tmp_path, sets,
                                                        message, command):
    """Under a 3 GiB address-space limit an attempt to allocate would fail differently (or the
    OOM killer would end it): the refusal has to come from the range checks or the estimate."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    args = ["--config", str(small_config)] + [a for s in sets for a in ("--set", s)]
    if command == "train":
        args = ["train", "--out", str(tmp_path / "run")] + args
    else:
        args = ["bench", "--steps", "1"] + args
    r = canary_np(canary, 0, *args, preexec=limit)
    assert r.returncode == 1, r.stdout + r.stderr
    assert message in r.stderr, r.stderr
    assert not (tmp_path / "run").exists()


def test_stop_signal_stops_a_sweep(canary, small_config, tmp_path):
    """A preempted sweep: the running point checkpoints and is marked stopped, no further point
    starts, exit code 4."""
    study = tmp_path / "study.ini"
    study.write_text(small_config.read_text() + "\n[sweep]\noptim.lr = 1e-3, 3e-3\n")
    out = tmp_path / "sweep"
    e = dict(os.environ, **ENV, CANARY_FAULT="stall:0:10")
    p = subprocess.Popen([canary, "sweep", "--config", str(study), "--out", str(out), "--set",
                          "train.steps=20", "--set", "train.checkpoint_every=10"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)
    first = out / "000_lr-1e-3"
    wait_for(first / "ckpt" / "step_00000010.h5", p)
    os.kill(p.pid, signal.SIGTERM)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 4, stdout + stderr
    assert (first / "ckpt" / "step_00000011.h5").exists()
    rows = [l.split("\t") for l in (out / "index.tsv").read_text().splitlines()[1:]]
    assert [r[2] for r in rows] == ["stopped"], rows  # the second point never started
    assert not (out / "001_lr-3e-3").exists()
