// Backward rules of Gemm and MatMul.
//
// Y = alpha * op(A) op(B) + beta * C:  d op(A) = alpha dY op(B)^T,  d op(B) = alpha op(A)^T dY,
// dC = beta * dY summed over the axes C was broadcast along.
// MatMul (numpy semantics): per batch matrix dA = dY B^T, dB = A^T dY; a 1-D operand is a row (A) or a
// column (B) vector; batch axes an operand was broadcast along are summed.
#include <Eigen/Dense>
#include <type_traits>

#include "compress/exec/thread_pool.h"
#include "train/grad_common.h"

namespace compress::train {
namespace {

template <typename T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using ConstMap = Eigen::Map<const RowMat<T>>;
template <typename T>
using MutMap = Eigen::Map<RowMat<T>>;

void GemmBackward(GradContext& ctx) {
  const Tensor& a = ctx.required_input(0);
  const Tensor& b = ctx.required_input(1);
  const Tensor* dy = ctx.output_grad(0);
  if (dy == nullptr) return;
  const bool ta = ctx.node().AttrInt("transA", 0) != 0;
  const bool tb = ctx.node().AttrInt("transB", 0) != 0;
  const double alpha = ctx.node().AttrFloat("alpha", 1.0f);
  const double beta = ctx.node().AttrFloat("beta", 1.0f);
  if (a.rank() != 2 || b.rank() != 2) ctx.Fail("Gemm inputs must be 2-D");
  if (dy->dtype() == DType::kFloat && a.dtype() == DType::kFloat && b.dtype() == DType::kFloat) {
    // Float32 on the executor's GEMM. op(A) is M x K, op(B) K x N; strides express the transposes.
    const int64_t M = ta ? a.dims()[1] : a.dims()[0], K = ta ? a.dims()[0] : a.dims()[1];
    const int64_t N = tb ? b.dims()[0] : b.dims()[1];
    const float* pa = a.data<float>();
    const float* pb = b.data<float>();
    const float* g = dy->data<float>();
    // op(A)(i, p) = A[ta ? p*M+i : i*K+p]; op(B)(p, j) = B[tb ? j*K+p : p*N+j].
    if (ctx.wanted(0)) {
      Tensor da = Tensor::Uninitialized(a.dtype(), a.dims());
      if (!ta) {  // dA (M x K) = G (M x N) op(B)^T (N x K)
        MatMulF32(ctx.pool(), M, K, N, g, N, 1, pb, tb ? K : 1, tb ? 1 : N, da.mutable_data<float>(), false);
      } else {    // dA (K x M) = op(B) (K x N) G^T (N x M)
        MatMulF32(ctx.pool(), K, M, N, pb, tb ? 1 : N, tb ? K : 1, g, 1, N, da.mutable_data<float>(), false);
      }
      if (alpha != 1.0) {
        float* p = da.mutable_data<float>();
        for (int64_t i = 0; i < da.numel(); ++i) p[i] *= static_cast<float>(alpha);
      }
      ctx.SetInputGrad(0, std::move(da));
    }
    if (ctx.wanted(1)) {
      Tensor db = Tensor::Uninitialized(b.dtype(), b.dims());
      if (!tb) {  // dB (K x N) = op(A)^T (K x M) G (M x N)
        MatMulF32(ctx.pool(), K, N, M, pa, ta ? M : 1, ta ? 1 : K, g, N, 1, db.mutable_data<float>(), false);
      } else {    // dB (N x K) = G^T (N x M) op(A) (M x K)
        MatMulF32(ctx.pool(), N, K, M, g, 1, N, pa, ta ? 1 : K, ta ? M : 1, db.mutable_data<float>(), false);
      }
      if (alpha != 1.0) {
        float* p = db.mutable_data<float>();
        for (int64_t i = 0; i < db.numel(); ++i) p[i] *= static_cast<float>(alpha);
      }
      ctx.SetInputGrad(1, std::move(db));
    }
    if (ctx.wanted(2) && ctx.input(2) != nullptr) {
      Tensor dc = ReduceToShape(*dy, ctx.input(2)->dims());
      if (beta != 1.0) {
        float* p = dc.mutable_data<float>();
        for (int64_t i = 0; i < dc.numel(); ++i) p[i] *= static_cast<float>(beta);
      }
      ctx.SetInputGrad(2, std::move(dc));
    }
    return;
  }
  DispatchFloat(ctx, dy->dtype(), [&](auto tag) {
    using T = decltype(tag);
    ConstMap<T> A(a.data<T>(), a.dims()[0], a.dims()[1]);
    ConstMap<T> B(b.data<T>(), b.dims()[0], b.dims()[1]);
    ConstMap<T> G(dy->data<T>(), dy->dims()[0], dy->dims()[1]);
    if (ctx.wanted(0)) {
      Tensor da = Tensor::Uninitialized(a.dtype(), a.dims());
      MutMap<T> DA(da.mutable_data<T>(), a.dims()[0], a.dims()[1]);
      // op(A)' = alpha G op(B)^T, op(B)^T = tb ? B : B^T.
      if (!ta) {
        if (tb) DA.noalias() = G * B; else DA.noalias() = G * B.transpose();
      } else {
        if (tb) DA.noalias() = B.transpose() * G.transpose(); else DA.noalias() = B * G.transpose();
      }
      if (alpha != 1.0) DA *= static_cast<T>(alpha);
      ctx.SetInputGrad(0, std::move(da));
    }
    if (ctx.wanted(1)) {
      Tensor db = Tensor::Uninitialized(b.dtype(), b.dims());
      MutMap<T> DB(db.mutable_data<T>(), b.dims()[0], b.dims()[1]);
      // op(B)' = alpha op(A)^T G, op(A)^T = ta ? A : A^T.
      if (!tb) {
        if (ta) DB.noalias() = A * G; else DB.noalias() = A.transpose() * G;
      } else {
        if (ta) DB.noalias() = G.transpose() * A.transpose(); else DB.noalias() = G.transpose() * A;
      }
      if (alpha != 1.0) DB *= static_cast<T>(alpha);
      ctx.SetInputGrad(1, std::move(db));
    }
    if (ctx.wanted(2) && ctx.input(2) != nullptr) {
      Tensor dc = ReduceToShape(*dy, ctx.input(2)->dims());
      if (beta != 1.0) {
        T* p = dc.mutable_data<T>();
        for (int64_t i = 0; i < dc.numel(); ++i) p[i] *= static_cast<T>(beta);
      }
      ctx.SetInputGrad(2, std::move(dc));
    }
  });
}

void MatMulBackward(GradContext& ctx) {
  const Tensor& a = ctx.required_input(0);
  const Tensor& b = ctx.required_input(1);
  const Tensor* dy = ctx.output_grad(0);
  if (dy == nullptr) return;
  if (a.rank() < 1 || b.rank() < 1) ctx.Fail("MatMul inputs must have rank >= 1");
  // Promote 1-D operands to matrices.
  std::vector<int64_t> ad = a.dims(), bd = b.dims();
  if (ad.size() == 1) ad.insert(ad.begin(), 1);
  if (bd.size() == 1) bd.push_back(1);
  const int64_t m = ad[ad.size() - 2], k = ad.back(), n = bd.back();
  if (bd[bd.size() - 2] != k) ctx.Fail("MatMul inner dimensions differ");
  const std::vector<int64_t> abatch(ad.begin(), ad.end() - 2), bbatch(bd.begin(), bd.end() - 2);
  const size_t rank = std::max(abatch.size(), bbatch.size());
  std::vector<int64_t> batch(rank, 1);
  for (size_t i = 0; i < rank; ++i) {
    const int64_t x = i + abatch.size() >= rank ? abatch[i + abatch.size() - rank] : 1;
    const int64_t y = i + bbatch.size() >= rank ? bbatch[i + bbatch.size() - rank] : 1;
    if (x != y && x != 1 && y != 1) ctx.Fail("MatMul batch dimensions do not broadcast");
    batch[i] = std::max(x, y);
  }
  int64_t nb = 1;
  for (const int64_t d : batch) nb *= d;
  DispatchFloat(ctx, dy->dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* G = dy->data<T>();
    if (bbatch.empty() || ShapeElementCount(bbatch) == 1) {
      // B is one matrix shared by every batch: fold the batch into the rows of A.
      const int64_t rows = nb * m;
      ConstMap<T> A(a.data<T>(), rows, k);
      ConstMap<T> B(b.data<T>(), k, n);
      ConstMap<T> GM(G, rows, n);
      if (ShapeElementCount(abatch) != nb) ctx.Fail("MatMul: unexpected broadcast of A");
      if constexpr (std::is_same_v<T, float>) {
        if (ctx.wanted(0)) {  // dA (rows x k) = G (rows x n) B^T
          Tensor da = Tensor::Uninitialized(a.dtype(), a.dims());
          MatMulF32(ctx.pool(), rows, k, n, G, n, 1, b.data<float>(), 1, n, da.mutable_data<float>(), false);
          ctx.SetInputGrad(0, std::move(da));
        }
        if (ctx.wanted(1)) {  // dB (k x n) = A^T G
          Tensor db = Tensor::Uninitialized(b.dtype(), b.dims());
          MatMulF32(ctx.pool(), k, n, rows, a.data<float>(), 1, k, G, n, 1, db.mutable_data<float>(), false);
          ctx.SetInputGrad(1, std::move(db));
        }
        return;
      }
      if (ctx.wanted(0)) {
        Tensor da = Tensor::Uninitialized(a.dtype(), a.dims());
        MutMap<T>(da.mutable_data<T>(), rows, k).noalias() = GM * B.transpose();
        ctx.SetInputGrad(0, std::move(da));
      }
      if (ctx.wanted(1)) {
        Tensor db = Tensor::Uninitialized(b.dtype(), b.dims());
        MutMap<T>(db.mutable_data<T>(), k, n).noalias() = A.transpose() * GM;
        ctx.SetInputGrad(1, std::move(db));
      }
      return;
    }
    std::vector<int64_t> afull = batch, bfull = batch;
    afull.push_back(m);
    afull.push_back(k);
    bfull.push_back(k);
    bfull.push_back(n);
    std::vector<int64_t> a2 = abatch, b2 = bbatch;
    a2.push_back(m);
    a2.push_back(k);
    b2.push_back(k);
    b2.push_back(n);
    Tensor A = a;
    A.Reshape(a2);
    Tensor B = b;
    B.Reshape(b2);
    A = BroadcastTo(A, afull);
    B = BroadcastTo(B, bfull);
    Tensor da = Tensor::Uninitialized(a.dtype(), afull), db = Tensor::Uninitialized(b.dtype(), bfull);
    // One product pair per batch matrix, each written by one task: no dependence on the threads.
    auto run = [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const T* Ap = A.data<T>() + i * m * k;
        const T* Bp = B.data<T>() + i * k * n;
        const T* Gp = G + i * m * n;
        if constexpr (std::is_same_v<T, float>) {
          // dA (m x k) = G (m x n) B^T; dB (k x n) = A^T G, on the executor's GEMM.
          if (ctx.wanted(0)) MatMulF32(nullptr, m, k, n, Gp, n, 1, Bp, 1, n, da.mutable_data<float>() + i * m * k, false);
          if (ctx.wanted(1)) MatMulF32(nullptr, k, n, m, Ap, 1, k, Gp, n, 1, db.mutable_data<float>() + i * k * n, false);
        } else {
          ConstMap<T> Ai(Ap, m, k);
          ConstMap<T> Bi(Bp, k, n);
          ConstMap<T> Gi(Gp, m, n);
          if (ctx.wanted(0)) MutMap<T>(da.mutable_data<T>() + i * m * k, m, k).noalias() = Gi * Bi.transpose();
          if (ctx.wanted(1)) MutMap<T>(db.mutable_data<T>() + i * k * n, k, n).noalias() = Ai.transpose() * Gi;
        }
      }
    };
    if (ctx.pool() != nullptr && nb > 1) {
      ctx.pool()->ParallelFor(nb, 1, run);
    } else {
      run(0, nb);
    }
    if (ctx.wanted(0)) {
      Tensor r = ReduceToShape(da, a2);
      r.Reshape(a.dims());
      ctx.SetInputGrad(0, std::move(r));
    }
    if (ctx.wanted(1)) {
      Tensor r = ReduceToShape(db, b2);
      r.Reshape(b.dims());
      ctx.SetInputGrad(1, std::move(r));
    }
  });
}

}  // namespace

void AddMatMulGrads(BackwardRegistry& r) {
  r.Add({"Gemm", 1, 1000, GemmBackward, {0, 1, 2}});
  r.Add({"MatMul", 1, 1000, MatMulBackward, {0, 1}});
}

}  // namespace compress::train
