// The default clean-up (every pass of AllPasses() marked cleanup, in that order) on the committed sample
// models: the result verifies, passes the ONNX checker and computes what the original computes, in our
// executor and in ONNX Runtime. BatchNormalization folding on cnn_bn.onnx in particular.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "compress/exec/executor.h"
#include "compress/io/dataset.h"
#include "compress/io/npy.h"
#include "compress/io/onnx_io.h"
#include "compress/ir/verify.h"
#include "compress/passes/pass.h"
#include "support/test_support.h"

namespace compress {
namespace {

using testing::SourcePath;

// Folding BatchNormalization and constants rounds intermediate results to float32 in another order;
// the logits of these models are below ~30 in magnitude, where that moves them by a few 1e-6.
constexpr double kCleanupAtol = 1e-4;
constexpr int64_t kImages = 64;
constexpr int kBatchNormsInCnnBn = 5;

struct SampleModel {
  std::string name;
  std::string path;
};

// The manifest's models and anything else under models/other, in a fixed order.
std::vector<SampleModel> SampleModels() {
  std::ifstream f(SourcePath("models/manifest.json"));
  const auto manifest = nlohmann::json::parse(f);
  std::map<std::string, SampleModel> by_path;
  for (const auto& m : manifest["models"]) {
    const std::string path = SourcePath("models/" + m["file"].get<std::string>());
    by_path[std::filesystem::weakly_canonical(path).string()] = {m["name"].get<std::string>(), path};
  }
  for (const auto& e : std::filesystem::directory_iterator(SourcePath("models/other"))) {
    if (e.path().extension() != ".onnx") continue;
    const std::string key = std::filesystem::weakly_canonical(e.path()).string();
    if (!by_path.count(key)) by_path[key] = {e.path().stem().string(), e.path().string()};
  }
  std::vector<SampleModel> out;
  for (auto& [key, m] : by_path) out.push_back(m);
  return out;
}

bool InOtherFolder(const std::string& path) {
  return std::filesystem::path(path).parent_path().filename() == "other";
}

struct CleanupResult {
  Model model;
  std::map<std::string, int64_t> counters;
};

CleanupResult CleanUp(const Model& original) {
  CleanupResult r{original, {}};
  for (const auto& info : AllPasses()) {
    if (!info.cleanup) continue;
    auto pass = info.create(ValidatePassOptions(info, nlohmann::json::object(), "cleanup test"));
    PassContext ctx;
    pass->Run(r.model, ctx);
    VerifyModel(r.model);
    EXPECT_TRUE(IsTopologicallySorted(r.model.graph)) << info.name;
    for (const auto& [k, v] : ctx.counters()) r.counters[info.name + "." + k] += v;
  }
  return r;
}

int CountOps(const Graph& g, const std::string& op) {
  return static_cast<int>(
      std::count_if(g.nodes.begin(), g.nodes.end(), [&](const Node& n) { return n.op_type == op; }));
}

std::multiset<std::string> OpTypes(const Graph& g) {
  std::multiset<std::string> ops;
  for (const auto& n : g.nodes) ops.insert(n.op_type);
  return ops;
}

std::vector<Tensor> TestImages(const Model& model) {
  const Dataset data =
      Dataset::Open(std::string(COMPRESS_TEST_DATA_DIR) + "/fmnist-test", ModelInputSpecs(model));
  return data.ReadSamples(0, kImages);
}

double MaxAbsDiff(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (size_t k = 0; k < std::min(a.size(), b.size()); ++k) {
    EXPECT_EQ(a[k].dims(), b[k].dims());
    EXPECT_EQ(a[k].dtype(), DType::kFloat);
    EXPECT_EQ(b[k].dtype(), DType::kFloat);
    if (a[k].dims() != b[k].dims() || a[k].dtype() != DType::kFloat || b[k].dtype() != DType::kFloat)
      return INFINITY;
    for (int64_t i = 0; i < a[k].numel(); ++i) {
      worst = std::max(worst, static_cast<double>(std::fabs(a[k].data<float>()[i] - b[k].data<float>()[i])));
    }
  }
  return worst;
}

std::vector<Tensor> RunOurs(const Model& model, const std::vector<Tensor>& inputs) {
  Executor exec(model);
  return exec.Run(inputs);
}

// Runs the model file in ONNX Runtime on `images` and reads its outputs back.
std::vector<Tensor> RunInOrt(const std::string& model_path, const std::string& images_npy, size_t num_outputs,
                             const std::string& out_dir) {
  const auto r = testing::RunOrt({"run", model_path, out_dir, images_npy});
  EXPECT_EQ(r.exit_code, 0) << model_path << ": " << r.err;
  std::vector<Tensor> out;
  if (r.exit_code != 0) return out;
  for (size_t k = 0; k < num_outputs; ++k)
    out.push_back(ReadNpy(out_dir + "/output_" + std::to_string(k) + ".npy"));
  return out;
}

TEST(CleanupModels, EverySampleModelComputesTheSameAfterCleanup) {
  testing::TempDir tmp;
  int checked = 0;
  for (const auto& sample : SampleModels()) {
    SCOPED_TRACE(sample.path);
    const Model original = LoadModel(sample.path);
    const CleanupResult cleaned = CleanUp(original);
    const Model& m = cleaned.model;

    const std::string out_path = tmp / (sample.name + ".onnx");
    SaveModel(m, out_path);
    const CheckResult check = CheckModelFile(out_path);
    EXPECT_TRUE(check.ok) << check.message;

    const std::vector<Tensor> images = TestImages(original);
    const double ours = MaxAbsDiff(RunOurs(original, images), RunOurs(m, images));
    EXPECT_LE(ours, kCleanupAtol);

    WriteNpy(tmp / "images.npy", images[0]);
    const auto ort_before =
        RunInOrt(sample.path, tmp / "images.npy", original.graph.outputs.size(), tmp / "ort_a");
    const auto ort_after = RunInOrt(out_path, tmp / "images.npy", m.graph.outputs.size(), tmp / "ort_b");
    const double ort = MaxAbsDiff(ort_before, ort_after);
    EXPECT_LE(ort, kCleanupAtol);

    if (InOtherFolder(sample.path)) {
      EXPECT_GT(CountOps(original.graph, "Constant"), 0) << "expected weights in Constant nodes";
      EXPECT_EQ(CountOps(m.graph, "Constant"), 0);
    }
    std::cout << "[cleanup] " << sample.name << ": " << original.graph.nodes.size() << " -> "
              << m.graph.nodes.size() << " nodes, " << original.graph.initializers.size() << " -> "
              << m.graph.initializers.size() << " initializers, max |after - before| ours " << ours
              << ", ONNX Runtime " << ort << "\n";
    std::cout << "[cleanup]   counters:";
    for (const auto& [k, v] : cleaned.counters) std::cout << " " << k << "=" << v;
    std::cout << "\n";
    ++checked;
  }
  EXPECT_GE(checked, 7);
}

TEST(CleanupModels, CnnBnLosesEveryBatchNormalization) {
  testing::TempDir tmp;
  const std::string path = SourcePath("models/cnn_bn.onnx");
  const Model original = LoadModel(path);
  ASSERT_EQ(CountOps(original.graph, "BatchNormalization"), kBatchNormsInCnnBn);

  Model folded = original;
  const PassInfo* info = FindPass("fold_batch_norm");
  ASSERT_NE(info, nullptr);
  PassContext ctx;
  info->create(ValidatePassOptions(*info, nlohmann::json::object(), "cleanup test"))->Run(folded, ctx);
  VerifyModel(folded);
  EXPECT_EQ(ctx.counters().at("folded"), kBatchNormsInCnnBn);
  EXPECT_EQ(ctx.counters().count("kept"), 0u);
  EXPECT_EQ(CountOps(folded.graph, "BatchNormalization"), 0);
  EXPECT_EQ(folded.graph.nodes.size(), original.graph.nodes.size() - kBatchNormsInCnnBn);

  const std::string folded_path = tmp / "cnn_bn_folded.onnx";
  SaveModel(folded, folded_path);
  const CheckResult check = CheckModelFile(folded_path);
  EXPECT_TRUE(check.ok) << check.message;

  const std::vector<Tensor> images = TestImages(original);
  const double ours = MaxAbsDiff(RunOurs(original, images), RunOurs(folded, images));
  EXPECT_LE(ours, kCleanupAtol);
  WriteNpy(tmp / "images.npy", images[0]);
  const double ort = MaxAbsDiff(RunInOrt(path, tmp / "images.npy", 1, tmp / "ort_a"),
                                RunInOrt(folded_path, tmp / "images.npy", 1, tmp / "ort_b"));
  EXPECT_LE(ort, kCleanupAtol);
  std::cout << "[cleanup] cnn_bn BatchNormalization folding: max |folded - original| ours " << ours
            << ", ONNX Runtime " << ort << "\n";

  // cnn.onnx is the same network with BatchNormalization folded by the exporter: after the full clean-up
  // cnn_bn.onnx has exactly its structure.
  const Model cnn = LoadModel(SourcePath("models/cnn.onnx"));
  const CleanupResult cleaned = CleanUp(original);
  EXPECT_EQ(OpTypes(cleaned.model.graph), OpTypes(cnn.graph));
  EXPECT_EQ(cleaned.model.graph.initializers.size(), cnn.graph.initializers.size());
}

}  // namespace
}  // namespace compress
