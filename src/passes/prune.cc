// prune: sets the least important weights of Conv, ConvTranspose, Gemm and MatMul to zero.
//
//   Before:  W = [[0.9, -0.1, 0.4, 0.05], ...]   x, W -> MatMul          (float32 initializer W)
//   After:   W = [[0.9,  0,   0.4, 0   ], ...]   x, W -> MatMul          (same shape, half of it zero)
//
// The graph keeps its structure; only weight values change, so the zeros pay off where the file is
// compressed (zstd, an app bundle) or where a runtime exploits sparsity (2:4 on sparse tensor cores).
//
// Importance: `magnitude` is |W|; `wanda` (Sun et al., 2023) is |W_ij| * ||X_j||_2, where ||X_j|| is the L2
// norm of input feature j (input channel j for Conv/ConvTranspose) of the layer's activation over the
// calibration data, so that a small weight on a loud input survives. `auto` is wanda when the run has
// calibration data, magnitude otherwise.
//
// Patterns:
//   unstructured  magnitude: the ceil(sparsity x size) lowest |W| of each tensor; wanda: the same share of
//                 every output row (Wanda's per-output comparison), so each output keeps its fan-in share.
//   N:M           in every group of M consecutive weights along the input channels, the M - N least
//                 important become zero (the NVIDIA ASP convention: Conv weight [O, C/g, kh, kw] is grouped
//                 along C/g at each output channel and kernel position; ConvTranspose [C, O/g, kh, kw]
//                 along C/g; MatMul/Gemm along the K dimension of B). The pattern fixes the sparsity at
//                 1 - N/M; a layer whose channel count is not a multiple of M stays dense with a note.
//   global        (unstructured only) one threshold across every prunable layer on normalized scores:
//                 each layer's scores are divided by their root mean square, so that a layer of small
//                 weights is not emptied just because of its scale; the layers then differ in sparsity.
//
// `only_nodes`, when not empty, restricts pruning to the weights these nodes read (every reader of such a
// weight is pruned with it); the rest of the selection is unchanged, so `compress sensitivity` prunes
// exactly one layer of the full run at a time.
//
// Ties are broken by element index (the lower index is pruned first), so the output is deterministic.
// Pre-existing zeros count towards the sparsity. A weight read by several prunable nodes of the same
// layout is pruned once, with the activation norms of all its readers summed; a weight read by anything
// else, by readers with different layouts, or by an excluded node stays dense (with a note). Only
// float32 initializers of the main graph are pruned (the clean-up passes turn Constant-node weights into
// initializers first); weights inside If/Loop bodies are left alone.
//
// The masks are kept in the values themselves: a later pass or a fine-tune keeps a weight pruned by
// keeping its zero (symmetric int8 quantization maps 0 to 0 exactly).
#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "compress/passes/builders.h"
#include "compress/util/error.h"
#include "pass_util.h"

namespace compress {

namespace {

using nlohmann::json;

// How the elements of a weight map to output rows and input channels. Row r holds `lines` x `len`
// elements: element (l, p) is at flat index RowBase(r) + l * line_stride + p * p_stride and reads input
// channel ChannelBase(r) + p. N:M groups are M consecutive p of one line.
struct Layout {
  enum Kind { kConv, kConvTranspose, kMatrix } kind = kMatrix;
  int64_t rows = 0, lines = 1, len = 0;
  int64_t line_stride = 1, p_stride = 1;
  int64_t rows_per_group = 0;   // Conv/ConvTranspose: output channels per group
  int64_t group_stride = 0;     // ConvTranspose: elements per group block of the weight
  int64_t row_stride = 0;       // Conv: elements per output channel; matrices: distance between rows
  int64_t channels = 0;         // channels of the activation
  std::string act;              // the activation read (input 0)
  int64_t act_axis = 1;

  int64_t RowBase(int64_t r) const {
    if (kind == kConvTranspose) return (r / rows_per_group) * group_stride + (r % rows_per_group) * lines;
    return r * row_stride;
  }
  int64_t ChannelBase(int64_t r) const { return kind == kMatrix ? 0 : (r / rows_per_group) * len; }
  int64_t Index(int64_t r, int64_t l, int64_t p) const { return RowBase(r) + l * line_stride + p * p_stride; }
  std::string Key() const {
    return std::to_string(kind) + ":" + std::to_string(rows) + ":" + std::to_string(lines) + ":" +
           std::to_string(len) + ":" + std::to_string(line_stride) + ":" + std::to_string(p_stride) + ":" +
           std::to_string(rows_per_group) + ":" + std::to_string(group_stride) + ":" + std::to_string(row_stride);
  }
};

// The layout of input 1 of `n` with dims `w`, or an empty string `why` on success.
bool MakeLayout(const Node& n, const std::vector<int64_t>& w, Layout* out, std::string* why) {
  Layout L;
  L.act = n.inputs.empty() ? std::string() : n.inputs[0];
  if (n.op_type == "Conv" || n.op_type == "ConvTranspose") {
    if (w.size() < 3) {
      *why = "weight of rank " + std::to_string(w.size()) + ", expected >= 3";
      return false;
    }
    const int64_t group = n.AttrInt("group", 1);
    int64_t k = 1;
    for (size_t i = 2; i < w.size(); ++i) k *= w[i];
    if (group < 1 || k < 1) {
      *why = "invalid group or kernel";
      return false;
    }
    L.lines = k;
    L.line_stride = 1;
    L.act_axis = 1;
    if (n.op_type == "Conv") {
      L.kind = Layout::kConv;
      if (w[0] % group != 0) {
        *why = "output channels not divisible by group";
        return false;
      }
      L.rows = w[0];
      L.len = w[1];
      L.p_stride = k;
      L.row_stride = w[1] * k;
      L.rows_per_group = w[0] / group;
      L.channels = w[1] * group;
    } else {
      L.kind = Layout::kConvTranspose;
      if (w[0] % group != 0) {
        *why = "input channels not divisible by group";
        return false;
      }
      L.len = w[0] / group;
      L.rows_per_group = w[1];
      L.rows = w[1] * group;
      L.p_stride = w[1] * k;
      L.group_stride = L.len * w[1] * k;
      L.channels = w[0];
    }
  } else {  // Gemm, MatMul
    if (w.size() != 2) {
      *why = "weight of rank " + std::to_string(w.size()) + ", expected 2";
      return false;
    }
    const bool trans_b = n.op_type == "Gemm" && n.AttrInt("transB", 0) != 0;
    const bool trans_a = n.op_type == "Gemm" && n.AttrInt("transA", 0) != 0;
    L.kind = Layout::kMatrix;
    L.rows = trans_b ? w[0] : w[1];
    L.len = trans_b ? w[1] : w[0];
    L.p_stride = trans_b ? 1 : w[1];
    L.row_stride = trans_b ? w[1] : 1;
    L.channels = L.len;
    L.act_axis = n.op_type == "Gemm" ? (trans_a ? 0 : 1) : -1;
  }
  *out = L;
  return true;
}

bool IsPrunableOp(const Node& n) {
  return n.IsDefaultDomain() && n.inputs.size() >= 2 &&
         (n.op_type == "Conv" || n.op_type == "ConvTranspose" || n.op_type == "Gemm" || n.op_type == "MatMul");
}

struct Target {
  std::string weight;
  std::vector<size_t> readers;  // node indices, graph order
  Layout layout;
  std::string method;           // "magnitude" or "wanda" as applied
  std::vector<float> scores;    // importance per element (flat index)
};

class PrunePass : public Pass {
 public:
  PrunePass(double sparsity, int64_t n, int64_t m, std::string method, bool global, std::set<std::string> exclude,
            bool keep_first_last)
      : sparsity_(sparsity), n_(n), m_(m), method_(std::move(method)), global_(global),
        exclude_(std::move(exclude)), keep_first_last_(keep_first_last) {}

  void Run(Model& model, PassContext& ctx) override {
    Graph& g = model.graph;
    const std::string pattern = m_ > 0 ? std::to_string(n_) + ":" + std::to_string(m_) : "unstructured";
    // Candidates in graph order; first/last are the first and last of them with a constant weight (a
    // MatMul of two activations is no layer).
    std::vector<size_t> prunable;
    std::vector<size_t> layers_with_weights;
    for (size_t i = 0; i < g.nodes.size(); ++i) {
      if (!IsPrunableOp(g.nodes[i])) continue;
      prunable.push_back(i);
      if (g.FindInitializer(g.nodes[i].inputs[1]) != nullptr) layers_with_weights.push_back(i);
    }
    std::set<size_t> kept_dense;
    if (keep_first_last_ && !layers_with_weights.empty()) {
      kept_dense.insert(layers_with_weights.front());
      kept_dense.insert(layers_with_weights.back());
    }
    const auto uses = passes::UseCounts(g);
    const auto outputs = passes::GraphOutputNames(g);
    std::set<std::string> only_weights;  // with only_nodes: the weights they read
    for (const Node& n : g.nodes) {
      if (only_.count(n.name.empty() ? n.Describe() : n.name) && IsPrunableOp(n)) only_weights.insert(n.inputs[1]);
    }
    std::map<std::string, Target> by_weight;
    std::vector<std::string> order;
    std::set<std::string> rejected;
    for (size_t i : prunable) {
      const Node& n = g.nodes[i];
      const std::string& w = n.inputs[1];
      if (w.empty() || rejected.count(w)) continue;
      if (!only_.empty() && !only_weights.count(w)) continue;
      const Tensor* t = g.FindInitializer(w);
      if (t == nullptr) {
        if (n.op_type != "MatMul") ctx.Note("prune: " + n.Describe() + ": weight '" + w + "' is not a constant; kept");
        continue;
      }
      auto reject = [&](const std::string& why) {
        ctx.Note("prune: weight '" + w + "' of " + n.Describe() + " kept dense: " + why);
        rejected.insert(w);
        by_weight.erase(w);
      };
      if (t->dtype() != DType::kFloat) {
        reject(std::string("element type ") + DTypeName(t->dtype()) + ", only float32 is pruned");
        continue;
      }
      if (t->numel() == 0) {  // nothing to prune (and its other dims may be anything)
        rejected.insert(w);
        continue;
      }
      if (passes::IsOverridable(model, g, w) || outputs.count(w)) {
        reject("it can be replaced through a graph input or is a graph output");
        continue;
      }
      if (exclude_.count(n.name)) {
        if (by_weight.count(w)) reject("its reader " + n.Describe() + " is excluded");
        rejected.insert(w);
        continue;
      }
      if (kept_dense.count(i)) {
        if (by_weight.count(w)) reject("its reader " + n.Describe() + " is the first or last prunable layer");
        rejected.insert(w);
        continue;
      }
      Layout layout;
      std::string why;
      if (!MakeLayout(n, t->dims(), &layout, &why)) {
        reject(why);
        continue;
      }
      auto it = by_weight.find(w);
      if (it == by_weight.end()) {
        Target target;
        target.weight = w;
        target.readers = {i};
        target.layout = layout;
        by_weight.emplace(w, std::move(target));
        order.push_back(w);
      } else if (it->second.layout.Key() != layout.Key()) {
        reject("its readers use it with different layouts");
      } else {
        it->second.readers.push_back(i);
      }
    }
    // A weight some other node also reads (Shape, Add, a subgraph) stays dense.
    std::vector<Target> targets;
    for (const auto& w : order) {
      auto it = by_weight.find(w);
      if (it == by_weight.end()) continue;
      const auto u = uses.find(w);
      if (u != uses.end() && u->second != static_cast<int>(it->second.readers.size())) {
        ctx.Note("prune: weight '" + w + "' kept dense: it is also read by a node that is not pruned");
        continue;
      }
      if (m_ > 0 && it->second.layout.len % m_ != 0) {
        ctx.Note("prune: weight '" + w + "' of " + g.nodes[it->second.readers.front()].Describe() +
                 " kept dense: " + std::to_string(it->second.layout.len) + " input channels are not a multiple of " +
                 std::to_string(m_) + " (pattern " + pattern + ")");
        continue;
      }
      targets.push_back(std::move(it->second));
    }
    if (targets.empty()) return;

    ComputeScores(model, targets, ctx);

    json layers = json::array();
    std::vector<std::vector<uint8_t>> masks(targets.size());  // 1: prune
    if (m_ > 0) {
      for (size_t t = 0; t < targets.size(); ++t) masks[t] = NmMask(targets[t]);
    } else if (global_) {
      GlobalMasks(targets, &masks);
    } else {
      for (size_t t = 0; t < targets.size(); ++t) masks[t] = UniformMask(targets[t]);
    }
    for (size_t t = 0; t < targets.size(); ++t) {
      Target& target = targets[t];
      Tensor* tensor = g.FindInitializer(target.weight);
      const int64_t numel = tensor->numel();
      int64_t zeros_before = 0, zeros_after = 0;
      {
        const float* r = tensor->data<float>();
        for (int64_t i = 0; i < numel; ++i) zeros_before += r[i] == 0.0f;
      }
      float* d = tensor->mutable_data<float>();
      for (int64_t i = 0; i < numel; ++i) {
        if (masks[t][static_cast<size_t>(i)]) d[i] = 0.0f;
        zeros_after += d[i] == 0.0f;
      }
      const Node& first = g.nodes[target.readers.front()];
      const double denom = numel > 0 ? static_cast<double>(numel) : 1.0;
      layers.push_back({{"node", first.name.empty() ? first.Describe() : first.name},
                        {"weight", target.weight},
                        {"op", first.op_type},
                        {"method", target.method},
                        {"pattern", pattern},
                        {"sparsity_before", static_cast<double>(zeros_before) / denom},
                        {"sparsity_after", static_cast<double>(zeros_after) / denom},
                        {"params", numel}});
      if (target.readers.size() > 1) {
        ctx.Note("prune: weight '" + target.weight + "' is read by " + std::to_string(target.readers.size()) +
                 " nodes; pruned once for all of them");
      }
      ctx.Count("pruned_weights");
      ctx.Count("zeroed_values", zeros_after - zeros_before);
    }
    ctx.details()["layers"] = layers;
  }

 private:
  void ComputeScores(const Model& model, std::vector<Target>& targets, PassContext& ctx) const {
    const Graph& g = model.graph;
    bool wanda = method_ == "wanda";
    if (method_ == "auto") wanda = ctx.calibration() != nullptr && ctx.calibration()->has_data();
    if (method_ == "wanda" && (ctx.calibration() == nullptr || !ctx.calibration()->has_data())) {
      ThrowUsage("prune: method wanda needs calibration data (--calib DIR)");
    }
    std::vector<std::vector<double>> norms_sq(targets.size());
    if (wanda) {
      std::vector<ChannelRequest> requests;
      std::vector<std::pair<size_t, size_t>> owner;  // request -> (target, reader)
      for (size_t t = 0; t < targets.size(); ++t) {
        for (size_t r : targets[t].readers) {
          requests.push_back({g.nodes[r].inputs[0], g.nodes[r].op_type == "Gemm" || g.nodes[r].op_type == "MatMul"
                                                        ? MatrixAxis(g.nodes[r])
                                                        : 1});
          owner.emplace_back(t, r);
        }
      }
      const std::vector<ChannelSquares> sq = ctx.calibration()->ChannelSumSquares(model, requests);
      for (size_t i = 0; i < requests.size(); ++i) {
        const size_t t = owner[i].first;
        const int64_t channels = targets[t].layout.channels;
        if (static_cast<int64_t>(sq[i].sum_sq.size()) != channels) {
          ctx.Note("prune: " + g.nodes[owner[i].second].Describe() + ": activation '" + requests[i].tensor + "' has " +
                   std::to_string(sq[i].sum_sq.size()) + " channels, the weight expects " + std::to_string(channels) +
                   "; pruned by magnitude");
          norms_sq[t].assign(1, -1.0);  // marks the target as magnitude
          continue;
        }
        if (norms_sq[t].size() == 1 && norms_sq[t][0] < 0) continue;
        if (norms_sq[t].empty()) norms_sq[t].assign(static_cast<size_t>(channels), 0.0);
        for (int64_t c = 0; c < channels; ++c) norms_sq[t][static_cast<size_t>(c)] += sq[i].sum_sq[static_cast<size_t>(c)];
      }
    }
    for (size_t t = 0; t < targets.size(); ++t) {
      Target& target = targets[t];
      const Tensor* tensor = g.FindInitializer(target.weight);
      const float* w = tensor->data<float>();
      const int64_t numel = tensor->numel();
      target.scores.resize(static_cast<size_t>(numel));
      for (int64_t i = 0; i < numel; ++i) target.scores[static_cast<size_t>(i)] = std::fabs(w[i]);
      const bool use_norms = wanda && norms_sq[t].size() == static_cast<size_t>(target.layout.channels);
      target.method = use_norms ? "wanda" : "magnitude";
      if (!use_norms) continue;
      const Layout& L = target.layout;
      for (int64_t r = 0; r < L.rows; ++r) {
        for (int64_t l = 0; l < L.lines; ++l) {
          for (int64_t p = 0; p < L.len; ++p) {
            const auto idx = static_cast<size_t>(L.Index(r, l, p));
            const double norm = std::sqrt(norms_sq[t][static_cast<size_t>(L.ChannelBase(r) + p)]);
            target.scores[idx] = static_cast<float>(target.scores[idx] * norm);
          }
        }
      }
    }
  }

  static int64_t MatrixAxis(const Node& n) {
    if (n.op_type == "Gemm") return n.AttrInt("transA", 0) != 0 ? 0 : 1;
    return -1;
  }

  // The `k` lowest-scored of `idx` (ties: lower index first) are marked in `mask`.
  static void MarkLowest(const std::vector<float>& scores, std::vector<int64_t>& idx, int64_t k,
                         std::vector<uint8_t>* mask) {
    if (k <= 0) return;
    k = std::min<int64_t>(k, static_cast<int64_t>(idx.size()));
    auto less = [&](int64_t a, int64_t b) {
      const float sa = scores[static_cast<size_t>(a)], sb = scores[static_cast<size_t>(b)];
      return sa < sb || (sa == sb && a < b);
    };
    std::nth_element(idx.begin(), idx.begin() + (k - 1), idx.end(), less);
    for (int64_t i = 0; i < k; ++i) (*mask)[static_cast<size_t>(idx[static_cast<size_t>(i)])] = 1;
  }

  int64_t Keep(int64_t n) const {
    // At least the requested share: ceil, minus a hair so that 0.5 x 256 is 128, not 129.
    return static_cast<int64_t>(std::ceil(sparsity_ * static_cast<double>(n) - 1e-9));
  }

  std::vector<uint8_t> UniformMask(const Target& t) const {
    std::vector<uint8_t> mask(t.scores.size(), 0);
    const Layout& L = t.layout;
    if (t.method == "wanda") {  // per output row
      std::vector<int64_t> idx;
      for (int64_t r = 0; r < L.rows; ++r) {
        idx.clear();
        for (int64_t l = 0; l < L.lines; ++l) {
          for (int64_t p = 0; p < L.len; ++p) idx.push_back(L.Index(r, l, p));
        }
        const int64_t row_size = static_cast<int64_t>(idx.size());
        MarkLowest(t.scores, idx, Keep(row_size), &mask);
      }
      return mask;
    }
    std::vector<int64_t> idx(t.scores.size());
    std::iota(idx.begin(), idx.end(), int64_t{0});
    MarkLowest(t.scores, idx, Keep(static_cast<int64_t>(idx.size())), &mask);
    return mask;
  }

  std::vector<uint8_t> NmMask(const Target& t) const {
    std::vector<uint8_t> mask(t.scores.size(), 0);
    const Layout& L = t.layout;
    std::vector<int64_t> idx;
    for (int64_t r = 0; r < L.rows; ++r) {
      for (int64_t l = 0; l < L.lines; ++l) {
        for (int64_t p0 = 0; p0 < L.len; p0 += m_) {
          idx.clear();
          for (int64_t p = p0; p < p0 + m_; ++p) idx.push_back(L.Index(r, l, p));
          MarkLowest(t.scores, idx, m_ - n_, &mask);
        }
      }
    }
    return mask;
  }

  void GlobalMasks(const std::vector<Target>& targets, std::vector<std::vector<uint8_t>>* masks) const {
    // Normalized score, target, element; sorted ascending with ties by target then element.
    struct Entry {
      float score;
      uint32_t target;
      int64_t index;
    };
    std::vector<Entry> all;
    size_t total = 0;
    for (const auto& t : targets) total += t.scores.size();
    all.reserve(total);
    for (size_t t = 0; t < targets.size(); ++t) {
      const auto& s = targets[t].scores;
      double sq = 0;
      for (float v : s) sq += static_cast<double>(v) * v;
      const double rms = s.empty() ? 1.0 : std::sqrt(sq / static_cast<double>(s.size()));
      const double scale = rms > 0 ? 1.0 / rms : 1.0;
      for (size_t i = 0; i < s.size(); ++i) {
        all.push_back({static_cast<float>(s[i] * scale), static_cast<uint32_t>(t), static_cast<int64_t>(i)});
      }
      (*masks)[t].assign(s.size(), 0);
    }
    const int64_t k = std::min<int64_t>(Keep(static_cast<int64_t>(all.size())), static_cast<int64_t>(all.size()));
    if (k <= 0) return;
    auto less = [](const Entry& a, const Entry& b) {
      if (a.score != b.score) return a.score < b.score;
      if (a.target != b.target) return a.target < b.target;
      return a.index < b.index;
    };
    std::nth_element(all.begin(), all.begin() + (k - 1), all.end(), less);
    for (int64_t i = 0; i < k; ++i) {
      const Entry& e = all[static_cast<size_t>(i)];
      (*masks)[e.target][static_cast<size_t>(e.index)] = 1;
    }
  }

  double sparsity_;
  int64_t n_, m_;  // m_ == 0: unstructured
  std::string method_;
  bool global_;
  std::set<std::string> exclude_;
  bool keep_first_last_;

 public:
  std::set<std::string> only_;  // only_nodes
};

}  // namespace

std::unique_ptr<Pass> MakePrunePass(const json& options) {
  const double sparsity = options.value("sparsity", 0.5);
  if (!(sparsity >= 0.0 && sparsity < 1.0)) {
    ThrowUsage("pass 'prune': option 'sparsity' must be in [0, 1), got " + json(sparsity).dump());
  }
  const std::string pattern = options.value("pattern", std::string("unstructured"));
  int64_t n = 0, m = 0;
  if (pattern != "unstructured") {
    const size_t colon = pattern.find(':');
    bool ok = colon != std::string::npos && colon > 0 && colon + 1 < pattern.size() && colon <= 3 &&
              pattern.size() - colon - 1 <= 3;
    for (size_t i = 0; ok && i < pattern.size(); ++i) ok = i == colon || (pattern[i] >= '0' && pattern[i] <= '9');
    if (ok) {
      n = std::stoll(pattern.substr(0, colon));
      m = std::stoll(pattern.substr(colon + 1));
      ok = n >= 1 && n < m;
    }
    if (!ok) {
      ThrowUsage("pass 'prune': option 'pattern' must be unstructured or N:M with 1 <= N < M (e.g. 2:4), got '" +
                 pattern + "'");
    }
  }
  const std::string method = options.value("method", std::string("auto"));
  if (method != "auto" && method != "magnitude" && method != "wanda") {
    ThrowUsage("pass 'prune': option 'method' must be one of auto, magnitude, wanda, got '" + method + "'");
  }
  const bool global = options.value("global", false);
  if (m > 0 && global) ThrowUsage("pass 'prune': option 'global' applies to the unstructured pattern only");
  if (m > 0) {
    const double implied = 1.0 - static_cast<double>(n) / static_cast<double>(m);
    if (options.contains("sparsity") && std::fabs(sparsity - implied) > 1e-9 && sparsity != 0.5) {
      ThrowUsage("pass 'prune': pattern " + pattern + " fixes the sparsity at " + json(implied).dump() +
                 "; option 'sparsity' is " + json(sparsity).dump());
    }
  }
  std::set<std::string> exclude;
  for (const auto& e : options.value("exclude_nodes", json::array())) exclude.insert(e.get<std::string>());
  auto pass = std::make_unique<PrunePass>(sparsity, n, m, method, global, std::move(exclude),
                                          options.value("keep_first_last", false));
  for (const auto& e : options.value("only_nodes", json::array())) pass->only_.insert(e.get<std::string>());
  return pass;
}

}  // namespace compress
