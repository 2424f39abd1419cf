#include "compress/job/fallback.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "compress/util/progress.h"

namespace compress {

FallbackResult RunFallback(const GateSpec& spec, const ReferenceEvaluation& reference,
                           const std::vector<std::string>& candidates, const std::vector<std::string>& candidate_ops,
                           const BuildWithExclusions& build, int64_t sensitivity_samples) {
  FallbackResult result;
  const CompareOptions& options = reference.options();
  int64_t quick = std::min<int64_t>(sensitivity_samples, reference.data().num_samples());
  if (options.limit > 0) quick = std::min(quick, options.limit);
  result.sensitivity_samples = quick;

  // Sensitivity: the output SQNR when only this layer stays in float. The larger it gets, the more
  // this layer's quantization costs.
  std::vector<std::pair<double, size_t>> ranked;
  {
    ProgressBar bar("layer sensitivity", static_cast<int64_t>(candidates.size()), options.progress);
    for (size_t i = 0; i < candidates.size(); ++i) {
      const Model m = build({candidates[i]});
      const ModelComparison c = reference.Compare(m, quick);
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
    result.comparison = reference.Compare(result.model);
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
