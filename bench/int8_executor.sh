#!/usr/bin/env bash
# INT8 in compress's executor against ONNX Runtime: quantizes the sample models (static QDQ, default method,
# the bundled 256-image calibration slice), then at batch 64 and one thread times, in interleaved rounds,
#   compress FP32, compress INT8 (quantized groups in integers), compress INT8 --float-int8 (simulated),
#   ONNX Runtime FP32, ONNX Runtime INT8,
# and measures the top-1 agreement of compress's INT8 outputs with ONNX Runtime's on the whole Fashion-MNIST
# test set. Prints a Markdown table (median of the rounds' medians).
#
#   bench/int8_executor.sh [--min-seconds S] [--rounds N] [MODEL ...]     (default: models/{cnn,mlp,vit}.onnx)
set -euo pipefail
cd "$(dirname "$0")/.."
min_seconds=2
rounds=3
models=()
while [ $# -gt 0 ]; do
  case "$1" in
    --min-seconds) min_seconds="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    *) models+=("$1"); shift ;;
  esac
done
[ ${#models[@]} -gt 0 ] || models=(models/cnn.onnx models/mlp.onnx models/vit.onnx)

tools/setup.sh --tests >/dev/null
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DCOMPRESS_BUILD_TESTS=OFF >/dev/null
cmake --build build-release -j"$(nproc)" --target compress >/dev/null
bin=build-release/src/compress
data=build-release/data/fmnist-test
[ -f "$data/images.npy" ] || python3 tools/fashion_mnist_to_npy.py --split test --out "$data" >/dev/null
out=build-release/int8-executor
mkdir -p "$out"

field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
median() { python3 -c "import sys,statistics; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }
ours() {  # model [flags...]
  "$bin" bench "$1" --data "$data" --batch 64 --threads 1 --min-seconds "$min_seconds" --json -q "${@:2}" |
    field median_seconds
}
ort() {
  node tests/ort/ort.js bench "$1" "$data/images.npy" --batch 64 --threads 1 --min-seconds "$min_seconds" |
    field median_seconds
}

echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'); flags:" \
  "$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|f16c|avx512f|avx512bw|avx512vl|avx512_vnni|avx_vnni)$' | tr '\n' ' ')"
echo "commit $(git rev-parse --short HEAD); kernels: $("$bin" bench models/mlp.onnx --batch 1 --min-seconds 0 --json -q | python3 -c "import json,sys; k=json.load(sys.stdin)['kernels']; print(k['float'], '/', k['integer'])")"
echo
echo "| model | compress FP32 | compress INT8 | INT8 simulated | speed-up | ORT FP32 | ORT INT8 | ORT speed-up | top-1 agreement with ORT (INT8) |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for model in "${models[@]}"; do
  name=$(basename "$model" .onnx)
  q="$out/$name.int8.onnx"
  "$bin" "$model" --int8 --calib models/calib -o "$q" -q --overwrite >/dev/null
  a=(); b=(); c=(); d=(); e=()
  for _ in $(seq "$rounds"); do
    a+=("$(ours "$model")"); b+=("$(ours "$q")"); c+=("$(ours "$q" --float-int8)")
    d+=("$(ort "$model")"); e+=("$(ort "$q")")
  done
  rm -rf "$out/$name.ours" "$out/$name.ort"
  "$bin" run "$q" --data "$data" --batch 1000 --out "$out/$name.ours" -q >/dev/null
  node tests/ort/ort.js run "$q" "$out/$name.ort" "$data/images.npy" >/dev/null
  agreement=$(python3 - "$out/$name.ours" "$out/$name.ort/output_0.npy" <<'EOF'
import array, ast, os, sys
def npy(path):
    with open(path, 'rb') as f:
        raw = f.read()
    n = int.from_bytes(raw[8:10], 'little')
    header = ast.literal_eval(raw[10:10 + n].decode())
    assert header['descr'] == '<f4', header
    values = array.array('f', raw[10 + n:])
    return header['shape'], values
def argmax_rows(shape, v):
    k = shape[-1]
    return [max(range(k), key=lambda j: v[i * k + j]) for i in range(len(v) // k)]
ours = []
for batch in sorted(os.listdir(sys.argv[1])):
    folder = os.path.join(sys.argv[1], batch)
    shape, v = npy(os.path.join(folder, sorted(os.listdir(folder))[0]))
    ours += argmax_rows(shape, v)
shape, v = npy(sys.argv[2])
ort = argmax_rows(shape, v)
assert len(ours) == len(ort), (len(ours), len(ort))
print('%.2f %% (%d of %d)' % (100.0 * sum(x == y for x, y in zip(ours, ort)) / len(ort), sum(x == y for x, y in zip(ours, ort)), len(ort)))
EOF
)
  python3 -c "
a,b,c,d,e=[float(x) for x in '$(median "${a[@]}") $(median "${b[@]}") $(median "${c[@]}") $(median "${d[@]}") $(median "${e[@]}")'.split()]
print('| %s | %.3f ms | %.3f ms | %.3f ms | %.2fx | %.3f ms | %.3f ms | %.2fx | %s |' % ('$name', a*1e3, b*1e3, c*1e3, a/b, d*1e3, e*1e3, d/e, '$agreement'))"
done
