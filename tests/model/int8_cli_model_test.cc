// `compress MODEL --int8 ...` end to end on the sample CNN with every calibration method and format:
// top-1 on the full Fashion-MNIST test set in ONNX Runtime, and agreement between ONNX Runtime's and our
// executor's predictions on the same quantized model.

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "compress/io/npy.h"
#include "compress/io/onnx_io.h"
#include "support/test_support.h"

namespace compress {
namespace {

using nlohmann::json;

// The bars for the CNN: top-1 within 0.2 pt of FP32 for the default recipe; ONNX Runtime and our
// executor agree on at least 99.5 % of the images. Other methods trade the outliers differently; they
// must stay within 0.5 pt. Symmetric int8 activations spend half their levels on negative values that a
// Relu output never has (7 bits in effect), so they get 1 pt.
constexpr double kDefaultDropPts = 0.2;
constexpr double kOtherMethodDropPts = 0.5;
constexpr double kInt8ActivationDropPts = 1.0;
constexpr double kMinAgreement = 0.995;
// The CNN's float weights are 231,080 of its 233,725 bytes; int8 weights plus the per-channel weight
// scales and int32 biases that QDQ needs already cap the ratio at 3.93 before any graph is written. By
// default its three shallow convolutions (1,600 weights) stay float for speed (--min-conv-depth 64):
// about 3.37. With every Conv quantized and --compact-names it is about 3.73.
constexpr double kCnnMinSizeRatio = 3.35;
constexpr double kCnnAllConvsCompactMinSizeRatio = 3.7;

std::string Data() { return std::string(COMPRESS_TEST_DATA_DIR) + "/fmnist-test"; }

double ManifestTop1(const std::string& name) {
  std::ifstream in(testing::SourcePath("models/manifest.json"));
  const json m = json::parse(in);
  for (const auto& e : m["models"]) {
    if (e["name"] == name) return e["fp32_top1"].get<double>();
  }
  return -1;
}

struct Measured {
  double ort_top1 = 0;
  double agreement = 0;
  double size_ratio = 0;
};

Measured Measure(const std::string& model, const std::string& quantized, const testing::TempDir& tmp,
                 const std::string& tag) {
  Measured m;
  const auto ort = testing::RunOrt({"eval", quantized, Data() + "/images.npy", Data() + "/labels.npy", "--threads",
                                    "2", "--preds", tmp / (tag + "_ort.npy")});
  EXPECT_EQ(ort.exit_code, 0) << ort.err;
  m.ort_top1 = json::parse(ort.out)["top1"].get<double>();
  const auto ours = testing::RunCompress(
      {"eval", quantized, "--data", Data(), "--predictions", tmp / (tag + "_ours.npy"), "-q"});
  EXPECT_EQ(ours.exit_code, 0) << ours.err;
  const Tensor a = ReadNpy(tmp / (tag + "_ort.npy")), b = ReadNpy(tmp / (tag + "_ours.npy"));
  EXPECT_EQ(a.numel(), 10000);
  EXPECT_EQ(b.numel(), a.numel());
  int64_t agree = 0;
  for (int64_t i = 0; i < a.numel() && i < b.numel(); ++i) agree += a.data<int64_t>()[i] == b.data<int64_t>()[i];
  m.agreement = static_cast<double>(agree) / static_cast<double>(a.numel());
  m.size_ratio = static_cast<double>(std::filesystem::file_size(model)) /
                 static_cast<double>(std::filesystem::file_size(quantized));
  return m;
}

TEST(Int8CliModel, EveryCalibrationMethodAndFormatOnTheCnn) {
  testing::TempDir tmp;
  const std::string model = testing::SourcePath("models/cnn.onnx");
  const double fp32 = ManifestTop1("cnn");
  struct Variant {
    std::string tag;
    std::vector<std::string> args;
    double max_drop;
    double min_size_ratio = kCnnMinSizeRatio;
  };
  // The first run saves the statistics; the others reuse them (no second calibration).
  const std::vector<Variant> variants = {
      {"minmax", {"--calib", testing::SourcePath("models/calib"), "--calib-table", tmp / "table.json"}, kDefaultDropPts},
      {"percentile", {"--calib-table", tmp / "table.json", "--calib-method", "percentile"}, kOtherMethodDropPts},
      {"entropy", {"--calib-table", tmp / "table.json", "--calib-method", "entropy"}, kOtherMethodDropPts},
      {"mse", {"--calib-table", tmp / "table.json", "--calib-method", "mse"}, kOtherMethodDropPts},
      {"qop", {"--calib-table", tmp / "table.json", "--format", "qop"}, kDefaultDropPts},
      {"int8act", {"--calib-table", tmp / "table.json", "--activation-type", "int8"}, kInt8ActivationDropPts},
      {"allconvs",
       {"--calib-table", tmp / "table.json", "--min-conv-depth", "0", "--compact-names"},
       kDefaultDropPts,
       kCnnAllConvsCompactMinSizeRatio},
  };
  for (const auto& v : variants) {
    SCOPED_TRACE(v.tag);
    const std::string out = tmp / (v.tag + ".onnx");
    std::vector<std::string> args = {model, "--int8", "-o", out, "-q"};
    args.insert(args.end(), v.args.begin(), v.args.end());
    const auto r = testing::RunCompress(args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(CheckModelFile(out).ok) << CheckModelFile(out).message;
    const Measured m = Measure(model, out, tmp, v.tag);
    std::cout << "[int8 cnn] " << v.tag << ": ORT top-1 " << m.ort_top1 << " (fp32 " << fp32 << ", drop "
              << (fp32 - m.ort_top1) * 100 << " pt), ORT/ours agreement " << m.agreement << ", size ratio "
              << m.size_ratio << "\n";
    EXPECT_LE((fp32 - m.ort_top1) * 100, v.max_drop);
    EXPECT_GE(m.agreement, kMinAgreement);
    EXPECT_GE(m.size_ratio, v.min_size_ratio);
  }
}

// Op types of the graph ONNX Runtime runs (after its portable optimizations), by "domain:op".
std::map<std::string, int> OrtOptimizedOps(const std::string& model, const testing::TempDir& tmp) {
  const std::string out = tmp / "ort_optimized.onnx";
  const auto r = testing::RunOrt({"optimize", model, out});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::map<std::string, int> ops;
  for (const auto& n : LoadModel(out).graph.nodes) ++ops[n.domain + ":" + n.op_type];
  return ops;
}

TEST(Int8CliModel, OnnxRuntimeRunsTheConvolutionsAsIntegerKernels) {
  testing::TempDir tmp;
  const std::string model = testing::SourcePath("models/cnn.onnx");
  // Default: the stem (depth 9), the depthwise (9) and the 1x1 (32) convolutions stay float; conv2 and
  // conv3 become QLinearConv, with one QuantizeLinear where float turns into uint8. The bias-scale Muls
  // are folded away.
  const auto r = testing::RunCompress(
      {model, "--int8", "--calib", testing::SourcePath("models/calib"), "-o", tmp / "default.onnx", "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::map<std::string, int> ops = OrtOptimizedOps(tmp / "default.onnx", tmp);
  EXPECT_EQ(ops[":QLinearConv"], 2);
  EXPECT_EQ(ops[":Conv"] + ops["com.microsoft:FusedConv"], 3);  // FusedConv: a Conv with its Relu
  EXPECT_EQ(ops[":QuantizeLinear"], 1);
  EXPECT_EQ(ops[":Mul"], 0);
  EXPECT_EQ(ops["com.microsoft:QLinearGlobalAveragePool"], 1);
  // Every Conv quantized: five QLinearConv, the residual Add as QLinearAdd, still one QuantizeLinear (the
  // graph input).
  const auto all = testing::RunCompress({model, "--int8", "--calib", testing::SourcePath("models/calib"),
                                         "--min-conv-depth", "0", "-o", tmp / "all.onnx", "-q"});
  ASSERT_EQ(all.exit_code, 0) << all.err;
  ops = OrtOptimizedOps(tmp / "all.onnx", tmp);
  EXPECT_EQ(ops[":QLinearConv"], 5);
  EXPECT_EQ(ops[":Conv"] + ops["com.microsoft:FusedConv"], 0);
  EXPECT_EQ(ops[":QuantizeLinear"], 1);
  EXPECT_EQ(ops["com.microsoft:QLinearAdd"], 1);
  EXPECT_EQ(ops[":Mul"], 0);
}

TEST(Int8CliModel, DynamicAndWeightsOnlyOnTheMlpAndTransformer) {
  testing::TempDir tmp;
  for (const std::string name : {"mlp", "vit"}) {
    const std::string model = testing::SourcePath("models/" + name + ".onnx");
    const double fp32 = ManifestTop1(name);
    for (const std::string mode : {"--dynamic", "--weights-only"}) {
      SCOPED_TRACE(name + " " + mode);
      const std::string out = tmp / (name + mode + ".onnx");
      const auto r = testing::RunCompress({model, "--int8", mode, "-o", out, "-q"});
      ASSERT_EQ(r.exit_code, 0) << r.err;
      EXPECT_TRUE(CheckModelFile(out).ok);
      const Measured m = Measure(model, out, tmp, name + mode);
      std::cout << "[int8 " << name << "] " << mode << ": ORT top-1 " << m.ort_top1 << " (fp32 " << fp32
                << "), ORT/ours agreement " << m.agreement << ", size ratio " << m.size_ratio << "\n";
      EXPECT_LE((fp32 - m.ort_top1) * 100, kOtherMethodDropPts);
      EXPECT_GE(m.agreement, kMinAgreement);
    }
  }
}

}  // namespace
}  // namespace compress
