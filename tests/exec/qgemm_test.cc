// The integer GEMM (src/exec/kernels/qgemm.h) on every path this CPU supports: both operand forms against a
// naive int64 triple loop and against the scalar path, exactly, on random shapes with tails in every
// dimension, int8 and uint8 weights (7-bit and full range) with per-channel and per-tensor zero points,
// depths where int16 pair sums and int32 sums overflow; and the requantisation against kernels::Requantize.

#include "qgemm.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "common.h"

namespace compress::kernels::qgemm {
namespace {

constexpr int32_t kSentinel = 0x5a5a5a5a;  // C outside the product must stay untouched

std::string Paths(const std::vector<Isa>& isas) {
  std::string s;
  for (Isa isa : isas) s += std::string(s.empty() ? "" : ", ") + IsaName(isa);
  return s.empty() ? "none" : s;
}

// Prints the paths that run and those this CPU lacks (listed, not silently passed).
std::vector<Isa> PathsToTest() {
  const std::vector<Isa> supported = SupportedIsas();
  std::vector<Isa> missing;
  for (Isa isa : {Isa::kScalar, Isa::kAvx2Maddubs, Isa::kAvx2Madd16, Isa::kAvx512Vnni256, Isa::kAvxVnni,
                  Isa::kAvx512Vnni}) {
    if (std::find(supported.begin(), supported.end(), isa) == supported.end()) missing.push_back(isa);
  }
  std::cout << "[ qgemm    ] paths run: " << Paths(supported)
            << "; not supported by this CPU: " << Paths(missing) << "; default: " << IsaName(DefaultIsa())
            << "\n";
  return supported;
}

// Weights of one operand: byte (channel i, depth p) at bytes[left ? i * depth + p : p * channels + i].
struct Weights {
  int64_t channels = 0, depth = 0;
  bool left = false, is_signed = false;
  std::vector<uint8_t> bytes;
  std::vector<int32_t> zero_points;  // 1 or channels

  int32_t at(int64_t i, int64_t p) const {
    const uint8_t b = bytes[static_cast<size_t>(left ? i * depth + p : p * channels + i)];
    return is_signed ? static_cast<int8_t>(b) : b;
  }
  int32_t zero_point(int64_t i) const {
    return zero_points[zero_points.size() == 1 ? 0 : static_cast<size_t>(i)];
  }
  PackedWeights Pack() const {
    return left ? PackedWeights::Left(bytes.data(), is_signed, channels, depth, zero_points)
                : PackedWeights::Right(bytes.data(), is_signed, depth, channels, zero_points);
  }
};

// Whether every w~ (w, or w - 128 for uint8) lies in [-64, 64].
bool FitsSevenBits(const Weights& w) {
  for (int64_t i = 0; i < w.channels; ++i) {
    for (int64_t p = 0; p < w.depth; ++p) {
      const int32_t v = w.at(i, p) - (w.is_signed ? 0 : 128);
      if (v < -64 || v > 64) return false;
    }
  }
  return true;
}

// Full range, or 7-bit: w~ (w, or w - 128 for uint8) in [-64, 64].
Weights RandomWeights(bool left, int64_t channels, int64_t depth, bool is_signed, bool seven_bit,
                      bool per_channel, std::mt19937& rng) {
  Weights w;
  w.channels = channels;
  w.depth = depth;
  w.left = left;
  w.is_signed = is_signed;
  const int lo = (is_signed ? 0 : 128) + (seven_bit ? -64 : -128),
            hi = (is_signed ? 0 : 128) + (seven_bit ? 64 : 127);
  std::uniform_int_distribution<int> value(lo, hi), zero(is_signed ? -128 : 0, is_signed ? 127 : 255);
  w.bytes.resize(static_cast<size_t>(channels * depth));
  for (uint8_t& b : w.bytes) b = static_cast<uint8_t>(value(rng));
  w.zero_points.resize(per_channel ? static_cast<size_t>(channels) : 1);
  for (int32_t& z : w.zero_points) z = zero(rng);
  return w;
}

std::vector<uint8_t> RandomBytes(int64_t n, std::mt19937& rng) {
  std::uniform_int_distribution<int> value(0, 255);
  std::vector<uint8_t> v(static_cast<size_t>(n));
  for (uint8_t& b : v) b = static_cast<uint8_t>(value(rng));
  return v;
}

// The definition: sum in int64, then the low 32 bits (what int32 wrapping accumulation gives).
int32_t Truncate(int64_t v) { return static_cast<int32_t>(static_cast<uint32_t>(static_cast<uint64_t>(v))); }

// A C matrix of rows x cols inside rows of ldc, the rest sentinels.
struct Output {
  int64_t rows, cols, ldc;
  std::vector<int32_t> data;
  Output(int64_t r, int64_t c, int64_t ld)
      : rows(r), cols(c), ldc(ld), data(static_cast<size_t>(r * ld), kSentinel) {}
  int32_t at(int64_t i, int64_t j) const { return data[static_cast<size_t>(i * ldc + j)]; }
};

// Every element of `got` equals `want`, and the padding of each row still holds sentinels.
void ExpectSame(const Output& got, const std::vector<int32_t>& want, const std::string& what) {
  int64_t mismatches = 0;
  for (int64_t i = 0; i < got.rows; ++i) {
    for (int64_t j = 0; j < got.ldc; ++j) {
      const int32_t expected = j < got.cols ? want[static_cast<size_t>(i * got.cols + j)] : kSentinel;
      if (got.at(i, j) != expected && mismatches++ < 5) {
        ADD_FAILURE() << what << ": C[" << i << "][" << j << "] = " << got.at(i, j) << ", expected "
                      << expected << (j >= got.cols ? " (past the last column)" : "");
      }
    }
  }
  EXPECT_EQ(mismatches, 0) << what;
}

// Weights on the right: C = (X - zx) (W - zw), X m x depth (rows ldx apart), zx per row or one.
struct RightCase {
  int64_t m, n, depth, ldx;
  std::vector<uint8_t> x;
  std::vector<int32_t> x_zero_points;  // m, or 1
  Weights w;

  std::vector<int32_t> Naive() const {
    std::vector<int32_t> c(static_cast<size_t>(m * n));
    for (int64_t i = 0; i < m; ++i) {
      const int64_t zx = x_zero_points[x_zero_points.size() == 1 ? 0 : static_cast<size_t>(i)];
      for (int64_t j = 0; j < n; ++j) {
        int64_t sum = 0;
        for (int64_t p = 0; p < depth; ++p) {
          sum += (x[static_cast<size_t>(i * ldx + p)] - zx) * (w.at(j, p) - w.zero_point(j));
        }
        c[static_cast<size_t>(i * n + j)] = Truncate(sum);
      }
    }
    return c;
  }
  Output Run(const PackedWeights& packed, std::optional<Isa> isa) const {
    Output c(m, n, n + 3);
    MultiplyRight(m, x.data(), ldx, x_zero_points.data(), x_zero_points.size() == 1 ? 0 : 1, packed,
                  c.data.data(), c.ldc, isa);
    return c;
  }
};

// Weights on the left: C = (W[row0, row0 + m) - zw) (X - zx), X depth x n (rows ldx apart).
struct LeftCase {
  int64_t row0, m, n, depth, ldx;
  std::vector<uint8_t> x;
  int32_t x_zero_point;
  Weights w;

  std::vector<int32_t> Naive() const {
    std::vector<int32_t> c(static_cast<size_t>(m * n));
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        int64_t sum = 0;
        for (int64_t p = 0; p < depth; ++p) {
          sum += (w.at(row0 + i, p) - w.zero_point(row0 + i)) *
                 (x[static_cast<size_t>(p * ldx + j)] - int64_t{x_zero_point});
        }
        c[static_cast<size_t>(i * n + j)] = Truncate(sum);
      }
    }
    return c;
  }
  Output Run(const PackedWeights& packed, std::optional<Isa> isa) const {
    Output c(m, n, n + 3);
    MultiplyLeft(packed, row0, m, n, x.data(), ldx, x_zero_point, c.data.data(), c.ldc, isa);
    return c;
  }
};

// The weight variants every shape runs with: signedness x 7-bit or full range x zero point per channel or per
// tensor.
struct WeightKind {
  bool is_signed, seven_bit, per_channel;
  std::string Describe() const {
    return std::string(is_signed ? "int8" : "uint8") + (seven_bit ? " 7-bit" : " full-range") +
           (per_channel ? " per-channel zw" : " per-tensor zw");
  }
};
std::vector<WeightKind> WeightKinds() {
  std::vector<WeightKind> kinds;
  for (bool is_signed : {true, false}) {
    for (bool seven_bit : {true, false}) {
      for (bool per_channel : {true, false}) kinds.push_back({is_signed, seven_bit, per_channel});
    }
  }
  return kinds;
}

// Shapes drawn from sizes with tails for every tile (1, 2, 3, 5, 17, 63, 65, 127 ...), at most `budget`
// multiply-adds, plus deep ones (int16 pair sums and int32 overflow concerns).
struct Shape {
  int64_t m, n, depth;
};
std::vector<Shape> RandomShapes(int count, std::mt19937& rng) {
  static const int64_t kSizes[] = {1, 2, 3, 4, 5, 7, 15, 16, 17, 31, 33, 63, 64, 65, 100, 127, 129, 300, 577};
  constexpr int64_t kBudget = 3'000'000;
  std::uniform_int_distribution<size_t> pick(0, std::size(kSizes) - 1);
  std::vector<Shape> shapes = {{7, 33, 2305}, {17, 5, 2305}, {1, 1, 1}, {65, 63, 17}};
  while (static_cast<int>(shapes.size()) < count) {
    const Shape s{kSizes[pick(rng)], kSizes[pick(rng)], kSizes[pick(rng)]};
    if (s.m * s.n * s.depth <= kBudget) shapes.push_back(s);
  }
  return shapes;
}

std::string Describe(const Shape& s, const WeightKind& kind) {
  return "m=" + std::to_string(s.m) + " n=" + std::to_string(s.n) + " depth=" + std::to_string(s.depth) +
         " " + kind.Describe();
}

// The path that ran: kAvx2Maddubs runs kAvx2Madd16 for weights that are not 7-bit.
Isa Effective(Isa isa, const PackedWeights& w) {
  return isa == Isa::kAvx2Maddubs && !w.seven_bit() ? Isa::kAvx2Madd16 : isa;
}

TEST(QGemmTest, WeightsOnTheRightEqualTheDefinitionOnEveryPath) {
  const std::vector<Isa> isas = PathsToTest();
  std::mt19937 rng(1234);
  std::vector<int> runs(6, 0);
  for (const Shape& s : RandomShapes(60, rng)) {
    for (const WeightKind& kind : WeightKinds()) {
      RightCase c;
      c.m = s.m;
      c.n = s.n;
      c.depth = s.depth;
      c.ldx = s.depth + std::uniform_int_distribution<int64_t>(0, 5)(rng);
      c.x = RandomBytes(c.m * c.ldx, rng);
      const bool per_row = std::uniform_int_distribution<int>(0, 1)(rng) == 1;
      std::uniform_int_distribution<int32_t> zero(0, 255);
      for (int64_t i = 0; i < (per_row ? c.m : 1); ++i) c.x_zero_points.push_back(zero(rng));
      c.w = RandomWeights(false, c.n, c.depth, kind.is_signed, kind.seven_bit, kind.per_channel, rng);
      const PackedWeights packed = c.w.Pack();
      ASSERT_EQ(packed.seven_bit(), FitsSevenBits(c.w)) << Describe(s, kind);
      const std::vector<int32_t> naive = c.Naive();
      for (Isa isa : isas) {
        ExpectSame(c.Run(packed, isa), naive, std::string(IsaName(isa)) + " right " + Describe(s, kind));
        ++runs[static_cast<size_t>(Effective(isa, packed))];
      }
      ExpectSame(c.Run(packed, std::nullopt), naive, "default right " + Describe(s, kind));
    }
  }
  for (Isa isa : isas) {
    std::cout << "[ qgemm    ] right: " << IsaName(isa) << " ran " << runs[static_cast<size_t>(isa)]
              << " products\n";
  }
}

TEST(QGemmTest, WeightsOnTheLeftEqualTheDefinitionOnEveryPath) {
  const std::vector<Isa> isas = PathsToTest();
  std::mt19937 rng(4321);
  std::vector<int> runs(6, 0);
  for (const Shape& s : RandomShapes(60, rng)) {
    for (const WeightKind& kind : WeightKinds()) {
      LeftCase c;
      c.row0 = std::uniform_int_distribution<int64_t>(0, 3)(rng);
      c.m = s.m;
      c.n = s.n;
      c.depth = s.depth;
      c.ldx = s.n + std::uniform_int_distribution<int64_t>(0, 20)(rng);
      c.x = RandomBytes(c.depth * c.ldx, rng);
      c.x_zero_point = std::uniform_int_distribution<int>(0, 255)(rng);
      // Rows beyond [row0, row0 + m) must not be read into the result.
      c.w = RandomWeights(true, c.row0 + c.m + 2, c.depth, kind.is_signed, kind.seven_bit, kind.per_channel,
                          rng);
      const PackedWeights packed = c.w.Pack();
      const std::vector<int32_t> naive = c.Naive();
      for (Isa isa : isas) {
        ExpectSame(c.Run(packed, isa), naive, std::string(IsaName(isa)) + " left " + Describe(s, kind));
        ++runs[static_cast<size_t>(Effective(isa, packed))];
      }
      ExpectSame(c.Run(packed, std::nullopt), naive, "default left " + Describe(s, kind));
    }
  }
  for (Isa isa : isas) {
    std::cout << "[ qgemm    ] left: " << IsaName(isa) << " ran " << runs[static_cast<size_t>(isa)]
              << " products\n";
  }
}

// Extreme values over a depth where the int32 sums wrap (40000 * 255 * 255 > 2^31) and where a pair of
// full-range products saturates int16: every path must still wrap exactly like int32 accumulation.
TEST(QGemmTest, ExtremeValuesWrapLikeInt32OnEveryPath) {
  const std::vector<Isa> isas = PathsToTest();
  std::mt19937 rng(99);
  constexpr int64_t kDepth = 40000;
  static_assert(kDepth * 255 * 255 > std::numeric_limits<int32_t>::max(),
                "the sums must leave the int32 range");
  for (bool is_signed : {true, false}) {
    for (bool random_extremes : {false, true}) {
      auto extreme = [&](int lo, int hi) {
        return static_cast<uint8_t>(
            random_extremes && std::uniform_int_distribution<int>(0, 1)(rng) == 0 ? lo : hi);
      };
      const std::string what =
          std::string(is_signed ? "int8" : "uint8") + (random_extremes ? " mixed" : " uniform");
      // Weights as far from their zero point as they go: w = min with zw = max.
      RightCase r;
      r.m = 3;
      r.n = 5;
      r.depth = kDepth;
      r.ldx = kDepth;
      for (int64_t e = 0; e < r.m * r.depth; ++e) r.x.push_back(extreme(0, 255));
      r.x_zero_points = {0, 255, 0};
      r.w = RandomWeights(false, r.n, kDepth, is_signed, false, true, rng);
      for (uint8_t& b : r.w.bytes) b = is_signed ? extreme(0x7f, 0x80) : extreme(255, 0);
      for (int32_t& z : r.w.zero_points) z = is_signed ? 127 : 255;
      LeftCase l;
      l.row0 = 0;
      l.m = 5;
      l.n = 3;
      l.depth = kDepth;
      l.ldx = 3;
      for (int64_t e = 0; e < l.depth * l.n; ++e) l.x.push_back(extreme(0, 255));
      l.x_zero_point = 0;
      l.w = RandomWeights(true, l.m, kDepth, is_signed, false, false, rng);
      for (uint8_t& b : l.w.bytes) b = is_signed ? extreme(0x7f, 0x80) : extreme(255, 0);
      l.w.zero_points = {is_signed ? 127 : 255};
      const PackedWeights right = r.w.Pack(), left = l.w.Pack();
      const std::vector<int32_t> right_naive = r.Naive(), left_naive = l.Naive();
      for (Isa isa : isas) {
        ExpectSame(r.Run(right, isa), right_naive, std::string(IsaName(isa)) + " right " + what);
        ExpectSame(l.Run(left, isa), left_naive, std::string(IsaName(isa)) + " left " + what);
      }
    }
  }
}

// Requantize equals kernels::Requantize element by element on every path: ties (x.5 at several
// magnitudes), saturation, int32 extremes, bias wrapping, per-element and per-row multipliers and biases,
// int8 and uint8 outputs, a folded Relu (lo = zero point), every tail length.
TEST(QGemmTest, RequantizeEqualsTheScalarFunctionOnEveryPath) {
  const std::vector<Isa> isas = PathsToTest();
  std::mt19937 rng(5);
  std::vector<int32_t> acc;
  for (int32_t v = -40; v <= 40; ++v) acc.push_back(v);  // with multiplier 0.5 or 0.25: ties
  for (int32_t v : {std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max(), -(1 << 24) - 1,
                    (1 << 24) + 1, 1 << 30, -(1 << 30), 255, 256, -129, -128, 127, 128}) {
    acc.push_back(v);
  }
  std::uniform_int_distribution<int32_t> any(std::numeric_limits<int32_t>::min(),
                                             std::numeric_limits<int32_t>::max());
  std::uniform_int_distribution<int32_t> small(-5000, 5000);
  for (int i = 0; i < 300; ++i) acc.push_back(i % 2 == 0 ? any(rng) : small(rng));
  const std::vector<float> special = {0.5f, 0.25f, 1.5f, 0.0f, 1e-3f, 0.0123f, 3.0f, 1e30f};
  std::vector<float> multipliers(acc.size());
  std::vector<int32_t> biases(acc.size());
  std::uniform_real_distribution<float> scale(1e-4f, 0.1f);
  for (size_t j = 0; j < acc.size(); ++j) {
    multipliers[j] = j % 3 == 0 ? special[j / 3 % special.size()] : scale(rng);
    biases[j] = j % 5 == 0 ? any(rng) : small(rng);
  }
  int64_t checked = 0;
  for (Isa isa : isas) {
    for (bool is_signed : {false, true}) {
      for (bool relu : {false, true}) {
        for (int config = 0; config < 4; ++config) {
          const bool per_element = config % 2 == 1, bias = config >= 2;
          for (int32_t zero_point :
               is_signed ? std::vector<int32_t>{0, -128, 17} : std::vector<int32_t>{0, 128, 255}) {
            for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{15}, int64_t{16}, int64_t{17}, int64_t{33},
                              static_cast<int64_t>(acc.size())}) {
              for (int64_t start : {int64_t{0}, int64_t{81}, int64_t{93}}) {
                if (start + n > static_cast<int64_t>(acc.size())) continue;
                Requantization q;
                q.bias = bias ? biases.data() + start : nullptr;
                q.bias_step = per_element ? 1 : 0;
                q.multipliers = multipliers.data() + start;
                q.multiplier_step = per_element ? 1 : 0;
                q.zero_point = zero_point;
                q.lo = relu ? zero_point : is_signed ? -128 : 0;
                q.hi = is_signed ? 127 : 255;
                std::vector<uint8_t> out(static_cast<size_t>(n) + 1, 0xee);
                Requantize(acc.data() + start, n, q, out.data(), isa);
                for (int64_t j = 0; j < n; ++j) {
                  const size_t e = static_cast<size_t>(start + j);
                  const int32_t b = bias ? biases[per_element ? e : static_cast<size_t>(start)] : 0;
                  const auto a =
                      static_cast<int32_t>(static_cast<uint32_t>(acc[e]) + static_cast<uint32_t>(b));
                  const float m = multipliers[per_element ? e : static_cast<size_t>(start)];
                  const auto want = static_cast<uint8_t>(kernels::Requantize(a, m, q.zero_point, q.lo, q.hi));
                  ASSERT_EQ(out[static_cast<size_t>(j)], want)
                      << IsaName(isa) << " element " << e << " acc " << acc[e] << " bias " << b
                      << " multiplier " << m << " zero point " << zero_point
                      << (is_signed ? " int8" : " uint8") << (relu ? " relu" : "");
                  ++checked;
                }
                EXPECT_EQ(out[static_cast<size_t>(n)], 0xee) << "wrote past the row";
              }
            }
          }
        }
      }
    }
  }
  std::cout << "[ qgemm    ] requantize: " << checked << " elements checked on " << Paths(isas) << "\n";
}

TEST(QGemmTest, FlipSignMapsInt8ToUint8PlusOneTwentyEight) {
  std::vector<int8_t> src;
  for (int v = -128; v <= 127; ++v) src.push_back(static_cast<int8_t>(v));
  std::vector<uint8_t> dst(src.size());
  FlipSign(src.data(), static_cast<int64_t>(src.size()), dst.data());
  for (size_t i = 0; i < src.size(); ++i) EXPECT_EQ(dst[i], src[i] + 128) << i;
}

}  // namespace
}  // namespace compress::kernels::qgemm
