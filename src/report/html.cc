#include "compress/report/html.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <map>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "compress/util/error.h"

namespace compress {

namespace {

using nlohmann::json;

// ---------------------------------------------------------------------------------------------------
// Text: valid UTF-8, HTML-escaped.

// Code points HTML5 reports as parse errors in text: controls other than tab, line feed and carriage
// return, C1 controls and noncharacters.
bool IsBadCodePoint(uint32_t cp) {
  return (cp < 0x20 && cp != '\t' && cp != '\n' && cp != '\r') || (cp >= 0x7f && cp <= 0x9f) ||
         (cp >= 0xfdd0 && cp <= 0xfdef) || (cp & 0xfffe) == 0xfffe;
}

// The code points of `s`; a byte that does not start a valid UTF-8 sequence, and a code point HTML does
// not allow in text, become U+FFFD.
std::vector<uint32_t> DecodeUtf8(const std::string& s) {
  std::vector<uint32_t> cps;
  cps.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    uint32_t cp = 0xfffd;
    size_t len = 1;
    if (c < 0x80) {
      cp = c;
    } else {
      size_t need = 0;
      uint32_t min = 0, v = 0;
      if (c >= 0xc2 && c <= 0xdf) {
        need = 1, v = c & 0x1fu, min = 0x80;
      } else if (c >= 0xe0 && c <= 0xef) {
        need = 2, v = c & 0x0fu, min = 0x800;
      } else if (c >= 0xf0 && c <= 0xf4) {
        need = 3, v = c & 0x07u, min = 0x10000;
      }
      size_t k = 1;
      for (; need > 0 && k <= need && i + k < s.size(); ++k) {
        const auto cc = static_cast<unsigned char>(s[i + k]);
        if ((cc & 0xc0) != 0x80) break;
        v = (v << 6) | (cc & 0x3fu);
      }
      if (need > 0 && k == need + 1 && v >= min && v <= 0x10ffff && !(v >= 0xd800 && v <= 0xdfff)) {
        cp = v;
        len = need + 1;
      }
    }
    cps.push_back(IsBadCodePoint(cp) ? 0xfffd : cp);
    i += len;
  }
  return cps;
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xc0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xe0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else {
    out->push_back(static_cast<char>(0xf0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  }
}

// `s` escaped for HTML text and double- or single-quoted attribute values. With `max_chars`, longer text
// is cut to max_chars - 1 code points and "…".
std::string Esc(const std::string& s, size_t max_chars = std::numeric_limits<size_t>::max()) {
  std::vector<uint32_t> cps = DecodeUtf8(s);
  if (cps.size() > max_chars && max_chars > 0) {
    cps.resize(max_chars - 1);
    cps.push_back(0x2026);
  }
  std::string out;
  out.reserve(s.size() + 16);
  for (const uint32_t cp : cps) {
    switch (cp) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        AppendUtf8(cp, &out);
    }
  }
  return out;
}

size_t CodePointCount(const std::string& s) { return DecodeUtf8(s).size(); }

// ---------------------------------------------------------------------------------------------------
// Numbers in the documented formats (compress/report/html.h).

std::string PrintFixed(double v, int digits, bool sign) {
  const int n =
      sign ? std::snprintf(nullptr, 0, "%+.*f", digits, v) : std::snprintf(nullptr, 0, "%.*f", digits, v);
  std::string s(static_cast<size_t>(std::max(n, 0)) + 1, '\0');
  if (sign) {
    std::snprintf(s.data(), s.size(), "%+.*f", digits, v);
  } else {
    std::snprintf(s.data(), s.size(), "%.*f", digits, v);
  }
  s.resize(static_cast<size_t>(std::max(n, 0)));
  return s;
}

std::string GroupThousands(const std::string& digits) {
  std::string s = digits;
  for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3) s.insert(static_cast<size_t>(i), ",");
  return s;
}

std::string Thousands(const json& v) {
  if (v.is_number_unsigned()) return GroupThousands(std::to_string(v.get<uint64_t>()));
  const int64_t x = v.get<int64_t>();
  if (x >= 0) return GroupThousands(std::to_string(x));
  // -x overflows for INT64_MIN: format the magnitude as unsigned.
  return "-" + GroupThousands(std::to_string(uint64_t{0} - static_cast<uint64_t>(x)));
}

std::string HumanBytes(uint64_t bytes) {
  if (bytes < 1024) return std::to_string(bytes) + " B";
  static const char* const kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = static_cast<double>(bytes) / 1024.0;
  size_t unit = 0;
  uint64_t limit = uint64_t{1} << 20;
  while (unit + 1 < sizeof(kUnits) / sizeof(kUnits[0]) && bytes >= limit) {
    v /= 1024.0;
    ++unit;
    if (limit > (std::numeric_limits<uint64_t>::max() >> 10)) break;
    limit <<= 10;
  }
  return PrintFixed(v, 1, false) + " " + kUnits[unit];
}

// The text of `v` in format `fmt` (and, for "bytes", the title attribute); false when `v` cannot be
// written in that format.
bool FormatValue(const json& v, const std::string& fmt, std::string* text, std::string* title) {
  title->clear();
  if (fmt == "int") {
    if (!v.is_number_integer()) return false;
    *text = Thousands(v);
    return true;
  }
  if (fmt == "bytes") {
    if (!v.is_number_integer() || (!v.is_number_unsigned() && v.get<int64_t>() < 0)) return false;
    *text = HumanBytes(v.get<uint64_t>());
    *title = Thousands(v) + " bytes";
    return true;
  }
  if (fmt == "json") {
    if (!v.is_number()) return false;
    *text = v.dump();
    return true;
  }
  if (fmt.size() < 2) return false;
  const char last = fmt.back();
  if (last < '0' || last > '6') return false;
  const int digits = last - '0';
  const std::string family = fmt.substr(0, fmt.size() - 1);
  if (family == "db" && v.is_null()) {
    *text = "∞ dB";
    return true;
  }
  if (!v.is_number()) return false;
  const double x = v.get<double>();
  if (!std::isfinite(x)) return false;
  if (family == "fixed") {
    *text = PrintFixed(x, digits, false);
  } else if (family == "pct") {
    *text = PrintFixed(x * 100.0, digits, false) + "%";
  } else if (family == "pts") {
    *text = PrintFixed(x, digits, true) + " pt";
  } else if (family == "ratio") {
    *text = PrintFixed(x, digits, false) + "x";
  } else if (family == "db") {
    *text = PrintFixed(x, digits, false) + " dB";
  } else {
    return false;
  }
  return true;
}

// Coordinates in SVG: one decimal.
std::string C(double v) { return PrintFixed(std::abs(v) < 0.05 ? 0.0 : v, 1, false); }

// ---------------------------------------------------------------------------------------------------
// JSON pointers (RFC 6901).

std::string Tok(const std::string& key) {
  std::string s;
  for (const char c : key) {
    if (c == '~') {
      s += "~0";
    } else if (c == '/') {
      s += "~1";
    } else {
      s += c;
    }
  }
  return "/" + s;
}

std::string Idx(size_t i) { return "/" + std::to_string(i); }

const json& NullJson() {
  static const json kNull;
  return kNull;
}

// The value at `ptr`, or nullptr when the pointer does not resolve.
const json* Resolve(const json& root, const std::string& ptr) {
  const json* cur = &root;
  size_t pos = 0;
  while (pos < ptr.size()) {
    if (ptr[pos] != '/') return nullptr;
    const size_t next = ptr.find('/', pos + 1);
    const std::string raw =
        ptr.substr(pos + 1, next == std::string::npos ? std::string::npos : next - pos - 1);
    std::string token;
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '~' && i + 1 < raw.size() && (raw[i + 1] == '0' || raw[i + 1] == '1')) {
        token += raw[i + 1] == '0' ? '~' : '/';
        ++i;
      } else {
        token += raw[i];
      }
    }
    if (cur->is_object()) {
      const auto it = cur->find(token);
      if (it == cur->end()) return nullptr;
      cur = &*it;
    } else if (cur->is_array()) {
      if (token.empty() || token.size() > 18 || (token.size() > 1 && token[0] == '0') ||
          token.find_first_not_of("0123456789") != std::string::npos) {
        return nullptr;
      }
      const size_t i = static_cast<size_t>(std::stoull(token));
      if (i >= cur->size()) return nullptr;
      cur = &(*cur)[i];
    } else {
      return nullptr;
    }
    if (next == std::string::npos) break;
    pos = next;
  }
  return cur;
}

// ---------------------------------------------------------------------------------------------------
// The document being formatted, with the helpers every section uses.

class Doc {
 public:
  explicit Doc(const json& root) : root_(root) {}

  const json& At(const std::string& ptr) const {
    const json* v = Resolve(root_, ptr);
    return v == nullptr ? NullJson() : *v;
  }
  bool Obj(const std::string& ptr) const { return At(ptr).is_object(); }
  bool Arr(const std::string& ptr) const { return At(ptr).is_array() && !At(ptr).empty(); }
  bool Str(const std::string& ptr) const { return At(ptr).is_string(); }
  bool NumAt(const std::string& ptr) const { return At(ptr).is_number(); }
  bool True(const std::string& ptr) const { return At(ptr).is_boolean() && At(ptr).get<bool>(); }
  bool False(const std::string& ptr) const { return At(ptr).is_boolean() && !At(ptr).get<bool>(); }
  std::string Text(const std::string& ptr, const std::string& fallback = "") const {
    return Str(ptr) ? At(ptr).get<std::string>() : fallback;
  }
  double D(const std::string& ptr, double fallback = 0) const {
    const json& v = At(ptr);
    return v.is_number() ? v.get<double>() : fallback;
  }

  // A number in an element of its own: `tag` with `attrs`, data-json and data-format; "—" (no element)
  // when the value cannot be written in `fmt`.
  std::string N(const std::string& ptr, const std::string& fmt, const std::string& tag = "span",
                const std::string& attrs = "") const {
    std::string text, title;
    if (!FormatValue(At(ptr), fmt, &text, &title)) {
      return tag == "span" ? "<span class=\"na\">—</span>" : "<" + tag + attrs + ">—</" + tag + ">";
    }
    std::string s = "<" + tag + attrs + " data-json=\"" + Esc(ptr) + "\" data-format=\"" + fmt + "\"";
    if (!title.empty()) s += " title=\"" + title + "\"";
    return s + ">" + text + "</" + tag + ">";
  }
  // A string from the JSON, escaped; `fallback` (already HTML) when it is not a string.
  std::string S(const std::string& ptr, const std::string& fallback = "—") const {
    return Str(ptr) ? Esc(At(ptr).get<std::string>()) : fallback;
  }
  std::string Code(const std::string& ptr) const {
    return Str(ptr) ? "<code>" + Esc(At(ptr).get<std::string>()) + "</code>" : "—";
  }
  // Any value: numbers traceable (format "json"), strings escaped, arrays and objects written out.
  std::string Any(const std::string& ptr) const {
    const json& v = At(ptr);
    if (v.is_null()) return "null";
    if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
    if (v.is_number()) return N(ptr, "json");
    if (v.is_string()) return "&quot;" + Esc(v.get<std::string>()) + "&quot;";
    std::string s = v.is_array() ? "[" : "{";
    size_t i = 0;
    for (auto it = v.begin(); it != v.end(); ++it, ++i) {
      if (i > 0) s += ", ";
      if (v.is_array()) {
        s += Any(ptr + Idx(i));
      } else {
        s += Esc(it.key()) + ": " + Any(ptr + Tok(it.key()));
      }
    }
    return s + (v.is_array() ? "]" : "}");
  }
  // "[10, 64]" with every dimension traceable; "—" when not an array.
  std::string Shape(const std::string& ptr) const {
    const json& v = At(ptr);
    if (!v.is_array()) return "—";
    std::string s = "[";
    for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + N(ptr + Idx(i), "int");
    return s + "]";
  }

 private:
  const json& root_;
};

std::string H(int level, const std::string& html) {
  const std::string l = std::to_string(std::min(level, 6));
  return "<h" + l + ">" + html + "</h" + l + ">\n";
}

std::string Badge(bool ok, const std::string& yes, const std::string& no) {
  return ok ? "<span class=\"badge ok\">" + yes + "</span>" : "<span class=\"badge bad\">" + no + "</span>";
}

// clang-format off
const char* const kStyle =
    "body{font:14px/1.45 system-ui,-apple-system,\"Segoe UI\",Roboto,\"Helvetica Neue\",Arial,sans-serif;"
    "margin:24px auto;max-width:1280px;padding:0 16px;color:#1b1b1b;background:#fff}\n"
    "h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;padding-bottom:4px;"
    "border-bottom:1px solid #ddd}h3{font-size:16px;margin:20px 0 6px}\n"
    "h4,h5,h6{font-size:14px;margin:14px 0 4px}p{margin:6px 0}.meta{color:#555}\n"
    "code{font:12px ui-monospace,\"DejaVu Sans Mono\",monospace;background:#f4f4f4;padding:0 3px;"
    "border-radius:3px;overflow-wrap:anywhere}\n"
    "table{border-collapse:collapse;margin:8px 0 12px}th,td{padding:3px 9px;border-bottom:1px solid #e6e6e6;"
    "text-align:left;vertical-align:top}th{background:#f6f6f6;font-weight:600}\n"
    "td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}\n"
    "table.rows{font-size:13px}table.rows td:first-child{white-space:nowrap}.sim{color:#ef6c00;margin-left:2px}td small{color:#555}"
    ".scroll{overflow-x:auto;max-width:100%}\n"
    "tr.chg td{background:#fff8e1}tr.error td{background:#ffebee}tr.chosen td{background:#e3f2fd}\n"
    "tr.skipped td{color:#616161}.err{color:#b71c1c}.why{color:#616161;font-style:italic}.na{color:#999}\n"
    ".cards{display:flex;flex-wrap:wrap;gap:12px;margin:14px 0}.card{border:1px solid #ddd;border-radius:8px;"
    "padding:8px 14px;min-width:150px;background:#fafafa}\n"
    ".card .k{color:#555;font-size:12px}.card .v{font-size:20px;font-weight:600}"
    ".card .s{color:#555;font-size:12px}\n"
    ".badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;"
    "color:#fff}\n.badge.ok{background:#2e7d32}.badge.bad{background:#c62828}.badge.info{background:#1565c0}"
    ".badge.warn{background:#ef6c00}.badge.skip{background:#757575}\n"
    "svg{display:block;margin:8px 0 4px;max-width:100%;height:auto}svg text{font-size:11px;fill:#333}\n"
    "svg .axis{stroke:#999;stroke-width:1}svg .grid{stroke:#eee;stroke-width:1}"
    "svg .title{font-size:12px;font-weight:600}\n"
    ".legend span{display:inline-block;margin-right:14px;font-size:12px}"
    ".sw{font-style:normal;margin-right:4px}\n"
    "details{margin:8px 0;border:1px solid #ddd;border-radius:6px;padding:4px 12px}"
    "summary{cursor:pointer;font-weight:600;padding:4px 0}ul,ol{margin:4px 0;padding-left:22px}\n"
    "footer{margin-top:32px;color:#777;font-size:12px}\n";
// clang-format on

std::string PageStart(const std::string& title) {
  return std::string(
             "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
             "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>") +
         title + "</title>\n<style>\n" + kStyle + "</style>\n</head>\n<body>\n";
}

std::string PageEnd(const std::string& footer) {
  return "<footer>" + footer + "</footer>\n</body>\n</html>\n";
}

// ---------------------------------------------------------------------------------------------------
// Charts: inline SVG, sized by viewBox.

// Ticks at 1, 2 or 5 times a power of ten covering [lo, hi]; *lo and *hi are widened to the outer ticks.
std::vector<double> NiceTicks(double* lo, double* hi, int target) {
  if (!(*hi > *lo)) {
    const double pad = std::abs(*lo) > 0 ? std::abs(*lo) * 0.05 : 1.0;
    *lo -= pad;
    *hi += pad;
  }
  const double raw = (*hi - *lo) / std::max(target, 1);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (const double m : {1.0, 2.0, 5.0, 10.0}) {
    step = m * mag;
    if (raw <= step) break;
  }
  const double first = std::floor(*lo / step + 1e-9) * step;
  const double last = std::ceil(*hi / step - 1e-9) * step;
  std::vector<double> ticks;
  for (double t = first; t <= last + step * 1e-6 && ticks.size() < 100; t += step) {
    ticks.push_back(std::abs(t) < step * 1e-9 ? 0.0 : t);
  }
  *lo = first;
  *hi = last;
  return ticks;
}

// NiceTicks for an axis of bytes: steps of 1, 2 or 5 times a power of ten of KiB, MiB or GiB.
std::vector<double> ByteTicks(double* lo, double* hi, int target) {
  double unit = 1;
  while (*hi / unit >= 1024 && unit < 1099511627776.0) unit *= 1024;
  double a = *lo / unit, b = *hi / unit;
  std::vector<double> ticks = NiceTicks(&a, &b, target);
  for (auto& t : ticks) t *= unit;
  *lo = a * unit;
  *hi = b * unit;
  return ticks;
}

// The opening tag of a chart of `width` x `height` pixels (whole numbers: HTML's width and height).
std::string SvgOpen(const std::string& kind, double width, double height, const std::string& label) {
  const std::string w = std::to_string(static_cast<int64_t>(std::ceil(width)));
  const std::string h = std::to_string(static_cast<int64_t>(std::ceil(height)));
  return "<svg class=\"chart " + kind + "\" viewBox=\"0 0 " + w + " " + h + "\" width=\"" + w +
         "\" height=\"" + h + "\" role=\"img\" aria-label=\"" + label + "\">\n";
}

struct Scale {
  double d0 = 0, d1 = 1, r0 = 0, r1 = 1;
  double operator()(double v) const { return d1 == d0 ? r0 : r0 + (v - d0) / (d1 - d0) * (r1 - r0); }
};

// Generic tick labels (they carry no data-json).
std::string TickLabel(double v, const std::string& kind, double step) {
  if (kind == "pct") {
    const int digits = step * 100 >= 1 - 1e-9 ? 0 : step * 100 >= 0.1 - 1e-9 ? 1 : 2;
    return PrintFixed(v * 100, digits, false) + "%";
  }
  if (kind == "bytes" || kind == "count") {
    const bool bytes = kind == "bytes";
    const double base = bytes ? 1024.0 : 1000.0;
    static const char* const kBin[] = {" B", " KiB", " MiB", " GiB", " TiB"};
    static const char* const kDec[] = {"", "K", "M", "G", "T"};
    size_t unit = 0;
    double x = v, s = step;
    while (unit + 1 < 5 && std::abs(x) >= base && std::abs(s) >= base / 10) {
      x /= base;
      s /= base;
      ++unit;
    }
    const int digits = s >= 1 - 1e-9 || x == 0 ? 0 : 1;
    return PrintFixed(x, digits, false) + (bytes ? kBin[unit] : kDec[unit]);
  }
  const int digits = step >= 1 - 1e-9 ? 0 : step >= 0.1 - 1e-9 ? 1 : step >= 0.01 - 1e-9 ? 2 : 4;
  return PrintFixed(v, digits, false);
}

const char* const kGood = "#2e7d32";
const char* const kFair = "#f9a825";
const char* const kPoor = "#c62828";
const char* const kInf = "#1565c0";

// Per-layer SQNR as horizontal bars: one per element of the array at `ptr` ({"name","op_type","sqnr_db"}).
std::string SqnrBars(const Doc& d, const std::string& ptr) {
  const json& layers = d.At(ptr);
  struct Row {
    size_t index;
    std::string name, op;
    bool inf;
    double v;
  };
  std::vector<Row> rows;
  size_t longest = 8;
  double lo = 0, hi = 1;
  for (size_t i = 0; i < layers.size(); ++i) {
    const std::string p = ptr + Idx(i);
    if (!d.Obj(p)) continue;
    const json& s = d.At(p + "/sqnr_db");
    if (!s.is_null() && !s.is_number()) continue;
    Row r{i, d.Text(p + "/name", "?"), d.Text(p + "/op_type"), s.is_null(),
          s.is_number() ? s.get<double>() : 0.0};
    if (!r.inf) {
      lo = std::min(lo, r.v);
      hi = std::max(hi, r.v);
    }
    longest = std::max(longest, std::min<size_t>(CodePointCount(r.name), 56));
    rows.push_back(r);
  }
  if (rows.empty()) return "";
  const std::vector<double> ticks = NiceTicks(&lo, &hi, 8);
  const double step = ticks.size() > 1 ? ticks[1] - ticks[0] : 1;
  const double label_w = std::min(420.0, 20.0 + 6.4 * static_cast<double>(longest));
  const double width = 980, row_h = 20, top = 26;
  const double height = top + row_h * static_cast<double>(rows.size()) + 12;
  const Scale x{lo, hi, label_w, width - 90};
  std::string s =
      SvgOpen("bars", width, height, "SQNR of each layer's output against the original model, in dB");
  for (const double t : ticks) {
    s += "<line class=\"grid\" x1=\"" + C(x(t)) + "\" y1=\"" + C(top - 4) + "\" x2=\"" + C(x(t)) +
         "\" y2=\"" + C(height - 10) + "\"/><text x=\"" + C(x(t)) + "\" y=\"" + C(top - 10) +
         "\" text-anchor=\"middle\">" + TickLabel(t, "db", step) + "</text>\n";
  }
  s += "<text x=\"" + C(x(hi) + 16) + "\" y=\"" + C(top - 10) + "\">dB</text>\n";
  const double zero = x(0);
  for (size_t k = 0; k < rows.size(); ++k) {
    const Row& r = rows[k];
    const std::string p = ptr + Idx(r.index);
    const double y = top + row_h * static_cast<double>(k);
    const double end = r.inf ? x(hi) : x(r.v);
    const char* colour = r.inf ? kInf : r.v >= 30 ? kGood : r.v >= 20 ? kFair : kPoor;
    s += "<g><title>" + Esc(r.name) + (r.op.empty() ? "" : " (" + Esc(r.op) + ")") + "</title>";
    s += "<text x=\"" + C(label_w - 8) + "\" y=\"" + C(y + 14) + "\" text-anchor=\"end\">" + Esc(r.name, 56) +
         "</text>";
    s += "<rect x=\"" + C(std::min(zero, end)) + "\" y=\"" + C(y + 3) + "\" width=\"" +
         C(std::max(1.0, std::abs(end - zero))) + "\" height=\"" + C(row_h - 6) + "\" fill=\"" + colour +
         "\"/>";
    s += d.N(p + "/sqnr_db", "db1", "text",
             " x=\"" + C(std::max(zero, end) + 5) + "\" y=\"" + C(y + 14) + "\"");
    s += "</g>\n";
  }
  s += "<line class=\"axis\" x1=\"" + C(zero) + "\" y1=\"" + C(top - 4) + "\" x2=\"" + C(zero) + "\" y2=\"" +
       C(height - 10) + "\"/>\n</svg>\n";
  s += std::string("<p class=\"legend\"><span><i class=\"sw\" style=\"color:") + kGood +
       "\">■</i>30 dB or more</span><span><i class=\"sw\" style=\"color:" + kFair +
       "\">■</i>20 to 30 dB</span><span><i class=\"sw\" style=\"color:" + kPoor +
       "\">■</i>below 20 dB</span><span><i class=\"sw\" style=\"color:" + kInf +
       "\">■</i>identical (∞)</span></p>\n";
  return s;
}

const char* const kSeries[] = {"#1565c0", "#e65100", "#6a1b9a", "#00838f", "#ad1457", "#558b2f"};

// Loss per epoch, one line per fine-tuning run (the array at `ptr`, each with "epochs": [{"epoch","loss"}]).
std::string LossChart(const Doc& d, const std::string& ptr) {
  const json& runs = d.At(ptr);
  struct Point {
    std::string p;
    double epoch, loss;
  };
  std::vector<std::vector<Point>> series;
  double emax = 1, lmin = std::numeric_limits<double>::max(), lmax = std::numeric_limits<double>::lowest();
  size_t total = 0;
  for (size_t r = 0; r < runs.size(); ++r) {
    std::vector<Point> pts;
    const std::string rp = ptr + Idx(r) + "/epochs";
    const json& epochs = d.At(rp);
    for (size_t e = 0; e < epochs.size(); ++e) {
      const std::string ep = rp + Idx(e);
      if (!d.NumAt(ep + "/loss") || !std::isfinite(d.D(ep + "/loss"))) continue;
      const double epoch = d.NumAt(ep + "/epoch") ? d.D(ep + "/epoch") : static_cast<double>(e + 1);
      pts.push_back({ep, epoch, d.D(ep + "/loss")});
      emax = std::max(emax, epoch);
      lmin = std::min(lmin, pts.back().loss);
      lmax = std::max(lmax, pts.back().loss);
    }
    total += pts.size();
    series.push_back(pts);
  }
  if (total == 0) return "";
  double lo = std::min(lmin, 0.0), hi = lmax * 1.08;
  if (lmin > 0 && lmax > 0 && lmin > lmax * 0.5) lo = lmin - (lmax - lmin) * 0.2;
  const std::vector<double> yt = NiceTicks(&lo, &hi, 5);
  const double ystep = yt.size() > 1 ? yt[1] - yt[0] : 1;
  double e0 = 0.5, e1 = emax + 0.5;
  std::vector<double> xt;
  const double estep = std::max(1.0, std::ceil(emax / 10));
  for (double e = 1; e <= emax + 1e-9; e += estep) xt.push_back(e);
  const double width = 720, height = 300, left = 64, right = 20, top = 20, bottom = 44;
  const Scale x{e0, e1, left, width - right}, y{lo, hi, height - bottom, top};
  std::string s = SvgOpen("line", width, height, "training loss per epoch");
  for (const double t : yt) {
    s += "<line class=\"grid\" x1=\"" + C(left) + "\" y1=\"" + C(y(t)) + "\" x2=\"" + C(width - right) +
         "\" y2=\"" + C(y(t)) + "\"/><text x=\"" + C(left - 6) + "\" y=\"" + C(y(t) + 4) +
         "\" text-anchor=\"end\">" + TickLabel(t, "plain", ystep) + "</text>\n";
  }
  for (const double t : xt) {
    s += "<text x=\"" + C(x(t)) + "\" y=\"" + C(height - bottom + 16) + "\" text-anchor=\"middle\">" +
         TickLabel(t, "plain", 1) + "</text>\n";
  }
  s += "<line class=\"axis\" x1=\"" + C(left) + "\" y1=\"" + C(height - bottom) + "\" x2=\"" +
       C(width - right) + "\" y2=\"" + C(height - bottom) + "\"/><line class=\"axis\" x1=\"" + C(left) +
       "\" y1=\"" + C(top) + "\" x2=\"" + C(left) + "\" y2=\"" + C(height - bottom) + "\"/>\n";
  s += "<text class=\"title\" x=\"" + C((left + width - right) / 2) + "\" y=\"" + C(height - 8) +
       "\" text-anchor=\"middle\">epoch</text><text class=\"title\" x=\"14\" y=\"" +
       C((top + height - bottom) / 2) + "\" text-anchor=\"middle\" transform=\"rotate(-90 14 " +
       C((top + height - bottom) / 2) + ")\">loss</text>\n";
  for (size_t r = 0; r < series.size(); ++r) {
    const char* colour = kSeries[r % (sizeof(kSeries) / sizeof(kSeries[0]))];
    const auto& pts = series[r];
    if (pts.size() > 1) {
      s += "<polyline fill=\"none\" stroke=\"" + std::string(colour) + "\" stroke-width=\"2.5\" points=\"";
      for (size_t i = 0; i < pts.size(); ++i)
        s += (i ? " " : "") + C(x(pts[i].epoch)) + "," + C(y(pts[i].loss));
      s += "\"/>\n";
    }
    for (const auto& pt : pts) {
      s += "<circle cx=\"" + C(x(pt.epoch)) + "\" cy=\"" + C(y(pt.loss)) + "\" r=\"4\" fill=\"" + colour +
           "\"/>";
      if (total <= 30) {
        s += d.N(pt.p + "/loss", "fixed4", "text",
                 " x=\"" + C(x(pt.epoch)) + "\" y=\"" + C(y(pt.loss) - 9) + "\" text-anchor=\"middle\"");
      }
      s += "\n";
    }
  }
  s += "</svg>\n";
  if (series.size() > 1) {
    s += "<p class=\"legend\">";
    for (size_t r = 0; r < series.size(); ++r) {
      s += "<span><i class=\"sw\" style=\"color:" + std::string(kSeries[r % 6]) +
           "\">■</i>fine-tuning pass " + d.N(ptr + Idx(r) + "/pass_index", "int") + "</span>";
    }
    s += "</p>\n";
  }
  return s;
}

// ---------------------------------------------------------------------------------------------------
// The report of one run (compress.report/1) under pointer `b` ("" for a document of its own).

std::string Card(const std::string& key, const std::string& value, const std::string& sub = "") {
  return "<div class=\"card\"><div class=\"k\">" + key + "</div><div class=\"v\">" + value + "</div>" +
         (sub.empty() ? "" : "<div class=\"s\">" + sub + "</div>") + "</div>\n";
}

std::string ReportCards(const Doc& d, const std::string& b) {
  std::string s = "<div class=\"cards\">\n";
  if (d.NumAt(b + "/output/bytes")) {
    s += Card("output size", d.N(b + "/output/bytes", "bytes"),
              d.NumAt(b + "/input/bytes") ? "input " + d.N(b + "/input/bytes", "bytes") : "");
  }
  if (d.NumAt(b + "/size_ratio")) s += Card("size ratio (input / output)", d.N(b + "/size_ratio", "ratio2"));
  if (d.NumAt(b + "/zstd/output_bytes")) {
    s += Card("zstd -" + d.N(b + "/zstd/level", "int") + " output", d.N(b + "/zstd/output_bytes", "bytes"),
              "ratio " + d.N(b + "/zstd/ratio", "ratio2"));
  }
  if (d.NumAt(b + "/macs/after/total")) {
    s += Card("MACs per sample", d.N(b + "/macs/after/total", "int"),
              d.NumAt(b + "/macs/ratio") ? d.N(b + "/macs/ratio", "pct1") + " of the original" : "");
  }
  if (d.NumAt(b + "/parameters/after/total")) {
    s += Card("parameters", d.N(b + "/parameters/after/total", "int"),
              d.NumAt(b + "/parameters/before/total") ? "before " + d.N(b + "/parameters/before/total", "int")
                                                      : "");
  }
  const std::string e = b + "/evaluation";
  if (d.Obj(e) && d.NumAt(e + "/top1_after")) {
    s += Card("top-1 accuracy", d.N(e + "/top1_after", "pct2"),
              d.N(e + "/top1_change_pts", "pts2") + " from " + d.N(e + "/top1_before", "pct2"));
  }
  if (d.Obj(e) && d.NumAt(e + "/agreement")) {
    s += Card("top-1 agreement", d.N(e + "/agreement", "pct2"), "SQNR " + d.N(e + "/sqnr_db", "db1"));
  }
  if (d.Obj(b + "/gate")) {
    s += Card("accuracy gate",
              d.True(b + "/gate/passed") ? Badge(true, "PASSED", "") : Badge(false, "", "FAILED"),
              d.S(b + "/gate/metric"));
  }
  return s + "</div>\n";
}

std::string SizeSection(const Doc& d, const std::string& b, int level) {
  std::string s = "<section>\n" + H(level, "Size and parameters");
  s += "<table><tr><th></th><th>file</th><th class=\"n\">size</th></tr>\n";
  for (const char* side : {"input", "output"}) {
    const std::string p = b + "/" + side;
    if (!d.Obj(p)) continue;
    s += std::string("<tr><td>") + side + "</td><td>" + d.Code(p + "/path") + "</td><td class=\"n\">" +
         d.N(p + "/bytes", "bytes") + "</td></tr>\n";
  }
  s += "</table>\n";
  if (d.Obj(b + "/output/checker")) {
    s += "<p>ONNX checker: " +
         (d.True(b + "/output/checker/ok")
              ? Badge(true, "passes", "")
              : Badge(false, "", "fails") + " " + d.S(b + "/output/checker/message", "")) +
         "</p>\n";
  }
  if (d.Arr(b + "/input/unchecked_operators")) {
    s += "<p>Not checked against any operator schema (domains ONNX does not define): ";
    const json& u = d.At(b + "/input/unchecked_operators");
    for (size_t i = 0; i < u.size(); ++i) {
      const std::string p = b + "/input/unchecked_operators" + Idx(i);
      s += (i ? ", " : "") + d.Code(p + "/domain") + " " + d.Code(p + "/op_type") + " (" +
           d.N(p + "/count", "int") + ")";
    }
    s += "</p>\n";
  }
  const std::string pb = b + "/parameters/before", pa = b + "/parameters/after";
  if (d.Obj(pb) || d.Obj(pa)) {
    std::map<std::string, bool> dtypes;
    for (const std::string& side : {pb, pa}) {
      const json& by = d.At(side + "/by_dtype");
      if (!by.is_object()) continue;
      for (auto it = by.begin(); it != by.end(); ++it) dtypes[it.key()] = true;
    }
    s += "<table><tr><th>dtype</th><th class=\"n\">parameters before</th><th class=\"n\">bytes before</th>"
         "<th class=\"n\">parameters after</th><th class=\"n\">bytes after</th></tr>\n";
    for (const auto& entry : dtypes) {
      const std::string& dt = entry.first;
      s += "<tr><td>" + Esc(dt) + "</td>";
      for (const std::string& side : {pb, pa}) {
        const std::string p = side + "/by_dtype" + Tok(dt);
        s += "<td class=\"n\">" + d.N(p + "/parameters", "int") + "</td><td class=\"n\">" +
             d.N(p + "/bytes", "bytes") + "</td>";
      }
      s += "</tr>\n";
    }
    s += "<tr><th>total</th><th class=\"n\">" + d.N(pb + "/total", "int") + "</th><th class=\"n\">" +
         d.N(pb + "/bytes", "bytes") + "</th><th class=\"n\">" + d.N(pa + "/total", "int") +
         "</th><th class=\"n\">" + d.N(pa + "/bytes", "bytes") + "</th></tr>\n</table>\n";
  }
  return s + "</section>\n";
}

std::string CostSection(const Doc& d, const std::string& b, int level) {
  const std::string m = b + "/macs", z = b + "/zstd";
  if (!d.Obj(m) && !d.Obj(z)) return "";
  std::string s = "<section>\n" + H(level, "MACs and compressed size");
  if (d.Obj(m)) {
    s += "<p>Multiply-accumulates per sample (convolutions, matrix products, recurrent cells; element-wise "
         "operators count nothing).</p>\n<table><tr><th></th><th class=\"n\">before</th><th "
         "class=\"n\">after</th>"
         "</tr>\n<tr><td>MACs</td><td class=\"n\">" +
         d.N(m + "/before/total", "int") + "</td><td class=\"n\">" + d.N(m + "/after/total", "int") +
         "</td></tr>\n<tr><td>nodes of unknown cost (not included)</td><td class=\"n\">" +
         d.N(m + "/before/unknown_nodes", "int") + "</td><td class=\"n\">" +
         d.N(m + "/after/unknown_nodes", "int") + "</td></tr>\n</table>\n";
    if (d.NumAt(m + "/ratio")) s += "<p>After / before: " + d.N(m + "/ratio", "pct1") + ".</p>\n";
  }
  if (d.Obj(z)) {
    if (d.Str(z + "/skipped")) {
      s += "<p>Size compressed with zstd -" + d.N(z + "/level", "int") +
           " not measured: " + d.S(z + "/skipped") + ".</p>\n";
    } else {
      s += "<p>Compressed with zstd -" + d.N(z + "/level", "int") +
           " (model and external data, what a download ships):</p>\n<table><tr><th></th><th "
           "class=\"n\">input</th>"
           "<th class=\"n\">output</th><th class=\"n\">ratio</th></tr>\n<tr><td>zstd</td><td class=\"n\">" +
           d.N(z + "/input_bytes", "bytes") + "</td><td class=\"n\">" + d.N(z + "/output_bytes", "bytes") +
           "</td><td class=\"n\">" + d.N(z + "/ratio", "ratio2") + "</td></tr>\n</table>\n";
    }
  }
  return s + "</section>\n";
}

std::string AccuracySection(const Doc& d, const std::string& b, int level) {
  const std::string e = b + "/evaluation";
  if (!d.Obj(e)) return "";
  std::string s = "<section>\n" + H(level, "Accuracy and fidelity");
  s += "<p>On " + d.N(e + "/samples", "int") + " samples of " + d.Code(e + "/data");
  if (d.Str(e + "/data_sha256")) s += " (sha256 " + d.Code(e + "/data_sha256") + ")";
  if (d.D(e + "/skipped_samples") > 0) {
    s += "; the last " + d.N(e + "/skipped_samples", "int") +
         " were skipped: too few for the model's fixed batch of " + d.N(e + "/batch", "int");
  }
  s += ".</p>\n<table><tr><th>measure</th><th class=\"n\">value</th></tr>\n";
  auto row = [&](const std::string& name, const std::string& key, const std::string& fmt) {
    s += "<tr><td>" + name + "</td><td class=\"n\">" + d.N(e + "/" + key, fmt) + "</td></tr>\n";
  };
  if (!d.False(e + "/labelled")) {
    row("top-1 before", "top1_before", "pct2");
    row("top-1 after", "top1_after", "pct2");
    row("change", "top1_change_pts", "pts2");
  }
  row("top-1 agreement", "agreement", "pct2");
  row("cosine similarity", "cosine_similarity", "fixed6");
  row("SQNR of the output", "sqnr_db", "db1");
  row("max abs error", "max_abs_error", "fixed4");
  s += "</table>\n";
  const std::string l = b + "/timings/latency";
  if (d.Obj(l)) {
    s += "<p>Latency in our executor at batch " + d.N(l + "/batch", "int") + ": " +
         d.N(l + "/before_ms_per_sample", "fixed3") + " → " + d.N(l + "/after_ms_per_sample", "fixed3") +
         " ms/sample (" + d.N(l + "/speedup", "ratio2") + " speed-up" +
         (d.Str(l + "/simulated") ? "; " + d.S(l + "/simulated") + ", not deployment speed" : std::string()) +
         ").</p>\n";
  }
  return s + "</section>\n";
}

std::string GateSection(const Doc& d, const std::string& b, int level) {
  const std::string g = b + "/gate";
  if (!d.Obj(g)) return "";
  const bool drop = d.Text(g + "/metric") == "top1_drop_pts";
  const std::string fmt = drop ? "fixed2" : "fixed4";
  std::string s = "<section>\n" + H(level, "Accuracy gate");
  s += "<p>" + (d.True(g + "/passed") ? Badge(true, "PASSED", "") : Badge(false, "", "FAILED")) + " " +
       (drop                                   ? "top-1 drop (points)"
        : d.Text(g + "/metric") == "agreement" ? "top-1 agreement"
                                               : d.S(g + "/metric")) +
       " " + d.N(g + "/value", fmt) + (drop ? ", allowed " : ", required ") + d.N(g + "/threshold", fmt) +
       ", margin " + d.N(g + "/margin", fmt) +
       (d.Str(g + "/data") ? ", measured on " + d.Code(g + "/data") : "") +
       (d.True(g + "/on_calibration_data") ? " (the calibration data)" : "") + ".</p>\n";
  if (d.True(g + "/auto_fallback")) s += "<p>Automatic fallback to float was allowed.</p>\n";
  if (d.Arr(g + "/kept_in_float")) {
    s += "<p>Kept in float by the fallback (most sensitive first; sensitivity on " +
         d.N(g + "/sensitivity_samples", "int") +
         " samples):</p>\n<table><tr><th>node</th><th>op</th><th class=\"n\">output SQNR with only it in "
         "float</th>"
         "<th class=\"n\">gate metric after</th></tr>\n";
    const json& k = d.At(g + "/kept_in_float");
    for (size_t i = 0; i < k.size(); ++i) {
      const std::string p = g + "/kept_in_float" + Idx(i);
      s += "<tr><td>" + d.Code(p + "/node") + "</td><td>" + d.S(p + "/op_type") + "</td><td class=\"n\">" +
           d.N(p + "/sqnr_db_alone_in_float", "db1") + "</td><td class=\"n\">" +
           d.N(p + "/metric_after", "fixed4") + "</td></tr>\n";
    }
    s += "</table>\n";
  }
  return s + "</section>\n";
}

std::string CalibrationSection(const Doc& d, const std::string& b, int level) {
  const std::string c = b + "/calibration";
  if (!d.Obj(c)) return "";
  std::string s = "<section>\n" + H(level, "Calibration") + "<p>";
  if (d.True(c + "/reused_table")) {
    s += "Statistics reused from " + d.Code(c + "/table");
  } else {
    s += d.N(c + "/samples", "int") + " samples of " + d.Code(c + "/data");
    if (d.Str(c + "/data_sha256") && !d.Text(c + "/data_sha256").empty()) {
      s += " (sha256 " + d.Code(c + "/data_sha256") + ")";
    }
    if (d.D(c + "/skipped_samples") > 0) {
      s += "; the last " + d.N(c + "/skipped_samples", "int") +
           " were skipped: too few for the model's fixed batch";
    }
    if (!d.Text(c + "/table").empty()) s += "; statistics saved to " + d.Code(c + "/table");
  }
  return s + ".</p>\n</section>\n";
}

std::string LayersSection(const Doc& d, const std::string& b, int level) {
  if (!d.Arr(b + "/layers")) return "";
  const std::string chart = SqnrBars(d, b + "/layers");
  if (chart.empty()) return "";
  return "<section>\n" + H(level, "Per-layer SQNR") +
         "<p>SQNR of each layer's output against the original model's (higher is closer).</p>\n" + chart +
         "</section>\n";
}

std::string PruningSection(const Doc& d, const std::string& b, int level) {
  const std::string pr = b + "/pruning";
  if (!d.Arr(pr)) return "";
  std::string s =
      "<section>\n" + H(level, "Pruning") +
      "<table><tr><th>pass</th><th>node</th><th>op</th><th>weight</th><th>method</th><th class=\"n\">"
      "before</th><th class=\"n\">after</th><th class=\"n\">parameters</th><th class=\"n\">MACs before</th>"
      "<th class=\"n\">MACs after</th><th>status</th></tr>\n";
  const json& rows = d.At(pr);
  for (size_t i = 0; i < rows.size(); ++i) {
    const std::string p = pr + Idx(i);
    if (!d.Obj(p)) continue;
    std::string before = "—", after = "—";
    if (d.At(p).contains("sparsity_after")) {
      before = d.N(p + "/sparsity_before", "pct1") + " zeros";
      after = d.N(p + "/sparsity_after", "pct1") + " zeros";
    } else if (d.At(p).contains("channels_after") || d.At(p).contains("heads_after")) {
      // Channels, and the attention heads they make up.
      before = after = "";
      for (const char* unit : {"channels", "heads"}) {
        if (!d.At(p).contains(std::string(unit) + "_after")) continue;
        const std::string sep = before.empty() ? "" : "<br>";
        before += sep + d.N(p + "/" + unit + "_before", "int") + " " + unit;
        after += sep + d.N(p + "/" + unit + "_after", "int") + " " + unit;
      }
    }
    std::string method = d.S(p + "/method");
    if (d.Str(p + "/pattern")) method += " (" + d.S(p + "/pattern") + ")";
    const bool kept = d.Text(p + "/status", "kept") == "kept";
    s += "<tr><td>" + d.S(p + "/pass") + "</td><td>" + d.Code(p + "/node") + "</td><td>" + d.S(p + "/op") +
         "</td><td>" + d.Code(p + "/weight") + "</td><td>" + method + "</td><td class=\"n\">" + before +
         "</td><td class=\"n\">" + after + "</td><td class=\"n\">" + d.N(p + "/params", "int") +
         "</td><td class=\"n\">" + d.N(p + "/macs_before", "int") + "</td><td class=\"n\">" +
         d.N(p + "/macs_after", "int") + "</td><td>" +
         (kept ? d.S(p + "/status") : "<span class=\"err\">" + d.S(p + "/status") + "</span>") +
         "</td></tr>\n";
  }
  return s + "</table>\n</section>\n";
}

std::string LowRankSection(const Doc& d, const std::string& b, int level) {
  const std::string lr = b + "/low_rank";
  if (!d.Arr(lr)) return "";
  std::string s =
      "<section>\n" + H(level, "Low-rank factorization") +
      "<p>Layer SQNR: the factorized layer's output against the original's on the calibration data "
      "(the weight's SQNR when there was no data).</p>\n"
      "<table><tr><th>node</th><th>op</th><th>weight</th><th>shape</th><th>scheme</th><th>method</th>"
      "<th class=\"n\">rank</th><th class=\"n\">parameters before</th><th class=\"n\">after</th>"
      "<th class=\"n\">MACs before</th><th class=\"n\">after</th><th class=\"n\">SQNR</th></tr>\n";
  const json& rows = d.At(lr);
  for (size_t i = 0; i < rows.size(); ++i) {
    const std::string p = lr + Idx(i);
    if (!d.Obj(p)) continue;
    const std::string sqnr = d.NumAt(p + "/sqnr_db") ? d.N(p + "/sqnr_db", "db1")
                             : d.NumAt(p + "/weight_sqnr_db")
                                 ? d.N(p + "/weight_sqnr_db", "db1") + " (weight)"
                                 : "—";
    s += "<tr><td>" + d.Code(p + "/node") + "</td><td>" + d.S(p + "/op") + "</td><td>" +
         d.Code(p + "/weight") + "</td><td class=\"n\">" + d.Shape(p + "/shape") + "</td><td>" +
         d.S(p + "/scheme") + "</td><td>" + d.S(p + "/method") + "</td><td class=\"n\">" +
         d.N(p + "/rank", "int") + " of " + d.N(p + "/max_rank", "int") + "</td><td class=\"n\">" +
         d.N(p + "/params_before", "int") + "</td><td class=\"n\">" + d.N(p + "/params_after", "int") +
         "</td><td class=\"n\">" + d.N(p + "/macs_before", "int") + "</td><td class=\"n\">" +
         d.N(p + "/macs_after", "int") + "</td><td class=\"n\">" + sqnr + "</td></tr>\n";
  }
  return s + "</table>\n</section>\n";
}

std::string TrainingSection(const Doc& d, const std::string& b, int level) {
  const std::string t = b + "/training";
  if (!d.Arr(t)) return "";
  std::string s = "<section>\n" + H(level, "Fine-tuning") + LossChart(d, t);
  const json& runs = d.At(t);
  for (size_t r = 0; r < runs.size(); ++r) {
    const std::string p = t + Idx(r);
    if (!d.Obj(p)) continue;
    s += "<p>Pass " + d.N(p + "/pass_index", "int") + ": " + d.S(p + "/optimizer", "") +
         " at learning rate " + d.N(p + "/lr", "json") + ", batch " + d.N(p + "/batch", "int") + ", " +
         d.N(p + "/samples_per_epoch", "int") + " samples of " + d.Code(p + "/data") + " per epoch, " +
         d.N(p + "/steps", "int") + " steps in " + d.N(p + "/seconds", "fixed1") + " s; peak memory " +
         d.N(p + "/peak_rss_bytes", "bytes");
    if (d.Str(p + "/distill_loss")) {
      s += "; distilled (" + d.S(p + "/distill_loss") + ") from the original's " +
           d.S(p + "/distilled_value", "output");
    }
    s += ".</p>\n<table><tr><th class=\"n\">epoch</th><th class=\"n\">loss</th><th class=\"n\">top-1 on "
         "eval</th>"
         "<th class=\"n\">samples/s</th><th class=\"n\">seconds</th></tr>\n";
    const json& epochs = d.At(p + "/epochs");
    for (size_t e = 0; e < epochs.size(); ++e) {
      const std::string ep = p + "/epochs" + Idx(e);
      s += "<tr><td class=\"n\">" + d.N(ep + "/epoch", "int") + "</td><td class=\"n\">" +
           d.N(ep + "/loss", "fixed4") + "</td><td class=\"n\">" + d.N(ep + "/eval_top1", "pct2") +
           "</td><td class=\"n\">" + d.N(ep + "/samples_per_second", "fixed0") + "</td><td class=\"n\">" +
           d.N(ep + "/seconds", "fixed2") + "</td></tr>\n";
    }
    s += "</table>\n";
  }
  return s + "</section>\n";
}

std::string PrecisionSection(const Doc& d, const std::string& b, int level) {
  const std::string t = b + "/tensors";
  if (!d.Arr(t)) return "";
  std::string s =
      "<section>\n" + H(level, "Weights: precision and shape") +
      "<p>Every weight of both models by name; rows whose dtype or shape changed are highlighted.</p>\n"
      "<table><tr><th>name</th><th>dtype before</th><th>dtype after</th><th class=\"n\">shape before</th>"
      "<th class=\"n\">shape after</th><th class=\"n\">bytes before</th><th class=\"n\">bytes after</th>"
      "</tr>\n";
  const json& rows = d.At(t);
  for (size_t i = 0; i < rows.size(); ++i) {
    const std::string p = t + Idx(i);
    if (!d.Obj(p)) continue;
    const bool changed = d.At(p + "/dtype_before") != d.At(p + "/dtype_after") ||
                         d.At(p + "/shape_before") != d.At(p + "/shape_after");
    s += std::string(changed ? "<tr class=\"chg\">" : "<tr>") + "<td>" + d.Code(p + "/name") + "</td><td>" +
         d.S(p + "/dtype_before") + "</td><td>" + d.S(p + "/dtype_after") + "</td><td class=\"n\">" +
         d.Shape(p + "/shape_before") + "</td><td class=\"n\">" + d.Shape(p + "/shape_after") +
         "</td><td class=\"n\">" + d.N(p + "/bytes_before", "int") + "</td><td class=\"n\">" +
         d.N(p + "/bytes_after", "int") + "</td></tr>\n";
  }
  return s + "</table>\n</section>\n";
}

std::string PassesSection(const Doc& d, const std::string& b, int level) {
  std::string s;
  const std::string r = b + "/recipe";
  if (d.Obj(r)) {
    s += "<section>\n" + H(level, "Recipe") + "<p>" + d.Code(r + "/name") +
         (d.True(r + "/optimize") ? ": the clean-up passes, then" : ":") + "</p>\n";
    if (d.Arr(r + "/passes")) {
      s += "<ol>\n";
      const json& passes = d.At(r + "/passes");
      for (size_t i = 0; i < passes.size(); ++i) {
        const std::string p = r + "/passes" + Idx(i);
        s += "<li><b>" + d.S(p + "/pass") + "</b>" +
             (d.Obj(p + "/options") && !d.At(p + "/options").empty() ? " " + d.Any(p + "/options") : "") +
             "</li>\n";
      }
      s += "</ol>\n";
    } else {
      s += "<p>No compression pass.</p>\n";
    }
    s += "</section>\n";
  }
  const std::string ps = b + "/passes";
  if (!d.Arr(ps)) return s;
  s += "<section>\n" + H(level, "Passes run") +
       "<table><tr><th>pass</th><th class=\"n\">nodes before</th><th class=\"n\">after</th><th class=\"n\">"
       "weights before</th><th class=\"n\">after</th><th class=\"n\">weight bytes before</th><th "
       "class=\"n\">after"
       "</th><th>changes</th><th class=\"n\">seconds</th></tr>\n";
  const json& passes = d.At(ps);
  std::string notes;
  for (size_t i = 0; i < passes.size(); ++i) {
    const std::string p = ps + Idx(i);
    if (!d.Obj(p)) continue;
    std::string changes;
    const json& counters = d.At(p + "/counters");
    if (counters.is_object()) {
      for (auto it = counters.begin(); it != counters.end(); ++it) {
        changes +=
            (changes.empty() ? "" : ", ") + Esc(it.key()) + " " + d.N(p + "/counters" + Tok(it.key()), "int");
      }
    }
    const std::string tp = b + "/timings/passes" + Idx(i);
    const bool timed = d.Text(tp + "/pass") == d.Text(p + "/pass") && d.NumAt(tp + "/seconds");
    s += "<tr><td>" + d.S(p + "/pass") + "</td><td class=\"n\">" + d.N(p + "/before/nodes", "int") +
         "</td><td class=\"n\">" + d.N(p + "/after/nodes", "int") + "</td><td class=\"n\">" +
         d.N(p + "/before/initializers", "int") + "</td><td class=\"n\">" +
         d.N(p + "/after/initializers", "int") + "</td><td class=\"n\">" +
         d.N(p + "/before/weight_bytes", "int") + "</td><td class=\"n\">" +
         d.N(p + "/after/weight_bytes", "int") + "</td><td>" + (changes.empty() ? "—" : changes) +
         "</td><td class=\"n\">" + (timed ? d.N(tp + "/seconds", "fixed3") : "—") + "</td></tr>\n";
    const json& n = d.At(p + "/notes");
    if (n.is_array()) {
      for (size_t k = 0; k < n.size(); ++k) {
        if (d.Str(p + "/notes" + Idx(k)))
          notes += "<li>" + d.S(p + "/pass") + ": " + d.S(p + "/notes" + Idx(k)) + "</li>\n";
      }
    }
  }
  s += "</table>\n";
  if (!notes.empty()) s += "<p>Notes:</p>\n<ul>\n" + notes + "</ul>\n";
  if (d.NumAt(b + "/timings/total_seconds")) {
    s += "<p>Total run time " + d.N(b + "/timings/total_seconds", "fixed2") + " s.</p>\n";
  }
  return s + "</section>\n";
}

std::string ReportBody(const Doc& d, const std::string& b, int level) {
  return ReportCards(d, b) + AccuracySection(d, b, level) + GateSection(d, b, level) +
         LayersSection(d, b, level) + SizeSection(d, b, level) + CostSection(d, b, level) +
         PruningSection(d, b, level) + LowRankSection(d, b, level) + TrainingSection(d, b, level) +
         CalibrationSection(d, b, level) + PrecisionSection(d, b, level) + PassesSection(d, b, level);
}

// ---------------------------------------------------------------------------------------------------
// The compare/auto document (compress.compare/1).

struct ScatterPoint {
  size_t row = 0;
  double x = 0, y = 0;
  bool front = false, chosen = false, fails = false;  // fails: the row's gate did not pass
  std::string name;
};

struct Gate {
  bool drawn = false;
  double y = 0;
  std::string label;  // HTML (tspans)
};

std::string Scatter(const std::vector<ScatterPoint>& pts, bool has_base, double bx, double by,
                    const Gate& gate, const std::string& xkind, const std::string& xtitle,
                    const std::string& ytitle, const std::string& aria) {
  const double width = 820, height = 420, left = 70, right = 150, top = 24, bottom = 50;
  double xmax = has_base ? bx : 0, ymin = has_base ? by : 1, ymax = has_base ? by : 0;
  for (const auto& p : pts) {
    xmax = std::max(xmax, p.x);
    ymin = std::min(ymin, p.y);
    ymax = std::max(ymax, p.y);
  }
  if (gate.drawn) {
    ymin = std::min(ymin, gate.y);
    ymax = std::max(ymax, gate.y);
  }
  if (ymin > ymax) std::swap(ymin, ymax);
  const double pad = std::max((ymax - ymin) * 0.08, 0.005);
  double y0 = std::max(0.0, ymin - pad), y1 = std::min(1.0, ymax + pad);
  if (y1 <= y0) y1 = y0 + 0.01;
  double x0 = 0, x1 = std::max(xmax * 1.08, 1.0);
  const std::vector<double> yt = NiceTicks(&y0, &y1, 6);
  const std::vector<double> xt = xkind == "bytes" ? ByteTicks(&x0, &x1, 6) : NiceTicks(&x0, &x1, 6);
  const Scale x{x0, x1, left, width - right}, y{y0, y1, height - bottom, top};
  std::string s = SvgOpen("scatter", width, height, aria);
  const double ys = yt.size() > 1 ? yt[1] - yt[0] : 0.01, xs = xt.size() > 1 ? xt[1] - xt[0] : 1;
  for (const double t : yt) {
    s += "<line class=\"grid\" x1=\"" + C(left) + "\" y1=\"" + C(y(t)) + "\" x2=\"" + C(width - right) +
         "\" y2=\"" + C(y(t)) + "\"/><text x=\"" + C(left - 6) + "\" y=\"" + C(y(t) + 4) +
         "\" text-anchor=\"end\">" + TickLabel(t, "pct", ys) + "</text>\n";
  }
  for (const double t : xt) {
    s += "<line class=\"grid\" x1=\"" + C(x(t)) + "\" y1=\"" + C(top) + "\" x2=\"" + C(x(t)) + "\" y2=\"" +
         C(height - bottom) + "\"/><text x=\"" + C(x(t)) + "\" y=\"" + C(height - bottom + 16) +
         "\" text-anchor=\"middle\">" + TickLabel(t, xkind, xs) + "</text>\n";
  }
  s += "<line class=\"axis\" x1=\"" + C(left) + "\" y1=\"" + C(height - bottom) + "\" x2=\"" +
       C(width - right) + "\" y2=\"" + C(height - bottom) + "\"/><line class=\"axis\" x1=\"" + C(left) +
       "\" y1=\"" + C(top) + "\" x2=\"" + C(left) + "\" y2=\"" + C(height - bottom) + "\"/>\n";
  s += "<text class=\"title\" x=\"" + C((left + width - right) / 2) + "\" y=\"" + C(height - 10) +
       "\" text-anchor=\"middle\">" + xtitle + "</text><text class=\"title\" x=\"16\" y=\"" +
       C((top + height - bottom) / 2) + "\" text-anchor=\"middle\" transform=\"rotate(-90 16 " +
       C((top + height - bottom) / 2) + ")\">" + ytitle + "</text>\n";
  if (gate.drawn) {
    s += "<g class=\"gate\"><line x1=\"" + C(left) + "\" y1=\"" + C(y(gate.y)) + "\" x2=\"" +
         C(width - right) + "\" y2=\"" + C(y(gate.y)) + "\" stroke=\"" + kPoor +
         "\" stroke-width=\"1.5\" stroke-dasharray=\"6 4\"/>" + "<text x=\"" + C(width - right + 6) +
         "\" y=\"" + C(y(gate.y) + 4) + "\" fill=\"" + kPoor + "\">" + gate.label + "</text></g>\n";
  }
  std::vector<ScatterPoint> front;
  for (const auto& p : pts) {
    if (p.front) front.push_back(p);
  }
  std::sort(front.begin(), front.end(), [](const ScatterPoint& a, const ScatterPoint& c) {
    return a.x != c.x ? a.x < c.x : a.y != c.y ? a.y < c.y : a.row < c.row;
  });
  if (front.size() > 1) {
    s += "<polyline class=\"front\" fill=\"none\" stroke=\"" + std::string(kInf) +
         "\" stroke-width=\"2\" points=\"";
    for (size_t i = 0; i < front.size(); ++i) s += (i ? " " : "") + C(x(front[i].x)) + "," + C(y(front[i].y));
    s += "\"/>\n";
  }
  // Points: dominated ones first, then the front, so that the points that matter are drawn on top. The
  // original's diamond goes under them, larger, so a recipe with the same coordinates (the same MACs and
  // accuracy) stays visible on it and the diamond's corners still show.
  const double dr = 9;
  if (has_base) {
    const double cx = x(bx), cy = y(by);
    s += "<g class=\"baseline\"><title>the original model</title><polygon points=\"" + C(cx) + "," +
         C(cy - dr) + " " + C(cx + dr) + "," + C(cy) + " " + C(cx) + "," + C(cy + dr) + " " + C(cx - dr) +
         "," + C(cy) + "\" fill=\"#212121\"/></g>\n";
  }
  std::vector<size_t> order(pts.size());
  for (size_t i = 0; i < pts.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t c) {
    return (pts[a].front || pts[a].chosen) < (pts[c].front || pts[c].chosen);
  });
  for (const size_t i : order) {
    const auto& p = pts[i];
    const double cx = x(p.x), cy = y(p.y);
    const std::string cls = std::string("point") + (p.front ? " front" : "") + (p.chosen ? " chosen" : "") +
                            (p.fails ? " fails" : "");
    s += "<g class=\"" + cls + "\" data-row=\"" + std::to_string(p.row) + "\"><title>" + Esc(p.name) +
         (p.front ? " (on the Pareto front)" : "") + (p.chosen ? " (chosen)" : "") +
         (p.fails ? " (fails the gate)" : "") + "</title>";
    if (p.chosen) {
      s += "<circle cx=\"" + C(cx) + "\" cy=\"" + C(cy) +
           "\" r=\"10\" fill=\"none\" stroke=\"#e65100\" "
           "stroke-width=\"3\"/>";
    }
    const std::string colour = p.front ? kInf : "#9e9e9e";
    // A point that fails the gate is hollow: on the front it must not look like a recommendation.
    s += "<circle cx=\"" + C(cx) + "\" cy=\"" + C(cy) + "\" r=\"" + (p.fails ? "4.5" : "5.5") + "\" fill=\"" +
         (p.fails ? "#fff" : colour) + "\"" +
         (p.fails ? " stroke=\"" + colour + "\" stroke-width=\"2.5\"" : std::string()) + "/></g>\n";
  }
  // Labels: only for the points that matter (the front, the chosen recipe, the original); the others have
  // their name as a hover title. Points at the same place share one label. A label that would overlap
  // another, a point or the gate's label is nudged up or down (greedily, in data order), with a thin
  // leader line back to its point.
  struct Label {
    double cx, cy;
    std::vector<std::string> names;  // escaped
    bool labelled = false, original = false;
    size_t chars = 0;
  };
  std::vector<Label> labels;
  auto group_of = [&](double cx, double cy) -> Label& {
    for (auto& l : labels) {
      if (std::abs(l.cx - cx) <= 1.5 && std::abs(l.cy - cy) <= 1.5) return l;
    }
    labels.push_back(Label{cx, cy, {}, false, false, 0});
    return labels.back();
  };
  if (has_base) {
    Label& l = group_of(x(bx), y(by));
    l.names.push_back("original");
    l.labelled = l.original = true;
    l.chars += 8;
  }
  for (const auto& p : pts) {
    Label& l = group_of(x(p.x), y(p.y));
    l.names.push_back(Esc(p.name, 32) + (p.chosen ? " (chosen)" : ""));
    l.labelled = l.labelled || p.front || p.chosen;
    l.chars +=
        std::min<size_t>(DecodeUtf8(p.name).size(), 32) + (p.chosen ? 9 : 0) + (l.names.size() > 1 ? 2 : 0);
  }
  struct Box {
    double x0, y0, x1, y1;
  };
  auto hit = [](const Box& a, const Box& b) {
    return a.x0 < b.x1 && b.x0 < a.x1 && a.y0 < b.y1 && b.y0 < a.y1;
  };
  std::vector<Box> placed, marks;
  if (gate.drawn) placed.push_back({width - right + 4, y(gate.y) - 10, width, y(gate.y) + 4});
  for (const auto& l : labels) marks.push_back({l.cx - 7, l.cy - 7, l.cx + 7, l.cy + 7});
  std::string text;
  for (const auto& l : labels) {
    if (!l.labelled) continue;
    const double w = 6.4 * static_cast<double>(l.chars), h = 13;
    bool found = false;
    double best_x = 0, best_y = 0;
    bool best_left = false;
    for (int pass = 0; pass < 2 && !found; ++pass) {
      for (int k = 0; k < 60 && !found; ++k) {
        const double dy = (k % 2 ? -1 : 1) * 7.0 * ((k + 1) / 2);  // 0, -7, +7, -14, +14, ...
        for (const bool to_left : {l.original, !l.original}) {
          const double ty = l.cy - 6 + (to_left ? -4 : 0) + dy, tx = to_left ? l.cx - 12 : l.cx + 12;
          const Box b{to_left ? tx - w : tx, ty - 10, to_left ? tx : tx + w, ty - 10 + h};
          if (b.x0 < left + 2 || b.x1 > width - 2 || b.y0 < 2 || b.y1 > height - bottom - 2) continue;
          bool free = true;
          for (const auto& o : placed) free = free && !hit(b, o);
          for (const auto& o : marks) free = free && (pass == 1 || !hit(b, o));
          if (!free) continue;
          found = true;
          best_x = tx;
          best_y = ty;
          best_left = to_left;
          placed.push_back(b);
          break;
        }
      }
    }
    if (!found) {  // nowhere free: its default place
      best_left = l.original;
      best_x = best_left ? l.cx - 12 : l.cx + 12;
      best_y = l.cy - 6;
    }
    std::string names;
    for (size_t i = 0; i < l.names.size(); ++i) names += (i ? ", " : "") + l.names[i];
    if (std::abs(best_y - (l.cy - 6 + (best_left ? -4 : 0))) > 0.5) {
      text += "<line class=\"leader\" x1=\"" + C(l.cx) + "\" y1=\"" + C(l.cy) + "\" x2=\"" +
              C(best_left ? best_x + 2 : best_x - 2) + "\" y2=\"" + C(best_y - 4) +
              "\" stroke=\"#bdbdbd\" stroke-width=\"1\"/>";
    }
    text += "<text class=\"label\" x=\"" + C(best_x) + "\" y=\"" + C(best_y) + "\"" +
            (best_left ? " text-anchor=\"end\"" : "") + ">" + names + "</text>\n";
  }
  if (!text.empty()) s += "<g class=\"labels\">" + text + "</g>\n";
  s += "</svg>\n";
  return s;
}

std::string CompareCharts(const Doc& d) {
  const json& rows = d.At("/rows");
  if (!rows.is_array()) return "";
  // Accuracy is top-1 with labels, agreement otherwise (the metric of the "pareto_*" flags).
  bool top1 = d.NumAt("/baseline/top1");
  for (size_t i = 0; i < rows.size() && !top1; ++i) top1 = d.NumAt("/rows" + Idx(i) + "/top1");
  const std::string key = top1 ? "top1" : "agreement";
  const std::string ytitle = top1 ? "top-1 accuracy" : "top-1 agreement with the original";
  std::string s = "<section>\n" + H(2, "Size, MACs and accuracy") + "<p>Each recipe that ran, by " + ytitle +
                  "; the line joins the Pareto front";
  if (d.Str("/chosen")) s += ", the ringed point is the chosen recipe";
  s += " and the diamond is the original model" +
       std::string(top1 ? "" : " (which agrees with itself on every sample)") + ".</p>\n";
  Gate gate;
  std::string gate_note;
  if (d.Obj("/gate") && d.NumAt("/gate/threshold")) {
    const std::string metric = d.Text("/gate/metric");
    if (metric == "top1_drop_pts" && top1 && d.NumAt("/baseline/top1")) {
      gate = {
          true, d.D("/baseline/top1") - d.D("/gate/threshold") / 100.0,
          "<tspan>gate: drop ≤ </tspan>" + d.N("/gate/threshold", "fixed2", "tspan") + "<tspan> pt</tspan>"};
    } else if (metric == "agreement" && !top1) {
      gate = {true, d.D("/gate/threshold"),
              "<tspan>gate: ≥ </tspan>" + d.N("/gate/threshold", "pct2", "tspan")};
    } else {
      gate_note = "<p>The gate (" + d.S("/gate/metric") + ", threshold " + d.N("/gate/threshold", "json") +
                  ") is not on this axis and is not drawn.</p>\n";
    }
  }
  const bool base_y = top1 ? d.NumAt("/baseline/top1") : true;
  const double by = top1 ? d.D("/baseline/top1") : 1.0;
  const std::string chosen = d.Text("/chosen");
  bool drawn = false, any_fails = false;
  for (const auto& [xkey, front_key, model_key, xkind, xtitle] :
       {std::make_tuple("bytes", "pareto_size", "/model/bytes", "bytes", "size (bytes)"),
        std::make_tuple("macs", "pareto_macs", "/model/macs", "count", "MACs per sample")}) {
    std::vector<ScatterPoint> pts;
    for (size_t i = 0; i < rows.size(); ++i) {
      const std::string p = "/rows" + Idx(i);
      if (d.Text(p + "/status") != "ok" || !d.NumAt(p + "/" + xkey) || !d.NumAt(p + "/" + key)) continue;
      ScatterPoint pt;
      pt.row = i;
      pt.x = d.D(p + "/" + xkey);
      pt.y = d.D(p + "/" + key);
      pt.front = d.True(p + "/" + front_key);
      pt.chosen = d.True(p + "/chosen") || (!chosen.empty() && d.Text(p + "/recipe") == chosen);
      pt.name = d.Text(p + "/recipe", "?");
      pt.fails = d.False(p + "/gate/passed");
      any_fails = any_fails || pt.fails;
      pts.push_back(pt);
    }
    if (pts.empty()) continue;
    drawn = true;
    const bool has_base = base_y && d.NumAt(model_key);
    s +=
        H(3, std::string(xkey) == std::string("bytes") ? "Size against " + ytitle : "MACs against " + ytitle);
    s += Scatter(pts, has_base, d.D(model_key), by, gate, xkind, xtitle, ytitle,
                 std::string(xtitle) + " against " + ytitle + " of each recipe");
  }
  if (!drawn) {
    s += "<p>No recipe has both a size and an accuracy measure: the charts need evaluation data.</p>\n";
  } else {
    s += gate_note;
    s += std::string("<p class=\"legend\"><span><i class=\"sw\" style=\"color:") + kInf +
         "\">●</i>on the Pareto front</span><span><i class=\"sw\" "
         "style=\"color:#9e9e9e\">●</i>dominated (name on hover)</span>" +
         (chosen.empty() ? "" : "<span><i class=\"sw\" style=\"color:#e65100\">■</i>chosen (ring)</span>") +
         "<span><i class=\"sw\" style=\"color:#212121\">◆</i>original model</span>" +
         (any_fails ? "<span><i class=\"sw\" style=\"color:#616161\">○</i>hollow: fails the accuracy gate "
                      "(not a recommendation, even on the front)</span>"
                    : "") +
         (gate.drawn
              ? std::string("<span><i class=\"sw\" style=\"color:") + kPoor + "\">■</i>gate threshold</span>"
              : std::string()) +
         "</p>\n";
  }
  return s + "</section>\n";
}

std::string CompareTable(const Doc& d) {
  const json& rows = d.At("/rows");
  if (!rows.is_array() || rows.empty()) return "<p>No recipe.</p>\n";
  const bool drop = d.Text("/gate/metric") == "top1_drop_pts";
  std::string s =
      "<section>\n" + H(2, "Recipes") +
      "<p>Size and MACs with their share of the original's; top-1 with its change in points.</p>\n"
      "<div class=\"scroll\"><table class=\"rows\"><tr><th>recipe</th><th>passes</th><th>status</th>"
      "<th class=\"n\">size</th><th class=\"n\">zstd</th><th class=\"n\">parameters</th>"
      "<th class=\"n\">MACs</th><th class=\"n\">top-1</th><th class=\"n\">agreement</th>"
      "<th class=\"n\">SQNR</th><th class=\"n\">ms/sample</th><th class=\"n\">gate" +
      std::string(!d.Obj("/gate") ? ""
                  : drop          ? ": drop (pt)"
                                  : ": " + d.S("/gate/metric")) +
      "</th><th>Pareto front</th></tr>\n";
  const std::string chosen = d.Text("/chosen");
  bool any_simulated = false;
  std::string batch;  // a pointer to the batch the latency was measured at
  for (size_t i = 0; i < rows.size(); ++i) {
    const std::string p = "/rows" + Idx(i);
    if (!d.Obj(p)) continue;
    if (batch.empty() && d.NumAt(p + "/report/timings/latency/batch"))
      batch = p + "/report/timings/latency/batch";
    const bool error = d.Text(p + "/status") == "error";
    const bool is_chosen = d.True(p + "/chosen") || (!chosen.empty() && d.Text(p + "/recipe") == chosen);
    std::string passes;
    const json& pl = d.At(p + "/passes");
    for (size_t k = 0; pl.is_array() && k < pl.size(); ++k) {
      passes += (k ? " → " : "") + d.S(p + "/passes" + Idx(k));
    }
    // Quantize and fp16 passes are simulated in float32 by our executor: their time is not deployment speed.
    bool simulated = false;
    for (size_t k = 0; pl.is_array() && k < pl.size(); ++k) {
      const std::string pass = d.Text(p + "/passes" + Idx(k));
      simulated =
          simulated || pass.find("quantize") != std::string::npos || pass.find("fp16") != std::string::npos;
    }
    any_simulated = any_simulated || simulated;
    std::string sqnr = "—";
    if (d.NumAt(p + "/sqnr_db") || d.True(p + "/sqnr_db_infinite")) sqnr = d.N(p + "/sqnr_db", "db1");
    std::string gate = "—";
    if (d.Obj(p + "/gate")) {
      const std::string fmt = drop ? "fixed2" : "fixed4";
      gate = d.N(p + "/gate/value", fmt) + " " +
             (d.True(p + "/gate/passed") ? Badge(true, "passed", "") : Badge(false, "", "failed"));
    }
    std::string pareto;
    if (d.True(p + "/pareto_size")) pareto += "<span class=\"badge info\">size</span> ";
    if (d.True(p + "/pareto_macs")) pareto += "<span class=\"badge info\">MACs</span>";
    // A recipe the search ruled out is not a failure: a grey badge and its reason in grey, not in red.
    const bool skipped = d.Text(p + "/status") == "skipped";
    const std::string status = error     ? Badge(false, "", "error")
                               : skipped ? std::string("<span class=\"badge skip\">skipped</span>")
                                         : d.S(p + "/status");
    s += std::string("<tr") +
         (error       ? " class=\"error\""
          : is_chosen ? " class=\"chosen\""
          : skipped   ? " class=\"skipped\""
                      : "") +
         "><td>" + d.Code(p + "/recipe") + (is_chosen ? " <span class=\"badge warn\">chosen</span>" : "") +
         (d.Str(p + "/source") ? "<br><span class=\"meta\">" + d.S(p + "/source") + "</span>" : "") +
         "</td><td>" + (passes.empty() ? "—" : passes) + "</td><td>" + status + "</td>";
    // A recipe that failed, or that the search did not run, has no figures: its reason instead.
    const bool figures = !error && !d.At(p + "/bytes").is_null();
    if (!figures) {
      std::string why = error ? d.S(p + "/error", "failed") : "";
      if (d.Str(p + "/skipped_reason"))
        why += (why.empty() ? "" : "; ") + ("not run: " + d.S(p + "/skipped_reason"));
      s += std::string("<td class=\"") + (error ? "err" : "why") + "\" colspan=\"10\">" +
           (why.empty() ? "—" : why) + "</td></tr>\n";
      continue;
    }
    auto sub = [&](const std::string& key, const std::string& fmt) {
      return d.At(p + key).is_null() ? std::string() : "<br><small>" + d.N(p + key, fmt) + "</small>";
    };
    s += "<td class=\"n\">" + d.N(p + "/bytes", "bytes") + sub("/size_ratio", "pct1") +
         "</td><td class=\"n\">" + d.N(p + "/zstd_bytes", "bytes") + "</td><td class=\"n\">" +
         d.N(p + "/parameters", "int") + "</td><td class=\"n\">" + d.N(p + "/macs", "int") +
         sub("/macs_ratio", "pct1") + "</td><td class=\"n\">" + d.N(p + "/top1", "pct2") +
         sub("/top1_change_pts", "pts2") + "</td><td class=\"n\">" + d.N(p + "/agreement", "pct2") +
         "</td><td class=\"n\">" + sqnr + "</td><td class=\"n\">" + d.N(p + "/ms_per_sample", "fixed3") +
         (simulated ? "<span class=\"sim\" title=\"INT8/FP16 simulated in float32\">†</span>" : "") +
         "</td><td class=\"n\">" + gate + "</td><td>" + (pareto.empty() ? "—" : pareto) + "</td></tr>\n";
    if (d.Str(p + "/skipped_reason")) {
      s += "<tr><td></td><td colspan=\"12\">not run: " + d.S(p + "/skipped_reason") + "</td></tr>\n";
    }
  }
  s += "</table></div>\n";
  s +=
      "<p class=\"meta\">ms/sample: the time of our own executor" +
      (batch.empty() ? std::string() : " at batch " + d.N(batch, "int")) +
      ", divided by the batch, measured on a shared machine" +
      (any_simulated ? std::string("; † INT8 and FP16 are simulated in float32 there, so these times are not "
                                   "deployment speed")
                     : std::string(", not deployment speed")) +
      ".</p>\n";
  for (const auto& [key, name] : {std::make_pair("size", "size"), std::make_pair("macs", "MACs")}) {
    const std::string p = std::string("/pareto/") + key;
    if (!d.At(p).is_array()) continue;
    std::string list;
    for (size_t k = 0; k < d.At(p).size(); ++k) list += (k ? ", " : "") + d.Code(p + Idx(k));
    s += std::string("<p>Pareto front by ") + name + ": " + (list.empty() ? "none" : list) + ".</p>\n";
  }
  return s + "</section>\n";
}

std::string CompareHeader(const Doc& d) {
  const bool is_auto = d.Text("/command") == "auto";
  std::string s = "<h1>compress " + std::string(is_auto ? "auto" : "compare") + ": " + d.Code("/model/path") +
                  "</h1>\n<p class=\"meta\">" + d.S("/tool/name", "compress") + " " +
                  d.S("/tool/version", "") + "</p>\n<div class=\"cards\">\n";
  s += Card("original size", d.N("/model/bytes", "bytes"),
            d.NumAt("/model/zstd_bytes") ? "zstd " + d.N("/model/zstd_bytes", "bytes") : "");
  s += Card("parameters", d.N("/model/parameters", "int"), "MACs " + d.N("/model/macs", "int"));
  if (d.NumAt("/baseline/top1")) s += Card("original top-1", d.N("/baseline/top1", "pct2"));
  if (d.NumAt("/baseline/ms_per_sample")) {
    s += Card("original latency", d.N("/baseline/ms_per_sample", "fixed3") + " ms",
              "per sample, our executor, batched; shared machine");
  }
  if (is_auto || d.Str("/chosen")) {
    s += Card("chosen", d.Str("/chosen") ? d.Code("/chosen") : "none",
              d.Str("/objective") ? "objective: " + d.S("/objective") : "");
  }
  if (d.Obj("/gate")) {
    const bool drop = d.Text("/gate/metric") == "top1_drop_pts";
    s += Card("accuracy gate", drop ? "drop ≤ " + d.N("/gate/threshold", "fixed2") + " pt"
                                    : d.S("/gate/metric") + " ≥ " + d.N("/gate/threshold", "fixed4"));
  }
  s += "</div>\n";
  if (d.Str("/stop_reason")) s += "<p><b>Search stopped:</b> " + d.S("/stop_reason") + "</p>\n";
  // The data every recipe ran on.
  std::string data;
  if (d.Obj("/data/calib")) {
    data += "<li>calibration: " + d.N("/data/calib/samples", "int") + " samples of " +
            d.Code("/data/calib/dir") +
            (d.NumAt("/data/calib/calibration_runs")
                 ? ", " + d.N("/data/calib/calibration_runs", "int") +
                       (d.D("/data/calib/calibration_runs") == 1 ? " run" : " runs")
                 : "") +
            (d.Str("/data/calib/note") ? "; " + d.S("/data/calib/note") : "") + "</li>\n";
  }
  if (d.Obj("/data/eval")) {
    data += "<li>evaluation: " + d.N("/data/eval/samples", "int") + " samples of " +
            d.Code("/data/eval/dir") +
            (d.False("/data/eval/labelled") ? " (no labels: accuracy is agreement with the original)" : "") +
            "</li>\n";
  }
  if (d.Obj("/data/finetune")) {
    data += "<li>fine-tuning: " + d.N("/data/finetune/samples", "int") + " samples of " +
            d.Code("/data/finetune/dir") +
            (d.NumAt("/data/finetune/teacher_runs")
                 ? ", " + d.N("/data/finetune/teacher_runs", "int") +
                       (d.D("/data/finetune/teacher_runs") == 1 ? " teacher run" : " teacher runs")
                 : "") +
            "</li>\n";
  }
  if (!data.empty()) s += "<ul>\n" + data + "</ul>\n";
  return s;
}

std::string CompareReports(const Doc& d) {
  const json& rows = d.At("/rows");
  std::string s;
  for (size_t i = 0; rows.is_array() && i < rows.size(); ++i) {
    const std::string p = "/rows" + Idx(i);
    if (!d.Obj(p + "/report")) continue;
    s += "<details><summary>Report of " + d.Code(p + "/recipe") +
         (d.Str(p + "/output") ? " → " + d.Code(p + "/output") : std::string()) + "</summary>\n" +
         ReportBody(d, p + "/report", 4) + "</details>\n";
  }
  return s.empty() ? "" : "<section>\n" + H(2, "Each recipe's report") + s + "</section>\n";
}

}  // namespace

std::string FormatReportHtml(const json& report) {
  if (!report.is_object()) ThrowInvalid("the report to format as HTML is not a JSON object");
  const Doc d(report);
  const std::string name = d.Text("/recipe/name", "report");
  std::string s = PageStart("compress report: " + Esc(name));
  s += "<h1>compress report: " + d.Code("/recipe/name") + "</h1>\n<p class=\"meta\">" +
       d.S("/tool/name", "compress") + " " + d.S("/tool/version", "") + " · " + d.Code("/input/path") +
       " → " + d.Code("/output/path") + "</p>\n";
  s += ReportBody(d, "", 2);
  return s +
         PageEnd(
             "Every number on this page is in the JSON report at the pointer in its data-json attribute.");
}

std::string FormatCompareHtml(const json& doc) {
  if (!doc.is_object()) ThrowInvalid("the compare document to format as HTML is not a JSON object");
  const Doc d(doc);
  const std::string title = std::string("compress ") + (d.Text("/command") == "auto" ? "auto" : "compare") +
                            ": " + Esc(d.Text("/model/path", "model"));
  std::string s =
      PageStart(title) + CompareHeader(d) + CompareCharts(d) + CompareTable(d) + CompareReports(d);
  if (d.NumAt("/timings/total_seconds")) {
    s += "<p>Total run time " + d.N("/timings/total_seconds", "fixed2") + " s.</p>\n";
  }
  return s +
         PageEnd(
             "Every number on this page is in the JSON document at the pointer in its data-json attribute.");
}

}  // namespace compress
