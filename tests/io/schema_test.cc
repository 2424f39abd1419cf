#include "compress/io/schema.h"

#include <gtest/gtest.h>

#include "compress/io/onnx_io.h"
#include "support/test_support.h"

namespace compress {
namespace {

TEST(Schema, SignatureOfConvBindsAllInputsToOneTypeParameter) {
  const OpSignature sig = LookupSignature("", "Conv", 13);
  ASSERT_TRUE(sig.found);
  ASSERT_EQ(sig.inputs.size(), 3u);
  EXPECT_EQ(sig.InputTypeStr(0), "T");
  EXPECT_EQ(sig.InputTypeStr(2), "T");
  EXPECT_TRUE(sig.inputs[2].optional);
  EXPECT_EQ(sig.OutputTypeStr(0), "T");
  EXPECT_TRUE(sig.Allows("T", DType::kFloat16));
  EXPECT_TRUE(sig.Allows("T", DType::kFloat));
  EXPECT_FALSE(sig.Allows("T", DType::kInt8));
}

TEST(Schema, FixedTypesVariadicInputsAndVersions) {
  // Resize-13: scales is always float32, whatever X is.
  const OpSignature resize = LookupSignature("ai.onnx", "Resize", 13);
  ASSERT_TRUE(resize.found);
  EXPECT_EQ(resize.InputTypeStr(2), "tensor(float)");
  EXPECT_TRUE(resize.Allows("tensor(float)", DType::kFloat));
  EXPECT_FALSE(resize.Allows("tensor(float)", DType::kFloat16));
  // Concat's single variadic formal covers any number of inputs.
  const OpSignature concat = LookupSignature("", "Concat", 13);
  EXPECT_TRUE(concat.inputs.back().variadic);
  EXPECT_EQ(concat.InputTypeStr(5), concat.InputTypeStr(0));
  EXPECT_EQ(concat.InputTypeStr(5), "T");
  // The version picks the schema: Relu-6 allows no bfloat16, Relu-14 does.
  EXPECT_FALSE(LookupSignature("", "Relu", 6).Allows("T", DType::kBFloat16));
  EXPECT_TRUE(LookupSignature("", "Relu", 14).Allows("T", DType::kBFloat16));
  EXPECT_FALSE(LookupSignature("com.example", "Relu", 14).found);
  EXPECT_TRUE(LookupSignature("", "Relu", 14).InputTypeStr(3).empty());
}

TEST(Schema, InferShapesFillsIntermediateValuesOfTheSampleCnn) {
  Model m = LoadModel(testing::SourcePath("models/cnn.onnx"));
  m.graph.value_info.clear();
  ASSERT_TRUE(InferShapes(m));
  // Every node output gets a float32 type whose first dim is the symbolic batch.
  size_t typed = 0;
  for (const auto& node : m.graph.nodes) {
    for (const auto& out : node.outputs) {
      const TypeInfo* t = FindValueType(m.graph, out);
      ASSERT_NE(t, nullptr) << out;
      EXPECT_EQ(t->elem_type, DType::kFloat) << out;
      ASSERT_TRUE(t->has_shape) << out;
      ASSERT_FALSE(t->shape.empty()) << out;
      EXPECT_FALSE(t->shape[0].is_fixed()) << out;
      ++typed;
    }
  }
  EXPECT_EQ(typed, m.graph.nodes.size());
  // The first Conv keeps 28x28 (padding 1), 32 channels.
  const TypeInfo* first = FindValueType(m.graph, m.graph.nodes[0].outputs[0]);
  ASSERT_EQ(first->shape.size(), 4u);
  EXPECT_EQ(first->shape[1].value, 32);
  // Declared graph inputs and outputs are left as they were.
  EXPECT_EQ(m.graph.outputs[0].type.shape[1].value, 10);
}

TEST(Schema, InferShapesWithDataPropagationResolvesReshapeOfStaticShape) {
  // x[2,3,4] -> Shape -> Reshape(x, shape) : the Reshape output shape is known only via data propagation.
  Model m;
  m.ir_version = 8;
  m.opset_imports = {{"", 17}};
  Graph& g = m.graph;
  g.name = "g";
  g.inputs.push_back({"x", TypeInfo::Tensor(DType::kFloat, {Dim::Fixed(2), Dim::Fixed(3), Dim::Fixed(4)}), ""});
  Node shape;
  shape.op_type = "Shape";
  shape.inputs = {"x"};
  shape.outputs = {"s"};
  Node reshape;
  reshape.op_type = "Reshape";
  reshape.inputs = {"x", "s"};
  reshape.outputs = {"y"};
  g.nodes = {shape, reshape};
  g.outputs.push_back({"y", TypeInfo{}, ""});
  g.outputs[0].type.kind = TypeInfo::Kind::kTensor;
  g.outputs[0].type.elem_type = DType::kFloat;
  ASSERT_TRUE(InferShapes(m));
  const TypeInfo* s = FindValueType(g, "s");
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->elem_type, DType::kInt64);
  ASSERT_EQ(s->shape.size(), 1u);
  EXPECT_EQ(s->shape[0].value, 3);
}

}  // namespace
}  // namespace compress
