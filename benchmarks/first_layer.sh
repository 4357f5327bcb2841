#!/usr/bin/env bash
# The default network's first layer frozen (whitening only) against trained from the same start
# (2×2 and 3×3 RGB kernels): the same 120 s budget, three class subsets, one run each, in one go so
# drifts in machine load hit every variant alike. On an AVX2-only CPU, or as one:
#   ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 bash benchmarks/first_layer.sh
# Results: benchmarks/results/first_layer_<variant>_<classes>.json
set -euo pipefail
budget="${BUDGET:-120}"
declare -A variants=(
  [frozen2]="model.fast_cnn.whiten_trainable=false model.fast_cnn.whiten_kernel=2"
  [trained2]="model.fast_cnn.whiten_trainable=true model.fast_cnn.whiten_kernel=2"
  [trained3]="model.fast_cnn.whiten_trainable=true model.fast_cnn.whiten_kernel=3"
)
for classes in "airplane automobile bird" "deer horse ship" "cat dog frog"; do
  for v in ${VARIANTS:-frozen2 trained2 trained3}; do
    # shellcheck disable=SC2086
    python -m benchmarks.time_to_accuracy --classes $classes --budget "$budget" --recipes default \
      --set ${variants[$v]} --name "first_layer_${v}_${classes// /-}" | grep -E "^run|^default"
  done
done
