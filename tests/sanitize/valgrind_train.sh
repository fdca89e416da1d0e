#!/usr/bin/env bash
# A short training run (3 steps of a small model, a checkpoint, probes, evaluation) under
# valgrind memcheck: exit 0 only with no memory error and no definite leak in canary's code.
# The binary must be built without -march=native (CANARY_NATIVE=OFF): valgrind does not decode
# AVX-512. Usage: valgrind_train.sh CANARY_BINARY SOURCE_DIR WORK_DIR
set -euo pipefail
bin=$1 src=$2 work=$3
rm -rf "$work" && mkdir -p "$work"
"$bin" tokenize "$src/README.md" "$work/tokens.bin" >/dev/null
cat >"$work/small.ini" <<INI
[model]
dim = 32
layers = 2
heads = 2
seq_len = 32
vocab = 256
qk_norm = true
[train]
steps = 3
batch_size = 4
checkpoint_every = 2
eval_batches = 1
threads = 1
[probes]
every = 1
lr_probe_every = 2
[data]
train = $work/tokens.bin
INI
# --trace-children: canary may re-execute itself on another OpenBLAS core (blas_core.c), and
# the training would then run unwatched. set -e is off around the run, so that its log is
# printed when valgrind fails.
set +e
OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 valgrind -q --error-exitcode=9 --leak-check=full \
    --show-leak-kinds=definite --errors-for-leak-kinds=definite --trace-children=yes \
    --suppressions=/usr/share/openmpi/openmpi-valgrind.supp \
    --suppressions="$src/tests/sanitize/valgrind.supp" \
    "$bin" train --config "$work/small.ini" --out "$work/run" >"$work/out.txt" 2>"$work/valgrind.txt"
status=$?
set -e
cat "$work/valgrind.txt"
echo "valgrind memcheck: exit $status (0 = no error, no definite leak)"
exit $status
