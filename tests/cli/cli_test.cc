// The command line as users and scripts see it: help, version, exit codes, stdout vs stderr, outputs.

#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "compress/io/onnx_io.h"
#include "compress/version.h"
#include "support/test_support.h"

namespace compress {
namespace {

using testing::RunCompress;
using testing::TempDir;

bool Has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

TEST(Cli, HelpAndVersion) {
  auto r = RunCompress({"--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_TRUE(Has(r.out, "inspect")) << r.out;
  EXPECT_TRUE(Has(r.out, "--output")) << r.out;
  EXPECT_TRUE(Has(r.out, "--external-data")) << r.out;
  r = RunCompress({"inspect", "--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_TRUE(Has(r.out, "--json")) << r.out;
  r = RunCompress({"--version"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, std::string("compress ") + COMPRESS_VERSION + "\n");
}

TEST(Cli, UsageErrorsExitTwoWithOneLine) {
  for (const std::vector<std::string>& args : {std::vector<std::string>{"--bogus"}, std::vector<std::string>{},
                                               std::vector<std::string>{"inspect"}}) {
    const auto r = RunCompress(args);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_TRUE(r.out.empty());
  }
  EXPECT_TRUE(Has(RunCompress({"--bogus"}).err, "--bogus"));
}

TEST(Cli, RewriteIsFaithfulAndByteIdentical) {
  TempDir dir;
  const Model m = testing::TinyModel();
  SaveModel(m, dir / "in.onnx");
  const auto r1 = RunCompress({dir / "in.onnx", "-o", dir / "a.onnx", "-q"});
  ASSERT_EQ(r1.exit_code, 0) << r1.err;
  EXPECT_TRUE(r1.err.empty()) << "-q must keep stderr silent: " << r1.err;
  EXPECT_TRUE(Has(r1.out, "output      " + (dir / "a.onnx"))) << r1.out;
  EXPECT_TRUE(Has(r1.out, "ONNX checker passes")) << r1.out;
  const auto r2 = RunCompress({dir / "in.onnx", "-o", dir / "b.onnx", "-q"});
  ASSERT_EQ(r2.exit_code, 0);
  EXPECT_EQ(testing::ReadBytes(dir / "a.onnx"), testing::ReadBytes(dir / "b.onnx"));
  const Model back = LoadModel(dir / "a.onnx");
  ASSERT_EQ(back.graph.nodes.size(), m.graph.nodes.size());
  for (size_t i = 0; i < m.graph.initializers.size(); ++i) {
    EXPECT_TRUE(back.graph.initializers[i].SameContent(m.graph.initializers[i]));
  }
  // No temporary files are left next to the outputs.
  EXPECT_EQ(testing::ListDir(dir.path()), (std::vector<std::string>{"a.onnx", "b.onnx", "in.onnx"}));
}

TEST(Cli, DefaultOutputNameAndExternalData) {
  TempDir dir;
  SaveModel(testing::TinyModel(), dir / "net.onnx");
  auto r = RunCompress({dir / "net.onnx", "--no-optimize"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(testing::ReadBytes(dir / "net.rewritten.onnx").size() > 0);

  r = RunCompress({dir / "net.onnx", "-o", dir / "ext.onnx", "--external-data", "--external-data-threshold", "16",
                   "--no-optimize"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // W (48 bytes) crosses the threshold, b (12 bytes) does not.
  EXPECT_EQ(testing::ReadBytes(dir / "ext.onnx.data").size(), 48u);
  EXPECT_TRUE(CheckModelFile(dir / "ext.onnx").ok);
  EXPECT_TRUE(LoadModel(dir / "ext.onnx").graph.FindInitializer("W")->SameContent(
      *testing::TinyModel().graph.FindInitializer("W")));
  // Re-writing a model that has external data back to one self-contained file.
  r = RunCompress({dir / "ext.onnx", "-o", dir / "inline.onnx", "--no-optimize"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(testing::ReadBytes(dir / "inline.onnx"), testing::ReadBytes(dir / "net.rewritten.onnx"));
}

TEST(Cli, OverwriteOnlyWhenAsked) {
  TempDir dir;
  SaveModel(testing::TinyModel(), dir / "m.onnx");
  EXPECT_EQ(RunCompress({dir / "m.onnx", "-o", dir / "m.onnx"}).exit_code, 2);
  EXPECT_EQ(RunCompress({dir / "m.onnx", "-o", dir / "m.onnx", "--overwrite"}).exit_code, 0);
}

TEST(Cli, InspectTextAndJson) {
  TempDir dir;
  SaveModel(testing::TinyModel(), dir / "m.onnx");
  auto r = RunCompress({"inspect", dir / "m.onnx"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(Has(r.out, "parameters   15")) << r.out;
  EXPECT_TRUE(Has(r.out, "x: float32[N,4]")) << r.out;
  EXPECT_TRUE(Has(r.out, "ONNX checker passes")) << r.out;

  r = RunCompress({"inspect", "--json", dir / "m.onnx"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto doc = nlohmann::json::parse(r.out);
  EXPECT_EQ(doc["schema"], "compress.inspect/1");
  EXPECT_EQ(doc["parameters"], 15);
  EXPECT_EQ(doc["ir_version"], 8);
  EXPECT_EQ(doc["opsets"][0]["version"], 17);
  EXPECT_EQ(doc["op_types"], (nlohmann::json{{"Add", 1}, {"MatMul", 1}, {"Relu", 1}}));
  EXPECT_EQ(doc["inputs"][0]["shape"], (nlohmann::json{"N", 4}));
  EXPECT_EQ(doc["bytes_by_dtype"]["float32"], 60);
  EXPECT_EQ(doc["largest_tensors"][0]["name"], "W");
  EXPECT_EQ(doc["largest_tensors"][0]["bytes"], 48);
  EXPECT_EQ(doc["checker"]["ok"], true);
}

TEST(Cli, InspectCountsConstantNodeWeightsAndReportsCheckerFailure) {
  TempDir dir;
  Model m = testing::TinyModel();
  // Weights held in Constant nodes, as some exporters write them.
  Node c{"w_const", "Constant", "", {}, {"W"}, {}, ""};
  c.attributes.push_back(Attribute::FromTensor("value", *m.graph.FindInitializer("W")));
  Node s{"s_const", "Constant", "", {}, {"s"}, {}, ""};
  s.attributes.push_back(Attribute::Floats("value_floats", {1.0f, 2.0f}));
  m.graph.initializers.erase(m.graph.initializers.begin());
  m.graph.nodes.insert(m.graph.nodes.begin(), {c, s});
  SaveModel(m, dir / "m.onnx");
  auto r = RunCompress({"inspect", "--json", dir / "m.onnx"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto doc = nlohmann::json::parse(r.out);
  EXPECT_EQ(doc["parameters"], 12 + 3 + 2);
  EXPECT_EQ(doc["largest_tensors"][0]["kind"], "constant");

  // A model compress loads but the ONNX checker rejects: before IR version 4 every initializer must also
  // be a graph input.
  Model bad = testing::TinyModel();
  bad.ir_version = 3;
  SaveModel(bad, dir / "bad.onnx");
  r = RunCompress({"inspect", "--json", dir / "bad.onnx"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  doc = nlohmann::json::parse(r.out);
  EXPECT_EQ(doc["checker"]["ok"], false);
  EXPECT_TRUE(Has(doc["checker"]["message"].get<std::string>(), "W in initializer but not in graph input"))
      << doc["checker"];

  // A node the operator schema rejects (Relu has no attribute "alpha") is refused when loading.
  Model invalid = testing::TinyModel();
  invalid.graph.nodes[0].attributes.push_back(Attribute::Float("alpha", 1.0f));
  SaveModel(invalid, dir / "invalid.onnx");
  r = RunCompress({"inspect", "--json", dir / "invalid.onnx"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_TRUE(Has(r.err, "node 'relu' (Relu): unknown attribute 'alpha'")) << r.err;
}

}  // namespace
}  // namespace compress
