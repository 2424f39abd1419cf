#include "compress/job/job.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <set>
#include <sstream>

#include "compress/eval/macs.h"
#include "compress/job/fallback.h"
#include "compress/job/sensitivity.h"
#include "compress/passes/builders.h"
#include "compress/report/html.h"
#include "compress/report/zstd_size.h"
#include "compress/util/error.h"
#include "compress/util/fs.h"
#include "compress/version.h"

namespace compress {

namespace {

std::string StemOf(const std::string& path) {
  std::string base = BaseName(path);
  const auto dot = base.rfind('.');
  return dot == std::string::npos || dot == 0 ? base : base.substr(0, dot);
}

std::string DefaultOutputName(const std::string& input, const std::string& recipe) {
  const std::string dir = DirName(input);
  return (dir == "." ? std::string() : dir + "/") + StemOf(input) + "." + recipe + ".onnx";
}

bool AnyInt8Option(const JobOptions& opt) {
  return opt.dynamic || opt.weights_only || !opt.calib_method.empty() || opt.percentile.has_value() ||
         !opt.format.empty() || opt.per_tensor || !opt.activation_type.empty() || !opt.exclude_nodes.empty() ||
         !opt.exclude_ops.empty() || opt.min_conv_depth.has_value();
}

bool AnyFinetuneOption(const JobOptions& opt) {
  return opt.epochs || opt.lr || opt.temperature || !opt.distill_loss.empty() || opt.label_weight || !opt.feature_loss.empty() || opt.seed ||
         opt.prune_steps || opt.finetune_limit || opt.qat || !opt.student.empty();
}

// The finetune step of --finetune DIR and its flags.
RecipeStep FinetuneStep(const JobOptions& opt, int64_t epochs) {
  nlohmann::json o = {{"data", opt.finetune_dir}, {"epochs", epochs}, {"batch", opt.batch}};
  if (opt.lr) o["lr"] = *opt.lr;
  if (opt.temperature) o["temperature"] = *opt.temperature;
  if (!opt.distill_loss.empty()) o["distill_loss"] = opt.distill_loss;
  if (opt.label_weight) o["label_weight"] = *opt.label_weight;
  if (!opt.feature_loss.empty()) o["feature_loss"] = opt.feature_loss;
  if (opt.seed) o["seed"] = *opt.seed;
  if (opt.finetune_limit) o["limit"] = *opt.finetune_limit;
  if (!opt.eval_dir.empty()) {
    o["eval"] = opt.eval_dir;
    o["eval_limit"] = opt.eval_limit;
  }
  return MakeRecipeStep("finetune", o, "--finetune");
}

bool AnyLowRank(const JobOptions& opt) {
  return opt.low_rank || opt.low_rank_energy || opt.low_rank_params || opt.low_rank_macs;
}

// The low_rank step of --low-rank, --low-rank-energy, --low-rank-params or --low-rank-macs.
RecipeStep LowRankStep(const JobOptions& opt) {
  const int given = (opt.low_rank ? 1 : 0) + (opt.low_rank_energy ? 1 : 0) + (opt.low_rank_params ? 1 : 0) +
                    (opt.low_rank_macs ? 1 : 0);
  if (given > 1) {
    ThrowUsage("--low-rank, --low-rank-energy, --low-rank-params and --low-rank-macs are alternatives; choose one");
  }
  nlohmann::json o = nlohmann::json::object();
  if (opt.low_rank) {
    if (!(*opt.low_rank > 0 && *opt.low_rank < 1)) ThrowUsage("--low-rank must be a fraction in (0, 1), e.g. 0.25");
    o["ratio"] = *opt.low_rank;
  }
  if (opt.low_rank_energy) {
    if (!(*opt.low_rank_energy > 0 && *opt.low_rank_energy <= 1)) {
      ThrowUsage("--low-rank-energy must be a fraction in (0, 1], e.g. 0.95");
    }
    o["energy"] = *opt.low_rank_energy;
  }
  if (opt.low_rank_params) {
    if (!(*opt.low_rank_params > 0 && *opt.low_rank_params < 1)) {
      ThrowUsage("--low-rank-params must be a fraction in (0, 1), e.g. 0.5");
    }
    o["params"] = *opt.low_rank_params;
  }
  if (opt.low_rank_macs) {
    if (!(*opt.low_rank_macs > 0 && *opt.low_rank_macs < 1)) {
      ThrowUsage("--low-rank-macs must be a fraction in (0, 1), e.g. 0.6");
    }
    o["macs"] = *opt.low_rank_macs;
  }
  if (!opt.low_rank_method.empty()) {
    CheckLowRankMethod(opt.low_rank_method);
    if (opt.low_rank_method == "whitened" && opt.calib_dir.empty()) {
      ThrowUsage("--low-rank-method whitened needs --calib DIR (the layers' inputs whiten the weights)");
    }
    o["method"] = opt.low_rank_method;
  }
  if (opt.rank_multiple) {
    if (*opt.rank_multiple < 1 || *opt.rank_multiple > 4096) ThrowUsage("--rank-multiple must be in [1, 4096]");
    o["rank_multiple"] = *opt.rank_multiple;
  }
  if (!opt.low_rank_exclude_nodes.empty()) o["exclude_nodes"] = opt.low_rank_exclude_nodes;
  return MakeRecipeStep("low_rank", o, "--low-rank");
}

// True when a step of the recipe needs activation statistics.
bool NeedsCalibration(const Recipe& recipe) {
  for (const auto& s : recipe.steps) {
    if (s.pass == "quantize" && s.options.value("mode", "static") == "static") return true;
  }
  return false;
}

// Op types whose quantization the fallback can undo one node at a time.
bool IsFallbackCandidate(const std::string& op) {
  static const std::set<std::string> kOps = {"Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Mul", "Concat",
                                             "AveragePool", "GlobalAveragePool", "MaxPool", "Resize", "Sigmoid",
                                             "HardSigmoid", "HardSwish", "Softmax"};
  return kOps.count(op) > 0;
}

int64_t FileSize(const std::string& path) {
  std::error_code ec;
  const auto n = std::filesystem::file_size(path, ec);
  return ec ? 0 : static_cast<int64_t>(n);
}

// The recipe with `nodes` added to what its passes keep in float (quantize: exclude_nodes, fp16:
// block_nodes).
Recipe WithFloatNodes(Recipe recipe, const std::vector<std::string>& nodes) {
  for (auto& step : recipe.steps) {
    const char* key = step.pass == "quantize" ? "exclude_nodes" : step.pass == "fp16" ? "block_nodes" : nullptr;
    if (key == nullptr) continue;
    for (const auto& n : nodes) step.options[key].push_back(n);
  }
  return recipe;
}


Model CleanedModel(const Model& model, bool optimize, int threads) {
  Model m = model;
  Recipe cleanup;
  cleanup.optimize = optimize;
  PipelineOptions p;
  p.threads = threads;
  RunPipeline(m, cleanup, p);
  return m;
}

// A model with a fixed batch runs only whole batches: say so when data is left out.
BatchPlan NoteSkipped(const Dataset& d, int64_t limit, const std::string& what) {
  const BatchPlan plan = d.PlanBatches(limit, 1);
  if (plan.skipped > 0) {
    spdlog::warn("{}: the model takes batches of exactly {} samples; the last {} of {} samples are skipped ({})",
                 d.dir(), plan.batch, plan.skipped, plan.samples + plan.skipped, what);
  }
  return plan;
}

bool HasPass(const Recipe& recipe, const char* pass) {
  return std::any_of(recipe.steps.begin(), recipe.steps.end(), [&](const RecipeStep& s) { return s.pass == pass; });
}

}  // namespace

void CheckLowRankMethod(const std::string& method) {
  if (method != "svd" && method != "whitened" && method != "auto") {
    ThrowUsage("--low-rank-method must be svd, whitened or auto, got '" + method + "'");
  }
}

std::string DefaultOutputPath(const std::string& model, const std::string& recipe_name) {
  return DefaultOutputName(model, recipe_name);
}

Recipe RecipeFromOptions(const JobOptions& opt) {
  const bool pass_flags = opt.fp16 || opt.int8 || opt.compact_names || opt.prune.has_value() ||
                          opt.prune_channels.has_value() || opt.target_macs.has_value() || AnyLowRank(opt) ||
                          !opt.finetune_dir.empty();
  Recipe recipe;
  if (!opt.recipe_file.empty()) {
    if (pass_flags) {
      ThrowUsage("--recipe cannot be combined with pass flags (--prune, --prune-channels, --target-macs, --low-rank*, "
                 "--finetune, --fp16, --int8, --compact-names); put every pass in the recipe");
    }
    recipe = LoadRecipeFile(opt.recipe_file);
  } else {
    std::vector<std::string> name;
    if (opt.fp16 && opt.int8) ThrowUsage("--fp16 and --int8 are alternatives; choose one");
    // Pruning first (structured, then unstructured): quantization then sees the pruned weights.
    if (opt.prune_channels) {
      if (!(*opt.prune_channels >= 0 && *opt.prune_channels < 1)) ThrowUsage("--prune-channels must be in [0, 1)");
      recipe.steps.push_back(
          MakeRecipeStep("prune_channels", {{"ratio", *opt.prune_channels}}, "--prune-channels"));
      name.push_back("channel-pruned");
    }
    // --target-macs: the ratios per group are chosen once the model is loaded (ChooseTargetMacsOptions).
    if (opt.target_macs) {
      if (opt.prune_channels) ThrowUsage("--prune-channels and --target-macs are alternatives; choose one");
      if (!(*opt.target_macs > 0 && *opt.target_macs <= 1)) {
        ThrowUsage("--target-macs must be a fraction in (0, 1], e.g. 0.5");
      }
      recipe.steps.push_back(
          MakeRecipeStep("prune_channels", {{"ratio", 0.0}, {"round_to", kTargetMacsRoundTo}}, "--target-macs"));
      name.push_back("channel-pruned");
    }
    // Pruning first: quantization then sees the pruned weights, and symmetric int8 keeps every zero.
    if (opt.prune) {
      if (!(*opt.prune >= 0 && *opt.prune < 1)) ThrowUsage("--prune must be a fraction in [0, 1), e.g. 0.5");
      nlohmann::json o = {{"sparsity", *opt.prune}};
      if (!opt.prune_pattern.empty()) o["pattern"] = opt.prune_pattern;
      if (!opt.prune_method.empty()) o["method"] = opt.prune_method;
      if (opt.prune_global) o["global"] = true;
      if (opt.prune_keep_first_last) o["keep_first_last"] = true;
      if (opt.no_prune_update) o["update"] = false;
      if (!opt.prune_exclude_nodes.empty()) o["exclude_nodes"] = opt.prune_exclude_nodes;
      RecipeStep step = MakeRecipeStep("prune", o, "--prune");
      MakePrunePass(step.options);  // usage errors (pattern, method) before anything is loaded
      if (opt.prune_steps && *opt.prune_steps > 1) {
        // Gradual pruning (Zhu and Gupta): sparsity s_k = S (1 - (1 - k/K)^3) at step k of K, fine-tuning
        // after each step; the zeros of a step stay zero in the next.
        if (opt.finetune_dir.empty()) ThrowUsage("--prune-steps fine-tunes between the steps: it needs --finetune DIR");
        if (!opt.prune_pattern.empty() && opt.prune_pattern != "unstructured") {
          ThrowUsage("--prune-steps applies to unstructured pruning only");
        }
        const int64_t k_total = *opt.prune_steps;
        for (int64_t k = 1; k <= k_total; ++k) {
          RecipeStep sk = step;
          const double f = 1.0 - static_cast<double>(k) / static_cast<double>(k_total);
          sk.options["sparsity"] = *opt.prune * (1.0 - f * f * f);
          recipe.steps.push_back(sk);
          if (k < k_total) recipe.steps.push_back(FinetuneStep(opt, opt.epochs.value_or(1)));
        }
      } else {
        recipe.steps.push_back(std::move(step));
      }
      const std::string pattern = opt.prune_pattern.empty() || opt.prune_pattern == "unstructured"
                                      ? std::string()
                                      : "-" + opt.prune_pattern.substr(0, opt.prune_pattern.find(':')) + "of" +
                                            opt.prune_pattern.substr(opt.prune_pattern.find(':') + 1);
      name.push_back("pruned" + pattern);
    }
    // Low rank after pruning (it factorizes what pruning kept), before quantization (which then quantizes
    // both factors like any weight).
    if (AnyLowRank(opt)) {
      recipe.steps.push_back(LowRankStep(opt));
      name.push_back("low-rank");
    }
    // Fine-tuning after the passes that change weights and shapes, before the passes that change precision
    // (those then quantize the trained weights); with --qat after quantization, through fake quantization.
    if (!opt.finetune_dir.empty() && !opt.qat) {
      recipe.steps.push_back(FinetuneStep(opt, opt.epochs.value_or(1)));
      name.push_back(opt.student.empty() ? "finetuned" : "distilled");
    }
    if (opt.fp16) {
      nlohmann::json o = {{"keep_io_types", opt.keep_io_types}};
      if (!opt.fp16_block_ops.empty()) o["block_ops"] = opt.fp16_block_ops;
      if (!opt.fp16_block_nodes.empty()) o["block_nodes"] = opt.fp16_block_nodes;
      recipe.steps.push_back(MakeRecipeStep("fp16", o, "--fp16"));
      name.push_back("fp16");
    }
    if (opt.int8) {
      if (opt.dynamic && opt.weights_only) ThrowUsage("--dynamic and --weights-only are alternatives; choose one");
      nlohmann::json o = nlohmann::json::object();
      o["mode"] = opt.dynamic ? "dynamic" : opt.weights_only ? "weights_only" : "static";
      if (!opt.format.empty()) {
        if (opt.format != "qdq" && opt.format != "qop") ThrowUsage("--format must be qdq or qop, got '" + opt.format + "'");
        if (opt.format == "qop" && (opt.dynamic || opt.weights_only)) {
          ThrowUsage("--format applies to static quantization only (dynamic quantization always uses integer operators)");
        }
        o["format"] = opt.format;
      }
      if (opt.per_tensor) o["per_channel"] = false;
      if (!opt.activation_type.empty()) {
        if (opt.activation_type != "uint8" && opt.activation_type != "int8") {
          ThrowUsage("--activation-type must be uint8 or int8, got '" + opt.activation_type + "'");
        }
        o["activation_type"] = opt.activation_type;
      }
      if (!opt.calib_method.empty()) {
        CalibMethodFromName(opt.calib_method);  // a usage error naming the valid methods
        o["calib_method"] = opt.calib_method;
      }
      if (opt.percentile) {
        if (!(*opt.percentile > 0 && *opt.percentile <= 100)) ThrowUsage("--percentile must be in (0, 100]");
        o["percentile"] = *opt.percentile;
      }
      if (!opt.exclude_nodes.empty()) o["exclude_nodes"] = opt.exclude_nodes;
      if (!opt.exclude_ops.empty()) o["exclude_ops"] = opt.exclude_ops;
      if (opt.min_conv_depth) {
        if (opt.dynamic || opt.weights_only) ThrowUsage("--min-conv-depth applies to static quantization only");
        if (*opt.min_conv_depth < 0) ThrowUsage("--min-conv-depth must be >= 0");
        o["min_conv_depth"] = *opt.min_conv_depth;
      }
      recipe.steps.push_back(MakeRecipeStep("quantize", o, "--int8"));
      name.push_back(opt.dynamic ? "int8-dynamic" : opt.weights_only ? "int8-weights" : opt.format == "qop" ? "int8-qop" : "int8");
      if (opt.qat) {
        if (opt.dynamic || opt.weights_only || opt.format == "qop") {
          ThrowUsage("--qat trains through the QuantizeLinear/DequantizeLinear pairs of static QDQ quantization; "
                     "it does not apply with --dynamic, --weights-only or --format qop");
        }
        if (opt.finetune_dir.empty()) ThrowUsage("--qat needs the training data: --finetune DIR");
        recipe.steps.push_back(FinetuneStep(opt, opt.epochs.value_or(1)));
        name.push_back("qat");
      }
    }
    // Last, so that every earlier pass (and the report's per-tensor table) sees the original names.
    if (opt.compact_names) {
      recipe.steps.push_back(MakeRecipeStep("compact_names", nlohmann::json::object(), "--compact-names"));
      name.push_back("compact");
    }
    for (const auto& n : name) recipe.name += (recipe.name.empty() ? "" : "-") + n;
  }
  if (opt.no_optimize) recipe.optimize = false;
  if (recipe.name.empty()) recipe.name = recipe.optimize ? "optimized" : "rewritten";
  if ((!opt.fp16_block_ops.empty() || !opt.fp16_block_nodes.empty() || !opt.keep_io_types) && !opt.fp16) {
    ThrowUsage("--fp16-block-ops, --fp16-block-nodes and --no-keep-io-types only apply with --fp16");
  }
  if ((!opt.prune_pattern.empty() || !opt.prune_method.empty() || opt.prune_global || opt.prune_keep_first_last ||
       !opt.prune_exclude_nodes.empty() || opt.prune_update || opt.no_prune_update) &&
      !opt.prune) {
    ThrowUsage("--prune-pattern, --prune-method, --prune-global, --prune-keep-first-last, --prune-exclude-nodes and "
               "--prune-update/--no-prune-update only apply with --prune");
  }
  if (opt.prune_update && opt.no_prune_update) ThrowUsage("--prune-update and --no-prune-update exclude each other");
  if ((!opt.low_rank_method.empty() || opt.rank_multiple || !opt.low_rank_exclude_nodes.empty()) && !AnyLowRank(opt)) {
    ThrowUsage("--low-rank-method, --rank-multiple and --low-rank-exclude-nodes only apply with --low-rank, "
               "--low-rank-energy, --low-rank-params or --low-rank-macs");
  }
  if (AnyFinetuneOption(opt) && opt.finetune_dir.empty()) {
    ThrowUsage("--epochs, --lr, --temperature, --distill-loss, --label-weight, --feature-loss, --seed, --prune-steps, "
               "--finetune-limit, --qat and --student only apply with --finetune DIR");
  }
  if (opt.prune_steps && !opt.prune) ThrowUsage("--prune-steps applies with --prune");
  if (opt.prune_steps && *opt.prune_steps < 1) ThrowUsage("--prune-steps must be at least 1");
  if (opt.qat && !opt.int8) ThrowUsage("--qat applies with --int8");
  if (opt.epochs && *opt.epochs < 1) ThrowUsage("--epochs must be at least 1");
  if (opt.label_weight && !(*opt.label_weight >= 0 && *opt.label_weight <= 1)) ThrowUsage("--label-weight must be in [0, 1]");
  if (opt.temperature && !(*opt.temperature > 0)) ThrowUsage("--temperature must be positive");
  if (!opt.distill_loss.empty() && opt.distill_loss != "kl" && opt.distill_loss != "mse") {
    ThrowUsage("--distill-loss must be kl or mse, got '" + opt.distill_loss + "'");
  }
  if (opt.temperature && opt.distill_loss == "mse") ThrowUsage("--temperature applies with --distill-loss kl");
  if (opt.lr && !(*opt.lr > 0)) ThrowUsage("--lr must be positive");
  if (AnyInt8Option(opt) && !opt.int8) {
    ThrowUsage("--dynamic, --weights-only, --format, --per-tensor, --activation-type, --calib-method, --percentile, "
               "--exclude-nodes, --exclude-ops and --min-conv-depth only apply with --int8");
  }
  if (opt.auto_fallback && !opt.max_accuracy_drop && !opt.min_agreement) {
    ThrowUsage("--auto-fallback needs a gate: --max-accuracy-drop or --min-agreement");
  }
  // The fallback keeps quantized (or float16) nodes in float; it never un-prunes a weight, so a recipe that
  // only prunes gives it nothing to undo.
  const auto has_pass = [&](const char* pass) {
    return std::any_of(recipe.steps.begin(), recipe.steps.end(), [&](const RecipeStep& s) { return s.pass == pass; });
  };
  if (opt.auto_fallback && (has_pass("prune") || has_pass("prune_channels")) && !has_pass("quantize") &&
      !has_pass("fp16")) {
    ThrowUsage("--auto-fallback keeps quantized layers in float and never undoes pruning; with pruning alone, lower "
               "--prune or use --prune-exclude-nodes");
  }
  if (opt.max_accuracy_drop && opt.min_agreement) {
    ThrowUsage("--max-accuracy-drop and --min-agreement are alternatives; choose one");
  }
  return recipe;
}

GateSpec GateFromOptions(const JobOptions& opt) {
  GateSpec gate;
  gate.max_drop_pts = opt.max_accuracy_drop;
  gate.min_agreement = opt.min_agreement;
  gate.auto_fallback = opt.auto_fallback;
  // A negative drop demands an improvement: allowed, if rarely useful.
  if (gate.max_drop_pts && !std::isfinite(*gate.max_drop_pts)) ThrowUsage("--max-accuracy-drop must be a number of points");
  if (gate.min_agreement && !(*gate.min_agreement >= 0 && *gate.min_agreement <= 1)) {
    ThrowUsage("--min-agreement must be a fraction between 0 and 1");
  }
  if (gate.max_drop_pts && gate.min_agreement) {
    ThrowUsage("--max-accuracy-drop and --min-agreement are alternatives; choose one");
  }
  return gate;
}

void CheckRecipeData(const Recipe& recipe, const JobOptions& opt, const GateSpec& gate) {
  const bool needs_calib = NeedsCalibration(recipe);
  const bool table_exists = !opt.calib_table.empty() && FileExists(opt.calib_table);
  if (needs_calib && opt.calib_dir.empty() && !table_exists) {
    ThrowUsage("static INT8 quantization needs calibration data: --calib DIR (or an existing --calib-table FILE); "
               "--dynamic and --weights-only need none");
  }
  const bool wanda = opt.prune_method == "wanda" ||
                     std::any_of(recipe.steps.begin(), recipe.steps.end(), [](const RecipeStep& s) {
                       return s.pass == "prune" && s.options.value("method", std::string()) == "wanda";
                     });
  if (wanda && opt.calib_dir.empty()) ThrowUsage("--prune-method wanda needs calibration data: --calib DIR");
  if (opt.prune_update && opt.calib_dir.empty()) {
    ThrowUsage("--prune-update re-fits the kept weights on calibration data: it needs --calib DIR");
  }
  if (gate.active() && opt.eval_dir.empty() && opt.calib_dir.empty()) {
    ThrowUsage("the accuracy gate needs data to measure on: --eval DIR (or --calib DIR)");
  }
}

JobContext::JobContext(const JobOptions& opt, bool shared) : options_(opt) {
  spdlog::debug("loading {}", opt.model);
  original_ = LoadModel(opt.model, {}, &info_);
  // --student: the passes start from the student; the input model is the teacher and the reference.
  if (!opt.student.empty()) {
    student_ = LoadModel(opt.student);
    const auto want = ModelInputSpecs(original_), got = ModelInputSpecs(*student_);
    for (size_t i = 0; i < std::max(want.size(), got.size()); ++i) {
      if (i >= want.size() || i >= got.size() || want[i].name != got[i].name || want[i].dtype != got[i].dtype) {
        ThrowInvalid(opt.student + ": the student must take the inputs of " + opt.model + " (" +
                     (i < want.size() ? want[i].ToString() : std::string("no input ") + std::to_string(i)) + "), found " +
                     (i < got.size() ? got[i].ToString() : std::string("no input ") + std::to_string(i)));
      }
    }
    if (student_->graph.outputs.size() != original_.graph.outputs.size()) {
      ThrowInvalid(opt.student + ": the student has " + std::to_string(student_->graph.outputs.size()) +
                   " outputs, " + opt.model + " has " + std::to_string(original_.graph.outputs.size()));
    }
  }
  input_bytes_ = static_cast<int64_t>(info_.file_bytes);
  for (const auto& f : info_.external_files) input_bytes_ += FileSize(f);

  // Every data folder must fit the model before any work is done.
  DatasetOptions eval_opt;
  eval_opt.labels_file = opt.labels;
  if (!opt.eval_dir.empty()) eval_data_.emplace(Dataset::Open(opt.eval_dir, ModelInputSpecs(original_), eval_opt));
  if (!opt.calib_dir.empty()) calib_data_.emplace(Dataset::Open(opt.calib_dir, ModelInputSpecs(original_)));
  if (eval_data_) NoteSkipped(*eval_data_, opt.eval_limit, "evaluation");
  if (calib_data_) calib_plan_ = NoteSkipped(*calib_data_, opt.calib_limit, "calibration");
  if (opt.max_accuracy_drop) {
    const Dataset* d = eval_data_ ? &*eval_data_ : calib_data_ ? &*calib_data_ : nullptr;
    if (d != nullptr && !d->has_labels()) {
      ThrowUsage("--max-accuracy-drop needs labelled data (" + (eval_data_ ? opt.eval_dir : opt.calib_dir) +
                 " has no labels); use --min-agreement for unlabelled data");
    }
  }
  CalibrateOptions calib_opt;
  calib_opt.threads = opt.threads;
  calib_opt.limit = opt.calib_limit;
  calib_opt.progress = opt.progress;
  teacher_cache_ = std::make_unique<train::TeacherCache>();
  calibration_ = std::make_unique<DataCalibrationSource>(calib_data_ ? &*calib_data_ : nullptr, opt.calib_table, calib_opt);
  if (shared) calibration_->ShareAcross(&cleaned(!opt.no_optimize));
}

const Model& JobContext::cleaned(bool optimize) {
  std::optional<Model>& m = cleaned_[optimize ? 1 : 0];
  if (!m) m = CleanedModel(start_model(), optimize, options_.threads);
  return *m;
}

const Dataset* JobContext::compare_data(bool gate_active) const {
  return eval_data_ ? &*eval_data_ : (gate_active && calib_data_ ? &*calib_data_ : nullptr);
}

std::string JobContext::compare_label() const { return eval_data_ ? options_.eval_dir : options_.calib_dir; }

const ReferenceEvaluation* JobContext::reference(bool gate_active) {
  const Dataset* d = compare_data(gate_active);
  if (d == nullptr) return nullptr;
  if (!reference_ || &reference_->data() != d) {
    CompareOptions cmp;
    cmp.batch = options_.batch;
    cmp.limit = options_.eval_limit;
    cmp.threads = options_.threads;
    cmp.progress = options_.progress;
    reference_ = std::make_unique<ReferenceEvaluation>(original_, *d, compare_label(), cmp);
  }
  return reference_.get();
}

const std::string& JobContext::compare_sha256(bool gate_active) {
  if (!sha_done_) {
    // Hashed once: the fallback and other recipes compare many times on the same data.
    compare_sha256_ = eval_data_ ? DatasetSha256(*eval_data_)
                      : compare_data(gate_active) != nullptr ? calibration_->data_sha256() : std::string();
    sha_done_ = true;
  }
  return compare_sha256_;
}

SaveOptions JobSaveOptions(const JobContext& ctx) {
  const JobOptions& opt = ctx.options();
  SaveOptions save;
  save.external_data = opt.external_data ? SaveOptions::ExternalData::kAlways : SaveOptions::ExternalData::kAuto;
  save.external_threshold = opt.external_threshold;
  save.external_file = opt.external_file;
  save.allow_overwrite = opt.overwrite;
  save.protected_paths = ctx.load_info().external_files;
  save.protected_paths.push_back(opt.model);
  return save;
}

RecipeResult RunRecipe(JobContext& ctx, const Recipe& requested_in, const RecipeRunOptions& ro) {
  const auto start = std::chrono::steady_clock::now();
  const JobOptions& opt = ctx.options();
  const Model& original = ctx.original();
  const GateSpec& gate = ro.gate;
  Recipe requested = requested_in;
  const bool needs_calib = NeedsCalibration(requested);
  const Dataset* calib_data = ctx.calib_data();
  const Dataset* eval_data = ctx.eval_data();
  PipelineOptions pipe_opt;
  pipe_opt.threads = opt.threads;
  // FP16 uses calibration data, when given, to keep in float32 the nodes whose values exceed its range.
  const bool fp16_calib = calib_data != nullptr && HasPass(requested, "fp16");
  // Pruning measures activation norms on the calibration data (wanda, the default with --calib; channel
  // pruning ranks by activation and compensates the removed channels' means); low rank whitens the weights
  // by the layers' inputs and measures each layer's output fidelity there.
  const bool prune_calib = calib_data != nullptr &&
                           (HasPass(requested, "prune") || HasPass(requested, "prune_channels") || HasPass(requested, "low_rank"));
  pipe_opt.calibration = needs_calib || fp16_calib || prune_calib ? &ctx.calibration() : nullptr;
  pipe_opt.on_pass = [](const RecipeStep& step) { spdlog::debug("pass {}", step.pass); };
  pipe_opt.teacher = &original;
  pipe_opt.teacher_cache = &ctx.teacher_cache();

  // --target-macs: per-group ratios from the sensitivity measured on the calibration data (a uniform
  // ratio without it), written into the recipe so that the output's metadata reproduces them.
  nlohmann::json target_details;
  if (ro.target_macs) {
    if (calib_data == nullptr) {
      spdlog::info("--target-macs without --calib: the same ratio for every channel group, the smallest that "
                   "meets the target");
    }
    SensitivityOptions sens;
    sens.threads = opt.threads;
    sens.batch = opt.batch;
    sens.limit = opt.calib_limit;
    sens.calibration = pipe_opt.calibration;
    sens.cleanup = requested.optimize;
    sens.progress = ro.progress;
    for (auto& step : requested.steps) {
      if (step.pass != "prune_channels") continue;
      step.options = ChooseTargetMacsOptions(original, step, *ro.target_macs, calib_data, sens, &target_details);
    }
  }

  RecipeResult result;
  Recipe recipe = requested;
  std::vector<PassRun> runs;
  auto build = [&](const Recipe& r) {
    Model m = ctx.start_model();  // tensors are shared copy-on-write: this costs no weight copies
    runs = RunPipeline(m, r, pipe_opt);
    return m;
  };
  Model model = build(recipe);

  // Evaluation on --eval, or on the calibration data when only the gate asks for it.
  const ReferenceEvaluation* reference = ctx.reference(gate.active());
  const std::string compare_label = ctx.compare_label();
  std::optional<ModelComparison> comparison;
  std::optional<GateInfo> gate_info;
  if (reference != nullptr) comparison = reference->Compare(model);
  if (gate.active()) {
    GateCheck check = CheckGate(gate, *comparison);
    GateInfo g;
    g.data = compare_label;
    g.on_calibration_data = eval_data == nullptr;
    g.auto_fallback = gate.auto_fallback;
    if (!check.passed && gate.auto_fallback) {
      // Candidates: the named compute nodes of the cleaned-up float model, in graph order.
      const Model& cleaned = ctx.cleaned(recipe.optimize);
      std::vector<std::string> names, ops;
      for (const auto& n : cleaned.graph.nodes) {
        if (!n.name.empty() && IsFallbackCandidate(n.op_type)) {
          names.push_back(n.name);
          ops.push_back(n.op_type);
        }
      }
      const FallbackResult fb = RunFallback(
          gate, *reference, names, ops,
          [&](const std::vector<std::string>& nodes) { return build(WithFloatNodes(requested, nodes)); },
          /*sensitivity_samples=*/1000);
      std::vector<std::string> kept;
      for (const auto& st : fb.steps) {
        kept.push_back(st.node);
        g.kept_in_float.push_back({{"node", st.node}, {"op_type", st.op_type},
                                   {"sqnr_db_alone_in_float", st.sqnr_db_without},
                                   {"metric_after", st.check.value}});
      }
      g.sensitivity_samples = fb.sensitivity_samples;
      recipe = WithFloatNodes(requested, kept);
      model = build(recipe);  // also refreshes `runs` for the report
      comparison = reference->Compare(model);
      check = CheckGate(gate, *comparison);
    }
    g.check = check;
    gate_info = g;
  }
  if (comparison) comparison->data_sha256 = ctx.compare_sha256(gate.active());
  if (ro.target_macs) {
    // The budget is checked on the model written (quantization counts as its float model).
    const int64_t before = CountMacs(original).total, after = CountMacs(model).total;
    if (static_cast<double>(after) > *ro.target_macs * static_cast<double>(before)) {
      ThrowInternal("--target-macs " + std::to_string(*ro.target_macs) + ": the output keeps " +
                    std::to_string(after) + " of " + std::to_string(before) + " MACs");
    }
    for (auto& r : runs) {
      if (r.pass != "prune_channels") continue;
      r.details["target_macs"] = target_details;
      const std::string method = target_details.value("method", std::string());
      std::ostringstream note;
      note << std::fixed << std::setprecision(4) << "--target-macs " << *ro.target_macs << ": " << after << " of "
           << before << " MACs kept (" << static_cast<double>(after) / static_cast<double>(before) << "), "
           << (method == "sensitivity" ? "per-group ratios from the sensitivity on the calibration data"
               : method == "uniform"   ? "one ratio for every group (no --calib), found by bisection"
                                       : "nothing to prune");
      r.notes.push_back(note.str());
    }
  }

  model.SetMetadata(kMetaRecipe, recipe.ToJson().dump());
  model.SetMetadata(kMetaVersion, COMPRESS_VERSION);
  if (eval_data != nullptr) model.SetMetadata(kMetaEvalSha256, comparison->data_sha256);
  std::optional<CalibrationInfo> calib_info;
  if (needs_calib) {
    CalibrationInfo c;
    c.data = opt.calib_dir;
    c.data_sha256 = ctx.calibration().data_sha256();
    c.table = opt.calib_table;
    c.reused_table = ctx.calibration().reused_table();
    c.samples = ctx.samples_for_calibration();
    c.skipped = ctx.skipped_for_calibration();
    model.SetMetadata(kMetaCalibSha256, c.data_sha256);
    calib_info = c;
  }

  const SaveResult saved = SaveModel(model, ro.output, JobSaveOptions(ctx));

  const CheckResult check = [&] {
    FolderReadLock lock(DirName(ro.output));  // a concurrent run may be replacing the same output
    return CheckModelFile(ro.output);
  }();
  if (!check.ok) spdlog::warn("{}: the ONNX checker rejects the output: {}", ro.output, check.message);

  ReportInput rin;
  // Per-layer fidelity on the first samples of the evaluation (or calibration) data.
  const Dataset* layer_data = eval_data != nullptr ? eval_data : calib_data;
  if (ro.layers && layer_data != nullptr && !recipe.steps.empty()) {
    rin.layers = CompareLayers(original, model, *layer_data, 256, opt.threads);
  }
  rin.input_path = opt.model;
  rin.output_path = ro.output;
  rin.input_bytes = ctx.input_bytes();
  rin.output_bytes = static_cast<int64_t>(saved.model_bytes + saved.external_bytes);
  rin.input_files = ctx.load_info().external_files;
  rin.input_files.insert(rin.input_files.begin(), opt.model);
  rin.output_files = {ro.output};
  if (!saved.external_path.empty()) rin.output_files.push_back(saved.external_path);
  rin.threads = opt.threads;
  rin.zstd_max_bytes = opt.zstd_size == "always" ? -1 : opt.zstd_size == "never" ? 0 : kZstdAutoMaxBytes;
  if (opt.zstd_size == "never") {  // no "zstd" section at all
    rin.input_files.clear();
    rin.output_files.clear();
  }
  rin.before = &original;
  rin.after = &model;
  rin.recipe = recipe;
  rin.passes = runs;
  rin.comparison = comparison;
  rin.checker_ok = check.ok;
  rin.checker_message = check.message;
  rin.calibration = calib_info;
  rin.gate = gate_info;
  rin.include_timings = ro.include_timings;
  rin.total_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  result.report = BuildReport(rin);
  result.recipe = recipe;
  result.model = std::move(model);
  result.output = ro.output;
  result.gate = gate_info;
  result.checker_ok = check.ok;
  result.checker_message = check.message;
  return result;
}

namespace {

// Every file a run writes can be created, and no two are the same file: checked before the model is
// read, so that a long run does not fail at its end (a missing input is reported as such first).
void CheckWrites(const JobOptions& opt, const std::string& output, bool table_exists) {
  for (const std::string* report : {&opt.report_json, &opt.report_md, &opt.report_html}) {
    if (!report->empty() && (SameFile(*report, opt.model) || SameFile(*report, output))) {
      ThrowUsage(*report + ": the report would overwrite a model file");
    }
  }
  if (!FileExists(opt.model)) return;
  std::vector<std::pair<std::string, std::string>> writes = {{"the output model", output}};
  if (opt.external_data) {
    writes.push_back({"the external data file", opt.external_file.empty()
                                                    ? output + ".data"
                                                    : DirName(output) + "/" + opt.external_file});
  }
  if (!opt.report_json.empty()) writes.push_back({"--report", opt.report_json});
  if (!opt.report_md.empty()) writes.push_back({"--report-md", opt.report_md});
  if (!opt.report_html.empty()) writes.push_back({"--report-html", opt.report_html});
  if (!opt.calib_table.empty() && !table_exists) writes.push_back({"--calib-table", opt.calib_table});
  std::vector<std::string> resolved;
  for (const auto& [what, path] : writes) {
    std::error_code ec;
    const auto r = std::filesystem::weakly_canonical(path, ec);
    resolved.push_back(ec ? path : r.string());
  }
  for (size_t i = 0; i < writes.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (resolved[i] == resolved[j]) {
        ThrowUsage(writes[i].first + " and " + writes[j].first + " are the same file '" + writes[i].second +
                   "'; give each its own path");
      }
    }
  }
  for (const auto& w : writes) {
    if (!opt.overwrite && SameFile(w.second, opt.model)) {
      ThrowUsage("refusing to overwrite the input file '" + opt.model + "' with '" + w.second +
                 "'; choose another output path (or pass --overwrite)");
    }
    CheckOutputPath(w.second);
  }
}

}  // namespace

RecipeResult RunJob(const JobOptions& opt) {
  const Recipe recipe = RecipeFromOptions(opt);
  const GateSpec gate = GateFromOptions(opt);
  CheckRecipeData(recipe, opt, gate);
  if (!opt.calib_table.empty() && !NeedsCalibration(recipe)) {
    ThrowUsage("--calib-table only applies to static --int8 quantization");
  }
  const std::string output = opt.output.empty() ? DefaultOutputPath(opt.model, recipe.name) : opt.output;
  CheckWrites(opt, output, !opt.calib_table.empty() && FileExists(opt.calib_table));
  JobContext ctx(opt, /*shared=*/false);
  RecipeRunOptions ro;
  ro.output = output;
  ro.gate = gate;
  ro.progress = opt.progress;
  ro.target_macs = opt.target_macs;
  RecipeResult r = RunRecipe(ctx, recipe, ro);
  if (!opt.report_json.empty()) WriteFileAtomic(opt.report_json, r.report.dump(2) + "\n");
  if (!opt.report_md.empty()) WriteFileAtomic(opt.report_md, FormatReportMarkdown(r.report));
  if (!opt.report_html.empty()) WriteFileAtomic(opt.report_html, FormatReportHtml(r.report));
  return r;
}

void ThrowIfJobFailed(const RecipeResult& r, const JobOptions& opt) {
  if (!r.checker_ok && CheckModelFile(opt.student.empty() ? opt.model : opt.student).ok) {
    // The input was valid and the output is not: a pass is at fault. The output stays for inspection.
    ThrowInternal(r.output + ": the ONNX checker rejects the output although it accepts the input: " +
                  r.checker_message);
  }
  if (r.gate && !r.gate->check.passed) {
    throw Error(ErrorKind::kAccuracyGate, FormatGateFailure(r.gate->check, r.gate->data) +
                                              "; the output is written for inspection: " + r.output);
  }
}

std::string FormatGateFailure(const GateCheck& g, const std::string& data) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(2);
  if (g.metric == "top1_drop_pts") {
    os << "accuracy gate failed: top-1 dropped " << g.value << " pt on " << data << ", more than the "
       << g.threshold << " allowed (by " << -g.margin << " pt)";
  } else {
    os << "accuracy gate failed: top-1 agreement " << std::setprecision(4) << g.value << " on " << data
       << " is below the required " << g.threshold << " (by " << -g.margin << ")";
  }
  return os.str();
}


}  // namespace compress
