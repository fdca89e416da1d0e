"""Reading single values out of a run's probe series (shared by figures, early warning, report).

Contracts:
- ``block_max_logit(run, layer)`` -> (probe steps, max over heads of attn/max_logit for that
  layer); empty arrays when the run has no such data.
- ``value_at_step(steps, values, step)`` -> (value, step used, reached). The row used is the
  last finite one at or before ``step``; ``reached`` is False when the series ends before
  ``step`` (a run that stopped early), in which case its last finite row is returned. It is
  pandas' ``Series.asof`` on the finite rows, plus the step used and the reached flag.
  (NaN, NaN, reached) when there is no finite row at or before ``step``: a row from after it is
  never used; (NaN, NaN, False) when the series has no finite row at all.
- ``last_finite(values)`` -> the last finite entry, NaN if none.
- ``default_logit_step(runs)`` -> min(2000, the latest probe step of any run): Wortsman et al.
  read the block-0 logit at step 2e3; a short CPU sweep uses its last probe row instead.
- ``tensor_columns(run, suffix)`` -> {layer: column} of /tensors/names "blocks.<l>.<suffix>".
- ``block_tensor_rms(run, series, suffix)`` -> {layer: rows} of a per-tensor RMS series for
  "blocks.<l>.<suffix>"; where a MoE block has no such tensor, the RMS pooled over its routed
  experts' "mlp.experts.<e>.<last part of suffix>" (equal sizes: the root mean square of theirs).
- ``block_tensor_suffixes(runs)`` -> (names to list, names accepted): the <suffix> of every
  "blocks.<l>.<suffix>" in the runs' tensor tables, routed experts' tensors listed as the
  "mlp.<leaf>" that pools them (``block_tensor_rms``) and accepted under their own names too;
  both empty when no run has a tensor table.
- ``tail_mean(steps, values, fraction)`` -> mean of the finite rows in the last ``fraction`` of
  the run's steps (at least the last finite row), NaN if none.
"""

import math
import re

import numpy as np
import pandas as pd


def block_max_logit(run, layer=0):
    """Probe steps and the max over heads of the max attention logit of ``layer``."""
    if not (run.has("probe_step") and run.has("attn/max_logit")):
        return np.array([]), np.array([])
    logits = run.ds["attn/max_logit"]
    if "layer" not in logits.dims or layer not in logits["layer"].values:
        return np.array([]), np.array([])
    block = logits.sel(layer=layer)
    vals = block.where(np.isfinite(block)).max("head", skipna=True)
    return run.ds["probe_step"].values, vals.values


def value_at_step(steps, values, step):
    """Last finite value at or before ``step`` (see the module docstring): pandas' asof over
    the finite rows."""
    s = pd.Series(np.asarray(values, dtype=float), index=np.asarray(steps, dtype=float))
    s = s[np.isfinite(s.to_numpy())]
    if s.empty:
        return math.nan, math.nan, False
    reached = bool(len(steps) and np.max(steps) >= step)
    before = s[s.index <= step]
    if before.empty:  # every finite row comes after ``step``
        return math.nan, math.nan, reached
    used = before.index[-1]
    return float(s.asof(step)), float(used), reached


def last_finite(values):
    """Last finite entry of a 1-D array, NaN if none."""
    values = np.asarray(values, dtype=float)
    ok = np.nonzero(np.isfinite(values))[0]
    return float(values[ok[-1]]) if len(ok) else math.nan


def default_logit_step(runs):
    """min(2000, latest probe step over the runs); 2000 when no run has probe rows."""
    last = [float(r.ds["probe_step"][-1]) for r in runs if r.has("probe_step")]
    return int(min(2000, max(last))) if last else 2000


_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")


def tensor_columns(run, suffix):
    """{layer: column index} of the tensors named blocks.<layer>.<suffix>."""
    out = {}
    for i, name in enumerate(run.tensor_names):
        m = _BLOCK.match(name)
        if m and m.group(2) == suffix:
            out[int(m.group(1))] = i
    return out


_EXPERT = re.compile(r"^mlp\.experts\.\d+\.(.+)$")


def block_tensor_rms(run, series, suffix):
    """{layer: per-row RMS} of ``series`` for blocks.<layer>.<suffix>, experts pooled."""
    if not run.has(series) or "tensor" not in run.ds[series].dims:
        return {}
    data = run.ds[series]
    names = run.tensor_names
    out = {layer: data.isel(tensor=col).values
           for layer, col in tensor_columns(run, suffix).items()}
    leaf = suffix.split(".")[-1]
    experts = {}
    for i, name in enumerate(names):
        m = _BLOCK.match(name)
        if not m or int(m.group(1)) in out:
            continue
        e = _EXPERT.match(m.group(2))
        if e and e.group(1) == leaf:
            experts.setdefault(int(m.group(1)), []).append(i)
    for layer, cols in experts.items():
        out[layer] = np.sqrt((data.isel(tensor=cols) ** 2).mean("tensor")).values
    return out


def block_tensor_suffixes(runs):
    """(sorted names to list, set of names accepted) of per-block tensors over ``runs``."""
    listed, accepted = set(), set()
    for run in runs:
        for name in run.tensor_names:
            m = _BLOCK.match(name)
            if not m:
                continue
            accepted.add(m.group(2))
            e = _EXPERT.match(m.group(2))
            listed.add(f"mlp.{e.group(1)}" if e else m.group(2))
    return sorted(listed), accepted | listed


def tail_mean(steps, values, fraction=0.1):
    """Mean of finite values over the last ``fraction`` of the steps (at least one row)."""
    steps = np.asarray(steps, dtype=float)
    values = np.asarray(values, dtype=float)
    ok = np.isfinite(values) & np.isfinite(steps)
    if not ok.any():
        return math.nan
    s, v = steps[ok], values[ok]
    lo = s[-1] - fraction * max(s[-1], 1.0)
    sel = v[s >= lo]
    return float(sel.mean()) if len(sel) else float(v[-1])
