#include "compress/passes/pass.h"

#include <sstream>

#include "compress/passes/builders.h"
#include "quantize_qdq.h"
#include "compress/util/error.h"

namespace compress {

namespace {

using nlohmann::json;

std::vector<PassInfo> BuildPassList() {
  std::vector<PassInfo> passes;
  // Clean-up, in the order the default pipeline runs it: Constant nodes first so that every later pass
  // sees weights as initializers; Identity/Dropout before folding so that folding sees through them;
  // dead-node removal last so that it sweeps up what the others disconnected.
  passes.push_back({"constant_to_initializer", "turn Constant nodes into initializers", true, {},
                    MakeConstantToInitializerPass});
  passes.push_back({"remove_identity", "remove Identity nodes and inference-mode Dropout", true, {},
                    MakeRemoveIdentityPass});
  passes.push_back({"fold_constants",
                    "evaluate nodes whose inputs are all constant, including Shape of static shapes",
                    true,
                    {{"max_folded_bytes", json(int64_t{64} << 20),
                      "largest tensor a folded node may produce; larger results stay computed at run time"},
                     {"fold_shapes", json(true), "replace Shape/Size of values with a static shape by constants"}},
                    MakeFoldConstantsPass});
  passes.push_back({"fold_batch_norm",
                    "fold BatchNormalization into the preceding Conv, ConvTranspose, Gemm or MatMul", true, {},
                    MakeFoldBatchNormPass});
  passes.push_back({"share_initializers", "let initializers with identical type, shape and bytes share one tensor",
                    true, {}, MakeShareInitializersPass});
  passes.push_back({"remove_dead_nodes", "remove nodes no graph output depends on and unused initializers", true,
                    {}, MakeRemoveDeadNodesPass});
  // Compression passes.
  passes.push_back({"prune_channels",
                    "structured pruning: remove a fraction of the channels of every prunable channel group "
                    "(weights, biases, normalization parameters, Concat, Flatten->Gemm and Reshape follow)",
                    false,
                    {{"ratio", json(0.5), "fraction of the channels removed in every prunable group, in [0, 1)"},
                     {"importance", json("auto"), "auto (act with calibration data, else l2), act (consumer weight "
                                                  "norm x activation std on the calibration data), l1 or l2 norm of "
                                                  "each channel's weights, or bn (BatchNormalization scale where "
                                                  "every producer of the group has one)"},
                     {"round_to", json(int64_t{8}), "kept widths are multiples of this (halved for groups under "
                                                   "4x as many channels)"},
                     {"exclude_nodes", json::array(), "producer node names whose channel groups stay whole"},
                     {"group_ratios", json::object(), "ratio of single groups, by the name of the group's first "
                                                      "producer node (details.layers[].group); others use ratio"},
                     {"update", json(true), "with calibration data: re-fit the kept input weights and the bias of "
                                            "every Conv/Gemm/MatMul reading removed channels by least squares on "
                                            "their calibration inputs (false: fold the removed channels' means "
                                            "into the bias only)"}},
                    MakePruneChannelsPass});
  passes.push_back({"low_rank",
                    "low-rank factorization: a Gemm, MatMul or Conv weight becomes the product of two smaller ones "
                    "(truncated SVD, whitened by the calibration inputs when there are some)",
                    false,
                    {{"ratio", json(0.5), "keep at most this fraction of each factorized layer's parameters, in (0, 1)"},
                     {"energy", json(0.0), "instead of ratio: the smallest rank per layer keeping this share of the "
                                           "spectrum's energy, in (0, 1] (0: unused)"},
                     {"params", json(0.0), "instead of ratio: the whole model keeps at most this fraction of its "
                                           "parameters, ranks chosen greedily by measured layer fidelity (0: unused)"},
                     {"macs", json(0.0), "instead of ratio: the whole model keeps at most this fraction of its MACs, "
                                         "ranks chosen greedily by measured layer fidelity (0: unused)"},
                     {"method", json("auto"), "auto (whitened with calibration data, else svd), svd (truncated SVD "
                                              "of the weight) or whitened (SVD of the weight scaled by the Cholesky "
                                              "factor of the layer's input Gram matrix, SVD-LLM)"},
                     {"rank_multiple", json(int64_t{8}), "ranks are multiples of this (1 for layers whose largest "
                                                         "rank is below 32)"},
                     {"keep_output_layers", json(true), "keep whole the layers that compute a graph output with no "
                                                        "other product after them (classifier heads)"},
                     {"exclude_nodes", json::array(), "node names whose weights stay whole"},
                     {"only_nodes", json::array(), "when not empty, factorize only these nodes"}},
                    MakeLowRankPass});
  passes.push_back({"finetune",
                    "fine-tune the weights on a data folder toward the original model (distillation, optionally "
                    "with labels and intermediate values); zeros, shapes and factorizations stay",
                    false,
                    {{"data", json(""), "data folder (the layouts of --calib; labels.npy / labels.txt for "
                                        "label_weight)"},
                     {"labels", json(""), "labels file instead of data/labels.*"},
                     {"epochs", json(int64_t{1}), "passes over the data"},
                     {"batch", json(int64_t{64}), "samples per step (the model's fixed batch, if it has one)"},
                     {"limit", json(int64_t{0}), "train on the first N samples only (0: all)"},
                     {"lr", json(1e-3), "peak learning rate (cosine decay to 0 after a linear warm-up)"},
                     {"warmup", json(0.05), "share of the steps spent warming the learning rate up"},
                     {"optimizer", json("adamw"), "adamw or sgd (momentum 0.9)"},
                     {"weight_decay", json(0.0), "decoupled weight decay of weights (not biases)"},
                     {"clip_norm", json(0.0), "clip the global gradient norm to this (0: off)"},
                     {"temperature", json(4.0), "distillation temperature T: T^2 KL(softmax(t/T) || softmax(s/T))"},
                     {"distill_loss", json("kl"), "how output 0 is matched to the original's: kl (class scores) or "
                                                  "mse (embeddings, maps, regressions)"},
                     {"label_weight", json(-1.0), "weight of cross-entropy on the labels in [0, 1]; the rest goes "
                                                  "to distillation (negative: 0.5 when the data has labels, else 0)"},
                     {"feature_loss", json::array(), "intermediate values matched to the original's by mean squared "
                                                     "error"},
                     {"seed", json(int64_t{0}), "seed of the sample order"},
                     {"eval", json(""), "labelled folder on which to measure top-1 after every epoch"},
                     {"eval_limit", json(int64_t{0}), "evaluate on the first N samples of eval only (0: all)"},
                     {"qat_scales", json(true), "QDQ models: train the quantization scales too (LSQ)"},
                     {"qat_scale_lr", json(0.01), "QDQ models: learning rate of the scales relative to lr"}},
                    MakeFinetunePass});
  passes.push_back({"fp16",
                    "convert float32 weights and computation to float16",
                    false,
                    {{"keep_io_types", json(true), "keep graph inputs and outputs float32, with Casts at the boundary"},
                     {"default_block_ops", json(true), "keep the built-in list of ops in float32"},
                     {"block_ops", json::array(), "more op types to keep in float32"},
                     {"block_nodes", json::array(), "node names to keep in float32"}},
                    MakeFp16Pass});
  passes.push_back({"quantize",
                    "INT8 quantization: static (calibrated) QDQ or QOperator, dynamic, or weights only",
                    false,
                    {{"mode", json("static"), "static (calibrated activations), dynamic or weights_only"},
                     {"format", json("qdq"), "qdq (QuantizeLinear/DequantizeLinear pairs) or qop (QLinearConv, "
                                             "QLinearMatMul, MatMulInteger, ConvInteger where possible)"},
                     {"per_channel", json(true), "int8 weights with one scale per output channel"},
                     {"activation_type", json("uint8"), "uint8 (asymmetric) or int8 (symmetric) activations"},
                     {"calib_method", json("minmax"), "minmax, percentile, entropy or mse"},
                     {"percentile", json(99.999), "percentile method: share of values kept, in percent"},
                     {"exclude_nodes", json::array(), "node names kept in float"},
                     {"exclude_ops", json::array(), "op types kept in float"},
                     {"min_conv_depth", json(passes::kDefaultMinConvDepth),
                      "static mode: Conv nodes whose input channels per group x kernel elements is below this "
                      "stay float (0: quantize every Conv)"}},
                    MakeQuantizePass});
  passes.push_back({"prune",
                    "unstructured or N:M (e.g. 2:4) weight pruning of Conv, ConvTranspose, Gemm and MatMul, by "
                    "magnitude or Wanda (|W| x activation norm)",
                    false,
                    {{"sparsity", json(0.5), "fraction of the weights set to zero, in [0, 1) (N:M fixes it at 1 - N/M)"},
                     {"pattern", json("unstructured"), "unstructured, or N:M: at most N non-zero weights in every "
                                                       "group of M along the input channels"},
                     {"method", json("auto"), "auto (wanda with calibration data, else magnitude), magnitude or wanda"},
                     {"global", json(false), "one threshold across layers on normalized scores instead of the same "
                                             "sparsity in every layer (unstructured only)"},
                     {"exclude_nodes", json::array(), "node names whose weights stay dense"},
                     {"keep_first_last", json(false), "keep the first and the last prunable layer dense"},
                     {"update", json(true), "with calibration data: re-fit the kept weights by least squares so that "
                                            "each layer's output on the data changes least (SparseGPT-style), "
                                            "layer by layer on the model pruned so far; without data, mask only"},
                     {"exact_flops", json(3e10), "update: per-layer budget of the exact per-row least-squares solve "
                                                 "(rows x kept^3 / 3 flops); above it SparseGPT's sequential OBS "
                                                 "update is used"},
                     {"only_nodes", json::array(), "when not empty, prune only the weights these nodes read"}},
                    MakePrunePass});
  passes.push_back({"compact_names",
                    "shorten intermediate value and initializer names, drop node names and attributes "
                    "that hold their default (graph inputs and outputs keep their names)",
                    false,
                    {{"keep_node_names", json(false), "keep node names, shorten only value names"},
                     {"keep_initializer_names", json(false), "keep initializer names"},
                     {"keep_default_attributes", json(false), "keep attributes that hold their default"}},
                    MakeCompactNamesPass});
  return passes;
}

std::string TypeName(const json& v) {
  if (v.is_boolean()) return "a boolean";
  if (v.is_number_integer()) return "an integer";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "a list of strings";
  if (v.is_object()) return "a mapping of names to numbers";
  return "a value";
}

bool SameType(const json& spec, const json& v) {
  if (spec.is_boolean()) return v.is_boolean();
  if (spec.is_number_integer()) return v.is_number_integer();
  if (spec.is_number()) return v.is_number();
  if (spec.is_string()) return v.is_string();
  if (spec.is_array()) {
    if (!v.is_array()) return false;
    for (const auto& e : v) {
      if (!e.is_string()) return false;
    }
    return true;
  }
  if (spec.is_object()) {
    if (!v.is_object()) return false;
    for (const auto& e : v) {
      if (!e.is_number()) return false;
    }
    return true;
  }
  return false;
}

}  // namespace

const std::vector<PassInfo>& AllPasses() {
  static const std::vector<PassInfo> passes = BuildPassList();
  return passes;
}

const PassInfo* FindPass(const std::string& name) {
  for (const auto& p : AllPasses()) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

json ValidatePassOptions(const PassInfo& pass, const json& options, const std::string& origin) {
  if (!options.is_null() && !options.is_object()) {
    ThrowUsage(origin + ": options of pass '" + pass.name + "' must be a mapping of option names to values");
  }
  json out = json::object();
  for (const auto& spec : pass.options) out[spec.name] = spec.default_value;
  if (options.is_null()) return out;
  for (auto it = options.begin(); it != options.end(); ++it) {
    const OptionSpec* spec = nullptr;
    for (const auto& s : pass.options) {
      if (s.name == it.key()) spec = &s;
    }
    if (spec == nullptr) {
      std::ostringstream os;
      os << origin << ": unknown option '" << it.key() << "' for pass '" << pass.name << "'";
      if (pass.options.empty()) {
        os << " (it takes no options)";
      } else {
        os << " (valid: ";
        for (size_t i = 0; i < pass.options.size(); ++i) os << (i ? ", " : "") << pass.options[i].name;
        os << ")";
      }
      ThrowUsage(os.str());
    }
    if (!SameType(spec->default_value, it.value())) {
      ThrowUsage(origin + ": option '" + it.key() + "' of pass '" + pass.name + "' must be " +
                 TypeName(spec->default_value) + ", got " + it.value().dump());
    }
    out[it.key()] = it.value();
  }
  return out;
}

}  // namespace compress
