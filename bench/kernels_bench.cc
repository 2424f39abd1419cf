// Single-thread micro-benchmarks of the fast and reference Conv / MatMul / Gemm / pooling kernels (and two
// integer ones) at the shapes of the sample models (models/cnn.onnx, models/vit.onnx) at batch 64. Each case
// runs one node through the executor with its weights as initializers, as in a real model.
//
// Then the GEMM inside two of those layers on its own, per path of the integer GEMM this CPU supports and for
// the float GEMM: integer_gemm/<layer>/<path>.
//
//   compress_kernels_bench [--benchmark_filter=fast|integer] [google benchmark flags]
//
// Names are <model>/<node>/<fast|reference>; GFLOP/s counts 2 operations per multiply-add (integer ones for
// the integer ops). vecmath/<function>/<isa> times the kernels' vector maths (src/exec/kernels/vecmath.h)
// directly on each instruction set this CPU supports, at vit's shapes, in elements per second.

#include <benchmark/benchmark.h>

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "common.h"
#include "compress/exec/executor.h"
#include "qgemm.h"
#include "vecmath.h"

namespace {

using compress::Attribute;
using compress::DType;
using compress::Executor;
using compress::ExecutorOptions;
using compress::Model;
using compress::Node;
using compress::Tensor;

constexpr int64_t kBatch = 64;

Tensor Random(const std::vector<int64_t>& dims, uint32_t seed) {
  Tensor t(DType::kFloat, dims);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  float* p = t.mutable_data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng);
  return t;
}

struct Case {
  std::string name;
  Node node;
  std::vector<Tensor> inputs;
  std::vector<bool> constant;  // per input: an initializer (weights) rather than a graph input
  double flops = 0;            // per run
};

Model OneNodeModel(const Case& c) {
  Model m;
  m.ir_version = 8;
  m.opset_imports = {{"", 17}};
  Node n = c.node;
  n.inputs.clear();
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    const std::string name = "in" + std::to_string(i);
    n.inputs.push_back(name);
    Tensor t = c.inputs[i];
    t.set_name(name);
    if (c.constant[i]) {
      m.graph.initializers.push_back(t);
    } else {
      compress::ValueInfo v;
      v.name = name;
      v.type.kind = compress::TypeInfo::Kind::kTensor;
      v.type.elem_type = t.dtype();
      m.graph.inputs.push_back(v);
    }
  }
  n.outputs = {"out"};
  compress::ValueInfo out;
  out.name = "out";
  m.graph.outputs.push_back(out);
  m.graph.nodes.push_back(n);
  return m;
}

void RunCase(benchmark::State& state, const Case& c, bool reference) {
  ExecutorOptions options;
  options.threads = 1;
  options.reference_kernels = reference;
  Executor exec(OneNodeModel(c), options);
  std::vector<Tensor> feed;
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    if (!c.constant[i]) feed.push_back(c.inputs[i]);
  }
  for (auto _ : state) {
    std::vector<Tensor> out = exec.Run(feed);
    benchmark::DoNotOptimize(out);
  }
  if (c.flops > 0) {
    state.counters["GFLOP/s"] =
        benchmark::Counter(c.flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  }
}

// 8-bit data (uint8 activations, int8 weights) for the integer ops.
Tensor RandomEightBit(const std::vector<int64_t>& dims, bool is_signed, uint32_t seed) {
  Tensor t(is_signed ? DType::kInt8 : DType::kUInt8, dims);
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> dist(is_signed ? -128 : 0, is_signed ? 127 : 255);
  auto* p = static_cast<uint8_t*>(t.mutable_raw());
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<uint8_t>(dist(rng));
  return t;
}

Case ConvCase(const std::string& name, std::vector<int64_t> x, std::vector<int64_t> w, int64_t group,
              int64_t stride, int64_t pad) {
  Case c;
  c.name = name;
  c.node.op_type = "Conv";
  c.node.attributes = {Attribute::Int("group", group), Attribute::Ints("strides", {stride, stride}),
                       Attribute::Ints("pads", {pad, pad, pad, pad})};
  c.inputs = {Random(x, 1), Random(w, 2), Random({w[0]}, 3)};
  c.constant = {false, true, true};
  const int64_t oh = (x[2] + 2 * pad - w[2]) / stride + 1, ow = (x[3] + 2 * pad - w[3]) / stride + 1;
  c.flops = 2.0 * static_cast<double>(x[0] * w[0] * oh * ow * w[1] * w[2] * w[3]);
  return c;
}

Case MatMulCase(const std::string& name, const std::vector<int64_t>& a, const std::vector<int64_t>& b,
                bool b_constant) {
  Case c;
  c.name = name;
  c.node.op_type = "MatMul";
  c.inputs = {Random(a, 4), Random(b, 5)};
  c.constant = {false, b_constant};
  double batch = 1;
  for (size_t i = 0; i + 2 < a.size(); ++i) batch *= static_cast<double>(a[i]);
  c.flops = 2.0 * batch * static_cast<double>(a[a.size() - 2] * a.back() * b.back());
  return c;
}

Case PoolCase(const std::string& name, const std::string& op, std::vector<int64_t> x, int64_t k, int64_t s) {
  Case c;
  c.name = name;
  c.node.op_type = op;
  if (op != "GlobalAveragePool") {
    c.node.attributes = {Attribute::Ints("kernel_shape", {k, k}), Attribute::Ints("strides", {s, s})};
  }
  c.inputs = {Random(x, 6)};
  c.constant = {false};
  return c;
}

std::vector<Case> Cases() {
  std::vector<Case> cases = {
      ConvCase("cnn/conv_stem_1x32_28", {kBatch, 1, 28, 28}, {32, 1, 3, 3}, 1, 1, 1),
      ConvCase("cnn/conv_depthwise_32_14", {kBatch, 32, 14, 14}, {32, 1, 3, 3}, 32, 1, 1),
      ConvCase("cnn/conv_pointwise_32x32_14", {kBatch, 32, 14, 14}, {32, 32, 1, 1}, 1, 1, 0),
      ConvCase("cnn/conv_32x64_14", {kBatch, 32, 14, 14}, {64, 32, 3, 3}, 1, 1, 1),
      ConvCase("cnn/conv_64x64_7", {kBatch, 64, 7, 7}, {64, 64, 3, 3}, 1, 1, 1),
      PoolCase("cnn/maxpool_32_28", "MaxPool", {kBatch, 32, 28, 28}, 2, 2),
      PoolCase("cnn/maxpool_64_14", "MaxPool", {kBatch, 64, 14, 14}, 2, 2),
      PoolCase("cnn/global_avgpool_64_7", "GlobalAveragePool", {kBatch, 64, 7, 7}, 0, 0),
      ConvCase("vit/conv_patch_7x7s7", {kBatch, 1, 28, 28}, {64, 1, 7, 7}, 1, 7, 0),
      MatMulCase("vit/matmul_qkv", {kBatch, 17, 64}, {64, 192}, true),
      MatMulCase("vit/matmul_attention_scores", {kBatch, 4, 17, 16}, {kBatch, 4, 16, 17}, false),
      MatMulCase("vit/matmul_attention_values", {kBatch, 4, 17, 17}, {kBatch, 4, 17, 16}, false),
      MatMulCase("vit/matmul_proj", {kBatch, 17, 64}, {64, 64}, true),
      MatMulCase("vit/matmul_mlp_up", {kBatch, 17, 64}, {64, 128}, true),
      MatMulCase("vit/matmul_mlp_down", {kBatch, 17, 128}, {128, 64}, true),
  };
  // The same layers quantised: ConvInteger as cnn/conv_32x64_14, MatMulInteger as vit/matmul_qkv.
  Case conv_integer;
  conv_integer.name = "cnn/conv_integer_32x64_14";
  conv_integer.node.op_type = "ConvInteger";
  conv_integer.node.attributes = {Attribute::Ints("pads", {1, 1, 1, 1})};
  conv_integer.inputs = {RandomEightBit({kBatch, 32, 14, 14}, false, 10),
                         RandomEightBit({64, 32, 3, 3}, true, 11), RandomEightBit({}, false, 12),
                         RandomEightBit({}, true, 13)};
  conv_integer.constant = {false, true, false, true};
  conv_integer.flops = 2.0 * kBatch * 64 * 14 * 14 * 32 * 9;
  cases.push_back(conv_integer);
  Case matmul_integer;
  matmul_integer.name = "vit/matmul_integer_qkv";
  matmul_integer.node.op_type = "MatMulInteger";
  matmul_integer.inputs = {RandomEightBit({kBatch, 17, 64}, false, 14), RandomEightBit({64, 192}, true, 15),
                           RandomEightBit({}, false, 16), RandomEightBit({}, true, 17)};
  matmul_integer.constant = {false, true, false, true};
  matmul_integer.flops = 2.0 * kBatch * 17 * 64 * 192;
  cases.push_back(matmul_integer);
  Case head;
  head.name = "vit/gemm_head";
  head.node.op_type = "Gemm";
  head.node.attributes = {Attribute::Int("transB", 1)};
  head.inputs = {Random({kBatch, 64}, 7), Random({10, 64}, 8), Random({10}, 9)};
  head.constant = {false, true, true};
  head.flops = 2.0 * kBatch * 64 * 10;
  cases.push_back(head);
  return cases;
}

// A layer's GEMM: weights on the left (convolution: m output channels x k, times a k x n im2col matrix, per
// image) or on the right (MatMul: m x k activations times k x n weights), `count` products per run.
struct GemmCase {
  std::string name;
  bool weights_left;
  int64_t m, k, n, count;
  double flops() const { return 2.0 * static_cast<double>(m * k * n * count); }
};

// cnn/conv_32x64_14 (im2col of 32 channels x 3x3 at 14x14, 64 images) and vit/matmul_qkv (64 x 17 rows).
const std::vector<GemmCase>& GemmCases() {
  static const std::vector<GemmCase> cases = {
      {"integer_gemm/cnn_conv_32x64_14", true, 64, 32 * 9, 14 * 14, kBatch},
      {"integer_gemm/vit_qkv", false, kBatch * 17, 64, 192, 1}};
  return cases;
}

std::vector<uint8_t> RandomBytes(int64_t n, int lo, int hi, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> dist(lo, hi);
  std::vector<uint8_t> v(static_cast<size_t>(n));
  for (uint8_t& b : v) b = static_cast<uint8_t>(dist(rng));
  return v;
}

// The integer GEMM on one path: int8 weights in [-64, 64] (so that avx2-maddubs runs its own kernel) with
// per-channel zero points, uint8 activations; the packing of the activations (weights on the left) and the
// zero-point corrections included, as in the layers.
void RunIntegerGemm(benchmark::State& state, const GemmCase& g, compress::kernels::qgemm::Isa isa) {
  namespace qgemm = compress::kernels::qgemm;
  const int64_t channels = g.weights_left ? g.m : g.n;
  const std::vector<uint8_t> w = RandomBytes(g.m * g.k * g.n / (g.weights_left ? g.n : g.m), -64, 64, 21);
  const std::vector<uint8_t> zw = RandomBytes(channels, -128, 127, 22);
  const std::vector<int32_t> w_zp(zw.begin(), zw.end());
  const qgemm::PackedWeights packed = g.weights_left
                                          ? qgemm::PackedWeights::Left(w.data(), true, g.m, g.k, w_zp)
                                          : qgemm::PackedWeights::Right(w.data(), true, g.k, g.n, w_zp);
  const std::vector<uint8_t> x = RandomBytes(g.weights_left ? g.k * g.n : g.m * g.k, 0, 255, 23);
  const int32_t x_zp = 117;
  std::vector<int32_t> c(static_cast<size_t>(g.m * g.n));
  for (auto _ : state) {
    for (int64_t i = 0; i < g.count; ++i) {
      if (g.weights_left) {
        qgemm::MultiplyLeft(packed, 0, g.m, g.n, x.data(), g.n, x_zp, c.data(), g.n, isa);
      } else {
        qgemm::MultiplyRight(g.m, x.data(), g.k, &x_zp, 0, packed, c.data(), g.n, isa);
      }
    }
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(g.flops() * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// The float GEMM at the same shape, as the fast Conv / MatMul kernels call it: packed weights on the left and
// the im2col matrix read in panels, or activations read in place and packed weights on the right.
void RunFloatGemm(benchmark::State& state, const GemmCase& g) {
  namespace gemm = compress::kernels::gemm;
  const Tensor w = Random({g.m * g.k * g.n / (g.weights_left ? g.n : g.m)}, 24);
  const int64_t ld = gemm::RoundUp(g.n, gemm::kNr);
  const Tensor x = Random({g.weights_left ? g.k * ld : g.m * g.k}, 25);
  gemm::AlignedFloats packed(g.weights_left ? gemm::PackedASize(g.m, g.k) : gemm::PackedBSize(g.k, g.n));
  if (g.weights_left) {
    gemm::PackA(w.data<float>(), g.k, 1, g.m, g.k, 1.0f, packed.data());
  } else {
    gemm::PackB(w.data<float>(), g.n, 1, g.k, g.n, packed.data());
  }
  std::vector<float> c(static_cast<size_t>(g.m * g.n));
  for (auto _ : state) {
    for (int64_t i = 0; i < g.count; ++i) {
      if (g.weights_left) {
        gemm::Multiply(g.m, g.n, g.k, gemm::AView{packed.data()}, gemm::BView{x.data<float>(), ld, gemm::kNr},
                       c.data(), g.n, gemm::Init::kZero);
      } else {
        gemm::Multiply(g.m, g.n, g.k, gemm::AView{x.data<float>(), g.k},
                       gemm::BView{packed.data(), gemm::kNr, g.k * gemm::kNr}, c.data(), g.n,
                       gemm::Init::kZero);
      }
    }
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(g.flops() * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

namespace vecmath = compress::kernels::vecmath;

struct VecCase {
  std::string name;
  int64_t elements;
  std::function<void(const float* x, float* y)> run;
};

std::vector<VecCase> VecCases() {
  constexpr int64_t kTokens = kBatch * 17;
  const int64_t mlp = kTokens * 128, attention = kBatch * 4 * 17 * 17;
  static const std::vector<float> bias(64, 0.5f), scale(64, 1.5f);
  return {
      {"erf_mlp", mlp, [=](const float* x, float* y) { vecmath::Erf(x, y, mlp); }},
      {"gelu_mlp", mlp, [=](const float* x, float* y) { vecmath::Gelu(x, y, mlp); }},
      {"exp_mlp", mlp, [=](const float* x, float* y) { vecmath::Exp(x, y, mlp); }},
      {"tanh_mlp", mlp, [=](const float* x, float* y) { vecmath::Tanh(x, y, mlp); }},
      {"sigmoid_mlp", mlp, [=](const float* x, float* y) { vecmath::Sigmoid(x, y, mlp); }},
      {"softmax_rows_17", attention,
       [=](const float* x, float* y) { vecmath::SoftmaxRows(x, y, attention / 17, 17, false); }},
      {"layer_norm_rows_64", kTokens * 64,
       [=](const float* x, float* y) {
         vecmath::LayerNormRows(x, scale.data(), bias.data(), y, kTokens, 64, 1e-5f, nullptr, nullptr);
       }},
      {"add_bias_64", kTokens * 64,
       [=](const float* x, float* y) {
         vecmath::BinaryRows(vecmath::BinaryOp::kAdd, x, 64, 1, bias.data(), 0, 1, y, kTokens, 64);
       }},
      {"mul_scalar_mlp", mlp,
       [=](const float* x, float* y) {
         vecmath::BinaryRows(vecmath::BinaryOp::kMul, x, 0, 1, scale.data(), 0, 0, y, 1, mlp);
       }},
  };
}

void RunVecCase(benchmark::State& state, const VecCase& c, vecmath::Isa isa) {
  const Tensor x = Random({c.elements}, 18);
  std::vector<float> y(static_cast<size_t>(c.elements));
  const vecmath::Isa before = vecmath::SetIsa(isa);
  for (auto _ : state) {
    c.run(x.data<float>(), y.data());
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  vecmath::SetIsa(before);
  state.SetItemsProcessed(state.iterations() * c.elements);
}

}  // namespace

int main(int argc, char** argv) {
  static const std::vector<Case> cases = Cases();
  for (const Case& c : cases) {
    for (const bool reference : {false, true}) {
      benchmark::RegisterBenchmark((c.name + (reference ? "/reference" : "/fast")).c_str(),
                                   [&c, reference](benchmark::State& state) { RunCase(state, c, reference); })
          ->Unit(benchmark::kMicrosecond);
    }
  }
  for (const GemmCase& g : GemmCases()) {
    benchmark::RegisterBenchmark((g.name + "/float32").c_str(), [&g](benchmark::State& state) {
      RunFloatGemm(state, g);
    })->Unit(benchmark::kMicrosecond);
    for (const compress::kernels::qgemm::Isa isa : compress::kernels::qgemm::SupportedIsas()) {
      benchmark::RegisterBenchmark((g.name + "/" + compress::kernels::qgemm::IsaName(isa)).c_str(),
                                   [&g, isa](benchmark::State& state) { RunIntegerGemm(state, g, isa); })
          ->Unit(benchmark::kMicrosecond);
    }
  }
  static const std::vector<VecCase> vec_cases = VecCases();
  for (const VecCase& c : vec_cases) {
    for (const vecmath::Isa isa : vecmath::SupportedIsas()) {
      benchmark::RegisterBenchmark(("vecmath/" + c.name + "/" + vecmath::IsaName(isa)).c_str(),
                                   [&c, isa](benchmark::State& state) { RunVecCase(state, c, isa); })
          ->Unit(benchmark::kMicrosecond);
    }
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
