#include "compress/ir/graph.h"

#include <algorithm>
#include <unordered_set>

#include "compress/util/error.h"

namespace compress {

std::string Dim::ToString() const {
  if (value) return std::to_string(*value);
  if (!param.empty()) return param;
  return "?";
}

TypeInfo TypeInfo::Tensor(DType elem_type, std::vector<Dim> shape) {
  TypeInfo t;
  t.kind = Kind::kTensor;
  t.elem_type = elem_type;
  t.has_shape = true;
  t.shape = std::move(shape);
  return t;
}

std::string TypeInfo::ToString() const {
  auto shape_str = [this]() {
    if (!has_shape) return std::string("[?]");
    std::string s = "[";
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + shape[i].ToString();
    return s + "]";
  };
  switch (kind) {
    case Kind::kNone: return "none";
    case Kind::kTensor: return std::string(DTypeName(elem_type)) + shape_str();
    case Kind::kSparseTensor: return std::string("sparse ") + DTypeName(elem_type) + shape_str();
    case Kind::kSequence: return "sequence<" + (elem ? elem->ToString() : std::string("?")) + ">";
    case Kind::kOptional: return "optional<" + (elem ? elem->ToString() : std::string("?")) + ">";
    case Kind::kMap:
      return std::string("map<") + DTypeName(map_key) + "," + (elem ? elem->ToString() : std::string("?")) + ">";
  }
  return "?";
}

bool TypeInfo::operator==(const TypeInfo& o) const {
  if (kind != o.kind || elem_type != o.elem_type || has_shape != o.has_shape || shape != o.shape ||
      map_key != o.map_key || denotation != o.denotation) {
    return false;
  }
  if (static_cast<bool>(elem) != static_cast<bool>(o.elem)) return false;
  return !elem || *elem == *o.elem;
}

const char* AttrTypeName(AttrType t) {
  switch (t) {
    case AttrType::kUndefined: return "undefined";
    case AttrType::kFloat: return "float";
    case AttrType::kInt: return "int";
    case AttrType::kString: return "string";
    case AttrType::kTensor: return "tensor";
    case AttrType::kGraph: return "graph";
    case AttrType::kFloats: return "floats";
    case AttrType::kInts: return "ints";
    case AttrType::kStrings: return "strings";
    case AttrType::kTensors: return "tensors";
    case AttrType::kGraphs: return "graphs";
    case AttrType::kSparseTensor: return "sparse_tensor";
    case AttrType::kSparseTensors: return "sparse_tensors";
    case AttrType::kTypeProto: return "type_proto";
    case AttrType::kTypeProtos: return "type_protos";
  }
  return "unknown";
}

Attribute Attribute::Int(std::string name, int64_t v) {
  Attribute a;
  a.name = std::move(name);
  a.type = AttrType::kInt;
  a.i = v;
  return a;
}
Attribute Attribute::Float(std::string name, float v) {
  Attribute a;
  a.name = std::move(name);
  a.type = AttrType::kFloat;
  a.f = v;
  return a;
}
Attribute Attribute::String(std::string name, std::string v) {
  Attribute a;
  a.name = std::move(name);
  a.type = AttrType::kString;
  a.s = std::move(v);
  return a;
}
Attribute Attribute::Ints(std::string name, std::vector<int64_t> v) {
  Attribute a;
  a.name = std::move(name);
  a.type = AttrType::kInts;
  a.ints = std::move(v);
  return a;
}
Attribute Attribute::Floats(std::string name, std::vector<float> v) {
  Attribute a;
  a.name = std::move(name);
  a.type = AttrType::kFloats;
  a.floats = std::move(v);
  return a;
}
Attribute Attribute::FromTensor(std::string name, compress::Tensor t) {
  Attribute a;
  a.name = std::move(name);
  a.type = AttrType::kTensor;
  a.tensors.push_back(std::move(t));
  return a;
}

const Attribute* Node::FindAttr(const std::string& attr_name) const {
  for (const auto& a : attributes) {
    if (a.name == attr_name) return &a;
  }
  return nullptr;
}
Attribute* Node::FindAttr(const std::string& attr_name) {
  for (auto& a : attributes) {
    if (a.name == attr_name) return &a;
  }
  return nullptr;
}

namespace {
const Attribute* TypedAttr(const Node& n, const std::string& attr_name, AttrType want) {
  const Attribute* a = n.FindAttr(attr_name);
  if (a == nullptr) return nullptr;
  if (a->type != want) {
    ThrowInvalid("node " + n.Describe() + ": attribute '" + attr_name + "' is " + AttrTypeName(a->type) +
                 ", expected " + AttrTypeName(want));
  }
  return a;
}
}  // namespace

int64_t Node::AttrInt(const std::string& attr_name, int64_t fallback) const {
  const Attribute* a = TypedAttr(*this, attr_name, AttrType::kInt);
  return a ? a->i : fallback;
}
float Node::AttrFloat(const std::string& attr_name, float fallback) const {
  const Attribute* a = TypedAttr(*this, attr_name, AttrType::kFloat);
  return a ? a->f : fallback;
}
std::string Node::AttrString(const std::string& attr_name, const std::string& fallback) const {
  const Attribute* a = TypedAttr(*this, attr_name, AttrType::kString);
  return a ? a->s : fallback;
}
std::vector<int64_t> Node::AttrInts(const std::string& attr_name, const std::vector<int64_t>& fallback) const {
  const Attribute* a = TypedAttr(*this, attr_name, AttrType::kInts);
  return a ? a->ints : fallback;
}

void Node::SetAttr(Attribute attr) {
  for (auto& a : attributes) {
    if (a.name == attr.name) {
      a = std::move(attr);
      return;
    }
  }
  attributes.push_back(std::move(attr));
}

bool Node::RemoveAttr(const std::string& attr_name) {
  auto it = std::find_if(attributes.begin(), attributes.end(),
                         [&](const Attribute& a) { return a.name == attr_name; });
  if (it == attributes.end()) return false;
  attributes.erase(it);
  return true;
}

std::string Node::Describe() const {
  std::string op = domain.empty() ? op_type : domain + "::" + op_type;
  if (!name.empty()) return "'" + name + "' (" + op + ")";
  if (!outputs.empty() && !outputs[0].empty()) return "producing '" + outputs[0] + "' (" + op + ")";
  return "(" + op + ")";
}

const Tensor* Graph::FindInitializer(const std::string& value_name) const {
  for (const auto& t : initializers) {
    if (t.name() == value_name) return &t;
  }
  return nullptr;
}
Tensor* Graph::FindInitializer(const std::string& value_name) {
  for (auto& t : initializers) {
    if (t.name() == value_name) return &t;
  }
  return nullptr;
}
const ValueInfo* Graph::FindInput(const std::string& value_name) const {
  for (const auto& v : inputs) {
    if (v.name == value_name) return &v;
  }
  return nullptr;
}

std::vector<const ValueInfo*> Graph::RealInputs() const {
  std::unordered_set<std::string> init;
  for (const auto& t : initializers) init.insert(t.name());
  std::vector<const ValueInfo*> out;
  for (const auto& v : inputs) {
    if (!init.count(v.name)) out.push_back(&v);
  }
  return out;
}

int64_t Model::OpsetVersion(const std::string& opset_domain) const {
  const bool want_default = opset_domain.empty() || opset_domain == "ai.onnx";
  for (const auto& o : opset_imports) {
    const bool is_default = o.domain.empty() || o.domain == "ai.onnx";
    if ((want_default && is_default) || (!want_default && o.domain == opset_domain)) return o.version;
  }
  return 0;
}

void Model::SetOpsetVersion(const std::string& opset_domain, int64_t version) {
  const bool want_default = opset_domain.empty() || opset_domain == "ai.onnx";
  for (auto& o : opset_imports) {
    const bool is_default = o.domain.empty() || o.domain == "ai.onnx";
    if ((want_default && is_default) || (!want_default && o.domain == opset_domain)) {
      o.version = version;
      return;
    }
  }
  opset_imports.push_back({opset_domain, version});
}

void Model::SetMetadata(const std::string& key, const std::string& value) {
  for (auto& kv : metadata_props) {
    if (kv.first == key) {
      kv.second = value;
      return;
    }
  }
  metadata_props.emplace_back(key, value);
}

GraphIndex::GraphIndex(const Graph& graph) {
  for (size_t i = 0; i < graph.nodes.size(); ++i) {
    const Node& n = graph.nodes[i];
    for (const auto& out : n.outputs) {
      if (!out.empty()) producer.emplace(out, i);
    }
    for (const auto& in : n.inputs) {
      if (!in.empty()) consumers[in].push_back(i);
    }
    for (const auto& in : OuterScopeInputs(n)) consumers[in].push_back(i);
  }
}

void ForEachGraph(Graph& graph, const std::function<void(Graph&)>& fn) {
  fn(graph);
  for (auto& n : graph.nodes) {
    for (auto& a : n.attributes) {
      for (auto& g : a.graphs) ForEachGraph(g, fn);
    }
  }
}

void ForEachGraph(const Graph& graph, const std::function<void(const Graph&)>& fn) {
  fn(graph);
  for (const auto& n : graph.nodes) {
    for (const auto& a : n.attributes) {
      for (const auto& g : a.graphs) ForEachGraph(g, fn);
    }
  }
}

namespace {
void CollectFreeNames(const Graph& g, std::unordered_set<std::string>& defined_outer,
                      std::vector<std::string>& out, std::unordered_set<std::string>& seen) {
  std::unordered_set<std::string> defined = defined_outer;
  for (const auto& v : g.inputs) defined.insert(v.name);
  for (const auto& t : g.initializers) defined.insert(t.name());
  for (const auto& s : g.sparse_initializers) defined.insert(s.values.name());
  for (const auto& n : g.nodes) {
    for (const auto& in : n.inputs) {
      if (!in.empty() && !defined.count(in) && seen.insert(in).second) out.push_back(in);
    }
    for (const auto& a : n.attributes) {
      for (const auto& sub : a.graphs) CollectFreeNames(sub, defined, out, seen);
    }
    for (const auto& o : n.outputs) {
      if (!o.empty()) defined.insert(o);
    }
  }
  for (const auto& v : g.outputs) {
    if (!defined.count(v.name) && seen.insert(v.name).second) out.push_back(v.name);
  }
}
}  // namespace

std::vector<std::string> OuterScopeInputs(const Node& node) {
  std::vector<std::string> out;
  std::unordered_set<std::string> seen;
  for (const auto& a : node.attributes) {
    for (const auto& g : a.graphs) {
      std::unordered_set<std::string> none;
      CollectFreeNames(g, none, out, seen);
    }
  }
  return out;
}

}  // namespace compress
