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
// The float32 rules against the float64 ones on the same values: the forward outputs and the rule's
// arithmetic round to 24 bits (relative 6e-8), a few operations deep.
constexpr GradTolerance kFloat32VsFloat64{1e-5, 1e-4};

// Largest |numeric - analytic| over one test, recorded as the test property worst_abs_error
// (--gtest_output=xml) so that the margin under the tolerance can be read off a run.
class WorstError {
 public:
  void operator()(double e) { worst_ = std::max(worst_, e); }
  ~WorstError() {
    char text[32];
    std::snprintf(text, sizeof(text), "%.2e", worst_);
    ::testing::Test::RecordProperty("worst_abs_error", text);
  }

 private:
  double worst_ = 0;
};

// The rule's gradients of every float input for case c, the loss weights as ExpectGradientsMatch makes them.
std::vector<Tensor> RuleGradients(const GradCase& c, int threads) {
  const Model model = testing::OneNodeModel(c);
  std::vector<std::string> params;
  std::vector<Tensor> values;
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    const DType d = c.inputs[i].dtype();
    const bool trainable = c.trainable.empty() ? (d == DType::kFloat || d == DType::kDouble)
                                               : (i < c.trainable.size() && c.trainable[i]);
    if (!trainable) continue;
    params.push_back("x" + std::to_string(i));
    values.push_back(c.inputs[i]);
  }
  ExecutorOptions eo;
  eo.threads = 1;
  eo.reference_kernels = c.reference_kernels;
  Executor probe(model, eo);
  const std::vector<Tensor> outs = probe.Run({});
  std::vector<std::string> seeds;
  std::vector<Tensor> weights;
  for (size_t k = 0; k < outs.size(); ++k) {
    if (outs[k].dtype() != DType::kFloat && outs[k].dtype() != DType::kDouble) continue;
    seeds.push_back("y" + std::to_string(k));
    weights.push_back(RandomTensor(outs[k].dtype(), outs[k].dims(), 1000u + static_cast<uint32_t>(k)));
  }
  BackpropOptions bo;
  bo.threads = threads;
  bo.reference_kernels = c.reference_kernels;
  Backprop bp(model, params, seeds, bo);
  return bp.Backward(bp.Forward({}, values), weights);
}

GradCase ToFloat32(GradCase c) {
  for (Tensor& t : c.inputs) {
    if (t.dtype() != DType::kDouble) continue;
    Tensor f(DType::kFloat, t.dims());
    for (int64_t i = 0; i < t.numel(); ++i)
      f.mutable_data<float>()[i] = static_cast<float>(t.data<double>()[i]);
    t = f;
  }
  return c;
}

// The float32 rule gives the float64 rule's gradients to float32 accuracy.
void ExpectFloat32MatchesFloat64(const GradCase& c64) {
  const std::vector<Tensor> g64 = RuleGradients(c64, 1);
  const std::vector<Tensor> g32 = RuleGradients(ToFloat32(c64), 1);
  ASSERT_EQ(g64.size(), g32.size());
  for (size_t p = 0; p < g64.size(); ++p) {
    ASSERT_EQ(g32[p].dtype(), DType::kFloat) << c64.op;
    ASSERT_EQ(g32[p].dims(), g64[p].dims()) << c64.op;
    for (int64_t e = 0; e < g64[p].numel(); ++e) {
      const double a = g64[p].data<double>()[e], b = g32[p].data<float>()[e];
      EXPECT_LE(std::abs(a - b), kFloat32VsFloat64.abs + kFloat32VsFloat64.rel * std::abs(a))
          << c64.op << " float32 gradient " << p << "[" << e << "]: " << b << " vs float64 " << a;
    }
  }
}

// Same gradients, bit for bit, with a 1-thread and a 2-thread pool.
void ExpectThreadInvariant(const GradCase& c) {
  const std::vector<Tensor> g1 = RuleGradients(c, 1);
  const std::vector<Tensor> g2 = RuleGradients(c, 2);
  ASSERT_EQ(g1.size(), g2.size());
  for (size_t p = 0; p < g1.size(); ++p) {
    ASSERT_EQ(g1[p].nbytes(), g2[p].nbytes());
    EXPECT_EQ(std::memcmp(g1[p].raw(), g2[p].raw(), g1[p].nbytes()), 0) << c.op << " gradient " << p;
  }
}

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
  WorstError track;
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
    ExpectFloat32MatchesFloat64(c);
  }
}

TEST(ElementwiseGrad, ClipBoundsAsInputsGetNoGradient) {
  WorstError track;
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
      ExpectFloat32MatchesFloat64(c);
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
  WorstError track;
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
  WorstError track;
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
  WorstError track;
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
      ExpectFloat32MatchesFloat64(c);
    }
  }
}

TEST(ElementwiseGrad, LegacyBroadcastFromAxis) {
  WorstError track;
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
  WorstError track;
  uint32_t seed = 700;
  for (const BinaryShapes& s : BroadcastShapes()) {
    SCOPED_TRACE(ShapeToString(s.a) + " " + ShapeToString(s.b));
    GradCase c;
    c.op = "Pow";
    c.opset = 15;
    c.inputs = {RandomTensor(DType::kDouble, s.a, seed++, 0.3, 2.0),
                RandomTensor(DType::kDouble, s.b, seed++, -1.5, 1.5)};
    track(ExpectGradientsMatch(c, kSmoothF64));
    ExpectFloat32MatchesFloat64(c);
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
  WorstError track;
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
      ExpectFloat32MatchesFloat64(c);
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
  WorstError track;
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
    ExpectFloat32MatchesFloat64(c);
  }
}

TEST(ElementwiseGrad, SameGradientsWithOneAndTwoThreads) {
  GradCase c;
  c.op = "Mul";
  c.opset = 14;
  c.reference_kernels = false;
  c.inputs = {RandomTensor(DType::kFloat, {7, 33, 65}, 1), RandomTensor(DType::kFloat, {33, 1}, 2)};
  ExpectThreadInvariant(c);
  c.op = "Max";
  ExpectThreadInvariant(c);
  GradCase u;
  u.op = "Gelu";
  u.opset = 20;
  u.reference_kernels = false;
  u.inputs = {RandomTensor(DType::kFloat, {7, 33, 65}, 3)};
  ExpectThreadInvariant(u);
}

}  // namespace
}  // namespace compress::train
