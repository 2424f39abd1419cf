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
// Reconstruction (`update`, on by default; needs calibration data, so without --calib the pass only masks):
// after choosing a layer's mask, the kept weights of every output row are re-fitted by least squares so
// that the layer's output on the calibration inputs changes as little as possible (SparseGPT, Frantar &
// Alistarh 2023, with the mask of the chosen method). With X the layer's input (rows: every sample and
// position; columns: the reduction dimension K, for a convolution the im2col patch of its group,
// C/group x kernel), H = X^T X + lambda I (lambda = 1 % of the mean diagonal) and w one output row,
// the pruned set P is held at zero and the kept set S moves to
//   w'_S = w_S + H_SS^-1 H_SP w_P          (the minimum of (w' - w)^T H (w' - w) with w'_P = 0),
// solved exactly per row (Cholesky) when rows x |S|^3 / 3 <= `exact_flops`, else by SparseGPT's
// sequential OBS update with the Cholesky factor of H^-1 (K^3 + rows x K^2). Only kept weights change, so
// the sparsity and an N:M pattern hold exactly, and pruned weights are exactly zero. Layers are pruned
// in order (SparseGPT's sequential scheme): each wave of layers whose inputs no unprocessed layer feeds
// is measured on the model with the earlier layers already pruned and reconstructed, so later layers
// fit the inputs they will actually see; a wave costs one run over the calibration data. A Gemm's bias C
// stays as it is. Limits: K <= kMaxReconstructK per group (H is K x K doubles, 128 MB at 4096; released
// after each layer), at most kMaxGramFlops to accumulate H, Conv with explicit, VALID or SAME padding;
// ConvTranspose and larger layers are masked only, with a note.
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
#include <unordered_map>
#include <vector>

#include <Eigen/Dense>

#include "compress/passes/builders.h"
#include "compress/util/error.h"
#include "pass_util.h"
#include "reconstruct.h"

namespace compress {

namespace {

using nlohmann::json;
using passes::Accumulate;
using passes::ConvGeometry;
using passes::GramAccumulator;
using passes::kDamping;
using passes::kMaxGramEntries;
using passes::kMaxReconstructK;
using passes::Layout;
using passes::MakeLayout;

// Exact per-row least squares costs about rows x |S|^3 / 3 flops (a Cholesky of H_SS per row): the
// MLP's first layer is 256 x 392^3 / 3 = 5e9. Above 3e10 (about 10 s on one core; option
// `exact_flops`) the sequential OBS update, K^3 + rows x K^2, takes over.
constexpr double kDefaultExactFlops = 3e10;



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
  // Reconstruction: "least_squares" (exact per row), "obs" (sequential OBS update) or "none"; output
  // error ||X (W - W')||^2 on the calibration data with the mask alone and after the update, and
  // ||X W||^2, summed over the readers.
  std::string reconstruction = "none";
  double error_mask_only = 0, error_after = 0, energy = 0;
};



class PrunePass : public Pass {
 public:
  PrunePass(double sparsity, int64_t n, int64_t m, std::string method, bool global, std::set<std::string> exclude,
            bool keep_first_last, bool update, double exact_flops)
      : sparsity_(sparsity), n_(n), m_(m), method_(std::move(method)), global_(global),
        exclude_(std::move(exclude)), keep_first_last_(keep_first_last), update_(update), exact_flops_(exact_flops) {}

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

    std::vector<int64_t> zeros_before(targets.size(), 0);
    for (size_t t = 0; t < targets.size(); ++t) {
      const Tensor* tensor = g.FindInitializer(targets[t].weight);
      const float* r = tensor->data<float>();
      for (int64_t i = 0; i < tensor->numel(); ++i) zeros_before[t] += r[i] == 0.0f;
    }
    json layers = json::array();
    std::vector<std::vector<uint8_t>> masks(targets.size());  // 1: prune
    const bool has_data = ctx.calibration() != nullptr && ctx.calibration()->has_data();
    if (update_ && has_data) {
      PruneSequentially(model, targets, &masks, ctx);
    } else {
      ComputeScores(model, targets, ctx);
      if (global_) {
        GlobalMasks(targets, &masks);
      } else {
        for (size_t t = 0; t < targets.size(); ++t) masks[t] = LayerMask(targets[t]);
      }
    }
    for (size_t t = 0; t < targets.size(); ++t) {
      Target& target = targets[t];
      Tensor* tensor = g.FindInitializer(target.weight);
      const int64_t numel = tensor->numel();
      int64_t zeros_after = 0;
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
                        {"sparsity_before", static_cast<double>(zeros_before[t]) / denom},
                        {"sparsity_after", static_cast<double>(zeros_after) / denom},
                        {"params", numel}});
      if (update_ && has_data) {
        json& l = layers.back();
        l["reconstruction"] = target.reconstruction;
        // Relative output error on the calibration data, ||X (W - W')||^2 / ||X W||^2.
        const double e = target.energy > 0 ? target.energy : 1.0;
        l["output_error_mask_only"] = target.error_mask_only / e;
        l["output_error"] = (target.reconstruction == "none" ? target.error_mask_only : target.error_after) / e;
        if (target.reconstruction != "none") ctx.Count("reconstructed_weights");
      }
      if (target.readers.size() > 1) {
        ctx.Note("prune: weight '" + target.weight + "' is read by " + std::to_string(target.readers.size()) +
                 " nodes; pruned once for all of them");
      }
      ctx.Count("pruned_weights");
      ctx.Count("zeroed_values", zeros_after - zeros_before[t]);
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

  std::vector<uint8_t> LayerMask(const Target& t) const { return m_ > 0 ? NmMask(t) : UniformMask(t); }

  // Scores, masks and reconstruction, wave by wave on the model as pruned so far (see the header).
  void PruneSequentially(Model& model, std::vector<Target>& targets, std::vector<std::vector<uint8_t>>* masks,
                         PassContext& ctx) const {
    Graph& g = model.graph;
    const bool wanda = method_ != "magnitude";
    if (global_) {  // one threshold needs every layer's scores at once: masks from the unpruned model
      ComputeScores(model, targets, ctx);
      GlobalMasks(targets, masks);
    }
    // Which targets feed which: reach[u] holds the targets whose readers' input u's readers' outputs reach.
    std::unordered_map<std::string, std::vector<size_t>> consumers;
    for (size_t i = 0; i < g.nodes.size(); ++i) {
      for (const auto& in : g.nodes[i].inputs) {
        if (!in.empty()) consumers[in].push_back(i);
      }
    }
    std::unordered_map<std::string, std::vector<size_t>> target_of_input;
    for (size_t t = 0; t < targets.size(); ++t) {
      for (size_t r : targets[t].readers) target_of_input[g.nodes[r].inputs[0]].push_back(t);
    }
    std::vector<std::set<size_t>> feeds(targets.size());
    for (size_t u = 0; u < targets.size(); ++u) {
      std::vector<std::string> stack;
      std::set<std::string> seen;
      for (size_t r : targets[u].readers) {
        for (const auto& o : g.nodes[r].outputs) stack.push_back(o);
      }
      while (!stack.empty()) {
        const std::string v = stack.back();
        stack.pop_back();
        if (v.empty() || !seen.insert(v).second) continue;
        const auto ti = target_of_input.find(v);
        if (ti != target_of_input.end()) {
          for (size_t t : ti->second) {
            if (t != u) feeds[u].insert(t);
          }
        }
        const auto c = consumers.find(v);
        if (c == consumers.end()) continue;
        for (size_t n : c->second) {
          for (const auto& o : g.nodes[n].outputs) stack.push_back(o);
        }
      }
    }
    std::vector<bool> done(targets.size(), false);
    size_t remaining = targets.size();
    int64_t waves = 0;
    while (remaining > 0) {
      std::vector<bool> blocked(targets.size(), false);
      for (size_t u = 0; u < targets.size(); ++u) {
        if (done[u]) continue;
        for (size_t t : feeds[u]) blocked[t] = true;
      }
      std::vector<size_t> wave;
      for (size_t t = 0; t < targets.size(); ++t) {
        if (!done[t] && !blocked[t]) wave.push_back(t);
      }
      if (wave.empty()) {  // a cycle cannot happen in a valid graph; take the rest together
        for (size_t t = 0; t < targets.size(); ++t) {
          if (!done[t]) wave.push_back(t);
        }
      }
      RunWave(model, targets, wave, wanda, masks, ctx);
      for (size_t t : wave) done[t] = true;
      remaining -= wave.size();
      ++waves;
    }
    ctx.Count("calibration_runs", waves);
  }

  void RunWave(Model& model, std::vector<Target>& targets, const std::vector<size_t>& wave, bool wanda,
               std::vector<std::vector<uint8_t>>* masks, PassContext& ctx) const {
    Graph& g = model.graph;
    std::vector<GramAccumulator> acc(wave.size());
    std::vector<std::string> names;
    std::vector<std::pair<size_t, size_t>> owner;  // name -> (wave slot, reader node)
    for (size_t s = 0; s < wave.size(); ++s) {
      const Target& target = targets[wave[s]];
      const Layout& L = target.layout;
      GramAccumulator& a = acc[s];
      a.gram = true;
      if (L.kind == Layout::kConvTranspose) {
        a.gram = false;
        a.why = "no reconstruction for ConvTranspose";
      } else if (L.kind == Layout::kConv) {
        a.k = L.len * L.lines;
        a.groups = L.rows / L.rows_per_group;
      } else {
        a.k = L.len;
      }
      if (a.gram && a.k > kMaxReconstructK) {
        a.gram = false;
        a.why = "K = " + std::to_string(a.k) + " exceeds " + std::to_string(kMaxReconstructK);
      } else if (a.gram && a.groups * a.k * a.k > kMaxGramEntries) {
        a.gram = false;
        a.why = std::to_string(a.groups) + " groups of K = " + std::to_string(a.k) + " exceed " +
                std::to_string(kMaxGramEntries) + " Gram entries";
      }
      if (a.gram) a.h.assign(static_cast<size_t>(a.groups), Eigen::MatrixXd::Zero(a.k, a.k));
      for (size_t r : target.readers) {
        names.push_back(g.nodes[r].inputs[0]);
        owner.emplace_back(s, r);
      }
    }
    const Model& snapshot = model;
    ctx.calibration()->ForEachBatch(snapshot, names, [&](size_t i, const Tensor& value) {
      const size_t s = owner[i].first;
      Accumulate(g.nodes[owner[i].second], *g.FindInitializer(targets[wave[s]].weight), targets[wave[s]].layout,
                 value, &acc[s]);
    });
    for (size_t s = 0; s < wave.size(); ++s) {
      const size_t t = wave[s];
      Target& target = targets[t];
      GramAccumulator& a = acc[s];
      const Node& first = g.nodes[target.readers.front()];
      if (!global_) {
        // Scores on the model as pruned so far.
        const Tensor* tensor = g.FindInitializer(target.weight);
        const float* w = tensor->data<float>();
        target.scores.resize(static_cast<size_t>(tensor->numel()));
        for (int64_t i = 0; i < tensor->numel(); ++i) target.scores[static_cast<size_t>(i)] = std::fabs(w[i]);
        const Layout& L = target.layout;
        const bool use_norms = wanda && a.channels_ok && static_cast<int64_t>(a.sum_sq.size()) == L.channels;
        if (wanda && !use_norms) {
          ctx.Note("prune: " + first.Describe() + ": activation '" + first.inputs[0] + "' does not match the weight's " +
                   std::to_string(L.channels) + " input channels; pruned by magnitude");
        }
        target.method = use_norms ? "wanda" : "magnitude";
        if (use_norms) {
          for (int64_t r = 0; r < L.rows; ++r) {
            for (int64_t l = 0; l < L.lines; ++l) {
              for (int64_t p = 0; p < L.len; ++p) {
                const auto idx = static_cast<size_t>(L.Index(r, l, p));
                const double norm = std::sqrt(a.sum_sq[static_cast<size_t>(L.ChannelBase(r) + p)]);
                target.scores[idx] = static_cast<float>(target.scores[idx] * norm);
              }
            }
          }
        }
        (*masks)[t] = LayerMask(target);
      }
      if (a.gram) {
        Reconstruct(g.FindInitializer(target.weight), target, a, (*masks)[t], exact_flops_);
      } else {
        ctx.Note("prune: weight '" + target.weight + "' of " + first.Describe() + " masked without reconstruction: " +
                 a.why);
      }
      a.h.clear();
      a.h.shrink_to_fit();
      // The next waves measure the model with this layer pruned.
      Tensor* tensor = g.FindInitializer(target.weight);
      float* d = tensor->mutable_data<float>();
      for (int64_t i = 0; i < tensor->numel(); ++i) {
        if ((*masks)[t][static_cast<size_t>(i)]) d[i] = 0.0f;
      }
    }
  }


  // Re-fits the kept weights of every output row of `tensor` (mask 1: pruned; weights already zero are
  // held at zero too) to the layer's original output on the calibration inputs summarized by `a`.
  static void Reconstruct(Tensor* tensor, Target& target, GramAccumulator& a, const std::vector<uint8_t>& mask,
                          double max_exact_flops) {
    const Layout& L = target.layout;
    const int64_t K = a.k;
    std::vector<Eigen::MatrixXd>& hs = a.h;
    for (auto& h : hs) h = h.selfadjointView<Eigen::Lower>();  // full symmetric
    const float* w0 = tensor->data<float>();
    // Row r's element j (0..K-1) is at RowBase(r) + j for matrices with transB and for Conv; in general
    // at Index(r, l, p) with j = p * lines + l.
    auto flat = [&](int64_t r, int64_t j) { return L.Index(r, j % L.lines, j / L.lines); };
    auto group_of = [&](int64_t r) { return L.kind == Layout::kConv ? r / L.rows_per_group : int64_t{0}; };
    // Cost of the exact solve: rows x |S|^3 / 3.
    double exact_flops = 0;
    for (int64_t r = 0; r < L.rows; ++r) {
      int64_t kept = 0;
      for (int64_t j = 0; j < K; ++j) {
        const auto i = static_cast<size_t>(flat(r, j));
        kept += !mask[i] && w0[i] != 0.0f;
      }
      exact_flops += static_cast<double>(kept) * kept * kept / 3.0;
    }
    const bool exact = exact_flops <= max_exact_flops;
    std::vector<double> lambda(hs.size(), 0.0);
    std::vector<Eigen::MatrixXd> upper(exact ? 0 : hs.size());  // Cholesky factor U of H^-1 = U^T U
    std::vector<bool> usable(hs.size(), false);
    for (size_t grp = 0; grp < hs.size(); ++grp) {
      const double mean_diag = hs[grp].diagonal().mean();
      if (!(mean_diag > 0) || !std::isfinite(mean_diag)) continue;  // no signal: nothing to fit
      lambda[grp] = kDamping * mean_diag;
      usable[grp] = true;
      if (!exact) {
        Eigen::MatrixXd damped = hs[grp];
        damped.diagonal().array() += lambda[grp];
        Eigen::LLT<Eigen::MatrixXd> llt(damped);
        if (llt.info() != Eigen::Success) {
          usable[grp] = false;
          continue;
        }
        const Eigen::MatrixXd inv = llt.solve(Eigen::MatrixXd::Identity(K, K));
        Eigen::LLT<Eigen::MatrixXd> llt_inv(inv);
        if (llt_inv.info() != Eigen::Success) {
          usable[grp] = false;
          continue;
        }
        upper[grp] = llt_inv.matrixU();
      }
    }
    float* out = tensor->mutable_data<float>();
    Eigen::VectorXd w(K), wn(K);
    std::vector<int64_t> S, P;
    bool any = false;
    for (int64_t r = 0; r < L.rows; ++r) {
      const int64_t grp = group_of(r);
      const Eigen::MatrixXd& H = hs[static_cast<size_t>(grp)];
      S.clear();
      P.clear();
      for (int64_t j = 0; j < K; ++j) {
        const auto i = static_cast<size_t>(flat(r, j));
        w(j) = w0[i];
        (mask[i] || w0[i] == 0.0f ? P : S).push_back(j);
      }
      const double energy = w.dot(H * w);
      wn = w;
      for (int64_t j : P) wn(j) = 0.0;
      Eigen::VectorXd diff = wn - w;
      const double err_mask = diff.dot(H * diff);
      target.energy += energy;
      target.error_mask_only += err_mask;
      if (!usable[static_cast<size_t>(grp)] || P.empty() || S.empty()) {
        target.error_after += err_mask;
        continue;
      }
      if (exact) {
        if (!passes::RefitRow(H, lambda[static_cast<size_t>(grp)], w, S, P, &wn)) {
          target.error_after += err_mask;
          continue;
        }
      } else {
        // SparseGPT with a fixed mask: column by column, a pruned weight's error is spread over the
        // columns after it through the Cholesky factor of H^-1.
        const Eigen::MatrixXd& U = upper[static_cast<size_t>(grp)];
        wn = w;
        std::vector<uint8_t> pruned(static_cast<size_t>(K), 0);
        for (int64_t j : P) pruned[static_cast<size_t>(j)] = 1;
        for (int64_t j = 0; j < K; ++j) {
          if (!pruned[static_cast<size_t>(j)]) continue;
          const double e = wn(j) / U(j, j);
          wn.tail(K - j) -= e * U.row(j).tail(K - j).transpose();
          wn(j) = 0.0;
        }
        for (int64_t j : P) wn(j) = 0.0;
      }
      diff = wn - w;
      const double err_after = diff.dot(H * diff);
      if (!(err_after <= err_mask) || !std::isfinite(err_after)) {  // never worse than the mask alone
        target.error_after += err_mask;
        continue;
      }
      target.error_after += err_after;
      for (int64_t j : S) out[flat(r, j)] = static_cast<float>(wn(j));
      any = true;
    }
    target.reconstruction = any ? (exact ? "least_squares" : "obs") : "none";
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
  bool update_;
  double exact_flops_;

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
  const double exact_flops = options.value("exact_flops", kDefaultExactFlops);
  if (!(exact_flops >= 0.0)) {
    ThrowUsage("pass 'prune': option 'exact_flops' must be >= 0, got " + json(exact_flops).dump());
  }
  auto pass = std::make_unique<PrunePass>(sparsity, n, m, method, global, std::move(exclude),
                                          options.value("keep_first_last", false), options.value("update", true),
                                          exact_flops);
  for (const auto& e : options.value("only_nodes", json::array())) pass->only_.insert(e.get<std::string>());
  return pass;
}

}  // namespace compress
