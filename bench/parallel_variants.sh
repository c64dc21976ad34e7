#!/usr/bin/env bash
# Several bench/demo_variants.py runs at once on a many-core machine, each pinned to its own
# pair of cores with two threads, as if it had this project's 2-core machine to itself:
#   bash bench/parallel_variants.sh OUT "levels=1" "levels=2 --guidance 2" ...
# Each quoted argument is one run's settings; its table goes to OUT/vN.log.
set -u
out=$1
shift
mkdir -p "$out"
i=0
for setting in "$@"; do
  # shellcheck disable=SC2086  # a setting is several words on purpose
  CUDA_VISIBLE_DEVICES="" OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 taskset -c "$((2 * i)),$((2 * i + 1))" \
    "${PY:-python3}" bench/demo_variants.py "$out/v$i" $setting >"$out/v$i.log" 2>&1 &
  i=$((i + 1))
done
wait
