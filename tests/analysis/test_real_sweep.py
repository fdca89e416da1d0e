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


def test_real_sweep_report(tmp_path):
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
    config.write_text(STUDY.format(data=data))
    sweep = tmp_path / "sweep"
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMP_NUM_THREADS="1")
    r = subprocess.run([mpiexec, "-n", "2", "--oversubscribe", canary, "sweep", "--config",
                        str(config), "--out", str(sweep)], capture_output=True, text=True,
                       env=env, timeout=180)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]

    r = subprocess.run([os.path.join(ROOT, "analysis", "canary-analyze"), "report", str(sweep),
                        "--lr-range", "1e-3", "1e-2"], cwd=ROOT, capture_output=True,
                       text=True, env=env, timeout=180)
    assert r.returncode == 0, r.stderr
    md = (sweep / "report" / "report.md").read_text()
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
