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

#include "compress/eval/compare.h"
#include "compress/eval/evaluate.h"
#include "compress/eval/gate.h"
#include "compress/io/dataset.h"
#include "compress/ir/graph.h"
#include "compress/pipeline/pipeline.h"
#include "compress/pipeline/recipe.h"

namespace compress {

// Calibration facts for the report.
struct CalibrationInfo {
  std::string data;  // folder, or empty when a saved table was reused without data
  std::string data_sha256;
  int64_t samples = 0;
  int64_t skipped = 0;  // trailing samples too few to fill the model's fixed batch (not used)
  std::string table;  // --calib-table path, if any
  bool reused_table = false;
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
