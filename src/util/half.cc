#include "compress/util/half.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define COMPRESS_HALF_X86 1
#endif

namespace compress {

namespace {

// F16C and AVX from CPUID leaf 1 (not every compiler's __builtin_cpu_supports knows "f16c"), with the
// operating system saving the ymm registers (OSXSAVE, and XCR0 bits 1 and 2).
bool HasF16c() {
#ifdef COMPRESS_HALF_X86
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid(1, &a, &b, &c, &d) == 0) return false;
  const bool f16c = (c >> 29) & 1u, avx = (c >> 28) & 1u, osxsave = (c >> 27) & 1u;
  if (!f16c || !avx || !osxsave) return false;
  unsigned lo = 0, hi = 0;
  __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (lo & 6u) == 6u;
#else
  return false;
#endif
}

#ifdef COMPRESS_HALF_X86
// vcvtps2ph with imm 0 rounds to nearest even (not the MXCSR mode); tails go through a zero-padded block so
// that every element takes the same instruction.
__attribute__((target("avx,f16c"))) void HalfToFloatF16c(const uint16_t* h, float* f, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(f + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i))));
  }
  if (i == n) return;
  alignas(32) uint16_t in[8] = {};
  alignas(32) float out[8];
  std::memcpy(in, h + i, sizeof(uint16_t) * static_cast<size_t>(n - i));
  _mm256_store_ps(out, _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(in))));
  std::memcpy(f + i, out, sizeof(float) * static_cast<size_t>(n - i));
}

__attribute__((target("avx,f16c"))) void FloatToHalfF16c(const float* f, uint16_t* h, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(h + i), _mm256_cvtps_ph(_mm256_loadu_ps(f + i), 0));
  }
  if (i == n) return;
  alignas(32) float in[8] = {};
  alignas(32) uint16_t out[8];
  std::memcpy(in, f + i, sizeof(float) * static_cast<size_t>(n - i));
  _mm_store_si128(reinterpret_cast<__m128i*>(out), _mm256_cvtps_ph(_mm256_load_ps(in), 0));
  std::memcpy(h + i, out, sizeof(uint16_t) * static_cast<size_t>(n - i));
}

__attribute__((target("avx,f16c"))) void RoundToHalfF16c(float* f, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(f + i, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_loadu_ps(f + i), 0)));
  }
  if (i == n) return;
  alignas(32) float block[8] = {};
  std::memcpy(block, f + i, sizeof(float) * static_cast<size_t>(n - i));
  _mm256_store_ps(block, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_load_ps(block), 0)));
  std::memcpy(f + i, block, sizeof(float) * static_cast<size_t>(n - i));
}
#endif

}  // namespace

void HalfToFloatArray(const uint16_t* h, float* f, int64_t n) {
#ifdef COMPRESS_HALF_X86
  static const bool f16c = HasF16c();
  if (f16c) return HalfToFloatF16c(h, f, n);
#endif
  for (int64_t i = 0; i < n; ++i) f[i] = HalfToFloat(h[i]);
}

void FloatToHalfArray(const float* f, uint16_t* h, int64_t n) {
#ifdef COMPRESS_HALF_X86
  static const bool f16c = HasF16c();
  if (f16c) return FloatToHalfF16c(f, h, n);
#endif
  for (int64_t i = 0; i < n; ++i) h[i] = FloatToHalf(f[i]);
}

void RoundToHalfArray(float* f, int64_t n) {
#ifdef COMPRESS_HALF_X86
  static const bool f16c = HasF16c();
  if (f16c) return RoundToHalfF16c(f, n);
#endif
  for (int64_t i = 0; i < n; ++i) f[i] = HalfToFloat(FloatToHalf(f[i]));
}

}  // namespace compress
