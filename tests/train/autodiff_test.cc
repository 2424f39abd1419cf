// The differentiation engine: parameter selection, gradient flow through several nodes and shared
// values, missing rules named before training, and the first rule families against finite differences.
#include "compress/train/autodiff.h"

#include <gtest/gtest.h>

#include <cmath>
#include <tuple>
#include <vector>

#include "compress/util/error.h"
#include "train/grad_check.h"

namespace compress::train {
namespace {

using testing::ExpectGradientsMatch;
using testing::GradCase;
using testing::GradTolerance;
using testing::RandomTensor;

// Float64 on the reference kernels: central differences with h = 1e-6 are accurate to about 1e-9 for
// smooth ops of this size, so 1e-7 absolute / 1e-6 relative leaves two orders of margin.
constexpr GradTolerance kSmoothF64{1e-7, 1e-6};

TEST(GradCheck, GemmAllTransposesAlphaBeta) {
  for (int ta = 0; ta < 2; ++ta) {
    for (int tb = 0; tb < 2; ++tb) {
      GradCase c;
      c.op = "Gemm";
      c.attributes = {Attribute::Int("transA", ta), Attribute::Int("transB", tb), Attribute::Float("alpha", 0.75f),
                      Attribute::Float("beta", 1.5f)};
      c.inputs = {RandomTensor(DType::kDouble, ta ? std::vector<int64_t>{4, 3} : std::vector<int64_t>{3, 4}, 1),
                  RandomTensor(DType::kDouble, tb ? std::vector<int64_t>{5, 4} : std::vector<int64_t>{4, 5}, 2),
                  RandomTensor(DType::kDouble, {5}, 3)};
      ExpectGradientsMatch(c, kSmoothF64);
    }
  }
}

TEST(GradCheck, MatMulBatchedBroadcastAndVectors) {
  const std::vector<std::pair<std::vector<int64_t>, std::vector<int64_t>>> shapes = {
      {{3, 4}, {4, 2}}, {{2, 3, 4}, {4, 5}}, {{2, 1, 3, 4}, {3, 4, 2}}, {{4}, {2, 4, 3}}, {{2, 3, 4}, {4}}, {{4}, {4}}};
  uint32_t seed = 10;
  for (const auto& [a, b] : shapes) {
    GradCase c;
    c.op = "MatMul";
    c.inputs = {RandomTensor(DType::kDouble, a, seed++), RandomTensor(DType::kDouble, b, seed++)};
    ExpectGradientsMatch(c, kSmoothF64);
  }
}

TEST(GradCheck, AddSubBroadcast) {
  for (const char* op : {"Add", "Sub"}) {
    GradCase c;
    c.op = op;
    c.inputs = {RandomTensor(DType::kDouble, {2, 3, 4}, 20), RandomTensor(DType::kDouble, {3, 1}, 21)};
    ExpectGradientsMatch(c, kSmoothF64);
  }
}

TEST(GradCheck, ReluAwayFromZero) {
  GradCase c;
  c.op = "Relu";
  Tensor x = RandomTensor(DType::kDouble, {3, 5}, 30);
  for (int64_t i = 0; i < x.numel(); ++i) {
    double& v = x.mutable_data<double>()[i];
    if (std::abs(v) < 0.05) v = 0.1;  // central differences straddle the kink within h of zero
  }
  c.inputs = {x};
  ExpectGradientsMatch(c, kSmoothF64);
}

// y = Relu(x W1 + b1) W2 + b2 with x read twice (y + x W3): gradients flow through shared values and sum.
Model TwoLayerModel() {
  Model m;
  m.ir_version = 8;
  m.opset_imports.push_back({"", 17});
  ValueInfo x;
  x.name = "x";
  x.type = TypeInfo::Tensor(DType::kDouble, {Dim::Symbolic("batch"), Dim::Fixed(4)});
  m.graph.inputs.push_back(x);
  auto add_init = [&](const std::string& name, std::vector<int64_t> dims, uint32_t seed) {
    Tensor t = RandomTensor(DType::kDouble, std::move(dims), seed);
    t.set_name(name);
    m.graph.initializers.push_back(t);
  };
  add_init("w1", {4, 6}, 1);
  add_init("b1", {6}, 2);
  add_init("w2", {6, 3}, 3);
  add_init("w3", {4, 3}, 4);
  auto node = [&](const std::string& op, std::vector<std::string> in, std::string out) {
    Node n;
    n.name = out;
    n.op_type = op;
    n.inputs = std::move(in);
    n.outputs = {std::move(out)};
    m.graph.nodes.push_back(n);
  };
  node("MatMul", {"x", "w1"}, "h0");
  node("Add", {"h0", "b1"}, "h1");
  node("Relu", {"h1"}, "h2");
  node("MatMul", {"h2", "w2"}, "y0");
  node("MatMul", {"x", "w3"}, "s");
  node("Add", {"y0", "s"}, "y");
  node("Shape", {"y"}, "shape");
  ValueInfo y;
  y.name = "y";
  m.graph.outputs.push_back(y);
  ValueInfo sh;
  sh.name = "shape";
  m.graph.outputs.push_back(sh);
  return m;
}

TEST(Backprop, TwoLayerModelMatchesFiniteDifferences) {
  const Model m = TwoLayerModel();
  const std::vector<std::string> params = {"w1", "b1", "w2", "w3"};
  BackpropOptions o;
  o.threads = 1;
  Backprop bp(m, params, {"y"}, o);
  ASSERT_EQ(bp.data_inputs().size(), 1u);
  EXPECT_EQ(bp.DifferentiatedNodes().size(), 6u);  // Shape is not differentiated
  const Tensor x = RandomTensor(DType::kDouble, {5, 4}, 9);
  const Tensor r = RandomTensor(DType::kDouble, {5, 3}, 8);
  std::vector<Tensor> values;
  for (const auto& p : params) values.push_back(*m.graph.FindInitializer(p));
  const ValueMap fwd = bp.Forward({x}, values);
  const std::vector<Tensor> grads = bp.Backward(fwd, {r});
  auto loss = [&](const std::vector<Tensor>& v) {
    const ValueMap f = bp.Forward({x}, v);
    double l = 0;
    for (int64_t i = 0; i < r.numel(); ++i) l += f.at("y").data<double>()[i] * r.data<double>()[i];
    return l;
  };
  const double h = 1e-6;
  for (size_t p = 0; p < params.size(); ++p) {
    ASSERT_EQ(grads[p].dims(), values[p].dims());
    for (int64_t e = 0; e < values[p].numel(); ++e) {
      std::vector<Tensor> plus = values, minus = values;
      plus[p] = Tensor::FromBytes(DType::kDouble, values[p].dims(), values[p].raw(), values[p].nbytes());
      minus[p] = Tensor::FromBytes(DType::kDouble, values[p].dims(), values[p].raw(), values[p].nbytes());
      plus[p].mutable_data<double>()[e] += h;
      minus[p].mutable_data<double>()[e] -= h;
      const double numeric = (loss(plus) - loss(minus)) / (2 * h);
      EXPECT_NEAR(grads[p].data<double>()[e], numeric, 1e-6 + 1e-6 * std::abs(numeric)) << params[p] << "[" << e << "]";
    }
  }
}

// The executor computes a unary op in place when it is its input's last reader. With every value kept for
// the backward pass, that would overwrite the kept input (Sigmoid's input would hold the Sigmoid): float32
// on the executor's fast kernels, h = x + b, y = Sigmoid(h); dL/db = sum over rows of r * y (1 - y).
TEST(Backprop, KeptValuesAreNotOverwrittenByInPlaceKernels) {
  Model m;
  m.ir_version = 8;
  m.opset_imports.push_back({"", 17});
  ValueInfo x;
  x.name = "x";
  x.type = TypeInfo::Tensor(DType::kFloat, {Dim::Symbolic("batch"), Dim::Fixed(8)});
  m.graph.inputs.push_back(x);
  Tensor b = RandomTensor(DType::kFloat, {8}, 5);
  b.set_name("b");
  m.graph.initializers.push_back(b);
  for (const auto& [op, in, out] : std::vector<std::tuple<std::string, std::vector<std::string>, std::string>>{
           {"Add", {"x", "b"}, "h"}, {"Sigmoid", {"h"}, "y"}}) {
    Node n;
    n.name = out;
    n.op_type = op;
    n.inputs = in;
    n.outputs = {out};
    m.graph.nodes.push_back(n);
  }
  ValueInfo y;
  y.name = "y";
  m.graph.outputs.push_back(y);
  BackpropOptions o;
  o.threads = 2;
  Backprop bp(m, {"b"}, {"y"}, o);
  const Tensor xv = RandomTensor(DType::kFloat, {64, 8}, 6);
  const Tensor r = RandomTensor(DType::kFloat, {64, 8}, 7);
  const ValueMap fwd = bp.Forward({xv}, {b});
  const float* h = fwd.at("h").data<float>();
  const float* yv = fwd.at("y").data<float>();
  std::vector<double> expected(8, 0.0);
  for (int64_t i = 0; i < xv.numel(); ++i) {
    const float want_h = xv.data<float>()[i] + b.data<float>()[i % 8];
    ASSERT_EQ(h[i], want_h) << "kept value h[" << i << "] was overwritten";
    const double s = 1.0 / (1.0 + std::exp(-static_cast<double>(want_h)));
    EXPECT_NEAR(yv[i], s, 1e-6);
    expected[static_cast<size_t>(i % 8)] += static_cast<double>(r.data<float>()[i]) * s * (1 - s);
  }
  const std::vector<Tensor> grads = bp.Backward(fwd, {r});
  for (int64_t j = 0; j < 8; ++j) EXPECT_NEAR(grads[0].data<float>()[j], expected[static_cast<size_t>(j)], 1e-4) << j;
}

TEST(Backprop, MissingRuleNamesTheNodeBeforeTraining) {
  Model m = TwoLayerModel();
  m.graph.nodes[2].op_type = "Selu";  // on the path from w1 to y, no backward rule
  m.graph.nodes[2].name = "act";
  const auto missing = Backprop::MissingRules(m, {"w1", "w2"}, {"y"});
  ASSERT_EQ(missing.size(), 1u);
  EXPECT_EQ(missing[0], "'act' (Selu)");
  try {
    Backprop bp(m, {"w1", "w2"}, {"y"});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput);
    EXPECT_NE(std::string(e.what()).find("'act' (Selu)"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("no backward rule"), std::string::npos) << e.what();
  }
  // Training only the last layer does not go through the Selu: no rule needed.
  EXPECT_TRUE(Backprop::MissingRules(m, {"w2"}, {"y"}).empty());
}

TEST(Backprop, UnknownParameterOrLossValueIsAnError) {
  const Model m = TwoLayerModel();
  EXPECT_THROW(Backprop(m, {"nope"}, {"y"}), Error);
  EXPECT_THROW(Backprop(m, {"w1"}, {"nope"}), Error);
}

}  // namespace
}  // namespace compress::train

namespace compress::train {
namespace {

// The float32 Gemm / MatMul rules run on the executor's GEMM, the float64 ones on Eigen: the same
// gradients up to float32 rounding (testing::kFloat32VsFloat64).
TEST(GradCheck, GemmAndMatMulFloat32OnTheExecutorsGemm) {
  uint32_t seed = 40;
  for (int ta = 0; ta < 2; ++ta) {
    for (int tb = 0; tb < 2; ++tb) {
      testing::GradCase c;
      c.op = "Gemm";
      c.attributes = {Attribute::Int("transA", ta), Attribute::Int("transB", tb), Attribute::Float("alpha", 0.5f),
                      Attribute::Float("beta", 2.0f)};
      // Odd sizes past one micro-tile (6 x 16) and one row block (48 rows).
      c.inputs = {RandomTensor(DType::kDouble, ta ? std::vector<int64_t>{37, 53} : std::vector<int64_t>{53, 37}, seed++),
                  RandomTensor(DType::kDouble, tb ? std::vector<int64_t>{19, 37} : std::vector<int64_t>{37, 19}, seed++),
                  RandomTensor(DType::kDouble, {1, 19}, seed++)};
      testing::ExpectFloat32MatchesFloat64(c);
    }
  }
  for (const auto& [a, b] : std::vector<std::pair<std::vector<int64_t>, std::vector<int64_t>>>{
           {{3, 17, 33}, {33, 21}}, {{50, 9}, {9, 70}}, {{2, 3, 5, 7}, {2, 1, 7, 4}}}) {
    testing::GradCase c;
    c.op = "MatMul";
    c.inputs = {RandomTensor(DType::kDouble, a, seed++), RandomTensor(DType::kDouble, b, seed++)};
    testing::ExpectFloat32MatchesFloat64(c);
  }
}

}  // namespace
}  // namespace compress::train
