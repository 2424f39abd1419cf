// Reverse-mode differentiation over the model graph.
//
// The forward pass runs on the executor's kernels; every value the pass produces is kept. The backward
// pass walks the nodes in reverse order and applies one rule per operator (BackwardRegistry): given the
// node's inputs, outputs and the gradients of its outputs, a rule returns the gradients of the inputs
// that need one. Gradients of a value read by several nodes are summed in node order, so the result does
// not depend on the thread count.
//
// Only nodes on a path from a trainable parameter to a value with a gradient seed (the loss inputs) are
// differentiated; integer and boolean values (shapes, indices, masks) carry no gradient. A node on such a
// path whose operator has no rule is an Error(kInvalidInput) naming the node, raised when the Backprop is
// built, before any training step.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "compress/exec/executor.h"
#include "compress/ir/graph.h"

namespace compress::train {

// What a backward rule sees: the forward node, its inputs and outputs as computed in the forward pass,
// the gradients of its outputs (nullptr where no gradient flows), and which inputs need a gradient.
class GradContext {
 public:
  GradContext(const Node& node, int64_t opset, std::vector<const Tensor*> inputs,
              std::vector<const Tensor*> outputs, std::vector<const Tensor*> output_grads,
              std::vector<bool> wanted, ThreadPool* pool);

  const Node& node() const { return node_; }
  int64_t opset() const { return opset_; }
  size_t num_inputs() const { return inputs_.size(); }
  size_t num_outputs() const { return outputs_.size(); }
  const Tensor* input(size_t i) const { return i < inputs_.size() ? inputs_[i] : nullptr; }
  const Tensor& required_input(size_t i) const;
  const Tensor& output(size_t i) const;
  // nullptr when no gradient reaches output i.
  const Tensor* output_grad(size_t i) const { return i < output_grads_.size() ? output_grads_[i] : nullptr; }
  bool wanted(size_t i) const { return i < wanted_.size() && wanted_[i]; }
  // Sets the gradient of input i (same dtype and shape as the input); ignored when not wanted.
  void SetInputGrad(size_t i, Tensor grad);
  // A zero gradient for input i, for rules that accumulate into it.
  Tensor& InputGrad(size_t i);
  std::vector<Tensor>& input_grads() { return input_grads_; }
  ThreadPool* pool() const { return pool_; }

  [[noreturn]] void Fail(const std::string& message) const;

 private:
  const Node& node_;
  int64_t opset_;
  std::vector<const Tensor*> inputs_, outputs_, output_grads_;
  std::vector<bool> wanted_;
  std::vector<Tensor> input_grads_;
  ThreadPool* pool_;
};

using BackwardFn = std::function<void(GradContext&)>;

struct BackwardRule {
  std::string op_type;  // default ONNX domain only
  int64_t since_version = 1;
  int64_t until_version = 1000;
  BackwardFn fn;
  // Inputs that can carry a gradient (the others are shapes, indices, masks, ...); empty: all.
  std::vector<int> differentiable_inputs;
};

class BackwardRegistry {
 public:
  void Add(BackwardRule rule);
  const BackwardRule* Find(const Node& node, int64_t opset) const;
  std::vector<std::string> OpTypes() const;
  static const BackwardRegistry& Default();

 private:
  std::vector<BackwardRule> rules_;
};

// The rule families (one file each under src/train/grad_*.cc).
void AddMatMulGrads(BackwardRegistry& r);
void AddConvGrads(BackwardRegistry& r);
void AddElementwiseGrads(BackwardRegistry& r);
void AddNormGrads(BackwardRegistry& r);
void AddPoolGrads(BackwardRegistry& r);
void AddShapeGrads(BackwardRegistry& r);
void AddReduceGrads(BackwardRegistry& r);
void AddQuantGrads(BackwardRegistry& r);

// Values of one forward pass, by name (inputs, parameters, constants and every node output).
using ValueMap = std::map<std::string, Tensor>;

struct BackpropOptions {
  int threads = 0;
  ThreadPool* pool = nullptr;
  bool reference_kernels = false;  // forward on the reference kernels (gradient checks)
  bool profile = false;            // time every backward rule (see Backprop::BackwardProfile)
};

// Time spent in the backward rules of one operator type, summed over Backward calls.
struct BackwardOpTime {
  std::string op_type;
  int64_t calls = 0;
  double seconds = 0;
};

class Backprop {
 public:
  // `params`: initializer names to differentiate (float or double). `seeds`: the values that will receive
  // gradient seeds (graph outputs or intermediate values). Throws Error(kInvalidInput) naming the first
  // node on a parameter -> seed path without a backward rule, or an unknown parameter / seed.
  Backprop(const Model& model, std::vector<std::string> params, std::vector<std::string> seeds,
           const BackpropOptions& options = {});
  ~Backprop();

  const std::vector<std::string>& params() const { return params_; }
  const std::vector<std::string>& seeds() const { return seeds_; }
  // Data inputs of the model, in order (the parameters are not among them).
  const std::vector<ValueInfo>& data_inputs() const { return data_inputs_; }

  // Runs the model on `data` (in data_inputs() order) with the parameters `param_values` (in params()
  // order). Returns every value of the pass; the graph outputs are among them.
  ValueMap Forward(const std::vector<Tensor>& data, const std::vector<Tensor>& param_values);

  // Gradients of the parameters (in params() order) given the forward values and a gradient per seed
  // (same order as seeds(); an empty tensor means no gradient for that seed).
  std::vector<Tensor> Backward(const ValueMap& values, const std::vector<Tensor>& seed_grads);

  // Nodes that the backward pass differentiates, in forward order (for tests and messages).
  std::vector<std::string> DifferentiatedNodes() const;

  // With BackpropOptions::profile: seconds per operator type over every Backward call so far, largest first.
  std::vector<BackwardOpTime> BackwardProfile() const;

  // The initializers that fine-tuning trains: float32 / float64 tensors of more than one element read at
  // a differentiable input of some node on a path to a seed (weights, biases, norm scales, embeddings;
  // not shapes, scalar constants, or Resize scales). In graph initializer order.
  static std::vector<std::string> TrainableParameters(const Model& model, const std::vector<std::string>& seeds);

  // "Op (node)" for every node on a parameter -> seed path without a backward rule; empty when all have.
  static std::vector<std::string> MissingRules(const Model& model, const std::vector<std::string>& params,
                                               const std::vector<std::string>& seeds);

 private:
  struct Plan;
  std::unique_ptr<Plan> plan_;
  std::unique_ptr<Executor> executor_;
  std::unique_ptr<ThreadPool> own_pool_;
  ThreadPool* pool_ = nullptr;
  std::vector<std::string> params_, seeds_;
  std::vector<ValueInfo> data_inputs_;
  bool profile_ = false;
  std::map<std::string, BackwardOpTime> profile_times_;
};

}  // namespace compress::train
