#include <gtest/gtest.h>

#include "compress/exec/executor.h"
#include "compress/io/onnx_io.h"
#include "compress/ir/verify.h"
#include "compress/passes/pass.h"
#include "support/test_support.h"

namespace compress {
namespace {

using nlohmann::json;

PassContext Compact(Model& m, bool keep_node_names, bool keep_initializer_names = false,
                    bool keep_default_attributes = false) {
  const PassInfo* info = FindPass("compact_names");
  EXPECT_NE(info, nullptr);
  const json options = ValidatePassOptions(*info,
                                           {{"keep_node_names", keep_node_names},
                                            {"keep_initializer_names", keep_initializer_names},
                                            {"keep_default_attributes", keep_default_attributes}},
                                           "test");
  PassContext ctx;
  info->create(options)->Run(m, ctx);
  VerifyModel(m);
  return ctx;
}

// x -> Relu "relu_node" -> "a_long_intermediate_name" -> MatMul(W) -> "another_long_name" -> Add(b) -> y
Model NamedModel() {
  Model m = testing::TinyModel();
  for (auto& n : m.graph.nodes) n.name = n.op_type + "_node";
  for (auto& n : m.graph.nodes) {
    for (auto& i : n.inputs) {
      if (i != "x" && i != "W" && i != "b") i = "long_" + i + "_output_0";
    }
    for (auto& o : n.outputs) {
      if (o != "y") o = "long_" + o + "_output_0";
    }
  }
  return m;
}

TEST(CompactNames, ShortensIntermediateValuesAndKeepsTheInterface) {
  Model m = NamedModel();
  const Model before = m;
  const PassContext ctx = Compact(m, false);
  const auto& g = m.graph;
  ASSERT_EQ(g.nodes.size(), 3u);
  EXPECT_EQ(g.nodes[0].inputs, std::vector<std::string>({"x"}));
  EXPECT_EQ(g.nodes[0].outputs, std::vector<std::string>({"t0"}));
  EXPECT_EQ(g.nodes[1].inputs, std::vector<std::string>({"t0", "W"}));
  EXPECT_EQ(g.nodes[1].outputs, std::vector<std::string>({"t1"}));
  EXPECT_EQ(g.nodes[2].inputs, std::vector<std::string>({"t1", "b"}));
  EXPECT_EQ(g.nodes[2].outputs, std::vector<std::string>({"y"}));
  for (const auto& n : g.nodes) EXPECT_TRUE(n.name.empty());
  EXPECT_EQ(ctx.counters().at("renamed_values"), 2);
  EXPECT_EQ(ctx.counters().at("cleared_node_names"), 3);
  // Computation unchanged: bit-identical outputs.
  const Tensor x = Tensor::FromVector<float>({2, 4}, {1, -2, 3, -4, 0.5f, 6, -7, 8});
  Executor a(before), b(m);
  EXPECT_TRUE(a.Run({x})[0].SameContent(b.Run({x})[0]));
}

TEST(CompactNames, KeepNodeNamesAndSubgraphCaptures) {
  Model m = NamedModel();
  // An If whose branches read the intermediate value from the outer scope.
  Graph then_branch, else_branch;
  for (Graph* br : {&then_branch, &else_branch}) {
    br->name = br == &then_branch ? "then" : "else";
    Node id;
    id.op_type = "Identity";
    id.inputs = {"long_Relu_y_output_0"};
    id.outputs = {br->name + "_out"};
    br->nodes = {id};
    br->outputs.push_back({id.outputs[0], TypeInfo::Tensor(DType::kFloat, {Dim::Symbolic("N"), Dim::Fixed(4)}), ""});
  }
  // Find the Relu output name as NamedModel made it.
  const std::string relu_out = m.graph.nodes[0].outputs[0];
  for (Graph* br : {&then_branch, &else_branch}) br->nodes[0].inputs = {relu_out};
  m.graph.initializers.push_back(Tensor::FromVector<bool>({}, {true}, "cond"));
  Node iff;
  iff.name = "if_node";
  iff.op_type = "If";
  iff.inputs = {"cond"};
  iff.outputs = {"z"};
  Attribute a_then, a_else;
  a_then.name = "then_branch";
  a_then.type = AttrType::kGraph;
  a_then.graphs = {then_branch};
  a_else.name = "else_branch";
  a_else.type = AttrType::kGraph;
  a_else.graphs = {else_branch};
  iff.attributes = {a_then, a_else};
  m.graph.nodes.push_back(iff);
  m.graph.outputs.push_back({"z", TypeInfo::Tensor(DType::kFloat, {Dim::Symbolic("N"), Dim::Fixed(4)}), ""});
  VerifyModel(m);

  Compact(m, true);
  const auto& g = m.graph;
  EXPECT_EQ(g.nodes[0].name, "Relu_node");
  EXPECT_EQ(g.nodes[3].name, "if_node");
  EXPECT_EQ(g.nodes[0].outputs[0], "t0");
  // The branches follow the rename; their own values keep their names.
  for (const auto& a : g.nodes[3].attributes) {
    EXPECT_EQ(a.graphs[0].nodes[0].inputs[0], "t0");
    EXPECT_EQ(a.graphs[0].nodes[0].outputs[0], a.graphs[0].name + "_out");
  }
  testing::TempDir dir;
  SaveModel(m, dir / "m.onnx");
  EXPECT_TRUE(CheckModelFile(dir / "m.onnx").ok) << CheckModelFile(dir / "m.onnx").message;
}

// NamedModel with long initializer names; "b" is also listed as a graph input (old-style default).
Model LongInitializerModel() {
  Model m = NamedModel();
  m.graph.nodes[1].inputs[1] = "onnx::MatMul_weight_long";
  m.graph.FindInitializer("W")->set_name("onnx::MatMul_weight_long");
  const Tensor& b = *m.graph.FindInitializer("b");
  m.graph.inputs.push_back({"b", TypeInfo::Tensor(b.dtype(), {Dim::Fixed(4)}), ""});
  return m;
}

TEST(CompactNames, RenamesInitializersButNotGraphInputs) {
  Model m = LongInitializerModel();
  const Model before = m;
  const PassContext ctx = Compact(m, false);
  const auto& g = m.graph;
  EXPECT_EQ(g.nodes[1].inputs, std::vector<std::string>({"t0", "c0"}));
  EXPECT_EQ(g.FindInitializer("onnx::MatMul_weight_long"), nullptr);
  ASSERT_NE(g.FindInitializer("c0"), nullptr);
  EXPECT_TRUE(g.FindInitializer("c0")->SameContent(*before.graph.FindInitializer("onnx::MatMul_weight_long")));
  EXPECT_EQ(g.nodes[2].inputs, std::vector<std::string>({"t1", "b"}));  // a graph input keeps its name
  EXPECT_NE(g.FindInitializer("b"), nullptr);
  EXPECT_EQ(ctx.counters().at("renamed_initializers"), 1);
  EXPECT_EQ(ctx.counters().at("renamed_values"), 2);
  const Tensor x = Tensor::FromVector<float>({2, 4}, {1, -2, 3, -4, 0.5f, 6, -7, 8});
  Executor a(before), b(m);
  EXPECT_TRUE(a.Run({x})[0].SameContent(b.Run({x})[0]));

  Model kept = LongInitializerModel();
  const PassContext ctx2 = Compact(kept, false, true);
  EXPECT_EQ(kept.graph.nodes[1].inputs, std::vector<std::string>({"t0", "onnx::MatMul_weight_long"}));
  EXPECT_EQ(ctx2.counters().at("renamed_initializers"), 0);
}

TEST(CompactNames, DropsAttributesThatHoldTheirDefault) {
  // x [1,1,5,5] -> Conv (every attribute spelled out) -> MaxPool -> y
  Model m;
  m.ir_version = 8;
  m.SetOpsetVersion("", 17);
  m.graph.name = "g";
  m.graph.inputs.push_back({"x", TypeInfo::Tensor(DType::kFloat, {Dim::Fixed(1), Dim::Fixed(1), Dim::Fixed(5), Dim::Fixed(5)}), ""});
  m.graph.initializers.push_back(Tensor::FromVector<float>({2, 1, 3, 3}, std::vector<float>(18, 0.25f), "W"));
  Node conv;
  conv.op_type = "Conv";
  conv.inputs = {"x", "W"};
  conv.outputs = {"c"};
  conv.attributes = {Attribute::Ints("dilations", {1, 1}), Attribute::Int("group", 1),
                     Attribute::Ints("kernel_shape", {3, 3}), Attribute::Ints("pads", {1, 1, 1, 1}),
                     Attribute::Ints("strides", {1, 1}), Attribute::String("auto_pad", "NOTSET")};
  Node pool;
  pool.op_type = "MaxPool";
  pool.inputs = {"c"};
  pool.outputs = {"y"};
  pool.attributes = {Attribute::Ints("kernel_shape", {2, 2}), Attribute::Ints("pads", {0, 0, 0, 0}),
                     Attribute::Ints("strides", {2, 2}), Attribute::Int("ceil_mode", 0)};
  m.graph.nodes = {conv, pool};
  m.graph.outputs.push_back({"y", TypeInfo::Tensor(DType::kFloat, {Dim::Fixed(1), Dim::Fixed(2), Dim::Fixed(2), Dim::Fixed(2)}), ""});
  VerifyModel(m);
  const Model before = m;
  Model kept = m;

  const PassContext ctx = Compact(m, false);
  auto names = [](const Node& n) {
    std::vector<std::string> out;
    for (const auto& a : n.attributes) out.push_back(a.name);
    return out;
  };
  EXPECT_EQ(names(m.graph.nodes[0]), (std::vector<std::string>{"kernel_shape", "pads"}));
  EXPECT_EQ(names(m.graph.nodes[1]), (std::vector<std::string>{"kernel_shape", "strides"}));
  EXPECT_EQ(ctx.counters().at("dropped_default_attributes"), 6);
  std::vector<float> xv(25);
  for (size_t i = 0; i < xv.size(); ++i) xv[i] = static_cast<float>(i % 7) - 3.0f;
  const Tensor x = Tensor::FromVector<float>({1, 1, 5, 5}, xv);
  Executor a(before), b(m);
  EXPECT_TRUE(a.Run({x})[0].SameContent(b.Run({x})[0]));
  testing::TempDir dir;
  SaveModel(m, dir / "m.onnx");
  EXPECT_TRUE(CheckModelFile(dir / "m.onnx").ok) << CheckModelFile(dir / "m.onnx").message;

  Compact(kept, false, false, true);
  EXPECT_EQ(kept.graph.nodes[0].attributes.size(), 6u);
}

TEST(CompactNames, NamesAlreadyShortStay) {
  Model m = testing::TinyModel();  // values "r" and "m"-like short names
  const Model before = m;
  Compact(m, true);
  for (size_t i = 0; i < m.graph.nodes.size(); ++i) {
    EXPECT_EQ(m.graph.nodes[i].outputs, before.graph.nodes[i].outputs);
  }
}

}  // namespace
}  // namespace compress
