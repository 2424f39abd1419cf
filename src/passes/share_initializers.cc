// share_initializers: initializers of one graph holding identical tensors become one.
//
//   Before:  a = [1, 2, 3]   b = [1, 2, 3]   x, a -> Mul;  y, b -> Add
//   After:   a = [1, 2, 3]                   x, a -> Mul;  y, a -> Add
//
// Two initializers with the same element type, shape and bytes are the same value, so every reader of
// the later one may read the first one (by order in the graph) instead, also from subgraphs. An
// initializer the caller may replace through a graph input of the same name (IR version >= 4) is not
// a fixed value and is never merged; neither is one that is itself a graph output, whose name is part
// of the model's interface. Before IR version 4 every initializer is listed as a graph input without
// being replaceable; a merged one leaves that list too.

#include <algorithm>
#include <functional>
#include <string_view>

#include "compress/passes/builders.h"
#include "pass_util.h"

namespace compress {

namespace {

size_t ContentHash(const Tensor& t) {
  size_t h = std::hash<int32_t>()(static_cast<int32_t>(t.dtype()));
  auto mix = [&h](size_t v) { h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2); };
  for (int64_t d : t.dims()) mix(std::hash<int64_t>()(d));
  if (t.dtype() == DType::kString) {
    for (const auto& s : t.strings()) mix(std::hash<std::string>()(s));
  } else if (t.nbytes() > 0) {
    mix(std::hash<std::string_view>()(std::string_view(static_cast<const char*>(t.raw()), t.nbytes())));
    t.ReleasePages();  // a weight mapped from a file is read once here: do not keep it resident
  }
  return h;
}

class ShareInitializersPass : public Pass {
 public:
  void Run(Model& model, PassContext& ctx) override {
    ForEachGraph(model.graph, [&](Graph& g) { RunGraph(model, g, ctx); });
  }

 private:
  static void RunGraph(const Model& model, Graph& g, PassContext& ctx) {
    const auto outputs = passes::GraphOutputNames(g);
    std::unordered_map<size_t, std::vector<size_t>> by_hash;  // candidates kept, by content hash
    std::vector<bool> merged(g.initializers.size(), false);
    std::unordered_set<std::string> gone;
    for (size_t i = 0; i < g.initializers.size(); ++i) {
      const Tensor& t = g.initializers[i];
      if (passes::IsOverridable(model, g, t.name()) || outputs.count(t.name())) continue;
      auto& bucket = by_hash[ContentHash(t)];
      size_t first = g.initializers.size();
      for (size_t j : bucket) {
        if (g.initializers[j].SameContent(t)) {
          first = j;
          break;
        }
      }
      if (first == g.initializers.size()) {
        bucket.push_back(i);
        continue;
      }
      passes::ReplaceUses(g, t.name(), g.initializers[first].name());
      merged[i] = true;
      gone.insert(t.name());
      ctx.Count("shared");
      ctx.Count("bytes_saved", static_cast<int64_t>(t.nbytes()));
    }
    if (gone.empty()) return;
    std::vector<Tensor> kept;
    for (size_t i = 0; i < g.initializers.size(); ++i) {
      if (!merged[i]) kept.push_back(std::move(g.initializers[i]));
    }
    g.initializers = std::move(kept);
    // Only reachable before IR version 4, where listed initializers are not replaceable inputs.
    auto& in = g.inputs;
    in.erase(std::remove_if(in.begin(), in.end(), [&](const ValueInfo& v) { return gone.count(v.name) > 0; }),
             in.end());
    passes::EraseValueInfo(g, gone);
  }
};

}  // namespace

std::unique_ptr<Pass> MakeShareInitializersPass(const nlohmann::json& /*options*/) {
  return std::make_unique<ShareInitializersPass>();
}

}  // namespace compress
