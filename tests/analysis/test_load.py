"""Loading sweeps: complete runs, and every kind of partial or crashed run."""

import math
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from fabricate import lr_specs, sweep_maker

from canary_analysis import AnalysisError
from canary_analysis.load import load_sweep


def _by_id(sweep):
    return {r.id: r for r in sweep.runs}


def test_complete_run(tmp_path):
    fabricate = sweep_maker(tmp_path)
    specs = lr_specs(["1e-3", "1e-2"], qk=("true",), l0=5.5, final=3.25,
                     events=[(20, "threshold", "max attention logit 2e4 in layer 0 head 1")])
    sweep = load_sweep(fabricate(specs))
    assert sweep.swept_keys == ["model.qk_norm", "optim.lr"]
    r = sweep.runs[0]
    assert (r.status, r.in_index, r.partial, r.crashed, r.diverged) == ("ok", True, False,
                                                                        False, False)
    assert r.problems == []
    assert r.swept == {"model.qk_norm": True, "optim.lr": 1e-3}
    assert r.swept_text == {"model.qk_norm": "true", "optim.lr": "1e-3"}
    assert r.lr == 1e-3 and r.l0 == 5.5 and r.final_loss == 3.25 and r.steps == 40
    assert r.config["model.dim"] == 32 and r.config["model.qk_norm"] == 1
    assert r.params == 2 * (4 * 32 * 32 + 2 * 32 * 128)
    assert r.ds.sizes["step"] == 40 and r.ds["loss/total"].dims == ("step",)
    assert r.ds["attn/max_logit"].dims == ("probe_step", "layer", "head")
    assert r.ds["attn/max_logit"].shape == (4, 2, 2)
    assert r.ds["grad/rms"].dims == ("probe_step", "tensor")
    assert r.ds["grad/rms"].shape == (4, len(r.tensor_names))
    assert "blocks.1.mlp.w1" in r.tensor_names
    assert r.ds["lr_probe/loss"].dims == ("lr_probe_step", "lr_factor")
    assert list(r.ds["lr_factor"].values) == [0, 0.5, 1, 2]
    assert r.events == [(20.0, "threshold", "max attention logit 2e4 in layer 0 head 1")]


def test_run_missing_from_index_is_crashed_and_partial(tmp_path):
    fabricate = sweep_maker(tmp_path)
    specs = lr_specs(["1e-3", "1e-1"], qk=("false",))
    specs[1].update(in_index=False, truncate=25)
    r = _by_id(load_sweep(fabricate(specs)))[specs[1]["id"]]
    assert not r.in_index and r.crashed and r.partial and r.status == "crashed"
    assert math.isnan(r.final_loss) and r.l0 == 5.5 and not r.diverged
    # swept values come from config.ini's '; sweep' keys ("0.1" there, "1e-1" in the index)
    assert r.swept == {"model.qk_norm": False, "optim.lr": pytest.approx(0.1)}
    assert any("not in index" in p for p in r.problems)
    assert r.ds.sizes["step"] == 25


def test_finished_run_missing_from_index_gets_inferred_status(tmp_path):
    fabricate = sweep_maker(tmp_path)
    specs = lr_specs(["1e-3", "1e-2", "1e-1"], qk=("false",))
    specs[1].update(in_index=False)                       # finished, below l0
    specs[2].update(in_index=False, nonfinite_at=12)      # went NaN
    runs = _by_id(load_sweep(fabricate(specs)))
    ok, nan = runs[specs[1]["id"]], runs[specs[2]["id"]]
    assert ok.status == "ok" and not ok.crashed and ok.final_loss == 3.0 and ok.partial
    assert nan.status == "diverged" and nan.diverged


def test_missing_probes(tmp_path):
    fabricate = sweep_maker(tmp_path)
    specs = lr_specs(["1e-3", "1e-2"], qk=("true",))
    specs[0]["probes"] = False
    specs[1].update(probes=False, files=False)            # nothing but the directory
    os_dir_only = specs[1]["id"]
    path = fabricate(specs)
    os.makedirs(os.path.join(path, os_dir_only), exist_ok=True)
    runs = _by_id(load_sweep(path))
    a, b = runs[specs[0]["id"]], runs[os_dir_only]
    for r in (a, b):
        assert r.partial and not r.crashed and r.status == "ok"
        assert "probes.h5 missing" in r.problems
        assert r.l0 == 5.5 and r.final_loss == 3.0       # metrics.tsv / the index
        assert not r.has("attn/max_logit")
    assert a.has("eval/loss")                           # fallback to metrics.tsv
    assert a.config["model.dim"] == 32 and a.params is not None
    assert b.params is None


def test_truncated_series_are_trimmed(tmp_path):
    fabricate = sweep_maker(tmp_path)
    specs = lr_specs(["1e-3"], qk=("true",), truncate=30, short_member=True)
    (r,) = load_sweep(fabricate(specs)).runs
    assert r.partial and r.status == "ok"  # the index row exists; the data is short
    assert r.ds.sizes["step"] == len(r.ds["loss/total"]) == 28
    assert len(r.ds["output/logz_mean"]) == 28
    assert r.ds.sizes["probe_step"] == len(r.ds["attn/max_logit"]) == 3
    assert any("truncated" in p for p in r.problems)


def test_failed_and_nan_index_rows(tmp_path):
    fabricate = sweep_maker(tmp_path)
    specs = lr_specs(["1e-3", "1e-2"], qk=("true",))
    specs[1].update(status="failed", dir=False)
    path = fabricate(specs)
    with open(os.path.join(path, "index.tsv"), "a") as f:
        f.write("zz_extra\tfalse\t1e-1\tfailed\t0\t-nan\tnan\n")
    runs = _by_id(load_sweep(path))
    for rid in (specs[1]["id"], "zz_extra"):
        r = runs[rid]
        assert r.crashed and r.partial and r.status == "failed"
        assert math.isnan(r.l0) and math.isnan(r.final_loss)
        assert "run directory missing" in r.problems


def test_unreadable_probes(tmp_path):
    fabricate = sweep_maker(tmp_path)
    specs = lr_specs(["1e-3"], qk=("true",), garbage_probes=True)
    (r,) = load_sweep(fabricate(specs)).runs
    assert r.partial and any("unreadable" in p for p in r.problems)
    assert r.l0 == 5.5 and r.config["model.dim"] == 32  # config.ini and metrics.tsv


WRITER = r"""
import os, sys
import h5py, numpy as np
f = h5py.File(sys.argv[1], "a", libver="latest")
f.swmr_mode = True
d = f["step"]
d.resize((d.shape[0] + 10,))
d[-10:] = np.arange(d.shape[0] - 9, d.shape[0] + 1)
d.flush()
os._exit(0)  # killed: the file stays marked as open for SWMR writing
"""


def test_killed_swmr_writer(tmp_path):
    fabricate = sweep_maker(tmp_path)
    specs = lr_specs(["1e-3"], qk=("true",))
    specs[0]["in_index"] = False
    path = fabricate(specs)
    h5 = os.path.join(path, specs[0]["id"], "probes.h5")
    subprocess.run([sys.executable, "-c", WRITER, h5], check=True, timeout=60)
    with pytest.raises(OSError):
        h5py.File(h5, "r")  # a plain open is refused
    (r,) = load_sweep(path).runs
    assert r.has("step") and r.ds.sizes["step"] == len(r.ds["loss/total"]) == 40
    assert any("truncated" in p for p in r.problems) and r.partial


def test_no_index_uses_sweep_marks(tmp_path):
    fabricate = sweep_maker(tmp_path)
    path = fabricate(lr_specs(["1e-3", "1e-2"]), index=False)
    sweep = load_sweep(path)
    assert sweep.swept_keys == ["model.qk_norm", "optim.lr"]
    assert len(sweep.runs) == 4 and all(not r.in_index for r in sweep.runs)
    assert {r.status for r in sweep.runs} == {"ok"}


def test_bad_paths(tmp_path):
    with pytest.raises(AnalysisError, match="no such directory"):
        load_sweep(tmp_path / "nope")
    with pytest.raises(AnalysisError, match="is not a sweep"):
        load_sweep(tmp_path)
    (tmp_path / "index.tsv").write_text("id\toptim.lr\tstatus\tsteps\tl0\tfinal_eval_loss\n")
    with pytest.raises(AnalysisError, match="empty sweep"):
        load_sweep(tmp_path)
    (tmp_path / "index.tsv").write_text("hello\tworld\n")
    with pytest.raises(AnalysisError, match="not a canary sweep index"):
        load_sweep(tmp_path)
    plain = tmp_path / "plain"
    (plain / "run1").mkdir(parents=True)
    (plain / "run1" / "config.ini").write_text("[optim]\nlr = 0.1\n")
    with pytest.raises(AnalysisError, match="is not a sweep"):
        load_sweep(plain)


def test_malformed_index_row_is_skipped(tmp_path):
    fabricate = sweep_maker(tmp_path)
    path = fabricate(lr_specs(["1e-3", "1e-2"], qk=("true",)))
    with open(os.path.join(path, "index.tsv"), "a") as f:
        f.write("broken\ttrue\n")
    sweep = load_sweep(path)
    assert any("skipped" in n for n in sweep.notes)
    assert "broken" not in {r.id for r in sweep.runs}
    assert np.all([r.status == "ok" for r in sweep.runs])


def test_metrics_lines_cut_by_a_kill_are_dropped(tmp_path):
    """A write cut short (no newline, or fields missing) is not a loss: 3.9 could be 3.95."""
    from canary_analysis.readers import read_metrics
    path = tmp_path / "metrics.tsv"
    path.write_text("kind\tstep\tloss\tce\neval\t0\t5\t5\ntrain\t1\t4.5\t4.5\ntrain\t2\t4.2\n"
                    "train\t3\t3.9")
    ev_s, ev_l, tr_s, tr_l = read_metrics(path)
    assert list(ev_s) == [0] and list(ev_l) == [5]
    assert list(tr_s) == [1] and list(tr_l) == [4.5]  # step 2 lacks a field, step 3 a newline
