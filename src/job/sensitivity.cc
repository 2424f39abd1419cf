#include "compress/job/sensitivity.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <limits>
#include <map>
#include <sstream>

#include "compress/eval/macs.h"
#include "compress/exec/executor.h"
#include "compress/pipeline/pipeline.h"
#include "compress/report/inspect.h"
#include "compress/report/report.h"
#include "compress/util/error.h"
#include "compress/util/format.h"
#include "compress/util/progress.h"

namespace compress {

namespace {

std::string Fixed(double v, int digits) { return FormatFixed(v, digits); }
std::string Thousands(int64_t v) { return FormatThousands(v); }

using nlohmann::json;

// Bisection steps of the uniform ratio without data: the ratio is then within 0.75 / 2^20 of the smallest
// that meets the budget, far below one channel of any real layer.
constexpr int kBisectionSteps = 20;

PipelineOptions PipeOptions(const SensitivityOptions& o, bool with_calibration) {
  PipelineOptions p;
  p.threads = o.threads;
  p.calibration = with_calibration ? o.calibration : nullptr;
  return p;
}

// The model after the clean-up passes: what a compression run's pruning pass sees.
Model Cleaned(const Model& original, const SensitivityOptions& o) {
  Model m = original;
  if (!o.cleanup) return m;
  Recipe r;
  r.optimize = true;
  RunPipeline(m, r, PipeOptions(o, false));
  return m;
}

// `cleaned` with one pass applied; its details land in `details`.
Model RunStep(const Model& cleaned, const std::string& pass, const json& options, const PipelineOptions& popt,
              json* details) {
  Model m = cleaned;
  Recipe r;
  r.optimize = false;
  r.steps.push_back(MakeRecipeStep(pass, options, pass));
  const auto runs = RunPipeline(m, r, popt);
  if (details != nullptr) *details = runs.empty() ? json::object() : runs.front().details;
  return m;
}

std::string NodeKey(const Node& n) { return n.name.empty() ? n.Describe() : n.name; }

std::map<std::string, int64_t> MacsByName(const MacsCount& c) {
  std::map<std::string, int64_t> m;
  for (const auto& n : c.nodes) {
    if (n.counted && n.graph.empty() && n.macs) m[n.node] += *n.macs;
  }
  return m;
}

const Node* FindNodeByKey(const Graph& g, const std::string& key) {
  for (const auto& n : g.nodes) {
    if (NodeKey(n) == key) return &n;
  }
  return nullptr;
}

json SqnrJson(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

// A prunable channel group of a full prune_channels run: its key and its producers' rows of details.layers.
struct GroupRows {
  std::string key;
  std::vector<json> layers;
};

std::vector<GroupRows> GroupsOf(const json& details) {
  std::vector<GroupRows> groups;
  if (!details.contains("layers")) return groups;
  for (const auto& l : details["layers"]) {
    const std::string key = l.value("group", l.value("node", std::string()));
    auto it = std::find_if(groups.begin(), groups.end(), [&](const GroupRows& g) { return g.key == key; });
    if (it == groups.end()) {
      groups.push_back({key, {}});
      it = groups.end() - 1;
    }
    it->layers.push_back(l);
  }
  return groups;
}

json ChannelRows(const json& details) {
  json rows = json::array();
  if (!details.contains("layers")) return rows;
  for (const auto& l : details["layers"]) {
    rows.push_back({{"node", l.value("node", std::string())},
                    {"before", l.value("channels_before", int64_t{0})},
                    {"after", l.value("channels_after", int64_t{0})}});
  }
  return rows;
}

}  // namespace

FidelityProbe::FidelityProbe(const Model& original, const Dataset& data, const SensitivityOptions& options)
    : data_(data), options_(options) {
  ExecutorOptions eo;
  eo.threads = options.threads;
  Executor exec(original, eo);
  EvalOptions ev;
  ev.batch = options.batch;
  ev.limit = options.limit;
  ev.progress = false;
  ev.keep_outputs = true;
  reference_ = Evaluate(exec, data, ev);
}

Fidelity FidelityProbe::Measure(const Model& candidate) const {
  ExecutorOptions eo;
  eo.threads = options_.threads;
  Executor exec(candidate, eo);
  EvalOptions ev;
  ev.batch = options_.batch;
  ev.limit = options_.limit;
  ev.progress = false;
  ev.keep_outputs = true;
  const EvalResult b = Evaluate(exec, data_, ev);
  const EvalResult& a = reference_;
  if (a.samples != b.samples || a.output0.size() != b.output0.size()) {
    ThrowInternal("sensitivity: the pruned model's output 0 has " + std::to_string(b.output0.size()) +
                  " values over " + std::to_string(b.samples) + " samples, the original's " +
                  std::to_string(a.output0.size()) + " over " + std::to_string(a.samples));
  }
  const OutputFidelity o = CompareOutputs(a, b);
  Fidelity f;
  f.agreement = o.agreement;
  f.cosine = o.cosine;
  f.sqnr_db = o.sqnr_db;
  const double signal = o.signal, noise = o.noise;
  f.noise_ratio = signal > 0 ? noise / signal : (noise > 0 ? std::numeric_limits<double>::infinity() : 0.0);
  if (b.has_labels) f.top1 = b.top1;
  return f;
}

json RunSensitivity(const Model& original, const std::string& model_path, const RecipeStep& step,
                    const Dataset& data, const std::string& data_label, const SensitivityOptions& options) {
  const bool channels = step.pass == "prune_channels";
  const bool low_rank = step.pass == "low_rank";
  if (!channels && !low_rank && step.pass != "prune") ThrowInternal("sensitivity: unsupported pass '" + step.pass + "'");
  const PipelineOptions popt = PipeOptions(options, true);
  const Model cleaned = Cleaned(original, options);
  const MacsCount macs_cleaned = CountMacs(cleaned);
  const auto node_macs = MacsByName(macs_cleaned);
  const int64_t params_cleaned = CountParameters(cleaned);

  // The candidates: what the pass prunes in a full run.
  json full;
  RunStep(cleaned, step.pass, step.options, popt, &full);
  struct Candidate {
    std::string key;
    std::vector<std::string> nodes;
    json options;
  };
  std::vector<Candidate> candidates;
  if (channels) {
    const double ratio = step.options.at("ratio").get<double>();
    for (const auto& g : GroupsOf(full)) {
      Candidate c{g.key, {}, step.options};
      for (const auto& l : g.layers) c.nodes.push_back(l.value("node", std::string()));
      c.options["ratio"] = 0.0;
      c.options["group_ratios"] = json{{g.key, ratio}};
      candidates.push_back(std::move(c));
    }
  } else if (full.contains("layers")) {
    for (const auto& l : full["layers"]) {
      const std::string node = l.value("node", std::string());
      Candidate c{node, {node}, step.options};
      c.options["only_nodes"] = json::array({node});
      candidates.push_back(std::move(c));
    }
  }

  const FidelityProbe probe(original, data, options);
  const EvalResult& ref = probe.reference();
  json entries = json::array();
  struct SortKey {
    double agreement, sqnr;
    size_t index;
  };
  std::vector<SortKey> keys;
  {
    ProgressBar bar("sensitivity", static_cast<int64_t>(candidates.size()), options.progress);
    for (size_t i = 0; i < candidates.size(); ++i) {
      const Candidate& c = candidates[i];
      json details;
      const Model m = RunStep(cleaned, step.pass, c.options, popt, &details);
      const Fidelity f = probe.Measure(m);
      json e;
      e["key"] = c.key;
      e["nodes"] = c.nodes;
      json ops = json::array();
      int64_t params = 0, macs = 0;
      for (const auto& n : c.nodes) {
        const Node* node = FindNodeByKey(cleaned.graph, n);
        ops.push_back(node != nullptr ? node->op_type : std::string());
        if (node != nullptr && node->inputs.size() > 1) {
          const Tensor* w = cleaned.graph.FindInitializer(node->inputs[1]);
          if (w != nullptr) params += w->numel();
        }
        const auto it = node_macs.find(n);
        if (it != node_macs.end()) macs += it->second;
      }
      e["op_types"] = ops;
      e["params"] = params;
      if (channels) {
        e["params_removed"] = params_cleaned - CountParameters(m);
        e["channels"] = ChannelRows(details);
      } else if (low_rank) {
        e["params_removed"] = params_cleaned - CountParameters(m);
        const json& rows = details.contains("layers") ? details["layers"] : json::array();
        e["rank"] = rows.empty() ? json(nullptr) : rows[0]["rank"];
        e["scheme"] = rows.empty() ? json(nullptr) : rows[0]["scheme"];
        e["layer_sqnr_db"] = rows.empty() ? json(nullptr) : rows[0]["sqnr_db"];
      } else {
        int64_t zeroed = 0;
        if (details.contains("layers")) {
          for (const auto& l : details["layers"]) {
            zeroed += static_cast<int64_t>(std::llround((l.value("sparsity_after", 0.0) - l.value("sparsity_before", 0.0)) *
                                                        static_cast<double>(l.value("params", int64_t{0}))));
          }
        }
        e["params_removed"] = zeroed;
      }
      e["macs"] = macs;
      e["macs_removed"] = macs_cleaned.total - CountMacs(m).total;
      e["agreement"] = f.agreement;
      e["cosine"] = f.cosine;
      e["sqnr_db"] = SqnrJson(f.sqnr_db);
      e["top1"] = f.top1 ? json(*f.top1) : json(nullptr);
      e["top1_change_pts"] = f.top1 ? json((*f.top1 - ref.top1) * 100.0) : json(nullptr);
      keys.push_back({f.agreement, f.sqnr_db, i});
      entries.push_back(std::move(e));
      bar.Advance(1);
    }
    bar.Finish();
  }
  // Largest drop first: lowest agreement, then lowest SQNR, then graph order.
  std::stable_sort(keys.begin(), keys.end(), [](const SortKey& a, const SortKey& b) {
    if (a.agreement != b.agreement) return a.agreement < b.agreement;
    if (a.sqnr != b.sqnr) return a.sqnr < b.sqnr;
    return a.index < b.index;
  });
  json sorted = json::array();
  for (const auto& k : keys) sorted.push_back(entries[k.index]);

  json doc;
  doc["schema"] = "compress.sensitivity/1";
  doc["model"] = model_path;
  doc["data"] = data_label;
  doc["samples"] = ref.samples;
  doc["skipped"] = ref.skipped;
  doc["labelled"] = ref.has_labels;
  doc["top1"] = ref.has_labels ? json(ref.top1) : json(nullptr);
  doc["pass"] = step.pass;
  doc["options"] = step.options;
  doc["macs"] = macs_cleaned.total;
  doc["params"] = params_cleaned;
  doc["sorted_by"] = "agreement ascending, then sqnr_db ascending (null, identical output, last), then graph order";
  doc["entries"] = sorted;
  return doc;
}

json ChooseTargetMacsOptions(const Model& original, const RecipeStep& step, double fraction, const Dataset* data,
                             const SensitivityOptions& options, json* details) {
  const std::vector<double>& ratios = TargetMacsRatios();
  const double rmax = ratios.back();
  const Model cleaned = Cleaned(original, options);
  const int64_t macs0 = CountMacs(original).total;
  const int64_t macs_cleaned = CountMacs(cleaned).total;
  const double budget = fraction * static_cast<double>(macs0);
  // MAC counts depend on the widths only, not on which channels go: they are measured without calibration
  // (no activation statistics gathered for each trial).
  const PipelineOptions quick = PipeOptions(options, false);
  json base = step.options;
  base["group_ratios"] = json::object();
  json counting = base;
  counting["importance"] = "l2";
  std::map<std::string, int64_t> cache;
  const auto macs_of = [&](const json& o) {
    json c = counting;
    c["ratio"] = o["ratio"];
    c["group_ratios"] = o["group_ratios"];
    const std::string key = c.dump();
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
    const int64_t v = CountMacs(RunStep(cleaned, step.pass, c, quick, nullptr)).total;
    cache[key] = v;
    return v;
  };

  json at_max = base;
  at_max["ratio"] = rmax;
  json max_details;
  {
    json c = counting;
    c["ratio"] = rmax;
    RunStep(cleaned, step.pass, c, quick, &max_details);
  }
  const int64_t macs_min = macs_of(at_max);
  const double reachable = macs0 > 0 ? static_cast<double>(macs_min) / static_cast<double>(macs0) : 1.0;
  if (static_cast<double>(macs_min) > budget) {
    throw Error(ErrorKind::kAccuracyGate,
                "--target-macs " + Fixed(fraction, 4) + " cannot be met: removing " + Fixed(rmax * 100, 0) +
                    "% of the channels of every prunable channel group keeps " + Thousands(macs_min) + " of " +
                    Thousands(macs0) + " MACs; the reachable minimum is " + Fixed(reachable, 4));
  }
  json d;
  d["target_fraction"] = fraction;
  d["macs_before"] = macs0;
  d["reachable_fraction"] = reachable;
  json result = base;
  if (static_cast<double>(macs_cleaned) <= budget) {
    result["ratio"] = 0.0;
    d["method"] = "none";
    d["macs_after"] = macs_cleaned;
  } else if (data == nullptr) {
    // Without data: the smallest uniform ratio whose surgery meets the budget.
    double lo = 0.0, hi = rmax;
    for (int i = 0; i < kBisectionSteps; ++i) {
      const double mid = 0.5 * (lo + hi);
      json o = base;
      o["ratio"] = mid;
      if (static_cast<double>(macs_of(o)) <= budget) hi = mid;
      else lo = mid;
    }
    result["ratio"] = hi;
    d["method"] = "uniform";
    d["ratio"] = hi;
    d["macs_after"] = macs_of(result);
  } else {
    const std::vector<GroupRows> groups = GroupsOf(max_details);
    const FidelityProbe probe(original, *data, options);
    const PipelineOptions measured = PipeOptions(options, true);
    // loss[g][s]: noise ratio with group g alone at ratios[s - 1] (s = 0: unpruned).
    std::vector<std::vector<double>> loss(groups.size(), std::vector<double>(ratios.size() + 1, 0.0));
    {
      ProgressBar bar("sensitivity", static_cast<int64_t>(groups.size() * ratios.size()), options.progress);
      for (size_t g = 0; g < groups.size(); ++g) {
        for (size_t s = 0; s < ratios.size(); ++s) {
          json o = base;
          o["ratio"] = 0.0;
          o["group_ratios"] = json{{groups[g].key, ratios[s]}};
          loss[g][s + 1] = probe.Measure(RunStep(cleaned, step.pass, o, measured, nullptr)).noise_ratio;
          bar.Advance(1);
        }
      }
      bar.Finish();
    }
    std::vector<size_t> state(groups.size(), 0);
    const auto options_of = [&](const std::vector<size_t>& st) {
      json o = base;
      o["ratio"] = 0.0;
      for (size_t g = 0; g < groups.size(); ++g) {
        if (st[g] > 0) o["group_ratios"][groups[g].key] = ratios[st[g] - 1];
      }
      return o;
    };
    int64_t current = macs_cleaned;
    json steps = json::array();
    while (static_cast<double>(current) > budget) {
      // The move with the least loss per MAC saved, counted on the actual surgery; ties: first group, then
      // the smaller ratio.
      double best = std::numeric_limits<double>::infinity();
      size_t best_g = groups.size(), best_s = 0;
      int64_t best_macs = current;
      for (size_t g = 0; g < groups.size(); ++g) {
        for (size_t s = state[g] + 1; s <= ratios.size(); ++s) {
          std::vector<size_t> st = state;
          st[g] = s;
          const int64_t m = macs_of(options_of(st));
          if (m >= current) continue;
          const double score = (loss[g][s] - loss[g][state[g]]) / static_cast<double>(current - m);
          if (score < best) {
            best = score;
            best_g = g;
            best_s = s;
            best_macs = m;
          }
        }
      }
      if (best_g == groups.size()) {
        // No single move saves MACs any more (rounding): every group at the largest ratio meets the
        // budget (checked above).
        std::fill(state.begin(), state.end(), ratios.size());
        current = macs_of(options_of(state));
        break;
      }
      state[best_g] = best_s;
      current = best_macs;
      steps.push_back({{"group", groups[best_g].key}, {"ratio", ratios[best_s - 1]}, {"macs", current}});
    }
    // The last step may overshoot the budget (a large step is cheap per MAC): give back the ratio whose
    // return lowers the loss most while the budget still holds, until none can.
    for (;;) {
      double best_gain = 0;
      size_t best_g = groups.size(), best_s = 0;
      int64_t best_macs = current;
      for (size_t g = 0; g < groups.size(); ++g) {
        for (size_t s = 0; s < state[g]; ++s) {
          std::vector<size_t> st = state;
          st[g] = s;
          const int64_t m = macs_of(options_of(st));
          const double gain = loss[g][state[g]] - loss[g][s];
          if (static_cast<double>(m) <= budget && gain > best_gain) {
            best_gain = gain;
            best_g = g;
            best_s = s;
            best_macs = m;
          }
        }
      }
      if (best_g == groups.size()) break;
      state[best_g] = best_s;
      current = best_macs;
      steps.push_back({{"group", groups[best_g].key},
                       {"ratio", best_s > 0 ? ratios[best_s - 1] : 0.0},
                       {"macs", current},
                       {"back", true}});
    }
    result = options_of(state);
    // The chosen model, once more with the run's own importance: its MACs are what the run will write.
    json final_details;
    const Model chosen = RunStep(cleaned, step.pass, result, measured, &final_details);
    const int64_t macs_after = CountMacs(chosen).total;
    if (static_cast<double>(macs_after) > budget) {
      ThrowInternal("--target-macs: the chosen ratios keep " + Thousands(macs_after) + " MACs, above the budget of " +
                    Fixed(budget, 0) + " they were chosen for");
    }
    const auto before_nodes = MacsByName(CountMacs(cleaned));
    const auto after_nodes = MacsByName(CountMacs(chosen));
    const auto final_groups = GroupsOf(final_details);
    json gs = json::array();
    for (size_t g = 0; g < groups.size(); ++g) {
      json losses = json::object();
      for (size_t s = 0; s < ratios.size(); ++s) losses[json(ratios[s]).dump()] = loss[g][s + 1];
      json nodes = json::array(), channel_rows = json::array();
      int64_t mb = 0, ma = 0;
      for (const auto& l : groups[g].layers) {
        const std::string n = l.value("node", std::string());
        nodes.push_back(n);
        if (before_nodes.count(n)) mb += before_nodes.at(n);
        if (after_nodes.count(n)) ma += after_nodes.at(n);
      }
      for (const auto& fg : final_groups) {
        if (fg.key != groups[g].key) continue;
        for (const auto& l : fg.layers) {
          channel_rows.push_back({{"node", l.value("node", std::string())},
                                  {"before", l.value("channels_before", int64_t{0})},
                                  {"after", l.value("channels_after", int64_t{0})}});
        }
      }
      gs.push_back({{"group", groups[g].key},
                    {"nodes", nodes},
                    {"ratio", state[g] > 0 ? ratios[state[g] - 1] : 0.0},
                    {"noise_ratio_alone", losses},
                    {"channels", channel_rows},
                    {"macs_before", mb},
                    {"macs_after", ma}});
    }
    d["method"] = "sensitivity";
    d["samples"] = probe.reference().samples;
    d["ratios_measured"] = ratios;
    d["groups"] = gs;
    d["steps"] = steps;
    d["macs_after"] = macs_after;
  }
  d["fraction_after"] =
      macs0 > 0 ? static_cast<double>(d["macs_after"].get<int64_t>()) / static_cast<double>(macs0) : 1.0;
  if (details != nullptr) *details = d;
  return result;
}

}  // namespace compress
