#include <gtest/gtest.h>

#include "cleanup_test_helpers.h"

namespace compress {
namespace {

using namespace testing;

const std::vector<Tensor> kInput = {Tensor::FromVector<float>({2, 3}, {-1, 0.5f, 2, -0.25f, 3, 0})};

TEST(RemoveIdentity, RemovesIdentityAndInferenceDropout) {
  Model m = EmptyModel(13);
  Graph& g = m.graph;
  g.inputs.push_back(FloatValue("x", Fixed({2, 3})));
  g.outputs.push_back(FloatValue("y", Fixed({2, 3})));
  g.value_info.push_back(FloatValue("b", Fixed({2, 3})));
  g.value_info.push_back(FloatValue("a", Fixed({2, 3})));
  g.initializers.push_back(Tensor::FromVector<float>({}, {0.5f}, "ratio"));
  g.initializers.push_back(Tensor::FromVector<bool>({}, {false}, "training"));
  g.nodes.push_back(MakeNode("Relu", {"x"}, {"a"}));
  g.nodes.push_back(MakeNode("Identity", {"a"}, {"b"}));
  g.nodes.push_back(MakeNode("Dropout", {"b"}, {"c"}));
  g.nodes.push_back(MakeNode("Dropout", {"c", "ratio", "training"}, {"d", "unused_mask"}));
  g.nodes.push_back(MakeNode("Sigmoid", {"d"}, {"y"}));
  const auto before = RunModel(m, kInput);

  const PassContext ctx = RunPass(m, "remove_identity");
  EXPECT_EQ(Counter(ctx, "removed"), 3);
  EXPECT_EQ(OpTypes(g), (std::vector<std::string>{"Relu", "Sigmoid"}));
  EXPECT_EQ(g.nodes[1].inputs, std::vector<std::string>{"a"});
  ASSERT_EQ(g.value_info.size(), 1u);  // the removed value "b" loses its stale entry
  EXPECT_EQ(g.value_info[0].name, "a");
  EXPECT_LE(MaxAbsDiff(before, RunModel(m, kInput)), kBitIdentical);
  const CheckResult check = CheckWithOnnx(m);
  EXPECT_TRUE(check.ok) << check.message;
}

// Before opset 12 Dropout has no training input: at inference it is the identity.
TEST(RemoveIdentity, RemovesOldOpsetDropoutWithUnusedMask) {
  Model m = EmptyModel(10, 5);
  Graph& g = m.graph;
  g.inputs.push_back(FloatValue("x", Fixed({2, 3})));
  g.outputs.push_back(FloatValue("y", Fixed({2, 3})));
  g.nodes.push_back(MakeNode("Dropout", {"x"}, {"d", "mask"}, {Attribute::Float("ratio", 0.3f)}));
  g.nodes.push_back(MakeNode("Abs", {"d"}, {"y"}));
  const auto before = RunModel(m, kInput);
  const PassContext ctx = RunPass(m, "remove_identity");
  EXPECT_EQ(Counter(ctx, "removed"), 1);
  EXPECT_EQ(OpTypes(g), std::vector<std::string>{"Abs"});
  EXPECT_LE(MaxAbsDiff(before, RunModel(m, kInput)), kBitIdentical);
}

TEST(RemoveIdentity, KeepsDropoutThatTrainsOrWhoseMaskIsRead) {
  Model m = EmptyModel(13);
  Graph& g = m.graph;
  g.inputs.push_back(FloatValue("x", Fixed({2, 3})));
  g.inputs.push_back({"train_in", TypeInfo::Tensor(DType::kBool, {}), ""});
  for (const char* out : {"y1", "y2", "mask", "y3"}) g.outputs.push_back({out, TypeInfo{}, ""});
  g.initializers.push_back(Tensor::FromVector<bool>({}, {true}, "train_true"));
  g.nodes.push_back(MakeNode("Dropout", {"x", "", "train_true"}, {"y1"}));
  g.nodes.push_back(MakeNode("Dropout", {"x"}, {"y2", "mask"}));
  g.nodes.push_back(MakeNode("Dropout", {"x", "", "train_in"}, {"y3"}));
  const PassContext ctx = RunPass(m, "remove_identity");
  EXPECT_EQ(Counter(ctx, "removed"), 0);
  EXPECT_EQ(CountOps(g, "Dropout"), 3);
}

// A graph output keeps its name: the producer of the Identity's input takes it over.
TEST(RemoveIdentity, IdentityFeedingAGraphOutputRenamesTheProducer) {
  Model m = EmptyModel(13);
  Graph& g = m.graph;
  g.inputs.push_back(FloatValue("x", Fixed({2, 3})));
  g.outputs.push_back(FloatValue("y", Fixed({2, 3})));
  g.outputs.push_back(FloatValue("z", Fixed({2, 3})));
  g.value_info.push_back(FloatValue("a", Fixed({2, 3})));
  g.nodes.push_back(MakeNode("Relu", {"x"}, {"a"}));
  g.nodes.push_back(MakeNode("Sigmoid", {"a"}, {"z"}));
  g.nodes.push_back(MakeNode("Identity", {"a"}, {"y"}));
  const auto before = RunModel(m, kInput);

  const PassContext ctx = RunPass(m, "remove_identity");
  EXPECT_EQ(Counter(ctx, "removed"), 1);
  EXPECT_EQ(OpTypes(g), (std::vector<std::string>{"Relu", "Sigmoid"}));
  EXPECT_EQ(g.nodes[0].outputs, std::vector<std::string>{"y"});
  EXPECT_EQ(g.nodes[1].inputs, std::vector<std::string>{"y"});
  EXPECT_EQ(g.outputs[0].name, "y");
  EXPECT_EQ(g.outputs[1].name, "z");
  EXPECT_TRUE(g.value_info.empty());
  EXPECT_LE(MaxAbsDiff(before, RunModel(m, kInput)), kBitIdentical);
  const CheckResult check = CheckWithOnnx(m);
  EXPECT_TRUE(check.ok) << check.message;
}

// Identity between two interface values (input or initializer to output, output to output) is the only
// way to give one value two names, so it stays.
TEST(RemoveIdentity, KeepsIdentityBetweenInterfaceValues) {
  Model m = EmptyModel(13);
  Graph& g = m.graph;
  g.inputs.push_back(FloatValue("x", Fixed({2, 3})));
  for (const char* out : {"y1", "y2", "r", "y3"}) g.outputs.push_back({out, TypeInfo{}, ""});
  g.initializers.push_back(Tensor::FromVector<float>({2}, {1, 2}, "w"));
  g.nodes.push_back(MakeNode("Identity", {"x"}, {"y1"}));
  g.nodes.push_back(MakeNode("Identity", {"w"}, {"y2"}));
  g.nodes.push_back(MakeNode("Relu", {"x"}, {"r"}));
  g.nodes.push_back(MakeNode("Identity", {"r"}, {"y3"}));
  const Model original = m;
  const PassContext ctx = RunPass(m, "remove_identity");
  EXPECT_EQ(Counter(ctx, "removed"), 0);
  EXPECT_EQ(SerializeModel(m), SerializeModel(original));
}

// Subgraphs name outer values directly: they follow both kinds of rename.
TEST(RemoveIdentity, RenamesReferencesInSubgraphs) {
  Model m = EmptyModel(13);
  Graph& g = m.graph;
  g.inputs.push_back(FloatValue("x", Fixed({2})));
  g.inputs.push_back({"cond", TypeInfo::Tensor(DType::kBool, {}), ""});
  g.outputs.push_back(FloatValue("y", Fixed({2})));
  g.outputs.push_back(FloatValue("out2", Fixed({2})));
  g.nodes.push_back(MakeNode("Identity", {"x"}, {"b"}));
  g.nodes.push_back(MakeNode("Relu", {"x"}, {"a"}));
  g.nodes.push_back(MakeNode("Identity", {"a"}, {"out2"}));
  Graph then_branch;
  then_branch.name = "then";
  then_branch.outputs.push_back(FloatValue("t", Fixed({2})));
  then_branch.nodes.push_back(MakeNode("Add", {"b", "a"}, {"t"}));
  Graph else_branch;
  else_branch.name = "else";
  else_branch.outputs.push_back(FloatValue("e", Fixed({2})));
  else_branch.nodes.push_back(MakeNode("Neg", {"b"}, {"e"}));
  g.nodes.push_back(MakeNode("If", {"cond"}, {"y"},
                             {GraphAttr("then_branch", then_branch), GraphAttr("else_branch", else_branch)}));

  const PassContext ctx = RunPass(m, "remove_identity");
  EXPECT_EQ(Counter(ctx, "removed"), 2);
  EXPECT_EQ(OpTypes(g), (std::vector<std::string>{"Relu", "If"}));
  EXPECT_EQ(g.nodes[0].outputs, std::vector<std::string>{"out2"});
  EXPECT_EQ(g.nodes[1].attributes[0].graphs[0].nodes[0].inputs, (std::vector<std::string>{"x", "out2"}));
  EXPECT_EQ(g.nodes[1].attributes[1].graphs[0].nodes[0].inputs, std::vector<std::string>{"x"});
  const CheckResult check = CheckWithOnnx(m);
  EXPECT_TRUE(check.ok) << check.message;
}

}  // namespace
}  // namespace compress
