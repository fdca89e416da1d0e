#!/usr/bin/python3
"""Probe overhead on config (a) or (b): mean step time (probe steps counted at their cadence)
with probes off, with the default probes, and with every probe at every step, interleaved over
repeats (medians of the means); plus checkpoint write time and size. 1 thread. (LR-sensitivity probes need held-out data, which the random-token benchmark has
not; their cost is 4 forward passes, about 4/3 of a step, every probes.lr_probe_every steps.)

    /usr/bin/python3 bench/probes.py [--config b] [--repeats 5] [--steps 40]"""
import argparse
import os
import re
import statistics
import subprocess

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
ENV = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
           OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")


def bench(config, steps, *extra):
    cmd = [os.path.join(ROOT, "build", "canary"), "bench", "--config",
           f"bench/configs/{config}.ini", "--steps", str(steps), "--set", "train.threads=1", *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=ROOT, check=True).stdout
    return {k: float(v) for k, v in re.findall(r"(\w+)=([-0-9.eE+]+)", out)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="b", help="a or b (bench/configs)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--steps", type=int, default=40, help="timed steps per run (a multiple of "
                    "probes.every, so each run has the same share of probe steps)")
    args = ap.parse_args()
    modes = {"probes off": [], "default probes (every 10)": ["--probes"],
             "every probe every step": ["--probes", "--set", "probes.every=1"]}
    runs = {m: [] for m in modes}
    for _ in range(args.repeats):
        for m, extra in modes.items():
            runs[m].append(bench(args.config, args.steps, *extra))
    base = statistics.median(r["step_ms_mean"] for r in runs["probes off"])
    print(f"config ({args.config}), 1 thread, mean step time over {args.steps} steps per run, "
          f"medians of {args.repeats} interleaved runs")
    print()
    print("| mode | step ms | overhead |")
    print("|---|---|---|")
    for m in modes:
        t = statistics.median(r["step_ms_mean"] for r in runs[m])
        print(f"| {m} | {t:.1f} | {100 * (t / base - 1):+.1f}% |")
    ck = runs["default probes (every 10)"]
    print(f"| checkpoint write | {statistics.median(r['checkpoint_ms'] for r in ck):.0f} ms | "
          f"{ck[0]['checkpoint_mib']:.1f} MiB |")


if __name__ == "__main__":
    main()
