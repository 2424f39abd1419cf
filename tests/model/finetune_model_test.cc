// Fine-tuning end to end on the sample models: Fashion-MNIST's train split for training, the full test
// set for accuracy, every output run in ONNX Runtime (top-1 measured there, agreement with our executor).
//
// Acceptance bars of the fine-tuning issue, each with the figure measured when it was written:
//  - CNN --target-macs 0.5 --calib + 3 epochs: within 1.0 pt (measured -0.80 pt; -2.29 pt without).
//  - MLP --prune 0.9 --prune-steps 3 + 2 epochs per step: >= 90 % zeros in every pruned weight and within
//    1.0 pt (measured -0.66 pt; -28.4 pt for one-shot 0.9 without fine-tuning).
//  - CNN --int8 --qat + 1 epoch: top-1 >= post-training INT8's, fused in ONNX Runtime like it.
//  - a half-width MLP student from random weights, 5 epochs: within 2 pt of the teacher, and at least as
//    good as the same student trained on the labels alone (distillation at T = 2, see the test).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <cmath>
#include <map>
#include <random>
#include <set>

#include "compress/io/npy.h"
#include "compress/io/onnx_io.h"
#include "support/test_support.h"

namespace compress {
namespace {

using nlohmann::json;

constexpr double kCnnMacsDropPts = 1.0;
constexpr double kMlpPruneDropPts = 1.0;
constexpr double kStudentDropPts = 2.0;
constexpr double kMinPrunedZeros = 0.90;
// ONNX Runtime and our executor on the same model: float sums in another order flip a handful of images.
constexpr double kMinAgreement = 0.995;

std::string Test() { return std::string(COMPRESS_TEST_DATA_DIR) + "/fmnist-test"; }
std::string Train() { return std::string(COMPRESS_TEST_DATA_DIR) + "/fmnist-train"; }
std::string Calib() { return std::string(COMPRESS_TEST_DATA_DIR) + "/fmnist-train-2k"; }
std::string Sample(const std::string& name) { return testing::SourcePath("models/" + name + ".onnx"); }

struct Measured {
  double top1 = 0;       // ONNX Runtime, labels
  double agreement = 0;  // ONNX Runtime against our executor
};

Measured Measure(const std::string& model, const testing::TempDir& tmp, const std::string& tag) {
  Measured m;
  const std::string ort_preds = tmp / (tag + "_ort.npy"), our_preds = tmp / (tag + "_ours.npy");
  const auto ort = testing::RunOrt({"eval", model, Test() + "/images.npy", Test() + "/labels.npy", "--threads", "2",
                                    "--preds", ort_preds});
  EXPECT_EQ(ort.exit_code, 0) << ort.err;
  if (ort.exit_code != 0) return m;
  m.top1 = json::parse(ort.out)["top1"].get<double>();
  const auto ours = testing::RunCompress({"eval", model, "--data", Test(), "--predictions", our_preds, "-q"});
  EXPECT_EQ(ours.exit_code, 0) << ours.err;
  const Tensor a = ReadNpy(ort_preds), b = ReadNpy(our_preds);
  EXPECT_EQ(a.numel(), 10000);
  EXPECT_EQ(b.numel(), a.numel());
  int64_t agree = 0;
  for (int64_t i = 0; i < a.numel() && i < b.numel(); ++i) agree += a.data<int64_t>()[i] == b.data<int64_t>()[i];
  m.agreement = a.numel() > 0 ? static_cast<double>(agree) / static_cast<double>(a.numel()) : 0.0;
  return m;
}

json Report(const std::string& path) { return json::parse(testing::ReadBytes(path)); }

TEST(FinetuneModel, CnnAtHalfTheMacsWithinAPointAfterThreeEpochs) {
  testing::TempDir tmp;
  const Measured orig = Measure(Sample("cnn"), tmp, "orig");
  const std::string out = tmp / "cnn.onnx";
  const auto r = testing::RunCompress({Sample("cnn"), "--target-macs", "0.5", "--calib", Calib(), "--finetune", Train(),
                                       "--epochs", "3", "-o", out, "--report", tmp / "r.json", "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json rep = Report(tmp / "r.json");
  EXPECT_LE(rep["macs"]["ratio"].get<double>(), 0.5);
  ASSERT_EQ(rep["training"].size(), 1u);
  EXPECT_EQ(rep["training"][0]["epochs"].size(), 3u);
  EXPECT_EQ(rep["training"][0]["samples_per_epoch"], 60000);
  // The whole train split is 188 MB of images and a training step about 100 MB; the process once peaked
  // at 4.6 GiB here, when the teacher's per-batch outputs pinned the heap between the calibration's and
  // the teacher's large temporaries.
  EXPECT_LT(rep["training"][0]["peak_rss_bytes"].get<int64_t>(), int64_t{1} << 30);
  EXPECT_EQ(testing::CheckerAndTypeErrors(LoadModel(out)), "");
  const Measured m = Measure(out, tmp, "tuned");
  EXPECT_GE(m.agreement, kMinAgreement);
  EXPECT_GE(m.top1, orig.top1 - kCnnMacsDropPts / 100.0) << "original " << orig.top1;
}

TEST(FinetuneModel, MlpGraduallyPrunedToNinetyPercentWithinAPoint) {
  testing::TempDir tmp;
  const Measured orig = Measure(Sample("mlp"), tmp, "orig");
  const std::string out = tmp / "mlp.onnx";
  const auto r = testing::RunCompress({Sample("mlp"), "--prune", "0.9", "--prune-steps", "3", "--calib", Calib(),
                                       "--finetune", Train(), "--epochs", "2", "-o", out, "--report", tmp / "r.json",
                                       "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // Three prune steps on the cubic schedule, fine-tuning after each.
  const json rep = Report(tmp / "r.json");
  std::vector<std::string> order;
  std::vector<double> sparsity;
  for (const auto& p : rep["passes"]) {
    const std::string name = p["pass"].get<std::string>();
    if (name == "prune" || name == "finetune") order.push_back(name);
    if (name == "prune") sparsity.push_back(p["options"]["sparsity"].get<double>());
  }
  EXPECT_EQ(order, (std::vector<std::string>{"prune", "finetune", "prune", "finetune", "prune", "finetune"}));
  ASSERT_EQ(sparsity.size(), 3u);
  EXPECT_NEAR(sparsity[0], 0.9 * (1 - 8.0 / 27), 1e-9);
  EXPECT_NEAR(sparsity[1], 0.9 * (1 - 1.0 / 27), 1e-9);
  EXPECT_NEAR(sparsity[2], 0.9, 1e-9);
  const Model m = LoadModel(out);
  int pruned = 0;
  for (const auto& t : m.graph.initializers) {
    if (t.rank() != 2) continue;
    int64_t zeros = 0;
    for (int64_t i = 0; i < t.numel(); ++i) zeros += t.data<float>()[i] == 0.0f;
    EXPECT_GE(static_cast<double>(zeros) / static_cast<double>(t.numel()), kMinPrunedZeros) << t.name();
    ++pruned;
  }
  EXPECT_EQ(pruned, 3);
  const Measured tuned = Measure(out, tmp, "tuned");
  EXPECT_GE(tuned.agreement, kMinAgreement);
  EXPECT_GE(tuned.top1, orig.top1 - kMlpPruneDropPts / 100.0) << "original " << orig.top1;
}

TEST(FinetuneModel, CnnQuantizationAwareTrainingBeatsPostTrainingAndFusesInOnnxRuntime) {
  testing::TempDir tmp;
  const std::string ptq = tmp / "ptq.onnx", qat = tmp / "qat.onnx";
  auto r = testing::RunCompress({Sample("cnn"), "--int8", "--calib", Calib(), "-o", ptq, "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = testing::RunCompress({Sample("cnn"), "--int8", "--qat", "--calib", Calib(), "--finetune", Train(), "--epochs", "1",
                            "-o", qat, "--report", tmp / "r.json", "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json rep = Report(tmp / "r.json");
  ASSERT_EQ(rep["training"].size(), 1u);
  EXPECT_EQ(rep["training"][0]["qat"], true);
  // The same QDQ structure as post-training INT8: node types and integer weight types match one for one.
  const Model a = LoadModel(ptq), b = LoadModel(qat);
  std::multiset<std::string> ops_a, ops_b, ints_a, ints_b;
  for (const auto& n : a.graph.nodes) ops_a.insert(n.op_type);
  for (const auto& n : b.graph.nodes) ops_b.insert(n.op_type);
  for (const auto& t : a.graph.initializers) ints_a.insert(std::string(DTypeName(t.dtype())) + ShapeToString(t.dims()));
  for (const auto& t : b.graph.initializers) ints_b.insert(std::string(DTypeName(t.dtype())) + ShapeToString(t.dims()));
  EXPECT_EQ(ops_a, ops_b);
  EXPECT_EQ(ints_a, ints_b);
  EXPECT_EQ(testing::CheckerAndTypeErrors(b), "");
  // ONNX Runtime's own optimized graph: the same integer kernels for both.
  std::map<std::string, std::multiset<std::string>> fused;
  for (const auto& [tag, path] : {std::pair<std::string, std::string>{"ptq", ptq}, {"qat", qat}}) {
    const std::string optimized = tmp / (tag + ".ort.onnx");
    const auto o = testing::RunOrt({"optimize", path, optimized});
    ASSERT_EQ(o.exit_code, 0) << o.err;
    for (const auto& n : LoadModel(optimized).graph.nodes) fused[tag].insert(n.op_type);
  }
  EXPECT_EQ(fused["ptq"], fused["qat"]);
  EXPECT_GT(fused["qat"].count("QLinearConv"), 0u);
  const Measured mp = Measure(ptq, tmp, "ptq"), mq = Measure(qat, tmp, "qat");
  EXPECT_GE(mq.agreement, kMinAgreement);
  EXPECT_GE(mq.top1, mp.top1) << "post-training INT8 " << mp.top1;
}

// A half-width MLP (784-128-64-10) with He-initialised random weights from a fixed seed.
Model HalfWidthStudent(const Model& teacher) {
  Model m;
  m.ir_version = 8;
  m.opset_imports.push_back({"", 17});
  m.graph.name = "student";
  m.graph.inputs = {teacher.graph.RealInputs().at(0) != nullptr ? *teacher.graph.RealInputs()[0] : ValueInfo{}};
  m.graph.outputs = {teacher.graph.outputs.at(0)};
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const std::vector<std::pair<int64_t, int64_t>> layers = {{784, 128}, {128, 64}, {64, 10}};
  Node flat;
  flat.op_type = "Flatten";
  flat.name = "flatten";
  flat.inputs = {m.graph.inputs[0].name};
  flat.outputs = {"h0"};
  m.graph.nodes.push_back(flat);
  for (size_t l = 0; l < layers.size(); ++l) {
    const auto [in, out] = layers[l];
    Tensor w(DType::kFloat, {out, in}, "w" + std::to_string(l));
    for (int64_t i = 0; i < w.numel(); ++i) w.mutable_data<float>()[i] = normal(rng) * std::sqrt(2.0f / static_cast<float>(in));
    m.graph.initializers.push_back(w);
    m.graph.initializers.push_back(Tensor(DType::kFloat, {out}, "b" + std::to_string(l)));
    Node g;
    g.op_type = "Gemm";
    g.name = "fc" + std::to_string(l);
    g.inputs = {"h" + std::to_string(2 * l), w.name(), "b" + std::to_string(l)};
    g.attributes = {Attribute::Int("transB", 1)};
    const bool last = l + 1 == layers.size();
    g.outputs = {last ? m.graph.outputs[0].name : "g" + std::to_string(l)};
    m.graph.nodes.push_back(g);
    if (!last) {
      Node relu;
      relu.op_type = "Relu";
      relu.name = "relu" + std::to_string(l);
      relu.inputs = g.outputs;
      relu.outputs = {"h" + std::to_string(2 * l + 2)};
      m.graph.nodes.push_back(relu);
    }
  }
  return m;
}

TEST(FinetuneModel, StudentDistilledFromRandomWeightsBeatsLabelsAlone) {
  testing::TempDir tmp;
  const Model teacher = LoadModel(Sample("mlp"));
  SaveModel(HalfWidthStudent(teacher), tmp / "student.onnx");
  const Measured orig = Measure(Sample("mlp"), tmp, "teacher");
  std::map<std::string, Measured> got;
  for (const std::string mode : {"distilled", "labels"}) {
    std::vector<std::string> args = {Sample("mlp"), "--student", tmp / "student.onnx", "--finetune", Train(),
                                     "--epochs", "5", "-o", tmp / (mode + ".onnx"), "-q"};
    // Distillation at T = 2 (the default 4 softens this weak teacher's targets too much for a student
    // from scratch: on a student of the same shape, 5 epochs gave 88.65 % at T = 4, 88.79 % at T = 2,
    // 88.48 % on labels alone).
    const std::vector<std::string> extra = mode == "labels" ? std::vector<std::string>{"--label-weight", "1"}
                                                             : std::vector<std::string>{"--temperature", "2"};
    args.insert(args.end(), extra.begin(), extra.end());
    const auto r = testing::RunCompress(args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    got[mode] = Measure(tmp / (mode + ".onnx"), tmp, mode);
    EXPECT_GE(got[mode].agreement, kMinAgreement) << mode;
  }
  EXPECT_GE(got["distilled"].top1, orig.top1 - kStudentDropPts / 100.0) << "teacher " << orig.top1;
  EXPECT_GE(got["distilled"].top1, got["labels"].top1);
  // The output is the student: half the teacher's parameters (the teacher's 235,146 against 109,386).
  const Model out = LoadModel(tmp / "distilled.onnx");
  int64_t params = 0;
  for (const auto& t : out.graph.initializers) params += t.numel();
  EXPECT_EQ(params, 784 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10);
}

}  // namespace
}  // namespace compress
