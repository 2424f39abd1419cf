// The main job as library calls: recipe -> passes (fine-tuning included) -> evaluation -> gate and
// fallback -> save -> report. `compress MODEL ...`, `compress compare` and `compress auto` all run
// recipes through RunRecipe on one JobContext, which loads the model and the data folders, calibrates and
// evaluates the original once, and shares all of it with every recipe of the command.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "compress/calib/calibration.h"
#include "compress/eval/compare.h"
#include "compress/eval/gate.h"
#include "compress/io/dataset.h"
#include "compress/io/onnx_io.h"
#include "compress/ir/graph.h"
#include "compress/pipeline/pipeline.h"
#include "compress/pipeline/recipe.h"
#include "compress/report/report.h"
#include "compress/train/finetune.h"

namespace compress {

// Everything the main job's command line can ask for (README.md, "Options"). `compare` and `auto` use the
// data, evaluation, calibration, gate and output fields; the recipe comes from elsewhere.
struct JobOptions {
  std::string model;
  std::string zstd_size = "auto";  // auto | always | never
  std::string output;
  bool external_data = false;
  size_t external_threshold = 1024;
  std::string external_file;
  bool overwrite = false;
  // Recipe.
  std::string recipe_file;
  bool no_optimize = false;
  bool fp16 = false;
  bool compact_names = false;
  bool keep_io_types = true;
  std::vector<std::string> fp16_block_ops;
  std::vector<std::string> fp16_block_nodes;
  // Pruning (before quantization).
  std::optional<double> prune;
  std::string prune_pattern;
  std::string prune_method;
  bool prune_global = false;
  bool prune_keep_first_last = false;
  bool prune_update = false;
  bool no_prune_update = false;
  std::vector<std::string> prune_exclude_nodes;
  std::optional<double> prune_channels;
  std::optional<double> target_macs;
  // Low-rank factorization (after pruning, before quantization).
  std::optional<double> low_rank;
  std::optional<double> low_rank_energy;
  std::optional<double> low_rank_params;
  std::optional<double> low_rank_macs;
  std::string low_rank_method;
  std::optional<int64_t> rank_multiple;
  std::vector<std::string> low_rank_exclude_nodes;
  // Fine-tuning (after pruning and low rank, before --fp16/--int8; after --int8 with --qat).
  std::string finetune_dir;
  std::optional<int64_t> epochs;
  std::optional<double> lr;
  std::optional<double> temperature;
  std::string distill_loss;
  std::optional<double> label_weight;
  std::vector<std::string> feature_loss;
  std::optional<int64_t> seed;
  std::optional<int64_t> prune_steps;
  std::optional<int64_t> finetune_limit;
  bool qat = false;
  std::string student;
  // Report and evaluation.
  std::string report_json;
  std::string report_md;
  std::string report_html;
  std::string eval_dir;
  std::string labels;
  int64_t eval_limit = 0;
  int64_t batch = 64;
  int threads = 0;
  bool progress = true;  // bars on a terminal
  // INT8.
  bool int8 = false;
  bool dynamic = false;
  bool weights_only = false;
  std::string format;
  bool per_tensor = false;
  std::string activation_type;
  std::string calib_dir;
  std::string calib_method;
  std::optional<double> percentile;
  std::string calib_table;
  int64_t calib_limit = 0;
  std::vector<std::string> exclude_nodes;
  std::vector<std::string> exclude_ops;
  std::optional<int64_t> min_conv_depth;
  // Accuracy gate.
  std::optional<double> max_accuracy_drop;
  std::optional<double> min_agreement;
  bool auto_fallback = false;
};

// The recipe of --recipe FILE or of the pass flags, every flag checked (Error(kUsage) naming it) before
// anything is loaded. Its name ("pruned-int8") names the default output file.
Recipe RecipeFromOptions(const JobOptions& options);

// Error(kUsage) unless `method` is svd, whitened or auto (--low-rank-method).
void CheckLowRankMethod(const std::string& method);

// The gate of --max-accuracy-drop / --min-agreement / --auto-fallback, checked.
GateSpec GateFromOptions(const JobOptions& options);

// The file the main job writes when -o is not given: MODEL's folder and stem, then ".<recipe name>.onnx".
std::string DefaultOutputPath(const std::string& model, const std::string& recipe_name);

// Usage errors of a recipe under the command's data options: static INT8 without --calib, wanda without
// calibration data, a gate without data to measure on. Error(kUsage) naming the flag.
void CheckRecipeData(const Recipe& recipe, const JobOptions& options, const GateSpec& gate);

// What one command loads and measures once and shares with every recipe it runs.
class JobContext {
 public:
  // Loads the model (and --student), opens every data folder against the model's inputs (Error naming
  // the folder when they do not fit) and warns about samples a fixed batch leaves out. With `shared`
  // the calibration statistics are collected once for every recipe (DataCalibrationSource::ShareAcross).
  JobContext(const JobOptions& options, bool shared);
  JobContext(const JobContext&) = delete;
  JobContext& operator=(const JobContext&) = delete;

  const JobOptions& options() const { return options_; }
  const Model& original() const { return original_; }
  // The model the passes start from: the --student, or the original.
  const Model& start_model() const { return student_ ? *student_ : original_; }
  const LoadInfo& load_info() const { return info_; }
  int64_t input_bytes() const { return input_bytes_; }
  const Dataset* eval_data() const { return eval_data_ ? &*eval_data_ : nullptr; }
  const Dataset* calib_data() const { return calib_data_ ? &*calib_data_ : nullptr; }
  DataCalibrationSource& calibration() { return *calibration_; }
  // The start model after the clean-up passes (what every recipe's first pass sees), made once.
  const Model& cleaned(bool optimize);
  // The data comparisons and gates run on: --eval, or --calib when only a gate asks for data (null when
  // neither). Its label is the folder as given.
  const Dataset* compare_data(bool gate_active) const;
  std::string compare_label() const;
  // The original evaluated once on compare_data() (null when there is no such data).
  const ReferenceEvaluation* reference(bool gate_active);
  const std::string& compare_sha256(bool gate_active);
  // The teacher's outputs, kept between the fine-tuning runs of every recipe.
  train::TeacherCache& teacher_cache() { return *teacher_cache_; }
  int64_t samples_for_calibration() const { return calib_plan_ ? calib_plan_->samples : 0; }
  int64_t skipped_for_calibration() const { return calib_plan_ ? calib_plan_->skipped : 0; }

 private:
  JobOptions options_;
  LoadInfo info_;
  Model original_;
  std::optional<Model> student_;
  int64_t input_bytes_ = 0;
  std::optional<Dataset> eval_data_, calib_data_;
  std::optional<BatchPlan> calib_plan_;
  std::unique_ptr<DataCalibrationSource> calibration_;
  std::optional<Model> cleaned_[2];
  std::unique_ptr<ReferenceEvaluation> reference_;
  std::unique_ptr<train::TeacherCache> teacher_cache_;
  std::string compare_sha256_;
  bool sha_done_ = false;
};

// How one recipe is run within a command.
struct RecipeRunOptions {
  std::string output;          // where the model is written (checked and written atomically)
  GateSpec gate;
  bool layers = true;          // per-layer SQNR in the report
  bool include_timings = true;
  bool progress = true;
  std::optional<double> target_macs;  // --target-macs: the prune_channels ratios chosen for this fraction
};

// What one recipe gave.
struct RecipeResult {
  Recipe recipe;               // as run: --target-macs ratios and fallback exclusions written in
  Model model;                 // the model written
  std::string output;
  nlohmann::json report;       // compress.report/1
  std::optional<GateInfo> gate;
  bool checker_ok = false;
  std::string checker_message;
};

// How a job writes models: external data as the options say, never over the input or its data files.
SaveOptions JobSaveOptions(const JobContext& context);

// Runs `requested` on the context's start model, evaluates it against the original, applies the gate
// (with its fallback), writes the model to options.output and builds the report. A gate that fails is in
// the result, not an exception (the model is written for inspection); every other failure throws Error.
RecipeResult RunRecipe(JobContext& context, const Recipe& requested, const RecipeRunOptions& options);

// The main job: RecipeFromOptions, the output paths checked, one context, RunRecipe, then the
// --report/--report-md/--report-html files. A failed gate or a checker rejection is in the result (see
// ThrowIfJobFailed); every other failure throws Error.
RecipeResult RunJob(const JobOptions& options);

// After the caller has shown the result: Error(kInternal) when the checker rejects an output made from a
// valid input, Error(kAccuracyGate) when the gate failed.
void ThrowIfJobFailed(const RecipeResult& result, const JobOptions& options);

// The one-line gate failure message ("accuracy gate failed: top-1 dropped 1.20 pt on DIR, ...").
std::string FormatGateFailure(const GateCheck& check, const std::string& data);

}  // namespace compress
