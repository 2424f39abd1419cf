#include "compress/io/schema.h"

#include <onnx/defs/schema.h>
#include <onnx/shape_inference/implementation.h>
#include <onnx/version_converter/convert.h>

#include <algorithm>
#include <cctype>
#include <climits>
#include <exception>
#include <map>
#include <optional>
#include <set>
#include <unordered_set>
#include <utility>

#include "compress/util/error.h"
#include "onnx_proto.h"

namespace compress {

namespace {

// Initializers from this size on reach ONNX shape inference as type and shape only (see InferShapes).
constexpr size_t kInferenceWeightBytes = 1u << 20;

bool HasTensorType(const onnx::ValueInfoProto& v) { return v.has_type() && v.type().has_tensor_type(); }

bool HasShapeNode(const onnx::GraphProto& g) {
  for (const auto& n : g.node()) {
    if (n.op_type() == "Shape") return true;
    for (const auto& a : n.attribute()) {
      if (a.has_g() && HasShapeNode(a.g())) return true;
      for (const auto& sub : a.graphs()) {
        if (HasShapeNode(sub)) return true;
      }
    }
  }
  return false;
}

// True when a Shape node of `g` or its subgraphs reads a value without a tensor type, given the names
// typed in enclosing scopes.
bool ShapeReadsUntypedValue(const onnx::GraphProto& g, bool initializers_typed,
                            std::unordered_set<std::string> typed) {
  for (const auto& v : g.input()) {
    if (HasTensorType(v)) typed.insert(v.name());
  }
  for (const auto& v : g.value_info()) {
    if (HasTensorType(v)) typed.insert(v.name());
  }
  for (const auto& v : g.output()) {
    if (HasTensorType(v)) typed.insert(v.name());
  }
  if (initializers_typed) {
    for (const auto& t : g.initializer()) typed.insert(t.name());
  }
  for (const auto& n : g.node()) {
    if (n.op_type() == "Shape" && (n.domain().empty() || n.domain() == "ai.onnx") && n.input_size() > 0 &&
        !typed.count(n.input(0))) {
      return true;
    }
    for (const auto& a : n.attribute()) {
      if (a.has_g() && ShapeReadsUntypedValue(a.g(), initializers_typed, typed)) return true;
      for (const auto& sub : a.graphs()) {
        if (ShapeReadsUntypedValue(sub, initializers_typed, typed)) return true;
      }
    }
  }
  return false;
}

// ONNX shape inference on `proto`, in place, with data propagation where ONNX survives it: Shape-15's
// data propagation reads its input's type without checking that there is one (a SEGV in libonnx 1.12
// on the output of a custom-domain operator, an untyped graph input, an IR 3 initializer that is not an
// input). So inference runs first without it, and again with it only if every Shape input got a type.
void InferProtoShapes(onnx::ModelProto& proto) {
  int64_t opset = 0;
  for (const auto& imp : proto.opset_import()) {
    if (imp.domain().empty() || imp.domain() == "ai.onnx") opset = imp.version();
  }
  const auto run = [](onnx::ModelProto& p, bool data_propagation) {
    onnx::ShapeInferenceOptions options(/*check_type=*/false, /*error_mode=*/0, data_propagation);
    onnx::shape_inference::InferShapes(p, onnx::OpSchemaRegistry::Instance(), options);
  };
  if (opset < 15 || !HasShapeNode(proto.graph())) {
    run(proto, true);
    return;
  }
  // The probe runs on a copy: inferred entries left in value_info would keep the second run from
  // refining them. (InferShapes passes large weights as type and shape only, so the copy is small.)
  onnx::ModelProto probe = proto;
  run(probe, false);
  if (ShapeReadsUntypedValue(probe.graph(), probe.ir_version() >= 4, {})) {
    proto = std::move(probe);
  } else {
    run(proto, true);
  }
}

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
  // ONNX's inference functions trust the attributes they read (a zero stride divides by zero).
  try {
    VerifyOperators(model);
  } catch (const Error&) {
    return false;
  }
  onnx::ModelProto proto;
  // Large weights go in as type and shape only: no inference function reads them (shape-like inputs are
  // small), and a copy of every weight would double the memory a large model needs.
  io_detail::ModelToProtoWithoutWeights(model, &proto, kInferenceWeightBytes);
  // Inference fills value_info with what it derives; start from what the model declared.
  try {
    InferProtoShapes(proto);
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

// ---- Operator verification -------------------------------------------------------------------------

namespace {

const char* kDefaultDomainName = "ai.onnx";

std::string DomainName(const std::string& d) { return d.empty() ? std::string(kDefaultDomainName) : d; }

std::string UpperTypeName(AttrType t) {
  std::string s = AttrTypeName(t);
  for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::string Count(size_t n, const char* what) {
  return std::to_string(n) + " " + what + (n == 1 ? "" : "s");
}

// "exactly 2", "2 to 3", "at least 1".
std::string Range(int lo, int hi) {
  if (lo == hi) return "exactly " + std::to_string(lo);
  if (hi == INT_MAX) return "at least " + std::to_string(lo);
  return std::to_string(lo) + " to " + std::to_string(hi);
}

std::string JoinInts(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s + "]";
}

constexpr int64_t kUnknownDim = -1;

// What is known about the shape of a value of `graph`: the dims of an initializer, or the declared
// shape (unknown dims are kUnknownDim). Nullopt when the rank is unknown.
std::optional<std::vector<int64_t>> KnownShape(const Graph& graph, const std::string& name) {
  if (name.empty()) return std::nullopt;
  if (const Tensor* t = graph.FindInitializer(name)) return t->dims();
  const TypeInfo* type = FindValueType(graph, name);
  if (type == nullptr || type->kind != TypeInfo::Kind::kTensor || !type->has_shape) return std::nullopt;
  std::vector<int64_t> dims;
  for (const auto& d : type->shape) dims.push_back(d.value ? *d.value : kUnknownDim);
  return dims;
}

// "tensor(float)" for kFloat; "" for element types ONNX 1.12 has no name for.
std::string TensorTypeName(DType t) {
  static const std::map<DType, std::string> kNames = {
      {DType::kFloat, "tensor(float)"},         {DType::kUInt8, "tensor(uint8)"},
      {DType::kInt8, "tensor(int8)"},           {DType::kUInt16, "tensor(uint16)"},
      {DType::kInt16, "tensor(int16)"},         {DType::kInt32, "tensor(int32)"},
      {DType::kInt64, "tensor(int64)"},         {DType::kString, "tensor(string)"},
      {DType::kBool, "tensor(bool)"},           {DType::kFloat16, "tensor(float16)"},
      {DType::kDouble, "tensor(double)"},       {DType::kUInt32, "tensor(uint32)"},
      {DType::kUInt64, "tensor(uint64)"},       {DType::kComplex64, "tensor(complex64)"},
      {DType::kComplex128, "tensor(complex128)"}, {DType::kBFloat16, "tensor(bfloat16)"},
  };
  const auto it = kNames.find(t);
  return it == kNames.end() ? std::string() : it->second;
}

// Largest constant read by the semantic checks (shapes, axes, indices); bigger ones are not inspected.
constexpr int64_t kMaxCheckedConstant = 1 << 16;

// What is known about the values of one graph before anything runs: the element type of graph inputs,
// initializers and Constant outputs, and the contents of initializers and Constant 'value' tensors.
struct GraphValues {
  struct Known {
    DType type;
    const char* origin;
  };
  std::map<std::string, Known> types;
  std::map<std::string, const Tensor*> constants;

  explicit GraphValues(const Graph& g) {
    for (const auto& v : g.inputs) {
      if (v.type.kind == TypeInfo::Kind::kTensor && v.type.elem_type != DType::kUndefined) {
        types[v.name] = {v.type.elem_type, "graph input"};
      }
    }
    for (const auto& t : g.initializers) {
      types[t.name()] = {t.dtype(), "initializer"};
      constants[t.name()] = &t;
    }
    for (const auto& n : g.nodes) {
      if (!n.IsDefaultDomain() || n.op_type != "Constant" || n.outputs.size() != 1 || n.outputs[0].empty() ||
          n.attributes.size() != 1) {
        continue;
      }
      const Attribute& a = n.attributes[0];
      const std::string& out = n.outputs[0];
      if (a.name == "value" && a.type == AttrType::kTensor && a.tensors.size() == 1) {
        types[out] = {a.tensors[0].dtype(), "Constant output"};
        constants[out] = &a.tensors[0];
      } else if ((a.name == "value_float" && a.type == AttrType::kFloat) ||
                 (a.name == "value_floats" && a.type == AttrType::kFloats)) {
        types[out] = {DType::kFloat, "Constant output"};
      } else if ((a.name == "value_int" && a.type == AttrType::kInt) ||
                 (a.name == "value_ints" && a.type == AttrType::kInts)) {
        types[out] = {DType::kInt64, "Constant output"};
      } else if ((a.name == "value_string" && a.type == AttrType::kString) ||
                 (a.name == "value_strings" && a.type == AttrType::kStrings)) {
        types[out] = {DType::kString, "Constant output"};
      }
    }
  }

  const Known* Type(const std::string& name) const {
    const auto it = types.find(name);
    return it == types.end() ? nullptr : &it->second;
  }

  // The integer contents of a small constant int32/int64 tensor, or nullopt.
  std::optional<std::vector<int64_t>> Ints(const std::string& name) const {
    const auto it = constants.find(name);
    if (name.empty() || it == constants.end()) return std::nullopt;
    const Tensor& t = *it->second;
    if (t.numel() > kMaxCheckedConstant || t.raw() == nullptr) return std::nullopt;
    std::vector<int64_t> v(static_cast<size_t>(t.numel()));
    if (t.dtype() == DType::kInt64) {
      std::copy(t.data<int64_t>(), t.data<int64_t>() + t.numel(), v.begin());
    } else if (t.dtype() == DType::kInt32) {
      std::copy(t.data<int32_t>(), t.data<int32_t>() + t.numel(), v.begin());
    } else {
      return std::nullopt;
    }
    return v;
  }

  // The shape of a value: constant dims first, then what the graph declares.
  std::optional<std::vector<int64_t>> Shape(const Graph& graph, const std::string& name) const {
    const auto it = constants.find(name);
    if (!name.empty() && it != constants.end()) return it->second->dims();
    return KnownShape(graph, name);
  }
};

std::optional<int64_t> Rank(const std::optional<std::vector<int64_t>>& shape) {
  if (!shape) return std::nullopt;
  return static_cast<int64_t>(shape->size());
}

bool FullyKnown(const std::vector<int64_t>& dims) {
  return std::none_of(dims.begin(), dims.end(), [](int64_t d) { return d == kUnknownDim; });
}

struct OperatorVerifier {
  const Model& model;
  std::map<std::string, int64_t> imports;                   // domain ("" for ai.onnx) -> version
  std::set<std::pair<std::string, std::string>> functions;  // model-local (domain, name)

  explicit OperatorVerifier(const Model& m) : model(m) {
    const auto& known = onnx::OpSchemaRegistry::DomainToVersionRange::Instance().Map();
    for (const auto& imp : m.opset_imports) {
      const std::string d = imp.domain == kDefaultDomainName ? std::string() : imp.domain;
      imports.emplace(d, imp.version);
      if (d.empty() || d == "ai.onnx.ml") {
        // ai.onnx.ml imports newer than the registry's (ONNX Runtime writes version 5 into the models it
        // optimizes) are accepted; their nodes then pass unchecked, as the schemas here may be outdated.
        const int newest = d.empty() ? known.at(d).second : INT_MAX;
        if (imp.version < 1 || imp.version > newest) {
          ThrowInvalid("opset_import of domain '" + DomainName(d) + "' has version " + std::to_string(imp.version) +
                       (newest == INT_MAX ? std::string(", expected at least 1")
                                          : ", expected 1 to " + std::to_string(newest) +
                                                " (the newest opset this build knows)"));
        }
      }
    }
    for (const auto& bytes : m.functions) {
      onnx::FunctionProto f;
      if (f.ParseFromString(bytes)) functions.emplace(f.domain() == kDefaultDomainName ? "" : f.domain(), f.name());
    }
  }

  void VerifyGraph(const Graph& graph, const std::string& scope) {
    const GraphValues values(graph);
    for (const auto& v : graph.inputs) {
      const Tensor* init = graph.FindInitializer(v.name);
      if (init != nullptr && v.type.kind == TypeInfo::Kind::kTensor && v.type.elem_type != DType::kUndefined &&
          v.type.elem_type != init->dtype()) {
        ThrowInvalid("initializer '" + v.name + "'" + (scope.empty() ? "" : scope) + " has type " +
                     DTypeName(init->dtype()) + " but the graph input of the same name declares " +
                     DTypeName(v.type.elem_type) + ", expected the same type");
      }
    }
    for (size_t i = 0; i < graph.nodes.size(); ++i) {
      const Node& node = graph.nodes[i];
      const std::string op = node.IsDefaultDomain() ? node.op_type : node.domain + "::" + node.op_type;
      const std::string where =
          (node.name.empty() ? "node #" + std::to_string(i) + " (" + op + ")" : "node " + node.Describe()) + scope;
      VerifyNode(graph, values, node, where);
      for (const auto& a : node.attributes) {
        for (const auto& g : a.graphs) {
          VerifyGraph(g, " in attribute '" + a.name + "' of " + where);
        }
      }
    }
  }

  void VerifyNode(const Graph& graph, const GraphValues& values, const Node& node, const std::string& where) {
    const std::string d = node.IsDefaultDomain() ? std::string() : node.domain;
    const auto imp = imports.find(d);
    if (imp == imports.end()) {
      std::string have;
      for (const auto& [dom, v] : imports) have += (have.empty() ? "" : ", ") + DomainName(dom) + " " + std::to_string(v);
      ThrowInvalid(where + " is in domain '" + DomainName(d) + "', which the model does not import (opset_import: " +
                   have + ")");
    }
    if (functions.count({d, node.op_type})) return;  // a model-local function: no schema
    if (!d.empty() && d != "ai.onnx.ml") return;      // other domains are not ours to check
    const int newest = onnx::OpSchemaRegistry::DomainToVersionRange::Instance().Map().at(d).second;
    if (imp->second > newest) return;  // a newer ai.onnx.ml than the schemas know
    const int version = static_cast<int>(imp->second);
    const onnx::OpSchema* schema = onnx::OpSchemaRegistry::Schema(node.op_type, version, d);
    if (schema == nullptr) {
      for (int v = version + 1; v <= newest; ++v) {
        if (onnx::OpSchemaRegistry::Schema(node.op_type, v, d) != nullptr) {
          ThrowInvalid(where + ": operator '" + node.op_type + "' is not in opset " + std::to_string(version) +
                       " of " + DomainName(d) + " (it first appears in opset " + std::to_string(v) + ")");
        }
      }
      ThrowInvalid(where + ": '" + node.op_type + "' is not an operator of " + DomainName(d) + " (opset " +
                   std::to_string(version) + ")");
    }
    const std::string sig = node.op_type + "-" + std::to_string(schema->since_version());
    CheckArity(node.inputs, schema->inputs(), schema->min_input(), schema->max_input(), "input", where, sig);
    CheckArity(node.outputs, schema->outputs(), schema->min_output(), schema->max_output(), "output", where, sig);
    CheckAttributes(node, *schema, where, sig);
    CheckInputTypes(values, node, *schema, where, sig);
    CheckConvolution(graph, node, where);
    if (d.empty()) CheckSemantics(graph, values, node, where);
  }

  static void CheckArity(const std::vector<std::string>& names,
                         const std::vector<onnx::OpSchema::FormalParameter>& formals, int lo, int hi,
                         const char* what, const std::string& where, const std::string& sig) {
    const int n = static_cast<int>(std::min<size_t>(names.size(), INT_MAX));
    if (n < lo || n > hi) {
      ThrowInvalid(where + " has " + Count(names.size(), what) + ", expected " + Range(lo, hi) + " (" + sig + ")");
    }
    for (size_t k = 0; k < names.size() && k < formals.size(); ++k) {
      if (names[k].empty() && formals[k].GetOption() == onnx::OpSchema::Single) {
        ThrowInvalid(where + ": " + what + " " + std::to_string(k) + " ('" + formals[k].GetName() + "') of " + sig +
                     " is required but given as an empty name");
      }
    }
  }

  static void CheckAttributes(const Node& node, const onnx::OpSchema& schema, const std::string& where,
                              const std::string& sig) {
    const auto& declared = schema.attributes();
    std::set<std::string> seen;
    for (const auto& a : node.attributes) {
      if (!seen.insert(a.name).second) ThrowInvalid(where + ": attribute '" + a.name + "' is given twice");
      const auto it = declared.find(a.name);
      if (it == declared.end()) {
        // Names starting with "__" are implementation details the ONNX checker ignores too.
        if (a.name.rfind("__", 0) == 0) continue;
        std::string known;
        for (const auto& [name, attr] : declared) known += (known.empty() ? "" : ", ") + name;
        ThrowInvalid(where + ": unknown attribute '" + a.name + "' (" + sig +
                     (known.empty() ? std::string(" has no attributes") : " has: " + known) + ")");
      }
      const auto want = static_cast<AttrType>(static_cast<int>(it->second.type));
      if (a.type != want) {
        ThrowInvalid(where + ": attribute '" + a.name + "' has type " + UpperTypeName(a.type) + ", expected " +
                     UpperTypeName(want) + " (" + sig + ")");
      }
    }
    for (const auto& [name, attr] : declared) {
      if (attr.required && !seen.count(name)) {
        ThrowInvalid(where + ": required attribute '" + name + "' (" + UpperTypeName(static_cast<AttrType>(
                         static_cast<int>(attr.type))) + ") of " + sig + " is missing");
      }
    }
  }

  // Checks the attributes of convolutions and pooling that kernels and passes index with. Attribute types
  // have been checked already.
  static void CheckConvolution(const Graph& graph, const Node& node, const std::string& where) {
    struct Layout {
      int x, w;  // input indices of the data and the weight (-1: none)
      bool group, transpose;
    };
    static const std::map<std::string, Layout> kOps = {
        {"Conv", {0, 1, true, false}},        {"ConvTranspose", {0, 1, true, true}},
        {"ConvInteger", {0, 1, true, false}}, {"QLinearConv", {0, 3, true, false}},
        {"MaxPool", {0, -1, false, false}},   {"AveragePool", {0, -1, false, false}},
        {"LpPool", {0, -1, false, false}},
    };
    if (!node.domain.empty() && node.domain != kDefaultDomainName) return;
    const auto op = kOps.find(node.op_type);
    if (op == kOps.end()) return;
    const Layout& layout = op->second;
    auto input = [&node](int k) { return k >= 0 && static_cast<size_t>(k) < node.inputs.size() ? node.inputs[k] : ""; };
    const auto x = KnownShape(graph, input(layout.x));
    const auto w = KnownShape(graph, input(layout.w));
    if (x && x->size() < 2) {
      ThrowInvalid(where + ": input '" + input(layout.x) + "' has rank " + std::to_string(x->size()) +
                   ", expected at least 2 (batch, channels, spatial axes)");
    }
    if (w && w->size() < 2) {
      ThrowInvalid(where + ": weight '" + input(layout.w) + "' has rank " + std::to_string(w->size()) +
                   ", expected at least 2 (channels, channels, spatial axes)");
    }
    if (x && w && x->size() != w->size()) {
      ThrowInvalid(where + ": input '" + input(layout.x) + "' has rank " + std::to_string(x->size()) + " but weight '" +
                   input(layout.w) + "' has rank " + std::to_string(w->size()) + ", expected equal ranks");
    }
    std::optional<size_t> spatial;
    if (w) spatial = w->size() - 2;
    else if (x) spatial = x->size() - 2;

    auto ints = [&](const char* name, int64_t min_value, size_t per_axis) {
      const Attribute* a = node.FindAttr(name);
      if (a == nullptr || a->type != AttrType::kInts) return;
      for (int64_t v : a->ints) {
        if (v < min_value) {
          ThrowInvalid(where + ": attribute '" + std::string(name) + "' is " + JoinInts(a->ints) + ", expected " +
                       (min_value > 0 ? "positive values" : "non-negative values"));
        }
      }
      if (!spatial && per_axis == 1 && std::string(name) == "kernel_shape") spatial = a->ints.size();
      if (spatial && a->ints.size() != per_axis * *spatial) {
        ThrowInvalid(where + ": attribute '" + std::string(name) + "' has " + Count(a->ints.size(), "value") +
                     ", expected " + std::to_string(per_axis * *spatial) + " (" +
                     (per_axis == 2 ? "a begin and an end for each of " : "one for each of ") +
                     std::to_string(*spatial) + (*spatial == 1 ? " spatial axis" : " spatial axes") + ")");
      }
    };
    ints("kernel_shape", 1, 1);
    ints("strides", 1, 1);
    ints("dilations", 1, 1);
    ints("pads", 0, 2);
    if (layout.transpose) {
      ints("output_padding", 0, 1);
      ints("output_shape", 0, 1);
    }
    if (const Attribute* a = node.FindAttr("auto_pad"); a != nullptr && a->type == AttrType::kString) {
      static const std::set<std::string> kModes = {"NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"};
      if (!kModes.count(a->s)) {
        ThrowInvalid(where + ": attribute 'auto_pad' is '" + a->s +
                     "', expected NOTSET, SAME_UPPER, SAME_LOWER or VALID");
      }
    }
    // The kernel size is the weight's spatial shape; kernel_shape, when given, must agree.
    if (w) {
      const std::vector<int64_t> ks = node.AttrInts("kernel_shape", {});
      for (size_t k = 0; k < ks.size() && k + 2 < w->size(); ++k) {
        const int64_t dim = (*w)[k + 2];
        if (dim != kUnknownDim && dim != ks[k]) {
          ThrowInvalid(where + ": attribute 'kernel_shape' is " + JoinInts(ks) + " but weight '" + input(layout.w) +
                       "' has spatial size " + std::to_string(dim) + " on axis " + std::to_string(k + 2) +
                       ", expected them to agree");
        }
      }
    }
    if (!layout.group) return;
    const int64_t group = node.AttrInt("group", 1);
    if (group < 1) {
      ThrowInvalid(where + ": attribute 'group' is " + std::to_string(group) + ", expected a positive integer");
    }
    const int64_t channels = x ? (*x)[1] : kUnknownDim;
    if (channels != kUnknownDim && channels % group != 0) {
      ThrowInvalid(where + ": input '" + input(layout.x) + "' has " + std::to_string(channels) +
                   " channels, which group " + std::to_string(group) + " does not divide");
    }
    if (!w) return;
    const int64_t w0 = (*w)[0], w1 = (*w)[1];
    const std::string wname = "weight '" + input(layout.w) + "'";
    if (layout.transpose) {
      // ConvTranspose weight: (C, M / group, k...).
      if (w0 != kUnknownDim && w0 % group != 0) {
        ThrowInvalid(where + ": " + wname + " has " + std::to_string(w0) + " input channels (axis 0), which group " +
                     std::to_string(group) + " does not divide");
      }
      if (w0 != kUnknownDim && channels != kUnknownDim && w0 != channels) {
        ThrowInvalid(where + ": " + wname + " has " + std::to_string(w0) + " input channels (axis 0), expected " +
                     std::to_string(channels) + " as input '" + input(layout.x) + "' has");
      }
    } else {
      // Conv weight: (M, C / group, k...).
      if (w0 != kUnknownDim && w0 % group != 0) {
        ThrowInvalid(where + ": " + wname + " has " + std::to_string(w0) + " output channels (axis 0), which group " +
                     std::to_string(group) + " does not divide");
      }
      if (w1 != kUnknownDim && channels != kUnknownDim && w1 != channels / group) {
        ThrowInvalid(where + ": " + wname + " has " + std::to_string(w1) + " input channels per group (axis 1), "
                     "expected " + std::to_string(channels / group) + " (" + std::to_string(channels) +
                     " channels of input '" + input(layout.x) + "' / group " + std::to_string(group) + ")");
      }
    }
  }

  // The element type of every input whose type is known before running (graph inputs, initializers,
  // Constant outputs) is one the schema allows, and inputs sharing a type parameter have the same type.
  static void CheckInputTypes(const GraphValues& values, const Node& node, const onnx::OpSchema& schema,
                              const std::string& where, const std::string& sig) {
    const auto& formals = schema.inputs();
    if (formals.empty()) return;
    std::map<std::string, size_t> bound;  // type parameter -> the first input that fixed it
    for (size_t k = 0; k < node.inputs.size(); ++k) {
      const std::string& name = node.inputs[k];
      const GraphValues::Known* known = name.empty() ? nullptr : values.Type(name);
      if (known == nullptr) continue;
      if (k >= formals.size() && formals.back().GetOption() != onnx::OpSchema::Variadic) continue;
      const auto& formal = k < formals.size() ? formals[k] : formals.back();
      const std::string type_name = TensorTypeName(known->type);
      if (type_name.empty() || formal.GetTypes().empty()) continue;
      std::vector<std::string> allowed;
      for (const auto* t : formal.GetTypes()) allowed.push_back(*t);
      std::sort(allowed.begin(), allowed.end());
      const std::string input = "input " + std::to_string(k) + " ('" + name + "', " + known->origin + ")";
      if (std::find(allowed.begin(), allowed.end(), type_name) == allowed.end()) {
        std::string list;
        for (const auto& t : allowed) list += (list.empty() ? "" : ", ") + t;
        ThrowInvalid(where + ": " + input + " has type " + type_name + ", expected " +
                     (allowed.size() == 1 ? list : "one of " + list) + " for '" + formal.GetName() + "' of " + sig);
      }
      const bool homogeneous = formal.GetOption() != onnx::OpSchema::Variadic || formal.GetIsHomogeneous();
      if (!homogeneous || allowed.size() == 1) continue;
      const auto [it, added] = bound.emplace(formal.GetTypeStr(), k);
      if (added) continue;
      const DType first = values.Type(node.inputs[it->second])->type;
      if (first != known->type) {
        ThrowInvalid(where + ": " + input + " has type " + type_name + " but input " + std::to_string(it->second) +
                     " ('" + node.inputs[it->second] + "') has type " + TensorTypeName(first) +
                     ", expected the same type (both are '" + formal.GetTypeStr() + "' of " + sig + ")");
      }
    }
  }

  // Checks no schema expresses, for what kernels and passes read: value ranges of attributes, axes within
  // the known rank, and the contents of constant shape, axis and index inputs.
  static void CheckSemantics(const Graph& graph, const GraphValues& values, const Node& node,
                             const std::string& where) {
    const std::string& op = node.op_type;
    auto input = [&node](size_t k) { return k < node.inputs.size() ? node.inputs[k] : std::string(); };
    auto shape = [&](size_t k) { return values.Shape(graph, input(k)); };
    auto int_attr = [&node](const char* name) -> const Attribute* {
      const Attribute* a = node.FindAttr(name);
      return a != nullptr && a->type == AttrType::kInt ? a : nullptr;
    };
    auto ints_attr = [&node](const char* name) -> const Attribute* {
      const Attribute* a = node.FindAttr(name);
      return a != nullptr && a->type == AttrType::kInts ? a : nullptr;
    };
    auto rank_text = [&](size_t k, int64_t r) {
      return " (input '" + input(k) + "' has rank " + std::to_string(r) + ")";
    };

    // Flags stored as integers.
    static const std::map<std::string, std::vector<const char*>> kFlags = {
        {"Gemm", {"transA", "transB"}},
        {"Reshape", {"allowzero"}},
        {"ArgMax", {"keepdims", "select_last_index"}},
        {"ArgMin", {"keepdims", "select_last_index"}},
        {"TopK", {"largest", "sorted"}},
        {"CumSum", {"exclusive", "reverse"}},
        {"LSTM", {"input_forget", "layout"}},
        {"GRU", {"linear_before_reset", "layout"}},
        {"RNN", {"layout"}},
        {"Resize", {"exclude_outside"}},
        {"Unique", {"sorted"}},
        {"ReduceSum", {"keepdims", "noop_with_empty_axes"}},
        {"ReduceMean", {"keepdims"}},
        {"ReduceMax", {"keepdims"}},
        {"ReduceMin", {"keepdims"}},
        {"ReduceProd", {"keepdims"}},
        {"ReduceL1", {"keepdims"}},
        {"ReduceL2", {"keepdims"}},
        {"ReduceLogSum", {"keepdims"}},
        {"ReduceLogSumExp", {"keepdims"}},
        {"ReduceSumSquare", {"keepdims"}},
    };
    if (const auto f = kFlags.find(op); f != kFlags.end()) {
      for (const char* name : f->second) {
        const Attribute* a = int_attr(name);
        if (a != nullptr && a->i != 0 && a->i != 1) {
          ThrowInvalid(where + ": attribute '" + std::string(name) + "' is " + std::to_string(a->i) +
                       ", expected 0 or 1");
        }
      }
    }

    // Attributes that name a mode.
    static const std::map<std::pair<std::string, std::string>, std::vector<std::string>> kModes = {
        {{"Pad", "mode"}, {"constant", "reflect", "edge"}},
        {{"Resize", "mode"}, {"nearest", "linear", "cubic"}},
        {{"Resize", "coordinate_transformation_mode"},
         {"half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn",
          "tf_crop_and_resize"}},
        {{"Resize", "nearest_mode"}, {"round_prefer_floor", "round_prefer_ceil", "floor", "ceil"}},
        {{"Upsample", "mode"}, {"nearest", "linear", "bilinear", "cubic"}},
        {{"LSTM", "direction"}, {"forward", "reverse", "bidirectional"}},
        {{"GRU", "direction"}, {"forward", "reverse", "bidirectional"}},
        {{"RNN", "direction"}, {"forward", "reverse", "bidirectional"}},
        {{"DepthToSpace", "mode"}, {"DCR", "CRD"}},
        {{"GridSample", "mode"}, {"bilinear", "nearest", "bicubic"}},
        {{"GridSample", "padding_mode"}, {"zeros", "border", "reflection"}},
        {{"ScatterElements", "reduction"}, {"none", "add", "mul"}},
        {{"ScatterND", "reduction"}, {"none", "add", "mul"}},
        {{"RoiAlign", "mode"}, {"avg", "max"}},
    };
    for (const auto& a : node.attributes) {
      if (a.type != AttrType::kString) continue;
      const auto m = kModes.find({op, a.name});
      if (m == kModes.end() || std::find(m->second.begin(), m->second.end(), a.s) != m->second.end()) continue;
      std::string list;
      for (size_t i = 0; i < m->second.size(); ++i) {
        list += (i == 0 ? "" : i + 1 == m->second.size() ? " or " : ", ") + m->second[i];
      }
      ThrowInvalid(where + ": attribute '" + a.name + "' is '" + a.s + "', expected " + list);
    }

    // Element types given as attributes.
    for (const char* name : {"to", "dtype"}) {
      const Attribute* a = int_attr(name);
      if (a == nullptr || (std::string(name) == "to" && op != "Cast")) continue;
      const bool known = a->i >= 1 && a->i <= 16 && IsKnownDType(static_cast<int32_t>(a->i)) &&
                         !TensorTypeName(static_cast<DType>(a->i)).empty();
      if (!known) {
        ThrowInvalid(where + ": attribute '" + std::string(name) + "' is " + std::to_string(a->i) +
                     ", expected an ONNX element type (TensorProto.DataType 1 to 16)");
      }
    }

    // A single axis: (data input, whether the axis may equal the rank).
    static const std::map<std::string, std::pair<size_t, bool>> kAxis = {
        {"Softmax", {0, false}},      {"LogSoftmax", {0, false}},    {"Hardmax", {0, false}},
        {"Concat", {0, false}},       {"Gather", {0, false}},        {"GatherElements", {0, false}},
        {"ScatterElements", {0, false}}, {"Split", {0, false}},      {"ArgMax", {0, false}},
        {"ArgMin", {0, false}},       {"Flatten", {0, true}},        {"LayerNormalization", {0, false}},
        {"Compress", {0, false}},     {"TopK", {0, false}},
    };
    if (const auto ax = kAxis.find(op); ax != kAxis.end()) {
      const Attribute* a = int_attr("axis");
      const auto r = Rank(shape(ax->second.first));
      if (a != nullptr && r) {
        const int64_t hi = ax->second.second ? *r : *r - 1;
        if (a->i < -*r || a->i > hi) {
          ThrowInvalid(where + ": attribute 'axis' is " + std::to_string(a->i) + ", expected " + std::to_string(-*r) +
                       " to " + std::to_string(hi) + rank_text(ax->second.first, *r));
        }
      }
    }

    // Lists of axes, as an attribute (older opsets) or a constant input.
    static const std::set<std::string> kAxesOps = {
        "Squeeze",    "Unsqueeze",    "ReduceSum",  "ReduceMean",   "ReduceMax",       "ReduceMin",
        "ReduceProd", "ReduceL1",     "ReduceL2",   "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"};
    if (kAxesOps.count(op)) {
      std::optional<std::vector<int64_t>> axes;
      if (const Attribute* a = ints_attr("axes")) axes = a->ints;
      else axes = values.Ints(input(1));
      const auto r = Rank(shape(0));
      if (axes && r) {
        const int64_t out_rank = op == "Unsqueeze" ? *r + static_cast<int64_t>(axes->size()) : *r;
        std::set<int64_t> seen;
        for (int64_t v : *axes) {
          if (v < -out_rank || v >= out_rank) {
            ThrowInvalid(where + ": axes " + JoinInts(*axes) + " hold " + std::to_string(v) + ", expected " +
                         std::to_string(-out_rank) + " to " + std::to_string(out_rank - 1) + rank_text(0, *r));
          }
          if (!seen.insert(v < 0 ? v + out_rank : v).second) {
            ThrowInvalid(where + ": axes " + JoinInts(*axes) + " name axis " + std::to_string(v) +
                         " twice, expected distinct axes");
          }
        }
      }
    }

    if (op == "Transpose") {
      if (const Attribute* a = ints_attr("perm")) {
        const auto r = Rank(shape(0));
        const int64_t n = static_cast<int64_t>(a->ints.size());
        std::vector<int64_t> sorted = a->ints;
        std::sort(sorted.begin(), sorted.end());
        for (int64_t i = 0; i < n; ++i) {
          if (sorted[static_cast<size_t>(i)] != i) {
            ThrowInvalid(where + ": attribute 'perm' is " + JoinInts(a->ints) + ", expected a permutation of 0 to " +
                         std::to_string(n - 1));
          }
        }
        if (r && n != *r) {
          ThrowInvalid(where + ": attribute 'perm' has " + Count(a->ints.size(), "value") + ", expected " +
                       std::to_string(*r) + rank_text(0, *r));
        }
      }
    }

    if (op == "Reshape") CheckReshape(graph, values, node, where);

    if (op == "Constant") {
      if (node.attributes.size() != 1) {
        ThrowInvalid(where + " has " + Count(node.attributes.size(), "value attribute") +
                     ", expected exactly one of value, value_float(s), value_int(s), value_string(s), sparse_value");
      }
    }

    if (op == "BatchNormalization") {
      const auto x = shape(0);
      const int64_t channels = x && x->size() >= 2 ? (*x)[1] : kUnknownDim;
      static const char* kNames[] = {"scale", "B", "mean", "var"};
      for (size_t k = 1; k <= 4 && k < node.inputs.size(); ++k) {
        const auto s = shape(k);
        if (!s) continue;
        if (s->size() != 1) {
          ThrowInvalid(where + ": input " + std::to_string(k) + " ('" + input(k) + "', " + kNames[k - 1] +
                       ") has rank " + std::to_string(s->size()) + ", expected 1");
        }
        if (channels != kUnknownDim && (*s)[0] != kUnknownDim && (*s)[0] != channels) {
          ThrowInvalid(where + ": input " + std::to_string(k) + " ('" + input(k) + "', " + kNames[k - 1] + ") has " +
                       std::to_string((*s)[0]) + " values, expected " + std::to_string(channels) +
                       " (the channels of input '" + input(0) + "')");
        }
      }
    }

    if (op == "Conv" && node.inputs.size() >= 3 && !input(2).empty()) {
      const auto w = shape(1), b = shape(2);
      if (b && b->size() != 1) {
        ThrowInvalid(where + ": bias '" + input(2) + "' has rank " + std::to_string(b->size()) + ", expected 1");
      }
      if (w && b && !w->empty() && (*w)[0] != kUnknownDim && (*b)[0] != kUnknownDim && (*b)[0] != (*w)[0]) {
        ThrowInvalid(where + ": bias '" + input(2) + "' has " + std::to_string((*b)[0]) + " values, expected " +
                     std::to_string((*w)[0]) + " (the output channels of weight '" + input(1) + "')");
      }
    }

    if (op == "Gemm" || op == "MatMul") {
      const auto a = shape(0), b = shape(1);
      for (size_t k = 0; k < 2; ++k) {
        const auto& s = k == 0 ? a : b;
        if (s && (op == "Gemm" ? s->size() != 2 : s->empty())) {
          ThrowInvalid(where + ": input " + std::to_string(k) + " ('" + input(k) + "') has rank " +
                       std::to_string(s->size()) + ", expected " + (op == "Gemm" ? "2" : "at least 1"));
        }
      }
      if (a && b) {
        int64_t ka = a->back(), kb = b->size() == 1 ? (*b)[0] : (*b)[b->size() - 2];
        if (op == "Gemm") {
          ka = node.AttrInt("transA", 0) ? (*a)[0] : (*a)[1];
          kb = node.AttrInt("transB", 0) ? (*b)[1] : (*b)[0];
        }
        if (ka != kUnknownDim && kb != kUnknownDim && ka != kb) {
          ThrowInvalid(where + ": inner dimensions differ: input '" + input(0) + "' " + JoinInts(*a) + " has " +
                       std::to_string(ka) + ", input '" + input(1) + "' " + JoinInts(*b) + " has " +
                       std::to_string(kb) + ", expected them equal");
        }
      }
    }

    if (op == "LSTM" || op == "GRU" || op == "RNN") {
      const int64_t gates = op == "LSTM" ? 4 : op == "GRU" ? 3 : 1;
      const Attribute* h = int_attr("hidden_size");
      if (h != nullptr && h->i < 1) {
        ThrowInvalid(where + ": attribute 'hidden_size' is " + std::to_string(h->i) + ", expected a positive integer");
      }
      const Attribute* dir = node.FindAttr("direction");
      const int64_t directions = dir != nullptr && dir->type == AttrType::kString && dir->s == "bidirectional" ? 2 : 1;
      const auto w = shape(1);
      if (w && w->size() != 3) {
        ThrowInvalid(where + ": weight '" + input(1) + "' has rank " + std::to_string(w->size()) +
                     ", expected 3 (directions, gates x hidden_size, input_size)");
      }
      if (w && (*w)[0] != kUnknownDim && (*w)[0] != directions) {
        ThrowInvalid(where + ": weight '" + input(1) + "' has " + std::to_string((*w)[0]) +
                     " directions (axis 0), expected " + std::to_string(directions));
      }
      if (w && h != nullptr && (*w)[1] != kUnknownDim && (*w)[1] != gates * h->i) {
        ThrowInvalid(where + ": weight '" + input(1) + "' has " + std::to_string((*w)[1]) + " rows (axis 1), expected " +
                     std::to_string(gates * h->i) + " (" + std::to_string(gates) + " gates x hidden_size " +
                     std::to_string(h->i) + ")");
      }
    }

    if (op == "Split") {
      std::optional<std::vector<int64_t>> split;
      if (const Attribute* a = ints_attr("split")) split = a->ints;
      else split = values.Ints(input(1));
      if (split) {
        if (split->size() != node.outputs.size()) {
          ThrowInvalid(where + ": split " + JoinInts(*split) + " has " + Count(split->size(), "value") + " but the node has " +
                       Count(node.outputs.size(), "output") + ", expected one value per output");
        }
        int64_t sum = 0;
        for (int64_t v : *split) {
          if (v < 0) ThrowInvalid(where + ": split " + JoinInts(*split) + " holds " + std::to_string(v) + ", expected non-negative sizes");
          sum += v;
        }
        const auto x = shape(0);
        const int64_t axis = node.AttrInt("axis", 0);
        if (x && axis >= -static_cast<int64_t>(x->size()) && axis < static_cast<int64_t>(x->size())) {
          const int64_t dim = (*x)[static_cast<size_t>(axis < 0 ? axis + static_cast<int64_t>(x->size()) : axis)];
          if (dim != kUnknownDim && dim != sum) {
            ThrowInvalid(where + ": split " + JoinInts(*split) + " sums to " + std::to_string(sum) + ", expected " +
                         std::to_string(dim) + " (axis " + std::to_string(axis) + " of input '" + input(0) + "')");
          }
        }
      }
    }

    if (op == "DepthToSpace" || op == "SpaceToDepth") {
      const Attribute* b = int_attr("blocksize");
      if (b != nullptr && b->i < 1) {
        ThrowInvalid(where + ": attribute 'blocksize' is " + std::to_string(b->i) + ", expected a positive integer");
      }
    }

    if (op == "Tile") {
      const auto repeats = values.Ints(input(1));
      const auto r = Rank(shape(0));
      if (repeats) {
        for (int64_t v : *repeats) {
          if (v < 0) ThrowInvalid(where + ": repeats " + JoinInts(*repeats) + " hold " + std::to_string(v) + ", expected non-negative values");
        }
        if (r && static_cast<int64_t>(repeats->size()) != *r) {
          ThrowInvalid(where + ": repeats " + JoinInts(*repeats) + " has " + Count(repeats->size(), "value") +
                       ", expected " + std::to_string(*r) + rank_text(0, *r));
        }
      }
    }

    if (op == "Pad") {
      std::optional<std::vector<int64_t>> pads;
      if (const Attribute* a = ints_attr("pads")) pads = a->ints;
      else pads = values.Ints(input(1));
      const auto r = Rank(shape(0));
      if (pads && r && node.inputs.size() < 4 && static_cast<int64_t>(pads->size()) != 2 * *r) {
        ThrowInvalid(where + ": pads " + JoinInts(*pads) + " has " + Count(pads->size(), "value") + ", expected " +
                     std::to_string(2 * *r) + " (a begin and an end for each axis" + rank_text(0, *r) + ")");
      }
    }

    if (op == "Gather") {
      const auto x = shape(0);
      const auto indices = values.Ints(input(1));
      const int64_t axis = node.AttrInt("axis", 0);
      if (x && indices && axis >= -static_cast<int64_t>(x->size()) && axis < static_cast<int64_t>(x->size())) {
        const int64_t dim = (*x)[static_cast<size_t>(axis < 0 ? axis + static_cast<int64_t>(x->size()) : axis)];
        for (int64_t v : *indices) {
          if (dim != kUnknownDim && (v < -dim || v >= dim)) {
            ThrowInvalid(where + ": index " + std::to_string(v) + " of '" + input(1) + "' is out of range, expected " +
                         std::to_string(-dim) + " to " + std::to_string(dim - 1) + " (axis " + std::to_string(axis) +
                         " of input '" + input(0) + "' has size " + std::to_string(dim) + ")");
          }
        }
      }
    }

    if (op == "Slice") {
      const auto starts = values.Ints(input(1)), ends = values.Ints(input(2));
      const auto axes = values.Ints(input(3)), steps = values.Ints(input(4));
      if (starts && ends && starts->size() != ends->size()) {
        ThrowInvalid(where + ": starts " + JoinInts(*starts) + " and ends " + JoinInts(*ends) +
                     " differ in length, expected one of each per sliced axis");
      }
      if (starts && axes && starts->size() != axes->size()) {
        ThrowInvalid(where + ": axes " + JoinInts(*axes) + " has " + Count(axes->size(), "value") + ", expected " +
                     std::to_string(starts->size()) + " (one per value of starts)");
      }
      if (steps) {
        for (int64_t v : *steps) {
          if (v == 0) ThrowInvalid(where + ": steps " + JoinInts(*steps) + " hold 0, expected non-zero steps");
        }
      }
      const auto r = Rank(shape(0));
      if (axes && r) {
        std::set<int64_t> seen;
        for (int64_t v : *axes) {
          if (v < -*r || v >= *r) {
            ThrowInvalid(where + ": axes " + JoinInts(*axes) + " hold " + std::to_string(v) + ", expected " +
                         std::to_string(-*r) + " to " + std::to_string(*r - 1) + rank_text(0, *r));
          }
          if (!seen.insert(v < 0 ? v + *r : v).second) {
            ThrowInvalid(where + ": axes " + JoinInts(*axes) + " name axis " + std::to_string(v) +
                         " twice, expected distinct axes");
          }
        }
      }
    }

    if (op == "ConstantOfShape" || op == "Expand") {
      if (const auto s = values.Ints(input(op == "Expand" ? 1 : 0))) {
        for (int64_t v : *s) {
          if (v < 0) ThrowInvalid(where + ": shape " + JoinInts(*s) + " holds " + std::to_string(v) + ", expected non-negative sizes");
        }
      }
    }
  }

  // A constant target shape of Reshape: at most one -1, no value below -1, 0 only where it copies an input
  // axis (or with allowzero, never together with -1), and the element count preserved when it is known.
  static void CheckReshape(const Graph& graph, const GraphValues& values, const Node& node, const std::string& where) {
    if (node.inputs.size() < 2) return;
    const auto target = values.Ints(node.inputs[1]);
    if (!target) return;
    const std::string t = "target shape " + JoinInts(*target) + " ('" + node.inputs[1] + "')";
    const bool allowzero = node.AttrInt("allowzero", 0) == 1;
    const auto x = values.Shape(graph, node.inputs[0]);
    int inferred = 0;
    bool zero = false;
    for (size_t i = 0; i < target->size(); ++i) {
      const int64_t v = (*target)[i];
      if (v < -1) ThrowInvalid(where + ": " + t + " holds " + std::to_string(v) + ", expected sizes, 0 or -1");
      if (v == -1 && ++inferred > 1) ThrowInvalid(where + ": " + t + " holds -1 more than once, expected at most one");
      if (v == 0) {
        zero = true;
        if (!allowzero && x && i >= x->size()) {
          ThrowInvalid(where + ": " + t + " holds 0 at position " + std::to_string(i) + " but input '" +
                       node.inputs[0] + "' has rank " + std::to_string(x->size()) + ", expected 0 only where it copies an input axis");
        }
      }
    }
    if (allowzero && zero && inferred > 0) {
      ThrowInvalid(where + ": " + t + " holds both 0 and -1 with allowzero 1, expected one of them at most");
    }
    if (!x || !FullyKnown(*x)) return;
    int64_t total = 1, known = 1;
    for (int64_t d : *x) {
      if (d != 0 && total > kMaxCheckedConstant * kMaxCheckedConstant / d) return;  // too large to bother
      total *= d;
    }
    for (size_t i = 0; i < target->size(); ++i) {
      int64_t v = (*target)[i];
      if (v == 0 && !allowzero) v = (*x)[i];
      if (v == -1) continue;
      if (v != 0 && known > kMaxCheckedConstant * kMaxCheckedConstant / v) return;
      known *= v;
    }
    const bool fits = inferred ? (known != 0 && total % known == 0) || (known == 0 && total == 0) : known == total;
    if (!fits) {
      ThrowInvalid(where + ": " + t + " cannot hold the " + std::to_string(total) + " elements of input '" +
                   node.inputs[0] + "' " + JoinInts(*x));
    }
  }
};

}  // namespace

void VerifyOperators(const Model& model) {
  OperatorVerifier verifier(model);
  verifier.VerifyGraph(model.graph, "");
}

namespace {

void CollectUnchecked(const Graph& graph, const OperatorVerifier& verifier,
                      std::map<std::pair<std::string, std::string>, int64_t>* counts) {
  const auto& known = onnx::OpSchemaRegistry::DomainToVersionRange::Instance().Map();
  for (const auto& node : graph.nodes) {
    const std::string d = node.IsDefaultDomain() ? std::string() : node.domain;
    bool unchecked = verifier.functions.count({d, node.op_type}) > 0 || (!d.empty() && d != "ai.onnx.ml");
    if (d == "ai.onnx.ml") {
      const auto imp = verifier.imports.find(d);
      unchecked = unchecked || (imp != verifier.imports.end() && imp->second > known.at(d).second);
    }
    if (unchecked) ++(*counts)[{DomainName(d), node.op_type}];
    for (const auto& a : node.attributes) {
      for (const auto& g : a.graphs) CollectUnchecked(g, verifier, counts);
    }
  }
}

// What ONNX's version converter would crash on (found by fuzz_model_structured), or "": a node outside
// the default domain whose op_type is also an ONNX operator (its adapter reads inputs the node may not
// have), or a graph output that is an initializer (the converter's IR import dereferences a null value).
std::string FirstForeignNodeNamedLikeOnnxOp(const Graph& graph) {
  for (const auto& out : graph.outputs) {
    const bool is_input = std::any_of(graph.inputs.begin(), graph.inputs.end(),
                                      [&](const ValueInfo& v) { return v.name == out.name; });
    const bool is_initializer = std::any_of(graph.initializers.begin(), graph.initializers.end(),
                                            [&](const Tensor& t) { return t.name() == out.name; });
    if (is_initializer && !is_input) {
      return "graph output '" + out.name + "' is an initializer, which the opset converter cannot take";
    }
  }
  for (const auto& n : graph.nodes) {
    if (!n.IsDefaultDomain() && onnx::OpSchemaRegistry::Schema(n.op_type, "") != nullptr) {
      return "node " + n.Describe() + ": operator '" + n.op_type + "' of domain '" + n.domain +
             "' has the name of an ONNX operator, which the opset converter would apply to it";
    }
    for (const auto& a : n.attributes) {
      for (const auto& g : a.graphs) {
        if (std::string found = FirstForeignNodeNamedLikeOnnxOp(g); !found.empty()) return found;
      }
    }
  }
  return "";
}

}  // namespace

std::vector<UncheckedOperator> UncheckedOperators(const Model& model) {
  OperatorVerifier verifier(model);
  std::map<std::pair<std::string, std::string>, int64_t> counts;
  CollectUnchecked(model.graph, verifier, &counts);
  std::vector<UncheckedOperator> out;
  for (const auto& [key, count] : counts) out.push_back({key.first, key.second, count});
  return out;
}

bool ConvertOpset(Model& model, int64_t version, std::string* why) {
  if (model.OpsetVersion("") == version) return true;
  // The version converter does not survive malformed nodes (it crashes on an opset-9 Upsample without scales).
  try {
    VerifyOperators(model);
  } catch (const Error& e) {
    if (why != nullptr) *why = e.what();
    return false;
  }
  // Nor does it look at domains, or take an initializer as a graph output.
  if (std::string foreign = FirstForeignNodeNamedLikeOnnxOp(model.graph); !foreign.empty()) {
    if (why != nullptr) *why = std::move(foreign);
    return false;
  }
  onnx::ModelProto proto;
  io_detail::ModelToProto(model, &proto);
  // Some adapters need ranks the exporter did not record (Softmax 12 -> 13 reshapes around its axis), so
  // the converter sees inferred shapes; the inferred entries are dropped again afterwards.
  std::set<std::string> declared;
  for (const auto& vi : proto.graph().value_info()) declared.insert(vi.name());
  try {
    for (int round = 0; round < kMaxRankRounds; ++round) {
      InferProtoShapes(proto);
      if (!AddReshapeRanks(proto.mutable_graph())) break;
    }
  } catch (const std::exception&) {
    // Conversion is still attempted with what the model declares.
  }
  onnx::ModelProto converted;
  try {
    // What onnx::version_conversion::ConvertVersion does, with one converter for the process: building
    // one copies every operator schema of every version (most of a small model's conversion time).
    static const onnx::version_conversion::DefaultVersionConverter converter;
    onnx::OpSetID initial(0);
    for (const auto& imp : proto.opset_import()) {
      if (imp.domain().empty() || imp.domain() == "ai.onnx") {
        initial.setVersion(imp.version());
        break;
      }
    }
    converted = converter.convert_version(proto, initial, onnx::OpSetID(static_cast<int>(version)));
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
