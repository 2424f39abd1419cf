// Conv, ConvTranspose, ConvInteger and QLinearConv: hand-computed cases, error messages, fast kernels against
// the reference on random shapes, and bit-identical results across thread counts.

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "compress/util/error.h"
#include "compress/util/half.h"
#include "support/rounding.h"
#include "support/test_support.h"

namespace compress {
namespace {

using testing::RunNode;

using testing::ExpectWithinRoundingBound;
using testing::Gamma;

void ExpectBitwiseEqual(const Tensor& a, const Tensor& b, const std::string& what) {
  ASSERT_EQ(a.dims(), b.dims()) << what;
  ASSERT_EQ(a.dtype(), b.dtype()) << what;
  EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.nbytes()), 0) << what;
}

void ExpectFloats(const Tensor& t, const std::vector<int64_t>& dims, const std::vector<float>& values) {
  ASSERT_EQ(t.dims(), dims);
  ASSERT_EQ(t.numel(), static_cast<int64_t>(values.size()));
  for (size_t i = 0; i < values.size(); ++i)
    EXPECT_FLOAT_EQ(t.data<float>()[i], values[i]) << "element " << i;
}

Tensor Random(const std::vector<int64_t>& dims, std::mt19937& rng) {
  Tensor t(DType::kFloat, dims);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (int64_t i = 0; i < t.numel(); ++i) t.mutable_data<float>()[i] = dist(rng);
  return t;
}

Tensor Abs(const Tensor& t) {
  Tensor out(DType::kFloat, t.dims());
  for (int64_t i = 0; i < t.numel(); ++i) out.mutable_data<float>()[i] = std::fabs(t.data<float>()[i]);
  return out;
}

std::vector<Tensor> AbsAll(const std::vector<Tensor>& ts) {
  std::vector<Tensor> out;
  for (const auto& t : ts) out.push_back(Abs(t));
  return out;
}

Node MakeNode(const std::string& op, size_t inputs, std::vector<Attribute> attrs = {},
              const std::string& name = "") {
  Node n;
  n.name = name;
  n.op_type = op;
  for (size_t i = 0; i < inputs; ++i) n.inputs.push_back("in" + std::to_string(i));
  n.outputs = {"y"};
  n.attributes = std::move(attrs);
  return n;
}

// Runs `node` expecting Error(kInvalidInput); returns its message.
std::string ErrorOf(const Node& node, const std::vector<Tensor>& inputs, int64_t opset, bool reference) {
  try {
    RunNode(node, inputs, opset, reference);
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput);
    return e.what();
  }
  ADD_FAILURE() << "no error";
  return "";
}

// ---------------------------------------------------------------------------------------------------------
// Conv

TEST(ConvTest, HandComputed2DWithBias) {
  const Node conv = MakeNode("Conv", 3);
  const Tensor x = Tensor::FromVector<float>({1, 1, 3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9});
  const Tensor w = Tensor::FromVector<float>({1, 1, 2, 2}, {1, 2, 3, 4});
  const Tensor b = Tensor::FromVector<float>({1}, {0.5f});
  for (const bool reference : {true, false}) {
    ExpectFloats(RunNode(conv, {x, w, b}, 17, reference)[0], {1, 1, 2, 2}, {37.5f, 47.5f, 67.5f, 77.5f});
  }
}

TEST(ConvTest, StridesDilationsAndAsymmetricPads1D) {
  // Input positions o * 2 - 1 + {0, 2}: o=0 reads pad and x[1]; o=1 reads x[1], x[3]; o=2 reads x[3] and pad.
  const Node conv = MakeNode(
      "Conv", 2,
      {Attribute::Ints("strides", {2}), Attribute::Ints("dilations", {2}), Attribute::Ints("pads", {1, 2})});
  const Tensor x = Tensor::FromVector<float>({1, 1, 5}, {1, 2, 3, 4, 5});
  const Tensor w = Tensor::FromVector<float>({1, 1, 2}, {1, 10});
  for (const bool reference : {true, false}) {
    ExpectFloats(RunNode(conv, {x, w}, 17, reference)[0], {1, 1, 3}, {20, 42, 4});
  }
}

TEST(ConvTest, AutoPadSameUpperPadsTheEndAndSameLowerTheBeginning) {
  const Tensor x = Tensor::FromVector<float>({1, 1, 4}, {1, 2, 3, 4});
  const Tensor w = Tensor::FromVector<float>({1, 1, 2}, {1, 1});
  for (const bool reference : {true, false}) {
    ExpectFloats(
        RunNode(MakeNode("Conv", 2, {Attribute::String("auto_pad", "SAME_UPPER")}), {x, w}, 17, reference)[0],
        {1, 1, 4}, {3, 5, 7, 4});
    ExpectFloats(
        RunNode(MakeNode("Conv", 2, {Attribute::String("auto_pad", "SAME_LOWER")}), {x, w}, 17, reference)[0],
        {1, 1, 4}, {1, 3, 5, 7});
    ExpectFloats(
        RunNode(MakeNode("Conv", 2, {Attribute::String("auto_pad", "VALID")}), {x, w}, 17, reference)[0],
        {1, 1, 3}, {3, 5, 7});
  }
}

TEST(ConvTest, GroupsSplitInputAndOutputChannels) {
  // Two groups: output channels 0-1 see input channel 0 (value 1), channels 2-3 see channel 1 (value 2).
  const Node conv = MakeNode("Conv", 2, {Attribute::Int("group", 2)});
  const Tensor x = Tensor::FromVector<float>({1, 2, 1, 1}, {1, 2});
  const Tensor w = Tensor::FromVector<float>({4, 1, 1, 1}, {1, 2, 3, 4});
  for (const bool reference : {true, false}) {
    ExpectFloats(RunNode(conv, {x, w}, 17, reference)[0], {1, 4, 1, 1}, {1, 2, 6, 8});
  }
}

// The two crashes of hand-made models (a group of the wrong attribute type, a negative group), reached in
// the kernels directly without the load-time checks: an Error naming the node, in every convolution.
TEST(ConvTest, MalformedGroupIsAnErrorNotACrash) {
  const Tensor x = Tensor::FromVector<float>({1, 2, 1, 1}, {1, 2});
  const Tensor w = Tensor::FromVector<float>({4, 1, 1, 1}, {1, 2, 3, 4});
  for (const char* op : {"Conv", "ConvTranspose"}) {
    for (const bool reference : {true, false}) {
      const std::string negative = ErrorOf(MakeNode(op, 2, {Attribute::Int("group", -2)}, "c"), {x, w}, 17, reference);
      EXPECT_NE(negative.find("'c' (" + std::string(op) + "): group -2 must be positive"), std::string::npos) << negative;
      const std::string zero = ErrorOf(MakeNode(op, 2, {Attribute::Int("group", 0)}, "c"), {x, w}, 17, reference);
      EXPECT_NE(zero.find("group 0 must be positive"), std::string::npos) << zero;
      const std::string as_float =
          ErrorOf(MakeNode(op, 2, {Attribute::Float("group", 2.0f)}, "c"), {x, w}, 17, reference);
      EXPECT_NE(as_float.find("'c' (" + std::string(op) + "): attribute 'group' is float, expected int"),
                std::string::npos)
          << as_float;
      const std::string strides =
          ErrorOf(MakeNode(op, 2, {Attribute::Floats("strides", {1.0f, 1.0f})}, "c"), {x, w}, 17, reference);
      EXPECT_NE(strides.find("attribute 'strides' is floats, expected ints"), std::string::npos) << strides;
    }
  }
}

TEST(ConvTest, Float16WeightsArePackedAtBuildTime) {
  // Small integers: every product and sum is exact in float16 and float32.
  const Node conv = MakeNode("Conv", 2, {Attribute::Ints("pads", {1, 1, 1, 1})});
  auto half = [](const std::vector<int64_t>& dims, const std::vector<float>& v) {
    std::vector<uint16_t> bits;
    for (float f : v) bits.push_back(FloatToHalf(f));
    return Tensor::FromBytes(DType::kFloat16, dims, bits.data(), bits.size() * 2);
  };
  const Tensor x = half({1, 1, 2, 2}, {1, 2, 3, 4});
  const Tensor w = half({1, 1, 3, 3}, {0, 0, 0, 0, 1, 0, 0, 0, 2});
  const Tensor y = RunNode(conv, {x, w}, 17, false, 1, {false, true})[0];
  ASSERT_EQ(y.dtype(), DType::kFloat16);
  ASSERT_EQ(y.dims(), (std::vector<int64_t>{1, 1, 2, 2}));
  const std::vector<float> want = {1 + 2 * 4, 2, 3, 4};
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_EQ(HalfToFloat(static_cast<const uint16_t*>(y.raw())[i]), want[i]);
}

TEST(ConvTest, ShapeErrorsNameTheNode) {
  const Node conv = MakeNode("Conv", 3, {}, "conv_bad");
  const Tensor x = Tensor(DType::kFloat, {1, 3, 5, 5});
  const Tensor w4 = Tensor(DType::kFloat, {2, 4, 3, 3});
  const Tensor w3 = Tensor(DType::kFloat, {2, 3, 3, 3});
  for (const bool reference : {true, false}) {
    const std::string channels = ErrorOf(conv, {x, w4, Tensor(DType::kFloat, {2})}, 17, reference);
    EXPECT_NE(channels.find(conv.Describe() + ": X [1,3,5,5]"), std::string::npos) << channels;
    EXPECT_NE(channels.find("has 3 channels but W [2,4,3,3]"), std::string::npos) << channels;
    const std::string bias = ErrorOf(conv, {x, w3, Tensor(DType::kFloat, {3})}, 17, reference);
    EXPECT_NE(bias.find(conv.Describe() + ": bias B [3] must be [2]"), std::string::npos) << bias;
    const std::string big =
        ErrorOf(conv, {Tensor(DType::kFloat, {1, 3, 2, 2}), w3, Tensor(DType::kFloat, {2})}, 17, reference);
    EXPECT_NE(big.find(conv.Describe() + ": the window [3,3]"), std::string::npos) << big;
  }
}

// One random convolution: rank 1-3, groups (including depthwise, with and without a channel multiplier),
// strides, dilations, pads or auto_pad, 1x1 kernels, batches; weights constant or not.
struct RandomConv {
  Node node;
  std::vector<Tensor> inputs;
  std::vector<bool> constant;
  int64_t terms = 0;  // products summed per output, plus the bias
};

RandomConv MakeRandomConv(std::mt19937& rng, bool transpose) {
  auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  const int64_t rank = std::vector<int64_t>{1, 2, 2, 2, 3}[static_cast<size_t>(pick(0, 4))];
  const int64_t kind = pick(0, 3);  // 0, 1: plain, 2: grouped, 3: depthwise
  const int64_t group = kind == 2 ? pick(2, 3) : kind == 3 ? pick(2, 6) : 1;
  const int64_t cin_g = kind == 3 ? 1 : pick(1, 4), cout_g = kind == 3 ? pick(1, 2) : pick(1, 5);
  const bool pointwise = pick(0, 5) == 0;
  std::vector<int64_t> kernel, strides, dilations, pads(static_cast<size_t>(2 * rank)), in;
  for (int64_t d = 0; d < rank; ++d) {
    kernel.push_back(pointwise ? 1 : pick(1, rank == 3 ? 3 : 4));
    strides.push_back(pointwise ? 1 : pick(1, 3));
    dilations.push_back(pick(1, 2));
    const int64_t k_eff = (kernel.back() - 1) * dilations.back() + 1;
    pads[static_cast<size_t>(d)] = pointwise ? 0 : pick(0, k_eff - 1);
    pads[static_cast<size_t>(d + rank)] = pointwise ? 0 : pick(0, k_eff - 1);
    in.push_back(std::max<int64_t>(1, k_eff + pick(-1, rank == 3 ? 4 : 9)));
  }
  RandomConv c;
  std::vector<Attribute> attrs = {Attribute::Int("group", group), Attribute::Ints("strides", strides),
                                  Attribute::Ints("dilations", dilations)};
  const int64_t pad_mode = pick(0, 5);
  if (pad_mode == 1) {
    attrs.push_back(Attribute::String("auto_pad", pick(0, 1) == 0 ? "SAME_UPPER" : "SAME_LOWER"));
  } else if (pad_mode == 2 && !transpose) {
    attrs.push_back(Attribute::String("auto_pad", "VALID"));
  } else {
    attrs.push_back(Attribute::Ints("pads", pads));
  }
  if (!transpose) {
    // Keep the padded input at least as large as the dilated kernel.
    for (int64_t d = 0; d < rank; ++d) {
      const int64_t k_eff = (kernel[static_cast<size_t>(d)] - 1) * dilations[static_cast<size_t>(d)] + 1;
      in[static_cast<size_t>(d)] = std::max(in[static_cast<size_t>(d)], k_eff);
    }
  } else {
    // The output is s * (in - 1) + k_eff - pads: keep it positive.
    for (int64_t d = 0; d < rank; ++d) {
      const int64_t s = strides[static_cast<size_t>(d)];
      const int64_t total = pads[static_cast<size_t>(d)] + pads[static_cast<size_t>(d + rank)];
      in[static_cast<size_t>(d)] = std::max(in[static_cast<size_t>(d)], 1 + (total + s - 1) / s);
    }
  }
  if (transpose && pick(0, 2) == 0) {
    std::vector<int64_t> output_padding;
    for (int64_t d = 0; d < rank; ++d) output_padding.push_back(pick(0, strides[static_cast<size_t>(d)] - 1));
    attrs.push_back(Attribute::Ints("output_padding", output_padding));
  }
  const int64_t batch = pick(1, 3);
  std::vector<int64_t> x_dims = {batch, cin_g * group};
  x_dims.insert(x_dims.end(), in.begin(), in.end());
  std::vector<int64_t> w_dims =
      transpose ? std::vector<int64_t>{cin_g * group, cout_g} : std::vector<int64_t>{cout_g * group, cin_g};
  w_dims.insert(w_dims.end(), kernel.begin(), kernel.end());
  const bool bias = pick(0, 2) != 0;
  c.node = MakeNode(transpose ? "ConvTranspose" : "Conv", bias ? 3 : 2, attrs);
  c.inputs = {Random(x_dims, rng), Random(w_dims, rng)};
  if (bias) c.inputs.push_back(Random({cout_g * group}, rng));
  const bool constant_weights = pick(0, 1) == 1;
  c.constant = {false, constant_weights, constant_weights};
  int64_t kernel_size = 1;
  for (int64_t k : kernel) kernel_size *= k;
  c.terms = cin_g * kernel_size + 1;
  return c;
}

std::string Describe(const RandomConv& c) {
  std::string s =
      c.node.op_type + " X" + ShapeToString(c.inputs[0].dims()) + " W" + ShapeToString(c.inputs[1].dims());
  for (const auto& a : c.node.attributes) {
    s += " " + a.name + "=" +
         (a.type == AttrType::kString ? a.s
          : a.type == AttrType::kInt  ? std::to_string(a.i)
                                      : ShapeToString(a.ints));
  }
  return s + (c.constant[1] ? " constant W" : "");
}

TEST(ConvTest, FastMatchesReferenceOnRandomShapes) {
  testing::ForEachKernelIsa([&](KernelIsa isa) {
    SCOPED_TRACE(KernelIsaName(isa));
    std::mt19937 rng(20240601);
    for (int i = 0; i < 150; ++i) {
      const RandomConv c = MakeRandomConv(rng, false);
      const std::string what = Describe(c);
      const Tensor ref = RunNode(c.node, c.inputs, 17, true)[0];
      const Tensor fast = RunNode(c.node, c.inputs, 17, false, 2, c.constant)[0];
      const Tensor magnitude = RunNode(c.node, AbsAll(c.inputs), 17, true)[0];
      ExpectWithinRoundingBound(fast, ref, magnitude, c.terms, what);
    }
  });
}

TEST(ConvTest, ThreadCountDoesNotChangeBits) {
  std::mt19937 rng(7);
  struct Shape {
    std::vector<int64_t> x, w;
    int64_t group, pad;
  };
  // A 3x3 conv at 14x14, a depthwise one, a small map (several images per GEMM block) and a 1x1 conv.
  const std::vector<Shape> shapes = {{{64, 32, 14, 14}, {64, 32, 3, 3}, 1, 1},
                                     {{64, 32, 14, 14}, {32, 1, 3, 3}, 32, 1},
                                     {{64, 64, 7, 7}, {64, 64, 3, 3}, 1, 1},
                                     {{16, 32, 28, 28}, {48, 32, 1, 1}, 1, 0}};
  for (const Shape& s : shapes) {
    const Node conv = MakeNode(
        "Conv", 3, {Attribute::Int("group", s.group), Attribute::Ints("pads", {s.pad, s.pad, s.pad, s.pad})});
    const std::vector<Tensor> inputs = {Random(s.x, rng), Random(s.w, rng), Random({s.w[0]}, rng)};
    const Tensor one = RunNode(conv, inputs, 17, false, 1, {false, true, true})[0];
    const Tensor three = RunNode(conv, inputs, 17, false, 3, {false, true, true})[0];
    ExpectBitwiseEqual(one, three, "X" + ShapeToString(s.x) + " W" + ShapeToString(s.w));
  }
}

// ---------------------------------------------------------------------------------------------------------
// ConvTranspose

TEST(ConvTransposeTest, HandComputed1D) {
  // Each input element scatters x * [1, 1, 1] at 2 * i: [1, 1, 1+2, 2, 2].
  const Tensor x = Tensor::FromVector<float>({1, 1, 2}, {1, 2});
  const Tensor w = Tensor::FromVector<float>({1, 1, 3}, {1, 1, 1});
  const Tensor b = Tensor::FromVector<float>({1}, {10});
  for (const bool reference : {true, false}) {
    ExpectFloats(
        RunNode(MakeNode("ConvTranspose", 2, {Attribute::Ints("strides", {2})}), {x, w}, 17, reference)[0],
        {1, 1, 5}, {1, 1, 3, 2, 2});
    ExpectFloats(RunNode(MakeNode("ConvTranspose", 3,
                                  {Attribute::Ints("strides", {2}), Attribute::Ints("pads", {1, 1})}),
                         {x, w, b}, 17, reference)[0],
                 {1, 1, 3}, {11, 13, 12});
    ExpectFloats(RunNode(MakeNode("ConvTranspose", 2,
                                  {Attribute::Ints("strides", {2}), Attribute::Ints("output_padding", {1})}),
                         {x, w}, 17, reference)[0],
                 {1, 1, 6}, {1, 1, 3, 2, 2, 0});
    // output_shape 6 = one more than the natural 5: total padding -1, taken from the end.
    ExpectFloats(RunNode(MakeNode("ConvTranspose", 2,
                                  {Attribute::Ints("strides", {2}), Attribute::Ints("output_shape", {6})}),
                         {x, w}, 17, reference)[0],
                 {1, 1, 6}, {1, 1, 3, 2, 2, 0});
    // SAME_UPPER: output 2 * 2 = 4 of the natural 5, the odd padding at the end.
    ExpectFloats(
        RunNode(MakeNode("ConvTranspose", 2,
                         {Attribute::Ints("strides", {2}), Attribute::String("auto_pad", "SAME_UPPER")}),
                {x, w}, 17, reference)[0],
        {1, 1, 4}, {1, 1, 3, 2});
  }
}

TEST(ConvTransposeTest, GroupsAndErrors) {
  // Group 2: input channel 0 feeds output channel 0, channel 1 feeds output channel 1.
  const Tensor x = Tensor::FromVector<float>({1, 2, 1}, {1, 2});
  const Tensor w = Tensor::FromVector<float>({2, 1, 2}, {1, 2, 3, 4});
  for (const bool reference : {true, false}) {
    ExpectFloats(
        RunNode(MakeNode("ConvTranspose", 2, {Attribute::Int("group", 2)}), {x, w}, 17, reference)[0],
        {1, 2, 2}, {1, 2, 6, 8});
    const Node up = MakeNode("ConvTranspose", 2, {}, "up");
    const std::string msg = ErrorOf(up, {x, Tensor(DType::kFloat, {3, 1, 2})}, 17, reference);
    EXPECT_NE(msg.find(up.Describe() + ": X [1,2,1] has 2 channels but W [3,1,2] expects 3"),
              std::string::npos)
        << msg;
  }
}

TEST(ConvTransposeTest, FastMatchesReferenceOnRandomShapes) {
  testing::ForEachKernelIsa([&](KernelIsa isa) {
    SCOPED_TRACE(KernelIsaName(isa));
    std::mt19937 rng(1234);
    for (int i = 0; i < 80; ++i) {
      const RandomConv c = MakeRandomConv(rng, true);
      const std::string what = Describe(c);
      const Tensor ref = RunNode(c.node, c.inputs, 17, true)[0];
      const Tensor fast = RunNode(c.node, c.inputs, 17, false, 2, c.constant)[0];
      const Tensor magnitude = RunNode(c.node, AbsAll(c.inputs), 17, true)[0];
      ExpectWithinRoundingBound(fast, ref, magnitude, c.terms, what);
    }
  });
}

TEST(ConvTransposeTest, ThreadCountDoesNotChangeBits) {
  std::mt19937 rng(9);
  // The sample autoencoder's upsampling: 4x4 kernel, stride 2, at batch 64.
  const Node up = MakeNode("ConvTranspose", 3,
                           {Attribute::Ints("strides", {2, 2}), Attribute::Ints("pads", {1, 1, 1, 1})});
  const std::vector<Tensor> inputs = {Random({64, 32, 7, 7}, rng), Random({32, 16, 4, 4}, rng),
                                      Random({16}, rng)};
  ExpectBitwiseEqual(RunNode(up, inputs, 17, false, 1, {false, true, true})[0],
                     RunNode(up, inputs, 17, false, 3, {false, true, true})[0], "ConvTranspose");
}

// ---------------------------------------------------------------------------------------------------------
// ConvInteger, QLinearConv

template <typename T>
Tensor Ints(const std::vector<int64_t>& dims, const std::vector<T>& v) {
  return Tensor::FromVector<T>(dims, v);
}

TEST(ConvIntegerTest, ZeroPointsAreSubtractedAndPaddingAddsNothing) {
  // x - 10 = [0, 10, 20], w - 1 = [2, 4], pads 1: [0*4, 0*2 + 10*4, 10*2 + 20*4, 20*2].
  const Node conv = MakeNode("ConvInteger", 4, {Attribute::Ints("pads", {1, 1})});
  const std::vector<Tensor> inputs = {Ints<uint8_t>({1, 1, 3}, {10, 20, 30}),
                                      Ints<uint8_t>({1, 1, 2}, {3, 5}), Ints<uint8_t>({}, {10}),
                                      Ints<uint8_t>({}, {1})};
  for (const bool reference : {true, false}) {
    const Tensor y = RunNode(conv, inputs, 10, reference)[0];
    ASSERT_EQ(y.dtype(), DType::kInt32);
    ASSERT_EQ(y.dims(), (std::vector<int64_t>{1, 1, 4}));
    EXPECT_EQ(std::vector<int32_t>(y.data<int32_t>(), y.data<int32_t>() + 4),
              (std::vector<int32_t>{0, 40, 100, 40}));
  }
}

TEST(ConvIntegerTest, Int8WeightsWithPerChannelZeroPoints) {
  const Node conv = MakeNode("ConvInteger", 4);
  const std::vector<Tensor> inputs = {Ints<uint8_t>({1, 1, 2}, {200, 100}),
                                      Ints<int8_t>({2, 1, 1}, {-128, 127}), Ints<uint8_t>({}, {0}),
                                      Ints<int8_t>({2}, {-1, 1})};
  for (const bool reference : {true, false}) {
    const Tensor y = RunNode(conv, inputs, 10, reference)[0];
    EXPECT_EQ(std::vector<int32_t>(y.data<int32_t>(), y.data<int32_t>() + 4),
              (std::vector<int32_t>{200 * -127, 100 * -127, 200 * 126, 100 * 126}));
  }
}

TEST(QLinearConvTest, PerChannelScalesBiasAndRoundHalfToEven) {
  // x - 10 = [2, 4]; w - w_zp = [2] and [-2]; bias [1, 3]:
  // channel 0: [5, 9] * (0.5 * 0.25) = [0.625, 1.125] -> [1, 1] + 128
  // channel 1: [-1, -5] * 0.5 = [-0.5, -2.5] -> half to even [0, -2] + 128
  const Node conv = MakeNode("QLinearConv", 9);
  const std::vector<Tensor> inputs = {Ints<uint8_t>({1, 1, 2}, {12, 14}),
                                      Tensor::FromVector<float>({}, {0.5f}),
                                      Ints<uint8_t>({}, {10}),
                                      Ints<int8_t>({2, 1, 1}, {3, -2}),
                                      Tensor::FromVector<float>({2}, {0.25f, 1.0f}),
                                      Ints<int8_t>({2}, {1, 0}),
                                      Tensor::FromVector<float>({}, {1.0f}),
                                      Ints<uint8_t>({}, {128}),
                                      Ints<int32_t>({2}, {1, 3})};
  for (const bool reference : {true, false}) {
    const Tensor y = RunNode(conv, inputs, 10, reference)[0];
    ASSERT_EQ(y.dtype(), DType::kUInt8);
    EXPECT_EQ(std::vector<uint8_t>(y.data<uint8_t>(), y.data<uint8_t>() + 4),
              (std::vector<uint8_t>{129, 129, 128, 126}));
  }
}

TEST(QLinearConvTest, SaturatesToTheOutputType) {
  for (const int8_t w : {int8_t{100}, int8_t{-100}}) {
    const Node conv = MakeNode("QLinearConv", 8);
    const Tensor one = Tensor::FromVector<float>({}, {1.0f});
    const std::vector<Tensor> as_uint8 = {
        Ints<uint8_t>({1, 1, 1}, {200}), one, Ints<uint8_t>({}, {0}), Ints<int8_t>({1, 1, 1}, {w}), one,
        Ints<int8_t>({}, {0}),           one, Ints<uint8_t>({}, {0})};
    std::vector<Tensor> as_int8 = as_uint8;
    as_int8[7] = Ints<int8_t>({}, {0});
    for (const bool reference : {true, false}) {
      EXPECT_EQ(RunNode(conv, as_uint8, 10, reference)[0].data<uint8_t>()[0], w > 0 ? 255 : 0);
      EXPECT_EQ(RunNode(conv, as_int8, 10, reference)[0].data<int8_t>()[0], w > 0 ? 127 : -128);
    }
  }
}

Tensor RandomEightBit(const std::vector<int64_t>& dims, bool is_signed, std::mt19937& rng) {
  std::uniform_int_distribution<int> dist(is_signed ? -128 : 0, is_signed ? 127 : 255);
  Tensor t(is_signed ? DType::kInt8 : DType::kUInt8, dims);
  auto* p = static_cast<uint8_t*>(t.mutable_raw());
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<uint8_t>(dist(rng));
  return t;
}

// ConvInteger and QLinearConv on the random convolution shapes, with 8-bit data of either signedness,
// per-tensor or per-channel weight zero points, and constant or runtime weights. The fast kernels are exact,
// so they must equal the reference bit for bit; some cases sum more than 256 products per output (x 255^2
// each), past where a single float32 sum would stay exact.
TEST(IntegerConvTest, FastEqualsReferenceOnRandomShapes) {
  std::mt19937 rng(77);
  auto pick = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
  for (int i = 0; i < 80; ++i) {
    RandomConv c = MakeRandomConv(rng, false);
    if (i % 8 == 0) {
      // A deep one: 32 input channels x 3x3.
      c.node = MakeNode("Conv", 2, {Attribute::Ints("pads", {1, 1, 1, 1})});
      c.inputs = {Random({2, 32, 6, 5}, rng), Random({4, 32, 3, 3}, rng)};
    }
    const bool x_signed = pick(0, 1) == 1, w_signed = pick(0, 1) == 1, qlinear = pick(0, 1) == 1;
    const Tensor x = RandomEightBit(c.inputs[0].dims(), x_signed, rng);
    const Tensor w = RandomEightBit(c.inputs[1].dims(), w_signed, rng);
    const int64_t channels = w.dims()[0];
    const Tensor x_zp = RandomEightBit({}, x_signed, rng);
    const Tensor w_zp = RandomEightBit(
        pick(0, 1) == 1 ? std::vector<int64_t>{channels} : std::vector<int64_t>{}, w_signed, rng);
    Node node = c.node;
    node.op_type = qlinear ? "QLinearConv" : "ConvInteger";
    std::vector<Tensor> inputs;
    if (qlinear) {
      std::vector<float> w_scales;
      for (int64_t m = 0; m < channels; ++m)
        w_scales.push_back(std::uniform_real_distribution<float>(1e-4f, 1e-2f)(rng));
      inputs = {x,
                Tensor::FromVector<float>({}, {0.02f}),
                x_zp,
                w,
                Tensor::FromVector<float>({channels}, w_scales),
                w_zp,
                Tensor::FromVector<float>({}, {0.05f}),
                RandomEightBit({}, pick(0, 1) == 1, rng)};
      if (pick(0, 1) == 1)
        inputs.push_back(
            Ints<int32_t>({channels}, std::vector<int32_t>(static_cast<size_t>(channels), -1234)));
    } else {
      inputs = {x, w, x_zp, w_zp};
    }
    node.inputs.clear();
    for (size_t k = 0; k < inputs.size(); ++k) node.inputs.push_back("in" + std::to_string(k));
    const bool constant = pick(0, 1) == 1;
    std::vector<bool> constant_inputs(inputs.size(), false);
    for (size_t k = 1; k < inputs.size(); ++k) constant_inputs[k] = constant;
    const std::string what = Describe(c) + (qlinear ? " QLinearConv" : " ConvInteger");
    ExpectBitwiseEqual(RunNode(node, inputs, 10, false, 2, constant_inputs)[0],
                       RunNode(node, inputs, 10, true)[0], what);
  }
}

// Constant weights (packed for the 8-bit GEMM) on larger odd shapes than the random ones: several column
// blocks per image, partial panels, stride 2, dilation, groups, depthwise, 1x1 convolutions of uint8 input
// (read in place) and of int8 input, 1-D and 3-D windows; ConvInteger and QLinearConv (per-channel scales, a
// bias), either signedness. Bit-identical to the reference, on 1 and 3 threads.
TEST(IntegerConvTest, ConstantWeightsOnLargerOddShapes) {
  std::mt19937 rng(2024);
  struct Shape {
    std::vector<int64_t> x, w;
    int64_t group, stride, dilation;
    std::vector<int64_t> pads;
  };
  const std::vector<Shape> shapes = {
      {{2, 32, 14, 14}, {64, 32, 3, 3}, 1, 1, 1, {1, 1, 1, 1}},
      {{1, 64, 40, 40}, {8, 64, 3, 3}, 1, 1, 1, {1, 1, 1, 1}},  // 576-deep: column blocks
      {{1, 8, 61, 59}, {24, 8, 3, 3}, 1, 2, 1, {1, 0, 0, 1}},
      {{2, 12, 17, 15}, {18, 4, 3, 3}, 3, 1, 2, {0, 1, 2, 1}},
      {{3, 16, 19, 23}, {16, 1, 3, 3}, 16, 2, 1, {1, 1, 1, 1}},
      {{2, 24, 13, 11}, {40, 24, 1, 1}, 1, 1, 1, {0, 0, 0, 0}},
      {{2, 5, 37}, {7, 5, 4}, 1, 3, 1, {2, 1}},
      {{1, 3, 6, 7, 5}, {4, 3, 2, 3, 2}, 1, 1, 1, {1, 0, 1, 1, 1, 0}},
  };
  int variant = 0;
  for (const Shape& shape : shapes) {
    const size_t rank = shape.x.size() - 2;
    for (const bool qlinear : {false, true}) {
      const bool x_signed = variant % 2 == 1, w_signed = variant % 4 < 2;
      ++variant;
      const int64_t channels = shape.w[0];
      const Tensor x = RandomEightBit(shape.x, x_signed, rng);
      const Tensor w = RandomEightBit(shape.w, w_signed, rng);
      const Tensor x_zp = RandomEightBit({}, x_signed, rng);
      const Tensor w_zp = RandomEightBit(
          variant % 3 == 0 ? std::vector<int64_t>{} : std::vector<int64_t>{channels}, w_signed, rng);
      std::vector<Tensor> inputs;
      if (qlinear) {
        std::vector<float> w_scales;
        std::vector<int32_t> bias;
        for (int64_t m = 0; m < channels; ++m) {
          w_scales.push_back(std::uniform_real_distribution<float>(1e-4f, 1e-2f)(rng));
          bias.push_back(std::uniform_int_distribution<int32_t>(-5000, 5000)(rng));
        }
        inputs = {x,
                  Tensor::FromVector<float>({}, {0.02f}),
                  x_zp,
                  w,
                  Tensor::FromVector<float>({channels}, w_scales),
                  w_zp,
                  Tensor::FromVector<float>({}, {0.05f}),
                  RandomEightBit({}, variant % 3 == 1, rng),
                  Ints<int32_t>({channels}, bias)};
      } else {
        inputs = {x, w, x_zp, w_zp};
      }
      const Node conv = MakeNode(qlinear ? "QLinearConv" : "ConvInteger", inputs.size(),
                                 {Attribute::Int("group", shape.group),
                                  Attribute::Ints("strides", std::vector<int64_t>(rank, shape.stride)),
                                  Attribute::Ints("dilations", std::vector<int64_t>(rank, shape.dilation)),
                                  Attribute::Ints("pads", shape.pads)});
      std::vector<bool> constant(inputs.size(), true);
      constant[0] = false;
      const std::string what = conv.op_type + " X" + ShapeToString(shape.x) +
                               (x_signed ? " int8" : " uint8") + " W" + ShapeToString(shape.w) +
                               (w_signed ? " int8" : " uint8");
      const Tensor reference = RunNode(conv, inputs, 10, true)[0];
      ExpectBitwiseEqual(RunNode(conv, inputs, 10, false, 1, constant)[0], reference, what);
      ExpectBitwiseEqual(RunNode(conv, inputs, 10, false, 3, constant)[0], reference, what + " 3 threads");
    }
  }
}

TEST(IntegerConvTest, ThreadCountDoesNotChangeBits) {
  std::mt19937 rng(8);
  const Node conv = MakeNode("ConvInteger", 4, {Attribute::Ints("pads", {1, 1, 1, 1})});
  const std::vector<Tensor> inputs = {RandomEightBit({16, 32, 14, 14}, false, rng),
                                      RandomEightBit({32, 32, 3, 3}, true, rng), Ints<uint8_t>({}, {128}),
                                      Ints<int8_t>({}, {0})};
  ExpectBitwiseEqual(RunNode(conv, inputs, 10, false, 1, {false, true, true, true})[0],
                     RunNode(conv, inputs, 10, false, 3, {false, true, true, true})[0], "ConvInteger");
}

}  // namespace
}  // namespace compress
