// Integer kernels for the DequantizeLinear -> Conv / Gemm / MatMul -> [Relu] -> QuantizeLinear groups of a
// QDQ model (the executor finds them; see Executor::PlanQuantGroups).
//
//   Before:  xq -> DQ(sx, zx) -> Conv(DQ(wq, sw, zw), bias) -> [Relu] -> Q(sy, zy) -> yq
//   After:   xq -> QLinearConv(sx, zx, wq, sw, zw, sy, zy, round(bias / (sx sw))) -> [max(., zy)] -> yq
//
// The product runs in exact int32 arithmetic (qgemm) and is requantised once, the way ONNX Runtime runs the
// same groups: y = saturate(round_half_even((acc + bias_q) * sx * sw / sy) + zy). A Relu before the
// QuantizeLinear is max(y, zy), exactly, since rounding is monotonic and maps 0 to 0. The float-simulated
// graph rounds its float32 sums instead, so the two differ by at most one quantisation step where a value
// lies near a rounding boundary.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "common.h"
#include "kernels.h"
#include "qgemm.h"

namespace compress::kernels {

namespace {

int32_t RoundBias(float bias, float scale) {
  return static_cast<int32_t>(std::nearbyint(static_cast<double>(bias) / static_cast<double>(scale)));
}

// Conv: the registry's fast QLinearConv on constants made once.
class QuantizedConv : public Kernel {
 public:
  QuantizedConv(const QuantizedLinear& q, int64_t opset) : relu_(q.relu), y_zero_(q.y_zero) {
    node_ = *q.node;
    node_.op_type = "QLinearConv";
    node_.domain.clear();
    const int64_t channels = q.w_q.dims()[0];
    constants_.push_back(Tensor::FromVector<float>({}, {q.x_scale}));
    constants_.push_back(ZeroPoint(q.x_type, q.x_zero));
    constants_.push_back(q.w_q);
    constants_.push_back(Tensor::FromVector<float>({static_cast<int64_t>(q.w_scale.size())}, q.w_scale));
    Tensor wz = Tensor(q.w_q.dtype(), {static_cast<int64_t>(q.w_zero.size())});
    for (size_t i = 0; i < q.w_zero.size(); ++i) static_cast<uint8_t*>(wz.mutable_raw())[i] = static_cast<uint8_t>(q.w_zero[i]);
    constants_.push_back(wz);
    constants_.push_back(Tensor::FromVector<float>({}, {q.y_scale}));
    constants_.push_back(ZeroPoint(q.y_type, q.y_zero));
    if (!q.bias.empty()) {
      std::vector<int32_t> b(static_cast<size_t>(channels));
      for (int64_t m = 0; m < channels; ++m) {
        const float sw = q.w_scale.size() == 1 ? q.w_scale[0] : q.w_scale[static_cast<size_t>(m)];
        b[static_cast<size_t>(m)] = RoundBias(q.bias[static_cast<size_t>(m)], q.x_scale * sw);
      }
      constants_.push_back(Tensor::FromVector<int32_t>({channels}, b));
    }
    node_.inputs = {"x", "x_scale", "x_zero_point", "w", "w_scale", "w_zero_point", "y_scale", "y_zero_point"};
    if (!q.bias.empty()) node_.inputs.push_back("B");
    node_.outputs = {"y"};
    KernelInfo info;
    info.node = &node_;
    info.opset = opset;
    info.constant_inputs.push_back(nullptr);
    for (const Tensor& t : constants_) info.constant_inputs.push_back(&t);
    const KernelEntry* entry = KernelRegistry::Default().Find("", "QLinearConv", std::max<int64_t>(opset, 10));
    if (entry == nullptr) ThrowInternal("no QLinearConv kernel");
    inner_ = entry->factory(info);
  }

  void Run(KernelContext& ctx) override {
    std::vector<const Tensor*> in = {&ctx.required_input(0)};
    for (const Tensor& t : constants_) in.push_back(&t);
    KernelContext inner(node_, std::move(in), 1, ctx.pool());
    inner_->Run(inner);
    Tensor y = std::move(inner.outputs()[0]);
    if (relu_) ClampBelow(ctx, y, y_zero_);
    ctx.SetOutput(0, std::move(y));
  }

  static Tensor ZeroPoint(DType type, int32_t value) {
    Tensor t(type, {});
    static_cast<uint8_t*>(t.mutable_raw())[0] = static_cast<uint8_t>(value);
    return t;
  }

  // max(y, zero point) over an 8-bit tensor.
  static void ClampBelow(KernelContext& ctx, Tensor& y, int32_t zero) {
    const bool is_signed = y.dtype() == DType::kInt8;
    auto* p = static_cast<uint8_t*>(y.mutable_raw());
    ctx.pool().ParallelFor(y.numel(), kElementwiseGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        if (is_signed) {
          p[i] = static_cast<uint8_t>(std::max<int32_t>(static_cast<int8_t>(p[i]), zero));
        } else {
          p[i] = static_cast<uint8_t>(std::max<int32_t>(p[i], zero));
        }
      }
    });
  }

 private:
  Node node_;
  std::vector<Tensor> constants_;
  std::unique_ptr<Kernel> inner_;
  bool relu_;
  int32_t y_zero_;
};

// Rows of the product per parallel task.
constexpr int64_t kQuantRowsPerTask = 32;

// Gemm (transA = 0, alpha = beta = 1) and MatMul with constant weights: rows of x (all leading dims) times
// W [K, N] by qgemm::MultiplyRight, requantised row by row.
class QuantizedGemm : public Kernel {
 public:
  explicit QuantizedGemm(const QuantizedLinear& q)
      : x_signed_(q.x_type == DType::kInt8), x_zero_(q.x_zero + (q.x_type == DType::kInt8 ? 128 : 0)) {
    const bool trans_b = q.node->op_type == "Gemm" && q.node->AttrInt("transB", 0) != 0;
    const Tensor& w = q.w_q;
    k_ = w.dims()[trans_b ? 1 : 0];
    n_ = w.dims()[trans_b ? 0 : 1];
    // W as [K, N] bytes.
    std::vector<uint8_t> kn(static_cast<size_t>(k_ * n_));
    const auto* pw = static_cast<const uint8_t*>(w.raw());
    for (int64_t p = 0; p < k_; ++p) {
      for (int64_t j = 0; j < n_; ++j) kn[static_cast<size_t>(p * n_ + j)] = trans_b ? pw[j * k_ + p] : pw[p * n_ + j];
    }
    packed_ = qgemm::PackedWeights::Right(kn.data(), w.dtype() == DType::kInt8, k_, n_, q.w_zero);
    multipliers_.resize(static_cast<size_t>(n_));
    bias_.assign(static_cast<size_t>(n_), 0);
    for (int64_t j = 0; j < n_; ++j) {
      const float sw = q.w_scale.size() == 1 ? q.w_scale[0] : q.w_scale[static_cast<size_t>(j)];
      multipliers_[static_cast<size_t>(j)] = q.x_scale * sw / q.y_scale;
      if (!q.bias.empty()) {
        bias_[static_cast<size_t>(j)] =
            RoundBias(q.bias[q.bias.size() == 1 ? 0 : static_cast<size_t>(j)], q.x_scale * sw);
      }
    }
    out_type_ = q.y_type;
    requant_.bias = bias_.data();
    requant_.bias_step = 1;
    requant_.multipliers = multipliers_.data();
    requant_.multiplier_step = 1;
    requant_.zero_point = q.y_zero;
    requant_.lo = q.y_type == DType::kInt8 ? -128 : 0;
    requant_.hi = q.y_type == DType::kInt8 ? 127 : 255;
    if (q.relu) requant_.lo = std::max(requant_.lo, q.y_zero);
  }

  void Run(KernelContext& ctx) override {
    const Tensor& x = ctx.required_input(0);
    if (x.rank() < 1 || x.dims().back() != k_ || (x.dtype() != DType::kUInt8 && x.dtype() != DType::kInt8) ||
        (x.dtype() == DType::kInt8) != x_signed_) {
      ctx.Fail("quantized input " + ShapeToString(x.dims()) + " of type " + DTypeName(x.dtype()) +
               " does not fit the weights [" + std::to_string(k_) + ", " + std::to_string(n_) + "]");
    }
    std::vector<int64_t> dims = x.dims();
    dims.back() = n_;
    Tensor& y = ctx.OutputForWrite(0, out_type_, dims);
    const int64_t rows = x.numel() / std::max<int64_t>(1, k_);
    const auto* px = static_cast<const uint8_t*>(x.raw());
    auto* py = static_cast<uint8_t*>(y.mutable_raw());
    const int32_t zx = x_zero_;
    ctx.pool().ParallelFor((rows + kQuantRowsPerTask - 1) / kQuantRowsPerTask, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t r0 = t * kQuantRowsPerTask, r = std::min(kQuantRowsPerTask, rows - r0);
        const uint8_t* xr = px + r0 * k_;
        if (x_signed_) {
          uint8_t* flipped = qgemm::Scratch(0, r * k_);
          qgemm::FlipSign(reinterpret_cast<const int8_t*>(xr), r * k_, flipped);
          xr = flipped;
        }
        int32_t* acc = qgemm::ScratchOf<int32_t>(1, r * n_);
        qgemm::MultiplyRight(r, xr, k_, &zx, 0, packed_, acc, n_);
        for (int64_t i = 0; i < r; ++i) qgemm::Requantize(acc + i * n_, n_, requant_, py + (r0 + i) * n_);
      }
    });
  }

 private:
  bool x_signed_;
  int32_t x_zero_;
  int64_t k_ = 0, n_ = 0;
  qgemm::PackedWeights packed_;
  std::vector<float> multipliers_;
  std::vector<int32_t> bias_;
  qgemm::Requantization requant_;
  DType out_type_ = DType::kUInt8;
};

}  // namespace

}  // namespace compress::kernels

namespace compress {
const char* IntegerKernelIsaName() { return kernels::qgemm::IsaName(kernels::qgemm::DefaultIsa()); }
}  // namespace compress

namespace compress::kernels {

bool QuantizedLinearSupported() { return qgemm::DefaultIsa() != qgemm::Isa::kScalar; }

std::unique_ptr<Kernel> MakeQuantizedLinearKernel(const QuantizedLinear& q, int64_t opset) {
  if (q.node->op_type == "Conv") return std::make_unique<QuantizedConv>(q, opset);
  return std::make_unique<QuantizedGemm>(q);
}

}  // namespace compress::kernels
