// `compress MODEL --fp16` end to end (clean-up + fp16, optionally compact_names) on every sample model:
// file size ratio, ONNX checker and top-1 in ONNX Runtime on the full Fashion-MNIST test set.

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "support/test_support.h"

namespace compress {
namespace {

using nlohmann::json;

// The bar for FP16 file size, and for accuracy: top-1 within 0.1 point of FP32.
constexpr double kSizeRatioTarget = 1.95;
constexpr double kTop1Tolerance = 0.001;

json Manifest() {
  std::ifstream in(testing::SourcePath("models/manifest.json"));
  return json::parse(in);
}

TEST(Fp16Cli, EverySampleModelHalvesWithCompactNamesAndKeepsTop1InOnnxRuntime) {
  const std::string data = std::string(COMPRESS_TEST_DATA_DIR) + "/fmnist-test";
  testing::TempDir tmp;
  int labelled = 0;
  const json manifest = Manifest();
  for (const auto& entry : manifest["models"]) {
    const std::string name = entry["name"].get<std::string>();
    const std::string path = testing::SourcePath("models/" + entry["file"].get<std::string>());
    SCOPED_TRACE(path);
    const std::string out = tmp / (name + ".onnx");
    const std::string report = tmp / (name + ".json");
    const auto r = testing::RunCompress({path, "--fp16", "--compact-names", "-o", out, "--report", report, "-q"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const json rep = json::parse(testing::ReadBytes(report));
    const double ratio = static_cast<double>(std::filesystem::file_size(path)) /
                         static_cast<double>(std::filesystem::file_size(out));
    EXPECT_DOUBLE_EQ(rep["size_ratio"].get<double>(), ratio);
    EXPECT_GE(ratio, kSizeRatioTarget);
    EXPECT_TRUE(rep["output"]["checker"]["ok"].get<bool>()) << rep["output"]["checker"]["message"];
    // Clean-up may only remove parameters (folded BatchNormalization, shared shape constants).
    EXPECT_EQ(rep["parameters"]["before"]["total"], entry["parameters"]);
    EXPECT_LE(rep["parameters"]["after"]["total"].get<int64_t>(), entry["parameters"].get<int64_t>());
    // Every weight becomes float16 except inputs only float32 may feed (the autoencoder's Resize scales).
    const json& after = rep["parameters"]["after"]["by_dtype"];
    const int64_t f32 = after.contains("float32") ? after["float32"]["parameters"].get<int64_t>() : 0;
    EXPECT_LE(f32, 8) << after.dump();
    std::cout << "[fp16 cli] " << name << ": ratio " << ratio;
    if (entry["fp32_top1"].is_number()) {
      const auto ort = testing::RunOrt({"eval", out, data + "/images.npy", data + "/labels.npy", "--threads", "2"});
      ASSERT_EQ(ort.exit_code, 0) << ort.err;
      const json o = json::parse(ort.out);
      EXPECT_EQ(o["samples"].get<int64_t>(), 10000);
      EXPECT_NEAR(o["top1"].get<double>(), entry["fp32_top1"].get<double>(), kTop1Tolerance);
      std::cout << ", ORT top-1 " << o["top1"].get<double>() << " (fp32 " << entry["fp32_top1"].get<double>() << ")";
      ++labelled;
    }
    std::cout << "\n";
  }
  EXPECT_EQ(labelled, 6);
}

}  // namespace
}  // namespace compress
