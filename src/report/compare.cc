#include "compress/report/compare.h"

#include <algorithm>
#include <cstdint>
#include <iomanip>
#include <sstream>
#include <vector>

#include "compress/util/format.h"

namespace compress {

namespace {

std::string Fixed(double v, int digits) { return FormatFixed(v, digits); }
std::string Thousands(int64_t v) { return FormatThousands(v); }

using nlohmann::json;

std::string Int(const json& v) { return v.is_number() ? Thousands(v.get<int64_t>()) : "-"; }

std::string Pct(const json& v) { return v.is_number() ? Fixed(v.get<double>() * 100.0, 2) + "%" : "-"; }

std::string Signed(const json& v, int digits) {
  if (!v.is_number()) return "-";
  const double d = v.get<double>();
  return (d >= 0 ? "+" : "") + Fixed(d, digits);
}

// A table whose columns are as wide as their widest cell; the first column is left-aligned.
std::string Table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& r : rows) {
    if (width.size() < r.size()) width.resize(r.size(), 0);
    for (size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
  }
  std::ostringstream os;
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      const std::string pad(width[i] - r[i].size(), ' ');
      line += i == 0 ? r[i] + pad : "  " + pad + r[i];
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    os << line << "\n";
  }
  return os.str();
}

}  // namespace

std::string FormatCompareTable(const json& doc) {
  std::ostringstream os;
  const json& model = doc["model"];
  os << "model       " << model["path"].get<std::string>() << "  " << Int(model["bytes"]) << " bytes, "
     << Int(model["parameters"]) << " parameters, " << Int(model["macs"]) << " MACs";
  const json& base = doc["baseline"];
  if (base["top1"].is_number()) os << ", top-1 " << Pct(base["top1"]);
  os << "\n";
  const json& data = doc["data"];
  if (data["eval"].is_object()) {
    os << "evaluation  " << Int(data["eval"]["samples"]) << " samples of " << data["eval"]["dir"].get<std::string>()
       << "\n";
  }
  if (data["calib"].is_object()) {
    const json& c = data["calib"];
    os << "calibration " << Int(c["samples"]) << " samples of " << c["dir"].get<std::string>() << ": "
       << c["calibration_runs"].get<int64_t>() << " statistics run" << (c["calibration_runs"] == 1 ? "" : "s")
       << " shared by every recipe";
    if (c["channel_runs"].get<int64_t>() > 0 || c["batch_runs"].get<int64_t>() > 0) {
      os << ", " << c["channel_runs"].get<int64_t>() << " per-channel and " << c["batch_runs"].get<int64_t>()
         << " streamed runs";
    }
    os << "\n";
  }
  if (data["finetune"].is_object()) {
    const json& f = data["finetune"];
    os << "fine-tuning " << f["recipes_finetuned"].get<int64_t>() << " recipe"
       << (f["recipes_finetuned"] == 1 ? "" : "s") << " on " << f["dir"].get<std::string>() << ", the original's outputs computed "
       << f["teacher_runs"].get<int64_t>() << (f["teacher_runs"] == 1 ? " time" : " times") << "\n";
  }
  if (doc["gate"].is_object()) {
    const json& g = doc["gate"];
    os << "gate        " << (g["metric"] == "top1_drop_pts" ? "top-1 drop <= " + Fixed(g["threshold"].get<double>(), 2) + " pt"
                                                            : "agreement >= " + Fixed(g["threshold"].get<double>(), 4))
       << "\n";
  }
  if (doc["objective"].is_string()) os << "objective   " << doc["objective"].get<std::string>() << "\n";
  os << "\n";
  const bool labelled = base["top1"].is_number();
  std::vector<std::vector<std::string>> t;
  t.push_back({"  recipe", "bytes", "ratio", "zstd", "params", "MACs", labelled ? "top-1" : "agree", labelled ? "Δ pt" : "",
               "SQNR dB", "ms/sample", "gate"});
  std::vector<std::string> errors;
  for (const auto& r : doc["rows"]) {
    std::string mark = r.value("chosen", false) ? ">" : r.value("pareto_size", false) ? "*" : " ";
    const std::string name = mark + " " + r["recipe"].get<std::string>();
    if (r["status"] != "ok") {
      if (r["skipped_reason"].is_string()) {
        t.push_back({name, "skipped", "", "", "", "", "", "", "", "", ""});
        errors.push_back(r["recipe"].get<std::string>() + ": skipped: " + r["skipped_reason"].get<std::string>());
      } else {
        t.push_back({name, "error", "", "", "", "", "", "", "", "", ""});
        errors.push_back(r["recipe"].get<std::string>() + ": " + r["error"].get<std::string>());
      }
      continue;
    }
    const std::string gate = r["gate"].is_object() ? (r["gate"]["passed"].get<bool>() ? "pass" : "FAIL") : "-";
    t.push_back({name, Int(r["bytes"]),
                 r["size_ratio"].is_number() ? Fixed(r["size_ratio"].get<double>(), 3) : "-",
                 Int(r["zstd_bytes"]), Int(r["parameters"]), Int(r["macs"]),
                 labelled ? Pct(r["top1"]) : Pct(r["agreement"]), labelled ? Signed(r["top1_change_pts"], 2) : "",
                 r["sqnr_db_infinite"].get<bool>() ? "inf" : r["sqnr_db"].is_number() ? Fixed(r["sqnr_db"].get<double>(), 1) : "-",
                 r["ms_per_sample"].is_number() ? Fixed(r["ms_per_sample"].get<double>(), 3) : "-", gate});
  }
  os << Table(t);
  os << "\n* on the Pareto front of size against " << (labelled ? "top-1" : "agreement");
  if (doc["command"] == "auto") os << "; > chosen";
  os << "\n";
  for (const auto& e : errors) os << e << "\n";
  if (doc["command"] == "auto") {
    os << "chosen      " << (doc["chosen"].is_string() ? doc["chosen"].get<std::string>() : std::string("none")) << "\n";
    if (doc["stop_reason"].is_string()) os << "stopped     " << doc["stop_reason"].get<std::string>() << "\n";
    if (doc.contains("output") && doc["output"].is_string()) os << "output      " << doc["output"].get<std::string>() << "\n";
  }
  return os.str();
}

std::string FormatPresets(const json& list) {
  std::ostringstream os;
  for (const auto& p : list) {
    os << p["name"].get<std::string>() << "\n  " << p["description"].get<std::string>() << "\n";
    for (const auto& step : p["recipe"]["passes"]) {
      os << "  pass " << step["pass"].get<std::string>() << " " << step["options"].dump() << "\n";
    }
  }
  os << "\npruneNN, channelsNN, lowrankNN, target-macsNN, lowrank-paramsNN and lowrank-macsNN take any level NN "
        "from 1 to 99 (prune30, channels25, target-macs75); joined by '+', structures of different kinds (pruning, "
        "channels, low rank) come first and one precision (fp16, int8, int8-dynamic, int8-weights, int8-percentile, int8-entropy, int8-mse) last.\n";
  return os.str();
}

}  // namespace compress
