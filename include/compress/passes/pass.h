// The interface every graph pass implements, and the explicit list of passes.
//
// A pass rewrites a Model in place. "Does not apply" is not an error: the pass leaves the graph untouched
// and reports zero changes. A pass throws compress::Error only for input it cannot handle safely (the
// message names the node or tensor). Options are a JSON object validated against the pass's OptionSpec
// list before any model is loaded, with defaults filled in, so Run() can read them without checks.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "compress/ir/graph.h"
#include "compress/util/error.h"

namespace compress {

namespace train {
class TeacherCache;
}

struct CalibrationTable;

// A request for per-channel statistics of one activation: the float32 value `tensor` (a graph input or a
// node output of the main graph), channels along `axis` (negative counts from the last dimension).
struct ChannelRequest {
  std::string tensor;
  int64_t axis = 1;
};

// Sum of squares of an activation per channel over the calibration data; sqrt(sum_sq[c]) is the L2 norm
// of channel c over every sample and every other position. `sum` holds the plain sums (sum[c] / count is
// the channel's mean; empty when a source does not measure it). `count` is the number of values summed per
// channel.
struct ChannelSquares {
  std::vector<double> sum_sq;
  std::vector<double> sum;
  int64_t count = 0;
};

// Where a pass that needs activation statistics (static quantization) gets them: calibration of the
// model as it is when the pass runs, or a table saved by an earlier run. Set by the caller of the
// pipeline; null when no calibration data was given.
class CalibrationSource {
 public:
  virtual ~CalibrationSource() = default;
  // Statistics for the named values of `model`; throws Error naming what is missing.
  virtual const CalibrationTable& Get(const Model& model, const std::vector<std::string>& tensors) = 0;
  // Hash of the calibration data, for reports and metadata.
  virtual std::string data_sha256() const = 0;
  // Whether ChannelSumSquares can run: the data itself is at hand, not only a saved table.
  virtual bool has_data() const { return false; }
  // Per-channel sums of squares of the requested activations of `model` (as it is when the caller asks),
  // in request order, measured by running the model over the calibration data. Throws Error naming what
  // is missing; the default has no data and throws Error(kUsage).
  // Inline so that the calibration library, which implements this interface below the passes, links
  // without the passes library.
  virtual std::vector<ChannelSquares> ChannelSumSquares(const Model& /*model*/,
                                                        const std::vector<ChannelRequest>& requests) {
    ThrowUsage("per-channel activation statistics need calibration data (--calib DIR)" +
               (requests.empty() ? std::string() : ": asked for '" + requests.front().tensor + "'"));
  }
  // Runs `model` (as it is when the caller asks) over the calibration data and calls `fn(i, value)` with
  // each batch's value of `tensors[i]` (float32 graph inputs or node outputs of the main graph), batch by
  // batch in data order, so that a caller can accumulate statistics of its own (the Gram matrix of a
  // layer's input). Throws Error naming what is missing; the default has no data and throws Error(kUsage).
  virtual void ForEachBatch(const Model& /*model*/, const std::vector<std::string>& tensors,
                            const std::function<void(size_t, const Tensor&)>& /*fn*/) {
    ThrowUsage("activation statistics need calibration data (--calib DIR)" +
               (tensors.empty() ? std::string() : ": asked for '" + tensors.front() + "'"));
  }
};

// What a pass tells the report besides the graph statistics the pipeline measures itself.
class PassContext {
 public:
  explicit PassContext(int threads = 1, CalibrationSource* calibration = nullptr)
      : threads_(threads), calibration_(calibration) {}

  // Adds `n` to a named counter, e.g. "folded_nodes"; counters appear in the report in name order.
  void Count(const std::string& key, int64_t n = 1) { counters_[key] += n; }
  // A line of explanation for the report ("kept Resize in float32: blocked op").
  void Note(std::string message) { notes_.push_back(std::move(message)); }
  // Structured details a pass wants in the report (e.g. per-tensor clamp counts); merged by key.
  nlohmann::json& details() { return details_; }

  int threads() const { return threads_; }
  CalibrationSource* calibration() const { return calibration_; }
  // The model the compressed one should imitate (the input before any pass, or the model distilled into
  // a --student); null when the caller gives none. Fine-tuning uses it as the teacher.
  const Model* teacher() const { return teacher_; }
  void set_teacher(const Model* teacher) { teacher_ = teacher; }
  // Where fine-tuning keeps the teacher's outputs between the runs of one command; may be null.
  train::TeacherCache* teacher_cache() const { return teacher_cache_; }
  void set_teacher_cache(train::TeacherCache* cache) { teacher_cache_ = cache; }
  const std::map<std::string, int64_t>& counters() const { return counters_; }
  const std::vector<std::string>& notes() const { return notes_; }
  const nlohmann::json& details() const { return details_; }

 private:
  int threads_;
  CalibrationSource* calibration_;
  const Model* teacher_ = nullptr;
  train::TeacherCache* teacher_cache_ = nullptr;
  std::map<std::string, int64_t> counters_;
  std::vector<std::string> notes_;
  nlohmann::json details_ = nlohmann::json::object();
};

class Pass {
 public:
  virtual ~Pass() = default;
  virtual void Run(Model& model, PassContext& ctx) = 0;
};

// One option of a pass. `default_value` also fixes the type: boolean, integer, number, string, an array
// of strings, or an object (a mapping of names to numbers).
struct OptionSpec {
  std::string name;
  nlohmann::json default_value;
  std::string help;
};

struct PassInfo {
  std::string name;      // snake_case key used in recipes; also the file stem under src/passes
  std::string summary;   // one line for --help and the README
  bool cleanup = false;  // part of the default clean-up run before other passes
  std::vector<OptionSpec> options;
  std::function<std::unique_ptr<Pass>(const nlohmann::json& options)> create;
};

// Every pass, in the order the default clean-up runs them (clean-up passes first).
const std::vector<PassInfo>& AllPasses();
// Null when no pass has that name.
const PassInfo* FindPass(const std::string& name);

// Checks `options` (an object, possibly empty) against the pass's specs and returns it completed with
// defaults. Throws Error(kUsage) for an unknown option or a value of the wrong type, naming `origin`
// (e.g. "recipe.yaml: passes[1]") and listing the valid options.
nlohmann::json ValidatePassOptions(const PassInfo& pass, const nlohmann::json& options, const std::string& origin);

}  // namespace compress
