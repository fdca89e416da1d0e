#!/usr/bin/python3
"""Loads a canary checkpoint's /params by name into the independent PyTorch model
(tests/torch_model.py) and prints its loss on the first N x batch_size sequences of a token
file, in order (sequence k = tokens k*T .. k*T+T), the same sequences `canary eval --data`
uses. This is how a PyTorch user reads canary's weights; the tests compare the two losses.

    /usr/bin/python3 tests/torch_checkpoint.py CKPT.h5 TOKENS.bin [--batches N]"""
import argparse
import os
import sys
import tempfile

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_model as tm  # noqa: E402


def load_tokens(path):
    with open(path, "rb") as f:
        header = np.frombuffer(f.read(1024), dtype="<i4")
        assert header[0] == 20240520 and header[1] == 1, "not an llm.c token file"
        return np.frombuffer(f.read(), dtype="<u2")[: header[2]]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("tokens")
    ap.add_argument("--batches", type=int, default=1)
    args = ap.parse_args()
    with h5py.File(args.checkpoint, "r") as f:
        ini = f["config"].attrs["ini"]
        with tempfile.NamedTemporaryFile("w", suffix=".ini", delete=False) as tmp:
            tmp.write(ini)
        cfg = tm.load_config(tmp.name)
        os.unlink(tmp.name)
        params = {}
        for name, _ in tm.tensor_specs(cfg):
            params[name] = torch.tensor(np.array(f["params"][name]), dtype=torch.float64)
    T = cfg["model"]["seq_len"]
    n = args.batches * cfg["train"]["batch_size"]
    tokens = load_tokens(args.tokens).astype(np.int64)
    seqs = np.stack([tokens[k * T: k * T + T + 1] for k in range(n)])
    x = torch.tensor(seqs[:, :-1])
    y = torch.tensor(seqs[:, 1:])
    with torch.no_grad():
        logits = tm.forward(cfg, params, x)
        total, ce, z = tm.loss_parts(cfg, logits, y)
    print(f"torch loss {float(total):.17g} ce {float(ce):.17g} z {float(z):.17g}")


if __name__ == "__main__":
    main()
