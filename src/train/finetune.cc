#include "compress/train/finetune.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <unordered_set>

#include "compress/eval/evaluate.h"
#include "compress/exec/executor.h"
#include "compress/io/dataset.h"
#include "compress/train/autodiff.h"
#include "compress/train/loss.h"
#include "compress/util/error.h"
#include "compress/util/progress.h"

namespace compress::train {
namespace {

// With labelled data and no --label-weight: half cross-entropy, half distillation. On the sample MLP
// distilled into a half-width student from random weights (5 epochs of Fashion-MNIST train), this mix
// gave 88.65 % against 88.48 % with labels alone and 88.29 % with distillation alone.
constexpr double kAutoLabelWeight = 0.5;

// SplitMix64: a small generator whose sequence is the same on every platform (std::shuffle and the
// standard distributions are not specified bit for bit).
uint64_t SplitMix(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

std::vector<int64_t> ShuffledOrder(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = i;
  uint64_t state = seed * 0x100000001b3ULL + static_cast<uint64_t>(epoch) + 1;
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = static_cast<int64_t>(SplitMix(state) % static_cast<uint64_t>(i + 1));
    std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(j)]);
  }
  return order;
}

// Rows `rows` of `t` along `axis`, in that order.
Tensor GatherRows(const Tensor& t, int axis, const std::vector<int64_t>& rows) {
  if (axis < 0) return t;  // a rank-0 input is shared by every sample
  std::vector<int64_t> dims = t.dims();
  const int64_t outer = ShapeElementCount(std::vector<int64_t>(dims.begin(), dims.begin() + axis));
  const int64_t n = dims[static_cast<size_t>(axis)];
  const int64_t inner = ShapeElementCount(std::vector<int64_t>(dims.begin() + axis + 1, dims.end()));
  const size_t esize = t.numel() > 0 ? t.nbytes() / static_cast<size_t>(t.numel()) : 0;
  dims[static_cast<size_t>(axis)] = static_cast<int64_t>(rows.size());
  Tensor out(t.dtype(), dims);
  const auto* src = static_cast<const uint8_t*>(t.raw());
  auto* dst = static_cast<uint8_t*>(out.mutable_raw());
  const size_t row_bytes = static_cast<size_t>(inner) * esize;
  for (int64_t o = 0; o < outer; ++o) {
    for (size_t r = 0; r < rows.size(); ++r) {
      std::memcpy(dst + (static_cast<size_t>(o) * rows.size() + r) * row_bytes,
                  src + (static_cast<size_t>(o * n + rows[r])) * row_bytes, row_bytes);
    }
  }
  return out;
}

double Top1(const Model& model, const std::string& dir, int64_t limit, int threads) {
  ExecutorOptions eo;
  eo.threads = threads;
  Executor ex(model, eo);
  const Dataset data = Dataset::Open(dir, ModelInputSpecs(model));
  if (!data.has_labels()) return -1;  // nothing to measure top-1 against
  EvalOptions o;
  o.limit = limit;
  o.progress = false;
  return Evaluate(ex, data, o).top1;
}

// The input of the Softmax that computes output 0 over its last axis, or "" when output 0 is not so made.
std::string SoftmaxLogits(const Model& m) {
  if (m.graph.outputs.empty()) return "";
  const ValueInfo& out = m.graph.outputs[0];
  for (const auto& n : m.graph.nodes) {
    if (n.op_type != "Softmax" || !n.IsDefaultDomain() || n.outputs.empty() || n.outputs[0] != out.name ||
        n.inputs.empty()) {
      continue;
    }
    const int64_t rank = static_cast<int64_t>(out.type.shape.size());
    if (!out.type.has_shape || rank < 1) return "";
    const int64_t opset = m.OpsetVersion(n.domain);
    int64_t axis = n.AttrInt("axis", opset >= 13 ? -1 : 1);
    if (axis < 0) axis += rank;
    return axis == rank - 1 ? n.inputs[0] : "";
  }
  return "";
}

}  // namespace

int64_t PeakResidentBytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmHWM:", 0) == 0) {
      std::istringstream in(line.substr(6));
      int64_t kb = 0;
      in >> kb;
      return kb * 1024;
    }
  }
  return 0;
}

TrainStepTiming TimeTrainingStep(const Model& model, const std::vector<Tensor>& inputs, int threads,
                                 double min_seconds) {
  if (model.graph.outputs.empty()) ThrowInvalid("the model has no outputs");
  const std::string out0 = model.graph.outputs[0].name;
  const std::vector<std::string> params = Backprop::TrainableParameters(model, {out0});
  if (params.empty()) ThrowInvalid("the model has no float weights on the way to its first output: nothing to train");
  BackpropOptions bo;
  bo.threads = threads;
  bo.profile = true;
  Backprop bp(model, params, {out0}, bo);
  ExecutorOptions eo;
  eo.threads = threads;
  Executor forward(model, eo);
  std::vector<Tensor> values;
  std::vector<bool> decay;
  TrainStepTiming t;
  for (const auto& p : params) {
    const Tensor& w = *model.graph.FindInitializer(p);
    values.push_back(Tensor::FromBytes(w.dtype(), w.dims(), w.raw(), w.nbytes(), w.name()));
    decay.push_back(w.rank() >= 2);
    t.parameters += w.numel();
  }
  // The teacher's logits: the model's own outputs moved a little, so that the loss has a gradient.
  Tensor teacher = forward.Run(inputs).at(0);
  if (teacher.dtype() == DType::kFloat) {
    float* p = teacher.mutable_data<float>();
    for (int64_t i = 0; i < teacher.numel(); ++i) p[i] += 0.5f * static_cast<float>((i * 7) % 5) - 1.0f;
  }
  OptimizerOptions oo;
  Optimizer opt(oo, decay);
  std::vector<double> part_f, part_b, part_u;
  auto step = [&] {
    auto t0 = std::chrono::steady_clock::now();
    const ValueMap fwd = bp.Forward(inputs, values);
    const auto t1 = std::chrono::steady_clock::now();
    const LossValue kd = DistillationLoss(fwd.at(out0), teacher, 4.0);
    const std::vector<Tensor> grads = bp.Backward(fwd, {kd.grad});
    const auto t2 = std::chrono::steady_clock::now();
    opt.Step(values, grads, {});
    const auto t3 = std::chrono::steady_clock::now();
    part_f.push_back(std::chrono::duration<double>(t1 - t0).count());
    part_b.push_back(std::chrono::duration<double>(t2 - t1).count());
    part_u.push_back(std::chrono::duration<double>(t3 - t2).count());
  };
  for (int i = 0; i < 2; ++i) {  // warm-up: first-touch allocations, caches
    forward.Run(inputs);
    step();
  }
  part_f.clear();
  part_b.clear();
  part_u.clear();
  std::vector<double> f, s;
  const auto start = std::chrono::steady_clock::now();
  auto since = [](std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  while (f.size() < 5 || since(start) < min_seconds) {
    auto t0 = std::chrono::steady_clock::now();
    forward.Run(inputs);
    f.push_back(since(t0));
    t0 = std::chrono::steady_clock::now();
    step();
    s.push_back(since(t0));
  }
  std::sort(f.begin(), f.end());
  std::sort(s.begin(), s.end());
  t.forward_seconds = f[f.size() / 2];
  t.step_seconds = s[s.size() / 2];
  for (auto* part : {&part_f, &part_b, &part_u}) std::sort(part->begin(), part->end());
  t.step_forward_seconds = part_f[part_f.size() / 2];
  t.step_backward_seconds = part_b[part_b.size() / 2];
  t.step_update_seconds = part_u[part_u.size() / 2];
  t.backward_profile = bp.BackwardProfile();
  t.profiled_steps = static_cast<int64_t>(s.size()) + 2;
  t.runs = static_cast<int64_t>(f.size());
  t.peak_rss_bytes = PeakResidentBytes();
  return t;
}

nlohmann::json FinetuneResult::ToJson() const {
  nlohmann::json j;
  j["samples_per_epoch"] = samples;
  j["batch"] = batch;
  j["steps"] = steps;
  j["seconds"] = seconds;
  j["peak_rss_bytes"] = peak_rss_bytes;
  j["parameters"] = parameter_elements;
  j["parameter_tensors"] = parameters.size();
  j["frozen_zeros"] = frozen_zeros;
  j["labels"] = used_labels;
  j["label_weight"] = label_weight;
  j["distilled_value"] = distilled_value;
  nlohmann::json e = nlohmann::json::array();
  for (const auto& s : epochs) {
    nlohmann::json x = {{"epoch", s.epoch}, {"loss", s.loss}, {"seconds", s.seconds},
                        {"samples_per_second", s.samples_per_second}};
    if (s.eval_top1 >= 0) x["eval_top1"] = s.eval_top1;
    e.push_back(x);
  }
  j["epochs"] = e;
  return j;
}

FinetuneResult Finetune(Model& student, const Model& teacher, const FinetuneOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  if (options.epochs < 1) ThrowUsage("fine-tuning needs at least one epoch");
  if (options.batch < 1) ThrowUsage("fine-tuning batch must be at least 1");
  if (!(options.label_weight <= 1)) ThrowUsage("--label-weight must be in [0, 1]");
  if (student.graph.outputs.empty()) ThrowInvalid("the model to fine-tune has no outputs");
  if (teacher.graph.outputs.size() != student.graph.outputs.size()) {
    ThrowInvalid("the teacher has " + std::to_string(teacher.graph.outputs.size()) + " outputs, the student " +
                 std::to_string(student.graph.outputs.size()));
  }
  DatasetOptions dopt;
  dopt.labels_file = options.labels_file;
  const std::vector<InputSpec> specs = ModelInputSpecs(student);
  const Dataset data = Dataset::Open(options.data_dir, specs, dopt);
  // Negative: automatic, half cross-entropy and half distillation when the data has labels.
  const double label_weight =
      options.label_weight < 0 ? (data.has_labels() ? kAutoLabelWeight : 0.0) : options.label_weight;
  const bool use_labels = label_weight > 0;
  if (use_labels && !data.has_labels()) {
    ThrowUsage("--label-weight " + std::to_string(label_weight) + " needs labels in " + options.data_dir +
               " (labels.npy or labels.txt)");
  }
  const int64_t total = options.limit > 0 ? std::min(options.limit, data.num_samples()) : data.num_samples();
  if (total < 1) ThrowInvalid("fine-tuning data " + options.data_dir + " holds no samples");
  const BatchLayout& layout = data.batch_layout();
  const int64_t batch = layout.BatchSize(options.batch);

  // Every sample in memory, one tensor per input along its batch axis.
  std::vector<Tensor> all = data.ReadSamples(0, total);

  // Seeds: output 0 (distillation / cross-entropy) and the feature values.
  // A classifier that ends in Softmax is distilled (and trained on labels) from the Softmax's input, the
  // logits: a softened softmax of probabilities is nearly flat and its gradient nearly nothing. Only when
  // both models end that way; otherwise output 0 itself.
  const std::string student_logits = SoftmaxLogits(student), teacher_logits = SoftmaxLogits(teacher);
  const bool use_logits = !student_logits.empty() && !teacher_logits.empty() && options.distill_loss == "kl";
  const std::string out0 = use_logits ? student_logits : student.graph.outputs[0].name;
  const std::string teacher_out_name = use_logits ? teacher_logits : teacher.graph.outputs[0].name;
  std::vector<std::string> seeds = {out0};
  for (const auto& f : options.feature_loss) {
    if (std::find(seeds.begin(), seeds.end(), f) != seeds.end()) continue;
    seeds.push_back(f);
  }
  BackpropOptions bo;
  bo.threads = options.threads;
  std::unordered_set<std::string> student_values, teacher_values;
  for (const auto& n : student.graph.nodes) student_values.insert(n.outputs.begin(), n.outputs.end());
  for (const auto& n : teacher.graph.nodes) teacher_values.insert(n.outputs.begin(), n.outputs.end());
  for (const auto& f : options.feature_loss) {
    if (!student_values.count(f)) ThrowUsage("--feature-loss: '" + f + "' is not a value of the compressed model");
    if (!teacher_values.count(f)) ThrowUsage("--feature-loss: '" + f + "' is not a value of the original model");
  }
  std::vector<std::string> params;
  for (const auto& p : Backprop::TrainableParameters(student, seeds)) {
    if (std::find(options.frozen_parameters.begin(), options.frozen_parameters.end(), p) == options.frozen_parameters.end()) {
      params.push_back(p);
    }
  }
  for (const auto& p : options.extra_parameters) {
    if (std::find(params.begin(), params.end(), p) == params.end()) params.push_back(p);
  }
  if (params.empty()) ThrowInvalid("the model has no float weights on the way to its first output: nothing to fine-tune");
  Backprop bp(student, params, seeds, bo);

  FinetuneResult result;
  result.distilled_value = out0;
  result.parameters = params;
  result.batch = batch;
  result.samples = total;
  result.used_labels = use_labels;
  result.label_weight = label_weight;
  std::vector<Tensor> values, masks;
  std::vector<bool> decay;
  std::vector<double> lr_factor;
  for (const auto& p : params) {
    const auto lf = options.lr_factor.find(p);
    lr_factor.push_back(lf == options.lr_factor.end() ? 1.0 : lf->second);
    const Tensor& t = *student.graph.FindInitializer(p);
    // Fresh buffers: the optimizer writes them every step.
    values.push_back(Tensor::FromBytes(t.dtype(), t.dims(), t.raw(), t.nbytes(), t.name()));
    result.parameter_elements += t.numel();
    decay.push_back(t.rank() >= 2);
    Tensor mask;
    if (t.rank() >= 2 && (options.keep_all_zeros || options.keep_zeros_of.count(p))) {
      int64_t zeros = 0;
      Tensor m(DType::kUInt8, t.dims());
      uint8_t* pm = m.mutable_data<uint8_t>();
      for (int64_t i = 0; i < t.numel(); ++i) {
        const double v = t.dtype() == DType::kDouble ? t.data<double>()[i] : t.data<float>()[i];
        pm[i] = v != 0 ? 1 : 0;
        zeros += v == 0 ? 1 : 0;
      }
      if (zeros > 0) {
        mask = m;
        result.frozen_zeros += zeros;
      }
    }
    masks.push_back(mask);
  }

  // Teacher outputs of every sample, computed once (output 0); feature values per batch.
  ExecutorOptions teo;
  teo.threads = options.threads;
  Executor teacher_exec(teacher, teo);
  if (teacher_exec.inputs().size() != specs.size()) {
    ThrowInvalid("the teacher takes " + std::to_string(teacher_exec.inputs().size()) + " inputs, the student " +
                 std::to_string(specs.size()));
  }
  std::vector<Tensor> teacher_out0;
  const int out_axis = layout.OutputAxis(student.graph.outputs[0].type.shape);
  // The same teacher (by identity) on the same samples in the same batches gives the same outputs.
  const std::string cache_key = std::to_string(reinterpret_cast<uintptr_t>(&teacher)) + "\n" + options.data_dir + "\n" +
                                options.labels_file + "\n" + std::to_string(total) + "\n" + std::to_string(batch) +
                                "\n" + teacher_out_name + "\n" + std::to_string(out_axis);
  if (options.teacher_cache != nullptr) {
    if (const std::vector<Tensor>* cached = options.teacher_cache->Find(cache_key)) teacher_out0 = *cached;
  }
  if (teacher_out0.empty()) {
    ProgressBar bar(options.label + ": teacher", total, options.progress);
    for (int64_t first = 0; first < total; first += batch) {
      const int64_t count = std::min(batch, total - first);
      if (layout.fixed_batch > 0 && count < layout.fixed_batch) break;
      std::vector<int64_t> rows(static_cast<size_t>(count));
      for (int64_t r = 0; r < count; ++r) rows[static_cast<size_t>(r)] = first + r;
      std::vector<Tensor> in;
      for (size_t i = 0; i < all.size(); ++i) in.push_back(GatherRows(all[i], layout.input_axes[i], rows));
      Tensor out;
      if (use_logits) {
        const ValueObserver keep = [&](const std::string& name, const Tensor& t) {
          if (name == teacher_out_name) out = t;
        };
        teacher_exec.Run(in, &keep);
        if (out.dtype() == DType::kUndefined) ThrowInternal("the original model did not compute '" + teacher_out_name + "'");
      } else {
        out = teacher_exec.Run(in).at(0);
      }
      if (teacher_out0.empty()) {
        // Every batch's output gets its tensor now, before the runs' large temporaries come and go: small
        // allocations kept between them would pin glibc's heap, which then grew by about a batch's
        // activations per batch (4.6 GiB for the CNN on 60,000 images).
        for (int64_t f = 0; f < total; f += batch) {
          const int64_t c = std::min(batch, total - f);
          if (layout.fixed_batch > 0 && c < layout.fixed_batch) break;
          std::vector<int64_t> dims = out.dims();
          if (out_axis >= 0 && static_cast<size_t>(out_axis) < dims.size() && dims[static_cast<size_t>(out_axis)] == count) {
            dims[static_cast<size_t>(out_axis)] = c;
          }
          teacher_out0.push_back(Tensor::Uninitialized(out.dtype(), dims));
        }
      }
      Tensor& slot = teacher_out0[static_cast<size_t>(first / batch)];
      if (slot.dims() == out.dims() && slot.dtype() == out.dtype()) {
        std::memcpy(slot.mutable_raw(), out.raw(), out.nbytes());
      } else {
        slot = std::move(out);
      }
      bar.Advance(count);
    }
    if (options.teacher_cache != nullptr) options.teacher_cache->Store(cache_key, teacher_out0);
  }
  const int64_t usable = layout.fixed_batch > 0 ? total / layout.fixed_batch * layout.fixed_batch : total;
  if (usable < 1) ThrowInvalid("fine-tuning data holds fewer samples than the model's fixed batch");
  auto teacher_rows = [&](const std::vector<int64_t>& samples) {
    std::vector<Tensor> pieces;
    for (const int64_t s : samples) {
      const Tensor& t = teacher_out0[static_cast<size_t>(s / batch)];
      pieces.push_back(GatherRows(t, out_axis, {s % batch}));
    }
    return ConcatAlongAxis(pieces, out_axis);
  };
  const auto& labels = data.labels();

  const int64_t steps_per_epoch = (usable + batch - 1) / batch - (layout.fixed_batch > 0 && usable % batch ? 1 : 0);
  OptimizerOptions oo = options.optimizer;
  oo.total_steps = steps_per_epoch * options.epochs;
  oo.warmup_steps = static_cast<int64_t>(std::floor(options.warmup_fraction * static_cast<double>(oo.total_steps)));
  Optimizer opt(oo, decay, lr_factor);

  for (int64_t epoch = 0; epoch < options.epochs; ++epoch) {
    const auto t0 = std::chrono::steady_clock::now();
    const std::vector<int64_t> order = ShuffledOrder(usable, options.seed, epoch);
    double loss_sum = 0;
    int64_t batches = 0, seen = 0;
    ProgressBar bar(options.label + " epoch " + std::to_string(epoch + 1) + "/" + std::to_string(options.epochs),
                    usable, options.progress);
    for (int64_t first = 0; first < usable; first += batch) {
      const int64_t count = std::min(batch, usable - first);
      if (layout.fixed_batch > 0 && count < layout.fixed_batch) break;
      const std::vector<int64_t> rows(order.begin() + first, order.begin() + first + count);
      std::vector<Tensor> in;
      for (size_t i = 0; i < all.size(); ++i) in.push_back(GatherRows(all[i], layout.input_axes[i], rows));
      const ValueMap fwd = bp.Forward(in, values);
      const Tensor& s_out = fwd.at(out0);
      const Tensor t_out = teacher_rows(rows);
      LossValue kd = options.distill_loss == "mse" ? MseLoss(s_out, t_out)
                                                   : DistillationLoss(s_out, t_out, options.temperature);
      double loss = (1 - label_weight) * kd.loss;
      Tensor g = kd.grad;
      {
        float* pg = g.dtype() == DType::kFloat ? g.mutable_data<float>() : nullptr;
        for (int64_t i = 0; pg != nullptr && i < g.numel(); ++i) pg[i] *= static_cast<float>(1 - label_weight);
      }
      if (use_labels) {
        std::vector<int64_t> y;
        for (const int64_t r : rows) y.push_back(labels[static_cast<size_t>(r)]);
        const LossValue ce = CrossEntropyLoss(s_out, y);
        loss += label_weight * ce.loss;
        float* pg = g.mutable_data<float>();
        const float* pc = ce.grad.data<float>();
        for (int64_t i = 0; i < g.numel(); ++i) pg[i] += static_cast<float>(label_weight) * pc[i];
      }
      std::vector<Tensor> seed_grads = {g};
      if (!options.feature_loss.empty()) {
        ValueMap teacher_values_map;
        const ValueObserver obs = [&](const std::string& name, const Tensor& t) {
          if (std::find(seeds.begin() + 1, seeds.end(), name) != seeds.end()) teacher_values_map[name] = t;
        };
        teacher_exec.Run(in, &obs);
        for (size_t k = 1; k < seeds.size(); ++k) {
          const auto it = teacher_values_map.find(seeds[k]);
          if (it == teacher_values_map.end()) ThrowInvalid("the original model did not compute '" + seeds[k] + "'");
          const LossValue f = MseLoss(fwd.at(seeds[k]), it->second);
          loss += f.loss;
          seed_grads.push_back(f.grad);
        }
      }
      const std::vector<Tensor> grads = bp.Backward(fwd, seed_grads);
      opt.Step(values, grads, masks);
      if (!std::isfinite(loss)) {
        ThrowInvalid("fine-tuning diverged at epoch " + std::to_string(epoch + 1) + " (loss is " + std::to_string(loss) +
                     "); try a lower --lr");
      }
      loss_sum += loss;
      ++batches;
      seen += count;
      bar.Advance(count);
    }
    bar.Finish();
    EpochStats st;
    st.epoch = epoch + 1;
    st.loss = batches > 0 ? loss_sum / static_cast<double>(batches) : 0;
    st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    st.samples_per_second = st.seconds > 0 ? static_cast<double>(seen) / st.seconds : 0;
    if (!options.eval_dir.empty()) {
      Model snapshot = student;
      for (size_t p = 0; p < params.size(); ++p) *snapshot.graph.FindInitializer(params[p]) = values[p];
      st.eval_top1 = Top1(snapshot, options.eval_dir, options.eval_limit, options.threads);
    }
    result.epochs.push_back(st);
    result.steps += batches;
    if (st.eval_top1 >= 0) {
      spdlog::info("{} epoch {}/{}: loss {:.4f}, {:.0f} samples/s, top-1 {:.2f} %", options.label, st.epoch,
                   options.epochs, st.loss, st.samples_per_second, 100 * st.eval_top1);
    } else {
      spdlog::info("{} epoch {}/{}: loss {:.4f}, {:.0f} samples/s", options.label, st.epoch, options.epochs, st.loss,
                   st.samples_per_second);
    }
  }
  for (size_t p = 0; p < params.size(); ++p) {
    Tensor t = values[p];
    t.set_name(params[p]);
    *student.graph.FindInitializer(params[p]) = t;
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  result.peak_rss_bytes = PeakResidentBytes();
  return result;
}

}  // namespace compress::train
