// `compress models/cnn.onnx --target-macs 0.5 --calib models/calib` end to end: per-group ratios chosen
// from the sensitivity measured on the calibration slice keep at most half of the MACs (our counter, on the
// written model), the output passes the ONNX checker, ONNX Runtime computes what our executor computes, and
// the accuracy on the Fashion-MNIST test set is measured; then the same with --int8 in one run.

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>

#include "compress/eval/evaluate.h"
#include "compress/eval/macs.h"
#include "compress/exec/executor.h"
#include "compress/io/dataset.h"
#include "compress/io/onnx_io.h"
#include "support/test_support.h"

namespace compress {
namespace {

using nlohmann::json;

constexpr int64_t kCnnMacs = 5902592;  // tests/report/macs_test.cc
// Logits of ONNX Runtime and our executor: float32 sums of at most 576 products per output in both, so
// they differ by rounding only (as in prune_channels_model_test.cc).
constexpr double kOrtLogitTolerance = 1e-3;
// Top-1 of the two runtimes may differ only on images whose two best logits are within rounding.
constexpr double kTop1Tolerance = 0.0005;
// Accuracy floors, the measured top-1 on the 10,000 test images minus 1 point for changes of float
// summation order across builds (no fine-tuning; fp32 0.9125). Measured with activation importance and
// the consumers' least-squares re-fit (prune_channels' update): FP32-pruned 0.8847 (ONNX Runtime; ours
// 0.8847), pruned + INT8 0.8871 (ours). At the commit adding this test, with the L2-norm importance and
// no compensation, 0.1309 and 0.1339.
constexpr double kMinTop1 = 0.8847 - 0.01;
constexpr double kMinTop1Int8 = 0.8871 - 0.01;

std::string Data() { return std::string(COMPRESS_TEST_DATA_DIR) + "/fmnist-test"; }

json PassDetails(const json& rep, const std::string& pass) {
  for (const auto& p : rep["passes"]) {
    if (p["pass"] == pass) return p["details"];
  }
  return json();
}

// Our executor and ONNX Runtime on the same random batch: the largest logit difference.
double OrtDifference(const Model& m) {
  Tensor x(DType::kFloat, {8, 1, 28, 28});
  std::mt19937 gen(11);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (int64_t i = 0; i < x.numel(); ++i) x.mutable_data<float>()[i] = dist(gen);
  const std::vector<Tensor> ort = testing::RunModelInOrt(m, {x});
  Executor exec(m);
  const std::vector<Tensor> ours = exec.Run({x});
  EXPECT_EQ(ort.size(), 1u);
  EXPECT_EQ(ours.size(), 1u);
  if (ort.size() != 1 || ours.size() != 1 || ort[0].dims() != ours[0].dims()) return 1e9;
  double worst = 0;
  for (int64_t i = 0; i < ours[0].numel(); ++i) {
    worst = std::max(worst, static_cast<double>(std::fabs(ours[0].data<float>()[i] - ort[0].data<float>()[i])));
  }
  return worst;
}

TEST(TargetMacsModel, SampleCnnHalfTheMacs) {
  testing::TempDir tmp;
  const std::string out = tmp / "cnn.pruned.onnx";
  const std::string report = tmp / "report.json";
  const auto r = testing::RunCompress({testing::SourcePath("models/cnn.onnx"), "--target-macs", "0.5", "--calib",
                                       testing::SourcePath("models/calib"), "-o", out, "--report", report,
                                       "--eval", Data(), "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json rep = json::parse(testing::ReadBytes(report));
  EXPECT_TRUE(rep["output"]["checker"]["ok"].get<bool>()) << rep["output"]["checker"]["message"];

  // At most half of the MACs, by our counter on the written model, as `inspect` counts them.
  const Model pruned = LoadModel(out);
  EXPECT_EQ(testing::CheckerAndTypeErrors(pruned), "");
  const int64_t macs = CountMacs(pruned).total;
  EXPECT_LE(macs, kCnnMacs / 2);
  EXPECT_EQ(rep["macs"]["before"]["total"], kCnnMacs);
  EXPECT_EQ(rep["macs"]["after"]["total"], macs);
  const auto inspect = testing::RunCompress({"inspect", out, "--json"});
  ASSERT_EQ(inspect.exit_code, 0) << inspect.err;
  EXPECT_EQ(json::parse(inspect.out)["macs"]["total"], macs);

  // What was chosen: one ratio per group from the measured sensitivity, recorded in the pass details and
  // (as group_ratios) in the recipe.
  const json details = PassDetails(rep, "prune_channels")["target_macs"];
  ASSERT_TRUE(details.is_object()) << rep["passes"].dump(1);
  EXPECT_EQ(details["method"], "sensitivity");
  EXPECT_EQ(details["target_fraction"], 0.5);
  EXPECT_EQ(details["macs_before"], kCnnMacs);
  EXPECT_EQ(details["macs_after"], macs);
  EXPECT_EQ(details["samples"], 256);
  ASSERT_EQ(details["groups"].size(), 3u);
  json recipe_ratios;
  for (const auto& p : rep["recipe"]["passes"]) {
    if (p["pass"] == "prune_channels") recipe_ratios = p["options"]["group_ratios"];
  }
  int64_t pruned_groups = 0;
  for (const auto& g : details["groups"]) {
    const double ratio = g["ratio"].get<double>();
    EXPECT_GE(ratio, 0.0);
    EXPECT_LE(ratio, 0.75);
    EXPECT_EQ(g["noise_ratio_alone"].size(), 6u);
    if (ratio > 0) {
      ++pruned_groups;
      EXPECT_EQ(recipe_ratios[g["group"].get<std::string>()], ratio) << recipe_ratios;
      EXPECT_LT(g["macs_after"].get<int64_t>(), g["macs_before"].get<int64_t>()) << g;
    }
  }
  EXPECT_GE(pruned_groups, 1);
  EXPECT_EQ(recipe_ratios.size(), static_cast<size_t>(pruned_groups));

  // ONNX Runtime computes what our executor computes, and the accuracy on the full test set.
  EXPECT_LE(OrtDifference(pruned), kOrtLogitTolerance);
  const auto o = testing::RunOrt({"eval", out, Data() + "/images.npy", Data() + "/labels.npy", "--threads", "2"});
  ASSERT_EQ(o.exit_code, 0) << o.err;
  const double ort_top1 = json::parse(o.out)["top1"].get<double>();
  const json& e = rep["evaluation"];
  EXPECT_EQ(e["samples"], 10000);
  EXPECT_NEAR(e["top1_after"].get<double>(), ort_top1, kTop1Tolerance);
  EXPECT_GE(e["top1_after"].get<double>(), kMinTop1);
  std::cout << "[target-macs] cnn 0.5: MACs " << kCnnMacs << " -> " << macs << ", top-1 "
            << e["top1_before"].get<double>() << " -> " << e["top1_after"].get<double>() << " (ONNX Runtime "
            << ort_top1 << ")\n";
}

TEST(TargetMacsModel, SampleCnnWithInt8InOneRun) {
  testing::TempDir tmp;
  const std::string out = tmp / "cnn.pruned.int8.onnx";
  const std::string report = tmp / "report.json";
  const auto r = testing::RunCompress({testing::SourcePath("models/cnn.onnx"), "--target-macs", "0.5", "--int8",
                                       "--calib", testing::SourcePath("models/calib"), "-o", out, "--report", report,
                                       "--eval", Data(), "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json rep = json::parse(testing::ReadBytes(report));
  EXPECT_TRUE(rep["output"]["checker"]["ok"].get<bool>()) << rep["output"]["checker"]["message"];
  // Pruning first, then quantization.
  std::vector<std::string> order;
  for (const auto& p : rep["recipe"]["passes"]) order.push_back(p["pass"].get<std::string>());
  ASSERT_EQ(order.size(), 2u);
  EXPECT_EQ(order[0], "prune_channels");
  EXPECT_EQ(order[1], "quantize");
  const Model m = LoadModel(out);
  EXPECT_EQ(testing::CheckerAndTypeErrors(m), "");
  int64_t qdq = 0;
  for (const auto& n : m.graph.nodes) qdq += n.op_type == "QuantizeLinear";
  EXPECT_GT(qdq, 0);
  EXPECT_LE(CountMacs(m).total, kCnnMacs / 2);
  EXPECT_EQ(PassDetails(rep, "prune_channels")["target_macs"]["method"], "sensitivity");

  const auto o = testing::RunOrt({"eval", out, Data() + "/images.npy", Data() + "/labels.npy", "--threads", "2"});
  ASSERT_EQ(o.exit_code, 0) << o.err;
  const double ort_top1 = json::parse(o.out)["top1"].get<double>();
  const double top1 = rep["evaluation"]["top1_after"].get<double>();
  EXPECT_GE(top1, kMinTop1Int8);
  // INT8 rounding differs between the runtimes (ONNX Runtime's integer kernels, our simulation in float):
  // within a point, as in int8_cli_model_test.cc.
  EXPECT_NEAR(ort_top1, top1, 0.01);
  std::cout << "[target-macs] cnn 0.5 + int8: MACs -> " << CountMacs(m).total << ", top-1 " << top1
            << " (ONNX Runtime " << ort_top1 << ")\n";
}

}  // namespace
}  // namespace compress
