// Elementwise kernels: unary maths and activations, binary and variadic arithmetic with numpy broadcasting,
// comparisons and logic, Where, Clip and Cast.
//
// Reference kernels apply a scalar function element by element through ForEachBroadcast. Fast kernels
// collapse the broadcast into rows that one plain loop (or, for float32 arithmetic, vecmath's vector loops)
// covers. Both compute each element with the same IEEE operations, except where a fast kernel uses vecmath's
// vectorised approximations of exp, tanh, the logistic function and erf.

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "common.h"
#include "compress/util/half.h"
#include "kernels.h"
#include "vecmath.h"

namespace compress::kernels {
namespace {

void CheckSameType(const KernelContext& ctx, const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype()) {
    ctx.Fail(std::string("inputs have different element types ") + DTypeName(a.dtype()) + " and " +
             DTypeName(b.dtype()));
  }
}

// -----------------------------------------------------------------------------------------------------------
// Integer arithmetic wraps around as numpy's does. C++ leaves signed overflow undefined (and promotes narrow
// unsigned types to int), so it is done in an unsigned type at least as wide as unsigned int.

template <typename T>
using WrapType = std::conditional_t<(sizeof(T) < sizeof(unsigned)), unsigned, std::make_unsigned_t<T>>;

template <typename T>
T WrapAdd(T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    return static_cast<T>(static_cast<WrapType<T>>(a) + static_cast<WrapType<T>>(b));
  } else {
    return a + b;
  }
}

template <typename T>
T WrapSub(T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    return static_cast<T>(static_cast<WrapType<T>>(a) - static_cast<WrapType<T>>(b));
  } else {
    return a - b;
  }
}

template <typename T>
T WrapMul(T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    return static_cast<T>(static_cast<WrapType<T>>(a) * static_cast<WrapType<T>>(b));
  } else {
    return a * b;
  }
}

// -----------------------------------------------------------------------------------------------------------
// Binary functions. kVec marks those whose float32 rows a fast kernel hands to vecmath::BinaryRows as kVecOp;
// its +, -, *, / are the same IEEE operations as the scalar ones.

struct AddOp {
  static constexpr bool kVec = true;
  static constexpr vecmath::BinaryOp kVecOp = vecmath::BinaryOp::kAdd;
  template <typename T>
  T operator()(T a, T b) const {
    return WrapAdd(a, b);
  }
};

struct SubOp {
  static constexpr bool kVec = true;
  static constexpr vecmath::BinaryOp kVecOp = vecmath::BinaryOp::kSub;
  template <typename T>
  T operator()(T a, T b) const {
    return WrapSub(a, b);
  }
};

struct MulOp {
  static constexpr bool kVec = true;
  static constexpr vecmath::BinaryOp kVecOp = vecmath::BinaryOp::kMul;
  template <typename T>
  T operator()(T a, T b) const {
    return WrapMul(a, b);
  }
};

struct DivOp {
  static constexpr bool kVec = true;
  static constexpr vecmath::BinaryOp kVecOp = vecmath::BinaryOp::kDiv;
  template <typename T>
  T operator()(T a, T b) const {
    if constexpr (std::is_integral_v<T>) {
      // numpy's integer division by zero gives 0; INT_MIN / -1 wraps.
      if (b == 0) return 0;
      if constexpr (std::is_signed_v<T>) {
        if (b == -1) return WrapSub(T{0}, a);
      }
    }
    return static_cast<T>(a / b);
  }
};

// Max and Min propagate NaN, as numpy's maximum and minimum do.
struct MaxOp {
  static constexpr bool kVec = false;
  template <typename T>
  T operator()(T a, T b) const {
    return (a != a || a > b) ? a : b;
  }
};

struct MinOp {
  static constexpr bool kVec = false;
  template <typename T>
  T operator()(T a, T b) const {
    return (a != a || a < b) ? a : b;
  }
};

struct EqualOp {
  static constexpr bool kVec = false;
  template <typename T>
  bool operator()(const T& a, const T& b) const {
    return a == b;
  }
};

struct LessOp {
  static constexpr bool kVec = false;
  template <typename T>
  bool operator()(const T& a, const T& b) const {
    return a < b;
  }
};

struct GreaterOp {
  static constexpr bool kVec = false;
  template <typename T>
  bool operator()(const T& a, const T& b) const {
    return a > b;
  }
};

struct LessOrEqualOp {
  static constexpr bool kVec = false;
  template <typename T>
  bool operator()(const T& a, const T& b) const {
    return a <= b;
  }
};

struct GreaterOrEqualOp {
  static constexpr bool kVec = false;
  template <typename T>
  bool operator()(const T& a, const T& b) const {
    return a >= b;
  }
};

// Bool tensors are read as bytes: a byte other than 0 or 1 read as C++ bool is undefined.
struct AndOp {
  static constexpr bool kVec = false;
  bool operator()(uint8_t a, uint8_t b) const { return a != 0 && b != 0; }
};

struct PReluOp {
  static constexpr bool kVec = false;
  template <typename T>
  T operator()(T x, T slope) const {
    return x < 0 ? WrapMul(x, slope) : x;
  }
};

// Integer power by squaring, wrapping like numpy. A negative exponent gives the truncated 1 / base^-e.
template <typename T, typename E>
T IntPow(T base, E e) {
  if constexpr (std::is_signed_v<E>) {
    if (e < 0) {
      if (base == 1) return 1;
      if (base == static_cast<T>(-1)) return (e % 2 == 0) ? T{1} : base;
      return 0;
    }
  }
  T result = 1;
  std::make_unsigned_t<E> n = static_cast<std::make_unsigned_t<E>>(e);
  while (n != 0) {
    if (n & 1u) result = WrapMul(result, base);
    base = WrapMul(base, base);
    n >>= 1;
  }
  return result;
}

// Float to integer truncates toward zero, as numpy's astype does. Outside the int64 range (and for NaN) the
// value becomes INT64_MIN, as the x86 conversion numpy relies on gives; the result then wraps to the target
// width, so out-of-range values are deterministic instead of undefined.
template <typename D>
D FloatToInt(double d) {
  constexpr double kTwo63 = 9223372036854775808.0;
  if constexpr (std::is_same_v<D, uint64_t>) {
    if (d >= kTwo63 && d < 2 * kTwo63) return static_cast<uint64_t>(d);
  }
  const int64_t v =
      (d >= -kTwo63 && d < kTwo63) ? static_cast<int64_t>(d) : std::numeric_limits<int64_t>::min();
  return static_cast<D>(v);
}

// Pow(T base, E exponent) -> T. Mixed types are computed in double like numpy's promotion, then converted.
struct PowOp {
  static constexpr bool kVec = false;
  template <typename T, typename E>
  T operator()(T a, E b) const {
    if constexpr (std::is_floating_point_v<T>) {
      if constexpr (std::is_same_v<T, E>) {
        return std::pow(a, b);
      } else {
        return static_cast<T>(std::pow(static_cast<double>(a), static_cast<double>(b)));
      }
    } else if constexpr (std::is_integral_v<E>) {
      return IntPow(a, b);
    } else {
      return FloatToInt<T>(std::pow(static_cast<double>(a), static_cast<double>(b)));
    }
  }
};

// Pow(x, 2) in fast kernels: x * x, as ONNX Runtime computes it, correctly rounded where pow may be an ulp
// off, and much cheaper.
struct SquareOp {
  // Float32 rows: vecmath's a * a (a as both operands).
  static constexpr bool kVec = true;
  static constexpr vecmath::BinaryOp kVecOp = vecmath::BinaryOp::kMul;
  template <typename T, typename E>
  T operator()(T a, E) const {
    return a * a;
  }
};

// -----------------------------------------------------------------------------------------------------------
// Broadcast loops.

// Two inputs broadcast over an output, with size-1 dims dropped and neighbouring dims merged wherever both
// inputs step through them alike. The last dim is then the longest run one loop can cover: a whole same-shape
// tensor, a row of a row broadcast, a channel plane of a per-channel broadcast.
struct RowLayout {
  std::vector<int64_t> dims;
  std::vector<int64_t> a_strides, b_strides;
};

RowLayout CollapseBroadcast(const std::vector<int64_t>& out_dims, const std::vector<int64_t>& a_strides,
                            const std::vector<int64_t>& b_strides) {
  RowLayout l;
  for (size_t d = 0; d < out_dims.size(); ++d) {
    if (out_dims[d] == 1) continue;
    if (!l.dims.empty() && l.a_strides.back() == a_strides[d] * out_dims[d] &&
        l.b_strides.back() == b_strides[d] * out_dims[d]) {
      l.dims.back() *= out_dims[d];
      l.a_strides.back() = a_strides[d];
      l.b_strides.back() = b_strides[d];
      continue;
    }
    l.dims.push_back(out_dims[d]);
    l.a_strides.push_back(a_strides[d]);
    l.b_strides.push_back(b_strides[d]);
  }
  if (l.dims.empty()) l = RowLayout{{1}, {0}, {0}};
  return l;
}

// One row of a fast binary loop; a stride is 1 (walks the row) or 0 (one value for the whole row).
template <typename A, typename B, typename O, typename Op>
void BinaryRow(const A* a, int64_t a_stride, const B* b, int64_t b_stride, O* out, int64_t n, const Op& op) {
  if (a_stride != 0 && b_stride != 0) {
    for (int64_t j = 0; j < n; ++j) out[j] = op(a[j], b[j]);
  } else if (a_stride != 0) {
    const B s = *b;
    for (int64_t j = 0; j < n; ++j) out[j] = op(a[j], s);
  } else if (b_stride != 0) {
    const A s = *a;
    for (int64_t j = 0; j < n; ++j) out[j] = op(s, b[j]);
  } else {
    std::fill_n(out, n, op(*a, *b));
  }
}

// `rows` rows of `len` into contiguous output rows; row r of a starts at a + r * a_row (b alike), and the
// steps within a row are 0 or 1 as in BinaryRow. Float32 arithmetic goes to vecmath's vector loops.
template <typename A, typename B, typename O, typename Op>
void BinaryRows(const A* a, int64_t a_row, int64_t a_step, const B* b, int64_t b_row, int64_t b_step, O* out,
                int64_t rows, int64_t len, const Op& op) {
  if constexpr (Op::kVec && std::is_same_v<A, float> && std::is_same_v<O, float>) {
    if constexpr (std::is_same_v<Op, SquareOp>) {
      vecmath::BinaryRows(Op::kVecOp, a, a_row, a_step, a, a_row, a_step, out, rows, len);
      return;
    } else if constexpr (std::is_same_v<B, float>) {
      vecmath::BinaryRows(Op::kVecOp, a, a_row, a_step, b, b_row, b_step, out, rows, len);
      return;
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    BinaryRow(a + r * a_row, a_step, b + r * b_row, b_step, out + r * len, len, op);
  }
}

// out = op(a, b) over `out_dims`, with a and b (of dims a_dims, b_dims) broadcast to it. out may be a or b
// when that input has the output's shape (every element is read before it is written).
template <typename A, typename B, typename O, typename Op>
void Binary(KernelContext& ctx, bool fast, const A* a, const std::vector<int64_t>& a_dims, const B* b,
            const std::vector<int64_t>& b_dims, O* out, const std::vector<int64_t>& out_dims, const Op& op) {
  const int64_t n = ShapeElementCount(out_dims);
  const std::vector<int64_t> strides[2] = {BroadcastStrides(a_dims, out_dims),
                                           BroadcastStrides(b_dims, out_dims)};
  if (!fast) {
    ctx.pool().ParallelFor(n, kElementwiseGrain, [&](int64_t begin, int64_t end) {
      ForEachBroadcast(out_dims, strides, begin, end,
                       [&](int64_t i, const int64_t* off) { out[i] = op(a[off[0]], b[off[1]]); });
    });
    return;
  }
  const RowLayout l = CollapseBroadcast(out_dims, strides[0], strides[1]);
  const size_t rank = l.dims.size();
  const int64_t row_len = l.dims.back();
  const int64_t a_step = l.a_strides.back(), b_step = l.b_strides.back();
  // Whole rows go in runs along the second-to-last dim, where both inputs advance by a fixed stride: one
  // call covers a bias added to every token of a sequence, and the offsets of a run cost one division each
  // rather than one per row.
  const int64_t run_dim = rank >= 2 ? l.dims[rank - 2] : 1;
  const int64_t a_row = rank >= 2 ? l.a_strides[rank - 2] : 0, b_row = rank >= 2 ? l.b_strides[rank - 2] : 0;
  ctx.pool().ParallelFor(n, kElementwiseGrain, [&](int64_t begin, int64_t end) {
    for (int64_t pos = begin; pos < end;) {
      const int64_t col = pos % row_len;
      const int64_t row = pos / row_len;
      int64_t a_off = col * a_step, b_off = col * b_step;
      int64_t rest = row;
      for (size_t d = rank - 1; d-- > 0;) {
        const int64_t i = rest % l.dims[d];
        rest /= l.dims[d];
        a_off += i * l.a_strides[d];
        b_off += i * l.b_strides[d];
      }
      if (col != 0 || end - pos < row_len) {  // part of a row, at the start or the end of the chunk
        const int64_t len = std::min(row_len - col, end - pos);
        BinaryRows(a + a_off, 0, a_step, b + b_off, 0, b_step, out + pos, 1, len, op);
        pos += len;
        continue;
      }
      const int64_t rows = std::min(run_dim - row % run_dim, (end - pos) / row_len);
      BinaryRows(a + a_off, a_row, a_step, b + b_off, b_row, b_step, out + pos, rows, row_len, op);
      pos += rows * row_len;
    }
  });
}

// Before opset 7, binary ops broadcast only with broadcast=1, and then B's dims line up with A's starting at
// `axis` rather than at the right. Without broadcast=1 both shapes had to match; numpy rules accept those
// too.
struct LegacyBroadcast {
  bool enabled = false;
  std::optional<int64_t> axis;

  static LegacyBroadcast Parse(const KernelInfo& info) {
    LegacyBroadcast l;
    if (info.node->AttrInt("broadcast", 0) != 0 && info.node->FindAttr("axis") != nullptr) {
      l.enabled = true;
      l.axis = info.node->AttrInt("axis", 0);
    }
    return l;
  }

  std::vector<int64_t> Align(const KernelContext& ctx, const std::vector<int64_t>& a,
                             const std::vector<int64_t>& b) const {
    if (!enabled) return b;
    const int64_t rank = static_cast<int64_t>(a.size());
    const int64_t start = NormalizeAxis(ctx, *axis, rank);
    if (start + static_cast<int64_t>(b.size()) > rank) {
      ctx.Fail("shape " + ShapeToString(b) + " does not fit into " + ShapeToString(a) + " from axis " +
               std::to_string(*axis));
    }
    std::vector<int64_t> dims = b;
    dims.resize(static_cast<size_t>(rank - start), 1);
    return dims;
  }
};

// -----------------------------------------------------------------------------------------------------------
// Add, Sub, Mul, Div, Min, Max, Sum, Mean: inputs of one numeric type folded left to right with broadcasting,
// Sum(a, b, c) = (a + b) + c; Mean divides the sum by the input count.

struct FoldSpec {
  size_t min_inputs = 2, max_inputs = 2;
  bool legacy = false;  // the opset < 7 broadcast attributes apply
  bool mean = false;
  bool float_only = false;
};

// Two inputs in a fast kernel: the result goes into a donated input that already has the output's shape
// (an activation the graph reads no more), which saves taking a buffer and finds its bytes in cache. False
// when neither input can take it.
template <typename T, typename Op>
bool FoldInPlace(KernelContext& ctx, const LegacyBroadcast& legacy) {
  const Tensor& a = ctx.required_input(0);
  const Tensor& b = ctx.required_input(1);
  // Copies: taking an input leaves its reference empty.
  const std::vector<int64_t> a_dims = a.dims();
  const std::vector<int64_t> b_dims = legacy.Align(ctx, a_dims, b.dims());
  const std::vector<int64_t> out_dims = BroadcastShapes(ctx, a_dims, b_dims);
  if (ctx.input_donated(0) && a_dims == out_dims) {
    const T* pb = b.data<T>();
    ctx.SetOutput(0, ctx.TakeInput(0));
    T* y = ctx.outputs()[0].mutable_data<T>();
    Binary(ctx, true, y, out_dims, pb, b_dims, y, out_dims, Op{});
    return true;
  }
  if (ctx.input_donated(1) && b.dims() == out_dims) {  // then Align left b's dims as they are
    const T* pa = a.data<T>();
    ctx.SetOutput(0, ctx.TakeInput(1));
    T* y = ctx.outputs()[0].mutable_data<T>();
    Binary(ctx, true, pa, a_dims, y, out_dims, y, out_dims, Op{});
    return true;
  }
  return false;
}

template <typename Op>
KernelFactory FoldKernel(FoldSpec spec, bool fast) {
  return [spec, fast](const KernelInfo& info) {
    const LegacyBroadcast legacy = spec.legacy ? LegacyBroadcast::Parse(info) : LegacyBroadcast{};
    return MakeKernel([spec, fast, legacy](KernelContext& ctx) {
      const size_t count = ctx.num_inputs();
      if (count < spec.min_inputs || count > spec.max_inputs) {
        ctx.Fail("expects " + std::to_string(spec.min_inputs) +
                 (spec.max_inputs > spec.min_inputs ? " or more" : "") + " inputs, got " +
                 std::to_string(count));
      }
      const Tensor& first = ctx.required_input(0);
      for (size_t k = 1; k < count; ++k) CheckSameType(ctx, first, ctx.required_input(k));
      if (spec.float_only && !IsFloatingPoint(first.dtype())) {
        ctx.Fail(std::string("element type ") + DTypeName(first.dtype()) +
                 " is not supported (float types only)");
      }
      if (count == 1) {
        ctx.SetOutput(0, first);
        return;
      }
      DispatchNumeric(ctx, first.dtype(), [&](auto tag) {
        using T = decltype(tag);
        // `first` is not to be used once FoldInPlace has taken it.
        if (!(fast && count == 2 && FoldInPlace<T, Op>(ctx, legacy))) {
          Tensor acc = first;
          for (size_t k = 1; k < count; ++k) {
            const Tensor& next = ctx.required_input(k);
            const std::vector<int64_t> b_dims = legacy.Align(ctx, acc.dims(), next.dims());
            const std::vector<int64_t> out_dims = BroadcastShapes(ctx, acc.dims(), b_dims);
            Tensor result = k + 1 == count ? Tensor() : Tensor::Uninitialized(first.dtype(), out_dims);
            Tensor& target = k + 1 == count ? ctx.OutputForWrite(0, first.dtype(), out_dims) : result;
            Binary(ctx, fast, acc.data<T>(), acc.dims(), next.data<T>(), b_dims, target.mutable_data<T>(),
                   out_dims, Op{});
            if (k + 1 < count) acc = std::move(result);
          }
        }
        if constexpr (std::is_floating_point_v<T>) {
          if (spec.mean) {
            Tensor& out = ctx.outputs()[0];
            T* y = out.mutable_data<T>();
            const T divisor = static_cast<T>(count);
            ctx.pool().ParallelFor(out.numel(), kElementwiseGrain, [&](int64_t begin, int64_t end) {
              for (int64_t i = begin; i < end; ++i) y[i] /= divisor;
            });
          }
        }
      });
    });
  };
}

// Equal, Less, Greater, LessOrEqual, GreaterOrEqual (numeric; Equal also bool and string) and And (bool): bool output.
template <typename Op>
KernelFactory CompareKernel(bool legacy_opset, bool fast) {
  return [legacy_opset, fast](const KernelInfo& info) {
    const LegacyBroadcast legacy = legacy_opset ? LegacyBroadcast::Parse(info) : LegacyBroadcast{};
    return MakeKernel([fast, legacy](KernelContext& ctx) {
      const Tensor& a = ctx.required_input(0);
      const Tensor& b = ctx.required_input(1);
      CheckSameType(ctx, a, b);
      const std::vector<int64_t> b_dims = legacy.Align(ctx, a.dims(), b.dims());
      const std::vector<int64_t> out_dims = BroadcastShapes(ctx, a.dims(), b_dims);
      bool* out = ctx.Output(0, DType::kBool, out_dims).mutable_data<bool>();
      const bool bytes =
          std::is_same_v<Op, AndOp> || (std::is_same_v<Op, EqualOp> && a.dtype() == DType::kBool);
      if constexpr (std::is_same_v<Op, AndOp>) {
        if (a.dtype() != DType::kBool) {
          ctx.Fail(std::string("expects bool inputs, got ") + DTypeName(a.dtype()));
        }
      }
      if (bytes) {
        Binary(ctx, fast, static_cast<const uint8_t*>(a.raw()), a.dims(),
               static_cast<const uint8_t*>(b.raw()), b_dims, out, out_dims, Op{});
        return;
      }
      if constexpr (std::is_same_v<Op, EqualOp>) {
        if (a.dtype() == DType::kString) {
          Binary(ctx, false, a.strings().data(), a.dims(), b.strings().data(), b_dims, out, out_dims, Op{});
          return;
        }
      }
      if constexpr (!std::is_same_v<Op, AndOp>) {
        DispatchNumeric(ctx, a.dtype(), [&](auto tag) {
          using T = decltype(tag);
          Binary(ctx, fast, a.data<T>(), a.dims(), b.data<T>(), b_dims, out, out_dims, Op{});
        });
      }
    });
  };
}

KernelFactory PowKernel(bool legacy_opset, bool fast) {
  return [legacy_opset, fast](const KernelInfo& info) {
    const LegacyBroadcast legacy = legacy_opset ? LegacyBroadcast::Parse(info) : LegacyBroadcast{};
    return MakeKernel([fast, legacy](KernelContext& ctx) {
      const Tensor& x = ctx.required_input(0);
      const Tensor& e = ctx.required_input(1);
      const std::vector<int64_t> e_dims = legacy.Align(ctx, x.dims(), e.dims());
      const std::vector<int64_t> out_dims = BroadcastShapes(ctx, x.dims(), e_dims);
      auto run = [&](auto base_tag) {
        using T = decltype(base_tag);
        T* out = ctx.OutputForWrite(0, x.dtype(), out_dims).template mutable_data<T>();
        DispatchNumeric(ctx, e.dtype(), [&](auto exp_tag) {
          using E = decltype(exp_tag);
          if constexpr (std::is_floating_point_v<T>) {
            if (fast && e.numel() == 1 && static_cast<double>(e.data<E>()[0]) == 2) {
              Binary(ctx, fast, x.data<T>(), x.dims(), e.data<E>(), e_dims, out, out_dims, SquareOp{});
              return;
            }
          }
          Binary(ctx, fast, x.data<T>(), x.dims(), e.data<E>(), e_dims, out, out_dims, PowOp{});
        });
      };
      switch (x.dtype()) {
        case DType::kFloat:
          run(float{});
          break;
        case DType::kDouble:
          run(double{});
          break;
        case DType::kInt32:
          run(int32_t{});
          break;
        case DType::kInt64:
          run(int64_t{});
          break;
        default:
          ctx.Fail(std::string("base element type ") + DTypeName(x.dtype()) + " is not supported");
      }
    });
  };
}

KernelFactory PReluKernel(bool legacy_opset, bool fast) {
  return [legacy_opset, fast](const KernelInfo&) {
    return MakeKernel([legacy_opset, fast](KernelContext& ctx) {
      const Tensor& x = ctx.required_input(0);
      const Tensor& slope = ctx.required_input(1);
      CheckSameType(ctx, x, slope);
      std::vector<int64_t> s_dims = slope.dims();
      // Before opset 7 a 1-D slope of C values applies along the channel axis 1.
      if (legacy_opset && x.rank() > 2 && slope.rank() == 1 && slope.numel() > 1 &&
          s_dims[0] == x.dims()[1]) {
        s_dims.resize(static_cast<size_t>(x.rank() - 1), 1);
      }
      if (BroadcastShapes(ctx, x.dims(), s_dims) != x.dims()) {
        ctx.Fail("slope of shape " + ShapeToString(slope.dims()) +
                 " cannot be broadcast to the input shape " + ShapeToString(x.dims()));
      }
      DispatchNumeric(ctx, x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        T* out = ctx.OutputForWrite(0, x.dtype(), x.dims()).template mutable_data<T>();
        Binary(ctx, fast, x.data<T>(), x.dims(), slope.data<T>(), s_dims, out, x.dims(), PReluOp{});
      });
    });
  };
}

KernelFactory WhereKernel() {
  return [](const KernelInfo&) {
    return MakeKernel([](KernelContext& ctx) {
      const Tensor& cond = ctx.required_input(0);
      const Tensor& x = ctx.required_input(1);
      const Tensor& y = ctx.required_input(2);
      if (cond.dtype() != DType::kBool) {
        ctx.Fail(std::string("condition must be bool, got ") + DTypeName(cond.dtype()));
      }
      CheckSameType(ctx, x, y);
      const std::vector<int64_t> out_dims =
          BroadcastShapes(ctx, cond.dims(), BroadcastShapes(ctx, x.dims(), y.dims()));
      const std::vector<int64_t> strides[3] = {BroadcastStrides(cond.dims(), out_dims),
                                               BroadcastStrides(x.dims(), out_dims),
                                               BroadcastStrides(y.dims(), out_dims)};
      const uint8_t* c = static_cast<const uint8_t*>(cond.raw());
      Tensor& out = ctx.Output(0, x.dtype(), out_dims);
      if (x.dtype() == DType::kString) {
        const std::string* px = x.strings().data();
        const std::string* py = y.strings().data();
        std::string* po = out.mutable_strings().data();
        ForEachBroadcast(out_dims, strides, 0, out.numel(), [&](int64_t i, const int64_t* off) {
          po[i] = c[off[0]] != 0 ? px[off[1]] : py[off[2]];
        });
        return;
      }
      // Only the element size matters for selecting.
      auto select = [&](auto tag) {
        using U = decltype(tag);
        const U* px = static_cast<const U*>(x.raw());
        const U* py = static_cast<const U*>(y.raw());
        U* po = static_cast<U*>(out.mutable_raw());
        ctx.pool().ParallelFor(out.numel(), kElementwiseGrain, [&](int64_t begin, int64_t end) {
          ForEachBroadcast(out_dims, strides, begin, end, [&](int64_t i, const int64_t* off) {
            po[i] = c[off[0]] != 0 ? px[off[1]] : py[off[2]];
          });
        });
      };
      switch (DTypeBits(x.dtype())) {
        case 8:
          select(uint8_t{});
          break;
        case 16:
          select(uint16_t{});
          break;
        case 32:
          select(uint32_t{});
          break;
        case 64:
          select(uint64_t{});
          break;
        default:
          ctx.Fail(std::string("element type ") + DTypeName(x.dtype()) + " is not supported");
      }
    });
  };
}

// -----------------------------------------------------------------------------------------------------------
// Unary functions, built from the node's attributes. kIntegers: also defined for integer types. kVec: a
// fast kernel evaluates float32 arrays with Vec(), one of vecmath's vectorised approximations.

struct UnaryBase {
  static constexpr bool kIntegers = false;
  static constexpr bool kVec = false;
};

struct SqrtFn : UnaryBase {
  explicit SqrtFn(const Node&) {}
  template <typename T>
  T operator()(T x) const {
    return std::sqrt(x);
  }
};

struct ExpFn : UnaryBase {
  static constexpr bool kVec = true;
  explicit ExpFn(const Node&) {}
  template <typename T>
  T operator()(T x) const {
    return std::exp(x);
  }
  void Vec(const float* x, float* y, int64_t n) const { vecmath::Exp(x, y, n); }
};

struct LogFn : UnaryBase {
  explicit LogFn(const Node&) {}
  template <typename T>
  T operator()(T x) const {
    return std::log(x);
  }
};

struct ReciprocalFn : UnaryBase {
  explicit ReciprocalFn(const Node&) {}
  template <typename T>
  T operator()(T x) const {
    return T{1} / x;
  }
};

struct NegFn : UnaryBase {
  static constexpr bool kIntegers = true;
  explicit NegFn(const Node&) {}
  template <typename T>
  T operator()(T x) const {
    if constexpr (std::is_integral_v<T>) {
      return WrapSub(T{0}, x);
    } else {
      return -x;
    }
  }
};

struct AbsFn : UnaryBase {
  static constexpr bool kIntegers = true;
  explicit AbsFn(const Node&) {}
  template <typename T>
  T operator()(T x) const {
    if constexpr (std::is_floating_point_v<T>) {
      return std::fabs(x);
    } else if constexpr (std::is_signed_v<T>) {
      return x < 0 ? WrapSub(T{0}, x) : x;
    } else {
      return x;
    }
  }
};

struct ReluFn : UnaryBase {
  static constexpr bool kIntegers = true;
  explicit ReluFn(const Node&) {}
  template <typename T>
  T operator()(T x) const {
    if constexpr (std::is_same_v<T, float>) {
      // Branch-free: a branch on the sign mispredicts on every other element of an activation (it took
      // half of a small CNN's forward time). Clears the bits of negative values only: NaN and -0 stay.
      uint32_t bits;
      std::memcpy(&bits, &x, sizeof bits);
      bits &= 0u - static_cast<uint32_t>(!(x < 0.0f));
      std::memcpy(&x, &bits, sizeof bits);
      return x;
    } else {
      return x < 0 ? T{0} : x;
    }
  }  // keeps NaN
};

struct LeakyReluFn : UnaryBase {
  float alpha;
  explicit LeakyReluFn(const Node& n) : alpha(n.AttrFloat("alpha", 0.01f)) {}
  template <typename T>
  T operator()(T x) const {
    return x < 0 ? static_cast<T>(alpha) * x : x;
  }
};

struct EluFn : UnaryBase {
  float alpha;
  explicit EluFn(const Node& n) : alpha(n.AttrFloat("alpha", 1.0f)) {}
  template <typename T>
  T operator()(T x) const {
    return x < 0 ? static_cast<T>(alpha) * std::expm1(x) : x;
  }
};

struct SeluFn : UnaryBase {
  float alpha, gamma;
  explicit SeluFn(const Node& n)
      : alpha(n.AttrFloat("alpha", 1.67326319217681884765625f)),
        gamma(n.AttrFloat("gamma", 1.05070102214813232421875f)) {}
  template <typename T>
  T operator()(T x) const {
    const T g = static_cast<T>(gamma), a = static_cast<T>(alpha);
    return x > 0 ? g * x : g * (a * std::exp(x) - a);
  }
};

struct SigmoidFn : UnaryBase {
  static constexpr bool kVec = true;
  explicit SigmoidFn(const Node&) {}
  template <typename T>
  T operator()(T x) const {
    // exp of a non-positive argument only, so that large |x| neither overflows nor loses the small tail.
    if (x >= 0) return T{1} / (T{1} + std::exp(-x));
    const T e = std::exp(x);
    return e / (T{1} + e);
  }
  void Vec(const float* x, float* y, int64_t n) const { vecmath::Sigmoid(x, y, n); }
};

struct TanhFn : UnaryBase {
  static constexpr bool kVec = true;
  explicit TanhFn(const Node&) {}
  template <typename T>
  T operator()(T x) const {
    return std::tanh(x);
  }
  void Vec(const float* x, float* y, int64_t n) const { vecmath::Tanh(x, y, n); }
};

struct HardSigmoidFn : UnaryBase {
  float alpha, beta;
  HardSigmoidFn(float a, float b) : alpha(a), beta(b) {}
  explicit HardSigmoidFn(const Node& n)
      : HardSigmoidFn(n.AttrFloat("alpha", 0.2f), n.AttrFloat("beta", 0.5f)) {}
  template <typename T>
  T operator()(T x) const {
    const T v = static_cast<T>(alpha) * x + static_cast<T>(beta);
    return v < 0 ? T{0} : (v > 1 ? T{1} : v);  // keeps NaN
  }
};

struct HardSwishFn : UnaryBase {
  HardSigmoidFn gate{1.0f / 6.0f, 0.5f};
  explicit HardSwishFn(const Node&) {}
  template <typename T>
  T operator()(T x) const {
    return x * gate(x);
  }
};

struct SoftplusFn : UnaryBase {
  explicit SoftplusFn(const Node&) {}
  template <typename T>
  T operator()(T x) const {
    // log(1 + e^x) without overflow for large x.
    return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x));
  }
};

struct ErfFn : UnaryBase {
  static constexpr bool kVec = true;
  explicit ErfFn(const Node&) {}
  template <typename T>
  T operator()(T x) const {
    return std::erf(x);
  }
  void Vec(const float* x, float* y, int64_t n) const { vecmath::Erf(x, y, n); }
};

struct GeluFn : UnaryBase {
  static constexpr bool kVec = true;
  bool tanh_approximation = false;
  explicit GeluFn(const Node& n) {
    const std::string approximate = n.AttrString("approximate", "none");
    if (approximate != "none" && approximate != "tanh") {
      ThrowInvalid("node " + n.Describe() + ": unknown approximate '" + approximate + "' (none or tanh)");
    }
    tanh_approximation = approximate == "tanh";
  }
  template <typename T>
  T operator()(T x) const {
    if (tanh_approximation) {
      const T k = static_cast<T>(0.79788456080286535588);  // sqrt(2 / pi)
      return T{0.5} * x * (T{1} + std::tanh(k * (x + static_cast<T>(0.044715) * x * x * x)));
    }
    return T{0.5} * x * (T{1} + std::erf(x * static_cast<T>(0.70710678118654752440)));
  }
  void Vec(const float* x, float* y, int64_t n) const {
    if (tanh_approximation) {
      vecmath::GeluTanh(x, y, n);
    } else {
      vecmath::Gelu(x, y, n);
    }
  }
};

// fn.Vec over x[0, n), called through a template so that the call is only compiled for functions with kVec
// (a discarded `if constexpr` branch still has its non-dependent expressions checked).
template <typename Fn, typename T>
void VecMap(const Fn& fn, const T* x, T* y, int64_t n) {
  fn.Vec(x, y, n);
}

// The float32 path of a unary kernel over x[0, n): the values of element i depend on x[i] alone, not on where
// a chunk starts, so chunks, threads and fused chains (Executor) all compute the same bits.
template <typename Fn>
void MapFloats(const Fn& fn, bool fast, const float* x, float* y, int64_t n) {
#if defined(__SSE2__)
  if constexpr (std::is_same_v<Fn, ReluFn>) {
    // Four at a time, the same values as ReluFn: lanes where x < 0 are cleared, NaN and -0 kept.
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
      const __m128 x4 = _mm_loadu_ps(x + i);
      _mm_storeu_ps(y + i, _mm_andnot_ps(_mm_cmplt_ps(x4, _mm_setzero_ps()), x4));
    }
    for (; i < n; ++i) y[i] = fn(x[i]);
    return;
  }
#endif
  if constexpr (Fn::kVec) {
    // A value does not depend on where the chunk starts: vecmath's tails take its vector code.
    if (fast) {
      VecMap(fn, x, y, n);
      return;
    }
  }
  for (int64_t i = 0; i < n; ++i) y[i] = fn(x[i]);
}

template <typename Fn>
KernelFactory UnaryKernel(bool fast) {
  return [fast](const KernelInfo& info) {
    const Fn fn(*info.node);
    return MakeKernel([fn, fast](KernelContext& ctx) {
      const Tensor& x = ctx.required_input(0);
      auto run = [&](auto tag) {
        using T = decltype(tag);
        const T* px = x.data<T>();
        const int64_t n = x.numel();
        T* py = nullptr;
        if (ctx.input_donated(0)) {
          // Last reader of x: compute in place (every element is read before it is written).
          ctx.SetOutput(0, ctx.TakeInput(0));
          py = ctx.outputs()[0].template mutable_data<T>();
          px = py;
        } else {
          py = ctx.OutputForWrite(0, x.dtype(), x.dims()).template mutable_data<T>();
        }
        ctx.pool().ParallelFor(n, kElementwiseGrain, [&](int64_t begin, int64_t end) {
          if constexpr (std::is_same_v<T, float>) {
            MapFloats(fn, fast, px + begin, py + begin, end - begin);
          } else {
            for (int64_t i = begin; i < end; ++i) py[i] = fn(px[i]);
          }
        });
      };
      if constexpr (Fn::kIntegers) {
        DispatchNumeric(ctx, x.dtype(), run);
      } else {
        DispatchFloating(ctx, x.dtype(), run);
      }
    });
  };
}

template <typename Fn, bool kFast>
void MapFloatsOf(const float* x, float* y, int64_t n) {
  static const Fn fn{Node{}};
  MapFloats(fn, kFast, x, y, n);
}

KernelFactory NotKernel() {
  return [](const KernelInfo&) {
    return MakeKernel([](KernelContext& ctx) {
      const Tensor& x = ctx.required_input(0);
      if (x.dtype() != DType::kBool) {
        ctx.Fail(std::string("expects a bool input, got ") + DTypeName(x.dtype()));
      }
      const uint8_t* px = static_cast<const uint8_t*>(x.raw());
      bool* py = ctx.Output(0, DType::kBool, x.dims()).mutable_data<bool>();
      for (int64_t i = 0; i < x.numel(); ++i) py[i] = px[i] == 0;
    });
  };
}

// Clip: bounds from the min / max attributes before opset 11, from optional scalar inputs since. A missing
// bound is the type's lowest / highest value, as the spec defines.
KernelFactory ClipKernel(bool bounds_from_inputs) {
  return [bounds_from_inputs](const KernelInfo& info) {
    const Node& n = *info.node;
    const float attr_min = n.AttrFloat("min", -std::numeric_limits<float>::infinity());
    const float attr_max = n.AttrFloat("max", std::numeric_limits<float>::infinity());
    return MakeKernel([bounds_from_inputs, attr_min, attr_max](KernelContext& ctx) {
      const Tensor& x = ctx.required_input(0);
      DispatchNumeric(ctx, x.dtype(), [&](auto tag) {
        using T = decltype(tag);
        T lo = std::numeric_limits<T>::lowest(), hi = std::numeric_limits<T>::max();
        if (!bounds_from_inputs) {
          if constexpr (!std::is_floating_point_v<T>) {
            ctx.Fail(std::string("element type ") + DTypeName(x.dtype()) +
                     " is not supported before opset 12");
          } else {
            lo = std::max(lo, static_cast<T>(attr_min));
            hi = std::min(hi, static_cast<T>(attr_max));
          }
        }
        auto bound = [&](size_t i, const char* name, T& value) {
          const Tensor* t = ctx.input(i);
          if (t == nullptr || !bounds_from_inputs) return;
          CheckSameType(ctx, x, *t);
          if (t->numel() != 1) {
            ctx.Fail(std::string(name) + " must be a scalar, got shape " + ShapeToString(t->dims()));
          }
          value = t->data<T>()[0];
        };
        bound(1, "min", lo);
        bound(2, "max", hi);
        const T* px = x.data<T>();
        T* py = ctx.OutputForWrite(0, x.dtype(), x.dims()).template mutable_data<T>();
        ctx.pool().ParallelFor(x.numel(), kElementwiseGrain, [&](int64_t begin, int64_t end) {
          for (int64_t i = begin; i < end; ++i) {
            // max then min, as numpy's clip: min > max gives max everywhere; NaN stays NaN.
            const T v = px[i] < lo ? lo : px[i];
            py[i] = v > hi ? hi : v;
          }
        });
      });
    });
  };
}

// -----------------------------------------------------------------------------------------------------------
// Cast.

struct Half {};      // tag: IEEE binary16 stored as uint16_t
struct BFloat16 {};  // tag: bfloat16 stored as uint16_t

template <typename T>
struct Storage {
  using type = T;
};
template <>
struct Storage<Half> {
  using type = uint16_t;
};
template <>
struct Storage<BFloat16> {
  using type = uint16_t;
};

template <typename T>
constexpr bool kIsFloatTag =
    std::is_floating_point_v<T> || std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>;

template <typename Fn>
void DispatchCastType(const KernelContext& ctx, DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kBool:
      fn(bool{});
      break;
    case DType::kFloat16:
      fn(Half{});
      break;
    case DType::kBFloat16:
      fn(BFloat16{});
      break;
    default:
      DispatchNumeric(ctx, dtype, fn);
  }
}

// Rounds to float "to odd": when inexact, the result is the float just below |d| in magnitude with its last
// bit set. Rounding that to a format at least two bits narrower (half, bfloat16) gives d correctly rounded to
// that format, which rounding d to the nearest float first would not on ties.
float RoundToOddFloat(double d) {
  const float f = static_cast<float>(d);
  if (static_cast<double>(f) == d || std::isnan(d)) return f;
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  if (std::fabs(static_cast<double>(f)) > std::fabs(d)) --bits;  // rounded away from zero: step back
  bits |= 1u;
  float r;
  std::memcpy(&r, &bits, sizeof(r));
  return r;
}

template <typename S>
double FloatTagToDouble(typename Storage<S>::type v) {
  if constexpr (std::is_same_v<S, Half>) {
    return HalfToFloat(v);
  } else if constexpr (std::is_same_v<S, BFloat16>) {
    return BFloat16ToFloat(v);
  } else {
    return static_cast<double>(v);
  }
}

// A double (exact for every source value except integers beyond 2^53) to a floating type D.
template <typename D>
typename Storage<D>::type DoubleToFloatTag(double d) {
  if constexpr (std::is_same_v<D, Half>) {
    return FloatToHalf(RoundToOddFloat(d));
  } else if constexpr (std::is_same_v<D, BFloat16>) {
    return FloatToBFloat16(RoundToOddFloat(d));
  } else {
    return static_cast<D>(d);
  }
}

template <typename S, typename D>
typename Storage<D>::type CastValue(typename Storage<S>::type v) {
  if constexpr (std::is_same_v<S, D>) {
    return v;
  } else if constexpr (std::is_same_v<D, bool>) {
    if constexpr (kIsFloatTag<S>) {
      return FloatTagToDouble<S>(v) != 0;  // NaN is true, as in numpy
    } else {
      return v != 0;
    }
  } else if constexpr (kIsFloatTag<S>) {
    const double d = FloatTagToDouble<S>(v);
    if constexpr (kIsFloatTag<D>) {
      return DoubleToFloatTag<D>(d);
    } else {
      return FloatToInt<D>(d);
    }
  } else if constexpr (std::is_floating_point_v<D>) {
    return static_cast<D>(v);  // one rounding from the integer
  } else if constexpr (kIsFloatTag<D>) {
    return DoubleToFloatTag<D>(static_cast<double>(v));
  } else {
    return static_cast<D>(v);  // integers wrap, as numpy's astype does
  }
}

// Shortest decimal digits that read back as the value: value = 0.d1d2... shifted, written d1.d2... x
// 10^exponent.
struct Decimal {
  std::string digits;
  int exponent = 0;
};

Decimal ParseScientific(std::string_view s) {
  Decimal d;
  const size_t e = s.find('e');
  for (char c : s.substr(0, e)) {
    if (c != '.') d.digits.push_back(c);
  }
  std::from_chars(s.data() + e + 1 + (s[e + 1] == '+' ? 1 : 0), s.data() + s.size(), d.exponent);
  while (d.digits.size() > 1 && d.digits.back() == '0') d.digits.pop_back();
  return d;
}

// `v` (positive, finite, non-zero) of element type S: std::to_chars gives the shortest digits for float and
// double; for the 16-bit types, the first precision whose digits read back as the same value.
template <typename S>
Decimal ShortestDecimal(double v) {
  char buf[64];
  if constexpr (std::is_same_v<S, float> || std::is_same_v<S, double>) {
    const auto r = std::to_chars(buf, buf + sizeof(buf), static_cast<S>(v), std::chars_format::scientific);
    return ParseScientific(std::string_view(buf, static_cast<size_t>(r.ptr - buf)));
  } else {
    const auto bits = DoubleToFloatTag<S>(v);
    for (int precision = 0;; ++precision) {
      const auto r = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::scientific, precision);
      double back = 0;
      std::from_chars(buf, r.ptr, back);
      if (DoubleToFloatTag<S>(back) == bits || precision >= 17) {
        return ParseScientific(std::string_view(buf, static_cast<size_t>(r.ptr - buf)));
      }
    }
  }
}

// As numpy's str() of a float scalar: shortest round-trip digits, positional when 1e-4 <= |v| < 1e16
// ("0.1", "100.0"), else scientific with at least two exponent digits ("1e-05", "1.5e+16").
template <typename S>
std::string FormatFloat(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v < 0 ? "-inf" : "inf";
  std::string s = std::signbit(v) ? "-" : "";
  const double a = std::fabs(v);
  if (a == 0) return s + "0.0";
  const Decimal d = ShortestDecimal<S>(a);
  const int len = static_cast<int>(d.digits.size());
  if (a >= 1e-4 && a < 1e16) {
    if (d.exponent >= 0) {
      const int int_len = d.exponent + 1;
      s += d.digits.substr(0, static_cast<size_t>(std::min(len, int_len)));
      if (int_len > len) s.append(static_cast<size_t>(int_len - len), '0');
      s += ".";
      s += len > int_len ? d.digits.substr(static_cast<size_t>(int_len)) : "0";
    } else {
      s += "0.";
      s.append(static_cast<size_t>(-d.exponent - 1), '0');
      s += d.digits;
    }
    return s;
  }
  s += d.digits.substr(0, 1);
  if (len > 1) s += "." + d.digits.substr(1);
  const int e = std::abs(d.exponent);
  s += d.exponent < 0 ? "e-" : "e+";
  if (e < 10) s += "0";
  return s + std::to_string(e);
}

template <typename S>
std::string FormatValue(typename Storage<S>::type v) {
  if constexpr (std::is_same_v<S, bool>) {
    return v ? "True" : "False";
  } else if constexpr (kIsFloatTag<S>) {
    return FormatFloat<S>(FloatTagToDouble<S>(v));
  } else {
    return std::to_string(v);
  }
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

// A number as numpy's float() reads it: decimal or scientific, "inf" / "INF" / "+INF" / "nan" in any case.
std::optional<double> ParseDouble(std::string_view s) {
  s = Trim(s);
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  double v = 0;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (r.ec != std::errc() || r.ptr != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

template <typename D>
typename Storage<D>::type ParseValue(const KernelContext& ctx, const std::string& text) {
  const std::string_view s = Trim(text);
  if constexpr (std::is_same_v<D, bool>) {
    std::string lower(s);
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char c) { return std::tolower(c); });
    if (lower == "true") return true;
    if (lower == "false") return false;
  } else if constexpr (std::is_integral_v<D>) {
    // Integers directly, so that int64 values beyond 2^53 stay exact.
    std::conditional_t<std::is_unsigned_v<D>, uint64_t, int64_t> v = 0;
    const std::string_view digits = !s.empty() && s.front() == '+' ? s.substr(1) : s;
    const auto r = std::from_chars(digits.data(), digits.data() + digits.size(), v);
    if (r.ec == std::errc() && r.ptr == digits.data() + digits.size() && !digits.empty()) {
      return static_cast<D>(v);
    }
  }
  const std::optional<double> v = ParseDouble(s);
  if (!v) ctx.Fail("cannot parse '" + text + "' as a number");
  return CastValue<double, D>(*v);
}

std::optional<DType> CastTarget(const Attribute& to) {
  if (to.type == AttrType::kString) {
    // Cast-1 names the type as in TensorProto.DataType.
    static const std::pair<const char*, DType> kNames[] = {
        {"FLOAT", DType::kFloat},     {"UINT8", DType::kUInt8},      {"INT8", DType::kInt8},
        {"UINT16", DType::kUInt16},   {"INT16", DType::kInt16},      {"INT32", DType::kInt32},
        {"INT64", DType::kInt64},     {"STRING", DType::kString},    {"BOOL", DType::kBool},
        {"FLOAT16", DType::kFloat16}, {"DOUBLE", DType::kDouble},    {"UINT32", DType::kUInt32},
        {"UINT64", DType::kUInt64},   {"BFLOAT16", DType::kBFloat16}};
    for (const auto& [name, dtype] : kNames) {
      if (to.s == name) return dtype;
    }
    return std::nullopt;
  }
  if (!IsKnownDType(static_cast<int32_t>(to.i))) return std::nullopt;
  return static_cast<DType>(to.i);
}

bool Castable(DType t) {
  switch (t) {
    case DType::kFloat:
    case DType::kDouble:
    case DType::kFloat16:
    case DType::kBFloat16:
    case DType::kBool:
    case DType::kInt8:
    case DType::kUInt8:
    case DType::kInt16:
    case DType::kUInt16:
    case DType::kInt32:
    case DType::kUInt32:
    case DType::kInt64:
    case DType::kUInt64:
    case DType::kString:
      return true;
    default:
      return false;
  }
}

KernelFactory CastKernel() {
  return [](const KernelInfo& info) {
    const Node& n = *info.node;
    const Attribute* to = n.FindAttr("to");
    if (to == nullptr) ThrowInvalid("node " + n.Describe() + ": attribute 'to' is missing");
    const std::optional<DType> target = CastTarget(*to);
    if (!target || !Castable(*target)) {
      const std::string name = target                          ? DTypeName(*target)
                               : to->type == AttrType::kString ? "'" + to->s + "'"
                                                               : "type " + std::to_string(to->i);
      ThrowInvalid("node " + n.Describe() + ": casting to " + name + " is not supported");
    }
    const DType dst = *target;
    return MakeKernel([dst](KernelContext& ctx) {
      const Tensor& x = ctx.required_input(0);
      if (!Castable(x.dtype())) {
        ctx.Fail(std::string("casting from ") + DTypeName(x.dtype()) + " is not supported");
      }
      if (x.dtype() == dst) {
        ctx.SetOutput(0, x);
        return;
      }
      Tensor& out = ctx.Output(0, dst, x.dims());
      const int64_t count = x.numel();
      if ((x.dtype() == DType::kFloat && dst == DType::kFloat16) ||
          (x.dtype() == DType::kFloat16 && dst == DType::kFloat)) {
        // The ends of a float16 model, whole arrays at a time (F16C when there is one): the same
        // round-to-nearest-even values as CastValue.
        const bool to_half = dst == DType::kFloat16;
        ctx.pool().ParallelFor(count, kElementwiseGrain, [&](int64_t begin, int64_t end) {
          if (to_half) {
            FloatToHalfArray(x.data<float>() + begin, static_cast<uint16_t*>(out.mutable_raw()) + begin,
                             end - begin);
          } else {
            HalfToFloatArray(static_cast<const uint16_t*>(x.raw()) + begin, out.mutable_data<float>() + begin,
                             end - begin);
          }
        });
        return;
      }
      if (x.dtype() == DType::kString) {
        const std::vector<std::string>& in = x.strings();
        DispatchCastType(ctx, dst, [&](auto dst_tag) {
          using D = decltype(dst_tag);
          auto* y = static_cast<typename Storage<D>::type*>(out.mutable_raw());
          for (int64_t i = 0; i < count; ++i) y[i] = ParseValue<D>(ctx, in[static_cast<size_t>(i)]);
        });
        return;
      }
      DispatchCastType(ctx, x.dtype(), [&](auto src_tag) {
        using S = decltype(src_tag);
        const auto* px = static_cast<const typename Storage<S>::type*>(x.raw());
        if (dst == DType::kString) {
          std::vector<std::string>& y = out.mutable_strings();
          for (int64_t i = 0; i < count; ++i) y[static_cast<size_t>(i)] = FormatValue<S>(px[i]);
          return;
        }
        DispatchCastType(ctx, dst, [&](auto dst_tag) {
          using D = decltype(dst_tag);
          auto* y = static_cast<typename Storage<D>::type*>(out.mutable_raw());
          ctx.pool().ParallelFor(count, kElementwiseGrain, [&](int64_t begin, int64_t end) {
            for (int64_t i = begin; i < end; ++i) y[i] = CastValue<S, D>(px[i]);
          });
        });
      });
    });
  };
}

}  // namespace

FloatMap FastUnaryFloatMap(const std::string& op_type) {
  // Ops whose function takes no attribute, with the variant their fast kernel registers below.
  if (op_type == "Relu") return MapFloatsOf<ReluFn, false>;
  if (op_type == "Sqrt") return MapFloatsOf<SqrtFn, false>;
  if (op_type == "Exp") return MapFloatsOf<ExpFn, false>;
  if (op_type == "Log") return MapFloatsOf<LogFn, false>;
  if (op_type == "Neg") return MapFloatsOf<NegFn, false>;
  if (op_type == "Abs") return MapFloatsOf<AbsFn, false>;
  if (op_type == "Reciprocal") return MapFloatsOf<ReciprocalFn, false>;
  if (op_type == "Sigmoid") return MapFloatsOf<SigmoidFn, true>;
  if (op_type == "Tanh") return MapFloatsOf<TanhFn, true>;
  if (op_type == "Erf") return MapFloatsOf<ErfFn, true>;
  return nullptr;
}

void RegisterElementwiseKernels(KernelRegistry& r) {
  const int64_t latest = KernelEntry{}.until_version;
  constexpr KernelVariant kRef = KernelVariant::kReference;
  constexpr KernelVariant kFast = KernelVariant::kFast;

  for (const bool fast : {false, true}) {
    const KernelVariant v = fast ? kFast : kRef;
    // Opsets 1-6 carry the broadcast / axis attributes; numpy broadcasting since 7.
    const FoldSpec legacy{2, 2, true, false, false};
    const FoldSpec binary{2, 2, false, false, false};
    AddKernel(r, "Add", 1, 6, FoldKernel<AddOp>(legacy, fast), v);
    AddKernel(r, "Add", 7, latest, FoldKernel<AddOp>(binary, fast), v);
    AddKernel(r, "Sub", 1, 6, FoldKernel<SubOp>(legacy, fast), v);
    AddKernel(r, "Sub", 7, latest, FoldKernel<SubOp>(binary, fast), v);
    AddKernel(r, "Mul", 1, 6, FoldKernel<MulOp>(legacy, fast), v);
    AddKernel(r, "Mul", 7, latest, FoldKernel<MulOp>(binary, fast), v);
    AddKernel(r, "Div", 1, 6, FoldKernel<DivOp>(legacy, fast), v);
    AddKernel(r, "Div", 7, latest, FoldKernel<DivOp>(binary, fast), v);
    AddKernel(r, "Pow", 1, 6, PowKernel(true, fast), v);
    AddKernel(r, "Pow", 7, latest, PowKernel(false, fast), v);
    // Variadic; before opset 8 all inputs had the same shape, which broadcasting accepts as well.
    const size_t many = std::numeric_limits<size_t>::max();
    AddKernel(r, "Sum", 1, latest, FoldKernel<AddOp>({1, many, false, false, false}, fast), v);
    AddKernel(r, "Mean", 1, latest, FoldKernel<AddOp>({1, many, false, true, true}, fast), v);
    AddKernel(r, "Max", 1, latest, FoldKernel<MaxOp>({1, many, false, false, false}, fast), v);
    AddKernel(r, "Min", 1, latest, FoldKernel<MinOp>({1, many, false, false, false}, fast), v);
    AddKernel(r, "PRelu", 1, 6, PReluKernel(true, fast), v);
    AddKernel(r, "PRelu", 7, latest, PReluKernel(false, fast), v);
    AddKernel(r, "Equal", 1, 6, CompareKernel<EqualOp>(true, fast), v);
    AddKernel(r, "Equal", 7, latest, CompareKernel<EqualOp>(false, fast), v);
    AddKernel(r, "Less", 1, 6, CompareKernel<LessOp>(true, fast), v);
    AddKernel(r, "Less", 7, latest, CompareKernel<LessOp>(false, fast), v);
    AddKernel(r, "Greater", 1, 6, CompareKernel<GreaterOp>(true, fast), v);
    AddKernel(r, "Greater", 7, latest, CompareKernel<GreaterOp>(false, fast), v);
    AddKernel(r, "LessOrEqual", 12, latest, CompareKernel<LessOrEqualOp>(false, fast), v);
    AddKernel(r, "GreaterOrEqual", 12, latest, CompareKernel<GreaterOrEqualOp>(false, fast), v);
    AddKernel(r, "And", 1, 6, CompareKernel<AndOp>(true, fast), v);
    AddKernel(r, "And", 7, latest, CompareKernel<AndOp>(false, fast), v);
  }

  AddKernel(r, "Sqrt", 1, latest, UnaryKernel<SqrtFn>(false));
  AddKernel(r, "Log", 1, latest, UnaryKernel<LogFn>(false));
  AddKernel(r, "Neg", 1, latest, UnaryKernel<NegFn>(false));
  AddKernel(r, "Abs", 1, latest, UnaryKernel<AbsFn>(false));
  AddKernel(r, "Reciprocal", 1, latest, UnaryKernel<ReciprocalFn>(false));
  AddKernel(r, "Relu", 1, latest, UnaryKernel<ReluFn>(false));
  AddKernel(r, "LeakyRelu", 1, latest, UnaryKernel<LeakyReluFn>(false));
  AddKernel(r, "Elu", 1, latest, UnaryKernel<EluFn>(false));
  AddKernel(r, "Selu", 1, latest, UnaryKernel<SeluFn>(false));
  AddKernel(r, "HardSigmoid", 1, latest, UnaryKernel<HardSigmoidFn>(false));
  AddKernel(r, "HardSwish", 14, latest, UnaryKernel<HardSwishFn>(false));
  AddKernel(r, "Softplus", 1, latest, UnaryKernel<SoftplusFn>(false));
  for (const bool fast : {false, true}) {
    const KernelVariant v = fast ? kFast : kRef;
    AddKernel(r, "Exp", 1, latest, UnaryKernel<ExpFn>(fast), v);
    AddKernel(r, "Sigmoid", 1, latest, UnaryKernel<SigmoidFn>(fast), v);
    AddKernel(r, "Tanh", 1, latest, UnaryKernel<TanhFn>(fast), v);
    AddKernel(r, "Erf", 9, latest, UnaryKernel<ErfFn>(fast), v);
    AddKernel(r, "Gelu", 20, latest, UnaryKernel<GeluFn>(fast), v);
    // ONNX Runtime's contrib Gelu, which exporters emitted before the standard op existed.
    KernelEntry contrib;
    contrib.domain = "com.microsoft";
    contrib.op_type = "Gelu";
    contrib.since_version = 1;
    contrib.until_version = latest;
    contrib.variant = v;
    contrib.factory = UnaryKernel<GeluFn>(fast);
    r.Add(std::move(contrib));
  }

  AddKernel(r, "Not", 1, latest, NotKernel());
  AddKernel(r, "Clip", 1, 10, ClipKernel(false));
  AddKernel(r, "Clip", 11, latest, ClipKernel(true));
  AddKernel(r, "Where", 9, latest, WhereKernel(), kRef, /*float16_via_float32=*/false);
  AddKernel(r, "Cast", 1, latest, CastKernel(), kRef, /*float16_via_float32=*/false);
}

}  // namespace compress::kernels
