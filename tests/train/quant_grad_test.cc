// Fake quantization for quantization-aware training: QuantizeLinear -> DequantizeLinear on a shared scale
// gives the straight-through estimator for x and LSQ's step-size gradient for s (Esser et al. 2020), checked
// against their closed forms (finite differences do not apply across round()); DequantizeLinear alone is
// linear in its scale and is checked against finite differences.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "compress/train/autodiff.h"
#include "train/grad_check.h"

namespace compress::train {
namespace {

using testing::ExpectGradientsMatch;
using testing::GradCase;
using testing::GradTolerance;
using testing::RandomTensor;

// The quantization kernels compute in float32, so the chained gradients are float32 sums of terms that
// partly cancel (R (q - z) from DequantizeLinear, -R x / s from QuantizeLinear): allow 16 float32 ulps
// (1e-6) of the sum of the magnitudes of the terms.
constexpr double kFloat32Rounding = 1e-6;

// DequantizeLinear is linear in s: float32 central differences with h = 1e-2 are exact up to the float32
// rounding of L (about 1e-7 relative per element, divided by 2h), well inside 1e-3 absolute / 1e-4 relative.
constexpr GradTolerance kDequantF32{1e-3, 1e-4};

template <typename Q>
Tensor RandomInts(DType dtype, std::vector<int64_t> dims, uint32_t seed) {
  Tensor t(dtype, std::move(dims));
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> u(std::numeric_limits<Q>::lowest(), std::numeric_limits<Q>::max());
  for (int64_t i = 0; i < t.numel(); ++i) t.mutable_data<Q>()[i] = static_cast<Q>(u(rng));
  return t;
}

struct FakeQuant {
  DType q_type = DType::kUInt8;
  std::vector<int64_t> dims;
  int64_t axis = 1;              // used when the scale is 1-D
  std::vector<float> scales;     // one: per tensor (scalar scale)
  std::vector<int> zero_points;  // empty: no zero point input
  double x_range = 1.0;          // x uniform in [-x_range, x_range)
};

// x -> QuantizeLinear(x, s, z) -> q -> DequantizeLinear(q, s, z) -> y, x and s initializers (trained).
Model TwoNodeModel(const FakeQuant& f, Tensor* x_out, Tensor* s_out) {
  Model m;
  m.ir_version = 8;
  m.opset_imports.push_back({"", 13});
  Tensor x = RandomTensor(DType::kFloat, f.dims, 7, -f.x_range, f.x_range);
  x.set_name("x");
  Tensor s = f.scales.size() == 1 ? Tensor(DType::kFloat, {})
                                  : Tensor(DType::kFloat, {static_cast<int64_t>(f.scales.size())});
  for (size_t i = 0; i < f.scales.size(); ++i) s.mutable_data<float>()[i] = f.scales[i];
  s.set_name("s");
  m.graph.initializers.push_back(x);
  m.graph.initializers.push_back(s);
  std::vector<std::string> q_inputs = {"x", "s"}, dq_inputs = {"q", "s"};
  if (!f.zero_points.empty()) {
    Tensor z = f.scales.size() == 1 ? Tensor(f.q_type, {})
                                    : Tensor(f.q_type, {static_cast<int64_t>(f.zero_points.size())});
    for (size_t i = 0; i < f.zero_points.size(); ++i) {
      if (f.q_type == DType::kUInt8) {
        z.mutable_data<uint8_t>()[i] = static_cast<uint8_t>(f.zero_points[i]);
      } else {
        z.mutable_data<int8_t>()[i] = static_cast<int8_t>(f.zero_points[i]);
      }
    }
    z.set_name("z");
    m.graph.initializers.push_back(z);
    q_inputs.push_back("z");
    dq_inputs.push_back("z");
  }
  auto node = [&](const std::string& op, std::vector<std::string> in, const std::string& out) {
    Node n;
    n.name = out;
    n.op_type = op;
    n.inputs = std::move(in);
    n.outputs = {out};
    if (f.scales.size() > 1) n.attributes = {Attribute::Int("axis", f.axis)};
    m.graph.nodes.push_back(n);
  };
  node("QuantizeLinear", q_inputs, "q");
  node("DequantizeLinear", dq_inputs, "y");
  ValueInfo y;
  y.name = "y";
  m.graph.outputs.push_back(y);
  *x_out = x;
  *s_out = s;
  return m;
}

// Checks dL/dx and dL/ds of L = sum(y * R) against STE / LSQ; returns {inside, clamped} element counts.
std::pair<int, int> CheckFakeQuant(const FakeQuant& f) {
  Tensor x, s;
  const Model m = TwoNodeModel(f, &x, &s);
  BackpropOptions bo;
  bo.threads = 1;
  Backprop bp(m, {"x", "s"}, {"y"}, bo);
  EXPECT_EQ(bp.DifferentiatedNodes().size(), 2u);
  const ValueMap fwd = bp.Forward({}, {x, s});
  const Tensor r = RandomTensor(DType::kFloat, f.dims, 99);
  const std::vector<Tensor> g = bp.Backward(fwd, {r});
  EXPECT_EQ(g[0].dtype(), DType::kFloat);
  EXPECT_EQ(g[0].dims(), x.dims());
  EXPECT_EQ(g[1].dims(), s.dims());
  const double qmin = f.q_type == DType::kUInt8 ? 0 : -128, qmax = f.q_type == DType::kUInt8 ? 255 : 127;
  const size_t channels = f.scales.size();
  int64_t inner = 1;
  if (channels > 1) {
    const size_t axis =
        static_cast<size_t>(f.axis < 0 ? f.axis + static_cast<int64_t>(f.dims.size()) : f.axis);
    for (size_t d = axis + 1; d < f.dims.size(); ++d) inner *= f.dims[d];
  }
  std::vector<double> ds(channels, 0.0), magnitude(channels, 0.0);
  int inside = 0, clamped = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    const size_t c = channels == 1 ? 0 : static_cast<size_t>((i / inner) % static_cast<int64_t>(channels));
    const float sc = f.scales[c];
    const double z = f.zero_points.empty() ? 0.0 : f.zero_points[c];
    const float xv = x.data<float>()[i];
    const double rv = r.data<float>()[i];
    const double rounded = std::nearbyint(xv / sc);  // as the kernel: float32 division, ties to even
    const double v = rounded + z;
    const bool in_range = v >= qmin && v <= qmax;
    // STE: y = x inside the range (dy/dx = 1), constant outside.
    const double dx = in_range ? rv : 0.0;
    EXPECT_NEAR(g[0].data<float>()[i], dx, kFloat32Rounding * std::abs(rv)) << "dx[" << i << "]";
    // LSQ: dy/ds = round(x/s) - x/s inside, qmin - z or qmax - z outside.
    const double dyds = in_range ? rounded - static_cast<double>(xv) / sc : (v < qmin ? qmin : qmax) - z;
    ds[c] += rv * dyds;
    magnitude[c] +=
        std::abs(rv) * (std::abs(rounded) + std::abs(static_cast<double>(xv) / sc) + std::abs(qmax - qmin));
    (in_range ? inside : clamped) += 1;
  }
  for (size_t c = 0; c < channels; ++c) {
    EXPECT_NEAR(g[1].data<float>()[c], ds[c], kFloat32Rounding * magnitude[c]) << "ds[" << c << "]";
  }
  return {inside, clamped};
}

TEST(QuantGrad, PerTensorUint8SteAndLsqWithClampedElements) {
  FakeQuant f;
  f.q_type = DType::kUInt8;
  f.dims = {3, 7, 5};
  f.scales = {0.05f};
  f.zero_points = {100};
  f.x_range = 8.0;  // the range is [-5, 7.75]: both ends clamp
  const auto [inside, clamped] = CheckFakeQuant(f);
  EXPECT_GT(inside, 50);
  EXPECT_GE(clamped, 10);
}

TEST(QuantGrad, PerTensorInt8AndNoZeroPoint) {
  FakeQuant f;
  f.q_type = DType::kInt8;
  f.dims = {4, 9};
  f.scales = {0.02f};
  f.zero_points = {-3};
  f.x_range = 4.0;  // the range is [-2.5, 2.6]
  auto [inside, clamped] = CheckFakeQuant(f);
  EXPECT_GT(inside, 10);
  EXPECT_GE(clamped, 5);
  // No zero point: uint8 with z = 0, everything below 0 clamps.
  f.q_type = DType::kUInt8;
  f.zero_points.clear();
  f.scales = {0.01f};
  std::tie(inside, clamped) = CheckFakeQuant(f);
  EXPECT_GT(inside, 5);
  EXPECT_GT(clamped, 10);
}

TEST(QuantGrad, PerAxisInt8AndUint8NegativeAxis) {
  FakeQuant f;
  f.q_type = DType::kInt8;
  f.dims = {2, 3, 5};
  f.axis = 1;
  f.scales = {0.01f, 0.03f, 0.1f};
  f.zero_points = {0, 5, -7};
  f.x_range = 4.0;
  auto [inside, clamped] = CheckFakeQuant(f);
  EXPECT_GT(inside, 5);
  EXPECT_GT(clamped, 5);
  f.q_type = DType::kUInt8;
  f.dims = {3, 4, 5};
  f.axis = -1;
  f.scales = {0.02f, 0.05f, 0.01f, 0.03f, 0.2f};
  f.zero_points = {128, 10, 250, 0, 77};
  f.x_range = 5.0;
  std::tie(inside, clamped) = CheckFakeQuant(f);
  EXPECT_GT(inside, 5);
  EXPECT_GT(clamped, 5);
}

TEST(QuantGrad, DequantizeLinearScaleMatchesFiniteDifferences) {
  GradCase c;
  c.op = "DequantizeLinear";
  c.opset = 13;
  c.h = 1e-2;
  Tensor s(DType::kFloat, {});
  s.mutable_data<float>()[0] = 0.05f;
  Tensor z(DType::kUInt8, {});
  z.mutable_data<uint8_t>()[0] = 120;
  c.inputs = {RandomInts<uint8_t>(DType::kUInt8, {3, 5, 4}, 1), s, z};
  c.trainable = {false, true, false};
  ExpectGradientsMatch(c, kDequantF32);
  // Per axis, int8, negative axis.
  Tensor sa = RandomTensor(DType::kFloat, {5}, 2, 0.01, 0.2);
  Tensor za(DType::kInt8, {5});
  for (int i = 0; i < 5; ++i) za.mutable_data<int8_t>()[i] = static_cast<int8_t>(i * 7 - 10);
  c.inputs = {RandomInts<int8_t>(DType::kInt8, {3, 5, 4}, 3), sa, za};
  c.attributes = {Attribute::Int("axis", -2)};
  ExpectGradientsMatch(c, kDequantF32);
  // No zero point.
  c.inputs = {RandomInts<uint8_t>(DType::kUInt8, {2, 5}, 4), sa};
  c.attributes = {Attribute::Int("axis", 1)};
  c.trainable = {false, true};
  ExpectGradientsMatch(c, kDequantF32);
}

}  // namespace
}  // namespace compress::train
