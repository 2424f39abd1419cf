// fold_batch_norm: an inference-form BatchNormalization after a Conv, ConvTranspose, Gemm or MatMul is
// folded into that node's weight and bias.
//
//   Before:  x -> Conv(W, b) -> t -> BatchNormalization(gamma, beta, mean, var) -> y
//   After:   x -> Conv(W', b') -> y
//   Before:  x[M,K] -> MatMul(W[K,N]) -> t -> BatchNormalization -> y
//   After:   x[M,K] -> MatMul(W') -> t -> Add(b') -> y
//
// BatchNormalization computes y = (t - mean) * s + beta per channel c (axis 1) with
// s = gamma / sqrt(var + epsilon). Each producer is linear in its weight per output channel,
// t[c] = sum(W[c] * x) + b[c], so y[c] = sum((W[c] * s[c]) * x) + (b[c] - mean[c]) * s[c] + beta[c]:
// W' = W * s per output channel and b' = (b - mean) * s + beta (b = 0 when absent). Output channels live
// on dim 0 of a Conv weight [C_out, C_in/g, k...]; on dim 1, group by group, of a ConvTranspose weight
// [C_in, C_out/g, k...]; on the columns of B[K,N] for Gemm and MatMul (rows when Gemm has transB). Gemm's
// alpha and beta are folded in too: y = A (alpha B s) + s (beta C - mean) + beta_bn, with alpha = beta = 1.
// A MatMul's output has its channel on axis 1 only when it is 2-D, so only that case is folded.
//
// The weights are computed in double and stored in the weight's own type. A weight or bias another
// node also reads is copied first, and the producer's output must have no other reader, since both
// change meaning. BatchNormalization nodes that cannot be folded stay, with a note saying why.

#include <cmath>

#include "compress/io/schema.h"
#include "compress/passes/builders.h"
#include "pass_util.h"

namespace compress {

namespace {

using passes::IsOp;

constexpr double kDefaultEpsilon = 1e-5;

struct Folding {
  size_t producer = 0;
  std::vector<double> scale;  // s per output channel
  std::vector<double> shift;  // beta - mean * s, before adding b * s
};

class FoldBatchNormPass : public Pass {
 public:
  void Run(Model& model, PassContext& ctx) override {
    passes::NameGenerator names(model.graph);
    ForEachGraph(model.graph, [&](Graph& g) { RunGraph(model, g, names, ctx); });
  }

 private:
  void RunGraph(Model& model, Graph& g, passes::NameGenerator& names, PassContext& ctx) {
    std::vector<bool> removed(g.nodes.size(), false);
    std::unordered_set<std::string> stale;
    for (size_t i = 0; i < g.nodes.size(); ++i) {
      if (!IsOp(g.nodes[i], "BatchNormalization")) continue;
      const std::string why = TryFold(model, g, i, names, &removed, &stale);
      if (why.empty()) {
        ctx.Count("folded");
      } else {
        ctx.Count("kept");
        ctx.Note("kept BatchNormalization " + g.nodes[i].Describe() + ": " + why);
      }
    }
    std::vector<Node> kept;
    for (size_t i = 0; i < g.nodes.size(); ++i) {
      if (!removed[i]) kept.push_back(std::move(g.nodes[i]));
    }
    g.nodes = std::move(kept);
    passes::EraseValueInfo(g, stale);
  }

  // A constant initializer of `g` (not one the caller may override), or null.
  static const Tensor* ConstantInit(const Model& model, const Graph& g, const std::string& name) {
    if (name.empty() || passes::IsOverridable(model, g, name)) return nullptr;
    return g.FindInitializer(name);
  }

  static bool IsFloatWeight(DType t) {
    return t == DType::kFloat || t == DType::kDouble || t == DType::kFloat16 || t == DType::kBFloat16;
  }

  // Rank of `name` as declared, or as inferred on a copy of the model (computed once, on first need).
  int64_t RankOf(Model& model, const Graph& g, const std::string& name) {
    if (const TypeInfo* t = FindValueType(g, name);
        t != nullptr && t->kind == TypeInfo::Kind::kTensor && t->has_shape) {
      return static_cast<int64_t>(t->shape.size());
    }
    if (!inferred_) {
      inferred_ = std::make_unique<std::unordered_map<std::string, int64_t>>();
      Model copy = model;
      bool inferred_ok = false;
      try {
        inferred_ok = InferShapes(copy);
      } catch (const std::exception&) {
        // Ranks stay unknown: MatMul + BatchNormalization is then kept.
      }
      if (inferred_ok) {
        // Sibling subgraphs may reuse a name; a name seen with two ranks is left unknown.
        std::unordered_set<std::string> conflicting;
        ForEachGraph(copy.graph, [&](const Graph& sg) {
          for (const auto& v : sg.value_info) {
            if (v.type.kind != TypeInfo::Kind::kTensor || !v.type.has_shape) continue;
            const int64_t rank = static_cast<int64_t>(v.type.shape.size());
            auto [it, inserted] = inferred_->emplace(v.name, rank);
            if (!inserted && it->second != rank) conflicting.insert(v.name);
          }
        });
        for (const auto& c : conflicting) inferred_->erase(c);
      }
    }
    auto it = inferred_->find(name);
    return it == inferred_->end() ? -1 : it->second;
  }

  // Folds node i into its producer; returns why not when it cannot.
  std::string TryFold(Model& model, Graph& g, size_t i, passes::NameGenerator& names,
                      std::vector<bool>* removed, std::unordered_set<std::string>* stale) {
    const int64_t opset = model.OpsetVersion("");
    const Node bn = g.nodes[i];
    if (bn.inputs.size() < 5 || bn.outputs.empty() || bn.outputs[0].empty()) return "not in inference form";
    for (size_t k = 1; k < bn.outputs.size(); ++k) {
      if (!bn.outputs[k].empty()) return "it also outputs training statistics";
    }
    if (bn.AttrInt("training_mode", 0) != 0) return "training_mode is set";
    if (opset < 9 && bn.AttrInt("spatial", 1) != 1)
      return "spatial=0 normalizes per element, not per channel";

    const std::string& x = bn.inputs[0];
    const auto uses = passes::UseCounts(g);
    size_t p = g.nodes.size();
    for (size_t k = 0; k < g.nodes.size(); ++k) {
      if ((*removed)[k]) continue;
      for (const auto& o : g.nodes[k].outputs) {
        if (o == x) p = k;
      }
    }
    if (p == g.nodes.size()) return "its input is not produced by a node of this graph";
    Node& prod = g.nodes[p];
    const bool conv = IsOp(prod, "Conv"), convt = IsOp(prod, "ConvTranspose"), gemm = IsOp(prod, "Gemm"),
               matmul = IsOp(prod, "MatMul");
    if (!conv && !convt && !gemm && !matmul) {
      return "its input comes from " + prod.op_type + ", not Conv, ConvTranspose, Gemm or MatMul";
    }
    if (uses.at(x) != 1) return "its input '" + x + "' has other readers";
    if (prod.outputs.size() != 1) return "the producer has several outputs";

    // Parameters, in double.
    std::vector<std::vector<double>> params;
    for (size_t k = 1; k <= 4; ++k) {
      const Tensor* t = ConstantInit(model, g, bn.inputs[k]);
      if (t == nullptr) return "its parameter '" + bn.inputs[k] + "' is not a constant initializer";
      auto v = passes::ToDoubles(*t);
      if (!v || !IsFloatWeight(t->dtype()))
        return "its parameter '" + bn.inputs[k] + "' is not floating point";
      params.push_back(std::move(*v));
    }
    const size_t channels = params[0].size();
    for (const auto& v : params) {
      if (v.size() != channels) return "its parameters differ in length";
    }
    const double eps = static_cast<double>(bn.AttrFloat("epsilon", static_cast<float>(kDefaultEpsilon)));
    std::vector<double> scale(channels), shift(channels);
    for (size_t c = 0; c < channels; ++c) {
      scale[c] = params[0][c] / std::sqrt(params[3][c] + eps);
      shift[c] = params[1][c] - params[2][c] * scale[c];
    }

    if (prod.inputs.size() < 2) return "the producer has no weight";
    const std::string w_name = prod.inputs[1];
    const Tensor* w = ConstantInit(model, g, w_name);
    if (w == nullptr) return "the producer's weight '" + w_name + "' is not a constant initializer";
    if (!IsFloatWeight(w->dtype())) return "the producer's weight is " + std::string(DTypeName(w->dtype()));
    const std::vector<int64_t>& wd = w->dims();
    const int64_t c64 = static_cast<int64_t>(channels);

    // Output channel of each weight element.
    std::vector<size_t> channel_of(static_cast<size_t>(w->numel()));
    if (conv) {
      if (wd.size() < 2 || wd[0] != c64)
        return "the Conv weight " + ShapeToString(wd) + " does not have " + std::to_string(channels) +
               " output channels";
      const int64_t per = w->numel() / c64;
      for (int64_t e = 0; e < w->numel(); ++e)
        channel_of[static_cast<size_t>(e)] = static_cast<size_t>(e / per);
    } else if (convt) {
      const int64_t group = prod.AttrInt("group", 1);
      if (wd.size() < 2 || group <= 0 || wd[0] % group != 0 || wd[1] * group != c64) {
        return "the ConvTranspose weight " + ShapeToString(wd) + " with group " + std::to_string(group) +
               " does not have " + std::to_string(channels) + " output channels";
      }
      const int64_t in_per_group = wd[0] / group, out_per_group = wd[1];
      const int64_t spatial = w->numel() / (wd[0] * wd[1]);
      for (int64_t e = 0; e < w->numel(); ++e) {
        const int64_t ci = e / (out_per_group * spatial);
        const int64_t j = (e / spatial) % out_per_group;
        channel_of[static_cast<size_t>(e)] = static_cast<size_t>((ci / in_per_group) * out_per_group + j);
      }
    } else {
      const bool trans_b = gemm && prod.AttrInt("transB", 0) != 0;
      if (wd.size() != 2 || (trans_b ? wd[0] : wd[1]) != c64) {
        return "the " + prod.op_type + " weight " + ShapeToString(wd) + " does not have " +
               std::to_string(channels) + " output columns";
      }
      if (matmul && RankOf(model, g, x) != 2) {
        return "the MatMul output is not known to be 2-D, so axis 1 is not the weight's column";
      }
      for (int64_t e = 0; e < w->numel(); ++e) {
        channel_of[static_cast<size_t>(e)] = static_cast<size_t>(trans_b ? e / wd[1] : e % wd[1]);
      }
    }

    // Bias: Conv/ConvTranspose b[C], Gemm C (broadcast along rows only), none for MatMul.
    const std::string b_name = !matmul && prod.inputs.size() > 2 ? prod.inputs[2] : std::string();
    std::vector<double> bias(channels, 0.0);
    double bias_factor = 1;  // Gemm's beta
    if (!b_name.empty()) {
      const Tensor* b = ConstantInit(model, g, b_name);
      if (b == nullptr) return "the producer's bias '" + b_name + "' is not a constant initializer";
      auto v = passes::ToDoubles(*b);
      if (!v || !IsFloatWeight(b->dtype())) return "the producer's bias is not floating point";
      if (v->size() == 1) {
        bias.assign(channels, (*v)[0]);
      } else if (v->size() == channels && (b->rank() == 1 || (b->rank() == 2 && b->dims()[0] == 1))) {
        bias = *v;
      } else {
        return "the producer's bias " + ShapeToString(b->dims()) + " is not one value per output channel";
      }
      if (gemm) bias_factor = static_cast<double>(prod.AttrFloat("beta", 1.0f));
    }
    const double alpha = gemm ? static_cast<double>(prod.AttrFloat("alpha", 1.0f)) : 1.0;

    const bool copy_w = uses.at(w_name) != 1;
    const bool copy_b = b_name.empty() || uses.at(b_name) != 1;
    if ((copy_w || copy_b) && !passes::CanAddInitializers(model, g)) {
      return "new initializers are needed, which a subgraph cannot hold before IR version 4";
    }

    // All checks passed: rewrite.
    const std::vector<double> wv = *passes::ToDoubles(*w);
    std::vector<double> new_w(wv.size());
    for (size_t e = 0; e < wv.size(); ++e) new_w[e] = wv[e] * alpha * scale[channel_of[e]];
    std::vector<double> new_b(channels);
    for (size_t c = 0; c < channels; ++c) new_b[c] = bias[c] * bias_factor * scale[c] + shift[c];
    const DType wtype = w->dtype();

    const std::string new_w_name = copy_w ? names.Make(w_name + "_bn") : w_name;
    Tensor wt = passes::FromDoubles(wtype, wd, new_w, new_w_name);
    if (copy_w) {
      passes::AddInitializer(model, g, std::move(wt));
      prod.inputs[1] = new_w_name;
    } else {
      wt.set_doc_string(w->doc_string());
      *g.FindInitializer(w_name) = std::move(wt);
    }
    const std::string new_b_name =
        copy_b ? names.Make((b_name.empty() ? w_name : b_name) + "_bn_bias") : b_name;
    Tensor bt = passes::FromDoubles(wtype, {c64}, new_b, new_b_name);
    if (copy_b) {
      passes::AddInitializer(model, g, std::move(bt));
    } else {
      *g.FindInitializer(b_name) = std::move(bt);
    }

    if (matmul) {
      Node add;
      add.name = bn.name.empty() ? std::string() : names.Make(bn.name + "_bias");
      add.op_type = "Add";
      add.inputs = {x, new_b_name};
      add.outputs = {bn.outputs[0]};
      g.nodes[i] = std::move(add);
      return {};
    }
    if (prod.inputs.size() < 3) prod.inputs.resize(3);
    prod.inputs[2] = new_b_name;
    if (gemm) {
      prod.SetAttr(Attribute::Float("alpha", 1.0f));
      prod.SetAttr(Attribute::Float("beta", 1.0f));
    }
    prod.outputs[0] = bn.outputs[0];
    (*removed)[i] = true;
    stale->insert(x);
    return {};
  }

  std::unique_ptr<std::unordered_map<std::string, int64_t>> inferred_;
};

}  // namespace

std::unique_ptr<Pass> MakeFoldBatchNormPass(const nlohmann::json& /*options*/) {
  return std::make_unique<FoldBatchNormPass>();
}

}  // namespace compress
