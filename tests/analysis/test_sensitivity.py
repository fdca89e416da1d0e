"""Wortsman LR sensitivity: hand-computed values, divergence and NaN handling, bad ranges."""

import math

import pytest
from fabricate import lr_specs, sweep_maker

from canary_analysis import AnalysisError, SensitivityUnavailable
from canary_analysis.load import load_sweep
from canary_analysis.sensitivity import capped_loss, lr_grid, lr_sensitivity, sensitivity_value

GRID = ["3e-4", "1e-3", "3e-3", "1e-2", "3e-2", "1e-1", "3e-1"]
L0 = 6.0


def test_capped_loss():
    assert capped_loss(2.0, 6.0, False) == 2.0
    assert capped_loss(7.0, 6.0, False) == 6.0  # worse than init: min(l, l0)
    assert capped_loss(2.0, 6.0, True) == 6.0   # diverged counts as l0
    assert capped_loss(math.nan, 6.0, False) == 6.0
    assert capped_loss(math.inf, 6.0, False) == 6.0


def test_pure_definition_by_hand():
    # capped: 4, 3, 2.5, 2, 2.2, 6 (NaN), 6 (diverged); l* = 2
    # mean of (2, 1, 0.5, 0, 0.2, 4, 4) = 11.7 / 7
    sens, best, capped = sensitivity_value([4, 3, 2.5, 2, 2.2, math.nan, 9.0], [L0] * 7,
                                           [False] * 6 + [True])
    assert best == 2.0
    assert capped == [4, 3, 2.5, 2, 2.2, 6.0, 6.0]
    assert sens == pytest.approx(11.7 / 7, rel=1e-12)


def _sweep_specs():
    """Group qk_norm=false: the hand-computed grid with a NaN run and a diverged run, plus runs
    outside [3e-4, 3e-1]; group qk_norm=true: a flat, fully stable curve."""
    finals = {"3e-4": 4.0, "1e-3": 3.0, "3e-3": 2.5, "1e-2": 2.0, "3e-2": 2.2}
    specs = []
    for lr, final in finals.items():
        specs.append(dict(id=f"f_{lr}", values={"model.qk_norm": "false", "optim.lr": lr},
                          l0=L0, final=final))
    specs.append(dict(id="f_1e-1", values={"model.qk_norm": "false", "optim.lr": "1e-1"},
                      l0=L0, nonfinite_at=20))                       # NaN -> l0
    specs.append(dict(id="f_3e-1", values={"model.qk_norm": "false", "optim.lr": "3e-1"},
                      l0=L0, final=9.0))                             # above l0: diverged -> l0
    specs.append(dict(id="f_1e-4", values={"model.qk_norm": "false", "optim.lr": "1e-4"},
                      l0=L0, final=5.0))                             # outside the range
    specs.append(dict(id="f_1", values={"model.qk_norm": "false", "optim.lr": "1"},
                      l0=L0, final=1.0))                             # outside the range
    for lr in GRID:
        specs.append(dict(id=f"t_{lr}", values={"model.qk_norm": "true", "optim.lr": lr},
                          l0=L0, final=2.5))
    return specs


def test_sweep_sensitivity_matches_hand_value(tmp_path):
    fabricate = sweep_maker(tmp_path)
    sweep = load_sweep(fabricate(_sweep_specs()))
    groups = {g.label: g for g in lr_sensitivity(sweep)}
    f = groups["qk_norm=false"]
    assert f.lrs == pytest.approx([3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1])
    assert f.capped == pytest.approx([4, 3, 2.5, 2, 2.2, 6, 6])
    assert f.sensitivity == pytest.approx(11.7 / 7, rel=1e-9)
    assert f.best_lr == pytest.approx(1e-2)
    assert f.best_loss == pytest.approx(2.0)
    assert f.n_diverged == 2
    t = groups["qk_norm=true"]
    assert t.sensitivity == pytest.approx(0.0)
    assert t.best_loss == pytest.approx(2.5)


def test_custom_range(tmp_path):
    fabricate = sweep_maker(tmp_path)
    sweep = load_sweep(fabricate(_sweep_specs()))
    g = {g.label: g for g in lr_sensitivity(sweep, (1e-3, 1e-2))}["qk_norm=false"]
    assert g.lrs == pytest.approx([1e-3, 3e-3, 1e-2])
    assert g.sensitivity == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    # a range spanning the out-of-range runs too: lr 1 (loss 1.0) becomes l*
    g = {g.label: g for g in lr_sensitivity(sweep, (1e-4, 1))}["qk_norm=false"]
    assert len(g.lrs) == 9 and g.best_lr == pytest.approx(1.0) and g.best_loss == 1.0


def test_nan_and_diverged_runs_count_as_l0(tmp_path):
    fabricate = sweep_maker(tmp_path)
    specs = lr_specs(["1e-3", "1e-2", "1e-1"], qk=("false",), l0=L0, final=3.0)
    specs[1]["status"] = "diverged"            # index says diverged, loss looks fine
    specs[2]["nonfinite_at"] = 10              # NaN final loss
    sweep = load_sweep(fabricate(specs))
    (g,) = lr_sensitivity(sweep, (1e-3, 1e-1))
    assert g.capped == pytest.approx([3.0, L0, L0])
    assert g.sensitivity == pytest.approx((0 + 3 + 3) / 3)
    assert g.n_diverged == 2


def test_all_diverged_group_has_no_best_lr(tmp_path):
    fabricate = sweep_maker(tmp_path)
    specs = lr_specs(["1e-3", "1e-2"], qk=("false",), l0=L0, final=8.0)
    (g,) = lr_sensitivity(load_sweep(fabricate(specs)), (1e-3, 1e-2))
    assert g.sensitivity == 0.0 and g.best_loss == L0 and math.isnan(g.best_lr)


def test_crashed_run_is_left_out_not_counted(tmp_path):
    fabricate = sweep_maker(tmp_path)
    specs = lr_specs(["1e-3", "1e-2", "1e-1"], qk=("false",), l0=L0, final=3.0)
    specs[0]["final"] = 4.0
    specs[2]["in_index"] = False               # killed mid-run: no final evaluation
    specs[2]["truncate"] = 25
    specs[2]["steps"] = 40
    sweep = load_sweep(fabricate(specs))
    (g,) = lr_sensitivity(sweep, (1e-3, 1e-1))
    assert g.lrs == pytest.approx([1e-3, 1e-2])
    assert g.missing == [specs[2]["id"]]
    assert g.sensitivity == pytest.approx(0.5)


def test_grid_and_range_errors(tmp_path):
    fabricate = sweep_maker(tmp_path)
    sweep = load_sweep(fabricate(lr_specs(GRID)))
    assert len(lr_grid(sweep.runs, (3e-4, 3e-1))) == 7
    with pytest.raises(AnalysisError, match="holds 1 of the sweep"):
        lr_sensitivity(sweep, (1e-3, 2e-3))
    with pytest.raises(AnalysisError, match="holds 0"):
        lr_sensitivity(sweep, (1.0, 10.0))
    with pytest.raises(AnalysisError, match="0 < a <= b"):
        lr_sensitivity(sweep, (1e-1, 1e-3))


def test_no_lr_swept(tmp_path):
    fabricate = sweep_maker(tmp_path)
    specs = [dict(id=f"r{q}", values={"model.qk_norm": q}) for q in ("true", "false")]
    sweep = load_sweep(fabricate(specs, keys=("model.qk_norm",)))
    with pytest.raises(SensitivityUnavailable, match="optim.lr is not a swept key"):
        lr_sensitivity(sweep)
