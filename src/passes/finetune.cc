// finetune: train the weights of the model as the passes before left it, toward the original model.
//
//   Before: a compressed model (pruned, factorized, channel-pruned) and the original (the teacher)
//   After:  the same graph and shapes, weights trained on the data by distillation from the teacher
//           (plus cross-entropy on labels and MSE on named values when asked). Zeros stay zero.
//
// The loop, losses and optimizers live in train/; this pass maps its options and reports what it did.
#include "compress/passes/builders.h"
#include "compress/passes/pass.h"
#include "compress/train/finetune.h"
#include "compress/train/qat.h"

namespace compress {
namespace {

using nlohmann::json;

class FinetunePass : public Pass {
 public:
  explicit FinetunePass(const json& options) : options_(options) {}

  void Run(Model& model, PassContext& ctx) override {
    train::FinetuneOptions o;
    o.data_dir = options_.at("data").get<std::string>();
    if (o.data_dir.empty()) ThrowUsage("finetune: the pass needs a data folder (option data, or --finetune DIR)");
    if (ctx.teacher() == nullptr) ThrowUsage("finetune: no teacher model was given to the pipeline");
    o.labels_file = options_.at("labels").get<std::string>();
    o.epochs = options_.at("epochs").get<int64_t>();
    o.batch = options_.at("batch").get<int64_t>();
    o.limit = options_.at("limit").get<int64_t>();
    o.optimizer.lr = options_.at("lr").get<double>();
    o.warmup_fraction = options_.at("warmup").get<double>();
    o.optimizer.kind = options_.at("optimizer").get<std::string>();
    o.optimizer.weight_decay = options_.at("weight_decay").get<double>();
    o.optimizer.clip_norm = options_.at("clip_norm").get<double>();
    o.temperature = options_.at("temperature").get<double>();
    o.distill_loss = options_.at("distill_loss").get<std::string>();
    if (o.distill_loss != "kl" && o.distill_loss != "mse") {
      ThrowUsage("finetune: distill_loss must be kl or mse, got '" + o.distill_loss + "'");
    }
    o.label_weight = options_.at("label_weight").get<double>();
    o.feature_loss = options_.at("feature_loss").get<std::vector<std::string>>();
    o.seed = static_cast<uint64_t>(options_.at("seed").get<int64_t>());
    o.eval_dir = options_.at("eval").get<std::string>();
    o.eval_limit = options_.at("eval_limit").get<int64_t>();
    o.threads = ctx.threads();
    o.teacher_cache = ctx.teacher_cache();
    if (o.epochs < 1) ThrowUsage("finetune: epochs must be at least 1");
    if (o.batch < 1) ThrowUsage("finetune: batch must be at least 1");
    if (!(o.warmup_fraction >= 0 && o.warmup_fraction < 1)) ThrowUsage("finetune: warmup must be in [0, 1)");
    if (!(o.temperature > 0)) ThrowUsage("finetune: temperature must be positive");
    if (!(o.optimizer.lr > 0)) ThrowUsage("finetune: lr must be positive");
    // A QDQ model trains through fake quantization (quantization-aware training) and is written back as QDQ.
    train::QatState qat;
    if (train::HasQdq(model)) {
      qat = train::PrepareQat(model);
      if (options_.at("qat_scales").get<bool>()) {
        o.extra_parameters = qat.scales;
        for (const auto& sc : qat.scales) o.lr_factor[sc] = options_.at("qat_scale_lr").get<double>();
      } else {
        o.frozen_parameters = qat.scales;
      }
      o.keep_all_zeros = false;
      o.keep_zeros_of = qat.sparse_weights;
    }
    const train::FinetuneResult r = train::Finetune(model, *ctx.teacher(), o);
    if (qat.active()) {
      train::FinishQat(model, qat);
      ctx.Count("qat_weights", static_cast<int64_t>(qat.weights.size()));
      ctx.Count("qat_scales", options_.at("qat_scales").get<bool>() ? static_cast<int64_t>(qat.scales.size()) : 0);
    }
    ctx.Count("trained_tensors", static_cast<int64_t>(r.parameters.size()));
    ctx.Count("trained_parameters", r.parameter_elements);
    ctx.Count("steps", r.steps);
    if (r.frozen_zeros > 0) ctx.Count("zeros_kept", r.frozen_zeros);
    json t = r.ToJson();
    t["data"] = o.data_dir;
    t["lr"] = o.optimizer.lr;
    t["optimizer"] = o.optimizer.kind;
    t["temperature"] = o.temperature;
    t["distill_loss"] = o.distill_loss;
    t["qat"] = qat.active();
    ctx.details()["training"] = t;
    ctx.Note("fine-tuned " + std::to_string(r.parameters.size()) + " weight tensors for " +
             std::to_string(r.epochs.size()) + " epochs on " + std::to_string(r.samples) + " samples of " + o.data_dir);
  }

 private:
  json options_;
};

}  // namespace

std::unique_ptr<Pass> MakeFinetunePass(const json& options) { return std::make_unique<FinetunePass>(options); }

}  // namespace compress
