#include "compress/train/optimizer.h"

#include <cmath>
#include <type_traits>

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
    // One pass per element; the kind and the precision are chosen outside the loop.
    const bool sgd = o_.kind == "sgd";
    const double wd_factor = decay ? lr * o_.weight_decay : 0.0;
    const double b1 = o_.beta1, b2 = o_.beta2, eps = o_.eps, mom = o_.momentum, wdk = o_.weight_decay;
    double* pm = m.data();
    double* pv = sgd ? nullptr : v_[p].data();
    auto update = [&](auto* wp, const auto* gp) {
      for (int64_t e = 0; e < w.numel(); ++e) {
        if (mask != nullptr && mask[e] == 0) continue;
        const double g = static_cast<double>(gp[e]) * scale;
        double x = static_cast<double>(wp[e]);
        if (sgd) {
          const double gd = decay ? g + wdk * x : g;
          pm[e] = mom * pm[e] + gd;
          x -= lr * pm[e];
        } else {
          pm[e] = b1 * pm[e] + (1 - b1) * g;
          pv[e] = b2 * pv[e] + (1 - b2) * g * g;
          if (decay) x -= wd_factor * x;
          x -= lr * (pm[e] / bc1) / (std::sqrt(pv[e] / bc2) + eps);
        }
        wp[e] = static_cast<std::remove_reference_t<decltype(wp[e])>>(x);
      }
    };
    if (wf != nullptr && gf != nullptr) {
      update(wf, gf);
    } else if (wf != nullptr) {
      update(wf, gdp);
    } else if (gf != nullptr) {
      update(wd, gf);
    } else {
      update(wd, gdp);
    }
  }
  return norm;
}

}  // namespace compress::train
