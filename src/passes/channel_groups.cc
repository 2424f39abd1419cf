// Channel dependency analysis for structured pruning: see channel_groups.h.

#include "channel_groups.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <optional>
#include <set>
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
  }

  ChannelAnalysis Run() {
    for (size_t idx : TopologicalOrder(g_)) Visit(idx);
    for (const auto& out : g_.outputs) {
      if (const Chan* c = Get(out.name)) Block(*c, "channels reach graph output '" + out.name + "'");
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
    for (const auto& in : n.inputs) traced = traced || Get(in) != nullptr;
    for (const auto& a : n.attributes) {
      if (a.type == AttrType::kGraph || a.type == AttrType::kGraphs) {
        for (const auto& captured : OuterScopeInputs(n)) {
          if (const Chan* c = Get(captured)) Block(*c, n.Describe() + ": read inside a subgraph");
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
  for (const auto& e : analysis.counts) {
    int64_t kept = 0;
    for (int a : e.atoms) kept += gone(a) ? 0 : 1;
    if (kept == static_cast<int64_t>(e.atoms.size())) continue;
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
