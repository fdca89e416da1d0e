"""train.matmul_backend: oneDNN's matmul against OpenBLAS's (fp32 on any CPU), bitwise across
rank counts in deterministic mode, and bf16 on oneDNN exactly where the CPU has it (AMX or
AVX512-BF16): used by auto there, refused when asked for elsewhere, the emulation named instead."""
import h5py
import numpy as np

from conftest import run
from test_mpi import losses, train as mpi_train


def cpu_has_bf16():
    with open("/proc/cpuinfo") as f:
        flags = next((l.split(":", 1)[1].split() for l in f if l.startswith("flags")), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags


def train(canary, config, out, *sets):
    args = ["train", "--config", str(config), "--out", str(out)]
    for s in ("train.threads=1",) + sets:
        args += ["--set", s]
    return run(canary, *args)


def header(out):
    return next(l for l in (out / "log.txt").read_text().splitlines()
                if l.startswith("precision: "))


def test_onednn_fp32_trains_as_openblas(canary, small_config, tmp_path):
    """The same run on both backends: every loss and gradient norm within 1e-4 (the order of the
    fp32 sums differs), not bitwise equal; the header and provenance name oneDNN."""
    got = {}
    for b in ("openblas", "onednn"):
        out = tmp_path / b
        r = train(canary, small_config, out, f"train.matmul_backend={b}")
        assert r.returncode == 0, r.stderr
        with h5py.File(out / "probes.h5", "r") as f:
            got[b] = (np.array(f["loss/total"]), np.array(f["grad/global_norm"]),
                      f["provenance"].attrs["precision"])
    np.testing.assert_allclose(got["onednn"][0], got["openblas"][0], rtol=1e-4)
    np.testing.assert_allclose(got["onednn"][1], got["openblas"][1], rtol=1e-3)
    assert not np.array_equal(got["onednn"][1], got["openblas"][1])
    assert got["onednn"][2].startswith("fp32; backend: oneDNN ")
    assert "fp32 matmul" in got["onednn"][2]
    assert got["openblas"][2] == "fp32; backend: OpenBLAS sgemm"
    assert "backend: oneDNN" in header(tmp_path / "onednn")


def test_onednn_deterministic_is_bitwise_across_ranks(canary, small_config, tmp_path):
    """Deterministic mode on oneDNN: np = 1, 2, 4 give the same losses and parameters, bit for
    bit (each rank's products have the same shapes whatever the rank count)."""
    from test_mpi import checksum
    results = []
    for np_ in (1, 2, 4):
        out = tmp_path / f"np{np_}"
        r = mpi_train(canary, np_, small_config, out, "train.deterministic=true",
                      "train.grad_accum=4", "train.matmul_backend=onednn")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "backend: oneDNN" in header(out)  # not a silent fall back to OpenBLAS
        results.append((losses(out), checksum(out)))
    assert results[0] == results[1] == results[2]


def test_bf16_on_onednn_only_where_the_cpu_has_it(canary, small_config, tmp_path):
    """auto takes oneDNN's bf16 matmul where the CPU has one, else the emulation, saying why;
    asking for onednn on a CPU without it is refused in one line and writes nothing."""
    out = tmp_path / "auto"
    r = train(canary, small_config, out, "train.precision=bf16", "train.steps=4")
    assert r.returncode == 0, r.stderr
    line = header(out)
    forced = tmp_path / "forced"
    rf = train(canary, small_config, forced, "train.precision=bf16",
               "train.matmul_backend=onednn", "train.steps=4")
    if cpu_has_bf16():
        assert "backend: oneDNN" in line and "bf16 matmul" in line, line
        assert rf.returncode == 0, rf.stderr
    else:
        assert "backend: emulation" in line and "no bf16 matmul on this CPU" in line, line
        assert rf.returncode == 1
        assert "train.matmul_backend = onednn" in rf.stderr
        assert "AMX" in rf.stderr and len(rf.stderr.strip().splitlines()) == 1, rf.stderr
        assert not forced.exists()


def test_resume_on_another_backend_warns(canary, small_config, tmp_path):
    """A checkpoint written on OpenBLAS resumes on oneDNN (allowed: checkpoints are fp32), with a
    warning naming the checkpoint's backend; resuming on the same backend says nothing."""
    out = tmp_path / "run"
    r = train(canary, small_config, out, "train.steps=6", "train.checkpoint_every=3")
    assert r.returncode == 0, r.stderr
    for b, warned, steps in (("openblas", False, 8), ("onednn", True, 10)):
        r = run(canary, "train", "--resume", str(out), "--set", f"train.steps={steps}", "--set",
                f"train.matmul_backend={b}")
        assert r.returncode == 0, r.stderr
        log = (out / "log.txt").read_text()
        tail = log[log.rindex("precision: ") if "precision: " in log else 0:]
        assert ("WARNING: resumed from a checkpoint written with another precision or matmul "
                "backend (fp32; backend: OpenBLAS sgemm)" in r.stdout) == warned, r.stdout
        assert ("backend: oneDNN" in tail) == warned
