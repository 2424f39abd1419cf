#include "fusion.h"

#include <algorithm>
#include <cstring>

#include "compress/util/half.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace compress::fusion {

namespace {
// Elements per block: the chain's values for one block (kMaxChainOps + 1 of them) stay in L1.
constexpr int64_t kBlock = 256;

template <ChainOp::Kind kKind>
float Scalar(float x, float y) {
  if constexpr (kKind == ChainOp::Kind::kAdd) {
    return x + y;
  } else if constexpr (kKind == ChainOp::Kind::kSub) {
    return x - y;
  } else if constexpr (kKind == ChainOp::Kind::kMul) {
    return x * y;
  } else {
    return x / y;
  }
}

#if defined(__SSE2__)
template <ChainOp::Kind kKind>
__m128 Vector(__m128 x, __m128 y) {
  if constexpr (kKind == ChainOp::Kind::kAdd) {
    return _mm_add_ps(x, y);
  } else if constexpr (kKind == ChainOp::Kind::kSub) {
    return _mm_sub_ps(x, y);
  } else if constexpr (kKind == ChainOp::Kind::kMul) {
    return _mm_mul_ps(x, y);
  } else {
    return _mm_div_ps(x, y);
  }
}
#endif

// out[j] = a[j] op b[j], where an operand flagged as a scalar is its element 0 for every j: four lanes at a
// time where SSE2 is there (the same IEEE operation per element as the scalar loop, so the same bits).
// out may be a or b.
template <ChainOp::Kind kKind>
void BinaryBlock(const float* a, bool a_scalar, const float* b, bool b_scalar, float* out, int64_t len) {
  int64_t j = 0;
#if defined(__SSE2__)
  const __m128 a1 = _mm_set1_ps(a[0]), b1 = _mm_set1_ps(b[0]);
  for (; j + 4 <= len; j += 4) {
    const __m128 x = a_scalar ? a1 : _mm_loadu_ps(a + j), y = b_scalar ? b1 : _mm_loadu_ps(b + j);
    _mm_storeu_ps(out + j, Vector<kKind>(x, y));
  }
#endif
  for (; j < len; ++j) out[j] = Scalar<kKind>(a[a_scalar ? 0 : j], b[b_scalar ? 0 : j]);
}
}  // namespace

bool ChainOpOf(const Node& node, ChainOp* op) {
  if (!node.IsDefaultDomain() || node.outputs.size() != 1) return false;
  const std::string& t = node.op_type;
  if (t == "Add" || t == "Sub" || t == "Mul" || t == "Div") {
    // Opset < 7 broadcasting is spelled with attributes; those nodes run unfused.
    if (node.inputs.size() != 2 || !node.attributes.empty()) return false;
    op->kind = t == "Add"   ? ChainOp::Kind::kAdd
               : t == "Sub" ? ChainOp::Kind::kSub
               : t == "Mul" ? ChainOp::Kind::kMul
                            : ChainOp::Kind::kDiv;
    return true;
  }
  if (node.inputs.size() != 1 || !node.attributes.empty()) return false;
  op->kind = ChainOp::Kind::kUnary;
  op->unary = kernels::FastUnaryFloatMap(t);
  return op->unary != nullptr;
}

bool BoundChain::Bind(const std::vector<int64_t>& dims) {
  int64_t total = 1;
  for (int64_t d : dims) total *= d;
  row_ = dims.empty() ? 1 : std::max<int64_t>(1, dims.back());
  forms_.clear();
  data_.clear();
  for (const Tensor* t : extras_) {
    if (t == nullptr || t->dtype() != DType::kFloat || t->rank() > static_cast<int64_t>(dims.size())) return false;
    // Right-aligned against dims: every dim equal (a tensor of the same elements), or all 1 but a last one
    // equal to the output's (a vector along the last axis).
    const size_t lead = dims.size() - static_cast<size_t>(t->rank());
    bool same = true, row = !dims.empty();
    for (size_t d = 0; d < static_cast<size_t>(t->rank()); ++d) {
      const int64_t td = t->dims()[d], od = dims[lead + d];
      same = same && td == od;
      const bool last = lead + d + 1 == dims.size();
      row = row && (last ? td == od : td == 1);
    }
    if (t->numel() == 1) {
      forms_.push_back(Form::kScalar);
    } else if (same && t->numel() == total) {
      forms_.push_back(Form::kFull);
    } else if (row) {
      forms_.push_back(Form::kRow);
    } else {
      return false;
    }
    data_.push_back(t->data<float>());
  }
  return true;
}

void BoundChain::Apply(float* y, int64_t offset, int64_t count) const {
  // Value 0 is read in place and the last op writes in place; the others live in blocks on the stack.
  alignas(64) float values[kMaxChainOps + 1][kBlock];
  alignas(64) float row[2][kBlock];
  const size_t last = chain_.ops.size();
  for (int64_t i0 = 0; i0 < count; i0 += kBlock) {
    const int64_t len = std::min(kBlock, count - i0);
    const int64_t at = offset + i0;  // index of the block's first element in the output
    float* block = y + i0;
    if (round_to_half_) RoundToHalfArray(block, len);
    // Operand `o` over the block, and whether it is one scalar for all; vectors along the last axis are
    // gathered into scratch `k`.
    auto source = [&](int o, int k, bool* scalar) -> const float* {
      *scalar = false;
      if (o == 0) return block;
      if (o > 0) return values[o];
      const size_t e = static_cast<size_t>(-o - 1);
      const float* d = data_[e];
      switch (forms_[e]) {
        case Form::kScalar:
          *scalar = true;
          return d;
        case Form::kFull:
          return d + at;
        case Form::kRow:
          for (int64_t j = 0, c = at % row_; j < len; c = 0) {
            const int64_t run = std::min(row_ - c, len - j);
            std::memcpy(row[k] + j, d + c, sizeof(float) * static_cast<size_t>(run));
            j += run;
          }
          return row[k];
      }
      return nullptr;
    };
    for (size_t k = 0; k < last; ++k) {
      const ChainOp& op = chain_.ops[k];
      float* out = k + 1 == last ? block : values[k + 1];
      bool a_scalar = false, b_scalar = false;
      const float* a = source(op.a, 0, &a_scalar);
      if (op.kind == ChainOp::Kind::kUnary) {
        // A unary op of a scalar extra input is not a chain op: its input is the chain's value.
        op.unary(a, out, len);
        if (round_to_half_) RoundToHalfArray(out, len);
        continue;
      }
      const float* b = source(op.b, 1, &b_scalar);
      switch (op.kind) {
        case ChainOp::Kind::kAdd:
          BinaryBlock<ChainOp::Kind::kAdd>(a, a_scalar, b, b_scalar, out, len);
          break;
        case ChainOp::Kind::kSub:
          BinaryBlock<ChainOp::Kind::kSub>(a, a_scalar, b, b_scalar, out, len);
          break;
        case ChainOp::Kind::kMul:
          BinaryBlock<ChainOp::Kind::kMul>(a, a_scalar, b, b_scalar, out, len);
          break;
        case ChainOp::Kind::kDiv:
          BinaryBlock<ChainOp::Kind::kDiv>(a, a_scalar, b, b_scalar, out, len);
          break;
        case ChainOp::Kind::kUnary:
          break;
      }
      if (round_to_half_) RoundToHalfArray(out, len);
    }
  }
}

}  // namespace compress::fusion
