#!/usr/bin/env bash
# INT8 in ONNX Runtime and calibration memory:
#  1. quantizes the sample models (static QDQ, default method, the bundled 256-image calibration slice)
#     and times FP32 vs INT8 in ONNX Runtime at batch 64, single thread, runs interleaved so that load
#     from elsewhere on a shared machine hits both alike; prints a Markdown table with the speed-up;
#  2. calibrates the CNN on 256 and on 2048 training images and prints the peak resident memory of each
#     run (GNU time), which must not depend on the number of samples.
#
#   bench/int8_ort.sh [--min-seconds S] [--rounds N] [MODEL ...]     (default: models/{cnn,mlp,vit}.onnx)
#
# The CNN is also quantized with --min-conv-depth 0 (every Conv quantized, its 1-channel stem included).
set -euo pipefail
cd "$(dirname "$0")/.."
min_seconds=3
rounds=3
models=()
while [ $# -gt 0 ]; do
  case "$1" in
    --min-seconds) min_seconds="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    *) models+=("$1"); shift ;;
  esac
done
# Each entry: MODEL or MODEL|extra compress flags.
[ ${#models[@]} -gt 0 ] || models=(models/cnn.onnx "models/cnn.onnx|--min-conv-depth 0" models/mlp.onnx "models/mlp.onnx|--format qop" models/vit.onnx)

tools/setup.sh --tests >/dev/null
command -v /usr/bin/time >/dev/null 2>&1 || { echo "bench: needs GNU time (apt-get install time)" >&2; exit 2; }
# COMPRESS_BIN=path uses an existing build for the quantization step (ONNX Runtime does the timing).
bin=${COMPRESS_BIN:-build-release/src/compress}
if [ -z "${COMPRESS_BIN:-}" ]; then
  cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DCOMPRESS_BUILD_TESTS=OFF >/dev/null
  cmake --build build-release -j"$(nproc)" --target compress >/dev/null
fi
data=build-release/data/fmnist-test
[ -f "$data/images.npy" ] || python3 tools/fashion_mnist_to_npy.py --split test --out "$data" >/dev/null
out=build-release/int8
mkdir -p "$out"

field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
median() { python3 -c "import sys,statistics; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }

echo "| model | compress flags | FP32 ms/run | INT8 ms/run | speed-up | size ratio |"
echo "| --- | --- | ---: | ---: | ---: | ---: |"
for entry in "${models[@]}"; do
  model=${entry%%|*}
  flags=""
  [ "$model" = "$entry" ] || flags=${entry#*|}
  name=$(basename "$model" .onnx)$(echo "$flags" | tr -c 'a-z0-9' '_' | sed 's/_*$//')
  # shellcheck disable=SC2086
  "$bin" "$model" --int8 --calib models/calib $flags -o "$out/$name.int8.onnx" --report "$out/$name.int8.json" \
    -q >/dev/null
  fp32=(); int8=()
  for _ in $(seq "$rounds"); do
    fp32+=("$(node tests/ort/ort.js bench "$model" "$data/images.npy" --batch 64 --threads 1 \
               --min-seconds "$min_seconds" | field median_seconds)")
    int8+=("$(node tests/ort/ort.js bench "$out/$name.int8.onnx" "$data/images.npy" --batch 64 --threads 1 \
               --min-seconds "$min_seconds" | field median_seconds)")
  done
  a=$(median "${fp32[@]}"); b=$(median "${int8[@]}")
  ratio=$(field size_ratio < "$out/$name.int8.json")
  python3 -c "a,b=float('$a'),float('$b'); print('| %s | %s | %.3f | %.3f | %.2fx | %.2fx |' % ('$(basename "$model" .onnx)', '--int8 --calib models/calib $flags', a*1e3, b*1e3, a/b, float('$ratio')))"
done

echo
echo "| calibration samples | peak RSS (MB), 3 runs | wall (s), 3 runs |"
echo "| ---: | --- | --- |"
for n in 256 2048; do
  dir="$out/calib$n"
  [ -f "$dir/images.npy" ] || python3 tools/fashion_mnist_to_npy.py --split train --count "$n" --out "$dir" >/dev/null
  rss=""; wall=""
  # Three runs with output names of different lengths: the heap layout, and with it the peak, moves with
  # the smallest difference between runs.
  for o in a bbbbbbbb "cnn.calib$n"; do
    /usr/bin/time -f "%M %e" -o "$out/time$n.txt" "$bin" models/cnn.onnx --int8 --calib "$dir" \
      -o "$out/$o.onnx" -q --overwrite >/dev/null
    read -r kb secs < "$out/time$n.txt"
    rss="$rss $(python3 -c "print('%.1f' % ($kb/1024.0))")"; wall="$wall $secs"
  done
  echo "| $n |$rss |$wall |"
done
