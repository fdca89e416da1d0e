"""The report's output-logit section (Wortsman et al. 2023 §3.1.2): did log Z drift?

The instability: without weight decay and without z-loss, the output logits drift negative
together late in training (softmax is blind to a shift of all logits, Adam's per-entry steps
are not), so the mean log Z of the output softmax falls far below 0. z-loss (c · log² Z) pulls
it back to 0.

Contract of ``logz_rows(sweep)``: one dict per run with an ``output/logz_mean`` series (every
step's mean over the tokens of the global batch), in the sweep's order:

- ``id``, ``label``, ``lr``, ``z_loss``, ``weight_decay`` (from the config);
- ``early``: the median of mean log Z over the first 10% of the run's rows (after the first
  transient, before any late drift), ``final``: the last finite row, ``lowest``: the minimum;
- ``drift`` = final − early (negative: falling);
- ``rms_early`` / ``rms_final``: the same for ``output/logit_rms`` (NaN without it);
- ``drifted``: final < 0 and drift < −1 nat: log Z fell below 0, the divergence's signature.

``logz_render(rows)`` gives the markdown lines of the section, with its verdict.
"""

import math

import numpy as np

from .readers import fmt_num, md_cell


def _finite(values):
    v = np.asarray(values, dtype=float)
    return v[np.isfinite(v)]


def _early_final(values):
    v = _finite(values)
    if not len(v):
        return math.nan, math.nan, math.nan
    head = v[:max(1, len(v) // 10)]
    return float(np.median(head)), float(v[-1]), float(v.min())


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
        early, final, lowest = _early_final(r.ds["output/logz_mean"].values)
        rms_early, rms_final = math.nan, math.nan
        if r.has("output/logit_rms"):
            rms_early, rms_final, _ = _early_final(r.ds["output/logit_rms"].values)
        drift = final - early
        rows.append(dict(id=r.id, label=r.label(), lr=r.lr, z_loss=_num(r, "optim.z_loss"),
                         weight_decay=_num(r, "optim.weight_decay"), steps=r.steps, early=early,
                         final=final, lowest=lowest, drift=drift, rms_early=rms_early,
                         rms_final=rms_final,
                         drifted=bool(final < 0 and drift < -1.0)))
    return rows


def _nanmin(values):
    v = _finite(values)
    return float(v.min()) if len(v) else math.nan


def _verdict(rows):
    drifted = [r for r in rows if r["drifted"]]
    if drifted:
        names = ", ".join(f"{r['id']} (log Z {fmt_num(r['early'], '.2f')} → "
                          f"{fmt_num(r['final'], '.2f')})" for r in drifted)
        text = f"**The drift appeared** in {len(drifted)} of {len(rows)} runs: {names}."
        guarded = [r for r in rows if not r["drifted"] and r["z_loss"] > 0]
        if guarded:
            text += (" Runs with z-loss on stayed at a final mean log Z of "
                     + ", ".join(fmt_num(r["final"], ".2f") for r in guarded) + ".")
        return text
    low = min(rows, key=lambda r: r["final"] if math.isfinite(r["final"]) else math.inf)
    return ("**No output-logit drift**: no run's mean log Z fell below 0 by its end (the lowest "
            f"final value: {fmt_num(low['final'], '.2f')}, run {low['id']}; largest fall "
            f"{fmt_num(_nanmin([r['drift'] for r in rows]), '.2f')} nats).")


def logz_render(rows):
    if not rows:
        return []
    out = ["## Output logits: log Z drift", "",
           "Wortsman et al. 2023 §3.1.2: without weight decay and z-loss, the mean log Z of the "
           "output softmax drifts far below 0 late in training. *early*: median of the first "
           "10% of rows; *final*: the last row; *drifted*: final < 0 and more than 1 nat below "
           "early. Figure: [logz_vs_step.png](logz_vs_step.png) (mean log Z and the output-logit "
           "RMS per step).", "",
           "| run | LR | z-loss | weight decay | steps | log Z early | final | lowest | drift | "
           "logit RMS early | final | drifted |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {md_cell(r['id'])} | {r['lr']:g} | {r['z_loss']:g} | "
                   f"{r['weight_decay']:g} | {r['steps']} | {fmt_num(r['early'], '.3f')} | "
                   f"{fmt_num(r['final'], '.3f')} | {fmt_num(r['lowest'], '.3f')} | "
                   f"{fmt_num(r['drift'], '+.3f')} | {fmt_num(r['rms_early'], '.3f')} | "
                   f"{fmt_num(r['rms_final'], '.3f')} | {'yes' if r['drifted'] else 'no'} |")
    out += ["", _verdict(rows), ""]
    return out
