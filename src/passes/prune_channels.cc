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
// BatchNormalization reading each producer (L2 when a producer of the group has none). The group keeps
// ceil(width * (1 - ratio)) units rounded up to a multiple of round_to (halved while the group has fewer
// than 4 * round_to units, so small groups are not rounded away), at least round_to, and never all of
// them removed. Groups that reach a graph output, a subgraph or an operator the analysis does not
// understand stay whole, with a note naming the node. After the surgery the shapes are inferred and the
// operators verified; when that fails the groups are applied one at a time and the ones that fail stay.
//
// `group_ratios` sets the ratio of single groups, keyed by the name of the group's first producer node
// (its description when unnamed; the "group" of every entry of details.layers): a listed group uses its
// own ratio, the others `ratio` (0 leaves them whole). --target-macs and `compress sensitivity` prune
// through it.

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "channel_groups.h"
#include "compress/io/schema.h"
#include "compress/passes/builders.h"
#include "compress/util/error.h"
#include "pass_util.h"

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
        round_to_(o.at("round_to").get<int64_t>()) {
    for (const auto& n : o.at("exclude_nodes")) exclude_.insert(n.get<std::string>());
    if (!(ratio_ >= 0.0 && ratio_ < 1.0)) {
      ThrowUsage("prune_channels: ratio must be in [0, 1), got " + std::to_string(ratio_));
    }
    if (importance_ != "l1" && importance_ != "l2" && importance_ != "bn") {
      ThrowUsage("prune_channels: importance must be l1, l2 or bn, got '" + importance_ + "'");
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
      if (keep >= width) {
        ctx.Count("groups_kept");
        ctx.Note("kept channels of " + first + ": " + std::to_string(width) + " channels, rounding to multiples of " +
                 std::to_string(k) + " leaves nothing to remove");
        continue;
      }
      std::string method;
      const std::vector<double> score = Importance(model, an, grp, &method);
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
    Model candidate = model;
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
      candidate = model;
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
      }
    }
    if (!layers.empty()) ctx.details()["layers"] = layers;
    model = std::move(candidate);
  }

 private:
  // Importance of each unit of `grp`; `method` says what was used.
  std::vector<double> Importance(const Model& model, const ChannelAnalysis& an, const ChannelGroup& grp,
                                 std::string* method) const {
    std::vector<double> atom_score(static_cast<size_t>(an.atom_count), 0.0);
    bool use_bn = importance_ == "bn";
    for (size_t p : grp.producers) use_bn = use_bn && !an.producers[p].bn_scale.empty();
    *method = use_bn ? "bn" : (importance_ == "bn" ? "l2" : importance_);
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

  double ratio_;
  std::string importance_;
  int64_t round_to_;
  std::set<std::string> exclude_;
  std::map<std::string, double> group_ratios_;
};

}  // namespace

std::unique_ptr<Pass> MakePruneChannelsPass(const nlohmann::json& options) {
  return std::make_unique<PruneChannelsPass>(options);
}

}  // namespace compress
