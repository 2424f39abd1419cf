// Helpers shared by the clean-up passes: reading constants, adding initializers the way the model's IR
// version wants them, renaming values across a graph and the subgraphs that capture them, fresh names.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "compress/ir/graph.h"

namespace compress::passes {

// A node of the default ONNX domain with this op type.
bool IsOp(const Node& n, const char* op_type);

// The dense tensor a sparse tensor stands for. Throws Error(kInvalidInput) on indices out of range.
Tensor DenseFromSparse(const SparseTensor& s);

// The value of a Constant node (sparse values made dense), named after its output; nullopt when the node
// holds no value attribute this code understands (e.g. a reference to an attribute of a function).
std::optional<Tensor> ConstantNodeValue(const Node& n);

// An initializer that is also listed among the graph inputs is only a default from IR version 4 on: the
// caller may feed another value, so passes must not treat it as a constant. Before IR version 4 every
// initializer had to be listed and runtimes treat them all as weights.
bool IsOverridable(const Model& model, const Graph& graph, const std::string& name);

// Before IR version 4 every initializer must also be a graph input. A subgraph cannot take new inputs
// (its If/Loop/Scan node fixes them), so no initializer can be added there.
bool CanAddInitializers(const Model& model, const Graph& graph);
// Appends `t` to the initializers of `graph` and, before IR version 4, to its inputs.
void AddInitializer(const Model& model, Graph& graph, Tensor t);

// A tensor type with every dimension fixed, as declared for an initializer listed as a graph input.
TypeInfo TensorTypeOf(const Tensor& t);

// Makes every reference to `from` (node inputs, graph outputs, and the same in subgraphs that capture it
// from this scope) refer to `to`. Definitions and value_info are left alone.
void ReplaceUses(Graph& graph, const std::string& from, const std::string& to);
// Renames the value itself too (the node output, initializer or graph input defining it, its value_info),
// then its uses.
void RenameValue(Graph& graph, const std::string& from, const std::string& to);

// Removes these initializers, and, where they are listed as graph inputs too (before IR version 4), those
// input entries.
void EraseInitializers(Graph& graph, const std::unordered_set<std::string>& names);

// Drops value_info entries of these names.
void EraseValueInfo(Graph& graph, const std::unordered_set<std::string>& names);

std::unordered_set<std::string> GraphOutputNames(const Graph& graph);

// How many times each value is read in `graph`: node inputs, captures by subgraphs (once per capturing
// node) and graph outputs.
std::unordered_map<std::string, int> UseCounts(const Graph& graph);

// Makes names that no value or node anywhere in the model uses yet.
class NameGenerator {
 public:
  explicit NameGenerator(const Graph& root);
  // `base` when free, else base_1, base_2, ...; the result is reserved.
  std::string Make(const std::string& base);

 private:
  std::unordered_set<std::string> used_;
};

// A default-domain `op` node named `base`_`op` (made unique by `names`).
Node NamedNode(NameGenerator& names, const std::string& op, std::vector<std::string> inputs,
               std::vector<std::string> outputs, const std::string& base);

// New initializers of a pass that still holds pointers into the graph's initializer list: they wait here
// until Flush(), since adding them at once could move the tensors those pointers point into.
class PendingInitializers {
 public:
  // Keeps `t` under a fresh name made from `base`; returns that name.
  std::string Add(Tensor t, NameGenerator& names, const std::string& base);
  // Adds the waiting tensors to `graph` (see AddInitializer) and forgets them.
  void Flush(const Model& model, Graph& graph);

 private:
  std::vector<Tensor> pending_;
};

// Elements of a numeric tensor (float16 and bfloat16 included) as doubles; nullopt for other types.
std::optional<std::vector<double>> ToDoubles(const Tensor& t);
// Elements of an int32 or int64 tensor; nullopt for other types.
std::optional<std::vector<int64_t>> ToInt64s(const Tensor& t);
// A float32, float64, float16 or bfloat16 tensor holding `values` rounded to that type.
Tensor FromDoubles(DType dtype, std::vector<int64_t> dims, const std::vector<double>& values,
                   std::string name);

}  // namespace compress::passes
