// Measured cost of a model without running it: multiply-accumulates (MACs) per sample, per node and in
// total, from the shapes ONNX shape inference finds.
//
// Conventions:
//  - One MAC is one multiplication added into an accumulator of a matrix product or convolution. Counted:
//    Conv, ConvInteger, QLinearConv (output elements x input channels per group x kernel elements),
//    ConvTranspose (input elements x output channels per group x kernel elements), Gemm (M x K x N),
//    MatMul, MatMulInteger, QLinearMatMul (output elements x K, with batch broadcasting), Einsum (the
//    product of the sizes of every distinct index, for one or two operands without "..."), and LSTM / GRU /
//    RNN (sequence length x directions x batch x gates x hidden x (input + hidden); biases and peepholes
//    are element-wise). A QDQ graph counts the same as its float graph: the Conv reading a
//    DequantizeLinear output is that Conv. Element-wise ops, pooling, normalization, Softmax and data
//    movement are not MACs and count 0 (they are not listed). Ops of other domains (com.microsoft
//    Attention, ...) are not counted.
//  - Per sample: before inference, every symbolic dimension whose name contains "batch" is set to 1;
//    without one, the batch axis of every graph input (InferBatchLayout, the rule data folders use) is set
//    to 1 when it is symbolic or unknown. A model that declares a fixed batch N > 1 on
//    axis 0 of every batched input has its counts divided by N (`batch_divisor`); a fixed batch on another
//    axis is left as it is (`batch_divisor` 1).
//  - A node whose shapes are not all known after inference (a symbolic sequence length, an unsupported
//    inference) has an unknown count (`macs` empty, `why` says which value); the total then covers the
//    known nodes only and `unknown_nodes` says how many were left out. Nothing is guessed.
//  - Subgraphs: an If counts its larger branch (by known MACs; the other branch's nodes are listed with
//    `counted` false); a Loop counts its body times a constant trip count (unknown when the trip count is
//    not a constant); a Scan counts its body times the scan length of its first scan input.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "compress/ir/graph.h"

namespace compress {

struct NodeMacs {
  std::string node;      // node name, or "#<index> <op>" for an unnamed node
  std::string op_type;
  std::string graph;     // "" for the main graph, else the path of the subgraph ("If_0/then_branch")
  std::optional<int64_t> macs;  // per sample, times the iterations of enclosing loops; empty when unknown
  std::string why;       // why the count is unknown
  bool counted = true;   // false for the nodes of an If's smaller branch
};

struct MacsCount {
  int64_t total = 0;          // per sample, over counted nodes with a known count
  int64_t unknown_nodes = 0;  // counted nodes whose count is unknown
  int64_t batch_divisor = 1;  // fixed batch divided out (1 when none)
  std::vector<NodeMacs> nodes;  // every MAC-carrying node, in graph order (subgraph nodes after their owner)
};

// Counts the MACs of `model` (shape inference runs on a copy; the model is not changed).
MacsCount CountMacs(const Model& model);

// Elements of every initializer (sparse ones: stored values) and every Constant-node value (tensor or
// value_float(s)/value_int(s)/value_string(s)), in all graphs including subgraphs. Tensor attributes of
// other ops, such as ConstantOfShape's fill value, are not parameters.
int64_t CountParameters(const Model& model);

}  // namespace compress
