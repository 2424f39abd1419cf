#!/usr/bin/env bash
# The main job on the bundled sample: builds compress, quantizes the sample CNN to INT8 with the bundled
# 256-image calibration slice, evaluates both models on the Fashion-MNIST test set (converted from the
# Debian package) under an accuracy gate, and writes the model and its report to out/.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DCOMPRESS_BUILD_TESTS=OFF >/dev/null
cmake --build build-release -j"$(nproc)" --target compress
mkdir -p out
[ -f out/fmnist-test/images.npy ] || python3 tools/fashion_mnist_to_npy.py --split test --out out/fmnist-test
./build-release/src/compress models/cnn.onnx --int8 --calib models/calib \
  --eval out/fmnist-test --max-accuracy-drop 0.5 \
  -o out/cnn.int8.onnx --report out/cnn.int8.json --report-md out/cnn.int8.md
