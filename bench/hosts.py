#!/usr/bin/python3
"""Two hosts over TCP against one host: config (b) at np = 2, one rank per host (network
namespaces joined by a bridge, tests/cli/hosts.py; Open MPI's btl tcp,self) against both ranks
on one host over shared memory, and over TCP on loopback on one host (the BTL alone, without the
namespaces). Per setting: tokens/s, the wait for the gradient allreduce after backward with the
allreduce blocking (its whole time, the ranks' imbalance included) and overlapped with backward,
the share of it the overlap hides; and the allreduce alone (`canary bench --allreduce`: one
blocking MPI_Allreduce of the gradient's size, after a barrier). Every setting runs unbound
(`--bind-to none`) with Open MPI's ob1 PML, as the two-host harness must. Needs root.

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
    line = [l for l in r.stdout.splitlines() if "=" in l][-1]
    return {k: float(v) for k, v in re.findall(r"(\w+)=([-0-9.eE+]+)", line)}


def bench_args(steps, overlap):
    return [CANARY, "bench", "--config", os.path.join(ROOT, "bench", "configs", "b.ini"),
            "--steps", str(steps),
            "--set", "train.threads=1", "--set", f"train.overlap_reduce={overlap}"]


def allreduce_args(mib):
    return [CANARY, "bench", "--allreduce", str(mib), "--steps", "20"]


def local(args, tcp):
    cmd = ["mpiexec", "-n", "2", "--oversubscribe", "--bind-to", "none", "--mca", "pml", "ob1"]
    if tcp:
        cmd += ["--mca", "btl", "tcp,self", "--mca", "btl_tcp_if_include", "lo"]
    r = subprocess.run(cmd + args, capture_output=True, text=True,
                       env=dict(os.environ, **MPI_ENV), cwd=ROOT)
    return parse(r)


def two_hosts(hosts, tmp, args):
    return parse(hosts.mpirun(tmp, 2, *args, map_by="ppr:1:node"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/hosts.py needs root (network namespaces)")
    settings = ("shared memory, one host", "TCP on loopback, one host", "TCP, two hosts")
    runs = {(s, o): [] for s in settings for o in ("true", "false", "allreduce")}
    hosts = Hosts(2)
    mib = 12.5  # config (b)'s gradient: 3279104 floats
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.repeats):  # interleaved: the host's drift hits all alike
                for o in ("true", "false", "allreduce"):
                    a = allreduce_args(mib) if o == "allreduce" else bench_args(args.steps, o)
                    runs[(settings[0], o)].append(local(a, False))
                    runs[(settings[1], o)].append(local(a, True))
                    runs[(settings[2], o)].append(two_hosts(hosts, tmp, a))
    finally:
        hosts.close()
    med = lambda rs, k: statistics.median(r[k] for r in rs)
    print(f"config (b) at np = 2, 1 thread per rank, gradient {mib} MiB; medians of "
          f"{args.repeats} interleaved repeats x {args.steps} steps (allreduce: x 20)")
    print()
    print("| setting | allreduce of 12.5 MiB alone | tokens/s (overlapped) | tokens/s "
          "(blocking) | wait after backward: blocking / overlapped | hidden by the overlap |")
    print("|---|---|---|---|---|---|")
    for s in settings:
        ov, bl, ar = runs[(s, "true")], runs[(s, "false")], runs[(s, "allreduce")]
        w_ov, w_bl = med(ov, "reduce_wait_ms"), med(bl, "reduce_wait_ms")
        print(f"| {s} | {med(ar, 'allreduce_ms_median'):.1f} ms "
              f"({med(ar, 'allreduce_gib_per_s'):.2f} GiB/s) | "
              f"{med(ov, 'canary_tokens_per_s'):.0f} | {med(bl, 'canary_tokens_per_s'):.0f} | "
              f"{w_bl:.1f} ms / {w_ov:.1f} ms | {1 - w_ov / w_bl:.0%} |")


if __name__ == "__main__":
    main()
