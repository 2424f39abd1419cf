// fuzz_tensor_pb: the TensorProto (.pb) reader, header and whole tensor, and writing the tensor back.
#include <cstddef>
#include <cstdint>
#include <string>

#include "compress/io/npy.h"
#include "compress/util/error.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > (size_t{1} << 20)) return -1;
  const std::string path = fuzz::WriteScratch("input.pb", data, size);
  try {
    (void)compress::ReadTensorProtoHeader(path);
  } catch (const compress::Error&) {
  }
  try {
    const compress::Tensor t = compress::ReadTensorProtoFile(path);
    FUZZ_CHECK(t.dtype() == compress::DType::kString || t.nbytes() == compress::DTypeStorageBytes(t.dtype(), t.numel()));
    compress::WriteTensorProtoFile(fuzz::ScratchDir() + "/output.pb", t);
    const compress::Tensor back = compress::ReadTensorProtoFile(fuzz::ScratchDir() + "/output.pb");
    FUZZ_CHECK(back.dims() == t.dims() && back.dtype() == t.dtype());
  } catch (const compress::Error&) {
  }
  return 0;
}
