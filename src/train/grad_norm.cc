// Backward rules of the normalisations: Softmax, LogSoftmax, LayerNormalization, BatchNormalization with
// frozen statistics (inference mode) and InstanceNormalization.
//
// Sums along a row or over a channel accumulate in double, in element order. The rules are plain sequential
// loops (no thread pool), so gradients do not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "train/grad_common.h"

namespace compress::train {
namespace {

// Softmax / LogSoftmax rows, as the forward kernel lays them out: before opset 13 the input is coerced to
// 2-D at `axis` (default 1) and a row is everything from `axis` on; from 13 a row runs along `axis`
// (default -1). Rows are outer * inner, the elements of a row `inner` apart.
struct Rows {
  int64_t outer = 1, len = 1, inner = 1;
};

Rows SoftmaxRows(const GradContext& ctx, const std::vector<int64_t>& dims) {
  const bool coerce_2d = ctx.opset() < 13;
  const int64_t rank = static_cast<int64_t>(dims.size());
  const size_t axis =
      static_cast<size_t>(NormAxis(ctx, ctx.node().AttrInt("axis", coerce_2d ? 1 : -1), rank));
  Rows r;
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

// Softmax: dx = y * (dy - sum(dy * y)); LogSoftmax: dx = dy - exp(y) * sum(dy), per row.
void SoftmaxBackward(GradContext& ctx, bool log) {
  const Tensor* dy = ctx.output_grad(0);
  if (dy == nullptr || !ctx.wanted(0)) return;
  const Tensor& x = ctx.required_input(0);
  const Tensor& y = ctx.output(0);
  const Rows r = SoftmaxRows(ctx, x.dims());
  DispatchFloat(ctx, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* py = y.data<T>();
    const T* g = dy->data<T>();
    Tensor dx = Tensor::Uninitialized(x.dtype(), x.dims());
    T* o = dx.mutable_data<T>();
    for (int64_t row = 0; row < r.outer * r.inner; ++row) {
      const int64_t start = (row / r.inner) * r.len * r.inner + row % r.inner;
      double sum = 0;
      for (int64_t j = 0; j < r.len; ++j) {
        const int64_t i = start + j * r.inner;
        sum += log ? static_cast<double>(g[i]) : static_cast<double>(g[i]) * static_cast<double>(py[i]);
      }
      for (int64_t j = 0; j < r.len; ++j) {
        const int64_t i = start + j * r.inner;
        const double yi = static_cast<double>(py[i]), gi = static_cast<double>(g[i]);
        o[i] = static_cast<T>(log ? gi - std::exp(yi) * sum : yi * (gi - sum));
      }
    }
    ctx.SetInputGrad(0, std::move(dx));
  });
}

// Scale / B of LayerNormalization as one value per row element: the same values when they hold `len`,
// otherwise broadcast to the row's dims.
template <typename T>
std::vector<double> PerRowElement(const Tensor& t, const std::vector<int64_t>& row_dims, int64_t len) {
  const Tensor full = t.numel() == len ? t : BroadcastTo(t, row_dims);
  std::vector<double> v(static_cast<size_t>(len));
  for (int64_t j = 0; j < len; ++j) v[static_cast<size_t>(j)] = static_cast<double>(full.data<T>()[j]);
  return v;
}

// The gradient of a per-row-element parameter (sums over rows in `acc`) in the parameter's shape.
template <typename T>
Tensor RowParamGrad(const std::vector<double>& acc, const Tensor& param,
                    const std::vector<int64_t>& row_dims) {
  const int64_t len = static_cast<int64_t>(acc.size());
  Tensor full(param.dtype(), param.numel() == len ? param.dims() : row_dims);
  for (int64_t j = 0; j < len; ++j) full.mutable_data<T>()[j] = static_cast<T>(acc[static_cast<size_t>(j)]);
  return param.numel() == len ? full : ReduceToShape(full, param.dims());
}

// LayerNormalization (opset 17): y = xhat * Scale + B with xhat = (x - mean) * inv over each row of the dims
// from `axis` on. With g = dy * Scale: dx = inv * (g - mean(g) - xhat * mean(g * xhat)); dScale = sum over
// rows of dy * xhat, dB = sum of dy. Outputs 1 and 2 (Mean, InvStdDev) are statistics: their gradients are
// not propagated.
void LayerNormBackward(GradContext& ctx) {
  const Tensor* dy = ctx.output_grad(0);
  if (dy == nullptr) return;
  const Tensor& x = ctx.required_input(0);
  const Tensor& scale = ctx.required_input(1);
  const Tensor* bias = ctx.input(2);
  const size_t axis = static_cast<size_t>(NormAxis(ctx, ctx.node().AttrInt("axis", -1), x.rank()));
  const double eps = ctx.node().AttrFloat("epsilon", 1e-5f);
  const std::vector<int64_t> row_dims(x.dims().begin() + static_cast<std::ptrdiff_t>(axis), x.dims().end());
  const int64_t len = ShapeElementCount(row_dims);
  if (len == 0) return;
  const int64_t rows = x.numel() / len;
  DispatchFloat(ctx, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const std::vector<double> s = PerRowElement<T>(scale, row_dims, len);
    const T* px = x.data<T>();
    const T* g = dy->data<T>();
    Tensor dx = Tensor::Uninitialized(x.dtype(), x.dims());
    T* o = dx.mutable_data<T>();
    std::vector<double> ds(static_cast<size_t>(len), 0.0), db(static_cast<size_t>(len), 0.0);
    std::vector<double> xhat(static_cast<size_t>(len)), gs(static_cast<size_t>(len));
    for (int64_t row = 0; row < rows; ++row) {
      const T* xr = px + row * len;
      const T* gr = g + row * len;
      double mean = 0;
      for (int64_t j = 0; j < len; ++j) mean += static_cast<double>(xr[j]);
      mean /= static_cast<double>(len);
      double sq = 0;
      for (int64_t j = 0; j < len; ++j) sq += (xr[j] - mean) * (xr[j] - mean);
      const double inv = 1.0 / std::sqrt(sq / static_cast<double>(len) + eps);
      double mg = 0, mgx = 0;
      for (int64_t j = 0; j < len; ++j) {
        const size_t k = static_cast<size_t>(j);
        xhat[k] = (xr[j] - mean) * inv;
        gs[k] = static_cast<double>(gr[j]) * s[k];
        mg += gs[k];
        mgx += gs[k] * xhat[k];
        ds[k] += static_cast<double>(gr[j]) * xhat[k];
        db[k] += static_cast<double>(gr[j]);
      }
      mg /= static_cast<double>(len);
      mgx /= static_cast<double>(len);
      for (int64_t j = 0; j < len; ++j) {
        const size_t k = static_cast<size_t>(j);
        o[row * len + j] = static_cast<T>(inv * (gs[k] - mg - xhat[k] * mgx));
      }
    }
    if (ctx.wanted(0)) ctx.SetInputGrad(0, std::move(dx));
    if (ctx.wanted(1)) ctx.SetInputGrad(1, RowParamGrad<T>(ds, scale, row_dims));
    if (bias != nullptr && ctx.wanted(2)) ctx.SetInputGrad(2, RowParamGrad<T>(db, *bias, row_dims));
  });
}

// BatchNormalization with frozen statistics: y = scale * (x - mean) / sqrt(var + eps) + B per channel (per
// activation before opset 9 with spatial=0). Gradients for X, scale and B; mean and var are not
// differentiable. Training mode (opset 14 on, training_mode=1) normalises with batch statistics: no rule.
void BatchNormBackward(GradContext& ctx) {
  const Node& n = ctx.node();
  if (ctx.opset() >= 14 && n.AttrInt("training_mode", 0) != 0) {
    ctx.Fail(
        "training_mode=1 (batch statistics) has no backward rule; gradients are computed with the frozen "
        "running mean and variance (training_mode=0)");
  }
  const Tensor* dy = ctx.output_grad(0);
  if (dy == nullptr) return;
  const Tensor& x = ctx.required_input(0);
  if (x.rank() < 2) ctx.Fail("input must have shape [N, C, ...], got " + ShapeToString(x.dims()));
  const bool per_activation = ctx.opset() < 9 && n.AttrInt("spatial", 1) == 0;
  const double eps = n.AttrFloat("epsilon", 1e-5f);
  const int64_t batch = x.dims()[0], channels = x.dims()[1];
  const int64_t spatial = x.numel() / std::max<int64_t>(1, batch * channels);
  const int64_t params = per_activation ? channels * spatial : channels;
  for (size_t i = 1; i < 5; ++i) {
    if (ctx.required_input(i).numel() != params || ctx.required_input(i).dtype() != x.dtype()) {
      ctx.Fail("input " + std::to_string(i) + " must hold " + std::to_string(params) +
               " values of the input's type");
    }
  }
  DispatchFloat(ctx, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    const T* g = dy->data<T>();
    const T* scale = ctx.required_input(1).template data<T>();
    const T* mean = ctx.required_input(3).template data<T>();
    const T* var = ctx.required_input(4).template data<T>();
    Tensor dx(x.dtype(), x.dims());
    T* o = dx.mutable_data<T>();
    std::vector<double> ds(static_cast<size_t>(params), 0.0), db(static_cast<size_t>(params), 0.0);
    for (int64_t plane = 0; plane < batch * channels; ++plane) {
      const int64_t c = plane % channels;
      for (int64_t s = 0; s < spatial; ++s) {
        const int64_t k = per_activation ? c * spatial + s : c;
        const int64_t i = plane * spatial + s;
        const double inv = 1.0 / std::sqrt(static_cast<double>(var[k]) + eps);
        const double gi = static_cast<double>(g[i]);
        o[i] = static_cast<T>(gi * static_cast<double>(scale[k]) * inv);
        ds[static_cast<size_t>(k)] += gi * (static_cast<double>(px[i]) - static_cast<double>(mean[k])) * inv;
        db[static_cast<size_t>(k)] += gi;
      }
    }
    auto param_grad = [&](size_t input, const std::vector<double>& acc) {
      Tensor t(x.dtype(), ctx.required_input(input).dims());
      for (int64_t k = 0; k < params; ++k)
        t.mutable_data<T>()[k] = static_cast<T>(acc[static_cast<size_t>(k)]);
      ctx.SetInputGrad(input, std::move(t));
    };
    if (ctx.wanted(0)) ctx.SetInputGrad(0, std::move(dx));
    if (ctx.wanted(1)) param_grad(1, ds);
    if (ctx.wanted(2)) param_grad(2, db);
  });
}

// InstanceNormalization: each [n, c] plane normalised by its own mean and variance, then scale[c], B[c].
// The same algebra as LayerNormalization with a row per plane and one scale per channel.
void InstanceNormBackward(GradContext& ctx) {
  const Tensor* dy = ctx.output_grad(0);
  if (dy == nullptr) return;
  const Tensor& x = ctx.required_input(0);
  if (x.rank() < 2) ctx.Fail("input must have shape [N, C, ...], got " + ShapeToString(x.dims()));
  const double eps = ctx.node().AttrFloat("epsilon", 1e-5f);
  const int64_t channels = x.dims()[1];
  const int64_t planes = x.dims()[0] * channels;
  const int64_t spatial = x.numel() / std::max<int64_t>(1, planes);
  if (spatial == 0) return;
  DispatchFloat(ctx, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    const T* g = dy->data<T>();
    const T* scale = ctx.required_input(1).template data<T>();
    Tensor dx(x.dtype(), x.dims());
    T* o = dx.mutable_data<T>();
    std::vector<double> ds(static_cast<size_t>(channels), 0.0), db(static_cast<size_t>(channels), 0.0);
    std::vector<double> xhat(static_cast<size_t>(spatial));
    for (int64_t plane = 0; plane < planes; ++plane) {
      const int64_t c = plane % channels;
      const T* xp = px + plane * spatial;
      const T* gp = g + plane * spatial;
      double mean = 0;
      for (int64_t s = 0; s < spatial; ++s) mean += static_cast<double>(xp[s]);
      mean /= static_cast<double>(spatial);
      double sq = 0;
      for (int64_t s = 0; s < spatial; ++s) sq += (xp[s] - mean) * (xp[s] - mean);
      const double inv = 1.0 / std::sqrt(sq / static_cast<double>(spatial) + eps);
      const double sc = static_cast<double>(scale[c]);
      double mg = 0, mgx = 0;
      for (int64_t s = 0; s < spatial; ++s) {
        const size_t k = static_cast<size_t>(s);
        xhat[k] = (xp[s] - mean) * inv;
        const double gi = static_cast<double>(gp[s]);
        mg += gi * sc;
        mgx += gi * sc * xhat[k];
        ds[static_cast<size_t>(c)] += gi * xhat[k];
        db[static_cast<size_t>(c)] += gi;
      }
      mg /= static_cast<double>(spatial);
      mgx /= static_cast<double>(spatial);
      for (int64_t s = 0; s < spatial; ++s) {
        const size_t k = static_cast<size_t>(s);
        o[plane * spatial + s] = static_cast<T>(inv * (static_cast<double>(gp[s]) * sc - mg - xhat[k] * mgx));
      }
    }
    auto param_grad = [&](size_t input, const std::vector<double>& acc) {
      Tensor t(x.dtype(), ctx.required_input(input).dims());
      if (t.numel() != channels) ctx.Fail("scale and B must hold " + std::to_string(channels) + " values");
      for (int64_t k = 0; k < channels; ++k)
        t.mutable_data<T>()[k] = static_cast<T>(acc[static_cast<size_t>(k)]);
      ctx.SetInputGrad(input, std::move(t));
    };
    if (ctx.wanted(0)) ctx.SetInputGrad(0, std::move(dx));
    if (ctx.wanted(1)) param_grad(1, ds);
    if (ctx.wanted(2)) param_grad(2, db);
  });
}

}  // namespace

void AddNormGrads(BackwardRegistry& r) {
  r.Add({"Softmax", 1, 1000, [](GradContext& c) { SoftmaxBackward(c, false); }, {0}});
  r.Add({"LogSoftmax", 1, 1000, [](GradContext& c) { SoftmaxBackward(c, true); }, {0}});
  r.Add({"LayerNormalization", 17, 1000, LayerNormBackward, {0, 1, 2}});
  r.Add({"BatchNormalization", 1, 1000, BatchNormBackward, {0, 1, 2}});
  r.Add({"InstanceNormalization", 1, 1000, InstanceNormBackward, {0, 1, 2}});
}

}  // namespace compress::train
