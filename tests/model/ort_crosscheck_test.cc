// Our executor against ONNX Runtime (npm onnxruntime-node, tests/ort): the sample models over the full
// Fashion-MNIST test set, models written as other exporters write them, and the conformance models.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "compress/eval/evaluate.h"
#include "compress/exec/executor.h"
#include "compress/io/dataset.h"
#include "compress/io/npy.h"
#include "compress/io/onnx_io.h"
#include "conformance_lib.h"
#include "support/test_support.h"

namespace compress {
namespace {

using testing::SourcePath;

// Top-1 of our executor and of ONNX Runtime may differ only through images whose two best logits are
// within float rounding of each other: at most 0.05 points (5 of 10,000 images).
constexpr double kTop1Tolerance = 0.0005;
// Outputs of models from other exporters: absolute difference allowed against ONNX Runtime.
constexpr double kOtherExporterAtol = 1e-3;

std::string TestImages() { return std::string(COMPRESS_TEST_DATA_DIR) + "/fmnist-test/images.npy"; }
std::string TestLabels() { return std::string(COMPRESS_TEST_DATA_DIR) + "/fmnist-test/labels.npy"; }

nlohmann::json Manifest() {
  std::ifstream f(SourcePath("models/manifest.json"));
  return nlohmann::json::parse(f);
}

TEST(OrtCrossCheck, SampleModelTop1MatchesOnnxRuntimeAndManifest) {
  const auto manifest = Manifest();
  testing::TempDir tmp;
  const std::string data_dir = std::string(COMPRESS_TEST_DATA_DIR) + "/fmnist-test";
  int checked = 0;
  for (const auto& entry : manifest["models"]) {
    if (!entry["fp32_top1"].is_number()) continue;  // the autoencoder has no top-1
    const std::string path = SourcePath("models/" + entry["file"].get<std::string>());
    SCOPED_TRACE(path);
    const Model model = LoadModel(path);
    const Dataset data = Dataset::Open(data_dir, ModelInputSpecs(model));
    Executor exec(model);
    EvalOptions opt;
    opt.progress = false;
    const EvalResult ours = Evaluate(exec, data, opt);

    const auto r = testing::RunOrt({"eval", path, TestImages(), TestLabels(), "--preds", tmp / "preds.npy",
                                    "--threads", "2"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto ort = nlohmann::json::parse(r.out);
    const Tensor ort_preds = ReadNpy(tmp / "preds.npy");
    int64_t agree = 0;
    for (int64_t i = 0; i < ort_preds.numel(); ++i) agree += ort_preds.data<int64_t>()[i] == ours.predictions[static_cast<size_t>(i)];
    std::cout << "[ort] " << entry["name"].get<std::string>() << ": ours " << ours.top1 << ", ONNX Runtime "
              << ort["top1"].get<double>() << ", manifest " << entry["fp32_top1"].get<double>() << ", agreement "
              << agree << "/" << ort_preds.numel() << "\n";
    EXPECT_EQ(ours.samples, 10000);
    EXPECT_NEAR(ours.top1, ort["top1"].get<double>(), kTop1Tolerance);
    EXPECT_NEAR(ours.top1, entry["fp32_top1"].get<double>(), kTop1Tolerance);
    EXPECT_GE(agree, ort_preds.numel() - 5);
    ++checked;
  }
  EXPECT_GE(checked, 4);
}

// Runs a model on the first 64 test images in both runtimes and returns the largest absolute difference
// over all outputs.
double MaxAbsDiffAgainstOrt(const std::string& path, const testing::TempDir& tmp) {
  const Model model = LoadModel(path);
  const Dataset data = Dataset::Open(std::string(COMPRESS_TEST_DATA_DIR) + "/fmnist-test", ModelInputSpecs(model));
  const std::vector<Tensor> inputs = data.ReadSamples(0, 64);
  WriteNpy(tmp / "in.npy", inputs[0]);
  Executor exec(model);
  const std::vector<Tensor> ours = exec.Run(inputs);
  const auto r = testing::RunOrt({"run", path, tmp / "ort", tmp / "in.npy"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  double worst = 0;
  for (size_t k = 0; k < ours.size(); ++k) {
    const Tensor theirs = ReadNpy(tmp / ("ort/output_" + std::to_string(k) + ".npy"));
    EXPECT_EQ(theirs.dims(), ours[k].dims());
    if (theirs.dims() != ours[k].dims() || ours[k].dtype() != DType::kFloat) continue;
    for (int64_t i = 0; i < theirs.numel(); ++i) {
      worst = std::max(worst, static_cast<double>(std::fabs(theirs.data<float>()[i] - ours[k].data<float>()[i])));
    }
  }
  return worst;
}

TEST(OrtCrossCheck, ModelsFromOtherExportersMatchOnnxRuntime) {
  testing::TempDir tmp;
  int checked = 0;
  for (const auto& e : std::filesystem::directory_iterator(SourcePath("models/other"))) {
    if (e.path().extension() != ".onnx") continue;
    SCOPED_TRACE(e.path().string());
    const double worst = MaxAbsDiffAgainstOrt(e.path().string(), tmp);
    std::cout << "[ort] " << e.path().filename().string() << ": max |ours - ONNX Runtime| = " << worst << "\n";
    EXPECT_LE(worst, kOtherExporterAtol);
    ++checked;
  }
  EXPECT_GE(checked, 3);
}

// Conformance models on which ONNX Runtime and the ONNX reference (which the executor matches, see the
// conformance runner) disagree, with the reason. Any other difference fails the test.
const std::map<std::string, std::string>& KnownOrtDifferences() {
  static const std::map<std::string, std::string> known = {
      {"node/test_resize_downsample_scales_cubic_align_corners",
       "ONNX Runtime maps align_corners with the integer output length; the ONNX reference uses scale x input"},
      {"node/test_resize_downsample_scales_linear_align_corners",
       "ONNX Runtime maps align_corners with the integer output length; the ONNX reference uses scale x input"},
      {"node/test_training_dropout", "random mask: ONNX's data uses numpy's seeded generator, ONNX Runtime its own"},
      {"node/test_training_dropout_default", "random mask (see test_training_dropout)"},
      {"node/test_training_dropout_default_mask", "random mask (see test_training_dropout)"},
      {"node/test_training_dropout_mask", "random mask (see test_training_dropout)"},
  };
  return known;
}

// Every selected conformance model, on its own test inputs, in both runtimes.
TEST(OrtCrossCheck, ConformanceModelsMatchOnnxRuntime) {
  testing::TempDir tmp;
  const auto sel = conformance::SelectTests(conformance::kDefaultDataDir);
  nlohmann::json jobs = nlohmann::json::array();
  std::vector<std::vector<Tensor>> ours;
  std::vector<std::string> names;
  int not_representable = 0;  // inputs .npy cannot carry to ONNX Runtime (bfloat16, strings)
  for (const auto& test : sel.selected) {
    if (test.data_sets.empty()) continue;
    std::vector<Tensor> inputs;
    std::vector<Tensor> outputs;
    try {
      Executor exec(LoadModel(test.dir + "/model.onnx"));
      const auto files = conformance::DataFiles(test.data_sets[0], "input_");
      for (size_t k = 0; k < files.size(); ++k) {
        inputs.push_back(conformance::ReadTestTensor(files[k], k < exec.inputs().size() ? exec.inputs()[k].type.elem_type
                                                                                          : DType::kUndefined));
      }
      outputs = exec.Run(inputs);
    } catch (const std::exception&) {
      continue;  // not supported by us: counted by the conformance runner, not here
    }
    const std::string dir = tmp / ("job" + std::to_string(names.size()));
    std::filesystem::create_directories(dir);
    nlohmann::json job{{"model", test.dir + "/model.onnx"}, {"out", dir + "/ort"}, {"inputs", nlohmann::json::array()}};
    try {
      for (size_t k = 0; k < inputs.size(); ++k) {
        const std::string f = dir + "/input_" + std::to_string(k) + ".npy";
        WriteNpy(f, inputs[k]);
        job["inputs"].push_back(f);
      }
    } catch (const std::exception&) {
      ++not_representable;
      continue;
    }
    jobs.push_back(job);
    ours.push_back(std::move(outputs));
    names.push_back(test.name);
  }
  testing::WriteBytes(tmp / "jobs.json", jobs.dump());
  const auto r = testing::RunOrt({"runlist", tmp / "jobs.json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::istringstream lines(r.out);
  std::string line;
  int compared = 0, agreed = 0, ort_rejected = 0;
  std::vector<std::string> disagreements;
  while (std::getline(lines, line)) {
    const auto res = nlohmann::json::parse(line);
    const size_t i = res["index"].get<size_t>();
    if (!res["ok"].get<bool>()) {
      ++ort_rejected;
      continue;
    }
    ++compared;
    std::string why;
    for (size_t k = 0; k < ours[i].size() && why.empty(); ++k) {
      const std::string f = tmp / ("job" + std::to_string(i) + "/ort/output_" + std::to_string(k) + ".npy");
      if (!std::filesystem::exists(f)) {
        why = "ONNX Runtime gave fewer outputs";
        break;
      }
      try {
        why = conformance::Compare(ours[i][k], ReadNpy(f));
      } catch (const std::exception& e) {
        why = std::string("cannot read ONNX Runtime's output: ") + e.what();
      }
    }
    if (why.empty()) {
      ++agreed;
      EXPECT_EQ(KnownOrtDifferences().count(names[i]), 0u) << names[i] << " now agrees; drop it from the list";
    } else if (KnownOrtDifferences().count(names[i])) {
      std::cout << "[ort]   known difference: " << names[i] << ": " << KnownOrtDifferences().at(names[i]) << "\n";
    } else {
      disagreements.push_back(names[i] + ": " + why);
    }
  }
  std::cout << "[ort] conformance models: " << names.size() + static_cast<size_t>(not_representable)
            << " run by us (" << not_representable << " with inputs .npy cannot carry), " << compared
            << " also run by ONNX Runtime (" << ort_rejected << " rejected by it), " << agreed << " agree\n";
  for (const auto& d : disagreements) std::cout << "[ort]   differs: " << d << "\n";
  EXPECT_GE(compared, 550);
  EXPECT_TRUE(disagreements.empty());
}

}  // namespace
}  // namespace compress
