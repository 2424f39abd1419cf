// `compress inspect`: what a model is made of, as JSON (for scripts) or text (for people).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "compress/eval/macs.h"
#include "compress/ir/graph.h"

namespace compress {

// CountParameters (the model's parameters) is declared in compress/eval/macs.h, included above.

// Builds the inspection document. `path` is used for the file size and the ONNX checker.
// Schema (version 1):
//   {"schema": "compress.inspect/1", "file", "file_bytes", "ir_version", "producer": {"name","version"},
//    "domain", "model_version", "opsets": [{"domain","version"}], "metadata": {k: v},
//    "inputs"/"outputs": [{"name","dtype","shape": [int|string|null]}], "nodes", "op_types": {op: count},
//    "parameters", "bytes_by_dtype": {dtype: bytes}, "elements_by_dtype": {dtype: count},
//    "largest_tensors": [{"name","kind","dtype","shape","bytes"}] (ten at most, largest first),
//    "checker": {"ok": bool, "message": string},
//    "macs": MacsJson(CountMacs(model), 10)}
nlohmann::json InspectModel(const Model& model, const std::string& path);

// A MAC count as JSON: {"total", "unknown_nodes", "batch_divisor", "nodes": [{"node","op","graph","macs"
// (null when unknown),"counted","why" (only when unknown)}]}. With `top` > 0, "nodes" is replaced by
// "top_nodes": the `top` counted nodes with the most MACs (ties by order), and "unknown" lists the counted
// nodes whose count is unknown.
nlohmann::json MacsJson(const MacsCount& macs, size_t top = 0);

// Human-readable rendering of InspectModel's document.
std::string FormatInspection(const nlohmann::json& doc);

}  // namespace compress
