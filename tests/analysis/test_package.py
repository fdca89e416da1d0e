"""canary_analysis as a package: open_run / open_sweep give xarray Datasets with named axes
and a DataFrame of runs; incomplete runs are warned about by name and kept; the package
installs without network the documented way, and the README's five-line example runs with it."""
import math
import os
import re
import subprocess
import venv

import h5py
import numpy as np
import pytest

from fabricate import ROOT, lr_specs, sweep_maker

from canary_analysis import open_run, open_sweep


def test_open_run_names_every_axis(tmp_path):
    path = sweep_maker(tmp_path)(lr_specs(["1e-3"], qk=("true",), final=3.25,
                                          events=[(20, "spike", "a"), (20, "threshold", "b")]))
    (rid,) = [d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d))]
    ds = open_run(os.path.join(path, rid))
    assert ds["loss/total"].dims == ("step",) and ds.sizes["step"] == 40
    assert ds["attn/max_logit"].dims == ("probe_step", "layer", "head")
    assert list(ds["probe_step"].values) == [10, 20, 30, 40]
    assert ds["grad/rms"].dims == ("probe_step", "tensor")
    assert "blocks.0.attn.wq" in list(ds["tensor"].values)
    assert ds["eval/loss"].dims == ("eval_step",) and ds["eval/loss"].sel(eval_step=0) == 5.5
    assert ds["lr_probe/loss"].dims == ("lr_probe_step", "lr_factor")
    # two events at one step are two rows
    assert list(ds["events/step"].values) == [20, 20]
    assert list(ds["events/kind"].values) == ["spike", "threshold"]
    assert ds.attrs["config"]["model.dim"] == 32 and ds.attrs["status"] == "ok"
    assert ds.attrs["final_loss"] == 3.25 and ds.attrs["problems"] == []
    with pytest.raises(Exception, match="no such run directory"):
        open_run(tmp_path / "nothing")


def test_open_run_warns_about_incomplete_runs_and_non_run_directories(tmp_path):
    """open_run on a crashed run, a sweep directory or a directory with no run in it used to
    return quietly (an empty Dataset, status 'crashed' for the last two); now a warning names
    the directory and what is wrong, and the Dataset is still returned."""
    import warnings
    specs = lr_specs(["1e-3", "1e-2"], qk=("true",))
    specs[1].update(in_index=False, truncate=15)  # crashed mid-run
    path = sweep_maker(tmp_path)(specs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a complete run: no warning
        assert open_run(os.path.join(path, specs[0]["id"])).attrs["status"] == "ok"
    crashed = os.path.join(path, specs[1]["id"])
    with pytest.warns(UserWarning, match=re.escape(crashed) + ": incomplete: .*last evaluation"):
        ds = open_run(crashed)
    assert ds.attrs["status"] == "crashed" and ds.sizes["step"] == 15
    with pytest.warns(UserWarning) as caught:
        ds = open_run(path)
    (said,) = [str(w.message) for w in caught]
    assert said.startswith(f"{path}: not a run directory") and "probes.h5 missing" in said
    assert "open_sweep" in said
    assert len(ds.data_vars) == 0 and ds.attrs["status"] == "crashed"
    (tmp_path / "nothing_here").mkdir()
    with pytest.warns(UserWarning, match="not a run directory") as caught:
        open_run(tmp_path / "nothing_here")
    assert "open_sweep" not in str(caught[0].message)


def test_open_sweep_joins_runs_along_run(tmp_path):
    specs = lr_specs(["1e-3", "1e-2"], qk=("true", "false"))
    specs[3].update(nonfinite_at=25)  # stops early: its rows after 25 are NaN in the sweep
    ds, runs = open_sweep(sweep_maker(tmp_path)(specs))
    ids = [s["id"] for s in specs]
    assert list(ds["run"].values) == ids and list(runs.index) == ids
    assert ds["attn/max_logit"].dims == ("run", "probe_step", "layer", "head")
    assert list(ds["model.qk_norm"].values) == [True, True, False, False]
    assert list(ds["optim.lr"].values) == [1e-3, 1e-2, 1e-3, 1e-2]
    loss = ds["loss/total"]
    assert loss.sizes["step"] == 40
    assert np.isnan(loss.sel(run=ids[3], step=30)) and np.isfinite(loss.sel(run=ids[0], step=30))
    # the DataFrame: swept values, then the run's status and numbers
    assert list(runs.columns[:2]) == ["model.qk_norm", "optim.lr"]
    assert list(runs["status"]) == ["ok", "ok", "ok", "diverged"]
    assert list(runs["diverged"]) == [False, False, False, True]
    assert runs.loc[ids[0], "final_loss"] == 3.0 and runs.loc[ids[0], "l0"] == 5.5
    assert runs.loc[ids[0], "params"] == 2 * (4 * 32 * 32 + 2 * 32 * 128)
    best = runs[~runs["diverged"]].groupby("optim.lr")["final_loss"].min()
    assert list(best.index) == [1e-3, 1e-2]


def test_open_sweep_warns_by_name_and_keeps_the_rest(tmp_path):
    specs = lr_specs(["1e-4", "1e-3", "1e-2", "1e-1"], qk=("true",))
    specs[0].update(garbage_probes=True)  # corrupt probes.h5
    specs[2].update(scales=False)         # written by a canary without dimension scales
    path = sweep_maker(tmp_path)(specs)
    no_eval = os.path.join(path, specs[1]["id"])
    with h5py.File(os.path.join(no_eval, "probes.h5"), "a") as f:
        del f["eval/loss"]
        del f["eval/step"]
    os.remove(os.path.join(no_eval, "metrics.tsv"))
    with pytest.warns(UserWarning) as caught:
        ds, runs = open_sweep(path)
    said = " | ".join(str(w.message) for w in caught)
    for spec, what in ((specs[0], "unreadable"), (specs[1], "eval/loss"),
                       (specs[2], "no dimension scales")):
        assert re.search(re.escape(spec["id"]) + r": incomplete: [^|]*" + re.escape(what),
                         said), said
    assert specs[3]["id"] not in said
    assert list(runs.index) == [s["id"] for s in specs]
    assert list(runs["partial"]) == [True, True, True, False]
    good = ds["attn/max_logit"].sel(run=specs[3]["id"])
    assert np.isfinite(good).all()
    assert np.isnan(ds["attn/max_logit"].sel(run=specs[2]["id"])).all()
    assert math.isnan(ds["eval/loss"].sel(run=specs[1]["id"]).max())


def _readme_example():
    with open(os.path.join(ROOT, "analysis", "README.md"), encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"<!-- example[^>]*-->\s*```python\n(.*?)```", text, re.S)
    assert m, "analysis/README.md lost its example block"
    return m.group(1)


def test_installed_package_runs_the_readme_example(tmp_path):
    """The documented install (a venv over Debian's packages, pip without network or build
    isolation), its console script, and the README's example on a fabricated sweep."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    py = str(env_dir / "bin" / "python")
    env = dict(os.environ, MPLBACKEND="Agg", PIP_NO_INDEX="1", PYTHONPATH="")
    r = subprocess.run([py, "-m", "pip", "install", "--no-build-isolation", "--no-deps",
                        "-e", os.path.join(ROOT, "analysis")], capture_output=True, text=True,
                       env=env, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    r = subprocess.run([str(env_dir / "bin" / "canary-analyze"), "report", "--help"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0 and "report.md" in r.stdout, r.stderr

    sweep = sweep_maker(tmp_path)(lr_specs(["1e-3", "1e-2"], final=3.0), name="demo")
    code = _readme_example().replace('"runs/demo"', repr(sweep))
    code += "import matplotlib.pyplot as plt\n" \
            "print('lines', len(plt.gca().get_lines()))\n"
    work = tmp_path / "notebook"
    work.mkdir()
    (work / "analysis").mkdir()  # a folder named like the old package does not shadow it
    r = subprocess.run([py, "-c", code], capture_output=True, text=True, env=env, timeout=120,
                       cwd=work)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "canary_analysis" in subprocess.run(
        [py, "-c", "import canary_analysis; print(canary_analysis.__file__)"],
        capture_output=True, text=True, env=env, cwd=work).stdout
    assert re.search(r"False\s+3\.0\s*\nTrue\s+3\.0", r.stdout), r.stdout
    assert "lines 2" in r.stdout, r.stdout  # the two runs without qk-norm
