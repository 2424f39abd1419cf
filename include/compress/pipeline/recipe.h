// A recipe: an ordered list of passes with their options. Comes from command-line flags (--fp16, ...)
// or from a JSON or YAML file (--recipe FILE):
//
//   name: fp16-small          # optional; names the default output file <stem>.<name>.onnx
//   optimize: true            # optional; run the clean-up passes first (default true)
//   passes:
//     - fp16                  # a pass with default options
//     - pass: fp16            # or a pass with options
//       options: {keep_io_types: false, block_ops: [Softmax]}
//
// Everything is validated when the recipe is built, before any model is loaded: an unknown pass or
// option, or an option of the wrong type, is an Error(kUsage) naming the file and the entry.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace compress {

struct RecipeStep {
  std::string pass;
  nlohmann::json options;  // complete: every option of the pass, defaults filled in
};

struct Recipe {
  std::string name;
  bool optimize = true;
  std::vector<RecipeStep> steps;  // the passes after the clean-up

  // Clean-up passes (when optimize) followed by steps: what the pipeline runs.
  std::vector<RecipeStep> ExpandedSteps() const;
  // {"name", "optimize", "passes": [{"pass", "options"}...]}, with complete options; the form written
  // to reports and to the output model's metadata.
  nlohmann::json ToJson() const;
};

// Validates and completes one step; `origin` prefixes error messages.
RecipeStep MakeRecipeStep(const std::string& pass, const nlohmann::json& options, const std::string& origin);

// Builds a recipe from the document structure above; `origin` (a file name) prefixes error messages.
Recipe RecipeFromJson(const nlohmann::json& doc, const std::string& origin);

// Reads a recipe file: YAML (.yaml/.yml) or JSON (anything else). A missing file is Error(kIO); a
// syntax error or an invalid recipe is Error(kUsage) with the file name (and line for syntax errors).
Recipe LoadRecipeFile(const std::string& path);

// Converts a YAML document to JSON: plain scalars become booleans or numbers when they read as such,
// quoted scalars stay strings. Exposed for tests.
nlohmann::json YamlToJson(const std::string& text, const std::string& origin);

}  // namespace compress
