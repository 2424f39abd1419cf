// Helpers shared by the kernel families: broadcasting, axes, reading shape-like tensors, dtype dispatch.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "compress/exec/isa.h"
#include "compress/exec/kernel.h"
#include "compress/exec/thread_pool.h"
#include "compress/util/error.h"

namespace compress::kernels {

// Elements per parallel chunk for cheap elementwise work (fixed, so results do not depend on threads).
constexpr int64_t kElementwiseGrain = 1 << 14;

// Numpy-style multidirectional broadcast of two shapes; Fail()s on ctx when incompatible.
std::vector<int64_t> BroadcastShapes(const KernelContext& ctx, const std::vector<int64_t>& a,
                                     const std::vector<int64_t>& b);
// Element strides of `in` as seen from the broadcast shape `out` (0 along broadcast dims); `in` is
// right-aligned against `out`.
std::vector<int64_t> BroadcastStrides(const std::vector<int64_t>& in, const std::vector<int64_t>& out);
// Row-major strides of a shape.
std::vector<int64_t> Strides(const std::vector<int64_t>& dims);

// Visits every element of `out_dims` in row-major order within [begin, end), calling
// fn(out_index, offset_0, offset_1, ...) with the offsets into each input given by `strides`.
// Inner loop is specialised for the last dimension.
template <size_t N, typename Fn>
void ForEachBroadcast(const std::vector<int64_t>& out_dims, const std::vector<int64_t> (&strides)[N],
                      int64_t begin, int64_t end, Fn&& fn) {
  const size_t rank = out_dims.size();
  if (rank == 0) {
    if (begin < end) {
      int64_t zero[N] = {};
      fn(int64_t{0}, zero);
    }
    return;
  }
  std::vector<int64_t> idx(rank, 0);
  int64_t off[N] = {};
  // Decompose `begin` into a multi-index and offsets.
  int64_t rem = begin;
  for (size_t d = rank; d-- > 0;) {
    idx[d] = out_dims[d] == 0 ? 0 : rem % out_dims[d];
    rem = out_dims[d] == 0 ? 0 : rem / out_dims[d];
    for (size_t k = 0; k < N; ++k) off[k] += idx[d] * strides[k][d];
  }
  for (int64_t i = begin; i < end; ++i) {
    fn(i, off);
    // Advance the multi-index.
    for (size_t d = rank; d-- > 0;) {
      ++idx[d];
      for (size_t k = 0; k < N; ++k) off[k] += strides[k][d];
      if (idx[d] < out_dims[d]) break;
      for (size_t k = 0; k < N; ++k) off[k] -= strides[k][d] * idx[d];
      idx[d] = 0;
    }
  }
}

// Normalises a possibly negative axis into [0, rank); Fail()s when out of range.
int64_t NormalizeAxis(const KernelContext& ctx, int64_t axis, int64_t rank);
int64_t NormalizeAxis(const KernelInfo& info, int64_t axis, int64_t rank);

// Reads an int32 or int64 tensor (shapes, axes, pads, ...) into int64 values.
std::vector<int64_t> ToInt64s(const KernelContext& ctx, const Tensor& t);
// Reads a float / double / float16 tensor into floats (scales, roi).
std::vector<float> ToFloats(const KernelContext& ctx, const Tensor& t);

// Calls fn(T{}) with T the C++ type of `dtype`, for the listed families; Fail()s otherwise.
template <typename Fn>
void DispatchNumeric(const KernelContext& ctx, DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kFloat: fn(float{}); break;
    case DType::kDouble: fn(double{}); break;
    case DType::kInt8: fn(int8_t{}); break;
    case DType::kUInt8: fn(uint8_t{}); break;
    case DType::kInt16: fn(int16_t{}); break;
    case DType::kUInt16: fn(uint16_t{}); break;
    case DType::kInt32: fn(int32_t{}); break;
    case DType::kUInt32: fn(uint32_t{}); break;
    case DType::kInt64: fn(int64_t{}); break;
    case DType::kUInt64: fn(uint64_t{}); break;
    default: ctx.Fail(std::string("element type ") + DTypeName(dtype) + " is not supported here");
  }
}

// Calls fn(T{}) for float32 or float64 (float16 reaches kernels as float32); Fail()s otherwise.
template <typename Fn>
void DispatchFloating(const KernelContext& ctx, DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kFloat:
      fn(float{});
      break;
    case DType::kDouble:
      fn(double{});
      break;
    default:
      ctx.Fail(std::string("element type ") + DTypeName(dtype) + " is not supported here (float types only)");
  }
}

// Same as DispatchNumeric plus bool (as bool) — for data movement, where only the element size matters
// callers should prefer copying bytes.
template <typename Fn>
void DispatchAll(const KernelContext& ctx, DType dtype, Fn&& fn) {
  if (dtype == DType::kBool) {
    fn(bool{});
    return;
  }
  DispatchNumeric(ctx, dtype, fn);
}

// Registers `factory` for op_type in the default domain over [since, until].
void AddKernel(KernelRegistry& r, const std::string& op_type, int64_t since, int64_t until, KernelFactory factory,
               KernelVariant variant = KernelVariant::kReference, bool float16_via_float32 = true);

// Reads a constant float / double / float16 / bfloat16 tensor into floats at build time (pre-packed weights).
std::vector<float> ToFloats(const KernelInfo& info, const Tensor& t);

// Window attributes of convolution and pooling nodes, parsed at build time; empty vectors were not given.
struct WindowAttrs {
  std::string auto_pad = "NOTSET";  // NOTSET, SAME_UPPER, SAME_LOWER or VALID
  std::vector<int64_t> kernel_shape, strides, dilations, pads;
  bool ceil_mode = false;
};
// Throws naming the node on an unknown auto_pad or non-positive kernel / stride / dilation / negative pad.
WindowAttrs ParseWindowAttrs(const KernelInfo& info);

// A window sliding over the spatial dims of one input, with pads resolved and the output size computed.
struct WindowGeometry {
  std::vector<int64_t> in, kernel, strides, dilations, pads_begin, pads_end, out;
  size_t rank() const { return in.size(); }
  int64_t in_size() const;      // product of in
  int64_t out_size() const;     // product of out
  int64_t kernel_size() const;  // product of kernel
};
// Outputs o in [*lo, *hi) (of `out`) whose input position o * stride - pad + offset lies in [0, in): where a
// kernel tap at `offset` (kernel index * dilation) reads real data rather than padding.
void ValidOutputRange(int64_t out, int64_t in, int64_t stride, int64_t pad, int64_t offset, int64_t* lo,
                      int64_t* hi);
// Row-major multi-index of every flat position of `dims`: [count][rank].
std::vector<int64_t> Coordinates(const std::vector<int64_t>& dims);

// Output size per the ONNX convolution / pooling formulas (auto_pad SAME_* and VALID, explicit pads,
// ceil_mode; with ceil_mode a window that would start in the end padding is dropped). `kernel` comes from the
// attribute or the weights. Fail()s when an attribute's length does not match the spatial rank or the output
// would be empty.
WindowGeometry ResolveWindow(const KernelContext& ctx, const WindowAttrs& attrs,
                             const std::vector<int64_t>& in, const std::vector<int64_t>& kernel);

// A 1-D or 2-D window as 2-D (1-D has height 1): output, input, kernel, stride, dilation, begin-pad sizes.
struct Window2D {
  int64_t oh, ow, ih, iw, kh, kw, sh, sw, dh, dw, ph, pw;
};
Window2D ToWindow2D(const WindowGeometry& g);  // g.rank() is 1 or 2

inline bool IsInt8(DType t) { return t == DType::kInt8 || t == DType::kUInt8; }

// Element i of an int8 or uint8 tensor (quantised data and zero points).
inline int32_t Int8At(const Tensor& t, int64_t i) {
  return t.dtype() == DType::kInt8 ? static_cast<const int8_t*>(t.raw())[i]
                                   : static_cast<const uint8_t*>(t.raw())[i];
}

// QLinear* output requantisation as ONNX Runtime does it: float(acc) * multiplier rounded half to even (the
// default floating-point environment), plus the zero point, saturated to [lo, hi].
inline int32_t Requantize(int32_t acc, float multiplier, int32_t zero_point, int32_t lo, int32_t hi) {
  const float v = std::nearbyint(static_cast<float>(acc) * multiplier) + static_cast<float>(zero_point);
  return static_cast<int32_t>(std::min(std::max(v, static_cast<float>(lo)), static_cast<float>(hi)));
}

// Single-precision GEMM on packed operands, defined in matmul.cc and shared by the MatMul and Conv families.
namespace gemm {

constexpr int64_t kMr = 6;   // rows of C per micro-tile
constexpr int64_t kNr = 16;  // columns of C per micro-tile

inline int64_t RoundUp(int64_t x, int64_t multiple) { return (x + multiple - 1) / multiple * multiple; }
inline int64_t PackedASize(int64_t m, int64_t k) { return RoundUp(m, kMr) * k; }
inline int64_t PackedBSize(int64_t k, int64_t n) { return k * RoundUp(n, kNr); }

// Packs alpha * A (m x k; element (i, p) at a[i * row_stride + p * col_stride]) into panels of kMr rows
// interleaved along k, zero-padded to a multiple of kMr rows. The panel holding row i (i % kMr == 0) starts
// at packed + i * k.
void PackA(const float* a, int64_t row_stride, int64_t col_stride, int64_t m, int64_t k, float alpha,
           float* packed);
// Packs B (k x n; element (p, j) at b[p * row_stride + j * col_stride]) into panels of kNr columns,
// zero-padded to a multiple of kNr columns. The panel holding column j (j % kNr == 0) starts at
// packed + j * k.
void PackB(const float* b, int64_t row_stride, int64_t col_stride, int64_t k, int64_t n, float* packed);

// The right operand as the micro-kernel reads it: the kNr columns from q * kNr start at
// data + q * panel_stride, row p of them kNr consecutive floats at + p * row_stride. Columns past n must be
// readable (their results are discarded). PackB output is {packed, kNr, k * kNr}; a row-major matrix whose
// row length ld is a multiple of kNr is {data, ld, kNr}.
struct BView {
  const float* data;
  int64_t row_stride;
  int64_t panel_stride;
};

// The left operand: PackA output (row_stride 0), or a row-major matrix with rows row_stride floats apart,
// read in place (no packing: cheaper when few columns of C share each row).
struct AView {
  const float* data;
  int64_t row_stride = 0;
};

enum class Init { kZero, kAccumulate, kRowBias };  // C before the product is added: 0, C itself, row_bias[i]

// C (m x n, row stride ldc) = init + A * B. Every element is summed over k in an order that depends on k
// alone (not on the operands' layouts), so splitting the rows or columns of C across calls (threads)
// changes no bit.
void Multiply(int64_t m, int64_t n, int64_t k, const AView& a, const BView& b, float* c, int64_t ldc,
              Init init, const float* row_bias = nullptr);

// C (m x n int32, row stride ldc) = A * B for operands holding integers of magnitude <= 255 (8-bit values
// less their zero points), A row-major. Exact, equal to int32 accumulation: in chunks of at most 256
// products every partial sum is an integer below 2^24 and so exact in float32; chunks add in int32.
// Uses Scratch slot 2.
void MultiplyExact(int64_t m, int64_t n, int64_t k, const AView& a, const BView& b, int32_t* c, int64_t ldc);

// out[i] = init + sum over t < taps (in order) of w[t] * src[offsets[t] + i], for i < n: a small direct
// convolution over precomputed shifts (fused multiply-adds with AVX2+FMA, else multiply then add).
void TapSum(int64_t n, int64_t taps, const float* w, const int64_t* offsets, const float* src, float init,
            float* out);

// `blocks` blocks of `rows` rows of n floats: row r of block b goes from src + b * src_block + r * src_row
// to dst + b * dst_block + r * dst_row.
struct RowCopy {
  int64_t blocks = 1, rows = 1, n = 0;
  int64_t src_block = 0, src_row = 0, dst_block = 0, dst_row = 0;
};
// Copies rows in whole vectors of kCopyOver floats: reads and writes up to kCopyOver - 1 floats past the end
// of each row, in block then row order (callers leave slack and order their copies so that spilled floats
// are overwritten or discarded).
constexpr int64_t kCopyOver = 8;
void CopyRowsOver(const RowCopy& shape, const float* src, float* dst);

// A 64-byte aligned buffer of at least `floats` floats, one per (thread, slot < 4), reused across calls;
// contents are unspecified.
float* Scratch(int slot, int64_t floats);

// Owned, 64-byte aligned floats (packed weights); zero-initialised.
class AlignedFloats {
 public:
  AlignedFloats() = default;
  explicit AlignedFloats(int64_t n);
  float* data() { return data_.get(); }
  const float* data() const { return data_.get(); }
  bool empty() const { return data_ == nullptr; }

 private:
  struct Free {
    void operator()(float* p) const;
  };
  std::unique_ptr<float[], Free> data_;
};

}  // namespace gemm

// Element types for kernels that only move elements (Transpose, Gather, Pad, ...): every dtype maps to an
// unsigned integer of its size (Bytes16 for complex128) or to std::string, so one instantiation serves all
// dtypes of a size and float16 moves bitwise.
struct Bytes16 {
  uint64_t lo, hi;
};
// Calls fn(T{}) with T the move type of `dtype`; Fail()s for the packed 4-bit types.
template <typename Fn>
void DispatchByElementSize(const KernelContext& ctx, DType dtype, Fn&& fn) {
  if (dtype == DType::kString) {
    fn(std::string{});
    return;
  }
  switch (DTypeBits(dtype)) {
    case 8: fn(uint8_t{}); break;
    case 16: fn(uint16_t{}); break;
    case 32: fn(uint32_t{}); break;
    case 64: fn(uint64_t{}); break;
    case 128: fn(Bytes16{}); break;
    default: ctx.Fail(std::string("element type ") + DTypeName(dtype) + " is not supported here");
  }
}
// Element storage of a tensor viewed as the move type T chosen by DispatchByElementSize.
template <typename T>
const T* ElementsOf(const Tensor& t) {
  if constexpr (std::is_same_v<T, std::string>) {
    return t.strings().data();
  } else {
    return static_cast<const T*>(t.raw());
  }
}
template <typename T>
T* MutableElementsOf(Tensor& t) {
  if constexpr (std::is_same_v<T, std::string>) {
    return t.mutable_strings().data();
  } else {
    return static_cast<T*>(t.mutable_raw());
  }
}

}  // namespace compress::kernels
