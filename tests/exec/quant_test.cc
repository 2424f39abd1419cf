// QuantizeLinear, DequantizeLinear and DynamicQuantizeLinear kernels.

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "compress/util/error.h"
#include "compress/util/half.h"
#include "support/test_support.h"

namespace compress {
namespace {

using testing::ErrorOf;

using testing::RunNode;

Node MakeNode(const std::string& op, std::vector<std::string> inputs, std::vector<Attribute> attrs = {},
              size_t outputs = 1) {
  Node n;
  n.name = "q0";
  n.op_type = op;
  n.inputs = std::move(inputs);
  for (size_t i = 0; i < outputs; ++i) n.outputs.push_back("y" + std::to_string(i));
  n.attributes = std::move(attrs);
  return n;
}

template <typename T>
std::vector<T> Values(const Tensor& t) {
  return {t.data<T>(), t.data<T>() + t.numel()};
}

Tensor F(std::vector<int64_t> dims, const std::vector<float>& v) {
  return Tensor::FromVector<float>(dims, v);
}

// The error names the node and its op type, then says what is wrong.
void ExpectNodeError(const std::string& msg, const std::string& op, const std::string& what) {
  EXPECT_NE(msg.find("q0"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(" + op + "): " + what), std::string::npos) << msg;
}

TEST(QuantizeLinear, RoundsHalfToEvenAndSaturates) {
  const Tensor x = F({8}, {0.5f, 1.5f, 2.5f, -0.5f, -1.5f, 300.0f, -300.0f, 2.6f});
  const Tensor scale = F({}, {1.0f});
  const auto u8 = RunNode(MakeNode("QuantizeLinear", {"x", "s", "z"}),
                          {x, scale, Tensor::FromVector<uint8_t>({}, {128})}, 13);
  EXPECT_EQ(Values<uint8_t>(u8[0]), (std::vector<uint8_t>{128, 130, 130, 128, 126, 255, 0, 131}));
  const auto i8 = RunNode(MakeNode("QuantizeLinear", {"x", "s", "z"}),
                          {x, scale, Tensor::FromVector<int8_t>({}, {0})}, 13);
  EXPECT_EQ(Values<int8_t>(i8[0]), (std::vector<int8_t>{0, 2, 2, 0, -2, 127, -128, 3}));
  // Without a zero point the output is uint8 with zero point 0; the division happens before rounding.
  const auto def =
      RunNode(MakeNode("QuantizeLinear", {"x", "s"}), {F({3}, {1.0f, 5.0f, -1.0f}), F({}, {2.0f})}, 10);
  EXPECT_EQ(def[0].dtype(), DType::kUInt8);
  EXPECT_EQ(Values<uint8_t>(def[0]), (std::vector<uint8_t>{0, 2, 0}));
}

TEST(QuantizeLinear, PerAxisScalesAndZeroPoints) {
  // x[2, 3], axis 1: channel c uses scale {1, 2, 4}[c] and zero point {0, 10, -20}[c].
  const Tensor x = F({2, 3}, {1, 2, 4, -1, -6, 10});
  const Tensor scale = F({3}, {1, 2, 4});
  const Tensor zp = Tensor::FromVector<int8_t>({3}, {0, 10, -20});
  const auto y = RunNode(MakeNode("QuantizeLinear", {"x", "s", "z"}), {x, scale, zp}, 13);
  EXPECT_EQ(Values<int8_t>(y[0]), (std::vector<int8_t>{1, 11, -19, -1, 7, -18}));
  // axis 0 (as -2): row r uses scale {1, 2}[r].
  const auto rows = RunNode(MakeNode("QuantizeLinear", {"x", "s", "z"}, {Attribute::Int("axis", -2)}),
                            {x, F({2}, {1, 2}), Tensor::FromVector<uint8_t>({2}, {0, 100})}, 13);
  EXPECT_EQ(Values<uint8_t>(rows[0]), (std::vector<uint8_t>{1, 2, 4, 100, 97, 105}));
  // Opset 10 knows only per-tensor parameters.
  const std::string msg = ErrorOf([&] {
    RunNode(MakeNode("QuantizeLinear", {"x", "s", "z"}), {x, scale, zp}, 10);
  });
  ExpectNodeError(msg, "QuantizeLinear", "scale of shape [3] must be a scalar");
  const std::string size = ErrorOf([&] {
    RunNode(MakeNode("QuantizeLinear", {"x", "s"}, {Attribute::Int("axis", 0)}), {x, scale}, 13);
  });
  EXPECT_NE(size.find("scale has 3 values for axis 0 of size 2"), std::string::npos) << size;
}

TEST(QuantizeLinear, Float16InputFromOpset19) {
  const std::vector<uint16_t> bits = {FloatToHalf(1.5f), FloatToHalf(-3.0f), FloatToHalf(100.0f)};
  const Tensor x = Tensor::FromBytes(DType::kFloat16, {3}, bits.data(), 6);
  const uint16_t half_scale = FloatToHalf(0.5f);
  const Tensor scale = Tensor::FromBytes(DType::kFloat16, {}, &half_scale, 2);
  const auto y = RunNode(MakeNode("QuantizeLinear", {"x", "s", "z"}),
                         {x, scale, Tensor::FromVector<int8_t>({}, {1})}, 19);
  EXPECT_EQ(Values<int8_t>(y[0]), (std::vector<int8_t>{4, -5, 127}));
}

TEST(QuantizeLinear, LargeInputsDoNotDependOnThreads) {
  std::vector<float> v(100000);
  for (size_t i = 0; i < v.size(); ++i) v[i] = std::sin(static_cast<float>(i)) * 3.0f;
  const Tensor x = F({4, 25000}, v);
  const Node n = MakeNode("QuantizeLinear", {"x", "s", "z"}, {Attribute::Int("axis", 0)});
  const std::vector<Tensor> in = {x, F({4}, {0.01f, 0.02f, 0.03f, 0.04f}),
                                  Tensor::FromVector<uint8_t>({4}, {128, 120, 110, 100})};
  EXPECT_TRUE(RunNode(n, in, 13, false, 1)[0].SameContent(RunNode(n, in, 13, false, 4)[0]));
}

TEST(DequantizeLinear, PerTensorPerAxisAndInt32) {
  const auto u8 = RunNode(MakeNode("DequantizeLinear", {"x", "s", "z"}),
                          {Tensor::FromVector<uint8_t>({4}, {0, 3, 128, 255}), F({}, {2.0f}),
                           Tensor::FromVector<uint8_t>({}, {128})},
                          10);
  EXPECT_EQ(Values<float>(u8[0]), (std::vector<float>{-256, -250, 0, 254}));
  const auto axis = RunNode(MakeNode("DequantizeLinear", {"x", "s", "z"}),
                            {Tensor::FromVector<int8_t>({1, 2, 2}, {-128, 127, 10, -10}),
                             F({2}, {0.5f, 0.25f}), Tensor::FromVector<int8_t>({2}, {0, -10})},
                            13);
  EXPECT_EQ(Values<float>(axis[0]), (std::vector<float>{-64, 63.5f, 5, 0}));
  const auto i32 = RunNode(MakeNode("DequantizeLinear", {"x", "s"}),
                           {Tensor::FromVector<int32_t>({2}, {-1000000, 7}), F({}, {0.5f})}, 13);
  EXPECT_EQ(Values<float>(i32[0]), (std::vector<float>{-500000, 3.5f}));
  const std::string msg = ErrorOf([] {
    RunNode(MakeNode("DequantizeLinear", {"x", "s", "z"}),
            {Tensor::FromVector<int8_t>({1}, {1}), F({}, {1.0f}), Tensor::FromVector<uint8_t>({}, {0})}, 13);
  });
  ExpectNodeError(msg, "DequantizeLinear", "zero point type uint8 differs from input type int8");
}

struct Dynamic {
  std::vector<uint8_t> y;
  float scale;
  uint8_t zero_point;
};

Dynamic RunDynamic(const std::vector<float>& x) {
  const auto out =
      RunNode(MakeNode("DynamicQuantizeLinear", {"x"}, {}, 3), {F({static_cast<int64_t>(x.size())}, x)}, 11);
  return {Values<uint8_t>(out[0]), out[1].data<float>()[0], out[2].data<uint8_t>()[0]};
}

TEST(DynamicQuantizeLinear, FollowsTheSpecFormula) {
  // Range [-3, 2]: scale 5 / 255, zero point round(3 / scale) = 153, y = round(x / scale) + 153 saturated.
  const Dynamic d = RunDynamic({0, 2, -3, -2.5f, 1.34f, 0.5f});
  EXPECT_FLOAT_EQ(d.scale, 5.0f / 255.0f);
  EXPECT_EQ(d.zero_point, 153);
  EXPECT_EQ(d.y, (std::vector<uint8_t>{153, 255, 0, 26, 221, 179}));
  // The range always includes 0: all-positive data gets zero point 0.
  const Dynamic p = RunDynamic({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12});
  EXPECT_FLOAT_EQ(p.scale, 12.0f / 255.0f);
  EXPECT_EQ(p.zero_point, 0);
  EXPECT_EQ(p.y[0], 21);  // 1 / (12 / 255) = 21.25
  EXPECT_EQ(p.y[11], 255);
  // All-negative data gets zero point 255. In float32, -2 / (4 / 255) is -127.49999, which rounds to -127.
  const Dynamic n = RunDynamic({-1, -2, -4});
  EXPECT_EQ(n.zero_point, 255);
  EXPECT_EQ(n.y, (std::vector<uint8_t>{191, 128, 0}));
  // All zeros: scale 0 and every value at the zero point 0.
  const Dynamic z = RunDynamic({0, 0});
  EXPECT_EQ(z.scale, 0.0f);
  EXPECT_EQ(z.zero_point, 0);
  EXPECT_EQ(z.y, (std::vector<uint8_t>{0, 0}));
}

TEST(DynamicQuantizeLinear, ZeroPointRoundsHalfToEven) {
  // Range [-0.5, 254.5]: scale 1, so the zero point -min / scale = 0.5 and the values are exact ties.
  const Dynamic d = RunDynamic({-0.5f, 254.5f, 1.5f, 2.5f});
  EXPECT_FLOAT_EQ(d.scale, 1.0f);
  EXPECT_EQ(d.zero_point, 0);
  EXPECT_EQ(d.y, (std::vector<uint8_t>{0, 254, 2, 2}));
}

// The 8-bit QuantizeLinear / DequantizeLinear runs go eight at a time where the CPU has AVX2: every element,
// at every position of a run and in its tail, must be what the spec's scalar formula gives.
TEST(QuantizeLinear, VectorRunsEqualTheScalarFormula) {
  std::mt19937 rng(29);
  std::normal_distribution<float> normal(0.0f, 60.0f);
  for (const int64_t n : {int64_t{1}, int64_t{7}, int64_t{8}, int64_t{9}, int64_t{31}, int64_t{1000}}) {
    std::vector<float> x(static_cast<size_t>(n));
    for (float& v : x) v = normal(rng);
    // Ties (x / s at .5), saturation on both sides, NaN and infinities.
    const std::vector<float> special = {0.5f, 1.5f, 2.5f, -0.5f, -2.5f, 1e9f, -1e9f, NAN,
                                        INFINITY, -INFINITY, 254.5f, 255.5f, -128.5f, 127.5f};
    for (size_t i = 0; i < x.size() && i < special.size(); ++i) x[(i * 5) % x.size()] = special[i];
    for (const bool is_signed : {false, true}) {
      SCOPED_TRACE(std::to_string(n) + (is_signed ? " int8" : " uint8"));
      const float scale = 1.0f;
      const int32_t zero = is_signed ? -3 : 117;
      Tensor z(is_signed ? DType::kInt8 : DType::kUInt8, {});
      static_cast<uint8_t*>(z.mutable_raw())[0] = static_cast<uint8_t>(zero);
      const Tensor q = RunNode(MakeNode("QuantizeLinear", {"x", "s", "z"}),
                               {F({n}, x), F({}, {scale}), z}, 13)[0];
      const float lo = is_signed ? -128.0f : 0.0f, hi = is_signed ? 127.0f : 255.0f;
      for (int64_t i = 0; i < n; ++i) {
        const float v = std::nearbyint(x[static_cast<size_t>(i)] / scale) + static_cast<float>(zero);
        const float expected = !(v > lo) ? lo : !(v < hi) ? hi : v;
        const uint8_t byte = static_cast<const uint8_t*>(q.raw())[i];
        const int got = is_signed ? static_cast<int8_t>(byte) : byte;
        ASSERT_EQ(got, static_cast<int>(expected)) << "element " << i << " x " << x[static_cast<size_t>(i)];
      }
      const Tensor d = RunNode(MakeNode("DequantizeLinear", {"x", "s", "z"}), {q, F({}, {0.37f}), z}, 13)[0];
      for (int64_t i = 0; i < n; ++i) {
        const uint8_t byte = static_cast<const uint8_t*>(q.raw())[i];
        const int v = is_signed ? static_cast<int8_t>(byte) : byte;
        ASSERT_EQ(d.data<float>()[i], static_cast<float>(v - zero) * 0.37f) << "element " << i;
      }
    }
  }
}

}  // namespace
}  // namespace compress
