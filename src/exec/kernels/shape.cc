// Data movement and shape ops. They move elements of any dtype bitwise (float16 included), and the ops that
// only change the shape (Reshape, Squeeze, Flatten, Identity, ...) share the input's buffer instead of
// copying.

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <random>

#include "common.h"
#include "compress/util/half.h"
#include "kernels.h"

namespace compress::kernels {
namespace {

int64_t Product(const std::vector<int64_t>& dims, size_t begin, size_t end) {
  int64_t p = 1;
  for (size_t i = begin; i < end; ++i) p *= dims[i];
  return p;
}

// Rows of `row_elems` elements per parallel chunk, so that a chunk moves about kElementwiseGrain elements.
int64_t RowGrain(int64_t row_elems) {
  return std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, row_elems));
}

// Outputs the input's buffer under new dims (copies of a Tensor share the buffer).
void OutputView(KernelContext& ctx, const Tensor& in, std::vector<int64_t> dims) {
  if (ShapeElementCount(dims) != in.numel()) {
    ctx.Fail("cannot reshape input of shape " + ShapeToString(in.dims()) + " (" + std::to_string(in.numel()) +
             " elements) to " + ShapeToString(dims));
  }
  Tensor out = in;
  out.Reshape(std::move(dims));
  ctx.SetOutput(0, std::move(out));
}

// The values of an optional int64 input, or of the attribute `attr` when the input is absent; nullopt when
// neither is given.
std::optional<std::vector<int64_t>> InputOrAttrInts(const KernelContext& ctx, size_t input,
                                                    const std::string& attr) {
  if (const Tensor* t = ctx.input(input)) return ToInt64s(ctx, *t);
  if (const Attribute* a = ctx.node().FindAttr(attr)) return a->ints;
  return std::nullopt;
}

// Drops unit dims and merges each dim into the previous one when the pair is contiguous in the source.
void MergeDims(const std::vector<int64_t>& dims, const std::vector<int64_t>& strides, std::vector<int64_t>* d,
               std::vector<int64_t>* s) {
  d->clear();
  s->clear();
  for (size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] == 1) continue;
    if (!d->empty() && s->back() == strides[i] * dims[i]) {
      d->back() *= dims[i];
      s->back() = strides[i];
    } else {
      d->push_back(dims[i]);
      s->push_back(strides[i]);
    }
  }
}

// dst[j] = src[j * step] for j < n.
template <typename T>
void CopyRun(const T* src, int64_t step, int64_t n, T* dst) {
  if (step == 1) {
    std::copy_n(src, n, dst);
  } else if (step == 0) {
    std::fill_n(dst, n, *src);
  } else {
    for (int64_t j = 0; j < n; ++j) dst[j] = src[j * step];
  }
}

// out (row-major over `dims`) = in[base + sum(index[d] * strides[d])], for any strides (0 broadcasts,
// negative walks backwards). After merging contiguous dims, the innermost dim is copied as one run and the
// dim before it is walked by pointer, so the full index arithmetic is paid once per block of runs rather than
// per element.
template <typename T>
void StridedCopy(ThreadPool& pool, const T* in, int64_t base, const std::vector<int64_t>& dims,
                 const std::vector<int64_t>& strides, T* out) {
  const int64_t total = Product(dims, 0, dims.size());
  if (total == 0) return;
  std::vector<int64_t> d, s;
  MergeDims(dims, strides, &d, &s);
  while (d.size() < 2) {
    d.insert(d.begin(), 1);
    s.insert(s.begin(), 0);
  }
  const size_t m = d.size();
  const int64_t run = d[m - 1], step = s[m - 1], mid = d[m - 2], mid_stride = s[m - 2];
  pool.ParallelFor(total / run, RowGrain(run), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end;) {
      int64_t i = r % mid, rest = r / mid, offset = base;
      for (size_t k = m - 2; k-- > 0;) {
        offset += rest % d[k] * s[k];
        rest /= d[k];
      }
      const T* src = in + offset + i * mid_stride;
      for (const int64_t stop = std::min(mid, i + end - r); i < stop; ++i, ++r, src += mid_stride) {
        CopyRun(src, step, run, out + r * run);
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------------------
// Identity, Dropout

void AddIdentity(KernelRegistry& r) {
  AddKernel(
      r, "Identity", 1, 1000,
      [](const KernelInfo&) {
        return MakeKernel([](KernelContext& ctx) { ctx.SetOutput(0, ctx.required_input(0)); });
      },
      KernelVariant::kReference, false);
}

// A tensor of ones of a floating-point dtype (the mask of Dropout before opset 10 has the data's type).
Tensor OnesLike(const KernelContext& ctx, DType dtype, const std::vector<int64_t>& dims) {
  Tensor t(dtype, dims);
  const int64_t n = t.numel();
  switch (dtype) {
    case DType::kFloat:
      std::fill_n(t.mutable_data<float>(), n, 1.0f);
      break;
    case DType::kDouble:
      std::fill_n(t.mutable_data<double>(), n, 1.0);
      break;
    case DType::kFloat16:
      std::fill_n(static_cast<uint16_t*>(t.mutable_raw()), n, FloatToHalf(1.0f));
      break;
    case DType::kBFloat16:
      std::fill_n(static_cast<uint16_t*>(t.mutable_raw()), n, FloatToBFloat16(1.0f));
      break;
    default:
      ctx.Fail(std::string("element type ") + DTypeName(dtype) + " is not supported here");
  }
  return t;
}

// numpy.random.RandomState(seed).uniform(0, 1): MT19937 seeded like init_genrand (as std::mt19937 is) and
// 53-bit doubles from two draws. Training-mode Dropout uses it so that results match the ONNX reference.
class NumpyUniform {
 public:
  explicit NumpyUniform(uint32_t seed) : gen_(seed) {}
  double Next() {
    const uint32_t a = static_cast<uint32_t>(gen_()) >> 5;
    const uint32_t b = static_cast<uint32_t>(gen_()) >> 6;
    return (a * 67108864.0 + b) / 9007199254740992.0;
  }

 private:
  std::mt19937 gen_;
};

// Training-mode dropout: y = mask * x / (1 - ratio) with mask = (uniform >= ratio).
void DropoutTraining(KernelContext& ctx, const Tensor& x, float ratio, uint32_t seed, bool want_mask) {
  Tensor& y = ctx.Output(0, x.dtype(), x.dims());
  std::vector<uint8_t> keep(static_cast<size_t>(x.numel()));
  NumpyUniform uniform(seed);
  for (auto& k : keep) k = uniform.Next() >= static_cast<double>(ratio) ? 1 : 0;
  const float scale = 1.0f / (1.0f - ratio);
  const int64_t n = x.numel();
  switch (x.dtype()) {
    case DType::kFloat: {
      const float* src = x.data<float>();
      float* dst = y.mutable_data<float>();
      for (int64_t i = 0; i < n; ++i) dst[i] = keep[static_cast<size_t>(i)] ? src[i] * scale : 0.0f;
      break;
    }
    case DType::kDouble: {
      const double* src = x.data<double>();
      double* dst = y.mutable_data<double>();
      const double dscale = 1.0 / (1.0 - static_cast<double>(ratio));
      for (int64_t i = 0; i < n; ++i) dst[i] = keep[static_cast<size_t>(i)] ? src[i] * dscale : 0.0;
      break;
    }
    case DType::kFloat16:
    case DType::kBFloat16: {
      const bool bf = x.dtype() == DType::kBFloat16;
      const uint16_t* src = static_cast<const uint16_t*>(x.raw());
      uint16_t* dst = static_cast<uint16_t*>(y.mutable_raw());
      for (int64_t i = 0; i < n; ++i) {
        const float v = keep[static_cast<size_t>(i)]
                            ? (bf ? BFloat16ToFloat(src[i]) : HalfToFloat(src[i])) * scale
                            : 0.0f;
        dst[i] = bf ? FloatToBFloat16(v) : FloatToHalf(v);
      }
      break;
    }
    default:
      ctx.Fail(std::string("element type ") + DTypeName(x.dtype()) + " is not supported here");
  }
  if (want_mask) {
    Tensor& mask = ctx.Output(1, DType::kBool, x.dims());
    std::copy(keep.begin(), keep.end(), static_cast<uint8_t*>(mask.mutable_raw()));
  }
}

void AddDropout(KernelRegistry& r) {
  // Before opset 12 Dropout has no training input: at inference it is the identity.
  AddKernel(
      r, "Dropout", 1, 11,
      [](const KernelInfo& info) {
        const bool bool_mask = info.opset >= 10;
        return MakeKernel([bool_mask](KernelContext& ctx) {
          const Tensor& x = ctx.required_input(0);
          ctx.SetOutput(0, x);
          if (ctx.num_outputs() > 1 && !ctx.node().outputs[1].empty()) {
            if (bool_mask) {
              Tensor& mask = ctx.Output(1, DType::kBool, x.dims());
              std::fill_n(static_cast<uint8_t*>(mask.mutable_raw()), mask.numel(), uint8_t{1});
            } else {
              ctx.SetOutput(1, OnesLike(ctx, x.dtype(), x.dims()));
            }
          }
        });
      },
      KernelVariant::kReference, false);
  AddKernel(
      r, "Dropout", 12, 1000,
      [](const KernelInfo& info) {
        // Without a seed attribute the generator is seeded with 0, so that runs stay reproducible.
        const uint32_t seed = static_cast<uint32_t>(info.node->AttrInt("seed", 0));
        return MakeKernel([seed](KernelContext& ctx) {
          const Tensor& x = ctx.required_input(0);
          const bool want_mask = ctx.num_outputs() > 1 && !ctx.node().outputs[1].empty();
          float ratio = 0.5f;
          if (const Tensor* ratio_in = ctx.input(1)) {
            if (ratio_in->numel() != 1) {
              ctx.Fail("ratio must hold one value, got shape " + ShapeToString(ratio_in->dims()));
            }
            ratio = ratio_in->dtype() == DType::kBFloat16
                        ? BFloat16ToFloat(*static_cast<const uint16_t*>(ratio_in->raw()))
                        : ToFloats(ctx, *ratio_in)[0];
          }
          bool training = false;
          if (const Tensor* t = ctx.input(2)) {
            if (t->dtype() != DType::kBool || t->numel() != 1) ctx.Fail("training_mode must be one bool");
            training = *static_cast<const uint8_t*>(t->raw()) != 0;
          }
          if (!training || ratio == 0.0f) {
            ctx.SetOutput(0, x);
            if (want_mask) {
              Tensor& mask = ctx.Output(1, DType::kBool, x.dims());
              std::fill_n(static_cast<uint8_t*>(mask.mutable_raw()), mask.numel(), uint8_t{1});
            }
            return;
          }
          if (!(ratio > 0.0f && ratio < 1.0f)) {
            ctx.Fail("ratio " + std::to_string(ratio) + " is not in [0, 1)");
          }
          DropoutTraining(ctx, x, ratio, seed, want_mask);
        });
      },
      KernelVariant::kReference, false);
}

// ---------------------------------------------------------------------------------------------------------
// Shape-only ops: Reshape, Flatten, Squeeze, Unsqueeze

std::vector<int64_t> ReshapeDims(const KernelContext& ctx, const std::vector<int64_t>& in_dims,
                                 const std::vector<int64_t>& shape, bool allowzero) {
  std::vector<int64_t> out(shape.size());
  int64_t infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    int64_t d = shape[i];
    if (d == 0 && !allowzero) {
      if (i >= in_dims.size()) {
        ctx.Fail("shape " + ShapeToString(shape) + " copies dimension " + std::to_string(i) +
                 " of input shape " + ShapeToString(in_dims) + ", which does not exist");
      }
      d = in_dims[i];
    }
    if (d == -1) {
      if (infer >= 0) ctx.Fail("shape " + ShapeToString(shape) + " has more than one -1");
      infer = static_cast<int64_t>(i);
      continue;
    }
    if (d < 0) ctx.Fail("shape " + ShapeToString(shape) + " has invalid dimension " + std::to_string(d));
    if (d != 0 && known > std::numeric_limits<int64_t>::max() / d) {
      ctx.Fail("shape " + ShapeToString(shape) + " has too many elements");
    }
    out[i] = d;
    known *= d;
  }
  const int64_t numel = Product(in_dims, 0, in_dims.size());
  if (infer >= 0) {
    if (known == 0 || numel % known != 0) {
      ctx.Fail("cannot reshape input of shape " + ShapeToString(in_dims) + " to " + ShapeToString(shape));
    }
    out[static_cast<size_t>(infer)] = numel / known;
  }
  return out;
}

void AddReshape(KernelRegistry& r) {
  AddKernel(
      r, "Reshape", 1, 4,
      [](const KernelInfo& info) {
        const std::vector<int64_t> shape = info.node->AttrInts("shape", {});
        return MakeKernel([shape](KernelContext& ctx) {
          const Tensor& x = ctx.required_input(0);
          OutputView(ctx, x, ReshapeDims(ctx, x.dims(), shape, false));
        });
      },
      KernelVariant::kReference, false);
  AddKernel(
      r, "Reshape", 5, 1000,
      [](const KernelInfo& info) {
        const bool allowzero = info.node->AttrInt("allowzero", 0) != 0;
        return MakeKernel([allowzero](KernelContext& ctx) {
          const Tensor& x = ctx.required_input(0);
          const std::vector<int64_t> shape = ToInt64s(ctx, ctx.required_input(1));
          if (allowzero && std::count(shape.begin(), shape.end(), 0) > 0 &&
              std::count(shape.begin(), shape.end(), -1) > 0) {
            ctx.Fail("shape " + ShapeToString(shape) + " has both 0 and -1 while allowzero is set");
          }
          OutputView(ctx, x, ReshapeDims(ctx, x.dims(), shape, allowzero));
        });
      },
      KernelVariant::kReference, false);
}

void AddFlatten(KernelRegistry& r) {
  AddKernel(
      r, "Flatten", 1, 1000,
      [](const KernelInfo& info) {
        const int64_t axis_attr = info.node->AttrInt("axis", 1);
        return MakeKernel([axis_attr](KernelContext& ctx) {
          const Tensor& x = ctx.required_input(0);
          const int64_t rank = x.rank();
          const int64_t axis = axis_attr < 0 ? axis_attr + rank : axis_attr;
          if (axis < 0 || axis > rank) {
            ctx.Fail("axis " + std::to_string(axis_attr) + " is out of range for rank " +
                     std::to_string(rank));
          }
          const int64_t outer = Product(x.dims(), 0, static_cast<size_t>(axis));
          OutputView(ctx, x, {outer, Product(x.dims(), static_cast<size_t>(axis), x.dims().size())});
        });
      },
      KernelVariant::kReference, false);
}

void AddSqueeze(KernelRegistry& r) {
  AddKernel(
      r, "Squeeze", 1, 1000,
      [](const KernelInfo&) {
        return MakeKernel([](KernelContext& ctx) {
          const Tensor& x = ctx.required_input(0);
          const std::vector<int64_t> axes = InputOrAttrInts(ctx, 1, "axes").value_or(std::vector<int64_t>{});
          std::vector<bool> drop(x.dims().size(), false);
          if (axes.empty()) {  // absent or empty axes: drop every unit dim
            for (size_t i = 0; i < drop.size(); ++i) drop[i] = x.dims()[i] == 1;
          }
          for (int64_t a : axes) {
            const size_t axis = static_cast<size_t>(NormalizeAxis(ctx, a, x.rank()));
            if (x.dims()[axis] != 1) {
              ctx.Fail("cannot squeeze axis " + std::to_string(a) + " of size " +
                       std::to_string(x.dims()[axis]) + " (input shape " + ShapeToString(x.dims()) + ")");
            }
            drop[axis] = true;
          }
          std::vector<int64_t> dims;
          for (size_t i = 0; i < drop.size(); ++i) {
            if (!drop[i]) dims.push_back(x.dims()[i]);
          }
          OutputView(ctx, x, std::move(dims));
        });
      },
      KernelVariant::kReference, false);
}

void AddUnsqueeze(KernelRegistry& r) {
  AddKernel(
      r, "Unsqueeze", 1, 1000,
      [](const KernelInfo&) {
        return MakeKernel([](KernelContext& ctx) {
          const Tensor& x = ctx.required_input(0);
          const auto given = InputOrAttrInts(ctx, 1, "axes");
          if (!given) ctx.Fail("axes are required");
          const std::vector<int64_t>& axes = *given;
          const int64_t out_rank = x.rank() + static_cast<int64_t>(axes.size());
          std::vector<bool> inserted(static_cast<size_t>(out_rank), false);
          for (int64_t a : axes) {
            const size_t axis = static_cast<size_t>(NormalizeAxis(ctx, a, out_rank));
            if (inserted[axis]) ctx.Fail("axis " + std::to_string(a) + " is repeated");
            inserted[axis] = true;
          }
          std::vector<int64_t> dims;
          size_t next = 0;
          for (size_t i = 0; i < inserted.size(); ++i) dims.push_back(inserted[i] ? 1 : x.dims()[next++]);
          OutputView(ctx, x, std::move(dims));
        });
      },
      KernelVariant::kReference, false);
}

// ---------------------------------------------------------------------------------------------------------
// Shape, Size, ConstantOfShape

void AddShapeOps(KernelRegistry& r) {
  AddKernel(
      r, "Shape", 1, 1000,
      [](const KernelInfo& info) {
        const int64_t start_attr = info.node->AttrInt("start", 0);
        const int64_t end_attr = info.node->AttrInt("end", std::numeric_limits<int64_t>::max());
        return MakeKernel([start_attr, end_attr](KernelContext& ctx) {
          const Tensor& x = ctx.required_input(0);
          const int64_t rank = x.rank();
          auto clamp = [rank](int64_t v) { return std::clamp<int64_t>(v < 0 ? v + rank : v, 0, rank); };
          const int64_t start = clamp(start_attr), end = std::max(start, clamp(end_attr));
          Tensor& out = ctx.Output(0, DType::kInt64, {end - start});
          std::copy(x.dims().begin() + start, x.dims().begin() + end, out.mutable_data<int64_t>());
        });
      },
      KernelVariant::kReference, false);
  AddKernel(
      r, "Size", 1, 1000,
      [](const KernelInfo&) {
        return MakeKernel([](KernelContext& ctx) {
          ctx.Output(0, DType::kInt64, {}).mutable_data<int64_t>()[0] = ctx.required_input(0).numel();
        });
      },
      KernelVariant::kReference, false);
  AddKernel(
      r, "ConstantOfShape", 9, 1000,
      [](const KernelInfo& info) {
        Tensor value = Tensor::FromVector<float>({1}, {0.0f});
        if (const Attribute* a = info.node->FindAttr("value")) {
          if (a->tensors.empty() || a->tensors[0].numel() != 1) {
            ThrowInvalid("node " + info.node->Describe() +
                         ": attribute 'value' must be a one-element tensor");
          }
          value = a->tensors[0];
        }
        return MakeKernel([value](KernelContext& ctx) {
          const std::vector<int64_t> dims = ToInt64s(ctx, ctx.required_input(0));
          for (int64_t d : dims) {
            if (d < 0) ctx.Fail("shape " + ShapeToString(dims) + " has a negative dimension");
          }
          Tensor& out = ctx.Output(0, value.dtype(), dims);
          DispatchByElementSize(ctx, value.dtype(), [&](auto tag) {
            using T = decltype(tag);
            std::fill_n(MutableElementsOf<T>(out), out.numel(), ElementsOf<T>(value)[0]);
          });
        });
      },
      KernelVariant::kReference, false);
}

// ---------------------------------------------------------------------------------------------------------
// Transpose

std::vector<int64_t> TransposePerm(const KernelContext& ctx, const std::vector<int64_t>& attr, size_t rank) {
  std::vector<int64_t> perm = attr;
  if (perm.empty()) {
    for (size_t i = rank; i-- > 0;) perm.push_back(static_cast<int64_t>(i));
  }
  std::vector<bool> seen(rank, false);
  bool ok = perm.size() == rank;
  for (size_t i = 0; ok && i < perm.size(); ++i) {
    ok = perm[i] >= 0 && perm[i] < static_cast<int64_t>(rank) && !seen[static_cast<size_t>(perm[i])];
    if (ok) seen[static_cast<size_t>(perm[i])] = true;
  }
  if (!ok) {
    ctx.Fail("perm " + ShapeToString(perm) + " is not a permutation of the " + std::to_string(rank) +
             " axes");
  }
  return perm;
}

// Output dims and, per output dim, the input stride (elements).
void PermutedLayout(const Tensor& x, const std::vector<int64_t>& perm, std::vector<int64_t>* dims,
                    std::vector<int64_t>* strides) {
  const std::vector<int64_t> in_strides = Strides(x.dims());
  dims->clear();
  strides->clear();
  for (int64_t p : perm) {
    dims->push_back(x.dims()[static_cast<size_t>(p)]);
    strides->push_back(in_strides[static_cast<size_t>(p)]);
  }
}

void TransposeReference(KernelContext& ctx, const std::vector<int64_t>& perm_attr) {
  const Tensor& x = ctx.required_input(0);
  std::vector<int64_t> dims, strides;
  PermutedLayout(x, TransposePerm(ctx, perm_attr, x.dims().size()), &dims, &strides);
  Tensor& out = ctx.Output(0, x.dtype(), dims);
  DispatchByElementSize(ctx, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* src = ElementsOf<T>(x);
    T* dst = MutableElementsOf<T>(out);
    const std::vector<int64_t> in_strides[1] = {strides};
    ForEachBroadcast(dims, in_strides, 0, out.numel(),
                     [&](int64_t i, const int64_t* off) { dst[i] = src[off[0]]; });
  });
}

// to[i * to_stride + j] = from[i + j * from_stride] for i < rows, j < cols. Full 8 x 8 blocks use fixed trip
// counts so that the compiler unrolls them; a block's 8 source lines and 8 destination lines stay in L1.
template <typename T>
void TransposeBlock(const T* from, int64_t from_stride, T* to, int64_t to_stride, int64_t rows,
                    int64_t cols) {
  constexpr int64_t kBlock = 8;
  int64_t j0 = 0;
  for (; j0 + kBlock <= cols; j0 += kBlock) {
    int64_t i = 0;
    for (; i + kBlock <= rows; i += kBlock) {
      for (int64_t bj = 0; bj < kBlock; ++bj) {
        const T* f = from + (j0 + bj) * from_stride + i;
        T* t = to + i * to_stride + j0 + bj;
        for (int64_t bi = 0; bi < kBlock; ++bi) t[bi * to_stride] = f[bi];
      }
    }
    for (; i < rows; ++i) {
      for (int64_t bj = 0; bj < kBlock; ++bj) to[i * to_stride + j0 + bj] = from[(j0 + bj) * from_stride + i];
    }
  }
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = j0; j < cols; ++j) to[i * to_stride + j] = from[j * from_stride + i];
  }
}

// Rows of the input's contiguous dim handled per parallel work unit of the 2-D transpose.
constexpr int64_t kTransposeStrip = 32;

void TransposeFast(KernelContext& ctx, const std::vector<int64_t>& perm_attr) {
  const Tensor& x = ctx.required_input(0);
  std::vector<int64_t> out_dims, strides, d, s;
  PermutedLayout(x, TransposePerm(ctx, perm_attr, x.dims().size()), &out_dims, &strides);
  MergeDims(out_dims, strides, &d, &s);
  if (d.size() <= 1 || x.numel() == 0) {  // the permutation keeps the memory order
    OutputView(ctx, x, out_dims);
    return;
  }
  Tensor& out = ctx.OutputForWrite(0, x.dtype(), out_dims);
  DispatchByElementSize(ctx, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* src = ElementsOf<T>(x);
    T* dst = MutableElementsOf<T>(out);
    if (s.back() == 1) {  // innermost output dim is contiguous in the input: copy whole rows
      StridedCopy(ctx.pool(), src, 0, d, s, dst);
      return;
    }
    // 2-D transposes between the input's contiguous dim (b) and the output's innermost dim (a), for every
    // index of the other dims; work units are strips of kTransposeStrip along b.
    const size_t a = d.size() - 1;
    const size_t b = static_cast<size_t>(std::find(s.begin(), s.end(), 1) - s.begin());
    const std::vector<int64_t> out_strides = Strides(d);
    std::vector<int64_t> od, ois, oos;  // other dims: sizes, input strides, output strides
    for (size_t i = 0; i < d.size(); ++i) {
      if (i == a || i == b) continue;
      od.push_back(d[i]);
      ois.push_back(s[i]);
      oos.push_back(out_strides[i]);
    }
    const int64_t na = d[a], nb = d[b], in_stride_a = s[a], out_stride_b = out_strides[b];
    const int64_t strips = (nb + kTransposeStrip - 1) / kTransposeStrip;
    const int64_t units = Product(od, 0, od.size()) * strips;
    ctx.pool().ParallelFor(units, RowGrain(kTransposeStrip * na), [&](int64_t begin, int64_t end) {
      for (int64_t u = begin; u < end; ++u) {
        int64_t rest = u / strips, in_off = 0, out_off = 0;
        for (size_t k = od.size(); k-- > 0;) {
          const int64_t idx = rest % od[k];
          rest /= od[k];
          in_off += idx * ois[k];
          out_off += idx * oos[k];
        }
        const int64_t i0 = (u % strips) * kTransposeStrip;
        TransposeBlock(src + in_off + i0, in_stride_a, dst + out_off + i0 * out_stride_b, out_stride_b,
                       std::min(kTransposeStrip, nb - i0), na);
      }
    });
  });
}

void AddTranspose(KernelRegistry& r) {
  AddKernel(
      r, "Transpose", 1, 1000,
      [](const KernelInfo& info) {
        const std::vector<int64_t> perm = info.node->AttrInts("perm", {});
        return MakeKernel([perm](KernelContext& ctx) { TransposeReference(ctx, perm); });
      },
      KernelVariant::kReference, false);
  AddKernel(
      r, "Transpose", 1, 1000,
      [](const KernelInfo& info) {
        const std::vector<int64_t> perm = info.node->AttrInts("perm", {});
        return MakeKernel([perm](KernelContext& ctx) { TransposeFast(ctx, perm); });
      },
      KernelVariant::kFast, false);
}

// ---------------------------------------------------------------------------------------------------------
// Concat, Split

void AddConcat(KernelRegistry& r) {
  AddKernel(
      r, "Concat", 1, 1000,
      [](const KernelInfo& info) {
        const Attribute* a = info.node->FindAttr("axis");
        if (a == nullptr && info.opset >= 4) {
          ThrowInvalid("node " + info.node->Describe() + ": attribute 'axis' is required");
        }
        const int64_t axis_attr = a != nullptr ? a->i : 1;
        return MakeKernel([axis_attr](KernelContext& ctx) {
          std::vector<const Tensor*> ins;
          for (size_t i = 0; i < ctx.num_inputs(); ++i) {
            if (ctx.input(i) != nullptr) ins.push_back(ctx.input(i));
          }
          if (ins.empty()) ctx.Fail("needs at least one input");
          const Tensor& first = *ins[0];
          const size_t axis = static_cast<size_t>(NormalizeAxis(ctx, axis_attr, first.rank()));
          std::vector<int64_t> dims = first.dims();
          dims[axis] = 0;
          for (const Tensor* t : ins) {
            bool ok = t->dtype() == first.dtype() && t->rank() == first.rank();
            for (size_t k = 0; ok && k < dims.size(); ++k) ok = k == axis || t->dims()[k] == first.dims()[k];
            if (!ok) {
              ctx.Fail("input " + std::string(DTypeName(t->dtype())) + ShapeToString(t->dims()) +
                       " does not match " + DTypeName(first.dtype()) + ShapeToString(first.dims()) +
                       " outside axis " + std::to_string(axis));
            }
            dims[axis] += t->dims()[axis];
          }
          const int64_t outer = Product(dims, 0, axis), inner = Product(dims, axis + 1, dims.size());
          Tensor& out = ctx.Output(0, first.dtype(), dims);
          const int64_t out_chunk = dims[axis] * inner;
          if (out.numel() == 0) return;
          DispatchByElementSize(ctx, first.dtype(), [&](auto tag) {
            using T = decltype(tag);
            T* dst = MutableElementsOf<T>(out);
            ctx.pool().ParallelFor(outer, RowGrain(out_chunk), [&](int64_t begin, int64_t end) {
              for (int64_t o = begin; o < end; ++o) {
                T* to = dst + o * out_chunk;
                for (const Tensor* t : ins) {
                  const int64_t chunk = t->dims()[axis] * inner;
                  to = std::copy_n(ElementsOf<T>(*t) + o * chunk, chunk, to);
                }
              }
            });
          });
        });
      },
      KernelVariant::kReference, false);
}

void AddSplit(KernelRegistry& r) {
  AddKernel(
      r, "Split", 1, 1000,
      [](const KernelInfo& info) {
        const int64_t axis_attr = info.node->AttrInt("axis", 0);
        const int64_t num_outputs_attr = info.opset >= 18 ? info.node->AttrInt("num_outputs", 0) : 0;
        // The split sizes are an attribute before opset 13 (opset 1 also accepts them as the second input).
        const bool split_input = info.opset >= 13 || info.opset == 1;
        const std::vector<int64_t> split_attr =
            info.opset < 13 ? info.node->AttrInts("split", {}) : std::vector<int64_t>{};
        return MakeKernel([=](KernelContext& ctx) {
          const Tensor& x = ctx.required_input(0);
          const size_t axis = static_cast<size_t>(NormalizeAxis(ctx, axis_attr, x.rank()));
          const int64_t dim = x.dims()[axis];
          const int64_t n = static_cast<int64_t>(ctx.num_outputs());
          std::vector<int64_t> sizes = split_attr;
          if (split_input && ctx.input(1) != nullptr) sizes = ToInt64s(ctx, *ctx.input(1));
          if (!sizes.empty()) {
            int64_t sum = 0;
            for (int64_t v : sizes) {
              if (v < 0) ctx.Fail("split " + ShapeToString(sizes) + " has a negative size");
              sum += v;
            }
            if (static_cast<int64_t>(sizes.size()) != n || sum != dim) {
              ctx.Fail("split " + ShapeToString(sizes) + " does not cut axis " + std::to_string(axis) +
                       " of size " + std::to_string(dim) + " into " + std::to_string(n) + " outputs");
            }
          } else if (num_outputs_attr > 0) {
            // Chunks of ceil(dim / num_outputs), the last one smaller.
            if (num_outputs_attr != n) ctx.Fail("num_outputs does not match the node's outputs");
            const int64_t chunk = (dim + n - 1) / n;
            if (chunk * (n - 1) > dim) {
              ctx.Fail("axis of size " + std::to_string(dim) + " cannot be split into " + std::to_string(n) +
                       " chunks");
            }
            sizes.assign(static_cast<size_t>(n), chunk);
            sizes.back() = dim - chunk * (n - 1);
          } else {
            if (dim % n != 0) {
              ctx.Fail("axis " + std::to_string(axis) + " of size " + std::to_string(dim) +
                       " cannot be split evenly into " + std::to_string(n) + " outputs");
            }
            sizes.assign(static_cast<size_t>(n), dim / n);
          }
          const int64_t outer = Product(x.dims(), 0, axis),
                        inner = Product(x.dims(), axis + 1, x.dims().size());
          DispatchByElementSize(ctx, x.dtype(), [&](auto tag) {
            using T = decltype(tag);
            const T* src = ElementsOf<T>(x);
            int64_t offset = 0;
            for (size_t k = 0; k < sizes.size(); ++k) {
              std::vector<int64_t> dims = x.dims();
              dims[axis] = sizes[k];
              Tensor& out = ctx.Output(k, x.dtype(), dims);
              const int64_t chunk = sizes[k] * inner;
              if (chunk > 0) {
                T* dst = MutableElementsOf<T>(out);
                ctx.pool().ParallelFor(outer, RowGrain(chunk), [&](int64_t begin, int64_t end) {
                  for (int64_t o = begin; o < end; ++o) {
                    std::copy_n(src + o * dim * inner + offset, chunk, dst + o * chunk);
                  }
                });
              }
              offset += chunk;
            }
          });
        });
      },
      KernelVariant::kReference, false);
}

// ---------------------------------------------------------------------------------------------------------
// Slice

void RunSlice(KernelContext& ctx, const std::vector<int64_t>& starts, const std::vector<int64_t>& ends,
              std::vector<int64_t> axes, std::vector<int64_t> steps) {
  const Tensor& x = ctx.required_input(0);
  const size_t n = starts.size();
  if (axes.empty()) {
    for (size_t i = 0; i < n; ++i) axes.push_back(static_cast<int64_t>(i));
  }
  if (steps.empty()) steps.assign(n, 1);
  if (ends.size() != n || axes.size() != n || steps.size() != n) {
    ctx.Fail("starts, ends, axes and steps have different lengths");
  }
  std::vector<int64_t> dims = x.dims();
  std::vector<int64_t> strides = Strides(x.dims());
  std::vector<bool> seen(dims.size(), false);
  int64_t base = 0;
  bool whole = true;  // the slice keeps every element in order
  for (size_t i = 0; i < n; ++i) {
    const size_t axis = static_cast<size_t>(NormalizeAxis(ctx, axes[i], x.rank()));
    if (seen[axis]) ctx.Fail("axis " + std::to_string(axes[i]) + " is repeated");
    seen[axis] = true;
    const int64_t step = steps[i], dim = dims[axis];
    if (step == 0) ctx.Fail("step must not be 0");
    int64_t start = starts[i] < 0 ? starts[i] + dim : starts[i];
    int64_t end = ends[i] < 0 ? ends[i] + dim : ends[i];
    int64_t count = 0;
    if (dim == 0) {
      start = 0;
    } else if (step > 0) {
      start = std::clamp<int64_t>(start, 0, dim);
      end = std::clamp<int64_t>(end, 0, dim);
      if (end > start) count = 1 + (end - start - 1) / step;
    } else {
      start = std::clamp<int64_t>(start, 0, dim - 1);
      end = std::clamp<int64_t>(end, -1, dim - 1);
      // |step| as unsigned: -step overflows for the lowest int64.
      const uint64_t mag = static_cast<uint64_t>(-(step + 1)) + 1;
      if (start > end) count = 1 + static_cast<int64_t>(static_cast<uint64_t>(start - end - 1) / mag);
    }
    whole = whole && count == dim && (count == 0 || start == 0) && (count <= 1 || step == 1);
    dims[axis] = count;
    if (count > 0) base += start * strides[axis];
    strides[axis] = count > 1 ? strides[axis] * step : 0;
  }
  if (whole) {
    ctx.SetOutput(0, x);
    return;
  }
  Tensor& out = ctx.Output(0, x.dtype(), dims);
  DispatchByElementSize(ctx, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    StridedCopy(ctx.pool(), ElementsOf<T>(x), base, dims, strides, MutableElementsOf<T>(out));
  });
}

void AddSlice(KernelRegistry& r) {
  AddKernel(
      r, "Slice", 1, 9,
      [](const KernelInfo& info) {
        const std::vector<int64_t> starts = info.node->AttrInts("starts", {});
        const std::vector<int64_t> ends = info.node->AttrInts("ends", {});
        const std::vector<int64_t> axes = info.node->AttrInts("axes", {});
        return MakeKernel([=](KernelContext& ctx) { RunSlice(ctx, starts, ends, axes, {}); });
      },
      KernelVariant::kReference, false);
  AddKernel(
      r, "Slice", 10, 1000,
      [](const KernelInfo&) {
        return MakeKernel([](KernelContext& ctx) {
          auto ints = [&](size_t i) {
            return ctx.input(i) ? ToInt64s(ctx, *ctx.input(i)) : std::vector<int64_t>{};
          };
          RunSlice(ctx, ToInt64s(ctx, ctx.required_input(1)), ToInt64s(ctx, ctx.required_input(2)), ints(3),
                   ints(4));
        });
      },
      KernelVariant::kReference, false);
}

// ---------------------------------------------------------------------------------------------------------
// Gather

void AddGather(KernelRegistry& r) {
  AddKernel(
      r, "Gather", 1, 1000,
      [](const KernelInfo& info) {
        const int64_t axis_attr = info.node->AttrInt("axis", 0);
        return MakeKernel([axis_attr](KernelContext& ctx) {
          const Tensor& x = ctx.required_input(0);
          const Tensor& indices = ctx.required_input(1);
          if (x.rank() == 0) ctx.Fail("data must have rank >= 1");
          const size_t axis = static_cast<size_t>(NormalizeAxis(ctx, axis_attr, x.rank()));
          const int64_t dim = x.dims()[axis];
          std::vector<int64_t> idx = ToInt64s(ctx, indices);
          for (int64_t& i : idx) {
            if (i < -dim || i >= dim) {
              ctx.Fail("index " + std::to_string(i) + " is out of range for axis " + std::to_string(axis) +
                       " of size " + std::to_string(dim));
            }
            if (i < 0) i += dim;
          }
          std::vector<int64_t> dims(x.dims().begin(), x.dims().begin() + static_cast<std::ptrdiff_t>(axis));
          dims.insert(dims.end(), indices.dims().begin(), indices.dims().end());
          dims.insert(dims.end(), x.dims().begin() + static_cast<std::ptrdiff_t>(axis) + 1, x.dims().end());
          Tensor& out = ctx.Output(0, x.dtype(), dims);
          const int64_t inner = Product(x.dims(), axis + 1, x.dims().size());
          const int64_t count = static_cast<int64_t>(idx.size());
          const int64_t rows = Product(x.dims(), 0, axis) * count;
          if (inner == 0 || rows == 0) return;
          DispatchByElementSize(ctx, x.dtype(), [&](auto tag) {
            using T = decltype(tag);
            const T* src = ElementsOf<T>(x);
            T* dst = MutableElementsOf<T>(out);
            ctx.pool().ParallelFor(rows, RowGrain(inner), [&](int64_t begin, int64_t end) {
              for (int64_t row = begin; row < end; ++row) {
                const int64_t o = row / count, j = row % count;
                std::copy_n(src + (o * dim + idx[static_cast<size_t>(j)]) * inner, inner, dst + row * inner);
              }
            });
          });
        });
      },
      KernelVariant::kReference, false);
}

// ---------------------------------------------------------------------------------------------------------
// Expand, Tile

void AddExpand(KernelRegistry& r) {
  AddKernel(
      r, "Expand", 8, 1000,
      [](const KernelInfo&) {
        return MakeKernel([](KernelContext& ctx) {
          const Tensor& x = ctx.required_input(0);
          const std::vector<int64_t> shape = ToInt64s(ctx, ctx.required_input(1));
          for (int64_t d : shape) {
            if (d < 0) ctx.Fail("shape " + ShapeToString(shape) + " has a negative dimension");
          }
          const std::vector<int64_t> dims = BroadcastShapes(ctx, x.dims(), shape);
          if (dims == x.dims()) {
            ctx.SetOutput(0, x);
            return;
          }
          Tensor& out = ctx.Output(0, x.dtype(), dims);
          DispatchByElementSize(ctx, x.dtype(), [&](auto tag) {
            using T = decltype(tag);
            StridedCopy(ctx.pool(), ElementsOf<T>(x), 0, dims, BroadcastStrides(x.dims(), dims),
                        MutableElementsOf<T>(out));
          });
        });
      },
      KernelVariant::kReference, false);
}

void RunTile(KernelContext& ctx, const Tensor& x, const std::vector<int64_t>& repeats) {
  if (static_cast<int64_t>(repeats.size()) != x.rank()) {
    ctx.Fail("repeats " + ShapeToString(repeats) + " do not match the input rank " +
             std::to_string(x.rank()));
  }
  // Output index (r, i) of each dim, r the repetition, reads input index i: interleave stride-0 dims.
  const std::vector<int64_t> in_strides = Strides(x.dims());
  std::vector<int64_t> dims, split_dims, split_strides;
  for (size_t i = 0; i < repeats.size(); ++i) {
    if (repeats[i] < 0) ctx.Fail("repeats " + ShapeToString(repeats) + " has a negative value");
    if (repeats[i] != 0 && x.dims()[i] > std::numeric_limits<int64_t>::max() / repeats[i]) {
      ctx.Fail("repeats " + ShapeToString(repeats) + " make the output too large");
    }
    dims.push_back(x.dims()[i] * repeats[i]);
    split_dims.insert(split_dims.end(), {repeats[i], x.dims()[i]});
    split_strides.insert(split_strides.end(), {0, in_strides[i]});
  }
  Tensor& out = ctx.Output(0, x.dtype(), dims);
  DispatchByElementSize(ctx, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    StridedCopy(ctx.pool(), ElementsOf<T>(x), 0, split_dims, split_strides, MutableElementsOf<T>(out));
  });
}

void AddTile(KernelRegistry& r) {
  // Opset 1-5: inputs (input, tiles, axis) repeat one axis.
  AddKernel(
      r, "Tile", 1, 5,
      [](const KernelInfo&) {
        return MakeKernel([](KernelContext& ctx) {
          const Tensor& x = ctx.required_input(0);
          const std::vector<int64_t> tiles = ToInt64s(ctx, ctx.required_input(1));
          const std::vector<int64_t> axis = ToInt64s(ctx, ctx.required_input(2));
          if (tiles.size() != 1 || axis.size() != 1) ctx.Fail("tiles and axis must hold one value each");
          std::vector<int64_t> repeats(x.dims().size(), 1);
          repeats[static_cast<size_t>(NormalizeAxis(ctx, axis[0], x.rank()))] = tiles[0];
          RunTile(ctx, x, repeats);
        });
      },
      KernelVariant::kReference, false);
  AddKernel(
      r, "Tile", 6, 1000,
      [](const KernelInfo&) {
        return MakeKernel([](KernelContext& ctx) {
          RunTile(ctx, ctx.required_input(0), ToInt64s(ctx, ctx.required_input(1)));
        });
      },
      KernelVariant::kReference, false);
}

// ---------------------------------------------------------------------------------------------------------
// Range

template <typename T>
void RunRange(KernelContext& ctx, T start, T limit, T delta) {
  if (delta == T{0}) ctx.Fail("delta must not be 0");
  int64_t n = 0;
  if constexpr (std::is_floating_point_v<T>) {
    const double count =
        std::ceil((static_cast<double>(limit) - static_cast<double>(start)) / static_cast<double>(delta));
    if (!(count < 9.0e18)) ctx.Fail("the range has too many elements");
    n = std::max<int64_t>(0, static_cast<int64_t>(count));
  } else {
    int64_t diff = 0;
    if (__builtin_sub_overflow(static_cast<int64_t>(limit), static_cast<int64_t>(start), &diff)) {
      ctx.Fail("the range has too many elements");
    }
    const int64_t step = static_cast<int64_t>(delta);
    if ((diff > 0 && step > 0) || (diff < 0 && step < 0)) n = diff / step + (diff % step != 0 ? 1 : 0);
  }
  T* out = ctx.Output(0, DTypeOf<T>::value, {n}).template mutable_data<T>();
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<T>(start + static_cast<T>(i) * delta);
}

void AddRange(KernelRegistry& r) {
  AddKernel(
      r, "Range", 11, 1000,
      [](const KernelInfo&) {
        return MakeKernel([](KernelContext& ctx) {
          const Tensor& start = ctx.required_input(0);
          const Tensor& limit = ctx.required_input(1);
          const Tensor& delta = ctx.required_input(2);
          if (start.numel() != 1 || limit.numel() != 1 || delta.numel() != 1) {
            ctx.Fail("start, limit and delta must be scalars");
          }
          if (limit.dtype() != start.dtype() || delta.dtype() != start.dtype()) {
            ctx.Fail("start, limit and delta must have the same element type");
          }
          DispatchNumeric(ctx, start.dtype(), [&](auto tag) {
            using T = decltype(tag);
            if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double> ||
                          std::is_same_v<T, int16_t> || std::is_same_v<T, int32_t> ||
                          std::is_same_v<T, int64_t>) {
              RunRange<T>(ctx, start.data<T>()[0], limit.data<T>()[0], delta.data<T>()[0]);
            } else {
              ctx.Fail(std::string("element type ") + DTypeName(start.dtype()) + " is not supported here");
            }
          });
        });
      },
      KernelVariant::kReference, false);
}

}  // namespace

void RegisterShapeKernels(KernelRegistry& r) {
  AddIdentity(r);
  AddDropout(r);
  AddReshape(r);
  AddFlatten(r);
  AddSqueeze(r);
  AddUnsqueeze(r);
  AddShapeOps(r);
  AddTranspose(r);
  AddConcat(r);
  AddSplit(r);
  AddSlice(r);
  AddGather(r);
  AddExpand(r);
  AddTile(r);
  AddRange(r);
}

}  // namespace compress::kernels
