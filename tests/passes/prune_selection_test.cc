// The options that prune one layer or one channel group on its own (what `compress sensitivity` and
// --target-macs run): prune's `only_nodes` and prune_channels' `group_ratios`, on the sample models.
#include <gtest/gtest.h>

#include "compress/io/onnx_io.h"
#include "compress/passes/pass.h"
#include "support/test_support.h"

namespace compress {
namespace {

using nlohmann::json;

PassContext RunNamedPass(Model& m, const std::string& name, const json& options) {
  const PassInfo* info = FindPass(name);
  EXPECT_NE(info, nullptr);
  PassContext ctx;
  info->create(ValidatePassOptions(*info, options, "test"))->Run(m, ctx);
  return ctx;
}

int64_t Zeros(const Model& m, const std::string& name) {
  const Tensor* t = m.graph.FindInitializer(name);
  if (t == nullptr) return -1;
  int64_t n = 0;
  for (int64_t i = 0; i < t->numel(); ++i) n += t->data<float>()[i] == 0.0f;
  return n;
}

std::vector<int64_t> Dims(const Model& m, const std::string& name) {
  const Tensor* t = m.graph.FindInitializer(name);
  return t == nullptr ? std::vector<int64_t>{} : t->dims();
}

TEST(PruneSelection, OnlyNodesPrunesTheWeightsTheyRead) {
  Model m = LoadModel(testing::SourcePath("models/mlp.onnx"));
  const Model original = m;
  const PassContext ctx =
      RunNamedPass(m, "prune", {{"method", "magnitude"}, {"only_nodes", json::array({"/net/net.3/Gemm"})}});
  ASSERT_EQ(ctx.details()["layers"].size(), 1u);
  EXPECT_EQ(ctx.details()["layers"][0]["node"], "/net/net.3/Gemm");
  const std::string w = ctx.details()["layers"][0]["weight"].get<std::string>();
  EXPECT_EQ(Zeros(m, w), 128 * 256 / 2);
  // Every other weight is untouched.
  for (const auto& t : original.graph.initializers) {
    if (t.name() == w) continue;
    EXPECT_EQ(Zeros(m, t.name()), Zeros(original, t.name())) << t.name();
  }
  // A name no node has prunes nothing.
  Model none = original;
  const PassContext none_ctx = RunNamedPass(none, "prune", {{"method", "magnitude"}, {"only_nodes", json::array({"x"})}});
  EXPECT_FALSE(none_ctx.details().contains("layers"));
}

TEST(PruneSelection, GroupRatiosPruneOneGroup) {
  Model m = LoadModel(testing::SourcePath("models/cnn.onnx"));
  const PassContext ctx = RunNamedPass(
      m, "prune_channels", {{"ratio", 0.0}, {"group_ratios", {{"/conv2/conv2.0/Conv", 0.5}}}});
  // conv2 loses half its filters, conv3 the matching input channels; the other groups stay whole.
  EXPECT_EQ(Dims(m, "onnx::Conv_64"), (std::vector<int64_t>{32, 32, 3, 3}));  // conv2
  EXPECT_EQ(Dims(m, "onnx::Conv_67"), (std::vector<int64_t>{64, 32, 3, 3}));  // conv3
  EXPECT_EQ(Dims(m, "onnx::Conv_55"), (std::vector<int64_t>{32, 1, 3, 3}));   // stem
  EXPECT_EQ(Dims(m, "fc.weight"), (std::vector<int64_t>{10, 64}));
  ASSERT_EQ(ctx.details()["layers"].size(), 1u);
  EXPECT_EQ(ctx.details()["layers"][0]["group"], "/conv2/conv2.0/Conv");
  EXPECT_EQ(ctx.details()["layers"][0]["channels_after"], 32);

  // A listed group overrides `ratio`; the others use it. Every entry names its group.
  Model both = LoadModel(testing::SourcePath("models/cnn.onnx"));
  const PassContext both_ctx = RunNamedPass(
      both, "prune_channels", {{"ratio", 0.5}, {"group_ratios", {{"/conv3/conv3.0/Conv", 0.25}}}});
  EXPECT_EQ(Dims(both, "onnx::Conv_67"), (std::vector<int64_t>{48, 32, 3, 3}));
  EXPECT_EQ(Dims(both, "onnx::Conv_55"), (std::vector<int64_t>{16, 1, 3, 3}));
  EXPECT_EQ(both_ctx.details()["layers"].size(), 5u);
  for (const auto& l : both_ctx.details()["layers"]) EXPECT_TRUE(l.contains("group")) << l;
}

TEST(PruneSelection, GroupRatiosAreValidated) {
  const PassInfo* info = FindPass("prune_channels");
  ASSERT_NE(info, nullptr);
  const std::string wrong_type =
      testing::ErrorOf([&] { ValidatePassOptions(*info, {{"group_ratios", {{"a", "half"}}}}, "r.json"); });
  EXPECT_NE(wrong_type.find("must be a mapping of names to numbers"), std::string::npos) << wrong_type;
  const std::string range = testing::ErrorOf(
      [&] { info->create(ValidatePassOptions(*info, {{"group_ratios", {{"a", 1.0}}}}, "r.json")); });
  EXPECT_NE(range.find("group_ratios['a'] must be in [0, 1)"), std::string::npos) << range;
}

}  // namespace
}  // namespace compress
