#include <gtest/gtest.h>

#include "cleanup_test_helpers.h"
#include "compress/util/half.h"

namespace compress {
namespace {

using namespace testing;

// Folding rounds W * s and (b - mean) * s + beta to float32 once (relative error 6e-8 each) instead of
// rounding the convolution and the normalization separately; over the few dozen products of magnitude
// below ~5 that each output sums here, the two orders differ by well under 1e-5.
constexpr double kFoldTolerance = 1e-5;
// The same with float16 weights and activations: one float16 rounding of an output near 4 is 2e-3.
constexpr double kHalfFoldTolerance = 1e-2;

// Inference-form BatchNormalization over `c` channels with parameters far from the identity.
void AddBatchNorm(Graph& g, const std::string& name, int64_t c, uint32_t seed, const std::string& in,
                  const std::string& out, DType dtype = DType::kFloat) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::vector<double> gamma, beta, mean, var;
  for (int64_t k = 0; k < c; ++k) {
    gamma.push_back(0.5 + unit(gen));
    beta.push_back(2 * unit(gen) - 1);
    mean.push_back(2 * unit(gen) - 1);
    var.push_back(0.25 + unit(gen));
  }
  auto add = [&](const std::string& suffix, const std::vector<double>& v) {
    Tensor t(dtype, {c}, name + "." + suffix);
    for (int64_t k = 0; k < c; ++k) {
      if (dtype == DType::kFloat16) {
        static_cast<uint16_t*>(t.mutable_raw())[k] =
            FloatToHalf(static_cast<float>(v[static_cast<size_t>(k)]));
      } else {
        t.mutable_data<float>()[k] = static_cast<float>(v[static_cast<size_t>(k)]);
      }
    }
    g.initializers.push_back(t);
    return t.name();
  };
  const std::string s = add("scale", gamma), b = add("bias", beta), m = add("mean", mean),
                    v = add("var", var);
  g.nodes.push_back(
      MakeNode("BatchNormalization", {in, s, b, m, v}, {out}, {Attribute::Float("epsilon", 1e-3f)}, name));
}

Model WithInput(const std::string& name, std::vector<Dim> dims, int64_t opset = 17) {
  Model m = EmptyModel(opset);
  m.graph.inputs.push_back(FloatValue(name, std::move(dims)));
  return m;
}

void ExpectOutputsClose(const Model& before, const Model& after, const std::vector<Tensor>& in,
                        double tolerance = kFoldTolerance) {
  const double diff = MaxAbsDiff(RunModel(before, in), RunModel(after, in));
  EXPECT_LE(diff, tolerance);
}

TEST(FoldBatchNorm, FoldsIntoConvWithAndWithoutBias) {
  Model m = WithInput("x", {Dim::Symbolic("N"), Dim::Fixed(2), Dim::Fixed(5), Dim::Fixed(5)});
  Graph& g = m.graph;
  g.outputs.push_back(FloatValue("y1", {Dim::Symbolic("N"), Dim::Fixed(4), Dim::Fixed(5), Dim::Fixed(5)}));
  g.outputs.push_back(FloatValue("y2", {Dim::Symbolic("N"), Dim::Fixed(3), Dim::Fixed(5), Dim::Fixed(5)}));
  g.initializers.push_back(RandomFloats({4, 2, 3, 3}, 1, "W1"));
  g.initializers.push_back(RandomFloats({4}, 2, "b1"));
  g.initializers.push_back(RandomFloats({3, 2, 1, 1}, 3, "W2"));
  g.nodes.push_back(
      MakeNode("Conv", {"x", "W1", "b1"}, {"c1"}, {Attribute::Ints("pads", {1, 1, 1, 1})}, "conv1"));
  AddBatchNorm(g, "bn1", 4, 4, "c1", "y1");
  g.nodes.push_back(MakeNode("Conv", {"x", "W2"}, {"c2"}, {}, "conv2"));
  AddBatchNorm(g, "bn2", 3, 5, "c2", "y2");
  const Model before = m;

  const PassContext ctx = RunPass(m, "fold_batch_norm");
  EXPECT_EQ(Counter(ctx, "folded"), 2);
  EXPECT_EQ(Counter(ctx, "kept"), 0);
  EXPECT_EQ(OpTypes(g), (std::vector<std::string>{"Conv", "Conv"}));
  EXPECT_EQ(g.nodes[0].inputs, (std::vector<std::string>{"x", "W1", "b1"}));
  EXPECT_EQ(g.nodes[0].outputs, std::vector<std::string>{"y1"});
  ASSERT_EQ(g.nodes[1].inputs.size(), 3u);  // a bias was created
  EXPECT_EQ(g.nodes[1].inputs[2], "W2_bn_bias");
  EXPECT_EQ(g.FindInitializer("W2_bn_bias")->dims(), std::vector<int64_t>{3});
  EXPECT_EQ(g.nodes[1].outputs, std::vector<std::string>{"y2"});
  EXPECT_EQ(g.FindInitializer("W1")->dtype(), DType::kFloat);
  ExpectOutputsClose(before, m, {RandomFloats({3, 2, 5, 5}, 6)});
  const CheckResult check = CheckWithOnnx(m);
  EXPECT_TRUE(check.ok) << check.message;
}

// ConvTranspose weights are [C_in, C_out/group, k...]: output channel g*(C_out/group)+j sits on dim 1,
// group by group.
TEST(FoldBatchNorm, FoldsIntoConvTransposeWithTwoGroups) {
  Model m = WithInput("x", {Dim::Symbolic("N"), Dim::Fixed(4), Dim::Fixed(3), Dim::Fixed(3)});
  Graph& g = m.graph;
  g.outputs.push_back(FloatOutput("y"));
  g.initializers.push_back(RandomFloats({4, 3, 2, 2}, 7, "W"));
  g.initializers.push_back(RandomFloats({6}, 8, "b"));
  g.nodes.push_back(MakeNode("ConvTranspose", {"x", "W", "b"}, {"t"},
                             {Attribute::Int("group", 2), Attribute::Ints("strides", {2, 2})}));
  AddBatchNorm(g, "bn", 6, 9, "t", "y");
  const Model before = m;
  const PassContext ctx = RunPass(m, "fold_batch_norm");
  EXPECT_EQ(Counter(ctx, "folded"), 1);
  EXPECT_EQ(OpTypes(g), std::vector<std::string>{"ConvTranspose"});
  EXPECT_EQ(g.nodes[0].outputs, std::vector<std::string>{"y"});
  ExpectOutputsClose(before, m, {RandomFloats({2, 4, 3, 3}, 10)});
}

TEST(FoldBatchNorm, FoldsIntoGemmRespectingTransBAlphaAndBeta) {
  Model m = WithInput("x", {Dim::Symbolic("N"), Dim::Fixed(5)});
  Graph& g = m.graph;
  g.outputs.push_back(FloatOutput("y1"));
  g.outputs.push_back(FloatOutput("y2"));
  g.initializers.push_back(RandomFloats({3, 5}, 11, "B1"));  // transB: [N, K]
  g.initializers.push_back(RandomFloats({3}, 12, "C1"));
  g.initializers.push_back(RandomFloats({5, 4}, 13, "B2"));  // [K, N], no C
  g.nodes.push_back(MakeNode(
      "Gemm", {"x", "B1", "C1"}, {"g1"},
      {Attribute::Int("transB", 1), Attribute::Float("alpha", 0.5f), Attribute::Float("beta", 2.0f)}));
  AddBatchNorm(g, "bn1", 3, 14, "g1", "y1");
  g.nodes.push_back(MakeNode("Gemm", {"x", "B2"}, {"g2"}));
  AddBatchNorm(g, "bn2", 4, 15, "g2", "y2");
  const Model before = m;
  const PassContext ctx = RunPass(m, "fold_batch_norm");
  EXPECT_EQ(Counter(ctx, "folded"), 2);
  EXPECT_EQ(OpTypes(g), (std::vector<std::string>{"Gemm", "Gemm"}));
  EXPECT_EQ(g.nodes[0].AttrFloat("alpha", 0), 1.0f);
  EXPECT_EQ(g.nodes[0].AttrFloat("beta", 0), 1.0f);
  EXPECT_EQ(g.nodes[0].AttrInt("transB", 0), 1);
  EXPECT_EQ(g.FindInitializer("B1")->dims(), (std::vector<int64_t>{3, 5}));
  ASSERT_EQ(g.nodes[1].inputs.size(), 3u);
  EXPECT_EQ(g.FindInitializer(g.nodes[1].inputs[2])->dims(), std::vector<int64_t>{4});
  ExpectOutputsClose(before, m, {RandomFloats({6, 5}, 16)});
}

// MatMul has no bias input: the folded shift becomes an Add after it.
TEST(FoldBatchNorm, FoldsTwoDimensionalMatMulIntoMatMulAndAdd) {
  Model m = WithInput("x", {Dim::Symbolic("N"), Dim::Fixed(5)});
  Graph& g = m.graph;
  g.outputs.push_back(FloatOutput("y"));
  g.initializers.push_back(RandomFloats({5, 3}, 17, "W"));
  g.nodes.push_back(MakeNode("MatMul", {"x", "W"}, {"mm"}));
  AddBatchNorm(g, "bn", 3, 18, "mm", "y");
  const Model before = m;
  const PassContext ctx = RunPass(m, "fold_batch_norm");
  EXPECT_EQ(Counter(ctx, "folded"), 1);
  EXPECT_EQ(OpTypes(g), (std::vector<std::string>{"MatMul", "Add"}));
  EXPECT_EQ(g.nodes[1].inputs, (std::vector<std::string>{"mm", "W_bn_bias"}));
  EXPECT_EQ(g.nodes[1].outputs, std::vector<std::string>{"y"});
  ExpectOutputsClose(before, m, {RandomFloats({4, 5}, 19)});
}

// For a 3-D MatMul output [N, T, C], BatchNormalization's axis 1 is T, not the weight's column.
TEST(FoldBatchNorm, KeepsBatchNormAfterThreeDimensionalMatMul) {
  Model m = WithInput("x", {Dim::Symbolic("N"), Dim::Fixed(3), Dim::Fixed(5)});
  Graph& g = m.graph;
  g.outputs.push_back(FloatOutput("y"));
  g.initializers.push_back(RandomFloats({5, 3}, 20, "W"));
  g.nodes.push_back(MakeNode("MatMul", {"x", "W"}, {"mm"}));
  AddBatchNorm(g, "bn", 3, 21, "mm", "y");
  const Model before = m;
  const PassContext ctx = RunPass(m, "fold_batch_norm");
  EXPECT_EQ(Counter(ctx, "folded"), 0);
  EXPECT_EQ(Counter(ctx, "kept"), 1);
  ASSERT_EQ(ctx.notes().size(), 1u);
  EXPECT_NE(ctx.notes()[0].find("not known to be 2-D"), std::string::npos) << ctx.notes()[0];
  EXPECT_EQ(OpTypes(g), (std::vector<std::string>{"MatMul", "BatchNormalization"}));
  ExpectOutputsClose(before, m, {RandomFloats({2, 3, 5}, 22)}, kBitIdentical);
}

TEST(FoldBatchNorm, KeepsBatchNormWhoseInputHasAnotherReader) {
  Model m = WithInput("x", {Dim::Symbolic("N"), Dim::Fixed(2), Dim::Fixed(4), Dim::Fixed(4)});
  Graph& g = m.graph;
  g.outputs.push_back(FloatOutput("y"));
  g.outputs.push_back(FloatOutput("z"));
  g.initializers.push_back(RandomFloats({3, 2, 3, 3}, 23, "W"));
  g.nodes.push_back(MakeNode("Conv", {"x", "W"}, {"c"}));
  AddBatchNorm(g, "bn", 3, 24, "c", "y");
  g.nodes.push_back(MakeNode("Relu", {"c"}, {"z"}));
  const Model before = m;
  const PassContext ctx = RunPass(m, "fold_batch_norm");
  EXPECT_EQ(Counter(ctx, "folded"), 0);
  EXPECT_EQ(Counter(ctx, "kept"), 1);
  ASSERT_EQ(ctx.notes().size(), 1u);
  EXPECT_EQ(ctx.notes()[0],
            "kept BatchNormalization 'bn' (BatchNormalization): its input 'c' has other readers");
  EXPECT_EQ(SerializeModel(m), SerializeModel(before));
}

// A weight another node also reads is copied, so that node keeps computing with the original.
TEST(FoldBatchNorm, CopiesSharedWeights) {
  Model m = WithInput("x", {Dim::Symbolic("N"), Dim::Fixed(2), Dim::Fixed(4), Dim::Fixed(4)});
  Graph& g = m.graph;
  g.outputs.push_back(FloatOutput("y"));
  g.outputs.push_back(FloatOutput("z"));
  g.initializers.push_back(RandomFloats({3, 2, 3, 3}, 25, "W"));
  g.initializers.push_back(RandomFloats({3}, 26, "b"));
  g.nodes.push_back(MakeNode("Conv", {"x", "W", "b"}, {"c"}));
  AddBatchNorm(g, "bn", 3, 27, "c", "y");
  g.nodes.push_back(MakeNode("Conv", {"x", "W", "b"}, {"z"}));
  const Model before = m;
  const PassContext ctx = RunPass(m, "fold_batch_norm");
  EXPECT_EQ(Counter(ctx, "folded"), 1);
  EXPECT_EQ(g.nodes[0].inputs, (std::vector<std::string>{"x", "W_bn", "b_bn_bias"}));
  EXPECT_EQ(g.nodes[1].inputs, (std::vector<std::string>{"x", "W", "b"}));
  EXPECT_TRUE(g.FindInitializer("W")->SameContent(*before.graph.FindInitializer("W")));
  EXPECT_TRUE(g.FindInitializer("b")->SameContent(*before.graph.FindInitializer("b")));
  ExpectOutputsClose(before, m, {RandomFloats({2, 2, 4, 4}, 28)});
}

Tensor ToHalf(const Tensor& t) {
  Tensor out(DType::kFloat16, t.dims(), t.name());
  for (int64_t i = 0; i < t.numel(); ++i)
    static_cast<uint16_t*>(out.mutable_raw())[i] = FloatToHalf(t.data<float>()[i]);
  return out;
}

Tensor ToFloat(const Tensor& t) {
  Tensor out(DType::kFloat, t.dims(), t.name());
  for (int64_t i = 0; i < t.numel(); ++i)
    out.mutable_data<float>()[i] = HalfToFloat(static_cast<const uint16_t*>(t.raw())[i]);
  return out;
}

TEST(FoldBatchNorm, KeepsTheWeightTypeOfFloat16Models) {
  Model m = EmptyModel(17);
  Graph& g = m.graph;
  g.inputs.push_back(
      {"x",
       TypeInfo::Tensor(DType::kFloat16, {Dim::Symbolic("N"), Dim::Fixed(2), Dim::Fixed(4), Dim::Fixed(4)}),
       ""});
  g.outputs.push_back({"y", TypeInfo::Tensor(DType::kFloat16, {}), ""});
  g.outputs.back().type.has_shape = false;
  g.initializers.push_back(ToHalf(RandomFloats({3, 2, 3, 3}, 29, "W")));
  g.initializers.push_back(ToHalf(RandomFloats({3}, 30, "b")));
  g.nodes.push_back(MakeNode("Conv", {"x", "W", "b"}, {"c"}));
  AddBatchNorm(g, "bn", 3, 31, "c", "y", DType::kFloat16);
  const Model before = m;
  const PassContext ctx = RunPass(m, "fold_batch_norm");
  EXPECT_EQ(Counter(ctx, "folded"), 1);
  EXPECT_EQ(g.FindInitializer("W")->dtype(), DType::kFloat16);
  EXPECT_EQ(g.FindInitializer("b")->dtype(), DType::kFloat16);
  const std::vector<Tensor> in = {ToHalf(RandomFloats({2, 2, 4, 4}, 32))};
  const auto a = RunModel(before, in), b = RunModel(m, in);
  ASSERT_EQ(b.at(0).dtype(), DType::kFloat16);
  EXPECT_LE(MaxAbsDiff({ToFloat(a[0])}, {ToFloat(b[0])}), kHalfFoldTolerance);
}

}  // namespace
}  // namespace compress
