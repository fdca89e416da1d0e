"""The sweep's figures (matplotlib, Agg backend, PNG).

Contract: every ``fig_*`` function takes the loaded ``Sweep`` (plus options) and an output
directory, writes exactly one PNG and returns a ``FigureResult(name, path, panels, caption)``,
``panels`` being the number of axes drawn (not counting colorbars). A figure is always written:
a panel without data says so in its middle. ``write_all`` writes them all and returns the list.

Styling: when the sweep has several learning rates, colour encodes the LR (log colour bar) and
the line style / marker encodes the group of the other swept keys (legend); otherwise each run
gets its own colour and legend entry. Diverged runs are marked with an "x".

Figures (Wortsman et al. 2023 numbering in brackets):
- loss_vs_lr.png: final eval loss (capped at l0; diverged runs at l0) vs peak LR, one curve per
  group, one panel per model size (non-embedding parameter count) [Fig. 1];
- attn_logit_vs_step.png: max attention logit (max over heads) vs step, one panel per layer
  (panel 1 = block 0), one line per run [Fig. 2];
- attn_logit_vs_lr.png: block-0 max attention logit at the chosen step vs LR, per group [Fig. 9];
- logz_vs_step.png: mean log Z of the output softmax and the output-logit RMS vs step, per
  run [Fig. 4];
- grad_rms_vs_lr.png: gradient RMS of blocks.<l>.<matrix> averaged over the last 10% of steps vs
  LR, one panel per layer, with AdamW eps as horizontal lines [Fig. 11];
- attn_entropy.png: attention entropy per head at the last probe row, one panel per layer, with
  the entropy of uniform causal attention for reference;
- lr_probe.png: the local LR-sensitivity probe, loss(f) - loss(0) for f = 1/2, 1, 2 vs step,
  one panel per f.
"""

import math
import os
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from .logz import smooth  # noqa: E402
from .params import SIZE_KEYS, size_label  # noqa: E402
from .sensitivity import capped_loss, group_key, group_label  # noqa: E402
from .series import (block_max_logit, block_tensor_rms, default_logit_step, tail_mean,  # noqa: E402
                     value_at_step)

LINESTYLES = [("-", None), ("--", None), (":", None), ("-.", None), ("-", "o"), ("--", "s"),
              (":", "^"), ("-.", "D"), ("-", "v"), ("--", "P")]


@dataclass
class FigureResult:
    """One written figure: file name, full path, number of panels, one-line caption."""

    name: str
    path: str
    panels: int
    caption: str


class Style:
    """Colours by LR (or by run) and line styles by group, fixed for the whole sweep."""

    def __init__(self, sweep):
        self.keys = sweep.swept_keys
        lrs = sorted({r.lr for r in sweep.runs if math.isfinite(r.lr) and r.lr > 0})
        self.by_lr = len(lrs) >= 2
        self.norm = LogNorm(vmin=lrs[0], vmax=lrs[-1]) if self.by_lr else None
        self.cmap = plt.get_cmap("viridis")
        self.groups = []
        for r in sweep.runs:
            k = group_key(r, self.keys)
            if k not in self.groups:
                self.groups.append(k)
        self.run_index = {r.id: i for i, r in enumerate(sweep.runs)}
        self.families = []  # groups without the model-size keys
        for k in self.groups:
            if self.family(k) not in self.families:
                self.families.append(self.family(k))

    @staticmethod
    def family(key):
        """A group key without the model-size keys (the same curve in every size panel)."""
        return tuple((k, v) for k, v in key if k not in SIZE_KEYS)

    def curve(self, key, by="group"):
        """(colour, line style, marker) of a per-group curve, the same in every figure:
        by="family" colours by the group without size keys (one panel per size)."""
        ls, marker = LINESTYLES[self.families.index(self.family(key)) % len(LINESTYLES)] \
            if self.family(key) in self.families else LINESTYLES[0]
        ref = self.families if by == "family" else self.groups
        k = self.family(key) if by == "family" else key
        i = ref.index(k) if k in ref else 0
        return plt.get_cmap("tab10")(i % 10), ls, marker or "o"

    def color(self, run):
        if self.by_lr and math.isfinite(run.lr) and run.lr > 0:
            # Stop short of viridis' pale yellow end, which is hard to see on white.
            return self.cmap(0.9 * self.norm(run.lr))
        return plt.get_cmap("tab10")(self.run_index.get(run.id, 0) % 10)

    def group_style(self, key):
        i = self.groups.index(key) if key in self.groups else 0
        return LINESTYLES[i % len(LINESTYLES)]

    def line_kwargs(self, run, n_points=1):
        ls, marker = self.group_style(group_key(run, self.keys))
        kw = dict(color=self.color(run), linestyle=ls, linewidth=1.3)
        if marker:
            kw.update(marker=marker, markersize=4, markevery=max(1, n_points // 8))
        return kw

    def run_label(self, run):
        return run.label(self.keys) + (" (diverged)" if run.diverged else "")

    def finish(self, fig, axes, runs_drawn):
        """Colour bar for the LR and a legend of groups (or of runs)."""
        if self.by_lr:
            sm = plt.cm.ScalarMappable(norm=self.norm, cmap=_truncated(self.cmap))
            fig.colorbar(sm, ax=axes, label="peak LR (optim.lr)", shrink=0.9)
            handles = []
            for key in self.groups:
                ls, marker = self.group_style(key)
                handles.append(Line2D([], [], color="0.3", linestyle=ls, marker=marker,
                                      label=group_label(key)))
            if len(handles) > 1 or self.groups != [()]:
                axes[0].legend(handles=handles, fontsize="small", loc="best")
        else:
            handles = [Line2D([], [], label=self.run_label(r), **self.line_kwargs(r))
                       for r in runs_drawn]
            if handles:
                axes[0].legend(handles=handles, fontsize="x-small", loc="best")


def _truncated(cmap):
    from matplotlib.colors import ListedColormap
    return ListedColormap(cmap(np.linspace(0, 0.9, 256)))


def _panels(n, title, width=4.6, height=3.6):
    n = max(1, n)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig, axs = plt.subplots(nrows, ncols, figsize=(width * ncols + 1.5, height * nrows + 0.6),
                            squeeze=False, constrained_layout=True)
    axes = list(axs.ravel())
    for ax in axes[n:]:
        fig.delaxes(ax)
    import textwrap
    fig.suptitle(textwrap.fill(title, 50 * ncols + 10))
    return fig, axes[:n]


def _no_data(ax, text="no data"):
    import textwrap
    ax.text(0.5, 0.5, textwrap.fill(text, 48), ha="center", va="center",
            transform=ax.transAxes, color="0.4", fontsize="small")
    ax.set_xticks([])
    ax.set_yticks([])


def _log_if_positive(ax, values, axis="y", spread=10.0):
    """Log scale when all plotted values are positive and span more than ``spread``x."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if len(v) and np.all(v > 0) and v.max() / v.min() > spread:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")


def _symlog(ax, linthresh, values):
    """Symmetric log y axis with decade ticks; drops the ticks at +-linthresh, which would
    crowd the 0 label."""
    lt = 10 ** math.floor(math.log10(linthresh))
    ax.set_yscale("symlog", linthresh=lt, linscale=0.5)
    top = max(abs(v) for v in values)
    decades = range(int(math.log10(lt)) + 1, int(math.ceil(math.log10(top))) + 1)
    pos = [10.0 ** d for d in decades]
    ax.set_yticks(sorted([-p for p in pos if -p >= min(values) * 1.5] + [0.0] +
                         [p for p in pos if p <= max(values) * 1.5]))


def _save(fig, out_dir, name, caption):
    """Writes fig; its panels are the visible axes it holds, colorbars not counted."""
    path = os.path.join(out_dir, name)
    panels = sum(1 for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return FigureResult(name=name, path=path, panels=panels, caption=caption)


def _size_groups(sweep):
    """Runs per model size (non-embedding parameter count), smallest first."""
    sizes = {}
    for r in sweep.runs:
        sizes.setdefault(r.params, []).append(r)
    return sorted(sizes.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))


def _curve_groups(runs, keys, drop=()):
    """Runs of a panel per group of the swept keys other than optim.lr and ``drop``."""
    out = {}
    for r in runs:
        out.setdefault(group_key(r, [k for k in keys if k not in drop]), []).append(r)
    return out


# ---- (a) final loss vs LR ----

def fig_loss_vs_lr(sweep, out_dir, style, lr_range=None, sensitivities=None):
    sizes = _size_groups(sweep)
    fig, axes = _panels(len(sizes), "Final eval loss vs peak LR (diverged runs at l0)")
    sens = {g.key: g for g in (sensitivities or [])}
    for ax, (params, runs) in zip(axes, sizes):
        ax.set_title(size_label(runs[0].config, params, runs[0].active_params)
                     if params is not None else "unknown size",
                     fontsize="medium")
        drawn = div_labelled = False
        for key, group in _curve_groups(runs, sweep.swept_keys, drop=SIZE_KEYS).items():
            pts = []
            for r in group:
                if not math.isfinite(r.lr) or (r.crashed and not r.diverged):
                    continue
                div = r.diverged or not math.isfinite(r.final_loss)
                y = capped_loss(r.final_loss, r.l0, div)
                if math.isfinite(y):
                    pts.append((r.lr, y, div))
            if not pts:
                continue
            pts.sort()
            x, y, div = map(np.array, zip(*pts))
            full_key = group_key(group[0], sweep.swept_keys)
            label = group_label(key)
            if full_key in sens and math.isfinite(sens[full_key].sensitivity):
                label += f"  (sens. {sens[full_key].sensitivity:.3f})"
            color, ls, marker = style.curve(full_key, by="family")
            ax.plot(x, y, color=color, linestyle=ls, marker=marker, markersize=4, label=label)
            if div.any():
                ax.plot(x[div], y[div], "x", color="red", markersize=9, mew=2,
                        label=None if div_labelled else "diverged (at l0)")
                div_labelled = True
            drawn = True
        l0s = [r.l0 for r in runs if math.isfinite(r.l0)]
        if l0s:
            ax.axhline(np.median(l0s), color="0.5", linestyle=":", linewidth=1,
                       label="l0 (loss at init)")
        if lr_range:
            ax.axvspan(lr_range[0], lr_range[1], color="0.95", zorder=0)
        if drawn:
            ax.set_xscale("log")
            ax.legend(fontsize="small")
        else:
            _no_data(ax, "no finished runs with an LR")
        ax.set_xlabel("peak learning rate")
        ax.set_ylabel("final eval loss")
        ax.grid(True, which="major", alpha=0.3)
    return _save(fig, out_dir, "loss_vs_lr.png",
                 "Final eval loss vs peak LR per group; one panel per model size; the shaded "
                 "band is the LR-sensitivity range.")


# ---- (b) max attention logit vs step, every layer ----

def _max_layers(sweep, name):
    n = 0
    for r in sweep.runs:
        if r.has(name) and "layer" in r.ds[name].dims:
            n = max(n, r.ds.sizes["layer"])
        elif "model.layers" in r.config:
            try:
                n = max(n, int(r.config["model.layers"]))
            except (TypeError, ValueError):
                pass
    return max(n, 1)


def fig_attn_logit_vs_step(sweep, out_dir, style):
    layers = _max_layers(sweep, "attn/max_logit")
    fig, axes = _panels(layers, "Max attention logit |q.k|/sqrt(d_h) (max over heads) vs step")
    drawn_runs, thresholds = [], set()
    for layer, ax in enumerate(axes):
        vals = []
        for r in sweep.runs:
            steps, logit = block_max_logit(r, layer)
            if not len(steps):
                continue
            ax.plot(steps, logit, **style.line_kwargs(r, len(steps)))
            vals.extend(logit[np.isfinite(logit)])
            if layer == 0:
                drawn_runs.append(r)
                if "probes.logit_threshold" in r.config:
                    thresholds.add(float(r.config["probes.logit_threshold"]))
        ax.set_title(f"block {layer}" + (" (Wortsman's early-warning layer)" if layer == 0
                                          else ""), fontsize="medium")
        ax.set_xlabel("step")
        ax.set_ylabel("max attention logit")
        if vals:
            for t in sorted(thresholds or {1e4}):
                if max(vals) > t / 100:
                    ax.axhline(t, color="red", linestyle=":", linewidth=1)
            _log_if_positive(ax, vals)
        else:
            _no_data(ax)
        ax.grid(True, alpha=0.3)
    style.finish(fig, axes, drawn_runs)
    return _save(fig, out_dir, "attn_logit_vs_step.png",
                 "Max attention logit (max over heads) vs step, one panel per layer; red dotted: "
                 "probes.logit_threshold.")


# ---- (c) block-0 max attention logit at a step vs LR ----

def fig_attn_logit_vs_lr(sweep, out_dir, style, logit_step=None):
    step = default_logit_step(sweep.runs) if logit_step is None else logit_step
    fig, axes = _panels(1, f"Block-0 max attention logit at step {step:g} vs peak LR")
    ax = axes[0]
    vals, early = [], False
    for key, group in _curve_groups(sweep.runs, sweep.swept_keys).items():
        pts = []
        for r in group:
            steps, logit = block_max_logit(r, 0)
            v, _, reached = value_at_step(steps, logit, step)
            if math.isfinite(v) and math.isfinite(r.lr) and v > 0:
                pts.append((r.lr, v, reached))
        if not pts:
            continue
        pts.sort()
        x, y, reached = map(np.array, zip(*pts))
        color, ls, marker = style.curve(key)
        ax.plot(x, y, color=color, linestyle=ls, marker=marker, label=group_label(key))
        if (~reached).any():
            early = True
            ax.plot(x[~reached], y[~reached], "o", mfc="white", mec=color, markersize=9)
        vals.extend(y)
    if vals:
        ax.set_xscale("log")
        _log_if_positive(ax, vals, spread=1.0)
        ax.axhline(1e4, color="red", linestyle=":", linewidth=1, label="1e4 (Wortsman)")
        if early:
            ax.plot([], [], "o", mfc="white", mec="0.3", label="stopped before the step "
                    "(last row)")
        ax.legend(fontsize="small")
    else:
        _no_data(ax, "no attention-logit probes")
    ax.set_xlabel("peak learning rate")
    ax.set_ylabel(f"max attention logit, block 0, step {step:g}")
    ax.grid(True, which="major", alpha=0.3)
    return _save(fig, out_dir, "attn_logit_vs_lr.png",
                 f"Block-0 max attention logit at step {step:g} vs LR, one curve per group "
                 f"(hollow: the run stopped earlier, its last row).")


# ---- (d) mean log Z and the output-logit RMS vs step ----

def fig_logz_vs_step(sweep, out_dir, style):
    fig, axes = _panels(2, "Output logits vs step: mean log Z and logit RMS")
    drawn = []
    for ax, name, ylabel in ((axes[0], "output/logz_mean", "mean over tokens of log Z"),
                             (axes[1], "output/logit_rms", "RMS of the output logits")):
        here = []
        for r in sweep.runs:
            if r.has(name):
                v = r.ds[name]
                ax.plot(v["step"], smooth(v.values), **style.line_kwargs(r, v.size))
                here.append(r)
        if not here:
            _no_data(ax, f"no {name} series")
        elif name == "output/logz_mean":
            ax.axhline(0, color="0.5", linewidth=0.8)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        drawn = drawn or here
    style.finish(fig, axes, drawn)
    return _save(fig, out_dir, "logz_vs_step.png",
                 "Mean log Z and output-logit RMS vs step, running means over 1% of a run of "
                 "more than 1000 rows (output-logit divergence drifts log Z far below 0).")


# ---- (e) per-layer gradient RMS vs LR, against AdamW eps ----

def fig_grad_rms(sweep, out_dir, style, matrices=("mlp.w1",), tail=0.1):
    layers = _max_layers(sweep, "attn/max_logit")
    fig, axes = _panels(layers, "Gradient RMS (mean over the last "
                        f"{tail:.0%} of steps) vs peak LR, against AdamW eps")
    eps_values = sorted({float(r.config["optim.eps"]) for r in sweep.runs
                         if "optim.eps" in r.config})
    for layer, ax in enumerate(axes):
        vals = []
        for key, group in _curve_groups(sweep.runs, sweep.swept_keys).items():
            for mi, matrix in enumerate(matrices):
                pts = []
                for r in group:
                    g = block_tensor_rms(r, "grad/rms", matrix).get(layer)  # MoE: experts pooled
                    if g is None:
                        continue
                    v = tail_mean(r.ds["probe_step"].values, g, tail)
                    if math.isfinite(v) and v > 0 and math.isfinite(r.lr):
                        pts.append((r.lr, v))
                if not pts:
                    continue
                pts.sort()
                x, y = zip(*pts)
                color, ls, _ = style.curve(key)
                label = group_label(key) + (f" {matrix}" if len(matrices) > 1 else "")
                ax.plot(x, y, color=color, linestyle=ls, marker="os^Dv"[mi % 5], label=label)
                vals.extend(y)
        if vals:
            for e in eps_values:
                ax.axhline(e, color="red", linestyle=":", linewidth=1, label=f"AdamW eps {e:g}")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.legend(fontsize="x-small")
        else:
            _no_data(ax, "no grad/rms for " + ", ".join(f"blocks.{layer}.{m}" for m in matrices))
        ax.set_title(f"block {layer}: " + ", ".join(matrices), fontsize="medium")
        ax.set_xlabel("peak learning rate")
        ax.set_ylabel("gradient RMS")
        ax.grid(True, which="major", alpha=0.3)
    return _save(fig, out_dir, "grad_rms_vs_lr.png",
                 f"Gradient RMS of {', '.join(matrices)} per layer (mean over the last "
                 f"{tail:.0%} of steps) vs LR; red dotted: AdamW eps.")


# ---- (f) attention entropy per head ----

def fig_attn_entropy(sweep, out_dir, style):
    layers = _max_layers(sweep, "attn/entropy")
    fig, axes = _panels(layers, "Attention entropy per head at the last probe row")
    drawn = []
    seq = {int(r.config["model.seq_len"]) for r in sweep.runs if "model.seq_len" in r.config}
    for layer, ax in enumerate(axes):
        any_data = False
        for r in sweep.runs:
            if not (r.has("attn/entropy") and layer in r.ds["layer"].values):
                continue
            ent = r.ds["attn/entropy"].sel(layer=layer)
            complete = ent.where(np.isfinite(ent)).dropna("probe_step", how="any")
            if not complete.sizes["probe_step"]:
                continue
            kw = style.line_kwargs(r)
            kw.setdefault("marker", "o")
            kw["markersize"] = 4
            last = complete.isel(probe_step=-1)
            ax.plot(last["head"], last, **kw)
            any_data = True
            if layer == 0:
                drawn.append(r)
        for t in sorted(seq):
            ax.axhline(float(np.mean(np.log(np.arange(1, t + 1)))), color="0.5", linestyle=":",
                       linewidth=1, label=f"uniform causal, T={t}")
        if any_data:
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
            if seq:
                ax.legend(fontsize="x-small", loc="lower right")
        else:
            _no_data(ax, "no attn/entropy")
        ax.set_title(f"block {layer}", fontsize="medium")
        ax.set_xlabel("head")
        ax.set_ylabel("attention entropy (nats)")
        ax.grid(True, alpha=0.3)
    style.finish(fig, axes, drawn)
    return _save(fig, out_dir, "attn_entropy.png",
                 "Mean attention entropy per head at each run's last probe row, one panel per "
                 "layer (dotted: uniform attention over the causal prefix).")


# ---- (g) local LR-sensitivity probe ----

def fig_lr_probe(sweep, out_dir, style):
    factors = ("1/2", "1", "2")
    fig, axes = _panels(3, "Local LR-sensitivity probe: probe-batch loss after the step's "
                        "update scaled by f, minus f=0")
    drawn = []
    for j, (ax, f) in enumerate(zip(axes, factors), start=1):
        vals = []
        for r in sweep.runs:
            if not r.has("lr_probe/loss") or r.ds.sizes.get("lr_factor", 0) < 4:
                continue
            loss = r.ds["lr_probe/loss"]
            d = (loss.isel(lr_factor=j) - loss.isel(lr_factor=0)).values
            ax.plot(loss["lr_probe_step"], d, **style.line_kwargs(r, len(d)))
            vals.extend(d[np.isfinite(d)])
            if j == 1:
                drawn.append(r)
        if vals:
            ax.axhline(0, color="0.5", linewidth=0.8)
            span = max(abs(v) for v in vals)
            small = sorted(abs(v) for v in vals if v != 0)
            if span > 0 and small and span / small[0] > 100:
                _symlog(ax, max(small[len(small) // 10], span * 1e-4), vals)
        else:
            _no_data(ax, "no LR-probe rows (probes.lr_probe_every)")
        ax.set_title(f"f = {f}", fontsize="medium")
        ax.set_xlabel("step")
        ax.set_ylabel(f"loss(f={f}) - loss(f=0)")
        ax.grid(True, alpha=0.3)
    style.finish(fig, axes, drawn)
    return _save(fig, out_dir, "lr_probe.png",
                 "Local LR sensitivity over training: change of the probe-batch loss when the "
                 "step's update is scaled by f (below 0: the step helps).")


def write_all(sweep, out_dir, lr_range=None, logit_step=None, sensitivities=None,
              grad_matrices=("mlp.w1",)):
    """Writes every figure into ``out_dir``; returns [FigureResult] in report order."""
    os.makedirs(out_dir, exist_ok=True)
    style = Style(sweep)
    return [
        fig_loss_vs_lr(sweep, out_dir, style, lr_range, sensitivities),
        fig_attn_logit_vs_step(sweep, out_dir, style),
        fig_attn_logit_vs_lr(sweep, out_dir, style, logit_step),
        fig_logz_vs_step(sweep, out_dir, style),
        fig_grad_rms(sweep, out_dir, style, grad_matrices),
        fig_attn_entropy(sweep, out_dir, style),
        fig_lr_probe(sweep, out_dir, style),
    ]

