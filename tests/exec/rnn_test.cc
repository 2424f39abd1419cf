// LSTM: one unit worked through by hand (gate order i, o, f, c; biases Wb + Rb; peepholes), then the
// directions, layout 1, sequence_lens and input_forget against that reference.

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "compress/exec/executor.h"
#include "compress/util/error.h"
#include "support/test_support.h"

namespace compress {
namespace {

using testing::RunNode;
using Dims = std::vector<int64_t>;

// float32 kernels against the same equations in double.
constexpr double kLstmAbs = 1e-6;

Tensor F32(const Dims& dims, const std::vector<float>& v) { return Tensor::FromVector<float>(dims, v); }

Node Lstm(std::vector<std::string> inputs, std::vector<Attribute> attrs = {}) {
  Node n;
  n.name = "lstm";
  n.op_type = "LSTM";
  n.inputs = std::move(inputs);
  n.outputs = {"y", "y_h", "y_c"};
  attrs.push_back(Attribute::Int("hidden_size", 1));
  n.attributes = std::move(attrs);
  return n;
}

double Sig(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// One hidden unit, one input feature: W, R = [i, o, f, c], bias = Wb + Rb, peephole P = [i, o, f].
struct Unit {
  double w[4] = {0.5, -0.3, 0.2, 0.8};
  double r[4] = {0.1, 0.2, -0.1, 0.4};
  double wb[4] = {0.1, 0.0, 0.3, -0.1};
  double rb[4] = {0.0, 0.05, 0.0, 0.2};
  double p[3] = {0.3, -0.2, 0.1};

  // Runs the sequence from (h, c); returns h per step and the final (h, c).
  std::vector<double> Run(const std::vector<double>& xs, double& h, double& c, bool peephole,
                          bool input_forget) const {
    std::vector<double> ys;
    for (double x : xs) {
      auto pre = [&](int g) { return w[g] * x + r[g] * h + wb[g] + rb[g]; };
      const double i = Sig(pre(0) + (peephole ? p[0] * c : 0));
      const double f = input_forget ? 1 - i : Sig(pre(2) + (peephole ? p[2] * c : 0));
      const double g = std::tanh(pre(3));
      c = f * c + i * g;
      const double o = Sig(pre(1) + (peephole ? p[1] * c : 0));
      h = o * std::tanh(c);
      ys.push_back(h);
    }
    return ys;
  }
  Tensor W(int dirs) const { return Repeat({dirs, 4, 1}, w, 4, dirs); }
  Tensor R(int dirs) const { return Repeat({dirs, 4, 1}, r, 4, dirs); }
  Tensor B(int dirs) const {
    std::vector<float> v;
    for (int d = 0; d < dirs; ++d) {
      v.insert(v.end(), wb, wb + 4);
      v.insert(v.end(), rb, rb + 4);
    }
    return F32({dirs, 8}, v);
  }
  Tensor P(int dirs) const { return Repeat({dirs, 3}, p, 3, dirs); }

  static Tensor Repeat(const Dims& dims, const double* v, int n, int times) {
    std::vector<float> out;
    for (int t = 0; t < times; ++t) out.insert(out.end(), v, v + n);
    return F32(dims, out);
  }
};

void ExpectNear(const Tensor& t, const std::vector<double>& expected, const std::string& what) {
  ASSERT_EQ(t.numel(), static_cast<int64_t>(expected.size())) << what;
  for (size_t k = 0; k < expected.size(); ++k) EXPECT_NEAR(t.data<float>()[k], expected[k], kLstmAbs) << what << " " << k;
}

TEST(Lstm, ForwardWithBiasPeepholesAndInitialStateMatchesTheEquations) {
  const Unit u;
  const std::vector<double> xs = {1.0, -2.0, 0.5};
  double h = 0.25, c = -0.5;
  const std::vector<double> ys = u.Run(xs, h, c, true, false);
  const Tensor x = F32({3, 1, 1}, {1.0f, -2.0f, 0.5f});
  for (const bool reference : {false, true}) {
    const auto out = RunNode(Lstm({"x", "w", "r", "b", "", "h0", "c0", "p"}),
                             {x, u.W(1), u.R(1), u.B(1), F32({1, 1, 1}, {0.25f}), F32({1, 1, 1}, {-0.5f}), u.P(1)},
                             14, reference);
    ASSERT_EQ(out.size(), 3u);
    EXPECT_EQ(out[0].dims(), (Dims{3, 1, 1, 1}));
    ExpectNear(out[0], ys, "Y");
    ExpectNear(out[1], {h}, "Y_h");
    ExpectNear(out[2], {c}, "Y_c");
  }
}

TEST(Lstm, ReverseBidirectionalAndLayoutOne) {
  const Unit u;
  const std::vector<double> xs = {0.3, -1.0};
  double hf = 0, cf = 0, hr = 0, cr = 0;
  const std::vector<double> fwd = u.Run(xs, hf, cf, false, false);
  const std::vector<double> rev = u.Run({xs[1], xs[0]}, hr, cr, false, false);  // step order 1, 0
  const Tensor x = F32({2, 1, 1}, {0.3f, -1.0f});
  Attribute dir = Attribute::String("direction", "bidirectional");
  auto out = RunNode(Lstm({"x", "w", "r", "b"}, {dir}), {x, u.W(2), u.R(2), u.B(2)}, 14);
  // Y [seq, dirs, batch, H]: t0 = (fwd[0], rev at t0 = rev[1]), t1 = (fwd[1], rev[0]).
  EXPECT_EQ(out[0].dims(), (Dims{2, 2, 1, 1}));
  ExpectNear(out[0], {fwd[0], rev[1], fwd[1], rev[0]}, "bidirectional Y");
  ExpectNear(out[1], {hf, hr}, "bidirectional Y_h");
  ExpectNear(out[2], {cf, cr}, "bidirectional Y_c");

  out = RunNode(Lstm({"x", "w", "r", "b"}, {Attribute::String("direction", "reverse")}), {x, u.W(1), u.R(1), u.B(1)},
                14);
  ExpectNear(out[0], {rev[1], rev[0]}, "reverse Y");
  ExpectNear(out[1], {hr}, "reverse Y_h");

  // Layout 1: X [batch, seq, input], Y [batch, seq, dirs, H], states [batch, dirs, H]; two batch rows.
  const Tensor x1 = F32({2, 2, 1}, {0.3f, -1.0f, 0.3f, -1.0f});
  out = RunNode(Lstm({"x", "w", "r", "b"}, {dir, Attribute::Int("layout", 1)}), {x1, u.W(2), u.R(2), u.B(2)}, 14);
  EXPECT_EQ(out[0].dims(), (Dims{2, 2, 2, 1}));
  EXPECT_EQ(out[1].dims(), (Dims{2, 2, 1}));
  ExpectNear(out[0], {fwd[0], rev[1], fwd[1], rev[0], fwd[0], rev[1], fwd[1], rev[0]}, "layout 1 Y");
  ExpectNear(out[1], {hf, hr, hf, hr}, "layout 1 Y_h");
}

TEST(Lstm, SequenceLensStopEachRowAndZeroTheRest) {
  const Unit u;
  double h1 = 0, c1 = 0, h2 = 0, c2 = 0;
  const std::vector<double> one = u.Run({0.7}, h1, c1, false, false);
  const std::vector<double> two = u.Run({0.7, -0.4}, h2, c2, false, false);
  // Batch of 2 (layout 0: X [seq, batch, 1]); row 0 has length 1, row 1 length 2.
  const Tensor x = F32({2, 2, 1}, {0.7f, 0.7f, -0.4f, -0.4f});
  const auto out = RunNode(Lstm({"x", "w", "r", "b", "lens"}), {x, u.W(1), u.R(1), u.B(1),
                                                               Tensor::FromVector<int32_t>({2}, {1, 2})},
                           14);
  ExpectNear(out[0], {one[0], two[0], 0.0, two[1]}, "Y");
  ExpectNear(out[1], {h1, h2}, "Y_h");
  ExpectNear(out[2], {c1, c2}, "Y_c");
}

TEST(Lstm, InputForgetCouplesTheForgetGate) {
  const Unit u;
  double h = 0.1, c = 0.2;
  const std::vector<double> ys = u.Run({1.5, -0.5}, h, c, false, true);
  const auto out = RunNode(Lstm({"x", "w", "r", "b", "", "h0", "c0"}, {Attribute::Int("input_forget", 1)}),
                           {F32({2, 1, 1}, {1.5f, -0.5f}), u.W(1), u.R(1), u.B(1), F32({1, 1, 1}, {0.1f}),
                            F32({1, 1, 1}, {0.2f})},
                           14);
  ExpectNear(out[0], ys, "Y");
  ExpectNear(out[2], {c}, "Y_c");
}

TEST(Lstm, RejectsWeightsOfTheWrongShape) {
  const Unit u;
  const std::string msg = testing::ErrorOf(
      [&] { RunNode(Lstm({"x", "w", "r"}), {F32({1, 1, 2}, {1, 2}), u.W(1), u.R(1)}, 14); });
  EXPECT_NE(msg.find("W must be [1,4,2], got [1,4,1]"), std::string::npos) << msg;
}

}  // namespace
}  // namespace compress
