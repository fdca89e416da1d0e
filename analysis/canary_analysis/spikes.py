"""Spike forensics: the spike and threshold events of a run or a sweep, whether each was replayed
by ``canary replay``, and the replays' tables.

Contract:

- ``find_runs(path)``: the run directories under ``path`` (``path`` itself when it is a run:
  a directory with config.ini and metrics.tsv or probes.h5), sorted; ``AnalysisError`` when
  there is none.
- ``run_events(run_dir)``: [(step, kind, detail)] from probes.h5's /events (all kinds).
- ``read_replay(replay_dir)``: a ``Replay`` from the files ``canary replay`` writes there
  (summary.tsv, branches.tsv, batch.tsv, probes.h5); ``AnalysisError`` when summary.tsv is
  missing (an unfinished replay) or lacks its step fields.
- ``attribution(probes_h5, first, last, spike, z=3.0)``: per tensor, the first step >= spike at
  which its gradient RMS or update RMS lies more than z standard deviations from its mean over
  the pre-spike steps [first, last] (sample standard deviation); tensors ordered by that step,
  ties by |z| (largest first); tensors that never cross come last with step None.
- ``render(path)``: markdown: the events table of every run (spike, threshold and non-finite
  events; whether a replay exists for the step; a run whose probes.h5 cannot be read is listed
  as such) and, per replay, the check against the run,
  the branch table (with whether the branch's own probes recorded a spike event at S), who
  moved first and the worst sequences of batch S.
"""

import math
import os
from dataclasses import dataclass, field

import h5py
import numpy as np

from .errors import AnalysisError
from .readers import fmt_num as _f
from .readers import md_cell as _md
from .readers import to_float

LISTED_KINDS = ("spike", "threshold", "non-finite")
Z_CROSS = 3.0
SHOW_TENSORS = 12
SHOW_SEQUENCES = 5


def _is_run(path):
    return (os.path.isfile(os.path.join(path, "config.ini")) and
            any(os.path.isfile(os.path.join(path, f)) for f in ("metrics.tsv", "probes.h5")))


def find_runs(path):
    path = os.path.abspath(os.fspath(path))
    if not os.path.isdir(path):
        raise AnalysisError(f"{path}: no such directory")
    if _is_run(path):
        return [path]
    runs = sorted(os.path.join(path, d) for d in os.listdir(path)
                  if d not in ("report", "replay") and _is_run(os.path.join(path, d)))
    if not runs:
        raise AnalysisError(f"{path} is neither a run nor a sweep (no run directories with "
                            f"config.ini and metrics.tsv)")
    return runs


def _text(v):
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def run_events(run_dir):
    path = os.path.join(run_dir, "probes.h5")
    if not os.path.isfile(path):
        return []
    try:
        with h5py.File(path, "r") as f:
            if "events/step" not in f:
                return []
            steps = f["events/step"][:]
            kinds = [_text(k) for k in f["events/kind"][:]]
            details = [_text(d) for d in f["events/detail"][:]]
    except OSError as e:
        raise AnalysisError(f"{path}: unreadable ({e})") from None
    n = min(len(steps), len(kinds), len(details))
    return [(int(steps[i]), kinds[i], details[i]) for i in range(n)]


def _tsv(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [l.rstrip("\n") for l in f if l.strip()]
    if not lines:
        return []
    head = lines[0].split("\t")
    return [dict(zip(head, l.split("\t"))) for l in lines[1:]]


def _int(text, what, path):
    v = to_float(text)
    if not math.isfinite(v):
        raise AnalysisError(f"{path}: summary.tsv has no valid {what}")
    return int(v)


@dataclass
class Replay:
    """One ``canary replay`` directory, as read."""

    path: str
    step: int
    summary: dict = field(default_factory=dict)
    branches: list = field(default_factory=list)   # branches.tsv rows (dicts of str)
    batch: list = field(default_factory=list)      # batch.tsv rows, the worst first
    moved: list = field(default_factory=list)      # attribution() rows

    @property
    def reproduced(self):
        return self.summary.get("reproduced") == "1"


def attribution(probes_h5, first, last, spike, z=Z_CROSS):
    with h5py.File(probes_h5, "r") as f:
        names = [_text(n) for n in f["tensors/names"][:]]
        steps = f["probe_step"][:].astype(np.int64)
        series = {k: f[k][:] for k in ("grad/rms", "update/rms") if k in f}
    if not series:
        raise AnalysisError(f"{probes_h5}: no grad/rms or update/rms series")
    pre = (steps >= first) & (steps <= last)
    after = np.flatnonzero(steps >= spike)
    out = []
    for t, name in enumerate(names):
        best = None  # (step, -|z|, series, z)
        for key, x in series.items():
            base = x[pre, t]
            base = base[np.isfinite(base)]
            if base.size < 2:
                continue
            mean, sd = float(base.mean()), float(base.std(ddof=1))
            for i in after:
                v = float(x[i, t])
                if not math.isfinite(v):
                    continue
                zz = (v - mean) / sd if sd > 0 else (math.inf if v != mean else 0.0)
                if abs(zz) > z:
                    cand = (int(steps[i]), -abs(zz), key, zz)
                    best = cand if best is None or cand[:2] < best[:2] else best
                    break
        if best is None:
            out.append({"tensor": name, "step": None, "series": "", "z": math.nan})
        else:
            out.append({"tensor": name, "step": best[0], "series": best[2], "z": best[3]})
    # by step, then |z| largest first (an infinite z, from a constant window, first of all)
    out.sort(key=lambda r: (r["step"] is None, r["step"] or 0,
                            0.0 if math.isnan(r["z"]) else -abs(r["z"])))
    return out


def read_replay(replay_dir):
    sp = os.path.join(replay_dir, "summary.tsv")
    if not os.path.isfile(sp):
        raise AnalysisError(f"{replay_dir}: no summary.tsv (the replay did not finish)")
    summary = {r["key"]: r["value"] for r in _tsv(sp) if "key" in r and "value" in r}
    step = _int(summary.get("step"), "step", replay_dir)
    rep = Replay(path=replay_dir, step=step, summary=summary)
    for name, attr in (("branches.tsv", "branches"), ("batch.tsv", "batch")):
        p = os.path.join(replay_dir, name)
        if os.path.isfile(p):
            setattr(rep, attr, _tsv(p))
    probes = os.path.join(replay_dir, "probes.h5")
    first = _int(summary.get("pre_first"), "pre_first", replay_dir)
    last = _int(summary.get("pre_last"), "pre_last", replay_dir)
    if os.path.isfile(probes) and last >= first:
        rep.moved = attribution(probes, first, last, step)
    return rep


def replays_of(run_dir):
    """{step: replay directory} of a run's replays."""
    base = os.path.join(run_dir, "replay")
    out = {}
    if os.path.isdir(base):
        for d in os.listdir(base):
            if d.startswith("step_") and d[5:].isdigit():
                out[int(d[5:])] = os.path.join(base, d)
    return out


def _replay_md(run_id, rep, rel):
    s = rep.summary
    start = ("the initial weights" if s.get("start_from") == "init"
             else f"`{os.path.basename(s.get('start_from', '?'))}`")
    out = [f"### {run_id}, step {rep.step}", "",
           f"Replay in `{rel}`: steps {_f(to_float(s.get('start_step')) + 1, 'g')} .. "
           f"{s.get('end_step', '?')} from {start} on {s.get('ranks', '?')} rank(s), every "
           f"probe at cadence 1.", ""]
    if rep.reproduced:
        out.append("**Reproduced**: every replayed step equals the run's metrics.tsv bit for bit.")
    else:
        out.append(f"**Not reproduced**: the replay parts from the run at step "
                   f"{s.get('parted_at', '?')} ({_md(s.get('parted_what', ''))}): a hardware "
                   f"fault or nondeterminism.")
    mean, sd = to_float(s.get("pre_mean")), to_float(s.get("pre_sd"))
    out += ["", f"Pre-spike window: steps {s.get('pre_first')} .. {s.get('pre_last')}, loss "
            f"{_f(mean)} ± {_f(sd)}; a branch recovers when its loss at step "
            f"{s.get('end_step')} is at most {_f(mean + sd)}.", ""]
    if rep.branches:
        out += ["| branch | loss at S | loss at end | max | recovered | grad norm at S | "
                "spike at S | what |", "|---|---|---|---|---|---|---|---|"]
        for b in rep.branches:
            if b.get("ran") != "1":
                out.append(f"| {b['branch']} | | | | not run | | | {_md(b.get('what', ''))} "
                           f"({_md(b.get('note', ''))}) |")
                continue
            note = f" ({_md(b['note'])})" if b.get("note") else ""
            d = rep.path if b["branch"] == "as_run" else os.path.join(rep.path,
                                                                       f"branch_{b['branch']}")
            try:
                spiked = "yes" if any(st == rep.step and k == "spike"
                                      for st, k, _ in run_events(d)) else "no"
            except AnalysisError:
                spiked = "unreadable"

            out.append(f"| {b['branch']} | {_f(to_float(b['loss_at_S']))} | "
                       f"{_f(to_float(b['loss_at_end']))} | {_f(to_float(b['max_loss']))} | "
                       f"{'yes' if b.get('recovered') == '1' else 'no'} | "
                       f"{_f(to_float(b.get('grad_norm_at_S')), '.4g')} | "
                       f"{spiked} | {_md(b.get('what', ''))}{note} |")
        rec = [b["branch"] for b in rep.branches[1:] if b.get("recovered") == "1"]
        out += ["", "Recovered: " + (", ".join(rec) if rec else "none of the branches") + ".",
                ""]
    if rep.moved:
        crossed = [m for m in rep.moved if m["step"] is not None]
        out += [f"Who moved first: the first step from S on at which a tensor's gradient or "
                f"update RMS is more than {Z_CROSS:g} sigma from its pre-spike mean "
                f"({len(crossed)} of {len(rep.moved)} tensors crossed).", ""]
        if crossed:
            out += ["| order | tensor | step | series | z |", "|---|---|---|---|---|"]
            for i, m in enumerate(crossed[:SHOW_TENSORS]):
                out.append(f"| {i + 1} | {m['tensor']} | {m['step']} | {m['series']} | "
                           f"{_f(m['z'], '.1f')} |")
            out.append("")
    if rep.batch:
        out += [f"Batch of step {rep.step}: the {min(SHOW_SEQUENCES, len(rep.batch))} sequences "
                f"with the highest loss of {len(rep.batch)}.", "",
                "| rank | sequence | sample | loss | − batch mean | text |",
                "|---|---|---|---|---|---|"]
        for b in rep.batch[:SHOW_SEQUENCES]:
            text = b.get("text", "")
            text = text[:80] + ("…" if len(text) > 80 else "")
            out.append(f"| {b['rank']} | {b['sequence']} | {b['sample']} | "
                       f"{_f(to_float(b['loss']))} | {_f(to_float(b['loss_minus_mean']), '+.4f')} | "
                       f"`{_md(text).replace('`', chr(39))}` |")
        out.append("")
    return out


def collect(path):
    """[(run_dir, run_id, events, {step: Replay or AnalysisError})] for every run under path."""
    runs = find_runs(path)
    root = os.path.abspath(os.fspath(path))
    out = []
    for r in runs:
        rid = os.path.relpath(r, root) if r != root else os.path.basename(r)
        replays = {}
        for step, d in sorted(replays_of(r).items()):
            try:
                replays[step] = read_replay(d)
            except (AnalysisError, OSError, KeyError, ValueError) as e:
                replays[step] = AnalysisError(f"{d}: {e}")
        try:
            events = run_events(r)
        except AnalysisError as e:  # the sweep report names such runs too; list the rest
            events = [(-1, "unreadable", str(e))]
        out.append((r, rid, events, replays))
    return out


def render(path, link_base=None):
    """Markdown for ``canary-analyze spikes`` and the sweep report (``link_base``: the directory
    the links are relative to; default ``path``)."""
    data = collect(path)
    base = os.path.abspath(link_base or path)
    n_events = sum(1 for _, _, ev, _ in data for _, k, _ in ev if k in LISTED_KINDS)
    n_replays = sum(len(rp) for _, _, _, rp in data)
    out = [f"# Spikes: {os.path.abspath(os.fspath(path))}", "",
           f"{n_events} spike, threshold and non-finite events in {len(data)} run(s); "
           f"{n_replays} replay(s). Replay one with `canary replay --run RUN --step S` (at the "
           f"run's rank count).", ""]
    rows = []
    for run_dir, rid, events, replays in data:
        for step, kind, detail in events:
            if kind == "unreadable":
                rows.append(f"| {rid} | | unreadable | {_md(detail)} | |")
            if kind in LISTED_KINDS:
                done = step in replays and not isinstance(replays[step], AnalysisError)
                rows.append(f"| {rid} | {step} | {kind} | {_md(detail)} | "
                            f"{'yes' if done else ''} |")
    if rows:
        out += ["| run | step | kind | detail | replayed |", "|---|---|---|---|---|", *rows, ""]
    else:
        out += ["No spike, threshold or non-finite events.", ""]
    for run_dir, rid, events, replays in data:
        for step, rep in replays.items():
            if isinstance(rep, AnalysisError):
                out += [f"### {rid}, step {step}", "", f"Unreadable replay: {_md(rep)}", ""]
                continue
            out += _replay_md(rid, rep, os.path.relpath(rep.path, base))
    return "\n".join(out)
