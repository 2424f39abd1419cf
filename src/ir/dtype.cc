#include "compress/ir/dtype.h"

#include <limits>

#include "compress/util/error.h"

namespace compress {

bool IsKnownDType(int32_t value) {
  return value >= static_cast<int32_t>(DType::kFloat) && value <= static_cast<int32_t>(DType::kInt4);
}

int DTypeBits(DType t) {
  switch (t) {
    case DType::kBool:
    case DType::kUInt8:
    case DType::kInt8:
    case DType::kFloat8E4M3FN:
    case DType::kFloat8E4M3FNUZ:
    case DType::kFloat8E5M2:
    case DType::kFloat8E5M2FNUZ:
      return 8;
    case DType::kUInt16:
    case DType::kInt16:
    case DType::kFloat16:
    case DType::kBFloat16:
      return 16;
    case DType::kFloat:
    case DType::kInt32:
    case DType::kUInt32:
      return 32;
    case DType::kInt64:
    case DType::kUInt64:
    case DType::kDouble:
    case DType::kComplex64:
      return 64;
    case DType::kComplex128:
      return 128;
    case DType::kUInt4:
    case DType::kInt4:
      return 4;
    case DType::kString:
    case DType::kUndefined:
      return 0;
  }
  return 0;
}

size_t DTypeStorageBytes(DType t, int64_t count) {
  if (count < 0) ThrowInvalid("negative element count");
  const uint64_t bits = static_cast<uint64_t>(DTypeBits(t));
  const uint64_t n = static_cast<uint64_t>(count);
  if (bits != 0 && n > std::numeric_limits<uint64_t>::max() / bits) {
    ThrowInvalid("tensor byte size overflows");
  }
  return static_cast<size_t>((n * bits + 7) / 8);
}

const char* DTypeName(DType t) {
  switch (t) {
    case DType::kUndefined: return "undefined";
    case DType::kFloat: return "float32";
    case DType::kUInt8: return "uint8";
    case DType::kInt8: return "int8";
    case DType::kUInt16: return "uint16";
    case DType::kInt16: return "int16";
    case DType::kInt32: return "int32";
    case DType::kInt64: return "int64";
    case DType::kString: return "string";
    case DType::kBool: return "bool";
    case DType::kFloat16: return "float16";
    case DType::kDouble: return "float64";
    case DType::kUInt32: return "uint32";
    case DType::kUInt64: return "uint64";
    case DType::kComplex64: return "complex64";
    case DType::kComplex128: return "complex128";
    case DType::kBFloat16: return "bfloat16";
    case DType::kFloat8E4M3FN: return "float8e4m3fn";
    case DType::kFloat8E4M3FNUZ: return "float8e4m3fnuz";
    case DType::kFloat8E5M2: return "float8e5m2";
    case DType::kFloat8E5M2FNUZ: return "float8e5m2fnuz";
    case DType::kUInt4: return "uint4";
    case DType::kInt4: return "int4";
  }
  return "unknown";
}

std::optional<DType> DTypeFromName(const std::string& name) {
  for (int32_t v = 1; IsKnownDType(v); ++v) {
    if (name == DTypeName(static_cast<DType>(v))) return static_cast<DType>(v);
  }
  if (name == "float") return DType::kFloat;
  if (name == "double") return DType::kDouble;
  return std::nullopt;
}

bool IsFloatingPoint(DType t) {
  switch (t) {
    case DType::kFloat:
    case DType::kFloat16:
    case DType::kDouble:
    case DType::kBFloat16:
    case DType::kFloat8E4M3FN:
    case DType::kFloat8E4M3FNUZ:
    case DType::kFloat8E5M2:
    case DType::kFloat8E5M2FNUZ:
      return true;
    default:
      return false;
  }
}

}  // namespace compress
