#include <gtest/gtest.h>
#include <sys/resource.h>

#include "cleanup_test_helpers.h"
#include "compress/exec/kernel.h"

namespace compress {
namespace {

using namespace testing;

Tensor Int64s(std::vector<int64_t> dims, std::vector<int64_t> values, std::string name) {
  return Tensor::FromVector<int64_t>(std::move(dims), values, std::move(name));
}

TEST(FoldConstants, FoldsChainsOfConstantOperators) {
  Model m = EmptyModel(17);
  Graph& g = m.graph;
  g.inputs.push_back(FloatValue("x", {Dim::Symbolic("N"), Dim::Fixed(4)}));
  g.outputs.push_back(FloatValue("y", {Dim::Symbolic("N"), Dim::Fixed(3)}));
  g.initializers.push_back(RandomFloats({3, 4}, 1, "W"));
  g.nodes.push_back(ConstantNode("two", Tensor::FromVector<float>({}, {2.0f})));
  g.nodes.push_back(MakeNode("Transpose", {"W"}, {"wt"}, {Attribute::Ints("perm", {1, 0})}));
  g.nodes.push_back(MakeNode("Mul", {"wt", "two"}, {"ws"}));
  g.nodes.push_back(MakeNode("MatMul", {"x", "ws"}, {"y"}));
  const std::vector<Tensor> in = {RandomFloats({5, 4}, 2)};
  const auto before = RunModel(m, in);

  const PassContext ctx = RunPass(m, "fold_constants");
  EXPECT_EQ(Counter(ctx, "folded_nodes"), 2);
  EXPECT_EQ(Counter(ctx, "folded_shapes"), 0);
  // The Constant node and W are left for remove_dead_nodes.
  EXPECT_EQ(OpTypes(g), (std::vector<std::string>{"Constant", "MatMul"}));
  EXPECT_EQ(InitializerNames(g), (std::vector<std::string>{"W", "ws"}));
  const Tensor& ws = *g.FindInitializer("ws");
  const Tensor& w = *g.FindInitializer("W");
  ASSERT_EQ(ws.dims(), (std::vector<int64_t>{4, 3}));
  for (int64_t r = 0; r < 4; ++r) {
    for (int64_t c = 0; c < 3; ++c) EXPECT_EQ(ws.data<float>()[r * 3 + c], 2.0f * w.data<float>()[c * 4 + r]);
  }
  EXPECT_LE(MaxAbsDiff(before, RunModel(m, in)), kBitIdentical);
}

// Shape of a value whose shape is static, and the Gather/Unsqueeze/Concat chain building a Reshape target.
Model StaticShapeChain() {
  Model m = EmptyModel(17);
  Graph& g = m.graph;
  g.inputs.push_back(FloatValue("x", Fixed({2, 3, 4})));
  g.outputs.push_back(FloatValue("y", Fixed({2, 12})));
  g.initializers.push_back(Int64s({}, {0}, "zero"));
  g.initializers.push_back(Int64s({1}, {0}, "axes0"));
  g.initializers.push_back(Int64s({1}, {-1}, "minus_one"));
  g.nodes.push_back(MakeNode("Relu", {"x"}, {"r"}));
  g.nodes.push_back(MakeNode("Shape", {"r"}, {"s"}));
  g.nodes.push_back(MakeNode("Gather", {"s", "zero"}, {"g0"}, {Attribute::Int("axis", 0)}));
  g.nodes.push_back(MakeNode("Unsqueeze", {"g0", "axes0"}, {"u0"}));
  g.nodes.push_back(MakeNode("Concat", {"u0", "minus_one"}, {"target"}, {Attribute::Int("axis", 0)}));
  g.nodes.push_back(MakeNode("Reshape", {"r", "target"}, {"y"}));
  return m;
}

TEST(FoldConstants, FoldsShapeOfStaticValuesAndWhatFollows) {
  Model m = StaticShapeChain();
  const std::vector<Tensor> in = {RandomFloats({2, 3, 4}, 3)};
  const auto before = RunModel(m, in);
  const PassContext ctx = RunPass(m, "fold_constants");
  EXPECT_EQ(Counter(ctx, "folded_shapes"), 1);
  EXPECT_EQ(Counter(ctx, "folded_nodes"), 3);
  EXPECT_EQ(OpTypes(m.graph), (std::vector<std::string>{"Relu", "Reshape"}));
  const Tensor* target = m.graph.FindInitializer("target");
  ASSERT_NE(target, nullptr);
  EXPECT_EQ(Int64Values(*target), (std::vector<int64_t>{2, -1}));
  // Inference ran on a copy: the model's value_info is as it was.
  EXPECT_TRUE(m.graph.value_info.empty());
  EXPECT_LE(MaxAbsDiff(before, RunModel(m, in)), kBitIdentical);
  const CheckResult check = CheckWithOnnx(m);
  EXPECT_TRUE(check.ok) << check.message;
}

TEST(FoldConstants, FoldShapesOffKeepsShapeNodes) {
  Model m = StaticShapeChain();
  const Model original = m;
  const PassContext ctx = RunPass(m, "fold_constants", {{"fold_shapes", false}});
  EXPECT_EQ(Counter(ctx, "folded_shapes"), 0);
  EXPECT_EQ(Counter(ctx, "folded_nodes"), 0);
  EXPECT_EQ(SerializeModel(m), SerializeModel(original));
}

// With a symbolic batch, Shape stays, but Gather/Slice picking fixed dims out of it fold, and so does
// Shape with start (opset 15) skipping the batch.
TEST(FoldConstants, FoldsFixedDimsOutOfASymbolicShape) {
  Model m = EmptyModel(17);
  Graph& g = m.graph;
  g.inputs.push_back(FloatValue("x", {Dim::Symbolic("N"), Dim::Fixed(3), Dim::Fixed(4)}));
  g.outputs.push_back(FloatValue("y", {Dim::Symbolic("N"), Dim::Fixed(3), Dim::Fixed(4)}));
  g.outputs.push_back({"sl", TypeInfo::Tensor(DType::kInt64, Fixed({2})), ""});
  g.outputs.push_back({"tail", TypeInfo::Tensor(DType::kInt64, Fixed({2})), ""});
  g.outputs.push_back({"mid", TypeInfo::Tensor(DType::kInt64, Fixed({1})), ""});
  g.initializers.push_back(Int64s({}, {0}, "i0"));
  g.initializers.push_back(Int64s({}, {1}, "i1"));
  g.initializers.push_back(Int64s({1}, {0}, "axes0"));
  g.initializers.push_back(Int64s({1}, {-1}, "minus_one"));
  g.initializers.push_back(Int64s({1}, {1}, "start1"));
  g.initializers.push_back(Int64s({1}, {1000}, "end_big"));
  g.nodes.push_back(MakeNode("Relu", {"x"}, {"r"}));
  g.nodes.push_back(MakeNode("Shape", {"r"}, {"s"}));
  g.nodes.push_back(MakeNode("Gather", {"s", "i0"}, {"g0"}, {Attribute::Int("axis", 0)}));
  g.nodes.push_back(MakeNode("Gather", {"s", "i1"}, {"g1"}, {Attribute::Int("axis", 0)}));
  g.nodes.push_back(MakeNode("Slice", {"s", "start1", "end_big"}, {"sl"}));
  g.nodes.push_back(MakeNode("Shape", {"r"}, {"tail"}, {Attribute::Int("start", 1)}));
  g.nodes.push_back(
      MakeNode("Shape", {"r"}, {"mid"}, {Attribute::Int("start", -2), Attribute::Int("end", -1)}));
  g.nodes.push_back(MakeNode("Unsqueeze", {"g0", "axes0"}, {"u0"}));
  g.nodes.push_back(MakeNode("Unsqueeze", {"g1", "axes0"}, {"u1"}));
  g.nodes.push_back(MakeNode("Concat", {"u0", "u1", "minus_one"}, {"target"}, {Attribute::Int("axis", 0)}));
  g.nodes.push_back(MakeNode("Reshape", {"r", "target"}, {"y"}));
  const std::vector<Tensor> in2 = {RandomFloats({2, 3, 4}, 4)}, in5 = {RandomFloats({5, 3, 4}, 5)};
  const auto before2 = RunModel(m, in2), before5 = RunModel(m, in5);

  const PassContext ctx = RunPass(m, "fold_constants");
  EXPECT_EQ(Counter(ctx, "folded_shapes"), 4);  // Gather(1), Slice, Shape(start=1), Shape(start=-2, end=-1)
  EXPECT_EQ(Counter(ctx, "folded_nodes"), 1);   // Unsqueeze of the fixed dim
  EXPECT_EQ(OpTypes(g),
            (std::vector<std::string>{"Relu", "Shape", "Gather", "Unsqueeze", "Concat", "Reshape"}));
  EXPECT_EQ(Int64Values(*g.FindInitializer("u1")), std::vector<int64_t>{3});
  EXPECT_EQ(Int64Values(*g.FindInitializer("sl")), (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(Int64Values(*g.FindInitializer("tail")), (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(Int64Values(*g.FindInitializer("mid")), std::vector<int64_t>{3});
  EXPECT_EQ(g.FindInitializer("g1"), nullptr);  // read only by the folded Unsqueeze
  EXPECT_LE(MaxAbsDiff(before2, RunModel(m, in2)), kBitIdentical);
  EXPECT_LE(MaxAbsDiff(before5, RunModel(m, in5)), kBitIdentical);
  const CheckResult check = CheckWithOnnx(m);
  EXPECT_TRUE(check.ok) << check.message;
}

int64_t MaxRssBytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;
}

// Each of these would produce 8 GiB: the pass must see that from the inputs and never run them.
TEST(FoldConstants, SkipsHugeResultsWithoutComputingThem) {
  constexpr int64_t kEightGiBOfFloats = int64_t{2} << 30;
  Model m = EmptyModel(17);
  Graph& g = m.graph;
  for (const char* out : {"cos", "expand", "range", "tile"}) g.outputs.push_back({out, TypeInfo{}, ""});
  g.initializers.push_back(Int64s({4}, {2, 1024, 1024, 1024}, "huge_shape"));
  g.initializers.push_back(Int64s({1}, {kEightGiBOfFloats}, "huge_1d"));
  g.initializers.push_back(Tensor::FromVector<float>({1}, {1.5f}, "one_float"));
  g.initializers.push_back(Tensor::FromVector<float>({}, {0.0f}, "start"));
  g.initializers.push_back(Tensor::FromVector<float>({}, {static_cast<float>(kEightGiBOfFloats)}, "limit"));
  g.initializers.push_back(Tensor::FromVector<float>({}, {1.0f}, "delta"));
  g.nodes.push_back(MakeNode("ConstantOfShape", {"huge_shape"}, {"cos"}));
  g.nodes.push_back(MakeNode("Expand", {"one_float", "huge_1d"}, {"expand"}));
  g.nodes.push_back(MakeNode("Range", {"start", "limit", "delta"}, {"range"}));
  g.nodes.push_back(MakeNode("Tile", {"one_float", "huge_1d"}, {"tile"}));
  const int64_t rss_before = MaxRssBytes();

  const PassContext ctx = RunPass(m, "fold_constants");
  EXPECT_EQ(Counter(ctx, "skipped_over_cap"), 4);
  EXPECT_EQ(Counter(ctx, "folded_nodes"), 0);
  EXPECT_EQ(OpTypes(g), (std::vector<std::string>{"ConstantOfShape", "Expand", "Range", "Tile"}));
  // Had any of them run, its zero-filled 8 GiB output would have raised the peak resident size by that.
  constexpr int64_t kAllowedGrowth = int64_t{256} << 20;
  EXPECT_LT(MaxRssBytes() - rss_before, kAllowedGrowth);
}

TEST(FoldConstants, DiscardsResultsOverTheCapAfterRunning) {
  Model m = EmptyModel(17);
  Graph& g = m.graph;
  g.outputs.push_back({"big_t", TypeInfo{}, ""});
  g.outputs.push_back({"small_t", TypeInfo{}, ""});
  g.initializers.push_back(RandomFloats({4, 8}, 6, "big"));    // 128 bytes
  g.initializers.push_back(RandomFloats({2, 4}, 7, "small"));  // 32 bytes
  g.nodes.push_back(MakeNode("Transpose", {"big"}, {"big_t"}));
  g.nodes.push_back(MakeNode("Transpose", {"small"}, {"small_t"}));
  const PassContext ctx = RunPass(m, "fold_constants", {{"max_folded_bytes", 64}});
  EXPECT_EQ(Counter(ctx, "skipped_over_cap"), 1);
  EXPECT_EQ(Counter(ctx, "folded_nodes"), 1);
  EXPECT_EQ(OpTypes(g), std::vector<std::string>{"Transpose"});
  EXPECT_EQ(g.nodes[0].inputs, std::vector<std::string>{"big"});
  EXPECT_EQ(g.FindInitializer("small_t")->dims(), (std::vector<int64_t>{4, 2}));
}

TEST(FoldConstants, NeverFoldsRandomQuantizationWideningCastsSubgraphsOrUnsupportedOps) {
  ASSERT_EQ(KernelRegistry::Default().Find("", "Floor", 17), nullptr) << "pick another op without a kernel";
  Model m = EmptyModel(17);
  Graph& g = m.graph;
  for (const char* out : {"rand", "deq", "wide", "narrow", "if_out", "floor", "bad_reshape"}) {
    g.outputs.push_back({out, TypeInfo{}, ""});
  }
  g.initializers.push_back(RandomFloats({2, 3}, 8, "w32"));
  Tensor w16(DType::kFloat16, {2, 3}, "w16");
  g.initializers.push_back(w16);
  g.initializers.push_back(Tensor::FromVector<int8_t>({3}, {-1, 0, 7}, "q"));
  g.initializers.push_back(Tensor::FromVector<float>({}, {0.5f}, "q_scale"));
  g.initializers.push_back(Tensor::FromVector<int8_t>({}, {1}, "q_zero"));
  g.initializers.push_back(Tensor::FromVector<bool>({}, {true}, "cond"));
  g.initializers.push_back(Int64s({1}, {7}, "bad_shape"));
  g.nodes.push_back(MakeNode("RandomUniformLike", {"w32"}, {"rand"}));
  g.nodes.push_back(MakeNode("DequantizeLinear", {"q", "q_scale", "q_zero"}, {"deq"}));
  g.nodes.push_back(
      MakeNode("Cast", {"w16"}, {"wide"}, {Attribute::Int("to", static_cast<int64_t>(DType::kFloat))}));
  g.nodes.push_back(
      MakeNode("Cast", {"w32"}, {"narrow"}, {Attribute::Int("to", static_cast<int64_t>(DType::kFloat16))}));
  Graph then_branch, else_branch;
  then_branch.name = "then";
  then_branch.outputs.push_back({"w32", TypeInfo{}, ""});
  else_branch.name = "else";
  else_branch.outputs.push_back({"w32", TypeInfo{}, ""});
  g.nodes.push_back(MakeNode("If", {"cond"}, {"if_out"},
                             {GraphAttr("then_branch", then_branch), GraphAttr("else_branch", else_branch)}));
  g.nodes.push_back(MakeNode("Floor", {"w32"}, {"floor"}));
  g.nodes.push_back(MakeNode("Reshape", {"w32", "bad_shape"}, {"bad_reshape"}));

  const PassContext ctx = RunPass(m, "fold_constants");
  EXPECT_EQ(Counter(ctx, "folded_nodes"), 1);  // only the narrowing Cast
  EXPECT_EQ(OpTypes(g), (std::vector<std::string>{"RandomUniformLike", "DequantizeLinear", "Cast", "If",
                                                  "Floor", "Reshape"}));
  EXPECT_EQ(g.nodes[2].inputs, std::vector<std::string>{"w16"});
  ASSERT_NE(g.FindInitializer("narrow"), nullptr);
  EXPECT_EQ(g.FindInitializer("narrow")->dtype(), DType::kFloat16);
}

// A Shape-derived int32 value is no stored weight: widening it is fine.
TEST(FoldConstants, FoldsWideningCastOfComputedShapes) {
  Model m = EmptyModel(17);
  Graph& g = m.graph;
  g.inputs.push_back(FloatValue("x", Fixed({2, 3})));
  g.outputs.push_back({"shape64", TypeInfo::Tensor(DType::kInt64, Fixed({2})), ""});
  g.nodes.push_back(MakeNode("Shape", {"x"}, {"s"}));
  g.nodes.push_back(
      MakeNode("Cast", {"s"}, {"s32"}, {Attribute::Int("to", static_cast<int64_t>(DType::kInt32))}));
  g.nodes.push_back(
      MakeNode("Cast", {"s32"}, {"shape64"}, {Attribute::Int("to", static_cast<int64_t>(DType::kInt64))}));
  const PassContext ctx = RunPass(m, "fold_constants");
  EXPECT_EQ(Counter(ctx, "folded_shapes"), 1);
  EXPECT_EQ(Counter(ctx, "folded_nodes"), 2);
  EXPECT_TRUE(g.nodes.empty());
  EXPECT_EQ(Int64Values(*g.FindInitializer("shape64")), (std::vector<int64_t>{2, 3}));
}

// An initializer also listed as a graph input is only a default the caller may replace.
TEST(FoldConstants, LeavesOverridableInitializersAlone) {
  Model m = EmptyModel(17);
  Graph& g = m.graph;
  g.inputs.push_back(FloatValue("w", Fixed({2})));
  g.outputs.push_back(FloatValue("y", Fixed({2})));
  g.initializers.push_back(Tensor::FromVector<float>({2}, {1, 2}, "w"));
  g.nodes.push_back(MakeNode("Neg", {"w"}, {"y"}));
  const PassContext ctx = RunPass(m, "fold_constants");
  EXPECT_EQ(Counter(ctx, "folded_nodes"), 0);
  EXPECT_EQ(OpTypes(g), std::vector<std::string>{"Neg"});
}

TEST(FoldConstants, IrVersion3ListsFoldedValuesAsInputs) {
  Model m = EmptyModel(8, 3);
  Graph& g = m.graph;
  g.inputs.push_back(FloatValue("x", Fixed({2})));
  g.inputs.push_back(FloatValue("w", Fixed({2})));
  g.outputs.push_back(FloatValue("y", Fixed({2})));
  g.initializers.push_back(Tensor::FromVector<float>({2}, {1, -2}, "w"));
  g.nodes.push_back(MakeNode("Neg", {"w"}, {"nw"}));
  g.nodes.push_back(MakeNode("Add", {"x", "nw"}, {"y"}));
  const std::vector<Tensor> in = {Tensor::FromVector<float>({2}, {10, 20})};
  const auto before = RunModel(m, in);
  const PassContext ctx = RunPass(m, "fold_constants");
  EXPECT_EQ(Counter(ctx, "folded_nodes"), 1);
  EXPECT_EQ(OpTypes(g), std::vector<std::string>{"Add"});
  ASSERT_EQ(g.inputs.size(), 3u);
  EXPECT_EQ(g.inputs[2].name, "nw");
  EXPECT_EQ(Values(*g.FindInitializer("nw")), (std::vector<float>{-1, 2}));
  EXPECT_LE(MaxAbsDiff(before, RunModel(m, in)), kBitIdentical);
  const CheckResult check = CheckWithOnnx(m);
  EXPECT_TRUE(check.ok) << check.message;
}

TEST(FoldConstants, FoldsInsideSubgraphsUsingOuterConstants) {
  Model m = EmptyModel(17);
  Graph& g = m.graph;
  g.inputs.push_back({"cond", TypeInfo::Tensor(DType::kBool, {}), ""});
  g.inputs.push_back(FloatValue("x", Fixed({2})));
  g.outputs.push_back(FloatValue("y", Fixed({2})));
  g.initializers.push_back(Tensor::FromVector<float>({2}, {1, -2}, "w"));
  Graph then_branch;
  then_branch.name = "then";
  then_branch.outputs.push_back(FloatValue("t", Fixed({2})));
  then_branch.nodes.push_back(MakeNode("Neg", {"w"}, {"nw"}));
  then_branch.nodes.push_back(MakeNode("Add", {"x", "nw"}, {"t"}));
  Graph else_branch;
  else_branch.name = "else";
  else_branch.outputs.push_back(FloatValue("e", Fixed({2})));
  else_branch.nodes.push_back(MakeNode("Abs", {"x"}, {"e"}));
  g.nodes.push_back(MakeNode("If", {"cond"}, {"y"},
                             {GraphAttr("then_branch", then_branch), GraphAttr("else_branch", else_branch)}));
  const PassContext ctx = RunPass(m, "fold_constants");
  EXPECT_EQ(Counter(ctx, "folded_nodes"), 1);
  const Graph& then_after = g.nodes[0].attributes[0].graphs[0];
  EXPECT_EQ(OpTypes(then_after), std::vector<std::string>{"Add"});
  EXPECT_EQ(InitializerNames(then_after), std::vector<std::string>{"nw"});
  EXPECT_EQ(Values(then_after.initializers[0]), (std::vector<float>{-1, 2}));
  const CheckResult check = CheckWithOnnx(m);
  EXPECT_TRUE(check.ok) << check.message;
}

TEST(FoldConstants, OutputIsDeterministic) {
  Model a = StaticShapeChain(), b = StaticShapeChain();
  RunPass(a, "fold_constants");
  RunPass(b, "fold_constants");
  EXPECT_EQ(SerializeModel(a), SerializeModel(b));
}

}  // namespace
}  // namespace compress
