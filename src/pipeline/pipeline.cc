#include "compress/pipeline/pipeline.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <utility>

#include "compress/ir/verify.h"
#include "compress/passes/pass.h"
#include "compress/util/error.h"

namespace compress {

namespace {

void Add(GraphStats* s, DType dtype, int64_t bytes) {
  ++s->initializers;
  s->weight_bytes += bytes;
  s->bytes_by_dtype[dtype] += bytes;
}

void Measure(const Graph& graph, GraphStats* s) {
  s->nodes += static_cast<int64_t>(graph.nodes.size());
  for (const auto& t : graph.initializers) Add(s, t.dtype(), static_cast<int64_t>(t.nbytes()));
  for (const auto& sp : graph.sparse_initializers) {
    Add(s, sp.values.dtype(), static_cast<int64_t>(sp.values.nbytes() + sp.indices.nbytes()));
  }
  for (const auto& node : graph.nodes) {
    if (node.op_type == "Constant" && node.IsDefaultDomain()) {
      for (const auto& a : node.attributes) {
        for (const auto& t : a.tensors) Add(s, t.dtype(), static_cast<int64_t>(t.nbytes()));
        for (const auto& sp : a.sparse_tensors) {
          Add(s, sp.values.dtype(), static_cast<int64_t>(sp.values.nbytes() + sp.indices.nbytes()));
        }
      }
    }
    for (const auto& a : node.attributes) {
      for (const auto& g : a.graphs) Measure(g, s);
    }
  }
}

int64_t BytesOf(const GraphStats& s, DType t) {
  const auto it = s.bytes_by_dtype.find(t);
  return it == s.bytes_by_dtype.end() ? 0 : it->second;
}

// The reason given most often in a pass's list of nodes left in float (quantize: details.float_nodes
// [{why}], fp16: details.blocked {node: why}), with how many nodes give it.
std::pair<std::string, int64_t> MainFloatReason(const nlohmann::json& details) {
  std::map<std::string, int64_t> count;
  auto add = [&](std::string why) {
    // Reasons carrying per-node numbers are grouped by the option behind them.
    if (why.find("min_conv_depth") != std::string::npos) why = "kept in float by --min-conv-depth";
    ++count[why];
  };
  if (details.contains("float_nodes") && details["float_nodes"].is_array()) {
    for (const auto& e : details["float_nodes"]) {
      if (e.contains("why") && e["why"].is_string()) add(e["why"].get<std::string>());
    }
  }
  if (details.contains("blocked") && details["blocked"].is_object()) {
    for (const auto& e : details["blocked"]) {
      if (e.is_string()) add(e.get<std::string>());
    }
  }
  std::pair<std::string, int64_t> best{"", 0};
  for (const auto& [why, n] : count) {
    if (n > best.second) best = {why, n};
  }
  return best;
}

// When a compression pass converted less than kLowCoverage of the model's weight bytes (float32 bytes that
// are not float32 any more, over all weight bytes before the pass), one note with the main reason for the
// rest: tensors of other types (shape constants), or float32 weights the pass left alone and why.
void CheckCoverage(PassRun& run) {
  const int64_t total = run.before.weight_bytes;
  if (total <= 0) return;
  const int64_t f32_before = BytesOf(run.before, DType::kFloat);
  const int64_t f32_after = BytesOf(run.after, DType::kFloat);
  const int64_t converted = std::max<int64_t>(0, f32_before - f32_after);
  const double share = static_cast<double>(converted) / static_cast<double>(total);
  if (share >= kLowCoverage) return;
  const int64_t other = total - f32_before;  // not float32 to begin with
  const int64_t kept = total - converted - other;
  std::string reason;
  if (other >= kept) {
    DType main = DType::kUndefined;
    int64_t main_bytes = -1;
    for (const auto& [t, b] : run.before.bytes_by_dtype) {
      if (t != DType::kFloat && b > main_bytes) {
        main = t;
        main_bytes = b;
      }
    }
    const bool integer = main == DType::kInt64 || main == DType::kInt32;
    reason = "most of the rest is in " + std::string(DTypeName(main)) +
             (integer ? " tensors (shape constants, indices)" : " tensors, which the pass does not convert");
  } else {
    const auto [why, nodes] = MainFloatReason(run.details);
    reason = "most of the rest stays float32: " +
             (why.empty() ? std::string("weights of operators the pass does not convert")
                          : why + " (" + std::to_string(nodes) + " node" + (nodes == 1 ? "" : "s") + ")");
  }
  const int pct = static_cast<int>(share * 100.0);
  const std::string line = run.pass + ": converted " + std::to_string(pct) + "% of weight bytes; " + reason;
  run.notes.push_back(line);
  run.details["coverage"] = {{"converted_bytes", converted},
                             {"weight_bytes", total},
                             {"share", share},
                             {"summary", line}};
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
  ctx.set_teacher(pipeline_options.teacher);
  ctx.set_teacher_cache(pipeline_options.teacher_cache);
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
  if (name == "fp16" || name == "quantize") CheckCoverage(run);
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
