// low_rank on small graphs. Exactness: weights built of a known low rank r0 (per group, in the view the
// scheme factorizes) are reproduced by the factorized model at any rank >= r0, for MatMul with a batched
// 3-D activation, Gemm with transA/transB/alpha/beta and with or without C, and Conv in the channel scheme
// (groups, strides, asymmetric pads, dilations; 2-D and 1-D) and the spatial scheme. Lower rank: the
// product of the two new initializers equals a truncated SVD computed here with Eigen::JacobiSVD, with the
// Frobenius error of the dropped singular values. Whitened SVD against plain SVD on correlated inputs,
// the reported layer SQNR against the one measured with the executor, the rank rules (ratio, grid, energy, no saving, exclude/only, output layers), the parameter budget, and
// degenerate data and weights.
#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <random>

#include "cleanup_test_helpers.h"
#include "compress/calib/calibration.h"
#include "compress/eval/macs.h"
#include "compress/util/error.h"

namespace compress {
namespace {

using namespace testing;
using nlohmann::json;

// Weights of exact rank r0 are stored in float32 (relative rounding ~6e-8 per element), the factors too,
// and the kernels sum up to ~50 products in float32: the factorized output stays within this of the
// original, relative to the largest output magnitude.
constexpr double kFullRankTolerance = 1e-4;
// The product of the stored float32 factors against the truncated SVD computed in double, relative to
// the largest weight magnitude: float32 rounding of both factors only.
constexpr double kFactorTolerance = 1e-5;
// ||W - A B||_F against sqrt(sum of the dropped singular values squared), relative.
constexpr double kFrobeniusTolerance = 1e-4;
// The reported weight SQNR against 10 log10(||W||^2 / dropped energy) from the reference SVD, in dB
// (a relative error of 1e-4 in the dropped energy is 4e-4 dB).
constexpr double kSqnrToleranceDb = 1e-3;
// The reported layer SQNR against the one measured on the executor's float32 outputs, in dB.
constexpr double kMeasuredSqnrToleranceDb = 0.01;
// ONNX Runtime against our executor on the same factorized model: float32 summation order only,
// relative to the largest output magnitude.
constexpr double kOrtTolerance = 1e-5;
// Whitened SVD must cut the held-out output error of plain SVD at least to this fraction on inputs
// mixed by a matrix with singular values spanning 100:1.
constexpr double kWhitenedGain = 0.8;

const json kExact = {{"energy", 1.0}, {"rank_multiple", 1}, {"keep_output_layers", false}};

// Runs only the executor, the input batches of a test, as DataCalibrationSource does on a data folder.
class InputsSource : public CalibrationSource {
 public:
  explicit InputsSource(std::vector<std::vector<Tensor>> batches) : batches_(std::move(batches)) {}
  const CalibrationTable& Get(const Model&, const std::vector<std::string>&) override { return table_; }
  std::string data_sha256() const override { return "inputs"; }
  bool has_data() const override { return true; }
  void ForEachBatch(const Model& model, const std::vector<std::string>& tensors,
                    const std::function<void(size_t, const Tensor&)>& fn) override {
    ExecutorOptions opt;
    opt.threads = 1;
    Executor exec(model, opt);
    const ValueObserver observe = [&](const std::string& name, const Tensor& v) {
      for (size_t i = 0; i < tensors.size(); ++i) {
        if (tensors[i] == name) fn(i, v);
      }
    };
    for (const auto& batch : batches_) {
      for (size_t i = 0; i < batch.size(); ++i) observe(exec.inputs()[i].name, batch[i]);
      exec.Run(batch, &observe);
    }
  }

 private:
  CalibrationTable table_;
  std::vector<std::vector<Tensor>> batches_;
};

PassContext LowRank(Model& m, const json& options, CalibrationSource* source = nullptr) {
  const PassInfo* info = FindPass("low_rank");
  EXPECT_NE(info, nullptr);
  PassContext ctx(1, source);
  info->create(ValidatePassOptions(*info, options, "test"))->Run(m, ctx);
  VerifyModel(m);
  return ctx;
}

bool HasNote(const PassContext& ctx, const std::string& a, const std::string& b = {}) {
  for (const auto& n : ctx.notes()) {
    if (n.find(a) != std::string::npos && n.find(b) != std::string::npos) return true;
  }
  return false;
}

// Uniform values in [-1, 1) from a fixed seed.
Eigen::MatrixXd Random(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  Eigen::MatrixXd m(rows, cols);
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) m(i, j) = dist(gen);
  }
  return m;
}

// A random orthogonal matrix.
Eigen::MatrixXd Orthogonal(int64_t n, uint32_t seed) {
  Eigen::HouseholderQR<Eigen::MatrixXd> qr(Random(n, n, seed));
  return qr.householderQ() * Eigen::MatrixXd::Identity(n, n);
}

// A float32 tensor with the row-major values of `m` (its element count must match dims).
Tensor FromMatrix(const std::string& name, std::vector<int64_t> dims, const Eigen::MatrixXd& m) {
  Tensor t(DType::kFloat, std::move(dims), name);
  EXPECT_EQ(t.numel(), m.size());
  float* p = t.mutable_data<float>();
  for (int64_t i = 0; i < m.rows(); ++i) {
    for (int64_t j = 0; j < m.cols(); ++j) p[i * m.cols() + j] = static_cast<float>(m(i, j));
  }
  return t;
}

// The values of `t` as a row-major rows x cols matrix (in double).
Eigen::MatrixXd ToMatrix(const Tensor& t, int64_t rows, int64_t cols) {
  EXPECT_EQ(t.numel(), rows * cols) << t.name();
  Eigen::MatrixXd m(rows, cols);
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) m(i, j) = t.data<float>()[i * cols + j];
  }
  return m;
}

const Tensor& Init(const Model& m, const std::string& name) {
  const Tensor* t = m.graph.FindInitializer(name);
  if (t == nullptr) throw std::runtime_error("no initializer " + name);
  return *t;
}

std::vector<int64_t> Dims(const Model& m, const std::string& name) {
  const Tensor* t = m.graph.FindInitializer(name);
  return t == nullptr ? std::vector<int64_t>{} : t->dims();
}

int64_t TotalParams(const Model& m) {
  int64_t n = 0;
  for (const auto& t : m.graph.initializers) n += t.numel();
  return n;
}

bool AllFinite(const Model& m) {
  for (const auto& t : m.graph.initializers) {
    if (t.dtype() != DType::kFloat) continue;
    for (int64_t i = 0; i < t.numel(); ++i) {
      if (!std::isfinite(t.data<float>()[i])) return false;
    }
  }
  return true;
}

// Largest absolute difference of two sets of outputs relative to the largest magnitude of the first.
double Relative(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  double scale = 0;
  for (const auto& t : a) {
    for (int64_t i = 0; i < t.numel(); ++i) scale = std::max(scale, double{std::fabs(t.data<float>()[i])});
  }
  EXPECT_GT(scale, 0.0);
  return MaxAbsDiff(a, b) / scale;
}

double RelativeOutputError(const Model& original, const Model& factorized, const std::vector<Tensor>& in) {
  return Relative(RunModel(original, in), RunModel(factorized, in));
}

// The row of details["layers"] of a node, or an empty object.
const json& Row(const PassContext& ctx, const std::string& node) {
  static const json kNone = json::object();
  if (!ctx.details().contains("layers")) return kNone;
  for (const auto& r : ctx.details().at("layers")) {
    if (r.at("node") == node) return r;
  }
  return kNone;
}

Model Start(const std::vector<int64_t>& in, const std::vector<int64_t>& out, int64_t opset = 17) {
  Model m = EmptyModel(opset);
  m.graph.inputs.push_back(FloatValue("x", Fixed(in)));
  m.graph.outputs.push_back(FloatValue("y", Fixed(out)));
  return m;
}

// Checks that `m` factorized with `options` computes what it computed before (kFullRankTolerance),
// passes the ONNX checker with strict type inference, and returns the context.
PassContext ExpectExact(const Model& m, Model* out, const json& options, const std::vector<int64_t>& in_dims) {
  *out = m;
  PassContext ctx = LowRank(*out, options);
  const std::vector<Tensor> in = {RandomFloats(in_dims, 7)};
  const double e = RelativeOutputError(m, *out, in);
  std::printf("%s: relative output error %.3g\n", ::testing::UnitTest::GetInstance()->current_test_info()->name(), e);
  EXPECT_LE(e, kFullRankTolerance);
  EXPECT_EQ(CheckerAndTypeErrors(*out), "");
  return ctx;
}

// ---- exactness at rank >= the weight's own rank ------------------------------------------------------

// W [48, 48] = A [48, 3] B [3, 48]: rank 3.
Eigen::MatrixXd Rank3(int64_t k, int64_t n, uint32_t seed) { return Random(k, 3, seed) * Random(3, n, seed + 1); }

TEST(LowRankExact, MatMulWithBatched3DActivation) {
  Model m = Start({2, 5, 48}, {2, 5, 48});
  m.graph.initializers.push_back(FromMatrix("W", {48, 48}, Rank3(48, 48, 1)));
  m.graph.nodes.push_back(MakeNode("MatMul", {"x", "W"}, {"y"}, {}, "mm"));
  Model f;
  const PassContext ctx = ExpectExact(m, &f, kExact, {2, 5, 48});
  const json& row = Row(ctx, "mm");
  ASSERT_FALSE(row.is_null()) << ctx.details().dump();
  EXPECT_EQ(row.at("scheme"), "matrix");
  EXPECT_EQ(row.at("method"), "svd");
  EXPECT_EQ(row.at("rank"), 3);
  EXPECT_EQ(row.at("max_rank"), 48);
  EXPECT_EQ(row.at("params_before"), 48 * 48);
  EXPECT_EQ(row.at("params_after"), 3 * 96);
  EXPECT_EQ(Dims(f, "W_lr_a"), (std::vector<int64_t>{48, 3}));
  EXPECT_EQ(Dims(f, "W_lr_b"), (std::vector<int64_t>{3, 48}));
  EXPECT_EQ(f.graph.FindInitializer("W"), nullptr);
  EXPECT_EQ(OpTypes(f.graph), (std::vector<std::string>{"MatMul", "MatMul"}));
  EXPECT_EQ(f.graph.nodes[0].name, "mm_lr");
  EXPECT_EQ(f.graph.nodes[1].name, "mm");

  // A rank above the weight's own (the grid of 8 from ratio 0.34: 8 x 96 <= 0.34 x 2304) is exact too.
  Model g;
  const PassContext ctx8 = ExpectExact(m, &g, {{"ratio", 0.34}, {"keep_output_layers", false}}, {2, 5, 48});
  EXPECT_EQ(Row(ctx8, "mm").value("rank", 0), 8);
}

TEST(LowRankExact, GemmTransposedWithAlphaBetaAndBias) {
  // Y [4, 40] = 0.7 x^T W^T + 1.3 C, x [48, 4], W [40, 48] (transB) of rank 3.
  Model m = Start({48, 4}, {4, 40});
  m.graph.initializers.push_back(FromMatrix("W", {40, 48}, Rank3(40, 48, 3)));
  m.graph.initializers.push_back(RandomFloats({40}, 5, "C"));
  m.graph.nodes.push_back(MakeNode("Gemm", {"x", "W", "C"}, {"y"},
                                   {Attribute::Int("transA", 1), Attribute::Int("transB", 1),
                                    Attribute::Float("alpha", 0.7f), Attribute::Float("beta", 1.3f)},
                                   "gemm"));
  Model f;
  const PassContext ctx = ExpectExact(m, &f, kExact, {48, 4});
  const json& row = Row(ctx, "gemm");
  ASSERT_FALSE(row.is_null()) << ctx.details().dump();
  EXPECT_EQ(row.at("rank"), 3);
  EXPECT_EQ(row.at("params_before"), 40 * 48 + 40);
  EXPECT_EQ(row.at("params_after"), 3 * (48 + 40) + 40);
  EXPECT_EQ(Dims(f, "W_lr_a"), (std::vector<int64_t>{48, 3}));
  EXPECT_EQ(Dims(f, "W_lr_b"), (std::vector<int64_t>{3, 40}));
  ASSERT_EQ(f.graph.nodes.size(), 2u);
  const Node& first = f.graph.nodes[0];
  const Node& second = f.graph.nodes[1];
  EXPECT_EQ(first.AttrInt("transA", 0), 1);
  EXPECT_EQ(first.AttrInt("transB", 0), 0);
  EXPECT_FLOAT_EQ(first.AttrFloat("alpha", 1.0f), 0.7f);
  EXPECT_EQ(first.inputs.size(), 2u);
  EXPECT_EQ(second.inputs, (std::vector<std::string>{first.outputs[0], "W_lr_b", "C"}));
  EXPECT_FLOAT_EQ(second.AttrFloat("beta", 1.0f), 1.3f);
  EXPECT_FLOAT_EQ(second.AttrFloat("alpha", 1.0f), 1.0f);
  // ONNX Runtime agrees.
  const std::vector<Tensor> in = {RandomFloats({48, 4}, 11)};
  const auto got = RunModelInOrt(f, in);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_LE(Relative(RunModel(f, in), got), kOrtTolerance) << "ONNX Runtime";
}

TEST(LowRankExact, GemmWithoutBias) {
  Model m = Start({4, 48}, {4, 40});
  m.graph.initializers.push_back(FromMatrix("W", {48, 40}, Rank3(48, 40, 7)));
  m.graph.nodes.push_back(MakeNode("Gemm", {"x", "W"}, {"y"}, {Attribute::Float("alpha", 1.5f)}, "gemm"));
  Model f;
  const PassContext ctx = ExpectExact(m, &f, kExact, {4, 48});
  EXPECT_EQ(Row(ctx, "gemm").value("rank", 0), 3);
  ASSERT_EQ(f.graph.nodes.size(), 2u);
  EXPECT_EQ(f.graph.nodes[1].inputs.size(), 2u);
  EXPECT_EQ(OpTypes(f.graph), (std::vector<std::string>{"Gemm", "Gemm"}));
}

// Opset 10: Gemm's C is a required input. The first product is a MatMul and alpha moves to the second
// Gemm; a Gemm with transA stays, with a note.
TEST(LowRankExact, GemmAtOpset10) {
  Model m = Start({4, 48}, {4, 40}, 10);
  m.graph.initializers.push_back(FromMatrix("W", {40, 48}, Rank3(40, 48, 9)));
  m.graph.initializers.push_back(RandomFloats({40}, 10, "C"));
  m.graph.nodes.push_back(MakeNode("Gemm", {"x", "W", "C"}, {"y"},
                                   {Attribute::Float("alpha", 0.5f), Attribute::Float("beta", 2.0f),
                                    Attribute::Int("transB", 1)},
                                   "gemm"));
  Model f;
  const PassContext ctx = ExpectExact(m, &f, kExact, {4, 48});
  EXPECT_EQ(Row(ctx, "gemm").value("rank", 0), 3);
  EXPECT_EQ(OpTypes(f.graph), (std::vector<std::string>{"MatMul", "Gemm"}));
  ASSERT_EQ(f.graph.nodes.size(), 2u);
  EXPECT_FLOAT_EQ(f.graph.nodes[1].AttrFloat("alpha", 1.0f), 0.5f);
  EXPECT_FLOAT_EQ(f.graph.nodes[1].AttrFloat("beta", 1.0f), 2.0f);
  const std::vector<Tensor> in = {RandomFloats({4, 48}, 14)};
  const auto got = RunModelInOrt(f, in);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_LE(Relative(RunModel(f, in), got), kOrtTolerance) << "ONNX Runtime";

  Model t = Start({48, 4}, {4, 40}, 10);
  t.graph.initializers.push_back(FromMatrix("W", {48, 40}, Rank3(48, 40, 9)));
  t.graph.initializers.push_back(RandomFloats({40}, 10, "C"));
  t.graph.nodes.push_back(MakeNode("Gemm", {"x", "W", "C"}, {"y"}, {Attribute::Int("transA", 1)}, "gemm_t"));
  const PassContext ct = LowRank(t, kExact);
  EXPECT_FALSE(ct.details().contains("layers"));
  EXPECT_TRUE(HasNote(ct, "'gemm_t'", "transA before opset 11")) << ::testing::PrintToString(ct.notes());
}

// Per group g, the channel view W_g[(c, i, j), o] of rank r0: sum_r u_r[(c, i, j)] v_r[o].
Tensor ChannelLowRank(const std::vector<int64_t>& dims, int64_t groups, int64_t r0, uint32_t seed) {
  const int64_t og = dims[0] / groups;
  int64_t k = 1;
  for (size_t a = 1; a < dims.size(); ++a) k *= dims[a];
  Eigen::MatrixXd all(dims[0], k);  // rows: output channels
  for (int64_t g = 0; g < groups; ++g) {
    const Eigen::MatrixXd wg = Random(k, r0, seed + 2 * static_cast<uint32_t>(g)) *
                               Random(r0, og, seed + 2 * static_cast<uint32_t>(g) + 1);  // [k, og]
    all.middleRows(g * og, og) = wg.transpose();
  }
  return FromMatrix("W", dims, all);
}

TEST(LowRankExact, ConvChannelSchemeWithGroupsStridesPadsDilations) {
  // x [2, 6, 11, 9], W [8, 3, 3, 3] in 2 groups, channel rank 2 per group; strides 2, pads (1, 0, 2, 1),
  // dilations 2: y [2, 8, 5, 3].
  Model m = Start({2, 6, 11, 9}, {2, 8, 5, 3});
  m.graph.initializers.push_back(ChannelLowRank({8, 3, 3, 3}, 2, 2, 20));
  m.graph.initializers.push_back(RandomFloats({8}, 21, "b"));
  m.graph.nodes.push_back(MakeNode("Conv", {"x", "W", "b"}, {"y"},
                                   {Attribute::Int("group", 2), Attribute::Ints("strides", {2, 2}),
                                    Attribute::Ints("pads", {1, 0, 2, 1}), Attribute::Ints("dilations", {2, 2}),
                                    Attribute::Ints("kernel_shape", {3, 3})},
                                   "conv"));
  Model f;
  const PassContext ctx = ExpectExact(m, &f, kExact, {2, 6, 11, 9});
  const json& row = Row(ctx, "conv");
  ASSERT_FALSE(row.is_null()) << ctx.details().dump();
  EXPECT_EQ(row.at("scheme"), "channel");
  EXPECT_EQ(row.at("rank"), 2);
  EXPECT_EQ(row.at("max_rank"), 4);
  EXPECT_EQ(row.at("groups"), 2);
  EXPECT_EQ(row.at("params_before"), 8 * 27 + 8);
  EXPECT_EQ(row.at("params_after"), 2 * 2 * (27 + 4) + 8);
  EXPECT_EQ(Dims(f, "W_lr_a"), (std::vector<int64_t>{4, 3, 3, 3}));
  EXPECT_EQ(Dims(f, "W_lr_b"), (std::vector<int64_t>{8, 2, 1, 1}));
  ASSERT_EQ(f.graph.nodes.size(), 2u);
  EXPECT_EQ(f.graph.nodes[0].AttrInts("pads", {}), (std::vector<int64_t>{1, 0, 2, 1}));
  EXPECT_EQ(f.graph.nodes[1].AttrInt("group", 1), 2);
  EXPECT_EQ(f.graph.nodes[1].inputs.back(), "b");
  // ONNX Runtime agrees.
  const std::vector<Tensor> in = {RandomFloats({2, 6, 11, 9}, 12)};
  const auto got = RunModelInOrt(f, in);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_LE(Relative(RunModel(f, in), got), kOrtTolerance) << "ONNX Runtime";
}

// Per group g, the spatial view M_g[(c, i), (o, j)] = W[g og + o, c, i, j] of rank r0.
Tensor SpatialLowRank(int64_t o, int64_t cg, int64_t kh, int64_t kw, int64_t groups, int64_t r0, uint32_t seed) {
  const int64_t og = o / groups;
  Tensor t(DType::kFloat, {o, cg, kh, kw}, "W");
  float* p = t.mutable_data<float>();
  for (int64_t g = 0; g < groups; ++g) {
    const Eigen::MatrixXd mg = Random(cg * kh, r0, seed + 2 * static_cast<uint32_t>(g)) *
                               Random(r0, og * kw, seed + 2 * static_cast<uint32_t>(g) + 1);
    for (int64_t oo = 0; oo < og; ++oo) {
      for (int64_t c = 0; c < cg; ++c) {
        for (int64_t i = 0; i < kh; ++i) {
          for (int64_t j = 0; j < kw; ++j) {
            p[(((g * og + oo) * cg + c) * kh + i) * kw + j] = static_cast<float>(mg(c * kh + i, oo * kw + j));
          }
        }
      }
    }
  }
  return t;
}

TEST(LowRankExact, ConvSpatialScheme) {
  // x [2, 6, 10, 12], W [8, 3, 3, 5] in 2 groups, spatial rank 2 per group; strides (2, 1), pads
  // (top 1, left 2, bottom 0, right 3), dilations (1, 2): y [2, 8, 5, 9]. The channel view [45, 4] per
  // group has full rank 4, which saves nothing (392 parameters > 360): energy 1 leaves the spatial scheme.
  Model m = Start({2, 6, 10, 12}, {2, 8, 5, 9});
  m.graph.initializers.push_back(SpatialLowRank(8, 3, 3, 5, 2, 2, 30));
  m.graph.initializers.push_back(RandomFloats({8}, 31, "b"));
  m.graph.nodes.push_back(MakeNode("Conv", {"x", "W", "b"}, {"y"},
                                   {Attribute::Int("group", 2), Attribute::Ints("strides", {2, 1}),
                                    Attribute::Ints("pads", {1, 2, 0, 3}), Attribute::Ints("dilations", {1, 2})},
                                   "conv"));
  Model f;
  const PassContext ctx = ExpectExact(m, &f, kExact, {2, 6, 10, 12});
  const json& row = Row(ctx, "conv");
  ASSERT_FALSE(row.is_null()) << ctx.details().dump();
  EXPECT_EQ(row.at("scheme"), "spatial");
  EXPECT_EQ(row.at("rank"), 2);
  EXPECT_EQ(row.at("params_after"), 2 * 2 * (9 + 20) + 8);
  EXPECT_EQ(Dims(f, "W_lr_a"), (std::vector<int64_t>{4, 3, 3, 1}));
  EXPECT_EQ(Dims(f, "W_lr_b"), (std::vector<int64_t>{8, 2, 1, 5}));
  ASSERT_EQ(f.graph.nodes.size(), 2u);
  const Node& first = f.graph.nodes[0];
  const Node& second = f.graph.nodes[1];
  EXPECT_EQ(first.AttrInts("kernel_shape", {}), (std::vector<int64_t>{3, 1}));
  EXPECT_EQ(first.AttrInts("strides", {}), (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(first.AttrInts("dilations", {}), (std::vector<int64_t>{1, 1}));
  EXPECT_EQ(first.AttrInts("pads", {}), (std::vector<int64_t>{1, 0, 0, 0}));
  EXPECT_EQ(second.AttrInts("kernel_shape", {}), (std::vector<int64_t>{1, 5}));
  EXPECT_EQ(second.AttrInts("strides", {}), (std::vector<int64_t>{1, 1}));
  EXPECT_EQ(second.AttrInts("dilations", {}), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(second.AttrInts("pads", {}), (std::vector<int64_t>{0, 2, 0, 3}));
  EXPECT_EQ(first.AttrInt("group", 1), 2);
  EXPECT_EQ(second.AttrInt("group", 1), 2);
  // Fewer MACs than the original, as reported.
  EXPECT_LT(row.at("macs_after").get<int64_t>(), row.at("macs_before").get<int64_t>());
  EXPECT_EQ(row.at("macs_before").get<int64_t>(), CountMacs(m).total);  // per sample
  EXPECT_EQ(row.at("macs_after").get<int64_t>(), CountMacs(f).total);
  const std::vector<Tensor> in = {RandomFloats({2, 6, 10, 12}, 13)};
  const auto got = RunModelInOrt(f, in);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_LE(Relative(RunModel(f, in), got), kOrtTolerance) << "ONNX Runtime";
}

TEST(LowRankExact, Conv1D) {
  // x [2, 6, 20], W [8, 6, 3] of channel rank 2; pads (1, 2), dilation 2: y [2, 8, 19].
  Model m = Start({2, 6, 20}, {2, 8, 19});
  m.graph.initializers.push_back(ChannelLowRank({8, 6, 3}, 1, 2, 40));
  m.graph.nodes.push_back(MakeNode("Conv", {"x", "W"}, {"y"},
                                   {Attribute::Ints("pads", {1, 2}), Attribute::Ints("dilations", {2})}, "conv"));
  Model f;
  const PassContext ctx = ExpectExact(m, &f, kExact, {2, 6, 20});
  const json& row = Row(ctx, "conv");
  EXPECT_EQ(row.value("scheme", ""), "channel");
  EXPECT_EQ(row.value("rank", 0), 2);
  EXPECT_EQ(Dims(f, "W_lr_a"), (std::vector<int64_t>{2, 6, 3}));
  EXPECT_EQ(Dims(f, "W_lr_b"), (std::vector<int64_t>{8, 2, 1}));
}

// ---- lower rank: the reference truncated SVD ----------------------------------------------------------

struct Svd {
  Eigen::MatrixXd truncated;  // U_r S_r V_r^T
  double dropped = 0;         // sum of the dropped singular values squared
};

Svd Truncated(const Eigen::MatrixXd& w, int64_t r) {
  Eigen::JacobiSVD<Eigen::MatrixXd> svd(w, Eigen::ComputeThinU | Eigen::ComputeThinV);
  Svd out;
  const Eigen::VectorXd& s = svd.singularValues();
  out.truncated = svd.matrixU().leftCols(r) * s.head(r).asDiagonal() * svd.matrixV().leftCols(r).transpose();
  out.dropped = s.tail(s.size() - r).squaredNorm();
  return out;
}

TEST(LowRankReference, MatMulMatchesTruncatedSvd) {
  // W [40, 24], ratio 0.34 of 960: rank 5 (5 x 64 = 320 <= 326); the layer is narrower than 32 (grid 1).
  Model m = Start({3, 40}, {3, 24});
  const Eigen::MatrixXd w = ToMatrix(FromMatrix("W", {40, 24}, Random(40, 24, 50)), 40, 24);
  m.graph.initializers.push_back(FromMatrix("W", {40, 24}, w));
  m.graph.nodes.push_back(MakeNode("MatMul", {"x", "W"}, {"y"}, {}, "mm"));
  Model f = m;
  const PassContext ctx = LowRank(f, {{"ratio", 0.34}, {"method", "svd"}, {"keep_output_layers", false}});
  const json& row = Row(ctx, "mm");
  ASSERT_EQ(row.value("rank", 0), 5) << ctx.details().dump();
  ASSERT_EQ(Dims(f, "W_lr_a"), (std::vector<int64_t>{40, 5}));
  ASSERT_EQ(Dims(f, "W_lr_b"), (std::vector<int64_t>{5, 24}));
  const Eigen::MatrixXd ab = ToMatrix(Init(f, "W_lr_a"), 40, 5) * ToMatrix(Init(f, "W_lr_b"), 5, 24);
  const Svd ref = Truncated(w, 5);
  EXPECT_LE((ab - ref.truncated).cwiseAbs().maxCoeff(), kFactorTolerance * w.cwiseAbs().maxCoeff());
  const double frob = (w - ab).norm();
  EXPECT_NEAR(frob, std::sqrt(ref.dropped), kFrobeniusTolerance * std::sqrt(ref.dropped));
  EXPECT_NEAR(row.at("weight_sqnr_db").get<double>(), 10 * std::log10(w.squaredNorm() / ref.dropped), kSqnrToleranceDb);
  EXPECT_TRUE(row.at("sqnr_db").is_null());  // no calibration data
  std::printf("MatMul W[40,24] rank 5: ||W - AB||_F = %.6f, reference %.6f\n", frob, std::sqrt(ref.dropped));
}

// The matrix view of group g of a Conv weight [O, cg, kh, kw] as the channel scheme sees it: [(c, i, j), o].
Eigen::MatrixXd ChannelView(const Tensor& w, int64_t groups, int64_t g) {
  const int64_t og = w.dims()[0] / groups;
  const int64_t k = w.numel() / w.dims()[0];
  return ToMatrix(w, w.dims()[0], k).middleRows(g * og, og).transpose();
}

TEST(LowRankReference, ConvChannelMatchesTruncatedSvdPerGroup) {
  // W [8, 3, 3, 3] in 2 groups: per group [27, 4]; ratio 0.6 of 216: rank 2 (2 x 2 x 31 = 124 <= 129).
  Model m = Start({1, 6, 9, 9}, {1, 8, 4, 4});
  m.graph.initializers.push_back(RandomFloats({8, 3, 3, 3}, 60, "W"));
  m.graph.nodes.push_back(MakeNode("Conv", {"x", "W"}, {"y"},
                                   {Attribute::Int("group", 2), Attribute::Ints("strides", {2, 2})}, "conv"));
  Model f = m;
  const PassContext ctx = LowRank(f, {{"ratio", 0.6}, {"method", "svd"}, {"keep_output_layers", false}});
  const json& row = Row(ctx, "conv");
  ASSERT_EQ(row.value("scheme", ""), "channel") << ctx.details().dump();
  ASSERT_EQ(row.value("rank", 0), 2);
  ASSERT_EQ(Dims(f, "W_lr_a"), (std::vector<int64_t>{4, 3, 3, 3}));
  ASSERT_EQ(Dims(f, "W_lr_b"), (std::vector<int64_t>{8, 2, 1, 1}));
  const Tensor& w = Init(m, "W");
  const Eigen::MatrixXd a = ToMatrix(Init(f, "W_lr_a"), 4, 27);  // rows: g r + j
  const Eigen::MatrixXd b = ToMatrix(Init(f, "W_lr_b"), 8, 2);   // rows: g og + o
  double frob2 = 0, dropped = 0;
  for (int64_t g = 0; g < 2; ++g) {
    const Eigen::MatrixXd wg = ChannelView(w, 2, g);
    const Eigen::MatrixXd ab = a.middleRows(g * 2, 2).transpose() * b.middleRows(g * 4, 4).transpose();
    const Svd ref = Truncated(wg, 2);
    EXPECT_LE((ab - ref.truncated).cwiseAbs().maxCoeff(), kFactorTolerance * wg.cwiseAbs().maxCoeff()) << g;
    frob2 += (wg - ab).squaredNorm();
    dropped += ref.dropped;
  }
  EXPECT_NEAR(std::sqrt(frob2), std::sqrt(dropped), kFrobeniusTolerance * std::sqrt(dropped));
  EXPECT_EQ(CheckerAndTypeErrors(f), "");
}

TEST(LowRankReference, ConvSpatialMatchesTruncatedSvdPerGroup) {
  // W [8, 8, 3, 5] in 2 groups: spatial view [24, 20] per group, channel view [120, 4]. Ratio 0.27 of 960
  // (259 parameters): spatial rank 2 (2 x 2 x 44 = 176) against channel rank 1 (2 x 124 = 248), and the
  // spatial pair also needs fewer MACs (same positions, width kept by the pads).
  Model m = Start({1, 16, 8, 10}, {1, 8, 8, 10});
  m.graph.initializers.push_back(RandomFloats({8, 8, 3, 5}, 70, "W"));
  m.graph.nodes.push_back(MakeNode("Conv", {"x", "W"}, {"y"},
                                   {Attribute::Int("group", 2), Attribute::Ints("pads", {1, 2, 1, 2})}, "conv"));
  Model f = m;
  const PassContext ctx = LowRank(f, {{"ratio", 0.27}, {"method", "svd"}, {"keep_output_layers", false}});
  const json& row = Row(ctx, "conv");
  ASSERT_EQ(row.value("scheme", ""), "spatial") << ctx.details().dump();
  ASSERT_EQ(row.value("rank", 0), 2);
  EXPECT_EQ(row.value("max_rank", 0), 20);
  ASSERT_EQ(Dims(f, "W_lr_a"), (std::vector<int64_t>{4, 8, 3, 1}));
  ASSERT_EQ(Dims(f, "W_lr_b"), (std::vector<int64_t>{8, 2, 1, 5}));
  const Tensor& w = Init(m, "W");
  const Tensor& ta = Init(f, "W_lr_a");
  const Tensor& tb = Init(f, "W_lr_b");
  double frob2 = 0, dropped = 0, signal = 0;
  for (int64_t g = 0; g < 2; ++g) {
    Eigen::MatrixXd mg(24, 20), ab = Eigen::MatrixXd::Zero(24, 20);
    for (int64_t o = 0; o < 4; ++o) {
      for (int64_t ci = 0; ci < 24; ++ci) {  // ci = c kh + i
        for (int64_t j = 0; j < 5; ++j) {
          mg(ci, o * 5 + j) = w.data<float>()[((g * 4 + o) * 24 + ci) * 5 + j];
          for (int64_t r = 0; r < 2; ++r) {
            ab(ci, o * 5 + j) += double{ta.data<float>()[(g * 2 + r) * 24 + ci]} *
                                 tb.data<float>()[((g * 4 + o) * 2 + r) * 5 + j];
          }
        }
      }
    }
    signal += mg.squaredNorm();
    const Svd ref = Truncated(mg, 2);
    EXPECT_LE((ab - ref.truncated).cwiseAbs().maxCoeff(), kFactorTolerance * mg.cwiseAbs().maxCoeff()) << g;
    frob2 += (mg - ab).squaredNorm();
    dropped += ref.dropped;
  }
  EXPECT_NEAR(std::sqrt(frob2), std::sqrt(dropped), kFrobeniusTolerance * std::sqrt(dropped));
  EXPECT_NEAR(row.at("weight_sqnr_db").get<double>(), 10 * std::log10(signal / dropped), kSqnrToleranceDb);
  EXPECT_EQ(CheckerAndTypeErrors(f), "");
}

// ---- whitened against plain SVD -------------------------------------------------------------------------

// Rows z M with z uniform in [-1, 1) and M = diag(s) Q, s from 1 down to 0.01 geometrically: inputs
// concentrated on a few directions that are not W's.
Tensor Correlated(int64_t rows, int64_t k, uint32_t seed) {
  Eigen::VectorXd s(k);
  for (int64_t i = 0; i < k; ++i) s(i) = std::pow(0.01, static_cast<double>(i) / static_cast<double>(k - 1));
  const Eigen::MatrixXd mix = s.asDiagonal() * Orthogonal(k, 1234);
  return FromMatrix("x", {rows, k}, Random(rows, k, seed) * mix);
}

TEST(LowRankWhitened, BeatsPlainSvdOnCorrelatedInputs) {
  constexpr int64_t kK = 48;
  Model m = EmptyModel(17);
  m.graph.inputs.push_back(FloatValue("x", {Dim::Symbolic("N"), Dim::Fixed(kK)}));
  m.graph.outputs.push_back(FloatValue("y", {Dim::Symbolic("N"), Dim::Fixed(kK)}));
  m.graph.initializers.push_back(FromMatrix("W", {kK, kK}, Random(kK, kK, 80)));
  m.graph.nodes.push_back(MakeNode("MatMul", {"x", "W"}, {"y"}, {}, "mm"));
  // Calibration: two batches of 256; held out: 512 more rows drawn the same way.
  InputsSource source({{Correlated(256, kK, 81)}, {Correlated(256, kK, 82)}});
  const std::vector<Tensor> held_out = {Correlated(512, kK, 83)};
  const auto reference = RunModel(m, held_out);
  auto output_error = [&](const Model& f) {
    const auto got = RunModel(f, held_out);
    double e = 0;
    for (int64_t i = 0; i < got[0].numel(); ++i) {
      const double d = double{got[0].data<float>()[i]} - reference[0].data<float>()[i];
      e += d * d;
    }
    return std::sqrt(e);
  };
  const json base = {{"ratio", 0.34}, {"keep_output_layers", false}};
  Model plain = m, white = m, automatic = m;
  json o = base;
  o["method"] = "svd";
  const PassContext cp = LowRank(plain, o, &source);
  o["method"] = "whitened";
  const PassContext cw = LowRank(white, o, &source);
  const PassContext ca = LowRank(automatic, base, &source);
  const json& rp = Row(cp, "mm");
  const json& rw = Row(cw, "mm");
  ASSERT_EQ(rp.value("rank", 0), 8) << cp.details().dump();
  ASSERT_EQ(rw.value("rank", 0), 8) << cw.details().dump();
  EXPECT_EQ(rp.at("method"), "svd");
  EXPECT_EQ(rw.at("method"), "whitened");
  EXPECT_EQ(Row(ca, "mm").value("method", ""), "whitened");  // auto with data
  const double ep = output_error(plain), ew = output_error(white);
  std::printf("held-out output error at rank 8: plain %.4f, whitened %.4f (%.3fx); sqnr_db plain %.2f, "
              "whitened %.2f; weight_sqnr_db plain %.2f, whitened %.2f\n",
              ep, ew, ew / ep, rp.at("sqnr_db").get<double>(), rw.at("sqnr_db").get<double>(),
              rp.at("weight_sqnr_db").get<double>(), rw.at("weight_sqnr_db").get<double>());
  EXPECT_LE(ew, kWhitenedGain * ep);
  EXPECT_GT(rw.at("sqnr_db").get<double>(), rp.at("sqnr_db").get<double>());
  // Plain SVD is the best in the weight norm.
  EXPECT_GT(rp.at("weight_sqnr_db").get<double>(), rw.at("weight_sqnr_db").get<double>());
  EXPECT_EQ(output_error(automatic), ew);
}

// 10 log10(||Y||^2 / ||Y - Y'||^2) of output 0 of the original `m` and the factorized `f` over `batches`.
double MeasuredSqnrDb(const Model& m, const Model& f, const std::vector<std::vector<Tensor>>& batches) {
  double signal = 0, noise = 0;
  for (const auto& batch : batches) {
    const auto y = RunModel(m, batch);
    const auto yr = RunModel(f, batch);
    for (int64_t i = 0; i < y[0].numel(); ++i) {
      const double a = y[0].data<float>()[i], d = a - yr[0].data<float>()[i];
      signal += a * a;
      noise += d * d;
    }
  }
  return 10 * std::log10(signal / noise);
}

// sqnr_db is the SQNR of the layer's own output on the calibration data: 10 log10(||Y||^2 / ||Y - Y'||^2)
// with Y = alpha X W + beta C the original Gemm's output and Y' the factorized pair's, both fed the
// calibration inputs.
TEST(LowRankWhitened, SqnrIsTheLayerOutputSqnrOnTheCalibrationData) {
  for (const auto& [alpha, beta] : std::vector<std::pair<float, float>>{{1.0f, 1.0f}, {0.5f, 2.0f}}) {
    Model m = EmptyModel(17);
    m.graph.inputs.push_back(FloatValue("x", {Dim::Symbolic("N"), Dim::Fixed(48)}));
    m.graph.outputs.push_back(FloatValue("y", {Dim::Symbolic("N"), Dim::Fixed(40)}));
    m.graph.initializers.push_back(RandomFloats({48, 40}, 85, "W"));
    m.graph.initializers.push_back(RandomFloats({40}, 86, "C"));
    m.graph.nodes.push_back(MakeNode("Gemm", {"x", "W", "C"}, {"y"},
                                     {Attribute::Float("alpha", alpha), Attribute::Float("beta", beta)}, "gemm"));
    const std::vector<std::vector<Tensor>> batches = {{Correlated(100, 48, 87)}, {Correlated(60, 48, 88)}};
    InputsSource source(batches);
    for (const char* method : {"svd", "whitened"}) {
      Model f = m;
      const PassContext ctx =
          LowRank(f, {{"ratio", 0.4}, {"method", method}, {"keep_output_layers", false}}, &source);
      const json& row = Row(ctx, "gemm");
      ASSERT_EQ(row.value("rank", 0), 8) << ctx.details().dump();  // 8 x 88 + 40 <= 0.4 x 1960
      const double measured = MeasuredSqnrDb(m, f, batches);
      std::printf("Gemm alpha %.1f beta %.1f %s: sqnr_db %.4f, measured %.4f\n", double{alpha}, double{beta}, method,
                  row.at("sqnr_db").get<double>(), measured);
      EXPECT_NEAR(row.at("sqnr_db").get<double>(), measured, kMeasuredSqnrToleranceDb)
          << "alpha " << alpha << " beta " << beta << " " << method;
    }
  }
}

// The same for convolutions (the Gram matrix of im2col patches per group): the channel scheme with
// groups, strides, asymmetric pads and a bias, plain and whitened, and the spatial scheme.
TEST(LowRankWhitened, ConvSqnrIsTheLayerOutputSqnrOnTheCalibrationData) {
  struct Case {
    std::vector<int64_t> w, x, y;
    std::vector<Attribute> attrs;
    double ratio;
    const char* scheme;
  };
  const std::vector<Case> cases = {
      {{8, 3, 3, 3}, {2, 6, 9, 9}, {2, 8, 4, 5},
       {Attribute::Int("group", 2), Attribute::Ints("strides", {2, 2}), Attribute::Ints("pads", {0, 1, 1, 2})},
       0.6, "channel"},
      {{8, 8, 3, 5}, {2, 16, 8, 10}, {2, 8, 8, 10}, {Attribute::Int("group", 2), Attribute::Ints("pads", {1, 2, 1, 2})},
       0.27, "spatial"}};
  for (const Case& c : cases) {
    Model m = Start(c.x, c.y);
    m.graph.initializers.push_back(RandomFloats(c.w, 150, "W"));
    m.graph.initializers.push_back(RandomFloats({c.w[0]}, 151, "b"));
    m.graph.nodes.push_back(MakeNode("Conv", {"x", "W", "b"}, {"y"}, c.attrs, "conv"));
    const std::vector<std::vector<Tensor>> batches = {{RandomFloats(c.x, 152)}, {RandomFloats(c.x, 153)}};
    InputsSource source(batches);
    std::map<std::string, double> sqnr;
    for (const char* method : {"svd", "whitened"}) {
      Model f = m;
      const PassContext ctx = LowRank(f, {{"ratio", c.ratio}, {"method", method}, {"keep_output_layers", false}},
                                      &source);
      const json& row = Row(ctx, "conv");
      ASSERT_EQ(row.value("scheme", ""), c.scheme) << ctx.details().dump();
      // The spatial scheme has no whitened form: plain SVD, then with data (method whitened) the second
      // factor re-fitted on the data ("refit"), and the row says so.
      const bool spatial = std::string(c.scheme) == "spatial";
      EXPECT_EQ(row.value("method", ""), !spatial ? std::string(method)
                                                  : std::string(method) == "whitened" ? "refit" : "svd");
      sqnr[method] = row.at("sqnr_db").get<double>();
      const double measured = MeasuredSqnrDb(m, f, batches);
      std::printf("Conv %s %s rank %d: sqnr_db %.4f, measured %.4f\n", c.scheme, method, row.value("rank", 0),
                  row.at("sqnr_db").get<double>(), measured);
      EXPECT_NEAR(row.at("sqnr_db").get<double>(), measured, kMeasuredSqnrToleranceDb) << c.scheme << " " << method;
    }
    // On its own calibration data the whitened channel factorization and the re-fitted spatial one are
    // the better ones (the re-fit is the least-squares second factor for the same first factor).
    EXPECT_GT(sqnr["whitened"], sqnr["svd"]) << c.scheme;
  }
}

// ---- rank rules ---------------------------------------------------------------------------------------

TEST(LowRankRules, RatioQuarterOf784x256GivesRank48) {
  Model m = Start({2, 784}, {2, 256});
  m.graph.initializers.push_back(RandomFloats({784, 256}, 90, "W"));
  m.graph.initializers.push_back(RandomFloats({256}, 91, "C"));
  m.graph.nodes.push_back(MakeNode("Gemm", {"x", "W", "C"}, {"y"}, {}, "fc"));
  Model f = m;
  const PassContext ctx = LowRank(f, {{"ratio", 0.25}, {"keep_output_layers", false}});
  const json& row = Row(ctx, "fc");
  EXPECT_EQ(row.value("rank", 0), 48) << ctx.details().dump();
  const int64_t before = 784 * 256 + 256, after = 48 * (784 + 256) + 256;
  EXPECT_EQ(row.value("params_before", 0), before);
  EXPECT_EQ(row.value("params_after", 0), after);
  EXPECT_LE(static_cast<double>(after), 0.25 * static_cast<double>(before));
  EXPECT_EQ(TotalParams(f), after);
  EXPECT_EQ(Counter(ctx, "factorized_layers"), 1);
  EXPECT_EQ(Counter(ctx, "parameters_removed"), before - after);
}

TEST(LowRankRules, NarrowLayerUsesAGridOfOne) {
  // W [64, 24]: narrower than 32, so rank 5 (5 x 88 = 440 <= 0.3 x 1536) despite rank_multiple 8.
  Model m = Start({2, 64}, {2, 24});
  m.graph.initializers.push_back(RandomFloats({64, 24}, 92, "W"));
  m.graph.nodes.push_back(MakeNode("MatMul", {"x", "W"}, {"y"}, {}, "mm"));
  Model f = m;
  const PassContext ctx = LowRank(f, {{"ratio", 0.3}, {"rank_multiple", 8}, {"keep_output_layers", false}});
  EXPECT_EQ(Row(ctx, "mm").value("rank", 0), 5) << ctx.details().dump();
}

TEST(LowRankRules, EnergyGivesTheSmallestGridRankKeepingThatShare) {
  // W [48, 40] = Q1 diag(exp(-i / 8)) Q2^T: squared singular values exp(-i / 4), 90 % kept at rank 10.
  Eigen::VectorXd s(40);
  for (int i = 0; i < 40; ++i) s(i) = std::exp(-i / 8.0);
  const Eigen::MatrixXd w0 = Orthogonal(48, 93).leftCols(40) * s.asDiagonal() * Orthogonal(40, 94).transpose();
  Model m = Start({2, 48}, {2, 40});
  m.graph.initializers.push_back(FromMatrix("W", {48, 40}, w0));
  m.graph.nodes.push_back(MakeNode("MatMul", {"x", "W"}, {"y"}, {}, "mm"));
  // The expectation from the stored float32 weight.
  Eigen::JacobiSVD<Eigen::MatrixXd> svd(ToMatrix(Init(m, "W"), 48, 40));
  const Eigen::VectorXd sv = svd.singularValues();
  const double total = sv.squaredNorm();
  int64_t r90 = 0;
  while (sv.head(r90).squaredNorm() < 0.9 * total) ++r90;
  EXPECT_EQ(r90, 10);
  EXPECT_LT(sv.head(r90 - 1).squaredNorm(), 0.9 * total);
  Model f1 = m, f8 = m;
  const PassContext c1 = LowRank(f1, {{"energy", 0.9}, {"rank_multiple", 1}, {"keep_output_layers", false}});
  const PassContext c8 = LowRank(f8, {{"energy", 0.9}, {"keep_output_layers", false}});
  EXPECT_EQ(Row(c1, "mm").value("rank", 0), r90) << c1.details().dump();
  EXPECT_EQ(Row(c8, "mm").value("rank", 0), (r90 + 7) / 8 * 8) << c8.details().dump();
  // The kept energy shows in the weight SQNR: the dropped share at rank 10 is at most 10 %.
  EXPECT_GE(Row(c1, "mm").value("weight_sqnr_db", 0.0), 10.0);
}

TEST(LowRankRules, NoSavingKeepsTheLayerWithANote) {
  // W [16, 16] at ratio 0.05: 12 parameters allowed, rank 1 needs 32; W [2, 2]: no rank saves anything.
  for (const auto& [k, ratio] : std::vector<std::pair<int64_t, double>>{{16, 0.05}, {2, 0.9}}) {
    Model m = Start({2, k}, {2, k});
    m.graph.initializers.push_back(RandomFloats({k, k}, 95, "W"));
    m.graph.nodes.push_back(MakeNode("MatMul", {"x", "W"}, {"y"}, {}, "small_mm"));
    Model f = m;
    const PassContext ctx = LowRank(f, {{"ratio", ratio}, {"keep_output_layers", false}});
    EXPECT_TRUE(HasNote(ctx, "small_mm", "kept")) << ::testing::PrintToString(ctx.notes());
    ASSERT_NE(f.graph.FindInitializer("W"), nullptr);
    EXPECT_TRUE(Init(f, "W").SameContent(Init(m, "W")));
    EXPECT_EQ(f.graph.nodes.size(), 1u);
    EXPECT_FALSE(ctx.details().contains("layers"));
  }
}

// x [N, 48] -> mm1 -> Relu -> mm2 -> Relu -> mm3 -> y, every W [48, 48].
Model Chain() {
  Model m = EmptyModel(17);
  m.graph.inputs.push_back(FloatValue("x", {Dim::Symbolic("N"), Dim::Fixed(48)}));
  m.graph.outputs.push_back(FloatValue("y", {Dim::Symbolic("N"), Dim::Fixed(48)}));
  std::string in = "x";
  for (int i = 1; i <= 3; ++i) {
    const std::string s = std::to_string(i);
    m.graph.initializers.push_back(RandomFloats({48, 48}, 100 + static_cast<uint32_t>(i), "W" + s));
    const std::string out = i == 3 ? "y" : "h" + s;
    m.graph.nodes.push_back(MakeNode("MatMul", {in, "W" + s}, {out}, {}, "mm" + s));
    if (i < 3) {
      m.graph.nodes.push_back(MakeNode("Relu", {out}, {"r" + s}, {}, "relu" + s));
      in = "r" + s;
    }
  }
  return m;
}

std::vector<std::string> Factorized(const PassContext& ctx) {
  std::vector<std::string> out;
  if (!ctx.details().contains("layers")) return out;
  for (const auto& r : ctx.details().at("layers")) out.push_back(r.at("node").get<std::string>());
  return out;
}

TEST(LowRankRules, ExcludeAndOnlyNodes) {
  const json base = {{"ratio", 0.34}, {"keep_output_layers", false}};
  Model all = Chain();
  EXPECT_EQ(Factorized(LowRank(all, base)), (std::vector<std::string>{"mm1", "mm2", "mm3"}));
  Model ex = Chain();
  json o = base;
  o["exclude_nodes"] = {"mm1", "mm3"};
  EXPECT_EQ(Factorized(LowRank(ex, o)), (std::vector<std::string>{"mm2"}));
  EXPECT_NE(ex.graph.FindInitializer("W1"), nullptr);
  EXPECT_EQ(ex.graph.FindInitializer("W2"), nullptr);
  Model only = Chain();
  o = base;
  o["only_nodes"] = {"mm1"};
  EXPECT_EQ(Factorized(LowRank(only, o)), (std::vector<std::string>{"mm1"}));
  EXPECT_NE(only.graph.FindInitializer("W2"), nullptr);
  EXPECT_NE(only.graph.FindInitializer("W3"), nullptr);
}

TEST(LowRankRules, OutputLayerStaysWholeUnlessAsked) {
  // x -> hidden Gemm [48, 48] -> Relu -> head Gemm [48, 10] -> Relu -> Softmax -> y.
  Model m = EmptyModel(17);
  m.graph.inputs.push_back(FloatValue("x", {Dim::Symbolic("N"), Dim::Fixed(48)}));
  m.graph.outputs.push_back(FloatValue("y", {Dim::Symbolic("N"), Dim::Fixed(10)}));
  m.graph.initializers.push_back(RandomFloats({48, 48}, 110, "W1"));
  m.graph.initializers.push_back(RandomFloats({48, 10}, 111, "W2"));
  m.graph.nodes.push_back(MakeNode("Gemm", {"x", "W1"}, {"h"}, {}, "hidden"));
  m.graph.nodes.push_back(MakeNode("Relu", {"h"}, {"r"}, {}, "relu"));
  m.graph.nodes.push_back(MakeNode("Gemm", {"r", "W2"}, {"logits"}, {}, "head"));
  m.graph.nodes.push_back(MakeNode("Relu", {"logits"}, {"l2"}, {}, "relu2"));
  m.graph.nodes.push_back(MakeNode("Softmax", {"l2"}, {"y"}, {}, "softmax"));
  Model kept = m, all = m;
  const PassContext ck = LowRank(kept, {{"ratio", 0.5}});
  EXPECT_EQ(Factorized(ck), (std::vector<std::string>{"hidden"}));
  EXPECT_TRUE(HasNote(ck, "'head'", "graph output")) << ::testing::PrintToString(ck.notes());
  EXPECT_TRUE(Init(kept, "W2").SameContent(Init(m, "W2")));
  const PassContext ca = LowRank(all, {{"ratio", 0.5}, {"keep_output_layers", false}});
  EXPECT_EQ(Factorized(ca), (std::vector<std::string>{"hidden", "head"}));
  // head [48, 10] is narrow (grid 1): 4 x 58 = 232 <= 240.
  EXPECT_EQ(Row(ca, "head").value("rank", 0), 4);
}

// ---- budget -----------------------------------------------------------------------------------------------

// x [N, 64] -> fc1 [64, 128] -> Relu -> fc2 [128, 128] -> Relu -> fc3 [128, 10] -> y, biases on all.
Model Mlp() {
  Model m = EmptyModel(17);
  m.graph.inputs.push_back(FloatValue("x", {Dim::Symbolic("N"), Dim::Fixed(64)}));
  m.graph.outputs.push_back(FloatValue("y", {Dim::Symbolic("N"), Dim::Fixed(10)}));
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{64, 128}, {128, 128}, {128, 10}};
  std::string in = "x";
  for (size_t i = 0; i < shapes.size(); ++i) {
    const std::string s = std::to_string(i + 1);
    m.graph.initializers.push_back(RandomFloats({shapes[i].first, shapes[i].second}, 120 + 2 * static_cast<uint32_t>(i), "W" + s));
    m.graph.initializers.push_back(RandomFloats({shapes[i].second}, 121 + 2 * static_cast<uint32_t>(i), "b" + s));
    const std::string out = i + 1 == shapes.size() ? "y" : "h" + s;
    m.graph.nodes.push_back(MakeNode("Gemm", {in, "W" + s, "b" + s}, {out}, {}, "fc" + s));
    if (i + 1 < shapes.size()) {
      m.graph.nodes.push_back(MakeNode("Relu", {out}, {"r" + s}, {}, "relu" + s));
      in = "r" + s;
    }
  }
  return m;
}

TEST(LowRankBudget, ParamsHalf) {
  Model m = Mlp();
  const int64_t before = TotalParams(m);
  EXPECT_EQ(before, 64 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10);
  Model f = m;
  const PassContext ctx = LowRank(f, {{"params", 0.5}});
  const int64_t after = TotalParams(f);
  std::printf("params budget 0.5: %lld -> %lld (%.4f), ranks fc1 %d, fc2 %d\n", static_cast<long long>(before),
              static_cast<long long>(after), static_cast<double>(after) / static_cast<double>(before),
              Row(ctx, "fc1").value("rank", 0), Row(ctx, "fc2").value("rank", 0));
  EXPECT_LE(static_cast<double>(after), 0.5 * static_cast<double>(before));
  const json& budget = ctx.details().at("budget");
  EXPECT_EQ(budget.at("by"), "params");
  EXPECT_EQ(budget.at("before").get<int64_t>(), before);
  EXPECT_EQ(budget.at("after").get<int64_t>(), after);
  EXPECT_TRUE(Init(f, "W3").SameContent(Init(m, "W3")));  // the output layer stays
  EXPECT_EQ(CheckerAndTypeErrors(f), "");
}

TEST(LowRankBudget, MacsHalf) {
  Model m = Mlp();
  Model f = m;
  const PassContext ctx = LowRank(f, {{"macs", 0.5}});
  const int64_t before = CountMacs(m).total, after = CountMacs(f).total;
  EXPECT_LE(static_cast<double>(after), 0.5 * static_cast<double>(before));
  EXPECT_EQ(ctx.details().at("budget").at("after").get<int64_t>(), after);
}

TEST(LowRankBudget, UnreachableBudgetIsAnAccuracyGateError) {
  Model m = Mlp();
  const int64_t before = TotalParams(m);
  // The least reachable: fc1 and fc2 at rank 8, fc3 whole.
  const int64_t least = 8 * (64 + 128) + 128 + 8 * (128 + 128) + 128 + 128 * 10 + 10;
  char fraction[32];
  std::snprintf(fraction, sizeof fraction, "%.4f", static_cast<double>(least) / static_cast<double>(before));
  try {
    LowRank(m, {{"params", 0.01}});
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kAccuracyGate);
    const std::string msg = e.what();
    EXPECT_NE(msg.find("0.0100"), std::string::npos) << msg;
    EXPECT_NE(msg.find(fraction), std::string::npos) << msg << " (expected " << fraction << ")";
  }
}

// ---- robustness ---------------------------------------------------------------------------------------

TEST(LowRankRobust, ZeroCalibrationDataGivesFiniteWeights) {
  Model m = Chain();
  InputsSource source({{Tensor(DType::kFloat, {64, 48}, "x")}});  // all zeros
  Model f = m;
  const PassContext ctx = LowRank(f, {{"ratio", 0.34}, {"method", "whitened"}, {"keep_output_layers", false}},
                                  &source);
  EXPECT_TRUE(AllFinite(f));
  EXPECT_EQ(Factorized(ctx), (std::vector<std::string>{"mm1", "mm2", "mm3"}));
  EXPECT_EQ(Row(ctx, "mm1").value("method", ""), "svd");
  EXPECT_TRUE(HasNote(ctx, "mm1", "plain SVD")) << ::testing::PrintToString(ctx.notes());
  const std::vector<Tensor> in = {RandomFloats({4, 48}, 130)};
  for (const auto& t : RunModel(f, in)) {
    for (int64_t i = 0; i < t.numel(); ++i) ASSERT_TRUE(std::isfinite(t.data<float>()[i]));
  }
}

TEST(LowRankRobust, OneRepeatedSampleGivesFiniteWeights) {
  Model m = Chain();
  // 16 rows for 48 input features: X^T X has rank 1.
  const Tensor one = RandomFloats({1, 48}, 131, "x");
  Tensor x(DType::kFloat, {16, 48}, "x");
  for (int64_t i = 0; i < x.numel(); ++i) x.mutable_data<float>()[i] = one.data<float>()[i % 48];
  InputsSource source({{x}});
  Model f = m, p = m;
  const json o = {{"ratio", 0.34}, {"method", "whitened"}, {"keep_output_layers", false}};
  const PassContext ctx = LowRank(f, o, &source);
  EXPECT_TRUE(AllFinite(f));
  EXPECT_EQ(Row(ctx, "mm1").value("method", ""), "whitened") << ctx.details().dump();
  EXPECT_TRUE(HasNote(ctx, "mm1", "regularized")) << ::testing::PrintToString(ctx.notes());
  // On that very sample the whitened layer is (nearly) exact, far better than plain SVD.
  json op = o;
  op["method"] = "svd";
  LowRank(p, op, &source);
  const std::vector<Tensor> in = {one};
  const double ew = RelativeOutputError(m, f, in), ep = RelativeOutputError(m, p, in);
  std::printf("one repeated sample: relative output error on it, whitened %.3g, plain %.3g\n", ew, ep);
  EXPECT_LT(ew, ep);
}

TEST(LowRankRobust, NanWeightStaysWithANote) {
  Model m = Chain();
  m.graph.FindInitializer("W2")->mutable_data<float>()[5] = std::nanf("");
  Model f = m;
  const PassContext ctx = LowRank(f, {{"ratio", 0.34}, {"keep_output_layers", false}});
  EXPECT_EQ(Factorized(ctx), (std::vector<std::string>{"mm1", "mm3"}));
  ASSERT_NE(f.graph.FindInitializer("W2"), nullptr);
  EXPECT_TRUE(std::isnan(Init(f, "W2").data<float>()[5]));
  EXPECT_TRUE(HasNote(ctx, "'mm2'", "NaN")) << ::testing::PrintToString(ctx.notes());
}

TEST(LowRankRobust, SharedWeightStaysWithANote) {
  // x -> mm1 (W) -> Relu -> mm2 (W again) -> y.
  Model m = EmptyModel(17);
  m.graph.inputs.push_back(FloatValue("x", {Dim::Symbolic("N"), Dim::Fixed(48)}));
  m.graph.outputs.push_back(FloatValue("y", {Dim::Symbolic("N"), Dim::Fixed(48)}));
  m.graph.initializers.push_back(RandomFloats({48, 48}, 140, "W"));
  m.graph.nodes.push_back(MakeNode("MatMul", {"x", "W"}, {"h"}, {}, "mm1"));
  m.graph.nodes.push_back(MakeNode("Relu", {"h"}, {"r"}, {}, "relu"));
  m.graph.nodes.push_back(MakeNode("MatMul", {"r", "W"}, {"y"}, {}, "mm2"));
  Model f = m;
  const PassContext ctx = LowRank(f, {{"ratio", 0.34}, {"keep_output_layers", false}});
  EXPECT_TRUE(Factorized(ctx).empty());
  EXPECT_TRUE(Init(f, "W").SameContent(Init(m, "W")));
  EXPECT_TRUE(HasNote(ctx, "'mm1'", "also read elsewhere")) << ::testing::PrintToString(ctx.notes());
  EXPECT_TRUE(HasNote(ctx, "'mm2'", "also read elsewhere")) << ::testing::PrintToString(ctx.notes());
}

TEST(LowRankRobust, WhitenedWithoutDataIsAUsageError) {
  Model m = Chain();
  try {
    LowRank(m, {{"ratio", 0.34}, {"method", "whitened"}});
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUsage);
  }
}

}  // namespace
}  // namespace compress
