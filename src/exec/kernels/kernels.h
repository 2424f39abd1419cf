// Registration of the built-in kernel families; KernelRegistry::Default() calls each of these once.
// An explicit list rather than static self-registration, which static linking silently drops.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

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

// One DequantizeLinear -> Conv / Gemm / MatMul -> [Relu] -> QuantizeLinear group of a QDQ model, to run in
// integers (qdq.cc): the quantisation parameters, all per tensor except the weights' (per output channel or
// one). Weights keep the node's layout (Conv [M, C/g, k...], Gemm [N, K] with transB or [K, N], MatMul
// [K, N]). Gemm groups have transA = 0 and alpha = beta = 1; MatMul groups 2-D weights.
struct QuantizedLinear {
  const Node* node = nullptr;  // the Conv / Gemm / MatMul (attributes)
  float x_scale = 1;
  int32_t x_zero = 0;
  DType x_type = DType::kUInt8;
  Tensor w_q;
  std::vector<float> w_scale;
  std::vector<int32_t> w_zero;
  std::vector<float> bias;  // float, per output channel (or one); empty: none
  float y_scale = 1;
  int32_t y_zero = 0;
  DType y_type = DType::kUInt8;
  bool relu = false;  // a Relu sits between the product and the QuantizeLinear
};
// Whether this CPU has a SIMD integer GEMM (without one the float-simulated graph is faster).
bool QuantizedLinearSupported();
// A kernel from the group's quantised input (input 0) to its quantised output (output 0).
std::unique_ptr<Kernel> MakeQuantizedLinearKernel(const QuantizedLinear& q, int64_t opset);

}  // namespace compress::kernels
