// Vectorised float32 maths: three vector-traits structs (portable four-lane, AVX2+FMA, AVX-512), the generic
// algorithms of vecmath_generic.inc instantiated over each, and the run-time choice between them.
//
// The library is compiled for baseline x86-64. The AVX2 and AVX-512 code lives in functions with a target
// attribute instead of files built with -mavx2 / -march: a file built with other flags would compile the
// inline functions of every header it includes (the standard library's, Eigen's) differently from the rest
// of the program, one definition per flag set, and the linker keeps an arbitrary one. Nothing here includes
// Eigen.

#include "vecmath.h"

#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "compress/util/error.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define COMPRESS_VECMATH_X86 1
// GCC 12 reports the deliberately undefined pass-through operand of its own AVX-512 intrinsics
// (`__m512 __Y = __Y;`, GCC bug 105593, fixed in GCC 13) as maybe uninitialized wherever one is inlined;
// the warning is silenced for the header's lines only.
#if !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#if !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

namespace compress::kernels::vecmath {
namespace {

// exp: the clamp bounds (exp(-104) rounds to 0, exp(89) overflows); below kExpNormalLowest results may be
// denormal (with n >= -125 and exp(r) >= 1 / sqrt 2, the scaled result stays above FLT_MIN), below
// kExpZeroBelow (-150 ln 2, rounded up to float) they round to 0; ln 2 in two parts (Cody-Waite; the high
// part has 9 significant bits, so n * kLn2Hi is exact for |n| < 2^15), and Cephes' expf polynomial.
constexpr float kExpLowest = -104.0f;
constexpr float kExpHighest = 89.0f;
constexpr float kExpNormalLowest = -86.5f;
constexpr float kExpZeroBelow = -103.972077f;
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f;
constexpr float kLn2Lo = -2.12194440e-4f;
constexpr float kExpP0 = 1.9875691500e-4f;
constexpr float kExpP1 = 1.3981999507e-3f;
constexpr float kExpP2 = 8.3334519073e-3f;
constexpr float kExpP3 = 4.1665795894e-2f;
constexpr float kExpP4 = 1.6666665459e-1f;
constexpr float kExpP5 = 5.0000001201e-1f;

// erf: the rational approximation of Eigen's generic_fast_erf_float (Eigen 3.4, MPL 2.0), numerator odd,
// denominator even, fitted on [-4, 4].
constexpr float kErfClamp = 4.0f;
constexpr float kErfA1 = -1.60960333262415e-02f;
constexpr float kErfA3 = -2.95459980854025e-03f;
constexpr float kErfA5 = -7.34990630326855e-04f;
constexpr float kErfA7 = -5.69250639462346e-05f;
constexpr float kErfA9 = -2.10102402082508e-06f;
constexpr float kErfA11 = 2.77068142495902e-08f;
constexpr float kErfA13 = -2.72614225801306e-10f;
constexpr float kErfB0 = -1.42647390514189e-02f;
constexpr float kErfB2 = -7.37332916720468e-03f;
constexpr float kErfB4 = -1.68282697438203e-03f;
constexpr float kErfB6 = -2.13374055278905e-04f;
constexpr float kErfB8 = -1.45660718464996e-05f;

// tanh: Eigen's generic_fast_tanh_float (Eigen 3.4, MPL 2.0), with its two clamps: the smallest |x| where
// the approximation evaluates to 1, with and without fused multiply-adds.
constexpr float kTanhClamp = 7.90531110763549805f;
constexpr float kTanhClampFma = 7.99881172180175781f;
constexpr float kTanhTiny = 0.0004f;
constexpr float kTanhA1 = 4.89352455891786e-03f;
constexpr float kTanhA3 = 6.37261928875436e-04f;
constexpr float kTanhA5 = 1.48572235717979e-05f;
constexpr float kTanhA7 = 5.12229709037114e-08f;
constexpr float kTanhA9 = -8.60467152213735e-11f;
constexpr float kTanhA11 = 2.00018790482477e-13f;
constexpr float kTanhA13 = -2.76076847742355e-16f;
constexpr float kTanhB0 = 4.89352518554385e-03f;
constexpr float kTanhB2 = 2.26843463243900e-03f;
constexpr float kTanhB4 = 1.18534705686654e-04f;
constexpr float kTanhB6 = 1.19825839466702e-06f;

// GELU: sqrt(2) as float, as exporters write the divisor (PyTorch: 1.4142135381698608); the tanh form's
// constants.
constexpr float kSqrt2 = 1.41421356237309505f;
constexpr float kSqrt2OverPi = 0.79788456080286536f;
constexpr float kGeluCubic = 0.044715f;

// One instruction set's entry points.
struct Table {
  void (*exp)(const float*, float*, int64_t);
  void (*erf)(const float*, float*, int64_t);
  void (*tanh)(const float*, float*, int64_t);
  void (*sigmoid)(const float*, float*, int64_t);
  void (*gelu)(const float*, float*, int64_t);
  void (*gelu_tanh)(const float*, float*, int64_t);
  void (*softmax_rows)(const float*, float*, int64_t, int64_t, bool);
  void (*layer_norm_rows)(const float*, const float*, const float*, float*, int64_t, int64_t, float, float*,
                          float*);
  void (*binary_rows)(BinaryOp, const float*, int64_t, int64_t, const float*, int64_t, int64_t, float*,
                      int64_t, int64_t);
};

// -----------------------------------------------------------------------------------------------------------
// The vector traits. Each provides, over its float vector F and lane mask M:
//   kLanes, kFma (MulAdd rounds once), kUnderflowAssist (a multiply whose result underflows is slow)
//   Set(v), Zero(), Load(p), Store(p, v)            unaligned loads and stores of kLanes floats
//   FirstLanes(count)                               the mask of lanes [0, count), 1 <= count <= kLanes
//   LoadPartial(p, m, fill), StorePartial(p, m, v)  only the lanes in m touch memory; the others read `fill`
//   Add, Sub, Mul, Div, MulAdd(a, b, c) = a * b + c, Abs
//   Min(a, b) = a < b ? a : b, Max(a, b) = a > b ? a : b  (so the second operand when either is NaN)
//   Less(a, b) (false for NaN), Select(m, a, b) = m ? a : b, Any(m) (some lane set)
//   Round(v)                                        to nearest even, for |v| < 2^22
//   Ldexp(p, n)                                     p * 2^n rounded once, n integral in [-252, 254]
//   ReduceAdd(v), ReduceMax(v)                      over the lanes, in a fixed order
// On the sets with FMA, GCC also fuses a Mul whose only use is an Add (its default -ffp-contract=fast), which
// only rounds less; every element still goes through the same code, so results stay deterministic.

// Portable: four lanes in the vector extension GCC and Clang share, which each compiles for the baseline of
// its target (SSE2 on x86-64, NEON on AArch64); no fused multiply-add. Masks are lanes of all ones.
struct PortableTraits {
  using F = float __attribute__((vector_size(16)));
  using I = int32_t __attribute__((vector_size(16)));
  using M = I;
  static constexpr int64_t kLanes = 4;
  static constexpr bool kFma = false;
  static constexpr bool kUnderflowAssist = true;
  static F Set(float v) { return F{v, v, v, v}; }
  static F Zero() { return F{}; }
  static F Load(const float* p) {
    F v;
    std::memcpy(&v, p, sizeof(v));
    return v;
  }
  static void Store(float* p, F v) { std::memcpy(p, &v, sizeof(v)); }
  static M FirstLanes(int64_t count) { return I{0, 1, 2, 3} < static_cast<int32_t>(count); }
  // Lane by lane (a loop becomes a call to memcpy through the stack, which stalls the vector load after
  // it): the lanes of a mask from FirstLanes are a prefix, as many as it has set (each -1).
  static F LoadPartial(const float* p, M m, F fill) {
    const int32_t n = Count(m);
    return F{p[0], n > 1 ? p[1] : fill[1], n > 2 ? p[2] : fill[2], n > 3 ? p[3] : fill[3]};
  }
  static void StorePartial(float* p, M m, F v) {
    const int32_t n = Count(m);
    p[0] = v[0];
    if (n > 1) p[1] = v[1];
    if (n > 2) p[2] = v[2];
    if (n > 3) p[3] = v[3];
  }
  static F Add(F a, F b) { return a + b; }
  static F Sub(F a, F b) { return a - b; }
  static F Mul(F a, F b) { return a * b; }
  static F Div(F a, F b) { return a / b; }
  static F MulAdd(F a, F b, F c) { return a * b + c; }
  static F Abs(F v) { return Bits<F>(Bits<I>(v) & 0x7fffffff); }
  static F Min(F a, F b) { return Select(a < b, a, b); }
  static F Max(F a, F b) { return Select(a > b, a, b); }
  static M Less(F a, F b) { return a < b; }
  static F Select(M m, F a, F b) { return Bits<F>((m & Bits<I>(a)) | (~m & Bits<I>(b))); }
  static bool Any(M m) { return (m[0] | m[1] | m[2] | m[3]) != 0; }
  // Adding and subtracting 1.5 * 2^23 leaves no fraction bits, so the addition rounds to an integer.
  static F Round(F v) {
    const F shift = Set(12582912.0f);
    return (v + shift) - shift;
  }
  // 2^n as two normal factors 2^h and 2^(n - h), as in the AVX2 version. NaN lanes of n become 0 before the
  // conversion to integers (their p is NaN already).
  static F Ldexp(F p, F n) {
    const I k = __builtin_convertvector(Select(n == n, n, Zero()), I);
    const I h = k >> 1;
    return p * Bits<F>((h + 127) << 23) * Bits<F>((k - h + 127) << 23);
  }
  static float ReduceAdd(F v) { return (v[0] + v[2]) + (v[1] + v[3]); }
  static float ReduceMax(F v) {
    const float a = v[0] > v[2] ? v[0] : v[2], b = v[1] > v[3] ? v[1] : v[3];
    return a > b ? a : b;
  }

 private:
  template <typename To, typename From>
  static To Bits(From v) {
    static_assert(sizeof(To) == sizeof(From));
    To t;
    std::memcpy(&t, &v, sizeof(t));
    return t;
  }
  static int32_t Count(M m) { return -(m[0] + m[1] + m[2] + m[3]); }
};

namespace portable {
#define VECMATH_FN inline
#define VECMATH_ENTRY
#include "vecmath_generic.inc"
#undef VECMATH_FN
#undef VECMATH_ENTRY
constexpr Table kTable = MakeTable<PortableTraits>();
}  // namespace portable

#if defined(COMPRESS_VECMATH_X86)

#define VECMATH_AVX2_TARGET __attribute__((target("avx2,fma")))
#define VECMATH_AVX2_FN inline __attribute__((always_inline, target("avx2,fma")))
#define VECMATH_AVX512_TARGET __attribute__((target("avx512f,avx2,fma")))
#define VECMATH_AVX512_FN inline __attribute__((always_inline, target("avx512f,avx2,fma")))

// Horizontal sum and max of 8 lanes: halves, then quarters, then the last pair.
VECMATH_AVX2_FN float ReduceAdd8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

VECMATH_AVX2_FN float ReduceMax8(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

struct Avx2Traits {
  using F = __m256;
  using M = __m256;  // all bits set in the lanes that take part
  static constexpr int64_t kLanes = 8;
  static constexpr bool kFma = true;
  // Measured on Zen 4: exp is 3.5 times slower when every product underflows.
  static constexpr bool kUnderflowAssist = true;
  static VECMATH_AVX2_FN F Set(float v) { return _mm256_set1_ps(v); }
  static VECMATH_AVX2_FN F Zero() { return _mm256_setzero_ps(); }
  static VECMATH_AVX2_FN F Load(const float* p) { return _mm256_loadu_ps(p); }
  static VECMATH_AVX2_FN void Store(float* p, F v) { _mm256_storeu_ps(p, v); }
  static VECMATH_AVX2_FN M FirstLanes(int64_t count) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(count)), lane));
  }
  static VECMATH_AVX2_FN F LoadPartial(const float* p, M m, F fill) {
    return _mm256_blendv_ps(fill, _mm256_maskload_ps(p, _mm256_castps_si256(m)), m);
  }
  // Through a copy rather than vmaskmovps, whose store form is microcoded on AMD (measured: it took a third
  // of a 17-long softmax row). The lanes of a mask from FirstLanes are a prefix.
  static VECMATH_AVX2_FN void StorePartial(float* p, M m, F v) {
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, v);
    const int count = __builtin_ctz(~static_cast<unsigned>(_mm256_movemask_ps(m)));
    for (int i = 0; i < count; ++i) p[i] = lanes[i];
  }
  static VECMATH_AVX2_FN F Add(F a, F b) { return _mm256_add_ps(a, b); }
  static VECMATH_AVX2_FN F Sub(F a, F b) { return _mm256_sub_ps(a, b); }
  static VECMATH_AVX2_FN F Mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static VECMATH_AVX2_FN F Div(F a, F b) { return _mm256_div_ps(a, b); }
  static VECMATH_AVX2_FN F MulAdd(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static VECMATH_AVX2_FN F Abs(F v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }
  static VECMATH_AVX2_FN F Min(F a, F b) { return _mm256_min_ps(a, b); }
  static VECMATH_AVX2_FN F Max(F a, F b) { return _mm256_max_ps(a, b); }
  static VECMATH_AVX2_FN M Less(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
  static VECMATH_AVX2_FN F Select(M m, F a, F b) { return _mm256_blendv_ps(b, a, m); }
  static VECMATH_AVX2_FN bool Any(M m) { return _mm256_movemask_ps(m) != 0; }
  static VECMATH_AVX2_FN F Round(F v) {
    return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  // 2^n as two normal factors 2^h and 2^(n - h): p * 2^h is exact, the second product rounds once.
  static VECMATH_AVX2_FN F Ldexp(F p, F n) {
    const __m256i k = _mm256_cvtps_epi32(n);
    const __m256i h = _mm256_srai_epi32(k, 1);
    const __m256i bias = _mm256_set1_epi32(127);
    const F f1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h, bias), 23));
    const F f2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(k, h), bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, f1), f2);
  }
  static VECMATH_AVX2_FN float ReduceAdd(F v) { return ReduceAdd8(v); }
  static VECMATH_AVX2_FN float ReduceMax(F v) { return ReduceMax8(v); }
};

struct Avx512Traits {
  using F = __m512;
  using M = __mmask16;
  static constexpr int64_t kLanes = 16;
  static constexpr bool kFma = true;
  // scalef produces denormals and zeros at full speed.
  static constexpr bool kUnderflowAssist = false;
  static VECMATH_AVX512_FN F Set(float v) { return _mm512_set1_ps(v); }
  static VECMATH_AVX512_FN F Zero() { return _mm512_setzero_ps(); }
  static VECMATH_AVX512_FN F Load(const float* p) { return _mm512_loadu_ps(p); }
  static VECMATH_AVX512_FN void Store(float* p, F v) { _mm512_storeu_ps(p, v); }
  static VECMATH_AVX512_FN M FirstLanes(int64_t count) {
    return static_cast<M>((uint32_t{1} << static_cast<uint32_t>(count)) - 1u);
  }
  static VECMATH_AVX512_FN F LoadPartial(const float* p, M m, F fill) {
    return _mm512_mask_loadu_ps(fill, m, p);
  }
  static VECMATH_AVX512_FN void StorePartial(float* p, M m, F v) { _mm512_mask_storeu_ps(p, m, v); }
  static VECMATH_AVX512_FN F Add(F a, F b) { return _mm512_add_ps(a, b); }
  static VECMATH_AVX512_FN F Sub(F a, F b) { return _mm512_sub_ps(a, b); }
  static VECMATH_AVX512_FN F Mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static VECMATH_AVX512_FN F Div(F a, F b) { return _mm512_div_ps(a, b); }
  static VECMATH_AVX512_FN F MulAdd(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static VECMATH_AVX512_FN F Abs(F v) { return _mm512_abs_ps(v); }
  static VECMATH_AVX512_FN F Min(F a, F b) { return _mm512_min_ps(a, b); }
  static VECMATH_AVX512_FN F Max(F a, F b) { return _mm512_max_ps(a, b); }
  static VECMATH_AVX512_FN M Less(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  static VECMATH_AVX512_FN F Select(M m, F a, F b) { return _mm512_mask_blend_ps(m, b, a); }
  static VECMATH_AVX512_FN bool Any(M m) { return m != 0; }
  static VECMATH_AVX512_FN F Round(F v) {
    return _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  // One instruction, rounding once: the same value as the two-factor product of the other sets.
  static VECMATH_AVX512_FN F Ldexp(F p, F n) { return _mm512_scalef_ps(p, n); }
  static VECMATH_AVX512_FN float ReduceAdd(F v) { return ReduceAdd8(_mm256_add_ps(Low(v), High(v))); }
  static VECMATH_AVX512_FN float ReduceMax(F v) { return ReduceMax8(_mm256_max_ps(Low(v), High(v))); }

 private:
  static VECMATH_AVX512_FN __m256 Low(F v) { return _mm512_castps512_ps256(v); }
  // The upper 256 bits, through the double view (extracting 8 floats directly needs AVX512DQ).
  static VECMATH_AVX512_FN __m256 High(F v) {
    return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
  }
};

namespace avx2 {
#define VECMATH_FN VECMATH_AVX2_FN
#define VECMATH_ENTRY VECMATH_AVX2_TARGET
#include "vecmath_generic.inc"
#undef VECMATH_FN
#undef VECMATH_ENTRY
constexpr Table kTable = MakeTable<Avx2Traits>();
}  // namespace avx2

namespace avx512 {
#define VECMATH_FN VECMATH_AVX512_FN
#define VECMATH_ENTRY VECMATH_AVX512_TARGET
#include "vecmath_generic.inc"
#undef VECMATH_FN
#undef VECMATH_ENTRY
constexpr Table kTable = MakeTable<Avx512Traits>();
}  // namespace avx512

#endif  // COMPRESS_VECMATH_X86

bool CpuSupports(Isa isa) {
  switch (isa) {
    case Isa::kPortable:
      return true;
#if defined(COMPRESS_VECMATH_X86)
    // __builtin_cpu_supports also checks that the operating system saves the wider registers.
    case Isa::kAvx2:
      __builtin_cpu_init();
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case Isa::kAvx512:
      __builtin_cpu_init();
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") &&
             __builtin_cpu_supports("fma");
#else
    case Isa::kAvx2:
    case Isa::kAvx512:
      return false;
#endif
  }
  return false;
}

const Table& TableOf(Isa isa) {
#if defined(COMPRESS_VECMATH_X86)
  if (isa == Isa::kAvx512) return avx512::kTable;
  if (isa == Isa::kAvx2) return avx2::kTable;
#endif
  return portable::kTable;
}

struct Active {
  std::atomic<Isa> isa;
  std::atomic<const Table*> table;
};

// Chosen once, on first use: the widest supported set.
Active& ActiveState() {
  static Active state{SupportedIsas().back(), &TableOf(SupportedIsas().back())};
  return state;
}

const Table& T() { return *ActiveState().table.load(std::memory_order_relaxed); }

}  // namespace

const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::kPortable:
      return "portable";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
  }
  return "?";
}

const std::vector<Isa>& SupportedIsas() {
  static const std::vector<Isa> isas = [] {
    std::vector<Isa> v;
    for (Isa isa : {Isa::kPortable, Isa::kAvx2, Isa::kAvx512}) {
      if (CpuSupports(isa)) v.push_back(isa);
    }
    return v;
  }();
  return isas;
}

Isa ActiveIsa() { return ActiveState().isa.load(std::memory_order_relaxed); }

Isa SetIsa(Isa isa) {
  if (!CpuSupports(isa)) ThrowInternal(std::string("vecmath: this CPU does not support ") + IsaName(isa));
  Active& state = ActiveState();
  state.table.store(&TableOf(isa), std::memory_order_relaxed);
  return state.isa.exchange(isa, std::memory_order_relaxed);
}

void Exp(const float* x, float* y, int64_t n) { T().exp(x, y, n); }
void Erf(const float* x, float* y, int64_t n) { T().erf(x, y, n); }
void Tanh(const float* x, float* y, int64_t n) { T().tanh(x, y, n); }
void Sigmoid(const float* x, float* y, int64_t n) { T().sigmoid(x, y, n); }
void Gelu(const float* x, float* y, int64_t n) { T().gelu(x, y, n); }
void GeluTanh(const float* x, float* y, int64_t n) { T().gelu_tanh(x, y, n); }

void SoftmaxRows(const float* x, float* y, int64_t rows, int64_t len, bool log) {
  T().softmax_rows(x, y, rows, len, log);
}

void LayerNormRows(const float* x, const float* scale, const float* bias, float* y, int64_t rows, int64_t len,
                   float epsilon, float* mean_out, float* inv_out) {
  T().layer_norm_rows(x, scale, bias, y, rows, len, epsilon, mean_out, inv_out);
}

void BinaryRows(BinaryOp op, const float* a, int64_t a_row, int64_t a_step, const float* b, int64_t b_row,
                int64_t b_step, float* out, int64_t rows, int64_t len) {
  T().binary_rows(op, a, a_row, a_step, b, b_row, b_step, out, rows, len);
}

}  // namespace compress::kernels::vecmath
