"""Shared fixtures for the CLI tests: the canary binary, a small corpus, a small config."""
import os
import struct
import subprocess

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


@pytest.fixture(scope="session")
def canary():
    path = os.environ.get("CANARY_BIN", os.path.join(ROOT, "build", "canary"))
    if not os.path.exists(path):
        pytest.fail(f"canary binary not found at {path}: build first (./tests/run does)")
    return path


def run(canary, *args, cwd=None, env=None):
    """Runs canary and returns the CompletedProcess (text output)."""
    e = dict(os.environ)
    e.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    e.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    e["OMP_NUM_THREADS"] = "1"
    if env:
        e.update(env)
    return subprocess.run([canary, *args], capture_output=True, text=True, cwd=cwd, env=e,
                          timeout=300)


def write_tokens(path, tokens, magic=20240520, version=1, count=None):
    header = [magic, version, len(tokens) if count is None else count] + [0] * 253
    with open(path, "wb") as f:
        f.write(struct.pack("<256i", *header))
        f.write(struct.pack(f"<{len(tokens)}H", *tokens))


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """A byte-level token file of repetitive English-like text (~40k tokens)."""
    d = tmp_path_factory.mktemp("corpus")
    text = ("the quick brown fox jumps over the lazy dog. " * 3 +
            "a stitch in time saves nine; all that glitters is not gold.\n") * 250
    path = d / "small.bin"
    write_tokens(path, list(text.encode()))
    return path


SMALL_CONFIG = """
[model]
dim = 32
layers = 2
heads = 2
seq_len = 32
vocab = 256

[optim]
lr = 3e-3
warmup_steps = 2

[train]
steps = 12
batch_size = 8
eval_every = 5
eval_batches = 2
log_every = 4
seed = 7
"""


@pytest.fixture
def small_config(tmp_path, corpus):
    path = tmp_path / "small.ini"
    path.write_text(SMALL_CONFIG + f"\n[data]\ntrain = {corpus}\n")
    return path
