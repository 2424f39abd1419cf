#include "compress/ir/verify.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "compress/util/error.h"
#include "support/test_support.h"

namespace compress {
namespace {

std::string VerifyMessage(const Model& m) {
  try {
    VerifyModel(m);
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput);
    return e.what();
  }
  return "";
}

TEST(Verify, AcceptsValidModel) { EXPECT_EQ(VerifyMessage(testing::TinyModel()), ""); }

TEST(Verify, ReportsMissingProducer) {
  Model m = testing::TinyModel();
  m.graph.nodes[1].inputs[0] = "ghost";
  const std::string msg = VerifyMessage(m);
  EXPECT_NE(msg.find("'matmul'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'ghost'"), std::string::npos) << msg;
}

TEST(Verify, ReportsDuplicateProducer) {
  Model m = testing::TinyModel();
  m.graph.nodes[1].outputs[0] = "h";
  EXPECT_NE(VerifyMessage(m).find("'h' is produced more than once"), std::string::npos);
  Model m2 = testing::TinyModel();
  m2.graph.nodes[0].outputs[0] = "W";  // shadows an initializer
  EXPECT_NE(VerifyMessage(m2).find("'W' is produced more than once"), std::string::npos);
}

TEST(Verify, InitializerMayAlsoBeAGraphInput) {
  Model m = testing::TinyModel();
  m.graph.inputs.push_back({"W", TypeInfo::Tensor(DType::kFloat, {Dim::Fixed(4), Dim::Fixed(3)}), ""});
  EXPECT_EQ(VerifyMessage(m), "");
  EXPECT_EQ(m.graph.RealInputs().size(), 1u);
}

TEST(Verify, ReportsCycleAndUnproducedOutput) {
  Model m = testing::TinyModel();
  m.graph.nodes[0].inputs[0] = "y";
  EXPECT_NE(VerifyMessage(m).find("cycle"), std::string::npos);
  Model m2 = testing::TinyModel();
  m2.graph.outputs[0].name = "nope";
  EXPECT_NE(VerifyMessage(m2).find("output 'nope'"), std::string::npos);
}

TEST(Verify, ReportsUnknownDTypeAndMissingOpset) {
  Model m = testing::TinyModel();
  m.graph.outputs[0].type.elem_type = static_cast<DType>(77);
  EXPECT_NE(VerifyMessage(m).find("unknown element type 77"), std::string::npos);
  Model m2 = testing::TinyModel();
  m2.opset_imports.clear();
  EXPECT_NE(VerifyMessage(m2).find("imports no opset"), std::string::npos);
  Model m3 = testing::TinyModel();
  m3.opset_imports = {{"com.example", 1}};
  EXPECT_NE(VerifyMessage(m3).find("default ONNX domain"), std::string::npos);
}

// An If whose branches read a value of the enclosing graph.
Model ModelWithSubgraph(const std::string& captured) {
  Model m = testing::TinyModel();
  Graph branch;
  branch.name = "then";
  branch.nodes.push_back(Node{"inner", "Identity", "", {captured}, {"t_out"}, {}, ""});
  branch.outputs.push_back({"t_out", TypeInfo::Tensor(DType::kFloat, {}), ""});
  Graph other = branch;
  other.name = "else";
  Node cond{"cond", "Constant", "", {}, {"c"}, {}, ""};
  cond.attributes.push_back(Attribute::FromTensor("value", Tensor::FromVector<bool>({}, {true})));
  Node iff{"if", "If", "", {"c"}, {"z"}, {}, ""};
  Attribute then_attr;
  then_attr.name = "then_branch";
  then_attr.type = AttrType::kGraph;
  then_attr.graphs.push_back(branch);
  Attribute else_attr = then_attr;
  else_attr.name = "else_branch";
  else_attr.graphs[0] = other;
  iff.attributes = {then_attr, else_attr};
  // Put the If first so that sorting has to move it after the producer of the captured value.
  m.graph.nodes.insert(m.graph.nodes.begin(), iff);
  m.graph.nodes.insert(m.graph.nodes.begin(), cond);
  m.graph.outputs.push_back({"z", TypeInfo::Tensor(DType::kFloat, {}), ""});
  return m;
}

TEST(Verify, SubgraphsSeeOuterScope) {
  Model ok = ModelWithSubgraph("h");
  EXPECT_EQ(VerifyMessage(ok), "");
  EXPECT_FALSE(IsTopologicallySorted(ok.graph));  // If reads h (via its branches) before relu makes it
  EXPECT_EQ(OuterScopeInputs(ok.graph.nodes[1]), std::vector<std::string>{"h"});
  TopologicalSort(ok.graph);
  EXPECT_TRUE(IsTopologicallySorted(ok.graph));
  std::vector<std::string> order;
  for (const auto& n : ok.graph.nodes) order.push_back(n.name);
  EXPECT_EQ(order, (std::vector<std::string>{"cond", "relu", "if", "matmul", "add"}));

  const std::string msg = VerifyMessage(ModelWithSubgraph("ghost"));
  EXPECT_NE(msg.find("'inner'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'ghost'"), std::string::npos) << msg;
}

TEST(TopologicalSort, StableOnSortedGraphAndFixesReversed) {
  Model m = testing::TinyModel();
  const auto order = TopologicalOrder(m.graph);
  EXPECT_EQ(order, (std::vector<size_t>{0, 1, 2}));
  std::reverse(m.graph.nodes.begin(), m.graph.nodes.end());
  EXPECT_FALSE(IsTopologicallySorted(m.graph));
  TopologicalSort(m.graph);
  EXPECT_EQ(m.graph.nodes[0].name, "relu");
  EXPECT_EQ(m.graph.nodes[2].name, "add");
}

TEST(Graph, IndexAndAttributeHelpers) {
  Model m = testing::TinyModel();
  GraphIndex idx(m.graph);
  EXPECT_EQ(idx.producer.at("h"), 0u);
  EXPECT_EQ(idx.consumers.at("h"), std::vector<size_t>{1});
  EXPECT_EQ(idx.consumers.at("W"), std::vector<size_t>{1});
  Node& n = m.graph.nodes[0];
  n.SetAttr(Attribute::Int("axis", 2));
  n.SetAttr(Attribute::Int("axis", 3));
  EXPECT_EQ(n.attributes.size(), 1u);
  EXPECT_EQ(n.AttrInt("axis", 0), 3);
  EXPECT_EQ(n.AttrInt("missing", 9), 9);
  EXPECT_THROW(n.AttrFloat("axis", 0.0f), Error);  // wrong kind is an error, not a silent default
  EXPECT_TRUE(n.RemoveAttr("axis"));
  EXPECT_FALSE(n.RemoveAttr("axis"));
  EXPECT_EQ(m.OpsetVersion(""), 17);
  EXPECT_EQ(m.OpsetVersion("ai.onnx"), 17);
  m.SetOpsetVersion("", 13);
  EXPECT_EQ(m.OpsetVersion(), 13);
  m.SetMetadata("k", "v1");
  m.SetMetadata("k", "v2");
  ASSERT_EQ(m.metadata_props.size(), 1u);
  EXPECT_EQ(m.metadata_props[0].second, "v2");
}

}  // namespace
}  // namespace compress
