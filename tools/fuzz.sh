#!/usr/bin/env bash
# Builds the libFuzzer harnesses (fuzz/, clang, -DFUZZ=ON) in build-fuzz and runs each for N seconds,
# up to one harness per core at a time. Prints executions, executions per second and the result per
# harness; exits 1 when any harness found something (crash, sanitizer report, leak, timeout, out of
# memory), keeping the input under build-fuzz/findings/<harness>/.
#
#   tools/fuzz.sh [--seconds N] [--jobs J] [--seed S] [HARNESS...]
#                 (default: 60 s, every harness, J = cores, a random seed; --seed fixes libFuzzer's seed,
#                  so that a run on the same corpus repeats the same inputs and a finding reproduces)
#
# Seed corpora are generated here (never committed) into build-fuzz/seeds/<harness>; what the fuzzer
# finds interesting accumulates in build-fuzz/corpus/<harness> and is reused by the next run.
# Reproduce a finding: build-fuzz/fuzz/<harness> build-fuzz/findings/<harness>/crash-...
set -euo pipefail
cd "$(dirname "$0")/.."

all=(fuzz_model fuzz_model_structured fuzz_npy fuzz_tensor_pb fuzz_recipe_json fuzz_recipe_yaml fuzz_calib_table)
seconds=60
jobs=$(nproc)
seed=0
harnesses=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    fuzz_*) harnesses+=("$1"); shift ;;
    *) echo "usage: tools/fuzz.sh [--seconds N] [--jobs J] [--seed S] [HARNESS...] (harnesses: ${all[*]})" >&2; exit 2 ;;
  esac
done
[ ${#harnesses[@]} -gt 0 ] || harnesses=("${all[@]}")
for h in "${harnesses[@]}"; do
  [[ " ${all[*]} " == *" $h "* ]] || { echo "fuzz.sh: unknown harness '$h' (known: ${all[*]})" >&2; exit 2; }
done

build=${FUZZ_BUILD_DIR:-build-fuzz}
launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=)
if command -v ccache >/dev/null 2>&1; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
# -O1 and line tables only: a quicker build, still readable stack traces.
CC=clang CXX=clang++ cmake -S . -B "$build" -DFUZZ=ON -DCMAKE_BUILD_TYPE=None \
  -DCMAKE_CXX_FLAGS="-O1 -gline-tables-only" "${launcher[@]}" >/dev/null
cmake --build "$build" -j"$(nproc)" --target "${harnesses[@]}"

# ---- seed corpora ----------------------------------------------------------------------------------
seeds="$build/seeds"
rm -rf "$seeds"
mkdir -p "$seeds"/{model,npy,pb,json,yaml,calib}
testdata=/usr/share/libonnx-testdata/data

# Models: the sample models and the ONNX conformance models (at most 1 MiB: the harness's limit).
find models -name '*.onnx' -size -1024k -exec cp {} "$seeds/model/" \;
if [ -d "$testdata" ]; then
  # Every 6th (in name order, about 180): each seed costs ~0.3 s at start-up under the sanitizers.
  # One cp for all: --backup=numbered keeps files of the same name apart (libFuzzer ignores names).
  find "$testdata" -name model.onnx -size -1024k | sort | awk 'NR % 6 == 0' |
    xargs cp --backup=numbered -t "$seeds/model/"
  # TensorProto files: the conformance test inputs and outputs (the small ones).
  find "$testdata/node" -name '*.pb' -size -16k -print0 | xargs -0 cp --backup=numbered -t "$seeds/pb/"
fi

# .npy: hand-made headers of every kind the reader knows, plus the first samples of the calibration slice.
digits=$(seq 1000 | tr -d '\n')
npy() {  # npy FILE DESCR SHAPE FORTRAN DATA_BYTES [VERSION]
  local file=$1 descr=$2 shape=$3 fortran=$4 n=$5 version=${6:-1}
  local dict="{'descr': '$descr', 'fortran_order': $fortran, 'shape': $shape, }"
  local pre=10; [ "$version" = 1 ] || pre=12
  local pad=$(( (64 - (pre + ${#dict} + 1) % 64) % 64 ))
  local header; header="$dict$(printf '%*s' "$pad" '')"
  {
    printf "\\x93NUMPY\\x0${version}\\x00"
    local len=$(( ${#header} + 1 ))
    if [ "$version" = 1 ]; then
      printf "\\x$(printf %02x $((len & 255)))\\x$(printf %02x $((len >> 8)))"
    else
      printf "\\x$(printf %02x $((len & 255)))\\x$(printf %02x $((len >> 8)))\\x00\\x00"
    fi
    printf '%s\n' "$header"
    printf '%s' "${digits:0:$n}"  # deterministic element bytes
  } > "$file"
}
npy "$seeds/npy/f4.npy" '<f4' '(2, 3)' False 24
npy "$seeds/npy/f4_fortran.npy" '<f4' '(3, 2)' True 24
npy "$seeds/npy/f4_be.npy" '>f4' '(4,)' False 16
npy "$seeds/npy/f2.npy" '<f2' '(2, 2)' False 8
npy "$seeds/npy/f8.npy" '<f8' '(1, 2)' False 16
npy "$seeds/npy/i8.npy" '<i8' '(3,)' False 24
npy "$seeds/npy/i4.npy" '<i4' '(2, 1, 2)' False 16
npy "$seeds/npy/u1.npy" '|u1' '(5,)' False 5
npy "$seeds/npy/i1.npy" '|i1' '(5,)' False 5
npy "$seeds/npy/b1.npy" '|b1' '(4,)' False 4
npy "$seeds/npy/scalar.npy" '<f4' '()' False 4
npy "$seeds/npy/empty.npy" '<f4' '(0, 3)' False 0
npy "$seeds/npy/v2.npy" '<f4' '(2,)' False 8 2
cp models/calib/labels.npy "$seeds/npy/labels.npy"
# The first 4 of the 256 calibration images, with the shape in the header changed to match.
head -c $((128 + 4 * 784 * 4)) models/calib/images.npy | sed '1s/(256,/(4,  /' > "$seeds/npy/images4.npy"

# Recipes: the README's example and one of each pass with every option.
cat > "$seeds/yaml/readme.yaml" <<'EOF'
name: half
optimize: true
passes:
  - fp16
  - pass: fp16
    options: {keep_io_types: false, block_ops: [Softmax]}
EOF
cat > "$seeds/yaml/all.yaml" <<'EOF'
name: int8-all
optimize: false
passes:
  - pass: fold_constants
    options:
      max_folded_bytes: 1024
      fold_shapes: false
  - pass: quantize
    options: {mode: static, format: qop, per_channel: false, activation_type: int8, calib_method: percentile,
              percentile: 99.9, exclude_nodes: [a, b], exclude_ops: [Conv], min_conv_depth: 0}
  - pass: compact_names
    options: {keep_node_names: true, keep_initializer_names: true, keep_default_attributes: true}
EOF
cat > "$seeds/json/readme.json" <<'EOF'
{"name": "half", "optimize": true, "passes": ["fp16", {"pass": "fp16", "options": {"keep_io_types": false, "block_ops": ["Softmax"]}}]}
EOF
cat > "$seeds/json/all.json" <<'EOF'
{"name": "int8-all", "optimize": false, "passes": [
  {"pass": "fold_constants", "options": {"max_folded_bytes": 1024, "fold_shapes": false}},
  {"pass": "quantize", "options": {"mode": "dynamic", "format": "qdq", "per_channel": true, "activation_type": "uint8",
   "calib_method": "entropy", "percentile": 99.99, "exclude_nodes": [], "exclude_ops": ["MatMul"], "min_conv_depth": 64}},
  {"pass": "fp16", "options": {"keep_io_types": true, "default_block_ops": false, "block_ops": [], "block_nodes": ["n"]}},
  "constant_to_initializer", "remove_identity", "fold_batch_norm", "share_initializers", "remove_dead_nodes"]}
EOF

# Calibration tables: one made by compress on the sample CNN when a regular build exists, and a small
# hand-written one in any case.
cat > "$seeds/calib/small.json" <<'EOF'
{"schema": "compress.calib/1", "data_sha256": "00", "samples": 2, "bins": 8, "tensors": {
 "x": {"count": 10, "non_finite": 1, "min": -1.5, "max": 2.0, "hist_range": 2.0, "hist_offset": 2, "hist": [1, 0, 4, 5]},
 "y": {"count": 0, "non_finite": 0, "min": 0, "max": 0, "hist_range": 0, "hist_offset": 0, "hist": []}}}
EOF
if [ -x build/src/compress ]; then
  tmp=$(mktemp -d)
  if build/src/compress models/cnn.onnx -o "$tmp/cnn.int8.onnx" --int8 --calib models/calib --calib-limit 16 \
       --calib-table "$tmp/table.json" -q >/dev/null 2>&1; then
    cp "$tmp/table.json" "$seeds/calib/cnn.json"
  fi
  rm -rf "$tmp"
fi

seed_dir() {
  case "$1" in
    fuzz_model|fuzz_model_structured) echo "$seeds/model" ;;
    fuzz_npy) echo "$seeds/npy" ;;
    fuzz_tensor_pb) echo "$seeds/pb" ;;
    fuzz_recipe_json) echo "$seeds/json" ;;
    fuzz_recipe_yaml) echo "$seeds/yaml" ;;
    fuzz_calib_table) echo "$seeds/calib" ;;
  esac
}
dict() {
  case "$1" in
    fuzz_model|fuzz_model_structured|fuzz_tensor_pb) echo fuzz/onnx.dict ;;
    fuzz_npy) echo fuzz/npy.dict ;;
    fuzz_recipe_json|fuzz_calib_table) echo fuzz/json.dict ;;
    fuzz_recipe_yaml) echo fuzz/yaml.dict ;;
  esac
}

# ---- run -------------------------------------------------------------------------------------------
logs="$build/logs"
mkdir -p "$logs"
scratch=$(mktemp -d "${TMPDIR:-/tmp}/compress-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
run_one() {
  local h=$1
  mkdir -p "$build/corpus/$h" "$build/findings/$h"
  # -timeout: seconds one input may take (a hang is a finding); -rss_limit_mb / -malloc_limit_mb: memory
  # of the process / of one allocation (more is a finding: inputs must not make us allocate unbounded).
  TMPDIR="$scratch" ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=0 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$build/fuzz/$h" -max_total_time="$seconds" -seed="$seed" -timeout=30 -rss_limit_mb=2048 -malloc_limit_mb=512 \
    -dict="$(dict "$h")" -artifact_prefix="$build/findings/$h/" -print_final_stats=1 \
    "$build/corpus/$h" "$(seed_dir "$h")" > "$logs/$h.log" 2>&1
}

start=$(date +%s)
pids=()
declare -A rc
for h in "${harnesses[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  run_one "$h" & pids+=("$!:$h")
done
for entry in "${pids[@]}"; do
  pid=${entry%%:*}; h=${entry#*:}
  if wait "$pid"; then rc[$h]=0; else rc[$h]=$?; fi
done
elapsed=$(( $(date +%s) - start ))

status=0
total=0
printf '%-24s %14s %10s  %s\n' harness executions exec/s result
for h in "${harnesses[@]}"; do
  log="$logs/$h.log"
  execs=$(awk '/^stat::number_of_executed_units:/ {n = $2} END {print n}' "$log")
  [ -n "$execs" ] || execs=$(grep -o '^#[0-9]*' "$log" | tr -d '#' | tail -1)
  [ -n "$execs" ] || execs=0
  eps=$(awk '/^stat::average_exec_per_sec:/ {n = $2} END {print n}' "$log")
  [ -n "$eps" ] || eps=-
  total=$((total + execs))
  if [ "${rc[$h]}" = 0 ]; then
    result=ok
  else
    status=1
    artifact=$(grep -o "Test unit written to .*" "$log" | sed 's/Test unit written to //' | tail -1)
    kind=$(grep -m1 -o 'ERROR: [A-Za-z]*Sanitizer: [A-Za-z-]*\|ERROR: libFuzzer: [a-z-]*\|runtime error: .*\|FUZZ_CHECK failed.*' "$log" || true)
    result="FINDING (exit ${rc[$h]}): ${kind:-see $log} -> ${artifact:-no input saved}"
  fi
  printf '%-24s %14s %10s  %s\n' "$h" "$execs" "$eps" "$result"
done
printf '%-24s %14s\n' total "$total"
echo "fuzz.sh: ${#harnesses[@]} harnesses, ${seconds} s each, $jobs at a time, seed $seed, ${elapsed} s wall; logs in $logs"
# A finding's report (stack trace and input) goes to the output too: CI keeps nothing else.
for h in "${harnesses[@]}"; do
  if [ "${rc[$h]}" != 0 ]; then
    echo "---- $h: end of $logs/$h.log"
    grep -v '^#[0-9]' "$logs/$h.log" | tail -n 80
  fi
done
exit $status
