#include "compress/eval/compare.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <unordered_map>
#include <unordered_set>

#include "compress/exec/executor.h"
#include "compress/util/error.h"
#include "compress/util/half.h"

namespace compress {

namespace {

// Output 0 of every sample must match in shape between the two models for the fidelity measures.
void CheckComparable(const EvalResult& a, const EvalResult& b) {
  if (a.outputs.empty() || b.outputs.empty() || a.outputs[0].sample_shape != b.outputs[0].sample_shape ||
      a.output0.size() != b.output0.size()) {
    ThrowInvalid("cannot compare the models: their first outputs differ in shape");
  }
}

EvalResult Run(const Model& model, const Dataset& data, const CompareOptions& options) {
  ExecutorOptions exec_opt;
  exec_opt.threads = options.threads;
  EvalOptions eval_opt;
  eval_opt.batch = options.batch;
  eval_opt.limit = options.limit;
  eval_opt.progress = options.progress;
  eval_opt.keep_outputs = true;
  Executor exec(model, exec_opt);
  return Evaluate(exec, data, eval_opt);
}

// The first `samples` samples of an evaluation: predictions, output 0 and top-1 recounted over them.
EvalResult Prefix(const EvalResult& r, const Dataset& data, int64_t samples) {
  if (samples >= r.samples) return r;
  EvalResult p = r;
  p.samples = samples;
  p.skipped = 0;
  p.predictions.resize(static_cast<size_t>(samples));
  const size_t per_sample = r.samples > 0 ? r.output0.size() / static_cast<size_t>(r.samples) : 0;
  p.output0.resize(per_sample * static_cast<size_t>(samples));
  if (r.has_labels) {
    p.correct = 0;
    for (int64_t i = 0; i < samples; ++i) {
      p.correct += data.labels()[static_cast<size_t>(i)] == r.predictions[static_cast<size_t>(i)];
    }
    p.top1 = samples > 0 ? static_cast<double>(p.correct) / static_cast<double>(samples) : 0.0;
  }
  return p;
}

}  // namespace

OutputFidelity CompareOutputs(const EvalResult& a, const EvalResult& b) {
  OutputFidelity f;
  int64_t agree = 0;
  for (size_t i = 0; i < a.predictions.size() && i < b.predictions.size(); ++i) agree += a.predictions[i] == b.predictions[i];
  f.agreement = a.samples > 0 ? static_cast<double>(agree) / static_cast<double>(a.samples) : 0.0;
  const size_t per_sample = a.samples > 0 ? a.output0.size() / static_cast<size_t>(a.samples) : 0;
  double cosine_sum = 0;
  for (int64_t s = 0; s < a.samples; ++s) {
    double dot = 0, na = 0, nb = 0;
    for (size_t k = 0; k < per_sample; ++k) {
      const double x = a.output0[static_cast<size_t>(s) * per_sample + k];
      const double y = b.output0[static_cast<size_t>(s) * per_sample + k];
      dot += x * y;
      na += x * x;
      nb += y * y;
      f.signal += x * x;
      f.noise += (x - y) * (x - y);
      f.max_abs_error = std::max(f.max_abs_error, std::abs(x - y));
    }
    // Two all-zero outputs are identical: count them as cosine 1.
    cosine_sum += (na == 0 && nb == 0) ? 1.0 : (na == 0 || nb == 0) ? 0.0 : dot / std::sqrt(na * nb);
  }
  f.cosine = a.samples > 0 ? cosine_sum / static_cast<double>(a.samples) : 0.0;
  f.sqnr_db = f.noise == 0 ? std::numeric_limits<double>::infinity() : 10.0 * std::log10(f.signal / f.noise);
  return f;
}

ReferenceEvaluation::ReferenceEvaluation(const Model& before, const Dataset& data, std::string data_label,
                                         const CompareOptions& options)
    : data_(data), label_(std::move(data_label)), options_(options), ref_(Run(before, data, options)) {}

ModelComparison ReferenceEvaluation::Compare(const Model& after) const { return Compare(after, options_.limit); }

ModelComparison ReferenceEvaluation::Compare(const Model& after, int64_t limit) const {
  CompareOptions o = options_;
  o.limit = limit;
  if (limit != options_.limit) o.progress = false;  // a quick look inside a longer search
  const EvalResult b = Run(after, data_, o);
  // The first `limit` samples of the reference: evaluation is per sample, so they are a prefix of it.
  const EvalResult a = limit == options_.limit ? ref_ : Prefix(ref_, data_, b.samples);
  CheckComparable(a, b);
  ModelComparison c;
  c.data = label_;
  c.samples = a.samples;
  c.skipped = a.skipped;
  c.batch = a.batch;
  c.labelled = a.has_labels;
  c.top1_before = a.top1;
  c.top1_after = b.top1;
  const OutputFidelity f = CompareOutputs(a, b);
  c.agreement = f.agreement;
  c.cosine = f.cosine;
  c.sqnr_db = f.sqnr_db;
  c.max_abs_error = f.max_abs_error;
  c.ms_per_sample_before = a.samples_per_second > 0 ? 1000.0 / a.samples_per_second : 0.0;
  c.ms_per_sample_after = b.samples_per_second > 0 ? 1000.0 / b.samples_per_second : 0.0;
  c.integer_groups_after = b.integer_groups;
  return c;
}

std::vector<LayerSqnr> CompareLayers(const Model& before, const Model& after, const Dataset& data, int64_t samples,
                                     int threads) {
  std::vector<LayerSqnr> layers;
  std::unordered_map<std::string, size_t> index;
  std::unordered_set<std::string> after_values;
  for (const auto& n : after.graph.nodes) {
    for (const auto& o : n.outputs) after_values.insert(o);
  }
  for (const auto& n : before.graph.nodes) {
    if (n.op_type == "Constant") continue;
    for (const auto& o : n.outputs) {
      if (!o.empty() && after_values.count(o) && !index.count(o)) {
        index[o] = layers.size();
        layers.push_back({o, n.op_type, 0});
      }
    }
  }
  if (layers.empty()) return layers;
  std::vector<double> signal(layers.size(), 0), noise(layers.size(), 0);
  // A value whose size or element type changed (a pruned layer's output, an integer shape) cannot be
  // compared element by element: it is left out, not reported as identical.
  std::vector<char> compared(layers.size(), 0), incomparable(layers.size(), 0);
  ExecutorOptions opt;
  opt.threads = threads;
  Executor ea(before, opt), eb(after, opt);
  // Small batches: the reference copy of every layer's values is held while the second model runs, next
  // to that model's own buffers. At 32 samples this step set the peak memory of a whole INT8 run of the
  // sample CNN, and how high depended on malloc's layout of those large blocks, not on the data.
  constexpr int64_t kBatch = 8;
  // Reference values of the current batch, by layer; compared as the second model produces its own.
  std::vector<std::vector<float>> ref(layers.size());
  for (const SampleRange& range : data.PlanBatches(samples, kBatch).batches) {
    const std::vector<Tensor> inputs = data.ReadSamples(range.first, range.count);
    for (auto& r : ref) r.clear();
    const ValueObserver keep = [&](const std::string& name, const Tensor& v) {
      const auto it = index.find(name);
      if (it != index.end() && v.dtype() == DType::kFloat) {
        ref[it->second].assign(v.data<float>(), v.data<float>() + v.numel());
      }
    };
    ea.Run(inputs, &keep);
    const ValueObserver compare = [&](const std::string& name, const Tensor& v) {
      const auto it = index.find(name);
      if (it == index.end()) return;
      const std::vector<float>& r = ref[it->second];
      if (static_cast<int64_t>(r.size()) != v.numel() || (v.dtype() != DType::kFloat && v.dtype() != DType::kFloat16)) {
        incomparable[it->second] = 1;
        return;
      }
      compared[it->second] = 1;
      for (int64_t i = 0; i < v.numel(); ++i) {
        double y;
        if (v.dtype() == DType::kFloat) y = v.data<float>()[i];
        else y = HalfToFloat(static_cast<const uint16_t*>(v.raw())[i]);
        const double x = r[static_cast<size_t>(i)];
        signal[it->second] += x * x;
        noise[it->second] += (x - y) * (x - y);
      }
    };
    eb.Run(inputs, &compare);
  }
  std::vector<LayerSqnr> kept;
  for (size_t i = 0; i < layers.size(); ++i) {
    if (!compared[i] || incomparable[i]) continue;
    layers[i].sqnr_db = noise[i] == 0 ? std::numeric_limits<double>::infinity()
                                      : 10.0 * std::log10(std::max(signal[i], 1e-300) / noise[i]);
    kept.push_back(layers[i]);
  }
  return kept;
}

}  // namespace compress
