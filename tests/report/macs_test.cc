// MAC counts of hand-built graphs (every op kind, worked out by hand in the comments) and of the sample
// models (from their architecture in models/manifest.json).
#include "compress/eval/macs.h"

#include <gtest/gtest.h>

#include "compress/io/onnx_io.h"
#include "support/test_support.h"

namespace compress {
namespace {

using testing::IfConvLstmModel;
using testing::SourcePath;

// One-node models: `inputs` are graph inputs (symbolic dims by name), `weights` initializers.
struct Builder {
  Model m;
  Builder() {
    m.ir_version = 8;
    m.opset_imports = {{"", 17}};
  }
  Builder& Input(const std::string& name, std::vector<Dim> shape, DType t = DType::kFloat) {
    m.graph.inputs.push_back({name, TypeInfo::Tensor(t, std::move(shape)), ""});
    return *this;
  }
  Builder& Weight(const std::string& name, std::vector<int64_t> dims, DType t = DType::kFloat) {
    m.graph.initializers.push_back(Tensor(t, std::move(dims), name));
    return *this;
  }
  Builder& Add(Node n) {
    for (const auto& o : n.outputs) {
      if (m.graph.outputs.empty() && !o.empty()) m.graph.outputs.push_back({o, TypeInfo{}, ""});
    }
    m.graph.nodes.push_back(std::move(n));
    return *this;
  }
};

Dim B() { return Dim::Symbolic("batch"); }
Dim F(int64_t v) { return Dim::Fixed(v); }

Node MakeNode(const std::string& name, const std::string& op, std::vector<std::string> in, std::vector<std::string> out,
              std::vector<Attribute> attrs = {}) {
  return Node{name, op, "", std::move(in), std::move(out), std::move(attrs), ""};
}

TEST(Macs, ConvStridePadsGroups) {
  // X [batch,4,9,9], W [6,2,3,3] (group 2), stride 2, pads 1: output [1,6,5,5] (floor((9+2-3)/2)+1 = 5).
  // 150 outputs x 2 input channels per group x 9 = 2700.
  Builder b;
  b.Input("x", {B(), F(4), F(9), F(9)}).Weight("w", {6, 2, 3, 3});
  b.Add(MakeNode("conv", "Conv", {"x", "w"}, {"y"},
                 {Attribute::Int("group", 2), Attribute::Ints("strides", {2, 2}), Attribute::Ints("pads", {1, 1, 1, 1})}));
  const MacsCount c = CountMacs(b.m);
  ASSERT_EQ(c.nodes.size(), 1u);
  EXPECT_EQ(c.nodes[0].node, "conv");
  EXPECT_EQ(c.nodes[0].macs, std::optional<int64_t>(2700));
  EXPECT_EQ(c.total, 2700);
  EXPECT_EQ(c.unknown_nodes, 0);
  EXPECT_EQ(c.batch_divisor, 1);
}

TEST(Macs, ConvDilations) {
  // X [batch,4,7,7], W [6,4,3,3], dilation 2 (effective kernel 5), no pads: output [1,6,3,3].
  // 54 outputs x 4 x 9 = 1944.
  Builder b;
  b.Input("x", {B(), F(4), F(7), F(7)}).Weight("w", {6, 4, 3, 3});
  b.Add(MakeNode("conv", "Conv", {"x", "w"}, {"y"}, {Attribute::Ints("dilations", {2, 2})}));
  EXPECT_EQ(CountMacs(b.m).total, 1944);
}

TEST(Macs, ConvTranspose) {
  // X [batch,4,5,5], W [4,2,3,3] (4 in, 2 out channels), stride 2: every one of the 100 input elements
  // feeds 2 x 9 outputs = 1800.
  Builder b;
  b.Input("x", {B(), F(4), F(5), F(5)}).Weight("w", {4, 2, 3, 3});
  b.Add(MakeNode("deconv", "ConvTranspose", {"x", "w"}, {"y"}, {Attribute::Ints("strides", {2, 2})}));
  EXPECT_EQ(CountMacs(b.m).total, 1800);
}

TEST(Macs, GemmTransB) {
  // A [batch,8] x B^T with B [5,8]: 1 x 8 x 5 = 40.
  Builder b;
  b.Input("a", {B(), F(8)}).Weight("w", {5, 8});
  b.Add(MakeNode("fc", "Gemm", {"a", "w"}, {"y"}, {Attribute::Int("transB", 1)}));
  EXPECT_EQ(CountMacs(b.m).total, 40);
}

TEST(Macs, FixedBatchIsDividedOut) {
  // The same Gemm at a declared batch of 4: 160 MACs per run, 40 per sample.
  Builder b;
  b.Input("a", {F(4), F(8)}).Weight("w", {5, 8});
  b.Add(MakeNode("fc", "Gemm", {"a", "w"}, {"y"}, {Attribute::Int("transB", 1)}));
  const MacsCount c = CountMacs(b.m);
  EXPECT_EQ(c.batch_divisor, 4);
  EXPECT_EQ(c.total, 40);
}

TEST(Macs, BatchedBroadcastMatMul) {
  // A [batch,1,4,5] x B [3,5,6] broadcasts to [1,3,4,6]: 72 outputs x 5 = 360.
  Builder b;
  b.Input("a", {B(), F(1), F(4), F(5)}).Weight("w", {3, 5, 6});
  b.Add(MakeNode("mm", "MatMul", {"a", "w"}, {"y"}));
  EXPECT_EQ(CountMacs(b.m).total, 360);
}

TEST(Macs, MatMulOfTwoActivations) {
  // Q [batch,2,7,4] x K^T [batch,2,4,7] (both inputs): 98 outputs x 4 = 392.
  Builder b;
  b.Input("q", {B(), F(2), F(7), F(4)}).Input("k", {B(), F(2), F(4), F(7)});
  b.Add(MakeNode("scores", "MatMul", {"q", "k"}, {"y"}));
  EXPECT_EQ(CountMacs(b.m).total, 392);
}

TEST(Macs, UnknownDimensionIsReportedNotGuessed) {
  // A symbolic sequence length leaves the count unknown; the total covers the known nodes only.
  Builder b;
  b.Input("a", {B(), Dim::Symbolic("seq"), F(5)}).Weight("w", {5, 6}).Weight("w2", {6, 2});
  b.Add(MakeNode("mm", "MatMul", {"a", "w"}, {"h"}));
  b.Add(MakeNode("mm2", "MatMul", {"h", "w2"}, {"y"}));
  b.m.graph.outputs = {{"y", TypeInfo{}, ""}};
  const MacsCount c = CountMacs(b.m);
  ASSERT_EQ(c.nodes.size(), 2u);
  EXPECT_FALSE(c.nodes[0].macs.has_value());
  EXPECT_NE(c.nodes[0].why.find("seq"), std::string::npos) << c.nodes[0].why;
  EXPECT_EQ(c.unknown_nodes, 2);
  EXPECT_EQ(c.total, 0);
}

TEST(Macs, ElementwiseOpsAreNotMacs) {
  Builder b;
  b.Input("a", {B(), F(8)}).Weight("w", {8});
  b.Add(MakeNode("mul", "Mul", {"a", "w"}, {"m"}));
  b.Add(MakeNode("relu", "Relu", {"m"}, {"y"}));
  b.m.graph.outputs = {{"y", TypeInfo{}, ""}};
  const MacsCount c = CountMacs(b.m);
  EXPECT_TRUE(c.nodes.empty());
  EXPECT_EQ(c.total, 0);
}

TEST(Macs, Lstm) {
  // X [5,batch,3], bidirectional, hidden 4: 5 steps x 2 directions x 16 gate rows x (3 + 4) = 1120.
  Builder b;
  b.Input("x", {F(5), B(), F(3)}).Weight("W", {2, 16, 3}).Weight("R", {2, 16, 4});
  b.Add(MakeNode("lstm", "LSTM", {"x", "W", "R"}, {"y"},
                 {Attribute::Int("hidden_size", 4), Attribute::String("direction", "bidirectional")}));
  EXPECT_EQ(CountMacs(b.m).total, 1120);
}

TEST(Macs, GruAndRnn) {
  // GRU: X [5,batch,3], hidden 3: 5 x 9 gate rows x (3 + 3) = 270. RNN hidden 2: 5 x 2 x (3 + 2) = 50.
  Builder b;
  b.Input("x", {F(5), B(), F(3)}).Weight("W", {1, 9, 3}).Weight("R", {1, 9, 3});
  b.Weight("Wr", {1, 2, 3}).Weight("Rr", {1, 2, 2});
  b.Add(MakeNode("gru", "GRU", {"x", "W", "R"}, {"y"}, {Attribute::Int("hidden_size", 3)}));
  b.Add(MakeNode("rnn", "RNN", {"x", "Wr", "Rr"}, {"y2"}, {Attribute::Int("hidden_size", 2)}));
  b.m.graph.outputs = {{"y", TypeInfo{}, ""}, {"y2", TypeInfo{}, ""}};
  const MacsCount c = CountMacs(b.m);
  ASSERT_EQ(c.nodes.size(), 2u);
  EXPECT_EQ(c.nodes[0].macs, std::optional<int64_t>(270));
  EXPECT_EQ(c.nodes[1].macs, std::optional<int64_t>(50));
  EXPECT_EQ(c.total, 320);
}

TEST(Macs, Einsum) {
  // "bij,bjk->bik" with [batch,3,4] and [1,4,5]: b 1 x i 3 x j 4 x k 5 = 60.
  Builder b;
  b.Input("a", {B(), F(3), F(4)}).Weight("w", {1, 4, 5});
  b.Add(MakeNode("e", "Einsum", {"a", "w"}, {"y"}, {Attribute::String("equation", "bij,bjk->bik")}));
  EXPECT_EQ(CountMacs(b.m).total, 60);
}

TEST(Macs, IntegerAndQLinearForms) {
  // MatMulInteger [batch,4] x [4,3]: 12. ConvInteger [batch,2,5,5] * [3,2,3,3] (no pads): 27 x 18 = 486.
  // QLinearMatMul and QLinearConv count as their float forms: 12 and 486.
  Builder b;
  b.Input("a", {B(), F(4)}, DType::kUInt8).Input("x", {B(), F(2), F(5), F(5)}, DType::kUInt8);
  b.Weight("wm", {4, 3}, DType::kInt8).Weight("wc", {3, 2, 3, 3}, DType::kInt8);
  b.Weight("s", {}).Weight("zu", {}, DType::kUInt8).Weight("zi", {}, DType::kInt8);
  b.Add(MakeNode("mmi", "MatMulInteger", {"a", "wm"}, {"y1"}));
  b.Add(MakeNode("convi", "ConvInteger", {"x", "wc"}, {"y2"}));
  b.Add(MakeNode("qmm", "QLinearMatMul", {"a", "s", "zu", "wm", "s", "zi", "s", "zu"}, {"y3"}));
  b.Add(MakeNode("qconv", "QLinearConv", {"x", "s", "zu", "wc", "s", "zi", "s", "zu"}, {"y4"}));
  b.m.graph.outputs = {{"y1", TypeInfo{}, ""}, {"y2", TypeInfo{}, ""}, {"y3", TypeInfo{}, ""}, {"y4", TypeInfo{}, ""}};
  const MacsCount c = CountMacs(b.m);
  ASSERT_EQ(c.nodes.size(), 4u);
  EXPECT_EQ(c.nodes[0].macs, std::optional<int64_t>(12));
  EXPECT_EQ(c.nodes[1].macs, std::optional<int64_t>(486));
  EXPECT_EQ(c.nodes[2].macs, std::optional<int64_t>(12));
  EXPECT_EQ(c.nodes[3].macs, std::optional<int64_t>(486));
  EXPECT_EQ(c.total, 996);
}

TEST(Macs, QdqConvCountsAsConv) {
  // DequantizeLinear(int8 weight) -> Conv: the same 2700 as the float Conv of ConvStridePadsGroups.
  Builder b;
  b.Input("x", {B(), F(4), F(9), F(9)}).Weight("wq", {6, 2, 3, 3}, DType::kInt8).Weight("s", {});
  b.Weight("z", {}, DType::kInt8);
  b.Add(MakeNode("dq", "DequantizeLinear", {"wq", "s", "z"}, {"w"}));
  b.Add(MakeNode("conv", "Conv", {"x", "w"}, {"y"},
                 {Attribute::Int("group", 2), Attribute::Ints("strides", {2, 2}), Attribute::Ints("pads", {1, 1, 1, 1})}));
  b.m.graph.outputs = {{"y", TypeInfo{}, ""}};
  EXPECT_EQ(CountMacs(b.m).total, 2700);
}

TEST(Macs, IfCountsTheLargerBranch) {
  // then: Conv x[1,4,16] * Wc[8,4,3] pads 1 -> [1,8,16]: 128 x 12 = 1536; LSTM over 16 steps, 24 gate rows,
  // input 8 + hidden 6: 16 x 24 x 14 = 5376. else: MatMul [16,1,4] x [4,6]: 96 x 4 = 384.
  const MacsCount c = CountMacs(IfConvLstmModel());
  ASSERT_EQ(c.nodes.size(), 3u);
  EXPECT_EQ(c.nodes[0].node, "conv");
  EXPECT_EQ(c.nodes[0].graph, "if/then_branch");
  EXPECT_EQ(c.nodes[0].macs, std::optional<int64_t>(1536));
  EXPECT_EQ(c.nodes[1].macs, std::optional<int64_t>(5376));
  EXPECT_EQ(c.nodes[2].node, "matmul");
  EXPECT_EQ(c.nodes[2].macs, std::optional<int64_t>(384));
  EXPECT_FALSE(c.nodes[2].counted);
  EXPECT_TRUE(c.nodes[0].counted);
  EXPECT_EQ(c.total, 6912);
}

TEST(Macs, LoopMultipliesByConstantTripCount) {
  // Loop body: MatMul of an outer [1,4] value by [4,3] (12 MACs), 5 iterations: 60.
  Builder b;
  b.Input("a", {F(1), F(4)}).Weight("w", {4, 3});
  b.m.graph.initializers.push_back(Tensor::FromVector<int64_t>({}, {5}, "trips"));
  b.m.graph.initializers.push_back(Tensor::FromVector<bool>({}, {true}, "cond"));
  Graph body;
  body.name = "body";
  body.inputs = {{"i", TypeInfo::Tensor(DType::kInt64, {}), ""}, {"c", TypeInfo::Tensor(DType::kBool, {}), ""}};
  body.nodes.push_back(MakeNode("inner_mm", "MatMul", {"a", "w"}, {"p"}));
  body.nodes.push_back(MakeNode("c_out", "Identity", {"c"}, {"c2"}));
  body.outputs = {{"c2", TypeInfo::Tensor(DType::kBool, {}), ""}, {"p", TypeInfo::Tensor(DType::kFloat, {F(1), F(3)}), ""}};
  Node loop = MakeNode("loop", "Loop", {"trips", "cond"}, {"ps"});
  loop.attributes.push_back(testing::GraphAttr("body", std::move(body)));
  b.Add(loop);
  const MacsCount c = CountMacs(b.m);
  ASSERT_EQ(c.nodes.size(), 1u);
  EXPECT_EQ(c.nodes[0].graph, "loop/body");
  EXPECT_EQ(c.total, 60);
}

// The sample models, from their architecture (models/manifest.json), per sample:
//  mlp: 784x256 + 256x128 + 128x10 = 200704 + 32768 + 1280 = 234752.
//  cnn (and cnn_bn, whose BatchNormalization nodes are not MACs): conv 1->32 3x3 at 28x28: 784 x 32 x 9 =
//  225792; depthwise 3x3 at 14x14: 196 x 32 x 9 = 56448; pointwise 32->32: 196 x 32 x 32 = 200704;
//  conv 32->64 3x3 at 14x14: 196 x 64 x 288 = 3612672; conv 64->64 3x3 at 7x7: 49 x 64 x 576 = 1806336;
//  Linear 64x10: 640; total 5902592.
//  vit: patch Conv 7x7 stride 7 -> 4x4x64 outputs x 49 = 50176; per block with 17 tokens: qkv 17x64x192 =
//  208896, scores 4 heads x 17x17x16 = 18496, weighted values 18496, proj 17x64x64 = 69632, MLP 17x64x128 x 2
//  = 278528, i.e. 594048; two blocks 1188096; head 64x10 = 640; total 1238912.
TEST(Macs, SampleModels) {
  EXPECT_EQ(CountMacs(LoadModel(SourcePath("models/mlp.onnx"))).total, 234752);
  const MacsCount cnn = CountMacs(LoadModel(SourcePath("models/cnn.onnx")));
  EXPECT_EQ(cnn.total, 5902592);
  EXPECT_EQ(cnn.unknown_nodes, 0);
  EXPECT_EQ(cnn.nodes.size(), 6u);
  EXPECT_EQ(CountMacs(LoadModel(SourcePath("models/cnn_bn.onnx"))).total, 5902592);
  const MacsCount vit = CountMacs(LoadModel(SourcePath("models/vit.onnx")));
  EXPECT_EQ(vit.total, 1238912);
  EXPECT_EQ(vit.unknown_nodes, 0);
  EXPECT_EQ(vit.nodes.size(), 14u);
}

// An untyped graph input cannot be fed from data, but its MACs are still counted: what has no shape is
// unknown, and nothing throws (the report of such a model used to fail after the output was written).
TEST(Macs, UntypedInputLeavesItsConsumersUnknown) {
  Model m = testing::TinyModel();  // x -> Relu -> h -> MatMul W -> hw -> Add b -> y
  const MacsCount typed = CountMacs(m);
  EXPECT_EQ(typed.unknown_nodes, 0);
  EXPECT_GT(typed.total, 0);
  m.graph.inputs[0].type = TypeInfo();
  const MacsCount untyped = CountMacs(m);
  EXPECT_EQ(untyped.unknown_nodes, 1);  // the MatMul
  EXPECT_EQ(untyped.total, 0);
}

}  // namespace
}  // namespace compress
