// Backward rules of element-wise operators against central finite differences (float64, reference kernels),
// the float32 rules against the float64 ones, and thread-count independence.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "compress/util/error.h"
#include "compress/util/half.h"
#include "train/grad_check.h"

namespace compress::train {
namespace {

using testing::ExpectGradientsMatch;
using testing::GradCase;
using testing::GradTolerance;
using testing::RandomTensor;

// Smooth ops in float64 with h = 1e-6: central differences are accurate to about 1e-9 here (rounding
// 1e-16 / 1e-6 times the loss scale, truncation h^2 f''' ~ 1e-12), so two orders of margin.
constexpr GradTolerance kSmoothF64{1e-7, 1e-6};
// Cast to float32 rounds the output to 24 bits: with h = 1e-2 the rounding of y (6e-8 |y|) over 2h gives
// up to ~1e-5 per element of the loss.
constexpr GradTolerance kCastToFloat{5e-5, 1e-4};


// Uniform values in [lo, hi) moved at least `gap` away from every kink.
Tensor AwayFrom(Tensor t, const std::vector<double>& kinks, double gap = 0.05) {
  double* p = t.mutable_data<double>();
  for (int64_t i = 0; i < t.numel(); ++i) {
    for (const double k : kinks) {
      if (std::abs(p[i] - k) < gap) p[i] = k + (p[i] < k ? -2 * gap : 2 * gap);
    }
  }
  return t;
}

Tensor Scalar(double v) { return Tensor::FromVector<double>({}, {v}); }

Tensor BoolTensor(std::vector<int64_t> dims, uint32_t seed) {
  const Tensor r = RandomTensor(DType::kDouble, dims, seed);
  Tensor b(DType::kBool, std::move(dims));
  for (int64_t i = 0; i < r.numel(); ++i)
    static_cast<uint8_t*>(b.mutable_raw())[i] = r.data<double>()[i] > 0 ? 1 : 0;
  return b;
}

struct UnaryCase {
  std::string op;
  int64_t opset;
  std::vector<Attribute> attrs;
  double lo, hi;
  std::vector<double> kinks;
};

TEST(ElementwiseGrad, UnaryOpsAndAttributes) {
  testing::WorstError track;
  const std::vector<UnaryCase> cases = {
      {"LeakyRelu", 16, {Attribute::Float("alpha", 0.3f)}, -2, 2, {0}},
      {"LeakyRelu", 6, {}, -2, 2, {0}},
      {"Sigmoid", 13, {}, -4, 4, {}},
      {"HardSigmoid",
       6,
       {Attribute::Float("alpha", 0.3f), Attribute::Float("beta", 0.4f)},
       -3,
       3,
       {-4.0 / 3, 2}},
      {"HardSigmoid", 6, {}, -3.5, 3.5, {-2.5, 2.5}},
      {"HardSwish", 14, {}, -4.5, 4.5, {-3, 3}},
      {"Tanh", 13, {}, -2, 2, {}},
      {"Erf", 13, {}, -2, 2, {}},
      {"Sqrt", 13, {}, 0.3, 2, {}},
      {"Exp", 13, {}, -2, 2, {}},
      {"Log", 13, {}, 0.3, 2, {}},
      {"Neg", 13, {}, -1, 1, {}},
      {"Abs", 13, {}, -1, 1, {0}},
      {"Reciprocal", 13, {}, 0.4, 2, {}},
      {"Softplus", 1, {}, -3, 3, {}},
      {"Gelu", 20, {}, -3, 3, {}},
      {"Gelu", 20, {Attribute::String("approximate", "tanh")}, -3, 3, {}},
      // Clip: bounds as attributes before opset 11.
      {"Clip", 6, {Attribute::Float("min", -0.5f), Attribute::Float("max", 0.4f)}, -1, 1, {-0.5, 0.4}},
      {"Clip", 6, {Attribute::Float("max", 0.2f)}, -1, 1, {0.2}},
      {"Clip", 13, {}, -1, 1, {}},  // no bounds: identity
      {"Dropout", 7, {Attribute::Float("ratio", 0.3f)}, -1, 1, {}},
      {"Dropout", 13, {}, -1, 1, {}},
      {"Cast", 13, {Attribute::Int("to", static_cast<int64_t>(DType::kDouble))}, -1, 1, {}},
  };
  uint32_t seed = 100;
  for (const UnaryCase& u : cases) {
    SCOPED_TRACE(u.op + " opset " + std::to_string(u.opset));
    GradCase c;
    c.op = u.op;
    c.opset = u.opset;
    c.attributes = u.attrs;
    c.inputs = {AwayFrom(RandomTensor(DType::kDouble, {3, 5, 7}, seed++, u.lo, u.hi), u.kinks)};
    track(ExpectGradientsMatch(c, kSmoothF64));
    testing::ExpectFloat32MatchesFloat64(c);
  }
}

TEST(ElementwiseGrad, ClipBoundsAsInputsGetNoGradient) {
  testing::WorstError track;
  struct Bounds {
    Tensor min, max;
    std::vector<double> kinks;
  };
  const std::vector<Bounds> bounds = {{Scalar(-0.3), Scalar(0.6), {-0.3, 0.6}},
                                      {Scalar(-0.2), Tensor(), {-0.2}},
                                      {Tensor(), Scalar(0.1), {0.1}}};
  uint32_t seed = 200;
  for (const int64_t opset : {11, 13}) {
    for (const Bounds& b : bounds) {
      GradCase c;
      c.op = "Clip";
      c.opset = opset;
      c.inputs = {AwayFrom(RandomTensor(DType::kDouble, {4, 7}, seed++), b.kinks), b.min, b.max};
      if (c.inputs[2].dtype() == DType::kUndefined) c.inputs.pop_back();
      c.trainable = {true, false, false};
      const double worst = ExpectGradientsMatch(c, kSmoothF64);
      track(worst);
      EXPECT_LT(worst, 1e-8);
      testing::ExpectFloat32MatchesFloat64(c);
      // Elements clipped get zero, the others dy: the gradient sums to the weights over the unclipped ones.
      const std::vector<Tensor> g = RuleGradients(c, 1);
      ASSERT_EQ(g.size(), 1u);
      const Tensor w = RandomTensor(DType::kDouble, {4, 7}, 1000u);
      const double lo = b.min.dtype() == DType::kUndefined ? -1e9 : b.min.data<double>()[0];
      const double hi = b.max.dtype() == DType::kUndefined ? 1e9 : b.max.data<double>()[0];
      for (int64_t i = 0; i < w.numel(); ++i) {
        const double x = c.inputs[0].data<double>()[i];
        EXPECT_EQ(g[0].data<double>()[i], x >= lo && x <= hi ? w.data<double>()[i] : 0.0) << i;
      }
    }
  }
}

TEST(ElementwiseGrad, DropoutInferenceIsIdentityAndMaskGetsNone) {
  testing::WorstError track;
  // Opset 6: a float mask output; opset 10: a bool mask; opset 12 on: ratio and training_mode inputs.
  uint32_t seed = 300;
  for (const int64_t opset : {6, 10}) {
    GradCase c;
    c.op = "Dropout";
    c.opset = opset;
    c.num_outputs = 2;
    c.inputs = {RandomTensor(DType::kDouble, {2, 3, 5}, seed++)};
    track(ExpectGradientsMatch(c, kSmoothF64));
  }
  Tensor no(DType::kBool, {});
  static_cast<uint8_t*>(no.mutable_raw())[0] = 0;
  GradCase c;
  c.op = "Dropout";
  c.opset = 13;
  c.num_outputs = 2;
  c.inputs = {RandomTensor(DType::kDouble, {2, 3, 5}, seed++), Scalar(0.25), no};
  c.trainable = {true, false, false};
  track(ExpectGradientsMatch(c, kSmoothF64));
  const std::vector<Tensor> g = RuleGradients(c, 1);
  const Tensor w = RandomTensor(DType::kDouble, {2, 3, 5}, 1000u);
  ASSERT_EQ(g[0].nbytes(), w.nbytes());
  EXPECT_EQ(std::memcmp(g[0].raw(), w.raw(), w.nbytes()), 0);
}

TEST(ElementwiseGrad, DropoutTrainingModeFailsClearly) {
  Tensor yes(DType::kBool, {});
  static_cast<uint8_t*>(yes.mutable_raw())[0] = 1;
  GradCase c;
  c.op = "Dropout";
  c.opset = 13;
  c.inputs = {RandomTensor(DType::kDouble, {2, 3}, 1), Scalar(0.25), yes};
  c.trainable = {true, false, false};
  try {
    RuleGradients(c, 1);
    FAIL() << "training-mode Dropout was differentiated";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput);
    EXPECT_NE(std::string(e.what()).find("training_mode is true"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("node"), std::string::npos) << e.what();
  }
}

TEST(ElementwiseGrad, CastBetweenFloatTypes) {
  testing::WorstError track;
  // float64 -> float32 and float32 -> float64: linear, checked with a larger step over the rounding.
  GradCase down;
  down.op = "Cast";
  down.attributes = {Attribute::Int("to", static_cast<int64_t>(DType::kFloat))};
  down.inputs = {RandomTensor(DType::kDouble, {3, 5}, 400)};
  down.h = 1e-2;
  track(ExpectGradientsMatch(down, kCastToFloat));
  GradCase up;
  up.op = "Cast";
  up.attributes = {Attribute::Int("to", static_cast<int64_t>(DType::kDouble))};
  up.inputs = {RandomTensor(DType::kFloat, {3, 5}, 401)};
  up.h = 1e-2;
  track(ExpectGradientsMatch(up, kCastToFloat));
  const std::vector<Tensor> g = RuleGradients(up, 1);
  ASSERT_EQ(g[0].dtype(), DType::kFloat);  // cast back to the input's dtype
  const Tensor w = RandomTensor(DType::kDouble, {3, 5}, 1000u);
  for (int64_t i = 0; i < w.numel(); ++i)
    EXPECT_EQ(g[0].data<float>()[i], static_cast<float>(w.data<double>()[i]));
}

TEST(ElementwiseGrad, CastThroughFloat16CastsTheGradientBack) {
  // x (float64) -> Cast(float16) -> Cast(float64) -> y: the gradient crosses a float16 value, so it is dy
  // rounded to float16.
  Model m;
  m.ir_version = 8;
  m.opset_imports.push_back({"", 13});
  Tensor x = RandomTensor(DType::kDouble, {2, 7}, 410);
  x.set_name("x");
  m.graph.initializers.push_back(x);
  for (int k = 0; k < 2; ++k) {
    Node n;
    n.name = "cast" + std::to_string(k);
    n.op_type = "Cast";
    n.inputs = {k == 0 ? "x" : "h"};
    n.outputs = {k == 0 ? "h" : "y"};
    n.attributes = {Attribute::Int("to", static_cast<int64_t>(k == 0 ? DType::kFloat16 : DType::kDouble))};
    m.graph.nodes.push_back(n);
  }
  ValueInfo y;
  y.name = "y";
  m.graph.outputs.push_back(y);
  BackpropOptions o;
  o.threads = 1;
  o.reference_kernels = true;
  Backprop bp(m, {"x"}, {"y"}, o);
  const Tensor w = RandomTensor(DType::kDouble, {2, 7}, 411);
  const std::vector<Tensor> g = bp.Backward(bp.Forward({}, {x}), {w});
  ASSERT_EQ(g.size(), 1u);
  ASSERT_EQ(g[0].dtype(), DType::kDouble);
  for (int64_t i = 0; i < w.numel(); ++i) {
    const double expected = HalfToFloat(FloatToHalf(static_cast<float>(w.data<double>()[i])));
    EXPECT_EQ(g[0].data<double>()[i], expected) << i;
    EXPECT_NE(expected, w.data<double>()[i]) << i;  // the rounding is visible
  }
}

struct BinaryShapes {
  std::vector<int64_t> a, b;
};

const std::vector<BinaryShapes>& BroadcastShapes() {
  static const std::vector<BinaryShapes> shapes = {
      {{3, 5}, {3, 5}}, {{2, 3, 5}, {3, 1}}, {{5}, {2, 3, 5}}, {{2, 1, 5}, {3, 1}}, {{3, 5}, {}}};
  return shapes;
}

TEST(ElementwiseGrad, AddSubMulDivBroadcast) {
  testing::WorstError track;
  uint32_t seed = 500;
  for (const char* op : {"Add", "Sub", "Mul", "Div"}) {
    for (const BinaryShapes& s : BroadcastShapes()) {
      SCOPED_TRACE(std::string(op) + " " + ShapeToString(s.a) + " " + ShapeToString(s.b));
      GradCase c;
      c.op = op;
      c.opset = 14;
      Tensor b = RandomTensor(DType::kDouble, s.b, seed++, 0.5, 2.0);  // away from 0 for Div
      c.inputs = {RandomTensor(DType::kDouble, s.a, seed++), b};
      track(ExpectGradientsMatch(c, kSmoothF64));
      testing::ExpectFloat32MatchesFloat64(c);
    }
  }
}

TEST(ElementwiseGrad, LegacyBroadcastFromAxis) {
  testing::WorstError track;
  // Before opset 7, broadcast=1 with axis=1 lines B [3] up with A [2, 3, 5] at axis 1.
  uint32_t seed = 600;
  for (const char* op : {"Add", "Sub", "Mul", "Div", "Pow"}) {
    SCOPED_TRACE(op);
    GradCase c;
    c.op = op;
    c.opset = 6;
    c.attributes = {Attribute::Int("broadcast", 1), Attribute::Int("axis", 1)};
    c.inputs = {RandomTensor(DType::kDouble, {2, 3, 5}, seed++, 0.5, 2.0),
                RandomTensor(DType::kDouble, {3}, seed++, 0.5, 2.0)};
    track(ExpectGradientsMatch(c, kSmoothF64));
  }
}

TEST(ElementwiseGrad, PowBaseAndExponent) {
  testing::WorstError track;
  uint32_t seed = 700;
  for (const BinaryShapes& s : BroadcastShapes()) {
    SCOPED_TRACE(ShapeToString(s.a) + " " + ShapeToString(s.b));
    GradCase c;
    c.op = "Pow";
    c.opset = 15;
    c.inputs = {RandomTensor(DType::kDouble, s.a, seed++, 0.3, 2.0),
                RandomTensor(DType::kDouble, s.b, seed++, -1.5, 1.5)};
    track(ExpectGradientsMatch(c, kSmoothF64));
    testing::ExpectFloat32MatchesFloat64(c);
  }
  // An integer exponent: only the base is differentiable.
  GradCase c;
  c.op = "Pow";
  c.opset = 15;
  c.inputs = {RandomTensor(DType::kDouble, {3, 4}, seed++, -2, 2),
              Tensor::FromVector<int64_t>({4}, {2, 3, -1, 0})};
  c.inputs[0] = AwayFrom(c.inputs[0], {0}, 0.2);
  c.trainable = {true, false};
  track(ExpectGradientsMatch(c, kSmoothF64));
}

TEST(ElementwiseGrad, VariadicSumMeanMaxMin) {
  testing::WorstError track;
  const std::vector<std::vector<std::vector<int64_t>>> shape_sets = {
      {{3, 5}}, {{2, 3, 5}, {3, 1}}, {{2, 3, 5}, {5}, {3, 1}}, {{1, 5}, {3, 1}, {3, 5}, {}}};
  uint32_t seed = 800;
  for (const char* op : {"Sum", "Mean", "Max", "Min"}) {
    for (const auto& shapes : shape_sets) {
      SCOPED_TRACE(std::string(op) + " with " + std::to_string(shapes.size()) + " inputs");
      GradCase c;
      c.op = op;
      c.opset = 13;
      // Continuous random values: no two inputs come within h of each other (Max / Min ties).
      for (const auto& s : shapes) c.inputs.push_back(RandomTensor(DType::kDouble, s, seed++));
      track(ExpectGradientsMatch(c, kSmoothF64));
      testing::ExpectFloat32MatchesFloat64(c);
    }
  }
}

TEST(ElementwiseGrad, MaxMinTieGoesToTheLaterInput) {
  // The forward folds left to right and keeps the later input on a tie; so does the gradient.
  for (const char* op : {"Max", "Min"}) {
    GradCase c;
    c.op = op;
    c.opset = 13;
    c.inputs = {Tensor::FromVector<double>({3}, {1.0, 0.5, 2.0}),
                Tensor::FromVector<double>({3}, {1.0, 0.5, 2.0}),
                Tensor::FromVector<double>({3}, {0.0, 3.0, -3.0})};
    const std::vector<Tensor> g = RuleGradients(c, 1);
    const Tensor w = RandomTensor(DType::kDouble, {3}, 1000u);
    const bool max = std::string(op) == "Max";
    // Element 0: inputs 0 and 1 tie at the max (1.0); input 2 (0.0) is the min.
    EXPECT_EQ(g[0].data<double>()[0], 0.0);
    EXPECT_EQ(g[1].data<double>()[0], max ? w.data<double>()[0] : 0.0);
    EXPECT_EQ(g[2].data<double>()[0], max ? 0.0 : w.data<double>()[0]);
    // Element 1: input 2 (3.0) is the max; inputs 0 and 1 tie at the min.
    EXPECT_EQ(g[0].data<double>()[1], 0.0);
    EXPECT_EQ(g[1].data<double>()[1], max ? 0.0 : w.data<double>()[1]);
    EXPECT_EQ(g[2].data<double>()[1], max ? w.data<double>()[1] : 0.0);
  }
}

TEST(ElementwiseGrad, WhereConditionBroadcast) {
  testing::WorstError track;
  uint32_t seed = 900;
  const std::vector<std::vector<std::vector<int64_t>>> shape_sets = {
      {{3, 5}, {3, 5}, {3, 5}}, {{3, 1}, {2, 3, 5}, {5}}, {{5}, {3, 1}, {2, 1, 1}}};
  for (const auto& s : shape_sets) {
    GradCase c;
    c.op = "Where";
    c.opset = 16;
    c.inputs = {BoolTensor(s[0], seed++), RandomTensor(DType::kDouble, s[1], seed++),
                RandomTensor(DType::kDouble, s[2], seed++)};
    track(ExpectGradientsMatch(c, kSmoothF64));
    testing::ExpectFloat32MatchesFloat64(c);
  }
}

TEST(ElementwiseGrad, SameGradientsWithOneAndTwoThreads) {
  GradCase c;
  c.op = "Mul";
  c.opset = 14;
  c.reference_kernels = false;
  c.inputs = {RandomTensor(DType::kFloat, {7, 33, 65}, 1), RandomTensor(DType::kFloat, {33, 1}, 2)};
  testing::ExpectThreadInvariant(c);
  c.op = "Max";
  testing::ExpectThreadInvariant(c);
  GradCase u;
  u.op = "Gelu";
  u.opset = 20;
  u.reference_kernels = false;
  u.inputs = {RandomTensor(DType::kFloat, {7, 33, 65}, 3)};
  testing::ExpectThreadInvariant(u);
}

}  // namespace
}  // namespace compress::train
