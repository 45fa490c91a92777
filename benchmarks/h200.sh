#!/usr/bin/env bash
# The GPU figures of issue #16 in ONE call of the `device` tool (benchmarks/h200.py says what
# each part measures; everything lands in $OUT as it is measured):
#
#   run(carry=[".devdata"], timeout_s=540, command="bash benchmarks/h200.sh")
#
# Its dry run, here on the CPU first (every part at toy size; TORCH_PYTHON: a Python with
# PyTorch for the reference data, e.g. a venv with `pip install torch==2.13.0 numpy pillow`):
#
#   TORCH_PYTHON=/tmp/torchenv/bin/python bash benchmarks/h200.sh --smoke
#
# .devdata (ignored by git) comes from `bash benchmarks/devdata.sh`: the Keras wheels for the
# GPU machine's Python 3.12, the JPEG copy of CIFAR-10 and the two reference scripts.
set -euo pipefail
case "${1:-}" in
  ""|--smoke) ;;
  *) echo "usage: bash benchmarks/h200.sh [--smoke]" >&2; exit 2 ;;
esac
for needed in .devdata/cifar10-jpeg.tar.gz .devdata/airbench94_muon.py; do
  [ -e "$needed" ] || { echo "error: $needed is missing: make .devdata with bash benchmarks/devdata.sh first" >&2; exit 2; }
done
export PYTHONUNBUFFERED=1 KERAS_BACKEND=jax TF_CPP_MIN_LOG_LEVEL=2
OUT=${OUT:-$(mktemp -d /tmp/h200-out-XXXXXX)}  # the device tool sets OUT to an empty folder
DATA=/tmp/h200-cifar
if [ "${1:-}" != --smoke ]; then  # the GPU machine has no Keras; here the pinned one is installed
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .devdata/whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
mkdir -p "$DATA" "$OUT"
[ -d "$DATA/train" ] || tar xzf .devdata/cifar10-jpeg.tar.gz -C "$DATA"
exec python3 -m benchmarks.h200 --data "$DATA" --out "$OUT" ${TORCH_PYTHON:+--torch-python "$TORCH_PYTHON"} "$@"
