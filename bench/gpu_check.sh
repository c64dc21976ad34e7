#!/usr/bin/env bash
# Both stages at 128 px on a GPU, one and two code levels side by side (sharing the GPU), each
# sampled and scored on the validate split; throughput from each verb's own lines; then the
# CUDA tests. Meant to finish in under 8 minutes on one recent GPU:
#   bash bench/gpu_check.sh [OUT]         (VQ_MIN=1.5 PRIOR_MIN=2.5 PY=python3 by default)
set -euo pipefail
out=${1:-bench/out/gpu}
py=${PY:-python3}
vq_min=${VQ_MIN:-1.5}
prior_min=${PRIOR_MIN:-2.5}
mkdir -p "$out"
vqgen() { "$py" -m vqgen "$@"; }
start=$(date +%s)
vqgen data mni152 --size 128 >/dev/null  # the slices, made once for both runs

one_run() {  # levels
  local run=$out/levels$1
  vqgen train-vqvae --data mni152 --size 128 --downsample 4 --levels "$1" --top-downsample 4 \
    --code-dim 8 --codebook-size 512 --l1-weight 1 --batch-size 64 --lr 2e-3 \
    --max-minutes "$vq_min" --run "$run" --overwrite
  vqgen train-prior --run "$run" --channels 64 --layers 12 --condition slice --augment 2 \
    --batch-size 64 --max-minutes "$prior_min" --overwrite
  vqgen sample --run "$run" --n 256 --seed 0
  vqgen evaluate --run "$run" --split validate --out "$run/report-validate.json"
}
one_run 1 >"$out/levels1.log" 2>&1 &
one_run 2 >"$out/levels2.log" 2>&1 &
wait
for levels in 1 2; do
  echo "== levels $levels (batch 64): VQ-VAE, prior, sampling; then the report"
  grep -E "validate SSIM|validate NLL|samples in|^│|error" "$out/levels$levels.log" || true
done
echo "== CUDA tests"
"$py" -m pytest -q -p no:cacheprovider tests/test_metrics.py tests/test_realism.py -k "cuda or gpu"
echo "== all in $(( $(date +%s) - start )) s"
