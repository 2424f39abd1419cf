#!/usr/bin/env bash
# Builds compress and runs the whole test suite: the regular build with every test, then an
# AddressSanitizer + UndefinedBehaviorSanitizer build running the I/O tests (label "io"). The sanitizer build
# compiles only what those tests need (target compress_io_label_tests: the test suites labelled "io" and the
# compress binary they run), not the other suites, tools and benchmarks, which it never runs. The regular
# build has line-table debug information (-g1) instead of full (-g).
# Model-level tests carry the label "model": `ctest --test-dir build -L model` runs them alone.
# Tests labelled "slow" (minutes and gigabytes: the model past 2 GiB) run on their own, one at a time,
# after the others.
#
#   tools/test.sh           everything, as CI runs it (.ci/run)
#   tools/test.sh --slow    only the "slow" tests (ctest -L slow)
# Last, every libFuzzer harness runs for 60 s from a random seed, continuing the search on each run
# (tools/fuzz.sh, clang build in build-fuzz); a finding prints its stack trace and input.
set -euo pipefail
cd "$(dirname "$0")/.."
slow_only=0
for arg in "$@"; do
  case "$arg" in
    --slow) slow_only=1 ;;
    *) echo "usage: tools/test.sh [--slow]" >&2; exit 2 ;;
  esac
done
tools/setup.sh --tests
jobs=$(nproc)

# -g1: line tables and function names only (backtraces keep file:line), not full debug info, which
# costs a quarter to a third of the compile time (CPU seconds, -g -> -g1: exec/kernels/elementwise.cc
# 101.6 -> 77.5, report/report.cc 25.0 -> 19.4, tests/passes/quantize_test.cc 41.5 -> 27.8). The sanitizer
# build keeps -g: at -O0 it costs next to nothing (tests/passes/fold_constants_test.cc: 18.9 s with -g,
# 19.9 s with -g1).
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" \
  -DWERROR=ON
cmake --build build -j"$jobs"
if [[ $slow_only == 1 ]]; then
  exec ctest --test-dir build -L slow --output-on-failure
fi
ctest --test-dir build -LE slow --output-on-failure -j"$jobs"
ctest --test-dir build -L slow --output-on-failure

cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DSANITIZE=ON -DWERROR=ON
cmake --build build-asan -j"$jobs" --target compress_io_label_tests
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan -L io --output-on-failure -j"$jobs"

tools/fuzz.sh --seconds 60
