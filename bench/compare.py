#!/usr/bin/python3
"""Runs `canary bench` and bench/torch_bench.py on the same configs and thread counts, one after
the other, and prints a markdown table of the ratios (the numbers the trainer-core issue asks for).

Both sides get OPENBLAS_NUM_THREADS = OMP_NUM_THREADS = the thread count, so neither runs more
BLAS threads than the other (Debian's torch uses the system OpenBLAS, whose pthread build would
otherwise start one thread per core regardless of torch.set_num_threads). The PyTorch process gets
OPENBLAS_CORETYPE = the core canary selected, so both run the same sgemm kernels; the table names
the core each side reports."""
import argparse
import os
import platform
import re
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
TARGET = {"a": 2.5, "b": 1.5, "c": 1.5, "b-moe": 1.5, "b-mla": 1.5, "v32k": 1.3}


def parse(line):
    """key=value pairs: numbers as floats, the rest (core, precision, backend) as text."""
    out = {"core": "?", "backend": "?"}
    for k, v in re.findall(r"(\w+)=(\S+)", line):
        try:
            out[k] = float(v)
        except ValueError:
            out[k] = v
    return out


def run(cmd, threads, core=None):
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    if core:
        env["OPENBLAS_CORETYPE"] = core
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if r.returncode != 0:
        sys.exit(f"benchmark command failed: {' '.join(cmd)}\n{r.stderr}")
    lines = [ln for ln in r.stdout.strip().splitlines() if "tokens_per_s=" in ln]
    return parse(lines[-1])


def machine():
    model = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {platform.node()}"


def median_run(runs, key):
    """The run whose `key` is the median (the lower middle for an even count)."""
    return sorted(runs, key=lambda r: r[key])[(len(runs) - 1) // 2]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", default="a,b,c,b-moe,b-mla,v32k")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--steps", type=int, default=0, help="timed steps (default: per config)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--bf16", default="c",
                    help="configs also run at train.precision = bf16 (its backend as auto "
                    "chooses: oneDNN on AMX / AVX512-BF16, else the emulation); '' for none")
    ap.add_argument("--onednn", default="",
                    help="configs also run at fp32 on oneDNN's matmul "
                    "(train.matmul_backend = onednn)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="canary and PyTorch runs, alternated; the table takes each side's "
                    "median run (a busy moment on a shared host hits both)")
    args = ap.parse_args()
    default_steps = {"a": 30, "b": 10, "c": 5, "b-moe": 10, "b-mla": 10, "v32k": 5}
    rows, variants = [], []
    bf16 = set(filter(None, args.bf16.split(",")))
    onednn = set(filter(None, args.onednn.split(",")))
    for name in args.configs.split(","):
        cfg = os.path.join("bench", "configs", f"{name}.ini")
        steps = args.steps or default_steps.get(name, 10)
        for t in [int(x) for x in args.threads.split(",")]:
            base = [os.path.join("build", "canary"), "bench", "--config", cfg, "--set",
                    f"train.threads={t}", "--steps", str(steps), "--warmup", str(args.warmup)]
            extra = {"bf16": ["--set", "train.precision=bf16"] if name in bf16 else None,
                     "onednn fp32": (["--set", "train.matmul_backend=onednn"]
                                     if name in onednn else None)}
            cs, ps, vs = [], [], {k: [] for k, v in extra.items() if v}
            for _ in range(args.repeats):
                cs.append(run(base, t))
                ps.append(run(["/usr/bin/python3", "bench/torch_bench.py", "--config", cfg,
                               "--threads", str(t), "--steps", str(steps), "--warmup",
                               str(args.warmup)], t, cs[-1]["core"]))
                for k in vs:
                    vs[k].append(run(base + extra[k], t))
            c = median_run(cs, "canary_tokens_per_s")
            p = median_run(ps, "torch_tokens_per_s")
            rows.append((name, t, c, p))
            for k, runs in vs.items():
                variants.append((name, t, k, median_run(runs, "canary_tokens_per_s"), c, p))
            print(f"# {name} threads={t}: canary {c['canary_tokens_per_s']:.0f} tok/s, "
                  f"torch {p['torch_tokens_per_s']:.0f} tok/s" +
                  "".join(f", {k} {variants[-len(vs) + i][3]['canary_tokens_per_s']:.0f}"
                          for i, k in enumerate(vs)), file=sys.stderr, flush=True)
    print(f"machine: {machine()}; median over timed steps after {args.warmup} warmup steps; "
          f"each side's median of {args.repeats} alternated runs")
    print()
    print("| config | threads | core (canary / PyTorch) | canary tok/s | PyTorch tok/s | ratio "
          "| target | canary GFLOP/s | % of sgemm peak | accounted MiB | RSS above start MiB "
          "| RSS / accounted |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, t, c, p in rows:
        ratio = c["canary_tokens_per_s"] / p["torch_tokens_per_s"]
        print(f"| {name} | {t} | {c['core']} / {p['core']} "
              f"| {c['canary_tokens_per_s']:.0f} | {p['torch_tokens_per_s']:.0f} "
              f"| {ratio:.2f}x | >={TARGET.get(name, 1.0)}x | {c['model_gflops']:.1f} "
              f"| {c['pct_of_peak']:.0f}% of {t} x {c['sgemm_1t_gflops']:.0f} "
              f"| {c['accounted_mib']:.0f} | {c['peak_rss_mib'] - c['baseline_rss_mib']:.0f} "
              f"| {c['rss_over_accounted']:.3f} |")
    print()
    print("% of sgemm peak: the model's matmul FLOPs per second (attention products counted "
          "over the full T x T square, as PyTorch computes them; canary skips most of the "
          "masked half: narrow heads, d_h <= 32, take direct kernels over the causal triangle, "
          "wider ones sgemm in causal blocks of 64 query rows) against threads x the "
          "single-thread sgemm rate measured in the same run (1024^3). RSS above start: peak "
          "RSS minus the RSS before the model was built (MPI, OpenBLAS and the binary).")
    if not variants:
        return
    print()
    print("| config | threads | variant | backend | tok/s | canary fp32 tok/s | ratio to canary "
          "fp32 | PyTorch fp32 tok/s | ratio to PyTorch fp32 | % of the backend's matmul peak "
          "| % of sgemm peak |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, t, k, v, c, p in variants:
        target = " (target >= 2x)" if k == "bf16" else ""
        target_pt = " (target >= 3x)" if k == "bf16" else ""
        print(f"| {name} | {t} | {k} | {v['backend']} | {v['canary_tokens_per_s']:.0f} "
              f"| {c['canary_tokens_per_s']:.0f} "
              f"| {v['canary_tokens_per_s'] / c['canary_tokens_per_s']:.2f}x{target} "
              f"| {p['torch_tokens_per_s']:.0f} "
              f"| {v['canary_tokens_per_s'] / p['torch_tokens_per_s']:.2f}x{target_pt} "
              f"| {v['pct_of_matmul_peak']:.0f}% of {t} x {v['matmul_1t_gflops']:.0f} "
              f"| {v['pct_of_peak']:.0f}% of {t} x {v['sgemm_1t_gflops']:.0f} |")
    print()
    print("Variants: the same config at train.precision = bf16 (backend as auto chooses: onednn "
          "on CPUs with AMX or AVX512-BF16, else emulation, which rounds the operands and runs "
          "sgemm) or at fp32 on oneDNN. The backend's matmul peak: oneDNN's matmul of that type "
          "at 1024^3 on one thread (operands already converted), or sgemm for the emulation.")


if __name__ == "__main__":
    main()
