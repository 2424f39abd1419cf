// Backward rules of the data-movement operators against central finite differences in float64: every
// attribute and opset form the forward kernels handle, odd sizes, repeated and negative indices.
#include <gtest/gtest.h>

#include <limits>

#include "compress/train/autodiff.h"
#include "train/grad_check.h"

namespace compress::train {
namespace {

using testing::ExpectGradientsMatch;
using testing::GradCase;
using testing::GradTolerance;
using testing::RandomTensor;

// These ops copy elements, so L is linear in x and central differences with h = 1e-6 in float64 are exact
// up to rounding of L (~1e-10 for these sizes): 1e-8 absolute / 1e-7 relative leaves two orders of margin.
constexpr GradTolerance kCopyF64{1e-8, 1e-7};

Tensor Ints(std::vector<int64_t> v, std::vector<int64_t> dims = {}) {
  if (dims.empty()) dims = {static_cast<int64_t>(v.size())};
  Tensor t(DType::kInt64, dims);
  for (size_t i = 0; i < v.size(); ++i) t.mutable_data<int64_t>()[i] = v[i];
  return t;
}

// Only input 0 (the data) is trained; the other inputs are shapes, indices, axes or constants.
GradCase Case(const std::string& op, int64_t opset, std::vector<Tensor> inputs,
              std::vector<Attribute> attrs = {}, int outputs = 1) {
  GradCase c;
  c.op = op;
  c.opset = opset;
  c.inputs = std::move(inputs);
  c.attributes = std::move(attrs);
  c.trainable.assign(c.inputs.size(), false);
  c.trainable[0] = true;
  c.num_outputs = outputs;
  return c;
}

TEST(ShapeGrad, SameElementOpsWithTheirShapeInputs) {
  const Tensor x = RandomTensor(DType::kDouble, {2, 3, 5}, 1);
  ExpectGradientsMatch(Case("Reshape", 14, {x, Ints({5, -1})}), kCopyF64);
  ExpectGradientsMatch(Case("Reshape", 14, {x, Ints({0, 15})}), kCopyF64);
  ExpectGradientsMatch(Case("Flatten", 13, {x}, {Attribute::Int("axis", -1)}), kCopyF64);
  ExpectGradientsMatch(Case("Identity", 16, {x}), kCopyF64);
  const Tensor x1 = RandomTensor(DType::kDouble, {3, 1, 5, 1}, 2);
  ExpectGradientsMatch(Case("Squeeze", 13, {x1, Ints({1, -1})}), kCopyF64);
  ExpectGradientsMatch(Case("Squeeze", 13, {x1}), kCopyF64);
  ExpectGradientsMatch(Case("Squeeze", 11, {x1}, {Attribute::Ints("axes", {-3})}), kCopyF64);
  ExpectGradientsMatch(Case("Unsqueeze", 13, {x, Ints({0, -1})}), kCopyF64);
  ExpectGradientsMatch(Case("Unsqueeze", 11, {x}, {Attribute::Ints("axes", {1})}), kCopyF64);
}

TEST(ShapeGrad, TransposePermAndDefaultReverse) {
  const Tensor x = RandomTensor(DType::kDouble, {2, 3, 5}, 3);
  ExpectGradientsMatch(Case("Transpose", 13, {x}, {Attribute::Ints("perm", {1, 2, 0})}), kCopyF64);
  ExpectGradientsMatch(Case("Transpose", 13, {x}), kCopyF64);
  ExpectGradientsMatch(Case("Transpose", 13, {RandomTensor(DType::kDouble, {3, 1, 2, 3}, 4)},
                            {Attribute::Ints("perm", {3, 0, 2, 1})}),
                       kCopyF64);
}

TEST(ShapeGrad, ConcatEveryInputPositiveAndNegativeAxis) {
  for (const int64_t axis : {1, -1, 0}) {
    GradCase c;
    c.op = "Concat";
    c.opset = 13;
    c.attributes = {Attribute::Int("axis", axis)};
    const std::vector<int64_t> a = axis == 0 ? std::vector<int64_t>{1, 3} : std::vector<int64_t>{3, 1};
    const std::vector<int64_t> b = axis == 0 ? std::vector<int64_t>{4, 3} : std::vector<int64_t>{3, 4};
    const std::vector<int64_t> d = axis == 0 ? std::vector<int64_t>{2, 3} : std::vector<int64_t>{3, 2};
    c.inputs = {RandomTensor(DType::kDouble, a, 5), RandomTensor(DType::kDouble, b, 6),
                RandomTensor(DType::kDouble, d, 7)};
    ExpectGradientsMatch(c, kCopyF64);
  }
}

TEST(ShapeGrad, SplitAttributeInputEvenAndNumOutputs) {
  const Tensor x = RandomTensor(DType::kDouble, {3, 7}, 8);
  // Opset 11: sizes as an attribute, negative axis.
  ExpectGradientsMatch(
      Case("Split", 11, {x}, {Attribute::Int("axis", -1), Attribute::Ints("split", {2, 4, 1})}, 3), kCopyF64);
  // Opset 13: sizes as the second input.
  ExpectGradientsMatch(Case("Split", 13, {x, Ints({5, 2})}, {Attribute::Int("axis", 1)}, 2), kCopyF64);
  // Opset 13: even split of axis 0.
  ExpectGradientsMatch(Case("Split", 13, {x}, {Attribute::Int("axis", 0)}, 3), kCopyF64);
  // Opset 18: num_outputs, chunks of ceil(7 / 3) = 3, the last one 1.
  ExpectGradientsMatch(
      Case("Split", 18, {x}, {Attribute::Int("axis", 1), Attribute::Int("num_outputs", 3)}, 3), kCopyF64);
}

// Only some outputs of a Split reach the loss: the other slices of x get a zero gradient.
TEST(ShapeGrad, SplitWithOutputsWithoutGradient) {
  Model m;
  m.ir_version = 8;
  m.opset_imports.push_back({"", 13});
  Tensor x = RandomTensor(DType::kDouble, {2, 6}, 9);
  x.set_name("x");
  m.graph.initializers.push_back(x);
  Node n;
  n.name = "split";
  n.op_type = "Split";
  n.inputs = {"x"};
  n.outputs = {"a", "b", "c"};
  n.attributes = {Attribute::Int("axis", 1)};
  m.graph.nodes.push_back(n);
  for (const char* o : {"a", "b", "c"}) {
    ValueInfo v;
    v.name = o;
    m.graph.outputs.push_back(v);
  }
  BackpropOptions bo;
  bo.threads = 1;
  for (int only = 0; only < 3; ++only) {
    const std::string seed = std::string(1, static_cast<char>('a' + only));
    Backprop bp(m, {"x"}, {seed}, bo);
    const ValueMap fwd = bp.Forward({}, {x});
    const Tensor r = RandomTensor(DType::kDouble, {2, 2}, 10u + static_cast<uint32_t>(only));
    const std::vector<Tensor> g = bp.Backward(fwd, {r});
    ASSERT_EQ(g[0].dims(), x.dims());
    for (int64_t i = 0; i < 2; ++i) {
      for (int64_t j = 0; j < 6; ++j) {
        const double expected = j / 2 == only ? r.data<double>()[i * 2 + j % 2] : 0.0;
        EXPECT_EQ(g[0].data<double>()[i * 6 + j], expected) << "seed " << seed << " at " << i << "," << j;
      }
    }
  }
  // Two of three outputs seeded: both slices, the third zero.
  Backprop bp(m, {"x"}, {"a", "c"}, bo);
  const ValueMap fwd = bp.Forward({}, {x});
  const Tensor ra = RandomTensor(DType::kDouble, {2, 2}, 20), rc = RandomTensor(DType::kDouble, {2, 2}, 21);
  const std::vector<Tensor> g = bp.Backward(fwd, {ra, rc});
  for (int64_t i = 0; i < 2; ++i) {
    for (int64_t j = 0; j < 6; ++j) {
      const double expected = j < 2    ? ra.data<double>()[i * 2 + j]
                              : j >= 4 ? rc.data<double>()[i * 2 + j - 4]
                                       : 0.0;
      EXPECT_EQ(g[0].data<double>()[i * 6 + j], expected) << i << "," << j;
    }
  }
}

TEST(ShapeGrad, SliceAttributesInputsNegativeClampedAndStepped) {
  const Tensor x = RandomTensor(DType::kDouble, {5, 7, 3}, 11);
  // Opset 9: attributes; negative start, end past the axis (clamped).
  ExpectGradientsMatch(Case("Slice", 9, {x},
                            {Attribute::Ints("starts", {-4, 1}), Attribute::Ints("ends", {1000, -1}),
                             Attribute::Ints("axes", {0, 1})}),
                       kCopyF64);
  // Opset 9 without axes.
  ExpectGradientsMatch(Case("Slice", 9, {x}, {Attribute::Ints("starts", {1}), Attribute::Ints("ends", {4})}),
                       kCopyF64);
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  // Opset 13: inputs, steps of 2 and negative axes.
  ExpectGradientsMatch(Case("Slice", 13, {x, Ints({0, 1}), Ints({kMax, 7}), Ints({-3, -2}), Ints({2, 3})}),
                       kCopyF64);
  // Negative steps: reverse an axis completely and part of another.
  ExpectGradientsMatch(Case("Slice", 13, {x, Ints({-1, 5}), Ints({-kMax, 0}), Ints({0, 1}), Ints({-1, -2})}),
                       kCopyF64);
  // Opset 10: inputs without axes and steps.
  ExpectGradientsMatch(Case("Slice", 10, {x, Ints({1, 2}), Ints({3, -1})}), kCopyF64);
}

TEST(ShapeGrad, GatherRepeatedAndNegativeIndicesSumTheirGradients) {
  const Tensor x = RandomTensor(DType::kDouble, {5, 3}, 12);
  // Index 1 three times (also as -4), index 4 as -1 twice.
  ExpectGradientsMatch(Case("Gather", 13, {x, Ints({1, -1, 1, 0, -4, 4})}, {Attribute::Int("axis", 0)}),
                       kCopyF64);
  const Tensor y = RandomTensor(DType::kDouble, {2, 3, 5}, 13);
  ExpectGradientsMatch(Case("Gather", 13, {y, Ints({4, -5, 4, 2}, {2, 2})}, {Attribute::Int("axis", -1)}),
                       kCopyF64);
  // A scalar index drops the axis.
  ExpectGradientsMatch(
      Case("Gather", 11, {y, Ints({2}, std::vector<int64_t>{1})}, {Attribute::Int("axis", 1)}), kCopyF64);
  Tensor scalar(DType::kInt64, {});
  scalar.mutable_data<int64_t>()[0] = -2;
  ExpectGradientsMatch(Case("Gather", 13, {y, scalar}, {Attribute::Int("axis", 1)}), kCopyF64);
}

TEST(ShapeGrad, ExpandAndTileSumOverCopies) {
  ExpectGradientsMatch(Case("Expand", 13, {RandomTensor(DType::kDouble, {3, 1}, 14), Ints({2, 3, 5})}),
                       kCopyF64);
  ExpectGradientsMatch(Case("Expand", 8, {RandomTensor(DType::kDouble, {1, 3, 1}, 15), Ints({2, 1, 1, 4})}),
                       kCopyF64);
  ExpectGradientsMatch(Case("Tile", 13, {RandomTensor(DType::kDouble, {2, 3}, 16), Ints({3, 2})}), kCopyF64);
  ExpectGradientsMatch(Case("Tile", 13, {RandomTensor(DType::kDouble, {3, 1, 2}, 17), Ints({1, 5, 2})}),
                       kCopyF64);
}

TEST(ShapeGrad, PadConstantReflectEdgeInputsAndAttributes) {
  const Tensor x = RandomTensor(DType::kDouble, {3, 5}, 18);
  Tensor value(DType::kDouble, {});
  value.mutable_data<double>()[0] = 0.75;
  // Opset 13: pads as input, constant value input (not trained).
  ExpectGradientsMatch(
      Case("Pad", 13, {x, Ints({1, 2, 2, 0}), value}, {Attribute::String("mode", "constant")}), kCopyF64);
  ExpectGradientsMatch(Case("Pad", 13, {x, Ints({0, 3, 1, 2})}), kCopyF64);
  // Reflect pads more than once around a short axis only within len - 1; edge repeats the border.
  ExpectGradientsMatch(Case("Pad", 13, {x, Ints({2, 3, 1, 4})}, {Attribute::String("mode", "reflect")}),
                       kCopyF64);
  ExpectGradientsMatch(Case("Pad", 13, {x, Ints({2, 3, 1, 4})}, {Attribute::String("mode", "edge")}),
                       kCopyF64);
  // Negative pads crop.
  ExpectGradientsMatch(Case("Pad", 13, {x, Ints({-1, 2, 1, -2})}, {Attribute::String("mode", "edge")}),
                       kCopyF64);
  // Opset 18: axes input.
  ExpectGradientsMatch(
      Case("Pad", 18, {x, Ints({2, 1}), Tensor(), Ints({-1})}, {Attribute::String("mode", "reflect")}),
      kCopyF64);
  // Opset 2: pads and value as attributes.
  ExpectGradientsMatch(Case("Pad", 2, {x},
                            {Attribute::String("mode", "constant"), Attribute::Ints("pads", {1, 1, 0, 2}),
                             Attribute::Float("value", 0.5f)}),
                       kCopyF64);
  ExpectGradientsMatch(
      Case("Pad", 2, {x}, {Attribute::String("mode", "reflect"), Attribute::Ints("pads", {2, 0, 1, 3})}),
      kCopyF64);
}

TEST(ShapeGrad, Float32GradientsHaveTheInputType) {
  GradCase c = Case("Transpose", 13, {RandomTensor(DType::kFloat, {3, 4}, 19)});
  c.h = 1e-2;  // float32: L is linear in x, a large step only limits rounding
  // Float32 evaluation of L: about 1e-6 relative rounding over the step of 1e-2.
  constexpr GradTolerance kCopyF32{1e-4, 1e-3};
  ExpectGradientsMatch(c, kCopyF32);
}

}  // namespace
}  // namespace compress::train
