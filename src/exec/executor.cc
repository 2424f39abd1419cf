#include "compress/exec/executor.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <unordered_map>

#include "compress/ir/verify.h"
#include "compress/util/error.h"
#include "compress/util/half.h"
#include "fusion.h"
#include "kernels/kernels.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace compress {

struct Executor::Step {
  const Node* node = nullptr;
  Node node_copy;
  const KernelEntry* entry = nullptr;
  std::unique_ptr<Kernel> kernel;
  std::vector<int> inputs;   // slot per input, -1 when omitted
  std::vector<int> outputs;  // slot per output, -1 when not wanted
  std::vector<int> release;  // slots whose last reader is this step
  std::vector<bool> donate;  // per input: released here and read once, so its buffer may be reused
  // Per input: the float32 copy of a float16 / bfloat16 constant, made once, for kernels that compute in
  // float32 (empty otherwise).
  std::vector<Tensor> float_constants;
  // Fusion, for runs without an observer: the element-wise chain fused behind this step's kernel, the slots
  // of its extra inputs, the slot its result goes to and the steps it stands for; `fused_away` marks those.
  std::unique_ptr<fusion::Chain> chain;
  std::vector<int> chain_extras;
  int chain_output = -1;
  std::vector<size_t> absorbed;
  bool fused_away = false;
  // Quantised groups (see PlanQuantGroups) whose input this step dequantises: in fused runs they run right
  // after it, and the step itself only when something else reads its output.
  std::vector<std::unique_ptr<QuantGroup>> groups;
  bool only_feeds_groups = false;
};

struct Executor::QuantGroup {
  Node node;  // the Conv / Gemm / MatMul, for messages
  std::unique_ptr<Kernel> kernel;
  int x_slot = -1, out_slot = -1;
  size_t head = 0;  // step index of the Conv / Gemm / MatMul (profiling)
};

namespace {

bool IsHalfLike(DType t) { return t == DType::kFloat16 || t == DType::kBFloat16; }

// Elements per parallel chunk of a conversion.
constexpr int64_t kConvertGrain = 1 << 15;

Tensor ToFloat32(const Tensor& t, ThreadPool& pool) {
  Tensor out = Tensor::Uninitialized(DType::kFloat, t.dims());
  out.set_name(t.name());
  const uint16_t* src = static_cast<const uint16_t*>(t.raw());
  float* dst = out.mutable_data<float>();
  const bool bf = t.dtype() == DType::kBFloat16;
  pool.ParallelFor(t.numel(), kConvertGrain, [&](int64_t begin, int64_t end) {
    if (!bf) return HalfToFloatArray(src + begin, dst + begin, end - begin);
    for (int64_t i = begin; i < end; ++i) dst[i] = BFloat16ToFloat(src[i]);
  });
  return out;
}

Tensor FromFloat32(const Tensor& t, DType target, ThreadPool& pool) {
  Tensor out = Tensor::Uninitialized(target, t.dims());
  out.set_name(t.name());
  const float* src = t.data<float>();
  uint16_t* dst = static_cast<uint16_t*>(out.mutable_raw());
  const bool bf = target == DType::kBFloat16;
  pool.ParallelFor(t.numel(), kConvertGrain, [&](int64_t begin, int64_t end) {
    if (!bf) return FloatToHalfArray(src + begin, dst + begin, end - begin);
    for (int64_t i = begin; i < end; ++i) dst[i] = FloatToBFloat16(src[i]);
  });
  return out;
}

// The value of a Constant node, from whichever attribute holds it.
Tensor ConstantValue(const Node& n) {
  for (const auto& a : n.attributes) {
    if (a.name == "value" && !a.tensors.empty()) return a.tensors[0];
    if (a.name == "value_float") return Tensor::FromVector<float>({}, {a.f});
    if (a.name == "value_floats") return Tensor::FromVector<float>({static_cast<int64_t>(a.floats.size())}, a.floats);
    if (a.name == "value_int") return Tensor::FromVector<int64_t>({}, {a.i});
    if (a.name == "value_ints") return Tensor::FromVector<int64_t>({static_cast<int64_t>(a.ints.size())}, a.ints);
    if (a.name == "value_string") return Tensor::FromStrings({}, {a.s});
    if (a.name == "value_strings") {
      return Tensor::FromStrings({static_cast<int64_t>(a.strings.size())}, a.strings);
    }
    if (a.name == "sparse_value" && !a.sparse_tensors.empty()) {
      const SparseTensor& s = a.sparse_tensors[0];
      Tensor dense(s.values.dtype(), s.dims);
      const size_t elem = DTypeStorageBytes(s.values.dtype(), 1);
      const int64_t nnz = s.values.numel();
      const int64_t* idx = s.indices.data<int64_t>();
      const bool coords = s.indices.rank() == 2;
      const auto strides = [&] {
        std::vector<int64_t> st(s.dims.size(), 1);
        for (size_t i = s.dims.size(); i-- > 1;) st[i - 1] = st[i] * s.dims[i];
        return st;
      }();
      for (int64_t k = 0; k < nnz; ++k) {
        int64_t lin = 0;
        if (coords) {
          for (size_t d = 0; d < s.dims.size(); ++d) lin += idx[k * static_cast<int64_t>(s.dims.size()) + static_cast<int64_t>(d)] * strides[d];
        } else {
          lin = idx[k];
        }
        std::memcpy(static_cast<char*>(dense.mutable_raw()) + static_cast<size_t>(lin) * elem,
                    static_cast<const char*>(s.values.raw()) + static_cast<size_t>(k) * elem, elem);
      }
      return dense;
    }
  }
  ThrowInvalid("node " + n.Describe() + ": Constant has no value attribute");
}

bool IsConstantNode(const Node& n) { return n.op_type == "Constant" && n.IsDefaultDomain(); }

// Every run allocates and frees the same intermediate buffers. With glibc's defaults, buffers above the
// mmap threshold (128 KiB at first) are fresh mappings each time and freed heap tops are returned to the
// system, so every run pays page faults and page clearing on all of its large values (a fifth of the time
// of a small transformer at batch 64). Serving them from the heap, and keeping freed memory, makes the
// next run reuse the same pages.
void KeepLargeBuffersInHeap() {
#if defined(__GLIBC__)
  static std::once_flag once;
  std::call_once(once, [] {
    mallopt(M_MMAP_THRESHOLD, 256 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
  });
#endif
}

}  // namespace

std::vector<std::string> Executor::UnsupportedOps(const Model& model) {
  std::set<std::string> missing;
  const KernelRegistry& registry = KernelRegistry::Default();
  ForEachGraph(model.graph, [&](const Graph& g) {
    for (const auto& n : g.nodes) {
      if (IsConstantNode(n)) continue;
      const int64_t opset = model.OpsetVersion(n.domain);
      if (registry.Find(n.domain, n.op_type, opset) == nullptr) {
        missing.insert((n.IsDefaultDomain() ? n.op_type : n.domain + "::" + n.op_type) + " (opset " +
                       std::to_string(opset) + ")");
      }
    }
  });
  return {missing.begin(), missing.end()};
}

Executor::Executor(const Model& model, const ExecutorOptions& options) {
  KeepLargeBuffersInHeap();
  if (options.pool != nullptr) {
    pool_ = options.pool;
  } else {
    own_pool_ = std::make_unique<ThreadPool>(options.threads);
    pool_ = own_pool_.get();
  }
  const Graph& g = model.graph;
  const KernelRegistry& registry = KernelRegistry::Default();
  std::unordered_map<std::string, int> slot_of;
  auto new_slot = [&](const std::string& name) {
    const int s = static_cast<int>(slot_names_.size());
    slot_names_.push_back(name);
    constants_.emplace_back();
    is_constant_.push_back(false);
    slot_of[name] = s;
    return s;
  };
  for (const auto& t : g.initializers) {
    const int s = new_slot(t.name());
    constants_[static_cast<size_t>(s)] = t;
    is_constant_[static_cast<size_t>(s)] = true;
  }
  for (const auto& sp : g.sparse_initializers) {
    Node fake;
    fake.op_type = "Constant";
    Attribute a;
    a.name = "sparse_value";
    a.type = AttrType::kSparseTensor;
    a.sparse_tensors.push_back(sp);
    fake.attributes.push_back(a);
    const int s = new_slot(sp.values.name());
    constants_[static_cast<size_t>(s)] = ConstantValue(fake);
    is_constant_[static_cast<size_t>(s)] = true;
  }
  for (const auto* v : g.RealInputs()) {
    inputs_.push_back(*v);
    input_slots_.push_back(new_slot(v->name));
  }
  for (const size_t i : TopologicalOrder(g)) {
    const Node& n = g.nodes[i];
    if (IsConstantNode(n)) {
      const int s = new_slot(n.outputs.at(0));
      constants_[static_cast<size_t>(s)] = ConstantValue(n);
      is_constant_[static_cast<size_t>(s)] = true;
      continue;
    }
    auto step = std::make_unique<Step>();
    step->node_copy = n;
    step->node = &step->node_copy;
    const int64_t opset = model.OpsetVersion(n.domain);
    step->entry = registry.Find(n.domain, n.op_type, opset, options.reference_kernels);
    if (step->entry == nullptr) {
      ThrowInvalid("node " + n.Describe() + ": operator " + n.op_type + " of opset " + std::to_string(opset) +
                   (n.IsDefaultDomain() ? "" : " (domain " + n.domain + ")") + " is not supported by the executor");
    }
    KernelInfo info;
    info.node = step->node;
    info.opset = opset;
    info.model = &model;
    info.reference_kernels = options.reference_kernels;
    info.pool = pool_;
    step->float_constants.resize(n.inputs.size());
    for (size_t k = 0; k < n.inputs.size(); ++k) {
      const std::string& in = n.inputs[k];
      if (in.empty()) {
        step->inputs.push_back(-1);
        info.constant_inputs.push_back(nullptr);
        continue;
      }
      auto it = slot_of.find(in);
      if (it == slot_of.end()) ThrowInvalid("node " + n.Describe() + " reads '" + in + "', which nothing produces");
      step->inputs.push_back(it->second);
      const Tensor* constant =
          is_constant_[static_cast<size_t>(it->second)] ? &constants_[static_cast<size_t>(it->second)] : nullptr;
      if (constant != nullptr && step->entry->float16_via_float32 && IsHalfLike(constant->dtype())) {
        step->float_constants[k] = ToFloat32(*constant, *pool_);
        step->float_constants[k].set_name(constant->name());
        constant = &step->float_constants[k];
      }
      info.constant_inputs.push_back(constant);
    }
    for (const auto& in : OuterScopeInputs(n)) {
      auto it = slot_of.find(in);
      if (it == slot_of.end()) {
        ThrowInvalid("node " + n.Describe() + ": a subgraph reads '" + in + "', which nothing in scope produces");
      }
      step->inputs.push_back(it->second);
    }
    step->kernel = step->entry->factory(info);
    for (const auto& out : n.outputs) step->outputs.push_back(out.empty() ? -1 : new_slot(out));
    if (FoldConstantStep(*step)) continue;
    steps_.push_back(std::move(step));
  }
  for (const auto& v : g.outputs) {
    auto it = slot_of.find(v.name);
    if (it == slot_of.end()) ThrowInvalid("graph output '" + v.name + "' is not produced");
    outputs_.push_back(v);
    output_slots_.push_back(it->second);
  }
  num_slots_ = slot_names_.size();

  // Each non-constant value is released after its last reader, unless it is a graph output.
  std::vector<int> last_reader(num_slots_, -1);
  for (size_t s = 0; s < steps_.size(); ++s) {
    for (int in : steps_[s]->inputs) {
      if (in >= 0) last_reader[static_cast<size_t>(in)] = static_cast<int>(s);
    }
  }
  std::vector<bool> keep(num_slots_, false);
  for (int s : output_slots_) keep[static_cast<size_t>(s)] = true;
  for (size_t slot = 0; slot < num_slots_; ++slot) {
    if (last_reader[slot] >= 0 && !keep[slot] && !is_constant_[slot]) {
      steps_[static_cast<size_t>(last_reader[slot])]->release.push_back(static_cast<int>(slot));
    }
  }
  for (auto& step : steps_) {
    step->donate.assign(step->inputs.size(), false);
    for (size_t k = 0; k < step->inputs.size(); ++k) {
      const int slot = step->inputs[k];
      if (slot < 0) continue;
      const bool released = std::find(step->release.begin(), step->release.end(), slot) != step->release.end();
      const bool read_once = std::count(step->inputs.begin(), step->inputs.end(), slot) == 1;
      step->donate[k] = released && read_once;
    }
  }
  if (!options.reference_kernels && options.integer_kernels && kernels::QuantizedLinearSupported()) {
    PlanQuantGroups(model);
  }
  if (!options.reference_kernels) PlanFusion();
}

namespace {

bool IsInt8(DType t) { return t == DType::kInt8 || t == DType::kUInt8; }

int32_t Int8Value(const Tensor& t, int64_t i) {
  const uint8_t b = static_cast<const uint8_t*>(t.raw())[i];
  return t.dtype() == DType::kInt8 ? static_cast<int8_t>(b) : b;
}

// A constant scalar's value as float / int, or false.
bool ScalarFloat(const Tensor* t, float* v) {
  if (t == nullptr || t->numel() != 1 || t->dtype() != DType::kFloat) return false;
  *v = t->data<float>()[0];
  return true;
}

bool ScalarInt8(const Tensor* t, int32_t* v, DType* type) {
  if (t == nullptr || t->numel() != 1 || (t->dtype() != DType::kUInt8 && t->dtype() != DType::kInt8)) return false;
  *v = Int8Value(*t, 0);
  *type = t->dtype();
  return true;
}

}  // namespace

Executor::Dataflow Executor::Flow() const {
  Dataflow f;
  f.readers.resize(num_slots_);
  f.producer.assign(num_slots_, -1);
  for (size_t s = 0; s < steps_.size(); ++s) {
    for (int in : steps_[s]->inputs) {
      if (in >= 0) f.readers[static_cast<size_t>(in)].push_back(s);
    }
    for (int out : steps_[s]->outputs) {
      if (out >= 0) f.producer[static_cast<size_t>(out)] = static_cast<int>(s);
    }
  }
  f.graph_output.assign(num_slots_, false);
  for (int s : output_slots_) f.graph_output[static_cast<size_t>(s)] = true;
  return f;
}

void Executor::PlanQuantGroups(const Model& model) {
  std::unordered_map<std::string, int> slot_of;
  for (size_t s = 0; s < num_slots_; ++s) slot_of[slot_names_[s]] = static_cast<int>(s);
  const Dataflow flow = Flow();
  const auto& readers = flow.readers;
  const auto& producer = flow.producer;
  const auto& graph_output = flow.graph_output;
  auto constant = [&](const std::vector<std::string>& names, size_t i) -> const Tensor* {
    if (i >= names.size() || names[i].empty()) return nullptr;
    const auto it = slot_of.find(names[i]);
    if (it == slot_of.end() || !is_constant_[static_cast<size_t>(it->second)]) return nullptr;
    return &constants_[static_cast<size_t>(it->second)];
  };
  // The only reader of a value computed by a step, when there is exactly one and it is not a graph output.
  auto sole_reader = [&](int slot) -> int {
    if (slot < 0 || graph_output[static_cast<size_t>(slot)] || readers[static_cast<size_t>(slot)].size() != 1) return -1;
    return static_cast<int>(readers[static_cast<size_t>(slot)][0]);
  };
  auto is = [](const Node& n, const char* op) { return n.op_type == op && n.IsDefaultDomain(); };

  for (size_t h = 0; h < steps_.size(); ++h) {
    Step& head = *steps_[h];
    const Node& hn = *head.node;
    if (head.fused_away || !(is(hn, "Conv") || is(hn, "Gemm") || is(hn, "MatMul")) || head.inputs.size() < 2 ||
        head.inputs[0] < 0 || head.outputs.size() != 1) {
      continue;
    }
    kernels::QuantizedLinear q;
    q.node = &hn;
    // The input: a DequantizeLinear of a runtime tensor with a scalar scale and zero point.
    const int p = producer[static_cast<size_t>(head.inputs[0])];
    if (p < 0 || !is(*steps_[static_cast<size_t>(p)]->node, "DequantizeLinear")) continue;
    Step& dq = *steps_[static_cast<size_t>(p)];
    const std::vector<std::string>& dqi = dq.node->inputs;
    if (dq.inputs.empty() || dq.inputs[0] < 0 || is_constant_[static_cast<size_t>(dq.inputs[0])] ||
        !ScalarFloat(constant(dqi, 1), &q.x_scale) || !ScalarInt8(constant(dqi, 2), &q.x_zero, &q.x_type)) {
      continue;
    }
    // The weights: a DequantizeLinear of constant 8-bit values, folded at build time.
    const auto wf = folded_from_.find(head.inputs[1]);
    if (wf == folded_from_.end() || !is(wf->second, "DequantizeLinear")) continue;
    const std::vector<std::string>& wi = wf->second.inputs;
    const Tensor* wq = constant(wi, 0);
    const Tensor* ws = constant(wi, 1);
    const Tensor* wz = constant(wi, 2);
    if (wq == nullptr || !IsInt8(wq->dtype()) || ws == nullptr || ws->dtype() != DType::kFloat ||
        (wz != nullptr && wz->dtype() != wq->dtype()) || (wi.size() > 2 && !wi[2].empty() && wz == nullptr)) {
      continue;
    }
    // The output-channel axis of the weights, and the bias input.
    int64_t out_axis = 0;
    size_t bias_input = 2;
    if (is(hn, "Conv")) {
      if (wq->rank() < 3) continue;
    } else if (is(hn, "Gemm")) {
      if (wq->rank() != 2 || hn.AttrInt("transA", 0) != 0 || hn.AttrFloat("alpha", 1.0f) != 1.0f ||
          hn.AttrFloat("beta", 1.0f) != 1.0f) {
        continue;
      }
      out_axis = hn.AttrInt("transB", 0) != 0 ? 0 : 1;
    } else {
      if (wq->rank() != 2 || head.inputs.size() != 2) continue;
      out_axis = 1;
      bias_input = 99;
    }
    const int64_t channels = wq->dims()[static_cast<size_t>(out_axis)];
    int64_t axis = wf->second.AttrInt("axis", 1);
    if (axis < 0) axis += wq->rank();
    if (ws->numel() != 1 && (ws->numel() != channels || axis != out_axis)) continue;
    if (wz != nullptr && wz->numel() != ws->numel()) continue;
    q.w_q = *wq;
    q.w_scale.assign(ws->data<float>(), ws->data<float>() + ws->numel());
    for (int64_t i = 0; i < (wz != nullptr ? wz->numel() : 1); ++i) {
      q.w_zero.push_back(wz != nullptr ? Int8Value(*wz, i) : 0);
    }
    if (bias_input < head.inputs.size() && head.inputs[bias_input] >= 0) {
      const Tensor* b = is_constant_[static_cast<size_t>(head.inputs[bias_input])]
                            ? &constants_[static_cast<size_t>(head.inputs[bias_input])]
                            : nullptr;
      const bool vector_shape = b != nullptr && (b->rank() == 1 || (b->rank() == 2 && b->dims()[0] == 1));
      if (b == nullptr || b->dtype() != DType::kFloat || !vector_shape || b->numel() != channels) continue;
      q.bias.assign(b->data<float>(), b->data<float>() + b->numel());
    }
    // The output: [Add bias ->] [Relu ->] QuantizeLinear with a scalar scale and zero point; the Add is a
    // MatMul's bias (exporters write MatMul + Add for a linear layer), a constant [N] vector.
    int next = sole_reader(head.outputs[0]);
    int bias_add = -1;
    if (next >= 0 && is(hn, "MatMul") && is(*steps_[static_cast<size_t>(next)]->node, "Add")) {
      const Step& add = *steps_[static_cast<size_t>(next)];
      const int other = add.inputs.size() == 2 ? add.inputs[add.inputs[0] == head.outputs[0] ? 1 : 0] : -1;
      const Tensor* b = other >= 0 && is_constant_[static_cast<size_t>(other)] ? &constants_[static_cast<size_t>(other)]
                                                                                 : nullptr;
      // [N] only: a bias with more dims could broadcast the output to a higher rank.
      if (b == nullptr || b->dtype() != DType::kFloat || b->rank() != 1 || b->numel() != channels) continue;
      q.bias.assign(b->data<float>(), b->data<float>() + b->numel());
      bias_add = next;
      next = sole_reader(add.outputs[0]);
    }
    int relu = -1;
    if (next >= 0 && is(*steps_[static_cast<size_t>(next)]->node, "Relu")) {
      relu = next;
      next = sole_reader(steps_[static_cast<size_t>(relu)]->outputs[0]);
    }
    if (next < 0 || !is(*steps_[static_cast<size_t>(next)]->node, "QuantizeLinear")) continue;
    const Step& qs = *steps_[static_cast<size_t>(next)];
    const std::vector<std::string>& qi = qs.node->inputs;
    if (qs.outputs.size() != 1 || qs.outputs[0] < 0 || !ScalarFloat(constant(qi, 1), &q.y_scale) ||
        !ScalarInt8(constant(qi, 2), &q.y_zero, &q.y_type)) {
      continue;
    }
    q.relu = relu >= 0;
    auto group = std::make_unique<QuantGroup>();
    group->node = hn;
    q.node = &group->node;
    try {
      group->kernel = kernels::MakeQuantizedLinearKernel(q, model.OpsetVersion(""));
    } catch (const std::exception&) {
      continue;  // the unfused nodes report whatever is wrong when they run
    }
    group->x_slot = dq.inputs[0];
    group->out_slot = qs.outputs[0];
    group->head = h;
    head.fused_away = true;
    if (bias_add >= 0) steps_[static_cast<size_t>(bias_add)]->fused_away = true;
    if (relu >= 0) steps_[static_cast<size_t>(relu)]->fused_away = true;
    steps_[static_cast<size_t>(next)]->fused_away = true;
    dq.groups.push_back(std::move(group));
  }
  // A dequantisation read only by the groups it feeds does not run at all.
  for (auto& step : steps_) {
    if (step->groups.empty() || step->outputs.empty() || step->outputs[0] < 0) continue;
    const int out = step->outputs[0];
    const auto& rs = readers[static_cast<size_t>(out)];
    step->only_feeds_groups = !graph_output[static_cast<size_t>(out)] &&
                              std::all_of(rs.begin(), rs.end(), [&](size_t r) {
                                return std::any_of(step->groups.begin(), step->groups.end(),
                                                   [&](const auto& g) { return g->head == r; });
                              });
  }
}

size_t Executor::quantized_groups() const {
  size_t n = 0;
  for (const auto& s : steps_) n += s->groups.size();
  return n;
}

size_t Executor::integer_products() const {
  size_t n = quantized_groups();
  if (!kernels::QuantizedLinearSupported()) return n;
  for (const auto& s : steps_) {
    const std::string& op = s->node->op_type;
    if (s->entry->variant == KernelVariant::kFast && s->node->IsDefaultDomain() &&
        (op == "MatMulInteger" || op == "ConvInteger" || op == "QLinearMatMul" || op == "QLinearConv")) {
      ++n;
    }
  }
  return n;
}

void Executor::PlanFusion() {
  const Dataflow flow = Flow();
  const auto& readers = flow.readers;
  const auto& producer = flow.producer;
  const auto& graph_output = flow.graph_output;

  for (size_t h = 0; h < steps_.size(); ++h) {
    Step& head = *steps_[h];
    if (head.fused_away || !head.kernel->AcceptsEpilogue() || head.outputs.empty() || head.outputs[0] < 0) {
      continue;
    }
    fusion::Chain chain;
    std::vector<int> values = {head.outputs[0]}, extras;
    std::vector<size_t> absorbed;
    size_t best = 0;
    fusion::Chain best_chain;
    std::vector<int> best_extras;
    while (chain.ops.size() < fusion::kMaxChainOps) {
      const int last = values.back();
      if (graph_output[static_cast<size_t>(last)]) break;
      // The first reader of the last value that the chain can hold, all of whose other inputs are chain
      // values or known before the head runs.
      size_t next = steps_.size();
      fusion::ChainOp op;
      for (size_t r : readers[static_cast<size_t>(last)]) {
        const Step& c = *steps_[r];
        if (r <= h || c.fused_away || c.outputs.size() != 1 || c.outputs[0] < 0 ||
            c.inputs.size() != c.node->inputs.size() || !fusion::ChainOpOf(*c.node, &op)) {
          continue;
        }
        const bool inputs_ready = std::all_of(c.inputs.begin(), c.inputs.end(), [&](int in) {
          return in >= 0 && (std::find(values.begin(), values.end(), in) != values.end() ||
                             producer[static_cast<size_t>(in)] < static_cast<int>(h));
        });
        if (inputs_ready) {
          next = r;
          break;
        }
      }
      if (next == steps_.size()) break;
      const Step& c = *steps_[next];
      fusion::ChainOp::Kind kind = op.kind;
      auto operand = [&](int slot) {
        const auto v = std::find(values.begin(), values.end(), slot);
        if (v != values.end()) return static_cast<int>(v - values.begin());
        auto e = std::find(extras.begin(), extras.end(), slot);
        if (e == extras.end()) e = extras.insert(extras.end(), slot);
        return -1 - static_cast<int>(e - extras.begin());
      };
      op.kind = kind;
      op.a = operand(c.inputs[0]);
      if (kind != fusion::ChainOp::Kind::kUnary) op.b = operand(c.inputs[1]);
      chain.ops.push_back(op);
      absorbed.push_back(next);
      values.push_back(c.outputs[0]);
      // A prefix is valid when every value but its last is read inside the chain only.
      bool valid = true;
      for (size_t v = 0; v + 1 < values.size() && valid; ++v) {
        const auto& rs = readers[static_cast<size_t>(values[v])];
        valid = !graph_output[static_cast<size_t>(values[v])] &&
                std::all_of(rs.begin(), rs.end(), [&](size_t r) {
                  return std::find(absorbed.begin(), absorbed.end(), r) != absorbed.end();
                });
      }
      if (valid) {
        best = chain.ops.size();
        best_chain = chain;
        best_chain.extras = extras.size();
        best_extras = extras;
      }
    }
    if (best == 0) continue;
    head.chain = std::make_unique<fusion::Chain>(std::move(best_chain));
    head.chain_extras = std::move(best_extras);
    head.absorbed.assign(absorbed.begin(), absorbed.begin() + static_cast<std::ptrdiff_t>(best));
    head.chain_output = steps_[head.absorbed.back()]->outputs[0];
    for (size_t a : head.absorbed) steps_[a]->fused_away = true;
  }
}

// Ops whose result is not a function of their inputs.
static bool IsRandom(const Node& n) {
  return n.op_type.rfind("Random", 0) == 0 || n.op_type == "Multinomial" || n.op_type == "Bernoulli";
}

bool Executor::FoldConstantStep(Step& step) {
  const Node& n = *step.node;
  if (IsRandom(n) || !OuterScopeInputs(n).empty() || step.outputs.empty()) return false;
  for (const auto& a : n.attributes) {
    if (a.type == AttrType::kGraph || a.type == AttrType::kGraphs) return false;
  }
  std::vector<const Tensor*> in;
  for (int slot : step.inputs) {
    if (slot >= 0 && !is_constant_[static_cast<size_t>(slot)]) return false;
    in.push_back(slot >= 0 ? &constants_[static_cast<size_t>(slot)] : nullptr);
  }
  if (in.empty()) return false;
  // Float16 constants go through the step's float32 copies, as in Run.
  DType half_type = DType::kUndefined;
  for (size_t k = 0; k < in.size(); ++k) {
    if (in[k] != nullptr && step.entry->float16_via_float32 && IsHalfLike(in[k]->dtype())) {
      half_type = in[k]->dtype();
      in[k] = &step.float_constants[k];
    }
  }
  KernelContext ctx(n, std::move(in), step.outputs.size(), *pool_);
  try {
    step.kernel->Run(ctx);
  } catch (const std::exception&) {
    return false;  // left to fail (or not) when the model runs
  }
  for (size_t k = 0; k < step.outputs.size(); ++k) {
    const int slot = step.outputs[k];
    if (slot < 0) continue;
    Tensor t = std::move(ctx.outputs()[k]);
    if (t.dtype() == DType::kUndefined) return false;
    if (half_type != DType::kUndefined && t.dtype() == DType::kFloat) t = FromFloat32(t, half_type, *pool_);
    t.set_name(slot_names_[static_cast<size_t>(slot)]);
    constants_[static_cast<size_t>(slot)] = std::move(t);
    is_constant_[static_cast<size_t>(slot)] = true;
    folded_.push_back(slot);
    folded_from_[slot] = n;
  }
  return true;
}

Executor::~Executor() = default;

size_t Executor::fused_nodes() const {
  return static_cast<size_t>(std::count_if(steps_.begin(), steps_.end(), [](const auto& s) { return s->fused_away; }));
}

void Executor::EnableProfiling(bool on) {
  profiling_ = on;
  step_seconds_.assign(steps_.size(), 0.0);
  step_calls_.assign(steps_.size(), 0);
}

std::vector<Executor::OpTime> Executor::Profile() const {
  std::map<std::string, OpTime> by_op;
  for (size_t i = 0; i < step_seconds_.size(); ++i) {
    OpTime& t = by_op[steps_[i]->node->op_type];
    t.op_type = steps_[i]->node->op_type;
    t.calls += step_calls_[i];
    t.seconds += step_seconds_[i];
  }
  std::vector<OpTime> out;
  for (auto& [op, t] : by_op) out.push_back(t);
  std::stable_sort(out.begin(), out.end(), [](const OpTime& a, const OpTime& b) { return a.seconds > b.seconds; });
  return out;
}

void Executor::ValidateInput(size_t i, const Tensor& t) const {
  const ValueInfo& v = inputs_[i];
  const TypeInfo& type = v.type;
  if (type.kind != TypeInfo::Kind::kTensor) return;
  const std::string expected = type.ToString();
  if (type.elem_type != DType::kUndefined && t.dtype() != type.elem_type) {
    ThrowInvalid("input '" + v.name + "' expects " + expected + ", got " + DTypeName(t.dtype()) +
                 ShapeToString(t.dims()));
  }
  if (!type.has_shape) return;
  bool ok = t.rank() == static_cast<int64_t>(type.shape.size());
  for (size_t d = 0; ok && d < type.shape.size(); ++d) {
    if (type.shape[d].value && *type.shape[d].value != t.dims()[d]) ok = false;
  }
  if (!ok) {
    ThrowInvalid("input '" + v.name + "' expects " + expected + ", got " + DTypeName(t.dtype()) +
                 ShapeToString(t.dims()));
  }
}

std::vector<std::pair<std::string, Tensor>> Executor::Constants() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (size_t s = 0; s < num_slots_; ++s) {
    if (is_constant_[s]) out.emplace_back(slot_names_[s], constants_[s]);
  }
  return out;
}

std::vector<Tensor> Executor::Run(const std::vector<Tensor>& inputs, const ValueObserver* observer) {
  if (inputs.size() != inputs_.size()) {
    ThrowInvalid("the model has " + std::to_string(inputs_.size()) + " inputs, " + std::to_string(inputs.size()) +
                 " were given");
  }
  std::vector<Tensor> values(num_slots_);
  std::vector<bool> present(num_slots_, false);
  for (size_t s = 0; s < num_slots_; ++s) present[s] = is_constant_[s];
  for (size_t i = 0; i < inputs.size(); ++i) {
    ValidateInput(i, inputs[i]);
    values[static_cast<size_t>(input_slots_[i])] = inputs[i];
    present[static_cast<size_t>(input_slots_[i])] = true;
  }
  auto value_of = [&](int slot) -> const Tensor* {
    const size_t s = static_cast<size_t>(slot);
    if (is_constant_[s]) return &constants_[s];
    return present[s] ? &values[s] : nullptr;
  };
  // Values of nodes computed once at build time (all their inputs constant): observers see them first.
  if (observer != nullptr) {
    for (int slot : folded_) (*observer)(slot_names_[static_cast<size_t>(slot)], constants_[static_cast<size_t>(slot)]);
  }

  // Fused chains run only when nobody observes the values inside them; a head whose kernel declines the
  // chain (shapes or types it does not cover) leaves its steps to run one by one.
  const bool fuse = observer == nullptr;
  std::vector<bool> unfused(steps_.size(), false);
  // The quantised groups fed by a step, right after it, while their input is still there.
  auto run_groups = [&](const Step& step) {
    for (const auto& g : step.groups) {
      const Tensor* x = value_of(g->x_slot);
      if (x == nullptr) ThrowInternal("value '" + slot_names_[static_cast<size_t>(g->x_slot)] + "' missing");
      KernelContext ctx(g->node, {x}, 1, *pool_);
      const auto t0 = std::chrono::steady_clock::now();
      g->kernel->Run(ctx);
      if (profiling_) {
        step_seconds_[g->head] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        ++step_calls_[g->head];
      }
      Tensor& t = ctx.outputs()[0];
      t.set_name(slot_names_[static_cast<size_t>(g->out_slot)]);
      values[static_cast<size_t>(g->out_slot)] = std::move(t);
      present[static_cast<size_t>(g->out_slot)] = true;
    }
  };
  auto release = [&](const Step& step) {
    for (int slot : step.release) {
      values[static_cast<size_t>(slot)] = Tensor();
      present[static_cast<size_t>(slot)] = false;
    }
  };

  for (size_t index = 0; index < steps_.size(); ++index) {
    const auto& step = steps_[index];
    if (fuse && step->fused_away && !unfused[index]) {
      release(*step);
      continue;
    }
    if (fuse && step->only_feeds_groups) {
      run_groups(*step);
      release(*step);
      continue;
    }
    std::vector<const Tensor*> in(step->inputs.size(), nullptr);
    std::vector<Tensor*> donated(step->inputs.size(), nullptr);
    std::vector<Tensor> converted;  // float32 copies of float16 inputs, kept alive for the call
    converted.reserve(step->inputs.size());
    DType half_type = DType::kUndefined;
    for (size_t k = 0; k < step->inputs.size(); ++k) {
      if (step->inputs[k] < 0) continue;
      const Tensor* t = value_of(step->inputs[k]);
      if (t == nullptr) ThrowInternal("value '" + slot_names_[static_cast<size_t>(step->inputs[k])] + "' missing");
      if (step->entry->float16_via_float32 && IsHalfLike(t->dtype())) {
        half_type = t->dtype();
        if (k < step->float_constants.size() && step->float_constants[k].dtype() == DType::kFloat) {
          t = &step->float_constants[k];
        } else {
          converted.push_back(ToFloat32(*t, *pool_));
          t = &converted.back();
        }
      } else if (step->donate[k]) {
        donated[k] = &values[static_cast<size_t>(step->inputs[k])];
      }
      in[k] = t;
    }
    KernelContext ctx(*step->node, std::move(in), step->outputs.size(), *pool_);
    ctx.set_donated(std::move(donated));
    std::unique_ptr<fusion::BoundChain> bound;
    std::vector<Tensor> converted_extras;
    if (fuse && step->chain != nullptr && (half_type == DType::kUndefined || half_type == DType::kFloat16)) {
      std::vector<const Tensor*> extras;
      converted_extras.reserve(step->chain_extras.size());
      for (int slot : step->chain_extras) {
        const Tensor* t = value_of(slot);
        if (t != nullptr && half_type != DType::kUndefined && t->dtype() == half_type) {
          converted_extras.push_back(ToFloat32(*t, *pool_));
          t = &converted_extras.back();
        }
        extras.push_back(t);
      }
      bound = std::make_unique<fusion::BoundChain>(*step->chain, std::move(extras), half_type != DType::kUndefined);
      ctx.set_epilogue([&bound](const std::vector<int64_t>& dims) -> const Epilogue* {
        return bound->Bind(dims) ? bound.get() : nullptr;
      });
    }
    if (profiling_) {
      const auto t0 = std::chrono::steady_clock::now();
      step->kernel->Run(ctx);
      step_seconds_[index] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      ++step_calls_[index];
    } else {
      step->kernel->Run(ctx);
    }
    auto& outs = ctx.outputs();
    const bool chained = ctx.epilogue_taken();
    if (fuse && step->chain != nullptr && !chained) {
      for (size_t a : step->absorbed) unfused[a] = true;
    }
    for (size_t k = 0; k < step->outputs.size(); ++k) {
      const int slot = k == 0 && chained ? step->chain_output : step->outputs[k];
      if (slot < 0) continue;
      Tensor& t = outs[k];
      if (t.dtype() == DType::kUndefined) {
        ThrowInternal("node " + step->node->Describe() + " did not produce its output " + std::to_string(k));
      }
      if (half_type != DType::kUndefined && t.dtype() == DType::kFloat) t = FromFloat32(t, half_type, *pool_);
      t.set_name(slot_names_[static_cast<size_t>(slot)]);
      values[static_cast<size_t>(slot)] = std::move(t);
      present[static_cast<size_t>(slot)] = true;
      if (observer != nullptr) (*observer)(slot_names_[static_cast<size_t>(slot)], values[static_cast<size_t>(slot)]);
    }
    if (fuse) run_groups(*step);
    release(*step);
  }

  std::vector<Tensor> result;
  result.reserve(output_slots_.size());
  for (size_t i = 0; i < output_slots_.size(); ++i) {
    const Tensor* t = value_of(output_slots_[i]);
    if (t == nullptr) ThrowInternal("graph output '" + outputs_[i].name + "' was not computed");
    result.push_back(*t);
    result.back().set_name(outputs_[i].name);
  }
  return result;
}

}  // namespace compress
