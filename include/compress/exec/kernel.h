// Kernels: one object per graph node, built once (attributes parsed, constant weights pre-packed) and run
// many times. Kernels are found in a registry keyed by (domain, op type, opset range); every op has a plain
// reference kernel, and some have a fast variant that tests compare against the reference.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "compress/ir/graph.h"

namespace compress {

class ThreadPool;

// What a kernel may look at when it is built.
struct KernelInfo {
  const Node* node = nullptr;
  int64_t opset = 0;  // version of the node's domain imported by the model
  // Per node input: the tensor when it is an initializer or a Constant output (known before any run).
  std::vector<const Tensor*> constant_inputs;
  const Tensor* constant_input(size_t i) const { return i < constant_inputs.size() ? constant_inputs[i] : nullptr; }
  // For kernels that build subgraph executors (If, Loop): the model (opset imports), the kernel choice
  // and the pool the enclosing executor runs on.
  const Model* model = nullptr;
  bool reference_kernels = false;
  ThreadPool* pool = nullptr;
};

// Element-wise nodes that the executor fused behind a kernel (Conv + Add + Relu, MatMul + bias + GELU, ...):
// the kernel applies them to each region of its output right after computing it, while it is in cache.
class Epilogue {
 public:
  virtual ~Epilogue() = default;
  // y[0, count) holds elements [offset, offset + count) of output 0 (float32, row-major); replaces them with
  // the fused nodes' result. Computes the same bits as running the nodes one by one.
  virtual void Apply(float* y, int64_t offset, int64_t count) const = 0;
};

// What a kernel gets when it runs.
class KernelContext {
 public:
  KernelContext(const Node& node, std::vector<const Tensor*> inputs, size_t num_outputs, ThreadPool& pool);

  const Node& node() const { return node_; }
  size_t num_inputs() const { return inputs_.size(); }
  // nullptr when the input is omitted ("" in the node) or beyond the node's inputs. A node with subgraphs
  // gets the outer-scope values its subgraphs read after its declared inputs (OuterScopeInputs order).
  const Tensor* input(size_t i) const { return i < inputs_.size() ? inputs_[i] : nullptr; }
  // Throws Error(kInvalidInput) naming the node when the input is missing.
  const Tensor& required_input(size_t i) const;
  size_t num_outputs() const { return outputs_.size(); }

  // True when this node is the last reader of input i and the executor hands its buffer over: a kernel
  // that writes an output of the same type and shape may take it (TakeInput) and compute in place.
  bool input_donated(size_t i) const { return i < donated_.size() && donated_[i] != nullptr; }
  // The donated input i, moved out (valid only when input_donated(i)); input(i) must not be used after.
  Tensor TakeInput(size_t i);
  void set_donated(std::vector<Tensor*> donated) { donated_ = std::move(donated); }

  // Allocates output i. Contents are zero-initialised.
  Tensor& Output(size_t i, DType dtype, std::vector<int64_t> dims);
  // Allocates output i with its bytes unset, for kernels that write every element (numeric types only).
  // The zero fill costs as much as the work itself in light kernels.
  Tensor& OutputForWrite(size_t i, DType dtype, std::vector<int64_t> dims);
  // Sets output i to an existing tensor (e.g. sharing an input's buffer for Reshape / Identity).
  void SetOutput(size_t i, Tensor t);
  std::vector<Tensor>& outputs() { return outputs_; }

  ThreadPool& pool() { return pool_; }

  // The fused element-wise nodes to apply to output 0, when the executor fused some behind this kernel and
  // they fit an output of these dims (float32); nullptr otherwise. A kernel that gets one must Apply it to
  // every element of output 0 exactly once. Kernels that never call it run unfused.
  const Epilogue* TakeEpilogue(const std::vector<int64_t>& dims);
  // Set by the executor; whether a kernel took it.
  void set_epilogue(std::function<const Epilogue*(const std::vector<int64_t>&)> bind) { bind_epilogue_ = std::move(bind); }
  bool epilogue_taken() const { return epilogue_taken_; }

  // Error(kInvalidInput) prefixed with the node's description.
  [[noreturn]] void Fail(const std::string& message) const;

 private:
  const Node& node_;
  std::vector<const Tensor*> inputs_;
  std::vector<Tensor> outputs_;
  std::vector<Tensor*> donated_;
  ThreadPool& pool_;
  std::function<const Epilogue*(const std::vector<int64_t>&)> bind_epilogue_;
  bool epilogue_taken_ = false;
};

class Kernel {
 public:
  virtual ~Kernel() = default;
  virtual void Run(KernelContext& ctx) = 0;
  // True for kernels that call KernelContext::TakeEpilogue: the executor fuses element-wise nodes behind
  // them.
  virtual bool AcceptsEpilogue() const { return false; }
};

// A kernel from a callable, for kernels whose only build-time work is parsing attributes.
std::unique_ptr<Kernel> MakeKernel(std::function<void(KernelContext&)> run);

using KernelFactory = std::function<std::unique_ptr<Kernel>(const KernelInfo&)>;

enum class KernelVariant { kReference, kFast };

struct KernelEntry {
  std::string domain;  // "" for the default ONNX domain
  std::string op_type;
  int64_t since_version = 1;   // first opset version this kernel implements
  int64_t until_version = 1000;  // last one (inclusive)
  KernelVariant variant = KernelVariant::kReference;
  KernelFactory factory;
  // The executor converts float16 (and bfloat16) inputs to float32 before running the kernel and converts
  // float32 outputs back when any input was float16. Off for kernels that handle float16 themselves (Cast,
  // Shape, ...).
  bool float16_via_float32 = true;
};

class KernelRegistry {
 public:
  void Add(KernelEntry entry);
  // The fast variant when there is one (unless reference_only), else the reference; nullptr if unsupported.
  const KernelEntry* Find(const std::string& domain, const std::string& op_type, int64_t opset,
                          bool reference_only = false) const;
  // Every (domain, op type) with at least one kernel, "domain::Op" for other domains; sorted.
  std::vector<std::string> OpTypes() const;
  const std::vector<KernelEntry>& entries() const { return entries_; }

  // All built-in kernels.
  static const KernelRegistry& Default();

 private:
  std::vector<KernelEntry> entries_;
};

}  // namespace compress
