#include "compress/pipeline/pipeline.h"

#include <chrono>

#include "compress/ir/verify.h"
#include "compress/passes/pass.h"
#include "compress/util/error.h"

namespace compress {

namespace {

void Measure(const Graph& graph, GraphStats* s) {
  s->nodes += static_cast<int64_t>(graph.nodes.size());
  for (const auto& t : graph.initializers) {
    ++s->initializers;
    s->weight_bytes += static_cast<int64_t>(t.nbytes());
  }
  for (const auto& sp : graph.sparse_initializers) {
    ++s->initializers;
    s->weight_bytes += static_cast<int64_t>(sp.values.nbytes() + sp.indices.nbytes());
  }
  for (const auto& node : graph.nodes) {
    if (node.op_type == "Constant" && node.IsDefaultDomain()) {
      for (const auto& a : node.attributes) {
        for (const auto& t : a.tensors) {
          ++s->initializers;
          s->weight_bytes += static_cast<int64_t>(t.nbytes());
        }
        for (const auto& sp : a.sparse_tensors) {
          ++s->initializers;
          s->weight_bytes += static_cast<int64_t>(sp.values.nbytes() + sp.indices.nbytes());
        }
      }
    }
    for (const auto& a : node.attributes) {
      for (const auto& g : a.graphs) Measure(g, s);
    }
  }
}

}  // namespace

nlohmann::json GraphStats::ToJson() const {
  return {{"nodes", nodes}, {"initializers", initializers}, {"weight_bytes", weight_bytes}};
}

GraphStats MeasureGraph(const Model& model) {
  GraphStats s;
  Measure(model.graph, &s);
  return s;
}

PassRun RunPass(Model& model, const std::string& name, Pass& pass, const nlohmann::json& options,
                const PipelineOptions& pipeline_options) {
  PassRun run;
  run.pass = name;
  run.options = options;
  run.before = MeasureGraph(model);
  PassContext ctx(pipeline_options.threads, pipeline_options.calibration);
  const auto start = std::chrono::steady_clock::now();
  pass.Run(model, ctx);
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  try {
    VerifyModel(model);
  } catch (const Error& e) {
    ThrowInternal("pass '" + name + "' produced an invalid graph: " + e.what());
  }
  if (!IsTopologicallySorted(model.graph)) {
    ThrowInternal("pass '" + name + "' left the graph out of topological order");
  }
  run.after = MeasureGraph(model);
  run.counters = ctx.counters();
  run.notes = ctx.notes();
  run.details = ctx.details();
  return run;
}

std::vector<PassRun> RunPipeline(Model& model, const Recipe& recipe, const PipelineOptions& options) {
  std::vector<PassRun> runs;
  for (const RecipeStep& step : recipe.ExpandedSteps()) {
    const PassInfo* info = FindPass(step.pass);
    if (info == nullptr) ThrowInternal("pipeline: unknown pass '" + step.pass + "'");
    if (options.on_pass) options.on_pass(step);
    const std::unique_ptr<Pass> pass = info->create(step.options);
    runs.push_back(RunPass(model, step.pass, *pass, step.options, options));
  }
  return runs;
}

}  // namespace compress
