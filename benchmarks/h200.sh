#!/usr/bin/env bash
# The GPU measurements of issues #3 (speed) and #6 (fast preset), one part per call of the
# `device` tool, each well inside its 10-minute limit (see ../shared/device.md for .devdata:
# the Keras, namex and optree wheels and the JPEG copy of CIFAR-10):
#
#   run(carry=[".devdata"], timeout_s=600, command="bash benchmarks/h200.sh PART")
#
# PART:
#   davidnet  the step benchmark and 5 seeds of the 24-epoch recipe, Keras's loop and the
#             scanned one, precompiled (targets 1, 3, 4, 5 of #3); about 5 minutes
#   epochs20  5 seeds of --epochs 20, target 0.91 (target 2 of #3); about 2 minutes
#   fast      10 seeds of --preset fast, alone (the bar of #6); about 2 minutes
#   ablation1, ablation2  the preset without each ingredient, 10 seeds each (#6's table)
#
# Everything it measures lands in $OUT (JSON, tables, logs), which the tool brings back.
set -euo pipefail
case "${1:-}" in
  davidnet|epochs20|fast|ablation1|ablation2) ;;
  *) echo "usage: bash benchmarks/h200.sh davidnet|epochs20|fast|ablation1|ablation2" >&2; exit 2 ;;
esac
export PYTHONUNBUFFERED=1 KERAS_BACKEND=jax
OUT=${OUT:-/tmp/out}
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .devdata/whl/*.whl
export PYTHONPATH=/tmp/site:$PWD
DATA=/tmp/cifar
mkdir -p "$DATA" "$OUT" && tar xzf .devdata/cifar10-jpeg.tar.gz -C "$DATA"
CACHE=/tmp/jax-cache
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.csv" || true

case "${1:-}" in
  davidnet)
    python3 -m benchmarks.davidnet --data-dir "$DATA" --seeds 5 --target 0.91 --precompile --loop fit \
      --compile-cache "$CACHE" --out "$OUT/davidnet24_fit.json" --results-dir /tmp/runs/fit 2>&1 | tee "$OUT/davidnet24_fit.log"
    python3 -m benchmarks.davidnet --data-dir "$DATA" --seeds 5 --target 0.91 --precompile --loop scan --skip-steps \
      --compile-cache "$CACHE" --out "$OUT/davidnet24_scan.json" --results-dir /tmp/runs/scan 2>&1 | tee "$OUT/davidnet24_scan.log"
    ;;
  epochs20)
    python3 -m benchmarks.davidnet --data-dir "$DATA" --seeds 5 --epochs 20 --target 0.91 --precompile --loop auto --skip-steps \
      --compile-cache "$CACHE" --out "$OUT/davidnet20.json" --results-dir /tmp/runs/e20 2>&1 | tee "$OUT/davidnet20.log"
    ;;
  fast)
    python3 -m experiments.fast_ablation --data-dir "$DATA" --only '' --seeds 0,1,2,3,4,5,6,7,8,9 \
      --compile-cache "$CACHE" --results-dir /tmp/fast 2>&1 | tee "$OUT/fast.log"
    cp /tmp/fast/table.csv "$OUT/fast_table.csv"
    ;;
  ablation1|ablation2)
    if [ "$1" = ablation1 ]; then only=whitening,dirac,gelu,frozen-bn-scale,alternating-flip; else only=translate,muon,head-lr,whiten-bias-epochs,label-smoothing,tta,lookahead; fi
    python3 -m experiments.fast_ablation --data-dir "$DATA" --only "$only" --seeds 0,1,2,3,4,5,6,7,8,9 \
      --compile-cache "$CACHE" --results-dir "/tmp/$1" 2>&1 | tee "$OUT/$1.log"
    cp "/tmp/$1/table.csv" "$OUT/$1_table.csv"
    ;;
esac
