// Softmax and LogSoftmax, BatchNormalization, LayerNormalization, InstanceNormalization.
//
// Reference kernels accumulate sums in double. Fast kernels (float32, contiguous rows) use vecmath for
// Softmax and LayerNormalization (a vectorised exp, float sums) and Eigen for BatchNormalization; they agree
// with the reference to float rounding.

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "common.h"
#include "kernels.h"
#include "vecmath.h"

namespace compress::kernels {
namespace {

using FloatArray = Eigen::Array<float, Eigen::Dynamic, 1>;
using FloatMap = Eigen::Map<FloatArray>;
using ConstFloatMap = Eigen::Map<const FloatArray>;

// Rows per parallel chunk when each row holds `len` elements.
int64_t RowGrain(int64_t len) { return std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, len)); }

// -----------------------------------------------------------------------------------------------------------
// Softmax / LogSoftmax over rows: before opset 13 the input is coerced to 2-D at `axis` (default 1) and a row
// is everything from `axis` on; since 13 a row runs along `axis` (default -1).

struct SoftmaxRows {
  int64_t outer = 1, len = 1, inner = 1;  // rows = outer * inner, elements of a row `inner` apart
};

SoftmaxRows SoftmaxLayout(const KernelContext& ctx, const std::vector<int64_t>& dims, int64_t axis_attr,
                          bool coerce_2d) {
  const size_t axis = static_cast<size_t>(NormalizeAxis(ctx, axis_attr, static_cast<int64_t>(dims.size())));
  SoftmaxRows r;
  for (size_t d = 0; d < dims.size(); ++d) {
    if (d < axis) {
      r.outer *= dims[d];
    } else if (d == axis || coerce_2d) {
      r.len *= dims[d];
    } else {
      r.inner *= dims[d];
    }
  }
  return r;
}

template <typename T>
void SoftmaxRowReference(const T* x, T* y, int64_t len, int64_t stride, bool log) {
  T max = x[0];
  for (int64_t j = 1; j < len; ++j) max = std::max(max, x[j * stride]);
  double sum = 0;
  for (int64_t j = 0; j < len; ++j) sum += std::exp(static_cast<double>(x[j * stride] - max));
  if (log) {
    const double log_sum = std::log(sum);
    for (int64_t j = 0; j < len; ++j) {
      y[j * stride] = static_cast<T>(static_cast<double>(x[j * stride] - max) - log_sum);
    }
  } else {
    for (int64_t j = 0; j < len; ++j) {
      y[j * stride] = static_cast<T>(std::exp(static_cast<double>(x[j * stride] - max)) / sum);
    }
  }
}

KernelFactory SoftmaxKernel(bool log, bool coerce_2d, bool fast) {
  return [log, coerce_2d, fast](const KernelInfo& info) {
    const int64_t axis = info.node->AttrInt("axis", coerce_2d ? 1 : -1);
    return MakeKernel([log, coerce_2d, fast, axis](KernelContext& ctx) {
      const Tensor& x = ctx.required_input(0);
      const SoftmaxRows r = SoftmaxLayout(ctx, x.dims(), axis, coerce_2d);
      DispatchFloating(ctx, x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        const T* px = x.data<T>();
        T* py = ctx.OutputForWrite(0, x.dtype(), x.dims()).template mutable_data<T>();
        if (r.len == 0) return;
        ctx.pool().ParallelFor(r.outer * r.inner, RowGrain(r.len), [&](int64_t begin, int64_t end) {
          if constexpr (std::is_same_v<T, float>) {
            if (fast && r.inner == 1) {
              // Rows whose max is not finite become NaN, as the reference's double arithmetic makes them.
              vecmath::SoftmaxRows(px + begin * r.len, py + begin * r.len, end - begin, r.len, log);
              return;
            }
          }
          for (int64_t row = begin; row < end; ++row) {
            const int64_t start = (row / r.inner) * r.len * r.inner + row % r.inner;
            SoftmaxRowReference(px + start, py + start, r.len, r.inner, log);
          }
        });
      });
    });
  };
}

// -----------------------------------------------------------------------------------------------------------
// BatchNormalization on [N, C, D1, ...]. Inference uses the given mean and variance; with training_mode=1
// (opset 14 on) it normalises with the batch statistics and outputs the updated running mean and variance.
// Before opset 9, spatial=0 gives per-activation parameters of shape [C, D1, ...].

struct BatchNormAttrs {
  float epsilon = 1e-5f;
  float momentum = 0.9f;
  bool training = false;
  bool per_activation = false;
};

template <typename T>
void BatchNormRun(KernelContext& ctx, const BatchNormAttrs& a, bool fast) {
  const Tensor& x = ctx.required_input(0);
  if (x.rank() < 2) ctx.Fail("input must have shape [N, C, ...], got " + ShapeToString(x.dims()));
  const int64_t batch = x.dims()[0], channels = x.dims()[1];
  const int64_t spatial = x.numel() / std::max<int64_t>(1, batch * channels);
  const int64_t params = a.per_activation ? channels * spatial : channels;
  const char* names[] = {"", "scale", "B", "input_mean", "input_var"};
  const T* p[5] = {};
  for (size_t i = 1; i < 5; ++i) {
    const Tensor& t = ctx.required_input(i);
    if (t.dtype() != x.dtype() || t.numel() != params) {
      ctx.Fail(std::string(names[i]) + " must hold " + std::to_string(params) + " " + DTypeName(x.dtype()) +
               " values, got " + DTypeName(t.dtype()) + ShapeToString(t.dims()));
    }
    p[i] = t.data<T>();
  }
  const T* px = x.data<T>();
  T* py = ctx.Output(0, x.dtype(), x.dims()).template mutable_data<T>();
  const T* mean = p[3];
  const T* var = p[4];
  std::vector<T> batch_mean, batch_var;
  if (a.training) {
    // Population statistics per channel over N and the spatial dims.
    batch_mean.assign(static_cast<size_t>(channels), T{0});
    batch_var.assign(static_cast<size_t>(channels), T{0});
    const double count = static_cast<double>(batch * spatial);
    for (int64_t c = 0; c < channels; ++c) {
      double sum = 0, sq = 0;
      for (int64_t b = 0; b < batch; ++b) {
        const T* plane = px + (b * channels + c) * spatial;
        for (int64_t s = 0; s < spatial; ++s) sum += static_cast<double>(plane[s]);
      }
      const double m = sum / count;
      for (int64_t b = 0; b < batch; ++b) {
        const T* plane = px + (b * channels + c) * spatial;
        for (int64_t s = 0; s < spatial; ++s) sq += (static_cast<double>(plane[s]) - m) * (plane[s] - m);
      }
      batch_mean[static_cast<size_t>(c)] = static_cast<T>(m);
      batch_var[static_cast<size_t>(c)] = static_cast<T>(sq / count);
    }
    const T keep = static_cast<T>(a.momentum), take = static_cast<T>(1 - a.momentum);
    for (size_t k = 1; k <= 2 && k < ctx.num_outputs(); ++k) {
      const T* running = k == 1 ? mean : var;
      const std::vector<T>& current = k == 1 ? batch_mean : batch_var;
      T* out = ctx.Output(k, x.dtype(), {channels}).template mutable_data<T>();
      for (int64_t c = 0; c < channels; ++c) {
        out[c] = running[c] * keep + current[static_cast<size_t>(c)] * take;
      }
    }
    mean = batch_mean.data();
    var = batch_var.data();
  } else {
    // Statistics outputs that older opsets list (running mean / variance, then saved mean / variance) are the
    // given ones unchanged: inference does not update them.
    for (size_t k = 1; k < ctx.num_outputs() && k <= 4; ++k) {
      ctx.SetOutput(k, ctx.required_input(k % 2 == 1 ? 3 : 4));
    }
  }
  const T* scale = p[1];
  const T* bias = p[2];
  const T eps = static_cast<T>(a.epsilon);
  ctx.pool().ParallelFor(batch * channels, RowGrain(spatial), [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      const int64_t c = plane % channels;
      const T* xp = px + plane * spatial;
      T* yp = py + plane * spatial;
      if constexpr (std::is_same_v<T, float>) {
        if (fast && !a.per_activation) {
          const float mul = scale[c] / std::sqrt(var[c] + eps);
          FloatMap(yp, spatial) = (ConstFloatMap(xp, spatial) - mean[c]) * mul + bias[c];
          continue;
        }
      }
      for (int64_t s = 0; s < spatial; ++s) {
        const int64_t k = a.per_activation ? c * spatial + s : c;
        yp[s] = scale[k] * (xp[s] - mean[k]) / std::sqrt(var[k] + eps) + bias[k];
      }
    }
  });
}

KernelFactory BatchNormKernel(bool fast) {
  return [fast](const KernelInfo& info) {
    const Node& n = *info.node;
    BatchNormAttrs a;
    a.epsilon = n.AttrFloat("epsilon", 1e-5f);
    a.momentum = n.AttrFloat("momentum", 0.9f);
    a.training = info.opset >= 14 && n.AttrInt("training_mode", 0) != 0;
    a.per_activation = info.opset < 9 && n.AttrInt("spatial", 1) == 0;
    return MakeKernel([a, fast](KernelContext& ctx) {
      DispatchFloating(ctx, ctx.required_input(0).dtype(),
                       [&](auto tag) { BatchNormRun<decltype(tag)>(ctx, a, fast); });
    });
  };
}

// -----------------------------------------------------------------------------------------------------------
// InstanceNormalization: each [n, c] plane normalised by its own mean and (population) variance.

KernelFactory InstanceNormKernel() {
  return [](const KernelInfo& info) {
    const float epsilon = info.node->AttrFloat("epsilon", 1e-5f);
    return MakeKernel([epsilon](KernelContext& ctx) {
      const Tensor& x = ctx.required_input(0);
      const Tensor& scale = ctx.required_input(1);
      const Tensor& bias = ctx.required_input(2);
      if (x.rank() < 2) ctx.Fail("input must have shape [N, C, ...], got " + ShapeToString(x.dims()));
      const int64_t channels = x.dims()[1];
      const int64_t planes = x.dims()[0] * channels;
      const int64_t spatial = x.numel() / std::max<int64_t>(1, planes);
      for (const Tensor* t : {&scale, &bias}) {
        if (t->dtype() != x.dtype() || t->numel() != channels) {
          ctx.Fail("scale and B must hold " + std::to_string(channels) + " " + DTypeName(x.dtype()) +
                   " values, got " + DTypeName(t->dtype()) + ShapeToString(t->dims()));
        }
      }
      DispatchFloating(ctx, x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        const T* px = x.data<T>();
        const T* ps = scale.data<T>();
        const T* pb = bias.data<T>();
        T* py = ctx.OutputForWrite(0, x.dtype(), x.dims()).template mutable_data<T>();
        ctx.pool().ParallelFor(planes, RowGrain(spatial), [&](int64_t begin, int64_t end) {
          for (int64_t plane = begin; plane < end; ++plane) {
            const T* xp = px + plane * spatial;
            T* yp = py + plane * spatial;
            double sum = 0, sq = 0;
            for (int64_t s = 0; s < spatial; ++s) sum += static_cast<double>(xp[s]);
            const double mean = sum / static_cast<double>(spatial);
            for (int64_t s = 0; s < spatial; ++s) sq += (xp[s] - mean) * (xp[s] - mean);
            const double inv =
                1.0 / std::sqrt(sq / static_cast<double>(spatial) + static_cast<double>(epsilon));
            const int64_t c = plane % channels;
            for (int64_t s = 0; s < spatial; ++s) {
              yp[s] = static_cast<T>((xp[s] - mean) * inv * static_cast<double>(ps[c]) +
                                     static_cast<double>(pb[c]));
            }
          }
        });
      });
    });
  };
}

// -----------------------------------------------------------------------------------------------------------
// LayerNormalization (opset 17): each row of the dims from `axis` on is normalised; Scale and the optional B
// hold one value per row element (or broadcast to the row). Optional outputs Mean and InvStdDev have the
// input's shape with the normalised dims set to 1.

// Scale / B as one value per element of a row of shape `row_dims`.
template <typename T>
std::vector<T> ExpandToRow(const KernelContext& ctx, const Tensor& t, const std::vector<int64_t>& row_dims,
                           const char* name) {
  const int64_t len = ShapeElementCount(row_dims);
  std::vector<T> v(static_cast<size_t>(len));
  const T* p = t.data<T>();
  if (t.numel() == len) {
    std::copy_n(p, len, v.begin());
    return v;
  }
  // Otherwise a unidirectional broadcast: t's dims, right-aligned, are 1 or the row's.
  bool fits = t.rank() <= static_cast<int64_t>(row_dims.size());
  for (size_t i = 0; fits && i < t.dims().size(); ++i) {
    const int64_t d = t.dims()[t.dims().size() - 1 - i];
    fits = d == 1 || d == row_dims[row_dims.size() - 1 - i];
  }
  if (!fits) {
    ctx.Fail(std::string(name) + " of shape " + ShapeToString(t.dims()) +
             " does not fit the normalised shape " + ShapeToString(row_dims));
  }
  const std::vector<int64_t> strides[1] = {BroadcastStrides(t.dims(), row_dims)};
  ForEachBroadcast(row_dims, strides, 0, len,
                   [&](int64_t i, const int64_t* off) { v[static_cast<size_t>(i)] = p[off[0]]; });
  return v;
}

KernelFactory LayerNormKernel(bool fast) {
  return [fast](const KernelInfo& info) {
    const int64_t axis_attr = info.node->AttrInt("axis", -1);
    const float epsilon = info.node->AttrFloat("epsilon", 1e-5f);
    return MakeKernel([fast, axis_attr, epsilon](KernelContext& ctx) {
      const Tensor& x = ctx.required_input(0);
      const Tensor& scale = ctx.required_input(1);
      const Tensor* bias = ctx.input(2);
      const size_t axis = static_cast<size_t>(NormalizeAxis(ctx, axis_attr, x.rank()));
      const std::vector<int64_t> row_dims(x.dims().begin() + static_cast<std::ptrdiff_t>(axis),
                                          x.dims().end());
      std::vector<int64_t> stat_dims = x.dims();
      std::fill(stat_dims.begin() + static_cast<std::ptrdiff_t>(axis), stat_dims.end(), 1);
      const int64_t len = ShapeElementCount(row_dims);
      const int64_t rows = ShapeElementCount(stat_dims);
      for (const Tensor* t : {&scale, bias}) {
        if (t != nullptr && t->dtype() != x.dtype()) {
          ctx.Fail(std::string("Scale and B must be ") + DTypeName(x.dtype()) + ", got " +
                   DTypeName(t->dtype()));
        }
      }
      DispatchFloating(ctx, x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        const std::vector<T> s = ExpandToRow<T>(ctx, scale, row_dims, "Scale");
        const std::vector<T> b =
            bias != nullptr ? ExpandToRow<T>(ctx, *bias, row_dims, "B") : std::vector<T>(s.size());
        const T* px = x.data<T>();
        T* py = ctx.OutputForWrite(0, x.dtype(), x.dims()).template mutable_data<T>();
        float* mean_out =
            ctx.num_outputs() > 1 ? ctx.Output(1, DType::kFloat, stat_dims).mutable_data<float>() : nullptr;
        float* inv_out =
            ctx.num_outputs() > 2 ? ctx.Output(2, DType::kFloat, stat_dims).mutable_data<float>() : nullptr;
        if (len == 0) return;
        ctx.pool().ParallelFor(rows, RowGrain(len), [&](int64_t begin, int64_t end) {
          if constexpr (std::is_same_v<T, float>) {
            if (fast) {
              vecmath::LayerNormRows(px + begin * len, s.data(), b.data(), py + begin * len, end - begin, len,
                                     epsilon, mean_out != nullptr ? mean_out + begin : nullptr,
                                     inv_out != nullptr ? inv_out + begin : nullptr);
              return;
            }
          }
          for (int64_t row = begin; row < end; ++row) {
            const T* xr = px + row * len;
            T* yr = py + row * len;
            double mean = 0;
            for (int64_t j = 0; j < len; ++j) mean += static_cast<double>(xr[j]);
            mean /= static_cast<double>(len);
            double sq = 0;
            for (int64_t j = 0; j < len; ++j) sq += (xr[j] - mean) * (xr[j] - mean);
            const double inv = 1.0 / std::sqrt(sq / static_cast<double>(len) + static_cast<double>(epsilon));
            for (int64_t j = 0; j < len; ++j) {
              yr[j] = static_cast<T>((xr[j] - mean) * inv * static_cast<double>(s[static_cast<size_t>(j)]) +
                                     static_cast<double>(b[static_cast<size_t>(j)]));
            }
            if (mean_out != nullptr) mean_out[row] = static_cast<float>(mean);
            if (inv_out != nullptr) inv_out[row] = static_cast<float>(inv);
          }
        });
      });
    });
  };
}

}  // namespace

void RegisterNormKernels(KernelRegistry& r) {
  const int64_t latest = KernelEntry{}.until_version;
  for (const bool fast : {false, true}) {
    const KernelVariant v = fast ? KernelVariant::kFast : KernelVariant::kReference;
    AddKernel(r, "Softmax", 1, 12, SoftmaxKernel(false, true, fast), v);
    AddKernel(r, "Softmax", 13, latest, SoftmaxKernel(false, false, fast), v);
    AddKernel(r, "LogSoftmax", 1, 12, SoftmaxKernel(true, true, fast), v);
    AddKernel(r, "LogSoftmax", 13, latest, SoftmaxKernel(true, false, fast), v);
    AddKernel(r, "BatchNormalization", 1, latest, BatchNormKernel(fast), v);
    AddKernel(r, "LayerNormalization", 17, latest, LayerNormKernel(fast), v);
  }
  AddKernel(r, "InstanceNormalization", 1, latest, InstanceNormKernel());
}

}  // namespace compress::kernels
