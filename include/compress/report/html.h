// Self-contained HTML pages for people: the report of one run (schema compress.report/1, the JSON of
// BuildReport, docs/report.schema.json) and the document of `compress compare` / `compress auto` (schema
// compress.compare/1).
//
// One file each, to open or attach as it is: inline CSS and inline SVG charts, no script at all, and no
// URL of any kind (no link, stylesheet, font or image is fetched; the SVG carries no xmlns either). Every
// string taken from the JSON (paths, node names, messages) is HTML-escaped, with invalid UTF-8 and control
// characters replaced by U+FFFD. A section whose data is absent from the JSON (null, missing or empty) is
// left out. The page depends on nothing but the JSON: the same JSON gives the same bytes.
//
// Every number the page shows stands alone in an element that says where it comes from:
//   <span data-json="/evaluation/top1_after" data-format="pct2">91.60%</span>
// data-json is an RFC 6901 JSON pointer into the formatted document (in the compare page, a recipe's own
// report is under /rows/<i>/report), and the element's text is the value at that pointer written in
// data-format, one of (printf conventions, C locale; N is a single digit 0-6):
//   int     an integer with "," between thousands: 5902592 -> "5,902,592"
//   bytes   a byte count in binary units with one decimal ("512 B" below 1 KiB, then "68.0 KiB", "1.5 MiB",
//           "2.0 GiB"); the exact count is the element's title attribute: title="69,626 bytes"
//   fixedN  "%.Nf": fixed4 of 4.60027 -> "4.6003"
//   pctN    a fraction as a percentage, "%.Nf%%" of value*100: pct2 of 0.916 -> "91.60%"
//   ptsN    percentage points, always signed, "%+.Nf pt": pts2 of -0.4 -> "-0.40 pt"
//   ratioN  "%.Nfx": ratio2 of 3.3569 -> "3.36x"
//   dbN     decibels, "%.Nf dB"; null -> "∞ dB" (the report writes an infinite SQNR, identical outputs, as
//           null; the compare document does so with "sqnr_db_infinite": true beside it)
//   json    the value as JSON writes it (recipe options): 99.999, 30000000000.0
// Numbers inside charts follow the same rule (an SVG <text> or <tspan> with data-json); axis tick labels
// are generic and carry none. A value that cannot be written in its format (null, a string) is shown as
// "—" with no data-json.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace compress {

// The page of one run's report (schema compress.report/1): sizes and parameters per dtype, accuracy and
// fidelity, per-layer SQNR (bar chart), the pruning, low-rank and precision tables, training loss per
// epoch (line chart), the accuracy gate, MACs and zstd sizes, the recipe and the passes that ran.
// Error(kInvalidInput) when `report` is not a JSON object.
std::string FormatReportHtml(const nlohmann::json& report);

// The page of a compare/auto document (schema compress.compare/1): the table of recipes (failed ones with
// their error), size against accuracy and MACs against accuracy (scatter charts with the Pareto front, the
// original model, the gate threshold and the chosen recipe), the stop reason of `auto`, and each recipe's
// own report folded under the table. Accuracy is top-1 when the data is labelled, agreement otherwise.
// Error(kInvalidInput) when `doc` is not a JSON object.
std::string FormatCompareHtml(const nlohmann::json& doc);

}  // namespace compress
