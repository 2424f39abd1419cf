// QDQ groups (DequantizeLinear -> Conv / Gemm / MatMul -> [Relu] -> QuantizeLinear) run in integers by the
// executor: on hand-built groups of every supported form, the integer result must equal the float-simulated
// graph (what an observed run computes) within one quantisation step; on the real INT8 sample models it
// must agree with ONNX Runtime on the top-1 class.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "compress/exec/executor.h"
#include "compress/io/dataset.h"
#include "compress/io/onnx_io.h"
#include "support/test_support.h"

namespace compress {
namespace {

// Share of outputs allowed to differ by one step between the integer and the float-simulated graphs: both
// round the same value, the first from exact int32 sums and a float multiplier, the second from float32 sums,
// so only values within float rounding of a .5 boundary may land on different sides.
constexpr double kMaxOneStepShare = 0.05;
// Top-1 agreement with ONNX Runtime on the INT8 sample models (the bar the executor is held to).
constexpr double kMinTop1Agreement = 0.995;

Node MakeNode(const std::string& op, std::vector<std::string> in, std::vector<std::string> out,
              std::vector<Attribute> attrs = {}) {
  Node n;
  n.op_type = op;
  n.name = op + "_" + out[0];
  n.inputs = std::move(in);
  n.outputs = std::move(out);
  n.attributes = std::move(attrs);
  return n;
}

template <typename T>
Tensor Scalar(const std::string& name, DType type, T v) {
  Tensor t(type, {}, name);
  std::memcpy(t.mutable_raw(), &v, sizeof v);
  return t;
}

struct GroupCase {
  std::string op;  // Conv3x3, Conv1x1, Gemm, MatMul
  bool relu = false;
  bool signed_x = false;
  bool uint8_weights = false;
};

std::string Describe(const GroupCase& c) {
  return c.op + (c.relu ? " + Relu" : "") + (c.signed_x ? ", int8 x" : ", uint8 x") +
         (c.uint8_weights ? ", uint8 weights" : ", int8 weights");
}

// xq -> DQ -> op(DQ(wq), bias) -> [Relu] -> Q(y_scale) -> yq.
Model GroupModel(const GroupCase& c, float y_scale, std::mt19937& rng) {
  Model m;
  m.ir_version = 8;
  m.opset_imports = {{"", 17}};
  Graph& g = m.graph;
  const DType xt = c.signed_x ? DType::kInt8 : DType::kUInt8;
  const DType wt = c.uint8_weights ? DType::kUInt8 : DType::kInt8;
  const bool conv = c.op.rfind("Conv", 0) == 0;
  const int64_t cin = 19, cout = 21, k = c.op == "Conv3x3" ? 3 : 1;
  std::vector<int64_t> w_dims = conv ? std::vector<int64_t>{cout, cin, k, k}
                                     : c.op == "Gemm" ? std::vector<int64_t>{cout, cin} : std::vector<int64_t>{cin, cout};
  ValueInfo x;
  x.name = "xq";
  x.type.kind = TypeInfo::Kind::kTensor;
  x.type.elem_type = xt;
  g.inputs = {x};
  std::uniform_int_distribution<int> byte(0, 255);
  Tensor wq(wt, w_dims, "wq");
  for (int64_t i = 0; i < wq.numel(); ++i) static_cast<uint8_t*>(wq.mutable_raw())[i] = static_cast<uint8_t>(byte(rng));
  const int64_t axis = c.op == "MatMul" ? 1 : 0;
  std::vector<float> sw(static_cast<size_t>(cout));
  Tensor wz(wt, {cout}, "wz");
  std::uniform_real_distribution<float> scale(0.002f, 0.01f);
  for (int64_t o = 0; o < cout; ++o) {
    sw[static_cast<size_t>(o)] = scale(rng);
    static_cast<uint8_t*>(wz.mutable_raw())[o] = static_cast<uint8_t>(c.uint8_weights ? 100 + o : o % 5);
  }
  std::vector<float> bias(static_cast<size_t>(cout));
  std::normal_distribution<float> normal(0.0f, 0.3f);
  for (float& b : bias) b = normal(rng);
  const uint8_t x_zero = c.signed_x ? static_cast<uint8_t>(static_cast<int8_t>(-3)) : 117;
  g.initializers = {Scalar<float>("sx", DType::kFloat, 0.03f),
                    Scalar<uint8_t>("zx", xt, x_zero),
                    wq,
                    Tensor::FromVector<float>({cout}, sw, "sw"),
                    wz,
                    Tensor::FromVector<float>({cout}, bias, "b"),
                    Scalar<float>("sy", DType::kFloat, y_scale),
                    Scalar<uint8_t>("zy", DType::kUInt8, 128)};
  g.nodes.push_back(MakeNode("DequantizeLinear", {"xq", "sx", "zx"}, {"x"}));
  g.nodes.push_back(MakeNode("DequantizeLinear", {"wq", "sw", "wz"}, {"w"}, {Attribute::Int("axis", axis)}));
  if (conv) {
    g.nodes.push_back(MakeNode("Conv", {"x", "w", "b"}, {"y"},
                               {Attribute::Ints("pads", k == 3 ? std::vector<int64_t>{1, 1, 1, 1}
                                                               : std::vector<int64_t>{0, 0, 0, 0})}));
  } else if (c.op == "Gemm") {
    g.nodes.push_back(MakeNode("Gemm", {"x", "w", "b"}, {"y"}, {Attribute::Int("transB", 1)}));
  } else {
    g.nodes.push_back(MakeNode("MatMul", {"x", "w"}, {"y"}));
  }
  std::string last = "y";
  if (c.relu) {
    g.nodes.push_back(MakeNode("Relu", {"y"}, {"r"}));
    last = "r";
  }
  g.nodes.push_back(MakeNode("QuantizeLinear", {last, "sy", "zy"}, {"yq"}));
  ValueInfo out;
  out.name = "yq";
  g.outputs = {out};
  return m;
}

Tensor RandomBytes(DType type, const std::vector<int64_t>& dims, std::mt19937& rng) {
  Tensor t(type, dims);
  std::uniform_int_distribution<int> byte(0, 255);
  for (int64_t i = 0; i < t.numel(); ++i) static_cast<uint8_t*>(t.mutable_raw())[i] = static_cast<uint8_t>(byte(rng));
  return t;
}

int Value(const Tensor& t, int64_t i) {
  const uint8_t b = static_cast<const uint8_t*>(t.raw())[i];
  return t.dtype() == DType::kInt8 ? static_cast<int8_t>(b) : b;
}

TEST(QdqGroups, IntegerResultIsTheSimulatedOneWithinAStep) {
  std::mt19937 rng(17);
  for (const std::string op : {"Conv3x3", "Conv1x1", "Gemm", "MatMul"}) {
    for (const bool relu : {false, true}) {
      for (const bool signed_x : {false, true}) {
        for (const bool uint8_weights : {false, true}) {
          const GroupCase c{op, relu, signed_x, uint8_weights};
          SCOPED_TRACE(Describe(c));
          const bool conv = op.rfind("Conv", 0) == 0;
          const std::vector<int64_t> x_dims =
              conv ? std::vector<int64_t>{3, 19, 9, 7} : op == "Gemm" ? std::vector<int64_t>{45, 19}
                                                                        : std::vector<int64_t>{2, 23, 19};
          const Tensor xq = RandomBytes(signed_x ? DType::kInt8 : DType::kUInt8, x_dims, rng);
          // An output scale that spreads the pre-quantisation values over most of the 8-bit range.
          std::mt19937 model_rng(static_cast<uint32_t>(rng()));
          std::mt19937 probe_rng = model_rng;
          float max_abs = 0;
          {
            Executor probe(GroupModel(c, 1.0f, probe_rng));
            const ValueObserver see = [&](const std::string& name, const Tensor& t) {
              if (name != "y") return;
              for (int64_t i = 0; i < t.numel(); ++i) max_abs = std::max(max_abs, std::fabs(t.data<float>()[i]));
            };
            probe.Run({xq}, &see);
          }
          ASSERT_GT(max_abs, 0.0f);
          Executor exec(GroupModel(c, max_abs / 100.0f, model_rng));
          ASSERT_EQ(exec.quantized_groups(), 1u);
          const Tensor integer = exec.Run({xq})[0];
          const ValueObserver none = [](const std::string&, const Tensor&) {};
          const Tensor simulated = exec.Run({xq}, &none)[0];
          ASSERT_EQ(integer.dims(), simulated.dims());
          int64_t off_by_one = 0, distinct = 0;
          for (int64_t i = 0; i < integer.numel(); ++i) {
            const int d = std::abs(Value(integer, i) - Value(simulated, i));
            ASSERT_LE(d, 1) << "element " << i;
            off_by_one += d;
            if (i == 0 || Value(integer, i) != Value(integer, i - 1)) ++distinct;
          }
          EXPECT_LE(static_cast<double>(off_by_one), kMaxOneStepShare * static_cast<double>(integer.numel()));
          EXPECT_GT(distinct, integer.numel() / 4) << "outputs should spread over the range";
          if (relu) {
            for (int64_t i = 0; i < integer.numel(); ++i) ASSERT_GE(Value(integer, i), 128);
          }
        }
      }
    }
  }
}

TEST(QdqGroups, OffWhenAskedAndUnderAnObserver) {
  std::mt19937 rng(3);
  ExecutorOptions opt;
  opt.integer_kernels = false;
  EXPECT_EQ(Executor(GroupModel({"Gemm", true, false, false}, 0.1f, rng), opt).quantized_groups(), 0u);
}

int64_t ArgMax(const float* p, int64_t n) { return std::max_element(p, p + n) - p; }

TEST(QdqGroups, Int8SampleModelsAgreeWithOnnxRuntime) {
  testing::TempDir dir;
  for (const char* name : {"cnn", "mlp"}) {
    SCOPED_TRACE(name);
    const std::string out = dir / (std::string(name) + ".int8.onnx");
    const auto r = testing::RunCompress({testing::SourcePath(std::string("models/") + name + ".onnx"), "--int8",
                                         "--calib", testing::SourcePath("models/calib"), "-o", out, "-q"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const Model model = LoadModel(out);
    Executor exec(model);
    // The CNN: the two 3x3 convolutions deep enough to quantise (--min-conv-depth 64); the MLP: the two
    // hidden layers. The classifier layers end in float logits, with no QuantizeLinear.
    EXPECT_EQ(exec.quantized_groups(), 2u);
    const Dataset data = Dataset::Open(testing::SourcePath("models/calib"), ModelInputSpecs(model));
    const std::vector<Tensor> inputs = data.ReadSamples(0, 256);
    const Tensor ours = exec.Run(inputs)[0];
    const std::vector<Tensor> ort = testing::RunModelInOrt(model, inputs);
    ASSERT_EQ(ort.size(), 1u);
    ASSERT_EQ(ours.dims(), ort[0].dims());
    const int64_t rows = ours.dims()[0], classes = ours.dims()[1];
    int64_t agree = 0;
    for (int64_t i = 0; i < rows; ++i) {
      agree += ArgMax(ours.data<float>() + i * classes, classes) == ArgMax(ort[0].data<float>() + i * classes, classes);
    }
    EXPECT_GE(static_cast<double>(agree) / static_cast<double>(rows), kMinTop1Agreement)
        << agree << " of " << rows << " agree";
  }
}

}  // namespace
}  // namespace compress
