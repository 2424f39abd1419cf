// Dynamic INT8 quantization on small hand-built graphs: the exact structure afterwards (operators, wiring,
// element types, scales), the nodes left in float and why, the opset upgrade, and outputs against the float
// model (within the error quantization can make, computed per output) through our executor and against
// ONNX Runtime.

#include "compress/passes/quantize_dynamic.h"

#include <gtest/gtest.h>
#include <onnx/defs/schema.h>
#include <onnx/onnx_pb.h>
#include <onnx/shape_inference/implementation.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <string>
#include <vector>

#include "cleanup_test_helpers.h"
#include "compress/io/npy.h"
#include "compress/passes/pass.h"

namespace compress {
namespace {

using namespace testing;
using nlohmann::json;

// What float32 arithmetic adds to the quantization error bound below: the outputs here are sums of at most
// 72 products of magnitude below 4, whose float32 rounding (in the float model, and in the rescale of the
// quantized one) stays below 1e-5.
constexpr double kFloatSlack = 1e-5;
// Our executor and ONNX Runtime compute the same integer products (uint8 x uint8 is exact in both) from
// the same DynamicQuantizeLinear, so they differ only by the float32 rounding of the rescale and bias:
// a few units in the last place of outputs below 100.
constexpr double kOrtTolerance = 1e-5;
// The weight zero point of the uint8 storage of int8 weights.
constexpr int kShift = 128;

PassContext Quantize(Model& m, const json& options = json::object()) {
  PassContext ctx;
  QuantizeDynamic(m, options, ctx);
  VerifyModel(m);
  return ctx;
}

const Node* FindNode(const Graph& g, const std::string& op, int nth = 0) {
  for (const auto& n : g.nodes) {
    if (n.op_type == op && nth-- == 0) return &n;
  }
  ADD_FAILURE() << "no " << op << " node";
  return nullptr;
}

const Tensor& Init(const Graph& g, const std::string& name) {
  const Tensor* t = g.FindInitializer(name);
  if (t == nullptr) {
    ADD_FAILURE() << "no initializer " << name;
    static const Tensor none;
    return none;
  }
  return *t;
}

// Uniform values in [lo, hi) from a fixed seed.
Tensor Uniform(std::vector<int64_t> dims, uint32_t seed, float lo, float hi, std::string name = {}) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  Tensor t(DType::kFloat, std::move(dims), std::move(name));
  for (int64_t i = 0; i < t.numel(); ++i) t.mutable_data<float>()[i] = dist(gen);
  return t;
}

// Multiplies slice c of `t` along `axis` by (c + 1), so that channels get different scales.
void SpreadChannels(Tensor& t, int64_t axis) {
  int64_t inner = 1;
  for (size_t d = static_cast<size_t>(axis) + 1; d < t.dims().size(); ++d) inner *= t.dims()[d];
  const int64_t channels = t.dims()[static_cast<size_t>(axis)];
  for (int64_t i = 0; i < t.numel(); ++i)
    t.mutable_data<float>()[i] *= static_cast<float>(i / inner % channels + 1);
}

// max|w| / 127 per slice along `axis`, or over everything for axis < 0.
std::vector<float> SymmetricScales(const Tensor& w, int64_t axis) {
  const int64_t channels = axis < 0 ? 1 : w.dims()[static_cast<size_t>(axis)];
  int64_t inner = 1;
  for (size_t d = static_cast<size_t>(axis) + 1; axis >= 0 && d < w.dims().size(); ++d) inner *= w.dims()[d];
  std::vector<double> m(static_cast<size_t>(channels), 0.0);
  for (int64_t i = 0; i < w.numel(); ++i) {
    const size_t c = axis < 0 ? 0 : static_cast<size_t>(i / inner % channels);
    m[c] = std::max(m[c], std::fabs(double{w.data<float>()[i]}));
  }
  std::vector<float> s;
  for (double v : m) s.push_back(static_cast<float>(v / 127.0));
  return s;
}

// The activation scale DynamicQuantizeLinear picks: the range of x widened to hold 0, over 255 steps.
float DynamicScale(const Tensor& x) {
  const float* p = x.data<float>();
  const float lo = std::min(0.0f, *std::min_element(p, p + x.numel()));
  const float hi = std::max(0.0f, *std::max_element(p, p + x.numel()));
  return (hi - lo) / 255.0f;
}

// The largest error dynamic quantization can make on each output of `node` (MatMul, Gemm or Conv, bias
// left out) for input x: rounding moves each activation by at most xs / 2 and each weight by at most its
// channel's ws / 2, so each product x w moves by at most |x| ws / 2 + |w| xs / 2 + xs ws / 4. Summed over
// the products of each output by running the node itself twice: on |x| with weights ws / 2, and on ones
// with weights |w| xs / 2 + xs ws / 4 (padding, exactly 0 in both forms, adds nothing).
Tensor ErrorBound(const Node& node, const Tensor& x, const Tensor& w, int64_t channel_axis,
                  const std::vector<float>& ws, float xs) {
  int64_t inner = 1;
  for (size_t d = static_cast<size_t>(channel_axis) + 1; d < w.dims().size(); ++d) inner *= w.dims()[d];
  const int64_t channels = w.dims()[static_cast<size_t>(channel_axis)];
  auto scale_of = [&](int64_t i) {
    return ws.size() == 1 ? ws[0] : ws[static_cast<size_t>(i / inner % channels)];
  };
  Tensor abs_x = x, ones = x, a = w, b = w;
  for (int64_t i = 0; i < x.numel(); ++i) {
    abs_x.mutable_data<float>()[i] = std::fabs(x.data<float>()[i]);
    ones.mutable_data<float>()[i] = 1.0f;
  }
  for (int64_t i = 0; i < w.numel(); ++i) {
    const float s = scale_of(i);
    a.mutable_data<float>()[i] = s / 2;
    b.mutable_data<float>()[i] = std::fabs(w.data<float>()[i]) * xs / 2 + xs * s / 4;
  }
  Node n = node;
  n.inputs.resize(2);
  const auto first = RunNode(n, {abs_x, a}, 17, /*reference=*/true, 1, {false, true});
  const auto second = RunNode(n, {ones, b}, 17, /*reference=*/true, 1, {false, true});
  Tensor bound = first[0];
  for (int64_t i = 0; i < bound.numel(); ++i) bound.mutable_data<float>()[i] += second[0].data<float>()[i];
  return bound;
}

// Every output of `got` within the bound (plus float slack) of `want`; returns the largest error relative
// to its bound.
double ExpectWithinBound(const Tensor& want, const Tensor& got, const Tensor& bound) {
  EXPECT_EQ(want.dims(), got.dims());
  double worst = 0;
  int failures = 0;
  for (int64_t i = 0; i < want.numel() && want.dims() == got.dims(); ++i) {
    const double err = std::fabs(double{want.data<float>()[i]} - got.data<float>()[i]);
    const double allowed = bound.data<float>()[i] + kFloatSlack;
    worst = std::max(worst, err / allowed);
    if (err > allowed && failures++ < 5)
      ADD_FAILURE() << "output " << i << ": error " << err << " > " << allowed;
  }
  return worst;
}

void ExpectOrtMatches(const Model& m, const std::vector<Tensor>& inputs) {
  const std::vector<Tensor> ours = RunModel(m, inputs);
  const std::vector<Tensor> ort = testing::RunModelInOrt(m, inputs);
  ASSERT_EQ(ort.size(), ours.size());
  EXPECT_LE(MaxAbsDiff(ours, ort), kOrtTolerance);
}

// x [2,3,16] -> MatMul(W [16,5]) -> y, W's columns scaled 1..5 so per-column scales differ.
Model MatMulModel(Tensor* w_out) {
  Model m = EmptyModel(13);
  m.graph.inputs.push_back(FloatValue("x", Fixed({2, 3, 16})));
  m.graph.outputs.push_back(FloatValue("y", Fixed({2, 3, 5})));
  Tensor w = Uniform({16, 5}, 7, -1.0f, 1.0f, "W");
  SpreadChannels(w, 1);
  m.graph.initializers.push_back(w);
  m.graph.nodes.push_back(MakeNode("MatMul", {"x", "W"}, {"y"}, {}, "fc"));
  *w_out = w;
  return m;
}

TEST(QuantizeDynamic, MatMulPerColumnStructureAndError) {
  Tensor w;
  Model m = MatMulModel(&w);
  const Model before = m;
  const PassContext ctx = Quantize(m);
  EXPECT_EQ(Counter(ctx, "matmul_integer"), 1);
  EXPECT_EQ(Counter(ctx, "dynamic_quantize_linear"), 1);
  EXPECT_EQ(Counter(ctx, "float_nodes"), 0);
  EXPECT_EQ(ctx.details()["float_nodes"], json::array());

  const Graph& g = m.graph;
  ASSERT_EQ(OpTypes(g),
            (std::vector<std::string>{"DynamicQuantizeLinear", "Mul", "MatMulInteger", "Cast", "Mul"}));
  const Node& dql = g.nodes[0];
  const Node& scale = g.nodes[1];
  const Node& mmi = g.nodes[2];
  const Node& cast = g.nodes[3];
  const Node& rescale = g.nodes[4];
  EXPECT_EQ(dql.inputs, (std::vector<std::string>{"x"}));
  ASSERT_EQ(dql.outputs.size(), 3u);
  EXPECT_EQ(mmi.name, "fc");
  ASSERT_EQ(mmi.inputs.size(), 4u);
  EXPECT_EQ(mmi.inputs[0], dql.outputs[0]);
  EXPECT_EQ(mmi.inputs[2], dql.outputs[2]);
  EXPECT_EQ(scale.inputs.at(0), dql.outputs[1]);
  EXPECT_EQ(cast.inputs, mmi.outputs);
  EXPECT_EQ(cast.AttrInt("to", 0), static_cast<int64_t>(DType::kFloat));
  EXPECT_EQ(rescale.inputs, (std::vector<std::string>{cast.outputs[0], scale.outputs[0]}));
  EXPECT_EQ(rescale.outputs, (std::vector<std::string>{"y"}));

  // Weights: int8 symmetric per column, stored as q + 128 in uint8 with one zero point of 128.
  const std::vector<float> ws = SymmetricScales(w, 1);
  const Tensor& wq = Init(g, mmi.inputs[1]);
  const Tensor& wzp = Init(g, mmi.inputs[3]);
  const Tensor& wscale = Init(g, scale.inputs.at(1));
  ASSERT_EQ(wq.dtype(), DType::kUInt8);
  EXPECT_EQ(wq.dims(), (std::vector<int64_t>{16, 5}));
  ASSERT_EQ(wzp.dtype(), DType::kUInt8);
  EXPECT_EQ(wzp.rank(), 0);
  EXPECT_EQ(wzp.data<uint8_t>()[0], kShift);
  EXPECT_EQ(wscale.dims(), (std::vector<int64_t>{5}));
  EXPECT_EQ(Values(wscale), ws);
  for (int64_t i = 0; i < w.numel(); ++i) {
    const float q = std::round(w.data<float>()[i] / ws[static_cast<size_t>(i % 5)]);
    EXPECT_EQ(wq.data<uint8_t>()[i], static_cast<int>(q) + kShift) << i;
  }
  // Column j's largest weight takes the full range.
  for (int64_t j = 0; j < 5; ++j) {
    int largest = 0;
    for (int64_t k = 0; k < 16; ++k)
      largest = std::max(largest, std::abs(wq.data<uint8_t>()[k * 5 + j] - kShift));
    EXPECT_EQ(largest, 127);
  }
  EXPECT_EQ(g.FindInitializer("W"), nullptr) << "the float weight is no longer read";
  EXPECT_EQ(testing::CheckerAndTypeErrors(m), "");

  const Tensor x = Uniform({2, 3, 16}, 8, -1.0f, 1.5f);
  const Tensor bound = ErrorBound(before.graph.nodes[0], x, w, 1, ws, DynamicScale(x));
  const double used = ExpectWithinBound(RunModel(before, {x})[0], RunModel(m, {x})[0], bound);
  std::cout << "[dynamic] MatMul: largest error " << used << " of its bound\n";
  EXPECT_GT(used, 0.0);
  ExpectOrtMatches(m, {x});
}

TEST(QuantizeDynamic, PerTensorWeightsHaveOneScale) {
  Tensor w;
  Model m = MatMulModel(&w);
  const Model before = m;
  Quantize(m, {{"per_channel", false}});
  const Node* scale = FindNode(m.graph, "Mul");
  ASSERT_NE(scale, nullptr);
  const Tensor& wscale = Init(m.graph, scale->inputs[1]);
  EXPECT_EQ(wscale.rank(), 0);
  EXPECT_EQ(Values(wscale), SymmetricScales(w, -1));
  const Tensor x = Uniform({2, 3, 16}, 9, -1.0f, 1.5f);
  ExpectWithinBound(RunModel(before, {x})[0], RunModel(m, {x})[0],
                    ErrorBound(before.graph.nodes[0], x, w, 1, SymmetricScales(w, -1), DynamicScale(x)));
  ExpectOrtMatches(m, {x});
}

// Gemm with transB, alpha and beta: the weight is transposed to [K,N], alpha goes into the weight scales
// and beta into the bias.
TEST(QuantizeDynamic, GemmTransBAlphaBeta) {
  Model m = EmptyModel(13);
  m.graph.inputs.push_back(FloatValue("x", Fixed({4, 12})));
  m.graph.outputs.push_back(FloatValue("y", Fixed({4, 6})));
  Tensor w = Uniform({6, 12}, 11, -1.0f, 1.0f, "B");
  SpreadChannels(w, 0);
  m.graph.initializers.push_back(w);
  m.graph.initializers.push_back(Uniform({6}, 12, -1.0f, 1.0f, "C"));
  m.graph.nodes.push_back(
      MakeNode("Gemm", {"x", "B", "C"}, {"y"},
               {Attribute::Int("transB", 1), Attribute::Float("alpha", 0.5f), Attribute::Float("beta", 2.0f)},
               "gemm"));
  const Model before = m;
  const PassContext ctx = Quantize(m);
  EXPECT_EQ(Counter(ctx, "matmul_integer"), 1);
  const Graph& g = m.graph;
  ASSERT_EQ(OpTypes(g), (std::vector<std::string>{"DynamicQuantizeLinear", "Mul", "MatMulInteger", "Cast",
                                                  "Mul", "Add"}));
  const Node& mmi = g.nodes[2];
  const Tensor& wq = Init(g, mmi.inputs[1]);
  EXPECT_EQ(wq.dims(), (std::vector<int64_t>{12, 6}));
  const std::vector<float> ws = SymmetricScales(w, 0);
  for (int64_t n = 0; n < 6; ++n) {
    for (int64_t k = 0; k < 12; ++k) {
      const float q = std::round(w.data<float>()[n * 12 + k] / ws[static_cast<size_t>(n)]);
      EXPECT_EQ(wq.data<uint8_t>()[k * 6 + n], static_cast<int>(q) + kShift);
    }
  }
  std::vector<float> alpha_ws;
  for (float s : ws) alpha_ws.push_back(s * 0.5f);
  EXPECT_EQ(Values(Init(g, g.nodes[1].inputs[1])), alpha_ws);
  const Node& add = g.nodes[5];
  EXPECT_EQ(add.inputs[0], g.nodes[4].outputs[0]);
  EXPECT_EQ(add.outputs, (std::vector<std::string>{"y"}));
  const Tensor& c = Init(g, add.inputs[1]);
  const Tensor& c0 = Init(before.graph, "C");
  for (int64_t i = 0; i < 6; ++i) EXPECT_EQ(c.data<float>()[i], 2.0f * c0.data<float>()[i]);
  EXPECT_EQ(g.FindInitializer("B"), nullptr);
  EXPECT_EQ(g.FindInitializer("C"), nullptr);
  EXPECT_EQ(testing::CheckerAndTypeErrors(m), "");

  const Tensor x = Uniform({4, 12}, 13, -2.0f, 1.0f);
  ExpectWithinBound(RunModel(before, {x})[0], RunModel(m, {x})[0],
                    ErrorBound(before.graph.nodes[0], x, w, 0, ws, DynamicScale(x)));
  ExpectOrtMatches(m, {x});
}

// Grouped, padded, strided Conv with bias: ConvInteger keeps the attributes, scales and bias broadcast as
// [M,1,1].
TEST(QuantizeDynamic, ConvPerChannel) {
  Model m = EmptyModel(13);
  m.graph.inputs.push_back(FloatValue("x", Fixed({2, 4, 7, 7})));
  m.graph.outputs.push_back(FloatValue("y", Fixed({2, 6, 4, 4})));
  Tensor w = Uniform({6, 2, 3, 3}, 21, -1.0f, 1.0f, "W");
  SpreadChannels(w, 0);
  m.graph.initializers.push_back(w);
  m.graph.initializers.push_back(Uniform({6}, 22, -1.0f, 1.0f, "b"));
  const std::vector<Attribute> attrs{Attribute::Int("group", 2), Attribute::Ints("pads", {1, 1, 1, 1}),
                                     Attribute::Ints("strides", {2, 2}),
                                     Attribute::Ints("kernel_shape", {3, 3})};
  m.graph.nodes.push_back(MakeNode("Conv", {"x", "W", "b"}, {"y"}, attrs, "conv"));
  const Model before = m;
  const PassContext ctx = Quantize(m);
  EXPECT_EQ(Counter(ctx, "conv_integer"), 1);
  const Graph& g = m.graph;
  ASSERT_EQ(OpTypes(g),
            (std::vector<std::string>{"DynamicQuantizeLinear", "Mul", "ConvInteger", "Cast", "Mul", "Add"}));
  const Node& ci = g.nodes[2];
  EXPECT_EQ(ci.name, "conv");
  EXPECT_EQ(ci.AttrInt("group", 0), 2);
  EXPECT_EQ(ci.AttrInts("pads", {}), (std::vector<int64_t>{1, 1, 1, 1}));
  EXPECT_EQ(ci.AttrInts("strides", {}), (std::vector<int64_t>{2, 2}));
  const Tensor& wq = Init(g, ci.inputs[1]);
  EXPECT_EQ(wq.dtype(), DType::kUInt8);
  EXPECT_EQ(wq.dims(), w.dims());
  EXPECT_EQ(Init(g, ci.inputs[3]).data<uint8_t>()[0], kShift);
  const std::vector<float> ws = SymmetricScales(w, 0);
  const Tensor& wscale = Init(g, g.nodes[1].inputs[1]);
  EXPECT_EQ(wscale.dims(), (std::vector<int64_t>{6, 1, 1}));
  EXPECT_EQ(Values(wscale), ws);
  const Tensor& bias = Init(g, g.nodes[5].inputs[1]);
  EXPECT_EQ(bias.dims(), (std::vector<int64_t>{6, 1, 1}));
  EXPECT_EQ(Values(bias), Values(Init(before.graph, "b")));
  EXPECT_EQ(testing::CheckerAndTypeErrors(m), "");

  const Tensor x = Uniform({2, 4, 7, 7}, 23, -0.5f, 2.0f);
  const double used = ExpectWithinBound(RunModel(before, {x})[0], RunModel(m, {x})[0],
                                        ErrorBound(before.graph.nodes[0], x, w, 0, ws, DynamicScale(x)));
  std::cout << "[dynamic] Conv: largest error " << used << " of its bound\n";
  ExpectOrtMatches(m, {x});
}

// Nodes reading the same activation share one DynamicQuantizeLinear; a weight read twice is quantized once.
TEST(QuantizeDynamic, SharesActivationAndWeightQuantization) {
  Model m = EmptyModel(13);
  m.graph.inputs.push_back(FloatValue("x", Fixed({3, 8})));
  for (const char* y : {"y1", "y2", "y3"}) m.graph.outputs.push_back(FloatValue(y, Fixed({3, 4})));
  m.graph.initializers.push_back(Uniform({8, 4}, 31, -1.0f, 1.0f, "W"));
  m.graph.initializers.push_back(Uniform({8, 4}, 32, -1.0f, 1.0f, "W2"));
  m.graph.nodes.push_back(MakeNode("MatMul", {"x", "W"}, {"y1"}, {}, "a"));
  m.graph.nodes.push_back(MakeNode("MatMul", {"x", "W"}, {"y2"}, {}, "b"));
  m.graph.nodes.push_back(MakeNode("MatMul", {"x", "W2"}, {"y3"}, {}, "c"));
  const PassContext ctx = Quantize(m);
  EXPECT_EQ(Counter(ctx, "matmul_integer"), 3);
  EXPECT_EQ(Counter(ctx, "dynamic_quantize_linear"), 1);
  EXPECT_EQ(CountOps(m.graph, "DynamicQuantizeLinear"), 1);
  const Node* a = FindNode(m.graph, "MatMulInteger", 0);
  const Node* b = FindNode(m.graph, "MatMulInteger", 1);
  const Node* c = FindNode(m.graph, "MatMulInteger", 2);
  ASSERT_TRUE(a && b && c);
  EXPECT_EQ(a->inputs[0], b->inputs[0]);
  EXPECT_EQ(a->inputs[1], b->inputs[1]);
  EXPECT_NE(a->inputs[1], c->inputs[1]);
  EXPECT_EQ(a->inputs[3], c->inputs[3]) << "one zero point initializer for every weight";
  // W and W2 quantized, plus the zero point and three scale initializers.
  EXPECT_EQ(m.graph.initializers.size(), 6u);
  EXPECT_EQ(testing::CheckerAndTypeErrors(m), "");
}

TEST(QuantizeDynamic, ListsNodesLeftInFloatWithReasons) {
  Model m = EmptyModel(13);
  m.graph.inputs.push_back(FloatValue("x", Fixed({1, 2, 5, 5})));
  m.graph.inputs.push_back(FloatValue("v", Fixed({3, 4})));
  m.graph.outputs.push_back(FloatValue("c", Fixed({1, 2, 5, 5})));
  m.graph.outputs.push_back(FloatValue("s", Fixed({3, 3})));
  m.graph.outputs.push_back(FloatValue("e", Fixed({3, 2})));
  m.graph.outputs.push_back(FloatValue("k", Fixed({3, 2})));
  m.graph.initializers.push_back(Uniform({2, 2, 1, 1}, 41, -1.0f, 1.0f, "Wc"));
  m.graph.initializers.push_back(Uniform({4, 2}, 42, -1.0f, 1.0f, "We"));
  m.graph.initializers.push_back(Uniform({4, 2}, 43, -1.0f, 1.0f, "Wk"));
  m.graph.nodes.push_back(MakeNode("Conv", {"x", "Wc"}, {"c"}, {}, "conv"));
  m.graph.nodes.push_back(MakeNode("Transpose", {"v"}, {"vt"}, {Attribute::Ints("perm", {1, 0})}, "t"));
  m.graph.nodes.push_back(MakeNode("MatMul", {"v", "vt"}, {"s"}, {}, "scores"));
  m.graph.nodes.push_back(MakeNode("MatMul", {"v", "We"}, {"e"}, {}, "excluded"));
  m.graph.nodes.push_back(MakeNode("MatMul", {"v", "Wk"}, {"k"}, {}, "kept"));
  const Model before = m;
  const PassContext ctx = Quantize(m, {{"exclude_nodes", {"excluded"}}, {"exclude_ops", {"Conv"}}});
  EXPECT_EQ(Counter(ctx, "matmul_integer"), 1);
  EXPECT_EQ(Counter(ctx, "conv_integer"), 0);
  EXPECT_EQ(Counter(ctx, "float_nodes"), 3);
  const json want =
      json::array({{{"node", "conv"}, {"op", "Conv"}, {"why", "excluded by exclude_ops"}},
                   {{"node", "scores"},
                    {"op", "MatMul"},
                    {"why", "the second operand is computed at run time (no constant weight)"}},
                   {{"node", "excluded"}, {"op", "MatMul"}, {"why", "excluded by exclude_nodes"}}});
  EXPECT_EQ(ctx.details()["float_nodes"], want);
  ASSERT_EQ(ctx.notes().size(), 3u);
  EXPECT_EQ(ctx.notes()[0], "kept 'conv' (Conv) in float: excluded by exclude_ops");
  EXPECT_EQ(OpTypes(m.graph),
            (std::vector<std::string>{"Conv", "Transpose", "MatMul", "MatMul", "DynamicQuantizeLinear", "Mul",
                                      "MatMulInteger", "Cast", "Mul"}));
  EXPECT_EQ(CountOps(m.graph, "MatMul"), 2);
  const Tensor x = Uniform({1, 2, 5, 5}, 44, -1.0f, 1.0f), v = Uniform({3, 4}, 45, -1.0f, 1.0f);
  const auto want_out = RunModel(before, {x, v}), got = RunModel(m, {x, v});
  for (size_t k = 0; k < 3; ++k)
    EXPECT_TRUE(want_out[k].SameContent(got[k])) << "float node " << k << " changed";
}

// A model at opset 9 is converted to opset 11 (DynamicQuantizeLinear) first.
TEST(QuantizeDynamic, UpgradesOpsetBelowEleven) {
  Model m = EmptyModel(9, 4);
  m.graph.inputs.push_back(FloatValue("x", Fixed({2, 6})));
  m.graph.outputs.push_back(FloatValue("y", Fixed({2, 3})));
  Tensor w = Uniform({6, 3}, 51, -1.0f, 1.0f, "W");
  m.graph.initializers.push_back(w);
  m.graph.initializers.push_back(Uniform({3}, 52, -1.0f, 1.0f, "b"));
  m.graph.nodes.push_back(MakeNode("Gemm", {"x", "W", "b"}, {"y"}, {}, "fc"));
  const Model before = m;
  const PassContext ctx = Quantize(m);
  EXPECT_EQ(m.OpsetVersion(""), 11);
  EXPECT_EQ(Counter(ctx, "matmul_integer"), 1);
  EXPECT_EQ(ctx.details()["opset"], json({{"from", 9}, {"to", 11}}));
  ASSERT_EQ(ctx.notes().size(), 1u);
  EXPECT_EQ(ctx.notes()[0], "converted the model from opset 9 to 11 for DynamicQuantizeLinear");
  EXPECT_EQ(OpTypes(m.graph), (std::vector<std::string>{"DynamicQuantizeLinear", "Mul", "MatMulInteger",
                                                        "Cast", "Mul", "Add"}));
  EXPECT_EQ(testing::CheckerAndTypeErrors(m), "");
  const Tensor x = Uniform({2, 6}, 53, -1.0f, 1.0f);
  ExpectWithinBound(RunModel(before, {x})[0], RunModel(m, {x})[0],
                    ErrorBound(before.graph.nodes[0], x, w, 1, SymmetricScales(w, 1), DynamicScale(x)));
  ExpectOrtMatches(m, {x});
}

// ONNX 1.12's opset converter cannot take Pad without its optional 'value' attribute from opset 9 to 11:
// the model then stays as it was, every candidate in float with the reason.
TEST(QuantizeDynamic, FailedOpsetConversionKeepsFloat) {
  Model m = EmptyModel(9, 4);
  m.graph.inputs.push_back(FloatValue("x", Fixed({2, 6})));
  m.graph.outputs.push_back(FloatValue("y", Fixed({2, 5})));
  m.graph.initializers.push_back(Uniform({6, 3}, 54, -1.0f, 1.0f, "W"));
  m.graph.nodes.push_back(MakeNode("Gemm", {"x", "W"}, {"h"}, {}, "fc"));
  m.graph.nodes.push_back(MakeNode("Pad", {"h"}, {"y"}, {Attribute::Ints("pads", {0, 1, 0, 1})}, "pad"));
  const Model before = m;
  const PassContext ctx = Quantize(m);
  EXPECT_EQ(m.OpsetVersion(""), 9);
  EXPECT_EQ(OpTypes(m.graph), (std::vector<std::string>{"Gemm", "Pad"}));
  EXPECT_EQ(m.graph.initializers.size(), 1u);
  EXPECT_EQ(Counter(ctx, "float_nodes"), 1);
  const json& f = ctx.details()["float_nodes"];
  ASSERT_EQ(f.size(), 1u);
  EXPECT_EQ(f[0]["node"], "fc");
  EXPECT_EQ(f[0]["why"].get<std::string>().rfind(
                "opset 9 has no DynamicQuantizeLinear (opset 11) and converting the model failed: ", 0),
            0u)
      << f[0]["why"];
  const Tensor x = Uniform({2, 6}, 55, -1.0f, 1.0f);
  EXPECT_TRUE(RunModel(before, {x})[0].SameContent(RunModel(m, {x})[0]));
}

// Before IR version 4 every initializer is also a graph input: the float weight leaves both lists, the
// new initializers join both.
TEST(QuantizeDynamic, IrVersion3ListsInitializersAsInputs) {
  Model m = EmptyModel(11, 3);
  m.graph.inputs.push_back(FloatValue("x", Fixed({2, 6})));
  m.graph.inputs.push_back(FloatValue("W", Fixed({6, 3})));
  m.graph.outputs.push_back(FloatValue("y", Fixed({2, 3})));
  m.graph.initializers.push_back(Uniform({6, 3}, 56, -1.0f, 1.0f, "W"));
  m.graph.nodes.push_back(MakeNode("MatMul", {"x", "W"}, {"y"}, {}, "fc"));
  const Model before = m;
  Quantize(m);
  EXPECT_EQ(OpTypes(m.graph),
            (std::vector<std::string>{"DynamicQuantizeLinear", "Mul", "MatMulInteger", "Cast", "Mul"}));
  std::vector<std::string> inputs;
  for (const auto& v : m.graph.inputs) inputs.push_back(v.name);
  std::vector<std::string> expected{"x"};
  for (const auto& t : m.graph.initializers) expected.push_back(t.name());
  EXPECT_EQ(inputs, expected);
  EXPECT_EQ(m.graph.initializers.size(), 3u);
  EXPECT_EQ(testing::CheckerAndTypeErrors(m), "");
  const Tensor x = Uniform({2, 6}, 57, -1.0f, 1.0f);
  const Tensor w = Init(before.graph, "W");
  ExpectWithinBound(RunModel(before, {x})[0], RunModel(m, {x})[0],
                    ErrorBound(before.graph.nodes[0], x, w, 1, SymmetricScales(w, 1), DynamicScale(x)));
  ExpectOrtMatches(m, {x});
}

// Nothing to quantize: the opset stays as it is.
TEST(QuantizeDynamic, NothingToQuantizeLeavesTheModelAlone) {
  Model m = EmptyModel(9, 4);
  m.graph.inputs.push_back(FloatValue("x", Fixed({2, 6})));
  m.graph.outputs.push_back(FloatValue("y", Fixed({2, 6})));
  m.graph.nodes.push_back(MakeNode("Relu", {"x"}, {"y"}));
  const PassContext ctx = Quantize(m);
  EXPECT_EQ(m.OpsetVersion(""), 9);
  EXPECT_EQ(OpTypes(m.graph), (std::vector<std::string>{"Relu"}));
  EXPECT_TRUE(ctx.counters().empty());
  EXPECT_TRUE(ctx.notes().empty());
}

// Large activations against large weights: int8 weights would make ONNX Runtime's uint8 x int8 kernels
// (x86 without VNNI) saturate their int16 pair sums. The uint8 storage keeps ORT equal to the exact
// integer result our executor computes.
TEST(QuantizeDynamic, OnnxRuntimeExactWhereInt8PairSumsWouldSaturate) {
  Model m = EmptyModel(13);
  m.graph.inputs.push_back(FloatValue("x", Fixed({4, 64})));
  m.graph.outputs.push_back(FloatValue("y", Fixed({4, 3})));
  m.graph.initializers.push_back(Uniform({64, 3}, 61, 0.8f, 1.0f, "W"));
  m.graph.nodes.push_back(MakeNode("MatMul", {"x", "W"}, {"y"}, {}, "fc"));
  Quantize(m);
  const Tensor x = Uniform({4, 64}, 62, 0.8f, 1.0f);
  ExpectOrtMatches(m, {x});

  // The same model with int8 weights, for the record: ONNX Runtime's result against the exact one.
  Model s8 = m;
  Node* mmi = nullptr;
  for (auto& n : s8.graph.nodes) {
    if (n.op_type == "MatMulInteger") mmi = &n;
  }
  ASSERT_NE(mmi, nullptr);
  const Tensor& wq = Init(s8.graph, mmi->inputs[1]);
  Tensor w8(DType::kInt8, wq.dims(), "w_int8");
  for (int64_t i = 0; i < wq.numel(); ++i)
    w8.mutable_data<int8_t>()[i] = static_cast<int8_t>(wq.data<uint8_t>()[i] - kShift);
  s8.graph.initializers.push_back(w8);
  mmi->inputs[1] = "w_int8";
  mmi->inputs.resize(3);
  const std::vector<Tensor> exact = RunModel(s8, {x});
  const std::vector<Tensor> ort = testing::RunModelInOrt(s8, {x});
  ASSERT_EQ(ort.size(), 1u);
  std::cout << "[dynamic] uint8 x int8 MatMulInteger in ONNX Runtime: max |ORT - exact| = "
            << MaxAbsDiff(exact, ort) << "\n";
}

// x float32[1,4,16] in [-1, 1], deterministic, for the If/Conv/LSTM model.
Tensor IfModelInput() {
  std::vector<float> v(64);
  for (size_t i = 0; i < v.size(); ++i) v[i] = std::sin(0.61f * static_cast<float>(i));
  return Tensor::FromVector<float>({1, 4, 16}, v);
}

// Dynamic activations (255 steps over each input's range) and int8 weights in the Conv and MatMul, int8
// LSTM weights (a step of max|w| / 127, at most 4e-3 here); outputs below 0.5. Measured in ONNX Runtime
// 1.30: 1.8e-3 (then) and 2.9e-4 (else) largest absolute difference; the bound leaves almost 3x.
constexpr double kDynamicIfTolerance = 5e-3;

TEST(QuantizeDynamic, IfBodiesGetIntegerConvAndMatMulAndLstmGetsInt8Weights) {
  const Model original = testing::IfConvLstmModel();
  Model m = original;
  const PassInfo* info = FindPass("quantize");
  ASSERT_NE(info, nullptr);
  PassContext ctx;
  info->create(ValidatePassOptions(*info, {{"mode", "dynamic"}}, "test"))->Run(m, ctx);
  VerifyModel(m);

  // The outer Conv weight and bias are read through copies in the body now, and leave the main graph.
  EXPECT_EQ(m.graph.FindInitializer("Wc"), nullptr);
  EXPECT_EQ(m.graph.FindInitializer("bc"), nullptr);
  ASSERT_EQ(m.graph.nodes.size(), 1u);
  const Node& iff = m.graph.nodes[0];
  const Graph& then_g = iff.FindAttr("then_branch")->graphs.at(0);
  const Graph& else_g = iff.FindAttr("else_branch")->graphs.at(0);

  std::vector<std::string> then_ops;
  for (const auto& n : then_g.nodes) then_ops.push_back(n.op_type);
  EXPECT_EQ(then_ops, (std::vector<std::string>{"DynamicQuantizeLinear", "Mul", "ConvInteger", "Cast", "Mul", "Add",
                                                "Transpose", "DequantizeLinear", "DequantizeLinear", "LSTM"}));
  const Node* ci = FindNode(then_g, "ConvInteger");
  ASSERT_NE(ci, nullptr);
  EXPECT_EQ(ci->name, "conv");
  EXPECT_EQ(ci->inputs[0], "x_quantized");
  const Tensor& wq = Init(then_g, ci->inputs[1]);
  EXPECT_EQ(wq.dtype(), DType::kUInt8);
  EXPECT_EQ(wq.dims(), (std::vector<int64_t>{8, 4, 3}));
  EXPECT_EQ(Init(then_g, ci->inputs[3]).data<uint8_t>()[0], kShift);

  const Node* lstm = FindNode(then_g, "LSTM");
  ASSERT_NE(lstm, nullptr);
  EXPECT_EQ(lstm->inputs, (std::vector<std::string>{"seq", "W_lstm_dq", "R_lstm_dq", "B_lstm"}));
  for (int k = 0; k < 2; ++k) {
    const Node* dq = FindNode(then_g, "DequantizeLinear", k);
    ASSERT_NE(dq, nullptr);
    EXPECT_EQ(dq->AttrInt("axis", -1), 1);
    EXPECT_EQ(Init(then_g, dq->inputs[0]).dtype(), DType::kInt8);
    EXPECT_EQ(Init(then_g, dq->inputs[1]).dims(), (std::vector<int64_t>{24}));
  }
  EXPECT_EQ(then_g.FindInitializer("W_lstm"), nullptr);
  EXPECT_EQ(then_g.FindInitializer("R_lstm"), nullptr);

  const Node* mmi = FindNode(else_g, "MatMulInteger");
  ASSERT_NE(mmi, nullptr);
  EXPECT_EQ(mmi->name, "matmul");
  EXPECT_EQ(else_g.FindInitializer("Wm"), nullptr);

  EXPECT_EQ(ctx.counters().at("conv_integer"), 1);
  EXPECT_EQ(ctx.counters().at("matmul_integer"), 1);
  EXPECT_EQ(ctx.counters().at("quantized_recurrent_nodes"), 1);
  EXPECT_TRUE(std::any_of(ctx.notes().begin(), ctx.notes().end(), [](const std::string& n) {
    return n.find("DynamicQuantizeLSTM is not used") != std::string::npos;
  }));
  EXPECT_EQ(CheckerAndTypeErrors(m), "");

  // Both branches in ONNX Runtime (our executor runs no If or LSTM) against the float model.
  for (const bool flag : {true, false}) {
    const std::vector<Tensor> in{IfModelInput(), Tensor::FromVector<bool>({}, {flag})};
    const auto want = RunModelInOrt(original, in);
    const auto got = RunModelInOrt(m, in);
    ASSERT_EQ(got.size(), 1u);
    const double err = MaxAbsDiff(want, got);
    std::cout << "[quantize_dynamic] If branch " << flag << ": max |int8 - float| " << err << "\n";
    EXPECT_LE(err, kDynamicIfTolerance);
    EXPECT_GT(err, 0.0) << "activations and weights are rounded";
  }
}

}  // namespace
}  // namespace compress
