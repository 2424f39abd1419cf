// The committed sample models against the manifest their generator wrote, and the real Fashion-MNIST
// test set (converted at test time from Debian's dataset-fashion-mnist) read as a data folder.

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <set>
#include <fstream>
#include <nlohmann/json.hpp>

#include "compress/io/dataset.h"
#include "compress/io/onnx_io.h"
#include "support/test_support.h"

namespace compress {
namespace {

using testing::RunCompress;
using testing::SourcePath;

// "Each under ~2 MB": the sample models must stay small enough to live in the repository.
constexpr uintmax_t kMaxSampleModelBytes = 2'100'000;
constexpr int64_t kFashionMnistTestImages = 10000;
constexpr int kClasses = 10;

nlohmann::json Manifest() {
  std::ifstream f(SourcePath("models/manifest.json"));
  EXPECT_TRUE(f.good()) << "models/manifest.json missing";
  return nlohmann::json::parse(f);
}

TEST(SampleModels, ManifestListsTheRequiredModels) {
  const auto manifest = Manifest();
  std::set<std::string> names;
  for (const auto& m : manifest["models"]) names.insert(m["name"].get<std::string>());
  for (const char* required : {"mlp", "cnn", "cnn_bn", "vit"}) EXPECT_TRUE(names.count(required)) << required;
}

TEST(SampleModels, InspectReportsManifestParameterCountAndCheckerPasses) {
  int checked = 0;
  const auto manifest = Manifest();
  for (const auto& entry : manifest["models"]) {
    const std::string path = SourcePath("models/" + entry["file"].get<std::string>());
    SCOPED_TRACE(path);
    EXPECT_LE(std::filesystem::file_size(path), kMaxSampleModelBytes);
    const auto r = RunCompress({"inspect", "--json", path});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto doc = nlohmann::json::parse(r.out);
    EXPECT_EQ(doc["parameters"].get<int64_t>(), entry["parameters"].get<int64_t>());
    EXPECT_TRUE(doc["checker"]["ok"].get<bool>()) << doc["checker"];
    ++checked;
  }
  EXPECT_GE(checked, 4);
}

TEST(SampleModels, HaveASymbolicBatchDimension) {
  const auto manifest = Manifest();
  for (const auto& entry : manifest["models"]) {
    const Model m = LoadModel(SourcePath("models/" + entry["file"].get<std::string>()));
    const auto inputs = ModelInputSpecs(m);
    ASSERT_EQ(inputs.size(), 1u) << entry["file"];
    EXPECT_FALSE(inputs[0].shape.at(0).is_fixed()) << entry["file"] << ": " << inputs[0].ToString();
    ASSERT_EQ(m.graph.outputs.size(), 1u);
    EXPECT_FALSE(m.graph.outputs[0].type.shape.at(0).is_fixed()) << entry["file"];
  }
}

TEST(SampleModels, FashionMnistTestSetAndCalibrationSliceFitEveryModel) {
  const std::string test_dir = std::string(COMPRESS_TEST_DATA_DIR) + "/fmnist-test";
  const auto manifest = Manifest();
  const std::string calib_dir = SourcePath("models/" + manifest["calibration"]["dir"].get<std::string>());
  for (const auto& entry : manifest["models"]) {
    const Model m = LoadModel(SourcePath("models/" + entry["file"].get<std::string>()));
    const Dataset test = Dataset::Open(test_dir, ModelInputSpecs(m));
    EXPECT_EQ(test.num_samples(), kFashionMnistTestImages);
    ASSERT_TRUE(test.has_labels());
    std::vector<int> per_class(kClasses, 0);
    for (int64_t l : test.labels()) {
      ASSERT_GE(l, 0);
      ASSERT_LT(l, kClasses);
      ++per_class[static_cast<size_t>(l)];
    }
    for (int c = 0; c < kClasses; ++c) EXPECT_EQ(per_class[static_cast<size_t>(c)], 1000) << c;

    const Dataset calib = Dataset::Open(calib_dir, ModelInputSpecs(m));
    EXPECT_EQ(calib.num_samples(), manifest["calibration"]["count"].get<int64_t>());
  }
  // The normalised pixels have the training set's statistics: mean about 0 and standard deviation
  // about 1 (the test split differs slightly from the training split these constants come from).
  const Model mlp = LoadModel(SourcePath("models/mlp.onnx"));
  const Dataset test = Dataset::Open(test_dir, ModelInputSpecs(mlp));
  const Tensor batch = test.ReadSamples(0, 1000).at(0);
  double sum = 0, sq = 0;
  const float* x = batch.data<float>();
  for (int64_t i = 0; i < batch.numel(); ++i) {
    sum += x[i];
    sq += static_cast<double>(x[i]) * x[i];
  }
  const double mean = sum / static_cast<double>(batch.numel());
  const double stddev = std::sqrt(sq / static_cast<double>(batch.numel()) - mean * mean);
  EXPECT_NEAR(mean, 0.0, 0.05);
  EXPECT_NEAR(stddev, 1.0, 0.05);
}

TEST(SampleModels, RewriteKeepsEveryTensor) {
  testing::TempDir dir;
  const auto manifest = Manifest();
  for (const auto& entry : manifest["models"]) {
    const std::string path = SourcePath("models/" + entry["file"].get<std::string>());
    const auto r = RunCompress({path, "-o", dir / "out.onnx", "--no-optimize", "-q"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const Model a = LoadModel(path), b = LoadModel(dir / "out.onnx");
    ASSERT_EQ(a.graph.initializers.size(), b.graph.initializers.size());
    for (size_t i = 0; i < a.graph.initializers.size(); ++i) {
      EXPECT_TRUE(a.graph.initializers[i].SameContent(b.graph.initializers[i])) << a.graph.initializers[i].name();
    }
    ASSERT_EQ(a.graph.nodes.size(), b.graph.nodes.size());
    EXPECT_TRUE(CheckModelFile(dir / "out.onnx").ok);
  }
}

}  // namespace
}  // namespace compress
