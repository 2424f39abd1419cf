#include "compress/report/sensitivity.h"

#include <algorithm>
#include <cstdint>
#include <iomanip>
#include <sstream>
#include <string>
#include <vector>

#include "compress/util/format.h"

namespace compress {

namespace {

std::string Fixed(double v, int digits) { return FormatFixed(v, digits); }
std::string Thousands(int64_t v) { return FormatThousands(v); }

using nlohmann::json;

}  // namespace

std::string FormatSensitivity(const json& doc) {
  std::ostringstream os;
  const bool channels = doc["pass"] == "prune_channels";
  os << "model       " << doc["model"].get<std::string>() << "  (" << Thousands(doc["macs"].get<int64_t>())
     << " MACs, " << Thousands(doc["params"].get<int64_t>()) << " parameters)\n";
  os << "data        " << doc["data"].get<std::string>() << " (" << doc["samples"].get<int64_t>() << " samples";
  if (doc["labelled"].get<bool>()) os << ", top-1 " << Fixed(doc["top1"].get<double>() * 100.0, 2) << "%";
  os << ")\n";
  const json& o = doc["options"];
  const bool low_rank = doc["pass"] == "low_rank";
  if (channels) {
    os << "pruning     prune_channels ratio " << o["ratio"].dump() << ", one channel group at a time\n";
  } else if (low_rank) {
    os << "low rank    low_rank ratio " << o["ratio"].dump() << ", method " << o["method"].get<std::string>()
       << ", one layer at a time\n";
  } else {
    os << "pruning     prune sparsity " << o["sparsity"].dump() << ", pattern " << o["pattern"].get<std::string>()
       << ", method " << o["method"].get<std::string>() << ", one layer at a time\n";
  }
  if (doc["entries"].empty()) {
    os << "nothing to prune\n";
    return os.str();
  }
  std::vector<std::string> names;
  size_t width = 8;
  for (const auto& e : doc["entries"]) {
    std::string s;
    for (const auto& n : e["nodes"]) s += (s.empty() ? "" : ", ") + n.get<std::string>();
    names.push_back(s);
    width = std::max(width, s.size());
  }
  width = std::min<size_t>(width, 48);
  const bool labelled = doc["labelled"].get<bool>();
  os << std::left << std::setw(4) << "#" << std::setw(static_cast<int>(width) + 2) << (channels ? "group" : "node")
     << std::right << std::setw(12) << "params" << std::setw(12) << "removed" << std::setw(13) << "MACs removed"
     << std::setw(11) << "agreement" << std::setw(10) << "cosine" << std::setw(9) << "SQNR dB";
  if (labelled) os << std::setw(10) << "top-1 Δ";
  os << "\n";
  size_t i = 0;
  for (const auto& e : doc["entries"]) {
    std::string name = names[i];
    if (name.size() > width) name = name.substr(0, width - 3) + "...";
    os << std::left << std::setw(4) << (i + 1) << std::setw(static_cast<int>(width) + 2) << name << std::right
       << std::setw(12) << Thousands(e["params"].get<int64_t>()) << std::setw(12)
       << Thousands(e["params_removed"].get<int64_t>()) << std::setw(13) << Thousands(e["macs_removed"].get<int64_t>())
       << std::setw(10) << Fixed(e["agreement"].get<double>() * 100.0, 2) << "%" << std::setw(10)
       << Fixed(e["cosine"].get<double>(), 5) << std::setw(9)
       << (e["sqnr_db"].is_null() ? std::string("inf") : Fixed(e["sqnr_db"].get<double>(), 1));
    if (labelled) {
      const double d = e["top1_change_pts"].get<double>();
      // "top-1 Δ" holds a two-byte character: pad the values to the header's display width.
      os << std::setw(8) << ((d >= 0 ? "+" : "") + Fixed(d, 2)) << " pt";
    }
    os << "\n";
    ++i;
  }
  return os.str();
}

}  // namespace compress
