// Softmax / LogSoftmax (axis meaning before and after opset 13, stability, fast against reference),
// BatchNormalization (inference, per-activation parameters, training mode), LayerNormalization,
// InstanceNormalization, float16 and thread-count independence.

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "compress/util/error.h"
#include "compress/util/half.h"
#include "support/test_support.h"

namespace compress {
namespace {

using testing::ErrorOf;

using testing::RunNode;
using Dims = std::vector<int64_t>;

constexpr float kInf = std::numeric_limits<float>::infinity();

// Probabilities against a double computation: float32 rounding of values <= 1 (2^-24 = 6e-8 each) through
// exp and the division, and the vectorised exp of the fast kernels (vecmath::kExpMaxRelError, about an ulp).
constexpr double kProbTol = 1e-6;
// Normalised values (|y| up to ~5) against double: float32 rounding of mean, variance and the scaled result.
constexpr double kNormTol = 1e-5;

Node MakeNode(const std::string& op, std::vector<std::string> inputs, std::vector<Attribute> attrs = {},
              size_t outputs = 1) {
  Node n;
  n.name = "n0";
  n.op_type = op;
  n.inputs = std::move(inputs);
  for (size_t i = 0; i < outputs; ++i) n.outputs.push_back("y" + std::to_string(i));
  n.attributes = std::move(attrs);
  return n;
}

Tensor F32(const Dims& dims, const std::vector<float>& v) { return Tensor::FromVector<float>(dims, v); }
Tensor F32(const std::vector<float>& v) { return F32({static_cast<int64_t>(v.size())}, v); }

Tensor Random(const Dims& dims, uint32_t seed, float lo = -4.0f, float hi = 4.0f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(static_cast<size_t>(ShapeElementCount(dims)));
  for (float& x : v) x = dist(gen);
  return F32(dims, v);
}

std::vector<float> Floats(const Tensor& t) { return {t.data<float>(), t.data<float>() + t.numel()}; }

// Softmax of x over the elements at start + j * stride, j < len, in double.
std::vector<double> SoftmaxOf(const Tensor& x, int64_t start, int64_t len, int64_t stride) {
  const float* p = x.data<float>() + start;
  double max = -std::numeric_limits<double>::infinity(), sum = 0;
  for (int64_t j = 0; j < len; ++j) max = std::max(max, static_cast<double>(p[j * stride]));
  std::vector<double> e(static_cast<size_t>(len));
  for (int64_t j = 0; j < len; ++j) sum += e[static_cast<size_t>(j)] = std::exp(p[j * stride] - max);
  for (double& v : e) v /= sum;
  return e;
}

void ExpectNear(const Tensor& got, const Tensor& want, double tol, const std::string& what) {
  ASSERT_EQ(got.dims(), want.dims()) << what;
  for (int64_t i = 0; i < got.numel(); ++i) {
    const float g = got.data<float>()[i], w = want.data<float>()[i];
    EXPECT_NEAR(g, w, tol * std::max(1.0f, std::fabs(w))) << what << " element " << i;
  }
}

// --- Softmax
// ----------------------------------------------------------------------------------------------------

TEST(Softmax, Opset13NormalisesOneAxisEarlierOpsetsEverythingFromIt) {
  const Tensor x = Random({2, 3, 4}, 1);
  for (const bool reference : {true, false}) {
    // Opset 11, axis 1: each batch row of 3 x 4 = 12 values is one distribution.
    const Tensor old =
        RunNode(MakeNode("Softmax", {"x"}, {Attribute::Int("axis", 1)}), {x}, 11, reference)[0];
    for (int64_t b = 0; b < 2; ++b) {
      const std::vector<double> want = SoftmaxOf(x, b * 12, 12, 1);
      for (int64_t j = 0; j < 12; ++j) {
        EXPECT_NEAR(old.data<float>()[b * 12 + j], want[static_cast<size_t>(j)], kProbTol);
      }
    }
    // Opset 13, axis 1: each (b, k) column of 3 values along axis 1.
    const Tensor now =
        RunNode(MakeNode("Softmax", {"x"}, {Attribute::Int("axis", 1)}), {x}, 13, reference)[0];
    for (int64_t b = 0; b < 2; ++b) {
      for (int64_t k = 0; k < 4; ++k) {
        const std::vector<double> want = SoftmaxOf(x, b * 12 + k, 3, 4);
        for (int64_t j = 0; j < 3; ++j) {
          EXPECT_NEAR(now.data<float>()[b * 12 + j * 4 + k], want[static_cast<size_t>(j)], kProbTol);
        }
      }
    }
    // Default axis: 1 before opset 13 (rows of 12), -1 from 13 (rows of 4).
    EXPECT_TRUE(RunNode(MakeNode("Softmax", {"x"}), {x}, 11, reference)[0].SameContent(old));
    const Tensor last = RunNode(MakeNode("Softmax", {"x"}), {x}, 13, reference)[0];
    for (int64_t r = 0; r < 6; ++r) {
      const std::vector<double> want = SoftmaxOf(x, r * 4, 4, 1);
      for (int64_t j = 0; j < 4; ++j) {
        EXPECT_NEAR(last.data<float>()[r * 4 + j], want[static_cast<size_t>(j)], kProbTol);
      }
    }
  }
}

TEST(Softmax, StableForLargeValuesAndLogSoftmaxMatches) {
  const Tensor x = F32({2, 3}, {1000, 1001, 1002, -kInf, 0, -kInf});
  for (const bool reference : {true, false}) {
    const Tensor y = RunNode(MakeNode("Softmax", {"x"}), {x}, 13, reference)[0];
    const std::vector<float> want = {0.09003057f, 0.24472847f, 0.66524096f, 0, 1, 0};
    for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(y.data<float>()[i], want[i], kProbTol) << i;
    const Tensor l = RunNode(MakeNode("LogSoftmax", {"x"}), {x}, 13, reference)[0];
    EXPECT_NEAR(l.data<float>()[0], -2.40760596f, kProbTol);
    EXPECT_NEAR(l.data<float>()[2], -0.40760596f, kProbTol);
    EXPECT_EQ(l.data<float>()[3], -kInf);
    EXPECT_EQ(l.data<float>()[4], 0);
    // Opset < 13 LogSoftmax over the coerced rows.
    const Tensor l11 = RunNode(MakeNode("LogSoftmax", {"x"}, {Attribute::Int("axis", 0)}),
                               {F32({2, 2}, {0, 0, 0, 0})}, 11, reference)[0];
    for (float v : Floats(l11)) EXPECT_NEAR(v, -std::log(4.0f), kProbTol);
  }
}

TEST(Softmax, FastKernelAgreesWithTheReference) {
  const Tensor x = Random({64, 4, 17, 17}, 2, -20, 20);
  for (const char* op : {"Softmax", "LogSoftmax"}) {
    for (const int64_t axis : {-1, 1}) {
      const Node n = MakeNode(op, {"x"}, {Attribute::Int("axis", axis)});
      const Tensor ref = RunNode(n, {x}, 13, true)[0], fast = RunNode(n, {x}, 13, false)[0];
      // vecmath's exp is within about an ulp; the sum is in float (fast) versus double.
      ExpectNear(fast, ref, kProbTol, std::string(op) + " axis " + std::to_string(axis));
    }
  }
  // A NaN makes its whole row NaN in both.
  const Tensor nan_row = F32({2, 2}, {std::nanf(""), 1, 2, 3});
  const Tensor y = RunNode(MakeNode("Softmax", {"x"}), {nan_row}, 13)[0];
  EXPECT_TRUE(std::isnan(y.data<float>()[0]) && std::isnan(y.data<float>()[1]));
  EXPECT_NEAR(y.data<float>()[3], 0.7310586f, kProbTol);
}

// --- BatchNormalization
// -------------------------------------------------------------------------------------------

TEST(BatchNorm, InferenceUsesTheGivenStatistics) {
  const Tensor x = Random({2, 3, 2, 2}, 3);
  const Tensor s = F32({1.5f, -1, 0.5f}), b = F32({0, 1, -2}), m = F32({0.1f, -0.2f, 0.3f}),
               v = F32({1, 0.25f, 4});
  const float eps = 1e-3f;
  const float* px = x.data<float>();
  std::vector<float> want(24);
  for (int i = 0; i < 24; ++i) {
    const int c = i / 4 % 3;
    want[static_cast<size_t>(i)] = static_cast<float>(s.data<float>()[c] * (px[i] - m.data<float>()[c]) /
                                                          std::sqrt(v.data<float>()[c] + eps) +
                                                      b.data<float>()[c]);
  }
  const Tensor expected = F32(x.dims(), want);
  const Node modern =
      MakeNode("BatchNormalization", {"x", "s", "b", "m", "v"}, {Attribute::Float("epsilon", eps)});
  // Opset 6 as PyTorch exported it (is_test, momentum); 9 and 15.
  const Node old = MakeNode(
      "BatchNormalization", {"x", "s", "b", "m", "v"},
      {Attribute::Float("epsilon", eps), Attribute::Int("is_test", 1), Attribute::Float("momentum", 0.9f)});
  for (const bool reference : {true, false}) {
    ExpectNear(RunNode(modern, {x, s, b, m, v}, 15, reference)[0], expected, kNormTol, "opset 15");
    ExpectNear(RunNode(modern, {x, s, b, m, v}, 9, reference)[0], expected, kNormTol, "opset 9");
    ExpectNear(RunNode(old, {x, s, b, m, v}, 6, reference)[0], expected, kNormTol, "opset 6");
  }
  // Statistics outputs listed by old models are the given ones, unchanged.
  const Node with_stats =
      MakeNode("BatchNormalization", {"x", "s", "b", "m", "v"}, {Attribute::Int("is_test", 1)}, 3);
  const auto outs = RunNode(with_stats, {x, s, b, m, v}, 7);
  EXPECT_TRUE(outs[1].SameContent(m));
  EXPECT_TRUE(outs[2].SameContent(v));
}

TEST(BatchNorm, SpatialZeroBeforeOpset9HasPerActivationParameters) {
  const Tensor x = F32({2, 2, 2}, {1, 2, 3, 4, 5, 6, 7, 8});
  const Tensor s = F32({2, 2}, {1, 2, 3, 4}), b = F32({2, 2}, {0, 0, 1, 1}), m = F32({2, 2}, {1, 1, 1, 1}),
               v = F32({2, 2}, {1, 1, 1, 1});
  const Node n = MakeNode("BatchNormalization", {"x", "s", "b", "m", "v"},
                          {Attribute::Int("spatial", 0), Attribute::Float("epsilon", 0)});
  EXPECT_EQ(Floats(RunNode(n, {x, s, b, m, v}, 7)[0]), (std::vector<float>{0, 2, 7, 13, 4, 10, 19, 29}));
}

TEST(BatchNorm, TrainingModeNormalisesWithBatchStatistics) {
  const Tensor x = Random({4, 2, 3, 3}, 4, -1, 3);
  const Tensor s = F32({1, 2}), b = F32({0, 0.5f}), m = F32({0.5f, -1}), v = F32({2, 3});
  const Node n = MakeNode("BatchNormalization", {"x", "s", "b", "m", "v"},
                          {Attribute::Int("training_mode", 1), Attribute::Float("momentum", 0.8f)}, 3);
  for (const bool reference : {true, false}) {
    const auto outs = RunNode(n, {x, s, b, m, v}, 15, reference);
    ASSERT_EQ(outs.size(), 3u);
    for (int c = 0; c < 2; ++c) {
      double sum = 0, sq = 0, ysum = 0, ysq = 0;
      for (int i = 0; i < 4; ++i) {
        for (int k = 0; k < 9; ++k) {
          const int64_t at = (i * 2 + c) * 9 + k;
          sum += x.data<float>()[at];
          sq += static_cast<double>(x.data<float>()[at]) * x.data<float>()[at];
          const double y = (outs[0].data<float>()[at] - b.data<float>()[c]) / s.data<float>()[c];
          ysum += y;
          ysq += y * y;
        }
      }
      const double mean = sum / 36, var = sq / 36 - mean * mean;
      // Normalised with the batch's population statistics: zero mean, unit variance (up to epsilon).
      EXPECT_NEAR(ysum / 36, 0, kNormTol);
      EXPECT_NEAR(ysq / 36, var / (var + 1e-5), kNormTol);  // default epsilon 1e-5
      EXPECT_NEAR(outs[1].data<float>()[c], m.data<float>()[c] * 0.8 + mean * 0.2, kNormTol);
      EXPECT_NEAR(outs[2].data<float>()[c], v.data<float>()[c] * 0.8 + var * 0.2, kNormTol);
    }
  }
}

TEST(BatchNorm, WrongParameterSizeNamesTheNode) {
  const Tensor x = Random({2, 3, 2}, 5), p3 = F32({1, 1, 1});
  const std::string msg = ErrorOf([&] {
    RunNode(MakeNode("BatchNormalization", {"x", "s", "b", "m", "v"}), {x, F32({1, 1, 1, 1}), p3, p3, p3},
            15);
  });
  EXPECT_NE(msg.find("node 'n0' (BatchNormalization): scale must hold 3 float32 values, got float32[4]"),
            std::string::npos)
      << msg;
}

// --- LayerNormalization, InstanceNormalization
// ---------------------------------------------------------------------

// LayerNormalization in double: rows are the dims from `axis` on.
Tensor LayerNormOf(const Tensor& x, int64_t axis, const std::vector<float>& scale,
                   const std::vector<float>& bias, float eps, std::vector<float>* mean_out,
                   std::vector<float>* inv_out) {
  int64_t len = 1;
  for (size_t d = static_cast<size_t>(axis); d < x.dims().size(); ++d) len *= x.dims()[d];
  std::vector<float> y(static_cast<size_t>(x.numel()));
  for (int64_t r = 0; r < x.numel() / len; ++r) {
    const float* p = x.data<float>() + r * len;
    double mean = 0, sq = 0;
    for (int64_t j = 0; j < len; ++j) mean += p[j];
    mean /= static_cast<double>(len);
    for (int64_t j = 0; j < len; ++j) sq += (p[j] - mean) * (p[j] - mean);
    const double inv = 1 / std::sqrt(sq / static_cast<double>(len) + eps);
    for (int64_t j = 0; j < len; ++j) {
      y[static_cast<size_t>(r * len + j)] = static_cast<float>(
          (p[j] - mean) * inv * scale[static_cast<size_t>(j)] + bias[static_cast<size_t>(j)]);
    }
    mean_out->push_back(static_cast<float>(mean));
    inv_out->push_back(static_cast<float>(inv));
  }
  return F32(x.dims(), y);
}

TEST(LayerNorm, NormalisesTheTrailingDims) {
  const Tensor x = Random({2, 3, 4}, 6, -3, 5);
  const std::vector<float> s12 = Floats(Random({12}, 7, 0.5f, 2)), b12 = Floats(Random({12}, 8));
  for (const bool reference : {true, false}) {
    // axis -1: rows of 4, scale and bias of shape [4].
    std::vector<float> mean, inv;
    const std::vector<float> s4(s12.begin(), s12.begin() + 4), b4(b12.begin(), b12.begin() + 4);
    const Tensor want = LayerNormOf(x, 2, s4, b4, 1e-5f, &mean, &inv);
    const auto outs =
        RunNode(MakeNode("LayerNormalization", {"x", "s", "b"}, {}, 3), {x, F32(s4), F32(b4)}, 17, reference);
    ExpectNear(outs[0], want, kNormTol, "axis -1");
    EXPECT_EQ(outs[1].dims(), (Dims{2, 3, 1}));
    ExpectNear(outs[1], F32({2, 3, 1}, mean), kNormTol, "mean");
    ExpectNear(outs[2], F32({2, 3, 1}, inv), kNormTol, "inv std dev");
    // axis 1: rows of 3 x 4, no bias.
    mean.clear();
    inv.clear();
    const Tensor want1 = LayerNormOf(x, 1, s12, std::vector<float>(12, 0), 0.01f, &mean, &inv);
    const Node n1 = MakeNode("LayerNormalization", {"x", "s"},
                             {Attribute::Int("axis", 1), Attribute::Float("epsilon", 0.01f)}, 3);
    const auto outs1 = RunNode(n1, {x, F32({3, 4}, s12)}, 17, reference);
    ExpectNear(outs1[0], want1, kNormTol, "axis 1");
    EXPECT_EQ(outs1[2].dims(), (Dims{2, 1, 1}));
    ExpectNear(outs1[2], F32({2, 1, 1}, inv), kNormTol, "inv std dev axis 1");
    // A scale of shape [4] broadcasts over rows of [3, 4].
    const std::vector<float> s4x3 = {s4[0], s4[1], s4[2], s4[3], s4[0], s4[1],
                                     s4[2], s4[3], s4[0], s4[1], s4[2], s4[3]};
    ExpectNear(RunNode(MakeNode("LayerNormalization", {"x", "s"}, {Attribute::Int("axis", -2)}), {x, F32(s4)},
                       17, reference)[0],
               RunNode(MakeNode("LayerNormalization", {"x", "s"}, {Attribute::Int("axis", -2)}),
                       {x, F32({3, 4}, s4x3)}, 17, reference)[0],
               0, "broadcast scale");
  }
  const std::string msg = ErrorOf([&] {
    RunNode(MakeNode("LayerNormalization", {"x", "s"}), {x, F32({1, 2, 3})}, 17);
  });
  EXPECT_NE(
      msg.find("node 'n0' (LayerNormalization): Scale of shape [3] does not fit the normalised shape [4]"),
      std::string::npos)
      << msg;
}

TEST(LayerNorm, Float16InputsRoundTheResultOnce) {
  const uint16_t bits[] = {0x3c00, 0x4000, 0x4200, 0x4400};  // 1, 2, 3, 4
  const Tensor x = Tensor::FromBytes(DType::kFloat16, {1, 4}, bits, sizeof(bits));
  const uint16_t one[] = {0x3c00, 0x3c00, 0x3c00, 0x3c00};
  const Tensor s = Tensor::FromBytes(DType::kFloat16, {4}, one, sizeof(one));
  const Tensor y =
      RunNode(MakeNode("LayerNormalization", {"x", "s"}, {Attribute::Float("epsilon", 0)}), {x, s}, 17)[0];
  ASSERT_EQ(y.dtype(), DType::kFloat16);
  // (x - 2.5) / sqrt(1.25): -1.3416, -0.4472, 0.4472, 1.3416 rounded to float16.
  const auto* p = static_cast<const uint16_t*>(y.raw());
  const float want[] = {-1.3416408f, -0.4472136f, 0.4472136f, 1.3416408f};
  for (int i = 0; i < 4; ++i) EXPECT_EQ(p[i], FloatToHalf(want[i])) << i;
}

TEST(InstanceNorm, NormalisesEachPlane) {
  const Tensor x = F32({1, 2, 3}, {1, 2, 3, 10, 10, 40});
  const auto y = RunNode(MakeNode("InstanceNormalization", {"x", "s", "b"}, {Attribute::Float("epsilon", 0)}),
                         {x, F32({2, 1}), F32({0, 5})}, 6)[0];
  // Plane 0: mean 2, variance 2/3. Plane 1: mean 20, variance 200.
  const float a = std::sqrt(1.5f), c = 1 / std::sqrt(2.0f);
  const std::vector<float> want = {-2 * a, 0, 2 * a, 5 - c, 5 - c, 5 + 2 * c};
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(y.data<float>()[i], want[i], kNormTol) << i;
  const std::string msg = ErrorOf([&] {
    RunNode(MakeNode("InstanceNormalization", {"x", "s", "b"}), {x, F32({1, 2, 3}), F32({0, 5})}, 6);
  });
  EXPECT_NE(msg.find("scale and B must hold 2 float32 values, got float32[3]"), std::string::npos) << msg;
}

TEST(Norm, ResultsDoNotDependOnTheThreadCount) {
  const Tensor att = Random({64, 4, 17, 17}, 9);
  const Tensor tokens = Random({64, 17, 64}, 10);
  const Tensor gamma = Random({64}, 11), beta = Random({64}, 12);
  const Tensor image = Random({64, 16, 14, 14}, 13);
  const Tensor c16 = Random({16}, 14, 0.5f, 2);
  const std::vector<std::pair<Node, std::vector<Tensor>>> runs = {
      {MakeNode("Softmax", {"x"}), {att}},
      {MakeNode("LogSoftmax", {"x"}, {Attribute::Int("axis", 1)}), {att}},
      {MakeNode("LayerNormalization", {"x", "s", "b"}), {tokens, gamma, beta}},
      {MakeNode("BatchNormalization", {"x", "s", "b", "m", "v"}), {image, c16, c16, c16, c16}},
      {MakeNode("InstanceNormalization", {"x", "s", "b"}), {image, c16, c16}},
  };
  for (const auto& [node, inputs] : runs) {
    for (const bool reference : {true, false}) {
      const Tensor one = RunNode(node, inputs, 17, reference, 1)[0];
      const Tensor three = RunNode(node, inputs, 17, reference, 3)[0];
      EXPECT_TRUE(one.SameContent(three)) << node.op_type << (reference ? " reference" : " fast");
    }
  }
}

}  // namespace
}  // namespace compress
