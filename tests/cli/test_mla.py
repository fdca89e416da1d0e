"""Multi-head latent attention end to end: data-parallel training (deterministic mode bitwise
across rank counts), bit-exact resume, Muon on the latent projections, the MLA probes, bad MLA
settings refused, and the sweep model.attention = mha, mla x model.experts = 0, 8."""
import h5py
import numpy as np
import pytest

from test_checkpoint import (assert_np1_np2_bitwise, assert_refused, assert_resume_is_bitwise,
                             canary_np, last_muon_ortho, train_args)

MLA = ("model.attention=mla", "model.kv_rank=16", "model.q_rank=12", "model.rope_dim=8",
       "model.qk_norm=true")


def test_mla_trains_at_np2_and_deterministic_mode_is_bitwise(canary, small_config, tmp_path):
    out, stdout = assert_np1_np2_bitwise(canary, small_config, tmp_path, MLA)
    assert "mla (kv_rank 16, q_rank 12, rope_dim 8)" in stdout, stdout
    lines = (out / "metrics.tsv").read_text().splitlines()
    evals = [float(l.split("\t")[2]) for l in lines if l.startswith("eval")]
    assert evals[-1] < evals[0] - 0.5, evals
    with h5py.File(out / "probes.h5", "r") as f:
        assert f["attn/max_logit"].shape[1:] == (2, 2)  # [layer, head] as for standard attention
        assert np.all(f["attn/max_logit"][:] > 0)
        assert f["attn/kv_latent_rms"].shape[1:] == (2,) and f["attn/q_latent_rms"].shape[1:] == (2,)
        assert np.all(f["attn/kv_latent_rms"][:] > 0) and np.all(f["attn/q_latent_rms"][:] > 0)


def test_mla_resume_is_bitwise(canary, small_config, tmp_path):
    assert_resume_is_bitwise(canary, small_config, tmp_path, MLA, fault="abort:1:13")


def test_mla_with_muon(canary, small_config, tmp_path):
    out, _ = assert_np1_np2_bitwise(canary, small_config, tmp_path, (*MLA, "optim.name=muon"))
    for n, ortho in last_muon_ortho(out).items():
        if any(n.endswith(s) for s in ("wq_a", "wq_b", "wkv_a", "wkv_b", "attn.wo")):
            assert ortho > 0, n
        if "latent_norm" in n:
            assert ortho == 0, n  # gains stay with AdamW


@pytest.mark.parametrize("sets,message", [
    (["model.attention=mla", "model.rope_dim=3"], "model.rope_dim = 3 must be even"),
    (["model.attention=mla", "model.kv_rank=33"], "MLA latent ranks must not exceed model.dim"),
    (["model.attention=mla", "model.q_rank=40"], "MLA latent ranks must not exceed model.dim"),
    (["model.attention=mla", "model.pos=learned", "model.rope_dim=4"],
     "model.rope_dim = 4 needs model.pos = rope"),
    (["model.kv_rank=8"], "model.kv_rank is set (--set) but model.attention = mha"),
    (["model.attention=gqa"], "model.attention"),
])
def test_bad_mla_settings_are_refused(canary, small_config, tmp_path, sets, message):
    assert_refused(canary, small_config, tmp_path, sets, message)


def test_mla_allows_an_odd_head_dim(canary, small_config, tmp_path):
    """RoPE only rotates MLA's rope part, so the content head width may be odd."""
    out = tmp_path / "run"
    r = canary_np(canary, 0, *train_args(small_config, out, "model.attention=mla",
                                         "model.head_dim=15", "model.rope_dim=4",
                                         "train.steps=3"))
    assert r.returncode == 0, r.stdout + r.stderr
    r = canary_np(canary, 0, *train_args(small_config, tmp_path / "mha", "model.head_dim=15"))
    assert r.returncode == 1 and "must be even for RoPE" in r.stderr


def test_sweep_attention_by_experts(canary, small_config, tmp_path):
    """The issue's sweep: model.attention = mha, mla x model.experts = 0, 8, from one config."""
    study = tmp_path / "study.ini"
    study.write_text(small_config.read_text() + """
[model]
kv_rank = 16
top_k = 2
capacity_factor = 1.5
[sweep]
model.attention = mha, mla
model.experts = 0, 8
ranks_per_run = 1
""")
    out = tmp_path / "sweep"
    r = canary_np(canary, 2, "sweep", "--config", str(study), "--out", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [l.split("\t") for l in (out / "index.tsv").read_text().splitlines()[1:]]
    assert [(l[1], l[2]) for l in lines] == [("mha", "0"), ("mha", "8"), ("mla", "0"),
                                             ("mla", "8")]
    assert all(l[3] == "ok" for l in lines), lines
    for l in lines:
        with h5py.File(out / l[0] / "probes.h5", "r") as f:
            assert ("moe/load" in f) == (l[2] == "8")
            assert ("attn/kv_latent_rms" in f) == (l[1] == "mla")
        # every point's checkpoint evaluates (the MHA points' configs drop kv_rank, the dense
        # points' the MoE keys: the study's capacity_factor 1.5 only for MoE points)
        text = (out / l[0] / "config.ini").read_text()
        assert ("capacity_factor = 1.25\n" in text) == (l[2] == "0"), text
        ckpt = sorted((out / l[0] / "ckpt").glob("*.h5"))[-1]
        r = canary_np(canary, 0, "eval", "--checkpoint", str(ckpt))
        assert r.returncode == 0, r.stdout + r.stderr
    # and a dense MHA point resumes
    r = canary_np(canary, 0, "train", "--resume", str(out / lines[0][0]), "--set", "train.steps=24")
    assert r.returncode == 0, r.stdout + r.stderr
