// Gradient checks: a backward rule against central finite differences of the forward kernels.
//
// A one-node model is built with every input as an initializer; the float inputs marked trainable are
// the parameters, every floating-point output is seeded with a fixed random weight R, so the checked
// scalar is L = sum_k sum(y_k * R_k). Each parameter element is moved by +-h and
// (L(x+h) - L(x-h)) / 2h is compared with the rule's gradient. Checks run in float64 on the reference
// kernels unless the case says otherwise (ggml's test-grad0 is the model).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "compress/exec/executor.h"
#include "compress/train/autodiff.h"

namespace compress::train::testing {

// |numeric - analytic| <= abs + rel * max(|numeric|, |analytic|), per element.
struct GradTolerance {
  double abs = 1e-6;
  double rel = 1e-5;
};

struct GradCase {
  std::string op;
  int64_t opset = 17;
  std::vector<Attribute> attributes;
  // One per node input; a tensor of dtype kUndefined is an omitted input ("").
  std::vector<Tensor> inputs;
  // Per input: trainable (checked). Empty: every float32 / float64 input.
  std::vector<bool> trainable;
  int num_outputs = 1;
  double h = 1e-6;  // finite-difference step
  bool reference_kernels = true;
};

// Uniform values in [lo, hi), reproducible from `seed`.
inline Tensor RandomTensor(DType dtype, std::vector<int64_t> dims, uint32_t seed, double lo = -1.0, double hi = 1.0) {
  Tensor t(dtype, std::move(dims));
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(lo, hi);
  if (dtype == DType::kDouble) {
    double* p = t.mutable_data<double>();
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = u(rng);
  } else {
    float* p = t.mutable_data<float>();
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<float>(u(rng));
  }
  return t;
}

inline double ElementAsDouble(const Tensor& t, int64_t i) {
  return t.dtype() == DType::kDouble ? t.data<double>()[i] : static_cast<double>(t.data<float>()[i]);
}
inline void SetElement(Tensor& t, int64_t i, double v) {
  if (t.dtype() == DType::kDouble) {
    t.mutable_data<double>()[i] = v;
  } else {
    t.mutable_data<float>()[i] = static_cast<float>(v);
  }
}

inline Model OneNodeModel(const GradCase& c) {
  Model m;
  m.ir_version = 8;
  m.opset_imports.push_back({"", c.opset});
  Node n;
  n.name = "node";
  n.op_type = c.op;
  n.attributes = c.attributes;
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    if (c.inputs[i].dtype() == DType::kUndefined) {
      n.inputs.push_back("");
      continue;
    }
    Tensor t = c.inputs[i];
    t.set_name("x" + std::to_string(i));
    n.inputs.push_back(t.name());
    m.graph.initializers.push_back(t);
  }
  for (int k = 0; k < c.num_outputs; ++k) {
    n.outputs.push_back("y" + std::to_string(k));
    ValueInfo v;
    v.name = n.outputs.back();
    m.graph.outputs.push_back(v);
  }
  m.graph.nodes.push_back(n);
  return m;
}

// What both the finite-difference check and RuleGradients build from a case: the trainable inputs
// (names and values) and a fixed random weight for every real-valued output.
struct CaseSetup {
  Model model;
  std::vector<std::string> params;
  std::vector<Tensor> values;
  std::vector<std::string> seeds;
  std::vector<Tensor> weights;
};

inline CaseSetup SetUpCase(const GradCase& c) {
  CaseSetup s;
  s.model = OneNodeModel(c);
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    const DType d = c.inputs[i].dtype();
    const bool is_float = d == DType::kFloat || d == DType::kDouble;
    const bool trainable = c.trainable.empty() ? is_float : (i < c.trainable.size() && c.trainable[i]);
    if (!trainable) continue;
    s.params.push_back("x" + std::to_string(i));
    s.values.push_back(c.inputs[i]);
  }
  ExecutorOptions eo;
  eo.threads = 1;
  eo.reference_kernels = c.reference_kernels;
  Executor probe(s.model, eo);
  const std::vector<Tensor> outs = probe.Run({});
  for (size_t k = 0; k < outs.size(); ++k) {
    if (outs[k].dtype() != DType::kFloat && outs[k].dtype() != DType::kDouble) continue;
    s.seeds.push_back("y" + std::to_string(k));
    s.weights.push_back(RandomTensor(outs[k].dtype(), outs[k].dims(), 1000u + static_cast<uint32_t>(k)));
  }
  return s;
}

// Checks every trainable input's gradient; returns the largest |numeric - analytic| seen.
inline double ExpectGradientsMatch(const GradCase& c, const GradTolerance& tol) {
  const CaseSetup setup = SetUpCase(c);
  const std::vector<std::string>& params = setup.params;
  const std::vector<std::string>& seeds = setup.seeds;
  const std::vector<Tensor>& weights = setup.weights;
  BackpropOptions bo;
  bo.threads = 1;
  bo.reference_kernels = c.reference_kernels;
  Backprop bp(setup.model, params, seeds, bo);
  const std::vector<Tensor> values = setup.values;
  auto loss = [&](const std::vector<Tensor>& v) {
    const ValueMap m = bp.Forward({}, v);
    double l = 0;
    for (size_t k = 0; k < seeds.size(); ++k) {
      const Tensor& y = m.at(seeds[k]);
      for (int64_t e = 0; e < y.numel(); ++e) l += ElementAsDouble(y, e) * ElementAsDouble(weights[k], e);
    }
    return l;
  };
  const ValueMap forward = bp.Forward({}, values);
  const std::vector<Tensor> grads = bp.Backward(forward, weights);
  double worst = 0;
  for (size_t p = 0; p < params.size(); ++p) {
    const Tensor& g = grads[p];
    EXPECT_EQ(g.dims(), values[p].dims()) << c.op << " " << params[p];
    if (g.dims() != values[p].dims()) continue;
    for (int64_t e = 0; e < values[p].numel(); ++e) {
      std::vector<Tensor> plus = values, minus = values;
      // Fresh buffers: copies share storage until written.
      plus[p] = Tensor::FromBytes(values[p].dtype(), values[p].dims(), values[p].raw(), values[p].nbytes());
      minus[p] = Tensor::FromBytes(values[p].dtype(), values[p].dims(), values[p].raw(), values[p].nbytes());
      const double x = ElementAsDouble(values[p], e);
      SetElement(plus[p], e, x + c.h);
      SetElement(minus[p], e, x - c.h);
      const double numeric = (loss(plus) - loss(minus)) / (2 * c.h);
      const double analytic = ElementAsDouble(g, e);
      const double err = std::abs(numeric - analytic);
      worst = std::max(worst, err);
      EXPECT_LE(err, tol.abs + tol.rel * std::max(std::abs(numeric), std::abs(analytic)))
          << c.op << ": d/d" << params[p] << "[" << e << "] numeric " << numeric << " analytic " << analytic;
    }
  }
  return worst;
}

// The float32 rules against the float64 ones on the same values: the forward outputs and the rule's
// arithmetic round to 24 bits (relative 6e-8), a few operations deep.
constexpr GradTolerance kFloat32VsFloat64{1e-5, 1e-4};

// Largest |numeric - analytic| over one test, recorded as the test property worst_abs_error
// (--gtest_output=xml) so that the margin under the tolerance can be read off a run.
class WorstError {
 public:
  void operator()(double e) { worst_ = std::max(worst_, e); }
  ~WorstError() {
    char text[32];
    std::snprintf(text, sizeof(text), "%.2e", worst_);
    ::testing::Test::RecordProperty("worst_abs_error", text);
  }

 private:
  double worst_ = 0;
};

// The rule's gradients of every float input for case c, the loss weights as ExpectGradientsMatch makes them.
inline std::vector<Tensor> RuleGradients(const GradCase& c, int threads) {
  const CaseSetup setup = SetUpCase(c);
  BackpropOptions bo;
  bo.threads = threads;
  bo.reference_kernels = c.reference_kernels;
  Backprop bp(setup.model, setup.params, setup.seeds, bo);
  return bp.Backward(bp.Forward({}, setup.values), setup.weights);
}

inline GradCase ToFloat32(GradCase c) {
  for (Tensor& t : c.inputs) {
    if (t.dtype() != DType::kDouble) continue;
    Tensor f(DType::kFloat, t.dims());
    for (int64_t i = 0; i < t.numel(); ++i)
      f.mutable_data<float>()[i] = static_cast<float>(t.data<double>()[i]);
    t = f;
  }
  return c;
}

// The float32 rule gives the float64 rule's gradients to float32 accuracy.
inline void ExpectFloat32MatchesFloat64(const GradCase& c64) {
  const std::vector<Tensor> g64 = RuleGradients(c64, 1);
  const std::vector<Tensor> g32 = RuleGradients(ToFloat32(c64), 1);
  ASSERT_EQ(g64.size(), g32.size());
  for (size_t p = 0; p < g64.size(); ++p) {
    ASSERT_EQ(g32[p].dtype(), DType::kFloat) << c64.op;
    ASSERT_EQ(g32[p].dims(), g64[p].dims()) << c64.op;
    for (int64_t e = 0; e < g64[p].numel(); ++e) {
      const double a = g64[p].data<double>()[e], b = g32[p].data<float>()[e];
      EXPECT_LE(std::abs(a - b), kFloat32VsFloat64.abs + kFloat32VsFloat64.rel * std::abs(a))
          << c64.op << " float32 gradient " << p << "[" << e << "]: " << b << " vs float64 " << a;
    }
  }
}

// Same gradients, bit for bit, with a 1-thread and a 2-thread pool.
inline void ExpectThreadInvariant(const GradCase& c) {
  const std::vector<Tensor> g1 = RuleGradients(c, 1);
  const std::vector<Tensor> g2 = RuleGradients(c, 2);
  ASSERT_EQ(g1.size(), g2.size());
  for (size_t p = 0; p < g1.size(); ++p) {
    ASSERT_EQ(g1[p].nbytes(), g2[p].nbytes());
    EXPECT_EQ(std::memcmp(g1[p].raw(), g2[p].raw(), g1[p].nbytes()), 0) << c.op << " gradient " << p;
  }
}

}  // namespace compress::train::testing
