// quantize: INT8 quantization in one of three modes.
//
//   static        calibrated activation ranges, QuantizeLinear/DequantizeLinear pairs (format qdq),
//   optionally
//                 turned into integer operators afterwards (format qop)
//   dynamic       activations quantized at run time (quantize_dynamic.cc); LSTM, GRU and RNN weights as in
//                 weights_only (ONNX Runtime's DynamicQuantizeLSTM is not used: the compress executor has no
//                 kernel for it, so --eval could not run the result; GRU and RNN have no integer kernel)
//   weights_only  int8 weights behind DequantizeLinear, float computation
//
// QuantizeLinear/DequantizeLinear exist from opset 10; their per-axis form (per-channel weights) from 13.
// The model is upgraded only as far as the options need, and falls back to per-tensor weights, then to
// float, when the upgrade is impossible.
#include <set>
#include <string>
#include <vector>

#include "compress/calib/calibration.h"
#include "compress/io/schema.h"
#include "compress/passes/builders.h"
#include "compress/passes/qoperator.h"
#include "compress/passes/quantize_dynamic.h"
#include "compress/util/error.h"
#include "quantize_qdq.h"

namespace compress {

namespace {

using nlohmann::json;

constexpr int64_t kPerTensorOpset = 10;
constexpr int64_t kPerChannelOpset = 13;

std::set<std::string> StringSet(const json& v) {
  std::set<std::string> out;
  if (v.is_array()) {
    for (const auto& e : v) out.insert(e.get<std::string>());
  }
  return out;
}

// Settles the opset for QDQ: upgrades to 13 for per-channel weights, else per tensor at >= 10. Returns
// false when the model has to stay float.
bool PrepareOpset(Model& model, passes::QdqOptions* o, PassContext& ctx) {
  const int64_t from = model.OpsetVersion("");
  std::string why;
  bool ok = true;
  if (from == 0) {
    why = "the model imports no default ONNX opset";
    ok = false;
  } else if (o->per_channel && from < kPerChannelOpset) {
    std::string failure;
    if (ConvertOpset(model, kPerChannelOpset, &failure)) {
      why = "per-channel QuantizeLinear/DequantizeLinear need opset 13";
    } else {
      o->per_channel = false;
      why = "upgrade to opset 13 failed (" + failure + "): weights quantized per tensor";
    }
  }
  if (ok && model.OpsetVersion("") < kPerTensorOpset) {
    std::string failure;
    if (ConvertOpset(model, kPerTensorOpset, &failure)) {
      why += std::string(why.empty() ? "" : "; ") + "QuantizeLinear/DequantizeLinear need opset 10";
    } else {
      why += std::string(why.empty() ? "" : "; ") + "upgrade to opset 10 failed (" + failure +
             "): left in float";
      ok = false;
    }
  }
  const int64_t to = model.OpsetVersion("");
  ctx.details()["opset"] = {{"from", from}, {"to", to}, {"per_channel", ok && o->per_channel}, {"why", why}};
  if (from != to) {
    ctx.Note("quantize: opset " + std::to_string(from) + " -> " + std::to_string(to) + ": " + why);
  } else if (!why.empty()) {
    ctx.Note("quantize: opset " + std::to_string(from) + ": " + why);
  }
  return ok;
}

class QuantizePass : public Pass {
 public:
  QuantizePass(json options, std::string mode, std::string format, passes::QdqOptions qdq)
      : options_(std::move(options)),
        mode_(std::move(mode)),
        format_(std::move(format)),
        qdq_(std::move(qdq)) {}

  void Run(Model& model, PassContext& ctx) override {
    if (mode_ == "dynamic") {
      QuantizeDynamic(model, options_, ctx);
      QuantizeRecurrentWeights(model, ctx);
      return;
    }
    if (mode_ == "static" && ctx.calibration() == nullptr) {
      ThrowUsage("static quantization needs calibration data (--calib DIR)");
    }
    for (const auto& n : model.graph.nodes) {
      if (n.IsDefaultDomain() && passes::IsQuantizedOp(n.op_type)) {
        ctx.Note("quantize: the model already holds quantized operators (" + n.op_type + "); left unchanged");
        return;
      }
    }
    passes::QdqOptions qdq = qdq_;
    if (!PrepareOpset(model, &qdq, ctx)) return;
    if (mode_ == "weights_only") {
      if (format_ == "qop") {
        ctx.Note("quantize: format qop applies to static quantization; weights stay in QDQ form");
      }
      passes::QuantizeWeightsOnly(model, qdq, ctx);
      return;
    }
    qdq.derive_bias_scales = format_ != "qop";
    passes::QuantizeStaticQdq(model, qdq, ctx);
    if (format_ == "qop") ConvertQdqToQOperator(model, ctx);
  }

 private:
  static bool HasRecurrent(const Model& model) {
    bool found = false;
    ForEachGraph(model.graph, [&](const Graph& g) {
      for (const auto& n : g.nodes) {
        found = found || (n.IsDefaultDomain() && (n.op_type == "LSTM" || n.op_type == "GRU" || n.op_type == "RNN"));
      }
    });
    return found;
  }

  // Dynamic mode: int8 W and R behind DequantizeLinear for the recurrent ops, per channel where the opset
  // allows it (13), per tensor from 10; the opset is not changed for this.
  void QuantizeRecurrentWeights(Model& model, PassContext& ctx) const {
    if (!HasRecurrent(model)) return;
    const int64_t opset = model.OpsetVersion("");
    if (opset < kPerTensorOpset) {
      ctx.Note("quantize: LSTM/GRU/RNN weights stay float: DequantizeLinear needs opset 10, the model has " +
               std::to_string(opset));
      return;
    }
    passes::QdqOptions qdq = qdq_;
    qdq.recurrent_only = true;
    qdq.per_channel = qdq.per_channel && opset >= kPerChannelOpset;
    passes::QuantizeWeightsOnly(model, qdq, ctx);
  }

  json options_;
  std::string mode_, format_;
  passes::QdqOptions qdq_;
};

std::string OneOf(const json& options, const std::string& key, const std::vector<std::string>& valid) {
  const std::string v = options.value(key, valid.front());
  for (const auto& s : valid) {
    if (s == v) return v;
  }
  std::string list;
  for (const auto& s : valid) list += (list.empty() ? "" : ", ") + s;
  ThrowUsage("pass 'quantize': option '" + key + "' must be one of " + list + ", got '" + v + "'");
}

}  // namespace

std::unique_ptr<Pass> MakeQuantizePass(const json& options) {
  const std::string mode = OneOf(options, "mode", {"static", "dynamic", "weights_only"});
  const std::string format = OneOf(options, "format", {"qdq", "qop"});
  passes::QdqOptions qdq;
  qdq.per_channel = options.value("per_channel", true);
  qdq.activation_type =
      OneOf(options, "activation_type", {"uint8", "int8"}) == "int8" ? DType::kInt8 : DType::kUInt8;
  qdq.range.method = CalibMethodFromName(options.value("calib_method", std::string("minmax")));
  qdq.range.percentile = options.value("percentile", 99.999);
  if (!(qdq.range.percentile > 0.0 && qdq.range.percentile <= 100.0)) {
    ThrowUsage("pass 'quantize': option 'percentile' must be in (0, 100], got " +
               std::to_string(qdq.range.percentile));
  }
  qdq.exclude_nodes = StringSet(options.value("exclude_nodes", json::array()));
  qdq.exclude_ops = StringSet(options.value("exclude_ops", json::array()));
  qdq.min_conv_depth = options.value("min_conv_depth", passes::kDefaultMinConvDepth);
  if (qdq.min_conv_depth < 0) {
    ThrowUsage("pass 'quantize': option 'min_conv_depth' must be >= 0, got " + std::to_string(qdq.min_conv_depth));
  }
  return std::make_unique<QuantizePass>(options, mode, format, std::move(qdq));
}

}  // namespace compress
