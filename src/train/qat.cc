#include "compress/train/qat.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <unordered_map>
#include <unordered_set>

#include "compress/util/error.h"

namespace compress::train {
namespace {

// A weight is "pruned" when at least this share of its integer values is zero: its zeros then stay zero
// while training. Rounding alone leaves far fewer zeros in a dense weight (a 7-bit weight with a
// Gaussian-like spread has a few percent).
constexpr double kSparseShare = 0.5;

double FloatAt(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::kFloat: return t.data<float>()[i];
    case DType::kDouble: return t.data<double>()[i];
    default: ThrowInvalid("QAT: scale '" + t.name() + "' is not float32");
  }
}

double IntAt(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::kInt8: return t.data<int8_t>()[i];
    case DType::kUInt8: return t.data<uint8_t>()[i];
    case DType::kInt32: return t.data<int32_t>()[i];
    default: ThrowInvalid("QAT: '" + t.name() + "' is not an int8, uint8 or int32 tensor");
  }
}

// Index of the scale (and zero point) that element i of a tensor of `dims` uses: per tensor, or per
// slice along `axis` when the scale has more than one element.
int64_t ChannelOf(const std::vector<int64_t>& dims, int64_t axis, int64_t scale_count, int64_t i) {
  if (scale_count <= 1) return 0;
  int64_t inner = 1;
  for (size_t d = static_cast<size_t>(axis) + 1; d < dims.size(); ++d) inner *= dims[d];
  return (i / inner) % dims[static_cast<size_t>(axis)];
}

std::string Unique(const Graph& g, const std::string& base, std::unordered_set<std::string>& used) {
  std::string name = base;
  for (int k = 2; used.count(name) || g.FindInitializer(name) != nullptr; ++k) name = base + "_" + std::to_string(k);
  used.insert(name);
  return name;
}

std::unordered_set<std::string> AllNames(const Graph& g) {
  std::unordered_set<std::string> s;
  for (const auto& t : g.initializers) s.insert(t.name());
  for (const auto& v : g.inputs) s.insert(v.name);
  for (const auto& n : g.nodes) {
    s.insert(n.name);
    for (const auto& o : n.outputs) s.insert(o);
  }
  return s;
}

bool IsQdq(const Node& n) {
  return n.IsDefaultDomain() && (n.op_type == "QuantizeLinear" || n.op_type == "DequantizeLinear");
}

}  // namespace

bool HasQdq(const Model& model) {
  return std::any_of(model.graph.nodes.begin(), model.graph.nodes.end(), IsQdq);
}

QatState PrepareQat(Model& model) {
  Graph& g = model.graph;
  QatState state;
  std::unordered_set<std::string> used = AllNames(g);
  std::vector<Node> nodes;
  std::vector<Tensor> added;
  std::unordered_set<std::string> converted_ints;
  // (integer weight, scale, zero point) -> output of the QuantizeLinear made for it.
  std::map<std::tuple<std::string, std::string, std::string>, std::string> made;
  std::unordered_set<std::string> scale_seen;
  auto note_scale = [&](const Node& n) {
    if (n.inputs.size() < 2) return;
    const Tensor* s = g.FindInitializer(n.inputs[1]);
    if (s != nullptr && (s->dtype() == DType::kFloat || s->dtype() == DType::kDouble) && scale_seen.insert(s->name()).second) {
      state.scales.push_back(s->name());
    }
  };
  for (Node n : g.nodes) {
    if (n.IsDefaultDomain() && n.op_type == "DequantizeLinear" && n.inputs.size() >= 2) {
      const Tensor* q = g.FindInitializer(n.inputs[0]);
      const Tensor* scale = g.FindInitializer(n.inputs[1]);
      const std::string zp_name = n.inputs.size() > 2 ? n.inputs[2] : std::string();
      const Tensor* zp = zp_name.empty() ? nullptr : g.FindInitializer(zp_name);
      const bool zp_fits = zp == nullptr || zp->numel() == 1 || (scale != nullptr && zp->numel() == scale->numel());
      if (q != nullptr && scale != nullptr && (zp_name.empty() || zp != nullptr) && zp_fits && scale->numel() >= 1) {
        const int64_t rank = q->rank();
        int64_t axis = n.AttrInt("axis", 1);
        if (scale->numel() > 1) {
          if (axis < 0) axis += rank;
          if (axis < 0 || axis >= rank || q->dims()[static_cast<size_t>(axis)] != scale->numel()) {
            ThrowInvalid("QAT: node " + n.Describe() + ": scale of " + std::to_string(scale->numel()) +
                         " elements does not match axis " + std::to_string(axis) + " of " + ShapeToString(q->dims()));
          }
        }
        if (q->dtype() == DType::kInt32) {
          // A bias: trained in float, fed to its consumer directly.
          Tensor b(DType::kFloat, q->dims(), n.outputs[0]);
          float* pb = b.mutable_data<float>();
          for (int64_t i = 0; i < q->numel(); ++i) {
            const int64_t c = ChannelOf(q->dims(), axis, scale->numel(), i);
            const double z = zp != nullptr ? IntAt(*zp, zp->numel() > 1 ? c : 0) : 0.0;
            pb[i] = static_cast<float>((IntAt(*q, i) - z) * FloatAt(*scale, scale->numel() > 1 ? c : 0));
          }
          added.push_back(b);
          state.biases.push_back({q->name(), n});
          converted_ints.insert(q->name());
          continue;
        }
        if (q->dtype() == DType::kInt8 || q->dtype() == DType::kUInt8) {
          note_scale(n);
          const auto key = std::make_tuple(q->name(), scale->name(), zp_name);
          auto it = made.find(key);
          if (it == made.end()) {
            QatState::Weight w;
            w.int_name = q->name();
            w.float_name = Unique(g, q->name() + "_qat", used);
            w.quantize_output = Unique(g, q->name() + "_qat_q", used);
            Tensor f(DType::kFloat, q->dims(), w.float_name);
            float* pf = f.mutable_data<float>();
            int64_t zeros = 0;
            double max_abs = 0;
            for (int64_t i = 0; i < q->numel(); ++i) {
              const int64_t c = ChannelOf(q->dims(), axis, scale->numel(), i);
              const double z = zp != nullptr ? IntAt(*zp, zp->numel() > 1 ? c : 0) : 0.0;
              const double v = IntAt(*q, i);
              zeros += v == z ? 1 : 0;
              max_abs = std::max(max_abs, std::abs(v - z));
              pf[i] = static_cast<float>((v - z) * FloatAt(*scale, scale->numel() > 1 ? c : 0));
            }
            if (q->dtype() == DType::kUInt8) {
              w.qmin = 0;
              w.qmax = 255;
            } else if (max_abs <= 64) {
              // The quantize pass's 7-bit weights (static mode): they stay 7-bit.
              w.qmin = -64;
              w.qmax = 64;
            }
            if (q->numel() > 0 && static_cast<double>(zeros) >= kSparseShare * static_cast<double>(q->numel())) {
              state.sparse_weights.insert(w.float_name);
            }
            std::string zp_in = zp_name;
            if (zp_in.empty()) {
              // Without a zero point QuantizeLinear would produce uint8: give it the weight's type.
              zp_in = Unique(g, q->name() + "_qat_zero_point", used);
              added.push_back(Tensor(q->dtype(), {}, zp_in));
            }
            Node qn;
            qn.name = Unique(g, q->name() + "_qat_quantize", used);
            qn.op_type = "QuantizeLinear";
            qn.inputs = {w.float_name, scale->name(), zp_in};
            qn.outputs = {w.quantize_output};
            if (scale->numel() > 1) qn.attributes.push_back(Attribute::Int("axis", axis));
            nodes.push_back(qn);
            added.push_back(f);
            state.weights.push_back(w);
            it = made.emplace(key, w.quantize_output).first;
          }
          converted_ints.insert(q->name());
          n.inputs[0] = it->second;
          nodes.push_back(n);
          continue;
        }
      }
    }
    if (IsQdq(n)) note_scale(n);
    nodes.push_back(n);
  }
  g.nodes = std::move(nodes);
  // The integer tensors now unread go; the float ones take their place.
  std::unordered_set<std::string> read;
  for (const auto& n : g.nodes) read.insert(n.inputs.begin(), n.inputs.end());
  for (const auto& o : g.outputs) read.insert(o.name);
  g.initializers.erase(std::remove_if(g.initializers.begin(), g.initializers.end(),
                                      [&](const Tensor& t) { return converted_ints.count(t.name()) && !read.count(t.name()); }),
                       g.initializers.end());
  for (auto& t : added) g.initializers.push_back(t);
  return state;
}

void FinishQat(Model& model, const QatState& state) {
  Graph& g = model.graph;
  std::unordered_map<std::string, size_t> producer;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    for (const auto& o : g.nodes[i].outputs) producer[o] = i;
  }
  std::unordered_set<std::string> drop_nodes, drop_inits;
  std::vector<Tensor> added;
  std::unordered_map<std::string, std::string> rename;  // QuantizeLinear output -> integer weight
  for (const auto& w : state.weights) {
    const auto p = producer.find(w.quantize_output);
    if (p == producer.end()) ThrowInternal("QAT: the fake quantization of '" + w.int_name + "' is gone");
    const Node& qn = g.nodes[p->second];
    const Tensor* f = g.FindInitializer(w.float_name);
    const Tensor* scale = g.FindInitializer(qn.inputs[1]);
    const Tensor* zp = g.FindInitializer(qn.inputs[2]);
    if (f == nullptr || scale == nullptr || zp == nullptr) ThrowInternal("QAT: weight '" + w.int_name + "' lost a tensor");
    const int64_t axis = qn.AttrInt("axis", 1) < 0 ? qn.AttrInt("axis", 1) + f->rank() : qn.AttrInt("axis", 1);
    Tensor q(zp->dtype(), f->dims(), w.int_name);
    for (int64_t i = 0; i < f->numel(); ++i) {
      const int64_t c = ChannelOf(f->dims(), axis, scale->numel(), i);
      const double s = FloatAt(*scale, scale->numel() > 1 ? c : 0);
      const double z = IntAt(*zp, zp->numel() > 1 ? c : 0);
      // Round half to even, as QuantizeLinear does.
      double v = (s > 0 ? std::nearbyint(static_cast<double>(f->data<float>()[i]) / s) : 0.0) + z;
      v = std::min(std::max(v, static_cast<double>(w.qmin)), static_cast<double>(w.qmax));
      if (q.dtype() == DType::kInt8) {
        q.mutable_data<int8_t>()[i] = static_cast<int8_t>(v);
      } else {
        q.mutable_data<uint8_t>()[i] = static_cast<uint8_t>(v);
      }
    }
    added.push_back(q);
    drop_inits.insert(w.float_name);
    if (qn.inputs[2].find("_qat_zero_point") != std::string::npos) drop_inits.insert(qn.inputs[2]);
    drop_nodes.insert(qn.name);
    rename[w.quantize_output] = w.int_name;
  }
  for (auto& n : g.nodes) {
    for (auto& in : n.inputs) {
      const auto r = rename.find(in);
      if (r != rename.end()) in = r->second;
    }
  }
  // Scales must stay positive for the integer kernels.
  for (const auto& s : state.scales) {
    Tensor* t = g.FindInitializer(s);
    if (t == nullptr || t->dtype() != DType::kFloat) continue;
    float* p = t->mutable_data<float>();
    for (int64_t i = 0; i < t->numel(); ++i) p[i] = std::max(std::abs(p[i]), std::numeric_limits<float>::min());
  }
  // Biases: int32 again on the trained scales, s_x * s_w, when the consumer reads both through
  // DequantizeLinear (what ONNX Runtime's fusion expects); otherwise on their own scale.
  std::unordered_map<std::string, int> scale_readers;
  for (const auto& n : g.nodes) {
    for (const auto& in : n.inputs) ++scale_readers[in];
  }
  for (const auto& b : state.biases) scale_readers[b.dequantize.inputs[1]] += 1;
  std::vector<Node> restored;
  std::unordered_set<std::string> used = AllNames(g);
  for (const auto& b : state.biases) {
    Node dq = b.dequantize;
    const std::string& fname = dq.outputs[0];
    const Tensor* f = g.FindInitializer(fname);
    if (f == nullptr) ThrowInternal("QAT: bias '" + fname + "' is gone");
    const Tensor* old_scale = g.FindInitializer(dq.inputs[1]);
    if (old_scale == nullptr) ThrowInternal("QAT: the scale of bias '" + b.int_name + "' is gone");
    Tensor scale = Tensor::FromBytes(old_scale->dtype(), old_scale->dims(), old_scale->raw(), old_scale->nbytes());
    for (const auto& n : g.nodes) {
      if (std::find(n.inputs.begin(), n.inputs.end(), fname) == n.inputs.end() || n.inputs.size() < 3 || n.inputs[2] != fname) continue;
      const auto px = producer.find(n.inputs[0]), pw = producer.find(n.inputs[1]);
      if (px == producer.end() || pw == producer.end()) break;
      const Node& xdq = g.nodes[px->second];
      const Node& wdq = g.nodes[pw->second];
      if (xdq.op_type != "DequantizeLinear" || wdq.op_type != "DequantizeLinear") break;
      const Tensor* sx = g.FindInitializer(xdq.inputs[1]);
      const Tensor* sw = g.FindInitializer(wdq.inputs[1]);
      if (sx == nullptr || sw == nullptr || sx->numel() != 1 || (sw->numel() != 1 && sw->numel() != scale.numel())) break;
      float* ps = scale.mutable_data<float>();
      for (int64_t c = 0; c < scale.numel(); ++c) {
        ps[c] = static_cast<float>(FloatAt(*sx, 0) * FloatAt(*sw, sw->numel() > 1 ? c : 0));
      }
      break;
    }
    if (!scale.SameContent(*old_scale)) {
      if (scale_readers[dq.inputs[1]] > 1) {
        dq.inputs[1] = Unique(g, b.int_name + "_scale", used);
        scale.set_name(dq.inputs[1]);
        added.push_back(scale);
      } else {
        scale.set_name(old_scale->name());
        *g.FindInitializer(old_scale->name()) = scale;
      }
    }
    Tensor q(DType::kInt32, f->dims(), b.int_name);
    for (int64_t i = 0; i < f->numel(); ++i) {
      const double s = FloatAt(scale, scale.numel() > 1 ? i % scale.numel() : 0);
      double v = s > 0 ? std::nearbyint(static_cast<double>(f->data<float>()[i]) / s) : 0.0;
      v = std::min(std::max(v, -2147483648.0), 2147483647.0);
      q.mutable_data<int32_t>()[i] = static_cast<int32_t>(v);
    }
    added.push_back(q);
    drop_inits.insert(fname);
    restored.push_back(dq);
  }
  std::vector<Node> nodes = restored;  // they read initializers only: first is a valid order
  for (auto& n : g.nodes) {
    if (!drop_nodes.count(n.name)) nodes.push_back(n);
  }
  g.nodes = std::move(nodes);
  g.initializers.erase(std::remove_if(g.initializers.begin(), g.initializers.end(),
                                      [&](const Tensor& t) { return drop_inits.count(t.name()) > 0; }),
                       g.initializers.end());
  for (auto& t : added) g.initializers.push_back(t);
}

}  // namespace compress::train
