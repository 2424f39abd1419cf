#include "compress/report/gate.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "compress/util/error.h"
#include "compress/util/progress.h"

namespace compress {

GateCheck CheckGate(const GateSpec& spec, const ModelComparison& c) {
  GateCheck g;
  if (spec.max_drop_pts) {
    if (!c.labelled) {
      ThrowUsage("--max-accuracy-drop needs labelled data (" + c.data +
                 " has no labels); use --min-agreement for unlabelled data");
    }
    g.metric = "top1_drop_pts";
    g.value = (c.top1_before - c.top1_after) * 100.0;
    g.threshold = *spec.max_drop_pts;
    g.margin = g.threshold - g.value;
  } else if (spec.min_agreement) {
    g.metric = "agreement";
    g.value = c.agreement;
    g.threshold = *spec.min_agreement;
    g.margin = g.value - g.threshold;
  } else {
    g.passed = true;
    return g;
  }
  // Accuracies are ratios of integer counts: a margin within rounding of zero is a pass, not a failure.
  g.passed = g.margin >= -1e-9;
  return g;
}

FallbackResult RunFallback(const GateSpec& spec, const Model& original, const std::vector<std::string>& candidates,
                           const std::vector<std::string>& candidate_ops, const BuildWithExclusions& build,
                           const Dataset& data, const std::string& data_label, const CompareOptions& options,
                           int64_t sensitivity_samples) {
  FallbackResult result;
  CompareOptions quick = options;
  quick.limit = std::min<int64_t>(sensitivity_samples, data.num_samples());
  if (options.limit > 0) quick.limit = std::min(quick.limit, options.limit);
  quick.progress = false;
  result.sensitivity_samples = quick.limit;

  // Sensitivity: the output SQNR when only this layer stays in float. The larger it gets, the more
  // this layer's quantization costs.
  std::vector<std::pair<double, size_t>> ranked;
  {
    ProgressBar bar("layer sensitivity", static_cast<int64_t>(candidates.size()), options.progress);
    for (size_t i = 0; i < candidates.size(); ++i) {
      const Model m = build({candidates[i]});
      const ModelComparison c = CompareModels(original, m, data, data_label, quick);
      const double sqnr = std::isfinite(c.sqnr_db) ? c.sqnr_db : std::numeric_limits<double>::max();
      ranked.emplace_back(sqnr, i);
      bar.Advance(1);
    }
  }
  // Most sensitive first; ties in candidate (graph) order so the result is deterministic.
  std::stable_sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) { return a.first > b.first; });

  std::vector<std::string> kept;
  for (const auto& [sqnr, index] : ranked) {
    kept.push_back(candidates[index]);
    result.model = build(kept);
    result.comparison = CompareModels(original, result.model, data, data_label, options);
    result.check = CheckGate(spec, result.comparison);
    FallbackStep step;
    step.node = candidates[index];
    step.op_type = index < candidate_ops.size() ? candidate_ops[index] : "";
    step.sqnr_db_without = sqnr;
    step.check = result.check;
    result.steps.push_back(step);
    if (result.check.passed) break;
  }
  return result;
}

}  // namespace compress
