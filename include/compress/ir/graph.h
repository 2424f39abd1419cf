// Model / Graph / Node / Value types of the intermediate representation.
//
// The IR mirrors everything an ONNX file can say (so a load/save round trip loses nothing) but holds
// no protobuf type: only the io module converts between the two. Values are referred to by name, as in
// ONNX; the helpers at the end build producer/consumer indices when a pass needs them.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "compress/ir/tensor.h"

namespace compress {

struct Graph;

// One dimension of a value's shape: a fixed size, a symbolic name (e.g. "batch"), or unknown.
struct Dim {
  std::optional<int64_t> value;
  std::string param;
  std::string denotation;

  static Dim Fixed(int64_t v) { return Dim{v, {}, {}}; }
  static Dim Symbolic(std::string p) { return Dim{std::nullopt, std::move(p), {}}; }
  bool is_fixed() const { return value.has_value(); }
  std::string ToString() const;  // "28", "batch" or "?"
  bool operator==(const Dim& o) const {
    return value == o.value && param == o.param && denotation == o.denotation;
  }
};

// The type of a value (onnx.TypeProto): tensors, sparse tensors, sequences, maps and optionals.
struct TypeInfo {
  enum class Kind { kNone, kTensor, kSparseTensor, kSequence, kMap, kOptional };
  Kind kind = Kind::kNone;
  DType elem_type = DType::kUndefined;     // tensor / sparse tensor element type
  bool has_shape = false;                  // a tensor type may have no shape at all
  std::vector<Dim> shape;
  DType map_key = DType::kUndefined;       // map key type
  std::shared_ptr<TypeInfo> elem;          // sequence / optional element, map value
  std::string denotation;

  static TypeInfo Tensor(DType elem_type, std::vector<Dim> shape);
  std::string ToString() const;  // "float32[batch,1,28,28]"
  bool operator==(const TypeInfo& o) const;
};

struct ValueInfo {
  std::string name;
  TypeInfo type;
  std::string doc_string;
};

enum class AttrType : int32_t {
  kUndefined = 0,
  kFloat = 1,
  kInt = 2,
  kString = 3,
  kTensor = 4,
  kGraph = 5,
  kFloats = 6,
  kInts = 7,
  kStrings = 8,
  kTensors = 9,
  kGraphs = 10,
  kSparseTensor = 11,
  kSparseTensors = 12,
  kTypeProto = 13,
  kTypeProtos = 14,
};
const char* AttrTypeName(AttrType t);

// A node attribute. Single-valued tensor/graph/sparse/type attributes use element 0 of the vectors.
struct Attribute {
  std::string name;
  AttrType type = AttrType::kUndefined;
  std::string doc_string;
  std::string ref_attr_name;  // set inside function bodies
  float f = 0.0f;
  int64_t i = 0;
  std::string s;
  std::vector<float> floats;
  std::vector<int64_t> ints;
  std::vector<std::string> strings;
  std::vector<Tensor> tensors;
  std::vector<Graph> graphs;
  std::vector<SparseTensor> sparse_tensors;
  std::vector<TypeInfo> type_protos;

  static Attribute Int(std::string name, int64_t v);
  static Attribute Float(std::string name, float v);
  static Attribute String(std::string name, std::string v);
  static Attribute Ints(std::string name, std::vector<int64_t> v);
  static Attribute Floats(std::string name, std::vector<float> v);
  static Attribute FromTensor(std::string name, Tensor t);
};

struct Node {
  std::string name;
  std::string op_type;
  std::string domain;  // "" is the default ONNX domain
  std::vector<std::string> inputs;   // "" marks an omitted optional input
  std::vector<std::string> outputs;  // "" marks an omitted optional output
  std::vector<Attribute> attributes;
  std::string doc_string;

  const Attribute* FindAttr(const std::string& attr_name) const;
  Attribute* FindAttr(const std::string& attr_name);
  int64_t AttrInt(const std::string& attr_name, int64_t fallback) const;
  float AttrFloat(const std::string& attr_name, float fallback) const;
  std::string AttrString(const std::string& attr_name, const std::string& fallback) const;
  std::vector<int64_t> AttrInts(const std::string& attr_name, const std::vector<int64_t>& fallback) const;
  void SetAttr(Attribute attr);  // replaces an attribute of the same name
  bool RemoveAttr(const std::string& attr_name);
  // "name (op_type)" or "#index (op_type)" for unnamed nodes; used in messages.
  std::string Describe() const;
  bool IsDefaultDomain() const { return domain.empty() || domain == "ai.onnx"; }
};

struct Graph {
  std::string name;
  std::string doc_string;
  std::vector<ValueInfo> inputs;
  std::vector<ValueInfo> outputs;
  std::vector<ValueInfo> value_info;
  std::vector<Tensor> initializers;
  std::vector<SparseTensor> sparse_initializers;
  std::vector<Node> nodes;

  const Tensor* FindInitializer(const std::string& value_name) const;
  Tensor* FindInitializer(const std::string& value_name);
  const ValueInfo* FindInput(const std::string& value_name) const;
  // Graph inputs that are not also initializers (before IR version 4 weights were listed as inputs too).
  std::vector<const ValueInfo*> RealInputs() const;
};

struct OpsetImport {
  std::string domain;
  int64_t version = 0;
};

struct Model {
  int64_t ir_version = 0;
  std::vector<OpsetImport> opset_imports;
  std::string producer_name;
  std::string producer_version;
  std::string domain;
  int64_t model_version = 0;
  std::string doc_string;
  std::vector<std::pair<std::string, std::string>> metadata_props;
  Graph graph;
  // Model-local functions and training information are carried through unchanged as serialized
  // onnx.FunctionProto / onnx.TrainingInfoProto bytes: no pass looks inside them.
  std::vector<std::string> functions;
  std::vector<std::string> training_info;

  // Version imported for `domain` ("" and "ai.onnx" are the same), or 0 if not imported.
  int64_t OpsetVersion(const std::string& opset_domain = "") const;
  void SetOpsetVersion(const std::string& opset_domain, int64_t version);
  void SetMetadata(const std::string& key, const std::string& value);
};

// Index of which node produces each value and which nodes consume it (indices into graph.nodes).
struct GraphIndex {
  std::unordered_map<std::string, size_t> producer;
  std::unordered_map<std::string, std::vector<size_t>> consumers;
  explicit GraphIndex(const Graph& graph);
};

// Visits every graph of the model: the main graph first, then subgraphs depth first.
void ForEachGraph(Graph& graph, const std::function<void(Graph&)>& fn);
void ForEachGraph(const Graph& graph, const std::function<void(const Graph&)>& fn);

// Names used by nodes of subgraphs (at any depth) that are not defined inside them: the values a
// control-flow node captures from the enclosing scope.
std::vector<std::string> OuterScopeInputs(const Node& node);

}  // namespace compress
