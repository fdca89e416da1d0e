"""The layout DESIGN.md §1, §9 and §11 ask for, checked on the sources: MPI only in dist/, HDF5
only behind the probes/h5 wrapper, BLAS only in model/matmul.c (and the core selection of
model/blas_core.c), losses/ free of model/ headers, model_mla.c and model_moe.c not calling back
into model.c, files of at most ~500 lines and launch/ functions of at most 100."""
import glob
import os
import re

from conftest import ROOT

SOURCES = sorted(p for p in glob.glob(os.path.join(ROOT, "*", "*.[ch]"))
                 if os.path.relpath(p, ROOT).split(os.sep)[0] not in ("tests", "build")
                 and not os.path.relpath(p, ROOT).startswith("build"))


def _rel(path):
    return os.path.relpath(path, ROOT)


def _text(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def _offenders(pattern, allowed):
    rx = re.compile(pattern, re.M)
    return [_rel(p) for p in SOURCES if rx.search(_text(p)) and not allowed(_rel(p))]


def test_sources_found():
    assert len(SOURCES) > 50 and "model/matmul.c" in map(_rel, SOURCES)


def test_mpi_only_in_dist():
    assert _offenders(r'^#include <mpi\.h>', lambda p: p.startswith("dist/")) == []


def test_hdf5_only_behind_the_wrapper():
    assert _offenders(r'^#include <hdf5(_hl)?\.h>',
                      lambda p: re.fullmatch(r"probes/h5(_\w+)?\.[ch]", p) is not None) == []


def test_blas_only_in_model_matmul():
    assert _offenders(r'^#include <cblas\.h>|\bcblas_\w+\(|\bopenblas_\w+\(',
                      lambda p: p in ("model/matmul.c", "model/blas_core.c")) == []


def test_cxx_only_in_the_sentencepiece_shim():
    cxx = sorted(_rel(os.path.join(d, f)) for d, _, files in os.walk(ROOT) for f in files
                 if f.endswith((".cc", ".cpp", ".cxx", ".C"))
                 and not _rel(d).startswith(("build", "tests", ".git")))
    assert cxx == ["data/bpe.cc"]
    # the C side sees SentencePiece only through data/bpe.h
    assert _offenders(r'^#include <sentencepiece', lambda p: False) == []
    assert "#include <sentencepiece_trainer.h>" in _text(os.path.join(ROOT, "data", "bpe.cc"))


def test_losses_use_no_model_header():
    assert _offenders(r'^#include "model/', lambda p: not p.startswith("losses/")) == []


def test_block_files_do_not_call_into_model_c():
    """model.c assembles the blocks and calls model_mla.c and model_moe.c; shared helpers live
    in model_shared.c, so no call goes back."""
    defined = set(re.findall(r'^(?!static)[a-z][\w \*]*?\b(\w+)\(', _text(
        os.path.join(ROOT, "model", "model.c")), re.M))
    assert "model_forward" in defined
    for name in ("model_mla.c", "model_moe.c"):
        body = _text(os.path.join(ROOT, "model", name))
        calls = sorted(f for f in defined if re.search(r'\b%s\(' % f, body))
        assert calls == [], f"model/{name} calls model.c's {calls}"


def test_files_stay_small():
    big = [(_rel(p), n) for p in SOURCES if p.endswith(".c")
           for n in [_text(p).count("\n")] if n > 520]
    assert big == [], f"split these by responsibility: {big}"


def _functions(text):
    """(name, lines) of each function definition whose body opens with '{' in column 0."""
    lines = text.split("\n")
    out, start = [], None
    for i, line in enumerate(lines):
        if line == "{":
            j = i - 1
            while j > 0 and not re.match(r"[a-z]", lines[j]):
                j -= 1
            m = re.search(r"(\w+)\(", lines[j])
            start = (m.group(1) if m else "?", j)
        elif line == "}" and start:
            out.append((start[0], i - start[1] + 1))
            start = None
    return out


def test_launch_functions_read_as_phases():
    long = [(_rel(p), name, n) for p in SOURCES if _rel(p).startswith("launch/")
            and p.endswith(".c") for name, n in _functions(_text(p)) if n > 100]
    assert long == [], f"split these by phase: {long}"
