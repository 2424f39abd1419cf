// Backward rules of element-wise operators.
//
// Unary y = f(x): dx = dy * f'(x), with f' written from x or from y, whichever is exact and cheaper.
// Binary and variadic ops with numpy broadcasting: each input's gradient is computed over the broadcast
// output shape and summed over the axes it was stretched along. Before opset 7, broadcast=1 with an `axis`
// lines the second input up with the first starting at `axis`, as the forward kernel does.
//
// No rule here uses the thread pool: every loop is a plain sequential pass, so gradients do not depend on
// the thread count.
#include <Eigen/Core>
#include <cmath>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include <cstring>
#include <string>
#include <vector>

#include "compress/util/half.h"
#include "train/grad_common.h"

namespace compress::train {
namespace {

constexpr double kPi = 3.14159265358979323846;

// dx = dy * d(x, y) element by element, d computed in double.
template <typename DFn>
void Unary(GradContext& ctx, DFn&& d) {
  const Tensor* dy = ctx.output_grad(0);
  if (dy == nullptr || !ctx.wanted(0)) return;
  const Tensor& x = ctx.required_input(0);
  const Tensor& y = ctx.output(0);
  DispatchFloat(ctx, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    Tensor dx = Tensor::Uninitialized(x.dtype(), x.dims());
    const T* px = x.data<T>();
    const T* py = y.data<T>();
    const T* g = dy->data<T>();
    T* o = dx.mutable_data<T>();
    for (int64_t i = 0; i < x.numel(); ++i) {
      o[i] = static_cast<T>(static_cast<double>(g[i]) *
                            d(static_cast<double>(px[i]), static_cast<double>(py[i])));
    }
    ctx.SetInputGrad(0, std::move(dx));
  });
}

void ReluBackward(GradContext& ctx) {
  const Tensor* dy = ctx.output_grad(0);
  if (dy == nullptr || !ctx.wanted(0)) return;
  const Tensor& x = ctx.required_input(0);
  if (x.dtype() != DType::kFloat || dy->dtype() != DType::kFloat) {
    Unary(ctx, [](double v, double) { return v > 0 ? 1.0 : 0.0; });
    return;
  }
  // Float32, the training case: a bit mask instead of a branch on the sign, which mispredicts on every
  // other element. dx = dy where x > 0, else +0.
  Tensor dx = Tensor::Uninitialized(x.dtype(), x.dims());
  const float* px = x.data<float>();
  const uint32_t* pg = static_cast<const uint32_t*>(dy->raw());
  uint32_t* o = static_cast<uint32_t*>(dx.mutable_raw());
  int64_t i = 0;
#if defined(__SSE2__)
  for (; i + 4 <= x.numel(); i += 4) {
    const __m128 mask = _mm_cmpgt_ps(_mm_loadu_ps(px + i), _mm_setzero_ps());
    _mm_storeu_ps(reinterpret_cast<float*>(o + i),
                  _mm_and_ps(mask, _mm_loadu_ps(reinterpret_cast<const float*>(pg + i))));
  }
#endif
  for (; i < x.numel(); ++i) o[i] = pg[i] & (0u - static_cast<uint32_t>(px[i] > 0.0f));
  ctx.SetInputGrad(0, std::move(dx));
}

void LeakyReluBackward(GradContext& ctx) {
  const double alpha = ctx.node().AttrFloat("alpha", 0.01f);
  Unary(ctx, [alpha](double x, double) { return x < 0 ? alpha : 1.0; });
}

void HardSigmoidBackward(GradContext& ctx) {
  const double alpha = ctx.node().AttrFloat("alpha", 0.2f);
  const double beta = ctx.node().AttrFloat("beta", 0.5f);
  Unary(ctx, [alpha, beta](double x, double) {
    const double v = alpha * x + beta;
    return v > 0 && v < 1 ? alpha : 0.0;
  });
}

// y = x * clip(a x + 1/2, 0, 1) with a = 1/6 rounded to float32, as the forward kernel has it.
void HardSwishBackward(GradContext& ctx) {
  Unary(ctx, [](double x, double) {
    const double a = static_cast<double>(1.0f / 6.0f);
    const double v = a * x + 0.5;
    if (v <= 0) return 0.0;
    if (v >= 1) return 1.0;
    return 2 * a * x + 0.5;
  });
}

double Logistic(double x) {
  if (x >= 0) return 1.0 / (1.0 + std::exp(-x));
  const double e = std::exp(x);
  return e / (1.0 + e);
}

// Erf: dx = dy * 2/sqrt(pi) * exp(-x^2). Float32 (GELU in transformers, the training case) with Eigen's
// vectorized exp, within a few ulp of the double form; other types through Unary in double.
void ErfBackward(GradContext& ctx) {
  const Tensor* dy = ctx.output_grad(0);
  if (dy == nullptr || !ctx.wanted(0)) return;
  const Tensor& x = ctx.required_input(0);
  if (x.dtype() != DType::kFloat || dy->dtype() != DType::kFloat || x.numel() != dy->numel()) {
    Unary(ctx, [](double v, double) { return 2 / std::sqrt(kPi) * std::exp(-v * v); });
    return;
  }
  Tensor dx = Tensor::Uninitialized(x.dtype(), x.dims());
  const Eigen::Index n = static_cast<Eigen::Index>(x.numel());
  const Eigen::Map<const Eigen::ArrayXf> xv(x.data<float>(), n), g(dy->data<float>(), n);
  Eigen::Map<Eigen::ArrayXf> o(dx.mutable_data<float>(), n);
  const float scale = static_cast<float>(2 / std::sqrt(kPi));
  o = g * (scale * (-xv.square()).exp());
  ctx.SetInputGrad(0, std::move(dx));
}

void GeluBackward(GradContext& ctx) {
  const std::string approximate = ctx.node().AttrString("approximate", "none");
  if (approximate == "tanh") {
    Unary(ctx, [](double x, double) {
      const double k = std::sqrt(2.0 / kPi), c = 0.044715;
      const double t = std::tanh(k * (x + c * x * x * x));
      return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * c * x * x);
    });
  } else if (approximate == "none") {
    Unary(ctx, [](double x, double) {
      return 0.5 * (1 + std::erf(x / std::sqrt(2.0))) + x * std::exp(-0.5 * x * x) / std::sqrt(2 * kPi);
    });
  } else {
    ctx.Fail("unknown approximate '" + approximate + "' (none or tanh)");
  }
}

// Clip: the gradient passes where min <= x <= max (bounds as attributes before opset 11, as optional
// scalar inputs from 11; the bounds get no gradient).
void ClipBackward(GradContext& ctx) {
  double lo = -INFINITY, hi = INFINITY;
  if (ctx.opset() < 11) {
    lo = ctx.node().AttrFloat("min", -INFINITY);
    hi = ctx.node().AttrFloat("max", INFINITY);
  } else {
    auto bound = [&](size_t i, double& v) {
      const Tensor* t = ctx.input(i);
      if (t == nullptr) return;
      if (t->numel() != 1)
        ctx.Fail("Clip bound " + std::to_string(i) + " must be a scalar, got shape " +
                 ShapeToString(t->dims()));
      DispatchFloat(ctx, t->dtype(), [&](auto tag) { v = static_cast<double>(t->data<decltype(tag)>()[0]); });
    };
    bound(1, lo);
    bound(2, hi);
  }
  Unary(ctx, [lo, hi](double x, double) { return x >= lo && x <= hi ? 1.0 : 0.0; });
}

// Dropout at inference is the identity; output 1 (the mask) carries no gradient. Training mode (opset 12
// on: a true training_mode input with a non-zero ratio) draws a random mask the backward pass cannot see.
void DropoutBackward(GradContext& ctx) {
  if (ctx.opset() >= 12) {
    const Tensor* training = ctx.input(2);
    if (training != nullptr && training->dtype() == DType::kBool && training->numel() == 1 &&
        *static_cast<const uint8_t*>(training->raw()) != 0) {
      double ratio = 0.5;
      const Tensor* r = ctx.input(1);
      if (r != nullptr && r->numel() == 1 && (r->dtype() == DType::kFloat || r->dtype() == DType::kDouble)) {
        ratio = r->dtype() == DType::kFloat ? r->data<float>()[0] : r->data<double>()[0];
      }
      if (ratio != 0) {
        ctx.Fail(
            "training_mode is true: training-mode Dropout has no backward rule (set training_mode to false)");
      }
    }
  }
  const Tensor* dy = ctx.output_grad(0);
  if (dy != nullptr && ctx.wanted(0)) ctx.SetInputGrad(0, *dy);
}

// Element i of a float tensor of any float dtype as double, and back.
double FloatAt(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::kFloat:
      return t.data<float>()[i];
    case DType::kDouble:
      return t.data<double>()[i];
    case DType::kFloat16:
      return HalfToFloat(static_cast<const uint16_t*>(t.raw())[i]);
    case DType::kBFloat16:
      return BFloat16ToFloat(static_cast<const uint16_t*>(t.raw())[i]);
    default:
      return 0;
  }
}

void SetFloatAt(Tensor& t, int64_t i, double v) {
  switch (t.dtype()) {
    case DType::kFloat:
      t.mutable_data<float>()[i] = static_cast<float>(v);
      break;
    case DType::kDouble:
      t.mutable_data<double>()[i] = v;
      break;
    case DType::kFloat16:
      static_cast<uint16_t*>(t.mutable_raw())[i] = FloatToHalf(static_cast<float>(v));
      break;
    case DType::kBFloat16:
      static_cast<uint16_t*>(t.mutable_raw())[i] = FloatToBFloat16(static_cast<float>(v));
      break;
    default:
      break;
  }
}

bool IsRealFloat(DType d) {
  return d == DType::kFloat || d == DType::kDouble || d == DType::kFloat16 || d == DType::kBFloat16;
}

// Cast between float types: the gradient is cast back to the input's dtype.
void CastBackward(GradContext& ctx) {
  const Tensor* dy = ctx.output_grad(0);
  if (dy == nullptr || !ctx.wanted(0)) return;
  const Tensor& x = ctx.required_input(0);
  if (!IsRealFloat(x.dtype()) || !IsRealFloat(dy->dtype())) {
    ctx.Fail(std::string("Cast gradients flow between float types only, not ") + DTypeName(dy->dtype()) +
             " to " + DTypeName(x.dtype()));
  }
  if (dy->dtype() == x.dtype()) {
    ctx.SetInputGrad(0, *dy);
    return;
  }
  Tensor dx(x.dtype(), x.dims());
  for (int64_t i = 0; i < x.numel(); ++i) SetFloatAt(dx, i, FloatAt(*dy, i));
  ctx.SetInputGrad(0, std::move(dx));
}

// ---------------------------------------------------------------------------------------------------------
// Broadcasting.

// The dims input k broadcasts with: its own, or before opset 7 with broadcast=1 and an axis, input 1's
// dims padded with trailing 1s so that they line up with input 0 from `axis`.
std::vector<int64_t> AlignedDims(const GradContext& ctx, size_t k) {
  const Tensor& t = ctx.required_input(k);
  if (k != 1 || ctx.opset() >= 7 || ctx.node().AttrInt("broadcast", 0) == 0 ||
      ctx.node().FindAttr("axis") == nullptr) {
    return t.dims();
  }
  const int64_t rank = ctx.required_input(0).rank();
  const int64_t start = NormAxis(ctx, ctx.node().AttrInt("axis", 0), rank);
  if (start + t.rank() > rank)
    ctx.Fail("input 1 of shape " + ShapeToString(t.dims()) + " does not fit from axis");
  std::vector<int64_t> dims = t.dims();
  dims.resize(static_cast<size_t>(rank - start), 1);
  return dims;
}

// For each element of `out` (row-major), the offset of the element of a tensor of dims `in` (right-aligned,
// numpy rules) it reads.
std::vector<int64_t> BroadcastOffsets(const std::vector<int64_t>& in, const std::vector<int64_t>& out) {
  const int64_t n = ShapeElementCount(out);
  std::vector<int64_t> offs(static_cast<size_t>(n));
  std::vector<int64_t> strides(out.size(), 0);
  const auto is = RowStrides(in);
  const size_t lead = out.size() - in.size();
  for (size_t d = 0; d < in.size(); ++d) strides[lead + d] = in[d] == 1 ? 0 : is[d];
  std::vector<int64_t> idx(out.size(), 0);
  int64_t off = 0;
  for (int64_t i = 0; i < n; ++i) {
    offs[static_cast<size_t>(i)] = off;
    for (size_t d = out.size(); d-- > 0;) {
      ++idx[d];
      off += strides[d];
      if (idx[d] < out[d]) break;
      off -= strides[d] * idx[d];
      idx[d] = 0;
    }
  }
  return offs;
}

// Sets input k's gradient from `g` (of the output's broadcast shape, input k's dtype).
void SetBroadcastGrad(GradContext& ctx, size_t k, const Tensor& g) {
  Tensor r = ReduceToShape(g, AlignedDims(ctx, k));
  if (r.dims() != ctx.required_input(k).dims()) {
    Tensor c = Tensor::FromBytes(r.dtype(), r.dims(), r.raw(), r.nbytes());
    c.Reshape(ctx.required_input(k).dims());
    r = std::move(c);
  }
  ctx.SetInputGrad(k, std::move(r));
}

// For every wanted input k < count: g_k[i] = dy[i] * f(k, i, v) over the output's elements, where v[j] is
// input j's value read at output element i. Computed in T.
template <typename T, typename Fn>
void BroadcastBackward(GradContext& ctx, size_t count, Fn&& f) {
  const Tensor* dy = ctx.output_grad(0);
  if (dy == nullptr) return;
  const std::vector<int64_t>& out = dy->dims();
  std::vector<std::vector<int64_t>> offs(count);
  std::vector<const T*> data(count);
  for (size_t j = 0; j < count; ++j) {
    offs[j] = BroadcastOffsets(AlignedDims(ctx, j), out);
    data[j] = ctx.required_input(j).data<T>();
  }
  const T* g = dy->data<T>();
  std::vector<double> v(count);
  for (size_t k = 0; k < count; ++k) {
    if (!ctx.wanted(k)) continue;
    Tensor full = Tensor::Uninitialized(ctx.required_input(k).dtype(), out);
    T* o = full.mutable_data<T>();
    for (int64_t i = 0; i < dy->numel(); ++i) {
      for (size_t j = 0; j < count; ++j) v[j] = static_cast<double>(data[j][offs[j][static_cast<size_t>(i)]]);
      o[i] = static_cast<T>(static_cast<double>(g[i]) * f(k, i, v));
    }
    SetBroadcastGrad(ctx, k, full);
  }
}

// Add and Sub: each input gets dy (negated for Sub's second input) summed over the axes it was broadcast
// along; an input of the output's shape shares dy's storage.
void AddSubBackward(GradContext& ctx, double sign_b) {
  const Tensor* dy = ctx.output_grad(0);
  if (dy == nullptr) return;
  DispatchFloat(ctx, ctx.required_input(0).dtype(), [&](auto tag) {
    using T = decltype(tag);
    for (size_t k = 0; k < 2; ++k) {
      if (!ctx.wanted(k)) continue;
      Tensor g = ReduceToShape(*dy, AlignedDims(ctx, k));
      if (k == 1 && sign_b < 0) {
        Tensor neg = Tensor::Uninitialized(g.dtype(), g.dims());
        const T* src = g.template data<T>();
        T* dst = neg.template mutable_data<T>();
        for (int64_t i = 0; i < g.numel(); ++i) dst[i] = -src[i];
        g = std::move(neg);
      }
      g.Reshape(ctx.required_input(k).dims());
      ctx.SetInputGrad(k, std::move(g));
    }
  });
}

// Input j broadcast to the output gradient's shape (its own storage when it already has that shape).
Tensor OverOutput(GradContext& ctx, size_t j, const Tensor& dy) {
  Tensor t = ctx.required_input(j);
  if (t.dtype() != dy.dtype()) ctx.Fail("inputs and output gradient differ in element type");
  t.Reshape(AlignedDims(ctx, j));
  return BroadcastTo(t, dy.dims());
}

// Mul: da = dy * b and db = dy * a over the output's shape (the other operand broadcast to it), then summed
// to each input's shape. A float product rounded once is the same in T as in double.
void MulBackward(GradContext& ctx) {
  const Tensor* dy = ctx.output_grad(0);
  if (dy == nullptr) return;
  DispatchFloat(ctx, ctx.required_input(0).dtype(), [&](auto tag) {
    using T = decltype(tag);
    for (size_t k = 0; k < 2; ++k) {
      if (!ctx.wanted(k)) continue;
      const Tensor wide = OverOutput(ctx, 1 - k, *dy);
      Tensor full = Tensor::Uninitialized(dy->dtype(), dy->dims());
      const T* g = dy->template data<T>();
      const T* v = wide.template data<T>();
      T* o = full.template mutable_data<T>();
      for (int64_t i = 0; i < full.numel(); ++i) o[i] = g[i] * v[i];
      SetBroadcastGrad(ctx, k, full);
    }
  });
}

// Div: da = dy / b, db = -dy * a / b^2, over the output's shape (operands broadcast to it), then summed to
// each input's shape; computed in T.
void DivBackward(GradContext& ctx) {
  const Tensor* dy = ctx.output_grad(0);
  if (dy == nullptr) return;
  DispatchFloat(ctx, ctx.required_input(0).dtype(), [&](auto tag) {
    using T = decltype(tag);
    const Tensor b = OverOutput(ctx, 1, *dy);
    const T* g = dy->template data<T>();
    const T* pb = b.template data<T>();
    if (ctx.wanted(0)) {
      Tensor full = Tensor::Uninitialized(dy->dtype(), dy->dims());
      T* o = full.template mutable_data<T>();
      for (int64_t i = 0; i < full.numel(); ++i) o[i] = g[i] / pb[i];
      SetBroadcastGrad(ctx, 0, full);
    }
    if (ctx.wanted(1)) {
      const Tensor a = OverOutput(ctx, 0, *dy);
      const T* pa = a.template data<T>();
      Tensor full = Tensor::Uninitialized(dy->dtype(), dy->dims());
      T* o = full.template mutable_data<T>();
      for (int64_t i = 0; i < full.numel(); ++i) o[i] = -g[i] * pa[i] / (pb[i] * pb[i]);
      SetBroadcastGrad(ctx, 1, full);
    }
  });
}

// Sum and Mean (variadic): every input gets dy (divided by the input count for Mean).
void SumMeanBackward(GradContext& ctx, bool mean) {
  const size_t count = ctx.num_inputs();
  const double scale = mean ? 1.0 / static_cast<double>(count) : 1.0;
  DispatchFloat(ctx, ctx.required_input(0).dtype(), [&](auto tag) {
    BroadcastBackward<decltype(tag)>(ctx, count,
                                     [scale](size_t, int64_t, const std::vector<double>&) { return scale; });
  });
}

// Max and Min (variadic): the gradient goes to the input the forward fold selects; on a tie that is the
// later input, as in the kernel's left-to-right fold.
void MaxMinBackward(GradContext& ctx, bool is_max) {
  const size_t count = ctx.num_inputs();
  DispatchFloat(ctx, ctx.required_input(0).dtype(), [&](auto tag) {
    BroadcastBackward<decltype(tag)>(ctx, count,
                                     [is_max, count](size_t k, int64_t, const std::vector<double>& v) {
                                       size_t sel = 0;
                                       for (size_t j = 1; j < count; ++j) {
                                         const bool keep = is_max ? v[sel] > v[j] : v[sel] < v[j];
                                         if (!keep) sel = j;
                                       }
                                       return sel == k ? 1.0 : 0.0;
                                     });
  });
}

// Pow(a, b) = a^b: da = b a^(b-1), db = a^b ln a (zero where a <= 0, where a^b is not differentiable in b
// or, at a = 0, flat). The exponent may be of another numeric type; it gets a gradient only when float.
void PowBackward(GradContext& ctx) {
  const Tensor* dy = ctx.output_grad(0);
  if (dy == nullptr) return;
  const Tensor& a = ctx.required_input(0);
  const Tensor& b = ctx.required_input(1);
  const std::vector<int64_t>& out = dy->dims();
  const std::vector<int64_t> ao = BroadcastOffsets(AlignedDims(ctx, 0), out);
  const std::vector<int64_t> bo = BroadcastOffsets(AlignedDims(ctx, 1), out);
  std::vector<double> bv(static_cast<size_t>(b.numel()));
  if (IsFloatingPoint(b.dtype())) {
    for (int64_t i = 0; i < b.numel(); ++i) bv[static_cast<size_t>(i)] = FloatAt(b, i);
  } else {
    const std::vector<int64_t> ints = ReadInts(b);
    for (size_t i = 0; i < ints.size(); ++i) bv[i] = static_cast<double>(ints[i]);
  }
  DispatchFloat(ctx, a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* pa = a.data<T>();
    const T* g = dy->data<T>();
    if (ctx.wanted(0)) {
      Tensor full = Tensor::Uninitialized(a.dtype(), out);
      T* o = full.mutable_data<T>();
      for (int64_t i = 0; i < dy->numel(); ++i) {
        const double x = static_cast<double>(pa[ao[static_cast<size_t>(i)]]);
        const double e = bv[static_cast<size_t>(bo[static_cast<size_t>(i)])];
        o[i] = static_cast<T>(static_cast<double>(g[i]) * (e == 0 ? 0.0 : e * std::pow(x, e - 1)));
      }
      SetBroadcastGrad(ctx, 0, full);
    }
  });
  if (ctx.wanted(1)) {
    DispatchFloat(ctx, b.dtype(), [&](auto tag) {
      using T = decltype(tag);
      Tensor full = Tensor::Uninitialized(b.dtype(), out);
      T* o = full.mutable_data<T>();
      for (int64_t i = 0; i < dy->numel(); ++i) {
        const double x = FloatAt(a, ao[static_cast<size_t>(i)]);
        const double e = bv[static_cast<size_t>(bo[static_cast<size_t>(i)])];
        o[i] = static_cast<T>(x > 0 ? FloatAt(*dy, i) * std::pow(x, e) * std::log(x) : 0.0);
      }
      SetBroadcastGrad(ctx, 1, full);
    });
  }
}

// Where(cond, X, Y): X gets dy where cond holds, Y elsewhere; the condition gets none.
void WhereBackward(GradContext& ctx) {
  const Tensor* dy = ctx.output_grad(0);
  if (dy == nullptr) return;
  const Tensor& cond = ctx.required_input(0);
  if (cond.dtype() != DType::kBool)
    ctx.Fail(std::string("condition must be bool, got ") + DTypeName(cond.dtype()));
  const std::vector<int64_t> co = BroadcastOffsets(cond.dims(), dy->dims());
  const uint8_t* c = static_cast<const uint8_t*>(cond.raw());
  DispatchFloat(ctx, dy->dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* g = dy->data<T>();
    for (size_t k = 1; k <= 2; ++k) {
      if (!ctx.wanted(k)) continue;
      Tensor full = Tensor::Uninitialized(dy->dtype(), dy->dims());
      T* o = full.mutable_data<T>();
      for (int64_t i = 0; i < dy->numel(); ++i) {
        const bool take = c[co[static_cast<size_t>(i)]] != 0;
        o[i] = take == (k == 1) ? g[i] : T{0};
      }
      SetBroadcastGrad(ctx, k, full);
    }
  });
}

}  // namespace

void AddElementwiseGrads(BackwardRegistry& r) {
  r.Add({"Relu", 1, 1000, ReluBackward, {0}});
  r.Add({"LeakyRelu", 1, 1000, LeakyReluBackward, {0}});
  r.Add({"Sigmoid",
         1,
         1000,
         [](GradContext& c) { Unary(c, [](double, double y) { return y * (1 - y); }); },
         {0}});
  r.Add({"HardSigmoid", 1, 1000, HardSigmoidBackward, {0}});
  r.Add({"HardSwish", 14, 1000, HardSwishBackward, {0}});
  r.Add({"Tanh", 1, 1000, [](GradContext& c) { Unary(c, [](double, double y) { return 1 - y * y; }); }, {0}});
  r.Add({"Erf", 9, 1000, ErfBackward, {0}});
  r.Add({"Sqrt", 1, 1000, [](GradContext& c) { Unary(c, [](double, double y) { return 0.5 / y; }); }, {0}});
  r.Add({"Exp", 1, 1000, [](GradContext& c) { Unary(c, [](double, double y) { return y; }); }, {0}});
  r.Add({"Log", 1, 1000, [](GradContext& c) { Unary(c, [](double x, double) { return 1 / x; }); }, {0}});
  r.Add({"Neg", 1, 1000, [](GradContext& c) { Unary(c, [](double, double) { return -1.0; }); }, {0}});
  r.Add(
      {"Abs",
       1,
       1000,
       [](GradContext& c) { Unary(c, [](double x, double) { return x > 0 ? 1.0 : (x < 0 ? -1.0 : 0.0); }); },
       {0}});
  r.Add({"Reciprocal",
         1,
         1000,
         [](GradContext& c) { Unary(c, [](double, double y) { return -y * y; }); },
         {0}});
  r.Add({"Softplus",
         1,
         1000,
         [](GradContext& c) { Unary(c, [](double x, double) { return Logistic(x); }); },
         {0}});
  r.Add({"Gelu", 20, 1000, GeluBackward, {0}});
  r.Add({"Clip", 1, 1000, ClipBackward, {0}});
  r.Add({"Dropout", 1, 1000, DropoutBackward, {0}});
  r.Add({"Cast", 1, 1000, CastBackward, {0}});
  r.Add({"Add", 1, 1000, [](GradContext& c) { AddSubBackward(c, 1.0); }, {0, 1}});
  r.Add({"Sub", 1, 1000, [](GradContext& c) { AddSubBackward(c, -1.0); }, {0, 1}});
  r.Add({"Mul", 1, 1000, MulBackward, {0, 1}});
  r.Add({"Div", 1, 1000, DivBackward, {0, 1}});
  r.Add({"Pow", 1, 1000, PowBackward, {0, 1}});
  r.Add({"Sum", 1, 1000, [](GradContext& c) { SumMeanBackward(c, false); }, {}});
  r.Add({"Mean", 1, 1000, [](GradContext& c) { SumMeanBackward(c, true); }, {}});
  r.Add({"Max", 1, 1000, [](GradContext& c) { MaxMinBackward(c, true); }, {}});
  r.Add({"Min", 1, 1000, [](GradContext& c) { MaxMinBackward(c, false); }, {}});
  r.Add({"Where", 9, 1000, WhereBackward, {1, 2}});
}

}  // namespace compress::train
