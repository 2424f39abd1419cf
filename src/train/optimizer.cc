#include "compress/train/optimizer.h"

#include <cmath>

#include "compress/util/error.h"

namespace compress::train {
namespace {

double Get(const Tensor& t, int64_t i) {
  return t.dtype() == DType::kDouble ? t.data<double>()[i] : static_cast<double>(t.data<float>()[i]);
}

}  // namespace

double ScheduledLearningRate(const OptimizerOptions& o, int64_t step) {
  if (o.warmup_steps > 0 && step < o.warmup_steps) {
    return o.lr * static_cast<double>(step + 1) / static_cast<double>(o.warmup_steps);
  }
  if (o.total_steps <= o.warmup_steps) return o.lr;
  const double t = static_cast<double>(step - o.warmup_steps) / static_cast<double>(o.total_steps - o.warmup_steps);
  return o.lr * 0.5 * (1.0 + std::cos(M_PI * std::min(1.0, t)));
}

Optimizer::Optimizer(OptimizerOptions options, std::vector<bool> decay, std::vector<double> lr_factor)
    : o_(std::move(options)), decay_(std::move(decay)), lr_factor_(std::move(lr_factor)) {
  if (o_.kind != "adamw" && o_.kind != "sgd") ThrowUsage("optimizer must be adamw or sgd, not '" + o_.kind + "'");
  if (!(o_.lr > 0)) ThrowUsage("learning rate must be positive");
}

double Optimizer::Step(std::vector<Tensor>& params, const std::vector<Tensor>& grads, const std::vector<Tensor>& masks) {
  if (grads.size() != params.size()) ThrowInternal("Optimizer::Step: parameter and gradient counts differ");
  if (m_.empty()) {
    m_.resize(params.size());
    v_.resize(params.size());
    for (size_t i = 0; i < params.size(); ++i) {
      m_[i].assign(static_cast<size_t>(params[i].numel()), 0.0);
      if (o_.kind == "adamw") v_[i].assign(static_cast<size_t>(params[i].numel()), 0.0);
    }
  }
  double norm2 = 0;
  for (size_t p = 0; p < params.size(); ++p) {
    const uint8_t* mask = p < masks.size() && masks[p].dtype() == DType::kUInt8 ? masks[p].data<uint8_t>() : nullptr;
    for (int64_t e = 0; e < grads[p].numel(); ++e) {
      if (mask != nullptr && mask[e] == 0) continue;
      const double g = Get(grads[p], e);
      norm2 += g * g;
    }
  }
  const double norm = std::sqrt(norm2);
  const double scale = o_.clip_norm > 0 && norm > o_.clip_norm ? o_.clip_norm / norm : 1.0;
  const double base_lr = ScheduledLearningRate(o_, step_);
  last_lr_ = base_lr;
  ++step_;
  const double bc1 = 1.0 - std::pow(o_.beta1, static_cast<double>(step_));
  const double bc2 = 1.0 - std::pow(o_.beta2, static_cast<double>(step_));
  for (size_t p = 0; p < params.size(); ++p) {
    Tensor& w = params[p];
    const double lr = base_lr * (p < lr_factor_.size() ? lr_factor_[p] : 1.0);
    const bool decay = p < decay_.size() && decay_[p] && o_.weight_decay > 0;
    auto& m = m_[p];
    const uint8_t* mask = p < masks.size() && masks[p].dtype() == DType::kUInt8 ? masks[p].data<uint8_t>() : nullptr;
    float* wf = w.dtype() == DType::kFloat ? w.mutable_data<float>() : nullptr;
    double* wd = w.dtype() == DType::kDouble ? w.mutable_data<double>() : nullptr;
    const float* gf = grads[p].dtype() == DType::kFloat ? grads[p].data<float>() : nullptr;
    const double* gdp = grads[p].dtype() == DType::kDouble ? grads[p].data<double>() : nullptr;
    if ((wf == nullptr && wd == nullptr) || (gf == nullptr && gdp == nullptr) || grads[p].numel() != w.numel()) {
      ThrowInternal("Optimizer::Step: parameter " + std::to_string(p) + " is not a float tensor of its gradient's size");
    }
    for (int64_t e = 0; e < w.numel(); ++e) {
      if (mask != nullptr && mask[e] == 0) continue;
      const double g = (gf != nullptr ? static_cast<double>(gf[e]) : gdp[e]) * scale;
      double x = wf != nullptr ? static_cast<double>(wf[e]) : wd[e];
      const size_t k = static_cast<size_t>(e);
      if (o_.kind == "sgd") {
        const double gd = decay ? g + o_.weight_decay * x : g;
        m[k] = o_.momentum * m[k] + gd;
        x -= lr * m[k];
      } else {
        auto& v = v_[p];
        m[k] = o_.beta1 * m[k] + (1 - o_.beta1) * g;
        v[k] = o_.beta2 * v[k] + (1 - o_.beta2) * g * g;
        if (decay) x -= lr * o_.weight_decay * x;
        x -= lr * (m[k] / bc1) / (std::sqrt(v[k] / bc2) + o_.eps);
      }
      if (wf != nullptr) {
        wf[e] = static_cast<float>(x);
      } else {
        wd[e] = x;
      }
    }
  }
  return norm;
}

}  // namespace compress::train
