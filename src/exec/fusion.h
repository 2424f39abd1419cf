// Element-wise chains the executor fuses behind a Conv, MatMul or Gemm kernel (see Kernel::AcceptsEpilogue).
//
//   Before:  X -> Conv -> t0 -> Add(t0, R) -> t1 -> Relu -> Y
//   After:   X -> Conv[epilogue: v1 = v0 + R; v2 = Relu(v1)] -> Y
//
// The chain is evaluated on blocks of the kernel's output right after the kernel computes them, so the
// intermediate tensors are never written to memory. Every element goes through the same IEEE operations and
// the same unary functions as in the unfused kernels, so the fused result is bit-identical to running the
// nodes one by one; that is what lets calibration and training (which observe every value and run unfused)
// agree with evaluation (fused).
#pragma once

#include <cstdint>
#include <vector>

#include "compress/exec/kernel.h"
#include "kernels/kernels.h"

namespace compress::fusion {

struct ChainOp {
  enum class Kind { kAdd, kSub, kMul, kDiv, kUnary };
  Kind kind = Kind::kAdd;
  kernels::FloatMap unary = nullptr;  // kUnary
  // Operands: a chain value (>= 0; value 0 is the head kernel's output, value i + 1 the result of op i) or
  // an extra input, -(1 + index into Chain::extras).
  int a = 0, b = 0;
};

struct Chain {
  std::vector<ChainOp> ops;
  size_t extras = 0;  // tensors read besides the chain's own values (bias, residual, constants)
};

// Longest chain the executor fuses; each value takes a block of stack in Apply.
constexpr size_t kMaxChainOps = 8;

// The op of a node that a chain can hold, or false (unsupported op type, attributes, arity).
bool ChainOpOf(const Node& node, ChainOp* op);

// A chain bound to the tensors of one run.
class BoundChain final : public Epilogue {
 public:
  // round_to_half: the nodes compute in float32 on float16 values (Executor's float16 handling), so every
  // value is rounded to float16 as the unfused nodes store it.
  BoundChain(const Chain& chain, std::vector<const Tensor*> extras, bool round_to_half = false)
      : chain_(chain), extras_(std::move(extras)), round_to_half_(round_to_half) {}
  // Checks that every extra input is float32 and broadcasts to `dims` without enlarging it as a scalar, a
  // tensor of the same elements, or a vector along the last axis; false otherwise (the nodes then run
  // unfused).
  bool Bind(const std::vector<int64_t>& dims);
  void Apply(float* y, int64_t offset, int64_t count) const override;

 private:
  enum class Form { kScalar, kFull, kRow };
  const Chain& chain_;
  std::vector<const Tensor*> extras_;
  std::vector<Form> forms_;
  std::vector<const float*> data_;
  int64_t row_ = 1;  // length of the last axis
  bool round_to_half_ = false;
};

}  // namespace compress::fusion
