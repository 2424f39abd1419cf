// Exact 8-bit integer GEMM: uint8 activations times constant int8 or uint8 weights, int32 results equal to
// int32 wrapping accumulation of (x - x_zero_point) * (w - w_zero_point), with a fast path per instruction
// set (AVX-512 VNNI, 256-bit VNNI, AVX2) picked at run time, and the requantisation of the results to 8 bits.
// Used by the MatMul (weights on the right) and Conv (weights on the left) families; see qgemm.cc.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

namespace compress::kernels::qgemm {

// The implementations, each a complete kernel for the same contract:
//   kScalar         plain loops (the generic path, and the oracle the others are tested against);
//   kAvx2Maddubs    AVX2 vpmaddubsw + vpmaddwd: exact only for weights in [-64, 64] (a pair of products then
//                   cannot saturate int16); PackedWeights::seven_bit() says whether they are;
//   kAvx2Madd16     AVX2, both operands widened to 16 bits and vpmaddwd: exact for any weights;
//   kAvx512Vnni256  vpdpbusd on ymm registers (EVEX encoding, AVX512-VNNI + AVX512VL);
//   kAvxVnni        vpdpbusd on ymm registers (VEX encoding, AVX-VNNI);
//   kAvx512Vnni     vpdpbusd on zmm registers.
enum class Isa { kScalar, kAvx2Maddubs, kAvx2Madd16, kAvx512Vnni256, kAvxVnni, kAvx512Vnni };

const char* IsaName(Isa isa);
// The paths this CPU can run, in enum order (kScalar first).
std::vector<Isa> SupportedIsas();
// The path used when none is requested: the fastest this CPU supports (kAvx2Maddubs stands for the AVX2
// pair; weights that do not fit 7 bits run kAvx2Madd16). Chosen once.
Isa DefaultIsa();

// Int8 activations as uint8: x ^ 0x80 is x + 128 as a uint8 (their zero point moves by 128 too).
void FlipSign(const int8_t* src, int64_t n, uint8_t* dst);

// A 64-byte aligned buffer of at least `bytes` bytes per (thread, slot < 4), reused across calls, contents
// unspecified: for the callers' im2col matrices and accumulator blocks (the functions here have their own).
uint8_t* Scratch(int slot, int64_t bytes);
template <typename T>
T* ScratchOf(int slot, int64_t count) {
  return reinterpret_cast<T*>(Scratch(slot, count * static_cast<int64_t>(sizeof(T))));
}

// Owned, 64-byte aligned, zero-initialised bytes.
class AlignedBytes {
 public:
  AlignedBytes() = default;
  explicit AlignedBytes(int64_t n);
  uint8_t* data() { return data_.get(); }
  const uint8_t* data() const { return data_.get(); }

 private:
  struct Free {
    void operator()(uint8_t* p) const;
  };
  std::unique_ptr<uint8_t[], Free> data_;
};

// Constant weights packed once for the kernels, as w~ = w (int8) or w - 128 (uint8, so that w~ is int8), with
// the per-channel terms of the zero-point correction: with c = -zw (int8) or 128 - zw (uint8),
//   sum over depth of (x - zx)(w - zw) = sum x w~ - zx sum w~ + c sum x - c zx depth.
// Depth is padded to a multiple of 4 with zero weights.
class PackedWeights {
 public:
  // Weights on the left (convolution): w[i * depth + p] for output channel i < channels, p < depth; rows
  // RoundUp(depth, 4) bytes long.
  static PackedWeights Left(const uint8_t* w, bool is_signed, int64_t channels, int64_t depth,
                            const std::vector<int32_t>& zero_points);
  // Weights on the right (MatMul): w[p * channels + j] for p < depth, output column j < channels; panels of
  // 16 columns, 4 consecutive depths of a column in 4 consecutive bytes.
  static PackedWeights Right(const uint8_t* w, bool is_signed, int64_t depth, int64_t channels,
                             const std::vector<int32_t>& zero_points);

  PackedWeights() = default;
  bool empty() const { return data_.data() == nullptr; }
  bool left() const { return left_; }
  int64_t channels() const { return channels_; }
  int64_t depth() const { return depth_; }
  // Every w~ lies in [-64, 64]: kAvx2Maddubs is exact for these weights.
  bool seven_bit() const { return seven_bit_; }

  const uint8_t* data() const { return data_.data(); }
  // Per channel, padded with zeros to a multiple of 16: sum of w~ over the depth, and c.
  const int32_t* sums() const { return sums_.data(); }
  const int32_t* offsets() const { return offsets_.data(); }
  bool has_offsets() const { return has_offsets_; }  // some c != 0: the activation sums are needed

 private:
  PackedWeights(bool left, const uint8_t* w, bool is_signed, int64_t channels, int64_t depth,
                const std::vector<int32_t>& zero_points);

  bool left_ = false;
  int64_t channels_ = 0, depth_ = 0;
  bool seven_bit_ = true, has_offsets_ = false;
  AlignedBytes data_;
  std::vector<int32_t> sums_, offsets_;
};

// Weights on the left: C (rows x n, row stride ldc) = (W[row0, row0 + rows) - zw) * (X - x_zero_point), X the
// depth x n uint8 matrix x[p * ldx + j] (an im2col matrix). X is packed per call, so a call should cover all
// the rows that share it.
void MultiplyLeft(const PackedWeights& w, int64_t row0, int64_t rows, int64_t n, const uint8_t* x,
                  int64_t ldx, int32_t x_zero_point, int32_t* c, int64_t ldc,
                  std::optional<Isa> isa = std::nullopt);

// Weights on the right: C (m x n, row stride ldc) = (X - zx) * (W - zw), X the m x depth uint8 matrix
// x[i * ldx + p] read in place, zx of row i x_zero_points[i * x_zero_point_step] (step 0: one for all).
void MultiplyRight(int64_t m, const uint8_t* x, int64_t ldx, const int32_t* x_zero_points,
                   int64_t x_zero_point_step, const PackedWeights& w, int32_t* c, int64_t ldc,
                   std::optional<Isa> isa = std::nullopt);

// 8-bit outputs of a row of int32 accumulators, each exactly kernels::Requantize(acc + bias (wrapping),
// multiplier, zero_point, lo, hi) stored as a byte (int8 through its two's complement byte).
struct Requantization {
  const int32_t* bias = nullptr;  // null: none
  int64_t bias_step = 0;          // 0: one bias for the row, 1: one per element
  const float* multipliers = nullptr;
  int64_t multiplier_step = 0;
  int32_t zero_point = 0;
  int32_t lo = 0, hi = 255;  // [0, 255] for uint8, [-128, 127] for int8; lo = zero_point folds in a Relu
};
void Requantize(const int32_t* acc, int64_t n, const Requantization& q, uint8_t* out,
                std::optional<Isa> isa = std::nullopt);

}  // namespace compress::kernels::qgemm
