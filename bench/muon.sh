#!/usr/bin/env bash
# Muon benchmark: the optimizer step against forward+backward (incl. the gradient reduction) on
# config (c) at np = 1 and 2 (1 thread per rank), AdamW and Muon side by side; then Muon at np = 2
# with a global batch of 64 sequences, where Newton–Schulz (whose cost does not depend on the
# batch) falls below a tenth of forward+backward. Prints one line per run with the ratio.
#   bench/muon.sh [extra --set options for every run]
set -euo pipefail
cd "$(dirname "$0")/.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
run() { # np optimizer batch steps
    local line
    line=$(mpiexec -n "$1" --oversubscribe ./build/canary bench --config bench/configs/c.ini \
        --steps "$4" --warmup 1 --set train.threads=1 --set optim.name="$2" \
        --set train.batch_size="$3" "${@:5}")
    echo "$line" | awk -v np="$1" -v opt="$2" -v b="$3" '{
        for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        printf "np=%s optim=%-5s batch=%-3s step_ms=%9.1f optim_ms=%8.1f fwd_bwd_ms=%9.1f optim/fwd_bwd=%.1f%%\n",
            np, opt, b, v["step_ms_median"], v["optim_ms"], v["grads_ms"], 100 * v["optim_ms"] / v["grads_ms"]
    }'
}
for np in 1 2; do
    for opt in adamw muon; do
        run "$np" "$opt" 8 4 "$@"
    done
done
run 2 muon 64 2 "$@"
