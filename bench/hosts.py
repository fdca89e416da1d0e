#!/usr/bin/python3
"""Two hosts over TCP against one host: config (b) at np = 2, one rank per host (network
namespaces joined by a bridge, tests/cli/hosts.py; Open MPI's btl tcp,self) against both ranks
on one host over shared memory, and over TCP on loopback on one host (the BTL alone, without the
namespaces). Per setting: tokens/s, the wait for the gradient allreduce after backward with the
allreduce blocking (its whole time, the ranks' imbalance included) and overlapped with backward,
the share of it the overlap hides, and the allreduce's bandwidth (gradient bytes / blocking
wait). Needs root (network namespaces).

    /usr/bin/python3 bench/hosts.py [--repeats 3] [--steps 10]"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "cli"))
from hosts import MPI_ENV, Hosts  # noqa: E402

CANARY = os.path.join(ROOT, "build", "canary")


def parse(r):
    if r.returncode != 0:
        sys.exit(r.stdout + r.stderr)
    line = [l for l in r.stdout.splitlines() if "tokens_per_s=" in l][-1]
    return {k: float(v) for k, v in re.findall(r"(\w+)=([-0-9.eE+]+)", line)}


def bench_args(steps, overlap):
    return [CANARY, "bench", "--config", "bench/configs/b.ini", "--steps", str(steps),
            "--set", "train.threads=1", "--set", f"train.overlap_reduce={overlap}"]


def local(steps, overlap, tcp):
    cmd = ["mpiexec", "-n", "2", "--oversubscribe"]
    if tcp:
        cmd += ["--mca", "btl", "tcp,self", "--mca", "btl_tcp_if_include", "lo"]
    r = subprocess.run(cmd + bench_args(steps, overlap), capture_output=True, text=True,
                       env=dict(os.environ, **MPI_ENV), cwd=ROOT)
    return parse(r)


def two_hosts(hosts, tmp, steps, overlap):
    r = hosts.mpirun(tmp, 2, *bench_args(steps, overlap), map_by="ppr:1:node")
    return parse(r)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/hosts.py needs root (network namespaces)")
    settings = ("shared memory, one host", "TCP on loopback, one host", "TCP, two hosts")
    runs = {(s, o): [] for s in settings for o in ("true", "false")}
    hosts = Hosts(2)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.repeats):  # interleaved: the host's drift hits all alike
                for o in ("true", "false"):
                    runs[(settings[0], o)].append(local(args.steps, o, False))
                    runs[(settings[1], o)].append(local(args.steps, o, True))
                    runs[(settings[2], o)].append(two_hosts(hosts, tmp, args.steps, o))
    finally:
        hosts.close()
    med = lambda rs, k: statistics.median(r[k] for r in rs)
    params = runs[(settings[0], "true")][0]["params"]
    mib = params * 4 / 2**20
    print(f"config (b) at np = 2, 1 thread per rank, gradient {mib:.1f} MiB; medians of "
          f"{args.repeats} interleaved repeats x {args.steps} steps")
    print()
    print("| setting | tokens/s (overlapped) | allreduce wait: blocking / overlapped | hidden "
          "by the overlap | allreduce bandwidth (blocking) |")
    print("|---|---|---|---|---|")
    for s in settings:
        ov, bl = runs[(s, "true")], runs[(s, "false")]
        w_ov, w_bl = med(ov, "reduce_wait_ms"), med(bl, "reduce_wait_ms")
        print(f"| {s} | {med(ov, 'canary_tokens_per_s'):.0f} | {w_bl:.1f} ms / {w_ov:.1f} ms | "
              f"{1 - w_ov / w_bl:.0%} | {mib / 1024 / (w_bl / 1000):.2f} GiB/s |")


if __name__ == "__main__":
    main()
