// The executor as a whole: input checks, unsupported operators, constants, float16 handling, and
// results that do not depend on the number of threads (on the real sample models).

#include "compress/exec/executor.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>

#include "compress/exec/thread_pool.h"
#include "compress/io/dataset.h"
#include "compress/io/onnx_io.h"
#include "compress/util/error.h"
#include "compress/util/half.h"
#include "support/test_support.h"

namespace compress {
namespace {

using testing::ErrorOf;

TEST(Executor, RunsTinyModelWithAnyBatch) {
  Executor exec(testing::TinyModel());
  ASSERT_EQ(exec.inputs().size(), 1u);
  for (int64_t batch : {1, 5}) {
    std::vector<float> x(static_cast<size_t>(batch * 4));
    for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i) - 3.0f;
    const auto out = exec.Run({Tensor::FromVector<float>({batch, 4}, x)});
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].dims(), (std::vector<int64_t>{batch, 3}));
    EXPECT_EQ(out[0].name(), "y");
    // Row 0 of x is [-3,-2,-1,0] -> relu -> zeros -> y = b.
    EXPECT_FLOAT_EQ(out[0].data<float>()[0], 0.0f);
    EXPECT_FLOAT_EQ(out[0].data<float>()[2], 0.5f);
  }
}

TEST(Executor, RejectsInputsThatDoNotFitTheDeclaration) {
  Executor exec(testing::TinyModel());
  std::string msg = ErrorOf([&] { exec.Run({Tensor(DType::kFloat, {2, 5})}); });
  EXPECT_NE(msg.find("input 'x' expects float32[N,4], got float32[2,5]"), std::string::npos) << msg;
  msg = ErrorOf([&] { exec.Run({Tensor(DType::kInt64, {2, 4})}); });
  EXPECT_NE(msg.find("got int64[2,4]"), std::string::npos) << msg;
  msg = ErrorOf([&] { exec.Run({}); });
  EXPECT_NE(msg.find("1 inputs, 0 were given"), std::string::npos) << msg;
}

TEST(Executor, NamesUnsupportedOperator) {
  Model m = testing::TinyModel();
  m.graph.nodes[0].op_type = "NoSuchOp";
  m.graph.nodes[0].name = "weird";
  EXPECT_EQ(Executor::UnsupportedOps(m), std::vector<std::string>{"NoSuchOp (opset 17)"});
  const std::string msg = ErrorOf([&] { Executor exec(m); });
  EXPECT_NE(msg.find("'weird'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("NoSuchOp of opset 17 is not supported"), std::string::npos) << msg;
}

TEST(Executor, ConstantNodesAndObserver) {
  Model m = testing::TinyModel();
  // Move W into a Constant node, as other exporters write weights.
  Node c{"w_const", "Constant", "", {}, {"W"}, {}, ""};
  c.attributes.push_back(Attribute::FromTensor("value", *m.graph.FindInitializer("W")));
  m.graph.initializers.erase(m.graph.initializers.begin());
  m.graph.nodes.insert(m.graph.nodes.begin(), c);
  Executor with_constant(m), original(testing::TinyModel());
  const Tensor x = Tensor::FromVector<float>({1, 4}, {1, 2, 3, 4});
  std::vector<std::string> seen;
  const ValueObserver observer = [&](const std::string& name, const Tensor&) { seen.push_back(name); };
  const auto a = with_constant.Run({x}, &observer);
  const auto b = original.Run({x});
  EXPECT_TRUE(a[0].SameContent(b[0]));
  EXPECT_EQ(seen, (std::vector<std::string>{"h", "hw", "y"}));
}

// A unary op may compute in place when it is its input's last reader; a value the observer was handed
// must keep its contents all the same (fine-tuning keeps every value for the backward pass).
TEST(Executor, ObservedValuesAreNotOverwrittenByInPlaceKernels) {
  Model m;
  m.ir_version = 8;
  m.opset_imports = {{"", 17}};
  m.graph.inputs.push_back({"x", TypeInfo::Tensor(DType::kFloat, {Dim::Fixed(64)}), ""});
  m.graph.outputs.push_back({"y", TypeInfo::Tensor(DType::kFloat, {Dim::Fixed(64)}), ""});
  m.graph.nodes.push_back(Node{"", "Neg", "", {"x"}, {"h"}, {}, ""});
  m.graph.nodes.push_back(Node{"", "Sigmoid", "", {"h"}, {"y"}, {}, ""});
  Executor exec(m);
  std::vector<float> xs(64);
  for (size_t i = 0; i < xs.size(); ++i) xs[i] = static_cast<float>(i) * 0.1f - 3.0f;
  Tensor h;
  const ValueObserver keep = [&](const std::string& name, const Tensor& t) {
    if (name == "h") h = t;
  };
  exec.Run({Tensor::FromVector<float>({64}, xs)}, &keep);
  ASSERT_EQ(h.numel(), 64);
  for (size_t i = 0; i < xs.size(); ++i) EXPECT_EQ(h.data<float>()[i], -xs[i]) << i;
}

// Add, Sub, Mul and Div may compute into an input they read last when it has the output's shape, either
// operand; a broadcast operand or one read twice by the node is left alone, and an observed value keeps its
// contents.
TEST(Executor, BinaryKernelsComputeInPlaceIntoALastReadInput) {
  Model m;
  m.ir_version = 8;
  m.opset_imports = {{"", 17}};
  m.graph.inputs.push_back(
      {"x", TypeInfo::Tensor(DType::kFloat, {Dim::Fixed(2), Dim::Fixed(3), Dim::Fixed(4)}), ""});
  m.graph.inputs.push_back({"r", TypeInfo::Tensor(DType::kFloat, {Dim::Fixed(4)}), ""});
  for (const char* name : {"y", "z", "w", "v"}) m.graph.outputs.push_back({name, TypeInfo{}, ""});
  m.graph.nodes.push_back(Node{"", "Neg", "", {"x"}, {"a"}, {}, ""});
  m.graph.nodes.push_back(Node{"", "Neg", "", {"x"}, {"b"}, {}, ""});
  m.graph.nodes.push_back(Node{"", "Neg", "", {"x"}, {"c"}, {}, ""});
  m.graph.nodes.push_back(Node{"", "Neg", "", {"r"}, {"s"}, {}, ""});
  m.graph.nodes.push_back(Node{"", "Add", "", {"a", "r"}, {"y"}, {}, ""});  // into a
  m.graph.nodes.push_back(Node{"", "Sub", "", {"r", "b"}, {"z"}, {}, ""});  // into b
  m.graph.nodes.push_back(Node{"", "Mul", "", {"c", "c"}, {"w"}, {}, ""});  // c read twice
  m.graph.nodes.push_back(Node{"", "Div", "", {"s", "x"}, {"v"}, {}, ""});  // s is broadcast
  Executor exec(m);
  std::vector<float> xs(24);
  for (size_t i = 0; i < xs.size(); ++i) xs[i] = static_cast<float>(i) * 0.25f + 1.0f;
  const std::vector<float> rs = {1.5f, -2.0f, 0.5f, 3.0f};
  Tensor a;
  const ValueObserver keep = [&](const std::string& name, const Tensor& t) {
    if (name == "a") a = t;
  };
  const auto out =
      exec.Run({Tensor::FromVector<float>({2, 3, 4}, xs), Tensor::FromVector<float>({4}, rs)}, &keep);
  ASSERT_EQ(out.size(), 4u);
  for (size_t i = 0; i < xs.size(); ++i) {
    const float r = rs[i % 4];
    EXPECT_EQ(out[0].data<float>()[i], -xs[i] + r) << i;
    EXPECT_EQ(out[1].data<float>()[i], r - -xs[i]) << i;
    EXPECT_EQ(out[2].data<float>()[i], xs[i] * xs[i]) << i;
    EXPECT_EQ(out[3].data<float>()[i], -r / xs[i]) << i;
    EXPECT_EQ(a.data<float>()[i], -xs[i]) << i;
  }
  EXPECT_EQ(out[0].dims(), (std::vector<int64_t>{2, 3, 4}));
  EXPECT_EQ(out[3].dims(), (std::vector<int64_t>{2, 3, 4}));
}

TEST(Executor, Float16ModelComputesInFloat32AndRoundsBack) {
  Model m;
  m.ir_version = 8;
  m.opset_imports = {{"", 17}};
  m.graph.inputs.push_back({"x", TypeInfo::Tensor(DType::kFloat16, {Dim::Fixed(3)}), ""});
  m.graph.outputs.push_back({"y", TypeInfo::Tensor(DType::kFloat16, {Dim::Fixed(3)}), ""});
  m.graph.nodes.push_back(Node{"", "Sigmoid", "", {"x"}, {"y"}, {}, ""});
  Executor exec(m);
  std::vector<uint16_t> x = {FloatToHalf(0.0f), FloatToHalf(1.0f), FloatToHalf(-2.5f)};
  Tensor in(DType::kFloat16, {3});
  std::memcpy(in.mutable_raw(), x.data(), 6);
  const auto out = exec.Run({in});
  ASSERT_EQ(out[0].dtype(), DType::kFloat16);
  const uint16_t* y = static_cast<const uint16_t*>(out[0].raw());
  EXPECT_EQ(y[0], FloatToHalf(0.5f));
  EXPECT_EQ(y[1], FloatToHalf(1.0f / (1.0f + std::exp(-1.0f))));
  EXPECT_EQ(y[2], FloatToHalf(1.0f / (1.0f + std::exp(2.5f))));
}

TEST(Half, ConversionsRoundToNearestEven) {
  EXPECT_EQ(FloatToHalf(1.0f), 0x3c00);
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7c00);         // rounds up to infinity
  EXPECT_EQ(FloatToHalf(65519.99f), 0x7bff);
  EXPECT_EQ(FloatToHalf(1.0f + 1.0f / 2048), 0x3c00);  // halfway: ties to even (down)
  EXPECT_EQ(FloatToHalf(1.0f + 3.0f / 2048), 0x3c02);  // halfway: ties to even (up)
  EXPECT_EQ(FloatToHalf(5.960464477539063e-08f), 0x0001);  // smallest subnormal
  EXPECT_EQ(FloatToHalf(2.9802322387695312e-08f), 0x0000);  // half of it: ties to even -> 0
  EXPECT_EQ(FloatToHalf(-0.0f), 0x8000);
  EXPECT_EQ(FloatToHalf(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(std::numeric_limits<float>::quiet_NaN()))));
  // Every half value survives half -> float -> half.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = HalfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(FloatToHalf(f), h) << h;
  }
  EXPECT_EQ(FloatToBFloat16(1.0f), 0x3f80);
  EXPECT_FLOAT_EQ(BFloat16ToFloat(0x3f80), 1.0f);
}

TEST(ThreadPool, CoversEveryIndexOnceAndPropagatesErrors) {
  ThreadPool pool(3);
  std::vector<int> hits(1000, 0);
  pool.ParallelFor(1000, 7, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) ++hits[static_cast<size_t>(i)];
  });
  for (int h : hits) ASSERT_EQ(h, 1);
  EXPECT_THROW(pool.ParallelFor(100, 1, [](int64_t b, int64_t) {
                 if (b == 50) throw std::runtime_error("boom");
               }),
               std::runtime_error);
  // Still usable afterwards, and nested calls run serially instead of deadlocking.
  int64_t total = 0;
  std::mutex mu;
  pool.ParallelFor(10, 1, [&](int64_t, int64_t) {
    pool.ParallelFor(10, 1, [&](int64_t b, int64_t e) {
      std::lock_guard<std::mutex> lock(mu);
      total += e - b;
    });
  });
  EXPECT_EQ(total, 100);
}

// The sample models give bitwise-identical outputs whatever the thread count.
TEST(Executor, SampleModelOutputsDoNotDependOnThreadCount) {
  for (const char* name : {"mlp", "cnn", "vit"}) {
    SCOPED_TRACE(name);
    const Model model = LoadModel(testing::SourcePath(std::string("models/") + name + ".onnx"));
    const Dataset calib = Dataset::Open(testing::SourcePath("models/calib"), ModelInputSpecs(model));
    const std::vector<Tensor> inputs = calib.ReadSamples(0, 64);
    std::vector<Tensor> reference;
    for (int threads : {1, 2, 3}) {
      ExecutorOptions opt;
      opt.threads = threads;
      Executor exec(model, opt);
      const auto out = exec.Run(inputs);
      if (reference.empty()) {
        reference = out;
        continue;
      }
      ASSERT_EQ(out[0].nbytes(), reference[0].nbytes());
      EXPECT_EQ(std::memcmp(out[0].raw(), reference[0].raw(), out[0].nbytes()), 0) << threads << " threads";
    }
  }
}

}  // namespace
}  // namespace compress
