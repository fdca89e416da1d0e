"""One run's probes.h5 as an xarray Dataset, with its axes named by the file's HDF5 dimension
scales.

Contract of ``read_probes(path)`` -> ``(Dataset, problems, partial)``:

- Every series of probes.h5 becomes a data variable named by its path ("loss/total",
  "attn/max_logit", "grad/rms", "eval/loss", "lr_probe/loss", "events/kind", ...), with the
  dimensions the file attaches to it as dimension scales (DESIGN.md §7). The scales become
  coordinates; their dimension names are those of ``DIMS`` (/step -> ``step``, /probe_step ->
  ``probe_step``, /eval/step -> ``eval_step``, /lr_probe/step -> ``lr_probe_step``,
  /tensors/names -> ``tensor``, /axes/<x> -> ``<x>``: layer, head, expert, lr_factor).
- The events are one row per event, so two events at one step can coexist: dimension ``event``
  (0, 1, ...) with the variables events/step, events/kind and events/detail.
- /tensors/kind, /tensors/optimizer, /tensors/lr_scale and /tensors/shape become coordinates on
  ``tensor`` (``tensor_kind``, ``tensor_optimizer``, ``tensor_lr_scale``, ``tensor_rows``,
  ``tensor_cols``).
- ``attrs``: ``config`` (the typed /config attributes, without ``ini``), ``ini`` (the resolved
  config.ini text stored there, '' if none), ``provenance`` (dict), and per variable its
  ``description``.
- A file written by a canary without dimension scales has no reliable axes: its series are
  left out, and ``problems`` says so; /config and /provenance are still read.
- A reader of a live or killed run can find an axis longer or shorter than its series: each
  axis and the series along it are cut to the shortest (``partial``, a problem that says so).
- Values are float64 (int and bool too); strings stay Python ``str`` objects.
- Raises ``OSError`` when the file cannot be opened as HDF5 at all.
"""

import numpy as np
import xarray as xr

# Dimension scale (path in probes.h5) -> dimension name.
DIMS = {
    "step": "step",
    "probe_step": "probe_step",
    "eval/step": "eval_step",
    "lr_probe/step": "lr_probe_step",
    "events/step": "event",
    "tensors/names": "tensor",
}
TENSOR_META = {"tensors/kind": "tensor_kind", "tensors/optimizer": "tensor_optimizer",
               "tensors/lr_scale": "tensor_lr_scale"}


def dim_name(scale_path):
    """The dimension name of a dimension scale: DIMS, else /axes/<x> -> x, else a/b -> a_b."""
    p = scale_path.lstrip("/")
    if p in DIMS:
        return DIMS[p]
    if p.startswith("axes/"):
        return p[len("axes/"):]
    return p.replace("/", "_")


def open_probes(path):
    """Opens probes.h5 for reading: SWMR first (a live or killed writer), then plain."""
    import h5py
    try:
        return h5py.File(path, "r", swmr=True)
    except OSError:
        return h5py.File(path, "r")


def _attrs(group):
    out = {}
    for k, v in group.attrs.items():
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        elif isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out


def _values(dset, keep_int=False):
    """Dataset contents: float64 for numbers (int64 kept with keep_int), an object array of str
    for strings, else None."""
    import h5py
    if h5py.check_string_dtype(dset.dtype) is not None:
        return np.array(list(dset.asstr()[()]), dtype=object).reshape(dset.shape)
    data = np.asarray(dset[()])
    if data.dtype.kind not in "fiub":
        return None
    if keep_int and data.dtype.kind in "iu":
        return data.astype(np.int64)
    return data.astype(np.float64)


def _is_scale(dset):
    cls = dset.attrs.get("CLASS")
    return cls in (b"DIMENSION_SCALE", "DIMENSION_SCALE")


def _axes_of(dset):
    """Scale paths attached to each axis of ``dset`` (None for an axis without one)."""
    out = []
    for i in range(dset.ndim):
        names = [scale.name.lstrip("/") for _, scale in dset.dims[i].items()]
        out.append(names[0] if names else None)
    return out


def _short_error(e):
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:160]


def read_probes(path):
    """probes.h5 -> (xarray Dataset, problems, partial); see the module docstring."""
    import h5py
    problems, partial = [], False
    with open_probes(path) as f:
        config = _attrs(f["config"]) if "config" in f else {}
        ini = str(config.pop("ini", ""))
        provenance = _attrs(f["provenance"]) if "provenance" in f else {}
        found = {}
        f.visititems(lambda name, obj: found.__setitem__(name, obj)
                     if isinstance(obj, h5py.Dataset) else None)
        scales, series, meta = {}, {}, {}
        for name, dset in found.items():
            try:
                if _is_scale(dset):  # layer and head numbers stay integers
                    values = _values(dset, keep_int=name.startswith("axes/"))
                    if values is not None:
                        scales[name] = values
                elif name in TENSOR_META or name == "tensors/shape":
                    meta[name] = _values(dset)
                elif not name.startswith(("config", "provenance")):
                    axes = _axes_of(dset) if dset.ndim else []
                    values = _values(dset)
                    if values is not None:
                        desc = dset.attrs.get("description", "")
                        if isinstance(desc, bytes):
                            desc = desc.decode("utf-8", "replace")
                        series[name] = (axes, values, str(desc))
            except (OSError, ValueError, TypeError, KeyError, RuntimeError) as e:
                problems.append(f"probes.h5: {name} unreadable ({_short_error(e)})")
    if not scales and series:
        problems.append("probes.h5 has no dimension scales (written by an older canary): its "
                        "probe series are left out")
        return xr.Dataset(attrs=dict(config=config, ini=ini, provenance=provenance)), \
            problems, True

    # Rows per axis: the shortest of the scale and every series along it (a live or killed
    # writer extends them one by one).
    lengths = {s: len(v) for s, v in scales.items()}
    for name, (axes, values, _) in series.items():
        for i, a in enumerate(axes):
            if a in lengths:
                lengths[a] = min(lengths[a], values.shape[i])
    cut = set()
    for s, v in scales.items():
        longest = max([len(v)] + [vals.shape[axes.index(s)] for axes, vals, _ in series.values()
                                  if s in axes])
        if longest != lengths[s]:
            problems.append(f"rows along /{s}: {lengths[s]} complete of up to {longest} "
                            f"(truncated series)")
            partial = True
            cut.add(s)

    coords = {}
    for s, v in scales.items():
        d = dim_name(s)
        v = v[:lengths[s]]
        if d == "event":  # events may share a step: the dimension counts events
            coords["event"] = np.arange(len(v))
            series.setdefault("events/step", (["events/step"], v, "step of each event"))
        else:
            coords[d] = v
    data_vars = {}
    for name, (axes, values, desc) in series.items():
        if any(a is None or a not in scales for a in axes):
            problems.append(f"probes.h5: {name} has an axis without a dimension scale; left out")
            continue
        index = tuple(slice(0, lengths[a]) for a in axes)
        data_vars[name] = xr.Variable([dim_name(a) for a in axes], values[index],
                                      attrs={"description": desc})
    if "tensor" in coords:
        n = len(coords["tensor"])
        for path, coord in TENSOR_META.items():
            if meta.get(path) is not None and len(meta[path]) == n:
                coords[coord] = ("tensor", meta[path])
        shape = meta.get("tensors/shape")
        if shape is not None and shape.ndim == 2 and shape.shape == (n, 2):
            coords["tensor_rows"] = ("tensor", shape[:, 0].astype(np.int64))
            coords["tensor_cols"] = ("tensor", shape[:, 1].astype(np.int64))
    ds = xr.Dataset(data_vars, coords=coords,
                    attrs=dict(config=config, ini=ini, provenance=provenance))
    return ds, problems, partial
