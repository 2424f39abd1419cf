// NumPy .npy files (format versions 1.0, 2.0 and 3.0, little-endian, C order).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "compress/ir/tensor.h"

namespace compress {

struct NpyInfo {
  DType dtype = DType::kUndefined;
  std::vector<int64_t> shape;
  uint64_t data_offset = 0;  // where the element data starts in the file
};

// Parses and validates the header: magic, version, descr (supported: <f4 <f2 <f8 <i8 <i4 <i2 |i1 |u1 <u2
// |b1, also with '=' or '|' where unambiguous), fortran_order (must be False), shape (non-negative, no
// overflow) and that the file holds exactly the bytes the header promises. Error(kInvalidInput) names the
// file and what is wrong; Error(kIO) when it cannot be read.
NpyInfo ReadNpyHeader(const std::string& path);
Tensor ReadNpy(const std::string& path);
// Rows [first, first+count) along dimension 0 of a file of rank >= 1, read without loading the rest.
Tensor ReadNpyRows(const std::string& path, const NpyInfo& info, int64_t first, int64_t count);

// Encodes a tensor (any dtype above except string) as .npy v1.0 bytes; header padded to 64 bytes.
std::string EncodeNpy(const Tensor& t);
// Atomic write (temporary file + rename).
void WriteNpy(const std::string& path, const Tensor& t);

// ONNX TensorProto files (test_data_set_N/input_K.pb).
struct TensorProtoInfo {
  std::string name;
  DType dtype = DType::kUndefined;
  std::vector<int64_t> shape;
};
// Name, element type and shape of a TensorProto file, found by walking its fields and seeking over the
// element data. Rejects what ReadTensorProtoFile would reject without looking at values: unknown types,
// bad shapes, raw_data of the wrong size, external or segmented data.
TensorProtoInfo ReadTensorProtoHeader(const std::string& path);
Tensor ReadTensorProtoFile(const std::string& path);
void WriteTensorProtoFile(const std::string& path, const Tensor& t);

}  // namespace compress
