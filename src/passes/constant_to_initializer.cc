// constant_to_initializer: Constant nodes become initializers of the graph they are in.
//
//   Before:  Constant(value=W) -> w        x, w -> MatMul -> y
//   After:   initializer w = W             x, w -> MatMul -> y
//
// A Constant node and an initializer of the same name give every reader the same tensor, so no result
// changes. value_float(s) / value_int(s) / value_string(s) are the scalar or 1-D tensor they denote;
// sparse_value becomes a sparse initializer. Before IR version 4 an initializer must also be a graph
// input, so one is declared for it; in subgraphs of such models (whose inputs are fixed by their
// If/Loop/Scan node) Constant nodes stay, and so do sparse ones, which cannot be graph inputs.

#include "compress/passes/builders.h"
#include "pass_util.h"

namespace compress {

namespace {

using passes::AddInitializer;
using passes::CanAddInitializers;
using passes::ConstantNodeValue;
using passes::IsOp;

const Attribute* SparseValue(const Node& n) {
  const Attribute* a = n.FindAttr("sparse_value");
  return a != nullptr && a->ref_attr_name.empty() && !a->sparse_tensors.empty() ? a : nullptr;
}

class ConstantToInitializerPass : public Pass {
 public:
  void Run(Model& model, PassContext& ctx) override {
    int64_t kept_in_subgraphs = 0;
    ForEachGraph(model.graph, [&](Graph& g) {
      const bool can_add = CanAddInitializers(model, g);
      std::vector<Node> kept;
      kept.reserve(g.nodes.size());
      for (auto& n : g.nodes) {
        if (!IsOp(n, "Constant") || n.outputs.size() != 1 || n.outputs[0].empty()) {
          kept.push_back(std::move(n));
          continue;
        }
        if (!can_add) {
          ++kept_in_subgraphs;
          kept.push_back(std::move(n));
          continue;
        }
        if (const Attribute* sparse = SparseValue(n)) {
          // Sparse initializers cannot be listed as graph inputs, which IR version < 4 would require, and
          // making the tensor dense could take any amount of memory.
          if (model.ir_version < 4) {
            ctx.Note("kept Constant " + n.Describe() +
                     ": a sparse initializer cannot be a graph input before IR version 4");
            kept.push_back(std::move(n));
            continue;
          }
          SparseTensor s = sparse->sparse_tensors[0];
          s.values.set_name(n.outputs[0]);
          g.sparse_initializers.push_back(std::move(s));
          ctx.Count("converted");
          continue;
        }
        std::optional<Tensor> value = ConstantNodeValue(n);
        if (!value) {
          ctx.Note("kept Constant " + n.Describe() +
                   ": no value attribute that can be stored as an initializer");
          kept.push_back(std::move(n));
          continue;
        }
        AddInitializer(model, g, std::move(*value));
        ctx.Count("converted");
      }
      g.nodes = std::move(kept);
    });
    if (kept_in_subgraphs > 0) {
      ctx.Note("kept " + std::to_string(kept_in_subgraphs) +
               " Constant nodes in subgraphs: before IR version 4 initializers must be graph inputs, which a "
               "subgraph cannot add");
    }
  }
};

}  // namespace

std::unique_ptr<Pass> MakeConstantToInitializerPass(const nlohmann::json& /*options*/) {
  return std::make_unique<ConstantToInitializerPass>();
}

}  // namespace compress
