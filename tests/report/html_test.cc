// The HTML pages of compress/report/html.h, from real reports of the compress binary on the sample models
// (calibration and evaluation on models/calib, 256 labelled Fashion-MNIST images): self-contained (no
// script, no URL), every JSON string escaped, and every number traceable: each element with data-json is
// checked against the JSON value at its pointer, formatted by this file's own implementation of the
// documented formats.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "compress/io/onnx_io.h"
#include "compress/report/html.h"
#include "compress/util/fs.h"
#include "support/test_support.h"

namespace compress {
namespace {

using nlohmann::json;
using testing::ReadBytes;
using testing::RunCompress;
using testing::SourcePath;
using testing::TempDir;

bool Has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

size_t Count(const std::string& s, const std::string& part) {
  size_t n = 0;
  for (size_t pos = s.find(part); pos != std::string::npos; pos = s.find(part, pos + 1)) ++n;
  return n;
}

// ---------------------------------------------------------------------------------------------------
// A small HTML scanner: tags with their attributes, and the text right after each tag.

std::string Unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '&') {
      out += s[i];
      continue;
    }
    const size_t semi = s.find(';', i);
    EXPECT_NE(semi, std::string::npos) << "bare & in " << s;
    if (semi == std::string::npos) return out;
    const std::string ent = s.substr(i + 1, semi - i - 1);
    static const std::map<std::string, std::string> kNamed = {
        {"amp", "&"}, {"lt", "<"}, {"gt", ">"}, {"quot", "\""}, {"#39", "'"}};
    const auto it = kNamed.find(ent);
    EXPECT_NE(it, kNamed.end()) << "unexpected entity &" << ent << ";";
    if (it != kNamed.end()) out += it->second;
    i = semi;
  }
  return out;
}

struct Tag {
  std::string name;                          // lower case; "/name" for an end tag
  std::map<std::string, std::string> attrs;  // unescaped values
  size_t end = 0;                            // just past '>'
};

// Every tag of `html` in order (the doctype, comments and the contents of <style> skipped).
std::vector<Tag> ScanTags(const std::string& html) {
  std::vector<Tag> tags;
  size_t i = 0;
  while ((i = html.find('<', i)) != std::string::npos) {
    if (html.compare(i, 4, "<!--") == 0) {
      i = html.find("-->", i);
      if (i == std::string::npos) break;
      continue;
    }
    if (html.compare(i, 2, "<!") == 0) {
      i = html.find('>', i);
      continue;
    }
    Tag t;
    size_t j = i + 1;
    if (j < html.size() && html[j] == '/') t.name = "/", ++j;
    while (j < html.size() && !isspace(static_cast<unsigned char>(html[j])) && html[j] != '>' &&
           html[j] != '/') {
      t.name += static_cast<char>(tolower(static_cast<unsigned char>(html[j++])));
    }
    while (j < html.size() && html[j] != '>') {
      if (isspace(static_cast<unsigned char>(html[j])) || html[j] == '/') {
        ++j;
        continue;
      }
      std::string name;
      while (j < html.size() && !isspace(static_cast<unsigned char>(html[j])) && html[j] != '=' &&
             html[j] != '>') {
        name += html[j++];
      }
      std::string value;
      if (j < html.size() && html[j] == '=') {
        ++j;
        EXPECT_TRUE(j < html.size() && html[j] == '"') << "unquoted attribute " << name;
        const size_t close = html.find('"', j + 1);
        if (close == std::string::npos) break;
        value = Unescape(html.substr(j + 1, close - j - 1));
        j = close + 1;
      }
      EXPECT_EQ(t.attrs.count(name), 0u) << "attribute " << name << " twice in <" << t.name;
      t.attrs[name] = value;
    }
    t.end = j + 1;
    tags.push_back(t);
    i = t.end;
    if (t.name == "style") {
      i = html.find("</style>", i);
      if (i == std::string::npos) break;
    }
  }
  return tags;
}

// ---------------------------------------------------------------------------------------------------
// The documented formats, written again here.

// "%.*f" of `v` (or "%+.*f" with `sign`).
std::string Printf(bool sign, int digits, double v) {
  char buf[512];
  if (sign) {
    std::snprintf(buf, sizeof(buf), "%+.*f", digits, v);
  } else {
    std::snprintf(buf, sizeof(buf), "%.*f", digits, v);
  }
  return buf;
}

std::string Grouped(const json& v) {
  std::string digits = v.is_number_unsigned() ? std::to_string(v.get<uint64_t>())
                                              : std::to_string(std::llabs(v.get<long long>()));
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return (!v.is_number_unsigned() && v.get<long long>() < 0 ? "-" : "") + out;
}

// The text (and title, for "bytes") of value `v` in format `fmt`; "" when it has none.
std::string Expected(const json& v, const std::string& fmt, std::string* title) {
  title->clear();
  if (fmt == "int") return v.is_number_integer() ? Grouped(v) : "";
  if (fmt == "json") return v.is_number() ? v.dump() : "";
  if (fmt == "bytes") {
    if (!v.is_number_integer()) return "";
    const double b = v.get<double>();
    *title = Grouped(v) + " bytes";
    if (b < 1024) return std::to_string(v.get<int64_t>()) + " B";
    if (b < 1024.0 * 1024) return Printf(false, 1, b / 1024) + " KiB";
    if (b < 1024.0 * 1024 * 1024) return Printf(false, 1, b / 1024 / 1024) + " MiB";
    return Printf(false, 1, b / 1024 / 1024 / 1024) + " GiB";
  }
  const int digits = fmt.back() - '0';
  EXPECT_TRUE(digits >= 0 && digits <= 6) << fmt;
  const std::string family = fmt.substr(0, fmt.size() - 1);
  if (family == "db" && v.is_null()) return "∞ dB";
  if (!v.is_number()) return "";
  const double x = v.get<double>();
  if (family == "fixed") return Printf(false, digits, x);
  if (family == "pct") return Printf(false, digits, x * 100) + "%";
  if (family == "pts") return Printf(true, digits, x) + " pt";
  if (family == "ratio") return Printf(false, digits, x) + "x";
  if (family == "db") return Printf(false, digits, x) + " dB";
  ADD_FAILURE() << "undocumented format " << fmt;
  return "";
}

// The tags a page may hold: anything else came from an unescaped string.
const std::set<std::string> kAllowedTags = {
    "html",     "head",    "meta",    "title",   "style", "body", "h1",    "h2",    "h3",   "h4",
    "h5",       "h6",      "p",       "div",     "span",  "code", "small", "table", "tr",   "th",
    "td",       "section", "footer",  "svg",     "g",     "line", "text",  "tspan", "rect", "circle",
    "polyline", "polygon", "details", "summary", "ul",    "ol",   "li",    "b",     "i",    "br"};

const std::set<std::string> kAllowedAttributes = {"class",
                                                  "title",
                                                  "data-json",
                                                  "data-format",
                                                  "data-row",
                                                  "style",
                                                  "lang",
                                                  "charset",
                                                  "content",
                                                  "role",
                                                  "aria-label",
                                                  "viewBox",
                                                  "width",
                                                  "height",
                                                  "x",
                                                  "y",
                                                  "x1",
                                                  "y1",
                                                  "x2",
                                                  "y2",
                                                  "cx",
                                                  "cy",
                                                  "r",
                                                  "fill",
                                                  "stroke",
                                                  "stroke-width",
                                                  "stroke-dasharray",
                                                  "points",
                                                  "text-anchor",
                                                  "transform",
                                                  "colspan"};

struct Checked {
  size_t numbers = 0;  // elements with data-json
  std::multiset<std::string> pointers;
  std::map<std::string, std::string> text_of;            // pointer -> text (last seen)
  std::map<std::string, std::set<std::string>> tags_of;  // pointer -> names of the tags carrying it
};

// Every element with data-json: the pointer resolves in `doc`, and the element's only content is the
// value in its data-format (and the exact byte count in its title for "bytes").
Checked CheckNumbers(const std::string& html, const json& doc) {
  Checked c;
  const std::vector<Tag> tags = ScanTags(html);
  for (size_t k = 0; k < tags.size(); ++k) {
    const Tag& t = tags[k];
    if (t.name.empty() || t.name[0] == '/') continue;
    const auto ptr_it = t.attrs.find("data-json");
    if (ptr_it == t.attrs.end()) continue;
    const std::string& ptr = ptr_it->second;
    ++c.numbers;
    c.pointers.insert(ptr);
    c.tags_of[ptr].insert(t.name);
    const bool has_format = t.attrs.count("data-format") > 0;
    EXPECT_TRUE(has_format) << ptr;
    const std::string fmt = has_format ? t.attrs.at("data-format") : "";
    json::json_pointer jp(ptr);
    const bool resolves = doc.contains(jp);
    EXPECT_TRUE(resolves) << "data-json " << ptr << " does not resolve";
    if (!has_format || !resolves) continue;
    // The element holds nothing but its text: the next tag closes it.
    EXPECT_TRUE(k + 1 < tags.size() && tags[k + 1].name == "/" + t.name) << ptr;
    const size_t text_end = html.find('<', t.end);
    const std::string text = Unescape(html.substr(t.end, text_end - t.end));
    std::string title;
    const std::string expected = Expected(doc.at(jp), fmt, &title);
    EXPECT_FALSE(expected.empty()) << ptr << " (" << fmt << ") holds " << doc.at(jp).dump();
    EXPECT_EQ(text, expected) << ptr << " (" << fmt << ") holds " << doc.at(jp).dump();
    if (fmt == "bytes") {
      EXPECT_EQ(t.attrs.count("title") ? t.attrs.at("title") : "", title) << ptr;
    }
    c.text_of[ptr] = text;
  }
  return c;
}

std::string EscapeHtml(const std::string& s) {
  std::string out;
  for (const char ch : s) {
    switch (ch) {
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
        out += ch;
    }
  }
  return out;
}

void CollectStrings(const json& v, std::vector<std::string>* out) {
  if (v.is_string()) out->push_back(v.get<std::string>());
  if (v.is_object()) {
    for (auto it = v.begin(); it != v.end(); ++it) {
      out->push_back(it.key());
      CollectStrings(it.value(), out);
    }
  }
  if (v.is_array()) {
    for (const auto& e : v) CollectStrings(e, out);
  }
}

// Splits `html` into the markup the formatter writes itself (tags, attribute names and values, the style
// sheet) and the text that may come from the JSON (between tags, and the values of title and aria-label),
// unescaped.
void SplitMarkup(const std::string& html, std::string* markup, std::vector<std::string>* texts) {
  size_t i = 0;
  while (i < html.size()) {
    const size_t lt = html.find('<', i);
    const size_t text_end = lt == std::string::npos ? html.size() : lt;
    if (text_end > i) {
      texts->push_back(Unescape(html.substr(i, text_end - i)));
      *markup += ' ';
    }
    if (lt == std::string::npos) break;
    size_t j = lt;
    std::string last_name;
    while (j < html.size() && html[j] != '>') {
      if (html[j] == '"') {
        const size_t close = html.find('"', j + 1);
        if (close == std::string::npos) break;
        const std::string value = html.substr(j + 1, close - j - 1);
        if (last_name == "title=" || last_name == "aria-label=") {
          texts->push_back(Unescape(value));
          *markup += "\"\"";
        } else {
          *markup += "\"" + value + "\"";
        }
        j = close + 1;
        continue;
      }
      last_name = isspace(static_cast<unsigned char>(html[j])) ? std::string() : last_name + html[j];
      *markup += html[j++];
    }
    *markup += '>';
    i = j + 1;
    if (html.compare(lt, 6, "<style") == 0) {
      const size_t close = html.find("</style>", i);
      *markup += html.substr(i, close - i);
      i = close;
    }
  }
}

std::string Lower(std::string s) {
  for (auto& ch : s) ch = static_cast<char>(tolower(static_cast<unsigned char>(ch)));
  return s;
}

// A well-formed, self-contained page: doctype, charset, one title; only the tags and attributes the
// formatter writes; no script, no URL or anything that loads one, outside the strings the JSON itself
// holds (a path may contain "//").
void CheckSelfContained(const std::string& html, const json& doc) {
  EXPECT_EQ(html.rfind("<!doctype html>\n", 0), 0u);
  EXPECT_TRUE(Has(html, "<meta charset=\"utf-8\">"));
  const size_t head_end = html.find("</head>");
  ASSERT_NE(head_end, std::string::npos);
  EXPECT_EQ(Count(html.substr(0, head_end), "<title>"), 1u);
  EXPECT_EQ(Count(html, "</html>"), 1u);
  for (const Tag& t : ScanTags(html)) {
    if (t.name.empty() || t.name[0] == '/') continue;
    EXPECT_TRUE(kAllowedTags.count(t.name)) << "unexpected tag <" << t.name << ">";
    for (const auto& [name, value] : t.attrs) {
      EXPECT_TRUE(kAllowedAttributes.count(name) || (name == "name" && t.name == "meta"))
          << "unexpected attribute " << name << " on <" << t.name << ">";
    }
  }
  std::string markup;
  std::vector<std::string> texts;
  SplitMarkup(html, &markup, &texts);
  markup = Lower(markup);
  for (const char* bad : {"http:", "https:", "//", "<script", "xmlns", "url(", "src=", "href=", "@import",
                          "<link", "<img", "<iframe", "<object", "<embed", "<base", "javascript:", "data:"}) {
    const size_t at = markup.find(bad);
    EXPECT_EQ(at, std::string::npos) << "found " << bad
                                     << " in the markup near: " << markup.substr(at > 80 ? at - 80 : 0, 160);
  }
  std::vector<std::string> strings;
  CollectStrings(doc, &strings);
  std::sort(strings.begin(), strings.end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  for (std::string text : texts) {
    for (const auto& s : strings) {
      if (s.size() < 2) continue;
      for (size_t pos = text.find(s); pos != std::string::npos; pos = text.find(s, pos))
        text.erase(pos, s.size());
    }
    text = Lower(text);
    for (const char* bad : {"http:", "https:", "//", "<script", "javascript:"}) {
      EXPECT_FALSE(Has(text, bad)) << "found " << bad << " in text: " << text;
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Real reports of the compress binary.

std::string Calib() { return SourcePath("models/calib"); }

json RunReport(const std::string& model, const std::vector<std::string>& options) {
  TempDir dir;
  std::vector<std::string> args = {model, "-o", dir / "out.onnx", "--report", dir / "r.json", "-q"};
  args.insert(args.end(), options.begin(), options.end());
  const auto r = RunCompress(args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  const std::string text = ReadBytes(dir / "r.json");
  return text.empty() ? json::object() : json::parse(text);
}

// A node name and value name with every character HTML gives a meaning to.
const char* const kHostile = "a<b&\"c'";

// Each report is made once per test process, when a test first asks for it: ctest runs every test in a
// process of its own, so a test runs only the compress runs it needs (a few tenths of a second each).

std::string Cnn() { return SourcePath("models/cnn.onnx"); }

// CNN --int8 with calibration, evaluation and a top-1 gate: per-layer SQNR.
const json& Int8() {
  static const json report =
      RunReport(Cnn(), {"--int8", "--calib", Calib(), "--eval", Calib(), "--max-accuracy-drop", "5"});
  return report;
}
// CNN --int8 with an agreement gate that only the float fallback meets.
const json& Fallback() {
  static const json report = RunReport(
      Cnn(), {"--int8", "--calib", Calib(), "--eval", Calib(), "--min-agreement", "1", "--auto-fallback"});
  return report;
}
// CNN --prune 0.5 --finetune (2 epochs): pruning table and loss per epoch.
const json& Finetune() {
  static const json report =
      RunReport(Cnn(), {"--prune", "0.5", "--finetune", Calib(), "--epochs", "2", "--eval", Calib()});
  return report;
}
const json& Prune() {
  static const json report = RunReport(Cnn(), {"--prune", "0.5", "--eval", Calib()});
  return report;
}
const json& Fp16Cnn() {
  static const json report = RunReport(Cnn(), {"--fp16", "--eval", Calib()});
  return report;
}
// MLP --low-rank 0.5: the low-rank table.
const json& LowRank() {
  static const json report =
      RunReport(SourcePath("models/mlp.onnx"), {"--low-rank", "0.5", "--calib", Calib(), "--eval", Calib()});
  return report;
}
// MLP --fp16 without data: no accuracy, no layers, no gate.
const json& Fp16NoData() {
  static const json report = RunReport(SourcePath("models/mlp.onnx"), {"--fp16"});
  return report;
}
// ViT --prune-channels 0.5: channels and attention heads per layer.
const json& Heads() {
  static const json report =
      RunReport(SourcePath("models/vit.onnx"), {"--prune-channels", "0.5", "--eval", Calib()});
  return report;
}

// The CNN with its first Conv node named kHostile and that node's output kHostile + "_out", pruned.
const json& Hostile() {
  static const json report = [] {
    TempDir dir;
    Model m = LoadModel(Cnn());
    Node& first = m.graph.nodes.front();
    const std::string old_value = first.outputs.at(0);
    const std::string new_value = std::string(kHostile) + "_out";
    first.name = kHostile;
    first.outputs[0] = new_value;
    for (auto& n : m.graph.nodes) {
      for (auto& in : n.inputs) {
        if (in == old_value) in = new_value;
      }
    }
    for (auto& vi : m.graph.value_info) {
      if (vi.name == old_value) vi.name = new_value;
    }
    SaveModel(m, dir / "hostile.onnx");
    return RunReport(dir / "hostile.onnx", {"--prune", "0.5", "--eval", Calib()});
  }();
  return report;
}

std::string TextAt(const Checked& c, const std::string& ptr) {
  const auto it = c.text_of.find(ptr);
  return it == c.text_of.end() ? "<missing " + ptr + ">" : it->second;
}

std::string Pct2(double v) { return Printf(false, 2, v * 100) + "%"; }

// The page of a real report, checked: self-contained, and every number its JSON value.
Checked CheckedPage(const json& rep, std::string* html) {
  EXPECT_EQ(rep.value("schema", ""), "compress.report/1");
  *html = FormatReportHtml(rep);
  CheckSelfContained(*html, rep);
  Checked c = CheckNumbers(*html, rep);
  EXPECT_GT(c.numbers, 60u);
  return c;
}

// ---------------------------------------------------------------------------------------------------

TEST(ReportHtml, KeyFiguresOfAnInt8Run) {
  const json& rep = Int8();
  std::string html;
  const Checked c = CheckedPage(rep, &html);
  ASSERT_TRUE(rep["evaluation"].is_object());
  EXPECT_EQ(TextAt(c, "/evaluation/top1_before"), Pct2(rep["evaluation"]["top1_before"].get<double>()));
  EXPECT_EQ(TextAt(c, "/evaluation/top1_after"), Pct2(rep["evaluation"]["top1_after"].get<double>()));
  EXPECT_TRUE(c.pointers.count("/evaluation/top1_change_pts"));
  EXPECT_TRUE(c.pointers.count("/evaluation/agreement"));
  EXPECT_TRUE(c.pointers.count("/evaluation/sqnr_db"));
  EXPECT_TRUE(c.pointers.count("/evaluation/cosine_similarity"));
  // The output size, with its exact byte count.
  EXPECT_TRUE(c.pointers.count("/output/bytes"));
  EXPECT_TRUE(Has(html, "title=\"" + Grouped(rep["output"]["bytes"]) + " bytes\""));
  EXPECT_TRUE(c.pointers.count("/zstd/output_bytes"));
  EXPECT_TRUE(c.pointers.count("/macs/after/total"));
  // Every layer's SQNR, once, as a bar label in the chart (infinite ones as ∞).
  ASSERT_GT(rep["layers"].size(), 10u);
  size_t infinite = 0;
  for (size_t i = 0; i < rep["layers"].size(); ++i) {
    const std::string p = "/layers/" + std::to_string(i) + "/sqnr_db";
    EXPECT_EQ(c.pointers.count(p), 1u) << p;
    EXPECT_EQ(c.tags_of.count(p) ? c.tags_of.at(p) : std::set<std::string>(), std::set<std::string>{"text"})
        << p;
    EXPECT_TRUE(Has(html, ">" + EscapeHtml(rep["layers"][i]["name"].get<std::string>()) + "</text>"));
    infinite += rep["layers"][i]["sqnr_db"].is_null();
  }
  EXPECT_GT(infinite, 0u);  // the stem stays in float (--min-conv-depth 64)
  EXPECT_EQ(Count(html, ">∞ dB</text>"), infinite);
  // Parameters per dtype, int8 among them.
  EXPECT_TRUE(c.pointers.count("/parameters/after/by_dtype/int8/parameters"));
  EXPECT_TRUE(c.pointers.count("/parameters/before/by_dtype/float32/bytes"));
  // The gate verdict, the calibration and the recipe.
  EXPECT_TRUE(Has(html, "Accuracy gate"));
  EXPECT_TRUE(Has(html, rep["gate"]["passed"].get<bool>() ? ">PASSED<" : ">FAILED<"));
  EXPECT_TRUE(c.pointers.count("/gate/threshold"));
  EXPECT_TRUE(c.pointers.count("/calibration/samples"));
  EXPECT_TRUE(c.pointers.count("/recipe/passes/0/options/percentile"));
  // Sections without data are left out.
  EXPECT_FALSE(Has(html, "<h2>Pruning"));
  EXPECT_FALSE(Has(html, "<h2>Low-rank"));
  EXPECT_FALSE(Has(html, "<h2>Fine-tuning"));
  EXPECT_EQ(Count(html, "<svg"), 1u);
}

TEST(ReportHtml, FallbackKeptInFloat) {
  const json& rep = Fallback();
  ASSERT_TRUE(rep["gate"].is_object());
  ASSERT_FALSE(rep["gate"]["kept_in_float"].empty());
  std::string html;
  const Checked c = CheckedPage(rep, &html);
  for (size_t i = 0; i < rep["gate"]["kept_in_float"].size(); ++i) {
    EXPECT_TRUE(c.pointers.count("/gate/kept_in_float/" + std::to_string(i) + "/sqnr_db_alone_in_float"));
  }
}

TEST(ReportHtml, PruningAndTrainingLoss) {
  const json& rep = Finetune();
  std::string html;
  const Checked c = CheckedPage(rep, &html);
  ASSERT_FALSE(rep["pruning"].empty());
  for (size_t i = 0; i < rep["pruning"].size(); ++i) {
    const std::string p = "/pruning/" + std::to_string(i);
    EXPECT_TRUE(c.pointers.count(p + "/sparsity_after")) << p;
    EXPECT_TRUE(Has(html, "<code>" + EscapeHtml(rep["pruning"][i]["node"].get<std::string>()) + "</code>"));
  }
  ASSERT_EQ(rep["training"].size(), 1u);
  ASSERT_EQ(rep["training"][0]["epochs"].size(), 2u);
  for (size_t e = 0; e < 2; ++e) {
    const std::string p = "/training/0/epochs/" + std::to_string(e) + "/loss";
    EXPECT_EQ(c.pointers.count(p), 2u) << p;  // the chart's point label and the table
    EXPECT_EQ(c.tags_of.count(p) ? c.tags_of.at(p) : std::set<std::string>(),
              (std::set<std::string>{"span", "text"}))
        << p;
  }
  EXPECT_EQ(Count(html, "<polyline"), 1u);  // the loss line
  EXPECT_EQ(Count(html, "<svg"), 2u);       // with the per-layer SQNR
}

TEST(ReportHtml, ChannelsAndHeads) {
  const json& rep = Heads();
  std::string html;
  const Checked c = CheckedPage(rep, &html);
  size_t heads = 0;
  ASSERT_FALSE(rep["pruning"].empty());
  for (size_t i = 0; i < rep["pruning"].size(); ++i) {
    const std::string p = "/pruning/" + std::to_string(i);
    EXPECT_TRUE(c.pointers.count(p + "/channels_after")) << p;
    if (rep["pruning"][i].contains("heads_after")) {
      ++heads;
      EXPECT_TRUE(c.pointers.count(p + "/heads_before")) << p;
      EXPECT_TRUE(c.pointers.count(p + "/heads_after")) << p;
    }
  }
  EXPECT_GT(heads, 0u);
}

TEST(ReportHtml, LowRankTable) {
  const json& rep = LowRank();
  std::string html;
  const Checked c = CheckedPage(rep, &html);
  ASSERT_FALSE(rep["low_rank"].empty());
  for (size_t i = 0; i < rep["low_rank"].size(); ++i) {
    const std::string p = "/low_rank/" + std::to_string(i);
    EXPECT_TRUE(c.pointers.count(p + "/rank"));
    EXPECT_TRUE(c.pointers.count(p + "/max_rank"));
    EXPECT_TRUE(c.pointers.count(p + "/shape/1"));
    EXPECT_TRUE(c.pointers.count(p + "/sqnr_db"));
    EXPECT_TRUE(c.pointers.count(p + "/params_after"));
  }
}

TEST(ReportHtml, SectionsWithoutDataAreLeftOut) {
  const json& rep = Fp16NoData();
  ASSERT_TRUE(rep["evaluation"].is_null());
  std::string html;
  const Checked c = CheckedPage(rep, &html);
  for (const char* absent : {"Accuracy and fidelity", "Accuracy gate", "Per-layer SQNR", "Pruning",
                             "Low-rank", "Fine-tuning", "Calibration", "<svg", "top-1"}) {
    EXPECT_FALSE(Has(html, absent)) << absent;
  }
  // The precision table shows every weight's dtype change.
  EXPECT_TRUE(Has(html, "<td>float32</td><td>float16</td>"));
  EXPECT_TRUE(c.pointers.count("/tensors/0/bytes_after"));
  EXPECT_TRUE(c.pointers.count("/parameters/after/by_dtype/float16/parameters"));
  // An empty object is a valid (if empty) page.
  const std::string empty = FormatReportHtml(json::object());
  CheckSelfContained(empty, json::object());
  EXPECT_EQ(CheckNumbers(empty, json::object()).numbers, 0u);
  EXPECT_TRUE(Has(testing::ErrorOf([] { FormatReportHtml(json::array()); }), "not a JSON object"));
}

TEST(ReportHtml, EveryStringIsEscaped) {
  const json& rep = Hostile();
  // The real run carries the names through: a pruned layer and a per-layer SQNR row.
  bool in_pruning = false, in_layers = false;
  for (const auto& row : rep["pruning"]) in_pruning |= row["node"] == kHostile;
  for (const auto& row : rep["layers"]) in_layers |= row["name"] == std::string(kHostile) + "_out";
  EXPECT_TRUE(in_pruning) << rep["pruning"].dump();
  EXPECT_TRUE(in_layers) << rep["layers"].dump();
  std::string html = FormatReportHtml(rep);
  EXPECT_FALSE(Has(html, kHostile));
  EXPECT_TRUE(Has(html, "<code>a&lt;b&amp;&quot;c&#39;</code>"));
  EXPECT_TRUE(Has(html, ">a&lt;b&amp;&quot;c&#39;_out</text>"));
  CheckNumbers(html, rep);
  CheckSelfContained(html, rep);

  // Strings everywhere else, keys with '/' and '~' (escaped in the pointers), invalid UTF-8 and controls.
  json evil = Hostile();
  const std::string script = "<script>alert(\"x\")</script>";
  evil["recipe"]["name"] = script;
  evil["output"]["path"] = "out/" + script + ".onnx";
  evil["tool"]["version"] = "1 & 2";
  evil["layers"][0]["name"] = script;
  evil["layers"][1]["op_type"] = "'quoted'";
  evil["parameters"]["after"]["by_dtype"]["odd/~dtype<"] = {{"parameters", 3}, {"bytes", 2048}};
  evil["passes"][0]["counters"]["x/y"] = 7;
  evil["passes"][0]["notes"] = {std::string("bad \xff\xfe bytes and a \x01 control")};
  evil["gate"]["data"] = "\" onmouseover=\"x";
  html = FormatReportHtml(evil);
  EXPECT_FALSE(Has(html, "<script"));
  EXPECT_TRUE(Has(html, "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"));
  EXPECT_TRUE(Has(html, "<title>compress report: &lt;script&gt;"));
  EXPECT_TRUE(Has(html, "1 &amp; 2"));
  EXPECT_TRUE(Has(html, "&#39;quoted&#39;"));
  EXPECT_TRUE(Has(html, "bad \xEF\xBF\xBD\xEF\xBF\xBD bytes and a \xEF\xBF\xBD control"));
  const Checked c = CheckNumbers(html, evil);
  EXPECT_TRUE(c.pointers.count("/parameters/after/by_dtype/odd~1~0dtype</parameters"));
  EXPECT_EQ(TextAt(c, "/parameters/after/by_dtype/odd~1~0dtype</bytes"), "2.0 KiB");
  EXPECT_TRUE(c.pointers.count("/passes/0/counters/x~1y"));
}

// Values at the edges of the formats and charts, in a hand-made report.
// A hand-made report with values at the edges of the formats and charts.
json EdgeReport() {
  return json::parse(R"({
    "schema": "compress.report/1", "recipe": {"name": "edge", "optimize": false, "passes": []},
    "input": {"path": "in.onnx", "bytes": 5368709120}, "output": {"path": "out.onnx", "bytes": 1023,
      "checker": {"ok": false, "message": "bad <graph>"}},
    "size_ratio": 5248005.0,
    "parameters": {"before": {"total": 0, "bytes": 0, "by_dtype": {}},
                   "after": {"total": 18446744073709551615, "bytes": 1024,
                             "by_dtype": {"int4": {"parameters": -3, "bytes": 1024}}}},
    "evaluation": {"data": "d", "samples": 3, "labelled": false, "top1_before": null, "top1_after": null,
                   "top1_change_pts": null, "agreement": 0.0, "cosine_similarity": -0.5, "sqnr_db": null,
                   "max_abs_error": 1e-12},
    "layers": [{"name": "neg", "op_type": "Conv", "sqnr_db": -3.5},
               {"name": "same", "op_type": "Relu", "sqnr_db": null},
               {"name": "x", "op_type": "Add", "sqnr_db": 12}],
    "training": [{"pass_index": 2, "epochs": [{"epoch": 1, "loss": 0.25}]}],
    "gate": {"metric": "agreement", "value": 0.0, "threshold": 0.99, "margin": -0.99, "passed": false}
  })");
}

TEST(ReportHtml, EdgeValues) {
  json rep = EdgeReport();
  const std::string html = FormatReportHtml(rep);
  CheckSelfContained(html, rep);
  const Checked c = CheckNumbers(html, rep);
  EXPECT_EQ(TextAt(c, "/input/bytes"), "5.0 GiB");
  EXPECT_EQ(TextAt(c, "/output/bytes"), "1023 B");
  EXPECT_EQ(TextAt(c, "/parameters/after/bytes"), "1.0 KiB");
  EXPECT_EQ(TextAt(c, "/parameters/after/total"), "18,446,744,073,709,551,615");
  EXPECT_EQ(TextAt(c, "/parameters/after/by_dtype/int4/parameters"), "-3");
  EXPECT_EQ(TextAt(c, "/layers/0/sqnr_db"), "-3.5 dB");
  EXPECT_EQ(TextAt(c, "/layers/1/sqnr_db"), "∞ dB");
  EXPECT_EQ(TextAt(c, "/evaluation/sqnr_db"), "∞ dB");
  EXPECT_EQ(TextAt(c, "/evaluation/max_abs_error"), "0.0000");
  EXPECT_EQ(TextAt(c, "/gate/margin"), "-0.9900");
  EXPECT_TRUE(Has(html, ">FAILED<"));
  EXPECT_TRUE(Has(html, "fails</span> bad &lt;graph&gt;"));
  // Without labels, no top-1 rows; one epoch is a point without a line.
  EXPECT_FALSE(Has(html, "top-1 before"));
  EXPECT_EQ(c.pointers.count("/training/0/epochs/0/loss"), 2u);
  EXPECT_EQ(Count(html, "<polyline"), 0u);
  // A value of the wrong kind is a dash, not a number.
  rep["output"]["bytes"] = "many";
  rep["layers"][2]["sqnr_db"] = "high";
  const std::string odd = FormatReportHtml(rep);
  const Checked o = CheckNumbers(odd, rep);
  EXPECT_FALSE(o.pointers.count("/output/bytes"));
  EXPECT_FALSE(o.pointers.count("/layers/2/sqnr_db"));
}

TEST(ReportHtml, SameJsonSameBytes) {
  const json& rep = LowRank();
  const std::string a = FormatReportHtml(rep);
  EXPECT_EQ(a, FormatReportHtml(json::parse(rep.dump())));
  EXPECT_EQ(a, FormatReportHtml(rep));
}

// ---------------------------------------------------------------------------------------------------
// compress.compare/1 (the contract in the compare/auto design: one row per recipe, with its report).

// A row of the compare document from a real report, as `compress compare` fills it.
json RowFromReport(const std::string& recipe, const std::vector<std::string>& passes, const json& rep,
                   int64_t model_bytes, int64_t model_macs) {
  const json& e = rep["evaluation"];
  const int64_t bytes = rep["output"]["bytes"].get<int64_t>(),
                macs = rep["macs"]["after"]["total"].get<int64_t>();
  json row = {{"recipe", recipe},
              {"source", "preset"},
              {"passes", passes},
              {"status", "ok"},
              {"error", nullptr},
              {"output", rep["output"]["path"]},
              {"bytes", bytes},
              {"zstd_bytes", rep["zstd"]["output_bytes"]},
              {"size_ratio", static_cast<double>(bytes) / static_cast<double>(model_bytes)},
              {"parameters", rep["parameters"]["after"]["total"]},
              {"macs", macs},
              {"macs_ratio", static_cast<double>(macs) / static_cast<double>(model_macs)},
              {"top1", e["top1_after"]},
              {"top1_change_pts", e["top1_change_pts"]},
              {"agreement", e["agreement"]},
              {"sqnr_db", e["sqnr_db"]},
              {"sqnr_db_infinite", e["sqnr_db"].is_null()},
              {"ms_per_sample", rep["timings"]["latency"]["after_ms_per_sample"]},
              {"gate", nullptr},
              {"pareto_size", false},
              {"pareto_macs", false},
              {"chosen", false},
              {"skipped_reason", nullptr},
              {"report", rep}};
  const double drop = -e["top1_change_pts"].get<double>();
  row["gate"] = {{"passed", drop <= 5.0}, {"value", drop}, {"threshold", 5.0}, {"margin", 5.0 - drop}};
  return row;
}

// Marks the rows on the front of (x, accuracy): no other ok row at most as large and at least as accurate,
// better in one.
void MarkPareto(json* doc, const std::string& x, const std::string& y, const std::string& flag,
                const std::string& list) {
  json& rows = (*doc)["rows"];
  (*doc)["pareto"][list] = json::array();
  for (auto& a : rows) {
    if (a["status"] != "ok") continue;
    bool dominated = false;
    for (const auto& b : rows) {
      if (&a == &b || b["status"] != "ok") continue;
      const double ax = a[x].get<double>(), bx = b[x].get<double>(), ay = a[y].get<double>(),
                   by = b[y].get<double>();
      dominated |= bx <= ax && by >= ay && (bx < ax || by > ay);
    }
    a[flag] = !dominated;
    if (!dominated) (*doc)["pareto"][list].push_back(a["recipe"]);
  }
}

json CompareDoc() {
  const json& base = Int8();
  const int64_t model_bytes = base["input"]["bytes"].get<int64_t>();
  const int64_t model_macs = base["macs"]["before"]["total"].get<int64_t>();
  json doc = {{"schema", "compress.compare/1"},
              {"command", "auto"},
              {"tool", {{"name", "compress"}, {"version", base["tool"]["version"]}}},
              {"model",
               {{"path", "models/cnn.onnx"},
                {"bytes", model_bytes},
                {"zstd_bytes", base["zstd"]["input_bytes"]},
                {"parameters", base["parameters"]["before"]["total"]},
                {"macs", model_macs}}},
              {"baseline",
               {{"top1", base["evaluation"]["top1_before"]},
                {"ms_per_sample", base["timings"]["latency"]["before_ms_per_sample"]}}},
              {"data",
               {{"calib",
                 {{"dir", Calib()},
                  {"sha256", base["calibration"]["data_sha256"]},
                  {"samples", base["calibration"]["samples"]},
                  {"calibration_runs", 1},
                  {"note", "statistics of the original model (after clean-up), shared by every recipe"}}},
                {"eval",
                 {{"dir", Calib()},
                  {"sha256", base["evaluation"]["data_sha256"]},
                  {"samples", base["evaluation"]["samples"]},
                  {"labelled", true}}},
                {"finetune", {{"dir", Calib()}, {"samples", 256}, {"teacher_runs", 1}}}}},
              {"gate", {{"metric", "top1_drop_pts"}, {"threshold", 5.0}}},
              {"objective", "size"},
              {"rows", json::array()},
              {"pareto", json::object()},
              {"chosen", "int8"},
              {"stop_reason", "every candidate ran; the smallest that passes the gate is <int8> & final"},
              {"timings", {{"total_seconds", 4.25}}}};
  doc["rows"].push_back(RowFromReport("int8", {"quantize"}, Int8(), model_bytes, model_macs));
  doc["rows"].push_back(RowFromReport("fp16", {"fp16"}, Fp16Cnn(), model_bytes, model_macs));
  doc["rows"].push_back(RowFromReport("pruned", {"prune"}, Prune(), model_bytes, model_macs));
  doc["rows"].push_back(RowFromReport("recipes/pruned-finetuned.yaml", {"prune", "finetune"}, Finetune(),
                                      model_bytes, model_macs));
  doc["rows"][3]["source"] = "file";
  json error = {{"recipe", "low-rank"},
                {"source", "preset"},
                {"passes", {"low_rank"}},
                {"status", "error"},
                {"output", nullptr},
                {"bytes", nullptr},
                {"zstd_bytes", nullptr},
                {"size_ratio", nullptr},
                {"parameters", nullptr},
                {"macs", nullptr},
                {"macs_ratio", nullptr},
                {"top1", nullptr},
                {"top1_change_pts", nullptr},
                {"agreement", nullptr},
                {"sqnr_db", nullptr},
                {"sqnr_db_infinite", false},
                {"ms_per_sample", nullptr},
                {"gate", nullptr},
                {"pareto_size", false},
                {"pareto_macs", false},
                {"chosen", false},
                {"skipped_reason", nullptr},
                {"error", "low_rank: node \"/conv1<x>\" & friends: no weight of rank > 1"}};
  doc["rows"].push_back(error);
  doc["rows"][0]["chosen"] = true;
  MarkPareto(&doc, "bytes", "top1", "pareto_size", "size");
  MarkPareto(&doc, "macs", "top1", "pareto_macs", "macs");
  return doc;
}

// The chart that follows `heading`.
std::string Chart(const std::string& html, const std::string& heading) {
  const size_t start = html.find(heading);
  EXPECT_NE(start, std::string::npos) << heading;
  if (start == std::string::npos) return "";
  return html.substr(start, html.find("</svg>", start) - start);
}

// The <g class="point ..."> of each row in the chart that follows `heading`; the line of the Pareto front
// is drawn when two points or more are on it.
std::map<int, std::string> PointClasses(const std::string& html, const std::string& heading) {
  std::map<int, std::string> classes;
  const std::string chart = Chart(html, heading);
  for (const Tag& t : ScanTags(chart)) {
    if (t.name == "g" && t.attrs.count("data-row"))
      classes[std::stoi(t.attrs.at("data-row"))] = t.attrs.at("class");
  }
  size_t front = 0;
  for (const auto& [row, cls] : classes) front += Has(cls, "front");
  EXPECT_EQ(Count(chart, "<polyline class=\"front\""), front >= 2 ? 1u : 0u) << heading;
  return classes;
}

TEST(CompareHtml, RowsChartsParetoChosenAndErrors) {
  const json doc = CompareDoc();
  ASSERT_EQ(doc["rows"].size(), 5u);
  const std::string html = FormatCompareHtml(doc);
  CheckSelfContained(html, doc);
  const Checked c = CheckNumbers(html, doc);
  EXPECT_GT(c.numbers, 300u);
  // Every ok row's figures in the table; the error row has none and shows its (escaped) error.
  for (size_t i = 0; i < 4; ++i) {
    const std::string p = "/rows/" + std::to_string(i);
    for (const char* key : {"/bytes", "/top1", "/agreement", "/macs", "/size_ratio", "/gate/value"}) {
      EXPECT_TRUE(c.pointers.count(p + key)) << p + key;
    }
    EXPECT_EQ(TextAt(c, p + "/top1"), Pct2(doc["rows"][i]["top1"].get<double>()));
    // Its own report, folded.
    EXPECT_TRUE(c.pointers.count(p + "/report/evaluation/top1_after")) << p;
    EXPECT_TRUE(c.pointers.count(p + "/report/layers/3/sqnr_db")) << p;
  }
  for (const auto& ptr : c.pointers) EXPECT_NE(ptr.rfind("/rows/4/", 0), 0u) << ptr;
  EXPECT_TRUE(Has(html, "<tr class=\"error\">"));
  EXPECT_TRUE(
      Has(html,
          "<td class=\"err\" colspan=\"10\">low_rank: node &quot;/conv1&lt;x&gt;&quot; &amp; friends: "
          "no weight of rank &gt; 1</td>"));
  // The chosen row, highlighted in the table and ringed in both charts.
  EXPECT_EQ(Count(html, "<tr class=\"chosen\">"), 1u);
  EXPECT_TRUE(Has(html, "<td><code>int8</code> <span class=\"badge warn\">chosen</span>"));
  // Pareto points marked as the document says, the error row not drawn; the original and the gate drawn.
  for (const auto& [heading, flag] : {std::make_pair("<h3>Size against", "pareto_size"),
                                      std::make_pair("<h3>MACs against", "pareto_macs")}) {
    const auto classes = PointClasses(html, heading);
    EXPECT_EQ(classes.size(), 4u) << heading;
    EXPECT_FALSE(classes.count(4)) << heading;
    size_t front = 0;
    for (const auto& [row, cls] : classes) {
      const bool on_front = doc["rows"][row][flag].get<bool>();
      front += on_front;
      EXPECT_EQ(Has(cls, "front"), on_front) << heading << " row " << row << ": " << cls;
      EXPECT_EQ(Has(cls, "chosen"), row == 0) << heading << " row " << row << ": " << cls;
    }
    EXPECT_GE(front, 1u);
  }
  EXPECT_EQ(Count(html, "<g class=\"baseline\">"), 2u);
  EXPECT_EQ(Count(html, "<g class=\"gate\">"), 2u);
  EXPECT_EQ(Count(html, "<tspan data-json=\"/gate/threshold\" data-format=\"fixed2\">5.00</tspan>"), 2u);
  EXPECT_TRUE(c.pointers.count("/baseline/top1"));
  EXPECT_TRUE(c.pointers.count("/model/bytes"));
  // The Pareto lists, the stop reason and the data.
  EXPECT_TRUE(Has(html, "Pareto front by size: "));
  EXPECT_TRUE(
      Has(html, "every candidate ran; the smallest that passes the gate is &lt;int8&gt; &amp; final"));
  EXPECT_TRUE(c.pointers.count("/data/calib/samples"));
  EXPECT_TRUE(c.pointers.count("/timings/total_seconds"));
  EXPECT_EQ(html, FormatCompareHtml(json::parse(doc.dump())));
}

TEST(CompareHtml, WithoutLabelsAccuracyIsAgreement) {
  json doc = CompareDoc();
  doc["command"] = "compare";
  doc["chosen"] = nullptr;
  doc["stop_reason"] = nullptr;
  doc["objective"] = nullptr;
  doc["baseline"]["top1"] = nullptr;
  doc["data"]["eval"]["labelled"] = false;
  doc["gate"] = {{"metric", "agreement"}, {"threshold", 0.9}};
  for (auto& row : doc["rows"]) {
    row["top1"] = nullptr;
    row["top1_change_pts"] = nullptr;
    row["chosen"] = false;
    if (row["status"] == "ok")
      row["gate"] = {{"passed", true},
                     {"value", row["agreement"]},
                     {"threshold", 0.9},
                     {"margin", row["agreement"].get<double>() - 0.9}};
  }
  MarkPareto(&doc, "bytes", "agreement", "pareto_size", "size");
  MarkPareto(&doc, "macs", "agreement", "pareto_macs", "macs");
  // An infinite SQNR row, as the document writes it.
  doc["rows"][1]["sqnr_db"] = nullptr;
  doc["rows"][1]["sqnr_db_infinite"] = true;
  const std::string html = FormatCompareHtml(doc);
  CheckSelfContained(html, doc);
  const Checked c = CheckNumbers(html, doc);
  EXPECT_TRUE(Has(html, "<h3>Size against top-1 agreement with the original</h3>"));
  EXPECT_TRUE(Has(html, "<h1>compress compare: "));
  EXPECT_FALSE(Has(html, "chosen</span>"));
  EXPECT_FALSE(Has(html, "Search stopped"));
  EXPECT_EQ(Count(html, "<tspan data-json=\"/gate/threshold\" data-format=\"pct2\">90.00%</tspan>"), 2u);
  EXPECT_EQ(TextAt(c, "/rows/1/sqnr_db"), "∞ dB");
  EXPECT_FALSE(c.pointers.count("/rows/4/sqnr_db"));
  for (const auto& [heading, flag] : {std::make_pair("<h3>Size against", "pareto_size"),
                                      std::make_pair("<h3>MACs against", "pareto_macs")}) {
    for (const auto& [row, cls] : PointClasses(html, heading)) {
      EXPECT_EQ(Has(cls, "front"), doc["rows"][row][flag].get<bool>()) << row;
    }
  }
  // FP16 agrees with the original on more samples than INT8: both on the size front, joined by its line.
  EXPECT_TRUE(doc["rows"][0]["pareto_size"].get<bool>() && doc["rows"][1]["pareto_size"].get<bool>());
  EXPECT_EQ(Count(Chart(html, "<h3>Size against"), "<polyline class=\"front\""), 1u);
  // No accuracy at all: no charts, a sentence instead.
  for (auto& row : doc["rows"]) row["agreement"] = nullptr;
  const std::string bare = FormatCompareHtml(doc);
  EXPECT_FALSE(Has(bare, "<svg class=\"chart scatter\""));
  EXPECT_TRUE(Has(bare, "the charts need evaluation data"));
  CheckNumbers(bare, doc);
}

// ---------------------------------------------------------------------------------------------------
// The pages `compress compare` and `compress auto` write themselves (--report-html), each checked against
// the document the same run wrote (--report).

struct Written {
  json doc;
  std::string html;
};

// Runs compress with `args` plus --report and --report-html into `dir`.
Written RunWithReports(const TempDir& dir, std::vector<std::string> args) {
  args.insert(args.end(), {"--report", dir / "doc.json", "--report-html", dir / "doc.html", "-q"});
  const auto r = RunCompress(args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  Written w;
  const std::string text = ReadBytes(dir / "doc.json");
  w.doc = text.empty() ? json::object() : json::parse(text);
  w.html = ReadBytes(dir / "doc.html");
  return w;
}

// The <tr> elements of the recipes table, header left out: one per row of the document (no row here has
// figures and a skipped reason, the only case with a second line).
std::vector<std::string> TableRows(const std::string& html) {
  std::vector<std::string> rows;
  const size_t start = html.find("<table class=\"rows\">");
  EXPECT_NE(start, std::string::npos);
  if (start == std::string::npos) return rows;
  const std::string table = html.substr(start, html.find("</table>", start) - start);
  for (size_t pos = table.find("<tr", 1); pos != std::string::npos;) {
    const size_t next = table.find("<tr", pos + 1);
    rows.push_back(table.substr(pos, next == std::string::npos ? std::string::npos : next - pos));
    pos = next;
  }
  if (!rows.empty()) rows.erase(rows.begin());  // the header
  return rows;
}

// What both commands' pages must be: the formatter's page of the document written beside it, self-contained,
// every number the document's; each ok row's figures and its report; the charts' points as the flags say.
Checked CheckWrittenPage(const Written& w, size_t rows) {
  EXPECT_EQ(w.doc.value("schema", ""), "compress.compare/1");
  EXPECT_EQ(w.html, FormatCompareHtml(w.doc));
  CheckSelfContained(w.html, w.doc);
  const Checked c = CheckNumbers(w.html, w.doc);
  EXPECT_EQ(w.doc["rows"].size(), rows);
  EXPECT_EQ(TableRows(w.html).size(), w.doc["rows"].size());
  for (size_t i = 0; i < w.doc["rows"].size(); ++i) {
    if (w.doc["rows"][i]["status"] != "ok") continue;
    const std::string p = "/rows/" + std::to_string(i);
    for (const char* key : {"/bytes", "/zstd_bytes", "/macs", "/top1", "/agreement", "/sqnr_db",
                            "/gate/value", "/report/output/bytes", "/report/evaluation/top1_after"}) {
      EXPECT_TRUE(c.pointers.count(p + key)) << p + key;
    }
  }
  for (const auto& [heading, flag] : {std::make_pair("<h3>Size against", "pareto_size"),
                                      std::make_pair("<h3>MACs against", "pareto_macs")}) {
    for (const auto& [row, cls] : PointClasses(w.html, heading)) {
      EXPECT_EQ(w.doc["rows"][row]["status"], "ok") << heading << " row " << row;
      EXPECT_EQ(Has(cls, "front"), w.doc["rows"][row][flag].get<bool>()) << heading << " row " << row;
      EXPECT_EQ(Has(cls, "chosen"), w.doc["rows"][row]["chosen"].get<bool>()) << heading << " row " << row;
    }
  }
  return c;
}

TEST(CompareHtml, PageTheCompareCommandWrites) {
  TempDir dir;
  const Written w = RunWithReports(
      dir, {"compare", Cnn(), "--recipe", "fp16", "--recipe", "int8", "--recipe", "int8-dynamic", "--calib",
            Calib(), "--eval", Calib(), "--max-accuracy-drop", "5", "--out-dir", dir / "out"});
  const Checked c = CheckWrittenPage(w, 3);
  EXPECT_EQ(w.doc["command"], "compare");
  EXPECT_TRUE(Has(w.html, "<h1>compress compare: "));
  for (const auto& row : w.doc["rows"]) EXPECT_EQ(row["status"], "ok") << row["recipe"];
  // Nothing chosen, nothing skipped or failed; the gate on both charts.
  EXPECT_FALSE(Has(w.html, "chosen</span>"));
  for (const std::string& row : TableRows(w.html)) EXPECT_EQ(row.rfind("<tr>", 0), 0u) << row;
  EXPECT_EQ(Count(w.html, "<g class=\"gate\">"), 2u);
  EXPECT_EQ(PointClasses(w.html, "<h3>Size against").size(), 3u);
  EXPECT_TRUE(c.pointers.count("/data/calib/calibration_runs"));
  EXPECT_TRUE(c.pointers.count("/baseline/top1"));
}

TEST(CompareHtml, PageTheAutoCommandWrites) {
  TempDir dir;
  const Written w =
      RunWithReports(dir, {"auto", SourcePath("models/mlp.onnx"), "--calib", Calib(), "--eval", Calib(),
                           "--max-accuracy-drop", "1", "--out-dir", dir / "out", "-o", dir / "best.onnx"});
  const json& doc = w.doc;
  ASSERT_TRUE(doc.contains("rows") && doc["rows"].is_array());
  const Checked c = CheckWrittenPage(w, doc["rows"].size());
  EXPECT_EQ(doc["command"], "auto");
  ASSERT_TRUE(doc["chosen"].is_string()) << doc["stop_reason"];
  const std::vector<std::string> rows = TableRows(w.html);
  ASSERT_EQ(rows.size(), doc["rows"].size());
  size_t skipped = 0, chosen = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    const json& row = doc["rows"][i];
    const std::string p = "/rows/" + std::to_string(i) + "/";
    const std::string recipe = "<code>" + EscapeHtml(row["recipe"].get<std::string>()) + "</code>";
    EXPECT_TRUE(Has(rows[i], recipe)) << rows[i];
    if (row["status"] == "skipped") {
      // Ruled out by the search: its reason in place of the figures, greyed, not an error.
      ++skipped;
      ASSERT_TRUE(row["skipped_reason"].is_string()) << row.dump();
      EXPECT_EQ(rows[i].rfind("<tr class=\"skipped\">", 0), 0u) << rows[i];
      EXPECT_TRUE(Has(rows[i], "<td><span class=\"badge skip\">skipped</span></td>")) << rows[i];
      EXPECT_TRUE(Has(rows[i], "<td class=\"why\" colspan=\"10\">not run: " +
                                   EscapeHtml(row["skipped_reason"].get<std::string>()) + "</td>"))
          << rows[i];
      EXPECT_FALSE(Has(rows[i], "class=\"err\"")) << rows[i];
      EXPECT_FALSE(Has(rows[i], "badge bad")) << rows[i];
      for (const auto& ptr : c.pointers) EXPECT_NE(ptr.rfind(p, 0), 0u) << ptr;
      continue;
    }
    EXPECT_EQ(row["status"], "ok") << row.dump();
    const bool is_chosen = row["recipe"] == doc["chosen"];
    EXPECT_EQ(row["chosen"].get<bool>(), is_chosen) << row["recipe"];
    EXPECT_EQ(Has(rows[i], "<span class=\"badge warn\">chosen</span>"), is_chosen) << rows[i];
    EXPECT_EQ(rows[i].rfind("<tr class=\"chosen\">", 0) == 0, is_chosen) << rows[i];
    chosen += is_chosen;
    // The gate's verdict on every row that ran.
    EXPECT_TRUE(Has(rows[i], row["gate"]["passed"].get<bool>() ? ">passed<" : ">failed<")) << rows[i];
  }
  // The search on the MLP rules the other precisions out once INT8 holds the gate.
  EXPECT_GE(skipped, 3u);
  EXPECT_EQ(chosen, 1u);
  EXPECT_EQ(Count(w.html, "<tr class=\"skipped\">"), skipped);
  EXPECT_EQ(Count(w.html, "<tr class=\"chosen\">"), 1u);
  EXPECT_FALSE(Has(w.html, "<tr class=\"error\">"));
  // The chosen recipe in its card and the reason the search stopped.
  EXPECT_TRUE(
      Has(w.html, "<div class=\"v\"><code>" + EscapeHtml(doc["chosen"].get<std::string>()) + "</code>"));
  EXPECT_TRUE(Has(w.html, "<p><b>Search stopped:</b> " + EscapeHtml(doc["stop_reason"].get<std::string>())));
  // Ringed in both charts.
  for (const char* heading : {"<h3>Size against", "<h3>MACs against"}) {
    size_t ringed = 0;
    for (const auto& [row, cls] : PointClasses(w.html, heading)) ringed += Has(cls, "chosen");
    EXPECT_EQ(ringed, 1u) << heading;
  }
}

TEST(HtmlTool, WritesThePageTheSchemaAsks) {
  TempDir dir;
  // Small documents of both schemas (the pages themselves are checked above).
  const json report = EdgeReport();
  const json compare = {{"schema", "compress.compare/1"},
                        {"command", "compare"},
                        {"model", {{"path", "m.onnx"}, {"bytes", 100}, {"macs", 10}}},
                        {"rows",
                         {{{"recipe", "int8"},
                           {"status", "ok"},
                           {"bytes", 30},
                           {"macs", 10},
                           {"agreement", 0.99},
                           {"pareto_size", true},
                           {"pareto_macs", true}}}}};
  testing::WriteBytes(dir / "r.json", report.dump());
  testing::WriteBytes(dir / "c.json", compare.dump());
  testing::WriteBytes(dir / "x.json", R"({"schema": "compress.other/9"})");
  auto r = testing::RunCommand({COMPRESS_HTML_TOOL, dir / "r.json", dir / "r.html"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(ReadBytes(dir / "r.html"), FormatReportHtml(report));
  r = testing::RunCommand({COMPRESS_HTML_TOOL, dir / "c.json", dir / "c.html"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(ReadBytes(dir / "c.html"), FormatCompareHtml(compare));
  r = testing::RunCommand({COMPRESS_HTML_TOOL, dir / "x.json", dir / "x.html"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_TRUE(Has(r.err, "compress.other/9")) << r.err;
  r = testing::RunCommand({COMPRESS_HTML_TOOL, dir / "missing.json", dir / "m.html"});
  EXPECT_EQ(r.exit_code, 4) << r.err;
  r = testing::RunCommand({COMPRESS_HTML_TOOL, dir / "r.json"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_FALSE(FileExists(dir / "x.html"));
}

}  // namespace
}  // namespace compress
