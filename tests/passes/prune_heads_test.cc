// prune_channels on transformer blocks: whole attention heads (separate and fused Q/K/V projections, shape
// constants and Concat-built shapes) and the MLP hidden width through an Erf GELU. Each test makes a known
// set of heads or features the least important, prunes, and checks the exact shapes and shape constants
// afterwards and that the pruned model computes what the original computes with those heads or features
// zeroed.
#include <gtest/gtest.h>

#include "cleanup_test_helpers.h"

namespace compress {
namespace {

using namespace testing;

// The pruned model drops terms that are exactly zero in the zeroed original (a zeroed head's values are
// zero, so its attention output and its share of the output projection are zero); only summation order
// differs. Sums here have at most ~10 terms of magnitude below ~3: float32 rounding stays under 1e-5.
constexpr double kHeadsTolerance = 1e-5;
// Factor applied to the weights of the heads or features a test wants removed.
constexpr float kWeak = 0.01f;

constexpr int64_t kTokens = 3, kEmbed = 6, kHeads = 4, kDim = 2, kOut = 5;

Tensor& Init(Graph& g, const std::string& name) {
  Tensor* t = g.FindInitializer(name);
  if (t == nullptr) throw std::runtime_error("no initializer " + name);
  return *t;
}

std::vector<int64_t> Dims(const Model& m, const std::string& name) {
  const Tensor* t = m.graph.FindInitializer(name);
  return t == nullptr ? std::vector<int64_t>{} : t->dims();
}

const Node& NodeNamed(const Model& m, const std::string& name) {
  for (const auto& n : m.graph.nodes) {
    if (n.name == name) return n;
  }
  throw std::runtime_error("no node " + name);
}

// The int64 constant input `k` of node `node`.
std::vector<int64_t> ConstInput(const Model& m, const std::string& node, size_t k) {
  const Tensor* t = m.graph.FindInitializer(NodeNamed(m, node).inputs.at(k));
  return t == nullptr ? std::vector<int64_t>{} : Int64Values(*t);
}

// Multiplies the slices `idx` of `name` along `dim` by `factor`.
void ScaleSlices(Graph& g, const std::string& name, int64_t dim, const std::vector<int64_t>& idx,
                 float factor) {
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

// Feature indices of heads `heads` in a [.., parts * H * D] projection output.
std::vector<int64_t> HeadColumns(const std::vector<int64_t>& heads, int64_t parts) {
  std::vector<int64_t> cols;
  for (int64_t p = 0; p < parts; ++p) {
    for (int64_t h : heads) {
      for (int64_t d = 0; d < kDim; ++d) cols.push_back((p * kHeads + h) * kDim + d);
    }
  }
  return cols;
}

Model Start() {
  Model m = EmptyModel(17);
  m.graph.inputs.push_back(FloatValue("x", {Dim::Symbolic("N"), Dim::Fixed(kTokens), Dim::Fixed(kEmbed)}));
  m.graph.outputs.push_back(FloatValue("y", {Dim::Symbolic("N"), Dim::Fixed(kTokens), Dim::Fixed(kOut)}));
  return m;
}

// q, k, v [N, H, T, D] -> scores -> Softmax -> attention [N, T, H, D] -> `merge_shape` -> Wo, bo -> y.
void AddAttentionCore(Graph& g, const std::string& q, const std::string& k, const std::string& v,
                      const std::string& merge_shape) {
  g.initializers.push_back(Tensor::FromVector<float>({}, {0.7f}, "scale"));
  g.initializers.push_back(RandomFloats({kHeads * kDim, kOut}, 21, "Wo"));
  g.initializers.push_back(RandomFloats({kOut}, 22, "bo"));
  g.nodes.push_back(MakeNode("Transpose", {k}, {"kt"}, {Attribute::Ints("perm", {0, 1, 3, 2})}, "k_t"));
  g.nodes.push_back(MakeNode("MatMul", {q, "kt"}, {"qk"}, {}, "qk"));
  g.nodes.push_back(MakeNode("Mul", {"qk", "scale"}, {"qks"}, {}, "scale_mul"));
  g.nodes.push_back(MakeNode("Softmax", {"qks"}, {"attn"}, {Attribute::Int("axis", -1)}, "softmax"));
  g.nodes.push_back(MakeNode("MatMul", {"attn", v}, {"av"}, {}, "av"));
  g.nodes.push_back(MakeNode("Transpose", {"av"}, {"avt"}, {Attribute::Ints("perm", {0, 2, 1, 3})}, "av_t"));
  g.nodes.push_back(MakeNode("Reshape", {"avt", merge_shape}, {"merged"}, {}, "merge"));
  g.nodes.push_back(MakeNode("MatMul", {"merged", "Wo"}, {"o"}, {}, "proj"));
  g.nodes.push_back(MakeNode("Add", {"o", "bo"}, {"y"}, {}, "proj_bias"));
}

void ExpectSameAsZeroed(const Model& zeroed, const Model& pruned) {
  const std::vector<Tensor> in = {RandomFloats({2, kTokens, kEmbed}, 99)};
  EXPECT_LE(MaxAbsDiff(RunModel(zeroed, in), RunModel(pruned, in)), kHeadsTolerance);
  const CheckResult check = CheckWithOnnx(pruned);
  EXPECT_TRUE(check.ok) << check.message;
}

// Separate Q, K and V projections (MatMul + bias), each reshaped to [N, T, H, D] by one shared constant
// shape [0, 0, 4, 2] and transposed to [N, H, T, D]; the heads are merged by the constant [0, 0, 8].
Model SeparateQkv() {
  Model m = Start();
  Graph& g = m.graph;
  g.initializers.push_back(Tensor::FromVector<int64_t>({4}, {0, 0, kHeads, kDim}, "split_shape"));
  g.initializers.push_back(Tensor::FromVector<int64_t>({3}, {0, 0, kHeads * kDim}, "merge_shape"));
  uint32_t seed = 1;
  for (const char* p : {"q", "k", "v"}) {
    const std::string s(p);
    g.initializers.push_back(RandomFloats({kEmbed, kHeads * kDim}, seed++, "W" + s));
    g.initializers.push_back(RandomFloats({kHeads * kDim}, seed++, "b" + s));
    g.nodes.push_back(MakeNode("MatMul", {"x", "W" + s}, {s + "_mm"}, {}, s + "_proj"));
    g.nodes.push_back(MakeNode("Add", {s + "_mm", "b" + s}, {s + "_b"}, {}, s + "_bias"));
    g.nodes.push_back(MakeNode("Reshape", {s + "_b", "split_shape"}, {s + "_r"}, {}, s + "_split"));
    g.nodes.push_back(
        MakeNode("Transpose", {s + "_r"}, {s + "_h"}, {Attribute::Ints("perm", {0, 2, 1, 3})}, s + "_heads"));
  }
  AddAttentionCore(g, "q_h", "k_h", "v_h", "merge_shape");
  return m;
}

TEST(PruneHeads, SeparateProjectionsWithConstantShapes) {
  Model m = SeparateQkv();
  const std::vector<int64_t> weak_heads = {1, 2};
  const std::vector<int64_t> cols = HeadColumns(weak_heads, 1);
  for (const char* w : {"Wq", "Wk", "Wv"}) ScaleSlices(m.graph, w, 1, cols, kWeak);
  ScaleSlices(m.graph, "Wo", 0, cols, kWeak);
  Model zeroed = m;
  for (const char* w : {"Wq", "Wk", "Wv"}) ScaleSlices(zeroed.graph, w, 1, cols, 0.0f);
  for (const char* b : {"bq", "bk", "bv"}) ScaleSlices(zeroed.graph, b, 0, cols, 0.0f);
  Model pruned = m;
  // round_to 8 does not apply to heads: half of the 4 heads go.
  const PassContext ctx = RunPass(pruned, "prune_channels", {{"ratio", 0.5}, {"round_to", 8}});
  for (const char* w : {"Wq", "Wk", "Wv"}) EXPECT_EQ(Dims(pruned, w), (std::vector<int64_t>{kEmbed, 4})) << w;
  for (const char* b : {"bq", "bk", "bv"}) EXPECT_EQ(Dims(pruned, b), (std::vector<int64_t>{4})) << b;
  EXPECT_EQ(Dims(pruned, "Wo"), (std::vector<int64_t>{4, kOut}));
  EXPECT_EQ(Dims(pruned, "bo"), (std::vector<int64_t>{kOut}));
  // Heads 0 and 3 stay: Wq keeps columns 0, 1, 6, 7.
  EXPECT_EQ(Init(pruned.graph, "Wq").data<float>()[2], Init(m.graph, "Wq").data<float>()[6]);
  for (const char* r : {"q_split", "k_split", "v_split"}) {
    EXPECT_EQ(ConstInput(pruned, r, 1), (std::vector<int64_t>{0, 0, 2, kDim})) << r;
  }
  EXPECT_EQ(ConstInput(pruned, "merge", 1), (std::vector<int64_t>{0, 0, 4}));
  EXPECT_EQ(pruned.graph.FindInitializer("split_shape"), nullptr);  // no reader left
  ExpectSameAsZeroed(zeroed, pruned);
  EXPECT_EQ(Counter(ctx, "groups_pruned"), 1);
  const auto& layers = ctx.details().at("layers");
  ASSERT_EQ(layers.size(), 3u);  // the Q, K and V projections, one group
  EXPECT_EQ(layers[0].at("heads_before"), 4);
  EXPECT_EQ(layers[0].at("heads_after"), 2);
  EXPECT_EQ(layers[0].at("channels_after"), 4);
  EXPECT_EQ(layers[0].at("method"), "l2");

  // At least one head stays; floor(4 * 0.75) = 3 go.
  Model most = m;
  RunPass(most, "prune_channels", {{"ratio", 0.75}, {"round_to", 1}});
  EXPECT_EQ(Dims(most, "Wv"), (std::vector<int64_t>{kEmbed, kDim}));
  EXPECT_EQ(ConstInput(most, "merge", 1), (std::vector<int64_t>{0, 0, kDim}));
}

// The PyTorch export: one fused Q/K/V projection reshaped to [N, T, 3, H, D] by a Concat of a computed
// batch size and constants, transposed to [3, N, H, T, D] and picked apart by Gather; the heads are merged
// by a Concat of the batch size and constants [T], [H*D]. The constant pieces are shared between the two
// Concats where they are equal ([T]) and between the fused shape and other readers.
TEST(PruneHeads, FusedProjectionWithConcatShapes) {
  Model m = Start();
  Graph& g = m.graph;
  g.initializers.push_back(RandomFloats({kEmbed, 3 * kHeads * kDim}, 1, "Wqkv"));
  g.initializers.push_back(RandomFloats({3 * kHeads * kDim}, 2, "bqkv"));
  g.initializers.push_back(Tensor::FromVector<int64_t>({}, {0}, "zero"));
  g.initializers.push_back(Tensor::FromVector<int64_t>({}, {1}, "one"));
  g.initializers.push_back(Tensor::FromVector<int64_t>({}, {2}, "two"));
  g.initializers.push_back(Tensor::FromVector<int64_t>({1}, {0}, "axes0"));
  g.initializers.push_back(Tensor::FromVector<int64_t>({1}, {kTokens}, "tokens"));
  g.initializers.push_back(Tensor::FromVector<int64_t>({1}, {3}, "three"));
  g.initializers.push_back(Tensor::FromVector<int64_t>({1}, {kHeads}, "heads"));
  g.initializers.push_back(Tensor::FromVector<int64_t>({1}, {kDim}, "dim"));
  g.initializers.push_back(Tensor::FromVector<int64_t>({1}, {kHeads * kDim}, "width"));
  g.nodes.push_back(MakeNode("Shape", {"x"}, {"xs"}, {}, "shape"));
  g.nodes.push_back(MakeNode("Gather", {"xs", "zero"}, {"batch"}, {Attribute::Int("axis", 0)}, "batch"));
  g.nodes.push_back(MakeNode("Unsqueeze", {"batch", "axes0"}, {"batch1"}, {}, "batch1"));
  g.nodes.push_back(MakeNode("Concat", {"batch1", "tokens", "three", "heads", "dim"}, {"split_shape"},
                             {Attribute::Int("axis", 0)}, "split_concat"));
  g.nodes.push_back(MakeNode("Concat", {"batch1", "tokens", "width"}, {"merge_shape"},
                             {Attribute::Int("axis", 0)}, "merge_concat"));
  g.nodes.push_back(MakeNode("MatMul", {"x", "Wqkv"}, {"qkv_mm"}, {}, "qkv_proj"));
  g.nodes.push_back(MakeNode("Add", {"bqkv", "qkv_mm"}, {"qkv"}, {}, "qkv_bias"));
  g.nodes.push_back(MakeNode("Reshape", {"qkv", "split_shape"}, {"qkv_r"}, {}, "split"));
  g.nodes.push_back(
      MakeNode("Transpose", {"qkv_r"}, {"qkv_t"}, {Attribute::Ints("perm", {2, 0, 3, 1, 4})}, "heads"));
  g.nodes.push_back(MakeNode("Gather", {"qkv_t", "zero"}, {"q"}, {Attribute::Int("axis", 0)}, "pick_q"));
  g.nodes.push_back(MakeNode("Gather", {"qkv_t", "one"}, {"k"}, {Attribute::Int("axis", 0)}, "pick_k"));
  g.nodes.push_back(MakeNode("Gather", {"qkv_t", "two"}, {"v"}, {Attribute::Int("axis", 0)}, "pick_v"));
  AddAttentionCore(g, "q", "k", "v", "merge_shape");
  const std::vector<int64_t> weak_heads = {0, 2};
  ScaleSlices(g, "Wqkv", 1, HeadColumns(weak_heads, 3), kWeak);
  ScaleSlices(g, "Wo", 0, HeadColumns(weak_heads, 1), kWeak);
  Model zeroed = m;
  ScaleSlices(zeroed.graph, "Wqkv", 1, HeadColumns(weak_heads, 3), 0.0f);
  ScaleSlices(zeroed.graph, "bqkv", 0, HeadColumns(weak_heads, 3), 0.0f);
  Model pruned = m;
  const PassContext ctx = RunPass(pruned, "prune_channels", {{"ratio", 0.5}});
  EXPECT_EQ(Dims(pruned, "Wqkv"), (std::vector<int64_t>{kEmbed, 3 * 2 * kDim}));
  EXPECT_EQ(Dims(pruned, "bqkv"), (std::vector<int64_t>{3 * 2 * kDim}));
  EXPECT_EQ(Dims(pruned, "Wo"), (std::vector<int64_t>{2 * kDim, kOut}));
  // Kept heads 1 and 3: K's head 1 (columns 8 + 2, 8 + 3) now sits at columns 4 + 0, 4 + 1.
  EXPECT_EQ(Init(pruned.graph, "Wqkv").data<float>()[4], Init(m.graph, "Wqkv").data<float>()[10]);
  EXPECT_EQ(ConstInput(pruned, "split_concat", 3), (std::vector<int64_t>{2}));
  EXPECT_EQ(ConstInput(pruned, "merge_concat", 2), (std::vector<int64_t>{2 * kDim}));
  // The pieces that do not change stay shared.
  EXPECT_EQ(NodeNamed(pruned, "split_concat").inputs[2], "three");
  EXPECT_EQ(NodeNamed(pruned, "merge_concat").inputs[1], "tokens");
  EXPECT_EQ(pruned.graph.FindInitializer("heads"), nullptr);  // its only reader has a private copy
  ExpectSameAsZeroed(zeroed, pruned);
  EXPECT_EQ(Counter(ctx, "groups_pruned"), 1);
}

// A fused Q/K/V projection split into Q, K and V before the Reshapes: Split with constant sizes [8, 8, 8]
// follows the channels, and its sizes are rewritten with the head counts.
TEST(PruneHeads, FusedProjectionSplitBeforeReshape) {
  Model m = Start();
  Graph& g = m.graph;
  g.initializers.push_back(RandomFloats({kEmbed, 3 * kHeads * kDim}, 1, "Wqkv"));
  g.initializers.push_back(RandomFloats({3 * kHeads * kDim}, 2, "bqkv"));
  g.initializers.push_back(
      Tensor::FromVector<int64_t>({3}, {kHeads * kDim, kHeads * kDim, kHeads * kDim}, "sizes"));
  g.initializers.push_back(Tensor::FromVector<int64_t>({4}, {0, 0, kHeads, kDim}, "split_shape"));
  g.initializers.push_back(Tensor::FromVector<int64_t>({3}, {0, 0, kHeads * kDim}, "merge_shape"));
  g.nodes.push_back(MakeNode("MatMul", {"x", "Wqkv"}, {"qkv_mm"}, {}, "qkv_proj"));
  g.nodes.push_back(MakeNode("Add", {"qkv_mm", "bqkv"}, {"qkv"}, {}, "qkv_bias"));
  g.nodes.push_back(
      MakeNode("Split", {"qkv", "sizes"}, {"q_b", "k_b", "v_b"}, {Attribute::Int("axis", -1)}, "split"));
  for (const char* p : {"q", "k", "v"}) {
    const std::string s(p);
    g.nodes.push_back(MakeNode("Reshape", {s + "_b", "split_shape"}, {s + "_r"}, {}, s + "_split"));
    g.nodes.push_back(
        MakeNode("Transpose", {s + "_r"}, {s + "_h"}, {Attribute::Ints("perm", {0, 2, 1, 3})}, s + "_heads"));
  }
  AddAttentionCore(g, "q_h", "k_h", "v_h", "merge_shape");
  const std::vector<int64_t> weak_heads = {1, 3};
  ScaleSlices(g, "Wqkv", 1, HeadColumns(weak_heads, 3), kWeak);
  ScaleSlices(g, "Wo", 0, HeadColumns(weak_heads, 1), kWeak);
  Model zeroed = m;
  ScaleSlices(zeroed.graph, "Wqkv", 1, HeadColumns(weak_heads, 3), 0.0f);
  ScaleSlices(zeroed.graph, "bqkv", 0, HeadColumns(weak_heads, 3), 0.0f);
  Model pruned = m;
  const PassContext ctx = RunPass(pruned, "prune_channels", {{"ratio", 0.5}});
  EXPECT_EQ(Dims(pruned, "Wqkv"), (std::vector<int64_t>{kEmbed, 3 * 2 * kDim}));
  EXPECT_EQ(Dims(pruned, "bqkv"), (std::vector<int64_t>{3 * 2 * kDim}));
  EXPECT_EQ(Dims(pruned, "Wo"), (std::vector<int64_t>{2 * kDim, kOut}));
  EXPECT_EQ(ConstInput(pruned, "split", 1), (std::vector<int64_t>{2 * kDim, 2 * kDim, 2 * kDim}));
  for (const char* r : {"q_split", "k_split", "v_split"}) {
    EXPECT_EQ(ConstInput(pruned, r, 1), (std::vector<int64_t>{0, 0, 2, kDim})) << r;
  }
  EXPECT_EQ(ConstInput(pruned, "merge", 1), (std::vector<int64_t>{0, 0, 2 * kDim}));
  ExpectSameAsZeroed(zeroed, pruned);
  EXPECT_EQ(Counter(ctx, "groups_pruned"), 1) << ::testing::PrintToString(ctx.notes());
}

// The paddle2onnx form of the fused projection: the parts are picked by Slice (starts p, ends p + 1 on the
// part axis) and Squeeze instead of Gather.
TEST(PruneHeads, FusedProjectionPartsPickedBySlice) {
  Model m = Start();
  Graph& g = m.graph;
  g.initializers.push_back(RandomFloats({kEmbed, 3 * kHeads * kDim}, 1, "Wqkv"));
  g.initializers.push_back(Tensor::FromVector<int64_t>({5}, {0, 0, 3, kHeads, kDim}, "split_shape"));
  g.initializers.push_back(Tensor::FromVector<int64_t>({3}, {0, 0, kHeads * kDim}, "merge_shape"));
  g.initializers.push_back(Tensor::FromVector<int64_t>({1}, {0}, "axis0"));
  g.nodes.push_back(MakeNode("MatMul", {"x", "Wqkv"}, {"qkv"}, {}, "qkv_proj"));
  g.nodes.push_back(MakeNode("Reshape", {"qkv", "split_shape"}, {"qkv_r"}, {}, "split"));
  g.nodes.push_back(
      MakeNode("Transpose", {"qkv_r"}, {"qkv_t"}, {Attribute::Ints("perm", {2, 0, 3, 1, 4})}, "heads"));
  const char* parts[] = {"q", "k", "v"};
  for (int64_t p = 0; p < 3; ++p) {
    const std::string s(parts[p]);
    g.initializers.push_back(Tensor::FromVector<int64_t>({1}, {p}, s + "_start"));
    g.initializers.push_back(Tensor::FromVector<int64_t>({1}, {p + 1}, s + "_end"));
    g.nodes.push_back(
        MakeNode("Slice", {"qkv_t", s + "_start", s + "_end", "axis0"}, {s + "_s"}, {}, "slice_" + s));
    g.nodes.push_back(MakeNode("Squeeze", {s + "_s", "axis0"}, {s}, {}, "squeeze_" + s));
  }
  AddAttentionCore(g, "q", "k", "v", "merge_shape");
  const std::vector<int64_t> weak_heads = {0, 1};
  ScaleSlices(g, "Wqkv", 1, HeadColumns(weak_heads, 3), kWeak);
  ScaleSlices(g, "Wo", 0, HeadColumns(weak_heads, 1), kWeak);
  Model zeroed = m;
  ScaleSlices(zeroed.graph, "Wqkv", 1, HeadColumns(weak_heads, 3), 0.0f);
  Model pruned = m;
  const PassContext ctx = RunPass(pruned, "prune_channels", {{"ratio", 0.5}});
  EXPECT_EQ(Dims(pruned, "Wqkv"), (std::vector<int64_t>{kEmbed, 3 * 2 * kDim}))
      << ::testing::PrintToString(ctx.notes());
  EXPECT_EQ(Dims(pruned, "Wo"), (std::vector<int64_t>{2 * kDim, kOut}));
  EXPECT_EQ(ConstInput(pruned, "split", 1), (std::vector<int64_t>{0, 0, 3, 2, kDim}));
  EXPECT_EQ(ConstInput(pruned, "merge", 1), (std::vector<int64_t>{0, 0, 2 * kDim}));
  ExpectSameAsZeroed(zeroed, pruned);
}

// A head count computed at run time cannot be rewritten: the heads stay, with a note.
TEST(PruneHeads, ComputedHeadCountStays) {
  Model m = SeparateQkv();
  Graph& g = m.graph;
  // The merge shape's width is read at run time from the shape of an [E, H*D] tensor.
  g.initializers.push_back(RandomFloats({kEmbed, kHeads * kDim}, 50, "other"));
  g.initializers.push_back(Tensor::FromVector<int64_t>({1}, {1}, "at1"));
  g.initializers.push_back(Tensor::FromVector<int64_t>({2}, {0, 0}, "lead"));
  g.nodes.insert(g.nodes.begin(), MakeNode("Shape", {"other"}, {"os"}, {}, "shape"));
  g.nodes.insert(g.nodes.begin() + 1,
                 MakeNode("Gather", {"os", "at1"}, {"w"}, {Attribute::Int("axis", 0)}, "w"));
  g.nodes.insert(g.nodes.begin() + 2, MakeNode("Concat", {"lead", "w"}, {"computed_merge"},
                                               {Attribute::Int("axis", 0)}, "concat"));
  for (auto& n : g.nodes) {
    if (n.name == "merge") n.inputs[1] = "computed_merge";
  }
  const PassContext ctx = RunPass(m, "prune_channels", {{"ratio", 0.5}});
  EXPECT_EQ(Dims(m, "Wq"), (std::vector<int64_t>{kEmbed, kHeads * kDim}));
  EXPECT_EQ(Dims(m, "Wo"), (std::vector<int64_t>{kHeads * kDim, kOut}));
  bool noted = false;
  for (const auto& n : ctx.notes())
    noted = noted || n.find("width of the merged heads computed at run time") != std::string::npos;
  EXPECT_TRUE(noted) << ::testing::PrintToString(ctx.notes());
}

// MLP hidden width: MatMul(W1) + b1 -> GELU exported as x * 0.5 * (1 + Erf(x / sqrt 2)) -> MatMul(W2) + b2.
// GELU(0) = 0, so removed hidden features equal zeroed columns of W1 and entries of b1.
TEST(PruneHeads, MlpHiddenWidthThroughErfGelu) {
  constexpr int64_t kHidden = 8;
  Model m = Start();
  Graph& g = m.graph;
  g.initializers.push_back(RandomFloats({kEmbed, kHidden}, 1, "W1"));
  g.initializers.push_back(RandomFloats({kHidden}, 2, "b1"));
  g.initializers.push_back(RandomFloats({kHidden, kOut}, 3, "W2"));
  g.initializers.push_back(RandomFloats({kOut}, 4, "b2"));
  g.initializers.push_back(Tensor::FromVector<float>({}, {1.4142135f}, "sqrt2"));
  g.initializers.push_back(Tensor::FromVector<float>({}, {1.0f}, "one"));
  g.initializers.push_back(Tensor::FromVector<float>({}, {0.5f}, "half"));
  g.nodes.push_back(MakeNode("MatMul", {"x", "W1"}, {"h"}, {}, "fc1"));
  g.nodes.push_back(MakeNode("Add", {"b1", "h"}, {"hb"}, {}, "fc1_bias"));
  g.nodes.push_back(MakeNode("Div", {"hb", "sqrt2"}, {"d"}, {}, "gelu_div"));
  g.nodes.push_back(MakeNode("Erf", {"d"}, {"e"}, {}, "gelu_erf"));
  g.nodes.push_back(MakeNode("Add", {"e", "one"}, {"e1"}, {}, "gelu_add"));
  g.nodes.push_back(MakeNode("Mul", {"hb", "e1"}, {"p"}, {}, "gelu_mul"));
  g.nodes.push_back(MakeNode("Mul", {"p", "half"}, {"a"}, {}, "gelu_half"));
  g.nodes.push_back(MakeNode("MatMul", {"a", "W2"}, {"o"}, {}, "fc2"));
  g.nodes.push_back(MakeNode("Add", {"b2", "o"}, {"y"}, {}, "fc2_bias"));
  const std::vector<int64_t> weak = {1, 3, 4, 6};
  ScaleSlices(g, "W1", 1, weak, kWeak);
  Model zeroed = m;
  ScaleSlices(zeroed.graph, "W1", 1, weak, 0.0f);
  ScaleSlices(zeroed.graph, "b1", 0, weak, 0.0f);
  Model pruned = m;
  const PassContext ctx =
      RunPass(pruned, "prune_channels", {{"ratio", 0.5}, {"round_to", 1}, {"importance", "l1"}});
  EXPECT_EQ(Dims(pruned, "W1"), (std::vector<int64_t>{kEmbed, 4}));
  EXPECT_EQ(Dims(pruned, "b1"), (std::vector<int64_t>{4}));
  EXPECT_EQ(Dims(pruned, "W2"), (std::vector<int64_t>{4, kOut}));
  EXPECT_EQ(Dims(pruned, "b2"), (std::vector<int64_t>{kOut}));
  const std::vector<float> b1 = Values(Init(m.graph, "b1"));
  EXPECT_EQ(Values(Init(pruned.graph, "b1")), (std::vector<float>{b1[0], b1[2], b1[5], b1[7]}));
  ExpectSameAsZeroed(zeroed, pruned);
  EXPECT_EQ(Counter(ctx, "groups_pruned"), 1);
  EXPECT_FALSE(ctx.details().at("layers")[0].contains("heads_before"));
}

}  // namespace
}  // namespace compress
