#!/usr/bin/env bash
# MoE and MLA benchmark on config (b) of the core issue (d=256, L=4, T=256, B=8), 1 rank:
#   dense (mlp_ratio 8)  vs  MoE with 8 experts, top-2, mlp_ratio 4: the same active parameters
#   per token (2 x 4d hidden = 8d), so the same matmul FLOPs up to the router;
#   mha (the config as it is)  vs  mla (kv_rank 128 = d/2, rope_dim 32 = d_h/2): tokens/s and the
#   attention activations kept for backward.
# Repeats interleave the variants; prints each run's tokens/s and the medians and their ratio.
#   bench/moe.sh [THREADS (1)] [REPEATS (3)] [STEPS (6)]
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-1} repeats=${2:-3} steps=${3:-6}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads
declare -A variants=(
    [dense]="--set model.mlp_ratio=8"
    [moe]="--set model.experts=8 --set model.top_k=2 --set model.mlp_ratio=4"
    [mha]=""
    [mla]="--set model.attention=mla --set model.kv_rank=128 --set model.rope_dim=32"
)
order=(dense moe mha mla)
if [ -n "${CANARY_BENCH_EXTRA:-}" ]; then # more variants: "name=--set a=b --set c=d;name2=..."
    IFS=';' read -ra extra <<<"$CANARY_BENCH_EXTRA"
    for e in "${extra[@]}"; do
        variants[${e%%=*}]=${e#*=}
        order+=("${e%%=*}")
    done
fi
declare -A results
for ((i = 0; i < repeats; i++)); do
    for v in "${order[@]}"; do
        # shellcheck disable=SC2086
        line=$(./build/canary bench --config bench/configs/b.ini --steps "$steps" --warmup 2 \
            --set train.threads="$threads" ${variants[$v]})
        tps=$(echo "$line" | grep -oE 'canary_tokens_per_s=[0-9.]+' | cut -d= -f2)
        mib=$(echo "$line" | grep -oE 'accounted_mib=[0-9.]+' | cut -d= -f2)
        attn=$(echo "$line" | grep -oE 'attn_acts_mib=[0-9.]+' | cut -d= -f2)
        echo "$v run $i: $tps tokens/s, accounted $mib MiB, attention activations $attn MiB"
        results[$v]+="$tps "
    done
done
for v in "${order[@]}"; do
    echo "$v: median $(echo ${results[$v]} | tr ' ' '\n' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}') tokens/s"
done
med() { echo ${results[$1]} | tr ' ' '\n' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "moe / dense tokens/s: $(echo "$(med moe) / $(med dense)" | bc -l | cut -c1-5) (target >= 0.7)"
echo "mla / mha tokens/s: $(echo "$(med mla) / $(med mha)" | bc -l | cut -c1-5)"
