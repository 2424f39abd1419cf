// Conv and ConvTranspose backward rules: every attribute against central finite differences in float64 (the
// registered fast form through Backprop, and the reference form called directly), the fast form against the
// reference form on random shapes, and the fast form bit-identical on one and two threads.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <random>

#include "compress/exec/thread_pool.h"
#include "train/grad_check.h"

namespace compress::train {
namespace conv_grad {
// Defined in src/train/grad_conv.cc (the registered rules use the fast form).
void ConvBackwardReference(GradContext& ctx);
void ConvBackwardFast(GradContext& ctx);
void ConvTransposeBackwardReference(GradContext& ctx);
void ConvTransposeBackwardFast(GradContext& ctx);
}  // namespace conv_grad

namespace {

using testing::ElementAsDouble;
using testing::ExpectGradientsMatch;
using testing::GradCase;
using testing::GradTolerance;
using testing::OneNodeModel;
using testing::RandomTensor;
using testing::SetElement;

// Float64 on the reference kernels: the loss is bilinear in X and W, so central differences with h = 1e-6
// carry only rounding error, about 1e-16 * |L| / h ~ 1e-9 for these sizes; 1e-7 absolute / 1e-6 relative
// leaves two orders of margin.
constexpr GradTolerance kConvF64{1e-7, 1e-6};
// Fast against reference form in float64: the same sums in a different order (GEMM blocking, per-chunk
// partials); each gradient element sums at most a few hundred products of magnitude <= 1, so the difference
// is a few hundred ulps of the sum at worst.
constexpr GradTolerance kFastVsReferenceF64{1e-12, 1e-11};
// The same in float32 (reference accumulates in float32 too, in loop order): float epsilon 1.2e-7 times a few
// hundred terms.
constexpr GradTolerance kFastVsReferenceF32{2e-5, 1e-4};

using BackwardFn = void (*)(GradContext&);

Tensor ForwardOutput(const GradCase& c) {
  ExecutorOptions eo;
  eo.threads = 1;
  eo.reference_kernels = true;
  Executor ex(OneNodeModel(c), eo);
  return ex.Run({})[0];
}

// Runs `fn` on the case's node with every float input wanted and dY = `dy`; returns the input gradients.
std::vector<Tensor> CallRule(BackwardFn fn, const GradCase& c, const Tensor& y, const Tensor& dy, ThreadPool* pool) {
  const Model model = OneNodeModel(c);
  const Node& node = model.graph.nodes[0];
  std::vector<const Tensor*> inputs;
  std::vector<bool> wanted;
  for (const Tensor& t : c.inputs) {
    const bool present = t.dtype() != DType::kUndefined;
    inputs.push_back(present ? &t : nullptr);
    wanted.push_back(present);
  }
  GradContext ctx(node, c.opset, inputs, {&y}, {&dy}, wanted, pool);
  fn(ctx);
  return ctx.input_grads();
}

// Central finite differences of L = sum(Y * R) (reference forward kernels) against `fn` called directly.
void ExpectFormMatchesFiniteDifferences(BackwardFn fn, const GradCase& c, const GradTolerance& tol) {
  const Tensor y = ForwardOutput(c);
  const Tensor r = RandomTensor(y.dtype(), y.dims(), 77);
  ThreadPool pool(1);
  const std::vector<Tensor> grads = CallRule(fn, c, y, r, &pool);
  auto loss = [&](const GradCase& v) {
    const Tensor out = ForwardOutput(v);
    double l = 0;
    for (int64_t e = 0; e < out.numel(); ++e) l += ElementAsDouble(out, e) * ElementAsDouble(r, e);
    return l;
  };
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    if (c.inputs[i].dtype() == DType::kUndefined) continue;
    ASSERT_EQ(grads[i].dims(), c.inputs[i].dims()) << c.op << " input " << i;
    for (int64_t e = 0; e < c.inputs[i].numel(); ++e) {
      GradCase plus = c, minus = c;
      const Tensor& t = c.inputs[i];
      plus.inputs[i] = Tensor::FromBytes(t.dtype(), t.dims(), t.raw(), t.nbytes());
      minus.inputs[i] = Tensor::FromBytes(t.dtype(), t.dims(), t.raw(), t.nbytes());
      const double x = ElementAsDouble(t, e);
      SetElement(plus.inputs[i], e, x + c.h);
      SetElement(minus.inputs[i], e, x - c.h);
      const double numeric = (loss(plus) - loss(minus)) / (2 * c.h);
      const double analytic = ElementAsDouble(grads[i], e);
      EXPECT_LE(std::abs(numeric - analytic), tol.abs + tol.rel * std::max(std::abs(numeric), std::abs(analytic)))
          << c.op << " reference form: d/dx" << i << "[" << e << "] numeric " << numeric << " analytic " << analytic;
    }
  }
}

void ExpectClose(const std::vector<Tensor>& a, const std::vector<Tensor>& b, const GradTolerance& tol,
                 const std::string& what) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].dims(), b[i].dims()) << what << " input " << i;
    ASSERT_EQ(a[i].dtype(), b[i].dtype()) << what << " input " << i;
    for (int64_t e = 0; e < a[i].numel(); ++e) {
      const double x = ElementAsDouble(a[i], e), y = ElementAsDouble(b[i], e);
      ASSERT_LE(std::abs(x - y), tol.abs + tol.rel * std::max(std::abs(x), std::abs(y)))
          << what << " input " << i << "[" << e << "] fast " << x << " reference " << y;
    }
  }
}

GradCase ConvCase(const std::string& op, std::vector<Attribute> attrs, std::vector<int64_t> x, std::vector<int64_t> w,
                  bool bias, uint32_t seed, DType dtype = DType::kDouble) {
  GradCase c;
  c.op = op;
  c.attributes = std::move(attrs);
  // Conv bias has W[0] channels; ConvTranspose bias W[1] * group.
  int64_t channels = w[0];
  if (op == "ConvTranspose") {
    int64_t group = 1;
    for (const Attribute& a : c.attributes) {
      if (a.name == "group") group = a.i;
    }
    channels = w[1] * group;
  }
  c.inputs = {RandomTensor(dtype, std::move(x), seed), RandomTensor(dtype, std::move(w), seed + 1)};
  if (bias) c.inputs.push_back(RandomTensor(dtype, {channels}, seed + 2));
  return c;
}

void CheckBothForms(const GradCase& c, BackwardFn reference) {
  ExpectGradientsMatch(c, kConvF64);  // the registered (fast) rule through Backprop
  ExpectFormMatchesFiniteDifferences(reference, c, kConvF64);
}

TEST(ConvGrad, Conv1DStridePadsDilationBias) {
  CheckBothForms(ConvCase("Conv",
                          {Attribute::Ints("strides", {2}), Attribute::Ints("pads", {1, 2}),
                           Attribute::Ints("dilations", {2})},
                          {2, 3, 9}, {4, 3, 3}, true, 1),
                 conv_grad::ConvBackwardReference);
}

TEST(ConvGrad, Conv2DGroupsStridesPadsDilationsKernelShape) {
  CheckBothForms(ConvCase("Conv",
                          {Attribute::Int("group", 2), Attribute::Ints("kernel_shape", {3, 2}),
                           Attribute::Ints("strides", {2, 1}), Attribute::Ints("pads", {1, 0, 2, 1}),
                           Attribute::Ints("dilations", {1, 2})},
                          {2, 4, 7, 6}, {6, 2, 3, 2}, true, 10),
                 conv_grad::ConvBackwardReference);
}

TEST(ConvGrad, Conv2DDepthwiseSameUpper) {
  // group = channels, two outputs per channel.
  CheckBothForms(ConvCase("Conv",
                          {Attribute::Int("group", 3), Attribute::String("auto_pad", "SAME_UPPER"),
                           Attribute::Ints("strides", {2, 2})},
                          {2, 3, 6, 5}, {6, 1, 3, 2}, true, 20),
                 conv_grad::ConvBackwardReference);
}

TEST(ConvGrad, Conv2DSameLowerNoBiasNoKernelShape) {
  CheckBothForms(ConvCase("Conv", {Attribute::String("auto_pad", "SAME_LOWER"), Attribute::Ints("strides", {2, 3})},
                          {1, 2, 7, 8}, {3, 2, 2, 4}, false, 30),
                 conv_grad::ConvBackwardReference);
}

TEST(ConvGrad, Conv2DValidAndNotSetDefaults) {
  CheckBothForms(ConvCase("Conv", {Attribute::String("auto_pad", "VALID"), Attribute::Ints("dilations", {2, 1})},
                          {2, 2, 7, 5}, {3, 2, 2, 3}, true, 40),
                 conv_grad::ConvBackwardReference);
  CheckBothForms(ConvCase("Conv", {Attribute::String("auto_pad", "NOTSET")}, {1, 3, 4, 5}, {2, 3, 3, 3}, true, 45),
                 conv_grad::ConvBackwardReference);
}

TEST(ConvGrad, Conv3DGroupStridesPads) {
  CheckBothForms(ConvCase("Conv",
                          {Attribute::Int("group", 2), Attribute::Ints("strides", {1, 2, 1}),
                           Attribute::Ints("pads", {1, 0, 1, 0, 1, 1})},
                          {1, 2, 3, 5, 4}, {2, 1, 2, 3, 2}, true, 50),
                 conv_grad::ConvBackwardReference);
}

TEST(ConvGrad, ConvTranspose1DStrideBias) {
  CheckBothForms(ConvCase("ConvTranspose", {Attribute::Ints("strides", {2})}, {2, 3, 5}, {3, 2, 3}, true, 60),
                 conv_grad::ConvTransposeBackwardReference);
}

TEST(ConvGrad, ConvTranspose2DGroupStridesPadsDilationsOutputPadding) {
  CheckBothForms(ConvCase("ConvTranspose",
                          {Attribute::Int("group", 2), Attribute::Ints("strides", {2, 3}),
                           Attribute::Ints("pads", {1, 0, 0, 1}), Attribute::Ints("dilations", {1, 2}),
                           Attribute::Ints("output_padding", {1, 2}), Attribute::Ints("kernel_shape", {3, 2})},
                          {2, 4, 3, 4}, {4, 3, 3, 2}, true, 70),
                 conv_grad::ConvTransposeBackwardReference);
}

TEST(ConvGrad, ConvTranspose2DOutputShape) {
  // Spatial output_shape (and the full [N, C, ...] form): pads split as the ONNX reference does.
  CheckBothForms(ConvCase("ConvTranspose", {Attribute::Ints("strides", {2, 2}), Attribute::Ints("output_shape", {8, 7})},
                          {1, 2, 4, 3}, {2, 3, 3, 3}, true, 80),
                 conv_grad::ConvTransposeBackwardReference);
  CheckBothForms(ConvCase("ConvTranspose",
                          {Attribute::Ints("strides", {2, 1}), Attribute::Ints("output_shape", {1, 3, 6, 5})},
                          {1, 2, 3, 4}, {2, 3, 2, 2}, false, 85),
                 conv_grad::ConvTransposeBackwardReference);
}

TEST(ConvGrad, ConvTranspose2DAutoPad) {
  for (const char* pad : {"SAME_UPPER", "SAME_LOWER", "VALID"}) {
    SCOPED_TRACE(pad);
    CheckBothForms(ConvCase("ConvTranspose", {Attribute::String("auto_pad", pad), Attribute::Ints("strides", {2, 2})},
                            {2, 2, 3, 3}, {2, 2, 2, 3}, true, 90),
                   conv_grad::ConvTransposeBackwardReference);
  }
}

TEST(ConvGrad, ConvTranspose3DDepthwise) {
  CheckBothForms(ConvCase("ConvTranspose",
                          {Attribute::Int("group", 2), Attribute::Ints("strides", {1, 2, 2}),
                           Attribute::Ints("pads", {0, 1, 0, 1, 0, 1})},
                          {1, 2, 2, 3, 3}, {2, 1, 2, 2, 3}, true, 100),
                 conv_grad::ConvTransposeBackwardReference);
}

// A random Conv / ConvTranspose shape: 1-3 spatial dims, odd and even sizes, groups (depthwise among them),
// strides, dilations, pads; sized so that the output is not empty.
GradCase RandomCase(const std::string& op, std::mt19937& rng, uint32_t seed, DType dtype) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  const int rank = pick(1, 3);
  const int group = pick(1, 3);
  const bool depthwise = pick(0, 2) == 0;
  const int64_t cin_g = depthwise ? 1 : pick(1, 3), cout_g = depthwise ? 1 : pick(1, 3);
  const int64_t batch = pick(1, 6);
  std::vector<int64_t> x{batch, (op == "Conv" ? cin_g : cout_g) * group};
  std::vector<int64_t> w = op == "Conv" ? std::vector<int64_t>{cout_g * group, cin_g}
                                        : std::vector<int64_t>{cout_g * group, cin_g};
  std::vector<int64_t> strides, dilations, pads_begin, pads_end;
  const int max_size = rank == 3 ? 5 : (rank == 2 ? 9 : 13);
  for (int d = 0; d < rank; ++d) {
    const int64_t k = pick(1, 3), dil = pick(1, 2), s = pick(1, 3);
    const int64_t k_eff = (k - 1) * dil + 1;
    const int64_t size = pick(static_cast<int>(k_eff), std::max(static_cast<int>(k_eff), max_size));
    x.push_back(op == "Conv" ? size : pick(1, 4));
    w.push_back(k);
    strides.push_back(s);
    dilations.push_back(dil);
    pads_begin.push_back(op == "Conv" ? pick(0, 2) : std::min<int64_t>(pick(0, 2), k_eff - 1));
    // ConvTranspose: begin + end pads below the window keep the output non-empty.
    pads_end.push_back(op == "Conv" ? pick(0, 2) : std::min<int64_t>(pick(0, 2), k_eff - 1 - pads_begin.back()));
  }
  std::vector<int64_t> pads = pads_begin;
  pads.insert(pads.end(), pads_end.begin(), pads_end.end());
  GradCase c = ConvCase(op,
                        {Attribute::Int("group", group), Attribute::Ints("strides", strides),
                         Attribute::Ints("dilations", dilations), Attribute::Ints("pads", pads)},
                        x, w, pick(0, 1) == 1, seed, dtype);
  return c;
}

void CompareFastWithReference(const std::string& op, DType dtype, const GradTolerance& tol, uint32_t seed0) {
  std::mt19937 rng(seed0);
  const BackwardFn fast = op == "Conv" ? conv_grad::ConvBackwardFast : conv_grad::ConvTransposeBackwardFast;
  const BackwardFn reference = op == "Conv" ? conv_grad::ConvBackwardReference : conv_grad::ConvTransposeBackwardReference;
  ThreadPool pool(2);
  for (uint32_t i = 0; i < 40; ++i) {
    const GradCase c = RandomCase(op, rng, seed0 + 10 * i, dtype);
    const Tensor y = ForwardOutput(c);
    const Tensor dy = RandomTensor(dtype, y.dims(), seed0 + 10 * i + 5);
    std::string what = op + " case " + std::to_string(i) + " x " + ShapeToString(c.inputs[0].dims()) + " w " +
                       ShapeToString(c.inputs[1].dims());
    for (const Attribute& a : c.attributes) what += " " + a.name + (a.ints.empty() ? "=" + std::to_string(a.i) : ShapeToString(a.ints));
    ExpectClose(CallRule(fast, c, y, dy, &pool), CallRule(reference, c, y, dy, nullptr), tol, what);
  }
}

TEST(ConvGrad, FastMatchesReferenceOnRandomShapesF64) {
  CompareFastWithReference("Conv", DType::kDouble, kFastVsReferenceF64, 1000);
  CompareFastWithReference("ConvTranspose", DType::kDouble, kFastVsReferenceF64, 2000);
}

TEST(ConvGrad, FastMatchesReferenceOnRandomShapesF32) {
  CompareFastWithReference("Conv", DType::kFloat, kFastVsReferenceF32, 3000);
  CompareFastWithReference("ConvTranspose", DType::kFloat, kFastVsReferenceF32, 4000);
}

TEST(ConvGrad, RandomShapesAgainstFiniteDifferences) {
  // A few random shapes through Backprop (fast form) and the reference form called directly.
  std::mt19937 rng(5000);
  for (uint32_t i = 0; i < 4; ++i) {
    const GradCase conv = RandomCase("Conv", rng, 5000 + 10 * i, DType::kDouble);
    CheckBothForms(conv, conv_grad::ConvBackwardReference);
    const GradCase convt = RandomCase("ConvTranspose", rng, 5500 + 10 * i, DType::kDouble);
    CheckBothForms(convt, conv_grad::ConvTransposeBackwardReference);
  }
}

bool BitIdentical(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].dims() != b[i].dims() || a[i].nbytes() != b[i].nbytes()) return false;
    if (a[i].nbytes() > 0 && std::memcmp(a[i].raw(), b[i].raw(), a[i].nbytes()) != 0) return false;
  }
  return true;
}

TEST(ConvGrad, FastFormIdenticalOnOneAndTwoThreads) {
  // Batch 13: chunks of 4 images leave a partial last chunk.
  ThreadPool one(1), two(2);
  const GradCase conv = ConvCase("Conv", {Attribute::Int("group", 2), Attribute::Ints("pads", {1, 1, 1, 1})},
                                 {13, 4, 11, 9}, {6, 2, 3, 3}, true, 6000, DType::kFloat);
  const GradCase convt = ConvCase("ConvTranspose", {Attribute::Ints("strides", {2, 2})}, {13, 4, 5, 6}, {4, 3, 3, 3},
                                  true, 6100, DType::kFloat);
  for (const auto& [c, fn] : {std::make_pair(conv, conv_grad::ConvBackwardFast),
                              std::make_pair(convt, conv_grad::ConvTransposeBackwardFast)}) {
    const Tensor y = ForwardOutput(c);
    const Tensor dy = RandomTensor(DType::kFloat, y.dims(), 6200);
    const std::vector<Tensor> g1 = CallRule(fn, c, y, dy, &one);
    const std::vector<Tensor> g2 = CallRule(fn, c, y, dy, &two);
    EXPECT_TRUE(BitIdentical(g1, g2)) << c.op;
    // And the gradients are not trivially zero.
    double norm = 0;
    for (const Tensor& g : g1) {
      for (int64_t e = 0; e < g.numel(); ++e) norm += std::abs(ElementAsDouble(g, e));
    }
    EXPECT_GT(norm, 1.0) << c.op;
  }
}

TEST(ConvGrad, OnlyWantedInputsGetGradients) {
  const GradCase c = ConvCase("Conv", {}, {2, 2, 5, 5}, {3, 2, 3, 3}, true, 7000);
  const Tensor y = ForwardOutput(c);
  const Tensor dy = RandomTensor(DType::kDouble, y.dims(), 7001);
  const Model model = OneNodeModel(c);
  ThreadPool pool(1);
  GradContext ctx(model.graph.nodes[0], 17, {&c.inputs[0], &c.inputs[1], &c.inputs[2]}, {&y}, {&dy},
                  {false, true, false}, &pool);
  conv_grad::ConvBackwardFast(ctx);
  EXPECT_EQ(ctx.input_grads()[0].dtype(), DType::kUndefined);
  EXPECT_EQ(ctx.input_grads()[1].dims(), (std::vector<int64_t>{3, 2, 3, 3}));
  EXPECT_EQ(ctx.input_grads()[2].dtype(), DType::kUndefined);
}

}  // namespace
}  // namespace compress::train

