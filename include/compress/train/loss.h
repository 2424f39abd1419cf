// Training losses with their gradients. Classes lie along the last axis; every other axis is a sample
// (a [N, C] logit matrix has N samples). Losses are means over samples, computed in double.
#pragma once

#include <cstdint>
#include <vector>

#include "compress/ir/tensor.h"

namespace compress::train {

struct LossValue {
  double loss = 0;
  Tensor grad;  // d loss / d the first argument, its dtype and shape
};

// Hinton's distillation loss: T^2 * KL(softmax(teacher / T) || softmax(student / T)), averaged over
// samples. The T^2 keeps the gradient's scale independent of T: d/ds = T (softmax(s/T) - softmax(t/T)) / N.
LossValue DistillationLoss(const Tensor& student, const Tensor& teacher, double temperature);

// Mean cross-entropy of softmax(logits) against integer labels (one per sample).
LossValue CrossEntropyLoss(const Tensor& logits, const std::vector<int64_t>& labels);

// Mean squared error between two tensors of the same shape (intermediate values of student and teacher).
LossValue MseLoss(const Tensor& student, const Tensor& teacher);

}  // namespace compress::train
