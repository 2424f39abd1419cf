// Backward rules of Conv and ConvTranspose (any number of spatial dims, float32 and float64).
//
// Conv: y[n, m, o] = b[m] + sum over input channels c of group(m) and kernel taps k of
//   x[n, c, o * stride - pad_begin + k * dilation] * w[m, c, k]   (positions outside x add nothing), so
//   dx[n, c, p] = sum of dy[n, m, o] w[m, c, k] over the (m, o, k) that read p,
//   dw[m, c, k] = sum over n, o of dy[n, m, o] x[n, c, pos(o, k)],   db[m] = sum over n, o of dy[n, m, o].
// ConvTranspose scatters instead: y[n, m, i * stride - pad_begin + k * dilation] += x[n, c, i] w[c, co, k]
//   (m = group(c) * Cout_g + co). It is the adjoint of a Conv whose input is y and whose output is x, with the
//   same weights, strides, dilations and begin pads, so dx is that Conv applied to dy, dw is that Conv's
//   weight gradient with x in the role of the output gradient, and db[m] sums dy.
//
// Two forms of the same arithmetic:
// - Reference: direct loops over every (image, output channel, output position, input channel, tap), as the
//   reference forward kernels do; obviously correct, slow.
// - Fast (the registered rules): per image and group, the im2col matrix col[Cin_g * K, out] of the conv input
//   side gives dW_g^T += col dY_g^T and dcol = W_g^T dY_g (GEMMs: Eigen in float64, the executor's GEMM in
//   float32), and col2im adds dcol into dX. Images are cut into chunks of a fixed size; each chunk
//   accumulates its own partial dW (and dB), and the partials are summed in chunk order, so results do not
//   depend on the number of threads.
// Both forms are exposed (namespace conv_grad) for the tests that compare them.
#include <Eigen/Dense>
#include <algorithm>
#include <string>
#include <type_traits>
#include <vector>

#include "compress/exec/thread_pool.h"
#include "exec/kernels/common.h"
#include "train/grad_common.h"

namespace compress::train {
namespace conv_grad {

void ConvBackwardReference(GradContext& ctx);
void ConvBackwardFast(GradContext& ctx);
void ConvTransposeBackwardReference(GradContext& ctx);
void ConvTransposeBackwardFast(GradContext& ctx);

}  // namespace conv_grad

namespace {

namespace gemm = kernels::gemm;

template <typename T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using ConstMap = Eigen::Map<const RowMat<T>>;
template <typename T>
using MutMap = Eigen::Map<RowMat<T>>;

// Images per task of the fast form: fixed, so that the partial sums (and their order) depend only on the
// shape. 4 images give 16 tasks at batch 64, enough to balance a few threads, and few partial weight buffers.
constexpr int64_t kImagesPerChunk = 4;

// A convolution as the fast core sees it: input side A [N, Cin, in...], output side D [N, M, out...],
// weights [M, Cin_g, kernel...], `group` groups.
struct ConvProblem {
  int64_t batch = 0, in_channels = 0, out_channels = 0, group = 1, cin_g = 0, cout_g = 0;
  std::vector<int64_t> in, out, kernel, strides, dilations, pads_begin;
  int64_t in_size = 0, out_size = 0, kernel_size = 0;
  size_t rank() const { return in.size(); }
};

std::string Dims(const std::vector<int64_t>& d) { return ShapeToString(d); }

// Strides, dilations (default 1) and their lengths against the spatial rank.
void ReadStridesDilations(const GradContext& ctx, size_t r, ConvProblem& p) {
  const Node& n = ctx.node();
  p.strides = n.AttrInts("strides", std::vector<int64_t>(r, 1));
  p.dilations = n.AttrInts("dilations", std::vector<int64_t>(r, 1));
  if (p.strides.size() != r || p.dilations.size() != r) {
    ctx.Fail("strides " + Dims(p.strides) + " and dilations " + Dims(p.dilations) + " must have " +
             std::to_string(r) + " values");
  }
  for (size_t d = 0; d < r; ++d) {
    if (p.strides[d] <= 0 || p.dilations[d] <= 0) ctx.Fail("strides and dilations must be positive");
  }
}

void CheckKernelShape(const GradContext& ctx, const std::vector<int64_t>& kernel) {
  const std::vector<int64_t> ks = ctx.node().AttrInts("kernel_shape", {});
  if (!ks.empty() && ks != kernel) ctx.Fail("kernel_shape " + Dims(ks) + " does not match W " + Dims(kernel));
}

void Finish(ConvProblem& p) {
  p.in_size = ShapeElementCount(p.in);
  p.out_size = ShapeElementCount(p.out);
  p.kernel_size = ShapeElementCount(p.kernel);
}

// Conv: A = X, D = Y (dims from the forward output), begin pads as the forward kernel resolves them.
ConvProblem ConvGeometry(const GradContext& ctx, const Tensor& x, const Tensor& w, const Tensor& y) {
  if (x.rank() < 3 || w.rank() != x.rank() || y.rank() != x.rank()) {
    ctx.Fail("X " + Dims(x.dims()) + " and W " + Dims(w.dims()) + " must be [N, C, spatial...] of one rank");
  }
  const size_t r = x.rank() - 2;
  ConvProblem p;
  p.group = ctx.node().AttrInt("group", 1);
  p.batch = x.dims()[0];
  p.in_channels = x.dims()[1];
  p.out_channels = w.dims()[0];
  if (p.group <= 0 || p.in_channels != w.dims()[1] * p.group || p.out_channels % p.group != 0 ||
      y.dims()[1] != p.out_channels || y.dims()[0] != p.batch) {
    ctx.Fail("X " + Dims(x.dims()) + ", W " + Dims(w.dims()) + " and Y " + Dims(y.dims()) +
             " do not agree with group " + std::to_string(p.group));
  }
  p.cin_g = w.dims()[1];
  p.cout_g = p.out_channels / p.group;
  p.in.assign(x.dims().begin() + 2, x.dims().end());
  p.out.assign(y.dims().begin() + 2, y.dims().end());
  p.kernel.assign(w.dims().begin() + 2, w.dims().end());
  CheckKernelShape(ctx, p.kernel);
  ReadStridesDilations(ctx, r, p);
  const std::string auto_pad = ctx.node().AttrString("auto_pad", "NOTSET");
  const std::vector<int64_t> pads = ctx.node().AttrInts("pads", {});
  if (!pads.empty() && pads.size() != 2 * r) ctx.Fail("pads " + Dims(pads) + " must have " + std::to_string(2 * r) + " values");
  p.pads_begin.assign(r, 0);
  for (size_t d = 0; d < r; ++d) {
    if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
      const int64_t k_eff = (p.kernel[d] - 1) * p.dilations[d] + 1;
      const int64_t out = (p.in[d] + p.strides[d] - 1) / p.strides[d];
      const int64_t total = std::max<int64_t>(0, (out - 1) * p.strides[d] + k_eff - p.in[d]);
      p.pads_begin[d] = auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
    } else if (auto_pad == "NOTSET" && !pads.empty()) {
      p.pads_begin[d] = pads[d];
    } else if (auto_pad != "NOTSET" && auto_pad != "VALID") {
      ctx.Fail("unknown auto_pad '" + auto_pad + "'");
    }
  }
  Finish(p);
  return p;
}

// Floor division by 2 (also for negative totals), as the forward kernel splits ConvTranspose pads.
int64_t FloorHalf(int64_t v) { return v >= 0 ? v / 2 : -((-v + 1) / 2); }

// ConvTranspose as the adjoint Conv: A = Y [N, M_y, out...], D = X [N, C_x, in...], weights [C_x, Cout_g, k].
ConvProblem ConvTransposeGeometry(const GradContext& ctx, const Tensor& x, const Tensor& w, const Tensor& y) {
  if (x.rank() < 3 || w.rank() != x.rank() || y.rank() != x.rank()) {
    ctx.Fail("X " + Dims(x.dims()) + " and W " + Dims(w.dims()) + " must be [N, C, spatial...] of one rank");
  }
  const size_t r = x.rank() - 2;
  ConvProblem p;
  p.group = ctx.node().AttrInt("group", 1);
  p.batch = x.dims()[0];
  p.out_channels = x.dims()[1];  // conv output side: X
  if (p.group <= 0 || w.dims()[0] != p.out_channels || p.out_channels % p.group != 0 ||
      y.dims()[1] != w.dims()[1] * p.group || y.dims()[0] != p.batch) {
    ctx.Fail("X " + Dims(x.dims()) + ", W " + Dims(w.dims()) + " and Y " + Dims(y.dims()) +
             " do not agree with group " + std::to_string(p.group));
  }
  p.cin_g = w.dims()[1];
  p.in_channels = p.cin_g * p.group;
  p.cout_g = p.out_channels / p.group;
  p.in.assign(y.dims().begin() + 2, y.dims().end());
  p.out.assign(x.dims().begin() + 2, x.dims().end());
  p.kernel.assign(w.dims().begin() + 2, w.dims().end());
  CheckKernelShape(ctx, p.kernel);
  ReadStridesDilations(ctx, r, p);
  const Node& n = ctx.node();
  const std::string auto_pad = n.AttrString("auto_pad", "NOTSET");
  const std::vector<int64_t> pads = n.AttrInts("pads", {});
  std::vector<int64_t> out_pad = n.AttrInts("output_padding", std::vector<int64_t>(r, 0));
  std::vector<int64_t> requested = n.AttrInts("output_shape", {});
  if (requested.size() == r + 2) requested.erase(requested.begin(), requested.begin() + 2);
  if (out_pad.size() != r || (!pads.empty() && pads.size() != 2 * r) || (!requested.empty() && requested.size() != r)) {
    ctx.Fail("output_padding, pads or output_shape do not match " + std::to_string(r) + " spatial dims");
  }
  const bool same = auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER";
  p.pads_begin.assign(r, 0);
  for (size_t d = 0; d < r; ++d) {
    // x position i reaches y position i * stride - pad_begin + k * dilation (the forward kernel's split).
    const int64_t full = p.strides[d] * (p.out[d] - 1) + out_pad[d] + (p.kernel[d] - 1) * p.dilations[d] + 1;
    if (!requested.empty() || same) {
      const int64_t total = full - p.in[d];
      p.pads_begin[d] = auto_pad == "SAME_UPPER" ? FloorHalf(total) : total - FloorHalf(total);
    } else if (auto_pad == "NOTSET" && !pads.empty()) {
      p.pads_begin[d] = pads[d];
    }
  }
  Finish(p);
  return p;
}

void CheckBias(const GradContext& ctx, int64_t channels) {
  const Tensor* b = ctx.input(2);
  if (b != nullptr && (b->rank() != 1 || b->numel() != channels)) {
    ctx.Fail("bias B " + Dims(b->dims()) + " must be [" + std::to_string(channels) + "]");
  }
}

// db[c] = sum over images and positions of g[n, c, ...], by chunks of images summed in chunk order.
template <typename T>
Tensor ChannelSums(ThreadPool* pool, const Tensor& g) {
  const int64_t n = g.dims()[0], c = g.dims()[1];
  const int64_t size = g.numel() / std::max<int64_t>(1, n * c);
  const int64_t chunks = (n + kImagesPerChunk - 1) / kImagesPerChunk;
  std::vector<T> part(static_cast<size_t>(chunks * c), T(0));
  const T* pg = g.data<T>();
  auto run = [&](int64_t c0, int64_t c1) {
    for (int64_t ch = c0; ch < c1; ++ch) {
      T* acc = part.data() + ch * c;
      for (int64_t i = ch * kImagesPerChunk; i < std::min(n, (ch + 1) * kImagesPerChunk); ++i) {
        for (int64_t m = 0; m < c; ++m) {
          const T* row = pg + (i * c + m) * size;
          T s = 0;
          for (int64_t o = 0; o < size; ++o) s += row[o];
          acc[m] += s;
        }
      }
    }
  };
  if (pool != nullptr) pool->ParallelFor(chunks, 1, run); else run(0, chunks);
  Tensor db(g.dtype(), {c});
  T* out = db.mutable_data<T>();
  std::fill(out, out + c, T(0));
  for (int64_t ch = 0; ch < chunks; ++ch) {
    for (int64_t m = 0; m < c; ++m) out[m] += part[static_cast<size_t>(ch * c + m)];
  }
  return db;
}

// The input positions a kernel tap reads along one output row (all but the last spatial dim fixed): for
// output columns ow in [lo, hi) the tap reads plane offset base + ow * stride; elsewhere padding.
struct TapRun {
  int64_t base = 0, lo = 0, hi = 0;
};

// One run per (kernel tap, output row): [kernel_size][out_size / out_last].
std::vector<TapRun> TapRuns(const ConvProblem& p) {
  const size_t r = p.rank(), last = r - 1;
  const int64_t ow_n = p.out[last], kw_n = p.kernel[last];
  const int64_t rows = p.out_size / std::max<int64_t>(1, ow_n), krows = p.kernel_size / kw_n;
  const int64_t s = p.strides[last], pad = p.pads_begin[last], dil = p.dilations[last], in_w = p.in[last];
  const std::vector<int64_t> in_strides = RowStrides(p.in);
  std::vector<TapRun> runs(static_cast<size_t>(p.kernel_size * rows));
  std::vector<int64_t> oc(r, 0), kc(r, 0);
  for (int64_t kr = 0; kr < krows; ++kr) {
    int64_t rem = kr;
    for (size_t d = last; d-- > 0;) {
      kc[d] = rem % p.kernel[d];
      rem /= p.kernel[d];
    }
    for (int64_t orow = 0; orow < rows; ++orow) {
      rem = orow;
      int64_t offset = 0;
      bool inside = true;
      for (size_t d = last; d-- > 0;) {
        oc[d] = rem % p.out[d];
        rem /= p.out[d];
        const int64_t pos = oc[d] * p.strides[d] - p.pads_begin[d] + kc[d] * p.dilations[d];
        inside = inside && pos >= 0 && pos < p.in[d];
        offset += pos * in_strides[d];
      }
      for (int64_t kw = 0; kw < kw_n; ++kw) {
        TapRun& run = runs[static_cast<size_t>((kr * kw_n + kw) * rows + orow)];
        if (!inside) continue;
        // Columns with ow * s - pad + kw * dil in [0, in_w).
        const int64_t first = pad - kw * dil, last_pos = in_w - 1 + pad - kw * dil;
        run.lo = first <= 0 ? 0 : (first + s - 1) / s;
        run.hi = last_pos < 0 ? 0 : std::min(ow_n, last_pos / s + 1);
        run.lo = std::min(run.lo, run.hi);
        run.base = offset - pad + kw * dil;
      }
    }
  }
  return runs;
}

// col[(c, k), o] = a[c, position tap k reads at output o] (0 where it reads padding), for the Cin_g channels
// at `a`: per output row a zero head, a (strided) copy, a zero tail.
template <typename T>
void Im2Col(const ConvProblem& p, const std::vector<TapRun>& runs, const T* a, T* col) {
  const int64_t ow_n = p.out.back(), rows = p.out_size / std::max<int64_t>(1, ow_n), s = p.strides.back();
  for (int64_t c = 0; c < p.cin_g; ++c) {
    const T* src = a + c * p.in_size;
    for (int64_t k = 0; k < p.kernel_size; ++k) {
      T* dst = col + (c * p.kernel_size + k) * p.out_size;
      const TapRun* run = runs.data() + k * rows;
      for (int64_t orow = 0; orow < rows; ++orow, dst += ow_n) {
        const TapRun& q = run[orow];
        std::fill(dst, dst + q.lo, T(0));
        if (s == 1) {
          std::copy(src + q.base + q.lo, src + q.base + q.hi, dst + q.lo);
        } else {
          for (int64_t ow = q.lo; ow < q.hi; ++ow) dst[ow] = src[q.base + ow * s];
        }
        std::fill(dst + q.hi, dst + ow_n, T(0));
      }
    }
  }
}

// da[c, position tap k reads at output o] += col[(c, k), o]: the adjoint of Im2Col.
template <typename T>
void Col2Im(const ConvProblem& p, const std::vector<TapRun>& runs, const T* col, T* da) {
  const int64_t ow_n = p.out.back(), rows = p.out_size / std::max<int64_t>(1, ow_n), s = p.strides.back();
  for (int64_t c = 0; c < p.cin_g; ++c) {
    T* dst = da + c * p.in_size;
    for (int64_t k = 0; k < p.kernel_size; ++k) {
      const T* src = col + (c * p.kernel_size + k) * p.out_size;
      const TapRun* run = runs.data() + k * rows;
      for (int64_t orow = 0; orow < rows; ++orow, src += ow_n) {
        const TapRun& q = run[orow];
        for (int64_t ow = q.lo; ow < q.hi; ++ow) dst[q.base + ow * s] += src[ow];
      }
    }
  }
}

// The fast core. A [N, Cin, in], W [M, Cin_g, K], D [N, M, out]; each of the outputs may be null:
//   dA = col2im(W_g^T D_g)           (Conv: dX from dY)
//   dW = sum over images D_g col(A)^T (Conv: D = dY, A = X; ConvTranspose: D = X, A = dY), computed as its
//        transpose col(A) D_g^T so that col is read in place and only the small D_g is packed
//   F  = W_g col(A)                   (ConvTranspose: dX = Conv(dY, W))
// float64 multiplies with Eigen; float32 with the executor's GEMM (the one the forward Conv uses, with
// AVX2/FMA micro-kernels chosen at run time where the CPU has them, which the SSE2 build of Eigen lacks).
// Either GEMM sums every element in an order fixed by the shape, so chunks are thread-independent.
template <typename T>
void FastCore(ThreadPool* pool, const ConvProblem& p, const T* A, const T* W, const T* D, T* dA, T* dW, T* F) {
  const std::vector<TapRun> runs = TapRuns(p);
  const int64_t kc = p.cin_g * p.kernel_size;  // GEMM depth
  const int64_t wsize = p.out_channels * kc;
  const int64_t chunks = (p.batch + kImagesPerChunk - 1) / kImagesPerChunk;
  std::vector<T> part_w(dW != nullptr ? static_cast<size_t>(chunks * wsize) : 0, T(0));
  constexpr bool kFloat = std::is_same_v<T, float>;
  // float32: W_g^T packed once per group as the left operand of dcol = W_g^T D_g.
  const int64_t wt_size = gemm::PackedASize(kc, p.cout_g);
  gemm::AlignedFloats wt_packed;
  if constexpr (kFloat) {
    if (dA != nullptr) {
      wt_packed = gemm::AlignedFloats(p.group * wt_size);
      for (int64_t g = 0; g < p.group; ++g) {
        gemm::PackA(W + g * p.cout_g * kc, 1, kc, kc, p.cout_g, 1.0f, wt_packed.data() + g * wt_size);
      }
    }
  }
  auto run = [&](int64_t c0, int64_t c1) {
    std::vector<T> col(static_cast<size_t>(kc * p.out_size));
    gemm::AlignedFloats packed;  // float32: the right operand of one product
    if constexpr (kFloat) {
      packed = gemm::AlignedFloats(std::max(gemm::PackedBSize(p.out_size, p.cout_g),
                                            gemm::PackedBSize(std::max(kc, p.cout_g), p.out_size)));
    }
    for (int64_t ch = c0; ch < c1; ++ch) {
      for (int64_t n = ch * kImagesPerChunk; n < std::min(p.batch, (ch + 1) * kImagesPerChunk); ++n) {
        for (int64_t g = 0; g < p.group; ++g) {
          const int64_t a0 = (n * p.in_channels + g * p.cin_g) * p.in_size;
          const int64_t d0 = (n * p.out_channels + g * p.cout_g) * p.out_size;
          const T* wg = W + g * p.cout_g * kc;
          if (dW != nullptr || F != nullptr) Im2Col(p, runs, A + a0, col.data());
          if (dW != nullptr) {
            // dW_g^T [kc, cout_g] += col [kc, out] x D_g^T [out, cout_g]
            T* pw = part_w.data() + ch * wsize + g * p.cout_g * kc;
            if constexpr (kFloat) {
              gemm::PackB(D + d0, 1, p.out_size, p.out_size, p.cout_g, packed.data());
              gemm::Multiply(kc, p.cout_g, p.out_size, gemm::AView{col.data(), p.out_size},
                             gemm::BView{packed.data(), gemm::kNr, p.out_size * gemm::kNr}, pw, p.cout_g,
                             gemm::Init::kAccumulate);
            } else {
              MutMap<T>(pw, kc, p.cout_g).noalias() +=
                  ConstMap<T>(col.data(), kc, p.out_size) * ConstMap<T>(D + d0, p.cout_g, p.out_size).transpose();
            }
          }
          if (F != nullptr) {
            // [cout_g, out] = W_g [cout_g, kc] x col [kc, out]
            if constexpr (kFloat) {
              gemm::PackB(col.data(), p.out_size, 1, kc, p.out_size, packed.data());
              gemm::Multiply(p.cout_g, p.out_size, kc, gemm::AView{wg, kc},
                             gemm::BView{packed.data(), gemm::kNr, kc * gemm::kNr}, F + d0, p.out_size,
                             gemm::Init::kZero);
            } else {
              MutMap<T>(F + d0, p.cout_g, p.out_size).noalias() =
                  ConstMap<T>(wg, p.cout_g, kc) * ConstMap<T>(col.data(), kc, p.out_size);
            }
          }
          if (dA != nullptr) {
            // dcol [kc, out] = W_g^T [kc, cout_g] x D_g [cout_g, out]
            if constexpr (kFloat) {
              gemm::PackB(D + d0, p.out_size, 1, p.cout_g, p.out_size, packed.data());
              gemm::Multiply(kc, p.out_size, p.cout_g, gemm::AView{wt_packed.data() + g * wt_size},
                             gemm::BView{packed.data(), gemm::kNr, p.cout_g * gemm::kNr}, col.data(), p.out_size,
                             gemm::Init::kZero);
            } else {
              MutMap<T>(col.data(), kc, p.out_size).noalias() =
                  ConstMap<T>(wg, p.cout_g, kc).transpose() * ConstMap<T>(D + d0, p.cout_g, p.out_size);
            }
            T* da = dA + a0;
            std::fill(da, da + p.cin_g * p.in_size, T(0));
            Col2Im(p, runs, col.data(), da);
          }
        }
      }
    }
  };
  if (pool != nullptr) pool->ParallelFor(chunks, 1, run); else run(0, chunks);
  if (dW != nullptr) {
    // Partials hold dW_g^T [kc, cout_g] per group; summed in chunk order, then transposed.
    std::vector<T> sum(static_cast<size_t>(wsize), T(0));
    for (int64_t ch = 0; ch < chunks; ++ch) {
      const T* src = part_w.data() + ch * wsize;
      for (int64_t i = 0; i < wsize; ++i) sum[static_cast<size_t>(i)] += src[i];
    }
    for (int64_t g = 0; g < p.group; ++g) {
      for (int64_t j = 0; j < kc; ++j) {
        for (int64_t m = 0; m < p.cout_g; ++m) {
          dW[(g * p.cout_g + m) * kc + j] = sum[static_cast<size_t>(g * p.cout_g * kc + j * p.cout_g + m)];
        }
      }
    }
  }
}

// Calls fn(n, m, o, c, k, x offset, w offset, y offset) for every product of a direct convolution loop
// (taps inside the input only); c is the absolute input channel.
template <typename Fn>
void ForEachProduct(const ConvProblem& p, Fn&& fn) {
  const size_t r = p.rank();
  const std::vector<int64_t> in_strides = RowStrides(p.in);
  std::vector<int64_t> oc(r), kc(r);
  for (int64_t n = 0; n < p.batch; ++n) {
    for (int64_t m = 0; m < p.out_channels; ++m) {
      const int64_t grp = m / p.cout_g;
      for (int64_t o = 0; o < p.out_size; ++o) {
        int64_t rem = o;
        for (size_t d = r; d-- > 0;) {
          oc[d] = rem % p.out[d];
          rem /= p.out[d];
        }
        for (int64_t c = 0; c < p.cin_g; ++c) {
          for (int64_t k = 0; k < p.kernel_size; ++k) {
            rem = k;
            int64_t offset = 0;
            bool inside = true;
            for (size_t d = r; d-- > 0;) {
              kc[d] = rem % p.kernel[d];
              rem /= p.kernel[d];
              const int64_t pos = oc[d] * p.strides[d] - p.pads_begin[d] + kc[d] * p.dilations[d];
              inside = inside && pos >= 0 && pos < p.in[d];
              offset += pos * in_strides[d];
            }
            if (!inside) continue;
            fn((n * p.in_channels + grp * p.cin_g + c) * p.in_size + offset, (m * p.cin_g + c) * p.kernel_size + k,
               (n * p.out_channels + m) * p.out_size + o);
          }
        }
      }
    }
  }
}

Tensor ZerosLike(const Tensor& t) { return Tensor(t.dtype(), t.dims()); }

void ConvBackwardImpl(GradContext& ctx, bool fast) {
  const Tensor* dy = ctx.output_grad(0);
  if (dy == nullptr) return;
  const Tensor& x = ctx.required_input(0);
  const Tensor& w = ctx.required_input(1);
  if (w.dtype() != x.dtype() || dy->dtype() != x.dtype()) ctx.Fail("X, W and dY have different element types");
  const ConvProblem p = ConvGeometry(ctx, x, w, *dy);
  CheckBias(ctx, p.out_channels);
  DispatchFloat(ctx, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    Tensor dx, dw;
    // The fast core writes every element of dX and dW; the reference loops add into zeros.
    if (ctx.wanted(0)) dx = fast ? Tensor::Uninitialized(x.dtype(), x.dims()) : ZerosLike(x);
    if (ctx.wanted(1)) dw = fast ? Tensor::Uninitialized(w.dtype(), w.dims()) : ZerosLike(w);
    if (fast) {
      FastCore<T>(ctx.pool(), p, x.data<T>(), w.data<T>(), dy->data<T>(), ctx.wanted(0) ? dx.mutable_data<T>() : nullptr,
                  ctx.wanted(1) ? dw.mutable_data<T>() : nullptr, nullptr);
    } else if (ctx.wanted(0) || ctx.wanted(1)) {
      const T* px = x.data<T>();
      const T* pw = w.data<T>();
      const T* pg = dy->data<T>();
      T* pdx = ctx.wanted(0) ? dx.mutable_data<T>() : nullptr;
      T* pdw = ctx.wanted(1) ? dw.mutable_data<T>() : nullptr;
      ForEachProduct(p, [&](int64_t xi, int64_t wi, int64_t yi) {
        if (pdx != nullptr) pdx[xi] += pg[yi] * pw[wi];
        if (pdw != nullptr) pdw[wi] += pg[yi] * px[xi];
      });
    }
    if (ctx.wanted(0)) ctx.SetInputGrad(0, std::move(dx));
    if (ctx.wanted(1)) ctx.SetInputGrad(1, std::move(dw));
    if (ctx.wanted(2) && ctx.input(2) != nullptr) ctx.SetInputGrad(2, ChannelSums<T>(fast ? ctx.pool() : nullptr, *dy));
  });
}

void ConvTransposeBackwardImpl(GradContext& ctx, bool fast) {
  const Tensor* dy = ctx.output_grad(0);
  if (dy == nullptr) return;
  const Tensor& x = ctx.required_input(0);
  const Tensor& w = ctx.required_input(1);
  if (w.dtype() != x.dtype() || dy->dtype() != x.dtype()) ctx.Fail("X, W and dY have different element types");
  const ConvProblem p = ConvTransposeGeometry(ctx, x, w, *dy);
  CheckBias(ctx, p.in_channels);
  DispatchFloat(ctx, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    Tensor dx, dw;
    if (ctx.wanted(0)) dx = fast ? Tensor::Uninitialized(x.dtype(), x.dims()) : ZerosLike(x);
    if (ctx.wanted(1)) dw = fast ? Tensor::Uninitialized(w.dtype(), w.dims()) : ZerosLike(w);
    if (fast) {
      // The adjoint Conv: its input is dY, its output side X.
      FastCore<T>(ctx.pool(), p, dy->data<T>(), w.data<T>(), x.data<T>(), nullptr,
                  ctx.wanted(1) ? dw.mutable_data<T>() : nullptr, ctx.wanted(0) ? dx.mutable_data<T>() : nullptr);
    } else if (ctx.wanted(0) || ctx.wanted(1)) {
      // Direct scatter loops, as the reference forward kernel: y[n, m, pos(i, k)] += x[n, c, i] w[c, co, k].
      const size_t r = p.rank();
      const std::vector<int64_t> y_strides = RowStrides(p.in);
      const int64_t x_channels = p.out_channels, cin_g = p.cout_g, cout_g = p.cin_g;
      const int64_t y_channels = p.in_channels;
      const T* px = x.data<T>();
      const T* pw = w.data<T>();
      const T* pg = dy->data<T>();
      T* pdx = ctx.wanted(0) ? dx.mutable_data<T>() : nullptr;
      T* pdw = ctx.wanted(1) ? dw.mutable_data<T>() : nullptr;
      std::vector<int64_t> ic(r), kc(r);
      for (int64_t n = 0; n < p.batch; ++n) {
        for (int64_t c = 0; c < x_channels; ++c) {
          const int64_t grp = c / cin_g;
          for (int64_t i = 0; i < p.out_size; ++i) {
            int64_t rem = i;
            for (size_t d = r; d-- > 0;) {
              ic[d] = rem % p.out[d];
              rem /= p.out[d];
            }
            const int64_t xi = (n * x_channels + c) * p.out_size + i;
            for (int64_t co = 0; co < cout_g; ++co) {
              const int64_t m = grp * cout_g + co;
              for (int64_t k = 0; k < p.kernel_size; ++k) {
                rem = k;
                int64_t offset = 0;
                bool inside = true;
                for (size_t d = r; d-- > 0;) {
                  kc[d] = rem % p.kernel[d];
                  rem /= p.kernel[d];
                  const int64_t pos = ic[d] * p.strides[d] - p.pads_begin[d] + kc[d] * p.dilations[d];
                  inside = inside && pos >= 0 && pos < p.in[d];
                  offset += pos * y_strides[d];
                }
                if (!inside) continue;
                const int64_t yi = (n * y_channels + m) * p.in_size + offset;
                const int64_t wi = (c * cout_g + co) * p.kernel_size + k;
                if (pdx != nullptr) pdx[xi] += pg[yi] * pw[wi];
                if (pdw != nullptr) pdw[wi] += pg[yi] * px[xi];
              }
            }
          }
        }
      }
    }
    if (ctx.wanted(0)) ctx.SetInputGrad(0, std::move(dx));
    if (ctx.wanted(1)) ctx.SetInputGrad(1, std::move(dw));
    if (ctx.wanted(2) && ctx.input(2) != nullptr) ctx.SetInputGrad(2, ChannelSums<T>(fast ? ctx.pool() : nullptr, *dy));
  });
}

}  // namespace

namespace conv_grad {

void ConvBackwardReference(GradContext& ctx) { ConvBackwardImpl(ctx, false); }
void ConvBackwardFast(GradContext& ctx) { ConvBackwardImpl(ctx, true); }
void ConvTransposeBackwardReference(GradContext& ctx) { ConvTransposeBackwardImpl(ctx, false); }
void ConvTransposeBackwardFast(GradContext& ctx) { ConvTransposeBackwardImpl(ctx, true); }

}  // namespace conv_grad

void AddConvGrads(BackwardRegistry& r) {
  r.Add({"Conv", 1, 1000, conv_grad::ConvBackwardFast, {0, 1, 2}});
  r.Add({"ConvTranspose", 1, 1000, conv_grad::ConvTransposeBackwardFast, {0, 1, 2}});
}

}  // namespace compress::train
