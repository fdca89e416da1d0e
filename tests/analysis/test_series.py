"""Single values out of probe series: no row from after the step asked for; MoE blocks' expert
matrices pooled where a dense block has one matrix."""
import math
from types import SimpleNamespace

import numpy as np

from analysis.series import block_tensor_rms, value_at_step


def test_value_at_step_never_uses_a_later_row():
    steps, vals = [10, 20, 30], [1.0, 2.0, 3.0]
    assert value_at_step(steps, vals, 25) == (2.0, 20.0, True)
    assert value_at_step(steps, vals, 40) == (3.0, 30.0, False)  # stopped early: its last row
    v, s, reached = value_at_step(steps, vals, 5)  # every row comes after step 5
    assert math.isnan(v) and math.isnan(s) and reached
    v, s, _ = value_at_step([10, 20], [math.nan, 2.0], 15)  # the only row before is NaN
    assert math.isnan(v) and math.isnan(s)


def _run(names, series):
    return SimpleNamespace(tensor_names=names, series=series, has=lambda k: k in series)


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


def test_rows_follow_the_dimension_scale_not_the_description(tmp_path):
    """probes.h5 names each series' row axis with an HDF5 dimension scale; the reader follows it
    (a description saying otherwise does not matter), and falls back to the description for
    files written before the scales."""
    import h5py

    from analysis.readers import _family

    with h5py.File(tmp_path / "p.h5", "w") as f:
        f["step"] = np.arange(1, 5, dtype=float)
        f["probe_step"] = np.array([2.0, 4.0])
        f["step"].make_scale("step")
        f["probe_step"].make_scale("probe_step")
        f["x"] = np.zeros(2)
        f["x"].attrs["description"] = "something (rows aligned with /step)"
        f["x"].dims[0].attach_scale(f["probe_step"])
        f["old"] = np.zeros(4)
        f["old"].attrs["description"] = "something (rows aligned with /step)"
        assert _family("x", f["x"]) == "probe_step"
        assert _family("old", f["old"]) == "step"
        assert _family("step", f["step"]) == "step"


def test_parameter_count_from_the_tensor_table():
    """MoE and MLA counted exactly from /tensors: hidden matrices, routers and every expert;
    not embeddings, the head or gains. Without a table: None (the config formula is used)."""
    from analysis.params import table_params

    kinds = ["embedding", "matrix", "gain", "router", "expert", "expert", "head"]
    shapes = [(256, 16), (48, 16), (1, 16), (4, 16), (64, 16), (16, 64), (256, 16)]
    assert table_params(kinds, shapes) == 48 * 16 + 4 * 16 + 64 * 16 + 16 * 64
    assert table_params([], []) is None
