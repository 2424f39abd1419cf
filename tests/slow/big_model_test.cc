// A model past protobuf's 2 GiB limit, made at test time (never committed): nine float32 MatMul weights of
// 8192 x 8192 (2.25 GiB) in an external data file. `compress --fp16 --external-data` must turn it into a
// float16 model with external data while its peak resident memory stays below 1.5x the weight bytes, leave
// the input untouched, store every weight as the float16 rounding of the original, and give the outputs
// of the original in ONNX Runtime. Label "slow": `tools/test.sh --slow` or `ctest -L slow`.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <vector>

#include "compress/io/npy.h"
#include "compress/io/onnx_io.h"
#include "compress/util/half.h"
#include "onnx/onnx_pb.h"
#include "support/test_support.h"

namespace compress {
namespace {

using testing::TempDir;

constexpr int64_t kDim = 8192;
constexpr int kLayers = 9;
constexpr uint64_t kLayerBytes = static_cast<uint64_t>(kDim) * kDim * sizeof(float);
constexpr uint64_t kWeightBytes = kLayers * kLayerBytes;  // 2,415,919,104 bytes: past INT32_MAX
static_assert(kWeightBytes > (uint64_t{1} << 31), "the model must not fit a protobuf");

// The budget the issue sets: peak resident memory of the whole conversion below 1.5x the weight bytes.
constexpr double kMaxPeakRssOverWeights = 1.5;

// Outputs of the float16 model against the float32 one, relative to the largest output magnitude. Each of
// the nine layers rounds its weights and its result to float16 (relative error up to 2^-11 = 4.9e-4 each,
// independent, so they grow like the square root of the depth). Measured: 8.0e-4.
constexpr double kFp16RelativeTolerance = 5e-3;

uint64_t SplitMix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Uniform in [-1, 1), deterministic in (stream, index).
float Uniform(uint64_t stream, uint64_t index) {
  const uint64_t bits = SplitMix((stream << 40) ^ index) >> 40;  // 24 random bits
  return static_cast<float>(bits) / static_cast<float>(1u << 23) - 1.0f;
}

// Weight k of layer l: variance 1/kDim, so each product x W keeps the magnitude of x.
float WeightValue(int layer, uint64_t index) {
  static const float scale = std::sqrt(3.0f / static_cast<float>(kDim));
  return Uniform(static_cast<uint64_t>(layer) + 1, index) * scale;
}

constexpr uint64_t kChunk = 1u << 20;  // elements per generated chunk

void FillLayerChunk(int layer, uint64_t first, uint64_t count, float* out) {
  for (uint64_t i = 0; i < count; ++i) out[i] = WeightValue(layer, first + i);
}

// big.onnx: x[1,8192] -> MatMul(W0) -> ... -> MatMul(W8) -> y, weights in big.onnx.data at aligned offsets.
void WriteBigModel(const std::string& dir) {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.set_producer_name("big_model_test");
  auto* op = m.add_opset_import();
  op->set_domain("");
  op->set_version(17);
  auto* g = m.mutable_graph();
  g->set_name("big");
  auto add_io = [](onnx::ValueInfoProto* v, const std::string& name) {
    v->set_name(name);
    auto* tt = v->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(onnx::TensorProto::FLOAT);
    tt->mutable_shape()->add_dim()->set_dim_value(1);
    tt->mutable_shape()->add_dim()->set_dim_value(kDim);
  };
  add_io(g->add_input(), "x");
  add_io(g->add_output(), "y");
  std::ofstream data(dir + "/big.onnx.data", std::ios::binary | std::ios::trunc);
  std::vector<float> chunk(kChunk);
  for (int l = 0; l < kLayers; ++l) {
    const std::string w = "W" + std::to_string(l);
    auto* n = g->add_node();
    n->set_name("matmul" + std::to_string(l));
    n->set_op_type("MatMul");
    n->add_input(l == 0 ? "x" : "h" + std::to_string(l - 1));
    n->add_input(w);
    n->add_output(l == kLayers - 1 ? "y" : "h" + std::to_string(l));
    auto* t = g->add_initializer();
    t->set_name(w);
    t->set_data_type(onnx::TensorProto::FLOAT);
    t->add_dims(kDim);
    t->add_dims(kDim);
    t->set_data_location(onnx::TensorProto::EXTERNAL);
    auto kv = [t](const char* k, const std::string& v) {
      auto* e = t->add_external_data();
      e->set_key(k);
      e->set_value(v);
    };
    kv("location", "big.onnx.data");
    kv("offset", std::to_string(l * kLayerBytes));
    kv("length", std::to_string(kLayerBytes));
    const uint64_t elems = static_cast<uint64_t>(kDim) * kDim;
    for (uint64_t first = 0; first < elems; first += kChunk) {
      FillLayerChunk(l, first, kChunk, chunk.data());
      data.write(reinterpret_cast<const char*>(chunk.data()),
                 static_cast<std::streamsize>(kChunk * sizeof(float)));
    }
  }
  data.close();
  ASSERT_TRUE(data) << "cannot write the external data";
  testing::WriteBytes(dir + "/big.onnx", m.SerializeAsString());
}

// True when big.onnx.data still holds exactly the generated weights.
bool InputDataUnchanged(const std::string& dir) {
  std::ifstream in(dir + "/big.onnx.data", std::ios::binary);
  std::vector<float> want(kChunk), have(kChunk);
  for (int l = 0; l < kLayers; ++l) {
    const uint64_t elems = static_cast<uint64_t>(kDim) * kDim;
    for (uint64_t first = 0; first < elems; first += kChunk) {
      FillLayerChunk(l, first, kChunk, want.data());
      in.read(reinterpret_cast<char*>(have.data()), static_cast<std::streamsize>(kChunk * sizeof(float)));
      if (!in || std::memcmp(want.data(), have.data(), kChunk * sizeof(float)) != 0) return false;
    }
  }
  return in.peek() == std::char_traits<char>::eof();
}

uint64_t FileSizeOf(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

Tensor RunInOrt(const std::string& model, const std::string& input, const std::string& out_dir) {
  const testing::CommandResult r = testing::RunOrt({"run", model, out_dir, input});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  if (r.exit_code != 0) return {};
  return ReadNpy(out_dir + "/output_0.npy");
}

TEST(BigModel, Fp16WithExternalDataPast2GiBInBoundedMemory) {
  TempDir dir;
  const auto t0 = std::chrono::steady_clock::now();
  WriteBigModel(dir.path());
  ASSERT_EQ(FileSizeOf(dir / "big.onnx.data"), kWeightBytes);
  const double generate_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  const testing::CommandResult run =
      testing::RunCommand({COMPRESS_BINARY, dir / "big.onnx", "--fp16", "--external-data", "-o", dir / "out.onnx"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const double ratio = static_cast<double>(run.peak_rss_bytes) / static_cast<double>(kWeightBytes);
  std::printf("generate %.1f s; compress --fp16 %.1f s, peak RSS %.0f MiB = %.3f x the %.0f MiB of weights\n",
              generate_s, run.seconds, static_cast<double>(run.peak_rss_bytes) / (1 << 20), ratio,
              static_cast<double>(kWeightBytes) / (1 << 20));
  EXPECT_LT(ratio, kMaxPeakRssOverWeights);

  // The output: a small model file and the float16 weights beside it.
  EXPECT_LT(FileSizeOf(dir / "out.onnx"), 1u << 20);
  EXPECT_GE(FileSizeOf(dir / "out.onnx.data"), kWeightBytes / 2);
  EXPECT_TRUE(InputDataUnchanged(dir.path()));

  // Every weight is the float16 rounding of the original.
  {
    const Model out = LoadModel(dir / "out.onnx");
    std::vector<float> want(kChunk);
    for (int l = 0; l < kLayers; ++l) {
      const Tensor* w = out.graph.FindInitializer("W" + std::to_string(l));
      ASSERT_NE(w, nullptr) << l;
      ASSERT_EQ(w->dtype(), DType::kFloat16);
      ASSERT_EQ(w->dims(), (std::vector<int64_t>{kDim, kDim}));
      const auto* h = static_cast<const uint16_t*>(w->raw());
      uint64_t mismatches = 0;
      for (uint64_t first = 0; first < static_cast<uint64_t>(kDim * kDim); first += kChunk) {
        FillLayerChunk(l, first, kChunk, want.data());
        for (uint64_t i = 0; i < kChunk; ++i) mismatches += h[first + i] != FloatToHalf(want[i]);
      }
      EXPECT_EQ(mismatches, 0u) << "W" << l;
    }
  }

  // ONNX Runtime on the original and on the output, same input.
  std::vector<float> x(kDim);
  for (int64_t i = 0; i < kDim; ++i) x[static_cast<size_t>(i)] = Uniform(1000, static_cast<uint64_t>(i));
  WriteNpy(dir / "x.npy", Tensor::FromVector<float>({1, kDim}, x));
  ::mkdir((dir / "ref").c_str(), 0700);
  ::mkdir((dir / "fp16").c_str(), 0700);
  const Tensor ref = RunInOrt(dir / "big.onnx", dir / "x.npy", dir / "ref");
  const Tensor got = RunInOrt(dir / "out.onnx", dir / "x.npy", dir / "fp16");
  ASSERT_EQ(ref.dims(), (std::vector<int64_t>{1, kDim}));
  ASSERT_EQ(got.dims(), ref.dims());
  ASSERT_EQ(got.dtype(), DType::kFloat);
  double max_abs = 0, max_err = 0;
  for (int64_t i = 0; i < kDim; ++i) {
    max_abs = std::max(max_abs, std::fabs(static_cast<double>(ref.data<float>()[i])));
    max_err = std::max(max_err, std::fabs(static_cast<double>(ref.data<float>()[i] - got.data<float>()[i])));
  }
  std::printf("ONNX Runtime: largest output %.4g, largest fp16 difference %.4g (%.3g relative)\n", max_abs,
              max_err, max_err / max_abs);
  EXPECT_GT(max_abs, 0.1);  // the outputs are not degenerate
  EXPECT_LT(max_err / max_abs, kFp16RelativeTolerance);
  std::printf("whole test %.1f s\n",
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
}

}  // namespace
}  // namespace compress
