#include "compress/calib/calibration.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "compress/exec/executor.h"
#include "compress/io/onnx_io.h"
#include "compress/util/error.h"
#include "compress/util/fs.h"
#include "compress/util/progress.h"
#include "compress/util/sha256.h"

namespace compress {

namespace {

using nlohmann::json;

// Ranges narrower than this are widened to it: a constant or all-zero tensor still gets a usable,
// finite scale (kMinRangeWidth / 255 ~ 4e-9) instead of 0.
constexpr double kMinRangeWidth = 1e-6;

// Smallest power of two >= v (v > 0), so that histogram ranges only ever double: a bin at range R is
// exactly two bins at range R/2, and merging gives the same histogram as binning at R directly.
double PowerOfTwoAtLeast(double v) {
  int e = 0;
  const double m = std::frexp(v, &e);  // v = m * 2^e, m in [0.5, 1)
  return m == 0.5 ? v : std::ldexp(1.0, e);
}

// Doubles the histogram's range: bins 2k and 2k+1 of the old range become bin B/4 + k of the new one.
void DoubleRange(TensorStats* s) {
  const size_t b = s->hist.size();
  std::vector<int64_t> merged(b, 0);
  for (size_t k = 0; k < b / 2; ++k) merged[b / 4 + k] = s->hist[2 * k] + s->hist[2 * k + 1];
  s->hist.swap(merged);
  s->hist_range *= 2;
}

// Counts of |x| over [0, hist_range] in B/2 bins, folding the symmetric histogram.
std::vector<double> AbsHistogram(const TensorStats& s) {
  const size_t b = s.hist.size(), half = b / 2;
  std::vector<double> h(half, 0.0);
  for (size_t k = 0; k < half; ++k) h[k] = static_cast<double>(s.hist[half + k] + s.hist[half - 1 - k]);
  return h;
}

double BinWidth(const TensorStats& s) { return 2.0 * s.hist_range / static_cast<double>(s.hist.size()); }

// Value below which `fraction` of the histogram's mass lies (linear inside a bin).
double Quantile(const TensorStats& s, double fraction) {
  double total = 0;
  for (int64_t c : s.hist) total += static_cast<double>(c);
  if (total <= 0) return 0;
  const double target = fraction * total;
  const double w = BinWidth(s);
  double cum = 0;
  for (size_t k = 0; k < s.hist.size(); ++k) {
    const double c = static_cast<double>(s.hist[k]);
    if (cum + c >= target && c > 0) {
      return -s.hist_range + w * (static_cast<double>(k) + (target - cum) / c);
    }
    cum += c;
  }
  return s.hist_range;
}

// Same for |x| (symmetric ranges).
double AbsQuantile(const TensorStats& s, double fraction) {
  const std::vector<double> h = AbsHistogram(s);
  double total = 0;
  for (double c : h) total += c;
  if (total <= 0) return 0;
  const double target = fraction * total;
  const double w = BinWidth(s);
  double cum = 0;
  for (size_t k = 0; k < h.size(); ++k) {
    if (cum + h[k] >= target && h[k] > 0) return w * (static_cast<double>(k) + (target - cum) / h[k]);
    cum += h[k];
  }
  return s.hist_range;
}

// TensorRT's entropy calibration: the threshold T (in bins of |x|) whose clipped-and-quantized
// distribution Q is closest to the clipped distribution P in KL divergence.
double EntropyThreshold(const std::vector<double>& hist, int levels, double bin_width) {
  const size_t n = hist.size();
  const size_t start = std::min(n, static_cast<size_t>(levels));
  size_t last_nonzero = 0;
  for (size_t k = 0; k < n; ++k) {
    if (hist[k] > 0) last_nonzero = k;
  }
  if (last_nonzero + 1 <= start) return static_cast<double>(last_nonzero + 1) * bin_width;
  double best_kl = std::numeric_limits<double>::infinity();
  size_t best = n;
  std::vector<double> p, q;
  for (size_t i = start; i <= last_nonzero + 1; ++i) {
    p.assign(hist.begin(), hist.begin() + static_cast<std::ptrdiff_t>(i));
    double outliers = 0;
    for (size_t k = i; k < n; ++k) outliers += hist[k];
    p[i - 1] += outliers;
    // Q: the i bins merged into `levels` groups, each group's mass spread over its non-empty bins.
    q.assign(i, 0.0);
    const double per = static_cast<double>(i) / static_cast<double>(levels);
    for (int g = 0; g < levels; ++g) {
      const size_t lo = static_cast<size_t>(std::floor(per * g));
      const size_t hi = std::min(i, static_cast<size_t>(std::floor(per * (g + 1))));
      double mass = 0;
      size_t nonzero = 0;
      for (size_t k = lo; k < hi; ++k) {
        mass += hist[k];
        nonzero += hist[k] > 0;
      }
      for (size_t k = lo; k < hi; ++k) q[k] = hist[k] > 0 ? mass / static_cast<double>(nonzero) : 0.0;
    }
    double sp = 0, sq = 0;
    for (size_t k = 0; k < i; ++k) {
      sp += p[k];
      sq += q[k];
    }
    if (sp <= 0 || sq <= 0) continue;
    double kl = 0;
    for (size_t k = 0; k < i; ++k) {
      if (p[k] <= 0) continue;
      const double pk = p[k] / sp;
      // Q has no mass where the clipped P has it (the outlier bin): a small epsilon keeps KL finite.
      const double qk = q[k] > 0 ? q[k] / sq : 1e-12;
      kl += pk * std::log(pk / qk);
    }
    if (kl < best_kl) {
      best_kl = kl;
      best = i;
    }
  }
  return static_cast<double>(best) * bin_width;
}

// Expected squared error of quantizing the histogram's values with range [lo, hi] and `levels` levels.
double QuantizationMse(const TensorStats& s, double lo, double hi, int levels) {
  const double scale = (hi - lo) / static_cast<double>(levels - 1);
  if (scale <= 0) return std::numeric_limits<double>::infinity();
  const double w = BinWidth(s);
  double err = 0;
  for (size_t k = 0; k < s.hist.size(); ++k) {
    if (s.hist[k] == 0) continue;
    const double x = -s.hist_range + w * (static_cast<double>(k) + 0.5);
    const double q = std::clamp(std::round((x - lo) / scale), 0.0, static_cast<double>(levels - 1));
    const double d = x - (lo + q * scale);
    err += static_cast<double>(s.hist[k]) * d * d;
  }
  return err;
}

QuantRange Finish(double lo, double hi) {
  lo = std::min(lo, 0.0);
  hi = std::max(hi, 0.0);
  if (!std::isfinite(lo)) lo = -std::numeric_limits<float>::max();
  if (!std::isfinite(hi)) hi = std::numeric_limits<float>::max();
  if (hi - lo < kMinRangeWidth) {
    if (hi > 0 || lo == 0) hi = lo + kMinRangeWidth;
    else lo = hi - kMinRangeWidth;
  }
  return {static_cast<float>(lo), static_cast<float>(hi)};
}

json StatsToJson(const TensorStats& s) {
  // Histograms are mostly empty: stored as [first_nonzero_bin, counts...] to keep tables small.
  size_t first = s.hist.size(), last = 0;
  for (size_t k = 0; k < s.hist.size(); ++k) {
    if (s.hist[k] != 0) {
      first = std::min(first, k);
      last = k;
    }
  }
  json counts = json::array();
  if (first <= last && first < s.hist.size()) {
    for (size_t k = first; k <= last; ++k) counts.push_back(s.hist[k]);
  } else {
    first = 0;
  }
  return {{"count", s.count}, {"non_finite", s.non_finite}, {"min", s.min}, {"max", s.max},
          {"hist_range", s.hist_range}, {"hist_offset", first}, {"hist", counts}};
}

// Integer field `key` of `j`: a JSON integer that fits int64 (a float, a string or 1e400 is an error).
int64_t IntField(const json& j, const char* key, const std::string& where) {
  const auto it = j.find(key);
  if (it == j.end()) ThrowInvalid(where + ": missing '" + key + "'");
  if (!it->is_number_integer() ||
      (it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))) {
    ThrowInvalid(where + ": '" + key + "' must be an integer, got " + it->dump());
  }
  return it->get<int64_t>();
}

double NumberField(const json& j, const char* key, const std::string& where) {
  const auto it = j.find(key);
  if (it == j.end()) ThrowInvalid(where + ": missing '" + key + "'");
  if (!it->is_number()) ThrowInvalid(where + ": '" + key + "' must be a number, got " + it->dump());
  return it->get<double>();
}

TensorStats StatsFromJson(const json& j, int bins, const std::string& where) {
  if (!j.is_object()) ThrowInvalid(where + ": expected an object of statistics");
  TensorStats s;
  s.count = IntField(j, "count", where);
  s.non_finite = IntField(j, "non_finite", where);
  s.min = NumberField(j, "min", where);
  s.max = NumberField(j, "max", where);
  s.hist_range = NumberField(j, "hist_range", where);
  const int64_t offset = IntField(j, "hist_offset", where);
  const auto counts = j.find("hist");
  if (counts == j.end() || !counts->is_array()) ThrowInvalid(where + ": 'hist' must be a list of counts");
  if (offset < 0 || offset > bins || counts->size() > static_cast<size_t>(bins - offset)) {
    ThrowInvalid(where + ": histogram of " + std::to_string(counts->size()) + " counts at offset " +
                 std::to_string(offset) + " does not fit " + std::to_string(bins) + " bins");
  }
  s.hist.assign(static_cast<size_t>(bins), 0);
  for (size_t k = 0; k < counts->size(); ++k) {
    const json& c = (*counts)[k];
    if (!c.is_number_integer() || (c.is_number_integer() && !c.is_number_unsigned() && c.get<int64_t>() < 0) ||
        (c.is_number_unsigned() && c.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))) {
      ThrowInvalid(where + ": histogram counts must be non-negative integers, got " + c.dump());
    }
    s.hist[static_cast<size_t>(offset) + k] = c.get<int64_t>();
  }
  if (s.count < 0 || s.non_finite < 0 || !(s.hist_range >= 0) || !std::isfinite(s.hist_range) ||
      !std::isfinite(s.min) || !std::isfinite(s.max) || s.min > s.max) {
    ThrowInvalid(where + ": inconsistent statistics");
  }
  return s;
}

}  // namespace

const char* CalibMethodName(CalibMethod m) {
  switch (m) {
    case CalibMethod::kMinMax: return "minmax";
    case CalibMethod::kPercentile: return "percentile";
    case CalibMethod::kEntropy: return "entropy";
    case CalibMethod::kMse: return "mse";
  }
  return "?";
}

CalibMethod CalibMethodFromName(const std::string& name) {
  for (CalibMethod m : {CalibMethod::kMinMax, CalibMethod::kPercentile, CalibMethod::kEntropy, CalibMethod::kMse}) {
    if (name == CalibMethodName(m)) return m;
  }
  ThrowUsage("unknown calibration method '" + name + "' (valid: minmax, percentile, entropy, mse)");
}

void TensorStats::Observe(const float* data, int64_t n) {
  double batch_absmax = 0;
  int64_t finite = 0;
  bool any = false;
  double lo = 0, hi = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float v = data[i];
    if (!std::isfinite(v)) {
      ++non_finite;
      continue;
    }
    ++finite;
    if (!any) {
      lo = hi = v;
      any = true;
    } else {
      lo = std::min(lo, double{v});
      hi = std::max(hi, double{v});
    }
    batch_absmax = std::max(batch_absmax, std::fabs(double{v}));
  }
  if (!any) return;
  if (count == 0) {
    min = lo;
    max = hi;
  } else {
    min = std::min(min, lo);
    max = std::max(max, hi);
  }
  if (hist.empty()) hist.assign(static_cast<size_t>(kDefaultHistogramBins), 0);
  if (batch_absmax > 0) {
    if (hist_range == 0) hist_range = PowerOfTwoAtLeast(batch_absmax);
    while (batch_absmax > hist_range) DoubleRange(this);
  } else if (hist_range == 0) {
    hist_range = 1.0;  // all zeros so far: any range holds them, in the middle bins
  }
  const double half = static_cast<double>(hist.size()) / 2.0;
  const double inv = half / hist_range;
  const int64_t last = static_cast<int64_t>(hist.size()) - 1;
  for (int64_t i = 0; i < n; ++i) {
    const float v = data[i];
    if (!std::isfinite(v)) continue;
    const int64_t k = static_cast<int64_t>(std::floor(double{v} * inv + half));
    ++hist[static_cast<size_t>(std::clamp<int64_t>(k, 0, last))];
  }
  count += finite;
}

void TensorStats::Merge(const TensorStats& other) {
  if (other.count == 0) {
    non_finite += other.non_finite;
    return;
  }
  if (count == 0) {
    const int64_t nf = non_finite;
    *this = other;
    non_finite += nf;
    return;
  }
  if (hist.size() != other.hist.size()) ThrowInternal("merging histograms of different bin counts");
  TensorStats o = other;
  while (hist_range < o.hist_range) DoubleRange(this);
  while (o.hist_range < hist_range) DoubleRange(&o);
  for (size_t k = 0; k < hist.size(); ++k) hist[k] += o.hist[k];
  count += o.count;
  non_finite += o.non_finite;
  min = std::min(min, o.min);
  max = std::max(max, o.max);
}

QuantRange ComputeRange(const TensorStats& s, const RangeOptions& opt) {
  if (s.count == 0) return Finish(0, kMinRangeWidth);
  double lo = s.min, hi = s.max;
  if (opt.symmetric) {
    const double m = std::max(std::fabs(lo), std::fabs(hi));
    lo = -m;
    hi = m;
  }
  const bool one_sided = s.min >= 0 && !opt.symmetric;
  switch (opt.method) {
    case CalibMethod::kMinMax:
      break;
    case CalibMethod::kPercentile: {
      const double tail = std::clamp(1.0 - opt.percentile / 100.0, 0.0, 1.0);
      if (opt.symmetric) {
        const double t = std::min(AbsQuantile(s, 1.0 - tail), hi);
        lo = -t;
        hi = t;
      } else if (one_sided) {
        hi = std::min(Quantile(s, 1.0 - tail), s.max);
      } else {
        lo = std::max(Quantile(s, tail / 2), s.min);
        hi = std::min(Quantile(s, 1.0 - tail / 2), s.max);
      }
      break;
    }
    case CalibMethod::kEntropy: {
      // Levels on one side of zero: half the type's for symmetric or signed data, all of them when the
      // data never goes below zero (uint8 after Relu).
      const int side_levels = one_sided ? opt.levels : opt.levels / 2;
      const double t = EntropyThreshold(AbsHistogram(s), side_levels, BinWidth(s));
      if (one_sided) {
        hi = std::min(t, s.max);
      } else {
        lo = std::max(-t, opt.symmetric ? -t : s.min);
        hi = std::min(t, opt.symmetric ? t : s.max);
      }
      break;
    }
    case CalibMethod::kMse: {
      // Shrinks the min/max range by a common factor; 100 candidates from 1% to 100%.
      double best = std::numeric_limits<double>::infinity(), best_f = 1.0;
      for (int step = 100; step >= 1; --step) {
        const double f = step / 100.0;
        const double e = QuantizationMse(s, std::min(lo * f, 0.0), std::max(hi * f, 0.0), opt.levels);
        if (e < best) {
          best = e;
          best_f = f;
        }
      }
      lo *= best_f;
      hi *= best_f;
      break;
    }
  }
  return Finish(lo, hi);
}

json CalibrationTable::ToJson() const {
  json tensors_json = json::object();
  for (const auto& [name, s] : tensors) tensors_json[name] = StatsToJson(s);
  return {{"schema", "compress.calib/1"}, {"data_sha256", data_sha256}, {"samples", samples}, {"bins", bins},
          {"tensors", tensors_json}};
}

CalibrationTable CalibrationTable::FromJson(const json& doc, const std::string& origin) {
  CalibrationTable t;
  if (!doc.is_object() || !doc.contains("schema") || doc["schema"] != "compress.calib/1") {
    ThrowInvalid(origin + ": not a calibration table (expected schema compress.calib/1)");
  }
  if (!doc.contains("data_sha256") || !doc["data_sha256"].is_string()) {
    ThrowInvalid(origin + ": 'data_sha256' must be a string");
  }
  t.data_sha256 = doc["data_sha256"].get<std::string>();
  t.samples = IntField(doc, "samples", origin);
  const int64_t bins = IntField(doc, "bins", origin);
  if (bins < 4 || bins % 4 != 0 || bins > kMaxHistogramBins) {
    ThrowInvalid(origin + ": bins must be a multiple of 4 between 4 and " + std::to_string(kMaxHistogramBins) +
                 ", got " + std::to_string(bins));
  }
  t.bins = static_cast<int>(bins);
  if (!doc.contains("tensors") || !doc["tensors"].is_object()) ThrowInvalid(origin + ": no 'tensors' object");
  const json& tensors = doc["tensors"];
  // Each tensor gets `bins` counts in memory, whatever its JSON holds: bound the total first.
  if (tensors.size() > static_cast<size_t>(kMaxTableHistogramEntries / bins)) {
    ThrowInvalid(origin + ": " + std::to_string(tensors.size()) + " tensors of " + std::to_string(bins) +
                 " bins exceed the limit of " + std::to_string(kMaxTableHistogramEntries) + " histogram counts");
  }
  for (auto it = tensors.begin(); it != tensors.end(); ++it) {
    t.tensors[it.key()] = StatsFromJson(it.value(), t.bins, origin + ": tensor '" + it.key() + "'");
  }
  return t;
}

void CalibrationTable::Save(const std::string& path) const { WriteFileAtomic(path, ToJson().dump(1) + "\n"); }

CalibrationTable CalibrationTable::Load(const std::string& path) {
  // Tables hold a sparse histogram per tensor: a few MB for large models; 1 GiB means a wrong file.
  const std::string text = ReadFileBytes(path, size_t{1} << 30);
  json doc;
  try {
    doc = json::parse(text);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for a number like 1e400
    ThrowInvalid(path + ": invalid JSON: " + e.what());
  }
  return FromJson(doc, path);
}

CalibrationTable Calibrate(const Model& model, const Dataset& data, const std::vector<std::string>& tensors,
                           const CalibrateOptions& options) {
  CalibrationTable table;
  table.bins = options.bins;
  table.data_sha256 = DatasetSha256(data);
  const std::set<std::string> wanted(tensors.begin(), tensors.end());
  std::unordered_map<std::string, TensorStats*> slots;
  for (const auto& name : wanted) {
    TensorStats& s = table.tensors[name];
    s.hist.assign(static_cast<size_t>(options.bins), 0);
    slots[name] = &s;
  }
  ExecutorOptions exec_opt;
  exec_opt.threads = options.threads;
  Executor executor(model, exec_opt);
  std::set<std::string> seen;
  auto observe = [&](const std::string& name, const Tensor& value) {
    auto it = slots.find(name);
    if (it == slots.end()) {
      if (!options.every_float_value || value.dtype() != DType::kFloat || name.empty()) return;
      TensorStats& s = table.tensors[name];
      s.hist.assign(static_cast<size_t>(options.bins), 0);
      it = slots.emplace(name, &s).first;
    }
    if (value.dtype() != DType::kFloat) {
      ThrowInvalid("calibration: value '" + name + "' is " + DTypeName(value.dtype()) + ", expected float32");
    }
    it->second->Observe(value.data<float>(), value.numel());
    seen.insert(name);
  };
  const ValueObserver observer = observe;
  // Batches as the model takes them: with a fixed batch, a remainder that cannot fill it is skipped.
  const BatchPlan plan = data.PlanBatches(options.limit, options.batch);
  const int64_t total = plan.samples;
  ProgressBar bar("calibrating", total, options.progress);
  for (const SampleRange& range : plan.batches) {
    const int64_t n = range.count;
    const std::vector<Tensor> inputs = data.ReadSamples(range.first, n);
    for (size_t i = 0; i < inputs.size() && i < executor.inputs().size(); ++i) {
      observe(executor.inputs()[i].name, inputs[i]);
    }
    executor.Run(inputs, &observer);
    bar.Advance(n);
  }
  bar.Finish();
  for (const auto& name : wanted) {
    if (!seen.count(name) && total > 0) {
      ThrowInvalid("calibration: the model computes no value named '" + name + "'");
    }
  }
  table.samples = total;
  return table;
}

std::vector<ChannelSquares> ChannelSumSquares(const Model& model, const Dataset& data,
                                              const std::vector<ChannelRequest>& requests,
                                              const CalibrateOptions& options) {
  std::vector<ChannelSquares> out(requests.size());
  std::unordered_map<std::string, std::vector<size_t>> by_name;
  for (size_t i = 0; i < requests.size(); ++i) by_name[requests[i].tensor].push_back(i);
  ExecutorOptions exec_opt;
  exec_opt.threads = options.threads;
  Executor executor(model, exec_opt);
  std::vector<bool> seen(requests.size(), false);
  auto observe = [&](const std::string& name, const Tensor& value) {
    const auto it = by_name.find(name);
    if (it == by_name.end()) return;
    if (value.dtype() != DType::kFloat) {
      ThrowInvalid("channel statistics: value '" + name + "' is " + DTypeName(value.dtype()) + ", expected float32");
    }
    const auto& dims = value.dims();
    const int64_t rank = value.rank();
    const float* v = value.data<float>();
    for (size_t i : it->second) {
      const int64_t axis = requests[i].axis < 0 ? requests[i].axis + rank : requests[i].axis;
      if (axis < 0 || axis >= rank) {
        ThrowInvalid("channel statistics: value '" + name + "' has rank " + std::to_string(rank) + ", no axis " +
                     std::to_string(requests[i].axis));
      }
      int64_t outer = 1, inner = 1;
      for (int64_t d = 0; d < axis; ++d) outer *= dims[static_cast<size_t>(d)];
      for (int64_t d = axis + 1; d < rank; ++d) inner *= dims[static_cast<size_t>(d)];
      const int64_t channels = dims[static_cast<size_t>(axis)];
      ChannelSquares& cs = out[i];
      if (!seen[i]) {
        cs.sum_sq.assign(static_cast<size_t>(channels), 0.0);
        cs.sum.assign(static_cast<size_t>(channels), 0.0);
        seen[i] = true;
      } else if (static_cast<int64_t>(cs.sum_sq.size()) != channels) {
        ThrowInvalid("channel statistics: value '" + name + "' has " + std::to_string(channels) + " channels on axis " +
                     std::to_string(axis) + ", earlier batches had " + std::to_string(cs.sum_sq.size()));
      }
      for (int64_t o = 0; o < outer; ++o) {
        for (int64_t c = 0; c < channels; ++c) {
          const float* p = v + (o * channels + c) * inner;
          double acc = 0, plain = 0;
          for (int64_t k = 0; k < inner; ++k) {
            acc += static_cast<double>(p[k]) * static_cast<double>(p[k]);
            plain += static_cast<double>(p[k]);
          }
          cs.sum_sq[static_cast<size_t>(c)] += acc;
          cs.sum[static_cast<size_t>(c)] += plain;
        }
      }
      cs.count += outer * inner;
    }
  };
  const ValueObserver observer = observe;
  const BatchPlan plan = data.PlanBatches(options.limit, options.batch);
  ProgressBar bar("measuring activations", plan.samples, options.progress);
  for (const SampleRange& range : plan.batches) {
    const std::vector<Tensor> inputs = data.ReadSamples(range.first, range.count);
    for (size_t i = 0; i < inputs.size() && i < executor.inputs().size(); ++i) {
      observe(executor.inputs()[i].name, inputs[i]);
    }
    executor.Run(inputs, &observer);
    bar.Advance(range.count);
  }
  bar.Finish();
  for (size_t i = 0; i < requests.size(); ++i) {
    if (!seen[i] && plan.samples > 0) {
      ThrowInvalid("channel statistics: the model computes no value named '" + requests[i].tensor + "'");
    }
  }
  return out;
}

std::vector<ChannelSquares> DataCalibrationSource::ChannelSumSquares(const Model& model,
                                                                     const std::vector<ChannelRequest>& requests) {
  if (data_ == nullptr) {
    return CalibrationSource::ChannelSumSquares(model, requests);  // throws: a saved table holds no channels
  }
  std::string key;
  if (reference_ != nullptr) {
    Sha256 h;
    const std::string bytes = SerializeModel(model);
    h.Update(bytes.data(), bytes.size());
    key = h.HexDigest();
    for (const auto& r : requests) key += "\n" + r.tensor + "@" + std::to_string(r.axis);
    const auto it = channel_cache_.find(key);
    if (it != channel_cache_.end()) return it->second;
  }
  ++channel_runs_;
  std::vector<ChannelSquares> result = compress::ChannelSumSquares(model, *data_, requests, options_);
  if (!key.empty()) channel_cache_[key] = result;
  return result;
}

void ForEachBatch(const Model& model, const Dataset& data, const std::vector<std::string>& tensors,
                  const std::function<void(size_t, const Tensor&)>& fn, const CalibrateOptions& options) {
  std::unordered_map<std::string, std::vector<size_t>> by_name;
  for (size_t i = 0; i < tensors.size(); ++i) by_name[tensors[i]].push_back(i);
  ExecutorOptions exec_opt;
  exec_opt.threads = options.threads;
  Executor executor(model, exec_opt);
  std::vector<bool> seen(tensors.size(), false);
  auto observe = [&](const std::string& name, const Tensor& value) {
    const auto it = by_name.find(name);
    if (it == by_name.end()) return;
    if (value.dtype() != DType::kFloat) {
      ThrowInvalid("activation statistics: value '" + name + "' is " + DTypeName(value.dtype()) + ", expected float32");
    }
    for (size_t i : it->second) {
      seen[i] = true;
      fn(i, value);
    }
  };
  const ValueObserver observer = observe;
  const BatchPlan plan = data.PlanBatches(options.limit, options.batch);
  ProgressBar bar("measuring activations", plan.samples, options.progress);
  for (const SampleRange& range : plan.batches) {
    const std::vector<Tensor> inputs = data.ReadSamples(range.first, range.count);
    for (size_t i = 0; i < inputs.size() && i < executor.inputs().size(); ++i) {
      observe(executor.inputs()[i].name, inputs[i]);
    }
    executor.Run(inputs, &observer);
    bar.Advance(range.count);
  }
  bar.Finish();
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (!seen[i] && plan.samples > 0) {
      ThrowInvalid("activation statistics: the model computes no value named '" + tensors[i] + "'");
    }
  }
}

void DataCalibrationSource::ForEachBatch(const Model& model, const std::vector<std::string>& tensors,
                                         const std::function<void(size_t, const Tensor&)>& fn) {
  if (data_ == nullptr) {
    CalibrationSource::ForEachBatch(model, tensors, fn);  // throws: a saved table holds no activations
    return;
  }
  ++batch_runs_;
  compress::ForEachBatch(model, *data_, tensors, fn, options_);
}

DataCalibrationSource::DataCalibrationSource(const Dataset* data, std::string table_path, CalibrateOptions options)
    : data_(data), table_path_(std::move(table_path)), options_(options) {}

const CalibrationTable& DataCalibrationSource::Get(const Model& model, const std::vector<std::string>& tensors) {
  // Runs of the same recipe with more nodes kept in float (accuracy fallback) ask for a subset.
  const bool covered = !table_.tensors.empty() && std::all_of(tensors.begin(), tensors.end(), [&](const std::string& n) {
    return table_.tensors.count(n) > 0;
  });
  if (covered) return table_;
  if (!table_path_.empty() && FileExists(table_path_)) {
    table_ = CalibrationTable::Load(table_path_);
    for (const auto& name : tensors) {
      if (!table_.tensors.count(name)) {
        ThrowInvalid(table_path_ + ": the calibration table has no statistics for tensor '" + name +
                     "' (it was made for another model or recipe; remove the file to calibrate again)");
      }
    }
    reused_ = true;
    return table_;
  }
  if (data_ == nullptr) ThrowUsage("static quantization needs calibration data (--calib DIR)");
  if (reference_ != nullptr) {
    if (table_.tensors.empty()) {
      // Every value of the reference, once; the values asked about that it computes too.
      std::vector<std::string> asked;
      std::unordered_set<std::string> computed;
      for (const auto& in : reference_->graph.inputs) computed.insert(in.name);
      for (const auto& n : reference_->graph.nodes) computed.insert(n.outputs.begin(), n.outputs.end());
      for (const auto& t : tensors) {
        if (computed.count(t)) asked.push_back(t);
      }
      CalibrateOptions all = options_;
      all.every_float_value = true;
      ++calibration_runs_;
      table_ = Calibrate(*reference_, *data_, asked, all);
    }
    std::vector<std::string> missing;
    for (const auto& t : tensors) {
      if (!table_.tensors.count(t)) missing.push_back(t);
    }
    if (!missing.empty()) {
      ++calibration_runs_;
      const CalibrationTable extra = Calibrate(model, *data_, missing, options_);
      for (const auto& [name, stats] : extra.tensors) table_.tensors[name] = stats;
    }
    if (!table_path_.empty()) table_.Save(table_path_);
    return table_;
  }
  ++calibration_runs_;
  table_ = Calibrate(model, *data_, tensors, options_);
  if (!table_path_.empty()) table_.Save(table_path_);
  return table_;
}

std::string DataCalibrationSource::data_sha256() const {
  if (!table_.data_sha256.empty()) return table_.data_sha256;
  return data_ != nullptr ? DatasetSha256(*data_) : std::string();
}

}  // namespace compress
