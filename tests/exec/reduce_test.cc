// Reductions: axes as attribute (before opset 13 for ReduceSum, 18 for the others) or as input, keepdims,
// noop_with_empty_axes, each reduction kind, integers and NaN, errors, float16, ArgMax / ArgMin and
// thread-count independence.

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "compress/util/error.h"
#include "compress/util/half.h"
#include "support/test_support.h"

namespace compress {
namespace {

using testing::ErrorOf;

using testing::RunNode;
using Dims = std::vector<int64_t>;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

Node MakeNode(const std::string& op, std::vector<std::string> inputs, std::vector<Attribute> attrs = {}) {
  Node n;
  n.name = "n0";
  n.op_type = op;
  n.inputs = std::move(inputs);
  n.outputs = {"y"};
  n.attributes = std::move(attrs);
  return n;
}

Tensor Iota(const Dims& dims) {
  std::vector<float> v(static_cast<size_t>(ShapeElementCount(dims)));
  std::iota(v.begin(), v.end(), 0.0f);
  return Tensor::FromVector<float>(dims, v);
}
Tensor Axes(const std::vector<int64_t>& v) {
  return Tensor::FromVector<int64_t>({static_cast<int64_t>(v.size())}, v);
}

template <typename T>
std::vector<T> Values(const Tensor& t) {
  return {t.data<T>(), t.data<T>() + t.numel()};
}

TEST(Reduce, AxesFromTheAttributeOrTheInputByOpset) {
  const Tensor x = Iota({2, 3, 4});  // x[i][j][k] = 12 i + 4 j + k
  const std::vector<float> sum_j = {12, 15, 18, 21, 48, 51, 54, 57};
  const Tensor attr = RunNode(MakeNode("ReduceSum", {"x"}, {Attribute::Ints("axes", {1})}), {x}, 11)[0];
  EXPECT_EQ(attr.dims(), (Dims{2, 1, 4}));
  EXPECT_EQ(Values<float>(attr), sum_j);
  // ReduceSum takes axes as an input from opset 13; negative axes count from the end.
  for (const int64_t axis : {1, -2}) {
    const Tensor in = RunNode(MakeNode("ReduceSum", {"x", "axes"}), {x, Axes({axis})}, 13)[0];
    EXPECT_EQ(in.dims(), (Dims{2, 1, 4}));
    EXPECT_EQ(Values<float>(in), sum_j);
  }
  // The others from opset 18.
  const Node mean_attr =
      MakeNode("ReduceMean", {"x"}, {Attribute::Ints("axes", {0, 2}), Attribute::Int("keepdims", 0)});
  const Node mean_input = MakeNode("ReduceMean", {"x", "axes"}, {Attribute::Int("keepdims", 0)});
  for (const Tensor& y : {RunNode(mean_attr, {x}, 17)[0], RunNode(mean_input, {x, Axes({0, 2})}, 18)[0]}) {
    EXPECT_EQ(y.dims(), (Dims{3}));
    EXPECT_EQ(Values<float>(y), (std::vector<float>{7.5f, 11.5f, 15.5f}));
  }
}

TEST(Reduce, NoAxesReducesEverythingUnlessNoopWithEmptyAxes) {
  const Tensor x = Iota({2, 3, 4});
  const Tensor all = RunNode(MakeNode("ReduceSum", {"x"}), {x}, 13)[0];
  EXPECT_EQ(all.dims(), (Dims{1, 1, 1}));
  EXPECT_EQ(Values<float>(all), (std::vector<float>{276}));
  const Tensor flat = RunNode(MakeNode("ReduceMax", {"x"}, {Attribute::Int("keepdims", 0)}), {x}, 13)[0];
  EXPECT_EQ(flat.dims(), (Dims{}));
  EXPECT_EQ(Values<float>(flat), (std::vector<float>{23}));
  const Node noop = MakeNode("ReduceSum", {"x", "axes"}, {Attribute::Int("noop_with_empty_axes", 1)});
  const Tensor same = RunNode(noop, {x, Axes({})}, 13)[0];
  EXPECT_TRUE(same.SameContent(x));
  const Node noop_no_input = MakeNode("ReduceMin", {"x"}, {Attribute::Int("noop_with_empty_axes", 1)});
  EXPECT_TRUE(RunNode(noop_no_input, {x}, 18)[0].SameContent(x));
  // Without the flag empty axes reduce everything.
  EXPECT_EQ(Values<float>(RunNode(MakeNode("ReduceSum", {"x", "axes"}), {x, Axes({})}, 13)[0]),
            (std::vector<float>{276}));
}

TEST(Reduce, EveryKind) {
  const Tensor x = Tensor::FromVector<float>({2, 3}, {1, -2, 3, 4, 5, -6});
  const std::vector<std::pair<const char*, std::vector<float>>> cases = {
      {"ReduceSum", {2, 3}},         {"ReduceMean", {2.0f / 3, 1}},
      {"ReduceMax", {3, 5}},         {"ReduceMin", {-2, -6}},
      {"ReduceProd", {-6, -120}},    {"ReduceL2", {std::sqrt(14.0f), std::sqrt(77.0f)}},
      {"ReduceSumSquare", {14, 77}},
  };
  for (const auto& [op, want] : cases) {
    const Node attr = MakeNode(op, {"x"}, {Attribute::Ints("axes", {1}), Attribute::Int("keepdims", 0)});
    const Node input = MakeNode(op, {"x", "axes"}, {Attribute::Int("keepdims", 0)});
    // The attribute form ends at opset 12 for ReduceSum, 17 for the others.
    for (const Tensor& y : {RunNode(attr, {x}, 12)[0], RunNode(input, {x, Axes({-1})}, 18)[0]}) {
      EXPECT_EQ(y.dims(), (Dims{2})) << op;
      EXPECT_EQ(Values<float>(y), want) << op;
    }
  }
}

TEST(Reduce, IntegersWrapAndNaNPropagates) {
  const Node sum = MakeNode("ReduceSum", {"x"}, {Attribute::Int("keepdims", 0)});
  EXPECT_EQ(Values<int32_t>(RunNode(sum, {Tensor::FromVector<int32_t>({2}, {2147483647, 1})}, 13)[0]),
            (std::vector<int32_t>{-2147483647 - 1}));
  const Node prod = MakeNode("ReduceProd", {"x"}, {Attribute::Int("keepdims", 0)});
  EXPECT_EQ(Values<int32_t>(RunNode(prod, {Tensor::FromVector<int32_t>({3}, {65536, 65536, 3})}, 13)[0]),
            (std::vector<int32_t>{0}));
  // Integer mean truncates, as the integer result of numpy's mean cast back does.
  const Node mean = MakeNode("ReduceMean", {"x"}, {Attribute::Int("keepdims", 0)});
  EXPECT_EQ(Values<int64_t>(RunNode(mean, {Tensor::FromVector<int64_t>({2}, {7, 8})}, 13)[0]),
            (std::vector<int64_t>{7}));
  const Node max = MakeNode("ReduceMax", {"x"}, {Attribute::Ints("axes", {1})});
  const Tensor m = RunNode(max, {Tensor::FromVector<float>({2, 2}, {kNaN, 1, 2, 3})}, 13)[0];
  EXPECT_TRUE(std::isnan(m.data<float>()[0]));
  EXPECT_EQ(m.data<float>()[1], 3);
  EXPECT_EQ(Values<int8_t>(RunNode(max, {Tensor::FromVector<int8_t>({1, 3}, {-7, -3, -9})}, 13)[0]),
            (std::vector<int8_t>{-3}));
  // An empty reduced dim gives each reduction's identity.
  const Tensor empty(DType::kFloat, {2, 0});
  const Tensor all = RunNode(MakeNode("ReduceSum", {"x"}, {Attribute::Int("keepdims", 0)}), {empty}, 11)[0];
  EXPECT_EQ(all.dims(), (Dims{}));
  EXPECT_EQ(Values<float>(all), (std::vector<float>{0}));
  EXPECT_EQ(
      Values<float>(RunNode(MakeNode("ReduceSum", {"x"}, {Attribute::Ints("axes", {1})}), {empty}, 11)[0]),
      (std::vector<float>{0, 0}));
  EXPECT_EQ(
      Values<float>(RunNode(MakeNode("ReduceProd", {"x"}, {Attribute::Ints("axes", {1})}), {empty}, 11)[0]),
      (std::vector<float>{1, 1}));
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(
      Values<float>(RunNode(MakeNode("ReduceMax", {"x"}, {Attribute::Ints("axes", {1})}), {empty}, 11)[0]),
      (std::vector<float>{-inf, -inf}));
}

TEST(Reduce, BadAxesNameTheNode) {
  const Tensor x = Iota({2, 3, 4});
  std::string msg = ErrorOf([&] { RunNode(MakeNode("ReduceSum", {"x", "axes"}), {x, Axes({3})}, 13); });
  EXPECT_NE(msg.find("node 'n0' (ReduceSum): axis 3 is out of range for rank 3"), std::string::npos) << msg;
  msg = ErrorOf([&] { RunNode(MakeNode("ReduceMean", {"x"}, {Attribute::Ints("axes", {1, -2})}), {x}, 13); });
  EXPECT_NE(msg.find("node 'n0' (ReduceMean): axis -2 is listed twice in axes [1,-2]"), std::string::npos)
      << msg;
  msg = ErrorOf([&] {
    RunNode(MakeNode("ReduceSum", {"x", "axes"}), {x, Tensor::FromVector<float>({1}, {1})}, 13);
  });
  EXPECT_NE(msg.find("expected an int64 or int32 tensor, got float32"), std::string::npos) << msg;
}

TEST(Reduce, Float16RunsInFloat32AndRoundsOnce) {
  // 1 + 1 + 2^-10 (three float16 values) is 2 + 2^-10: a tie between float16 neighbours of 2, to even.
  const uint16_t bits[] = {0x3c00, 0x3c00, 0x1400};
  const Tensor x = Tensor::FromBytes(DType::kFloat16, {3}, bits, sizeof(bits));
  const Tensor y = RunNode(MakeNode("ReduceSum", {"x"}, {Attribute::Int("keepdims", 0)}), {x}, 13)[0];
  ASSERT_EQ(y.dtype(), DType::kFloat16);
  EXPECT_EQ(static_cast<const uint16_t*>(y.raw())[0], 0x4000);
}

TEST(ArgMax, AxisKeepdimsAndSelectLastIndex) {
  const Tensor x = Tensor::FromVector<float>({2, 3}, {1, 5, 5, 7, 2, 7});
  const Tensor first = RunNode(MakeNode("ArgMax", {"x"}, {Attribute::Int("axis", 1)}), {x}, 13)[0];
  EXPECT_EQ(first.dims(), (Dims{2, 1}));
  EXPECT_EQ(Values<int64_t>(first), (std::vector<int64_t>{1, 0}));
  const Node last = MakeNode(
      "ArgMax", {"x"},
      {Attribute::Int("axis", -1), Attribute::Int("select_last_index", 1), Attribute::Int("keepdims", 0)});
  const Tensor l = RunNode(last, {x}, 13)[0];
  EXPECT_EQ(l.dims(), (Dims{2}));
  EXPECT_EQ(Values<int64_t>(l), (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(Values<int64_t>(RunNode(MakeNode("ArgMax", {"x"}), {x}, 11)[0]), (std::vector<int64_t>{1, 0, 1}));
  EXPECT_EQ(Values<int64_t>(RunNode(MakeNode("ArgMin", {"x"}, {Attribute::Int("axis", 1)}), {x}, 13)[0]),
            (std::vector<int64_t>{0, 1}));
  const Tensor ints = Tensor::FromVector<int64_t>({4}, {3, -1, 3, -1});
  const Node min_last = MakeNode("ArgMin", {"x"}, {Attribute::Int("select_last_index", 1)});
  EXPECT_EQ(Values<int64_t>(RunNode(min_last, {ints}, 13)[0]), (std::vector<int64_t>{3}));
}

TEST(ArgMax, NaNIsTheExtremeAsInNumpy) {
  const Tensor x = Tensor::FromVector<float>({5}, {1, kNaN, 3, kNaN, -1});
  EXPECT_EQ(Values<int64_t>(RunNode(MakeNode("ArgMax", {"x"}), {x}, 13)[0]), (std::vector<int64_t>{1}));
  EXPECT_EQ(Values<int64_t>(RunNode(MakeNode("ArgMin", {"x"}), {x}, 13)[0]), (std::vector<int64_t>{1}));
  const Node last = MakeNode("ArgMax", {"x"}, {Attribute::Int("select_last_index", 1)});
  EXPECT_EQ(Values<int64_t>(RunNode(last, {x}, 13)[0]), (std::vector<int64_t>{3}));
  const std::string msg = ErrorOf([] {
    RunNode(MakeNode("ArgMax", {"x"}, {Attribute::Int("axis", 1)}), {Tensor(DType::kFloat, {2, 0})}, 13);
  });
  EXPECT_NE(msg.find("node 'n0' (ArgMax): cannot take the argmax of an empty axis"), std::string::npos)
      << msg;
}

TEST(Reduce, ResultsDoNotDependOnTheThreadCount) {
  std::vector<float> v(64 * 300 * 40);
  for (size_t i = 0; i < v.size(); ++i) v[i] = std::sin(static_cast<float>(i) * 0.37f) * 100;
  const Tensor x = Tensor::FromVector<float>({64, 300, 40}, v);
  const std::vector<std::pair<Node, std::vector<Tensor>>> runs = {
      {MakeNode("ReduceSum", {"x", "axes"}), {x, Axes({1})}},
      {MakeNode("ReduceMean", {"x"}), {x}},
      {MakeNode("ReduceL2", {"x"}, {Attribute::Ints("axes", {0, 2})}), {x}},
      {MakeNode("ArgMax", {"x"}, {Attribute::Int("axis", 1)}), {x}},
  };
  for (const auto& [node, inputs] : runs) {
    const Tensor one = RunNode(node, inputs, 13, false, 1)[0];
    const Tensor three = RunNode(node, inputs, 13, false, 3)[0];
    EXPECT_TRUE(one.SameContent(three)) << node.op_type;
  }
}

}  // namespace
}  // namespace compress
