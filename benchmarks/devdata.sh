#!/usr/bin/env bash
# Makes .devdata, what benchmarks/h200.sh carries to the GPU machine (git ignores it; about 25 MB,
# under the device tool's 64 MiB):
#   whl/                   Keras (the version requirements.txt pins), namex and optree for Python 3.12
#   cifar10-jpeg.tar.gz    the JPEG copy of CIFAR-10 (../shared/data)
#   airbench94_muon.py     from KellerJordan/cifar10-airbench, and cifar10_speedrun.py from
#   cifar10_speedrun.py    hiverge/cifar10-speedrun: measuring sticks, never part of the project
#   references.txt         which commit each script came from
#
#   bash benchmarks/devdata.sh AIRBENCH_GIT_DIR [HIVERGE_GIT_DIR]
#
# The git folders are the repositories' clones (a session's `fetch` tool gives them:
# github:KellerJordan/cifar10-airbench and github:hiverge/cifar10-speedrun).
set -euo pipefail
[ $# -ge 1 ] && [ $# -le 2 ] || { echo "usage: bash benchmarks/devdata.sh AIRBENCH_GIT_DIR [HIVERGE_GIT_DIR]" >&2; exit 2; }
mkdir -p .devdata/whl
: > .devdata/references.txt
copy() {  # git folder, file
  git --git-dir="$1" cat-file -e "HEAD:$2" 2>/dev/null || { echo "error: $1 has no $2 at HEAD" >&2; exit 2; }
  git --git-dir="$1" show "HEAD:$2" > ".devdata/$2"
  echo "$2 $(git --git-dir="$1" rev-parse HEAD)" >> .devdata/references.txt
}
copy "$1" airbench94_muon.py
[ $# -lt 2 ] || copy "$2" cifar10_speedrun.py
cp ../shared/data/cifar10-jpeg.tar.gz .devdata/
keras=$(grep -E '^keras==' requirements.txt | cut -d' ' -f1)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .devdata/whl "$keras" namex optree
du -sh .devdata
