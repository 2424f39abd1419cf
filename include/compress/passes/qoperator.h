// Conversion of a QDQ-format quantized graph to the QOperator format (--format qop).
#pragma once

#include "compress/ir/graph.h"
#include "compress/passes/pass.h"

namespace compress {

// Rewrites QDQ patterns into integer operators of the default domain:
//   DQ(x) , DQ(w) [, DQ(b) int32] -> Conv   -> Q   =>  QLinearConv
//   DQ(a) , DQ(b)                 -> MatMul -> Q   =>  QLinearMatMul
//   DQ(a) , DQ(b)                 -> MatMul (float output, no Q after)  =>  MatMulInteger + Cast + Mul(scales)
//   DQ(x) , DQ(w)                 -> Conv   (float output, no Q after)  =>  ConvInteger + Cast + Mul(scales) [+ Add(bias)]
// Patterns the default domain has no integer operator for (Add, Concat, pooling, ...) stay in QDQ form.
// A DQ/Q left without readers is removed. Counts "qlinear_conv", "qlinear_matmul", "matmul_integer",
// "conv_integer", "kept_qdq" in ctx.
void ConvertQdqToQOperator(Model& model, PassContext& ctx);

}  // namespace compress
