"""Early warning: the log-log quadratic recovers a known curve and predicts the crossing."""

import math

import numpy as np
import pytest
from matplotlib.image import imread

from fabricate import sweep_maker

from canary_analysis.early_warning import (early_warning, fig_early_warning, fit_log_poly,
                                    format_predictions, predict)
from canary_analysis.load import load_sweep
from canary_analysis.params import non_embedding_params

DIMS = [32, 64, 128, 256]
X0 = math.log10(24 * 32 ** 2)   # log10 N of the smallest model (N = 24 d^2 at L=2, gelu)
# log10(logit) = y0 + s (x - X0) + c (x - X0)^2 per LR
TRUTH = {"1e-1": (1.0, 0.5, 0.5),   # 3.4e3 at the largest size, 1.9e4 at 2x: crosses
         "1e-2": (0.5, 0.2, 0.1)}   # stays far below 1e4


def true_logit(lr, n):
    y0, s, c = TRUTH[lr]
    dx = math.log10(n) - X0
    return 10 ** (y0 + s * dx + c * dx * dx)


def params_of(dim):
    return non_embedding_params({"model.dim": dim, "model.layers": 2, "model.heads": 2})


def test_fit_recovers_quadratic():
    ns = [params_of(d) for d in DIMS]
    assert ns[0] == 24 * 32 ** 2
    for lr, (y0, s, c) in TRUTH.items():
        coeffs, degree, warning = fit_log_poly(ns, [true_logit(lr, n) for n in ns])
        assert degree == 2 and warning is None
        # expand y0 + s (x - X0) + c (x - X0)^2 into c x^2 + b x + a
        expected = [c, s - 2 * c * X0, y0 - s * X0 + c * X0 ** 2]
        assert coeffs == pytest.approx(expected, rel=1e-6, abs=1e-8)
        nxt = 2 * ns[-1]
        assert predict(coeffs, nxt) == pytest.approx(true_logit(lr, nxt), rel=1e-6)


def test_fit_degrees_and_errors():
    coeffs, degree, warning = fit_log_poly([1e6, 4e6], [10.0, 100.0])
    assert degree == 1 and "linear" in warning
    assert coeffs == pytest.approx([math.log10(100 / 10) / math.log10(4), 1 - 6 *
                                    math.log10(10) / math.log10(4)], rel=1e-9)
    with pytest.raises(ValueError, match="need at least 2"):
        fit_log_poly([1e6, 1e6], [10.0, 12.0])
    with pytest.raises(ValueError, match="positive"):
        fit_log_poly([1e6, 2e6, 4e6], [10.0, -1.0, 30.0])


def _size_specs(dims, lrs=("1e-2", "1e-1"), qk=("false",)):
    specs, i = [], 0
    for q in qk:
        for dim in dims:
            for lr in lrs:
                value = (true_logit(lr, params_of(dim)) if q == "false" else 5.0)
                specs.append(dict(id=f"{i:03d}_dim-{dim}_qk_norm-{q}_lr-{lr}",
                                  values={"model.dim": str(dim), "model.qk_norm": q,
                                          "optim.lr": lr},
                                  logit=value, final=3.0))
                i += 1
    return specs


KEYS = ("model.dim", "model.qk_norm", "optim.lr")


def test_sweep_prediction_and_crossing(tmp_path):
    fabricate = sweep_maker(tmp_path)
    sweep = load_sweep(fabricate(_size_specs(DIMS, qk=("false", "true")), keys=KEYS))
    ew = early_warning(sweep, logit_step=40, next_factor=2.0)
    fits = {(f.family_label, f.lr): f for f in ew.fits}
    assert len(fits) == 4
    hi, lo = fits[("qk_norm=false", 0.1)], fits[("qk_norm=false", 0.01)]
    nxt = 2 * params_of(256)
    assert hi.next_params == nxt and hi.degree == 2
    assert hi.predicted == pytest.approx(true_logit("1e-1", nxt), rel=1e-6)
    assert hi.crosses and max(hi.logits) < 1e4       # predicted before it happens
    assert not lo.crosses
    assert not fits[("qk_norm=true", 0.1)].crosses
    lines = format_predictions(ew)
    assert any("qk_norm=false lr=0.1" in s and "CROSSES" in s for s in lines)
    fig = fig_early_warning(ew, str(tmp_path))
    assert fig.panels == 2 and imread(fig.path).size > 0


def test_two_sizes_linear_one_size_skipped(tmp_path):
    fabricate = sweep_maker(tmp_path)
    sweep = load_sweep(fabricate(_size_specs([64, 128]), keys=KEYS))
    ew = early_warning(sweep, logit_step=40)
    assert ew.fits and all(f.degree == 1 and f.warning for f in ew.fits)
    sweep = load_sweep(fabricate(_size_specs([64]), keys=KEYS))
    ew = early_warning(sweep, logit_step=40)
    assert ew.fits == []
    assert any("needs >= 2 model sizes" in m for m in ew.messages)
    fig = fig_early_warning(ew, str(tmp_path))
    assert fig.panels == 1 and np.asarray(imread(fig.path)).ndim == 3


def test_runs_that_stop_early_are_left_out(tmp_path):
    fabricate = sweep_maker(tmp_path)
    specs = _size_specs(DIMS, lrs=("1e-1",))
    specs[-1]["nonfinite_at"] = 20                  # the largest diverged at step 20
    ew = early_warning(load_sweep(fabricate(specs, keys=KEYS)), logit_step=40)
    (fit,) = ew.fits
    assert len(fit.params) == 3 and specs[-1]["id"] not in fit.run_ids
    assert any(specs[-1]["id"] in m for m in ew.messages)
