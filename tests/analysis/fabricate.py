"""Fabricated sweep directories in canary's layout, for the analysis tests.

``fabricate_sweep(root, specs, keys=..., index=True)`` writes a sweep into ``root``: index.tsv
(rows for the specs with ``in_index`` true) and one run directory per spec with config.ini
(swept keys marked '; sweep'), metrics.tsv (eval rows) and probes.h5 in the layout of DESIGN.md
§7 (/config and /provenance attributes, /step and /probe_step series, /tensors/names, /eval,
/lr_probe, /events). A spec is a dict; see ``make_run`` for the keys it understands.

``sweep_maker(tmp_path)`` returns a maker of numbered sweeps under a test's tmp_path. There is
no conftest.py here: tests/cli's modules import their own conftest by name, and a second
conftest module would shadow it when both directories run in one session. Importing this
module puts analysis/ on sys.path, for ``import canary_analysis`` without installing it (the
package's own pytest settings do the same).

Like canary's writer, every series gets HDF5 dimension scales (/step, /probe_step, /eval/step,
/lr_probe/step, /events/step, /axes/layer, /axes/head, /axes/lr_factor, /tensors/names); the
spec key ``scales=False`` writes a file as a canary from before them did.
"""

import math
import os
import sys

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PACKAGE_ROOT = os.path.join(ROOT, "analysis")
if PACKAGE_ROOT not in sys.path:
    sys.path.insert(0, PACKAGE_ROOT)

STEP_DESC = " (rows aligned with /step)"
PROBE_DESC = " (rows aligned with /probe_step)"


def tensor_names(layers, qk_norm, mlp="gelu"):
    names = ["tok_embed"]
    for l in range(layers):
        b = f"blocks.{l}."
        names += [b + "ln1.gain", b + "attn.wq", b + "attn.wk", b + "attn.wv"]
        if qk_norm:
            names += [b + "attn.q_norm.gain", b + "attn.k_norm.gain"]
        names += [b + "attn.wo", b + "ln2.gain", b + "mlp.w1"]
        if mlp == "swiglu":
            names.append(b + "mlp.w3")
        names.append(b + "mlp.w2")
    return names + ["final_norm.gain", "head"]


def config_for(spec):
    """Flat typed config of a spec (bools as 0/1, like probes.h5's /config)."""
    c = {
        "model.dim": spec.get("dim", 32), "model.layers": spec.get("layers", 2),
        "model.heads": spec.get("heads", 2), "model.head_dim": 0,
        "model.seq_len": spec.get("seq_len", 16), "model.vocab": 256,
        "model.norm": "layernorm", "model.qk_norm": int(bool(spec.get("qk_norm", False))),
        "model.pos": "rope", "model.mlp": spec.get("mlp", "gelu"), "model.mlp_ratio": 4,
        "optim.name": "adamw", "optim.lr": float(spec.get("lr", 1e-2)),
        "optim.eps": float(spec.get("eps", 1e-8)), "optim.warmup_steps": 2,
        "train.steps": spec.get("steps", 40), "train.eval_every": spec.get("eval_every", 20),
        "train.seed": 1, "probes.every": spec.get("probe_every", 10),
        "probes.lr_probe_every": spec.get("lr_probe_every", 10),
        "probes.logit_threshold": 1e4,
    }
    c["model.head_dim"] = c["model.dim"] // c["model.heads"]
    return c


def config_ini(config, swept):
    out, section = ["; resolved canary config (fabricated by the analysis tests)", ""], None
    for key, value in config.items():
        sec, name = key.split(".", 1)
        if sec != section:
            out += ["", f"[{sec}]"]
            section = sec
        if key == "model.qk_norm":
            value = "true" if value else "false"
        text = f"{value:g}" if isinstance(value, float) else str(value)
        out.append(f"{name} = {text}" + ("  ; sweep" if key in swept else ""))
    return "\n".join(out) + "\n"


def _ds(f, name, data, desc=None):
    data = np.asarray(data, dtype=float)
    d = f.create_dataset(name, data=data, maxshape=(None,) + data.shape[1:], chunks=True)
    if desc:
        d.attrs["description"] = desc
    return d


def make_run(run_dir, spec, swept):
    """Writes one run directory. Spec keys (all optional): dim, layers, heads, seq_len, qk_norm,
    lr, eps, steps, eval_every, probe_every, lr_probe_every, l0, final (NaN allowed),
    nonfinite_at (step from which losses are NaN; the run stops there), logit (block-0 max
    logit: a number or f(step)), probes (False: no probes.h5), truncate (keep this many
    every-step rows; probe rows cut in proportion; with ``short_member`` one member shorter),
    events [(step, kind, detail)], files (False: no config.ini/metrics.tsv), garbage_probes,
    scales (False: no dimension scales, as canary wrote before them), tensor_shapes (write
    /tensors/kind and /tensors/shape: (kind, rows, cols) per tensor name)."""
    import h5py

    os.makedirs(run_dir, exist_ok=True)
    cfg = config_for(spec)
    steps = cfg["train.steps"]
    l0 = spec.get("l0", 5.5)
    final = spec.get("final", 3.0)
    stop = spec.get("nonfinite_at")
    last = stop if stop is not None else steps
    if spec.get("files", True):
        with open(os.path.join(run_dir, "config.ini"), "w") as f:
            f.write(config_ini(cfg, swept))
    eval_steps = [0] + [s for s in range(cfg["train.eval_every"], last + 1,
                                         cfg["train.eval_every"])]
    if eval_steps[-1] != last:
        eval_steps.append(last)

    def loss_at(s):
        if stop is not None and s >= stop:
            return math.nan
        if s == steps:
            return final
        end = final if math.isfinite(final) else l0
        return l0 + (end - l0) * s / steps

    if spec.get("truncate") is not None:  # a kill: evaluations after the cut were never made
        eval_steps = [s for s in eval_steps if s <= spec["truncate"]]
    eval_loss = [l0 if s == 0 else loss_at(s) for s in eval_steps]
    if spec.get("files", True):
        with open(os.path.join(run_dir, "metrics.tsv"), "w") as f:
            f.write("kind\tstep\tloss\tce\tz\tlr\tgrad_norm\tclip_factor\ttokens_per_s\n")
            for s, l in zip(eval_steps, eval_loss):
                f.write(f"eval\t{s}\t{l!r}\t{l!r}\t0\t\t\t\t\n")
    if spec.get("garbage_probes"):
        with open(os.path.join(run_dir, "probes.h5"), "wb") as f:
            f.write(b"this is not an HDF5 file" * 10)
        return cfg
    if not spec.get("probes", True):
        return cfg

    L, H = cfg["model.layers"], cfg["model.heads"]
    step = np.arange(1, last + 1, dtype=float)
    pstep = np.arange(cfg["probes.every"], last + 1, cfg["probes.every"], dtype=float)
    lrstep = np.arange(cfg["probes.lr_probe_every"], last + 1, cfg["probes.lr_probe_every"],
                       dtype=float) if cfg["probes.lr_probe_every"] else np.zeros(0)
    logit = spec.get("logit", lambda s: 5.0 + 100.0 * cfg["optim.lr"] * s)
    logit_fn = logit if callable(logit) else (lambda s, v=float(logit): v)
    attn = np.zeros((len(pstep), L, H))
    for i, s in enumerate(pstep):
        for l in range(L):
            attn[i, l, :] = logit_fn(s) * 0.5 ** l * np.linspace(1.0, 0.7, H)
    names = tensor_names(L, cfg["model.qk_norm"], cfg["model.mlp"])
    T = len(names)
    grad = np.tile(np.linspace(1e-3, 1e-4, T), (len(pstep), 1)) / (1 + 100 * cfg["optim.lr"])
    loss_total = np.array([loss_at(s) for s in step])
    trunc = spec.get("truncate")
    if trunc is not None:
        step, loss_total = step[:trunc], loss_total[:trunc]
        keep = int(len(pstep) * trunc / max(1, last))
        pstep, attn, grad = pstep[:keep], attn[:keep], grad[:keep]

    with h5py.File(os.path.join(run_dir, "probes.h5"), "w", libver="latest") as f:
        g = f.create_group("config")
        for k, v in cfg.items():
            g.attrs[k] = v
        g.attrs["ini"] = config_ini(cfg, swept)
        p = f.create_group("provenance")
        p.attrs["git_sha"] = "fabricated"
        p.attrs["world_size"] = 1
        n = len(step)
        short = spec.get("short_member") and trunc is not None
        _ds(f, "step", step, "training step of each row")
        _ds(f, "loss/total", loss_total, "training loss" + STEP_DESC)
        _ds(f, "loss/ce", loss_total, "ce" + STEP_DESC)
        _ds(f, "loss/z", np.zeros(n), "z" + STEP_DESC)
        _ds(f, "lr", np.full(n, cfg["optim.lr"]), "lr" + STEP_DESC)
        _ds(f, "grad/global_norm", np.ones(n), "norm" + STEP_DESC)
        _ds(f, "grad/clip_factor", np.ones(n), "clip" + STEP_DESC)
        _ds(f, "tokens_per_s", np.full(n, 1e4), "tps" + STEP_DESC)
        logz = -0.01 * step * cfg["optim.lr"] * 100
        _ds(f, "output/logz_mean", logz[:-2] if short else logz, "log Z" + STEP_DESC)
        _ds(f, "output/logz_std", np.ones(n), "std" + STEP_DESC)
        _ds(f, "output/logz_max", np.ones(n), "max" + STEP_DESC)
        _ds(f, "output/logit_rms", np.ones(n), "rms" + STEP_DESC)
        _ds(f, "probe_step", pstep, "probe rows")
        _ds(f, "attn/max_logit", attn, "[layer, head] max logit" + PROBE_DESC)
        _ds(f, "attn/entropy", np.full(attn.shape, 1.5) + 0.1 * np.arange(H),
            "[layer, head] entropy" + PROBE_DESC)
        _ds(f, "attn/q_rms", np.ones(attn.shape), "q" + PROBE_DESC)
        _ds(f, "attn/k_rms", np.ones(attn.shape), "k" + PROBE_DESC)
        _ds(f, "resid/rms", np.ones((len(pstep), L)), "[layer] resid" + PROBE_DESC)
        for name in ("grad/rms", "param/rms", "update/rms", "adam/sqrt_v_rms", "adam/eps_frac"):
            _ds(f, name, grad, "[tensor] " + name + PROBE_DESC)
        f.create_dataset("tensors/names", data=np.array(names, dtype=object),
                         dtype=h5py.string_dtype())
        _ds(f, "eval/step", np.array(eval_steps, dtype=float), "eval steps")
        _ds(f, "eval/loss", np.array(eval_loss, dtype=float), "eval loss; step 0 is l0")
        lp = np.stack([np.full(len(lrstep), 3.0), np.full(len(lrstep), 2.9),
                       np.full(len(lrstep), 2.85), np.full(len(lrstep), 2.95)], axis=1) \
            if len(lrstep) else np.zeros((0, 4))
        _ds(f, "lr_probe/step", lrstep, "lr probe steps")
        _ds(f, "lr_probe/loss", lp, "[f] loss at f = 0, 1/2, 1, 2")
        events = list(spec.get("events", []))
        if stop is not None:
            events.append((stop, "non-finite", f"loss is NaN at step {stop}"))
        sdt = h5py.string_dtype()
        f.create_dataset("events/step", data=np.array([e[0] for e in events], dtype=float),
                         maxshape=(None,))
        f.create_dataset("events/kind", data=np.array([e[1] for e in events], dtype=object),
                         dtype=sdt, maxshape=(None,))
        f.create_dataset("events/detail", data=np.array([e[2] for e in events], dtype=object),
                         dtype=sdt, maxshape=(None,))
        if spec.get("tensor_shapes"):
            table = spec["tensor_shapes"]
            f.create_dataset("tensors/kind", data=np.array([table[n][0] for n in names],
                                                           dtype=object), dtype=sdt)
            f.create_dataset("tensors/shape", data=np.array([table[n][1:] for n in names],
                                                            dtype=np.int32))
        if spec.get("scales", True):
            _attach_scales(f, L, H)
    return cfg


def _attach_scales(f, layers, heads):
    """Dimension scales as canary's writer makes them: the row axes, then layer, head,
    lr_factor and tensor."""
    f.create_dataset("axes/layer", data=np.arange(layers, dtype=np.int32))
    f.create_dataset("axes/head", data=np.arange(heads, dtype=np.int32))
    f.create_dataset("axes/lr_factor", data=np.array([0, 0.5, 1, 2], dtype=np.float32))
    for name in ("step", "probe_step", "eval/step", "lr_probe/step", "events/step",
                 "axes/layer", "axes/head", "axes/lr_factor", "tensors/names"):
        f[name].make_scale(name)
    rows = {"eval/": "eval/step", "lr_probe/": "lr_probe/step", "events/": "events/step"}
    for name, d in list(_datasets(f)):
        if d.attrs.get("CLASS") == b"DIMENSION_SCALE" or name.startswith(("tensors/", "axes/")):
            continue
        first = next((v for k, v in rows.items() if name.startswith(k)),
                     "probe_step" if "probe_step" in d.attrs.get("description", "") else "step")
        d.dims[0].attach_scale(f[first])
        if d.ndim == 3:
            d.dims[1].attach_scale(f["axes/layer"])
            d.dims[2].attach_scale(f["axes/head"])
        elif d.ndim == 2 and name == "resid/rms":
            d.dims[1].attach_scale(f["axes/layer"])
        elif d.ndim == 2 and name == "lr_probe/loss":
            d.dims[1].attach_scale(f["axes/lr_factor"])
        elif d.ndim == 2:
            d.dims[1].attach_scale(f["tensors/names"])


def _datasets(f):
    import h5py
    out = []
    f.visititems(lambda n, o: out.append((n, o)) if isinstance(o, h5py.Dataset) else None)
    return out


def write_index(path, keys, rows):
    """rows: (id, {key: text}, status, steps, l0, final)."""
    with open(path, "w") as f:
        f.write("\t".join(["id", *keys, "status", "steps", "l0", "final_eval_loss"]) + "\n")
        for rid, values, status, steps, l0, final in rows:
            f.write("\t".join([rid, *[values[k] for k in keys], status, str(steps),
                               f"{l0:.9g}", f"{final:.9g}"]) + "\n")


def fabricate_sweep(root, specs, keys=("model.qk_norm", "optim.lr"), index=True):
    """Writes a sweep under ``root`` (see the module docstring); returns its path.
    Each spec needs 'id' and 'values' ({key: text}); 'status' (default: diverged when the
    final loss is non-finite or above l0, else ok), 'in_index' (default True), 'dir' (default
    True: write the run directory), plus ``make_run``'s keys."""
    os.makedirs(root, exist_ok=True)
    rows = []
    for spec in specs:
        spec = dict(spec)
        for k, text in spec["values"].items():
            if k == "optim.lr":
                spec.setdefault("lr", float(text))
            elif k == "model.qk_norm":
                spec.setdefault("qk_norm", text == "true")
            elif k == "model.dim":
                spec.setdefault("dim", int(text))
            elif k == "model.layers":
                spec.setdefault("layers", int(text))
        if spec.get("dir", True):
            make_run(os.path.join(root, spec["id"]), spec, keys)
        l0, final = spec.get("l0", 5.5), spec.get("final", 3.0)
        if spec.get("nonfinite_at") is not None:
            final = math.nan
        status = spec.get("status") or ("ok" if final <= l0 else "diverged")
        steps = spec.get("nonfinite_at") or spec.get("steps", 40)
        if status == "failed":
            steps, l0, final = 0, math.nan, math.nan
        if spec.get("in_index", True):
            rows.append((spec["id"], spec["values"], status, steps, l0, final))
    if index:
        write_index(os.path.join(root, "index.tsv"), list(keys), rows)
    return str(root)


def lr_specs(lrs, qk=("true", "false"), **kw):
    """Specs for a qk_norm x lr grid with ids like canary's."""
    specs, i = [], 0
    for q in qk:
        for lr in lrs:
            specs.append(dict(id=f"{i:03d}_qk_norm-{q}_lr-{lr}",
                              values={"model.qk_norm": q, "optim.lr": lr}, **kw))
            i += 1
    return specs



def sweep_maker(tmp_path):
    """maker(specs, keys=..., index=True, name=None) -> path of a new sweep under tmp_path."""
    counter = [0]

    def make(specs, keys=("model.qk_norm", "optim.lr"), index=True, name=None):
        counter[0] += 1
        return fabricate_sweep(tmp_path / (name or f"sweep{counter[0]}"), specs, keys, index)

    return make
