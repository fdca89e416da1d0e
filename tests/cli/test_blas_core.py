"""The OpenBLAS core canary runs on: selected on every rank, named in the header and provenance,
the user's OPENBLAS_CORETYPE honoured unless the CPU cannot run it, the pthread build made safe."""
import os
import re

import h5py
import pytest

from conftest import run
from test_mpi import mpirun

PTHREAD_DIR = "/usr/lib/x86_64-linux-gnu/openblas-pthread"


def cpu_best_avx2_core():
    """The AVX2 core canary picks on this CPU (the tests cap the ISA at AVX2 so they mean the
    same on an AVX-512 machine)."""
    vendor = open("/proc/cpuinfo").read()
    return "Zen" if "AuthenticAMD" in vendor else "Haswell"


def header_core(out_dir):
    log = (out_dir / "log.txt").read_text()
    line = next(l for l in log.splitlines() if l.startswith("BLAS: "))
    return re.search(r"core (\S+) \(", line).group(1), line


def train_args(config, out, steps=3):
    return ["train", "--config", str(config), "--out", str(out), "--set", f"train.steps={steps}",
            "--set", "train.eval_every=0"]


def test_misdetected_cpu_is_upgraded_on_every_rank(canary, small_config, tmp_path):
    """OpenBLAS falling back to Prescott (as 0.3.21 does on CPUs it does not know) is replaced by
    the best core the CPU supports, on both ranks, with nothing set by the user."""
    out = tmp_path / "run"
    best = cpu_best_avx2_core()
    r = mpirun(canary, 2, *train_args(small_config, out),
               env={"OPENBLAS_CORETYPE": "Prescott", "CANARY_BLAS_AS_DETECTED": "1",
                    "CANARY_CPU_ISA": "avx2"})
    assert r.returncode == 0, r.stderr
    # one line from rank 0, not one per rank
    said = [l for l in r.stderr.splitlines() if "OpenBLAS chose Prescott" in l]
    assert len(said) == 1, r.stderr
    assert f"selected {best}" in said[0]
    core, line = header_core(out)
    assert core == best, line
    assert "the same core on every rank" in line
    assert "subnormals flushed to zero" in line
    with h5py.File(out / "probes.h5", "r") as f:
        prov = f["provenance"].attrs
        assert prov["blas_core"] == best
        assert "OpenBLAS chose Prescott" in prov["blas_core_reason"]
        assert prov["subnormals"].startswith("flushed to zero")
    # the progress line names the kernel next to the % of peak
    assert re.search(rf"% of {best} sgemm peak", (out / "log.txt").read_text())


def test_unrunnable_user_core_is_replaced(canary, small_config, tmp_path):
    """OPENBLAS_CORETYPE naming a core whose instructions the CPU lacks: one line, then the best
    safe core (never an illegal-instruction crash)."""
    out = tmp_path / "run"
    r = run(canary, *train_args(small_config, out),
            env={"OPENBLAS_CORETYPE": "SkylakeX", "CANARY_CPU_ISA": "avx2"})
    assert r.returncode == 0, r.stderr
    # on a CPU with AVX-512 it is CANARY_CPU_ISA = avx2 that rules the core out, and it says so
    with open("/proc/cpuinfo") as f:
        avx512 = " avx512f" in f.read()
    why = "CANARY_CPU_ISA rules out" if avx512 else "this CPU does not have"
    assert f"OPENBLAS_CORETYPE=SkylakeX needs AVX-512, which {why}" in r.stderr, r.stderr
    assert header_core(out)[0] == cpu_best_avx2_core()


def test_user_core_is_honoured(canary, small_config, tmp_path):
    out = tmp_path / "run"
    r = run(canary, *train_args(small_config, out), env={"OPENBLAS_CORETYPE": "Sandybridge"})
    assert r.returncode == 0, r.stderr
    core, line = header_core(out)
    assert core == "Sandybridge"
    assert "forced by OPENBLAS_CORETYPE=Sandybridge" in line
    assert "BLAS:" not in r.stderr  # nothing was changed, so nothing to warn about


def test_bench_and_eval_select_too(canary, small_config, tmp_path):
    env = {"OPENBLAS_CORETYPE": "Prescott", "CANARY_BLAS_AS_DETECTED": "1",
           "CANARY_CPU_ISA": "avx2"}
    r = run(canary, "bench", "--config", str(small_config), "--steps", "1", "--warmup", "0",
            env=env)
    assert r.returncode == 0, r.stderr
    assert f"core={cpu_best_avx2_core()}" in r.stdout
    assert re.search(r"# BLAS: OpenBLAS \S+ core " + cpu_best_avx2_core(), r.stdout)


def test_pthread_build_is_detected_and_safe(canary, small_config, tmp_path):
    """The pthread OpenBLAS (its own thread pool) at 2 threads: a clear line, single-threaded
    BLAS with products split over canary's threads, and the same losses as the OpenMP build."""
    if not os.path.isdir(PTHREAD_DIR):
        pytest.fail(f"{PTHREAD_DIR} missing: install libopenblas0-pthread (./tests/run does)")
    ref, out = tmp_path / "omp", tmp_path / "pthread"
    args = ["--set", "train.threads=2"]
    r = run(canary, *train_args(small_config, ref), *args, env={"OMP_NUM_THREADS": "2"})
    assert r.returncode == 0, r.stderr
    r = run(canary, *train_args(small_config, out), *args,
            env={"LD_LIBRARY_PATH": PTHREAD_DIR, "OMP_NUM_THREADS": "2"})
    assert r.returncode == 0, r.stderr
    assert "this OpenBLAS is the pthread build" in r.stderr
    assert "(pthread build)" in header_core(out)[1]
    a = [l.split("\t")[2] for l in (ref / "metrics.tsv").read_text().splitlines()[1:]
         if l.startswith("train")]
    b = [l.split("\t")[2] for l in (out / "metrics.tsv").read_text().splitlines()[1:]
         if l.startswith("train")]
    assert len(a) == len(b) == 3
    for x, y in zip(a, b):
        assert abs(float(x) - float(y)) <= 1e-5 * abs(float(x))
