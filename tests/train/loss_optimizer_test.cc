// Losses against finite differences and closed forms; optimizers against hand-computed updates.
#include <gtest/gtest.h>

#include <cmath>

#include "compress/train/loss.h"
#include "compress/train/optimizer.h"
#include "compress/util/error.h"
#include "train/grad_check.h"

namespace compress::train {
namespace {

using testing::RandomTensor;

// Losses are computed in double; central differences with h = 1e-6 on float64 logits are good to ~1e-9.
constexpr double kLossGradTol = 1e-7;

template <typename F>
void ExpectLossGradient(const Tensor& x, F&& loss_of) {
  const LossValue v = loss_of(x);
  const double h = 1e-6;
  for (int64_t i = 0; i < x.numel(); ++i) {
    Tensor p = Tensor::FromBytes(x.dtype(), x.dims(), x.raw(), x.nbytes());
    Tensor m = Tensor::FromBytes(x.dtype(), x.dims(), x.raw(), x.nbytes());
    p.mutable_data<double>()[i] += h;
    m.mutable_data<double>()[i] -= h;
    const double numeric = (loss_of(p).loss - loss_of(m).loss) / (2 * h);
    EXPECT_NEAR(v.grad.data<double>()[i], numeric, kLossGradTol) << i;
  }
}

TEST(Loss, DistillationGradientMatchesFiniteDifferences) {
  const Tensor t = RandomTensor(DType::kDouble, {3, 5}, 1, -3, 3);
  for (const double temp : {1.0, 4.0}) {
    ExpectLossGradient(RandomTensor(DType::kDouble, {3, 5}, 2, -3, 3),
                       [&](const Tensor& s) { return DistillationLoss(s, t, temp); });
  }
}

TEST(Loss, DistillationIsZeroOnlyWhenStudentEqualsTeacherAndScalesWithTSquared) {
  const Tensor t = RandomTensor(DType::kDouble, {4, 10}, 3, -3, 3);
  EXPECT_NEAR(DistillationLoss(t, t, 4.0).loss, 0.0, 1e-12);
  // Logits shifted per row give the same softmax: still zero.
  Tensor shifted = Tensor::FromBytes(t.dtype(), t.dims(), t.raw(), t.nbytes());
  for (int64_t i = 0; i < 10; ++i) shifted.mutable_data<double>()[i] += 7.0;
  EXPECT_NEAR(DistillationLoss(shifted, t, 4.0).loss, 0.0, 1e-12);
  // KL by hand for one row at T = 1.
  const Tensor s1 = Tensor::FromVector<double>({1, 2}, {0.0, 0.0});
  const Tensor t1 = Tensor::FromVector<double>({1, 2}, {std::log(3.0), 0.0});  // p = (0.75, 0.25)
  const double kl = 0.75 * std::log(0.75 / 0.5) + 0.25 * std::log(0.25 / 0.5);
  EXPECT_NEAR(DistillationLoss(s1, t1, 1.0).loss, kl, 1e-12);
}

TEST(Loss, CrossEntropyMatchesClosedFormAndFiniteDifferences) {
  const Tensor x = Tensor::FromVector<double>({2, 3}, {1.0, 2.0, 3.0, 0.0, 0.0, 0.0});
  const double l0 = -std::log(std::exp(3.0) / (std::exp(1.0) + std::exp(2.0) + std::exp(3.0)));
  const double l1 = -std::log(1.0 / 3.0);
  EXPECT_NEAR(CrossEntropyLoss(x, {2, 1}).loss, (l0 + l1) / 2, 1e-12);
  ExpectLossGradient(RandomTensor(DType::kDouble, {4, 6}, 5, -2, 2),
                     [&](const Tensor& s) { return CrossEntropyLoss(s, {0, 5, 2, 2}); });
  EXPECT_THROW(CrossEntropyLoss(x, {2, 3}), Error);
  EXPECT_THROW(CrossEntropyLoss(x, {2}), Error);
}

TEST(Loss, MseMatchesFiniteDifferences) {
  const Tensor t = RandomTensor(DType::kDouble, {2, 3, 4}, 6);
  ExpectLossGradient(RandomTensor(DType::kDouble, {2, 3, 4}, 7), [&](const Tensor& s) { return MseLoss(s, t); });
  EXPECT_THROW(MseLoss(t, RandomTensor(DType::kDouble, {2, 12}, 8)), Error);
}

TEST(Optimizer, CosineScheduleWithWarmup) {
  OptimizerOptions o;
  o.lr = 0.1;
  o.warmup_steps = 4;
  o.total_steps = 14;
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(o, 0), 0.025);
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(o, 3), 0.1);
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(o, 4), 0.1);
  EXPECT_NEAR(ScheduledLearningRate(o, 9), 0.05, 1e-15);
  EXPECT_NEAR(ScheduledLearningRate(o, 14), 0.0, 1e-15);
}

TEST(Optimizer, AdamWFirstStepsByHandAndMaskKeepsZeros) {
  OptimizerOptions o;
  o.lr = 0.01;
  o.weight_decay = 0.1;
  Optimizer opt(o, {true, false});
  std::vector<Tensor> w = {Tensor::FromVector<float>({2, 2}, {1.0f, 0.0f, -2.0f, 0.5f}),
                           Tensor::FromVector<float>({2}, {0.25f, -0.25f})};
  const std::vector<Tensor> g = {Tensor::FromVector<float>({2, 2}, {0.5f, 3.0f, -1.0f, 0.0f}),
                                 Tensor::FromVector<float>({2}, {2.0f, -4.0f})};
  const std::vector<Tensor> masks = {Tensor::FromVector<uint8_t>({2, 2}, {1, 0, 1, 1}), Tensor()};
  const double norm = opt.Step(w, g, masks);
  EXPECT_NEAR(norm, std::sqrt(0.25 + 1.0 + 4.0 + 16.0), 1e-12);  // the masked 3.0 does not count
  // Step 1 of Adam moves every element with a non-zero gradient by lr * sign(g) (up to eps); decay first.
  EXPECT_NEAR(w[0].data<float>()[0], 1.0 * (1 - 0.001) - 0.01, 1e-6);
  EXPECT_EQ(w[0].data<float>()[1], 0.0f);  // pruned: untouched whatever its gradient
  EXPECT_NEAR(w[0].data<float>()[2], -2.0 * (1 - 0.001) + 0.01, 1e-6);
  EXPECT_NEAR(w[0].data<float>()[3], 0.5 * (1 - 0.001), 1e-6);  // zero gradient: only decay
  EXPECT_NEAR(w[1].data<float>()[0], 0.25 - 0.01, 1e-6);          // no decay on biases
  EXPECT_NEAR(w[1].data<float>()[1], -0.25 + 0.01, 1e-6);
}

TEST(Optimizer, SgdMomentumAndClipping) {
  OptimizerOptions o;
  o.kind = "sgd";
  o.lr = 0.1;
  o.momentum = 0.5;
  o.clip_norm = 1.0;
  Optimizer opt(o, {false});
  std::vector<Tensor> w = {Tensor::FromVector<double>({2}, {0.0, 0.0})};
  const std::vector<Tensor> g = {Tensor::FromVector<double>({2}, {3.0, 4.0})};  // norm 5 -> clipped to 1
  opt.Step(w, g, {});
  EXPECT_NEAR(w[0].data<double>()[0], -0.1 * 0.6, 1e-15);
  EXPECT_NEAR(w[0].data<double>()[1], -0.1 * 0.8, 1e-15);
  opt.Step(w, g, {});  // m = 0.5 m + g
  EXPECT_NEAR(w[0].data<double>()[0], -0.06 - 0.1 * 0.9, 1e-15);
  EXPECT_THROW(Optimizer(OptimizerOptions{"rmsprop"}, {}), Error);
}

}  // namespace
}  // namespace compress::train
