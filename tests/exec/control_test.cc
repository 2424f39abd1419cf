// Control flow: If picks a branch on its condition, and branches read values of the enclosing graphs at
// any depth, their own initializers and Constant nodes; Loop runs its body with a trip count and / or a
// condition, carries values and stacks scan outputs.

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "compress/exec/executor.h"
#include "compress/util/error.h"
#include "support/test_support.h"

namespace compress {
namespace {

using testing::ErrorOf;
using testing::GraphAttr;

Node MakeNode(const std::string& op, std::vector<std::string> inputs, std::vector<std::string> outputs) {
  Node n;
  n.name = op + "_" + outputs[0];
  n.op_type = op;
  n.inputs = std::move(inputs);
  n.outputs = std::move(outputs);
  return n;
}

ValueInfo Input(const std::string& name, DType dtype, std::vector<Dim> shape) {
  return {name, TypeInfo::Tensor(dtype, std::move(shape)), ""};
}

ValueInfo Output(const std::string& name) { return {name, TypeInfo{}, ""}; }

Tensor Bool(bool v) { return Tensor::FromVector<bool>({}, {v}); }

std::vector<float> Floats(const Tensor& t) { return {t.data<float>(), t.data<float>() + t.numel()}; }

// x2 = x + x; If(cond): then { c = Constant [10, 20]; If(inner): then { x2 + c } else { x2 * c } }
//                       else { x - k } with k = [1, 1] an initializer of the else branch.
Model NestedIfModel() {
  Graph inner_then;
  inner_then.nodes.push_back(MakeNode("Add", {"x2", "c"}, {"t_add"}));
  inner_then.outputs.push_back(Output("t_add"));
  Graph inner_else;
  inner_else.nodes.push_back(MakeNode("Mul", {"x2", "c"}, {"t_mul"}));
  inner_else.outputs.push_back(Output("t_mul"));

  Graph then_branch;
  Node constant = MakeNode("Constant", {}, {"c"});
  constant.attributes.push_back(Attribute::FromTensor("value", Tensor::FromVector<float>({2}, {10, 20})));
  then_branch.nodes.push_back(constant);
  Node inner_if = MakeNode("If", {"inner"}, {"t"});
  inner_if.attributes.push_back(GraphAttr("then_branch", inner_then));
  inner_if.attributes.push_back(GraphAttr("else_branch", inner_else));
  then_branch.nodes.push_back(inner_if);
  then_branch.outputs.push_back(Output("t"));

  Graph else_branch;
  else_branch.initializers.push_back(Tensor::FromVector<float>({2}, {1, 1}, "k"));
  else_branch.nodes.push_back(MakeNode("Sub", {"x", "k"}, {"e"}));
  else_branch.outputs.push_back(Output("e"));

  Model m;
  m.ir_version = 8;
  m.opset_imports = {{"", 16}};
  m.graph.name = "nested_if";
  m.graph.inputs = {Input("cond", DType::kBool, {}), Input("inner", DType::kBool, {}),
                    Input("x", DType::kFloat, {Dim::Fixed(2)})};
  m.graph.nodes.push_back(MakeNode("Add", {"x", "x"}, {"x2"}));
  Node outer_if = MakeNode("If", {"cond"}, {"y"});
  outer_if.attributes.push_back(GraphAttr("then_branch", then_branch));
  outer_if.attributes.push_back(GraphAttr("else_branch", else_branch));
  m.graph.nodes.push_back(outer_if);
  m.graph.outputs.push_back(Output("y"));
  return m;
}

TEST(If, RunsTheChosenBranchWithOuterScopeValuesAtAnyDepth) {
  const Model m = NestedIfModel();
  for (const bool reference : {false, true}) {
    ExecutorOptions options;
    options.reference_kernels = reference;
    Executor exec(m, options);
    const Tensor x = Tensor::FromVector<float>({2}, {1, 2});
    EXPECT_EQ(Floats(exec.Run({Bool(true), Bool(true), x})[0]), (std::vector<float>{12, 24}));
    EXPECT_EQ(Floats(exec.Run({Bool(true), Bool(false), x})[0]), (std::vector<float>{20, 80}));
    EXPECT_EQ(Floats(exec.Run({Bool(false), Bool(true), x})[0]), (std::vector<float>{0, 1}));
  }
  EXPECT_TRUE(Executor::UnsupportedOps(m).empty());
}

TEST(If, RejectsANonBoolCondition) {
  Model m = NestedIfModel();
  m.graph.inputs[0] = Input("cond", DType::kFloat, {});
  Executor exec(m);
  const std::string msg = ErrorOf(
      [&] { exec.Run({Tensor::FromVector<float>({}, {1}), Bool(true), Tensor::FromVector<float>({2}, {1, 2})}); });
  EXPECT_NE(msg.find("the condition must be a single bool, got float32[]"), std::string::npos) << msg;
}

TEST(If, NamesAnUnsupportedOperatorInsideABranch) {
  Model m = NestedIfModel();
  m.graph.nodes[1].FindAttr("else_branch")->graphs[0].nodes[0].op_type = "NoSuchOp";
  EXPECT_EQ(Executor::UnsupportedOps(m), std::vector<std::string>{"NoSuchOp (opset 16)"});
  const std::string msg = ErrorOf([&] { Executor exec(m); });
  EXPECT_NE(msg.find("NoSuchOp of opset 16 is not supported"), std::string::npos) << msg;
}

// Loop(M, cond, s0): body (i, cond_in, s) { s2 = s + float(i) + x; cond_out = i < limit } -> (cond_out, s2,
// scan s2), x from the outer scope, limit an initializer of the body.
Model LoopModel(int64_t limit) {
  Graph body;
  body.name = "body";
  body.inputs = {Input("i", DType::kInt64, {}), Input("cond_in", DType::kBool, {}),
                 Input("s", DType::kFloat, {Dim::Fixed(1)})};
  body.initializers.push_back(Tensor::FromVector<int64_t>({}, {limit}, "limit"));
  Node cast = MakeNode("Cast", {"i"}, {"fi"});
  cast.attributes.push_back(Attribute::Int("to", static_cast<int64_t>(DType::kFloat)));
  body.nodes.push_back(cast);
  body.nodes.push_back(MakeNode("Add", {"s", "fi"}, {"s1"}));
  body.nodes.push_back(MakeNode("Add", {"s1", "x"}, {"s2"}));
  body.nodes.push_back(MakeNode("Less", {"i", "limit"}, {"cond_out"}));
  body.nodes.push_back(MakeNode("Identity", {"s2"}, {"scan"}));
  body.outputs = {Output("cond_out"), Output("s2"), Output("scan")};

  Model m;
  m.ir_version = 8;
  m.opset_imports = {{"", 16}};
  m.graph.inputs = {Input("M", DType::kInt64, {}), Input("x", DType::kFloat, {Dim::Fixed(1)}),
                    Input("s0", DType::kFloat, {Dim::Fixed(1)})};
  Node loop = MakeNode("Loop", {"M", "", "s0"}, {"s_final", "scans"});
  loop.attributes.push_back(GraphAttr("body", body));
  m.graph.nodes.push_back(loop);
  m.graph.outputs = {Output("s_final"), Output("scans")};
  return m;
}

TEST(Loop, StopsAtTheTripCountAndStacksScanOutputs) {
  Executor exec(LoopModel(100));
  const auto out = exec.Run({Tensor::FromVector<int64_t>({}, {3}), Tensor::FromVector<float>({1}, {1}),
                             Tensor::FromVector<float>({1}, {0})});
  // s: 0 -> 0+0+1 = 1 -> 1+1+1 = 3 -> 3+2+1 = 6.
  EXPECT_EQ(Floats(out[0]), (std::vector<float>{6}));
  EXPECT_EQ(out[1].dims(), (std::vector<int64_t>{3, 1}));
  EXPECT_EQ(Floats(out[1]), (std::vector<float>{1, 3, 6}));
}

TEST(Loop, StopsWhenTheBodyConditionTurnsFalse) {
  // i < 1 is true after iteration 0 and false after iteration 1: two iterations out of M = 10.
  Executor exec(LoopModel(1));
  const auto out = exec.Run({Tensor::FromVector<int64_t>({}, {10}), Tensor::FromVector<float>({1}, {1}),
                             Tensor::FromVector<float>({1}, {0})});
  EXPECT_EQ(Floats(out[0]), (std::vector<float>{3}));
  EXPECT_EQ(Floats(out[1]), (std::vector<float>{1, 3}));
}

TEST(Loop, ZeroTripsReturnTheInitialValues) {
  Executor exec(LoopModel(100));
  const auto out = exec.Run({Tensor::FromVector<int64_t>({}, {0}), Tensor::FromVector<float>({1}, {1}),
                             Tensor::FromVector<float>({1}, {5})});
  EXPECT_EQ(Floats(out[0]), (std::vector<float>{5}));
  EXPECT_EQ(out[1].numel(), 0);
}

}  // namespace
}  // namespace compress
