"""Readers of the files a canary sweep leaves behind — config.ini, index.tsv, probes.h5,
metrics.tsv — and the canonical form of swept values. Each reader tolerates what a crash or a
kill can leave (see load.py for the contract a loaded run fulfils); load.py assembles runs from
them."""

import math

import numpy as np

from .errors import AnalysisError

INDEX_FIXED = ("id", "status", "steps", "l0", "final_eval_loss")

# Datasets the figures and the report rely on; a file without them is marked partial.
CORE_DATASETS = ("step", "loss/total", "output/logz_mean", "probe_step", "attn/max_logit",
                 "attn/entropy", "grad/rms", "tensors/names", "eval/step", "eval/loss",
                 "lr_probe/step", "lr_probe/loss", "events/step", "events/kind", "events/detail")

# Row families: (index dataset, how a member is recognised). A dataset's "description"
# attribute says "(rows aligned with /step)" or "(rows aligned with /probe_step)"; the prefixes
# are the fallback for files written without descriptions.
STEP_PREFIXES = ("loss/", "lr", "grad/global_norm", "grad/clip_factor", "tokens_per_s", "output/")
PROBE_PREFIXES = ("attn/", "resid/", "grad/rms", "param/rms", "update/rms", "adam/", "muon/")


def short_key(key):
    """'model.qk_norm' -> 'qk_norm'."""
    return key.rsplit(".", 1)[-1]


def to_float(value):
    """float(value), or NaN when it is not a number."""
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


def _scale_of_rows(dset):
    """The name of the dimension scale on the dataset's first axis ("step", "probe_step", ...),
    or None."""
    try:
        if dset.ndim == 0:
            return None
        for _, scale in dset.dims[0].items():
            return scale.name.lstrip("/")
    except (RuntimeError, ValueError, KeyError, TypeError):
        return None
    return None


def _family(name, dset):
    if name.startswith(("tensors/", "axes/")):
        return None
    scale = _scale_of_rows(dset)  # probes.h5 names its axes with HDF5 dimension scales
    if scale is not None:
        return scale
    # older files without dimension scales: the description says which rows a series has
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
                    if name in ("tensors/names", "tensors/kind", "events/kind",
                                "events/detail"):
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
                    elif name == "tensors/kind":
                        run.tensor_kinds = [str(s) for s in data]
                    elif name == "tensors/shape" and data.ndim == 2:
                        run.tensor_shapes = [(int(a), int(b)) for a, b in data]
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
            step, loss = to_float(fields[istep]), to_float(fields[iloss])
            if fields[ik] == "eval":
                ev_s.append(step)
                ev_l.append(loss)
            elif fields[ik] == "train":
                tr_s.append(step)
                tr_l.append(loss)
    return tuple(np.array(x, dtype=np.float64) for x in (ev_s, ev_l, tr_s, tr_l))
