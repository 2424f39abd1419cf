// The report's cost sections: MACs before/after, the per-layer pruning table fed from a pass's
// details["layers"], and the zstd size of files (checked by decompressing with libzstd).
#include <gtest/gtest.h>
#include <zstd.h>

#include <random>

#include "compress/io/onnx_io.h"
#include "compress/report/report.h"
#include "compress/report/zstd_size.h"
#include "support/test_support.h"

namespace compress {
namespace {

using nlohmann::json;
using testing::SourcePath;
using testing::TempDir;

bool Has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::string Decompress(const std::string& frame) {
  const unsigned long long size = ZSTD_getFrameContentSize(frame.data(), frame.size());
  EXPECT_NE(size, ZSTD_CONTENTSIZE_ERROR);
  EXPECT_NE(size, ZSTD_CONTENTSIZE_UNKNOWN);
  std::string out(static_cast<size_t>(size), '\0');
  const size_t got = ZSTD_decompress(out.data(), out.size(), frame.data(), frame.size());
  EXPECT_FALSE(ZSTD_isError(got)) << ZSTD_getErrorName(got);
  out.resize(ZSTD_isError(got) ? 0 : got);
  return out;
}

TEST(ZstdSize, SizeIsTheFrameThatDecompressesToTheFile) {
  TempDir dir;
  // 1 MiB + 5 bytes (a full 1 MiB read and a partial last one): half repetitive text, half random bytes.
  std::string data;
  std::mt19937 rng(7);
  while (data.size() < (size_t{1} << 20) + 5) {
    data += "weights weights weights ";
    for (int i = 0; i < 24; ++i) data.push_back(static_cast<char>(rng() & 0xff));
  }
  data.resize((size_t{1} << 20) + 5);
  testing::WriteBytes(dir / "f.bin", data);
  std::string frame;
  const int64_t size = ZstdCompressedSize(dir / "f.bin", kZstdLevel, 1, &frame);
  EXPECT_EQ(size, static_cast<int64_t>(frame.size()));
  EXPECT_EQ(Decompress(frame), data);
  EXPECT_LT(size, static_cast<int64_t>(data.size()));
  // The same bytes with two workers: the output does not depend on the thread count.
  std::string frame2;
  EXPECT_EQ(ZstdCompressedSize(dir / "f.bin", kZstdLevel, 2, &frame2), size);
  EXPECT_EQ(frame2, frame);
  // A model file and its sum with another file.
  std::string model_frame;
  const int64_t model_size = ZstdCompressedSize(SourcePath("models/cnn.onnx"), kZstdLevel, 1, &model_frame);
  EXPECT_EQ(Decompress(model_frame), testing::ReadBytes(SourcePath("models/cnn.onnx")));
  EXPECT_EQ(ZstdCompressedSize({SourcePath("models/cnn.onnx"), dir / "f.bin"}, kZstdLevel, 1), model_size + size);
  // An empty file is one empty frame.
  testing::WriteBytes(dir / "empty", "");
  std::string empty_frame;
  const int64_t empty_size = ZstdCompressedSize(dir / "empty", kZstdLevel, 1, &empty_frame);
  EXPECT_EQ(empty_size, static_cast<int64_t>(empty_frame.size()));
  EXPECT_GT(empty_size, 0);
  EXPECT_EQ(Decompress(empty_frame), "");
  EXPECT_TRUE(Has(testing::ErrorOf([&] { ZstdCompressedSize(dir / "missing"); }), dir / "missing"));
}

// A synthetic run of pruning passes on the CNN: `prune` pruned two weights, `prune_channels` changed the
// channels of a node the output no longer has under that name.
TEST(ReportCost, PruningLayersAreRenderedWithMacs) {
  const Model before = LoadModel(SourcePath("models/cnn.onnx"));
  Model after = before;
  for (auto& n : after.graph.nodes) {
    if (n.name == "/conv3/conv3.0/Conv") n.name = "renamed_conv3";
  }
  ReportInput in;
  in.input_path = "in.onnx";
  in.output_path = "out.onnx";
  in.before = &before;
  in.after = &after;
  in.include_timings = false;
  PassRun prune;
  prune.pass = "prune";
  prune.details["layers"] = json::array(
      {{{"node", "/conv2/conv2.0/Conv"}, {"weight", "conv2.w"}, {"op", "Conv"}, {"method", "wanda"},
        {"pattern", "2:4"}, {"sparsity_before", 0.0}, {"sparsity_after", 0.5}, {"params", 18432}},
       {{"node", "/fc/Gemm"}, {"weight", "fc.w"}, {"op", "Gemm"}, {"method", "magnitude"},
        {"pattern", "unstructured"}, {"sparsity_before", 0.25}, {"sparsity_after", 0.75}, {"params", 640}}});
  PassRun channels;
  channels.pass = "prune_channels";
  channels.details["layers"] = json::array(
      {{{"node", "/conv3/conv3.0/Conv"}, {"op", "Conv"}, {"method", "l2"}, {"channels_before", 64}, {"channels_after", 32}}});
  PassRun other;
  other.pass = "fp16";
  other.details["clamped"] = json::array();
  in.passes = {prune, channels, other};
  const json r = BuildReport(in);

  EXPECT_EQ(r["macs"]["before"]["total"], 5902592);
  EXPECT_EQ(r["macs"]["after"]["total"], 5902592);
  EXPECT_EQ(r["macs"]["ratio"], 1.0);
  EXPECT_TRUE(r["zstd"].is_null());
  ASSERT_EQ(r["pruning"].size(), 3u);
  const json& p0 = r["pruning"][0];
  EXPECT_EQ(p0["pass"], "prune");
  EXPECT_EQ(p0["node"], "/conv2/conv2.0/Conv");
  EXPECT_EQ(p0["sparsity_after"], 0.5);
  EXPECT_EQ(p0["pattern"], "2:4");
  EXPECT_EQ(p0["macs_before"], 3612672);
  EXPECT_EQ(p0["macs_after"], 3612672);
  EXPECT_EQ(p0["status"], "kept");
  EXPECT_EQ(r["pruning"][1]["macs_before"], 640);
  const json& p2 = r["pruning"][2];
  EXPECT_EQ(p2["pass"], "prune_channels");
  EXPECT_EQ(p2["channels_after"], 32);
  EXPECT_EQ(p2["macs_before"], 1806336);
  EXPECT_TRUE(p2["macs_after"].is_null());
  EXPECT_EQ(p2["status"], "renamed or removed");

  const std::string md = FormatReportMarkdown(r);
  EXPECT_TRUE(Has(md, "## MACs")) << md;
  EXPECT_TRUE(Has(md, "| MACs | 5,902,592 | 5,902,592 |")) << md;
  EXPECT_TRUE(Has(md, "| parameters | 57,770 | 57,770 |")) << md;
  EXPECT_TRUE(Has(md, "| prune | `/conv2/conv2.0/Conv` | Conv | `conv2.w` | wanda | 0.00% → 50.00% zeros (2:4) | "
                      "18,432 | 3,612,672 | 3,612,672 |")) << md;
  EXPECT_TRUE(Has(md, "| prune | `/fc/Gemm` | Gemm | `fc.w` | magnitude | 25.00% → 75.00% zeros (unstructured) | 640 | "
                      "640 | 640 |")) << md;
  EXPECT_TRUE(Has(md, "| prune_channels | `/conv3/conv3.0/Conv` (renamed or removed) | Conv | — | l2 | 64 → 32 channels "
                      "| — | 1,806,336 | — |")) << md;
  const std::string summary = FormatReportSummary(r);
  EXPECT_TRUE(Has(summary, "MACs        5,902,592 -> 5,902,592 per sample (100.00% kept)\n")) << summary;
  EXPECT_TRUE(Has(summary, "pruning     3 layers")) << summary;
}

TEST(ReportCost, ZstdSectionFromFiles) {
  const Model m = LoadModel(SourcePath("models/mlp.onnx"));
  ReportInput in;
  in.before = &m;
  in.after = &m;
  in.include_timings = false;
  in.input_files = {SourcePath("models/mlp.onnx")};
  in.output_files = {SourcePath("models/cnn.onnx")};
  const json r = BuildReport(in);
  const int64_t zi = ZstdCompressedSize(SourcePath("models/mlp.onnx"), kZstdLevel, 1);
  const int64_t zo = ZstdCompressedSize(SourcePath("models/cnn.onnx"), kZstdLevel, 1);
  EXPECT_EQ(r["zstd"]["level"], 19);
  EXPECT_EQ(r["zstd"]["input_bytes"], zi);
  EXPECT_EQ(r["zstd"]["output_bytes"], zo);
  EXPECT_DOUBLE_EQ(r["zstd"]["ratio"].get<double>(), static_cast<double>(zi) / static_cast<double>(zo));
  EXPECT_EQ(r["macs"]["before"]["total"], 234752);
  EXPECT_TRUE(r["pruning"].empty());
  EXPECT_TRUE(Has(FormatReportSummary(r), "zstd -19    ")) << FormatReportSummary(r);
  EXPECT_TRUE(Has(FormatReportMarkdown(r), "Compressed with zstd -19")) << FormatReportMarkdown(r);
}

// Over the size limit ("--zstd-size auto"), the sizes are not measured and the reason names the larger
// side, its bytes and the limit.
TEST(ReportCost, ZstdSkippedOverTheLimit) {
  const Model m = LoadModel(SourcePath("models/mlp.onnx"));
  ReportInput in;
  in.before = &m;
  in.after = &m;
  in.include_timings = false;
  in.input_files = {SourcePath("models/mlp.onnx")};    // 941,519 bytes
  in.output_files = {SourcePath("models/cnn.onnx")};   // 233,725 bytes
  in.zstd_max_bytes = 500000;
  const json r = BuildReport(in);
  EXPECT_EQ(r["zstd"]["level"], 19);
  EXPECT_FALSE(r["zstd"].contains("input_bytes"));
  EXPECT_EQ(r["zstd"]["skipped"], "the input's files total 941,519 bytes, over the 500,000 measured by default "
                                  "(--zstd-size always)");
  EXPECT_TRUE(Has(FormatReportSummary(r), "zstd -19    not measured: the input's files total 941,519 bytes"))
      << FormatReportSummary(r);
  EXPECT_TRUE(Has(FormatReportMarkdown(r), "Size compressed with zstd -19 not measured: ")) << FormatReportMarkdown(r);
  in.zstd_max_bytes = 941519;  // at the limit: measured
  EXPECT_EQ(BuildReport(in)["zstd"]["input_bytes"], ZstdCompressedSize(SourcePath("models/mlp.onnx"), kZstdLevel, 1));
}

}  // namespace
}  // namespace compress
