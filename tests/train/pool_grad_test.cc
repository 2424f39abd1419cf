// MaxPool, AveragePool, GlobalAveragePool and GlobalMaxPool backward rules against central finite
// differences in float64, for every window attribute; MaxPool inputs are distinct values spaced far wider
// than the finite-difference step, so no window has a tie within reach of +-h.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "compress/exec/thread_pool.h"
#include "train/grad_check.h"

namespace compress::train {
namespace {

using testing::ExpectGradientsMatch;
using testing::GradCase;
using testing::GradTolerance;
using testing::RandomTensor;

// Float64, reference kernels: pools are linear in X away from max ties, so central differences with
// h = 1e-6 carry only rounding error (~1e-10 here); 1e-7 absolute / 1e-6 relative leaves wide margin.
constexpr GradTolerance kPoolF64{1e-7, 1e-6};

// Distinct values (a shuffled ramp with step 1e-2, far above h = 1e-6): max windows have no ties.
Tensor DistinctTensor(std::vector<int64_t> dims, uint32_t seed) {
  Tensor t(DType::kDouble, std::move(dims));
  std::vector<int64_t> order(static_cast<size_t>(t.numel()));
  std::iota(order.begin(), order.end(), 0);
  std::mt19937 rng(seed);
  std::shuffle(order.begin(), order.end(), rng);
  double* p = t.mutable_data<double>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = -1.0 + 1e-2 * static_cast<double>(order[static_cast<size_t>(i)]);
  return t;
}

GradCase PoolCase(const std::string& op, std::vector<Attribute> attrs, std::vector<int64_t> x, uint32_t seed,
                  int64_t opset = 17) {
  GradCase c;
  c.op = op;
  c.opset = opset;
  c.attributes = std::move(attrs);
  c.inputs = {op == "MaxPool" || op == "GlobalMaxPool" ? DistinctTensor(std::move(x), seed)
                                                       : RandomTensor(DType::kDouble, std::move(x), seed)};
  return c;
}

TEST(PoolGrad, MaxPool2DStridesPadsDilationsCeilMode) {
  for (const int ceil_mode : {0, 1}) {
    SCOPED_TRACE(ceil_mode);
    ExpectGradientsMatch(PoolCase("MaxPool",
                                  {Attribute::Ints("kernel_shape", {3, 2}), Attribute::Ints("strides", {2, 2}),
                                   Attribute::Ints("pads", {1, 0, 1, 1}), Attribute::Ints("dilations", {1, 2}),
                                   Attribute::Int("ceil_mode", ceil_mode)},
                                  {2, 3, 8, 7}, 1),
                         kPoolF64);
  }
}

TEST(PoolGrad, MaxPoolOverlappingWindowsAndIndicesOutput) {
  // Stride 1 windows overlap, so one input gathers several outputs' gradients. Indices (output 1) are
  // produced but carry no gradient; storage_order only changes them.
  GradCase c = PoolCase("MaxPool",
                        {Attribute::Ints("kernel_shape", {3, 3}), Attribute::Int("storage_order", 1)}, {1, 2, 5, 6}, 2);
  c.num_outputs = 2;
  ExpectGradientsMatch(c, kPoolF64);
}

TEST(PoolGrad, MaxPoolAutoPad1D3D) {
  for (const char* pad : {"SAME_UPPER", "SAME_LOWER", "VALID"}) {
    SCOPED_TRACE(pad);
    ExpectGradientsMatch(PoolCase("MaxPool",
                                  {Attribute::Ints("kernel_shape", {4}), Attribute::Ints("strides", {3}),
                                   Attribute::String("auto_pad", pad)},
                                  {2, 2, 11}, 3),
                         kPoolF64);
    ExpectGradientsMatch(PoolCase("MaxPool",
                                  {Attribute::Ints("kernel_shape", {2, 3, 2}), Attribute::Ints("strides", {1, 2, 2}),
                                   Attribute::String("auto_pad", pad)},
                                  {1, 2, 3, 5, 4}, 4),
                         kPoolF64);
  }
}

TEST(PoolGrad, AveragePoolCountIncludePadCeilMode) {
  for (const int include : {0, 1}) {
    for (const int ceil_mode : {0, 1}) {
      SCOPED_TRACE(std::to_string(include) + " " + std::to_string(ceil_mode));
      // Kernel 3, stride 2: 9 rows with pads 1 / 0 and 8 columns with pads 1 / 1 give 4 outputs, or 5 with
      // ceil_mode, whose last window runs past the end padding (count_include_pad counts 2 of its 3 taps).
      ExpectGradientsMatch(PoolCase("AveragePool",
                                    {Attribute::Ints("kernel_shape", {3, 3}), Attribute::Ints("strides", {2, 2}),
                                     Attribute::Ints("pads", {1, 1, 0, 1}), Attribute::Int("count_include_pad", include),
                                     Attribute::Int("ceil_mode", ceil_mode)},
                                    {2, 2, 9, 8}, 10),
                           kPoolF64);
    }
  }
}

TEST(PoolGrad, AveragePoolAutoPadRanks) {
  for (const char* pad : {"SAME_UPPER", "SAME_LOWER", "VALID", "NOTSET"}) {
    SCOPED_TRACE(pad);
    ExpectGradientsMatch(PoolCase("AveragePool",
                                  {Attribute::Ints("kernel_shape", {3}), Attribute::Ints("strides", {2}),
                                   Attribute::String("auto_pad", pad), Attribute::Int("count_include_pad", 1)},
                                  {2, 3, 10}, 11),
                         kPoolF64);
    ExpectGradientsMatch(PoolCase("AveragePool",
                                  {Attribute::Ints("kernel_shape", {2, 2, 3}), Attribute::String("auto_pad", pad)},
                                  {1, 2, 3, 4, 5}, 12),
                         kPoolF64);
  }
}

TEST(PoolGrad, AveragePoolDilationsOpset19) {
  ExpectGradientsMatch(PoolCase("AveragePool",
                                {Attribute::Ints("kernel_shape", {2, 2}), Attribute::Ints("dilations", {2, 1}),
                                 Attribute::Ints("pads", {1, 1, 1, 1}), Attribute::Int("count_include_pad", 1)},
                                {1, 2, 6, 5}, 13, 19),
                       kPoolF64);
}

TEST(PoolGrad, GlobalPools) {
  for (const char* op : {"GlobalAveragePool", "GlobalMaxPool"}) {
    SCOPED_TRACE(op);
    ExpectGradientsMatch(PoolCase(op, {}, {2, 3, 5, 4}, 20), kPoolF64);
    ExpectGradientsMatch(PoolCase(op, {}, {3, 2, 7}, 21), kPoolF64);
    ExpectGradientsMatch(PoolCase(op, {}, {1, 2, 2, 3, 3}, 22), kPoolF64);
  }
}

TEST(PoolGrad, FloatThirtyTwoMatchesFloat64Rule) {
  // The float32 path of the same rules: through Backprop in float32 with a large step (the loss is linear
  // away from ties, so the difference quotient is exact up to float32 rounding of the outputs, about
  // 1e-7 * |y| / h ~ 1e-4 per output here).
  constexpr GradTolerance kPoolF32{1e-3, 1e-3};
  for (const char* op : {"MaxPool", "AveragePool"}) {
    GradCase c = PoolCase(op, {Attribute::Ints("kernel_shape", {2, 2}), Attribute::Ints("strides", {2, 2})}, {2, 2, 6, 6}, 30);
    Tensor f(DType::kFloat, c.inputs[0].dims());
    for (int64_t i = 0; i < f.numel(); ++i) f.mutable_data<float>()[i] = static_cast<float>(c.inputs[0].data<double>()[i]);
    c.inputs[0] = f;
    c.h = 1e-3;  // below half the 1e-2 spacing of MaxPool inputs
    ExpectGradientsMatch(c, kPoolF32);
  }
}

}  // namespace
}  // namespace compress::train
