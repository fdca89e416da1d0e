"""Every bad input of the trainer-core issue, run through the CLI: one clear line naming the
file or key and what is wrong, exit code 1, no crash, and no run directory left behind."""
import pytest

from conftest import SMALL_CONFIG, run, write_tokens


def check_refused(r, out, *needles):
    assert r.returncode == 1, f"exit {r.returncode}: {r.stdout}{r.stderr}"
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert lines and lines[0].startswith("canary: "), r.stderr
    for needle in needles:
        assert needle in lines[0], f"'{needle}' not in: {lines[0]}"
    assert not out.exists(), "a refused run must not leave a run directory"


def train(canary, config, out, *sets):
    args = ["train", "--config", str(config), "--out", str(out)]
    for s in sets:
        args += ["--set", s]
    return run(canary, *args)


def write_config(tmp_path, text, name="bad.ini"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_missing_config(canary, tmp_path):
    out = tmp_path / "run"
    r = train(canary, tmp_path / "nope.ini", out)
    check_refused(r, out, "nope.ini", "No such file")


def test_unreadable_config_directory(canary, tmp_path):
    out = tmp_path / "run"
    r = train(canary, tmp_path, out)
    check_refused(r, out, "not a regular file")


def test_config_syntax_error(canary, tmp_path, corpus):
    cfg = write_config(tmp_path, f"[data]\ntrain = {corpus}\n[model]\ndim 32\n")
    out = tmp_path / "run"
    check_refused(train(canary, cfg, out), out, "bad.ini:4:", "syntax error")


def test_unknown_key_suggests_nearest(canary, tmp_path, corpus):
    cfg = write_config(tmp_path, f"[data]\ntrain = {corpus}\n[model]\nhaeds = 2\n")
    out = tmp_path / "run"
    check_refused(train(canary, cfg, out), out, "bad.ini:4:", "unknown key 'haeds'",
                  "did you mean 'model.heads'")


def test_unknown_set_key(canary, small_config, tmp_path):
    out = tmp_path / "run"
    check_refused(train(canary, small_config, out, "optim.learning_rate=1e-3"), out,
                  "unknown key 'optim.learning_rate'")


@pytest.mark.parametrize("setting,needles", [
    ("model.heads=3", ["model.dim = 32 is not divisible by model.heads = 3"]),
    ("optim.lr=0", ["optim.lr = 0 is out of range", "(0, 100]"]),
    ("optim.lr=-0.1", ["optim.lr", "out of range"]),
    ("train.steps=0", ["train.steps = 0 is out of range"]),
    ("model.dim=abc", ["model.dim = 'abc' is not an integer"]),
    ("model.norm=batchnorm", ["model.norm = 'batchnorm'", "layernorm, rmsnorm"]),
    ("optim.beta2=1", ["optim.beta2", "out of range", "[0, 0.999999999]"]),
    ("train.batch_size=7", ["train.batch_size = 7", "grad_accum"]),
])
def test_value_out_of_range(canary, small_config, tmp_path, setting, needles):
    out = tmp_path / "run"
    key = setting.split("=")[0]
    if key == "train.batch_size":
        r = train(canary, small_config, out, setting, "train.grad_accum=2")
    else:
        r = train(canary, small_config, out, setting)
    check_refused(r, out, *needles)


def test_seq_len_larger_than_data(canary, tmp_path):
    data = tmp_path / "tiny.bin"
    write_tokens(data, list(b"tiny corpus " * 10))
    cfg = write_config(tmp_path, SMALL_CONFIG + f"\n[data]\ntrain = {data}\n")
    out = tmp_path / "run"
    check_refused(train(canary, cfg, out, "model.seq_len=512"), out, "model.seq_len = 512",
                  "larger than")


def test_missing_token_file(canary, tmp_path):
    cfg = write_config(tmp_path, SMALL_CONFIG + f"\n[data]\ntrain = {tmp_path}/none.bin\n")
    out = tmp_path / "run"
    check_refused(train(canary, cfg, out), out, "none.bin", "No such file")


def test_truncated_token_file(canary, tmp_path):
    data = tmp_path / "trunc.bin"
    write_tokens(data, list(range(100)) * 50)
    data.write_bytes(data.read_bytes()[:-10])
    cfg = write_config(tmp_path, SMALL_CONFIG + f"\n[data]\ntrain = {data}\n")
    out = tmp_path / "run"
    check_refused(train(canary, cfg, out), out, "trunc.bin", "truncated")


def test_wrong_magic_token_file(canary, tmp_path):
    data = tmp_path / "magic.bin"
    write_tokens(data, list(range(100)) * 50, magic=20240801)
    cfg = write_config(tmp_path, SMALL_CONFIG + f"\n[data]\ntrain = {data}\n")
    out = tmp_path / "run"
    check_refused(train(canary, cfg, out), out, "magic.bin", "bad magic 20240801")


def test_token_id_not_below_vocab(canary, tmp_path):
    data = tmp_path / "big.bin"
    write_tokens(data, [1, 2, 3, 300] * 2000)
    cfg = write_config(tmp_path, SMALL_CONFIG + f"\n[data]\ntrain = {data}\n")
    out = tmp_path / "run"
    check_refused(train(canary, cfg, out), out, "big.bin", "token 300", ">= vocab 256")


def test_train_without_data(canary, tmp_path):
    cfg = write_config(tmp_path, SMALL_CONFIG)
    out = tmp_path / "run"
    check_refused(train(canary, cfg, out), out, "data.train is not set")


def test_config_key_set_twice(canary, tmp_path, corpus):
    cfg = write_config(tmp_path, f"[data]\ntrain = {corpus}\n[model]\ndim = 32\n\ndim = 64\n")
    out = tmp_path / "run"
    check_refused(train(canary, cfg, out), out, "bad.ini:6:", "[model] dim is set twice",
                  "first on line 4")


def test_missing_argument_values(canary, tmp_path):
    r = run(canary, "train", "--config")
    assert r.returncode == 1 and "--config needs an argument" in r.stderr
    for opt in ("--out", "--resume"):
        r = run(canary, "train", opt)
        assert r.returncode == 1 and f"train: {opt} needs an argument" in r.stderr, r.stderr
    r = run(canary, "train")
    assert r.returncode == 1 and "--config FILE is required" in r.stderr
    r = run(canary, "tokenize", str(tmp_path / "none.txt"), str(tmp_path / "out.bin"))
    assert r.returncode == 1 and "none.txt" in r.stderr
    assert not (tmp_path / "out.bin").exists()


def test_run_directory_path_too_long(canary, small_config, tmp_path):
    out = tmp_path.joinpath(*["x" * 100] * 9)  # 900+ characters, each part a legal name
    r = run(canary, "train", "--config", str(small_config), "--out", str(out))
    assert r.returncode == 1 and "run directory path is longer than" in r.stderr
    assert not (tmp_path / ("x" * 100)).exists()
