// Calibration: per-tensor statistics of a float model's activations over a data folder, and the
// quantization ranges the four calibration methods derive from them.
//
// Statistics are streamed: each tensor keeps its min/max, counts and one fixed-size histogram, so memory
// does not depend on the number of samples. The table holds raw statistics, not ranges, so it can be
// saved (--calib-table) and reused with any method without running the model again.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "compress/io/dataset.h"
#include "compress/ir/graph.h"
#include "compress/ir/tensor.h"
#include "compress/passes/pass.h"

namespace compress {

enum class CalibMethod { kMinMax, kPercentile, kEntropy, kMse };
const char* CalibMethodName(CalibMethod m);
// Throws Error(kUsage) listing the valid names.
CalibMethod CalibMethodFromName(const std::string& name);

// Streaming statistics of one tensor.
struct TensorStats {
  int64_t count = 0;       // finite values seen
  int64_t non_finite = 0;  // NaN and +-Inf values seen (never part of min/max or the histogram)
  double min = 0, max = 0; // of the finite values (0, 0 when count == 0)
  // Histogram of the finite values over [-hist_range, hist_range]; bins of equal width. The range only
  // ever doubles (adjacent bins merge), so the result does not depend on batch boundaries.
  double hist_range = 0;
  std::vector<int64_t> hist;

  void Observe(const float* data, int64_t n);
  void Merge(const TensorStats& other);  // same bin count required
};

inline constexpr int kDefaultHistogramBins = 2048;
// Limits on calibration tables read from files: the entropy search is quadratic in the bins, and every
// tensor of a table holds all its bins in memory (8 bytes each), however few the file lists.
inline constexpr int64_t kMaxHistogramBins = 16384;
inline constexpr int64_t kMaxTableHistogramEntries = int64_t{1} << 25;

struct CalibrationTable {
  std::string data_sha256;  // of the calibration data
  int64_t samples = 0;
  int bins = kDefaultHistogramBins;
  std::map<std::string, TensorStats> tensors;  // by value name

  nlohmann::json ToJson() const;  // schema compress.calib/1
  static CalibrationTable FromJson(const nlohmann::json& doc, const std::string& origin);
  void Save(const std::string& path) const;                  // atomic write
  static CalibrationTable Load(const std::string& path);     // Error(kInvalidInput) naming the file on bad content
};

struct CalibrateOptions {
  // Small batches keep the executor's activation buffers small: with 32 the peak memory of calibrating
  // the sample CNN swung by 25 % between runs with malloc's layout of those blocks (BENCHMARKS.md).
  int64_t batch = 8;
  int64_t limit = 0;  // first `limit` samples only (0: all)
  int threads = 0;
  bool progress = true;
  int bins = kDefaultHistogramBins;
  // Besides `tensors`, every float32 value the model computes in its main graph (graph inputs and node
  // outputs): the statistics one calibration run shares with every recipe of a `compare` or `auto`.
  bool every_float_value = false;
};

// Runs `model` over `data` and collects statistics of the named float32 values (graph inputs or node
// outputs of the main graph). A name the model does not compute is Error(kInvalidInput).
CalibrationTable Calibrate(const Model& model, const Dataset& data, const std::vector<std::string>& tensors,
                           const CalibrateOptions& options = {});

// Runs `model` over `data` and sums the squares of each requested float32 value per channel along the
// request's axis (see ChannelRequest), in request order. The same value may be asked for along several
// axes. A name the model does not compute, a value that is not float32, an axis out of range or a channel
// count that changes between batches is Error(kInvalidInput).
std::vector<ChannelSquares> ChannelSumSquares(const Model& model, const Dataset& data,
                                              const std::vector<ChannelRequest>& requests,
                                              const CalibrateOptions& options = {});

// Runs `model` over `data` and calls `fn(i, value)` with every batch's value of `tensors[i]`, in data order.
// A name the model does not compute or a value that is not float32 is Error(kInvalidInput).
void ForEachBatch(const Model& model, const Dataset& data, const std::vector<std::string>& tensors,
                  const std::function<void(size_t, const Tensor&)>& fn, const CalibrateOptions& options = {});

struct QuantRange {
  float lo = 0, hi = 0;  // always lo <= 0 <= hi and hi - lo > 0
};

struct RangeOptions {
  CalibMethod method = CalibMethod::kMinMax;
  double percentile = 99.999;  // kPercentile: share of values kept inside the range, in percent
  bool symmetric = false;      // int8 activations: range symmetric around 0
  int levels = 256;            // quantization levels of the target type (entropy / MSE search)
};

// Range for one tensor. Degenerate statistics (no finite values, a constant or all-zero tensor) give a
// small non-zero range that still contains every value seen, never a zero or infinite scale.
QuantRange ComputeRange(const TensorStats& stats, const RangeOptions& options);

// The calibration source of a command-line run: calibrates on `data` when asked, or reuses the table in
// `table_path` when that file exists (it must cover every tensor asked for: a table from another model
// or recipe is an Error(kInvalidInput) naming the first missing tensor); a fresh table is saved there.
class DataCalibrationSource : public CalibrationSource {
 public:
  DataCalibrationSource(const Dataset* data, std::string table_path, CalibrateOptions options);
  const CalibrationTable& Get(const Model& model, const std::vector<std::string>& tensors) override;
  std::string data_sha256() const override;
  bool has_data() const override { return data_ != nullptr; }
  std::vector<ChannelSquares> ChannelSumSquares(const Model& model, const std::vector<ChannelRequest>& requests) override;
  void ForEachBatch(const Model& model, const std::vector<std::string>& tensors,
                    const std::function<void(size_t, const Tensor&)>& fn) override;
  bool reused_table() const { return reused_; }

  // Shared by many recipes (`compare`, `auto`): the first request calibrates `reference` (the original
  // after clean-up) for every float32 value it computes, and every later request of any recipe's model is
  // served from those statistics by value name, so pruned or low-rank models reuse the original's ranges
  // for the values they keep. Only values that `reference` does not compute (the middle of a low-rank
  // pair) are calibrated on the model asked about, in a run of their own. Per-channel statistics are
  // cached by the content of the model asked about (SerializeModel), so recipes that reach the same
  // model before pruning measure it once.
  void ShareAcross(const Model* reference) { reference_ = reference; }
  // Runs over the calibration data so far: statistics (Calibrate), per-channel sums (ChannelSumSquares)
  // and streamed batches (ForEachBatch, for low-rank whitening and re-fitted pruning).
  int64_t calibration_runs() const { return calibration_runs_; }
  int64_t channel_runs() const { return channel_runs_; }
  int64_t batch_runs() const { return batch_runs_; }

 private:
  const Dataset* data_;
  std::string table_path_;
  CalibrateOptions options_;
  CalibrationTable table_;
  bool reused_ = false;
  const Model* reference_ = nullptr;
  int64_t calibration_runs_ = 0, channel_runs_ = 0, batch_runs_ = 0;
  std::map<std::string, std::vector<ChannelSquares>> channel_cache_;  // by sha256(model bytes) and requests
};

}  // namespace compress
