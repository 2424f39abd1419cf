// `compress compare` and `compress auto` as scripts use them: the table on stdout, the JSON document
// against its schema, presets listed with their passes, usage errors before any work, exit 5 from auto
// when nothing holds the gate.

#include <gtest/gtest.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "compress/io/onnx_io.h"
#include "support/test_support.h"

namespace compress {
namespace {

using nlohmann::json;
using testing::ReadBytes;
using testing::RunCompress;
using testing::TempDir;

bool Has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::string Mlp() { return testing::SourcePath("models/mlp.onnx"); }
std::string Calib() { return testing::SourcePath("models/calib"); }

int Validate(const std::string& doc) {
  const auto v = testing::RunCommand({"node", testing::SourcePath("tests/ort/validate.js"),
                                      testing::SourcePath("docs/compare.schema.json"), doc});
  EXPECT_EQ(v.exit_code, 0) << v.out << v.err;
  return v.exit_code;
}

TEST(CompareCli, ListPresetsShowsEveryPresetWithItsPasses) {
  const auto r = RunCompress({"compare", "--list-presets"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* name : {"fp16", "int8", "int8-dynamic", "int8-weights", "prune50", "prune2:4", "channels50",
                           "lowrank50", "prune50+int8", "prune2:4+int8", "channels50+int8", "lowrank50+int8"}) {
    EXPECT_TRUE(Has(r.out, std::string("\n") + name + "\n") || r.out.rfind(std::string(name) + "\n", 0) == 0) << name;
  }
  EXPECT_TRUE(Has(r.out, "pass prune {")) << r.out;
  EXPECT_TRUE(Has(r.out, "\"pattern\":\"2:4\"")) << r.out;
  EXPECT_TRUE(Has(r.out, "pass low_rank {")) << r.out;
  EXPECT_TRUE(Has(r.out, "\"mode\":\"dynamic\"")) << r.out;
  EXPECT_TRUE(Has(r.out, "\"mode\":\"weights_only\"")) << r.out;
}

TEST(CompareCli, TableAndDocumentForTwoRecipes) {
  TempDir dir;
  const auto r = RunCompress({"compare", Mlp(), "--recipe", "int8-dynamic", "--recipe", "int8", "--calib", Calib(),
                              "--eval", Calib(), "--out-dir", dir / "out", "--report", dir / "c.json",
                              "--max-accuracy-drop", "2", "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(r.err.empty()) << r.err;
  EXPECT_TRUE(Has(r.out, "int8-dynamic")) << r.out;
  EXPECT_TRUE(Has(r.out, "1 statistics run shared by every recipe")) << r.out;
  const json doc = json::parse(ReadBytes(dir / "c.json"));
  EXPECT_EQ(Validate(dir / "c.json"), 0);
  ASSERT_EQ(doc["rows"].size(), 2u);
  for (const auto& row : doc["rows"]) {
    ASSERT_EQ(row["status"], "ok") << row["error"];
    EXPECT_TRUE(std::filesystem::exists(row["output"].get<std::string>()));
    EXPECT_EQ(row["gate"]["threshold"], 2.0);
    EXPECT_EQ(row["gate"]["passed"], row["gate"]["value"].get<double>() <= 2.0);
    // The row's figures are its report's.
    EXPECT_EQ(row["bytes"], row["report"]["output"]["bytes"]);
    EXPECT_EQ(row["top1"], row["report"]["evaluation"]["top1_after"]);
  }
  EXPECT_EQ(doc["rows"][0]["output"], dir / "out/mlp.int8-dynamic.onnx");
}

TEST(CompareCli, EachRecipesModelIsTheSameBytesWhateverTheOrderAndThreads) {
  TempDir dir;
  const auto a = RunCompress({"compare", Mlp(), "--recipe", "prune50+int8", "--recipe", "int8", "--recipe",
                              "lowrank50+int8", "--calib", Calib(), "--eval", Calib(), "--out-dir", dir / "a",
                              "--threads", "1", "-q"});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  const auto b = RunCompress({"compare", Mlp(), "--recipe", "lowrank50+int8", "--recipe", "int8", "--recipe",
                              "prune50+int8", "--calib", Calib(), "--eval", Calib(), "--out-dir", dir / "b",
                              "--threads", "2", "-q"});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  for (const char* f : {"mlp.int8.onnx", "mlp.prune50+int8.onnx", "mlp.lowrank50+int8.onnx"}) {
    EXPECT_EQ(ReadBytes(dir / "a/" + f), ReadBytes(dir / "b/" + f)) << f;
  }
}

TEST(CompareCli, UsageErrorsComeBeforeAnyWork) {
  TempDir dir;
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"compare", Mlp(), "--recipe", "int7"}, "--recipe 'int7' is neither a file nor a preset"},
      {{"compare", Mlp()}, "give at least one --recipe"},
      {{"compare", Mlp(), "--recipe", "fp16", "--recipe", "fp16"}, "given twice"},
      {{"compare", Mlp(), "--recipe", "fp16", "--max-accuracy-drop", "1"}, "the accuracy gate needs data"},
      {{"auto", Mlp(), "--eval", Calib()}, "--max-accuracy-drop"},
      {{"auto", Mlp(), "--max-accuracy-drop", "1"}, "--eval DIR"},
      {{"auto", Mlp(), "--eval", Calib(), "--max-accuracy-drop", "1", "--objective", "speed"}, "--objective must be"},
  };
  for (const auto& c : cases) {
    std::vector<std::string> args = c.args;
    args.push_back("--out-dir");
    args.push_back(dir / "out");
    const auto r = RunCompress(args);
    EXPECT_EQ(r.exit_code, 2) << args[0] << " " << c.message << "\n" << r.err;
    EXPECT_TRUE(Has(r.err, c.message)) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  EXPECT_FALSE(std::filesystem::exists(dir / "out"));
}

TEST(AutoCli, NothingHoldsTheGateExitsFiveWithTheDocumentWritten) {
  TempDir dir;
  const auto r = RunCompress({"auto", Mlp(), "--calib", Calib(), "--eval", Calib(), "--max-accuracy-drop", "-50",
                              "--out-dir", dir / "cand", "-o", dir / "best.onnx", "--report", dir / "a.json", "-q"});
  EXPECT_EQ(r.exit_code, 5) << r.err;
  EXPECT_TRUE(Has(r.err, "no recipe holds the accuracy gate")) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir / "best.onnx"));
  const json doc = json::parse(ReadBytes(dir / "a.json"));
  EXPECT_EQ(Validate(dir / "a.json"), 0);
  EXPECT_TRUE(doc["chosen"].is_null());
  EXPECT_EQ(doc["command"], "auto");
  EXPECT_GE(doc["rows"].size(), 4u);
}

}  // namespace
}  // namespace compress
