// fuzz_calib_table: the calibration table reader, then every range method on every tensor it holds.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "compress/calib/calibration.h"
#include "compress/util/error.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (size_t{1} << 20)) return -1;
  const std::string path = fuzz::WriteScratch("table.json", data, size);
  try {
    const compress::CalibrationTable table = compress::CalibrationTable::Load(path);
    // Ranges of the first two tensors: more only repeats the same code (the entropy search on 2048
    // bins takes a while under the sanitizers).
    int ranged = 0;
    for (const auto& [name, stats] : table.tensors) {
      if (++ranged > 2) break;
      for (auto method : {compress::CalibMethod::kMinMax, compress::CalibMethod::kPercentile,
                          compress::CalibMethod::kEntropy, compress::CalibMethod::kMse}) {
        for (bool symmetric : {false, true}) {
          compress::RangeOptions o;
          o.method = method;
          o.symmetric = symmetric;
          const compress::QuantRange r = compress::ComputeRange(stats, o);
          // The documented contract of ComputeRange: lo <= 0 <= hi, hi - lo > 0, both finite.
          FUZZ_CHECK(std::isfinite(r.lo) && std::isfinite(r.hi) && r.lo <= 0 && r.hi >= 0 && r.hi - r.lo > 0);
        }
      }
    }
    (void)table.ToJson().dump();
  } catch (const compress::Error&) {
  }
  return 0;
}
