"""End to end: a tiny real 'canary sweep' (2 ranks, 4 runs of 20 steps), then the report.

Needs the built binary: build/canary, or the path in $CANARY_BIN (fails, not skips, without it).
"""

import csv
import os
import shutil
import struct
import subprocess

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

STUDY = """
[model]
dim = 32
layers = 1
heads = 2
seq_len = 32
vocab = 256

[optim]
warmup_steps = 2

[train]
steps = 20
batch_size = 8
eval_every = 10
eval_batches = 2
log_every = 10
threads = 1
checkpoint_every = 0

[probes]
every = 5
lr_probe_every = 5

[data]
train = {data}

[sweep]
model.qk_norm = true, false
optim.lr = 1e-3, 1e-2
ranks_per_run = 1
"""


def write_tokens(path, text):
    """llm.c token file: 256 int32 header [20240520, 1, ntokens, 0...], then uint16 tokens."""
    tokens = list(text.encode())
    with open(path, "wb") as f:
        f.write(struct.pack("<256i", 20240520, 1, len(tokens), *([0] * 253)))
        f.write(struct.pack(f"<{len(tokens)}H", *tokens))


ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMP_NUM_THREADS="1")


def sweep_and_report(tmp_path, study, lr_range):
    """Runs `canary sweep` on 2 ranks over a small token file and the report; returns the sweep
    directory and report.md's text."""
    canary = os.environ.get("CANARY_BIN", os.path.join(ROOT, "build", "canary"))
    if not os.access(canary, os.X_OK):
        pytest.fail(f"canary binary not found at {canary}: build it first (./tests/run does), "
                    f"or point CANARY_BIN at it")
    mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        pytest.fail("mpiexec not found (Debian package openmpi-bin)")
    text = ("the quick brown fox jumps over the lazy dog. " * 3 +
            "a stitch in time saves nine; all that glitters is not gold.\n") * 120
    data = tmp_path / "tokens.bin"
    write_tokens(data, text)
    config = tmp_path / "study.ini"
    config.write_text(study.format(data=data))
    sweep = tmp_path / "sweep"
    r = subprocess.run([mpiexec, "-n", "2", "--oversubscribe", canary, "sweep", "--config",
                        str(config), "--out", str(sweep)], capture_output=True, text=True,
                       env=ENV, timeout=180)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]

    r = subprocess.run([os.path.join(ROOT, "analysis", "canary-analyze"), "report", str(sweep),
                        "--lr-range", *lr_range], cwd=ROOT, capture_output=True,
                       text=True, env=ENV, timeout=180)
    assert r.returncode == 0, r.stderr
    return sweep, (sweep / "report" / "report.md").read_text()


def test_real_sweep_report(tmp_path):
    sweep, md = sweep_and_report(tmp_path, STUDY, ("1e-3", "1e-2"))
    assert "## Mitigations" not in md  # qk-norm and z-loss alone: their own figures
    ids = [f"{i:03d}_qk_norm-{q}_lr-{lr}" for i, (q, lr) in enumerate(
        [("true", "1e-3"), ("true", "1e-2"), ("false", "1e-3"), ("false", "1e-2")])]
    for rid in ids:
        assert f"| {rid} |" in md
    assert "- runs: 4 (4 ok)" in md
    assert "| qk_norm=true | 2 |" in md and "| qk_norm=false | 2 |" in md
    with open(sweep / "report" / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["id"] for row in rows] == ids
    for row in rows:
        assert row["status"] == "ok" and row["partial"] == "0" and row["steps"] == "20"
        assert float(row["final_loss"]) < float(row["l0"])
        assert float(row["max_attn_logit_block0_final"]) > 0


# QK-clip swept against none at two LRs, with a skip-step guard tight enough to act in 20 steps
MITIGATION_STUDY = STUDY.replace("[optim]\nwarmup_steps = 2", """[optim]
warmup_steps = 2
skip_sigma = 0.3
guard_window = 4
guard_min = 2""").replace("model.qk_norm = true, false\noptim.lr = 1e-3, 1e-2",
                          "optim.qk_clip = 0, 1\noptim.lr = 1e-2, 3e-2")


def test_real_sweep_mitigation_section(tmp_path):
    import h5py
    import numpy as np

    assert "optim.qk_clip = 0, 1" in MITIGATION_STUDY and "skip_sigma" in MITIGATION_STUDY
    sweep, md = sweep_and_report(tmp_path, MITIGATION_STUDY, ("1e-2", "3e-2"))
    assert "## Mitigations" in md
    rows = {}
    for line in md.split("## Mitigations")[1].split("\n## ")[0].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0].startswith("qk_clip="):
            rows[cells[0]] = cells
    assert set(rows) == {"qk_clip=0", "qk_clip=1"}
    # what each group has on, and the counts, read again from the runs' probes.h5
    for q, cells in rows.items():
        skipped = clipped = 0
        for run in sorted(p for p in sweep.iterdir() if p.is_dir() and f"qk_clip-{q[8:]}_" in
                          p.name):
            with h5py.File(run / "probes.h5", "r") as f:
                skipped += int(np.nansum(np.array(f["optim/guard_skipped"]) > 0))
                if "optim/qk_clip_count" in f:
                    clipped += int(np.nansum(np.array(f["optim/qk_clip_count"])))
        assert "skip-step" in cells[1] and ("QK-clip" in cells[1]) == (q == "qk_clip=1")
        assert cells[8] == str(skipped), (q, cells)
        assert cells[10] == (str(clipped) if q == "qk_clip=1" else ""), (q, cells)
    assert int(rows["qk_clip=1"][10]) > 0  # QK-clip acted
    assert int(rows["qk_clip=0"][8]) + int(rows["qk_clip=1"][8]) > 0  # and so did skip-step
