#!/usr/bin/env bash
# What the 5-minute CPU demo can afford: a VQ-VAE, then a 32-channel 8-layer prior on its codes,
# then the test-split report (48 samples), for the settings compared in bench/RESULTS.md.
#   bash bench/demo_settings.sh 128px-k512       # one setting (names below)
#   bash bench/demo_settings.sh                  # all of them, about 25 minutes
# Prints one line per setting: validate SSIM, prior steps, test NLL, nearest-real SSIM,
# memorised samples, pairwise SSIM of samples / of real slices.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prior="--channels 32 --layers 8 --epochs 1000"

vqvae() {  # NAME FLAGS...: train a VQ-VAE into $work/NAME
    local name=$1; shift
    .venv/bin/vqgen train-vqvae --run "$work/$name" --epochs 1000 "$@" >/dev/null
}

prior() {  # VQVAE NAME FLAGS...: a prior on a copy of that VQ-VAE's run, then the report
    local base=$1 name=$2; shift 2
    cp -r "$work/$base" "$work/$name"
    .venv/bin/vqgen train-prior --run "$work/$name" $prior "$@" >/dev/null
    .venv/bin/vqgen evaluate --run "$work/$name" --n-samples 48 >/dev/null
    .venv/bin/python - "$work/$name" "$name" <<'PY'
import json, sys
run, name = sys.argv[1:]
r = json.load(open(f"{run}/report.json"))
v = json.load(open(f"{run}/vqvae.json"))["metrics"]["val_ssim"]
steps = json.load(open(f"{run}/prior-last.json"))["step"]
s = r["samples"]
print(f"{name}: validate SSIM {v:.3f}  prior steps {steps}  test NLL {r['prior']['nll_bits']:.2f} "
      f"(uniform {r['prior']['uniform_bits']:.2f})  nearest-real {s['nearest_real_ssim']['mean']:.3f}  "
      f"memorised {s['memorised']}  pairwise {s['diversity_pairwise_ssim']:.3f} / "
      f"{s['real_pairwise_ssim']:.3f}", flush=True)
PY
}

run_setting() {
    case $1 in
        128px-k512) vqvae v128 --size 128 --max-minutes 2.5
                    prior v128 "$1" --max-minutes 1.5 ;;
        64px-k512)  vqvae v64 --size 64 --max-steps 1000
                    prior v64 "$1" --max-steps 500 ;;
        64px-k512-slice) [ -d "$work/v64" ] || vqvae v64 --size 64 --max-steps 1000
                    prior v64 "$1" --max-steps 500 --condition slice ;;
        64px-k64)   vqvae k64 --size 64 --codebook-size 64 --max-steps 600
                    prior k64 "$1" --max-minutes 2 ;;
        64px-k64-big-prior) [ -d "$work/k64" ] || vqvae k64 --size 64 --codebook-size 64 --max-steps 600
                    prior k64 "$1" --max-minutes 2 --channels 64 --layers 10 ;;
        64px-k64-slice) [ -d "$work/k64" ] || vqvae k64 --size 64 --codebook-size 64 --max-steps 600
                    prior k64 "$1" --max-minutes 2 --condition slice ;;
        64px-k128)  vqvae k128 --size 64 --codebook-size 128 --max-steps 600
                    prior k128 "$1" --max-minutes 2 ;;
        *) echo "unknown setting $1" >&2; exit 2 ;;
    esac
}

if [ $# -eq 0 ]; then
    set -- 128px-k512 64px-k512 64px-k512-slice 64px-k64 64px-k64-big-prior 64px-k64-slice 64px-k128
fi
for setting in "$@"; do run_setting "$setting"; done
