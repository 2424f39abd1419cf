#include "pass_util.h"

#include <algorithm>
#include <cstring>

#include "compress/util/error.h"
#include "compress/util/half.h"

namespace compress::passes {

bool IsOp(const Node& n, const char* op_type) { return n.IsDefaultDomain() && n.op_type == op_type; }

Tensor DenseFromSparse(const SparseTensor& s) {
  const std::string& name = s.values.name();
  Tensor dense(s.values.dtype(), s.dims, name);
  if (s.values.dtype() == DType::kString) {
    ThrowInvalid("sparse tensor '" + name + "' holds strings, which are not supported");
  }
  const std::optional<std::vector<int64_t>> idx = ToInt64s(s.indices);
  if (!idx) ThrowInvalid("sparse tensor '" + name + "' has indices that are not int32/int64");
  const int64_t nnz = s.values.numel();
  const int64_t total = dense.numel();
  const size_t elem = DTypeStorageBytes(s.values.dtype(), 1);
  const bool coords = s.indices.rank() == 2;
  const int64_t rank = static_cast<int64_t>(s.dims.size());
  if (static_cast<int64_t>(idx->size()) != (coords ? nnz * rank : nnz)) {
    ThrowInvalid("sparse tensor '" + name + "' has " + std::to_string(idx->size()) + " index values for " +
                 std::to_string(nnz) + " values");
  }
  std::vector<int64_t> strides(s.dims.size(), 1);
  for (size_t d = s.dims.size(); d-- > 1;) strides[d - 1] = strides[d] * s.dims[d];
  for (int64_t k = 0; k < nnz; ++k) {
    int64_t lin = 0;
    if (coords) {
      for (int64_t d = 0; d < rank; ++d) {
        const int64_t v = (*idx)[static_cast<size_t>(k * rank + d)];
        if (v < 0 || v >= s.dims[static_cast<size_t>(d)]) {
          ThrowInvalid("sparse tensor '" + name + "' has an index out of range");
        }
        lin += v * strides[static_cast<size_t>(d)];
      }
    } else {
      lin = (*idx)[static_cast<size_t>(k)];
    }
    if (lin < 0 || lin >= total) ThrowInvalid("sparse tensor '" + name + "' has an index out of range");
    std::memcpy(static_cast<char*>(dense.mutable_raw()) + static_cast<size_t>(lin) * elem,
                static_cast<const char*>(s.values.raw()) + static_cast<size_t>(k) * elem, elem);
  }
  return dense;
}

std::optional<Tensor> ConstantNodeValue(const Node& n) {
  if (n.outputs.size() != 1 || n.outputs[0].empty()) return std::nullopt;
  const std::string& out = n.outputs[0];
  for (const auto& a : n.attributes) {
    if (!a.ref_attr_name.empty()) return std::nullopt;
    if (a.name == "value" && !a.tensors.empty()) {
      Tensor t = a.tensors[0];
      t.set_name(out);
      return t;
    }
    if (a.name == "value_float") return Tensor::FromVector<float>({}, {a.f}, out);
    if (a.name == "value_floats") {
      return Tensor::FromVector<float>({static_cast<int64_t>(a.floats.size())}, a.floats, out);
    }
    if (a.name == "value_int") return Tensor::FromVector<int64_t>({}, {a.i}, out);
    if (a.name == "value_ints") {
      return Tensor::FromVector<int64_t>({static_cast<int64_t>(a.ints.size())}, a.ints, out);
    }
    if (a.name == "value_string") return Tensor::FromStrings({}, {a.s}, out);
    if (a.name == "value_strings") {
      return Tensor::FromStrings({static_cast<int64_t>(a.strings.size())}, a.strings, out);
    }
    if (a.name == "sparse_value" && !a.sparse_tensors.empty()) {
      Tensor t = DenseFromSparse(a.sparse_tensors[0]);
      t.set_name(out);
      return t;
    }
  }
  return std::nullopt;
}

bool IsOverridable(const Model& model, const Graph& graph, const std::string& name) {
  return model.ir_version >= 4 && graph.FindInput(name) != nullptr;
}

bool CanAddInitializers(const Model& model, const Graph& graph) {
  return model.ir_version >= 4 || &graph == &model.graph;
}

TypeInfo TensorTypeOf(const Tensor& t) {
  std::vector<Dim> dims;
  dims.reserve(t.dims().size());
  for (int64_t d : t.dims()) dims.push_back(Dim::Fixed(d));
  return TypeInfo::Tensor(t.dtype(), std::move(dims));
}

void AddInitializer(const Model& model, Graph& graph, Tensor t) {
  if (model.ir_version < 4 && graph.FindInput(t.name()) == nullptr) {
    graph.inputs.push_back({t.name(), TensorTypeOf(t), ""});
  }
  graph.initializers.push_back(std::move(t));
}

namespace {

bool DefinesLocally(const Graph& g, const std::string& name) {
  for (const auto& v : g.inputs) {
    if (v.name == name) return true;
  }
  for (const auto& t : g.initializers) {
    if (t.name() == name) return true;
  }
  for (const auto& s : g.sparse_initializers) {
    if (s.values.name() == name) return true;
  }
  for (const auto& n : g.nodes) {
    for (const auto& o : n.outputs) {
      if (o == name) return true;
    }
  }
  return false;
}

}  // namespace

void ReplaceUses(Graph& graph, const std::string& from, const std::string& to) {
  for (auto& n : graph.nodes) {
    for (auto& in : n.inputs) {
      if (in == from) in = to;
    }
    for (auto& a : n.attributes) {
      for (auto& sub : a.graphs) {
        // A subgraph defining the same name would shadow ours; ONNX forbids that, but renaming inside
        // such a graph would silently change which value it reads.
        if (!DefinesLocally(sub, from)) ReplaceUses(sub, from, to);
      }
    }
  }
  for (auto& v : graph.outputs) {
    if (v.name == from) v.name = to;
  }
}

void RenameValue(Graph& graph, const std::string& from, const std::string& to) {
  for (auto& n : graph.nodes) {
    for (auto& o : n.outputs) {
      if (o == from) o = to;
    }
  }
  for (auto& t : graph.initializers) {
    if (t.name() == from) t.set_name(to);
  }
  for (auto& s : graph.sparse_initializers) {
    if (s.values.name() == from) s.values.set_name(to);
  }
  for (auto& v : graph.inputs) {
    if (v.name == from) v.name = to;
  }
  for (auto& v : graph.value_info) {
    if (v.name == from) v.name = to;
  }
  ReplaceUses(graph, from, to);
}

void EraseInitializers(Graph& graph, const std::unordered_set<std::string>& names) {
  if (names.empty()) return;
  auto& inits = graph.initializers;
  inits.erase(std::remove_if(inits.begin(), inits.end(), [&](const Tensor& t) { return names.count(t.name()) > 0; }),
              inits.end());
  auto& inputs = graph.inputs;
  inputs.erase(std::remove_if(inputs.begin(), inputs.end(), [&](const ValueInfo& v) { return names.count(v.name) > 0; }),
               inputs.end());
}

void EraseValueInfo(Graph& graph, const std::unordered_set<std::string>& names) {
  if (names.empty()) return;
  auto& vi = graph.value_info;
  vi.erase(std::remove_if(vi.begin(), vi.end(), [&](const ValueInfo& v) { return names.count(v.name) > 0; }),
           vi.end());
}

std::unordered_set<std::string> GraphOutputNames(const Graph& graph) {
  std::unordered_set<std::string> out;
  for (const auto& v : graph.outputs) out.insert(v.name);
  return out;
}

std::unordered_map<std::string, int> UseCounts(const Graph& graph) {
  std::unordered_map<std::string, int> uses;
  for (const auto& n : graph.nodes) {
    for (const auto& in : n.inputs) {
      if (!in.empty()) ++uses[in];
    }
    for (const auto& in : OuterScopeInputs(n)) ++uses[in];
  }
  for (const auto& v : graph.outputs) ++uses[v.name];
  return uses;
}

NameGenerator::NameGenerator(const Graph& root) {
  ForEachGraph(root, [this](const Graph& g) {
    for (const auto& v : g.inputs) used_.insert(v.name);
    for (const auto& v : g.outputs) used_.insert(v.name);
    for (const auto& v : g.value_info) used_.insert(v.name);
    for (const auto& t : g.initializers) used_.insert(t.name());
    for (const auto& s : g.sparse_initializers) used_.insert(s.values.name());
    for (const auto& n : g.nodes) {
      if (!n.name.empty()) used_.insert(n.name);
      for (const auto& in : n.inputs) used_.insert(in);
      for (const auto& o : n.outputs) used_.insert(o);
    }
  });
}

std::string NameGenerator::Make(const std::string& base) {
  std::string name = base;
  for (int k = 1; name.empty() || used_.count(name); ++k) name = base + "_" + std::to_string(k);
  used_.insert(name);
  return name;
}

Node NamedNode(NameGenerator& names, const std::string& op, std::vector<std::string> inputs,
               std::vector<std::string> outputs, const std::string& base) {
  Node n;
  n.name = names.Make(base + "_" + op);
  n.op_type = op;
  n.inputs = std::move(inputs);
  n.outputs = std::move(outputs);
  return n;
}

std::string PendingInitializers::Add(Tensor t, NameGenerator& names, const std::string& base) {
  t.set_name(names.Make(base));
  std::string name = t.name();
  pending_.push_back(std::move(t));
  return name;
}

void PendingInitializers::Flush(const Model& model, Graph& graph) {
  for (auto& t : pending_) AddInitializer(model, graph, std::move(t));
  pending_.clear();
}

std::optional<std::vector<double>> ToDoubles(const Tensor& t) {
  std::vector<double> out(static_cast<size_t>(t.numel()));
  auto copy = [&](auto tag) {
    using T = decltype(tag);
    const T* p = static_cast<const T*>(t.raw());
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<double>(p[i]);
  };
  switch (t.dtype()) {
    case DType::kFloat:
      copy(float{});
      break;
    case DType::kDouble:
      copy(double{});
      break;
    case DType::kInt8:
      copy(int8_t{});
      break;
    case DType::kUInt8:
      copy(uint8_t{});
      break;
    case DType::kInt16:
      copy(int16_t{});
      break;
    case DType::kUInt16:
      copy(uint16_t{});
      break;
    case DType::kInt32:
      copy(int32_t{});
      break;
    case DType::kUInt32:
      copy(uint32_t{});
      break;
    case DType::kInt64:
      copy(int64_t{});
      break;
    case DType::kUInt64:
      copy(uint64_t{});
      break;
    case DType::kBool:
      copy(uint8_t{});
      break;
    case DType::kFloat16:
    case DType::kBFloat16: {
      const uint16_t* p = static_cast<const uint16_t*>(t.raw());
      const bool bf = t.dtype() == DType::kBFloat16;
      for (size_t i = 0; i < out.size(); ++i) out[i] = bf ? BFloat16ToFloat(p[i]) : HalfToFloat(p[i]);
      break;
    }
    default:
      return std::nullopt;
  }
  return out;
}

std::optional<std::vector<int64_t>> ToInt64s(const Tensor& t) {
  if (t.dtype() == DType::kInt64) {
    const int64_t* p = t.data<int64_t>();
    return std::vector<int64_t>(p, p + t.numel());
  }
  if (t.dtype() == DType::kInt32) {
    const int32_t* p = t.data<int32_t>();
    return std::vector<int64_t>(p, p + t.numel());
  }
  return std::nullopt;
}

Tensor FromDoubles(DType dtype, std::vector<int64_t> dims, const std::vector<double>& values,
                   std::string name) {
  Tensor t(dtype, std::move(dims), std::move(name));
  if (static_cast<size_t>(t.numel()) != values.size()) {
    ThrowInternal("FromDoubles: " + std::to_string(values.size()) + " values for " +
                  std::to_string(t.numel()) + " elements");
  }
  switch (dtype) {
    case DType::kFloat: {
      float* p = t.mutable_data<float>();
      for (size_t i = 0; i < values.size(); ++i) p[i] = static_cast<float>(values[i]);
      break;
    }
    case DType::kDouble: {
      double* p = t.mutable_data<double>();
      for (size_t i = 0; i < values.size(); ++i) p[i] = values[i];
      break;
    }
    case DType::kFloat16:
    case DType::kBFloat16: {
      uint16_t* p = static_cast<uint16_t*>(t.mutable_raw());
      const bool bf = dtype == DType::kBFloat16;
      for (size_t i = 0; i < values.size(); ++i) {
        const float f = static_cast<float>(values[i]);
        p[i] = bf ? FloatToBFloat16(f) : FloatToHalf(f);
      }
      break;
    }
    default:
      ThrowInternal(std::string("FromDoubles: unsupported element type ") + DTypeName(dtype));
  }
  return t;
}

}  // namespace compress::passes
