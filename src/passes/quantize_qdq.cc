// Static QDQ and weights-only quantization.
//
//   Before:  x -> Conv(W, B) -> Relu -> MaxPool -> Flatten -> Gemm(W2, B2) -> y
//   After:   x -> Q -> DQ -> Conv(DQ(W_q), DQ(B_q)) -> Relu -> Q -> DQ -> MaxPool -> Q -> DQ -> Flatten
//               -> Q -> DQ -> Gemm(DQ(W2_q), DQ(B2_q)) -> y
//
// ONNX Runtime turns each "DQ -> op -> Q" group into an integer kernel, so placement follows what it
// fuses: a pair on every activation a covered op reads and on the output it writes, after a Relu/Clip that
// alone reads that output (the runtime folds the Relu into the requantization), never on a graph output.
// Ops that only move data join their input's group: input and output share one scale and zero point, so
// the runtime drops the DQ/Q around them and runs them on int8 data, and re-quantizing their output loses
// nothing. Every value keeps its name on the node that computes it (x_q / x_dq are new), so a value of the
// quantized model and the same-named value of the float model are the same activation.
#include "quantize_qdq.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "compress/io/schema.h"
#include "compress/ir/verify.h"
#include "compress/util/error.h"
#include "pass_util.h"
#include "quant_util.h"

namespace compress::passes {

// Matrix products with a weight dimension at most this wide gain less from integer kernels than their
// quantize/dequantize steps cost in ONNX Runtime: the sample transformer (64-wide) runs at 0.9-0.94x of
// FP32 in INT8 while the MLP (784x256...) runs 2x faster (BENCHMARKS.md).
constexpr int64_t kNarrowProductWidth = 64;

namespace {

using nlohmann::json;

// Ops that compute on quantized inputs (their output is quantized as well).
bool IsComputeOp(const std::string& op) {
  static const std::set<std::string> ops = {"Conv",    "ConvTranspose", "Gemm",        "MatMul",
                                            "Add",     "Mul",           "AveragePool", "GlobalAveragePool",
                                            "Sigmoid", "HardSigmoid",   "HardSwish"};
  return ops.count(op) != 0;
}

// Ops that only move or select values: their output takes their input's quantization parameters.
bool IsMoveOp(const std::string& op) {
  static const std::set<std::string> ops = {"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze",
                                            "MaxPool", "Concat",    "Resize",  "Gather",  "Slice"};
  return ops.count(op) != 0;
}

// Ops whose output has the element type of their first input, for values shape inference left untyped.
bool KeepsInputType(const std::string& op) {
  static const std::set<std::string> ops = {"Relu",
                                            "Clip",
                                            "LeakyRelu",
                                            "Softmax",
                                            "LayerNormalization",
                                            "BatchNormalization",
                                            "Erf",
                                            "Div",
                                            "Sub",
                                            "Pow",
                                            "Sqrt",
                                            "Tanh",
                                            "Exp",
                                            "Log",
                                            "Neg",
                                            "Abs",
                                            "Identity",
                                            "Dropout",
                                            "ReduceMean",
                                            "ReduceSum",
                                            "Expand",
                                            "Tile",
                                            "Pad"};
  return ops.count(op) != 0 || IsComputeOp(op) || IsMoveOp(op);
}

bool HasSubgraph(const Node& n) {
  for (const auto& a : n.attributes) {
    if (!a.graphs.empty()) return true;
  }
  return false;
}

std::string ContentKey(const Tensor& t) {
  std::string key = std::to_string(static_cast<int>(t.dtype())) + ShapeToString(t.dims()) + ":";
  key.append(static_cast<const char*>(t.raw()), t.nbytes());
  return key;
}

// Largest weight magnitude when activations are quantized too. ONNX Runtime's uint8 x int8 kernels on x86
// without VNNI (AVX2, AVX-512F) add pairs of products in saturating int16 arithmetic: 2 x 255 x 127
// overflows, 2 x 255 x 64 does not. With full-range weights its results drift from the graph's meaning
// (on Fashion-MNIST cnn top-1 dropped 0.6 points and 2% of predictions differed from exact arithmetic);
// with 7 bits they match it. Weights-only models compute in float and keep the full range.
constexpr int kStaticWeightMax = 64;
constexpr int kFullWeightMax = 127;

Node QdqNode(const char* op, std::vector<std::string> inputs, std::string output, int64_t axis) {
  Node n;
  n.op_type = op;
  n.inputs = std::move(inputs);
  n.outputs = {std::move(output)};
  if (axis >= 0) n.attributes.push_back(Attribute::Int("axis", axis));
  return n;
}

// What the two modes share: constants, value types, fresh names, interned scale and zero-point tensors,
// int8 weights, and the final assembly of the node list.
class QdqWriter {
 public:
  // `graph` is the model's main graph or one of its bodies; `outer` holds the constants of the enclosing
  // scopes that nodes of a body may read (null for the main graph).
  QdqWriter(Model& model, const QdqOptions& options, PassContext& ctx, int weight_max, Graph* graph = nullptr,
            const std::map<std::string, Tensor>* outer = nullptr)
      : model_(model),
        g_(graph != nullptr ? *graph : model.graph),
        opt_(options),
        ctx_(ctx),
        names_(model.graph),
        weight_max_(weight_max) {
    TopologicalSort(g_);
    if (outer != nullptr) consts_ = *outer;
    for (const auto& t : g_.initializers) {
      if (!IsOverridable(model_, g_, t.name())) consts_[t.name()] = t;
    }
    for (const auto& n : g_.nodes) {
      if (!IsOp(n, "Constant")) continue;
      if (auto v = ConstantNodeValue(n)) consts_[n.outputs[0]] = std::move(*v);
    }
    for (const auto& v : g_.outputs) graph_outputs_.insert(v.name);
    const GraphIndex index(g_);
    producer_ = index.producer;
    consumers_ = index.consumers;
    if (&g_ == &model_.graph) CollectTypes();
  }

  // The constants visible in this graph (its own and those of enclosing scopes), for the bodies below it.
  const std::map<std::string, Tensor>& constants() const { return consts_; }
  const std::set<std::string>& replaced() const { return replaced_; }

 protected:
  struct QWeight {
    std::string dq;
    std::vector<float> scales;
    std::string scale;  // the initializer holding `scales`
  };

  const Tensor* Const(const std::string& name) const {
    const auto it = consts_.find(name);
    return it == consts_.end() ? nullptr : &it->second;
  }

  bool IsFloat(const std::string& name) const {
    const auto it = types_.find(name);
    return it != types_.end() && it->second == DType::kFloat;
  }

  // A float value computed when the model runs (graph input or node output), not a constant.
  std::string ActivationProblem(const std::string& name) const {
    if (Const(name) != nullptr) return "input '" + name + "' is a constant";
    if (g_.FindInitializer(name) != nullptr)
      return "input '" + name + "' is an initializer listed as a graph input";
    if (!IsFloat(name)) return "input '" + name + "' is not float32";
    return "";
  }

  std::string Excluded(const Node& n) const {
    if (!n.name.empty() && opt_.exclude_nodes.count(n.name)) return "excluded by exclude_nodes";
    if (opt_.exclude_ops.count(n.op_type)) return "excluded by exclude_ops";
    return "";
  }

  void FloatNode(size_t idx, const std::string& why) {
    const Node& n = g_.nodes[idx];
    float_nodes_[idx] = {{"node", n.name.empty() ? n.Describe() : n.name}, {"op", n.op_type}, {"why", why}};
  }

  // A tensor identical to `t` already added, or `t` under a fresh name from `base`.
  std::string Intern(Tensor t, const std::string& base) {
    const std::string key = ContentKey(t);
    const auto it = interned_.find(key);
    if (it != interned_.end()) return it->second;
    const std::string name = names_.Make(base);
    t.set_name(name);
    new_inits_.push_back(std::move(t));
    interned_[key] = name;
    return name;
  }

  // Activation zero points are stored even when they equal QuantizeLinear's default (uint8, 0): ONNX
  // Runtime 1.30 rejects a Conv QDQ group whose activation pair leaves the zero point out ("two nodes with
  // same node name") at its extended optimization level. Weights carry an explicit zero point too (see
  // Weight); biases, read by DequantizeLinear alone, carry none.
  std::string ZeroPoint(DType type, int32_t value) {
    if (type == DType::kUInt8) {
      return Intern(Tensor::FromVector<uint8_t>({}, {static_cast<uint8_t>(value)}),
                    "zp_uint8_" + std::to_string(value));
    }
    return Intern(Tensor::FromVector<int8_t>({}, {static_cast<int8_t>(value)}),
                  "zp_int8_" + std::to_string(value));
  }

  // int8 symmetric copy of the constant `w` (per slice along `axis`, per tensor when axis < 0) behind a
  // DequantizeLinear placed before node `before`; made once per weight and axis.
  const QWeight& Weight(const std::string& w, int64_t axis, size_t before) {
    const auto key = std::make_pair(w, axis);
    const auto it = weights_.find(key);
    if (it != weights_.end()) return it->second;
    QuantizedWeight q = QuantizeWeightSymmetric(*Const(w), axis, weight_max_);
    q.values.set_name(names_.Make(w + "_q"));
    const std::string scale = Intern(ScaleTensor(q.scales, ""), w + "_scale");
    // ONNX Runtime fuses DQ -> Gemm/MatMul -> Q into QGemm/QLinearMatMul by appending every input of the
    // weight's DequantizeLinear to the new node's inputs (qdq_actions.cc, GemmReplaceWithQuant: MoveAll of
    // the B DequantizeLinear). Without a zero point the bias lands in the zero point's slot and the fusion
    // is abandoned, leaving a float Gemm behind DequantizeLinear (0.6x FP32 speed on a Gemm MLP). So the
    // weight's zero point (int8 zeros, the scale's shape; one tensor per shape) is always stored.
    const std::string zp = Intern(WeightZeroPoint(q.scales.size()), "zp_weight");
    const std::string dq = names_.Make(w + "_dq");
    before_[before].push_back(
        QdqNode("DequantizeLinear", {q.values.name(), scale, zp}, dq, q.scales.size() > 1 ? axis : -1));
    const Tensor& original = *Const(w);
    quantized_weight_elems_ += original.numel();
    const Node& reader = g_.nodes[before];
    if ((IsOp(reader, "MatMul") || IsOp(reader, "Gemm")) && original.dims().size() == 2 &&
        std::min(original.dims()[0], original.dims()[1]) <= kNarrowProductWidth) {
      narrow_weight_elems_ += original.numel();
    }
    new_inits_.push_back(std::move(q.values));
    replaced_.insert(w);
    ++quantized_weights_;
    return weights_[key] = QWeight{dq, q.scales, scale};
  }

  // Puts the new nodes in place (each right before its reader or right after its producer, so a sorted
  // graph stays sorted), adds the new initializers and drops the float constants nothing reads any more.
  void Commit() {
    std::vector<Node> nodes;
    nodes.reserve(g_.nodes.size() + at_start_.size() + 2 * (before_.size() + after_.size()));
    for (auto& n : at_start_) nodes.push_back(std::move(n));
    for (size_t idx = 0; idx < g_.nodes.size(); ++idx) {
      if (auto it = before_.find(idx); it != before_.end()) {
        for (auto& n : it->second) nodes.push_back(std::move(n));
      }
      nodes.push_back(std::move(g_.nodes[idx]));
      if (auto it = after_.find(idx); it != after_.end()) {
        for (auto& n : it->second) nodes.push_back(std::move(n));
      }
    }
    g_.nodes = std::move(nodes);
    for (auto& t : new_inits_) AddInitializer(model_, g_, std::move(t));
    new_inits_.clear();

    const auto uses = UseCounts(g_);
    std::unordered_set<std::string> unused;
    for (const auto& name : replaced_) {
      const auto it = uses.find(name);
      if (it == uses.end() || it->second == 0) unused.insert(name);
    }
    if (unused.empty()) return;
    auto gone = [&](const std::string& name) { return unused.count(name) != 0; };
    g_.initializers.erase(std::remove_if(g_.initializers.begin(), g_.initializers.end(),
                                         [&](const Tensor& t) { return gone(t.name()); }),
                          g_.initializers.end());
    g_.inputs.erase(
        std::remove_if(g_.inputs.begin(), g_.inputs.end(), [&](const ValueInfo& v) { return gone(v.name); }),
        g_.inputs.end());
    g_.nodes.erase(std::remove_if(g_.nodes.begin(), g_.nodes.end(),
                                  [&](const Node& n) {
                                    return IsOp(n, "Constant") && n.outputs.size() == 1 && gone(n.outputs[0]);
                                  }),
                   g_.nodes.end());
    EraseValueInfo(g_, unused);
  }

  void ReportFloatNodes() {
    if (float_nodes_.empty()) return;
    json& list = ctx_.details()["float_nodes"];
    if (!list.is_array()) list = json::array();
    for (const auto& [idx, entry] : float_nodes_) list.push_back(entry);
  }

  Model& model_;
  Graph& g_;
  const QdqOptions& opt_;
  PassContext& ctx_;
  NameGenerator names_;
  const int weight_max_;
  std::map<std::string, Tensor> consts_;
  std::unordered_map<std::string, DType> types_;
  std::unordered_set<std::string> graph_outputs_;
  std::unordered_map<std::string, size_t> producer_;
  std::unordered_map<std::string, std::vector<size_t>> consumers_;

  std::vector<Node> at_start_;
  std::map<size_t, std::vector<Node>> before_, after_;
  std::vector<Tensor> new_inits_;
  std::set<std::string> replaced_;      // float constants whose readers were moved to a quantized copy
  std::map<size_t, json> float_nodes_;  // by node position, described before any rewrite
  int64_t quantized_weights_ = 0;

 private:
  void CollectTypes() {
    Model typed = model_;  // tensors share their buffers, so the copy is cheap
    InferShapes(typed);
    for (const Graph* g : {&g_, &typed.graph}) {
      for (const auto* list : {&g->inputs, &g->outputs, &g->value_info}) {
        for (const auto& v : *list) {
          if (v.type.kind == TypeInfo::Kind::kTensor && v.type.elem_type != DType::kUndefined) {
            types_.emplace(v.name, v.type.elem_type);
          }
        }
      }
    }
    for (const auto& t : g_.initializers) types_[t.name()] = t.dtype();
    for (const auto& [name, t] : consts_) types_[name] = t.dtype();
    for (const auto& n : g_.nodes) {
      if (!n.IsDefaultDomain() || n.inputs.empty() || !KeepsInputType(n.op_type)) continue;
      const auto in = types_.find(n.inputs[0]);
      if (in == types_.end() || n.outputs.empty() || n.outputs[0].empty()) continue;
      types_.emplace(n.outputs[0], in->second);
    }
  }

  std::map<std::pair<std::string, int64_t>, QWeight> weights_;
  std::unordered_map<std::string, std::string> interned_;

 protected:
  int64_t quantized_weight_elems_ = 0, narrow_weight_elems_ = 0;  // for the expected-speed note
};

// ---- static ------------------------------------------------------------------------------------------

class StaticQuantizer : public QdqWriter {
 public:
  StaticQuantizer(Model& model, const QdqOptions& options, PassContext& ctx)
      : QdqWriter(model, options, ctx, kStaticWeightMax) {}

  void Run() {
    role_.assign(g_.nodes.size(), Role::kFloat);
    spec_.assign(g_.nodes.size(), Spec{});
    Classify();
    FindHardSwish();
    Demand();
    Sweep();
    ListUncovered();
    if (!quantized_.empty()) {
      Calibrate();
      Rewrite();
      Commit();
    }
    Report();
  }

 private:
  enum class Role { kFloat, kCompute, kMove, kFusedActivation, kHardSigmoidOfSwish };

  // Inputs of a compute node by what they hold.
  struct Spec {
    std::vector<size_t> activations;
    int weight = -1;
    int64_t axis = -1;
    int bias = -1;
    std::vector<size_t> constants;  // constant operands of Add/Mul, quantized like activations
  };

  DType Type() const { return opt_.activation_type; }

  // Why a compute node cannot be quantized ("" when it can); fills `s`.
  std::string PlanCompute(const Node& n, Spec* s) const {
    const std::string& op = n.op_type;
    if (n.inputs.empty() || n.outputs.empty() || n.outputs[0].empty()) return "unexpected inputs or outputs";
    if (!IsFloat(n.outputs[0])) return "output is not float32";
    auto weight = [&](size_t i, int64_t axis, int64_t min_rank) -> std::string {
      const Tensor* w = Const(n.inputs[i]);
      if (w == nullptr) return "weight '" + n.inputs[i] + "' is computed at run time";
      if (w->dtype() != DType::kFloat) return "weight '" + n.inputs[i] + "' is not float32";
      if (w->rank() < min_rank) return "weight '" + n.inputs[i] + "' has an unexpected rank";
      s->weight = static_cast<int>(i);
      s->axis = opt_.per_channel ? axis : -1;
      return "";
    };
    auto bias = [&](size_t i, int64_t channels) {
      if (i >= n.inputs.size() || n.inputs[i].empty()) return;
      const Tensor* b = Const(n.inputs[i]);
      if (b != nullptr && b->dtype() == DType::kFloat && b->rank() == 1 && b->numel() == channels) {
        s->bias = static_cast<int>(i);
      }
    };
    std::string why;
    if (op == "Conv" || op == "ConvTranspose") {
      if (n.inputs.size() < 2) return "no weight input";
      if (!(why = ActivationProblem(n.inputs[0])).empty()) return why;
      const bool conv = op == "Conv";
      if (!(why = weight(1, conv ? 0 : 1, 3)).empty()) return why;
      s->activations = {0};
      const auto& dims = Const(n.inputs[1])->dims();
      if (conv && opt_.min_conv_depth > 0) {
        int64_t depth = dims[1];
        for (size_t d = 2; d < dims.size(); ++d) depth *= dims[d];
        if (depth < opt_.min_conv_depth) {
          return "reduction depth " + std::to_string(depth) + " (input channels per group x kernel) is below " +
                 "min_conv_depth " + std::to_string(opt_.min_conv_depth);
        }
      }
      bias(2, conv ? dims[0] : dims[1] * n.AttrInt("group", 1));
    } else if (op == "Gemm" || op == "MatMul") {
      if (n.inputs.size() < 2) return "missing inputs";
      if (!(why = ActivationProblem(n.inputs[0])).empty()) return why;
      s->activations = {0};
      const Tensor* b = Const(n.inputs[1]);
      if (b != nullptr) {
        const int64_t axis = op == "MatMul" ? (b->rank() == 2 ? 1 : -1) : (n.AttrInt("transB", 0) ? 0 : 1);
        if (!(why = weight(1, axis, op == "Gemm" ? 2 : 1)).empty()) return why;
        if (op == "Gemm" && n.AttrFloat("alpha", 1.0f) == 1.0f && n.AttrFloat("beta", 1.0f) == 1.0f) {
          bias(2, b->dims()[n.AttrInt("transB", 0) ? 0 : 1]);
        }
      } else {
        if (!(why = ActivationProblem(n.inputs[1])).empty()) return why;
        s->activations.push_back(1);
      }
    } else if (op == "Add" || op == "Mul") {
      if (n.inputs.size() != 2) return "unexpected inputs";
      for (size_t i = 0; i < 2; ++i) {
        const Tensor* c = Const(n.inputs[i]);
        if (c != nullptr) {
          if (c->dtype() != DType::kFloat) return "input '" + n.inputs[i] + "' is not float32";
          s->constants.push_back(i);
        } else if (!(why = ActivationProblem(n.inputs[i])).empty()) {
          return why;
        } else {
          s->activations.push_back(i);
        }
      }
      if (s->activations.empty()) return "all inputs are constants";
    } else {
      if (!(why = ActivationProblem(n.inputs[0])).empty()) return why;
      s->activations = {0};
    }
    return "";
  }

  void Classify() {
    for (size_t idx = 0; idx < g_.nodes.size(); ++idx) {
      const Node& n = g_.nodes[idx];
      if (!n.IsDefaultDomain()) continue;
      if (HasSubgraph(n)) {
        ++subgraph_nodes_;
        FloatNode(idx, "has subgraphs, which are left alone");
        continue;
      }
      if (!IsComputeOp(n.op_type)) continue;
      std::string why = Excluded(n);
      if (why.empty()) why = PlanCompute(n, &spec_[idx]);
      if (!why.empty()) {
        spec_[idx] = Spec{};
        FloatNode(idx, why);
        if (IsOp(n, "Conv") || IsOp(n, "ConvTranspose") || IsOp(n, "Gemm") || IsOp(n, "MatMul")) {
          kept_float_compute_.insert(idx);
        }
        continue;
      }
      role_[idx] = Role::kCompute;
    }
  }

  // The single reader of `value`, or nullopt.
  std::optional<size_t> SoleReader(const std::string& value) const {
    if (graph_outputs_.count(value)) return std::nullopt;
    const auto it = consumers_.find(value);
    // A node reading the value twice is listed twice, so this also rules out Mul(x, x).
    if (it == consumers_.end() || it->second.size() != 1) return std::nullopt;
    return it->second[0];
  }

  // x -> HardSigmoid -> h, Mul(x, h): HardSwish as exporters spell it. Quantized as one op: the pair goes
  // on x and on the Mul's output, none on h.
  void FindHardSwish() {
    for (size_t idx = 0; idx < g_.nodes.size(); ++idx) {
      const Node& h = g_.nodes[idx];
      if (role_[idx] != Role::kCompute || h.op_type != "HardSigmoid") continue;
      const auto m = SoleReader(h.outputs[0]);
      if (!m || role_[*m] != Role::kCompute || g_.nodes[*m].op_type != "Mul") continue;
      const Node& mul = g_.nodes[*m];
      const std::string& x = h.inputs[0];
      if (!((mul.inputs[0] == x && mul.inputs[1] == h.outputs[0]) ||
            (mul.inputs[1] == x && mul.inputs[0] == h.outputs[0]))) {
        continue;
      }
      role_[idx] = Role::kHardSigmoidOfSwish;
      spec_[*m].activations = {mul.inputs[0] == x ? size_t{0} : size_t{1}};
      in_swish_.insert(*m);
    }
  }

  // Relu, or Clip with a lower bound of exactly 0.
  bool IsZeroFloorActivation(const Node& n) const {
    if (!n.IsDefaultDomain() || !Excluded(n).empty() || n.outputs.size() != 1) return false;
    if (n.op_type == "Relu") return true;
    if (n.op_type != "Clip") return false;
    if (model_.OpsetVersion("") < 11)
      return n.FindAttr("min") != nullptr && n.AttrFloat("min", -1.0f) == 0.0f;
    if (n.inputs.size() < 2 || n.inputs[1].empty()) return false;
    const Tensor* lo = Const(n.inputs[1]);
    return lo != nullptr && lo->dtype() == DType::kFloat && lo->numel() == 1 && lo->data<float>()[0] == 0.0f;
  }

  // Elementwise Add and Mul join only where their inputs are quantized anyway: they never pull
  // quantization onto values that float ops compute (the Add and Mul inside an exported GELU or
  // LayerNorm would otherwise put a pair on every step of it, for no integer kernel in return).
  bool IsElementwise(size_t idx) const {
    const std::string& op = g_.nodes[idx].op_type;
    return (op == "Add" || op == "Mul") && !in_swish_.count(idx);
  }

  // Nodes that read the float value even where a dequantized copy exists: those the user keeps in float,
  // and Softmax. Between DQ and Q, ONNX Runtime replaces Softmax by QLinearSoftmax, whose table-based
  // arithmetic is up to 5 quantization steps away from Softmax (5.6% of the attention probabilities of the
  // sample ViT, and 0.6% of its predictions); fed a float value it stays a plain Softmax.
  // Nodes that read the original float values rather than dequantized ones: excluded nodes, Softmax, and
  // matrix products and convolutions kept in float. ONNX Runtime quantizes a Conv, ConvTranspose or Gemm
  // that reads a per-tensor DequantizeLinear and holds float weights by itself (WeightBiasQuantization:
  // int8 per-tensor weights and a Div/Round/Cast bias, Round even below opset 11, where it does not
  // exist), so "kept in float" would not stay float in deployment, and at opset 10 ONNX Runtime would
  // reject the model.
  bool ReadsFloat(size_t idx) const {
    const Node& n = g_.nodes[idx];
    return !Excluded(n).empty() || IsOp(n, "Softmax") || kept_float_compute_.count(idx) != 0;
  }

  bool HasQuantizedReader(const std::string& value) const {
    const auto it = consumers_.find(value);
    if (it == consumers_.end()) return false;
    return std::any_of(it->second.begin(), it->second.end(),
                       [&](size_t r) { return !ReadsFloat(r); });
  }

  // The output of compute node `idx` gets a pair, after a Relu/Clip that alone reads it if there is one.
  void QuantizeOutput(size_t idx) {
    std::string out = g_.nodes[idx].outputs[0];
    if (const auto r = SoleReader(out);
        r && role_[*r] == Role::kFloat && IsZeroFloorActivation(g_.nodes[*r])) {
      role_[*r] = Role::kFusedActivation;
      out = g_.nodes[*r].outputs[0];
    }
    if (!graph_outputs_.count(out) && HasQuantizedReader(out)) quantized_.insert(out);
  }

  // Inputs and outputs of the ops with integer kernels of their own (convolutions, matrix products, pools,
  // activations).
  void Demand() {
    for (size_t idx = 0; idx < g_.nodes.size(); ++idx) {
      if (role_[idx] != Role::kCompute || IsElementwise(idx)) continue;
      for (size_t i : spec_[idx].activations) quantized_.insert(g_.nodes[idx].inputs[i]);
      QuantizeOutput(idx);
    }
  }

  std::string Find(const std::string& v) {
    auto it = parent_.find(v);
    if (it == parent_.end() || it->second == v) return v;
    const std::string root = Find(it->second);
    parent_[v] = root;
    return root;
  }

  void Union(const std::string& a, const std::string& b) {
    const std::string ra = Find(a), rb = Find(b);
    if (ra != rb) parent_[rb] = ra;
  }

  // In graph order, so that a chain of them follows the first: elementwise ops whose activation inputs are
  // all quantized, and data-movement ops on a quantized value, which then run on the quantized data.
  void Sweep() {
    for (size_t idx = 0; idx < g_.nodes.size(); ++idx) {
      const Node& n = g_.nodes[idx];
      if (role_[idx] == Role::kCompute && IsElementwise(idx)) {
        for (size_t i : spec_[idx].activations) {
          if (!quantized_.count(n.inputs[i])) {
            role_[idx] = Role::kFloat;
            FloatNode(idx, "input '" + n.inputs[i] + "' is not quantized");
            break;
          }
        }
        if (role_[idx] == Role::kCompute) QuantizeOutput(idx);
        continue;
      }
      if (!n.IsDefaultDomain() || !IsMoveOp(n.op_type) || n.inputs.empty() || n.outputs.empty()) continue;
      std::vector<std::string> data;
      if (n.op_type == "Concat") {
        data = n.inputs;
      } else {
        data = {n.inputs[0]};
      }
      bool any_float = false, any_quantized = false;
      std::string problem;
      for (const auto& d : data) {
        if (!IsFloat(d)) continue;
        any_float = true;
        if (quantized_.count(d)) any_quantized = true;
        if (problem.empty()) problem = ActivationProblem(d);
      }
      if (!any_float) continue;
      std::string why = Excluded(n);
      if (why.empty()) {
        if (!problem.empty()) {
          why = problem;
        } else if (!any_quantized) {
          why = "input is not quantized";
        } else if (n.outputs.size() > 1 && !n.outputs[1].empty()) {
          why = "second output is used";
        } else if (graph_outputs_.count(n.outputs[0])) {
          why = "output is a graph output";
        } else if (!HasQuantizedReader(n.outputs[0])) {
          why = "output is only read in float";
        }
      }
      if (!why.empty()) {
        FloatNode(idx, why);
        continue;
      }
      role_[idx] = Role::kMove;
      for (const auto& d : data) {
        if (!IsFloat(d)) continue;
        quantized_.insert(d);
        Union(d, n.outputs[0]);
      }
      quantized_.insert(n.outputs[0]);
    }
  }

  // Nodes of other op types that read float activations: they compute in float on dequantized values.
  void ListUncovered() {
    for (size_t idx = 0; idx < g_.nodes.size(); ++idx) {
      const Node& n = g_.nodes[idx];
      if (role_[idx] != Role::kFloat || !n.IsDefaultDomain() || HasSubgraph(n) || IsComputeOp(n.op_type) ||
          IsMoveOp(n.op_type) || n.op_type == "Shape" || n.op_type == "Size" || n.op_type == "Constant") {
        continue;
      }
      const bool reads_float = std::any_of(n.inputs.begin(), n.inputs.end(), [&](const std::string& in) {
        return !in.empty() && IsFloat(in) && Const(in) == nullptr;
      });
      if (reads_float) FloatNode(idx, "op not covered");
    }
  }

  void Calibrate() {
    const std::vector<std::string> names(quantized_.begin(), quantized_.end());
    // Statistics are gathered for every float activation, not only for those this recipe quantizes, so
    // that a saved table (--calib-table) serves other recipes of the same model (other exclusions, another
    // min_conv_depth) without another calibration run.
    std::set<std::string> wanted(quantized_.begin(), quantized_.end());
    for (const auto& v : g_.inputs) {
      if (IsFloat(v.name) && Const(v.name) == nullptr && g_.FindInitializer(v.name) == nullptr) wanted.insert(v.name);
    }
    for (const auto& n : g_.nodes) {
      for (const auto& o : n.outputs) {
        if (!o.empty() && IsFloat(o) && Const(o) == nullptr) wanted.insert(o);
      }
    }
    const CalibrationTable& table =
        ctx_.calibration()->Get(model_, std::vector<std::string>(wanted.begin(), wanted.end()));
    RangeOptions ro = opt_.range;
    ro.symmetric = Type() == DType::kInt8;
    ro.levels = ro.symmetric ? 255 : 256;
    for (const auto& name : names) {
      const auto it = table.tensors.find(name);
      if (it == table.tensors.end()) ThrowInvalid("calibration has no statistics for value '" + name + "'");
      const QuantRange r = ComputeRange(it->second, ro);
      const std::string root = Find(name);
      auto [g, fresh] = group_range_.emplace(root, r);
      if (!fresh) {
        g->second.lo = std::min(g->second.lo, r.lo);
        g->second.hi = std::max(g->second.hi, r.hi);
      }
    }
  }

  // Scale, zero point and the range they came from, for the group of `value`.
  struct Group {
    QuantParams params;
    QuantRange range;
    std::string scale, zero_point;
  };

  const Group& GroupOf(const std::string& value) {
    const std::string root = Find(value);
    auto it = groups_.find(root);
    if (it != groups_.end()) return it->second;
    Group gr;
    gr.range = group_range_.at(root);
    gr.params = ActivationParams(gr.range, Type());
    gr.scale = Intern(ScaleTensor({gr.params.scale}, ""), value + "_scale");
    gr.zero_point = ZeroPoint(Type(), gr.params.zero_point);
    return groups_[root] = gr;
  }

  void AddPair(const std::string& value) {
    const Group& gr = GroupOf(value);
    const std::string q = names_.Make(value + "_q"), dq = names_.Make(value + "_dq");
    std::vector<Node> pair = {QdqNode("QuantizeLinear", {value, gr.scale, gr.zero_point}, q, -1),
                              QdqNode("DequantizeLinear", {q, gr.scale, gr.zero_point}, dq, -1)};
    const auto p = producer_.find(value);
    auto& where = p == producer_.end() ? at_start_ : after_[p->second];
    for (auto& n : pair) where.push_back(std::move(n));
    dq_of_[value] = dq;
    tensors_.push_back({{"name", value},
                        {"scale", gr.params.scale},
                        {"zero_point", gr.params.zero_point},
                        {"dtype", DTypeName(Type())},
                        {"lo", gr.range.lo},
                        {"hi", gr.range.hi}});
    min_scale_ = std::min(min_scale_, gr.params.scale);
    max_scale_ = std::max(max_scale_, gr.params.scale);
  }

  // A constant operand of Add/Mul as the activation type, with parameters from its own values.
  std::string ConstOperand(const std::string& c, size_t before) {
    if (auto it = const_dq_.find(c); it != const_dq_.end()) return it->second;
    const Tensor& t = *Const(c);
    const float* v = t.data<float>();
    QuantRange r;
    for (int64_t i = 0; i < t.numel(); ++i) {
      if (!std::isfinite(v[i])) continue;
      r.lo = std::min(r.lo, v[i]);
      r.hi = std::max(r.hi, v[i]);
    }
    const QuantParams p = ActivationParams(r, Type());
    const bool u8 = Type() == DType::kUInt8;
    const double qmin = u8 ? 0 : -127, qmax = u8 ? 255 : 127;
    Tensor q(Type(), t.dims(), names_.Make(c + "_q"));
    for (int64_t i = 0; i < t.numel(); ++i) {
      const double x = std::isfinite(v[i]) ? std::nearbyint(v[i] / p.scale) + p.zero_point : p.zero_point;
      const double clamped = std::clamp(x, qmin, qmax);
      if (u8) {
        q.mutable_data<uint8_t>()[i] = static_cast<uint8_t>(clamped);
      } else {
        q.mutable_data<int8_t>()[i] = static_cast<int8_t>(clamped);
      }
    }
    const std::string scale = Intern(ScaleTensor({p.scale}, ""), c + "_scale");
    const std::string zp = ZeroPoint(Type(), p.zero_point);
    const std::string dq = names_.Make(c + "_dq");
    before_[before].push_back(QdqNode("DequantizeLinear", {q.name(), scale, zp}, dq, -1));
    new_inits_.push_back(std::move(q));
    replaced_.insert(c);
    ++quantized_constants_;
    return const_dq_[c] = dq;
  }

  // int32 bias with scale input_scale x weight_scale per output channel, zero point 0. The scale is a Mul
  // of the input's and the weight's scale tensors (one per pair) when derive_bias_scales is set, else a
  // tensor of its own.
  std::string Bias(const std::string& b, const Group& input, const QWeight& weight, size_t before) {
    const float input_scale = input.params.scale;
    const std::vector<float>& weight_scales = weight.scales;
    const auto key = std::make_tuple(b, input_scale, weight_scales);
    if (auto it = biases_.find(key); it != biases_.end()) return it->second;
    const Tensor& t = *Const(b);
    std::vector<float> ws = weight_scales;
    if (ws.size() > 1 && static_cast<int64_t>(ws.size()) != t.numel()) {
      // ConvTranspose with groups: the weight's axis 1 holds the channels of one group.
      ws.resize(static_cast<size_t>(t.numel()));
      for (size_t c = weight_scales.size(); c < ws.size(); ++c)
        ws[c] = weight_scales[c % weight_scales.size()];
    }
    Tensor q = QuantizeBias(t, input_scale, ws);
    q.set_name(names_.Make(b + "_q"));
    std::string scale;
    if (opt_.derive_bias_scales && ws.size() == weight_scales.size()) {
      // float32 products, exactly what the stored tensor would hold.
      const auto pair = std::make_pair(input.scale, weight.scale);
      if (auto it = bias_scales_.find(pair); it != bias_scales_.end()) {
        scale = it->second;
      } else {
        scale = bias_scales_[pair] = names_.Make(b + "_scale");
        Node mul;
        mul.op_type = "Mul";
        mul.inputs = {input.scale, weight.scale};
        mul.outputs = {scale};
        before_[before].push_back(std::move(mul));
      }
    } else {
      std::vector<float> scales(ws.size());
      for (size_t c = 0; c < ws.size(); ++c) scales[c] = input_scale * ws[c];
      scale = Intern(ScaleTensor(scales, ""), b + "_scale");
    }
    const std::string dq = names_.Make(b + "_dq");
    before_[before].push_back(QdqNode("DequantizeLinear", {q.name(), scale}, dq, ws.size() > 1 ? 0 : -1));
    new_inits_.push_back(std::move(q));
    replaced_.insert(b);
    ++quantized_biases_;
    return biases_[key] = dq;
  }

  void Rewrite() {
    // Pairs in graph order: graph inputs first, then node outputs.
    for (const auto& v : g_.inputs) {
      if (quantized_.count(v.name)) AddPair(v.name);
    }
    for (const auto& n : g_.nodes) {
      for (const auto& out : n.outputs) {
        if (!out.empty() && quantized_.count(out)) AddPair(out);
      }
    }
    for (size_t idx = 0; idx < g_.nodes.size(); ++idx) {
      Node& n = g_.nodes[idx];
      // Nodes that read float values (ReadsFloat) keep their inputs.
      if (ReadsFloat(idx)) continue;
      const std::vector<std::string> original = n.inputs;
      for (auto& in : n.inputs) {
        if (auto it = dq_of_.find(in); it != dq_of_.end()) in = it->second;
      }
      if (role_[idx] == Role::kMove || role_[idx] == Role::kHardSigmoidOfSwish) ++quantized_nodes_;
      if (role_[idx] != Role::kCompute) continue;
      ++quantized_nodes_;
      const Spec& s = spec_[idx];
      const QWeight* weight = nullptr;
      if (s.weight >= 0) {
        weight = &Weight(n.inputs[static_cast<size_t>(s.weight)], s.axis, idx);
        n.inputs[static_cast<size_t>(s.weight)] = weight->dq;
      }
      if (s.bias >= 0 && weight != nullptr) {
        n.inputs[static_cast<size_t>(s.bias)] =
            Bias(n.inputs[static_cast<size_t>(s.bias)], GroupOf(original[s.activations[0]]), *weight, idx);
      }
      for (size_t i : s.constants) n.inputs[i] = ConstOperand(n.inputs[i], idx);
    }
  }

  void Report() {
    ctx_.Count("quantized_nodes", quantized_nodes_);
    ctx_.Count("quantized_weights", quantized_weights_);
    ctx_.Count("quantized_biases", quantized_biases_);
    ctx_.Count("qdq_pairs", static_cast<int64_t>(dq_of_.size()));
    if (quantized_constants_ > 0) ctx_.Count("quantized_constants", quantized_constants_);
    ReportFloatNodes();
    json& d = ctx_.details();
    if (!tensors_.empty()) d["tensors"] = tensors_;
    d["summary"] = {{"activation_type", DTypeName(Type())},
                    {"calib_method", CalibMethodName(opt_.range.method)},
                    {"per_channel", opt_.per_channel},
                    {"activations", tensors_.size()},
                    {"min_scale", tensors_.empty() ? 0.0f : min_scale_},
                    {"max_scale", tensors_.empty() ? 0.0f : max_scale_}};
    if (subgraph_nodes_ > 0) {
      ctx_.Note("quantize: " + std::to_string(subgraph_nodes_) +
                " node(s) with subgraphs left alone; their bodies stay float");
    }
    if (quantized_weight_elems_ > 0 && 2 * narrow_weight_elems_ > quantized_weight_elems_) {
      d["expected_slower"] = true;
      ctx_.Note("quantize: most quantized weights are in matrix products " + std::to_string(kNarrowProductWidth) +
                " or fewer wide, where an integer kernel saves less than the QuantizeLinear/DequantizeLinear steps "
                "around it cost: expect the INT8 model to be slower than FP32 in ONNX Runtime (BENCHMARKS.md)");
    }
    ctx_.Note("quantize: static QDQ (" + std::string(DTypeName(Type())) + " activations, " +
              CalibMethodName(opt_.range.method) + " ranges): " + std::to_string(quantized_nodes_) +
              " node(s) quantized, " + std::to_string(dq_of_.size()) + " activation pair(s), " +
              std::to_string(quantized_weights_) + " int8 weight(s); " + std::to_string(float_nodes_.size()) +
              " node(s) left in float (see float_nodes)");
  }

  std::vector<Role> role_;
  std::vector<Spec> spec_;
  std::set<size_t> kept_float_compute_;  // matrix products and convolutions left in float (ReadsFloat)
  std::set<size_t> in_swish_;        // the Mul of each HardSigmoid + Mul pair
  std::set<std::string> quantized_;  // values that get a Q/DQ pair
  std::unordered_map<std::string, std::string> parent_;
  std::map<std::string, QuantRange> group_range_;
  std::map<std::string, Group> groups_;
  std::map<std::string, std::string> dq_of_;
  std::map<std::string, std::string> const_dq_;
  std::map<std::tuple<std::string, float, std::vector<float>>, std::string> biases_;
  std::map<std::pair<std::string, std::string>, std::string> bias_scales_;
  json tensors_ = json::array();
  float min_scale_ = std::numeric_limits<float>::infinity(), max_scale_ = 0;
  int64_t quantized_nodes_ = 0, quantized_biases_ = 0, quantized_constants_ = 0, subgraph_nodes_ = 0;
};

// ---- weights only ------------------------------------------------------------------------------------

class WeightsOnlyQuantizer : public QdqWriter {
 public:
  WeightsOnlyQuantizer(Model& model, const QdqOptions& options, PassContext& ctx, Graph& graph,
                       const std::map<std::string, Tensor>* outer)
      : QdqWriter(model, options, ctx, kFullWeightMax, &graph, outer) {}

  // Quantizes the weights read in this graph; returns the number of nodes reading an int8 weight now.
  int64_t Run() {
    int64_t nodes = 0;
    for (size_t idx = 0; idx < g_.nodes.size(); ++idx) {
      Node& n = g_.nodes[idx];
      if (!n.IsDefaultDomain() || n.inputs.size() < 2) continue;
      const std::string& op = n.op_type;
      if (opt_.recurrent_only && !IsRecurrent(op)) continue;
      size_t wi = 1;
      int64_t axis = -1;
      if (IsRecurrent(op)) {
        // W [directions, gates x hidden, input] and R [directions, gates x hidden, hidden]: one scale per
        // row (per gate unit) along axis 1. The bias B stays float.
        QuantizeRecurrent(idx, &nodes);
        continue;
      }
      if (op == "Gather") {
        // Only lookups in a constant table are weights; Gather on activations is data movement.
        const Tensor* t = Const(n.inputs[0]);
        if (t == nullptr || t->dtype() != DType::kFloat || t->rank() != 2) continue;
        wi = 0;
        axis = 0;
      } else if (op == "Conv") {
        axis = 0;
      } else if (op == "ConvTranspose") {
        axis = 1;
      } else if (op == "Gemm") {
        axis = n.AttrInt("transB", 0) ? 0 : 1;
      } else if (op == "MatMul") {
        const Tensor* t = Const(n.inputs[1]);
        axis = t != nullptr && t->rank() == 2 ? 1 : -1;
      } else {
        continue;
      }
      std::string why = Excluded(n);
      const Tensor* w = Const(n.inputs[wi]);
      if (why.empty() && w == nullptr) why = "weight '" + n.inputs[wi] + "' is computed at run time";
      if (why.empty() && w->dtype() != DType::kFloat) why = "weight '" + n.inputs[wi] + "' is not float32";
      if (why.empty() && (op == "Gemm" && w->rank() != 2)) why = "weight has an unexpected rank";
      if (!why.empty()) {
        FloatNode(idx, why);
        continue;
      }
      n.inputs[wi] = Weight(n.inputs[wi], opt_.per_channel ? axis : -1, idx).dq;
      ++nodes;
    }
    Commit();
    ReportFloatNodes();
    return nodes;
  }

  int64_t quantized_weights() const { return quantized_weights_; }

 private:
  static bool IsRecurrent(const std::string& op) { return op == "LSTM" || op == "GRU" || op == "RNN"; }

  void QuantizeRecurrent(size_t idx, int64_t* nodes) {
    Node& n = g_.nodes[idx];
    std::string why = Excluded(n);
    if (why.empty() && n.inputs.size() < 3) why = "missing W or R";
    for (size_t wi = 1; why.empty() && wi <= 2; ++wi) {
      const Tensor* w = Const(n.inputs[wi]);
      if (w == nullptr) {
        why = "weight '" + n.inputs[wi] + "' is computed at run time";
      } else if (w->dtype() != DType::kFloat) {
        why = "weight '" + n.inputs[wi] + "' is not float32";
      } else if (w->rank() != 3) {
        why = "weight '" + n.inputs[wi] + "' has rank " + std::to_string(w->rank()) + ", not 3";
      }
    }
    if (!why.empty()) {
      FloatNode(idx, why);
      return;
    }
    for (size_t wi = 1; wi <= 2; ++wi) n.inputs[wi] = Weight(n.inputs[wi], opt_.per_channel ? 1 : -1, idx).dq;
    ++*nodes;
    ++recurrent_nodes_;
  }

 public:
  int64_t recurrent_nodes_ = 0;
};

// Runs the weights-only quantizer on `graph` and, first, on the bodies of its nodes (bottom up, so that a
// body is rewritten before the node holding it moves). `outer` holds the constants of enclosing scopes.
void WeightsOnlyInGraph(Model& model, Graph& graph, const std::map<std::string, Tensor>* outer,
                        const QdqOptions& options, PassContext& ctx, std::set<std::string>* replaced,
                        int64_t totals[3]) {
  bool has_bodies = false;
  for (const auto& n : graph.nodes) has_bodies = has_bodies || HasSubgraph(n);
  if (has_bodies) {
    // The constants the bodies see: this graph's and the enclosing ones (a body's own shadow them).
    std::map<std::string, Tensor> visible = outer != nullptr ? *outer : std::map<std::string, Tensor>{};
    for (const auto& t : graph.initializers) {
      if (!IsOverridable(model, graph, t.name())) visible[t.name()] = t;
    }
    for (const auto& n : graph.nodes) {
      if (!IsOp(n, "Constant")) continue;
      if (auto v = ConstantNodeValue(n)) visible[n.outputs[0]] = std::move(*v);
    }
    for (auto& n : graph.nodes) {
      for (auto& a : n.attributes) {
        for (auto& body : a.graphs) WeightsOnlyInGraph(model, body, &visible, options, ctx, replaced, totals);
      }
    }
  }
  WeightsOnlyQuantizer q(model, options, ctx, graph, outer);
  totals[0] += q.Run();
  totals[1] += q.quantized_weights();
  totals[2] += q.recurrent_nodes_;
  replaced->insert(q.replaced().begin(), q.replaced().end());
}

// Float constants of enclosing scopes that bodies read through an int8 copy now: removed from the graph
// defining them once nothing (no node, no body) reads them any more.
void EraseUnreadConstants(Graph& graph, const std::set<std::string>& names) {
  for (auto& n : graph.nodes) {
    for (auto& a : n.attributes) {
      for (auto& body : a.graphs) EraseUnreadConstants(body, names);
    }
  }
  const auto uses = UseCounts(graph);
  std::unordered_set<std::string> unused;
  auto unread = [&](const std::string& name) {
    if (!names.count(name)) return false;
    const auto it = uses.find(name);
    return it == uses.end() || it->second == 0;
  };
  for (const auto& t : graph.initializers) {
    if (unread(t.name())) unused.insert(t.name());
  }
  for (const auto& n : graph.nodes) {
    if (IsOp(n, "Constant") && n.outputs.size() == 1 && unread(n.outputs[0])) unused.insert(n.outputs[0]);
  }
  if (unused.empty()) return;
  EraseInitializers(graph, unused);
  graph.nodes.erase(std::remove_if(graph.nodes.begin(), graph.nodes.end(),
                                   [&](const Node& n) {
                                     return IsOp(n, "Constant") && n.outputs.size() == 1 &&
                                            unused.count(n.outputs[0]) != 0;
                                   }),
                    graph.nodes.end());
  EraseValueInfo(graph, unused);
}

}  // namespace

bool IsQuantizedOp(const std::string& op) {
  static const std::set<std::string> ops = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
                                            "QLinearConv",    "QLinearMatMul",    "MatMulInteger",
                                            "ConvInteger"};
  return ops.count(op) != 0;
}

void QuantizeStaticQdq(Model& model, const QdqOptions& options, PassContext& ctx) {
  StaticQuantizer(model, options, ctx).Run();
}

void QuantizeWeightsOnly(Model& model, const QdqOptions& options, PassContext& ctx) {
  std::set<std::string> replaced;
  int64_t totals[3] = {0, 0, 0};  // nodes, weights, recurrent nodes
  WeightsOnlyInGraph(model, model.graph, nullptr, options, ctx, &replaced, totals);
  EraseUnreadConstants(model.graph, replaced);
  ctx.Count("quantized_nodes", totals[0]);
  ctx.Count("quantized_weights", totals[1]);
  if (totals[2] > 0) ctx.Count("quantized_recurrent_nodes", totals[2]);
  if (options.recurrent_only) {
    if (totals[2] > 0) {
      ctx.Note("quantize: " + std::to_string(totals[2]) +
               " LSTM/GRU/RNN node(s): W and R stored int8 behind DequantizeLinear (weights only, float "
               "computation); ONNX Runtime's DynamicQuantizeLSTM is not used because the compress executor has "
               "no kernel for it, and GRU and RNN have no integer kernel in ONNX Runtime");
    }
    return;
  }
  ctx.Note("quantize: weights only: " + std::to_string(totals[1]) + " int8 weight(s) " +
           (options.per_channel ? "per channel" : "per tensor") +
           " behind DequantizeLinear; computation stays float");
}

}  // namespace compress::passes
