#!/usr/bin/python3
"""Probe overhead on config (a) or (b), measured inside one process (`canary bench --probe-cost`):
the timed steps cycle through no probes, the every-step series only and a full probe step, so the
host's drift between runs cannot hide a few percent; the fastest step of each kind gives the cost
of the every-step series, of a full probe step, and of both at the default cadence. Medians over
--repeats processes; plus checkpoint write time and size. 1 thread. (LR-sensitivity probes need
held-out data, which the random-token benchmark has not; their cost is 4 forward passes, about
4/3 of a step, every probes.lr_probe_every steps.)

    /usr/bin/python3 bench/probes.py [--config b] [--repeats 3] [--steps 60]"""
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
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=60, help="timed steps per process (a third of "
                    "them of each kind)")
    args = ap.parse_args()
    runs = [bench(args.config, args.steps, "--probe-cost") for _ in range(args.repeats)]

    def med(key):
        return statistics.median(r[key] for r in runs)
    print(f"config ({args.config}), 1 thread, {args.steps // 3} steps of each kind per process, "
          f"fastest of each kind, medians of {args.repeats} processes")
    print()
    print("| what | step ms | cost |")
    print("|---|---|---|")
    print(f"| no probes | {med('probe_off_ms'):.1f} | |")
    print(f"| every-step series only | {med('probe_every_step_ms'):.1f} | "
          f"{med('probe_every_step_pct'):+.1f}% |")
    print(f"| full probe step | {med('probe_full_ms'):.1f} | {med('probe_full_step_pct'):+.1f}% |")
    print(f"| **default cadence (every {int(runs[0]['probes_every'])})** | | "
          f"**{med('probe_cost_pct'):+.1f}%** |")
    print(f"| checkpoint write | {med('checkpoint_ms'):.0f} ms | {runs[0]['checkpoint_mib']:.1f} MiB |")


if __name__ == "__main__":
    main()
