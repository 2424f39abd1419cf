#include "compress/io/onnx_io.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include <algorithm>
#include <climits>
#include <limits>
#include <memory>

#include "compress/io/schema.h"
#include "compress/ir/verify.h"
#include "compress/util/error.h"
#include "compress/util/fs.h"
#include "onnx/checker.h"
#include "onnx_proto.h"

namespace compress {

namespace {

// protobuf cannot hold a message of 2 GiB or more.
constexpr size_t kProtobufLimit = static_cast<size_t>(INT_MAX);
// Room kept for the graph structure when deciding whether weights must move out of the file.
constexpr size_t kStructureMargin = 64u << 20;
// External tensors start at multiples of this, so a runtime can map them with aligned access.
constexpr uint64_t kExternalAlignment = 64;

std::string SerializeDeterministic(const onnx::ModelProto& proto) {
  if (proto.ByteSizeLong() > kProtobufLimit) {
    ThrowInvalid("the model is larger than 2 GiB and cannot be stored in one ONNX file; use --external-data");
  }
  std::string out;
  {
    google::protobuf::io::StringOutputStream sos(&out);
    google::protobuf::io::CodedOutputStream cos(&sos);
    cos.SetSerializationDeterministic(true);
    if (!proto.SerializeToCodedStream(&cos)) ThrowInternal("protobuf serialization failed");
  }
  return out;
}

size_t InitializerBytes(const Model& m) {
  size_t total = 0;
  for (const auto& t : m.graph.initializers) total += t.nbytes();
  return total;
}

// Bytes of tensor data in `g` (subgraphs and attributes included) that stay inside the ONNX file;
// main-graph initializers of at least `external_from` bytes go to the external file instead.
size_t InlineTensorBytes(const Graph& g, bool main_graph, size_t external_from) {
  size_t total = 0;
  for (const auto& t : g.initializers) {
    if (!(main_graph && t.dtype() != DType::kString && t.nbytes() >= external_from && t.nbytes() > 0)) {
      total += t.nbytes();
    }
  }
  for (const auto& s : g.sparse_initializers) total += s.values.nbytes() + s.indices.nbytes();
  for (const auto& n : g.nodes) {
    for (const auto& a : n.attributes) {
      for (const auto& t : a.tensors) total += t.nbytes();
      for (const auto& s : a.sparse_tensors) total += s.values.nbytes() + s.indices.nbytes();
      for (const auto& sub : a.graphs) total += InlineTensorBytes(sub, false, external_from);
    }
  }
  return total;
}

// Refuses, before any protobuf message is built, a model whose inline tensor data alone passes 2 GiB.
void CheckInlineBytes(const Model& m, size_t external_from, const std::string& what) {
  const size_t inline_bytes = InlineTensorBytes(m.graph, true, external_from);
  if (inline_bytes > kProtobufLimit) {
    ThrowInvalid(what + ": the tensors stored inside the ONNX file total " + std::to_string(inline_bytes) +
                 " bytes, more than protobuf's 2 GiB limit; use --external-data (only main-graph "
                 "initializers can move to the external file)");
  }
}

}  // namespace

Model ParseModel(const std::string& bytes, const std::string& base_dir, const std::string& source_name,
                 const LoadOptions& options, LoadInfo* info) {
  if (bytes.empty()) ThrowInvalid(source_name + ": file is empty, not an ONNX model");
  if (bytes.size() > kProtobufLimit) {
    ThrowInvalid(source_name + ": file is larger than 2 GiB, which an ONNX protobuf cannot be");
  }
  onnx::ModelProto proto;
  if (!proto.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    ThrowInvalid(source_name + ": not a valid ONNX model (protobuf parsing failed: the file is truncated or "
                 "corrupt)");
  }
  io_detail::ReadContext ctx{source_name, base_dir, options.load_external_data,
                             info != nullptr ? &info->external_files : nullptr, nullptr};
  if (info != nullptr) info->file_bytes = bytes.size();
  Model model = io_detail::ModelFromProto(proto, ctx);
  if (options.verify) {
    try {
      VerifyModel(model);
      VerifyOperators(model);
    } catch (const Error& e) {
      throw Error(e.kind(), source_name + ": " + e.what());
    }
  }
  return model;
}

Model LoadModel(const std::string& path, const LoadOptions& options, LoadInfo* info) {
  const std::string bytes = ReadFileBytes(path, kProtobufLimit);
  std::string base_dir;
  if (!CanonicalPath(DirName(path), &base_dir)) ThrowIO("cannot resolve the folder of '" + path + "'");
  return ParseModel(bytes, base_dir, path, options, info);
}

std::string SerializeModel(const Model& model) {
  CheckInlineBytes(model, std::numeric_limits<size_t>::max(), "the model");
  onnx::ModelProto proto;
  io_detail::ModelToProto(model, &proto);
  return SerializeDeterministic(proto);
}

SaveResult SaveModel(const Model& model, const std::string& path, const SaveOptions& options) {
  const std::string dir = DirName(path);
  const std::string ext_name =
      options.external_file.empty() ? BaseName(path) + ".data" : options.external_file;
  if (ext_name.find('/') != std::string::npos || ext_name == ".." || ext_name == "." ||
      ext_name.find('\0') != std::string::npos) {
    ThrowUsage("external data file name '" + ext_name + "' must be a plain file name in the model's folder");
  }
  if (ext_name == BaseName(path)) {
    ThrowUsage("external data file name '" + ext_name + "' is the model's own file name; choose another");
  }
  const std::string ext_path = dir + "/" + ext_name;

  bool use_external = false;
  size_t threshold = options.external_threshold;
  switch (options.external_data) {
    case SaveOptions::ExternalData::kNever: break;
    case SaveOptions::ExternalData::kAlways: use_external = true; break;
    case SaveOptions::ExternalData::kAuto:
      use_external = InitializerBytes(model) + kStructureMargin > kProtobufLimit;
      break;
  }

  for (const auto& p : options.protected_paths) {
    for (const std::string& target : {path, ext_path}) {
      if (target == ext_path && !use_external) continue;
      if (!options.allow_overwrite && SameFile(target, p)) {
        ThrowUsage("refusing to overwrite the input file '" + p + "' with '" + target +
                   "'; choose another output path (or pass --overwrite)");
      }
    }
  }

  CheckInlineBytes(model, use_external ? std::max<size_t>(threshold, 1) : std::numeric_limits<size_t>::max(),
                   path);

  SaveResult result;
  std::unique_ptr<AtomicFile> data_file;
  io_detail::ExternalSink sink;
  if (use_external) {
    data_file = std::make_unique<AtomicFile>(ext_path);
    sink = [&](const Tensor& t, io_detail::ExternalRef* ref) {
      if (t.nbytes() < threshold || t.nbytes() == 0) return false;
      static const char kZeros[kExternalAlignment] = {};
      const size_t pad = (kExternalAlignment - data_file->bytes_written() % kExternalAlignment) % kExternalAlignment;
      data_file->Write(kZeros, pad);
      ref->location = ext_name;
      ref->offset = data_file->bytes_written();
      ref->length = t.nbytes();
      data_file->Write(t.raw(), t.nbytes());
      t.ReleasePages();  // streamed straight from a mapped input: do not keep it resident
      return true;
    };
  }
  onnx::ModelProto proto;
  io_detail::ModelToProto(model, &proto, sink);
  const std::string bytes = SerializeDeterministic(proto);

  AtomicFile model_file(path);
  model_file.Write(bytes);
  if (data_file) {
    result.external_bytes = data_file->bytes_written();
    result.external_path = ext_path;
    // Data first, model last, the previous model removed before the data is replaced: at no moment (a
    // kill included) does the model's name show a model whose data file does not match it.
    CommitTogether({data_file.get(), &model_file});
  } else {
    model_file.Commit();
  }
  result.model_bytes = bytes.size();
  return result;
}

CheckResult CheckModelFile(const std::string& path) {
  CheckResult r;
  try {
    onnx::checker::check_model(path);
    r.ok = true;
  } catch (const std::exception& e) {
    std::string msg = e.what();
    const auto nl = msg.find('\n');
    r.message = nl == std::string::npos ? msg : msg.substr(0, nl);
  }
  return r;
}

}  // namespace compress
