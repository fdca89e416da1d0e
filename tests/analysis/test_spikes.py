"""canary_analysis.spikes: who moved first (the z-score crossing against the pre-spike window),
the replay tables read back, and the events listing of a run and a sweep, with the report's
link to spikes.md."""
import math
import pathlib
import shutil

import h5py
import numpy as np
import pytest

import fabricate  # noqa: F401  (puts analysis/ on sys.path)
from fabricate import fabricate_sweep, lr_specs

from canary_analysis import spikes
from canary_analysis.__main__ import main
from canary_analysis.errors import AnalysisError


def write_probes(path, names, grad, update, steps):
    with h5py.File(path, "w") as f:
        f["tensors/names"] = np.array(names, dtype=object).astype("S")
        f["probe_step"] = np.asarray(steps, dtype=np.float64)
        f["grad/rms"] = grad
        f["update/rms"] = update


def noisy(rng, n, t, level=1.0):
    return level + 0.01 * rng.standard_normal((n, t))


def test_attribution_orders_tensors_by_first_crossing(tmp_path):
    """Over steps 1..30, spike at 21, pre-spike window 11..20: 'b' jumps in grad RMS at 21, 'a'
    in update RMS at 23 (negative z counts), 'c' moves by less than 3 sigma, 'd' jumps at 21 by
    more than 'b' (ties at a step: larger |z| first). A crossing before S does not count."""
    rng = np.random.default_rng(1)
    steps = np.arange(1, 31)
    names = ["a", "b", "c", "d"]
    g, u = noisy(rng, 30, 4), noisy(rng, 30, 4)
    g[20:, 1] += 0.5     # b: step 21
    u[22:, 0] -= 0.5     # a: step 23, downwards
    g[20:, 2] += 0.005   # c: well inside 3 sigma
    g[20:, 3] += 5.0     # d: step 21, further
    g[15, 0] += 1.0      # a: a blip at step 16, inside the window, not after S
    p = tmp_path / "probes.h5"
    write_probes(p, names, g, u, steps)
    rows = spikes.attribution(str(p), 11, 20, 21)
    assert [r["tensor"] for r in rows] == ["d", "b", "a", "c"]
    assert [r["step"] for r in rows] == [21, 21, 23, None]
    assert rows[2]["series"] == "update/rms" and rows[2]["z"] < -3
    assert rows[1]["series"] == "grad/rms" and rows[1]["z"] > 3


def test_attribution_threshold_is_three_sigma(tmp_path):
    """A jump of 2.5 sigma does not cross; 3.5 sigma does (the window's sample std)."""
    steps = np.arange(1, 21)
    base = np.tile(np.array([1.0, 1.02, 0.98, 1.01, 0.99, 1.0, 1.02, 0.98, 1.01, 0.99]), 2)
    g = np.stack([base.copy(), base.copy()], axis=1)
    sd = np.std(base[:10], ddof=1)
    g[10:, 0] = 1.0 + 2.5 * sd
    g[10:, 1] = 1.0 + 3.5 * sd
    p = tmp_path / "probes.h5"
    write_probes(p, ["x", "y"], g, np.ones_like(g), steps)
    rows = {r["tensor"]: r for r in spikes.attribution(str(p), 1, 10, 11)}
    assert rows["x"]["step"] is None
    assert rows["y"]["step"] == 11 and math.isclose(rows["y"]["z"], 3.5, rel_tol=1e-6)


def fake_replay(run_dir, step, reproduced=True):
    d = run_dir / "replay" / f"step_{step}"
    d.mkdir(parents=True)
    (d / "summary.tsv").write_text(
        "key\tvalue\nstep\t%d\nstart_step\t0\nstart_from\tinit\nend_step\t%d\nranks\t1\n"
        "reproduced\t%d\nparted_at\t%d\nparted_what\tloss 1 in the run, 2 replayed\n"
        "pre_first\t%d\npre_last\t%d\npre_mean\t2.5\npre_sd\t0.1\n"
        % (step, step + 5, reproduced, 0 if reproduced else step - 2, step - 5, step - 1))
    (d / "branches.tsv").write_text(
        "branch\tran\tloss_at_S\tloss_at_end\tmax_loss\trecovered\tgrad_norm_at_S\twhat\tnote\n"
        "as_run\t1\t4.0\t3.0\t4.0\t0\t7.5\tthe replay itself\t\n"
        "skip\t1\t4.0\t2.55\t4.0\t1\t7.5\tskip step S\t\n"
        "guard_clip\t0\tnan\tnan\tnan\t0\tnan\tclipping\tnot armed: 3 step(s)\n")
    (d / "batch.tsv").write_text(
        "rank\tsequence\tsample\tloss\tloss_minus_mean\ttext\n"
        "1\t4\t100\t9.5\t7.0\t\\xff\\xff|x\n2\t0\t96\t2.6\t0.1\tthe cat\n")
    # alternating +-0.01 around 1: nothing crosses but w2's jump at S
    wiggle = 1.0 + 0.01 * (-1.0) ** np.arange(step + 5)
    g = np.stack([wiggle, wiggle], axis=1)
    g[step - 1:, 1] += 1.0
    write_probes(d / "probes.h5", ["w1", "w2"], g, np.stack([wiggle, wiggle], axis=1),
                 np.arange(1, step + 6))
    return d


def test_render_lists_events_and_replay_tables(tmp_path):
    root = fabricate_sweep(tmp_path / "sw", lr_specs(["1e-3", "1e-2"], qk=("true",)))
    runs = spikes.find_runs(root)
    assert len(runs) == 2
    with h5py.File(f"{runs[1]}/probes.h5", "r") as f:
        assert "events/step" in f
    ev_run = runs[1]
    with h5py.File(f"{ev_run}/probes.h5", "a") as f:
        for name, vals in (("events/step", [12.0]), ("events/kind", [b"spike"]),
                           ("events/detail", [b"loss 9 is 7 sigma above"])):
            if name in f:
                del f[name]
            f.create_dataset(name, data=np.array(vals))
    fake_replay(pathlib.Path(ev_run), 12)
    text = spikes.render(root)
    assert "| 12 | spike | loss 9 is 7 sigma above | yes |" in text
    assert "**Reproduced**" in text
    assert "| skip | 4.0000 | 2.5500 | 4.0000 | yes | 7.5 | no | skip step S |" in text
    assert "| guard_clip | | | | not run |" in text and "not armed" in text
    assert "Recovered: skip." in text
    assert "| 1 | w2 | 12 | grad/rms |" in text  # the only tensor that moved
    assert "1 of 2 tensors crossed" in text
    assert "\\xff\\xff\\|x" in text  # a cell's pipe escaped
    # one run alone works too, and a parted replay says where
    shutil.rmtree(pathlib.Path(ev_run) / "replay")
    fake_replay(pathlib.Path(ev_run), 12, reproduced=False)
    text = spikes.render(ev_run)
    assert "**Not reproduced**: the replay parts from the run at step 10" in text


def test_spikes_cli_and_report_link(tmp_path, capsys):
    root = pathlib.Path(fabricate_sweep(tmp_path / "sw", lr_specs(["1e-3", "1e-2", "1e-1"], qk=("true",))))
    assert main(["spikes", str(root)]) == 0
    assert "# Spikes:" in capsys.readouterr().out
    out = tmp_path / "s.md"
    assert main(["spikes", str(root), "--out", str(out)]) == 0
    assert out.read_text().startswith("# Spikes:")
    assert main(["spikes", str(tmp_path / "nothing")]) == 1
    assert "no such directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(AnalysisError, match="neither a run nor a sweep"):
        spikes.find_runs(tmp_path / "empty")
    assert main(["report", str(root)]) in (0, 3)
    report = (root / "report" / "report.md").read_text()
    assert "[spikes.md](spikes.md)" in report
    assert (root / "report" / "spikes.md").read_text().startswith("# Spikes:")
