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
from .params import non_embedding_params

INDEX_FIXED = ("id", "status", "steps", "l0", "final_eval_loss")
RUN_FILES = ("config.ini", "probes.h5", "metrics.tsv", "log.txt")

# Datasets the figures and the report rely on; a file without them is marked partial.
CORE_DATASETS = ("step", "loss/total", "output/logz_mean", "probe_step", "attn/max_logit",
                 "attn/entropy", "grad/rms", "tensors/names", "eval/step", "eval/loss",
                 "lr_probe/step", "lr_probe/loss", "events/step", "events/kind", "events/detail")

# Row families: (index dataset, how a member is recognised). A dataset's "description"
# attribute says "(rows aligned with /step)" or "(rows aligned with /probe_step)"; the prefixes
# are the fallback for files written without descriptions.
STEP_PREFIXES = ("loss/", "lr", "grad/global_norm", "grad/clip_factor", "tokens_per_s", "output/")
PROBE_PREFIXES = ("attn/", "resid/", "grad/rms", "param/rms", "update/rms", "adam/", "muon/")


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
    events: list = field(default_factory=list)      # (step, kind, detail)
    params: int = None                               # non-embedding parameter count
    ini_raw: dict = field(default_factory=dict)      # config.ini value text per key
    ini_swept: set = field(default_factory=set)      # keys config.ini marks '; sweep'

    @property
    def lr(self):
        """Peak learning rate (swept value, else the config's optim.lr), NaN if unknown."""
        if "optim.lr" in self.swept and isinstance(self.swept["optim.lr"], float):
            return self.swept["optim.lr"]
        return _float(self.config.get("optim.lr"))

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


def short_key(key):
    """'model.qk_norm' -> 'qk_norm'."""
    return key.rsplit(".", 1)[-1]


def _float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def canon(text):
    """Canonical form of a swept value, so "3e-4" (index) and "0.0003" (config.ini) agree:
    true/false -> bool, a number -> float, anything else -> the stripped string."""
    if isinstance(text, (bool, np.bool_)):
        return bool(text)
    if isinstance(text, (int, float, np.integer, np.floating)):
        return float(text)
    s = str(text).strip()
    if s.lower() in ("true", "false"):
        return s.lower() == "true"
    try:
        return float(s)
    except ValueError:
        return s


def fmt_value(value):
    """Display form of a canonical value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# ---- config ----

def parse_ini(text):
    """Resolved config.ini text -> (flat typed dict, set of keys annotated '; sweep', raw text
    per key). Values: true/false -> 1/0 (as in probes.h5's /config), numbers -> int or float."""
    config, swept, raw = {}, set(), {}
    section = ""
    for line in text.splitlines():
        s = line.strip()
        if not s or s[0] in ";#":
            continue
        if s.startswith("[") and s.endswith("]"):
            section = s[1:-1].strip()
            continue
        if "=" not in s:
            continue
        key, value = s.split("=", 1)
        comment = ""
        for mark in (" ;", "\t;", " #", "\t#"):
            if mark in value:
                value, comment = value.split(mark, 1)
                break
        key = f"{section}.{key.strip()}" if section else key.strip()
        value = value.strip()
        raw[key] = value
        if comment.strip().lower() == "sweep":
            swept.add(key)
        config[key] = _typed(value)
    return config, swept, raw


def _typed(value):
    if value.lower() in ("true", "false"):
        return 1 if value.lower() == "true" else 0
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value


# ---- index.tsv ----

def read_index(path):
    """index.tsv -> (swept keys, {id: row dict}, notes). Malformed rows are skipped (noted)."""
    notes = []
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [ln.rstrip("\r\n") for ln in f if ln.strip()]
    if not lines:
        raise AnalysisError(f"{path}: empty index (no header line)")
    header = lines[0].split("\t")
    if not header or header[0] != "id" or "status" not in header:
        raise AnalysisError(f"{path}: not a canary sweep index (header must start with 'id' "
                            f"and name a 'status' column)")
    keys = [h for h in header if h not in INDEX_FIXED]
    rows = {}
    for n, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != len(header):
            notes.append(f"index.tsv line {n}: {len(fields)} fields, expected {len(header)}; "
                         f"skipped")
            continue
        rows[fields[0]] = dict(zip(header, fields))
    return keys, rows, notes


# ---- probes.h5 ----

def open_probes(path):
    """Opens probes.h5 for reading: SWMR first (a live or killed writer), then plain."""
    import h5py
    try:
        return h5py.File(path, "r", swmr=True)
    except OSError:
        return h5py.File(path, "r")


def _family(name, dset):
    desc = dset.attrs.get("description", "")
    if isinstance(desc, bytes):
        desc = desc.decode("utf-8", "replace")
    desc = str(desc)
    if name in ("step", "probe_step"):
        return name
    if name.startswith("eval/"):
        return "eval/step"
    if name.startswith("lr_probe/"):
        return "lr_probe/step"
    if name.startswith("events/"):
        return "events/step"
    if name.startswith("tensors/"):
        return None
    if "aligned with /probe_step" in desc:
        return "probe_step"
    if "aligned with /step" in desc:
        return "step"
    if name.startswith(PROBE_PREFIXES):
        return "probe_step"
    if name.startswith(STEP_PREFIXES):
        return "step"
    return None


def read_probes(path, run):
    """Reads probes.h5 into run.series / tensor_names / events / config (h5 /config attrs).
    Returns the config.ini text stored in /config's 'ini' attribute ('' if none)."""
    import h5py
    ini = ""
    try:
        f = open_probes(path)
    except (OSError, ValueError) as e:
        run.problems.append(f"probes.h5 unreadable ({_short_error(e)})")
        run.partial = True
        return ini
    with f:
        try:
            if "config" in f:
                for k, v in f["config"].attrs.items():
                    if isinstance(v, bytes):
                        v = v.decode("utf-8", "replace")
                    elif isinstance(v, np.generic):
                        v = v.item()
                    if k == "ini":
                        ini = str(v)
                    else:
                        run.config[k] = v
            families = {}
            datasets = {}

            def visit(name, obj):
                if isinstance(obj, h5py.Dataset) and not name.startswith(("config", "provenance")):
                    datasets[name] = obj

            f.visititems(visit)
            for name, dset in datasets.items():
                try:
                    if name in ("tensors/names", "events/kind", "events/detail"):
                        data = np.array([s for s in dset.asstr()[()]], dtype=object)
                    else:
                        data = np.asarray(dset[()])
                        if data.dtype.kind not in "fiub":
                            continue
                        data = data.astype(np.float64)
                except (OSError, ValueError, TypeError, KeyError) as e:
                    run.problems.append(f"probes.h5: {name} unreadable ({_short_error(e)})")
                    continue
                fam = _family(name, dset)
                if fam is None:
                    if name == "tensors/names":
                        run.tensor_names = [str(s) for s in data]
                    continue
                families.setdefault(fam, []).append(name)
                run.series[name] = data
        except (OSError, RuntimeError, KeyError) as e:
            run.problems.append(f"probes.h5 read error ({_short_error(e)})")
            run.partial = True
    missing = [d for d in CORE_DATASETS
               if d not in run.series and not (d == "tensors/names" and run.tensor_names)]
    if missing:
        run.problems.append("probes.h5 lacks " + ", ".join(missing))
        run.partial = True
    _trim_families(run, families)
    if run.has("events/step"):
        kinds = run.series.get("events/kind", [])
        details = run.series.get("events/detail", [])
        for i, s in enumerate(run.series["events/step"]):
            run.events.append((float(s), str(kinds[i]) if i < len(kinds) else "?",
                               str(details[i]) if i < len(details) else ""))
    return ini


def _trim_families(run, families):
    """Cuts every member of a row family to the family's shortest length (a reader of a live
    or killed file can see an index dataset longer or shorter than its members)."""
    for index, members in families.items():
        lengths = {m: len(run.series[m]) for m in members if run.series[m].ndim > 0}
        if not lengths:
            continue
        n = min(lengths.values())
        if any(v != n for v in lengths.values()):
            longest = max(lengths.values())
            run.problems.append(f"rows aligned with /{index}: {n} complete of up to {longest} "
                                f"(truncated series)")
            run.partial = True
            for m in lengths:
                run.series[m] = run.series[m][:n]


def _short_error(e):
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:160]


# ---- metrics.tsv (fallback when probes.h5 is missing) ----

def read_metrics(path):
    """metrics.tsv -> (eval steps, eval losses, train steps, train losses) as float arrays."""
    ev_s, ev_l, tr_s, tr_l = [], [], [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        header = f.readline().rstrip("\n").split("\t")
        try:
            ik, istep, iloss = header.index("kind"), header.index("step"), header.index("loss")
        except ValueError:
            return (np.array([]),) * 4
        for line in f:
            fields = line.rstrip("\n").split("\t")
            if len(fields) <= max(ik, istep, iloss):
                continue  # a line cut short by a kill
            step, loss = _float(fields[istep]), _float(fields[iloss])
            if fields[ik] == "eval":
                ev_s.append(step)
                ev_l.append(loss)
            elif fields[ik] == "train":
                tr_s.append(step)
                tr_l.append(loss)
    return tuple(np.array(x, dtype=np.float64) for x in (ev_s, ev_l, tr_s, tr_l))


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
        run.l0 = _float(row.get("l0"))

    target = int(_float(run.config.get("train.steps"))) if not math.isnan(
        _float(run.config.get("train.steps"))) else None
    nonfinite_seen = bool(len(ev_l) and not np.all(np.isfinite(ev_l))) or bool(
        len(train_losses) and not np.all(np.isfinite(train_losses)))
    if any(kind == "non-finite" for _, kind, _ in run.events):
        nonfinite_seen = True

    if row is not None:
        run.status = row.get("status", "failed").strip() or "failed"
        run.steps = int(_float(row.get("steps"))) if math.isfinite(_float(row.get("steps"))) else 0
        run.final_loss = _float(row.get("final_eval_loss"))
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
