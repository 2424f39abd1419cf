#include "quant_util.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "compress/util/error.h"

namespace compress::passes {

namespace {

// The smallest scale used: below it a range is treated as degenerate. Keeps 1/scale finite in float32.
constexpr float kMinScale = 1e-12f;

float SafeScale(double s) {
  if (!std::isfinite(s) || s < kMinScale) return s > 0 && std::isfinite(s) ? kMinScale : 1.0f;
  return static_cast<float>(s);
}

}  // namespace

QuantParams ActivationParams(const QuantRange& range, DType type) {
  const double lo = std::min(0.0, static_cast<double>(range.lo));
  const double hi = std::max(0.0, static_cast<double>(range.hi));
  QuantParams p;
  if (type == DType::kUInt8) {
    p.scale = SafeScale((hi - lo) / 255.0);
    const double zp = std::round(-lo / static_cast<double>(p.scale));
    p.zero_point = static_cast<int32_t>(std::clamp(zp, 0.0, 255.0));
  } else if (type == DType::kInt8) {
    p.scale = SafeScale(std::max(-lo, hi) / 127.0);
    p.zero_point = 0;
  } else {
    ThrowInternal(std::string("activation quantization to ") + DTypeName(type) + " is not supported");
  }
  return p;
}

QuantizedWeight QuantizeWeightSymmetric(const Tensor& weight, int64_t axis, int qmax) {
  if (qmax < 1 || qmax > 127) {
    ThrowInternal("weight quantization: qmax " + std::to_string(qmax) + " is out of range");
  }
  if (weight.dtype() != DType::kFloat) {
    ThrowInternal("weight '" + weight.name() + "' is " + DTypeName(weight.dtype()) + ", expected float32");
  }
  QuantizedWeight q;
  q.axis = axis;
  const auto& dims = weight.dims();
  int64_t channels = 1, inner = weight.numel(), outer = 1;
  if (axis >= 0) {
    if (axis >= weight.rank()) ThrowInternal("weight '" + weight.name() + "': quantization axis out of range");
    channels = dims[static_cast<size_t>(axis)];
    inner = 1;
    for (size_t d = static_cast<size_t>(axis) + 1; d < dims.size(); ++d) inner *= dims[d];
    outer = channels > 0 ? weight.numel() / (channels * std::max<int64_t>(inner, 1)) : 0;
  }
  const float* w = weight.data<float>();
  std::vector<double> absmax(static_cast<size_t>(channels), 0.0);
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t c = 0; c < channels; ++c) {
      const float* p = w + (o * channels + c) * inner;
      for (int64_t i = 0; i < inner; ++i) {
        if (std::isfinite(p[i])) absmax[static_cast<size_t>(c)] = std::max(absmax[static_cast<size_t>(c)], std::fabs(double{p[i]}));
      }
    }
  }
  q.scales.resize(static_cast<size_t>(channels));
  for (int64_t c = 0; c < channels; ++c) {
    const double m = absmax[static_cast<size_t>(c)];
    q.scales[static_cast<size_t>(c)] = m > 0 ? SafeScale(m / qmax) : 1.0f;
  }
  q.values = Tensor(DType::kInt8, dims, weight.name() + "_quantized");
  int8_t* out = q.values.mutable_data<int8_t>();
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t c = 0; c < channels; ++c) {
      const double s = q.scales[static_cast<size_t>(c)];
      const int64_t base = (o * channels + c) * inner;
      for (int64_t i = 0; i < inner; ++i) {
        const double v = std::isfinite(w[base + i]) ? std::round(double{w[base + i]} / s) : 0.0;
        const double limit = qmax;
        out[base + i] = static_cast<int8_t>(std::clamp(v, -limit, limit));
      }
    }
  }
  return q;
}

Tensor QuantizeBias(const Tensor& bias, float input_scale, const std::vector<float>& weight_scales) {
  if (bias.dtype() != DType::kFloat || bias.rank() != 1) {
    ThrowInternal("bias '" + bias.name() + "' must be a 1-D float32 tensor");
  }
  const int64_t n = bias.numel();
  if (weight_scales.size() != 1 && static_cast<int64_t>(weight_scales.size()) != n) {
    ThrowInternal("bias '" + bias.name() + "': " + std::to_string(n) + " values but " +
                  std::to_string(weight_scales.size()) + " weight scales");
  }
  Tensor q(DType::kInt32, {n}, bias.name() + "_quantized");
  const float* b = bias.data<float>();
  int32_t* out = q.mutable_data<int32_t>();
  for (int64_t i = 0; i < n; ++i) {
    const double s = double{input_scale} * double{weight_scales[weight_scales.size() == 1 ? 0 : static_cast<size_t>(i)]};
    const double v = std::isfinite(b[i]) && s > 0 ? std::round(double{b[i]} / s) : 0.0;
    out[i] = static_cast<int32_t>(std::clamp(v, static_cast<double>(std::numeric_limits<int32_t>::min()),
                                             static_cast<double>(std::numeric_limits<int32_t>::max())));
  }
  return q;
}

Tensor ScaleTensor(const std::vector<float>& scales, const std::string& name) {
  if (scales.size() == 1) return Tensor::FromVector<float>({}, scales, name);
  return Tensor::FromVector<float>({static_cast<int64_t>(scales.size())}, scales, name);
}

Tensor WeightZeroPoint(size_t channels) {
  const std::vector<int8_t> zeros(channels, 0);
  if (channels == 1) return Tensor::FromVector<int8_t>({}, zeros);
  return Tensor::FromVector<int8_t>({static_cast<int64_t>(channels)}, zeros);
}

}  // namespace compress::passes
