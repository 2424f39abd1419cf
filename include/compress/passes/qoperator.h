// Conversion of a QDQ-format quantized graph to the QOperator format (--format qop).
#pragma once

#include "compress/ir/graph.h"
#include "compress/passes/pass.h"

namespace compress {

// Rewrites QDQ patterns of the main graph into integer operators of the default domain:
//   DQ(x) , DQ(w) [, DQ(b) int32] -> Conv   [-> Relu] -> Q  =>  QLinearConv
//   DQ(a) , DQ(b)                 -> MatMul [-> Relu] -> Q  =>  QLinearMatMul (b_scale per column allowed)
//   DQ(a) , DQ(b)                 -> MatMul (float output)  =>  MatMulInteger + Cast + Mul(scales)
//   DQ(x) , DQ(w) [, bias]        -> Conv   (float output)  =>  ConvInteger + Cast + Mul(scales) [+ Add]
//   DQ(a) , DQ(w) [, C]           -> Gemm                   =>  MatMulInteger + Cast + Mul(scales) [+ Add]
// (no QLinear Gemm in the default domain: a Q after a Gemm stays). The QLinear forms need the Q to be of the
// activation's type (what ONNX Runtime implements); a Relu between is absorbed only when the Q's zero point
// is its type's lowest value. Weights are stored in the activation's signedness (int8 + 128 next to uint8
// activations, same values) because ONNX Runtime's uint8 x int8 kernels saturate on x86 without VNNI, unless
// they are within [-64, 64], where they cannot; weights whose zero points differ between channels stay in
// QDQ form (ConvInteger takes one zero point).
// Patterns the default domain has no integer operator for (Add, Concat, pooling, ...) stay in QDQ form.
// A DQ/Q left without readers is removed, and so are initializers only they read. Counts "qlinear_conv",
// "qlinear_matmul", "matmul_integer", "conv_integer", and "kept_qdq" (nodes other than Q/DQ still reading a
// DQ output); notes why a Conv / MatMul / Gemm reading DQ outputs stays.
void ConvertQdqToQOperator(Model& model, PassContext& ctx);

}  // namespace compress
