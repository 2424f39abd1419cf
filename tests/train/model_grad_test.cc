// Whole-model gradient checks: every sample model, converted to float64, differentiated end to end with
// respect to all of its trainable weights and compared with central finite differences on a sample of
// elements of every weight tensor.
#include <gtest/gtest.h>

#include <random>

#include "compress/io/onnx_io.h"
#include "compress/train/autodiff.h"
#include "support/test_support.h"
#include "train/grad_check.h"

namespace compress::train {
namespace {

using testing::RandomTensor;

// Float64 through a dozen layers with h = 1e-7: rounding in the loss (about 1e-16 of its size, divided
// by h) stays near 1e-8; 1e-7 absolute plus 1e-6 relative leaves a margin while a wrong rule (a missing
// factor, a transposed index) is off by far more. The small step also keeps the moves away from the kinks
// of Relu and MaxPool: with h = 1e-6 one bias of cnn_bn moved an activation across zero (4e-4 relative).
constexpr double kModelAbs = 1e-7;
constexpr double kModelRel = 1e-6;
constexpr double kStep = 1e-7;
constexpr int kElementsPerTensor = 8;

Tensor ToDouble(const Tensor& t) {
  if (t.dtype() != DType::kFloat) return t;
  Tensor d(DType::kDouble, t.dims(), t.name());
  for (int64_t i = 0; i < t.numel(); ++i) d.mutable_data<double>()[i] = t.data<float>()[i];
  return d;
}

void RetypeValues(std::vector<ValueInfo>& values) {
  for (auto& v : values) {
    if (v.type.kind == TypeInfo::Kind::kTensor && v.type.elem_type == DType::kFloat) v.type.elem_type = DType::kDouble;
  }
}

// The same computation in float64: float tensors, value types, Constant values and Casts to float.
Model ToFloat64(Model m) {
  Graph& g = m.graph;
  for (auto& t : g.initializers) t = ToDouble(t);
  RetypeValues(g.inputs);
  RetypeValues(g.outputs);
  RetypeValues(g.value_info);
  for (auto& n : g.nodes) {
    for (auto& a : n.attributes) {
      for (auto& t : a.tensors) t = ToDouble(t);
    }
    if (n.op_type == "Cast" && n.AttrInt("to", 0) == static_cast<int64_t>(DType::kFloat)) {
      n.SetAttr(Attribute::Int("to", static_cast<int64_t>(DType::kDouble)));
    }
  }
  return m;
}

void CheckModel(const std::string& name) {
  SCOPED_TRACE(name);
  const Model model = ToFloat64(LoadModel(compress::testing::SourcePath("models/" + name + ".onnx")));
  const std::string out = model.graph.outputs.at(0).name;
  const std::vector<std::string> params = Backprop::TrainableParameters(model, {out});
  ASSERT_FALSE(params.empty());
  BackpropOptions o;
  o.threads = 1;
  o.reference_kernels = true;
  Backprop bp(model, params, {out}, o);
  const Tensor x = RandomTensor(DType::kDouble, {1, 1, 28, 28}, 5, 0.0, 1.0);
  std::vector<Tensor> values;
  for (const auto& p : params) values.push_back(*model.graph.FindInitializer(p));
  const ValueMap fwd = bp.Forward({x}, values);
  const Tensor r = RandomTensor(DType::kDouble, fwd.at(out).dims(), 6);
  const std::vector<Tensor> grads = bp.Backward(fwd, {r});
  auto loss = [&](const std::vector<Tensor>& v) {
    const ValueMap f = bp.Forward({x}, v);
    double l = 0;
    for (int64_t i = 0; i < r.numel(); ++i) l += f.at(out).data<double>()[i] * r.data<double>()[i];
    return l;
  };
  std::mt19937 rng(7);
  const double h = kStep;
  int checked = 0;
  for (size_t p = 0; p < params.size(); ++p) {
    ASSERT_EQ(grads[p].dims(), values[p].dims()) << params[p];
    double norm = 0;
    for (int64_t e = 0; e < grads[p].numel(); ++e) norm += std::abs(grads[p].data<double>()[e]);
    EXPECT_GT(norm, 0.0) << params[p] << " gets no gradient";
    for (int k = 0; k < kElementsPerTensor && k < values[p].numel(); ++k) {
      const int64_t e = static_cast<int64_t>(rng() % static_cast<uint32_t>(values[p].numel()));
      std::vector<Tensor> plus = values, minus = values;
      plus[p] = Tensor::FromBytes(DType::kDouble, values[p].dims(), values[p].raw(), values[p].nbytes());
      minus[p] = Tensor::FromBytes(DType::kDouble, values[p].dims(), values[p].raw(), values[p].nbytes());
      plus[p].mutable_data<double>()[e] += h;
      minus[p].mutable_data<double>()[e] -= h;
      const double numeric = (loss(plus) - loss(minus)) / (2 * h);
      const double analytic = grads[p].data<double>()[e];
      EXPECT_NEAR(analytic, numeric, kModelAbs + kModelRel * std::max(std::abs(numeric), std::abs(analytic)))
          << params[p] << "[" << e << "]";
      ++checked;
    }
  }
  EXPECT_GT(checked, 20);
}

TEST(ModelGradCheck, Mlp) { CheckModel("mlp"); }
TEST(ModelGradCheck, Cnn) { CheckModel("cnn"); }
TEST(ModelGradCheck, CnnWithBatchNormalization) { CheckModel("cnn_bn"); }
TEST(ModelGradCheck, VisionTransformer) { CheckModel("vit"); }

}  // namespace
}  // namespace compress::train
