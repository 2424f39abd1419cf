// remove_dead_nodes: nodes no graph output depends on, and initializers nothing reads, are removed.
//
//   Before:  x -> Relu -> y (output)     x -> Sigmoid -> s (read by nobody)     W (read by nobody)
//   After:   x -> Relu -> y (output)
//
// ONNX operators have no side effects, so a node whose outputs no graph output needs (directly, through
// other nodes, or through a subgraph capturing them) cannot change any result. Liveness runs backwards
// over the topological order, so all readers of a value are decided before its producer; a live node's
// subgraphs are cleaned first, since only what they still capture keeps outer values alive.
//
// Graph inputs are the model's interface and stay, including (from IR version 4 on) an initializer
// listed as one, which is the default of a replaceable input. Before IR version 4 every initializer
// was listed as an input without being replaceable; an unused one leaves that list too.

#include <algorithm>

#include "compress/ir/verify.h"
#include "compress/passes/builders.h"
#include "pass_util.h"

namespace compress {

namespace {

class RemoveDeadNodesPass : public Pass {
 public:
  void Run(Model& model, PassContext& ctx) override { RunGraph(model, model.graph, ctx); }

 private:
  static void RunGraph(const Model& model, Graph& g, PassContext& ctx) {
    std::unordered_set<std::string> needed = passes::GraphOutputNames(g);
    std::vector<bool> dead(g.nodes.size(), false);
    const std::vector<size_t> order = TopologicalOrder(g);
    for (auto it = order.rbegin(); it != order.rend(); ++it) {
      Node& n = g.nodes[*it];
      const bool live = std::any_of(n.outputs.begin(), n.outputs.end(),
                                    [&](const std::string& o) { return !o.empty() && needed.count(o); });
      if (!live) {
        dead[*it] = true;
        continue;
      }
      for (auto& a : n.attributes) {
        for (auto& sub : a.graphs) RunGraph(model, sub, ctx);
      }
      for (const auto& in : n.inputs) needed.insert(in);
      for (const auto& in : OuterScopeInputs(n)) needed.insert(in);
    }

    std::unordered_set<std::string> gone;
    std::vector<Node> kept;
    for (size_t i = 0; i < g.nodes.size(); ++i) {
      if (!dead[i]) {
        kept.push_back(std::move(g.nodes[i]));
        continue;
      }
      for (const auto& o : g.nodes[i].outputs) gone.insert(o);
      ctx.Count("removed_nodes");
    }
    g.nodes = std::move(kept);

    auto unused = [&](const std::string& name) {
      return !needed.count(name) && !passes::IsOverridable(model, g, name);
    };
    std::unordered_set<std::string> unlisted;  // initializers to take out of graph.inputs too
    auto& inits = g.initializers;
    inits.erase(std::remove_if(inits.begin(), inits.end(),
                               [&](const Tensor& t) {
                                 if (!unused(t.name())) return false;
                                 gone.insert(t.name());
                                 unlisted.insert(t.name());
                                 ctx.Count("removed_initializers");
                                 return true;
                               }),
                inits.end());
    auto& sparse = g.sparse_initializers;
    sparse.erase(std::remove_if(sparse.begin(), sparse.end(),
                                [&](const SparseTensor& s) {
                                  if (!unused(s.values.name())) return false;
                                  gone.insert(s.values.name());
                                  ctx.Count("removed_initializers");
                                  return true;
                                }),
                 sparse.end());
    if (!unlisted.empty()) {
      auto& in = g.inputs;
      in.erase(std::remove_if(in.begin(), in.end(),
                              [&](const ValueInfo& v) { return unlisted.count(v.name) > 0; }),
               in.end());
    }
    gone.erase(std::string());
    passes::EraseValueInfo(g, gone);
  }
};

}  // namespace

std::unique_ptr<Pass> MakeRemoveDeadNodesPass(const nlohmann::json& /*options*/) {
  return std::make_unique<RemoveDeadNodesPass>();
}

}  // namespace compress
