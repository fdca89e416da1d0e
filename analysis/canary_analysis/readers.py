"""Readers of the text files a canary sweep leaves behind — config.ini, index.tsv,
metrics.tsv — and the canonical form of swept values (probes.h5: dataset.py). Each reader
tolerates what a crash or a kill can leave (see load.py for the contract a loaded run
fulfils).

configparser reads config.ini and pandas the TSV files; what stays hand-written is what they do
not know: the '; sweep' marker canary puts after a swept key's value (an inline comment
configparser would drop), and the canonical form that makes "3e-4" in index.tsv and "0.0003"
in config.ini the same swept value.
"""

import configparser
import io
import math
import re

import numpy as np
import pandas as pd

from .errors import AnalysisError

INDEX_FIXED = ("id", "status", "steps", "l0", "final_eval_loss")


def short_key(key):
    """'model.qk_norm' -> 'qk_norm'."""
    return key.rsplit(".", 1)[-1]


def to_float(value):
    """float(value), or NaN when it is not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def fmt_num(x, fmt=".4f"):
    """A finite number formatted, anything else "n/a" (for report tables)."""
    return format(x, fmt) if isinstance(x, (int, float)) and math.isfinite(x) else "n/a"


def md_cell(text):
    """Text safe in a markdown table cell: pipes escaped, newlines as spaces."""
    return str(text).replace("|", "\\|").replace("\n", " ")


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

_INLINE_COMMENT = re.compile(r"\s[;#]\s*(.*)$")


def parse_ini(text):
    """Resolved config.ini text -> (flat typed dict "section.key" -> value, set of keys marked
    '; sweep', value text per key). Values: true/false -> 1/0 (as in probes.h5's /config),
    numbers -> int or float. Text configparser cannot read gives empty results."""
    cp = configparser.ConfigParser(interpolation=None, strict=False,
                                   comment_prefixes=(";", "#"), inline_comment_prefixes=None)
    cp.optionxform = str  # keys are case-sensitive
    try:
        cp.read_string(text)
    except configparser.Error:
        return {}, set(), {}
    config, swept, raw = {}, set(), {}
    for section in cp.sections():
        for key, value in cp.items(section, raw=True):
            comment = ""
            m = _INLINE_COMMENT.search(value)
            if m:
                value, comment = value[:m.start()], m.group(1)
            full = f"{section}.{key}"
            raw[full] = value.strip()
            if comment.strip().lower() == "sweep":
                swept.add(full)
            config[full] = _typed(value.strip())
    return config, swept, raw


def _typed(value):
    if value.lower() in ("true", "false"):
        return 1 if value.lower() == "true" else 0
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _complete_lines(path):
    """The file's text without a last line cut short by a kill (no trailing newline)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    return text if text.endswith("\n") else text[:text.rfind("\n") + 1]


# ---- index.tsv ----

def read_index(path):
    """index.tsv -> (swept keys, {id: row dict of str}, notes). Rows with the wrong number of
    fields are skipped (noted)."""
    notes = []

    def bad(fields):
        notes.append(f"index.tsv: a row of {len(fields)} fields ({fields[0]!r}...), expected "
                     f"{len(header)}; skipped")
        return None

    try:
        header = pd.read_csv(path, sep="\t", nrows=0).columns.tolist()
    except pd.errors.EmptyDataError:
        raise AnalysisError(f"{path}: empty index (no header line)") from None
    if not header or header[0] != "id" or "status" not in header:
        raise AnalysisError(f"{path}: not a canary sweep index (header must start with 'id' "
                            f"and name a 'status' column)")
    table = pd.read_csv(io.StringIO(_complete_lines(path)), sep="\t", dtype=str,
                        keep_default_na=False, engine="python", on_bad_lines=bad,
                        skip_blank_lines=True)
    rows = {}
    for row in table.to_dict("records"):
        if any(not isinstance(v, str) for v in row.values()):  # None or NaN: fields missing
            given = sum(isinstance(v, str) for v in row.values())
            notes.append(f"index.tsv: a row of {given} fields ({row['id']!r}...), expected "
                         f"{len(header)}; skipped")
            continue
        rows[row["id"]] = row
    keys = [h for h in header if h not in INDEX_FIXED]
    return keys, rows, notes


# ---- metrics.tsv (fallback when probes.h5 is missing) ----

def read_metrics(path):
    """metrics.tsv -> (eval steps, eval losses, train steps, train losses) as float arrays;
    a line cut short by a kill (no newline, or fields missing) is dropped."""
    empty = (np.array([]),) * 4
    try:
        table = pd.read_csv(io.StringIO(_complete_lines(path)), sep="\t", dtype=str,
                            keep_default_na=False, engine="python", on_bad_lines="skip")
    except (pd.errors.EmptyDataError, pd.errors.ParserError):
        return empty
    if not {"kind", "step", "loss"} <= set(table.columns):
        return empty
    step = pd.to_numeric(table["step"], errors="coerce")
    loss = pd.to_numeric(table["loss"], errors="coerce")
    # a field that is there but empty reads as "", a missing one as NaN
    whole = step.notna() & (table["loss"] != "") & table.notna().all(axis=1)
    out = []
    for kind in ("eval", "train"):
        sel = whole & (table["kind"] == kind)
        out += [step[sel].to_numpy(np.float64), loss[sel].to_numpy(np.float64)]
    return tuple(out)
