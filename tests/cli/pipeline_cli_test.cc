// The main command as scripts use it: recipes from flags and files, default output names, reports,
// metadata, and byte-identical results whatever the thread count.

#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "compress/io/onnx_io.h"
#include "compress/report/report.h"
#include "support/test_support.h"

namespace compress {
namespace {

using nlohmann::json;
using testing::ReadBytes;
using testing::RunCompress;
using testing::TempDir;

bool Has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::string Meta(const Model& m, const std::string& key) {
  for (const auto& [k, v] : m.metadata_props) {
    if (k == key) return v;
  }
  return "<missing>";
}

json WithoutTimings(json report) {
  report.erase("timings");
  return report;
}

TEST(PipelineCli, RecipeErrorsComeBeforeTheModelIsRead) {
  TempDir dir;
  testing::WriteBytes(dir / "r.yaml", "passes:\n  - pass: fp16\n    options: {keep_io: true}\n");
  // The model does not exist: the recipe error must be the one reported.
  auto r = RunCompress({dir / "missing.onnx", "--recipe", dir / "r.yaml"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(Has(r.err, "r.yaml: passes[0]: unknown option 'keep_io' for pass 'fp16'")) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  testing::WriteBytes(dir / "u.json", R"({"passes": ["prune_everything"]})");
  r = RunCompress({dir / "missing.onnx", "--recipe", dir / "u.json"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(Has(r.err, "unknown pass 'prune_everything'")) << r.err;
  r = RunCompress({dir / "missing.onnx", "--fp16-block-ops", "Softmax"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_TRUE(Has(r.err, "only apply with --fp16")) << r.err;
  r = RunCompress({dir / "missing.onnx", "--fp16", "--recipe", dir / "u.json"});
  EXPECT_EQ(r.exit_code, 2);
  r = RunCompress({dir / "missing.onnx", "--recipe", dir / "none.yaml"});
  EXPECT_EQ(r.exit_code, 4);
  EXPECT_TRUE(Has(r.err, "none.yaml")) << r.err;
  EXPECT_TRUE(testing::ListDir(dir.path()) == std::vector<std::string>({"r.yaml", "u.json"}));
}

TEST(PipelineCli, DefaultOutputIsNamedAfterTheRecipe) {
  TempDir dir;
  SaveModel(testing::TinyModel(), dir / "tiny.onnx");
  ASSERT_EQ(RunCompress({dir / "tiny.onnx", "-q"}).exit_code, 0);
  ASSERT_EQ(RunCompress({dir / "tiny.onnx", "-q", "--no-optimize"}).exit_code, 0);
  ASSERT_EQ(RunCompress({dir / "tiny.onnx", "-q", "--fp16"}).exit_code, 0);
  testing::WriteBytes(dir / "mine.yaml", "name: half\npasses: [fp16]\n");
  ASSERT_EQ(RunCompress({dir / "tiny.onnx", "-q", "--recipe", dir / "mine.yaml"}).exit_code, 0);
  EXPECT_EQ(testing::ListDir(dir.path()),
            std::vector<std::string>({"mine.yaml", "tiny.fp16.onnx", "tiny.half.onnx", "tiny.onnx",
                                      "tiny.optimized.onnx", "tiny.rewritten.onnx"}));
  // Same passes and options under two recipe names: the models differ only in the recorded recipe.
  const Model a = LoadModel(dir / "tiny.fp16.onnx");
  const Model b = LoadModel(dir / "tiny.half.onnx");
  EXPECT_EQ(json::parse(Meta(a, kMetaRecipe))["passes"], json::parse(Meta(b, kMetaRecipe))["passes"]);
  EXPECT_EQ(json::parse(Meta(b, kMetaRecipe))["name"], "half");
}

TEST(PipelineCli, ReportsAreValidDeterministicAndRecordedInTheModel) {
  TempDir dir;
  const std::string model = testing::SourcePath("models/cnn.onnx");
  const std::string calib = testing::SourcePath("models/calib");
  const std::string input_before = ReadBytes(model);
  std::vector<json> reports;
  std::vector<std::string> models;
  for (const char* threads : {"1", "2"}) {
    const std::string tag = threads;
    const auto r = RunCompress({model, "--fp16", "-o", dir / ("m" + tag + ".onnx"), "--eval", calib, "--report",
                                dir / ("r" + tag + ".json"), "--report-md", dir / ("r" + tag + ".md"), "--threads",
                                threads, "-q"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(Has(r.out, "recipe      fp16 (clean-up + fp16)")) << r.out;
    EXPECT_TRUE(Has(r.out, "accuracy    top-1 ")) << r.out;
    EXPECT_TRUE(Has(r.out, "ONNX checker passes")) << r.out;
    reports.push_back(json::parse(ReadBytes(dir / ("r" + tag + ".json"))));
    models.push_back(ReadBytes(dir / ("m" + tag + ".onnx")));
  }
  EXPECT_EQ(ReadBytes(model), input_before) << "the input must never change";
  EXPECT_EQ(models[0], models[1]) << "the output must not depend on --threads";
  EXPECT_EQ(WithoutTimings(reports[0])["passes"], WithoutTimings(reports[1])["passes"]);
  json a = WithoutTimings(reports[0]), b = WithoutTimings(reports[1]);
  a["output"].erase("path");
  b["output"].erase("path");
  EXPECT_EQ(a, b);

  const json& r = reports[0];
  EXPECT_EQ(r["schema"], "compress.report/1");
  EXPECT_EQ(r["input"]["bytes"].get<int64_t>(), static_cast<int64_t>(input_before.size()));
  EXPECT_EQ(r["output"]["bytes"].get<int64_t>(), static_cast<int64_t>(models[0].size()));
  EXPECT_DOUBLE_EQ(r["size_ratio"].get<double>(),
                   static_cast<double>(input_before.size()) / static_cast<double>(models[0].size()));
  EXPECT_EQ(r["parameters"]["before"]["by_dtype"]["float32"]["parameters"], 57770);
  EXPECT_EQ(r["parameters"]["after"]["by_dtype"]["float16"]["parameters"], 57770);
  EXPECT_EQ(r["evaluation"]["samples"], 256);
  EXPECT_TRUE(r["evaluation"]["labelled"].get<bool>());
  EXPECT_GE(r["evaluation"]["agreement"].get<double>(), 0.99);
  EXPECT_EQ(r["passes"].back()["pass"], "fp16");
  EXPECT_FALSE(r["tensors"].empty());
  for (const auto& t : r["tensors"]) {
    if (t["dtype_before"] == "float32" && t["dtype_after"] == "float16") {
      EXPECT_EQ(t["bytes_after"].get<int64_t>() * 2, t["bytes_before"].get<int64_t>()) << t.dump();
    }
  }

  // The recipe and the data hash are in the output model.
  const Model out = LoadModel(dir / "m1.onnx");
  EXPECT_EQ(json::parse(Meta(out, kMetaRecipe)), r["recipe"]);
  EXPECT_EQ(Meta(out, kMetaEvalSha256), r["evaluation"]["data_sha256"].get<std::string>());

  // Against the documented schema, with a real JSON Schema validator.
  const auto v = testing::RunCommand({"node", testing::SourcePath("tests/ort/validate.js"),
                                      testing::SourcePath("docs/report.schema.json"), dir / "r1.json"});
  EXPECT_EQ(v.exit_code, 0) << v.out << v.err;
  const std::string md = ReadBytes(dir / "r1.md");
  EXPECT_TRUE(Has(md, "## Tensors")) << md;
  EXPECT_TRUE(Has(md, "float32 → float16")) << md;
}

TEST(PipelineCli, ReportWithoutEvaluationAlsoMatchesTheSchema) {
  TempDir dir;
  SaveModel(testing::TinyModel(), dir / "tiny.onnx");
  const auto r = RunCompress({dir / "tiny.onnx", "-o", dir / "o.onnx", "--report", dir / "r.json", "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json report = json::parse(ReadBytes(dir / "r.json"));
  EXPECT_TRUE(report["evaluation"].is_null());
  EXPECT_TRUE(report["timings"]["latency"].is_null());
  const auto v = testing::RunCommand({"node", testing::SourcePath("tests/ort/validate.js"),
                                      testing::SourcePath("docs/report.schema.json"), dir / "r.json"});
  EXPECT_EQ(v.exit_code, 0) << v.out << v.err;
  // A report that breaks the schema is caught: the validator is not a rubber stamp.
  json broken = report;
  broken["size_ratio"] = "large";
  testing::WriteBytes(dir / "broken.json", broken.dump());
  const auto bad = testing::RunCommand({"node", testing::SourcePath("tests/ort/validate.js"),
                                        testing::SourcePath("docs/report.schema.json"), dir / "broken.json"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_TRUE(Has(bad.out, "/size_ratio")) << bad.out;
}

TEST(PipelineCli, EvaluationDataThatDoesNotFitFailsBeforeAnyOutput) {
  TempDir dir;
  SaveModel(testing::TinyModel(), dir / "tiny.onnx");
  // models/calib holds [256,1,28,28] images; the tiny model takes [N,4].
  const auto r = RunCompress({dir / "tiny.onnx", "--fp16", "-o", dir / "o.onnx", "--eval",
                              testing::SourcePath("models/calib")});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_TRUE(Has(r.err, "images.npy")) << r.err;
  EXPECT_EQ(testing::ListDir(dir.path()), std::vector<std::string>({"tiny.onnx"}));
}

}  // namespace
}  // namespace compress
