#include "compress/ir/verify.h"

#include <queue>
#include <unordered_map>
#include <unordered_set>

#include "compress/util/error.h"

namespace compress {

namespace {

void CheckDType(DType t, const std::string& what) {
  if (!IsKnownDType(static_cast<int32_t>(t))) {
    ThrowInvalid(what + " has unknown element type " + std::to_string(static_cast<int32_t>(t)));
  }
}

void CheckType(const TypeInfo& type, const std::string& what) {
  switch (type.kind) {
    case TypeInfo::Kind::kNone:
      return;
    case TypeInfo::Kind::kTensor:
    case TypeInfo::Kind::kSparseTensor:
      CheckDType(type.elem_type, what);
      for (const auto& d : type.shape) {
        if (d.value && *d.value < 0) {
          ThrowInvalid(what + " has negative dimension " + std::to_string(*d.value));
        }
      }
      return;
    case TypeInfo::Kind::kMap:
      CheckDType(type.map_key, what + " (map key)");
      [[fallthrough]];
    case TypeInfo::Kind::kSequence:
    case TypeInfo::Kind::kOptional:
      if (type.elem) CheckType(*type.elem, what);
      return;
  }
}

// Dependencies between nodes of one graph, including values captured by their subgraphs.
std::vector<std::vector<size_t>> NodeInputs(const Graph& graph, std::vector<size_t>* indegree) {
  std::unordered_map<std::string, size_t> producer;
  for (size_t i = 0; i < graph.nodes.size(); ++i) {
    for (const auto& o : graph.nodes[i].outputs) {
      if (!o.empty()) producer.emplace(o, i);
    }
  }
  std::vector<std::vector<size_t>> users(graph.nodes.size());
  indegree->assign(graph.nodes.size(), 0);
  for (size_t i = 0; i < graph.nodes.size(); ++i) {
    std::unordered_set<size_t> deps;
    auto add = [&](const std::string& name) {
      if (name.empty()) return;
      auto it = producer.find(name);
      if (it != producer.end()) deps.insert(it->second);
    };
    for (const auto& in : graph.nodes[i].inputs) add(in);
    for (const auto& in : OuterScopeInputs(graph.nodes[i])) add(in);
    for (size_t d : deps) {
      users[d].push_back(i);
      ++(*indegree)[i];
    }
  }
  return users;
}

}  // namespace

std::vector<size_t> TopologicalOrder(const Graph& graph) {
  std::vector<size_t> indegree;
  const auto users = NodeInputs(graph, &indegree);
  // Min-heap on the original index keeps the existing order wherever it is valid.
  std::priority_queue<size_t, std::vector<size_t>, std::greater<size_t>> ready;
  for (size_t i = 0; i < indegree.size(); ++i) {
    if (indegree[i] == 0) ready.push(i);
  }
  std::vector<size_t> order;
  order.reserve(graph.nodes.size());
  while (!ready.empty()) {
    const size_t i = ready.top();
    ready.pop();
    order.push_back(i);
    for (size_t u : users[i]) {
      if (--indegree[u] == 0) ready.push(u);
    }
  }
  if (order.size() != graph.nodes.size()) {
    for (size_t i = 0; i < indegree.size(); ++i) {
      if (indegree[i] != 0) {
        ThrowInvalid("graph '" + graph.name + "' has a cycle through node " + graph.nodes[i].Describe());
      }
    }
  }
  return order;
}

void TopologicalSort(Graph& graph) {
  const auto order = TopologicalOrder(graph);
  std::vector<Node> sorted;
  sorted.reserve(order.size());
  for (size_t i : order) sorted.push_back(std::move(graph.nodes[i]));
  graph.nodes = std::move(sorted);
}

bool IsTopologicallySorted(const Graph& graph) {
  const auto order = TopologicalOrder(graph);
  for (size_t i = 0; i < order.size(); ++i) {
    if (order[i] != i) return false;
  }
  return true;
}

void VerifyGraph(const Graph& graph, const std::vector<std::string>& outer_scope) {
  const std::string where = graph.name.empty() ? std::string("graph") : "graph '" + graph.name + "'";
  std::unordered_set<std::string> outer(outer_scope.begin(), outer_scope.end());
  std::unordered_set<std::string> defined;
  std::unordered_set<std::string> input_names;

  for (const auto& v : graph.inputs) {
    if (v.name.empty()) ThrowInvalid(where + " has an input with an empty name");
    if (!input_names.insert(v.name).second) ThrowInvalid(where + ": input '" + v.name + "' is listed twice");
    CheckType(v.type, "input '" + v.name + "'");
    defined.insert(v.name);
  }
  std::unordered_set<std::string> init_names;
  for (const auto& t : graph.initializers) {
    if (t.name().empty()) ThrowInvalid(where + " has an initializer with an empty name");
    if (!init_names.insert(t.name()).second) {
      ThrowInvalid(where + ": initializer '" + t.name() + "' is defined twice");
    }
    CheckDType(t.dtype(), "initializer '" + t.name() + "'");
    defined.insert(t.name());  // may coincide with a graph input (IR version < 4 style)
  }
  for (const auto& s : graph.sparse_initializers) {
    const std::string& n = s.values.name();
    if (!init_names.insert(n).second) ThrowInvalid(where + ": initializer '" + n + "' is defined twice");
    CheckDType(s.values.dtype(), "sparse initializer '" + n + "'");
    defined.insert(n);
  }
  for (const auto& v : graph.value_info) CheckType(v.type, "value_info '" + v.name + "'");
  for (const auto& v : graph.outputs) CheckType(v.type, "output '" + v.name + "'");

  // Every node output is produced once and never shadows another value of this graph.
  std::unordered_set<std::string> all_produced = defined;
  for (const auto& n : graph.nodes) {
    if (n.op_type.empty()) ThrowInvalid(where + ": a node has no op_type");
    for (const auto& o : n.outputs) {
      if (o.empty()) continue;
      if (!all_produced.insert(o).second) {
        ThrowInvalid(where + ": value '" + o + "' is produced more than once (again by node " + n.Describe() +
                     ")");
      }
    }
  }

  // Every input must come from this graph or an enclosing scope. Order is checked separately (cycles),
  // so that an unsorted but acyclic graph is reported as such rather than as a missing input.
  for (const auto& n : graph.nodes) {
    for (const auto& in : n.inputs) {
      if (!in.empty() && !all_produced.count(in) && !outer.count(in)) {
        ThrowInvalid("node " + n.Describe() + " reads '" + in +
                     "', which no node, initializer or graph input produces");
      }
    }
    for (const auto& a : n.attributes) {
      for (const auto& t : a.tensors) CheckDType(t.dtype(), "attribute '" + a.name + "' of node " + n.Describe());
      if (a.graphs.empty()) continue;
      std::vector<std::string> scope(outer_scope);
      scope.insert(scope.end(), all_produced.begin(), all_produced.end());
      for (const auto& g : a.graphs) VerifyGraph(g, scope);
    }
  }
  for (const auto& v : graph.outputs) {
    if (!all_produced.count(v.name) && !outer.count(v.name)) {
      ThrowInvalid(where + ": output '" + v.name + "' is not produced by any node, initializer or input");
    }
  }
  TopologicalOrder(graph);  // throws on a cycle
}

void VerifyModel(const Model& model) {
  if (model.opset_imports.empty()) ThrowInvalid("model imports no opset");
  if (model.OpsetVersion("") <= 0) {
    ForEachGraph(model.graph, [](const Graph& g) {
      for (const auto& n : g.nodes) {
        if (n.IsDefaultDomain()) {
          ThrowInvalid("node " + n.Describe() + " is in the default ONNX domain, which the model does not import");
        }
      }
    });
  }
  VerifyGraph(model.graph);
}

}  // namespace compress
