"""probes.h5: self-describing layout, typed config, rows aligned by step, readable while the run is
live, and intact up to the last flush after a SIGKILL."""
import os
import re
import signal
import subprocess
import time

import h5py
import numpy as np

from conftest import run


def train(canary, config, out, *sets):
    args = ["train", "--config", str(config), "--out", str(out)]
    for s in sets:
        args += ["--set", s]
    r = run(canary, *args)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def test_probes_file_explains_itself(canary, small_config, tmp_path):
    out = tmp_path / "run"
    r = train(canary, small_config, out, "probes.every=4", "train.steps=12")
    with h5py.File(out / "probes.h5", "r") as f:
        assert "per-step series" in f.attrs["description"]
        for key in ("git_sha", "compiler", "hdf5_version", "openblas", "host", "start_time_utc",
                    "world_size", "threads_per_rank", "seed"):
            assert key in f["provenance"].attrs, key
        cfg = f["config"].attrs
        assert cfg["model.dim"] == 32 and isinstance(cfg["model.dim"], np.integer)
        assert cfg["optim.lr"] == 3e-3 and isinstance(cfg["optim.lr"], np.floating)
        assert cfg["model.norm"] == "layernorm"
        names = list(f["tensors/names"].asstr()[:])
        assert names[0] == "tok_embed" and names[-1] == "head"
        assert list(f["step"][:]) == list(range(1, 13))
        assert list(f["probe_step"][:]) == [4, 8, 12]
        assert f["loss/total"].shape == (12,) and f["lr"].shape == (12,)
        assert f["attn/max_logit"].shape == (3, 2, 2)  # [rows, layers, heads]
        assert f["attn/entropy"].shape == (3, 2, 2)
        assert f["resid/rms"].shape == (3, 2)
        assert f["grad/rms"].shape == (3, len(names))
        missing = []
        f.visititems(lambda n, o: missing.append(n) if isinstance(o, h5py.Dataset) and
                     n != "tensors/names" and "description" not in o.attrs else None)
        assert not missing, missing
        # values make sense
        assert np.all(f["attn/entropy"][:] > 0) and np.all(f["attn/entropy"][:] < np.log(32))
        assert np.all(f["attn/max_logit"][:] > 0)
        assert np.all((f["adam/eps_frac"][:] >= 0) & (f["adam/eps_frac"][:] <= 1))
        assert np.all(f["grad/clip_factor"][:] <= 1)
        assert list(f["eval/step"][:]) == [0, 5, 10, 12]
        l0 = f["eval/loss"][0]
    assert f"eval step 0: loss {l0:.6f}" in r.stdout
    metrics = (out / "metrics.tsv").read_text().splitlines()[1:]
    losses = [float(l.split("\t")[2]) for l in metrics if l.startswith("train")]
    with h5py.File(out / "probes.h5", "r") as f:
        assert np.array_equal(f["loss/total"][:], np.array(losses))


def test_probes_dimension_scales_and_tensor_table(canary, small_config, tmp_path):
    """Generic readers see every series' axes through HDF5 dimension scales, and /tensors
    counts the parameters exactly (MoE: router and every expert)."""
    out = tmp_path / "scales"
    train(canary, small_config, out, "model.experts=4", "model.top_k=2", "model.moe_every=2",
          "train.steps=4", "probes.every=2")
    with h5py.File(out / "probes.h5", "r") as f:
        def axes(name):
            return [d[0].name for d in f[name].dims]
        assert axes("loss/total") == ["/step"]
        assert axes("attn/max_logit") == ["/probe_step", "/axes/layer", "/axes/head"]
        assert axes("resid/rms") == ["/probe_step", "/axes/layer"]
        assert axes("grad/rms") == ["/probe_step", "/tensors/names"]
        assert axes("moe/load") == ["/probe_step", "/axes/moe_block", "/axes/expert"]
        assert axes("moe/dead_experts") == ["/probe_step", "/axes/moe_block"]
        assert axes("lr_probe/loss") == ["/lr_probe/step", "/axes/lr_factor"]
        assert axes("eval/loss") == ["/eval/step"]
        assert list(f["axes/moe_block"][:]) == [1]  # moe_every = 2: block 1 of 0, 1
        assert list(f["axes/expert"][:]) == [0, 1, 2, 3]
        names = list(f["tensors/names"].asstr()[:])
        shape = f["tensors/shape"][:]
        kinds = list(f["tensors/kind"].asstr()[:])
        opts = set(f["tensors/optimizer"].asstr()[:])
    assert shape.shape == (len(names), 2) and opts == {"adamw"}
    assert kinds[names.index("blocks.1.mlp.router")] == "router"
    assert kinds[names.index("blocks.1.mlp.experts.3.w2")] == "expert"
    assert kinds[names.index("blocks.0.ln1.gain")] == "gain"
    ckpt = sorted((out / "ckpt").glob("step_*.h5"))[-1]
    with h5py.File(ckpt, "r") as f:
        sizes = {n: f["params"][n].size for n in names}
    assert int(np.prod(shape, axis=1).sum()) == sum(sizes.values())
    assert all(int(np.prod(shape[i])) == sizes[n] for i, n in enumerate(names))


def test_probes_can_be_turned_off(canary, small_config, tmp_path):
    out = tmp_path / "run"
    r = train(canary, small_config, out, "probes.enabled=false")
    assert not (out / "probes.h5").exists()
    assert "probes.h5" not in r.stdout


def test_probes_readable_live_and_after_sigkill(canary, small_config, tmp_path):
    out = tmp_path / "live"
    env = dict(os.environ, OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    proc = subprocess.Popen([canary, "train", "--config", str(small_config), "--out", str(out),
                             "--set", "train.steps=100000", "--set", "probes.flush_every=5",
                             "--set", "train.eval_every=0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        seen = []
        deadline = time.time() + 60
        while time.time() < deadline and len(seen) < 3:
            time.sleep(0.3)
            if not (out / "probes.h5").exists():
                continue
            try:
                with h5py.File(out / "probes.h5", "r", swmr=True) as f:
                    n = f["step"].shape[0]
                    if n > 0:
                        assert f["loss/total"].shape[0] >= n - 0  # written with the step
                        assert f["step"][n - 1] == n
                        seen.append(n)
            except OSError:
                pass  # the file is being created
        assert len(seen) == 3 and seen[-1] > seen[0], f"live reads saw {seen}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    with h5py.File(out / "probes.h5", "r", swmr=True) as f:
        n = f["step"].shape[0]
        assert n >= seen[-1]  # at least every row up to the last flush
        assert list(f["step"][:]) == list(range(1, n + 1))
        assert np.all(np.isfinite(f["loss/total"][:n]))


def test_lr_probe_leaves_training_unchanged(canary, small_config, tmp_path):
    a, b = tmp_path / "with", tmp_path / "without"
    train(canary, small_config, a, "probes.lr_probe_every=1", "train.steps=10")
    train(canary, small_config, b, "probes.lr_probe_every=0", "train.steps=10")
    ra = [l.split("\t")[:8] for l in (a / "metrics.tsv").read_text().splitlines()]
    rb = [l.split("\t")[:8] for l in (b / "metrics.tsv").read_text().splitlines()]
    assert ra == rb
    ca = re.findall(r"parameter checksum (\w+)", (a / "log.txt").read_text())
    cb = re.findall(r"parameter checksum (\w+)", (b / "log.txt").read_text())
    assert ca == cb  # the trial updates never touched the weights
    with h5py.File(a / "probes.h5", "r") as f:
        steps, loss = f["lr_probe/step"][:], f["lr_probe/loss"][:]
    assert list(steps) == list(range(1, 11)) and loss.shape == (10, 4)
    # the trial at f = 1 is exactly the update that lands: its loss is the next step's f = 0
    assert np.array_equal(loss[:-1, 2], loss[1:, 0])
    with h5py.File(b / "probes.h5", "r") as f:
        assert f["lr_probe/step"].shape == (0,)


def test_lr_probe_scales_only_the_lr_part(canary, small_config, tmp_path):
    """With wd_mode = independent the decay term (lr_t / lr)·λ·θ does not scale with the
    learning rate. At a vanishing lr the update is that term alone, so the trials at f = ½, 1, 2
    all land on θ − λθ and see the same loss; f = 0 is θ itself. Scaling the whole update would
    give θ − ½λθ, θ − λθ, θ − 2λθ: three different losses."""
    out = tmp_path / "wd"
    train(canary, small_config, out, "probes.lr_probe_every=1", "train.steps=3",
          "optim.lr=1e-9", "optim.min_lr=0", "optim.warmup_steps=0", "optim.schedule=constant",
          "optim.weight_decay=0.3", "optim.wd_mode=independent")
    with h5py.File(out / "probes.h5", "r") as f:
        loss = f["lr_probe/loss"][:]
    assert loss.shape == (3, 4)
    for row in loss:
        assert np.allclose(row[1:], row[2], rtol=1e-5), row
        assert abs(row[0] - row[2]) > 1e-3 * abs(row[0]), row


def test_events_are_recorded(canary, small_config, tmp_path):
    out = tmp_path / "ev"
    r = run(canary, "train", "--config", str(small_config), "--out", str(out),
            "--set", "train.steps=40", "--set", "probes.every=1", "--set",
            "probes.logit_threshold=0.5", "--set", "probes.spike_window=4", "--set",
            "probes.spike_sigma=0.1")
    assert r.returncode == 0, r.stderr
    with h5py.File(out / "probes.h5", "r") as f:
        kinds = list(f["events/kind"].asstr()[:])
        details = list(f["events/detail"].asstr()[:])
        steps = f["events/step"][:]
    assert kinds.count("threshold") == 1 and steps[kinds.index("threshold")] == 1
    assert "crossed probes.logit_threshold = 0.5" in details[kinds.index("threshold")]
    assert "spike" in kinds
    assert "event at step" in r.stderr


def test_nonfinite_skip_goes_on_and_records(canary, small_config, tmp_path):
    out = tmp_path / "nan"
    r = run(canary, "train", "--config", str(small_config), "--out", str(out),
            "--set", "optim.lr=100", "--set", "optim.clip=0", "--set", "optim.z_loss=0",
            "--set", "optim.warmup_steps=0", "--set", "optim.beta2=0", "--set",
            "train.steps=200", "--set", "train.on_nonfinite=skip")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "update skipped" in r.stdout
    with h5py.File(out / "probes.h5", "r") as f:
        kinds = list(f["events/kind"].asstr()[:])
        details = list(f["events/detail"].asstr()[:])
    assert "non-finite" in kinds
    assert any("non-finite" in d for d in details)


def test_skipped_step_rows_are_marked(canary, small_config, tmp_path):
    """A step skipped as non-finite is marked in update/skipped; what it did not compute is NaN,
    not the previous step's values, and it has no LR-probe row."""
    out = tmp_path / "skip"
    r = run(canary, "train", "--config", str(small_config), "--out", str(out),
            "--set", "optim.lr=100", "--set", "optim.clip=0", "--set", "optim.z_loss=0",
            "--set", "optim.warmup_steps=0", "--set", "optim.beta2=0", "--set",
            "train.steps=60", "--set", "train.on_nonfinite=skip", "--set", "probes.every=1",
            "--set", "probes.lr_probe_every=1")
    assert r.returncode == 0, r.stdout + r.stderr
    with h5py.File(out / "probes.h5", "r") as f:
        steps = f["step"][:]
        skipped = f["update/skipped"][:]
        clip = f["grad/clip_factor"][:]
        upd = f["update/rms"][:]
        assert np.array_equal(f["probe_step"][:], steps)
        lr_steps = set(f["lr_probe/step"][:].astype(int))
    assert skipped.any() and not skipped.all()
    for s, sk, c, u in zip(steps.astype(int), skipped, clip, upd):
        if sk:
            assert np.isnan(c) and np.all(np.isnan(u)) and s not in lr_steps, s
        else:
            assert np.isfinite(c) and s in lr_steps, s
