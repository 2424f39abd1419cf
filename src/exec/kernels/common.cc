#include "common.h"

#include "compress/util/half.h"

namespace compress::kernels {

std::vector<int64_t> BroadcastShapes(const KernelContext& ctx, const std::vector<int64_t>& a,
                                     const std::vector<int64_t>& b) {
  const size_t rank = std::max(a.size(), b.size());
  std::vector<int64_t> out(rank);
  for (size_t i = 0; i < rank; ++i) {
    const int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    const int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    if (da == db || db == 1) {
      out[i] = da;
    } else if (da == 1) {
      out[i] = db;
    } else {
      ctx.Fail("shapes " + ShapeToString(a) + " and " + ShapeToString(b) + " cannot be broadcast");
    }
  }
  return out;
}

std::vector<int64_t> Strides(const std::vector<int64_t>& dims) {
  std::vector<int64_t> s(dims.size());
  int64_t acc = 1;
  for (size_t i = dims.size(); i-- > 0;) {
    s[i] = acc;
    acc *= dims[i];
  }
  return s;
}

std::vector<int64_t> BroadcastStrides(const std::vector<int64_t>& in, const std::vector<int64_t>& out) {
  std::vector<int64_t> s(out.size(), 0);
  const std::vector<int64_t> in_strides = Strides(in);
  const size_t offset = out.size() - in.size();
  for (size_t i = 0; i < in.size(); ++i) {
    s[offset + i] = in[i] == 1 ? 0 : in_strides[i];
  }
  return s;
}

int64_t NormalizeAxis(const KernelContext& ctx, int64_t axis, int64_t rank) {
  if (axis < -rank || axis >= std::max<int64_t>(rank, 1)) {
    ctx.Fail("axis " + std::to_string(axis) + " is out of range for rank " + std::to_string(rank));
  }
  return axis < 0 ? axis + rank : axis;
}

int64_t NormalizeAxis(const KernelInfo& info, int64_t axis, int64_t rank) {
  if (axis < -rank || axis >= std::max<int64_t>(rank, 1)) {
    ThrowInvalid("node " + info.node->Describe() + ": axis " + std::to_string(axis) +
                 " is out of range for rank " + std::to_string(rank));
  }
  return axis < 0 ? axis + rank : axis;
}

std::vector<int64_t> ToInt64s(const KernelContext& ctx, const Tensor& t) {
  std::vector<int64_t> v(static_cast<size_t>(t.numel()));
  if (t.dtype() == DType::kInt64) {
    const int64_t* p = t.data<int64_t>();
    v.assign(p, p + t.numel());
  } else if (t.dtype() == DType::kInt32) {
    const int32_t* p = t.data<int32_t>();
    for (int64_t i = 0; i < t.numel(); ++i) v[static_cast<size_t>(i)] = p[i];
  } else {
    ctx.Fail(std::string("expected an int64 or int32 tensor, got ") + DTypeName(t.dtype()));
  }
  return v;
}

std::vector<float> ToFloats(const KernelContext& ctx, const Tensor& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  switch (t.dtype()) {
    case DType::kFloat: {
      const float* p = t.data<float>();
      v.assign(p, p + t.numel());
      break;
    }
    case DType::kDouble: {
      const double* p = t.data<double>();
      for (int64_t i = 0; i < t.numel(); ++i) v[static_cast<size_t>(i)] = static_cast<float>(p[i]);
      break;
    }
    case DType::kFloat16: {
      const uint16_t* p = static_cast<const uint16_t*>(t.raw());
      for (int64_t i = 0; i < t.numel(); ++i) v[static_cast<size_t>(i)] = HalfToFloat(p[i]);
      break;
    }
    default:
      ctx.Fail(std::string("expected a floating-point tensor, got ") + DTypeName(t.dtype()));
  }
  return v;
}

void AddKernel(KernelRegistry& r, const std::string& op_type, int64_t since, int64_t until, KernelFactory factory,
               KernelVariant variant, bool float16_via_float32) {
  KernelEntry e;
  e.op_type = op_type;
  e.since_version = since;
  e.until_version = until;
  e.variant = variant;
  e.factory = std::move(factory);
  e.float16_via_float32 = float16_via_float32;
  r.Add(std::move(e));
}

}  // namespace compress::kernels
