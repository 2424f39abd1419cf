#include "compress/train/optimizer.h"

#include <cmath>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
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
    // Four running sums (a fixed order), so that the additions do not wait on each other.
    double acc[4] = {0, 0, 0, 0};
    const int64_t count = grads[p].numel();
    const float* gf = grads[p].dtype() == DType::kFloat ? grads[p].data<float>() : nullptr;
    for (int64_t e = 0; e < count; ++e) {
      const double g = gf != nullptr ? static_cast<double>(gf[e]) : Get(grads[p], e);
      acc[e & 3] += mask != nullptr && mask[e] == 0 ? 0.0 : g * g;
    }
    norm2 += (acc[0] + acc[1]) + (acc[2] + acc[3]);
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
    // One pass per element; the kind and the precision are chosen outside the loop. AdamW as PyTorch writes
    // it: x -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps), one division and one square root per element.
    const bool sgd = o_.kind == "sgd";
    const double wd_keep = decay ? 1.0 - lr * o_.weight_decay : 1.0;
    const double b1 = o_.beta1, b2 = o_.beta2, eps = o_.eps, mom = o_.momentum, wdk = o_.weight_decay;
    const double step_size = lr / bc1, inv_sqrt_bc2 = 1.0 / std::sqrt(bc2);
    const int64_t count = w.numel();
    double* __restrict pm = m.data();
    double* __restrict pv = sgd ? nullptr : v_[p].data();
    auto update = [&](auto* __restrict wp, const auto* __restrict gp) {
      using W = std::remove_reference_t<decltype(wp[0])>;
      if (sgd) {
        for (int64_t e = 0; e < count; ++e) {
          if (mask != nullptr && mask[e] == 0) continue;
          const double g = static_cast<double>(gp[e]) * scale;
          const double x = static_cast<double>(wp[e]);
          pm[e] = mom * pm[e] + (decay ? g + wdk * x : g);
          wp[e] = static_cast<W>(x - lr * pm[e]);
        }
        return;
      }
      // A masked element's moments move but its weight does not (masks never unmask).
      int64_t e = 0;
#if defined(__SSE2__)
      if constexpr (std::is_same_v<W, float> && std::is_same_v<std::remove_cv_t<std::remove_reference_t<decltype(gp[0])>>, float>) {
        // Two elements at a time in double: the same operations in the same order as the scalar loop
        // (std::sqrt there is the correctly rounded square root, as _mm_sqrt_pd).
        const __m128d vb1 = _mm_set1_pd(b1), vb1c = _mm_set1_pd(1 - b1), vb2 = _mm_set1_pd(b2),
                      vb2c = _mm_set1_pd(1 - b2), vscale = _mm_set1_pd(scale), vkeep = _mm_set1_pd(wd_keep),
                      vstep = _mm_set1_pd(step_size), vinv = _mm_set1_pd(inv_sqrt_bc2), veps = _mm_set1_pd(eps);
        for (; e + 2 <= count; e += 2) {
          const __m128d g = _mm_mul_pd(_mm_cvtps_pd(_mm_setr_ps(gp[e], gp[e + 1], 0.0f, 0.0f)), vscale);
          const __m128d x = _mm_cvtps_pd(_mm_setr_ps(wp[e], wp[e + 1], 0.0f, 0.0f));
          const __m128d mk = _mm_add_pd(_mm_mul_pd(vb1, _mm_loadu_pd(pm + e)), _mm_mul_pd(vb1c, g));
          const __m128d vk = _mm_add_pd(_mm_mul_pd(vb2, _mm_loadu_pd(pv + e)), _mm_mul_pd(_mm_mul_pd(vb2c, g), g));
          _mm_storeu_pd(pm + e, mk);
          _mm_storeu_pd(pv + e, vk);
          const __m128d den = _mm_add_pd(_mm_mul_pd(_mm_sqrt_pd(vk), vinv), veps);
          const __m128d upd = _mm_sub_pd(_mm_mul_pd(x, vkeep), _mm_div_pd(_mm_mul_pd(vstep, mk), den));
          alignas(16) float out[4];
          _mm_store_ps(out, _mm_cvtpd_ps(upd));
          if (mask == nullptr || mask[e] != 0) wp[e] = out[0];
          if (mask == nullptr || mask[e + 1] != 0) wp[e + 1] = out[1];
        }
      }
#endif
      for (; e < count; ++e) {
        const double g = static_cast<double>(gp[e]) * scale;
        const double x = static_cast<double>(wp[e]);
        const double mk = b1 * pm[e] + (1 - b1) * g;
        const double vk = b2 * pv[e] + (1 - b2) * g * g;
        pm[e] = mk;
        pv[e] = vk;
        const double updated = x * wd_keep - step_size * mk / (std::sqrt(vk) * inv_sqrt_bc2 + eps);
        wp[e] = mask != nullptr && mask[e] == 0 ? wp[e] : static_cast<W>(updated);
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
