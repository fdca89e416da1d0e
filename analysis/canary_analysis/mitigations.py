"""The report's mitigation section: per group of a sweep, what each mitigation did.

Contract of ``mitigation_rows(sweep, sensitivities)``: [] when no run of the sweep has a
mitigation on (``active(run)`` lists them: qk-norm, z-loss, soft-capping, QK-clip, StableAdamW,
muParam, skip-step, update-norm clipping). Otherwise one dict per group of the LR sensitivity
(the swept keys other than optim.lr; a single group "all runs" when optim.lr is not swept), in
the sensitivities' order, with:

- ``label``, ``mitigations`` (what is on in the group, from the configs), ``runs``;
- ``best_lr``, ``best_loss`` (from the sensitivity; NaN when unavailable), ``diverged``;
- ``logit_best`` / ``logit_top``: the largest attn/max_logit (over layers and heads) of the
  last probe row of the run at the best LR / at the group's highest LR (the raw logit, before
  any soft-capping; NaN without probes);
- ``logit_peak``: the largest attn/max_logit of any row of any run of the group;
- ``skipped`` (skip-step: steps whose update it skipped), ``update_clipped`` (update-norm
  clipping: steps it scaled), ``qk_clipped`` (QK-clip: head-steps with eta < 1) and
  ``stable_scaled`` (StableAdamW: tensor-steps with a factor below 1), summed over the group's
  runs; None when no run of the group has the mitigation.

``render(rows)`` gives the markdown lines of the section.
"""

import math

import numpy as np

from .readers import fmt_value
from .sensitivity import group_key, group_label

LR_KEY = "optim.lr"

# (name, test on the flat config) of each mitigation
_MITIGATIONS = (
    ("qk-norm", lambda c: _on(c.get("model.qk_norm"))),
    ("z-loss", lambda c: _num(c.get("optim.z_loss")) > 0),
    ("attn soft-cap", lambda c: _num(c.get("model.attn_softcap")) > 0),
    ("final soft-cap", lambda c: _num(c.get("model.final_softcap")) > 0),
    ("QK-clip", lambda c: _num(c.get("optim.qk_clip")) > 0 and
     not _on(c.get("optim.qk_clip_log_only"))),
    ("QK-clip (log only)", lambda c: _num(c.get("optim.qk_clip")) > 0 and
     _on(c.get("optim.qk_clip_log_only"))),
    ("StableAdamW", lambda c: _on(c.get("optim.stable_adamw"))),
    ("muParam", lambda c: str(c.get("model.mup", "off")) not in ("off", "None", "")),
    ("skip-step", lambda c: _num(c.get("optim.skip_sigma")) > 0),
    ("update clip", lambda c: _num(c.get("optim.update_clip_sigma")) > 0),
)
# the mitigations whose presence alone makes the section worth writing (qk-norm and z-loss are
# in every Wortsman sweep and have their own figures)
_NEW = {"attn soft-cap", "final soft-cap", "QK-clip", "QK-clip (log only)", "StableAdamW",
        "muParam", "skip-step", "update clip"}


def _on(v):
    return v is True or str(v).lower() in ("true", "1", "yes")


def _num(v):
    try:
        x = float(v)
    except (TypeError, ValueError):
        return 0.0
    return x if math.isfinite(x) else 0.0


def active(run):
    """Names of the mitigations on in ``run``'s config (muParam with its level)."""
    out = []
    for name, test in _MITIGATIONS:
        if test(run.config):
            out.append(f"muParam {run.config['model.mup']}" if name == "muParam" else name)
    return out


def _last_max_logit(run):
    if not run.has("attn/max_logit"):
        return math.nan
    v = run.ds["attn/max_logit"].values
    rows = v.reshape(v.shape[0], -1)
    for row in rows[::-1]:
        row = row[np.isfinite(row)]
        if row.size:
            return float(row.max())
    return math.nan


def _peak_logit(run):
    if not run.has("attn/max_logit"):
        return math.nan
    v = run.ds["attn/max_logit"].values
    v = v[np.isfinite(v)]
    return float(v.max()) if v.size else math.nan


def _count(runs, name, test):
    """Sum over the runs that have series ``name`` of test(values); None if none has it."""
    found = [r for r in runs if r.has(name)]
    if not found:
        return None
    return int(sum(test(np.asarray(r.ds[name].values, dtype=float)) for r in found))


def mitigation_rows(sweep, sensitivities):
    """See the module docstring."""
    runs = sweep.runs
    if not any(n in _NEW or n.startswith("muParam") for r in runs for n in active(r)):
        return []
    groups = {}
    for r in runs:
        groups.setdefault(group_key(r, sweep.swept_keys), []).append(r)
    sens = {g.key: g for g in sensitivities}
    order = [g.key for g in sensitivities if g.key in groups] + \
        [k for k in groups if k not in sens]
    rows = []
    for key in order:
        members = groups[key]
        g = sens.get(key)
        best_lr = g.best_lr if g is not None else math.nan
        best_loss = g.best_loss if g is not None else math.nan
        at_best = [r for r in members if math.isfinite(best_lr) and
                   math.isclose(r.lr, best_lr, rel_tol=1e-6)]
        top = max(members, key=lambda r: r.lr if math.isfinite(r.lr) else -math.inf)
        names = []
        for r in members:
            for n in active(r):
                if n not in names:
                    names.append(n)
        peaks = [p for p in (_peak_logit(r) for r in members) if math.isfinite(p)]
        rows.append(dict(
            label=group_label(key), mitigations=names, runs=len(members),
            best_lr=best_lr, best_loss=best_loss,
            diverged=sum(r.diverged for r in members),
            logit_best=_last_max_logit(at_best[0]) if at_best else math.nan,
            logit_top=_last_max_logit(top), top_lr=top.lr,
            logit_peak=max(peaks) if peaks else math.nan,
            skipped=_count(members, "optim/guard_skipped", lambda v: np.nansum(v > 0)),
            update_clipped=_count(members, "optim/update_clip_factor",
                                  lambda v: np.nansum(v < 1)),
            qk_clipped=_count(members, "optim/qk_clip_count", lambda v: np.nansum(v)),
            stable_scaled=_count(members, "optim/stable_scaled", lambda v: np.nansum(v)),
        ))
    return rows


def _f(x, fmt=".4g"):
    """'' for a mitigation the group does not have, a count as is, 'n/a' for a missing value."""
    if x is None or isinstance(x, int):
        return "" if x is None else str(x)
    return format(x, fmt) if math.isfinite(x) else "n/a"


def render(rows):
    """Markdown lines of the section ([] without rows)."""
    if not rows:
        return []
    out = ["## Mitigations", "",
           "Per group of the LR sensitivity: the mitigations on in it, the best LR and its "
           "final loss ℓ*, the largest attention logit (max over layers and heads of "
           "attn/max_logit, raw, before any soft-capping) at the last probe row of the run at "
           "the best LR and of the run at the group's highest LR, and the largest of any row; "
           "then how often each guard acted, summed over the group's runs (skip-step: steps "
           "skipped; update clip: steps scaled; QK-clip: head-steps with eta < 1; StableAdamW: "
           "tensor-steps scaled). Blank: the group does not have that mitigation, or its runs "
           "recorded no probes for it.", "",
           "| group | mitigations | best LR | ℓ* | diverged | max logit at best LR | "
           "max logit at highest LR | peak max logit | steps skipped | updates clipped | "
           "QK-clip head-steps | StableAdamW tensor-steps |",
           "|---" * 12 + "|"]
    for r in rows:
        out.append(
            f"| {r['label']} | {', '.join(r['mitigations']) or 'none'} | "
            f"{_f(r['best_lr'], 'g')} | {_f(r['best_loss'], '.4f')} | "
            f"{r['diverged']}/{r['runs']} | {_f(r['logit_best'])} | "
            f"{_f(r['logit_top'])} (lr {fmt_value(r['top_lr'])}) | {_f(r['logit_peak'])} | "
            f"{_f(r['skipped'])} | {_f(r['update_clipped'])} | {_f(r['qk_clipped'])} | "
            f"{_f(r['stable_scaled'])} |")
    out.append("")
    return out
