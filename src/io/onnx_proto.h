// Internal to the io module: conversion between onnx protobuf messages and the IR.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "compress/ir/graph.h"
#include "onnx/onnx_pb.h"

namespace compress::io_detail {

// The external data files of one model, each mapped read-only once (onnx_proto.cc).
struct ExternalFiles;

// Where external tensor data is read from. `base_dir` is the model's folder (canonical path); empty
// means external data is not allowed.
struct ReadContext {
  std::string source;    // file name used in messages
  std::string base_dir;
  bool load_external_data = true;
  std::vector<std::string>* external_files = nullptr;  // collects the files read, if set
  // Files mapped so far; created on first use. Tensors keep their mapping alive on their own.
  mutable std::shared_ptr<ExternalFiles> mapped_files;
};

// Validates every external-data reference in the model before any of those files is opened: keys; the
// location relative, without '..', of sane length, resolving inside base_dir to a regular file with a
// single link; offset and length within the file and matching the tensor's size; no two tensors reading
// overlapping bytes of the same file. Covers every tensor: initializers, sparse initializers, node
// attributes and subgraphs; external data in model-local functions and training_info (kept as they are,
// never read) is refused. Tensor bytes are then mapped read-only and borrowed, not copied
// (Tensor::FromBorrowed).
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
// For ONNX shape inference, which needs the types and shapes of initializers, not their values: main-graph
// initializers of at least `min_bytes` are written as external data with no file behind them, so that no
// weight is copied. Never to be saved.
void ModelToProtoWithoutWeights(const Model& model, onnx::ModelProto* proto, size_t min_bytes);
void TensorToProto(const Tensor& t, onnx::TensorProto* p);
Tensor TensorFromProto(const onnx::TensorProto& p, const ReadContext& ctx, const std::string& what);

}  // namespace compress::io_detail
