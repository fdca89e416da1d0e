"""report.md and runs.csv for a sweep.

Contract of ``build_report(sweep_dir, out_dir=None, lr_range=(3e-4, 3e-1), logit_step=None,
next_factor=2.0, grad_matrices=("mlp.w1",), log=print)``:

- loads the sweep (``load.load_sweep``), computes the LR sensitivity, writes every figure, the
  early-warning fit and figure, ``runs.csv`` and ``report.md`` into ``out_dir`` (default
  ``<sweep_dir>/report``; created), and returns a ``Report`` with what it wrote;
- raises ``AnalysisError`` before writing anything for bad input (not a sweep, an empty sweep,
  an invalid LR range, fewer than 2 of the sweep's LRs in the range, a ``grad_matrices`` name
  that is no per-block tensor of any run: the message lists the valid names);
- a sweep without optim.lr swept is not an error: report.md says the LR sensitivity is not
  computable and everything else is written;
- report.md links the figures by relative path (they sit next to it);
- runs.csv has one row per run: id, one column per swept key, status, partial, crashed,
  in_index, steps, l0, final_loss, diverged, max_attn_logit_block0_final (last finite row),
  logz_mean_final (last finite row), params (non-embedding), problems.
- spikes.md (``spikes.render``): the spike and threshold events with their replays, linked
  from report.md;
- ``log`` receives the lines printed to the terminal (the summary and the early-warning
  predictions).
"""

import csv
import math
import os
import sys
from dataclasses import dataclass, field

from .early_warning import early_warning, fig_early_warning, format_predictions
from .errors import AnalysisError, SensitivityUnavailable
from .load import load_sweep
from .logz import logz_render, logz_rows
from .mitigations import mitigation_rows
from .mitigations import render as mitigation_render
from .sensitivity import DEFAULT_RANGE, check_range, lr_sensitivity
from .readers import fmt_num as _f
from .readers import md_cell as _md
from .series import block_max_logit, block_tensor_suffixes, default_logit_step, last_finite
from .spikes import render as render_spikes
from .spikes import replays_of

MAX_EVENTS_PER_RUN = 20


@dataclass
class Report:
    """What ``build_report`` wrote and computed."""

    out_dir: str
    report_md: str
    runs_csv: str
    figures: list = field(default_factory=list)      # [figures.FigureResult]
    sensitivities: list = field(default_factory=list)
    sensitivity_message: str = None                   # why it is missing, if it is
    early_warning: object = None
    sweep: object = None
    spikes_md: str = None


def run_summary(run):
    """Per-run numbers for runs.csv and the runs table."""
    _, logit = block_max_logit(run, 0)
    logz = run.ds["output/logz_mean"].values if run.has("output/logz_mean") else []
    return {
        "max_attn_logit_block0_final": last_finite(logit) if len(logit) else math.nan,
        "logz_mean_final": last_finite(logz) if len(logz) else math.nan,
    }


def write_runs_csv(sweep, path):
    keys = sweep.swept_keys
    cols = (["id"] + keys + ["status", "partial", "crashed", "in_index", "steps", "l0",
                             "final_loss", "diverged", "max_attn_logit_block0_final",
                             "logz_mean_final", "params", "problems"])
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in sweep.runs:
            s = run_summary(r)
            w.writerow([r.id] + [r.swept_text.get(k, "") for k in keys] + [
                r.status, int(r.partial), int(r.crashed), int(r.in_index), r.steps,
                repr(r.l0), repr(r.final_loss), int(r.diverged),
                repr(s["max_attn_logit_block0_final"]), repr(s["logz_mean_final"]),
                "" if r.params is None else r.params, "; ".join(r.problems)])


def build_report(sweep_dir, out_dir=None, lr_range=DEFAULT_RANGE, logit_step=None,
                 next_factor=2.0, grad_matrices=("mlp.w1",), log=print):
    """Writes the report (see the module docstring)."""
    lr_range = check_range(lr_range)
    sweep = load_sweep(sweep_dir)
    check_grad_matrices(sweep.runs, grad_matrices)
    sens, sens_msg = [], None
    try:
        sens = lr_sensitivity(sweep, lr_range)
    except SensitivityUnavailable as e:
        sens_msg = str(e)
    out_dir = os.path.abspath(out_dir or os.path.join(sweep.path, "report"))
    os.makedirs(out_dir, exist_ok=True)
    step = default_logit_step(sweep.runs) if logit_step is None else logit_step

    from .figures import write_all  # matplotlib only once the input is known to be good
    figs = write_all(sweep, out_dir, lr_range, step, sens, grad_matrices)
    ew = early_warning(sweep, step, next_factor)
    figs.append(fig_early_warning(ew, out_dir))

    rep = Report(out_dir=out_dir, report_md=os.path.join(out_dir, "report.md"),
                 runs_csv=os.path.join(out_dir, "runs.csv"), figures=figs, sensitivities=sens,
                 sensitivity_message=sens_msg, early_warning=ew, sweep=sweep)
    write_runs_csv(sweep, rep.runs_csv)
    rep.spikes_md = os.path.join(out_dir, "spikes.md")
    with open(rep.spikes_md, "w", encoding="utf-8") as f:
        f.write(render_spikes(sweep.path, out_dir) + "\n")
    with open(rep.report_md, "w", encoding="utf-8") as f:
        f.write(render_markdown(rep, lr_range, step))

    log(f"{len(sweep.runs)} runs in {sweep.path}; report: {rep.report_md}")
    if sens_msg:
        log(sens_msg)
    for g in sens:
        log(f"LR sensitivity {g.label}: {_f(g.sensitivity)} (best lr {_f(g.best_lr, 'g')}, "
            f"loss {_f(g.best_loss)})")
    for line in format_predictions(ew):
        log("early warning: " + line)
    # Incomplete runs: one clear line each; their missing parts were skipped above.
    rep.skipped = [r for r in sweep.runs if r.partial]
    for r in rep.skipped:
        sys.stderr.write(f"canary-analyze: run {r.id}: skipped its incomplete data: "
                         f"{'; '.join(r.problems) or 'incomplete'}\n")
    return rep


def check_grad_matrices(runs, names):
    """Raises AnalysisError for a name that is no per-block tensor of any run (unchecked when
    no run has a tensor table: the figure then says there is no grad/rms)."""
    listed, accepted = block_tensor_suffixes(runs)
    bad = [n for n in names if n not in accepted]
    if listed and bad:
        raise AnalysisError(f"--grad-matrix {', '.join(repr(n) for n in bad)}: no per-block "
                            f"tensor of that name in this sweep (valid: {', '.join(listed)})")


def render_markdown(rep, lr_range, step):
    sweep = rep.sweep
    runs = sweep.runs
    counts = {}
    for r in runs:
        counts[r.status] = counts.get(r.status, 0) + 1
    out = [f"# Sweep report: {os.path.basename(sweep.path)}", ""]
    out.append(f"- sweep: `{sweep.path}`")
    out.append(f"- runs: {len(runs)} (" + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
               + f"); partial: {sum(r.partial for r in runs)}; diverged: "
               f"{sum(r.diverged for r in runs)}")
    out.append(f"- swept keys: {', '.join(f'`{k}`' for k in sweep.swept_keys) or 'none'}")
    out.append(f"- LR range for the sensitivity: [{lr_range[0]:g}, {lr_range[1]:g}]; attention "
               f"logits read at step {step:g}")
    for n in sweep.notes:
        out.append(f"- note: {_md(n)}")
    out.append("")

    out += ["## LR sensitivity", "",
            "Wortsman et al. 2023 §2.2: mean over the LR grid in the range of "
            "min(ℓ(η), ℓ0) − ℓ*, with ℓ the final eval loss, ℓ0 the loss at initialisation, "
            "ℓ* the best over the grid; a diverged run counts as ℓ0. Lower is less sensitive; "
            "read it next to the loss-vs-LR figure.", ""]
    if rep.sensitivity_message:
        out += [f"**{_md(rep.sensitivity_message)}**", ""]
    else:
        out += ["| group | grid points | LR sensitivity | best LR | best loss ℓ* | ℓ0 | "
                "diverged | notes |", "|---|---|---|---|---|---|---|---|"]
        for g in rep.sensitivities:
            best_lr = _f(g.best_lr, "g") if math.isfinite(g.best_lr) else "none (all diverged)"
            out.append(f"| {_md(g.label)} | {len(g.lrs)} | {_f(g.sensitivity)} | {best_lr} | "
                       f"{_f(g.best_loss)} | {_f(g.l0)} | {g.n_diverged} | "
                       f"{_md('; '.join(g.notes))} |")
        out.append("")

    out += mitigation_render(mitigation_rows(sweep, rep.sensitivities))
    out += logz_render(logz_rows(sweep))

    out += ["## Runs", "", "Per-run summary (also in [runs.csv](runs.csv)).", ""]
    keys = sweep.swept_keys
    out.append("| id | " + " | ".join(f"`{k}`" for k in keys) + " | status | partial | steps | "
               "ℓ0 | final loss | max logit, block 0 | mean log Z |")
    out.append("|---" * (len(keys) + 8) + "|")
    for r in runs:
        s = run_summary(r)
        out.append(f"| {r.id} | " + " | ".join(_md(r.swept_text.get(k, "")) for k in keys) +
                   f" | {r.status}{' (diverged)' if r.diverged and r.status != 'diverged' else ''}"
                   f" | {'yes' if r.partial else ''} | {r.steps} | {_f(r.l0)} | "
                   f"{_f(r.final_loss)} | {_f(s['max_attn_logit_block0_final'], '.4g')} | "
                   f"{_f(s['logz_mean_final'], '.4g')} |")
    out.append("")

    out += ["## Divergences and events", ""]
    trouble = [r for r in runs if r.diverged or r.partial or r.crashed or r.problems]
    if not trouble:
        out += ["Every run finished below its ℓ0 with complete data.", ""]
    for r in trouble:
        what = []
        if r.diverged:
            first = next((s for s, kind, _ in r.events if kind == "non-finite"), None)
            what.append(f"diverged (final loss {_f(r.final_loss)} vs ℓ0 {_f(r.l0)}"
                        + (f"; non-finite at step {first:g}" if first is not None else "") + ")")
        if r.crashed:
            what.append("did not finish")
        if r.partial:
            what.append("partial data")
        out.append(f"- **{r.id}**: {', '.join(what) or 'note'}"
                   + (f": {_md('; '.join(r.problems))}" if r.problems else ""))
    if trouble:
        out.append("")
    with_events = [r for r in runs if r.events]
    if with_events:
        out += ["| run | step | kind | detail |", "|---|---|---|---|"]
        for r in with_events:
            for s, kind, detail in r.events[:MAX_EVENTS_PER_RUN]:
                out.append(f"| {r.id} | {_f(s, 'g')} | {_md(kind)} | {_md(detail)} |")
            if len(r.events) > MAX_EVENTS_PER_RUN:
                out.append(f"| {r.id} | | | … {len(r.events) - MAX_EVENTS_PER_RUN} more |")
    else:
        out.append("No events (non-finite, spike or threshold) were recorded.")
    out.append("")

    replayed = sum(len(replays_of(r.path)) for r in runs)
    out += [f"Spike forensics: [spikes.md](spikes.md) lists these events with the "
            f"{replayed} replay(s) made of them (`canary replay --run RUN --step S`): the "
            f"counterfactual branches, which tensor moved first and the worst sequences.", ""]

    out += ["## Figures", ""]
    for fig in rep.figures:
        if fig.name == "early_warning.png":
            continue
        out += [f"### {fig.name}", "", fig.caption, "", f"![{fig.name}]({fig.name})", ""]

    ew = rep.early_warning
    out += ["## Early warning: attention-logit growth", "",
            f"Wortsman et al. 2023 §3.3: per LR, log10 of the block-0 max attention logit at "
            f"step {ew.step:g} as a quadratic in log10(non-embedding parameters) across the "
            f"model sizes; prediction for {ew.next_factor:g}x the largest size, and whether it "
            f"crosses {ew.threshold:g} (in the paper every run above it diverged).", ""]
    for line in format_predictions(ew):
        out.append(f"- {_md(line)}")
    if ew.observed_over:
        out.append("")
        out.append(f"Runs whose block-0 logit at step {ew.step:g} exceeded {ew.threshold:g}: " +
                   ", ".join(f"{i} ({v:.3g}, {'diverged' if d else 'did not diverge'})"
                             for i, v, d in ew.observed_over) + ".")
    fig = next(f for f in rep.figures if f.name == "early_warning.png")
    out += ["", fig.caption, "", f"![{fig.name}]({fig.name})", ""]
    return "\n".join(out)

