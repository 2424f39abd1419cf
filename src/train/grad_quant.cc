// Backward rules of QuantizeLinear and DequantizeLinear: fake quantization for quantization-aware training.
//
// The integer value between the two carries a real-valued gradient (GradContext::SetInputGrad).
// DequantizeLinear y = (q - z) * s:  dq = dy * s,  ds = sum over the elements sharing s of dy * (q - z).
// QuantizeLinear q = clamp(round(x / s) + z, qmin, qmax): round() passes the gradient straight through
// (straight-through estimator), the clamp does not:  dx = dq / s inside the range and 0 where clamped,
// ds = sum over the unclamped elements of dq * (-x / s^2). This is the learned step size of LSQ (Esser et
// al. 2020): chained with DequantizeLinear on the same scale, d y / d s = round(x / s) - x / s inside the
// range and qmin - z or qmax - z outside, and d y / d x = 1 inside, 0 outside.
// Per-tensor (one scale) and per-axis (a 1-D scale along `axis`, negative allowed) as the forward kernels;
// the zero point is not differentiable. Sums run in element order in double.
#include <cmath>
#include <limits>

#include "train/grad_common.h"

namespace compress::train {
namespace {

double Get(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::kFloat:
      return t.data<float>()[i];
    case DType::kDouble:
      return t.data<double>()[i];
    case DType::kUInt8:
      return t.data<uint8_t>()[i];
    case DType::kInt8:
      return t.data<int8_t>()[i];
    case DType::kUInt16:
      return t.data<uint16_t>()[i];
    case DType::kInt16:
      return t.data<int16_t>()[i];
    case DType::kInt32:
      return t.data<int32_t>()[i];
    default:
      return std::numeric_limits<double>::quiet_NaN();
  }
}

// A float tensor of `dtype` (float32 / float64) from double values.
Tensor FromDoubles(const GradContext& ctx, DType dtype, const std::vector<int64_t>& dims,
                   const std::vector<double>& v) {
  Tensor t(dtype, dims);
  DispatchFloat(ctx, dtype, [&](auto tag) {
    using T = decltype(tag);
    T* p = t.mutable_data<T>();
    for (size_t i = 0; i < v.size(); ++i) p[i] = static_cast<T>(v[i]);
  });
  return t;
}

// Element i uses parameter (i / inner) % channels.
struct Layout {
  int64_t channels = 1, inner = 1;
  int64_t channel(int64_t i) const { return (i / inner) % channels; }
};

Layout ResolveLayout(const GradContext& ctx, const Tensor& x, const Tensor& scale) {
  Layout l;
  if (scale.numel() == 1 && scale.rank() <= 1) {
    l.inner = std::max<int64_t>(1, x.numel());
    return l;
  }
  if (scale.rank() != 1)
    ctx.Fail("scale of shape " + ShapeToString(scale.dims()) + " must be a scalar or 1-D");
  const size_t axis = static_cast<size_t>(NormAxis(ctx, ctx.node().AttrInt("axis", 1), x.rank()));
  if (scale.numel() != x.dims()[axis]) {
    ctx.Fail("scale has " + std::to_string(scale.numel()) + " values for axis " + std::to_string(axis) +
             " of size " + std::to_string(x.dims()[axis]));
  }
  l.channels = x.dims()[axis];
  for (size_t d = axis + 1; d < x.dims().size(); ++d) l.inner *= x.dims()[d];
  return l;
}

double ZeroPoint(const GradContext& ctx, int64_t c) {
  const Tensor* zp = ctx.input(2);
  if (zp == nullptr || zp->numel() == 0) return 0.0;
  return Get(*zp, zp->numel() == 1 ? 0 : c);
}

void DequantizeBackward(GradContext& ctx) {
  const Tensor* dy = ctx.output_grad(0);
  if (dy == nullptr) return;
  const Tensor& q = ctx.required_input(0);
  const Tensor& s = ctx.required_input(1);
  const Layout l = ResolveLayout(ctx, q, s);
  const int64_t n = q.numel();
  if (ctx.wanted(0)) {
    std::vector<double> dq(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) dq[static_cast<size_t>(i)] = Get(*dy, i) * Get(s, l.channel(i));
    // The integer input gets a gradient of dy's type (GradContext::SetInputGrad).
    const DType dt = IsFloatingPoint(q.dtype()) ? q.dtype() : dy->dtype();
    ctx.SetInputGrad(0, FromDoubles(ctx, dt, q.dims(), dq));
  }
  if (ctx.wanted(1)) {
    std::vector<double> ds(static_cast<size_t>(s.numel()), 0.0);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t c = l.channel(i);
      ds[static_cast<size_t>(c)] += Get(*dy, i) * (Get(q, i) - ZeroPoint(ctx, c));
    }
    ctx.SetInputGrad(1, FromDoubles(ctx, s.dtype(), s.dims(), ds));
  }
}

void QuantizeBackward(GradContext& ctx) {
  const Tensor* dq = ctx.output_grad(0);
  if (dq == nullptr) return;
  const Tensor& x = ctx.required_input(0);
  const Tensor& s = ctx.required_input(1);
  const Tensor& q = ctx.output(0);
  const Layout l = ResolveLayout(ctx, x, s);
  double qmin = 0, qmax = 0;
  switch (q.dtype()) {
    case DType::kUInt8:
      qmin = 0;
      qmax = 255;
      break;
    case DType::kInt8:
      qmin = -128;
      qmax = 127;
      break;
    case DType::kUInt16:
      qmin = 0;
      qmax = 65535;
      break;
    case DType::kInt16:
      qmin = -32768;
      qmax = 32767;
      break;
    default:
      ctx.Fail(std::string("quantized type ") + DTypeName(q.dtype()) + " has no gradient rule");
  }
  const int64_t n = x.numel();
  std::vector<double> dx(static_cast<size_t>(n), 0.0), ds(static_cast<size_t>(s.numel()), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t c = l.channel(i);
    const double sc = Get(s, c), xv = Get(x, i);
    // As the forward kernel: round half to even in float32, then add the zero point.
    const float scaled = std::nearbyint(static_cast<float>(xv) / static_cast<float>(sc)) +
                         static_cast<float>(ZeroPoint(ctx, c));
    if (!(scaled >= qmin && scaled <= qmax)) continue;  // clamped: no gradient
    const double g = Get(*dq, i);
    dx[static_cast<size_t>(i)] = g / sc;
    ds[static_cast<size_t>(c)] += g * (-xv / (sc * sc));
  }
  if (ctx.wanted(0)) ctx.SetInputGrad(0, FromDoubles(ctx, x.dtype(), x.dims(), dx));
  if (ctx.wanted(1)) ctx.SetInputGrad(1, FromDoubles(ctx, s.dtype(), s.dims(), ds));
}

}  // namespace

void AddQuantGrads(BackwardRegistry& r) {
  r.Add({"DequantizeLinear", 10, 1000, DequantizeBackward, {0, 1}});
  r.Add({"QuantizeLinear", 10, 1000, QuantizeBackward, {0, 1}});
}

}  // namespace compress::train
