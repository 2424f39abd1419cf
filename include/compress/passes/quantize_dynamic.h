// Dynamic INT8 quantization (--int8 --dynamic): weights int8 ahead of time, activations quantized at run
// time by DynamicQuantizeLinear, integer MatMul/Conv.
#pragma once

#include <nlohmann/json.hpp>

#include "compress/ir/graph.h"
#include "compress/passes/pass.h"

namespace compress {

// Rewrites every MatMul / Gemm (constant 2-D weight) and Conv (constant weight) not excluded by
// options["exclude_nodes"] / options["exclude_ops"] into
//   x -> DynamicQuantizeLinear -> (xq, xs, xzp) -> MatMulInteger(xq, Wq, xzp) -> Cast(float) -> Mul(xs * ws) [-> Add(b)]
// (ConvInteger for Conv). Weights int8 symmetric, per channel when options["per_channel"].
// Counts "matmul_integer", "conv_integer"; notes nodes left in float and why.
void QuantizeDynamic(Model& model, const nlohmann::json& options, PassContext& ctx);

}  // namespace compress
