// Backward rules of the normalisations against central finite differences (float64, reference kernels),
// the float32 rules against the float64 ones, and thread-count independence.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "compress/util/error.h"
#include "train/grad_check.h"

namespace compress::train {
namespace {

using testing::ExpectGradientsMatch;
using testing::GradCase;
using testing::GradTolerance;
using testing::RandomTensor;

// Smooth ops in float64 with h = 1e-6: central differences are accurate to about 1e-9 here (rounding
// 1e-16 / 1e-6 times the loss scale, truncation h^2 f''' ~ 1e-12), so two orders of margin.
constexpr GradTolerance kSmoothF64{1e-7, 1e-6};


TEST(NormGrad, SoftmaxAndLogSoftmaxCoercedTo2DBeforeOpset13) {
  testing::WorstError track;
  uint32_t seed = 100;
  for (const char* op : {"Softmax", "LogSoftmax"}) {
    for (const int64_t opset : {1, 11}) {
      for (const int64_t axis : {99, 0, 1, 2, -1, -3}) {  // 99: the attribute left out (default 1)
        SCOPED_TRACE(std::string(op) + " opset " + std::to_string(opset) + " axis " + std::to_string(axis));
        GradCase c;
        c.op = op;
        c.opset = opset;
        if (axis != 99) c.attributes = {Attribute::Int("axis", axis)};
        c.inputs = {RandomTensor(DType::kDouble, {2, 3, 5}, seed++, -2, 2)};
        track(ExpectGradientsMatch(c, kSmoothF64));
        testing::ExpectFloat32MatchesFloat64(c);
      }
    }
  }
}

TEST(NormGrad, SoftmaxAndLogSoftmaxAlongAxisFromOpset13) {
  testing::WorstError track;
  uint32_t seed = 200;
  for (const char* op : {"Softmax", "LogSoftmax"}) {
    for (const int64_t axis : {99, 0, 1, 2, -2, -3}) {  // 99: the attribute left out (default -1)
      SCOPED_TRACE(std::string(op) + " axis " + std::to_string(axis));
      GradCase c;
      c.op = op;
      c.opset = 13;
      if (axis != 99) c.attributes = {Attribute::Int("axis", axis)};
      c.inputs = {RandomTensor(DType::kDouble, {3, 5, 7}, seed++, -2, 2)};
      track(ExpectGradientsMatch(c, kSmoothF64));
      testing::ExpectFloat32MatchesFloat64(c);
    }
  }
}

TEST(NormGrad, LayerNormalizationXScaleBias) {
  testing::WorstError track;
  struct Case {
    int64_t axis;
    std::vector<int64_t> scale_dims;
    bool bias;
  };
  const std::vector<Case> cases = {{-1, {5}, true},    {1, {3, 5}, true},    {1, {5}, true},
                                   {1, {1, 5}, false}, {0, {2, 3, 5}, true}, {2, {1}, true}};
  uint32_t seed = 300;
  for (const Case& k : cases) {
    SCOPED_TRACE("axis " + std::to_string(k.axis) + " scale " + ShapeToString(k.scale_dims));
    GradCase c;
    c.op = "LayerNormalization";
    c.opset = 17;
    c.attributes = {Attribute::Int("axis", k.axis), Attribute::Float("epsilon", 1e-3f)};
    c.inputs = {RandomTensor(DType::kDouble, {2, 3, 5}, seed++, -2, 2),
                RandomTensor(DType::kDouble, k.scale_dims, seed++, 0.5, 1.5)};
    if (k.bias) c.inputs.push_back(RandomTensor(DType::kDouble, k.scale_dims, seed++));
    track(ExpectGradientsMatch(c, kSmoothF64));
    testing::ExpectFloat32MatchesFloat64(c);
  }
  // Default axis and epsilon.
  GradCase c;
  c.op = "LayerNormalization";
  c.opset = 17;
  c.inputs = {RandomTensor(DType::kDouble, {3, 7}, seed++, -2, 2), RandomTensor(DType::kDouble, {7}, seed++),
              RandomTensor(DType::kDouble, {7}, seed++)};
  track(ExpectGradientsMatch(c, kSmoothF64));
}

TEST(NormGrad, BatchNormalizationFrozenStatistics) {
  testing::WorstError track;
  struct Case {
    int64_t opset;
    std::vector<int64_t> x_dims, param_dims;
    bool spatial0;
  };
  const std::vector<Case> cases = {{15, {2, 3, 5, 3}, {3}, false},
                                   {9, {5, 3}, {3}, false},
                                   {14, {3, 2, 7}, {2}, false},
                                   {7, {2, 3, 5}, {3, 5}, true},  // spatial=0: per-activation parameters
                                   {7, {2, 3, 5}, {3}, false}};
  uint32_t seed = 400;
  for (const Case& k : cases) {
    SCOPED_TRACE("opset " + std::to_string(k.opset) + " x " + ShapeToString(k.x_dims));
    GradCase c;
    c.op = "BatchNormalization";
    c.opset = k.opset;
    c.attributes = {Attribute::Float("epsilon", 1e-3f)};
    if (k.spatial0) c.attributes.push_back(Attribute::Int("spatial", 0));
    c.inputs = {RandomTensor(DType::kDouble, k.x_dims, seed++, -2, 2),
                RandomTensor(DType::kDouble, k.param_dims, seed++, 0.5, 1.5),
                RandomTensor(DType::kDouble, k.param_dims, seed++),
                RandomTensor(DType::kDouble, k.param_dims, seed++),
                RandomTensor(DType::kDouble, k.param_dims, seed++, 0.5, 2.0)};
    c.trainable = {true, true, true, false, false};
    track(ExpectGradientsMatch(c, kSmoothF64));
    testing::ExpectFloat32MatchesFloat64(c);
  }
}

TEST(NormGrad, BatchNormalizationTrainingModeFailsClearly) {
  GradCase c;
  c.op = "BatchNormalization";
  c.opset = 15;
  c.attributes = {Attribute::Int("training_mode", 1)};
  c.inputs = {RandomTensor(DType::kDouble, {2, 3, 4}, 1), RandomTensor(DType::kDouble, {3}, 2),
              RandomTensor(DType::kDouble, {3}, 3), RandomTensor(DType::kDouble, {3}, 4),
              RandomTensor(DType::kDouble, {3}, 5, 0.5, 2.0)};
  c.trainable = {true, true, true, false, false};
  try {
    RuleGradients(c, 1);
    FAIL() << "training-mode BatchNormalization was differentiated";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput);
    EXPECT_NE(std::string(e.what()).find("training_mode=1"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("node"), std::string::npos) << e.what();
  }
}

TEST(NormGrad, InstanceNormalization) {
  testing::WorstError track;
  uint32_t seed = 500;
  for (const auto& dims : std::vector<std::vector<int64_t>>{{2, 3, 7}, {1, 2, 3, 5}}) {
    GradCase c;
    c.op = "InstanceNormalization";
    c.opset = 6;
    c.attributes = {Attribute::Float("epsilon", 1e-3f)};
    c.inputs = {RandomTensor(DType::kDouble, dims, seed++, -2, 2),
                RandomTensor(DType::kDouble, {dims[1]}, seed++, 0.5, 1.5),
                RandomTensor(DType::kDouble, {dims[1]}, seed++)};
    track(ExpectGradientsMatch(c, kSmoothF64));
    testing::ExpectFloat32MatchesFloat64(c);
  }
}

TEST(NormGrad, SameGradientsWithOneAndTwoThreads) {
  GradCase s;
  s.op = "Softmax";
  s.opset = 13;
  s.reference_kernels = false;
  s.inputs = {RandomTensor(DType::kFloat, {9, 31, 67}, 1)};
  testing::ExpectThreadInvariant(s);
  GradCase l;
  l.op = "LayerNormalization";
  l.opset = 17;
  l.reference_kernels = false;
  l.inputs = {RandomTensor(DType::kFloat, {9, 31, 67}, 2), RandomTensor(DType::kFloat, {67}, 3),
              RandomTensor(DType::kFloat, {67}, 4)};
  testing::ExpectThreadInvariant(l);
  GradCase b;
  b.op = "BatchNormalization";
  b.opset = 15;
  b.reference_kernels = false;
  b.inputs = {RandomTensor(DType::kFloat, {9, 31, 67}, 5), RandomTensor(DType::kFloat, {31}, 6),
              RandomTensor(DType::kFloat, {31}, 7), RandomTensor(DType::kFloat, {31}, 8),
              RandomTensor(DType::kFloat, {31}, 9, 0.5, 2.0)};
  b.trainable = {true, true, true, false, false};
  testing::ExpectThreadInvariant(b);
}

}  // namespace
}  // namespace compress::train
