#!/usr/bin/env bash
# Defaults at 128 px, by evidence: each setting trains both stages on mni152 at 128 px for the
# same wall-clock budget (VQ_MIN + PRIOR_MIN minutes, 12 + 18 by default), samples, and is
# scored on the validate split (never test). The prior's settings are the same for every row but
# the prior rows (d8l1-dil8), which train only a prior on another row's VQ-VAE (same WORK).
# Pin each run to one core to run two side by side:
#   WORK=/tmp/d CORES=0 bash bench/defaults_128.sh first d8l1-2lv4 &
#   WORK=/tmp/d CORES=1 bash bench/defaults_128.sh d8l1 d8l1-dil8 &
# Each row goes to bench/out/defaults_128/<setting>.md (or OUT/<setting>.md), its figures beside it.
# SEED (default 0) seeds both stages; PRIOR_FLAGS adds train-prior options to every row.
set -euo pipefail
cd "$(dirname "$0")/.."
vq_min=${VQ_MIN:-12}
prior_min=${PRIOR_MIN:-18}
seed=${SEED:-0}
cores=${CORES:-0-1}
out=${OUT:-bench/out/defaults_128}
work=${WORK:-$(mktemp -d)}
mkdir -p "$out"
py=${PY:-.venv/bin/python}
vqgen() { taskset -c "$cores" "$py" -m vqgen "$@"; }

flags_of() {
    case $1 in
        first) echo "--code-dim 64" ;;  # the first wave's defaults: 512 codes of 64 dims, MSE
        d8l1) echo "--code-dim 8 --l1-weight 1" ;;
        d8l1-2lv) echo "--code-dim 8 --l1-weight 1 --levels 2 --top-downsample 2" ;;
        d8l1-2lv4) echo "--code-dim 8 --l1-weight 1 --levels 2 --top-downsample 4" ;;
        d8l1-ds2) echo "--code-dim 8 --l1-weight 1 --downsample 2" ;;
        d8l1-dil8) echo "" ;;  # the d8l1 row's VQ-VAE, its prior dilated
        *) echo "unknown setting $1" >&2; exit 2 ;;
    esac
}

prior_flags_of() {  # the prior's settings beside the common ones
    case $1 in
        d8l1-dil8) echo "--dilation 8" ;;
        *) echo "" ;;
    esac
}

vqvae_of() {  # a prior setting trains only the prior, on this row's VQ-VAE
    case $1 in
        d8l1-dil8) echo d8l1 ;;
        *) echo "" ;;
    esac
}

run_setting() {
    local name=$1 run=$work/$1 log=$work/$1.log base
    base=$(vqvae_of "$name")
    if [ -n "$base" ]; then
        mkdir -p "$run" && cp "$work/$base"/vqvae*.json "$work/$base"/vqvae*.safetensors "$run/"
    fi
    # shellcheck disable=SC2046,SC2086
    if ! { { [ -n "$base" ] || vqgen train-vqvae --data mni152 --size 128 --run "$run" \
            --max-minutes "$vq_min" --seed "$seed" --no-tensorboard $(flags_of "$name"); } &&
        vqgen train-prior --run "$run" --condition slice --augment 2 --dropout 0 --max-minutes "$prior_min" \
            --seed "$seed" --no-tensorboard $(prior_flags_of "$name") ${PRIOR_FLAGS:-} &&
        vqgen evaluate --run "$run" --split validate --seed 0; } >"$log" 2>&1; then
        echo "setting $name failed:" >&2; tail -5 "$log" >&2; exit 1
    fi
    cp "$log" "$out/$name.log"
    for fig in eval_samples_nearest eval_reconstructions eval_outline_worst; do
        cp "$run/figures/$fig.png" "$out/$name-$fig.png" 2>/dev/null || true
    done
    "$py" bench/defaults_row.py "$run" "$name" | tee "$out/$name.md"
}

for name in "$@"; do
    run_setting "$name"
done
