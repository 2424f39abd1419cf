// Gemm, MatMul, MatMulInteger, QLinearMatMul: hand-computed cases, error messages, fast kernels against the
// reference on random shapes, and bit-identical results across thread counts.

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

using testing::ExpectWithinRoundingBound;
using testing::Gamma;

void ExpectBitwiseEqual(const Tensor& a, const Tensor& b, const std::string& what) {
  ASSERT_EQ(a.dims(), b.dims()) << what;
  EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0) << what;
}

void ExpectFloats(const Tensor& t, const std::vector<int64_t>& dims, const std::vector<float>& values) {
  ASSERT_EQ(t.dims(), dims);
  ASSERT_EQ(t.numel(), static_cast<int64_t>(values.size()));
  for (size_t i = 0; i < values.size(); ++i)
    EXPECT_FLOAT_EQ(t.data<float>()[i], values[i]) << "element " << i;
}

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

Node MakeNode(const std::string& op, size_t inputs, std::vector<Attribute> attrs = {},
              const std::string& name = "") {
  Node n;
  n.name = name;
  n.op_type = op;
  for (size_t i = 0; i < inputs; ++i) n.inputs.push_back("in" + std::to_string(i));
  n.outputs = {"y"};
  n.attributes = std::move(attrs);
  return n;
}

std::string ErrorOf(const Node& node, const std::vector<Tensor>& inputs, bool reference) {
  try {
    RunNode(node, inputs, 13, reference);
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput);
    return e.what();
  }
  ADD_FAILURE() << "no error";
  return "";
}

// ---------------------------------------------------------------------------------------------------------
// MatMul

TEST(MatMulTest, HandComputed2D) {
  const Tensor a = Tensor::FromVector<float>({2, 3}, {1, 2, 3, 4, 5, 6});
  const Tensor b = Tensor::FromVector<float>({3, 2}, {7, 8, 9, 10, 11, 12});
  for (const bool reference : {true, false}) {
    for (const bool constant : {false, true}) {
      ExpectFloats(RunNode(MakeNode("MatMul", 2), {a, b}, 13, reference, 1, {false, constant})[0], {2, 2},
                   {58, 64, 139, 154});
    }
  }
}

TEST(MatMulTest, OneDimensionalOperandsFollowNumpy) {
  const Tensor v = Tensor::FromVector<float>({3}, {1, 2, 3});
  const Tensor m = Tensor::FromVector<float>({3, 2}, {1, 2, 3, 4, 5, 6});
  const Tensor mt = Tensor::FromVector<float>({2, 3}, {1, 3, 5, 2, 4, 6});
  for (const bool reference : {true, false}) {
    ExpectFloats(RunNode(MakeNode("MatMul", 2), {v, m}, 13, reference)[0], {2}, {22, 28});
    ExpectFloats(RunNode(MakeNode("MatMul", 2), {mt, v}, 13, reference)[0], {2}, {22, 28});
    ExpectFloats(RunNode(MakeNode("MatMul", 2), {v, v}, 13, reference)[0], {}, {14});
    // A batch of vectors times a batch of matrices: [2, 1, 3] x [3, 2] -> [2, 1, 2].
    const Tensor vs = Tensor::FromVector<float>({2, 1, 3}, {1, 2, 3, 0, 0, 1});
    ExpectFloats(RunNode(MakeNode("MatMul", 2), {vs, m}, 13, reference)[0], {2, 1, 2}, {22, 28, 5, 6});
  }
}

TEST(MatMulTest, BatchDimsBroadcast) {
  // A [2, 1, 1, 2] x B [3, 2, 1]: output [2, 3, 1, 1], y[i][j] = a_i . b_j.
  const Tensor a = Tensor::FromVector<float>({2, 1, 1, 2}, {1, 2, 3, 4});
  const Tensor b = Tensor::FromVector<float>({3, 2, 1}, {1, 0, 0, 1, 1, 1});
  for (const bool reference : {true, false}) {
    for (const bool constant : {false, true}) {
      ExpectFloats(RunNode(MakeNode("MatMul", 2), {a, b}, 13, reference, 1, {false, constant})[0],
                   {2, 3, 1, 1}, {1, 2, 3, 3, 4, 7});
    }
  }
}

TEST(MatMulTest, ShapeErrorsNameTheNode) {
  for (const bool reference : {true, false}) {
    const Node bad = MakeNode("MatMul", 2, {}, "mm_bad");
    const std::string inner =
        ErrorOf(bad, {Tensor(DType::kFloat, {2, 3}), Tensor(DType::kFloat, {4, 2})}, reference);
    EXPECT_NE(
        inner.find(bad.Describe() + ": A [2,3] and B [4,2] do not match: A has 3 columns, B has 4 rows"),
        std::string::npos)
        << inner;
    const std::string batch =
        ErrorOf(bad, {Tensor(DType::kFloat, {2, 2, 3}), Tensor(DType::kFloat, {3, 3, 2})}, reference);
    EXPECT_NE(batch.find(bad.Describe() + ": shapes [2] and [3] cannot be broadcast"), std::string::npos)
        << batch;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Gemm

TEST(GemmTest, TransposesAlphaBetaAndBroadcastC) {
  // op(A) = [[1, 2], [3, 4]] (A stored transposed), op(B) = [[1, 0, 2], [0, 1, 3]] (B stored transposed).
  const Tensor at = Tensor::FromVector<float>({2, 2}, {1, 3, 2, 4});
  const Tensor bt = Tensor::FromVector<float>({3, 2}, {1, 0, 0, 1, 2, 3});
  // A B = [[1, 2, 8], [3, 4, 18]]; Y = 2 A B + 0.5 C.
  const std::vector<Attribute> attrs = {Attribute::Int("transA", 1), Attribute::Int("transB", 1),
                                        Attribute::Float("alpha", 2.0f), Attribute::Float("beta", 0.5f)};
  const std::vector<std::pair<Tensor, std::vector<float>>> cases = {
      {Tensor::FromVector<float>({3}, {2, 4, 6}), {3, 6, 19, 7, 10, 39}},
      {Tensor::FromVector<float>({2, 1}, {2, 4}), {3, 5, 17, 8, 10, 38}},
      {Tensor::FromVector<float>({}, {2}), {3, 5, 17, 7, 9, 37}},
      {Tensor::FromVector<float>({2, 3}, {0, 0, 0, 2, 2, 2}), {2, 4, 16, 7, 9, 37}}};
  for (const bool reference : {true, false}) {
    for (const bool constant : {false, true}) {
      for (const auto& [c, want] : cases) {
        ExpectFloats(
            RunNode(MakeNode("Gemm", 3, attrs), {at, bt, c}, 13, reference, 1, {false, constant, false})[0],
            {2, 3}, want);
      }
      // Without C (optional from opset 11).
      ExpectFloats(RunNode(MakeNode("Gemm", 2, attrs), {at, bt}, 13, reference, 1, {false, constant})[0],
                   {2, 3}, {2, 4, 16, 6, 8, 36});
    }
  }
}

TEST(GemmTest, ShapeErrorsNameTheNode) {
  for (const bool reference : {true, false}) {
    const Node fc = MakeNode("Gemm", 2, {Attribute::Int("transB", 1)}, "fc");
    const std::string k =
        ErrorOf(fc, {Tensor(DType::kFloat, {4, 8}), Tensor(DType::kFloat, {8, 10})}, reference);
    EXPECT_NE(
        k.find(fc.Describe() + ": A [4,8] (transA=0) and B [8,10] (transB=1) do not match: K is 8 vs 10"),
        std::string::npos)
        << k;
    const std::string c =
        ErrorOf(MakeNode("Gemm", 3, {}, "fc"),
                {Tensor(DType::kFloat, {4, 8}), Tensor(DType::kFloat, {8, 10}), Tensor(DType::kFloat, {3})},
                reference);
    EXPECT_NE(c.find(fc.Describe() + ": C [3] cannot be broadcast to [4,10]"), std::string::npos) << c;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Fast float kernels against the reference

TEST(MatMulTest, FastMatchesReferenceOnRandomShapes) {
  testing::ForEachKernelIsa([&](KernelIsa isa) {
    SCOPED_TRACE(KernelIsaName(isa));
    std::mt19937 rng(99);
    auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
    for (int i = 0; i < 150; ++i) {
      // Sizes around the micro-tile (6 x 16) and k-block edges, batch dims that broadcast either way, 1-D
      // operands.
      const int64_t m = pick(0, 3) == 0 ? pick(1, 3) : pick(1, 140),
                    k = pick(0, 4) == 0 ? pick(250, 600) : pick(1, 70);
      const int64_t n = pick(1, 50);
      std::vector<int64_t> a = {m, k}, b = {k, n};
      // Batch dims from the innermost out; either side may have 1 there, and B may lack the outermost one.
      const int64_t batch_rank = pick(0, 2);
      for (int64_t d = 0; d < batch_rank; ++d) {
        const int64_t size = pick(1, 3), who = pick(0, 3);
        a.insert(a.begin(), who == 1 ? 1 : size);
        if (who != 3 || d + 1 < batch_rank) b.insert(b.begin(), who == 2 ? 1 : size);
      }
      if (pick(0, 9) == 0) a = {k};
      if (pick(0, 9) == 0) b = {k};
      const std::vector<Tensor> inputs = {Random(a, rng), Random(b, rng)};
      const bool constant = pick(0, 1) == 1;
      const std::string what =
          "A" + ShapeToString(a) + " B" + ShapeToString(b) + (constant ? " constant B" : "");
      const Node mm = MakeNode("MatMul", 2);
      const Tensor ref = RunNode(mm, inputs, 13, true)[0];
      const Tensor fast = RunNode(mm, inputs, 13, false, 2, {false, constant})[0];
      const Tensor magnitude = RunNode(mm, {Abs(inputs[0]), Abs(inputs[1])}, 13, true)[0];
      ExpectWithinRoundingBound(fast, ref, magnitude, k, what);
    }
  });
}

TEST(GemmTest, FastMatchesReferenceOnRandomShapes) {
  testing::ForEachKernelIsa([&](KernelIsa isa) {
    SCOPED_TRACE(KernelIsaName(isa));
    std::mt19937 rng(5);
    auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
    for (int i = 0; i < 120; ++i) {
      const int64_t m = pick(1, 150), k = pick(1, 300), n = pick(1, 40);
      const bool ta = pick(0, 1) == 1, tb = pick(0, 1) == 1;
      const float alpha = pick(0, 1) == 1 ? 1.0f : -0.75f,
                  beta = std::vector<float>{0.0f, 1.0f, 2.5f}[static_cast<size_t>(pick(0, 2))];
      const std::vector<std::vector<int64_t>> c_shapes = {{}, {n}, {1, n}, {m, 1}, {m, n}, {1}};
      const int64_t c_kind = pick(0, 6);  // 6: no C
      std::vector<Tensor> inputs = {Random(ta ? std::vector<int64_t>{k, m} : std::vector<int64_t>{m, k}, rng),
                                    Random(tb ? std::vector<int64_t>{n, k} : std::vector<int64_t>{k, n}, rng)};
      if (c_kind < 6) inputs.push_back(Random(c_shapes[static_cast<size_t>(c_kind)], rng));
      const Node gemm = MakeNode("Gemm", inputs.size(),
                                 {Attribute::Int("transA", ta), Attribute::Int("transB", tb),
                                  Attribute::Float("alpha", alpha), Attribute::Float("beta", beta)});
      const bool constant = pick(0, 1) == 1;
      const std::string what = "Gemm m=" + std::to_string(m) + " k=" + std::to_string(k) +
                               " n=" + std::to_string(n) + " transA=" + std::to_string(ta) +
                               " transB=" + std::to_string(tb) + " C kind " + std::to_string(c_kind) +
                               " alpha " + std::to_string(alpha) + " beta " + std::to_string(beta);
      const Tensor ref = RunNode(gemm, inputs, 13, true)[0];
      const Tensor fast = RunNode(gemm, inputs, 13, false, 2, {false, constant, constant})[0];
      // |alpha| and |beta| scale the absolute terms; alpha is folded into A (one more rounding per term).
      const Node abs_gemm =
          MakeNode("Gemm", inputs.size(),
                   {Attribute::Int("transA", ta), Attribute::Int("transB", tb),
                    Attribute::Float("alpha", std::fabs(alpha)), Attribute::Float("beta", std::fabs(beta))});
      std::vector<Tensor> abs_inputs;
      for (const auto& t : inputs) abs_inputs.push_back(Abs(t));
      const Tensor magnitude = RunNode(abs_gemm, abs_inputs, 13, true)[0];
      ExpectWithinRoundingBound(fast, ref, magnitude, k + 2, what);
    }
  });
}

TEST(MatMulTest, ThreadCountDoesNotChangeBits) {
  std::mt19937 rng(11);
  struct Case {
    std::vector<int64_t> a, b;
    bool constant;
  };
  // ViT-like shapes: token projection with constant weights, and the batched attention products.
  const std::vector<Case> cases = {{{64, 197, 64}, {64, 64}, true},
                                   {{64, 17, 64}, {64, 192}, true},
                                   {{64, 4, 17, 16}, {64, 4, 16, 17}, false},
                                   {{300, 700}, {700, 90}, false}};
  for (const Case& c : cases) {
    const std::vector<Tensor> inputs = {Random(c.a, rng), Random(c.b, rng)};
    const Node mm = MakeNode("MatMul", 2);
    ExpectBitwiseEqual(RunNode(mm, inputs, 13, false, 1, {false, c.constant})[0],
                       RunNode(mm, inputs, 13, false, 3, {false, c.constant})[0], "A" + ShapeToString(c.a));
  }
  const Node gemm = MakeNode("Gemm", 3, {Attribute::Int("transB", 1)});
  const std::vector<Tensor> inputs = {Random({512, 256}, rng), Random({128, 256}, rng), Random({128}, rng)};
  ExpectBitwiseEqual(RunNode(gemm, inputs, 13, false, 1, {false, true, true})[0],
                     RunNode(gemm, inputs, 13, false, 3, {false, true, true})[0], "Gemm");
}

// ---------------------------------------------------------------------------------------------------------
// MatMulInteger, QLinearMatMul

std::vector<int32_t> Int32s(const Tensor& t) { return {t.data<int32_t>(), t.data<int32_t>() + t.numel()}; }

TEST(MatMulIntegerTest, ScalarAndPerRowPerColumnZeroPoints) {
  const Tensor a = Tensor::FromVector<uint8_t>({2, 2}, {10, 20, 30, 40});
  const Tensor b = Tensor::FromVector<int8_t>({2, 2}, {1, -2, 3, -4});
  const Tensor a_zp = Tensor::FromVector<uint8_t>({}, {10});
  const Tensor b_zp = Tensor::FromVector<int8_t>({2}, {1, -2});
  const Tensor a_rows = Tensor::FromVector<uint8_t>({2}, {10, 30});
  for (const bool reference : {true, false}) {
    // No zero points: [[10 + 60, -20 - 80], [30 + 120, -60 - 160]].
    EXPECT_EQ(Int32s(RunNode(MakeNode("MatMulInteger", 2), {a, b}, 10, reference)[0]),
              (std::vector<int32_t>{70, -100, 150, -220}));
    // a_zp 10 (scalar), b_zp [1, -2] (per column): A' = [[0, 10], [20, 30]], B' = [[0, 0], [2, -2]].
    EXPECT_EQ(Int32s(RunNode(MakeNode("MatMulInteger", 4), {a, b, a_zp, b_zp}, 10, reference)[0]),
              (std::vector<int32_t>{20, -20, 60, -60}));
    // Per-row a_zp [10, 30]: A' = [[0, 10], [0, 10]].
    EXPECT_EQ(Int32s(RunNode(MakeNode("MatMulInteger", 4), {a, b, a_rows, b_zp}, 10, reference)[0]),
              (std::vector<int32_t>{20, -20, 20, -20}));
  }
}

TEST(MatMulIntegerTest, ZeroPointTypeMismatchNamesTheNode) {
  const Tensor a = Tensor::FromVector<uint8_t>({1, 2}, {1, 2});
  const Tensor b = Tensor::FromVector<uint8_t>({2, 1}, {1, 2});
  const Node qmm = MakeNode("MatMulInteger", 3, {}, "qmm");
  try {
    RunNode(qmm, {a, b, Tensor::FromVector<int8_t>({}, {0})}, 10);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(qmm.Describe() + ": a_zero_point is int8 but its input is uint8"),
              std::string::npos)
        << e.what();
  }
}

TEST(QLinearMatMulTest, RoundsHalfToEvenAndSaturates) {
  // A = I, so acc = B = [[1, 3], [5, 255]]; multiplier a_scale * b_scale / y_scale = 0.5:
  // [0.5, 1.5, 2.5, 127.5] -> half to even [0, 2, 2, 128] + y_zp 200 -> [200, 202, 202, 255 (saturated)].
  const Tensor zero = Tensor::FromVector<uint8_t>({}, {0});
  const std::vector<Tensor> inputs = {Tensor::FromVector<uint8_t>({2, 2}, {1, 0, 0, 1}),
                                      Tensor::FromVector<float>({}, {0.25f}),
                                      zero,
                                      Tensor::FromVector<uint8_t>({2, 2}, {1, 3, 5, 255}),
                                      Tensor::FromVector<float>({}, {1.0f}),
                                      zero,
                                      Tensor::FromVector<float>({}, {0.5f}),
                                      Tensor::FromVector<uint8_t>({}, {200})};
  for (const bool reference : {true, false}) {
    const Tensor y = RunNode(MakeNode("QLinearMatMul", 8), inputs, 10, reference)[0];
    ASSERT_EQ(y.dtype(), DType::kUInt8);
    EXPECT_EQ(std::vector<uint8_t>(y.data<uint8_t>(), y.data<uint8_t>() + 4),
              (std::vector<uint8_t>{200, 202, 202, 255}));
  }
}

TEST(QLinearMatMulTest, PerColumnScalesAndInt8Output) {
  // A [1, 2] = [2, 4] (a_zp 0), B columns scaled 1 and 0.25, y int8 with zero point -5:
  // acc = [2 * 1 + 4 * 2, 2 * -3 + 4 * -1] = [10, -10]; y = [10 * 1, -10 * 0.25] = [10, -2.5 -> -2] - 5.
  const std::vector<Tensor> inputs = {
      Tensor::FromVector<int8_t>({1, 2}, {2, 4}),    Tensor::FromVector<float>({}, {1.0f}),
      Tensor::FromVector<int8_t>({}, {0}),           Tensor::FromVector<int8_t>({2, 2}, {1, -3, 2, -1}),
      Tensor::FromVector<float>({2}, {1.0f, 0.25f}), Tensor::FromVector<int8_t>({2}, {0, 0}),
      Tensor::FromVector<float>({}, {1.0f}),         Tensor::FromVector<int8_t>({}, {-5})};
  for (const bool reference : {true, false}) {
    const Tensor y = RunNode(MakeNode("QLinearMatMul", 8), inputs, 10, reference)[0];
    ASSERT_EQ(y.dtype(), DType::kInt8);
    EXPECT_EQ(std::vector<int8_t>(y.data<int8_t>(), y.data<int8_t>() + 2), (std::vector<int8_t>{5, -7}));
  }
}

Tensor RandomEightBit(const std::vector<int64_t>& dims, bool is_signed, std::mt19937& rng) {
  std::uniform_int_distribution<int> dist(is_signed ? -128 : 0, is_signed ? 127 : 255);
  Tensor t(is_signed ? DType::kInt8 : DType::kUInt8, dims);
  auto* p = static_cast<uint8_t*>(t.mutable_raw());
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<uint8_t>(dist(rng));
  return t;
}

// MatMulInteger and QLinearMatMul on random shapes (batch broadcasting, depths past 256 products), 8-bit data
// of either signedness, per-tensor / per-row / per-column zero points and scales, constant or runtime B. The
// fast kernels are exact, so they must equal the reference bit for bit.
TEST(IntegerMatMulTest, FastEqualsReferenceOnRandomShapes) {
  std::mt19937 rng(31);
  auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  for (int i = 0; i < 100; ++i) {
    const int64_t m = pick(1, 40), k = pick(0, 3) == 0 ? pick(257, 700) : pick(1, 80), n = pick(1, 40);
    const int64_t batch = pick(1, 3);
    const bool b_batched = pick(0, 1) == 1, qlinear = pick(0, 1) == 1;
    const bool a_signed = pick(0, 1) == 1, b_signed = pick(0, 1) == 1;
    const Tensor a = RandomEightBit({batch, m, k}, a_signed, rng);
    const Tensor b = RandomEightBit(
        b_batched ? std::vector<int64_t>{batch, k, n} : std::vector<int64_t>{k, n}, b_signed, rng);
    const Tensor a_zp =
        RandomEightBit(pick(0, 1) == 1 ? std::vector<int64_t>{m} : std::vector<int64_t>{}, a_signed, rng);
    const Tensor b_zp =
        RandomEightBit(pick(0, 1) == 1 ? std::vector<int64_t>{n} : std::vector<int64_t>{}, b_signed, rng);
    std::vector<Tensor> inputs;
    if (qlinear) {
      auto scales = [&](int64_t count) {
        std::vector<float> v;
        for (int64_t j = 0; j < count; ++j)
          v.push_back(std::uniform_real_distribution<float>(1e-4f, 1e-2f)(rng));
        return Tensor::FromVector<float>(count == 1 ? std::vector<int64_t>{} : std::vector<int64_t>{count},
                                         v);
      };
      inputs = {a,
                scales(a_zp.numel()),
                a_zp,
                b,
                scales(b_zp.numel()),
                b_zp,
                Tensor::FromVector<float>({}, {0.1f}),
                RandomEightBit({}, pick(0, 1) == 1, rng)};
    } else {
      inputs = {a, b, a_zp, b_zp};
    }
    const bool constant = pick(0, 1) == 1;
    std::vector<bool> constant_inputs(inputs.size(), false);
    for (size_t j = 1; j < inputs.size(); ++j) constant_inputs[j] = constant;
    const Node node = MakeNode(qlinear ? "QLinearMatMul" : "MatMulInteger", inputs.size());
    const std::string what = node.op_type + " A" + ShapeToString(a.dims()) + " B" + ShapeToString(b.dims()) +
                             (constant ? " constant B" : "");
    ExpectBitwiseEqual(RunNode(node, inputs, 10, false, 2, constant_inputs)[0],
                       RunNode(node, inputs, 10, true)[0], what);
  }
}

// Constant B (packed for the 8-bit GEMM) on larger odd shapes: several row tasks, batches sharing one B (all
// rows of A in one product) or each with its own B, per-row zero points and scales of A, per-column (and per
// matrix) ones of B, int8 A (flipped to uint8), a 1-D A; bit-identical to the reference on 1 and 3 threads.
TEST(IntegerMatMulTest, ConstantBOnLargerOddShapes) {
  std::mt19937 rng(77);
  struct Shape {
    std::vector<int64_t> a, b;
    bool a_signed, b_signed, a_per_row, b_per_column;
  };
  const std::vector<Shape> shapes = {
      {{3, 130, 70}, {70, 33}, false, true, true, true},
      {{2, 65, 129}, {2, 129, 17}, true, false, true, true},
      {{64, 17, 64}, {64, 192}, false, true, false, false},
      {{577}, {577, 5}, true, true, false, true},
      {{5, 3, 2305}, {2305, 7}, false, false, true, false},
  };
  for (const Shape& shape : shapes) {
    for (const bool qlinear : {false, true}) {
      const int64_t m = shape.a.size() == 1 ? 1 : shape.a[shape.a.size() - 2], n = shape.b.back();
      const int64_t b_matrices = shape.b.size() == 3 ? shape.b[0] : 1;
      const Tensor a = RandomEightBit(shape.a, shape.a_signed, rng);
      const Tensor b = RandomEightBit(shape.b, shape.b_signed, rng);
      const Tensor a_zp = RandomEightBit(shape.a_per_row ? std::vector<int64_t>{m} : std::vector<int64_t>{},
                                         shape.a_signed, rng);
      const Tensor b_zp =
          RandomEightBit(shape.b_per_column ? std::vector<int64_t>{b_matrices, 1, n} : std::vector<int64_t>{},
                         shape.b_signed, rng);
      std::vector<Tensor> inputs;
      if (qlinear) {
        auto scales = [&](int64_t count) {
          std::vector<float> v;
          for (int64_t j = 0; j < count; ++j)
            v.push_back(std::uniform_real_distribution<float>(1e-4f, 1e-2f)(rng));
          return Tensor::FromVector<float>(count == 1 ? std::vector<int64_t>{} : std::vector<int64_t>{count},
                                           v);
        };
        inputs = {a,
                  scales(a_zp.numel()),
                  a_zp,
                  b,
                  scales(b_zp.numel()),
                  b_zp,
                  Tensor::FromVector<float>({}, {0.1f}),
                  RandomEightBit({}, shape.a_signed, rng)};
      } else {
        inputs = {a, b, a_zp, b_zp};
      }
      std::vector<bool> constant(inputs.size(), true);
      constant[0] = false;
      const Node node = MakeNode(qlinear ? "QLinearMatMul" : "MatMulInteger", inputs.size());
      const std::string what = node.op_type + " A" + ShapeToString(a.dims()) + " B" + ShapeToString(b.dims());
      const Tensor reference = RunNode(node, inputs, 10, true)[0];
      ExpectBitwiseEqual(RunNode(node, inputs, 10, false, 1, constant)[0], reference, what);
      ExpectBitwiseEqual(RunNode(node, inputs, 10, false, 3, constant)[0], reference, what + " 3 threads");
    }
  }
}

}  // namespace
}  // namespace compress
