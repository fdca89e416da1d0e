"""House style: every C file (and the one C++ shim) is formatted by .clang-format (DESIGN.md §11)."""
import shutil
import subprocess

import pytest

from conftest import ROOT


def test_c_sources_are_clang_formatted():
    exe = shutil.which("clang-format")
    if exe is None:
        pytest.fail("clang-format not found: ./tests/run installs it (Debian clang-format)")
    files = subprocess.run(["git", "ls-files", "*.c", "*.h", "*.cc"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    assert files and "data/bpe.cc" in files
    r = subprocess.run([exe, "--dry-run", "-Werror", *files], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 0, "run clang-format -i on:\n" + r.stderr[:3000]
