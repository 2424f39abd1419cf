#include "train/grad_common.h"

#include <algorithm>

#include "compress/exec/thread_pool.h"
#include "compress/util/error.h"
#include "exec/kernels/common.h"

namespace compress::train {

void AddInto(Tensor& acc, const Tensor& g) {
  if (acc.dims() != g.dims() || acc.dtype() != g.dtype()) {
    ThrowInternal("gradient accumulation of " + ShapeToString(g.dims()) + " into " + ShapeToString(acc.dims()));
  }
  if (acc.dtype() == DType::kFloat) {
    float* a = acc.mutable_data<float>();
    const float* b = g.data<float>();
    for (int64_t i = 0; i < acc.numel(); ++i) a[i] += b[i];
  } else if (acc.dtype() == DType::kDouble) {
    double* a = acc.mutable_data<double>();
    const double* b = g.data<double>();
    for (int64_t i = 0; i < acc.numel(); ++i) a[i] += b[i];
  } else {
    ThrowInternal(std::string("gradient accumulation in ") + DTypeName(acc.dtype()));
  }
}

std::vector<int64_t> RowStrides(const std::vector<int64_t>& dims) {
  std::vector<int64_t> s(dims.size(), 1);
  for (size_t d = dims.size(); d-- > 1;) s[d - 1] = s[d] * dims[d];
  return s;
}

namespace {

// Strides of `in` (right-aligned) seen from `out`, 0 along broadcast axes.
std::vector<int64_t> StridesFrom(const std::vector<int64_t>& in, const std::vector<int64_t>& out) {
  std::vector<int64_t> s(out.size(), 0);
  const auto is = RowStrides(in);
  const size_t off = out.size() - in.size();
  for (size_t d = 0; d < in.size(); ++d) s[off + d] = in[d] == 1 && out[off + d] != 1 ? 0 : is[d];
  return s;
}

template <typename Fn>
void Walk(const std::vector<int64_t>& out, const std::vector<int64_t>& strides, Fn&& fn) {
  const int64_t n = ShapeElementCount(out);
  std::vector<int64_t> idx(out.size(), 0);
  int64_t off = 0;
  for (int64_t i = 0; i < n; ++i) {
    fn(i, off);
    for (size_t d = out.size(); d-- > 0;) {
      ++idx[d];
      off += strides[d];
      if (idx[d] < out[d]) break;
      off -= strides[d] * idx[d];
      idx[d] = 0;
    }
  }
}

}  // namespace

// Calls fn(row, offset, inner, inner_stride) for every row along the last axis of `dims` (a row of `inner`
// elements starting at row * inner), with the offset of its first element in a tensor whose strides seen
// from `dims` are `strides` and that tensor's stride along the last axis (0 when broadcast along it).
template <typename Fn>
void WalkRows(const std::vector<int64_t>& dims, const std::vector<int64_t>& strides, Fn&& fn) {
  const int64_t inner = dims.back(), inner_stride = strides.back();
  const std::vector<int64_t> outer_dims(dims.begin(), dims.end() - 1);
  const std::vector<int64_t> outer_strides(strides.begin(), strides.end() - 1);
  Walk(outer_dims, outer_strides, [&](int64_t row, int64_t off) { fn(row, off, inner, inner_stride); });
}

// Row by row: the target either keeps the last axis (stride 1: add the row in) or was broadcast along it
// (stride 0: add the row's sum). The order of the sums is fixed by the shapes.
template <typename T>
void ReduceRows(const Tensor& grad, const std::vector<int64_t>& strides, Tensor& out) {
  const T* g = grad.data<T>();
  T* o = out.mutable_data<T>();
  WalkRows(grad.dims(), strides, [&](int64_t row, int64_t off, int64_t inner, int64_t inner_stride) {
    const T* src = g + row * inner;
    if (inner_stride == 0) {
      T sum = 0;
      for (int64_t j = 0; j < inner; ++j) sum += src[j];
      o[off] += sum;
    } else {
      for (int64_t j = 0; j < inner; ++j) o[off + j] += src[j];
    }
  });
}

Tensor ReduceToShape(const Tensor& grad, const std::vector<int64_t>& shape) {
  if (grad.dims() == shape) return grad;
  if (shape.size() > grad.dims().size()) ThrowInternal("ReduceToShape: target of higher rank");
  Tensor out(grad.dtype(), shape);  // zeros: rows are added in
  if (grad.numel() == 0) return out;
  const auto strides = StridesFrom(shape, grad.dims());
  if (grad.dtype() == DType::kFloat) {
    ReduceRows<float>(grad, strides, out);
  } else {
    ReduceRows<double>(grad, strides, out);
  }
  return out;
}

// Row by row: copy the source row (stride 1) or repeat its one element (stride 0).
template <typename T>
void BroadcastRows(const Tensor& t, const std::vector<int64_t>& dims, const std::vector<int64_t>& strides, Tensor& out) {
  const T* src = t.data<T>();
  T* o = out.mutable_data<T>();
  WalkRows(dims, strides, [&](int64_t row, int64_t off, int64_t inner, int64_t inner_stride) {
    T* dst = o + row * inner;
    if (inner_stride == 0) {
      std::fill(dst, dst + inner, src[off]);
    } else {
      std::copy(src + off, src + off + inner, dst);
    }
  });
}

Tensor BroadcastTo(const Tensor& t, const std::vector<int64_t>& dims) {
  if (t.dims() == dims) return t;
  Tensor out = Tensor::Uninitialized(t.dtype(), dims);
  if (out.numel() == 0) return out;
  const auto strides = StridesFrom(t.dims(), dims);
  if (t.dtype() == DType::kFloat) {
    BroadcastRows<float>(t, dims, strides, out);
  } else {
    BroadcastRows<double>(t, dims, strides, out);
  }
  return out;
}

int64_t NormAxis(const GradContext& ctx, int64_t axis, int64_t rank) {
  if (axis < -rank || axis >= std::max<int64_t>(rank, 1)) {
    ctx.Fail("axis " + std::to_string(axis) + " is out of range for rank " + std::to_string(rank));
  }
  return axis < 0 ? axis + rank : axis;
}

void MatMulF32(ThreadPool* pool, int64_t m, int64_t n, int64_t k, const float* a, int64_t a_rs, int64_t a_cs,
               const float* b, int64_t b_rs, int64_t b_cs, float* c, bool accumulate) {
  namespace gemm = kernels::gemm;
  if (m <= 0 || n <= 0) return;
  const gemm::Init init = accumulate ? gemm::Init::kAccumulate : gemm::Init::kZero;
  if (k <= 0) {
    if (!accumulate) std::fill(c, c + m * n, 0.0f);
    return;
  }
  // A row-major left operand is read in place (as the forward MatMul reads its activations); a transposed
  // one is packed. Without a pool (one task, e.g. one of many small batched products) the packing goes to
  // this thread's scratch buffers instead of fresh allocations.
  const bool a_in_place = a_cs == 1;
  constexpr int64_t kRowBlock = gemm::kMr * 8;
  const int64_t blocks = (m + kRowBlock - 1) / kRowBlock;
  const bool serial = pool == nullptr || blocks <= 1;
  gemm::AlignedFloats own_a, own_b;
  float* pa = nullptr;
  float* pb = nullptr;
  if (serial) {
    pb = gemm::Scratch(1, gemm::PackedBSize(k, n));
    if (!a_in_place) pa = gemm::Scratch(2, gemm::PackedASize(m, k));
  } else {
    own_b = gemm::AlignedFloats(gemm::PackedBSize(k, n));
    pb = own_b.data();
    if (!a_in_place) {
      own_a = gemm::AlignedFloats(gemm::PackedASize(m, k));
      pa = own_a.data();
    }
  }
  if (!a_in_place) gemm::PackA(a, a_rs, a_cs, m, k, 1.0f, pa);
  gemm::PackB(b, b_rs, b_cs, k, n, pb);
  // Row blocks of whole micro-panels, fixed in size so that the split does not depend on the thread count.
  auto run = [&](int64_t begin, int64_t end) {
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t r0 = blk * kRowBlock, rows = std::min(kRowBlock, m - r0);
      const gemm::AView av = a_in_place ? gemm::AView{a + r0 * a_rs, a_rs} : gemm::AView{pa + r0 * k};
      gemm::Multiply(rows, n, k, av, gemm::BView{pb, gemm::kNr, k * gemm::kNr}, c + r0 * n, n, init);
    }
  };
  if (!serial) {
    pool->ParallelFor(blocks, 1, run);
  } else {
    run(0, blocks);
  }
}

std::vector<int64_t> ReadInts(const Tensor& t) {
  std::vector<int64_t> v(static_cast<size_t>(t.numel()));
  if (t.dtype() == DType::kInt64) {
    for (int64_t i = 0; i < t.numel(); ++i) v[static_cast<size_t>(i)] = t.data<int64_t>()[i];
  } else if (t.dtype() == DType::kInt32) {
    for (int64_t i = 0; i < t.numel(); ++i) v[static_cast<size_t>(i)] = t.data<int32_t>()[i];
  } else {
    ThrowInvalid(std::string("expected an int32 or int64 tensor, got ") + DTypeName(t.dtype()));
  }
  return v;
}

}  // namespace compress::train
