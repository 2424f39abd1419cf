// Elementwise kernels: broadcasting (numpy and the opset < 7 axis form), integer wrap-around, Pow's mixed
// types, variadic ops, activations, Clip's two forms, PRelu, comparisons, Where, Cast (float16 / bfloat16
// rounding, integers, strings), fast kernels against the reference, and thread-count independence.

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "compress/exec/executor.h"
#include "compress/util/error.h"
#include "compress/util/half.h"
#include "support/test_support.h"

namespace compress {
namespace {

using testing::ErrorOf;

using testing::RunNode;
using Dims = std::vector<int64_t>;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// Relative tolerance for a float32 result against its definition in double: a few float ulps (2^-23 each).
constexpr double kFloatRel = 1e-6;
// The fast kernels' float approximations of tanh, the logistic function and erf (vecmath) against std::: a
// few ulps of values |y| <= 1, absolute. Gelu multiplies erf / tanh by x, so it scales with |x|. (vecmath.h
// bounds them tighter, 7e-7 and less; these bounds predate it.)
constexpr double kApproxAbs = 1e-6;
constexpr double kApproxGeluRel = 2e-6;
// exp, relative (its values span e^-15 .. e^15 below): vecmath's bound (1.3e-7) plus std::exp's own rounding
// (up to an ulp, 1.2e-7).
constexpr double kApproxExpRel = 3e-7;

Node MakeNode(const std::string& op, std::vector<std::string> inputs, std::vector<Attribute> attrs = {}) {
  Node n;
  n.name = "n0";
  n.op_type = op;
  n.inputs = std::move(inputs);
  n.outputs = {"y"};
  n.attributes = std::move(attrs);
  return n;
}

Tensor F32(const Dims& dims, const std::vector<float>& v) { return Tensor::FromVector<float>(dims, v); }
Tensor F32(const std::vector<float>& v) { return F32({static_cast<int64_t>(v.size())}, v); }

template <typename T>
std::vector<T> Values(const Tensor& t) {
  return {t.data<T>(), t.data<T>() + t.numel()};
}
std::vector<bool> Bools(const Tensor& t) {
  return std::vector<bool>(t.data<bool>(), t.data<bool>() + t.numel());
}
std::vector<uint16_t> Bits16(const Tensor& t) {
  const auto* p = static_cast<const uint16_t*>(t.raw());
  return {p, p + t.numel()};
}
Tensor Half(const std::vector<uint16_t>& bits) {
  return Tensor::FromBytes(DType::kFloat16, {static_cast<int64_t>(bits.size())}, bits.data(),
                           bits.size() * 2);
}

Tensor Random(const Dims& dims, uint32_t seed, float lo = -4.0f, float hi = 4.0f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(static_cast<size_t>(ShapeElementCount(dims)));
  for (float& x : v) x = dist(gen);
  return F32(dims, v);
}

// Runs a node with the reference and the fast kernels and checks they agree bit for bit.
Tensor RunBoth(const Node& n, const std::vector<Tensor>& in, int64_t opset) {
  const Tensor ref = RunNode(n, in, opset, /*reference=*/true)[0];
  const Tensor fast = RunNode(n, in, opset, /*reference=*/false)[0];
  EXPECT_TRUE(fast.SameContent(ref)) << n.op_type;
  return ref;
}

// --- Broadcasting
// -------------------------------------------------------------------------------------------

TEST(Binary, BroadcastsBothOperands) {
  const Tensor a = F32({2, 3, 1}, {0, 1, 2, 3, 4, 5});
  const Tensor b = F32({1, 4}, {10, 20, 30, 40});
  const Tensor y = RunBoth(MakeNode("Add", {"a", "b"}), {a, b}, 14);
  ASSERT_EQ(y.dims(), (Dims{2, 3, 4}));
  const std::vector<float> v = Values<float>(y);
  for (int i = 0; i < 6; ++i) {
    for (int k = 0; k < 4; ++k) {
      EXPECT_EQ(v[static_cast<size_t>(i * 4 + k)], static_cast<float>(i + 10 * (k + 1)));
    }
  }
  const Tensor d = RunBoth(MakeNode("Div", {"a", "b"}), {F32({1, 2}, {1, 9}), F32({2, 1}, {2, 4})}, 14);
  EXPECT_EQ(d.dims(), (Dims{2, 2}));
  EXPECT_EQ(Values<float>(d), (std::vector<float>{0.5f, 4.5f, 0.25f, 2.25f}));
}

TEST(Binary, FastMatchesReferenceOnEveryBroadcastPattern) {
  const std::vector<std::pair<Dims, Dims>> patterns = {
      {{64, 17, 192}, {64, 17, 192}},  // same shape
      {{64, 17, 192}, {192}},          // bias row
      {{1000}, {}},                    // scalar right
      {{}, {1000}},                    // scalar left
      {{8, 16, 5, 5}, {16, 1, 1}},     // per channel
      {{8, 16, 5, 5}, {8, 16, 1, 1}},  // per sample and channel
      {{4, 1, 3}, {1, 5, 1}},          // both broadcast
      {{1, 3}, {4, 1}},
  };
  uint32_t seed = 1;
  for (const auto& [da, db] : patterns) {
    const Tensor a = Random(da, seed++), b = Random(db, seed++, 0.5f, 3.0f);
    for (const char* op : {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min"}) {
      const Tensor y = RunBoth(MakeNode(op, {"a", "b"}), {a, b}, 14);
      EXPECT_EQ(y.dims().size(), std::max(da.size(), db.size())) << op;
    }
    // Integers take the same loops.
    std::vector<int32_t> ia(static_cast<size_t>(a.numel())), ib(static_cast<size_t>(b.numel()));
    for (size_t i = 0; i < ia.size(); ++i) ia[i] = static_cast<int32_t>(a.data<float>()[i] * 1000);
    for (size_t i = 0; i < ib.size(); ++i) ib[i] = static_cast<int32_t>(b.data<float>()[i] * 3);
    for (const char* op : {"Add", "Mul", "Div", "Greater", "Equal"}) {
      RunBoth(MakeNode(op, {"a", "b"}),
              {Tensor::FromVector<int32_t>(da, ia), Tensor::FromVector<int32_t>(db, ib)}, 14);
    }
  }
}

TEST(Binary, BeforeOpset7BroadcastAlignsBAtAxis) {
  const Tensor a = F32({2, 3}, {1, 2, 3, 4, 5, 6});
  const Node axis0 = MakeNode("Add", {"a", "b"}, {Attribute::Int("broadcast", 1), Attribute::Int("axis", 0)});
  EXPECT_EQ(Values<float>(RunBoth(axis0, {a, F32({10, 20})}, 6)),
            (std::vector<float>{11, 12, 13, 24, 25, 26}));
  // Without axis B lines up at the right, as in numpy.
  const Node right = MakeNode("Mul", {"a", "b"}, {Attribute::Int("broadcast", 1)});
  EXPECT_EQ(Values<float>(RunBoth(right, {a, F32({1, 10, 100})}, 6)),
            (std::vector<float>{1, 20, 300, 4, 50, 600}));
  // The same node at opset 7 broadcasts as numpy does: [2] does not fit [2,3] from the right.
  const std::string msg = ErrorOf([&] { RunNode(axis0, {a, F32({10, 20})}, 7); });
  EXPECT_NE(msg.find("shapes [2,3] and [2] cannot be broadcast"), std::string::npos) << msg;
  const Node too_long =
      MakeNode("Add", {"a", "b"}, {Attribute::Int("broadcast", 1), Attribute::Int("axis", 1)});
  const std::string msg2 = ErrorOf([&] { RunNode(too_long, {a, F32({3, 1}, {1, 2, 3})}, 6); });
  EXPECT_NE(msg2.find("does not fit into [2,3] from axis 1"), std::string::npos) << msg2;
}

TEST(Binary, IncompatibleShapesAndTypesNameTheNode) {
  std::string msg = ErrorOf([] {
    RunNode(MakeNode("Add", {"a", "b"}), {F32({2, 3}, {1, 2, 3, 4, 5, 6}), F32({1, 2, 3, 4})}, 14);
  });
  EXPECT_NE(msg.find("node 'n0' (Add): shapes [2,3] and [4] cannot be broadcast"), std::string::npos) << msg;
  msg = ErrorOf([] {
    RunNode(MakeNode("Mul", {"a", "b"}), {F32({1}), Tensor::FromVector<int64_t>({1}, {2})}, 14);
  });
  EXPECT_NE(msg.find("node 'n0' (Mul): inputs have different element types float32 and int64"),
            std::string::npos)
      << msg;
  msg = ErrorOf([] { RunNode(MakeNode("Sqrt", {"x"}), {Tensor::FromVector<int32_t>({1}, {4})}, 14); });
  EXPECT_NE(msg.find("node 'n0' (Sqrt): element type int32 is not supported"), std::string::npos) << msg;
}

TEST(Binary, IntegersWrapAndDivideLikeNumpy) {
  constexpr int32_t kMax = std::numeric_limits<int32_t>::max(), kMin = std::numeric_limits<int32_t>::min();
  auto i32 = [](std::vector<int32_t> v) {
    return Tensor::FromVector<int32_t>({static_cast<int64_t>(v.size())}, v);
  };
  EXPECT_EQ(Values<int32_t>(RunBoth(MakeNode("Add", {"a", "b"}), {i32({kMax, -5}), i32({1, 3})}, 14)),
            (std::vector<int32_t>{kMin, -2}));
  EXPECT_EQ(Values<int32_t>(RunBoth(MakeNode("Mul", {"a", "b"}), {i32({65536, -3}), i32({65536, 7})}, 14)),
            (std::vector<int32_t>{0, -21}));
  // Truncating division; by zero gives 0 and INT_MIN / -1 wraps, as numpy's.
  EXPECT_EQ(
      Values<int32_t>(RunBoth(MakeNode("Div", {"a", "b"}), {i32({7, -7, 5, kMin}), i32({-2, 2, 0, -1})}, 14)),
      (std::vector<int32_t>{-3, -3, 0, kMin}));
  const Tensor u16 = Tensor::FromVector<uint16_t>({2}, {65535, 3});
  EXPECT_EQ(Values<uint16_t>(RunBoth(MakeNode("Mul", {"a", "b"}), {u16, u16}, 14)),
            (std::vector<uint16_t>{1, 9}));
  const Tensor u8 = Tensor::FromVector<uint8_t>({2}, {0, 200});
  EXPECT_EQ(
      Values<uint8_t>(RunBoth(MakeNode("Sub", {"a", "b"}), {u8, Tensor::FromVector<uint8_t>({}, {1})}, 14)),
      (std::vector<uint8_t>{255, 199}));
}

TEST(Pow, MixesBaseAndExponentTypes) {
  const Node pow = MakeNode("Pow", {"x", "e"});
  EXPECT_EQ(
      Values<float>(RunBoth(pow, {F32({2, -3, 0.5f}), Tensor::FromVector<int64_t>({3}, {3, 2, 2})}, 15)),
      (std::vector<float>{8, 9, 0.25f}));
  // An integer base keeps its type; a float exponent result is truncated.
  EXPECT_EQ(Values<int32_t>(RunBoth(pow, {Tensor::FromVector<int32_t>({2}, {2, 3}), F32({0.5f, 2})}, 15)),
            (std::vector<int32_t>{1, 9}));
  EXPECT_EQ(Values<int64_t>(RunBoth(pow,
                                    {Tensor::FromVector<int64_t>({4}, {3, -2, 2, -1}),
                                     Tensor::FromVector<int64_t>({4}, {4, 3, -1, -3})},
                                    15)),
            (std::vector<int64_t>{81, -8, 0, -1}));
  EXPECT_EQ(Values<float>(RunBoth(pow, {F32({2, 3}, {1, 2, 3, 4, 5, 6}), F32({}, {2})}, 15)),
            (std::vector<float>{1, 4, 9, 16, 25, 36}));
}

TEST(Pow, FastKernelSquaresByMultiplying) {
  const Tensor x = Random({1000}, 3);
  const Node pow = MakeNode("Pow", {"x", "e"});
  const Tensor fast = RunNode(pow, {x, F32({}, {2})}, 15, false)[0];
  const Tensor ref = RunNode(pow, {x, F32({}, {2})}, 15, true)[0];
  for (int64_t i = 0; i < x.numel(); ++i) {
    const float v = x.data<float>()[i];
    EXPECT_EQ(fast.data<float>()[i], v * v) << v;
    // The reference's pow is within an ulp of the correctly rounded square.
    EXPECT_NEAR(ref.data<float>()[i], v * v, std::ldexp(v * v, -23)) << v;
  }
}

TEST(Variadic, FoldsLeftToRightWithBroadcasting) {
  const Tensor a = F32({2, 1}, {1, 2}), b = F32({10, 20, 30}), c = F32({}, {100});
  const Tensor sum = RunBoth(MakeNode("Sum", {"a", "b", "c"}), {a, b, c}, 13);
  ASSERT_EQ(sum.dims(), (Dims{2, 3}));
  EXPECT_EQ(Values<float>(sum), (std::vector<float>{111, 121, 131, 112, 122, 132}));
  EXPECT_EQ(Values<float>(RunBoth(MakeNode("Mean", {"a", "b", "c"}), {a, b, c}, 13)),
            (std::vector<float>{37, 121.0f / 3, 131.0f / 3, 112.0f / 3, 122.0f / 3, 44}));
  EXPECT_EQ(Values<float>(RunBoth(MakeNode("Max", {"a", "b", "c"}), {a, F32({10, 200, 30}), c}, 13)),
            (std::vector<float>{100, 200, 100, 100, 200, 100}));
  // NaN wins in Max and Min, as in numpy.
  const Tensor mx = RunBoth(MakeNode("Max", {"a", "b"}), {F32({1, kNaN, 3}), F32({2, 0, kNaN})}, 13);
  EXPECT_EQ(mx.data<float>()[0], 2.0f);
  EXPECT_TRUE(std::isnan(mx.data<float>()[1]) && std::isnan(mx.data<float>()[2]));
  const Tensor mn =
      RunBoth(MakeNode("Min", {"a", "b"}),
              {Tensor::FromVector<int8_t>({2}, {-5, 7}), Tensor::FromVector<int8_t>({}, {0})}, 13);
  EXPECT_EQ(Values<int8_t>(mn), (std::vector<int8_t>{-5, 0}));
  // One input is passed through.
  EXPECT_EQ(Values<float>(RunNode(MakeNode("Sum", {"a"}), {b}, 13)[0]), Values<float>(b));
  const std::string msg = ErrorOf([&] { RunNode(MakeNode("Add", {"a", "b", "c"}), {a, b, c}, 13); });
  EXPECT_NE(msg.find("expects 2 inputs, got 3"), std::string::npos) << msg;
}

// --- Unary
// ----------------------------------------------------------------------------------------------------

TEST(Activations, MatchTheirDefinitions) {
  struct Case {
    const char* op;
    std::vector<Attribute> attrs;
    std::vector<float> x;
    std::function<double(double)> f;
  };
  const double selu_a = 1.67326319217681884765625, selu_g = 1.05070102214813232421875;
  const std::vector<Case> cases = {
      {"Relu", {}, {-1, 0, 2.5f}, [](double x) { return x < 0 ? 0 : x; }},
      {"LeakyRelu",
       {Attribute::Float("alpha", 0.1f)},
       {-2, 3},
       [](double x) { return x < 0 ? 0.1f * x : x; }},
      {"LeakyRelu", {}, {-2}, [](double x) { return 0.01f * x; }},
      {"Elu", {}, {-1, 2}, [](double x) { return x < 0 ? std::expm1(x) : x; }},
      {"Selu",
       {},
       {-1, 2},
       [&](double x) { return x > 0 ? selu_g * x : selu_g * (selu_a * std::exp(x) - selu_a); }},
      {"Sigmoid", {}, {-100, -3, 0, 3, 100}, [](double x) { return 1 / (1 + std::exp(-x)); }},
      {"Tanh", {}, {-20, -0.5f, 0, 2}, [](double x) { return std::tanh(x); }},
      {"HardSigmoid", {}, {-3, 0, 1, 3}, [](double x) { return std::clamp(0.2 * x + 0.5, 0.0, 1.0); }},
      {"HardSigmoid",
       {Attribute::Float("alpha", 0.5f), Attribute::Float("beta", 0.25f)},
       {-1, 1},
       [](double x) { return std::clamp(0.5 * x + 0.25, 0.0, 1.0); }},
      {"HardSwish", {}, {-4, -1, 1, 4}, [](double x) { return x * std::clamp(x / 6 + 0.5, 0.0, 1.0); }},
      // Stable for large |x|: log(1 + e^100) is 100, not inf.
      {"Softplus",
       {},
       {-100, -1, 0, 1, 100},
       [](double x) { return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x)); }},
      {"Erf", {}, {-2, -0.3f, 0, 1.5f}, [](double x) { return std::erf(x); }},
      {"Gelu",
       {},
       {-3, -0.5f, 0, 1, 4},
       [](double x) { return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0))); }},
      {"Gelu",
       {Attribute::String("approximate", "tanh")},
       {-3, -0.5f, 0, 1, 4},
       [](double x) { return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x))); }},
      {"Sqrt", {}, {0, 2, 9}, [](double x) { return std::sqrt(x); }},
      {"Exp", {}, {-1, 0, 10}, [](double x) { return std::exp(x); }},
      {"Log", {}, {0.5f, 1, 100}, [](double x) { return std::log(x); }},
      {"Neg", {}, {-1, 2}, [](double x) { return -x; }},
      {"Abs", {}, {-1.5f, 2}, [](double x) { return std::fabs(x); }},
      {"Reciprocal", {}, {-4, 0.5f}, [](double x) { return 1 / x; }},
  };
  for (const Case& c : cases) {
    for (const bool reference : {true, false}) {
      const Tensor y = RunNode(MakeNode(c.op, {"x"}, c.attrs), {F32(c.x)}, 20, reference)[0];
      for (size_t i = 0; i < c.x.size(); ++i) {
        const double want = c.f(c.x[i]);
        EXPECT_NEAR(y.data<float>()[i], want, kFloatRel * std::max(1.0, std::fabs(want)))
            << c.op << "(" << c.x[i] << ")";
      }
    }
  }
}

TEST(Activations, IntegerAbsNegAndRelu) {
  const Tensor x = Tensor::FromVector<int8_t>({4}, {-128, -3, 0, 5});
  EXPECT_EQ(Values<int8_t>(RunNode(MakeNode("Abs", {"x"}), {x}, 13)[0]),
            (std::vector<int8_t>{-128, 3, 0, 5}));
  EXPECT_EQ(Values<int8_t>(RunNode(MakeNode("Neg", {"x"}), {x}, 13)[0]),
            (std::vector<int8_t>{-128, 3, 0, -5}));
  EXPECT_EQ(Values<int8_t>(RunNode(MakeNode("Relu", {"x"}), {x}, 14)[0]), (std::vector<int8_t>{0, 0, 0, 5}));
}

// The fast kernels' approximations of tanh, the logistic function, erf and exp against the reference's std::
// functions.
TEST(Activations, FastKernelsStayWithinFloatRoundingOfTheReference) {
  std::vector<float> x;
  for (int i = 0; i <= 20000; ++i) x.push_back(-15.0f + 30.0f * static_cast<float>(i) / 20000);
  x.insert(x.end(), {kNaN, kInf, -kInf, 1e-30f, -1e-30f, 0.0f});
  const Tensor in = F32(x);
  const std::vector<std::pair<const char*, std::vector<Attribute>>> ops = {
      {"Exp", {}},
      {"Tanh", {}},
      {"Sigmoid", {}},
      {"Erf", {}},
      {"Gelu", {}},
      {"Gelu", {Attribute::String("approximate", "tanh")}}};
  for (const auto& [op, attrs] : ops) {
    const Node n = MakeNode(op, {"x"}, attrs);
    const Tensor ref = RunNode(n, {in}, 20, true)[0], fast = RunNode(n, {in}, 20, false)[0];
    for (size_t i = 0; i < x.size(); ++i) {
      const float r = ref.data<float>()[i], f = fast.data<float>()[i];
      if (std::isnan(r)) {
        EXPECT_TRUE(std::isnan(f)) << op << "(" << x[i] << ")";
        continue;
      }
      if (std::isinf(r)) {
        EXPECT_EQ(f, r) << op << "(" << x[i] << ")";
        continue;
      }
      const std::string name = op;
      const double tol = name == "Gelu"  ? kApproxGeluRel * std::max(1.0f, std::fabs(x[i]))
                         : name == "Exp" ? kApproxExpRel * std::fabs(r)
                                         : kApproxAbs;
      EXPECT_NEAR(f, r, tol) << op << "(" << x[i] << ")";
    }
  }
}

TEST(Gelu, StandardSinceOpset20AndMicrosoftContribDomain) {
  const Node gelu = MakeNode("Gelu", {"x"});
  std::string msg = ErrorOf([&] { RunNode(gelu, {F32({1})}, 17); });
  EXPECT_NE(msg.find("Gelu of opset 17 is not supported"), std::string::npos) << msg;
  EXPECT_NEAR(RunNode(gelu, {F32({1})}, 20)[0].data<float>()[0], 0.8413447f, kFloatRel);
  msg = ErrorOf(
      [] { RunNode(MakeNode("Gelu", {"x"}, {Attribute::String("approximate", "fast")}), {F32({1})}, 20); });
  EXPECT_NE(msg.find("unknown approximate 'fast'"), std::string::npos) << msg;

  Model m;
  m.ir_version = 8;
  m.opset_imports = {{"", 14}, {"com.microsoft", 1}};
  Node contrib = MakeNode("Gelu", {"x"});
  contrib.domain = "com.microsoft";
  m.graph.nodes.push_back(contrib);
  m.graph.inputs.push_back({"x", TypeInfo::Tensor(DType::kFloat, {Dim::Fixed(2)}), ""});
  m.graph.outputs.push_back({"y", TypeInfo::Tensor(DType::kFloat, {Dim::Fixed(2)}), ""});
  Executor exec(m);
  const Tensor y = exec.Run({F32({1, -2})})[0];
  EXPECT_NEAR(y.data<float>()[0], 0.8413447f, kFloatRel);
  EXPECT_NEAR(y.data<float>()[1], -0.0455003f, kFloatRel);
}

TEST(Clip, AttributesBeforeOpset11) {
  const Tensor x = F32({-3, 0, 5, kNaN});
  const Node both = MakeNode("Clip", {"x"}, {Attribute::Float("min", -1), Attribute::Float("max", 2)});
  const Tensor y = RunNode(both, {x}, 6)[0];
  EXPECT_EQ(y.data<float>()[0], -1);
  EXPECT_EQ(y.data<float>()[1], 0);
  EXPECT_EQ(y.data<float>()[2], 2);
  EXPECT_TRUE(std::isnan(y.data<float>()[3]));
  const Tensor only_max =
      RunNode(MakeNode("Clip", {"x"}, {Attribute::Float("max", 1)}), {F32({-1e30f, 7})}, 6)[0];
  EXPECT_EQ(Values<float>(only_max), (std::vector<float>{-1e30f, 1}));
}

TEST(Clip, OptionalInputsSinceOpset11) {
  const Tensor x = F32({-3, 0, 5});
  EXPECT_EQ(
      Values<float>(RunNode(MakeNode("Clip", {"x", "lo", "hi"}), {x, F32({}, {-1}), F32({}, {2})}, 13)[0]),
      (std::vector<float>{-1, 0, 2}));
  // Max only ("" for the omitted min), on integers (opset 12 on).
  const Tensor i8 = Tensor::FromVector<int8_t>({3}, {-128, 0, 127});
  EXPECT_EQ(Values<int8_t>(
                RunNode(MakeNode("Clip", {"x", "", "hi"}), {i8, Tensor::FromVector<int8_t>({}, {3})}, 13)[0]),
            (std::vector<int8_t>{-128, 0, 3}));
  // min > max gives max everywhere, as numpy's clip.
  EXPECT_EQ(
      Values<float>(RunNode(MakeNode("Clip", {"x", "lo", "hi"}), {x, F32({}, {4}), F32({}, {1})}, 13)[0]),
      (std::vector<float>{1, 1, 1}));
  // No bounds: unchanged (attributes are ignored from opset 11 on).
  EXPECT_EQ(Values<float>(RunNode(MakeNode("Clip", {"x"}, {Attribute::Float("max", 0)}), {x}, 11)[0]),
            (std::vector<float>{-3, 0, 5}));
  const std::string msg = ErrorOf([&] { RunNode(MakeNode("Clip", {"x", "lo"}), {x, F32({1, 2})}, 13); });
  EXPECT_NE(msg.find("node 'n0' (Clip): min must be a scalar, got shape [2]"), std::string::npos) << msg;
}

TEST(PRelu, SlopeBroadcastsIntoTheInput) {
  const Tensor x = F32({2, 3}, {-1, -2, -3, 1, 2, 3});
  EXPECT_EQ(Values<float>(RunBoth(MakeNode("PRelu", {"x", "s"}), {x, F32({1, 2, 3})}, 16)),
            (std::vector<float>{-1, -4, -9, 1, 2, 3}));
  EXPECT_EQ(Values<float>(RunBoth(MakeNode("PRelu", {"x", "s"}), {x, F32({2, 1}, {2, 10})}, 16)),
            (std::vector<float>{-2, -4, -6, 1, 2, 3}));
  // Before opset 7 a [C] slope applies along the channel axis 1.
  const Tensor x3 = F32({1, 2, 2}, {-1, -1, -1, 2});
  EXPECT_EQ(Values<float>(RunBoth(MakeNode("PRelu", {"x", "s"}), {x3, F32({3, 5})}, 6)),
            (std::vector<float>{-3, -3, -5, 2}));
  const std::string msg = ErrorOf([&] {
    RunNode(MakeNode("PRelu", {"x", "s"}), {x, F32({1, 2, 3}, {1, 2, 3, 4, 5, 6})}, 16);
  });
  EXPECT_NE(msg.find("slope of shape [1,2,3] cannot be broadcast to the input shape [2,3]"),
            std::string::npos)
      << msg;
}

// --- Comparisons, logic, Where
// --------------------------------------------------------------------------------

TEST(Compare, EqualLessGreaterOrEqualAndNot) {
  const Tensor a = F32({2, 2}, {1, 2, 3, kNaN}), b = F32({2}, {2, 2});
  EXPECT_EQ(Bools(RunBoth(MakeNode("Equal", {"a", "b"}), {a, b}, 13)),
            (std::vector<bool>{false, true, false, false}));
  EXPECT_EQ(Bools(RunBoth(MakeNode("Less", {"a", "b"}), {a, b}, 13)),
            (std::vector<bool>{true, false, false, false}));
  EXPECT_EQ(Bools(RunBoth(MakeNode("Greater", {"a", "b"}), {a, b}, 13)),
            (std::vector<bool>{false, false, true, false}));
  // NaN compares false in every direction, also with OrEqual.
  EXPECT_EQ(Bools(RunBoth(MakeNode("GreaterOrEqual", {"a", "b"}), {a, b}, 12)),
            (std::vector<bool>{false, true, true, false}));
  EXPECT_EQ(Bools(RunBoth(MakeNode("LessOrEqual", {"a", "b"}), {a, b}, 16)),
            (std::vector<bool>{true, true, false, false}));
  EXPECT_EQ(Bools(RunBoth(MakeNode("GreaterOrEqual", {"a", "b"}),
                          {Tensor::FromVector<int64_t>({3, 1}, {1, 2, 3}), Tensor::FromVector<int64_t>({2}, {2, 3})},
                          12)),
            (std::vector<bool>{false, false, true, false, true, true}));
  const Tensor ia = Tensor::FromVector<int64_t>({3}, {5, -1, 7});
  EXPECT_EQ(Bools(RunBoth(MakeNode("Equal", {"a", "b"}), {ia, Tensor::FromVector<int64_t>({}, {7})}, 13)),
            (std::vector<bool>{false, false, true}));
  const Tensor s = Tensor::FromStrings({2}, {"cat", "dog"});
  EXPECT_EQ(Bools(RunBoth(MakeNode("Equal", {"a", "b"}), {s, Tensor::FromStrings({}, {"dog"})}, 19)),
            (std::vector<bool>{false, true}));
  const Tensor t = Tensor::FromVector<bool>({2, 2}, {true, true, false, false});
  const Tensor u = Tensor::FromVector<bool>({2}, {true, false});
  EXPECT_EQ(Bools(RunBoth(MakeNode("And", {"a", "b"}), {t, u}, 7)),
            (std::vector<bool>{true, false, false, false}));
  EXPECT_EQ(Bools(RunBoth(MakeNode("Equal", {"a", "b"}), {t, u}, 13)),
            (std::vector<bool>{true, false, false, true}));
  EXPECT_EQ(Bools(RunNode(MakeNode("Not", {"a"}), {u}, 1)[0]), (std::vector<bool>{false, true}));
  const std::string msg = ErrorOf([&] { RunNode(MakeNode("And", {"a", "b"}), {a, b}, 7); });
  EXPECT_NE(msg.find("expects bool inputs, got float32"), std::string::npos) << msg;
}

TEST(Where, BroadcastsAllThreeInputsAndCopiesBitsOfAnyType) {
  const Tensor cond = Tensor::FromVector<bool>({2, 1}, {true, false});
  const Tensor y = RunNode(MakeNode("Where", {"c", "x", "y"}), {cond, F32({1, 2, 3}), F32({}, {-1})}, 16)[0];
  ASSERT_EQ(y.dims(), (Dims{2, 3}));
  EXPECT_EQ(Values<float>(y), (std::vector<float>{1, 2, 3, -1, -1, -1}));
  // float16 is selected as stored: a signalling NaN payload survives.
  const Tensor h = RunNode(
      MakeNode("Where", {"c", "x", "y"}),
      {Tensor::FromVector<bool>({2}, {true, false}), Half({0x7d01, 0x3c00}), Half({0x0001, 0x8000})}, 16)[0];
  EXPECT_EQ(h.dtype(), DType::kFloat16);
  EXPECT_EQ(Bits16(h), (std::vector<uint16_t>{0x7d01, 0x8000}));
  const Tensor s = RunNode(MakeNode("Where", {"c", "x", "y"}),
                           {cond, Tensor::FromStrings({}, {"yes"}), Tensor::FromStrings({}, {"no"})}, 16)[0];
  EXPECT_EQ(s.strings(), (std::vector<std::string>{"yes", "no"}));
}

// --- Cast
// -----------------------------------------------------------------------------------------------------

Node CastTo(DType to) { return MakeNode("Cast", {"x"}, {Attribute::Int("to", static_cast<int64_t>(to))}); }

TEST(Cast, FloatToFloat16RoundsToNearestEvenIncludingSubnormals) {
  const float ulp = std::ldexp(1.0f, -10), sub = std::ldexp(1.0f, -24);  // 1.0's ulp, smallest subnormal
  const std::vector<float> x = {1 + ulp / 2,                             // halfway: to even 1.0
                                1 + 3 * ulp / 2,                         // halfway: to even 1 + 2 ulp
                                1 + ulp / 2 + std::ldexp(1.0f, -20),     // just above halfway: up
                                sub,
                                sub / 2,      // smallest subnormal; halfway to zero: to even 0
                                3 * sub / 2,  // halfway between 1 and 2 subnormals: to even 2
                                sub * 0.75f,  // above halfway: 1 subnormal
                                65504,
                                65519,
                                65520,  // largest half; rounds down to it; overflows to inf
                                -0.0f,
                                -kInf,
                                kNaN};
  const Tensor h = RunNode(CastTo(DType::kFloat16), {F32(x)}, 13)[0];
  ASSERT_EQ(h.dtype(), DType::kFloat16);
  const std::vector<uint16_t> bits = Bits16(h);
  EXPECT_EQ(std::vector<uint16_t>(bits.begin(), bits.end() - 1),
            (std::vector<uint16_t>{0x3c00, 0x3c02, 0x3c01, 0x0001, 0x0000, 0x0002, 0x0001, 0x7bff, 0x7bff,
                                   0x7c00, 0x8000, 0xfc00}));
  EXPECT_EQ(bits.back() & 0x7c00, 0x7c00);
  EXPECT_NE(bits.back() & 0x03ff, 0);
  // Back to float32: exact.
  const Tensor f = RunNode(CastTo(DType::kFloat), {h}, 13)[0];
  const std::vector<float> want = {1,   1 + 2 * ulp, 1 + ulp, sub,  0,     2 * sub,
                                   sub, 65504,       65504,   kInf, -0.0f, -kInf};
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(f.data<float>()[i], want[i]) << i;
  EXPECT_TRUE(std::signbit(f.data<float>()[10]));
  EXPECT_TRUE(std::isnan(f.data<float>()[12]));
}

TEST(Cast, DoubleToFloat16RoundsOnce) {
  // 1 + 2^-11 + 2^-40 is just above the midpoint between 1 and 1 + 2^-10; rounding to float first would land
  // exactly on the midpoint and then round to even (1.0).
  const double above_tie = 1 + std::ldexp(1.0, -11) + std::ldexp(1.0, -40);
  const Tensor x = Tensor::FromVector<double>({3}, {above_tie, 1 + std::ldexp(1.0, -11), -1e-9});
  EXPECT_EQ(Bits16(RunNode(CastTo(DType::kFloat16), {x}, 13)[0]),
            (std::vector<uint16_t>{0x3c01, 0x3c00, 0x8000}));
  EXPECT_EQ(Bits16(RunNode(
                CastTo(DType::kBFloat16),
                {Tensor::FromVector<double>({1}, {1 + std::ldexp(1.0, -8) + std::ldexp(1.0, -30)})}, 13)[0]),
            (std::vector<uint16_t>{0x3f81}));
}

TEST(Cast, BFloat16RoundsToNearestEvenAndWidensExactly) {
  const float ulp = std::ldexp(1.0f, -7);
  const Tensor b =
      RunNode(CastTo(DType::kBFloat16), {F32({1 + ulp / 2, 1 + 3 * ulp / 2, -2.5f, kInf})}, 13)[0];
  ASSERT_EQ(b.dtype(), DType::kBFloat16);
  EXPECT_EQ(Bits16(b), (std::vector<uint16_t>{0x3f80, 0x3f82, 0xc020, 0x7f80}));
  const Tensor f = RunNode(CastTo(DType::kFloat), {b}, 13)[0];
  EXPECT_EQ(Values<float>(f), (std::vector<float>{1, 1 + 2 * ulp, -2.5f, kInf}));
  // float16 to bfloat16 directly: one rounding.
  const Tensor hb = RunNode(CastTo(DType::kBFloat16), {Half({0x3c01, 0xc500})}, 13)[0];
  EXPECT_EQ(Bits16(hb), (std::vector<uint16_t>{0x3f80, 0xc0a0}));
}

TEST(Cast, FloatToIntegerTruncatesTowardZero) {
  const Tensor x = F32({-2.7f, -0.5f, 0.5f, 2.7f, 1e6f});
  EXPECT_EQ(Values<int32_t>(RunNode(CastTo(DType::kInt32), {x}, 13)[0]),
            (std::vector<int32_t>{-2, 0, 0, 2, 1000000}));
  // Out of a narrow type's range the int64 value wraps, as numpy's astype gives.
  EXPECT_EQ(Values<uint8_t>(RunNode(CastTo(DType::kUInt8), {F32({-1, 300, 255.9f})}, 13)[0]),
            (std::vector<uint8_t>{255, 44, 255}));
  EXPECT_EQ(Values<int64_t>(RunNode(CastTo(DType::kInt64),
                                    {Tensor::FromVector<double>({2}, {-9007199254740993.0, 3e9})}, 13)[0]),
            (std::vector<int64_t>{-9007199254740992, 3000000000}));
  EXPECT_EQ(Bools(RunNode(CastTo(DType::kBool), {F32({0, -0.0f, 0.1f, kNaN})}, 13)[0]),
            (std::vector<bool>{false, false, true, true}));
  EXPECT_EQ(
      Values<float>(RunNode(CastTo(DType::kFloat), {Tensor::FromVector<bool>({2}, {true, false})}, 13)[0]),
      (std::vector<float>{1, 0}));
  EXPECT_EQ(
      Values<int8_t>(RunNode(CastTo(DType::kInt8), {Tensor::FromVector<int32_t>({2}, {200, -129})}, 13)[0]),
      (std::vector<int8_t>{-56, 127}));
  // int64 -> float16 through double: 2049 is a tie between 2048 and 2050, to even.
  EXPECT_EQ(
      Bits16(RunNode(CastTo(DType::kFloat16), {Tensor::FromVector<int64_t>({2}, {2049, -70000})}, 13)[0]),
      (std::vector<uint16_t>{0x6800, 0xfc00}));
}

TEST(Cast, ToStringFormatsLikeNumpy) {
  const Tensor f = F32({0.1f, 100, 1e-5f, 1.5e16f, -0.0f, 1e-4f, 123456.78f, 0.039187793f, kNaN, -kInf, 3});
  EXPECT_EQ(RunNode(CastTo(DType::kString), {f}, 13)[0].strings(),
            (std::vector<std::string>{"0.1", "100.0", "1e-05", "1.5e+16", "-0.0", "1e-04", "123456.78",
                                      "0.039187793", "nan", "-inf", "3.0"}));
  EXPECT_EQ(
      RunNode(CastTo(DType::kString), {Tensor::FromVector<double>({2}, {0.1, 2.5e-7})}, 13)[0].strings(),
      (std::vector<std::string>{"0.1", "2.5e-07"}));
  // float16 uses its own shortest digits: 0.1 is 0.0999755859375 in half precision.
  EXPECT_EQ(RunNode(CastTo(DType::kString), {Half({0x2e66, 0x7bff})}, 13)[0].strings(),
            (std::vector<std::string>{"0.1", "65500.0"}));
  EXPECT_EQ(RunNode(CastTo(DType::kString), {Tensor::FromVector<int64_t>({2}, {-5, 1234567890123})}, 13)[0]
                .strings(),
            (std::vector<std::string>{"-5", "1234567890123"}));
  EXPECT_EQ(RunNode(CastTo(DType::kString), {Tensor::FromVector<bool>({2}, {true, false})}, 13)[0].strings(),
            (std::vector<std::string>{"True", "False"}));
}

TEST(Cast, FromStringParsesNumbers) {
  const Tensor s = Tensor::FromStrings({7}, {"0.5", " -2 ", "INF", "+INF", "-inf", "NaN", "1e3"});
  const Tensor f = RunNode(CastTo(DType::kFloat), {s}, 13)[0];
  for (size_t i : {0, 1, 2, 3, 4, 6}) {
    EXPECT_EQ(f.data<float>()[i], (std::vector<float>{0.5f, -2, kInf, kInf, -kInf, 0, 1000})[i]) << i;
  }
  EXPECT_TRUE(std::isnan(f.data<float>()[5]));
  EXPECT_EQ(Values<int64_t>(RunNode(CastTo(DType::kInt64),
                                    {Tensor::FromStrings({2}, {"9007199254740993", "-7"})}, 13)[0]),
            (std::vector<int64_t>{9007199254740993, -7}));
  EXPECT_EQ(Bits16(RunNode(CastTo(DType::kFloat16), {Tensor::FromStrings({1}, {"0.1"})}, 13)[0]),
            (std::vector<uint16_t>{0x2e66}));
  const std::string msg =
      ErrorOf([] { RunNode(CastTo(DType::kFloat), {Tensor::FromStrings({1}, {"abc"})}, 13); });
  EXPECT_NE(msg.find("node 'n0' (Cast): cannot parse 'abc' as a number"), std::string::npos) << msg;
}

TEST(Cast, OpsetOneNamesTheTargetType) {
  const Node cast = MakeNode("Cast", {"x"}, {Attribute::String("to", "FLOAT16")});
  EXPECT_EQ(Bits16(RunNode(cast, {F32({1, -2})}, 1)[0]), (std::vector<uint16_t>{0x3c00, 0xc000}));
  const std::string msg = ErrorOf(
      [] { RunNode(MakeNode("Cast", {"x"}, {Attribute::String("to", "COMPLEX64")}), {F32({1})}, 1); });
  EXPECT_NE(msg.find("casting to 'COMPLEX64' is not supported"), std::string::npos) << msg;
}

// --- float16 through the executor, threads
// --------------------------------------------------------------------

TEST(Float16, ArithmeticRunsInFloat32AndRoundsBack) {
  // 1 + 2^-11 is exact in float32; the float16 result rounds that tie to even.
  const Tensor a = Half({0x3c00, 0x3c01, 0x0001, 0x7bff}), b = Half({0x1000, 0x1000, 0x0001, 0x7bff});
  const Tensor y = RunBoth(MakeNode("Add", {"a", "b"}), {a, b}, 14);
  ASSERT_EQ(y.dtype(), DType::kFloat16);
  EXPECT_EQ(Bits16(y), (std::vector<uint16_t>{0x3c00, 0x3c02, 0x0002, 0x7c00}));
  const Tensor t = RunBoth(MakeNode("Relu", {"x"}), {Half({0xbc00, 0x3555})}, 14);
  EXPECT_EQ(Bits16(t), (std::vector<uint16_t>{0x0000, 0x3555}));
}

TEST(Threads, ResultsDoNotDependOnTheThreadCount) {
  const Tensor big = Random({64, 40, 192}, 7), row = Random({192}, 8), col = Random({64, 1, 1}, 9);
  const Tensor cond = [&] {
    std::vector<bool> c(static_cast<size_t>(big.numel()));
    for (size_t i = 0; i < c.size(); ++i) c[i] = big.data<float>()[i] > 0;
    return Tensor::FromVector<bool>(big.dims(), c);
  }();
  const std::vector<std::pair<Node, std::vector<Tensor>>> runs = {
      {MakeNode("Add", {"a", "b"}), {big, row}},
      {MakeNode("Mul", {"a", "b"}), {big, col}},
      {MakeNode("Sum", {"a", "b", "c"}), {big, row, col}},
      {MakeNode("Tanh", {"x"}), {big}},
      {MakeNode("Gelu", {"x"}), {big}},
      {MakeNode("Softplus", {"x"}), {big}},
      {MakeNode("Where", {"c", "x", "y"}), {cond, big, row}},
      {CastTo(DType::kFloat16), {big}},
  };
  for (const auto& [node, inputs] : runs) {
    for (const bool reference : {true, false}) {
      const Tensor one = RunNode(node, inputs, 20, reference, 1)[0];
      const Tensor three = RunNode(node, inputs, 20, reference, 3)[0];
      EXPECT_TRUE(one.SameContent(three)) << node.op_type << (reference ? " reference" : " fast");
    }
  }
}

}  // namespace
}  // namespace compress
