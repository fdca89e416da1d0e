"""Attention-logit early warning (Wortsman et al. 2023 §3.3, Fig. 9).

For each learning rate (and each family of the other swept keys that do not set the model
size), fit log10(max attention logit of block 0 at a chosen step) as a polynomial in
log10(N), N = non-embedding parameter count (``params.non_embedding_params``), across the model
sizes of the sweep; then predict the logit of the next size, ``next_factor`` x the largest, and
whether it crosses the threshold (1e4: in the paper every run above it diverged).

Contracts:
- ``fit_log_poly(params, logits)`` -> (coefficients, highest power first, of log10 logit in
  log10 N; degree; warning or None). Degree 2 with >= 3 distinct sizes, 1 (with a warning)
  with 2; raises ``ValueError`` with fewer, or for non-positive inputs. Repeated sizes are
  averaged in log space first.
- ``predict(coeffs, n)`` -> the fitted logit at N = n.
- ``early_warning(sweep, logit_step, next_factor, threshold)`` -> ``EarlyWarning``: one ``Fit``
  per (family, LR) with at least 2 sizes, plus messages for what was skipped and why. A run
  contributes only when it reached ``logit_step`` (a finite block-0 logit at or before it, the
  series extending to it) and has a parameter count.
- ``format_predictions(ew)`` -> printable lines; ``fig_early_warning(ew, out_dir)`` ->
  ``figures.FigureResult`` (one panel per family, at least one panel).
"""

import math
from dataclasses import dataclass, field

import numpy as np

from .params import SIZE_KEYS, human_count
from .sensitivity import LR_KEY, group_label
from .series import block_max_logit, default_logit_step, value_at_step

THRESHOLD = 1e4


@dataclass
class Fit:
    """One (family, LR) fit: the observed points, the polynomial and the prediction."""

    family: tuple
    lr: float
    params: list
    logits: list
    run_ids: list
    degree: int
    coeffs: list
    next_params: float
    predicted: float
    crosses: bool
    warning: str = None

    @property
    def family_label(self):
        return group_label(self.family)


@dataclass
class EarlyWarning:
    step: float
    next_factor: float
    threshold: float
    fits: list = field(default_factory=list)
    messages: list = field(default_factory=list)
    observed_over: list = field(default_factory=list)  # (run id, logit, diverged) above threshold


def fit_log_poly(params, logits):
    """Fit log10(logit) against log10(params): quadratic with >= 3 sizes, linear with 2."""
    params = np.asarray(params, dtype=float)
    logits = np.asarray(logits, dtype=float)
    if len(params) != len(logits):
        raise ValueError("params and logits differ in length")
    if np.any(~np.isfinite(params)) or np.any(params <= 0) or np.any(~np.isfinite(logits)) \
            or np.any(logits <= 0):
        raise ValueError("parameter counts and logits must be finite and positive")
    x_all, y_all = np.log10(params), np.log10(logits)
    xs = np.unique(x_all)
    if len(xs) < 2:
        raise ValueError(f"{len(xs)} model size(s): need at least 2 for a fit, 3 for the "
                         f"quadratic")
    ys = np.array([y_all[x_all == x].mean() for x in xs])
    degree, warning = 2, None
    if len(xs) == 2:
        degree = 1
        warning = "only 2 model sizes: linear fit in log-log instead of the quadratic"
    coeffs = np.polyfit(xs, ys, degree)
    return [float(c) for c in coeffs], degree, warning


def predict(coeffs, n):
    """Fitted max attention logit at parameter count ``n``."""
    return float(10 ** np.polyval(coeffs, math.log10(n)))


def _family(run, keys):
    return tuple((k, run.swept.get(k)) for k in keys if k != LR_KEY and k not in SIZE_KEYS)


def early_warning(sweep, logit_step=None, next_factor=2.0, threshold=THRESHOLD):
    """Fits and predictions for every (family, LR) of the sweep (see the module docstring)."""
    step = default_logit_step(sweep.runs) if logit_step is None else logit_step
    ew = EarlyWarning(step=step, next_factor=next_factor, threshold=threshold)
    points = {}
    skipped = []
    for r in sweep.runs:
        steps, logit = block_max_logit(r, 0)
        v, _, reached = value_at_step(steps, logit, step)
        if math.isfinite(v) and v > threshold:
            ew.observed_over.append((r.id, v, r.diverged))
        if r.params is None or not math.isfinite(r.lr):
            skipped.append(f"{r.id} (no model shape or LR)")
            continue
        if not (math.isfinite(v) and v > 0 and reached):
            skipped.append(f"{r.id} (no block-0 logit at step {step:g})")
            continue
        key = (_family(r, sweep.swept_keys), r.lr)
        points.setdefault(key, []).append((r.params, v, r.id))
    if skipped:
        ew.messages.append("left out of the fit: " + ", ".join(skipped))
    if not points:
        ew.messages.append(f"early warning skipped: no run has a block-0 attention logit at "
                           f"step {step:g} and a model shape")
        return ew
    too_few = []
    for (family, lr), pts in sorted(points.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        params = [p for p, _, _ in pts]
        logits = [v for _, v, _ in pts]
        try:
            coeffs, degree, warning = fit_log_poly(params, logits)
        except ValueError as e:
            too_few.append((group_label(family), lr, str(e)))
            continue
        nxt = next_factor * max(params)
        pred = predict(coeffs, nxt)
        ew.fits.append(Fit(family=family, lr=lr, params=params, logits=logits,
                           run_ids=[i for _, _, i in pts], degree=degree, coeffs=coeffs,
                           next_params=nxt, predicted=pred, crosses=pred > threshold,
                           warning=warning))
    if too_few:
        sizes = sorted({len({p for p, _, _ in pts}) for pts in points.values()})
        ew.messages.append(
            f"early warning needs >= 2 model sizes per LR (3 for the quadratic); "
            f"{len(too_few)} (family, LR) pair(s) have {', '.join(map(str, sizes))} size(s): "
            f"skipped (sweep model.dim / model.layers to use it)")
    return ew


def format_predictions(ew):
    """Human-readable lines, one per fit, then the messages."""
    lines = []
    for f in ew.fits:
        kind = "quadratic" if f.degree == 2 else "linear"
        verdict = "CROSSES" if f.crosses else "stays below"
        lines.append(
            f"{f.family_label} lr={f.lr:g}: {kind} fit over {len(set(f.params))} sizes "
            f"({human_count(min(f.params))}..{human_count(max(f.params))} params); predicted "
            f"block-0 max logit at {human_count(f.next_params)} params: {f.predicted:.3g} "
            f"-> {verdict} {ew.threshold:g}" + (f" [{f.warning}]" if f.warning else ""))
    return lines + list(ew.messages)


def fig_early_warning(ew, out_dir):
    """Observed logits, fitted curves and predictions; one panel per family."""
    import os

    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    from .figures import FigureResult, _no_data, _panels

    families = []
    for f in ew.fits:
        if f.family not in families:
            families.append(f.family)
    fig, axes = _panels(max(1, len(families)),
                        f"Early warning: block-0 max attention logit at step {ew.step:g} vs "
                        f"non-embedding parameters")
    lrs = sorted({f.lr for f in ew.fits})
    norm = LogNorm(vmin=lrs[0], vmax=lrs[-1]) if len(lrs) >= 2 else None
    cmap = plt.get_cmap("viridis")
    for ax, family in zip(axes, families):
        for f in (f for f in ew.fits if f.family == family):
            color = cmap(0.9 * norm(f.lr)) if norm else "C0"
            ax.plot(f.params, f.logits, "o", color=color, label=f"lr={f.lr:g}")
            grid = np.logspace(math.log10(min(f.params)), math.log10(f.next_params), 50)
            ax.plot(grid, [predict(f.coeffs, n) for n in grid], "--", color=color, linewidth=1)
            ax.plot([f.next_params], [f.predicted], "*", color=color, markersize=13,
                    mec="red" if f.crosses else "black")
        ax.axhline(ew.threshold, color="red", linestyle=":", linewidth=1,
                   label=f"{ew.threshold:g}")
        ax.plot([], [], "*", color="0.5", markersize=11, label=f"prediction at "
                f"{ew.next_factor:g}x largest")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(group_label(family), fontsize="medium")
        ax.legend(fontsize="x-small")
    if not families:
        _no_data(axes[0], ew.messages[-1] if ew.messages else "no fit")
    for ax in axes:
        ax.set_xlabel("non-embedding parameters")
        ax.set_ylabel(f"max attention logit, block 0, step {ew.step:g}")
        ax.grid(True, which="major", alpha=0.3)
    path = os.path.join(out_dir, "early_warning.png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return FigureResult(name="early_warning.png", path=path, panels=len(axes),
                        caption="Block-0 max attention logit vs model size per LR, the "
                                "log-log fit (dashed) and its prediction for the next size "
                                "(star; red edge: crosses the threshold).")
