// Quantization-aware training of a QDQ model.
//
//   Before (as the quantize pass writes it):
//     W_int8 -> DequantizeLinear(s_w, z_w) -> Conv <- DequantizeLinear(s_x*s_w) <- B_int32
//     X -> QuantizeLinear(s_x, z_x) -> DequantizeLinear(s_x, z_x) -> Conv
//   While training (PrepareQat):
//     W_float -> QuantizeLinear(s_w, z_w) -> DequantizeLinear(s_w, z_w) -> Conv <- B_float
//   The QuantizeLinear/DequantizeLinear pairs are fake quantization: the straight-through estimator passes
//   the gradient to W_float and X, and LSQ's gradient trains the scales s_w and s_x.
//   After (FinishQat): the QDQ form again, W_int8 = clamp(round(W_float / s_w) + z_w) in the weight's
//   original integer range, B_int32 = round(B_float / (s_x * s_w)) with the trained scales, so that ONNX
//   Runtime fuses it like any post-training QDQ model.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "compress/ir/graph.h"

namespace compress::train {

struct QatState {
  struct Weight {
    std::string int_name;    // the integer initializer (restored under this name)
    std::string float_name;  // the float weight trained in its place
    std::string quantize_output;
    int64_t qmin = -128, qmax = 127;  // range the integer weight used (7-bit weights stay 7-bit)
  };
  struct Bias {
    std::string int_name;    // the int32 initializer
    Node dequantize;         // the removed DequantizeLinear (its output is the float bias's name)
  };
  std::vector<Weight> weights;
  std::vector<Bias> biases;
  std::vector<std::string> scales;      // float scale initializers of QuantizeLinear / DequantizeLinear
  std::set<std::string> sparse_weights; // float weights whose integer form was at least half zeros (pruned)
  bool active() const { return !weights.empty() || !scales.empty(); }
};

// True when the main graph has QuantizeLinear or DequantizeLinear nodes.
bool HasQdq(const Model& model);

// Rewrites the QDQ model for training (see above); the returned state undoes it.
QatState PrepareQat(Model& model);

// Writes the trained model back as QDQ with integer weights and biases.
void FinishQat(Model& model, const QatState& state);

}  // namespace compress::train
