// Helpers shared by the kernel families: broadcasting, axes, reading shape-like tensors, dtype dispatch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

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

}  // namespace compress::kernels
