// Exact uint8 x int8 -> int32 GEMM for MatMulInteger / QLinearMatMul (weights on the right) and ConvInteger /
// QLinearConv (weights on the left), with a fast path per instruction set.
//
// Operands. Activations are uint8 (callers turn int8 into uint8 with FlipSign, moving the zero point by 128).
// Constant weights are packed once as int8 w~: w itself for int8, w - 128 (w ^ 0x80) for uint8. Then, with
// c = -zw or 128 - zw per output channel,
//   sum over p of (x - zx)(w - zw) = sum x w~  -  zx sum w~  +  c sum x  -  c zx depth,
// all in wrapping int32 arithmetic, which is exact modulo 2^32 and so bit-identical to accumulating the
// products themselves. The sums of w~ are taken at pack time; the activation sums only when some c != 0 (not
// for int8 weights with zero point 0, nor uint8 ones with zero point 128). The three terms are added in the
// micro-kernel's epilogue, to the raw products sum x w~.
//
// Layout. Every fast path multiplies 4 consecutive depths of a uint8 operand by 4 of an int8 one and sums
// them into an int32 lane (vpdpbusd does exactly that; vpmaddubsw + vpmaddwd, or widening + vpmaddwd, do it
// in two steps), so depth runs in groups of 4, padded with zero weights. One operand is broadcast from rows
// (4 bytes per group), the other is loaded as 16-column panels holding each column's 4 depths in 4
// consecutive bytes (64 bytes per group). Weights on the right: X rows read in place are broadcast, W is
// packed in panels once. Weights on the left: W rows (depth padded to a multiple of 4) are broadcast and the
// im2col matrix X is packed in panels per call. Either way the lanes are output columns, so the epilogue and
// the stores are the same.
//
// Micro-kernels. qgemm_kernels.inc holds the register-blocked micro-kernel (kRows x kPanels panels of C in
// registers, over the whole depth), written once against an instruction set's operations and included once
// per target region below, so one template serves AVX-512 VNNI (zmm), 256-bit VNNI (EVEX or VEX ymm) and the
// two AVX2 paths. vpmaddubsw saturates a pair of products to int16, so it is exact only when every |w~| <= 64
// (two products of at most 255 * 64); the packer records whether the weights qualify, and AVX2 runs the
// widening vpmaddwd path when they do not. The scalar path is plain loops over the definition. The path is
// chosen once from the CPU (__builtin_cpu_supports), so the binary stays portable; tests and benchmarks can
// request one.
//
// Threads: callers split C by rows or column blocks; every function here is single-threaded.
#include "qgemm.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define COMPRESS_QGEMM_X86 1
#endif

#include "common.h"

namespace compress::kernels::qgemm {

namespace {

constexpr int64_t kPanelWidth = 16;  // columns per panel
constexpr int64_t kGroup = 4;        // depths per group (the 4 bytes one int32 lane sums)
constexpr int64_t kGroupBytes = kPanelWidth * kGroup;

int64_t RoundUp(int64_t x, int64_t multiple) { return (x + multiple - 1) / multiple * multiple; }
int64_t Groups(int64_t depth) { return (depth + kGroup - 1) / kGroup; }

// Added to every result: row[i] + row_a[i] * col_a[j] + row_b[i] * col_b[j] (wrapping); null terms are
// skipped. The column arrays are readable up to the end of the last panel.
struct Correction {
  const int32_t* row = nullptr;
  const int32_t* row_a = nullptr;
  const int32_t* col_a = nullptr;
  const int32_t* row_b = nullptr;
  const int32_t* col_b = nullptr;
};

// One product for the micro-kernels: C (m x n, row stride ldc) = rows * panels + correction. Row i of the
// broadcast operand starts at rows + i * row_stride, 4 bytes per depth group; panel q of the vector operand
// at panels + q * panel_stride, 64 bytes per group. tail != 0: the rows hold only depth = 4 * (groups - 1) +
// tail bytes (read in place), the panels are padded.
struct Block {
  int64_t m = 0, n = 0;
  int64_t groups = 0;
  int tail = 0;
  const uint8_t* rows = nullptr;
  int64_t row_stride = 0;
  const uint8_t* panels = nullptr;
  int64_t panel_stride = 0;
  int32_t* c = nullptr;
  int64_t ldc = 0;
  Correction correction;
};

// Packs the depth x n uint8 matrix src[p * ld + j] into panels: byte (p, j) goes to
// out + (j / 16) * panel_stride + (p / 4) * 64 + (j % 16) * 4 + p % 4, panel_stride = Groups(depth) * 64,
// zeros past depth and n.
void PackPanels(const uint8_t* src, int64_t ld, int64_t depth, int64_t n, uint8_t* out) {
  const int64_t groups = Groups(depth), panel_stride = groups * kGroupBytes;
#if defined(__SSE2__)
  const int64_t size = (depth - 1) * ld + n;  // bytes from src to the end of the matrix
#endif
  for (int64_t j0 = 0; j0 < n; j0 += kPanelWidth) {
    const int64_t cols = std::min(kPanelWidth, n - j0);
    uint8_t* panel = out + j0 / kPanelWidth * panel_stride;
#if defined(__SSE2__)
    // The columns of a last partial panel are loaded as 16 bytes (while that stays inside the matrix) and
    // masked; rows past depth are zeros.
    alignas(16) static const uint8_t kFirstBytes[32] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                                        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    const __m128i mask = _mm_loadu_si128(reinterpret_cast<const __m128i*>(kFirstBytes + kPanelWidth - cols));
#endif
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t p0 = g * kGroup, depths = std::min(kGroup, depth - p0);
      const uint8_t* s = src + p0 * ld + j0;
      uint8_t* d = panel + g * kGroupBytes;
#if defined(__SSE2__)
      if ((p0 + depths - 1) * ld + j0 + kPanelWidth <= size) {
        __m128i r[kGroup];
        for (int64_t t = 0; t < kGroup; ++t) {
          r[t] = t < depths
                     ? _mm_and_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + t * ld)), mask)
                     : _mm_setzero_si128();
        }
        // Interleave 4 rows of 16 bytes: bytes, then byte pairs.
        const __m128i lo01 = _mm_unpacklo_epi8(r[0], r[1]), hi01 = _mm_unpackhi_epi8(r[0], r[1]);
        const __m128i lo23 = _mm_unpacklo_epi8(r[2], r[3]), hi23 = _mm_unpackhi_epi8(r[2], r[3]);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(d), _mm_unpacklo_epi16(lo01, lo23));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 16), _mm_unpackhi_epi16(lo01, lo23));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 32), _mm_unpacklo_epi16(hi01, hi23));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 48), _mm_unpackhi_epi16(hi01, hi23));
        continue;
      }
#endif
      for (int64_t j = 0; j < kPanelWidth; ++j) {
        for (int64_t t = 0; t < kGroup; ++t) d[j * kGroup + t] = j < cols && t < depths ? s[t * ld + j] : 0;
      }
    }
  }
}

// Sum of n uint8 values.
uint32_t RowSum(const uint8_t* x, int64_t n) {
  uint64_t sum = 0;
  int64_t i = 0;
#if defined(__SSE2__)
  const __m128i zero = _mm_setzero_si128();
  __m128i acc = zero;
  for (; i + 16 <= n; i += 16) {
    acc = _mm_add_epi64(acc, _mm_sad_epu8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i)), zero));
  }
  uint64_t halves[2];
  _mm_storeu_si128(reinterpret_cast<__m128i*>(halves), acc);
  sum = halves[0] + halves[1];
#endif
  for (; i < n; ++i) sum += x[i];
  return static_cast<uint32_t>(sum);
}

// Elements [begin, end) of Requantize.
void RequantizeScalar(const int32_t* acc, int64_t begin, int64_t end, const Requantization& q, uint8_t* out) {
  for (int64_t j = begin; j < end; ++j) {
    const uint32_t bias = q.bias != nullptr ? static_cast<uint32_t>(q.bias[j * q.bias_step]) : 0;
    const auto a = static_cast<int32_t>(static_cast<uint32_t>(acc[j]) + bias);
    out[j] = static_cast<uint8_t>(
        kernels::Requantize(a, q.multipliers[j * q.multiplier_step], q.zero_point, q.lo, q.hi));
  }
}

// ---------------------------------------------------------------------------------------------------------
// Scalar path: the definition, summed in wrapping uint32.

void ScalarLeft(const PackedWeights& w, int64_t row0, int64_t rows, int64_t n, const uint8_t* x, int64_t ldx,
                int32_t zx, int32_t* c, int64_t ldc) {
  const int64_t stride = Groups(w.depth()) * kGroup;
  for (int64_t i = 0; i < rows; ++i) {
    const auto* wi = reinterpret_cast<const int8_t*>(w.data()) + (row0 + i) * stride;
    const int64_t offset = w.offsets()[row0 + i];
    for (int64_t j = 0; j < n; ++j) {
      uint32_t sum = 0;
      for (int64_t p = 0; p < w.depth(); ++p) {
        sum += static_cast<uint32_t>((x[p * ldx + j] - int64_t{zx}) * (wi[p] + offset));
      }
      c[i * ldc + j] = static_cast<int32_t>(sum);
    }
  }
}

void ScalarRight(int64_t m, const uint8_t* x, int64_t ldx, const int32_t* zx, int64_t zx_step,
                 const PackedWeights& w, int32_t* c, int64_t ldc) {
  const int64_t panel_stride = Groups(w.depth()) * kGroupBytes;
  const auto* packed = reinterpret_cast<const int8_t*>(w.data());
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < w.channels(); ++j) {
      const int8_t* panel = packed + j / kPanelWidth * panel_stride + j % kPanelWidth * kGroup;
      const int64_t offset = w.offsets()[j];
      uint32_t sum = 0;
      for (int64_t p = 0; p < w.depth(); ++p) {
        const int8_t wv = panel[p / kGroup * kGroupBytes + p % kGroup];
        sum += static_cast<uint32_t>((x[i * ldx + p] - int64_t{zx[i * zx_step]}) * (wv + offset));
      }
      c[i * ldc + j] = static_cast<int32_t>(sum);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// x86 paths: each region's functions are compiled for its target (see qgemm_kernels.inc).

#ifdef COMPRESS_QGEMM_X86

#define COMPRESS_QGEMM_PRAGMA(x) _Pragma(#x)
#if defined(__clang__)
#define COMPRESS_QGEMM_TARGET_BEGIN(isa) \
  COMPRESS_QGEMM_PRAGMA(clang attribute push(__attribute__((target(isa))), apply_to = function))
#define COMPRESS_QGEMM_TARGET_END COMPRESS_QGEMM_PRAGMA(clang attribute pop)
#else
#define COMPRESS_QGEMM_TARGET_BEGIN(isa) \
  COMPRESS_QGEMM_PRAGMA(GCC push_options) COMPRESS_QGEMM_PRAGMA(GCC target(isa))
#define COMPRESS_QGEMM_TARGET_END COMPRESS_QGEMM_PRAGMA(GCC pop_options)
#endif

COMPRESS_QGEMM_TARGET_BEGIN("avx2")
namespace avx2 {

// int32 and float operations on ymm registers (8 lanes), for the epilogue and the requantisation.
struct Ymm {
  static constexpr int kLanes = 8;
  static __m256i Set1(int32_t v) { return _mm256_set1_epi32(v); }
  static __m256i LoadI(const int32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static void StoreI(int32_t* p, __m256i v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
  static void StoreI(int32_t* p, __m256i v, int64_t n) {  // the first n lanes
    alignas(32) int32_t lanes[kLanes];
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), v);
    std::memcpy(p, lanes, sizeof(int32_t) * static_cast<size_t>(n));
  }
  static __m256i Add(__m256i a, __m256i b) { return _mm256_add_epi32(a, b); }
  static __m256i Mul(__m256i a, __m256i b) { return _mm256_mullo_epi32(a, b); }

  static __m256 Set1F(float v) { return _mm256_set1_ps(v); }
  static __m256 LoadF(const float* p) { return _mm256_loadu_ps(p); }
  static __m256 ToFloat(__m256i v) { return _mm256_cvtepi32_ps(v); }
  static __m256 Mul(__m256 a, __m256 b) { return _mm256_mul_ps(a, b); }
  static __m256 Add(__m256 a, __m256 b) { return _mm256_add_ps(a, b); }
  static __m256 Round(__m256 v) { return _mm256_round_ps(v, _MM_FROUND_CUR_DIRECTION | _MM_FROUND_NO_EXC); }
  static __m256 Max(__m256 a, __m256 b) { return _mm256_max_ps(a, b); }  // b when either is NaN
  static __m256 Min(__m256 a, __m256 b) { return _mm256_min_ps(a, b); }
  static __m256i Truncate(__m256 v) { return _mm256_cvttps_epi32(v); }
  // The low byte of each lane.
  static void StoreBytes(uint8_t* out, __m256i v) {
    const __m256i low =
        _mm256_shuffle_epi8(v, _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                                0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1));
    const __m128i bytes = _mm_unpacklo_epi32(_mm256_castsi256_si128(low), _mm256_extracti128_si256(low, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(out), bytes);
  }
};

// The byte operands of the ymm paths: 8 columns x 4 depths per vector, used as they are.
struct YmmBytes : Ymm {
  using Acc = __m256i;
  using Vec = __m256i;
  using Bc = __m256i;
  static Acc Zero() { return _mm256_setzero_si256(); }
  template <bool kSigned>
  static Vec Load(const uint8_t* p) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  }
  template <bool kSigned>
  static Bc Broadcast(uint32_t word) {
    return _mm256_set1_epi32(static_cast<int32_t>(word));
  }
  static __m256i Sum(Acc acc) { return acc; }
};

// vpmaddubsw sums each pair of uint8 x int8 products into int16, saturating; vpmaddwd by ones then sums the
// pairs into int32. Exact when |w~| <= 64. 4 x 2 accumulators, the ones and a temporary fit 16 registers.
struct Maddubs : YmmBytes {
  static constexpr int kRows = 4, kPanels = 1;
  template <bool kVecSigned>
  static Acc Dot(Acc acc, Vec vec, Bc bc) {
    __m256i pairs;
    if constexpr (kVecSigned) {
      pairs = _mm256_maddubs_epi16(bc, vec);
    } else {
      pairs = _mm256_maddubs_epi16(vec, bc);
    }
    return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
  }
};

// Both operands widened to int16, then vpmaddwd: exact for any weights. Each accumulator is two registers of
// pair sums (columns 0-3 and 4-7, two lanes per column) added up by Sum; 2 x 4 accumulators fit 16 registers.
struct Madd16 : Ymm {
  static constexpr int kRows = 2, kPanels = 1;
  struct Acc {
    __m256i lo, hi;
  };
  using Vec = Acc;     // int16: columns 0-3 and 4-7, 4 depths each
  using Bc = __m256i;  // int16: the 4 depths, repeated
  static Acc Zero() { return {_mm256_setzero_si256(), _mm256_setzero_si256()}; }
  template <bool kSigned>
  static __m256i Widen(__m128i v) {
    if constexpr (kSigned) {
      return _mm256_cvtepi8_epi16(v);
    } else {
      return _mm256_cvtepu8_epi16(v);
    }
  }
  template <bool kSigned>
  static Vec Load(const uint8_t* p) {
    return {Widen<kSigned>(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))),
            Widen<kSigned>(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16)))};
  }
  template <bool kSigned>
  static Bc Broadcast(uint32_t word) {
    return Widen<kSigned>(_mm_set1_epi32(static_cast<int32_t>(word)));
  }
  template <bool kVecSigned>
  static Acc Dot(Acc acc, Vec vec, Bc bc) {
    return {_mm256_add_epi32(acc.lo, _mm256_madd_epi16(vec.lo, bc)),
            _mm256_add_epi32(acc.hi, _mm256_madd_epi16(vec.hi, bc))};
  }
  // hadd gives columns 0 1 4 5 | 2 3 6 7; the 64-bit permute puts them in order.
  static __m256i Sum(Acc acc) {
    return _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc.lo, acc.hi), _MM_SHUFFLE(3, 1, 2, 0));
  }
};

#include "qgemm_kernels.inc"

}  // namespace avx2
COMPRESS_QGEMM_TARGET_END

COMPRESS_QGEMM_TARGET_BEGIN("avx2,avxvnni")
namespace avxvnni {

// vpdpbusd, VEX encoding: 16 registers, 6 x 2 accumulators.
struct Vnni : avx2::YmmBytes {
  static constexpr int kRows = 6, kPanels = 1;
  template <bool kVecSigned>
  static Acc Dot(Acc acc, Vec vec, Bc bc) {
    if constexpr (kVecSigned) {
      return _mm256_dpbusd_avx_epi32(acc, bc, vec);
    } else {
      return _mm256_dpbusd_avx_epi32(acc, vec, bc);
    }
  }
};

#include "qgemm_kernels.inc"

}  // namespace avxvnni
COMPRESS_QGEMM_TARGET_END

COMPRESS_QGEMM_TARGET_BEGIN("avx512f,avx512bw,avx512vl,avx512vnni")
#if !defined(__clang__)
// GCC 12 reports the _mm512_undefined_* placeholder that many AVX-512 intrinsics pass as their (unused)
// merge source as maybe uninitialised (GCC bug 105593).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
namespace avx512 {

// vpdpbusd on ymm, EVEX encoding: 32 registers, 6 x 4 accumulators.
struct YmmVnni : avx2::YmmBytes {
  static constexpr int kRows = 6, kPanels = 2;
  template <bool kVecSigned>
  static Acc Dot(Acc acc, Vec vec, Bc bc) {
    if constexpr (kVecSigned) {
      return _mm256_dpbusd_epi32(acc, bc, vec);
    } else {
      return _mm256_dpbusd_epi32(acc, vec, bc);
    }
  }
};

// int32 and float operations on zmm registers (16 lanes).
struct Zmm {
  static constexpr int kLanes = 16;
  static __m512i Set1(int32_t v) { return _mm512_set1_epi32(v); }
  static __m512i LoadI(const int32_t* p) { return _mm512_loadu_si512(p); }
  static void StoreI(int32_t* p, __m512i v) { _mm512_storeu_si512(p, v); }
  static void StoreI(int32_t* p, __m512i v, int64_t n) {  // the first n lanes
    _mm512_mask_storeu_epi32(p, static_cast<__mmask16>((1u << n) - 1), v);
  }
  static __m512i Add(__m512i a, __m512i b) { return _mm512_add_epi32(a, b); }
  static __m512i Mul(__m512i a, __m512i b) { return _mm512_mullo_epi32(a, b); }

  static __m512 Set1F(float v) { return _mm512_set1_ps(v); }
  static __m512 LoadF(const float* p) { return _mm512_loadu_ps(p); }
  static __m512 ToFloat(__m512i v) { return _mm512_cvtepi32_ps(v); }
  static __m512 Mul(__m512 a, __m512 b) { return _mm512_mul_ps(a, b); }
  static __m512 Add(__m512 a, __m512 b) { return _mm512_add_ps(a, b); }
  static __m512 Round(__m512 v) {
    return _mm512_roundscale_ps(v, _MM_FROUND_CUR_DIRECTION | _MM_FROUND_NO_EXC);
  }
  static __m512 Max(__m512 a, __m512 b) { return _mm512_max_ps(a, b); }  // b when either is NaN
  static __m512 Min(__m512 a, __m512 b) { return _mm512_min_ps(a, b); }
  static __m512i Truncate(__m512 v) { return _mm512_cvttps_epi32(v); }
  static void StoreBytes(uint8_t* out, __m512i v) {  // the low byte of each lane
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm512_cvtepi32_epi8(v));
  }
};

// vpdpbusd on zmm: 16 columns x 4 depths per vector; 4 x 4 accumulators (on Zen 4 as fast as 8 x 2 or 6 x 4
// for convolutions, faster for MatMul).
struct ZmmVnni : Zmm {
  static constexpr int kRows = 4, kPanels = 4;
  using Acc = __m512i;
  using Vec = __m512i;
  using Bc = __m512i;
  static Acc Zero() { return _mm512_setzero_si512(); }
  template <bool kSigned>
  static Vec Load(const uint8_t* p) {
    return _mm512_loadu_si512(p);
  }
  template <bool kSigned>
  static Bc Broadcast(uint32_t word) {
    return _mm512_set1_epi32(static_cast<int32_t>(word));
  }
  template <bool kVecSigned>
  static Acc Dot(Acc acc, Vec vec, Bc bc) {
    if constexpr (kVecSigned) {
      return _mm512_dpbusd_epi32(acc, bc, vec);
    } else {
      return _mm512_dpbusd_epi32(acc, vec, bc);
    }
  }
  static __m512i Sum(Acc acc) { return acc; }
};

#include "qgemm_kernels.inc"

}  // namespace avx512
#if !defined(__clang__)
#pragma GCC diagnostic pop
#endif
COMPRESS_QGEMM_TARGET_END

bool HasAvxVnni() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) != 0 && (eax >> 4 & 1) != 0;
}

#endif  // COMPRESS_QGEMM_X86

bool CpuSupports(Isa isa) {
#ifdef COMPRESS_QGEMM_X86
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") != 0;
  const bool avx512 = __builtin_cpu_supports("avx512f") != 0 && __builtin_cpu_supports("avx512bw") != 0 &&
                      __builtin_cpu_supports("avx512vl") != 0 && __builtin_cpu_supports("avx512vnni") != 0;
  switch (isa) {
    case Isa::kScalar:
      return true;
    case Isa::kAvx2Maddubs:
    case Isa::kAvx2Madd16:
      return avx2;
    case Isa::kAvxVnni:
      return avx2 && HasAvxVnni();
    case Isa::kAvx512Vnni256:
    case Isa::kAvx512Vnni:
      return avx512;
  }
#endif
  return isa == Isa::kScalar;
}

// The functions of a fast path; the scalar path has none.
struct Kernels {
  void (*left)(const Block&) = nullptr;   // panels: the uint8 activations
  void (*right)(const Block&) = nullptr;  // panels: the int8 weights
  void (*column_sums)(const uint8_t* panels, int64_t panel_stride, int64_t groups, int64_t count,
                      int32_t* sums) = nullptr;
  void (*requantize)(const int32_t* acc, int64_t n, const Requantization& q, uint8_t* out) = nullptr;
};

const Kernels& KernelsOf(Isa isa) {
#ifdef COMPRESS_QGEMM_X86
  static const Kernels kMaddubs{avx2::MultiplyBlock<avx2::Maddubs, false>,
                                avx2::MultiplyBlock<avx2::Maddubs, true>, avx2::ColumnSums<avx2::Maddubs>,
                                avx2::RequantizeRow<avx2::Ymm>};
  static const Kernels kMadd16{avx2::MultiplyBlock<avx2::Madd16, false>,
                               avx2::MultiplyBlock<avx2::Madd16, true>, avx2::ColumnSums<avx2::Madd16>,
                               avx2::RequantizeRow<avx2::Ymm>};
  static const Kernels kAvxVnni{avxvnni::MultiplyBlock<avxvnni::Vnni, false>,
                                avxvnni::MultiplyBlock<avxvnni::Vnni, true>,
                                avxvnni::ColumnSums<avxvnni::Vnni>, avx2::RequantizeRow<avx2::Ymm>};
  static const Kernels kVnni256{avx512::MultiplyBlock<avx512::YmmVnni, false>,
                                avx512::MultiplyBlock<avx512::YmmVnni, true>,
                                avx512::ColumnSums<avx512::YmmVnni>, avx512::RequantizeRow<avx512::Zmm>};
  static const Kernels kVnni512{avx512::MultiplyBlock<avx512::ZmmVnni, false>,
                                avx512::MultiplyBlock<avx512::ZmmVnni, true>,
                                avx512::ColumnSums<avx512::ZmmVnni>, avx512::RequantizeRow<avx512::Zmm>};
  switch (isa) {
    case Isa::kAvx2Maddubs:
      return kMaddubs;
    case Isa::kAvx2Madd16:
      return kMadd16;
    case Isa::kAvxVnni:
      return kAvxVnni;
    case Isa::kAvx512Vnni256:
      return kVnni256;
    case Isa::kAvx512Vnni:
      return kVnni512;
    case Isa::kScalar:
      break;
  }
#endif
  static const Kernels kScalarKernels;
  (void)isa;
  return kScalarKernels;
}

// The path to run: the requested one (which this CPU must support) or the default; the maddubs path turns
// into the 16-bit one for weights outside [-64, 64].
Isa Resolve(std::optional<Isa> requested, bool seven_bit) {
  if (requested.has_value() && !CpuSupports(*requested)) {
    ThrowInternal(std::string("qgemm path ") + IsaName(*requested) + " is not supported by this CPU");
  }
  const Isa isa = requested.value_or(DefaultIsa());
  return isa == Isa::kAvx2Maddubs && !seven_bit ? Isa::kAvx2Madd16 : isa;
}

// Per-thread buffers: slots [0, 4) for callers (Scratch), the rest for this file.
constexpr int kCallerSlots = 4;
enum InternalSlot { kPackedX = kCallerSlots, kRowTerms, kRowTermsB, kColumnTerms, kSlots };

uint8_t* SlotBuffer(int slot, int64_t bytes) {
  struct Buffer {
    AlignedBytes data;
    int64_t size = 0;
  };
  thread_local Buffer buffers[kSlots];
  Buffer& b = buffers[slot];
  if (b.size < bytes) {
    b.data = AlignedBytes(bytes);
    b.size = bytes;
  }
  return b.data.data();
}

int32_t* SlotInts(int slot, int64_t count) {
  return reinterpret_cast<int32_t*>(SlotBuffer(slot, count * static_cast<int64_t>(sizeof(int32_t))));
}

}  // namespace

const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return "scalar";
    case Isa::kAvx2Maddubs:
      return "avx2-maddubs";
    case Isa::kAvx2Madd16:
      return "avx2-madd16";
    case Isa::kAvx512Vnni256:
      return "avx512-vnni-256";
    case Isa::kAvxVnni:
      return "avx-vnni";
    case Isa::kAvx512Vnni:
      return "avx512-vnni";
  }
  return "unknown";
}

std::vector<Isa> SupportedIsas() {
  std::vector<Isa> isas;
  for (Isa isa : {Isa::kScalar, Isa::kAvx2Maddubs, Isa::kAvx2Madd16, Isa::kAvx512Vnni256, Isa::kAvxVnni,
                  Isa::kAvx512Vnni}) {
    if (CpuSupports(isa)) isas.push_back(isa);
  }
  return isas;
}

Isa DefaultIsa() {
  static const Isa best = [] {
    for (Isa isa : {Isa::kAvx512Vnni, Isa::kAvx512Vnni256, Isa::kAvxVnni, Isa::kAvx2Maddubs}) {
      if (CpuSupports(isa)) return isa;
    }
    return Isa::kScalar;
  }();
  return best;
}

void FlipSign(const int8_t* src, int64_t n, uint8_t* dst) {
  int64_t i = 0;
#if defined(__SSE2__)
  const __m128i sign = _mm_set1_epi8(static_cast<char>(0x80));
  for (; i + 16 <= n; i += 16) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i)), sign));
  }
#endif
  for (; i < n; ++i) dst[i] = static_cast<uint8_t>(static_cast<uint8_t>(src[i]) ^ 0x80u);
}

uint8_t* Scratch(int slot, int64_t bytes) {
  if (slot < 0 || slot >= kCallerSlots)
    ThrowInternal("qgemm scratch slot " + std::to_string(slot) + " out of range");
  return SlotBuffer(slot, bytes);
}

AlignedBytes::AlignedBytes(int64_t n) {
  const auto bytes = static_cast<size_t>(RoundUp(std::max<int64_t>(n, 1), 64));
  data_.reset(static_cast<uint8_t*>(std::aligned_alloc(64, bytes)));
  if (data_ == nullptr) throw std::bad_alloc();
  std::memset(data_.get(), 0, bytes);
}

void AlignedBytes::Free::operator()(uint8_t* p) const { std::free(p); }

PackedWeights::PackedWeights(bool left, const uint8_t* w, bool is_signed, int64_t channels, int64_t depth,
                             const std::vector<int32_t>& zero_points)
    : left_(left), channels_(channels), depth_(depth) {
  if (zero_points.size() != 1 && static_cast<int64_t>(zero_points.size()) != channels) {
    ThrowInternal("qgemm weights: " + std::to_string(zero_points.size()) + " zero points for " +
                  std::to_string(channels) + " channels");
  }
  // w~ of channel i at depth p, as a byte.
  const uint8_t flip = is_signed ? 0 : 0x80;
  auto at = [&](int64_t i, int64_t p) {
    return static_cast<uint8_t>((left ? w[i * depth + p] : w[p * channels + i]) ^ flip);
  };
  const int64_t padded = RoundUp(channels, kPanelWidth);
  sums_.assign(static_cast<size_t>(padded), 0);
  offsets_.assign(static_cast<size_t>(padded), 0);
  for (int64_t i = 0; i < channels; ++i) {
    const int32_t zw = zero_points[zero_points.size() == 1 ? 0 : static_cast<size_t>(i)];
    offsets_[static_cast<size_t>(i)] = (is_signed ? 0 : 128) - zw;
    has_offsets_ = has_offsets_ || offsets_[static_cast<size_t>(i)] != 0;
    uint32_t sum = 0;
    for (int64_t p = 0; p < depth; ++p) {
      const auto v = static_cast<int8_t>(at(i, p));
      sum += static_cast<uint32_t>(v);
      seven_bit_ = seven_bit_ && v >= -64 && v <= 64;
    }
    sums_[static_cast<size_t>(i)] = static_cast<int32_t>(sum);
  }
  const int64_t groups = Groups(depth);
  if (left) {
    const int64_t stride = groups * kGroup;
    data_ = AlignedBytes(channels * stride);
    for (int64_t i = 0; i < channels; ++i) {
      for (int64_t p = 0; p < depth; ++p) data_.data()[i * stride + p] = at(i, p);
    }
    return;
  }
  data_ = AlignedBytes(padded / kPanelWidth * groups * kGroupBytes);
  if (is_signed) {
    PackPanels(w, channels, depth, channels, data_.data());
    return;
  }
  std::vector<uint8_t> shifted(static_cast<size_t>(depth * channels));
  for (size_t e = 0; e < shifted.size(); ++e) shifted[e] = static_cast<uint8_t>(w[e] ^ flip);
  PackPanels(shifted.data(), channels, depth, channels, data_.data());
}

PackedWeights PackedWeights::Left(const uint8_t* w, bool is_signed, int64_t channels, int64_t depth,
                                  const std::vector<int32_t>& zero_points) {
  return PackedWeights(true, w, is_signed, channels, depth, zero_points);
}

PackedWeights PackedWeights::Right(const uint8_t* w, bool is_signed, int64_t depth, int64_t channels,
                                   const std::vector<int32_t>& zero_points) {
  return PackedWeights(false, w, is_signed, channels, depth, zero_points);
}

void MultiplyLeft(const PackedWeights& w, int64_t row0, int64_t rows, int64_t n, const uint8_t* x,
                  int64_t ldx, int32_t x_zero_point, int32_t* c, int64_t ldc, std::optional<Isa> isa) {
  if (!w.left() || row0 < 0 || row0 + rows > w.channels())
    ThrowInternal("qgemm: weights on the left expected");
  if (rows <= 0 || n <= 0) return;
  const Isa path = Resolve(isa, w.seven_bit());
  if (path == Isa::kScalar) {
    ScalarLeft(w, row0, rows, n, x, ldx, x_zero_point, c, ldc);
    return;
  }
  const Kernels& kernels = KernelsOf(path);
  const int64_t depth = w.depth(), groups = Groups(depth), panels = (n + kPanelWidth - 1) / kPanelWidth;
  const int64_t panel_stride = groups * kGroupBytes;
  uint8_t* packed = SlotBuffer(kPackedX, panels * panel_stride);
  PackPanels(x, ldx, depth, n, packed);
  // row[i] = -zx (sum w~ + c depth); with some c != 0, c[i] times the column sums of X.
  bool offsets = false;
  int32_t* row = SlotInts(kRowTerms, rows);
  const auto zx = static_cast<uint32_t>(x_zero_point);
  for (int64_t i = 0; i < rows; ++i) {
    const auto offset = static_cast<uint32_t>(w.offsets()[row0 + i]);
    offsets = offsets || offset != 0;
    row[i] = static_cast<int32_t>(
        0u - zx * (static_cast<uint32_t>(w.sums()[row0 + i]) + offset * static_cast<uint32_t>(depth)));
  }
  Correction correction;
  correction.row = row;
  if (offsets) {
    int32_t* column_sums = SlotInts(kColumnTerms, panels * kPanelWidth);
    kernels.column_sums(packed, panel_stride, groups, panels, column_sums);
    correction.row_a = w.offsets() + row0;
    correction.col_a = column_sums;
  }
  Block b;
  b.m = rows;
  b.n = n;
  b.groups = groups;
  b.rows = w.data() + row0 * groups * kGroup;
  b.row_stride = groups * kGroup;
  b.panels = packed;
  b.panel_stride = panel_stride;
  b.c = c;
  b.ldc = ldc;
  b.correction = correction;
  kernels.left(b);
}

void MultiplyRight(int64_t m, const uint8_t* x, int64_t ldx, const int32_t* x_zero_points,
                   int64_t x_zero_point_step, const PackedWeights& w, int32_t* c, int64_t ldc,
                   std::optional<Isa> isa) {
  if (w.left()) ThrowInternal("qgemm: weights on the right expected");
  if (m <= 0 || w.channels() <= 0) return;
  const Isa path = Resolve(isa, w.seven_bit());
  if (path == Isa::kScalar) {
    ScalarRight(m, x, ldx, x_zero_points, x_zero_point_step, w, c, ldc);
    return;
  }
  const int64_t depth = w.depth();
  Correction correction;
  // -zx[i] times the weight sums; with some c != 0, (sum x - zx depth)[i] times c.
  bool zero_points = false;
  int32_t* row_b = SlotInts(kRowTermsB, m);
  for (int64_t i = 0; i < m; ++i) {
    row_b[i] = static_cast<int32_t>(0u - static_cast<uint32_t>(x_zero_points[i * x_zero_point_step]));
    zero_points = zero_points || row_b[i] != 0;
  }
  if (zero_points) {
    correction.row_b = row_b;
    correction.col_b = w.sums();
  }
  if (w.has_offsets()) {
    int32_t* row_a = SlotInts(kRowTerms, m);
    for (int64_t i = 0; i < m; ++i) {
      row_a[i] = static_cast<int32_t>(RowSum(x + i * ldx, depth) -
                                      static_cast<uint32_t>(x_zero_points[i * x_zero_point_step]) *
                                          static_cast<uint32_t>(depth));
    }
    correction.row_a = row_a;
    correction.col_a = w.offsets();
  }
  Block b;
  b.m = m;
  b.n = w.channels();
  b.groups = Groups(depth);
  b.tail = static_cast<int>(depth % kGroup);
  b.rows = x;
  b.row_stride = ldx;
  b.panels = w.data();
  b.panel_stride = b.groups * kGroupBytes;
  b.c = c;
  b.ldc = ldc;
  b.correction = correction;
  KernelsOf(path).right(b);
}

void Requantize(const int32_t* acc, int64_t n, const Requantization& q, uint8_t* out,
                std::optional<Isa> isa) {
  const Kernels& kernels = KernelsOf(Resolve(isa, true));
  if (kernels.requantize != nullptr) {
    kernels.requantize(acc, n, q, out);
  } else {
    RequantizeScalar(acc, 0, n, q, out);
  }
}

}  // namespace compress::kernels::qgemm
