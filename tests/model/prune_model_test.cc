// `compress MODEL --prune ...` end to end on the sample MLP: top-1 on the full Fashion-MNIST test set in
// ONNX Runtime, agreement with our executor, the sparsity of every weight (through int8 too: a pruned
// weight stays exactly zero after quantization), the 2:4 pattern, and the accuracy gate with
// --auto-fallback, which keeps layers out of quantization but never un-prunes them.

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "compress/io/npy.h"
#include "compress/io/onnx_io.h"
#include "support/test_support.h"

namespace compress {
namespace {

using nlohmann::json;

// The acceptance bars (no fine-tuning): 0.5 pt for 50 % unstructured, 1.5 pt for 2:4 (Wanda) and
// 0.7 pt for 50 % then static INT8, with --calib, where the pass re-fits the kept weights by least squares
// layer by layer (SparseGPT-style). Measured in ONNX Runtime on the full test set (fp32 89.65 %): 50 % Wanda
// with the update -0.18 pt (mask only: -2.90), 2:4 Wanda -0.64 pt (mask only: -3.36), 50 % then static
// INT8 -0.14 pt (mask only: -2.98).
constexpr double kUnstructuredDropPts = 0.5;
constexpr double kTwoFourDropPts = 1.5;
constexpr double kPrunedInt8DropPts = 0.7;
// The other INT8 flavours (per tensor, QOperator, dynamic, weights-only) on the same pruned weights:
// measured -0.12 to -0.22 pt.
constexpr double kPrunedInt8OtherDropPts = 0.7;
// Without --calib the pass can only mask by magnitude: 50 % costs 1.54 pt (88.11 %); bar with a margin.
constexpr double kMagnitudeNoDataDropPts = 1.7;
// zstd -19 of the pruned INT8 model against the fp32 model: the issue asks for 5x; measured 6.77x.
constexpr double kMinZstdRatio = 5.0;
// ONNX Runtime and our executor on the same model: float sums in another order flip a handful of the
// 10,000 images at most; integer kernels agree as closely (int8_cli_model_test.cc).
constexpr double kMinAgreement = 0.995;
constexpr double kSparsity = 0.5;

std::string Data() { return std::string(COMPRESS_TEST_DATA_DIR) + "/fmnist-test"; }
std::string Calib() { return testing::SourcePath("models/calib"); }
std::string Mlp() { return testing::SourcePath("models/mlp.onnx"); }

double ManifestTop1(const std::string& name) {
  std::ifstream in(testing::SourcePath("models/manifest.json"));
  const json m = json::parse(in);
  for (const auto& e : m["models"]) {
    if (e["name"] == name) return e["fp32_top1"].get<double>();
  }
  return -1;
}

struct Measured {
  double ort_top1 = 0;
  double agreement = 0;
};

Measured Measure(const std::string& model, const testing::TempDir& tmp, const std::string& tag) {
  Measured m;
  const auto ort = testing::RunOrt({"eval", model, Data() + "/images.npy", Data() + "/labels.npy", "--threads", "2",
                                    "--preds", tmp / (tag + "_ort.npy")});
  EXPECT_EQ(ort.exit_code, 0) << ort.err;
  if (ort.exit_code != 0) return m;
  m.ort_top1 = json::parse(ort.out)["top1"].get<double>();
  const auto ours =
      testing::RunCompress({"eval", model, "--data", Data(), "--predictions", tmp / (tag + "_ours.npy"), "-q"});
  EXPECT_EQ(ours.exit_code, 0) << ours.err;
  const Tensor a = ReadNpy(tmp / (tag + "_ort.npy")), b = ReadNpy(tmp / (tag + "_ours.npy"));
  EXPECT_EQ(a.numel(), 10000);
  EXPECT_EQ(b.numel(), a.numel());
  int64_t agree = 0;
  for (int64_t i = 0; i < a.numel() && i < b.numel(); ++i) agree += a.data<int64_t>()[i] == b.data<int64_t>()[i];
  m.agreement = static_cast<double>(agree) / static_cast<double>(a.numel());
  return m;
}

// A weight as its node reads it: float values, or integers with the zero point that stands for 0.0.
struct Weight {
  std::string node;
  std::vector<int64_t> dims;
  std::vector<bool> zero;  // element is exactly 0.0 once dequantized
};

std::vector<double> AsDoubles(const Tensor& t) {
  std::vector<double> out(static_cast<size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) {
    switch (t.dtype()) {
      case DType::kFloat: out[static_cast<size_t>(i)] = t.data<float>()[i]; break;
      case DType::kInt8: out[static_cast<size_t>(i)] = t.data<int8_t>()[i]; break;
      case DType::kUInt8: out[static_cast<size_t>(i)] = t.data<uint8_t>()[i]; break;
      default: ADD_FAILURE() << "unexpected weight type " << DTypeName(t.dtype()); break;
    }
  }
  return out;
}

// Every matrix weight (rank >= 2 initializer) read by Gemm/MatMul directly, through DequantizeLinear, or
// by an integer operator, in graph order.
std::vector<Weight> Weights(const Model& m) {
  const Graph& g = m.graph;
  std::vector<Weight> out;
  for (const Node& n : g.nodes) {
    size_t wi = 0, zi = 0;
    int64_t axis = 0;
    if (n.op_type == "Gemm" || n.op_type == "MatMul") {
      wi = 1;
    } else if (n.op_type == "DequantizeLinear") {
      wi = 0, zi = 2, axis = n.AttrInt("axis", 1);
    } else if (n.op_type == "QLinearMatMul") {
      wi = 3, zi = 5, axis = 1;
    } else if (n.op_type == "MatMulInteger") {
      wi = 1, zi = 3, axis = 1;
    } else {
      continue;
    }
    if (n.inputs.size() <= wi) continue;
    const Tensor* w = g.FindInitializer(n.inputs[wi]);
    if (w == nullptr || w->rank() < 2) continue;
    std::vector<double> zp = {0.0};
    if (zi > 0 && n.inputs.size() > zi && !n.inputs[zi].empty()) zp = AsDoubles(*g.FindInitializer(n.inputs[zi]));
    const std::vector<double> v = AsDoubles(*w);
    Weight out_w{n.name, w->dims(), std::vector<bool>(v.size())};
    int64_t inner = 1;
    for (int64_t d = axis + 1; d < w->rank(); ++d) inner *= w->dims()[static_cast<size_t>(d)];
    for (size_t i = 0; i < v.size(); ++i) {
      const size_t c = zp.size() == 1 ? 0 : static_cast<size_t>((static_cast<int64_t>(i) / inner) % w->dims()[static_cast<size_t>(axis)]);
      out_w.zero[i] = v[i] == zp[c];
    }
    out.push_back(std::move(out_w));
  }
  return out;
}

int64_t CountZeros(const Weight& w) { return std::count(w.zero.begin(), w.zero.end(), true); }

TEST(PruneModel, HalfOfEveryMlpWeightByMagnitude) {
  testing::TempDir tmp;
  const std::string out = tmp / "pruned.onnx";
  const auto r = testing::RunCompress({Mlp(), "--prune", "0.5", "-o", out, "--report", tmp / "r.json", "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const CheckResult check = CheckModelFile(out);
  EXPECT_TRUE(check.ok) << check.message;
  const std::vector<Weight> weights = Weights(LoadModel(out));
  ASSERT_EQ(weights.size(), 3u);  // the MLP's three Gemm layers
  for (const auto& w : weights) {
    EXPECT_GE(static_cast<double>(CountZeros(w)) / static_cast<double>(w.zero.size()), kSparsity) << w.node;
  }
  const json report = json::parse(testing::ReadBytes(tmp / "r.json"));
  const json* layers = nullptr;
  for (const auto& p : report["passes"]) {
    if (p["pass"] == "prune") layers = &p["details"]["layers"];
  }
  ASSERT_NE(layers, nullptr);
  ASSERT_EQ(layers->size(), 3u);
  for (const auto& l : *layers) {
    EXPECT_EQ(l["method"], "magnitude");
    EXPECT_EQ(l["pattern"], "unstructured");
    EXPECT_DOUBLE_EQ(l["sparsity_after"].get<double>(), kSparsity);
  }
  const double fp32 = ManifestTop1("mlp");
  const Measured m = Measure(out, tmp, "magnitude");
  std::cout << "[prune mlp] 0.5 magnitude: ORT top-1 " << m.ort_top1 << " (fp32 " << fp32 << "), agreement "
            << m.agreement << "\n";
  EXPECT_LE((fp32 - m.ort_top1) * 100, kMagnitudeNoDataDropPts);
  EXPECT_GE(m.agreement, kMinAgreement);
}

// With --calib: Wanda masks, and the kept weights re-fitted layer by layer on the calibration data.
TEST(PruneModel, HalfOfEveryMlpWeightWithCalibrationData) {
  testing::TempDir tmp;
  const std::string out = tmp / "pruned.onnx";
  const auto r = testing::RunCompress(
      {Mlp(), "--prune", "0.5", "--calib", Calib(), "-o", out, "--report", tmp / "r.json", "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const CheckResult check = CheckModelFile(out);
  EXPECT_TRUE(check.ok) << check.message;
  const std::vector<Weight> weights = Weights(LoadModel(out));
  ASSERT_EQ(weights.size(), 3u);
  for (const auto& w : weights) {
    EXPECT_GE(static_cast<double>(CountZeros(w)) / static_cast<double>(w.zero.size()), kSparsity) << w.node;
  }
  const json report = json::parse(testing::ReadBytes(tmp / "r.json"));
  for (const auto& p : report["passes"]) {
    if (p["pass"] != "prune") continue;
    EXPECT_EQ(p["counters"]["calibration_runs"], 3);  // one per layer: each sees the layers before pruned
    ASSERT_EQ(p["details"]["layers"].size(), 3u);
    for (const auto& l : p["details"]["layers"]) {
      EXPECT_EQ(l["method"], "wanda");
      EXPECT_EQ(l["reconstruction"], "least_squares");
      EXPECT_LT(l["output_error"].get<double>(), l["output_error_mask_only"].get<double>()) << l["node"];
    }
  }
  // Byte-identical from run to run.
  const auto again = testing::RunCompress({Mlp(), "--prune", "0.5", "--calib", Calib(), "-o", tmp / "again.onnx", "-q"});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(testing::ReadBytes(out), testing::ReadBytes(tmp / "again.onnx"));
  const double fp32 = ManifestTop1("mlp");
  const Measured m = Measure(out, tmp, "wanda_update");
  std::cout << "[prune mlp] 0.5 wanda + update: ORT top-1 " << m.ort_top1 << " (fp32 " << fp32 << "), agreement "
            << m.agreement << "\n";
  EXPECT_LE((fp32 - m.ort_top1) * 100, kUnstructuredDropPts);
  EXPECT_GE(m.agreement, kMinAgreement);
}

TEST(PruneModel, TwoOfFourWandaOnTheMlp) {
  testing::TempDir tmp;
  const std::string out = tmp / "pruned24.onnx";
  const auto r = testing::RunCompress(
      {Mlp(), "--prune", "0.5", "--prune-pattern", "2:4", "--calib", Calib(), "-o", out, "--report", tmp / "r.json", "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(CheckModelFile(out).ok);
  const Model pruned = LoadModel(out);
  const std::vector<Weight> weights = Weights(pruned);
  ASSERT_EQ(weights.size(), 3u);
  for (size_t i = 0; i < weights.size(); ++i) {
    const Weight& w = weights[i];
    ASSERT_EQ(w.dims.size(), 2u);
    // PyTorch exports Linear as Gemm with transB = 1: B is [out, in], input features contiguous.
    const Node* gemm = nullptr;
    for (const Node& n : pruned.graph.nodes) {
      if (n.name == w.node) gemm = &n;
    }
    ASSERT_NE(gemm, nullptr);
    ASSERT_EQ(gemm->AttrInt("transB", 0), 1);
    const int64_t k = w.dims[1];
    ASSERT_EQ(k % 4, 0);
    int64_t bad = 0;
    for (int64_t row = 0; row < w.dims[0]; ++row) {
      for (int64_t g0 = 0; g0 < k; g0 += 4) {
        int64_t nonzero = 0;
        for (int64_t j = 0; j < 4; ++j) nonzero += !w.zero[static_cast<size_t>(row * k + g0 + j)];
        bad += nonzero > 2;
      }
    }
    EXPECT_EQ(bad, 0) << w.node;
    EXPECT_GE(CountZeros(w) * 2, static_cast<int64_t>(w.zero.size())) << w.node;
  }
  const json report = json::parse(testing::ReadBytes(tmp / "r.json"));
  for (const auto& p : report["passes"]) {
    if (p["pass"] != "prune") continue;
    ASSERT_EQ(p["details"]["layers"].size(), 3u);
    for (const auto& l : p["details"]["layers"]) {
      EXPECT_EQ(l["method"], "wanda");
      EXPECT_EQ(l["pattern"], "2:4");
      EXPECT_EQ(l["reconstruction"], "least_squares");
    }
  }
  const double fp32 = ManifestTop1("mlp");
  const Measured m = Measure(out, tmp, "two_four");
  std::cout << "[prune mlp] 2:4 wanda: ORT top-1 " << m.ort_top1 << " (fp32 " << fp32 << "), agreement "
            << m.agreement << "\n";
  EXPECT_LE((fp32 - m.ort_top1) * 100, kTwoFourDropPts);
  EXPECT_GE(m.agreement, kMinAgreement);
}

// Pruning runs first; symmetric int8 weights map 0 to their zero point, so every pruned weight is still
// exactly 0.0 in the quantized model, per channel and per tensor, QDQ and QOperator, static, dynamic and
// weights-only.
TEST(PruneModel, PrunedWeightsStayZeroThroughInt8) {
  testing::TempDir tmp;
  const double fp32 = ManifestTop1("mlp");
  // The float model pruned with the same data (wanda): the zero count every quantized layer must keep.
  const auto base = testing::RunCompress({Mlp(), "--prune", "0.5", "--calib", Calib(), "-o", tmp / "f.onnx", "-q"});
  ASSERT_EQ(base.exit_code, 0) << base.err;
  const std::vector<Weight> pruned = Weights(LoadModel(tmp / "f.onnx"));
  ASSERT_EQ(pruned.size(), 3u);
  struct Variant {
    std::string tag;
    std::vector<std::string> flags;
    double max_drop;
  };
  const std::vector<Variant> variants = {
      {"static", {}, kPrunedInt8DropPts},
      {"per-tensor", {"--per-tensor"}, kPrunedInt8OtherDropPts},
      {"qop", {"--format", "qop"}, kPrunedInt8OtherDropPts},
      {"dynamic", {"--dynamic"}, kPrunedInt8OtherDropPts},
      {"weights-only", {"--weights-only"}, kPrunedInt8OtherDropPts},
  };
  for (const auto& v : variants) {
    SCOPED_TRACE(v.tag);
    const std::string out = tmp / (v.tag + ".onnx");
    std::vector<std::string> args = {Mlp(), "--prune", "0.5", "--int8", "--calib", Calib(), "-o", out, "-q",
                                     "--report", tmp / (v.tag + ".json")};
    args.insert(args.end(), v.flags.begin(), v.flags.end());
    const auto r = testing::RunCompress(args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    if (v.tag == "static") {  // what a download ships: the issue asks for 5x smaller than the fp32 model
      const json zstd = json::parse(testing::ReadBytes(tmp / (v.tag + ".json")))["zstd"];
      std::cout << "[prune mlp] 0.5 + int8 static: zstd " << zstd["input_bytes"] << " -> " << zstd["output_bytes"]
                << " bytes (" << zstd["ratio"] << "x)\n";
      EXPECT_GE(zstd["ratio"].get<double>(), kMinZstdRatio);
    }
    const CheckResult check = CheckModelFile(out);
    EXPECT_TRUE(check.ok) << check.message;
    const std::vector<Weight> q = Weights(LoadModel(out));
    ASSERT_EQ(q.size(), 3u);
    for (size_t i = 0; i < q.size(); ++i) {
      // A weight quantized as B^T (QLinearMatMul / MatMulInteger read [in, out]) holds the same elements.
      EXPECT_EQ(q[i].zero.size(), pruned[i].zero.size());
      EXPECT_GE(CountZeros(q[i]), CountZeros(pruned[i])) << q[i].node;
      EXPECT_GE(static_cast<double>(CountZeros(q[i])) / static_cast<double>(q[i].zero.size()), kSparsity) << q[i].node;
    }
    const Measured m = Measure(out, tmp, v.tag);
    std::cout << "[prune mlp] 0.5 + int8 " << v.tag << ": ORT top-1 " << m.ort_top1 << " (fp32 " << fp32
              << "), agreement " << m.agreement << "\n";
    EXPECT_LE((fp32 - m.ort_top1) * 100, v.max_drop);
    EXPECT_GE(m.agreement, kMinAgreement);
  }
}

// A recipe file uses the pass like any other: here the middle layer only, at 75 %.
TEST(PruneModel, RecipeFileWithFirstAndLastKeptDense) {
  testing::TempDir tmp;
  testing::WriteBytes(tmp / "prune.yaml",
                      "name: sparse\npasses:\n  - pass: prune\n    options: {sparsity: 0.75, method: magnitude, "
                      "keep_first_last: true}\n");
  const std::string out = tmp / "sparse.onnx";
  const auto r = testing::RunCompress({Mlp(), "--recipe", tmp / "prune.yaml", "-o", out, "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::vector<Weight> w = Weights(LoadModel(out));
  ASSERT_EQ(w.size(), 3u);
  EXPECT_EQ(CountZeros(w[0]), 0);
  EXPECT_EQ(CountZeros(w[1]), 256 * 128 * 3 / 4);
  EXPECT_EQ(CountZeros(w[2]), 0);
  // Usage errors before the model is read.
  const auto bad = testing::RunCompress({Mlp(), "--prune", "0.3", "--prune-pattern", "2:4", "-o", tmp / "x.onnx"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("fixes the sparsity at 0.5"), std::string::npos) << bad.err;
  const auto orphan = testing::RunCompress({Mlp(), "--prune-pattern", "2:4", "-o", tmp / "x.onnx"});
  EXPECT_EQ(orphan.exit_code, 2);
  EXPECT_NE(orphan.err.find("only apply with --prune"), std::string::npos) << orphan.err;
  const auto no_data = testing::RunCompress({Mlp(), "--prune", "0.5", "--prune-update", "-o", tmp / "x.onnx"});
  EXPECT_EQ(no_data.exit_code, 2);
  EXPECT_NE(no_data.err.find("--prune-update re-fits the kept weights on calibration data"), std::string::npos)
      << no_data.err;
}

// The gate measures pruning and quantization together. --auto-fallback keeps quantized layers in float
// until the gate holds, and leaves the pruned weights pruned; with pruning alone it has nothing to undo.
TEST(PruneModel, AutoFallbackKeepsLayersInFloatButNeverUnprunes) {
  testing::TempDir tmp;
  const std::string out = tmp / "gated.onnx";
  // 90 % by magnitude drops the MLP by several points: a 0.1 pt gate cannot hold, whatever stays float.
  const auto r = testing::RunCompress({Mlp(), "--prune", "0.9", "--prune-method", "magnitude", "--int8", "--calib",
                                       Calib(), "--eval", Data(), "--eval-limit", "2000", "--max-accuracy-drop", "0.1",
                                       "--auto-fallback", "-o", out, "--report", tmp / "r.json", "-q"});
  EXPECT_EQ(r.exit_code, 5) << r.err;  // gate failed
  ASSERT_TRUE(std::filesystem::exists(out));
  const json report = json::parse(testing::ReadBytes(tmp / "r.json"));
  EXPECT_FALSE(report["gate"]["kept_in_float"].empty());  // the fallback did keep layers in float
  for (const auto& w : Weights(LoadModel(out))) {
    EXPECT_GE(static_cast<double>(CountZeros(w)) / static_cast<double>(w.zero.size()), 0.9) << w.node;
  }
  const auto alone = testing::RunCompress({Mlp(), "--prune", "0.5", "--eval", Data(), "--max-accuracy-drop", "0.1",
                                           "--auto-fallback", "-o", tmp / "alone.onnx", "-q"});
  EXPECT_EQ(alone.exit_code, 2);
  EXPECT_NE(alone.err.find("never undoes pruning"), std::string::npos) << alone.err;
}

}  // namespace
}  // namespace compress
