"""Muon end to end: sharded Newton–Schulz equals unsharded bitwise, resume stays bit-exact, bad
Muon settings are refused, a sweep over the optimizer runs (and bench/muon_vs_adamw.py reads
it), and the Muon probes are written."""
import os
import re
import subprocess

import h5py
import numpy as np
import pytest

from conftest import run

ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
       "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
MUON = ("optim.name=muon", "train.steps=12", "train.threads=1", "train.checkpoint_every=6",
        "probes.every=3")


def mpirun(canary, np_, *args, env=None):
    e = dict(os.environ, **ENV)
    if env:
        e.update(env)
    cmd = [canary, *args] if np_ == 0 else ["mpiexec", "-n", str(np_), "--oversubscribe",
                                            canary, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=300)


def train(canary, np_, config, out, *sets, env=None):
    args = ["train", "--config", str(config), "--out", str(out)]
    for s in MUON + sets:
        args += ["--set", s]
    r = mpirun(canary, np_, *args, env=env)
    return r


def summary(out):
    rows = [l.split("\t")[:8] for l in (out / "metrics.tsv").read_text().splitlines()]
    cs = re.findall(r"parameter checksum (\w+)", (out / "log.txt").read_text())[-1]
    return rows, cs


def test_sharded_newton_schulz_equals_unsharded(canary, small_config, tmp_path):
    det = ("train.deterministic=true", "train.grad_accum=4")
    results = []
    for np_ in (1, 2, 4):  # np = 2 and 4 shard the matrices over the ranks
        out = tmp_path / f"np{np_}"
        r = train(canary, np_, small_config, out, *det)
        assert r.returncode == 0, r.stderr
        results.append(summary(out))
    assert results[0] == results[1] == results[2]
    with h5py.File(tmp_path / "np2" / "probes.h5", "r") as f:
        names = list(f["tensors/names"].asstr()[:])
        ortho = f["muon/ortho_err"][-1]
        mom = f["muon/momentum_rms"][-1]
    for i, n in enumerate(names):
        is_matrix = re.search(r"\.(attn\.w[qkvo]|mlp\.w[123])$", n) is not None
        assert (ortho[i] > 0) == is_matrix and (mom[i] > 0) == is_matrix, n
        if is_matrix:
            assert ortho[i] < 1.0  # the quintic leaves singular values in about [0.5, 1.5]


def test_muon_resume_is_bitwise(canary, small_config, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    r = train(canary, 2, small_config, straight)
    assert r.returncode == 0
    # the progress line shows Muon's cost (Newton–Schulz does not shrink with the batch)
    shares = [int(s) for s in re.findall(r"\| optimizer (\d+)% of step \|", r.stdout)]
    assert len(shares) == 3 and all(0 < s < 100 for s in shares), r.stdout
    r = train(canary, 2, small_config, resumed, env={"CANARY_FAULT": "abort:0:8"})
    assert r.returncode != 0
    r = mpirun(canary, 2, "train", "--resume", str(resumed))
    assert r.returncode == 0, r.stderr
    assert summary(straight) == summary(resumed)  # losses, lr, norms, parameters: bitwise
    with h5py.File(resumed / "ckpt" / "step_00000012.h5", "r") as f:
        assert "momentum" in f["optim/blocks.0.attn.wq"]
        assert "momentum" not in f["optim/head"]


@pytest.mark.parametrize("setting,needle", [
    ("optim.ns_steps=0", "optim.ns_steps = 0 is out of range"),
    ("optim.momentum=1", "optim.momentum = 1 is out of range"),
    ("optim.momentum=-0.1", "optim.momentum"),
    ("optim.muon_scale=spectral", "optim.muon_scale = 'spectral' is not allowed"),
])
def test_bad_muon_settings(canary, small_config, tmp_path, setting, needle):
    out = tmp_path / "bad"
    r = run(canary, "train", "--config", str(small_config), "--out", str(out),
            "--set", "optim.name=muon", "--set", setting)
    assert r.returncode == 1 and needle in r.stderr, r.stderr
    assert not out.exists()


def test_sweep_over_optimizers(canary, small_config, tmp_path):
    study = tmp_path / "opt.ini"
    study.write_text(small_config.read_text()
                     + "\n[sweep]\noptim.name = adamw, muon\noptim.lr = 3e-3, 3e-2\n"
                     "ranks_per_run = 1\n")
    out = tmp_path / "sweep"
    r = mpirun(canary, 2, "sweep", "--config", str(study), "--out", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [l.split("\t") for l in (out / "index.tsv").read_text().splitlines()[1:]]
    assert [row[1:3] for row in rows] == [["adamw", "3e-3"], ["adamw", "3e-2"], ["muon", "3e-3"],
                                          ["muon", "3e-2"]]
    assert all(row[3] == "ok" for row in rows)
    # bench/muon_vs_adamw.py reads it: final losses from the index, and the first evaluation at
    # which Muon reaches AdamW's final loss from Muon's metrics.tsv, per lr and best against best
    script = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "muon_vs_adamw.py")
    r = subprocess.run(["/usr/bin/python3", script, str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    final = {(row[1], float(row[2])): (float(row[6]), row[0]) for row in rows}

    def expect(label, a, m):
        evals = [(int(f[1]), float(f[2])) for f in (l.split("\t") for l in
                 (out / final[m][1] / "metrics.tsv").read_text().splitlines()) if f[0] == "eval"]
        hit = next((str(s) for s, l in evals if l <= final[a][0]), "never")
        want = "| %s | %.4f | %.4f | %s" % (label, final[a][0], final[m][0], hit)
        assert any(line.startswith(want) for line in r.stdout.splitlines()), (want, r.stdout)
        return hit

    hits = [expect("%g" % lr, ("adamw", lr), ("muon", lr)) for lr in (3e-3, 3e-2)]
    assert "never" in hits and hits != ["never", "never"]  # both outcomes are exercised
    best = {o: min((lr for (oo, lr) in final if oo == o), key=lambda lr: final[(o, lr)][0])
            for o in ("adamw", "muon")}
    expect("best of each (AdamW lr %g, Muon lr %g)" % (best["adamw"], best["muon"]),
           ("adamw", best["adamw"]), ("muon", best["muon"]))
