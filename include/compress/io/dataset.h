// Input data for calibration and evaluation (`--calib DIR`, `--data DIR`, `--eval DIR`).
//
// Layouts of DIR, detected in this order:
//  1. ONNX test data: sub-folders test_data_set_*/ holding input_0.pb, input_1.pb, ... (or DIR itself
//     holding input_*.pb). input_K maps to the model input whose name the TensorProto carries, else to
//     the K-th model input. Each folder is one record.
//  2. Several inputs: one sub-folder per record holding files named after the model inputs
//     (<input>.npy or <input>.pb).
//  3. One input: DIR/*.npy (or *.pb), one record per file.
// A record holds one sample (the model input's shape without its batch axis, or the full shape with a
// batch of 1) or a batch of samples (the full rank, the batch axis holding the number of samples). Each
// input's batch axis comes from the declared shapes (InferBatchLayout): usually the first, but e.g. an
// LSTM state float32[2,batch,64] is batched along axis 1. A rank-0 input is not batched: one value per
// record, shared by all of its samples. Files are taken in sorted byte order of their names, so the order
// never depends on the file system.
// Labels come from DIR/labels.npy (int64 or int32, shape [N] or [N,1]), DIR/labels.txt (one integer per
// line; not both) or an explicit file; their count must equal the number of samples.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "compress/ir/graph.h"

namespace compress {

// What a model expects of one input.
struct InputSpec {
  std::string name;
  DType dtype = DType::kUndefined;
  std::vector<Dim> shape;        // as declared; the batch axis is found by InferBatchLayout
  bool has_shape = true;         // false when the model declares no shape (not even the rank)
  std::string ToString() const;  // "input 'x' float32[batch,1,28,28]"
};

// The model's real inputs (graph inputs that are not initializers), in order.
std::vector<InputSpec> ModelInputSpecs(const Model& model);

// How a model takes a batch of samples: the one place that knows each input's batch axis and whether the
// model declares a fixed batch size. Every caller that forms batches (evaluation, calibration, model and
// layer comparison, `run`, `bench`) goes through it, via Dataset::PlanBatches or directly.
struct BatchLayout {
  // Per input (in input order): the batch axis, or -1 for a rank-0 input, which is not batched.
  std::vector<int> input_axes;
  // > 0 when the model only runs batches of exactly this many samples (a fixed batch dim, e.g. the 1 of
  // float32[1,16,96], or a model with only rank-0 inputs); 0 when the batch size is free.
  int64_t fixed_batch = 0;
  // Name of the symbolic batch dimension shared by the inputs ("batch"), empty when there is none.
  std::string batch_dim;

  // The samples per run for a requested batch size: the fixed batch when there is one.
  int64_t BatchSize(int64_t requested) const { return fixed_batch > 0 ? fixed_batch : requested; }
  // The batch axis of a model output declared with `shape`: where the symbolic batch dimension is (hn of
  // float32[2,batch,64] -> 1); with a fixed batch, the first axis of that size; otherwise 0.
  int OutputAxis(const std::vector<Dim>& shape) const;
};

// Finds each input's batch axis from the declared shapes. Inputs of rank >= 1 share the batch axis:
//  1. a symbolic dimension (dim_param) every such input declares: the first one of the first input;
//  2. else, when every such input has exactly one unnamed free dimension ("?"), that one;
//  3. else, when all are fixed, a size every such input declares (the first such axis of the first
//     input, e.g. 1 in [1,512] and [2,1,64]): the model's fixed batch;
//  4. else axis 0 (fixed when every input declares the same fixed size there).
// A single input is batched along axis 0, fixed when that dim is.
BatchLayout InferBatchLayout(const std::vector<InputSpec>& inputs);

// Rows [first, first+count) of `t` along `axis` (a copy).
Tensor SliceAlongAxis(const Tensor& t, int axis, int64_t first, int64_t count);
// Tensors that differ only along `axis`, joined along it (one piece is returned as is).
Tensor ConcatAlongAxis(const std::vector<Tensor>& pieces, int axis);

// Consecutive samples that run together.
struct SampleRange {
  int64_t first = 0;
  int64_t count = 0;
};
struct BatchPlan {
  std::vector<SampleRange> batches;  // in sample order, covering samples [0, samples)
  int64_t samples = 0;               // samples covered by the batches
  int64_t skipped = 0;               // trailing samples left out: too few to fill the model's fixed batch
  int64_t batch = 0;                 // the largest batch (the fixed batch, or the requested size)
};

struct DatasetOptions {
  std::string labels_file;  // overrides DIR/labels.npy and DIR/labels.txt when set
};

class Dataset {
 public:
  // Scans DIR (headers only, no element data is read), checks every file against `inputs` (dtype and
  // fixed dims; error names the file, the input, the expected and the actual shape) and loads the labels.
  static Dataset Open(const std::string& dir, const std::vector<InputSpec>& inputs,
                      const DatasetOptions& options = {});

  int64_t num_samples() const { return num_samples_; }
  size_t num_records() const { return records_.size(); }
  // Rows of record i, and its first sample's global index.
  int64_t record_rows(size_t i) const { return records_.at(i).rows; }
  int64_t record_first_sample(size_t i) const { return records_.at(i).first_sample; }
  const std::string& record_name(size_t i) const { return records_.at(i).name; }

  // Samples [first, first+count), one tensor per model input (in input order) holding `count` along the
  // input's batch axis. Reads only the files (and rows) needed. Samples whose free dims differ cannot
  // share a batch: Error(kInvalidInput) says which. A rank-0 input is returned as the scalar; the samples
  // of one batch must hold the same value for it.
  std::vector<Tensor> ReadSamples(int64_t first, int64_t count) const;
  // A whole record as stored (rank of the model input).
  std::vector<Tensor> ReadRecord(size_t i) const;

  const BatchLayout& batch_layout() const { return batching_; }
  // How to run the first `total` samples (all when total <= 0 or beyond the data) in batches of at most
  // `batch` samples. With a fixed batch F the batches are [0,F), [F,2F), ... and a remainder shorter
  // than F is skipped (counted in `skipped`); fewer than F samples in all is Error(kInvalidInput).
  // Otherwise a batch also ends where the next record cannot join it: other free dims, or another value
  // of a rank-0 input (read when the folder is opened).
  BatchPlan PlanBatches(int64_t total, int64_t batch) const;

  bool has_labels() const { return !labels_.empty(); }
  const std::vector<int64_t>& labels() const { return labels_; }
  const std::string& layout() const { return layout_; }  // "onnx-test-data", "per-input-folders", "files"
  const std::string& dir() const { return dir_; }
  const std::vector<InputSpec>& inputs() const { return inputs_; }
  // Every data file, in order, for hashing the data a result was computed on.
  std::vector<std::string> files() const;

 private:
  struct Source {
    std::string path;
    bool is_npy = true;
    bool batched = false;  // file has the full rank (batch axis = rows) rather than one sample
    int axis = 0;          // the input's batch axis, -1 for a rank-0 input
    std::string scalar;    // a rank-0 input's value (its bytes), to group samples that share it
    uint64_t data_offset = 0;
    DType dtype = DType::kUndefined;
    std::vector<int64_t> shape;  // as stored
  };
  struct Record {
    std::string name;
    std::vector<Source> sources;  // one per model input
    int64_t rows = 0;
    int64_t first_sample = 0;
  };
  // Rows [first, first+count) of one source, with `count` along the input's batch axis (the scalar for a
  // rank-0 input).
  Tensor ReadSourceRows(const Source& s, size_t input, int64_t first, int64_t count) const;
  // Whether samples of records a and b can share a batch (same free dims and rank-0 values).
  bool Compatible(size_t a, size_t b) const;

  std::string dir_;
  std::string layout_;
  std::vector<InputSpec> inputs_;
  BatchLayout batching_;
  std::vector<Record> records_;
  int64_t num_samples_ = 0;
  std::vector<int64_t> labels_;
};

// Hash of a data folder's contents as a model sees them: every data file (name relative to the folder
// and bytes) in order, then the labels. Independent of where the folder lives.
std::string DatasetSha256(const Dataset& data);

}  // namespace compress
