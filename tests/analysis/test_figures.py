"""Every figure is written, decodes as a PNG and has the expected number of panels."""

import os

from matplotlib.image import imread

from fabricate import sweep_maker

from canary_analysis.figures import write_all
from canary_analysis.load import load_sweep
from canary_analysis.sensitivity import lr_sensitivity

EXPECTED = {  # 2 model sizes, 3 layers
    "loss_vs_lr.png": 2,
    "attn_logit_vs_step.png": 3,
    "attn_logit_vs_lr.png": 1,
    "logz_vs_step.png": 2,
    "grad_rms_vs_lr.png": 3,
    "attn_entropy.png": 3,
    "lr_probe.png": 3,
}


def _specs():
    specs, i = [], 0
    for dim in (32, 64):
        for q in ("true", "false"):
            for lr in ("1e-3", "1e-2", "1e-1"):
                specs.append(dict(id=f"{i:03d}_dim-{dim}_qk_norm-{q}_lr-{lr}", layers=3,
                                  values={"model.dim": str(dim), "model.qk_norm": q,
                                          "optim.lr": lr},
                                  final=3.0 - 0.1 * i % 1.0))
                i += 1
    specs[5]["nonfinite_at"] = 20          # diverged
    specs[8].update(probes=False)          # partial: no probes.h5
    specs[9].update(in_index=False, truncate=15)   # crashed mid-run
    return specs


def _check(results, out_dir):
    assert {r.name: r.panels for r in results} == EXPECTED
    for r in results:
        assert r.path == os.path.join(out_dir, r.name)
        img = imread(r.path)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
        assert r.caption


def test_all_figures(tmp_path):
    fabricate = sweep_maker(tmp_path)
    sweep = load_sweep(fabricate(_specs(), keys=("model.dim", "model.qk_norm", "optim.lr")))
    out = str(tmp_path / "figs")
    sens = lr_sensitivity(sweep, (1e-3, 1e-1))
    results = write_all(sweep, out, (1e-3, 1e-1), 30, sens, ("mlp.w1", "attn.wq"))
    _check(results, out)


def test_figures_without_probe_data(tmp_path):
    fabricate = sweep_maker(tmp_path)
    specs = [s for s in _specs()]
    for s in specs:
        s["probes"] = False
    sweep = load_sweep(fabricate(specs, keys=("model.dim", "model.qk_norm", "optim.lr")))
    out = str(tmp_path / "figs")
    _check(write_all(sweep, out), out)
