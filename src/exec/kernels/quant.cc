// QuantizeLinear, DequantizeLinear and DynamicQuantizeLinear (integer formats; float8 and 4-bit are not
// supported). Rounding is to nearest with ties to even, as ONNX specifies, in the default FP environment.

#include <algorithm>
#include <cmath>
#include <limits>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "common.h"
#include "kernels.h"

namespace compress::kernels {
namespace {

// Calls fn(Q{}) for the integer types quantized tensors may have.
template <typename Fn>
void DispatchQuantized(const KernelContext& ctx, DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kUInt8:
      fn(uint8_t{});
      break;
    case DType::kInt8:
      fn(int8_t{});
      break;
    case DType::kUInt16:
      fn(uint16_t{});
      break;
    case DType::kInt16:
      fn(int16_t{});
      break;
    default:
      ctx.Fail(std::string("quantized element type ") + DTypeName(dtype) + " is not supported");
  }
}

// A rounded value plus zero point, saturated to Q. NaN maps to the lowest value, as a float-to-integer
// conversion followed by clamping does on x86.
template <typename Q>
Q Saturate(float v) {
  constexpr float lo = static_cast<float>(std::numeric_limits<Q>::lowest());
  constexpr float hi = static_cast<float>(std::numeric_limits<Q>::max());
  if (!(v > lo)) return std::numeric_limits<Q>::lowest();
  if (!(v < hi)) return std::numeric_limits<Q>::max();
  return static_cast<Q>(v);
}

#if defined(__x86_64__) || defined(__i386__)
// QuantizeLinear / DequantizeLinear of float32 runs to and from 8 bits, eight at a time with AVX2: the same
// IEEE operations as the scalar loops (division, round to nearest even, add, saturate; subtract, convert,
// multiply), so the same bytes and floats.
bool HasAvx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2");
}

template <typename Q>
__attribute__((target("avx2"))) int64_t QuantizeAvx2(const float* in, Q* out, int64_t n, float s, float zp) {
  constexpr float lo = static_cast<float>(std::numeric_limits<Q>::lowest());
  constexpr float hi = static_cast<float>(std::numeric_limits<Q>::max());
  const __m256 sv = _mm256_set1_ps(s), zv = _mm256_set1_ps(zp), lov = _mm256_set1_ps(lo), hiv = _mm256_set1_ps(hi);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_add_ps(
        _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(in + i), sv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), zv);
    // !(v > lo) -> lo (NaN included); !(v < hi) -> hi.
    __m256 c = _mm256_blendv_ps(lov, v, _mm256_cmp_ps(v, lov, _CMP_GT_OQ));
    c = _mm256_blendv_ps(hiv, c, _mm256_cmp_ps(c, hiv, _CMP_LT_OQ));
    const __m256i q = _mm256_cvttps_epi32(c);
    alignas(32) int32_t tmp[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(tmp), q);
    for (int k = 0; k < 8; ++k) out[i + k] = static_cast<Q>(tmp[k]);
  }
  return i;
}

template <typename Q>
__attribute__((target("avx2"))) int64_t DequantizeAvx2(const Q* in, float* out, int64_t n, int32_t z, float s) {
  const __m256 sv = _mm256_set1_ps(s);
  const __m256i zv = _mm256_set1_epi32(z);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(in + i));
    const __m256i w = std::is_signed_v<Q> ? _mm256_cvtepi8_epi32(b) : _mm256_cvtepu8_epi32(b);
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(w, zv)), sv));
  }
  return i;
}
#endif

// Layout of a per-tensor or per-axis quantization: element i uses parameter (i / inner) % channels.
struct QuantLayout {
  int64_t outer = 1, channels = 1, inner = 1;
};

QuantLayout ResolveLayout(const KernelContext& ctx, const Tensor& x, const Tensor& scale,
                          const Tensor* zero_point, int64_t axis_attr, bool per_axis_allowed) {
  QuantLayout l;
  if (zero_point != nullptr && zero_point->numel() != scale.numel()) {
    ctx.Fail("zero point shape " + ShapeToString(zero_point->dims()) + " differs from scale shape " +
             ShapeToString(scale.dims()));
  }
  if (scale.numel() == 1 && scale.rank() <= 1) {
    l.inner = x.numel();
    return l;
  }
  if (!per_axis_allowed || scale.rank() != 1) {
    ctx.Fail("scale of shape " + ShapeToString(scale.dims()) + " must be a scalar" +
             (per_axis_allowed ? " or a 1-D tensor" : ""));
  }
  const size_t axis = static_cast<size_t>(NormalizeAxis(ctx, axis_attr, x.rank()));
  if (scale.numel() != x.dims()[axis]) {
    ctx.Fail("scale has " + std::to_string(scale.numel()) + " values for axis " + std::to_string(axis) +
             " of size " + std::to_string(x.dims()[axis]));
  }
  l.channels = x.dims()[axis];
  for (size_t d = 0; d < axis; ++d) l.outer *= x.dims()[d];
  for (size_t d = axis + 1; d < x.dims().size(); ++d) l.inner *= x.dims()[d];
  return l;
}

// Runs fn(begin, end, channel) over the contiguous runs of elements that share the parameters of a channel.
template <typename Fn>
void ForEachChannelRun(ThreadPool& pool, const QuantLayout& l, Fn&& fn) {
  const int64_t runs = l.outer * l.channels;
  const int64_t grain = std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, l.inner));
  if (runs == 1) {
    pool.ParallelFor(l.inner, kElementwiseGrain,
                     [&](int64_t begin, int64_t end) { fn(begin, end, int64_t{0}); });
    return;
  }
  pool.ParallelFor(runs, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) fn(r * l.inner, (r + 1) * l.inner, r % l.channels);
  });
}

void RunQuantize(KernelContext& ctx, int64_t axis, bool per_axis_allowed, DType output_dtype) {
  const Tensor& x = ctx.required_input(0);
  const Tensor& scale_t = ctx.required_input(1);
  const Tensor* zp_t = ctx.input(2);
  const DType q_type = zp_t != nullptr ? zp_t->dtype() : output_dtype;
  const QuantLayout l = ResolveLayout(ctx, x, scale_t, zp_t, axis, per_axis_allowed);
  const std::vector<float> scales = ToFloats(ctx, scale_t);
  if (x.dtype() != DType::kFloat && x.dtype() != DType::kInt32) {
    ctx.Fail(std::string("input element type ") + DTypeName(x.dtype()) + " is not supported");
  }
  DispatchQuantized(ctx, q_type, [&](auto tag) {
    using Q = decltype(tag);
    std::vector<float> zps(scales.size(), 0.0f);
    if (zp_t != nullptr) std::copy_n(zp_t->data<Q>(), zps.size(), zps.begin());
    Q* out = ctx.OutputForWrite(0, q_type, x.dims()).mutable_data<Q>();
    auto quantize = [&](const auto* in) {
      ForEachChannelRun(ctx.pool(), l, [&](int64_t begin, int64_t end, int64_t c) {
        const float s = scales[static_cast<size_t>(c)], zp = zps[static_cast<size_t>(c)];
        int64_t i = begin;
#if defined(__x86_64__) || defined(__i386__)
        if constexpr (sizeof(Q) == 1 && std::is_same_v<std::decay_t<decltype(*in)>, float>) {
          static const bool avx2 = HasAvx2();
          if (avx2) i += QuantizeAvx2<Q>(in + begin, out + begin, end - begin, s, zp);
        }
#endif
        for (; i < end; ++i) {
          out[i] = Saturate<Q>(std::nearbyint(static_cast<float>(in[i]) / s) + zp);
        }
      });
    };
    if (x.dtype() == DType::kFloat) {
      quantize(x.data<float>());
    } else {
      quantize(x.data<int32_t>());
    }
  });
}

void RunDequantize(KernelContext& ctx, int64_t axis, bool per_axis_allowed) {
  const Tensor& x = ctx.required_input(0);
  const Tensor& scale_t = ctx.required_input(1);
  const Tensor* zp_t = ctx.input(2);
  if (zp_t != nullptr && zp_t->dtype() != x.dtype()) {
    ctx.Fail(std::string("zero point type ") + DTypeName(zp_t->dtype()) + " differs from input type " +
             DTypeName(x.dtype()));
  }
  const QuantLayout l = ResolveLayout(ctx, x, scale_t, zp_t, axis, per_axis_allowed);
  const std::vector<float> scales = ToFloats(ctx, scale_t);
  float* out = ctx.OutputForWrite(0, DType::kFloat, x.dims()).mutable_data<float>();
  auto dequantize = [&](const auto* in, const auto* zp) {
    ForEachChannelRun(ctx.pool(), l, [&](int64_t begin, int64_t end, int64_t c) {
      const float s = scales[static_cast<size_t>(c)];
      const int64_t z = zp != nullptr ? static_cast<int64_t>(zp[c]) : 0;
      int64_t i = begin;
#if defined(__x86_64__) || defined(__i386__)
      using In = std::decay_t<decltype(*in)>;
      if constexpr (sizeof(In) == 1) {
        static const bool avx2 = HasAvx2();
        if (avx2) i += DequantizeAvx2<In>(in + begin, out + begin, end - begin, static_cast<int32_t>(z), s);
      }
#endif
      for (; i < end; ++i) out[i] = static_cast<float>(static_cast<int64_t>(in[i]) - z) * s;
    });
  };
  if (x.dtype() == DType::kInt32) {
    dequantize(x.data<int32_t>(), zp_t != nullptr ? zp_t->data<int32_t>() : nullptr);
    return;
  }
  DispatchQuantized(ctx, x.dtype(), [&](auto tag) {
    using Q = decltype(tag);
    dequantize(x.data<Q>(), zp_t != nullptr ? zp_t->data<Q>() : nullptr);
  });
}

void AddQuantizeLinear(KernelRegistry& r) {
  AddKernel(r, "QuantizeLinear", 10, 1000, [](const KernelInfo& info) {
    const Node& n = *info.node;
    if (n.AttrInt("block_size", 0) != 0) {
      ThrowInvalid("node " + n.Describe() + ": blocked quantization is not supported");
    }
    const int64_t axis = n.AttrInt("axis", 1);
    const bool per_axis = info.opset >= 13;
    // Without a zero point the output type is uint8, or output_dtype from opset 21.
    const int64_t output_dtype = info.opset >= 21 ? n.AttrInt("output_dtype", 0) : 0;
    const DType q_type = output_dtype != 0 ? static_cast<DType>(output_dtype) : DType::kUInt8;
    return MakeKernel(
        [axis, per_axis, q_type](KernelContext& ctx) { RunQuantize(ctx, axis, per_axis, q_type); });
  });
}

void AddDequantizeLinear(KernelRegistry& r) {
  AddKernel(r, "DequantizeLinear", 10, 1000, [](const KernelInfo& info) {
    const Node& n = *info.node;
    if (n.AttrInt("block_size", 0) != 0) {
      ThrowInvalid("node " + n.Describe() + ": blocked quantization is not supported");
    }
    const int64_t axis = n.AttrInt("axis", 1);
    const bool per_axis = info.opset >= 13;
    return MakeKernel([axis, per_axis](KernelContext& ctx) { RunDequantize(ctx, axis, per_axis); });
  });
}

// y_scale = (max(0, max(x)) - min(0, min(x))) / 255, y_zero_point = saturate(round(-min / y_scale)),
// y = saturate(round(x / y_scale) + y_zero_point).
void RunDynamicQuantize(KernelContext& ctx) {
  const Tensor& x = ctx.required_input(0);
  if (x.dtype() != DType::kFloat) {
    ctx.Fail(std::string("input element type ") + DTypeName(x.dtype()) + " is not supported");
  }
  const float* in = x.data<float>();
  const int64_t n = x.numel();
  // Per-chunk extremes combined in chunk order: min and max are exact, so the result is thread-independent.
  const int64_t chunks = (n + kElementwiseGrain - 1) / kElementwiseGrain;
  std::vector<float> lows(static_cast<size_t>(chunks)), highs(static_cast<size_t>(chunks));
  ctx.pool().ParallelFor(n, kElementwiseGrain, [&](int64_t begin, int64_t end) {
    float lo = 0.0f, hi = 0.0f;
    for (int64_t i = begin; i < end; ++i) {
      lo = std::min(lo, in[i]);
      hi = std::max(hi, in[i]);
    }
    lows[static_cast<size_t>(begin / kElementwiseGrain)] = lo;
    highs[static_cast<size_t>(begin / kElementwiseGrain)] = hi;
  });
  float lo = 0.0f, hi = 0.0f;
  for (size_t c = 0; c < lows.size(); ++c) {
    lo = std::min(lo, lows[c]);
    hi = std::max(hi, highs[c]);
  }
  const float scale = (hi - lo) / 255.0f;
  // An all-zero input has scale 0; every value then quantizes to the zero point 0.
  const float zp = scale == 0.0f ? 0.0f : std::clamp(std::nearbyint(0.0f - lo / scale), 0.0f, 255.0f);
  uint8_t* out = ctx.Output(0, DType::kUInt8, x.dims()).mutable_data<uint8_t>();
  if (scale != 0.0f) {
    ctx.pool().ParallelFor(n, kElementwiseGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) out[i] = Saturate<uint8_t>(std::nearbyint(in[i] / scale) + zp);
    });
  }
  ctx.Output(1, DType::kFloat, {}).mutable_data<float>()[0] = scale;
  ctx.Output(2, DType::kUInt8, {}).mutable_data<uint8_t>()[0] = static_cast<uint8_t>(zp);
}

}  // namespace

void RegisterQuantKernels(KernelRegistry& r) {
  AddQuantizeLinear(r);
  AddDequantizeLinear(r);
  AddKernel(r, "DynamicQuantizeLinear", 11, 1000, [](const KernelInfo&) {
    return MakeKernel([](KernelContext& ctx) { RunDynamicQuantize(ctx); });
  });
}

}  // namespace compress::kernels
