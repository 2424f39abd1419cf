#!/usr/bin/env bash
# The main job on the bundled sample: builds compress, converts the sample CNN to FP16, evaluates both
# models on the bundled Fashion-MNIST slice and writes the report.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DCOMPRESS_BUILD_TESTS=OFF >/dev/null
cmake --build build-release -j"$(nproc)" --target compress
mkdir -p out
./build-release/src/compress models/cnn.onnx --fp16 --eval models/calib -o out/cnn.fp16.onnx \
  --report out/cnn.fp16.json --report-md out/cnn.fp16.md
