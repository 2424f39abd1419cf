// Dynamic INT8 quantization (--int8 --dynamic): weights int8 ahead of time, activations quantized at run
// time by DynamicQuantizeLinear, integer MatMul/Conv.
#pragma once

#include <nlohmann/json.hpp>

#include "compress/ir/graph.h"
#include "compress/passes/pass.h"

namespace compress {

// Rewrites every MatMul / Gemm (constant 2-D weight) and Conv (constant weight) of the main graph not
// excluded by options["exclude_nodes"] / options["exclude_ops"] into
//   x -> DynamicQuantizeLinear -> (xq, xs, xzp)
//     -> MatMulInteger(xq, Wq, xzp, 128) -> Cast(float) -> Mul(xs * ws) [-> Add(b)]
// (ConvInteger for Conv). Weights int8 symmetric, per channel when options["per_channel"], stored as uint8
// q + 128 with zero point 128: ONNX Runtime's uint8 x int8 kernels saturate on x86 without VNNI, uint8 x
// uint8 is exact. Activations are uint8 whatever options["activation_type"] says (DynamicQuantizeLinear has
// no int8 form). A model below opset 11 is converted to 11 first; if that fails, everything stays in float.
// Counts "matmul_integer", "conv_integer", "dynamic_quantize_linear", "float_nodes"; notes nodes left in
// float and why, and lists them in details["float_nodes"] as {"node", "op", "why"}; details["opset"] is
// {"from", "to"} after a conversion.
void QuantizeDynamic(Model& model, const nlohmann::json& options, PassContext& ctx);

}  // namespace compress
