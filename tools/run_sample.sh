#!/usr/bin/env bash
# The main job on the bundled sample: builds compress, describes the sample CNN and re-writes it.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DCOMPRESS_BUILD_TESTS=OFF >/dev/null
cmake --build build-release -j"$(nproc)" --target compress
mkdir -p out
./build-release/src/compress inspect models/cnn.onnx
./build-release/src/compress models/cnn.onnx -o out/cnn.rewritten.onnx
