// `compress models/cnn.onnx --prune-channels 0.5` end to end: the channel groups of the sample CNN (stem +
// depthwise + pointwise joined by the residual Add, conv2, conv3 feeding GlobalAveragePool -> Flatten ->
// Gemm) each lose half their channels; the output passes the ONNX checker, ONNX Runtime computes what our
// executor computes, and the accuracy on the Fashion-MNIST test set is measured (no fine-tuning).

#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>

#include "compress/eval/evaluate.h"
#include "compress/exec/executor.h"
#include "compress/io/dataset.h"
#include "compress/io/onnx_io.h"
#include "support/test_support.h"

namespace compress {
namespace {

using nlohmann::json;

// Logits of ONNX Runtime and our executor on the same model: both sum at most 576 float32 products of
// magnitude below ~10 per output, so they differ by float rounding only, far below 1e-3.
constexpr double kOrtLogitTolerance = 1e-3;
// Top-1 of the two runtimes may differ only on images whose two best logits are within rounding: at most
// 0.05 points (as in ort_crosscheck_test.cc).
constexpr double kTop1Tolerance = 0.0005;
// No accuracy bar here: without calibration data, removing half of every group's channels of this small
// CNN by weight norm leaves it near chance (measured: top-1 0.100 at 0.5, 0.263 at 0.25, 0.455 at 0.125;
// fp32 0.9125): the removed channels' means are lost (see the test with --calib below).
// The issue asks for the number to be reported; the surgery itself is checked by the unit tests (pruned
// outputs equal the original with the same channels zeroed) and here by shapes, checker and ONNX Runtime.

// --prune-channels 0.375 keeps 24/32, 40/64 and 40/64 channels: 46.1 % of the MACs (inspect); the bar is
// the 50 %.
constexpr double kMaxMacsRatio = 0.5;
// Top-1 on the full test set in ONNX Runtime at that level with --calib models/calib, the consumers
// re-fitted by least squares (update, the default): measured 0.8740 (0.125: 0.9118, 0.25: 0.8876, 0.5:
// 0.6603; with mean folding only, update false, 0.4285 and 0.8729, 0.7531, 0.3009; without --calib 0.455
// at 0.125 and 0.263 at 0.25); bar 1 point below (the calibration statistics are deterministic; the
// margin absorbs other CPUs' float rounding on images near a tie).
constexpr double kCalibratedTop1 = 0.8740 - 0.01;

std::vector<int64_t> DimsOf(const Model& m, const std::string& name) {
  const Tensor* t = m.graph.FindInitializer(name);
  return t == nullptr ? std::vector<int64_t>{} : t->dims();
}

TEST(PruneChannelsModel, SampleCnnHalfChannels) {
  testing::TempDir tmp;
  const std::string in = testing::SourcePath("models/cnn.onnx");
  const std::string out = tmp / "cnn.pruned.onnx";
  const std::string report = tmp / "report.json";
  const auto r = testing::RunCompress({in, "--prune-channels", "0.5", "-o", out, "--report", report, "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json rep = json::parse(testing::ReadBytes(report));
  EXPECT_TRUE(rep["output"]["checker"]["ok"].get<bool>()) << rep["output"]["checker"]["message"];

  const Model pruned = LoadModel(out);
  EXPECT_EQ(testing::CheckerAndTypeErrors(pruned), "");
  EXPECT_EQ(DimsOf(pruned, "onnx::Conv_55"), (std::vector<int64_t>{16, 1, 3, 3}));   // stem
  EXPECT_EQ(DimsOf(pruned, "onnx::Conv_56"), (std::vector<int64_t>{16}));
  EXPECT_EQ(DimsOf(pruned, "onnx::Conv_58"), (std::vector<int64_t>{16, 1, 3, 3}));   // depthwise
  EXPECT_EQ(DimsOf(pruned, "onnx::Conv_61"), (std::vector<int64_t>{16, 16, 1, 1}));  // pointwise
  EXPECT_EQ(DimsOf(pruned, "onnx::Conv_64"), (std::vector<int64_t>{32, 16, 3, 3}));  // conv2
  EXPECT_EQ(DimsOf(pruned, "onnx::Conv_67"), (std::vector<int64_t>{32, 32, 3, 3}));  // conv3
  EXPECT_EQ(DimsOf(pruned, "fc.weight"), (std::vector<int64_t>{10, 32}));
  EXPECT_EQ(DimsOf(pruned, "fc.bias"), (std::vector<int64_t>{10}));
  int64_t depthwise_group = 0;
  for (const auto& n : pruned.graph.nodes) {
    if (n.name == "/block/block.0/block.0.0/Conv") depthwise_group = n.AttrInt("group", 1);
  }
  EXPECT_EQ(depthwise_group, 16);

  // The same logits in ONNX Runtime and in our executor.
  Tensor x(DType::kFloat, {8, 1, 28, 28});
  std::mt19937 gen(7);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (int64_t i = 0; i < x.numel(); ++i) x.mutable_data<float>()[i] = dist(gen);
  const std::vector<Tensor> ort = testing::RunModelInOrt(pruned, {x});
  Executor exec(pruned);
  const std::vector<Tensor> ours = exec.Run({x});
  ASSERT_EQ(ort.size(), 1u);
  ASSERT_EQ(ours.size(), 1u);
  ASSERT_EQ(ort[0].dims(), (std::vector<int64_t>{8, 10}));
  ASSERT_EQ(ours[0].dims(), ort[0].dims());
  double worst = 0;
  for (int64_t i = 0; i < ours[0].numel(); ++i) {
    worst = std::max(worst, static_cast<double>(std::fabs(ours[0].data<float>()[i] - ort[0].data<float>()[i])));
  }
  EXPECT_LE(worst, kOrtLogitTolerance);

  // Accuracy on the full test set, in both runtimes.
  const std::string data_dir = std::string(COMPRESS_TEST_DATA_DIR) + "/fmnist-test";
  const Dataset data = Dataset::Open(data_dir, ModelInputSpecs(pruned));
  EvalOptions opt;
  opt.progress = false;
  const EvalResult ev = Evaluate(exec, data, opt);
  const auto o = testing::RunOrt({"eval", out, data_dir + "/images.npy", data_dir + "/labels.npy", "--threads", "2"});
  ASSERT_EQ(o.exit_code, 0) << o.err;
  const json oj = json::parse(o.out);
  EXPECT_EQ(ev.samples, 10000);
  EXPECT_NEAR(ev.top1, oj["top1"].get<double>(), kTop1Tolerance);
  std::cout << "[prune-channels] cnn 0.5: parameters " << rep["parameters"]["before"]["total"] << " -> "
            << rep["parameters"]["after"]["total"] << ", top-1 ours " << ev.top1 << ", ONNX Runtime "
            << oj["top1"].get<double>() << " (fp32 0.9125)\n";
}

// --prune-channels 0.375 with calibration data: the residual group keeps 24 of 32 channels, conv2 and conv3
// keep 40 of 64 (rounded to multiples of 8), which leaves 46 % of the MACs. Channels are ranked by
// activation (consumer weights x activation spread on models/calib) and every consumer's kept weights and
// bias re-fitted by least squares on its calibration inputs.
TEST(PruneChannelsModel, SampleCnnUnderHalfTheMacsWithCalibration) {
  testing::TempDir tmp;
  const std::string in = testing::SourcePath("models/cnn.onnx");
  const std::string out = tmp / "cnn.pruned.onnx";
  const std::string report = tmp / "report.json";
  const auto r = testing::RunCompress({in, "--prune-channels", "0.375", "--calib", testing::SourcePath("models/calib"),
                                       "-o", out, "--report", report, "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json rep = json::parse(testing::ReadBytes(report));
  EXPECT_TRUE(rep["output"]["checker"]["ok"].get<bool>()) << rep["output"]["checker"]["message"];
  EXPECT_LE(rep["macs"]["ratio"].get<double>(), kMaxMacsRatio);
  const Model pruned = LoadModel(out);
  EXPECT_EQ(testing::CheckerAndTypeErrors(pruned), "");
  EXPECT_EQ(DimsOf(pruned, "onnx::Conv_55"), (std::vector<int64_t>{24, 1, 3, 3}));
  EXPECT_EQ(DimsOf(pruned, "onnx::Conv_64"), (std::vector<int64_t>{40, 24, 3, 3}));
  EXPECT_EQ(DimsOf(pruned, "onnx::Conv_67"), (std::vector<int64_t>{40, 40, 3, 3}));
  EXPECT_EQ(DimsOf(pruned, "fc.weight"), (std::vector<int64_t>{10, 40}));
  std::string method;
  for (const auto& p : rep["passes"]) {
    if (p["pass"] == "prune_channels") method = p["details"]["layers"][0]["method"].get<std::string>();
  }
  EXPECT_EQ(method, "act");

  const std::string data_dir = std::string(COMPRESS_TEST_DATA_DIR) + "/fmnist-test";
  const auto o = testing::RunOrt({"eval", out, data_dir + "/images.npy", data_dir + "/labels.npy", "--threads", "2"});
  ASSERT_EQ(o.exit_code, 0) << o.err;
  const double top1 = json::parse(o.out)["top1"].get<double>();
  EXPECT_GE(top1, kCalibratedTop1);
  std::cout << "[prune-channels] cnn 0.375 --calib: MACs ratio " << rep["macs"]["ratio"] << ", top-1 in ONNX Runtime "
            << top1 << " (fp32 0.9125)\n";
}

}  // namespace
}  // namespace compress
