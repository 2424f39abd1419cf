#include <gtest/gtest.h>

#include "cleanup_test_helpers.h"

namespace compress {
namespace {

using namespace testing;

TEST(RemoveDeadNodes, RemovesNodesAndInitializersNoOutputNeeds) {
  Model m = EmptyModel(17);
  Graph& g = m.graph;
  g.inputs.push_back(FloatValue("x", Fixed({2, 3})));
  g.outputs.push_back(FloatValue("y", Fixed({2, 3})));
  g.value_info.push_back(FloatValue("r", Fixed({2, 3})));
  g.value_info.push_back(FloatValue("s", Fixed({2, 3})));
  g.initializers.push_back(RandomFloats({3}, 1, "W"));       // read only by a dead node
  g.initializers.push_back(RandomFloats({3}, 2, "unused"));  // read by nothing
  g.initializers.push_back(RandomFloats({3}, 3, "b"));
  g.nodes.push_back(ConstantNode("dead_const", Tensor::FromVector<float>({}, {1.0f})));
  g.nodes.push_back(MakeNode("Relu", {"x"}, {"r"}));
  g.nodes.push_back(MakeNode("Sigmoid", {"x"}, {"s"}));
  g.nodes.push_back(MakeNode("Mul", {"s", "W"}, {"sw"}));
  g.nodes.push_back(MakeNode("Add", {"sw", "dead_const"}, {"dead_out"}));
  g.nodes.push_back(MakeNode("Add", {"r", "b"}, {"y"}));
  const std::vector<Tensor> in = {RandomFloats({2, 3}, 4)};
  const auto before = RunModel(m, in);

  const PassContext ctx = RunPass(m, "remove_dead_nodes");
  EXPECT_EQ(Counter(ctx, "removed_nodes"), 4);
  EXPECT_EQ(Counter(ctx, "removed_initializers"), 2);
  EXPECT_EQ(OpTypes(g), (std::vector<std::string>{"Relu", "Add"}));
  EXPECT_EQ(InitializerNames(g), std::vector<std::string>{"b"});
  ASSERT_EQ(g.value_info.size(), 1u);
  EXPECT_EQ(g.value_info[0].name, "r");
  EXPECT_LE(MaxAbsDiff(before, RunModel(m, in)), kBitIdentical);
  const CheckResult check = CheckWithOnnx(m);
  EXPECT_TRUE(check.ok) << check.message;
}

// Inputs are the model's interface, including a replaceable initializer's input (IR version >= 4).
TEST(RemoveDeadNodes, KeepsGraphInputsEvenWhenUnused) {
  Model m = EmptyModel(17);
  Graph& g = m.graph;
  g.inputs.push_back(FloatValue("x", Fixed({3})));
  g.inputs.push_back(FloatValue("unused_in", Fixed({3})));
  g.inputs.push_back(FloatValue("opt", Fixed({3})));
  g.outputs.push_back(FloatValue("y", Fixed({3})));
  g.initializers.push_back(RandomFloats({3}, 5, "opt"));
  g.nodes.push_back(MakeNode("Neg", {"x"}, {"y"}));
  const Model original = m;
  const PassContext ctx = RunPass(m, "remove_dead_nodes");
  EXPECT_EQ(Counter(ctx, "removed_nodes"), 0);
  EXPECT_EQ(Counter(ctx, "removed_initializers"), 0);
  EXPECT_EQ(SerializeModel(m), SerializeModel(original));
}

TEST(RemoveDeadNodes, IrVersion3UnlistsRemovedInitializersButKeepsRealInputs) {
  Model m = EmptyModel(8, 3);
  Graph& g = m.graph;
  g.inputs.push_back(FloatValue("x", Fixed({3})));
  g.inputs.push_back(FloatValue("w", Fixed({3})));
  g.inputs.push_back(FloatValue("unused_in", Fixed({3})));
  g.outputs.push_back(FloatValue("y", Fixed({3})));
  g.initializers.push_back(RandomFloats({3}, 6, "w"));
  g.nodes.push_back(MakeNode("Neg", {"x"}, {"y"}));
  const PassContext ctx = RunPass(m, "remove_dead_nodes");
  EXPECT_EQ(Counter(ctx, "removed_initializers"), 1);
  EXPECT_TRUE(g.initializers.empty());
  ASSERT_EQ(g.inputs.size(), 2u);
  EXPECT_EQ(g.inputs[0].name, "x");
  EXPECT_EQ(g.inputs[1].name, "unused_in");
  const CheckResult check = CheckWithOnnx(m);
  EXPECT_TRUE(check.ok) << check.message;
}

// A value a subgraph captures is needed; dead nodes inside the subgraph go too, and with them the outer
// values only they read.
TEST(RemoveDeadNodes, FollowsSubgraphCaptures) {
  Model m = EmptyModel(17);
  Graph& g = m.graph;
  g.inputs.push_back({"cond", TypeInfo::Tensor(DType::kBool, {}), ""});
  g.inputs.push_back(FloatValue("x", Fixed({3})));
  g.outputs.push_back(FloatValue("y", Fixed({3})));
  g.initializers.push_back(RandomFloats({3}, 7, "only_dead_inner"));
  g.nodes.push_back(MakeNode("Relu", {"x"}, {"captured"}));
  g.nodes.push_back(MakeNode("Sigmoid", {"x"}, {"read_by_dead_inner"}));
  Graph then_branch;
  then_branch.name = "then";
  then_branch.outputs.push_back(FloatValue("t", Fixed({3})));
  then_branch.initializers.push_back(RandomFloats({3}, 8, "inner_unused"));
  then_branch.nodes.push_back(MakeNode("Neg", {"captured"}, {"t"}));
  then_branch.nodes.push_back(MakeNode("Add", {"read_by_dead_inner", "only_dead_inner"}, {"inner_dead"}));
  Graph else_branch;
  else_branch.name = "else";
  else_branch.outputs.push_back(FloatValue("x", Fixed({3})));
  g.nodes.push_back(MakeNode("If", {"cond"}, {"y"},
                             {GraphAttr("then_branch", then_branch), GraphAttr("else_branch", else_branch)}));

  const PassContext ctx = RunPass(m, "remove_dead_nodes");
  EXPECT_EQ(Counter(ctx, "removed_nodes"), 2);         // the inner Add, then the Sigmoid it read
  EXPECT_EQ(Counter(ctx, "removed_initializers"), 2);  // one inner, one outer
  EXPECT_EQ(OpTypes(g), (std::vector<std::string>{"Relu", "If"}));
  EXPECT_TRUE(g.initializers.empty());
  const Graph& then_after = g.nodes[1].attributes[0].graphs[0];
  EXPECT_EQ(OpTypes(then_after), std::vector<std::string>{"Neg"});
  EXPECT_TRUE(then_after.initializers.empty());
  const CheckResult check = CheckWithOnnx(m);
  EXPECT_TRUE(check.ok) << check.message;
}

}  // namespace
}  // namespace compress
