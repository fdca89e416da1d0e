"""Mixture of experts end to end: data-parallel training (deterministic mode bitwise across rank
counts), bit-exact resume, Muon on the expert and router matrices, the MoE probes, bad MoE
settings refused before training, the dead-expert window across a resume, and the PyTorch
reference's fast routing. The sweep over model.experts (with model.attention) is in test_mla.py."""
import h5py
import numpy as np
import pytest

from test_checkpoint import (assert_np1_np2_bitwise, assert_refused, assert_resume_is_bitwise,
                             canary_np, last_muon_ortho, train_args)

MOE = ("model.experts=4", "model.top_k=2", "model.shared_experts=1", "model.capacity_factor=1.0",
       "optim.balance_loss=0.05")


def test_moe_trains_at_np2_and_deterministic_mode_is_bitwise(canary, small_config, tmp_path):
    out, stdout = assert_np1_np2_bitwise(canary, small_config, tmp_path, MOE)
    assert "balance" in stdout and "router_z" in stdout  # the progress line logs them
    lines = (out / "metrics.tsv").read_text().splitlines()
    evals = [float(l.split("\t")[2]) for l in lines if l.startswith("eval")]
    assert evals[-1] < evals[0] - 0.5, evals  # it learns


def test_moe_probes(canary, small_config, tmp_path):
    out = tmp_path / "run"
    r = canary_np(canary, 0, *train_args(small_config, out, *MOE, "probes.dead_window=5",
                                         "model.experts=8"))
    assert r.returncode == 0, r.stdout + r.stderr
    with h5py.File(out / "probes.h5", "r") as f:
        assert f["loss/balance"].shape == (20,) and f["loss/router_z"].shape == (20,)
        total = f["loss/total"][:]
        parts = f["loss/ce"][:] + f["loss/z"][:] + f["loss/balance"][:] + f["loss/router_z"][:]
        assert np.allclose(total, parts, rtol=1e-12, atol=0)
        assert np.allclose(f["loss/aux"][:], f["loss/balance"][:] + f["loss/router_z"][:])
        # balance = 0.05 * E * sum f_i P_i: near 0.05 for balanced routing, at most 0.05 * E
        assert np.all(f["loss/balance"][:] > 0.04) and np.all(f["loss/balance"][:] < 0.05 * 8)
        load = f["moe/load"][:]
        assert load.shape == (6, 2, 8)  # probe rows at steps 3, 6, ..., 18; 2 MoE blocks; 8 experts
        assert np.allclose(load.sum(axis=2), 1.0)
        drop = f["moe/dropped"][:]
        assert np.all((drop >= 0) & (drop <= 1))
        ent = f["moe/router_entropy"][:]
        assert np.all((ent > 0) & (ent <= np.log(8) + 1e-9))
        assert np.all(f["moe/router_z"][:] > 0)
        dead = f["moe/dead_experts"][:]
        assert dead.shape == (6, 2) and np.all((dead >= 0) & (dead <= 8))
        assert "dead_window" in f["moe/dead_experts"].attrs["description"]


def test_moe_resume_is_bitwise(canary, small_config, tmp_path):
    assert_resume_is_bitwise(canary, small_config, tmp_path, MOE, fault="abort:0:13")


def test_moe_dead_expert_window_survives_resume(canary, small_config, tmp_path):
    """64 experts, top-1, 16 tokens a step: most experts go unchosen for the 3-step window, so
    dead counts change around the step-10 checkpoint; the resumed run must count them on from
    the checkpoint, not restart the window."""
    sets = ("model.experts=64", "model.top_k=1", "model.seq_len=8", "train.batch_size=2",
            "probes.dead_window=3", "probes.every=1")
    assert_resume_is_bitwise(canary, small_config, tmp_path, sets, np_=0)
    with h5py.File(tmp_path / "resumed" / "probes.h5", "r") as f:
        dead = f["moe/dead_experts"][:]
        steps = f["probe_step"][:]
    assert dead[steps >= 11].min() > 0, dead  # the window does see dead experts there
    ckpt = sorted((tmp_path / "resumed" / "ckpt").glob("step_*.h5"))[-1]
    with h5py.File(ckpt, "r") as f:
        age = f["state/moe_expert_age"][:]
    assert age.shape == (2, 64) and age.max() >= 3 and age.min() == 0


def test_moe_checkpoint_without_probes_has_no_expert_ages(canary, small_config, tmp_path):
    """Without probes nobody tracks which experts were chosen: the checkpoint leaves the ages out
    (rather than store every expert as unseen), and a resume with probes on starts the window."""
    out = tmp_path / "run"
    r = canary_np(canary, 0, *train_args(small_config, out, *MOE, "probes.enabled=false"))
    assert r.returncode == 0, r.stdout + r.stderr
    ckpt = sorted((out / "ckpt").glob("step_*.h5"))[-1]
    with h5py.File(ckpt, "r") as f:
        assert "moe_expert_age" not in f["state"]
    r = canary_np(canary, 0, "train", "--resume", str(out), "--set", "train.steps=24",
                  "--set", "probes.enabled=true", "--set", "probes.dead_window=2")
    assert r.returncode == 0, r.stdout + r.stderr


def test_moe_with_muon_shards_experts_and_router(canary, small_config, tmp_path):
    # NS sharded over 2 ranks gives the bits of 1 rank
    out, _ = assert_np1_np2_bitwise(canary, small_config, tmp_path, (*MOE, "optim.name=muon"))
    for n, ortho in last_muon_ortho(out).items():
        if ".mlp.router" in n or ".mlp.experts." in n or ".mlp.shared." in n:
            assert ortho > 0, n  # Muon orthogonalised it
        if n.endswith(".gain") or n in ("tok_embed", "head"):
            assert ortho == 0, n


@pytest.mark.parametrize("sets,message", [
    (["model.experts=4", "model.top_k=5"], "model.top_k = 5 exceeds model.experts = 4"),
    (["model.experts=4", "model.capacity_factor=0"], "model.capacity_factor = 0 is out of range"),
    (["model.experts=4", "model.capacity_factor=-1"], "out of range"),
    (["model.top_k=1"], "model.top_k is set (--set) but model.experts = 0"),
    (["optim.balance_loss=0.1"], "optim.balance_loss is set (--set) but model.experts = 0"),
    (["model.experts=4", "model.moe_every=3"], "model.moe_every = 3 exceeds model.layers = 2"),
    (["model.experts=1000000"], "model.experts = 1000000 is out of range"),
    (["model.experts=4", "model.top_k=1", "model.gate_renorm=true"],
     "model.gate_renorm with model.top_k = 1 makes every gate 1"),
    (["model.moe_group=32"], "model.moe_group is set (--set) but model.experts = 0"),
    (["model.experts=4", "model.moe_group=5"],
     "model.moe_group = 5 tokens neither divides model.seq_len = 32 nor is a multiple of it"),
    (["model.experts=4", "model.moe_group=64", "train.grad_accum=8"],
     "model.moe_group = 64 tokens does not divide a micro-batch of 1 sequences of 32 tokens"),
])
def test_bad_moe_settings_are_refused(canary, small_config, tmp_path, sets, message):
    assert_refused(canary, small_config, tmp_path, sets, message)


def test_torch_reference_fast_routing_matches_plain():
    """The PyTorch benchmark times the reference's vectorised routing (fast mode); it must route
    exactly as the written-out one the fixtures use — top-k order, ties to the lower expert,
    capacity by choice rank then token order — here on integer logits full of ties."""
    import os
    import sys
    import torch
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    import torch_model as tm
    gen = torch.Generator().manual_seed(3)
    dropped = 0
    for _ in range(300):
        n, e = (int(torch.randint(1, hi, (1,), generator=gen)) for hi in (40, 9))
        k = int(torch.randint(1, e + 1, (1,), generator=gen))
        cap = int(torch.randint(1, n + 1, (1,), generator=gen))
        r = torch.randint(-3, 3, (n, e), generator=gen).double()
        sel, keep = tm.route_plain(r, k, cap)
        fsel, fkeep = tm.route_fast(r, k, cap)
        assert torch.equal(sel, fsel) and torch.equal(keep, fkeep), (n, e, k, cap)
        dropped += int((~keep).sum())
    assert dropped > 0  # capacity did bind
