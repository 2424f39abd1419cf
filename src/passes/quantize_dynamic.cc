// quantize, mode "dynamic": MatMul, Gemm and Conv with a constant weight become integer operators; the
// weights are quantized ahead of time, the activations at run time.
//
//   Before:  x -> MatMul(W[K,N]) -> y
//   After:   x -> DynamicQuantizeLinear -> (xq, xs, xz)
//            MatMulInteger(xq, Wq, xz, wz) -> Cast(float) -> Mul(Mul(xs, ws)) -> y
//   Before:  x -> Gemm(x, W, C; alpha, beta, transB) -> y
//   After:   ... MatMulInteger(xq, Wq[K,N], xz, wz) -> Cast -> Mul(Mul(xs, alpha * ws)) -> Add(beta * C) -> y
//   Before:  x -> Conv(W, b) -> y
//   After:   ... ConvInteger(xq, Wq, xz, wz) -> Cast -> Mul(Mul(xs, ws[M,1,1])) -> Add(b[M,1,1]) -> y
//
// Weights are int8 symmetric (per output channel with options["per_channel"]: the columns of a MatMul
// weight, dim 0 of a Conv weight) and stored shifted to uint8, q + 128 with zero point 128. The shift
// changes no value, (q + 128) - 128 = q, and is there for ONNX Runtime: DynamicQuantizeLinear yields
// uint8, and its uint8 x int8 MatMulInteger on x86 without VNNI adds pairs of products in saturating
// int16 (2 * 255 * 127 > 32767), which corrupts results silently; uint8 x uint8 is exact. Because every
// channel's zero point is 128, one scalar zero point serves them all (ConvInteger in ONNX Runtime takes no
// per-channel w_zero_point); the per-channel scales are applied by the Mul after the integer product,
// broadcast along the output channel: [N] on the last axis of a MatMul output, [M,1,...] for Conv.
//
// One DynamicQuantizeLinear serves every quantized node reading the same activation, and a weight read by
// several nodes is quantized once. DynamicQuantizeLinear needs opset 11: an older model is converted to 11
// first, and when that fails every node stays in float. Nodes left in float are listed in
// details["float_nodes"] with the reason, and in the notes.
//
// Nodes inside If/Loop/Scan bodies are quantized too, with weights from the body or an enclosing scope:
// the quantized copy and the DynamicQuantizeLinear live in the body, next to their readers. LSTM, GRU and
// RNN get int8 W and R behind DequantizeLinear (the weights-only form, see quantize.cc).

#include "compress/passes/quantize_dynamic.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <unordered_set>

#include "compress/io/schema.h"
#include "pass_util.h"
#include "quant_util.h"

namespace compress {

namespace {

using nlohmann::json;
using passes::IsOp;

// DynamicQuantizeLinear appeared in opset 11 (MatMulInteger and ConvInteger in 10).
constexpr int64_t kMinOpset = 11;
// The offset from int8 to uint8 storage, and the zero point of the shifted weights.
constexpr int32_t kUInt8Shift = 128;

enum class Kind { kMatMul, kGemm, kConv };

struct QuantizedActivation {
  std::string q, scale, zero_point;
};

struct StoredWeight {
  std::string name;           // uint8 initializer
  std::vector<float> scales;  // one per output channel, or one
};

class DynamicQuantizer {
 public:
  DynamicQuantizer(Model& model, const json& options, PassContext& ctx) : model_(model), ctx_(ctx) {
    per_channel_ = options.value("per_channel", true);
    for (const auto& s : options.value("exclude_nodes", json::array()))
      exclude_nodes_.insert(s.get<std::string>());
    for (const auto& s : options.value("exclude_ops", json::array()))
      exclude_ops_.insert(s.get<std::string>());
    if (options.value("activation_type", std::string("uint8")) == "int8") {
      ctx_.Note(
          "dynamic quantization quantizes activations to uint8: DynamicQuantizeLinear has no int8 form");
    }
  }

  void Run() {
    ctx_.details()["float_nodes"] = json::array();
    bool any = AnyQuantizable(model_.graph, nullptr);
    const int64_t opset = model_.OpsetVersion("");
    if (any && opset < kMinOpset) {
      std::string why;
      if (!ConvertOpset(model_, kMinOpset, &why)) {
        const std::string reason = "opset " + std::to_string(opset) +
                                   " has no DynamicQuantizeLinear (opset " + std::to_string(kMinOpset) +
                                   ") and converting the model failed: " + why.substr(0, why.find('\n'));
        ForEachGraph(model_.graph, [&](Graph& g) {
          g_ = &g;
          std::vector<std::string> reasons = Assess();
          for (size_t i = 0; i < reasons.size(); ++i) {
            if (IsCandidate(g.nodes[i]) && reasons[i].empty()) reasons[i] = reason;
          }
          Report(reasons);
        });
        g_ = nullptr;
        return;
      }
      ctx_.Note("converted the model from opset " + std::to_string(opset) + " to " +
                std::to_string(kMinOpset) + " for DynamicQuantizeLinear");
      ctx_.details()["opset"] = {{"from", opset}, {"to", kMinOpset}};
    }
    InGraph(model_.graph, nullptr, any);
    if (any) {
      // Float weights no node (and no body) reads any more, in whichever graph defines them.
      ForEachGraph(model_.graph, [&](Graph& g) {
        const auto uses = passes::UseCounts(g);
        std::unordered_set<std::string> unused;
        for (const auto& t : g.initializers) {
          if (consumed_.count(t.name()) && !uses.count(t.name())) unused.insert(t.name());
        }
        passes::EraseInitializers(g, unused);
      });
    }
  }

 private:
  // The constant initializers visible in `g`: its own, then those of enclosing scopes.
  using Scope = std::map<std::string, const Tensor*>;

  Scope Visible(const Graph& g, const Scope* outer) const {
    Scope visible = outer != nullptr ? *outer : Scope{};
    for (const auto& t : g.initializers) {
      if (!passes::IsOverridable(model_, g, t.name())) visible[t.name()] = &t;
    }
    return visible;
  }

  bool AnyQuantizable(Graph& g, const Scope* outer) {
    g_ = &g;
    scope_ = outer;
    const std::vector<std::string> reasons = Assess();
    bool any = false;
    for (size_t i = 0; i < reasons.size(); ++i) any = any || (IsCandidate(g.nodes[i]) && reasons[i].empty());
    const Scope visible = Visible(g, outer);
    for (auto& n : g.nodes) {
      for (auto& a : n.attributes) {
        for (auto& body : a.graphs) any = AnyQuantizable(body, &visible) || any;
      }
    }
    g_ = nullptr;
    scope_ = nullptr;
    return any;
  }

  // Bodies first (their nodes keep their place while the bodies are rewritten), then `g` itself.
  void InGraph(Graph& g, const Scope* outer, bool rewrite) {
    const Scope visible = Visible(g, outer);
    for (auto& n : g.nodes) {
      for (auto& a : n.attributes) {
        for (auto& body : a.graphs) InGraph(body, &visible, rewrite);
      }
    }
    g_ = &g;
    scope_ = outer;
    const std::vector<std::string> reasons = Assess();
    Report(reasons);
    if (rewrite) Rewrite(reasons);
    g_ = nullptr;
    scope_ = nullptr;
    activations_.clear();
    weights_.clear();
    weight_zero_point_.clear();
  }

  static bool IsCandidate(const Node& n) { return IsOp(n, "MatMul") || IsOp(n, "Gemm") || IsOp(n, "Conv"); }

  // A constant initializer of the current graph or of an enclosing scope.
  const Tensor* ConstantInit(const std::string& name) const {
    if (name.empty()) return nullptr;
    if (const Tensor* t = g_->FindInitializer(name)) return passes::IsOverridable(model_, *g_, name) ? nullptr : t;
    if (scope_ != nullptr) {
      const auto it = scope_->find(name);
      if (it != scope_->end()) return it->second;
    }
    return nullptr;
  }

  static bool AllFinite(const Tensor& t) {
    const float* p = t.data<float>();
    for (int64_t i = 0; i < t.numel(); ++i) {
      if (!std::isfinite(p[i])) return false;
    }
    return true;
  }

  // Why a float32 weight cannot be used, or "".
  static std::string WeightProblem(const Tensor* w, const char* what) {
    if (w == nullptr) return std::string(what) + " is computed at run time (no constant weight)";
    if (w->dtype() != DType::kFloat)
      return std::string(what) + " is " + DTypeName(w->dtype()) + ", not float32";
    if (!AllFinite(*w)) return std::string(what) + " has non-finite values";
    return "";
  }

  // One entry per node of the current graph: "" when the node is quantized, the reason otherwise (also ""
  // for nodes that are not candidates at all).
  std::vector<std::string> Assess() const {
    const Graph& g = *g_;
    std::vector<std::string> reasons(g.nodes.size());
    for (size_t i = 0; i < g.nodes.size(); ++i) {
      const Node& n = g.nodes[i];
      if (!IsCandidate(n)) continue;
      reasons[i] = Assess(n);
    }
    return reasons;
  }

  std::string Assess(const Node& n) const {
    if (!n.name.empty() && exclude_nodes_.count(n.name)) return "excluded by exclude_nodes";
    if (exclude_ops_.count(n.op_type)) return "excluded by exclude_ops";
    if (n.inputs.size() < 2 || n.inputs[0].empty() || n.outputs.empty() || n.outputs[0].empty()) {
      return "unexpected inputs or outputs";
    }
    const Tensor* w = ConstantInit(n.inputs[1]);
    if (IsOp(n, "MatMul")) {
      if (std::string p = WeightProblem(w, "the second operand"); !p.empty()) return p;
      if (w->rank() != 2) return "the weight has rank " + std::to_string(w->rank()) + ", not 2";
      return "";
    }
    if (IsOp(n, "Gemm")) {
      if (std::string p = WeightProblem(w, "B"); !p.empty()) return p;
      if (n.AttrInt("transA", 0) != 0) return "transA=1 is not supported";
      if (n.inputs.size() > 2 && !n.inputs[2].empty()) {
        const Tensor* c = ConstantInit(n.inputs[2]);
        if (c == nullptr && n.AttrFloat("beta", 1.0f) != 1.0f)
          return "C is computed at run time and beta is not 1";
        if (c != nullptr && c->dtype() != DType::kFloat) return "C is not float32";
      }
      return "";
    }
    // Conv
    if (std::string p = WeightProblem(w, "the weight"); !p.empty()) return p;
    if (w->rank() < 3) return "the weight has rank " + std::to_string(w->rank());
    if (n.inputs.size() > 2 && !n.inputs[2].empty()) {
      const Tensor* b = ConstantInit(n.inputs[2]);
      if (b == nullptr) return "the bias is computed at run time";
      if (b->dtype() != DType::kFloat || b->rank() != 1) return "the bias is not a 1-D float32 tensor";
    }
    return "";
  }

  void Report(const std::vector<std::string>& reasons) {
    const Graph& g = *g_;
    for (size_t i = 0; i < g.nodes.size(); ++i) {
      const Node& n = g.nodes[i];
      if (!IsCandidate(n) || reasons[i].empty()) continue;
      ctx_.details()["float_nodes"].push_back({{"node", n.name}, {"op", n.op_type}, {"why", reasons[i]}});
      ctx_.Note("kept " + n.Describe() + " in float: " + reasons[i]);
      ctx_.Count("float_nodes");
    }
  }

  // New initializers wait in pending_ until the rewrite is done (Tensor pointers into the graph are held).
  std::string AddInit(Tensor t, const std::string& base) { return pending_.Add(std::move(t), *names_, base); }

  std::string WeightZeroPoint() {
    if (weight_zero_point_.empty()) {
      weight_zero_point_ =
          AddInit(Tensor::FromVector<uint8_t>({}, {static_cast<uint8_t>(kUInt8Shift)}), "weight_zero_point");
    }
    return weight_zero_point_;
  }

  const QuantizedActivation& Activation(const std::string& x, std::vector<Node>& out) {
    auto it = activations_.find(x);
    if (it != activations_.end()) return it->second;
    QuantizedActivation a{names_->Make(x + "_quantized"), names_->Make(x + "_scale"),
                          names_->Make(x + "_zero_point")};
    Node n;
    n.name = names_->Make(x + "_DynamicQuantizeLinear");
    n.op_type = "DynamicQuantizeLinear";
    n.inputs = {x};
    n.outputs = {a.q, a.scale, a.zero_point};
    out.push_back(std::move(n));
    ctx_.Count("dynamic_quantize_linear");
    return activations_.emplace(x, a).first->second;
  }

  // The weight as int8 symmetric values along `axis` (-1: one scale), stored as uint8 q + 128.
  const StoredWeight& Weight(const Tensor& w, bool transpose, int64_t axis) {
    const std::string key = std::string(transpose ? "T:" : "") + w.name();
    auto it = weights_.find(key);
    if (it != weights_.end()) return it->second;
    Tensor src = w;
    if (transpose) {
      const int64_t rows = w.dims()[0], cols = w.dims()[1];
      src = Tensor(DType::kFloat, {cols, rows}, w.name());
      const float* p = w.data<float>();
      float* q = src.mutable_data<float>();
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) q[c * rows + r] = p[r * cols + c];
      }
    }
    const passes::QuantizedWeight qw = passes::QuantizeWeightSymmetric(src, per_channel_ ? axis : -1);
    Tensor stored(DType::kUInt8, src.dims());
    const int8_t* q = qw.values.data<int8_t>();
    uint8_t* s = stored.mutable_data<uint8_t>();
    for (int64_t i = 0; i < stored.numel(); ++i) s[i] = static_cast<uint8_t>(int32_t{q[i]} + kUInt8Shift);
    StoredWeight sw{AddInit(std::move(stored), w.name() + "_quantized"), qw.scales};
    return weights_.emplace(key, std::move(sw)).first->second;
  }

  Node MakeNode(const std::string& op, std::vector<std::string> inputs, std::vector<std::string> outputs,
                const std::string& base) {
    return passes::NamedNode(*names_, op, std::move(inputs), std::move(outputs), base);
  }

  void Quantize(const Node& n, Kind kind, std::vector<Node>& out) {
    const std::string base = n.name.empty() ? n.outputs[0] : n.name;
    const QuantizedActivation a = Activation(n.inputs[0], out);
    const Tensor w = *ConstantInit(n.inputs[1]);
    consumed_.insert(w.name());
    const bool transpose = kind == Kind::kGemm && n.AttrInt("transB", 0) != 0;
    const StoredWeight sw = Weight(w, transpose, kind == Kind::kConv ? 0 : 1);

    // Per-channel scales broadcast along the output channel: the last axis of a MatMul output, axis 1 of
    // [N, M, spatial...] for Conv (hence [M, 1, ...]).
    const float alpha = kind == Kind::kGemm ? n.AttrFloat("alpha", 1.0f) : 1.0f;
    std::vector<float> scales = sw.scales;
    for (float& s : scales) s *= alpha;
    std::vector<int64_t> scale_dims;
    if (scales.size() > 1) {
      scale_dims.push_back(static_cast<int64_t>(scales.size()));
      if (kind == Kind::kConv) scale_dims.resize(static_cast<size_t>(w.rank() - 1), 1);
    }
    const std::string w_scale =
        AddInit(Tensor::FromVector<float>(scale_dims, scales), base + "_weight_scale");

    // Bias as added to the rescaled product, or "".
    std::string bias;
    if (kind == Kind::kGemm && n.inputs.size() > 2 && !n.inputs[2].empty()) {
      const float beta = n.AttrFloat("beta", 1.0f);
      const Tensor* c = ConstantInit(n.inputs[2]);
      if (c != nullptr && beta != 1.0f) {
        consumed_.insert(c->name());
        Tensor scaled(DType::kFloat, c->dims());
        for (int64_t i = 0; i < c->numel(); ++i) scaled.mutable_data<float>()[i] = beta * c->data<float>()[i];
        bias = AddInit(std::move(scaled), c->name() + "_scaled");
      } else {
        bias = n.inputs[2];
      }
    } else if (kind == Kind::kConv && n.inputs.size() > 2 && !n.inputs[2].empty()) {
      Tensor b = *ConstantInit(n.inputs[2]);
      consumed_.insert(b.name());
      std::vector<int64_t> dims(static_cast<size_t>(w.rank() - 1), 1);
      dims[0] = b.numel();
      b.Reshape(dims);
      bias = AddInit(std::move(b), n.inputs[2] + "_broadcast");
    }

    const std::string scale = names_->Make(base + "_scale");
    out.push_back(MakeNode("Mul", {a.scale, w_scale}, {scale}, base + "_scale"));

    const std::string acc = names_->Make(base + "_int32");
    Node integer;
    integer.name = n.name.empty() ? names_->Make(base + "_integer") : n.name;
    integer.op_type = kind == Kind::kConv ? "ConvInteger" : "MatMulInteger";
    integer.inputs = {a.q, sw.name, a.zero_point, WeightZeroPoint()};
    integer.outputs = {acc};
    if (kind == Kind::kConv) {
      for (const auto& attr : n.attributes) integer.attributes.push_back(attr);
    }
    integer.doc_string = n.doc_string;
    out.push_back(std::move(integer));

    const std::string acc_float = names_->Make(base + "_int32_float");
    Node cast = MakeNode("Cast", {acc}, {acc_float}, base);
    cast.attributes.push_back(Attribute::Int("to", static_cast<int64_t>(DType::kFloat)));
    out.push_back(std::move(cast));

    const std::string& y = n.outputs[0];
    const std::string rescaled = bias.empty() ? y : names_->Make(base + "_rescaled");
    out.push_back(MakeNode("Mul", {acc_float, scale}, {rescaled}, base + "_rescale"));
    if (!bias.empty()) out.push_back(MakeNode("Add", {rescaled, bias}, {y}, base + "_bias"));
    ctx_.Count(kind == Kind::kConv ? "conv_integer" : "matmul_integer");
  }

  void Rewrite(const std::vector<std::string>& reasons) {
    Graph& g = *g_;
    passes::NameGenerator names(model_.graph);
    names_ = &names;
    const std::vector<Node> old = std::move(g.nodes);
    g.nodes.clear();
    std::vector<Node> out;
    for (size_t i = 0; i < old.size(); ++i) {
      const Node& n = old[i];
      if (!IsCandidate(n) || !reasons[i].empty()) {
        out.push_back(n);
        continue;
      }
      const Kind kind = IsOp(n, "MatMul") ? Kind::kMatMul : IsOp(n, "Gemm") ? Kind::kGemm : Kind::kConv;
      Quantize(n, kind, out);
    }
    g.nodes = std::move(out);
    names_ = nullptr;
    pending_.Flush(model_, g);
  }

  Model& model_;
  PassContext& ctx_;
  Graph* g_ = nullptr;             // the graph being assessed or rewritten
  const Scope* scope_ = nullptr;   // constants of its enclosing scopes
  bool per_channel_ = true;
  std::unordered_set<std::string> exclude_nodes_, exclude_ops_;
  passes::NameGenerator* names_ = nullptr;
  passes::PendingInitializers pending_;
  std::map<std::string, QuantizedActivation> activations_;
  std::map<std::string, StoredWeight> weights_;
  std::string weight_zero_point_;
  std::unordered_set<std::string> consumed_;
};

}  // namespace

void QuantizeDynamic(Model& model, const nlohmann::json& options, PassContext& ctx) {
  DynamicQuantizer(model, options, ctx).Run();
}

}  // namespace compress
