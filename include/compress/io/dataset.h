// Input data for calibration and evaluation (`--calib DIR`, `--data DIR`, `--eval DIR`).
//
// Layouts of DIR, detected in this order:
//  1. ONNX test data: sub-folders test_data_set_*/ holding input_0.pb, input_1.pb, ... (or DIR itself
//     holding input_*.pb). input_K maps to the model input whose name the TensorProto carries, else to
//     the K-th model input. Each folder is one record.
//  2. Several inputs: one sub-folder per record holding files named after the model inputs
//     (<input>.npy or <input>.pb).
//  3. One input: DIR/*.npy (or *.pb), one record per file.
// A record holds one sample (the model input's shape without its leading batch dimension) or a batch of
// samples (the full rank, leading dimension = number of samples). Files are taken in sorted byte order of
// their names, so the order never depends on the file system.
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
  std::vector<Dim> shape;        // as declared; dim 0 is the batch dimension
  bool has_shape = true;         // false when the model declares no shape (not even the rank)
  std::string ToString() const;  // "input 'x' float32[batch,1,28,28]"
};

// The model's real inputs (graph inputs that are not initializers), in order.
std::vector<InputSpec> ModelInputSpecs(const Model& model);

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

  // Samples [first, first+count), one tensor per model input (in input order) with a leading dimension of
  // `count`. Reads only the files (and rows) needed. Samples whose free dims differ cannot share a batch:
  // Error(kInvalidInput) says which. A rank-0 input has no batch dimension: its samples are read one at a
  // time (count 1) and returned as scalars.
  std::vector<Tensor> ReadSamples(int64_t first, int64_t count) const;
  // A whole record as stored (rank of the model input).
  std::vector<Tensor> ReadRecord(size_t i) const;

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
    bool batched = false;  // file has the full rank (leading dim = rows) rather than one sample
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
  // Rows [first, first+count) of one source, shaped [count, sample dims...] (a scalar for rank-0 inputs).
  Tensor ReadSourceRows(const Source& s, size_t input, int64_t first, int64_t count) const;

  std::string dir_;
  std::string layout_;
  std::vector<InputSpec> inputs_;
  std::vector<Record> records_;
  int64_t num_samples_ = 0;
  std::vector<int64_t> labels_;
};

// Hash of a data folder's contents as a model sees them: every data file (name relative to the folder
// and bytes) in order, then the labels. Independent of where the folder lives.
std::string DatasetSha256(const Dataset& data);

}  // namespace compress
