// Structural checks of the IR, run after loading and after every pass.
#pragma once

#include <string>
#include <vector>

#include "compress/ir/graph.h"

namespace compress {

// Throws Error(kInvalidInput) naming the culprit when the model is not well formed:
//  - no opset import at all, or nodes of the default domain without an import for it;
//  - a value name produced twice (graph inputs, initializers and node outputs share one namespace;
//    an initializer may also be listed as a graph input);
//  - a node input that no node, initializer, graph input or enclosing scope produces;
//  - a graph output that nothing produces;
//  - a cycle among the nodes;
//  - an unknown element type in an initializer, a Constant tensor or a declared value type.
// Subgraphs (If/Loop/Scan bodies) are checked with the names of their enclosing scopes visible.
void VerifyModel(const Model& model);
void VerifyGraph(const Graph& graph, const std::vector<std::string>& outer_scope = {});

// Node order in which every node comes after the producers of its inputs. Keeps the existing order
// wherever it is already valid (stable), so sorting a sorted graph is a no-op. Throws on a cycle,
// naming a node on it.
std::vector<size_t> TopologicalOrder(const Graph& graph);
void TopologicalSort(Graph& graph);
bool IsTopologicallySorted(const Graph& graph);

}  // namespace compress
