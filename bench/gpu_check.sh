#!/usr/bin/env bash
# What a GPU does with vqgen's defaults, in one short window: for each size and number of code
# levels, both stages trained for a few minutes, sampled and scored on the validate split, with
# the throughput of each stage and the report's time; then the CUDA tests; then one line per
# figure, ready to paste into bench/README.md. About 11 minutes on one recent GPU:
#   bash bench/gpu_check.sh [OUT]
# On a machine without the package installed (a bare GPU image), it installs it first, from
# WHEELS=DIR (wheels carried along, no index) or else from the package index.
# The same on a CPU, tiny, checks the script itself (the test suite runs this, about 2 minutes):
#   DEVICE=cpu SIZES=32 VQ_STEPS=4 PRIOR_STEPS=4 SAMPLES=16 bash bench/gpu_check.sh /tmp/g
# Settings (defaults): DEVICE auto, SIZES "128 256", LEVELS "1 2", VQ_MIN 1, PRIOR_MIN 1.5 (or
# VQ_STEPS / PRIOR_STEPS in place of minutes), SAMPLES 256, PY python3. The batch size is the
# device's default (vqgen.device.DEVICE_BATCH); both level runs of a size share the device.
set -euo pipefail
out=${1:-bench/out/gpu}
py=${PY:-python3}
device=${DEVICE:-auto}
n=${SAMPLES:-256}
mkdir -p "$out"
start=$(date +%s)

if ! "$py" -c "import vqgen, nilearn, prdc" 2>/dev/null; then
    echo "== installing vqgen and what it needs"
    if [ -n "${WHEELS:-}" ]; then
        "$py" -m pip install -q --no-index --no-deps --target "$out/site" "$WHEELS"/*.whl
        export PYTHONPATH="$PWD:$out/site${PYTHONPATH:+:$PYTHONPATH}"
    else
        "$py" -m pip install -q -e ".[dev]"
    fi
fi
vqgen() { "$py" -m vqgen "$@"; }
budget() {  # stage: --max-steps where given, else --max-minutes
    local steps minutes
    if [ "$1" = vqvae ]; then steps=${VQ_STEPS:-}; minutes=${VQ_MIN:-1}; else
        steps=${PRIOR_STEPS:-}; minutes=${PRIOR_MIN:-1.5}; fi
    if [ -n "$steps" ]; then echo "--max-steps $steps"; else echo "--max-minutes $minutes"; fi
}

one_run() {  # size levels
    local run=$out/size$1-levels$2 t0 t1
    vqgen train-vqvae --data mni152 --size "$1" --levels "$2" $(budget vqvae) \
        --device "$device" --run "$run" --overwrite
    vqgen train-prior --run "$run" --condition slice $(budget prior) --device "$device" \
        --overwrite
    t0=$(date +%s)
    vqgen sample --run "$run" --n "$n" --seed 0 --device "$device"
    t1=$(date +%s)
    vqgen evaluate --run "$run" --split validate --n-samples "$n" --device "$device" \
        --out "$run/report-validate.json"
    echo "timing: sample $(( t1 - t0 )) s, evaluate $(( $(date +%s) - t1 )) s"
}

status=0
rows=()
for size in ${SIZES:-128 256}; do
    vqgen data mni152 --size "$size" >/dev/null  # the slices, made once for both runs
    pids=()
    for levels in ${LEVELS:-1 2}; do
        one_run "$size" "$levels" >"$out/size$size-levels$levels.log" 2>&1 &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || status=1; done
    for levels in ${LEVELS:-1 2}; do
        log=$out/size$size-levels$levels.log
        echo "== $size px, $levels level(s), device $device: $log"
        grep -E "^(vqvae|prior): batch|validate SSIM|validate NLL|^timing|rror" "$log" || true
        # the rate of the last epoch of each stage, from its validation line
        vq=$(grep -E "^vqvae epoch.*val_" "$log" | grep -oE "[0-9]+ slices/s" | tail -1 || true)
        pr=$(grep -E "^prior epoch.*val_" "$log" | grep -oE "[0-9]+ grids/s" | tail -1 || true)
        ev=$(grep -oE "evaluate [0-9]+ s" "$log" | tail -1 || true)
        rows+=("| $(date +%F) | $device | $size px, $levels level(s) | vqvae ${vq%% *} slices/s | prior ${pr%% *} grids/s | ${ev:-evaluate failed} ($n samples) |")
    done
done

if [ "$device" = cpu ]; then
    echo "== CUDA tests skipped: DEVICE=cpu"
else
    echo "== CUDA tests"
    "$py" -m pytest -q -p no:cacheprovider tests/test_metrics.py tests/test_realism.py \
        -k "cuda or gpu" || status=1
fi
echo "== for bench/README.md (device: $("$py" -c "import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"))"
printf '%s\n' "${rows[@]}"
echo "== all in $(( $(date +%s) - start )) s"
[ $status = 0 ] || { echo "a run failed: see the logs in $out" >&2; exit 1; }
