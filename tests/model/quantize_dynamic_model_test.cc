// Dynamic INT8 quantization of the sample models, judged by ONNX Runtime on the full Fashion-MNIST test
// set: the ONNX checker, top-1 against the float32 model's (models/manifest.json), and agreement of ONNX
// Runtime's predictions with our executor's on the same quantized model.

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "compress/eval/evaluate.h"
#include "compress/exec/executor.h"
#include "compress/io/dataset.h"
#include "compress/io/npy.h"
#include "compress/io/onnx_io.h"
#include "compress/ir/verify.h"
#include "compress/passes/pass.h"
#include "compress/passes/quantize_dynamic.h"
#include "support/test_support.h"

namespace compress {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing::SourcePath;

// The acceptance bound: dynamic INT8 may move top-1 (ONNX Runtime, all 10,000 test images) by at most
// 0.5 points from the float32 model's top-1 in the manifest.
constexpr double kTop1Tolerance = 0.005;
// ONNX Runtime and our executor run the same quantized model; they compute the same integer products and
// differ only where float rounding flips a DynamicQuantizeLinear tie or two nearly equal logits: at most
// 0.5% of the images may get different predictions.
constexpr double kMinAgreement = 0.995;

std::string TestDataDir() { return std::string(COMPRESS_TEST_DATA_DIR) + "/fmnist-test"; }

json Manifest() {
  std::ifstream f(SourcePath("models/manifest.json"));
  return json::parse(f);
}

// The default clean-up the pipeline runs before any compression pass.
void CleanUp(Model& m) {
  for (const auto& info : AllPasses()) {
    if (!info.cleanup) continue;
    PassContext ctx;
    info.create(ValidatePassOptions(info, json::object(), "test"))->Run(m, ctx);
  }
}

struct Case {
  std::string name;
  int64_t matmul_integer;  // MatMul and Gemm nodes with a constant weight
  int64_t conv_integer;
  int64_t float_nodes;  // MatMul of two activations (attention scores and their product with V)
};

// Every quantized weight shrinks 4x; what stays float32 (biases, LayerNorm parameters, position embeddings)
// and the graph itself (names, the added nodes) keep the attention models, whose weights are a smaller share
// of the file, near 2.3-2.8x. 2x says the weights really went to 8 bits.
constexpr double kMinSizeRatio = 2.0;

TEST(QuantizeDynamicModel, SampleModelsKeepTop1InOnnxRuntime) {
  const json manifest = Manifest();
  testing::TempDir tmp;
  const std::vector<Case> cases = {
      {"mlp", 3, 0, 0}, {"cnn", 1, 5, 0}, {"vit", 9, 1, 4}, {"attention_op9", 6, 0, 2}};
  for (const Case& c : cases) {
    json entry;
    for (const auto& e : manifest["models"]) {
      if (e["name"] == c.name) entry = e;
    }
    ASSERT_TRUE(entry.is_object()) << c.name;
    const std::string path = SourcePath("models/" + entry["file"].get<std::string>());
    SCOPED_TRACE(path);
    Model m = LoadModel(path);
    const int64_t opset = m.OpsetVersion("");
    CleanUp(m);
    PassContext ctx;
    QuantizeDynamic(m, {{"per_channel", true}}, ctx);
    VerifyModel(m);
    const std::string out = tmp / (c.name + ".onnx");
    SaveModel(m, out);
    const CheckResult check = CheckModelFile(out);
    EXPECT_TRUE(check.ok) << check.message;
    EXPECT_EQ(m.OpsetVersion(""), std::max<int64_t>(opset, 11));

    auto counter = [&](const char* key) {
      auto it = ctx.counters().find(key);
      return it == ctx.counters().end() ? int64_t{0} : it->second;
    };
    for (const auto& note : ctx.notes()) std::cout << "[dynamic] " << c.name << ": " << note << "\n";

    const auto r = testing::RunOrt({"eval", out, TestDataDir() + "/images.npy", TestDataDir() + "/labels.npy",
                                    "--preds", tmp / (c.name + "_preds.npy"), "--threads", "2"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const json ort = json::parse(r.out);
    const Tensor ort_preds = ReadNpy(tmp / (c.name + "_preds.npy"));

    const Dataset data = Dataset::Open(TestDataDir(), ModelInputSpecs(m));
    Executor exec(m);
    EvalOptions opt;
    opt.progress = false;
    const EvalResult ours = Evaluate(exec, data, opt);
    ASSERT_EQ(ours.samples, ort_preds.numel());
    int64_t agree = 0;
    for (int64_t i = 0; i < ort_preds.numel(); ++i) {
      agree += ort_preds.data<int64_t>()[i] == ours.predictions[static_cast<size_t>(i)];
    }

    const double fp32_top1 = entry["fp32_top1"].get<double>();
    const double int8_top1 = ort["top1"].get<double>();
    const double ratio = static_cast<double>(fs::file_size(path)) / static_cast<double>(fs::file_size(out));
    std::cout << "[dynamic] " << c.name << ": " << fs::file_size(path) << " -> " << fs::file_size(out)
              << " bytes, ratio " << ratio << "; top-1 fp32 " << fp32_top1 << ", int8 ONNX Runtime "
              << int8_top1 << ", int8 ours " << ours.top1 << "; agreement " << agree << "/"
              << ort_preds.numel() << "; matmul_integer " << counter("matmul_integer") << ", conv_integer "
              << counter("conv_integer") << ", float nodes " << counter("float_nodes") << "\n";
    EXPECT_EQ(ort["samples"].get<int64_t>(), 10000);
    EXPECT_NEAR(int8_top1, fp32_top1, kTop1Tolerance);
    EXPECT_GE(static_cast<double>(agree), kMinAgreement * static_cast<double>(ort_preds.numel()));
    EXPECT_GE(ratio, kMinSizeRatio);
    EXPECT_EQ(counter("matmul_integer"), c.matmul_integer);
    EXPECT_EQ(counter("conv_integer"), c.conv_integer);
    EXPECT_EQ(counter("float_nodes"), c.float_nodes);
  }
}

}  // namespace
}  // namespace compress
