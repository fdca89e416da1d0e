#!/usr/bin/python3
"""The data-parallel benchmark: np=2 over np=1 tokens/s at 1 thread per rank on config (b), the
share of the allreduce hidden behind backward (overlapped vs blocking, measured side by side), and
the wall time of the demo study's 14-run grid with 2 groups of one rank against one run at a time.

    /usr/bin/python3 bench/dist.py [--repeats 3] [--skip-sweep]
(bench/run-dist installs, builds and calls this.)"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
ENV = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
           OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
CANARY = os.path.join(ROOT, "build", "canary")


def bench(np, *sets, steps=10):
    cmd = ["mpiexec", "-n", str(np), "--oversubscribe", CANARY, "bench", "--config",
           "bench/configs/b.ini", "--steps", str(steps), "--set", "train.threads=1"]
    for s in sets:
        cmd += ["--set", s]
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=ROOT)
    if r.returncode != 0:
        sys.exit(r.stderr)
    return {k: float(v) for k, v in re.findall(r"(\w+)=([-0-9.eE+]+)", r.stdout)}


def sweep(np, out):
    cmd = ["mpiexec", "-n", str(np), "--oversubscribe", CANARY, "sweep", "--config",
           "configs/demo.ini", "--out", out, "--set", "train.threads=1"]
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=ROOT)
    if r.returncode != 0:
        sys.exit(r.stdout + r.stderr)
    return time.time() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-sweep", action="store_true")
    args = ap.parse_args()
    one, two, ov, block = [], [], [], []
    for _ in range(args.repeats):  # interleaved, so drifts of the shared machine hit all alike
        one.append(bench(1))
        ov.append(bench(2, "train.overlap_reduce=true"))
        block.append(bench(2, "train.overlap_reduce=false"))
    med = lambda runs, key: statistics.median(r[key] for r in runs)
    t1, t2, tb = (med(x, "canary_tokens_per_s") for x in (one, ov, block))
    w_ov, w_bl = med(ov, "reduce_wait_ms"), med(block, "reduce_wait_ms")
    s_ov, s_bl = med(ov, "step_ms_median"), med(block, "step_ms_median")
    print("config (b): d=256 L=4 H=4 T=256 B=8 V=256, 1 thread per rank, "
          f"medians of {args.repeats} interleaved repeats x 10 steps")
    print()
    print("| measurement | value |")
    print("|---|---|")
    print(f"| np=1 tokens/s | {t1:.0f} |")
    print(f"| np=2 tokens/s (overlapped allreduce) | {t2:.0f} |")
    print(f"| np=2 / np=1 | {t2 / t1:.2f}x (target >= 1.8x) |")
    print(f"| np=2 tokens/s (blocking allreduce after backward) | {tb:.0f} |")
    print(f"| wait for the allreduce after backward: blocking / overlapped | {w_bl:.1f} ms / "
          f"{w_ov:.1f} ms |")
    print(f"| share of the allreduce hidden behind backward | {1 - w_ov / w_bl:.0%} |")
    print(f"| step time: blocking / overlapped | {s_bl:.0f} ms / {s_ov:.0f} ms |")
    if not args.skip_sweep:
        tmp = tempfile.mkdtemp(prefix="canary-sweep-bench-")
        try:
            seq = sweep(1, os.path.join(tmp, "seq"))
            par = sweep(2, os.path.join(tmp, "par"))
        finally:
            shutil.rmtree(tmp)
        print(f"| demo study, 14 runs x 500 steps: one run at a time (np=1) | {seq:.0f} s |")
        print(f"| demo study: 2 groups of one rank (np=2) | {par:.0f} s ({seq / par:.2f}x) |")


if __name__ == "__main__":
    main()
