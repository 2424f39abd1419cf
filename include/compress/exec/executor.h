// Runs a model's main graph on the CPU.
//
// Built once per model: the graph is sorted, Constant nodes are evaluated (and every node whose inputs are
// all constant, e.g. the DequantizeLinear of a weight), and one kernel is built per node (the registry's fast variant unless reference kernels are requested). Shapes are computed at run
// time, so a symbolic batch dimension takes any size. Each intermediate value is released right after its
// last reader. Kernels parallelise over the pool in fixed-size chunks, so results do not depend on the
// thread count. Nodes with subgraphs (If, Loop) also read the values their subgraphs take from the
// enclosing graph: those are extra inputs of the node's step, after its declared ones, in the order of
// OuterScopeInputs(). Element-wise nodes that follow a Conv, MatMul or Gemm and read nothing computed after it
// (bias, residual Add, Relu, the GELU chain, ...) are fused into that kernel's output loop in runs without a
// ValueObserver, with bit-identical results (src/exec/fusion.h); observed runs compute every value.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "compress/exec/kernel.h"
#include "compress/exec/thread_pool.h"
#include "compress/ir/graph.h"

namespace compress {

struct ExecutorOptions {
  int threads = 0;                 // 0: one per core
  bool reference_kernels = false;  // run the plain reference kernels only
  // Run the DequantizeLinear -> Conv/Gemm/MatMul -> [Relu] -> QuantizeLinear groups of QDQ models in integers
  // (when the CPU has a SIMD integer GEMM), as a runtime would; off: the float-simulated graph.
  bool integer_kernels = true;
  ThreadPool* pool = nullptr;      // run on this pool instead of an own one (subgraphs of If / Loop)
};

// Called with every value a node produces, in execution order (calibration, debugging).
using ValueObserver = std::function<void(const std::string& name, const Tensor& value)>;

class Executor {
 public:
  // Throws Error(kInvalidInput) naming the first node whose operator has no kernel.
  explicit Executor(const Model& model, const ExecutorOptions& options = {});
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // The model's real inputs (not initializers) and its outputs, in order.
  const std::vector<ValueInfo>& inputs() const { return inputs_; }
  const std::vector<ValueInfo>& outputs() const { return outputs_; }
  int threads() const { return pool_->threads(); }
  // Values known before any run (initializers and Constant node outputs), by name.
  std::vector<std::pair<std::string, Tensor>> Constants() const;

  // Runs the graph; `inputs` in the order of inputs(). Inputs whose dtype, rank or fixed dims differ from
  // the declaration are an Error(kInvalidInput) naming the input.
  std::vector<Tensor> Run(const std::vector<Tensor>& inputs, const ValueObserver* observer = nullptr);

  // Quantised groups run in integers (see ExecutorOptions::integer_kernels), in runs without an observer.
  size_t quantized_groups() const;
  // quantized_groups() plus the integer operators (MatMulInteger, ConvInteger, QLinearMatMul, QLinearConv)
  // when their integer kernels run: whether the model's INT8 arithmetic is real here, not simulated.
  size_t integer_products() const;

  // Nodes fused into the kernel of a node before them (runs without an observer compute them there).
  size_t fused_nodes() const;

  // Per-op-type time spent in kernels since profiling was enabled (for `compress bench --profile`).
  struct OpTime {
    std::string op_type;
    int64_t calls = 0;
    double seconds = 0;
  };
  void EnableProfiling(bool on);
  std::vector<OpTime> Profile() const;  // slowest first

  // "Op (opset N)" for each operator of the model without a kernel; empty when all are supported.
  static std::vector<std::string> UnsupportedOps(const Model& model);

 private:
  struct Step;
  struct QuantGroup;
  // Who reads and who writes each slot, and which slots are graph outputs (for the build-time planning).
  struct Dataflow {
    std::vector<std::vector<size_t>> readers;  // per slot: steps reading it
    std::vector<int> producer;                 // per slot: the step writing it, -1 for inputs and constants
    std::vector<bool> graph_output;
  };
  Dataflow Flow() const;
  void ValidateInput(size_t i, const Tensor& t) const;
  // Runs a step whose inputs are all constants once, now, and records its outputs as constants; false
  // (nothing changed) when it cannot (random ops, subgraphs, an error left for run time).
  bool FoldConstantStep(Step& step);
  // Finds the QDQ groups that can run in integers and attaches each to the step that dequantises its input.
  void PlanQuantGroups(const Model& model);
  // Finds the element-wise chains that follow Conv / MatMul / Gemm kernels and marks them for fusion.
  void PlanFusion();

  std::unique_ptr<ThreadPool> own_pool_;
  ThreadPool* pool_ = nullptr;
  std::vector<ValueInfo> inputs_, outputs_;
  std::vector<int> input_slots_, output_slots_;
  std::vector<Tensor> constants_;       // per slot: the constant value (empty tensor if not constant)
  std::vector<bool> is_constant_;
  std::vector<int> folded_;  // slots computed at build time by FoldConstantStep, in order
  std::unordered_map<int, Node> folded_from_;  // the node that computed each of them
  std::vector<std::string> slot_names_;
  std::vector<std::unique_ptr<Step>> steps_;
  size_t num_slots_ = 0;
  bool profiling_ = false;
  std::vector<double> step_seconds_;
  std::vector<int64_t> step_calls_;
};

}  // namespace compress
