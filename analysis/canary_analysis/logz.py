"""The report's output-logit section (Wortsman et al. 2023 §3.1.2): did log Z drift?

The instability: without weight decay and without z-loss, the output logits drift negative
together late in training (softmax is blind to a shift of all logits, Adam's per-entry steps
are not), so the mean log Z of the output softmax falls far below 0. z-loss (c · log² Z) pulls
it back to 0.

Contract of ``logz_rows(sweep)``: one dict per run with an ``output/logz_mean`` series (every
step's mean over the tokens of the global batch), in the sweep's order:

- ``id``, ``label``, ``lr``, ``z_loss``, ``weight_decay`` (from the config);
- ``early`` / ``late``: the median of mean log Z over the first / last 10% of the run's finite
  rows (medians, since one step's batch of a few hundred tokens makes every row noisy), and
  ``lowest``: the minimum of the series smoothed as in the figure (``smooth``);
- ``drift`` = late − early (negative: falling);
- ``rms_early`` / ``rms_late``: the same for ``output/logit_rms`` (NaN without it);
- ``drifted``: late < 0 and drift < −1 nat: log Z fell below 0, the divergence's signature.

``smooth(values)``: a centred running mean over max(1, n // 100) rows (NaN rows skipped), what
the figure draws for series of more than 1000 rows.

``logz_render(rows)`` gives the markdown lines of the section, with its verdict.
"""

import math

import numpy as np
import pandas as pd

from .readers import fmt_num, md_cell


def _finite(values):
    v = np.asarray(values, dtype=float)
    return v[np.isfinite(v)]


def smooth(values):
    v = np.asarray(values, dtype=float)
    w = max(1, len(v) // 100)
    if w == 1:
        return v
    return pd.Series(v).rolling(w, center=True, min_periods=1).mean().to_numpy()


def _early_late(values):
    v = _finite(values)
    if not len(v):
        return math.nan, math.nan, math.nan
    k = max(1, len(v) // 10)
    return (float(np.median(v[:k])), float(np.median(v[-k:])),
            float(np.nanmin(smooth(v))))


def _num(run, key):
    try:
        return float(run.config.get(key, math.nan))
    except (TypeError, ValueError):
        return math.nan


def logz_rows(sweep):
    rows = []
    for r in sweep.runs:
        if not r.has("output/logz_mean"):
            continue
        early, late, lowest = _early_late(r.ds["output/logz_mean"].values)
        rms_early, rms_late = math.nan, math.nan
        if r.has("output/logit_rms"):
            rms_early, rms_late, _ = _early_late(r.ds["output/logit_rms"].values)
        drift = late - early
        rows.append(dict(id=r.id, label=r.label(), lr=r.lr, z_loss=_num(r, "optim.z_loss"),
                         weight_decay=_num(r, "optim.weight_decay"), steps=r.steps, early=early,
                         late=late, lowest=lowest, drift=drift, rms_early=rms_early,
                         rms_late=rms_late, drifted=bool(late < 0 and drift < -1.0)))
    return rows


def _nanmin(values):
    v = _finite(values)
    return float(v.min()) if len(v) else math.nan


def _verdict(rows):
    drifted = [r for r in rows if r["drifted"]]
    if drifted:
        names = ", ".join(f"{r['id']} (log Z {fmt_num(r['early'], '.2f')} → "
                          f"{fmt_num(r['late'], '.2f')})" for r in drifted)
        text = f"**The drift appeared** in {len(drifted)} of {len(rows)} runs: {names}."
        with_z = [r for r in rows if r["z_loss"] > 0]
        held = [r for r in with_z if not r["drifted"]]
        if with_z:
            text += f" With z-loss on, {len(held)} of {len(with_z)} runs held"
            if held:
                text += (" (late mean log Z " + ", ".join(
                    f"{fmt_num(r['late'], '.2f')} in {r['id']}" for r in held) + ")")
            lost = [f"{r['id']} (late {fmt_num(r['late'], '.2f')}, logit RMS "
                    f"{fmt_num(r['rms_late'], '.1f')})" for r in with_z if r["drifted"]]
            text += (f"; by the rule above, {', '.join(lost)} drifted all the same (z-loss pulls "
                     "log Z towards 0, not above it: read its depth and the logit RMS)."
                     if lost else ".")
        return text
    low = min(rows, key=lambda r: r["late"] if math.isfinite(r["late"]) else math.inf)
    return ("**No output-logit drift**: no run's mean log Z ended below 0 (the lowest late "
            f"value: {fmt_num(low['late'], '.2f')}, run {low['id']}; largest fall "
            f"{fmt_num(_nanmin([r['drift'] for r in rows]), '.2f')} nats).")


def logz_render(rows):
    if not rows:
        return []
    out = ["## Output logits: log Z drift", "",
           "Wortsman et al. 2023 §3.1.2: without weight decay and z-loss, the mean log Z of the "
           "output softmax drifts far below 0 late in training. *early* / *late*: medians over "
           "the first / last 10% of rows; *lowest*: the minimum of the smoothed series; "
           "*drifted*: late < 0 and more than 1 nat below early. Figure: "
           "[logz_vs_step.png](logz_vs_step.png) (mean log Z and the output-logit RMS per step, "
           "running means over 1% of a long run).", "",
           "| run | LR | z-loss | weight decay | steps | log Z early | late | lowest | drift | "
           "logit RMS early | late | drifted |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {md_cell(r['id'])} | {r['lr']:g} | {r['z_loss']:g} | "
                   f"{r['weight_decay']:g} | {r['steps']} | {fmt_num(r['early'], '.3f')} | "
                   f"{fmt_num(r['late'], '.3f')} | {fmt_num(r['lowest'], '.3f')} | "
                   f"{fmt_num(r['drift'], '+.3f')} | {fmt_num(r['rms_early'], '.3f')} | "
                   f"{fmt_num(r['rms_late'], '.3f')} | {'yes' if r['drifted'] else 'no'} |")
    out += ["", _verdict(rows), ""]
    return out
