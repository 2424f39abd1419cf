// Backward rules of Resize and Upsample against central finite differences in float64: nearest (each input
// element gets the sum of the gradients of the output elements that copied it), linear and cubic (transposed
// weights), every coordinate transformation mode, scales or sizes, opset 10 / 11 / 13 / 18 forms, Upsample.
#include <gtest/gtest.h>

#include "compress/train/autodiff.h"
#include "train/grad_check.h"

namespace compress::train {
namespace {

using testing::ExpectGradientsMatch;
using testing::GradCase;
using testing::GradTolerance;
using testing::RandomTensor;

// Resize is linear in x: central differences with h = 1e-6 in float64 are exact up to rounding of L
// (~1e-10 here); 1e-8 absolute / 1e-7 relative leaves two orders of margin.
constexpr GradTolerance kResizeF64{1e-8, 1e-7};

Tensor Floats(std::vector<float> v) {
  Tensor t(DType::kFloat, {static_cast<int64_t>(v.size())});
  for (size_t i = 0; i < v.size(); ++i) t.mutable_data<float>()[i] = v[i];
  return t;
}
Tensor Ints(std::vector<int64_t> v) {
  Tensor t(DType::kInt64, {static_cast<int64_t>(v.size())});
  for (size_t i = 0; i < v.size(); ++i) t.mutable_data<int64_t>()[i] = v[i];
  return t;
}

GradCase Case(const std::string& op, int64_t opset, std::vector<Tensor> inputs,
              std::vector<Attribute> attrs) {
  GradCase c;
  c.op = op;
  c.opset = opset;
  c.inputs = std::move(inputs);
  c.attributes = std::move(attrs);
  c.trainable.assign(c.inputs.size(), false);
  c.trainable[0] = true;  // roi, scales and sizes are not differentiable
  return c;
}

const char* const kCoordModes[] = {"half_pixel",    "half_pixel_symmetric", "pytorch_half_pixel",
                                   "align_corners", "asymmetric",           "tf_half_pixel_for_nn"};

TEST(ResizeGrad, LinearEveryCoordinateModeUpAndDown) {
  const Tensor x = RandomTensor(DType::kDouble, {1, 2, 3, 5}, 1);
  for (const char* coord : kCoordModes) {
    for (const auto& scales : {std::vector<float>{1, 1, 2.0f, 1.5f}, std::vector<float>{1, 1, 0.7f, 0.6f}}) {
      SCOPED_TRACE(std::string(coord) + " scale " + std::to_string(scales[3]));
      ExpectGradientsMatch(Case("Resize", 13, {x, Tensor(), Floats(scales)},
                                {Attribute::String("mode", "linear"),
                                 Attribute::String("coordinate_transformation_mode", coord)}),
                           kResizeF64);
    }
  }
}

TEST(ResizeGrad, NearestEveryRoundingAndCoordinateMode) {
  const Tensor x = RandomTensor(DType::kDouble, {1, 1, 4, 5}, 2);
  for (const char* coord : kCoordModes) {
    for (const char* nearest : {"round_prefer_floor", "round_prefer_ceil", "floor", "ceil"}) {
      SCOPED_TRACE(std::string(coord) + " " + nearest);
      ExpectGradientsMatch(Case("Resize", 13, {x, Tensor(), Floats({1, 1, 1.5f, 2.2f})},
                                {Attribute::String("mode", "nearest"),
                                 Attribute::String("coordinate_transformation_mode", coord),
                                 Attribute::String("nearest_mode", nearest)}),
                           kResizeF64);
      // Shrinking: some inputs are never copied and get a zero gradient.
      ExpectGradientsMatch(Case("Resize", 13, {x, Tensor(), Floats({1, 1, 0.5f, 0.6f})},
                                {Attribute::String("mode", "nearest"),
                                 Attribute::String("coordinate_transformation_mode", coord),
                                 Attribute::String("nearest_mode", nearest)}),
                           kResizeF64);
    }
  }
}

TEST(ResizeGrad, SizesCubicExcludeOutsideAndCropAndResize) {
  const Tensor x = RandomTensor(DType::kDouble, {2, 3, 4}, 3);
  // Sizes instead of scales (opset 13: roi and scales omitted).
  ExpectGradientsMatch(
      Case("Resize", 13, {x, Tensor(), Tensor(), Ints({2, 5, 7})}, {Attribute::String("mode", "linear")}),
      kResizeF64);
  ExpectGradientsMatch(Case("Resize", 13, {x, Tensor(), Tensor(), Ints({2, 2, 9})},
                            {Attribute::String("mode", "nearest"),
                             Attribute::String("coordinate_transformation_mode", "align_corners")}),
                       kResizeF64);
  ExpectGradientsMatch(Case("Resize", 13, {x, Tensor(), Floats({1, 1.7f, 1.3f})},
                            {Attribute::String("mode", "cubic"), Attribute::Int("exclude_outside", 1)}),
                       kResizeF64);
  ExpectGradientsMatch(
      Case("Resize", 13, {x, Tensor(), Floats({1, 0.8f, 2.0f})}, {Attribute::String("mode", "cubic")}),
      kResizeF64);
  // tf_crop_and_resize: output elements outside the box take the extrapolation constant (no gradient).
  ExpectGradientsMatch(
      Case("Resize", 13, {x, Floats({0, -0.2f, 0.1f, 1, 0.9f, 1.3f}), Tensor(), Ints({2, 4, 5})},
           {Attribute::String("mode", "linear"),
            Attribute::String("coordinate_transformation_mode", "tf_crop_and_resize"),
            Attribute::Float("extrapolation_value", 3.0f)}),
      kResizeF64);
}

TEST(ResizeGrad, Opset10And11And18Forms) {
  const Tensor x = RandomTensor(DType::kDouble, {1, 1, 3, 4}, 4);
  // Opset 10: (X, scales), asymmetric coordinates, nearest rounds down when enlarging, up when shrinking.
  for (const char* mode : {"nearest", "linear"}) {
    ExpectGradientsMatch(
        Case("Resize", 10, {x, Floats({1, 1, 2.0f, 1.5f})}, {Attribute::String("mode", mode)}), kResizeF64);
    ExpectGradientsMatch(
        Case("Resize", 10, {x, Floats({1, 1, 0.7f, 0.5f})}, {Attribute::String("mode", mode)}), kResizeF64);
  }
  // Opset 11: roi given as an empty tensor.
  ExpectGradientsMatch(Case("Resize", 11, {x, Tensor(DType::kFloat, {0}), Floats({1, 1, 1.5f, 1.25f})},
                            {Attribute::String("mode", "linear"),
                             Attribute::String("coordinate_transformation_mode", "pytorch_half_pixel")}),
                       kResizeF64);
  // Opset 18: axes and keep_aspect_ratio_policy, antialias when shrinking.
  ExpectGradientsMatch(Case("Resize", 18, {x, Tensor(), Tensor(), Ints({5, 6})},
                            {Attribute::String("mode", "linear"), Attribute::Ints("axes", {-2, -1}),
                             Attribute::String("keep_aspect_ratio_policy", "not_larger")}),
                       kResizeF64);
  ExpectGradientsMatch(Case("Resize", 18, {x, Tensor(), Floats({0.6f, 0.5f})},
                            {Attribute::String("mode", "linear"), Attribute::Ints("axes", {2, 3}),
                             Attribute::Int("antialias", 1)}),
                       kResizeF64);
}

TEST(ResizeGrad, UpsampleScalesAttributeAndInput) {
  const Tensor x = RandomTensor(DType::kDouble, {1, 2, 3, 3}, 5);
  ExpectGradientsMatch(
      Case("Upsample", 7, {x},
           {Attribute::String("mode", "nearest"), Attribute::Floats("scales", {1, 1, 2, 3})}),
      kResizeF64);
  ExpectGradientsMatch(
      Case("Upsample", 7, {x},
           {Attribute::String("mode", "linear"), Attribute::Floats("scales", {1, 1, 2, 1.5f})}),
      kResizeF64);
  ExpectGradientsMatch(
      Case("Upsample", 9, {x, Floats({1, 1, 1.5f, 2})}, {Attribute::String("mode", "bilinear")}), kResizeF64);
}

TEST(ResizeGrad, Float32GradientHasTheInputType) {
  GradCase c =
      Case("Resize", 13, {RandomTensor(DType::kFloat, {1, 1, 3, 4}, 6), Tensor(), Floats({1, 1, 2, 1.5f})},
           {Attribute::String("mode", "linear")});
  c.h = 1e-2;  // L is linear in x: a large step only limits float32 rounding
  // Float32 evaluation of L: about 1e-6 relative rounding over the step of 1e-2.
  constexpr GradTolerance kResizeF32{1e-4, 1e-3};
  ExpectGradientsMatch(c, kResizeF32);
}

}  // namespace
}  // namespace compress::train
