#!/usr/bin/env bash
# Times compress's executor against ONNX Runtime on the sample models, in the same run and at the same
# thread counts: latency at batch 1 and throughput at batch 64, single thread and all threads. Runs of the
# two runtimes are interleaved so that load from elsewhere on a shared machine hits both alike.
# Prints a Markdown table with the ratios (ours / ONNX Runtime; below 1 means we are faster).
#
#   bench/compare_ort.sh [--min-seconds S] [MODEL ...]      (default: models/{mlp,cnn,vit}.onnx)
set -euo pipefail
cd "$(dirname "$0")/.."
min_seconds=3
models=()
while [ $# -gt 0 ]; do
  case "$1" in
    --min-seconds) min_seconds="$2"; shift 2 ;;
    *) models+=("$1"); shift ;;
  esac
done
[ ${#models[@]} -gt 0 ] || models=(models/mlp.onnx models/cnn.onnx models/vit.onnx)

tools/setup.sh --tests >/dev/null
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DCOMPRESS_BUILD_TESTS=OFF >/dev/null
cmake --build build-release -j"$(nproc)" --target compress >/dev/null
data=build-release/data/fmnist-test
[ -f "$data/images.npy" ] || python3 tools/fashion_mnist_to_npy.py --split test --out "$data" >/dev/null

all=$(nproc)
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
echo "| model | batch | threads | compress ms/run | ONNX Runtime ms/run | ratio |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
for model in "${models[@]}"; do
  for threads in 1 "$all"; do
    for batch in 1 64; do
      ours=$(build-release/src/compress bench "$model" --data "$data" --batch "$batch" --threads "$threads" \
               --min-seconds "$min_seconds" --json -q | field median_seconds)
      ort=$(node tests/ort/ort.js bench "$model" "$data/images.npy" --batch "$batch" --threads "$threads" \
               --min-seconds "$min_seconds" | field median_seconds)
      python3 -c "import sys; o,r=float('$ours'),float('$ort'); print('| %s | %d | %d | %.3f | %.3f | %.2f |' % ('$(basename "$model")', $batch, $threads, o*1e3, r*1e3, o/r))"
    done
  done
done
