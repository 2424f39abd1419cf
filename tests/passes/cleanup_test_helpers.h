// Helpers for the clean-up pass tests: running a pass by name, running a model through the executor,
// comparing outputs, and checking a model with the ONNX checker.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "compress/exec/executor.h"
#include "compress/io/onnx_io.h"
#include "compress/ir/verify.h"
#include "compress/passes/pass.h"
#include "support/test_support.h"

namespace compress::testing {

// Passes that only move values around (renames, Constant nodes to initializers, folding with the very
// kernels the executor runs) feed the same bytes to the same kernels: outputs must be bit-identical.
constexpr double kBitIdentical = 0.0;

// Runs the named pass with `options` (validated and completed with defaults, as the pipeline does) and
// verifies the result.
inline PassContext RunPass(Model& model, const std::string& name, const nlohmann::json& options = nullptr) {
  const PassInfo* info = FindPass(name);
  if (info == nullptr) throw std::runtime_error("no pass " + name);
  auto pass = info->create(ValidatePassOptions(*info, options, "test"));
  PassContext ctx;
  pass->Run(model, ctx);
  VerifyModel(model);
  return ctx;
}

inline int64_t Counter(const PassContext& ctx, const std::string& key) {
  auto it = ctx.counters().find(key);
  return it == ctx.counters().end() ? 0 : it->second;
}

inline std::vector<Tensor> RunModel(const Model& model, const std::vector<Tensor>& inputs) {
  ExecutorOptions options;
  options.threads = 1;
  Executor exec(model, options);
  return exec.Run(inputs);
}

// Largest absolute difference over float32 outputs; infinity when the outputs differ in number, type or
// shape, so that a mismatch never passes as "close".
inline double MaxAbsDiff(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  if (a.size() != b.size()) return INFINITY;
  double worst = 0;
  for (size_t k = 0; k < a.size(); ++k) {
    if (a[k].dtype() != b[k].dtype() || a[k].dims() != b[k].dims()) return INFINITY;
    if (a[k].dtype() != DType::kFloat) {
      if (!a[k].SameContent(b[k])) return INFINITY;
      continue;
    }
    for (int64_t i = 0; i < a[k].numel(); ++i) {
      worst = std::max(worst, static_cast<double>(std::fabs(a[k].data<float>()[i] - b[k].data<float>()[i])));
    }
  }
  return worst;
}

inline int CountOps(const Graph& g, const std::string& op_type) {
  return static_cast<int>(
      std::count_if(g.nodes.begin(), g.nodes.end(), [&](const Node& n) { return n.op_type == op_type; }));
}

inline std::vector<std::string> OpTypes(const Graph& g) {
  std::vector<std::string> ops;
  for (const auto& n : g.nodes) ops.push_back(n.op_type);
  return ops;
}

inline std::vector<std::string> InitializerNames(const Graph& g) {
  std::vector<std::string> names;
  for (const auto& t : g.initializers) names.push_back(t.name());
  return names;
}

// Uniform values in [-1, 1) from a fixed seed.
inline Tensor RandomFloats(std::vector<int64_t> dims, uint32_t seed, std::string name = {}) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  Tensor t(DType::kFloat, std::move(dims), std::move(name));
  for (int64_t i = 0; i < t.numel(); ++i) t.mutable_data<float>()[i] = dist(gen);
  return t;
}

inline std::vector<float> Values(const Tensor& t) {
  return std::vector<float>(t.data<float>(), t.data<float>() + t.numel());
}

inline std::vector<int64_t> Int64Values(const Tensor& t) {
  return std::vector<int64_t>(t.data<int64_t>(), t.data<int64_t>() + t.numel());
}

// The ONNX checker's verdict on the model, saved to a temporary file.
inline CheckResult CheckWithOnnx(const Model& model) {
  TempDir dir;
  SaveModel(model, dir / "m.onnx");
  return CheckModelFile(dir / "m.onnx");
}

inline Model EmptyModel(int64_t opset = 17, int64_t ir_version = 8) {
  Model m;
  m.ir_version = ir_version;
  m.opset_imports = {{"", opset}};
  m.producer_name = "compress-tests";
  m.graph.name = "g";
  return m;
}

inline ValueInfo FloatValue(const std::string& name, const std::vector<Dim>& dims) {
  return {name, TypeInfo::Tensor(DType::kFloat, dims), ""};
}

// A float32 graph output of unknown shape, for models the executor runs but the ONNX checker does not see
// (the checker wants a shape on every main-graph output).
inline ValueInfo FloatOutput(const std::string& name) {
  ValueInfo v{name, TypeInfo::Tensor(DType::kFloat, {}), ""};
  v.type.has_shape = false;
  return v;
}

inline std::vector<Dim> Fixed(const std::vector<int64_t>& dims) {
  std::vector<Dim> out;
  for (int64_t d : dims) out.push_back(Dim::Fixed(d));
  return out;
}

inline Node MakeNode(std::string op, std::vector<std::string> inputs, std::vector<std::string> outputs,
                     std::vector<Attribute> attrs = {}, std::string name = {}) {
  Node n;
  n.name = std::move(name);
  n.op_type = std::move(op);
  n.inputs = std::move(inputs);
  n.outputs = std::move(outputs);
  n.attributes = std::move(attrs);
  return n;
}

inline Node ConstantNode(const std::string& output, Tensor value) {
  return MakeNode("Constant", {}, {output}, {Attribute::FromTensor("value", std::move(value))});
}

inline Attribute GraphAttr(const std::string& name, Graph g) {
  Attribute a;
  a.name = name;
  a.type = AttrType::kGraph;
  a.graphs.push_back(std::move(g));
  return a;
}

}  // namespace compress::testing
