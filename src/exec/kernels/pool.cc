// MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool.
//
// Reference kernels visit every kernel position of every output element (any spatial rank), accumulating
// averages in double. The fast MaxPool / AveragePool (float, 1-D and 2-D, MaxPool without Indices) work one
// plane at a time, row by row: the input rows under an output row are first combined (max or sum) into one
// row, vectorised, then each output takes its kernel columns from it over the range of outputs a column
// keeps inside the input, so the inner loops carry no bounds checks; 2x2 windows at stride 2 take both rows
// and the column pairs in one vectorised pass. The fast global pools reduce four lanes at a time in a fixed
// order. Planes are split over threads in chunks fixed by the shape.
#include <algorithm>
#include <cstring>
#include <limits>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "common.h"
#include "kernels.h"

namespace compress::kernels {

namespace {

struct PoolAttrs {
  WindowAttrs window;
  bool count_include_pad = false;
  bool column_major = false;  // storage_order of MaxPool's Indices
};

PoolAttrs ParsePoolAttrs(const KernelInfo& info) {
  PoolAttrs a;
  a.window = ParseWindowAttrs(info);
  if (a.window.kernel_shape.empty())
    ThrowInvalid("node " + info.node->Describe() + ": kernel_shape is required");
  a.count_include_pad = info.node->AttrInt("count_include_pad", 0) != 0;
  a.column_major = info.node->AttrInt("storage_order", 0) != 0;
  return a;
}

struct PoolShape {
  int64_t planes = 0;  // N * C
  WindowGeometry geo;
  int64_t in_size = 0, out_size = 0;
  std::vector<int64_t> y_dims;
};

PoolShape ResolvePool(const KernelContext& ctx, const PoolAttrs& a, const std::vector<int64_t>& x) {
  if (x.size() < 3) ctx.Fail("X must be [N, C, spatial...], got " + ShapeToString(x));
  PoolShape s;
  s.planes = x[0] * x[1];
  s.geo = ResolveWindow(ctx, a.window, {x.begin() + 2, x.end()}, a.window.kernel_shape);
  s.in_size = s.geo.in_size();
  s.out_size = s.geo.out_size();
  s.y_dims = {x[0], x[1]};
  s.y_dims.insert(s.y_dims.end(), s.geo.out.begin(), s.geo.out.end());
  return s;
}

bool WantsIndices(const KernelContext& ctx) {
  const auto& outs = ctx.node().outputs;
  return outs.size() > 1 && !outs[1].empty();
}

// ---------------------------------------------------------------------------------------------------------
// Reference kernels

// Calls fn(kernel position, spatial offset into the input plane, spatial position) for each kernel position
// of output o that lies inside the input, and returns how many positions lie inside the padded input.
template <typename Fn>
int64_t ForEachWindowTap(const WindowGeometry& g, const std::vector<int64_t>& out_coord,
                         const std::vector<int64_t>& kernel_coord, const std::vector<int64_t>& in_strides,
                         int64_t o, std::vector<int64_t>& pos, Fn&& fn) {
  const size_t r = g.rank();
  const int64_t kernel_size = g.kernel_size();
  int64_t padded = 0;
  for (int64_t k = 0; k < kernel_size; ++k) {
    int64_t offset = 0;
    bool inside = true, in_padded = true;
    for (size_t d = 0; d < r; ++d) {
      pos[d] = out_coord[static_cast<size_t>(o) * r + d] * g.strides[d] - g.pads_begin[d] +
               kernel_coord[static_cast<size_t>(k) * r + d] * g.dilations[d];
      inside = inside && pos[d] >= 0 && pos[d] < g.in[d];
      in_padded = in_padded && pos[d] >= -g.pads_begin[d] && pos[d] < g.in[d] + g.pads_end[d];
      offset += pos[d] * in_strides[d];
    }
    if (in_padded) ++padded;
    if (inside) fn(offset, pos);
  }
  return padded;
}

template <typename T>
void ReferenceMaxPool(KernelContext& ctx, const PoolAttrs& a) {
  const Tensor& x = ctx.required_input(0);
  const PoolShape s = ResolvePool(ctx, a, x.dims());
  const WindowGeometry& g = s.geo;
  const std::vector<int64_t> out_coord = Coordinates(g.out), kernel_coord = Coordinates(g.kernel);
  const std::vector<int64_t> in_strides = Strides(g.in);
  // Strides of the Indices' spatial flattening: row-major, or column-major for storage_order 1.
  std::vector<int64_t> index_strides = in_strides;
  if (a.column_major) {
    for (size_t d = 0; d < g.rank(); ++d) index_strides[d] = d == 0 ? 1 : index_strides[d - 1] * g.in[d - 1];
  }
  Tensor& y = ctx.Output(0, x.dtype(), s.y_dims);
  int64_t* indices =
      WantsIndices(ctx) ? ctx.Output(1, DType::kInt64, s.y_dims).mutable_data<int64_t>() : nullptr;
  const T* px = x.data<T>();
  T* py = y.mutable_data<T>();
  std::vector<int64_t> pos(g.rank());
  for (int64_t p = 0; p < s.planes; ++p) {
    const T* plane = px + p * s.in_size;
    for (int64_t o = 0; o < s.out_size; ++o) {
      T best = std::numeric_limits<T>::lowest();
      int64_t best_index = -1;
      ForEachWindowTap(g, out_coord, kernel_coord, in_strides, o, pos,
                       [&](int64_t offset, const std::vector<int64_t>& at) {
                         if (best_index < 0 || plane[offset] > best) {
                           best = plane[offset];
                           best_index = 0;
                           for (size_t d = 0; d < g.rank(); ++d) best_index += at[d] * index_strides[d];
                         }
                       });
      py[p * s.out_size + o] = best;
      if (indices != nullptr) indices[p * s.out_size + o] = best_index < 0 ? -1 : p * s.in_size + best_index;
    }
  }
}

template <typename T>
void ReferenceAveragePool(KernelContext& ctx, const PoolAttrs& a) {
  const Tensor& x = ctx.required_input(0);
  const PoolShape s = ResolvePool(ctx, a, x.dims());
  const WindowGeometry& g = s.geo;
  const std::vector<int64_t> out_coord = Coordinates(g.out), kernel_coord = Coordinates(g.kernel);
  const std::vector<int64_t> in_strides = Strides(g.in);
  Tensor& y = ctx.Output(0, x.dtype(), s.y_dims);
  const T* px = x.data<T>();
  T* py = y.mutable_data<T>();
  std::vector<int64_t> pos(g.rank());
  for (int64_t p = 0; p < s.planes; ++p) {
    const T* plane = px + p * s.in_size;
    for (int64_t o = 0; o < s.out_size; ++o) {
      double sum = 0;
      int64_t inside = 0;
      const int64_t padded = ForEachWindowTap(g, out_coord, kernel_coord, in_strides, o, pos,
                                              [&](int64_t offset, const std::vector<int64_t>&) {
                                                sum += static_cast<double>(plane[offset]);
                                                ++inside;
                                              });
      py[p * s.out_size + o] =
          static_cast<T>(sum / static_cast<double>(a.count_include_pad ? padded : inside));
    }
  }
}

// Global pools: one output per plane, spatial dims kept as 1.
template <typename T, bool kMax>
void GlobalPool(KernelContext& ctx) {
  const Tensor& x = ctx.required_input(0);
  if (x.rank() < 3) ctx.Fail("X must be [N, C, spatial...], got " + ShapeToString(x.dims()));
  std::vector<int64_t> y_dims(x.dims().size(), 1);
  y_dims[0] = x.dims()[0];
  y_dims[1] = x.dims()[1];
  const int64_t planes = y_dims[0] * y_dims[1];
  const int64_t size = x.numel() / std::max<int64_t>(1, planes);
  Tensor& y = ctx.Output(0, x.dtype(), y_dims);
  const T* px = x.data<T>();
  T* py = y.mutable_data<T>();
  for (int64_t p = 0; p < planes; ++p) {
    const T* plane = px + p * size;
    if constexpr (kMax) {
      T best = size > 0 ? plane[0] : std::numeric_limits<T>::lowest();
      for (int64_t i = 1; i < size; ++i) best = plane[i] > best ? plane[i] : best;
      py[p] = best;
    } else {
      double sum = 0;
      for (int64_t i = 0; i < size; ++i) sum += static_cast<double>(plane[i]);
      py[p] = static_cast<T>(sum / static_cast<double>(size));
    }
  }
}

template <typename Fn>
void DispatchPoolType(const KernelContext& ctx, DType t, bool allow_int8, Fn&& fn) {
  switch (t) {
    case DType::kFloat:
      fn(float{});
      break;
    case DType::kDouble:
      fn(double{});
      break;
    case DType::kInt8:
      if (allow_int8) {
        fn(int8_t{});
        break;
      }
      [[fallthrough]];
    case DType::kUInt8:
      if (allow_int8) {
        fn(uint8_t{});
        break;
      }
      [[fallthrough]];
    default:
      ctx.Fail(std::string("element type ") + DTypeName(t) + " is not supported");
  }
}

// ---------------------------------------------------------------------------------------------------------
// Fast kernels

// Per kernel column kw: the outputs [lo, hi) whose tap lies inside the input row.
struct TapRanges {
  std::vector<int64_t> lo, hi;
};

TapRanges ColumnTapRanges(const Window2D& q) {
  TapRanges r;
  r.lo.resize(static_cast<size_t>(q.kw));
  r.hi.resize(static_cast<size_t>(q.kw));
  for (int64_t kw = 0; kw < q.kw; ++kw) {
    ValidOutputRange(q.ow, q.iw, q.sw, q.pw, kw * q.dw, &r.lo[static_cast<size_t>(kw)],
                     &r.hi[static_cast<size_t>(kw)]);
  }
  return r;
}

template <bool kMax>
inline float Combine(float a, float b) {
  return kMax ? std::max(a, b) : a + b;
}

#if defined(__SSE2__)
template <bool kMax>
inline __m128 Combine(__m128 a, __m128 b) {
  return kMax ? _mm_max_ps(a, b) : _mm_add_ps(a, b);
}
#endif

// out[i] = op(a[i], b[i]), i < n (out may be a).
template <bool kMax>
void CombineRows(int64_t n, const float* a, const float* b, float* out) {
  int64_t i = 0;
#if defined(__SSE2__)
  for (; i + 4 <= n; i += 4) _mm_storeu_ps(out + i, Combine<kMax>(_mm_loadu_ps(a + i), _mm_loadu_ps(b + i)));
#endif
  for (; i < n; ++i) out[i] = Combine<kMax>(a[i], b[i]);
}

// One output row from an input row already reduced over the kernel rows: out[o] = op over the taps kw inside
// the row of row[o * sw - pw + kw * dw].
template <bool kMax>
void PoolRow(const Window2D& q, const TapRanges& r, const float* row, float init, float* out) {
  if (q.kw == 2 && q.sw == 2 && q.dw == 1 && q.pw == 0 && r.hi[1] == q.ow) {
    // Every window is a pair (row[2o], row[2o + 1]): split even and odd columns with shuffles.
    int64_t o = 0;
#if defined(__SSE2__)
    for (; o + 4 <= q.ow; o += 4) {
      const __m128 a = _mm_loadu_ps(row + 2 * o), b = _mm_loadu_ps(row + 2 * o + 4);
      _mm_storeu_ps(out + o, Combine<kMax>(_mm_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0)),
                                           _mm_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1))));
    }
#endif
    for (; o < q.ow; ++o) out[o] = Combine<kMax>(row[2 * o], row[2 * o + 1]);
    return;
  }
  std::fill(out, out + q.ow, init);
  for (int64_t kw = 0; kw < q.kw; ++kw) {
    const float* src = row + kw * q.dw - q.pw;
    for (int64_t o = r.lo[static_cast<size_t>(kw)]; o < r.hi[static_cast<size_t>(kw)]; ++o) {
      out[o] = Combine<kMax>(out[o], src[o * q.sw]);
    }
  }
}

// 2x2 max windows at stride 2 that lie inside the input: out[o] = max(x0[2o], x0[2o + 1], x1[2o], x1[2o +
// 1]). Four outputs per step; a last partial step is shifted back to end at ow, recomputing (max is
// idempotent).
void MaxPool2x2Row(int64_t ow, const float* x0, const float* x1, float* out) {
  int64_t o = 0;
#if defined(__SSE2__)
  auto step = [&](int64_t at) {
    const __m128 a = _mm_max_ps(_mm_loadu_ps(x0 + 2 * at), _mm_loadu_ps(x1 + 2 * at));
    const __m128 b = _mm_max_ps(_mm_loadu_ps(x0 + 2 * at + 4), _mm_loadu_ps(x1 + 2 * at + 4));
    _mm_storeu_ps(out + at, _mm_max_ps(_mm_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0)),
                                       _mm_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1))));
  };
  for (; o + 4 <= ow; o += 4) step(o);
  if (o < ow && ow >= 4) {
    step(ow - 4);
    o = ow;
  }
#endif
  for (; o < ow; ++o)
    out[o] = std::max(std::max(x0[2 * o], x0[2 * o + 1]), std::max(x1[2 * o], x1[2 * o + 1]));
}

bool IsPlain2x2Stride2(const Window2D& q) {
  return q.kh == 2 && q.kw == 2 && q.sh == 2 && q.sw == 2 && q.dh == 1 && q.dw == 1 && q.ph == 0 &&
         q.pw == 0 && 2 * q.oh <= q.ih && 2 * q.ow <= q.iw;
}

// One plane of a max (kMax) or sum pool over the taps inside the input; outputs with none are `init`.
// row: scratch of q.iw floats.
template <bool kMax>
void PoolPlane(const Window2D& q, const TapRanges& r, const float* x, float init, float* y, float* row) {
  for (int64_t oh = 0; oh < q.oh; ++oh) {
    float* out = y + oh * q.ow;
    const float* reduced = nullptr;  // the kernel rows combined so far
    for (int64_t kh = 0; kh < q.kh; ++kh) {
      const int64_t ih = oh * q.sh - q.ph + kh * q.dh;
      if (ih < 0 || ih >= q.ih) continue;
      const float* in = x + ih * q.iw;
      if (reduced != nullptr) CombineRows<kMax>(q.iw, reduced, in, row);
      reduced = reduced == nullptr ? in : row;
    }
    if (reduced == nullptr) {
      std::fill(out, out + q.ow, init);
    } else {
      PoolRow<kMax>(q, r, reduced, init, out);
    }
  }
}

// Taps of each output along one axis that count for the average.
std::vector<float> AxisCounts(int64_t out, int64_t in, int64_t k, int64_t s, int64_t d, int64_t pad_begin,
                              int64_t pad_end, bool include_pad) {
  std::vector<float> c(static_cast<size_t>(out));
  for (int64_t o = 0; o < out; ++o) {
    int64_t n = 0;
    for (int64_t t = 0; t < k; ++t) {
      const int64_t pos = o * s - pad_begin + t * d;
      n += include_pad ? (pos >= -pad_begin && pos < in + pad_end) : (pos >= 0 && pos < in);
    }
    c[static_cast<size_t>(o)] = static_cast<float>(n);
  }
  return c;
}

// Planes per parallel chunk: enough work to outweigh scheduling, fixed by the shape alone.
int64_t PlaneGrain(int64_t work_per_plane) {
  return std::max<int64_t>(1, (1 << 15) / std::max<int64_t>(1, work_per_plane));
}

bool FastPoolApplies(const Tensor& x) {
  return x.dtype() == DType::kFloat && (x.rank() == 3 || x.rank() == 4);
}

void FastMaxPool(KernelContext& ctx, const PoolAttrs& a) {
  const Tensor& x = ctx.required_input(0);
  if (!FastPoolApplies(x) || WantsIndices(ctx)) {
    DispatchPoolType(ctx, x.dtype(), true, [&](auto tag) { ReferenceMaxPool<decltype(tag)>(ctx, a); });
    return;
  }
  const PoolShape s = ResolvePool(ctx, a, x.dims());
  const Window2D q = ToWindow2D(s.geo);
  const TapRanges r = ColumnTapRanges(q);
  Tensor& y = ctx.OutputForWrite(0, DType::kFloat, s.y_dims);
  const float* px = x.data<float>();
  float* py = y.mutable_data<float>();
  ctx.pool().ParallelFor(s.planes, PlaneGrain(s.out_size * s.geo.kernel_size()), [&](int64_t p0, int64_t p1) {
    std::vector<float> row(static_cast<size_t>(q.iw));
    for (int64_t p = p0; p < p1; ++p) {
      if (IsPlain2x2Stride2(q)) {
        const float* plane = px + p * s.in_size;
        for (int64_t oh = 0; oh < q.oh; ++oh) {
          MaxPool2x2Row(q.ow, plane + 2 * oh * q.iw, plane + (2 * oh + 1) * q.iw,
                        py + p * s.out_size + oh * q.ow);
        }
        continue;
      }
      PoolPlane<true>(q, r, px + p * s.in_size, std::numeric_limits<float>::lowest(), py + p * s.out_size,
                      row.data());
    }
  });
}

void FastAveragePool(KernelContext& ctx, const PoolAttrs& a) {
  const Tensor& x = ctx.required_input(0);
  if (!FastPoolApplies(x)) {
    DispatchPoolType(ctx, x.dtype(), false, [&](auto tag) { ReferenceAveragePool<decltype(tag)>(ctx, a); });
    return;
  }
  const PoolShape s = ResolvePool(ctx, a, x.dims());
  const WindowGeometry& g = s.geo;
  const Window2D q = ToWindow2D(g);
  const TapRanges r = ColumnTapRanges(q);
  const size_t l = g.rank() - 1;
  const std::vector<float> row_counts =
      g.rank() == 2
          ? AxisCounts(q.oh, q.ih, q.kh, q.sh, q.dh, g.pads_begin[0], g.pads_end[0], a.count_include_pad)
          : std::vector<float>{1.0f};
  const std::vector<float> col_counts =
      AxisCounts(q.ow, q.iw, q.kw, q.sw, q.dw, g.pads_begin[l], g.pads_end[l], a.count_include_pad);
  Tensor& y = ctx.OutputForWrite(0, DType::kFloat, s.y_dims);
  const float* px = x.data<float>();
  float* py = y.mutable_data<float>();
  ctx.pool().ParallelFor(s.planes, PlaneGrain(s.out_size * g.kernel_size()), [&](int64_t p0, int64_t p1) {
    std::vector<float> row(static_cast<size_t>(q.iw));
    for (int64_t p = p0; p < p1; ++p) {
      float* out = py + p * s.out_size;
      PoolPlane<false>(q, r, px + p * s.in_size, 0.0f, out, row.data());
      for (int64_t oh = 0; oh < q.oh; ++oh) {
        for (int64_t ow = 0; ow < q.ow; ++ow) {
          out[oh * q.ow + ow] /= row_counts[static_cast<size_t>(oh)] * col_counts[static_cast<size_t>(ow)];
        }
      }
    }
  });
}

// Global pools over planes of n floats: four lane-wise partial results, then combined pairwise (a fixed
// order).
template <bool kMax>
float ReducePlane(const float* x, int64_t n) {
  int64_t i = 0;
  float result = kMax ? std::numeric_limits<float>::lowest() : 0.0f;
#if defined(__SSE2__)
  if (n >= 4) {
    __m128 acc = _mm_loadu_ps(x);
    for (i = 4; i + 4 <= n; i += 4) acc = Combine<kMax>(acc, _mm_loadu_ps(x + i));
    alignas(16) float lanes[4];
    _mm_store_ps(lanes, acc);
    result = Combine<kMax>(Combine<kMax>(lanes[0], lanes[1]), Combine<kMax>(lanes[2], lanes[3]));
  }
#endif
  for (; i < n; ++i) result = Combine<kMax>(result, x[i]);
  return result;
}

template <bool kMax>
void FastGlobalPool(KernelContext& ctx) {
  const Tensor& x = ctx.required_input(0);
  if (x.dtype() != DType::kFloat) {
    DispatchPoolType(ctx, x.dtype(), false, [&](auto tag) { GlobalPool<decltype(tag), kMax>(ctx); });
    return;
  }
  if (x.rank() < 3) ctx.Fail("X must be [N, C, spatial...], got " + ShapeToString(x.dims()));
  std::vector<int64_t> y_dims(x.dims().size(), 1);
  y_dims[0] = x.dims()[0];
  y_dims[1] = x.dims()[1];
  const int64_t planes = y_dims[0] * y_dims[1];
  const int64_t size = x.numel() / std::max<int64_t>(1, planes);
  Tensor& y = ctx.OutputForWrite(0, DType::kFloat, y_dims);
  const float* px = x.data<float>();
  float* py = y.mutable_data<float>();
  ctx.pool().ParallelFor(planes, PlaneGrain(size), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const float v = ReducePlane<kMax>(px + p * size, size);
      py[p] = kMax ? v : v / static_cast<float>(size);
    }
  });
}

}  // namespace

void RegisterPoolKernels(KernelRegistry& r) {
  AddKernel(r, "MaxPool", 1, 1000, [](const KernelInfo& info) {
    const PoolAttrs a = ParsePoolAttrs(info);
    return MakeKernel([a](KernelContext& ctx) {
      DispatchPoolType(ctx, ctx.required_input(0).dtype(), true,
                       [&](auto tag) { ReferenceMaxPool<decltype(tag)>(ctx, a); });
    });
  });
  AddKernel(
      r, "MaxPool", 1, 1000,
      [](const KernelInfo& info) {
        const PoolAttrs a = ParsePoolAttrs(info);
        return MakeKernel([a](KernelContext& ctx) { FastMaxPool(ctx, a); });
      },
      KernelVariant::kFast);
  AddKernel(r, "AveragePool", 1, 1000, [](const KernelInfo& info) {
    const PoolAttrs a = ParsePoolAttrs(info);
    return MakeKernel([a](KernelContext& ctx) {
      DispatchPoolType(ctx, ctx.required_input(0).dtype(), false,
                       [&](auto tag) { ReferenceAveragePool<decltype(tag)>(ctx, a); });
    });
  });
  AddKernel(
      r, "AveragePool", 1, 1000,
      [](const KernelInfo& info) {
        const PoolAttrs a = ParsePoolAttrs(info);
        return MakeKernel([a](KernelContext& ctx) { FastAveragePool(ctx, a); });
      },
      KernelVariant::kFast);
  AddKernel(r, "GlobalAveragePool", 1, 1000, [](const KernelInfo&) {
    return MakeKernel([](KernelContext& ctx) {
      DispatchPoolType(ctx, ctx.required_input(0).dtype(), false,
                       [&](auto tag) { GlobalPool<decltype(tag), false>(ctx); });
    });
  });
  AddKernel(r, "GlobalMaxPool", 1, 1000, [](const KernelInfo&) {
    return MakeKernel([](KernelContext& ctx) {
      DispatchPoolType(ctx, ctx.required_input(0).dtype(), false,
                       [&](auto tag) { GlobalPool<decltype(tag), true>(ctx); });
    });
  });
  AddKernel(
      r, "GlobalAveragePool", 1, 1000, [](const KernelInfo&) { return MakeKernel(FastGlobalPool<false>); },
      KernelVariant::kFast);
  AddKernel(
      r, "GlobalMaxPool", 1, 1000, [](const KernelInfo&) { return MakeKernel(FastGlobalPool<true>); },
      KernelVariant::kFast);
}

}  // namespace compress::kernels
