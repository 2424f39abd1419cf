#include <gtest/gtest.h>

#include "cleanup_test_helpers.h"

namespace compress {
namespace {

using namespace testing;

// Every value attribute of Constant, feeding arithmetic so that the outputs depend on all of them.
Model AllConstantKinds() {
  Model m = EmptyModel(17);
  Graph& g = m.graph;
  g.inputs.push_back(FloatValue("x", Fixed({2, 2})));
  g.outputs.push_back(FloatValue("y", Fixed({2, 2})));
  g.outputs.push_back({"s", TypeInfo::Tensor(DType::kString, {}), ""});
  g.nodes.push_back(ConstantNode("c_val", Tensor::FromVector<float>({2, 2}, {1, 2, 3, 4})));
  g.nodes.push_back(MakeNode("Constant", {}, {"c_f"}, {Attribute::Float("value_float", 2.0f)}));
  g.nodes.push_back(MakeNode("Constant", {}, {"c_fs"}, {Attribute::Floats("value_floats", {0.5f, -0.5f})}));
  g.nodes.push_back(MakeNode("Constant", {}, {"c_i"}, {Attribute::Int("value_int", 3)}));
  g.nodes.push_back(MakeNode("Constant", {}, {"c_is"}, {Attribute::Ints("value_ints", {2, 2})}));
  g.nodes.push_back(MakeNode("Constant", {}, {"s"}, {Attribute::String("value_string", "hello")}));
  Attribute sparse;
  sparse.name = "sparse_value";
  sparse.type = AttrType::kSparseTensor;
  sparse.sparse_tensors.push_back(SparseTensor{Tensor::FromVector<float>({2}, {10, 20}, "sp_values"),
                                               Tensor::FromVector<int64_t>({2}, {0, 3}, "sp_indices"),
                                               {2, 2}});
  g.nodes.push_back(MakeNode("Constant", {}, {"c_sp"}, {sparse}));
  g.nodes.push_back(MakeNode("Add", {"x", "c_val"}, {"a"}));
  g.nodes.push_back(MakeNode("Mul", {"a", "c_f"}, {"b"}));
  g.nodes.push_back(MakeNode("Add", {"b", "c_fs"}, {"c"}));
  g.nodes.push_back(MakeNode("Add", {"c", "c_sp"}, {"d"}));
  g.nodes.push_back(MakeNode("Cast", {"c_i"}, {"c_i_float"}, {Attribute::Int("to", 1)}));
  g.nodes.push_back(MakeNode("Add", {"d", "c_i_float"}, {"e"}));
  g.nodes.push_back(MakeNode("Reshape", {"e", "c_is"}, {"y"}));
  return m;
}

TEST(ConstantToInitializer, ConvertsEveryValueAttribute) {
  Model m = AllConstantKinds();
  const std::vector<Tensor> in = {Tensor::FromVector<float>({2, 2}, {0.25f, -1, 2, 0})};
  const auto before = RunModel(m, in);

  const PassContext ctx = RunPass(m, "constant_to_initializer");
  EXPECT_EQ(Counter(ctx, "converted"), 7);
  EXPECT_EQ(CountOps(m.graph, "Constant"), 0);
  EXPECT_EQ(OpTypes(m.graph),
            (std::vector<std::string>{"Add", "Mul", "Add", "Add", "Cast", "Add", "Reshape"}));
  EXPECT_EQ(InitializerNames(m.graph),
            (std::vector<std::string>{"c_val", "c_f", "c_fs", "c_i", "c_is", "s"}));
  const Graph& g = m.graph;
  EXPECT_EQ(Values(*g.FindInitializer("c_val")), (std::vector<float>{1, 2, 3, 4}));
  EXPECT_TRUE(g.FindInitializer("c_f")->dims().empty());
  EXPECT_EQ(Values(*g.FindInitializer("c_f")), std::vector<float>{2.0f});
  EXPECT_EQ(g.FindInitializer("c_fs")->dims(), std::vector<int64_t>{2});
  EXPECT_EQ(Int64Values(*g.FindInitializer("c_i")), std::vector<int64_t>{3});
  EXPECT_EQ(Int64Values(*g.FindInitializer("c_is")), (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(g.FindInitializer("s")->strings(), std::vector<std::string>{"hello"});
  ASSERT_EQ(g.sparse_initializers.size(), 1u);
  EXPECT_EQ(g.sparse_initializers[0].values.name(), "c_sp");
  EXPECT_EQ(g.sparse_initializers[0].dims, (std::vector<int64_t>{2, 2}));
  EXPECT_TRUE(g.inputs.size() == 1 && g.inputs[0].name == "x");  // IR version 8: inputs untouched

  EXPECT_LE(MaxAbsDiff(before, RunModel(m, in)), kBitIdentical);
  const CheckResult check = CheckWithOnnx(m);
  EXPECT_TRUE(check.ok) << check.message;
}

// Before IR version 4 every initializer must also be a graph input.
TEST(ConstantToInitializer, IrVersion3ListsInitializersAsInputs) {
  Model m = EmptyModel(8, 3);
  Graph& g = m.graph;
  g.inputs.push_back(FloatValue("x", Fixed({3})));
  g.outputs.push_back(FloatValue("y", Fixed({3})));
  g.nodes.push_back(ConstantNode("w", Tensor::FromVector<float>({3}, {1, 2, 3})));
  g.nodes.push_back(MakeNode("Mul", {"x", "w"}, {"y"}));
  const std::vector<Tensor> in = {Tensor::FromVector<float>({3}, {4, 5, 6})};
  const auto before = RunModel(m, in);

  const PassContext ctx = RunPass(m, "constant_to_initializer");
  EXPECT_EQ(Counter(ctx, "converted"), 1);
  EXPECT_EQ(OpTypes(g), std::vector<std::string>{"Mul"});
  ASSERT_EQ(g.inputs.size(), 2u);
  EXPECT_EQ(g.inputs[1].name, "w");
  EXPECT_EQ(g.inputs[1].type.ToString(), "float32[3]");
  EXPECT_EQ(g.RealInputs().size(), 1u);
  EXPECT_LE(MaxAbsDiff(before, RunModel(m, in)), kBitIdentical);
  const CheckResult check = CheckWithOnnx(m);
  EXPECT_TRUE(check.ok) << check.message;
}

Model IfWithConstantBranches(int64_t ir_version) {
  Model m = EmptyModel(13, ir_version);
  Graph& g = m.graph;
  g.inputs.push_back({"cond", TypeInfo::Tensor(DType::kBool, {}), ""});
  g.outputs.push_back(FloatValue("y", Fixed({2})));
  g.nodes.push_back(ConstantNode("outer", Tensor::FromVector<float>({2}, {5, 6})));
  Graph then_branch;
  then_branch.name = "then";
  then_branch.outputs.push_back(FloatValue("t_out", Fixed({2})));
  then_branch.nodes.push_back(ConstantNode("t_c", Tensor::FromVector<float>({2}, {1, 2})));
  then_branch.nodes.push_back(MakeNode("Add", {"t_c", "outer"}, {"t_out"}));
  Graph else_branch;
  else_branch.name = "else";
  else_branch.outputs.push_back(FloatValue("e_out", Fixed({2})));
  else_branch.nodes.push_back(ConstantNode("e_out", Tensor::FromVector<float>({2}, {3, 4})));
  g.nodes.push_back(MakeNode("If", {"cond"}, {"y"},
                             {GraphAttr("then_branch", then_branch), GraphAttr("else_branch", else_branch)}));
  return m;
}

TEST(ConstantToInitializer, ConvertsInsideSubgraphs) {
  Model m = IfWithConstantBranches(8);
  const PassContext ctx = RunPass(m, "constant_to_initializer");
  EXPECT_EQ(Counter(ctx, "converted"), 3);
  ASSERT_EQ(m.graph.nodes.size(), 1u);
  const Graph& then_branch = m.graph.nodes[0].attributes[0].graphs[0];
  const Graph& else_branch = m.graph.nodes[0].attributes[1].graphs[0];
  EXPECT_EQ(InitializerNames(m.graph), std::vector<std::string>{"outer"});
  EXPECT_EQ(OpTypes(then_branch), std::vector<std::string>{"Add"});
  EXPECT_EQ(InitializerNames(then_branch), std::vector<std::string>{"t_c"});
  EXPECT_TRUE(else_branch.nodes.empty());
  EXPECT_EQ(InitializerNames(else_branch), std::vector<std::string>{"e_out"});
  const CheckResult check = CheckWithOnnx(m);
  EXPECT_TRUE(check.ok) << check.message;
}

// A subgraph cannot list new inputs, so before IR version 4 its Constant nodes stay.
TEST(ConstantToInitializer, IrVersion3KeepsConstantsInSubgraphs) {
  Model m = IfWithConstantBranches(3);
  m.opset_imports = {{"", 8}};
  const PassContext ctx = RunPass(m, "constant_to_initializer");
  EXPECT_EQ(Counter(ctx, "converted"), 1);
  EXPECT_EQ(InitializerNames(m.graph), std::vector<std::string>{"outer"});
  ASSERT_EQ(m.graph.inputs.size(), 2u);
  EXPECT_EQ(m.graph.inputs[1].name, "outer");
  EXPECT_EQ(CountOps(m.graph.nodes[0].attributes[0].graphs[0], "Constant"), 1);
  EXPECT_EQ(CountOps(m.graph.nodes[0].attributes[1].graphs[0], "Constant"), 1);
  ASSERT_EQ(ctx.notes().size(), 1u);
  EXPECT_NE(ctx.notes()[0].find("kept 2 Constant nodes in subgraphs"), std::string::npos) << ctx.notes()[0];
  const CheckResult check = CheckWithOnnx(m);
  EXPECT_TRUE(check.ok) << check.message;
}

TEST(ConstantToInitializer, LeavesModelsWithoutConstantsAlone) {
  Model m = TinyModel();
  const Model original = m;
  const PassContext ctx = RunPass(m, "constant_to_initializer");
  EXPECT_EQ(Counter(ctx, "converted"), 0);
  EXPECT_EQ(SerializeModel(m), SerializeModel(original));
}

}  // namespace
}  // namespace compress
