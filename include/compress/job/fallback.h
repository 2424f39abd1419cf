// The accuracy gate's automatic fallback: keeping the most sensitive layers in float, one at a time,
// until the gate holds.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "compress/eval/compare.h"
#include "compress/eval/gate.h"
#include "compress/ir/graph.h"

namespace compress {

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
// re-evaluating on all of it after each, until the gate holds or the candidates run out.
FallbackResult RunFallback(const GateSpec& spec, const ReferenceEvaluation& reference,
                           const std::vector<std::string>& candidates, const std::vector<std::string>& candidate_ops,
                           const BuildWithExclusions& build, int64_t sensitivity_samples);

}  // namespace compress
