// The size/accuracy report of one `compress` run: JSON for machines (schema compress.report/1,
// documented in docs/report.schema.json), Markdown for people, and a short summary table for stdout.
//
// Everything outside the "timings" section depends only on the inputs and options, never on the
// machine's speed or thread count, so two identical runs give identical reports once "timings" is
// dropped (and identical bytes when timings are disabled for tests).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "compress/eval/evaluate.h"
#include "compress/io/dataset.h"
#include "compress/ir/graph.h"
#include "compress/pipeline/pipeline.h"
#include "compress/pipeline/recipe.h"

namespace compress {

struct CompareOptions {
  int64_t batch = 64;
  int64_t limit = 0;  // first `limit` samples only (0: all)
  int threads = 0;
  bool progress = true;
};

// Both models evaluated on the same data, and how far the second's first output is from the first's.
struct ModelComparison {
  std::string data;         // folder as given by the user
  std::string data_sha256;  // set by the caller: hashing reads every byte, once per run is enough
  int64_t samples = 0;
  int64_t skipped = 0;      // trailing samples too few to fill the model's fixed batch (not evaluated)
  bool labelled = false;
  int64_t batch = 0;
  double top1_before = 0, top1_after = 0;  // when labelled
  double agreement = 0;        // fraction of samples whose argmax (top-1 prediction) is unchanged
  double cosine = 0;           // mean over samples of the cosine similarity of output 0
  double sqnr_db = 0;          // 10 log10(sum ref^2 / sum (ref - out)^2) over all of output 0; +inf if equal
  double max_abs_error = 0;
  double ms_per_sample_before = 0, ms_per_sample_after = 0;  // our executor, at `batch`
};

ModelComparison CompareModels(const Model& before, const Model& after, const Dataset& data,
                              const std::string& data_label, const CompareOptions& options);

// How far `b`'s first output and predictions are from `a`'s, two evaluations of the same samples (with
// EvalOptions::keep_outputs): the fidelity figures of CompareModels and `compress sensitivity`.
struct OutputFidelity {
  double agreement = 0;           // fraction of samples whose top-1 is unchanged
  double cosine = 0;              // mean over samples of the cosine similarity of output 0 (two zeros: 1)
  double signal = 0, noise = 0;   // sum ref^2 and sum (ref - out)^2 over all of output 0
  double sqnr_db = 0;             // 10 log10(signal / noise); +inf when equal
  double max_abs_error = 0;
};
OutputFidelity CompareOutputs(const EvalResult& a, const EvalResult& b);

// SQNR of every intermediate value the two models share by name (the compressed model's layer outputs
// against the original's), over the first `samples` of `data` (in the batches Dataset::PlanBatches
// forms). In graph order of `before`.
struct LayerSqnr {
  std::string name;     // value name
  std::string op_type;  // producer in the original model
  double sqnr_db = 0;   // +inf when identical
};
std::vector<LayerSqnr> CompareLayers(const Model& before, const Model& after, const Dataset& data, int64_t samples,
                                     int threads);

// Calibration facts for the report.
struct CalibrationInfo {
  std::string data;  // folder, or empty when a saved table was reused without data
  std::string data_sha256;
  int64_t samples = 0;
  int64_t skipped = 0;  // trailing samples too few to fill the model's fixed batch (not used)
  std::string table;  // --calib-table path, if any
  bool reused_table = false;
};

// An accuracy gate's verdict on one comparison (see compress/report/gate.h).
struct GateCheck {
  std::string metric;  // "top1_drop_pts" or "agreement"
  double value = 0;
  double threshold = 0;
  bool passed = false;
  // How far from the threshold, in the metric's unit: positive = margin left, negative = violation.
  double margin = 0;
};

// The accuracy gate's verdict, for the report.
struct GateInfo {
  GateCheck check;
  std::string data;
  bool on_calibration_data = false;
  bool auto_fallback = false;
  int64_t sensitivity_samples = 0;
  std::vector<nlohmann::json> kept_in_float;  // {"node","op_type","sqnr_db_without","metric_after"}
};

struct ReportInput {
  std::string input_path, output_path;
  int64_t input_bytes = 0;   // model file plus external data files
  int64_t output_bytes = 0;
  const Model* before = nullptr;
  const Model* after = nullptr;
  Recipe recipe;
  std::vector<PassRun> passes;
  std::optional<ModelComparison> comparison;
  bool checker_ok = false;
  std::string checker_message;
  double total_seconds = 0;
  bool include_timings = true;  // false: "timings" is null (byte-identical reports in tests)
  std::vector<LayerSqnr> layers;
  std::optional<CalibrationInfo> calibration;
  std::optional<GateInfo> gate;
  // The files a download ships (model file and external data files), for their zstd-compressed size; no
  // "zstd" section when both are empty. `threads` bounds zstd's workers (its output does not depend on it).
  std::vector<std::string> input_files, output_files;
  int threads = 0;
  // Measure the zstd sizes only when each side's files total at most this many bytes (< 0: any size);
  // otherwise "zstd" holds the level, both sides' uncompressed bytes and "skipped" with the reason.
  int64_t zstd_max_bytes = -1;
};

// Besides the sections documented in docs/report.schema.json, the report holds "macs" (MACs per sample of
// both models, compress/eval/macs.h, with "ratio" after/before), "zstd" (see ReportInput) and "pruning":
// one row per entry of a pass's details["layers"] array (the pass's own keys, such as node, op, method,
// sparsity_before/after or channels_before/after) plus "pass", "macs_before" and "macs_after" joined on
// the node name, and "status" ("kept", or "renamed or removed" when no node of that name is in the output).
nlohmann::json BuildReport(const ReportInput& in);
std::string FormatReportMarkdown(const nlohmann::json& report);
std::string FormatReportSummary(const nlohmann::json& report);  // a few lines for the terminal

// Keys written into the output model's metadata_props.
inline constexpr const char* kMetaRecipe = "compress.recipe";
inline constexpr const char* kMetaVersion = "compress.version";
inline constexpr const char* kMetaEvalSha256 = "compress.eval_data_sha256";
inline constexpr const char* kMetaCalibSha256 = "compress.calib_data_sha256";

}  // namespace compress
