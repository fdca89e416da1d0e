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
- ``ds`` is the run's probes.h5 as an xarray Dataset (dataset.py: variables named by their
  paths, dimensions from the file's dimension scales, each axis cut to its shortest series so
  a reader of a live or killed file sees consistent rows), with the evaluation rows of
  metrics.tsv where probes.h5 has none. Its ``attrs`` carry the run's id, status, flags,
  problems and parameter counts too, so ``open_run(dir)`` returns it alone.
- ``params`` / ``active_params``: non-embedding parameter counts (params.py), exact from
  /tensors/shape; they differ only for MoE (``active_params``: top_k of the routed experts).
- probes.h5 is opened with ``swmr=True`` first (a killed writer leaves the file in SWMR state),
  then without.

``open_run(dir)`` -> the run's Dataset; ``open_sweep(dir)`` -> (Dataset along ``run``, with the
swept keys as coordinates; DataFrame of the runs). See their docstrings. Both warn
(``warnings.warn``, UserWarning) about every incomplete run, naming it and its problems;
``open_run`` also when ``dir`` holds none of a run's files (a sweep directory, say).
"""

import math
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import xarray as xr

from .dataset import read_probes
from .errors import AnalysisError
from .params import non_embedding_params, table_params
from .readers import canon, fmt_value, parse_ini, read_index, read_metrics, short_key, to_float

RUN_FILES = ("config.ini", "probes.h5", "metrics.tsv", "log.txt")

# Series the figures and the report rely on; a file without them is marked partial.
CORE_SERIES = ("loss/total", "output/logz_mean", "attn/max_logit", "attn/entropy", "grad/rms",
               "eval/loss", "lr_probe/loss", "events/kind")


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
    ds: xr.Dataset = field(default_factory=xr.Dataset)  # probes.h5 (see dataset.py)
    events: list = field(default_factory=list)      # (step, kind, detail)
    params: int = None                               # non-embedding parameter count
    active_params: int = None                        # the same per token (MoE: top_k experts)
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
        """True when the series (or coordinate) exists and has at least one row."""
        return name in self.ds.variables and self.ds[name].size > 0

    @property
    def tensor_names(self):
        """/tensors/names, [] without a tensor axis."""
        return [str(n) for n in self.ds["tensor"].values] if "tensor" in self.ds.coords else []


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


def load_run(path, run_id, row=None, swept_keys=(), standalone=False):
    """Loads one run directory (which may be missing) with its index row (or None);
    ``standalone``: a ``canary train`` run, which no index lists."""
    run = Run(id=run_id, path=path, in_index=row is not None)
    if not os.path.isdir(path):
        run.problems.append("run directory missing")
        run.partial = True
    ini_text, ini_swept, ini_raw = "", set(), {}
    cfg_path = os.path.join(path, "config.ini")
    probes_path = os.path.join(path, "probes.h5")
    if os.path.exists(probes_path):
        try:
            run.ds, problems, partial = read_probes(probes_path)
            run.problems += problems
            run.partial |= partial
            run.config.update(run.ds.attrs["config"])
            ini_text = run.ds.attrs["ini"]
        except (OSError, ValueError, RuntimeError, KeyError) as e:
            run.problems.append(f"probes.h5 unreadable ({_short_error(e)})")
            run.partial = True
        missing = [n for n in CORE_SERIES if n not in run.ds]
        if missing and "step" in run.ds.coords:
            run.problems.append("probes.h5 lacks " + ", ".join(missing))
            run.partial = True
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
    last_step = float(run.ds["step"][-1]) if run.has("step") else math.nan
    train_losses = run.ds["loss/total"].values if run.has("loss/total") else np.array([])
    metrics_path = os.path.join(path, "metrics.tsv")
    if not run.has("eval/loss") and os.path.exists(metrics_path):
        m_es, m_el, m_ts, m_tl = read_metrics(metrics_path)
        if len(m_es):
            run.ds = run.ds.drop_vars([v for v in ("eval/loss", "eval_step") if v in run.ds])
            run.ds["eval/loss"] = xr.DataArray(m_el, dims="eval_step",
                                               coords={"eval_step": m_es},
                                               attrs={"description": "from metrics.tsv"})
        if len(m_ts) and not run.has("step"):
            last_step = m_ts[-1]
            train_losses = m_tl
    if run.has("eval/loss"):
        ev_s, ev_l = run.ds["eval_step"].values, run.ds["eval/loss"].values
    else:
        ev_s, ev_l = np.array([]), np.array([])
    if run.has("events/step"):
        kinds = run.ds["events/kind"].values if "events/kind" in run.ds else []
        details = run.ds["events/detail"].values if "events/detail" in run.ds else []
        for i, s in enumerate(run.ds["events/step"].values):
            run.events.append((float(s), str(kinds[i]) if i < len(kinds) else "?",
                               str(details[i]) if i < len(details) else ""))

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
        if not standalone:
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
    if run.has("step") and run.steps and run.ds.sizes["step"] < run.steps and \
            not run.diverged:
        run.problems.append(f"{run.ds.sizes['step']} step rows for {run.steps} steps")
        run.partial = True
    # exact from the file's tensor table where it has one (MoE, MLA), else from the config
    counts = table_params(run.ds, run.config)
    if counts is None:
        run.params = run.active_params = non_embedding_params(run.config)
    else:
        run.params, run.active_params = counts
    run.ds.attrs.update(run=run.id, path=run.path, status=run.status, partial=run.partial,
                        crashed=run.crashed, diverged=run.diverged, problems=list(run.problems),
                        l0=run.l0, final_loss=run.final_loss, params=run.params,
                        active_params=run.active_params)
    return run


def _short_error(e):
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:160]


def open_run(path):
    """One run directory (``canary train`` or a sweep's) as an xarray Dataset: every probe
    series by its probes.h5 path, on the dimensions step, probe_step, eval_step,
    lr_probe_step, event, layer, head, tensor, expert, lr_factor; ``attrs``: config, ini,
    provenance, run, status, partial, problems, l0, final_loss, params, active_params.
    An incomplete run (crashed, a corrupt or missing probes.h5, ...) is returned with what it
    has, and a warning names the directory and its problems; so is a directory that holds
    none of a run's files (a sweep directory: use ``open_sweep``), as an empty Dataset.
    Raises AnalysisError when ``path`` is not a directory."""
    import warnings
    path = os.path.abspath(os.fspath(path))
    if not os.path.isdir(path):
        raise AnalysisError(f"{path}: no such run directory")
    parent, run_id = os.path.split(path)
    row = None
    if os.path.isfile(os.path.join(parent, "index.tsv")):  # a member of a sweep
        try:
            row = read_index(os.path.join(parent, "index.tsv"))[1].get(run_id)
        except AnalysisError:
            row = None
    run = load_run(path, run_id, row, standalone=row is None)
    if not _is_run_dir(path):
        try:
            subdirs = [d for d in os.listdir(path) if _is_run_dir(os.path.join(path, d))]
        except OSError:
            subdirs = []
        hint = ("; it holds run directories (a sweep? use open_sweep)"
                if subdirs or os.path.isfile(os.path.join(path, "index.tsv")) else "")
        warnings.warn(f"{path}: not a run directory, it holds none of {', '.join(RUN_FILES)} "
                      f"({'; '.join(run.problems)}){hint}; returning an empty Dataset",
                      stacklevel=2)
    elif run.partial or run.problems:
        warnings.warn(f"run {path}: incomplete: {'; '.join(run.problems) or 'crashed'}",
                      stacklevel=2)
    return run.ds


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


# ---- the sweep as one Dataset and one DataFrame ----

RUN_COLUMNS = ("status", "partial", "crashed", "in_index", "steps", "l0", "final_loss",
               "diverged", "params", "active_params", "problems")


def runs_frame(sweep):
    """One row per run (index ``id``): the swept keys (canonical values: float, bool, str),
    then RUN_COLUMNS — index.tsv joined with what the run directories say."""
    rows = []
    for r in sweep.runs:
        row = {"id": r.id}
        row.update({k: r.swept.get(k) for k in sweep.swept_keys})
        row.update({c: getattr(r, c) for c in RUN_COLUMNS})
        row["problems"] = "; ".join(r.problems)
        rows.append(row)
    return pd.DataFrame(rows, columns=["id", *sweep.swept_keys, *RUN_COLUMNS]).set_index("id")


def sweep_dataset(sweep):
    """The runs' Datasets along a new ``run`` dimension (the run ids), outer-joined on every
    other axis: a series a run lacks, or rows past its end, are NaN. The swept keys are
    coordinates along ``run``."""
    names, axes = [], {}
    for r in sweep.runs:
        names += [n for n in r.ds.data_vars if n not in names]
        for d in r.ds.dims:
            if d in r.ds.indexes:
                axes.setdefault(d, []).append(r.ds.indexes[d])
    # Each axis over all runs: numbers sorted, names (tensors) in the order they first appear.
    union = {}
    for d, indexes in axes.items():
        values = pd.Index(np.concatenate([i.values for i in indexes])).unique()
        union[d] = values.sort_values() if values.dtype != object else values
    ids = pd.Index([r.id for r in sweep.runs], name="run")
    arrays = {}
    for name in names:
        template = next(r.ds[name] for r in sweep.runs if name in r.ds.data_vars)
        blank = xr.full_like(template, np.nan, dtype=object if template.dtype == object
                             else np.float64)
        parts = [(r.ds[name] if name in r.ds.data_vars else blank).drop_vars(
            [c for c in template.coords if c not in template.dims], errors="ignore")
            for r in sweep.runs]
        parts = [p.reindex({d: union[d] for d in p.dims if d in union}) for p in parts]
        arrays[name] = xr.concat(parts, dim=ids, join="exact", coords="minimal",
                                 compat="override", combine_attrs="drop_conflicts")
    ds = xr.Dataset(arrays, attrs={"sweep": sweep.path, "swept_keys": list(sweep.swept_keys)})
    if not arrays:
        ds = ds.assign_coords(run=ids)
    if "tensor" in ds.dims:  # the tensor table over all runs, first run that has a tensor wins
        meta = {}
        for r in sweep.runs:
            if "tensor" not in r.ds.coords:
                continue
            for c in ("tensor_kind", "tensor_optimizer", "tensor_rows", "tensor_cols"):
                if c in r.ds.coords:
                    for t, v in zip(r.ds["tensor"].values, r.ds[c].values):
                        meta.setdefault(c, {}).setdefault(t, v)
        for c, by_name in meta.items():
            ds = ds.assign_coords({c: ("tensor", [by_name.get(t) for t in ds["tensor"].values])})
    for key in sweep.swept_keys:
        ds = ds.assign_coords({key: ("run", [r.swept.get(key) for r in sweep.runs])})
    return ds


def open_sweep(path):
    """A sweep directory -> (Dataset, DataFrame): every run's series along ``run`` (see
    ``sweep_dataset``) and one row per run (see ``runs_frame``). A run with incomplete data
    (a corrupt probes.h5, no evaluation rows, a file from a canary without dimension scales,
    a crash) is kept with what it has, and a warning names it and says what is missing.
    Raises AnalysisError for a directory that is not a sweep."""
    import warnings
    sweep = load_sweep(path)
    for r in sweep.runs:
        if r.partial:
            warnings.warn(f"run {r.id}: incomplete: {'; '.join(r.problems) or 'crashed'}",
                          stacklevel=2)
    return sweep_dataset(sweep), runs_frame(sweep)
