"""Data parallelism through mpiexec: world-size invariance of losses, deterministic mode,
cross-rank consistency, a failing rank, and sweeps over rank groups."""
import os
import re
import socket
import subprocess
import time

import pytest

from conftest import SMALL_CONFIG

MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def mpirun(canary, np, *args, env=None, timeout=300):
    e = dict(os.environ, **MPI_ENV)
    if env:
        e.update(env)
    cmd = ["mpiexec", "-n", str(np), "--oversubscribe", canary, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=timeout)


def train(canary, np, config, out, *sets, env=None):
    args = ["train", "--config", str(config), "--out", str(out)]
    for s in ("train.steps=20", "train.check_every=1", "train.threads=1") + sets:
        args += ["--set", s]
    return mpirun(canary, np, *args, env=env)


def losses(out):
    rows = [l.split("\t") for l in (out / "metrics.tsv").read_text().splitlines()[1:]]
    return [(r[0], r[1], r[2], r[3], r[4], r[6]) for r in rows]  # kind, step, loss parts, gnorm


def checksum(out):
    m = re.search(r"parameter checksum ([0-9a-f]{16})", (out / "log.txt").read_text())
    assert m, "no parameter checksum in the log"
    return m.group(1)


def test_world_size_invariant_losses(canary, small_config, tmp_path):
    """np = 1, 2, 4 see the same global batches: losses agree to 1e-5 over 20 steps, and
    check_every = 1 verifies after every step that all ranks hold the same parameters."""
    ref = None
    for np in (1, 2, 4):
        out = tmp_path / f"np{np}"
        r = train(canary, np, small_config, out)
        assert r.returncode == 0, r.stdout + r.stderr
        vals = [float(row[2]) for row in losses(out)]
        assert len(vals) == 20 + 5  # 20 steps, evaluations at 0, 5, 10, 15, 20
        if ref is None:
            ref = vals
        else:
            for a, b in zip(vals, ref):
                assert abs(a - b) <= 1e-5 * abs(b), (np, a, b)


@pytest.mark.parametrize("extra", [(), ("model.attn_softcap=0.5", "model.final_softcap=2"),
                                   ("optim.qk_clip=2", "optim.lr=3e-2"),
                                   ("optim.stable_adamw=true", "optim.lr=3e-2"),
                                   ("model.mup=full", "model.mup_base_width=16"),
                                   ("optim.skip_sigma=0.3", "optim.update_clip_sigma=0.3",
                                    "optim.guard_window=8", "optim.guard_min=4",
                                    "optim.warmup_steps=10"),
                                   ("train.precision=bf16",)],
                         ids=["plain", "softcap", "qk_clip", "stable_adamw", "mup", "guards",
                              "bf16"])
def test_deterministic_mode_is_bitwise_identical(canary, small_config, tmp_path, extra):
    results = []
    for np in (1, 2, 4):
        out = tmp_path / f"det{np}"
        r = train(canary, np, small_config, out, "train.deterministic=true",
                  "train.grad_accum=4", *extra)
        assert r.returncode == 0, r.stdout + r.stderr
        results.append((losses(out), checksum(out)))
    assert results[0] == results[1] == results[2]


def test_deterministic_mode_rejects_bad_geometry(canary, small_config, tmp_path):
    out = tmp_path / "bad"
    r = train(canary, 2, small_config, out, "train.deterministic=true", "train.grad_accum=1")
    assert r.returncode == 1
    assert "train.deterministic" in r.stderr and "multiple of the ranks" in r.stderr
    assert not out.exists()


def test_failing_rank_brings_the_job_down(canary, small_config, tmp_path):
    t0 = time.time()
    r = train(canary, 2, small_config, tmp_path / "fault", "train.steps=200",
              env={"CANARY_FAULT": "abort:1:3"})
    elapsed = time.time() - t0
    assert r.returncode != 0
    assert elapsed < 10, f"took {elapsed:.1f} s"
    # the rank and its host, as "[1 on HOST] file:line function: message"
    host = socket.gethostname()
    assert re.search(r"^\[1 on %s\] .*fault injected by CANARY_FAULT at step 3" % re.escape(host),
                     r.stderr, re.M), r.stderr


def test_parameter_mismatch_is_caught_and_named(canary, small_config, tmp_path):
    r = train(canary, 2, small_config, tmp_path / "drift", env={"CANARY_FAULT": "perturb:1:4"})
    assert r.returncode != 0
    assert "parameters differ across ranks after step 4: first differing tensor" in r.stderr


def test_batch_not_divisible_by_ranks(canary, small_config, tmp_path):
    out = tmp_path / "b"
    r = train(canary, 4, small_config, out, "train.batch_size=6")
    assert r.returncode == 1
    assert "train.batch_size = 6 must divide by ranks (4)" in r.stderr
    assert not out.exists()


# ---- sweeps ----

STUDY = SMALL_CONFIG.replace("steps = 12", "steps = 30") + """
[sweep]
optim.lr = 1e-3, 3e-3, 100
model.qk_norm = true, false
ranks_per_run = {rpr}
"""


def write_study(tmp_path, corpus, rpr, extra=""):
    path = tmp_path / f"study{rpr}.ini"
    # without clipping, lr = 100 ends far above the loss at initialisation: diverged
    text = STUDY.format(rpr=rpr).replace("[optim]\n", "[optim]\nclip = 0\n")
    path.write_text(text + f"\n[data]\ntrain = {corpus}\n" + extra)
    return path


@pytest.mark.parametrize("np,rpr", [(2, 1), (2, 2), (4, 2)])
def test_sweep_runs_every_point_once(canary, tmp_path, corpus, np, rpr):
    study = write_study(tmp_path, corpus, rpr)
    out = tmp_path / "sweep"
    r = mpirun(canary, np, "sweep", "--config", str(study), "--out", str(out),
               "--set", "train.eval_every=0")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = (out / "index.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["id", "optim.lr", "model.qk_norm", "status", "steps", "l0",
                                    "final_eval_loss"]
    rows = [l.split("\t") for l in lines[1:]]
    assert len(rows) == 6
    grid = [(lr, qk) for lr in ("1e-3", "3e-3", "100") for qk in ("true", "false")]
    assert [(row[1], row[2]) for row in rows] == grid  # each point once, in grid order
    for row in rows:
        run_dir = out / row[0]
        assert (run_dir / "config.ini").exists() and (run_dir / "metrics.tsv").exists()
        cfg = (run_dir / "config.ini").read_text()
        assert f"lr = {row[1]}  ; sweep" in cfg.replace("0.001", "1e-3").replace(
            "0.0030000000000000001", "3e-3").replace("0.003", "3e-3")
        if row[1] == "100":
            assert row[3] == "diverged", row
            assert not float(row[6]) <= float(row[5])
        else:
            assert row[3] == "ok", row
            assert int(row[4]) == 30 and float(row[6]) < float(row[5])
    assert r.stdout.count("] ok") == 4 and r.stdout.count("] diverged") == 2


def test_sweep_bad_inputs(canary, tmp_path, corpus):
    out = tmp_path / "s"
    study = write_study(tmp_path, corpus, 4)
    r = mpirun(canary, 2, "sweep", "--config", str(study), "--out", str(out))
    assert r.returncode == 1 and "ranks_per_run = 4 does not divide the 2 ranks" in r.stderr
    assert not out.exists()

    bad = tmp_path / "unknown.ini"
    bad.write_text(f"[data]\ntrain = {corpus}\n[sweep]\noptim.lrr = 1e-3, 1e-2\n")
    r = mpirun(canary, 1, "sweep", "--config", str(bad), "--out", str(out))
    assert r.returncode == 1 and "'optim.lrr' is not a config key" in r.stderr
    assert "did you mean 'optim.lr'" in r.stderr

    for values in ("", "1e-3,,1e-2"):
        bad.write_text(f"[data]\ntrain = {corpus}\n[sweep]\noptim.lr = {values}\n")
        r = mpirun(canary, 1, "sweep", "--config", str(bad), "--out", str(out))
        assert r.returncode == 1 and "optim.lr" in r.stderr and "empty" in r.stderr, r.stderr

    bad.write_text(f"[data]\ntrain = {corpus}\n[sweep]\noptim.lr = 1e-3, 1e-2\n"
                   "ranks_per_run = 1\nranks_per_run = 2\n")
    r = mpirun(canary, 1, "sweep", "--config", str(bad), "--out", str(out))
    assert r.returncode == 1 and "[sweep] ranks_per_run is set twice" in r.stderr, r.stderr
    # a [sweep] that sweeps nothing; a --set of a swept key (the grid would override it)
    bad.write_text(f"[data]\ntrain = {corpus}\n[sweep]\nranks_per_run = 1\n")
    r = mpirun(canary, 1, "sweep", "--config", str(bad), "--out", str(out))
    assert r.returncode == 1 and "sweeps no key" in r.stderr, r.stderr
    bad.write_text(f"[data]\ntrain = {corpus}\n[sweep]\noptim.lr = 1e-3, 1e-2\n")
    for spaced in ("optim.lr=1e-4", "optim.lr = 1e-4"):
        r = mpirun(canary, 1, "sweep", "--config", str(bad), "--out", str(out), "--set", spaced)
        assert r.returncode == 1 and "--set optim.lr: optim.lr is swept in" in r.stderr, r.stderr
        assert "line 4" in r.stderr

    bad.write_text(f"[data]\ntrain = {corpus}\n[sweep]\noptim.lr = 1e-3, fast\n")
    r = mpirun(canary, 1, "sweep", "--config", str(bad), "--out", str(out))
    assert r.returncode == 1 and "optim.lr = 'fast' is not a number" in r.stderr
    assert not out.exists()

    out.mkdir()
    (out / "something").write_text("x")
    study = write_study(tmp_path, corpus, 1)
    r = mpirun(canary, 2, "sweep", "--config", str(study), "--out", str(out))
    assert r.returncode == 1 and "already exists and is not empty" in r.stderr


def test_bench_allreduce_times_the_transport(canary):
    r = mpirun(canary, 2, "bench", "--allreduce", "1", "--steps", "3")
    assert r.returncode == 0, r.stderr
    m = re.search(r"allreduce_mib=1\.000 allreduce_ms_median=([0-9.]+) allreduce_gib_per_s=([0-9.]+) "
                  r"ranks=2", r.stdout)
    assert m and float(m.group(1)) > 0 and float(m.group(2)) > 0, r.stdout
    r = mpirun(canary, 1, "bench", "--allreduce", "0")
    assert r.returncode == 1 and "--allreduce takes MiB in [0.001, 4096]" in r.stderr
