// prune_channels: one small graph per channel-group rule. Each test makes a known set of channels the least
// important (their producer weights scaled down), prunes half of each group with round_to 1, and checks the
// exact shapes afterwards and that the pruned model computes what the original computes with those channels
// zeroed (producer weights and biases, BatchNormalization scale and bias set to zero).
#include <gtest/gtest.h>

#include <functional>
#include <iostream>

#include "cleanup_test_helpers.h"
#include "compress/calib/calibration.h"

namespace compress {
namespace {

using namespace testing;

// The pruned model drops terms that are exactly zero in the zeroed original; only the kernels' blocking
// and summation order differ. Sums here have at most ~100 terms of magnitude below ~3, so float32
// rounding differences stay well under 1e-5.
constexpr double kPruneTolerance = 1e-5;
// Mean compensation replaces a removed channel by its calibration mean; on a 1x1 consumer the pruned model
// then equals the original with that channel held at its mean. Means are summed in double and stored in
// float32: differences of float rounding only.
constexpr double kCompensationTolerance = 1e-5;
// The re-fit must cut the consumer's squared output error on the calibration data versus mean folding by
// at least this factor on the random graph of RefitBeatsMeanFoldingOnTheCalibrationData.
constexpr double kRefitGain = 2.0;
// Factor applied to the weights of the channels a test wants removed: far below any other channel's norm.
constexpr float kWeak = 0.01f;

const nlohmann::json kHalf = {{"ratio", 0.5}, {"round_to", 1}, {"importance", "l1"}};

Tensor& Init(Graph& g, const std::string& name) {
  Tensor* t = g.FindInitializer(name);
  if (t == nullptr) throw std::runtime_error("no initializer " + name);
  return *t;
}

std::vector<int64_t> Dims(const Model& m, const std::string& name) {
  const Tensor* t = m.graph.FindInitializer(name);
  return t == nullptr ? std::vector<int64_t>{} : t->dims();
}

// Multiplies the slices `idx` of `name` along `dim` by `factor`.
void ScaleSlices(Graph& g, const std::string& name, int64_t dim, const std::vector<int64_t>& idx, float factor) {
  Tensor& t = Init(g, name);
  int64_t outer = 1, inner = 1;
  const int64_t n = t.dims()[static_cast<size_t>(dim)];
  for (int64_t i = 0; i < dim; ++i) outer *= t.dims()[static_cast<size_t>(i)];
  for (int64_t i = dim + 1; i < t.rank(); ++i) inner *= t.dims()[static_cast<size_t>(i)];
  float* p = t.mutable_data<float>();
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t c : idx) {
      for (int64_t i = 0; i < inner; ++i) p[(o * n + c) * inner + i] *= factor;
    }
  }
}
void Zero(Graph& g, const std::string& name, int64_t dim, const std::vector<int64_t>& idx) {
  ScaleSlices(g, name, dim, idx, 0.0f);
}

// Keeps the slices `keep` of `name` along `dim` (test-side slicing, for hand-made expectations).
void Keep(Graph& g, const std::string& name, int64_t dim, const std::vector<int64_t>& keep) {
  Tensor& t = Init(g, name);
  std::vector<int64_t> dims = t.dims();
  int64_t outer = 1, inner = 1;
  const int64_t n = dims[static_cast<size_t>(dim)];
  for (int64_t i = 0; i < dim; ++i) outer *= dims[static_cast<size_t>(i)];
  for (int64_t i = dim + 1; i < t.rank(); ++i) inner *= dims[static_cast<size_t>(i)];
  dims[static_cast<size_t>(dim)] = static_cast<int64_t>(keep.size());
  Tensor out(DType::kFloat, dims, t.name());
  size_t k = 0;
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t c : keep) {
      for (int64_t i = 0; i < inner; ++i) out.mutable_data<float>()[k++] = t.data<float>()[(o * n + c) * inner + i];
    }
  }
  t = out;
}

Model Start(std::vector<int64_t> input_dims) {
  Model m = EmptyModel(17);
  std::vector<Dim> dims = Fixed(input_dims);
  dims[0] = Dim::Symbolic("N");
  m.graph.inputs.push_back(FloatValue("x", dims));
  return m;
}

void AddOutput(Model& m, const std::string& name, std::vector<int64_t> dims) {
  std::vector<Dim> d = Fixed(dims);
  d[0] = Dim::Symbolic("N");
  m.graph.outputs.push_back(FloatValue(name, d));
}

void AddBn(Graph& g, const std::string& name, int64_t c, uint32_t seed, const std::string& in, const std::string& out) {
  g.initializers.push_back(RandomFloats({c}, seed, name + ".scale"));
  g.initializers.push_back(RandomFloats({c}, seed + 1, name + ".bias"));
  g.initializers.push_back(RandomFloats({c}, seed + 2, name + ".mean"));
  Tensor var = RandomFloats({c}, seed + 3, name + ".var");
  for (int64_t i = 0; i < c; ++i) var.mutable_data<float>()[i] = 0.5f + std::fabs(var.data<float>()[i]);
  g.initializers.push_back(var);
  g.nodes.push_back(MakeNode("BatchNormalization",
                             {in, name + ".scale", name + ".bias", name + ".mean", name + ".var"}, {out}, {}, name));
}

void ExpectSameAsZeroed(const Model& zeroed, const Model& pruned, const std::vector<int64_t>& input_dims) {
  std::vector<int64_t> dims = input_dims;
  dims[0] = 2;
  const std::vector<Tensor> in = {RandomFloats(dims, 99)};
  EXPECT_LE(MaxAbsDiff(RunModel(zeroed, in), RunModel(pruned, in)), kPruneTolerance);
  const CheckResult check = CheckWithOnnx(pruned);
  EXPECT_TRUE(check.ok) << check.message;
}

std::vector<std::string> Notes(const PassContext& ctx) { return ctx.notes(); }

bool HasNote(const PassContext& ctx, const std::string& part) {
  for (const auto& n : ctx.notes()) {
    if (n.find(part) != std::string::npos) return true;
  }
  return false;
}

// x -> Conv1(W1[8,3,3,3], b1) -> BN -> Relu -> Conv2(W2[4,8,3,3], b2) -> y. Conv2's channels reach the
// graph output and stay; Conv1's group loses channels 0, 3, 5, 6.
TEST(PruneChannels, ChainThroughBatchNormAndRelu) {
  const std::vector<int64_t> in_dims = {1, 3, 6, 6};
  Model m = Start(in_dims);
  Graph& g = m.graph;
  AddOutput(m, "y", {1, 4, 6, 6});
  g.initializers.push_back(RandomFloats({8, 3, 3, 3}, 1, "W1"));
  g.initializers.push_back(RandomFloats({8}, 2, "b1"));
  g.initializers.push_back(RandomFloats({4, 8, 3, 3}, 3, "W2"));
  g.initializers.push_back(RandomFloats({4}, 4, "b2"));
  const std::vector<Attribute> pad = {Attribute::Ints("pads", {1, 1, 1, 1})};
  g.nodes.push_back(MakeNode("Conv", {"x", "W1", "b1"}, {"c1"}, pad, "conv1"));
  AddBn(g, "bn", 8, 10, "c1", "n1");
  g.nodes.push_back(MakeNode("Relu", {"n1"}, {"r1"}, {}, "relu"));
  g.nodes.push_back(MakeNode("Conv", {"r1", "W2", "b2"}, {"y"}, pad, "conv2"));
  const std::vector<int64_t> weak = {0, 3, 5, 6};
  ScaleSlices(g, "W1", 0, weak, kWeak);

  Model zeroed = m;
  Zero(zeroed.graph, "W1", 0, weak);
  Zero(zeroed.graph, "b1", 0, weak);
  Zero(zeroed.graph, "bn.scale", 0, weak);
  Zero(zeroed.graph, "bn.bias", 0, weak);
  Model pruned = m;
  const PassContext ctx = RunPass(pruned, "prune_channels", kHalf);

  EXPECT_EQ(Dims(pruned, "W1"), (std::vector<int64_t>{4, 3, 3, 3}));
  EXPECT_EQ(Dims(pruned, "b1"), (std::vector<int64_t>{4}));
  for (const char* p : {"bn.scale", "bn.bias", "bn.mean", "bn.var"}) {
    EXPECT_EQ(Dims(pruned, p), (std::vector<int64_t>{4})) << p;
  }
  EXPECT_EQ(Dims(pruned, "W2"), (std::vector<int64_t>{4, 4, 3, 3}));
  EXPECT_EQ(Dims(pruned, "b2"), (std::vector<int64_t>{4}));
  // The kept channels are 1, 2, 4, 7, in order.
  EXPECT_EQ(Values(Init(pruned.graph, "b1")),
            (std::vector<float>{Values(Init(m.graph, "b1"))[1], Values(Init(m.graph, "b1"))[2],
                                Values(Init(m.graph, "b1"))[4], Values(Init(m.graph, "b1"))[7]}));
  ExpectSameAsZeroed(zeroed, pruned, in_dims);
  EXPECT_EQ(Counter(ctx, "groups_pruned"), 1);
  EXPECT_EQ(Counter(ctx, "groups_kept"), 1);
  EXPECT_EQ(Counter(ctx, "channels_removed"), 4);
  EXPECT_TRUE(HasNote(ctx, "channels reach graph output 'y'")) << ::testing::PrintToString(Notes(ctx));
  const auto& layers = ctx.details().at("layers");
  ASSERT_EQ(layers.size(), 1u);
  EXPECT_EQ(layers[0].at("node"), "conv1");
  EXPECT_EQ(layers[0].at("op"), "Conv");
  EXPECT_EQ(layers[0].at("method"), "l1");
  EXPECT_EQ(layers[0].at("channels_before"), 8);
  EXPECT_EQ(layers[0].at("channels_after"), 4);
}

// With importance "bn" the BatchNormalization scale decides: the channels with the smallest |scale| go,
// whatever the weights say.
TEST(PruneChannels, BatchNormScaleImportance) {
  Model m = Start({1, 3, 6, 6});
  Graph& g = m.graph;
  AddOutput(m, "y", {1, 4, 6, 6});
  g.initializers.push_back(RandomFloats({8, 3, 1, 1}, 1, "W1"));
  g.initializers.push_back(RandomFloats({4, 8, 1, 1}, 3, "W2"));
  g.nodes.push_back(MakeNode("Conv", {"x", "W1"}, {"c1"}, {}, "conv1"));
  AddBn(g, "bn", 8, 10, "c1", "n1");
  g.nodes.push_back(MakeNode("Relu", {"n1"}, {"r1"}, {}, "relu"));
  g.nodes.push_back(MakeNode("Conv", {"r1", "W2"}, {"y"}, {}, "conv2"));
  ScaleSlices(g, "W1", 0, {1, 2, 4, 7}, kWeak);  // the weights say 1, 2, 4, 7
  ScaleSlices(g, "bn.scale", 0, {0, 1, 2, 3}, kWeak);  // the scales say 0, 1, 2, 3
  const std::vector<float> mean = Values(Init(g, "bn.mean"));
  Model pruned = m;
  const PassContext ctx = RunPass(pruned, "prune_channels", {{"ratio", 0.5}, {"round_to", 1}, {"importance", "bn"}});
  EXPECT_EQ(Values(Init(pruned.graph, "bn.mean")), (std::vector<float>{mean[4], mean[5], mean[6], mean[7]}))
      << ::testing::PrintToString(Notes(ctx));
  ASSERT_TRUE(ctx.details().contains("layers"));
  EXPECT_EQ(ctx.details().at("layers")[0].at("method"), "bn");
}

// Residual: a = Relu(ConvA(x)); b = ConvB(a); s = Relu(a + b); y = ConvC(s). ConvA and ConvB share one
// group; ConvB's input channels follow too.
TEST(PruneChannels, ResidualAddMergesGroups) {
  const std::vector<int64_t> in_dims = {1, 3, 5, 5};
  Model m = Start(in_dims);
  Graph& g = m.graph;
  AddOutput(m, "y", {1, 4, 5, 5});
  g.initializers.push_back(RandomFloats({8, 3, 1, 1}, 1, "WA"));
  g.initializers.push_back(RandomFloats({8}, 2, "bA"));
  g.initializers.push_back(RandomFloats({8, 8, 3, 3}, 3, "WB"));
  g.initializers.push_back(RandomFloats({8}, 4, "bB"));
  g.initializers.push_back(RandomFloats({4, 8, 1, 1}, 5, "WC"));
  g.nodes.push_back(MakeNode("Conv", {"x", "WA", "bA"}, {"ca"}, {}, "convA"));
  g.nodes.push_back(MakeNode("Relu", {"ca"}, {"a"}, {}, "reluA"));
  g.nodes.push_back(MakeNode("Conv", {"a", "WB", "bB"}, {"b"}, {Attribute::Ints("pads", {1, 1, 1, 1})}, "convB"));
  g.nodes.push_back(MakeNode("Add", {"a", "b"}, {"s"}, {}, "add"));
  g.nodes.push_back(MakeNode("Relu", {"s"}, {"r"}, {}, "relu"));
  g.nodes.push_back(MakeNode("Conv", {"r", "WC"}, {"y"}, {}, "convC"));
  const std::vector<int64_t> weak = {1, 2, 6, 7};
  ScaleSlices(g, "WA", 0, weak, kWeak);
  ScaleSlices(g, "WB", 0, weak, kWeak);
  Model zeroed = m;
  for (const char* t : {"WA", "bA", "WB", "bB"}) Zero(zeroed.graph, t, 0, weak);
  Model pruned = m;
  const PassContext ctx = RunPass(pruned, "prune_channels", kHalf);
  EXPECT_EQ(Dims(pruned, "WA"), (std::vector<int64_t>{4, 3, 1, 1}));
  EXPECT_EQ(Dims(pruned, "bA"), (std::vector<int64_t>{4}));
  EXPECT_EQ(Dims(pruned, "WB"), (std::vector<int64_t>{4, 4, 3, 3}));
  EXPECT_EQ(Dims(pruned, "bB"), (std::vector<int64_t>{4}));
  EXPECT_EQ(Dims(pruned, "WC"), (std::vector<int64_t>{4, 4, 1, 1}));
  ExpectSameAsZeroed(zeroed, pruned, in_dims);
  ASSERT_EQ(ctx.details().at("layers").size(), 2u);  // convA and convB, one group
  EXPECT_EQ(Counter(ctx, "groups_pruned"), 1);
}

// Concat maps channels by offset: ConvA's 4 and ConvB's 6 channels are two groups; ConvC's input is cut
// at both offsets.
TEST(PruneChannels, ConcatMapsChannelsByOffset) {
  const std::vector<int64_t> in_dims = {1, 3, 4, 4};
  Model m = Start(in_dims);
  Graph& g = m.graph;
  AddOutput(m, "y", {1, 2, 4, 4});
  g.initializers.push_back(RandomFloats({4, 3, 1, 1}, 1, "WA"));
  g.initializers.push_back(RandomFloats({6, 3, 1, 1}, 2, "WB"));
  g.initializers.push_back(RandomFloats({6}, 3, "bB"));
  g.initializers.push_back(RandomFloats({2, 10, 1, 1}, 4, "WC"));
  g.nodes.push_back(MakeNode("Conv", {"x", "WA"}, {"a"}, {}, "convA"));
  g.nodes.push_back(MakeNode("Conv", {"x", "WB", "bB"}, {"b"}, {}, "convB"));
  g.nodes.push_back(MakeNode("Concat", {"a", "b"}, {"c"}, {Attribute::Int("axis", 1)}, "concat"));
  g.nodes.push_back(MakeNode("Sigmoid", {"c"}, {"s"}, {}, "sigmoid"));
  g.nodes.push_back(MakeNode("Conv", {"s", "WC"}, {"y"}, {}, "convC"));
  ScaleSlices(g, "WA", 0, {1, 2}, kWeak);
  ScaleSlices(g, "WB", 0, {0, 4, 5}, kWeak);
  // Sigmoid(0) = 0.5, not 0: the zeroed original also drops ConvC's input columns 1, 2, 4, 8, 9.
  Model zeroed = m;
  Zero(zeroed.graph, "WC", 1, {1, 2, 4, 8, 9});
  Model pruned = m;
  const PassContext ctx = RunPass(pruned, "prune_channels", kHalf);
  EXPECT_EQ(Dims(pruned, "WA"), (std::vector<int64_t>{2, 3, 1, 1}));
  EXPECT_EQ(Dims(pruned, "WB"), (std::vector<int64_t>{3, 3, 1, 1}));
  EXPECT_EQ(Dims(pruned, "bB"), (std::vector<int64_t>{3}));
  EXPECT_EQ(Dims(pruned, "WC"), (std::vector<int64_t>{2, 5, 1, 1}));
  ExpectSameAsZeroed(zeroed, pruned, in_dims);
  EXPECT_EQ(Counter(ctx, "groups_pruned"), 2);
  EXPECT_EQ(Counter(ctx, "channels_removed"), 5);
}

// Depthwise Conv (group = channels): its channel k is tied to input channel k, the group attribute follows.
TEST(PruneChannels, DepthwiseConvTiesInputAndOutput) {
  const std::vector<int64_t> in_dims = {1, 3, 5, 5};
  Model m = Start(in_dims);
  Graph& g = m.graph;
  AddOutput(m, "y", {1, 4, 5, 5});
  g.initializers.push_back(RandomFloats({8, 3, 1, 1}, 1, "WA"));
  g.initializers.push_back(RandomFloats({8, 1, 3, 3}, 2, "WD"));
  g.initializers.push_back(RandomFloats({8}, 3, "bD"));
  g.initializers.push_back(RandomFloats({4, 8, 1, 1}, 4, "WC"));
  g.nodes.push_back(MakeNode("Conv", {"x", "WA"}, {"a"}, {}, "convA"));
  g.nodes.push_back(MakeNode("Relu", {"a"}, {"ra"}, {}, "reluA"));
  g.nodes.push_back(MakeNode("Conv", {"ra", "WD", "bD"}, {"d"},
                             {Attribute::Int("group", 8), Attribute::Ints("pads", {1, 1, 1, 1})}, "dw"));
  g.nodes.push_back(MakeNode("Relu", {"d"}, {"rd"}, {}, "reluD"));
  g.nodes.push_back(MakeNode("Conv", {"rd", "WC"}, {"y"}, {}, "convC"));
  const std::vector<int64_t> weak = {0, 1, 4, 5};
  ScaleSlices(g, "WA", 0, weak, kWeak);
  ScaleSlices(g, "WD", 0, weak, kWeak);
  Model zeroed = m;
  for (const char* t : {"WA", "WD", "bD"}) Zero(zeroed.graph, t, 0, weak);
  Model pruned = m;
  RunPass(pruned, "prune_channels", kHalf);
  EXPECT_EQ(Dims(pruned, "WA"), (std::vector<int64_t>{4, 3, 1, 1}));
  EXPECT_EQ(Dims(pruned, "WD"), (std::vector<int64_t>{4, 1, 3, 3}));
  EXPECT_EQ(Dims(pruned, "bD"), (std::vector<int64_t>{4}));
  EXPECT_EQ(Dims(pruned, "WC"), (std::vector<int64_t>{4, 4, 1, 1}));
  EXPECT_EQ(pruned.graph.nodes[2].AttrInt("group", 0), 4);
  ExpectSameAsZeroed(zeroed, pruned, in_dims);
}

// Grouped Conv (2 groups of 4): whole groups go, with the producer channels feeding them.
TEST(PruneChannels, GroupedConvRemovesWholeGroups) {
  const std::vector<int64_t> in_dims = {1, 3, 5, 5};
  Model m = Start(in_dims);
  Graph& g = m.graph;
  AddOutput(m, "y", {1, 2, 5, 5});
  g.initializers.push_back(RandomFloats({8, 3, 1, 1}, 1, "WA"));
  g.initializers.push_back(RandomFloats({8, 4, 3, 3}, 2, "WG"));
  g.initializers.push_back(RandomFloats({2, 8, 1, 1}, 4, "WC"));
  g.nodes.push_back(MakeNode("Conv", {"x", "WA"}, {"a"}, {}, "convA"));
  g.nodes.push_back(MakeNode("Conv", {"a", "WG"}, {"gc"},
                             {Attribute::Int("group", 2), Attribute::Ints("pads", {1, 1, 1, 1})}, "grouped"));
  g.nodes.push_back(MakeNode("Conv", {"gc", "WC"}, {"y"}, {}, "convC"));
  const std::vector<int64_t> weak = {0, 1, 2, 3};
  ScaleSlices(g, "WA", 0, weak, kWeak);
  ScaleSlices(g, "WG", 0, weak, kWeak);
  Model zeroed = m;
  Zero(zeroed.graph, "WA", 0, weak);
  Zero(zeroed.graph, "WG", 0, weak);
  Model pruned = m;
  RunPass(pruned, "prune_channels", kHalf);
  EXPECT_EQ(Dims(pruned, "WA"), (std::vector<int64_t>{4, 3, 1, 1}));
  EXPECT_EQ(Dims(pruned, "WG"), (std::vector<int64_t>{4, 4, 3, 3}));
  EXPECT_EQ(Dims(pruned, "WC"), (std::vector<int64_t>{2, 4, 1, 1}));
  EXPECT_EQ(pruned.graph.nodes[1].AttrInt("group", 0), 1);
  ExpectSameAsZeroed(zeroed, pruned, in_dims);
}

// Conv -> MaxPool -> Flatten -> Gemm: each channel is a block of 4 features of the Gemm input.
TEST(PruneChannels, FlattenIntoGemmExpandsChannelBlocks) {
  const std::vector<int64_t> in_dims = {1, 3, 4, 4};
  Model m = Start(in_dims);
  Graph& g = m.graph;
  AddOutput(m, "y", {1, 5});
  g.initializers.push_back(RandomFloats({6, 3, 3, 3}, 1, "W1"));
  g.initializers.push_back(RandomFloats({6}, 2, "b1"));
  g.initializers.push_back(RandomFloats({5, 24}, 3, "B"));
  g.initializers.push_back(RandomFloats({5}, 4, "C"));
  g.nodes.push_back(MakeNode("Conv", {"x", "W1", "b1"}, {"c"}, {Attribute::Ints("pads", {1, 1, 1, 1})}, "conv"));
  g.nodes.push_back(MakeNode("Relu", {"c"}, {"r"}, {}, "relu"));
  g.nodes.push_back(MakeNode("MaxPool", {"r"}, {"p"},
                             {Attribute::Ints("kernel_shape", {2, 2}), Attribute::Ints("strides", {2, 2})}, "pool"));
  g.nodes.push_back(MakeNode("Flatten", {"p"}, {"f"}, {}, "flatten"));
  g.nodes.push_back(MakeNode("Gemm", {"f", "B", "C"}, {"y"}, {Attribute::Int("transB", 1)}, "fc"));
  const std::vector<int64_t> weak = {2, 3, 5};
  ScaleSlices(g, "W1", 0, weak, kWeak);
  Model zeroed = m;
  Zero(zeroed.graph, "W1", 0, weak);
  Zero(zeroed.graph, "b1", 0, weak);
  Model pruned = m;
  RunPass(pruned, "prune_channels", kHalf);
  EXPECT_EQ(Dims(pruned, "W1"), (std::vector<int64_t>{3, 3, 3, 3}));
  EXPECT_EQ(Dims(pruned, "B"), (std::vector<int64_t>{5, 12}));
  EXPECT_EQ(Dims(pruned, "C"), (std::vector<int64_t>{5}));
  // Gemm columns 4..7 (channel 1) now sit at 4..7, channel 4's 16..19 at 8..11.
  EXPECT_EQ(Init(pruned.graph, "B").data<float>()[8], Init(m.graph, "B").data<float>()[16]);
  ExpectSameAsZeroed(zeroed, pruned, in_dims);
}

// Conv -> Reshape [0, 24] -> MatMul: the shape constant is rewritten to [0, 12].
TEST(PruneChannels, ReshapeIntoMatMulRewritesShape) {
  const std::vector<int64_t> in_dims = {1, 3, 2, 2};
  Model m = Start(in_dims);
  Graph& g = m.graph;
  AddOutput(m, "y", {1, 5});
  g.initializers.push_back(RandomFloats({6, 3, 1, 1}, 1, "W1"));
  g.initializers.push_back(Tensor::FromVector<int64_t>({2}, {0, 24}, "shape"));
  g.initializers.push_back(RandomFloats({24, 5}, 3, "B"));
  g.nodes.push_back(MakeNode("Conv", {"x", "W1"}, {"c"}, {}, "conv"));
  g.nodes.push_back(MakeNode("Reshape", {"c", "shape"}, {"f"}, {}, "reshape"));
  g.nodes.push_back(MakeNode("MatMul", {"f", "B"}, {"y"}, {}, "matmul"));
  const std::vector<int64_t> weak = {0, 1, 4};
  ScaleSlices(g, "W1", 0, weak, kWeak);
  Model zeroed = m;
  Zero(zeroed.graph, "W1", 0, weak);
  Model pruned = m;
  RunPass(pruned, "prune_channels", kHalf);
  EXPECT_EQ(Dims(pruned, "W1"), (std::vector<int64_t>{3, 3, 1, 1}));
  EXPECT_EQ(Int64Values(Init(pruned.graph, "shape")), (std::vector<int64_t>{0, 12}));
  EXPECT_EQ(Dims(pruned, "B"), (std::vector<int64_t>{12, 5}));
  ExpectSameAsZeroed(zeroed, pruned, in_dims);
}

// Conv0 -> ConvTranspose (output channels on dim 1 of its weight) -> Relu -> Conv2.
TEST(PruneChannels, ConvTransposeOutputChannelsOnDim1) {
  const std::vector<int64_t> in_dims = {1, 3, 3, 3};
  Model m = Start(in_dims);
  Graph& g = m.graph;
  AddOutput(m, "y", {1, 4, 6, 6});
  g.initializers.push_back(RandomFloats({6, 3, 1, 1}, 1, "W0"));
  g.initializers.push_back(RandomFloats({6, 8, 2, 2}, 2, "WT"));
  g.initializers.push_back(RandomFloats({8}, 3, "bT"));
  g.initializers.push_back(RandomFloats({4, 8, 1, 1}, 4, "W2"));
  g.nodes.push_back(MakeNode("Conv", {"x", "W0"}, {"c0"}, {}, "conv0"));
  g.nodes.push_back(MakeNode("ConvTranspose", {"c0", "WT", "bT"}, {"t"}, {Attribute::Ints("strides", {2, 2})}, "up"));
  g.nodes.push_back(MakeNode("Relu", {"t"}, {"r"}, {}, "relu"));
  g.nodes.push_back(MakeNode("Conv", {"r", "W2"}, {"y"}, {}, "conv2"));
  ScaleSlices(g, "W0", 0, {0, 2, 4}, kWeak);
  ScaleSlices(g, "WT", 1, {3, 4, 5, 6}, kWeak);
  Model zeroed = m;
  Zero(zeroed.graph, "W0", 0, {0, 2, 4});
  Zero(zeroed.graph, "WT", 1, {3, 4, 5, 6});
  Zero(zeroed.graph, "bT", 0, {3, 4, 5, 6});
  Model pruned = m;
  const PassContext ctx = RunPass(pruned, "prune_channels", kHalf);
  EXPECT_EQ(Dims(pruned, "W0"), (std::vector<int64_t>{3, 3, 1, 1}));
  EXPECT_EQ(Dims(pruned, "WT"), (std::vector<int64_t>{3, 4, 2, 2}));
  EXPECT_EQ(Dims(pruned, "bT"), (std::vector<int64_t>{4}));
  EXPECT_EQ(Dims(pruned, "W2"), (std::vector<int64_t>{4, 4, 1, 1}));
  ExpectSameAsZeroed(zeroed, pruned, in_dims);
  EXPECT_EQ(Counter(ctx, "groups_pruned"), 2);
}

// MatMul(W1) + b1 -> LayerNormalization over the features -> MatMul(W2): scale and bias are sliced. Layer
// normalization over fewer features is not the original with zeros (the mean and variance change), so the
// expectation is the original sliced by hand.
TEST(PruneChannels, LayerNormOverChannelsSlicesScaleAndBias) {
  const std::vector<int64_t> in_dims = {1, 5, 4};
  Model m = Start(in_dims);
  Graph& g = m.graph;
  AddOutput(m, "y", {1, 5, 3});
  g.initializers.push_back(RandomFloats({4, 8}, 1, "W1"));
  g.initializers.push_back(RandomFloats({8}, 2, "b1"));
  g.initializers.push_back(RandomFloats({8}, 3, "gamma"));
  g.initializers.push_back(RandomFloats({8}, 4, "beta"));
  g.initializers.push_back(RandomFloats({8, 3}, 5, "W2"));
  g.nodes.push_back(MakeNode("MatMul", {"x", "W1"}, {"h"}, {}, "fc1"));
  g.nodes.push_back(MakeNode("Add", {"h", "b1"}, {"hb"}, {}, "bias1"));
  g.nodes.push_back(MakeNode("LayerNormalization", {"hb", "gamma", "beta"}, {"n"}, {}, "ln"));
  g.nodes.push_back(MakeNode("MatMul", {"n", "W2"}, {"y"}, {}, "fc2"));
  ScaleSlices(g, "W1", 1, {1, 3, 5, 7}, kWeak);
  const std::vector<int64_t> keep = {0, 2, 4, 6};
  Model expected = m;
  Keep(expected.graph, "W1", 1, keep);
  for (const char* t : {"b1", "gamma", "beta"}) Keep(expected.graph, t, 0, keep);
  Keep(expected.graph, "W2", 0, keep);
  Model pruned = m;
  RunPass(pruned, "prune_channels", kHalf);
  EXPECT_EQ(Dims(pruned, "W1"), (std::vector<int64_t>{4, 4}));
  EXPECT_EQ(Dims(pruned, "b1"), (std::vector<int64_t>{4}));
  EXPECT_EQ(Dims(pruned, "gamma"), (std::vector<int64_t>{4}));
  EXPECT_EQ(Dims(pruned, "beta"), (std::vector<int64_t>{4}));
  EXPECT_EQ(Dims(pruned, "W2"), (std::vector<int64_t>{4, 3}));
  ExpectSameAsZeroed(expected, pruned, in_dims);
}

// A producer whose channels reach a graph output keeps them all; nothing else to prune.
TEST(PruneChannels, ChannelsReachingGraphOutputStay) {
  Model m = Start({1, 3, 4, 4});
  Graph& g = m.graph;
  AddOutput(m, "y", {1, 8, 4, 4});
  g.initializers.push_back(RandomFloats({8, 3, 1, 1}, 1, "W1"));
  g.nodes.push_back(MakeNode("Conv", {"x", "W1"}, {"c"}, {}, "conv"));
  g.nodes.push_back(MakeNode("Relu", {"c"}, {"y"}, {}, "relu"));
  const Model before = m;
  const PassContext ctx = RunPass(m, "prune_channels", kHalf);
  EXPECT_EQ(Dims(m, "W1"), (std::vector<int64_t>{8, 3, 1, 1}));
  EXPECT_EQ(Counter(ctx, "groups_pruned"), 0);
  EXPECT_EQ(Counter(ctx, "groups_kept"), 1);
  EXPECT_TRUE(HasNote(ctx, "kept channels of 'conv' (Conv): channels reach graph output 'y'"))
      << ::testing::PrintToString(Notes(ctx));
  EXPECT_FALSE(ctx.details().contains("layers"));
}

// An operator the analysis does not understand (LRN mixes neighbouring channels) makes the group
// unprunable, with a note naming the node; the rest of the graph is still pruned.
TEST(PruneChannels, UnknownOperatorBlocksItsGroup) {
  const std::vector<int64_t> in_dims = {1, 3, 4, 4};
  Model m = Start(in_dims);
  Graph& g = m.graph;
  AddOutput(m, "y", {1, 2, 4, 4});
  g.initializers.push_back(RandomFloats({8, 3, 1, 1}, 1, "W1"));
  g.initializers.push_back(RandomFloats({8, 8, 1, 1}, 2, "W2"));
  g.initializers.push_back(RandomFloats({2, 8, 1, 1}, 3, "W3"));
  g.nodes.push_back(MakeNode("Conv", {"x", "W1"}, {"c1"}, {}, "conv1"));
  g.nodes.push_back(MakeNode("LRN", {"c1"}, {"l"}, {Attribute::Int("size", 3)}, "lrn"));
  g.nodes.push_back(MakeNode("Conv", {"l", "W2"}, {"c2"}, {}, "conv2"));
  g.nodes.push_back(MakeNode("Conv", {"c2", "W3"}, {"y"}, {}, "conv3"));
  Model pruned = m;
  const PassContext ctx = RunPass(pruned, "prune_channels", kHalf);
  EXPECT_EQ(Dims(pruned, "W1"), (std::vector<int64_t>{8, 3, 1, 1}));
  EXPECT_EQ(Dims(pruned, "W2"), (std::vector<int64_t>{4, 8, 1, 1}));
  EXPECT_EQ(Dims(pruned, "W3"), (std::vector<int64_t>{2, 4, 1, 1}));
  EXPECT_TRUE(HasNote(ctx, "kept channels of 'conv1' (Conv): 'lrn' (LRN): operator LRN not understood"))
      << ::testing::PrintToString(Notes(ctx));
  EXPECT_EQ(Counter(ctx, "groups_pruned"), 1);
}

// A weight read by two Convs in different layouts (as the 1x1 weight of one and, transposed, of another)
// cannot be sliced for both.
TEST(PruneChannels, WeightReadInAnotherLayoutStays) {
  Model m = Start({1, 8, 4, 4});
  Graph& g = m.graph;
  AddOutput(m, "y", {1, 8, 4, 4});
  g.initializers.push_back(RandomFloats({8, 8, 1, 1}, 1, "W"));
  g.initializers.push_back(RandomFloats({8, 8, 1, 1}, 2, "W3"));
  g.nodes.push_back(MakeNode("Conv", {"x", "W"}, {"c1"}, {}, "conv1"));
  g.nodes.push_back(MakeNode("Conv", {"c1", "W"}, {"c2"}, {}, "conv2"));
  g.nodes.push_back(MakeNode("Conv", {"c2", "W3"}, {"y"}, {}, "conv3"));
  const PassContext ctx = RunPass(m, "prune_channels", kHalf);
  EXPECT_EQ(Dims(m, "W"), (std::vector<int64_t>{8, 8, 1, 1}));
  EXPECT_EQ(Dims(m, "W3"), (std::vector<int64_t>{8, 8, 1, 1}));
  EXPECT_TRUE(HasNote(ctx, "weight 'W' read in another layout")) << ::testing::PrintToString(Notes(ctx));
}

// The result is verified (shape inference and operator checks) before it is kept: a group whose pruned
// graph does not check stays, with a note. Here the declared output (6x6) disagrees with what the
// convolutions compute (4x4), so no pruned graph checks.
TEST(PruneChannels, GraphThatDoesNotCheckIsLeftAlone) {
  Model m = Start({1, 3, 6, 6});
  Graph& g = m.graph;
  AddOutput(m, "y", {1, 4, 6, 6});
  g.initializers.push_back(RandomFloats({8, 3, 3, 3}, 1, "W1"));
  g.initializers.push_back(RandomFloats({4, 8, 1, 1}, 3, "W2"));
  g.nodes.push_back(MakeNode("Conv", {"x", "W1"}, {"c1"}, {}, "conv1"));
  g.nodes.push_back(MakeNode("Conv", {"c1", "W2"}, {"y"}, {}, "conv2"));
  const PassContext ctx = RunPass(m, "prune_channels", kHalf);
  EXPECT_EQ(Dims(m, "W1"), (std::vector<int64_t>{8, 3, 3, 3}));
  EXPECT_EQ(Dims(m, "W2"), (std::vector<int64_t>{4, 8, 1, 1}));
  EXPECT_TRUE(HasNote(ctx, "kept channels of 'conv1' (Conv): the pruned graph's shapes do not check"))
      << ::testing::PrintToString(Notes(ctx));
}

TEST(PruneChannels, RoundsKeptWidthToMultiples) {
  // 40 channels, ratio 0.3: 28 kept, rounded up to 32 with round_to 8.
  Model m = Start({1, 3, 2, 2});
  Graph& g = m.graph;
  AddOutput(m, "y", {1, 2, 2, 2});
  g.initializers.push_back(RandomFloats({40, 3, 1, 1}, 1, "W1"));
  g.initializers.push_back(RandomFloats({2, 40, 1, 1}, 2, "W2"));
  g.nodes.push_back(MakeNode("Conv", {"x", "W1"}, {"c"}, {}, "conv1"));
  g.nodes.push_back(MakeNode("Conv", {"c", "W2"}, {"y"}, {}, "conv2"));
  Model a = m;
  RunPass(a, "prune_channels", {{"ratio", 0.3}});
  EXPECT_EQ(Dims(a, "W1"), (std::vector<int64_t>{32, 3, 1, 1}));
  // 12 channels: round_to 8 halves to 2 (12 < 4 * 4); half of 12 is 6, a multiple of 2.
  Model b = Start({1, 3, 2, 2});
  AddOutput(b, "y", {1, 2, 2, 2});
  b.graph.initializers.push_back(RandomFloats({12, 3, 1, 1}, 1, "W1"));
  b.graph.initializers.push_back(RandomFloats({2, 12, 1, 1}, 2, "W2"));
  b.graph.nodes = m.graph.nodes;
  RunPass(b, "prune_channels", {{"ratio", 0.5}});
  EXPECT_EQ(Dims(b, "W1"), (std::vector<int64_t>{6, 3, 1, 1}));
  // exclude_nodes keeps the group whole.
  Model c = m;
  const PassContext ctx = RunPass(c, "prune_channels", {{"ratio", 0.5}, {"exclude_nodes", {"conv1"}}});
  EXPECT_EQ(Dims(c, "W1"), (std::vector<int64_t>{40, 3, 1, 1}));
  EXPECT_TRUE(HasNote(ctx, "excluded"));
}

// Per-channel sums and sums of squares measured by the executor on in-memory inputs, as
// DataCalibrationSource does on a data folder.
class ExecSource : public CalibrationSource {
 public:
  explicit ExecSource(std::vector<Tensor> inputs) : inputs_(std::move(inputs)) {}
  const CalibrationTable& Get(const Model&, const std::vector<std::string>&) override { return table_; }
  std::string data_sha256() const override { return "exec"; }
  bool has_data() const override { return true; }
  std::vector<ChannelSquares> ChannelSumSquares(const Model& model, const std::vector<ChannelRequest>& req) override {
    std::vector<ChannelSquares> out(req.size());
    Executor exec(model);
    const ValueObserver observe = [&](const std::string& name, const Tensor& v) {
      for (size_t i = 0; i < req.size(); ++i) {
        if (req[i].tensor != name) continue;
        const int64_t axis = req[i].axis < 0 ? req[i].axis + v.rank() : req[i].axis;
        int64_t inner = 1;
        for (int64_t d = axis + 1; d < v.rank(); ++d) inner *= v.dims()[static_cast<size_t>(d)];
        const int64_t c = v.dims()[static_cast<size_t>(axis)];
        out[i].sum_sq.assign(static_cast<size_t>(c), 0.0);
        out[i].sum.assign(static_cast<size_t>(c), 0.0);
        for (int64_t k = 0; k < v.numel(); ++k) {
          const double x = v.data<float>()[k];
          out[i].sum_sq[static_cast<size_t>((k / inner) % c)] += x * x;
          out[i].sum[static_cast<size_t>((k / inner) % c)] += x;
        }
        out[i].count = v.numel() / c;
      }
    };
    exec.Run(inputs_, &observe);
    return out;
  }
  void ForEachBatch(const Model& model, const std::vector<std::string>& tensors,
                    const std::function<void(size_t, const Tensor&)>& fn) override {
    Executor exec(model);
    const ValueObserver observe = [&](const std::string& name, const Tensor& v) {
      for (size_t i = 0; i < tensors.size(); ++i) {
        if (tensors[i] == name) fn(i, v);
      }
    };
    exec.Run(inputs_, &observe);
  }

 private:
  CalibrationTable table_;
  std::vector<Tensor> inputs_;
};

// With calibration data the default importance is activation-aware (the consumer's weights for a channel
// times the channel's spread at its input) and each removed channel's mean is folded into the consumer's
// bias. conv1's channels 0..3 have large weights but conv2 barely reads them (their columns scaled by
// kWeak): act removes them, where l2 would have removed 4..7. On a 1x1 consumer the compensated model is
// the original with those channels held at their calibration mean.
TEST(PruneChannels, ActivationImportanceAndMeanCompensation) {
  const std::vector<int64_t> in_dims = {1, 3, 4, 4};
  Model m = Start(in_dims);
  Graph& g = m.graph;
  AddOutput(m, "y", {1, 4, 4, 4});
  g.initializers.push_back(RandomFloats({8, 3, 1, 1}, 1, "W1"));
  g.initializers.push_back(RandomFloats({8}, 2, "b1"));
  g.initializers.push_back(RandomFloats({4, 8, 1, 1}, 3, "W2"));
  g.initializers.push_back(RandomFloats({4}, 4, "b2"));
  g.nodes.push_back(MakeNode("Conv", {"x", "W1", "b1"}, {"c1"}, {}, "conv1"));
  g.nodes.push_back(MakeNode("Relu", {"c1"}, {"r1"}, {}, "relu"));
  g.nodes.push_back(MakeNode("Conv", {"r1", "W2", "b2"}, {"y"}, {}, "conv2"));
  ScaleSlices(g, "W1", 0, {4, 5, 6, 7}, 0.2f);
  float* b1 = Init(g, "b1").mutable_data<float>();
  for (int64_t c = 0; c < 8; ++c) b1[c] = std::fabs(b1[c]) + 0.5f;  // channels with a mean
  const std::vector<int64_t> removed = {0, 1, 2, 3};
  ScaleSlices(g, "W2", 1, removed, kWeak);

  const std::vector<Tensor> calib = {RandomFloats({2, 3, 4, 4}, 99)};
  ExecSource source(calib);
  // The mean of relu(conv1) per channel on the calibration batch, measured the same way.
  const auto stats = source.ChannelSumSquares(m, {{"r1", 1}});
  Model held = m;
  Zero(held.graph, "W1", 0, removed);
  for (int64_t c : removed) {
    Init(held.graph, "b1").mutable_data<float>()[c] =
        static_cast<float>(stats[0].sum[static_cast<size_t>(c)] / static_cast<double>(stats[0].count));
  }

  Model pruned = m;
  const PassInfo* info = FindPass("prune_channels");
  auto pass =
      info->create(ValidatePassOptions(*info, {{"ratio", 0.5}, {"round_to", 1}, {"update", false}}, "test"));
  PassContext ctx(1, &source);
  pass->Run(pruned, ctx);
  VerifyModel(pruned);
  EXPECT_EQ(Dims(pruned, "W1"), (std::vector<int64_t>{4, 3, 1, 1}));
  EXPECT_EQ(Dims(pruned, "W2"), (std::vector<int64_t>{4, 4, 1, 1}));
  // Channels 4..7 stay.
  EXPECT_EQ(Values(Init(pruned.graph, "b1")),
            (std::vector<float>{Values(Init(m.graph, "b1"))[4], Values(Init(m.graph, "b1"))[5],
                                Values(Init(m.graph, "b1"))[6], Values(Init(m.graph, "b1"))[7]}));
  EXPECT_EQ(ctx.details().at("layers")[0].at("method"), "act");
  EXPECT_EQ(Counter(ctx, "consumers_compensated"), 1);
  EXPECT_LE(MaxAbsDiff(RunModel(held, calib), RunModel(pruned, calib)), kCompensationTolerance);
  // Without compensation the difference is the removed channels' contribution, far above the tolerance.
  Model dropped = m;
  Zero(dropped.graph, "W1", 0, removed);
  Zero(dropped.graph, "b1", 0, removed);
  EXPECT_GT(MaxAbsDiff(RunModel(dropped, calib), RunModel(pruned, calib)), 100 * kCompensationTolerance);
}

// The re-fit (update, the default with calibration data): conv2 (3x3, K = 16 x 9 + bias) loses 8 of its 16
// input channels; least squares on its calibration patches moves its kept weights and bias so that its
// output on the calibration data stays much closer to the original than folding the removed channels'
// means into the bias alone (update false). The shapes are those of plain channel removal.
TEST(PruneChannels, RefitBeatsMeanFoldingOnTheCalibrationData) {
  Model m = Start({1, 4, 6, 6});
  Graph& g = m.graph;
  AddOutput(m, "y", {1, 8, 6, 6});
  g.initializers.push_back(RandomFloats({16, 4, 3, 3}, 11, "W1"));
  g.initializers.push_back(RandomFloats({16}, 12, "b1"));
  g.initializers.push_back(RandomFloats({8, 16, 3, 3}, 13, "W2"));
  g.initializers.push_back(RandomFloats({8}, 14, "b2"));
  const Attribute pads = Attribute::Ints("pads", {1, 1, 1, 1});
  g.nodes.push_back(MakeNode("Conv", {"x", "W1", "b1"}, {"c1"}, {pads}, "conv1"));
  g.nodes.push_back(MakeNode("Relu", {"c1"}, {"r1"}, {}, "relu"));
  g.nodes.push_back(MakeNode("Conv", {"r1", "W2", "b2"}, {"y"}, {pads}, "conv2"));
  float* b1 = Init(g, "b1").mutable_data<float>();
  for (int64_t c = 0; c < 16; ++c) b1[c] = std::fabs(b1[c]) + 0.2f;  // channels with a mean
  // 8 samples x 36 positions = 288 patches for 73 kept columns.
  const std::vector<Tensor> calib = {RandomFloats({8, 4, 6, 6}, 21)};
  ExecSource source(calib);
  const std::vector<Tensor> reference = RunModel(m, calib);
  auto prune = [&](bool update, PassContext* ctx) {
    Model out = m;
    const PassInfo* info = FindPass("prune_channels");
    info->create(ValidatePassOptions(*info, {{"ratio", 0.5}, {"round_to", 1}, {"update", update}}, "test"))
        ->Run(out, *ctx);
    VerifyModel(out);
    return out;
  };
  auto error = [&](const Model& pruned) {
    const std::vector<Tensor> y = RunModel(pruned, calib);
    double e = 0;
    for (int64_t i = 0; i < y[0].numel(); ++i) {
      const double d = static_cast<double>(y[0].data<float>()[i]) - reference[0].data<float>()[i];
      e += d * d;
    }
    return e;
  };
  PassContext fold_ctx(1, &source), refit_ctx(1, &source);
  const Model folded = prune(false, &fold_ctx);
  const Model refitted = prune(true, &refit_ctx);
  for (const Model* p : {&folded, &refitted}) {
    EXPECT_EQ(Dims(*p, "W1"), (std::vector<int64_t>{8, 4, 3, 3}));
    EXPECT_EQ(Dims(*p, "b1"), (std::vector<int64_t>{8}));
    EXPECT_EQ(Dims(*p, "W2"), (std::vector<int64_t>{8, 8, 3, 3}));
    EXPECT_EQ(Dims(*p, "b2"), (std::vector<int64_t>{8}));
  }
  EXPECT_EQ(Counter(fold_ctx, "consumers_compensated"), 1);
  EXPECT_EQ(Counter(refit_ctx, "consumers_refitted"), 1);
  EXPECT_EQ(Counter(refit_ctx, "consumers_compensated"), 0);
  // Both prune the same channels (the ranking does not depend on update).
  EXPECT_EQ(Values(*folded.graph.FindInitializer("W1")), Values(*refitted.graph.FindInitializer("W1")));
  const double e_fold = error(folded), e_refit = error(refitted);
  std::cout << "output error on the calibration data: mean folding " << e_fold << ", re-fit " << e_refit << "\n";
  EXPECT_LT(e_refit * kRefitGain, e_fold);
  // The pass's own accounting (relative, from H) agrees in direction.
  const auto& c = refit_ctx.details().at("consumers").at(0);
  EXPECT_EQ(c.at("node"), "conv2");
  EXPECT_LT(c.at("output_error").get<double>() * kRefitGain, c.at("output_error_mean_fold").get<double>());
}

}  // namespace
}  // namespace compress
