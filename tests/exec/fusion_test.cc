// Element-wise chains fused behind Conv / MatMul / Gemm (src/exec/fusion.h): the fused run (no observer)
// must give the same bits as the unfused one (an observer sees every value, so nothing is fused), on small
// graphs that exercise each operand form and on the real sample models; and chains that cannot be fused
// (a value read outside the chain, an operand computed after the head, a broadcast the chain does not
// cover) must run unfused and still be right.

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "compress/exec/executor.h"
#include "compress/io/dataset.h"
#include "compress/io/onnx_io.h"
#include "compress/util/half.h"
#include "support/test_support.h"

namespace compress {
namespace {

Tensor Random(const std::vector<int64_t>& dims, uint32_t seed, std::string name = {}) {
  Tensor t(DType::kFloat, dims, std::move(name));
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  float* p = t.mutable_data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng);
  return t;
}

Node MakeNode(const std::string& op, std::vector<std::string> in, std::vector<std::string> out) {
  Node n;
  n.op_type = op;
  n.name = op + "_" + out[0];
  n.inputs = std::move(in);
  n.outputs = std::move(out);
  return n;
}

ValueInfo FloatInput(const std::string& name, int rank) {
  ValueInfo v;
  v.name = name;
  v.type.kind = TypeInfo::Kind::kTensor;
  v.type.elem_type = DType::kFloat;
  v.type.has_shape = true;
  v.type.shape.resize(static_cast<size_t>(rank));
  return v;
}

ValueInfo Output(const std::string& name) {
  ValueInfo v;
  v.name = name;
  return v;
}

std::vector<Tensor> RunBothWays(const Model& model, const std::vector<Tensor>& inputs, size_t fused_nodes,
                                int threads = 1) {
  ExecutorOptions opt;
  opt.threads = threads;
  Executor exec(model, opt);
  EXPECT_EQ(exec.fused_nodes(), fused_nodes);
  const std::vector<Tensor> fused = exec.Run(inputs);
  size_t observed = 0;
  const ValueObserver count = [&](const std::string&, const Tensor&) { ++observed; };
  const std::vector<Tensor> unfused = exec.Run(inputs, &count);
  EXPECT_GT(observed, 0u);
  EXPECT_EQ(fused.size(), unfused.size());
  for (size_t i = 0; i < fused.size() && i < unfused.size(); ++i) {
    EXPECT_EQ(fused[i].dims(), unfused[i].dims());
    EXPECT_EQ(fused[i].nbytes(), unfused[i].nbytes());
    if (fused[i].nbytes() == unfused[i].nbytes()) {
      EXPECT_EQ(std::memcmp(fused[i].raw(), unfused[i].raw(), fused[i].nbytes()), 0) << "output " << i;
    }
  }
  // And the reference kernels, which never fuse, within float rounding.
  ExecutorOptions ref_opt = opt;
  ref_opt.reference_kernels = true;
  Executor ref(model, ref_opt);
  const std::vector<Tensor> expected = ref.Run(inputs);
  for (size_t i = 0; i < fused.size(); ++i) {
    const float* a = fused[i].data<float>();
    const float* b = expected[i].data<float>();
    int64_t off = 0;
    for (int64_t j = 0; j < fused[i].numel(); ++j) {
      // Float32 GEMM against double accumulation, over k <= 64 products of unit-scale values.
      if (std::fabs(a[j] - b[j]) > 1e-4f * (1.0f + std::fabs(b[j]))) ++off;
    }
    EXPECT_EQ(off, 0) << "output " << i << ": elements away from the reference kernels";
  }
  return fused;
}

// x [N,4,9,11] -> Conv 3x3 pad 1 (4->6) -> Add(residual r) -> Relu -> y, with r from another Conv before
// it; and the same with the Add operands swapped.
Model ConvResidualModel(bool swap) {
  Model m;
  m.ir_version = 8;
  m.opset_imports = {{"", 17}};
  Graph& g = m.graph;
  g.inputs = {FloatInput("x", 4)};
  g.initializers = {Random({6, 4, 3, 3}, 1, "w1"), Random({6}, 2, "b1"), Random({6, 4, 1, 1}, 3, "w0")};
  Node c0 = MakeNode("Conv", {"x", "w0"}, {"r"});
  Node c1 = MakeNode("Conv", {"x", "w1", "b1"}, {"t0"});
  Attribute pads;
  pads.name = "pads";
  pads.type = AttrType::kInts;
  pads.ints = {1, 1, 1, 1};
  c1.attributes.push_back(pads);
  g.nodes = {c0, c1, MakeNode("Add", swap ? std::vector<std::string>{"r", "t0"} : std::vector<std::string>{"t0", "r"}, {"t1"}),
             MakeNode("Relu", {"t1"}, {"y"})};
  g.outputs = {Output("y")};
  return m;
}

TEST(Fusion, ConvAddReluIsBitIdenticalToUnfused) {
  for (bool swap : {false, true}) {
    for (int64_t batch : {1, 3}) {
      RunBothWays(ConvResidualModel(swap), {Random({batch, 4, 9, 11}, 7)}, 2);
    }
  }
}

// x [B,5,k] -> MatMul W [k,n] -> Add bias [n] -> GELU as exported (Div sqrt2, Erf, Add 1, Mul x, Mul 0.5)
// -> Sub scalar -> y.
Model MatMulGeluModel(int64_t k, int64_t n) {
  Model m;
  m.ir_version = 8;
  m.opset_imports = {{"", 17}};
  Graph& g = m.graph;
  g.inputs = {FloatInput("x", 3)};
  g.initializers = {Random({k, n}, 11, "w"), Random({n}, 12, "bias"),
                    Tensor::FromVector<float>({}, {1.4142135f}, "sqrt2"),
                    Tensor::FromVector<float>({}, {1.0f}, "one"), Tensor::FromVector<float>({}, {0.5f}, "half"),
                    Tensor::FromVector<float>({1}, {0.25f}, "quarter")};
  g.nodes = {MakeNode("MatMul", {"x", "w"}, {"m"}),       MakeNode("Add", {"bias", "m"}, {"a"}),
             MakeNode("Div", {"a", "sqrt2"}, {"d"}),      MakeNode("Erf", {"d"}, {"e"}),
             MakeNode("Add", {"e", "one"}, {"e1"}),       MakeNode("Mul", {"a", "e1"}, {"p"}),
             MakeNode("Mul", {"p", "half"}, {"gelu"}),    MakeNode("Sub", {"quarter", "gelu"}, {"y"})};
  g.outputs = {Output("y")};
  return m;
}

TEST(Fusion, MatMulBiasGeluIsBitIdenticalToUnfused) {
  // Odd sizes: row blocks and column panels with tails; n = 300 spans several 256-element blocks per row.
  for (const auto& [k, n] : std::vector<std::pair<int64_t, int64_t>>{{7, 3}, {64, 128}, {33, 300}}) {
    for (int threads : {1, 2}) {
      RunBothWays(MatMulGeluModel(k, n), {Random({23, 5, k}, 5)}, 7, threads);
    }
  }
}

TEST(Fusion, ValueReadOutsideTheChainStopsIt) {
  // "a" (MatMul + bias) is also a graph output: the chain ends there (1 node fused) and the GELU ops run
  // one by one reading it.
  Model m = MatMulGeluModel(16, 24);
  m.graph.outputs.push_back(Output("a"));
  const auto out = RunBothWays(m, {Random({2, 5, 16}, 9)}, 1);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[1].dims(), (std::vector<int64_t>{2, 5, 24}));
}

TEST(Fusion, OperandComputedAfterTheHeadIsNotFused) {
  // r comes from a Conv after the 3x3 Conv in the node order: the Add cannot run at the 3x3 Conv, so the
  // chain (Add, Relu) goes behind the 1x1 Conv that computes r instead.
  Model m = ConvResidualModel(false);
  std::swap(m.graph.nodes[0], m.graph.nodes[1]);
  RunBothWays(m, {Random({2, 4, 9, 11}, 3)}, 2);
}

TEST(Fusion, BroadcastTheChainDoesNotCoverRunsUnfused) {
  // A per-channel [6,1,1] addend broadcasts along a middle axis: the kernel declines the chain at run
  // time and the nodes run one by one.
  Model m = ConvResidualModel(false);
  m.graph.nodes[0] = MakeNode("Identity", {"cbias"}, {"r"});
  m.graph.initializers.push_back(Random({6, 1, 1}, 4, "cbias"));
  RunBothWays(m, {Random({2, 4, 9, 11}, 3)}, 2);
}

Tensor ToHalf(const Tensor& t) {
  Tensor h(DType::kFloat16, t.dims(), t.name());
  FloatToHalfArray(t.data<float>(), static_cast<uint16_t*>(h.mutable_raw()), t.numel());
  return h;
}

TEST(Fusion, Float16ChainRoundsLikeTheUnfusedNodes) {
  // Every node computes in float32 and stores float16: the fused chain must round each value the same way.
  Model m = ConvResidualModel(false);
  for (Tensor& t : m.graph.initializers) t = ToHalf(t);
  m.graph.inputs[0].type.elem_type = DType::kFloat16;
  Executor exec(m);
  EXPECT_EQ(exec.fused_nodes(), 2u);
  const std::vector<Tensor> in = {ToHalf(Random({3, 4, 9, 11}, 21))};
  const auto fused = exec.Run(in);
  const ValueObserver none = [](const std::string&, const Tensor&) {};
  const auto unfused = exec.Run(in, &none);
  ASSERT_EQ(fused[0].dtype(), DType::kFloat16);
  ASSERT_EQ(fused[0].nbytes(), unfused[0].nbytes());
  EXPECT_EQ(std::memcmp(fused[0].raw(), unfused[0].raw(), fused[0].nbytes()), 0);
}

TEST(Fusion, SampleModelsAreBitIdenticalFusedAndUnfused) {
  for (const char* name : {"mlp", "cnn", "vit", "other/hardswish_cnn_op11", "other/attention_op9",
                           "other/autoencoder_op10"}) {
    SCOPED_TRACE(name);
    const Model model = LoadModel(testing::SourcePath(std::string("models/") + name + ".onnx"));
    const Dataset calib = Dataset::Open(testing::SourcePath("models/calib"), ModelInputSpecs(model));
    const std::vector<Tensor> inputs = calib.ReadSamples(0, 16);
    Executor exec(model);
    if (std::string(name) != "other/autoencoder_op10") {
      EXPECT_GT(exec.fused_nodes(), 0u);
    }
    const auto fused = exec.Run(inputs);
    const ValueObserver none = [](const std::string&, const Tensor&) {};
    const auto unfused = exec.Run(inputs, &none);
    for (size_t i = 0; i < fused.size(); ++i) {
      ASSERT_EQ(fused[i].nbytes(), unfused[i].nbytes());
      EXPECT_EQ(std::memcmp(fused[i].raw(), unfused[i].raw(), fused[i].nbytes()), 0) << "output " << i;
    }
  }
}

}  // namespace
}  // namespace compress
