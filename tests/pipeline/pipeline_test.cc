#include "compress/pipeline/pipeline.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "compress/passes/pass.h"
#include "compress/util/error.h"
#include "support/test_support.h"

namespace compress {
namespace {

// Adds a Relu after the graph output and counts it: a well-behaved pass.
class AppendRelu : public Pass {
 public:
  void Run(Model& model, PassContext& ctx) override {
    Graph& g = model.graph;
    Node relu;
    relu.name = "extra_relu";
    relu.op_type = "Relu";
    relu.inputs = {g.outputs[0].name};
    relu.outputs = {g.outputs[0].name + "_relu"};
    g.outputs[0].name = relu.outputs[0];
    g.nodes.push_back(relu);
    ctx.Count("added");
    ctx.Note("appended a Relu");
  }
};

// Reads a value nothing produces: the runner must catch it.
class Dangling : public Pass {
 public:
  void Run(Model& model, PassContext&) override {
    Node n;
    n.name = "broken";
    n.op_type = "Relu";
    n.inputs = {"nowhere"};
    n.outputs = {"z"};
    model.graph.nodes.push_back(n);
  }
};

// Moves the last node first: valid values, wrong order.
class Unsort : public Pass {
 public:
  void Run(Model& model, PassContext&) override {
    auto& nodes = model.graph.nodes;
    std::rotate(nodes.rbegin(), nodes.rbegin() + 1, nodes.rend());
  }
};

TEST(Pipeline, MeasureGraphCountsNodesWeightsAndBytes) {
  const Model m = testing::TinyModel();
  const GraphStats s = MeasureGraph(m);
  EXPECT_EQ(s.nodes, 3);
  EXPECT_EQ(s.initializers, 2);
  EXPECT_EQ(s.weight_bytes, (4 * 3 + 3) * 4);
}

TEST(Pipeline, RunPassRecordsStatisticsCountersAndNotes) {
  Model m = testing::TinyModel();
  AppendRelu pass;
  const PassRun run = RunPass(m, "append_relu", pass, nlohmann::json::object());
  EXPECT_EQ(run.pass, "append_relu");
  EXPECT_EQ(run.before.nodes, 3);
  EXPECT_EQ(run.after.nodes, 4);
  EXPECT_EQ(run.after.weight_bytes, run.before.weight_bytes);
  EXPECT_EQ(run.counters.at("added"), 1);
  ASSERT_EQ(run.notes.size(), 1u);
  EXPECT_GE(run.seconds, 0.0);
}

TEST(Pipeline, APassThatBreaksTheGraphIsAnInternalErrorNamingIt) {
  Model m = testing::TinyModel();
  Dangling dangling;
  try {
    RunPass(m, "dangling", dangling, nlohmann::json::object());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInternal);
    EXPECT_NE(std::string(e.what()).find("pass 'dangling' produced an invalid graph"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("nowhere"), std::string::npos) << e.what();
  }
  Model m2 = testing::TinyModel();
  Unsort unsort;
  EXPECT_NE(testing::ErrorOf([&] { RunPass(m2, "unsort", unsort, nlohmann::json::object()); })
                .find("pass 'unsort' left the graph out of topological order"),
            std::string::npos);
}

TEST(Pipeline, RunPipelineRunsTheExpandedStepsInOrder) {
  Model m = testing::TinyModel();
  Recipe recipe;
  recipe.name = "cleanup";
  std::vector<std::string> seen;
  PipelineOptions opt;
  opt.on_pass = [&](const RecipeStep& s) { seen.push_back(s.pass); };
  const auto runs = RunPipeline(m, recipe, opt);
  std::vector<std::string> expected;
  for (const auto& s : recipe.ExpandedSteps()) expected.push_back(s.pass);
  EXPECT_EQ(seen, expected);
  ASSERT_EQ(runs.size(), expected.size());
  for (size_t i = 0; i < runs.size(); ++i) EXPECT_EQ(runs[i].pass, expected[i]);
  // Nothing to clean in the tiny model: every pass leaves it as it was.
  EXPECT_EQ(runs.back().after.nodes, 3);
  EXPECT_EQ(runs.back().after.weight_bytes, runs.front().before.weight_bytes);
}

PassRun RunNamedPass(Model& m, const std::string& name, const nlohmann::json& options) {
  const PassInfo* info = FindPass(name);
  EXPECT_NE(info, nullptr);
  const nlohmann::json full = ValidatePassOptions(*info, options, "test");
  return RunPass(m, name, *info->create(full), full);
}

TEST(Pipeline, CompressionPassConvertingLittleSaysWhyInOneNote) {
  // TinyModel: W [4,3] and b [3] float32 (60 bytes). With MatMul excluded only nothing is converted.
  Model m = testing::TinyModel();
  const PassRun run = RunNamedPass(m, "quantize", {{"mode", "weights_only"}, {"exclude_ops", {"MatMul"}}});
  ASSERT_FALSE(run.notes.empty());
  const std::string want =
      "quantize: converted 0% of weight bytes; most of the rest stays float32: excluded by exclude_ops (1 node)";
  EXPECT_EQ(std::count(run.notes.begin(), run.notes.end(), want), 1);
  EXPECT_EQ(run.details["coverage"]["summary"], want);
  EXPECT_EQ(run.details["coverage"]["weight_bytes"], 60);
  EXPECT_EQ(run.details["coverage"]["converted_bytes"], 0);

  // Mostly int64 constants: fp16 converts the 60 float bytes of 460, 13%.
  Model big = testing::TinyModel();
  big.graph.initializers.push_back(Tensor(DType::kInt64, {50}, "shape_table"));
  const PassRun fp16 = RunNamedPass(big, "fp16", nlohmann::json::object());
  EXPECT_EQ(fp16.details["coverage"]["summary"],
            "fp16: converted 13% of weight bytes; most of the rest is in int64 tensors (shape constants, indices)");

  // Converting everything says nothing.
  Model all = testing::TinyModel();
  const PassRun full = RunNamedPass(all, "quantize", {{"mode", "weights_only"}});
  EXPECT_FALSE(full.details.contains("coverage"));
  for (const auto& n : full.notes) EXPECT_EQ(n.find("of weight bytes"), std::string::npos) << n;
}

}  // namespace
}  // namespace compress
