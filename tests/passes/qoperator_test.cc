// The QDQ -> QOperator conversion on hand-made QDQ graphs (as a static quantizer writes them: int8
// symmetric per-channel weights, int32 biases, uint8 or int8 activation Q/DQ pairs): the exact structure
// afterwards (operators, wiring, element types, scales), the counters, and outputs against the QDQ model
// through our executor and ONNX Runtime.

#include "compress/passes/qoperator.h"

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

namespace compress {
namespace {

using namespace testing;

// A converted node requantizes its int32 accumulator once, where the QDQ graph rounds a float sum computed
// in another order: the two may land on neighbouring steps when the exact value is near a rounding
// boundary. One step of the output scale (the outputs compared are dequantized) is the most they may differ.
constexpr double kOutputSteps = 1.0;
// Where the output stays float (ConvInteger / MatMulInteger + rescale), the converted model computes
// the same products exactly in int32 and rescales once; the QDQ model sums the dequantized products in
// float32. For the sums of at most 27 products below 10 here that is well under 1e-4.
constexpr double kFloatOutputTolerance = 1e-4;
// Relative slack on a step bound, for the float rounding of the dequantization itself.
constexpr double kStepSlack = 1e-4;

PassContext Convert(Model& m) {
  PassContext ctx;
  ConvertQdqToQOperator(m, ctx);
  VerifyModel(m);
  return ctx;
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

Tensor Uniform(std::vector<int64_t> dims, uint32_t seed, float lo, float hi) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  Tensor t(DType::kFloat, std::move(dims));
  for (int64_t i = 0; i < t.numel(); ++i) t.mutable_data<float>()[i] = dist(gen);
  return t;
}

std::vector<int32_t> Ints(const Tensor& t) {
  std::vector<int32_t> v;
  for (int64_t i = 0; i < t.numel(); ++i) {
    if (t.dtype() == DType::kUInt8) v.push_back(t.data<uint8_t>()[i]);
    if (t.dtype() == DType::kInt8) v.push_back(t.data<int8_t>()[i]);
    if (t.dtype() == DType::kInt32) v.push_back(t.data<int32_t>()[i]);
  }
  return v;
}

float Lo(const Tensor& t) {
  return std::min(0.0f, *std::min_element(t.data<float>(), t.data<float>() + t.numel()));
}
float Hi(const Tensor& t) {
  return std::max(0.0f, *std::max_element(t.data<float>(), t.data<float>() + t.numel()));
}

// Affine parameters of an activation as a calibrating quantizer picks them: uint8 over [lo, hi] with 0
// inside, int8 symmetric.
struct Act {
  float scale;
  int zero;
  DType type;
};
Act ActParams(float lo, float hi, DType type) {
  lo = std::min(lo, 0.0f);
  hi = std::max(hi, 0.0f);
  if (type == DType::kInt8) return {std::max(-lo, hi) / 127.0f, 0, type};
  const float s = (hi - lo) / 255.0f;
  return {s, static_cast<int>(std::lround(-lo / s)), type};
}

// Builds QDQ graphs the way a static quantizer writes them.
class QdqGraph {
 public:
  explicit QdqGraph(int64_t opset = 13) : m_(EmptyModel(opset)) {}
  Model& model() { return m_; }
  Graph& g() { return m_.graph; }

  void Input(const std::string& name, const std::vector<int64_t>& dims) {
    g().inputs.push_back(FloatValue(name, Fixed(dims)));
  }
  void Output(const std::string& name, const std::vector<int64_t>& dims) {
    g().outputs.push_back(FloatValue(name, Fixed(dims)));
  }

  std::string Scalar(float v, const std::string& name) {
    g().initializers.push_back(Tensor::FromVector<float>({}, {v}, name));
    return name;
  }
  std::string ZeroPoint(const Act& p, const std::string& name) {
    Tensor z(p.type, {}, name);
    if (p.type == DType::kUInt8) z.mutable_data<uint8_t>()[0] = static_cast<uint8_t>(p.zero);
    if (p.type == DType::kInt8) z.mutable_data<int8_t>()[0] = static_cast<int8_t>(p.zero);
    g().initializers.push_back(z);
    return name;
  }

  // x -> QuantizeLinear -> tag_q -> DequantizeLinear -> tag_dq
  std::string Qdq(const std::string& x, const Act& p, const std::string& tag) {
    const std::string s = Scalar(p.scale, tag + "_scale"), z = ZeroPoint(p, tag + "_zero");
    g().nodes.push_back(MakeNode("QuantizeLinear", {x, s, z}, {tag + "_q"}, {}, tag + "_Q"));
    g().nodes.push_back(MakeNode("DequantizeLinear", {tag + "_q", s, z}, {tag + "_dq"}, {}, tag + "_DQ"));
    return tag + "_dq";
  }

  // Symmetric int8 weight per slice along `axis` (one scale when axis < 0), zero points int8 0.
  std::string Weight(const Tensor& w, int64_t axis, const std::string& tag, float weight_max = 127.0f) {
    const int64_t channels = axis < 0 ? 1 : w.dims()[static_cast<size_t>(axis)];
    int64_t inner = 1;
    for (size_t d = static_cast<size_t>(axis) + 1; axis >= 0 && d < w.dims().size(); ++d)
      inner *= w.dims()[d];
    std::vector<float> scales(static_cast<size_t>(channels), 0.0f);
    auto channel = [&](int64_t i) {
      return axis < 0 ? size_t{0} : static_cast<size_t>(i / inner % channels);
    };
    for (int64_t i = 0; i < w.numel(); ++i) {
      scales[channel(i)] = std::max(scales[channel(i)], std::fabs(w.data<float>()[i]) / weight_max);
    }
    Tensor q(DType::kInt8, w.dims(), tag + "_quantized");
    for (int64_t i = 0; i < w.numel(); ++i) {
      q.mutable_data<int8_t>()[i] = static_cast<int8_t>(std::lround(w.data<float>()[i] / scales[channel(i)]));
    }
    const std::vector<int64_t> sdims = axis < 0 ? std::vector<int64_t>{} : std::vector<int64_t>{channels};
    g().initializers.push_back(q);
    g().initializers.push_back(Tensor::FromVector<float>(sdims, scales, tag + "_scale"));
    g().initializers.push_back(Tensor(DType::kInt8, sdims, tag + "_zero"));
    std::vector<Attribute> attrs;
    if (axis >= 0) attrs.push_back(Attribute::Int("axis", axis));
    g().nodes.push_back(MakeNode("DequantizeLinear", {q.name(), tag + "_scale", tag + "_zero"}, {tag + "_dq"},
                                 attrs, tag + "_DQ"));
    weight_scales_[tag] = scales;
    return tag + "_dq";
  }
  const std::vector<float>& WeightScales(const std::string& tag) { return weight_scales_[tag]; }

  // int32 bias at scale x_scale * w_scale[c], zero point 0 (left out, as quantizers do).
  std::string Bias(const Tensor& b, float xs, const std::vector<float>& ws, const std::string& tag) {
    std::vector<float> scales;
    Tensor q(DType::kInt32, b.dims(), tag + "_quantized");
    for (int64_t c = 0; c < b.numel(); ++c) {
      scales.push_back(xs * ws[ws.size() == 1 ? 0 : static_cast<size_t>(c)]);
      q.mutable_data<int32_t>()[c] = static_cast<int32_t>(std::lround(b.data<float>()[c] / scales.back()));
    }
    g().initializers.push_back(q);
    g().initializers.push_back(Tensor::FromVector<float>({b.numel()}, scales, tag + "_scale"));
    g().nodes.push_back(MakeNode("DequantizeLinear", {q.name(), tag + "_scale"}, {tag + "_dq"},
                                 {Attribute::Int("axis", 0)}, tag + "_DQ"));
    return tag + "_dq";
  }

  void Add(Node n) { g().nodes.push_back(std::move(n)); }

 private:
  Model m_;
  std::map<std::string, std::vector<float>> weight_scales_;
};

// The largest difference between `a` and `b`, in steps of `scale`, checked against `tolerance` (absolute).
void ExpectClose(const std::vector<Tensor>& a, const std::vector<Tensor>& b, float scale, double tolerance,
                 const std::string& what) {
  const double diff = MaxAbsDiff(a, b);
  std::cout << "[qop] " << what << ": max diff " << diff / scale << " output steps\n";
  EXPECT_LE(diff, tolerance * (1 + kStepSlack)) << what;
}

// Converted model against the QDQ model in our executor, and in ONNX Runtime against ours; `tolerance`
// defaults to one step of the output scale.
void ExpectSameOutputs(const Model& qdq, const Model& qop, const std::vector<Tensor>& in, float y_scale,
                       double tolerance = 0) {
  if (tolerance == 0) tolerance = kOutputSteps * y_scale;
  const auto want = RunModel(qdq, in), got = RunModel(qop, in);
  ExpectClose(want, got, y_scale, tolerance, "QOperator vs QDQ, our executor");
  const auto ort = testing::RunModelInOrt(qop, in);
  ASSERT_EQ(ort.size(), got.size());
  ExpectClose(got, ort, y_scale, tolerance, "QOperator, ONNX Runtime vs our executor");
  const auto ort_qdq = testing::RunModelInOrt(qdq, in);
  ASSERT_EQ(ort_qdq.size(), got.size());
  std::cout << "[qop] QDQ model in ONNX Runtime vs QOperator model in ONNX Runtime: max diff "
            << MaxAbsDiff(ort_qdq, ort) / y_scale << " output steps\n";
}

const std::vector<Attribute> kConvAttrs{Attribute::Ints("pads", {1, 1, 1, 1}),
                                        Attribute::Ints("kernel_shape", {3, 3})};

// x [1,3,8,8] in [-1, 2] -> QDQ -> Conv(W [4,3,3,3] per channel, int32 bias) [-> Relu] -> Q -> DQ -> y, with
// the output range measured on `x` in float.
struct ConvCase {
  Model model;
  Act y;
  Tensor x;
};
ConvCase ConvQdq(bool relu, DType act_type, bool positive_output_range, float weight_max = 127.0f) {
  const Tensor x = Uniform({1, 3, 8, 8}, 1, -1.0f, 2.0f);
  Tensor w = Uniform({4, 3, 3, 3}, 2, -1.0f, 1.0f);
  for (int64_t i = 0; i < w.numel(); ++i) w.mutable_data<float>()[i] *= static_cast<float>(i / 27 + 1);
  Tensor b = Uniform({4}, 3, -1.0f, 1.0f);
  Node conv = MakeNode("Conv", {"x", "w", "b"}, {"c"}, kConvAttrs);
  Tensor yf = RunNode(conv, {x, w, b}, 13)[0];
  if (relu) {
    for (int64_t i = 0; i < yf.numel(); ++i)
      yf.mutable_data<float>()[i] = std::max(0.0f, yf.data<float>()[i]);
  }
  const Act xa = ActParams(-1.0f, 2.0f, act_type);
  const Act ya = ActParams(positive_output_range ? 0.0f : Lo(yf), Hi(yf), act_type);

  QdqGraph q;
  q.Input("x", {1, 3, 8, 8});
  q.Output("y", {1, 4, 8, 8});
  const std::string xd = q.Qdq("x", xa, "x");
  const std::string wd = q.Weight(w, 0, "w", weight_max);
  const std::string bd = q.Bias(b, xa.scale, q.WeightScales("w"), "b");
  q.Add(MakeNode("Conv", {xd, wd, bd}, {"c"}, kConvAttrs, "conv"));
  std::string out = "c";
  if (relu) {
    q.Add(MakeNode("Relu", {"c"}, {"r"}, {}, "relu"));
    out = "r";
  }
  const std::string s = q.Scalar(ya.scale, "y_scale"), z = q.ZeroPoint(ya, "y_zero");
  q.Add(MakeNode("QuantizeLinear", {out, s, z}, {"yq"}, {}, "y_Q"));
  q.Add(MakeNode("DequantizeLinear", {"yq", s, z}, {"y"}, {}, "y_DQ"));
  return {q.model(), ya, x};
}

TEST(QOperator, ConvWithQAfterBecomesQLinearConv) {
  ConvCase c = ConvQdq(false, DType::kUInt8, false);
  const Model qdq = c.model;
  Model& m = c.model;
  const PassContext ctx = Convert(m);
  EXPECT_EQ(Counter(ctx, "qlinear_conv"), 1);
  EXPECT_EQ(Counter(ctx, "kept_qdq"), 0);
  const Graph& g = m.graph;
  ASSERT_EQ(OpTypes(g), (std::vector<std::string>{"QuantizeLinear", "QLinearConv", "DequantizeLinear"}));
  const Node& qc = g.nodes[1];
  EXPECT_EQ(qc.name, "conv");
  EXPECT_EQ(qc.AttrInts("pads", {}), (std::vector<int64_t>{1, 1, 1, 1}));
  ASSERT_EQ(qc.inputs.size(), 9u);
  EXPECT_EQ(qc.inputs[0], "x_q");
  EXPECT_EQ(qc.inputs[1], "x_scale");
  EXPECT_EQ(qc.inputs[2], "x_zero");
  EXPECT_EQ(qc.inputs[4], "w_scale");
  EXPECT_EQ(qc.inputs[6], "y_scale");
  EXPECT_EQ(qc.inputs[7], "y_zero");
  EXPECT_EQ(qc.inputs[8], "b_quantized") << "the bias already has scale x_scale * w_scale";
  EXPECT_EQ(qc.outputs, (std::vector<std::string>{"yq"}));
  // int8 weights next to uint8 activations: stored as q + 128, zero point 128 per channel.
  const Tensor& w8 = Init(qdq.graph, "w_quantized");
  const Tensor& wu = Init(g, qc.inputs[3]);
  ASSERT_EQ(wu.dtype(), DType::kUInt8);
  EXPECT_EQ(wu.dims(), w8.dims());
  for (int64_t i = 0; i < wu.numel(); ++i) EXPECT_EQ(wu.data<uint8_t>()[i], w8.data<int8_t>()[i] + 128);
  const Tensor& wz = Init(g, qc.inputs[5]);
  ASSERT_EQ(wz.dtype(), DType::kUInt8);
  EXPECT_EQ(Ints(wz), (std::vector<int32_t>{128, 128, 128, 128}));
  EXPECT_EQ(Init(g, "w_scale").dims(), (std::vector<int64_t>{4}));
  EXPECT_EQ(g.FindInitializer("w_quantized"), nullptr) << "the int8 weight is no longer read";
  EXPECT_EQ(g.FindInitializer("w_zero"), nullptr);
  EXPECT_EQ(g.FindInitializer("b_scale"), nullptr);
  EXPECT_EQ(g.nodes[2].inputs[0], "yq");
  EXPECT_EQ(testing::CheckerAndTypeErrors(m), "");
  ExpectSameOutputs(qdq, m, {c.x}, c.y.scale);
}

// 7-bit weights (within [-64, 64]) cannot saturate ONNX Runtime's uint8 x int8 kernels: they stay int8.
TEST(QOperator, SevenBitWeightsStayInt8) {
  ConvCase c = ConvQdq(false, DType::kUInt8, false, 64.0f);
  const Model qdq = c.model;
  Model& m = c.model;
  const PassContext ctx = Convert(m);
  EXPECT_EQ(Counter(ctx, "qlinear_conv"), 1);
  ASSERT_EQ(OpTypes(m.graph),
            (std::vector<std::string>{"QuantizeLinear", "QLinearConv", "DequantizeLinear"}));
  const Node& qc = m.graph.nodes[1];
  EXPECT_EQ(qc.inputs[3], "w_quantized");
  const Tensor& wz = Init(m.graph, qc.inputs[5]);
  EXPECT_EQ(wz.dtype(), DType::kInt8);
  EXPECT_EQ(Ints(wz), (std::vector<int32_t>{0, 0, 0, 0}));
  EXPECT_EQ(testing::CheckerAndTypeErrors(m), "");
  ExpectSameOutputs(qdq, m, {c.x}, c.y.scale);
}

// Relu before a Q with zero point 0 (uint8) adds nothing the Q's clamp does not do: absorbed.
TEST(QOperator, ReluBeforeZeroPointZeroIsAbsorbed) {
  ConvCase c = ConvQdq(true, DType::kUInt8, true);
  ASSERT_EQ(c.y.zero, 0);
  const Model qdq = c.model;
  Model& m = c.model;
  const PassContext ctx = Convert(m);
  EXPECT_EQ(Counter(ctx, "qlinear_conv"), 1);
  ASSERT_EQ(OpTypes(m.graph),
            (std::vector<std::string>{"QuantizeLinear", "QLinearConv", "DequantizeLinear"}));
  EXPECT_EQ(m.graph.nodes[1].outputs, (std::vector<std::string>{"yq"}));
  EXPECT_EQ(testing::CheckerAndTypeErrors(m), "");
  ExpectSameOutputs(qdq, m, {c.x}, c.y.scale);
}

// With a zero point above 0 the Q can represent negative values, so the Relu is needed: the Conv keeps a
// float output (ConvInteger + rescale) and Relu and Q stay.
TEST(QOperator, ReluBeforeNonZeroZeroPointStays) {
  ConvCase c = ConvQdq(true, DType::kUInt8, false);
  c.model.graph.initializers.push_back(Tensor::FromVector<uint8_t>({}, {20}, "y_zero_20"));
  for (auto& n : c.model.graph.nodes) {
    if (n.op_type == "QuantizeLinear" && n.inputs[0] == "r") n.inputs[2] = "y_zero_20";
    if (n.op_type == "DequantizeLinear" && n.inputs[0] == "yq") n.inputs[2] = "y_zero_20";
  }
  const Model qdq = c.model;
  Model& m = c.model;
  const PassContext ctx = Convert(m);
  EXPECT_EQ(Counter(ctx, "qlinear_conv"), 0);
  EXPECT_EQ(Counter(ctx, "conv_integer"), 1);
  const Graph& g = m.graph;
  ASSERT_EQ(OpTypes(g), (std::vector<std::string>{"QuantizeLinear", "ConvInteger", "Cast", "Mul", "Add",
                                                  "Relu", "QuantizeLinear", "DequantizeLinear"}));
  const Node& ci = g.nodes[1];
  ASSERT_EQ(ci.inputs.size(), 4u);
  EXPECT_EQ(ci.inputs[0], "x_q");
  EXPECT_EQ(ci.inputs[2], "x_zero");
  EXPECT_EQ(Init(g, ci.inputs[1]).dtype(), DType::kUInt8);
  const Tensor& wz = Init(g, ci.inputs[3]);
  EXPECT_EQ(wz.rank(), 0) << "ConvInteger in ONNX Runtime takes a scalar w_zero_point";
  EXPECT_EQ(Ints(wz), (std::vector<int32_t>{128}));
  // The rescale: x_scale * w_scale[c] as [4,1,1]; the bias dequantized, [4,1,1].
  const Tensor& scale = Init(g, g.nodes[3].inputs[1]);
  EXPECT_EQ(scale.dims(), (std::vector<int64_t>{4, 1, 1}));
  const float xs = Init(qdq.graph, "x_scale").data<float>()[0];
  const Tensor& ws = Init(qdq.graph, "w_scale");
  for (int64_t ch = 0; ch < 4; ++ch) EXPECT_EQ(scale.data<float>()[ch], xs * ws.data<float>()[ch]);
  const Tensor& bias = Init(g, g.nodes[4].inputs[1]);
  EXPECT_EQ(bias.dims(), (std::vector<int64_t>{4, 1, 1}));
  const Tensor& bq = Init(qdq.graph, "b_quantized");
  const Tensor& bs = Init(qdq.graph, "b_scale");
  for (int64_t ch = 0; ch < 4; ++ch) {
    EXPECT_FLOAT_EQ(bias.data<float>()[ch],
                    static_cast<float>(double{bs.data<float>()[ch]} * bq.data<int32_t>()[ch]));
  }
  EXPECT_EQ(g.nodes[4].outputs, (std::vector<std::string>{"c"}));
  EXPECT_EQ(g.nodes[5].inputs, (std::vector<std::string>{"c"}));
  EXPECT_EQ(testing::CheckerAndTypeErrors(m), "");
  ExpectSameOutputs(qdq, m, {c.x}, c.y.scale);
}

// int8 activations: QLinearConv int8 x int8 -> int8, the weights used as they are.
TEST(QOperator, Int8ActivationsKeepInt8Weights) {
  ConvCase c = ConvQdq(false, DType::kInt8, false);
  const Model qdq = c.model;
  Model& m = c.model;
  const PassContext ctx = Convert(m);
  EXPECT_EQ(Counter(ctx, "qlinear_conv"), 1);
  ASSERT_EQ(OpTypes(m.graph),
            (std::vector<std::string>{"QuantizeLinear", "QLinearConv", "DequantizeLinear"}));
  const Node& qc = m.graph.nodes[1];
  EXPECT_EQ(qc.inputs[3], "w_quantized");
  EXPECT_EQ(Init(m.graph, qc.inputs[5]).dtype(), DType::kInt8);
  EXPECT_EQ(Ints(Init(m.graph, qc.inputs[5])), (std::vector<int32_t>{0, 0, 0, 0}));
  EXPECT_EQ(Init(m.graph, qc.inputs[7]).dtype(), DType::kInt8);
  EXPECT_EQ(testing::CheckerAndTypeErrors(m), "");
  ExpectSameOutputs(qdq, m, {c.x}, c.y.scale);
}

// x [2,3,16] -> QDQ -> MatMul(W [16,5] per column) -> Q -> DQ: QLinearMatMul with per-column b_scale.
TEST(QOperator, MatMulWithQAfterBecomesQLinearMatMul) {
  const Tensor x = Uniform({2, 3, 16}, 11, -1.0f, 1.0f);
  Tensor w = Uniform({16, 5}, 12, -1.0f, 1.0f);
  for (int64_t i = 0; i < w.numel(); ++i) w.mutable_data<float>()[i] *= static_cast<float>(i % 5 + 1);
  const Tensor yf = RunNode(MakeNode("MatMul", {"a", "b"}, {"y"}), {x, w}, 13)[0];
  const Act xa = ActParams(-1.0f, 1.0f, DType::kUInt8), ya = ActParams(Lo(yf), Hi(yf), DType::kUInt8);
  QdqGraph q;
  q.Input("x", {2, 3, 16});
  q.Output("y", {2, 3, 5});
  const std::string xd = q.Qdq("x", xa, "x");
  const std::string wd = q.Weight(w, 1, "w");
  q.Add(MakeNode("MatMul", {xd, wd}, {"mm"}, {}, "fc"));
  const std::string s = q.Scalar(ya.scale, "y_scale"), z = q.ZeroPoint(ya, "y_zero");
  q.Add(MakeNode("QuantizeLinear", {"mm", s, z}, {"yq"}, {}, "y_Q"));
  q.Add(MakeNode("DequantizeLinear", {"yq", s, z}, {"y"}, {}, "y_DQ"));
  const Model qdq = q.model();
  Model m = q.model();
  const PassContext ctx = Convert(m);
  EXPECT_EQ(Counter(ctx, "qlinear_matmul"), 1);
  const Graph& g = m.graph;
  ASSERT_EQ(OpTypes(g), (std::vector<std::string>{"QuantizeLinear", "QLinearMatMul", "DequantizeLinear"}));
  const Node& qm = g.nodes[1];
  EXPECT_EQ(qm.name, "fc");
  ASSERT_EQ(qm.inputs.size(), 8u);
  EXPECT_EQ(qm.inputs[0], "x_q");
  EXPECT_EQ(qm.inputs[4], "w_scale");
  EXPECT_EQ(Init(g, "w_scale").dims(), (std::vector<int64_t>{5}));
  const Tensor& wu = Init(g, qm.inputs[3]);
  EXPECT_EQ(wu.dtype(), DType::kUInt8);
  EXPECT_EQ(wu.dims(), (std::vector<int64_t>{16, 5}));
  const Tensor& wz = Init(g, qm.inputs[5]);
  EXPECT_EQ(wz.dims(), (std::vector<int64_t>{5})) << "b_zero_point has the shape of b_scale";
  EXPECT_EQ(Ints(wz), (std::vector<int32_t>(5, 128)));
  EXPECT_EQ(qm.inputs[6], "y_scale");
  EXPECT_EQ(qm.outputs, (std::vector<std::string>{"yq"}));
  EXPECT_EQ(testing::CheckerAndTypeErrors(m), "");
  ExpectSameOutputs(qdq, m, {x}, ya.scale);
}

// MatMul whose output stays float (read by a float Add): MatMulInteger + Cast + Mul(x_scale * w_scale[n]).
TEST(QOperator, MatMulWithFloatOutputBecomesMatMulInteger) {
  const Tensor x = Uniform({4, 16}, 21, -1.0f, 1.0f);
  const Tensor w = Uniform({16, 5}, 22, -1.0f, 1.0f);
  const Act xa = ActParams(-1.0f, 1.0f, DType::kUInt8);
  QdqGraph q;
  q.Input("x", {4, 16});
  q.Output("y", {4, 5});
  const std::string xd = q.Qdq("x", xa, "x");
  const std::string wd = q.Weight(w, 1, "w");
  q.g().initializers.push_back(Tensor::FromVector<float>({5}, {0.1f, 0.2f, 0.3f, 0.4f, 0.5f}, "bias"));
  q.Add(MakeNode("MatMul", {xd, wd}, {"mm"}, {}, "fc"));
  q.Add(MakeNode("Add", {"mm", "bias"}, {"y"}, {}, "add"));
  const Model qdq = q.model();
  Model m = q.model();
  const PassContext ctx = Convert(m);
  EXPECT_EQ(Counter(ctx, "matmul_integer"), 1);
  const Graph& g = m.graph;
  ASSERT_EQ(OpTypes(g), (std::vector<std::string>{"QuantizeLinear", "MatMulInteger", "Cast", "Mul", "Add"}));
  const Node& mi = g.nodes[1];
  ASSERT_EQ(mi.inputs.size(), 4u);
  EXPECT_EQ(mi.inputs[0], "x_q");
  EXPECT_EQ(mi.inputs[2], "x_zero");
  EXPECT_EQ(Init(g, mi.inputs[1]).dtype(), DType::kUInt8);
  EXPECT_EQ(Ints(Init(g, mi.inputs[3])), (std::vector<int32_t>{128}));
  EXPECT_EQ(g.nodes[2].inputs, mi.outputs);
  const Tensor& scale = Init(g, g.nodes[3].inputs[1]);
  EXPECT_EQ(scale.dims(), (std::vector<int64_t>{5}));
  for (int64_t n = 0; n < 5; ++n)
    EXPECT_EQ(scale.data<float>()[n], xa.scale * q.WeightScales("w")[static_cast<size_t>(n)]);
  EXPECT_EQ(g.nodes[3].outputs, (std::vector<std::string>{"mm"}));
  EXPECT_EQ(g.nodes[4].inputs, (std::vector<std::string>{"mm", "bias"}));
  EXPECT_EQ(testing::CheckerAndTypeErrors(m), "");
  const auto want = RunModel(qdq, {x}), got = RunModel(m, {x});
  EXPECT_LE(MaxAbsDiff(want, got), kFloatOutputTolerance);
  const auto ort = testing::RunModelInOrt(m, {x});
  EXPECT_LE(MaxAbsDiff(got, ort), kFloatOutputTolerance);
}

// Gemm (transB) with an int32 bias and a Q after: no QLinear Gemm in the default domain, so MatMulInteger
// on the transposed weight, the rescale, the dequantized bias, and the Q stays.
TEST(QOperator, GemmBecomesMatMulIntegerAndKeepsItsQ) {
  const Tensor x = Uniform({4, 12}, 31, -1.0f, 1.0f);
  const Tensor w = Uniform({6, 12}, 32, -1.0f, 1.0f);
  const Tensor b = Uniform({6}, 33, -1.0f, 1.0f);
  const Tensor yf =
      RunNode(MakeNode("Gemm", {"a", "b", "c"}, {"y"}, {Attribute::Int("transB", 1)}), {x, w, b}, 13)[0];
  const Act xa = ActParams(-1.0f, 1.0f, DType::kUInt8), ya = ActParams(Lo(yf), Hi(yf), DType::kUInt8);
  QdqGraph q;
  q.Input("x", {4, 12});
  q.Output("y", {4, 6});
  const std::string xd = q.Qdq("x", xa, "x");
  const std::string wd = q.Weight(w, 0, "w");
  const std::string bd = q.Bias(b, xa.scale, q.WeightScales("w"), "b");
  q.Add(MakeNode("Gemm", {xd, wd, bd}, {"gm"}, {Attribute::Int("transB", 1)}, "gemm"));
  const std::string s = q.Scalar(ya.scale, "y_scale"), z = q.ZeroPoint(ya, "y_zero");
  q.Add(MakeNode("QuantizeLinear", {"gm", s, z}, {"yq"}, {}, "y_Q"));
  q.Add(MakeNode("DequantizeLinear", {"yq", s, z}, {"y"}, {}, "y_DQ"));
  const Model qdq = q.model();
  Model m = q.model();
  const PassContext ctx = Convert(m);
  EXPECT_EQ(Counter(ctx, "matmul_integer"), 1);
  const Graph& g = m.graph;
  ASSERT_EQ(OpTypes(g), (std::vector<std::string>{"QuantizeLinear", "MatMulInteger", "Cast", "Mul", "Add",
                                                  "QuantizeLinear", "DequantizeLinear"}));
  const Tensor& wt = Init(g, g.nodes[1].inputs[1]);
  EXPECT_EQ(wt.dims(), (std::vector<int64_t>{12, 6}));
  const Tensor& w8 = Init(qdq.graph, "w_quantized");
  for (int64_t n = 0; n < 6; ++n) {
    for (int64_t k = 0; k < 12; ++k)
      EXPECT_EQ(wt.data<uint8_t>()[k * 6 + n], w8.data<int8_t>()[n * 12 + k] + 128);
  }
  EXPECT_EQ(Init(g, g.nodes[3].inputs[1]).dims(), (std::vector<int64_t>{6}));
  EXPECT_EQ(Init(g, g.nodes[4].inputs[1]).dims(), (std::vector<int64_t>{6}));
  EXPECT_EQ(g.nodes[4].outputs, (std::vector<std::string>{"gm"}));
  EXPECT_EQ(g.nodes[5].inputs[0], "gm");
  EXPECT_EQ(testing::CheckerAndTypeErrors(m), "");
  ExpectSameOutputs(qdq, m, {x}, ya.scale);
}

// Conv -> Q/DQ -> MaxPool -> Q/DQ -> Conv: both convolutions become QLinearConv, MaxPool stays between its
// DQ and Q.
TEST(QOperator, MaxPoolBetweenConvsStaysQdq) {
  const Tensor x = Uniform({1, 2, 8, 8}, 41, 0.0f, 1.0f);
  const Tensor w1 = Uniform({3, 2, 3, 3}, 42, -1.0f, 1.0f), w2 = Uniform({4, 3, 3, 3}, 43, -1.0f, 1.0f);
  const Tensor y1 = RunNode(MakeNode("Conv", {"x", "w"}, {"y"}, kConvAttrs), {x, w1}, 13)[0];
  const Node pool = MakeNode("MaxPool", {"p"}, {"pq"},
                             {Attribute::Ints("kernel_shape", {2, 2}), Attribute::Ints("strides", {2, 2})});
  const Tensor p1 = RunNode(pool, {y1}, 13)[0];
  const Tensor y2 = RunNode(MakeNode("Conv", {"x", "w"}, {"y"}, kConvAttrs), {p1, w2}, 13)[0];
  const Act xa = ActParams(0.0f, 1.0f, DType::kUInt8), a1 = ActParams(Lo(y1), Hi(y1), DType::kUInt8),
            a2 = ActParams(Lo(y2), Hi(y2), DType::kUInt8);
  QdqGraph q;
  q.Input("x", {1, 2, 8, 8});
  q.Output("y", {1, 4, 4, 4});
  const std::string xd = q.Qdq("x", xa, "x");
  q.Add(MakeNode("Conv", {xd, q.Weight(w1, 0, "w1")}, {"c1"}, kConvAttrs, "conv1"));
  const std::string c1d = q.Qdq("c1", a1, "c1");
  Node mp = pool;
  mp.inputs = {c1d};
  mp.outputs = {"p"};
  mp.name = "pool";
  q.Add(mp);
  const std::string pd = q.Qdq("p", a1, "p");
  q.Add(MakeNode("Conv", {pd, q.Weight(w2, 0, "w2")}, {"c2"}, kConvAttrs, "conv2"));
  const std::string s = q.Scalar(a2.scale, "y_scale"), z = q.ZeroPoint(a2, "y_zero");
  q.Add(MakeNode("QuantizeLinear", {"c2", s, z}, {"yq"}, {}, "y_Q"));
  q.Add(MakeNode("DequantizeLinear", {"yq", s, z}, {"y"}, {}, "y_DQ"));
  const Model qdq = q.model();
  Model m = q.model();
  const PassContext ctx = Convert(m);
  EXPECT_EQ(Counter(ctx, "qlinear_conv"), 2);
  EXPECT_EQ(Counter(ctx, "kept_qdq"), 1);
  const Graph& g = m.graph;
  ASSERT_EQ(OpTypes(g),
            (std::vector<std::string>{"QuantizeLinear", "QLinearConv", "DequantizeLinear", "MaxPool",
                                      "QuantizeLinear", "QLinearConv", "DequantizeLinear"}));
  EXPECT_EQ(g.nodes[1].outputs, (std::vector<std::string>{"c1_q"}));
  EXPECT_EQ(g.nodes[2].inputs[0], "c1_q");
  EXPECT_EQ(g.nodes[3].inputs, (std::vector<std::string>{"c1_dq"}));
  EXPECT_EQ(g.nodes[4].outputs, (std::vector<std::string>{"p_q"}));
  EXPECT_EQ(g.nodes[5].inputs[0], "p_q");
  EXPECT_EQ(g.nodes[5].outputs, (std::vector<std::string>{"yq"}));
  EXPECT_EQ(testing::CheckerAndTypeErrors(m), "");
  // conv1's output may land one step (a1.scale) apart in the two forms, as in the single-conv tests; MaxPool
  // passes such a difference on unchanged, and conv2 multiplies it by at most the sum of |w2| over one
  // output channel's window before its own one-step rounding.
  double w2_sum = 0;
  for (int64_t ch = 0; ch < 4; ++ch) {
    double sum = 0;
    for (int64_t i = 0; i < 27; ++i) sum += std::fabs(w2.data<float>()[ch * 27 + i]);
    w2_sum = std::max(w2_sum, sum);
  }
  ExpectSameOutputs(qdq, m, {x}, a2.scale, kOutputSteps * a2.scale + a1.scale * w2_sum);
}

// Two activations (attention scores): both operands computed at run time, quantized per tensor.
TEST(QOperator, MatMulOfTwoActivations) {
  const Tensor a = Uniform({2, 4, 8}, 51, -1.0f, 1.0f), b = Uniform({2, 8, 4}, 52, -2.0f, 1.0f);
  const Tensor yf = RunNode(MakeNode("MatMul", {"a", "b"}, {"y"}), {a, b}, 13)[0];
  const Act aa = ActParams(-1.0f, 1.0f, DType::kUInt8), ba = ActParams(-2.0f, 1.0f, DType::kUInt8),
            ya = ActParams(Lo(yf), Hi(yf), DType::kUInt8);
  QdqGraph q;
  q.Input("a", {2, 4, 8});
  q.Input("b", {2, 8, 4});
  q.Output("y", {2, 4, 4});
  const std::string ad = q.Qdq("a", aa, "a"), bd = q.Qdq("b", ba, "b");
  q.Add(MakeNode("MatMul", {ad, bd}, {"mm"}, {}, "scores"));
  const std::string s = q.Scalar(ya.scale, "y_scale"), z = q.ZeroPoint(ya, "y_zero");
  q.Add(MakeNode("QuantizeLinear", {"mm", s, z}, {"yq"}, {}, "y_Q"));
  q.Add(MakeNode("DequantizeLinear", {"yq", s, z}, {"y"}, {}, "y_DQ"));
  const Model qdq = q.model();
  Model m = q.model();
  const PassContext ctx = Convert(m);
  EXPECT_EQ(Counter(ctx, "qlinear_matmul"), 1);
  const Graph& g = m.graph;
  ASSERT_EQ(OpTypes(g), (std::vector<std::string>{"QuantizeLinear", "QuantizeLinear", "QLinearMatMul",
                                                  "DequantizeLinear"}));
  const Node& qm = g.nodes[2];
  EXPECT_EQ(qm.inputs[0], "a_q");
  EXPECT_EQ(qm.inputs[1], "a_scale");
  EXPECT_EQ(qm.inputs[2], "a_zero");
  EXPECT_EQ(qm.inputs[3], "b_q");
  EXPECT_EQ(qm.inputs[4], "b_scale");
  EXPECT_EQ(qm.inputs[5], "b_zero");
  EXPECT_EQ(testing::CheckerAndTypeErrors(m), "");
  const auto want = RunModel(qdq, {a, b}), got = RunModel(m, {a, b});
  ExpectClose(want, got, ya.scale, kOutputSteps * ya.scale, "two activations, our executor");
  const auto ort = testing::RunModelInOrt(m, {a, b});
  ExpectClose(got, ort, ya.scale, kOutputSteps * ya.scale, "two activations, ONNX Runtime vs our executor");
}

// A Q of another type than the activation's has no QLinearConv in ONNX Runtime (uint8 -> int8): the Conv
// keeps a float output and the Q stays.
TEST(QOperator, RequantizeToAnotherTypeKeepsFloatOutput) {
  ConvCase c = ConvQdq(false, DType::kUInt8, false);
  const Act y8 = ActParams(-c.y.scale * static_cast<float>(c.y.zero),
                           c.y.scale * static_cast<float>(255 - c.y.zero), DType::kInt8);
  c.model.graph.initializers.push_back(Tensor::FromVector<int8_t>({}, {0}, "y_zero_int8"));
  c.model.graph.initializers.push_back(Tensor::FromVector<float>({}, {y8.scale}, "y_scale_int8"));
  for (auto& n : c.model.graph.nodes) {
    if (n.op_type == "QuantizeLinear" && n.inputs[0] == "c") n.inputs = {"c", "y_scale_int8", "y_zero_int8"};
    if (n.op_type == "DequantizeLinear" && n.inputs[0] == "yq")
      n.inputs = {"yq", "y_scale_int8", "y_zero_int8"};
  }
  const Model qdq = c.model;
  Model& m = c.model;
  const PassContext ctx = Convert(m);
  EXPECT_EQ(Counter(ctx, "conv_integer"), 1);
  EXPECT_EQ(OpTypes(m.graph), (std::vector<std::string>{"QuantizeLinear", "ConvInteger", "Cast", "Mul", "Add",
                                                        "QuantizeLinear", "DequantizeLinear"}));
  EXPECT_EQ(testing::CheckerAndTypeErrors(m), "");
  ExpectSameOutputs(qdq, m, {c.x}, y8.scale);
}

// Weights with different zero points per channel cannot use ConvInteger's scalar zero point: the node
// stays in QDQ form, with a note.
TEST(QOperator, PerChannelWeightZeroPointsStayQdq) {
  ConvCase c = ConvQdq(false, DType::kUInt8, false);
  Tensor* wz = c.model.graph.FindInitializer("w_zero");
  ASSERT_NE(wz, nullptr);
  wz->mutable_data<int8_t>()[1] = 3;
  Model& m = c.model;
  const std::vector<std::string> before = OpTypes(m.graph);
  const PassContext ctx = Convert(m);
  EXPECT_EQ(OpTypes(m.graph), before);
  EXPECT_EQ(Counter(ctx, "qlinear_conv"), 0);
  EXPECT_EQ(Counter(ctx, "kept_qdq"), 1);
  ASSERT_EQ(ctx.notes().size(), 1u);
  EXPECT_EQ(ctx.notes()[0],
            "kept 'conv' (Conv) in QDQ form: the weight's zero points differ between channels");
}

}  // namespace
}  // namespace compress
