// remove_identity: Identity nodes and inference-mode Dropout disappear; their readers read the input.
//
//   Before:  a -> Identity -> b -> Relu          After:  a -> Relu
//   Before:  P -> a -> Identity -> out (output)  After:  P -> out (output)
//
// Identity(x) = x, and Dropout(x) = x when it does not train: before opset 12 Dropout has no
// training input and is the identity at inference; from opset 12 on it is when training_mode is omitted
// or a constant false. The mask output (all ones at inference) has no such replacement, so a Dropout
// whose mask is read stays.
//
// A graph output keeps its name (it is the model's interface): the producer of the input is renamed to
// it instead. That is impossible when the input is itself a graph input, an initializer, a value of an
// enclosing scope or another graph output; the node then stays.

#include "compress/passes/builders.h"
#include "pass_util.h"

namespace compress {

namespace {

using passes::ConstantNodeValue;
using passes::EraseValueInfo;
using passes::IsOp;

// The constant value of `name` in `g`, from an initializer or a Constant node.
std::optional<Tensor> ConstantOf(const Model& model, const Graph& g, const std::string& name) {
  if (const Tensor* t = g.FindInitializer(name)) {
    if (passes::IsOverridable(model, g, name)) return std::nullopt;
    return *t;
  }
  for (const auto& n : g.nodes) {
    // A sparse value is left out: its dense form could be of any size, and training_mode is one bool.
    if (IsOp(n, "Constant") && n.outputs.size() == 1 && n.outputs[0] == name &&
        n.FindAttr("sparse_value") == nullptr) {
      return ConstantNodeValue(n);
    }
  }
  return std::nullopt;
}

bool IsInferenceDropout(const Model& model, const Graph& g, const Node& n,
                        const std::unordered_map<std::string, int>& uses) {
  if (n.outputs.size() > 1 && !n.outputs[1].empty() && uses.count(n.outputs[1])) return false;
  if (n.inputs.size() < 3 || n.inputs[2].empty()) return true;
  const std::optional<Tensor> training = ConstantOf(model, g, n.inputs[2]);
  if (!training || training->dtype() != DType::kBool || training->numel() != 1) return false;
  return *static_cast<const uint8_t*>(training->raw()) == 0;
}

bool DefinedByNode(const Graph& g, const std::string& name) {
  for (const auto& n : g.nodes) {
    for (const auto& o : n.outputs) {
      if (o == name) return true;
    }
  }
  return false;
}

class RemoveIdentityPass : public Pass {
 public:
  void Run(Model& model, PassContext& ctx) override {
    ForEachGraph(model.graph, [&](Graph& g) { RunGraph(model, g, ctx); });
  }

 private:
  static void RunGraph(const Model& model, Graph& g, PassContext& ctx) {
    std::vector<bool> removed(g.nodes.size(), false);
    std::unordered_set<std::string> stale;
    for (size_t i = 0; i < g.nodes.size(); ++i) {
      const Node& n = g.nodes[i];
      const bool identity = IsOp(n, "Identity");
      if (!identity && !IsOp(n, "Dropout")) continue;
      if (n.inputs.empty() || n.inputs[0].empty() || n.outputs.empty() || n.outputs[0].empty()) continue;
      // Renames below change the uses, so they are counted afresh for each candidate.
      if (!identity && !IsInferenceDropout(model, g, n, passes::UseCounts(g))) continue;
      const std::string in = n.inputs[0];
      const std::string out = n.outputs[0];
      const auto outputs = passes::GraphOutputNames(g);
      if (!outputs.count(out)) {
        passes::ReplaceUses(g, out, in);
        stale.insert(out);
      } else {
        if (outputs.count(in) || g.FindInput(in) != nullptr || g.FindInitializer(in) != nullptr ||
            !DefinedByNode(g, in)) {
          continue;
        }
        // The graph output already declares the type; a value_info entry would repeat it under the new
        // name. The node itself reads `in` and would read its own output after the rename, but it is
        // removed right after.
        EraseValueInfo(g, {in});
        passes::RenameValue(g, in, out);
      }
      removed[i] = true;
      ctx.Count("removed");
      if (n.outputs.size() > 1 && !n.outputs[1].empty()) stale.insert(n.outputs[1]);
    }
    std::vector<Node> kept;
    kept.reserve(g.nodes.size());
    for (size_t i = 0; i < g.nodes.size(); ++i) {
      if (!removed[i]) kept.push_back(std::move(g.nodes[i]));
    }
    g.nodes = std::move(kept);
    EraseValueInfo(g, stale);
  }
};

}  // namespace

std::unique_ptr<Pass> MakeRemoveIdentityPass(const nlohmann::json& /*options*/) {
  return std::make_unique<RemoveIdentityPass>();
}

}  // namespace compress
