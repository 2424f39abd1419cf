// Comparing a compressed model with its original on the same data: top-1 before and after, agreement,
// cosine similarity and SQNR of the first output, latency in our executor, and the SQNR of every
// intermediate value the two models share. The measurements behind reports, gates, `compare` and `auto`.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "compress/eval/evaluate.h"
#include "compress/io/dataset.h"
#include "compress/ir/graph.h"

namespace compress {

struct CompareOptions {
  int64_t batch = 64;
  int64_t limit = 0;  // first `limit` samples only (0: all)
  int threads = 0;
  bool progress = true;
};

// Both models evaluated on the same data, and how far the second's first output is from the first's.
struct ModelComparison {
  std::string data;         // folder as given by the user
  std::string data_sha256;  // set by the caller: hashing reads every byte, once per run is enough
  int64_t samples = 0;
  int64_t skipped = 0;      // trailing samples too few to fill the model's fixed batch (not evaluated)
  bool labelled = false;
  int64_t batch = 0;
  double top1_before = 0, top1_after = 0;  // when labelled
  double agreement = 0;        // fraction of samples whose argmax (top-1 prediction) is unchanged
  double cosine = 0;           // mean over samples of the cosine similarity of output 0
  double sqnr_db = 0;          // 10 log10(sum ref^2 / sum (ref - out)^2) over all of output 0; +inf if equal
  double max_abs_error = 0;
  double ms_per_sample_before = 0, ms_per_sample_after = 0;  // our executor, at `batch`
  size_t integer_groups_after = 0;  // products of the compressed model run in integers there
};

// The original model evaluated once on the data; Compare() then evaluates only the compressed model. Gives
// the figures of ModelComparison (the original's latency is the one measured here, once).
class ReferenceEvaluation {
 public:
  ReferenceEvaluation(const Model& before, const Dataset& data, std::string data_label, const CompareOptions& options);
  ModelComparison Compare(const Model& after) const;
  // The same comparison on the first `limit` samples only, without a progress bar (the fallback's
  // sensitivity ranking).
  ModelComparison Compare(const Model& after, int64_t limit) const;
  const EvalResult& result() const { return ref_; }
  const Dataset& data() const { return data_; }
  const std::string& data_label() const { return label_; }
  const CompareOptions& options() const { return options_; }

 private:
  const Dataset& data_;
  std::string label_;
  CompareOptions options_;
  EvalResult ref_;
};

// How far `b`'s first output and predictions are from `a`'s, two evaluations of the same samples (with
// EvalOptions::keep_outputs): the fidelity figures of ReferenceEvaluation and `compress sensitivity`.
struct OutputFidelity {
  double agreement = 0;           // fraction of samples whose top-1 is unchanged
  double cosine = 0;              // mean over samples of the cosine similarity of output 0 (two zeros: 1)
  double signal = 0, noise = 0;   // sum ref^2 and sum (ref - out)^2 over all of output 0
  double sqnr_db = 0;             // 10 log10(signal / noise); +inf when equal
  double max_abs_error = 0;
};
OutputFidelity CompareOutputs(const EvalResult& a, const EvalResult& b);

// SQNR of every intermediate value the two models share by name (the compressed model's layer outputs
// against the original's), over the first `samples` of `data` (in the batches Dataset::PlanBatches
// forms). In graph order of `before`. Values whose size or element type differs between the two (a
// channel-pruned layer's output, an integer shape) or that are not float32/float16 are left out.
struct LayerSqnr {
  std::string name;     // value name
  std::string op_type;  // producer in the original model
  double sqnr_db = 0;   // +inf when identical
};
std::vector<LayerSqnr> CompareLayers(const Model& before, const Model& after, const Dataset& data, int64_t samples,
                                     int threads);

}  // namespace compress
