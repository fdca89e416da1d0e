#!/usr/bin/env bash
# Muon benchmark: the optimizer step against forward+backward on config (c) at np = 1 and 2
# (1 thread per rank), AdamW and Muon side by side. Prints canary bench's lines.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
for np in 1 2; do
    for opt in adamw muon; do
        line=$(mpiexec -n "$np" --oversubscribe ./build/canary bench --config bench/configs/c.ini \
            --steps 4 --warmup 1 --set train.threads=1 --set optim.name="$opt")
        echo "np=$np optim=$opt $(echo "$line" | grep -oE 'step_ms_median=[0-9.]+|optim_ms=[0-9.]+|grads_ms=[0-9.]+' | tr '\n' ' ')"
    done
done
