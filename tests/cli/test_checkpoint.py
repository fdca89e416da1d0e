"""Checkpoints and resume: bitwise continuation (np = 1 and 2, and across rank counts),
corruption and mismatch errors, pruning, a full disk, `canary eval`, and PyTorch reading /params."""
import os
import re
import subprocess

import h5py
import numpy as np
import pytest

from conftest import ROOT, run

ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
       "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
SETS = ("train.steps=20", "train.checkpoint_every=10", "probes.every=3", "train.threads=1")


def canary_np(canary, np_, *args, env=None, preexec=None):
    e = dict(os.environ, **ENV)
    if env:
        e.update(env)
    cmd = [canary, *args] if np_ == 0 else ["mpiexec", "-n", str(np_), "--oversubscribe",
                                            canary, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=300,
                          preexec_fn=preexec)


def train_args(config, out, *sets):
    args = ["train", "--config", str(config), "--out", str(out)]
    for s in SETS + sets:
        args += ["--set", s]
    return args


def rows(out):
    return [l.split("\t")[:8] for l in (out / "metrics.tsv").read_text().splitlines()]


def checksum(out):
    return re.findall(r"parameter checksum ([0-9a-f]+)", (out / "log.txt").read_text())[-1]


def probe_arrays(out):
    with h5py.File(out / "probes.h5", "r") as f:
        data = {}
        f.visititems(lambda n, o: data.__setitem__(n, o[:]) if isinstance(o, h5py.Dataset) and
                     o.dtype.kind == "f" and n != "tokens_per_s" else None)
    return data


def crash_and_resume(canary, config, out, np_crash, np_resume, *sets):
    r = canary_np(canary, np_crash, *train_args(config, out, *sets),
                  env={"CANARY_FAULT": "abort:0:13"})
    assert r.returncode != 0 and "fault injected" in r.stderr
    assert (out / "ckpt" / "step_00000010.h5").exists()
    r = canary_np(canary, np_resume, "train", "--resume", str(out), "--set", "train.threads=1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resumed from step 10" in r.stdout
    # nothing changed (train.threads=1 as before): no earlier config kept, nothing said
    assert "other settings" not in r.stdout and not list(out.glob("config.ini.to_step_*"))


DETERMINISTIC = ("train.deterministic=true", "train.grad_accum=2")


def assert_np1_np2_bitwise(canary, config, tmp_path, sets):
    """Trains in deterministic mode without mpiexec and at np 2; the runs must end with the same
    parameters and metric rows. Returns (run dir at np 2, its stdout)."""
    outs, stdout = {}, ""
    for np_ in (0, 2):
        out = tmp_path / f"np{np_}"
        r = canary_np(canary, np_, *train_args(config, out, *sets, *DETERMINISTIC))
        assert r.returncode == 0, r.stdout + r.stderr
        outs[np_], stdout = out, r.stdout
    assert checksum(outs[0]) == checksum(outs[2])
    assert rows(outs[0]) == rows(outs[2])
    return outs[2], stdout


def assert_refused(canary, config, tmp_path, sets, message):
    """`canary train` with these --set values exits 1 with message, before writing anything."""
    out = tmp_path / "run"
    r = canary_np(canary, 0, *train_args(config, out, *sets))
    assert r.returncode == 1, r.stdout + r.stderr
    assert message in r.stderr, r.stderr
    assert not out.exists()


def last_muon_ortho(out):
    """{tensor name: muon/ortho_err of the last probe row} of a run."""
    with h5py.File(out / "probes.h5", "r") as f:
        names = [n.decode() if isinstance(n, bytes) else n for n in f["tensors/names"][:]]
        return dict(zip(names, f["muon/ortho_err"][-1]))


def assert_resume_is_bitwise(canary, config, tmp_path, sets, np_=2, fault="abort:0:13"):
    """A run killed after its step-10 checkpoint and resumed ends like one that never stopped:
    parameters, metric rows and every probe row."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert canary_np(canary, np_, *train_args(config, straight, *sets)).returncode == 0
    r = canary_np(canary, np_, *train_args(config, resumed, *sets), env={"CANARY_FAULT": fault})
    assert r.returncode != 0 and (resumed / "ckpt" / "step_00000010.h5").exists()
    r = canary_np(canary, np_, "train", "--resume", str(resumed), "--set", "train.threads=1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert checksum(straight) == checksum(resumed)
    assert rows(straight) == rows(resumed)
    a, b = probe_arrays(straight), probe_arrays(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k], equal_nan=True), k


@pytest.mark.parametrize("np_", [0, 2])
def test_resume_is_bitwise(canary, small_config, tmp_path, np_):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    r = canary_np(canary, np_, *train_args(small_config, straight))
    assert r.returncode == 0, r.stderr
    crash_and_resume(canary, small_config, resumed, np_, np_)
    assert rows(straight) == rows(resumed)  # losses, lr, gradient norms: no step twice
    assert checksum(straight) == checksum(resumed)  # parameters
    a, b = probe_arrays(straight), probe_arrays(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k], equal_nan=True), k


def test_resume_with_another_rank_count(canary, small_config, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert canary_np(canary, 0, *train_args(small_config, straight)).returncode == 0
    crash_and_resume(canary, small_config, resumed, 2, 0)
    for a, b in zip(rows(straight)[1:], rows(resumed)[1:]):
        assert a[:2] == b[:2]
        assert abs(float(a[2]) - float(b[2])) <= 1e-5 * abs(float(a[2]))
    # deterministic mode: bitwise across rank counts, through a resume
    det = ("train.deterministic=true", "train.grad_accum=4")
    straight, resumed = tmp_path / "dstraight", tmp_path / "dresumed"
    assert canary_np(canary, 0, *train_args(small_config, straight, *det)).returncode == 0
    crash_and_resume(canary, small_config, resumed, 2, 0, *det)
    assert rows(straight) == rows(resumed)
    assert checksum(straight) == checksum(resumed)


def test_checkpoints_pruned_and_loadable_by_eval_and_torch(canary, small_config, corpus,
                                                           tmp_path):
    out = tmp_path / "run"
    r = canary_np(canary, 0, *train_args(small_config, out, "train.checkpoint_every=5",
                                         "train.keep_checkpoints=2"))
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(out / "ckpt")) == ["step_00000015.h5", "step_00000020.h5"]
    ckpt = out / "ckpt" / "step_00000020.h5"
    with h5py.File(ckpt, "r") as f:
        assert f["params/blocks.0.attn.wq"].shape == (32, 32)
        assert f["params/final_norm.gain"].shape == (32,)
        assert f["params/blocks.0.attn.wq"].fletcher32
        assert f["state"].attrs["step"] == 20
        assert "model.dim" in f["config"].attrs
    # canary eval on the held-out batches reproduces the run's final evaluation exactly
    r = canary_np(canary, 0, "eval", "--checkpoint", str(ckpt))
    final = re.findall(r"eval step 20: loss ([0-9.]+)", (out / "log.txt").read_text())[0]
    got = float(re.search(r"loss ([0-9.e+-]+) ce", r.stdout).group(1))
    assert f"{got:.6f}" == final
    # --set may change how it is computed (threads), not what (the loss's z-loss weight)
    r = canary_np(canary, 0, "eval", "--checkpoint", str(ckpt), "--set", "train.threads=2")
    assert r.returncode == 0, r.stderr
    r = canary_np(canary, 0, "eval", "--checkpoint", str(ckpt), "--set", "optim.z_loss=0.1")
    assert r.returncode == 1 and "eval: --set optim.z_loss: only train.threads" in r.stderr
    # PyTorch loads /params by name and gets the same loss on the same sequences
    r = canary_np(canary, 0, "eval", "--checkpoint", str(ckpt), "--data", str(corpus),
                  "--batches", "2")
    assert r.returncode == 0, r.stderr
    mine = float(re.search(r"loss ([0-9.e+-]+) ce", r.stdout).group(1))
    t = subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "tests", "torch_checkpoint.py"),
                        str(ckpt), str(corpus), "--batches", "2"], capture_output=True,
                       text=True, timeout=300)
    assert t.returncode == 0, t.stderr
    theirs = float(re.search(r"torch loss ([0-9.e+-]+)", t.stdout).group(1))
    assert abs(mine - theirs) <= 1e-5 * abs(theirs), (mine, theirs)


def seal(data):
    """The seal canary puts in front of a checkpoint's HDF5 image (probes/h5.c), recomputed here
    independently: magic, size, 64-bit FNV-1a over 8-byte words with an xor-shift, then tail
    bytes."""
    mask, prime = (1 << 64) - 1, 0x100000001b3
    body = bytes(data[512:])
    h = 0xcbf29ce484222325
    words = len(body) // 8
    for (w,) in np.frombuffer(body[:words * 8], dtype="<u8").reshape(-1, 1).tolist():
        h = ((h ^ w) * prime) & mask
        h ^= h >> 29
    for b in body[words * 8:]:
        h = ((h ^ b) * prime) & mask
    head = b"canary-sealed-1\0" + len(data).to_bytes(8, "little") + h.to_bytes(8, "little")
    data[:512] = head + bytes(512 - len(head))


def test_corrupt_checkpoint_is_refused(canary, small_config, tmp_path):
    out = tmp_path / "run"
    assert canary_np(canary, 0, *train_args(small_config, out)).returncode == 0
    ckpt = out / "ckpt" / "step_00000020.h5"
    pristine = bytearray(ckpt.read_bytes())
    resealed = bytearray(pristine)
    seal(resealed)
    assert resealed == pristine  # the seal is what this test thinks it is

    with h5py.File(ckpt, "r") as f:  # HDF5 addresses count from the end of the user block
        offset = f.userblock_size + f["params/head"].id.get_chunk_info(0).byte_offset
    data = bytearray(pristine)
    data[offset + 100] ^= 0x10  # one bit of one weight
    ckpt.write_bytes(bytes(data))
    r = canary_np(canary, 0, "eval", "--checkpoint", str(ckpt))
    assert r.returncode == 1
    assert "hash mismatch" in r.stderr, r.stderr  # refused before HDF5 parses it

    # The same damage with a valid seal (a file rewritten by hand): HDF5's Fletcher32 names the
    # dataset.
    seal(data)
    ckpt.write_bytes(bytes(data))
    r = canary_np(canary, 0, "eval", "--checkpoint", str(ckpt))
    assert r.returncode == 1
    assert "params/head" in r.stderr and "checksum mismatch" in r.stderr, r.stderr

    ckpt.write_bytes(bytes(pristine[:-1000]))
    r = canary_np(canary, 0, "eval", "--checkpoint", str(ckpt))
    assert r.returncode == 1 and "truncated" in r.stderr, r.stderr
    ckpt.write_bytes(bytes(pristine[512:]))  # an unsealed HDF5 file
    r = canary_np(canary, 0, "eval", "--checkpoint", str(ckpt))
    assert r.returncode == 1 and "not a sealed canary file" in r.stderr, r.stderr


def test_resume_goes_back_past_a_corrupt_checkpoint(canary, small_config, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    sets = ("train.checkpoint_every=5", "train.keep_checkpoints=3")
    assert canary_np(canary, 0, *train_args(small_config, straight, *sets)).returncode == 0
    r = canary_np(canary, 0, *train_args(small_config, resumed, *sets),
                  env={"CANARY_FAULT": "abort:0:13"})
    assert r.returncode != 0
    newest = resumed / "ckpt" / "step_00000010.h5"
    newest.write_bytes(newest.read_bytes()[:4096])  # torn: the older one at step 5 must serve
    r = canary_np(canary, 0, "train", "--resume", str(resumed))
    assert r.returncode == 0, r.stderr
    assert "step_00000010.h5" in r.stderr and "trying an older checkpoint" in r.stderr
    assert "resumed from step 5" in r.stdout
    assert rows(straight) == rows(resumed) and checksum(straight) == checksum(resumed)


def test_checkpoint_of_another_model_is_refused(canary, small_config, tmp_path):
    out = tmp_path / "run"
    assert canary_np(canary, 0, *train_args(small_config, out, "train.steps=12")).returncode == 0
    r = canary_np(canary, 0, "train", "--resume", str(out), "--set", "train.steps=30",
                  "--set", "model.mlp_ratio=2")
    assert r.returncode == 1
    assert "another model: model.mlp_ratio = 4 there, 2 in this run" in r.stderr
    r = canary_np(canary, 0, "train", "--resume", str(out), "--set", "train.steps=30",
                  "--set", "train.seed=99")
    assert r.returncode == 1 and "the data would not continue where it stopped" in r.stderr
    # extending a finished run: the new train.steps is recorded everywhere, l0 carries over
    r = canary_np(canary, 0, "train", "--resume", str(out), "--set", "train.steps=16")
    assert r.returncode == 0, r.stderr
    assert "steps = 16  ; --set" in (out / "config.ini").read_text()
    with h5py.File(out / "probes.h5", "r") as f:
        assert f["config"].attrs["train.steps"] == 16
        assert list(f["step"][:]) == list(range(1, 17))
        assert list(f["eval/step"][:]) == [0, 5, 10, 12, 15, 16]


def test_full_disk_keeps_previous_checkpoint(canary, small_config, tmp_path):
    out = tmp_path / "run"
    r = canary_np(canary, 0, *train_args(small_config, out), env={"CANARY_FAULT": "abort:0:13"})
    assert (out / "ckpt" / "step_00000010.h5").exists()
    size = (out / "ckpt" / "step_00000010.h5").stat().st_size

    # files may not grow past half a checkpoint from now on: the next one cannot fit
    # (probes off for this part: probes.h5 hitting the limit first is covered by the message)
    r = canary_np(canary, 0, "train", "--resume", str(out), "--set", "probes.enabled=false",
                  env={"CANARY_FAULT": f"fsize:0:{size // 2}"})
    assert r.returncode == 2, r.stdout + r.stderr
    assert "checkpoint" in r.stderr and "disk full" in r.stderr, r.stderr
    assert sorted(os.listdir(out / "ckpt")) == ["step_00000010.h5"]  # no partial file
    r = canary_np(canary, 0, "eval", "--checkpoint", str(out / "ckpt" / "step_00000010.h5"))
    assert r.returncode == 0, r.stderr
    with h5py.File(out / "probes.h5", "r", swmr=True) as f:  # left by the killed first run
        assert f["step"].shape[0] >= 10


def test_resume_of_a_file_without_a_newer_probe(canary, small_config, tmp_path):
    """A run whose probes.h5 was written before a probe existed (output/logit_max here,
    removed from the file of a finished run) resumes for more steps: the probe's rows before
    the resume are NaN, its later rows are values, and it has its dimension scale like the
    others."""
    out = tmp_path / "old"
    r = canary_np(canary, 0, *train_args(small_config, out, "train.steps=10"))
    assert r.returncode == 0 and (out / "ckpt" / "step_00000010.h5").exists(), r.stderr
    with h5py.File(out / "probes.h5", "a") as f:
        del f["output/logit_max"]
    r = canary_np(canary, 0, "train", "--resume", str(out), "--set", "train.threads=1",
                  "--set", "train.steps=16")
    assert r.returncode == 0, r.stdout + r.stderr
    with h5py.File(out / "probes.h5", "r") as f:
        steps, vals = f["step"][:], f["output/logit_max"][:]
        assert len(vals) == len(steps) and steps[-1] > 10
        assert np.isnan(vals[steps <= 10]).all() and np.isfinite(vals[steps > 10]).all()
        assert [s.name for _, s in f["output/logit_max"].dims[0].items()] == ["/step"]
