// Recurrent layers: LSTM (opsets 7-14 schema: layout, input_forget, peepholes, sequence_lens, clip), as a
// plain reference implementation computed one batch row and one time step at a time.
#include <cmath>
#include <string>
#include <vector>

#include "common.h"
#include "kernels.h"

namespace compress::kernels {
namespace {

// One activation function of the ONNX RNN family with its alpha / beta.
struct Activation {
  std::string name;
  float alpha = 0.0f;
  float beta = 0.0f;

  float operator()(float x) const {
    if (name == "Sigmoid") return 1.0f / (1.0f + std::exp(-x));
    if (name == "Tanh") return std::tanh(x);
    if (name == "Relu") return x > 0.0f ? x : 0.0f;
    if (name == "Affine") return alpha * x + beta;
    if (name == "LeakyRelu") return x >= 0.0f ? x : alpha * x;
    if (name == "ThresholdedRelu") return x > alpha ? x : 0.0f;
    if (name == "ScaledTanh") return alpha * std::tanh(beta * x);
    if (name == "HardSigmoid") return std::max(0.0f, std::min(1.0f, alpha * x + beta));
    if (name == "Elu") return x >= 0.0f ? x : alpha * (std::exp(x) - 1.0f);
    if (name == "Softsign") return x / (1.0f + std::fabs(x));
    if (name == "Softplus") return std::log1p(std::exp(x));
    return x;
  }
};

// Parses `activations` with activation_alpha / activation_beta, consumed in order by the functions that
// take them; `defaults` per direction when the attribute is absent.
std::vector<Activation> ParseActivations(const Node& n, const std::vector<std::string>& defaults, size_t dirs) {
  std::vector<std::string> names;
  if (const Attribute* a = n.FindAttr("activations"); a != nullptr && !a->strings.empty()) {
    names = a->strings;
  } else {
    for (size_t d = 0; d < dirs; ++d) names.insert(names.end(), defaults.begin(), defaults.end());
  }
  if (names.size() != defaults.size() * dirs) {
    ThrowInvalid("node " + n.Describe() + ": expects " + std::to_string(defaults.size() * dirs) +
                 " activations, got " + std::to_string(names.size()));
  }
  std::vector<float> alphas, betas;
  if (const Attribute* a = n.FindAttr("activation_alpha")) alphas = a->floats;
  if (const Attribute* a = n.FindAttr("activation_beta")) betas = a->floats;
  size_t ai = 0, bi = 0;
  std::vector<Activation> out;
  for (const auto& name : names) {
    static const std::vector<std::string> known = {"Sigmoid", "Tanh",       "Relu", "Affine",   "LeakyRelu",
                                                   "ThresholdedRelu", "ScaledTanh", "HardSigmoid", "Elu",
                                                   "Softsign", "Softplus"};
    if (std::find(known.begin(), known.end(), name) == known.end()) {
      ThrowInvalid("node " + n.Describe() + ": unsupported activation '" + name + "'");
    }
    Activation act;
    act.name = name;
    float default_alpha = 0.0f, default_beta = 0.0f;
    bool has_alpha = false, has_beta = false;
    if (name == "Affine" || name == "ScaledTanh") {
      has_alpha = has_beta = true;
      default_alpha = 1.0f;
    } else if (name == "LeakyRelu") {
      has_alpha = true;
      default_alpha = 0.01f;
    } else if (name == "ThresholdedRelu" || name == "Elu") {
      has_alpha = true;
      default_alpha = 1.0f;
    } else if (name == "HardSigmoid") {
      has_alpha = has_beta = true;
      default_alpha = 0.2f;
      default_beta = 0.5f;
    }
    if (has_alpha) act.alpha = ai < alphas.size() ? alphas[ai++] : default_alpha;
    if (has_beta) act.beta = bi < betas.size() ? betas[bi++] : default_beta;
    out.push_back(act);
  }
  return out;
}

class LstmKernel : public Kernel {
 public:
  explicit LstmKernel(const KernelInfo& info) {
    const Node& n = *info.node;
    direction_ = n.AttrString("direction", "forward");
    if (direction_ != "forward" && direction_ != "reverse" && direction_ != "bidirectional") {
      ThrowInvalid("node " + n.Describe() + ": unknown direction '" + direction_ + "'");
    }
    dirs_ = direction_ == "bidirectional" ? 2 : 1;
    hidden_ = n.AttrInt("hidden_size", 0);
    layout_ = n.AttrInt("layout", 0);
    input_forget_ = n.AttrInt("input_forget", 0) != 0;
    if (const Attribute* a = n.FindAttr("clip")) {
      has_clip_ = true;
      clip_ = a->f;
    }
    acts_ = ParseActivations(n, {"Sigmoid", "Tanh", "Tanh"}, static_cast<size_t>(dirs_));
  }

  void Run(KernelContext& ctx) override {
    const Tensor& x = ctx.required_input(0);
    const Tensor& w = ctx.required_input(1);
    const Tensor& r = ctx.required_input(2);
    for (const Tensor* t : {&x, &w, &r}) {
      if (t->dtype() != DType::kFloat) ctx.Fail(std::string("expects float inputs, got ") + DTypeName(t->dtype()));
    }
    if (x.rank() != 3) ctx.Fail("X must be rank 3, got " + ShapeToString(x.dims()));
    const int64_t seq = layout_ == 0 ? x.dims()[0] : x.dims()[1];
    const int64_t batch = layout_ == 0 ? x.dims()[1] : x.dims()[0];
    const int64_t in_size = x.dims()[2];
    const int64_t dirs = dirs_;
    const int64_t h_size = hidden_ > 0 ? hidden_ : (r.rank() == 3 ? r.dims()[2] : 0);
    if (w.dims() != std::vector<int64_t>{dirs, 4 * h_size, in_size}) {
      ctx.Fail("W must be " + ShapeToString({dirs, 4 * h_size, in_size}) + ", got " + ShapeToString(w.dims()));
    }
    if (r.dims() != std::vector<int64_t>{dirs, 4 * h_size, h_size}) {
      ctx.Fail("R must be " + ShapeToString({dirs, 4 * h_size, h_size}) + ", got " + ShapeToString(r.dims()));
    }
    const Tensor* b = ctx.input(3);
    const Tensor* seq_lens = ctx.input(4);
    const Tensor* init_h = ctx.input(5);
    const Tensor* init_c = ctx.input(6);
    const Tensor* p = ctx.input(7);
    auto check = [&](const Tensor* t, const char* name, const std::vector<int64_t>& dims) {
      if (t == nullptr) return;
      if (t->dtype() != DType::kFloat || t->dims() != dims) {
        ctx.Fail(std::string(name) + " must be float32" + ShapeToString(dims) + ", got " + DTypeName(t->dtype()) +
                 ShapeToString(t->dims()));
      }
    };
    const std::vector<int64_t> state_dims =
        layout_ == 0 ? std::vector<int64_t>{dirs, batch, h_size} : std::vector<int64_t>{batch, dirs, h_size};
    check(b, "B", {dirs, 8 * h_size});
    check(init_h, "initial_h", state_dims);
    check(init_c, "initial_c", state_dims);
    check(p, "P", {dirs, 3 * h_size});
    std::vector<int64_t> lens(static_cast<size_t>(batch), seq);
    if (seq_lens != nullptr) {
      if (seq_lens->numel() != batch) ctx.Fail("sequence_lens must have " + std::to_string(batch) + " elements");
      for (int64_t i = 0; i < batch; ++i) {
        lens[static_cast<size_t>(i)] = seq_lens->dtype() == DType::kInt64 ? seq_lens->data<int64_t>()[i]
                                                                           : seq_lens->data<int32_t>()[i];
        if (lens[static_cast<size_t>(i)] < 0 || lens[static_cast<size_t>(i)] > seq) {
          ctx.Fail("sequence_lens[" + std::to_string(i) + "] = " + std::to_string(lens[static_cast<size_t>(i)]) +
                   " is outside [0, " + std::to_string(seq) + "]");
        }
      }
    }

    const std::vector<int64_t> y_dims = layout_ == 0 ? std::vector<int64_t>{seq, dirs, batch, h_size}
                                                     : std::vector<int64_t>{batch, seq, dirs, h_size};
    Tensor y(DType::kFloat, y_dims);
    Tensor yh(DType::kFloat, state_dims);
    Tensor yc(DType::kFloat, state_dims);
    float* py = y.mutable_data<float>();
    float* pyh = yh.mutable_data<float>();
    float* pyc = yc.mutable_data<float>();
    const float* px = x.data<float>();
    // Offsets of (time t, batch row b) in X, of (direction d, batch row b) in the states, and in Y.
    auto x_at = [&](int64_t t, int64_t bi) {
      return px + (layout_ == 0 ? (t * batch + bi) : (bi * seq + t)) * in_size;
    };
    auto state_at = [&](int64_t d, int64_t bi) { return (layout_ == 0 ? (d * batch + bi) : (bi * dirs + d)) * h_size; };
    auto y_at = [&](int64_t t, int64_t d, int64_t bi) {
      return (layout_ == 0 ? ((t * dirs + d) * batch + bi) : ((bi * seq + t) * dirs + d)) * h_size;
    };
    auto clip = [&](float v) { return has_clip_ ? std::max(-clip_, std::min(clip_, v)) : v; };

    const size_t hs = static_cast<size_t>(h_size);
    std::vector<float> h(hs), c(hs), gates(4 * hs);
    for (int64_t d = 0; d < dirs; ++d) {
      const bool reverse = direction_ == "reverse" || d == 1;
      const float* wd = w.data<float>() + d * 4 * h_size * in_size;
      const float* rd = r.data<float>() + d * 4 * h_size * h_size;
      const float* bd = b != nullptr ? b->data<float>() + d * 8 * h_size : nullptr;
      const float* pd = p != nullptr ? p->data<float>() + d * 3 * h_size : nullptr;
      const Activation& f = acts_[static_cast<size_t>(d * 3)];
      const Activation& g = acts_[static_cast<size_t>(d * 3 + 1)];
      const Activation& hact = acts_[static_cast<size_t>(d * 3 + 2)];
      for (int64_t bi = 0; bi < batch; ++bi) {
        const int64_t so = state_at(d, bi);
        for (size_t k = 0; k < hs; ++k) {
          h[k] = init_h != nullptr ? init_h->data<float>()[so + static_cast<int64_t>(k)] : 0.0f;
          c[k] = init_c != nullptr ? init_c->data<float>()[so + static_cast<int64_t>(k)] : 0.0f;
        }
        const int64_t len = lens[static_cast<size_t>(bi)];
        for (int64_t s = 0; s < len; ++s) {
          const int64_t t = reverse ? len - 1 - s : s;
          const float* xt = x_at(t, bi);
          // Gate pre-activations in the ONNX order i, o, f, c.
          for (int64_t j = 0; j < 4 * h_size; ++j) {
            double acc = bd != nullptr ? static_cast<double>(bd[j]) + bd[4 * h_size + j] : 0.0;
            const float* wrow = wd + j * in_size;
            for (int64_t k = 0; k < in_size; ++k) acc += static_cast<double>(wrow[k]) * xt[k];
            const float* rrow = rd + j * h_size;
            for (int64_t k = 0; k < h_size; ++k) acc += static_cast<double>(rrow[k]) * h[static_cast<size_t>(k)];
            gates[static_cast<size_t>(j)] = static_cast<float>(acc);
          }
          for (size_t k = 0; k < hs; ++k) {
            float gi = gates[k], go = gates[hs + k], gf = gates[2 * hs + k], gc = gates[3 * hs + k];
            if (pd != nullptr) {
              gi += pd[k] * c[k];
              gf += pd[2 * hs + k] * c[k];
            }
            const float it = f(clip(gi));
            const float ft = input_forget_ ? 1.0f - it : f(clip(gf));
            const float ct = g(clip(gc));
            c[k] = ft * c[k] + it * ct;
            if (pd != nullptr) go += pd[hs + k] * c[k];
            const float ot = f(clip(go));
            h[k] = ot * hact(c[k]);
          }
          float* yo = py + y_at(t, d, bi);
          for (size_t k = 0; k < hs; ++k) yo[k] = h[k];
        }
        for (size_t k = 0; k < hs; ++k) {
          pyh[so + static_cast<int64_t>(k)] = h[k];
          pyc[so + static_cast<int64_t>(k)] = c[k];
        }
      }
    }
    if (ctx.num_outputs() > 0) ctx.SetOutput(0, std::move(y));
    if (ctx.num_outputs() > 1) ctx.SetOutput(1, std::move(yh));
    if (ctx.num_outputs() > 2) ctx.SetOutput(2, std::move(yc));
  }

 private:
  std::string direction_;
  int64_t dirs_ = 1;
  int64_t hidden_ = 0;
  int64_t layout_ = 0;
  bool input_forget_ = false;
  bool has_clip_ = false;
  float clip_ = 0.0f;
  std::vector<Activation> acts_;
};

}  // namespace

void RegisterRnnKernels(KernelRegistry& r) {
  AddKernel(r, "LSTM", 7, 1000, [](const KernelInfo& info) { return std::make_unique<LstmKernel>(info); });
}

}  // namespace compress::kernels
