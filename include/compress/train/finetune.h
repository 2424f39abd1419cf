// Fine-tuning a compressed model (the student) toward the original (the teacher) on unlabelled or
// labelled data, on the CPU, from the graph itself.
//
// Loss per batch: (1 - a) * T^2 KL(softmax(teacher / T) || softmax(student / T)) on the first output,
// plus a * cross-entropy against the labels when the data has them and a > 0, plus the mean squared error
// of every named intermediate value (student vs teacher). Trained: every float initializer of more than
// one element on a path to the loss (Backprop::TrainableParameters). What compression decided stays:
// weight elements that are exactly zero stay zero (unstructured and N:M sparsity), shapes do not change
// (removed channels, low-rank factors), folded BatchNormalization stays folded.
//
// Deterministic: the sample order of epoch e is a Fisher-Yates shuffle seeded with (seed, e) from our own
// generator, gradients and updates are summed in a fixed order, so the same command gives the same
// weights whatever the thread count.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "compress/ir/graph.h"
#include "compress/ir/tensor.h"
#include "compress/train/autodiff.h"
#include "compress/train/optimizer.h"

namespace compress::train {

// The teacher's outputs on a data folder, kept between the fine-tuning runs of one command: the recipes of
// a `compare` or an `auto` that fine-tune on the same data with the same teacher run it once.
class TeacherCache {
 public:
  const std::vector<Tensor>* Find(const std::string& key) const {
    const auto it = entries_.find(key);
    return it == entries_.end() ? nullptr : &it->second;
  }
  void Store(const std::string& key, std::vector<Tensor> batches) {
    entries_[key] = std::move(batches);
    ++runs_;
  }
  // Times the teacher ran over a data folder (once per distinct folder, limit, batch and output).
  int64_t runs() const { return runs_; }

 private:
  std::map<std::string, std::vector<Tensor>> entries_;
  int64_t runs_ = 0;
};

struct FinetuneOptions {
  std::string data_dir;
  std::string labels_file;       // overrides DIR/labels.* when set
  int64_t epochs = 1;
  int64_t batch = 64;
  int64_t limit = 0;             // > 0: the first N samples only
  double temperature = 4.0;
  // How output 0 is matched to the original's: "kl" (distillation of class scores, T^2 KL of the
  // softened softmaxes) or "mse" (mean squared error, for outputs that are not class scores: embeddings,
  // maps, regressions).
  std::string distill_loss = "kl";
  double label_weight = -1.0;    // weight of cross-entropy; < 0: 0.5 when the data has labels, else 0
  std::vector<std::string> feature_loss;  // intermediate values matched by MSE
  uint64_t seed = 0;
  OptimizerOptions optimizer;    // total_steps and warmup_steps are set from the data
  double warmup_fraction = 0.05; // of all steps
  int threads = 0;
  // Per-epoch top-1 on this labelled folder (empty: none).
  std::string eval_dir;
  int64_t eval_limit = 0;
  // Trained besides TrainableParameters (QAT: the per-tensor scales), and per-parameter learning-rate
  // factors (QAT: scales move far less than weights).
  std::vector<std::string> extra_parameters;
  std::vector<std::string> frozen_parameters;  // never trained (QAT without scale learning)
  std::map<std::string, double> lr_factor;
  // Which weights keep their zeros: all weights of rank >= 2 with zeros (default), or only those listed.
  bool keep_all_zeros = true;
  std::set<std::string> keep_zeros_of;
  bool progress = true;          // a bar per epoch on a terminal; one log line per epoch otherwise
  TeacherCache* teacher_cache = nullptr;  // reuse the teacher's outputs across runs (may be null)
  std::string label = "fine-tune";  // progress label
};

struct EpochStats {
  int64_t epoch = 0;
  double loss = 0;                // mean over the epoch's batches
  double seconds = 0;
  double samples_per_second = 0;
  double eval_top1 = -1;          // < 0 when not measured (no eval folder, or one without labels)
};

struct FinetuneResult {
  std::vector<EpochStats> epochs;
  int64_t samples = 0;            // per epoch
  int64_t steps = 0;
  int64_t batch = 0;
  double seconds = 0;
  int64_t peak_rss_bytes = 0;     // of the process, at the end
  std::vector<std::string> parameters;
  int64_t parameter_elements = 0;
  int64_t frozen_zeros = 0;       // weight elements kept at zero
  bool used_labels = false;
  double label_weight = 0;        // as used
  // The student's value matched to the teacher's: output 0, or the logits feeding a final Softmax.
  std::string distilled_value;
  nlohmann::json ToJson() const;
};

// Trains `student` in place. `teacher` must take the same inputs and give outputs of the same shapes.
// Throws Error(kInvalidInput) naming the node when a node on the way to the loss has no backward rule,
// Error(kUsage) for options that cannot work (labels asked for but absent, unknown feature values).
FinetuneResult Finetune(Model& student, const Model& teacher, const FinetuneOptions& options);

// Time of one training step (forward with every value kept, distillation loss, backward over every
// trainable weight, AdamW update) against one plain forward run of the executor on the same inputs,
// interleaved so that both see the same machine load. Medians over at least 5 pairs and `min_seconds`.
struct TrainStepTiming {
  double forward_seconds = 0;
  double step_seconds = 0;
  // Medians of the step's parts: the forward pass keeping every value, the loss and backward pass, the
  // optimizer's update.
  double step_forward_seconds = 0, step_backward_seconds = 0, step_update_seconds = 0;
  // Backward rules by operator type, seconds summed over every timed and warm-up step, with the number
  // of steps they cover.
  std::vector<BackwardOpTime> backward_profile;
  int64_t profiled_steps = 0;
  int64_t runs = 0;
  int64_t parameters = 0;      // trained elements
  int64_t peak_rss_bytes = 0;  // of the process after the runs
};
TrainStepTiming TimeTrainingStep(const Model& model, const std::vector<Tensor>& inputs, int threads,
                                 double min_seconds);

// The process's peak resident set size in bytes (0 when the system does not say).
int64_t PeakResidentBytes();

}  // namespace compress::train
