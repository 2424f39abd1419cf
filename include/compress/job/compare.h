// Many recipes on one model, side by side (`compress compare`), and the search for the best recipe under
// an accuracy budget (`compress auto`). Both run every recipe through RunRecipe on one JobContext: the
// model is loaded, calibrated and evaluated once and every recipe shares it. Their document (schema
// compress.compare/1) is described in docs/compare.md.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "compress/job/job.h"

namespace compress {

// A built-in recipe: `fp16`, `int8`, `int8-dynamic`, `int8-weights`, `pruneNN` (unstructured, NN % of the
// weights), `prune2:4`, `channelsNN` (NN % of the channels), `lowrankNN` (at most NN % of each layer's
// parameters), and STRUCTURE+PRECISION combinations such as `prune50+int8` or `lowrank50+fp16`. NN is
// 1 to 99.
struct Preset {
  std::string name;
  std::string description;
};
// The presets `compress compare --list-presets` prints (the NN forms accept any level; these are the
// ones listed).
std::vector<Preset> ListedPresets();
// True when `name` is a preset name in the grammar above.
bool IsPresetName(const std::string& name);
// The command's options with the preset's flags set (as if given on the command line), or Error(kUsage)
// naming the presets. Fine-tuning (--finetune DIR in `base`) is kept only for presets that change
// weights or shapes (pruning, channels, low rank).
JobOptions PresetOptions(const std::string& name, const JobOptions& base);

// One recipe of a comparison: a preset name, or a recipe file (JSON or YAML).
struct CompareEntry {
  std::string name;    // as given on the command line
  std::string source;  // "preset", "file" or "search"
  JobOptions options;  // presets: the flags; files: options.recipe_file
};
// `--recipe R`: a file when R names an existing file, else a preset; Error(kUsage) when it is neither.
CompareEntry ResolveCompareEntry(const std::string& recipe, const JobOptions& base);

struct CompareJobOptions {
  JobOptions common;                 // model, data folders, limits, batch, threads, gate flags
  std::vector<std::string> recipes;  // --recipe, in order
  std::string out_dir;               // where every recipe's model goes (default: MODEL's stem + ".compare/")
  std::string report_json, report_html;
  bool include_timings = true;       // false: "timings" is null (byte-identical documents in tests)
};

// Runs every recipe; a recipe that fails is a row with its error. The document follows docs/compare.md.
nlohmann::json RunCompare(const CompareJobOptions& options);

struct AutoJobOptions {
  JobOptions common;          // needs calib_dir, eval_dir (labelled) and max_accuracy_drop; finetune_dir optional
  std::string objective = "size";  // size | macs | latency
  double budget_minutes = 0;  // 0: no limit
  std::string output;         // the chosen model (default: MODEL's stem + ".auto.onnx" beside it)
  std::string out_dir;        // every candidate's model (default: MODEL's stem + ".auto/")
  std::string report_json, report_html;
  bool include_timings = true;
};

// Searches recipes, cheapest first, writes the best one that holds the gate to options.output and
// returns the document ("chosen" null when none holds; the caller then exits with kAccuracyGate).
nlohmann::json RunAuto(const AutoJobOptions& options);

// Marks "pareto_size" and "pareto_macs" on the rows with status "ok": a row is on a front when no other
// row is at most as large (bytes, or MACs) and at least as accurate (top1 with labels, else agreement)
// with one of the two strictly better. Fills doc["pareto"].
void MarkParetoFronts(nlohmann::json& doc);

}  // namespace compress
