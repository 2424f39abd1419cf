// `compress sensitivity`: the fidelity drop when one layer (--prune) or one channel group
// (--prune-channels) is pruned alone, measured on the calibration slice through the binary.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "support/test_support.h"

namespace compress {
namespace {

using nlohmann::json;
using testing::RunCompress;
using testing::SourcePath;
using testing::TempDir;

bool Has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Entries are sorted by drop: agreement ascending, then SQNR ascending (null, an unchanged output, last).
void ExpectSortedByDrop(const json& entries) {
  for (size_t i = 1; i < entries.size(); ++i) {
    const double a0 = entries[i - 1]["agreement"].get<double>(), a1 = entries[i]["agreement"].get<double>();
    EXPECT_LE(a0, a1) << "entry " << i;
    if (a0 == a1 && !entries[i - 1]["sqnr_db"].is_null() && !entries[i]["sqnr_db"].is_null()) {
      EXPECT_LE(entries[i - 1]["sqnr_db"].get<double>(), entries[i]["sqnr_db"].get<double>()) << "entry " << i;
    }
    if (entries[i - 1]["sqnr_db"].is_null()) {
      EXPECT_TRUE(entries[i]["sqnr_db"].is_null() || a0 < a1) << "entry " << i;
    }
  }
}

void ExpectValuesInRange(const json& e) {
  const double agreement = e["agreement"].get<double>();
  EXPECT_GE(agreement, 0.0);
  EXPECT_LE(agreement, 1.0);
  const double cosine = e["cosine"].get<double>();
  EXPECT_GE(cosine, -1.0);
  EXPECT_LE(cosine, 1.0 + 1e-9);
  ASSERT_TRUE(e["sqnr_db"].is_number()) << e;  // pruning changes every output
  const double change = e["top1_change_pts"].get<double>();
  EXPECT_GE(change, -100.0);
  EXPECT_LE(change, 100.0);
  EXPECT_GE(e["top1"].get<double>(), 0.0);
  EXPECT_LE(e["top1"].get<double>(), 1.0);
}

TEST(SensitivityCli, MlpOneEntryPerPrunableLayer) {
  TempDir dir;
  const std::string out = dir / "sens.json";
  const auto r = RunCompress({"sensitivity", SourcePath("models/mlp.onnx"), "--calib", SourcePath("models/calib"),
                              "--json", out, "--threads", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json doc = json::parse(testing::ReadBytes(out));
  EXPECT_EQ(doc["schema"], "compress.sensitivity/1");
  EXPECT_EQ(doc["model"], SourcePath("models/mlp.onnx"));
  EXPECT_EQ(doc["data"], SourcePath("models/calib"));
  EXPECT_EQ(doc["pass"], "prune");
  EXPECT_EQ(doc["options"]["sparsity"], 0.5);  // the default without --prune/--prune-channels
  EXPECT_EQ(doc["options"]["method"], "auto");  // wanda: calibration data is at hand
  EXPECT_EQ(doc["samples"], 256);
  EXPECT_EQ(doc["labelled"], true);
  EXPECT_GT(doc["top1"].get<double>(), 0.8);  // the MLP on its calibration slice
  EXPECT_EQ(doc["macs"], 234752);
  EXPECT_EQ(doc["params"], 235146);

  // One entry per Gemm with a constant weight, exactly.
  const json& entries = doc["entries"];
  ASSERT_EQ(entries.size(), 3u);
  std::map<std::string, json> by_node;
  for (const auto& e : entries) {
    ASSERT_EQ(e["nodes"].size(), 1u) << e;
    by_node[e["nodes"][0].get<std::string>()] = e;
    EXPECT_EQ(e["key"], e["nodes"][0]);
    EXPECT_EQ(e["op_types"], json::array({"Gemm"}));
    EXPECT_EQ(e["macs_removed"], 0);  // unstructured zeros do not change the dense count
    ExpectValuesInRange(e);
  }
  ASSERT_EQ(by_node.count("/net/net.1/Gemm"), 1u);
  ASSERT_EQ(by_node.count("/net/net.3/Gemm"), 1u);
  ASSERT_EQ(by_node.count("/net/net.5/Gemm"), 1u);
  EXPECT_EQ(by_node["/net/net.1/Gemm"]["params"], 256 * 784);
  EXPECT_EQ(by_node["/net/net.3/Gemm"]["params"], 128 * 256);
  EXPECT_EQ(by_node["/net/net.5/Gemm"]["params"], 10 * 128);
  EXPECT_EQ(by_node["/net/net.1/Gemm"]["macs"], 200704);
  EXPECT_EQ(by_node["/net/net.3/Gemm"]["macs"], 32768);
  EXPECT_EQ(by_node["/net/net.5/Gemm"]["macs"], 1280);
  // Half of every output row's weights (wanda compares within a row; every row length here is even).
  EXPECT_EQ(by_node["/net/net.1/Gemm"]["params_removed"], 256 * 784 / 2);
  EXPECT_EQ(by_node["/net/net.3/Gemm"]["params_removed"], 128 * 256 / 2);
  EXPECT_EQ(by_node["/net/net.5/Gemm"]["params_removed"], 10 * 128 / 2);
  ExpectSortedByDrop(entries);

  // The table: a header and one row per layer, in the JSON's order; no progress bar off a terminal.
  EXPECT_TRUE(Has(r.out, "agreement")) << r.out;
  size_t last = 0;
  for (const auto& e : entries) {
    const size_t at = r.out.find(e["nodes"][0].get<std::string>());
    ASSERT_NE(at, std::string::npos) << r.out;
    EXPECT_GT(at, last);
    last = at;
  }
  EXPECT_FALSE(Has(r.err, "sensitivity")) << r.err;
}

TEST(SensitivityCli, CnnOneEntryPerChannelGroup) {
  TempDir dir;
  const std::string out = dir / "sens.json";
  const auto r = RunCompress({"sensitivity", SourcePath("models/cnn.onnx"), "--calib", SourcePath("models/calib"),
                              "--prune-channels", "0.5", "-o", out, "--limit", "64", "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json doc = json::parse(testing::ReadBytes(out));
  EXPECT_EQ(doc["schema"], "compress.sensitivity/1");
  EXPECT_EQ(doc["pass"], "prune_channels");
  EXPECT_EQ(doc["options"]["ratio"], 0.5);
  EXPECT_EQ(doc["samples"], 64);
  EXPECT_EQ(doc["macs"], 5902592);
  // Three groups: the stem joined with the depthwise and pointwise convolutions by the residual Add,
  // conv2, and conv3 (into GlobalAveragePool -> Gemm). The Gemm's outputs reach the graph output.
  const json& entries = doc["entries"];
  ASSERT_EQ(entries.size(), 3u);
  std::map<std::string, json> by_key;
  for (const auto& e : entries) by_key[e["key"].get<std::string>()] = e;
  ASSERT_EQ(by_key.count("/stem/stem.0/Conv"), 1u) << doc.dump(1);
  ASSERT_EQ(by_key.count("/conv2/conv2.0/Conv"), 1u);
  ASSERT_EQ(by_key.count("/conv3/conv3.0/Conv"), 1u);
  const std::set<std::string> stem_nodes(by_key["/stem/stem.0/Conv"]["nodes"].begin(),
                                         by_key["/stem/stem.0/Conv"]["nodes"].end());
  EXPECT_EQ(stem_nodes, (std::set<std::string>{"/stem/stem.0/Conv", "/block/block.0/block.0.0/Conv",
                                               "/block/block.1/block.1.0/Conv"}));
  EXPECT_EQ(by_key["/conv2/conv2.0/Conv"]["nodes"], json::array({"/conv2/conv2.0/Conv"}));
  // conv2 alone at half its channels: its own MACs halve, and conv3 reads half as many channels.
  EXPECT_EQ(by_key["/conv2/conv2.0/Conv"]["macs_removed"], 3612672 / 2 + 1806336 / 2);
  // conv3 at half: its MACs halve, and the Gemm reads 32 features instead of 64.
  EXPECT_EQ(by_key["/conv3/conv3.0/Conv"]["macs_removed"], 1806336 / 2 + 320);
  // conv2 loses 32 of its 64 filters of 32x3x3 plus biases, and conv3 32 of its 64 input channels.
  EXPECT_EQ(by_key["/conv2/conv2.0/Conv"]["params_removed"], 32 * 32 * 9 + 32 + 64 * 32 * 9);
  EXPECT_EQ(by_key["/conv2/conv2.0/Conv"]["channels"],
            json::array({{{"node", "/conv2/conv2.0/Conv"}, {"before", 64}, {"after", 32}}}));
  for (const auto& e : entries) {
    EXPECT_GT(e["macs_removed"].get<int64_t>(), 0) << e;
    ExpectValuesInRange(e);
  }
  ExpectSortedByDrop(entries);
}

TEST(SensitivityCli, UsageErrors) {
  const std::string mlp = SourcePath("models/mlp.onnx");
  const auto no_calib = RunCompress({"sensitivity", mlp});
  EXPECT_EQ(no_calib.exit_code, 2) << no_calib.err;
  EXPECT_TRUE(Has(no_calib.err, "--calib")) << no_calib.err;
  const auto both = RunCompress({"sensitivity", mlp, "--calib", SourcePath("models/calib"), "--prune", "0.5",
                                 "--prune-channels", "0.5"});
  EXPECT_EQ(both.exit_code, 2) << both.err;
  EXPECT_TRUE(Has(both.err, "alternatives")) << both.err;
  const auto range = RunCompress({"sensitivity", mlp, "--calib", SourcePath("models/calib"), "--prune", "1.5"});
  EXPECT_EQ(range.exit_code, 2) << range.err;
  const auto pattern =
      RunCompress({"sensitivity", mlp, "--calib", SourcePath("models/calib"), "--prune-pattern", "5:4"});
  EXPECT_EQ(pattern.exit_code, 2) << pattern.err;
}

TEST(TargetMacsCli, UsageErrors) {
  TempDir dir;
  const std::string cnn = SourcePath("models/cnn.onnx");
  for (const char* bad : {"0", "-0.5", "1.5"}) {
    const auto r = RunCompress({cnn, "--target-macs", bad, "-o", dir / "x.onnx"});
    EXPECT_EQ(r.exit_code, 2) << bad << ": " << r.err;
    EXPECT_TRUE(Has(r.err, "--target-macs must be a fraction in (0, 1]")) << r.err;
  }
  const auto both = RunCompress({cnn, "--target-macs", "0.5", "--prune-channels", "0.5", "-o", dir / "x.onnx"});
  EXPECT_EQ(both.exit_code, 2) << both.err;
  EXPECT_FALSE(std::filesystem::exists(dir / "x.onnx"));
}

TEST(TargetMacsCli, UnreachableTargetNamesTheReachableFraction) {
  TempDir dir;
  const auto r = RunCompress({SourcePath("models/cnn.onnx"), "--target-macs", "0.01", "-o", dir / "x.onnx"});
  EXPECT_EQ(r.exit_code, 5) << r.err;
  EXPECT_TRUE(Has(r.err, "--target-macs 0.0100 cannot be met")) << r.err;
  EXPECT_TRUE(Has(r.err, "the reachable minimum is 0.")) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir / "x.onnx"));
}

TEST(TargetMacsCli, WithoutCalibrationOneRatioByBisection) {
  TempDir dir;
  const auto r = RunCompress(
      {SourcePath("models/cnn.onnx"), "--target-macs", "0.5", "-o", dir / "x.onnx", "--report", dir / "r.json", "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json rep = json::parse(testing::ReadBytes(dir / "r.json"));
  EXPECT_LE(rep["macs"]["after"]["total"].get<int64_t>(), 5902592 / 2);
  json details;
  for (const auto& p : rep["passes"]) {
    if (p["pass"] == "prune_channels") details = p["details"]["target_macs"];
  }
  ASSERT_TRUE(details.is_object()) << rep["passes"].dump(1);
  EXPECT_EQ(details["method"], "uniform");
  EXPECT_EQ(details["macs_before"], 5902592);
  EXPECT_EQ(details["macs_after"], rep["macs"]["after"]["total"]);
  EXPECT_GT(details["ratio"].get<double>(), 0.0);
  EXPECT_LE(details["ratio"].get<double>(), 0.75);
}

}  // namespace
}  // namespace compress
