// Control flow: If and Loop. Each subgraph is planned once, when the kernel is built, as an Executor of
// its own whose inputs are the subgraph's declared inputs followed by the outer-scope values it reads
// (at any depth); the enclosing executor hands those values to the node after its declared inputs.
#include <cstring>
#include <limits>

#include "compress/exec/executor.h"
#include "common.h"
#include "kernels.h"

namespace compress::kernels {
namespace {

// A subgraph planned as an executor, and where each of its outer-scope values is among the node's inputs.
struct Subgraph {
  std::unique_ptr<Executor> executor;
  size_t declared_inputs = 0;
  std::vector<size_t> outer_input_index;  // per outer-scope value: index into the node's inputs
  size_t num_outputs = 0;
  std::vector<DType> output_types;        // declared element types (kUndefined when unknown)
};

Subgraph PlanSubgraph(const KernelInfo& info, const std::string& attr_name) {
  const Node& n = *info.node;
  const Attribute* a = n.FindAttr(attr_name);
  if (a == nullptr || a->graphs.empty()) {
    ThrowInvalid("node " + n.Describe() + ": " + n.op_type + " has no graph attribute '" + attr_name + "'");
  }
  const Graph& body = a->graphs[0];
  // The node's outer-scope values, in the order the executor passes them.
  const std::vector<std::string> node_outer = OuterScopeInputs(n);
  Node single;
  single.attributes.push_back(*a);
  const std::vector<std::string> outer = OuterScopeInputs(single);

  Model sub;
  if (info.model != nullptr) {
    sub.ir_version = info.model->ir_version;
    sub.opset_imports = info.model->opset_imports;
  }
  sub.graph = body;
  Subgraph s;
  s.declared_inputs = body.inputs.size();
  s.num_outputs = body.outputs.size();
  for (const auto& v : body.outputs) {
    s.output_types.push_back(v.type.kind == TypeInfo::Kind::kTensor ? v.type.elem_type : DType::kUndefined);
  }
  // Types are not checked on the way in: loop-carried values may change shape from one iteration to the next.
  for (auto& v : sub.graph.inputs) v.type = TypeInfo();
  for (const auto& name : outer) {
    ValueInfo v;
    v.name = name;
    sub.graph.inputs.push_back(v);
    const auto it = std::find(node_outer.begin(), node_outer.end(), name);
    s.outer_input_index.push_back(n.inputs.size() + static_cast<size_t>(it - node_outer.begin()));
  }
  ExecutorOptions options;
  options.reference_kernels = info.reference_kernels;
  options.pool = info.pool;
  s.executor = std::make_unique<Executor>(sub, options);
  return s;
}

std::vector<Tensor> RunSubgraph(KernelContext& ctx, Subgraph& s, std::vector<Tensor> inputs) {
  for (size_t k : s.outer_input_index) {
    const Tensor* t = ctx.input(k);
    if (t == nullptr) ctx.Fail("an outer-scope value of its subgraph is missing");
    inputs.push_back(*t);
  }
  return s.executor->Run(inputs);
}

bool ScalarBool(KernelContext& ctx, const Tensor& t, const char* what) {
  if (t.dtype() != DType::kBool || t.numel() != 1) {
    ctx.Fail(std::string(what) + " must be a single bool, got " + DTypeName(t.dtype()) + ShapeToString(t.dims()));
  }
  return *static_cast<const uint8_t*>(t.raw()) != 0;
}

class IfKernel : public Kernel {
 public:
  explicit IfKernel(const KernelInfo& info)
      : then_(PlanSubgraph(info, "then_branch")), else_(PlanSubgraph(info, "else_branch")) {}

  void Run(KernelContext& ctx) override {
    const bool cond = ScalarBool(ctx, ctx.required_input(0), "the condition");
    Subgraph& branch = cond ? then_ : else_;
    std::vector<Tensor> outs = RunSubgraph(ctx, branch, {});
    if (outs.size() < ctx.num_outputs()) {
      ctx.Fail(std::string(cond ? "then_branch" : "else_branch") + " has " + std::to_string(outs.size()) +
               " outputs, the node expects " + std::to_string(ctx.num_outputs()));
    }
    for (size_t k = 0; k < ctx.num_outputs(); ++k) ctx.SetOutput(k, std::move(outs[k]));
  }

 private:
  Subgraph then_, else_;
};

// Stacks equally shaped tensors along a new leading axis.
Tensor Stack(KernelContext& ctx, const std::vector<Tensor>& parts, DType empty_type) {
  if (parts.empty()) return Tensor(empty_type == DType::kUndefined ? DType::kFloat : empty_type, {0});
  const Tensor& first = parts[0];
  if (first.dtype() == DType::kString) ctx.Fail("string scan outputs are not supported");
  std::vector<int64_t> dims = first.dims();
  dims.insert(dims.begin(), static_cast<int64_t>(parts.size()));
  Tensor out(first.dtype(), dims);
  const size_t bytes = DTypeStorageBytes(first.dtype(), first.numel());
  char* dst = static_cast<char*>(out.mutable_raw());
  for (size_t i = 0; i < parts.size(); ++i) {
    if (parts[i].dims() != first.dims() || parts[i].dtype() != first.dtype()) {
      ctx.Fail("scan output changes from " + ShapeToString(first.dims()) + " to " + ShapeToString(parts[i].dims()) +
               " between iterations");
    }
    if (bytes > 0) std::memcpy(dst + i * bytes, parts[i].raw(), bytes);
  }
  return out;
}

// Loop: inputs M (optional trip count), cond (optional), carried values; body (iter, cond, carried...) ->
// (cond, carried..., scan outputs...); outputs: final carried values, then scan outputs stacked.
class LoopKernel : public Kernel {
 public:
  explicit LoopKernel(const KernelInfo& info) : body_(PlanSubgraph(info, "body")) {
    num_carried_ = info.node->inputs.size() >= 2 ? info.node->inputs.size() - 2 : 0;
    if (body_.declared_inputs != num_carried_ + 2 || body_.num_outputs < num_carried_ + 1) {
      ThrowInvalid("node " + info.node->Describe() + ": Loop body has " + std::to_string(body_.declared_inputs) +
                   " inputs and " + std::to_string(body_.num_outputs) + " outputs for " +
                   std::to_string(num_carried_) + " loop-carried values");
    }
  }

  void Run(KernelContext& ctx) override {
    int64_t trips = std::numeric_limits<int64_t>::max();
    if (const Tensor* m = ctx.input(0)) {
      if (m->dtype() != DType::kInt64 || m->numel() != 1) ctx.Fail("M must be a single int64");
      trips = m->data<int64_t>()[0];
    }
    bool cond = true;
    if (const Tensor* c = ctx.input(1)) cond = ScalarBool(ctx, *c, "cond");
    std::vector<Tensor> carried;
    for (size_t k = 0; k < num_carried_; ++k) carried.push_back(ctx.required_input(2 + k));
    const size_t num_scan = body_.num_outputs - 1 - num_carried_;
    std::vector<std::vector<Tensor>> scans(num_scan);
    for (int64_t i = 0; i < trips && cond; ++i) {
      std::vector<Tensor> in;
      in.push_back(Tensor::FromVector<int64_t>({}, {i}));
      Tensor c(DType::kBool, {});
      *static_cast<uint8_t*>(c.mutable_raw()) = 1;
      in.push_back(std::move(c));
      for (auto& t : carried) in.push_back(std::move(t));
      std::vector<Tensor> outs = RunSubgraph(ctx, body_, std::move(in));
      cond = ScalarBool(ctx, outs[0], "the body's condition output");
      for (size_t k = 0; k < num_carried_; ++k) carried[k] = std::move(outs[1 + k]);
      for (size_t k = 0; k < num_scan; ++k) scans[k].push_back(std::move(outs[1 + num_carried_ + k]));
    }
    for (size_t k = 0; k < num_carried_ && k < ctx.num_outputs(); ++k) ctx.SetOutput(k, std::move(carried[k]));
    for (size_t k = 0; k < num_scan && num_carried_ + k < ctx.num_outputs(); ++k) {
      ctx.SetOutput(num_carried_ + k, Stack(ctx, scans[k], body_.output_types[1 + num_carried_ + k]));
    }
  }

 private:
  Subgraph body_;
  size_t num_carried_ = 0;
};

void AddControl(KernelRegistry& r, const std::string& op, int64_t since, KernelFactory f) {
  KernelEntry e;
  e.op_type = op;
  e.since_version = since;
  e.until_version = 1000;
  e.factory = std::move(f);
  e.float16_via_float32 = false;
  r.Add(std::move(e));
}

}  // namespace

void RegisterControlKernels(KernelRegistry& r) {
  AddControl(r, "If", 1, [](const KernelInfo& info) { return std::make_unique<IfKernel>(info); });
  AddControl(r, "Loop", 1, [](const KernelInfo& info) { return std::make_unique<LoopKernel>(info); });
}

}  // namespace compress::kernels
