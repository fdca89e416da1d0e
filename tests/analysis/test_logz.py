"""canary_analysis.logz: the output-logit (log Z) drift section of the report: the per-run rows
(early, final, lowest, drift, logit RMS), the 'drifted' rule (final < 0 and more than 1 nat
below early) and the verdict either way, and the figure's two panels."""
import pytest

import fabricate  # noqa: F401  (puts analysis/ on sys.path)
from fabricate import fabricate_sweep, lr_specs

from canary_analysis.__main__ import main
from canary_analysis.load import load_sweep
from canary_analysis.logz import logz_render, logz_rows


def test_rows_and_the_drift_rule(tmp_path):
    # fabricated mean log Z = -lr * step over steps 1..40: LR 0.1 ends at -4, LR 0.001 at -0.04
    path = fabricate_sweep(tmp_path / "s", lr_specs(["1e-3", "1e-1"], qk=("true",)))
    rows = logz_rows(load_sweep(path))
    by = {r["lr"]: r for r in rows}
    assert set(by) == {0.001, 0.1}
    hi, lo = by[0.1], by[0.001]
    assert hi["early"] == pytest.approx(-0.25)  # median of steps 1..4 (the first 10%)
    assert hi["late"] == pytest.approx(-3.85)  # median of steps 37..40
    assert hi["lowest"] == pytest.approx(-4.0)  # 40 rows: no smoothing
    assert hi["drift"] == pytest.approx(-3.6)
    assert hi["drifted"] and not lo["drifted"]  # lo: below 0, but by 0.04 nats only
    assert hi["rms_late"] == pytest.approx(1.0)
    text = "\n".join(logz_render(rows))
    assert "**The drift appeared** in 1 of 2 runs" in text and hi["id"] in text
    assert "| yes |" in text and "| no |" in text


def test_verdict_counts_the_z_loss_runs_either_way(tmp_path):
    """Runs with z-loss on are named whether they held or drifted (a z-loss too weak for its LR
    must not vanish from the sentence)."""
    path = fabricate_sweep(tmp_path / "s", lr_specs(["1e-3", "1e-1"], qk=("true",)))
    rows = logz_rows(load_sweep(path))
    by = {r["lr"]: r for r in rows}
    by[0.001]["z_loss"] = 1e-4
    text = "\n".join(logz_render(rows))
    assert "With z-loss on, 1 of 1 runs held (late mean log Z -0.04 in " in text
    by[0.1]["z_loss"] = 1e-4
    text = "\n".join(logz_render(rows))
    assert "With z-loss on, 1 of 2 runs held" in text
    assert f"; by the rule above, {by[0.1]['id']} (late -3.85, logit RMS 1.0) drifted" in text


def test_no_drift_verdict(tmp_path):
    path = fabricate_sweep(tmp_path / "s", lr_specs(["1e-4", "1e-3"], qk=("true",)))
    text = "\n".join(logz_render(logz_rows(load_sweep(path))))
    assert "**No output-logit drift**" in text and "largest fall -0.04" in text


def test_smooth_is_a_running_mean_of_one_percent():
    import numpy as np
    from canary_analysis.logz import smooth
    v = np.tile([0.0, 2.0], 1000)  # 2000 rows, window 20: every mean is 1
    s = smooth(v)
    assert s.shape == v.shape and np.allclose(s[10:-10], 1.0)
    v[5] = np.nan  # a NaN row is skipped, not spread
    assert np.isfinite(smooth(v)).all()
    short = np.arange(50.0)
    assert (smooth(short) == short).all()


def test_no_runs_no_section():
    assert logz_render([]) == []


def test_report_has_the_section_and_figure(tmp_path, monkeypatch):
    from canary_analysis import figures
    panels, real = {}, figures._save

    def spy(fig, out_dir, name, *a, **k):
        panels[name] = [ax.get_ylabel() for ax in fig.axes]
        return real(fig, out_dir, name, *a, **k)

    monkeypatch.setattr(figures, "_save", spy)
    path = fabricate_sweep(tmp_path / "s", lr_specs(["1e-3", "1e-1"], qk=("true",)))
    assert main(["report", path]) == 0
    labels = panels["logz_vs_step.png"]
    assert "mean over tokens of log Z" in labels and "RMS of the output logits" in labels
    md = (tmp_path / "s" / "report" / "report.md").read_text()
    assert "## Output logits: log Z drift" in md and "logz_vs_step.png" in md
    assert (tmp_path / "s" / "report" / "logz_vs_step.png").stat().st_size > 10000
