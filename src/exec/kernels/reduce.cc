// Reductions over a set of axes (ReduceSum, ReduceMean, ...) and ArgMax / ArgMin along one axis.
//
// Each output element is reduced by one thread, visiting its inputs in row-major order, so results do not
// depend on the thread count. Float sums accumulate in double.

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "common.h"
#include "kernels.h"

namespace compress::kernels {
namespace {

enum class ReduceKind { kSum, kMean, kMax, kMin, kProd, kL2, kSumSquare };

// Accumulator of one reduction: the element type itself for Max / Min, otherwise double for floats and 64
// bits for integers, where sums and products wrap around like numpy's.
template <typename T, ReduceKind kKind>
struct Reducer {
  static constexpr bool kExtremum = kKind == ReduceKind::kMax || kKind == ReduceKind::kMin;
  using Acc =
      std::conditional_t<kExtremum, T,
                         std::conditional_t<std::is_floating_point_v<T>, double,
                                            std::conditional_t<std::is_signed_v<T>, int64_t, uint64_t>>>;
  using Wrap = std::conditional_t<std::is_floating_point_v<Acc>, Acc, uint64_t>;

  static Acc Init() {
    if constexpr (kKind == ReduceKind::kProd) return Acc{1};
    if constexpr (kKind == ReduceKind::kMax) {
      return std::numeric_limits<T>::has_infinity ? -std::numeric_limits<T>::infinity()
                                                  : std::numeric_limits<T>::lowest();
    }
    if constexpr (kKind == ReduceKind::kMin) {
      return std::numeric_limits<T>::has_infinity ? std::numeric_limits<T>::infinity()
                                                  : std::numeric_limits<T>::max();
    }
    return Acc{0};
  }

  static Acc Step(Acc acc, T x) {
    if constexpr (kKind == ReduceKind::kMax) {
      return (acc != acc || acc > x) ? acc : x;  // NaN propagates
    } else if constexpr (kKind == ReduceKind::kMin) {
      return (acc != acc || acc < x) ? acc : x;
    } else {
      const Wrap a = static_cast<Wrap>(acc), v = static_cast<Wrap>(x);
      if constexpr (kKind == ReduceKind::kProd) return static_cast<Acc>(a * v);
      if constexpr (kKind == ReduceKind::kL2 || kKind == ReduceKind::kSumSquare)
        return static_cast<Acc>(a + v * v);
      return static_cast<Acc>(a + v);
    }
  }

  static T Finish(Acc acc, int64_t count) {
    if constexpr (kKind == ReduceKind::kMean) {
      if constexpr (std::is_floating_point_v<T>) {
        return static_cast<T>(acc / static_cast<double>(count));
      } else {
        return count == 0 ? T{0} : static_cast<T>(acc / static_cast<Acc>(count));
      }
    } else if constexpr (kKind == ReduceKind::kL2) {
      return static_cast<T>(std::sqrt(static_cast<double>(acc)));
    } else {
      return static_cast<T>(acc);
    }
  }
};

// The input split into kept dims (one output element each) and reduced dims, with the input strides of both.
struct ReduceGeometry {
  std::vector<int64_t> out_dims;
  std::vector<int64_t> kept_dims, kept_strides, reduced_dims, reduced_strides;
  int64_t reduced_count = 1;
};

ReduceGeometry MakeGeometry(const KernelContext& ctx, const std::vector<int64_t>& dims,
                            const std::vector<int64_t>& axes, bool keepdims) {
  const int64_t rank = static_cast<int64_t>(dims.size());
  std::vector<bool> reduced(dims.size(), axes.empty());
  for (int64_t a : axes) {
    const size_t d = static_cast<size_t>(NormalizeAxis(ctx, a, rank));
    if (reduced[d]) ctx.Fail("axis " + std::to_string(a) + " is listed twice in axes " + ShapeToString(axes));
    reduced[d] = true;
  }
  ReduceGeometry g;
  const std::vector<int64_t> strides = Strides(dims);
  for (size_t d = 0; d < dims.size(); ++d) {
    // Neighbouring dims of the same kind merge into one, so that reducing trailing (or all) dims is one run.
    std::vector<int64_t>& group_dims = reduced[d] ? g.reduced_dims : g.kept_dims;
    std::vector<int64_t>& group_strides = reduced[d] ? g.reduced_strides : g.kept_strides;
    if (d > 0 && reduced[d] == reduced[d - 1]) {
      group_dims.back() *= dims[d];
      group_strides.back() = strides[d];
    } else {
      group_dims.push_back(dims[d]);
      group_strides.push_back(strides[d]);
    }
    if (reduced[d]) g.reduced_count *= dims[d];
    if (!reduced[d] || keepdims) g.out_dims.push_back(reduced[d] ? 1 : dims[d]);
  }
  return g;
}

template <typename T, ReduceKind kKind>
void Reduce(KernelContext& ctx, const Tensor& x, const ReduceGeometry& g) {
  using R = Reducer<T, kKind>;
  const T* px = x.data<T>();
  Tensor& out = ctx.Output(0, x.dtype(), g.out_dims);
  T* py = out.mutable_data<T>();
  const size_t kept_rank = g.kept_dims.size(), reduced_rank = g.reduced_dims.size();
  const int64_t grain = std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, g.reduced_count));
  // The last reduced dim is walked by a plain loop, the others by an odometer.
  const int64_t run = reduced_rank > 0 ? g.reduced_dims.back() : 1;
  const int64_t run_stride = reduced_rank > 0 ? g.reduced_strides.back() : 0;
  const int64_t runs = run > 0 ? g.reduced_count / run : 0;
  const size_t outer_rank = reduced_rank > 0 ? reduced_rank - 1 : 0;
  ctx.pool().ParallelFor(out.numel(), grain, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> idx(outer_rank);
    for (int64_t o = begin; o < end; ++o) {
      int64_t off = 0;
      for (size_t d = kept_rank, rest = static_cast<size_t>(o); d-- > 0;) {
        off += static_cast<int64_t>(rest % static_cast<size_t>(g.kept_dims[d])) * g.kept_strides[d];
        rest /= static_cast<size_t>(g.kept_dims[d]);
      }
      std::fill(idx.begin(), idx.end(), 0);
      typename R::Acc acc = R::Init();
      for (int64_t k = 0; k < runs; ++k) {
        for (int64_t j = 0; j < run; ++j) acc = R::Step(acc, px[off + j * run_stride]);
        for (size_t d = outer_rank; d-- > 0;) {
          off += g.reduced_strides[d];
          if (++idx[d] < g.reduced_dims[d]) break;
          off -= g.reduced_strides[d] * g.reduced_dims[d];
          idx[d] = 0;
        }
      }
      py[o] = R::Finish(acc, g.reduced_count);
    }
  });
}

template <ReduceKind kKind>
void DispatchReduce(KernelContext& ctx, const Tensor& x, const ReduceGeometry& g) {
  if constexpr (kKind == ReduceKind::kMax || kKind == ReduceKind::kMin) {
    // Since opset 20 Max / Min also take bool (any / all).
    DispatchAll(ctx, x.dtype(), [&](auto tag) { Reduce<decltype(tag), kKind>(ctx, x, g); });
  } else {
    DispatchNumeric(ctx, x.dtype(), [&](auto tag) { Reduce<decltype(tag), kKind>(ctx, x, g); });
  }
}

// axes_from_input: the axes come from the optional second input (ReduceSum since 13, the others since 18)
// instead of the attribute, and noop_with_empty_axes applies.
template <ReduceKind kKind>
KernelFactory ReduceKernel(bool axes_from_input) {
  return [axes_from_input](const KernelInfo& info) {
    const Node& n = *info.node;
    const std::vector<int64_t> attr_axes = n.AttrInts("axes", {});
    const bool keepdims = n.AttrInt("keepdims", 1) != 0;
    const bool noop_with_empty_axes = axes_from_input && n.AttrInt("noop_with_empty_axes", 0) != 0;
    return MakeKernel([=](KernelContext& ctx) {
      const Tensor& x = ctx.required_input(0);
      std::vector<int64_t> axes = attr_axes;
      if (axes_from_input) {
        const Tensor* t = ctx.input(1);
        axes = t != nullptr ? ToInt64s(ctx, *t) : std::vector<int64_t>{};
        if (axes.empty() && noop_with_empty_axes) {
          ctx.SetOutput(0, x);
          return;
        }
      }
      DispatchReduce<kKind>(ctx, x, MakeGeometry(ctx, x.dims(), axes, keepdims));
    });
  };
}

// ArgMax / ArgMin along `axis`. NaN counts as the extreme value, as in numpy; ties go to the first index, or
// to the last with select_last_index.
template <bool kMax>
KernelFactory ArgKernel() {
  return [](const KernelInfo& info) {
    const Node& n = *info.node;
    const int64_t axis_attr = n.AttrInt("axis", 0);
    const bool keepdims = n.AttrInt("keepdims", 1) != 0;
    const bool select_last = n.AttrInt("select_last_index", 0) != 0;
    return MakeKernel([=](KernelContext& ctx) {
      const Tensor& x = ctx.required_input(0);
      const size_t axis = static_cast<size_t>(NormalizeAxis(ctx, axis_attr, x.rank()));
      const std::vector<int64_t>& dims = x.dims();
      const int64_t len = dims[axis];
      if (len == 0) ctx.Fail("cannot take the arg" + std::string(kMax ? "max" : "min") + " of an empty axis");
      int64_t outer = 1, inner = 1;
      for (size_t d = 0; d < axis; ++d) outer *= dims[d];
      for (size_t d = axis + 1; d < dims.size(); ++d) inner *= dims[d];
      std::vector<int64_t> out_dims;
      for (size_t d = 0; d < dims.size(); ++d) {
        if (d != axis) {
          out_dims.push_back(dims[d]);
        } else if (keepdims) {
          out_dims.push_back(1);
        }
      }
      int64_t* py = ctx.Output(0, DType::kInt64, out_dims).mutable_data<int64_t>();
      DispatchNumeric(ctx, x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        const T* px = x.data<T>();
        const int64_t grain = std::max<int64_t>(1, kElementwiseGrain / len);
        ctx.pool().ParallelFor(outer * inner, grain, [&](int64_t begin, int64_t end) {
          for (int64_t o = begin; o < end; ++o) {
            const T* row = px + (o / inner) * len * inner + o % inner;
            int64_t best = 0;
            T best_v = row[0];
            for (int64_t j = 1; j < len; ++j) {
              const T v = row[j * inner];
              const bool v_nan = v != v, best_nan = best_v != best_v;
              const bool better = (v_nan && !best_nan) || (!best_nan && (kMax ? v > best_v : v < best_v));
              const bool tie = (v_nan && best_nan) || v == best_v;
              if (better || (select_last && tie)) {
                best = j;
                best_v = v;
              }
            }
            py[o] = best;
          }
        });
      });
    });
  };
}

}  // namespace

void RegisterReduceKernels(KernelRegistry& r) {
  const int64_t latest = KernelEntry{}.until_version;
  AddKernel(r, "ReduceSum", 1, 12, ReduceKernel<ReduceKind::kSum>(false));
  AddKernel(r, "ReduceSum", 13, latest, ReduceKernel<ReduceKind::kSum>(true));
  AddKernel(r, "ReduceMean", 1, 17, ReduceKernel<ReduceKind::kMean>(false));
  AddKernel(r, "ReduceMean", 18, latest, ReduceKernel<ReduceKind::kMean>(true));
  AddKernel(r, "ReduceMax", 1, 17, ReduceKernel<ReduceKind::kMax>(false));
  AddKernel(r, "ReduceMax", 18, latest, ReduceKernel<ReduceKind::kMax>(true));
  AddKernel(r, "ReduceMin", 1, 17, ReduceKernel<ReduceKind::kMin>(false));
  AddKernel(r, "ReduceMin", 18, latest, ReduceKernel<ReduceKind::kMin>(true));
  AddKernel(r, "ReduceProd", 1, 17, ReduceKernel<ReduceKind::kProd>(false));
  AddKernel(r, "ReduceProd", 18, latest, ReduceKernel<ReduceKind::kProd>(true));
  AddKernel(r, "ReduceL2", 1, 17, ReduceKernel<ReduceKind::kL2>(false));
  AddKernel(r, "ReduceL2", 18, latest, ReduceKernel<ReduceKind::kL2>(true));
  AddKernel(r, "ReduceSumSquare", 1, 17, ReduceKernel<ReduceKind::kSumSquare>(false));
  AddKernel(r, "ReduceSumSquare", 18, latest, ReduceKernel<ReduceKind::kSumSquare>(true));
  AddKernel(r, "ArgMax", 1, latest, ArgKernel<true>());
  AddKernel(r, "ArgMin", 1, latest, ArgKernel<false>());
}

}  // namespace compress::kernels
