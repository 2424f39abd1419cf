#include "compress/report/inspect.h"

#include <algorithm>
#include <fstream>
#include <map>
#include <sstream>

#include "compress/io/onnx_io.h"

namespace compress {

namespace {

struct TensorEntry {
  std::string name;
  std::string kind;
  const Tensor* tensor;
};

// The model's parameters: initializers, sparse initializer values and Constant-node tensors, in all graphs.
// (Tensor attributes of other ops, such as ConstantOfShape's fill value, are not parameters.)
std::vector<TensorEntry> CollectTensors(const Model& model) {
  std::vector<TensorEntry> out;
  ForEachGraph(model.graph, [&](const Graph& g) {
    for (const auto& t : g.initializers) out.push_back({t.name(), "initializer", &t});
    for (const auto& s : g.sparse_initializers) out.push_back({s.values.name(), "sparse initializer", &s.values});
    for (const auto& n : g.nodes) {
      if (n.op_type != "Constant" || !n.IsDefaultDomain()) continue;
      const std::string owner = n.name.empty() ? (n.outputs.empty() ? n.op_type : n.outputs[0]) : n.name;
      for (const auto& a : n.attributes) {
        for (const auto& t : a.tensors) out.push_back({owner, "constant", &t});
        for (const auto& s : a.sparse_tensors) out.push_back({owner, "constant", &s.values});
      }
    }
  });
  return out;
}

nlohmann::json ValueJson(const ValueInfo& v) {
  nlohmann::json j;
  j["name"] = v.name;
  const auto& t = v.type;
  if (t.kind == TypeInfo::Kind::kTensor || t.kind == TypeInfo::Kind::kSparseTensor) {
    j["dtype"] = DTypeName(t.elem_type);
    if (t.has_shape) {
      nlohmann::json shape = nlohmann::json::array();
      for (const auto& d : t.shape) {
        if (d.value) shape.push_back(*d.value);
        else if (!d.param.empty()) shape.push_back(d.param);
        else shape.push_back(nullptr);
      }
      j["shape"] = shape;
    } else {
      j["shape"] = nullptr;
    }
  } else {
    j["type"] = t.ToString();
  }
  return j;
}

std::string ShapeText(const nlohmann::json& shape) {
  if (shape.is_null()) return "[?]";
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ",";
    if (shape[i].is_number()) s += std::to_string(shape[i].get<int64_t>());
    else if (shape[i].is_string()) s += shape[i].get<std::string>();
    else s += "?";
  }
  return s + "]";
}

std::string HumanBytes(uint64_t b) {
  std::ostringstream os;
  os.precision(1);
  os << std::fixed;
  if (b >= (1u << 20)) os << static_cast<double>(b) / (1u << 20) << " MiB";
  else if (b >= 1024) os << static_cast<double>(b) / 1024 << " KiB";
  else os << b << " B";
  return os.str();
}

}  // namespace

nlohmann::json InspectModel(const Model& model, const std::string& path) {
  nlohmann::json doc;
  doc["schema"] = "compress.inspect/1";
  doc["file"] = path;
  doc["file_bytes"] = nullptr;
  {
    std::ifstream in(path, std::ios::binary | std::ios::ate);
    if (in) doc["file_bytes"] = static_cast<int64_t>(in.tellg());
  }
  doc["ir_version"] = model.ir_version;
  doc["producer"] = {{"name", model.producer_name}, {"version", model.producer_version}};
  doc["domain"] = model.domain;
  doc["model_version"] = model.model_version;
  doc["opsets"] = nlohmann::json::array();
  for (const auto& o : model.opset_imports) doc["opsets"].push_back({{"domain", o.domain}, {"version", o.version}});
  doc["metadata"] = nlohmann::json::object();
  for (const auto& kv : model.metadata_props) doc["metadata"][kv.first] = kv.second;
  doc["inputs"] = nlohmann::json::array();
  for (const auto* v : model.graph.RealInputs()) doc["inputs"].push_back(ValueJson(*v));
  doc["outputs"] = nlohmann::json::array();
  for (const auto& v : model.graph.outputs) doc["outputs"].push_back(ValueJson(v));

  std::map<std::string, int64_t> ops;
  int64_t nodes = 0;
  ForEachGraph(model.graph, [&](const Graph& g) {
    for (const auto& n : g.nodes) {
      ++nodes;
      ++ops[n.IsDefaultDomain() ? n.op_type : n.domain + "::" + n.op_type];
    }
  });
  doc["nodes"] = nodes;
  doc["op_types"] = ops;

  const auto tensors = CollectTensors(model);
  std::map<std::string, int64_t> bytes_by_dtype, elems_by_dtype;
  for (const auto& e : tensors) {
    const std::string dt = DTypeName(e.tensor->dtype());
    bytes_by_dtype[dt] += static_cast<int64_t>(e.tensor->nbytes());
    elems_by_dtype[dt] += e.tensor->numel();
  }
  doc["parameters"] = CountParameters(model);
  doc["bytes_by_dtype"] = bytes_by_dtype;
  doc["elements_by_dtype"] = elems_by_dtype;

  std::vector<const TensorEntry*> order;
  for (const auto& e : tensors) order.push_back(&e);
  // Ties broken by name so the listing is deterministic.
  std::stable_sort(order.begin(), order.end(), [](const TensorEntry* a, const TensorEntry* b) {
    if (a->tensor->nbytes() != b->tensor->nbytes()) return a->tensor->nbytes() > b->tensor->nbytes();
    return a->name < b->name;
  });
  doc["largest_tensors"] = nlohmann::json::array();
  for (size_t i = 0; i < order.size() && i < 10; ++i) {
    const auto& e = *order[i];
    doc["largest_tensors"].push_back({{"name", e.name},
                                      {"kind", e.kind},
                                      {"dtype", DTypeName(e.tensor->dtype())},
                                      {"shape", e.tensor->dims()},
                                      {"bytes", e.tensor->nbytes()}});
  }
  const CheckResult check = CheckModelFile(path);
  doc["checker"] = {{"ok", check.ok}, {"message", check.message}};
  doc["macs"] = MacsJson(CountMacs(model), 10);
  return doc;
}

nlohmann::json MacsJson(const MacsCount& macs, size_t top) {
  auto node_json = [](const NodeMacs& n) {
    nlohmann::json j = {{"node", n.node}, {"op", n.op_type}, {"graph", n.graph},
                        {"macs", n.macs ? nlohmann::json(*n.macs) : nlohmann::json(nullptr)}, {"counted", n.counted}};
    if (!n.macs) j["why"] = n.why;
    return j;
  };
  nlohmann::json j = {{"total", macs.total}, {"unknown_nodes", macs.unknown_nodes}, {"batch_divisor", macs.batch_divisor}};
  nlohmann::json nodes = nlohmann::json::array();
  if (top == 0) {
    for (const auto& n : macs.nodes) nodes.push_back(node_json(n));
    j["nodes"] = nodes;
    return j;
  }
  std::vector<const NodeMacs*> order;
  nlohmann::json unknown = nlohmann::json::array();
  for (const auto& n : macs.nodes) {
    if (!n.counted) continue;
    if (n.macs) order.push_back(&n);
    else unknown.push_back(node_json(n));
  }
  std::stable_sort(order.begin(), order.end(), [](const NodeMacs* a, const NodeMacs* b) { return *a->macs > *b->macs; });
  for (size_t i = 0; i < order.size() && i < top; ++i) nodes.push_back(node_json(*order[i]));
  j["top_nodes"] = nodes;
  j["unknown"] = unknown;
  return j;
}

std::string FormatInspection(const nlohmann::json& doc) {
  std::ostringstream os;
  os << doc["file"].get<std::string>();
  if (doc["file_bytes"].is_number()) os << "  (" << HumanBytes(doc["file_bytes"].get<uint64_t>()) << ")";
  os << "\n";
  os << "  IR version   " << doc["ir_version"].get<int64_t>() << "\n";
  os << "  opsets       ";
  bool first = true;
  for (const auto& o : doc["opsets"]) {
    const std::string d = o["domain"].get<std::string>();
    os << (first ? "" : ", ") << (d.empty() ? "ai.onnx" : d) << " " << o["version"].get<int64_t>();
    first = false;
  }
  os << "\n";
  const std::string producer = doc["producer"]["name"].get<std::string>() + " " +
                               doc["producer"]["version"].get<std::string>();
  os << "  producer     " << producer << "\n";
  for (const char* key : {"inputs", "outputs"}) {
    os << "  " << key << (std::string(key) == "inputs" ? "       " : "      ");
    first = true;
    for (const auto& v : doc[key]) {
      if (!first) os << "\n               ";
      first = false;
      os << v["name"].get<std::string>() << ": ";
      if (v.contains("dtype")) os << v["dtype"].get<std::string>() << ShapeText(v["shape"]);
      else os << v["type"].get<std::string>();
    }
    os << "\n";
  }
  os << "  nodes        " << doc["nodes"].get<int64_t>() << "\n";
  os << "  op types     ";
  std::vector<std::pair<std::string, int64_t>> ops;
  for (const auto& [k, v] : doc["op_types"].items()) ops.emplace_back(k, v.get<int64_t>());
  std::stable_sort(ops.begin(), ops.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  for (size_t i = 0; i < ops.size(); ++i) os << (i ? ", " : "") << ops[i].first << " " << ops[i].second;
  os << "\n";
  os << "  parameters   " << doc["parameters"].get<int64_t>() << "\n";
  for (const auto& [k, v] : doc["bytes_by_dtype"].items()) {
    os << "    " << k << ": " << doc["elements_by_dtype"][k].get<int64_t>() << " elements, "
       << HumanBytes(v.get<uint64_t>()) << "\n";
  }
  os << "  largest tensors\n";
  for (const auto& t : doc["largest_tensors"]) {
    std::string shape = "[";
    for (size_t i = 0; i < t["shape"].size(); ++i) shape += (i ? "," : "") + std::to_string(t["shape"][i].get<int64_t>());
    shape += "]";
    os << "    " << t["name"].get<std::string>() << "  " << t["dtype"].get<std::string>() << shape << "  "
       << HumanBytes(t["bytes"].get<uint64_t>()) << "  (" << t["kind"].get<std::string>() << ")\n";
  }
  if (doc.contains("macs")) {
    const auto& m = doc["macs"];
    os << "  MACs         " << m["total"].get<int64_t>() << " per sample";
    if (m["unknown_nodes"].get<int64_t>() > 0) {
      os << " (" << m["unknown_nodes"].get<int64_t>() << " nodes of unknown cost not included)";
    }
    if (m["batch_divisor"].get<int64_t>() > 1) os << " (fixed batch of " << m["batch_divisor"].get<int64_t>() << " divided out)";
    os << "\n";
    const int64_t total = m["total"].get<int64_t>();
    if (!m["top_nodes"].empty()) os << "  top nodes by MACs\n";
    for (const auto& n : m["top_nodes"]) {
      const int64_t v = n["macs"].get<int64_t>();
      std::ostringstream pct;
      pct.precision(1);
      pct << std::fixed << (total > 0 ? 100.0 * static_cast<double>(v) / static_cast<double>(total) : 0.0);
      os << "    " << n["node"].get<std::string>() << "  " << n["op"].get<std::string>() << "  " << v << "  ("
         << pct.str() << "%)" << (n["graph"].get<std::string>().empty() ? "" : "  in " + n["graph"].get<std::string>())
         << "\n";
    }
    size_t shown = 0;
    for (const auto& n : m["unknown"]) {
      if (++shown > 10) {
        os << "    ... and " << m["unknown"].size() - 10 << " more of unknown cost\n";
        break;
      }
      os << "    " << n["node"].get<std::string>() << "  " << n["op"].get<std::string>() << "  unknown: "
         << n["why"].get<std::string>() << "\n";
    }
  }
  os << "  ONNX checker " << (doc["checker"]["ok"].get<bool>() ? "passes" : "fails: " + doc["checker"]["message"].get<std::string>())
     << "\n";
  return os.str();
}

}  // namespace compress
