// MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool: hand-computed cases, error messages, fast kernels
// against the reference on random shapes, and bit-identical results across thread counts.

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "compress/util/error.h"
#include "support/rounding.h"
#include "support/test_support.h"

namespace compress {
namespace {

using testing::RunNode;

using testing::Gamma;
using testing::kUnitRoundoff;

Node MakeNode(const std::string& op, std::vector<Attribute> attrs = {}, size_t outputs = 1,
              const std::string& name = "") {
  Node n;
  n.name = name;
  n.op_type = op;
  n.inputs = {"x"};
  for (size_t i = 0; i < outputs; ++i) n.outputs.push_back("y" + std::to_string(i));
  n.attributes = std::move(attrs);
  return n;
}

void ExpectFloats(const Tensor& t, const std::vector<int64_t>& dims, const std::vector<float>& values) {
  ASSERT_EQ(t.dims(), dims);
  ASSERT_EQ(t.numel(), static_cast<int64_t>(values.size()));
  for (size_t i = 0; i < values.size(); ++i)
    EXPECT_FLOAT_EQ(t.data<float>()[i], values[i]) << "element " << i;
}

std::vector<int64_t> Int64s(const Tensor& t) { return {t.data<int64_t>(), t.data<int64_t>() + t.numel()}; }

Tensor Random(const std::vector<int64_t>& dims, std::mt19937& rng) {
  Tensor t(DType::kFloat, dims);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (int64_t i = 0; i < t.numel(); ++i) t.mutable_data<float>()[i] = dist(rng);
  return t;
}

Tensor Abs(const Tensor& t) {
  Tensor out(DType::kFloat, t.dims());
  for (int64_t i = 0; i < t.numel(); ++i) out.mutable_data<float>()[i] = std::fabs(t.data<float>()[i]);
  return out;
}

void ExpectBitwiseEqual(const Tensor& a, const Tensor& b, const std::string& what) {
  ASSERT_EQ(a.dims(), b.dims()) << what;
  EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0) << what;
}

// 4x4 plane whose 2x2 maxima sit at different corners: 5 at (0,1), 8 at (1,2), 9 at (2,0), 11 at (3,3).
const std::vector<float> kPlane = {1, 5, 2, 0, 3, 4, 8, 6, 9, 0, 1, 2, 7, 3, 4, 11};

Tensor TwoPlanes() {
  std::vector<float> v = kPlane;
  for (float f : kPlane) v.push_back(f + 100);
  return Tensor::FromVector<float>({1, 2, 4, 4}, v);
}

TEST(MaxPoolTest, IndicesRowMajorAndColumnMajor) {
  const std::vector<Attribute> window = {Attribute::Ints("kernel_shape", {2, 2}),
                                         Attribute::Ints("strides", {2, 2})};
  for (const bool reference : {true, false}) {
    const auto row_major = RunNode(MakeNode("MaxPool", window, 2), {TwoPlanes()}, 12, reference);
    ExpectFloats(row_major[0], {1, 2, 2, 2}, {5, 8, 9, 11, 105, 108, 109, 111});
    ASSERT_EQ(row_major[1].dtype(), DType::kInt64);
    // Flat indices into X, the second channel offset by one plane (16).
    EXPECT_EQ(Int64s(row_major[1]), (std::vector<int64_t>{1, 6, 8, 15, 17, 22, 24, 31}));
    std::vector<Attribute> column = window;
    column.push_back(Attribute::Int("storage_order", 1));
    const auto col_major = RunNode(MakeNode("MaxPool", column, 2), {TwoPlanes()}, 12, reference);
    // Within a plane h + w * H.
    EXPECT_EQ(Int64s(col_major[1]), (std::vector<int64_t>{4, 9, 2, 15, 20, 25, 18, 31}));
    // Without the Indices output the fast 2x2 path runs.
    ExpectFloats(RunNode(MakeNode("MaxPool", window), {TwoPlanes()}, 12, reference)[0], {1, 2, 2, 2},
                 {5, 8, 9, 11, 105, 108, 109, 111});
  }
}

TEST(MaxPoolTest, CeilModePadsAndDilations) {
  std::vector<float> v(25);
  for (int i = 0; i < 25; ++i) v[static_cast<size_t>(i)] = static_cast<float>(i);
  const Tensor x = Tensor::FromVector<float>({1, 1, 5, 5}, v);
  for (const bool reference : {true, false}) {
    const std::vector<Attribute> k2s2 = {Attribute::Ints("kernel_shape", {2, 2}),
                                         Attribute::Ints("strides", {2, 2})};
    ExpectFloats(RunNode(MakeNode("MaxPool", k2s2), {x}, 12, reference)[0], {1, 1, 2, 2}, {6, 8, 16, 18});
    std::vector<Attribute> ceil = k2s2;
    ceil.push_back(Attribute::Int("ceil_mode", 1));
    ExpectFloats(RunNode(MakeNode("MaxPool", ceil), {x}, 12, reference)[0], {1, 1, 3, 3},
                 {6, 8, 9, 16, 18, 19, 21, 23, 24});
    // Dilation 2: the window of output (0, 0) is x[0][0], x[0][2], x[2][0], x[2][2].
    ExpectFloats(RunNode(MakeNode("MaxPool", {Attribute::Ints("kernel_shape", {2, 2}),
                                              Attribute::Ints("dilations", {2, 2})}),
                         {x}, 12, reference)[0],
                 {1, 1, 3, 3}, {12, 13, 14, 17, 18, 19, 22, 23, 24});
    // ceil_mode drops a last window that would start in the end padding: 1-D length 4, pads [0, 1] gives 2,
    // not 3, outputs.
    const Tensor line = Tensor::FromVector<float>({1, 1, 4}, {1, 2, 3, 4});
    ExpectFloats(
        RunNode(MakeNode("MaxPool", {Attribute::Ints("kernel_shape", {2}), Attribute::Ints("strides", {2}),
                                     Attribute::Ints("pads", {0, 1}), Attribute::Int("ceil_mode", 1)}),
                {line}, 12, reference)[0],
        {1, 1, 2}, {2, 4});
    // SAME_UPPER on length 4, kernel 3: one pad on each side.
    ExpectFloats(RunNode(MakeNode("MaxPool", {Attribute::Ints("kernel_shape", {3}),
                                              Attribute::String("auto_pad", "SAME_UPPER")}),
                         {line}, 12, reference)[0],
                 {1, 1, 4}, {2, 3, 4, 4});
  }
}

TEST(MaxPoolTest, EightBitTypes) {
  const Tensor u = Tensor::FromVector<uint8_t>({1, 1, 4}, {3, 250, 7, 1});
  const Tensor s = Tensor::FromVector<int8_t>({1, 1, 4}, {-3, -128, 7, -1});
  const Node pool =
      MakeNode("MaxPool", {Attribute::Ints("kernel_shape", {2}), Attribute::Ints("strides", {2})});
  for (const bool reference : {true, false}) {
    const Tensor yu = RunNode(pool, {u}, 12, reference)[0];
    ASSERT_EQ(yu.dtype(), DType::kUInt8);
    EXPECT_EQ(std::vector<uint8_t>(yu.data<uint8_t>(), yu.data<uint8_t>() + 2),
              (std::vector<uint8_t>{250, 7}));
    const Tensor ys = RunNode(pool, {s}, 12, reference)[0];
    EXPECT_EQ(std::vector<int8_t>(ys.data<int8_t>(), ys.data<int8_t>() + 2), (std::vector<int8_t>{-3, 7}));
  }
}

TEST(AveragePoolTest, CountIncludePad) {
  // Windows over [pad, 1], [1, 2], [2, 3], [3, pad].
  const Tensor x = Tensor::FromVector<float>({1, 1, 3}, {1, 2, 3});
  const std::vector<Attribute> window = {Attribute::Ints("kernel_shape", {2}),
                                         Attribute::Ints("pads", {1, 1})};
  for (const bool reference : {true, false}) {
    ExpectFloats(RunNode(MakeNode("AveragePool", window), {x}, 11, reference)[0], {1, 1, 4},
                 {1, 1.5f, 2.5f, 3});
    std::vector<Attribute> include = window;
    include.push_back(Attribute::Int("count_include_pad", 1));
    ExpectFloats(RunNode(MakeNode("AveragePool", include), {x}, 11, reference)[0], {1, 1, 4},
                 {0.5f, 1.5f, 2.5f, 1.5f});
  }
}

TEST(AveragePoolTest, CeilModeWindowsAverageOnlyWhatTheyCover) {
  std::vector<float> v(16);
  for (int i = 0; i < 16; ++i) v[static_cast<size_t>(i)] = static_cast<float>(i);
  const Tensor x = Tensor::FromVector<float>({1, 1, 4, 4}, v);
  const Node pool =
      MakeNode("AveragePool", {Attribute::Ints("kernel_shape", {3, 3}), Attribute::Ints("strides", {2, 2}),
                               Attribute::Int("ceil_mode", 1)});
  // Windows rows/cols {0,1,2} and {2,3}: means of 9, 6, 6 and 4 elements.
  for (const bool reference : {true, false}) {
    ExpectFloats(RunNode(pool, {x}, 11, reference)[0], {1, 1, 2, 2}, {5, 6.5f, 11, 12.5f});
  }
}

TEST(GlobalPoolTest, AverageAndMaxPerPlane) {
  const Tensor x = Tensor::FromVector<float>({1, 2, 2, 2}, {1, 2, 3, 4, 5, 6, 7, 8});
  for (const bool reference : {true, false}) {
    ExpectFloats(RunNode(MakeNode("GlobalAveragePool"), {x}, 1, reference)[0], {1, 2, 1, 1}, {2.5f, 6.5f});
    ExpectFloats(RunNode(MakeNode("GlobalMaxPool"), {x}, 1, reference)[0], {1, 2, 1, 1}, {4, 8});
  }
}

TEST(PoolTest, ErrorsNameTheNode) {
  const Tensor x(DType::kFloat, {1, 1, 3, 3});
  const std::vector<std::pair<Node, std::string>> cases = {
      {MakeNode("MaxPool", {}, 1, "pool_bad"), "kernel_shape is required"},
      {MakeNode("AveragePool", {Attribute::Ints("kernel_shape", {4, 4})}, 1, "pool_big"),
       "the window [4,4] (dilations [1,1]) is larger than the padded input [3,3]"},
      {MakeNode("MaxPool", {Attribute::Ints("kernel_shape", {2})}, 1, "pool_rank"),
       "kernel_shape [2] has 1 values, expected 2 for 2 spatial dims"}};
  for (const bool reference : {true, false}) {
    for (const auto& [node, message] : cases) {
      try {
        RunNode(node, {x}, 12, reference);
        ADD_FAILURE() << "no error for " << node.Describe();
      } catch (const Error& e) {
        EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput);
        EXPECT_NE(std::string(e.what()).find(node.Describe() + ": " + message), std::string::npos)
            << e.what();
      }
    }
  }
}

TEST(PoolTest, FastMatchesReferenceOnRandomShapes) {
  std::mt19937 rng(42);
  auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  for (int i = 0; i < 200; ++i) {
    const int64_t rank = pick(1, 3);
    std::vector<int64_t> kernel, strides, dilations, pads(static_cast<size_t>(2 * rank)),
        x_dims = {pick(1, 2), pick(1, 3)};
    const bool max = pick(0, 1) == 1;
    for (int64_t d = 0; d < rank; ++d) {
      kernel.push_back(pick(1, 4));
      strides.push_back(pick(1, 3));
      dilations.push_back(max ? pick(1, 2) : 1);
      const int64_t k_eff = (kernel.back() - 1) * dilations.back() + 1;
      pads[static_cast<size_t>(d)] = pick(0, kernel.back() - 1);
      pads[static_cast<size_t>(d + rank)] = pick(0, kernel.back() - 1);
      x_dims.push_back(k_eff + pick(0, 9));
    }
    std::vector<Attribute> attrs = {Attribute::Ints("kernel_shape", kernel),
                                    Attribute::Ints("strides", strides),
                                    Attribute::Int("ceil_mode", pick(0, 1))};
    if (max) attrs.push_back(Attribute::Ints("dilations", dilations));
    if (!max) attrs.push_back(Attribute::Int("count_include_pad", pick(0, 1)));
    const int64_t pad_mode = pick(0, 3);
    if (pad_mode == 0) {
      attrs.push_back(Attribute::String(
          "auto_pad",
          std::vector<std::string>{"SAME_UPPER", "SAME_LOWER", "VALID"}[static_cast<size_t>(pick(0, 2))]));
    } else {
      attrs.push_back(Attribute::Ints("pads", pads));
    }
    const Node pool = MakeNode(max ? "MaxPool" : "AveragePool", attrs);
    const Tensor x = Random(x_dims, rng);
    const std::string what = pool.op_type + " X" + ShapeToString(x_dims) + " kernel" + ShapeToString(kernel) +
                             " strides" + ShapeToString(strides) + " dilations" + ShapeToString(dilations) +
                             " pads" + ShapeToString(pads) + " mode " + std::to_string(pad_mode);
    const Tensor ref = RunNode(pool, {x}, 12, true)[0];
    const Tensor fast = RunNode(pool, {x}, 12, false, 2)[0];
    ASSERT_EQ(fast.dims(), ref.dims()) << what;
    if (max) {
      ExpectBitwiseEqual(fast, ref, what);
      continue;
    }
    // An average sums at most kernel-size terms and divides once.
    int64_t terms = 1;
    for (int64_t k : kernel) terms *= k;
    const Tensor magnitude = RunNode(pool, {Abs(x)}, 12, true)[0];
    for (int64_t e = 0; e < ref.numel(); ++e) {
      const double bound = (Gamma(terms + 1) + 2 * kUnitRoundoff) * magnitude.data<float>()[e];
      ASSERT_LE(std::fabs(fast.data<float>()[e] - ref.data<float>()[e]), bound) << what << " element " << e;
    }
  }
}

TEST(PoolTest, ThreadCountDoesNotChangeBits) {
  std::mt19937 rng(3);
  const Tensor x = Random({64, 32, 28, 28}, rng);
  const std::vector<Node> nodes = {
      MakeNode("MaxPool", {Attribute::Ints("kernel_shape", {2, 2}), Attribute::Ints("strides", {2, 2})}),
      MakeNode("MaxPool", {Attribute::Ints("kernel_shape", {3, 3}), Attribute::Ints("pads", {1, 1, 1, 1})}),
      MakeNode("AveragePool", {Attribute::Ints("kernel_shape", {3, 3}), Attribute::Ints("strides", {2, 2}),
                               Attribute::Ints("pads", {1, 1, 1, 1})}),
      MakeNode("GlobalAveragePool"), MakeNode("GlobalMaxPool")};
  for (const Node& n : nodes) {
    ExpectBitwiseEqual(RunNode(n, {x}, 12, false, 1)[0], RunNode(n, {x}, 12, false, 3)[0], n.op_type);
  }
}

}  // namespace
}  // namespace compress
