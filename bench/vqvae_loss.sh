#!/usr/bin/env bash
# The demo's first VQ-VAE (64 px, K 64, 16x16 grid) trained for the same wall-clock budget with
# different losses and capacities (codebook size, grid size, width), each scored on the validate
# split (never test): SSIM, brain SSIM, and the realism of its reconstructions (C2ST, KID,
# sharpness) beside the real-vs-real floor.
#   bash bench/vqvae_loss.sh              # all settings, 2 minutes each (about 22 minutes)
#   MINUTES=5 bash bench/vqvae_loss.sh adv  # one setting, another budget
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
minutes=${MINUTES:-2}
base="--size 64 --codebook-size 64 --max-minutes $minutes --seed 0"  # a setting's flag wins

run_setting() {
    local name=$1 flags
    case $name in
        mse) flags="" ;;
        l1) flags="--l1-weight 1" ;;
        adv) flags="--l1-weight 1 --adversarial --disc-start 1000 --disc-weight 0.5" ;;
        adv-early) flags="--l1-weight 1 --adversarial --disc-start 300 --disc-weight 0.5" ;;
        adv-strong) flags="--l1-weight 1 --adversarial --disc-start 1000 --disc-weight 1.0" ;;
        k512) flags="--l1-weight 1 --codebook-size 512" ;;
        grid32) flags="--l1-weight 1 --downsample 2" ;;
        hidden128) flags="--l1-weight 1 --hidden 128" ;;
        grid32-h32) flags="--l1-weight 1 --downsample 2 --hidden 32" ;;
        grid32-b32) flags="--l1-weight 1 --downsample 2 --batch-size 32" ;;
        grid32-lr1e3) flags="--l1-weight 1 --downsample 2 --lr 1e-3" ;;
        grid32-lr4e3) flags="--l1-weight 1 --downsample 2 --lr 4e-3" ;;
        grid32-lr8e3) flags="--l1-weight 1 --downsample 2 --lr 8e-3" ;;
        grid32-d8) flags="--l1-weight 1 --downsample 2 --code-dim 8" ;;
        grid32-d8-k256) flags="--l1-weight 1 --downsample 2 --code-dim 8 --codebook-size 256" ;;
        *) echo "unknown setting $name" >&2; exit 2 ;;
    esac
    local log="$work/$name.log"
    if ! { .venv/bin/vqgen train-vqvae --run "$work/$name" $base $flags &&
        .venv/bin/vqgen evaluate --run "$work/$name" --split validate; } >"$log" 2>&1; then
        echo "setting $name failed:" >&2; tail -3 "$log" >&2; exit 1
    fi
    mkdir -p "bench/out/vqvae_loss"
    cp "$work/$name/figures/eval_reconstructions.png" "bench/out/vqvae_loss/$name.png"
    .venv/bin/python - "$work/$name" "$name" <<'PY'
import json, sys
run, name = sys.argv[1:]
r = json.load(open(f"{run}/report.json"))
steps = json.load(open(f"{run}/vqvae-last.json"))["step"]
rec, re = r["reconstruction"], r["realism"]
c, f = re["reconstructions"], re["floor"]
print(f"| {name} | {steps} | {rec['ssim']['mean']:.3f} | {rec['brain_ssim_mean']:.3f} | "
      f"{c['sharpness']:.2f} | {c['c2st']['full']['accuracy']:.2f} (floor {f['c2st']['full']['accuracy']:.2f}) | "
      f"{c['kid']:.3f} (floor {f['kid']:.3f}) | {c['fid']:.1f} |", flush=True)
PY
}

echo "| setting | steps | SSIM | brain SSIM | sharpness | C2ST | KID | FID |"
echo "| --- | ---: | ---: | ---: | ---: | --- | --- | ---: |"
for name in ${@:-mse l1 adv adv-early adv-strong k512 grid32 hidden128}; do
    run_setting "$name"
done
