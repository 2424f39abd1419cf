#!/usr/bin/env bash
# Builds compress and runs the whole test suite: the regular build with every test, then an
# AddressSanitizer + UndefinedBehaviorSanitizer build running the I/O tests (label "io").
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

cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWERROR=ON
cmake --build build -j"$jobs"
if [[ $slow_only == 1 ]]; then
  exec ctest --test-dir build -L slow --output-on-failure
fi
ctest --test-dir build -LE slow --output-on-failure -j"$jobs"
ctest --test-dir build -L slow --output-on-failure

cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DSANITIZE=ON -DWERROR=ON
cmake --build build-asan -j"$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan -L io --output-on-failure -j"$jobs"

tools/fuzz.sh --seconds 60
