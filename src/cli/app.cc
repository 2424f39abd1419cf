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
#include "compress/exec/isa.h"
#include "compress/io/dataset.h"
#include "compress/io/npy.h"
#include "compress/io/onnx_io.h"
#include "compress/passes/builders.h"
#include "compress/pipeline/pipeline.h"
#include "compress/pipeline/recipe.h"
#include "compress/report/inspect.h"
#include "compress/report/report.h"
#include "compress/report/zstd_size.h"
#include "compress/job/compare.h"
#include "compress/job/job.h"
#include "compress/report/compare.h"
#include "compress/job/sensitivity.h"
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
  bool float_int8 = false;
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

int RunMain(const JobOptions& opt, std::ostream& out) {
  const RecipeResult r = RunJob(opt);
  out << FormatReportSummary(r.report);
  ThrowIfJobFailed(r, opt);
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
  exec_opt.integer_kernels = !opt.float_int8;
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
  doc["kernels"] = {{"float", opt.reference ? "reference" : KernelIsaName(ActiveKernelIsa())},
                    {"integer", opt.reference ? "reference" : IntegerKernelIsaName()},
                    {"fused_nodes", executor.fused_nodes()},
                    {"integer_products", executor.integer_products()}};
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
  out << opt.model << "  batch " << batch << "  threads " << executor.threads() << "  kernels "
      << doc["kernels"]["float"].get<std::string>() << " / " << doc["kernels"]["integer"].get<std::string>() << "  "
      << executor.fused_nodes() << " nodes fused, " << executor.integer_products() << " integer products\n";
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

  JobOptions main_opt;
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
  app.add_option("--report-html", main_opt.report_html, "Write the report as one self-contained HTML file (inline SVG and CSS, no scripts, no network)");
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
  bench->add_flag("--float-int8", bench_opt.float_int8,
                  "Run the quantized groups of INT8 models simulated in float32 instead of in integers");
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

  // compare and auto: the data, evaluation, fine-tuning and gate flags they share with the main job.
  const auto add_common = [](CLI::App* c, JobOptions& o) {
    c->add_option("model", o.model, "ONNX model");
    c->add_option("--calib", o.calib_dir, "Calibration data folder (calibrated once, shared by every recipe)");
    c->add_option("--calib-limit", o.calib_limit, "Calibrate on the first N samples only");
    c->add_option("--eval", o.eval_dir, "Evaluation data folder (labels give top-1; else agreement with the original)");
    c->add_option("--eval-limit", o.eval_limit, "Evaluate on the first N samples only");
    c->add_option("--labels", o.labels, "Labels file for --eval instead of DIR/labels.*");
    c->add_option("--finetune", o.finetune_dir,
                  "Training data: recipes that prune or factorize are fine-tuned on it (distillation from the original)");
    c->add_option("--epochs", o.epochs, "Fine-tuning epochs (default 1)");
    c->add_option("--lr", o.lr, "Fine-tuning peak learning rate");
    c->add_option("--finetune-limit", o.finetune_limit, "Fine-tune on the first N samples only");
    c->add_option("--batch", o.batch, "Samples per run")->capture_default_str()->check(CLI::PositiveNumber);
    c->add_option("--threads", o.threads, "Threads (0: one per core)")->capture_default_str();
    c->add_option("--zstd-size", o.zstd_size, "auto, always or never: measure each output's zstd -19 size")
        ->capture_default_str();
  };
  CompareJobOptions cmp_opt;
  bool list_presets = false;
  CLI::App* cmp = app.add_subcommand("compare", "Run several recipes on one model and compare them side by side "
                                                "(size, MACs, accuracy, fidelity, latency, Pareto front)");
  cmp->fallthrough();
  add_common(cmp, cmp_opt.common);
  cmp->add_option("--recipe", cmp_opt.recipes, "A recipe file or a preset (repeat; --list-presets)");
  cmp->add_flag("--list-presets", list_presets, "Print the built-in presets and their passes");
  cmp->add_option("--out-dir", cmp_opt.out_dir, "Folder for every recipe's model (default <model stem>.compare/)");
  cmp->add_option("--report", cmp_opt.report_json, "Write the comparison as JSON (schema compress.compare/1)");
  cmp->add_option("--report-html", cmp_opt.report_html, "Write the comparison as one self-contained HTML file");
  cmp->add_option("--max-accuracy-drop", cmp_opt.common.max_accuracy_drop,
                  "Gate verdict per recipe: top-1 may drop by at most this many points");
  cmp->add_option("--min-agreement", cmp_opt.common.min_agreement,
                  "Gate verdict per recipe on unlabelled data: top-1 agreement at least this fraction");

  AutoJobOptions auto_opt;
  CLI::App* aut = app.add_subcommand("auto", "Search recipes for the smallest (or fastest) model that holds an "
                                             "accuracy budget, and write it");
  aut->fallthrough();
  add_common(aut, auto_opt.common);
  aut->add_option("--max-accuracy-drop", auto_opt.common.max_accuracy_drop,
                  "Top-1 may drop by at most this many points (labelled --eval)");
  aut->add_option("--min-agreement", auto_opt.common.min_agreement,
                  "Unlabelled --eval: top-1 agreement with the original at least this fraction");
  aut->add_option("--objective", auto_opt.objective, "size (default), macs or latency")->capture_default_str();
  aut->add_option("--budget-minutes", auto_opt.budget_minutes, "Stop searching after about this long (0: no limit)");
  aut->add_option("-o,--output", auto_opt.output, "The chosen model (default <model stem>.auto.onnx beside it)");
  aut->add_option("--out-dir", auto_opt.out_dir, "Folder for every candidate's model (default <model stem>.auto/)");
  aut->add_option("--report", auto_opt.report_json, "Write the search as JSON (schema compress.compare/1)");
  aut->add_option("--report-html", auto_opt.report_html, "Write the search as one self-contained HTML file");

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
  if (cmp->parsed()) {
    if (list_presets) {
      nlohmann::json list = nlohmann::json::array();
      for (const auto& p : ListedPresets()) {
        JobOptions o;
        o.calib_dir = "CALIB";  // as with --calib: the data-aware variants of the passes
        list.push_back({{"name", p.name}, {"description", p.description},
                        {"recipe", RecipeFromOptions(PresetOptions(p.name, o)).ToJson()}});
      }
      out << FormatPresets(list);
      return 0;
    }
    if (cmp_opt.common.model.empty()) ThrowUsage("compare: no input model given");
    const nlohmann::json doc = RunCompare(cmp_opt);
    out << FormatCompareTable(doc);
    return 0;
  }
  if (aut->parsed()) {
    if (auto_opt.common.model.empty()) ThrowUsage("auto: no input model given");
    const nlohmann::json doc = RunAuto(auto_opt);
    out << FormatCompareTable(doc);
    if (doc["chosen"].is_null()) {
      throw Error(ErrorKind::kAccuracyGate, "auto: no recipe holds the accuracy gate (" +
                                                doc["stop_reason"].get<std::string>() + ")");
    }
    return 0;
  }
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
