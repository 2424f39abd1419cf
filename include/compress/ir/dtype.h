// Element types of tensors. The numeric values are those of onnx.TensorProto.DataType so that the IR
// and the file format agree without a mapping table.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace compress {

enum class DType : int32_t {
  kUndefined = 0,
  kFloat = 1,
  kUInt8 = 2,
  kInt8 = 3,
  kUInt16 = 4,
  kInt16 = 5,
  kInt32 = 6,
  kInt64 = 7,
  kString = 8,
  kBool = 9,
  kFloat16 = 10,
  kDouble = 11,
  kUInt32 = 12,
  kUInt64 = 13,
  kComplex64 = 14,
  kComplex128 = 15,
  kBFloat16 = 16,
  kFloat8E4M3FN = 17,
  kFloat8E4M3FNUZ = 18,
  kFloat8E5M2 = 19,
  kFloat8E5M2FNUZ = 20,
  kUInt4 = 21,
  kInt4 = 22,
};

// True for every value of DType except kUndefined.
bool IsKnownDType(int32_t value);
// Size of one element in bits (4 for the packed int4 types, 0 for string and undefined).
int DTypeBits(DType t);
// Bytes needed to store `count` elements (packed types round up). Throws on overflow.
size_t DTypeStorageBytes(DType t, int64_t count);
// Short name as used in reports and .npy descriptions: "float32", "int8", "float16", ...
const char* DTypeName(DType t);
std::optional<DType> DTypeFromName(const std::string& name);
bool IsFloatingPoint(DType t);

// Maps a C++ element type to its DType, for typed access to tensor data.
template <typename T>
struct DTypeOf;
template <> struct DTypeOf<float> { static constexpr DType value = DType::kFloat; };
template <> struct DTypeOf<double> { static constexpr DType value = DType::kDouble; };
template <> struct DTypeOf<uint8_t> { static constexpr DType value = DType::kUInt8; };
template <> struct DTypeOf<int8_t> { static constexpr DType value = DType::kInt8; };
template <> struct DTypeOf<uint16_t> { static constexpr DType value = DType::kUInt16; };
template <> struct DTypeOf<int16_t> { static constexpr DType value = DType::kInt16; };
template <> struct DTypeOf<int32_t> { static constexpr DType value = DType::kInt32; };
template <> struct DTypeOf<int64_t> { static constexpr DType value = DType::kInt64; };
template <> struct DTypeOf<uint32_t> { static constexpr DType value = DType::kUInt32; };
template <> struct DTypeOf<uint64_t> { static constexpr DType value = DType::kUInt64; };
template <> struct DTypeOf<bool> { static constexpr DType value = DType::kBool; };

}  // namespace compress
