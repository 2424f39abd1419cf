// Error bounds for comparing a fast float32 kernel with its reference: a float32 sum of n terms, in any
// order and with or without fused multiply-adds, stays within gamma_n times the sum of |terms|.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "compress/ir/tensor.h"

namespace compress::testing {

// float32 unit roundoff (IEEE 754 binary32: 24-bit significand).
constexpr double kUnitRoundoff = 0x1p-24;

// Higham's gamma_n (Accuracy and Stability of Numerical Algorithms, 2nd ed., section 3.1): a float32 sum of n
// terms, in any order and with or without fused multiply-adds, is within gamma_n * (sum of |terms|) of the
// exact sum.
inline double Gamma(int64_t n) {
  const double nu = static_cast<double>(n) * kUnitRoundoff;
  return nu / (1.0 - nu);
}

// `fast` and `ref` compute the same sums of at most n terms per element, and `magnitude` (the op run on the
// absolute values of its inputs) is the sum of |terms|. The reference accumulates in double and rounds once,
// the fast kernel is within gamma_n; one more unit roundoff covers the rounding of `magnitude` itself.
inline void ExpectWithinRoundingBound(const Tensor& fast, const Tensor& ref, const Tensor& magnitude, int64_t n,
                               const std::string& what) {
  ASSERT_EQ(fast.dims(), ref.dims()) << what;
  ASSERT_EQ(fast.dtype(), DType::kFloat) << what;
  const float* f = fast.data<float>();
  const float* r = ref.data<float>();
  const float* m = magnitude.data<float>();
  const double factor = Gamma(n) + 2 * kUnitRoundoff;
  int failures = 0;
  for (int64_t i = 0; i < fast.numel() && failures < 5; ++i) {
    const double bound = factor * static_cast<double>(m[i]);
    if (!(std::fabs(static_cast<double>(f[i]) - static_cast<double>(r[i])) <= bound)) {
      ADD_FAILURE() << what << ": element " << i << " fast " << f[i] << " reference " << r[i] << " bound "
                    << bound;
      ++failures;
    }
  }
}

}  // namespace compress::testing
