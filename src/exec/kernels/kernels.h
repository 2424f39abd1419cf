// Registration of the built-in kernel families; KernelRegistry::Default() calls each of these once.
// An explicit list rather than static self-registration, which static linking silently drops.
#pragma once

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

}  // namespace compress::kernels
