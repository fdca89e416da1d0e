"""canary tokenize / decode (issue 16): BPE through SentencePiece, lossless on the Brown corpus;
held-out text encoded with the training tokenizer; an llm.c GPT-2 token file trained at V = 50257;
a sweep whose data file follows model.vocab; a replay's batch decoded through the tokenizer; bad
input refused in one line with exit 1 and nothing written."""
import math
import os
import random
import struct
import subprocess

import pytest

from conftest import ROOT, SMALL_CONFIG, run, write_tokens

from test_checkpoint import canary_np, train_args

BROWN = os.path.join(ROOT, "data", "brown.txt")


@pytest.fixture(scope="module")
def brown():
    """The default corpus's text (data/prepare_brown fetches it once from npm and caches it)."""
    if not (os.path.exists(BROWN) and os.path.getsize(BROWN) > 0):
        r = subprocess.run([os.path.join(ROOT, "data", "prepare_brown")], capture_output=True,
                           text=True, timeout=900)
        assert r.returncode == 0, r.stderr
    with open(BROWN, "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def brown_bpe(canary, brown, tmp_path_factory):
    """Brown tokenized with a 2048-id BPE tokenizer learned on its first 95%; the rest held out."""
    d = tmp_path_factory.mktemp("bpe")
    cut = brown.index(b"\n", len(brown) * 95 // 100) + 1
    (d / "train.txt").write_bytes(brown[:cut])
    (d / "held.txt").write_bytes(brown[cut:])
    r = run(canary, "tokenize", "--vocab", "2048", str(d / "train.txt"), str(d / "train.bin"))
    assert r.returncode == 0, r.stderr
    return d


def header(path):
    with open(path, "rb") as f:
        return struct.unpack("<256i", f.read(1024))


def decode_bytes(canary, *args):
    r = subprocess.run([canary, "decode", *map(str, args)], capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


def one_line_error(r):
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("canary: "), r.stderr
    return lines[0]


def test_brown_round_trip(canary, brown, tmp_path):
    """decode(encode(text)) == text over the whole Brown corpus; the header records the tokenizer."""
    r = run(canary, "tokenize", "--vocab", "2048", BROWN, str(tmp_path / "b.bin"))
    assert r.returncode == 0, r.stderr
    assert "BPE, vocab 2048" in r.stdout and "b.model" in r.stdout
    h = header(tmp_path / "b.bin")
    assert h[:2] == (20240520, 1) and h[3] == 2048 and h[4] != 0
    assert os.path.getsize(tmp_path / "b.bin") == 1024 + 2 * h[2]
    assert h[2] < len(brown) / 3  # about 3.3 bytes per token at 2048 ids
    assert (tmp_path / "b.model").stat().st_size > 0
    assert decode_bytes(canary, tmp_path / "b.bin") == brown
    # a window: its text is a piece of the corpus
    part = decode_bytes(canary, "--from", 1000, "--count", 50, tmp_path / "b.bin")
    assert len(part) > 50 and part in brown
    # the same text and size give the same tokenizer (the fingerprint is the model's bytes)
    r = run(canary, "tokenize", "--vocab", "2048", BROWN, str(tmp_path / "again.bin"))
    assert r.returncode == 0 and header(tmp_path / "again.bin")[4] == h[4]


def test_held_out_text_with_the_training_tokenizer(canary, brown_bpe, tmp_path):
    d = brown_bpe
    r = run(canary, "tokenize", "--tokenizer", str(d / "train.model"), str(d / "held.txt"),
            str(tmp_path / "held.bin"))
    assert r.returncode == 0, r.stderr
    assert "reused" in r.stdout
    assert header(tmp_path / "held.bin")[3:5] == header(d / "train.bin")[3:5]
    assert (tmp_path / "held.model").read_bytes() == (d / "train.model").read_bytes()
    assert decode_bytes(canary, tmp_path / "held.bin") == (d / "held.txt").read_bytes()
    # training and held-out files train a model at the tokenizer's size ...
    cfg = tmp_path / "c.ini"
    cfg.write_text(SMALL_CONFIG.replace("vocab = 256", "vocab = 2048") +
                   f"\n[data]\ntrain = {d / 'train.bin'}\nval = {tmp_path / 'held.bin'}\n")
    r = run(canary, "train", "--config", str(cfg), "--out", str(tmp_path / "run"),
            "--set", "train.steps=4", "--set", "train.eval_every=2")
    assert r.returncode == 0, r.stderr
    # ... and not at a smaller one, even if the ids seen so far fit
    r = run(canary, "train", "--config", str(cfg), "--out", str(tmp_path / "run2"),
            "--set", "model.vocab=1024")
    line = one_line_error(r)
    assert "tokenizer of 2048 ids" in line and "model.vocab = 1024" in line


def test_gpt2_token_file_trains_at_50257(canary, tmp_path):
    """A token file as llm.c's GPT-2 scripts write it (header words 3, 4 zero; ids up to 50256,
    the end-of-text token) trains at model.vocab = 50257."""
    rng = random.Random(3)
    doc = [rng.randrange(50256) for _ in range(200)]
    tokens = []
    for k in range(60):  # documents separated by <|endoftext|>, as llm.c's shards are
        tokens += [50256] + doc[k % 7:] + doc[:k % 7]
    write_tokens(tmp_path / "gpt2.bin", tokens)
    assert header(tmp_path / "gpt2.bin")[3:5] == (0, 0)
    cfg = tmp_path / "c.ini"
    cfg.write_text(SMALL_CONFIG.replace("vocab = 256", "vocab = 50257") +
                   f"\n[data]\ntrain = {tmp_path / 'gpt2.bin'}\n")
    r = run(canary, "train", "--config", str(cfg), "--out", str(tmp_path / "run"),
            "--set", "train.steps=8", "--set", "train.eval_every=4", "--set", "optim.lr=1e-2")
    assert r.returncode == 0, r.stderr
    rows = [l.split("\t") for l in (tmp_path / "run" / "metrics.tsv").read_text().splitlines()]
    head, rows = rows[0], rows[1:]
    loss = [float(x[head.index("loss")]) for x in rows if x[head.index("kind")] == "train"]
    # near ln 50257 at init (the random head adds about var/2 to it)
    assert abs(loss[0] - math.log(50257)) < 1.0
    assert all(math.isfinite(l) for l in loss) and loss[-1] < loss[0]
    r = run(canary, "train", "--config", str(cfg), "--out", str(tmp_path / "run2"),
            "--set", "model.vocab=50000")
    assert ">= vocab 50000" in one_line_error(r)
    # no tokenizer beside it and ids above 255: decode says what to give
    r = run(canary, "decode", str(tmp_path / "gpt2.bin"))
    assert "--tokenizer" in one_line_error(r)


def test_sweep_data_file_follows_the_vocabulary(canary, brown, tmp_path):
    (tmp_path / "t.txt").write_bytes(brown[:300000])
    for v in (400, 480):
        r = run(canary, "tokenize", "--vocab", str(v), str(tmp_path / "t.txt"),
                str(tmp_path / f"t_{v}.bin"))
        assert r.returncode == 0, r.stderr
    study = tmp_path / "s.ini"
    study.write_text(SMALL_CONFIG + "\n[data]\ntrain = " + str(tmp_path) +
                     "/t_{model.vocab}.bin\n\n[sweep]\nmodel.vocab = 400, 480\n"
                     "ranks_per_run = 1\n")
    r = run(canary, "sweep", "--config", str(study), "--out", str(tmp_path / "sw"),
            "--set", "train.steps=3", "--set", "train.eval_every=0")
    assert r.returncode == 0, r.stdout + r.stderr
    for v in (400, 480):
        (run_dir,) = [p for p in (tmp_path / "sw").iterdir() if p.name.endswith(f"vocab-{v}")]
        cfg = (run_dir / "config.ini").read_text()
        assert f"train = {tmp_path}/t_{v}.bin" in cfg and f"vocab = {v}" in cfg
        assert (run_dir / "metrics.tsv").exists()
    # a value with no file: refused before any run starts, naming the file
    study.write_text(study.read_text().replace("model.vocab = 400, 480", "model.vocab = 400, 512"))
    r = run(canary, "sweep", "--config", str(study), "--out", str(tmp_path / "sw2"))
    assert r.returncode == 1 and "t_512.bin" in r.stderr, r.stderr
    assert not (tmp_path / "sw2").exists()
    # the prepared corpora name the script that makes them
    r = run(canary, "train", "--config", str(study), "--out", str(tmp_path / "r"),
            "--set", "data.train=" + str(tmp_path / "brown_{model.vocab}.bin"))
    assert "data/prepare_brown --vocab 256 makes it" in one_line_error(r)


def test_replay_batch_decoded_through_the_tokenizer(canary, brown_bpe, tmp_path):
    cfg = tmp_path / "c.ini"
    cfg.write_text(SMALL_CONFIG.replace("vocab = 256", "vocab = 2048") +
                   f"\n[data]\ntrain = {brown_bpe / 'train.bin'}\n")
    out = tmp_path / "run"
    r = canary_np(canary, 0, *train_args(cfg, out, "train.steps=12", "train.eval_every=0",
                                         "train.checkpoint_every=4"))
    assert r.returncode == 0, r.stderr
    r = canary_np(canary, 0, "replay", "--run", str(out), "--step", "10", "--window", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    rows = (out / "replay" / "step_10" / "batch.tsv").read_text().splitlines()[1:]
    texts = [row.split("\t")[5] for row in rows]
    assert len(texts) == 8
    brown_words = set((brown_bpe / "train.txt").read_text().split())
    # decoded text, not ids: each sequence (64 tokens, ~200 characters) holds Brown's words; the
    # ids themselves would be digits only
    for t in texts:
        words = t.replace("\\n", " ").split(" ")[1:-1]  # the ends may be cut
        alpha = [w for w in words if w.isalpha() and len(w) >= 3]
        assert len(alpha) >= 5 and all(w in brown_words for w in alpha), t


def test_bad_input(canary, brown_bpe, tmp_path):
    out = tmp_path / "o.bin"
    leftovers = lambda: sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("o."))
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9 au lait\n")
    line = one_line_error(run(canary, "tokenize", "--vocab", "512", str(tmp_path / "latin1.txt"),
                              str(out)))
    assert "not UTF-8" in line and "offset 3" in line
    (tmp_path / "mark.txt").write_text("a\nspace \u2581 mark\n")
    line = one_line_error(run(canary, "tokenize", "--vocab", "512", str(tmp_path / "mark.txt"),
                              str(out)))
    assert "U+2581" in line and "offset 8 (line 2)" in line
    (tmp_path / "empty.txt").write_bytes(b"")
    for vocab in ("512", "256"):
        line = one_line_error(run(canary, "tokenize", "--vocab", vocab,
                                  str(tmp_path / "empty.txt"), str(out)))
        assert "empty" in line
    (tmp_path / "ok.txt").write_text("some text\n")
    assert "65536" in one_line_error(run(canary, "tokenize", "--vocab", "70000",
                                         str(tmp_path / "ok.txt"), str(out)))
    assert "300 to 65536" in one_line_error(run(canary, "tokenize", "--vocab", "100",
                                                str(tmp_path / "ok.txt"), str(out)))
    assert "Vocabulary size too high" in one_line_error(
        run(canary, "tokenize", "--vocab", "4096", str(tmp_path / "ok.txt"), str(out)))
    assert "not a SentencePiece model" in one_line_error(
        run(canary, "tokenize", "--tokenizer", str(tmp_path / "ok.txt"), str(tmp_path / "ok.txt"),
            str(out)))
    assert "open tokenizer file" in one_line_error(
        run(canary, "tokenize", "--tokenizer", str(tmp_path / "none.model"),
            str(tmp_path / "ok.txt"), str(out)))
    # an output path that is a directory: refused before anything is written
    (tmp_path / "o.bin").mkdir()
    assert "not a regular file" in one_line_error(
        run(canary, "tokenize", "--tokenizer", str(brown_bpe / "train.model"),
            str(tmp_path / "ok.txt"), str(out)))
    (tmp_path / "o.bin").rmdir()
    assert leftovers() == []
    # a tokenizer that is not the file's
    r = run(canary, "tokenize", "--vocab", "400", str(brown_bpe / "held.txt"),
            str(tmp_path / "x.bin"))
    assert r.returncode == 0, r.stderr
    line = one_line_error(run(canary, "decode", "--tokenizer", str(tmp_path / "x.model"),
                              str(brown_bpe / "train.bin")))
    assert "does not match" in line
    # a placeholder naming no key
    line = one_line_error(run(canary, "config", "--set", "data.train=d_{model.vocb}.bin"))
    assert "{model.vocb}" in line
    assert one_line_error(run(canary, "decode", "--ids", "1 x"))
    r = run(canary, "decode", "--ids", "72, 105")
    assert r.returncode == 0 and r.stdout == "Hi"


def test_prepare_brown_caches_a_bpe_file(canary, brown, tmp_path):
    """data/prepare_brown --vocab N OUT.txt: the text (from the cached package) and brown_N.bin
    with its .model beside OUT.txt; a second call reuses them."""
    script = os.path.join(ROOT, "data", "prepare_brown")
    env = dict(os.environ, CANARY_BIN=canary)
    out = tmp_path / "brown.txt"
    r = subprocess.run([script, "--vocab", "512", str(out)], capture_output=True, text=True,
                       env=env, timeout=900)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == brown
    h = header(tmp_path / "brown_512.bin")
    assert h[3] == 512 and (tmp_path / "brown_512.model").exists()
    assert r.stdout.strip().startswith(str(tmp_path / "brown_512.bin"))
    mtime = (tmp_path / "brown_512.bin").stat().st_mtime_ns
    r = subprocess.run([script, "--vocab", "512", str(out)], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0 and "nothing to do" in r.stderr
    assert (tmp_path / "brown_512.bin").stat().st_mtime_ns == mtime
    r = subprocess.run([script, "--vocab", "lots", str(out)], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 1 and "--vocab takes a number" in r.stderr
