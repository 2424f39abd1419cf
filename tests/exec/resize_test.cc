// Resize, Upsample and Pad kernels. Expected values are worked out by hand in the comments.

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "compress/util/error.h"
#include "support/test_support.h"

namespace compress {
namespace {

using testing::ErrorOf;

using testing::RunNode;
using Dims = std::vector<int64_t>;
using Floats = std::vector<float>;

Node MakeNode(const std::string& op, std::vector<std::string> inputs, std::vector<Attribute> attrs = {}) {
  Node n;
  n.name = "n0";
  n.op_type = op;
  n.inputs = std::move(inputs);
  n.outputs = {"y"};
  n.attributes = std::move(attrs);
  return n;
}

Tensor F(const Dims& dims, const Floats& v) { return Tensor::FromVector<float>(dims, v); }
Tensor I64(const Dims& v) { return Tensor::FromVector<int64_t>({static_cast<int64_t>(v.size())}, v); }
Floats Values(const Tensor& t) { return {t.data<float>(), t.data<float>() + t.numel()}; }

void ExpectNear(const Floats& got, const Floats& want, float tol = 1e-5f) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], tol) << "element " << i;
}

// The error names the node and its op type, then says what is wrong.
void ExpectNodeError(const std::string& msg, const std::string& op, const std::string& what) {
  EXPECT_NE(msg.find("n0"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(" + op + "): " + what), std::string::npos) << msg;
}

// Resize-13 of x with scales (sizes empty) or sizes (scales empty), through the reference and the fast
// kernels (which must agree); returns the fast result.
Tensor Resize(const Tensor& x, const Floats& scales, const Dims& sizes, std::vector<Attribute> attrs,
              const Floats& roi = {}, int64_t opset = 13) {
  std::vector<std::string> names = {"x", roi.empty() ? "" : "roi", scales.empty() ? "" : "scales"};
  std::vector<Tensor> inputs = {x};
  if (!roi.empty()) inputs.push_back(F({static_cast<int64_t>(roi.size())}, roi));
  if (!scales.empty()) inputs.push_back(F({static_cast<int64_t>(scales.size())}, scales));
  if (!sizes.empty()) {
    names.push_back("sizes");
    inputs.push_back(I64(sizes));
  }
  const Node n = MakeNode("Resize", names, std::move(attrs));
  const Tensor ref = RunNode(n, inputs, opset, true)[0];
  const Tensor fast = RunNode(n, inputs, opset, false, 2)[0];
  EXPECT_EQ(ref.dims(), fast.dims());
  if (ref.dims() == fast.dims()) ExpectNear(Values(fast), Values(ref));
  return fast;
}

Attribute Mode(const std::string& m) { return Attribute::String("mode", m); }
Attribute Coord(const std::string& c) { return Attribute::String("coordinate_transformation_mode", c); }

TEST(Resize, LinearHalfPixelUpsample) {
  // Along each axis the sources are -0.25, 0.25, 0.75, 1.25: clamped, 3/4-1/4, 1/4-3/4, clamped.
  const Tensor y = Resize(F({1, 1, 2, 2}, {1, 2, 3, 4}), {1, 1, 2, 2}, {}, {Mode("linear")});
  ASSERT_EQ(y.dims(), (Dims{1, 1, 4, 4}));
  ExpectNear(Values(y), {1, 1.25, 1.75, 2, 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3, 3.25, 3.75, 4});
}

TEST(Resize, LinearAlignCornersAndAsymmetric) {
  // align_corners, 2 -> 3: sources 0, 0.5, 1.
  const Tensor a =
      Resize(F({1, 1, 2, 2}, {1, 2, 3, 4}), {}, {1, 1, 3, 3}, {Mode("linear"), Coord("align_corners")});
  ExpectNear(Values(a), {1, 1.5, 2, 2, 2.5, 3, 3, 3.5, 4});
  // asymmetric, x2: sources 0, 0.5, 1, 1.5 (clamped to the last element).
  const Tensor b = Resize(F({2}, {1, 2}), {2}, {}, {Mode("linear"), Coord("asymmetric")});
  ExpectNear(Values(b), {1, 1.5, 2, 2});
  // align_corners with a fractional output length: 4 * 0.6 = 2.4, so source 1 maps to 1 * 3 / 1.4.
  const Tensor c = Resize(F({4}, {1, 2, 3, 4}), {0.6f}, {}, {Mode("linear"), Coord("align_corners")});
  ExpectNear(Values(c), {1, 1 + 3 / 1.4f});
}

TEST(Resize, PytorchHalfPixelDiffersForASingleOutput) {
  const Tensor x = F({4}, {1, 2, 3, 4});
  // 4 -> 3: sources (i + 0.5) / 0.75 - 0.5 = 1/6, 1.5, 17/6 in both modes.
  ExpectNear(Values(Resize(x, {}, {3}, {Mode("linear"), Coord("pytorch_half_pixel")})),
             {7 / 6.0f, 2.5f, 23 / 6.0f});
  ExpectNear(Values(Resize(x, {}, {3}, {Mode("linear"), Coord("half_pixel")})), {7 / 6.0f, 2.5f, 23 / 6.0f});
  // 4 -> 1: pytorch_half_pixel reads source 0, half_pixel source 0.5 / 0.25 - 0.5 = 1.5.
  ExpectNear(Values(Resize(x, {}, {1}, {Mode("linear"), Coord("pytorch_half_pixel")})), {1});
  ExpectNear(Values(Resize(x, {}, {1}, {Mode("linear"), Coord("half_pixel")})), {2.5});
}

TEST(Resize, TfCropAndResizeExtrapolates) {
  // roi [0.5, 1.5] of length 4, 3 outputs: sources 1.5, 3, 4.5; the last lies outside [0, 3].
  const Tensor y =
      Resize(F({4}, {1, 2, 3, 4}), {}, {3},
             {Mode("linear"), Coord("tf_crop_and_resize"), Attribute::Float("extrapolation_value", 10)},
             {0.5f, 1.5f});
  ExpectNear(Values(y), {2.5, 4, 10});
  const std::string msg = ErrorOf([] {
    RunNode(MakeNode("Resize", {"x", "", "", "sizes"}, {Coord("tf_crop_and_resize")}),
            {F({4}, {1, 2, 3, 4}), I64({3})}, 13);
  });
  ExpectNodeError(msg, "Resize", "roi is required");
}

TEST(Resize, NearestModes) {
  const Tensor x = F({4}, {10, 20, 30, 40});
  // asymmetric x2: sources 0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5.
  auto nearest = [&](const std::string& mode) {
    return Values(Resize(x, {2}, {}, {Coord("asymmetric"), Attribute::String("nearest_mode", mode)}));
  };
  EXPECT_EQ(nearest("round_prefer_floor"), (Floats{10, 10, 20, 20, 30, 30, 40, 40}));
  EXPECT_EQ(nearest("round_prefer_ceil"), (Floats{10, 20, 20, 30, 30, 40, 40, 40}));
  EXPECT_EQ(nearest("floor"), (Floats{10, 10, 20, 20, 30, 30, 40, 40}));
  EXPECT_EQ(nearest("ceil"), (Floats{10, 20, 20, 30, 30, 40, 40, 40}));
  // half_pixel, 1/2: sources 0.5 and 2.5 round down by default.
  EXPECT_EQ(Values(Resize(x, {0.5f}, {}, {})), (Floats{10, 30}));
  // Output sizes are floor(scale * input): 4 * 0.6 = 2.4 -> 2.
  EXPECT_EQ(Resize(x, {0.6f}, {}, {}).dims(), Dims{2});
}

TEST(Resize, CubicWeights) {
  // Keys cubic with A = -0.75 at ratio 0.5 weighs the four taps -0.09375, 0.59375, 0.59375, -0.09375.
  // asymmetric x2 on [1, 2, 4, 8]: output 1 reads inputs (-1 -> 0), 0, 1, 2.
  const Tensor y = Resize(F({4}, {1, 2, 4, 8}), {2}, {}, {Mode("cubic"), Coord("asymmetric")});
  const Floats v = Values(y);
  EXPECT_NEAR(v[0], 1.0f, 1e-6f);
  EXPECT_NEAR(v[1], -0.09375f + 0.59375f + 0.59375f * 2 - 0.09375f * 4, 1e-6f);
  EXPECT_NEAR(v[2], 2.0f, 1e-6f);
  // exclude_outside drops the tap at -1 and renormalises the other three.
  const Tensor e = Resize(F({4}, {1, 2, 4, 8}), {2}, {},
                          {Mode("cubic"), Coord("asymmetric"), Attribute::Int("exclude_outside", 1)});
  EXPECT_NEAR(Values(e)[1], (0.59375f + 0.59375f * 2 - 0.09375f * 4) / (1 + 0.09375f), 1e-6f);
}

TEST(Resize, Opset18AxesAspectRatioAndAntialias) {
  const Tensor x = F({1, 1, 2, 4}, {1, 2, 3, 4, 5, 6, 7, 8});
  const Node n = MakeNode(
      "Resize", {"x", "", "", "sizes"},
      {Attribute::Ints("axes", {2, 3}), Attribute::String("keep_aspect_ratio_policy", "not_smaller")});
  // not_smaller: scale max(4/2, 4/4) = 2 for both axes.
  EXPECT_EQ(RunNode(n, {x, I64({4, 4})}, 18)[0].dims(), (Dims{1, 1, 4, 8}));
  Node m = n;
  m.SetAttr(Attribute::String("keep_aspect_ratio_policy", "not_larger"));
  const Tensor same = RunNode(m, {x, I64({4, 4})}, 18)[0];
  EXPECT_EQ(Values(same), Values(x));
  // Antialiased linear 4 -> 2: the triangle is twice as wide. Output 0 (source 0.5) weighs inputs -1..2 by
  // 1/8, 3/8, 3/8, 1/8: (1 + 3 + 6 + 3) / 8; output 1 (source 2.5) inputs 1..4: (2 + 9 + 12 + 4) / 8.
  const Tensor aa =
      Resize(F({4}, {1, 2, 3, 4}), {0.5f}, {}, {Mode("linear"), Attribute::Int("antialias", 1)}, {}, 18);
  ExpectNear(Values(aa), {1.625f, 3.375f});
}

TEST(Resize, FastKernelMatchesReferenceOnLargerInputs) {
  std::vector<float> v(2 * 3 * 9 * 11);
  for (size_t i = 0; i < v.size(); ++i) v[i] = std::sin(static_cast<float>(i) * 0.37f) * 5.0f;
  const Tensor x = F({2, 3, 9, 11}, v);
  for (const std::string mode : {"nearest", "linear", "cubic"}) {
    for (const std::string coord : {"half_pixel", "align_corners", "asymmetric", "pytorch_half_pixel"}) {
      SCOPED_TRACE(mode + " " + coord);
      Resize(x, {1, 1, 1.7f, 0.6f}, {}, {Mode(mode), Coord(coord)});
      Resize(x, {}, {2, 3, 4, 23}, {Mode(mode), Coord(coord)});
    }
  }
  // Resizing a leading axis takes the reference path in both.
  Resize(x, {2, 1, 1, 1}, {}, {Mode("linear")});
  Resize(x, {}, {2, 3, 5, 5}, {Mode("linear"), Coord("tf_crop_and_resize")},
         {0, 0, 0.2f, -0.1f, 1, 1, 0.9f, 1.2f});
}

TEST(Resize, RejectsScalesTogetherWithSizes) {
  const std::string msg = ErrorOf([] {
    RunNode(MakeNode("Resize", {"x", "", "s", "z"}), {F({2}, {1, 2}), F({1}, {2}), I64({4})}, 13);
  });
  ExpectNodeError(msg, "Resize", "only one of scales and sizes may be given");
}

TEST(Upsample, NearestAndLinearWithScalesAsAttributeOrInput) {
  const Tensor x = F({1, 1, 2, 2}, {1, 2, 3, 4});
  const Tensor a = RunNode(MakeNode("Upsample", {"x", "s"}), {x, F({4}, {1, 1, 2, 3})}, 9)[0];
  ASSERT_EQ(a.dims(), (Dims{1, 1, 4, 6}));
  EXPECT_EQ(Values(a), (Floats{1, 1, 1, 2, 2, 2, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 3, 3, 3, 4, 4, 4}));
  // Linear upsampling uses asymmetric sources: i / 2 = 0, 0.5, 1, 1.5.
  const Tensor b = RunNode(
      MakeNode("Upsample", {"x"}, {Mode("linear"), Attribute::Floats("scales", {1, 1, 1, 2})}), {x}, 7)[0];
  EXPECT_EQ(Values(b), (Floats{1, 1.5, 2, 2, 3, 3.5, 4, 4}));
}

// --- Pad
// ----------------------------------------------------------------------------------------------------

Floats Pad1D(const std::string& mode, const Floats& x, const Dims& pads, int64_t opset = 13) {
  return Values(RunNode(MakeNode("Pad", {"x", "p"}, {Attribute::String("mode", mode)}),
                        {F({static_cast<int64_t>(x.size())}, x), I64(pads)}, opset)[0]);
}

TEST(Pad, ReflectEdgeAndWrap) {
  EXPECT_EQ(Pad1D("reflect", {1, 2, 3}, {2, 2}), (Floats{3, 2, 1, 2, 3, 2, 1}));
  EXPECT_EQ(Pad1D("edge", {1, 2, 3}, {2, 1}), (Floats{1, 1, 1, 2, 3, 3}));
  EXPECT_EQ(Pad1D("wrap", {1, 2, 3}, {2, 1}, 19), (Floats{2, 3, 1, 2, 3, 1}));
  EXPECT_EQ(Pad1D("constant", {1, 2, 3}, {1, 0}), (Floats{0, 1, 2, 3}));
  // Pads wider than the input reflect back and forth.
  EXPECT_EQ(Pad1D("reflect", {1, 2}, {3, 0}), (Floats{2, 1, 2, 1, 2}));
}

TEST(Pad, NegativePadsCropBeforePadding) {
  EXPECT_EQ(Pad1D("reflect", {1, 2, 3, 4, 5}, {-1, 2}), (Floats{2, 3, 4, 5, 4, 3}));
  EXPECT_EQ(Pad1D("constant", {1, 2, 3, 4, 5}, {-2, -1}), (Floats{3, 4}));
  const std::string msg = ErrorOf([] { Pad1D("constant", {1, 2}, {-2, -1}); });
  ExpectNodeError(msg, "Pad", "pads -2, -1 remove more than the axis size 2");
}

TEST(Pad, ConstantValueInputAttributeAndAxes) {
  const Tensor x = F({2, 2}, {1, 2, 3, 4});
  // pads [begin0, begin1, end0, end1] = [1, 0, 0, 2].
  const Tensor a = RunNode(MakeNode("Pad", {"x", "p", "v"}), {x, I64({1, 0, 0, 2}), F({}, {9})}, 13)[0];
  ASSERT_EQ(a.dims(), (Dims{3, 4}));
  EXPECT_EQ(Values(a), (Floats{9, 9, 9, 9, 1, 2, 9, 9, 3, 4, 9, 9}));
  const Tensor b =
      RunNode(MakeNode("Pad", {"x"}, {Attribute::Ints("pads", {1, 0, 0, 2}), Attribute::Float("value", 9)}),
              {x}, 2)[0];
  EXPECT_EQ(Values(b), Values(a));
  // Opset 18: pads for axis 1 only.
  const Tensor c = RunNode(MakeNode("Pad", {"x", "p", "", "axes"}), {x, I64({1, 1}), I64({-1})}, 18)[0];
  EXPECT_EQ(Values(c), (Floats{0, 1, 2, 0, 0, 3, 4, 0}));
}

TEST(Pad, MovesFloat16Bitwise) {
  const std::vector<uint16_t> bits = {0x7d01, 0x8000, 0x0001};
  const Tensor x = Tensor::FromBytes(DType::kFloat16, {3}, bits.data(), 6);
  const uint16_t one = 0x3c00;
  const Tensor v = Tensor::FromBytes(DType::kFloat16, {}, &one, 2);
  const Tensor y = RunNode(MakeNode("Pad", {"x", "p", "v"}), {x, I64({1, 1}), v}, 13)[0];
  const auto* p = static_cast<const uint16_t*>(y.raw());
  EXPECT_EQ(std::vector<uint16_t>(p, p + 5), (std::vector<uint16_t>{0x3c00, 0x7d01, 0x8000, 0x0001, 0x3c00}));
}

}  // namespace
}  // namespace compress
