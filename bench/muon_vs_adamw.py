#!/usr/bin/python3
"""Muon against AdamW at equal steps, from a sweep over optim.name = adamw, muon and optim.lr
(configs/muon_study.ini): per learning rate, each optimizer's final evaluation loss and the first
evaluation step at which Muon reaches AdamW's final loss; then the same for each optimizer's best
learning rate. Reads the sweep through the analysis package.

    /usr/bin/python3 bench/muon_vs_adamw.py runs/muon-study"""
import argparse
import math
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "analysis")))
from canary_analysis.load import load_sweep  # noqa: E402


def reaches(run, target):
    """First evaluation step whose loss is <= target, or None."""
    if not run.has("eval/loss"):
        return None
    loss = run.ds["eval/loss"]
    reached = loss["eval_step"].where(loss <= target, drop=True)
    return int(reached[0]) if reached.size else None


def row(label, adamw, muon):
    step = reaches(muon, adamw.final_loss)
    at = "never" if step is None else f"{step} ({step / muon.steps:.0%})"
    print(f"| {label} | {adamw.final_loss:.4f} | {muon.final_loss:.4f} | {at} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sweep")
    args = ap.parse_args()
    sw = load_sweep(args.sweep)
    by = {}
    for r in sw.runs:
        name = r.swept.get("optim.name", r.config.get("optim.name"))
        if r.status != "ok" or math.isnan(r.final_loss):
            print(f"skipping {r.id}: status {r.status}", file=sys.stderr)
            continue
        by.setdefault(name, {})[r.lr] = r
    if "adamw" not in by or "muon" not in by:
        sys.exit(f"{args.sweep}: needs finished runs of both optim.name = adamw and muon")
    lrs = sorted(set(by["adamw"]) & set(by["muon"]))
    print("| lr | AdamW final eval loss | Muon final eval loss | step where Muon reaches AdamW's "
          "final loss |")
    print("|---|---|---|---|")
    for lr in lrs:
        row(f"{lr:g}", by["adamw"][lr], by["muon"][lr])
    best = {k: min(v.values(), key=lambda r: r.final_loss) for k, v in by.items()}
    row(f"best of each (AdamW lr {best['adamw'].lr:g}, Muon lr {best['muon'].lr:g})",
        best["adamw"], best["muon"])


if __name__ == "__main__":
    main()
