// Helpers shared by the backward rule families: dtype dispatch, broadcasting in reverse, accumulation.
#pragma once

#include <cstdint>
#include <vector>

#include "compress/ir/tensor.h"
#include "compress/train/autodiff.h"

namespace compress::train {

// Calls fn(T{}) with T float or double for the dtype; Fail()s on ctx otherwise.
template <typename Fn>
void DispatchFloat(const GradContext& ctx, DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kFloat: fn(float{}); break;
    case DType::kDouble: fn(double{}); break;
    default: ctx.Fail(std::string("gradients are computed in float32 or float64, not ") + DTypeName(dtype));
  }
}

// acc += g (same dtype and shape; float32 or float64).
void AddInto(Tensor& acc, const Tensor& g);

// Row-major strides of a shape.
std::vector<int64_t> RowStrides(const std::vector<int64_t>& dims);

// Sums `grad` (of the broadcast shape) over the axes along which `shape` was broadcast, giving a tensor
// of `shape`: the gradient of an input that numpy-style broadcasting stretched.
Tensor ReduceToShape(const Tensor& grad, const std::vector<int64_t>& shape);

// Broadcasts `t` to `dims` (numpy rules; t right-aligned).
Tensor BroadcastTo(const Tensor& t, const std::vector<int64_t>& dims);

// Normalises a possibly negative axis into [0, rank); Fail()s on ctx when out of range.
int64_t NormAxis(const GradContext& ctx, int64_t axis, int64_t rank);

// C (m x n, row-major, row stride n) = A (m x k) * B (k x n), or C += A * B, in float32 on the executor's
// GEMM (AVX2+FMA where the CPU has it). A's element (i, p) is at a[i * a_rs + p * a_cs], B's (p, j) at
// b[p * b_rs + j * b_cs], so transposed operands need no copy. Rows of C are split over `pool` (may be
// null) in fixed blocks; every element sums over k in the same order, so results do not depend on it.
void MatMulF32(ThreadPool* pool, int64_t m, int64_t n, int64_t k, const float* a, int64_t a_rs, int64_t a_cs,
               const float* b, int64_t b_rs, int64_t b_cs, float* c, bool accumulate);

// Reads an int32 / int64 tensor into int64 values.
std::vector<int64_t> ReadInts(const Tensor& t);

}  // namespace compress::train
