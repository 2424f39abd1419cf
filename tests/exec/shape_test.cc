// Data movement and shape kernels: Reshape, Flatten, Squeeze, Unsqueeze, Transpose, Concat, Split, Slice,
// Gather, Shape, Size, ConstantOfShape, Identity, Dropout, Expand, Tile, Range.

#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include "compress/util/error.h"
#include "support/test_support.h"

namespace compress {
namespace {

using testing::ErrorOf;

using testing::RunNode;
using Dims = std::vector<int64_t>;

Node MakeNode(const std::string& op, std::vector<std::string> inputs, std::vector<Attribute> attrs = {},
              size_t outputs = 1) {
  Node n;
  n.name = "n0";
  n.op_type = op;
  n.inputs = std::move(inputs);
  for (size_t i = 0; i < outputs; ++i) n.outputs.push_back("y" + std::to_string(i));
  n.attributes = std::move(attrs);
  return n;
}

Tensor Iota(const Dims& dims, float start = 0.0f) {
  std::vector<float> v(static_cast<size_t>(ShapeElementCount(dims)));
  std::iota(v.begin(), v.end(), start);
  return Tensor::FromVector<float>(dims, v);
}

Tensor Int64s(const std::vector<int64_t>& v) {
  return Tensor::FromVector<int64_t>({static_cast<int64_t>(v.size())}, v);
}

std::vector<float> Floats(const Tensor& t) { return {t.data<float>(), t.data<float>() + t.numel()}; }
std::vector<int64_t> Ints(const Tensor& t) { return {t.data<int64_t>(), t.data<int64_t>() + t.numel()}; }

// float16 bit patterns next to ordinary values: NaNs with payloads (a float32 round trip quietens the
// signalling one, 0x7d01), negative zero, a subnormal, one and minus infinity.
Tensor HalfPattern(const Dims& dims) {
  std::vector<uint16_t> bits(static_cast<size_t>(ShapeElementCount(dims)));
  const uint16_t special[] = {0x7d01, 0x8000, 0x0001, 0x3c00, 0xfc00, 0x7e55};
  for (size_t i = 0; i < bits.size(); ++i) {
    bits[i] = i % 3 == 0 ? special[i / 3 % 6] : static_cast<uint16_t>(0x3000 + i);
  }
  return Tensor::FromBytes(DType::kFloat16, dims, bits.data(), bits.size() * 2);
}
std::vector<uint16_t> HalfBits(const Tensor& t) {
  const auto* p = static_cast<const uint16_t*>(t.raw());
  return {p, p + t.numel()};
}

// The error names the node and its op type, then says what is wrong.
void ExpectNodeError(const std::string& msg, const std::string& op, const std::string& what) {
  EXPECT_NE(msg.find("n0"), std::string::npos) << msg;
  EXPECT_NE(msg.find("(" + op + "): " + what), std::string::npos) << msg;
}

// --- Reshape and the other view ops ------------------------------------------------------------------------

TEST(Reshape, ZeroCopiesTheInputDimAndMinusOneIsInferred) {
  const Tensor x = Iota({2, 3, 4});
  const auto out = RunNode(MakeNode("Reshape", {"x", "s"}), {x, Int64s({4, 0, -1})}, 14);
  EXPECT_EQ(out[0].dims(), (Dims{4, 3, 2}));
  EXPECT_EQ(Floats(out[0]), Floats(x));
  // The output shares the input's buffer.
  EXPECT_EQ(out[0].raw(), x.raw());
}

TEST(Reshape, AllowZeroKeepsZeroAsASize) {
  const Tensor x(DType::kFloat, {0, 3});
  const auto out =
      RunNode(MakeNode("Reshape", {"x", "s"}, {Attribute::Int("allowzero", 1)}), {x, Int64s({3, 0})}, 14);
  EXPECT_EQ(out[0].dims(), (Dims{3, 0}));
  // Without allowzero the 0 copies dim 1 (3), and 9 elements do not fit 0.
  const std::string msg = ErrorOf([&] { RunNode(MakeNode("Reshape", {"x", "s"}), {x, Int64s({3, 0})}, 14); });
  ExpectNodeError(msg, "Reshape", "cannot reshape input of shape [0,3] (0 elements) to [3,3]");
  // allowzero with both 0 and -1 is invalid.
  EXPECT_THROW(
      RunNode(MakeNode("Reshape", {"x", "s"}, {Attribute::Int("allowzero", 1)}), {x, Int64s({0, -1})}, 14),
      Error);
}

TEST(Reshape, ElementCountMismatchNamesTheNode) {
  const std::string msg = ErrorOf([&] {
    RunNode(MakeNode("Reshape", {"x", "s"}), {Iota({2, 3}), Int64s({4, 2})}, 13);
  });
  ExpectNodeError(msg, "Reshape", "cannot reshape input of shape [2,3] (6 elements) to [4,2]");
  EXPECT_NE(ErrorOf([&] {
              RunNode(MakeNode("Reshape", {"x", "s"}), {Iota({2, 3}), Int64s({-1, -1})}, 13);
            }).find("more than one -1"),
            std::string::npos);
  EXPECT_NE(ErrorOf([&] {
              RunNode(MakeNode("Reshape", {"x", "s"}), {Iota({6}), Int64s({4, -1})}, 13);
            }).find("cannot reshape input of shape [6] to [4,-1]"),
            std::string::npos);
}

TEST(Reshape, Opset4TakesTheShapeAttribute) {
  const auto out =
      RunNode(MakeNode("Reshape", {"x"}, {Attribute::Ints("shape", {-1, 2})}), {Iota({2, 3})}, 4);
  EXPECT_EQ(out[0].dims(), (Dims{3, 2}));
}

TEST(Flatten, DefaultAndNegativeAxis) {
  const Tensor x = Iota({2, 3, 4, 5});
  EXPECT_EQ(RunNode(MakeNode("Flatten", {"x"}), {x}, 13)[0].dims(), (Dims{2, 60}));
  EXPECT_EQ(RunNode(MakeNode("Flatten", {"x"}, {Attribute::Int("axis", -1)}), {x}, 13)[0].dims(),
            (Dims{24, 5}));
  EXPECT_EQ(RunNode(MakeNode("Flatten", {"x"}, {Attribute::Int("axis", 0)}), {x}, 13)[0].dims(),
            (Dims{1, 120}));
  EXPECT_EQ(RunNode(MakeNode("Flatten", {"x"}, {Attribute::Int("axis", 4)}), {x}, 13)[0].dims(),
            (Dims{120, 1}));
  EXPECT_THROW(RunNode(MakeNode("Flatten", {"x"}, {Attribute::Int("axis", 5)}), {x}, 13), Error);
}

TEST(Squeeze, AxesAsAttributeOrInputOrAllUnitDims) {
  const Tensor x = Iota({1, 3, 1, 2});
  EXPECT_EQ(RunNode(MakeNode("Squeeze", {"x"}, {Attribute::Ints("axes", {-2})}), {x}, 11)[0].dims(),
            (Dims{1, 3, 2}));
  EXPECT_EQ(RunNode(MakeNode("Squeeze", {"x", "a"}), {x, Int64s({0})}, 13)[0].dims(), (Dims{3, 1, 2}));
  const auto all = RunNode(MakeNode("Squeeze", {"x"}), {x}, 13);
  EXPECT_EQ(all[0].dims(), (Dims{3, 2}));
  EXPECT_EQ(all[0].raw(), x.raw());
  const std::string msg = ErrorOf([&] { RunNode(MakeNode("Squeeze", {"x", "a"}), {x, Int64s({1})}, 13); });
  ExpectNodeError(msg, "Squeeze", "cannot squeeze axis 1 of size 3");
}

TEST(Unsqueeze, AxesReferToTheOutputRankInAnyOrder) {
  const Tensor x = Iota({3, 4});
  EXPECT_EQ(RunNode(MakeNode("Unsqueeze", {"x", "a"}), {x, Int64s({3, -5, 1})}, 13)[0].dims(),
            (Dims{1, 1, 3, 1, 4}));
  EXPECT_EQ(RunNode(MakeNode("Unsqueeze", {"x"}, {Attribute::Ints("axes", {2})}), {x}, 11)[0].dims(),
            (Dims{3, 4, 1}));
  EXPECT_THROW(RunNode(MakeNode("Unsqueeze", {"x", "a"}), {x, Int64s({1, 1})}, 13), Error);
  EXPECT_THROW(RunNode(MakeNode("Unsqueeze", {"x", "a"}), {x, Int64s({3})}, 13), Error);
}

// --- Transpose
// ----------------------------------------------------------------------------------------------

// Straightforward transpose of a float tensor, independent of the kernels.
std::vector<float> NaiveTranspose(const Tensor& x, const Dims& perm) {
  const Dims& in = x.dims();
  Dims out_dims, in_strides(in.size(), 1);
  for (size_t i = in.size(); i-- > 1;) in_strides[i - 1] = in_strides[i] * in[i];
  for (int64_t p : perm) out_dims.push_back(in[static_cast<size_t>(p)]);
  std::vector<float> out(static_cast<size_t>(x.numel()));
  Dims idx(in.size(), 0);
  for (size_t k = 0; k < out.size(); ++k) {
    int64_t off = 0;
    for (size_t d = 0; d < perm.size(); ++d) off += idx[d] * in_strides[static_cast<size_t>(perm[d])];
    out[k] = x.data<float>()[off];
    for (size_t d = perm.size(); d-- > 0;) {
      if (++idx[d] < out_dims[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

TEST(Transpose, FastPathsMatchTheReference) {
  struct Case {
    Dims dims, perm;
  };
  const Case cases[] = {
      {{2, 3, 4, 5}, {0, 2, 1, 3}},        // attention heads: rows of the last dim are copied
      {{2, 3, 37, 45}, {0, 1, 3, 2}},      // K^T: tiled 2-D transposes with partial tiles
      {{3, 7, 3, 2, 5}, {2, 0, 3, 1, 4}},  // qkv split in a vision transformer
      {{70, 45}, {1, 0}},
      {{4, 1, 5, 6}, {3, 2, 1, 0}},
      {{2, 3, 4}, {}},               // default: reversed axes
      {{1, 5, 1, 3}, {2, 1, 0, 3}},  // only unit dims move: memory order is unchanged
  };
  for (const auto& c : cases) {
    const Tensor x = Iota(c.dims, 1.0f);
    std::vector<Attribute> attrs;
    if (!c.perm.empty()) attrs.push_back(Attribute::Ints("perm", c.perm));
    Dims perm = c.perm;
    if (perm.empty()) perm = {2, 1, 0};
    const std::vector<float> want = NaiveTranspose(x, perm);
    for (bool reference : {true, false}) {
      for (int threads : {1, 3}) {
        const auto out = RunNode(MakeNode("Transpose", {"x"}, attrs), {x}, 13, reference, threads);
        EXPECT_EQ(Floats(out[0]), want) << ShapeToString(c.dims) << " perm " << ShapeToString(perm)
                                        << (reference ? " reference" : " fast");
      }
    }
  }
  // Moving only unit dims shares the buffer.
  const Tensor x = Iota({1, 5, 1, 3});
  EXPECT_EQ(RunNode(MakeNode("Transpose", {"x"}, {Attribute::Ints("perm", {2, 1, 0, 3})}), {x}, 13)[0].raw(),
            x.raw());
}

TEST(Transpose, LargeBatchedTransposeDoesNotDependOnThreads) {
  const Tensor x = Iota({64, 65, 96});
  const Node n = MakeNode("Transpose", {"x"}, {Attribute::Ints("perm", {0, 2, 1})});
  const auto one = RunNode(n, {x}, 13, false, 1);
  const auto four = RunNode(n, {x}, 13, false, 4);
  EXPECT_EQ(Floats(one[0]), NaiveTranspose(x, {0, 2, 1}));
  EXPECT_TRUE(one[0].SameContent(four[0]));
}

TEST(Transpose, MovesFloat16AndStringsBitwise) {
  const Tensor h = HalfPattern({3, 5, 4});
  const Node n = MakeNode("Transpose", {"x"}, {Attribute::Ints("perm", {2, 0, 1})});
  const auto ref = RunNode(n, {h}, 13, true);
  const auto fast = RunNode(n, {h}, 13, false);
  ASSERT_EQ(ref[0].dtype(), DType::kFloat16);
  EXPECT_EQ(HalfBits(ref[0]), HalfBits(fast[0]));
  // Element (i, j, k) of the output is input (j, k, i).
  const auto in = HalfBits(h), out = HalfBits(fast[0]);
  EXPECT_EQ(out[static_cast<size_t>((1 * 3 + 2) * 5 + 3)], in[static_cast<size_t>((2 * 5 + 3) * 4 + 1)]);
  EXPECT_EQ(out[0], 0x7d01);  // the signalling NaN is not quietened

  const Tensor s = Tensor::FromStrings({2, 3}, {"a", "b", "c", "d", "e", "f"});
  for (bool reference : {true, false}) {
    const auto t = RunNode(MakeNode("Transpose", {"x"}), {s}, 13, reference);
    EXPECT_EQ(t[0].strings(), (std::vector<std::string>{"a", "d", "b", "e", "c", "f"}));
  }
}

TEST(Transpose, RejectsAPermThatIsNotAPermutation) {
  const std::string msg = ErrorOf([&] {
    RunNode(MakeNode("Transpose", {"x"}, {Attribute::Ints("perm", {0, 0})}), {Iota({2, 2})}, 13);
  });
  ExpectNodeError(msg, "Transpose", "perm [0,0] is not a permutation");
}

// --- Concat and Split
// ---------------------------------------------------------------------------------------

TEST(Concat, JoinsAlongANegativeAxis) {
  const auto out = RunNode(MakeNode("Concat", {"a", "b", "c"}, {Attribute::Int("axis", -1)}),
                           {Iota({2, 2}), Iota({2, 1}, 10.0f), Tensor(DType::kFloat, {2, 0})}, 13);
  EXPECT_EQ(out[0].dims(), (Dims{2, 3}));
  EXPECT_EQ(Floats(out[0]), (std::vector<float>{0, 1, 10, 2, 3, 11}));
  const std::string msg = ErrorOf([&] {
    RunNode(MakeNode("Concat", {"a", "b"}, {Attribute::Int("axis", 0)}), {Iota({2, 2}), Iota({2, 3})}, 13);
  });
  ExpectNodeError(msg, "Concat", "input float32[2,3] does not match float32[2,2] outside axis 0");
}

TEST(Concat, MovesFloat16Bitwise) {
  const Tensor a = HalfPattern({2, 3}), b = HalfPattern({1, 3});
  const auto out = RunNode(MakeNode("Concat", {"a", "b"}, {Attribute::Int("axis", 0)}), {a, b}, 13);
  std::vector<uint16_t> want = HalfBits(a);
  const auto tail = HalfBits(b);
  want.insert(want.end(), tail.begin(), tail.end());
  EXPECT_EQ(HalfBits(out[0]), want);
}

TEST(Split, SizesFromAttributeInputOrNumOutputs) {
  const Tensor x = Iota({2, 5});
  const auto a = RunNode(
      MakeNode("Split", {"x"}, {Attribute::Int("axis", 1), Attribute::Ints("split", {3, 2})}, 2), {x}, 11);
  EXPECT_EQ(Floats(a[0]), (std::vector<float>{0, 1, 2, 5, 6, 7}));
  EXPECT_EQ(Floats(a[1]), (std::vector<float>{3, 4, 8, 9}));
  const auto b =
      RunNode(MakeNode("Split", {"x", "s"}, {Attribute::Int("axis", -1)}, 3), {x, Int64s({1, 0, 4})}, 13);
  EXPECT_EQ(b[1].dims(), (Dims{2, 0}));
  EXPECT_EQ(Floats(b[2]), (std::vector<float>{1, 2, 3, 4, 6, 7, 8, 9}));
  // num_outputs: chunks of ceil(5 / 3) = 2, the last one smaller.
  const auto c = RunNode(
      MakeNode("Split", {"x"}, {Attribute::Int("axis", 1), Attribute::Int("num_outputs", 3)}, 3), {x}, 18);
  EXPECT_EQ(c[0].dims(), (Dims{2, 2}));
  EXPECT_EQ(c[2].dims(), (Dims{2, 1}));
  EXPECT_EQ(Floats(c[2]), (std::vector<float>{4, 9}));
  // Without sizes the axis must divide evenly.
  const std::string msg =
      ErrorOf([&] { RunNode(MakeNode("Split", {"x"}, {Attribute::Int("axis", 1)}, 2), {x}, 13); });
  EXPECT_NE(msg.find("cannot be split evenly into 2 outputs"), std::string::npos) << msg;
}

// --- Slice
// --------------------------------------------------------------------------------------------------

std::vector<float> Slice1D(const std::vector<int64_t>& starts, const std::vector<int64_t>& ends,
                           const std::vector<int64_t>& steps) {
  const auto out = RunNode(MakeNode("Slice", {"x", "s", "e", "", "t"}),
                           {Iota({10}), Int64s(starts), Int64s(ends), Int64s(steps)}, 13);
  return Floats(out[0]);
}

TEST(Slice, NegativeStepsAndClamping) {
  EXPECT_EQ(Slice1D({-1}, {-100}, {-3}), (std::vector<float>{9, 6, 3, 0}));
  EXPECT_EQ(Slice1D({20}, {-20}, {-1}), (std::vector<float>{9, 8, 7, 6, 5, 4, 3, 2, 1, 0}));
  EXPECT_EQ(Slice1D({-3}, {1000}, {1}), (std::vector<float>{7, 8, 9}));
  EXPECT_EQ(Slice1D({2}, {8}, {4}), (std::vector<float>{2, 6}));
  EXPECT_EQ(Slice1D({5}, {2}, {1}), (std::vector<float>{}));
  EXPECT_EQ(Slice1D({9}, {-100}, {INT64_MIN}), (std::vector<float>{9}));
  EXPECT_EQ(Slice1D({0}, {INT64_MAX}, {-1}), (std::vector<float>{}));
  EXPECT_EQ(Slice1D({INT64_MAX}, {INT64_MIN}, {-4}), (std::vector<float>{9, 5, 1}));
  EXPECT_THROW(Slice1D({0}, {5}, {0}), Error);
}

TEST(Slice, AxesAndStepsOnSeveralDims) {
  const Tensor x = Iota({3, 4, 5});
  // x[::-1, 1:3, ::2] written with negative axes.
  const auto out = RunNode(
      MakeNode("Slice", {"x", "s", "e", "a", "t"}),
      {x, Int64s({-1, 1, 0}), Int64s({INT64_MIN, 3, 5}), Int64s({0, -2, -1}), Int64s({-1, 1, 2})}, 13);
  ASSERT_EQ(out[0].dims(), (Dims{3, 2, 3}));
  const auto v = Floats(out[0]);
  EXPECT_EQ(v[0], 2 * 20 + 1 * 5 + 0);
  EXPECT_EQ(v[5], 2 * 20 + 2 * 5 + 4);
  EXPECT_EQ(v[17], 0 * 20 + 2 * 5 + 4);
}

TEST(Slice, Opset9AttributesAndWholeTensorSharing) {
  const Tensor x = Iota({4, 3});
  const auto out = RunNode(
      MakeNode("Slice", {"x"},
               {Attribute::Ints("starts", {1}), Attribute::Ints("ends", {-1}), Attribute::Ints("axes", {0})}),
      {x}, 9);
  EXPECT_EQ(Floats(out[0]), (std::vector<float>{3, 4, 5, 6, 7, 8}));
  const auto whole = RunNode(MakeNode("Slice", {"x", "s", "e"}), {x, Int64s({0, -9}), Int64s({9, 3})}, 13);
  EXPECT_EQ(whole[0].raw(), x.raw());
}

// --- Gather
// -------------------------------------------------------------------------------------------------

TEST(Gather, NegativeIndicesOnAnyAxis) {
  const Tensor x = Iota({3, 4});
  const Tensor idx = Tensor::FromVector<int64_t>({1, 2}, {-1, 0});
  const auto a = RunNode(MakeNode("Gather", {"x", "i"}), {x, idx}, 13);
  EXPECT_EQ(a[0].dims(), (Dims{1, 2, 4}));
  EXPECT_EQ(Floats(a[0]), (std::vector<float>{8, 9, 10, 11, 0, 1, 2, 3}));
  const auto b = RunNode(MakeNode("Gather", {"x", "i"}, {Attribute::Int("axis", -1)}),
                         {x, Tensor::FromVector<int32_t>({}, {-2})}, 13);
  EXPECT_EQ(b[0].dims(), (Dims{3}));
  EXPECT_EQ(Floats(b[0]), (std::vector<float>{2, 6, 10}));
  const std::string msg = ErrorOf([&] { RunNode(MakeNode("Gather", {"x", "i"}), {x, Int64s({3})}, 13); });
  ExpectNodeError(msg, "Gather", "index 3 is out of range for axis 0 of size 3");
}

TEST(Gather, MovesFloat16Bitwise) {
  const Tensor h = HalfPattern({4, 3});
  const auto out = RunNode(MakeNode("Gather", {"x", "i"}), {h, Int64s({3, 0})}, 13);
  const auto in = HalfBits(h);
  std::vector<uint16_t> want(in.begin() + 9, in.end());
  want.insert(want.end(), in.begin(), in.begin() + 3);
  EXPECT_EQ(HalfBits(out[0]), want);
}

// --- Shape, Size, ConstantOfShape, Identity, Dropout
// ---------------------------------------------------------

TEST(Shape, StartAndEndAreClamped) {
  const Tensor x(DType::kFloat16, {2, 3, 4, 5});
  EXPECT_EQ(Ints(RunNode(MakeNode("Shape", {"x"}), {x}, 13)[0]), (Dims{2, 3, 4, 5}));
  EXPECT_EQ(Ints(RunNode(MakeNode("Shape", {"x"}, {Attribute::Int("start", -3), Attribute::Int("end", -1)}),
                         {x}, 15)[0]),
            (Dims{3, 4}));
  EXPECT_EQ(Ints(RunNode(MakeNode("Shape", {"x"}, {Attribute::Int("start", -10), Attribute::Int("end", 10)}),
                         {x}, 15)[0]),
            (Dims{2, 3, 4, 5}));
  EXPECT_EQ(
      RunNode(MakeNode("Shape", {"x"}, {Attribute::Int("start", 3), Attribute::Int("end", 1)}), {x}, 15)[0]
          .numel(),
      0);
  const auto size = RunNode(MakeNode("Size", {"x"}), {x}, 13);
  EXPECT_EQ(size[0].dims(), Dims{});
  EXPECT_EQ(size[0].data<int64_t>()[0], 120);
}

TEST(ConstantOfShape, FillsWithTheValueAttribute) {
  const auto zeros = RunNode(MakeNode("ConstantOfShape", {"s"}), {Int64s({2, 3})}, 9);
  EXPECT_EQ(zeros[0].dtype(), DType::kFloat);
  EXPECT_EQ(Floats(zeros[0]), std::vector<float>(6, 0.0f));
  const auto sevens =
      RunNode(MakeNode("ConstantOfShape", {"s"},
                       {Attribute::FromTensor("value", Tensor::FromVector<int32_t>({1}, {7}))}),
              {Int64s({2})}, 9);
  EXPECT_EQ(sevens[0].dtype(), DType::kInt32);
  EXPECT_EQ(sevens[0].data<int32_t>()[1], 7);
  const auto scalar = RunNode(MakeNode("ConstantOfShape", {"s"}), {Int64s({})}, 9);
  EXPECT_EQ(scalar[0].dims(), Dims{});
  EXPECT_THROW(RunNode(MakeNode("ConstantOfShape", {"s"}), {Int64s({2, -1})}, 9), Error);
}

TEST(Identity, SharesTheBuffer) {
  const Tensor h = HalfPattern({2, 3});
  const auto out = RunNode(MakeNode("Identity", {"x"}), {h}, 16);
  EXPECT_EQ(out[0].raw(), h.raw());
  EXPECT_EQ(out[0].dtype(), DType::kFloat16);
}

TEST(Dropout, InferenceIsTheIdentityWithAnAllTrueMask) {
  const Tensor x = Iota({2, 3});
  const Tensor ratio = Tensor::FromVector<float>({}, {0.5f});
  const auto out = RunNode(MakeNode("Dropout", {"x", "r"}, {}, 2), {x, ratio}, 13);
  EXPECT_EQ(out[0].raw(), x.raw());
  ASSERT_EQ(out[1].dtype(), DType::kBool);
  for (int64_t i = 0; i < 6; ++i) EXPECT_EQ(static_cast<const uint8_t*>(out[1].raw())[i], 1);
  // Opset 7 ignores the ratio attribute and returns a mask of the data type.
  const auto old = RunNode(MakeNode("Dropout", {"x"}, {Attribute::Float("ratio", 0.3f)}, 2), {x}, 7);
  EXPECT_EQ(Floats(old[0]), Floats(x));
  EXPECT_EQ(Floats(old[1]), std::vector<float>(6, 1.0f));
}

TEST(Dropout, TrainingModeFollowsNumpySeededUniform) {
  // numpy.random.seed(0); numpy.random.uniform(0, 1, 4) = [0.5488, 0.7152, 0.6028, 0.5449]: with ratio 0.6
  // elements 1 and 2 are kept and scaled by 1 / 0.4.
  const Tensor x = Tensor::FromVector<float>({4}, {1, 2, 3, 4});
  const Tensor ratio = Tensor::FromVector<float>({}, {0.6f});
  const Tensor training = Tensor::FromVector<bool>({}, {true});
  const auto out =
      RunNode(MakeNode("Dropout", {"x", "r", "t"}, {Attribute::Int("seed", 0)}, 2), {x, ratio, training}, 13);
  const auto y = Floats(out[0]);
  EXPECT_EQ(y[0], 0.0f);
  EXPECT_FLOAT_EQ(y[1], 5.0f);
  EXPECT_FLOAT_EQ(y[2], 7.5f);
  EXPECT_EQ(y[3], 0.0f);
  const auto* mask = static_cast<const uint8_t*>(out[1].raw());
  EXPECT_EQ(std::vector<uint8_t>(mask, mask + 4), (std::vector<uint8_t>{0, 1, 1, 0}));
}

// --- Expand, Tile, Range
// ------------------------------------------------------------------------------------

TEST(Expand, BroadcastsBothWays) {
  const Tensor x = Tensor::FromVector<float>({3, 1}, {1, 2, 3});
  const auto out = RunNode(MakeNode("Expand", {"x", "s"}), {x, Int64s({2, 1, 4})}, 13);
  ASSERT_EQ(out[0].dims(), (Dims{2, 3, 4}));
  const auto v = Floats(out[0]);
  EXPECT_EQ(std::vector<float>(v.begin(), v.begin() + 12),
            (std::vector<float>{1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3}));
  EXPECT_EQ(std::vector<float>(v.begin() + 12, v.end()), std::vector<float>(v.begin(), v.begin() + 12));
  // A shape of ones keeps the input (and its buffer).
  const auto same = RunNode(MakeNode("Expand", {"x", "s"}), {x, Int64s({1, 1})}, 13);
  EXPECT_EQ(same[0].raw(), x.raw());
  const std::string msg = ErrorOf([&] { RunNode(MakeNode("Expand", {"x", "s"}), {x, Int64s({2, 2})}, 13); });
  ExpectNodeError(msg, "Expand", "shapes [3,1] and [2,2] cannot be broadcast");
}

TEST(Expand, MovesFloat16Bitwise) {
  const Tensor h = HalfPattern({1, 3});
  const auto out = RunNode(MakeNode("Expand", {"x", "s"}), {h, Int64s({2, 3})}, 13);
  std::vector<uint16_t> want = HalfBits(h);
  want.insert(want.end(), want.begin(), want.end());
  EXPECT_EQ(HalfBits(out[0]), want);
}

TEST(Tile, RepeatsEachAxis) {
  const Tensor x = Tensor::FromVector<float>({2, 2}, {1, 2, 3, 4});
  const auto out = RunNode(MakeNode("Tile", {"x", "r"}), {x, Int64s({2, 3})}, 13);
  ASSERT_EQ(out[0].dims(), (Dims{4, 6}));
  EXPECT_EQ(Floats(out[0]), (std::vector<float>{1, 2, 1, 2, 1, 2, 3, 4, 3, 4, 3, 4,  //
                                                1, 2, 1, 2, 1, 2, 3, 4, 3, 4, 3, 4}));
  EXPECT_EQ(RunNode(MakeNode("Tile", {"x", "r"}), {x, Int64s({0, 1})}, 13)[0].dims(), (Dims{0, 2}));
}

TEST(Range, FloatAndNegativeIntegerDeltas) {
  const auto f = RunNode(MakeNode("Range", {"a", "b", "c"}),
                         {Tensor::FromVector<float>({}, {1.0f}), Tensor::FromVector<float>({}, {2.0f}),
                          Tensor::FromVector<float>({}, {0.3f})},
                         11);
  ASSERT_EQ(f[0].dims(), Dims{4});
  EXPECT_FLOAT_EQ(f[0].data<float>()[3], 1.9f);
  const auto i = RunNode(MakeNode("Range", {"a", "b", "c"}),
                         {Tensor::FromVector<int32_t>({}, {10}), Tensor::FromVector<int32_t>({}, {4}),
                          Tensor::FromVector<int32_t>({}, {-3})},
                         11);
  EXPECT_EQ(std::vector<int32_t>(i[0].data<int32_t>(), i[0].data<int32_t>() + i[0].numel()),
            (std::vector<int32_t>{10, 7}));
  const auto empty = RunNode(MakeNode("Range", {"a", "b", "c"}),
                             {Tensor::FromVector<int64_t>({}, {0}), Tensor::FromVector<int64_t>({}, {5}),
                              Tensor::FromVector<int64_t>({}, {-1})},
                             11);
  EXPECT_EQ(empty[0].numel(), 0);
}

}  // namespace
}  // namespace compress
