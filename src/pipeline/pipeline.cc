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

std::vector<PassRun> RunPipeline(Model& model, const Recipe& recipe, const PipelineOptions& options) {
  std::vector<PassRun> runs;
  for (const RecipeStep& step : recipe.ExpandedSteps()) {
    const PassInfo* info = FindPass(step.pass);
    if (info == nullptr) ThrowInternal("pipeline: unknown pass '" + step.pass + "'");
    if (options.on_pass) options.on_pass(step);
    PassRun run;
    run.pass = step.pass;
    run.options = step.options;
    run.before = MeasureGraph(model);
    PassContext ctx(options.threads);
    const auto start = std::chrono::steady_clock::now();
    info->create(step.options)->Run(model, ctx);
    run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    try {
      VerifyModel(model);
    } catch (const Error& e) {
      ThrowInternal("pass '" + step.pass + "' produced an invalid graph: " + e.what());
    }
    if (!IsTopologicallySorted(model.graph)) {
      ThrowInternal("pass '" + step.pass + "' left the graph out of topological order");
    }
    run.after = MeasureGraph(model);
    run.counters = ctx.counters();
    run.notes = ctx.notes();
    run.details = ctx.details();
    runs.push_back(std::move(run));
  }
  return runs;
}

}  // namespace compress
