"""The canary command line: help, tokenize, config, a real training run and its outputs,
reproducibility, and the docs that are generated from the code."""
import os
import re
import shlex

import pathlib

import pytest

from conftest import ROOT, run

ROOT_DIR = pathlib.Path(ROOT)


def test_help_lists_commands(canary):
    r = run(canary, "--help")
    assert r.returncode == 0
    for cmd in ("train", "tokenize", "bench", "config"):
        assert cmd in r.stdout
    for cmd in ("train", "tokenize", "bench", "config"):
        r = run(canary, cmd, "--help")
        assert r.returncode == 0 and "usage: " in r.stdout, cmd


def test_no_command_and_unknown_command_fail(canary):
    assert run(canary).returncode != 0
    r = run(canary, "trian")
    assert r.returncode == 1 and "unknown command 'trian'" in r.stderr


def test_tokenize_writes_llmc_file(canary, tmp_path):
    src = tmp_path / "t.txt"
    src.write_bytes(b"hello\n")
    out = tmp_path / "t.bin"
    r = run(canary, "tokenize", str(src), str(out))
    assert r.returncode == 0, r.stderr
    data = out.read_bytes()
    assert len(data) == 1024 + 12
    assert int.from_bytes(data[0:4], "little") == 20240520
    assert data[1024:1026] == b"h\x00"


def test_config_markdown_matches_docs(canary):
    r = run(canary, "config", "--markdown")
    assert r.returncode == 0
    with open(os.path.join(ROOT, "docs", "config.md")) as f:
        assert f.read() == r.stdout, "docs/config.md is stale: canary config --markdown > docs/config.md"


def test_train_runs_and_writes_outputs(canary, small_config, tmp_path):
    out = tmp_path / "run"
    r = run(canary, "train", "--config", str(small_config), "--out", str(out),
            "--set", "train.threads=2")
    assert r.returncode == 0, r.stderr
    assert "eval step 0: loss" in r.stdout and "[l0, loss at init]" in r.stdout
    assert "step     12/12" in r.stdout and "tok/s" in r.stdout and "ETA" in r.stdout
    assert "eval step 12" in r.stdout
    for name in ("config.ini", "log.txt", "metrics.tsv"):
        assert (out / name).exists()
    assert "threads = 2  ; --set" in (out / "config.ini").read_text()
    assert (out / "log.txt").read_text().strip().splitlines()[-1].startswith("done:")
    rows = [l.split("\t") for l in (out / "metrics.tsv").read_text().splitlines()[1:]]
    train = [r for r in rows if r[0] == "train"]
    evals = [r for r in rows if r[0] == "eval"]
    assert [int(r[1]) for r in train] == list(range(1, 13))
    assert [int(r[1]) for r in evals] == [0, 5, 10, 12]
    assert float(train[-1][2]) < float(evals[0][2]), "the loss should fall"
    # a second run into the same directory is refused and changes nothing
    before = (out / "log.txt").read_text()
    r = run(canary, "train", "--config", str(small_config), "--out", str(out))
    assert r.returncode == 1 and "already holds a run" in r.stderr
    assert (out / "log.txt").read_text() == before


def _losses(path):
    return [l.split("\t")[2:8] for l in path.read_text().splitlines()[1:]]


def test_same_seed_gives_bitwise_identical_losses(canary, small_config, tmp_path):
    for threads in ("1", "2"):
        runs = []
        for i in range(2):
            out = tmp_path / f"r{threads}{i}"
            r = run(canary, "train", "--config", str(small_config), "--out", str(out),
                    "--set", f"train.threads={threads}")
            assert r.returncode == 0, r.stderr
            runs.append(_losses(out / "metrics.tsv"))
        assert runs[0] == runs[1], f"threads={threads}: runs differ"
    out = tmp_path / "other_seed"
    r = run(canary, "train", "--config", str(small_config), "--out", str(out),
            "--set", "train.seed=8")
    assert r.returncode == 0
    assert _losses(out / "metrics.tsv") != runs[0]


def test_nonfinite_loss_stops_with_step(canary, small_config, tmp_path):
    out = tmp_path / "diverge"
    r = run(canary, "train", "--config", str(small_config), "--out", str(out),
            "--set", "optim.lr=100", "--set", "optim.clip=0", "--set", "optim.z_loss=0",
            "--set", "optim.warmup_steps=0", "--set", "optim.beta2=0",
            "--set", "train.steps=200")
    assert r.returncode == 3, r.stdout + r.stderr
    assert "diverged at step" in r.stderr and "not finite" in r.stderr
    assert "non-finite" in (out / "log.txt").read_text()


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT_DIR / "configs").glob("*.ini")))
def test_shipped_configs_resolve(canary, name):
    """Every config in configs/ (a study's base config included) passes validation."""
    r = run(canary, "config", "--config", str(ROOT_DIR / "configs" / name))
    assert r.returncode == 0, r.stderr


def test_slurm_template_command_line_parses(canary, tmp_path):
    """launch/slurm.sbatch's canary command, with the SLURM variables filled in: a known command,
    options its --help lists, and a config and --set values that `canary config` accepts."""
    text = open(os.path.join(ROOT, "launch", "slurm.sbatch")).read()
    assigns = dict(re.findall(r"^([A-Z_]+)=(\S+)", text, re.M))
    joined = text.replace("\\\n", " ")
    line = next(l for l in joined.splitlines() if re.match(r"\s*srun\b.*build/canary", l))
    env = {"SLURM_CPUS_PER_TASK": "4", "SLURM_JOB_ID": "1", **assigns}
    for _ in range(3):
        line = re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), m.group(0)), line)
    args = shlex.split(line)
    args = args[next(i for i, a in enumerate(args) if a.endswith("build/canary")) + 1:]
    assert "$" not in " ".join(args), args
    command, opts = args[0], args[1:]
    assert command == "sweep"
    r = run(canary, command, "--help", cwd=ROOT)
    assert r.returncode == 0
    for o in opts:
        if o.startswith("--"):
            assert o in r.stdout, f"'{o}' is not an option of 'canary {command}'"
    config = opts[opts.index("--config") + 1]
    sets = [a for i, a in enumerate(opts) if i and opts[i - 1] == "--set"]
    r = run(canary, "config", "--config", config, *sum((["--set", s] for s in sets), []),
            cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "threads = 4" in r.stdout
