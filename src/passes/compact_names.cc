// compact_names: shortens the names of intermediate values and initializers (and, unless asked to keep
// them, drops node names) so that a small model's file is not dominated by its wiring.
//
//   Before:  Conv "/stem/stem.0/Conv" ("onnx::Conv_55_q" ...) -> "/stem/stem.0/Conv_output_0" -> Relu ...
//   After:   Conv ("c3" ...) -> "t0" -> Relu -> ...
//
// Exporters name every value after its producer ("<node name>_output_0"), so a value's name costs its
// bytes once where it is produced and again wherever it is read. On a model of a few hundred kilobytes
// those names are several percent of the file. Graph inputs and graph outputs keep their names: they are
// the model's interface. Initializers are renamed "c<N>" unless keep_initializer_names is set (an
// initializer that is also a graph input keeps its name either way). Values defined inside subgraphs keep
// theirs; references from subgraphs to renamed outer values follow the rename. Attributes that hold the
// value the operator takes when they are absent (Conv's dilations [1,1], group 1, ...) are dropped unless
// keep_default_attributes is set. The computation is unchanged. Opt-in (not part of the clean-up): names
// help when debugging a model.

#include <algorithm>
#include <unordered_map>
#include <unordered_set>

#include "compress/io/schema.h"
#include "compress/passes/builders.h"
#include "pass_util.h"

namespace compress {

namespace {

using Renames = std::unordered_map<std::string, std::string>;

// Applies `renames` to every reference in `graph` and its subgraphs. A subgraph that defines a name
// itself hides the outer value of that name from its nodes.
void ApplyRenames(Graph& graph, const Renames& renames, bool is_root) {
  Renames visible = renames;
  if (!is_root) {
    for (const auto& v : graph.inputs) visible.erase(v.name);
    for (const auto& t : graph.initializers) visible.erase(t.name());
    for (const auto& n : graph.nodes) {
      for (const auto& o : n.outputs) visible.erase(o);
    }
  }
  if (visible.empty()) return;
  auto rename = [&visible](std::string& name) {
    const auto it = visible.find(name);
    if (it != visible.end()) name = it->second;
  };
  for (auto& n : graph.nodes) {
    for (auto& i : n.inputs) rename(i);
    if (is_root) {
      for (auto& o : n.outputs) rename(o);
    }
    for (auto& a : n.attributes) {
      for (auto& g : a.graphs) ApplyRenames(g, visible, false);
    }
  }
  if (is_root) {
    for (auto& v : graph.value_info) rename(v.name);
  } else {
    // Subgraph outputs may be outer values passed straight through.
    for (auto& v : graph.outputs) rename(v.name);
  }
}

// Removes attributes equal to their operator's default from the nodes of `graph` and its subgraphs.
int64_t DropDefaultAttributes(const Model& model, Graph& graph) {
  int64_t dropped = 0;
  for (auto& n : graph.nodes) {
    const int64_t version = model.OpsetVersion(n.domain);
    auto& attrs = n.attributes;
    for (auto& a : attrs) {
      for (auto& g : a.graphs) dropped += DropDefaultAttributes(model, g);
    }
    const auto end = std::remove_if(attrs.begin(), attrs.end(), [&](const Attribute& a) {
      return version > 0 && IsDefaultAttribute(n.domain, n.op_type, version, a);
    });
    dropped += static_cast<int64_t>(attrs.end() - end);
    attrs.erase(end, attrs.end());
  }
  return dropped;
}

class CompactNamesPass : public Pass {
 public:
  explicit CompactNamesPass(const nlohmann::json& options)
      : keep_node_names_(options.at("keep_node_names")),
        keep_initializer_names_(options.at("keep_initializer_names")),
        keep_default_attributes_(options.at("keep_default_attributes")) {}

  void Run(Model& model, PassContext& ctx) override {
    Graph& g = model.graph;
    std::unordered_set<std::string> keep;
    for (const auto& v : g.inputs) keep.insert(v.name);
    for (const auto& v : g.outputs) keep.insert(v.name);
    if (keep_initializer_names_) {
      for (const auto& t : g.initializers) keep.insert(t.name());
    }
    for (const auto& s : g.sparse_initializers) keep.insert(s.values.name());
    passes::NameGenerator names(g);
    Renames renames;
    int64_t saved = 0;
    // Renames `old` to `prefix` + the count of earlier renames of its kind, unless that is no shorter.
    auto add = [&](const std::string& old, const char* prefix, int64_t& count) {
      std::string fresh = names.Make(prefix + std::to_string(count));
      if (fresh.size() >= old.size()) return;  // already short
      saved += static_cast<int64_t>(old.size() - fresh.size());
      renames.emplace(old, std::move(fresh));
      ++count;
    };
    int64_t renamed_initializers = 0, renamed_values = 0;
    for (auto& t : g.initializers) {
      if (keep.count(t.name()) || renames.count(t.name())) continue;
      add(t.name(), "c", renamed_initializers);
      if (const auto it = renames.find(t.name()); it != renames.end()) t.set_name(it->second);
    }
    for (const auto& n : g.nodes) {
      for (const auto& o : n.outputs) {
        if (o.empty() || keep.count(o) || renames.count(o)) continue;
        add(o, "t", renamed_values);
      }
    }
    ApplyRenames(g, renames, true);
    ctx.Count("renamed_values", renamed_values);
    ctx.Count("renamed_initializers", renamed_initializers);
    if (!keep_node_names_) {
      int64_t cleared = 0;
      for (auto& n : g.nodes) {
        if (!n.name.empty()) {
          saved += static_cast<int64_t>(n.name.size());
          n.name.clear();
          ++cleared;
        }
      }
      ctx.Count("cleared_node_names", cleared);
    }
    ctx.Count("name_bytes_saved", saved);
    if (!keep_default_attributes_) {
      ctx.Count("dropped_default_attributes", DropDefaultAttributes(model, g));
    }
  }

 private:
  bool keep_node_names_;
  bool keep_initializer_names_;
  bool keep_default_attributes_;
};

}  // namespace

std::unique_ptr<Pass> MakeCompactNamesPass(const nlohmann::json& options) {
  return std::make_unique<CompactNamesPass>(options);
}

}  // namespace compress
