// Loading and saving ONNX models. This module (with the data-set readers) is the only one that sees
// protobuf. Everything read from a file is checked before it is trusted: declared sizes against the bytes
// present, external-data locations against the model's folder, dims against overflow.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "compress/ir/graph.h"

namespace compress {

struct LoadOptions {
  // Read tensors stored in external files. When false, a model with external data is rejected.
  bool load_external_data = true;
  // Run VerifyModel and VerifyOperators (compress/io/schema.h) after conversion.
  bool verify = true;
};

// What loading found out about the files behind a model.
struct LoadInfo {
  size_t file_bytes = 0;
  std::vector<std::string> external_files;  // canonical paths of external data files read
};

// Loads `path`. Throws Error(kIO) if the file cannot be read and Error(kInvalidInput) if it is not a
// well-formed model; messages name the file and the offending tensor, node or field.
Model LoadModel(const std::string& path, const LoadOptions& options = {}, LoadInfo* info = nullptr);
// Parses a serialized ModelProto. External data, if any, is resolved against `base_dir`
// (an empty base_dir rejects external data).
Model ParseModel(const std::string& bytes, const std::string& base_dir, const std::string& source_name,
                 const LoadOptions& options = {}, LoadInfo* info = nullptr);

struct SaveOptions {
  enum class ExternalData { kAuto, kAlways, kNever };
  // kAuto: weights go to an external file only when the model would exceed protobuf's 2 GiB limit.
  // kAlways: every tensor of at least `external_threshold` bytes goes to the external file.
  ExternalData external_data = ExternalData::kAuto;
  size_t external_threshold = 1024;
  // File name of the external data, relative to the model's folder; default "<model file>.data".
  std::string external_file;
  // Paths that must not be written to (the input model and its data files). Saving over one of them
  // is refused unless allow_overwrite is set.
  std::vector<std::string> protected_paths;
  bool allow_overwrite = false;
};

struct SaveResult {
  size_t model_bytes = 0;
  size_t external_bytes = 0;
  std::string external_path;  // empty when no external data was written
};

// Writes atomically: the model (and external data) go to temporary files in the target folder, are
// flushed and then renamed over the destination; on any failure nothing is left behind.
SaveResult SaveModel(const Model& model, const std::string& path, const SaveOptions& options = {});

// Serializes to ONNX bytes with every tensor inline. Throws if the result would exceed 2 GiB.
std::string SerializeModel(const Model& model);

struct CheckResult {
  bool ok = false;
  std::string message;  // the checker's first message when not ok
};
// Runs the ONNX checker (onnx::checker::check_model) on a model file.
CheckResult CheckModelFile(const std::string& path);

}  // namespace compress
