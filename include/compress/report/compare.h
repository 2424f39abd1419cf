// Terminal tables of `compress compare` and `compress auto` (their document is described in
// docs/compare.md) and of `compress compare --list-presets`.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace compress {

// One line per row: recipe, size, zstd size, parameters, MACs, top-1 and its change (or agreement), SQNR,
// latency, gate verdict; '*' marks the size Pareto front, '>' the chosen recipe; failed rows show their
// error; then what the calibration ran and, for auto, why the search stopped.
std::string FormatCompareTable(const nlohmann::json& doc);

// `list`: [{"name", "description", "recipe": Recipe::ToJson()}]: each preset with its passes and options.
std::string FormatPresets(const nlohmann::json& list);

}  // namespace compress
