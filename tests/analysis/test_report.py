"""report.md, runs.csv, the command line and its errors, the canary-analyze wrapper."""

import csv
import os
import re
import subprocess
import sys

import pytest
from fabricate import lr_specs, sweep_maker

from canary_analysis import AnalysisError
from canary_analysis.__main__ import main
from canary_analysis.report import build_report

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
WRAPPER = os.path.join(ROOT, "analysis", "canary-analyze")
FIGURES = ["loss_vs_lr.png", "attn_logit_vs_step.png", "attn_logit_vs_lr.png",
           "logz_vs_step.png", "grad_rms_vs_lr.png", "attn_entropy.png", "lr_probe.png",
           "early_warning.png"]


def _specs():
    specs = lr_specs(["1e-3", "1e-2", "1e-1"], logit=40.0)
    specs[2].update(nonfinite_at=20, logit=3e4)                       # diverged, with an event
    specs[4].update(events=[(30, "spike", "loss 9.1 is 7.2 sigma above | its mean")])
    specs[5].update(in_index=False, truncate=15)                      # crashed mid-run
    return specs


def test_report_contents(tmp_path):
    fabricate = sweep_maker(tmp_path)
    sweep_dir = fabricate(_specs())
    lines = []
    rep = build_report(sweep_dir, lr_range=(1e-3, 1e-1), log=lines.append)
    assert rep.out_dir == os.path.join(sweep_dir, "report")
    md = open(rep.report_md).read()
    # the sensitivity table: one row per group, with the best LR and loss
    assert "| group | grid points | LR sensitivity | best LR | best loss" in md
    # capped (3, 3, l0=5.5): (0 + 0 + 2.5) / 3
    assert re.search(r"\| qk_norm=true \| 3 \| 0\.8333 \| 0\.001 \| 3\.0000 \| 5\.5000 "
                     r"\| 1 \|", md)
    assert re.search(r"\| qk_norm=false \| 2 \| 0\.0000 \| 0\.001 \| 3\.0000 \|.*grid "
                     r"incomplete", md)
    # every run, divergences and events (a '|' in a detail is escaped)
    for s in _specs():
        assert f"| {s['id']} |" in md
    assert "diverged (final loss n/a vs ℓ0 5.5000; non-finite at step 20)" in md
    assert "| non-finite | loss is NaN at step 20 |" in md
    assert "its mean" in md and "above \\| its mean" in md
    assert "did not finish" in md
    # figures: relative links to files next to report.md
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert sorted(links) == sorted(FIGURES)
    for link in links:
        assert os.path.isfile(os.path.join(rep.out_dir, link))
    assert "## Early warning" in md and "needs >= 2 model sizes" in md
    assert any(line.startswith("early warning:") for line in lines)

    with open(rep.runs_csv) as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == [s["id"] for s in _specs()]
    assert set(rows[0]) >= {"id", "model.qk_norm", "optim.lr", "status", "partial", "steps",
                            "l0", "final_loss", "max_attn_logit_block0_final",
                            "logz_mean_final"}
    assert rows[0]["status"] == "ok" and rows[0]["partial"] == "0"
    assert float(rows[0]["max_attn_logit_block0_final"]) == pytest.approx(40.0)
    assert float(rows[0]["final_loss"]) == 3.0 and float(rows[0]["l0"]) == 5.5
    assert rows[2]["status"] == "diverged"
    assert rows[5]["status"] == "crashed" and rows[5]["partial"] == "1"


def test_cli_writes_report(tmp_path, capsys):
    fabricate = sweep_maker(tmp_path)
    out = tmp_path / "out"
    # the fabricated sweep holds a crashed run: the report is written, the run is named on
    # stderr as skipped, and the exit code (3) says something was skipped
    assert main(["report", fabricate(_specs()), "--lr-range", "1e-3", "1e-1", "--out",
                 str(out), "--logit-step", "20", "--grad-matrix", "attn.wq"]) == 3
    captured = capsys.readouterr()
    assert "report:" in captured.out
    assert "canary-analyze: run 005_qk_norm-false_lr-1e-1: skipped its incomplete data" in \
        captured.err
    assert sorted(os.listdir(out)) == sorted(FIGURES + ["report.md", "runs.csv", "spikes.md"])
    assert "at step 20" in (out / "report.md").read_text()


def test_corrupt_probe_file_is_reported_and_skipped(tmp_path, capsys):
    fabricate = sweep_maker(tmp_path)
    specs = [dict(id=f"r_{lr}", values={"optim.lr": lr}) for lr in ("1e-3", "1e-2")]
    sweep = fabricate(specs, keys=("optim.lr",))
    assert main(["report", sweep]) == 0
    capsys.readouterr()
    with open(os.path.join(sweep, "r_1e-2", "probes.h5"), "wb") as f:
        f.write(b"not an HDF5 file")
    assert main(["report", sweep]) == 3
    err = capsys.readouterr().err
    assert "run r_1e-2: skipped its incomplete data: probes.h5 unreadable" in err


def _error(capsys, argv, code=1):
    with pytest.raises(SystemExit) as e:
        sys.exit(main(argv))
    assert e.value.code == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("canary-analyze: error: ")
    return err


def test_cli_errors(tmp_path, capsys):
    fabricate = sweep_maker(tmp_path)
    assert "no such directory" in _error(capsys, ["report", str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    assert "is not a sweep" in _error(capsys, ["report", str(tmp_path / "empty")])
    (tmp_path / "empty" / "index.tsv").write_text(
        "id\tmodel.qk_norm\toptim.lr\tstatus\tsteps\tl0\tfinal_eval_loss\n")
    assert "empty sweep" in _error(capsys, ["report", str(tmp_path / "empty")])
    sweep = fabricate(lr_specs(["1e-3", "1e-2"]))
    err = _error(capsys, ["report", sweep, "--lr-range", "2e-3", "5e-1"])
    assert "holds 1 of the sweep's learning rates (0.001, 0.01); need at least 2" in err
    assert "0 < a <= b" in _error(capsys, ["report", sweep, "--lr-range", "1e-1", "1e-3"])
    assert "must be > 0" in _error(capsys, ["report", sweep, "--lr-range", "-1", "1"], code=2)
    assert "expected 2 arguments" in _error(capsys, ["report", sweep, "--lr-range", "1"],
                                            code=2)
    assert not os.path.exists(os.path.join(sweep, "report"))  # nothing written on error


def test_unknown_grad_matrix_is_an_error(tmp_path, capsys):
    """A --grad-matrix no run has used to give exit 0 and an empty figure: now one line that
    names it and lists the valid names, and nothing written."""
    sweep = sweep_maker(tmp_path)(lr_specs(["1e-3", "1e-2"]))
    err = _error(capsys, ["report", sweep, "--grad-matrix", "mlp.w1", "--grad-matrix",
                          "attn.bogus"])
    assert "'attn.bogus'" in err and "'mlp.w1'" not in err
    valid = re.search(r"valid: ([^)]*)\)", err).group(1).split(", ")
    assert {"attn.wq", "attn.wk", "attn.wv", "attn.wo", "mlp.w1", "mlp.w2"} <= set(valid)
    assert not os.path.exists(os.path.join(sweep, "report"))
    with pytest.raises(AnalysisError, match="attn.bogus"):
        build_report(sweep, grad_matrices=("attn.bogus",), log=lambda line: None)
    assert not os.path.exists(os.path.join(sweep, "report"))


def test_no_lr_swept_still_reports(tmp_path, capsys):
    fabricate = sweep_maker(tmp_path)
    specs = [dict(id=f"r_{q}", values={"model.qk_norm": q}) for q in ("true", "false")]
    sweep = fabricate(specs, keys=("model.qk_norm",))
    assert main(["report", sweep]) == 0
    assert "optim.lr is not a swept key" in capsys.readouterr().out
    md = open(os.path.join(sweep, "report", "report.md")).read()
    assert "**LR sensitivity not computable: optim.lr is not a swept key" in md
    assert "| r_true |" in md and "| r_false |" in md
    for name in FIGURES:
        assert os.path.isfile(os.path.join(sweep, "report", name))


def test_wrapper(tmp_path):
    fabricate = sweep_maker(tmp_path)
    sweep = fabricate(lr_specs(["1e-3", "1e-2"], qk=("true",)), name="wrapped")
    assert os.access(WRAPPER, os.X_OK)
    # from another directory, with a relative sweep path and a decoy 'analysis' directory
    (tmp_path / "analysis").mkdir()
    env = dict(os.environ, MPLBACKEND="Agg")
    r = subprocess.run([WRAPPER, "report", "wrapped", "--lr-range", "1e-3", "1e-2"],
                       cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert os.path.isfile(os.path.join(sweep, "report", "report.md"))
    # a missing Debian package is named
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "h5py.py").write_text("raise ImportError('not installed')\n")
    r = subprocess.run([WRAPPER, "report", "wrapped"], cwd=tmp_path, capture_output=True,
                       text=True, env=dict(env, PYTHONPATH=str(fake)), timeout=60)
    assert r.returncode == 1 and "python3-h5py" in r.stderr
