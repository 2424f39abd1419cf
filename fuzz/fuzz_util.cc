#include "fuzz_util.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "compress/io/onnx_io.h"
#include "compress/ir/graph.h"
#include "compress/pipeline/pipeline.h"
#include "compress/pipeline/recipe.h"
#include "compress/train/autodiff.h"
#include "compress/train/qat.h"
#include "compress/util/error.h"

namespace fuzz {

namespace {

using compress::Error;
using compress::Model;
using compress::Recipe;
using nlohmann::json;

// Folding may materialize a tensor no larger than this (the tool's default is 64 MiB): a few bytes of
// ConstantOfShape must not make every execution allocate and fill megabytes.
constexpr int64_t kMaxFoldedBytes = int64_t{1} << 20;

// Size of the external data file inputs may point into.
constexpr size_t kExternalFileBytes = 4096;

struct Scratch {
  std::string dir;
  Scratch() {
    const char* tmp = std::getenv("TMPDIR");
    std::string base = tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
    if (tmp == nullptr && std::filesystem::is_directory("/dev/shm")) base = "/dev/shm";
    std::string templ = base + "/compress-fuzz-XXXXXX";
    std::vector<char> buf(templ.begin(), templ.end());
    buf.push_back('\0');
    if (mkdtemp(buf.data()) == nullptr) {
      std::perror("mkdtemp");
      std::abort();
    }
    dir = buf.data();
    std::filesystem::create_directory(dir + "/ext");
    std::ofstream out(dir + "/ext/weights.bin", std::ios::binary);
    for (size_t i = 0; i < kExternalFileBytes; ++i) out.put(static_cast<char>(i * 37 % 251));
  }
  ~Scratch() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

Recipe CleanupRecipe() {
  // The default clean-up (Recipe::ExpandedSteps with optimize = true), with a smaller folding cap.
  Recipe r;
  r.name = "fuzz";
  r.optimize = false;
  for (const auto& step : Recipe{}.ExpandedSteps()) {
    json options = json::object();
    if (step.pass == "fold_constants") options["max_folded_bytes"] = kMaxFoldedBytes;
    r.steps.push_back(compress::MakeRecipeStep(step.pass, options, "fuzz"));
  }
  return r;
}

Recipe OneStep(const std::string& pass, const json& options) {
  Recipe r;
  r.name = "fuzz";
  r.optimize = false;
  r.steps.push_back(compress::MakeRecipeStep(pass, options, "fuzz"));
  return r;
}

const std::vector<Recipe>& CompressionRecipes() {
  static const std::vector<Recipe> recipes = {
      OneStep("fp16", json::object()),
      OneStep("fp16", {{"keep_io_types", false}, {"default_block_ops", false}}),
      OneStep("quantize", {{"mode", "dynamic"}}),
      OneStep("prune_channels", {{"ratio", 0.5}}),
      // One group's own ratio (--target-macs, `compress sensitivity`): the sample CNN's stem group and a
      // key no model has; the other groups at 0.25; without the consumers' least-squares re-fit.
      OneStep("prune_channels", {{"ratio", 0.25},
                                 {"group_ratios", {{"/stem/stem.0/Conv", 0.75}, {"none", 0.5}}},
                                 {"update", false}}),
      // Weights-only and static INT8 upgrade old opsets with ONNX's version converter, which costs
      // ~0.1 s per call under the sanitizers: one weights-only run (per channel) per input.
      OneStep("quantize", {{"mode", "weights_only"}}),
      // Pruning needs no data by magnitude: unstructured per layer, global, and 2:4.
      OneStep("prune", {{"method", "magnitude"}}),
      OneStep("prune", {{"method", "magnitude"}, {"global", true}, {"sparsity", 0.9}}),
      OneStep("prune", {{"method", "magnitude"}, {"pattern", "2:4"}, {"update", false}, {"exact_flops", 0.0}}),
      // One layer at a time (`compress sensitivity`): named layers of the sample models.
      OneStep("prune",
              {{"method", "magnitude"}, {"only_nodes", json::array({"/net/net.1/Gemm", "/conv2/conv2.0/Conv"})}}),
      // Low-rank factorization without data (plain SVD): per-layer ratio, a grid of 1 with the output
      // layers too, energy, and a parameter budget (one that cannot be met is an Error(kAccuracyGate)).
      OneStep("low_rank", {{"ratio", 0.5}}),
      OneStep("low_rank", {{"ratio", 0.25}, {"method", "svd"}, {"rank_multiple", 1}, {"keep_output_layers", false}}),
      OneStep("low_rank", {{"energy", 0.9}}),
      OneStep("low_rank", {{"params", 0.5}}),
  };
  return recipes;
}

// Largest number of input elements a training step feeds: bigger steps only slow the fuzzer down.
constexpr int64_t kMaxStepElements = int64_t{1} << 16;

// One forward and backward pass with respect to every trainable weight (what fine-tuning does each step),
// on inputs of the declared types with every free dimension 2; and the QAT rewrite and its undoing on a
// QDQ model. Missing backward rules and bad graphs are compress::Error.
void TrainStep(const Model& model) {
  if (model.graph.outputs.empty()) return;
  if (compress::train::HasQdq(model)) {
    Model q = model;
    const compress::train::QatState state = compress::train::PrepareQat(q);
    compress::train::FinishQat(q, state);
  }
  const std::vector<std::string> seeds = {model.graph.outputs[0].name};
  const std::vector<std::string> params = compress::train::Backprop::TrainableParameters(model, seeds);
  if (params.empty()) return;
  compress::train::BackpropOptions o;
  o.threads = 1;
  compress::train::Backprop bp(model, params, seeds, o);
  std::vector<compress::Tensor> inputs;
  int64_t elements = 0;
  for (const auto& in : bp.data_inputs()) {
    if (in.type.kind != compress::TypeInfo::Kind::kTensor || !in.type.has_shape) return;
    std::vector<int64_t> dims;
    for (const auto& d : in.type.shape) dims.push_back(d.is_fixed() ? *d.value : 2);
    const int64_t n = compress::ShapeElementCount(dims);
    elements += n;
    if (elements > kMaxStepElements) return;
    compress::Tensor t(in.type.elem_type, dims);
    if (t.dtype() == compress::DType::kFloat) {
      for (int64_t i = 0; i < n; ++i) t.mutable_data<float>()[i] = 0.25f * static_cast<float>(i % 7) - 0.5f;
    }
    inputs.push_back(t);
  }
  std::vector<compress::Tensor> values;
  for (const auto& p : params) values.push_back(*model.graph.FindInitializer(p));
  const compress::train::ValueMap fwd = bp.Forward(inputs, values);
  const auto out = fwd.find(seeds[0]);
  if (out == fwd.end() || (out->second.dtype() != compress::DType::kFloat && out->second.dtype() != compress::DType::kDouble)) {
    return;
  }
  compress::Tensor seed(out->second.dtype(), out->second.dims());
  if (seed.dtype() == compress::DType::kFloat) {
    for (int64_t i = 0; i < seed.numel(); ++i) seed.mutable_data<float>()[i] = 1.0f;
  }
  const std::vector<compress::Tensor> grads = bp.Backward(fwd, {seed});
  FUZZ_CHECK(grads.size() == params.size());
  for (size_t i = 0; i < grads.size(); ++i) FUZZ_CHECK(grads[i].dims() == values[i].dims());
}

}  // namespace

const std::string& ScratchDir() {
  static const Scratch scratch;
  return scratch.dir;
}

std::string WriteScratch(const std::string& name, const uint8_t* data, size_t size) {
  const std::string path = ScratchDir() + "/" + name;
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) {
    std::perror(path.c_str());
    std::abort();
  }
  if (size > 0 && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
  return path;
}

void RunModelPipeline(const std::string& bytes) {
  static const Recipe cleanup = CleanupRecipe();
  Model model;
  try {
    model = compress::ParseModel(bytes, ScratchDir() + "/ext", "fuzz.onnx");
    compress::RunPipeline(model, cleanup);
  } catch (const Error&) {
    return;
  }
  for (const Recipe& recipe : CompressionRecipes()) {
    Model m = model;
    try {
      compress::RunPipeline(m, recipe);
      (void)compress::SerializeModel(m);
    } catch (const Error&) {
    }
  }
  try {
    TrainStep(model);
  } catch (const Error&) {
  }
  try {
    compress::SaveOptions save;
    save.external_data = compress::SaveOptions::ExternalData::kAlways;
    save.external_threshold = 64;
    save.allow_overwrite = true;
    compress::SaveModel(model, ScratchDir() + "/out.onnx", save);
  } catch (const Error&) {
  }
}

}  // namespace fuzz
