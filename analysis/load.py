"""Load a canary sweep directory into ``Run`` records.

Contract of ``load_sweep(path)``:

- ``path`` is a sweep directory: ``index.tsv`` (written by ``canary sweep``) and/or run
  directories ``<id>/`` holding any of config.ini, probes.h5, metrics.tsv, log.txt. Anything
  else raises ``AnalysisError`` (not a sweep; or a sweep with no runs at all). The swept keys
  are the index's columns between id and status; without an index, the keys the runs'
  config.ini mark "; sweep" (none: not a sweep).
- Every run in the index or on disk is returned, in id order, whatever state it is in. Nothing
  that a crash, a kill or a missing file can leave behind raises: the run is loaded from what
  is there and marked instead:
  - ``in_index``: the run has a row in index.tsv (a run killed mid-sweep has none);
  - ``crashed``: the run did not finish (status "failed" in the index, or no index row and no
    final evaluation);
  - ``partial``: its data is incomplete (probes.h5 missing or unreadable, datasets missing,
    series shorter than the steps the run made, or crashed); ``problems`` says what in words.
- ``status`` is the index's ok | diverged | failed; for runs without an index row it is inferred:
  "diverged" if the final evaluation (at train.steps) is there and not below l0, or if it is
  not there and a loss went non-finite (train.on_nonfinite = stop); "ok" if it is there and
  below l0; "crashed" otherwise.
- ``l0`` is the held-out loss of the evaluation row at step 0 (probes.h5, else metrics.tsv),
  else the index's l0. ``final_loss`` is the index's final_eval_loss, or for runs without an
  index row the last evaluation if it was at train.steps; NaN when unknown.
- ``diverged``: status "diverged", or a finished run whose final loss is non-finite or > l0,
  or an unfinished run whose losses went non-finite.
- ``series`` maps probes.h5 dataset paths ("step", "loss/total", "attn/max_logit", ...) to
  numpy arrays. Each family (rows aligned with /step, with /probe_step, with /eval/step, with
  /lr_probe/step, with /events/step) is cut to the length of its shortest member, so a reader
  of a live or killed file sees consistent rows.
- probes.h5 is opened with ``swmr=True`` first (a killed writer leaves the file in SWMR state),
  then without.
"""

import math
import os
from dataclasses import dataclass, field

import numpy as np

from .errors import AnalysisError
from .params import non_embedding_params, table_params
from .readers import (canon, fmt_value, parse_ini, read_index, read_metrics, read_probes, short_key,
                      to_float)

RUN_FILES = ("config.ini", "probes.h5", "metrics.tsv", "log.txt")


@dataclass
class Run:
    """One run of a sweep, as loaded (see the module docstring for each field's meaning)."""

    id: str
    path: str
    swept: dict = field(default_factory=dict)       # key -> canonical value (float, bool, str)
    swept_text: dict = field(default_factory=dict)  # key -> value as written
    config: dict = field(default_factory=dict)      # flat resolved config, typed
    status: str = "crashed"
    in_index: bool = False
    crashed: bool = False
    partial: bool = False
    problems: list = field(default_factory=list)
    steps: int = 0
    l0: float = math.nan
    final_loss: float = math.nan
    diverged: bool = False
    series: dict = field(default_factory=dict)
    tensor_names: list = field(default_factory=list)
    tensor_kinds: list = field(default_factory=list)   # /tensors/kind (files since the scales)
    tensor_shapes: list = field(default_factory=list)  # /tensors/shape: (rows, cols)
    events: list = field(default_factory=list)      # (step, kind, detail)
    params: int = None                               # non-embedding parameter count
    ini_raw: dict = field(default_factory=dict)      # config.ini value text per key
    ini_swept: set = field(default_factory=set)      # keys config.ini marks '; sweep'

    @property
    def lr(self):
        """Peak learning rate (swept value, else the config's optim.lr), NaN if unknown."""
        if "optim.lr" in self.swept and isinstance(self.swept["optim.lr"], float):
            return self.swept["optim.lr"]
        return to_float(self.config.get("optim.lr"))

    def label(self, keys=None):
        """'qk_norm=true lr=0.001' from the swept values (the id if nothing was swept)."""
        keys = list(self.swept_text) if keys is None else keys
        parts = [f"{short_key(k)}={self.swept_text[k]}" for k in keys if k in self.swept_text]
        return " ".join(parts) if parts else self.id

    def has(self, name):
        """True when the series exists and has at least one row."""
        return name in self.series and len(self.series[name]) > 0


@dataclass
class Sweep:
    """A loaded sweep: its directory, the swept keys (index order) and the runs."""

    path: str
    swept_keys: list
    runs: list
    has_index: bool
    notes: list = field(default_factory=list)


# ---- one run ----

def _is_run_dir(path):
    return os.path.isdir(path) and any(os.path.exists(os.path.join(path, f)) for f in RUN_FILES)


def load_run(path, run_id, row=None, swept_keys=()):
    """Loads one run directory (which may be missing) with its index row (or None)."""
    run = Run(id=run_id, path=path, in_index=row is not None)
    if not os.path.isdir(path):
        run.problems.append("run directory missing")
        run.partial = True
    ini_text, ini_swept, ini_raw = "", set(), {}
    cfg_path = os.path.join(path, "config.ini")
    probes_path = os.path.join(path, "probes.h5")
    if os.path.exists(probes_path):
        ini_text = read_probes(probes_path, run)
    elif os.path.isdir(path):
        run.problems.append("probes.h5 missing")
        run.partial = True
    if os.path.exists(cfg_path):
        with open(cfg_path, encoding="utf-8", errors="replace") as f:
            ini_text = f.read()
    if ini_text:
        cfg, ini_swept, ini_raw = parse_ini(ini_text)
        for k, v in cfg.items():
            run.config.setdefault(k, v)  # probes.h5's typed /config attributes win
    elif os.path.isdir(path) and not run.config:
        run.problems.append("no config (config.ini missing)")

    # Evaluation rows: probes.h5, else metrics.tsv.
    ev_s, ev_l = run.series.get("eval/step"), run.series.get("eval/loss")
    last_step = run.series["step"][-1] if run.has("step") else math.nan
    train_losses = run.series.get("loss/total", np.array([]))
    metrics_path = os.path.join(path, "metrics.tsv")
    if (ev_s is None or len(ev_s) == 0) and os.path.exists(metrics_path):
        m_es, m_el, m_ts, m_tl = read_metrics(metrics_path)
        if len(m_es):
            ev_s, ev_l = m_es, m_el
            run.series.setdefault("eval/step", m_es)
            run.series.setdefault("eval/loss", m_el)
        if len(m_ts) and not run.has("step"):
            last_step = m_ts[-1]
            train_losses = m_tl
    if ev_s is None:
        ev_s, ev_l = np.array([]), np.array([])

    run.ini_raw, run.ini_swept = ini_raw, ini_swept
    set_swept(run, swept_keys, row)

    # l0: evaluation at step 0, else the index.
    at0 = np.nonzero(np.asarray(ev_s) == 0)[0]
    if len(at0):
        run.l0 = float(ev_l[at0[0]])
    elif row is not None:
        run.l0 = to_float(row.get("l0"))

    target = int(to_float(run.config.get("train.steps"))) if not math.isnan(
        to_float(run.config.get("train.steps"))) else None
    nonfinite_seen = bool(len(ev_l) and not np.all(np.isfinite(ev_l))) or bool(
        len(train_losses) and not np.all(np.isfinite(train_losses)))
    if any(kind == "non-finite" for _, kind, _ in run.events):
        nonfinite_seen = True

    if row is not None:
        run.status = row.get("status", "failed").strip() or "failed"
        run.steps = int(to_float(row.get("steps"))) if math.isfinite(to_float(row.get("steps"))) else 0
        run.final_loss = to_float(row.get("final_eval_loss"))
        run.crashed = run.status == "failed"
        if run.status not in ("ok", "diverged", "failed"):
            run.problems.append(f"unknown status '{run.status}' in index")
    else:
        run.problems.append("not in index.tsv (the sweep stopped while it ran?)")
        run.partial = True
        run.steps = int(last_step) if math.isfinite(last_step) else 0
        finished = len(ev_s) > 0 and target is not None and ev_s[-1] == target
        if finished:
            run.final_loss = float(ev_l[-1])
        # With train.on_nonfinite = skip a non-finite step is skipped, not the end of the run.
        stops = str(run.config.get("train.on_nonfinite", "stop")) != "skip"
        if (finished and not run.final_loss <= run.l0) or (not finished and nonfinite_seen
                                                           and stops):
            run.status = "diverged"
        elif finished:
            run.status = "ok"
        else:
            run.status = "crashed"
            run.crashed = True
            if len(ev_s):
                run.problems.append(f"last evaluation at step {int(ev_s[-1])} of "
                                    f"{target if target is not None else '?'}; no final loss")

    if run.status == "diverged":
        run.diverged = True
    elif run.status == "ok" and not (run.final_loss <= run.l0):
        run.diverged = True  # non-finite or worse than at initialisation
    elif run.crashed and nonfinite_seen and str(run.config.get("train.on_nonfinite",
                                                               "stop")) != "skip":
        run.diverged = True
    if run.crashed:
        run.partial = True

    # Rows the run made versus rows on file (a killed run's last flush).
    if run.has("step") and run.steps and len(run.series["step"]) < run.steps and \
            not run.diverged:
        run.problems.append(f"{len(run.series['step'])} step rows for {run.steps} steps")
        run.partial = True
    # exact from the file's tensor table where it has one (MoE, MLA), else from the config
    run.params = table_params(run.tensor_kinds, run.tensor_shapes)
    if run.params is None:
        run.params = non_embedding_params(run.config)
    return run


# ---- the sweep ----

def load_sweep(path):
    """Loads every run of the sweep at ``path`` (see the module docstring)."""
    path = os.path.abspath(os.fspath(path))
    if not os.path.isdir(path):
        raise AnalysisError(f"{path}: no such directory")
    index_path = os.path.join(path, "index.tsv")
    has_index = os.path.isfile(index_path)
    run_dirs = sorted(d for d in os.listdir(path) if _is_run_dir(os.path.join(path, d)))
    if not has_index and not run_dirs:
        raise AnalysisError(f"{path} is not a sweep: no index.tsv and no run directories "
                            f"(made by 'canary sweep')")
    notes = []
    rows, keys = {}, []
    if has_index:
        keys, rows, notes = read_index(index_path)
    else:
        notes.append("no index.tsv: statuses inferred from the run directories")
    ids = sorted(set(rows) | set(run_dirs))
    if not ids:
        raise AnalysisError(f"{path}: empty sweep (index.tsv has no runs and there are no run "
                            f"directories)")
    runs = [load_run(os.path.join(path, i), i, rows.get(i), keys) for i in ids]
    if not has_index:
        keys = _infer_swept_keys(runs)
        if not keys:
            raise AnalysisError(
                f"{path} is not a sweep: no index.tsv, and none of its {len(runs)} run "
                f"directories has keys marked '; sweep' in config.ini (plain 'canary train' "
                f"runs?)")
        for r in runs:
            set_swept(r, keys, None)
    _fix_bool_values(runs, keys)
    return Sweep(path=path, swept_keys=keys, runs=runs, has_index=has_index, notes=notes)


def set_swept(run, keys, row):
    """Swept values of a run: the index row, else config.ini's text, else the typed config."""
    for key in keys:
        if row is not None and key in row:
            text = row[key]
        elif key in run.ini_raw:
            text = run.ini_raw[key]
        elif key in run.config:
            value = run.config[key]
            text = f"{value:g}" if isinstance(value, float) else str(value)
        else:
            run.problems.append(f"swept key {key} unknown for this run")
            continue
        run.swept_text[key] = text
        run.swept[key] = canon(text)


def _infer_swept_keys(runs):
    """Without an index: the keys the runs' config.ini mark '; sweep' (sorted)."""
    marked = set()
    for r in runs:
        marked |= r.ini_swept
    return sorted(marked)


def _fix_bool_values(runs, keys):
    """A bool key read from probes.h5 (0/1) next to index values true/false becomes a bool."""
    for k in keys:
        vals = [r.swept[k] for r in runs if k in r.swept]
        if any(isinstance(v, bool) for v in vals):
            for r in runs:
                v = r.swept.get(k)
                if isinstance(v, float) and v in (0.0, 1.0):
                    r.swept[k] = bool(v)
                    r.swept_text[k] = fmt_value(bool(v))
