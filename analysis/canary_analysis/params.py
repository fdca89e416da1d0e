"""Non-embedding parameter count of a canary model (Kaplan / Wortsman convention).

``table_params(ds, config)`` counts it exactly from probes.h5's /tensors table (total and, for
MoE, active per token); runs loaded from files without one fall back to the config formula
below (dense MHA shapes only).

Contract: ``non_embedding_params(config)`` takes a flat dict of resolved config keys
("model.dim", "model.layers", ...; values may be numbers or strings) and returns the number of
entries in the attention and MLP matrices of all blocks, or None when a needed key is missing.
Embedding, positional table, LM head and the O(d) norm gains (including the qk-norm gains) are
excluded, so qk-norm on/off runs of one shape have the same count. Per block (see model/model.c):
wq, wk, wv ([inner, d]) and wo ([d, inner]) give 4*d*inner, inner = heads * head_dim
(head_dim 0 means dim / heads); the MLP has w1, w2 (and w3 for SwiGLU) of d*F, F = mlp_ratio*d.
"""

# The tensor kinds (probes.h5 /tensors/kind) that count: the blocks' 2-D matrices.
HIDDEN_KINDS = ("matrix", "expert", "router")


def table_params(ds, config=None):
    """(total, active) non-embedding counts from a run Dataset's tensor table (the
    tensor_kind, tensor_rows and tensor_cols coordinates of probes.h5's /tensors): rows·cols
    summed over the attention, MLP, MLA, router and expert matrices. ``active`` counts the
    routed experts (blocks.<l>.mlp.experts.<e>.*) at top_k / experts, what one token runs
    through; shared experts count whole. None without a table."""
    if not all(c in ds.coords for c in ("tensor_kind", "tensor_rows", "tensor_cols")):
        return None
    config = config or {}
    experts = _int(config, "model.experts", 0) or 0
    top_k = _int(config, "model.top_k", 0) or 0
    total = active = 0.0
    for name, kind, rows, cols in zip(ds["tensor"].values, ds["tensor_kind"].values,
                                      ds["tensor_rows"].values, ds["tensor_cols"].values):
        if kind not in HIDDEN_KINDS:
            continue
        n = int(rows) * int(cols)
        total += n
        routed = ".mlp.experts." in str(name) and experts > 0
        active += n * min(top_k, experts) / experts if routed else n
    return int(total), int(round(active))


# Swept keys that change the model's size; the early warning fits across them.
SIZE_KEYS = ("model.dim", "model.layers", "model.heads", "model.head_dim", "model.mlp_ratio",
             "model.mlp")


def _int(config, key, default=None):
    value = config.get(key, default)
    if value is None:
        return None
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def non_embedding_params(config):
    """Attention + MLP matrix entries over all blocks, or None if the config lacks the shape."""
    dim = _int(config, "model.dim")
    layers = _int(config, "model.layers")
    heads = _int(config, "model.heads")
    if not dim or not layers or not heads:
        return None
    head_dim = _int(config, "model.head_dim", 0) or dim // heads
    ratio = _int(config, "model.mlp_ratio", 4)
    if ratio is None:
        return None
    mlp = str(config.get("model.mlp", "gelu")).strip().lower()
    inner = heads * head_dim
    ffn = ratio * dim
    per_block = 4 * dim * inner + (3 if mlp == "swiglu" else 2) * dim * ffn
    return layers * per_block


def size_label(config, params=None, active=None):
    """Short description of the model shape, e.g. 'd=64 L=2 (98k params)', or with MoE
    'd=64 L=2 (1.2M params, 410k active)'. ``params`` / ``active``: the run's exact counts
    (default: the config formula)."""
    n = non_embedding_params(config) if params is None else params
    parts = []
    for key, short in (("model.dim", "d"), ("model.layers", "L"), ("model.heads", "H")):
        if key in config:
            parts.append(f"{short}={_int(config, key)}")
    text = " ".join(parts) if parts else "unknown size"
    if n is not None:
        more = f", {human_count(active)} active" if active is not None and active != n else ""
        text += f" ({human_count(n)} params{more})"
    return text


def human_count(n):
    """12345678 -> '12.3M'."""
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g}{suffix}"
    return str(int(n))
