#include "compress/io/schema.h"

#include <onnx/defs/schema.h>
#include <onnx/shape_inference/implementation.h>
#include <onnx/version_converter/convert.h>

#include <algorithm>
#include <exception>
#include <map>
#include <set>

#include "onnx_proto.h"

namespace compress {

namespace {

// "tensor(float)" -> kFloat; kUndefined for anything that is not a plain tensor type.
DType TensorTypeFromString(const std::string& s) {
  static const std::map<std::string, DType> kNames = {
      {"tensor(float)", DType::kFloat},       {"tensor(uint8)", DType::kUInt8},
      {"tensor(int8)", DType::kInt8},         {"tensor(uint16)", DType::kUInt16},
      {"tensor(int16)", DType::kInt16},       {"tensor(int32)", DType::kInt32},
      {"tensor(int64)", DType::kInt64},       {"tensor(string)", DType::kString},
      {"tensor(bool)", DType::kBool},         {"tensor(float16)", DType::kFloat16},
      {"tensor(double)", DType::kDouble},     {"tensor(uint32)", DType::kUInt32},
      {"tensor(uint64)", DType::kUInt64},     {"tensor(complex64)", DType::kComplex64},
      {"tensor(complex128)", DType::kComplex128}, {"tensor(bfloat16)", DType::kBFloat16},
  };
  const auto it = kNames.find(s);
  return it == kNames.end() ? DType::kUndefined : it->second;
}

// Copies value_info from `from` into `to` for graphs of identical structure, recursing into subgraphs.
void CopyValueInfo(const Graph& from, Graph& to) {
  to.value_info = from.value_info;
  for (size_t n = 0; n < to.nodes.size() && n < from.nodes.size(); ++n) {
    auto& to_attrs = to.nodes[n].attributes;
    const auto& from_attrs = from.nodes[n].attributes;
    for (size_t a = 0; a < to_attrs.size() && a < from_attrs.size(); ++a) {
      for (size_t g = 0; g < to_attrs[a].graphs.size() && g < from_attrs[a].graphs.size(); ++g) {
        CopyValueInfo(from_attrs[a].graphs[g], to_attrs[a].graphs[g]);
      }
    }
  }
}

}  // namespace

bool InferShapes(Model& model) {
  onnx::ModelProto proto;
  io_detail::ModelToProto(model, &proto);
  // Inference fills value_info with what it derives; start from what the model declared.
  try {
    onnx::ShapeInferenceOptions options(/*check_type=*/false, /*error_mode=*/0, /*data_prop=*/true);
    onnx::shape_inference::InferShapes(proto, onnx::OpSchemaRegistry::Instance(), options);
  } catch (const std::exception&) {
    return false;
  }
  io_detail::ReadContext ctx;
  ctx.source = "shape inference";
  ctx.load_external_data = false;
  // Only value_info is taken back; strip tensors so the conversion back copies no weights.
  proto.mutable_graph()->clear_initializer();
  Model inferred;
  try {
    inferred = io_detail::ModelFromProto(proto, ctx);
  } catch (const std::exception&) {
    return false;
  }
  CopyValueInfo(inferred.graph, model.graph);
  return true;
}

const TypeInfo* FindValueType(const Graph& graph, const std::string& name) {
  for (const auto& v : graph.inputs) {
    if (v.name == name && v.type.kind != TypeInfo::Kind::kNone) return &v.type;
  }
  for (const auto& v : graph.outputs) {
    if (v.name == name && v.type.kind != TypeInfo::Kind::kNone) return &v.type;
  }
  for (const auto& v : graph.value_info) {
    if (v.name == name && v.type.kind != TypeInfo::Kind::kNone) return &v.type;
  }
  return nullptr;
}

std::string OpSignature::InputTypeStr(size_t index) const {
  if (index < inputs.size()) return inputs[index].type_str;
  if (!inputs.empty() && inputs.back().variadic) return inputs.back().type_str;
  return {};
}

std::string OpSignature::OutputTypeStr(size_t index) const {
  if (index < outputs.size()) return outputs[index].type_str;
  if (!outputs.empty() && outputs.back().variadic) return outputs.back().type_str;
  return {};
}

bool OpSignature::Allows(const std::string& type_str, DType t) const {
  const auto it = allowed.find(type_str);
  if (it == allowed.end()) return false;
  for (DType a : it->second) {
    if (a == t) return true;
  }
  return false;
}

bool IsDefaultAttribute(const std::string& domain, const std::string& op_type, int64_t version,
                        const Attribute& a) {
  const std::string d = domain == "ai.onnx" ? std::string() : domain;
  const onnx::OpSchema* schema = onnx::OpSchemaRegistry::Schema(op_type, static_cast<int>(version), d);
  if (schema == nullptr) return false;
  const auto it = schema->attributes().find(a.name);
  if (it == schema->attributes().end() || !a.ref_attr_name.empty()) return false;
  const onnx::AttributeProto& def = it->second.default_value;
  const bool declared = def.type() != onnx::AttributeProto::UNDEFINED && !it->second.required;
  if (declared && static_cast<int>(def.type()) == static_cast<int>(a.type)) {
    switch (a.type) {
      case AttrType::kInt:
        return def.i() == a.i;
      case AttrType::kFloat:
        return def.f() == a.f;
      case AttrType::kString:
        return def.s() == a.s;
      case AttrType::kInts:
        return std::equal(a.ints.begin(), a.ints.end(), def.ints().begin(), def.ints().end());
      case AttrType::kFloats:
        return std::equal(a.floats.begin(), a.floats.end(), def.floats().begin(), def.floats().end());
      default:
        return false;
    }
  }
  // Defaults the convolution and pooling schemas state only in their documentation.
  static const std::set<std::string> spatial = {"Conv",        "ConvTranspose", "ConvInteger", "QLinearConv",
                                                "MaxPool",     "AveragePool",   "LpPool"};
  if (!d.empty() || spatial.count(op_type) == 0 || a.type != AttrType::kInts || a.ints.empty()) return false;
  auto all = [&a](int64_t v) { return std::all_of(a.ints.begin(), a.ints.end(), [v](int64_t x) { return x == v; }); };
  if (a.name == "strides" || a.name == "dilations") return all(1);
  if (a.name == "pads" || a.name == "output_padding") return all(0);
  return false;
}

OpSignature LookupSignature(const std::string& domain, const std::string& op_type, int64_t version) {
  OpSignature sig;
  const std::string d = domain == "ai.onnx" ? std::string() : domain;
  const onnx::OpSchema* schema =
      onnx::OpSchemaRegistry::Schema(op_type, static_cast<int>(version), d);
  if (schema == nullptr) return sig;
  sig.found = true;
  auto add_formals = [&sig](const std::vector<onnx::OpSchema::FormalParameter>& formals,
                            std::vector<OpSignature::Formal>* out) {
    for (const auto& f : formals) {
      OpSignature::Formal formal;
      formal.name = f.GetName();
      formal.type_str = f.GetTypeStr();
      formal.optional = f.GetOption() == onnx::OpSchema::Optional;
      formal.variadic = f.GetOption() == onnx::OpSchema::Variadic;
      out->push_back(formal);
      auto& allowed = sig.allowed[formal.type_str];
      if (allowed.empty()) {
        std::vector<DType> types;
        for (const auto* type : f.GetTypes()) {
          const DType t = TensorTypeFromString(*type);
          if (t != DType::kUndefined) types.push_back(t);
        }
        std::sort(types.begin(), types.end());
        allowed = types;
      }
    }
  };
  add_formals(schema->inputs(), &sig.inputs);
  add_formals(schema->outputs(), &sig.outputs);
  return sig;
}

namespace {

// The op type of the first default-domain node (subgraphs included) with no schema at `version`, or "".
std::string FirstOpMissingAt(const onnx::GraphProto& graph, int64_t version) {
  for (const auto& node : graph.node()) {
    if ((node.domain().empty() || node.domain() == "ai.onnx") &&
        onnx::OpSchemaRegistry::Schema(node.op_type(), static_cast<int>(version), "") == nullptr) {
      return node.op_type();
    }
    for (const auto& attr : node.attribute()) {
      std::vector<const onnx::GraphProto*> subgraphs;
      if (attr.has_g()) subgraphs.push_back(&attr.g());
      for (const auto& g : attr.graphs()) subgraphs.push_back(&g);
      for (const auto* g : subgraphs) {
        if (std::string m = FirstOpMissingAt(*g, version); !m.empty()) return m;
      }
    }
  }
  return "";
}

// Longest target shape taken from a Reshape (ONNX tensors of higher rank do not occur in practice).
constexpr int64_t kMaxTensorRank = 64;

// Rounds of shape inference alternated with AddReshapeRanks: each round can only add ranks further down
// the graph, and the chains that need it (Reshape -> ... -> Softmax) are short.
constexpr int kMaxRankRounds = 4;

// ONNX 1.12 infers no rank for a Reshape whose target shape is computed at run time (paddle2onnx and
// tf2onnx build it from Shape/Slice/Concat), although the target's length gives it. Records that rank
// (dims unknown) for such outputs; returns whether anything was added.
bool AddReshapeRanks(onnx::GraphProto* graph) {
  std::map<std::string, const onnx::TypeProto*> types;
  for (const auto& v : graph->input()) types[v.name()] = &v.type();
  for (const auto& v : graph->value_info()) types[v.name()] = &v.type();
  for (const auto& v : graph->output()) types[v.name()] = &v.type();
  std::vector<onnx::ValueInfoProto> added;
  for (const auto& node : graph->node()) {
    if (node.op_type() != "Reshape" || !(node.domain().empty() || node.domain() == "ai.onnx") ||
        node.input_size() < 2 || node.output_size() < 1) {
      continue;
    }
    const auto out = types.find(node.output(0));
    if (out != types.end() && out->second->tensor_type().has_shape()) continue;
    const auto target = types.find(node.input(1));
    const auto data = types.find(node.input(0));
    if (target == types.end() || data == types.end() || !target->second->tensor_type().has_shape()) continue;
    const auto& target_shape = target->second->tensor_type().shape();
    if (target_shape.dim_size() != 1 || !target_shape.dim(0).has_dim_value()) continue;
    const int64_t rank = target_shape.dim(0).dim_value();
    if (rank < 0 || rank > kMaxTensorRank) continue;
    onnx::ValueInfoProto vi;
    vi.set_name(node.output(0));
    auto* tensor = vi.mutable_type()->mutable_tensor_type();
    tensor->set_elem_type(data->second->tensor_type().elem_type());
    auto* shape = tensor->mutable_shape();
    for (int64_t d = 0; d < rank; ++d) shape->add_dim();
    added.push_back(std::move(vi));
  }
  for (auto& vi : added) {
    if (types.count(vi.name())) {
      for (auto& existing : *graph->mutable_value_info()) {
        if (existing.name() == vi.name()) existing = vi;
      }
    } else {
      *graph->add_value_info() = std::move(vi);
    }
  }
  return !added.empty();
}

}  // namespace

bool ConvertOpset(Model& model, int64_t version, std::string* why) {
  if (model.OpsetVersion("") == version) return true;
  onnx::ModelProto proto;
  io_detail::ModelToProto(model, &proto);
  // Some adapters need ranks the exporter did not record (Softmax 12 -> 13 reshapes around its axis), so
  // the converter sees inferred shapes; the inferred entries are dropped again afterwards.
  std::set<std::string> declared;
  for (const auto& vi : proto.graph().value_info()) declared.insert(vi.name());
  try {
    onnx::ShapeInferenceOptions options(/*check_type=*/false, /*error_mode=*/0, /*data_propagation=*/true);
    for (int round = 0; round < kMaxRankRounds; ++round) {
      onnx::shape_inference::InferShapes(proto, onnx::OpSchemaRegistry::Instance(), options);
      if (!AddReshapeRanks(proto.mutable_graph())) break;
    }
  } catch (const std::exception&) {
    // Conversion is still attempted with what the model declares.
  }
  onnx::ModelProto converted;
  try {
    converted = onnx::version_conversion::ConvertVersion(proto, static_cast<int>(version));
  } catch (const std::exception& e) {
    if (why != nullptr) *why = e.what();
    return false;
  }
  auto* value_info = converted.mutable_graph()->mutable_value_info();
  value_info->erase(std::remove_if(value_info->begin(), value_info->end(),
                                   [&](const onnx::ValueInfoProto& vi) { return !declared.count(vi.name()); }),
                    value_info->end());
  // The converter can leave operators that the target opset does not have: refuse such a result.
  if (const std::string missing = FirstOpMissingAt(converted.graph(), version); !missing.empty()) {
    if (why != nullptr) *why = "the converted graph holds " + missing + ", which opset " + std::to_string(version) + " does not have";
    return false;
  }
  io_detail::ReadContext ctx;
  ctx.source = "opset conversion";
  ctx.load_external_data = false;
  try {
    Model out = io_detail::ModelFromProto(converted, ctx);
    // The converter drops what it does not model; keep the original's model-level fields.
    out.metadata_props = model.metadata_props;
    out.functions = model.functions;
    out.training_info = model.training_info;
    model = std::move(out);
  } catch (const std::exception& e) {
    if (why != nullptr) *why = e.what();
    return false;
  }
  return true;
}

}  // namespace compress
