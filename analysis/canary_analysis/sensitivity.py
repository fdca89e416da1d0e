"""Wortsman et al. (2023, §2.2) LR sensitivity of a sweep, per group of the other swept keys.

Definition (docs: /work/shared/reference/papers.md §1.2, DESIGN.md §8):

    LR sensitivity = mean over the LR grid in [a, b] of  min(l(eta), l0) - l*
    l* = min over the grid of min(l(eta), l0)

with l(eta) the final eval loss of the run at peak LR eta, l0 the loss at initialisation, and a
diverged run (status diverged, a NaN/Inf final loss, or a final loss above l0) counted as l0.

Contracts:
- ``capped_loss(final, l0, diverged)`` -> l0 if diverged or ``final`` is not finite, else
  min(final, l0).
- ``sensitivity_value(finals, l0s, diverged)`` -> (sensitivity, l*, capped) on one grid.
- ``group_key(run, keys)`` / ``group_label(key)``: a group is the tuple of (key, canonical
  value) of every swept key except optim.lr, in swept-key order.
- ``lr_grid(runs, lr_range)`` -> the sorted distinct LRs of ``runs`` inside [a, b] (relative
  tolerance 1e-9 at the ends).
- ``lr_sensitivity(sweep, lr_range)`` -> [GroupSensitivity], one per group, in the order the
  groups first appear. Raises ``SensitivityUnavailable`` when optim.lr is not a swept key and
  ``AnalysisError`` when the range is invalid or holds fewer than 2 LRs of the sweep. Runs that
  crashed or failed without a final loss (and without a non-finite loss) are not divergences:
  they are left out of the grid and listed in ``missing``. Several runs at one LR in a group
  (should not happen) are averaged after capping. A run without a finite l0 uses the median of
  its group's.
"""

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .errors import AnalysisError, SensitivityUnavailable
from .readers import fmt_value, short_key

LR_KEY = "optim.lr"
DEFAULT_RANGE = (3e-4, 3e-1)


@dataclass
class GroupSensitivity:
    """LR sensitivity of one group (see the module docstring)."""

    key: tuple
    label: str
    lrs: list = field(default_factory=list)          # grid points used, ascending
    capped: list = field(default_factory=list)       # min(l, l0) per grid point (l0 if diverged)
    run_ids: list = field(default_factory=list)      # per grid point (';'-joined if several)
    l0: float = math.nan                             # median l0 of the group
    sensitivity: float = math.nan
    best_lr: float = math.nan                        # NaN when every run diverged
    best_loss: float = math.nan                      # l*
    n_diverged: int = 0
    missing: list = field(default_factory=list)      # ids left out (crashed, no final loss)
    notes: list = field(default_factory=list)


def capped_loss(final, l0, diverged):
    """min(final, l0); l0 for a diverged run or a non-finite final loss."""
    if diverged or final is None or not math.isfinite(final):
        return l0
    return min(final, l0)


def sensitivity_value(finals, l0s, diverged=None):
    """Pure form of the definition on one grid: ``finals`` and ``l0s`` per grid point,
    ``diverged`` flags (default none). Returns (sensitivity, l*, capped losses)."""
    diverged = [False] * len(finals) if diverged is None else list(diverged)
    capped = [capped_loss(f, l0, d) for f, l0, d in zip(finals, l0s, diverged)]
    if len(capped) < 2:
        raise AnalysisError(f"{len(capped)} grid point(s): need at least 2")
    best = min(capped)
    return float(np.mean([c - best for c in capped])), best, capped


def group_key(run, keys):
    """(key, canonical value) of the swept keys other than optim.lr."""
    return tuple((k, run.swept.get(k)) for k in keys if k != LR_KEY)


def group_label(key):
    """'qk_norm=true dim=64', or 'all runs' for the empty group."""
    return " ".join(f"{short_key(k)}={fmt_value(v)}" for k, v in key) or "all runs"


def check_range(lr_range):
    """Validates [a, b]: two positive finite numbers with a <= b."""
    try:
        a, b = (float(x) for x in lr_range)
    except (TypeError, ValueError):
        raise AnalysisError(f"LR range {lr_range!r}: expected two numbers a b") from None
    if not (math.isfinite(a) and math.isfinite(b) and 0 < a <= b):
        raise AnalysisError(f"LR range [{a:g}, {b:g}]: need 0 < a <= b")
    return a, b


def in_range(lr, lr_range, rtol=1e-9):
    a, b = lr_range
    return math.isfinite(lr) and a * (1 - rtol) <= lr <= b * (1 + rtol)


def lr_grid(runs, lr_range):
    """Sorted distinct learning rates of ``runs`` inside the range."""
    lrs = sorted({r.lr for r in runs if in_range(r.lr, lr_range)})
    out = []
    for lr in lrs:  # merge values that differ only by float formatting
        if not out or not math.isclose(lr, out[-1], rel_tol=1e-9):
            out.append(lr)
    return out


def lr_sensitivity(sweep, lr_range=DEFAULT_RANGE):
    """Per-group LR sensitivity, best LR and best loss (see the module docstring)."""
    if LR_KEY not in sweep.swept_keys:
        raise SensitivityUnavailable(
            "LR sensitivity not computable: optim.lr is not a swept key of this sweep "
            f"(swept: {', '.join(sweep.swept_keys) or 'nothing'})")
    lr_range = check_range(lr_range)
    grid = lr_grid(sweep.runs, lr_range)
    if len(grid) < 2:
        all_lrs = sorted({r.lr for r in sweep.runs if math.isfinite(r.lr)})
        raise AnalysisError(
            f"LR range [{lr_range[0]:g}, {lr_range[1]:g}] holds {len(grid)} of the sweep's "
            f"learning rates ({', '.join(f'{x:g}' for x in all_lrs) or 'none'}); need at "
            f"least 2 (set --lr-range)")
    keys = [k for k in sweep.swept_keys if k != LR_KEY]
    table = pd.DataFrame({"run": sweep.runs,
                          "group": [group_key(r, sweep.swept_keys) for r in sweep.runs]})
    return [_one_group(key, list(rows["run"]), lr_range)
            for key, rows in table.groupby("group", sort=False)] if keys else \
        [_one_group((), sweep.runs, lr_range)]


def _lr_key(lr):
    """LRs that differ only by float formatting ("3e-4" and "0.0003") share a grid point."""
    return float(f"{lr:.9g}")


def _one_group(key, runs, lr_range):
    g = GroupSensitivity(key=key, label=group_label(key))
    l0s = [r.l0 for r in runs if math.isfinite(r.l0)]
    g.l0 = float(np.median(l0s)) if l0s else math.nan
    points = []
    for run in runs:
        if not in_range(run.lr, lr_range):
            continue
        if run.crashed and not run.diverged:
            g.missing.append(run.id)
            continue
        l0 = run.l0
        if not math.isfinite(l0):
            l0 = g.l0
            g.notes.append(f"{run.id}: no l0 of its own; used the group's {l0:.4g}")
        if not math.isfinite(l0):
            g.missing.append(run.id)
            g.notes.append(f"{run.id}: no l0 in the group; left out")
            continue
        diverged = run.diverged or not math.isfinite(run.final_loss)
        g.n_diverged += diverged
        points.append({"lr": _lr_key(run.lr), "capped": capped_loss(run.final_loss, l0, diverged),
                       "id": run.id, "diverged": diverged})
    if points:
        grid = pd.DataFrame(points).groupby("lr", sort=True).agg(
            capped=("capped", "mean"), ids=("id", ";".join), n=("id", "size"),
            diverged=("diverged", "all"))
        g.lrs = [float(x) for x in grid.index]
        g.capped = [float(x) for x in grid["capped"]]
        g.run_ids = list(grid["ids"])
        g.notes += [f"{n} runs at lr {lr:g}; averaged" for lr, n in grid["n"].items() if n > 1]
    if g.missing:
        g.notes.append("grid incomplete: no final loss for " + ", ".join(g.missing))
    if len(g.lrs) < 2:
        g.notes.append(f"{len(g.lrs)} grid point(s) in range: sensitivity not defined")
        if g.lrs:
            g.best_loss = g.capped[0]
            g.best_lr = g.lrs[0]
        return g
    capped = np.array(g.capped)
    g.best_loss = float(capped.min())
    g.sensitivity = float(np.mean(capped - g.best_loss))
    all_at_l0 = bool(grid["diverged"].all())
    g.best_lr = math.nan if all_at_l0 else g.lrs[int(np.argmin(capped))]
    if all_at_l0:
        g.notes.append("every run in range diverged")
    return g
