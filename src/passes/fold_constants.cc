// fold_constants: nodes whose inputs are all known before the model runs are evaluated once, here, and
// replaced by initializers holding their results.
//
//   Before:  W (initializer) -> Transpose -> Wt -> MatMul(x, Wt)
//   After:   Wt (initializer) -> MatMul(x, Wt)
//
//   Before:  x[batch,17,64] -> Shape -> Gather(2) -> Unsqueeze -> Concat(.., [-1]) -> Reshape(y, ..)
//   After:   the Concat result (initializer) -> Reshape(y, ..)
//
// A deterministic operator gives the same result every run when its inputs are the same, so evaluating
// it with the executor's kernels now and storing the result changes no output. Shape/Size only depend on
// the shape of their input: when shape inference proves that shape static they are constants too, and so
// are the entries of a partly symbolic shape that Gather/Slice pick from fixed dimensions.
//
// Not folded: nodes with subgraphs, random operators, Quantize/DequantizeLinear and Casts that widen a
// stored weight (both would undo a compression stored on purpose), operators without a kernel, and
// results larger than max_folded_bytes (checked before running operators whose output can be much larger
// than their inputs, so that such a node never allocates it). Only results still read after folding are
// stored, named after the node output they replace.

#include <algorithm>
#include <cmath>
#include <limits>
#include <unordered_map>

#include "compress/exec/executor.h"
#include "compress/exec/kernel.h"
#include "compress/io/schema.h"
#include "compress/ir/verify.h"
#include "compress/passes/builders.h"
#include "pass_util.h"

namespace compress {

namespace {

using passes::IsOp;

struct Known {
  Tensor value;
  // Derived from a stored weight rather than from a shape: a widening Cast of it is kept (see above).
  bool from_weight = false;
};

// Constants and inferred types of one graph, falling back to those of the enclosing graphs.
struct Scope {
  std::unordered_map<std::string, Known> values;
  std::unordered_map<std::string, const TypeInfo*> types;
  const Scope* parent = nullptr;

  const Known* FindValue(const std::string& name) const {
    for (const Scope* s = this; s != nullptr; s = s->parent) {
      auto it = s->values.find(name);
      if (it != s->values.end()) return &it->second;
    }
    return nullptr;
  }
  const TypeInfo* FindType(const std::string& name) const {
    for (const Scope* s = this; s != nullptr; s = s->parent) {
      auto it = s->types.find(name);
      if (it != s->types.end()) return it->second;
    }
    return nullptr;
  }
};

bool HasSubgraph(const Node& n) {
  for (const auto& a : n.attributes) {
    if (!a.graphs.empty()) return true;
  }
  return false;
}

bool NeverFolded(const Node& n) {
  static const std::unordered_set<std::string> kOps = {
      // Random: a folded value would freeze one draw.
      "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli",
      // Quantized weights are stored that way on purpose; folding would store the float values again.
      "DequantizeLinear", "QuantizeLinear"};
  return kOps.count(n.op_type) > 0;
}

// Operators whose outputs are at most a small multiple of their inputs' size (a widening Cast: 8x), so
// running them on inputs that are already in memory is safe; the cap is checked on the result.
bool IsBoundedOp(const std::string& op) {
  static const std::unordered_set<std::string> kOps = {
      // Elementwise on one tensor.
      "Abs", "Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "Ceil", "Cos", "Cosh", "Erf", "Exp", "Floor",
      "IsInf", "IsNaN", "Log", "Neg", "Not", "Reciprocal", "Relu", "Round", "Sigmoid", "Sign", "Sin", "Sinh",
      "Softplus", "Softsign", "Sqrt", "Tan", "Tanh", "Elu", "Selu", "LeakyRelu", "HardSigmoid", "HardSwish",
      "ThresholdedRelu", "Celu", "Gelu", "Mish", "Clip", "Cast", "CastLike", "Identity", "Dropout",
      // Data movement and shapes.
      "Shape", "Size", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Slice", "Split", "Concat",
      "DepthToSpace", "SpaceToDepth", "ReverseSequence", "GatherElements", "Compress", "Trilu",
      // Normalizations and reductions.
      "Softmax", "LogSoftmax", "Hardmax", "LayerNormalization", "BatchNormalization", "InstanceNormalization",
      "LpNormalization", "GroupNormalization", "ReduceMax", "ReduceMin", "ReduceMean", "ReduceSum",
      "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "ArgMax",
      "ArgMin", "CumSum", "TopK", "NonZero", "Unique", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool",
      "DynamicQuantizeLinear", "Det"};
  return kOps.count(op) > 0;
}

bool IsBroadcastOp(const std::string& op) {
  static const std::unordered_set<std::string> kOps = {
      // Multidirectional broadcasting: [N,1] and [1,N] make N*N.
      "Add",         "Sub",       "Mul",        "Div",   "Pow",
      "Mod",         "Equal",     "Greater",    "Less",  "GreaterOrEqual",
      "LessOrEqual", "And",       "Or",         "Xor",   "BitShift",
      "BitwiseAnd",  "BitwiseOr", "BitwiseXor", "PRelu", "Where",
      "Max",         "Min",       "Sum",        "Mean"};
  return kOps.count(op) > 0;
}

// Element counts are products of dims from the model, which may overflow int64: sizes are estimated in
// double, which is exact far beyond any cap.
double Numel(const std::vector<int64_t>& dims) {
  double n = 1;
  for (int64_t d : dims) n *= static_cast<double>(std::max<int64_t>(d, 0));
  return n;
}

double ElemBytes(DType t) { return std::max(1.0, DTypeBits(t) / 8.0); }

// The broadcast of several shapes, taking the larger dim where they differ (an upper bound when the
// shapes are not compatible, which the kernel then rejects).
std::vector<double> BroadcastDims(const std::vector<std::vector<int64_t>>& shapes) {
  size_t rank = 0;
  for (const auto& s : shapes) rank = std::max(rank, s.size());
  std::vector<double> out(rank, 1.0);
  for (const auto& s : shapes) {
    for (size_t k = 0; k < s.size(); ++k) {
      double& o = out[rank - s.size() + k];
      o = std::max(o, static_cast<double>(std::max<int64_t>(s[k], 0)));
    }
  }
  return out;
}

double Product(const std::vector<double>& v) {
  double n = 1;
  for (double d : v) n *= d;
  return n;
}

std::vector<int64_t> Ints(const Tensor* t) {
  if (t == nullptr) return {};
  return passes::ToInt64s(*t).value_or(std::vector<int64_t>{});
}

std::vector<double> Doubles(const Tensor* t) {
  if (t == nullptr) return {};
  return passes::ToDoubles(*t).value_or(std::vector<double>{});
}

// Output dims of Resize/Upsample from per-axis sizes or scales, which cover `axes` (all axes when empty).
double ResizedNumel(const std::vector<int64_t>& x, const std::vector<double>& per_axis, bool scales,
                    const std::vector<int64_t>& axes) {
  std::vector<double> out(x.begin(), x.end());
  const int64_t rank = static_cast<int64_t>(x.size());
  for (size_t k = 0; k < per_axis.size(); ++k) {
    int64_t axis = axes.empty() ? static_cast<int64_t>(k) : axes[k];
    if (axis < 0) axis += rank;
    if (axis < 0 || axis >= rank) continue;
    double& d = out[static_cast<size_t>(axis)];
    d = scales ? std::floor(d * std::max(per_axis[k], 0.0)) : std::max(per_axis[k], 0.0);
  }
  return Product(out);
}

// Bytes of the largest output of `n`, computed from its constant inputs, for operators whose output can
// be far larger than their inputs. nullopt when this code does not know how.
std::optional<double> EstimateOutputBytes(const Node& n, const std::vector<const Tensor*>& in,
                                          int64_t opset) {
  auto input = [&](size_t k) -> const Tensor* { return k < in.size() ? in[k] : nullptr; };
  const Tensor* x = input(0);
  const std::string& op = n.op_type;
  if (op == "ConstantOfShape") {
    DType dtype = DType::kFloat;
    if (const Attribute* a = n.FindAttr("value"); a != nullptr && !a->tensors.empty())
      dtype = a->tensors[0].dtype();
    return Numel(Ints(x)) * ElemBytes(dtype);
  }
  if (x == nullptr) return std::nullopt;
  const double elem = ElemBytes(x->dtype());
  if (op == "Expand") return Product(BroadcastDims({x->dims(), Ints(input(1))})) * elem;
  if (op == "Tile") {
    if (opset < 6) {
      const std::vector<double> tiles = Doubles(input(1));
      return Numel(x->dims()) * (tiles.empty() ? 1.0 : std::max(tiles[0], 0.0)) * elem;
    }
    const std::vector<int64_t> repeats = Ints(input(1));
    if (repeats.size() != x->dims().size()) return Numel(x->dims()) * elem;
    double total = 1;
    for (size_t k = 0; k < repeats.size(); ++k) {
      total *= static_cast<double>(std::max<int64_t>(x->dims()[k], 0)) *
               static_cast<double>(std::max<int64_t>(repeats[k], 0));
    }
    return total * elem;
  }
  if (op == "Range") {
    const std::vector<double> start = Doubles(x), limit = Doubles(input(1)), delta = Doubles(input(2));
    if (start.empty() || limit.empty() || delta.empty() || delta[0] == 0) return 0.0;
    return std::max(0.0, std::ceil((limit[0] - start[0]) / delta[0])) * elem;
  }
  if (op == "Resize") {
    const std::vector<int64_t> axes = n.AttrInts("axes", {});
    if (opset >= 11) {
      const std::vector<int64_t> sizes = Ints(input(3));
      if (!sizes.empty()) {
        return ResizedNumel(x->dims(), std::vector<double>(sizes.begin(), sizes.end()), false, axes) * elem;
      }
      return ResizedNumel(x->dims(), Doubles(input(2)), true, axes) * elem;
    }
    return ResizedNumel(x->dims(), Doubles(input(1)), true, {}) * elem;
  }
  if (op == "Upsample") {
    std::vector<double> scales;
    if (opset >= 9) {
      scales = Doubles(input(1));
    } else if (const Attribute* a = n.FindAttr("scales")) {
      scales.assign(a->floats.begin(), a->floats.end());
    }
    return ResizedNumel(x->dims(), scales, true, {}) * elem;
  }
  if (op == "Pad") {
    std::vector<int64_t> pads =
        opset >= 11 ? Ints(input(1)) : n.AttrInts(opset < 2 ? "paddings" : "pads", {});
    std::vector<int64_t> axes = Ints(input(3));
    const int64_t rank = x->rank();
    if (axes.empty()) {
      for (int64_t k = 0; k < rank; ++k) axes.push_back(k);
    }
    if (pads.size() != 2 * axes.size()) return Numel(x->dims()) * elem;
    std::vector<double> out(x->dims().begin(), x->dims().end());
    for (size_t k = 0; k < axes.size(); ++k) {
      const int64_t axis = axes[k] < 0 ? axes[k] + rank : axes[k];
      if (axis < 0 || axis >= rank) continue;
      double& d = out[static_cast<size_t>(axis)];
      d = std::max(0.0, d + static_cast<double>(pads[k]) + static_cast<double>(pads[k + axes.size()]));
    }
    return Product(out) * elem;
  }
  if (op == "OneHot") {
    const std::vector<double> depth = Doubles(input(1));
    const Tensor* values = input(2);
    return Numel(x->dims()) * (depth.empty() ? 1.0 : std::max(depth[0], 0.0)) *
           (values != nullptr ? ElemBytes(values->dtype()) : elem);
  }
  if (op == "EyeLike") {
    const int64_t dtype = n.AttrInt("dtype", 0);
    return Numel(x->dims()) *
           (IsKnownDType(static_cast<int32_t>(dtype)) ? ElemBytes(static_cast<DType>(dtype)) : elem);
  }
  if (op == "Gather") {
    const Tensor* indices = input(1);
    if (indices == nullptr || x->rank() == 0) return std::nullopt;
    int64_t axis = n.AttrInt("axis", 0);
    if (axis < 0) axis += x->rank();
    if (axis < 0 || axis >= x->rank()) return 0.0;
    std::vector<int64_t> rest = x->dims();
    rest.erase(rest.begin() + axis);
    return Numel(rest) * Numel(indices->dims()) * elem;
  }
  if (op == "MatMul") {
    const Tensor* b = input(1);
    if (b == nullptr || x->rank() == 0 || b->rank() == 0) return std::nullopt;
    std::vector<int64_t> ad = x->dims(), bd = b->dims();
    if (ad.size() == 1) ad.insert(ad.begin(), 1);
    if (bd.size() == 1) bd.push_back(1);
    const double m = static_cast<double>(ad[ad.size() - 2]), cols = static_cast<double>(bd.back());
    ad.resize(ad.size() - 2);
    bd.resize(bd.size() - 2);
    return Product(BroadcastDims({ad, bd})) * m * cols * elem;
  }
  if (op == "Gemm") {
    const Tensor* b = input(1);
    if (b == nullptr || x->rank() != 2 || b->rank() != 2) return 0.0;
    const int64_t m = n.AttrInt("transA", 0) ? x->dims()[1] : x->dims()[0];
    const int64_t cols = n.AttrInt("transB", 0) ? b->dims()[0] : b->dims()[1];
    return static_cast<double>(m) * static_cast<double>(cols) * elem;
  }
  if (IsBroadcastOp(op)) {
    std::vector<std::vector<int64_t>> shapes;
    double widest = 1;
    for (const Tensor* t : in) {
      if (t == nullptr) continue;
      shapes.push_back(t->dims());
      widest = std::max(widest, ElemBytes(t->dtype()));
    }
    return Product(BroadcastDims(shapes)) * widest;
  }
  return std::nullopt;
}

// Bytes of a tensor; string tensors count their characters.
double TensorBytes(const Tensor& t) {
  if (t.dtype() != DType::kString) return static_cast<double>(t.nbytes());
  double total = 0;
  for (const auto& s : t.strings()) total += static_cast<double>(s.size());
  return total;
}

bool IsStaticTensorType(const TypeInfo* type) {
  if (type == nullptr || type->kind != TypeInfo::Kind::kTensor || !type->has_shape) return false;
  for (const auto& d : type->shape) {
    if (!d.is_fixed()) return false;
  }
  return true;
}

// Bytes of the outputs of `n` as shape inference found them, when all of them are static.
std::optional<double> InferredOutputBytes(const Node& n, const Scope& scope) {
  double largest = 0;
  for (const auto& o : n.outputs) {
    if (o.empty()) continue;
    const TypeInfo* t = scope.FindType(o);
    if (!IsStaticTensorType(t)) return std::nullopt;
    std::vector<int64_t> dims;
    for (const auto& d : t->shape) dims.push_back(*d.value);
    largest = std::max(largest, Numel(dims) * ElemBytes(t->elem_type));
  }
  return largest;
}

// The [start, end) range of a shape of `rank` that Shape returns (attributes from opset 15 on; before,
// they are absent and the defaults select everything).
std::pair<int64_t, int64_t> ShapeRange(const Node& n, int64_t rank) {
  auto clamp = [rank](int64_t v) { return std::clamp<int64_t>(v < 0 ? v + rank : v, 0, rank); };
  const int64_t start = clamp(n.AttrInt("start", 0));
  const int64_t end = std::max(start, clamp(n.AttrInt("end", std::numeric_limits<int64_t>::max())));
  return {start, end};
}

// Positions a 1-D Slice of length `dim` selects (ONNX Slice semantics), or nullopt when unsupported.
std::optional<std::vector<int64_t>> SlicePositions(int64_t dim, int64_t start, int64_t end, int64_t step) {
  if (step == 0) return std::nullopt;
  if (start < 0) start += dim;
  if (end < 0) end += dim;
  if (step > 0) {
    start = std::clamp<int64_t>(start, 0, dim);
    end = std::clamp<int64_t>(end, 0, dim);
  } else {
    start = std::clamp<int64_t>(start, 0, dim - 1);
    end = std::clamp<int64_t>(end, -1, dim - 1);
  }
  std::vector<int64_t> pos;
  for (int64_t i = start; step > 0 ? i < end : i > end; i += step) pos.push_back(i);
  return pos;
}

using PartialShape = std::vector<std::optional<int64_t>>;

// Gather or Slice over a partly known shape vector: the picked entries as an int64 tensor when all of
// them are fixed dims.
std::optional<Tensor> PickFromPartialShape(const Node& n, const PartialShape& shape, const Scope& scope,
                                           int64_t opset) {
  const int64_t dim = static_cast<int64_t>(shape.size());
  auto known_ints = [&](size_t k) -> std::optional<std::vector<int64_t>> {
    if (k >= n.inputs.size() || n.inputs[k].empty()) return std::nullopt;
    const Known* v = scope.FindValue(n.inputs[k]);
    if (v == nullptr) return std::nullopt;
    return passes::ToInt64s(v->value);
  };
  std::vector<int64_t> positions;
  std::vector<int64_t> out_dims;
  if (n.op_type == "Gather") {
    const int64_t axis = n.AttrInt("axis", 0);
    if (axis != 0 && axis != -1) return std::nullopt;
    const Known* idx = n.inputs.size() > 1 ? scope.FindValue(n.inputs[1]) : nullptr;
    const auto values = known_ints(1);
    if (idx == nullptr || !values) return std::nullopt;
    for (int64_t v : *values) {
      if (v < -dim || v >= dim) return std::nullopt;
      positions.push_back(v < 0 ? v + dim : v);
    }
    out_dims = idx->value.dims();
  } else {
    std::vector<int64_t> starts, ends, axes, steps;
    if (opset < 10) {
      starts = n.AttrInts("starts", {});
      ends = n.AttrInts("ends", {});
      axes = n.AttrInts("axes", {});
    } else {
      const auto s = known_ints(1), e = known_ints(2);
      if (!s || !e) return std::nullopt;
      starts = *s;
      ends = *e;
      if (n.inputs.size() > 3 && !n.inputs[3].empty()) {
        const auto a = known_ints(3);
        if (!a) return std::nullopt;
        axes = *a;
      }
      if (n.inputs.size() > 4 && !n.inputs[4].empty()) {
        const auto st = known_ints(4);
        if (!st) return std::nullopt;
        steps = *st;
      }
    }
    if (starts.size() != 1 || ends.size() != 1) return std::nullopt;
    if (!axes.empty() && (axes.size() != 1 || (axes[0] != 0 && axes[0] != -1))) return std::nullopt;
    if (!steps.empty() && steps.size() != 1) return std::nullopt;
    const auto pos = SlicePositions(dim, starts[0], ends[0], steps.empty() ? 1 : steps[0]);
    if (!pos) return std::nullopt;
    positions = *pos;
    out_dims = {static_cast<int64_t>(positions.size())};
  }
  std::vector<int64_t> values;
  for (int64_t p : positions) {
    if (!shape[static_cast<size_t>(p)]) return std::nullopt;
    values.push_back(*shape[static_cast<size_t>(p)]);
  }
  return Tensor::FromVector<int64_t>(out_dims, values, n.outputs[0]);
}

// Runs `n` alone through the executor on its constant inputs; nullopt when it fails.
std::optional<std::vector<Tensor>> Evaluate(const Model& model, const Node& n,
                                            const std::vector<const Tensor*>& in) {
  Model m;
  m.ir_version = model.ir_version;
  m.opset_imports = model.opset_imports;
  std::unordered_set<std::string> added;
  for (size_t k = 0; k < n.inputs.size(); ++k) {
    if (n.inputs[k].empty() || !added.insert(n.inputs[k]).second) continue;
    Tensor t = *in[k];
    t.set_name(n.inputs[k]);
    m.graph.initializers.push_back(std::move(t));
  }
  for (const auto& o : n.outputs) {
    if (!o.empty()) m.graph.outputs.push_back({o, TypeInfo{}, ""});
  }
  m.graph.nodes.push_back(n);
  try {
    ExecutorOptions options;
    options.threads = 1;
    Executor exec(m, options);
    return exec.Run({});
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

class FoldConstantsPass : public Pass {
 public:
  explicit FoldConstantsPass(const nlohmann::json& options)
      : max_bytes_(static_cast<double>(options.at("max_folded_bytes").get<int64_t>())),
        fold_shapes_(options.at("fold_shapes").get<bool>()) {}

  void Run(Model& model, PassContext& ctx) override {
    // Inference runs on a copy so that the model keeps the value_info it had; tensors are shared.
    Model inferred = model;
    bool have_types = false;
    try {
      have_types = InferShapes(inferred);
    } catch (const std::exception&) {
      // Without inferred types only plain constant folding applies.
    }
    FoldGraph(model, model.graph, have_types ? &inferred.graph : nullptr, nullptr, ctx);
  }

 private:
  void FoldGraph(const Model& model, Graph& g, const Graph* inferred, const Scope* parent, PassContext& ctx) {
    if (!passes::CanAddInitializers(model, g)) {
      ctx.Note("not folding in subgraph '" + g.name +
               "': before IR version 4 initializers must be graph inputs, which a subgraph cannot add");
      return;
    }
    Scope scope;
    scope.parent = parent;
    if (inferred != nullptr) {
      for (const auto* list : {&inferred->inputs, &inferred->outputs, &inferred->value_info}) {
        for (const auto& v : *list) {
          if (v.type.kind != TypeInfo::Kind::kNone) scope.types.emplace(v.name, &v.type);
        }
      }
    }
    for (const auto& t : g.initializers) {
      if (!passes::IsOverridable(model, g, t.name())) scope.values[t.name()] = {t, true};
    }
    for (const auto& s : g.sparse_initializers) {
      if (Numel(s.dims) * ElemBytes(s.values.dtype()) > max_bytes_) continue;
      try {
        scope.values[s.values.name()] = {passes::DenseFromSparse(s), true};
      } catch (const std::exception&) {
        // An unreadable sparse tensor is simply not known here; the executor reports it when it runs.
      }
    }

    std::vector<const Node*> twin(g.nodes.size(), nullptr);
    if (inferred != nullptr && inferred->nodes.size() == g.nodes.size()) {
      for (size_t i = 0; i < g.nodes.size(); ++i) twin[i] = &inferred->nodes[i];
    }

    const KernelRegistry& registry = KernelRegistry::Default();
    const int64_t opset = model.OpsetVersion("");
    std::unordered_map<std::string, PartialShape> partial;
    std::vector<bool> folded(g.nodes.size(), false);
    int64_t unknown_size = 0;
    for (const size_t i : TopologicalOrder(g)) {
      const Node& n = g.nodes[i];
      if (!n.IsDefaultDomain() || HasSubgraph(n)) continue;
      if (n.op_type == "Constant") {
        if (const Attribute* a = n.FindAttr("sparse_value");
            a != nullptr && !a->sparse_tensors.empty() &&
            Numel(a->sparse_tensors[0].dims) * ElemBytes(a->sparse_tensors[0].values.dtype()) > max_bytes_) {
          continue;
        }
        try {
          if (auto v = passes::ConstantNodeValue(n)) scope.values[n.outputs[0]] = {std::move(*v), true};
        } catch (const std::exception&) {
          // Same as an unreadable sparse initializer above.
        }
        continue;
      }
      if (fold_shapes_ && TryFoldShape(n, scope, partial, opset)) {
        folded[i] = true;
        ctx.Count("folded_shapes");
        continue;
      }
      if (NeverFolded(n)) continue;
      std::vector<const Tensor*> in(n.inputs.size(), nullptr);
      bool all_known = true, any_input = false, from_weight = false;
      for (size_t k = 0; k < n.inputs.size() && all_known; ++k) {
        if (n.inputs[k].empty()) continue;
        const Known* v = scope.FindValue(n.inputs[k]);
        if (v == nullptr) {
          all_known = false;
          break;
        }
        in[k] = &v->value;
        any_input = true;
        from_weight = from_weight || v->from_weight;
      }
      if (!all_known || !any_input) continue;
      if (from_weight && WidensStoredType(n, in)) continue;
      if (IsOp(n, "Dropout") && in.size() > 2 && in[2] != nullptr) {
        const auto training = passes::ToDoubles(*in[2]);
        if (!training || training->empty() || (*training)[0] != 0) continue;
      }
      if (registry.Find(n.domain, n.op_type, opset) == nullptr) continue;

      if (!IsBoundedOp(n.op_type)) {
        std::optional<double> estimate = EstimateOutputBytes(n, in, opset);
        if (!estimate) estimate = InferredOutputBytes(n, scope);
        if (!estimate) {
          ++unknown_size;
          continue;
        }
        if (*estimate > max_bytes_) {
          ctx.Count("skipped_over_cap");
          continue;
        }
      }
      std::optional<std::vector<Tensor>> results = Evaluate(model, n, in);
      if (!results) continue;
      bool too_large = false;
      for (const auto& t : *results) too_large = too_large || TensorBytes(t) > max_bytes_;
      if (too_large) {
        ctx.Count("skipped_over_cap");
        continue;
      }
      size_t r = 0;
      for (const auto& o : n.outputs) {
        if (o.empty()) continue;
        Tensor t = std::move((*results)[r++]);
        t.set_name(o);
        scope.values[o] = {std::move(t), from_weight};
      }
      folded[i] = true;
      ctx.Count("folded_nodes");
    }
    if (unknown_size > 0) {
      ctx.Note(
          "kept " + std::to_string(unknown_size) +
          " nodes with constant inputs unfolded: the size of their result is unknown before running them");
    }

    Materialize(model, g, folded, scope);

    std::vector<Node> kept;
    std::vector<const Node*> kept_twin;
    for (size_t i = 0; i < g.nodes.size(); ++i) {
      if (folded[i]) continue;
      kept.push_back(std::move(g.nodes[i]));
      kept_twin.push_back(twin[i]);
    }
    g.nodes = std::move(kept);

    for (size_t i = 0; i < g.nodes.size(); ++i) {
      for (size_t a = 0; a < g.nodes[i].attributes.size(); ++a) {
        auto& graphs = g.nodes[i].attributes[a].graphs;
        for (size_t k = 0; k < graphs.size(); ++k) {
          const Graph* sub_twin = nullptr;
          if (kept_twin[i] != nullptr && a < kept_twin[i]->attributes.size() &&
              k < kept_twin[i]->attributes[a].graphs.size()) {
            sub_twin = &kept_twin[i]->attributes[a].graphs[k];
          }
          FoldGraph(model, graphs[k], sub_twin, &scope, ctx);
        }
      }
    }
  }

  // Stores, as initializers, the folded values something still reads, in node order.
  static void Materialize(const Model& model, Graph& g, const std::vector<bool>& folded, const Scope& scope) {
    std::unordered_set<std::string> needed = passes::GraphOutputNames(g);
    for (size_t i = 0; i < g.nodes.size(); ++i) {
      if (folded[i]) continue;
      for (const auto& in : g.nodes[i].inputs) needed.insert(in);
      for (const auto& in : OuterScopeInputs(g.nodes[i])) needed.insert(in);
    }
    std::unordered_set<std::string> gone;
    for (const size_t i : TopologicalOrder(g)) {
      if (!folded[i]) continue;
      for (const auto& o : g.nodes[i].outputs) {
        if (o.empty()) continue;
        gone.insert(o);
        if (needed.count(o)) passes::AddInitializer(model, g, scope.values.at(o).value);
      }
    }
    passes::EraseValueInfo(g, gone);
  }

  // Shape and Size of a static shape, and Gather/Slice picking fixed dims out of a partly symbolic one.
  // Also records partly known shapes for the Gather/Slice that may follow.
  bool TryFoldShape(const Node& n, Scope& scope, std::unordered_map<std::string, PartialShape>& partial,
                    int64_t opset) const {
    if (n.inputs.empty() || n.inputs[0].empty() || n.outputs.empty() || n.outputs[0].empty()) return false;
    const std::string& out = n.outputs[0];
    if (n.op_type == "Shape" || n.op_type == "Size") {
      if (scope.FindValue(n.inputs[0]) != nullptr) return false;  // plain constant folding does it
      const TypeInfo* type = scope.FindType(n.inputs[0]);
      if (type == nullptr || type->kind != TypeInfo::Kind::kTensor || !type->has_shape) return false;
      const int64_t rank = static_cast<int64_t>(type->shape.size());
      if (n.op_type == "Size") {
        if (!IsStaticTensorType(type)) return false;
        std::vector<int64_t> dims;
        for (const auto& d : type->shape) dims.push_back(*d.value);
        scope.values[out] = {Tensor::FromVector<int64_t>({}, {ShapeElementCount(dims)}, out), false};
        return true;
      }
      const auto [start, end] = ShapeRange(n, rank);
      PartialShape dims;
      bool all_fixed = true;
      for (int64_t k = start; k < end; ++k) {
        const Dim& d = type->shape[static_cast<size_t>(k)];
        dims.push_back(d.value);
        all_fixed = all_fixed && d.is_fixed();
      }
      if (!all_fixed) {
        partial[out] = std::move(dims);
        return false;
      }
      std::vector<int64_t> values;
      for (const auto& d : dims) values.push_back(*d);
      scope.values[out] = {Tensor::FromVector<int64_t>({static_cast<int64_t>(values.size())}, values, out),
                           false};
      return true;
    }
    if (n.op_type == "Gather" || n.op_type == "Slice") {
      auto it = partial.find(n.inputs[0]);
      if (it == partial.end()) return false;
      std::optional<Tensor> picked = PickFromPartialShape(n, it->second, scope, opset);
      if (!picked) return false;
      scope.values[out] = {std::move(*picked), false};
      return true;
    }
    return false;
  }

  // A Cast (or CastLike) to a wider element type of something derived from a stored weight.
  static bool WidensStoredType(const Node& n, const std::vector<const Tensor*>& in) {
    if (in.empty() || in[0] == nullptr) return false;
    DType to = DType::kUndefined;
    if (n.op_type == "Cast") {
      const int64_t attr = n.AttrInt("to", 0);
      if (!IsKnownDType(static_cast<int32_t>(attr))) return false;
      to = static_cast<DType>(attr);
    } else if (n.op_type == "CastLike" && in.size() > 1 && in[1] != nullptr) {
      to = in[1]->dtype();
    } else {
      return false;
    }
    return DTypeBits(to) > DTypeBits(in[0]->dtype());
  }

  double max_bytes_;
  bool fold_shapes_;
};

}  // namespace

std::unique_ptr<Pass> MakeFoldConstantsPass(const nlohmann::json& options) {
  return std::make_unique<FoldConstantsPass>(options);
}

}  // namespace compress
