// prune_channels: structured pruning. Removes a fraction of the channels of every prunable channel group
// (see channel_groups.h) by graph surgery: the weights, biases and normalization parameters that depend on
// a channel lose it, Concat offsets and Flatten->Gemm feature blocks follow, Conv group attributes and
// Reshape shape constants are rewritten.
//
//   Before:  x -> Conv(W1[32,1,3,3], b1[32]) -> BN(32) -> Relu -> Conv(W2[64,32,3,3]) -> ...
//   After:   x -> Conv(W1[16,1,3,3], b1[16]) -> BN(16) -> Relu -> Conv(W2[64,16,3,3]) -> ...
//
// In each group the units (channels removed together) are ranked by importance, summed over the group's
// producers: the L1 or L2 norm of each output channel's weights, or with "bn" the |scale| of the
// BatchNormalization reading each producer (L2 when a producer of the group has none), or with "act"
// (the default when the run has calibration data) activation-aware: for every consumer reading the
// channel (Conv, Gemm, MatMul), the channel's standard deviation at the consumer's input, measured on the
// calibration data, times the norm of the consumer's weights for it, ||W[:, c]|| * std(X_c).
//
// A removed channel still had a mean: with calibration data its mean at each consumer's input times the
// consumer's weights for it is folded into the consumer's bias (b[o] += mean_c * sum_k W[o, c, k]), which
// is exact for 1x1 Conv, Gemm and MatMul on a constant channel and away from zero padding otherwise. This
// is what keeps one-shot pruning of a trained network with folded BatchNormalization away from chance:
// its channels carry large means, and dropping them shifts every output of the next layer.
//
// Re-fit (`update`, on by default with calibration data; ThiNet, Luo et al. 2017, and He et al. 2017's
// channel pruning with reconstruction): every consumer with a constant weight (Conv with group 1, Gemm,
// MatMul) that loses input channels gets its kept input weights and its bias re-fitted by least squares to
// its original output on the calibration data. With X the consumer's input on the calibration data (for a
// Conv the im2col patches, C x kh x kw per output position) plus a column of ones when the consumer has a
// bias of its own, H = X^T X + lambda I (lambda = 1 % of the mean diagonal), P the entries of the removed
// channels (every kernel position) and S the kept ones and the bias, each output row becomes
// w_S + H_SS^-1 H_SP w_P (the solve `prune` uses, reconstruct.h). The ones column makes the fit subsume
// mean folding (folding is its solution when the removed channels are constant), so the bias follows the
// fit instead of being folded separately. The fit is one-shot: H is measured once on the original model,
// all consumers in one run over the calibration data (on the sample CNN this keeps 88.8 % at ratio 0.25
// and 87.4 % at 0.375, against 75.3 % and 42.9 % with mean folding alone; a sequential fit, each consumer
// measured on the model with the earlier groups pruned, costs a run per group and is not done). A row
// whose fit fails or ends up worse than folding on the calibration data is folded instead. Limits: K <=
// kMaxReconstructK per consumer and kMaxTotalGramEntries for all of them together; a consumer beyond them,
// with a shared or non-float weight, or a Gemm with alpha or beta other than 1 keeps mean folding only,
// with a note. `update: false` folds only.
//
// The group keeps
// ceil(width * (1 - ratio)) units rounded up to a multiple of round_to (halved while the group has fewer
// than 4 * round_to units, so small groups are not rounded away), at least round_to, and never all of
// them removed. Groups that reach a graph output, a subgraph or an operator the analysis does not
// understand stay whole, with a note naming the node. Attention heads (groups whose units are heads) lose
// floor(heads * ratio) heads, at least one staying, ranked by the norm of all their Q/K/V columns and
// output-projection rows; round_to does not apply to them. After the surgery the shapes are inferred and the
// operators verified; when that fails the groups are applied one at a time and the ones that fail stay.
//
// `group_ratios` sets the ratio of single groups, keyed by the name of the group's first producer node
// (its description when unnamed; the "group" of every entry of details.layers): a listed group uses its
// own ratio, the others `ratio` (0 leaves them whole). --target-macs and `compress sensitivity` prune
// through it.

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <set>
#include <unordered_map>

#include "channel_groups.h"
#include "compress/io/schema.h"
#include "compress/passes/builders.h"
#include "compress/util/error.h"
#include "pass_util.h"
#include "reconstruct.h"

namespace compress {

namespace {

using passes::ChannelAnalysis;
using passes::ChannelGroup;

// Whether the model's shapes still check: inference succeeds and every operator passes verification.
bool ShapesCheck(const Model& model) {
  Model copy = model;
  try {
    if (!InferShapes(copy)) return false;
    VerifyOperators(copy);
  } catch (const std::exception&) {
    return false;
  }
  return true;
}

// A node reading channels of a group through its weight (index i of its input axis is atom atoms[i]), and
// the statistics of that input on the calibration data.
struct Consumer {
  size_t node = 0;
  std::string weight;
  int64_t in_dim = 0;      // dim of the weight over the input channels
  int64_t out_dim = 0;     // dim of the weight over the outputs
  std::vector<int> atoms;  // per input index
  std::vector<double> mean, var;
};

// Consumers whose input-channel slices the analysis recorded: Conv with group 1, Gemm, MatMul.
std::vector<Consumer> FindConsumers(const Model& model, const ChannelAnalysis& an) {
  const Graph& g = model.graph;
  std::vector<Consumer> out;
  for (const auto& e : an.slices) {
    const Node& n = g.nodes[e.reader];
    if (n.inputs.size() < 2 || n.inputs[1] != e.tensor) continue;
    int64_t in_dim = -1, out_dim = -1;
    if (n.op_type == "Conv" && n.AttrInt("group", 1) == 1) {
      in_dim = 1;
      out_dim = 0;
    } else if (n.op_type == "Gemm") {
      in_dim = n.AttrInt("transB", 0) != 0 ? 1 : 0;
      out_dim = 1 - in_dim;
    } else if (n.op_type == "MatMul") {
      in_dim = 0;
      out_dim = 1;
    }
    if (in_dim < 0 || e.dim != in_dim) continue;
    Consumer c;
    c.node = e.reader;
    c.weight = e.tensor;
    c.in_dim = in_dim;
    c.out_dim = out_dim;
    c.atoms = e.atoms;
    out.push_back(std::move(c));
  }
  return out;
}

// Measures mean and variance of every consumer's input per channel on the calibration data; a consumer
// whose statistics do not fit its weight keeps none (it is then neither ranked by nor compensated).
void MeasureConsumers(const Model& model, std::vector<Consumer>& consumers, CalibrationSource& source,
                      PassContext& ctx) {
  const Graph& g = model.graph;
  std::vector<ChannelRequest> requests;
  for (const auto& c : consumers) {
    const Node& n = g.nodes[c.node];
    requests.push_back({n.inputs[0], n.op_type == "MatMul" ? int64_t{-1} : int64_t{1}});
  }
  if (requests.empty()) return;
  const std::vector<ChannelSquares> sq = source.ChannelSumSquares(model, requests);
  for (size_t i = 0; i < consumers.size() && i < sq.size(); ++i) {
    Consumer& c = consumers[i];
    const size_t n = c.atoms.size();
    if (sq[i].sum_sq.size() != n || sq[i].sum.size() != n || sq[i].count <= 0) {
      ctx.Note("prune_channels: " + g.nodes[c.node].Describe() + ": activation '" + requests[i].tensor + "' has " +
               std::to_string(sq[i].sum_sq.size()) + " channels, the weight expects " + std::to_string(n) +
               "; no activation statistics for it");
      continue;
    }
    const double count = static_cast<double>(sq[i].count);
    c.mean.resize(n);
    c.var.resize(n);
    for (size_t k = 0; k < n; ++k) {
      c.mean[k] = sq[i].sum[k] / count;
      c.var[k] = std::max(0.0, sq[i].sum_sq[k] / count - c.mean[k] * c.mean[k]);
    }
  }
}

// Per input index of a consumer's weight: the sum (sum_o sum_k W[o, i, k]) and the sum of squares over
// the outputs and the kernel, in row-major layout [outer, n, inner].
struct ColumnSums {
  std::vector<double> sum, sum_sq;  // per input index
};

std::optional<ColumnSums> Columns(const Tensor& w, int64_t dim) {
  auto v = passes::ToDoubles(w);
  if (!v || dim >= w.rank()) return std::nullopt;
  const int64_t n = w.dims()[static_cast<size_t>(dim)];
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < dim; ++i) outer *= w.dims()[static_cast<size_t>(i)];
  for (int64_t i = dim + 1; i < w.rank(); ++i) inner *= w.dims()[static_cast<size_t>(i)];
  ColumnSums cs{std::vector<double>(static_cast<size_t>(n), 0.0), std::vector<double>(static_cast<size_t>(n), 0.0)};
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t c = 0; c < n; ++c) {
      for (int64_t k = 0; k < inner; ++k) {
        const double x = (*v)[static_cast<size_t>((o * n + c) * inner + k)];
        cs.sum[static_cast<size_t>(c)] += x;
        cs.sum_sq[static_cast<size_t>(c)] += x * x;
      }
    }
  }
  return cs;
}

// The Gram matrix of a consumer's input on the calibration data (original model), for the re-fit.
struct ConsumerGram {
  size_t consumer = 0;
  passes::Layout layout;
  passes::GramAccumulator acc;
  bool bias = false;  // the consumer has a bias of its own: X has a column of ones, the bias is fitted too
};

// Whether consumer `c`'s bias (input 2) is a float initializer of the right size read by it alone.
bool OwnBias(const Model& model, const Consumer& c, const std::unordered_map<std::string, int>& uses) {
  const Graph& g = model.graph;
  const Node& n = g.nodes[c.node];
  const Tensor* w = g.FindInitializer(c.weight);
  const std::string bias = n.inputs.size() > 2 ? n.inputs[2] : std::string();
  const Tensor* b = bias.empty() ? nullptr : g.FindInitializer(bias);
  const auto it = uses.find(bias);
  return w != nullptr && b != nullptr && b->dtype() == DType::kFloat &&
         b->numel() == w->dims()[static_cast<size_t>(c.out_dim)] && !passes::IsOverridable(model, g, bias) &&
         it != uses.end() && it->second == 1;
}

// All consumers' Gram matrices are held at once (measured in one run over the calibration data): at most
// this many doubles together (512 MB); consumers beyond it keep mean folding.
constexpr double kMaxTotalGramEntries = 4.0 * static_cast<double>(passes::kMaxGramEntries);

int64_t EffectiveRoundTo(int64_t round_to, int64_t width) {
  int64_t k = std::max<int64_t>(round_to, 1);
  while (k > 1 && width < 4 * k) k /= 2;
  return k;
}

class PruneChannelsPass : public Pass {
 public:
  explicit PruneChannelsPass(const nlohmann::json& o)
      : ratio_(o.at("ratio").get<double>()),
        importance_(o.at("importance").get<std::string>()),
        round_to_(o.at("round_to").get<int64_t>()),
        update_(o.at("update").get<bool>()) {
    for (const auto& n : o.at("exclude_nodes")) exclude_.insert(n.get<std::string>());
    if (!(ratio_ >= 0.0 && ratio_ < 1.0)) {
      ThrowUsage("prune_channels: ratio must be in [0, 1), got " + std::to_string(ratio_));
    }
    if (importance_ != "auto" && importance_ != "act" && importance_ != "l1" && importance_ != "l2" &&
        importance_ != "bn") {
      ThrowUsage("prune_channels: importance must be auto, act, l1, l2 or bn, got '" + importance_ + "'");
    }
    if (round_to_ < 1) ThrowUsage("prune_channels: round_to must be at least 1");
    if (o.contains("group_ratios") && o.at("group_ratios").is_object()) {
      const nlohmann::json& ratios = o.at("group_ratios");
      for (auto it = ratios.begin(); it != ratios.end(); ++it) {
        const double v = it.value().get<double>();
        if (!(v >= 0.0 && v < 1.0)) {
          ThrowUsage("prune_channels: group_ratios['" + it.key() + "'] must be in [0, 1), got " + it.value().dump());
        }
        group_ratios_[it.key()] = v;
      }
    }
  }

  void Run(Model& model, PassContext& ctx) override {
    if (ratio_ == 0.0 && group_ratios_.empty()) return;
    const ChannelAnalysis an = passes::AnalyzeChannels(model);
    const Graph& g = model.graph;
    const bool have_data = ctx.calibration() != nullptr && ctx.calibration()->has_data();
    if (importance_ == "act" && !have_data) {
      ThrowUsage("prune_channels: importance act needs calibration data (--calib DIR)");
    }
    // With calibration data every consumer's input statistics rank the channels (importance auto or act)
    // and compensate the removed channels' means.
    std::vector<Consumer> consumers = FindConsumers(model, an);
    if (have_data) {
      try {
        MeasureConsumers(model, consumers, *ctx.calibration(), ctx);
      } catch (const Error& e) {
        // The executor cannot run this model on the data (e.g. an operator it has no kernel for): rank by
        // weights, without compensation, unless activations were asked for explicitly.
        if (importance_ == "act") throw;
        ctx.Note(std::string("prune_channels: no activation statistics (") + e.what() + "); ranked by l2");
        for (auto& c : consumers) {
          c.mean.clear();
          c.var.clear();
        }
      }
    }
    act_ = have_data && (importance_ == "auto" || importance_ == "act");
    nlohmann::json layers = nlohmann::json::array();
    std::vector<std::vector<int>> removals;  // per group, atoms to remove
    std::vector<size_t> chosen;              // group index of each removal
    std::vector<std::string> methods;
    std::vector<std::string> keys;           // group key of each removal
    for (size_t gi = 0; gi < an.groups.size(); ++gi) {
      const ChannelGroup& grp = an.groups[gi];
      if (grp.producers.empty()) continue;
      const Node& first_node = g.nodes[an.producers[grp.producers[0]].node];
      const std::string first = first_node.Describe();
      const std::string key = first_node.name.empty() ? first : first_node.name;
      const auto listed = group_ratios_.find(key);
      const double ratio = listed != group_ratios_.end() ? listed->second : ratio_;
      if (ratio == 0.0) continue;
      if (!grp.prunable) {
        ctx.Count("groups_kept");
        ctx.Note("kept channels of " + first + ": " + grp.reason);
        continue;
      }
      std::string excluded;
      for (size_t p : grp.producers) {
        if (exclude_.count(g.nodes[an.producers[p].node].name)) excluded = g.nodes[an.producers[p].node].Describe();
      }
      if (!excluded.empty()) {
        ctx.Count("groups_kept");
        ctx.Note("kept channels of " + first + ": " + excluded + " excluded");
        continue;
      }
      const int64_t width = static_cast<int64_t>(grp.units.size());
      const int64_t k = EffectiveRoundTo(round_to_, width);
      int64_t keep = static_cast<int64_t>(std::ceil(static_cast<double>(width) * (1.0 - ratio) - 1e-9));
      keep = std::max<int64_t>(k, (keep + k - 1) / k * k);
      if (grp.heads) keep = KeptHeads(width, ratio_);
      if (grp.heads && keep >= width) {
        ctx.Count("groups_kept");
        ctx.Note("kept heads of " + first + ": " + std::to_string(width) + " heads, ratio " + std::to_string(ratio_) +
                 " removes none");
        continue;
      }
      if (keep >= width) {
        ctx.Count("groups_kept");
        ctx.Note("kept channels of " + first + ": " + std::to_string(width) + " channels, rounding to multiples of " +
                 std::to_string(k) + " leaves nothing to remove");
        continue;
      }
      std::string method;
      const std::vector<double> score =
          grp.heads ? HeadImportance(model, an, gi, &method) : Importance(model, an, grp, consumers, &method);
      std::vector<size_t> order(grp.units.size());
      for (size_t u = 0; u < order.size(); ++u) order[u] = u;
      std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return score[a] < score[b]; });
      std::vector<int> atoms;
      for (int64_t r = 0; r < width - keep; ++r) {
        const auto& unit = grp.units[order[static_cast<size_t>(r)]];
        atoms.insert(atoms.end(), unit.begin(), unit.end());
      }
      removals.push_back(atoms);
      chosen.push_back(gi);
      methods.push_back(method);
      keys.push_back(key);
    }

    // Apply everything; when the result does not check, apply group by group and keep what checks.
    std::vector<bool> applied(removals.size(), true);
    auto mask_of = [&](const std::vector<bool>& which) {
      std::vector<bool> removed(static_cast<size_t>(an.atom_count), false);
      for (size_t r = 0; r < removals.size(); ++r) {
        if (!which[r]) continue;
        for (int a : removals[r]) removed[static_cast<size_t>(a)] = true;
      }
      return removed;
    };
    // The consumers' input Gram matrices on the calibration data, measured once on the original model.
    std::vector<ConsumerGram> grams;
    if (have_data && update_ && !removals.empty()) grams = MeasureGrams(model, consumers, mask_of(applied), ctx);
    auto adjust = [&](Model& m, const std::vector<bool>& removed) {
      const std::vector<bool> refitted = Refit(m, consumers, grams, removed, ctx);
      Compensate(m, consumers, removed, refitted, ctx);
    };
    Model compensated = model;
    if (have_data) adjust(compensated, mask_of(applied));
    Model candidate = compensated;
    passes::ApplyChannelRemoval(candidate, an, mask_of(applied));
    if (!removals.empty() && !ShapesCheck(candidate)) {
      std::fill(applied.begin(), applied.end(), false);
      for (size_t r = 0; r < removals.size(); ++r) {
        applied[r] = true;
        Model trial = model;
        passes::ApplyChannelRemoval(trial, an, mask_of(applied));
        if (!ShapesCheck(trial)) {
          applied[r] = false;
          ctx.Count("groups_kept");
          ctx.Note("kept channels of " + g.nodes[an.producers[an.groups[chosen[r]].producers[0]].node].Describe() +
                   ": the pruned graph's shapes do not check");
        }
      }
      compensated = model;
      if (have_data) adjust(compensated, mask_of(applied));
      candidate = compensated;
      passes::ApplyChannelRemoval(candidate, an, mask_of(applied));
    }
    const std::vector<bool> removed = mask_of(applied);
    for (size_t r = 0; r < removals.size(); ++r) {
      if (!applied[r]) continue;
      const ChannelGroup& grp = an.groups[chosen[r]];
      ctx.Count("groups_pruned");
      for (size_t p : grp.producers) {
        const auto& prod = an.producers[p];
        int64_t after = 0;
        for (int a : prod.atoms) after += removed[static_cast<size_t>(a)] ? 0 : 1;
        ctx.Count("channels_removed", static_cast<int64_t>(prod.atoms.size()) - after);
        const Node& node = g.nodes[prod.node];
        layers.push_back({{"node", node.name.empty() ? node.Describe() : node.name},
                          {"op", node.op_type},
                          {"method", methods[r]},
                          {"channels_before", static_cast<int64_t>(prod.atoms.size())},
                          {"channels_after", after},
                          {"group", keys[r]}});
        if (grp.heads) AddHeadCounts(grp, removed, layers.back());
      }
    }
    if (!layers.empty()) ctx.details()["layers"] = layers;
    model = std::move(candidate);
  }

 private:
  // Folds the mean of every removed input channel of a consumer into the consumer's bias (a float
  // initializer read by that node alone); a consumer without one keeps its weights and gets a note.
  static void Compensate(Model& model, const std::vector<Consumer>& consumers, const std::vector<bool>& removed,
                         const std::vector<bool>& refitted, PassContext& ctx) {
    Graph& g = model.graph;
    const auto uses = passes::UseCounts(g);
    for (size_t ci = 0; ci < consumers.size(); ++ci) {
      const Consumer& c = consumers[ci];
      if (c.mean.empty() || refitted[ci]) continue;
      bool any = false;
      for (int a : c.atoms) any = any || (a >= 0 && removed[static_cast<size_t>(a)]);
      if (!any) continue;
      const Node& n = g.nodes[c.node];
      const Tensor* w = g.FindInitializer(c.weight);
      const std::string bias = n.inputs.size() > 2 ? n.inputs[2] : std::string();
      Tensor* b = bias.empty() ? nullptr : g.FindInitializer(bias);
      const int64_t nout = w != nullptr ? w->dims()[static_cast<size_t>(c.out_dim)] : 0;
      auto it = uses.find(bias);
      if (w == nullptr || b == nullptr || b->dtype() != DType::kFloat || b->numel() != nout ||
          passes::IsOverridable(model, g, bias) || it == uses.end() || it->second != 1) {
        ctx.Count("consumers_uncompensated");
        ctx.Note("prune_channels: " + n.Describe() + ": no bias of its own to take the removed channels' means");
        continue;
      }
      auto v = passes::ToDoubles(*w);
      if (!v) continue;
      // delta[o] = sum over removed inputs i of mean_i * sum_k W[o, i, k], W laid out with dims
      // [.., out, .., in, ..] (Conv [out, in, k...], Gemm [out, in] or [in, out], MatMul [in, out]).
      const auto& dims = w->dims();
      std::vector<int64_t> stride(dims.size(), 1);
      for (int64_t d = static_cast<int64_t>(dims.size()) - 2; d >= 0; --d) {
        stride[static_cast<size_t>(d)] = stride[static_cast<size_t>(d + 1)] * dims[static_cast<size_t>(d + 1)];
      }
      std::vector<double> delta(static_cast<size_t>(nout), 0.0);
      for (int64_t idx = 0; idx < w->numel(); ++idx) {
        const int64_t i = idx / stride[static_cast<size_t>(c.in_dim)] % dims[static_cast<size_t>(c.in_dim)];
        const int a = c.atoms[static_cast<size_t>(i)];
        if (a < 0 || !removed[static_cast<size_t>(a)]) continue;
        const int64_t o = idx / stride[static_cast<size_t>(c.out_dim)] % dims[static_cast<size_t>(c.out_dim)];
        delta[static_cast<size_t>(o)] += c.mean[static_cast<size_t>(i)] * (*v)[static_cast<size_t>(idx)];
      }
      float* bp = b->mutable_data<float>();
      for (int64_t o = 0; o < nout; ++o) bp[o] = static_cast<float>(bp[o] + delta[static_cast<size_t>(o)]);
      ctx.Count("consumers_compensated");
    }
  }

  // The Gram matrix of the input of every consumer that loses channels (X with a column of ones when
  // the consumer has a bias of its own), accumulated over the calibration data on the original model.
  // Consumers that cannot be re-fitted (a shared or non-float weight, a Gemm with alpha or beta != 1, K
  // over kMaxReconstructK, beyond kMaxTotalGramEntries for all of them) keep mean folding, with a note.
  static std::vector<ConsumerGram> MeasureGrams(const Model& model, const std::vector<Consumer>& consumers,
                                                const std::vector<bool>& removed, PassContext& ctx) {
    const Graph& g = model.graph;
    const auto uses = passes::UseCounts(g);
    std::vector<ConsumerGram> grams;
    double entries = 0;
    for (size_t i = 0; i < consumers.size(); ++i) {
      const Consumer& c = consumers[i];
      if (c.mean.empty()) continue;
      bool any = false;
      for (int a : c.atoms) any = any || (a >= 0 && removed[static_cast<size_t>(a)]);
      if (!any) continue;
      const Node& n = g.nodes[c.node];
      auto fold_only = [&](const std::string& why) {
        ctx.Note("prune_channels: " + n.Describe() + ": weights not re-fitted (removed channels' means folded only): " +
                 why);
      };
      const Tensor* w = g.FindInitializer(c.weight);
      const auto u = uses.find(c.weight);
      if (w == nullptr || w->dtype() != DType::kFloat) {
        fold_only("weight '" + c.weight + "' is not float32");
        continue;
      }
      if (u == uses.end() || u->second != 1 || passes::IsOverridable(model, g, c.weight)) {
        fold_only("weight '" + c.weight + "' is shared or can be replaced through a graph input");
        continue;
      }
      if (n.op_type == "Gemm" && (n.AttrFloat("alpha", 1.0f) != 1.0f || n.AttrFloat("beta", 1.0f) != 1.0f)) {
        fold_only("Gemm with alpha or beta other than 1");
        continue;
      }
      ConsumerGram cg;
      cg.consumer = i;
      std::string why;
      if (!passes::MakeLayout(n, w->dims(), &cg.layout, &why)) {
        fold_only(why);
        continue;
      }
      cg.bias = OwnBias(model, c, uses);
      const int64_t k = cg.layout.len * cg.layout.lines + (cg.bias ? 1 : 0);
      if (k > passes::kMaxReconstructK) {
        fold_only("K = " + std::to_string(k) + " exceeds " + std::to_string(passes::kMaxReconstructK));
        continue;
      }
      if (entries + static_cast<double>(k) * static_cast<double>(k) > kMaxTotalGramEntries) {
        fold_only("the Gram matrices of the consumers before it fill the budget of " +
                  std::to_string(static_cast<int64_t>(kMaxTotalGramEntries)) + " entries");
        continue;
      }
      entries += static_cast<double>(k) * static_cast<double>(k);
      cg.acc.gram = true;
      cg.acc.k = k;
      cg.acc.groups = 1;
      cg.acc.ones = cg.bias;
      cg.acc.h.assign(1, Eigen::MatrixXd::Zero(k, k));
      grams.push_back(std::move(cg));
    }
    if (grams.empty()) return grams;
    std::vector<std::string> names;
    for (const auto& cg : grams) names.push_back(g.nodes[consumers[cg.consumer].node].inputs[0]);
    try {
      ctx.calibration()->ForEachBatch(model, names, [&](size_t i, const Tensor& v) {
        ConsumerGram& cg = grams[i];
        const Consumer& c = consumers[cg.consumer];
        if (v.dtype() != DType::kFloat) {
          cg.acc.gram = false;
          cg.acc.why = "input is not float32";
          return;
        }
        passes::Accumulate(g.nodes[c.node], *g.FindInitializer(c.weight), cg.layout, v, &cg.acc);
      });
    } catch (const Error& e) {
      ctx.Note(std::string("prune_channels: consumers not re-fitted (") + e.what() + ")");
      return {};
    }
    for (auto& cg : grams) {
      if (!cg.acc.gram) {
        ctx.Note("prune_channels: " + g.nodes[consumers[cg.consumer].node].Describe() +
                 ": weights not re-fitted (removed channels' means folded only): " + cg.acc.why);
        cg.acc.h.clear();
        continue;
      }
      cg.acc.h[0] = cg.acc.h[0].selfadjointView<Eigen::Lower>();  // full symmetric
    }
    return grams;
  }

  // Re-fits the kept input weights (and the bias) of every consumer in `grams` that loses channels, by
  // least squares on its calibration inputs: per output row, with P the entries of the removed input
  // channels (every kernel position) and S the kept ones plus the bias column, w_S += (H_SS + lambda
  // I)^-1 H_SP w_P. A row whose fit fails or comes out worse than folding the means gets the mean
  // folding instead. Returns which consumers were handled; details.consumers lists their relative
  // output errors ||X (W' - W)||^2 / ||X W||^2 on the calibration data with mean folding and re-fitted.
  static std::vector<bool> Refit(Model& model, const std::vector<Consumer>& consumers,
                                 std::vector<ConsumerGram>& grams, const std::vector<bool>& removed,
                                 PassContext& ctx) {
    Graph& g = model.graph;
    std::vector<bool> done(consumers.size(), false);
    nlohmann::json report = nlohmann::json::array();
    for (auto& cg : grams) {
      if (!cg.acc.gram || cg.acc.h.size() != 1) continue;
      const Consumer& c = consumers[cg.consumer];
      bool any = false;
      for (int a : c.atoms) any = any || (a >= 0 && removed[static_cast<size_t>(a)]);
      if (!any) continue;
      const Node& n = g.nodes[c.node];
      Tensor* w = g.FindInitializer(c.weight);
      Tensor* b = cg.bias ? g.FindInitializer(n.inputs[2]) : nullptr;
      const passes::Layout& L = cg.layout;
      const Eigen::MatrixXd& H = cg.acc.h[0];
      const int64_t K = cg.acc.k, data_k = cg.bias ? K - 1 : K;
      const double mean_diag = H.diagonal().mean();
      if (w == nullptr || (cg.bias && b == nullptr) || !(mean_diag > 0) || !std::isfinite(mean_diag)) continue;
      const double lambda = passes::kDamping * mean_diag;
      const double count = cg.bias ? H(data_k, data_k) : 0.0;
      float* out = w->mutable_data<float>();
      float* bp = b != nullptr ? b->mutable_data<float>() : nullptr;
      // Element j (channel j / lines, kernel position j % lines) of row r.
      auto flat = [&](int64_t r, int64_t j) { return L.Index(r, j % L.lines, j / L.lines); };
      Eigen::VectorXd wv(K), wn(K), fold(K), diff(K);
      std::vector<int64_t> S, P;
      double energy = 0, err_fold = 0, err_refit = 0;
      for (int64_t r = 0; r < L.rows; ++r) {
        S.clear();
        P.clear();
        for (int64_t j = 0; j < data_k; ++j) {
          const int64_t i = flat(r, j);
          wv(j) = out[i];
          const int a = c.atoms[static_cast<size_t>(j / L.lines)];
          ((a >= 0 && removed[static_cast<size_t>(a)]) || out[i] == 0.0f ? P : S).push_back(j);
        }
        // Mean folding: the removed entries' mean input (H(j, ones) / count) times their weight, into the bias.
        fold = wv;
        if (cg.bias) {
          wv(data_k) = 0.0;
          fold(data_k) = 0.0;
          S.push_back(data_k);
          for (int64_t j : P) fold(data_k) += count > 0 ? wv(j) * H(j, data_k) / count : 0.0;
        }
        for (int64_t j : P) fold(j) = 0.0;
        energy += wv.dot(H * wv);
        diff = fold - wv;
        const double ef = diff.dot(H * diff);
        err_fold += ef;
        double er = ef;
        if (!P.empty() && !S.empty() && passes::RefitRow(H, lambda, wv, S, P, &wn)) {
          diff = wn - wv;
          er = diff.dot(H * diff);
        }
        if (!(er < ef) || !std::isfinite(er)) {  // never worse than folding the means
          wn = fold;
          er = ef;
        }
        err_refit += er;
        for (int64_t j : S) {
          if (j < data_k) out[flat(r, j)] = static_cast<float>(wn(j));
        }
        if (bp != nullptr) bp[r] = static_cast<float>(bp[r] + wn(data_k));
      }
      done[cg.consumer] = true;
      ctx.Count("consumers_refitted");
      const double e = energy > 0 ? energy : 1.0;
      report.push_back({{"node", n.name.empty() ? n.Describe() : n.name},
                        {"output_error_mean_fold", err_fold / e},
                        {"output_error", err_refit / e}});
    }
    if (!report.empty()) ctx.details()["consumers"] = report;
    return done;
  }

  // Importance of each unit of `grp`; `method` says what was used.
  std::vector<double> Importance(const Model& model, const ChannelAnalysis& an, const ChannelGroup& grp,
                                 const std::vector<Consumer>& consumers, std::string* method) const {
    std::vector<double> atom_score(static_cast<size_t>(an.atom_count), 0.0);
    if (act_) {
      const size_t group = GroupIndex(an, grp);
      // sum over consumers and input indices of the unit's atoms of var_i * ||W[:, i]||^2.
      bool measured = false;
      for (const auto& c : consumers) {
        if (c.var.empty()) continue;
        bool mine = false;
        for (int a : c.atoms) {
          mine = mine || (a >= 0 && static_cast<size_t>(an.group_of_atom[static_cast<size_t>(a)]) == group);
        }
        if (!mine) continue;
        const Tensor* w = model.graph.FindInitializer(c.weight);
        auto cols = w != nullptr ? Columns(*w, c.in_dim) : std::nullopt;
        if (!cols || cols->sum_sq.size() != c.atoms.size()) continue;
        measured = true;
        for (size_t i = 0; i < c.atoms.size(); ++i) {
          if (c.atoms[i] >= 0) atom_score[static_cast<size_t>(c.atoms[i])] += c.var[i] * cols->sum_sq[i];
        }
      }
      if (measured) {
        *method = "act";
        std::vector<double> score;
        for (const auto& unit : grp.units) {
          double s = 0;
          for (int a : unit) s += atom_score[static_cast<size_t>(a)];
          score.push_back(std::sqrt(s));
        }
        return score;
      }
    }
    bool use_bn = importance_ == "bn";
    for (size_t p : grp.producers) use_bn = use_bn && !an.producers[p].bn_scale.empty();
    const std::string norm = importance_ == "l1" ? "l1" : "l2";
    *method = use_bn ? "bn" : norm;
    for (size_t p : grp.producers) {
      const auto& prod = an.producers[p];
      if (use_bn) {
        const Tensor* s = model.graph.FindInitializer(prod.bn_scale);
        auto v = s != nullptr ? passes::ToDoubles(*s) : std::nullopt;
        if (v && v->size() == prod.atoms.size()) {
          for (size_t c = 0; c < v->size(); ++c) atom_score[static_cast<size_t>(prod.atoms[c])] += std::fabs((*v)[c]);
        }
        continue;
      }
      const Tensor* w = model.graph.FindInitializer(prod.weight);
      auto v = w != nullptr ? passes::ToDoubles(*w) : std::nullopt;
      if (!v) continue;
      int64_t outer = 1, inner = 1;
      const int64_t n = w->dims()[static_cast<size_t>(prod.out_dim)];
      for (int64_t i = 0; i < prod.out_dim; ++i) outer *= w->dims()[static_cast<size_t>(i)];
      for (int64_t i = prod.out_dim + 1; i < w->rank(); ++i) inner *= w->dims()[static_cast<size_t>(i)];
      std::vector<double> acc(static_cast<size_t>(n), 0.0);
      for (int64_t o = 0; o < outer; ++o) {
        for (int64_t c = 0; c < n; ++c) {
          for (int64_t i = 0; i < inner; ++i) {
            const double x = (*v)[static_cast<size_t>((o * n + c) * inner + i)];
            acc[static_cast<size_t>(c)] += *method == "l1" ? std::fabs(x) : x * x;
          }
        }
      }
      for (int64_t c = 0; c < n && c < static_cast<int64_t>(prod.atoms.size()); ++c) {
        const double s = *method == "l1" ? acc[static_cast<size_t>(c)] : std::sqrt(acc[static_cast<size_t>(c)]);
        atom_score[static_cast<size_t>(prod.atoms[static_cast<size_t>(c)])] += s;
      }
    }
    std::vector<double> score;
    for (const auto& unit : grp.units) {
      double s = 0;
      for (int a : unit) s += atom_score[static_cast<size_t>(a)];
      score.push_back(s);
    }
    return score;
  }

  static size_t GroupIndex(const ChannelAnalysis& an, const ChannelGroup& grp) {
    return static_cast<size_t>(&grp - an.groups.data());
  }

  // Attention heads (groups whose units are heads): round_to does not apply; floor(heads * ratio) heads go,
  // at least one stays.
  static int64_t KeptHeads(int64_t heads, double ratio) {
    const int64_t gone = static_cast<int64_t>(std::floor(static_cast<double>(heads) * ratio + 1e-9));
    return std::max<int64_t>(1, heads - gone);
  }

  static void AddHeadCounts(const ChannelGroup& grp, const std::vector<bool>& removed, nlohmann::json& layer) {
    int64_t after = 0;
    for (const auto& unit : grp.units) after += removed[static_cast<size_t>(unit[0])] ? 0 : 1;
    layer["heads_before"] = static_cast<int64_t>(grp.units.size());
    layer["heads_after"] = after;
  }

  // Importance of each head of group `gi`: the L2 (L1 with importance "l1") norm of every weight of a
  // MatMul or Gemm the head owns: its Q, K and V projection columns and its rows of the output projection.
  std::vector<double> HeadImportance(const Model& model, const ChannelAnalysis& an, size_t gi,
                                     std::string* method) const {
    const bool l1 = importance_ == "l1";
    *method = l1 ? "l1" : "l2";
    const Graph& g = model.graph;
    auto mine = [&](int a) { return a >= 0 && static_cast<size_t>(an.group_of_atom[static_cast<size_t>(a)]) == gi; };
    std::vector<double> atom_score(static_cast<size_t>(an.atom_count), 0.0);
    for (const auto& e : an.slices) {
      const Node& reader = g.nodes[e.reader];
      if ((reader.op_type != "MatMul" && reader.op_type != "Gemm") || reader.inputs.size() < 2 ||
          reader.inputs[1] != e.tensor || std::none_of(e.atoms.begin(), e.atoms.end(), mine)) {
        continue;
      }
      const Tensor* w = g.FindInitializer(e.tensor);
      auto v = w != nullptr ? passes::ToDoubles(*w) : std::nullopt;
      if (!v || e.dim >= w->rank() || w->dims()[static_cast<size_t>(e.dim)] != static_cast<int64_t>(e.atoms.size())) {
        continue;
      }
      int64_t outer = 1, inner = 1;
      const int64_t n = w->dims()[static_cast<size_t>(e.dim)];
      for (int64_t i = 0; i < e.dim; ++i) outer *= w->dims()[static_cast<size_t>(i)];
      for (int64_t i = e.dim + 1; i < w->rank(); ++i) inner *= w->dims()[static_cast<size_t>(i)];
      for (int64_t o = 0; o < outer; ++o) {
        for (int64_t c = 0; c < n; ++c) {
          const int a = e.atoms[static_cast<size_t>(c)];
          if (!mine(a)) continue;
          for (int64_t i = 0; i < inner; ++i) {
            const double x = (*v)[static_cast<size_t>((o * n + c) * inner + i)];
            atom_score[static_cast<size_t>(a)] += l1 ? std::fabs(x) : x * x;
          }
        }
      }
    }
    std::vector<double> score;
    for (const auto& unit : an.groups[gi].units) {
      double s = 0;
      for (int a : unit) s += atom_score[static_cast<size_t>(a)];
      score.push_back(l1 ? s : std::sqrt(s));
    }
    return score;
  }

  double ratio_;
  std::string importance_;
  bool act_ = false;
  int64_t round_to_;
  bool update_;
  std::set<std::string> exclude_;
  std::map<std::string, double> group_ratios_;
};

}  // namespace

std::unique_ptr<Pass> MakePruneChannelsPass(const nlohmann::json& options) {
  return std::make_unique<PruneChannelsPass>(options);
}

}  // namespace compress
