#!/usr/bin/env bash
# The demo's prior (32 channels, 8 layers, slice-conditioned) on the codes of one VQ-VAE run,
# trained for the same wall-clock budget with and without dropout and augmented grids, each
# scored on the validate split (never test): validate NLL, samples' realism beside the floor.
#   bash bench/prior_generalise.sh RUN                  # all settings, 2 minutes each
#   MINUTES=30 bash bench/prior_generalise.sh RUN both  # one setting, another budget
#   EXTRA="--augment 6 --dropout 0.1" bash bench/prior_generalise.sh RUN augment attention
#                                                       # EXTRA's flags win over the settings'
# RUN is a run holding a VQ-VAE, e.g. one `vqgen demo --run RUN` made; it is not changed.
set -euo pipefail
cd "$(dirname "$0")/.."
base_run=$1; shift
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
minutes=${MINUTES:-2}
prior="--channels 32 --layers 8 --condition slice --max-minutes $minutes --seed 0"  # the last flag wins

run_setting() {
    local name=$1 flags
    case $name in
        plain) flags="" ;;
        dropout) flags="--dropout 0.1" ;;
        augment) flags="--augment 2" ;;
        both) flags="--dropout 0.1 --augment 2" ;;
        augment4) flags="--dropout 0.1 --augment 4" ;;
        deep) flags="--augment 2 --layers 12" ;;
        wide) flags="--augment 2 --channels 48" ;;
        attention) flags="--augment 2 --attention" ;;
        *) echo "unknown setting $name" >&2; exit 2 ;;
    esac
    mkdir -p "$work/$name"
    cp "$base_run"/vqvae* "$work/$name/"
    local start=$(date +%s.%N)
    .venv/bin/vqgen train-prior --run "$work/$name" $prior $flags ${EXTRA:-} >/dev/null 2>&1
    local took=$(echo "$(date +%s.%N) - $start" | bc)
    .venv/bin/vqgen evaluate --run "$work/$name" --split validate >/dev/null 2>&1
    mkdir -p bench/out/prior_generalise
    cp "$work/$name/figures/eval_samples_nearest.png" "bench/out/prior_generalise/$name.png"
    .venv/bin/python - "$work/$name" "$name" "$took" <<'PY'
import json, sys
run, name, took = sys.argv[1:]
r = json.load(open(f"{run}/report.json"))
meta = json.load(open(f"{run}/prior-last.json"))
log = [json.loads(x) for x in open(f"{run}/metrics-prior.jsonl")]
vals = [x["val_bits"] for x in log if "val_bits" in x]
best = min(vals)
falling = "yes" if vals[-1] <= best + 1e-9 else f"no (best {best:.2f} at epoch {vals.index(best) + 1} of {len(vals)})"
s, re = r["samples"], r["realism"]
c, f = re["samples"], re["floor"]
print(f"| {name} | {meta['step']} | {float(took):.0f} | {r['prior']['nll_bits']:.3f} | {falling} | "
      f"{s['nearest_real_ssim']['mean']:.3f} | {s['memorised']} | "
      f"{c['c2st']['full']['accuracy']:.2f} (floor {f['c2st']['full']['accuracy']:.2f}) | "
      f"{c['kid']:.3f} (floor {f['kid']:.3f}) | {c['sharpness']:.2f} |", flush=True)
PY
}

echo "| prior | steps | seconds | validate NLL | still falling at the end | nearest-real SSIM | memorised | C2ST | KID | sharpness |"
echo "| --- | ---: | ---: | ---: | --- | ---: | ---: | --- | --- | ---: |"
for name in ${@:-plain dropout augment both}; do
    run_setting "$name"
done
