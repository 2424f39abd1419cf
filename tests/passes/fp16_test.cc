// The fp16 pass on small hand-built graphs: exact structure afterwards (which values are float16, where the
// Casts are and what they are called), the counters, and outputs against the float32 model through the
// executor.

#include <gtest/gtest.h>
#include <onnx/defs/schema.h>
#include <onnx/onnx_pb.h>
#include <onnx/shape_inference/implementation.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "compress/exec/executor.h"
#include "compress/io/onnx_io.h"
#include "compress/ir/verify.h"
#include "compress/passes/pass.h"
#include "compress/util/half.h"
#include "support/test_support.h"

namespace compress {
namespace {

using nlohmann::json;

// float16 keeps 11 significant bits, so one rounding is off by at most 2^-11 relative. These graphs round
// the input, the weights and every intermediate value once each (at most 8 roundings on any path), and
// the errors add up: 8 * 2^-11 relative to the output's magnitude.
constexpr double kFp16Tolerance = 8.0 / 2048.0;

PassContext RunFp16(Model& m, const json& options = json::object()) {
  const PassInfo* info = FindPass("fp16");
  EXPECT_NE(info, nullptr);
  PassContext ctx;
  info->create(ValidatePassOptions(*info, options, "test"))->Run(m, ctx);
  VerifyModel(m);
  return ctx;
}

int64_t Counter(const PassContext& ctx, const std::string& key) {
  const auto it = ctx.counters().find(key);
  return it == ctx.counters().end() ? -1 : it->second;
}

const Node& NodeNamed(const Graph& g, const std::string& name) {
  for (const auto& n : g.nodes) {
    if (n.name == name) return n;
  }
  ADD_FAILURE() << "no node " << name;
  static const Node none;
  return none;
}

std::vector<std::string> NodeNames(const Graph& g) {
  std::vector<std::string> out;
  for (const auto& n : g.nodes) out.push_back(n.name);
  return out;
}

// "Cast(a->b,to=10)" for each Cast, in graph order.
std::vector<std::string> Casts(const Graph& g) {
  std::vector<std::string> out;
  for (const auto& n : g.nodes) {
    if (n.op_type != "Cast") continue;
    out.push_back(n.name + ":" + n.inputs[0] + "->" + n.outputs[0] +
                  ",to=" + std::to_string(n.AttrInt("to", -1)));
  }
  return out;
}

DType InitDType(const Graph& g, const std::string& name) {
  const Tensor* t = g.FindInitializer(name);
  return t == nullptr ? DType::kUndefined : t->dtype();
}

float HalfAt(const Tensor& t, int64_t i) { return HalfToFloat(static_cast<const uint16_t*>(t.raw())[i]); }

// Largest |a - b| over two outputs, relative to max(1, largest |a|).
double RelativeDiff(const Tensor& ref, const Tensor& got) {
  EXPECT_EQ(ref.dims(), got.dims());
  EXPECT_EQ(ref.numel(), got.numel());
  double worst = 0, scale = 1;
  for (int64_t i = 0; i < ref.numel(); ++i) {
    const float a = ref.data<float>()[i];
    const float b = got.dtype() == DType::kFloat16 ? HalfAt(got, i) : got.data<float>()[i];
    worst = std::max(worst, std::fabs(static_cast<double>(a) - b));
    scale = std::max(scale, std::fabs(static_cast<double>(a)));
  }
  return worst / scale;
}

Tensor Ramp(std::vector<int64_t> dims, float step, float start) {
  std::vector<float> v(static_cast<size_t>(ShapeElementCount(dims)));
  for (size_t i = 0; i < v.size(); ++i)
    v[i] = start + step * static_cast<float>(i % 23) * (i % 2 ? -1.0f : 1.0f);
  return Tensor::FromVector<float>(dims, v);
}

Tensor ToHalfTensor(const Tensor& t) {
  Tensor out(DType::kFloat16, t.dims());
  for (int64_t i = 0; i < t.numel(); ++i)
    static_cast<uint16_t*>(out.mutable_raw())[i] = FloatToHalf(t.data<float>()[i]);
  return out;
}

TEST(Fp16, TinyModelKeepsFloat32InputsAndOutputsWithCastsAtTheBoundary) {
  const Model original = testing::TinyModel();
  Model m = original;
  const PassContext ctx = RunFp16(m);

  EXPECT_EQ(NodeNames(m.graph),
            (std::vector<std::string>{"x_cast_fp16", "relu", "matmul", "add", "y_cast_fp32"}));
  EXPECT_EQ(Casts(m.graph),
            (std::vector<std::string>{"x_cast_fp16:x->x_fp16,to=10", "y_cast_fp32:y_fp16->y,to=1"}));
  EXPECT_EQ(NodeNamed(m.graph, "relu").inputs, (std::vector<std::string>{"x_fp16"}));
  EXPECT_EQ(NodeNamed(m.graph, "matmul").inputs, (std::vector<std::string>{"h", "W"}));
  EXPECT_EQ(NodeNamed(m.graph, "add").outputs, (std::vector<std::string>{"y_fp16"}));
  // Graph inputs and outputs: same names, still float32.
  ASSERT_EQ(m.graph.inputs.size(), 1u);
  EXPECT_EQ(m.graph.inputs[0].name, "x");
  EXPECT_EQ(m.graph.inputs[0].type.elem_type, DType::kFloat);
  EXPECT_EQ(m.graph.outputs[0].name, "y");
  EXPECT_EQ(m.graph.outputs[0].type.elem_type, DType::kFloat);
  // Weights converted in place, each value rounded to nearest.
  ASSERT_EQ(m.graph.initializers.size(), 2u);
  const Tensor& w = *m.graph.FindInitializer("W");
  ASSERT_EQ(w.dtype(), DType::kFloat16);
  EXPECT_EQ(w.dims(), (std::vector<int64_t>{4, 3}));
  const Tensor& w32 = *original.graph.FindInitializer("W");
  for (int64_t i = 0; i < w.numel(); ++i) {
    EXPECT_EQ(static_cast<const uint16_t*>(w.raw())[i], FloatToHalf(w32.data<float>()[i])) << i;
  }
  EXPECT_EQ(InitDType(m.graph, "b"), DType::kFloat16);

  EXPECT_EQ(Counter(ctx, "converted_initializers"), 2);
  EXPECT_EQ(Counter(ctx, "converted_nodes"), 3);
  EXPECT_EQ(Counter(ctx, "inserted_casts"), 2);
  EXPECT_EQ(Counter(ctx, "blocked_nodes"), 0);
  EXPECT_EQ(Counter(ctx, "clamped_values"), 0);
  EXPECT_EQ(testing::CheckerAndTypeErrors(m), "");

  Executor before(original), after(m);
  const Tensor x = Ramp({5, 4}, 0.37f, -1.3f);
  const auto want = before.Run({x});
  const auto got = after.Run({x});
  ASSERT_EQ(got[0].dtype(), DType::kFloat);
  EXPECT_LE(RelativeDiff(want[0], got[0]), kFp16Tolerance);
  EXPECT_GT(RelativeDiff(want[0], got[0]), 0.0);  // the weights really are rounded
}

TEST(Fp16, WithoutKeepIoTypesInputsAndOutputsBecomeFloat16) {
  const Model original = testing::TinyModel();
  Model m = original;
  const PassContext ctx = RunFp16(m, {{"keep_io_types", false}});
  EXPECT_EQ(NodeNames(m.graph), (std::vector<std::string>{"relu", "matmul", "add"}));
  EXPECT_EQ(Counter(ctx, "inserted_casts"), 0);
  EXPECT_EQ(m.graph.inputs[0].name, "x");
  EXPECT_EQ(m.graph.inputs[0].type.elem_type, DType::kFloat16);
  EXPECT_EQ(m.graph.outputs[0].name, "y");
  EXPECT_EQ(m.graph.outputs[0].type.elem_type, DType::kFloat16);
  EXPECT_EQ(NodeNamed(m.graph, "add").outputs, (std::vector<std::string>{"y"}));
  EXPECT_EQ(testing::CheckerAndTypeErrors(m), "");

  Executor before(original), after(m);
  const Tensor x = Ramp({3, 4}, 0.25f, 0.5f);
  const auto got = after.Run({ToHalfTensor(x)});
  ASSERT_EQ(got[0].dtype(), DType::kFloat16);
  EXPECT_LE(RelativeDiff(before.Run({x})[0], got[0]), kFp16Tolerance);
}

TEST(Fp16, ClampsValuesBeyondTheFloat16RangeAndCountsThemPerTensor) {
  Model m = testing::TinyModel();
  const float inf = std::numeric_limits<float>::infinity();
  *m.graph.FindInitializer("W") = Tensor::FromVector<float>(
      {4, 3}, {1e5f, -1e5f, 70000.0f, 65504.0f, -65504.0f, inf, -inf, 1.0f, 0.5f, 0, 0, 0}, "W");
  *m.graph.FindInitializer("b") = Tensor::FromVector<float>({3}, {-2e9f, 3.0f, 0.0f}, "b");
  const PassContext ctx = RunFp16(m);
  EXPECT_EQ(Counter(ctx, "clamped_values"), 4);
  EXPECT_EQ(ctx.details()["clamped"], (json{{"W", 3}, {"b", 1}}));
  const Tensor& w = *m.graph.FindInitializer("W");
  EXPECT_EQ(HalfAt(w, 0), 65504.0f);
  EXPECT_EQ(HalfAt(w, 1), -65504.0f);
  EXPECT_EQ(HalfAt(w, 2), 65504.0f);
  EXPECT_EQ(HalfAt(w, 3), 65504.0f);
  EXPECT_EQ(HalfAt(w, 4), -65504.0f);
  // Infinities are float16 values too: they keep their meaning instead of being clamped.
  EXPECT_EQ(HalfAt(w, 5), inf);
  EXPECT_EQ(HalfAt(w, 6), -inf);
  EXPECT_EQ(HalfAt(w, 8), 0.5f);
  EXPECT_EQ(HalfAt(*m.graph.FindInitializer("b"), 0), -65504.0f);
}

TEST(Fp16, BlockedNodeStaysFloat32WithCastsAroundIt) {
  const Model original = testing::TinyModel();
  Model m = original;
  const PassContext ctx = RunFp16(m, {{"block_nodes", {"matmul"}}});
  EXPECT_EQ(NodeNames(m.graph), (std::vector<std::string>{"x_cast_fp16", "relu", "h_cast_fp32", "matmul",
                                                          "hw_cast_fp16", "add", "y_cast_fp32"}));
  EXPECT_EQ(Casts(m.graph),
            (std::vector<std::string>{"x_cast_fp16:x->x_fp16,to=10", "h_cast_fp32:h->h_fp32,to=1",
                                      "hw_cast_fp16:hw->hw_fp16,to=10", "y_cast_fp32:y_fp16->y,to=1"}));
  EXPECT_EQ(NodeNamed(m.graph, "matmul").inputs, (std::vector<std::string>{"h_fp32", "W"}));
  EXPECT_EQ(NodeNamed(m.graph, "add").inputs, (std::vector<std::string>{"hw_fp16", "b"}));
  EXPECT_EQ(InitDType(m.graph, "W"), DType::kFloat);  // read only by the blocked node
  EXPECT_EQ(InitDType(m.graph, "b"), DType::kFloat16);
  EXPECT_EQ(Counter(ctx, "blocked_nodes"), 1);
  EXPECT_EQ(Counter(ctx, "converted_nodes"), 2);
  EXPECT_EQ(Counter(ctx, "converted_initializers"), 1);
  EXPECT_EQ(Counter(ctx, "inserted_casts"), 4);
  EXPECT_EQ(ctx.details()["blocked"], (json{{"'matmul' (MatMul)", "listed in block_nodes"}}));
  EXPECT_EQ(testing::CheckerAndTypeErrors(m), "");

  Executor before(original), after(m);
  const Tensor x = Ramp({2, 4}, 0.5f, 0.1f);
  EXPECT_LE(RelativeDiff(before.Run({x})[0], after.Run({x})[0]), kFp16Tolerance);
}

TEST(Fp16, BlockOpsAddToTheDefaultListAndDefaultListCanBeDropped) {
  Model a = testing::TinyModel();
  const PassContext ca = RunFp16(a, {{"block_ops", {"Relu"}}});
  EXPECT_EQ(NodeNames(a.graph),
            (std::vector<std::string>{"relu", "h_cast_fp16", "matmul", "add", "y_cast_fp32"}));
  EXPECT_EQ(Counter(ca, "blocked_nodes"), 1);
  EXPECT_EQ(ca.details()["blocked"], (json{{"'relu' (Relu)", "op type is blocked"}}));

  // Max is on the built-in list; default_block_ops=false converts it.
  auto with_max = [] {
    Model m = testing::TinyModel();
    m.graph.nodes[0] = Node{"max", "Max", "", {"x", "x"}, {"h"}, {}, ""};
    return m;
  };
  Model b = with_max();
  RunFp16(b);
  EXPECT_EQ(NodeNames(b.graph),
            (std::vector<std::string>{"max", "h_cast_fp16", "matmul", "add", "y_cast_fp32"}));
  Model c = with_max();
  const PassContext cc = RunFp16(c, {{"default_block_ops", false}});
  EXPECT_EQ(NodeNames(c.graph),
            (std::vector<std::string>{"x_cast_fp16", "max", "matmul", "add", "y_cast_fp32"}));
  EXPECT_EQ(NodeNamed(c.graph, "max").inputs, (std::vector<std::string>{"x_fp16", "x_fp16"}));
  EXPECT_EQ(Counter(cc, "blocked_nodes"), 0);
}

TEST(Fp16, InitializerReadInBothPrecisionsIsKeptTwice) {
  // W feeds the blocked matmul and a second, converted one.
  const Model original = [] {
    Model m = testing::TinyModel();
    m.graph.nodes.push_back(Node{"matmul2", "MatMul", "", {"h", "W"}, {"y2"}, {}, ""});
    m.graph.outputs.push_back(
        {"y2", TypeInfo::Tensor(DType::kFloat, {Dim::Symbolic("N"), Dim::Fixed(3)}), ""});
    return m;
  }();
  Model m = original;
  const PassContext ctx = RunFp16(m, {{"block_nodes", {"matmul"}}});
  ASSERT_EQ(m.graph.initializers.size(), 3u);
  EXPECT_EQ(m.graph.initializers[0].name(), "W");
  EXPECT_EQ(m.graph.initializers[0].dtype(), DType::kFloat);
  EXPECT_EQ(m.graph.initializers[2].name(), "W_fp16");
  EXPECT_EQ(m.graph.initializers[2].dtype(), DType::kFloat16);
  EXPECT_EQ(NodeNamed(m.graph, "matmul").inputs, (std::vector<std::string>{"h_fp32", "W"}));
  EXPECT_EQ(NodeNamed(m.graph, "matmul2").inputs, (std::vector<std::string>{"h", "W_fp16"}));
  EXPECT_EQ(Counter(ctx, "converted_initializers"), 2);  // b in place, W as a copy
  EXPECT_EQ(testing::CheckerAndTypeErrors(m), "");
  Executor before(original), after(m);
  const Tensor x = Ramp({2, 4}, 0.3f, 0.2f);
  const auto want = before.Run({x});
  const auto got = after.Run({x});
  EXPECT_LE(RelativeDiff(want[0], got[0]), kFp16Tolerance);
  EXPECT_LE(RelativeDiff(want[1], got[1]), kFp16Tolerance);
}

TEST(Fp16, NewNamesDoNotCollideWithExistingOnes) {
  Model m = testing::TinyModel();
  // Make "x_fp16" and "x_cast_fp16" taken: the first by a value, the second by a node.
  m.graph.nodes[0].outputs = {"x_fp16"};
  m.graph.nodes[0].name = "x_cast_fp16";
  m.graph.nodes[1].inputs[0] = "x_fp16";
  RunFp16(m);
  EXPECT_EQ(Casts(m.graph)[0], "x_cast_fp16_1:x->x_fp16_1,to=10");
  EXPECT_EQ(testing::CheckerAndTypeErrors(m), "");
}

TEST(Fp16, SecondRunChangesNothing) {
  for (const json& options :
       {json::object(), json{{"block_nodes", {"matmul"}}}, json{{"keep_io_types", false}}}) {
    Model m = testing::TinyModel();
    RunFp16(m, options);
    const std::string once = SerializeModel(m);
    const PassContext ctx = RunFp16(m, options);
    EXPECT_EQ(SerializeModel(m), once) << options.dump();
    EXPECT_EQ(Counter(ctx, "inserted_casts"), 0) << options.dump();
    EXPECT_EQ(Counter(ctx, "converted_nodes"), 0) << options.dump();
  }
}

TEST(Fp16, SameInputGivesIdenticalOutput) {
  Model a = testing::TinyModel(), b = testing::TinyModel();
  RunFp16(a, {{"block_nodes", {"matmul"}}});
  RunFp16(b, {{"block_nodes", {"matmul"}}});
  EXPECT_EQ(SerializeModel(a), SerializeModel(b));
}

// TinyModel with W in a Constant node, as other exporters write weights, plus Constant nodes using
// value_float / value_floats and a ConstantOfShape without a value (float32 zeros).
Model ConstantsModel() {
  Model m = testing::TinyModel();
  Node w{"w_const", "Constant", "", {}, {"W"}, {}, ""};
  w.attributes.push_back(Attribute::FromTensor("value", *m.graph.FindInitializer("W")));
  m.graph.initializers.erase(m.graph.initializers.begin());
  Node scale{"scale_const", "Constant", "", {}, {"scale"}, {Attribute::Float("value_float", 1.5f)}, ""};
  Node shift{"shift_const",
             "Constant",
             "",
             {},
             {"shift"},
             {Attribute::Floats("value_floats", {0.25f, -0.5f, 1e6f})},
             ""};
  Node shape{"shape_const", "Constant", "", {}, {"shape"}, {}, ""};
  shape.attributes.push_back(Attribute::FromTensor("value", Tensor::FromVector<int64_t>({1}, {3})));
  Node zeros{"zeros", "ConstantOfShape", "", {"shape"}, {"z"}, {}, ""};
  std::vector<Node> nodes = {w, scale, shift, shape, zeros};
  for (auto& n : m.graph.nodes) nodes.push_back(n);
  nodes.back().outputs = {"y0"};
  nodes.push_back(Node{"mul", "Mul", "", {"y0", "scale"}, {"y1"}, {}, ""});
  nodes.push_back(Node{"add2", "Add", "", {"y1", "shift"}, {"y2"}, {}, ""});
  nodes.push_back(Node{"add3", "Add", "", {"y2", "z"}, {"y"}, {}, ""});
  m.graph.nodes = nodes;
  return m;
}

TEST(Fp16, ConstantNodesAreConverted) {
  const Model original = ConstantsModel();
  Model m = original;
  const PassContext ctx = RunFp16(m);
  EXPECT_TRUE(m.graph.initializers.size() == 1 && m.graph.initializers[0].name() == "b");
  const Attribute* w = NodeNamed(m.graph, "w_const").FindAttr("value");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->tensors.at(0).dtype(), DType::kFloat16);
  EXPECT_EQ(w->tensors.at(0).dims(), (std::vector<int64_t>{4, 3}));
  // value_float / value_floats become a float16 tensor attribute (scalar / 1-D).
  const Node& scale = NodeNamed(m.graph, "scale_const");
  ASSERT_EQ(scale.attributes.size(), 1u);
  EXPECT_EQ(scale.attributes[0].name, "value");
  EXPECT_EQ(scale.attributes[0].tensors.at(0).dtype(), DType::kFloat16);
  EXPECT_TRUE(scale.attributes[0].tensors.at(0).dims().empty());
  EXPECT_EQ(HalfAt(scale.attributes[0].tensors[0], 0), 1.5f);
  const Tensor& shift = NodeNamed(m.graph, "shift_const").FindAttr("value")->tensors.at(0);
  EXPECT_EQ(shift.dims(), (std::vector<int64_t>{3}));
  EXPECT_EQ(HalfAt(shift, 2), 65504.0f);
  // ConstantOfShape without `value` made float32 zeros; now it says float16 zeros.
  const Attribute* zero = NodeNamed(m.graph, "zeros").FindAttr("value");
  ASSERT_NE(zero, nullptr);
  EXPECT_EQ(zero->tensors.at(0).dtype(), DType::kFloat16);
  EXPECT_EQ(HalfAt(zero->tensors[0], 0), 0.0f);
  // The int64 Constant is untouched.
  EXPECT_EQ(NodeNamed(m.graph, "shape_const").FindAttr("value")->tensors.at(0).dtype(), DType::kInt64);

  EXPECT_EQ(Counter(ctx, "clamped_values"), 1);
  EXPECT_EQ(ctx.details()["clamped"], (json{{"shift", 1}}));
  // Constants w_const, scale_const, shift_const; zeros, relu, matmul, add, mul, add2, add3.
  EXPECT_EQ(Counter(ctx, "converted_nodes"), 10);
  EXPECT_EQ(Counter(ctx, "converted_initializers"), 1);
  EXPECT_EQ(Counter(ctx, "inserted_casts"), 2);
  EXPECT_EQ(testing::CheckerAndTypeErrors(m), "");

  Executor before(original), after(m);
  const Tensor x = Ramp({2, 4}, 0.4f, -0.2f);
  const auto want = before.Run({x});
  const auto got = after.Run({x});
  // Column 2 carries the clamped 1e6 (65504 now); the other columns must agree.
  for (int64_t r = 0; r < 2; ++r) {
    for (int64_t c = 0; c < 2; ++c) {
      EXPECT_NEAR(want[0].data<float>()[r * 3 + c], got[0].data<float>()[r * 3 + c], 4 * kFp16Tolerance);
    }
    EXPECT_EQ(got[0].data<float>()[r * 3 + 2], 65504.0f);
  }
}

TEST(Fp16, ConstantReadInBothPrecisionsGetsATwin) {
  Model m = ConstantsModel();
  RunFp16(m, {{"block_nodes", {"mul"}}});
  // mul (float32) and a converted reader: scale is read by mul only, so it stays float32.
  EXPECT_EQ(NodeNamed(m.graph, "scale_const").attributes.at(0).name, "value_float");
  EXPECT_EQ(NodeNamed(m.graph, "mul").inputs, (std::vector<std::string>{"y0_fp32", "scale"}));

  Model t = ConstantsModel();
  t.graph.nodes.push_back(Node{"mul_w", "Mul", "", {"W", "W"}, {"ww"}, {}, ""});
  t.graph.outputs.push_back({"ww", TypeInfo::Tensor(DType::kFloat, {Dim::Fixed(4), Dim::Fixed(3)}), ""});
  RunFp16(t, {{"block_nodes", {"mul_w"}}});
  // W: float32 for the blocked mul_w, float16 for matmul, as two Constant nodes side by side.
  EXPECT_EQ(NodeNamed(t.graph, "w_const").FindAttr("value")->tensors.at(0).dtype(), DType::kFloat);
  const Node& twin = NodeNamed(t.graph, "w_const_fp16");
  EXPECT_EQ(twin.outputs, (std::vector<std::string>{"W_fp16"}));
  EXPECT_EQ(twin.FindAttr("value")->tensors.at(0).dtype(), DType::kFloat16);
  EXPECT_EQ(NodeNamed(t.graph, "matmul").inputs, (std::vector<std::string>{"h", "W_fp16"}));
  EXPECT_EQ(NodeNamed(t.graph, "mul_w").inputs, (std::vector<std::string>{"W", "W"}));
  // Right after the original (which follows the Cast of the graph input).
  EXPECT_EQ(NodeNames(t.graph)[1], "w_const");
  EXPECT_EQ(NodeNames(t.graph)[2], "w_const_fp16");
  EXPECT_EQ(testing::CheckerAndTypeErrors(t), "");
}

// x -> Resize(roi, scales) -> y, opset 13, nearest upsampling x2.
Model ResizeModel() {
  Model m;
  m.ir_version = 8;
  m.opset_imports = {{"", 13}};
  Graph& g = m.graph;
  g.name = "resize";
  g.inputs.push_back(
      {"x", TypeInfo::Tensor(DType::kFloat, {Dim::Fixed(1), Dim::Fixed(1), Dim::Fixed(2), Dim::Fixed(3)}),
       ""});
  g.outputs.push_back(
      {"y", TypeInfo::Tensor(DType::kFloat, {Dim::Fixed(1), Dim::Fixed(1), Dim::Fixed(4), Dim::Fixed(6)}),
       ""});
  g.initializers.push_back(Tensor::FromVector<float>({4}, {1, 1, 2, 2}, "scales"));
  g.initializers.push_back(Tensor::FromVector<float>({1}, {0.75f}, "k"));
  g.nodes.push_back(Node{"mul", "Mul", "", {"x", "k"}, {"xk"}, {}, ""});
  Node r{"resize", "Resize", "", {"xk", "", "scales"}, {"y"}, {}, ""};
  r.attributes.push_back(Attribute::String("mode", "linear"));
  g.nodes.push_back(r);
  return m;
}

TEST(Fp16, ResizeKeepsFloat32ScalesAndIsBlockedByDefault) {
  const Model original = ResizeModel();
  Model blocked = original;
  const PassContext cb = RunFp16(blocked);
  EXPECT_EQ(NodeNames(blocked.graph),
            (std::vector<std::string>{"x_cast_fp16", "mul", "xk_cast_fp32", "resize"}));
  EXPECT_EQ(NodeNamed(blocked.graph, "resize").inputs, (std::vector<std::string>{"xk_fp32", "", "scales"}));
  EXPECT_EQ(InitDType(blocked.graph, "scales"), DType::kFloat);
  EXPECT_EQ(InitDType(blocked.graph, "k"), DType::kFloat16);
  EXPECT_EQ(cb.details()["blocked"], (json{{"'resize' (Resize)", "op type is blocked"}}));
  EXPECT_EQ(testing::CheckerAndTypeErrors(blocked), "");

  Model converted = original;
  const PassContext cc = RunFp16(converted, {{"default_block_ops", false}});
  EXPECT_EQ(NodeNames(converted.graph),
            (std::vector<std::string>{"x_cast_fp16", "mul", "resize", "y_cast_fp32"}));
  // `scales` is tensor(float) in the schema: it stays float32 next to the float16 data input.
  EXPECT_EQ(NodeNamed(converted.graph, "resize").inputs, (std::vector<std::string>{"xk", "", "scales"}));
  EXPECT_EQ(NodeNamed(converted.graph, "resize").outputs, (std::vector<std::string>{"y_fp16"}));
  EXPECT_EQ(InitDType(converted.graph, "scales"), DType::kFloat);
  EXPECT_EQ(Counter(cc, "converted_initializers"), 1);
  EXPECT_EQ(testing::CheckerAndTypeErrors(converted), "");

  Executor ref(original), b(blocked), c(converted);
  const Tensor x = Tensor::FromVector<float>({1, 1, 2, 3}, {1.0f, -2.0f, 3.5f, 0.1f, 7.25f, -0.3f});
  const auto want = ref.Run({x});
  EXPECT_LE(RelativeDiff(want[0], b.Run({x})[0]), kFp16Tolerance);
  EXPECT_LE(RelativeDiff(want[0], c.Run({x})[0]), kFp16Tolerance);
}

TEST(Fp16, CastToFloatBecomesCastToFloat16) {
  // d (float64) -> Cast(to=FLOAT) -> Add with the float16 result of the tiny model.
  Model m = testing::TinyModel();
  m.graph.inputs.push_back({"d", TypeInfo::Tensor(DType::kDouble, {Dim::Fixed(3)}), ""});
  m.graph.nodes.push_back(Node{"cast", "Cast", "", {"d"}, {"df"}, {Attribute::Int("to", 1)}, ""});
  m.graph.nodes[2].outputs = {"y0"};
  m.graph.nodes.push_back(Node{"add_d", "Add", "", {"y0", "df"}, {"y"}, {}, ""});
  const Model original = m;
  RunFp16(m);
  EXPECT_EQ(NodeNamed(m.graph, "cast").AttrInt("to", 0), static_cast<int64_t>(DType::kFloat16));
  EXPECT_EQ(NodeNamed(m.graph, "add_d").inputs, (std::vector<std::string>{"y0", "df"}));
  EXPECT_EQ(NodeNamed(m.graph, "add_d").outputs, (std::vector<std::string>{"y_fp16"}));
  EXPECT_EQ(testing::CheckerAndTypeErrors(m), "");
  Executor before(original), after(m);
  const Tensor x = Ramp({2, 4}, 0.5f, 0.0f);
  const Tensor d = Tensor::FromVector<double>({3}, {1.0, -4.25, 0.125});
  EXPECT_LE(RelativeDiff(before.Run({x, d})[0], after.Run({x, d})[0]), kFp16Tolerance);
}

TEST(Fp16, ShapeArithmeticStaysFloat32) {
  // size = Cast<int64>(Cast<float>(Shape(x)) * 2 + 1): float16 would turn 4097 into 4096.
  Model m = testing::TinyModel();
  m.graph.initializers.push_back(Tensor::FromVector<float>({}, {2.0f}, "two"));
  m.graph.initializers.push_back(Tensor::FromVector<float>({}, {1.0f}, "one"));
  m.graph.nodes.push_back(Node{"shape", "Shape", "", {"x"}, {"s"}, {}, ""});
  m.graph.nodes.push_back(Node{"to_float", "Cast", "", {"s"}, {"sf"}, {Attribute::Int("to", 1)}, ""});
  m.graph.nodes.push_back(Node{"scale", "Mul", "", {"sf", "two"}, {"sm"}, {}, ""});
  m.graph.nodes.push_back(Node{"shift", "Add", "", {"sm", "one"}, {"sa"}, {}, ""});
  m.graph.nodes.push_back(Node{"to_int", "Cast", "", {"sa"}, {"size"}, {Attribute::Int("to", 7)}, ""});
  m.graph.outputs.push_back({"size", TypeInfo::Tensor(DType::kInt64, {Dim::Fixed(2)}), ""});
  const PassContext ctx = RunFp16(m);
  EXPECT_EQ(NodeNamed(m.graph, "to_float").AttrInt("to", 0), 1);
  EXPECT_EQ(NodeNamed(m.graph, "scale").inputs, (std::vector<std::string>{"sf", "two"}));
  EXPECT_EQ(InitDType(m.graph, "two"), DType::kFloat);
  EXPECT_EQ(InitDType(m.graph, "one"), DType::kFloat);
  EXPECT_EQ(Casts(m.graph),
            (std::vector<std::string>{"x_cast_fp16:x->x_fp16,to=10", "y_cast_fp32:y_fp16->y,to=1",
                                      "to_float:s->sf,to=1", "to_int:sa->size,to=7"}));
  EXPECT_EQ(ctx.details()["blocked"].size(), 4u);
  EXPECT_EQ(ctx.details()["blocked"]["'shift' (Add)"], "computes from integers (shape arithmetic)");
  EXPECT_EQ(testing::CheckerAndTypeErrors(m), "");
  Executor after(m);
  const auto out = after.Run({Tensor(DType::kFloat, {4097, 4})});
  ASSERT_EQ(out[1].dtype(), DType::kInt64);
  EXPECT_EQ(out[1].data<int64_t>()[0], 8195);
  EXPECT_EQ(out[1].data<int64_t>()[1], 9);
}

TEST(Fp16, DataMovementBetweenFloat32NodesStaysFloat32) {
  // relu (blocked) -> Transpose -> y: nothing to gain from float16, so no Cast at all.
  Model m = testing::TinyModel();
  m.graph.nodes.resize(1);
  Node t{"transpose", "Transpose", "", {"h"}, {"y"}, {Attribute::Ints("perm", {1, 0})}, ""};
  m.graph.nodes.push_back(t);
  m.graph.outputs[0].type = TypeInfo::Tensor(DType::kFloat, {Dim::Fixed(4), Dim::Symbolic("N")});
  m.graph.initializers.clear();
  const PassContext ctx = RunFp16(m, {{"block_ops", {"Relu"}}});
  EXPECT_EQ(NodeNames(m.graph), (std::vector<std::string>{"relu", "transpose"}));
  EXPECT_EQ(Counter(ctx, "inserted_casts"), 0);
  EXPECT_EQ(Counter(ctx, "converted_nodes"), 0);
}

TEST(Fp16, CustomDomainAndUntypedNodesStayFloat32) {
  Model m = testing::TinyModel();
  m.opset_imports.push_back({"com.example", 1});
  // relu -> com.example.Scale -> (output type unknown to inference) -> Sigmoid -> matmul
  m.graph.nodes.insert(m.graph.nodes.begin() + 1,
                       Node{"custom", "Scale", "com.example", {"h"}, {"hs"}, {}, ""});
  m.graph.nodes.insert(m.graph.nodes.begin() + 2, Node{"sig", "Sigmoid", "", {"hs"}, {"hg"}, {}, ""});
  m.graph.nodes[3].inputs[0] = "hg";
  // Declared: the Sigmoid output. Unknown: the custom op's output, so the Sigmoid reading it is left alone.
  m.graph.value_info.push_back(
      {"hg", TypeInfo::Tensor(DType::kFloat, {Dim::Symbolic("N"), Dim::Fixed(4)}), ""});
  const PassContext ctx = RunFp16(m);
  EXPECT_EQ(NodeNames(m.graph),
            (std::vector<std::string>{"x_cast_fp16", "relu", "h_cast_fp32", "custom", "sig", "hg_cast_fp16",
                                      "matmul", "add", "y_cast_fp32"}));
  EXPECT_EQ(ctx.details()["blocked"],
            (json{{"'custom' (com.example::Scale)", "domain 'com.example' is not converted"},
                  {"'sig' (Sigmoid)", "type of 'hs' is unknown"}}));
  EXPECT_EQ(Counter(ctx, "blocked_nodes"), 2);
  const CheckResult check = [&] {
    testing::TempDir dir;
    SaveModel(m, dir / "m.onnx");
    return CheckModelFile(dir / "m.onnx");
  }();
  EXPECT_TRUE(check.ok) << check.message;
}

// TinyModel plus an If whose branches read h (made by relu) from the enclosing graph.
Model IfModel() {
  Model m = testing::TinyModel();
  Graph then_g;
  then_g.name = "then";
  then_g.nodes.push_back(Node{"inner_then", "Neg", "", {"h"}, {"t_out"}, {}, ""});
  then_g.outputs.push_back(
      {"t_out", TypeInfo::Tensor(DType::kFloat, {Dim::Symbolic("N"), Dim::Fixed(4)}), ""});
  Graph else_g;
  else_g.name = "else";
  else_g.nodes.push_back(Node{"inner_else", "Identity", "", {"h"}, {"e_out"}, {}, ""});
  else_g.outputs.push_back(
      {"e_out", TypeInfo::Tensor(DType::kFloat, {Dim::Symbolic("N"), Dim::Fixed(4)}), ""});
  Node cond{"cond", "Constant", "", {}, {"c"}, {}, ""};
  cond.attributes.push_back(Attribute::FromTensor("value", Tensor::FromVector<bool>({}, {true})));
  Node iff{"if", "If", "", {"c"}, {"z"}, {}, ""};
  Attribute then_attr;
  then_attr.name = "then_branch";
  then_attr.type = AttrType::kGraph;
  then_attr.graphs.push_back(then_g);
  Attribute else_attr;
  else_attr.name = "else_branch";
  else_attr.type = AttrType::kGraph;
  else_attr.graphs.push_back(else_g);
  iff.attributes = {then_attr, else_attr};
  m.graph.nodes.insert(m.graph.nodes.begin() + 1, cond);
  m.graph.nodes.insert(m.graph.nodes.begin() + 2, iff);
  m.graph.outputs.push_back({"z", TypeInfo::Tensor(DType::kFloat, {Dim::Symbolic("N"), Dim::Fixed(4)}), ""});
  return m;
}

TEST(Fp16, IfBodiesAreConvertedAndTheirBoundaryStaysFloat32) {
  Model m = IfModel();
  const PassContext ctx = RunFp16(m);
  // The bodies read h (float16 now) directly; no Cast around the If, whose output z stays float32.
  EXPECT_EQ(NodeNames(m.graph),
            (std::vector<std::string>{"x_cast_fp16", "relu", "cond", "if", "matmul", "add", "y_cast_fp32"}));
  const Node& iff = NodeNamed(m.graph, "if");
  EXPECT_EQ(iff.outputs, (std::vector<std::string>{"z"}));
  const Graph& then_g = iff.FindAttr("then_branch")->graphs.at(0);
  const Graph& else_g = iff.FindAttr("else_branch")->graphs.at(0);
  EXPECT_EQ(then_g.nodes.at(0).inputs, (std::vector<std::string>{"h"}));
  EXPECT_EQ(then_g.nodes.at(0).outputs, (std::vector<std::string>{"t_out_fp16"}));
  EXPECT_EQ(Casts(then_g), (std::vector<std::string>{"t_out_cast_fp32:t_out_fp16->t_out,to=1"}));
  EXPECT_EQ(Casts(else_g), (std::vector<std::string>{"e_out_cast_fp32:e_out_fp16->e_out,to=1"}));
  EXPECT_EQ(then_g.outputs.at(0).name, "t_out");
  EXPECT_EQ(then_g.outputs.at(0).type.elem_type, DType::kFloat);
  EXPECT_EQ(NodeNamed(m.graph, "matmul").inputs, (std::vector<std::string>{"h", "W"}));
  EXPECT_FALSE(ctx.details().contains("blocked")) << ctx.details().dump();
  EXPECT_EQ(Counter(ctx, "converted_subgraphs"), 2);
  EXPECT_EQ(m.graph.outputs[1].type.elem_type, DType::kFloat);
  EXPECT_EQ(testing::CheckerAndTypeErrors(m), "");
}

TEST(Fp16, IfBodyReadingAGraphInputWithoutKeepIoTypes) {
  Model m = IfModel();
  for (auto& a : m.graph.nodes[2].attributes) a.graphs[0].nodes[0].inputs = {"x"};
  RunFp16(m, {{"keep_io_types", false}});
  EXPECT_EQ(m.graph.inputs[0].type.elem_type, DType::kFloat16);
  // The bodies read the float16 input as it is; z comes from the If, whose outputs stay float32, so a Cast
  // makes the float16 graph output and the If writes under a new name.
  EXPECT_EQ(Casts(m.graph), (std::vector<std::string>{"z_cast_fp16:z_fp32->z,to=10"}));
  EXPECT_EQ(NodeNamed(m.graph, "if").FindAttr("else_branch")->graphs.at(0).nodes.at(0).inputs,
            (std::vector<std::string>{"x"}));
  EXPECT_EQ(NodeNamed(m.graph, "if").outputs, (std::vector<std::string>{"z_fp32"}));
  EXPECT_EQ(m.graph.outputs[1].type.elem_type, DType::kFloat16);
  EXPECT_EQ(testing::CheckerAndTypeErrors(m), "");
}

TEST(Fp16, BlockNodesKeepsAnIfAndItsBodiesFloat32) {
  Model m = IfModel();
  const PassContext ctx = RunFp16(m, {{"block_nodes", {"if"}}});
  EXPECT_EQ(Casts(m.graph)[1], "h_cast_fp32:h->h_fp32,to=1");
  const Node& iff = NodeNamed(m.graph, "if");
  EXPECT_EQ(iff.FindAttr("then_branch")->graphs.at(0).nodes.at(0).inputs, (std::vector<std::string>{"h_fp32"}));
  EXPECT_TRUE(Casts(iff.FindAttr("then_branch")->graphs.at(0)).empty());
  EXPECT_EQ(ctx.details()["blocked"], (json{{"'if' (If)", "listed in block_nodes"}}));
  EXPECT_EQ(testing::CheckerAndTypeErrors(m), "");
}

// x float32[1,4,16] with values in [-1, 1], deterministic.
Tensor IfModelInput() {
  std::vector<float> v(64);
  for (size_t i = 0; i < v.size(); ++i) v[i] = std::sin(0.61f * static_cast<float>(i));
  return Tensor::FromVector<float>({1, 4, 16}, v);
}

// Conv -> LSTM over 16 steps (then) or MatMul -> mean (else) with float16 weights, the LSTM computing in
// float32. Outputs are below 0.5, where one float16 rounding is up to 2.4e-4; measured in ONNX Runtime
// 1.30: 3.1e-5 (then) and 3.7e-5 (else) largest absolute difference. Two roundings' worth.
constexpr double kFp16IfLstmTolerance = 5e-4;

TEST(Fp16, ConvAndMatMulInIfBranchesBecomeFloat16AndLstmWeightsAreStoredFloat16) {
  const Model original = testing::IfConvLstmModel();
  Model m = original;
  const PassContext ctx = RunFp16(m);

  // Main graph: the outer Conv weight and bias are float16 now; x reaches both bodies as one float16 Cast.
  EXPECT_EQ(NodeNames(m.graph), (std::vector<std::string>{"x_cast_fp16", "if"}));
  EXPECT_EQ(InitDType(m.graph, "Wc"), DType::kFloat16);
  EXPECT_EQ(InitDType(m.graph, "bc"), DType::kFloat16);
  EXPECT_EQ(m.graph.outputs[0].type.elem_type, DType::kFloat);
  const Node& iff = NodeNamed(m.graph, "if");
  EXPECT_EQ(iff.outputs, (std::vector<std::string>{"z"}));

  // then: Conv in float16; LSTM stays float32 (ONNX Runtime has no float16 LSTM), its W, R and B stored in
  // float16 behind Casts at the start of the body.
  const Graph& then_g = iff.FindAttr("then_branch")->graphs.at(0);
  EXPECT_EQ(NodeNames(then_g), (std::vector<std::string>{"W_lstm_cast_fp32", "R_lstm_cast_fp32", "B_lstm_cast_fp32",
                                                         "conv", "then_transpose", "seq_cast_fp32", "lstm"}));
  EXPECT_EQ(NodeNamed(then_g, "conv").inputs, (std::vector<std::string>{"x_fp16", "Wc", "bc"}));
  EXPECT_EQ(NodeNamed(then_g, "lstm").inputs,
            (std::vector<std::string>{"seq_fp32", "W_lstm_fp32", "R_lstm_fp32", "B_lstm_fp32"}));
  EXPECT_EQ(InitDType(then_g, "W_lstm"), DType::kFloat16);
  EXPECT_EQ(InitDType(then_g, "R_lstm"), DType::kFloat16);
  EXPECT_EQ(InitDType(then_g, "B_lstm"), DType::kFloat16);
  EXPECT_EQ(then_g.outputs.at(0).name, "lstm_h");
  EXPECT_EQ(then_g.outputs.at(0).type.elem_type, DType::kFloat);

  // else: Transpose, MatMul and ReduceMean in float16; the branch output goes back to float32.
  const Graph& else_g = iff.FindAttr("else_branch")->graphs.at(0);
  EXPECT_EQ(NodeNamed(else_g, "else_transpose").inputs, (std::vector<std::string>{"x_fp16"}));
  EXPECT_EQ(InitDType(else_g, "Wm"), DType::kFloat16);
  EXPECT_EQ(Casts(else_g), (std::vector<std::string>{"else_out_cast_fp32:else_out_fp16->else_out,to=1"}));

  EXPECT_EQ(ctx.details()["blocked"], (json{{"'lstm' (LSTM)", "op type is blocked"}}));
  EXPECT_EQ(Counter(ctx, "converted_subgraphs"), 2);
  EXPECT_EQ(Counter(ctx, "float16_weights_cast_to_float32"), 3);
  EXPECT_EQ(Counter(ctx, "converted_initializers"), 6);  // Wc, bc, W_lstm, R_lstm, B_lstm, Wm
  EXPECT_EQ(testing::CheckerAndTypeErrors(m), "");

  // Both branches in ONNX Runtime (our executor runs no If or LSTM) against the float32 model.
  for (const bool flag : {true, false}) {
    const std::vector<Tensor> in{IfModelInput(), Tensor::FromVector<bool>({}, {flag})};
    const auto ref = testing::RunModelInOrt(original, in);
    const auto got = testing::RunModelInOrt(m, in);
    ASSERT_EQ(ref.size(), 1u);
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].dtype(), DType::kFloat);
    EXPECT_LE(RelativeDiff(ref[0], got[0]), kFp16IfLstmTolerance) << "flag " << flag;
    EXPECT_GT(std::fabs(ref[0].data<float>()[0]), 0.01) << "the branch computes something";
  }
}

TEST(Fp16, OldIrVersionListsNewInitializersAsGraphInputs) {
  // Before IR version 4 every initializer is also a graph input.
  Model m = testing::TinyModel();
  m.ir_version = 3;
  m.opset_imports = {{"", 9}};
  m.graph.inputs.push_back({"W", TypeInfo::Tensor(DType::kFloat, {Dim::Fixed(4), Dim::Fixed(3)}), ""});
  m.graph.inputs.push_back({"b", TypeInfo::Tensor(DType::kFloat, {Dim::Fixed(3)}), ""});
  m.graph.nodes.push_back(Node{"matmul2", "MatMul", "", {"h", "W"}, {"y2"}, {}, ""});
  m.graph.outputs.push_back({"y2", TypeInfo::Tensor(DType::kFloat, {Dim::Symbolic("N"), Dim::Fixed(3)}), ""});
  RunFp16(m, {{"block_nodes", {"matmul"}}});
  ASSERT_EQ(m.graph.inputs.size(), 4u);
  EXPECT_EQ(m.graph.inputs[1].name, "W");
  EXPECT_EQ(m.graph.inputs[1].type.elem_type, DType::kFloat);
  EXPECT_EQ(m.graph.inputs[2].name, "b");
  EXPECT_EQ(m.graph.inputs[2].type.elem_type, DType::kFloat16);  // converted in place
  EXPECT_EQ(m.graph.inputs[3].name, "W_fp16");
  EXPECT_EQ(m.graph.inputs[3].type.elem_type, DType::kFloat16);
  EXPECT_EQ(InitDType(m.graph, "W_fp16"), DType::kFloat16);
  EXPECT_EQ(testing::CheckerAndTypeErrors(m), "");
}

TEST(Fp16, TypeParameterWithoutFloat16StaysFloat32) {
  // Range's T (opset 11) has no float16, so Range stays float32 even without the block list, and the
  // float16 graph input reaches it through a Cast.
  Model m;
  m.ir_version = 8;
  m.opset_imports = {{"", 13}};
  m.graph.name = "range";
  m.graph.inputs.push_back({"limit", TypeInfo::Tensor(DType::kFloat, {}), ""});
  m.graph.outputs.push_back({"y", TypeInfo::Tensor(DType::kFloat, {Dim::Symbolic("n")}), ""});
  m.graph.initializers.push_back(Tensor::FromVector<float>({}, {0.5f}, "start"));
  m.graph.initializers.push_back(Tensor::FromVector<float>({}, {1.5f}, "delta"));
  m.graph.nodes.push_back(Node{"range", "Range", "", {"start", "limit", "delta"}, {"r"}, {}, ""});
  m.graph.nodes.push_back(Node{"neg", "Neg", "", {"r"}, {"y"}, {}, ""});
  const PassContext ctx = RunFp16(m, {{"keep_io_types", false}, {"default_block_ops", false}});
  EXPECT_EQ(Casts(m.graph), (std::vector<std::string>{"limit_cast_fp32:limit->limit_fp32,to=1",
                                                      "r_cast_fp16:r->r_fp16,to=10"}));
  EXPECT_EQ(NodeNamed(m.graph, "range").inputs, (std::vector<std::string>{"start", "limit_fp32", "delta"}));
  EXPECT_EQ(InitDType(m.graph, "start"), DType::kFloat);
  EXPECT_EQ(Counter(ctx, "blocked_nodes"), 0);
  EXPECT_EQ(Counter(ctx, "converted_nodes"), 1);
  EXPECT_EQ(testing::CheckerAndTypeErrors(m), "");
}

TEST(Fp16, LayerNormalizationStatisticsStayFloat32) {
  // LayerNormalization's Y follows X (T), but Mean and InvStdDev are of type U: float or bfloat16 only.
  Model m;
  m.ir_version = 8;
  m.opset_imports = {{"", 17}};
  m.graph.name = "ln";
  m.graph.inputs.push_back({"x", TypeInfo::Tensor(DType::kFloat, {Dim::Fixed(2), Dim::Fixed(4)}), ""});
  for (const char* out : {"y", "mean", "inv"}) {
    m.graph.outputs.push_back(
        {out, TypeInfo::Tensor(DType::kFloat, {Dim::Fixed(2), Dim::Fixed(out[0] == 'y' ? 4 : 1)}), ""});
  }
  m.graph.initializers.push_back(Tensor::FromVector<float>({4}, {1.0f, 0.5f, 2.0f, -1.0f}, "scale"));
  m.graph.initializers.push_back(Tensor::FromVector<float>({4}, {0.0f, 0.1f, -0.2f, 0.3f}, "bias"));
  m.graph.nodes.push_back(
      Node{"ln", "LayerNormalization", "", {"x", "scale", "bias"}, {"y", "mean", "inv"}, {}, ""});
  const Model original = m;
  RunFp16(m);
  EXPECT_EQ(NodeNamed(m.graph, "ln").inputs, (std::vector<std::string>{"x_fp16", "scale", "bias"}));
  EXPECT_EQ(NodeNamed(m.graph, "ln").outputs, (std::vector<std::string>{"y_fp16", "mean", "inv"}));
  EXPECT_EQ(Casts(m.graph),
            (std::vector<std::string>{"x_cast_fp16:x->x_fp16,to=10", "y_cast_fp32:y_fp16->y,to=1"}));
  EXPECT_EQ(InitDType(m.graph, "scale"), DType::kFloat16);
  EXPECT_EQ(testing::CheckerAndTypeErrors(m), "");
  Executor before(original), after(m);
  const Tensor x = Tensor::FromVector<float>({2, 4}, {1, 2, 3, 4, -1, 0.5f, 8, 2});
  const auto want = before.Run({x});
  const auto got = after.Run({x});
  for (size_t k = 0; k < 3; ++k) EXPECT_LE(RelativeDiff(want[k], got[k]), kFp16Tolerance) << k;
}

TEST(Fp16, ValueInfoFollowsTheConversion) {
  Model m = testing::TinyModel();
  m.graph.value_info.push_back(
      {"h", TypeInfo::Tensor(DType::kFloat, {Dim::Symbolic("N"), Dim::Fixed(4)}), ""});
  m.graph.value_info.push_back(
      {"hw", TypeInfo::Tensor(DType::kFloat, {Dim::Symbolic("N"), Dim::Fixed(3)}), ""});
  RunFp16(m, {{"block_nodes", {"add"}}});
  EXPECT_EQ(m.graph.value_info[0].type.elem_type, DType::kFloat16);
  EXPECT_EQ(m.graph.value_info[1].type.elem_type, DType::kFloat16);
  EXPECT_EQ(testing::CheckerAndTypeErrors(m), "");
}

TEST(Fp16, OldOpsetWithoutNumericCastIsLeftUnchanged) {
  Model m = testing::TinyModel();
  m.opset_imports = {{"", 5}};
  m.graph.nodes.resize(1);  // Relu only (MatMul needs opset 9 for float16 anyway)
  m.graph.nodes[0].outputs = {"y"};
  m.graph.outputs[0].type = TypeInfo::Tensor(DType::kFloat, {Dim::Symbolic("N"), Dim::Fixed(4)});
  const Model before = m;
  const PassContext ctx = RunFp16(m);
  EXPECT_EQ(SerializeModel(m), SerializeModel(before));
  EXPECT_EQ(Counter(ctx, "inserted_casts"), 0);
  ASSERT_EQ(ctx.notes().size(), 1u);
  EXPECT_NE(ctx.notes()[0].find("opset 5"), std::string::npos) << ctx.notes()[0];
}

TEST(Fp16, NoFloat32MeansNoChange) {
  Model m;
  m.ir_version = 8;
  m.opset_imports = {{"", 17}};
  m.graph.name = "int";
  m.graph.inputs.push_back({"a", TypeInfo::Tensor(DType::kInt64, {Dim::Fixed(2)}), ""});
  m.graph.outputs.push_back({"b", TypeInfo::Tensor(DType::kInt64, {Dim::Fixed(2)}), ""});
  m.graph.nodes.push_back(Node{"neg", "Neg", "", {"a"}, {"b"}, {}, ""});
  const Model before = m;
  const PassContext ctx = RunFp16(m);
  EXPECT_EQ(SerializeModel(m), SerializeModel(before));
  EXPECT_EQ(Counter(ctx, "converted_nodes"), 0);
  EXPECT_EQ(Counter(ctx, "blocked_nodes"), 0);
}

// A small CNN (Conv, BatchNormalization, Relu, MaxPool, GlobalAveragePool, Flatten, Gemm, Softmax)
// against its float32 original through the executor.
TEST(Fp16, SmallCnnMatchesFloat32WithinTolerance) {
  Model m;
  m.ir_version = 8;
  m.opset_imports = {{"", 17}};
  Graph& g = m.graph;
  g.name = "cnn";
  g.inputs.push_back(
      {"x",
       TypeInfo::Tensor(DType::kFloat, {Dim::Symbolic("N"), Dim::Fixed(2), Dim::Fixed(6), Dim::Fixed(6)}),
       ""});
  g.outputs.push_back({"p", TypeInfo::Tensor(DType::kFloat, {Dim::Symbolic("N"), Dim::Fixed(5)}), ""});
  g.initializers.push_back(Ramp({4, 2, 3, 3}, 0.03f, 0.01f));
  g.initializers.back().set_name("cw");
  g.initializers.push_back(Ramp({4}, 0.1f, 0.0f));
  g.initializers.back().set_name("cb");
  for (const char* name : {"scale", "bias", "mean", "var"}) {
    g.initializers.push_back(Tensor::FromVector<float>({4}, {0.9f, 1.1f, 0.5f, 1.3f}, name));
  }
  g.initializers.push_back(Ramp({5, 4}, 0.07f, -0.2f));
  g.initializers.back().set_name("fw");
  g.initializers.push_back(Tensor::FromVector<float>({5}, {0.1f, -0.1f, 0.2f, 0, 0.3f}, "fb"));
  Node conv{"conv", "Conv", "", {"x", "cw", "cb"}, {"c"}, {Attribute::Ints("pads", {1, 1, 1, 1})}, ""};
  Node mp{"pool", "MaxPool", "",
          {"r"},  {"mp"},    {Attribute::Ints("kernel_shape", {2, 2}), Attribute::Ints("strides", {2, 2})},
          ""};
  Node gemm{"gemm", "Gemm", "", {"f", "fw", "fb"}, {"logits"}, {Attribute::Int("transB", 1)}, ""};
  g.nodes = {conv,
             Node{"bn", "BatchNormalization", "", {"c", "scale", "bias", "mean", "var"}, {"bn"}, {}, ""},
             Node{"relu", "Relu", "", {"bn"}, {"r"}, {}, ""},
             mp,
             Node{"gap", "GlobalAveragePool", "", {"mp"}, {"gap"}, {}, ""},
             Node{"flat", "Flatten", "", {"gap"}, {"f"}, {}, ""},
             gemm,
             Node{"softmax", "Softmax", "", {"logits"}, {"p"}, {}, ""}};
  const Model original = m;
  const PassContext ctx = RunFp16(m);
  EXPECT_EQ(Counter(ctx, "converted_nodes"), 8);
  EXPECT_EQ(Counter(ctx, "converted_initializers"), 8);
  EXPECT_EQ(Counter(ctx, "inserted_casts"), 2);
  EXPECT_EQ(testing::CheckerAndTypeErrors(m), "");
  Executor before(original), after(m);
  const Tensor x = Ramp({3, 2, 6, 6}, 0.11f, 0.05f);
  const auto want = before.Run({x});
  const auto got = after.Run({x});
  const double diff = RelativeDiff(want[0], got[0]);
  EXPECT_LE(diff, kFp16Tolerance);
  EXPECT_GT(diff, 0.0);
}

}  // namespace
}  // namespace compress
