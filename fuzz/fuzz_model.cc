// fuzz_model: raw model bytes through the whole model pipeline (fuzz_util.h).
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > fuzz::kMaxModelBytes) return -1;  // not added to the corpus
  fuzz::RunModelPipeline(std::string(reinterpret_cast<const char*>(data), size));
  return 0;
}
