#include "compress/job/compare.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <iomanip>
#include <set>
#include <sstream>

#include "compress/eval/macs.h"
#include "compress/report/html.h"
#include "compress/util/error.h"
#include "compress/util/format.h"
#include "compress/util/fs.h"
#include "compress/util/progress.h"
#include "compress/version.h"

namespace compress {

namespace {

std::string Fixed(double v, int digits) { return FormatFixed(v, digits); }

using nlohmann::json;

// "pruneNN" and its kin: the level NN (1..99) after `prefix`, or -1.
int Level(const std::string& name, const std::string& prefix) {
  if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) return -1;
  const std::string digits = name.substr(prefix.size());
  if (digits.size() > 2 || !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return -1;
  }
  if (digits.size() == 2 && digits[0] == '0') return -1;
  const int v = std::stoi(digits);
  return v >= 1 && v <= 99 ? v : -1;
}

bool IsPrecision(const std::string& p) {
  return p == "fp16" || p == "int8" || p == "int8-dynamic" || p == "int8-weights" || p == "int8-percentile" ||
         p == "int8-entropy" || p == "int8-mse";
}

bool IsStructure(const std::string& s) {
  return s == "prune2:4" || Level(s, "prune") > 0 || Level(s, "channels") > 0 || Level(s, "lowrank") > 0 ||
         Level(s, "target-macs") > 0 || Level(s, "lowrank-params") > 0 || Level(s, "lowrank-macs") > 0;
}

std::string PresetList() {
  std::string s;
  for (const auto& p : ListedPresets()) s += (s.empty() ? "" : ", ") + p.name;
  return s;
}

// Applies a structure preset's flags; false when `s` is not one.
bool ApplyStructure(const std::string& s, JobOptions& o) {
  if (s == "prune2:4") {
    o.prune = 0.5;
    o.prune_pattern = "2:4";
  } else if (Level(s, "prune") > 0) {
    o.prune = Level(s, "prune") / 100.0;
  } else if (Level(s, "channels") > 0) {
    o.prune_channels = Level(s, "channels") / 100.0;
  } else if (Level(s, "lowrank") > 0) {
    o.low_rank = Level(s, "lowrank") / 100.0;
  } else if (Level(s, "target-macs") > 0) {
    o.target_macs = Level(s, "target-macs") / 100.0;
  } else if (Level(s, "lowrank-params") > 0) {
    o.low_rank_params = Level(s, "lowrank-params") / 100.0;
  } else if (Level(s, "lowrank-macs") > 0) {
    o.low_rank_macs = Level(s, "lowrank-macs") / 100.0;
  } else {
    return false;
  }
  return true;
}

void ApplyPrecision(const std::string& p, JobOptions& o) {
  if (p == "fp16") {
    o.fp16 = true;
  } else {
    o.int8 = true;
    o.dynamic = p == "int8-dynamic";
    o.weights_only = p == "int8-weights";
    // Static INT8 with another calibration method: the same statistics, other ranges (no new run).
    if (p == "int8-percentile" || p == "int8-entropy" || p == "int8-mse") o.calib_method = p.substr(5);
  }
}

// A file name for a recipe's model: the characters of `name` that are safe everywhere.
std::string FileStem(const std::string& name) {
  std::string s;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                    c == '_' || c == '+' || c == '.';
    s += ok ? c : '-';
  }
  return s;
}

std::string Stem(const std::string& path) {
  const std::string base = BaseName(path);
  const auto dot = base.rfind('.');
  return dot == std::string::npos || dot == 0 ? base : base.substr(0, dot);
}

std::string Beside(const std::string& model, const std::string& name) {
  const std::string dir = DirName(model);
  return (dir == "." ? std::string() : dir + "/") + name;
}

// The comparison's row for one recipe's report.
json RowFromReport(const json& r, int64_t model_bytes, int64_t model_macs) {
  json row;
  const int64_t bytes = r["output"]["bytes"].get<int64_t>();
  row["bytes"] = bytes;
  row["size_ratio"] = model_bytes > 0 ? json(static_cast<double>(bytes) / static_cast<double>(model_bytes)) : json(nullptr);
  row["zstd_bytes"] = r.contains("zstd") && r["zstd"].contains("output_bytes") ? r["zstd"]["output_bytes"] : json(nullptr);
  row["parameters"] = r["parameters"]["after"]["total"];
  const json& macs = r["macs"]["after"]["total"];
  row["macs"] = macs;
  row["macs_ratio"] = macs.is_number() && model_macs > 0
                          ? json(static_cast<double>(macs.get<int64_t>()) / static_cast<double>(model_macs))
                          : json(nullptr);
  const json& e = r.contains("evaluation") ? r["evaluation"] : json(nullptr);
  const bool labelled = e.is_object() && e.value("labelled", false);
  row["top1"] = labelled ? e["top1_after"] : json(nullptr);
  row["top1_change_pts"] = labelled ? e["top1_change_pts"] : json(nullptr);
  row["agreement"] = e.is_object() ? e["agreement"] : json(nullptr);
  row["sqnr_db"] = e.is_object() ? e["sqnr_db"] : json(nullptr);
  row["sqnr_db_infinite"] = e.is_object() && e["sqnr_db"].is_null();
  const json& t = r["timings"];
  row["ms_per_sample"] = t.is_object() && t.contains("latency") && t["latency"].is_object()
                             ? t["latency"]["after_ms_per_sample"]
                             : json(nullptr);
  if (r.contains("gate") && r["gate"].is_object()) {
    const json& g = r["gate"];
    row["gate"] = {{"passed", g["passed"]}, {"value", g["value"]}, {"threshold", g["threshold"]}, {"margin", g["margin"]}};
  } else {
    row["gate"] = nullptr;
  }
  return row;
}

json ErrorRow(const CompareEntry& e, const std::string& error) {
  json row = {{"recipe", e.name}, {"source", e.source}, {"passes", json::array()}, {"status", "error"},
              {"error", error}, {"output", nullptr}};
  for (const char* k : {"bytes", "zstd_bytes", "size_ratio", "parameters", "macs", "macs_ratio", "top1",
                        "top1_change_pts", "agreement", "sqnr_db", "ms_per_sample", "gate"}) {
    row[k] = nullptr;
  }
  row["sqnr_db_infinite"] = false;
  row["pareto_size"] = false;
  row["pareto_macs"] = false;
  row["chosen"] = false;
  row["skipped_reason"] = nullptr;
  return row;
}

// Everything a command shares: the context, the original's figures and where models go.
struct Session {
  JobContext& ctx;
  std::string out_dir;
  GateSpec gate;
  bool include_timings;
  int64_t model_bytes = 0;
  int64_t model_macs = 0;
  std::set<std::string> outputs;  // files written so far: two recipes never share one
};

// Runs one entry; a failure becomes the row's error. `kept` receives the recipe's result when it ran.
json RunEntry(Session& s, const CompareEntry& e, RecipeResult* kept = nullptr) {
  const auto start = std::chrono::steady_clock::now();
  try {
    const Recipe recipe = RecipeFromOptions(e.options);
    CheckRecipeData(recipe, e.options, s.gate);
    std::string stem = Stem(s.ctx.options().model) + "." + FileStem(e.source == "file" ? Stem(e.name) : e.name);
    std::string output = s.out_dir + "/" + stem + ".onnx";
    for (int k = 2; s.outputs.count(output); ++k) output = s.out_dir + "/" + stem + "-" + std::to_string(k) + ".onnx";
    s.outputs.insert(output);
    CheckOutputPath(output);
    RecipeRunOptions ro;
    ro.output = output;
    ro.gate = s.gate;
    ro.include_timings = s.include_timings;
    ro.progress = s.ctx.options().progress;
    ro.target_macs = e.options.target_macs;
    RecipeResult r = RunRecipe(s.ctx, recipe, ro);
    json row = {{"recipe", e.name}, {"source", e.source}, {"status", "ok"}, {"error", nullptr}, {"output", output}};
    json passes = json::array();
    for (const auto& st : recipe.steps) passes.push_back(st.pass);
    row["passes"] = passes;
    row.update(RowFromReport(r.report, s.model_bytes, s.model_macs));
    if (!r.checker_ok) {
      row["status"] = "error";
      row["error"] = output + ": the ONNX checker rejects the output: " + r.checker_message;
    }
    row["pareto_size"] = false;
    row["pareto_macs"] = false;
    row["chosen"] = false;
    row["skipped_reason"] = nullptr;
    row["seconds"] = s.include_timings
                         ? json(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count())
                         : json(nullptr);
    row["report"] = r.report;
    if (kept != nullptr) *kept = std::move(r);
    return row;
  } catch (const Error& err) {
    spdlog::warn("{}: {}", e.name, err.what());
    return ErrorRow(e, err.what());
  } catch (const std::bad_alloc&) {
    spdlog::warn("{}: out of memory", e.name);
    return ErrorRow(e, "out of memory");
  } catch (const std::exception& err) {
    spdlog::warn("{}: {}", e.name, err.what());
    return ErrorRow(e, err.what());
  }
}

// The command's header: tool, model, baseline, data, gate.
json Header(const char* command, JobContext& ctx, const GateSpec& gate, int64_t* model_bytes, int64_t* model_macs) {
  const JobOptions& o = ctx.options();
  json doc;
  doc["schema"] = "compress.compare/1";
  doc["command"] = command;
  doc["tool"] = {{"name", "compress"}, {"version", COMPRESS_VERSION}};
  *model_bytes = ctx.input_bytes();
  *model_macs = CountMacs(ctx.original()).total;
  doc["model"] = {{"path", o.model}, {"bytes", *model_bytes}, {"parameters", CountParameters(ctx.original())},
                  {"macs", *model_macs}};
  const ReferenceEvaluation* ref = ctx.reference(gate.active());
  json baseline = {{"top1", nullptr}, {"ms_per_sample", nullptr}};
  if (ref != nullptr) {
    if (ref->result().has_labels) baseline["top1"] = ref->result().top1;
    if (ref->result().samples_per_second > 0) baseline["ms_per_sample"] = 1000.0 / ref->result().samples_per_second;
  }
  doc["baseline"] = baseline;
  json data = {{"calib", nullptr}, {"eval", nullptr}, {"finetune", nullptr}};
  if (ctx.eval_data() != nullptr) {
    data["eval"] = {{"dir", o.eval_dir}, {"sha256", ctx.compare_sha256(gate.active())},
                    {"samples", ref != nullptr ? ref->result().samples : 0},
                    {"labelled", ctx.eval_data()->has_labels()}};
  }
  doc["data"] = data;
  if (gate.max_drop_pts) {
    doc["gate"] = {{"metric", "top1_drop_pts"}, {"threshold", *gate.max_drop_pts}};
  } else if (gate.min_agreement) {
    doc["gate"] = {{"metric", "agreement"}, {"threshold", *gate.min_agreement}};
  } else {
    doc["gate"] = nullptr;
  }
  doc["objective"] = nullptr;
  doc["chosen"] = nullptr;
  doc["stop_reason"] = nullptr;
  return doc;
}

// What the calibration and fine-tuning runs were, once every recipe has run.
void Footer(json& doc, JobContext& ctx, int64_t finetuned) {
  const JobOptions& o = ctx.options();
  if (ctx.calib_data() != nullptr) {
    DataCalibrationSource& c = ctx.calibration();
    doc["data"]["calib"] = {
        {"dir", o.calib_dir},
        {"sha256", c.data_sha256()},
        {"samples", ctx.samples_for_calibration()},
        {"calibration_runs", c.calibration_runs()},
        {"channel_runs", c.channel_runs()},
        {"batch_runs", c.batch_runs()},
        {"note", "activation ranges collected once on the original model (after clean-up) and shared by every "
                 "recipe by value name; per-channel statistics measured once per distinct model"}};
  }
  if (!o.finetune_dir.empty()) {
    doc["data"]["finetune"] = {{"dir", o.finetune_dir}, {"recipes_finetuned", finetuned},
                               {"teacher_runs", ctx.teacher_cache().runs()}};
  }
}

int64_t CountFinetuned(const json& rows) {
  int64_t n = 0;
  for (const auto& r : rows) {
    if (r["status"] == "ok" &&
        std::find(r["passes"].begin(), r["passes"].end(), json("finetune")) != r["passes"].end()) {
      ++n;
    }
  }
  return n;
}

std::string DefaultOutDir(const std::string& model, const char* suffix) { return Beside(model, Stem(model) + suffix); }

void MakeOutDir(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) ThrowIO(dir + ": cannot create the output folder: " + ec.message());
}

void WriteDocs(const json& doc, const std::string& report_json, const std::string& report_html) {
  if (!report_json.empty()) WriteFileAtomic(report_json, doc.dump(2) + "\n");
  if (!report_html.empty()) WriteFileAtomic(report_html, FormatCompareHtml(doc));
}

double Accuracy(const json& row) {
  return row["top1"].is_number() ? row["top1"].get<double>() : row["agreement"].is_number() ? row["agreement"].get<double>() : -1;
}

}  // namespace

std::vector<Preset> ListedPresets() {
  return {
      {"fp16", "float16 weights and activations (--fp16)"},
      {"int8", "static INT8, QDQ, per-channel weights, calibrated activations (--int8 --calib DIR)"},
      {"int8-dynamic", "INT8 weights, activations quantized at run time (--int8 --dynamic)"},
      {"int8-weights", "INT8 weights, computation in float (--int8 --weights-only)"},
      {"int8-percentile", "static INT8, activation ranges keeping 99.999 % of the values (--int8 --calib-method "
                          "percentile); int8-entropy and int8-mse likewise"},
      {"prune50", "50 % of the weights set to zero, unstructured (--prune 0.5)"},
      {"prune2:4", "two of every four weights zero along the input axis (--prune 0.5 --prune-pattern 2:4)"},
      {"channels50", "half the channels of every prunable channel group removed (--prune-channels 0.5)"},
      {"lowrank50", "every Gemm/MatMul/Conv weight factorized to at most 50 % of its parameters (--low-rank 0.5)"},
      {"target-macs50", "channels removed per group by measured sensitivity until 50 % of the MACs remain "
                        "(--target-macs 0.5)"},
      {"lowrank-params50", "low rank with ranks chosen by measured error until 50 % of the parameters remain "
                           "(--low-rank-params 0.5)"},
      {"lowrank-macs50", "low rank with ranks chosen by measured error until 50 % of the MACs remain "
                         "(--low-rank-macs 0.5)"},
      {"prune50+int8", "prune50, then int8"},
      {"prune2:4+int8", "prune2:4, then int8"},
      {"channels50+int8", "channels50, then int8"},
      {"lowrank50+int8", "lowrank50, then int8"},
  };
}

namespace {

// "channels25+lowrank75+int8" -> {"channels25", "lowrank75", "int8"}.
std::vector<std::string> SplitPlus(const std::string& name) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    const auto plus = name.find('+', start);
    parts.push_back(name.substr(start, plus == std::string::npos ? std::string::npos : plus - start));
    if (plus == std::string::npos) break;
    start = plus + 1;
  }
  return parts;
}

// The kind of a structure part: one of each kind per preset.
std::string Kind(const std::string& s) {
  if (s == "prune2:4" || Level(s, "prune") > 0) return "prune";
  if (Level(s, "channels") > 0 || Level(s, "target-macs") > 0) return "channels";
  return "lowrank";
}

}  // namespace

bool IsPresetName(const std::string& name) {
  const std::vector<std::string> parts = SplitPlus(name);
  std::set<std::string> kinds;
  for (size_t i = 0; i < parts.size(); ++i) {
    const bool last = i + 1 == parts.size();
    if (last && IsPrecision(parts[i])) return true;
    if (!IsStructure(parts[i]) || !kinds.insert(Kind(parts[i])).second) return false;
  }
  return true;
}

JobOptions PresetOptions(const std::string& name, const JobOptions& base) {
  if (!IsPresetName(name)) {
    ThrowUsage("--recipe '" + name + "' is neither a file nor a preset; presets: " + PresetList() +
               " (pruneNN, channelsNN, lowrankNN, target-macsNN, lowrank-paramsNN and lowrank-macsNN take any level NN "
               "from 1 to 99; joined by '+', structures of different kinds come first and one precision last, e.g. "
               "target-macs75+lowrank-params75+int8)");
  }
  JobOptions o = base;
  bool structure = false;
  for (const auto& part : SplitPlus(name)) {
    if (ApplyStructure(part, o)) {
      structure = true;
    } else {
      ApplyPrecision(part, o);
    }
  }
  // Fine-tuning retrains what a structure pass changed; precision alone has nothing to recover here.
  if (!structure) o.finetune_dir.clear();
  if (o.finetune_dir.empty()) {
    o.epochs.reset();
    o.lr.reset();
    o.finetune_limit.reset();
    o.label_weight.reset();
    o.temperature.reset();
    o.seed.reset();
    o.distill_loss.clear();
  }
  return o;
}

CompareEntry ResolveCompareEntry(const std::string& recipe, const JobOptions& base) {
  CompareEntry e;
  e.name = recipe;
  if (FileExists(recipe)) {
    e.source = "file";
    e.options = base;
    e.options.finetune_dir.clear();
    e.options.recipe_file = recipe;
    return e;
  }
  e.source = "preset";
  e.options = PresetOptions(recipe, base);
  return e;
}

void MarkParetoFronts(json& doc) {
  json& rows = doc["rows"];
  json pareto = {{"size", json::array()}, {"macs", json::array()}};
  for (const char* axis : {"size", "macs"}) {
    const char* key = std::string(axis) == "size" ? "bytes" : "macs";
    const std::string flag = std::string("pareto_") + axis;
    for (auto& r : rows) {
      if (r["status"] != "ok" || !r[key].is_number() || Accuracy(r) < 0) {
        r[flag] = false;
        continue;
      }
      const double x = r[key].get<double>(), y = Accuracy(r);
      bool dominated = false;
      for (const auto& q : rows) {
        if (&q == &r || q["status"] != "ok" || !q[key].is_number() || Accuracy(q) < 0) continue;
        const double qx = q[key].get<double>(), qy = Accuracy(q);
        if (qx <= x && qy >= y && (qx < x || qy > y)) {
          dominated = true;
          break;
        }
      }
      r[flag] = !dominated;
      if (!dominated) pareto[axis].push_back(r["recipe"]);
    }
  }
  doc["pareto"] = pareto;
}

json RunCompare(const CompareJobOptions& opt) {
  const auto start = std::chrono::steady_clock::now();
  if (opt.recipes.empty()) ThrowUsage("compare: give at least one --recipe (a file or a preset; --list-presets)");
  const GateSpec gate = GateFromOptions(opt.common);
  if (gate.active() && opt.common.eval_dir.empty() && opt.common.calib_dir.empty()) {
    ThrowUsage("the accuracy gate needs data to measure on: --eval DIR (or --calib DIR)");
  }
  // Every recipe resolves before anything is loaded: a typo is a usage error, not a row.
  std::vector<CompareEntry> entries;
  std::set<std::string> names;
  for (const auto& r : opt.recipes) {
    if (!names.insert(r).second) ThrowUsage("--recipe '" + r + "' is given twice");
    entries.push_back(ResolveCompareEntry(r, opt.common));
  }
  const std::string out_dir = opt.out_dir.empty() ? DefaultOutDir(opt.common.model, ".compare") : opt.out_dir;
  for (const std::string* report : {&opt.report_json, &opt.report_html}) {
    if (!report->empty()) CheckOutputPath(*report);
  }
  JobContext ctx(opt.common, /*shared=*/true);
  MakeOutDir(out_dir);
  Session s{ctx, out_dir, gate, opt.include_timings, 0, 0, {}};
  json doc = Header("compare", ctx, gate, &s.model_bytes, &s.model_macs);
  json rows = json::array();
  for (const auto& e : entries) {
    // On a terminal, the recipe each progress bar belongs to; scripts and logs get the table only.
    spdlog::log(ProgressBar::Interactive() ? spdlog::level::info : spdlog::level::debug, "recipe {} ({} of {})", e.name,
                rows.size() + 1, entries.size());
    rows.push_back(RunEntry(s, e));
  }
  doc["rows"] = rows;
  MarkParetoFronts(doc);
  Footer(doc, ctx, CountFinetuned(doc["rows"]));
  doc["timings"] = opt.include_timings
                       ? json{{"total_seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()}}
                       : json(nullptr);
  WriteDocs(doc, opt.report_json, opt.report_html);
  return doc;
}


namespace {

// The value auto minimizes for a row that ran.
double ObjectiveValue(const json& row, const std::string& objective) {
  const char* key = objective == "size" ? "bytes" : objective == "macs" ? "macs" : "ms_per_sample";
  return row[key].is_number() ? row[key].get<double>() : std::numeric_limits<double>::infinity();
}

bool Holds(const json& row) { return row["status"] == "ok" && row["gate"].is_object() && row["gate"]["passed"].get<bool>(); }

json SkippedRow(const std::string& name, const std::string& reason) {
  CompareEntry e;
  e.name = name;
  e.source = "search";
  json row = ErrorRow(e, "");
  row["status"] = "skipped";
  row["error"] = nullptr;
  row["skipped_reason"] = reason;
  return row;
}

}  // namespace

json RunAuto(const AutoJobOptions& opt) {
  const auto start = std::chrono::steady_clock::now();
  const JobOptions& common = opt.common;
  if (opt.objective != "size" && opt.objective != "macs" && opt.objective != "latency") {
    ThrowUsage("--objective must be size, macs or latency, got '" + opt.objective + "'");
  }
  if (!(opt.budget_minutes >= 0)) ThrowUsage("--budget-minutes must be >= 0");
  const GateSpec gate = GateFromOptions(common);
  if (!gate.active()) ThrowUsage("auto: give the accuracy budget: --max-accuracy-drop PTS (or --min-agreement)");
  if (common.eval_dir.empty()) ThrowUsage("auto: give the data the budget is measured on: --eval DIR");
  const std::string out_dir = opt.out_dir.empty() ? DefaultOutDir(common.model, ".auto") : opt.out_dir;
  const std::string output = opt.output.empty() ? Beside(common.model, Stem(common.model) + ".auto.onnx") : opt.output;
  for (const std::string* p : {&output, &opt.report_json, &opt.report_html}) {
    if (p->empty()) continue;
    if (FileExists(common.model) && SameFile(*p, common.model)) ThrowUsage("refusing to overwrite the input file '" + common.model + "'");
    CheckOutputPath(*p);
  }
  JobContext ctx(common, /*shared=*/true);
  MakeOutDir(out_dir);
  Session s{ctx, out_dir, gate, opt.include_timings, 0, 0, {}};
  json doc = Header("auto", ctx, gate, &s.model_bytes, &s.model_macs);
  doc["objective"] = opt.objective;
  json rows = json::array();
  const bool calib = !common.calib_dir.empty();
  std::string stop_reason;
  bool out_of_time = false;
  const auto elapsed_minutes = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / 60.0;
  };
  std::optional<RecipeResult> best;
  json best_row;
  // Runs one candidate unless the budget is spent; keeps the best that holds the gate.
  const auto run = [&](const std::string& name) -> const json& {
    if (opt.budget_minutes > 0 && elapsed_minutes() >= opt.budget_minutes) {
      out_of_time = true;
      rows.push_back(SkippedRow(name, "the time budget was spent"));
      return rows.back();
    }
    spdlog::log(ProgressBar::Interactive() ? spdlog::level::info : spdlog::level::debug, "auto: trying {}", name);
    CompareEntry e;
    e.name = name;
    e.source = "search";
    e.options = PresetOptions(name, common);
    RecipeResult r;
    json row = RunEntry(s, e, &r);
    if (Holds(row)) {
      const double v = ObjectiveValue(row, opt.objective);
      const double bv = best ? ObjectiveValue(best_row, opt.objective) : std::numeric_limits<double>::infinity();
      if (!best || v < bv || (v == bv && Accuracy(row) > Accuracy(best_row))) {
        best = std::move(r);
        best_row = row;
      }
    }
    rows.push_back(std::move(row));
    return rows.back();
  };

  // 1. Precision alone: cheap to try, and the precision every structure below is combined with.
  // When static INT8 with min/max ranges breaks the gate, the other calibration methods come next: they
  // derive their ranges from the same shared statistics, so they cost an evaluation each, no calibration.
  std::vector<std::string> precisions;
  if (calib) precisions.insert(precisions.end(), {"int8", "int8-percentile", "int8-entropy"});
  precisions.insert(precisions.end(), {"int8-dynamic", "int8-weights", "fp16"});
  std::string precision;  // the best one that holds the gate ("" when none)
  double precision_value = std::numeric_limits<double>::infinity();
  for (const auto& p : precisions) {
    // INT8's weights take the same bytes whatever the activations do, and FP16's twice as many: once a
    // smaller precision holds, a larger one cannot win on size.
    if (opt.objective == "size" && !precision.empty() && precision.rfind("int8", 0) == 0) {
      rows.push_back(SkippedRow(p, p == "fp16" ? "float16 weights take twice the bytes of " + precision +
                                                     ", which holds the gate"
                                               : "its weights take the bytes of " + precision + ", which holds the gate"));
      continue;
    }
    const json& row = run(p);
    if (Holds(row) && ObjectiveValue(row, opt.objective) < precision_value) {
      precision = p;
      precision_value = ObjectiveValue(row, opt.objective);
    }
  }

  // 2. Structures, mildest level first; a family stops at its first level that breaks the gate (a larger
  // level removes more and is assumed to cost more), and its later levels are listed as skipped.
  struct Family {
    std::string prefix;
    std::vector<int> levels;  // mildest first
    int passed = 0;           // the most aggressive level that held
    std::vector<int> held;    // every level that held, mildest first
    bool stopped = false;
  };
  // Budgeted forms: each channel group and each layer gets the share its measured sensitivity allows,
  // where one ratio for every layer breaks the most sensitive first (the sample CNN keeps 91.3 % top-1
  // at --target-macs 0.75 with INT8, and 89.7 % at --prune-channels 0.25).
  const std::vector<int> levels = {75, 60, 50, 40, 30, 20};
  std::vector<Family> families = {{"target-macs", levels, 0, {}, false},
                                  {opt.objective == "size" ? "lowrank-params" : "lowrank-macs", levels, 0, {}, false}};
  const std::string suffix = precision.empty() ? std::string() : "+" + precision;
  for (size_t step = 0; step < levels.size() && !out_of_time; ++step) {
    for (auto& f : families) {
      const std::string name = f.prefix + std::to_string(f.levels[step]) + suffix;
      if (f.stopped) {
        rows.push_back(SkippedRow(name, f.prefix + std::to_string(f.levels[step - 1]) + suffix +
                                            " already breaks the gate"));
        continue;
      }
      const json& row = run(name);
      if (Holds(row)) {
        f.passed = f.levels[step];
        f.held.push_back(f.levels[step]);
      } else if (row["status"] != "skipped") {
        f.stopped = true;
      }
    }
  }
  // 3. The two families together, from the most aggressive levels that held alone; the errors add up, so
  // when a pair breaks the gate, each family in turn backs off to its next milder level that held, until
  // a pair holds (up to four pairs).
  if (!out_of_time && !families[0].held.empty() && !families[1].held.empty()) {
    size_t a = families[0].held.size() - 1, b = families[1].held.size() - 1;
    for (int tries = 0; tries < 4 && !out_of_time; ++tries) {
      const json& row = run(families[0].prefix + std::to_string(families[0].held[a]) + "+" + families[1].prefix +
                            std::to_string(families[1].held[b]) + suffix);
      if (Holds(row) || row["status"] == "skipped") break;
      // Back off the family whose level removes more (the lower kept share), or the other when it is
      // already at its mildest.
      const bool back_a = a > 0 && (b == 0 || families[0].held[a] <= families[1].held[b]);
      if (back_a) {
        --a;
      } else if (b > 0) {
        --b;
      } else {
        break;
      }
    }
  }

  if (out_of_time) {
    stop_reason = "the time budget of " + Fixed(opt.budget_minutes, 1) + " minutes was spent";
  } else {
    stop_reason = "every candidate was tried or ruled out by a measured one";
  }
  doc["rows"] = rows;
  MarkParetoFronts(doc);
  if (best) {
    doc["chosen"] = best_row["recipe"];
    for (auto& r : doc["rows"]) r["chosen"] = r["recipe"] == best_row["recipe"] && r["status"] == "ok";
    SaveModel(best->model, output, JobSaveOptions(ctx));
    doc["output"] = output;
    stop_reason += "; chosen: " + best_row["recipe"].get<std::string>() + ", the smallest " +
                   (opt.objective == "size" ? "file" : opt.objective == "macs" ? "MAC count" : "latency") +
                   " that holds the gate";
  } else {
    doc["output"] = nullptr;
    stop_reason += "; no candidate holds the gate";
  }
  doc["stop_reason"] = stop_reason;
  Footer(doc, ctx, CountFinetuned(doc["rows"]));
  doc["timings"] = opt.include_timings ? json{{"total_seconds", elapsed_minutes() * 60.0}} : json(nullptr);
  WriteDocs(doc, opt.report_json, opt.report_html);
  return doc;
}

}  // namespace compress
