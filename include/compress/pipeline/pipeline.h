// Runs a recipe's passes over a model, verifying the graph after every pass and measuring each one.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "compress/ir/graph.h"
#include "compress/passes/pass.h"
#include "compress/pipeline/recipe.h"

namespace compress {

// Size of a model's graphs (main graph and subgraphs). Weights are initializers plus Constant-node
// tensors, so a pass that moves a tensor between the two does not change weight_bytes.
struct GraphStats {
  int64_t nodes = 0;
  int64_t initializers = 0;  // initializers and Constant-node tensors
  int64_t weight_bytes = 0;  // their storage bytes
  std::map<DType, int64_t> bytes_by_dtype;  // weight_bytes split by element type (not in ToJson)
  nlohmann::json ToJson() const;
};
GraphStats MeasureGraph(const Model& model);

struct PassRun {
  std::string pass;
  nlohmann::json options;
  GraphStats before, after;
  std::map<std::string, int64_t> counters;
  std::vector<std::string> notes;
  nlohmann::json details;
  double seconds = 0;
};

struct PipelineOptions {
  int threads = 1;
  CalibrationSource* calibration = nullptr;  // for passes that need activation statistics
  const Model* teacher = nullptr;            // for fine-tuning: the model to imitate
  train::TeacherCache* teacher_cache = nullptr;  // for fine-tuning: its outputs, kept between runs
  // Called before each pass (e.g. for a log line); may be empty.
  std::function<void(const RecipeStep& step)> on_pass;
};

// Below this share of the weight bytes converted, a compression pass (fp16, quantize) says so in one note, with the main reason, and in details["coverage"]; the run's summary repeats it.
inline constexpr double kLowCoverage = 0.5;

// Runs one pass and checks what it left: the model must satisfy VerifyModel and be topologically sorted,
// otherwise Error(kInternal) naming the pass.
PassRun RunPass(Model& model, const std::string& name, Pass& pass, const nlohmann::json& options,
                const PipelineOptions& pipeline_options = {});

// Runs recipe.ExpandedSteps() in order through RunPass. After every pass the model must satisfy VerifyModel and be
// topologically sorted; a pass that breaks either is an Error(kInternal) naming the pass.
std::vector<PassRun> RunPipeline(Model& model, const Recipe& recipe, const PipelineOptions& options = {});

}  // namespace compress
