#include "compress/report/report.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "compress/exec/executor.h"
#include "compress/io/schema.h"
#include "compress/report/inspect.h"
#include "compress/report/zstd_size.h"
#include "compress/util/half.h"
#include "compress/util/error.h"
#include "compress/util/format.h"
#include "compress/util/fs.h"
#include "compress/version.h"

namespace compress {

namespace {

std::string Fixed(double v, int digits) { return FormatFixed(v, digits); }
std::string Thousands(int64_t v) { return FormatThousands(v); }

using nlohmann::json;

// A weight as the report lists it: an initializer or a Constant-node value, keyed by value name.
struct Weight {
  std::string name;
  DType dtype = DType::kUndefined;
  std::vector<int64_t> dims;
  int64_t elements = 0;
  int64_t bytes = 0;
};

void CollectWeights(const Graph& graph, std::vector<Weight>* out) {
  for (const auto& t : graph.initializers) {
    out->push_back({t.name(), t.dtype(), t.dims(), t.numel(), static_cast<int64_t>(t.nbytes())});
  }
  for (const auto& sp : graph.sparse_initializers) {
    out->push_back({sp.values.name(), sp.values.dtype(), sp.dims, sp.values.numel(),
                    static_cast<int64_t>(sp.values.nbytes() + sp.indices.nbytes())});
  }
  for (const auto& node : graph.nodes) {
    if (node.op_type == "Constant" && node.IsDefaultDomain() && !node.outputs.empty()) {
      for (const auto& a : node.attributes) {
        for (const auto& t : a.tensors) {
          out->push_back({node.outputs[0], t.dtype(), t.dims(), t.numel(), static_cast<int64_t>(t.nbytes())});
        }
        for (const auto& sp : a.sparse_tensors) {
          out->push_back({node.outputs[0], sp.values.dtype(), sp.dims, sp.values.numel(),
                          static_cast<int64_t>(sp.values.nbytes() + sp.indices.nbytes())});
        }
      }
    }
    for (const auto& a : node.attributes) {
      for (const auto& g : a.graphs) CollectWeights(g, out);
    }
  }
}

json ParameterSummary(const std::vector<Weight>& weights) {
  int64_t total = 0, bytes = 0;
  std::map<std::string, std::pair<int64_t, int64_t>> by_dtype;
  for (const auto& w : weights) {
    total += w.elements;
    bytes += w.bytes;
    auto& e = by_dtype[DTypeName(w.dtype)];
    e.first += w.elements;
    e.second += w.bytes;
  }
  json d = json::object();
  for (const auto& [name, e] : by_dtype) d[name] = {{"parameters", e.first}, {"bytes", e.second}};
  return {{"total", total}, {"bytes", bytes}, {"by_dtype", d}};
}

json TensorTable(const std::vector<Weight>& before, const std::vector<Weight>& after) {
  std::map<std::string, const Weight*> after_by_name;
  for (const auto& w : after) after_by_name.emplace(w.name, &w);
  std::map<std::string, bool> seen;
  json rows = json::array();
  auto side = [](const Weight* w, json* row, const char* suffix) {
    const std::string s = suffix;
    if (w == nullptr) {
      (*row)["shape_" + s] = nullptr;
      (*row)["dtype_" + s] = nullptr;
      (*row)["bytes_" + s] = nullptr;
    } else {
      (*row)["shape_" + s] = w->dims;
      (*row)["dtype_" + s] = DTypeName(w->dtype);
      (*row)["bytes_" + s] = w->bytes;
    }
  };
  for (const auto& w : before) {
    if (seen[w.name]) continue;
    seen[w.name] = true;
    json row = {{"name", w.name}};
    side(&w, &row, "before");
    const auto it = after_by_name.find(w.name);
    side(it == after_by_name.end() ? nullptr : it->second, &row, "after");
    rows.push_back(row);
  }
  for (const auto& w : after) {
    if (seen[w.name]) continue;
    seen[w.name] = true;
    json row = {{"name", w.name}};
    side(nullptr, &row, "before");
    side(&w, &row, "after");
    rows.push_back(row);
  }
  return rows;
}

std::string Pct(double fraction) { return Fixed(fraction * 100.0, 2) + "%"; }

// Our executor computes float16 models through float32, and INT8 models too when it found no quantized
// group to run in integers (a CPU without a SIMD integer GEMM, or a model without such groups), so their
// latency there says nothing about their speed in a runtime with integer or float16 kernels; null when
// nothing is simulated.
json SimulatedPrecision(const json& by_dtype, size_t integer_groups) {
  if (by_dtype.contains("int8") || by_dtype.contains("uint8")) {
    return integer_groups > 0 ? json(nullptr) : json("INT8 simulated in float");
  }
  if (by_dtype.contains("float16")) return "float16 computed in float32";
  return nullptr;
}

std::string LatencySuffix(const json& latency) {
  return latency["simulated"].is_null() ? std::string()
                                        : "; " + latency["simulated"].get<std::string>() + ", not deployment speed";
}

std::string DtypeList(const json& by_dtype) {
  std::string s;
  for (auto it = by_dtype.begin(); it != by_dtype.end(); ++it) {
    if (!s.empty()) s += ", ";
    s += Thousands(it.value()["parameters"].get<int64_t>()) + " " + it.key();
  }
  return s.empty() ? "none" : s;
}

// MACs of a node by name, over the nodes that count (the first of that name).
std::map<std::string, json> MacsByNode(const json& macs) {
  std::map<std::string, json> m;
  for (const auto& n : macs["nodes"]) {
    if (n["counted"].get<bool>()) m.emplace(n["node"].get<std::string>(), n["macs"]);
  }
  return m;
}

// One row per entry of every pass's details["layers"], with MACs before and after joined on the node name.
json PruningRows(const json& passes, const json& macs_before, const json& macs_after, const Model& after) {
  const auto before = MacsByNode(macs_before), after_macs = MacsByNode(macs_after);
  std::set<std::string> after_nodes;
  ForEachGraph(after.graph, [&](const Graph& g) {
    for (const auto& n : g.nodes) {
      if (!n.name.empty()) after_nodes.insert(n.name);
    }
  });
  json rows = json::array();
  for (const auto& p : passes) {
    const json& d = p["details"];
    if (p["pass"] == "low_rank") continue;  // LowRankRows
    if (!d.is_object() || !d.contains("layers") || !d["layers"].is_array()) continue;
    for (const auto& layer : d["layers"]) {
      if (!layer.is_object() || !layer.contains("node") || !layer["node"].is_string()) continue;
      json row = layer;
      const std::string node = layer["node"].get<std::string>();
      row["pass"] = p["pass"];
      const auto b = before.find(node), a = after_macs.find(node);
      row["macs_before"] = b == before.end() ? json(nullptr) : b->second;
      row["macs_after"] = a == after_macs.end() ? json(nullptr) : a->second;
      row["status"] = after_nodes.count(node) ? "kept" : "renamed or removed";
      rows.push_back(row);
    }
  }
  return rows;
}

// The low_rank passes' details.layers as they are (their MACs are the pass's own: the factorized layer is
// two nodes afterwards), each with the pass name.
json LowRankRows(const json& passes) {
  json rows = json::array();
  for (const auto& p : passes) {
    const json& d = p["details"];
    if (p["pass"] != "low_rank" || !d.is_object() || !d.contains("layers") || !d["layers"].is_array()) continue;
    for (const auto& layer : d["layers"]) {
      json row = layer;
      row["pass"] = p["pass"];
      rows.push_back(row);
    }
  }
  return rows;
}

// One entry per finetune pass run: its details.training, with the pass's position in the pipeline.
json TrainingRuns(const json& passes) {
  json runs = json::array();
  for (size_t i = 0; i < passes.size(); ++i) {
    const json& p = passes[i];
    if (p["pass"] != "finetune" || !p["details"].is_object() || !p["details"].contains("training")) continue;
    json t = p["details"]["training"];
    t["pass_index"] = i;
    runs.push_back(t);
  }
  return runs;
}

int64_t TotalFileBytes(const std::vector<std::string>& paths) {
  int64_t total = 0;
  for (const auto& p : paths) {
    std::error_code ec;
    const auto n = std::filesystem::file_size(p, ec);
    if (!ec) total += static_cast<int64_t>(n);
  }
  return total;
}

std::string MacsText(const json& v) { return v.is_null() ? std::string("unknown") : Thousands(v.get<int64_t>()); }

// "50.00% -> 75.00% (2:4)" or "64 -> 32 channels": what a pruning row changed.
std::string PruningChange(const json& row) {
  auto num = [](const json& v) { return v.is_number() ? v.get<double>() : 0.0; };
  if (row.contains("sparsity_after")) {
    std::string s = Pct(num(row.value("sparsity_before", json(0)))) + " → " + Pct(num(row["sparsity_after"])) + " zeros";
    if (row.contains("pattern") && row["pattern"].is_string()) s += " (" + row["pattern"].get<std::string>() + ")";
    return s;
  }
  if (row.contains("channels_after")) {
    return MacsText(row.value("channels_before", json(nullptr))) + " → " + MacsText(row["channels_after"]) + " channels";
  }
  return "—";
}

std::string Str(const json& row, const char* key) {
  return row.contains(key) && row[key].is_string() ? row[key].get<std::string>() : std::string("—");
}

std::string Ratio(double v) { return Fixed(v, 2) + "x"; }

// "com.microsoft::Gelu (2 nodes), foo::Bar (1 node)", or "" when every operator was checked.
std::string UncheckedList(const json& input) {
  std::string s;
  if (!input.contains("unchecked_operators")) return s;
  for (const auto& u : input["unchecked_operators"]) {
    const int64_t n = u["count"].get<int64_t>();
    s += (s.empty() ? "" : ", ") + u["domain"].get<std::string>() + "::" + u["op_type"].get<std::string>() + " (" +
         std::to_string(n) + (n == 1 ? " node)" : " nodes)");
  }
  return s;
}

}  // namespace

json BuildReport(const ReportInput& in) {
  std::vector<Weight> wb, wa;
  CollectWeights(in.before->graph, &wb);
  CollectWeights(in.after->graph, &wa);
  json r;
  r["schema"] = "compress.report/1";
  r["tool"] = {{"name", "compress"}, {"version", COMPRESS_VERSION}};
  r["recipe"] = in.recipe.ToJson();
  json unchecked = json::array();
  if (in.before != nullptr) {
    for (const auto& u : UncheckedOperators(*in.before)) {
      unchecked.push_back({{"domain", u.domain}, {"op_type", u.op_type}, {"count", u.count}});
    }
  }
  r["input"] = {{"path", in.input_path}, {"bytes", in.input_bytes}, {"unchecked_operators", unchecked}};
  r["output"] = {{"path", in.output_path},
                 {"bytes", in.output_bytes},
                 {"checker", {{"ok", in.checker_ok}, {"message", in.checker_message}}}};
  r["size_ratio"] = in.output_bytes > 0 ? static_cast<double>(in.input_bytes) / static_cast<double>(in.output_bytes)
                                        : 0.0;
  r["parameters"] = {{"before", ParameterSummary(wb)}, {"after", ParameterSummary(wa)}};
  json passes = json::array();
  for (const auto& p : in.passes) {
    json counters = json::object();
    for (const auto& [k, v] : p.counters) counters[k] = v;
    passes.push_back({{"pass", p.pass},
                      {"options", p.options},
                      {"before", p.before.ToJson()},
                      {"after", p.after.ToJson()},
                      {"counters", counters},
                      {"notes", p.notes},
                      {"details", p.details.is_null() ? json::object() : p.details}});
  }
  r["passes"] = passes;
  r["tensors"] = TensorTable(wb, wa);
  {
    json mb = MacsJson(CountMacs(*in.before)), ma = MacsJson(CountMacs(*in.after));
    const int64_t tb = mb["total"].get<int64_t>(), ta = ma["total"].get<int64_t>();
    r["pruning"] = PruningRows(passes, mb, ma, *in.after);
    r["low_rank"] = LowRankRows(passes);
    r["training"] = TrainingRuns(passes);
    r["macs"] = {{"before", mb}, {"after", ma},
                 {"ratio", tb > 0 ? json(static_cast<double>(ta) / static_cast<double>(tb)) : json(nullptr)}};
  }
  if (in.input_files.empty() && in.output_files.empty()) {
    r["zstd"] = nullptr;
  } else if (const int64_t raw_in = TotalFileBytes(in.input_files), raw_out = TotalFileBytes(in.output_files);
             in.zstd_max_bytes >= 0 && std::max(raw_in, raw_out) > in.zstd_max_bytes) {
    r["zstd"] = {{"level", kZstdLevel},
                 {"skipped", "the " + std::string(raw_in > in.zstd_max_bytes ? "input" : "output") + "'s files total " +
                                 Thousands(std::max(raw_in, raw_out)) + " bytes, over the " +
                                 Thousands(in.zstd_max_bytes) + " measured by default (--zstd-size always)"}};
  } else {
    const int64_t zi = ZstdCompressedSize(in.input_files, kZstdLevel, in.threads);
    const int64_t zo = ZstdCompressedSize(in.output_files, kZstdLevel, in.threads);
    r["zstd"] = {{"level", kZstdLevel}, {"input_bytes", zi}, {"output_bytes", zo},
                 {"ratio", zo > 0 ? static_cast<double>(zi) / static_cast<double>(zo) : 0.0}};
  }
  if (in.comparison) {
    const ModelComparison& c = *in.comparison;
    json e = {{"data", c.data}, {"data_sha256", c.data_sha256}, {"samples", c.samples},
              {"skipped_samples", c.skipped}, {"labelled", c.labelled}, {"batch", c.batch}};
    if (c.labelled) {
      e["top1_before"] = c.top1_before;
      e["top1_after"] = c.top1_after;
      e["top1_change_pts"] = (c.top1_after - c.top1_before) * 100.0;
    } else {
      e["top1_before"] = nullptr;
      e["top1_after"] = nullptr;
      e["top1_change_pts"] = nullptr;
    }
    e["agreement"] = c.agreement;
    e["cosine_similarity"] = c.cosine;
    // JSON has no infinity: identical outputs are reported as null.
    e["sqnr_db"] = std::isfinite(c.sqnr_db) ? json(c.sqnr_db) : json(nullptr);
    e["max_abs_error"] = c.max_abs_error;
    r["evaluation"] = e;
  } else {
    r["evaluation"] = nullptr;
  }
  json layers = json::array();
  for (const auto& l : in.layers) {
    layers.push_back({{"name", l.name}, {"op_type", l.op_type},
                      {"sqnr_db", std::isfinite(l.sqnr_db) ? json(l.sqnr_db) : json(nullptr)}});
  }
  r["layers"] = layers;
  if (in.calibration) {
    const CalibrationInfo& c = *in.calibration;
    r["calibration"] = {{"data", c.data}, {"data_sha256", c.data_sha256}, {"samples", c.samples},
                        {"skipped_samples", c.skipped}, {"table", c.table}, {"reused_table", c.reused_table}};
  } else {
    r["calibration"] = nullptr;
  }
  if (in.gate) {
    const GateInfo& g = *in.gate;
    r["gate"] = {{"metric", g.check.metric}, {"value", g.check.value}, {"threshold", g.check.threshold},
                 {"margin", g.check.margin}, {"passed", g.check.passed}, {"data", g.data}, {"on_calibration_data", g.on_calibration_data},
                 {"auto_fallback", g.auto_fallback}, {"sensitivity_samples", g.sensitivity_samples},
                 {"kept_in_float", g.kept_in_float}};
  } else {
    r["gate"] = nullptr;
  }
  if (in.include_timings) {
    json t = {{"total_seconds", in.total_seconds}};
    json per_pass = json::array();
    for (const auto& p : in.passes) per_pass.push_back({{"pass", p.pass}, {"seconds", p.seconds}});
    t["passes"] = per_pass;
    if (in.comparison) {
      const ModelComparison& c = *in.comparison;
      t["latency"] = {{"batch", c.batch},
                      {"before_ms_per_sample", c.ms_per_sample_before},
                      {"after_ms_per_sample", c.ms_per_sample_after},
                      {"speedup", c.ms_per_sample_after > 0 ? c.ms_per_sample_before / c.ms_per_sample_after : 0.0},
                      {"simulated", SimulatedPrecision(r["parameters"]["after"]["by_dtype"], c.integer_groups_after)}};
    } else {
      t["latency"] = nullptr;
    }
    r["timings"] = t;
  } else {
    r["timings"] = nullptr;
  }
  return r;
}

std::string FormatReportSummary(const json& r) {
  std::ostringstream os;
  const auto& recipe = r["recipe"];
  os << "recipe      " << recipe["name"].get<std::string>() << " (";
  std::string steps;
  if (recipe["optimize"].get<bool>()) steps = "clean-up";
  for (const auto& p : recipe["passes"]) steps += (steps.empty() ? "" : " + ") + p["pass"].get<std::string>();
  os << (steps.empty() ? "no passes" : steps) << ")\n";
  const int64_t in_bytes = r["input"]["bytes"].get<int64_t>();
  const int64_t out_bytes = r["output"]["bytes"].get<int64_t>();
  os << "input       " << r["input"]["path"].get<std::string>() << "  " << Thousands(in_bytes) << " bytes\n";
  os << "output      " << r["output"]["path"].get<std::string>() << "  " << Thousands(out_bytes) << " bytes ("
     << Fixed(r["size_ratio"].get<double>(), 2) << "x size ratio; ONNX checker "
     << (r["output"]["checker"]["ok"].get<bool>() ? "passes" : "FAILS") << ")\n";
  if (r.contains("zstd") && !r["zstd"].is_null() && r["zstd"].contains("skipped")) {
    os << "zstd -" << r["zstd"]["level"].get<int>() << "    not measured: " << r["zstd"]["skipped"].get<std::string>()
       << "\n";
  } else if (r.contains("zstd") && !r["zstd"].is_null()) {
    const json& z = r["zstd"];
    os << "zstd -" << z["level"].get<int>() << "    " << Thousands(z["input_bytes"].get<int64_t>()) << " -> "
       << Thousands(z["output_bytes"].get<int64_t>()) << " bytes (" << Ratio(z["ratio"].get<double>())
       << " what a download ships)\n";
  }
  if (const std::string u = UncheckedList(r["input"]); !u.empty()) os << "unchecked   " << u << "\n";
  if (r.contains("macs")) {
    const json& m = r["macs"];
    os << "MACs        " << Thousands(m["before"]["total"].get<int64_t>()) << " -> "
       << Thousands(m["after"]["total"].get<int64_t>()) << " per sample";
    if (!m["ratio"].is_null()) os << " (" << Pct(m["ratio"].get<double>()) << " kept)";
    const int64_t ub = m["before"]["unknown_nodes"].get<int64_t>(), ua = m["after"]["unknown_nodes"].get<int64_t>();
    if (ub > 0 || ua > 0) os << "; " << ub << " -> " << ua << " nodes of unknown cost not included";
    os << "\n";
  }
  if (r.contains("pruning") && !r["pruning"].empty()) {
    os << "pruning     " << r["pruning"].size() << " layers (per-layer table in the report)\n";
  }
  if (r.contains("low_rank") && !r["low_rank"].empty()) {
    int64_t pb = 0, pa = 0;
    for (const auto& row : r["low_rank"]) {
      pb += row.value("params_before", int64_t{0});
      pa += row.value("params_after", int64_t{0});
    }
    os << "low rank    " << r["low_rank"].size() << " layers factorized, their parameters " << Thousands(pb) << " -> "
       << Thousands(pa) << " (" << Pct(pb > 0 ? static_cast<double>(pa) / static_cast<double>(pb) : 0.0)
       << "; per-layer table in the report)\n";
  }
  if (r.contains("training") && !r["training"].empty()) {
    int64_t epochs = 0;
    double seconds = 0;
    for (const auto& t : r["training"]) {
      epochs += static_cast<int64_t>(t["epochs"].size());
      seconds += t["seconds"].get<double>();
    }
    const json& last = r["training"].back();
    os << "training    " << r["training"].size() << (r["training"].size() == 1 ? " run, " : " runs, ") << epochs
       << (epochs == 1 ? " epoch" : " epochs") << " in " << Fixed(seconds, 1) << " s; final loss "
       << Fixed(last["epochs"].back()["loss"].get<double>(), 4) << ", peak memory "
       << Thousands(last["peak_rss_bytes"].get<int64_t>() >> 20) << " MiB\n";
  }
  os << "parameters  " << DtypeList(r["parameters"]["before"]["by_dtype"]) << "  ->  "
     << DtypeList(r["parameters"]["after"]["by_dtype"]) << "\n";
  os << "graph       " << r["passes"].size() << " passes: ";
  if (r["passes"].empty()) {
    os << "none\n";
  } else {
    const auto& first = r["passes"].front()["before"];
    const auto& last = r["passes"].back()["after"];
    os << first["nodes"].get<int64_t>() << " -> " << last["nodes"].get<int64_t>() << " nodes, "
       << Thousands(first["weight_bytes"].get<int64_t>()) << " -> " << Thousands(last["weight_bytes"].get<int64_t>())
       << " weight bytes\n";
  }
  for (const auto& p : r["passes"]) {
    // A compression pass that converted less than half of the weight bytes says so, with the main reason.
    const json& d = p["details"];
    if (d.is_object() && d.contains("coverage") && d["coverage"].contains("summary")) {
      os << "coverage    " << d["coverage"]["summary"].get<std::string>() << "\n";
    }
  }
  const json& e = r["evaluation"];
  if (!e.is_null()) {
    if (e["labelled"].get<bool>()) {
      const double change = e["top1_change_pts"].get<double>();
      os << "accuracy    top-1 " << Pct(e["top1_before"].get<double>()) << " -> " << Pct(e["top1_after"].get<double>())
         << " (" << (change >= 0 ? "+" : "") << Fixed(change, 2) << " pt) on " << e["samples"].get<int64_t>()
         << " samples of " << e["data"].get<std::string>() << "\n";
    }
    os << "fidelity    agreement " << Pct(e["agreement"].get<double>()) << ", cosine "
       << Fixed(e["cosine_similarity"].get<double>(), 6) << ", SQNR "
       << (e["sqnr_db"].is_null() ? std::string("inf") : Fixed(e["sqnr_db"].get<double>(), 1)) << " dB, max abs error "
       << e["max_abs_error"].get<double>() << "\n";
    if (e.value("skipped_samples", int64_t{0}) > 0) {
      os << "            " << e["samples"].get<int64_t>() << " samples evaluated, the last "
         << e["skipped_samples"].get<int64_t>() << " skipped: too few for the model's fixed batch of "
         << e["batch"].get<int64_t>() << "\n";
    }
    const json& t = r["timings"];
    if (!t.is_null() && !t["latency"].is_null()) {
      os << "latency     " << Fixed(t["latency"]["before_ms_per_sample"].get<double>(), 3) << " -> "
         << Fixed(t["latency"]["after_ms_per_sample"].get<double>(), 3) << " ms/sample (our executor, batch "
         << t["latency"]["batch"].get<int64_t>() << LatencySuffix(t["latency"]) << ")\n";
    }
  }
  if (!r["calibration"].is_null()) {
    const json& c = r["calibration"];
    os << "calibration " << (c["reused_table"].get<bool>() ? "reused table " + c["table"].get<std::string>()
                                                           : std::to_string(c["samples"].get<int64_t>()) + " samples of " +
                                                                 c["data"].get<std::string>())
       << "\n";
  }
  if (!r["layers"].empty()) {
    // The three layers the compression hurt most: where to look first.
    std::vector<std::pair<double, std::string>> worst;
    for (const auto& l : r["layers"]) {
      if (!l["sqnr_db"].is_null()) worst.emplace_back(l["sqnr_db"].get<double>(), l["name"].get<std::string>());
    }
    std::sort(worst.begin(), worst.end());
    if (!worst.empty()) {
      os << "worst layers";
      for (size_t i = 0; i < worst.size() && i < 3; ++i) {
        os << (i ? ", " : " ") << worst[i].second << " " << Fixed(worst[i].first, 1) << " dB";
      }
      os << "\n";
    }
  }
  if (!r["gate"].is_null()) {
    const json& g = r["gate"];
    const bool drop = g["metric"] == "top1_drop_pts";
    os << "gate        " << (g["passed"].get<bool>() ? "passed" : "FAILED") << ": "
       << (drop ? "top-1 drop " + Fixed(g["value"].get<double>(), 2) + " pt, allowed " + Fixed(g["threshold"].get<double>(), 2)
                : "agreement " + Fixed(g["value"].get<double>(), 4) + ", required " + Fixed(g["threshold"].get<double>(), 4))
       << (g["on_calibration_data"].get<bool>() ? " (on the calibration data)" : "");
    if (!g["kept_in_float"].empty()) {
      os << "; kept in float:";
      for (const auto& k : g["kept_in_float"]) os << " " << k["node"].get<std::string>();
    }
    os << "\n";
  }
  return os.str();
}

std::string FormatReportMarkdown(const json& r) {
  std::ostringstream os;
  os << "# compress report\n\n";
  os << "compress " << r["tool"]["version"].get<std::string>() << ", recipe `" << r["recipe"]["name"].get<std::string>()
     << "`\n\n";
  os << "| | file | bytes |\n|---|---|---:|\n";
  os << "| input | `" << r["input"]["path"].get<std::string>() << "` | " << Thousands(r["input"]["bytes"].get<int64_t>())
     << " |\n";
  os << "| output | `" << r["output"]["path"].get<std::string>() << "` | "
     << Thousands(r["output"]["bytes"].get<int64_t>()) << " |\n\n";
  os << "Size ratio **" << Fixed(r["size_ratio"].get<double>(), 2) << "x**. ONNX checker: "
     << (r["output"]["checker"]["ok"].get<bool>() ? "passes" : "fails: " + r["output"]["checker"]["message"].get<std::string>())
     << ".\n\n";
  if (r.contains("zstd") && !r["zstd"].is_null() && r["zstd"].contains("skipped")) {
    os << "Size compressed with zstd -" << r["zstd"]["level"].get<int>()
       << " not measured: " << r["zstd"]["skipped"].get<std::string>() << ".\n\n";
  } else if (r.contains("zstd") && !r["zstd"].is_null()) {
    const json& z = r["zstd"];
    os << "Compressed with zstd -" << z["level"].get<int>() << " (model and external data, what a download ships): "
       << Thousands(z["input_bytes"].get<int64_t>()) << " → " << Thousands(z["output_bytes"].get<int64_t>())
       << " bytes, **" << Ratio(z["ratio"].get<double>()) << "**.\n\n";
  }
  if (const std::string u = UncheckedList(r["input"]); !u.empty()) {
    os << "Not checked against any operator schema (domains ONNX does not define): " << u << ".\n\n";
  }

  os << "## Parameters\n\n| dtype | parameters before | bytes before | parameters after | bytes after |\n"
        "|---|---:|---:|---:|---:|\n";
  std::map<std::string, bool> dtypes;
  for (const char* side : {"before", "after"}) {
    for (auto it = r["parameters"][side]["by_dtype"].begin(); it != r["parameters"][side]["by_dtype"].end(); ++it) {
      dtypes[it.key()] = true;
    }
  }
  for (const auto& [dt, unused] : dtypes) {
    (void)unused;
    os << "| " << dt;
    for (const char* side : {"before", "after"}) {
      const json& d = r["parameters"][side]["by_dtype"];
      if (d.contains(dt)) {
        os << " | " << Thousands(d[dt]["parameters"].get<int64_t>()) << " | " << Thousands(d[dt]["bytes"].get<int64_t>());
      } else {
        os << " | 0 | 0";
      }
    }
    os << " |\n";
  }
  os << "| **total** | " << Thousands(r["parameters"]["before"]["total"].get<int64_t>()) << " | "
     << Thousands(r["parameters"]["before"]["bytes"].get<int64_t>()) << " | "
     << Thousands(r["parameters"]["after"]["total"].get<int64_t>()) << " | "
     << Thousands(r["parameters"]["after"]["bytes"].get<int64_t>()) << " |\n\n";

  if (r.contains("macs")) {
    const json& m = r["macs"];
    os << "## MACs\n\nMultiply-accumulates per sample (convolutions, matrix products, recurrent cells; element-wise "
          "ops count 0).\n\n| | before | after |\n|---|---:|---:|\n";
    os << "| MACs | " << Thousands(m["before"]["total"].get<int64_t>()) << " | "
       << Thousands(m["after"]["total"].get<int64_t>()) << " |\n";
    os << "| nodes of unknown cost (not included) | " << m["before"]["unknown_nodes"].get<int64_t>() << " | "
       << m["after"]["unknown_nodes"].get<int64_t>() << " |\n";
    os << "| parameters | " << Thousands(r["parameters"]["before"]["total"].get<int64_t>()) << " | "
       << Thousands(r["parameters"]["after"]["total"].get<int64_t>()) << " |\n\n";
  }
  if (r.contains("pruning") && !r["pruning"].empty()) {
    os << "## Pruning\n\n| pass | node | op | weight | method | change | parameters | MACs before | MACs after |\n"
          "|---|---|---|---|---|---|---:|---:|---:|\n";
    for (const auto& row : r["pruning"]) {
      const bool removed = row["status"] != "kept";
      os << "| " << row["pass"].get<std::string>() << " | `" << row["node"].get<std::string>() << "`"
         << (removed ? " (renamed or removed)" : "") << " | " << Str(row, "op") << " | "
         << (row.contains("weight") && row["weight"].is_string() ? "`" + row["weight"].get<std::string>() + "`" : "—")
         << " | " << Str(row, "method") << " | " << PruningChange(row) << " | "
         << (row.contains("params") && row["params"].is_number_integer() ? Thousands(row["params"].get<int64_t>()) : "—")
         << " | " << MacsText(row["macs_before"]) << " | " << (removed ? "—" : MacsText(row["macs_after"])) << " |\n";
    }
    os << "\n";
  }

  if (r.contains("low_rank") && !r["low_rank"].empty()) {
    os << "## Low-rank factorization\n\nLayer SQNR: the factorized layer's output against the original's on the "
          "calibration data (weight SQNR without data).\n\n"
          "| node | op | weight | scheme | method | rank | parameters | MACs | layer SQNR |\n"
          "|---|---|---|---|---|---:|---:|---:|---:|\n";
    auto db = [](const json& v) { return v.is_number() ? Fixed(v.get<double>(), 1) + " dB" : std::string("—"); };
    for (const auto& row : r["low_rank"]) {
      std::string shape;
      for (const auto& d : row["shape"]) shape += (shape.empty() ? "" : "x") + std::to_string(d.get<int64_t>());
      const bool has_sqnr = row.contains("sqnr_db") && row["sqnr_db"].is_number();
      os << "| `" << row["node"].get<std::string>() << "` | " << Str(row, "op") << " | `"
         << row["weight"].get<std::string>() << "` " << shape << " | " << Str(row, "scheme") << " | "
         << Str(row, "method") << " | " << row["rank"].get<int64_t>() << " of " << row["max_rank"].get<int64_t>()
         << " | " << Thousands(row["params_before"].get<int64_t>()) << " → "
         << Thousands(row["params_after"].get<int64_t>()) << " | " << MacsText(row["macs_before"]) << " → "
         << MacsText(row["macs_after"]) << " | "
         << (has_sqnr ? db(row["sqnr_db"]) : db(row.value("weight_sqnr_db", json(nullptr))) + " (weight)") << " |\n";
    }
    os << "\n";
  }

  if (r.contains("training") && !r["training"].empty()) {
    os << "## Fine-tuning\n\n"
          "| run | data | samples | batch | epoch | loss | samples/s | top-1 on eval |\n"
          "|---:|---|---:|---:|---:|---:|---:|---:|\n";
    int run = 0;
    for (const auto& t : r["training"]) {
      ++run;
      for (const auto& e : t["epochs"]) {
        os << "| " << run << " | `" << t.value("data", std::string()) << "` | "
           << Thousands(t["samples_per_epoch"].get<int64_t>()) << " | " << t["batch"].get<int64_t>() << " | "
           << e["epoch"].get<int64_t>() << " | " << Fixed(e["loss"].get<double>(), 4) << " | "
           << Fixed(e["samples_per_second"].get<double>(), 0) << " | "
           << (e.contains("eval_top1") ? Fixed(100 * e["eval_top1"].get<double>(), 2) + " %" : std::string("—")) << " |\n";
      }
    }
    os << "\n";
  }

  if (!r["evaluation"].is_null()) {
    const json& e = r["evaluation"];
    os << "## Accuracy and fidelity\n\nOn " << e["samples"].get<int64_t>() << " samples of `"
       << e["data"].get<std::string>() << "` (sha256 `" << e["data_sha256"].get<std::string>() << "`)";
    if (e.value("skipped_samples", int64_t{0}) > 0) {
      os << "; the last " << e["skipped_samples"].get<int64_t>() << " samples were skipped: too few for the model's "
         << "fixed batch of " << e["batch"].get<int64_t>();
    }
    os << ".\n\n";
    os << "| measure | value |\n|---|---:|\n";
    if (e["labelled"].get<bool>()) {
      os << "| top-1 before | " << Pct(e["top1_before"].get<double>()) << " |\n";
      os << "| top-1 after | " << Pct(e["top1_after"].get<double>()) << " |\n";
      os << "| change | " << Fixed(e["top1_change_pts"].get<double>(), 2) << " pt |\n";
    }
    os << "| top-1 agreement | " << Pct(e["agreement"].get<double>()) << " |\n";
    os << "| cosine similarity | " << Fixed(e["cosine_similarity"].get<double>(), 6) << " |\n";
    os << "| SQNR | " << (e["sqnr_db"].is_null() ? std::string("inf") : Fixed(e["sqnr_db"].get<double>(), 1))
       << " dB |\n";
    os << "| max abs error | " << e["max_abs_error"].get<double>() << " |\n\n";
  }

  if (!r["gate"].is_null()) {
    const json& g = r["gate"];
    os << "## Accuracy gate\n\n" << (g["passed"].get<bool>() ? "**Passed**" : "**Failed**") << ": "
       << g["metric"].get<std::string>() << " = " << g["value"].get<double>() << ", threshold "
       << g["threshold"].get<double>() << ", margin " << g["margin"].get<double>() << ", measured on `"
       << g["data"].get<std::string>() << "`" << (g["on_calibration_data"].get<bool>() ? " (the calibration data)" : "")
       << ".\n\n";
    if (!g["kept_in_float"].empty()) {
      os << "Kept in float by the fallback (most sensitive first; sensitivity on " << g["sensitivity_samples"].get<int64_t>()
         << " samples):\n\n| node | op | output SQNR with only it in float (dB) | gate metric after |\n|---|---|---:|---:|\n";
      for (const auto& k : g["kept_in_float"]) {
        os << "| `" << k["node"].get<std::string>() << "` | " << k["op_type"].get<std::string>() << " | "
           << Fixed(k["sqnr_db_alone_in_float"].get<double>(), 1) << " | " << k["metric_after"].get<double>() << " |\n";
      }
      os << "\n";
    }
  }
  if (!r["calibration"].is_null()) {
    const json& c = r["calibration"];
    os << "## Calibration\n\n" << c["samples"].get<int64_t>() << " samples of `" << c["data"].get<std::string>()
       << "` (sha256 `" << c["data_sha256"].get<std::string>() << "`)";
    if (c.value("skipped_samples", int64_t{0}) > 0) {
      os << "; the last " << c["skipped_samples"].get<int64_t>() << " samples were skipped: too few for the model's "
         << "fixed batch";
    }
    if (!c["table"].get<std::string>().empty()) {
      os << (c["reused_table"].get<bool>() ? ", statistics reused from `" : ", statistics saved to `")
         << c["table"].get<std::string>() << "`";
    }
    os << ".\n\n";
  }
  if (!r["layers"].empty()) {
    os << "## Layers\n\nSQNR of each layer's output against the original model.\n\n| value | op | SQNR (dB) |\n|---|---|---:|\n";
    for (const auto& l : r["layers"]) {
      os << "| `" << l["name"].get<std::string>() << "` | " << l["op_type"].get<std::string>() << " | "
         << (l["sqnr_db"].is_null() ? std::string("inf") : Fixed(l["sqnr_db"].get<double>(), 1)) << " |\n";
    }
    os << "\n";
  }
  os << "## Passes\n\n| pass | nodes | weights | weight bytes | changes |\n|---|---:|---:|---:|---|\n";
  for (const auto& p : r["passes"]) {
    std::string changes;
    for (auto it = p["counters"].begin(); it != p["counters"].end(); ++it) {
      changes += (changes.empty() ? "" : ", ") + it.key() + " " + std::to_string(it.value().get<int64_t>());
    }
    os << "| " << p["pass"].get<std::string>() << " | " << p["before"]["nodes"].get<int64_t>() << " → "
       << p["after"]["nodes"].get<int64_t>() << " | " << p["before"]["initializers"].get<int64_t>() << " → "
       << p["after"]["initializers"].get<int64_t>() << " | " << Thousands(p["before"]["weight_bytes"].get<int64_t>())
       << " → " << Thousands(p["after"]["weight_bytes"].get<int64_t>()) << " | " << (changes.empty() ? "—" : changes)
       << " |\n";
  }
  bool any_note = false;
  for (const auto& p : r["passes"]) {
    for (const auto& n : p["notes"]) {
      if (!any_note) os << "\nNotes:\n\n";
      any_note = true;
      os << "- " << p["pass"].get<std::string>() << ": " << n.get<std::string>() << "\n";
    }
  }

  os << "\n## Tensors\n\n| name | shape | dtype | bytes before | bytes after |\n|---|---|---|---:|---:|\n";
  auto shape = [](const json& s) {
    if (s.is_null()) return std::string("—");
    std::string out = "[";
    for (size_t i = 0; i < s.size(); ++i) out += (i ? "," : "") + std::to_string(s[i].get<int64_t>());
    return out + "]";
  };
  for (const auto& t : r["tensors"]) {
    const std::string sb = shape(t["shape_before"]), sa = shape(t["shape_after"]);
    const std::string db = t["dtype_before"].is_null() ? "—" : t["dtype_before"].get<std::string>();
    const std::string da = t["dtype_after"].is_null() ? "—" : t["dtype_after"].get<std::string>();
    os << "| `" << t["name"].get<std::string>() << "` | " << (sb == sa ? sb : sb + " → " + sa) << " | "
       << (db == da ? db : db + " → " + da) << " | "
       << (t["bytes_before"].is_null() ? "—" : Thousands(t["bytes_before"].get<int64_t>())) << " | "
       << (t["bytes_after"].is_null() ? "—" : Thousands(t["bytes_after"].get<int64_t>())) << " |\n";
  }

  if (!r["timings"].is_null()) {
    const json& t = r["timings"];
    os << "\n## Timings\n\nTotal " << Fixed(t["total_seconds"].get<double>(), 3) << " s.";
    if (!t["latency"].is_null()) {
      os << " Latency in our executor at batch " << t["latency"]["batch"].get<int64_t>() << ": "
         << Fixed(t["latency"]["before_ms_per_sample"].get<double>(), 3) << " → "
         << Fixed(t["latency"]["after_ms_per_sample"].get<double>(), 3) << " ms/sample"
         << (t["latency"]["simulated"].is_null() ? std::string()
                                                 : " (" + t["latency"]["simulated"].get<std::string>() +
                                                       ", not deployment speed)")
         << ".";
    }
    os << "\n";
  }
  os << "\n## Recipe\n\n```json\n" << r["recipe"].dump(2) << "\n```\n";
  return os.str();
}

}  // namespace compress
