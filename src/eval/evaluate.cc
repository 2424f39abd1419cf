#include "compress/eval/evaluate.h"

#include <chrono>
#include <cmath>
#include <limits>

#include "compress/util/error.h"
#include "compress/util/half.h"
#include "compress/util/progress.h"

namespace compress {

namespace {

// Per-output running moments (Welford), so memory does not grow with the number of samples.
struct Moments {
  int64_t n = 0;
  double mean = 0, m2 = 0;
  double min = std::numeric_limits<double>::infinity(), max = -std::numeric_limits<double>::infinity();
  int64_t non_finite = 0;
  void Add(double x) {
    if (!std::isfinite(x)) {
      ++non_finite;
      return;
    }
    ++n;
    const double d = x - mean;
    mean += d / static_cast<double>(n);
    m2 += d * (x - mean);
    min = std::min(min, x);
    max = std::max(max, x);
  }
};

double ElementAsDouble(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::kFloat: return t.data<float>()[i];
    case DType::kDouble: return t.data<double>()[i];
    case DType::kFloat16: return HalfToFloat(static_cast<const uint16_t*>(t.raw())[i]);
    case DType::kInt64: return static_cast<double>(t.data<int64_t>()[i]);
    case DType::kInt32: return t.data<int32_t>()[i];
    case DType::kInt8: return t.data<int8_t>()[i];
    case DType::kUInt8: return t.data<uint8_t>()[i];
    case DType::kBool: return static_cast<const uint8_t*>(t.raw())[i];
    default: return std::numeric_limits<double>::quiet_NaN();
  }
}

// The axis of `out` that holds the `count` samples of a run: the declared batch axis; with one sample per
// run, -1 (the whole output belongs to the sample) when the output has no such axis.
int SampleAxis(const Tensor& out, int declared, int64_t count) {
  if (declared < out.rank() && out.dims()[static_cast<size_t>(declared)] == count) return declared;
  if (count == 1) return -1;
  ThrowInvalid("output '" + out.name() + "' has shape " + ShapeToString(out.dims()) +
               "; evaluation needs its batch axis " + std::to_string(declared) + " to hold the " +
               std::to_string(count) + " samples of the run");
}

}  // namespace

EvalResult Evaluate(Executor& executor, const Dataset& data, const EvalOptions& options) {
  const BatchPlan plan = data.PlanBatches(options.limit, options.batch);
  EvalResult r;
  r.batch = plan.batch;
  r.threads = executor.threads();
  r.samples = plan.samples;
  r.skipped = plan.skipped;
  r.has_labels = data.has_labels();
  r.predictions.reserve(static_cast<size_t>(r.samples));
  std::vector<Moments> moments(executor.outputs().size());
  r.outputs.resize(executor.outputs().size());
  std::vector<int> declared_axes(r.outputs.size());
  for (size_t k = 0; k < r.outputs.size(); ++k) {
    r.outputs[k].name = executor.outputs()[k].name;
    declared_axes[k] = data.batch_layout().OutputAxis(executor.outputs()[k].type.shape);
  }

  ProgressBar bar("evaluating", r.samples, options.progress);
  for (const SampleRange& range : plan.batches) {
    const int64_t first = range.first, count = range.count;
    const std::vector<Tensor> inputs = data.ReadSamples(first, count);
    const auto t0 = std::chrono::steady_clock::now();
    const std::vector<Tensor> outputs = executor.Run(inputs);
    r.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    for (size_t k = 0; k < outputs.size(); ++k) {
      const Tensor& out = outputs[k];
      const int axis = SampleAxis(out, declared_axes[k], count);
      if (first == 0) {
        r.outputs[k].sample_shape = out.dims();
        if (axis >= 0) r.outputs[k].sample_shape.erase(r.outputs[k].sample_shape.begin() + axis);
      }
      for (int64_t i = 0; i < out.numel(); ++i) moments[k].Add(ElementAsDouble(out, i));
    }
    // Top-1 from output 0: argmax over the per-sample elements (first maximum wins, as numpy does). The
    // elements of sample s are the rows s of every block before the batch axis: index (o*count+s)*inner+i.
    const Tensor& logits = outputs.at(0);
    const int axis = SampleAxis(logits, declared_axes[0], count);
    int64_t outer = 1, inner = logits.numel();
    if (axis >= 0) {
      inner = 1;
      for (int64_t d = 0; d < logits.rank(); ++d) {
        if (d < axis) outer *= logits.dims()[static_cast<size_t>(d)];
        if (d > axis) inner *= logits.dims()[static_cast<size_t>(d)];
      }
    }
    const int64_t per_sample = outer * inner;
    const auto element = [&](int64_t s, int64_t c) {
      return ElementAsDouble(logits, ((c / inner) * count + s) * inner + c % inner);
    };
    for (int64_t s = 0; s < count; ++s) {
      int64_t best = 0;
      double best_v = per_sample > 0 ? element(s, 0) : 0.0;
      for (int64_t c = 1; c < per_sample; ++c) {
        const double v = element(s, c);
        if (v > best_v) {
          best_v = v;
          best = c;
        }
      }
      r.predictions.push_back(best);
      if (r.has_labels && data.labels()[static_cast<size_t>(first + s)] == best) ++r.correct;
      if (options.keep_outputs) {
        for (int64_t c = 0; c < per_sample; ++c) r.output0.push_back(static_cast<float>(element(s, c)));
      }
    }
    bar.Advance(count);
  }
  bar.Finish();
  for (size_t k = 0; k < moments.size(); ++k) {
    OutputStats& st = r.outputs[k];
    st.count = moments[k].n;
    st.mean = moments[k].mean;
    st.stddev = moments[k].n > 1 ? std::sqrt(moments[k].m2 / static_cast<double>(moments[k].n)) : 0.0;
    st.min = moments[k].n ? moments[k].min : 0.0;
    st.max = moments[k].n ? moments[k].max : 0.0;
    st.non_finite = moments[k].non_finite;
  }
  if (r.has_labels && r.samples > 0) r.top1 = static_cast<double>(r.correct) / static_cast<double>(r.samples);
  r.samples_per_second = r.seconds > 0 ? static_cast<double>(r.samples) / r.seconds : 0.0;
  r.integer_groups = executor.integer_products();
  return r;
}

}  // namespace compress
