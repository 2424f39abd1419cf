// `compress MODEL ... --finetune DIR` through the command line: flag checks, the error for an operator
// without a backward rule (before training, output untouched), byte-identical outputs across runs and
// thread counts, zeros kept, and the report's training section against the schema.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "compress/io/onnx_io.h"
#include "compress/util/fs.h"
#include "support/test_support.h"

namespace compress {
namespace {

using nlohmann::json;
using testing::RunCompress;
using testing::TempDir;

std::string Sample(const std::string& name) { return testing::SourcePath("models/" + name + ".onnx"); }
std::string Calib() { return testing::SourcePath("models/calib"); }

bool Has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

TEST(FinetuneCli, FlagsThatNeedFinetuneOrEachOtherAreUsageErrors) {
  TempDir dir;
  const std::string out = dir / "o.onnx";
  const std::vector<std::vector<std::string>> cases = {
      {"--epochs", "2"},
      {"--qat", "--int8", "--calib", Calib()},
      {"--prune", "0.5", "--prune-steps", "3"},
      {"--finetune", Calib(), "--prune-steps", "3"},
      {"--finetune", Calib(), "--label-weight", "1.5"},
      {"--finetune", Calib(), "--temperature", "0"},
      {"--finetune", Calib(), "--qat"},
      {"--finetune", Calib(), "--int8", "--dynamic", "--qat"},
      {"--finetune", Calib(), "--epochs", "0"},
  };
  for (const auto& c : cases) {
    std::vector<std::string> args = {Sample("mlp"), "-o", out};
    args.insert(args.end(), c.begin(), c.end());
    const auto r = RunCompress(args);
    EXPECT_EQ(r.exit_code, 2) << c[0] << " " << c[1] << ": " << r.err;
    EXPECT_FALSE(FileExists(out));
  }
}

TEST(FinetuneCli, OperatorWithoutBackwardRuleFailsBeforeTrainingNamingTheNode) {
  TempDir dir;
  Model m = LoadModel(Sample("mlp"));
  bool replaced = false;
  for (auto& n : m.graph.nodes) {
    if (n.op_type == "Relu" && !replaced) {
      n.op_type = "Selu";
      n.name = "the_selu";
      replaced = true;
    }
  }
  ASSERT_TRUE(replaced);
  SaveModel(m, dir / "selu.onnx");
  const auto r = RunCompress({dir / "selu.onnx", "--finetune", Calib(), "-o", dir / "o.onnx"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_TRUE(Has(r.err, "'the_selu' (Selu)")) << r.err;
  EXPECT_TRUE(Has(r.err, "no backward rule")) << r.err;
  EXPECT_FALSE(Has(r.err, "epoch")) << r.err;  // no training step ran
  EXPECT_FALSE(FileExists(dir / "o.onnx"));
}

TEST(FinetuneCli, SameCommandSameBytesWhateverTheThreadsAndZerosStay) {
  TempDir dir;
  std::vector<std::string> outputs;
  for (const std::string threads : {"1", "2", "2"}) {
    const std::string out = dir / ("o" + std::to_string(outputs.size()) + ".onnx");
    const auto r = RunCompress({Sample("mlp"), "--prune", "0.5", "--finetune", Calib(), "--epochs", "2", "--seed", "3",
                                "--threads", threads, "-o", out, "--report", out + ".json", "-q"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    outputs.push_back(out);
  }
  const std::string first = testing::ReadBytes(outputs[0]);
  for (size_t i = 1; i < outputs.size(); ++i) EXPECT_TRUE(first == testing::ReadBytes(outputs[i])) << outputs[i];
  // The weights changed (training ran) and every pruned zero is still zero.
  const Model orig = LoadModel(Sample("mlp"));
  const Model tuned = LoadModel(outputs[0]);
  const json report = json::parse(testing::ReadBytes(outputs[0] + ".json"));
  int64_t zeros = 0, changed = 0;
  for (const auto& t : tuned.graph.initializers) {
    if (t.rank() != 2) continue;
    for (int64_t i = 0; i < t.numel(); ++i) zeros += t.data<float>()[i] == 0.0f;
    const Tensor* o = orig.graph.FindInitializer(t.name());
    ASSERT_NE(o, nullptr) << t.name();
    for (int64_t i = 0; i < t.numel(); ++i) changed += t.data<float>()[i] != o->data<float>()[i];
  }
  int64_t pruned = 0;
  for (const auto& p : report["passes"]) {
    if (p["pass"] == "prune") pruned = p["counters"]["zeroed_values"].get<int64_t>();
  }
  EXPECT_GT(pruned, 100000);
  EXPECT_EQ(zeros, pruned);
  EXPECT_GT(changed, pruned / 2);
}

TEST(FinetuneCli, ReportHasTheTrainingSectionAndMatchesTheSchema) {
  TempDir dir;
  const auto r = RunCompress({Sample("mlp"), "--low-rank", "0.25", "--finetune", Calib(), "--epochs", "3", "--eval",
                              Calib(), "-o", dir / "o.onnx", "--report", dir / "r.json", "--report-md", dir / "r.md"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // One line per epoch off a terminal.
  EXPECT_TRUE(Has(r.err, "fine-tune epoch 1/3: loss ")) << r.err;
  EXPECT_TRUE(Has(r.err, "fine-tune epoch 3/3: loss ")) << r.err;
  EXPECT_TRUE(Has(r.out, "training    1 run, 3 epochs")) << r.out;
  const json rep = json::parse(testing::ReadBytes(dir / "r.json"));
  ASSERT_EQ(rep["training"].size(), 1u);
  const json& t = rep["training"][0];
  EXPECT_EQ(t["samples_per_epoch"], 256);
  EXPECT_EQ(t["steps"], 12);  // 4 batches of 64 per epoch
  EXPECT_EQ(t["labels"], true);
  EXPECT_EQ(t["label_weight"], 0.5);
  ASSERT_EQ(t["epochs"].size(), 3u);
  // Training on 256 images and measuring on the same ones: the loss falls and top-1 is measured per epoch.
  EXPECT_LT(t["epochs"][2]["loss"].get<double>(), t["epochs"][0]["loss"].get<double>());
  for (const auto& e : t["epochs"]) EXPECT_TRUE(e["eval_top1"].is_number());
  EXPECT_GT(t["peak_rss_bytes"].get<int64_t>(), 1 << 20);
  EXPECT_TRUE(Has(testing::ReadBytes(dir / "r.md"), "## Fine-tuning"));
  const auto v = testing::RunCommand({"node", testing::SourcePath("tests/ort/validate.js"),
                                      testing::SourcePath("docs/report.schema.json"), dir / "r.json"});
  EXPECT_EQ(v.exit_code, 0) << v.out << v.err;
}

// A classifier exported with its Softmax: distillation matches the logits feeding it (a softened softmax of
// probabilities is nearly flat), and the loss falls; --distill-loss mse matches output 0 itself.
TEST(FinetuneCli, ModelEndingInSoftmaxIsDistilledFromItsLogits) {
  TempDir dir;
  Model m = LoadModel(Sample("mlp"));
  const std::string logits = m.graph.outputs[0].name;
  Node softmax;
  softmax.name = "probs_softmax";
  softmax.op_type = "Softmax";
  softmax.inputs = {logits};
  softmax.outputs = {"probs"};
  m.graph.nodes.push_back(softmax);
  m.graph.outputs[0].name = "probs";
  SaveModel(m, dir / "probs.onnx");
  for (const std::string loss : {"kl", "mse"}) {
    SCOPED_TRACE(loss);
    const std::string out = dir / (loss + ".onnx");
    const auto r = RunCompress({dir / "probs.onnx", "--prune", "0.8", "--finetune", Calib(), "--label-weight", "0",
                                "--distill-loss", loss, "--epochs", "3", "-o", out, "--report", out + ".json", "-q"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const json rep = json::parse(testing::ReadBytes(out + ".json"));
    const json& t = rep["training"][0];
    EXPECT_EQ(t["distill_loss"], loss);
    EXPECT_EQ(t["distilled_value"], loss == "kl" ? logits : "probs");
    EXPECT_LT(t["epochs"][2]["loss"].get<double>(), t["epochs"][0]["loss"].get<double>());
    const auto v = testing::RunCommand({"node", testing::SourcePath("tests/ort/validate.js"),
                                        testing::SourcePath("docs/report.schema.json"), out + ".json"});
    EXPECT_EQ(v.exit_code, 0) << v.out << v.err;
  }
  const auto bad = RunCompress({dir / "probs.onnx", "--finetune", Calib(), "--distill-loss", "l1", "-o", dir / "x.onnx"});
  EXPECT_EQ(bad.exit_code, 2) << bad.err;
  EXPECT_TRUE(Has(bad.err, "--distill-loss must be kl or mse")) << bad.err;
}

TEST(FinetuneCli, StudentMustTakeTheTeachersInputs) {
  TempDir dir;
  SaveModel(testing::TinyModel(), dir / "tiny.onnx");
  const auto r = RunCompress({Sample("mlp"), "--finetune", Calib(), "--student", dir / "tiny.onnx", "-o", dir / "o.onnx"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_TRUE(Has(r.err, "the student must take the inputs of")) << r.err;
  EXPECT_FALSE(FileExists(dir / "o.onnx"));
}

}  // namespace
}  // namespace compress
