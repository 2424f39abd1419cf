// Conv, ConvTranspose, ConvInteger, QLinearConv (any number of spatial dims).
//
// Reference kernels loop directly over every output element, input channel and kernel offset (ConvTranspose
// scatters every input element instead), accumulating in double or in wrapping 32-bit integers.
//
// Fast Conv (float): for one image and group the convolution is the GEMM
//   Y[Cout_g, out] = W[Cout_g, Cin_g * kernel] x col[Cin_g * kernel, out]
// where col is the im2col matrix. Weights are packed for the GEMM once at build time when constant. col is
// built for a block of output columns at a time, sized to stay in L2, in the layout the GEMM micro-kernel
// reads (rows padded to whole column panels), so it never exists for a whole image; small maps put several
// images in one block, and 1x1 convolutions read X itself. Depthwise convolutions (one input and one output
// channel per group) have too little reuse for a GEMM: at stride 1 every kernel tap is a shift of a
// zero-padded copy of the plane, summed in registers over all taps; at other strides a loop per row and tap.
// Fast ConvTranspose: col[Cout_g * kernel, in] = W_g^T x X_g by the same GEMM, then col2im adds col into Y.
// Fast ConvInteger / QLinearConv with constant weights (and a SIMD path of qgemm.h on this CPU): the weights
// are packed once for the 8-bit integer GEMM, and per (image, group, column block) task an 8-bit im2col,
// padded with the input zero point so that padding adds nothing, feeds it; QLinearConv requantises each block
// as it is done. Otherwise: im2col of x less its zero point as floats and the exact float GEMM
// (gemm::MultiplyExact). Threads take whole (image, group, column block) tasks, so results do not depend on
// the thread count.
#include <algorithm>
#include <cstring>
#include <optional>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "common.h"
#include "kernels.h"
#include "qgemm.h"

namespace compress::kernels {

namespace {

using gemm::AlignedFloats;
using gemm::AView;
using gemm::BView;
using gemm::Init;
using gemm::kNr;

// Floats of im2col data per task: a column block of the GEMM's right operand stays in L2.
constexpr int64_t kColBlockFloats = 96 * 1024;
// The same for 8-bit im2col data (the block and qgemm's packed copy of it).
constexpr int64_t kColBlockBytes = 128 * 1024;

// ---------------------------------------------------------------------------------------------------------
// Shapes

struct ConvAttrs {
  WindowAttrs window;
  int64_t group = 1;
};

ConvAttrs ParseConvAttrs(const KernelInfo& info) {
  ConvAttrs a;
  a.window = ParseWindowAttrs(info);
  a.group = info.node->AttrInt("group", 1);
  if (a.group <= 0)
    ThrowInvalid("node " + info.node->Describe() + ": group " + std::to_string(a.group) +
                 " must be positive");
  return a;
}

std::vector<int64_t> SpatialDims(const std::vector<int64_t>& dims) { return {dims.begin() + 2, dims.end()}; }

// Kernel dims: the weights' spatial dims, which kernel_shape (when given) must repeat.
std::vector<int64_t> KernelDims(const KernelContext& ctx, const WindowAttrs& a,
                                const std::vector<int64_t>& w) {
  std::vector<int64_t> kernel = SpatialDims(w);
  if (!a.kernel_shape.empty() && a.kernel_shape != kernel) {
    ctx.Fail("kernel_shape " + ShapeToString(a.kernel_shape) + " does not match W " + ShapeToString(w));
  }
  return kernel;
}

struct ConvShape {
  int64_t batch = 0, in_channels = 0, out_channels = 0, group = 1, cin_g = 0, cout_g = 0;
  WindowGeometry geo;
  int64_t in_size = 0, out_size = 0, kernel_size = 0;
  int64_t k = 0;  // GEMM depth: cin_g * kernel_size
  std::vector<int64_t> y_dims;
};

ConvShape ResolveConv(const KernelContext& ctx, const ConvAttrs& a, const std::vector<int64_t>& x,
                      const std::vector<int64_t>& w) {
  if (x.size() < 3) ctx.Fail("X must be [N, C, spatial...], got " + ShapeToString(x));
  if (w.size() != x.size())
    ctx.Fail("W " + ShapeToString(w) + " must have the rank of X " + ShapeToString(x));
  ConvShape s;
  s.batch = x[0];
  s.in_channels = x[1];
  s.out_channels = w[0];
  s.group = a.group;
  if (s.in_channels != w[1] * a.group) {
    ctx.Fail("X " + ShapeToString(x) + " has " + std::to_string(s.in_channels) + " channels but W " +
             ShapeToString(w) + " with group " + std::to_string(a.group) + " expects " +
             std::to_string(w[1] * a.group));
  }
  if (s.out_channels % a.group != 0) {
    ctx.Fail("W " + ShapeToString(w) + " has " + std::to_string(s.out_channels) +
             " output channels, not a multiple of group " + std::to_string(a.group));
  }
  s.cin_g = w[1];
  s.cout_g = s.out_channels / a.group;
  s.geo = ResolveWindow(ctx, a.window, SpatialDims(x), KernelDims(ctx, a.window, w));
  s.in_size = s.geo.in_size();
  s.out_size = s.geo.out_size();
  s.kernel_size = s.geo.kernel_size();
  s.k = s.cin_g * s.kernel_size;
  s.y_dims = {s.batch, s.out_channels};
  s.y_dims.insert(s.y_dims.end(), s.geo.out.begin(), s.geo.out.end());
  return s;
}

void CheckBias(const KernelContext& ctx, const Tensor* b, int64_t channels) {
  if (b != nullptr && (b->rank() != 1 || b->numel() != channels)) {
    ctx.Fail("bias B " + ShapeToString(b->dims()) + " must be [" + std::to_string(channels) + "]");
  }
}

// ---------------------------------------------------------------------------------------------------------
// Reference kernels

// acc[n, m, o] = sum over input channels c of group(m) and kernel offsets k of x_at(X index) * w_at(W index,
// m), where the input position o * stride - pad + k * dilation is inside X (padding adds nothing).
template <typename Acc, typename XAt, typename WAt>
std::vector<Acc> DirectConv(const ConvShape& s, XAt x_at, WAt w_at) {
  const WindowGeometry& g = s.geo;
  const size_t r = g.rank();
  const std::vector<int64_t> out_coord = Coordinates(g.out), kernel_coord = Coordinates(g.kernel);
  const std::vector<int64_t> in_strides = Strides(g.in);
  std::vector<Acc> acc(static_cast<size_t>(s.batch * s.out_channels * s.out_size), Acc{});
  for (int64_t n = 0; n < s.batch; ++n) {
    for (int64_t m = 0; m < s.out_channels; ++m) {
      const int64_t grp = m / s.cout_g;
      for (int64_t o = 0; o < s.out_size; ++o) {
        Acc sum{};
        for (int64_t c = 0; c < s.cin_g; ++c) {
          const int64_t x_base = (n * s.in_channels + grp * s.cin_g + c) * s.in_size;
          const int64_t w_base = (m * s.cin_g + c) * s.kernel_size;
          for (int64_t k = 0; k < s.kernel_size; ++k) {
            int64_t offset = 0;
            bool inside = true;
            for (size_t d = 0; d < r && inside; ++d) {
              const int64_t pos = out_coord[static_cast<size_t>(o) * r + d] * g.strides[d] - g.pads_begin[d] +
                                  kernel_coord[static_cast<size_t>(k) * r + d] * g.dilations[d];
              inside = pos >= 0 && pos < g.in[d];
              offset += pos * in_strides[d];
            }
            if (inside) sum += static_cast<Acc>(x_at(x_base + offset) * w_at(w_base + k, m));
          }
        }
        acc[static_cast<size_t>((n * s.out_channels + m) * s.out_size + o)] = sum;
      }
    }
  }
  return acc;
}

template <typename T>
void ReferenceConv(KernelContext& ctx, const ConvAttrs& a) {
  const Tensor& x = ctx.required_input(0);
  const Tensor& w = ctx.required_input(1);
  const Tensor* b = ctx.input(2);
  if (w.dtype() != x.dtype() || (b != nullptr && b->dtype() != x.dtype()))
    ctx.Fail("X, W and B have different element types");
  const ConvShape s = ResolveConv(ctx, a, x.dims(), w.dims());
  CheckBias(ctx, b, s.out_channels);
  const T* px = x.data<T>();
  const T* pw = w.data<T>();
  const std::vector<double> acc = DirectConv<double>(
      s, [&](int64_t i) { return static_cast<double>(px[i]); },
      [&](int64_t i, int64_t) { return static_cast<double>(pw[i]); });
  Tensor& y = ctx.Output(0, x.dtype(), s.y_dims);
  T* py = y.mutable_data<T>();
  for (size_t i = 0; i < acc.size(); ++i) {
    const int64_t m = static_cast<int64_t>(i) / s.out_size % s.out_channels;
    py[i] = static_cast<T>(acc[i] + (b != nullptr ? static_cast<double>(b->data<T>()[m]) : 0.0));
  }
}

// ---------------------------------------------------------------------------------------------------------
// Fast Conv

// Short copies and fills of im2col segments (a dozen floats), inline rather than through libc calls.
inline void CopyFloats(const float* src, int64_t n, float* dst) {
  int64_t i = 0;
#if defined(__SSE2__)
  for (; i + 4 <= n; i += 4) _mm_storeu_ps(dst + i, _mm_loadu_ps(src + i));
#endif
  for (; i < n; ++i) dst[i] = src[i];
}

inline void ZeroFloats(int64_t n, float* dst) {
  int64_t i = 0;
#if defined(__SSE2__)
  for (; i + 4 <= n; i += 4) _mm_storeu_ps(dst + i, _mm_setzero_ps());
#endif
  for (; i < n; ++i) dst[i] = 0.0f;
}

// Columns [j0, j0 + nc) of the im2col matrix of one image and group (x: the group's first input channel), as
// rows of length ld, padding `pad`; the columns past nc are left alone. Generic over the spatial rank.
template <typename T>
void Im2ColND(const ConvShape& s, const T* x, T pad, int64_t j0, int64_t nc, T* col, int64_t ld) {
  const WindowGeometry& g = s.geo;
  const size_t last = g.rank() - 1;
  const int64_t ow_n = g.out[last], iw_n = g.in[last], sw = g.strides[last], pw = g.pads_begin[last];
  const int64_t kw_n = g.kernel[last], dw = g.dilations[last];
  // Leading (all but last) spatial dims: output rows and kernel rows.
  const std::vector<int64_t> row_coord = Coordinates({g.out.begin(), g.out.end() - 1});
  const std::vector<int64_t> krow_coord = Coordinates({g.kernel.begin(), g.kernel.end() - 1});
  const std::vector<int64_t> in_strides = Strides(g.in);
  const int64_t krows = s.kernel_size / kw_n;
  const int64_t orow_first = j0 / ow_n, orow_end = (j0 + nc + ow_n - 1) / ow_n;
  for (int64_t c = 0; c < s.cin_g; ++c) {
    for (int64_t kr = 0; kr < krows; ++kr) {
      for (int64_t kw = 0; kw < kw_n; ++kw) {
        T* dst = col + ((c * krows + kr) * kw_n + kw) * ld - j0;  // indexed by image column
        int64_t lo = 0, hi = 0;
        ValidOutputRange(ow_n, iw_n, sw, pw, kw * dw, &lo, &hi);
        for (int64_t orow = orow_first; orow < orow_end; ++orow) {
          const int64_t a = std::max(j0, orow * ow_n) - orow * ow_n;
          const int64_t b = std::min(j0 + nc, (orow + 1) * ow_n) - orow * ow_n;
          T* out = dst + orow * ow_n;
          int64_t offset = 0;
          bool inside = true;
          for (size_t d = 0; d < last && inside; ++d) {
            const int64_t pos = row_coord[static_cast<size_t>(orow) * last + d] * g.strides[d] -
                                g.pads_begin[d] +
                                krow_coord[static_cast<size_t>(kr) * last + d] * g.dilations[d];
            inside = pos >= 0 && pos < g.in[d];
            offset += pos * in_strides[d];
          }
          const T* src = x + c * s.in_size + offset + kw * dw - pw;
          const int64_t va = inside ? std::clamp(lo, a, b) : b, vb = inside ? std::clamp(hi, va, b) : b;
          std::fill(out + a, out + va, pad);
          for (int64_t ow = va; ow < vb; ++ow) out[ow] = src[ow * sw];
          std::fill(out + vb, out + b, pad);
        }
      }
    }
  }
}

// As Im2ColND, for 1-D and 2-D windows. The input rows the block reads are first copied, zero-padded, into a
// strip as wide as the window sweeps, so that each col row is a run of plain (strided) copies with no bounds
// checks. Copies spill up to kCopyOver - 1 floats past a segment, into the next one (written after) or past
// column nc (which the caller's rows leave room for); col needs kCopyOver floats of slack after its last row.
void Im2Col2D(const ConvShape& s, const Window2D& q, const float* x, int64_t j0, int64_t nc, float* col,
              int64_t ld) {
  const int64_t oh_first = j0 / q.ow, oh_end = (j0 + nc + q.ow - 1) / q.ow;
  const int64_t wp = (q.ow - 1) * q.sw + (q.kw - 1) * q.dw + 1;
  const int64_t rows = (oh_end - 1 - oh_first) * q.sh + (q.kh - 1) * q.dh + 1;
  const int64_t ih0 = oh_first * q.sh - q.ph;
  const int64_t left = std::min(q.pw, wp), copied = std::max<int64_t>(0, std::min(q.iw, wp - q.pw));
  float* strip = gemm::Scratch(3, s.cin_g * rows * wp + gemm::kCopyOver);
  for (int64_t c = 0; c < s.cin_g; ++c) {
    for (int64_t r = 0; r < rows; ++r) {
      float* dst = strip + (c * rows + r) * wp;
      const int64_t ih = ih0 + r;
      if (ih < 0 || ih >= q.ih) {
        ZeroFloats(wp, dst);
        continue;
      }
      ZeroFloats(left, dst);
      CopyFloats(x + (c * q.ih + ih) * q.iw, copied, dst + left);
      ZeroFloats(wp - left - copied, dst + left + copied);
    }
  }
  // Output rows of the block: a partial first row, whole rows, a partial last row. Per (c, kh) all first
  // segments, then all whole rows, then all last segments, so that each copy's spill lands where a later
  // copy writes (or past column nc).
  const int64_t first_a = j0 - oh_first * q.ow;
  const int64_t last_b = j0 + nc - (oh_end - 1) * q.ow;
  const int64_t whole_first = first_a == 0 ? oh_first : oh_first + 1;
  const int64_t whole_end = std::max(whole_first, last_b == q.ow ? oh_end : oh_end - 1);
  for (int64_t c = 0; c < s.cin_g; ++c) {
    for (int64_t kh = 0; kh < q.kh; ++kh) {
      // Indexed by kw, output row and image column.
      float* dst = col + (c * q.kh + kh) * q.kw * ld - j0;
      const float* src = strip + (c * rows + kh * q.dh) * wp - oh_first * q.sh * wp;
      auto segments = [&](int64_t oh, int64_t a, int64_t b) {
        for (int64_t kw = 0; kw < q.kw; ++kw) {
          const float* from = src + oh * q.sh * wp + kw * q.dw;
          float* to = dst + kw * ld + oh * q.ow;
          if (q.sw == 1) {
            gemm::RowCopy one;
            one.n = b - a;
            gemm::CopyRowsOver(one, from + a, to + a);
          } else {
            for (int64_t ow = a; ow < b; ++ow) to[ow] = from[ow * q.sw];
          }
        }
      };
      if (whole_first > oh_first) segments(oh_first, first_a, oh_first + 1 == oh_end ? last_b : q.ow);
      if (whole_first < whole_end) {
        if (q.sw == 1) {
          gemm::RowCopy rows_copy;
          rows_copy.blocks = q.kw;
          rows_copy.rows = whole_end - whole_first;
          rows_copy.n = q.ow;
          rows_copy.src_block = q.dw;
          rows_copy.src_row = q.sh * wp;
          rows_copy.dst_block = ld;
          rows_copy.dst_row = q.ow;
          gemm::CopyRowsOver(rows_copy, src + whole_first * q.sh * wp, dst + whole_first * q.ow);
        } else {
          for (int64_t oh = whole_first; oh < whole_end; ++oh) segments(oh, 0, q.ow);
        }
      }
      if (whole_end < oh_end && (oh_end - 1 > oh_first || first_a == 0)) segments(oh_end - 1, 0, last_b);
    }
  }
}

bool IsPointwise(const WindowGeometry& g) {
  for (size_t d = 0; d < g.rank(); ++d) {
    if (g.kernel[d] != 1 || g.strides[d] != 1 || g.pads_begin[d] != 0 || g.pads_end[d] != 0) return false;
  }
  return true;
}

void Im2Col(const ConvShape& s, const float* x, int64_t j0, int64_t nc, float* col, int64_t ld) {
  if (IsPointwise(s.geo)) {
    for (int64_t c = 0; c < s.cin_g; ++c)
      std::memcpy(col + c * ld, x + c * s.in_size + j0, sizeof(float) * static_cast<size_t>(nc));
  } else if (s.geo.rank() <= 2) {
    Im2Col2D(s, ToWindow2D(s.geo), x, j0, nc, col, ld);
  } else {
    Im2ColND(s, x, 0.0f, j0, nc, col, ld);
  }
}

// Bytes per step of the 8-bit im2col's copies: they may read and write up to kByteBlock - 1 bytes too many.
constexpr int64_t kByteBlock = 16;

// dst[i] = src[i] ^ flip for i < n (flip 0x80 turns int8 into uint8), in whole blocks.
inline void CopyBlocks(const uint8_t* src, int64_t n, uint8_t flip, uint8_t* dst) {
  for (int64_t t = 0; t < n; t += kByteBlock) {
#if defined(__SSE2__)
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + t));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + t),
                     _mm_xor_si128(v, _mm_set1_epi8(static_cast<char>(flip))));
#else
    for (int64_t i = t; i < t + kByteBlock; ++i) dst[i] = static_cast<uint8_t>(src[i] ^ flip);
#endif
  }
}

// dst[i] = value for i < n, in whole blocks.
inline void FillBlocks(int64_t n, uint8_t value, uint8_t* dst) {
  for (int64_t t = 0; t < n; t += kByteBlock) {
#if defined(__SSE2__)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + t), _mm_set1_epi8(static_cast<char>(value)));
#else
    std::memset(dst + t, value, kByteBlock);
#endif
  }
}

// One row of an 8-bit im2col block: `count` output rows of q.ow columns, from column `first` of the first to
// column `last` of the last; output row r reads the strip at from + r * step (every q.sw bytes) and is
// written at to + r * q.ow. Whole blocks in increasing order, as Im2Col2DBytes requires.
void CopySegments(const Window2D& q, int64_t count, int64_t first, int64_t last, const uint8_t* from,
                  int64_t step, uint8_t* to) {
  auto segment = [&](int64_t r, int64_t a, int64_t b) {
    const uint8_t* src = from + r * step;
    uint8_t* dst = to + r * q.ow;
    if (q.sw == 1) {
      CopyBlocks(src + a, b - a, 0, dst + a);
    } else {
      for (int64_t t = a; t < b; ++t) dst[t] = src[t * q.sw];
    }
  };
  if (count == 1) {
    segment(0, first, last);
    return;
  }
  segment(0, first, q.ow);
  if (q.sw == 1 && q.ow <= kByteBlock) {
    for (int64_t r = 1; r + 1 < count; ++r) CopyBlocks(from + r * step, kByteBlock, 0, to + r * q.ow);
  } else {
    for (int64_t r = 1; r + 1 < count; ++r) segment(r, 0, q.ow);
  }
  segment(count - 1, 0, last);
}

// Im2Col2D for qgemm: 8-bit data read as uint8 through `flip` (0x80 turns int8 into uint8), padded with `pad`
// (the input zero point, so that padding adds nothing), rows of ld >= nc + kByteBlock - 1 bytes; x_size bytes
// from x are readable. The input rows the block reads are copied, padded, into a strip, so that each segment
// of a col row is one copy. Everything is written in whole blocks in increasing address order, so that each
// block's spill lands where a later one writes, or past column nc (or the strip's end).
void Im2Col2DBytes(const ConvShape& s, const Window2D& q, const uint8_t* x, int64_t x_size, uint8_t flip,
                   uint8_t pad, int64_t j0, int64_t nc, uint8_t* col, int64_t ld) {
  const int64_t oh_first = j0 / q.ow, oh_end = (j0 + nc + q.ow - 1) / q.ow;
  const int64_t wp = (q.ow - 1) * q.sw + (q.kw - 1) * q.dw + 1;
  const int64_t rows = (oh_end - 1 - oh_first) * q.sh + (q.kh - 1) * q.dh + 1;
  const int64_t ih0 = oh_first * q.sh - q.ph;
  const int64_t left = std::min(q.pw, wp), copied = std::max<int64_t>(0, std::min(q.iw, wp - q.pw));
  uint8_t* strip = qgemm::Scratch(3, s.cin_g * rows * wp + kByteBlock);
  for (int64_t c = 0; c < s.cin_g; ++c) {
    for (int64_t r = 0; r < rows; ++r) {
      uint8_t* dst = strip + (c * rows + r) * wp;
      const int64_t ih = ih0 + r;
      if (ih < 0 || ih >= q.ih) {
        FillBlocks(wp, pad, dst);
        continue;
      }
      const int64_t from = (c * q.ih + ih) * q.iw;
      FillBlocks(left, pad, dst);
      if (from + gemm::RoundUp(copied, kByteBlock) <= x_size) {
        CopyBlocks(x + from, copied, flip, dst + left);
      } else if (flip != 0) {  // the end of the input: no reading past it
        qgemm::FlipSign(reinterpret_cast<const int8_t*>(x + from), copied, dst + left);
      } else {
        std::memcpy(dst + left, x + from, static_cast<size_t>(copied));
      }
      FillBlocks(wp - left - copied, pad, dst + left + copied);
    }
  }
  // Output rows of the block: from column first_a of the first, to column last_b of the last.
  const int64_t first_a = j0 - oh_first * q.ow, last_b = j0 + nc - (oh_end - 1) * q.ow;
  for (int64_t c = 0; c < s.cin_g; ++c) {
    for (int64_t kh = 0; kh < q.kh; ++kh) {
      for (int64_t kw = 0; kw < q.kw; ++kw) {
        const uint8_t* from = strip + (c * rows + kh * q.dh) * wp + kw * q.dw;
        uint8_t* to = col + ((c * q.kh + kh) * q.kw + kw) * ld - first_a;
        CopySegments(q, oh_end - oh_first, first_a, last_b, from, q.sh * wp, to);
      }
    }
  }
}

// Columns [j0, j0 + nc) of the 8-bit im2col matrix of one image and group (x: its first input channel, x_size
// bytes readable from it), as uint8 (flip 0x80: x is int8), padded with `pad`, rows of
// ld >= nc + kByteBlock - 1 bytes.
void Im2ColBytes(const ConvShape& s, const uint8_t* x, int64_t x_size, uint8_t flip, uint8_t pad, int64_t j0,
                 int64_t nc, uint8_t* col, int64_t ld) {
  if (s.geo.rank() <= 2) {
    Im2Col2DBytes(s, ToWindow2D(s.geo), x, x_size, flip, pad, j0, nc, col, ld);
    return;
  }
  if (flip != 0) {
    uint8_t* flipped = qgemm::Scratch(3, s.cin_g * s.in_size);
    qgemm::FlipSign(reinterpret_cast<const int8_t*>(x), s.cin_g * s.in_size, flipped);
    x = flipped;
  }
  Im2ColND(s, x, pad, j0, nc, col, ld);
}

// Row length for a block of `cols` columns: whole panels, and an odd number of them, so that the rows the
// micro-kernel walks down spread over all L1 sets instead of aliasing.
int64_t PanelRowLength(int64_t cols) {
  const int64_t ld = gemm::RoundUp(cols, kNr);
  return (ld / kNr) % 2 == 1 ? ld : ld + kNr;
}

void ZeroColumns(int64_t rows, int64_t from, int64_t ld, float* col) {
  for (int64_t r = 0; r < rows; ++r) ZeroFloats(ld - from, col + r * ld + from);
}

// Depthwise convolutions have too little reuse for the GEMM. At stride 1, on a zero-padded copy of the plane
// with rows q.ow + (q.kw - 1) * q.dw wide, every tap is one shift of the whole plane, so the output plane is
// one TapSum over rows of the padded width; the columns past q.ow are computed and dropped.
struct DepthwisePlan {
  Window2D q;
  int64_t wp = 0, hp = 0;        // padded plane width and height
  int64_t plane = 0;             // floats of the padded plane, with room for the last taps' overrun
  std::vector<int64_t> offsets;  // per tap (kh, kw): its shift in the padded plane
  int64_t scratch() const { return plane + q.oh * wp + gemm::kCopyOver; }
};

DepthwisePlan MakeDepthwisePlan(const WindowGeometry& g) {
  DepthwisePlan d;
  d.q = ToWindow2D(g);
  const Window2D& q = d.q;
  d.wp = q.ow + (q.kw - 1) * q.dw;
  d.hp = q.oh + (q.kh - 1) * q.dh;
  d.plane = d.hp * d.wp + (q.kw - 1) * q.dw;
  for (int64_t kh = 0; kh < q.kh; ++kh) {
    for (int64_t kw = 0; kw < q.kw; ++kw) d.offsets.push_back(kh * q.dh * d.wp + kw * q.dw);
  }
  return d;
}

// One stride-1 depthwise plane: y = bias + sum over taps of w * shifted x.
void DepthwisePlane(const DepthwisePlan& d, const float* x, const float* w, float bias, float* y,
                    float* scratch) {
  const Window2D& q = d.q;
  float* padded = scratch;
  float* acc = scratch + d.plane;
  std::memset(padded, 0, sizeof(float) * static_cast<size_t>(d.plane));
  const int64_t copied = std::max<int64_t>(0, std::min(q.iw, d.wp - q.pw));
  for (int64_t ih = 0; ih < q.ih && ih + q.ph < d.hp; ++ih) {
    CopyFloats(x + ih * q.iw, copied, padded + (ih + q.ph) * d.wp + q.pw);
  }
  gemm::TapSum(q.oh * d.wp, q.kh * q.kw, w, d.offsets.data(), padded, bias, acc);
  // All rows but the last in whole vectors, each spilling into the next row's place before it is written;
  // rows narrower than a vector would spill past the last row, so they are copied one by one.
  if (q.ow < gemm::kCopyOver) {
    for (int64_t r = 0; r < q.oh; ++r) CopyFloats(acc + r * d.wp, q.ow, y + r * q.ow);
    return;
  }
  gemm::RowCopy rows;
  rows.rows = q.oh - 1;
  rows.n = q.ow;
  rows.src_row = d.wp;
  rows.dst_row = q.ow;
  gemm::CopyRowsOver(rows, acc, y);
  CopyFloats(acc + (q.oh - 1) * d.wp, q.ow, y + (q.oh - 1) * q.ow);
}

// One depthwise plane at stride > 1: y = bias + sum over taps of w * strided x, row by row over the outputs
// each tap keeps inside the input.
void StridedDepthwisePlane(const Window2D& q, const float* x, const float* w, float bias, float* y) {
  for (int64_t oh = 0; oh < q.oh; ++oh) std::fill(y + oh * q.ow, y + (oh + 1) * q.ow, bias);
  for (int64_t kw = 0; kw < q.kw; ++kw) {
    int64_t lo = 0, hi = 0;
    ValidOutputRange(q.ow, q.iw, q.sw, q.pw, kw * q.dw, &lo, &hi);
    for (int64_t kh = 0; kh < q.kh; ++kh) {
      const float wv = w[kh * q.kw + kw];
      for (int64_t oh = 0; oh < q.oh; ++oh) {
        const int64_t ih = oh * q.sh - q.ph + kh * q.dh;
        if (ih < 0 || ih >= q.ih) continue;
        const float* src = x + ih * q.iw + kw * q.dw - q.pw;
        float* yrow = y + oh * q.ow;
        for (int64_t ow = lo; ow < hi; ++ow) yrow[ow] += wv * src[ow * q.sw];
      }
    }
  }
}

// Weights of every group packed for the GEMM: group g's [Cout_g, K] block at g * PackedASize(Cout_g, K).
AlignedFloats PackConvWeights(const float* w, int64_t group, int64_t cout_g, int64_t k) {
  const int64_t per_group = gemm::PackedASize(cout_g, k);
  AlignedFloats packed(group * per_group);
  for (int64_t g = 0; g < group; ++g)
    gemm::PackA(w + g * cout_g * k, k, 1, cout_g, k, 1.0f, packed.data() + g * per_group);
  return packed;
}

// Float weights available at build time, kept raw and packed.
struct ConstantWeights {
  std::vector<int64_t> dims;
  std::vector<float> raw;
  AlignedFloats packed;  // for the GEMM, per group
};

class FastConv : public Kernel {
 public:
  explicit FastConv(const KernelInfo& info) : attrs_(ParseConvAttrs(info)) {
    const Tensor* w = info.constant_input(1);
    if (w == nullptr || w->rank() < 3 || !IsFloatingPoint(w->dtype()) || w->dtype() == DType::kDouble) return;
    if (w->dims()[0] % attrs_.group != 0) return;  // reported at run time
    weights_.dims = w->dims();
    weights_.raw = ToFloats(info, *w);
    const int64_t cout_g = w->dims()[0] / attrs_.group;
    weights_.packed = PackConvWeights(weights_.raw.data(), attrs_.group, cout_g,
                                      w->numel() / std::max<int64_t>(1, w->dims()[0]));
  }

  void Run(KernelContext& ctx) override {
    const Tensor& x = ctx.required_input(0);
    const Tensor& w = ctx.required_input(1);
    const Tensor* b = ctx.input(2);
    if (x.dtype() != DType::kFloat || w.dtype() != DType::kFloat ||
        (b != nullptr && b->dtype() != DType::kFloat)) {
      if (x.dtype() != DType::kDouble)
        ctx.Fail(std::string("element type ") + DTypeName(x.dtype()) + " is not supported");
      ReferenceConv<double>(ctx, attrs_);
      return;
    }
    const ConvShape s = ResolveConv(ctx, attrs_, x.dims(), w.dims());
    CheckBias(ctx, b, s.out_channels);
    Tensor& y = ctx.OutputForWrite(0, DType::kFloat, s.y_dims);
    if (s.batch * s.out_channels * s.out_size == 0) return;
    const bool constant = weights_.dims == w.dims() && !weights_.raw.empty();
    const float* bias = b != nullptr ? b->data<float>() : nullptr;
    const float* weights = constant ? weights_.raw.data() : w.data<float>();
    const Epilogue* epilogue = ctx.TakeEpilogue(s.y_dims);
    if (s.cin_g == 1 && s.cout_g == 1 && s.geo.rank() <= 2) {
      RunDepthwise(ctx, s, x.data<float>(), weights, bias, y.mutable_data<float>(), epilogue);
      return;
    }
    AlignedFloats packed_now;
    const float* packed = weights_.packed.data();
    if (!constant) {
      packed_now = PackConvWeights(w.data<float>(), s.group, s.cout_g, s.k);
      packed = packed_now.data();
    }
    RunGemm(ctx, s, x.data<float>(), packed, bias, y.mutable_data<float>(), epilogue);
  }

  bool AcceptsEpilogue() const override { return true; }

 private:
  // Applies the fused nodes to rows [m0, m0 + rows) of image n's output, columns [j0, j0 + cols), right
  // after they were written.
  static void Finish(const Epilogue* epilogue, const ConvShape& s, float* y, int64_t n, int64_t m0,
                     int64_t rows, int64_t j0, int64_t cols) {
    if (epilogue == nullptr) return;
    for (int64_t m = m0; m < m0 + rows; ++m) {
      const int64_t at = (n * s.out_channels + m) * s.out_size + j0;
      epilogue->Apply(y + at, at, cols);
    }
  }

  // Tasks of enough work to outweigh scheduling, fixed by the shape alone.
  static int64_t Grain(int64_t work_per_task) {
    return std::max<int64_t>(1, (1 << 16) / std::max<int64_t>(1, work_per_task));
  }

  static void RunDepthwise(KernelContext& ctx, const ConvShape& s, const float* x, const float* w,
                           const float* bias, float* y, const Epilogue* epilogue) {
    bool stride1 = true;
    for (int64_t stride : s.geo.strides) stride1 = stride1 && stride == 1;
    const DepthwisePlan d = MakeDepthwisePlan(s.geo);
    ctx.pool().ParallelFor(
        s.batch * s.out_channels, Grain(s.out_size * s.kernel_size), [&](int64_t p0, int64_t p1) {
          float* scratch = stride1 ? gemm::Scratch(1, d.scratch()) : nullptr;
          for (int64_t p = p0; p < p1; ++p) {
            const int64_t c = p % s.out_channels;
            const float b = bias != nullptr ? bias[c] : 0.0f;
            if (stride1) {
              DepthwisePlane(d, x + p * s.in_size, w + c * s.kernel_size, b, y + p * s.out_size, scratch);
            } else {
              StridedDepthwisePlane(d.q, x + p * s.in_size, w + c * s.kernel_size, b, y + p * s.out_size);
            }
            if (epilogue != nullptr) epilogue->Apply(y + p * s.out_size, p * s.out_size, s.out_size);
          }
        });
  }

  static void RunGemm(KernelContext& ctx, const ConvShape& s, const float* x, const float* packed_w,
                      const float* bias, float* y, const Epilogue* epilogue) {
    const int64_t per_group = gemm::PackedASize(s.cout_g, s.k);
    const Init init = bias != nullptr ? Init::kRowBias : Init::kZero;
    const int64_t max_cols = std::max(kNr, kColBlockFloats / std::max<int64_t>(1, s.k) / kNr * kNr);
    const int64_t images = std::min(s.batch, max_cols / s.out_size);
    // A 1x1 convolution's im2col matrix is X itself, unless its row stride (a multiple of 1 KiB) would
    // alias the L1 sets.
    const bool direct_b = IsPointwise(s.geo) && s.in_size % 256 != 0;
    if (!direct_b && images >= 2 && (s.out_size % kNr != 0 || s.out_size < 4 * kNr)) {
      // Small maps: several whole images per task amortise the calls and waste less of the last column
      // panel. The GEMM writes a temporary [Cout_g, images * out] block then copied to Y.
      const int64_t blocks = (s.batch + images - 1) / images;
      ctx.pool().ParallelFor(blocks * s.group, 1, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
          const int64_t grp = t % s.group, n0 = t / s.group * images, count = std::min(images, s.batch - n0);
          const int64_t cols = count * s.out_size, ld = PanelRowLength(cols + gemm::kCopyOver);
          float* col = gemm::Scratch(1, s.k * ld + gemm::kCopyOver);
          for (int64_t i = 0; i < count; ++i) {
            Im2Col(s, x + ((n0 + i) * s.in_channels + grp * s.cin_g) * s.in_size, 0, s.out_size,
                   col + i * s.out_size, ld);
          }
          ZeroColumns(s.k, cols, ld, col);
          float* out = gemm::Scratch(2, s.cout_g * cols);
          const int64_t m0 = grp * s.cout_g;
          gemm::Multiply(s.cout_g, cols, s.k, AView{packed_w + grp * per_group}, BView{col, ld, kNr}, out,
                         cols, init, bias != nullptr ? bias + m0 : nullptr);
          for (int64_t i = 0; i < count; ++i) {
            for (int64_t m = 0; m < s.cout_g; ++m) {
              std::memcpy(y + ((n0 + i) * s.out_channels + m0 + m) * s.out_size,
                          out + m * cols + i * s.out_size, sizeof(float) * static_cast<size_t>(s.out_size));
            }
            Finish(epilogue, s, y, n0 + i, m0, s.cout_g, 0, s.out_size);
          }
        }
      });
      return;
    }
    // Blocks of whole panels within one image, spread evenly over it; the GEMM writes straight into Y.
    const int64_t blocks = (s.out_size + max_cols - 1) / max_cols;
    const int64_t cols = gemm::RoundUp((s.out_size + blocks - 1) / blocks, kNr);
    const int64_t ld = PanelRowLength(cols + gemm::kCopyOver);
    ctx.pool().ParallelFor(s.batch * s.group * blocks, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t blk = t % blocks, grp = t / blocks % s.group, n = t / blocks / s.group;
        const int64_t j0 = blk * cols, nc = std::min(cols, s.out_size - j0);
        if (nc <= 0) continue;
        const float* xg = x + (n * s.in_channels + grp * s.cin_g) * s.in_size;
        const int64_t m0 = grp * s.cout_g;
        const float* a = packed_w + grp * per_group;
        const float* row_bias = bias != nullptr ? bias + m0 : nullptr;
        float* out = y + (n * s.out_channels + m0) * s.out_size + j0;
        if (direct_b) {
          // Whole panels straight from X; the columns of a last partial panel from a zero-padded copy.
          const int64_t full = nc / kNr * kNr;
          gemm::Multiply(s.cout_g, full, s.k, AView{a}, BView{xg + j0, s.in_size, kNr}, out, s.out_size, init,
                         row_bias);
          if (full == nc) {
            Finish(epilogue, s, y, n, m0, s.cout_g, j0, nc);
            continue;
          }
          float* tail = gemm::Scratch(1, s.k * kNr);
          for (int64_t c = 0; c < s.cin_g; ++c) {
            CopyFloats(xg + c * s.in_size + j0 + full, nc - full, tail + c * kNr);
            ZeroFloats(kNr - (nc - full), tail + c * kNr + (nc - full));
          }
          gemm::Multiply(s.cout_g, nc - full, s.k, AView{a}, BView{tail, kNr, kNr}, out + full, s.out_size,
                         init, row_bias);
          Finish(epilogue, s, y, n, m0, s.cout_g, j0, nc);
          continue;
        }
        float* col = gemm::Scratch(1, s.k * ld + gemm::kCopyOver);
        Im2Col(s, xg, j0, nc, col, ld);
        ZeroColumns(s.k, nc, ld, col);
        gemm::Multiply(s.cout_g, nc, s.k, AView{a}, BView{col, ld, kNr}, out, s.out_size, init, row_bias);
        Finish(epilogue, s, y, n, m0, s.cout_g, j0, nc);
      }
    });
  }

  ConvAttrs attrs_;
  ConstantWeights weights_;
};

// ---------------------------------------------------------------------------------------------------------
// ConvTranspose

struct ConvTransposeAttrs {
  WindowAttrs window;
  int64_t group = 1;
  std::vector<int64_t> output_padding, output_shape;
};

ConvTransposeAttrs ParseConvTransposeAttrs(const KernelInfo& info) {
  ConvTransposeAttrs a;
  const ConvAttrs c = ParseConvAttrs(info);
  a.window = c.window;
  a.group = c.group;
  a.output_padding = info.node->AttrInts("output_padding", {});
  a.output_shape = info.node->AttrInts("output_shape", {});
  return a;
}

struct ConvTransposeShape {
  int64_t batch = 0, in_channels = 0, out_channels = 0, group = 1, cin_g = 0, cout_g = 0;
  std::vector<int64_t> in, kernel, strides, dilations, pads_begin, out;
  int64_t in_size = 0, out_size = 0, kernel_size = 0;
  std::vector<int64_t> y_dims;
};

// Floor division by 2 (also for negative totals, as the ONNX reference computes the split).
int64_t FloorHalf(int64_t v) { return v >= 0 ? v / 2 : -((-v + 1) / 2); }

ConvTransposeShape ResolveConvTranspose(const KernelContext& ctx, const ConvTransposeAttrs& a,
                                        const std::vector<int64_t>& x, const std::vector<int64_t>& w) {
  if (x.size() < 3) ctx.Fail("X must be [N, C, spatial...], got " + ShapeToString(x));
  if (w.size() != x.size())
    ctx.Fail("W " + ShapeToString(w) + " must have the rank of X " + ShapeToString(x));
  ConvTransposeShape s;
  const size_t r = x.size() - 2;
  s.batch = x[0];
  s.in_channels = x[1];
  s.group = a.group;
  if (w[0] != s.in_channels) {
    ctx.Fail("X " + ShapeToString(x) + " has " + std::to_string(s.in_channels) + " channels but W " +
             ShapeToString(w) + " expects " + std::to_string(w[0]));
  }
  if (s.in_channels % a.group != 0) {
    ctx.Fail("X has " + std::to_string(s.in_channels) + " channels, not a multiple of group " +
             std::to_string(a.group));
  }
  s.cin_g = s.in_channels / a.group;
  s.cout_g = w[1];
  s.out_channels = s.cout_g * a.group;
  s.in = SpatialDims(x);
  s.kernel = KernelDims(ctx, a.window, w);
  auto check = [&](const std::vector<int64_t>& v, size_t expected, const char* name) {
    if (!v.empty() && v.size() != expected) {
      ctx.Fail(std::string(name) + " " + ShapeToString(v) + " has " + std::to_string(v.size()) +
               " values, expected " + std::to_string(expected));
    }
  };
  check(a.window.strides, r, "strides");
  check(a.window.dilations, r, "dilations");
  check(a.window.pads, 2 * r, "pads");
  check(a.output_padding, r, "output_padding");
  std::vector<int64_t> requested = a.output_shape;
  if (requested.size() == r + 2) requested.erase(requested.begin(), requested.begin() + 2);
  check(requested, r, "output_shape");
  s.strides = a.window.strides.empty() ? std::vector<int64_t>(r, 1) : a.window.strides;
  s.dilations = a.window.dilations.empty() ? std::vector<int64_t>(r, 1) : a.window.dilations;
  const std::vector<int64_t> out_pad =
      a.output_padding.empty() ? std::vector<int64_t>(r, 0) : a.output_padding;
  const bool same = a.window.auto_pad == "SAME_UPPER" || a.window.auto_pad == "SAME_LOWER";
  s.pads_begin.assign(r, 0);
  s.out.assign(r, 0);
  for (size_t d = 0; d < r; ++d) {
    const int64_t full = s.strides[d] * (s.in[d] - 1) + out_pad[d] + (s.kernel[d] - 1) * s.dilations[d] + 1;
    if (!requested.empty() || same) {
      s.out[d] = !requested.empty() ? requested[d] : s.in[d] * s.strides[d];
      const int64_t total = full - s.out[d];
      s.pads_begin[d] = a.window.auto_pad == "SAME_UPPER" ? FloorHalf(total) : total - FloorHalf(total);
    } else {
      if (a.window.auto_pad == "NOTSET" && !a.window.pads.empty()) s.pads_begin[d] = a.window.pads[d];
      const int64_t pad_end =
          a.window.auto_pad == "NOTSET" && !a.window.pads.empty() ? a.window.pads[d + r] : 0;
      s.out[d] = full - s.pads_begin[d] - pad_end;
    }
    if (s.out[d] <= 0) ctx.Fail("the output of input " + ShapeToString(x) + " would be empty");
  }
  s.in_size = ShapeElementCount(s.in);
  s.out_size = ShapeElementCount(s.out);
  s.kernel_size = ShapeElementCount(s.kernel);
  s.y_dims = {s.batch, s.out_channels};
  s.y_dims.insert(s.y_dims.end(), s.out.begin(), s.out.end());
  return s;
}

template <typename T>
void ReferenceConvTranspose(KernelContext& ctx, const ConvTransposeAttrs& a) {
  const Tensor& x = ctx.required_input(0);
  const Tensor& w = ctx.required_input(1);
  const Tensor* b = ctx.input(2);
  if (w.dtype() != x.dtype() || (b != nullptr && b->dtype() != x.dtype()))
    ctx.Fail("X, W and B have different element types");
  const ConvTransposeShape s = ResolveConvTranspose(ctx, a, x.dims(), w.dims());
  CheckBias(ctx, b, s.out_channels);
  const size_t r = s.in.size();
  const std::vector<int64_t> in_coord = Coordinates(s.in), kernel_coord = Coordinates(s.kernel);
  const std::vector<int64_t> out_strides = Strides(s.out);
  std::vector<double> acc(static_cast<size_t>(s.batch * s.out_channels * s.out_size), 0.0);
  const T* px = x.data<T>();
  const T* pw = w.data<T>();
  for (int64_t n = 0; n < s.batch; ++n) {
    for (int64_t c = 0; c < s.in_channels; ++c) {
      const int64_t grp = c / s.cin_g;
      for (int64_t i = 0; i < s.in_size; ++i) {
        const double xv = static_cast<double>(px[(n * s.in_channels + c) * s.in_size + i]);
        for (int64_t co = 0; co < s.cout_g; ++co) {
          const int64_t m = grp * s.cout_g + co;
          for (int64_t k = 0; k < s.kernel_size; ++k) {
            int64_t offset = 0;
            bool inside = true;
            for (size_t d = 0; d < r && inside; ++d) {
              const int64_t pos = in_coord[static_cast<size_t>(i) * r + d] * s.strides[d] - s.pads_begin[d] +
                                  kernel_coord[static_cast<size_t>(k) * r + d] * s.dilations[d];
              inside = pos >= 0 && pos < s.out[d];
              offset += pos * out_strides[d];
            }
            if (!inside) continue;
            acc[static_cast<size_t>((n * s.out_channels + m) * s.out_size + offset)] +=
                xv * static_cast<double>(pw[(c * s.cout_g + co) * s.kernel_size + k]);
          }
        }
      }
    }
  }
  Tensor& y = ctx.Output(0, x.dtype(), s.y_dims);
  T* py = y.mutable_data<T>();
  for (size_t i = 0; i < acc.size(); ++i) {
    const int64_t m = static_cast<int64_t>(i) / s.out_size % s.out_channels;
    py[i] = static_cast<T>(acc[i] + (b != nullptr ? static_cast<double>(b->data<T>()[m]) : 0.0));
  }
}

// Adds columns [j0, j0 + nc) of col ([Cout_g * kernel, nc], row stride ld) into the output planes of one
// image and group: the input position of each column, moved by each kernel offset, lands on one output
// position. in_coord / kernel_coord: Coordinates(s.in) / Coordinates(s.kernel).
void Col2Im(const ConvTransposeShape& s, const std::vector<int64_t>& in_coord,
            const std::vector<int64_t>& kernel_coord, const float* col, int64_t ld, int64_t j0, int64_t nc,
            float* y) {
  const size_t r = s.in.size();
  const std::vector<int64_t> out_strides = Strides(s.out);
  std::vector<int64_t> target(static_cast<size_t>(nc));
  for (int64_t k = 0; k < s.kernel_size; ++k) {
    // Output offset of every input column for this kernel offset, -1 outside the output.
    for (int64_t j = 0; j < nc; ++j) {
      int64_t offset = 0;
      bool inside = true;
      for (size_t d = 0; d < r && inside; ++d) {
        const int64_t pos = in_coord[static_cast<size_t>(j0 + j) * r + d] * s.strides[d] - s.pads_begin[d] +
                            kernel_coord[static_cast<size_t>(k) * r + d] * s.dilations[d];
        inside = pos >= 0 && pos < s.out[d];
        offset += pos * out_strides[d];
      }
      target[static_cast<size_t>(j)] = inside ? offset : -1;
    }
    for (int64_t co = 0; co < s.cout_g; ++co) {
      const float* src = col + (co * s.kernel_size + k) * ld;
      float* plane = y + co * s.out_size;
      for (int64_t j = 0; j < nc; ++j) {
        const int64_t t = target[static_cast<size_t>(j)];
        if (t >= 0) plane[t] += src[j];
      }
    }
  }
}

class FastConvTranspose : public Kernel {
 public:
  explicit FastConvTranspose(const KernelInfo& info) : attrs_(ParseConvTransposeAttrs(info)) {
    const Tensor* w = info.constant_input(1);
    if (w == nullptr || w->rank() < 3 || !IsFloatingPoint(w->dtype()) || w->dtype() == DType::kDouble) return;
    if (w->dims()[0] % attrs_.group != 0) return;  // reported at run time
    weights_.dims = w->dims();
    weights_.packed = PackWeights(ToFloats(info, *w).data(), w->dims(), attrs_.group);
  }

  void Run(KernelContext& ctx) override {
    const Tensor& x = ctx.required_input(0);
    const Tensor& w = ctx.required_input(1);
    const Tensor* b = ctx.input(2);
    if (x.dtype() != DType::kFloat || w.dtype() != DType::kFloat ||
        (b != nullptr && b->dtype() != DType::kFloat)) {
      if (x.dtype() != DType::kDouble)
        ctx.Fail(std::string("element type ") + DTypeName(x.dtype()) + " is not supported");
      ReferenceConvTranspose<double>(ctx, attrs_);
      return;
    }
    const ConvTransposeShape s = ResolveConvTranspose(ctx, attrs_, x.dims(), w.dims());
    CheckBias(ctx, b, s.out_channels);
    Tensor& y = ctx.Output(0, DType::kFloat, s.y_dims);
    if (s.batch * s.out_channels * s.out_size == 0) return;
    AlignedFloats packed_now;
    const float* packed = weights_.packed.data();
    if (weights_.dims != w.dims()) {
      packed_now = PackWeights(w.data<float>(), w.dims(), s.group);
      packed = packed_now.data();
    }
    const int64_t rows = s.cout_g * s.kernel_size;  // GEMM rows: (output channel, kernel offset)
    const int64_t per_group = gemm::PackedASize(rows, s.cin_g);
    const int64_t max_cols = std::max(kNr, kColBlockFloats / std::max<int64_t>(1, rows) / kNr * kNr);
    const int64_t blocks = (s.in_size + max_cols - 1) / max_cols;
    const int64_t cols = gemm::RoundUp((s.in_size + blocks - 1) / blocks, kNr);
    const float* px = x.data<float>();
    const float* bias = b != nullptr ? b->data<float>() : nullptr;
    float* py = y.mutable_data<float>();
    const std::vector<int64_t> in_coord = Coordinates(s.in), kernel_coord = Coordinates(s.kernel);
    ctx.pool().ParallelFor(s.batch * s.group, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t grp = t % s.group, n = t / s.group;
        const float* xg = px + (n * s.in_channels + grp * s.cin_g) * s.in_size;
        float* yg = py + (n * s.out_channels + grp * s.cout_g) * s.out_size;
        for (int64_t co = 0; co < s.cout_g; ++co) {
          std::fill(yg + co * s.out_size, yg + (co + 1) * s.out_size,
                    bias != nullptr ? bias[grp * s.cout_g + co] : 0.0f);
        }
        for (int64_t j0 = 0; j0 < s.in_size; j0 += cols) {
          const int64_t nc = std::min(cols, s.in_size - j0);
          float* xb = gemm::Scratch(1, gemm::PackedBSize(s.cin_g, nc));
          gemm::PackB(xg + j0, s.in_size, 1, s.cin_g, nc, xb);
          float* col = gemm::Scratch(2, rows * nc);
          gemm::Multiply(rows, nc, s.cin_g, AView{packed + grp * per_group}, BView{xb, kNr, s.cin_g * kNr},
                         col, nc, Init::kZero);
          Col2Im(s, in_coord, kernel_coord, col, nc, j0, nc, yg);
        }
      }
    });
  }

 private:
  // Per group, W_g^T ([Cout_g * kernel, Cin_g]) packed as the GEMM's left operand.
  static AlignedFloats PackWeights(const float* w, const std::vector<int64_t>& dims, int64_t group) {
    const int64_t cin_g = dims[0] / group;
    const int64_t rows = ShapeElementCount(dims) / std::max<int64_t>(1, dims[0]);  // Cout_g * kernel
    const int64_t per_group = gemm::PackedASize(rows, cin_g);
    AlignedFloats packed(group * per_group);
    for (int64_t g = 0; g < group; ++g) {
      gemm::PackA(w + g * cin_g * rows, 1, rows, rows, cin_g, 1.0f, packed.data() + g * per_group);
    }
    return packed;
  }

  ConvTransposeAttrs attrs_;
  ConstantWeights weights_;
};

// ---------------------------------------------------------------------------------------------------------
// ConvInteger, QLinearConv

int32_t ScalarZeroPoint(const KernelContext& ctx, const Tensor* zp, DType expected, const char* name) {
  if (zp == nullptr) return 0;
  if (zp->dtype() != expected) {
    ctx.Fail(std::string(name) + " is " + DTypeName(zp->dtype()) + " but its input is " +
             DTypeName(expected));
  }
  if (zp->numel() != 1) ctx.Fail(std::string(name) + " must be a scalar, got " + ShapeToString(zp->dims()));
  return Int8At(*zp, 0);
}

// Per-tensor or per-output-channel weight zero points, one per channel.
std::vector<int32_t> WeightZeroPoints(const KernelContext& ctx, const Tensor* zp, DType expected,
                                      int64_t channels) {
  if (zp == nullptr) return std::vector<int32_t>(static_cast<size_t>(channels), 0);
  if (zp->dtype() != expected) {
    ctx.Fail(std::string("w_zero_point is ") + DTypeName(zp->dtype()) + " but w is " + DTypeName(expected));
  }
  if (zp->numel() != 1 && zp->numel() != channels) {
    ctx.Fail("w_zero_point " + ShapeToString(zp->dims()) + " must be a scalar or have " +
             std::to_string(channels) + " values");
  }
  std::vector<int32_t> v(static_cast<size_t>(channels));
  for (int64_t m = 0; m < channels; ++m) v[static_cast<size_t>(m)] = Int8At(*zp, zp->numel() == 1 ? 0 : m);
  return v;
}

// Input positions of x, w, x_zp, w_zp: ConvInteger 0, 1, 2, 3; QLinearConv 0, 3, 2, 5.
struct IntegerConvInputs {
  size_t x, w, x_zp, w_zp;
};
constexpr IntegerConvInputs kConvIntegerInputs{0, 1, 2, 3};
constexpr IntegerConvInputs kQLinearConvInputs{0, 3, 2, 5};

struct IntegerConvOperands {
  const Tensor* x = nullptr;
  const Tensor* w = nullptr;
  ConvShape shape;
  int32_t x_zp = 0;
  std::vector<int32_t> w_zp;  // per output channel
};

IntegerConvOperands ResolveIntegerConv(const KernelContext& ctx, const ConvAttrs& a,
                                       const IntegerConvInputs& in) {
  IntegerConvOperands op;
  op.x = &ctx.required_input(in.x);
  op.w = &ctx.required_input(in.w);
  if (!IsInt8(op.x->dtype()) || !IsInt8(op.w->dtype())) {
    ctx.Fail(std::string("x and w must be int8 or uint8, got ") + DTypeName(op.x->dtype()) + " and " +
             DTypeName(op.w->dtype()));
  }
  op.shape = ResolveConv(ctx, a, op.x->dims(), op.w->dims());
  op.x_zp = ScalarZeroPoint(ctx, ctx.input(in.x_zp), op.x->dtype(), "x_zero_point");
  op.w_zp = WeightZeroPoints(ctx, ctx.input(in.w_zp), op.w->dtype(), op.shape.out_channels);
  return op;
}

// acc[n, m, o] = sum of (x - x_zp)(w - w_zp[m]) over the window, int32 wrapping; padding adds nothing.
std::vector<int32_t> ReferenceIntegerConv(const IntegerConvOperands& op) {
  const std::vector<uint32_t> acc = DirectConv<uint32_t>(
      op.shape, [&](int64_t i) { return Int8At(*op.x, i) - op.x_zp; },
      [&](int64_t i, int64_t m) { return Int8At(*op.w, i) - op.w_zp[static_cast<size_t>(m)]; });
  return std::vector<int32_t>(acc.begin(), acc.end());
}

// The weights less their zero points, as floats [M, Cin_g * kernel] (exact small integers).
std::vector<float> ShiftedWeights(const Tensor& w, const std::vector<int32_t>& w_zp) {
  const int64_t channels = w.dims()[0], k = w.numel() / std::max<int64_t>(1, channels);
  std::vector<float> shifted(static_cast<size_t>(w.numel()));
  for (int64_t m = 0; m < channels; ++m) {
    for (int64_t p = 0; p < k; ++p) {
      shifted[static_cast<size_t>(m * k + p)] =
          static_cast<float>(Int8At(w, m * k + p) - w_zp[static_cast<size_t>(m)]);
    }
  }
  return shifted;
}

// The same accumulators by im2col and the float GEMM, exact (see gemm::MultiplyExact): x less its zero point
// as floats, so that padding (zeros) adds nothing, as in the reference.
std::vector<int32_t> FastIntegerConv(KernelContext& ctx, const IntegerConvOperands& op,
                                     const float* shifted_w) {
  const ConvShape& s = op.shape;
  std::vector<int32_t> acc(static_cast<size_t>(s.batch * s.out_channels * s.out_size));
  if (acc.empty()) return acc;
  const int64_t max_cols = std::max(kNr, kColBlockFloats / std::max<int64_t>(1, s.k) / kNr * kNr);
  const int64_t blocks = (s.out_size + max_cols - 1) / max_cols;
  const int64_t cols = gemm::RoundUp((s.out_size + blocks - 1) / blocks, kNr);
  const int64_t ld = PanelRowLength(cols + gemm::kCopyOver);
  ctx.pool().ParallelFor(s.batch * s.group, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t grp = t % s.group, n = t / s.group, m0 = grp * s.cout_g;
      const int64_t x0 = (n * s.in_channels + grp * s.cin_g) * s.in_size;
      float* xf = gemm::Scratch(0, s.cin_g * s.in_size);
      for (int64_t i = 0; i < s.cin_g * s.in_size; ++i)
        xf[i] = static_cast<float>(Int8At(*op.x, x0 + i) - op.x_zp);
      for (int64_t j0 = 0; j0 < s.out_size; j0 += cols) {
        const int64_t nc = std::min(cols, s.out_size - j0);
        float* col = gemm::Scratch(1, s.k * ld + gemm::kCopyOver);
        Im2Col(s, xf, j0, nc, col, ld);
        ZeroColumns(s.k, nc, ld, col);
        gemm::MultiplyExact(s.cout_g, nc, s.k, AView{shifted_w + m0 * s.k, s.k}, BView{col, ld, kNr},
                            acc.data() + (n * s.out_channels + m0) * s.out_size + j0, s.out_size);
      }
    }
  });
  return acc;
}

float ScalarScale(const KernelContext& ctx, const Tensor& t, const char* name) {
  if (t.dtype() != DType::kFloat || t.numel() != 1) {
    ctx.Fail(std::string(name) + " must be a float32 scalar, got " + DTypeName(t.dtype()) +
             ShapeToString(t.dims()));
  }
  return t.data<float>()[0];
}

// QLinearConv's output quantisation, validated.
struct QLinearConvOutput {
  std::vector<float> multipliers;  // per output channel: x_scale * w_scale / y_scale
  const int32_t* bias = nullptr;   // per output channel, or null
  DType dtype = DType::kUInt8;
  int32_t zero_point = 0, lo = 0, hi = 255;
};

QLinearConvOutput ResolveQLinearConvOutput(const KernelContext& ctx, const ConvShape& s) {
  const float x_scale = ScalarScale(ctx, ctx.required_input(1), "x_scale");
  const float y_scale = ScalarScale(ctx, ctx.required_input(6), "y_scale");
  const Tensor& w_scale_t = ctx.required_input(4);
  if (w_scale_t.dtype() != DType::kFloat || (w_scale_t.numel() != 1 && w_scale_t.numel() != s.out_channels)) {
    ctx.Fail("w_scale " + ShapeToString(w_scale_t.dims()) + " must be float32 with 1 or " +
             std::to_string(s.out_channels) + " values");
  }
  const Tensor& y_zp_t = ctx.required_input(7);
  if (!IsInt8(y_zp_t.dtype()) || y_zp_t.numel() != 1) {
    ctx.Fail("y_zero_point must be an int8 or uint8 scalar, got " + std::string(DTypeName(y_zp_t.dtype())) +
             ShapeToString(y_zp_t.dims()));
  }
  const Tensor* bias = ctx.input(8);
  if (bias != nullptr && (bias->dtype() != DType::kInt32 || bias->numel() != s.out_channels)) {
    ctx.Fail("bias B must be int32 [" + std::to_string(s.out_channels) + "], got " +
             std::string(DTypeName(bias->dtype())) + ShapeToString(bias->dims()));
  }
  QLinearConvOutput q;
  const float* w_scale = w_scale_t.data<float>();
  for (int64_t m = 0; m < s.out_channels; ++m) {
    q.multipliers.push_back(x_scale * w_scale[w_scale_t.numel() == 1 ? 0 : m] / y_scale);
  }
  q.bias = bias != nullptr ? bias->data<int32_t>() : nullptr;
  q.dtype = y_zp_t.dtype();
  q.zero_point = Int8At(y_zp_t, 0);
  const bool is_signed = q.dtype == DType::kInt8;
  q.lo = is_signed ? -128 : 0;
  q.hi = is_signed ? 127 : 255;
  return q;
}

void WriteQLinearConv(KernelContext& ctx, const ConvShape& s, const std::vector<int32_t>& acc) {
  const QLinearConvOutput q = ResolveQLinearConvOutput(ctx, s);
  Tensor& y = ctx.Output(0, q.dtype, s.y_dims);
  auto* out = static_cast<uint8_t*>(y.mutable_raw());
  for (size_t i = 0; i < acc.size(); ++i) {
    const auto m = static_cast<size_t>(static_cast<int64_t>(i) / s.out_size % s.out_channels);
    const int32_t v = static_cast<int32_t>(static_cast<uint32_t>(acc[i]) +
                                           static_cast<uint32_t>(q.bias != nullptr ? q.bias[m] : 0));
    // int8 results are stored through their two's complement byte.
    out[i] = static_cast<uint8_t>(Requantize(v, q.multipliers[m], q.zero_point, q.lo, q.hi));
  }
}

// ConvInteger / QLinearConv with the weights packed at build time. A task is one column block of one image
// and group: its 8-bit im2col (none for a 1x1 convolution of uint8 data, which is its own im2col) times the
// group's rows of weights by qgemm, straight into the int32 output, or into a block of accumulators then
// requantised channel by channel to the 8-bit output.
void PackedIntegerConv(KernelContext& ctx, const IntegerConvOperands& op, const qgemm::PackedWeights& w,
                       bool qlinear) {
  const ConvShape& s = op.shape;
  std::optional<QLinearConvOutput> q;
  if (qlinear) q = ResolveQLinearConvOutput(ctx, s);
  Tensor& y = ctx.Output(0, qlinear ? q->dtype : DType::kInt32, s.y_dims);
  if (s.batch * s.out_channels * s.out_size == 0) return;
  const bool x_signed = op.x->dtype() == DType::kInt8;
  const uint8_t flip = x_signed ? 0x80 : 0;
  const int32_t x_zp = op.x_zp + (x_signed ? 128 : 0);  // of x as uint8
  const bool direct = IsPointwise(s.geo) && !x_signed;
  // Blocks of whole panels, spread evenly over the image.
  const int64_t max_cols = std::max<int64_t>(16, kColBlockBytes / std::max<int64_t>(1, s.k) / 16 * 16);
  const int64_t blocks = (s.out_size + max_cols - 1) / max_cols;
  const int64_t cols = gemm::RoundUp((s.out_size + blocks - 1) / blocks, 16);
  const int64_t ld = cols + kByteBlock;
  const auto* px = static_cast<const uint8_t*>(op.x->raw());
  const int64_t x_size = op.x->numel();
  ctx.pool().ParallelFor(s.batch * s.group * blocks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t blk = t % blocks, grp = t / blocks % s.group, n = t / blocks / s.group;
      const int64_t j0 = blk * cols, nc = std::min(cols, s.out_size - j0);
      if (nc <= 0) continue;
      const uint8_t* xg = px + (n * s.in_channels + grp * s.cin_g) * s.in_size;
      const int64_t m0 = grp * s.cout_g;
      const uint8_t* xcol = xg + j0;
      int64_t ldx = s.in_size;
      if (!direct) {
        uint8_t* col = qgemm::Scratch(1, s.k * ld);
        Im2ColBytes(s, xg, x_size - (xg - px), flip, static_cast<uint8_t>(x_zp), j0, nc, col, ld);
        xcol = col;
        ldx = ld;
      }
      const int64_t y0 = (n * s.out_channels + m0) * s.out_size + j0;
      if (!qlinear) {
        qgemm::MultiplyLeft(w, m0, s.cout_g, nc, xcol, ldx, x_zp, y.mutable_data<int32_t>() + y0, s.out_size);
        continue;
      }
      int32_t* acc = qgemm::ScratchOf<int32_t>(2, s.cout_g * nc);
      qgemm::MultiplyLeft(w, m0, s.cout_g, nc, xcol, ldx, x_zp, acc, nc);
      auto* out = static_cast<uint8_t*>(y.mutable_raw()) + y0;
      for (int64_t m = 0; m < s.cout_g; ++m) {
        qgemm::Requantization rq;
        rq.bias = q->bias != nullptr ? q->bias + m0 + m : nullptr;
        rq.multipliers = q->multipliers.data() + m0 + m;
        rq.zero_point = q->zero_point;
        rq.lo = q->lo;
        rq.hi = q->hi;
        qgemm::Requantize(acc + m * nc, nc, rq, out + m * s.out_size);
      }
    }
  });
}

// ConvInteger or QLinearConv, reference or fast. The fast kernel packs constant 8-bit weights (with constant
// zero points) once for qgemm.
class IntegerConvKernel : public Kernel {
 public:
  IntegerConvKernel(const KernelInfo& info, bool qlinear, bool fast)
      : attrs_(ParseConvAttrs(info)),
        qlinear_(qlinear),
        fast_(fast),
        inputs_(qlinear ? kQLinearConvInputs : kConvIntegerInputs) {
    const Tensor* w = info.constant_input(inputs_.w);
    const Tensor* zp = info.constant_input(inputs_.w_zp);
    const bool zp_known =
        zp != nullptr || info.node->inputs.size() <= inputs_.w_zp || info.node->inputs[inputs_.w_zp].empty();
    if (!fast || w == nullptr || !zp_known || !IsInt8(w->dtype()) || w->rank() < 3) return;
    // Without a SIMD path qgemm's plain loops are slower than the float GEMM on small integers.
    if (qgemm::DefaultIsa() == qgemm::Isa::kScalar) return;
    const int64_t channels = w->dims()[0];
    if (zp != nullptr && (zp->dtype() != w->dtype() || (zp->numel() != 1 && zp->numel() != channels))) return;
    std::vector<int32_t> w_zp(zp != nullptr ? static_cast<size_t>(zp->numel()) : 1, 0);
    for (size_t m = 0; m < w_zp.size() && zp != nullptr; ++m) w_zp[m] = Int8At(*zp, static_cast<int64_t>(m));
    packed_ = qgemm::PackedWeights::Left(static_cast<const uint8_t*>(w->raw()), w->dtype() == DType::kInt8,
                                         channels, w->numel() / std::max<int64_t>(1, channels), w_zp);
  }

  void Run(KernelContext& ctx) override {
    const IntegerConvOperands op = ResolveIntegerConv(ctx, attrs_, inputs_);
    if (!packed_.empty()) {
      PackedIntegerConv(ctx, op, packed_, qlinear_);
      return;
    }
    const std::vector<int32_t> acc =
        fast_ ? FastIntegerConv(ctx, op, ShiftedWeights(*op.w, op.w_zp).data()) : ReferenceIntegerConv(op);
    if (qlinear_) {
      WriteQLinearConv(ctx, op.shape, acc);
    } else {
      Tensor& y = ctx.Output(0, DType::kInt32, op.shape.y_dims);
      std::copy(acc.begin(), acc.end(), y.mutable_data<int32_t>());
    }
  }

 private:
  ConvAttrs attrs_;
  bool qlinear_, fast_;
  IntegerConvInputs inputs_;
  qgemm::PackedWeights packed_;
};

}  // namespace

void RegisterConvKernels(KernelRegistry& r) {
  AddKernel(r, "Conv", 1, 1000, [](const KernelInfo& info) {
    const ConvAttrs a = ParseConvAttrs(info);
    return MakeKernel([a](KernelContext& ctx) {
      const DType t = ctx.required_input(0).dtype();
      if (t == DType::kFloat) {
        ReferenceConv<float>(ctx, a);
      } else if (t == DType::kDouble) {
        ReferenceConv<double>(ctx, a);
      } else {
        ctx.Fail(std::string("element type ") + DTypeName(t) + " is not supported");
      }
    });
  });
  AddKernel(
      r, "Conv", 1, 1000, [](const KernelInfo& info) { return std::make_unique<FastConv>(info); },
      KernelVariant::kFast);
  AddKernel(r, "ConvTranspose", 1, 1000, [](const KernelInfo& info) {
    const ConvTransposeAttrs a = ParseConvTransposeAttrs(info);
    return MakeKernel([a](KernelContext& ctx) {
      const DType t = ctx.required_input(0).dtype();
      if (t == DType::kFloat) {
        ReferenceConvTranspose<float>(ctx, a);
      } else if (t == DType::kDouble) {
        ReferenceConvTranspose<double>(ctx, a);
      } else {
        ctx.Fail(std::string("element type ") + DTypeName(t) + " is not supported");
      }
    });
  });
  AddKernel(
      r, "ConvTranspose", 1, 1000,
      [](const KernelInfo& info) { return std::make_unique<FastConvTranspose>(info); }, KernelVariant::kFast);
  for (const bool qlinear : {false, true}) {
    for (const bool fast : {false, true}) {
      AddKernel(
          r, qlinear ? "QLinearConv" : "ConvInteger", 10, 1000,
          [qlinear, fast](const KernelInfo& info) {
            return std::make_unique<IntegerConvKernel>(info, qlinear, fast);
          },
          fast ? KernelVariant::kFast : KernelVariant::kReference);
    }
  }
}

}  // namespace compress::kernels
