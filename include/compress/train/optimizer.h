// Optimizers for fine-tuning: SGD with momentum and AdamW (decoupled weight decay), a cosine learning-rate
// schedule with linear warm-up, and clipping of the global gradient norm. Parameters update in place, in
// a fixed order, in double arithmetic per element, so a step does not depend on the thread count.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "compress/ir/tensor.h"

namespace compress::train {

struct OptimizerOptions {
  std::string kind = "adamw";  // "adamw" or "sgd"
  double lr = 1e-3;            // peak learning rate
  double momentum = 0.9;       // sgd
  double beta1 = 0.9;          // adamw
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;   // applied to parameters whose `decay` flag is set
  double clip_norm = 0.0;      // > 0: scale gradients so that their global L2 norm is at most this
  int64_t warmup_steps = 0;
  int64_t total_steps = 0;     // > 0: cosine decay from lr to 0 over the steps after warm-up
};

// The learning rate at step `step` (0-based) of the schedule.
double ScheduledLearningRate(const OptimizerOptions& o, int64_t step);

class Optimizer {
 public:
  // `decay[i]`: whether weight decay applies to parameter i (weights, not biases or norms).
  // `lr_factor[i]` (when given) multiplies the learning rate of parameter i.
  Optimizer(OptimizerOptions options, std::vector<bool> decay, std::vector<double> lr_factor = {});

  // One update of `params` with `grads` (same order and shapes). Elements where `masks[i]` (when not
  // empty) holds 0 stay exactly as they are: pruned weights stay zero. Returns the gradient norm before
  // clipping.
  double Step(std::vector<Tensor>& params, const std::vector<Tensor>& grads, const std::vector<Tensor>& masks);

  int64_t steps() const { return step_; }
  double last_lr() const { return last_lr_; }

 private:
  OptimizerOptions o_;
  std::vector<bool> decay_;
  std::vector<double> lr_factor_;
  std::vector<std::vector<double>> m_, v_;
  int64_t step_ = 0;
  double last_lr_ = 0;
};

}  // namespace compress::train
