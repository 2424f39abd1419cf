// The QDQ forms of the quantize pass: static (calibrated activations) and weights only. Both assume the
// caller has settled the opset: >= 10 always, >= 13 when per_channel is set.
#pragma once

#include <set>
#include <string>

#include "compress/calib/calibration.h"
#include "compress/ir/graph.h"
#include "compress/passes/pass.h"

namespace compress::passes {

inline constexpr int64_t kDefaultMinConvDepth = 64;

struct QdqOptions {
  bool per_channel = true;
  DType activation_type = DType::kUInt8;  // kUInt8 (asymmetric) or kInt8 (symmetric)
  RangeOptions range;                     // method and percentile; `symmetric` follows activation_type
  std::set<std::string> exclude_nodes, exclude_ops;
  // Static mode: a Conv whose reduction depth (input channels per group x kernel elements) is below this
  // stays float. Integer convolution kernels gain little on shallow reductions (a 3x3 stem over one input
  // channel, depthwise convolutions) and can be much slower than float ones: ONNX Runtime on AVX2 without
  // VNNI runs the sample CNN's 1-channel 3x3 stem 4x slower in INT8 than in float (BENCHMARKS.md). 0
  // quantizes every Conv.
  int64_t min_conv_depth = kDefaultMinConvDepth;
  // Bias scales (input scale x weight scales) computed by a Mul of the two stored scales instead of being
  // stored a second time. ONNX Runtime folds the Mul when it loads the model and still fuses the integer
  // kernels. Off when the QDQ graph is converted to QOperator form, which reads bias scales as constants.
  bool derive_bias_scales = true;
  // Weights-only mode: only LSTM, GRU and RNN weights (what dynamic quantization adds for them).
  bool recurrent_only = false;
};

// Op types that already carry quantized data; a model holding any of them is left alone.
bool IsQuantizedOp(const std::string& op_type);

// QuantizeLinear/DequantizeLinear pairs on the activations of the covered ops, int8 weights and int32
// biases behind DequantizeLinear. Needs ctx.calibration().
void QuantizeStaticQdq(Model& model, const QdqOptions& options, PassContext& ctx);

// int8 weights of Conv, ConvTranspose, Gemm, MatMul, Gather tables and LSTM/GRU/RNN (W and R) behind
// DequantizeLinear, in the main graph and in the bodies of If/Loop/Scan (a body's copy of a weight of an
// enclosing scope is stored in the body); all computation stays float.
void QuantizeWeightsOnly(Model& model, const QdqOptions& options, PassContext& ctx);

}  // namespace compress::passes
