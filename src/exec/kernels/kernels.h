// Registration of the built-in kernel families; KernelRegistry::Default() calls each of these once.
// An explicit list rather than static self-registration, which static linking silently drops.
#pragma once

#include <cstdint>
#include <string>

#include <cstdint>
#include <string>

#include "compress/exec/kernel.h"

namespace compress::kernels {

void RegisterElementwiseKernels(KernelRegistry& r);  // elementwise.cc: unary, binary, variadic, Where, Cast
void RegisterReduceKernels(KernelRegistry& r);       // reduce.cc: Reduce*, ArgMax, ArgMin
void RegisterNormKernels(KernelRegistry& r);         // norm.cc: Softmax, LogSoftmax, *Normalization
void RegisterShapeKernels(KernelRegistry& r);        // shape.cc: data movement and shape ops
void RegisterResizeKernels(KernelRegistry& r);       // resize.cc: Resize, Upsample, Pad
void RegisterMatMulKernels(KernelRegistry& r);       // matmul.cc: Gemm, MatMul, MatMulInteger, QLinearMatMul
void RegisterConvKernels(KernelRegistry& r);         // conv.cc: Conv, ConvTranspose, ConvInteger, QLinearConv
void RegisterPoolKernels(KernelRegistry& r);         // pool.cc: MaxPool, AveragePool, Global*Pool
void RegisterQuantKernels(KernelRegistry& r);        // quant.cc: QuantizeLinear, DequantizeLinear, Dynamic*
void RegisterControlKernels(KernelRegistry& r);      // control.cc: If, Loop
void RegisterRnnKernels(KernelRegistry& r);          // rnn.cc: LSTM


// y[i] = f(x[i]) for i < n with the float32 function of a unary op's fast kernel, computing the same bits as
// that kernel wherever x and n start (so a fused chain equals the unfused nodes); nullptr for ops whose
// function has attributes or no such path. From elementwise.cc.
using FloatMap = void (*)(const float* x, float* y, int64_t n);
FloatMap FastUnaryFloatMap(const std::string& op_type);

}  // namespace compress::kernels
