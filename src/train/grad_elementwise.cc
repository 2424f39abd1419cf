// Backward rules of element-wise operators.
//
// Unary y = f(x): dx = dy * f'(x), with f' written from x or from y, whichever is exact and cheaper.
// Binary with numpy broadcasting: each input's gradient is summed over the axes it was stretched along.
#include <cmath>

#include "train/grad_common.h"

namespace compress::train {
namespace {

// dx = dy * d(x, y) element by element, d computed in T.
template <typename DFn>
void Unary(GradContext& ctx, DFn&& d) {
  const Tensor* dy = ctx.output_grad(0);
  if (dy == nullptr || !ctx.wanted(0)) return;
  const Tensor& x = ctx.required_input(0);
  const Tensor& y = ctx.output(0);
  DispatchFloat(ctx, dy->dtype(), [&](auto tag) {
    using T = decltype(tag);
    Tensor dx(x.dtype(), x.dims());
    const T* px = x.data<T>();
    const T* py = y.data<T>();
    const T* g = dy->data<T>();
    T* o = dx.mutable_data<T>();
    for (int64_t i = 0; i < x.numel(); ++i) o[i] = g[i] * static_cast<T>(d(static_cast<double>(px[i]), static_cast<double>(py[i])));
    ctx.SetInputGrad(0, std::move(dx));
  });
}

void ReluBackward(GradContext& ctx) {
  Unary(ctx, [](double x, double) { return x > 0 ? 1.0 : 0.0; });
}

void AddSubBackward(GradContext& ctx, double sign_b) {
  const Tensor* dy = ctx.output_grad(0);
  if (dy == nullptr) return;
  if (ctx.wanted(0)) ctx.SetInputGrad(0, ReduceToShape(*dy, ctx.required_input(0).dims()));
  if (ctx.wanted(1)) {
    Tensor g = ReduceToShape(*dy, ctx.required_input(1).dims());
    if (sign_b != 1.0) {
      DispatchFloat(ctx, g.dtype(), [&](auto tag) {
        using T = decltype(tag);
        T* p = g.mutable_data<T>();
        for (int64_t i = 0; i < g.numel(); ++i) p[i] = -p[i];
      });
    }
    ctx.SetInputGrad(1, std::move(g));
  }
}

}  // namespace

void AddElementwiseGrads(BackwardRegistry& r) {
  r.Add({"Relu", 1, 1000, ReluBackward, {0}});
  r.Add({"Add", 1, 1000, [](GradContext& c) { AddSubBackward(c, 1.0); }, {0, 1}});
  r.Add({"Sub", 1, 1000, [](GradContext& c) { AddSubBackward(c, -1.0); }, {0, 1}});
}

}  // namespace compress::train
