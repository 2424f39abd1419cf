// Pruning sensitivity: how much the model's output moves when only one layer (pass `prune`) or one
// channel group (pass `prune_channels`) is pruned, measured on a data folder against the original model;
// and --target-macs, which turns those measurements into per-group ratios that meet a MAC budget.
//
// Both work on the model after the clean-up passes, exactly as a compression run does, and reuse the
// passes' own selection: the candidates are what the pass prunes in a full run (details.layers), and a
// single candidate is pruned through the pass options `only_nodes` (prune) or `group_ratios`
// (prune_channels). Fidelity is computed as for --eval: top-1 agreement with the original, mean cosine
// similarity and SQNR of output 0, top-1 with labels.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "compress/eval/compare.h"
#include "compress/eval/evaluate.h"
#include "compress/io/dataset.h"
#include "compress/ir/graph.h"
#include "compress/passes/pass.h"
#include "compress/pipeline/recipe.h"

namespace compress {

struct SensitivityOptions {
  int threads = 0;
  int64_t batch = 64;
  int64_t limit = 0;     // first `limit` samples of the data only (0: all)
  bool progress = true;  // one bar over the candidates (drawn only on a terminal)
  CalibrationSource* calibration = nullptr;  // activation statistics for the passes (wanda), may be null
  bool cleanup = true;   // run the clean-up passes first, as a compression run does unless --no-optimize
};

// A pruned model against the original on the data.
struct Fidelity {
  double agreement = 0;   // fraction of samples whose top-1 is unchanged
  double cosine = 0;      // mean over samples of the cosine similarity of output 0
  double sqnr_db = 0;     // +inf when output 0 is unchanged
  double noise_ratio = 0; // sum (ref - out)^2 / sum ref^2 over output 0: 10^(-SQNR/10)
  std::optional<double> top1;  // with labels
};

// The original model's outputs on the data, computed once; Measure() runs a candidate and compares.
class FidelityProbe {
 public:
  FidelityProbe(const Model& original, const Dataset& data, const SensitivityOptions& options);
  Fidelity Measure(const Model& candidate) const;
  const EvalResult& reference() const { return reference_; }

 private:
  const Dataset& data_;
  SensitivityOptions options_;
  EvalResult reference_;
};

// `compress sensitivity`: one entry per layer (step.pass == "prune") or channel group ("prune_channels")
// that the pass prunes with `step.options`, each pruned alone, sorted by drop (top-1 agreement ascending,
// then SQNR ascending, then graph order). The document (schema compress.sensitivity/1) is described in
// README.md ("compress sensitivity").
nlohmann::json RunSensitivity(const Model& original, const std::string& model_path, const RecipeStep& step,
                              const Dataset& data, const std::string& data_label,
                              const SensitivityOptions& options);

// Ratios measured per group by --target-macs (steps of 1/8: finer than one rounding step of a 64-channel
// group); the reachable minimum of the MACs is every prunable group at the largest.
inline const std::vector<double>& TargetMacsRatios() {
  static const std::vector<double> ratios = {0.125, 0.25, 0.375, 0.5, 0.625, 0.75};
  return ratios;
}

// Kept widths under --target-macs are multiples of 16 (halved for groups under 64 channels, as round_to
// always is): ONNX Runtime's blocked (NCHWc) convolutions on AVX-512 take channels in blocks of 16, and
// the sample CNN pruned to 32 channels in its two 64-wide groups (46 % of the MACs) runs faster there than
// pruned to 24 in one (43 %); BENCHMARKS.md ("Structured pruning in ONNX Runtime").
inline constexpr int64_t kTargetMacsRoundTo = 16;

// --target-macs FRACTION: options for pass `prune_channels` (`step.options` completed, with `ratio` 0 and
// `group_ratios` chosen, or a uniform `ratio` without data) under which the cleaned-up model keeps at most
// FRACTION of the MACs of `original` (CountMacs, after the surgery). With data: each group's fidelity loss
// (noise ratio of output 0) is measured at every ratio of TargetMacsRatios(), then groups are pruned
// further greedily, the step with the least loss per MAC saved first, counting the MACs of the actual
// surgery after every step, until the budget holds. Without data (null): the smallest uniform ratio
// meeting the budget, by bisection. `details` receives what was chosen (see README, "--target-macs").
// Throws Error(kAccuracyGate) when even the largest ratio in every group keeps more than FRACTION,
// naming the reachable fraction.
nlohmann::json ChooseTargetMacsOptions(const Model& original, const RecipeStep& step, double fraction,
                                       const Dataset* data, const SensitivityOptions& options,
                                       nlohmann::json* details);

}  // namespace compress
