#include "compress/eval/macs.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <map>
#include <set>

#include "compress/io/dataset.h"
#include "compress/io/schema.h"
#include "compress/util/error.h"

namespace compress {

namespace {

// Saturating arithmetic: a count past int64 is unknown rather than wrapped.
bool MulInto(int64_t* acc, int64_t v) {
  if (v < 0) return false;
  if (v != 0 && *acc > INT64_MAX / v) return false;
  *acc *= v;
  return true;
}

bool FullShape(const TypeInfo& t, std::vector<int64_t>* dims) {
  dims->clear();
  for (const auto& d : t.shape) {
    if (!d.is_fixed()) return false;
    dims->push_back(*d.value);
  }
  return true;
}

// The value scopes visible from a (sub)graph: innermost last.
class Scope {
 public:
  explicit Scope(std::vector<const Graph*> graphs) : graphs_(std::move(graphs)) {}
  Scope Enter(const Graph& g) const {
    std::vector<const Graph*> gs = graphs_;
    gs.push_back(&g);
    return Scope(gs);
  }

  // A tensor known at load time: an initializer or a Constant node's value tensor.
  const Tensor* Constant(const std::string& name) const {
    for (auto it = graphs_.rbegin(); it != graphs_.rend(); ++it) {
      if (const Tensor* t = (*it)->FindInitializer(name)) return t;
      for (const auto& n : (*it)->nodes) {
        if (n.op_type == "Constant" && n.IsDefaultDomain() && n.outputs.size() == 1 && n.outputs[0] == name) {
          const Attribute* a = n.FindAttr("value");
          return (a != nullptr && !a->tensors.empty()) ? &a->tensors[0] : nullptr;
        }
      }
    }
    return nullptr;
  }

  // The fully known shape of `name`, or false with `why` set.
  bool Shape(const std::string& name, std::vector<int64_t>* dims, std::string* why) const {
    if (name.empty()) {
      *why = "an omitted input";
      return false;
    }
    if (const Tensor* t = Constant(name)) {
      *dims = t->dims();
      return true;
    }
    // Graph inputs, then inferred value_info, then declared outputs (which inference leaves as declared):
    // the first fully known shape.
    const TypeInfo* partial = nullptr;
    for (auto it = graphs_.rbegin(); it != graphs_.rend(); ++it) {
      bool seen = false;
      for (const auto* list : {&(*it)->inputs, &(*it)->value_info, &(*it)->outputs}) {
        for (const auto& v : *list) {
          if (v.name != name) continue;
          seen = true;
          if (v.type.kind != TypeInfo::Kind::kTensor || !v.type.has_shape) continue;
          if (FullShape(v.type, dims)) return true;
          if (partial == nullptr) partial = &v.type;
        }
      }
      if (seen) break;  // a value of this scope hides outer ones
    }
    *why = partial != nullptr ? "shape of '" + name + "' is " + partial->ToString()
                              : "no shape known for '" + name + "'";
    return false;
  }

 private:
  std::vector<const Graph*> graphs_;
};

int64_t Product(const std::vector<int64_t>& v, size_t from = 0, size_t to = SIZE_MAX) {
  int64_t p = 1;
  for (size_t i = from; i < v.size() && i < to; ++i) {
    if (!MulInto(&p, v[i])) return -1;
  }
  return p;
}

bool IsOp(const Node& n, const char* op) { return n.IsDefaultDomain() && n.op_type == op; }

// MACs of one node at the shapes of `scope` (per run, before the batch divisor). Returns false when the
// node carries no MACs; otherwise sets `macs` (empty when unknown, with `why`).
bool NodeCost(const Node& n, const Scope& scope, std::optional<int64_t>* macs, std::string* why) {
  if (!n.IsDefaultDomain()) return false;
  const std::string& op = n.op_type;
  std::vector<int64_t> a, b;
  auto product = [&](std::initializer_list<int64_t> factors) {
    int64_t p = 1;
    for (int64_t f : factors) {
      if (f < 0 || !MulInto(&p, f)) {
        *why = "count overflows or has a negative dimension";
        return;
      }
    }
    *macs = p;
  };
  if (op == "Conv" || op == "ConvInteger" || op == "QLinearConv") {
    const size_t w = op == "QLinearConv" ? 3 : 1;
    if (n.inputs.size() <= w || n.outputs.empty()) return true;
    if (!scope.Shape(n.inputs[0], &a, why) || !scope.Shape(n.inputs[w], &b, why)) return true;
    if (b.size() < 3 || a.size() != b.size()) {
      *why = "input and weight ranks do not match";
      return true;
    }
    // Output size per spatial axis from the attributes (the ONNX formulas), so that a Conv whose output
    // is a graph output declared with a symbolic batch still counts.
    const size_t k = b.size() - 2;
    const std::vector<int64_t> strides = n.AttrInts("strides", std::vector<int64_t>(k, 1));
    const std::vector<int64_t> dilations = n.AttrInts("dilations", std::vector<int64_t>(k, 1));
    const std::vector<int64_t> pads = n.AttrInts("pads", std::vector<int64_t>(2 * k, 0));
    const std::string auto_pad = n.AttrString("auto_pad", "NOTSET");
    if (strides.size() != k || dilations.size() != k || pads.size() != 2 * k) {
      *why = "strides, dilations or pads do not match the kernel's rank";
      return true;
    }
    int64_t out = 1;
    for (size_t i = 0; i < k; ++i) {
      const int64_t in = a[i + 2], s = strides[i], extent = (b[i + 2] - 1) * dilations[i] + 1;
      if (s <= 0) {
        *why = "stride is not positive";
        return true;
      }
      int64_t o;
      if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") o = (in + s - 1) / s;
      else if (auto_pad == "VALID") o = in >= extent ? (in - extent) / s + 1 : 0;
      else o = in + pads[i] + pads[i + k] >= extent ? (in + pads[i] + pads[i + k] - extent) / s + 1 : 0;
      if (!MulInto(&out, o)) {
        *why = "count overflows";
        return true;
      }
    }
    // Every output element (batch x output channels x positions) sums input channels per group x kernel
    // elements products.
    product({a[0], b[0], out, Product(b, 1)});
    return true;
  }
  if (op == "ConvTranspose") {
    if (n.inputs.size() < 2) return true;
    if (!scope.Shape(n.inputs[0], &a, why) || !scope.Shape(n.inputs[1], &b, why)) return true;
    if (b.size() < 2 || a.size() != b.size()) {
      *why = "input and weight ranks do not match";
      return true;
    }
    // Every input element is scattered into (output channels per group x kernel elements) outputs.
    product({Product(a), Product(b, 1)});
    return true;
  }
  if (op == "Gemm") {
    if (n.inputs.size() < 2) return true;
    if (!scope.Shape(n.inputs[0], &a, why) || !scope.Shape(n.inputs[1], &b, why)) return true;
    if (a.size() != 2 || b.size() != 2) {
      *why = "Gemm operands are not matrices";
      return true;
    }
    const bool ta = n.AttrInt("transA", 0) != 0, tb = n.AttrInt("transB", 0) != 0;
    product({ta ? a[1] : a[0], ta ? a[0] : a[1], tb ? b[0] : b[1]});
    return true;
  }
  if (op == "MatMul" || op == "MatMulInteger" || op == "QLinearMatMul") {
    const size_t ib = op == "QLinearMatMul" ? 3 : 1;
    if (n.inputs.size() <= ib) return true;
    if (!scope.Shape(n.inputs[0], &a, why) || !scope.Shape(n.inputs[ib], &b, why)) return true;
    if (a.empty() || b.empty()) {
      *why = "MatMul of a scalar";
      return true;
    }
    // numpy.matmul: a 1-D operand is a row (A) or a column (B); the batch dimensions broadcast.
    if (a.size() == 1) a.insert(a.begin(), 1);
    if (b.size() == 1) b.push_back(1);
    const size_t rank = std::max(a.size(), b.size());
    int64_t batch = 1;
    for (size_t i = 2; i < rank; ++i) {
      const int64_t da = i < a.size() ? a[a.size() - 1 - i] : 1, db = i < b.size() ? b[b.size() - 1 - i] : 1;
      if (da != db && da != 1 && db != 1) {
        *why = "batch dimensions do not broadcast";
        return true;
      }
      if (!MulInto(&batch, std::max(da, db))) {
        *why = "count overflows";
        return true;
      }
    }
    // Output elements (batch x M x N) x the reduction length K.
    product({batch, a[a.size() - 2], a.back(), b.back()});
    return true;
  }
  if (op == "LSTM" || op == "GRU" || op == "RNN") {
    if (n.inputs.size() < 3) return true;
    if (!scope.Shape(n.inputs[0], &a, why) || !scope.Shape(n.inputs[1], &b, why)) return true;
    if (a.size() != 3 || b.size() != 3) {
      *why = "X or W is not of rank 3";
      return true;
    }
    const bool batch_first = n.AttrInt("layout", 0) != 0;
    const int64_t seq = batch_first ? a[1] : a[0], batch = batch_first ? a[0] : a[1];
    const int64_t dirs = b[0], gates_hidden = b[1], input = b[2];
    const int64_t gates = op == "LSTM" ? 4 : op == "GRU" ? 3 : 1;
    const int64_t hidden = gates_hidden / gates;
    // Per step and direction: W x_t (gates*hidden x input) and R h_{t-1} (gates*hidden x hidden).
    product({seq, dirs, batch, gates_hidden, input + hidden});
    return true;
  }
  if (op == "Einsum") {
    std::string eq;
    for (char c : n.AttrString("equation", "")) {
      if (c != ' ') eq += c;
    }
    const size_t arrow = eq.find("->");
    const std::string lhs = eq.substr(0, arrow);
    std::vector<std::string> terms;
    size_t start = 0;
    for (size_t i = 0; i <= lhs.size(); ++i) {
      if (i == lhs.size() || lhs[i] == ',') {
        terms.push_back(lhs.substr(start, i - start));
        start = i + 1;
      }
    }
    if (terms.size() != 2 || n.inputs.size() != 2) return false;  // one operand: no products
    if (eq.find('.') != std::string::npos) {
      *why = "Einsum with an ellipsis";
      return true;
    }
    std::map<char, int64_t> sizes;
    for (size_t t = 0; t < 2; ++t) {
      if (!scope.Shape(n.inputs[t], &a, why)) return true;
      if (a.size() != terms[t].size()) {
        *why = "Einsum term '" + terms[t] + "' does not match the operand's rank";
        return true;
      }
      for (size_t i = 0; i < a.size(); ++i) sizes[terms[t][i]] = a[i];
    }
    int64_t p = 1;
    for (const auto& kv : sizes) {
      if (!MulInto(&p, kv.second)) {
        *why = "count overflows";
        return true;
      }
    }
    *macs = p;
    return true;
  }
  return false;
}

std::string NodeLabel(const Node& n, size_t index) {
  return n.name.empty() ? "#" + std::to_string(index) + " " + n.op_type : n.name;
}

void SetCounted(std::vector<NodeMacs>* nodes, bool counted) {
  for (auto& e : *nodes) e.counted = e.counted && counted;
}

int64_t KnownSum(const std::vector<NodeMacs>& nodes) {
  int64_t s = 0;
  for (const auto& e : nodes) {
    if (e.counted && e.macs) s += *e.macs;
  }
  return s;
}

// `iterations`: how often the graph runs per run of the model (empty: unknown, with `why`).
void CountGraph(const Graph& g, const Scope& outer, const std::string& path, std::optional<int64_t> iterations,
                const std::string& iterations_why, std::vector<NodeMacs>* out) {
  const Scope scope = outer.Enter(g);
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    const std::string label = NodeLabel(n, i);
    std::optional<int64_t> macs;
    std::string why;
    if (NodeCost(n, scope, &macs, &why)) {
      NodeMacs e{label, n.op_type, path, std::nullopt, why, true};
      if (macs && iterations) {
        int64_t v = *macs;
        if (MulInto(&v, *iterations)) e.macs = v;
        else e.why = "count overflows";
      } else if (macs) {
        e.why = iterations_why;
      } else if (why.empty()) {
        e.why = "missing inputs";
      }
      out->push_back(e);
    }
    const std::string sub = (path.empty() ? "" : path + "/") + label;
    if (IsOp(n, "If")) {
      std::vector<NodeMacs> then_nodes, else_nodes;
      for (const auto& a : n.attributes) {
        if (a.graphs.empty()) continue;
        if (a.name == "then_branch") CountGraph(a.graphs[0], scope, sub + "/then_branch", iterations, iterations_why, &then_nodes);
        if (a.name == "else_branch") CountGraph(a.graphs[0], scope, sub + "/else_branch", iterations, iterations_why, &else_nodes);
      }
      // Only one branch runs: count the larger one (then_branch on a tie).
      const bool then_larger = KnownSum(then_nodes) >= KnownSum(else_nodes);
      SetCounted(then_larger ? &else_nodes : &then_nodes, false);
      out->insert(out->end(), then_nodes.begin(), then_nodes.end());
      out->insert(out->end(), else_nodes.begin(), else_nodes.end());
      continue;
    }
    for (const auto& a : n.attributes) {
      for (const auto& body : a.graphs) {
        std::optional<int64_t> inner = iterations;
        std::string inner_why = iterations_why;
        int64_t trips = -1;
        if (IsOp(n, "Loop")) {
          const Tensor* m = n.inputs.empty() || n.inputs[0].empty() ? nullptr : scope.Constant(n.inputs[0]);
          if (m != nullptr && m->numel() == 1 && m->dtype() == DType::kInt64) trips = m->data<int64_t>()[0];
          if (trips < 0) inner_why = "trip count of Loop " + label + " is not a constant";
        } else if (IsOp(n, "Scan")) {
          const int64_t k = n.AttrInt("num_scan_inputs", 0);
          const std::vector<int64_t> axes = n.AttrInts("scan_input_axes", {});
          std::vector<int64_t> dims;
          std::string w;
          if (k > 0 && static_cast<size_t>(k) <= n.inputs.size() &&
              scope.Shape(n.inputs[n.inputs.size() - static_cast<size_t>(k)], &dims, &w)) {
            int64_t axis = axes.empty() ? 0 : axes[0];
            if (axis < 0) axis += static_cast<int64_t>(dims.size());
            if (axis >= 0 && axis < static_cast<int64_t>(dims.size())) trips = dims[static_cast<size_t>(axis)];
          }
          if (trips < 0) inner_why = "scan length of Scan " + label + " is not known";
        } else {
          trips = 1;  // other ops with a graph attribute: once
        }
        if (trips < 0) {
          inner.reset();
        } else if (inner) {
          int64_t v = *inner;
          if (MulInto(&v, trips)) inner = v;
          else inner.reset();
        }
        CountGraph(body, scope, sub + "/" + a.name, inner, inner_why, out);
      }
    }
  }
}

}  // namespace

MacsCount CountMacs(const Model& model) {
  Model copy = model;
  MacsCount result;
  // Per sample: a free batch axis becomes 1 before inference; a fixed batch on axis 0 is divided out.
  // An input that is not a tensor (untyped, a sequence) leaves no batch layout to divide out: the MACs
  // are then counted as the shapes stand (a batch dimension named like one is still set to 1 below).
  std::vector<InputSpec> specs;
  try {
    specs = ModelInputSpecs(copy);
  } catch (const Error&) {
    specs.clear();
  }
  const BatchLayout layout = InferBatchLayout(specs);
  // A dimension named like a batch ("batch", "batch_size", "N_batch") is the batch wherever it is, also
  // where the layout rule would pick another axis (a single LSTM input [seq,batch,features]).
  auto batch_named = [](const Dim& d) {
    std::string p = d.param;
    for (auto& ch : p) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    return !d.is_fixed() && p.find("batch") != std::string::npos;
  };
  bool named = false;
  for (auto& v : copy.graph.inputs) {
    for (auto& d : v.type.shape) {
      if (batch_named(d)) {
        d = Dim::Fixed(1);
        named = true;
      }
    }
  }
  for (auto& v : copy.graph.outputs) {
    for (auto& d : v.type.shape) {
      if (batch_named(d)) d = Dim::Fixed(1);
    }
  }
  bool axis0 = !named;
  for (size_t i = 0; !named && i < specs.size() && i < layout.input_axes.size(); ++i) {
    const int axis = layout.input_axes[i];
    if (axis > 0) axis0 = false;
    if (axis < 0) continue;
    for (auto& v : copy.graph.inputs) {
      if (v.name != specs[i].name || !v.type.has_shape) continue;
      if (static_cast<size_t>(axis) < v.type.shape.size() && !v.type.shape[static_cast<size_t>(axis)].is_fixed()) {
        v.type.shape[static_cast<size_t>(axis)] = Dim::Fixed(1);
      }
    }
  }
  if (!layout.batch_dim.empty()) {
    for (auto& v : copy.graph.outputs) {
      for (auto& d : v.type.shape) {
        if (d.param == layout.batch_dim) d = Dim::Fixed(1);
      }
    }
  }
  if (layout.fixed_batch > 1 && axis0) result.batch_divisor = layout.fixed_batch;
  InferShapes(copy);
  CountGraph(copy.graph, Scope(std::vector<const Graph*>{}), "", int64_t{1}, "", &result.nodes);
  for (auto& e : result.nodes) {
    if (e.macs) *e.macs /= result.batch_divisor;
    if (!e.counted) continue;
    if (e.macs) result.total += *e.macs;
    else ++result.unknown_nodes;
  }
  return result;
}

int64_t CountParameters(const Model& model) {
  int64_t n = 0;
  ForEachGraph(model.graph, [&](const Graph& g) {
    for (const auto& t : g.initializers) n += t.numel();
    for (const auto& s : g.sparse_initializers) n += s.values.numel();
    for (const auto& node : g.nodes) {
      if (node.op_type != "Constant" || !node.IsDefaultDomain()) continue;
      for (const auto& a : node.attributes) {
        for (const auto& t : a.tensors) n += t.numel();
        for (const auto& s : a.sparse_tensors) n += s.values.numel();
        if (a.name == "value_float" || a.name == "value_int" || a.name == "value_string") n += 1;
        if (a.name == "value_floats") n += static_cast<int64_t>(a.floats.size());
        if (a.name == "value_ints") n += static_cast<int64_t>(a.ints.size());
        if (a.name == "value_strings") n += static_cast<int64_t>(a.strings.size());
      }
    }
  });
  return n;
}

}  // namespace compress
