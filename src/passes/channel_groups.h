// Channel dependency analysis for structured pruning (DepGraph style), on the ONNX graph itself.
//
// Every output channel of a producer (Conv: dim 0 of W; ConvTranspose: dim 1 of W, times group; Gemm and
// MatMul with a constant weight: output features) is an "atom". The analysis walks the graph in
// topological order and tracks, for every value that carries channels, which atom sits at each index of
// its channel axis (-1: an index no producer owns, e.g. a graph input concatenated in, which is never
// removed). Atoms that must be removed together are joined in a union-find: a residual Add/Sub/Mul/Max
// joins the atoms at equal indices, a depthwise or grouped Conv joins a whole block of input channels with
// its block of output channels. A "unit" is such a set of atoms (removed or kept as one); a "group" is the
// set of units tied through one producer's channel space or a residual (ratio and rounding apply per
// group). Concat maps channels by offset (and Split, with constant sizes that are rewritten, the other way),
// Flatten or Reshape into Gemm/MatMul repeats a channel's atom over its block of features.
//
// Attention heads: a Reshape that splits the last (channel) axis of a projection's output into [..., H, D]
// or, for a fused Q/K/V projection, [..., S, H, D] starts a head-split value, tracked with its part, head
// and feature axes through Transpose, Gather or Split/Slice(+Squeeze) of the parts, scalar scaling, Softmax over
// another axis, and the two attention MatMuls (Q.K^T contracts the features of a head: Q's and K's columns
// of head h are one unit; scores.V carries V's head h back); a Reshape merging [..., H, D] into H*D hands
// the features to the output projection as ordinary channels. Both Reshape shapes get their head count or
// width rewritten, whether the shape is a constant or a Concat of constant and computed pieces (the piece
// holding the count must be a constant). Anything else reading a head-split value blocks the heads.
//
// Every tensor and attribute that depends on a channel count is recorded as an edit: a weight, bias or
// normalization parameter sliced along one dim, a Conv group attribute, a Reshape shape entry. Anything not
// understood (a channel axis reaching a graph output or a subgraph, an unknown op, a Reshape whose shape
// cannot be rewritten, a weight read in another layout or by another reader) blocks the groups involved,
// with a reason naming the node.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "compress/ir/graph.h"

namespace compress::passes {

// A tensor (initializer) cut along one dim: index i is kept unless atoms[i] >= 0 and that atom is removed.
struct SliceEdit {
  std::string tensor;
  int64_t dim = 0;
  std::vector<int> atoms;
  size_t reader = 0;  // index of the node reading it
};

// An integer attribute (Conv/ConvTranspose "group") scaled by the share of kept input channels, or a
// Reshape shape entry set to the number of kept indices among `atoms`. A shape piece is an entry of a
// constant that input `input` of node `node` reads (a Reshape's shape, or one piece of the Concat that
// builds it): that node gets a private copy of the constant with the entry rewritten, so a constant
// shared with other readers stays as it is for them.
struct CountEdit {
  enum class Kind { kGroupAttr, kShapeEntry, kShapePiece };
  Kind kind = Kind::kGroupAttr;
  size_t node = 0;          // index into graph.nodes (group attribute; the reader of a shape piece)
  size_t input = 0;         // shape piece: input of `node` reading `tensor`
  std::string tensor;       // shape initializer (shape entry, shape piece)
  int64_t index = 0;        // entry of the shape tensor
  int64_t original = 0;     // group: original value
  std::vector<int> atoms;   // indices counted
};

// One producer whose output channels are atoms.
struct Producer {
  size_t node = 0;
  std::string weight;
  int64_t out_dim = 0;       // dim of the weight holding output channels
  std::vector<int> atoms;    // per output channel
  std::string bn_scale;      // scale of a BatchNormalization reading this output directly, if any
};

struct ChannelGroup {
  std::vector<std::vector<int>> units;  // atoms of each unit, sorted; units sorted by their first atom
  std::vector<size_t> producers;        // indices into ChannelAnalysis::producers
  bool prunable = true;
  std::string reason;  // why not, naming the node
  // The units are attention heads: the Q/K/V projection columns of one head (split off by a Reshape to
  // [..., H, D] or [..., 3, H, D]) and the rows of the output projection that read it back.
  bool heads = false;
};

struct ChannelAnalysis {
  int atom_count = 0;
  std::vector<Producer> producers;
  std::vector<SliceEdit> slices;
  std::vector<CountEdit> counts;
  std::vector<ChannelGroup> groups;
  std::vector<int> group_of_atom;  // atom -> index into groups
};

// Analyses the main graph of `model` (which must verify). Values are typed by shape inference on a copy.
ChannelAnalysis AnalyzeChannels(const Model& model);

// Applies the edits for the atoms flagged in `removed` (size atom_count) to `model`: slices tensors, sets
// group attributes and shape entries, and drops the value_info of the main graph (shapes changed).
// Throws Error naming the tensor when an edit does not fit the tensor it names.
void ApplyChannelRemoval(Model& model, const ChannelAnalysis& analysis, const std::vector<bool>& removed);

}  // namespace compress::passes
