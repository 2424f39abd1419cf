// Static knowledge taken from the ONNX operator schemas: shape/type inference and the type constraints
// of each operator. Passes use it to know the dtype and shape of intermediate values without running
// the model, and to know which inputs of an operator may change element type together.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "compress/ir/dtype.h"
#include "compress/ir/graph.h"

namespace compress {

// Runs ONNX shape inference (with data propagation, so shape sub-graphs over static shapes resolve) and
// replaces value_info of the main graph and of every subgraph with the inferred types of intermediate
// values. Declared graph inputs and outputs are left as they are. A node the inference cannot handle
// leaves its outputs without a type; it is never an error. Returns false (and changes nothing) when the
// inference as a whole fails, e.g. on a model with conflicting declared types, or when the model fails
// VerifyOperators (ONNX's inference functions are not safe on such nodes).
bool InferShapes(Model& model);

// The declared type of a value in `graph`: graph input, graph output or value_info (initializers carry
// their type in the tensor itself). Null when the graph says nothing about it.
const TypeInfo* FindValueType(const Graph& graph, const std::string& name);

// Formal inputs/outputs of an operator and the element types each type parameter allows.
struct OpSignature {
  struct Formal {
    std::string name;
    std::string type_str;  // a type parameter ("T") or a fixed type ("tensor(float)")
    bool optional = false;
    bool variadic = false;
  };
  bool found = false;
  std::vector<Formal> inputs, outputs;
  // Tensor element types allowed for each type string used above (fixed types map to themselves).
  // Non-tensor types (sequences, maps, optionals) are left out.
  std::map<std::string, std::vector<DType>> allowed;

  // Type string of the formal that the node's input / output at `index` binds to (variadic formals
  // repeat the last one). Empty when the index is beyond the formals.
  std::string InputTypeStr(size_t index) const;
  std::string OutputTypeStr(size_t index) const;
  bool Allows(const std::string& type_str, DType t) const;
};

// Schema of `op_type` in `domain` at opset `version` ("" and "ai.onnx" are the same domain).
// found == false for operators the ONNX library does not know (custom domains).
OpSignature LookupSignature(const std::string& domain, const std::string& op_type, int64_t version);

// True when attribute `a` of an `op_type` node holds exactly the value the operator takes when the
// attribute is absent: the schema's declared default, or for the convolution and pooling operators the
// documented implicit ones (strides and dilations all 1, pads and output_padding all 0). Unknown
// operators and attributes without a default give false.
bool IsDefaultAttribute(const std::string& domain, const std::string& op_type, int64_t version,
                        const Attribute& a);

// Checks every node against the ONNX operator schemas, in the main graph and in every subgraph, and
// throws Error(kInvalidInput) with one line naming the node and what was expected vs found:
//  - every opset import of the default domain ("" / "ai.onnx") is a version the schema registry knows (1 to
//    its newest), of ai.onnx.ml at least 1; every node's domain is imported by the model;
//  - for nodes of the default domain and ai.onnx.ml (other domains, model-local functions and ai.onnx.ml
//    imports newer than the registry's pass unchecked): the operator exists at the imported opset; the number of inputs and outputs is within the
//    schema's bounds and no required (single) input or output is given as an empty name; every required
//    attribute is present, no attribute is unknown or given twice, and each has the declared type;
//  - what kernels and passes rely on for convolutions and pooling (Conv, ConvTranspose, ConvInteger,
//    QLinearConv, MaxPool, AveragePool, LpPool): group >= 1 and dividing the channel counts where the
//    shapes are known; kernel_shape, strides and dilations positive, pads non-negative; each of these
//    with one entry per spatial axis (two for pads) when the number of spatial axes is known;
//  - the element type of inputs known before running (initializers, declared graph inputs, Constant
//    outputs) against the schema's type constraints, inputs of one type parameter agreeing, and an
//    initializer's type against a graph input of the same name;
//  - attribute values and constant inputs kernels and passes read (0/1 flags, mode strings, Cast 'to',
//    axis/axes within the known rank, Transpose perm, Reshape/Split/Slice/Pad/Tile/Gather/ConstantOfShape
//    constants, BatchNormalization, Conv bias, Gemm/MatMul inner dimensions, LSTM/GRU/RNN weights), where
//    the shapes involved are known.
void VerifyOperators(const Model& model);

// Operators VerifyOperators passes through without a schema: nodes of domains ONNX does not define
// (com.microsoft and other custom domains), of ai.onnx.ml imports newer than the registry knows, and
// calls of model-local functions. One entry per (domain, op_type), sorted, with the number of nodes
// (subgraphs included). Assumes the model passed VerifyOperators.
struct UncheckedOperator {
  std::string domain;
  std::string op_type;
  int64_t count = 0;
};
std::vector<UncheckedOperator> UncheckedOperators(const Model& model);

// Converts the model's default-domain opset to `version` with the ONNX version converter (adapting
// nodes whose operator changed between the versions). Returns false and leaves the model unchanged when
// the converter cannot do it (unsupported operator or version, models with subgraphs it rejects);
// `why` then says what failed. A model that fails VerifyOperators is never given to the converter (which
// trusts its input): that is a failure too, with the verification's message as `why`.
bool ConvertOpset(Model& model, int64_t version, std::string* why = nullptr);

}  // namespace compress
