// Backward rules of the reductions against central finite differences (float64, reference kernels), the
// float32 rules against the float64 ones, and thread-count independence.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

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


Tensor Axes(std::vector<int64_t> v) {
  const int64_t n = static_cast<int64_t>(v.size());
  return Tensor::FromVector<int64_t>({n}, v);
}

struct AxesCase {
  std::vector<int64_t> axes;  // empty: all axes
  int64_t keepdims;
};

const std::vector<AxesCase>& AxesCases() {
  static const std::vector<AxesCase> cases = {{{1}, 1},      {{1}, 0}, {{-1}, 1}, {{0, 2}, 0},
                                              {{-3, -1}, 1}, {{}, 1},  {{}, 0}};
  return cases;
}

// ReduceSum takes axes as an input from opset 13, the others from 18.
int64_t AxesInputSince(const std::string& op) { return op == "ReduceSum" ? 13 : 18; }

const char* const kOps[] = {"ReduceSum", "ReduceMean", "ReduceSumSquare",
                            "ReduceL2",  "ReduceMax",  "ReduceMin"};

TEST(ReduceGrad, AxesAsAttribute) {
  testing::WorstError track;
  uint32_t seed = 100;
  for (const char* op : kOps) {
    for (const AxesCase& a : AxesCases()) {
      SCOPED_TRACE(std::string(op) + " axes " + ShapeToString(a.axes) + " keepdims " +
                   std::to_string(a.keepdims));
      GradCase c;
      c.op = op;
      c.opset = AxesInputSince(op) - 2;
      c.attributes = {Attribute::Int("keepdims", a.keepdims)};
      if (!a.axes.empty()) c.attributes.push_back(Attribute::Ints("axes", a.axes));
      // Continuous random values: no two elements of a ReduceMax / ReduceMin group within h of each other.
      c.inputs = {RandomTensor(DType::kDouble, {3, 5, 7}, seed++)};
      track(ExpectGradientsMatch(c, kSmoothF64));
      testing::ExpectFloat32MatchesFloat64(c);
    }
  }
}

TEST(ReduceGrad, AxesAsInput) {
  testing::WorstError track;
  uint32_t seed = 200;
  for (const char* op : kOps) {
    for (const AxesCase& a : AxesCases()) {
      for (const bool omit : {false, true}) {
        if (omit && !a.axes.empty()) continue;
        SCOPED_TRACE(std::string(op) + " axes input " + ShapeToString(a.axes) + (omit ? " omitted" : "") +
                     " keepdims " + std::to_string(a.keepdims));
        GradCase c;
        c.op = op;
        c.opset = AxesInputSince(op);
        c.attributes = {Attribute::Int("keepdims", a.keepdims)};
        c.inputs = {RandomTensor(DType::kDouble, {3, 5, 7}, seed++)};
        if (!omit) c.inputs.push_back(Axes(a.axes));
        c.trainable = {true, false};
        track(ExpectGradientsMatch(c, kSmoothF64));
        testing::ExpectFloat32MatchesFloat64(c);
      }
    }
  }
}

TEST(ReduceGrad, NoopWithEmptyAxesIsIdentity) {
  testing::WorstError track;
  uint32_t seed = 300;
  for (const char* op : kOps) {
    for (const bool omit : {false, true}) {
      SCOPED_TRACE(std::string(op) + (omit ? " axes omitted" : " axes empty"));
      GradCase c;
      c.op = op;
      c.opset = 18;
      c.attributes = {Attribute::Int("noop_with_empty_axes", 1), Attribute::Int("keepdims", 0)};
      c.inputs = {RandomTensor(DType::kDouble, {3, 5}, seed++)};
      if (!omit) c.inputs.push_back(Axes({}));
      c.trainable = {true, false};
      track(ExpectGradientsMatch(c, kSmoothF64));
      const std::vector<Tensor> g = RuleGradients(c, 1);
      const Tensor w = RandomTensor(DType::kDouble, {3, 5}, 1000u);
      ASSERT_EQ(g[0].nbytes(), w.nbytes());
      EXPECT_EQ(std::memcmp(g[0].raw(), w.raw(), w.nbytes()), 0);
    }
  }
}

TEST(ReduceGrad, MaxMinPassTheGradientToTheExtremeOnly) {
  GradCase c;
  c.op = "ReduceMax";
  c.opset = 13;
  c.attributes = {Attribute::Ints("axes", {1}), Attribute::Int("keepdims", 0)};
  c.inputs = {Tensor::FromVector<double>({2, 3}, {0.5, -1.0, 2.0, 3.0, 1.0, -4.0})};
  std::vector<Tensor> g = RuleGradients(c, 1);
  const Tensor w = RandomTensor(DType::kDouble, {2}, 1000u);
  EXPECT_EQ(g[0].data<double>()[2], w.data<double>()[0]);
  EXPECT_EQ(g[0].data<double>()[3], w.data<double>()[1]);
  for (const int i : {0, 1, 4, 5}) EXPECT_EQ(g[0].data<double>()[i], 0.0) << i;
  c.op = "ReduceMin";
  g = RuleGradients(c, 1);
  EXPECT_EQ(g[0].data<double>()[1], w.data<double>()[0]);
  EXPECT_EQ(g[0].data<double>()[5], w.data<double>()[1]);
  for (const int i : {0, 2, 3, 4}) EXPECT_EQ(g[0].data<double>()[i], 0.0) << i;
  // A tie: the whole gradient goes to the first extreme element in row-major order, the one the forward
  // scan keeps.
  c.inputs = {Tensor::FromVector<double>({2, 3}, {1.0, 2.0, 2.0, -3.0, -3.0, 0.0})};
  g = RuleGradients(c, 1);
  EXPECT_EQ(g[0].data<double>()[0], w.data<double>()[0]);
  EXPECT_EQ(g[0].data<double>()[3], w.data<double>()[1]);  // -3 twice in row 1
  EXPECT_EQ(g[0].data<double>()[4], 0.0);
  c.op = "ReduceMax";
  g = RuleGradients(c, 1);
  EXPECT_EQ(g[0].data<double>()[1], w.data<double>()[0]);  // 2 twice in row 0
  EXPECT_EQ(g[0].data<double>()[2], 0.0);
  EXPECT_EQ(g[0].data<double>()[5], w.data<double>()[1]);
}

TEST(ReduceGrad, OddShapesAndRanks) {
  testing::WorstError track;
  // Rank 1, rank 4 with size-1 dims, reducing a size-1 dim.
  uint32_t seed = 400;
  const std::vector<std::pair<std::vector<int64_t>, std::vector<int64_t>>> cases = {
      {{7}, {0}}, {{2, 1, 3, 5}, {1, 3}}, {{2, 1, 3, 5}, {-4, 2}}, {{1, 9}, {0}}};
  for (const char* op : kOps) {
    for (const auto& [dims, axes] : cases) {
      GradCase c;
      c.op = op;
      c.opset = 18;
      c.attributes = {Attribute::Int("keepdims", 0)};
      c.inputs = {RandomTensor(DType::kDouble, dims, seed++), Axes(axes)};
      c.trainable = {true, false};
      track(ExpectGradientsMatch(c, kSmoothF64));
    }
  }
}

TEST(ReduceGrad, SameGradientsWithOneAndTwoThreads) {
  for (const char* op : kOps) {
    GradCase c;
    c.op = op;
    c.opset = 18;
    c.reference_kernels = false;
    c.inputs = {RandomTensor(DType::kFloat, {9, 31, 67}, 1), Axes({0, 2})};
    c.trainable = {true, false};
    testing::ExpectThreadInvariant(c);
  }
}

}  // namespace
}  // namespace compress::train
