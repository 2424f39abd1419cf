// The accuracy gate (--max-accuracy-drop / --min-agreement) and its automatic fallback: keeping the
// most sensitive layers in float, one at a time, until the gate holds.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "compress/report/report.h"

namespace compress {

struct GateSpec {
  std::optional<double> max_drop_pts;   // labelled data: top-1 may drop by at most this many points
  std::optional<double> min_agreement;  // unlabelled data: top-1 agreement with the original, fraction
  bool auto_fallback = false;
  bool active() const { return max_drop_pts.has_value() || min_agreement.has_value(); }
};

// Judges a comparison. Throws Error(kUsage) for --max-accuracy-drop on unlabelled data.
GateCheck CheckGate(const GateSpec& spec, const ModelComparison& c);

// One layer kept in float by the fallback, with the sensitivity that ranked it.
struct FallbackStep {
  std::string node;
  std::string op_type;
  double sqnr_db_without = 0;  // output SQNR vs the original when only this layer is kept in float
  GateCheck check;             // the gate after keeping this and every earlier layer in float
};

// Builds the compressed model with the given nodes kept in float (re-running the recipe).
using BuildWithExclusions = std::function<Model(const std::vector<std::string>& float_nodes)>;

struct FallbackResult {
  std::vector<FallbackStep> steps;
  Model model;                    // the last model built
  ModelComparison comparison;     // its comparison on the gate data
  GateCheck check;
  int64_t sensitivity_samples = 0;
};

// Ranks `candidates` (node names) by how much keeping each alone in float improves the output SQNR on
// the first `sensitivity_samples` of `data`, then keeps them in float greedily, most sensitive first,
// re-evaluating on all of `data` after each, until the gate holds or the candidates run out.
FallbackResult RunFallback(const GateSpec& spec, const Model& original, const std::vector<std::string>& candidates,
                           const std::vector<std::string>& candidate_ops, const BuildWithExclusions& build,
                           const Dataset& data, const std::string& data_label, const CompareOptions& options,
                           int64_t sensitivity_samples);

}  // namespace compress
