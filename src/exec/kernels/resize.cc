// Resize, Upsample and Pad.
//
// Resize follows the ONNX reference implementation where the specification leaves room: per axis, each output
// index reads a fixed number of input taps (edge-clamped) with weights from the interpolation kernel, and the
// axes are applied one after the other. "length_resized" in align_corners and tf_crop_and_resize is
// scale * input length, not the rounded output length (the conformance data is made that way). Elsewhere the
// specification wins: pytorch_half_pixel samples 0 for an output of length 1. Output lengths from scales are
// floor(scale * input length), also for tf_crop_and_resize (as ONNX Runtime, which ignores the roi there).
// Upsample and Resize-10 round nearest sources down when enlarging and up when shrinking, as ONNX Runtime.

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <limits>
#include <utility>

#include "common.h"
#include "compress/util/half.h"
#include "kernels.h"

namespace compress::kernels {
namespace {

// `v` as T; integer types get it rounded to nearest and saturated.
template <typename T>
T FromDouble(double v) {
  if constexpr (std::is_floating_point_v<T>) {
    return static_cast<T>(v);
  } else {
    const double r = std::nearbyint(v);
    if (!(r > static_cast<double>(std::numeric_limits<T>::lowest()))) return std::numeric_limits<T>::lowest();
    if (!(r < static_cast<double>(std::numeric_limits<T>::max()))) return std::numeric_limits<T>::max();
    return static_cast<T>(r);
  }
}

// A one-element tensor of `dtype` holding `v` (Pad's value attribute, Resize's extrapolation value).
Tensor ScalarOf(const KernelContext& ctx, DType dtype, double v) {
  Tensor t(dtype, {});
  switch (dtype) {
    case DType::kString:
      break;
    case DType::kBool:
      *static_cast<uint8_t*>(t.mutable_raw()) = v != 0.0 ? 1 : 0;
      break;
    case DType::kFloat16:
      *static_cast<uint16_t*>(t.mutable_raw()) = FloatToHalf(static_cast<float>(v));
      break;
    case DType::kBFloat16:
      *static_cast<uint16_t*>(t.mutable_raw()) = FloatToBFloat16(static_cast<float>(v));
      break;
    default:
      DispatchNumeric(ctx, dtype, [&](auto tag) {
        using T = decltype(tag);
        t.mutable_data<T>()[0] = FromDouble<T>(v);
      });
  }
  return t;
}

// The enumerator named by string attribute `attr`; throws naming the node for an unknown name.
template <typename E>
E ParseEnum(const Node& n, const std::string& attr, const std::string& fallback,
            std::initializer_list<std::pair<const char*, E>> names) {
  const std::string value = n.AttrString(attr, fallback);
  for (const auto& [name, e] : names) {
    if (value == name) return e;
  }
  ThrowInvalid("node " + n.Describe() + ": unsupported " + attr + " '" + value + "'");
}

// ---------------------------------------------------------------------------------------------------------
// Resize / Upsample attributes and the per-axis sampling plan

enum class ResizeMode { kNearest, kLinear, kCubic };
enum class CoordMode {
  kHalfPixel,
  kHalfPixelSymmetric,
  kPytorchHalfPixel,
  kAlignCorners,
  kAsymmetric,
  kTfHalfPixelForNn,
  kTfCropAndResize
};
// kSimple is the rounding of Upsample and Resize-10, as ONNX Runtime does it: floor when enlarging, ceil when
// shrinking.
enum class NearestMode { kRoundPreferFloor, kRoundPreferCeil, kFloor, kCeil, kSimple };
enum class AspectPolicy { kStretch, kNotLarger, kNotSmaller };

struct ResizeAttrs {
  ResizeMode mode = ResizeMode::kNearest;
  CoordMode coord = CoordMode::kHalfPixel;
  NearestMode nearest = NearestMode::kRoundPreferFloor;
  double cubic_a = -0.75;
  bool exclude_outside = false;
  double extrapolation = 0.0;
  bool antialias = false;
  AspectPolicy policy = AspectPolicy::kStretch;
  std::vector<int64_t> axes;  // empty: all axes
  // Where scales / sizes / roi come from; -1 when the op version has no such input.
  int scales_input = -1, sizes_input = -1, roi_input = -1;
  std::vector<float> scales_attr;  // Upsample before opset 9
};

ResizeAttrs ParseResizeAttrs(const KernelInfo& info, bool upsample) {
  const Node& n = *info.node;
  auto fail = [&](const std::string& what) { ThrowInvalid("node " + n.Describe() + ": " + what); };
  ResizeAttrs a;
  const std::string mode = n.AttrString("mode", "nearest");
  const bool legacy = upsample || info.opset < 11;  // Upsample and Resize-10
  if (mode == "nearest") {
    a.mode = ResizeMode::kNearest;
  } else if (mode == "linear" || (upsample && mode == "bilinear")) {
    a.mode = ResizeMode::kLinear;
  } else if (mode == "cubic" && !legacy) {
    a.mode = ResizeMode::kCubic;
  } else {
    fail("unsupported mode '" + mode + "'");
  }
  if (legacy) {
    a.coord = CoordMode::kAsymmetric;
    a.nearest = NearestMode::kSimple;
    if (upsample && info.opset < 9) {
      a.scales_attr = n.FindAttr("scales") ? n.FindAttr("scales")->floats : std::vector<float>{};
      if (a.scales_attr.empty()) fail("attribute 'scales' is required");
    } else {
      a.scales_input = 1;
    }
    return a;
  }
  a.roi_input = 1;
  a.scales_input = 2;
  a.sizes_input = 3;
  a.coord = ParseEnum<CoordMode>(n, "coordinate_transformation_mode", "half_pixel",
                                 {{"half_pixel", CoordMode::kHalfPixel},
                                  {"half_pixel_symmetric", CoordMode::kHalfPixelSymmetric},
                                  {"pytorch_half_pixel", CoordMode::kPytorchHalfPixel},
                                  {"align_corners", CoordMode::kAlignCorners},
                                  {"asymmetric", CoordMode::kAsymmetric},
                                  {"tf_half_pixel_for_nn", CoordMode::kTfHalfPixelForNn},
                                  {"tf_crop_and_resize", CoordMode::kTfCropAndResize}});
  a.nearest = ParseEnum<NearestMode>(n, "nearest_mode", "round_prefer_floor",
                                     {{"round_prefer_floor", NearestMode::kRoundPreferFloor},
                                      {"round_prefer_ceil", NearestMode::kRoundPreferCeil},
                                      {"floor", NearestMode::kFloor},
                                      {"ceil", NearestMode::kCeil}});
  a.cubic_a = n.AttrFloat("cubic_coeff_a", -0.75f);
  a.exclude_outside = n.AttrInt("exclude_outside", 0) != 0;
  a.extrapolation = n.AttrFloat("extrapolation_value", 0.0f);
  if (info.opset >= 18) {
    a.antialias = n.AttrInt("antialias", 0) != 0;
    a.axes = n.AttrInts("axes", {});
    a.policy = ParseEnum<AspectPolicy>(n, "keep_aspect_ratio_policy", "stretch",
                                       {{"stretch", AspectPolicy::kStretch},
                                        {"not_larger", AspectPolicy::kNotLarger},
                                        {"not_smaller", AspectPolicy::kNotSmaller}});
  }
  if (a.antialias && a.mode == ResizeMode::kNearest) fail("antialias is not defined for mode 'nearest'");
  return a;
}

// How one axis is sampled: output index i reads input indices index[i * taps + t] (already clamped to the
// input) with weights weight[i * taps + t], or the extrapolation value when outside[i].
struct AxisPlan {
  int64_t in = 0, out = 0, taps = 1;
  std::vector<int64_t> index;
  std::vector<double> weight;
  std::vector<uint8_t> outside;
  bool identity = false;  // output i is input i
};

// Linear ("triangle") and Keys cubic interpolation kernels.
double KernelWeight(ResizeMode mode, double d, double a) {
  d = std::fabs(d);
  if (mode == ResizeMode::kLinear) return std::max(0.0, 1.0 - d);
  if (d <= 1.0) return ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0;
  if (d < 2.0) return ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a;
  return 0.0;
}

// Source coordinate of output index i. `width` is scale * in (fractional), `out` the output length.
double SourceCoordinate(CoordMode coord, double i, double scale, int64_t in, int64_t out, double width,
                        double roi_start, double roi_end) {
  switch (coord) {
    case CoordMode::kHalfPixel:
      return (i + 0.5) / scale - 0.5;
    case CoordMode::kHalfPixelSymmetric: {
      const double adjustment = static_cast<double>(out) / width;
      const double offset = static_cast<double>(in) / 2.0 * (1.0 - adjustment);
      return offset + (i + 0.5) / scale - 0.5;
    }
    case CoordMode::kPytorchHalfPixel:
      return out > 1 ? (i + 0.5) / scale - 0.5 : 0.0;
    case CoordMode::kAlignCorners:
      return width == 1.0 ? 0.0 : i * static_cast<double>(in - 1) / (width - 1.0);
    case CoordMode::kAsymmetric:
      return i / scale;
    case CoordMode::kTfHalfPixelForNn:
      return (i + 0.5) / scale;
    case CoordMode::kTfCropAndResize: {
      const double span = static_cast<double>(in - 1);
      if (width == 1.0) return (roi_end - roi_start) * span / 2.0 + roi_start * span;
      return i * (roi_end - roi_start) * span / (width - 1.0) + roi_start * span;
    }
  }
  return 0.0;
}

AxisPlan PlanAxis(const ResizeAttrs& a, int64_t in, int64_t out, double scale, double roi_start,
                  double roi_end) {
  AxisPlan p;
  p.in = in;
  p.out = out;
  const double width = scale * static_cast<double>(in);
  // Kernel support is widened by 1 / scale when antialiasing a reduction.
  const double aa_scale = a.antialias ? std::min(scale, 1.0) : 1.0;
  const double support = a.mode == ResizeMode::kCubic ? 2.0 : 1.0;
  const int64_t first =
      a.mode == ResizeMode::kNearest ? 0 : static_cast<int64_t>(std::floor(-support / aa_scale)) + 1;
  p.taps = a.mode == ResizeMode::kNearest ? 1 : 2 - 2 * first;
  p.index.resize(static_cast<size_t>(out * p.taps));
  p.weight.resize(static_cast<size_t>(out * p.taps));
  p.outside.assign(static_cast<size_t>(out), 0);
  auto clamp = [in](int64_t v) { return std::clamp<int64_t>(v, 0, in - 1); };
  p.identity = in == out;
  for (int64_t i = 0; i < out; ++i) {
    const double x =
        SourceCoordinate(a.coord, static_cast<double>(i), scale, in, out, width, roi_start, roi_end);
    int64_t* idx = &p.index[static_cast<size_t>(i * p.taps)];
    double* w = &p.weight[static_cast<size_t>(i * p.taps)];
    if (a.coord == CoordMode::kTfCropAndResize && (x < 0.0 || x > static_cast<double>(in - 1))) {
      p.outside[static_cast<size_t>(i)] = 1;
      p.identity = false;
      std::fill_n(idx, p.taps, 0);
      std::fill_n(w, p.taps, 0.0);
      continue;
    }
    const double fl = std::floor(x);
    double ratio = x - fl;
    int64_t base = static_cast<int64_t>(fl);
    if (a.mode == ResizeMode::kNearest) {
      int64_t pick = base;
      if (a.nearest == NearestMode::kSimple) {
        pick = static_cast<int64_t>(scale < 1.0 ? std::ceil(x) : fl);
      } else if (ratio != 0.0) {
        const bool up = a.nearest == NearestMode::kCeil ||
                        (a.nearest == NearestMode::kRoundPreferFloor && ratio > 0.5) ||
                        (a.nearest == NearestMode::kRoundPreferCeil && ratio >= 0.5);
        pick = base + (up ? 1 : 0);
      }
      idx[0] = clamp(pick);
      w[0] = 1.0;
      p.identity = p.identity && idx[0] == i;
      continue;
    }
    // An integral coordinate is taken as ratio 1 past the previous index, as the reference does; with
    // exclude_outside this decides which taps fall outside.
    if (ratio == 0.0) {
      base -= 1;
      ratio = 1.0;
    }
    double sum = 0.0;
    for (int64_t t = 0; t < p.taps; ++t) {
      const int64_t j = first + t;
      idx[t] = base + j;
      w[t] = KernelWeight(a.mode, (static_cast<double>(j) - ratio) * aa_scale, a.cubic_a);
      sum += w[t];
    }
    if (a.antialias && sum != 0.0) {
      for (int64_t t = 0; t < p.taps; ++t) w[t] /= sum;
    }
    if (a.exclude_outside) {
      sum = 0.0;
      for (int64_t t = 0; t < p.taps; ++t) {
        if (idx[t] < 0 || idx[t] >= in) w[t] = 0.0;
        sum += w[t];
      }
      if (sum != 0.0) {
        for (int64_t t = 0; t < p.taps; ++t) w[t] /= sum;
      }
    }
    double self = 0.0;  // weight on input i: the axis is the identity when it is all of the weight
    for (int64_t t = 0; t < p.taps; ++t) {
      idx[t] = clamp(idx[t]);
      if (idx[t] == i) {
        self += w[t];
      } else if (w[t] != 0.0) {
        p.identity = false;
      }
    }
    p.identity = p.identity && self == 1.0;
  }
  return p;
}

std::vector<AxisPlan> PlanResize(const KernelContext& ctx, const ResizeAttrs& a,
                                 const std::vector<int64_t>& dims) {
  const size_t rank = dims.size();
  std::vector<size_t> axes;
  for (int64_t axis : a.axes) {
    axes.push_back(static_cast<size_t>(NormalizeAxis(ctx, axis, static_cast<int64_t>(rank))));
  }
  if (a.axes.empty()) {
    for (size_t d = 0; d < rank; ++d) axes.push_back(d);
  }
  auto present = [&](int i) {
    return i >= 0 && ctx.input(static_cast<size_t>(i)) != nullptr &&
           ctx.input(static_cast<size_t>(i))->numel() > 0;
  };
  std::vector<float> scales = a.scales_attr;
  if (present(a.scales_input)) scales = ToFloats(ctx, *ctx.input(static_cast<size_t>(a.scales_input)));
  std::vector<int64_t> sizes;
  if (present(a.sizes_input)) sizes = ToInt64s(ctx, *ctx.input(static_cast<size_t>(a.sizes_input)));
  if (!scales.empty() && !sizes.empty()) ctx.Fail("only one of scales and sizes may be given");
  if (scales.empty() && sizes.empty()) ctx.Fail("one of scales and sizes is required");
  const size_t given = scales.empty() ? sizes.size() : scales.size();
  if (given != axes.size()) {
    ctx.Fail(std::string(scales.empty() ? "sizes" : "scales") + " have " + std::to_string(given) +
             " values for " + std::to_string(axes.size()) + " axes");
  }

  std::vector<double> scale(rank, 1.0);
  std::vector<int64_t> out(dims);
  if (!sizes.empty()) {
    for (size_t k = 0; k < axes.size(); ++k) {
      if (sizes[k] < 0) ctx.Fail("sizes " + ShapeToString(sizes) + " has a negative value");
      out[axes[k]] = sizes[k];
      scale[axes[k]] = static_cast<double>(sizes[k]) / static_cast<double>(dims[axes[k]]);
    }
    if (a.policy != AspectPolicy::kStretch) {
      double s = scale[axes[0]];
      for (size_t d : axes) {
        s = a.policy == AspectPolicy::kNotLarger ? std::min(s, scale[d]) : std::max(s, scale[d]);
      }
      for (size_t d : axes) {
        scale[d] = s;
        out[d] = static_cast<int64_t>(s * static_cast<double>(dims[d]) + 0.5);
      }
    }
  } else {
    for (size_t k = 0; k < axes.size(); ++k) {
      if (!(scales[k] > 0.0f)) ctx.Fail("scale " + std::to_string(scales[k]) + " is not positive");
      scale[axes[k]] = scales[k];
      const double length = std::floor(static_cast<double>(scales[k]) * static_cast<double>(dims[axes[k]]));
      if (!(length < 9.0e18)) ctx.Fail("scale " + std::to_string(scales[k]) + " makes the output too large");
      out[axes[k]] = static_cast<int64_t>(length);
    }
  }

  std::vector<double> roi_start(rank, 0.0), roi_end(rank, 1.0);
  if (a.coord == CoordMode::kTfCropAndResize) {
    if (!present(a.roi_input)) ctx.Fail("roi is required by tf_crop_and_resize");
    const std::vector<float> roi = ToFloats(ctx, *ctx.input(static_cast<size_t>(a.roi_input)));
    if (roi.size() != 2 * axes.size()) {
      ctx.Fail("roi has " + std::to_string(roi.size()) + " values, expected " +
               std::to_string(2 * axes.size()));
    }
    for (size_t k = 0; k < axes.size(); ++k) {
      roi_start[axes[k]] = roi[k];
      roi_end[axes[k]] = roi[axes.size() + k];
    }
  }

  std::vector<AxisPlan> plans;
  for (size_t d = 0; d < rank; ++d) {
    if (dims[d] == 0 && out[d] > 0) ctx.Fail("cannot resize an empty axis " + std::to_string(d));
    plans.push_back(PlanAxis(a, dims[d], out[d], scale[d], roi_start[d], roi_end[d]));
  }
  return plans;
}

std::vector<int64_t> OutputDims(const std::vector<AxisPlan>& plans) {
  std::vector<int64_t> dims;
  for (const auto& p : plans) dims.push_back(p.out);
  return dims;
}

// Nearest sampling on any dtype: every output element copies one input element (or the extrapolation value).
// The input has rank >= 1 (a scalar has no scales or sizes to resize with).
template <typename T>
void ResizeNearest(ThreadPool& pool, const std::vector<AxisPlan>& plans, const T* in, const T& extrapolation,
                   T* out) {
  const size_t rank = plans.size();
  const std::vector<int64_t> out_dims = OutputDims(plans);
  std::vector<int64_t> in_dims;
  for (const auto& p : plans) in_dims.push_back(p.in);
  const std::vector<int64_t> in_strides = Strides(in_dims);
  const AxisPlan& last = plans.back();
  const int64_t row = last.out;
  auto rows = [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      int64_t rest = r, offset = 0;
      bool outside = false;
      for (size_t d = rank - 1; d-- > 0;) {
        const size_t i = static_cast<size_t>(rest % out_dims[d]);
        rest /= out_dims[d];
        offset += plans[d].index[i] * in_strides[d];
        outside = outside || plans[d].outside[i];
      }
      T* dst = out + r * row;
      for (size_t x = 0; x < static_cast<size_t>(row); ++x) {
        dst[x] = outside || last.outside[x] ? extrapolation : in[offset + last.index[x]];
      }
    }
  };
  pool.ParallelFor(ShapeElementCount(out_dims) / row, std::max<int64_t>(1, kElementwiseGrain / row), rows);
}

// Interpolation, one axis at a time (innermost first) in double precision.
template <typename T>
void ResizeInterpolateReference(const std::vector<AxisPlan>& plans, const T* in, double extrapolation,
                                T* out) {
  std::vector<int64_t> dims;
  for (const auto& p : plans) dims.push_back(p.in);
  std::vector<double> cur(in, in + ShapeElementCount(dims));
  for (size_t d = plans.size(); d-- > 0;) {
    const AxisPlan& p = plans[d];
    if (p.identity) continue;
    const int64_t outer =
        ShapeElementCount(std::vector<int64_t>(dims.begin(), dims.begin() + static_cast<std::ptrdiff_t>(d)));
    const int64_t inner = ShapeElementCount(
        std::vector<int64_t>(dims.begin() + static_cast<std::ptrdiff_t>(d) + 1, dims.end()));
    std::vector<double> next(static_cast<size_t>(outer * p.out * inner));
    for (int64_t o = 0; o < outer; ++o) {
      for (int64_t i = 0; i < p.out; ++i) {
        double* dst = &next[static_cast<size_t>((o * p.out + i) * inner)];
        if (p.outside[static_cast<size_t>(i)]) {
          std::fill_n(dst, inner, extrapolation);
          continue;
        }
        for (int64_t t = 0; t < p.taps; ++t) {
          const double w = p.weight[static_cast<size_t>(i * p.taps + t)];
          const double* src =
              &cur[static_cast<size_t>((o * p.in + p.index[static_cast<size_t>(i * p.taps + t)]) * inner)];
          for (int64_t k = 0; k < inner; ++k) dst[k] += w * src[k];
        }
      }
    }
    dims[d] = p.out;
    cur = std::move(next);
  }
  for (size_t i = 0; i < cur.size(); ++i) out[i] = FromDouble<T>(cur[i]);
}

void ResizeReference(KernelContext& ctx, const ResizeAttrs& a) {
  const Tensor& x = ctx.required_input(0);
  const std::vector<AxisPlan> plans = PlanResize(ctx, a, x.dims());
  Tensor& out = ctx.Output(0, x.dtype(), OutputDims(plans));
  if (out.numel() == 0) return;
  if (a.mode == ResizeMode::kNearest) {
    const Tensor extrapolation = ScalarOf(ctx, x.dtype(), a.extrapolation);
    DispatchByElementSize(ctx, x.dtype(), [&](auto tag) {
      using T = decltype(tag);
      ResizeNearest(ctx.pool(), plans, ElementsOf<T>(x), ElementsOf<T>(extrapolation)[0],
                    MutableElementsOf<T>(out));
    });
    return;
  }
  DispatchNumeric(ctx, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    ResizeInterpolateReference(plans, x.data<T>(), a.extrapolation, out.mutable_data<T>());
  });
}

// float32 interpolation when only the last two axes are resized: per output row, blend the input rows it
// reads (vertical taps), then blend along the row (horizontal taps).
void ResizeInterpolate2D(ThreadPool& pool, const std::vector<AxisPlan>& plans, const float* in,
                         float extrapolation, float* out) {
  const size_t rank = plans.size();
  const AxisPlan unit_axis = [] {
    AxisPlan p;
    p.in = p.out = 1;
    p.index = {0};
    p.weight = {1.0};
    p.outside = {0};
    p.identity = true;
    return p;
  }();
  const AxisPlan& ph = rank >= 2 ? plans[rank - 2] : unit_axis;
  const AxisPlan& pw = plans[rank - 1];
  int64_t planes = 1;
  for (size_t d = 0; d + 2 < rank; ++d) planes *= plans[d].in;
  const std::vector<float> wy(ph.weight.begin(), ph.weight.end()), wx(pw.weight.begin(), pw.weight.end());
  const int64_t in_w = pw.in, out_w = pw.out, in_plane = ph.in * in_w, out_plane = ph.out * out_w;
  const int64_t grain =
      std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, out_w * pw.taps + in_w * ph.taps));
  pool.ParallelFor(planes * ph.out, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> blended(static_cast<size_t>(in_w));
    for (int64_t r = begin; r < end; ++r) {
      const int64_t plane = r / ph.out, y = r % ph.out;
      float* dst = out + plane * out_plane + y * out_w;
      if (ph.outside[static_cast<size_t>(y)]) {
        std::fill_n(dst, out_w, extrapolation);
        continue;
      }
      const float* src = in + plane * in_plane;
      std::fill(blended.begin(), blended.end(), 0.0f);
      for (int64_t t = 0; t < ph.taps; ++t) {
        const float w = wy[static_cast<size_t>(y * ph.taps + t)];
        if (w == 0.0f) continue;
        const float* row = src + ph.index[static_cast<size_t>(y * ph.taps + t)] * in_w;
        for (int64_t k = 0; k < in_w; ++k) blended[static_cast<size_t>(k)] += w * row[k];
      }
      for (int64_t x = 0; x < out_w; ++x) {
        if (pw.outside[static_cast<size_t>(x)]) {
          dst[x] = extrapolation;
          continue;
        }
        float acc = 0.0f;
        for (int64_t t = 0; t < pw.taps; ++t) {
          const size_t k = static_cast<size_t>(x * pw.taps + t);
          acc += wx[k] * blended[static_cast<size_t>(pw.index[k])];
        }
        dst[x] = acc;
      }
    }
  });
}

// Nearest sampling is already a parallel gather in the reference; float32 interpolation that resizes only the
// last two axes gets the row-blending path.
void ResizeFast(KernelContext& ctx, const ResizeAttrs& a) {
  const Tensor& x = ctx.required_input(0);
  if (a.mode == ResizeMode::kNearest || x.dtype() != DType::kFloat) {
    ResizeReference(ctx, a);
    return;
  }
  const std::vector<AxisPlan> plans = PlanResize(ctx, a, x.dims());
  for (size_t d = 0; d + 2 < plans.size(); ++d) {
    if (!plans[d].identity) {
      ResizeReference(ctx, a);
      return;
    }
  }
  Tensor& out = ctx.Output(0, x.dtype(), OutputDims(plans));
  if (out.numel() == 0) return;
  ResizeInterpolate2D(ctx.pool(), plans, x.data<float>(), static_cast<float>(a.extrapolation),
                      out.mutable_data<float>());
}

void AddResize(KernelRegistry& r) {
  AddKernel(r, "Resize", 10, 1000, [](const KernelInfo& info) {
    const ResizeAttrs a = ParseResizeAttrs(info, false);
    return MakeKernel([a](KernelContext& ctx) { ResizeReference(ctx, a); });
  });
  AddKernel(
      r, "Resize", 10, 1000,
      [](const KernelInfo& info) {
        const ResizeAttrs a = ParseResizeAttrs(info, false);
        return MakeKernel([a](KernelContext& ctx) { ResizeFast(ctx, a); });
      },
      KernelVariant::kFast);
  AddKernel(r, "Upsample", 7, 9, [](const KernelInfo& info) {
    const ResizeAttrs a = ParseResizeAttrs(info, true);
    return MakeKernel([a](KernelContext& ctx) { ResizeReference(ctx, a); });
  });
  AddKernel(
      r, "Upsample", 7, 9,
      [](const KernelInfo& info) {
        const ResizeAttrs a = ParseResizeAttrs(info, true);
        return MakeKernel([a](KernelContext& ctx) { ResizeFast(ctx, a); });
      },
      KernelVariant::kFast);
}

// ---------------------------------------------------------------------------------------------------------
// Pad

enum class PadMode { kConstant, kReflect, kEdge, kWrap };

struct PadAttrs {
  PadMode mode = PadMode::kConstant;
  bool inputs = false;        // opset 11+: pads, constant_value and axes are inputs
  std::vector<int64_t> pads;  // before opset 11
  double value = 0.0;         // before opset 11
};

// How one axis is padded: output index o copies input index map[o], or the constant when map[o] < 0. Output
// [left, left + len) copies input [lo, lo + len) in order.
struct AxisPad {
  std::vector<int64_t> map;
  int64_t left = 0, len = 0, lo = 0;
};

AxisPad PadAxis(const KernelContext& ctx, PadMode mode, int64_t in, int64_t begin, int64_t end) {
  AxisPad p;
  const int64_t out = in + begin + end;
  // Negative pads crop first; the remaining region is what gets padded.
  p.lo = std::max<int64_t>(0, -begin);
  p.len = in - p.lo - std::max<int64_t>(0, -end);
  p.left = std::max<int64_t>(0, begin);
  if (out < 0 || p.len < 0) {
    ctx.Fail("pads " + std::to_string(begin) + ", " + std::to_string(end) +
             " remove more than the axis size " + std::to_string(in));
  }
  if (mode != PadMode::kConstant && p.len == 0 && out > 0) {
    ctx.Fail("cannot pad an empty axis except with a constant");
  }
  p.map.resize(static_cast<size_t>(out));
  const int64_t len = p.len;
  for (int64_t o = 0; o < out; ++o) {
    int64_t j = o - p.left;
    if (j < 0 || j >= len) {
      switch (mode) {
        case PadMode::kConstant:
          j = -1;
          break;
        case PadMode::kEdge:
          j = std::clamp<int64_t>(j, 0, len - 1);
          break;
        case PadMode::kWrap:
          j = ((j % len) + len) % len;
          break;
        case PadMode::kReflect: {
          if (len == 1) {
            j = 0;
            break;
          }
          const int64_t period = 2 * (len - 1);
          j = ((j % period) + period) % period;
          if (j >= len) j = period - j;
          break;
        }
      }
    }
    p.map[static_cast<size_t>(o)] = j < 0 ? -1 : p.lo + j;
  }
  return p;
}

template <typename T>
void PadCopy(ThreadPool& pool, const std::vector<int64_t>& in_dims, const std::vector<AxisPad>& axes,
             const T* in, const T& value, T* out) {
  const size_t rank = in_dims.size();
  const std::vector<int64_t> in_strides = Strides(in_dims);
  std::vector<int64_t> out_dims;
  for (const auto& p : axes) out_dims.push_back(static_cast<int64_t>(p.map.size()));
  const AxisPad& last = axes.back();
  const int64_t row = out_dims.back();
  const int64_t rows = ShapeElementCount(out_dims) / row;
  pool.ParallelFor(rows, std::max<int64_t>(1, kElementwiseGrain / row), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      int64_t rest = r, offset = 0;
      bool constant = false;
      for (size_t d = rank - 1; d-- > 0;) {
        const int64_t src = axes[d].map[static_cast<size_t>(rest % out_dims[d])];
        rest /= out_dims[d];
        constant = constant || src < 0;
        offset += src * in_strides[d];
      }
      T* dst = out + r * row;
      if (constant) {
        std::fill_n(dst, row, value);
        continue;
      }
      const T* src = in + offset;
      auto pad = [&](int64_t x) {
        const int64_t s = last.map[static_cast<size_t>(x)];
        dst[x] = s < 0 ? value : src[s];
      };
      for (int64_t x = 0; x < last.left; ++x) pad(x);
      std::copy_n(src + last.lo, last.len, dst + last.left);
      for (int64_t x = last.left + last.len; x < row; ++x) pad(x);
    }
  });
}

void RunPad(KernelContext& ctx, const PadAttrs& a) {
  const Tensor& x = ctx.required_input(0);
  const size_t rank = x.dims().size();
  std::vector<int64_t> pads = a.inputs ? ToInt64s(ctx, ctx.required_input(1)) : a.pads;
  std::vector<size_t> axes;
  if (a.inputs && ctx.input(3) != nullptr) {
    for (int64_t axis : ToInt64s(ctx, *ctx.input(3))) {
      axes.push_back(static_cast<size_t>(NormalizeAxis(ctx, axis, static_cast<int64_t>(rank))));
    }
  } else {
    for (size_t d = 0; d < rank; ++d) axes.push_back(d);
  }
  if (pads.size() != 2 * axes.size()) {
    ctx.Fail("pads has " + std::to_string(pads.size()) + " values, expected " +
             std::to_string(2 * axes.size()));
  }
  std::vector<int64_t> begin(rank, 0), end(rank, 0);
  for (size_t k = 0; k < axes.size(); ++k) {
    begin[axes[k]] = pads[k];
    end[axes[k]] = pads[axes.size() + k];
  }
  Tensor value = ScalarOf(ctx, x.dtype(), a.value);
  if (a.inputs && ctx.input(2) != nullptr && ctx.input(2)->numel() > 0) {
    const Tensor& v = *ctx.input(2);
    if (v.dtype() != x.dtype() || v.numel() != 1) {
      ctx.Fail(std::string("constant_value must be one ") + DTypeName(x.dtype()) + " value, got " +
               DTypeName(v.dtype()) + ShapeToString(v.dims()));
    }
    value = v;
  }
  if (rank == 0) {
    ctx.SetOutput(0, x);
    return;
  }
  std::vector<AxisPad> plan;
  std::vector<int64_t> out_dims;
  for (size_t d = 0; d < rank; ++d) {
    plan.push_back(PadAxis(ctx, a.mode, x.dims()[d], begin[d], end[d]));
    out_dims.push_back(static_cast<int64_t>(plan.back().map.size()));
  }
  Tensor& out = ctx.Output(0, x.dtype(), out_dims);
  if (out.numel() == 0) return;
  DispatchByElementSize(ctx, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    PadCopy(ctx.pool(), x.dims(), plan, ElementsOf<T>(x), ElementsOf<T>(value)[0], MutableElementsOf<T>(out));
  });
}

void AddPad(KernelRegistry& r) {
  AddKernel(
      r, "Pad", 1, 1000,
      [](const KernelInfo& info) {
        const Node& n = *info.node;
        PadAttrs a;
        a.mode = ParseEnum<PadMode>(n, "mode", "constant",
                                    {{"constant", PadMode::kConstant},
                                     {"reflect", PadMode::kReflect},
                                     {"edge", PadMode::kEdge},
                                     {"wrap", PadMode::kWrap}});
        a.inputs = info.opset >= 11;
        if (!a.inputs) {
          a.pads = n.AttrInts(info.opset == 1 ? "paddings" : "pads", {});
          a.value = n.AttrFloat("value", 0.0f);
        }
        return MakeKernel([a](KernelContext& ctx) { RunPad(ctx, a); });
      },
      KernelVariant::kReference, false);
}

}  // namespace

void RegisterResizeKernels(KernelRegistry& r) {
  AddResize(r);
  AddPad(r);
}

}  // namespace compress::kernels
