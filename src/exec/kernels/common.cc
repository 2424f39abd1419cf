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

std::vector<float> ToFloats(const KernelInfo& info, const Tensor& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  const void* raw = t.raw();
  for (int64_t i = 0; i < t.numel(); ++i) {
    switch (t.dtype()) {
      case DType::kFloat:
        v[static_cast<size_t>(i)] = static_cast<const float*>(raw)[i];
        break;
      case DType::kDouble:
        v[static_cast<size_t>(i)] = static_cast<float>(static_cast<const double*>(raw)[i]);
        break;
      case DType::kFloat16:
        v[static_cast<size_t>(i)] = HalfToFloat(static_cast<const uint16_t*>(raw)[i]);
        break;
      case DType::kBFloat16:
        v[static_cast<size_t>(i)] = BFloat16ToFloat(static_cast<const uint16_t*>(raw)[i]);
        break;
      default:
        ThrowInvalid("node " + info.node->Describe() + ": expected a floating-point tensor, got " +
                     DTypeName(t.dtype()));
    }
  }
  return v;
}

WindowAttrs ParseWindowAttrs(const KernelInfo& info) {
  const Node& n = *info.node;
  WindowAttrs a;
  a.auto_pad = n.AttrString("auto_pad", "NOTSET");
  a.kernel_shape = n.AttrInts("kernel_shape", {});
  a.strides = n.AttrInts("strides", {});
  a.dilations = n.AttrInts("dilations", {});
  a.pads = n.AttrInts("pads", {});
  a.ceil_mode = n.AttrInt("ceil_mode", 0) != 0;
  auto fail = [&](const std::string& what) { ThrowInvalid("node " + n.Describe() + ": " + what); };
  if (a.auto_pad != "NOTSET" && a.auto_pad != "SAME_UPPER" && a.auto_pad != "SAME_LOWER" &&
      a.auto_pad != "VALID") {
    fail("unknown auto_pad '" + a.auto_pad + "'");
  }
  for (int64_t v : a.kernel_shape) {
    if (v <= 0) fail("kernel_shape " + ShapeToString(a.kernel_shape) + " must be positive");
  }
  for (int64_t v : a.strides) {
    if (v <= 0) fail("strides " + ShapeToString(a.strides) + " must be positive");
  }
  for (int64_t v : a.dilations) {
    if (v <= 0) fail("dilations " + ShapeToString(a.dilations) + " must be positive");
  }
  for (int64_t v : a.pads) {
    if (v < 0) fail("pads " + ShapeToString(a.pads) + " must not be negative");
  }
  return a;
}

int64_t WindowGeometry::in_size() const { return ShapeElementCount(in); }
int64_t WindowGeometry::out_size() const { return ShapeElementCount(out); }
int64_t WindowGeometry::kernel_size() const { return ShapeElementCount(kernel); }

void ValidOutputRange(int64_t out, int64_t in, int64_t stride, int64_t pad, int64_t offset, int64_t* lo,
                      int64_t* hi) {
  const int64_t first = pad - offset;  // smallest valid o * stride
  *lo = first <= 0 ? 0 : (first + stride - 1) / stride;
  const int64_t last = in - 1 + pad - offset;  // largest valid o * stride
  *hi = last < 0 ? 0 : std::min(out, last / stride + 1);
  *lo = std::min(*lo, *hi);
}

std::vector<int64_t> Coordinates(const std::vector<int64_t>& dims) {
  const int64_t count = ShapeElementCount(dims);
  const size_t r = dims.size();
  std::vector<int64_t> c(static_cast<size_t>(count) * r);
  for (int64_t i = 0; i < count; ++i) {
    int64_t rem = i;
    for (size_t d = r; d-- > 0;) {
      c[static_cast<size_t>(i) * r + d] = rem % dims[d];
      rem /= dims[d];
    }
  }
  return c;
}

Window2D ToWindow2D(const WindowGeometry& g) {
  const bool two_d = g.rank() == 2;
  const size_t l = g.rank() - 1;
  Window2D q{};
  q.oh = two_d ? g.out[0] : 1;
  q.ih = two_d ? g.in[0] : 1;
  q.kh = two_d ? g.kernel[0] : 1;
  q.sh = two_d ? g.strides[0] : 1;
  q.dh = two_d ? g.dilations[0] : 1;
  q.ph = two_d ? g.pads_begin[0] : 0;
  q.ow = g.out[l];
  q.iw = g.in[l];
  q.kw = g.kernel[l];
  q.sw = g.strides[l];
  q.dw = g.dilations[l];
  q.pw = g.pads_begin[l];
  return q;
}

WindowGeometry ResolveWindow(const KernelContext& ctx, const WindowAttrs& attrs,
                             const std::vector<int64_t>& in, const std::vector<int64_t>& kernel) {
  const size_t r = in.size();
  auto check = [&](const std::vector<int64_t>& v, size_t expected, const char* name) {
    if (!v.empty() && v.size() != expected) {
      ctx.Fail(std::string(name) + " " + ShapeToString(v) + " has " + std::to_string(v.size()) +
               " values, expected " + std::to_string(expected) + " for " + std::to_string(r) +
               " spatial dims");
    }
  };
  check(kernel, r, "kernel_shape");
  check(attrs.strides, r, "strides");
  check(attrs.dilations, r, "dilations");
  check(attrs.pads, 2 * r, "pads");
  WindowGeometry g;
  g.in = in;
  g.kernel = kernel;
  g.strides = attrs.strides.empty() ? std::vector<int64_t>(r, 1) : attrs.strides;
  g.dilations = attrs.dilations.empty() ? std::vector<int64_t>(r, 1) : attrs.dilations;
  g.pads_begin.assign(r, 0);
  g.pads_end.assign(r, 0);
  g.out.assign(r, 0);
  for (size_t d = 0; d < r; ++d) {
    const int64_t s = g.strides[d];
    const int64_t k_eff = (kernel[d] - 1) * g.dilations[d] + 1;
    if (attrs.auto_pad == "SAME_UPPER" || attrs.auto_pad == "SAME_LOWER") {
      g.out[d] = (in[d] + s - 1) / s;
      const int64_t total = std::max<int64_t>(0, (g.out[d] - 1) * s + k_eff - in[d]);
      const int64_t small = total / 2;
      g.pads_begin[d] = attrs.auto_pad == "SAME_UPPER" ? small : total - small;
      g.pads_end[d] = total - g.pads_begin[d];
    } else {
      if (attrs.auto_pad == "NOTSET" && !attrs.pads.empty()) {
        g.pads_begin[d] = attrs.pads[d];
        g.pads_end[d] = attrs.pads[d + r];
      }
      const int64_t span = in[d] + g.pads_begin[d] + g.pads_end[d] - k_eff;
      if (span < 0) {
        ctx.Fail("the window " + ShapeToString(kernel) + " (dilations " + ShapeToString(g.dilations) +
                 ") is larger than the padded input " + ShapeToString(in));
      }
      if (attrs.ceil_mode && attrs.auto_pad == "NOTSET") {
        g.out[d] = (span + s - 1) / s + 1;
        if ((g.out[d] - 1) * s >= in[d] + g.pads_begin[d]) --g.out[d];
      } else {
        g.out[d] = span / s + 1;
      }
    }
    if (g.out[d] <= 0) ctx.Fail("the output of input " + ShapeToString(in) + " would be empty");
  }
  return g;
}

}  // namespace compress::kernels
