#!/usr/bin/env bash
# Structured pruning in ONNX Runtime: prunes the sample CNN to a MAC budget (--target-macs, per-group ratios
# from the sensitivity on the bundled 256-image calibration slice) and times FP32 vs pruned in ONNX Runtime
# at batch 64, single thread, runs interleaved so that load from elsewhere on a shared machine hits both
# alike; prints a Markdown table with the MACs kept (our counter), the top-1 on the Fashion-MNIST test set
# (10,000 images, our executor) and the time ratio.
#
#   bench/prune_ort.sh [--min-seconds S] [--rounds N] [--model FILE] [--calib DIR] [FLAGS ...]
#     (default: models/cnn.onnx --target-macs 0.5 with --calib models/calib)
#
# Any compression flags work the same way, e.g. low rank on the MLP:
#   bench/prune_ort.sh --model models/mlp.onnx --calib build-release/data/fmnist-train-2k --low-rank 0.25
# (a --calib folder under build-release/data/fmnist-train-2k is made from the train split when missing).
#
# COMPRESS_BIN=path uses an existing build for the pruning step (ONNX Runtime does the timing).
set -euo pipefail
cd "$(dirname "$0")/.."
min_seconds=3
rounds=3
model=models/cnn.onnx
calib=models/calib
flags=()
while [ $# -gt 0 ]; do
  case "$1" in
    --min-seconds) min_seconds="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --model) model="$2"; shift 2 ;;
    --calib) calib="$2"; shift 2 ;;
    *) flags+=("$1"); shift ;;
  esac
done
[ ${#flags[@]} -gt 0 ] || flags=(--target-macs 0.5)

tools/setup.sh --tests >/dev/null
bin=${COMPRESS_BIN:-build-release/src/compress}
if [ -z "${COMPRESS_BIN:-}" ]; then
  cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DCOMPRESS_BUILD_TESTS=OFF >/dev/null
  cmake --build build-release -j"$(nproc)" --target compress >/dev/null
fi
data=build-release/data/fmnist-test
[ -f "$data/images.npy" ] || python3 tools/fashion_mnist_to_npy.py --split test --out "$data" >/dev/null
if [ "$calib" = build-release/data/fmnist-train-2k ] && [ ! -f "$calib/images.npy" ]; then
  python3 tools/fashion_mnist_to_npy.py --split train --count 2048 --out "$calib" >/dev/null
fi
out=build-release/prune
mkdir -p "$out"

field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval('d' + ''.join('[%r]' % k for k in '$1'.split('.'))))"; }
median() { python3 -c "import sys,statistics; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }

name=$(basename "$model" .onnx)
"$bin" "$model" "${flags[@]}" --calib "$calib" -o "$out/$name.pruned.onnx" --report "$out/$name.pruned.json" \
  --eval "$data" -q >/dev/null
fp32=(); pruned=()
for _ in $(seq "$rounds"); do
  fp32+=("$(node tests/ort/ort.js bench "$model" "$data/images.npy" --batch 64 --threads 1 \
             --min-seconds "$min_seconds" | field median_seconds)")
  pruned+=("$(node tests/ort/ort.js bench "$out/$name.pruned.onnx" "$data/images.npy" --batch 64 --threads 1 \
               --min-seconds "$min_seconds" | field median_seconds)")
done
a=$(median "${fp32[@]}"); b=$(median "${pruned[@]}")
macs_before=$(field macs.before.total < "$out/$name.pruned.json")
macs_after=$(field macs.after.total < "$out/$name.pruned.json")
top1_before=$(field evaluation.top1_before < "$out/$name.pruned.json")
top1_after=$(field evaluation.top1_after < "$out/$name.pruned.json")
echo "| model | compress flags | MACs kept | top-1 | FP32 ms/run | compressed ms/run | time ratio |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: |"
python3 -c "
a,b=float('$a'),float('$b'); mb,ma=int('$macs_before'),int('$macs_after'); t0,t1=float('$top1_before'),float('$top1_after')
print('| $name | \`%s --calib $calib\` | %s of %s (%.1f%%) | %.2f%% -> %.2f%% | %.3f | %.3f | %.2fx |' % ('${flags[*]}', format(ma, ','), format(mb, ','), 100.0*ma/mb, 100*t0, 100*t1, a*1e3, b*1e3, b/a))"
