// The array conversions (F16C where the CPU has it) against the scalar IEEE conversions: every float16
// value, and floats across the whole range, rounding boundaries and special values included.

#include "compress/util/half.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

namespace compress {
namespace {

bool IsHalfNan(uint16_t h) { return (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0; }

uint32_t Bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
}

TEST(HalfArrays, EveryHalfValueWidensExactly) {
  std::vector<uint16_t> h(65536);
  for (size_t i = 0; i < h.size(); ++i) h[i] = static_cast<uint16_t>(i);
  std::vector<float> f(h.size());
  HalfToFloatArray(h.data(), f.data(), static_cast<int64_t>(h.size()));
  for (size_t i = 0; i < h.size(); ++i) {
    if (IsHalfNan(h[i])) {
      EXPECT_TRUE(std::isnan(f[i])) << i;  // payloads may be quieted
    } else {
      EXPECT_EQ(Bits(f[i]), Bits(HalfToFloat(h[i]))) << i;
    }
  }
}

TEST(HalfArrays, FloatsNarrowToNearestEvenLikeTheScalarConversion) {
  std::vector<float> f;
  std::mt19937 rng(5);
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 200000; ++i) {
    const uint32_t b = bits(rng);
    float v;
    std::memcpy(&v, &b, sizeof v);
    f.push_back(v);
  }
  // Every half value, and the midpoints between neighbours (ties go to even), scaled into all exponents.
  for (uint32_t h = 0; h < 0x7c00u; ++h) {
    const float lo = HalfToFloat(static_cast<uint16_t>(h)), hi = HalfToFloat(static_cast<uint16_t>(h + 1));
    f.insert(f.end(), {lo, -lo, 0.5f * (lo + hi), -0.5f * (lo + hi), std::nextafter(0.5f * (lo + hi), hi)});
  }
  f.insert(f.end(), {65504.0f, 65519.99f, 65520.0f, std::numeric_limits<float>::infinity(),
                     -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::denorm_min(), -0.0f});
  for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{9}, static_cast<int64_t>(f.size())}) {
    std::vector<uint16_t> h(static_cast<size_t>(n));
    FloatToHalfArray(f.data(), h.data(), n);
    std::vector<float> rounded(f.begin(), f.begin() + n);
    RoundToHalfArray(rounded.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const size_t k = static_cast<size_t>(i);
      if (std::isnan(f[k])) {
        EXPECT_TRUE(IsHalfNan(h[k])) << i;
        EXPECT_TRUE(std::isnan(rounded[k])) << i;
        continue;
      }
      ASSERT_EQ(h[k], FloatToHalf(f[k])) << "element " << i << " value " << f[k];
      ASSERT_EQ(Bits(rounded[k]), Bits(HalfToFloat(FloatToHalf(f[k])))) << i;
    }
  }
}

}  // namespace
}  // namespace compress
