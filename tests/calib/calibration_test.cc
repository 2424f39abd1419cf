#include "compress/calib/calibration.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "compress/exec/executor.h"
#include "compress/io/onnx_io.h"
#include "compress/util/error.h"
#include "support/test_support.h"

namespace compress {
namespace {

TensorStats StatsOf(const std::vector<float>& v, size_t chunk = 0) {
  TensorStats s;
  s.hist.assign(kDefaultHistogramBins, 0);
  if (chunk == 0) chunk = v.size();
  for (size_t i = 0; i < v.size(); i += chunk) {
    s.Observe(v.data() + i, static_cast<int64_t>(std::min(chunk, v.size() - i)));
  }
  return s;
}

std::vector<float> Gaussian(size_t n, double sigma, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> d(0.0, sigma);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(d(rng));
  return v;
}

int64_t HistTotal(const TensorStats& s) {
  int64_t t = 0;
  for (int64_t c : s.hist) t += c;
  return t;
}

TEST(Calibration, ObserveCountsFiniteValuesOnly) {
  const float inf = std::numeric_limits<float>::infinity();
  const TensorStats s = StatsOf({1.5f, -2.0f, std::nanf(""), inf, -inf, 0.25f});
  EXPECT_EQ(s.count, 3);
  EXPECT_EQ(s.non_finite, 3);
  EXPECT_DOUBLE_EQ(s.min, -2.0);
  EXPECT_DOUBLE_EQ(s.max, 1.5);
  EXPECT_EQ(HistTotal(s), 3);
  EXPECT_DOUBLE_EQ(s.hist_range, 2.0);  // power of two >= max |x|
}

TEST(Calibration, StatisticsDoNotDependOnBatchBoundariesOrMerging) {
  // Small values first, so the histogram range has to double several times while streaming.
  std::vector<float> v = Gaussian(5000, 0.01, 1);
  const std::vector<float> wide = Gaussian(5000, 3.0, 2);
  v.insert(v.end(), wide.begin(), wide.end());
  const TensorStats whole = StatsOf(v);
  for (size_t chunk : {1u, 7u, 100u, 4999u}) {
    const TensorStats streamed = StatsOf(v, chunk);
    EXPECT_EQ(streamed.hist, whole.hist) << chunk;
    EXPECT_EQ(streamed.hist_range, whole.hist_range);
    EXPECT_EQ(streamed.count, whole.count);
  }
  TensorStats a = StatsOf(std::vector<float>(v.begin(), v.begin() + 5000));
  const TensorStats b = StatsOf(std::vector<float>(v.begin() + 5000, v.end()));
  a.Merge(b);
  EXPECT_EQ(a.hist, whole.hist);
  EXPECT_EQ(a.min, whole.min);
  EXPECT_EQ(a.max, whole.max);
}

TEST(Calibration, DegenerateStatisticsNeverGiveZeroOrInfiniteRanges) {
  const std::vector<TensorStats> cases = {
      StatsOf({}), StatsOf({0, 0, 0, 0}), StatsOf({std::nanf(""), std::nanf("")}), StatsOf({5, 5, 5}),
      StatsOf({-3, -3}), StatsOf({1e-30f, 1e-30f})};
  for (CalibMethod m : {CalibMethod::kMinMax, CalibMethod::kPercentile, CalibMethod::kEntropy, CalibMethod::kMse}) {
    for (bool symmetric : {false, true}) {
      for (size_t i = 0; i < cases.size(); ++i) {
        RangeOptions opt;
        opt.method = m;
        opt.symmetric = symmetric;
        const QuantRange r = ComputeRange(cases[i], opt);
        SCOPED_TRACE(std::string(CalibMethodName(m)) + " case " + std::to_string(i));
        EXPECT_TRUE(std::isfinite(r.lo) && std::isfinite(r.hi));
        EXPECT_LE(r.lo, 0.0f);
        EXPECT_GE(r.hi, 0.0f);
        EXPECT_GE(static_cast<double>(r.hi) - r.lo, 1e-6 * 0.999);
      }
    }
  }
  // A constant tensor's range still holds the constant.
  RangeOptions minmax;
  EXPECT_FLOAT_EQ(ComputeRange(cases[3], minmax).hi, 5.0f);
  EXPECT_FLOAT_EQ(ComputeRange(cases[4], minmax).lo, -3.0f);
}

TEST(Calibration, MinMaxIncludesZero) {
  RangeOptions opt;
  const QuantRange r = ComputeRange(StatsOf({0.5f, 2.0f}), opt);
  EXPECT_FLOAT_EQ(r.lo, 0.0f);
  EXPECT_FLOAT_EQ(r.hi, 2.0f);
  opt.symmetric = true;
  const QuantRange s = ComputeRange(StatsOf({-0.5f, 2.0f}), opt);
  EXPECT_FLOAT_EQ(s.lo, -2.0f);
  EXPECT_FLOAT_EQ(s.hi, 2.0f);
}

TEST(Calibration, PercentileIgnoresRareOutliers) {
  // 100,000 values uniform in [0, 1) and one at 1000 (after a Relu: one-sided).
  std::vector<float> v(100000);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i) / static_cast<float>(v.size());
  v.push_back(1000.0f);
  RangeOptions opt;
  opt.method = CalibMethod::kPercentile;
  opt.percentile = 99.99;
  const QuantRange r = ComputeRange(StatsOf(v), opt);
  EXPECT_FLOAT_EQ(r.lo, 0.0f);
  // The 99.99th percentile of U[0,1) is 0.9999; one histogram bin is 1024/1024 = 1 wide at this range,
  // so the answer is within a bin of it.
  EXPECT_GT(r.hi, 0.5f);
  EXPECT_LT(r.hi, 2.0f);
  opt.percentile = 100.0;
  EXPECT_NEAR(ComputeRange(StatsOf(v), opt).hi, 1000.0f, 1.0f);
}

double MseOf(const std::vector<float>& v, QuantRange r) {
  const double scale = (static_cast<double>(r.hi) - r.lo) / 255.0;
  double e = 0;
  for (float x : v) {
    const double q = std::clamp(std::round((x - r.lo) / scale), 0.0, 255.0);
    const double d = x - (r.lo + q * scale);
    e += d * d;
  }
  return e / static_cast<double>(v.size());
}

TEST(Calibration, EntropyAndMseClipHeavyTailsAndLowerTheError) {
  // Laplacian-like data: most mass near zero, a long tail.
  std::mt19937 rng(7);
  std::exponential_distribution<double> e(1.0);
  std::vector<float> v(200000);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>((i % 2 ? 1 : -1) * e(rng));
  const TensorStats s = StatsOf(v);
  RangeOptions minmax;
  const QuantRange full = ComputeRange(s, minmax);
  for (CalibMethod m : {CalibMethod::kEntropy, CalibMethod::kMse}) {
    RangeOptions opt;
    opt.method = m;
    const QuantRange r = ComputeRange(s, opt);
    SCOPED_TRACE(CalibMethodName(m));
    EXPECT_LT(r.hi, full.hi * 0.9f);   // the tail is clipped
    EXPECT_GT(r.hi, 3.0f);             // but not the bulk: P(|x| > 3) is 5%
    EXPECT_LT(MseOf(v, r), MseOf(v, full));
  }
}

TEST(Calibration, TableRoundTripsAndRejectsBadFiles) {
  CalibrationTable t;
  t.data_sha256 = std::string(64, 'a');
  t.samples = 3;
  t.tensors["x"] = StatsOf({1, -2, 3});
  t.tensors["empty"] = StatsOf({});
  testing::TempDir dir;
  t.Save(dir / "t.json");
  const CalibrationTable back = CalibrationTable::Load(dir / "t.json");
  EXPECT_EQ(back.ToJson(), t.ToJson());
  EXPECT_EQ(back.tensors.at("x").hist, t.tensors.at("x").hist);
  testing::WriteBytes(dir / "bad.json", R"({"schema": "compress.calib/1", "data_sha256": "", "samples": 1,
    "bins": 2048, "tensors": {"x": {"count": 1, "non_finite": 0, "min": 2, "max": 1, "hist_range": 1,
    "hist_offset": 0, "hist": []}}})");
  EXPECT_NE(testing::ErrorOf([&] { CalibrationTable::Load(dir / "bad.json"); }).find("tensor 'x': inconsistent"),
            std::string::npos);
  testing::WriteBytes(dir / "other.json", R"({"schema": "compress.eval/1"})");
  EXPECT_NE(testing::ErrorOf([&] { CalibrationTable::Load(dir / "other.json"); }).find("not a calibration table"),
            std::string::npos);
  EXPECT_NE(testing::ErrorOf([] { CalibMethodFromName("kl"); }).find("valid: minmax, percentile, entropy, mse"),
            std::string::npos);
}

TEST(Calibration, CalibrateOnTheSampleCnnMatchesDirectStatistics) {
  const Model m = LoadModel(testing::SourcePath("models/cnn.onnx"));
  const Dataset data = Dataset::Open(testing::SourcePath("models/calib"), ModelInputSpecs(m));
  const std::string conv = m.graph.nodes[0].outputs[0];
  CalibrateOptions opt;
  opt.batch = 50;  // not a divisor of 256: the last batch is short
  opt.progress = false;
  const CalibrationTable t = Calibrate(m, data, {"input", conv}, opt);
  EXPECT_EQ(t.samples, 256);
  EXPECT_EQ(t.data_sha256, DatasetSha256(data));
  EXPECT_EQ(t.tensors.at("input").count, 256 * 28 * 28);
  // The same statistics, computed from one run over all 256 samples.
  Executor exec(m);
  double lo = 1e30, hi = -1e30;
  int64_t n = 0;
  ValueObserver obs = [&](const std::string& name, const Tensor& v) {
    if (name != conv) return;
    for (int64_t i = 0; i < v.numel(); ++i) {
      lo = std::min(lo, double{v.data<float>()[i]});
      hi = std::max(hi, double{v.data<float>()[i]});
    }
    n += v.numel();
  };
  exec.Run(data.ReadSamples(0, 256), &obs);
  EXPECT_EQ(t.tensors.at(conv).count, n);
  EXPECT_DOUBLE_EQ(t.tensors.at(conv).min, lo);
  EXPECT_DOUBLE_EQ(t.tensors.at(conv).max, hi);
  EXPECT_NE(testing::ErrorOf([&] { Calibrate(m, data, {"no_such_value"}, opt); }).find("'no_such_value'"),
            std::string::npos);
}

TEST(Calibration, SourceSavesAndReusesTables) {
  const Model m = LoadModel(testing::SourcePath("models/cnn.onnx"));
  const Dataset data = Dataset::Open(testing::SourcePath("models/calib"), ModelInputSpecs(m));
  testing::TempDir dir;
  CalibrateOptions opt;
  opt.progress = false;
  opt.limit = 32;
  DataCalibrationSource first(&data, dir / "table.json", opt);
  const nlohmann::json made = first.Get(m, {"input"}).ToJson();
  EXPECT_FALSE(first.reused_table());
  // A second run reads the file, even without data.
  DataCalibrationSource second(nullptr, dir / "table.json", opt);
  EXPECT_EQ(second.Get(m, {"input"}).ToJson(), made);
  EXPECT_TRUE(second.reused_table());
  EXPECT_EQ(second.data_sha256(), DatasetSha256(data));
  const std::string err = testing::ErrorOf([&] { second.Get(m, {"input", "other"}); });
  EXPECT_NE(err.find("no statistics for tensor 'other'"), std::string::npos) << err;
  DataCalibrationSource none(nullptr, "", opt);
  EXPECT_NE(testing::ErrorOf([&] { none.Get(m, {"input"}); }).find("--calib"), std::string::npos);
}

// Per-channel sums of squares along any axis, with a short last batch, equal one run over all samples.
TEST(Calibration, ChannelSumSquaresMatchesDirectSums) {
  const Model m = LoadModel(testing::SourcePath("models/cnn.onnx"));
  const Dataset data = Dataset::Open(testing::SourcePath("models/calib"), ModelInputSpecs(m));
  const std::string conv = m.graph.nodes[0].outputs[0];
  CalibrateOptions opt;
  opt.batch = 50;
  opt.progress = false;
  const std::vector<ChannelSquares> got =
      ChannelSumSquares(m, data, {{"input", 1}, {conv, 1}, {conv, -1}, {"input", 2}}, opt);
  ASSERT_EQ(got.size(), 4u);
  Executor exec(m);
  Tensor conv_value;
  ValueObserver obs = [&](const std::string& name, const Tensor& v) {
    if (name == conv) conv_value = v;
  };
  const std::vector<Tensor> all = data.ReadSamples(0, 256);
  exec.Run(all, &obs);
  const auto& d = conv_value.dims();  // [256, C, H, W]
  ASSERT_EQ(d.size(), 4u);
  std::vector<double> by_channel(static_cast<size_t>(d[1]), 0.0), by_column(static_cast<size_t>(d[3]), 0.0);
  const float* v = conv_value.data<float>();
  for (int64_t i = 0; i < conv_value.numel(); ++i) {
    const double sq = double{v[i]} * double{v[i]};
    by_channel[static_cast<size_t>((i / (d[2] * d[3])) % d[1])] += sq;
    by_column[static_cast<size_t>(i % d[3])] += sq;
  }
  ASSERT_EQ(got[1].sum_sq.size(), by_channel.size());
  ASSERT_EQ(got[2].sum_sq.size(), by_column.size());
  // Summed in another order (per batch): equal to double rounding.
  constexpr double kSumRelTol = 1e-9;
  for (size_t c = 0; c < by_channel.size(); ++c) EXPECT_NEAR(got[1].sum_sq[c], by_channel[c], kSumRelTol * by_channel[c]);
  for (size_t c = 0; c < by_column.size(); ++c) EXPECT_NEAR(got[2].sum_sq[c], by_column[c], kSumRelTol * by_column[c]);
  EXPECT_EQ(got[1].count, 256 * d[2] * d[3]);
  EXPECT_EQ(got[0].sum_sq.size(), 1u);
  EXPECT_EQ(got[0].count, 256 * 28 * 28);
  EXPECT_EQ(got[3].sum_sq.size(), 28u);
  double input_total = 0, rows_total = 0;
  for (double x : got[0].sum_sq) input_total += x;
  for (double x : got[3].sum_sq) rows_total += x;
  EXPECT_NEAR(input_total, rows_total, kSumRelTol * input_total);
  EXPECT_GT(input_total, 0.0);
  EXPECT_NE(testing::ErrorOf([&] { ChannelSumSquares(m, data, {{"no_such_value", 1}}, opt); }).find("'no_such_value'"),
            std::string::npos);
  EXPECT_NE(testing::ErrorOf([&] { ChannelSumSquares(m, data, {{"input", 4}}, opt); }).find("no axis 4"),
            std::string::npos);
  DataCalibrationSource none(nullptr, "", opt);
  EXPECT_FALSE(none.has_data());
  EXPECT_NE(testing::ErrorOf([&] { none.ChannelSumSquares(m, {{"input", 1}}); }).find("--calib"), std::string::npos);
  DataCalibrationSource with(&data, "", opt);
  EXPECT_TRUE(with.has_data());
  EXPECT_EQ(with.ChannelSumSquares(m, {{conv, 1}})[0].sum_sq, got[1].sum_sq);
}

}  // namespace
}  // namespace compress
