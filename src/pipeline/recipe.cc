#include "compress/pipeline/recipe.h"

#include <yaml-cpp/yaml.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <sstream>

#include "compress/passes/pass.h"
#include "compress/util/error.h"
#include "compress/util/fs.h"

namespace compress {

namespace {

using nlohmann::json;

std::string ListPasses() {
  std::string s;
  for (const auto& p : AllPasses()) s += (s.empty() ? "" : ", ") + p.name;
  return s;
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// A plain YAML scalar as JSON: YAML 1.2 core schema booleans, null, integers and floats; else a string.
json PlainScalar(const std::string& s) {
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  if (s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL") return nullptr;
  const char* begin = s.c_str();
  char* end = nullptr;
  errno = 0;
  const long long i = std::strtoll(begin, &end, 10);
  if (errno == 0 && end != begin && *end == '\0') return static_cast<int64_t>(i);
  errno = 0;
  const double d = std::strtod(begin, &end);
  const bool looks_numeric = std::isdigit(static_cast<unsigned char>(s[0])) || s[0] == '-' || s[0] == '+' ||
                             s[0] == '.';
  if (errno == 0 && end != begin && *end == '\0' && looks_numeric) return d;
  return s;
}

json NodeToJson(const YAML::Node& node, const std::string& origin) {
  switch (node.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined:
      return nullptr;
    case YAML::NodeType::Scalar:
      // yaml-cpp tags quoted scalars "!" and plain ones "?": only plain scalars are typed.
      if (node.Tag() == "!") return node.Scalar();
      return PlainScalar(node.Scalar());
    case YAML::NodeType::Sequence: {
      json arr = json::array();
      for (const auto& e : node) arr.push_back(NodeToJson(e, origin));
      return arr;
    }
    case YAML::NodeType::Map: {
      json obj = json::object();
      for (const auto& kv : node) {
        if (!kv.first.IsScalar()) {
          ThrowUsage(origin + ":" + std::to_string(kv.first.Mark().line + 1) + ": mapping keys must be plain names");
        }
        obj[kv.first.Scalar()] = NodeToJson(kv.second, origin);
      }
      return obj;
    }
  }
  return nullptr;
}

}  // namespace

std::vector<RecipeStep> Recipe::ExpandedSteps() const {
  std::vector<RecipeStep> all;
  if (optimize) {
    for (const auto& p : AllPasses()) {
      if (p.cleanup) all.push_back(MakeRecipeStep(p.name, json::object(), "clean-up"));
    }
  }
  all.insert(all.end(), steps.begin(), steps.end());
  return all;
}

json Recipe::ToJson() const {
  json passes = json::array();
  for (const auto& s : steps) passes.push_back({{"pass", s.pass}, {"options", s.options}});
  return {{"name", name}, {"optimize", optimize}, {"passes", passes}};
}

RecipeStep MakeRecipeStep(const std::string& pass, const json& options, const std::string& origin) {
  const PassInfo* info = FindPass(pass);
  if (info == nullptr) ThrowUsage(origin + ": unknown pass '" + pass + "' (known passes: " + ListPasses() + ")");
  RecipeStep step{pass, ValidatePassOptions(*info, options, origin)};
  // The recipe is stored as JSON in the output's metadata and the report: strings must be UTF-8 (YAML
  // files and command-line flags are not checked for it by their parsers).
  try {
    (void)step.options.dump();
  } catch (const json::type_error&) {
    ThrowUsage(origin + ": option values of pass '" + pass + "' must be valid UTF-8 text");
  }
  return step;
}

Recipe RecipeFromJson(const json& doc, const std::string& origin) {
  if (!doc.is_object()) ThrowUsage(origin + ": a recipe must be a mapping with a 'passes' list");
  Recipe recipe;
  for (auto it = doc.begin(); it != doc.end(); ++it) {
    const std::string& key = it.key();
    if (key == "name") {
      if (!it.value().is_string() || it.value().get<std::string>().empty()) {
        ThrowUsage(origin + ": 'name' must be a non-empty string");
      }
      recipe.name = it.value().get<std::string>();
      for (char c : recipe.name) {
        // The name becomes part of a file name.
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') {
          ThrowUsage(origin + ": 'name' may only hold letters, digits, '-', '_' and '.', got '" + recipe.name + "'");
        }
      }
    } else if (key == "optimize") {
      if (!it.value().is_boolean()) ThrowUsage(origin + ": 'optimize' must be true or false");
      recipe.optimize = it.value().get<bool>();
    } else if (key == "passes") {
      if (!it.value().is_array()) ThrowUsage(origin + ": 'passes' must be a list");
    } else {
      ThrowUsage(origin + ": unknown recipe key '" + key + "' (valid: name, optimize, passes)");
    }
  }
  if (!doc.contains("passes")) ThrowUsage(origin + ": the recipe has no 'passes' list");
  const json& passes = doc["passes"];
  for (size_t i = 0; i < passes.size(); ++i) {
    const std::string where = origin + ": passes[" + std::to_string(i) + "]";
    const json& entry = passes[i];
    if (entry.is_string()) {
      recipe.steps.push_back(MakeRecipeStep(entry.get<std::string>(), json::object(), where));
      continue;
    }
    if (!entry.is_object() || !entry.contains("pass") || !entry["pass"].is_string()) {
      ThrowUsage(where + ": expected a pass name or a mapping with 'pass' and optional 'options'");
    }
    for (auto it = entry.begin(); it != entry.end(); ++it) {
      if (it.key() != "pass" && it.key() != "options") {
        ThrowUsage(where + ": unknown key '" + it.key() + "' (valid: pass, options)");
      }
    }
    const json options = entry.contains("options") ? entry["options"] : json::object();
    recipe.steps.push_back(MakeRecipeStep(entry["pass"].get<std::string>(), options, where));
  }
  if (recipe.name.empty()) {
    std::string stem = BaseName(origin);
    const auto dot = stem.rfind('.');
    if (dot != std::string::npos && dot > 0) stem = stem.substr(0, dot);
    recipe.name = stem.empty() ? "recipe" : stem;
  }
  return recipe;
}

json YamlToJson(const std::string& text, const std::string& origin) {
  try {
    const YAML::Node root = YAML::Load(text);
    json doc = NodeToJson(root, origin);
    // yaml-cpp passes any bytes through; JSON (messages, metadata, the report) needs UTF-8.
    try {
      (void)doc.dump();
    } catch (const json::type_error&) {
      ThrowUsage(origin + ": invalid YAML: the text is not valid UTF-8");
    }
    return doc;
  } catch (const YAML::Exception& e) {
    ThrowUsage(origin + ":" + std::to_string(e.mark.line + 1) + ": invalid YAML: " + e.msg);
  }
}

Recipe LoadRecipeFile(const std::string& path) {
  if (!FileExists(path)) ThrowIO(path + ": recipe file not found");
  // A recipe is a few lines; the cap keeps a wrong path (a model, a data file) from being read whole.
  const std::string text = ReadFileBytes(path, size_t{1} << 20);
  json doc;
  if (EndsWith(path, ".yaml") || EndsWith(path, ".yml")) {
    doc = YamlToJson(text, path);
  } else {
    try {
      doc = json::parse(text);
    } catch (const json::exception& e) {  // parse_error, and out_of_range for a number like 1e400
      ThrowUsage(path + ": invalid JSON: " + e.what());
    }
  }
  return RecipeFromJson(doc, path);
}

}  // namespace compress
