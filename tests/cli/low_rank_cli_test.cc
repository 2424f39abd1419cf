// Low-rank factorization through the binary: usage errors (exit 2) before anything is loaded, a budget no
// rank can meet (exit 5, nothing written), a recipe file, and `compress sensitivity --low-rank`.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "compress/io/onnx_io.h"
#include "support/test_support.h"

namespace compress {
namespace {

using nlohmann::json;
using testing::RunCompress;
using testing::SourcePath;
using testing::TempDir;

bool Has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// One line on stderr, naming what was wrong.
void ExpectOneLine(const testing::CommandResult& r, const std::string& part) {
  EXPECT_TRUE(Has(r.err, part)) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

TEST(LowRankCli, UsageErrorsExitTwoAndWriteNothing) {
  TempDir dir;
  const std::string mlp = SourcePath("models/mlp.onnx"), out = dir / "x.onnx";
  struct Case {
    std::vector<std::string> args;
    std::string says;
  };
  const std::vector<Case> cases = {
      {{"--low-rank", "1.5"}, "--low-rank must be a fraction in (0, 1)"},
      {{"--low-rank", "0"}, "--low-rank must be a fraction in (0, 1)"},
      {{"--low-rank-energy", "1.2"}, "--low-rank-energy must be a fraction in (0, 1]"},
      {{"--low-rank-params", "0"}, "--low-rank-params must be a fraction in (0, 1)"},
      {{"--low-rank-macs", "-1"}, "--low-rank-macs must be a fraction in (0, 1)"},
      {{"--low-rank", "0.5", "--low-rank-params", "0.5"}, "are alternatives"},
      {{"--low-rank", "0.5", "--low-rank-method", "qr"}, "--low-rank-method must be svd, whitened or auto"},
      {{"--low-rank", "0.5", "--low-rank-method", "whitened"}, "needs --calib"},
      {{"--low-rank", "0.5", "--rank-multiple", "0"}, "--rank-multiple must be in [1, 4096]"},
      {{"--rank-multiple", "4"}, "only apply with --low-rank"},
      {{"--low-rank-exclude-nodes", "a"}, "only apply with --low-rank"},
  };
  for (const auto& c : cases) {
    std::vector<std::string> args = {mlp, "-o", out};
    args.insert(args.end(), c.args.begin(), c.args.end());
    const auto r = RunCompress(args);
    EXPECT_EQ(r.exit_code, 2) << c.says << ": " << r.err;
    ExpectOneLine(r, c.says);
    EXPECT_FALSE(std::filesystem::exists(out)) << c.says;
  }
}

TEST(LowRankCli, UnreachableBudgetExitsFiveNamingTheReachableFraction) {
  TempDir dir;
  const std::string out = dir / "x.onnx";
  const auto r = RunCompress({SourcePath("models/mlp.onnx"), "--low-rank-params", "0.01", "-o", out});
  EXPECT_EQ(r.exit_code, 5) << r.err;
  ExpectOneLine(r, "parameters budget 0.0100 cannot be met");
  EXPECT_TRUE(Has(r.err, "keeps 0.")) << r.err;
  EXPECT_FALSE(std::filesystem::exists(out));
}

TEST(LowRankCli, RecipeFileWithEveryOption) {
  TempDir dir;
  const std::string recipe = dir / "lr.yaml", out = dir / "x.onnx", rep = dir / "r.json";
  testing::WriteBytes(recipe,
                      "passes:\n"
                      "  - pass: low_rank\n"
                      "    options:\n"
                      "      energy: 0.9\n"
                      "      method: svd\n"
                      "      rank_multiple: 4\n"
                      "      keep_output_layers: true\n"
                      "      exclude_nodes: [/net/net.3/Gemm]\n");
  const auto r = RunCompress({SourcePath("models/mlp.onnx"), "--recipe", recipe, "-o", out, "--report", rep, "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json doc = json::parse(testing::ReadBytes(rep));
  // Only the first hidden layer: the second is excluded, the classifier is an output layer.
  ASSERT_EQ(doc["low_rank"].size(), 1u);
  const json& row = doc["low_rank"][0];
  EXPECT_EQ(row["node"], "/net/net.1/Gemm");
  EXPECT_EQ(row["method"], "svd");
  EXPECT_EQ(row["rank"].get<int64_t>() % 4, 0);
  EXPECT_TRUE(row["sqnr_db"].is_null());  // no calibration data: only the weight's SQNR
  EXPECT_TRUE(row["weight_sqnr_db"].is_number());
  // 90 % of the energy keeps at least 10 dB of weight SQNR (the error is the remaining 10 % at most).
  EXPECT_GE(row["weight_sqnr_db"].get<double>(), 10.0 - 1e-9);
  const Model m = LoadModel(out);
  EXPECT_EQ(testing::CheckerAndTypeErrors(m), "");
  int gemms = 0;
  for (const auto& n : m.graph.nodes) gemms += n.op_type == "Gemm";
  EXPECT_EQ(gemms, 4);
}

TEST(LowRankCli, SameCommandSameBytesWhateverTheThreads) {
  TempDir dir;
  std::vector<std::string> bytes;
  for (const std::string threads : {"1", "2"}) {
    const std::string out = dir / ("t" + threads + ".onnx");
    const auto r = RunCompress({SourcePath("models/mlp.onnx"), "--low-rank-params", "0.4", "--calib",
                                SourcePath("models/calib"), "--threads", threads, "-o", out, "-q"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    bytes.push_back(testing::ReadBytes(out));
  }
  EXPECT_EQ(bytes[0], bytes[1]);
  EXPECT_GT(bytes[0].size(), 1000u);
}

TEST(LowRankCli, SensitivityOneEntryPerFactorizableLayer) {
  TempDir dir;
  const std::string out = dir / "sens.json";
  const auto r = RunCompress({"sensitivity", SourcePath("models/mlp.onnx"), "--calib", SourcePath("models/calib"),
                              "--low-rank", "0.25", "--json", out, "--threads", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json doc = json::parse(testing::ReadBytes(out));
  EXPECT_EQ(doc["pass"], "low_rank");
  EXPECT_EQ(doc["options"]["ratio"], 0.25);
  // The two hidden layers (the classifier is an output layer, kept whole).
  ASSERT_EQ(doc["entries"].size(), 2u);
  for (const auto& e : doc["entries"]) {
    const std::string node = e["nodes"][0].get<std::string>();
    EXPECT_EQ(e["rank"], node == "/net/net.1/Gemm" ? 48 : 16) << node;
    EXPECT_EQ(e["scheme"], "matrix");
    EXPECT_TRUE(e["layer_sqnr_db"].is_number());
    // Parameters removed: the weight minus both factors.
    const int64_t k = node == "/net/net.1/Gemm" ? 784 : 256, n = node == "/net/net.1/Gemm" ? 256 : 128;
    const int64_t rank = e["rank"].get<int64_t>();
    EXPECT_EQ(e["params_removed"], k * n - rank * (k + n)) << node;
    EXPECT_GT(e["macs_removed"].get<int64_t>(), 0);
    EXPECT_LT(e["agreement"].get<double>(), 1.0);
  }
  EXPECT_TRUE(Has(r.out, "low rank    low_rank ratio 0.25")) << r.out;
}

}  // namespace
}  // namespace compress
