#include "compress/cli/app.h"

#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <new>
#include <optional>
#include <set>

#include "compress/cli/log.h"
#include "compress/eval/evaluate.h"
#include "compress/exec/executor.h"
#include "compress/io/dataset.h"
#include "compress/io/npy.h"
#include "compress/io/onnx_io.h"
#include "compress/passes/builders.h"
#include "compress/pipeline/pipeline.h"
#include "compress/pipeline/recipe.h"
#include "compress/report/inspect.h"
#include "compress/report/report.h"
#include "compress/report/zstd_size.h"
#include "compress/report/gate.h"
#include "compress/report/sensitivity.h"
#include "compress/eval/macs.h"
#include "compress/calib/calibration.h"
#include "compress/util/error.h"
#include "compress/util/fs.h"
#include "compress/util/progress.h"
#include "compress/train/finetune.h"
#include "compress/version.h"

namespace compress {

namespace {

struct GlobalOptions {
  bool quiet = false;
  int verbose = 0;
};

struct MainOptions {
  std::string model;
  std::string zstd_size = "auto";
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
  std::string eval_dir;
  std::string labels;
  int64_t eval_limit = 0;
  int64_t batch = 64;
  int threads = 0;
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

struct InspectOptions {
  std::string model;
  bool json = false;
};

struct EvalCliOptions {
  std::string model;
  std::string data;
  std::string labels;
  std::string predictions;
  int64_t batch = 64;
  int64_t limit = 0;
  int threads = 0;
  bool json = false;
  bool reference = false;
};

struct BenchCliOptions {
  std::string model;
  std::string data;
  int64_t batch = 1;
  int threads = 0;
  double min_seconds = 2.0;
  bool profile = false;
  bool json = false;
  bool reference = false;
  bool train = false;
};

struct SensitivityCliOptions {
  std::string model;
  std::string calib;
  std::string labels;
  std::string json_out;
  std::optional<double> prune;
  std::optional<double> prune_channels;
  std::optional<double> low_rank;
  std::string low_rank_method;
  std::string prune_pattern;
  std::string prune_method;
  int64_t batch = 64;
  int64_t limit = 0;
  int threads = 0;
};

struct RunCliOptions {
  std::string model;
  std::string data;
  std::string out;
  int64_t batch = 0;
  int threads = 0;
  bool reference = false;
};

std::string StemOf(const std::string& path) {
  std::string base = BaseName(path);
  const auto dot = base.rfind('.');
  return dot == std::string::npos || dot == 0 ? base : base.substr(0, dot);
}

std::string DefaultOutput(const std::string& input, const std::string& recipe) {
  const std::string dir = DirName(input);
  return (dir == "." ? std::string() : dir + "/") + StemOf(input) + "." + recipe + ".onnx";
}

bool AnyInt8Option(const MainOptions& opt) {
  return opt.dynamic || opt.weights_only || !opt.calib_method.empty() || opt.percentile.has_value() ||
         !opt.format.empty() || opt.per_tensor || !opt.activation_type.empty() || !opt.exclude_nodes.empty() ||
         !opt.exclude_ops.empty() || opt.min_conv_depth.has_value();
}

void CheckLowRankMethod(const std::string& method) {
  if (method != "svd" && method != "whitened" && method != "auto") {
    ThrowUsage("--low-rank-method must be svd, whitened or auto, got '" + method + "'");
  }
}

bool AnyFinetuneOption(const MainOptions& opt) {
  return opt.epochs || opt.lr || opt.temperature || !opt.distill_loss.empty() || opt.label_weight || !opt.feature_loss.empty() || opt.seed ||
         opt.prune_steps || opt.finetune_limit || opt.qat || !opt.student.empty();
}

// The finetune step of --finetune DIR and its flags.
RecipeStep FinetuneStep(const MainOptions& opt, int64_t epochs) {
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

bool AnyLowRank(const MainOptions& opt) {
  return opt.low_rank || opt.low_rank_energy || opt.low_rank_params || opt.low_rank_macs;
}

// The low_rank step of --low-rank, --low-rank-energy, --low-rank-params or --low-rank-macs.
RecipeStep LowRankStep(const MainOptions& opt) {
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

// Recipe from --recipe or from the pass flags; validated before anything is loaded.
Recipe BuildRecipe(const MainOptions& opt) {
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

int RunMain(const MainOptions& opt, std::ostream& out) {
  const auto start = std::chrono::steady_clock::now();
  Recipe requested = BuildRecipe(opt);
  const bool needs_calib = NeedsCalibration(requested);
  const bool table_exists = !opt.calib_table.empty() && FileExists(opt.calib_table);
  if (needs_calib && opt.calib_dir.empty() && !table_exists) {
    ThrowUsage("static INT8 quantization needs calibration data: --calib DIR (or an existing --calib-table FILE); "
               "--dynamic and --weights-only need none");
  }
  if (opt.prune_method == "wanda" && opt.calib_dir.empty()) {
    ThrowUsage("--prune-method wanda needs calibration data: --calib DIR");
  }
  if (opt.prune_update && opt.calib_dir.empty()) {
    ThrowUsage("--prune-update re-fits the kept weights on calibration data: it needs --calib DIR");
  }
  if (!opt.calib_table.empty() && !needs_calib) ThrowUsage("--calib-table only applies to static --int8 quantization");
  GateSpec gate;
  gate.max_drop_pts = opt.max_accuracy_drop;
  gate.min_agreement = opt.min_agreement;
  gate.auto_fallback = opt.auto_fallback;
  // A negative drop demands an improvement: allowed, if rarely useful.
  if (gate.max_drop_pts && !std::isfinite(*gate.max_drop_pts)) ThrowUsage("--max-accuracy-drop must be a number of points");
  if (gate.min_agreement && !(*gate.min_agreement >= 0 && *gate.min_agreement <= 1)) {
    ThrowUsage("--min-agreement must be a fraction between 0 and 1");
  }
  if (gate.active() && opt.eval_dir.empty() && opt.calib_dir.empty()) {
    ThrowUsage("the accuracy gate needs data to measure on: --eval DIR (or --calib DIR)");
  }
  for (const std::string* report : {&opt.report_json, &opt.report_md}) {
    if (!report->empty() && (SameFile(*report, opt.model) || (!opt.output.empty() && SameFile(*report, opt.output)))) {
      ThrowUsage(*report + ": the report would overwrite a model file");
    }
  }
  // Every file this run writes can be created, and no two are the same file: checked before the model
  // is read, so that a long run does not fail at its end (a missing input is reported as such first).
  const std::string output = opt.output.empty() ? DefaultOutput(opt.model, requested.name) : opt.output;
  if (FileExists(opt.model)) {
    std::vector<std::pair<std::string, std::string>> writes = {{"the output model", output}};
    if (opt.external_data) {
      writes.push_back({"the external data file", opt.external_file.empty()
                                                      ? output + ".data"
                                                      : DirName(output) + "/" + opt.external_file});
    }
    if (!opt.report_json.empty()) writes.push_back({"--report", opt.report_json});
    if (!opt.report_md.empty()) writes.push_back({"--report-md", opt.report_md});
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

  LoadInfo info;
  spdlog::debug("loading {}", opt.model);
  const Model original = LoadModel(opt.model, {}, &info);
  // --student: the passes start from the student; the input model is the teacher and the reference.
  std::optional<Model> student;
  if (!opt.student.empty()) {
    student = LoadModel(opt.student);
    const auto want = ModelInputSpecs(original), got = ModelInputSpecs(*student);
    for (size_t i = 0; i < std::max(want.size(), got.size()); ++i) {
      if (i >= want.size() || i >= got.size() || want[i].name != got[i].name || want[i].dtype != got[i].dtype) {
        ThrowInvalid(opt.student + ": the student must take the inputs of " + opt.model + " (" +
                     (i < want.size() ? want[i].ToString() : std::string("no input ") + std::to_string(i)) + "), found " +
                     (i < got.size() ? got[i].ToString() : std::string("no input ") + std::to_string(i)));
      }
    }
    if (student->graph.outputs.size() != original.graph.outputs.size()) {
      ThrowInvalid(opt.student + ": the student has " + std::to_string(student->graph.outputs.size()) +
                   " outputs, " + opt.model + " has " + std::to_string(original.graph.outputs.size()));
    }
  }
  const Model& start_model = student ? *student : original;
  int64_t input_bytes = static_cast<int64_t>(info.file_bytes);
  for (const auto& f : info.external_files) input_bytes += FileSize(f);

  // Every data folder must fit the model before any work is done.
  DatasetOptions eval_opt;
  eval_opt.labels_file = opt.labels;
  std::optional<Dataset> eval_data, calib_data;
  if (!opt.eval_dir.empty()) eval_data.emplace(Dataset::Open(opt.eval_dir, ModelInputSpecs(original), eval_opt));
  if (!opt.calib_dir.empty()) calib_data.emplace(Dataset::Open(opt.calib_dir, ModelInputSpecs(original)));
  // A model with a fixed batch runs only whole batches: say so when data is left out.
  const auto note_skipped = [](const Dataset& d, int64_t limit, const std::string& what) {
    const BatchPlan plan = d.PlanBatches(limit, 1);
    if (plan.skipped > 0) {
      spdlog::warn("{}: the model takes batches of exactly {} samples; the last {} of {} samples are skipped ({})",
                   d.dir(), plan.batch, plan.skipped, plan.samples + plan.skipped, what);
    }
    return plan;
  };
  if (eval_data) note_skipped(*eval_data, opt.eval_limit, "evaluation");
  std::optional<BatchPlan> calib_plan;
  if (calib_data) calib_plan = note_skipped(*calib_data, opt.calib_limit, "calibration");

  if (gate.max_drop_pts) {
    const Dataset* d = eval_data ? &*eval_data : calib_data ? &*calib_data : nullptr;
    if (d != nullptr && !d->has_labels()) {
      ThrowUsage("--max-accuracy-drop needs labelled data (" + (eval_data ? opt.eval_dir : opt.calib_dir) +
                 " has no labels); use --min-agreement for unlabelled data");
    }
  }
  CalibrateOptions calib_opt;
  calib_opt.threads = opt.threads;
  calib_opt.limit = opt.calib_limit;
  DataCalibrationSource calibration(calib_data ? &*calib_data : nullptr, opt.calib_table, calib_opt);
  PipelineOptions pipe_opt;
  pipe_opt.threads = opt.threads;
  // FP16 uses calibration data, when given, to keep in float32 the nodes whose values exceed its range.
  const bool fp16_calib = calib_data.has_value() &&
                          std::any_of(requested.steps.begin(), requested.steps.end(),
                                      [](const RecipeStep& s) { return s.pass == "fp16"; });
  // Pruning measures activation norms on the calibration data (wanda, the default with --calib; channel
  // pruning ranks by activation and compensates the removed channels' means); low rank whitens the weights
  // by the layers' inputs and measures each layer's output fidelity there.
  const bool prune_calib = calib_data.has_value() &&
                           std::any_of(requested.steps.begin(), requested.steps.end(), [](const RecipeStep& s) {
                             return s.pass == "prune" || s.pass == "prune_channels" || s.pass == "low_rank";
                           });
  pipe_opt.calibration = needs_calib || fp16_calib || prune_calib ? &calibration : nullptr;
  pipe_opt.on_pass = [](const RecipeStep& step) { spdlog::debug("pass {}", step.pass); };
  pipe_opt.teacher = &original;

  // --target-macs: per-group ratios from the sensitivity measured on the calibration data (a uniform
  // ratio without it), written into the recipe so that the output's metadata reproduces them.
  nlohmann::json target_details;
  if (opt.target_macs) {
    if (!calib_data) {
      spdlog::info("--target-macs without --calib: the same ratio for every channel group, the smallest that "
                   "meets the target");
    }
    SensitivityOptions sens;
    sens.threads = opt.threads;
    sens.batch = opt.batch;
    sens.limit = opt.calib_limit;
    sens.calibration = pipe_opt.calibration;
    sens.cleanup = requested.optimize;
    for (auto& step : requested.steps) {
      if (step.pass != "prune_channels") continue;
      step.options = ChooseTargetMacsOptions(original, step, *opt.target_macs, calib_data ? &*calib_data : nullptr,
                                             sens, &target_details);
    }
  }

  Recipe recipe = requested;
  std::vector<PassRun> runs;
  auto build = [&](const Recipe& r) {
    Model m = start_model;  // tensors are shared copy-on-write: this costs no weight copies
    runs = RunPipeline(m, r, pipe_opt);
    return m;
  };
  Model model = build(recipe);

  // Evaluation on --eval, or on the calibration data when only the gate asks for it.
  const Dataset* compare_data = eval_data ? &*eval_data : (gate.active() && calib_data ? &*calib_data : nullptr);
  const std::string compare_label = eval_data ? opt.eval_dir : opt.calib_dir;
  CompareOptions cmp;
  cmp.batch = opt.batch;
  cmp.limit = opt.eval_limit;
  cmp.threads = opt.threads;
  std::optional<ModelComparison> comparison;
  std::optional<GateInfo> gate_info;
  // Hashed once: the fallback below compares many times on the same data.
  const std::string compare_sha256 =
      eval_data ? DatasetSha256(*eval_data) : compare_data != nullptr ? calibration.data_sha256() : std::string();
  if (compare_data != nullptr) comparison = CompareModels(original, model, *compare_data, compare_label, cmp);
  if (gate.active()) {
    GateCheck check = CheckGate(gate, *comparison);
    GateInfo g;
    g.data = compare_label;
    g.on_calibration_data = !eval_data.has_value();
    g.auto_fallback = gate.auto_fallback;
    if (!check.passed && gate.auto_fallback) {
      // Candidates: the named compute nodes of the cleaned-up float model, in graph order.
      Model cleaned = original;
      Recipe cleanup_only = recipe;
      cleanup_only.steps.clear();
      RunPipeline(cleaned, cleanup_only, pipe_opt);
      std::vector<std::string> names, ops;
      for (const auto& n : cleaned.graph.nodes) {
        if (!n.name.empty() && IsFallbackCandidate(n.op_type)) {
          names.push_back(n.name);
          ops.push_back(n.op_type);
        }
      }
      const FallbackResult fb = RunFallback(
          gate, original, names, ops, [&](const std::vector<std::string>& nodes) { return build(WithFloatNodes(requested, nodes)); },
          *compare_data, compare_label, cmp, /*sensitivity_samples=*/1000);
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
      comparison = CompareModels(original, model, *compare_data, compare_label, cmp);
      check = CheckGate(gate, *comparison);
    }
    g.check = check;
    gate_info = g;
  }
  if (comparison) comparison->data_sha256 = compare_sha256;
  if (opt.target_macs) {
    // The budget is checked on the model written (quantization counts as its float model).
    const int64_t before = CountMacs(original).total, after = CountMacs(model).total;
    if (static_cast<double>(after) > *opt.target_macs * static_cast<double>(before)) {
      ThrowInternal("--target-macs " + std::to_string(*opt.target_macs) + ": the output keeps " +
                    std::to_string(after) + " of " + std::to_string(before) + " MACs");
    }
    for (auto& r : runs) {
      if (r.pass != "prune_channels") continue;
      r.details["target_macs"] = target_details;
      const std::string method = target_details.value("method", std::string());
      std::ostringstream note;
      note << std::fixed << std::setprecision(4) << "--target-macs " << *opt.target_macs << ": " << after << " of "
           << before << " MACs kept (" << static_cast<double>(after) / static_cast<double>(before) << "), "
           << (method == "sensitivity" ? "per-group ratios from the sensitivity on the calibration data"
               : method == "uniform"   ? "one ratio for every group (no --calib), found by bisection"
                                       : "nothing to prune");
      r.notes.push_back(note.str());
    }
  }

  model.SetMetadata(kMetaRecipe, recipe.ToJson().dump());
  model.SetMetadata(kMetaVersion, COMPRESS_VERSION);
  if (eval_data) model.SetMetadata(kMetaEvalSha256, comparison->data_sha256);
  std::optional<CalibrationInfo> calib_info;
  if (needs_calib) {
    CalibrationInfo c;
    c.data = opt.calib_dir;
    c.data_sha256 = calibration.data_sha256();
    c.table = opt.calib_table;
    c.reused_table = calibration.reused_table();
    c.samples = calib_plan ? calib_plan->samples : 0;
    c.skipped = calib_plan ? calib_plan->skipped : 0;
    model.SetMetadata(kMetaCalibSha256, c.data_sha256);
    calib_info = c;
  }

  SaveOptions save;
  save.external_data = opt.external_data ? SaveOptions::ExternalData::kAlways : SaveOptions::ExternalData::kAuto;
  save.external_threshold = opt.external_threshold;
  save.external_file = opt.external_file;
  save.allow_overwrite = opt.overwrite;
  save.protected_paths = info.external_files;
  save.protected_paths.push_back(opt.model);
  const SaveResult saved = SaveModel(model, output, save);

  const CheckResult check = [&] {
    FolderReadLock lock(DirName(output));  // a concurrent run may be replacing the same output
    return CheckModelFile(output);
  }();
  if (!check.ok) spdlog::warn("{}: the ONNX checker rejects the output: {}", output, check.message);

  ReportInput rin;
  // Per-layer fidelity on the first samples of the evaluation (or calibration) data.
  const Dataset* layer_data = eval_data ? &*eval_data : calib_data ? &*calib_data : nullptr;
  if (layer_data != nullptr && !recipe.steps.empty()) {
    rin.layers = CompareLayers(original, model, *layer_data, 256, opt.threads);
  }
  rin.input_path = opt.model;
  rin.output_path = output;
  rin.input_bytes = input_bytes;
  rin.output_bytes = static_cast<int64_t>(saved.model_bytes + saved.external_bytes);
  rin.input_files = info.external_files;
  rin.input_files.insert(rin.input_files.begin(), opt.model);
  rin.output_files = {output};
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
  rin.total_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const nlohmann::json report = BuildReport(rin);
  if (!opt.report_json.empty()) WriteFileAtomic(opt.report_json, report.dump(2) + "\n");
  if (!opt.report_md.empty()) WriteFileAtomic(opt.report_md, FormatReportMarkdown(report));
  out << FormatReportSummary(report);
  if (!check.ok && CheckModelFile(opt.student.empty() ? opt.model : opt.student).ok) {
    // The input was valid and the output is not: a pass is at fault. The output stays for inspection.
    ThrowInternal(output + ": the ONNX checker rejects the output although it accepts the input: " + check.message);
  }
  if (gate_info && !gate_info->check.passed) {
    throw Error(ErrorKind::kAccuracyGate, FormatGateFailure(gate_info->check, compare_label) +
                                              "; the output is written for inspection: " + output);
  }
  return 0;
}

int RunInspect(const InspectOptions& opt, std::ostream& out) {
  const Model model = LoadModel(opt.model);
  const nlohmann::json doc = InspectModel(model, opt.model);
  if (opt.json) out << doc.dump(2) << "\n";
  else out << FormatInspection(doc);
  return 0;
}

std::string Percent(double fraction) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(2) << fraction * 100.0 << "%";
  return os.str();
}

int RunEval(const EvalCliOptions& opt, std::ostream& out) {
  const Model model = LoadModel(opt.model);
  DatasetOptions data_opt;
  data_opt.labels_file = opt.labels;
  const Dataset data = Dataset::Open(opt.data, ModelInputSpecs(model), data_opt);
  ExecutorOptions exec_opt;
  exec_opt.threads = opt.threads;
  exec_opt.reference_kernels = opt.reference;
  Executor executor(model, exec_opt);
  EvalOptions eval_opt;
  eval_opt.batch = opt.batch;
  eval_opt.limit = opt.limit;
  const EvalResult r = Evaluate(executor, data, eval_opt);
  if (!opt.predictions.empty()) {
    WriteNpy(opt.predictions, Tensor::FromVector<int64_t>({static_cast<int64_t>(r.predictions.size())}, r.predictions));
  }
  nlohmann::json doc;
  doc["schema"] = "compress.eval/1";
  doc["model"] = opt.model;
  doc["data"] = opt.data;
  doc["samples"] = r.samples;
  doc["skipped"] = r.skipped;
  doc["batch"] = r.batch;
  doc["threads"] = r.threads;
  doc["top1"] = r.has_labels ? nlohmann::json(r.top1) : nlohmann::json(nullptr);
  doc["correct"] = r.has_labels ? nlohmann::json(r.correct) : nlohmann::json(nullptr);
  doc["seconds"] = r.seconds;
  doc["samples_per_second"] = r.samples_per_second;
  doc["outputs"] = nlohmann::json::array();
  for (const auto& o : r.outputs) {
    doc["outputs"].push_back({{"name", o.name}, {"sample_shape", o.sample_shape}, {"mean", o.mean},
                              {"std", o.stddev}, {"min", o.min}, {"max", o.max}, {"non_finite", o.non_finite}});
  }
  if (opt.json) {
    out << doc.dump(2) << "\n";
    return 0;
  }
  out << "model       " << opt.model << "\n";
  out << "data        " << opt.data << " (" << r.samples << " samples, " << data.layout();
  if (r.skipped > 0) out << "; the last " << r.skipped << " skipped: too few for the model's fixed batch of " << r.batch;
  out << ")\n";
  if (r.has_labels) out << "top-1       " << Percent(r.top1) << " (" << r.correct << "/" << r.samples << ")\n";
  for (const auto& o : r.outputs) {
    out << "output      " << o.name << " " << ShapeToString(o.sample_shape) << ": mean " << o.mean << ", std "
        << o.stddev << ", min " << o.min << ", max " << o.max;
    if (o.non_finite) out << ", " << o.non_finite << " non-finite";
    out << "\n";
  }
  out << "throughput  " << std::fixed << std::setprecision(0) << r.samples_per_second << " samples/s (batch "
      << r.batch << ", " << r.threads << " threads)\n";
  return 0;
}

// Output names may hold characters that are not safe in file names.
std::string SafeFileName(const std::string& name) {
  std::string s = name.empty() ? std::string("output") : name;
  for (char& c : s) {
    const bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
    if (!ok) c = '_';
  }
  if (s == "." || s == "..") s = "_";
  return s;
}

std::string StripDataExtension(const std::string& name) {
  for (const char* ext : {".npy", ".pb"}) {
    const std::string e = ext;
    if (name.size() > e.size() && name.compare(name.size() - e.size(), e.size(), e) == 0) {
      return name.substr(0, name.size() - e.size());
    }
  }
  return name;
}

int RunRun(const RunCliOptions& opt, std::ostream& out) {
  const Model model = LoadModel(opt.model);
  const Dataset data = Dataset::Open(opt.data, ModelInputSpecs(model));
  ExecutorOptions exec_opt;
  exec_opt.threads = opt.threads;
  exec_opt.reference_kernels = opt.reference;
  Executor executor(model, exec_opt);
  std::error_code ec;
  std::filesystem::create_directories(opt.out, ec);
  if (ec || !IsDirectory(opt.out)) ThrowIO("cannot create output folder '" + opt.out + "': " + ec.message());

  // Either one run per record as stored, or batches of samples as Dataset::PlanBatches forms them. A model
  // with a fixed batch F runs a record of another size in groups of F, its outputs joined along their
  // batch axes; samples that cannot fill a group are skipped.
  const BatchLayout& layout = data.batch_layout();
  const int64_t fixed = layout.fixed_batch;
  std::vector<int> output_axes;
  for (const auto& o : executor.outputs()) output_axes.push_back(layout.OutputAxis(o.type.shape));
  const auto run_record = [&](size_t rec) {
    const int64_t rows = data.record_rows(rec), first = data.record_first_sample(rec);
    if (fixed == 0 || rows == fixed) return executor.Run(data.ReadRecord(rec));
    std::vector<std::vector<Tensor>> parts;
    for (int64_t k = 0; k + fixed <= rows; k += fixed) parts.push_back(executor.Run(data.ReadSamples(first + k, fixed)));
    if (parts.empty()) return std::vector<Tensor>();
    std::vector<Tensor> joined;
    for (size_t o = 0; o < parts[0].size(); ++o) {
      std::vector<Tensor> pieces;
      for (auto& p : parts) {
        const int axis = output_axes[o];
        if (axis >= p[o].rank() || p[o].dims()[static_cast<size_t>(axis)] != fixed) {
          ThrowInvalid(data.record_name(rec) + ": output '" + executor.outputs()[o].name + "' has shape " +
                       ShapeToString(p[o].dims()) + ", with no batch axis of " + std::to_string(fixed) +
                       " to join the record's runs along; use --batch to write one output per run");
        }
        pieces.push_back(std::move(p[o]));
      }
      joined.push_back(ConcatAlongAxis(pieces, output_axes[o]));
    }
    return joined;
  };
  std::optional<BatchPlan> plan;
  if (opt.batch > 0) plan = data.PlanBatches(0, opt.batch);
  size_t files = 0;
  int64_t skipped = plan ? plan->skipped : 0;
  const int64_t units = plan ? static_cast<int64_t>(plan->batches.size()) : static_cast<int64_t>(data.num_records());
  ProgressBar bar("running", units);
  for (int64_t u = 0; u < units; ++u) {
    std::string name;
    std::vector<Tensor> outputs;
    if (plan) {
      std::ostringstream os;
      os << "batch_" << std::setw(5) << std::setfill('0') << u;
      name = os.str();
      const SampleRange& range = plan->batches[static_cast<size_t>(u)];
      outputs = executor.Run(data.ReadSamples(range.first, range.count));
    } else {
      const size_t rec = static_cast<size_t>(u);
      name = SafeFileName(StripDataExtension(data.record_name(rec)));
      outputs = run_record(rec);
      if (fixed > 0) skipped += data.record_rows(rec) % fixed;
      if (outputs.empty()) continue;
    }
    const std::string dir = opt.out + "/" + name;
    std::filesystem::create_directories(dir, ec);
    if (ec) ThrowIO("cannot create output folder '" + dir + "': " + ec.message());
    for (size_t k = 0; k < outputs.size(); ++k) {
      WriteNpy(dir + "/" + SafeFileName(executor.outputs()[k].name) + ".npy", outputs[k]);
      ++files;
    }
    bar.Advance(1);
  }
  bar.Finish();
  if (skipped > 0) {
    spdlog::warn("{}: the model takes batches of exactly {} samples; {} samples that cannot fill one are skipped",
                 opt.data, fixed, skipped);
  }
  out << "wrote " << files << " files for " << units << (plan ? " batches" : " records") << " to "
      << opt.out << "\n";
  return 0;
}

// Inputs for timing: the first `batch` samples of a data folder, or deterministic pseudo-random values
// (standard normal for floats, zeros otherwise) shaped after the declaration with `batch` on each input's
// batch axis. `batch` is the model's fixed batch when it declares one.
std::vector<Tensor> BenchInputs(const Model& model, const BenchCliOptions& opt, int64_t batch) {
  const auto specs = ModelInputSpecs(model);
  if (!opt.data.empty()) {
    const Dataset data = Dataset::Open(opt.data, specs);
    const BatchPlan plan = data.PlanBatches(batch, batch);
    if (plan.batches.empty() || plan.batches[0].count < batch) {
      ThrowInvalid("data folder '" + opt.data + "' holds " + std::to_string(data.num_samples()) + " samples, " +
                   (plan.batches.empty() ? std::to_string(plan.skipped) : std::to_string(plan.batches[0].count)) +
                   " of which can share a first batch; fewer than the batch of " + std::to_string(batch));
    }
    return data.ReadSamples(0, batch);
  }
  const BatchLayout layout = InferBatchLayout(specs);
  std::vector<Tensor> inputs;
  uint64_t state = 0x9e3779b97f4a7c15ull;
  auto uniform = [&state]() {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return (static_cast<double>(state >> 11) + 0.5) / 9007199254740992.0;
  };
  for (size_t i = 0; i < specs.size(); ++i) {
    const auto& spec = specs[i];
    std::vector<int64_t> dims;
    for (size_t d = 0; d < spec.shape.size(); ++d) {
      if (static_cast<int>(d) == layout.input_axes[i]) dims.push_back(batch);
      else if (spec.shape[d].value) dims.push_back(*spec.shape[d].value);
      else ThrowUsage("input '" + spec.name + "' has a free dimension '" + spec.shape[d].ToString() +
                      "'; give --data to bench this model");
    }
    Tensor t(spec.dtype, dims, spec.name);
    if (spec.dtype == DType::kFloat) {
      float* p = t.mutable_data<float>();
      for (int64_t k = 0; k < t.numel(); ++k) {
        p[k] = static_cast<float>(std::sqrt(-2.0 * std::log(uniform())) * std::cos(6.283185307179586 * uniform()));
      }
    }
    inputs.push_back(std::move(t));
  }
  return inputs;
}

int RunBench(const BenchCliOptions& opt, std::ostream& out) {
  const Model model = LoadModel(opt.model);
  // A model that declares a fixed batch runs only that batch.
  const int64_t batch = InferBatchLayout(ModelInputSpecs(model)).BatchSize(opt.batch);
  if (batch != opt.batch) spdlog::info("{}: the model declares a fixed batch of {}; timing that", opt.model, batch);
  const std::vector<Tensor> inputs = BenchInputs(model, opt, batch);
  ExecutorOptions exec_opt;
  exec_opt.threads = opt.threads;
  exec_opt.reference_kernels = opt.reference;
  Executor executor(model, exec_opt);
  for (int i = 0; i < 3; ++i) executor.Run(inputs);  // warm-up: first-touch allocations, caches
  if (opt.profile) executor.EnableProfiling(true);
  std::vector<double> times;
  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  while (times.size() < 5 || elapsed() < opt.min_seconds) {
    const auto t0 = std::chrono::steady_clock::now();
    executor.Run(inputs);
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::vector<double> sorted = times;
  std::sort(sorted.begin(), sorted.end());
  const double median = sorted[sorted.size() / 2];
  double mean = 0;
  for (double t : times) mean += t;
  mean /= static_cast<double>(times.size());
  nlohmann::json doc;
  doc["schema"] = "compress.bench/1";
  doc["model"] = opt.model;
  doc["batch"] = batch;
  doc["threads"] = executor.threads();
  doc["runs"] = times.size();
  doc["median_seconds"] = median;
  doc["mean_seconds"] = mean;
  doc["min_seconds"] = sorted.front();
  doc["samples_per_second"] = static_cast<double>(batch) / median;
  double total = 0;
  const auto profile = executor.Profile();
  for (const auto& p : profile) total += p.seconds;
  if (opt.profile) {
    doc["profile"] = nlohmann::json::array();
    for (const auto& p : profile) {
      doc["profile"].push_back({{"op_type", p.op_type}, {"calls", p.calls}, {"seconds", p.seconds},
                                {"fraction", total > 0 ? p.seconds / total : 0.0}});
    }
  }
  std::optional<train::TrainStepTiming> training;
  if (opt.train) {
    training = train::TimeTrainingStep(model, inputs, opt.threads, opt.min_seconds);
    doc["training"] = {{"forward_seconds", training->forward_seconds},
                       {"step_seconds", training->step_seconds},
                       {"step_forward_seconds", training->step_forward_seconds},
                       {"step_backward_seconds", training->step_backward_seconds},
                       {"step_update_seconds", training->step_update_seconds},
                       {"ratio", training->step_seconds / training->forward_seconds},
                       {"runs", training->runs},
                       {"parameters", training->parameters},
                       {"peak_rss_bytes", training->peak_rss_bytes}};
    if (opt.profile) {
      doc["training"]["backward_profile"] = nlohmann::json::array();
      for (const auto& p : training->backward_profile) {
        doc["training"]["backward_profile"].push_back(
            {{"op_type", p.op_type},
             {"calls_per_step", static_cast<double>(p.calls) / static_cast<double>(training->profiled_steps)},
             {"seconds_per_step", p.seconds / static_cast<double>(training->profiled_steps)}});
      }
    }
  }
  if (opt.json) {
    out << doc.dump(2) << "\n";
    return 0;
  }
  out << opt.model << "  batch " << batch << "  threads " << executor.threads() << "\n";
  if (training) {
    out << std::fixed << std::setprecision(3) << "training step " << training->step_seconds * 1e3 << " ms  forward "
        << training->forward_seconds * 1e3 << " ms  (" << std::setprecision(2)
        << training->step_seconds / training->forward_seconds << "x; " << training->runs << " interleaved pairs, "
        << training->parameters << " weights trained, peak memory " << (training->peak_rss_bytes >> 20) << " MiB)\n"
        << std::setprecision(3) << "  step parts: forward keeping values " << training->step_forward_seconds * 1e3
        << " ms, loss and backward " << training->step_backward_seconds * 1e3 << " ms, update "
        << training->step_update_seconds * 1e3 << " ms\n";
    if (opt.profile) {
      double backward_total = 0;
      for (const auto& p : training->backward_profile) backward_total += p.seconds;
      out << "  backward rules by operator type (mean per step):\n";
      for (const auto& p : training->backward_profile) {
        out << "    " << std::left << std::setw(22) << p.op_type << std::right << std::setw(6) << std::setprecision(1)
            << (backward_total > 0 ? 100.0 * p.seconds / backward_total : 0.0) << "%  " << std::setprecision(3)
            << 1e3 * p.seconds / static_cast<double>(training->profiled_steps) << " ms\n";
      }
    }
  }
  out << std::fixed << std::setprecision(3) << "median " << median * 1e3 << " ms  mean " << mean * 1e3 << " ms  min "
      << sorted.front() * 1e3 << " ms  (" << times.size() << " runs)  " << std::setprecision(0)
      << static_cast<double>(batch) / median << " samples/s\n";
  if (opt.profile) {
    for (const auto& p : profile) {
      out << "  " << std::left << std::setw(24) << p.op_type << std::right << std::setw(6) << std::setprecision(1)
          << 100.0 * p.seconds / total << "%  " << std::setprecision(3) << 1e3 * p.seconds / static_cast<double>(times.size())
          << " ms/run\n";
    }
  }
  return 0;
}

int RunSensitivityCommand(const SensitivityCliOptions& opt, std::ostream& out) {
  if (opt.prune && opt.prune_channels) ThrowUsage("--prune and --prune-channels are alternatives; choose one");
  if ((!opt.prune_pattern.empty() || !opt.prune_method.empty()) && opt.prune_channels) {
    ThrowUsage("--prune-pattern and --prune-method apply to --prune only");
  }
  if (opt.low_rank && (opt.prune || opt.prune_channels)) {
    ThrowUsage("--low-rank, --prune and --prune-channels are alternatives; choose one");
  }
  if (!opt.low_rank_method.empty() && !opt.low_rank) ThrowUsage("--low-rank-method applies to --low-rank only");
  if (opt.low_rank && (!opt.prune_pattern.empty() || !opt.prune_method.empty())) {
    ThrowUsage("--prune-pattern and --prune-method apply to --prune only");
  }
  RecipeStep step;
  if (opt.low_rank) {
    if (!(*opt.low_rank > 0 && *opt.low_rank < 1)) ThrowUsage("--low-rank must be a fraction in (0, 1), e.g. 0.25");
    nlohmann::json o = {{"ratio", *opt.low_rank}};
    if (!opt.low_rank_method.empty()) {
      CheckLowRankMethod(opt.low_rank_method);
      o["method"] = opt.low_rank_method;
    }
    step = MakeRecipeStep("low_rank", o, "--low-rank");
  } else if (opt.prune_channels) {
    if (!(*opt.prune_channels > 0 && *opt.prune_channels < 1)) ThrowUsage("--prune-channels must be in (0, 1)");
    step = MakeRecipeStep("prune_channels", {{"ratio", *opt.prune_channels}}, "--prune-channels");
  } else {
    const double sparsity = opt.prune.value_or(0.5);
    if (!(sparsity > 0 && sparsity < 1)) ThrowUsage("--prune must be a fraction in (0, 1), e.g. 0.5");
    nlohmann::json o = {{"sparsity", sparsity}};
    if (!opt.prune_pattern.empty()) o["pattern"] = opt.prune_pattern;
    if (!opt.prune_method.empty()) o["method"] = opt.prune_method;
    step = MakeRecipeStep("prune", o, "--prune");
    MakePrunePass(step.options);  // usage errors (pattern, method) before anything is loaded
  }
  if (!opt.json_out.empty()) {
    if (FileExists(opt.model) && SameFile(opt.json_out, opt.model)) {
      ThrowUsage("refusing to overwrite the input file '" + opt.model + "' with the JSON output");
    }
    CheckOutputPath(opt.json_out);
  }
  const Model model = LoadModel(opt.model);
  DatasetOptions data_opt;
  data_opt.labels_file = opt.labels;
  const Dataset data = Dataset::Open(opt.calib, ModelInputSpecs(model), data_opt);
  CalibrateOptions calib_opt;
  calib_opt.threads = opt.threads;
  calib_opt.limit = opt.limit;
  DataCalibrationSource calibration(&data, "", calib_opt);
  SensitivityOptions sens;
  sens.threads = opt.threads;
  sens.batch = opt.batch;
  sens.limit = opt.limit;
  sens.calibration = &calibration;
  const nlohmann::json doc = RunSensitivity(model, opt.model, step, data, opt.calib, sens);
  if (!opt.json_out.empty()) WriteFileAtomic(opt.json_out, doc.dump(2) + "\n");
  out << FormatSensitivity(doc);
  return 0;
}

int Dispatch(const std::vector<std::string>& args, std::ostream& out) {
  CLI::App app{"compress: shrink ONNX models (quantization, pruning, low rank, distillation) and report the cost",
               "compress"};
  app.set_version_flag("--version", std::string("compress ") + COMPRESS_VERSION);
  app.require_subcommand(0, 1);
  GlobalOptions global;
  app.add_flag("-q,--quiet", global.quiet, "Only print errors on stderr");
  app.add_flag("-v,--verbose", global.verbose, "More detail on stderr (debug messages)");

  MainOptions main_opt;
  app.add_option("model", main_opt.model, "Input ONNX model");
  app.add_option("-o,--output", main_opt.output,
                 "Output model (default: <stem>.<recipe>.onnx next to the input)");
  app.add_flag("--external-data", main_opt.external_data,
               "Store weights of at least --external-data-threshold bytes in a side file <output>.data "
               "(always done when the model would exceed 2 GiB)");
  app.add_option("--external-data-threshold", main_opt.external_threshold,
                 "Smallest tensor, in bytes, moved to external data")
      ->capture_default_str();
  app.add_option("--external-data-file", main_opt.external_file,
                 "Name of the external data file, in the output's folder (default <output file>.data)");
  app.add_flag("--overwrite", main_opt.overwrite, "Allow the output to replace the input file");
  app.add_flag("--int8", main_opt.int8, "INT8 quantization (static QDQ with --calib by default)");
  app.add_option("--calib", main_opt.calib_dir,
                 "Calibration data folder for static --int8; with --fp16, nodes whose values exceed float16's "
                 "range on it stay float32");
  app.add_option("--calib-method", main_opt.calib_method, "minmax (default), percentile, entropy or mse");
  app.add_option("--percentile", main_opt.percentile, "With --calib-method percentile: share of values kept (99.999)");
  app.add_option("--calib-table", main_opt.calib_table,
                 "Save calibration statistics to FILE, or reuse them when FILE exists (no re-run)");
  app.add_option("--calib-limit", main_opt.calib_limit, "Calibrate on the first N samples only");
  app.add_option("--format", main_opt.format, "qdq (default) or qop (QLinearConv, QLinearMatMul, ...)");
  app.add_flag("--dynamic", main_opt.dynamic, "With --int8: int8 weights, activations quantized at run time");
  app.add_flag("--weights-only", main_opt.weights_only, "With --int8: int8 weights, computation in float");
  app.add_flag("--per-tensor", main_opt.per_tensor, "With --int8: one weight scale per tensor, not per channel");
  app.add_option("--activation-type", main_opt.activation_type, "With --int8: uint8 (default) or int8");
  app.add_option("--exclude-nodes", main_opt.exclude_nodes, "With --int8: node names kept in float")->delimiter(',');
  app.add_option("--exclude-ops", main_opt.exclude_ops, "With --int8: op types kept in float")->delimiter(',');
  app.add_option("--min-conv-depth", main_opt.min_conv_depth,
                 "With static --int8: keep in float each Conv whose input channels per group x kernel elements is "
                 "below K (default 64; 0 quantizes every Conv)");
  app.add_option("--max-accuracy-drop", main_opt.max_accuracy_drop,
                 "Fail (exit 5) when top-1 drops by more than PTS points on --eval (or --calib) data");
  app.add_option("--min-agreement", main_opt.min_agreement,
                 "Fail (exit 5) when top-1 agreement with the original is below FRACTION (unlabelled data)");
  app.add_flag("--auto-fallback", main_opt.auto_fallback,
               "When the gate fails, keep the most sensitive layers in float until it holds");
  app.add_option("--recipe", main_opt.recipe_file, "Passes and options from a YAML (.yaml/.yml) or JSON file");
  app.add_flag("--no-optimize", main_opt.no_optimize,
               "Skip the clean-up passes (constant folding, BatchNormalization folding, ...) run by default");
  app.add_flag("--fp16", main_opt.fp16, "Convert float32 weights and computation to float16");
  app.add_option("--prune-channels", main_opt.prune_channels,
                 "Structured pruning: remove this fraction of the channels of every prunable channel group");
  app.add_option("--target-macs", main_opt.target_macs,
                 "Structured pruning to keep at most this fraction of the MACs, in (0, 1]: per-group ratios from the "
                 "sensitivity measured on --calib (one ratio for every group without it)");
  app.add_flag("--compact-names", main_opt.compact_names,
               "Shorten intermediate value and initializer names, drop node names and attributes that hold "
               "their default (smaller files for small models)");
  app.add_flag("--keep-io-types,!--no-keep-io-types", main_opt.keep_io_types,
               "With --fp16: keep float32 graph inputs and outputs, with Casts at the boundary (default on)");
  app.add_option("--fp16-block-ops", main_opt.fp16_block_ops, "With --fp16: more op types to keep in float32")
      ->delimiter(',');
  app.add_option("--fp16-block-nodes", main_opt.fp16_block_nodes, "With --fp16: node names to keep in float32")
      ->delimiter(',');
  app.add_option("--prune", main_opt.prune,
                 "Set this fraction of the weights of every Conv, ConvTranspose, Gemm and MatMul to zero (e.g. 0.5); "
                 "runs before --int8/--fp16");
  app.add_option("--prune-pattern", main_opt.prune_pattern,
                 "With --prune: unstructured (default) or N:M, e.g. 2:4 (at most N non-zero in every M input channels)");
  app.add_option("--prune-method", main_opt.prune_method,
                 "With --prune: magnitude or wanda (|W| x activation norm on --calib; the default when --calib is "
                 "given)");
  app.add_flag("--prune-global", main_opt.prune_global,
               "With --prune: one threshold across layers (on RMS-normalized scores) instead of the same sparsity "
               "in every layer");
  app.add_flag("--prune-keep-first-last", main_opt.prune_keep_first_last,
               "With --prune: keep the first and the last prunable layer dense");
  app.add_option("--prune-exclude-nodes", main_opt.prune_exclude_nodes, "With --prune: node names whose weights stay dense")
      ->delimiter(',');
  app.add_flag("--prune-update", main_opt.prune_update,
               "With --prune and --calib (the default there): re-fit the kept weights of every layer by least squares "
               "so that its output on the calibration data changes least (SparseGPT-style)");
  app.add_flag("--no-prune-update", main_opt.no_prune_update,
               "With --prune: only set the pruned weights to zero, even with --calib");
  app.add_option("--low-rank", main_opt.low_rank,
                 "Factorize every Gemm, MatMul and Conv weight into two smaller ones keeping at most this fraction "
                 "of each layer's parameters (e.g. 0.25); runs after pruning, before --int8/--fp16");
  app.add_option("--low-rank-energy", main_opt.low_rank_energy,
                 "Low rank: per layer, the smallest rank keeping this share of the spectrum's energy (e.g. 0.95)");
  app.add_option("--low-rank-params", main_opt.low_rank_params,
                 "Low rank: the whole model keeps at most this fraction of its parameters; ranks per layer chosen "
                 "by measured fidelity (on --calib when given)");
  app.add_option("--low-rank-macs", main_opt.low_rank_macs,
                 "Low rank: the whole model keeps at most this fraction of its MACs; ranks per layer chosen by "
                 "measured fidelity (on --calib when given)");
  app.add_option("--low-rank-method", main_opt.low_rank_method,
                 "Low rank: svd (plain truncated SVD) or whitened (SVD-LLM: minimizes the layer's output error on "
                 "--calib; the default when --calib is given)");
  app.add_option("--rank-multiple", main_opt.rank_multiple,
                 "Low rank: ranks are multiples of N (default 8; 1 for layers narrower than 32)");
  app.add_option("--low-rank-exclude-nodes", main_opt.low_rank_exclude_nodes,
                 "Low rank: node names whose weights stay whole")
      ->delimiter(',');
  app.add_option("--finetune", main_opt.finetune_dir,
                 "Fine-tune the compressed model on the data in DIR toward the original (distillation; labels with "
                 "--label-weight), after pruning and low rank, before --fp16/--int8 (after --int8 with --qat)");
  app.add_option("--epochs", main_opt.epochs, "Fine-tuning: passes over the data (default 1; per step with --prune-steps)");
  app.add_option("--lr", main_opt.lr, "Fine-tuning: peak learning rate of AdamW (default 0.001), cosine decay after a warm-up");
  app.add_option("--temperature", main_opt.temperature, "Fine-tuning: distillation temperature T (default 4)");
  app.add_option("--distill-loss", main_opt.distill_loss,
                 "Fine-tuning: how the output is matched to the original's: kl (class scores, the default) or mse "
                 "(embeddings, maps, regressions)");
  app.add_option("--label-weight", main_opt.label_weight,
                 "Fine-tuning: weight of cross-entropy on the labels of DIR in [0, 1]; the rest goes to distillation "
                 "(default 0.5 when DIR has labels, else 0)");
  app.add_option("--feature-loss", main_opt.feature_loss,
                 "Fine-tuning: intermediate values also matched to the original's (mean squared error)")
      ->delimiter(',');
  app.add_option("--seed", main_opt.seed, "Fine-tuning: seed of the sample order (default 0)");
  app.add_option("--finetune-limit", main_opt.finetune_limit, "Fine-tuning: use the first N samples of DIR only");
  app.add_option("--prune-steps", main_opt.prune_steps,
                 "With --prune and --finetune: reach the sparsity in K steps on a cubic schedule, fine-tuning after each");
  app.add_flag("--qat", main_opt.qat,
               "With --int8 and --finetune: quantization-aware training of the QDQ model (fake quantization, "
               "learned scales), written back as QDQ");
  app.add_option("--student", main_opt.student,
                 "With --finetune: distil the input model into this model (same inputs and outputs, any weights); "
                 "the output is the trained student, then any other requested pass");
  app.add_option("--report", main_opt.report_json, "Write the report as JSON (schema compress.report/1)");
  app.add_option("--report-md", main_opt.report_md, "Write the report as Markdown");
  app.add_option("--eval", main_opt.eval_dir,
                 "Evaluate both models on this data folder: accuracy (with labels), fidelity and latency");
  app.add_option("--labels", main_opt.labels, "Labels file for --eval instead of DIR/labels.*");
  app.add_option("--eval-limit", main_opt.eval_limit, "Evaluate only the first N samples of --eval");
  app.add_option("--batch", main_opt.batch, "Samples per run in evaluation, and per step with --finetune")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--threads", main_opt.threads, "Threads (0: one per core); results do not depend on it")
      ->capture_default_str();
  app.add_option("--zstd-size", main_opt.zstd_size,
                 "Report the sizes compressed with zstd -19: auto (when input and output are each at most 16 MiB), "
                 "always, never")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "always", "never"}));

  InspectOptions inspect_opt;
  CLI::App* inspect = app.add_subcommand("inspect", "Describe a model: opsets, inputs, ops, parameters, sizes");
  inspect->fallthrough();
  inspect->add_option("model", inspect_opt.model, "ONNX model")->required();
  inspect->add_flag("--json", inspect_opt.json, "Print JSON (schema compress.inspect/1) instead of text");

  EvalCliOptions eval_opt;
  CLI::App* eval = app.add_subcommand("eval", "Run a model over a data folder: top-1 accuracy (with labels) or "
                                              "output statistics, and throughput");
  eval->fallthrough();
  eval->add_option("model", eval_opt.model, "ONNX model")->required();
  eval->add_option("--data", eval_opt.data, "Data folder (.npy files, ONNX test data, or one folder per sample)")
      ->required();
  eval->add_option("--labels", eval_opt.labels, "Labels file (.npy or .txt) instead of DIR/labels.*");
  eval->add_option("--batch", eval_opt.batch, "Samples per run")->capture_default_str()->check(CLI::PositiveNumber);
  eval->add_option("--limit", eval_opt.limit, "Evaluate only the first N samples");
  eval->add_option("--threads", eval_opt.threads, "Threads (0: one per core)")->capture_default_str();
  eval->add_option("--predictions", eval_opt.predictions, "Write the top-1 class of every sample to this .npy");
  eval->add_flag("--reference-kernels", eval_opt.reference, "Use the plain reference kernels (slow; for checks)");
  eval->add_flag("--json", eval_opt.json, "Print JSON (schema compress.eval/1)");

  RunCliOptions run_opt;
  CLI::App* run = app.add_subcommand("run", "Run a model over a data folder and write every output as .npy");
  run->fallthrough();
  run->add_option("model", run_opt.model, "ONNX model")->required();
  run->add_option("--data", run_opt.data, "Data folder")->required();
  run->add_option("--out", run_opt.out, "Output folder: OUT/<record or batch>/<output>.npy")->required();
  run->add_option("--batch", run_opt.batch, "Run fixed batches of N samples instead of one run per record");
  run->add_option("--threads", run_opt.threads, "Threads (0: one per core)")->capture_default_str();
  run->add_flag("--reference-kernels", run_opt.reference, "Use the plain reference kernels");

  BenchCliOptions bench_opt;
  CLI::App* bench = app.add_subcommand("bench", "Time a model in the executor (median time per run, samples/s)");
  bench->fallthrough();
  bench->add_option("model", bench_opt.model, "ONNX model")->required();
  bench->add_option("--data", bench_opt.data, "Take the inputs from this data folder (default: random inputs)");
  bench->add_option("--batch", bench_opt.batch, "Samples per run")->capture_default_str()->check(CLI::PositiveNumber);
  bench->add_option("--threads", bench_opt.threads, "Threads (0: one per core)")->capture_default_str();
  bench->add_option("--min-seconds", bench_opt.min_seconds, "Keep timing for at least this long")
      ->capture_default_str();
  bench->add_flag("--profile", bench_opt.profile, "Show where the time goes, per operator type");
  bench->add_flag("--reference-kernels", bench_opt.reference, "Time the plain reference kernels");
  bench->add_flag("--json", bench_opt.json, "Print JSON (schema compress.bench/1)");
  bench->add_flag("--train", bench_opt.train,
                  "Also time a fine-tuning step (forward, distillation loss, backward, AdamW) against a forward run, "
                  "interleaved, and report the ratio and the peak memory");

  SensitivityCliOptions sens_opt;
  CLI::App* sens = app.add_subcommand("sensitivity", "Fidelity drop when only one layer (--prune) or one channel "
                                                     "group (--prune-channels) is pruned, measured on --calib");
  sens->fallthrough();
  sens->add_option("model", sens_opt.model, "ONNX model")->required();
  sens->add_option("--calib", sens_opt.calib, "Data folder the models are compared on")->required();
  sens->add_option("--prune", sens_opt.prune, "Unstructured/N:M pruning of one layer at a time at this sparsity "
                                              "(default 0.5)");
  sens->add_option("--prune-channels", sens_opt.prune_channels,
                   "Structured pruning of one channel group at a time at this ratio");
  sens->add_option("--low-rank", sens_opt.low_rank,
                   "Low-rank factorization of one layer at a time, keeping this fraction of its parameters");
  sens->add_option("--low-rank-method", sens_opt.low_rank_method,
                   "With --low-rank: svd or whitened (the default: the layer's input on --calib whitens it)");
  sens->add_option("--prune-pattern", sens_opt.prune_pattern, "With --prune: unstructured (default) or N:M");
  sens->add_option("--prune-method", sens_opt.prune_method, "With --prune: magnitude or wanda (default)");
  sens->add_option("-o,--json", sens_opt.json_out, "Also write the results as JSON (schema compress.sensitivity/1)");
  sens->add_option("--labels", sens_opt.labels, "Labels file instead of DIR/labels.*");
  sens->add_option("--limit", sens_opt.limit, "Use only the first N samples");
  sens->add_option("--batch", sens_opt.batch, "Samples per run")->capture_default_str()->check(CLI::PositiveNumber);
  sens->add_option("--threads", sens_opt.threads, "Threads (0: one per core)")->capture_default_str();

  std::vector<std::string> reversed(args.rbegin(), args.rend());
  try {
    app.parse(reversed);
  } catch (const CLI::CallForHelp& e) {
    out << app.help();
    return 0;
  } catch (const CLI::CallForAllHelp& e) {
    out << app.help("", CLI::AppFormatMode::All);
    return 0;
  } catch (const CLI::CallForVersion& e) {
    out << e.what() << "\n";
    return 0;
  } catch (const CLI::ParseError& e) {
    InitLogging(0);
    spdlog::error("{} (run 'compress --help' for usage)", e.what());
    return static_cast<int>(ErrorKind::kUsage);
  }
  InitLogging(global.quiet ? -1 : global.verbose);
  if (global.quiet) ProgressBar::SetEnabled(false);

  if (inspect->parsed()) return RunInspect(inspect_opt, out);
  if (eval->parsed()) return RunEval(eval_opt, out);
  if (run->parsed()) return RunRun(run_opt, out);
  if (bench->parsed()) return RunBench(bench_opt, out);
  if (sens->parsed()) return RunSensitivityCommand(sens_opt, out);
  if (main_opt.model.empty()) {
    spdlog::error("no input model given (run 'compress --help' for usage)");
    return static_cast<int>(ErrorKind::kUsage);
  }
  return RunMain(main_opt, out);
}

}  // namespace

int RunCli(const std::vector<std::string>& args, std::ostream& out) {
  try {
    return Dispatch(args, out);
  } catch (const Error& e) {
    InitLogging(0);
    spdlog::error("{}", e.what());
    return e.exit_code();
  } catch (const std::bad_alloc&) {
    InitLogging(0);
    spdlog::error("out of memory");
    return static_cast<int>(ErrorKind::kInternal);
  } catch (const std::exception& e) {
    InitLogging(0);
    spdlog::error("internal error: {}", e.what());
    return static_cast<int>(ErrorKind::kInternal);
  }
}

}  // namespace compress
