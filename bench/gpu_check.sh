#!/usr/bin/env bash
# Both stages with the defaults, one and two code levels side by side (sharing the device), each
# sampled and scored on the validate split; throughput from each verb's own lines; then the
# CUDA tests. On one recent GPU it finishes in under 8 minutes:
#   bash bench/gpu_check.sh [OUT]
# The same on a CPU, tiny, to check the script itself (about 3 minutes on 2 cores):
#   DEVICE=cpu SIZE=32 VQ_MIN=0.1 PRIOR_MIN=0.1 SAMPLES=16 BATCH=16 bash bench/gpu_check.sh /tmp/g
# Settings (defaults): DEVICE auto, SIZE 128, VQ_MIN 1.5, PRIOR_MIN 2.5, SAMPLES 256,
# BATCH 64, PY python3.
set -euo pipefail
out=${1:-bench/out/gpu}
py=${PY:-python3}
device=${DEVICE:-auto}
size=${SIZE:-128}
batch=${BATCH:-64}
n=${SAMPLES:-256}
mkdir -p "$out"
vqgen() { "$py" -m vqgen "$@"; }
start=$(date +%s)
vqgen data mni152 --size "$size" >/dev/null  # the slices, made once for both runs

one_run() {  # levels
    local run=$out/levels$1 t0
    t0=$(date +%s)
    vqgen train-vqvae --data mni152 --size "$size" --levels "$1" --batch-size "$batch" \
        --max-minutes "${VQ_MIN:-1.5}" --device "$device" --run "$run" --overwrite
    vqgen train-prior --run "$run" --condition slice --batch-size "$batch" \
        --max-minutes "${PRIOR_MIN:-2.5}" --device "$device" --overwrite
    vqgen sample --run "$run" --n "$n" --seed 0 --device "$device"
    local t1; t1=$(date +%s)
    vqgen evaluate --run "$run" --split validate --n-samples "$n" --device "$device" \
        --out "$run/report-validate.json"
    echo "training and sampling $(( t1 - t0 )) s, evaluate $(( $(date +%s) - t1 )) s"
}
one_run 1 >"$out/levels1.log" 2>&1 &
one=$!
one_run 2 >"$out/levels2.log" 2>&1 &
two=$!
status=0
wait $one || status=1
wait $two || status=1
for levels in 1 2; do
    echo "== levels $levels (batch $batch, $size px, device $device)"
    grep -E "slices/s|grids/s|validate SSIM|validate NLL|samples in|s, evaluate|^│|rror" \
        "$out/levels$levels.log" | grep -vE "^(vqvae|prior) epoch" || true
    # the last rate each training loop printed
    grep -oE "[0-9]+ (slices|grids)/s" "$out/levels$levels.log" | tail -1 | sed 's/^/last rate: /'
done
[ $status = 0 ] || { echo "a run failed: see $out/levels1.log and $out/levels2.log" >&2; exit 1; }
if [ "$device" = cpu ]; then
    echo "== CUDA tests skipped: DEVICE=cpu"
else
    echo "== CUDA tests"
    "$py" -m pytest -q -p no:cacheprovider tests/test_metrics.py tests/test_realism.py \
        -k "cuda or gpu"
fi
echo "== all in $(( $(date +%s) - start )) s"
