"""Single values out of probe series: no row from after the step asked for; MoE blocks' expert
matrices pooled where a dense block has one matrix."""
import math
from types import SimpleNamespace

import numpy as np
import xarray as xr

from canary_analysis.series import block_tensor_rms, value_at_step


def test_value_at_step_never_uses_a_later_row():
    steps, vals = [10, 20, 30], [1.0, 2.0, 3.0]
    assert value_at_step(steps, vals, 25) == (2.0, 20.0, True)
    assert value_at_step(steps, vals, 40) == (3.0, 30.0, False)  # stopped early: its last row
    v, s, reached = value_at_step(steps, vals, 5)  # every row comes after step 5
    assert math.isnan(v) and math.isnan(s) and reached
    v, s, _ = value_at_step([10, 20], [math.nan, 2.0], 15)  # the only row before is NaN
    assert math.isnan(v) and math.isnan(s)


def _run(names, series):
    ds = xr.Dataset({k: (("probe_step", "tensor"), v) for k, v in series.items()},
                    coords={"tensor": names})
    return SimpleNamespace(tensor_names=names, ds=ds, has=lambda k: k in series)


def test_block_tensor_rms_pools_experts():
    names = ["tok_embed", "blocks.0.mlp.w1", "blocks.1.mlp.router",
             "blocks.1.mlp.experts.0.w1", "blocks.1.mlp.experts.0.w2",
             "blocks.1.mlp.experts.1.w1", "blocks.1.mlp.shared.0.w1", "head"]
    g = np.array([[9.0, 1.0, 9.0, 3.0, 9.0, 4.0, 9.0, 9.0],
                  [9.0, 2.0, 9.0, 0.0, 9.0, 0.0, 9.0, 9.0]])
    out = block_tensor_rms(_run(names, {"grad/rms": g}), "grad/rms", "mlp.w1")
    assert sorted(out) == [0, 1]
    assert np.array_equal(out[0], [1.0, 2.0])  # the dense block's own matrix
    # routed experts only (not the shared one, not w2): sqrt((3² + 4²) / 2)
    assert np.allclose(out[1], [math.sqrt(12.5), 0.0])
    assert block_tensor_rms(_run(names, {}), "grad/rms", "mlp.w1") == {}


def test_axes_follow_the_dimension_scales_not_the_description(tmp_path):
    """probes.h5 names each series' axes with HDF5 dimension scales; the reader follows them (a
    description saying otherwise does not matter). A file without scales (an older canary) has
    its series left out, with a problem that says why."""
    import h5py

    from canary_analysis.dataset import read_probes

    with h5py.File(tmp_path / "p.h5", "w") as f:
        f["step"] = np.arange(1, 5, dtype=float)
        f["probe_step"] = np.array([2.0, 4.0])
        f["axes/layer"] = np.arange(3, dtype=np.int32)
        for name in ("step", "probe_step", "axes/layer"):
            f[name].make_scale(name)
        f["x"] = np.zeros((2, 3))
        f["x"].attrs["description"] = "something (rows aligned with /step)"
        f["x"].dims[0].attach_scale(f["probe_step"])
        f["x"].dims[1].attach_scale(f["axes/layer"])
        f["y"] = np.ones(4)
        f["y"].dims[0].attach_scale(f["step"])
    ds, problems, partial = read_probes(tmp_path / "p.h5")
    assert ds["x"].dims == ("probe_step", "layer") and ds["y"].dims == ("step",)
    assert list(ds["layer"].values) == [0, 1, 2] and list(ds["probe_step"].values) == [2, 4]
    assert problems == [] and not partial

    with h5py.File(tmp_path / "old.h5", "w") as f:
        f["step"] = np.arange(1, 5, dtype=float)
        f["old"] = np.zeros(4)
        f["old"].attrs["description"] = "something (rows aligned with /step)"
    ds, problems, partial = read_probes(tmp_path / "old.h5")
    assert "old" not in ds and partial
    assert any("no dimension scales" in p for p in problems)


def test_parameter_count_from_the_tensor_table():
    """MoE and MLA counted exactly from /tensors: hidden matrices, routers and every expert;
    not embeddings, the head or gains. Active: the routed experts at top_k / experts. Without
    a table: None (the config formula is used)."""
    from canary_analysis.params import table_params

    names = ["tok_embed", "blocks.0.attn.wq", "blocks.0.ln1.gain", "blocks.0.mlp.router",
             "blocks.0.mlp.experts.0.w1", "blocks.0.mlp.experts.1.w1",
             "blocks.0.mlp.shared.0.w1", "head"]
    kinds = ["embedding", "matrix", "gain", "router", "expert", "expert", "expert", "head"]
    shapes = [(256, 16), (48, 16), (1, 16), (2, 16), (64, 16), (64, 16), (32, 16), (256, 16)]
    ds = xr.Dataset(coords={"tensor": names, "tensor_kind": ("tensor", kinds),
                            "tensor_rows": ("tensor", [r for r, _ in shapes]),
                            "tensor_cols": ("tensor", [c for _, c in shapes])})
    config = {"model.experts": 2, "model.top_k": 1}
    total, active = table_params(ds, config)
    assert total == (48 + 2 + 64 + 64 + 32) * 16
    assert active == (48 + 2 + 64 + 32) * 16  # one of the two routed experts
    assert table_params(xr.Dataset(coords={"tensor": names}), config) is None
