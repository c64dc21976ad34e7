#!/usr/bin/env bash
# train-vqvae's and train-prior's defaults at 128 px, by evidence: each setting trains both
# stages on mni152 for the same wall-clock budget (VQ_MIN + PRIOR_MIN minutes, 12 + 18 by
# default), then `vqgen evaluate --split validate` (never test) prints one table row. Each
# setting names its code dimension, L1 term, VQ-VAE optimiser and dilation, so that it keeps its
# meaning when a default changes. Pin each run to one core to run two side by side:
#   WORK=/tmp/d CORES=0 bash bench/defaults_128.sh first d8l1-2lv4 &
#   WORK=/tmp/d CORES=1 bash bench/defaults_128.sh d8l1 d8l1-dil1 &
# Settings:
#   first      the first defaults: 64-dimensional codes, MSE only, an undilated prior
#   d8l1       8-dimensional codes and an L1 term, a prior dilated up to 8 (the defaults)
#   d8l1-2lv   the same on two levels, a 16x16 top grid over the 32x32 one
#   d8l1-2lv4  the same on two levels, an 8x8 top grid
#   d8l1-dil1  d8l1's VQ-VAE (same WORK, after d8l1), its prior undilated
#   d8l1-muon  d8l1 with the VQ-VAE trained by Muon (--optimizer muon)
# Every prior is slice-conditioned, with --augment 2 --dropout 0, and the prior's other
# defaults (--ema 0.99). Environment (defaults): SEED 0 (both stages), PRIOR_FLAGS (added to
# every train-prior, e.g. "--cond-dropout 0.1" for a guided prior), CORES 0-1, SIZE 128,
# SAMPLES 256, WORK a new temporary folder, OUT bench/out/defaults_128 (each row's log, table
# row and figures), PY .venv/bin/python. A quick check that it runs (a few minutes):
#   SIZE=32 VQ_MIN=0.1 PRIOR_MIN=0.1 SAMPLES=32 bash bench/defaults_128.sh d8l1 d8l1-dil1
set -euo pipefail
cd "$(dirname "$0")/.."
vq_min=${VQ_MIN:-12}
prior_min=${PRIOR_MIN:-18}
seed=${SEED:-0}
cores=${CORES:-0-1}
size=${SIZE:-128}
samples=${SAMPLES:-256}
out=${OUT:-bench/out/defaults_128}
work=${WORK:-$(mktemp -d)}
py=${PY:-.venv/bin/python}
mkdir -p "$out" "$work"
vqgen() { taskset -c "$cores" "$py" -m vqgen "$@"; }

vqvae_flags() {
    case $1 in
        first) echo "--code-dim 64 --l1-weight 0 --optimizer adamw" ;;
        d8l1) echo "--code-dim 8 --l1-weight 1 --optimizer adamw" ;;
        d8l1-2lv) echo "--code-dim 8 --l1-weight 1 --optimizer adamw --levels 2 --top-downsample 2" ;;
        d8l1-2lv4) echo "--code-dim 8 --l1-weight 1 --optimizer adamw --levels 2 --top-downsample 4" ;;
        d8l1-dil1) echo "" ;;
        d8l1-muon) echo "--code-dim 8 --l1-weight 1 --optimizer muon" ;;
        *) echo "unknown setting $1" >&2; exit 2 ;;
    esac
}

prior_flags() {
    case $1 in
        first | d8l1-dil1) echo "--dilation 1" ;;
        *) echo "--dilation 8" ;;
    esac
}

vqvae_of() {  # a setting that trains only a prior, on this setting's VQ-VAE
    case $1 in
        d8l1-dil1) echo d8l1 ;;
        *) echo "" ;;
    esac
}

row() {  # RUN NAME: one Markdown table row of the run's validate report, and its floor
    "$py" - "$1" "$2" <<'PY'
import json, sys
from pathlib import Path
run, name = Path(sys.argv[1]), sys.argv[2]
r = json.loads((run / "report-validate.json").read_text())
steps = [json.loads((run / f"{s}-last.json").read_text())["step"] for s in ("vqvae", "prior")]
rec, realism = r["reconstruction"], r["realism"]
s, c, f, o = (realism[k] for k in ("samples", "reconstructions", "floor", "outline"))
def scales(x):
    return " / ".join(f"{x['c2st'][k]['accuracy']:.2f}" for k in ("full", "half"))
print("| setting | steps VQ-VAE / prior | SSIM | brain SSIM | recon KID | recon sharpness | "
      "prior NLL | sample KID | recall | sample C2ST full / half | atypical outlines |")
print(f"| {name} | {steps[0]} / {steps[1]} | {rec['ssim']['mean']:.3f} | "
      f"{rec['brain_ssim_mean']:.3f} | {c['kid']:.3f} | {c['sharpness']:.2f} | "
      f"{r['prior']['nll_bits']:.2f} | {s['kid']:.3f} | {s['recall']:.2f} | {scales(s)} | "
      f"{o['samples']['atypical']:.2f} |")
print(f"floor (real train slices): KID {f['kid']:.3f}, sharpness {f['sharpness']:.2f}, "
      f"recall {f['recall']:.2f}, C2ST {scales(f)}, atypical outlines {o['floor']['atypical']:.2f}")
PY
}

run_setting() {
    local name=$1 run=$work/$1 log=$work/$1.log base
    vqvae_flags "$name" >/dev/null  # refuse an unknown name before any work
    base=$(vqvae_of "$name")
    if [ -n "$base" ]; then
        rm -rf "$run" && mkdir -p "$run"
        cp "$work/$base"/vqvae*.json "$work/$base"/vqvae*.safetensors "$run/"
    fi
    # shellcheck disable=SC2046,SC2086  # the flags are several words on purpose
    if ! { { [ -n "$base" ] || vqgen train-vqvae --data mni152 --size "$size" --run "$run" \
            --max-minutes "$vq_min" --seed "$seed" --no-tensorboard --overwrite \
            $(vqvae_flags "$name"); } &&
        vqgen train-prior --run "$run" --condition slice --augment 2 --dropout 0 \
            --max-minutes "$prior_min" --seed "$seed" --no-tensorboard --overwrite \
            $(prior_flags "$name") ${PRIOR_FLAGS:-} &&
        vqgen evaluate --run "$run" --split validate --n-samples "$samples" --seed 0 \
            --out "$run/report-validate.json"; } >"$log" 2>&1; then
        echo "setting $name failed:" >&2; tail -5 "$log" >&2; exit 1
    fi
    cp "$log" "$out/$name.log"
    for fig in eval_samples_nearest eval_reconstructions eval_outline_worst; do
        cp "$run/figures/$fig.png" "$out/$name-$fig.png" 2>/dev/null || true
    done
    row "$run" "$name" | tee "$out/$name.md"
}

for name in "$@"; do
    run_setting "$name"
done
