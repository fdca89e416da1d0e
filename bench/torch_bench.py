#!/usr/bin/python3
"""PyTorch side of canary's throughput benchmark.

Builds the reference model (tests/torch_model.py) in float32 with canary's
benchmark init, trains W untimed then S timed steps on random tokens with the
same clip / AdamW / lr-schedule math as the C trainer, and prints one line:

    torch_tokens_per_s=<median B*T/step_time> step_ms_median=<ms> peak_rss_mib=<MiB>

Usage:
    /usr/bin/python3 bench/torch_bench.py --config FILE.ini \
        [--set section.key=value ...] --threads N --steps S --warmup W

A step is timed end to end: forward, backward, global-norm clip and the
optimizer update. Fused kernels are used where this torch build has them
(F.layer_norm, F.gelu(approximate='tanh'), F.silu, and
F.scaled_dot_product_attention(is_causal=True) when available, otherwise an
explicit masked softmax). No torch.compile.
"""

import argparse
import os
import resource
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import torch_model as tm  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description="PyTorch reference benchmark for canary")
    ap.add_argument("--config", required=True, help="canary INI config")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override a config value (repeatable)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps before timing")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)

    cfg = tm.load_config(args.config, args.set)
    # Let the lr schedule span exactly the W + S benchmark steps (the schedule
    # does not affect timing; this just keeps lr_t inside its intended range).
    cfg["train"]["steps"] = args.warmup + args.steps
    B, T, V = cfg["train"]["batch_size"], cfg["model"]["seq_len"], cfg["model"]["vocab"]
    seed = cfg["train"]["seed"]

    gen = torch.Generator().manual_seed(seed)
    names = [n for n, _ in tm.tensor_specs(cfg)]
    params = tm.make_leaf_params(tm.init_weights(cfg, gen, dtype=torch.float32))
    opt = tm.AdamW(cfg, names, params)

    # Pre-draw every batch so token generation is outside the timed region.
    total = args.warmup + args.steps
    batches = [torch.randint(0, V, (B, T + 1), generator=gen) for _ in range(total)]

    times = []
    for i, tok in enumerate(batches):
        x, y = tok[:, :-1], tok[:, 1:]
        t0 = time.perf_counter()
        info = tm.train_step(cfg, params, names, opt, x, y, i, fast=True)
        dt = time.perf_counter() - t0
        if i >= args.warmup:
            times.append(dt)
        if not torch.isfinite(info["loss"]):
            sys.exit("non-finite loss at step %d" % i)

    step_s = statistics.median(times) if times else float("nan")
    tok_s = statistics.median([B * T / dt for dt in times]) if times else float("nan")
    # ru_maxrss is in KiB on Linux.
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print("torch_tokens_per_s=%.1f step_ms_median=%.3f peak_rss_mib=%.1f core=%s" % (
        tok_s, step_s * 1e3, rss_mib, openblas_core()))


def openblas_core():
    """The OpenBLAS core this process computes on (torch's BLAS, when it is OpenBLAS)."""
    import ctypes
    for line in open("/proc/self/maps"):
        path = line.split()[-1]
        if "libopenblas" in path:
            lib = ctypes.CDLL(path)
            lib.openblas_get_corename.restype = ctypes.c_char_p
            return lib.openblas_get_corename().decode()
    return "not-OpenBLAS"


if __name__ == "__main__":
    main()
