// quantize, format "qop": the QDQ graph a static quantizer produced, rewritten with the integer operators
// of the default domain.
//
//   Before:  xq -> DQ -> Conv(DQ(wq), DQ(bq int32)) [-> Relu] -> Q -> yq
//   After:   xq -> QLinearConv(xq, xs, xz, wq, ws, wz, ys, yz, bq) -> yq
//   Before:  aq -> DQ -> MatMul(DQ(bq)) [-> Relu] -> Q -> yq
//   After:   aq -> QLinearMatMul(aq, as, az, bq, bs, bz, ys, yz) -> yq
//   Before:  xq -> DQ -> Conv / MatMul / Gemm(DQ(wq), bias) -> y        (y read as float)
//   After:   xq -> ConvInteger / MatMulInteger(xq, wq, xz, wz) -> Cast(float) -> Mul(xs * ws)
//               [-> Add(b)] -> y
//
// The quantized form is chosen when the node's float output has a single reader, a per-tensor
// QuantizeLinear whose output type is the activation's (ONNX Runtime has QLinearConv and QLinearMatMul
// for uint8 -> uint8 and int8 -> int8 only). Gemm has no QLinear operator in the default domain and
// always takes the integer form with a float rescale; the QuantizeLinear after it stays.
//
// Weights take the activation's signedness: int8 weights next to uint8 activations are stored as
// q + 128 with their zero point + 128, which changes no dequantized value. ONNX Runtime's uint8 x int8
// kernels on x86 without VNNI (QLinearConv, QLinearMatMul, MatMulInteger) add pairs of products in
// saturating int16, 2 * 255 * 127 > 32767, and silently return wrong values; uint8 x uint8 and
// int8 x int8 are exact. Weights within [-64, 64] (7-bit, as our static quantizer writes them) cannot
// saturate and stay int8, for ONNX Runtime's faster uint8 x int8 kernels. The weight's zero points must be
// equal across channels: ConvInteger in ONNX Runtime takes a scalar w_zero_point only. Per-channel scales are
// kept: QLinearConv takes w_scale per output channel, QLinearMatMul b_scale per column of a 2-D b, and the
// float rescale multiplies per channel.
//
// The int32 bias of QLinearConv must have the scale x_scale * w_scale[c] and zero point 0, as a QDQ
// quantizer writes it; a bias DQ with other parameters, or a float bias, is quantized again from its
// float values.
//
// Everything else (Add, Concat, pooling, ...) stays in QDQ form. DequantizeLinear / QuantizeLinear nodes
// and initializers left without readers are removed.

#include "compress/passes/qoperator.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <unordered_set>

#include "compress/io/schema.h"
#include "pass_util.h"
#include "quant_util.h"

namespace compress {

namespace {

using passes::IsOp;

// A bias scale within this relative distance of x_scale * w_scale[c] is taken as equal: quantizers
// compute it in float32 (relative rounding 6e-8) or double, and using it as it is then moves the bias
// by at most 1e-6 of its own value, far below the output's quantization step.
constexpr double kBiasScaleRelTolerance = 1e-6;
// Between uint8 and int8 storage of the same values.
constexpr int32_t kSignShift = 128;
// Largest stored int8 weight magnitude for which ONNX Runtime's uint8 x int8 kernels cannot saturate:
// 2 * 255 * 64 = 32640 fits int16.
constexpr int32_t kSaturationFreeWeightMax = 64;

bool IsEightBit(DType t) { return t == DType::kUInt8 || t == DType::kInt8; }
int32_t LowestOf(DType t) { return t == DType::kInt8 ? -128 : 0; }

std::vector<int32_t> IntValues(const Tensor& t) {
  std::vector<int32_t> v(static_cast<size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) {
    switch (t.dtype()) {
      case DType::kUInt8:
        v[static_cast<size_t>(i)] = t.data<uint8_t>()[i];
        break;
      case DType::kInt8:
        v[static_cast<size_t>(i)] = t.data<int8_t>()[i];
        break;
      default:
        v[static_cast<size_t>(i)] = t.data<int32_t>()[i];
    }
  }
  return v;
}

// A DequantizeLinear or QuantizeLinear with constant scale and zero point.
struct QParams {
  size_t node = 0;
  std::string q;                      // the quantized value: DQ input, Q output
  DType type = DType::kUndefined;     // of q
  std::string scale_name, zero_name;  // zero_name "" when the node has none
  std::vector<float> scale;
  std::vector<int64_t> scale_dims;
  std::vector<int32_t> zero;         // one per scale
  int64_t axis = -1;                 // -1: per tensor
  const Tensor* constant = nullptr;  // q's initializer (weights, biases)
};

class Converter {
 public:
  Converter(Model& model, PassContext& ctx) : model_(model), g_(model.graph), ctx_(ctx), index_(g_) {
    outputs_ = passes::GraphOutputNames(g_);
    uses_ = passes::UseCounts(g_);
  }

  void Run() {
    passes::NameGenerator names(g_);
    names_ = &names;
    const size_t count = g_.nodes.size();
    replacement_.assign(count, {});
    replaced_.assign(count, false);
    removed_.assign(count, false);
    for (size_t i = 0; i < count; ++i) {
      const Node& n = g_.nodes[i];
      if (!IsOp(n, "Conv") && !IsOp(n, "MatMul") && !IsOp(n, "Gemm")) continue;
      if (!ReadsDequantized(n)) continue;
      const std::string why = Convert(i);
      if (!why.empty()) ctx_.Note("kept " + n.Describe() + " in QDQ form: " + why);
    }
    std::vector<Node> nodes;
    for (size_t i = 0; i < count; ++i) {
      if (removed_[i]) continue;
      if (!replaced_[i]) {
        nodes.push_back(std::move(g_.nodes[i]));
        continue;
      }
      for (auto& n : replacement_[i]) nodes.push_back(std::move(n));
    }
    g_.nodes = std::move(nodes);
    names_ = nullptr;
    pending_.Flush(model_, g_);
    Sweep();
    passes::EraseValueInfo(g_, gone_values_);
    CountKeptQdq();
  }

 private:
  bool ReadsDequantized(const Node& n) const {
    for (const auto& in : n.inputs) {
      auto it = index_.producer.find(in);
      if (it != index_.producer.end() && IsOp(g_.nodes[it->second], "DequantizeLinear")) return true;
    }
    return false;
  }

  const Tensor* ConstantInit(const std::string& name) const {
    if (name.empty() || passes::IsOverridable(model_, g_, name)) return nullptr;
    return g_.FindInitializer(name);
  }

  // The element type of a quantized value computed at run time.
  std::optional<DType> RuntimeType(const std::string& value) const {
    if (const TypeInfo* t = FindValueType(g_, value); t != nullptr && t->elem_type != DType::kUndefined) {
      return t->elem_type;
    }
    auto it = index_.producer.find(value);
    if (it == index_.producer.end()) return std::nullopt;
    const Node& p = g_.nodes[it->second];
    if (!IsOp(p, "QuantizeLinear") || p.FindAttr("output_dtype") != nullptr) return std::nullopt;
    if (p.inputs.size() > 2 && !p.inputs[2].empty()) {
      const Tensor* zp = ConstantInit(p.inputs[2]);
      if (zp == nullptr) return std::nullopt;
      return zp->dtype();
    }
    return DType::kUInt8;
  }

  // Scale and zero point of a DQ (dequantize) or Q node; nullopt when they are not constants this code
  // understands (blocked quantization, float8 / 4-bit types, an explicit output type).
  std::optional<QParams> Params(size_t node, bool dequantize) const {
    const Node& n = g_.nodes[node];
    if (!IsOp(n, dequantize ? "DequantizeLinear" : "QuantizeLinear")) return std::nullopt;
    if (n.inputs.size() < 2 || n.outputs.size() != 1) return std::nullopt;
    if (n.AttrInt("block_size", 0) != 0 || n.FindAttr("output_dtype") != nullptr) return std::nullopt;
    QParams p;
    p.node = node;
    p.q = dequantize ? n.inputs[0] : n.outputs[0];
    p.scale_name = n.inputs[1];
    const Tensor* scale = ConstantInit(n.inputs[1]);
    if (scale == nullptr || scale->dtype() != DType::kFloat || scale->rank() > 1 || scale->numel() < 1) {
      return std::nullopt;
    }
    p.scale.assign(scale->data<float>(), scale->data<float>() + scale->numel());
    p.scale_dims = scale->dims();
    const Tensor* zero = nullptr;
    if (n.inputs.size() > 2 && !n.inputs[2].empty()) {
      zero = ConstantInit(n.inputs[2]);
      if (zero == nullptr || zero->numel() != scale->numel()) return std::nullopt;
      p.zero_name = n.inputs[2];
    }
    if (dequantize) {
      p.constant = ConstantInit(p.q);
      if (p.constant != nullptr) {
        p.type = p.constant->dtype();
      } else if (zero != nullptr) {
        p.type = zero->dtype();
      } else if (auto t = RuntimeType(p.q)) {
        p.type = *t;
      }
    } else {
      p.type = zero != nullptr ? zero->dtype() : DType::kUInt8;
    }
    if (!IsEightBit(p.type) && p.type != DType::kInt32) return std::nullopt;
    if (zero != nullptr && zero->dtype() != p.type) return std::nullopt;
    p.zero = zero != nullptr ? IntValues(*zero) : std::vector<int32_t>(p.scale.size(), 0);
    if (p.scale.size() > 1) {
      if (p.constant == nullptr) return std::nullopt;
      const int64_t rank = p.constant->rank();
      int64_t axis = n.AttrInt("axis", 1);
      if (axis < 0) axis += rank;
      if (axis < 0 || axis >= rank || p.constant->dims()[static_cast<size_t>(axis)] != scale->numel()) {
        return std::nullopt;
      }
      p.axis = axis;
    }
    return p;
  }

  std::optional<QParams> DequantizedInput(const Node& n, size_t input) const {
    if (input >= n.inputs.size() || n.inputs[input].empty()) return std::nullopt;
    auto it = index_.producer.find(n.inputs[input]);
    if (it == index_.producer.end()) return std::nullopt;
    return Params(it->second, true);
  }

  // The only node reading `value`, when there is exactly one and neither a graph output nor a subgraph
  // reads it.
  std::optional<size_t> SoleReader(const std::string& value) const {
    auto use = uses_.find(value);
    if (outputs_.count(value) || use == uses_.end() || use->second != 1) return std::nullopt;
    auto it = index_.consumers.find(value);
    if (it == index_.consumers.end() || it->second.size() != 1) return std::nullopt;
    const Node& r = g_.nodes[it->second[0]];
    if (std::count(r.inputs.begin(), r.inputs.end(), value) != 1) return std::nullopt;
    return it->second[0];
  }

  // New initializers wait in pending_ until the rewrite is done (Tensor pointers into the graph are held).
  std::string AddInit(Tensor t, const std::string& base) { return pending_.Add(std::move(t), *names_, base); }

  static Tensor ZeroPointTensor(DType type, const std::vector<int64_t>& dims, int32_t value) {
    Tensor t(type, dims);
    for (int64_t i = 0; i < t.numel(); ++i) {
      if (type == DType::kUInt8) {
        t.mutable_data<uint8_t>()[i] = static_cast<uint8_t>(value);
      } else {
        t.mutable_data<int8_t>()[i] = static_cast<int8_t>(value);
      }
    }
    return t;
  }

  // The zero point input of a quantized activation: its own, or a new zero of its type.
  std::string ActivationZeroPoint(const QParams& p) {
    if (!p.zero_name.empty()) return p.zero_name;
    const std::string key = std::string("zero:") + DTypeName(p.type);
    auto it = cache_.find(key);
    if (it != cache_.end()) return it->second;
    return cache_[key] = AddInit(ZeroPointTensor(p.type, {}, 0), p.q + "_zero_point");
  }

  struct Weight {
    std::string values;  // initializer of the target type
    int32_t zero = 0;    // the zero point every channel shares
  };

  // The type a constant weight is stored in next to an activation of type `activation`: the activation's
  // own, except that int8 weights next to uint8 activations stay int8 when no stored value exceeds
  // kSaturationFreeWeightMax in magnitude (7-bit weights, as the static quantizer writes them): ONNX Runtime
  // then keeps its faster uint8 x int8 kernels, which cannot saturate on such weights.
  static DType WeightType(const QParams& w, DType activation) {
    if (activation != DType::kUInt8 || w.type != DType::kInt8) return activation;
    for (int32_t v : IntValues(*w.constant)) {
      if (std::abs(v) > kSaturationFreeWeightMax) return activation;
    }
    return DType::kInt8;
  }

  // The weight stored in `type` (shifted by 128 when its signedness differs), transposed for Gemm's
  // transB; each variant is made once.
  Weight PrepareWeight(const QParams& w, DType type, bool transpose) {
    const std::string key = "weight:" + w.q + ":" + DTypeName(type) + (transpose ? ":T" : "");
    const int32_t shift = w.type == type ? 0 : (type == DType::kUInt8 ? kSignShift : -kSignShift);
    Weight out{w.q, w.zero[0] + shift};
    if (shift == 0 && !transpose) return out;
    auto it = cache_.find(key);
    if (it != cache_.end()) {
      out.values = it->second;
      return out;
    }
    const Tensor& src = *w.constant;
    const std::vector<int32_t> v = IntValues(src);
    std::vector<int64_t> dims = src.dims();
    std::vector<int32_t> shifted(v.size());
    if (transpose) {
      const int64_t rows = dims[0], cols = dims[1];
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) {
          shifted[static_cast<size_t>(c * rows + r)] = v[static_cast<size_t>(r * cols + c)] + shift;
        }
      }
      std::swap(dims[0], dims[1]);
    } else {
      for (size_t i = 0; i < v.size(); ++i) shifted[i] = v[i] + shift;
    }
    Tensor t(type, dims);
    for (int64_t i = 0; i < t.numel(); ++i) {
      if (type == DType::kUInt8) {
        t.mutable_data<uint8_t>()[i] = static_cast<uint8_t>(shifted[static_cast<size_t>(i)]);
      } else {
        t.mutable_data<int8_t>()[i] = static_cast<int8_t>(shifted[static_cast<size_t>(i)]);
      }
    }
    out.values = cache_[key] = AddInit(
        std::move(t), w.q + (transpose ? "_transposed" : "") + (type == DType::kUInt8 ? "_uint8" : "_int8"));
    return out;
  }

  Node MakeNode(const std::string& op, std::vector<std::string> inputs, std::vector<std::string> outputs,
                const std::string& base) {
    return passes::NamedNode(*names_, op, std::move(inputs), std::move(outputs), base);
  }

  // The float bias of a Conv / Gemm (one value per element of its initializer), or an error in `why`.
  std::optional<std::vector<double>> FloatBias(const Node& n, size_t input, std::string* why,
                                               std::vector<int64_t>* dims, std::optional<QParams>* dq) const {
    const std::string& name = n.inputs[input];
    *dq = DequantizedInput(n, input);
    if (dq->has_value()) {
      const QParams& b = **dq;
      if (b.constant == nullptr) {
        *why = "the bias is dequantized from a value computed at run time";
        return std::nullopt;
      }
      *dims = b.constant->dims();
      const std::vector<int32_t> q = IntValues(*b.constant);
      const int64_t numel = b.constant->numel();
      int64_t inner = 1;
      if (b.axis >= 0) {
        for (size_t d = static_cast<size_t>(b.axis) + 1; d < dims->size(); ++d) inner *= (*dims)[d];
      }
      std::vector<double> v(static_cast<size_t>(numel));
      for (int64_t i = 0; i < numel; ++i) {
        const size_t c =
            b.axis < 0 ? 0 : static_cast<size_t>(i / inner % static_cast<int64_t>(b.scale.size()));
        v[static_cast<size_t>(i)] = double{b.scale[c]} * (q[static_cast<size_t>(i)] - b.zero[c]);
      }
      return v;
    }
    const Tensor* t = ConstantInit(name);
    if (t == nullptr || t->dtype() != DType::kFloat) {
      *why = "the bias is neither a float32 constant nor dequantized from a constant";
      return std::nullopt;
    }
    *dims = t->dims();
    return std::vector<double>(t->data<float>(), t->data<float>() + t->numel());
  }

  // Where the converted node writes: the Q after it (and the Relu it absorbs), or nothing.
  struct Requantize {
    QParams q;
    std::optional<size_t> relu;
  };

  std::optional<Requantize> FindRequantize(const Node& n, DType activation) const {
    std::string value = n.outputs[0];
    std::optional<size_t> r = SoleReader(value);
    if (!r) return std::nullopt;
    std::optional<size_t> relu;
    if (IsOp(g_.nodes[*r], "Relu") && g_.nodes[*r].outputs.size() == 1) {
      relu = r;
      value = g_.nodes[*r].outputs[0];
      r = SoleReader(value);
      if (!r) return std::nullopt;
    }
    if (g_.nodes[*r].inputs[0] != value) return std::nullopt;
    std::optional<QParams> q = Params(*r, false);
    if (!q || q->scale.size() != 1 || q->type != activation) return std::nullopt;
    // Relu before a Q whose zero point is the lowest value of its type changes nothing: the Q maps every
    // negative input to round(v / s) + zp < zp and clamps it to the type's lowest value, zp, which is
    // exactly what it makes of Relu's 0; non-negative inputs pass Relu unchanged. With zp above the
    // lowest value the Q could represent negative results, and the Relu stays.
    if (relu && q->zero[0] != LowestOf(q->type)) return std::nullopt;
    return Requantize{*q, relu};
  }

  static bool Uniform(const std::vector<int32_t>& v) {
    return std::all_of(v.begin(), v.end(), [&](int32_t z) { return z == v[0]; });
  }

  // Rewrites node i; returns why not when it stays.
  std::string Convert(size_t i) {
    const Node n = g_.nodes[i];
    const bool conv = IsOp(n, "Conv"), gemm = IsOp(n, "Gemm");
    if (n.outputs.size() != 1 || n.inputs.size() < 2) return "unexpected inputs or outputs";
    const std::optional<QParams> x = DequantizedInput(n, 0);
    const std::optional<QParams> w = DequantizedInput(n, 1);
    if (!x || !w) return "an input is not dequantized by a DequantizeLinear with constant parameters";
    if (x->constant != nullptr) return "the first input is a constant";
    if (!IsEightBit(x->type) || !IsEightBit(w->type)) return "inputs are not 8-bit";
    if (x->scale.size() != 1) return "the activation is not quantized per tensor";
    if (gemm && n.AttrInt("transA", 0) != 0) return "Gemm with transA=1";
    const bool trans_b = gemm && n.AttrInt("transB", 0) != 0;

    // Output channels of the weight: dim 0 of a Conv weight, the columns of a MatMul / Gemm weight.
    int64_t channels = 1;
    if (w->constant != nullptr) {
      const int64_t rank = w->constant->rank();
      if (conv && rank < 3) return "the weight has rank " + std::to_string(rank);
      if (!conv && rank != 2) return "the weight has rank " + std::to_string(rank) + ", not 2";
      const int64_t channel_axis = conv ? 0 : trans_b ? 0 : 1;
      channels = w->constant->dims()[static_cast<size_t>(channel_axis)];
      if (w->axis >= 0 && w->axis != channel_axis)
        return "the weight is quantized along an axis that is not its output channel";
    } else {
      if (conv || gemm) return "the weight is computed at run time";
      if (w->type != x->type) return "the operands are quantized to different types";
      if (w->scale.size() != 1) return "the second operand is not quantized per tensor";
    }
    if (!Uniform(w->zero)) return "the weight's zero points differ between channels";

    std::optional<Requantize> rq;
    if (!gemm) rq = FindRequantize(n, x->type);

    // Bias: Conv's third input, Gemm's C.
    const bool has_bias = n.inputs.size() > 2 && !n.inputs[2].empty();
    std::optional<std::vector<double>> bias;
    std::vector<int64_t> bias_dims;
    std::optional<QParams> bias_dq;
    std::string bias_runtime;  // Gemm's C computed at run time, added as it is
    if (has_bias) {
      std::string why;
      bias = FloatBias(n, 2, &why, &bias_dims, &bias_dq);
      if (!bias) {
        if (!gemm || ConstantInit(n.inputs[2]) != nullptr || DequantizedInput(n, 2).has_value() ||
            n.AttrFloat("beta", 1.0f) != 1.0f) {
          return why;
        }
        bias_runtime = n.inputs[2];
      }
      if (conv && bias && static_cast<int64_t>(bias->size()) != channels)
        return "the bias does not have one value per channel";
    }

    // Nothing is added to the graph before this point, so that a node that stays leaves nothing behind.
    const std::string base = n.name.empty() ? n.outputs[0] : n.name;
    std::vector<Node> out;
    const bool runtime_b = w->constant == nullptr;
    const DType w_type = runtime_b ? w->type : WeightType(*w, x->type);
    const Weight wt = runtime_b ? Weight{w->q, w->zero[0]} : PrepareWeight(*w, w_type, trans_b);
    const float xs = x->scale[0];
    // Weight scale per output channel (or one), with Gemm's alpha.
    std::vector<float> ws = w->scale;
    if (gemm) {
      for (float& s : ws) s *= n.AttrFloat("alpha", 1.0f);
    }

    if (rq) {
      const std::string x_zp = ActivationZeroPoint(*x);
      // A zero point of the scale's shape, as the newer QLinearMatMul schema asks.
      const std::string w_zp =
          runtime_b && !w->zero_name.empty()
              ? w->zero_name
              : AddInit(ZeroPointTensor(w_type, w->scale_dims, wt.zero), w->q + "_zero_point");
      const std::string y_zp = !rq->q.zero_name.empty()
                                   ? rq->q.zero_name
                                   : AddInit(ZeroPointTensor(rq->q.type, {}, 0), rq->q.q + "_zero_point");
      Node q;
      q.name = n.name.empty() ? names_->Make(base + (conv ? "_QLinearConv" : "_QLinearMatMul")) : n.name;
      q.op_type = conv ? "QLinearConv" : "QLinearMatMul";
      q.inputs = {x->q, x->scale_name, x_zp, wt.values, w->scale_name, w_zp, rq->q.scale_name, y_zp};
      q.outputs = {rq->q.q};
      q.doc_string = n.doc_string;
      if (conv) {
        q.attributes = n.attributes;
        if (bias) q.inputs.push_back(Int32Bias(*bias, *bias_dq, xs, ws, base));
      }
      out.push_back(std::move(q));
      removed_[rq->q.node] = true;
      gone_values_.insert(n.outputs[0]);
      if (rq->relu) {
        removed_[*rq->relu] = true;
        gone_values_.insert(g_.nodes[*rq->relu].outputs[0]);
      }
      ctx_.Count(conv ? "qlinear_conv" : "qlinear_matmul");
    } else {
      // ConvInteger / MatMulInteger, then the product back to float: x_scale * w_scale per channel.
      std::vector<float> scale(ws.size());
      for (size_t c = 0; c < ws.size(); ++c) scale[c] = xs * ws[c];
      std::vector<int64_t> scale_dims;
      if (scale.size() > 1) {
        scale_dims.push_back(static_cast<int64_t>(scale.size()));
        if (conv) scale_dims.resize(static_cast<size_t>(w->constant->rank() - 1), 1);
      }
      const std::string scale_name = AddInit(Tensor::FromVector<float>(scale_dims, scale), base + "_scale");
      std::string w_zp;
      if (wt.zero != 0) w_zp = AddInit(ZeroPointTensor(w_type, {}, wt.zero), w->q + "_zero_point");
      const std::string acc = names_->Make(base + "_int32");
      Node integer;
      integer.name =
          n.name.empty() ? names_->Make(base + (conv ? "_ConvInteger" : "_MatMulInteger")) : n.name;
      integer.op_type = conv ? "ConvInteger" : "MatMulInteger";
      integer.inputs = {x->q, wt.values};
      if (!x->zero_name.empty() || !w_zp.empty()) integer.inputs.push_back(x->zero_name);
      if (!w_zp.empty()) integer.inputs.push_back(w_zp);
      integer.outputs = {acc};
      integer.doc_string = n.doc_string;
      if (conv) integer.attributes = n.attributes;
      out.push_back(std::move(integer));
      const std::string acc_float = names_->Make(base + "_int32_float");
      Node cast = MakeNode("Cast", {acc}, {acc_float}, base);
      cast.attributes.push_back(Attribute::Int("to", static_cast<int64_t>(DType::kFloat)));
      out.push_back(std::move(cast));
      const std::string& y = n.outputs[0];
      const bool add = bias.has_value() || !bias_runtime.empty();
      const std::string rescaled = add ? names_->Make(base + "_rescaled") : y;
      out.push_back(MakeNode("Mul", {acc_float, scale_name}, {rescaled}, base + "_rescale"));
      if (add) {
        std::string b = bias_runtime;
        if (bias) {
          std::vector<int64_t> dims = bias_dims;
          std::vector<double> v = *bias;
          if (conv) {
            dims.assign(static_cast<size_t>(w->constant->rank() - 1), 1);
            dims[0] = channels;
          } else {
            const float beta = n.AttrFloat("beta", 1.0f);
            for (double& e : v) e *= beta;
          }
          b = AddInit(passes::FromDoubles(DType::kFloat, dims, v, ""), base + "_bias");
        }
        out.push_back(MakeNode("Add", {rescaled, b}, {y}, base + "_bias"));
      }
      ctx_.Count(conv ? "conv_integer" : "matmul_integer");
    }
    replacement_[i] = std::move(out);
    replaced_[i] = true;
    replaced_inputs_.insert(n.inputs.begin(), n.inputs.end());
    if (rq) {
      const Node& qn = g_.nodes[rq->q.node];
      replaced_inputs_.insert(qn.inputs.begin(), qn.inputs.end());
    }
    return "";
  }

  // QLinearConv's bias: int32 at scale x_scale * w_scale[c], zero point 0.
  std::string Int32Bias(const std::vector<double>& bias, const std::optional<QParams>& dq, float xs,
                        const std::vector<float>& ws, const std::string& base) {
    if (dq && dq->type == DType::kInt32 && dq->constant->rank() == 1) {
      bool same = true;
      for (size_t c = 0; c < bias.size() && same; ++c) {
        const double want = double{xs} * ws[ws.size() == 1 ? 0 : c];
        const double have = dq->scale[dq->scale.size() == 1 ? 0 : c];
        same = dq->zero[dq->zero.size() == 1 ? 0 : c] == 0 &&
               std::fabs(have - want) <= kBiasScaleRelTolerance * want;
      }
      if (same) return dq->q;
    }
    std::vector<float> values(bias.begin(), bias.end());
    Tensor b = passes::QuantizeBias(
        Tensor::FromVector<float>({static_cast<int64_t>(values.size())}, values, base), xs, ws);
    return AddInit(std::move(b), base + "_bias_int32");
  }

  // Removes DQ / Q nodes nobody reads, then initializers nobody reads that those or the converted nodes
  // used.
  void Sweep() {
    std::unordered_set<std::string> candidates;
    for (const auto& n : replaced_inputs_) candidates.insert(n);
    bool again = true;
    while (again) {
      again = false;
      const auto uses = passes::UseCounts(g_);
      for (size_t k = g_.nodes.size(); k-- > 0;) {
        const Node& n = g_.nodes[k];
        if (!IsOp(n, "DequantizeLinear") && !IsOp(n, "QuantizeLinear")) continue;
        if (n.outputs.size() != 1 || uses.count(n.outputs[0])) continue;
        for (const auto& in : n.inputs) candidates.insert(in);
        gone_values_.insert(n.outputs[0]);
        g_.nodes.erase(g_.nodes.begin() + static_cast<std::ptrdiff_t>(k));
        again = true;
      }
    }
    const auto uses = passes::UseCounts(g_);
    std::unordered_set<std::string> unused;
    for (const auto& t : g_.initializers) {
      if (!uses.count(t.name()) && candidates.count(t.name()) &&
          !passes::IsOverridable(model_, g_, t.name())) {
        unused.insert(t.name());
      }
    }
    passes::EraseInitializers(g_, unused);
  }

  void CountKeptQdq() {
    const GraphIndex index(g_);
    for (const auto& n : g_.nodes) {
      if (IsOp(n, "DequantizeLinear") || IsOp(n, "QuantizeLinear")) continue;
      for (const auto& in : n.inputs) {
        auto it = index.producer.find(in);
        if (it != index.producer.end() && IsOp(g_.nodes[it->second], "DequantizeLinear")) {
          ctx_.Count("kept_qdq");
          break;
        }
      }
    }
  }

  Model& model_;
  Graph& g_;
  PassContext& ctx_;
  GraphIndex index_;
  std::unordered_set<std::string> outputs_;
  std::unordered_map<std::string, int> uses_;
  passes::NameGenerator* names_ = nullptr;
  passes::PendingInitializers pending_;
  std::vector<std::vector<Node>> replacement_;
  std::vector<bool> replaced_, removed_;
  std::map<std::string, std::string> cache_;
  std::unordered_set<std::string> gone_values_;
  std::unordered_set<std::string> replaced_inputs_;  // inputs of the nodes converted or absorbed
};

}  // namespace

void ConvertQdqToQOperator(Model& model, PassContext& ctx) { Converter(model, ctx).Run(); }

}  // namespace compress
