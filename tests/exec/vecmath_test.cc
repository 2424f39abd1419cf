// vecmath (src/exec/kernels/vecmath.h) on every instruction set this CPU supports: the element functions
// against double-precision std:: functions on a sweep over all float magnitudes, special values and every
// length from 1 to 70 (so every tail); results independent of how an array is split into calls; Softmax and
// LayerNormalization rows against plain double loops; the binary rows against scalar IEEE arithmetic.

#include "vecmath.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace compress::kernels::vecmath {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kMax = std::numeric_limits<float>::max();
constexpr float kMinNormal = std::numeric_limits<float>::min();
constexpr float kMinDenormal = std::numeric_limits<float>::denorm_min();

// A result in float's denormal range is allowed one denormal step (2^-149) beyond its relative error bound.
const double kDenormalStep = std::ldexp(1.0, -149);

// float's unit roundoff: the largest relative error of one rounding.
constexpr double kRoundoff = 0x1p-24;

// Softmax's bound, relative, from its float arithmetic: exp's error on the element and in the sum (2 x
// kExpMaxRelError); the sum's additions, each off by at most a unit roundoff of the partial sum (all terms
// are positive): a lane adds one vector per kLanes elements of the row, at most ceil(len / 4) with the
// portable version's 4 lanes, then the horizontal sum adds log2(lanes) <= 4 more; and the scaling by the
// reciprocal of the sum (two roundings). Largest seen: 7.9e-7 at len 200, where this allows 3.6e-6, and
// 7.4e-7 at len 31 (allowed 1.1e-6).
double SoftmaxRelTolerance(int64_t len) {
  return 2 * kExpMaxRelError + static_cast<double>((len + 3) / 4 + 4 + 2) * kRoundoff;
}
// LogSoftmax's, absolute: log(sum) is off by the sum's relative error (exp's and the additions', as above)
// plus its own rounding, then the two subtractions round relative to |y|. Largest seen: 1.6e-7 * (1 + |y|).
double LogSoftmaxTolerance(int64_t len, double y) {
  return kExpMaxRelError + static_cast<double>((len + 3) / 4 + 4 + 1) * kRoundoff +
         2 * kRoundoff * std::fabs(y);
}
// LayerNormalization in float: the mean and x - mean are off by a few roundings of the row's largest |x|,
// which the normalisation multiplies by inv = 1 / sqrt(var + epsilon); so the error of y is relative to
// |x|max * inv * |scale| + |y|, and the mean's relative to |x|max. Largest seen over 200 random draws of the
// rows below (lengths 1 to 200) on every version: 1.9e-7 for y, 9.8e-8 for the mean.
constexpr double kLayerNormError = 4e-7;
// inv's relative error is the variance's halved, the variance off by the same roundings relative to its
// square root: relative to |x|max * inv. Largest seen: 5.2e-7.
constexpr double kLayerNormInvError = 1e-6;

const char* Name(Isa isa) { return IsaName(isa); }

// Runs fn with each supported instruction set active in turn, restores the choice, and prints which ran.
void ForEachIsa(const std::function<void(Isa)>& fn) {
  const Isa before = ActiveIsa();
  std::string ran;
  for (const Isa isa : SupportedIsas()) {
    SetIsa(isa);
    SCOPED_TRACE(Name(isa));
    fn(isa);
    ran += std::string(ran.empty() ? "" : ", ") + Name(isa);
  }
  SetIsa(before);
  std::printf("[  vecmath ] ran on %s\n", ran.c_str());
}

struct Function {
  const char* name;
  void (*run)(const float*, float*, int64_t);
  double (*exact)(double);
  double tolerance;
  bool absolute;  // error bound times max(1, |x|) (GELU: 1 + erf cancels) rather than times |y|
  double lo, hi;  // the function's range (for the bounded ones)
};

double ExactSigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
// In the exported chain's order: x * (erf + 1) overflows to +-inf for |x| > FLT_MAX / 2 before the halving,
// in the chain and in vecmath's Gelu alike.
double ExactGelu(double x) {
  const double t = x * (1.0 + std::erf(x / std::sqrt(2.0)));
  return std::isinf(static_cast<float>(t)) ? static_cast<double>(static_cast<float>(t)) : t * 0.5;
}
double ExactGeluTanh(double x) {
  return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / std::acos(-1.0)) * (x + 0.044715 * x * x * x)));
}

const std::vector<Function>& Functions() {
  static const std::vector<Function> functions = {
      {"Exp", &Exp, [](double x) { return std::exp(x); }, kExpMaxRelError, false, 0, kInf},
      {"Erf", &Erf, [](double x) { return std::erf(x); }, kErfMaxRelError, false, -1, 1},
      {"Tanh", &Tanh, [](double x) { return std::tanh(x); }, kTanhMaxRelError, false, -1, 1},
      {"Sigmoid", &Sigmoid, &ExactSigmoid, kSigmoidMaxRelError, false, 0, 1},
      {"Gelu", &Gelu, &ExactGelu, kGeluMaxError, true, -kInf, kInf},
      {"GeluTanh", &GeluTanh, &ExactGeluTanh, kGeluTanhMaxError, true, -kInf, kInf},
  };
  return functions;
}

// Checks y = f.run(x)[i] against f.exact(x) in double: NaN where the exact value is NaN, exactly +-inf where
// it rounds to +-inf in float, else within the function's bound.
void ExpectClose(const Function& f, float x, float y) {
  const double exact = f.exact(x);
  const double rounded = static_cast<double>(static_cast<float>(exact));
  if (std::isnan(exact)) {
    EXPECT_TRUE(std::isnan(y)) << f.name << "(" << x << ") = " << y;
    return;
  }
  if (std::isinf(rounded)) {
    EXPECT_EQ(y, rounded) << f.name << "(" << x << ")";
    return;
  }
  ASSERT_TRUE(std::isfinite(y)) << f.name << "(" << x << ") = " << y << ", expected " << exact;
  const double err = std::fabs(static_cast<double>(y) - exact);
  const double bound = f.absolute ? f.tolerance * std::max(1.0, std::fabs(static_cast<double>(x)))
                                  : f.tolerance * std::fabs(exact) + kDenormalStep;
  EXPECT_LE(err, bound) << f.name << "(" << x << ") = " << y << ", expected " << exact;
  EXPECT_GE(y, f.lo) << f.name << "(" << x << ")";
  EXPECT_LE(y, f.hi) << f.name << "(" << x << ")";
}

std::vector<float> SpecialValues() {
  std::vector<float> v = {
      0.0f, -0.0f, kInf, -kInf, kNaN, -kNaN, kMinDenormal, -kMinDenormal, 1e-40f, -1e-40f, kMinNormal,
      -kMinNormal, kMax, -kMax, 1e30f, -1e30f, 1e-30f, -1e-30f, 1.0f, -1.0f, 0.5f, -0.5f,
      // exp: FLT_MAX is reached at ln(FLT_MAX) = 88.7228391; the denormals start at
      // -87.3365 and end (rounding to 0) at -103.972.
      88.0f, 88.72283f, 88.722839f, 88.72284f, 88.7229f, 88.8f, 89.0f, 89.1f, 100.0f, -87.3f, -87.34f, -87.4f,
      -100.0f, -103.2f, -103.27893f, -103.28f, -103.9f, -103.972f, -103.973f, -104.0f, -104.1f, -110.0f,
      // erf saturates near 3.9; the approximation is clamped at 4.
      3.8f, 3.9f, 3.92f, 4.0f, 4.1f, 5.0f, -3.9f, -4.0f, -4.1f,
      // tanh: x itself below 0.0004; the clamps near 7.9 and 8.
      0.0004f, 0.00039999f, -0.0004f, 7.9f, 7.9053111f, 7.99f, 7.9988117f, 8.0f, 9.0f, -7.9f, -8.0f, -9.0f,
      20.0f, -20.0f,
      // logistic and GELU far out.
      -30.0f, -50.0f, -88.0f, -89.0f, -103.0f, -150.0f, 30.0f, 50.0f, -5.0f, -6.0f, -10.0f};
  return v;
}

// Every 4099th bit pattern: about a million floats of every sign, exponent and mantissa, NaNs included.
std::vector<float> Sweep() {
  std::vector<float> v;
  for (uint64_t bits = 0; bits < (uint64_t{1} << 32); bits += 4099) {
    const uint32_t b = static_cast<uint32_t>(bits);
    float f;
    std::memcpy(&f, &b, sizeof(f));
    v.push_back(f);
  }
  return v;
}

std::vector<float> RandomValues(size_t n, float lo, float hi, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

TEST(Vecmath, PortableIsAlwaysSupportedAndTheWidestIsActive) {
  const std::vector<Isa>& isas = SupportedIsas();
  ASSERT_FALSE(isas.empty());
  EXPECT_EQ(isas.front(), Isa::kPortable);
  EXPECT_EQ(ActiveIsa(), isas.back());
  std::printf("[  vecmath ] active: %s\n", IsaName(ActiveIsa()));
}

TEST(Vecmath, ElementFunctionsStayWithinTheirBoundsOverAllMagnitudes) {
  const std::vector<float> sweep = Sweep();
  std::vector<float> y(sweep.size());
  ForEachIsa([&](Isa) {
    for (const Function& f : Functions()) {
      f.run(sweep.data(), y.data(), static_cast<int64_t>(sweep.size()));
      for (size_t i = 0; i < sweep.size(); ++i) ExpectClose(f, sweep[i], y[i]);
    }
  });
}

TEST(Vecmath, SpecialValuesAndEveryTailLength) {
  std::vector<float> x = SpecialValues();
  const std::vector<float> more = RandomValues(70, -12.0f, 12.0f, 1);
  x.insert(x.end(), more.begin(), more.end());
  ForEachIsa([&](Isa) {
    for (const Function& f : Functions()) {
      // Every length 1..70 at every start, so that each value is once in a tail of each length.
      for (int64_t len = 1; len <= 70; ++len) {
        for (size_t start = 0; start + static_cast<size_t>(len) <= x.size(); start += 7) {
          std::vector<float> y(static_cast<size_t>(len));
          f.run(x.data() + start, y.data(), len);
          for (int64_t i = 0; i < len; ++i)
            ExpectClose(f, x[start + static_cast<size_t>(i)], y[static_cast<size_t>(i)]);
        }
      }
    }
    float y = 0;
    Exp(&x[0], &y, 1);
    EXPECT_EQ(y, 1.0f);
    const float zero = 0.0f;
    Erf(&zero, &y, 1);
    EXPECT_EQ(y, 0.0f);
    Sigmoid(&zero, &y, 1);
    EXPECT_EQ(y, 0.5f);
    const float big = 104.0f;
    Exp(&big, &y, 1);
    EXPECT_EQ(y, kInf);
    const float small = -104.0f;
    Exp(&small, &y, 1);
    EXPECT_EQ(y, 0.0f);
  });
}

TEST(Vecmath, LargeArraysInPlace) {
  const std::vector<float> x = RandomValues(100003, -20.0f, 20.0f, 2);
  ForEachIsa([&](Isa) {
    for (const Function& f : Functions()) {
      std::vector<float> y(x.size()), z = x;
      f.run(x.data(), y.data(), static_cast<int64_t>(x.size()));
      f.run(z.data(), z.data(), static_cast<int64_t>(z.size()));
      EXPECT_TRUE(SameBits(y, z)) << f.name;
      for (size_t i = 0; i < x.size(); i += 13) ExpectClose(f, x[i], y[i]);
    }
  });
}

// What parallel chunks rely on: a value does not depend on where its call starts or ends.
TEST(Vecmath, ResultsDoNotDependOnHowTheArrayIsSplit) {
  std::vector<float> x = RandomValues(2000, -30.0f, 30.0f, 3);
  const std::vector<float> special = SpecialValues();
  std::copy(special.begin(), special.end(), x.begin() + 500);
  std::mt19937 gen(4);
  ForEachIsa([&](Isa) {
    for (const Function& f : Functions()) {
      std::vector<float> whole(x.size());
      f.run(x.data(), whole.data(), static_cast<int64_t>(x.size()));
      for (int trial = 0; trial < 20; ++trial) {
        std::vector<float> pieces(x.size());
        size_t begin = 0;
        while (begin < x.size()) {
          const size_t len = std::min(x.size() - begin, static_cast<size_t>(1 + gen() % 90));
          f.run(x.data() + begin, pieces.data() + begin, static_cast<int64_t>(len));
          begin += len;
        }
        EXPECT_TRUE(SameBits(whole, pieces)) << f.name << " trial " << trial;
      }
    }
  });
}

TEST(Vecmath, GeluEqualsTheUnfusedChain) {
  std::vector<float> x = RandomValues(1000, -8.0f, 8.0f, 5);
  const std::vector<float> special = SpecialValues();
  x.insert(x.end(), special.begin(), special.end());
  const int64_t n = static_cast<int64_t>(x.size());
  ForEachIsa([&](Isa) {
    // Div(x, sqrt 2) -> Erf -> Add 1 -> Mul x -> Mul 0.5, each step rounded to float.
    std::vector<float> t(x.size()), fused(x.size());
    const float sqrt2 = static_cast<float>(std::sqrt(2.0));
    for (size_t i = 0; i < x.size(); ++i) t[i] = x[i] / sqrt2;
    Erf(t.data(), t.data(), n);
    for (size_t i = 0; i < x.size(); ++i) t[i] = (x[i] * (t[i] + 1.0f)) * 0.5f;
    Gelu(x.data(), fused.data(), n);
    for (size_t i = 0; i < x.size(); ++i) {
      if (std::isnan(t[i])) {
        EXPECT_TRUE(std::isnan(fused[i])) << x[i];
      } else {
        EXPECT_EQ(fused[i], t[i]) << x[i];
      }
    }
  });
}

// --- Rows

std::vector<double> SoftmaxOf(const float* x, int64_t len, bool log) {
  double max = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < len; ++j) max = std::max(max, static_cast<double>(x[j]));
  double sum = 0;
  for (int64_t j = 0; j < len; ++j) sum += std::exp(static_cast<double>(x[j]) - max);
  std::vector<double> y(static_cast<size_t>(len));
  for (int64_t j = 0; j < len; ++j) {
    const double d = static_cast<double>(x[j]) - max;
    y[static_cast<size_t>(j)] = log ? d - std::log(sum) : std::exp(d) / sum;
  }
  return y;
}

const int64_t kRowLengths[] = {1, 2, 7, 16, 17, 31, 64, 65, 200};

TEST(Vecmath, SoftmaxRowsMatchDoubleLoops) {
  ForEachIsa([&](Isa) {
    for (const int64_t len : kRowLengths) {
      const int64_t rows = 9;
      std::vector<float> x =
          RandomValues(static_cast<size_t>(rows * len), -8.0f, 8.0f, static_cast<uint32_t>(len));
      // Row 1 shifted far up (the max is subtracted first), row 2 with -inf entries (probability 0).
      for (int64_t j = 0; j < len; ++j) x[static_cast<size_t>(len + j)] += 1000.0f;
      x[static_cast<size_t>(2 * len)] = -kInf;
      if (len > 2) x[static_cast<size_t>(2 * len + len / 2)] = -kInf;
      for (const bool log : {false, true}) {
        std::vector<float> y(x.size()), rowwise(x.size()), in_place = x;
        SoftmaxRows(x.data(), y.data(), rows, len, log);
        for (int64_t r = 0; r < rows; ++r)
          SoftmaxRows(x.data() + r * len, rowwise.data() + r * len, 1, len, log);
        SoftmaxRows(in_place.data(), in_place.data(), rows, len, log);
        EXPECT_TRUE(SameBits(y, rowwise)) << len;
        EXPECT_TRUE(SameBits(y, in_place)) << len;
        for (int64_t r = 0; r < rows; ++r) {
          const std::vector<double> want = SoftmaxOf(x.data() + r * len, len, log);
          for (int64_t j = 0; j < len; ++j) {
            const double w = want[static_cast<size_t>(j)];
            const float got = y[static_cast<size_t>(r * len + j)];
            if (!std::isfinite(w)) {  // -inf from a probability 0; NaN from a row of -inf only
              EXPECT_TRUE(got == w || (std::isnan(w) && std::isnan(got))) << "len " << len << " row " << r;
              continue;
            }
            const double tol = log ? LogSoftmaxTolerance(len, w) : SoftmaxRelTolerance(len) * w;
            EXPECT_NEAR(got, w, tol) << (log ? "log " : "") << "len " << len << " row " << r << " col " << j;
          }
        }
      }
    }
  });
}

TEST(Vecmath, SoftmaxRowsWithNaNOrInfinityBecomeNaN) {
  ForEachIsa([&](Isa) {
    for (const int64_t len : kRowLengths) {
      for (const float bad : {kNaN, kInf}) {
        std::vector<float> x = RandomValues(static_cast<size_t>(2 * len), -3.0f, 3.0f, 7);
        x[static_cast<size_t>(len - 1)] = bad;  // the last element: in the tail when there is one
        std::vector<float> all_neg_inf(static_cast<size_t>(len), -kInf);
        for (const bool log : {false, true}) {
          std::vector<float> y(x.size());
          SoftmaxRows(x.data(), y.data(), 2, len, log);
          for (int64_t j = 0; j < len; ++j)
            EXPECT_TRUE(std::isnan(y[static_cast<size_t>(j)])) << len << " " << j;
          // The next row is unaffected.
          const std::vector<double> want = SoftmaxOf(x.data() + len, len, log);
          for (int64_t j = 0; j < len; ++j) {
            const double w = want[static_cast<size_t>(j)];
            EXPECT_NEAR(y[static_cast<size_t>(len + j)], w,
                        log ? LogSoftmaxTolerance(len, w) : SoftmaxRelTolerance(len) * w);
          }
          std::vector<float> z(static_cast<size_t>(len));
          SoftmaxRows(all_neg_inf.data(), z.data(), 1, len, log);
          for (const float v : z) EXPECT_TRUE(std::isnan(v)) << len;
        }
      }
    }
  });
}

TEST(Vecmath, LayerNormRowsMatchDoubleLoops) {
  ForEachIsa([&](Isa) {
    for (const int64_t len : kRowLengths) {
      const int64_t rows = 11;
      std::vector<float> x =
          RandomValues(static_cast<size_t>(rows * len), -2.0f, 2.0f, static_cast<uint32_t>(100 + len));
      const std::vector<float> offsets = RandomValues(static_cast<size_t>(rows), -2.0f, 2.0f, 9);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t j = 0; j < len; ++j)
          x[static_cast<size_t>(r * len + j)] += offsets[static_cast<size_t>(r)];
      }
      const std::vector<float> scale = RandomValues(static_cast<size_t>(len), 0.5f, 2.0f, 10);
      const std::vector<float> bias = RandomValues(static_cast<size_t>(len), -1.0f, 1.0f, 11);
      const float epsilon = 1e-5f;
      for (const bool with_bias : {true, false}) {
        const float* b = with_bias ? bias.data() : nullptr;
        std::vector<float> y(x.size()), mean(static_cast<size_t>(rows)), inv(static_cast<size_t>(rows));
        LayerNormRows(x.data(), scale.data(), b, y.data(), rows, len, epsilon, mean.data(), inv.data());
        std::vector<float> rowwise(x.size()), in_place = x;
        for (int64_t r = 0; r < rows; ++r) {
          LayerNormRows(x.data() + r * len, scale.data(), b, rowwise.data() + r * len, 1, len, epsilon,
                        nullptr, nullptr);
        }
        LayerNormRows(in_place.data(), scale.data(), b, in_place.data(), rows, len, epsilon, nullptr,
                      nullptr);
        EXPECT_TRUE(SameBits(y, rowwise)) << len;
        EXPECT_TRUE(SameBits(y, in_place)) << len;
        for (int64_t r = 0; r < rows; ++r) {
          const float* xr = x.data() + r * len;
          double m = 0;
          for (int64_t j = 0; j < len; ++j) m += xr[j];
          m /= static_cast<double>(len);
          double var = 0;
          for (int64_t j = 0; j < len; ++j) var += (xr[j] - m) * (xr[j] - m);
          const double inv_d = 1.0 / std::sqrt(var / static_cast<double>(len) + epsilon);
          double x_max = 0;
          for (int64_t j = 0; j < len; ++j) x_max = std::max(x_max, static_cast<double>(std::fabs(xr[j])));
          EXPECT_NEAR(mean[static_cast<size_t>(r)], m, kLayerNormError * x_max) << len;
          EXPECT_NEAR(inv[static_cast<size_t>(r)], inv_d, kLayerNormInvError * inv_d * x_max * inv_d) << len;
          for (int64_t j = 0; j < len; ++j) {
            const double s = scale[static_cast<size_t>(j)];
            const double want = (xr[j] - m) * inv_d * s + (with_bias ? bias[static_cast<size_t>(j)] : 0.0);
            EXPECT_NEAR(y[static_cast<size_t>(r * len + j)], want,
                        kLayerNormError * (x_max * inv_d * s + std::fabs(want)))
                << "len " << len << " row " << r << " col " << j;
          }
        }
      }
    }
  });
}

// --- Binary

float Apply(BinaryOp op, float a, float b) {
  switch (op) {
    case BinaryOp::kAdd:
      return a + b;
    case BinaryOp::kSub:
      return a - b;
    case BinaryOp::kMul:
      return a * b;
    case BinaryOp::kDiv:
      return a / b;
  }
  return 0;
}

TEST(Vecmath, BinaryRowsEqualScalarArithmetic) {
  std::vector<float> a = RandomValues(3 * 70, -5.0f, 5.0f, 12);
  std::vector<float> b = RandomValues(3 * 70, 0.5f, 4.0f, 13);
  const std::vector<float> special = SpecialValues();
  std::copy_n(special.begin(), 20, a.begin() + 5);
  std::copy_n(special.begin() + 10, 20, b.begin() + 40);
  ForEachIsa([&](Isa) {
    for (const BinaryOp op : {BinaryOp::kAdd, BinaryOp::kSub, BinaryOp::kMul, BinaryOp::kDiv}) {
      for (int64_t len = 1; len <= 70; ++len) {
        const int64_t rows = 3;
        // Steps: both walk (row stride len), a bias row (b's row stride 0), a scalar per row, a scalar.
        for (const auto& [a_row, a_step, b_row, b_step] :
             std::vector<std::array<int64_t, 4>>{{len, 1, len, 1},
                                                 {len, 1, 0, 1},
                                                 {len, 1, 1, 0},
                                                 {0, 0, len, 1},
                                                 {1, 0, 0, 1},
                                                 {0, 0, 0, 0}}) {
          std::vector<float> out(static_cast<size_t>(rows * len));
          BinaryRows(op, a.data(), a_row, a_step, b.data(), b_row, b_step, out.data(), rows, len);
          for (int64_t r = 0; r < rows; ++r) {
            for (int64_t j = 0; j < len; ++j) {
              const float want = Apply(op, a[static_cast<size_t>(r * a_row + j * a_step)],
                                       b[static_cast<size_t>(r * b_row + j * b_step)]);
              const float got = out[static_cast<size_t>(r * len + j)];
              EXPECT_TRUE(std::memcmp(&want, &got, sizeof(float)) == 0 ||
                          (std::isnan(want) && std::isnan(got)))
                  << static_cast<int>(op) << " len " << len << ": " << got << " vs " << want;
            }
          }
        }
        // In place into a.
        std::vector<float> c(a.begin(), a.begin() + rows * len), want(c.size());
        for (size_t i = 0; i < c.size(); ++i) want[i] = Apply(op, c[i], b[i % static_cast<size_t>(len)]);
        BinaryRows(op, c.data(), len, 1, b.data(), 0, 1, c.data(), rows, len);
        for (size_t i = 0; i < c.size(); ++i) {
          EXPECT_TRUE(std::memcmp(&want[i], &c[i], sizeof(float)) == 0 ||
                      (std::isnan(want[i]) && std::isnan(c[i])));
        }
      }
    }
  });
}

}  // namespace
}  // namespace compress::kernels::vecmath
