#!/usr/bin/env bash
# Every GPU check in one go, meant to fit in 8 minutes on an H100/H200. Run it whenever a GPU is
# at hand and put its numbers in the README:
#   1. the GPU recipe under torch.compile, and its step loop reading nothing back from the device
#      (tests/test_gpu_recipe.py: the sync-free test runs only where CUDA is);
#   2. time to 90.6 % test accuracy on all 10 classes: 5 timed runs after a warm-up, median and spread;
#   3. the accuracy reached in a 10 s training budget, 5 runs;
#   4. the notebook recipe's training images/s with batched AutoAugment (and without it).
#
#   bash benchmarks/gpu_all.sh                     # on the GPU machine, from the repo's root
#   DEVICE=cpu RUNS=1 QUICK=1 bash benchmarks/gpu_all.sh   # the same plumbing on a CPU, in a minute
#
# Data: CIFAR10_MIRROR if set, else the compact copy ../shared/cifar10-gpu (or ./shared/cifar10-gpu)
# unpacked to /tmp/c10. Results: benchmarks/results/gpu_all_*.json and autoaugment_<device>.json, and a
# summary line per check in benchmarks/results/gpu_all_<device>.txt; where OUT names a folder (a
# remote GPU machine's folder that comes back), copies of them there too. A failed check is
# reported and the rest still run.
# Python packages it needs: torch, torchvision, pydantic, pyyaml, numpy, tqdm, pytest. A GPU image
# with PyTorch often lacks pydantic; on a machine that cannot download, bring its wheels in .whl/
# (pydantic, pydantic-core, annotated-types, typing-inspection, for the machine's Python: `pip
# download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d .whl
# …`) and this script installs them into /tmp/site first.
set -euo pipefail
device="${DEVICE:-cuda}"
runs="${RUNS:-5}"
# GPU images often have only python3 (no `python`); PYTHON picks another interpreter.
py="${PYTHON:-$(command -v python || command -v python3 || true)}"
[ -n "$py" ] || { echo "gpu_all.sh: neither python nor python3 is on PATH; set PYTHON" >&2; exit 2; }
if ! "$py" -c "import pydantic" 2>/dev/null; then
  if compgen -G ".whl/*.whl" >/dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  "$py" -c "import pydantic" 2>/dev/null || {
    echo "gpu_all.sh: pydantic is missing: pip install 'pydantic>=2.5,<3', or put its wheels in .whl/ (see the header)" >&2
    exit 2
  }
fi
out="benchmarks/results/gpu_all_${device}.txt"
if [ -z "${CIFAR10_MIRROR:-}" ]; then
  for compact in ../shared/cifar10-gpu shared/cifar10-gpu; do
    if [ -f "$compact/unpack.py" ]; then
      "$py" "$compact/unpack.py" /tmp/c10 && export CIFAR10_MIRROR=/tmp/c10
      break
    fi
  done
fi
: "${CIFAR10_MIRROR:?set CIFAR10_MIRROR to a CIFAR-10 python layout, or put shared/cifar10-gpu beside the repo}"

quick=()
tests="synchronise or reads_nothing or compiles"
if [ -n "${QUICK:-}" ]; then  # tiny sizes: checks that every step runs, measures nothing
  quick=(--classes cat ship --train-per-class 60 --set train.batch_size=32 train.epochs=1
         train.compile=false "model.fast_cnn.widths=[8,16,16]")
  tests="reads_nothing"
fi

mkdir -p benchmarks/results
: >"$out"
started=$(date +%s)
failed=0
step() {  # name, command...: run it, keep its last line, say how long it took
  # A failed check is reported and the next one still runs: a GPU session is short, and one
  # error should not cost the numbers of the others.
  local name="$1" t0 t1 last rc=0
  shift
  t0=$(date +%s)
  echo "== $name: $*"
  "$@" 2>&1 | tee "/tmp/gpu_all_step.log" || rc=$?
  last=$(grep -v '^wrote' /tmp/gpu_all_step.log | tail -n 1 || true)  # a step may print nothing
  t1=$(date +%s)
  if [ "$rc" -ne 0 ]; then
    failed=$((failed + 1))
    last="FAILED (exit $rc): $last"
  fi
  echo "$name ($((t1 - t0)) s): $last" | tee -a "$out"
}

step "tests" "$py" -m pytest -q tests/test_gpu_recipe.py -k "$tests" -p no:cacheprovider
step "time to 0.906" "$py" -m benchmarks.gpu_recipe --device "$device" --runs "$runs" --target 0.906 \
  --name "gpu_all_target_${device}" "${quick[@]}"
step "accuracy in 10 s" "$py" -m benchmarks.gpu_recipe --device "$device" --runs "$runs" --budget 10 \
  --name "gpu_all_10s_${device}" "${quick[@]}"
if [ -n "${QUICK:-}" ]; then
  step "notebook recipe, AutoAugment" "$py" -m benchmarks.autoaugment_speed --device "$device" \
    --batches 16 --rounds 1 --steps 1
else
  step "notebook recipe, AutoAugment" "$py" -m benchmarks.autoaugment_speed --device "$device"
fi
echo "all GPU checks: $(($(date +%s) - started)) s, $failed failed" | tee -a "$out"
if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then
  cp benchmarks/results/gpu_all_*"${device}"* benchmarks/results/autoaugment_"${device}".json "$OUT"/ 2>/dev/null || true
fi
[ "$failed" -eq 0 ]
