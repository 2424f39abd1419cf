// fuzz_npy: the .npy reader (whole file, header, row ranges as the data-set reader uses them).
#include <cstddef>
#include <cstdint>
#include <string>

#include "compress/io/npy.h"
#include "compress/util/error.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (size_t{1} << 20)) return -1;
  const std::string path = fuzz::WriteScratch("input.npy", data, size);
  try {
    const compress::Tensor whole = compress::ReadNpy(path);
    // What the reader promises: the element count matches the shape and the byte size the type.
    FUZZ_CHECK(whole.nbytes() == compress::DTypeStorageBytes(whole.dtype(), whole.numel()));
    (void)compress::EncodeNpy(whole);
  } catch (const compress::Error&) {
  }
  try {
    const compress::NpyInfo info = compress::ReadNpyHeader(path);
    const int64_t rows = info.shape.empty() ? 1 : info.shape[0];
    // First row, a middle slice, the last row and one past the end (which must be an Error).
    (void)compress::ReadNpyRows(path, info, 0, rows > 0 ? 1 : 0);
    (void)compress::ReadNpyRows(path, info, rows / 2, rows - rows / 2);
    if (rows > 0) (void)compress::ReadNpyRows(path, info, rows - 1, 1);
    (void)compress::ReadNpyRows(path, info, rows, 1);
  } catch (const compress::Error&) {
  }
  return 0;
}
