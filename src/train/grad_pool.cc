// Backward rules of MaxPool, AveragePool, GlobalAveragePool and GlobalMaxPool (any spatial rank, float32
// and float64), by direct loops over every output and its window: O(outputs x kernel).
//
// The window geometry (auto_pad SAME_* / VALID / explicit pads, strides, dilations, ceil_mode) is resolved as
// the forward kernels resolve it; the output size is taken from the forward output.
// - MaxPool: dy[o] goes to the input position the forward kernel picked, the first largest tap of the window
//   in kernel order (ties are a kink; gradient checks keep inputs away from them). A window entirely in the
//   padding picks nothing. Output 1 (Indices) carries no gradient; storage_order only changes Indices.
// - AveragePool: dy[o] / count to every tap inside the input, count = taps inside the input, or with
//   count_include_pad taps inside the padded input (a ceil_mode window past the end padding counts less).
// - GlobalAveragePool: dy / plane size everywhere; GlobalMaxPool: dy to the first maximum of the plane.
// Planes are independent; they are split over threads in fixed chunks, each written by one chunk only.
#include <algorithm>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "compress/exec/thread_pool.h"
#include "train/grad_common.h"

namespace compress::train {
namespace {

// Planes per parallel task.
constexpr int64_t kPlanesPerChunk = 8;

struct PoolGeometry {
  std::vector<int64_t> in, out, kernel, strides, dilations, pads_begin, pads_end;
  int64_t planes = 0, in_size = 0, out_size = 0, kernel_size = 0;
  size_t rank() const { return in.size(); }
};

PoolGeometry ResolvePool(const GradContext& ctx, const Tensor& x, const Tensor& y) {
  if (x.rank() < 3 || y.rank() != x.rank() || y.dims()[0] != x.dims()[0] || y.dims()[1] != x.dims()[1]) {
    ctx.Fail("X " + ShapeToString(x.dims()) + " and Y " + ShapeToString(y.dims()) +
             " must be [N, C, spatial...] with the same N, C");
  }
  const Node& n = ctx.node();
  const size_t r = x.rank() - 2;
  PoolGeometry g;
  g.in.assign(x.dims().begin() + 2, x.dims().end());
  g.out.assign(y.dims().begin() + 2, y.dims().end());
  g.kernel = n.AttrInts("kernel_shape", {});
  g.strides = n.AttrInts("strides", std::vector<int64_t>(r, 1));
  g.dilations = n.AttrInts("dilations", std::vector<int64_t>(r, 1));
  const std::vector<int64_t> pads = n.AttrInts("pads", {});
  const std::string auto_pad = n.AttrString("auto_pad", "NOTSET");
  if (g.kernel.size() != r || g.strides.size() != r || g.dilations.size() != r ||
      (!pads.empty() && pads.size() != 2 * r)) {
    ctx.Fail("kernel_shape " + ShapeToString(g.kernel) + ", strides, dilations or pads do not match " +
             std::to_string(r) + " spatial dims");
  }
  g.pads_begin.assign(r, 0);
  g.pads_end.assign(r, 0);
  for (size_t d = 0; d < r; ++d) {
    if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
      const int64_t k_eff = (g.kernel[d] - 1) * g.dilations[d] + 1;
      const int64_t out = (g.in[d] + g.strides[d] - 1) / g.strides[d];
      const int64_t total = std::max<int64_t>(0, (out - 1) * g.strides[d] + k_eff - g.in[d]);
      g.pads_begin[d] = auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
      g.pads_end[d] = total - g.pads_begin[d];
    } else if (auto_pad == "NOTSET" && !pads.empty()) {
      g.pads_begin[d] = pads[d];
      g.pads_end[d] = pads[d + r];
    } else if (auto_pad != "NOTSET" && auto_pad != "VALID") {
      ctx.Fail("unknown auto_pad '" + auto_pad + "'");
    }
  }
  g.planes = x.dims()[0] * x.dims()[1];
  g.in_size = ShapeElementCount(g.in);
  g.out_size = ShapeElementCount(g.out);
  g.kernel_size = ShapeElementCount(g.kernel);
  return g;
}

// Per (output, tap): the offset into the input plane, -1 outside the input but inside the padded input,
// -2 outside the padded input. [out_size][kernel_size].
std::vector<int64_t> WindowTable(const PoolGeometry& g) {
  const size_t r = g.rank();
  const std::vector<int64_t> in_strides = RowStrides(g.in);
  std::vector<int64_t> table(static_cast<size_t>(g.out_size * g.kernel_size));
  std::vector<int64_t> oc(r), kc(r);
  for (int64_t o = 0; o < g.out_size; ++o) {
    int64_t rem = o;
    for (size_t d = r; d-- > 0;) {
      oc[d] = rem % g.out[d];
      rem /= g.out[d];
    }
    for (int64_t k = 0; k < g.kernel_size; ++k) {
      rem = k;
      int64_t offset = 0;
      bool inside = true, in_padded = true;
      for (size_t d = r; d-- > 0;) {
        kc[d] = rem % g.kernel[d];
        rem /= g.kernel[d];
        const int64_t pos = oc[d] * g.strides[d] - g.pads_begin[d] + kc[d] * g.dilations[d];
        inside = inside && pos >= 0 && pos < g.in[d];
        in_padded = in_padded && pos >= -g.pads_begin[d] && pos < g.in[d] + g.pads_end[d];
        offset += pos * in_strides[d];
      }
      table[static_cast<size_t>(o * g.kernel_size + k)] = inside ? offset : (in_padded ? -1 : -2);
    }
  }
  return table;
}

void ForChunks(GradContext& ctx, int64_t planes, const std::function<void(int64_t, int64_t)>& fn) {
  const int64_t chunks = (planes + kPlanesPerChunk - 1) / kPlanesPerChunk;
  auto run = [&](int64_t c0, int64_t c1) {
    fn(c0 * kPlanesPerChunk, std::min(planes, c1 * kPlanesPerChunk));
  };
  if (ctx.pool() != nullptr) ctx.pool()->ParallelFor(chunks, 1, run); else run(0, chunks);
}

template <bool kMax>
void PoolBackward(GradContext& ctx) {
  const Tensor* dy = ctx.output_grad(0);
  if (dy == nullptr || !ctx.wanted(0)) return;
  const Tensor& x = ctx.required_input(0);
  const PoolGeometry g = ResolvePool(ctx, x, *dy);
  const bool include_pad = ctx.node().AttrInt("count_include_pad", 0) != 0;
  const std::vector<int64_t> table = WindowTable(g);
  DispatchFloat(ctx, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    Tensor dx = Tensor::Uninitialized(x.dtype(), x.dims());  // each chunk zeroes its planes
    const T* px = x.data<T>();
    const T* pg = dy->data<T>();
    T* pdx = dx.mutable_data<T>();
    ForChunks(ctx, g.planes, [&](int64_t p0, int64_t p1) {
      std::fill(pdx + p0 * g.in_size, pdx + p1 * g.in_size, T(0));
      for (int64_t p = p0; p < p1; ++p) {
        const T* plane = px + p * g.in_size;
        T* dplane = pdx + p * g.in_size;
        for (int64_t o = 0; o < g.out_size; ++o) {
          const int64_t* taps = table.data() + o * g.kernel_size;
          const T grad = pg[p * g.out_size + o];
          if constexpr (kMax) {
            // Selects instead of branches (which of the taps wins is a coin toss on real data); the padding
            // test is the predictable one.
            int64_t best = -1;
            T best_value = T(0);
            for (int64_t k = 0; k < g.kernel_size; ++k) {
              const int64_t t = taps[k];
              if (t < 0) continue;
              const T v = plane[t];
              const bool take = best < 0 || v > best_value;
              best = take ? t : best;
              best_value = take ? v : best_value;
            }
            if (best >= 0) dplane[best] += grad;
          } else {
            int64_t inside = 0, padded = 0;
            for (int64_t k = 0; k < g.kernel_size; ++k) {
              inside += taps[k] >= 0 ? 1 : 0;
              padded += taps[k] >= -1 ? 1 : 0;
            }
            const int64_t count = include_pad ? padded : inside;
            if (count == 0) continue;
            const T share = static_cast<T>(static_cast<double>(grad) / static_cast<double>(count));
            for (int64_t k = 0; k < g.kernel_size; ++k) {
              if (taps[k] >= 0) dplane[taps[k]] += share;
            }
          }
        }
      }
    });
    ctx.SetInputGrad(0, std::move(dx));
  });
}

template <bool kMax>
void GlobalPoolBackward(GradContext& ctx) {
  const Tensor* dy = ctx.output_grad(0);
  if (dy == nullptr || !ctx.wanted(0)) return;
  const Tensor& x = ctx.required_input(0);
  if (x.rank() < 3) ctx.Fail("X must be [N, C, spatial...], got " + ShapeToString(x.dims()));
  const int64_t planes = x.dims()[0] * x.dims()[1];
  const int64_t size = x.numel() / std::max<int64_t>(1, planes);
  if (dy->numel() != planes) {
    ctx.Fail("dY " + ShapeToString(dy->dims()) + " must have one value per plane of X " + ShapeToString(x.dims()));
  }
  DispatchFloat(ctx, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    Tensor dx(x.dtype(), x.dims());
    const T* px = x.data<T>();
    const T* pg = dy->data<T>();
    T* pdx = dx.mutable_data<T>();
    ForChunks(ctx, planes, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        const T* plane = px + p * size;
        T* dplane = pdx + p * size;
        if constexpr (kMax) {
          std::fill(dplane, dplane + size, T(0));
          int64_t best = 0;
          for (int64_t i = 1; i < size; ++i) best = plane[i] > plane[best] ? i : best;
          if (size > 0) dplane[best] = pg[p];
        } else {
          const T share = static_cast<T>(static_cast<double>(pg[p]) / static_cast<double>(size));
          std::fill(dplane, dplane + size, share);
        }
      }
    });
    ctx.SetInputGrad(0, std::move(dx));
  });
}

}  // namespace

void AddPoolGrads(BackwardRegistry& r) {
  r.Add({"MaxPool", 1, 1000, PoolBackward<true>, {0}});
  r.Add({"AveragePool", 1, 1000, PoolBackward<false>, {0}});
  r.Add({"GlobalAveragePool", 1, 1000, GlobalPoolBackward<false>, {0}});
  r.Add({"GlobalMaxPool", 1, 1000, GlobalPoolBackward<true>, {0}});
}

}  // namespace compress::train
