// The quantize pass (static QDQ and weights-only modes) on small hand-built graphs: exact structure
// afterwards (where the QuantizeLinear/DequantizeLinear nodes are, which tensors they share, the int8
// weights and int32 biases), the opset handling, exclusions and errors, and outputs against the float
// model through the executor.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include "cleanup_test_helpers.h"
#include "compress/calib/calibration.h"
#include "compress/io/onnx_io.h"
#include "compress/util/error.h"

namespace compress {
namespace {

using nlohmann::json;
using testing::CheckWithOnnx;
using testing::EmptyModel;
using testing::Fixed;
using testing::FloatValue;
using testing::MakeNode;
using testing::RandomFloats;

// Largest weight magnitude the static mode stores (7 bits, see quantize_qdq.cc) and the weights-only one.
constexpr double kStaticWeightMax = 64.0;
constexpr double kFullWeightMax = 127.0;

TensorStats Stats(float lo, float hi) {
  TensorStats s;
  const float v[2] = {lo, hi};
  s.Observe(v, 2);
  return s;
}

// Statistics given by hand; records what the pass asked for.
class TableSource : public CalibrationSource {
 public:
  explicit TableSource(std::map<std::string, TensorStats> stats) { table_.tensors = std::move(stats); }
  const CalibrationTable& Get(const Model&, const std::vector<std::string>& tensors) override {
    ++calls;
    asked = tensors;  // the pass itself rejects a table without the values it quantizes
    return table_;
  }
  std::string data_sha256() const override { return "test"; }
  int calls = 0;
  std::vector<std::string> asked;

 private:
  CalibrationTable table_;
};

// Statistics of the values the model computes on `inputs`, through the executor.
class RunSource : public CalibrationSource {
 public:
  explicit RunSource(std::vector<Tensor> inputs) : inputs_(std::move(inputs)) {}
  const CalibrationTable& Get(const Model& model, const std::vector<std::string>& tensors) override {
    table_ = CalibrationTable{};
    const std::set<std::string> wanted(tensors.begin(), tensors.end());
    ExecutorOptions opt;
    opt.threads = 1;
    Executor exec(model, opt);
    const ValueObserver observe = [&](const std::string& name, const Tensor& v) {
      if (wanted.count(name)) table_.tensors[name].Observe(v.data<float>(), v.numel());
    };
    for (size_t i = 0; i < inputs_.size(); ++i) observe(exec.inputs()[i].name, inputs_[i]);
    exec.Run(inputs_, &observe);
    return table_;
  }
  std::string data_sha256() const override { return "run"; }

 private:
  std::vector<Tensor> inputs_;
  CalibrationTable table_;
};

// The test graphs' convolutions are shallow: unless a test says otherwise, every Conv is quantized.
PassContext Quantize(Model& m, CalibrationSource* source, json options = json::object()) {
  const PassInfo* info = FindPass("quantize");
  EXPECT_NE(info, nullptr);
  if (!options.contains("min_conv_depth")) options["min_conv_depth"] = 0;
  PassContext ctx(1, source);
  info->create(ValidatePassOptions(*info, options, "test"))->Run(m, ctx);
  VerifyModel(m);
  EXPECT_TRUE(IsTopologicallySorted(m.graph));
  return ctx;
}

int64_t Counter(const PassContext& ctx, const std::string& key) {
  const auto it = ctx.counters().find(key);
  return it == ctx.counters().end() ? -1 : it->second;
}

const Node& NodeNamed(const Graph& g, const std::string& name) {
  for (const auto& n : g.nodes) {
    if (n.name == name) return n;
  }
  ADD_FAILURE() << "no node " << name;
  static const Node none;
  return none;
}

const Node* Producer(const Graph& g, const std::string& value) {
  for (const auto& n : g.nodes) {
    if (std::find(n.outputs.begin(), n.outputs.end(), value) != n.outputs.end()) return &n;
  }
  return nullptr;
}

std::vector<const Node*> Readers(const Graph& g, const std::string& value) {
  std::vector<const Node*> out;
  for (const auto& n : g.nodes) {
    if (std::find(n.inputs.begin(), n.inputs.end(), value) != n.inputs.end()) out.push_back(&n);
  }
  return out;
}

// The QuantizeLinear nodes reading `value`.
std::vector<const Node*> QuantizersOf(const Graph& g, const std::string& value) {
  std::vector<const Node*> out;
  for (const Node* n : Readers(g, value)) {
    if (n->op_type == "QuantizeLinear") out.push_back(n);
  }
  return out;
}

// The values a QuantizeLinear reads, sorted: those that got a pair.
std::vector<std::string> QuantizedValues(const Graph& g) {
  std::set<std::string> out;
  for (const auto& n : g.nodes) {
    if (n.op_type == "QuantizeLinear") out.insert(n.inputs[0]);
  }
  return {out.begin(), out.end()};
}

const Tensor& Init(const Graph& g, const std::string& name) {
  const Tensor* t = g.FindInitializer(name);
  if (t == nullptr) {
    ADD_FAILURE() << "no initializer " << name;
    static const Tensor none;
    return none;
  }
  return *t;
}

std::vector<float> Floats(const Tensor& t) { return {t.data<float>(), t.data<float>() + t.numel()}; }

// Scale and zero point ActivationParams gives a uint8 range [lo, hi] (lo <= 0 <= hi).
std::pair<float, int> Uint8Params(float lo, float hi) {
  const float scale = static_cast<float>((static_cast<double>(hi) - lo) / 255.0);
  return {scale, static_cast<int>(std::round(-static_cast<double>(lo) / scale))};
}

// max|w| / qmax of each slice along axis 0 of a [C, ...] weight, or along axis 1 of a [K, N] one.
std::vector<float> WeightScales(const Tensor& w, int axis, double qmax) {
  const int64_t channels = w.dims()[static_cast<size_t>(axis)];
  std::vector<double> absmax(static_cast<size_t>(channels), 0.0);
  int64_t inner = 1;
  for (size_t d = static_cast<size_t>(axis) + 1; d < w.dims().size(); ++d) inner *= w.dims()[d];
  for (int64_t i = 0; i < w.numel(); ++i) {
    const int64_t c = i / inner % channels;
    absmax[static_cast<size_t>(c)] =
        std::max(absmax[static_cast<size_t>(c)], std::fabs(double{w.data<float>()[i]}));
  }
  std::vector<float> out;
  for (double m : absmax) out.push_back(static_cast<float>(m / qmax));
  return out;
}

// x [N,2,6,6] -> Conv(W [3,2,3,3], B) -> c -> Relu -> r -> MaxPool 2x2 -> p -> Reshape [-1,27] -> f
//   -> Gemm(W2 [4,27] transposed, B2) -> y [N,4]
Model ConvModel(int64_t opset = 17) {
  Model m = EmptyModel(opset);
  Graph& g = m.graph;
  g.inputs = {FloatValue("x", {Dim::Symbolic("N"), Dim::Fixed(2), Dim::Fixed(6), Dim::Fixed(6)})};
  g.outputs = {FloatValue("y", {Dim::Symbolic("N"), Dim::Fixed(4)})};
  g.initializers = {RandomFloats({3, 2, 3, 3}, 1, "W"), RandomFloats({3}, 2, "B"),
                    Tensor::FromVector<int64_t>({2}, {-1, 27}, "shape"), RandomFloats({4, 27}, 3, "W2"),
                    RandomFloats({4}, 4, "B2")};
  g.nodes = {
      MakeNode("Conv", {"x", "W", "B"}, {"c"},
               {Attribute::Ints("kernel_shape", {3, 3}), Attribute::Ints("pads", {1, 1, 1, 1})}, "conv"),
      MakeNode("Relu", {"c"}, {"r"}, {}, "relu"),
      MakeNode("MaxPool", {"r"}, {"p"},
               {Attribute::Ints("kernel_shape", {2, 2}), Attribute::Ints("strides", {2, 2})}, "pool"),
      MakeNode("Reshape", {"p", "shape"}, {"f"}, {}, "reshape"),
      MakeNode("Gemm", {"f", "W2", "B2"}, {"y"}, {Attribute::Int("transB", 1)}, "fc"),
  };
  return m;
}

// Hand-made ranges of ConvModel's activations; f's lower end widens the shared range of r, p and f.
std::map<std::string, TensorStats> ConvStats() {
  return {{"x", Stats(-1.0f, 1.55f)},
          {"r", Stats(0.0f, 5.1f)},
          {"p", Stats(0.0f, 5.1f)},
          {"f", Stats(-0.51f, 5.1f)}};
}

TEST(Quantize, ConvReluMaxPoolReshapeGemmStructure) {
  Model m = ConvModel();
  const Model original = m;
  TableSource source(ConvStats());
  const PassContext ctx = Quantize(m, &source);
  const Graph& g = m.graph;

  // One calibration request, for every float activation (so that a saved table serves other recipes);
  // pairs go on x, r, p and f only.
  EXPECT_EQ(source.calls, 1);
  EXPECT_EQ(source.asked, (std::vector<std::string>{"c", "f", "p", "r", "x", "y"}));

  // The input pair: uint8 with the table's range.
  const auto [xs, xzp] = Uint8Params(-1.0f, 1.55f);
  ASSERT_EQ(QuantizersOf(g, "x").size(), 1u);
  const Node& xq = *QuantizersOf(g, "x")[0];
  EXPECT_EQ(xq.outputs[0], "x_q");
  EXPECT_EQ(Init(g, xq.inputs[1]).data<float>()[0], xs);
  EXPECT_EQ(Init(g, xq.inputs[2]).dtype(), DType::kUInt8);
  EXPECT_EQ(Init(g, xq.inputs[2]).data<uint8_t>()[0], xzp);

  // Conv keeps its output name and reads the dequantized input, weight and bias.
  const Node& conv = NodeNamed(g, "conv");
  EXPECT_EQ(conv.outputs, std::vector<std::string>{"c"});
  EXPECT_EQ(conv.inputs[0], "x_dq");
  const Node* wdq = Producer(g, conv.inputs[1]);
  ASSERT_NE(wdq, nullptr);
  EXPECT_EQ(wdq->op_type, "DequantizeLinear");
  // An explicit zero point: ONNX Runtime's QGemm/QLinearMatMul fusions append every input of the weight's
  // DequantizeLinear, so one without it is not fused (quantize_qdq.cc, Weight).
  ASSERT_EQ(wdq->inputs.size(), 3u);
  EXPECT_EQ(Init(g, wdq->inputs[2]).dtype(), DType::kInt8);
  EXPECT_EQ(Init(g, wdq->inputs[2]).dims(), (std::vector<int64_t>{3}));
  for (int64_t c = 0; c < 3; ++c) EXPECT_EQ(Init(g, wdq->inputs[2]).data<int8_t>()[c], 0);
  EXPECT_EQ(wdq->AttrInt("axis", -1), 0);
  const Tensor& wq = Init(g, wdq->inputs[0]);
  EXPECT_EQ(wq.dtype(), DType::kInt8);
  EXPECT_EQ(wq.dims(), (std::vector<int64_t>{3, 2, 3, 3}));
  const Tensor& w = Init(original.graph, "W");
  const std::vector<float> ws = WeightScales(w, 0, kStaticWeightMax);
  EXPECT_EQ(Floats(Init(g, wdq->inputs[1])), ws);
  for (int64_t i = 0; i < w.numel(); ++i) {
    const float s = ws[static_cast<size_t>(i / 18)];
    EXPECT_EQ(wq.data<int8_t>()[i], static_cast<int8_t>(std::round(w.data<float>()[i] / s))) << i;
  }

  // Bias: int32 with scale x_scale * w_scale per channel, per-axis DequantizeLinear without zero point.
  // The scale is not stored again: a Mul of the input's and the weight's scale tensors computes it.
  const Node* bdq = Producer(g, conv.inputs[2]);
  ASSERT_NE(bdq, nullptr);
  EXPECT_EQ(bdq->op_type, "DequantizeLinear");
  EXPECT_EQ(bdq->inputs.size(), 2u);
  EXPECT_EQ(bdq->AttrInt("axis", -1), 0);
  const Tensor& bq = Init(g, bdq->inputs[0]);
  ASSERT_EQ(bq.dtype(), DType::kInt32);
  const Node* bmul = Producer(g, bdq->inputs[1]);
  ASSERT_NE(bmul, nullptr);
  EXPECT_EQ(bmul->op_type, "Mul");
  EXPECT_EQ(bmul->inputs, (std::vector<std::string>{xq.inputs[1], wdq->inputs[1]}));
  EXPECT_EQ(g.FindInitializer(bdq->inputs[1]), nullptr);
  // Scalar input scale times per-channel weight scales, in float32 as Mul computes it.
  ASSERT_EQ(Init(g, bmul->inputs[0]).numel(), 1);
  std::vector<float> bs = Floats(Init(g, bmul->inputs[1]));
  for (float& v : bs) v *= Init(g, bmul->inputs[0]).data<float>()[0];
  ASSERT_EQ(bs.size(), 3u);
  for (size_t c = 0; c < 3; ++c) {
    EXPECT_EQ(bs[c], xs * ws[c]);
    const double b = Init(original.graph, "B").data<float>()[c];
    EXPECT_EQ(bq.data<int32_t>()[c], static_cast<int32_t>(std::round(b / (double{xs} * ws[c]))));
  }

  // The pair goes after the Relu, not between Conv and Relu.
  EXPECT_EQ(NodeNamed(g, "relu").inputs, std::vector<std::string>{"c"});
  EXPECT_EQ(Readers(g, "c").size(), 1u);
  ASSERT_EQ(QuantizersOf(g, "r").size(), 1u);
  const Node& rq = *QuantizersOf(g, "r")[0];
  EXPECT_EQ(rq.outputs[0], "r_q");
  EXPECT_EQ(Producer(g, "r_dq")->inputs, (std::vector<std::string>{"r_q", rq.inputs[1], rq.inputs[2]}));

  // MaxPool and Reshape run on the quantized data: their outputs reuse r's scale and zero point, which
  // cover the union of the three ranges.
  EXPECT_EQ(NodeNamed(g, "pool").inputs[0], "r_dq");
  EXPECT_EQ(NodeNamed(g, "reshape").inputs[0], "p_dq");
  for (const std::string v : {"p", "f"}) {
    ASSERT_EQ(QuantizersOf(g, v).size(), 1u) << v;
    EXPECT_EQ(QuantizersOf(g, v)[0]->inputs[1], rq.inputs[1]) << v;
    EXPECT_EQ(QuantizersOf(g, v)[0]->inputs[2], rq.inputs[2]) << v;
  }
  const auto [rs, rzp] = Uint8Params(-0.51f, 5.1f);
  EXPECT_EQ(Init(g, rq.inputs[1]).data<float>()[0], rs);
  EXPECT_EQ(Init(g, rq.inputs[2]).data<uint8_t>()[0], rzp);

  // Gemm with transB: weight per row (axis 0); the graph output stays float.
  const Node& fc = NodeNamed(g, "fc");
  EXPECT_EQ(fc.inputs[0], "f_dq");
  EXPECT_EQ(Producer(g, fc.inputs[1])->AttrInt("axis", -1), 0);
  EXPECT_EQ(Init(g, Producer(g, fc.inputs[1])->inputs[1]).dims(), std::vector<int64_t>{4});
  EXPECT_EQ(Init(g, Producer(g, fc.inputs[2])->inputs[0]).dtype(), DType::kInt32);
  EXPECT_EQ(fc.outputs, std::vector<std::string>{"y"});
  EXPECT_TRUE(QuantizersOf(g, "y").empty());
  EXPECT_EQ(g.outputs[0].name, "y");

  // The float weights are gone; scales and zero points exist once each.
  for (const std::string name : {"W", "B", "W2", "B2"}) EXPECT_EQ(g.FindInitializer(name), nullptr) << name;
  std::set<std::string> contents;
  for (const auto& t : g.initializers) {
    if (t.rank() > 0) continue;
    const std::string key = std::to_string(static_cast<int>(t.dtype())) +
                            std::string(static_cast<const char*>(t.raw()), t.nbytes());
    EXPECT_TRUE(contents.insert(key).second) << "duplicate scalar " << t.name();
  }

  EXPECT_EQ(Counter(ctx, "qdq_pairs"), 4);
  EXPECT_EQ(Counter(ctx, "quantized_weights"), 2);
  EXPECT_EQ(Counter(ctx, "quantized_nodes"), 4);  // Conv, MaxPool, Reshape, Gemm
  EXPECT_EQ(testing::CountOps(g, "QuantizeLinear"), 4);
  EXPECT_EQ(testing::CountOps(g, "DequantizeLinear"), 8);
  EXPECT_FALSE(ctx.details().contains("float_nodes"));
  const json& tensors = ctx.details().at("tensors");
  ASSERT_EQ(tensors.size(), 4u);
  EXPECT_EQ(tensors[0]["name"], "x");
  EXPECT_EQ(tensors[0]["scale"].get<float>(), xs);
  EXPECT_EQ(tensors[0]["zero_point"], xzp);
  EXPECT_EQ(tensors[0]["dtype"], "uint8");
  EXPECT_EQ(tensors[0]["lo"].get<float>(), -1.0f);
  EXPECT_EQ(tensors[0]["hi"].get<float>(), 1.55f);
  EXPECT_EQ(ctx.details().at("summary")["min_scale"].get<float>(), xs);
  EXPECT_EQ(ctx.details().at("summary")["max_scale"].get<float>(), rs);
  EXPECT_EQ(ctx.details().at("opset"), (json{{"from", 17}, {"to", 17}, {"per_channel", true}, {"why", ""}}));
  const CheckResult check = CheckWithOnnx(m);
  EXPECT_TRUE(check.ok) << check.message;
}

TEST(Quantize, OutputIsDeterministic) {
  Model a = ConvModel(), b = ConvModel();
  TableSource sa(ConvStats()), sb(ConvStats());
  Quantize(a, &sa);
  Quantize(b, &sb);
  EXPECT_EQ(SerializeModel(a), SerializeModel(b));
}

// Worst-case |quantized - float| of ConvModel's output, from the quantization steps: half a step on each
// rounded input, weight and bias, carried through each layer by the L1 norm of each output channel's
// weights (Relu and MaxPool never enlarge an error, clipping to a calibrated range only moves a value
// towards the float one, and re-quantizing MaxPool and Reshape outputs with their input's parameters is
// exact). The float arithmetic's own rounding is far below these steps; kArithmeticSlack covers it.
constexpr double kArithmeticSlack = 1e-5;

// One Conv/Gemm layer with per-row weights `w` ([C, K...]): error of its output given the error of its
// inputs and the largest L1 norm of the K inputs one output reads (rounded inputs included). `in_scale`
// > 0: the bias is int32 with step in_scale * w_scale.
double LayerError(const Tensor& w, double weight_max, double in_err, double in_l1, double in_scale) {
  const std::vector<float> ws = WeightScales(w, 0, weight_max);
  const int64_t per = w.numel() / static_cast<int64_t>(ws.size());
  double worst = 0;
  for (size_t c = 0; c < ws.size(); ++c) {
    double l1 = 0;
    for (int64_t i = 0; i < per; ++i)
      l1 += std::fabs(double{w.data<float>()[static_cast<int64_t>(c) * per + i]});
    worst = std::max(worst, l1 * in_err + 0.5 * ws[c] * (in_l1 + static_cast<double>(per) * in_err) +
                                0.5 * in_scale * ws[c]);
  }
  return worst;
}

// x_scale, r_scale: the activation steps (0 when activations stay float).
double ConvModelErrorBound(const Model& original, const Tensor& x, double weight_max, double x_scale,
                           double r_scale) {
  // Largest L1 norm of a 2x3x3 input window of the padded convolution, and of a row of f.
  const int64_t n = x.dims()[0];
  double x_l1 = 0;
  for (int64_t s = 0; s < n; ++s) {
    for (int64_t i = 0; i < 6; ++i) {
      for (int64_t j = 0; j < 6; ++j) {
        double sum = 0;
        for (int64_t ch = 0; ch < 2; ++ch) {
          for (int64_t di = -1; di <= 1; ++di) {
            for (int64_t dj = -1; dj <= 1; ++dj) {
              if (i + di < 0 || i + di >= 6 || j + dj < 0 || j + dj >= 6) continue;
              sum += std::fabs(double{x.data<float>()[((s * 2 + ch) * 6 + i + di) * 6 + j + dj]});
            }
          }
        }
        x_l1 = std::max(x_l1, sum);
      }
    }
  }
  Model probe = original;
  probe.graph.outputs.push_back(testing::FloatOutput("f"));
  const Tensor f = testing::RunModel(probe, {x}).at(1);
  double f_l1 = 0;
  for (int64_t s = 0; s < n; ++s) {
    double sum = 0;
    for (int64_t k = 0; k < 27; ++k) sum += std::fabs(double{f.data<float>()[s * 27 + k]});
    f_l1 = std::max(f_l1, sum);
  }
  const double ex = 0.5 * x_scale;
  const double er = LayerError(Init(original.graph, "W"), weight_max, ex, x_l1, x_scale) + 0.5 * r_scale;
  return LayerError(Init(original.graph, "W2"), weight_max, er, f_l1, r_scale) + kArithmeticSlack;
}

TEST(Quantize, OutputsStayWithinTheQuantizationErrorBound) {
  Model m = ConvModel();
  const Model original = m;
  const Tensor x = RandomFloats({16, 2, 6, 6}, 7);
  RunSource source({x});
  const PassContext ctx = Quantize(m, &source);
  ASSERT_EQ(Counter(ctx, "qdq_pairs"), 4);
  const Tensor want = testing::RunModel(original, {x}).at(0);
  const Tensor got = testing::RunModel(m, {x}).at(0);
  const double err = testing::MaxAbsDiff({want}, {got});
  double x_scale = 0, r_scale = 0;
  for (const auto& t : ctx.details().at("tensors")) {
    if (t["name"] == "x") x_scale = t["scale"].get<double>();
    if (t["name"] == "r") r_scale = t["scale"].get<double>();
  }
  const double bound = ConvModelErrorBound(original, x, kStaticWeightMax, x_scale, r_scale);
  std::cout << "[quantize] max |int8 - float| " << err << ", bound " << bound << "\n";
  EXPECT_LE(err, bound);
  EXPECT_GT(err, 0.0) << "nothing was rounded";
}

TEST(Quantize, ValueReadByTwoQuantizedNodesGetsOnePair) {
  Model m = EmptyModel();
  Graph& g = m.graph;
  g.inputs = {FloatValue("x", Fixed({1, 2, 4, 4}))};
  g.outputs = {FloatValue("y", Fixed({1, 3, 4, 4}))};
  g.initializers = {RandomFloats({3, 2, 1, 1}, 1, "W1"), RandomFloats({3, 2, 1, 1}, 2, "W2")};
  g.nodes = {MakeNode("Conv", {"x", "W1"}, {"a"}, {}, "conv1"),
             MakeNode("Conv", {"x", "W2"}, {"b"}, {}, "conv2"), MakeNode("Add", {"a", "b"}, {"s"}, {}, "add"),
             MakeNode("Relu", {"s"}, {"y"}, {}, "relu")};
  TableSource source({{"x", Stats(-1, 1)}, {"a", Stats(-2, 2)}, {"b", Stats(-3, 3)}});
  const PassContext ctx = Quantize(m, &source);
  ASSERT_EQ(QuantizersOf(m.graph, "x").size(), 1u);
  EXPECT_EQ(NodeNamed(m.graph, "conv1").inputs[0], "x_dq");
  EXPECT_EQ(NodeNamed(m.graph, "conv2").inputs[0], "x_dq");
  EXPECT_EQ(NodeNamed(m.graph, "add").inputs, (std::vector<std::string>{"a_dq", "b_dq"}));
  // Add's output goes through the Relu straight to the graph output: no pair at all.
  EXPECT_EQ(NodeNamed(m.graph, "relu").inputs, std::vector<std::string>{"s"});
  EXPECT_EQ(Counter(ctx, "qdq_pairs"), 3);
  EXPECT_EQ(Counter(ctx, "quantized_nodes"), 3);
  // No bias: no int32 tensor.
  for (const auto& t : m.graph.initializers) EXPECT_NE(t.dtype(), DType::kInt32) << t.name();
  EXPECT_TRUE(CheckWithOnnx(m).ok);
}

TEST(Quantize, ConcatInputsShareOneScale) {
  Model m = EmptyModel();
  Graph& g = m.graph;
  g.inputs = {FloatValue("x", Fixed({1, 2, 4, 4}))};
  g.outputs = {FloatValue("y", Fixed({1, 1, 4, 4}))};
  g.initializers = {RandomFloats({3, 2, 1, 1}, 1, "W1"), RandomFloats({3, 2, 1, 1}, 2, "W2"),
                    RandomFloats({1, 6, 1, 1}, 3, "W3")};
  g.nodes = {MakeNode("Conv", {"x", "W1"}, {"a"}), MakeNode("Conv", {"x", "W2"}, {"b"}),
             MakeNode("Concat", {"a", "b"}, {"c"}, {Attribute::Int("axis", 1)}, "concat"),
             MakeNode("Conv", {"c", "W3"}, {"y"})};
  TableSource source({{"x", Stats(-1, 1)}, {"a", Stats(-1, 2)}, {"b", Stats(-3, 1)}, {"c", Stats(-3, 2)}});
  Quantize(m, &source);
  const Node& aq = *QuantizersOf(m.graph, "a").at(0);
  for (const std::string v : {"b", "c"}) {
    ASSERT_EQ(QuantizersOf(m.graph, v).size(), 1u);
    EXPECT_EQ(QuantizersOf(m.graph, v)[0]->inputs[1], aq.inputs[1]);
    EXPECT_EQ(QuantizersOf(m.graph, v)[0]->inputs[2], aq.inputs[2]);
  }
  EXPECT_EQ(Init(m.graph, aq.inputs[1]).data<float>()[0], Uint8Params(-3, 2).first);
  EXPECT_EQ(NodeNamed(m.graph, "concat").inputs, (std::vector<std::string>{"a_dq", "b_dq"}));
}

TEST(Quantize, MatMulOfTwoActivationsAndFloatSoftmax) {
  // x -> MatMul(Wq) -> q; scores = q x q^T -> Softmax -> p; o = p x q
  Model m = EmptyModel();
  Graph& g = m.graph;
  g.inputs = {FloatValue("x", Fixed({1, 4, 8}))};
  g.outputs = {FloatValue("o", Fixed({1, 4, 8}))};
  g.initializers = {RandomFloats({8, 8}, 1, "Wq")};
  g.nodes = {MakeNode("MatMul", {"x", "Wq"}, {"q"}, {}, "proj"),
             MakeNode("Transpose", {"q"}, {"qt"}, {Attribute::Ints("perm", {0, 2, 1})}, "transpose"),
             MakeNode("MatMul", {"q", "qt"}, {"s"}, {}, "scores"),
             MakeNode("Softmax", {"s"}, {"p"}, {Attribute::Int("axis", -1)}, "softmax"),
             MakeNode("MatMul", {"p", "q"}, {"o"}, {}, "mix")};
  TableSource source({{"x", Stats(-1, 1)}, {"q", Stats(-2, 2)}, {"qt", Stats(-2, 2)}, {"p", Stats(0, 1)}});
  const PassContext ctx = Quantize(m, &source);
  const Graph& q = m.graph;
  // The [K, N] weight: one scale per column (axis 1).
  const Node* wdq = Producer(q, NodeNamed(q, "proj").inputs[1]);
  EXPECT_EQ(wdq->AttrInt("axis", -1), 1);
  EXPECT_EQ(Init(q, wdq->inputs[1]).dims(), std::vector<int64_t>{8});
  // Both inputs of the activation products are quantized; q has one pair for its three readers.
  EXPECT_EQ(NodeNamed(q, "scores").inputs, (std::vector<std::string>{"q_dq", "qt_dq"}));
  EXPECT_EQ(NodeNamed(q, "mix").inputs, (std::vector<std::string>{"p_dq", "q_dq"}));
  EXPECT_EQ(NodeNamed(q, "transpose").inputs[0], "q_dq");
  EXPECT_EQ(QuantizersOf(q, "q").size(), 1u);
  // Softmax reads its float input (the scores get no pair), its output is quantized for the MatMul.
  EXPECT_EQ(NodeNamed(q, "softmax").inputs, std::vector<std::string>{"s"});
  EXPECT_TRUE(QuantizersOf(q, "s").empty());
  EXPECT_EQ(QuantizersOf(q, "p").size(), 1u);
  EXPECT_EQ(Counter(ctx, "qdq_pairs"), 4);
  const json& floats = ctx.details().at("float_nodes");
  ASSERT_EQ(floats.size(), 1u);
  EXPECT_EQ(floats[0], (json{{"node", "softmax"}, {"op", "Softmax"}, {"why", "op not covered"}}));
  EXPECT_TRUE(CheckWithOnnx(m).ok);
}

TEST(Quantize, HardSigmoidTimesInputIsOneQuantizedHardSwish) {
  Model m = EmptyModel(13);
  Graph& g = m.graph;
  g.inputs = {FloatValue("x", Fixed({1, 2, 4, 4}))};
  g.outputs = {FloatValue("y", Fixed({1, 2, 4, 4}))};
  g.initializers = {RandomFloats({2, 2, 1, 1}, 1, "W1"), RandomFloats({2, 2, 1, 1}, 2, "W2")};
  g.nodes = {MakeNode("Conv", {"x", "W1"}, {"c"}, {}, "conv1"),
             MakeNode("HardSigmoid", {"c"}, {"h"}, {Attribute::Float("alpha", 1.0f / 6)}, "hsig"),
             MakeNode("Mul", {"c", "h"}, {"m"}, {}, "mul"),
             MakeNode("Conv", {"m", "W2"}, {"y"}, {}, "conv2")};
  TableSource source({{"x", Stats(-1, 1)}, {"c", Stats(-3, 3)}, {"m", Stats(-0.4f, 3)}});
  const PassContext ctx = Quantize(m, &source);
  const Graph& q = m.graph;
  EXPECT_EQ(NodeNamed(q, "hsig").inputs, std::vector<std::string>{"c_dq"});
  EXPECT_EQ(NodeNamed(q, "mul").inputs, (std::vector<std::string>{"c_dq", "h"}));
  EXPECT_TRUE(QuantizersOf(q, "h").empty()) << "no pair inside the HardSwish";
  EXPECT_EQ(NodeNamed(q, "conv2").inputs[0], "m_dq");
  EXPECT_EQ(Counter(ctx, "qdq_pairs"), 3);
  EXPECT_EQ(Counter(ctx, "quantized_nodes"), 4);
  EXPECT_EQ(QuantizedValues(m.graph), (std::vector<std::string>{"c", "m", "x"}));
}

TEST(Quantize, GroupedConvTransposeAndClipAtZero) {
  // x [1,2,3,3] -> ConvTranspose(W [2,2,2,2], group 2, stride 2) -> t [1,4,6,6] -> Clip(0, 6) -> k -> Conv ->
  // y
  Model m = EmptyModel();
  Graph& g = m.graph;
  g.inputs = {FloatValue("x", Fixed({1, 2, 3, 3}))};
  g.outputs = {FloatValue("y", Fixed({1, 1, 6, 6}))};
  g.initializers = {RandomFloats({2, 2, 2, 2}, 1, "W"), RandomFloats({4}, 2, "B"),
                    RandomFloats({1, 4, 1, 1}, 3, "W2"), Tensor::FromVector<float>({}, {0.0f}, "zero"),
                    Tensor::FromVector<float>({}, {6.0f}, "six")};
  g.nodes = {MakeNode("ConvTranspose", {"x", "W", "B"}, {"t"},
                      {Attribute::Int("group", 2), Attribute::Ints("strides", {2, 2})}, "up"),
             MakeNode("Clip", {"t", "zero", "six"}, {"k"}, {}, "clip"),
             MakeNode("Conv", {"k", "W2"}, {"y"}, {}, "out")};
  TableSource source({{"x", Stats(-1, 1.55f)}, {"k", Stats(0, 6)}});
  Quantize(m, &source);
  const Graph& q = m.graph;
  const Node& up = NodeNamed(q, "up");
  const Node* wdq = Producer(q, up.inputs[1]);
  EXPECT_EQ(wdq->AttrInt("axis", -1), 1);
  const std::vector<float> ws = Floats(Init(q, wdq->inputs[1]));
  ASSERT_EQ(ws.size(), 2u);
  // Output channel c of group c / 2 uses the weight slice c % 2 along axis 1.
  const Node* bdq = Producer(q, up.inputs[2]);
  const std::vector<float> bs = Floats(Init(q, bdq->inputs[1]));
  const float xs = Uint8Params(-1, 1.55f).first;
  ASSERT_EQ(bs.size(), 4u);
  for (size_t c = 0; c < 4; ++c) EXPECT_EQ(bs[c], xs * ws[c % 2]) << c;
  // Clip with a lower bound of 0 is fused like Relu: the pair follows it.
  EXPECT_EQ(NodeNamed(q, "clip").inputs[0], "t");
  EXPECT_TRUE(QuantizersOf(q, "t").empty());
  EXPECT_EQ(NodeNamed(q, "out").inputs[0], "k_dq");
  EXPECT_EQ(QuantizedValues(m.graph), (std::vector<std::string>{"k", "x"}));
  EXPECT_TRUE(CheckWithOnnx(m).ok);
}

TEST(Quantize, ExcludedNodesAndOpsStayFloat) {
  {
    Model m = ConvModel();
    TableSource source(ConvStats());
    const PassContext ctx = Quantize(m, &source, {{"exclude_nodes", {"conv"}}});
    const Node& conv = NodeNamed(m.graph, "conv");
    EXPECT_EQ(conv.inputs, (std::vector<std::string>{"x", "W", "B"}));
    EXPECT_EQ(Init(m.graph, "W").dtype(), DType::kFloat);
    EXPECT_TRUE(QuantizersOf(m.graph, "x").empty());
    // Without the Conv nothing quantized reaches MaxPool and Reshape: only the Gemm's input gets a pair.
    EXPECT_TRUE(QuantizersOf(m.graph, "r").empty());
    EXPECT_EQ(QuantizersOf(m.graph, "f").size(), 1u);
    const json& floats = ctx.details().at("float_nodes");
    ASSERT_EQ(floats.size(), 4u);
    EXPECT_EQ(floats[0], (json{{"node", "conv"}, {"op", "Conv"}, {"why", "excluded by exclude_nodes"}}));
    EXPECT_EQ(floats[1], (json{{"node", "relu"}, {"op", "Relu"}, {"why", "op not covered"}}));
    EXPECT_EQ(floats[2], (json{{"node", "pool"}, {"op", "MaxPool"}, {"why", "input is not quantized"}}));
    EXPECT_EQ(floats[3], (json{{"node", "reshape"}, {"op", "Reshape"}, {"why", "input is not quantized"}}));
    EXPECT_EQ(Counter(ctx, "quantized_weights"), 1);
    EXPECT_EQ(QuantizedValues(m.graph), std::vector<std::string>{"f"});
  }
  {
    Model m = ConvModel();
    TableSource source(ConvStats());
    const PassContext ctx = Quantize(m, &source, {{"exclude_ops", {"Gemm"}}});
    const Node& fc = NodeNamed(m.graph, "fc");
    EXPECT_EQ(fc.inputs, (std::vector<std::string>{"f", "W2", "B2"}));
    // Nothing reads f quantized any more, so the Reshape has no pair after it.
    EXPECT_TRUE(QuantizersOf(m.graph, "f").empty());
    const json& floats = ctx.details().at("float_nodes");
    ASSERT_EQ(floats.size(), 2u);
    EXPECT_EQ(floats[0],
              (json{{"node", "reshape"}, {"op", "Reshape"}, {"why", "output is only read in float"}}));
    EXPECT_EQ(floats[1], (json{{"node", "fc"}, {"op", "Gemm"}, {"why", "excluded by exclude_ops"}}));
    EXPECT_EQ(QuantizedValues(m.graph), (std::vector<std::string>{"p", "r", "x"}));
  }
}

TEST(Quantize, Uint8ZeroPointOfZeroIsStoredOnce) {
  // After a Relu the range starts at 0. The zero point 0 is still stored (ONNX Runtime rejects Conv groups
  // without it), as one shared tensor; weights carry int8 zeros of their scale's shape, biases none.
  Model m = ConvModel();
  std::map<std::string, TensorStats> stats = ConvStats();
  for (const std::string v : {"r", "p", "f"}) stats[v] = Stats(0.0f, 5.1f);
  TableSource source(stats);
  Quantize(m, &source);
  const Graph& g = m.graph;
  std::set<std::string> zero_points;
  for (const std::string v : {"r", "p", "f"}) {
    ASSERT_EQ(QuantizersOf(g, v).size(), 1u) << v;
    const Node& q = *QuantizersOf(g, v)[0];
    ASSERT_EQ(q.inputs.size(), 3u) << v;
    EXPECT_EQ(Init(g, q.inputs[2]).dtype(), DType::kUInt8);
    EXPECT_EQ(Init(g, q.inputs[2]).data<uint8_t>()[0], 0);
    zero_points.insert(q.inputs[2]);
    const Node& dq = *Readers(g, q.outputs[0])[0];
    EXPECT_EQ(dq.inputs, (std::vector<std::string>{q.outputs[0], q.inputs[1], q.inputs[2]})) << v;
  }
  EXPECT_EQ(zero_points.size(), 1u);
  for (const auto& n : g.nodes) {
    if (n.op_type == "DequantizeLinear" && g.FindInitializer(n.inputs[0]) != nullptr) {
      const bool bias = Init(g, n.inputs[0]).dtype() == DType::kInt32;
      ASSERT_EQ(n.inputs.size(), bias ? 2u : 3u) << n.outputs[0];
      if (!bias) {
        const Tensor& zp = Init(g, n.inputs[2]);
        EXPECT_EQ(zp.dtype(), DType::kInt8) << n.outputs[0];
        EXPECT_EQ(zp.dims(), Init(g, n.inputs[1]).dims()) << n.outputs[0];
      }
    }
  }
  EXPECT_TRUE(CheckWithOnnx(m).ok);
}

TEST(Quantize, Int8ActivationsShareOneZeroPoint) {
  Model m = ConvModel();
  TableSource source(ConvStats());
  Quantize(m, &source, {{"activation_type", "int8"}});
  std::set<std::string> zero_points;
  for (const auto& n : m.graph.nodes) {
    if (n.op_type != "QuantizeLinear") continue;
    ASSERT_EQ(n.inputs.size(), 3u) << "an int8 zero point makes QuantizeLinear output int8";
    zero_points.insert(n.inputs[2]);
  }
  ASSERT_EQ(zero_points.size(), 1u);
  const Tensor& zp = Init(m.graph, *zero_points.begin());
  EXPECT_EQ(zp.dtype(), DType::kInt8);
  EXPECT_EQ(zp.rank(), 0);
  EXPECT_EQ(zp.data<int8_t>()[0], 0);
  // Symmetric: scale = max(|lo|, |hi|) / 127.
  EXPECT_EQ(Init(m.graph, QuantizersOf(m.graph, "x")[0]->inputs[1]).data<float>()[0],
            static_cast<float>(double{1.55f} / 127.0));
  EXPECT_EQ(Init(m.graph, QuantizersOf(m.graph, "r")[0]->inputs[1]).data<float>()[0],
            static_cast<float>(double{5.1f} / 127.0));
  EXPECT_TRUE(CheckWithOnnx(m).ok);
}

TEST(Quantize, ShallowConvsStayFloatBelowMinConvDepth) {
  const PassInfo* info = FindPass("quantize");
  const auto spec = std::find_if(info->options.begin(), info->options.end(),
                                 [](const OptionSpec& o) { return o.name == "min_conv_depth"; });
  ASSERT_NE(spec, info->options.end());
  EXPECT_EQ(spec->default_value, 64);
  // The Conv's weight is [3, 2, 3, 3]: depth 2 x 3 x 3 = 18.
  {
    Model m = ConvModel();
    TableSource source(ConvStats());
    Quantize(m, &source, {{"min_conv_depth", 18}});
    EXPECT_EQ(Producer(m.graph, NodeNamed(m.graph, "conv").inputs[1])->op_type, "DequantizeLinear");
  }
  Model m = ConvModel();
  TableSource source(ConvStats());
  const PassContext ctx = Quantize(m, &source, {{"min_conv_depth", 19}});
  const Graph& g = m.graph;
  const Node& conv = NodeNamed(g, "conv");
  EXPECT_EQ(conv.inputs, (std::vector<std::string>{"x", "W", "B"}));  // float input, weight and bias
  EXPECT_TRUE(QuantizersOf(g, "x").empty());
  // The Gemm further on is still quantized.
  EXPECT_EQ(Producer(g, NodeNamed(g, "fc").inputs[1])->op_type, "DequantizeLinear");
  std::map<std::string, std::string> floats;
  for (const auto& f : ctx.details().at("float_nodes")) floats[f["node"]] = f["why"];
  EXPECT_EQ(floats["conv"], "reduction depth 18 (input channels per group x kernel) is below min_conv_depth 19");
  EXPECT_EQ(floats.size(), 4u);  // and the Relu, MaxPool and Reshape on its float output
  EXPECT_EQ(floats["pool"], "input is not quantized");
  EXPECT_TRUE(CheckWithOnnx(m).ok);
}

TEST(Quantize, PerTensorWeights) {
  Model m = ConvModel();
  TableSource source(ConvStats());
  Quantize(m, &source, {{"per_channel", false}});
  const Node& conv = NodeNamed(m.graph, "conv");
  const Node* wdq = Producer(m.graph, conv.inputs[1]);
  EXPECT_EQ(wdq->FindAttr("axis"), nullptr);
  const Tensor& scale = Init(m.graph, wdq->inputs[1]);
  EXPECT_EQ(scale.rank(), 0);
  Tensor flat = Init(ConvModel().graph, "W");
  flat.Reshape({1, flat.numel()});
  EXPECT_EQ(scale.data<float>()[0], WeightScales(flat, 0, kStaticWeightMax)[0]);
  const Node* bdq = Producer(m.graph, conv.inputs[2]);
  EXPECT_EQ(bdq->FindAttr("axis"), nullptr);
  const Node* bmul = Producer(m.graph, bdq->inputs[1]);
  ASSERT_NE(bmul, nullptr);
  EXPECT_EQ(bmul->inputs[1], wdq->inputs[1]);
  EXPECT_EQ(Init(m.graph, bmul->inputs[0]).rank(), 0);
  EXPECT_EQ(Init(m.graph, bmul->inputs[1]).rank(), 0);
  EXPECT_EQ(m.OpsetVersion(""), 17);
}

TEST(Quantize, Opset11IsUpgradedTo13ForPerChannelWeights) {
  Model m = ConvModel(11);
  TableSource source(ConvStats());
  const PassContext ctx = Quantize(m, &source);
  EXPECT_EQ(m.OpsetVersion(""), 13);
  const json& opset = ctx.details().at("opset");
  EXPECT_EQ(opset["from"], 11);
  EXPECT_EQ(opset["to"], 13);
  EXPECT_EQ(opset["per_channel"], true);
  EXPECT_NE(opset["why"].get<std::string>().find("opset 13"), std::string::npos);
  EXPECT_TRUE(std::any_of(ctx.notes().begin(), ctx.notes().end(), [](const std::string& n) {
    return n.find("opset 11 -> 13") != std::string::npos;
  }));
  EXPECT_EQ(Producer(m.graph, NodeNamed(m.graph, "conv").inputs[1])->AttrInt("axis", -1), 0);
  EXPECT_TRUE(CheckWithOnnx(m).ok);

  // Per-tensor weights need only opset 10: the model keeps opset 11.
  Model p = ConvModel(11);
  TableSource source2(ConvStats());
  Quantize(p, &source2, {{"per_channel", false}});
  EXPECT_EQ(p.OpsetVersion(""), 11);
  EXPECT_TRUE(CheckWithOnnx(p).ok);
}

TEST(Quantize, FallsBackToPerTensorWeightsWhenOpset13IsOutOfReach) {
  // The version converter cannot move Softmax to opset 13 without its input's shape; opset 10 suffices for
  // per-tensor weights.
  Model m = EmptyModel(9);
  Graph& g = m.graph;
  ValueInfo x{"x", TypeInfo::Tensor(DType::kFloat, {}), ""};
  x.type.has_shape = false;
  g.inputs = {x};
  g.outputs = {testing::FloatOutput("y")};
  g.initializers = {RandomFloats({4, 4}, 1, "W"), RandomFloats({4, 3}, 2, "W2")};
  g.nodes = {MakeNode("MatMul", {"x", "W"}, {"a"}, {}, "mm"),
             MakeNode("Softmax", {"a"}, {"s"}, {}, "softmax"),
             MakeNode("MatMul", {"s", "W2"}, {"y"}, {}, "mm2")};
  TableSource source({{"x", Stats(-1, 1)}, {"s", Stats(0, 1)}});
  const PassContext ctx = Quantize(m, &source);
  EXPECT_EQ(m.OpsetVersion(""), 10);
  const json& opset = ctx.details().at("opset");
  EXPECT_EQ(opset["from"], 9);
  EXPECT_EQ(opset["to"], 10);
  EXPECT_EQ(opset["per_channel"], false);
  EXPECT_NE(opset["why"].get<std::string>().find("per tensor"), std::string::npos);
  const Node* wdq = Producer(m.graph, NodeNamed(m.graph, "mm").inputs[1]);
  ASSERT_NE(wdq, nullptr);
  EXPECT_EQ(wdq->FindAttr("axis"), nullptr);
  EXPECT_EQ(Init(m.graph, wdq->inputs[1]).rank(), 0);
}

TEST(Quantize, WeightsOnlyNeedsNoCalibration) {
  Model m = ConvModel();
  const Model original = m;
  const PassContext ctx = Quantize(m, nullptr, {{"mode", "weights_only"}});
  const Graph& g = m.graph;
  EXPECT_EQ(testing::CountOps(g, "QuantizeLinear"), 0);
  const Node& conv = NodeNamed(g, "conv");
  EXPECT_EQ(conv.inputs[0], "x");
  EXPECT_EQ(conv.inputs[2], "B") << "biases stay float";
  const Node* wdq = Producer(g, conv.inputs[1]);
  EXPECT_EQ(wdq->AttrInt("axis", -1), 0);
  EXPECT_EQ(Floats(Init(g, wdq->inputs[1])), WeightScales(Init(original.graph, "W"), 0, kFullWeightMax));
  EXPECT_EQ(Init(g, wdq->inputs[0]).dtype(), DType::kInt8);
  EXPECT_EQ(Counter(ctx, "quantized_weights"), 2);
  EXPECT_EQ(g.FindInitializer("W"), nullptr);
  EXPECT_TRUE(CheckWithOnnx(m).ok);

  // Only the weights are rounded: the error bound without activation steps.
  const Tensor x = RandomFloats({4, 2, 6, 6}, 9);
  const Tensor want = testing::RunModel(original, {x}).at(0);
  const Tensor got = testing::RunModel(m, {x}).at(0);
  const double bound = ConvModelErrorBound(original, x, kFullWeightMax, 0.0, 0.0);
  const double err = testing::MaxAbsDiff({want}, {got});
  std::cout << "[quantize] weights only: max |int8 - float| " << err << ", bound " << bound << "\n";
  EXPECT_LE(err, bound);
  EXPECT_GT(err, 0.0);
}

TEST(Quantize, WeightsOnlyGatherTable) {
  Model m = EmptyModel();
  Graph& g = m.graph;
  g.inputs = {{"ids", TypeInfo::Tensor(DType::kInt64, Fixed({3})), ""}};
  g.outputs = {FloatValue("e", Fixed({3, 4}))};
  g.initializers = {RandomFloats({10, 4}, 5, "table")};
  g.nodes = {MakeNode("Gather", {"table", "ids"}, {"e"}, {}, "lookup")};
  const Model original = m;
  Quantize(m, nullptr, {{"mode", "weights_only"}});
  const Node* dq = Producer(m.graph, NodeNamed(m.graph, "lookup").inputs[0]);
  ASSERT_NE(dq, nullptr);
  EXPECT_EQ(dq->AttrInt("axis", -1), 0);
  EXPECT_EQ(Init(m.graph, dq->inputs[1]).dims(), std::vector<int64_t>{10});
  const Tensor ids = Tensor::FromVector<int64_t>({3}, {7, 0, 7});
  const Tensor want = testing::RunModel(original, {ids}).at(0);
  const Tensor got = testing::RunModel(m, {ids}).at(0);
  // Each row keeps its largest value exactly and the others within half a step of max|row| / 127.
  EXPECT_LE(testing::MaxAbsDiff({want}, {got}), 0.5 / kFullWeightMax + kArithmeticSlack);
}

TEST(Quantize, StaticModeWithoutCalibrationIsAUsageError) {
  Model m = ConvModel();
  try {
    Quantize(m, nullptr);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUsage);
    EXPECT_STREQ(e.what(), "static quantization needs calibration data (--calib DIR)");
  }
  const PassInfo* info = FindPass("quantize");
  EXPECT_NE(testing::ErrorOf([&] {
              info->create(ValidatePassOptions(*info, json{{"mode", "int4"}}, "t"));
            }).find("mode"),
            std::string::npos);
  EXPECT_NE(testing::ErrorOf([&] {
              info->create(ValidatePassOptions(*info, json{{"calib_method", "kl"}}, "t"));
            }),
            "");
}

TEST(Quantize, SubgraphsAndQuantizedModelsAreLeftAlone) {
  {
    Model m = ConvModel();
    Graph branch;
    branch.name = "b";
    branch.outputs = {FloatValue("k", Fixed({1}))};
    branch.nodes = {testing::ConstantNode("k", Tensor::FromVector<float>({1}, {1.0f}))};
    m.graph.inputs.push_back({"cond", TypeInfo::Tensor(DType::kBool, Fixed({})), ""});
    m.graph.outputs.push_back(FloatValue("z", Fixed({1})));
    m.graph.nodes.push_back(MakeNode(
        "If", {"cond"}, {"z"},
        {testing::GraphAttr("then_branch", branch), testing::GraphAttr("else_branch", branch)}, "branch"));
    TableSource source(ConvStats());
    const PassContext ctx = Quantize(m, &source);
    EXPECT_EQ(Counter(ctx, "qdq_pairs"), 4);
    EXPECT_TRUE(std::any_of(ctx.notes().begin(), ctx.notes().end(),
                            [](const std::string& n) { return n.find("subgraphs") != std::string::npos; }));
  }
  {
    Model m = ConvModel();
    TableSource source(ConvStats());
    Quantize(m, &source);
    const std::string once = SerializeModel(m);
    TableSource again(ConvStats());
    const PassContext ctx = Quantize(m, &again);
    EXPECT_EQ(SerializeModel(m), once);
    EXPECT_EQ(again.calls, 0);
    EXPECT_EQ(ctx.notes().size(), 1u);
  }
}

// x float32[1,4,16] in [-1, 1], deterministic, for the If/Conv/LSTM model.
Tensor IfModelInput() {
  std::vector<float> v(64);
  for (size_t i = 0; i < v.size(); ++i) v[i] = std::sin(0.61f * static_cast<float>(i));
  return Tensor::FromVector<float>({1, 4, 16}, v);
}

// int8 weights (a step of max|w| / 127, at most 4e-3 here) in a Conv over 12 products then an LSTM over 16
// steps (then), or a MatMul over 4 products then a mean (else); outputs below 0.5. Measured in ONNX Runtime
// 1.30: 1.6e-3 (then) and 3.5e-4 (else) largest absolute difference; the bound leaves 3x.
constexpr double kWeightsOnlyIfTolerance = 5e-3;

TEST(Quantize, WeightsOnlyReachesIfBodiesAndLstmWeights) {
  const Model original = testing::IfConvLstmModel();
  Model m = original;
  const PassContext ctx = Quantize(m, nullptr, {{"mode", "weights_only"}});
  // The outer Conv weight is quantized into the body that reads it and removed from the main graph.
  EXPECT_EQ(m.graph.FindInitializer("Wc"), nullptr);
  EXPECT_NE(m.graph.FindInitializer("bc"), nullptr) << "biases stay float";
  const Node& iff = NodeNamed(m.graph, "if");
  const Graph& then_g = iff.FindAttr("then_branch")->graphs.at(0);
  const Graph& else_g = iff.FindAttr("else_branch")->graphs.at(0);

  const Node& conv = NodeNamed(then_g, "conv");
  EXPECT_EQ(conv.inputs, (std::vector<std::string>{"x", "Wc_dq", "bc"}));
  const Node* cdq = Producer(then_g, "Wc_dq");
  ASSERT_NE(cdq, nullptr);
  EXPECT_EQ(cdq->op_type, "DequantizeLinear");
  EXPECT_EQ(cdq->AttrInt("axis", -1), 0);
  EXPECT_EQ(Init(then_g, cdq->inputs[0]).dtype(), DType::kInt8);
  EXPECT_EQ(Floats(Init(then_g, cdq->inputs[1])), WeightScales(Init(original.graph, "Wc"), 0, kFullWeightMax));

  // LSTM: W and R int8 per gate row (axis 1), B float.
  const Node& lstm = NodeNamed(then_g, "lstm");
  EXPECT_EQ(lstm.inputs, (std::vector<std::string>{"seq", "W_lstm_dq", "R_lstm_dq", "B_lstm"}));
  const Graph& orig_then = original.graph.nodes[0].FindAttr("then_branch")->graphs.at(0);
  for (const char* w : {"W_lstm", "R_lstm"}) {
    const Node* dq = Producer(then_g, std::string(w) + "_dq");
    ASSERT_NE(dq, nullptr);
    EXPECT_EQ(dq->AttrInt("axis", -1), 1);
    EXPECT_EQ(Init(then_g, dq->inputs[0]).dtype(), DType::kInt8);
    EXPECT_EQ(Init(then_g, dq->inputs[0]).dims(), Init(orig_then, w).dims());
    EXPECT_EQ(Floats(Init(then_g, dq->inputs[1])), WeightScales(Init(orig_then, w), 1, kFullWeightMax));
    EXPECT_EQ(then_g.FindInitializer(w), nullptr);
  }
  EXPECT_EQ(Init(then_g, "B_lstm").dtype(), DType::kFloat);

  const Node& mm = NodeNamed(else_g, "matmul");
  EXPECT_EQ(mm.inputs, (std::vector<std::string>{"xt", "Wm_dq"}));
  EXPECT_EQ(Producer(else_g, "Wm_dq")->AttrInt("axis", -1), 1);

  EXPECT_EQ(Counter(ctx, "quantized_nodes"), 3);
  EXPECT_EQ(Counter(ctx, "quantized_weights"), 4);
  EXPECT_EQ(Counter(ctx, "quantized_recurrent_nodes"), 1);
  EXPECT_EQ(testing::CheckerAndTypeErrors(m), "");

  // Both branches in ONNX Runtime (our executor runs no If or LSTM) against the float model.
  for (const bool flag : {true, false}) {
    const std::vector<Tensor> in{IfModelInput(), Tensor::FromVector<bool>({}, {flag})};
    const auto want = testing::RunModelInOrt(original, in);
    const auto got = testing::RunModelInOrt(m, in);
    ASSERT_EQ(got.size(), 1u);
    const double err = testing::MaxAbsDiff(want, got);
    std::cout << "[quantize] weights only, If branch " << flag << ": max |int8 - float| " << err << "\n";
    EXPECT_LE(err, kWeightsOnlyIfTolerance);
    EXPECT_GT(err, 0.0) << "the weights are rounded";
  }
}

}  // namespace
}  // namespace compress
