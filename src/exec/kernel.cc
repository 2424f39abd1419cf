#include "compress/exec/kernel.h"

#include <algorithm>
#include <set>

#include "compress/util/error.h"
#include "kernels/kernels.h"

namespace compress {

KernelContext::KernelContext(const Node& node, std::vector<const Tensor*> inputs, size_t num_outputs,
                             ThreadPool& pool)
    : node_(node), inputs_(std::move(inputs)), outputs_(num_outputs), pool_(pool) {}

const Tensor& KernelContext::required_input(size_t i) const {
  const Tensor* t = input(i);
  if (t == nullptr) Fail("input " + std::to_string(i) + " is required but missing");
  return *t;
}

Tensor KernelContext::TakeInput(size_t i) {
  if (!input_donated(i)) Fail("input " + std::to_string(i) + " was not handed over");
  Tensor t = std::move(*donated_[i]);
  donated_[i] = nullptr;
  inputs_[i] = nullptr;
  return t;
}

Tensor& KernelContext::Output(size_t i, DType dtype, std::vector<int64_t> dims) {
  if (i >= outputs_.size()) Fail("output " + std::to_string(i) + " does not exist");
  outputs_[i] = Tensor(dtype, std::move(dims));
  return outputs_[i];
}

Tensor& KernelContext::OutputForWrite(size_t i, DType dtype, std::vector<int64_t> dims) {
  if (i >= outputs_.size()) Fail("output " + std::to_string(i) + " does not exist");
  outputs_[i] = Tensor::Uninitialized(dtype, std::move(dims));
  return outputs_[i];
}

void KernelContext::SetOutput(size_t i, Tensor t) {
  if (i >= outputs_.size()) Fail("output " + std::to_string(i) + " does not exist");
  outputs_[i] = std::move(t);
}

const Epilogue* KernelContext::TakeEpilogue(const std::vector<int64_t>& dims) {
  if (!bind_epilogue_ || epilogue_taken_) return nullptr;
  const Epilogue* e = bind_epilogue_(dims);
  epilogue_taken_ = e != nullptr;
  return e;
}

void KernelContext::Fail(const std::string& message) const {
  ThrowInvalid("node " + node_.Describe() + ": " + message);
}

namespace {
class FunctionKernel : public Kernel {
 public:
  explicit FunctionKernel(std::function<void(KernelContext&)> run) : run_(std::move(run)) {}
  void Run(KernelContext& ctx) override { run_(ctx); }

 private:
  std::function<void(KernelContext&)> run_;
};

bool SameDomain(const std::string& a, const std::string& b) {
  auto norm = [](const std::string& d) { return d == "ai.onnx" ? std::string() : d; };
  return norm(a) == norm(b);
}
}  // namespace

std::unique_ptr<Kernel> MakeKernel(std::function<void(KernelContext&)> run) {
  return std::make_unique<FunctionKernel>(std::move(run));
}

void KernelRegistry::Add(KernelEntry entry) {
  for (const auto& e : entries_) {
    if (SameDomain(e.domain, entry.domain) && e.op_type == entry.op_type && e.variant == entry.variant &&
        e.since_version <= entry.until_version && entry.since_version <= e.until_version) {
      ThrowInternal("kernel registered twice: " + entry.op_type + " versions " + std::to_string(entry.since_version) +
                    "-" + std::to_string(entry.until_version));
    }
  }
  entries_.push_back(std::move(entry));
}

const KernelEntry* KernelRegistry::Find(const std::string& domain, const std::string& op_type, int64_t opset,
                                        bool reference_only) const {
  const KernelEntry* reference = nullptr;
  const KernelEntry* fast = nullptr;
  for (const auto& e : entries_) {
    if (!SameDomain(e.domain, domain) || e.op_type != op_type) continue;
    if (opset < e.since_version || opset > e.until_version) continue;
    if (e.variant == KernelVariant::kReference) reference = &e;
    else fast = &e;
  }
  if (!reference_only && fast != nullptr) return fast;
  return reference;
}

std::vector<std::string> KernelRegistry::OpTypes() const {
  std::set<std::string> ops;
  for (const auto& e : entries_) ops.insert(e.domain.empty() ? e.op_type : e.domain + "::" + e.op_type);
  return {ops.begin(), ops.end()};
}

const KernelRegistry& KernelRegistry::Default() {
  static const KernelRegistry registry = [] {
    KernelRegistry r;
    kernels::RegisterElementwiseKernels(r);
    kernels::RegisterReduceKernels(r);
    kernels::RegisterNormKernels(r);
    kernels::RegisterShapeKernels(r);
    kernels::RegisterResizeKernels(r);
    kernels::RegisterMatMulKernels(r);
    kernels::RegisterConvKernels(r);
    kernels::RegisterPoolKernels(r);
    kernels::RegisterQuantKernels(r);
    kernels::RegisterControlKernels(r);
    kernels::RegisterRnnKernels(r);
    return r;
  }();
  return registry;
}

}  // namespace compress
