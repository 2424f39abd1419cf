// Internal to the io module: conversion between onnx protobuf messages and the IR.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "compress/ir/graph.h"
#include "onnx/onnx_pb.h"

namespace compress::io_detail {

// Where external tensor data is read from. `base_dir` is the model's folder (canonical path); empty
// means external data is not allowed.
struct ReadContext {
  std::string source;    // file name used in messages
  std::string base_dir;
  bool load_external_data = true;
  std::vector<std::string>* external_files = nullptr;  // collects the files read, if set
};

// Validates every external-data reference in the model (keys, location inside base_dir, offset and
// length within the file and matching the tensor's size) before any of those files is opened.
void ValidateExternalData(const onnx::ModelProto& proto, const ReadContext& ctx);

Model ModelFromProto(const onnx::ModelProto& proto, const ReadContext& ctx);

// Decides, per main-graph initializer, whether its bytes go to an external file. Returns true and fills
// location/offset/length when it took the bytes.
struct ExternalRef {
  std::string location;
  uint64_t offset = 0;
  uint64_t length = 0;
};
using ExternalSink = std::function<bool(const Tensor&, ExternalRef*)>;

void ModelToProto(const Model& model, onnx::ModelProto* proto, const ExternalSink& sink = nullptr);
void TensorToProto(const Tensor& t, onnx::TensorProto* p);
Tensor TensorFromProto(const onnx::TensorProto& p, const ReadContext& ctx, const std::string& what);

}  // namespace compress::io_detail
