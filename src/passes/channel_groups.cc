// Channel dependency analysis for structured pruning: see channel_groups.h.

#include "channel_groups.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <optional>
#include <set>
#include <tuple>
#include <unordered_map>
#include <unordered_set>

#include "compress/io/schema.h"
#include "compress/ir/verify.h"
#include "compress/util/error.h"
#include "pass_util.h"

namespace compress::passes {

namespace {

// The channels a value carries: its rank, the channel axis and the atom at each index of that axis.
struct Chan {
  int64_t rank = 0;
  int64_t axis = 0;
  std::vector<int> atoms;
};

// A value whose channels are split into attention heads (see channel_groups.h). The atoms are kept in
// the order [part][head][feature] whatever the positions of those axes.
struct HeadChan {
  int64_t rank = 0;
  int64_t part_axis = -1;  // axis of the S parts of a fused Q/K/V projection; -1 once they are separated
  int64_t head_axis = 0;
  int64_t dim_axis = -1;   // axis of a head's D features; -1 for attention scores (features contracted)
  int64_t parts = 1, heads = 0, dim = 1;
  std::vector<int> atoms;  // parts * heads * dim; attention scores: one atom per head
};

// Largest channel axis (after Flatten/Reshape expansion) the analysis maps index by index.
constexpr int64_t kMaxMapped = int64_t{1} << 24;

class UnionFind {
 public:
  int Add() {
    parent_.push_back(static_cast<int>(parent_.size()));
    return parent_.back();
  }
  int Find(int a) {
    while (parent_[static_cast<size_t>(a)] != a) {
      parent_[static_cast<size_t>(a)] = parent_[static_cast<size_t>(parent_[static_cast<size_t>(a)])];
      a = parent_[static_cast<size_t>(a)];
    }
    return a;
  }
  void Union(int a, int b) {
    a = Find(a);
    b = Find(b);
    if (a != b) parent_[static_cast<size_t>(std::max(a, b))] = std::min(a, b);
  }

 private:
  std::vector<int> parent_;
};

const std::unordered_set<std::string>& UnaryOps() {
  static const std::unordered_set<std::string> ops = {
      "Relu",     "LeakyRelu", "Sigmoid", "Tanh",  "Elu",        "Selu",     "Celu",  "HardSigmoid",
      "HardSwish", "Softplus", "Softsign", "Gelu", "Erf",        "Exp",      "Log",   "Abs",
      "Neg",      "Sqrt",      "Reciprocal", "Identity", "Dropout", "Cast", "Clip",  "Floor",
      "Ceil",     "Round",     "Sin",     "Cos",   "ThresholdedRelu", "Mish", "Sign", "Shrink"};
  return ops;
}

const std::unordered_set<std::string>& BinaryOps() {
  static const std::unordered_set<std::string> ops = {"Add", "Sub", "Mul", "Div", "Max", "Min",
                                                      "Sum", "Mean", "Pow", "PRelu"};
  return ops;
}

const std::unordered_set<std::string>& PoolOps() {
  static const std::unordered_set<std::string> ops = {"MaxPool",           "AveragePool",   "LpPool",
                                                      "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"};
  return ops;
}

const std::unordered_set<std::string>& ReduceOps() {
  static const std::unordered_set<std::string> ops = {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum",
                                                      "ReduceProd", "ReduceL1",  "ReduceL2",  "ReduceLogSumExp",
                                                      "ReduceSumSquare", "ReduceLogSum"};
  return ops;
}

class Analyzer {
 public:
  explicit Analyzer(const Model& model) : model_(model), g_(model.graph) {
    Model copy = model;
    bool ok = false;
    try {
      ok = InferShapes(copy);
    } catch (const std::exception&) {
      ok = false;
    }
    auto note = [&](const ValueInfo& v) {
      if (v.type.kind != TypeInfo::Kind::kTensor || !v.type.has_shape) return;
      std::vector<int64_t> dims;
      for (const auto& d : v.type.shape) dims.push_back(d.is_fixed() ? *d.value : -1);
      shapes_[v.name] = dims;
    };
    for (const auto& v : g_.inputs) note(v);
    for (const auto& v : g_.outputs) note(v);
    for (const auto& v : g_.value_info) note(v);
    if (ok) {
      for (const auto& v : copy.graph.value_info) note(v);
    }
    for (const auto& t : g_.initializers) shapes_[t.name()] = t.dims();
    for (size_t i = 0; i < g_.nodes.size(); ++i) {
      for (const auto& o : g_.nodes[i].outputs) node_of_value_[o] = i;
    }
    uses_ = UseCounts(g_);
  }

  ChannelAnalysis Run() {
    for (size_t idx : TopologicalOrder(g_)) Visit(idx);
    for (const auto& out : g_.outputs) {
      if (const Chan* c = Get(out.name)) Block(*c, "channels reach graph output '" + out.name + "'");
      if (const HeadChan* h = GetHeads(out.name)) Block(h->atoms, "attention heads reach graph output '" + out.name + "'");
    }
    CheckEdits();
    Finish();
    return std::move(out_);
  }

 private:
  // ---- helpers ------------------------------------------------------------------------------------------
  const Chan* Get(const std::string& name) const {
    auto it = chans_.find(name);
    return it == chans_.end() ? nullptr : &it->second;
  }
  std::optional<std::vector<int64_t>> Shape(const std::string& name) const {
    auto it = shapes_.find(name);
    if (it == shapes_.end()) return std::nullopt;
    return it->second;
  }
  int64_t Rank(const std::string& name) const {
    if (const Chan* c = Get(name)) return c->rank;
    auto s = Shape(name);
    return s ? static_cast<int64_t>(s->size()) : -1;
  }
  const Tensor* Const(const std::string& name) const {
    if (name.empty() || IsOverridable(model_, g_, name)) return nullptr;
    return g_.FindInitializer(name);
  }
  std::optional<std::vector<int64_t>> ConstInts(const std::string& name) const {
    const Tensor* t = Const(name);
    if (t == nullptr) return std::nullopt;
    return ToInt64s(*t);
  }
  int NewAtom() {
    fine_.Add();
    coarse_.Add();
    return out_.atom_count++;
  }
  void Join(int a, int b) {
    if (a < 0 || b < 0) return;
    fine_.Union(a, b);
    coarse_.Union(a, b);
  }
  void Block(const std::vector<int>& atoms, const std::string& why) {
    for (int a : atoms) {
      if (a >= 0) blocked_.push_back({a, why});
    }
  }
  void Block(const Chan& c, const std::string& why) { Block(c.atoms, why); }
  void BlockInputs(const Node& n, const std::string& why) {
    for (const auto& in : n.inputs) {
      if (const Chan* c = Get(in)) Block(*c, n.Describe() + ": " + why);
      if (const HeadChan* h = GetHeads(in)) Block(h->atoms, n.Describe() + ": " + why);
    }
  }
  void Slice(const std::string& tensor, int64_t dim, std::vector<int> atoms, size_t reader) {
    out_.slices.push_back({tensor, dim, std::move(atoms), reader});
  }
  void SetOut(const Node& n, size_t k, Chan c) {
    if (k < n.outputs.size() && !n.outputs[k].empty()) chans_[n.outputs[k]] = std::move(c);
  }
  std::vector<int> FreshAtoms(int64_t count) {
    std::vector<int> atoms;
    for (int64_t i = 0; i < count; ++i) atoms.push_back(NewAtom());
    for (size_t i = 1; i < atoms.size(); ++i) coarse_.Union(atoms[0], atoms[i]);
    return atoms;
  }
  static int64_t NormAxis(int64_t axis, int64_t rank) { return axis < 0 ? axis + rank : axis; }

  // ---- the walk -----------------------------------------------------------------------------------------
  void Visit(size_t idx) {
    const Node& n = g_.nodes[idx];
    bool traced = false;
    bool heads = false;
    for (const auto& in : n.inputs) heads = heads || GetHeads(in) != nullptr;
    for (const auto& in : n.inputs) traced = traced || Get(in) != nullptr || heads;
    for (const auto& a : n.attributes) {
      if (a.type == AttrType::kGraph || a.type == AttrType::kGraphs) {
        for (const auto& captured : OuterScopeInputs(n)) {
          if (const Chan* c = Get(captured)) Block(*c, n.Describe() + ": read inside a subgraph");
          if (const HeadChan* h = GetHeads(captured)) Block(h->atoms, n.Describe() + ": read inside a subgraph");
        }
        BlockInputs(n, "control flow");
        return;
      }
    }
    const std::string& op = n.op_type;
    if (!n.IsDefaultDomain()) {
      if (traced) BlockInputs(n, "operator of domain '" + n.domain + "' not understood");
      return;
    }
    if (heads) return VisitHeads(idx);
    if (op == "Conv" || op == "ConvTranspose" || op == "Gemm" || op == "MatMul") {
      if (n.inputs.size() < 2 || n.outputs.empty() || n.outputs[0].empty() || n.inputs[0].empty()) {
        if (traced) BlockInputs(n, "unexpected inputs");
        return;
      }
      if (op == "Gemm") return VisitGemm(idx);
      if (op == "MatMul") return VisitMatMul(idx);
      return VisitConv(idx);
    }
    if (!traced) return;
    const Chan* in0 = n.inputs.empty() ? nullptr : Get(n.inputs[0]);
    if (UnaryOps().count(op)) {
      if (in0 == nullptr) return BlockInputs(n, "channels on a parameter input");
      if (op == "Dropout" && n.outputs.size() > 1 && !n.outputs[1].empty()) {
        return BlockInputs(n, "mask output read");
      }
      return SetOut(n, 0, *in0);
    }
    if (BinaryOps().count(op)) return VisitElementwise(idx);
    if (PoolOps().count(op)) {
      if (in0 == nullptr || in0->axis != 1) return BlockInputs(n, "channels not on axis 1");
      if (n.outputs.size() > 1 && !n.outputs[1].empty()) return BlockInputs(n, "indices output read");
      return SetOut(n, 0, *in0);
    }
    if (op == "BatchNormalization" || op == "InstanceNormalization") {
      if (in0 == nullptr) return BlockInputs(n, "channels on a parameter input");
      return VisitNorm(idx, *in0);
    }
    if (op == "LayerNormalization") return VisitLayerNorm(idx);
    if (op == "Concat") return VisitConcat(idx);
    if (op == "Flatten") return VisitFlatten(idx);
    if (op == "Reshape") return VisitReshape(idx);
    if (op == "Transpose") {
      if (in0 == nullptr) return BlockInputs(n, "unexpected input");
      std::vector<int64_t> perm = n.AttrInts("perm", {});
      if (perm.empty()) {
        for (int64_t i = in0->rank - 1; i >= 0; --i) perm.push_back(i);
      }
      Chan c = *in0;
      for (size_t j = 0; j < perm.size(); ++j) {
        if (perm[j] == in0->axis) c.axis = static_cast<int64_t>(j);
      }
      return SetOut(n, 0, c);
    }
    if (op == "Pad") return VisitPad(idx);
    if (op == "Resize" || op == "Upsample") {
      if (in0 == nullptr) return BlockInputs(n, "channels on a parameter input");
      const size_t scales_at = op == "Resize" ? 2 : 1;
      if (op == "Resize" && n.inputs.size() > 3 && !n.inputs[3].empty()) {
        return BlockInputs(n, "output sizes given explicitly");
      }
      const Tensor* s = scales_at < n.inputs.size() ? Const(n.inputs[scales_at]) : nullptr;
      auto scales = s != nullptr ? ToDoubles(*s) : std::nullopt;
      if (!scales || static_cast<int64_t>(scales->size()) != in0->rank ||
          (*scales)[static_cast<size_t>(in0->axis)] != 1.0) {
        return BlockInputs(n, "scales not constant or not 1 on the channel axis");
      }
      return SetOut(n, 0, *in0);
    }
    if (op == "Softmax" || op == "LogSoftmax" || op == "Hardmax") {
      if (in0 == nullptr) return;
      const int64_t axis = NormAxis(n.AttrInt("axis", -1), in0->rank);
      if (axis == in0->axis || model_.OpsetVersion("") < 13) return BlockInputs(n, "normalizes over channels");
      return SetOut(n, 0, *in0);
    }
    if (op == "Squeeze" || op == "Unsqueeze") return VisitSqueeze(idx);
    if (op == "Split") return VisitSplit(idx);
    if (ReduceOps().count(op)) return VisitReduce(idx);
    BlockInputs(n, "operator " + op + " not understood");
  }

  void VisitConv(size_t idx) {
    const Node& n = g_.nodes[idx];
    const bool transpose = n.op_type == "ConvTranspose";
    const Chan* in = Get(n.inputs[0]);
    const Tensor* w = n.inputs.size() > 1 ? Const(n.inputs[1]) : nullptr;
    if (w == nullptr || w->rank() < 3) {
      if (in != nullptr) BlockInputs(n, "weight not a constant");
      return;
    }
    if (n.inputs.size() > 1) {
      for (size_t k = 1; k < n.inputs.size(); ++k) {
        if (Get(n.inputs[k]) != nullptr) return BlockInputs(n, "channels on a parameter input");
      }
    }
    const int64_t group = n.AttrInt("group", 1);
    if (group < 1 || group > w->dims()[0] || w->dims()[0] == 0 || w->dims()[1] == 0) {
      if (in != nullptr) BlockInputs(n, "group does not divide the channels");
      return;
    }
    const int64_t cin = transpose ? w->dims()[0] : w->dims()[1] * group;
    const int64_t cout = transpose ? w->dims()[1] * group : w->dims()[0];
    if (group < 1 || cin % group != 0 || cout % group != 0) {
      if (in != nullptr) BlockInputs(n, "group does not divide the channels");
      return;
    }
    if (in != nullptr && (in->axis != 1 || static_cast<int64_t>(in->atoms.size()) != cin)) {
      return BlockInputs(n, "input channels do not match the weight");
    }
    const std::string bias = n.inputs.size() > 2 ? n.inputs[2] : std::string();
    std::vector<int> out = FreshAtoms(cout);
    Producer p;
    p.node = idx;
    p.weight = n.inputs[1];
    if (group == 1) {
      // Input channels sit on dim 1 of a Conv weight and on dim 0 of a ConvTranspose weight.
      if (in != nullptr) Slice(n.inputs[1], transpose ? 0 : 1, in->atoms, idx);
      Slice(n.inputs[1], transpose ? 1 : 0, out, idx);
      p.out_dim = transpose ? 1 : 0;
      p.atoms = out;
    } else {
      const int64_t cin_g = cin / group, cout_g = cout / group;
      for (int64_t j = 0; j < group; ++j) {
        const int first = out[static_cast<size_t>(j * cout_g)];
        for (int64_t k = 0; k < cout_g; ++k) Join(first, out[static_cast<size_t>(j * cout_g + k)]);
        if (in != nullptr) {
          for (int64_t k = 0; k < cin_g; ++k) Join(first, in->atoms[static_cast<size_t>(j * cin_g + k)]);
        }
      }
      if (in == nullptr) {
        Block(out, n.Describe() + ": grouped convolution over channels no producer owns");
      }
      if (transpose) {
        // Whole groups go: the rows of W (input channels) of a removed group; dim 1 keeps its size.
        std::vector<int> rows;
        for (int64_t j = 0; j < group; ++j) {
          for (int64_t k = 0; k < cin_g; ++k) rows.push_back(out[static_cast<size_t>(j * cout_g)]);
        }
        Slice(n.inputs[1], 0, rows, idx);
        p.out_dim = 0;
        p.atoms = rows;
      } else {
        Slice(n.inputs[1], 0, out, idx);
        p.out_dim = 0;
        p.atoms = out;
      }
      CountEdit e;
      e.kind = CountEdit::Kind::kGroupAttr;
      e.node = idx;
      e.original = group;
      e.atoms = out;
      out_.counts.push_back(e);
    }
    if (!bias.empty()) {
      if (Const(bias) == nullptr) {
        Block(out, n.Describe() + ": bias not a constant");
      } else {
        Slice(bias, 0, out, idx);
      }
    }
    producer_of_value_[n.outputs[0]] = out_.producers.size();
    out_.producers.push_back(p);
    SetOut(n, 0, Chan{in != nullptr ? in->rank : std::max<int64_t>(Rank(n.inputs[0]), w->rank()), 1, out});
  }

  void VisitGemm(size_t idx) {
    const Node& n = g_.nodes[idx];
    const Chan* in = Get(n.inputs[0]);
    const Tensor* b = n.inputs.size() > 1 ? Const(n.inputs[1]) : nullptr;
    if (b == nullptr || b->rank() != 2 || n.AttrInt("transA", 0) != 0) {
      if (in != nullptr) BlockInputs(n, "weight not a constant matrix, or transA set");
      return;
    }
    if (Get(n.inputs[1]) != nullptr || (n.inputs.size() > 2 && Get(n.inputs[2]) != nullptr)) {
      return BlockInputs(n, "channels on a parameter input");
    }
    const bool trans_b = n.AttrInt("transB", 0) != 0;
    const int64_t kdim = trans_b ? 1 : 0, ndim = trans_b ? 0 : 1;
    if (in != nullptr) {
      if (in->axis != 1 || static_cast<int64_t>(in->atoms.size()) != b->dims()[static_cast<size_t>(kdim)]) {
        return BlockInputs(n, "input features do not match the weight");
      }
      Slice(n.inputs[1], kdim, in->atoms, idx);
    }
    const int64_t nout = b->dims()[static_cast<size_t>(ndim)];
    std::vector<int> out = FreshAtoms(nout);
    Slice(n.inputs[1], ndim, out, idx);
    if (n.inputs.size() > 2 && !n.inputs[2].empty()) {
      const Tensor* c = Const(n.inputs[2]);
      if (c == nullptr) {
        Block(out, n.Describe() + ": C not a constant");
      } else if (c->rank() >= 1 && c->dims().back() == nout && nout > 1) {
        Slice(n.inputs[2], c->rank() - 1, out, idx);
      } else if (c->numel() != 1) {
        Block(out, n.Describe() + ": C not broadcast along the features");
      }
    }
    producer_of_value_[n.outputs[0]] = out_.producers.size();
    out_.producers.push_back(Producer{idx, n.inputs[1], ndim, out, {}});
    SetOut(n, 0, Chan{2, 1, out});
  }

  void VisitMatMul(size_t idx) {
    const Node& n = g_.nodes[idx];
    const Chan* in = Get(n.inputs[0]);
    const Tensor* b = Const(n.inputs[1]);
    if (b == nullptr || b->rank() != 2 || Get(n.inputs[1]) != nullptr) {
      if (in != nullptr || Get(n.inputs[1]) != nullptr) BlockInputs(n, "second input not a constant matrix");
      return;
    }
    const int64_t rank = Rank(n.inputs[0]);
    if (in != nullptr) {
      if (rank < 2 || in->axis != rank - 1 || static_cast<int64_t>(in->atoms.size()) != b->dims()[0]) {
        return BlockInputs(n, "input features do not match the weight");
      }
      Slice(n.inputs[1], 0, in->atoms, idx);
    }
    if (rank < 2) return;  // output channels need a known rank
    std::vector<int> out = FreshAtoms(b->dims()[1]);
    Slice(n.inputs[1], 1, out, idx);
    producer_of_value_[n.outputs[0]] = out_.producers.size();
    out_.producers.push_back(Producer{idx, n.inputs[1], 1, out, {}});
    SetOut(n, 0, Chan{rank, rank - 1, out});
  }

  void VisitElementwise(size_t idx) {
    const Node& n = g_.nodes[idx];
    int64_t out_rank = 0;
    for (const auto& in : n.inputs) {
      const int64_t r = Rank(in);
      if (r < 0) return BlockInputs(n, "rank of input '" + in + "' unknown");
      out_rank = std::max(out_rank, r);
    }
    const Chan* first = nullptr;
    int64_t axis = -1;
    for (const auto& in : n.inputs) {
      const Chan* c = Get(in);
      if (c == nullptr) continue;
      const int64_t a = c->axis + out_rank - c->rank;
      if (first == nullptr) {
        first = c;
        axis = a;
      } else if (a != axis || c->atoms.size() != first->atoms.size()) {
        return BlockInputs(n, "inputs carry channels on different axes");
      }
    }
    Chan out = *first;
    out.rank = out_rank;
    out.axis = axis;
    const int64_t size = static_cast<int64_t>(first->atoms.size());
    for (const auto& in : n.inputs) {
      const Chan* c = Get(in);
      if (c != nullptr) {
        for (size_t i = 0; i < out.atoms.size(); ++i) {
          if ((out.atoms[i] < 0) != (c->atoms[i] < 0)) {
            Block(out.atoms, n.Describe() + ": a channel not owned by a producer on every input");
            Block(c->atoms, n.Describe() + ": a channel not owned by a producer on every input");
          }
          Join(out.atoms[i], c->atoms[i]);
        }
        continue;
      }
      auto shape = Shape(in);
      const int64_t r = Rank(in);
      const int64_t a = axis - (out_rank - r);
      const int64_t d = (a >= 0 && shape) ? (*shape)[static_cast<size_t>(a)] : (a < 0 ? 1 : -1);
      if (d == 1) continue;
      if (d == size && Const(in) != nullptr) {
        Slice(in, a, out.atoms, idx);
        continue;
      }
      return BlockInputs(n, "input '" + in + "' spans the channels but is not a constant");
    }
    SetOut(n, 0, out);
  }

  void VisitNorm(size_t idx, const Chan& in) {
    const Node& n = g_.nodes[idx];
    if (in.axis != 1 || n.inputs.empty() || Get(n.inputs[0]) == nullptr) {
      return BlockInputs(n, "channels not on axis 1");
    }
    const size_t params = n.op_type == "BatchNormalization" ? 5 : 3;
    if (n.inputs.size() < params) return BlockInputs(n, "missing parameters");
    for (size_t k = 1; k < params; ++k) {
      const Tensor* t = Const(n.inputs[k]);
      if (t == nullptr || t->rank() != 1 || t->dims()[0] != static_cast<int64_t>(in.atoms.size())) {
        return BlockInputs(n, "parameter '" + n.inputs[k] + "' not a constant vector over the channels");
      }
    }
    for (size_t k = 1; k < params; ++k) Slice(n.inputs[k], 0, in.atoms, idx);
    for (size_t k = 1; k < n.outputs.size(); ++k) {
      if (!n.outputs[k].empty()) return BlockInputs(n, "training outputs read");
    }
    if (n.op_type == "BatchNormalization") {
      auto it = producer_of_value_.find(n.inputs[0]);
      if (it != producer_of_value_.end()) out_.producers[it->second].bn_scale = n.inputs[1];
    }
    SetOut(n, 0, in);
  }

  void VisitLayerNorm(size_t idx) {
    const Node& n = g_.nodes[idx];
    const Chan* in = Get(n.inputs[0]);
    if (in == nullptr) return BlockInputs(n, "channels on a parameter input");
    for (size_t k = 1; k < n.outputs.size(); ++k) {
      if (!n.outputs[k].empty()) return BlockInputs(n, "mean or inverse deviation output read");
    }
    const int64_t axis = NormAxis(n.AttrInt("axis", -1), in->rank);
    if (in->axis < axis) return SetOut(n, 0, *in);  // normalized over other axes: channels pass through
    if (axis != in->rank - 1 || in->axis != axis) return BlockInputs(n, "normalizes over more than the channels");
    for (size_t k = 1; k < n.inputs.size() && k < 3; ++k) {
      if (n.inputs[k].empty()) continue;
      const Tensor* t = Const(n.inputs[k]);
      if (t == nullptr || t->numel() != static_cast<int64_t>(in->atoms.size()) || t->rank() < 1) {
        return BlockInputs(n, "scale or bias not a constant vector over the channels");
      }
      Slice(n.inputs[k], t->rank() - 1, in->atoms, idx);
    }
    SetOut(n, 0, *in);
  }

  void VisitConcat(size_t idx) {
    const Node& n = g_.nodes[idx];
    int64_t rank = -1;
    for (const auto& in : n.inputs) rank = std::max(rank, Rank(in));
    if (rank < 0) return BlockInputs(n, "rank unknown");
    const int64_t axis = NormAxis(n.AttrInt("axis", 0), rank);
    Chan out{rank, axis, {}};
    const Chan* first = nullptr;
    for (const auto& in : n.inputs) {
      const Chan* c = Get(in);
      if (c != nullptr && first == nullptr) first = c;
      if (c != nullptr && c->axis != first->axis) return BlockInputs(n, "inputs carry channels on different axes");
    }
    if (first->axis != axis) {
      // Stacked along another axis: channel i of every input is channel i of the output.
      for (const auto& in : n.inputs) {
        const Chan* c = Get(in);
        if (c == nullptr || c->atoms.size() != first->atoms.size()) {
          return BlockInputs(n, "input '" + in + "' stacked with channels but carries none");
        }
      }
      for (const auto& in : n.inputs) {
        const Chan* c = Get(in);
        for (size_t i = 0; i < c->atoms.size(); ++i) Join(first->atoms[i], c->atoms[i]);
      }
      return SetOut(n, 0, *first);
    }
    for (const auto& in : n.inputs) {
      if (const Chan* c = Get(in)) {
        out.atoms.insert(out.atoms.end(), c->atoms.begin(), c->atoms.end());
        continue;
      }
      auto shape = Shape(in);
      if (!shape || static_cast<int64_t>(shape->size()) != rank || (*shape)[static_cast<size_t>(axis)] < 0) {
        return BlockInputs(n, "size of input '" + in + "' along the axis unknown");
      }
      const int64_t d = (*shape)[static_cast<size_t>(axis)];
      if (d > kMaxMapped - static_cast<int64_t>(out.atoms.size())) return BlockInputs(n, "too many channels");
      out.atoms.insert(out.atoms.end(), static_cast<size_t>(d), -1);
    }
    SetOut(n, 0, out);
  }

  // Output atoms of a value whose axes [from, rank) are merged into one, channels at in.axis.
  std::optional<std::vector<int>> Merged(const Chan& in, const std::vector<int64_t>& shape, int64_t from) {
    int64_t outer = 1, inner = 1;
    const int64_t channels = std::max<int64_t>(1, static_cast<int64_t>(in.atoms.size()));
    for (int64_t i = from; i < in.rank; ++i) {
      const int64_t d = shape[static_cast<size_t>(i)];
      if (i == in.axis) continue;
      if (d < 0 || (d > 0 && outer * inner * channels > kMaxMapped / d)) return std::nullopt;
      (i < in.axis ? outer : inner) *= d;
    }
    std::vector<int> atoms;
    for (int64_t o = 0; o < outer; ++o) {
      for (int a : in.atoms) atoms.insert(atoms.end(), static_cast<size_t>(inner), a);
    }
    return atoms;
  }

  void VisitFlatten(size_t idx) {
    const Node& n = g_.nodes[idx];
    const Chan* in = Get(n.inputs[0]);
    auto shape = Shape(n.inputs[0]);
    if (in == nullptr || !shape || static_cast<int64_t>(shape->size()) != in->rank) {
      return BlockInputs(n, "input shape unknown");
    }
    const int64_t axis = NormAxis(n.AttrInt("axis", 1), in->rank);
    if (in->axis < axis) return BlockInputs(n, "channels flattened into the leading dimension");
    auto atoms = Merged(*in, *shape, axis);
    if (!atoms) return BlockInputs(n, "flattened dimensions not static");
    SetOut(n, 0, Chan{2, 1, *atoms});
  }

  void VisitReshape(size_t idx) {
    const Node& n = g_.nodes[idx];
    const Chan* in = Get(n.inputs[0]);
    if (in == nullptr) return BlockInputs(n, "channels on the shape input");
    if (TryHeadSplit(idx, *in)) return;
    auto shape = Shape(n.inputs[0]);
    auto target = n.inputs.size() > 1 ? ConstInts(n.inputs[1]) : std::nullopt;
    if (!shape || !target || static_cast<int64_t>(shape->size()) != in->rank || n.AttrInt("allowzero", 0) != 0) {
      return BlockInputs(n, "shape not a constant or input shape unknown");
    }
    const std::vector<int64_t>& d = *shape;
    const std::vector<int64_t>& s = *target;
    const int64_t a = in->axis;
    const int64_t ro = static_cast<int64_t>(s.size());
    auto fail = [&] { BlockInputs(n, "shape " + ShapeToString(s) + " cannot be rewritten for its channels"); };
    if (ro <= a) return fail();
    for (int64_t i = 0; i < a; ++i) {
      const int64_t v = s[static_cast<size_t>(i)];
      if (!(v == 0 || v == -1 || (v > 0 && v == d[static_cast<size_t>(i)]))) return fail();
    }
    int64_t inner = 1;
    for (int64_t i = a + 1; i < in->rank; ++i) {
      if (d[static_cast<size_t>(i)] < 0) return fail();
      inner *= d[static_cast<size_t>(i)];
    }
    const int64_t c = static_cast<int64_t>(in->atoms.size());
    const int64_t sa = s[static_cast<size_t>(a)];
    CountEdit e;
    e.kind = CountEdit::Kind::kShapeEntry;
    e.node = idx;
    e.tensor = n.inputs[1];
    e.index = a;
    if (ro == a + 1 && (sa == -1 || sa == c * inner)) {
      // Channel axis and everything after it merged into one: each channel's block of features.
      auto atoms = Merged(*in, d, a);
      if (!atoms) return fail();
      if (sa > 0) {
        e.atoms = *atoms;
        out_.counts.push_back(e);
      }
      return SetOut(n, 0, Chan{ro, a, *atoms});
    }
    int64_t rest = 1;
    for (int64_t i = a + 1; i < ro; ++i) {
      const int64_t v = s[static_cast<size_t>(i)];
      if (v <= 0) return fail();
      rest *= v;
    }
    if (rest != inner) return fail();
    if (sa == c) {
      e.atoms = in->atoms;
      out_.counts.push_back(e);
    } else if (sa != 0 && sa != -1) {
      return fail();
    }
    SetOut(n, 0, Chan{ro, a, in->atoms});
  }

  void VisitPad(size_t idx) {
    const Node& n = g_.nodes[idx];
    const Chan* in = Get(n.inputs[0]);
    if (in == nullptr) return BlockInputs(n, "channels on a parameter input");
    std::optional<std::vector<int64_t>> pads;
    if (model_.OpsetVersion("") < 11) {
      pads = n.AttrInts("pads", {});
    } else if (n.inputs.size() > 1) {
      pads = ConstInts(n.inputs[1]);
    }
    if (n.inputs.size() > 3 && !n.inputs[3].empty()) return BlockInputs(n, "axes input not supported");
    if (!pads || static_cast<int64_t>(pads->size()) != 2 * in->rank ||
        (*pads)[static_cast<size_t>(in->axis)] != 0 || (*pads)[static_cast<size_t>(in->axis + in->rank)] != 0) {
      return BlockInputs(n, "pads not constant or not zero on the channel axis");
    }
    SetOut(n, 0, *in);
  }

  std::optional<std::vector<int64_t>> AxesOf(const Node& n) const {
    if (const Attribute* a = n.FindAttr("axes")) return a->ints;
    if (n.inputs.size() > 1 && !n.inputs[1].empty()) return ConstInts(n.inputs[1]);
    return std::vector<int64_t>{};
  }

  void VisitSqueeze(size_t idx) {
    const Node& n = g_.nodes[idx];
    const Chan* in = Get(n.inputs[0]);
    auto axes = AxesOf(n);
    if (in == nullptr || !axes) return BlockInputs(n, "axes not constant");
    Chan out = *in;
    if (n.op_type == "Squeeze") {
      if (axes->empty()) return BlockInputs(n, "squeezes every axis of size 1");
      for (int64_t& ax : *axes) ax = NormAxis(ax, in->rank);
      for (int64_t ax : *axes) {
        if (ax == in->axis) return BlockInputs(n, "squeezes the channel axis");
        if (ax < in->axis) --out.axis;
      }
      out.rank -= static_cast<int64_t>(axes->size());
    } else {
      out.rank += static_cast<int64_t>(axes->size());
      std::set<int64_t> inserted;
      for (int64_t ax : *axes) inserted.insert(NormAxis(ax, out.rank));
      int64_t j = -1;
      for (int64_t pos = 0, k = 0; pos < out.rank; ++pos) {
        if (inserted.count(pos)) continue;
        if (k++ == in->axis) j = pos;
      }
      if (j < 0) return BlockInputs(n, "axes out of range");
      out.axis = j;
    }
    SetOut(n, 0, out);
  }

  void VisitReduce(size_t idx) {
    const Node& n = g_.nodes[idx];
    const Chan* in = Get(n.inputs[0]);
    auto axes = AxesOf(n);
    if (in == nullptr || !axes || axes->empty()) return BlockInputs(n, "reduces every axis or axes not constant");
    const bool keep = n.AttrInt("keepdims", 1) != 0;
    Chan out = *in;
    for (int64_t ax : *axes) {
      ax = NormAxis(ax, in->rank);
      if (ax == in->axis) return BlockInputs(n, "reduces over the channels");
      if (!keep && ax < in->axis) --out.axis;
    }
    if (!keep) out.rank -= static_cast<int64_t>(axes->size());
    SetOut(n, 0, out);
  }

  // Split along the channel axis (a fused Q/K/V projection split before its Reshapes): output k carries
  // its range of channels; the sizes, a constant input, are rewritten to the kept counts. Sizes in an
  // attribute (before opset 13) or an equal split without sizes cannot follow an uneven removal: blocked.
  void VisitSplit(size_t idx) {
    const Node& n = g_.nodes[idx];
    const Chan* in = Get(n.inputs[0]);
    if (in == nullptr) return BlockInputs(n, "channels on a parameter input");
    const int64_t axis = NormAxis(n.AttrInt("axis", 0), in->rank);
    if (axis != in->axis) {
      for (size_t k = 0; k < n.outputs.size(); ++k) SetOut(n, k, *in);
      return;
    }
    const Tensor* sizes_t = n.inputs.size() > 1 && !n.inputs[1].empty() ? Const(n.inputs[1]) : nullptr;
    auto sizes = sizes_t != nullptr ? ToInt64s(*sizes_t) : std::nullopt;
    if (!sizes || sizes_t->rank() != 1 || sizes->size() != n.outputs.size()) {
      return BlockInputs(n, "split sizes not a constant input");
    }
    int64_t total = 0;
    for (int64_t v : *sizes) {
      if (v < 0 || v > static_cast<int64_t>(in->atoms.size())) return BlockInputs(n, "split sizes out of range");
      total += v;
    }
    if (total != static_cast<int64_t>(in->atoms.size())) return BlockInputs(n, "split sizes do not add up to the channels");
    size_t at = 0;
    for (size_t k = 0; k < n.outputs.size(); ++k) {
      Chan out = *in;
      out.atoms.assign(in->atoms.begin() + static_cast<std::ptrdiff_t>(at),
                       in->atoms.begin() + static_cast<std::ptrdiff_t>(at + static_cast<size_t>((*sizes)[k])));
      at += static_cast<size_t>((*sizes)[k]);
      ShapePieceEdit(ShapePiece{(*sizes)[k], idx, 1, n.inputs[1], static_cast<int64_t>(k)}, out.atoms);
      SetOut(n, k, out);
    }
  }

  // ---- attention heads ----------------------------------------------------------------------------------
  const HeadChan* GetHeads(const std::string& name) const {
    auto it = heads_.find(name);
    return it == heads_.end() ? nullptr : &it->second;
  }
  void SetHeads(const Node& n, size_t k, HeadChan h) {
    if (k < n.outputs.size() && !n.outputs[k].empty()) heads_[n.outputs[k]] = std::move(h);
  }
  int Uses(const std::string& name) const {
    auto it = uses_.find(name);
    return it == uses_.end() ? 0 : it->second;
  }

  // One entry of a Reshape's target shape: its value when it is a constant, and where that constant sits.
  struct ShapePiece {
    std::optional<int64_t> value;  // nullopt: computed at run time
    size_t node = 0;               // the node reading the constant: the Reshape, or the Concat building the shape
    size_t input = 0;
    std::string tensor;  // empty when computed
    int64_t index = 0;
  };

  // The entries of the shape input of Reshape `idx`: a constant, or a Concat (axis 0, read by this Reshape
  // only) of constant and computed pieces of known length.
  std::optional<std::vector<ShapePiece>> ShapePieces(size_t idx) const {
    const Node& n = g_.nodes[idx];
    if (n.inputs.size() < 2 || n.inputs[1].empty()) return std::nullopt;
    std::vector<ShapePiece> out;
    auto add_const = [&](size_t node, size_t input, const std::string& name) {
      const Tensor* t = Const(name);
      auto v = t != nullptr ? ToInt64s(*t) : std::nullopt;
      if (!v || t->rank() != 1) return false;
      for (size_t i = 0; i < v->size(); ++i) out.push_back({(*v)[i], node, input, name, static_cast<int64_t>(i)});
      return true;
    };
    const std::string& s = n.inputs[1];
    if (Const(s) != nullptr) return add_const(idx, 1, s) ? std::optional(out) : std::nullopt;
    auto it = node_of_value_.find(s);
    if (it == node_of_value_.end()) return std::nullopt;
    const Node& c = g_.nodes[it->second];
    if (c.op_type != "Concat" || !c.IsDefaultDomain() || NormAxis(c.AttrInt("axis", 0), 1) != 0 || Uses(s) != 1) {
      return std::nullopt;
    }
    for (size_t k = 0; k < c.inputs.size(); ++k) {
      if (Const(c.inputs[k]) != nullptr) {
        if (!add_const(it->second, k, c.inputs[k])) return std::nullopt;
        continue;
      }
      auto shape = Shape(c.inputs[k]);
      if (!shape || shape->size() != 1 || (*shape)[0] < 0) return std::nullopt;
      for (int64_t i = 0; i < (*shape)[0]; ++i) out.push_back({std::nullopt, it->second, k, {}, i});
    }
    return out;
  }

  void ShapePieceEdit(const ShapePiece& p, std::vector<int> atoms) {
    CountEdit e;
    e.kind = CountEdit::Kind::kShapePiece;
    e.node = p.node;
    e.input = p.input;
    e.tensor = p.tensor;
    e.index = p.index;
    e.atoms = std::move(atoms);
    out_.counts.push_back(std::move(e));
  }

  // A Reshape splitting the last (channel) axis into [..., H, D] or [..., S, H, D] (S parts of a fused
  // Q/K/V projection): the output is a head-split value, each head's columns (over all parts) one unit,
  // the head count entry an edit. False when the Reshape is not such a split (the caller goes on).
  bool TryHeadSplit(size_t idx, const Chan& in) {
    const Node& n = g_.nodes[idx];
    const int64_t r = in.rank, c = static_cast<int64_t>(in.atoms.size());
    if (r < 2 || in.axis != r - 1 || c < 2 || n.AttrInt("allowzero", 0) != 0) return false;
    auto pieces = ShapePieces(idx);
    if (!pieces) return false;
    const int64_t ro = static_cast<int64_t>(pieces->size());
    const int64_t k = ro - (r - 1);
    if (k != 2 && k != 3) return false;
    std::vector<int64_t> t;
    int64_t known = 1;
    int64_t infer = -1;
    for (int64_t j = r - 1; j < ro; ++j) {
      const auto& v = (*pieces)[static_cast<size_t>(j)].value;
      if (!v) return false;
      if (*v == -1 && infer < 0) {
        infer = j - (r - 1);
        t.push_back(-1);
        continue;
      }
      if (*v <= 0 || *v > c || known > c / *v) return false;
      known *= *v;
      t.push_back(*v);
    }
    if (infer >= 0) {
      for (int64_t j = 0; j < r - 1; ++j) {
        if ((*pieces)[static_cast<size_t>(j)].value == std::optional<int64_t>(-1)) return false;
      }
      if (c % known != 0) return false;
      t[static_cast<size_t>(infer)] = c / known;
    } else if (known != c) {
      return false;
    }
    const int64_t parts = k == 3 ? t[0] : 1, heads = t[static_cast<size_t>(k - 2)], dim = t[static_cast<size_t>(k - 1)];
    if (heads < 2) return false;
    for (int a : in.atoms) {
      if (a < 0) {
        BlockInputs(n, "features split into heads that no producer owns");
        return true;
      }
    }
    std::vector<int> reps;
    for (int64_t h = 0; h < heads; ++h) {
      const int first = in.atoms[static_cast<size_t>(h * dim)];
      reps.push_back(first);
      for (int64_t p = 0; p < parts; ++p) {
        for (int64_t d = 0; d < dim; ++d) Join(first, in.atoms[static_cast<size_t>((p * heads + h) * dim + d)]);
      }
    }
    const ShapePiece& hp = (*pieces)[static_cast<size_t>(ro - 2)];
    if (*hp.value != -1) ShapePieceEdit(hp, reps);
    head_reps_.insert(head_reps_.end(), reps.begin(), reps.end());
    HeadChan out;
    out.rank = ro;
    out.part_axis = k == 3 ? r - 1 : -1;
    out.head_axis = ro - 2;
    out.dim_axis = ro - 1;
    out.parts = parts;
    out.heads = heads;
    out.dim = dim;
    out.atoms = in.atoms;
    SetHeads(n, 0, out);
    return true;
  }

  // A node reading a head-split value.
  void VisitHeads(size_t idx) {
    const Node& n = g_.nodes[idx];
    const std::string& op = n.op_type;
    for (const auto& in : n.inputs) {
      if (Get(in) != nullptr) return BlockInputs(n, "attention heads meet other channels");
    }
    const HeadChan* h0 = n.inputs.empty() ? nullptr : GetHeads(n.inputs[0]);
    auto is_tracked = [](const HeadChan& h, int64_t a) {
      return a == h.part_axis || a == h.head_axis || a == h.dim_axis;
    };
    if (op == "MatMul") return VisitHeadMatMul(idx);
    if (op == "Reshape") {
      if (h0 == nullptr) return BlockInputs(n, "attention heads on the shape input");
      return VisitHeadMerge(idx, *h0);
    }
    if (BinaryOps().count(op) || op == "Where") return VisitHeadElementwise(idx);
    if (h0 == nullptr) return BlockInputs(n, "attention heads on a parameter input");
    for (size_t k = 1; k < n.inputs.size(); ++k) {
      if (GetHeads(n.inputs[k]) != nullptr) return BlockInputs(n, "attention heads on a parameter input");
    }
    HeadChan out = *h0;
    if (op == "Transpose") {
      std::vector<int64_t> perm = n.AttrInts("perm", {});
      if (perm.empty()) {
        for (int64_t i = h0->rank - 1; i >= 0; --i) perm.push_back(i);
      }
      if (static_cast<int64_t>(perm.size()) != h0->rank) return BlockInputs(n, "perm does not match the rank");
      auto moved = [&](int64_t a) {
        if (a < 0) return a;
        for (size_t j = 0; j < perm.size(); ++j) {
          if (perm[j] == a) return static_cast<int64_t>(j);
        }
        return int64_t{-1};
      };
      out.part_axis = moved(h0->part_axis);
      out.head_axis = moved(h0->head_axis);
      out.dim_axis = moved(h0->dim_axis);
      if (out.head_axis < 0 || (h0->part_axis >= 0 && out.part_axis < 0) || (h0->dim_axis >= 0 && out.dim_axis < 0)) {
        return BlockInputs(n, "perm is not a permutation");
      }
      return SetHeads(n, 0, out);
    }
    if (op == "Gather") {
      const int64_t axis = NormAxis(n.AttrInt("axis", 0), h0->rank);
      if (axis == h0->head_axis || axis == h0->dim_axis) return BlockInputs(n, "gathers along the heads or their features");
      const int64_t ind_rank = n.inputs.size() > 1 ? Rank(n.inputs[1]) : -1;
      if (ind_rank < 0) return BlockInputs(n, "rank of the indices unknown");
      if (axis == h0->part_axis) {
        const Tensor* ind = Const(n.inputs[1]);
        auto v = ind != nullptr ? ToInt64s(*ind) : std::nullopt;
        if (!v || ind->rank() != 0) return BlockInputs(n, "parts of a fused projection picked by non-constant indices");
        int64_t p = (*v)[0] < 0 ? (*v)[0] + h0->parts : (*v)[0];
        if (p < 0 || p >= h0->parts) return BlockInputs(n, "part index out of range");
        const size_t block = static_cast<size_t>(h0->heads * h0->dim);
        out.atoms.assign(h0->atoms.begin() + static_cast<std::ptrdiff_t>(static_cast<size_t>(p) * block),
                         h0->atoms.begin() + static_cast<std::ptrdiff_t>(static_cast<size_t>(p + 1) * block));
        out.parts = 1;
        out.part_axis = -1;
      }
      for (int64_t* a : {&out.part_axis, &out.head_axis, &out.dim_axis}) {
        if (*a > axis) *a += ind_rank - 1;
      }
      out.rank += ind_rank - 1;
      return SetHeads(n, 0, out);
    }
    if (op == "Split") {
      const int64_t axis = NormAxis(n.AttrInt("axis", 0), h0->rank);
      if (axis == h0->head_axis || axis == h0->dim_axis) return BlockInputs(n, "splits the heads or their features");
      if (axis != h0->part_axis) {
        for (size_t k = 0; k < n.outputs.size(); ++k) SetHeads(n, k, out);
        return;
      }
      std::optional<std::vector<int64_t>> sizes;
      if (const Attribute* a = n.FindAttr("split")) sizes = a->ints;
      if (n.inputs.size() > 1 && !n.inputs[1].empty()) sizes = ConstInts(n.inputs[1]);
      if (static_cast<int64_t>(n.outputs.size()) != h0->parts ||
          (sizes && *sizes != std::vector<int64_t>(static_cast<size_t>(h0->parts), 1))) {
        return BlockInputs(n, "does not split a fused projection into its parts");
      }
      const size_t block = static_cast<size_t>(h0->heads * h0->dim);
      for (size_t p = 0; p < n.outputs.size(); ++p) {
        HeadChan part = *h0;
        part.parts = 1;
        part.atoms.assign(h0->atoms.begin() + static_cast<std::ptrdiff_t>(p * block),
                          h0->atoms.begin() + static_cast<std::ptrdiff_t>((p + 1) * block));
        SetHeads(n, p, part);
      }
      return;
    }
    if (op == "Slice") {
      // One part of a fused projection (starts s, ends s + 1 on the part axis), or a range of another axis.
      std::optional<std::vector<int64_t>> starts, ends, axes, steps;
      if (model_.OpsetVersion("") < 10) {
        starts = n.AttrInts("starts", {});
        ends = n.AttrInts("ends", {});
        axes = n.AttrInts("axes", {});
      } else {
        starts = n.inputs.size() > 1 ? ConstInts(n.inputs[1]) : std::nullopt;
        ends = n.inputs.size() > 2 ? ConstInts(n.inputs[2]) : std::nullopt;
        axes = n.inputs.size() > 3 && !n.inputs[3].empty() ? ConstInts(n.inputs[3]) : std::vector<int64_t>{};
        steps = n.inputs.size() > 4 && !n.inputs[4].empty() ? ConstInts(n.inputs[4]) : std::vector<int64_t>{};
      }
      if (!starts || !ends || !axes || starts->size() != ends->size() || (steps && !steps->empty() && steps->size() != starts->size())) {
        return BlockInputs(n, "slice bounds not constant");
      }
      if (axes->empty()) {
        for (size_t i = 0; i < starts->size(); ++i) axes->push_back(static_cast<int64_t>(i));
      }
      if (axes->size() != starts->size()) return BlockInputs(n, "slice bounds not constant");
      for (size_t i = 0; i < axes->size(); ++i) {
        const int64_t ax = NormAxis((*axes)[i], h0->rank);
        const int64_t step = steps && !steps->empty() ? (*steps)[i] : 1;
        if (ax == h0->head_axis || ax == h0->dim_axis) return BlockInputs(n, "slices the heads or their features");
        if (ax != h0->part_axis) continue;
        const int64_t p = (*starts)[i] < 0 ? (*starts)[i] + h0->parts : (*starts)[i];
        const int64_t e = (*ends)[i] < 0 ? (*ends)[i] + h0->parts : std::min((*ends)[i], h0->parts);
        if (step != 1 || p < 0 || p >= h0->parts || e != p + 1) return BlockInputs(n, "does not pick one part of a fused projection");
        const size_t block = static_cast<size_t>(h0->heads * h0->dim);
        out.atoms.assign(h0->atoms.begin() + static_cast<std::ptrdiff_t>(static_cast<size_t>(p) * block),
                         h0->atoms.begin() + static_cast<std::ptrdiff_t>(static_cast<size_t>(p + 1) * block));
        out.parts = 1;
      }
      return SetHeads(n, 0, out);
    }
    if (op == "Squeeze" || op == "Unsqueeze") {
      auto axes = AxesOf(n);
      if (!axes || axes->empty()) return BlockInputs(n, "axes not constant");
      if (op == "Squeeze") {
        for (int64_t& ax : *axes) ax = NormAxis(ax, h0->rank);
        std::sort(axes->rbegin(), axes->rend());
        for (int64_t ax : *axes) {
          if (ax == out.head_axis || ax == out.dim_axis) return BlockInputs(n, "squeezes the heads or their features");
          if (ax == out.part_axis) {
            if (out.parts != 1) return BlockInputs(n, "squeezes the parts of a fused projection");
            out.part_axis = -1;
          }
          for (int64_t* a : {&out.part_axis, &out.head_axis, &out.dim_axis}) {
            if (*a > ax) --*a;
          }
          --out.rank;
        }
      } else {
        out.rank += static_cast<int64_t>(axes->size());
        std::set<int64_t> inserted;
        for (int64_t ax : *axes) inserted.insert(NormAxis(ax, out.rank));
        std::vector<int64_t> pos;
        for (int64_t p = 0; p < out.rank; ++p) {
          if (!inserted.count(p)) pos.push_back(p);
        }
        if (static_cast<int64_t>(pos.size()) != h0->rank) return BlockInputs(n, "axes out of range");
        for (int64_t* a : {&out.part_axis, &out.head_axis, &out.dim_axis}) {
          if (*a >= 0) *a = pos[static_cast<size_t>(*a)];
        }
      }
      return SetHeads(n, 0, out);
    }
    if (op == "Softmax" || op == "LogSoftmax" || op == "Hardmax") {
      const bool old = model_.OpsetVersion("") < 13;
      const int64_t axis = NormAxis(n.AttrInt("axis", old ? 1 : -1), h0->rank);
      if (is_tracked(*h0, axis) || (old && axis != h0->rank - 1)) {
        return BlockInputs(n, "normalizes over the heads or their features");
      }
      return SetHeads(n, 0, out);
    }
    if (UnaryOps().count(op)) {
      if (op == "Dropout" && n.outputs.size() > 1 && !n.outputs[1].empty()) return BlockInputs(n, "mask output read");
      return SetHeads(n, 0, out);
    }
    BlockInputs(n, "operator " + op + " on attention heads not understood");
  }

  // Element-wise ops: head-split inputs of one layout are joined; other inputs must not span the heads,
  // their features or the parts (size 1 there after broadcasting).
  void VisitHeadElementwise(size_t idx) {
    const Node& n = g_.nodes[idx];
    int64_t out_rank = 0;
    const HeadChan* first = nullptr;
    for (const auto& in : n.inputs) {
      const HeadChan* h = GetHeads(in);
      const int64_t r = h != nullptr ? h->rank : Rank(in);
      if (r < 0) return BlockInputs(n, "rank of input '" + in + "' unknown");
      out_rank = std::max(out_rank, r);
      if (h == nullptr) continue;
      if (first == nullptr) {
        first = h;
      } else if (h->rank != first->rank || h->part_axis != first->part_axis || h->head_axis != first->head_axis ||
                 h->dim_axis != first->dim_axis || h->atoms.size() != first->atoms.size()) {
        return BlockInputs(n, "attention heads in different layouts");
      }
    }
    if (first->rank != out_rank) return BlockInputs(n, "attention heads broadcast to a higher rank");
    for (const auto& in : n.inputs) {
      if (const HeadChan* h = GetHeads(in)) {
        for (size_t i = 0; i < h->atoms.size(); ++i) Join(first->atoms[i], h->atoms[i]);
        continue;
      }
      const int64_t r = Rank(in);
      auto shape = Shape(in);
      for (int64_t a : {first->part_axis, first->head_axis, first->dim_axis}) {
        const int64_t ai = a < 0 ? -1 : a - (out_rank - r);
        if (ai < 0) continue;
        if (!shape || (*shape)[static_cast<size_t>(ai)] != 1) {
          return BlockInputs(n, "input '" + in + "' spans the attention heads");
        }
      }
    }
    SetHeads(n, 0, *first);
  }

  // The attention MatMuls: Q.K^T contracts a head's features (Q's and K's head h become one unit; the
  // result holds one score map per head), scores.V keeps V's features (the scores' head h joins V's).
  void VisitHeadMatMul(size_t idx) {
    const Node& n = g_.nodes[idx];
    const HeadChan* a = GetHeads(n.inputs[0]);
    const HeadChan* b = n.inputs.size() > 1 ? GetHeads(n.inputs[1]) : nullptr;
    if (a == nullptr || b == nullptr) return BlockInputs(n, "attention heads multiplied by a value without them");
    const int64_t r = a->rank;
    if (b->rank != r || r < 3 || a->part_axis >= 0 || b->part_axis >= 0 || a->head_axis != b->head_axis ||
        a->head_axis >= r - 2 || a->heads != b->heads) {
      return BlockInputs(n, "operands do not line up head by head");
    }
    const int64_t heads = a->heads;
    HeadChan out;
    if (a->dim_axis == r - 1 && b->dim_axis == r - 2 && a->dim == b->dim) {
      out = *a;
      out.dim_axis = -1;
      out.dim = 1;
      out.atoms.clear();
      for (int64_t h = 0; h < heads; ++h) {
        const int first = a->atoms[static_cast<size_t>(h * a->dim)];
        for (int64_t d = 0; d < a->dim; ++d) {
          Join(first, a->atoms[static_cast<size_t>(h * a->dim + d)]);
          Join(first, b->atoms[static_cast<size_t>(h * b->dim + d)]);
        }
        out.atoms.push_back(first);
      }
    } else if ((a->dim_axis < 0 && b->dim_axis == r - 1) || (a->dim_axis == r - 2 && b->dim_axis < 0)) {
      const HeadChan* scores = a->dim_axis < 0 ? a : b;
      const HeadChan* values = a->dim_axis < 0 ? b : a;
      for (int64_t h = 0; h < heads; ++h) {
        for (int64_t d = 0; d < values->dim; ++d) {
          Join(scores->atoms[static_cast<size_t>(h)], values->atoms[static_cast<size_t>(h * values->dim + d)]);
        }
      }
      out = *values;
    } else {
      return BlockInputs(n, "contracts something other than a head's features");
    }
    SetHeads(n, 0, out);
  }

  // A Reshape merging [..., H, D] (the last two axes) back into H*D features: ordinary channels again.
  void VisitHeadMerge(size_t idx, const HeadChan& h) {
    const Node& n = g_.nodes[idx];
    if (h.part_axis >= 0 || h.dim_axis != h.rank - 1 || h.head_axis != h.rank - 2) {
      return BlockInputs(n, "heads not merged from the last two axes");
    }
    auto pieces = ShapePieces(idx);
    if (!pieces || n.AttrInt("allowzero", 0) != 0 || static_cast<int64_t>(pieces->size()) != h.rank - 1) {
      return BlockInputs(n, "shape neither a constant nor a Concat merging the heads");
    }
    const ShapePiece& last = pieces->back();
    if (!last.value) return BlockInputs(n, "width of the merged heads computed at run time");
    if (*last.value == h.heads * h.dim) {
      ShapePieceEdit(last, h.atoms);
    } else if (*last.value == -1) {
      for (size_t j = 0; j + 1 < pieces->size(); ++j) {
        if ((*pieces)[j].value == std::optional<int64_t>(-1)) return BlockInputs(n, "two -1 entries in the shape");
      }
    } else {
      return BlockInputs(n, "merged width " + std::to_string(*last.value) + " is not heads x features");
    }
    SetOut(n, 0, Chan{h.rank - 1, h.rank - 2, h.atoms});
  }

  // ---- consistency of the edits -------------------------------------------------------------------------
  void CheckEdits() {
    const auto uses = UseCounts(g_);
    std::map<std::string, std::set<size_t>> readers;
    std::map<std::pair<std::string, int64_t>, std::vector<const SliceEdit*>> by_dim;
    for (const auto& e : out_.slices) {
      readers[e.tensor].insert(e.reader);
      by_dim[{e.tensor, e.dim}].push_back(&e);
      const Tensor* t = g_.FindInitializer(e.tensor);
      const std::string who = g_.nodes[e.reader].Describe();
      if (t == nullptr || e.dim >= t->rank() ||
          t->dims()[static_cast<size_t>(e.dim)] != static_cast<int64_t>(e.atoms.size())) {
        Block(e.atoms, who + ": '" + e.tensor + "' does not have the expected size along dim " +
                           std::to_string(e.dim));
      } else if (t->dtype() == DType::kString || DTypeBits(t->dtype()) % 8 != 0) {
        Block(e.atoms, who + ": '" + e.tensor + "' has a packed or string element type");
      }
    }
    std::map<std::string, std::vector<const CountEdit*>> shape_edits;
    for (const auto& e : out_.counts) {
      if (e.kind == CountEdit::Kind::kShapeEntry) {
        readers[e.tensor].insert(e.node);
        shape_edits[e.tensor].push_back(&e);
      }
    }
    for (const auto& [name, edits] : by_dim) {
      for (const SliceEdit* e : edits) {
        if (e->atoms != edits[0]->atoms) {
          for (const SliceEdit* f : edits) {
            Block(f->atoms, g_.nodes[f->reader].Describe() + ": weight '" + name.first +
                                "' read in another layout by another node");
          }
          break;
        }
      }
    }
    for (const auto& [name, edits] : shape_edits) {
      for (const CountEdit* e : edits) {
        if (e->atoms != edits[0]->atoms || e->index != edits[0]->index) {
          for (const CountEdit* f : edits) {
            Block(f->atoms, g_.nodes[f->node].Describe() + ": shape '" + name + "' shared by another Reshape");
          }
          break;
        }
      }
    }
    std::map<std::tuple<size_t, size_t, int64_t>, std::vector<const CountEdit*>> piece_edits;
    for (const auto& e : out_.counts) {
      if (e.kind != CountEdit::Kind::kShapePiece) continue;
      const Node& reader = g_.nodes[e.node];
      const Tensor* t = Const(e.tensor);
      if (e.input >= reader.inputs.size() || reader.inputs[e.input] != e.tensor || t == nullptr ||
          e.index >= t->numel() || (t->dtype() != DType::kInt64 && t->dtype() != DType::kInt32)) {
        Block(e.atoms, reader.Describe() + ": shape constant '" + e.tensor + "' cannot be rewritten");
      }
      piece_edits[{e.node, e.input, e.index}].push_back(&e);
    }
    for (const auto& [key, edits] : piece_edits) {
      for (const CountEdit* e : edits) {
        if (e->atoms != edits[0]->atoms) {
          for (const CountEdit* f : edits) {
            Block(f->atoms, g_.nodes[f->node].Describe() + ": shape entry rewritten for different channels");
          }
          break;
        }
      }
    }
    auto block_tensor = [&](const std::string& name, const std::string& why) {
      for (const auto& e : out_.slices) {
        if (e.tensor == name) Block(e.atoms, g_.nodes[e.reader].Describe() + ": " + why);
      }
      for (const auto& e : out_.counts) {
        if (e.kind == CountEdit::Kind::kShapeEntry && e.tensor == name) {
          Block(e.atoms, g_.nodes[e.node].Describe() + ": " + why);
        }
      }
    };
    for (const auto& [name, nodes] : readers) {
      auto it = uses.find(name);
      const int count = it == uses.end() ? 0 : it->second;
      if (count > static_cast<int>(nodes.size())) block_tensor(name, "'" + name + "' is also read by another node");
    }
  }

  void Finish() {
    std::map<int, size_t> group_index;
    out_.group_of_atom.assign(static_cast<size_t>(out_.atom_count), 0);
    for (int a = 0; a < out_.atom_count; ++a) {
      auto [it, inserted] = group_index.emplace(coarse_.Find(a), out_.groups.size());
      if (inserted) out_.groups.emplace_back();
      out_.group_of_atom[static_cast<size_t>(a)] = it->second;
    }
    std::map<int, std::vector<int>> units;
    for (int a = 0; a < out_.atom_count; ++a) units[fine_.Find(a)].push_back(a);
    for (auto& [root, atoms] : units) {
      out_.groups[out_.group_of_atom[static_cast<size_t>(root)]].units.push_back(atoms);
    }
    for (size_t p = 0; p < out_.producers.size(); ++p) {
      if (out_.producers[p].atoms.empty()) continue;
      out_.groups[out_.group_of_atom[static_cast<size_t>(out_.producers[p].atoms[0])]].producers.push_back(p);
    }
    for (int a : head_reps_) out_.groups[out_.group_of_atom[static_cast<size_t>(a)]].heads = true;
    for (const auto& [atom, why] : blocked_) {
      ChannelGroup& grp = out_.groups[out_.group_of_atom[static_cast<size_t>(atom)]];
      if (grp.prunable) {
        grp.prunable = false;
        grp.reason = why;
      }
    }
  }

  const Model& model_;
  const Graph& g_;
  std::unordered_map<std::string, std::vector<int64_t>> shapes_;
  std::unordered_map<std::string, Chan> chans_;
  std::unordered_map<std::string, size_t> producer_of_value_;
  std::unordered_map<std::string, HeadChan> heads_;
  std::unordered_map<std::string, size_t> node_of_value_;
  std::unordered_map<std::string, int> uses_;
  std::vector<int> head_reps_;  // one atom of every head
  UnionFind fine_, coarse_;
  std::vector<std::pair<int, std::string>> blocked_;
  ChannelAnalysis out_;
};

Tensor SliceTensor(const Tensor& t, int64_t dim, const std::vector<int64_t>& keep) {
  std::vector<int64_t> dims = t.dims();
  const int64_t n = dims[static_cast<size_t>(dim)];
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < dim; ++i) outer *= dims[static_cast<size_t>(i)];
  for (int64_t i = dim + 1; i < t.rank(); ++i) inner *= dims[static_cast<size_t>(i)];
  dims[static_cast<size_t>(dim)] = static_cast<int64_t>(keep.size());
  Tensor out(t.dtype(), dims, t.name());
  out.set_doc_string(t.doc_string());
  const size_t elem = static_cast<size_t>(DTypeBits(t.dtype()) / 8);
  const size_t row = static_cast<size_t>(inner) * elem;
  const auto* src = static_cast<const uint8_t*>(t.raw());
  auto* dst = static_cast<uint8_t*>(out.mutable_raw());
  for (int64_t o = 0; o < outer; ++o) {
    for (size_t k = 0; k < keep.size(); ++k) {
      std::memcpy(dst + (static_cast<size_t>(o) * keep.size() + k) * row,
                  src + (static_cast<size_t>(o * n + keep[k])) * row, row);
    }
  }
  return out;
}

// Shape pieces: every (node, input) whose constant has entries to rewrite gets a private copy with them
// rewritten; an original no node reads any more is dropped.
void ApplyShapePieces(Model& model, const ChannelAnalysis& analysis, const std::vector<bool>& removed) {
  Graph& g = model.graph;
  std::map<std::pair<size_t, size_t>, std::vector<std::pair<int64_t, int64_t>>> entries;  // -> (index, kept)
  std::map<std::pair<size_t, size_t>, std::string> tensor_of;
  for (const auto& e : analysis.counts) {
    if (e.kind != CountEdit::Kind::kShapePiece) continue;
    int64_t kept = 0;
    for (int a : e.atoms) kept += (a >= 0 && removed[static_cast<size_t>(a)]) ? 0 : 1;
    if (kept == static_cast<int64_t>(e.atoms.size())) continue;
    entries[{e.node, e.input}].push_back({e.index, kept});
    tensor_of[{e.node, e.input}] = e.tensor;
  }
  if (entries.empty()) return;
  NameGenerator names(g);
  std::vector<Tensor> copies;
  std::unordered_set<std::string> originals;
  for (const auto& [key, list] : entries) {
    const std::string& name = tensor_of[key];
    const Tensor* t = g.FindInitializer(name);
    if (key.first >= g.nodes.size() || key.second >= g.nodes[key.first].inputs.size() ||
        g.nodes[key.first].inputs[key.second] != name || t == nullptr) {
      ThrowInvalid("prune_channels: shape constant '" + name + "' changed");
    }
    Tensor copy = *t;
    for (const auto& [index, kept] : list) {
      if (index >= copy.numel()) ThrowInvalid("prune_channels: shape constant '" + name + "' changed");
      if (copy.dtype() == DType::kInt64) {
        copy.mutable_data<int64_t>()[index] = kept;
      } else {
        copy.mutable_data<int32_t>()[index] = static_cast<int32_t>(kept);
      }
    }
    copy.set_name(names.Make(name + "_pruned"));
    g.nodes[key.first].inputs[key.second] = copy.name();
    originals.insert(name);
    copies.push_back(std::move(copy));
  }
  for (auto& t : copies) AddInitializer(model, g, std::move(t));
  const auto uses = UseCounts(g);
  std::unordered_set<std::string> unused;
  for (const auto& name : originals) {
    auto it = uses.find(name);
    if (it == uses.end() || it->second == 0) unused.insert(name);
  }
  EraseInitializers(g, unused);
}

}  // namespace

ChannelAnalysis AnalyzeChannels(const Model& model) { return Analyzer(model).Run(); }

void ApplyChannelRemoval(Model& model, const ChannelAnalysis& analysis, const std::vector<bool>& removed) {
  Graph& g = model.graph;
  auto gone = [&](int a) { return a >= 0 && removed[static_cast<size_t>(a)]; };
  std::set<std::pair<std::string, int64_t>> done;
  for (const auto& e : analysis.slices) {
    if (!done.insert({e.tensor, e.dim}).second) continue;
    std::vector<int64_t> keep;
    for (size_t i = 0; i < e.atoms.size(); ++i) {
      if (!gone(e.atoms[i])) keep.push_back(static_cast<int64_t>(i));
    }
    if (keep.size() == e.atoms.size()) continue;
    Tensor* t = g.FindInitializer(e.tensor);
    if (t == nullptr || e.dim >= t->rank() || t->dims()[static_cast<size_t>(e.dim)] != static_cast<int64_t>(e.atoms.size())) {
      ThrowInvalid("prune_channels: tensor '" + e.tensor + "' does not match its channel map along dim " +
                   std::to_string(e.dim));
    }
    *t = SliceTensor(*t, e.dim, keep);
    for (auto& in : g.inputs) {
      if (in.name == e.tensor) in.type = TensorTypeOf(*t);
    }
  }
  ApplyShapePieces(model, analysis, removed);
  for (const auto& e : analysis.counts) {
    int64_t kept = 0;
    for (int a : e.atoms) kept += gone(a) ? 0 : 1;
    if (kept == static_cast<int64_t>(e.atoms.size())) continue;
    if (e.kind == CountEdit::Kind::kShapePiece) continue;
    if (e.kind == CountEdit::Kind::kGroupAttr) {
      g.nodes[e.node].SetAttr(
          Attribute::Int("group", e.original * kept / static_cast<int64_t>(e.atoms.size())));
    } else {
      Tensor* t = g.FindInitializer(e.tensor);
      if (t == nullptr || e.index >= t->numel()) ThrowInvalid("prune_channels: shape '" + e.tensor + "' changed");
      if (t->dtype() == DType::kInt64) {
        t->mutable_data<int64_t>()[e.index] = kept;
      } else {
        t->mutable_data<int32_t>()[e.index] = static_cast<int32_t>(kept);
      }
    }
  }
  g.value_info.clear();
}

}  // namespace compress::passes
