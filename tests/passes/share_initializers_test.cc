#include <gtest/gtest.h>

#include "cleanup_test_helpers.h"

namespace compress {
namespace {

using namespace testing;

Tensor Floats123(const std::string& name, std::vector<int64_t> dims = {3}) {
  return Tensor::FromVector<float>(std::move(dims), {1, 2, 3}, name);
}

TEST(ShareInitializers, MergesTensorsWithTheSameTypeShapeAndBytes) {
  Model m = EmptyModel(17);
  Graph& g = m.graph;
  g.inputs.push_back(FloatValue("x", Fixed({2, 3})));
  g.outputs.push_back(FloatValue("y", Fixed({2, 3})));
  g.initializers.push_back(Floats123("a"));
  g.initializers.push_back(Floats123("b"));
  // Same bytes as "a" but another element type, and same values in another shape: both stay.
  const Tensor a = Floats123("a");
  g.initializers.push_back(Tensor::FromBytes(DType::kInt32, {3}, a.raw(), a.nbytes(), "c"));
  g.initializers.push_back(Floats123("d", {1, 3}));
  g.initializers.push_back(Floats123("e"));
  g.nodes.push_back(MakeNode("Add", {"x", "a"}, {"p"}));
  g.nodes.push_back(MakeNode("Mul", {"p", "b"}, {"q"}));
  g.nodes.push_back(MakeNode("Sub", {"q", "e"}, {"r"}));
  g.nodes.push_back(MakeNode("Add", {"r", "d"}, {"s"}));
  g.nodes.push_back(MakeNode("Cast", {"c"}, {"cf"}, {Attribute::Int("to", 1)}));
  g.nodes.push_back(MakeNode("Add", {"s", "cf"}, {"y"}));
  const std::vector<Tensor> in = {RandomFloats({2, 3}, 1)};
  const auto before = RunModel(m, in);

  const PassContext ctx = RunPass(m, "share_initializers");
  EXPECT_EQ(Counter(ctx, "shared"), 2);
  EXPECT_EQ(Counter(ctx, "bytes_saved"), 24);
  EXPECT_EQ(InitializerNames(g), (std::vector<std::string>{"a", "c", "d"}));
  EXPECT_EQ(g.nodes[1].inputs, (std::vector<std::string>{"p", "a"}));
  EXPECT_EQ(g.nodes[2].inputs, (std::vector<std::string>{"q", "a"}));
  EXPECT_LE(MaxAbsDiff(before, RunModel(m, in)), kBitIdentical);
  const CheckResult check = CheckWithOnnx(m);
  EXPECT_TRUE(check.ok) << check.message;
}

// A replaceable input's default and a graph output are not just values: their names matter.
TEST(ShareInitializers, KeepsOverridableInitializersAndGraphOutputs) {
  Model m = EmptyModel(17);
  Graph& g = m.graph;
  g.inputs.push_back(FloatValue("b", Fixed({3})));
  g.outputs.push_back(FloatValue("y", Fixed({3})));
  g.outputs.push_back(FloatValue("c", Fixed({3})));
  g.initializers.push_back(Floats123("a"));
  g.initializers.push_back(Floats123("b"));
  g.initializers.push_back(Floats123("c"));
  g.nodes.push_back(MakeNode("Add", {"a", "b"}, {"y"}));
  const Model original = m;
  const PassContext ctx = RunPass(m, "share_initializers");
  EXPECT_EQ(Counter(ctx, "shared"), 0);
  EXPECT_EQ(SerializeModel(m), SerializeModel(original));
}

TEST(ShareInitializers, RenamesReferencesInSubgraphs) {
  Model m = EmptyModel(17);
  Graph& g = m.graph;
  g.inputs.push_back({"cond", TypeInfo::Tensor(DType::kBool, {}), ""});
  g.inputs.push_back(FloatValue("x", Fixed({3})));
  g.outputs.push_back(FloatValue("y", Fixed({3})));
  g.initializers.push_back(Floats123("a"));
  g.initializers.push_back(Floats123("b"));
  Graph then_branch;
  then_branch.name = "then";
  then_branch.outputs.push_back(FloatValue("t", Fixed({3})));
  then_branch.nodes.push_back(MakeNode("Add", {"x", "b"}, {"t"}));
  Graph else_branch;
  else_branch.name = "else";
  else_branch.outputs.push_back(FloatValue("e", Fixed({3})));
  else_branch.nodes.push_back(MakeNode("Sub", {"x", "a"}, {"e"}));
  g.nodes.push_back(MakeNode("If", {"cond"}, {"y"},
                             {GraphAttr("then_branch", then_branch), GraphAttr("else_branch", else_branch)}));
  const PassContext ctx = RunPass(m, "share_initializers");
  EXPECT_EQ(Counter(ctx, "shared"), 1);
  EXPECT_EQ(InitializerNames(g), std::vector<std::string>{"a"});
  EXPECT_EQ(g.nodes[0].attributes[0].graphs[0].nodes[0].inputs, (std::vector<std::string>{"x", "a"}));
  const CheckResult check = CheckWithOnnx(m);
  EXPECT_TRUE(check.ok) << check.message;
}

// Before IR version 4 every initializer is listed as an input without being replaceable: they merge,
// and the merged one leaves the input list.
TEST(ShareInitializers, IrVersion3MergesAndUnlistsTheDuplicate) {
  Model m = EmptyModel(8, 3);
  Graph& g = m.graph;
  g.inputs.push_back(FloatValue("x", Fixed({3})));
  g.inputs.push_back(FloatValue("a", Fixed({3})));
  g.inputs.push_back(FloatValue("b", Fixed({3})));
  g.outputs.push_back(FloatValue("y", Fixed({3})));
  g.initializers.push_back(Floats123("a"));
  g.initializers.push_back(Floats123("b"));
  g.nodes.push_back(MakeNode("Add", {"x", "a"}, {"p"}));
  g.nodes.push_back(MakeNode("Mul", {"p", "b"}, {"y"}));
  const std::vector<Tensor> in = {RandomFloats({3}, 2)};
  const auto before = RunModel(m, in);
  const PassContext ctx = RunPass(m, "share_initializers");
  EXPECT_EQ(Counter(ctx, "shared"), 1);
  EXPECT_EQ(InitializerNames(g), std::vector<std::string>{"a"});
  ASSERT_EQ(g.inputs.size(), 2u);
  EXPECT_EQ(g.inputs[1].name, "a");
  EXPECT_LE(MaxAbsDiff(before, RunModel(m, in)), kBitIdentical);
  const CheckResult check = CheckWithOnnx(m);
  EXPECT_TRUE(check.ok) << check.message;
}

}  // namespace
}  // namespace compress
