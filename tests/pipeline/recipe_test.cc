#include "compress/pipeline/recipe.h"

#include <gtest/gtest.h>

#include "compress/passes/pass.h"
#include "compress/util/error.h"
#include "support/test_support.h"

namespace compress {
namespace {

using nlohmann::json;
using testing::ErrorOf;

ErrorKind KindOf(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.kind();
  }
  return ErrorKind::kInternal;
}

TEST(Recipe, YamlScalarsAreTypedAndQuotedScalarsStayStrings) {
  const json doc = YamlToJson("a: true\nb: 12\nc: 1.5\nd: '12'\ne: [x, \"true\"]\nf: ~\ng: text\n", "r.yaml");
  EXPECT_EQ(doc, json({{"a", true}, {"b", 12}, {"c", 1.5}, {"d", "12"}, {"e", {"x", "true"}}, {"f", nullptr},
                       {"g", "text"}}));
}

TEST(Recipe, YamlFileWithOptionsIsCompletedWithDefaults) {
  testing::TempDir dir;
  testing::WriteBytes(dir / "small.yaml",
                      "# a comment\n"
                      "passes:\n"
                      "  - pass: fp16\n"
                      "    options: {keep_io_types: false, block_ops: [Softmax]}\n");
  const Recipe r = LoadRecipeFile(dir / "small.yaml");
  EXPECT_EQ(r.name, "small");  // from the file name
  EXPECT_TRUE(r.optimize);
  ASSERT_EQ(r.steps.size(), 1u);
  EXPECT_EQ(r.steps[0].pass, "fp16");
  EXPECT_EQ(r.steps[0].options,
            json({{"keep_io_types", false}, {"default_block_ops", true}, {"block_ops", {"Softmax"}},
                  {"block_nodes", json::array()}}));
}

TEST(Recipe, JsonFileAndShorthandEntries) {
  testing::TempDir dir;
  testing::WriteBytes(dir / "r.json", R"({"name": "half", "optimize": false, "passes": ["fp16"]})");
  const Recipe r = LoadRecipeFile(dir / "r.json");
  EXPECT_EQ(r.name, "half");
  EXPECT_FALSE(r.optimize);
  ASSERT_EQ(r.steps.size(), 1u);
  EXPECT_EQ(r.steps[0].options["keep_io_types"], true);
  // Without optimize the expanded list is the recipe's own passes.
  ASSERT_EQ(r.ExpandedSteps().size(), 1u);
}

TEST(Recipe, ExpandedStepsStartWithTheCleanupPassesInListOrder) {
  Recipe r = RecipeFromJson(json::parse(R"({"passes": ["fp16"]})"), "r.json");
  std::vector<std::string> expected;
  for (const auto& p : AllPasses()) {
    if (p.cleanup) expected.push_back(p.name);
  }
  expected.push_back("fp16");
  std::vector<std::string> got;
  for (const auto& s : r.ExpandedSteps()) got.push_back(s.pass);
  EXPECT_EQ(got, expected);
  EXPECT_EQ(expected.front(), "constant_to_initializer");
  EXPECT_EQ(expected.size(), 7u);
}

TEST(Recipe, ToJsonRoundTrips) {
  const Recipe r = RecipeFromJson(
      json::parse(R"({"name": "x", "passes": [{"pass": "fp16", "options": {"block_nodes": ["n1"]}}]})"), "r.json");
  const Recipe again = RecipeFromJson(r.ToJson(), "again");
  EXPECT_EQ(again.ToJson(), r.ToJson());
  EXPECT_EQ(r.ToJson()["passes"][0]["options"]["block_nodes"], json({"n1"}));
}

TEST(Recipe, UnknownPassNamesTheEntryAndListsKnownPasses) {
  const std::string msg = ErrorOf([] { RecipeFromJson(json::parse(R"({"passes": ["fp16", "int3"]})"), "r.json"); });
  EXPECT_NE(msg.find("r.json: passes[1]: unknown pass 'int3'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("fold_batch_norm"), std::string::npos) << msg;
  EXPECT_EQ(KindOf([] { RecipeFromJson(json::parse(R"({"passes": ["int3"]})"), "r.json"); }), ErrorKind::kUsage);
}

TEST(Recipe, UnknownOptionListsValidOptions) {
  const std::string msg = ErrorOf([] {
    RecipeFromJson(json::parse(R"({"passes": [{"pass": "fp16", "options": {"keep_io": true}}]})"), "r.json");
  });
  EXPECT_NE(msg.find("unknown option 'keep_io' for pass 'fp16' (valid: keep_io_types, default_block_ops, "
                     "block_ops, block_nodes)"),
            std::string::npos)
      << msg;
  const std::string none = ErrorOf([] {
    RecipeFromJson(json::parse(R"({"passes": [{"pass": "fold_batch_norm", "options": {"x": 1}}]})"), "r.json");
  });
  EXPECT_NE(none.find("(it takes no options)"), std::string::npos) << none;
}

TEST(Recipe, OptionOfTheWrongTypeIsRejected) {
  const std::string msg = ErrorOf([] {
    RecipeFromJson(json::parse(R"({"passes": [{"pass": "fp16", "options": {"keep_io_types": "yes"}}]})"), "r.json");
  });
  EXPECT_NE(msg.find("option 'keep_io_types' of pass 'fp16' must be a boolean, got \"yes\""), std::string::npos)
      << msg;
  const std::string list = ErrorOf([] {
    RecipeFromJson(json::parse(R"({"passes": [{"pass": "fp16", "options": {"block_ops": [1]}}]})"), "r.json");
  });
  EXPECT_NE(list.find("must be a list of strings"), std::string::npos) << list;
  const std::string integer = ErrorOf([] {
    RecipeFromJson(json::parse(R"({"passes": [{"pass": "fold_constants", "options": {"max_folded_bytes": 1.5}}]})"),
                   "r.json");
  });
  EXPECT_NE(integer.find("must be an integer"), std::string::npos) << integer;
}

TEST(Recipe, StructuralErrors) {
  EXPECT_NE(ErrorOf([] { RecipeFromJson(json::parse(R"({"name": "x"})"), "r.json"); }).find("no 'passes' list"),
            std::string::npos);
  EXPECT_NE(ErrorOf([] { RecipeFromJson(json::parse(R"({"pases": []})"), "r.json"); })
                .find("unknown recipe key 'pases'"),
            std::string::npos);
  EXPECT_NE(ErrorOf([] { RecipeFromJson(json::parse(R"({"name": "a/b", "passes": []})"), "r.json"); })
                .find("'name' may only hold"),
            std::string::npos);
  EXPECT_NE(ErrorOf([] { RecipeFromJson(json::parse(R"({"passes": [{"pass": "fp16", "extra": 1}]})"), "r.json"); })
                .find("unknown key 'extra'"),
            std::string::npos);
  EXPECT_NE(ErrorOf([] { RecipeFromJson(json::parse("[1]"), "r.json"); }).find("must be a mapping"),
            std::string::npos);
}

TEST(Recipe, FileErrorsNameTheFileAndLine) {
  testing::TempDir dir;
  testing::WriteBytes(dir / "bad.yaml", "passes:\n  - fp16\n  bad: [\n");
  const std::string msg = ErrorOf([&] { LoadRecipeFile(dir / "bad.yaml"); });
  EXPECT_NE(msg.find(dir / "bad.yaml:"), std::string::npos) << msg;
  EXPECT_NE(msg.find("invalid YAML"), std::string::npos) << msg;
  EXPECT_EQ(KindOf([&] { LoadRecipeFile(dir / "bad.yaml"); }), ErrorKind::kUsage);
  testing::WriteBytes(dir / "bad.json", "{\"passes\": [}");
  EXPECT_NE(ErrorOf([&] { LoadRecipeFile(dir / "bad.json"); }).find("invalid JSON"), std::string::npos);
  EXPECT_EQ(KindOf([&] { LoadRecipeFile(dir / "none.yaml"); }), ErrorKind::kIO);
}

}  // namespace
}  // namespace compress
