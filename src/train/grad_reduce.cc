// Backward rules of the reductions over a set of axes: ReduceSum, ReduceMean, ReduceSumSquare, ReduceL2,
// ReduceMax, ReduceMin.
//
// Axes come from the `axes` attribute (ReduceSum before opset 13, the others before 18) or from the
// optional second input (not differentiable); no axes reduce everything unless noop_with_empty_axes, which
// makes the op the identity. With keepdims=0 the output lacks the reduced dims; the rule reads dy through
// the keepdims shape, which holds the same elements in the same order.
//
// ReduceMax / ReduceMin pass the gradient to the first input element (row-major) equal to the result, the
// one the forward scan keeps. The rules are plain sequential loops (no thread pool), so gradients do not
// depend on the thread count.
#include <cmath>
#include <string>
#include <vector>

#include "train/grad_common.h"

namespace compress::train {
namespace {

enum class Kind { kSum, kMean, kSumSquare, kL2, kMax, kMin };

void ReduceBackward(GradContext& ctx, Kind kind, int64_t axes_input_since) {
  const Tensor* dy = ctx.output_grad(0);
  if (dy == nullptr || !ctx.wanted(0)) return;
  const Tensor& x = ctx.required_input(0);
  const Tensor& y = ctx.output(0);
  const int64_t rank = x.rank();
  std::vector<int64_t> axes;
  if (ctx.opset() >= axes_input_since) {
    if (const Tensor* t = ctx.input(1)) axes = ReadInts(*t);
    if (axes.empty() && ctx.node().AttrInt("noop_with_empty_axes", 0) != 0) {
      ctx.SetInputGrad(0, *dy);  // the identity
      return;
    }
  } else {
    axes = ctx.node().AttrInts("axes", {});
  }
  std::vector<bool> reduced(static_cast<size_t>(rank), axes.empty());
  for (const int64_t a : axes) reduced[static_cast<size_t>(NormAxis(ctx, a, rank))] = true;
  // Strides of the keepdims output seen from the input: 0 along reduced dims.
  std::vector<int64_t> kept_dims = x.dims();
  int64_t count = 1;
  for (size_t d = 0; d < reduced.size(); ++d) {
    if (reduced[d]) {
      count *= kept_dims[d];
      kept_dims[d] = 1;
    }
  }
  if (ShapeElementCount(kept_dims) != dy->numel()) {
    ctx.Fail("output gradient of shape " + ShapeToString(dy->dims()) + " does not match the reduction of " +
             ShapeToString(x.dims()));
  }
  const std::vector<int64_t> ks = RowStrides(kept_dims);
  DispatchFloat(ctx, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    const T* py = y.data<T>();
    const T* g = dy->data<T>();
    Tensor dx(x.dtype(), x.dims());
    T* o = dx.mutable_data<T>();
    std::vector<bool> taken;
    if (kind == Kind::kMax || kind == Kind::kMin) taken.assign(static_cast<size_t>(dy->numel()), false);
    std::vector<int64_t> idx(static_cast<size_t>(rank), 0);
    for (int64_t i = 0; i < x.numel(); ++i) {
      int64_t off = 0;
      for (size_t d = 0; d < idx.size(); ++d) off += reduced[d] ? 0 : idx[d] * ks[d];
      const double gi = static_cast<double>(g[off]);
      const double xi = static_cast<double>(px[i]);
      double v = 0;
      switch (kind) {
        case Kind::kSum:
          v = gi;
          break;
        case Kind::kMean:
          v = gi / static_cast<double>(count);
          break;
        case Kind::kSumSquare:
          v = 2 * xi * gi;
          break;
        case Kind::kL2: {
          const double n = static_cast<double>(py[off]);
          v = n > 0 ? gi * xi / n : 0.0;
          break;
        }
        case Kind::kMax:
        case Kind::kMin:
          if (!taken[static_cast<size_t>(off)] && px[i] == py[off]) {
            taken[static_cast<size_t>(off)] = true;
            v = gi;
          }
          break;
      }
      o[i] = static_cast<T>(v);
      for (size_t d = idx.size(); d-- > 0;) {
        if (++idx[d] < x.dims()[d]) break;
        idx[d] = 0;
      }
    }
    ctx.SetInputGrad(0, std::move(dx));
  });
}

void Add(BackwardRegistry& r, const std::string& op, Kind kind, int64_t axes_input_since) {
  r.Add({op,
         1,
         1000,
         [kind, axes_input_since](GradContext& c) { ReduceBackward(c, kind, axes_input_since); },
         {0}});
}

}  // namespace

void AddReduceGrads(BackwardRegistry& r) {
  Add(r, "ReduceSum", Kind::kSum, 13);
  Add(r, "ReduceMean", Kind::kMean, 18);
  Add(r, "ReduceSumSquare", Kind::kSumSquare, 18);
  Add(r, "ReduceL2", Kind::kL2, 18);
  Add(r, "ReduceMax", Kind::kMax, 18);
  Add(r, "ReduceMin", Kind::kMin, 18);
}

}  // namespace compress::train
