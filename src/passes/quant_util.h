// Quantization arithmetic shared by the quantization passes: scales and zero points from ranges, and
// int8 weights / int32 biases from float tensors.
#pragma once

#include <cstdint>
#include <vector>

#include "compress/calib/calibration.h"
#include "compress/ir/tensor.h"

namespace compress::passes {

// Affine parameters x = (q - zero_point) * scale of one tensor or channel.
struct QuantParams {
  float scale = 1.0f;
  int32_t zero_point = 0;
};

// uint8 asymmetric ([0,255], zero point inside) or int8 symmetric ([-127,127], zero point 0) parameters
// for a range that contains 0. The scale is never 0, infinite or NaN.
QuantParams ActivationParams(const QuantRange& range, DType type);

// Symmetric int8 weights: q = round(w / scale) clamped to [-qmax, qmax], scale = max|w| / qmax per slice
// along `axis` (per channel), or over the whole tensor when axis < 0. All-zero slices get scale 1.
struct QuantizedWeight {
  Tensor values;               // int8, same shape as the weight
  std::vector<float> scales;   // one per slice along axis, or one
  int64_t axis = -1;
};
QuantizedWeight QuantizeWeightSymmetric(const Tensor& weight, int64_t axis, int qmax = 127);

// int32 bias with scale = input_scale * weight_scale[c] per channel (zero point 0):
// q = round(b / scale), saturated to int32. `weight_scales` has one entry, or one per channel.
Tensor QuantizeBias(const Tensor& bias, float input_scale, const std::vector<float>& weight_scales);

// A float32 tensor of the scales (rank 0 when there is one, rank 1 otherwise).
Tensor ScaleTensor(const std::vector<float>& scales, const std::string& name);
// int8 zeros shaped like a weight scale from ScaleTensor: a scalar for one channel, else [channels].
Tensor WeightZeroPoint(size_t channels);

}  // namespace compress::passes
