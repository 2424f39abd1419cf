#include "compress/train/loss.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "compress/util/error.h"

namespace compress::train {
namespace {

double At(const Tensor& t, int64_t i) {
  return t.dtype() == DType::kDouble ? t.data<double>()[i] : static_cast<double>(t.data<float>()[i]);
}

void Set(Tensor& t, int64_t i, double v) {
  if (t.dtype() == DType::kDouble) {
    t.mutable_data<double>()[i] = v;
  } else {
    t.mutable_data<float>()[i] = static_cast<float>(v);
  }
}

void CheckReal(const Tensor& t, const char* what) {
  if (t.dtype() != DType::kFloat && t.dtype() != DType::kDouble) {
    ThrowInvalid(std::string(what) + " must be float32 or float64, got " + DTypeName(t.dtype()));
  }
  if (t.rank() < 1 || t.dims().back() < 1) ThrowInvalid(std::string(what) + " needs a class axis, got shape " + ShapeToString(t.dims()));
}

// Softmax of row r of `t` (length c) divided by `temperature`, into `p`; returns log(sum exp).
void SoftmaxRow(const Tensor& t, int64_t r, int64_t c, double temperature, std::vector<double>& p) {
  double mx = -INFINITY;
  for (int64_t j = 0; j < c; ++j) mx = std::max(mx, At(t, r * c + j) / temperature);
  double sum = 0;
  for (int64_t j = 0; j < c; ++j) {
    p[static_cast<size_t>(j)] = std::exp(At(t, r * c + j) / temperature - mx);
    sum += p[static_cast<size_t>(j)];
  }
  for (auto& v : p) v /= sum;
}

}  // namespace

LossValue DistillationLoss(const Tensor& student, const Tensor& teacher, double temperature) {
  CheckReal(student, "student output");
  CheckReal(teacher, "teacher output");
  if (student.dims() != teacher.dims()) {
    ThrowInvalid("distillation: student output " + ShapeToString(student.dims()) + " and teacher output " +
                 ShapeToString(teacher.dims()) + " differ in shape");
  }
  if (!(temperature > 0)) ThrowUsage("temperature must be positive");
  const int64_t c = student.dims().back();
  const int64_t n = student.numel() / c;
  LossValue out;
  out.grad = Tensor::Uninitialized(student.dtype(), student.dims());
  std::vector<double> ps(static_cast<size_t>(c)), pt(static_cast<size_t>(c));
  double total = 0;
  for (int64_t r = 0; r < n; ++r) {
    SoftmaxRow(student, r, c, temperature, ps);
    SoftmaxRow(teacher, r, c, temperature, pt);
    double kl = 0;
    for (size_t j = 0; j < ps.size(); ++j) {
      if (pt[j] > 0) kl += pt[j] * (std::log(pt[j]) - std::log(std::max(ps[j], 1e-300)));
      Set(out.grad, r * c + static_cast<int64_t>(j), temperature * (ps[j] - pt[j]) / static_cast<double>(n));
    }
    total += kl;
  }
  out.loss = temperature * temperature * total / static_cast<double>(n);
  return out;
}

LossValue CrossEntropyLoss(const Tensor& logits, const std::vector<int64_t>& labels) {
  CheckReal(logits, "model output");
  const int64_t c = logits.dims().back();
  const int64_t n = logits.numel() / c;
  if (static_cast<int64_t>(labels.size()) != n) {
    ThrowInvalid("cross-entropy: " + std::to_string(labels.size()) + " labels for " + std::to_string(n) + " samples");
  }
  LossValue out;
  out.grad = Tensor::Uninitialized(logits.dtype(), logits.dims());
  std::vector<double> p(static_cast<size_t>(c));
  double total = 0;
  for (int64_t r = 0; r < n; ++r) {
    const int64_t y = labels[static_cast<size_t>(r)];
    if (y < 0 || y >= c) {
      ThrowInvalid("label " + std::to_string(y) + " of sample " + std::to_string(r) + " is outside [0, " +
                   std::to_string(c) + ")");
    }
    SoftmaxRow(logits, r, c, 1.0, p);
    total -= std::log(std::max(p[static_cast<size_t>(y)], 1e-300));
    for (int64_t j = 0; j < c; ++j) {
      Set(out.grad, r * c + j, (p[static_cast<size_t>(j)] - (j == y ? 1.0 : 0.0)) / static_cast<double>(n));
    }
  }
  out.loss = total / static_cast<double>(n);
  return out;
}

LossValue MseLoss(const Tensor& student, const Tensor& teacher) {
  if (student.dims() != teacher.dims()) {
    ThrowInvalid("feature loss: student value " + ShapeToString(student.dims()) + " and teacher value " +
                 ShapeToString(teacher.dims()) + " differ in shape");
  }
  CheckReal(student, "student value");
  LossValue out;
  out.grad = Tensor::Uninitialized(student.dtype(), student.dims());
  const int64_t n = std::max<int64_t>(student.numel(), 1);
  double total = 0;
  for (int64_t i = 0; i < student.numel(); ++i) {
    const double d = At(student, i) - At(teacher, i);
    total += d * d;
    Set(out.grad, i, 2.0 * d / static_cast<double>(n));
  }
  out.loss = total / static_cast<double>(n);
  return out;
}

}  // namespace compress::train
