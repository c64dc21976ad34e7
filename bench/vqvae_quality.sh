#!/usr/bin/env bash
# Validate SSIM that `vqgen train-vqvae` reaches on the embedded mni152 data at 128x128 within a
# training budget (default 5 minutes), with the default model. Extra flags go to train-vqvae.
#   bash bench/vqvae_quality.sh                     # the README's figure
#   bash bench/vqvae_quality.sh --batch-size 32     # compare a setting
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${MINUTES:-5}
run=$(mktemp -d)
trap 'rm -rf "$run"' EXIT
.venv/bin/vqgen train-vqvae --data mni152 --size 128 --run "$run" --epochs 1000 \
    --max-minutes "$minutes" "$@"
