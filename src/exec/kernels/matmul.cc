// Gemm, MatMul, MatMulInteger, QLinearMatMul, and the single-precision GEMM the convolutions share.
//
// Reference kernels are direct triple loops that accumulate in double (floating point) or in wrapping
// integers.
//
// The fast float kernels use a Goto/BLIS-style GEMM: B is packed into panels of kNr columns interleaved
// along k (constant weights once, when the kernel is built), A is packed into panels of kMr rows or read in
// place, and a register-blocked micro-kernel computes one kMr x kNr tile of C over a block of k short
// enough for its B panel to stay in L1, while a block of kMc rows of A stays in L2. The micro-kernel uses
// AVX-512 or AVX2+FMA when the CPU has them (picked at run time, so the binary stays portable) and plain C++
// otherwise; UseKernelIsa (compress/exec/isa.h) switches for tests and benchmarks.
// Threads split C by rows or by batch matrix, never along k, so results do not depend on the thread count.
//
// The fast integer kernels multiply a constant B (with constant zero points), packed once, by the exact 8-bit
// integer GEMM of qgemm.h when the CPU has one of its SIMD paths; other operands go through the float GEMM
// less their zero points, also exactly: see MultiplyExact.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <optional>
#include <type_traits>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define COMPRESS_GEMM_X86 1
#endif

#include "common.h"
#include "kernels.h"
#include "qgemm.h"

namespace compress::kernels {

namespace gemm {

namespace {

// Largest k block: a kKc x kNr panel of B (20 KiB) and a kKc x kMr panel of A stay in L1 together.
constexpr int64_t kKc = 320;
// Rows of A per block: kMc x kKc floats (150 KiB) stay in L2 while the column panels of B stream by.
constexpr int64_t kMc = 120;
static_assert(kMc % kMr == 0, "row blocks must hold whole panels");

// Element (i, p) of the A tile is a[i * a_row + p * a_step]: (1, kMr) for PackA panels, (lda, 1) in place.
using MicroKernel = void (*)(int64_t kc, const float* a, int64_t a_row, int64_t a_step, const float* b,
                             int64_t b_stride, float* c, int64_t ldc, Init init, const float* bias);

// C tile (kRows x kNr, kRows <= kMr) = init + sum over p of a[i * a_row + p * a_step] * b[p * b_stride + j],
// p ascending.
template <int kRows>
void MicroPortable(int64_t kc, const float* a, int64_t a_row, int64_t a_step, const float* b,
                   int64_t b_stride, float* c, int64_t ldc, Init init, const float* bias) {
  float acc[kRows][kNr];
  for (int i = 0; i < kRows; ++i) {
    for (int64_t j = 0; j < kNr; ++j) {
      acc[i][j] = init == Init::kAccumulate ? c[i * ldc + j] : init == Init::kRowBias ? bias[i] : 0.0f;
    }
  }
  for (int64_t p = 0; p < kc; ++p, a += a_step, b += b_stride) {
    for (int i = 0; i < kRows; ++i) {
      for (int64_t j = 0; j < kNr; ++j) acc[i][j] += a[i * a_row] * b[j];
    }
  }
  for (int i = 0; i < kRows; ++i) {
    for (int64_t j = 0; j < kNr; ++j) c[i * ldc + j] = acc[i][j];
  }
}

#ifdef COMPRESS_GEMM_X86
// Same contract with 2 * kRows ymm accumulators (kRows rows x 2 x 8 columns) and fused multiply-adds; the
// loops unroll completely, so the accumulators live in registers.
template <int kRows>
__attribute__((target("avx2,fma"))) void MicroAvx2(int64_t kc, const float* a, int64_t a_row, int64_t a_step,
                                                   const float* b, int64_t b_stride, float* c, int64_t ldc,
                                                   Init init, const float* bias) {
  __m256 acc[kRows][2];
#pragma GCC unroll 6
  for (int i = 0; i < kRows; ++i) {
    if (init == Init::kAccumulate) {
      acc[i][0] = _mm256_loadu_ps(c + i * ldc);
      acc[i][1] = _mm256_loadu_ps(c + i * ldc + 8);
    } else {
      acc[i][0] = acc[i][1] = init == Init::kRowBias ? _mm256_set1_ps(bias[i]) : _mm256_setzero_ps();
    }
  }
#pragma GCC unroll 4
  for (int64_t p = 0; p < kc; ++p, a += a_step, b += b_stride) {
    const __m256 b0 = _mm256_loadu_ps(b);
    const __m256 b1 = _mm256_loadu_ps(b + 8);
#pragma GCC unroll 6
    for (int i = 0; i < kRows; ++i) {
      const __m256 av = _mm256_broadcast_ss(a + i * a_row);
      acc[i][0] = _mm256_fmadd_ps(av, b0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(av, b1, acc[i][1]);
    }
  }
#pragma GCC unroll 6
  for (int i = 0; i < kRows; ++i) {
    _mm256_storeu_ps(c + i * ldc, acc[i][0]);
    _mm256_storeu_ps(c + i * ldc + 8, acc[i][1]);
  }
}
#endif

#ifdef COMPRESS_GEMM_X86
// The same tile with one zmm accumulator per row (16 columns): half the instructions of the AVX2 kernel for
// the same products, and twice the multiply-adds per cycle on cores with two 512-bit FMA units.
template <int kRows>
__attribute__((target("avx512f"))) void MicroAvx512(int64_t kc, const float* a, int64_t a_row, int64_t a_step,
                                                    const float* b, int64_t b_stride, float* c, int64_t ldc,
                                                    Init init, const float* bias) {
  static_assert(kNr == 16, "one zmm per row");
  __m512 acc[kRows];
#pragma GCC unroll 6
  for (int i = 0; i < kRows; ++i) {
    if (init == Init::kAccumulate) {
      acc[i] = _mm512_loadu_ps(c + i * ldc);
    } else {
      acc[i] = init == Init::kRowBias ? _mm512_set1_ps(bias[i]) : _mm512_setzero_ps();
    }
  }
#pragma GCC unroll 4
  for (int64_t p = 0; p < kc; ++p, a += a_step, b += b_stride) {
    const __m512 b0 = _mm512_loadu_ps(b);
#pragma GCC unroll 6
    for (int i = 0; i < kRows; ++i) acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(a[i * a_row]), b0, acc[i]);
  }
#pragma GCC unroll 6
  for (int i = 0; i < kRows; ++i) _mm512_storeu_ps(c + i * ldc, acc[i]);
}
#endif

using TapSumKernel = void (*)(int64_t n, int64_t taps, const float* w, const int64_t* offsets,
                              const float* src, float init, float* out);

void TapSumPortable(int64_t n, int64_t taps, const float* w, const int64_t* offsets, const float* src,
                    float init, float* out) {
  std::fill(out, out + n, init);
  for (int64_t t = 0; t < taps; ++t) {
    const float* s = src + offsets[t];
    for (int64_t i = 0; i < n; ++i) out[i] += w[t] * s[i];
  }
}

#ifdef COMPRESS_GEMM_X86
// Eight vectors of outputs stay in registers across all taps (enough independent sums to cover the FMA
// latency): one load per tap and vector, one store per vector.
__attribute__((target("avx2,fma"))) void TapSumAvx2(int64_t n, int64_t taps, const float* w,
                                                    const int64_t* offsets, const float* src, float init,
                                                    float* out) {
  const __m256 init_v = _mm256_set1_ps(init);
  if (n >= 64) {
    // A last partial block is shifted back to end at n, recomputing some outputs (out is only written), so
    // that no short, latency-bound tail remains.
    for (int64_t next = 0;; next += 64) {
      const int64_t i = std::min(next, n - 64);
      __m256 acc[8];
#pragma GCC unroll 8
      for (int v = 0; v < 8; ++v) acc[v] = init_v;
      for (int64_t t = 0; t < taps; ++t) {
        const __m256 wv = _mm256_broadcast_ss(w + t);
        const float* s = src + offsets[t] + i;
#pragma GCC unroll 8
        for (int v = 0; v < 8; ++v) acc[v] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(s + 8 * v), acc[v]);
      }
#pragma GCC unroll 8
      for (int v = 0; v < 8; ++v) _mm256_storeu_ps(out + i + 8 * v, acc[v]);
      if (i == n - 64) return;
    }
  }
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 a0 = init_v;
    for (int64_t t = 0; t < taps; ++t) {
      a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(w + t), _mm256_loadu_ps(src + offsets[t] + i), a0);
    }
    _mm256_storeu_ps(out + i, a0);
  }
  for (; i < n; ++i) {
    float a0 = init;
    for (int64_t t = 0; t < taps; ++t) a0 = std::fma(w[t], src[offsets[t] + i], a0);
    out[i] = a0;
  }
}
#endif

#ifdef COMPRESS_GEMM_X86
// TapSumAvx2 with eight zmm vectors of outputs (128 per block); shorter rows go to the AVX2 version.
__attribute__((target("avx512f"))) void TapSumAvx512(int64_t n, int64_t taps, const float* w,
                                                      const int64_t* offsets, const float* src, float init,
                                                      float* out) {
  if (n < 128) return TapSumAvx2(n, taps, w, offsets, src, init, out);
  const __m512 init_v = _mm512_set1_ps(init);
  for (int64_t next = 0;; next += 128) {
    const int64_t i = std::min(next, n - 128);
    __m512 acc[8];
#pragma GCC unroll 8
    for (int v = 0; v < 8; ++v) acc[v] = init_v;
    for (int64_t t = 0; t < taps; ++t) {
      const __m512 wv = _mm512_set1_ps(w[t]);
      const float* s = src + offsets[t] + i;
#pragma GCC unroll 8
      for (int v = 0; v < 8; ++v) acc[v] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(s + 16 * v), acc[v]);
    }
#pragma GCC unroll 8
    for (int v = 0; v < 8; ++v) _mm512_storeu_ps(out + i + 16 * v, acc[v]);
    if (i == n - 128) return;
  }
}
#endif

using CopyRowsKernel = void (*)(const RowCopy& shape, const float* src, float* dst);

void CopyRowsPortable(const RowCopy& c, const float* src, float* dst) {
  for (int64_t b = 0; b < c.blocks; ++b) {
    for (int64_t r = 0; r < c.rows; ++r) {
      std::memcpy(dst + b * c.dst_block + r * c.dst_row, src + b * c.src_block + r * c.src_row,
                  sizeof(float) * static_cast<size_t>(c.n));
    }
  }
}

#ifdef COMPRESS_GEMM_X86
__attribute__((target("avx2"))) void CopyRowsAvx2(const RowCopy& c, const float* src, float* dst) {
  static_assert(kCopyOver == 8, "one ymm per step");
  for (int64_t b = 0; b < c.blocks; ++b) {
    const float* s = src + b * c.src_block;
    float* d = dst + b * c.dst_block;
    for (int64_t r = 0; r < c.rows; ++r, s += c.src_row, d += c.dst_row) {
      for (int64_t i = 0; i < c.n; i += 8) _mm256_storeu_ps(d + i, _mm256_loadu_ps(s + i));
    }
  }
}
#endif

// The kernels of one instruction set.
struct IsaKernels {
  MicroKernel rows[kMr + 1];  // by number of rows, 1..kMr
  TapSumKernel tap_sum;
  CopyRowsKernel copy_rows;
};
static_assert(kMr == 6, "the tables list one micro-kernel per row count");

const IsaKernels kPortableKernels = {
    {nullptr, MicroPortable<1>, MicroPortable<2>, MicroPortable<3>, MicroPortable<4>, MicroPortable<5>,
     MicroPortable<6>},
    TapSumPortable,
    CopyRowsPortable};
#ifdef COMPRESS_GEMM_X86
const IsaKernels kAvx2Kernels = {
    {nullptr, MicroAvx2<1>, MicroAvx2<2>, MicroAvx2<3>, MicroAvx2<4>, MicroAvx2<5>, MicroAvx2<6>},
    TapSumAvx2,
    CopyRowsAvx2};
const IsaKernels kAvx512Kernels = {
    {nullptr, MicroAvx512<1>, MicroAvx512<2>, MicroAvx512<3>, MicroAvx512<4>, MicroAvx512<5>, MicroAvx512<6>},
    TapSumAvx512,
    CopyRowsAvx2};
#endif

const IsaKernels& KernelsOf(KernelIsa isa) {
#ifdef COMPRESS_GEMM_X86
  if (isa == KernelIsa::kAvx512) return kAvx512Kernels;
  if (isa == KernelIsa::kAvx2) return kAvx2Kernels;
#endif
  (void)isa;
  return kPortableKernels;
}

std::atomic<const IsaKernels*>& Active() {
  static std::atomic<const IsaKernels*> active{&KernelsOf(SupportedKernelIsas().front())};
  return active;
}

// A tile at the right edge of C (fewer than kNr columns): computed in full on a local copy, stored in part.
void EdgeTile(MicroKernel micro, int64_t kc, const float* a, int64_t a_row, int64_t a_step, const float* b,
              int64_t b_stride, float* c, int64_t ldc, int64_t mr, int64_t nr, Init init, const float* bias) {
  alignas(64) float tile[kMr * kNr] = {};
  for (int64_t i = 0; i < mr && init == Init::kAccumulate; ++i) {
    std::memcpy(tile + i * kNr, c + i * ldc, sizeof(float) * static_cast<size_t>(nr));
  }
  micro(kc, a, a_row, a_step, b, b_stride, tile, kNr, init, bias);
  for (int64_t i = 0; i < mr; ++i)
    std::memcpy(c + i * ldc, tile + i * kNr, sizeof(float) * static_cast<size_t>(nr));
}

}  // namespace

void PackA(const float* a, int64_t row_stride, int64_t col_stride, int64_t m, int64_t k, float alpha,
           float* packed) {
  for (int64_t i0 = 0; i0 < m; i0 += kMr) {
    float* dst = packed + i0 * k;
    const int64_t mr = std::min(kMr, m - i0);
    for (int64_t i = 0; i < kMr; ++i) {
      if (i >= mr) {
        for (int64_t p = 0; p < k; ++p) dst[p * kMr + i] = 0.0f;
        continue;
      }
      const float* src = a + (i0 + i) * row_stride;
      for (int64_t p = 0; p < k; ++p) dst[p * kMr + i] = alpha * src[p * col_stride];
    }
  }
}

void PackB(const float* b, int64_t row_stride, int64_t col_stride, int64_t k, int64_t n, float* packed) {
  for (int64_t j0 = 0; j0 < n; j0 += kNr) {
    float* dst = packed + j0 * k;
    const int64_t nr = std::min(kNr, n - j0);
    if (col_stride == 1) {
      for (int64_t p = 0; p < k; ++p) {
        std::memcpy(dst + p * kNr, b + p * row_stride + j0, sizeof(float) * static_cast<size_t>(nr));
        std::fill(dst + p * kNr + nr, dst + (p + 1) * kNr, 0.0f);
      }
    } else {
      for (int64_t j = 0; j < kNr; ++j) {
        const float* src = b + (j0 + j) * col_stride;
        for (int64_t p = 0; p < k; ++p) dst[p * kNr + j] = j < nr ? src[p * row_stride] : 0.0f;
      }
    }
  }
}

void Multiply(int64_t m, int64_t n, int64_t k, const AView& a, const BView& b, float* c, int64_t ldc,
              Init init, const float* row_bias) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    if (init == Init::kAccumulate) return;
    for (int64_t i = 0; i < m; ++i) {
      std::fill(c + i * ldc, c + i * ldc + n, init == Init::kRowBias ? row_bias[i] : 0.0f);
    }
    return;
  }
  const IsaKernels& micro = *Active().load(std::memory_order_relaxed);
  const bool packed = a.row_stride == 0;
  const int64_t a_row = packed ? 1 : a.row_stride, a_step = packed ? kMr : 1;
  // Equal k blocks (rather than kKc and a short rest) keep the C tile reloads to a minimum.
  const int64_t blocks = (k + kKc - 1) / kKc;
  const int64_t kc_max = (k + blocks - 1) / blocks;
  for (int64_t pc = 0; pc < k; pc += kc_max) {
    const int64_t kc = std::min(kc_max, k - pc);
    const Init block_init = pc == 0 ? init : Init::kAccumulate;
    for (int64_t ic = 0; ic < m; ic += kMc) {
      const int64_t ie = std::min(m, ic + kMc);
      for (int64_t jr = 0; jr < n; jr += kNr) {
        const float* bp = b.data + (jr / kNr) * b.panel_stride + pc * b.row_stride;
        const int64_t nr = std::min(kNr, n - jr);
        for (int64_t ir = ic; ir < ie; ir += kMr) {
          const float* ap = packed ? a.data + ir * k + pc * kMr : a.data + ir * a.row_stride + pc;
          const int64_t mr = std::min(kMr, ie - ir);
          float* cp = c + ir * ldc + jr;
          const float* bias = row_bias != nullptr ? row_bias + ir : nullptr;
          if (nr == kNr) {
            micro.rows[mr](kc, ap, a_row, a_step, bp, b.row_stride, cp, ldc, block_init, bias);
          } else {
            EdgeTile(micro.rows[mr], kc, ap, a_row, a_step, bp, b.row_stride, cp, ldc, mr, nr, block_init,
                     bias);
          }
        }
      }
    }
  }
}

void MultiplyExact(int64_t m, int64_t n, int64_t k, const AView& a, const BView& b, int32_t* c, int64_t ldc) {
  // 256 * 255 * 255 < 2^24.
  constexpr int64_t kExactDepth = 256;
  if (a.row_stride == 0) ThrowInternal("MultiplyExact needs a row-major left operand");
  if (m <= 0 || n <= 0) return;
  float* partial = Scratch(2, m * n);
  for (int64_t pc = 0; pc == 0 || pc < k; pc += kExactDepth) {
    const int64_t kc = std::min(kExactDepth, k - pc);
    Multiply(m, n, kc, AView{a.data + pc, a.row_stride},
             BView{b.data + pc * b.row_stride, b.row_stride, b.panel_stride}, partial, n, Init::kZero);
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        const auto v = static_cast<int32_t>(partial[i * n + j]);
        int32_t& out = c[i * ldc + j];
        out = pc == 0 ? v : static_cast<int32_t>(static_cast<uint32_t>(out) + static_cast<uint32_t>(v));
      }
    }
  }
}

void TapSum(int64_t n, int64_t taps, const float* w, const int64_t* offsets, const float* src, float init,
            float* out) {
  Active().load(std::memory_order_relaxed)->tap_sum(n, taps, w, offsets, src, init, out);
}

void CopyRowsOver(const RowCopy& shape, const float* src, float* dst) {
  Active().load(std::memory_order_relaxed)->copy_rows(shape, src, dst);
}

float* Scratch(int slot, int64_t floats) {
  struct Buffer {
    float* data = nullptr;
    int64_t size = 0;
    ~Buffer() { std::free(data); }
  };
  thread_local Buffer buffers[4];
  if (slot < 0 || slot >= 4) ThrowInternal("gemm scratch slot " + std::to_string(slot) + " out of range");
  Buffer& buf = buffers[slot];
  if (buf.size < floats) {
    std::free(buf.data);
    buf.data =
        static_cast<float*>(std::aligned_alloc(64, static_cast<size_t>(RoundUp(floats, 16)) * sizeof(float)));
    buf.size = buf.data == nullptr ? 0 : floats;
    if (buf.data == nullptr) throw std::bad_alloc();
  }
  return buf.data;
}

AlignedFloats::AlignedFloats(int64_t n) {
  const size_t bytes = static_cast<size_t>(RoundUp(std::max<int64_t>(n, 1), 16)) * sizeof(float);
  data_.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
  if (data_ == nullptr) throw std::bad_alloc();
  std::memset(data_.get(), 0, bytes);
}

void AlignedFloats::Free::operator()(float* p) const { std::free(p); }

}  // namespace gemm

namespace {

using gemm::AlignedFloats;
using gemm::AView;
using gemm::BView;
using gemm::Init;
using gemm::kNr;

// Rows of C per parallel task: whole row blocks of the GEMM.
constexpr int64_t kRowsPerTask = 120;
// Least work per task when columns are split too: below it the hand-over costs more than it saves.
constexpr int64_t kMinTaskMacs = 1 << 18;

// ---------------------------------------------------------------------------------------------------------
// Shapes

// numpy.matmul shapes: 1-D operands are promoted (A to a row, B to a column) and the promoted dim dropped
// from the output; batch dims broadcast.
struct MatMulShape {
  int64_t m = 1, k = 1, n = 1;
  std::vector<int64_t> out;
  int64_t batch = 1;                      // output matrices
  std::vector<int64_t> a_index, b_index;  // per output matrix: the A and B matrix it reads
  int64_t a_count = 1, b_count = 1;       // matrices in A and B
};

MatMulShape ResolveMatMul(const KernelContext& ctx, const std::vector<int64_t>& a_dims,
                          const std::vector<int64_t>& b_dims) {
  if (a_dims.empty() || b_dims.empty()) {
    ctx.Fail("inputs must have rank >= 1, got A " + ShapeToString(a_dims) + " and B " +
             ShapeToString(b_dims));
  }
  std::vector<int64_t> a = a_dims, b = b_dims;
  if (a.size() == 1) a.insert(a.begin(), 1);
  if (b.size() == 1) b.push_back(1);
  MatMulShape s;
  s.m = a[a.size() - 2];
  s.k = a.back();
  s.n = b.back();
  if (b[b.size() - 2] != s.k) {
    ctx.Fail("A " + ShapeToString(a_dims) + " and B " + ShapeToString(b_dims) + " do not match: A has " +
             std::to_string(s.k) + " columns, B has " + std::to_string(b[b.size() - 2]) + " rows");
  }
  const std::vector<int64_t> a_batch(a.begin(), a.end() - 2), b_batch(b.begin(), b.end() - 2);
  const std::vector<int64_t> batch = BroadcastShapes(ctx, a_batch, b_batch);
  s.out = batch;
  if (a_dims.size() > 1) s.out.push_back(s.m);
  if (b_dims.size() > 1) s.out.push_back(s.n);
  s.batch = ShapeElementCount(batch);
  s.a_count = ShapeElementCount(a_batch);
  s.b_count = ShapeElementCount(b_batch);
  s.a_index.resize(static_cast<size_t>(s.batch));
  s.b_index.resize(static_cast<size_t>(s.batch));
  const std::vector<int64_t> strides[2] = {BroadcastStrides(a_batch, batch),
                                           BroadcastStrides(b_batch, batch)};
  ForEachBroadcast(batch, strides, 0, s.batch, [&](int64_t i, const int64_t* off) {
    s.a_index[static_cast<size_t>(i)] = off[0];
    s.b_index[static_cast<size_t>(i)] = off[1];
  });
  return s;
}

// Gemm: Y [M, N] = alpha * op(A) op(B) + beta * C, C broadcast unidirectionally to [M, N].
struct GemmShape {
  int64_t m, k, n;
  bool has_c = false;
  int64_t c_row_stride = 0, c_col_stride = 0;  // 0 along broadcast dims
};

GemmShape ResolveGemm(const KernelContext& ctx, const Tensor& a, const Tensor& b, const Tensor* c,
                      bool trans_a, bool trans_b, float beta) {
  if (a.rank() != 2 || b.rank() != 2) {
    ctx.Fail("A and B must be 2-D, got A " + ShapeToString(a.dims()) + " and B " + ShapeToString(b.dims()));
  }
  GemmShape s;
  s.m = a.dims()[trans_a ? 1 : 0];
  s.k = a.dims()[trans_a ? 0 : 1];
  const int64_t kb = b.dims()[trans_b ? 1 : 0];
  s.n = b.dims()[trans_b ? 0 : 1];
  if (kb != s.k) {
    ctx.Fail("A " + ShapeToString(a.dims()) + " (transA=" + std::to_string(trans_a) + ") and B " +
             ShapeToString(b.dims()) + " (transB=" + std::to_string(trans_b) + ") do not match: K is " +
             std::to_string(s.k) + " vs " + std::to_string(kb));
  }
  if (c != nullptr && beta != 0.0f) {
    const auto& cd = c->dims();
    const int64_t rows = cd.size() == 2 ? cd[0] : 1;
    const int64_t cols = cd.empty() ? 1 : cd.back();
    if (cd.size() > 2 || (rows != 1 && rows != s.m) || (cols != 1 && cols != s.n)) {
      ctx.Fail("C " + ShapeToString(cd) + " cannot be broadcast to [" + std::to_string(s.m) + "," +
               std::to_string(s.n) + "]");
    }
    s.has_c = true;
    s.c_row_stride = rows == 1 ? 0 : cols;
    s.c_col_stride = cols == 1 ? 0 : 1;
  }
  return s;
}

// ---------------------------------------------------------------------------------------------------------
// Reference kernels

template <typename T>
using AccumulatorOf = std::conditional_t<std::is_floating_point_v<T>, double, uint64_t>;

// Integer accumulation wraps modulo 2^64 (then to the output width) instead of overflowing.
template <typename T>
AccumulatorOf<T> Widen(T v) {
  if constexpr (std::is_floating_point_v<T>) {
    return v;
  } else {
    return static_cast<uint64_t>(static_cast<int64_t>(v));
  }
}

template <typename T>
void ReferenceMatMul(KernelContext& ctx) {
  const Tensor& a = ctx.required_input(0);
  const Tensor& b = ctx.required_input(1);
  if (b.dtype() != a.dtype()) ctx.Fail("A and B have different element types");
  const MatMulShape s = ResolveMatMul(ctx, a.dims(), b.dims());
  Tensor& y = ctx.Output(0, a.dtype(), s.out);
  const T* pa = a.data<T>();
  const T* pb = b.data<T>();
  T* py = y.mutable_data<T>();
  for (int64_t bi = 0; bi < s.batch; ++bi) {
    const T* am = pa + s.a_index[static_cast<size_t>(bi)] * s.m * s.k;
    const T* bm = pb + s.b_index[static_cast<size_t>(bi)] * s.k * s.n;
    for (int64_t i = 0; i < s.m; ++i) {
      for (int64_t j = 0; j < s.n; ++j) {
        AccumulatorOf<T> acc = 0;
        for (int64_t p = 0; p < s.k; ++p) acc += Widen(am[i * s.k + p]) * Widen(bm[p * s.n + j]);
        py[(bi * s.m + i) * s.n + j] = static_cast<T>(acc);
      }
    }
  }
}

struct GemmAttrs {
  bool trans_a = false, trans_b = false;
  float alpha = 1.0f, beta = 1.0f;
};

GemmAttrs ParseGemmAttrs(const KernelInfo& info) {
  GemmAttrs g;
  g.trans_a = info.node->AttrInt("transA", 0) != 0;
  g.trans_b = info.node->AttrInt("transB", 0) != 0;
  g.alpha = info.node->AttrFloat("alpha", 1.0f);
  g.beta = info.node->AttrFloat("beta", 1.0f);
  return g;
}

template <typename T>
void ReferenceGemm(KernelContext& ctx, const GemmAttrs& g) {
  const Tensor& a = ctx.required_input(0);
  const Tensor& b = ctx.required_input(1);
  const Tensor* c = ctx.input(2);
  if (b.dtype() != a.dtype() || (c != nullptr && c->dtype() != a.dtype())) {
    ctx.Fail("A, B and C have different element types");
  }
  const GemmShape s = ResolveGemm(ctx, a, b, c, g.trans_a, g.trans_b, g.beta);
  Tensor& y = ctx.Output(0, a.dtype(), {s.m, s.n});
  const T* pa = a.data<T>();
  const T* pb = b.data<T>();
  const T* pc = s.has_c ? c->data<T>() : nullptr;
  T* py = y.mutable_data<T>();
  for (int64_t i = 0; i < s.m; ++i) {
    for (int64_t j = 0; j < s.n; ++j) {
      double acc = 0;
      for (int64_t p = 0; p < s.k; ++p) {
        const T av = g.trans_a ? pa[p * s.m + i] : pa[i * s.k + p];
        const T bv = g.trans_b ? pb[j * s.k + p] : pb[p * s.n + j];
        acc += static_cast<double>(av) * static_cast<double>(bv);
      }
      double v = static_cast<double>(g.alpha) * acc;
      if (pc != nullptr)
        v += static_cast<double>(g.beta) * static_cast<double>(pc[i * s.c_row_stride + j * s.c_col_stride]);
      py[i * s.n + j] = static_cast<T>(v);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Fast float kernels

// Right operands packed once at build time when they are constant.
struct PackedWeights {
  AlignedFloats data;
  std::vector<int64_t> dims;  // the constant's dims, to check they still apply at run time
};

class FastMatMul : public Kernel {
 public:
  explicit FastMatMul(const KernelInfo& info) {
    const Tensor* b = info.constant_input(1);
    if (b == nullptr || b->rank() < 1 || !IsFloatingPoint(b->dtype()) || b->dtype() == DType::kDouble) return;
    const std::vector<float> values = ToFloats(info, *b);
    const int64_t k = b->rank() == 1 ? b->dims()[0] : b->dims()[static_cast<size_t>(b->rank() - 2)];
    const int64_t n = b->rank() == 1 ? 1 : b->dims().back();
    const int64_t count = k * n == 0 ? 0 : b->numel() / (k * n);
    const int64_t per_b = gemm::PackedBSize(k, n);
    packed_.data = AlignedFloats(std::max<int64_t>(1, count * per_b));
    for (int64_t i = 0; i < count; ++i) {
      gemm::PackB(values.data() + i * k * n, n, 1, k, n, packed_.data.data() + i * per_b);
    }
    packed_.dims = b->dims();
  }

  void Run(KernelContext& ctx) override {
    const Tensor& a = ctx.required_input(0);
    const Tensor& b = ctx.required_input(1);
    if (a.dtype() != DType::kFloat || b.dtype() != DType::kFloat) {
      DispatchNumeric(ctx, a.dtype(), [&](auto tag) { ReferenceMatMul<decltype(tag)>(ctx); });
      return;
    }
    const MatMulShape s = ResolveMatMul(ctx, a.dims(), b.dims());
    Tensor& y = ctx.OutputForWrite(0, DType::kFloat, s.out);
    if (s.batch * s.m * s.n == 0) return;
    // A is read in place (row-major); B as packed at build time, packed now when all batches share it, or
    // else per matrix.
    const float* pa = a.data<float>();
    const float* pb = b.data<float>();
    float* py = y.mutable_data<float>();
    const Epilogue* epilogue = ctx.TakeEpilogue(s.out);
    // Rows [r0, r0 + rows) of all the output matrices stacked, right after they were written.
    auto finish = [&](int64_t r0, int64_t rows) {
      if (epilogue != nullptr) epilogue->Apply(py + r0 * s.n, r0 * s.n, rows * s.n);
    };
    const int64_t per_b = gemm::PackedBSize(s.k, s.n);
    const float* packed_b = nullptr;
    AlignedFloats packed_now;
    if (!packed_.data.empty() && packed_.dims == b.dims()) {
      packed_b = packed_.data.data();
    } else if (s.b_count == 1) {
      packed_now = AlignedFloats(per_b);
      gemm::PackB(pb, s.n, 1, s.k, s.n, packed_now.data());
      packed_b = packed_now.data();
    }
    if (s.b_count == 1) {
      // One right operand for every batch: the batches of A are just more rows of one GEMM. Tasks are row
      // blocks, and also column blocks (whole panels) when there are too few rows to keep every thread busy
      // (a batch of 64 through a fully connected layer); neither split changes any element's sum.
      const int64_t rows = s.batch * s.m;
      const int64_t row_tasks = (rows + kRowsPerTask - 1) / kRowsPerTask;
      const int64_t panels = (s.n + kNr - 1) / kNr;
      const int64_t threads = ctx.pool().threads();
      int64_t col_tasks = 1;
      if (threads > 1 && row_tasks < 2 * threads) {
        col_tasks = std::min({panels, (2 * threads + row_tasks - 1) / row_tasks,
                              std::max<int64_t>(1, rows * s.n * s.k / kMinTaskMacs)});
      }
      const int64_t panels_per_task = (panels + col_tasks - 1) / col_tasks;
      ctx.pool().ParallelFor(row_tasks * col_tasks, 1, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
          const int64_t r0 = t / col_tasks * kRowsPerTask, r = std::min(kRowsPerTask, rows - r0);
          const int64_t c0 = t % col_tasks * panels_per_task * kNr, c = std::min(s.n - c0, panels_per_task * kNr);
          if (c <= 0) continue;
          gemm::Multiply(r, c, s.k, AView{pa + r0 * s.k, s.k},
                         BView{packed_b + c0 * s.k, kNr, s.k * kNr}, py + r0 * s.n + c0, s.n, Init::kZero);
          if (epilogue == nullptr) continue;
          if (col_tasks == 1) {
            finish(r0, r);
          } else {
            for (int64_t i = r0; i < r0 + r; ++i) epilogue->Apply(py + i * s.n + c0, i * s.n + c0, c);
          }
        }
      });
      return;
    }
    const int64_t blocks = (s.m + kRowsPerTask - 1) / kRowsPerTask;
    ctx.pool().ParallelFor(s.batch * blocks, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t bi = t / blocks;
        const int64_t r0 = (t % blocks) * kRowsPerTask;
        const int64_t r = std::min(kRowsPerTask, s.m - r0);
        const int64_t bm = s.b_index[static_cast<size_t>(bi)];
        const AView av{pa + (s.a_index[static_cast<size_t>(bi)] * s.m + r0) * s.k, s.k};
        float* out = py + (bi * s.m + r0) * s.n;
        if (packed_b != nullptr) {
          gemm::Multiply(r, s.n, s.k, av, BView{packed_b + bm * per_b, kNr, s.k * kNr}, out, s.n,
                         Init::kZero);
          finish(bi * s.m + r0, r);
          continue;
        }
        // Small per-batch products (attention): whole column panels straight from B, unless its row stride
        // (a multiple of 1 KiB) would alias the L1 sets; the rest packed.
        const float* bmat = pb + bm * s.k * s.n;
        const int64_t direct = s.n % 256 != 0 ? s.n / kNr * kNr : 0;
        gemm::Multiply(r, direct, s.k, av, BView{bmat, s.n, kNr}, out, s.n, Init::kZero);
        if (direct == s.n) {
          finish(bi * s.m + r0, r);
          continue;
        }
        float* rest = gemm::Scratch(1, gemm::PackedBSize(s.k, s.n - direct));
        gemm::PackB(bmat + direct, s.n, 1, s.k, s.n - direct, rest);
        gemm::Multiply(r, s.n - direct, s.k, av, BView{rest, kNr, s.k * kNr}, out + direct, s.n, Init::kZero);
        finish(bi * s.m + r0, r);
      }
    });
  }

  bool AcceptsEpilogue() const override { return true; }

 private:
  PackedWeights packed_;
};

class FastGemm : public Kernel {
 public:
  explicit FastGemm(const KernelInfo& info) : attrs_(ParseGemmAttrs(info)) {
    const Tensor* b = info.constant_input(1);
    if (b == nullptr || b->rank() != 2 || !IsFloatingPoint(b->dtype()) || b->dtype() == DType::kDouble)
      return;
    const std::vector<float> values = ToFloats(info, *b);
    const int64_t k = b->dims()[attrs_.trans_b ? 1 : 0];
    const int64_t n = b->dims()[attrs_.trans_b ? 0 : 1];
    packed_.data = AlignedFloats(gemm::PackedBSize(k, n));
    PackOpB(values.data(), k, n, packed_.data.data());
    packed_.dims = b->dims();
  }

  void Run(KernelContext& ctx) override {
    const Tensor& a = ctx.required_input(0);
    const Tensor& b = ctx.required_input(1);
    const Tensor* c = ctx.input(2);
    if (a.dtype() != DType::kFloat || b.dtype() != DType::kFloat ||
        (c != nullptr && c->dtype() != DType::kFloat)) {
      DispatchNumeric(ctx, a.dtype(), [&](auto tag) { ReferenceGemm<decltype(tag)>(ctx, attrs_); });
      return;
    }
    const GemmShape s = ResolveGemm(ctx, a, b, c, attrs_.trans_a, attrs_.trans_b, attrs_.beta);
    Tensor& y = ctx.OutputForWrite(0, DType::kFloat, {s.m, s.n});
    if (s.m * s.n == 0) return;
    float* py = y.mutable_data<float>();
    Init init = Init::kZero;
    if (s.has_c) {
      const float* pc = c->data<float>();
      for (int64_t i = 0; i < s.m; ++i) {
        for (int64_t j = 0; j < s.n; ++j)
          py[i * s.n + j] = attrs_.beta * pc[i * s.c_row_stride + j * s.c_col_stride];
      }
      init = Init::kAccumulate;
    }
    const float* packed_b = packed_.data.data();
    AlignedFloats packed_now;
    if (packed_.data.empty() || packed_.dims != b.dims()) {
      packed_now = AlignedFloats(gemm::PackedBSize(s.k, s.n));
      PackOpB(b.data<float>(), s.k, s.n, packed_now.data());
      packed_b = packed_now.data();
    }
    const float* pa = a.data<float>();
    const Epilogue* epilogue = ctx.TakeEpilogue({s.m, s.n});
    // Row blocks, and column blocks too when the rows are too few for the threads (see FastMatMul).
    const int64_t row_tasks = (s.m + kRowsPerTask - 1) / kRowsPerTask;
    const int64_t panels = (s.n + kNr - 1) / kNr;
    const int64_t threads = ctx.pool().threads();
    int64_t col_tasks = 1;
    if (threads > 1 && row_tasks < 2 * threads) {
      col_tasks = std::min({panels, (2 * threads + row_tasks - 1) / row_tasks,
                            std::max<int64_t>(1, s.m * s.n * s.k / kMinTaskMacs)});
    }
    const int64_t panels_per_task = (panels + col_tasks - 1) / col_tasks;
    ctx.pool().ParallelFor(row_tasks * col_tasks, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t r0 = t / col_tasks * kRowsPerTask, r = std::min(kRowsPerTask, s.m - r0);
        const int64_t c0 = t % col_tasks * panels_per_task * kNr, cols = std::min(s.n - c0, panels_per_task * kNr);
        if (cols <= 0) continue;
        const BView bv{packed_b + c0 * s.k, kNr, s.k * kNr};
        float* out = py + r0 * s.n + c0;
        if (!attrs_.trans_a && attrs_.alpha == 1.0f) {
          gemm::Multiply(r, cols, s.k, AView{pa + r0 * s.k, s.k}, bv, out, s.n, init);
        } else {
          // Transposed A or alpha != 1: packed, with alpha folded in.
          float* pack = gemm::Scratch(0, gemm::PackedASize(r, s.k));
          if (attrs_.trans_a) {
            gemm::PackA(pa + r0, 1, s.m, r, s.k, attrs_.alpha, pack);
          } else {
            gemm::PackA(pa + r0 * s.k, s.k, 1, r, s.k, attrs_.alpha, pack);
          }
          gemm::Multiply(r, cols, s.k, AView{pack}, bv, out, s.n, init);
        }
        if (epilogue == nullptr) continue;
        for (int64_t i = r0; i < r0 + r; ++i) epilogue->Apply(py + i * s.n + c0, i * s.n + c0, cols);
      }
    });
  }

  bool AcceptsEpilogue() const override { return true; }

 private:
  void PackOpB(const float* b, int64_t k, int64_t n, float* out) const {
    if (attrs_.trans_b) {
      gemm::PackB(b, 1, k, k, n, out);
    } else {
      gemm::PackB(b, n, 1, k, n, out);
    }
  }

  GemmAttrs attrs_;
  PackedWeights packed_;
};

// ---------------------------------------------------------------------------------------------------------
// Integer kernels

// A per-tensor, per-row (of A) or per-column (of B) quantisation parameter: a scalar, `len` values shared
// by every matrix, or `len` values per matrix ([D1, D2, M, 1] / [D1, D2, 1, N] style).
template <typename T>
class QuantParam {
 public:
  QuantParam() = default;
  QuantParam(const KernelContext& ctx, const char* name, std::vector<T> values, int64_t len, int64_t matrices)
      : values_(std::move(values)), len_(len) {
    const auto n = static_cast<int64_t>(values_.size());
    if (n != 1 && n != len && n != len * matrices) {
      ctx.Fail(std::string(name) + " has " + std::to_string(n) + " values, expected 1, " +
               std::to_string(len) + " or " + std::to_string(len * matrices));
    }
  }
  T at(int64_t matrix, int64_t i) const {
    const auto n = static_cast<int64_t>(values_.size());
    if (n == 1) return values_[0];
    return values_[static_cast<size_t>(n == len_ ? i : matrix * len_ + i)];
  }
  bool scalar() const { return values_.size() == 1; }

 private:
  std::vector<T> values_{T{}};
  int64_t len_ = 1;
};

std::vector<int32_t> ZeroPoints(const KernelContext& ctx, const Tensor* zp, DType expected,
                                const char* name) {
  if (zp == nullptr) return {0};
  if (zp->dtype() != expected) {
    ctx.Fail(std::string(name) + " is " + DTypeName(zp->dtype()) + " but its input is " +
             DTypeName(expected));
  }
  std::vector<int32_t> v(static_cast<size_t>(zp->numel()));
  for (int64_t i = 0; i < zp->numel(); ++i) v[static_cast<size_t>(i)] = Int8At(*zp, i);
  return v;
}

// The validated operands of MatMulInteger / QLinearMatMul. Input positions: MatMulInteger A, B, a_zp, b_zp
// at 0, 1, 2, 3; QLinearMatMul at 0, 3, 2, 5.
struct IntegerOperands {
  const Tensor* a = nullptr;
  const Tensor* b = nullptr;
  MatMulShape shape;
  QuantParam<int32_t> a_zp, b_zp;
};

struct IntegerInputs {
  size_t a, b, a_zp, b_zp;
};
constexpr IntegerInputs kMatMulIntegerInputs{0, 1, 2, 3};
constexpr IntegerInputs kQLinearMatMulInputs{0, 3, 2, 5};

IntegerOperands ResolveIntegerOperands(const KernelContext& ctx, const IntegerInputs& in) {
  IntegerOperands op;
  op.a = &ctx.required_input(in.a);
  op.b = &ctx.required_input(in.b);
  if (!IsInt8(op.a->dtype()) || !IsInt8(op.b->dtype())) {
    ctx.Fail(std::string("inputs must be int8 or uint8, got ") + DTypeName(op.a->dtype()) + " and " +
             DTypeName(op.b->dtype()));
  }
  op.shape = ResolveMatMul(ctx, op.a->dims(), op.b->dims());
  const MatMulShape& s = op.shape;
  op.a_zp =
      QuantParam<int32_t>(ctx, "a_zero_point",
                          ZeroPoints(ctx, ctx.input(in.a_zp), op.a->dtype(), "a_zero_point"), s.m, s.a_count);
  op.b_zp =
      QuantParam<int32_t>(ctx, "b_zero_point",
                          ZeroPoints(ctx, ctx.input(in.b_zp), op.b->dtype(), "b_zero_point"), s.n, s.b_count);
  return op;
}

// acc[b, i, j] = sum over p of (A[b] - a_zp)[i, p] (B[b] - b_zp)[p, j], int32 wrapping.
std::vector<int32_t> ReferenceIntegerProduct(const IntegerOperands& op) {
  const MatMulShape& s = op.shape;
  std::vector<int32_t> acc(static_cast<size_t>(s.batch * s.m * s.n));
  for (int64_t bi = 0; bi < s.batch; ++bi) {
    const int64_t am = s.a_index[static_cast<size_t>(bi)], bm = s.b_index[static_cast<size_t>(bi)];
    for (int64_t i = 0; i < s.m; ++i) {
      for (int64_t j = 0; j < s.n; ++j) {
        uint32_t sum = 0;
        for (int64_t p = 0; p < s.k; ++p) {
          const int32_t av = Int8At(*op.a, (am * s.m + i) * s.k + p) - op.a_zp.at(am, i);
          const int32_t bv = Int8At(*op.b, (bm * s.k + p) * s.n + j) - op.b_zp.at(bm, j);
          sum += static_cast<uint32_t>(av * bv);
        }
        acc[static_cast<size_t>((bi * s.m + i) * s.n + j)] = static_cast<int32_t>(sum);
      }
    }
  }
  return acc;
}

// B matrix `bm` less its zero points, as floats in rows of ld (>= n) floats.
void ShiftedB(const IntegerOperands& op, int64_t bm, int64_t ld, float* out) {
  const MatMulShape& s = op.shape;
  for (int64_t p = 0; p < s.k; ++p) {
    for (int64_t j = 0; j < s.n; ++j) {
      out[p * ld + j] = static_cast<float>(Int8At(*op.b, (bm * s.k + p) * s.n + j) - op.b_zp.at(bm, j));
    }
  }
}

// The same product through the float GEMM (exact, see MultiplyExact), for operands not known at build time:
// B less its zero points packed once when every product shares it, else per task.
std::vector<int32_t> FastIntegerProduct(KernelContext& ctx, const IntegerOperands& op) {
  const MatMulShape& s = op.shape;
  std::vector<int32_t> acc(static_cast<size_t>(s.batch * s.m * s.n));
  if (acc.empty()) return acc;
  AlignedFloats packed_now;
  const float* packed_b = nullptr;
  if (s.b_count == 1) {
    std::vector<float> shifted(static_cast<size_t>(s.k * s.n));
    ShiftedB(op, 0, s.n, shifted.data());
    packed_now = AlignedFloats(gemm::PackedBSize(s.k, s.n));
    gemm::PackB(shifted.data(), s.n, 1, s.k, s.n, packed_now.data());
    packed_b = packed_now.data();
  }
  // One task per block of rows of one output matrix; A rows less their zero points, as floats.
  const int64_t blocks = (s.m + kRowsPerTask - 1) / kRowsPerTask;
  ctx.pool().ParallelFor(s.batch * blocks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t bi = t / blocks, r0 = (t % blocks) * kRowsPerTask, r = std::min(kRowsPerTask, s.m - r0);
      const int64_t am = s.a_index[static_cast<size_t>(bi)], bm = s.b_index[static_cast<size_t>(bi)];
      float* a_rows = gemm::Scratch(0, r * s.k);
      for (int64_t i = 0; i < r; ++i) {
        const int32_t zp = op.a_zp.at(am, r0 + i);
        for (int64_t p = 0; p < s.k; ++p) {
          a_rows[i * s.k + p] = static_cast<float>(Int8At(*op.a, (am * s.m + r0 + i) * s.k + p) - zp);
        }
      }
      BView bv{packed_b, kNr, s.k * kNr};
      if (packed_b == nullptr) {
        const int64_t ld = gemm::RoundUp(s.n, kNr);
        float* shifted = gemm::Scratch(3, s.k * ld);
        ShiftedB(op, bm, ld, shifted);
        for (int64_t p = 0; p < s.k; ++p) std::fill(shifted + p * ld + s.n, shifted + (p + 1) * ld, 0.0f);
        bv = BView{shifted, ld, kNr};
      }
      gemm::MultiplyExact(r, s.n, s.k, AView{a_rows, s.k}, bv, acc.data() + (bi * s.m + r0) * s.n, s.n);
    }
  });
  return acc;
}

std::vector<float> Scales(const KernelContext& ctx, const Tensor& t, const char* name) {
  if (t.dtype() != DType::kFloat)
    ctx.Fail(std::string(name) + " must be float32, got " + DTypeName(t.dtype()));
  const float* p = t.data<float>();
  return std::vector<float>(p, p + t.numel());
}

void WriteMatMulInteger(KernelContext& ctx, const MatMulShape& s, const std::vector<int32_t>& acc) {
  Tensor& y = ctx.Output(0, DType::kInt32, s.out);
  std::copy(acc.begin(), acc.end(), y.mutable_data<int32_t>());
}

// QLinearMatMul's output quantisation, validated.
struct QLinearMatMulOutput {
  QuantParam<float> a_scale, b_scale;
  float y_scale = 1.0f;
  DType dtype = DType::kUInt8;
  int32_t zero_point = 0, lo = 0, hi = 255;

  // The requantisation multiplier of element (i, j) of the product of A matrix am and B matrix bm.
  float Multiplier(int64_t am, int64_t i, int64_t bm, int64_t j) const {
    return a_scale.at(am, i) * b_scale.at(bm, j) / y_scale;
  }
};

QLinearMatMulOutput ResolveQLinearMatMulOutput(const KernelContext& ctx, const MatMulShape& s) {
  QLinearMatMulOutput q;
  q.a_scale =
      QuantParam<float>(ctx, "a_scale", Scales(ctx, ctx.required_input(1), "a_scale"), s.m, s.a_count);
  q.b_scale =
      QuantParam<float>(ctx, "b_scale", Scales(ctx, ctx.required_input(4), "b_scale"), s.n, s.b_count);
  const std::vector<float> y_scale = Scales(ctx, ctx.required_input(6), "y_scale");
  const Tensor& y_zp_t = ctx.required_input(7);
  if (!IsInt8(y_zp_t.dtype())) {
    ctx.Fail(std::string("y_zero_point must be int8 or uint8, got ") + DTypeName(y_zp_t.dtype()));
  }
  if (y_scale.size() != 1 || y_zp_t.numel() != 1) ctx.Fail("y_scale and y_zero_point must be scalars");
  q.y_scale = y_scale[0];
  q.dtype = y_zp_t.dtype();
  q.zero_point = Int8At(y_zp_t, 0);
  const bool is_signed = q.dtype == DType::kInt8;
  q.lo = is_signed ? -128 : 0;
  q.hi = is_signed ? 127 : 255;
  return q;
}

void WriteQLinearMatMul(KernelContext& ctx, const MatMulShape& s, const std::vector<int32_t>& acc) {
  const QLinearMatMulOutput q = ResolveQLinearMatMulOutput(ctx, s);
  Tensor& y = ctx.Output(0, q.dtype, s.out);
  auto* out = static_cast<uint8_t*>(y.mutable_raw());
  for (int64_t bi = 0; bi < s.batch; ++bi) {
    const int64_t am = s.a_index[static_cast<size_t>(bi)], bm = s.b_index[static_cast<size_t>(bi)];
    for (int64_t i = 0; i < s.m; ++i) {
      for (int64_t j = 0; j < s.n; ++j) {
        const size_t o = static_cast<size_t>((bi * s.m + i) * s.n + j);
        // Two's complement bytes: int8 values are stored through their uint8 image.
        out[o] =
            static_cast<uint8_t>(Requantize(acc[o], q.Multiplier(am, i, bm, j), q.zero_point, q.lo, q.hi));
      }
    }
  }
}

// MatMulInteger / QLinearMatMul with B packed at build time (one PackedWeights per matrix of B). A task is a
// block of rows of one product: the rows of A (int8 ones flipped to uint8) times B by qgemm, straight into
// the int32 output, or into a block of accumulators then requantised row by row to the 8-bit output. When
// every product shares one B, the batches of A are just more rows.
void PackedIntegerMatMul(KernelContext& ctx, const IntegerOperands& op,
                         const std::vector<qgemm::PackedWeights>& packed_b, bool qlinear) {
  const MatMulShape& s = op.shape;
  std::optional<QLinearMatMulOutput> q;
  if (qlinear) q = ResolveQLinearMatMulOutput(ctx, s);
  Tensor& y = ctx.Output(0, qlinear ? q->dtype : DType::kInt32, s.out);
  if (s.batch * s.m * s.n == 0) return;
  const bool shared_b = s.b_count == 1;
  const int64_t products = shared_b ? 1 : s.batch, rows = shared_b ? s.batch * s.m : s.m;
  const int64_t blocks = (rows + kRowsPerTask - 1) / kRowsPerTask;
  const bool a_signed = op.a->dtype() == DType::kInt8;
  const auto* pa = static_cast<const uint8_t*>(op.a->raw());
  ctx.pool().ParallelFor(products * blocks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t bi = t / blocks, r0 = t % blocks * kRowsPerTask, r = std::min(kRowsPerTask, rows - r0);
      const int64_t bm = s.b_index[static_cast<size_t>(bi)];
      // The block's first row among all rows of A, and among all rows of the output.
      const int64_t a_row = shared_b ? r0 : s.a_index[static_cast<size_t>(bi)] * s.m + r0;
      const int64_t y_row = shared_b ? r0 : bi * s.m + r0;
      const uint8_t* a = pa + a_row * s.k;
      int32_t* zero_points = qgemm::ScratchOf<int32_t>(1, r);
      for (int64_t i = 0; i < r; ++i) {
        zero_points[i] = op.a_zp.at((a_row + i) / s.m, (a_row + i) % s.m) + (a_signed ? 128 : 0);
      }
      if (a_signed) {
        uint8_t* flipped = qgemm::Scratch(0, r * s.k);
        qgemm::FlipSign(reinterpret_cast<const int8_t*>(a), r * s.k, flipped);
        a = flipped;
      }
      int32_t* acc =
          qlinear ? qgemm::ScratchOf<int32_t>(2, r * s.n) : y.mutable_data<int32_t>() + y_row * s.n;
      qgemm::MultiplyRight(r, a, s.k, zero_points, 1, packed_b[static_cast<size_t>(bm)], acc, s.n);
      if (!qlinear) continue;
      // Multipliers per column, recomputed for each row only when a_scale is per row.
      float* multipliers = qgemm::ScratchOf<float>(3, s.n);
      qgemm::Requantization rq;
      rq.multipliers = multipliers;
      rq.multiplier_step = 1;
      rq.zero_point = q->zero_point;
      rq.lo = q->lo;
      rq.hi = q->hi;
      auto* out = static_cast<uint8_t*>(y.mutable_raw()) + y_row * s.n;
      for (int64_t i = 0; i < r; ++i) {
        if (i == 0 || !q->a_scale.scalar()) {
          for (int64_t j = 0; j < s.n; ++j)
            multipliers[j] = q->Multiplier((a_row + i) / s.m, (a_row + i) % s.m, bm, j);
        }
        qgemm::Requantize(acc + i * s.n, s.n, rq, out + i * s.n);
      }
    }
  });
}

// MatMulInteger or QLinearMatMul, reference or fast. The fast kernel packs a constant 8-bit B (with
// constant zero points) once for qgemm.
class IntegerMatMul : public Kernel {
 public:
  IntegerMatMul(const KernelInfo& info, bool qlinear, bool fast)
      : qlinear_(qlinear), fast_(fast), inputs_(qlinear ? kQLinearMatMulInputs : kMatMulIntegerInputs) {
    const Tensor* b = info.constant_input(inputs_.b);
    const Tensor* zp = info.constant_input(inputs_.b_zp);
    const bool zp_known =
        zp != nullptr || info.node->inputs.size() <= inputs_.b_zp || info.node->inputs[inputs_.b_zp].empty();
    if (!fast || b == nullptr || !zp_known || !IsInt8(b->dtype()) || b->rank() < 2) return;
    if (zp != nullptr && zp->dtype() != b->dtype()) return;  // reported at run time
    // Without a SIMD path qgemm's plain loops are slower than the float GEMM on small integers.
    if (qgemm::DefaultIsa() == qgemm::Isa::kScalar) return;
    const int64_t k = b->dims()[static_cast<size_t>(b->rank() - 2)], n = b->dims().back();
    const int64_t count = k * n == 0 ? 0 : b->numel() / (k * n);
    const int64_t zps = zp != nullptr ? zp->numel() : 1;
    if (zps != 1 && zps != n && zps != n * count) return;
    // Zero points as QuantParam reads them: one, one per column, or one per column of each matrix.
    std::vector<int32_t> zero_points(static_cast<size_t>(zps == 1 ? 1 : n), 0);
    for (int64_t m = 0; m < count; ++m) {
      for (size_t j = 0; j < zero_points.size() && zp != nullptr; ++j) {
        zero_points[j] = Int8At(*zp, (zps == n * count && zps != n ? m * n : 0) + static_cast<int64_t>(j));
      }
      packed_b_.push_back(qgemm::PackedWeights::Right(static_cast<const uint8_t*>(b->raw()) + m * k * n,
                                                      b->dtype() == DType::kInt8, k, n, zero_points));
    }
  }

  void Run(KernelContext& ctx) override {
    const IntegerOperands op = ResolveIntegerOperands(ctx, inputs_);
    if (!packed_b_.empty()) {
      PackedIntegerMatMul(ctx, op, packed_b_, qlinear_);
      return;
    }
    const std::vector<int32_t> acc = fast_ ? FastIntegerProduct(ctx, op) : ReferenceIntegerProduct(op);
    if (qlinear_) {
      WriteQLinearMatMul(ctx, op.shape, acc);
    } else {
      WriteMatMulInteger(ctx, op.shape, acc);
    }
  }

 private:
  bool qlinear_, fast_;
  IntegerInputs inputs_;
  std::vector<qgemm::PackedWeights> packed_b_;  // per matrix of a constant B
};

}  // namespace

void RegisterMatMulKernels(KernelRegistry& r) {
  AddKernel(r, "MatMul", 1, 1000, [](const KernelInfo&) {
    return MakeKernel([](KernelContext& ctx) {
      DispatchNumeric(ctx, ctx.required_input(0).dtype(),
                      [&](auto tag) { ReferenceMatMul<decltype(tag)>(ctx); });
    });
  });
  AddKernel(
      r, "MatMul", 1, 1000, [](const KernelInfo& info) { return std::make_unique<FastMatMul>(info); },
      KernelVariant::kFast);
  AddKernel(r, "Gemm", 1, 1000, [](const KernelInfo& info) {
    const GemmAttrs g = ParseGemmAttrs(info);
    return MakeKernel([g](KernelContext& ctx) {
      DispatchNumeric(ctx, ctx.required_input(0).dtype(),
                      [&](auto tag) { ReferenceGemm<decltype(tag)>(ctx, g); });
    });
  });
  AddKernel(
      r, "Gemm", 1, 1000, [](const KernelInfo& info) { return std::make_unique<FastGemm>(info); },
      KernelVariant::kFast);
  for (const bool qlinear : {false, true}) {
    for (const bool fast : {false, true}) {
      AddKernel(
          r, qlinear ? "QLinearMatMul" : "MatMulInteger", 10, 1000,
          [qlinear, fast](const KernelInfo& info) {
            return std::make_unique<IntegerMatMul>(info, qlinear, fast);
          },
          fast ? KernelVariant::kFast : KernelVariant::kReference);
    }
  }
}

}  // namespace compress::kernels

namespace compress {

std::vector<KernelIsa> SupportedKernelIsas() {
  std::vector<KernelIsa> isas;
#ifdef COMPRESS_GEMM_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) isas.push_back(KernelIsa::kAvx512);
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) isas.push_back(KernelIsa::kAvx2);
#endif
  isas.push_back(KernelIsa::kPortable);
  return isas;
}

KernelIsa ActiveKernelIsa() {
  using namespace kernels::gemm;
  const IsaKernels* k = Active().load();
#ifdef COMPRESS_GEMM_X86
  if (k == &kAvx512Kernels) return KernelIsa::kAvx512;
  if (k == &kAvx2Kernels) return KernelIsa::kAvx2;
#endif
  (void)k;
  return KernelIsa::kPortable;
}

void UseKernelIsa(KernelIsa isa) { kernels::gemm::Active().store(&kernels::gemm::KernelsOf(isa)); }

const char* KernelIsaName(KernelIsa isa) {
  switch (isa) {
    case KernelIsa::kAvx512:
      return "avx512";
    case KernelIsa::kAvx2:
      return "avx2+fma";
    case KernelIsa::kPortable:
      return "portable";
  }
  return "?";
}

}  // namespace compress
