// Shared by the libFuzzer harnesses: a private scratch folder and the model pipeline every model
// harness runs (load -> verify -> clean-up -> each compression pass that needs no data -> save).
//
// Expected outcomes of bad input are compress::Error (any kind); the harnesses catch exactly that.
// Everything else -- a crash, a sanitizer report, a leak, a foreign exception escaping, a timeout or
// running out of memory -- is a finding that libFuzzer reports.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

// A broken promise of the code under test: printed, then abort() so that libFuzzer keeps the input.
#define FUZZ_CHECK(cond)                                                                        \
  do {                                                                                          \
    if (!(cond)) {                                                                              \
      std::fprintf(stderr, "FUZZ_CHECK failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);      \
      std::abort();                                                                             \
    }                                                                                           \
  } while (0)

namespace fuzz {

// Per-process scratch folder (under $TMPDIR, /dev/shm when available), created on first use and
// removed at exit. It holds "ext/", the model's folder for external data, with one small data file
// "weights.bin" so that external-data entries in the input can resolve to something.
const std::string& ScratchDir();

// Writes `data` to ScratchDir()/name (replacing it) and returns the path.
std::string WriteScratch(const std::string& name, const uint8_t* data, size_t size);

// Model bytes -> ParseModel (external data resolved against ScratchDir()/ext) -> verification ->
// the default clean-up passes -> fp16, dynamic INT8 and weight-only INT8 each on its own copy ->
// serialized; the cleaned model also goes through one training step (forward and backward over every
// trainable weight; the QAT rewrite and back on QDQ models) and SaveModel with external data.
void RunModelPipeline(const std::string& bytes);

// Largest input the model harnesses accept: bigger inputs only slow the fuzzer down.
inline constexpr size_t kMaxModelBytes = size_t{1} << 20;

}  // namespace fuzz
