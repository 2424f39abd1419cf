#include "compress/train/autodiff.h"

#include <algorithm>
#include <chrono>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "compress/ir/verify.h"
#include "compress/util/error.h"
#include "train/grad_common.h"

namespace compress::train {

GradContext::GradContext(const Node& node, int64_t opset, std::vector<const Tensor*> inputs,
                         std::vector<const Tensor*> outputs, std::vector<const Tensor*> output_grads,
                         std::vector<bool> wanted, ThreadPool* pool)
    : node_(node),
      opset_(opset),
      inputs_(std::move(inputs)),
      outputs_(std::move(outputs)),
      output_grads_(std::move(output_grads)),
      wanted_(std::move(wanted)),
      input_grads_(inputs_.size()),
      pool_(pool) {}

const Tensor& GradContext::required_input(size_t i) const {
  if (input(i) == nullptr) Fail("input " + std::to_string(i) + " is missing");
  return *inputs_[i];
}

const Tensor& GradContext::output(size_t i) const {
  if (i >= outputs_.size() || outputs_[i] == nullptr) Fail("output " + std::to_string(i) + " is missing");
  return *outputs_[i];
}

void GradContext::SetInputGrad(size_t i, Tensor grad) {
  if (!wanted(i)) return;
  const Tensor& in = required_input(i);
  // Integer values (QuantizeLinear's output) carry a real-valued gradient: that of the value treated as a
  // real number, which the straight-through estimator passes on.
  const bool dtype_ok = grad.dtype() == in.dtype() || (!IsFloatingPoint(in.dtype()) && IsFloatingPoint(grad.dtype()));
  if (grad.dims() != in.dims() || !dtype_ok) {
    Fail("backward rule gave input " + std::to_string(i) + " a gradient of shape " + ShapeToString(grad.dims()) +
         " for a value of shape " + ShapeToString(in.dims()));
  }
  input_grads_[i] = std::move(grad);
}

Tensor& GradContext::InputGrad(size_t i) {
  if (input_grads_[i].dtype() == DType::kUndefined) {
    const Tensor& in = required_input(i);
    input_grads_[i] = Tensor(IsFloatingPoint(in.dtype()) ? in.dtype() : DType::kFloat, in.dims());
  }
  return input_grads_[i];
}

void GradContext::Fail(const std::string& message) const {
  throw Error(ErrorKind::kInvalidInput, "backward of node " + node_.Describe() + ": " + message);
}

void BackwardRegistry::Add(BackwardRule rule) { rules_.push_back(std::move(rule)); }

const BackwardRule* BackwardRegistry::Find(const Node& node, int64_t opset) const {
  if (!node.IsDefaultDomain()) return nullptr;
  for (const auto& r : rules_) {
    if (r.op_type == node.op_type && opset >= r.since_version && opset <= r.until_version) return &r;
  }
  return nullptr;
}

std::vector<std::string> BackwardRegistry::OpTypes() const {
  std::set<std::string> s;
  for (const auto& r : rules_) s.insert(r.op_type);
  return {s.begin(), s.end()};
}

const BackwardRegistry& BackwardRegistry::Default() {
  static const BackwardRegistry registry = [] {
    BackwardRegistry r;
    AddMatMulGrads(r);
    AddConvGrads(r);
    AddElementwiseGrads(r);
    AddNormGrads(r);
    AddPoolGrads(r);
    AddShapeGrads(r);
    AddReduceGrads(r);
    AddQuantGrads(r);
    return r;
  }();
  return registry;
}

namespace {

// Operators whose outputs are integers or booleans whatever their inputs: no gradient passes them.
bool NonDifferentiableOp(const Node& n) {
  static const std::unordered_set<std::string> ops = {
      "Shape", "Size", "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "ArgMax", "ArgMin",
      "NonZero", "Not", "And", "Or", "Xor", "IsNaN", "IsInf", "Range", "ConstantOfShape", "EyeLike",
      "RandomNormalLike", "RandomUniformLike", "Bernoulli", "Multinomial", "Floor", "Ceil", "Round", "Sign"};
  if (!n.IsDefaultDomain()) return false;
  if (ops.count(n.op_type)) return true;
  if (n.op_type == "Cast") {
    const int64_t to = n.AttrInt("to", 1);
    return to != static_cast<int64_t>(DType::kFloat) && to != static_cast<int64_t>(DType::kDouble) &&
           to != static_cast<int64_t>(DType::kFloat16) && to != static_cast<int64_t>(DType::kBFloat16);
  }
  return false;
}

bool IsDifferentiableInput(const BackwardRule* rule, size_t i) {
  if (rule == nullptr || rule->differentiable_inputs.empty()) return true;
  return std::find(rule->differentiable_inputs.begin(), rule->differentiable_inputs.end(), static_cast<int>(i)) !=
         rule->differentiable_inputs.end();
}

struct Analysis {
  std::vector<size_t> order;                 // topological order of graph nodes
  std::vector<const BackwardRule*> rules;    // per graph node
  std::unordered_set<std::string> requires;  // depends on a parameter through differentiable inputs
  std::unordered_set<std::string> needed;    // a seed depends on it through differentiable inputs
  std::vector<bool> differentiated;          // per graph node
};

Analysis Analyze(const Model& model, const std::vector<std::string>& params, const std::vector<std::string>& seeds) {
  const Graph& g = model.graph;
  Analysis a;
  a.order = TopologicalOrder(g);
  a.rules.assign(g.nodes.size(), nullptr);
  a.differentiated.assign(g.nodes.size(), false);
  const auto& registry = BackwardRegistry::Default();
  for (const auto& p : params) a.requires.insert(p);
  for (const size_t i : a.order) {
    const Node& n = g.nodes[i];
    a.rules[i] = registry.Find(n, model.OpsetVersion(n.domain));
    if (NonDifferentiableOp(n)) continue;
    bool any = false;
    for (size_t k = 0; k < n.inputs.size(); ++k) {
      if (!n.inputs[k].empty() && a.requires.count(n.inputs[k]) && IsDifferentiableInput(a.rules[i], k)) any = true;
    }
    // Values an If/Loop/Scan body reads from the enclosing graph are inputs of the node too: a weight used
    // only inside a branch still reaches the output through it.
    for (const auto& c : OuterScopeInputs(n)) any = any || a.requires.count(c) > 0;
    if (!any) continue;
    for (const auto& o : n.outputs) {
      if (!o.empty()) a.requires.insert(o);
    }
    // TopK's indices, MaxPool's indices, Dropout's mask: integer / boolean outputs.
    if ((n.op_type == "TopK" || n.op_type == "MaxPool" || n.op_type == "Dropout") && n.outputs.size() > 1) {
      a.requires.erase(n.outputs[1]);
    }
  }
  for (const auto& s : seeds) a.needed.insert(s);
  for (auto it = a.order.rbegin(); it != a.order.rend(); ++it) {
    const Node& n = g.nodes[*it];
    bool live = false;
    for (const auto& o : n.outputs) {
      if (!o.empty() && a.requires.count(o) && a.needed.count(o)) live = true;
    }
    if (!live) continue;
    a.differentiated[*it] = true;
    for (size_t k = 0; k < n.inputs.size(); ++k) {
      if (!n.inputs[k].empty() && a.requires.count(n.inputs[k]) && IsDifferentiableInput(a.rules[*it], k)) {
        a.needed.insert(n.inputs[k]);
      }
    }
    for (const auto& c : OuterScopeInputs(n)) {
      if (a.requires.count(c)) a.needed.insert(c);
    }
  }
  return a;
}

void CheckNames(const Model& model, const std::vector<std::string>& params, const std::vector<std::string>& seeds) {
  const Graph& g = model.graph;
  std::unordered_set<std::string> produced;
  for (const auto& n : g.nodes) {
    for (const auto& o : n.outputs) produced.insert(o);
  }
  for (const auto& in : g.inputs) produced.insert(in.name);
  for (const auto& p : params) {
    const Tensor* t = g.FindInitializer(p);
    if (t == nullptr) ThrowInvalid("trainable parameter '" + p + "' is not an initializer of the model");
    if (t->dtype() != DType::kFloat && t->dtype() != DType::kDouble) {
      ThrowInvalid("trainable parameter '" + p + "' is " + DTypeName(t->dtype()) + ", expected float32 or float64");
    }
  }
  for (const auto& s : seeds) {
    if (!produced.count(s)) ThrowInvalid("loss value '" + s + "' is not a value of the model");
  }
}

}  // namespace

struct Backprop::Plan {
  Model model;  // the parameters are graph inputs here
  Analysis analysis;
  std::vector<int> param_input_index;  // per executor input: index into params, or -1 for data
};

std::vector<std::string> Backprop::MissingRules(const Model& model, const std::vector<std::string>& params,
                                                const std::vector<std::string>& seeds) {
  const Analysis a = Analyze(model, params, seeds);
  std::vector<std::string> missing;
  for (const size_t i : a.order) {
    if (a.differentiated[i] && a.rules[i] == nullptr) missing.push_back(model.graph.nodes[i].Describe());
  }
  return missing;
}

std::vector<std::string> Backprop::TrainableParameters(const Model& model, const std::vector<std::string>& seeds) {
  std::vector<std::string> candidates;
  for (const auto& t : model.graph.initializers) {
    if ((t.dtype() == DType::kFloat || t.dtype() == DType::kDouble) && t.numel() > 1) candidates.push_back(t.name());
  }
  const Analysis a = Analyze(model, candidates, seeds);
  std::vector<std::string> out;
  for (const auto& c : candidates) {
    if (a.needed.count(c)) out.push_back(c);
  }
  return out;
}

Backprop::Backprop(const Model& model, std::vector<std::string> params, std::vector<std::string> seeds,
                   const BackpropOptions& options)
    : params_(std::move(params)), seeds_(std::move(seeds)) {
  CheckNames(model, params_, seeds_);
  plan_ = std::make_unique<Plan>();
  plan_->model = model;
  Graph& g = plan_->model.graph;
  plan_->analysis = Analyze(plan_->model, params_, seeds_);
  for (const size_t i : plan_->analysis.order) {
    if (plan_->analysis.differentiated[i] && plan_->analysis.rules[i] == nullptr) {
      const Node& n = g.nodes[i];
      ThrowInvalid("node " + n.Describe() + ": operator " + n.op_type + " (opset " +
                   std::to_string(plan_->model.OpsetVersion(n.domain)) +
                   ") has no backward rule, so the model cannot be fine-tuned through it");
    }
  }
  // Parameters become graph inputs, so that kernels do not pre-pack them and every step sees new values.
  for (const auto& p : params_) {
    auto it = std::find_if(g.initializers.begin(), g.initializers.end(), [&](const Tensor& t) { return t.name() == p; });
    std::vector<Dim> dims;
    for (const int64_t d : it->dims()) dims.push_back(Dim::Fixed(d));
    const TypeInfo type = TypeInfo::Tensor(it->dtype(), dims);
    g.initializers.erase(it);
    auto in = std::find_if(g.inputs.begin(), g.inputs.end(), [&](const ValueInfo& v) { return v.name == p; });
    if (in != g.inputs.end()) {
      in->type = type;
    } else {
      ValueInfo v;
      v.name = p;
      v.type = type;
      g.inputs.push_back(v);
    }
  }
  profile_ = options.profile;
  if (options.pool != nullptr) {
    pool_ = options.pool;
  } else {
    own_pool_ = std::make_unique<ThreadPool>(options.threads);
    pool_ = own_pool_.get();
  }
  ExecutorOptions eo;
  eo.pool = pool_;
  eo.reference_kernels = options.reference_kernels;
  executor_ = std::make_unique<Executor>(plan_->model, eo);
  for (const auto& in : executor_->inputs()) {
    const auto it = std::find(params_.begin(), params_.end(), in.name);
    if (it == params_.end()) {
      plan_->param_input_index.push_back(-1);
      data_inputs_.push_back(in);
    } else {
      plan_->param_input_index.push_back(static_cast<int>(it - params_.begin()));
    }
  }
}

Backprop::~Backprop() = default;

ValueMap Backprop::Forward(const std::vector<Tensor>& data, const std::vector<Tensor>& param_values) {
  if (data.size() != data_inputs_.size()) {
    ThrowInvalid("training step got " + std::to_string(data.size()) + " inputs, the model takes " +
                 std::to_string(data_inputs_.size()));
  }
  if (param_values.size() != params_.size()) ThrowInternal("Backprop::Forward: wrong number of parameters");
  std::vector<Tensor> inputs;
  size_t d = 0;
  ValueMap values;
  for (size_t i = 0; i < plan_->param_input_index.size(); ++i) {
    const int p = plan_->param_input_index[i];
    inputs.push_back(p < 0 ? data[d++] : param_values[static_cast<size_t>(p)]);
    values[executor_->inputs()[i].name] = inputs.back();
  }
  for (auto& [name, t] : executor_->Constants()) values[name] = t;
  const ValueObserver observer = [&](const std::string& name, const Tensor& t) { values[name] = t; };
  executor_->Run(inputs, &observer);
  return values;
}

std::vector<Tensor> Backprop::Backward(const ValueMap& values, const std::vector<Tensor>& seed_grads) {
  if (seed_grads.size() != seeds_.size()) ThrowInternal("Backprop::Backward: wrong number of seed gradients");
  const Graph& g = plan_->model.graph;
  const Analysis& a = plan_->analysis;
  std::unordered_map<std::string, Tensor> grads;
  auto accumulate = [&](const std::string& name, Tensor grad) {
    auto it = grads.find(name);
    if (it == grads.end()) {
      grads.emplace(name, std::move(grad));
    } else {
      // Rules may hand on a gradient's storage (Identity, Reshape, Add): mutable_data() copies shared storage
      // before AddInto writes.
      AddInto(it->second, grad);
    }
  };
  for (size_t i = 0; i < seeds_.size(); ++i) {
    if (seed_grads[i].dtype() == DType::kUndefined) continue;
    const auto v = values.find(seeds_[i]);
    if (v == values.end()) ThrowInternal("no forward value for loss value '" + seeds_[i] + "'");
    if (v->second.dims() != seed_grads[i].dims()) {
      ThrowInvalid("gradient for '" + seeds_[i] + "' has shape " + ShapeToString(seed_grads[i].dims()) +
                   ", the value has " + ShapeToString(v->second.dims()));
    }
    accumulate(seeds_[i], seed_grads[i]);
  }
  auto value = [&](const std::string& name) -> const Tensor* {
    if (name.empty()) return nullptr;
    const auto it = values.find(name);
    return it == values.end() ? nullptr : &it->second;
  };
  for (auto it = a.order.rbegin(); it != a.order.rend(); ++it) {
    if (!a.differentiated[*it]) continue;
    const Node& n = g.nodes[*it];
    std::vector<const Tensor*> outs, out_grads;
    bool any = false;
    for (const auto& o : n.outputs) {
      outs.push_back(value(o));
      const auto gi = o.empty() ? grads.end() : grads.find(o);
      out_grads.push_back(gi == grads.end() ? nullptr : &gi->second);
      any = any || gi != grads.end();
    }
    if (!any) continue;
    std::vector<const Tensor*> ins;
    std::vector<bool> wanted;
    for (size_t k = 0; k < n.inputs.size(); ++k) {
      ins.push_back(value(n.inputs[k]));
      wanted.push_back(!n.inputs[k].empty() && a.requires.count(n.inputs[k]) && a.needed.count(n.inputs[k]) &&
                       IsDifferentiableInput(a.rules[*it], k));
    }
    GradContext ctx(n, plan_->model.OpsetVersion(n.domain), ins, outs, out_grads, wanted, pool_);
    if (profile_) {
      const auto t0 = std::chrono::steady_clock::now();
      a.rules[*it]->fn(ctx);
      BackwardOpTime& t = profile_times_[n.op_type];
      t.op_type = n.op_type;
      ++t.calls;
      t.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    } else {
      a.rules[*it]->fn(ctx);
    }
    // The outputs' gradients are no longer needed: free them early.
    for (const auto& o : n.outputs) {
      if (!o.empty() && std::find(seeds_.begin(), seeds_.end(), o) == seeds_.end()) grads.erase(o);
    }
    for (size_t k = 0; k < n.inputs.size(); ++k) {
      if (!wanted[k] || ctx.input_grads()[k].dtype() == DType::kUndefined) continue;
      if (ctx.input_grads()[k].dims() != ins[k]->dims()) {
        ctx.Fail("backward rule gave input " + std::to_string(k) + " a gradient of shape " +
                 ShapeToString(ctx.input_grads()[k].dims()) + " for a value of shape " + ShapeToString(ins[k]->dims()));
      }
      accumulate(n.inputs[k], std::move(ctx.input_grads()[k]));
    }
  }
  std::vector<Tensor> out;
  for (const auto& p : params_) {
    const auto it = grads.find(p);
    if (it != grads.end()) {
      out.push_back(it->second);
    } else {
      const Tensor* v = value(p);
      out.push_back(v != nullptr ? Tensor(v->dtype(), v->dims()) : Tensor());
    }
  }
  return out;
}

std::vector<BackwardOpTime> Backprop::BackwardProfile() const {
  std::vector<BackwardOpTime> out;
  for (const auto& [op, t] : profile_times_) out.push_back(t);
  std::stable_sort(out.begin(), out.end(), [](const BackwardOpTime& a, const BackwardOpTime& b) { return a.seconds > b.seconds; });
  return out;
}

std::vector<std::string> Backprop::DifferentiatedNodes() const {
  std::vector<std::string> out;
  for (const size_t i : plan_->analysis.order) {
    if (plan_->analysis.differentiated[i]) out.push_back(plan_->model.graph.nodes[i].Describe());
  }
  return out;
}

}  // namespace compress::train
