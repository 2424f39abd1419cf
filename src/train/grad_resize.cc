// Backward rules of Resize (opset 10+) and Upsample (opset 7-9).
//
// The forward kernel (src/exec/kernels/resize.cc) samples one axis at a time: output index i of an axis reads
// input indices index[i][t] (clamped to the input) with weights weight[i][t] (nearest: one tap of weight 1;
// linear: the triangle kernel; cubic: Keys), or the extrapolation constant when outside the crop box
// (tf_crop_and_resize). The op is linear in x, y = (A_0 (x) A_1 (x) ... ) x, so dx applies the transposed
// per-axis maps to dy: every input element gets the weighted sum of the gradients of the output elements that
// read it (for nearest, the plain sum of those that copied it). The per-axis plan below follows the forward
// kernel's plan exactly (coordinate transformation modes, nearest rounding modes, exclude_outside, antialias,
// axes and keep_aspect_ratio_policy); roi, scales and sizes are not differentiable.
#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <utility>

#include "train/grad_common.h"

namespace compress::train {
namespace {

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
enum class NearestMode { kRoundPreferFloor, kRoundPreferCeil, kFloor, kCeil, kSimple };
enum class AspectPolicy { kStretch, kNotLarger, kNotSmaller };

struct ResizeAttrs {
  ResizeMode mode = ResizeMode::kNearest;
  CoordMode coord = CoordMode::kHalfPixel;
  NearestMode nearest = NearestMode::kRoundPreferFloor;
  double cubic_a = -0.75;
  bool exclude_outside = false;
  bool antialias = false;
  AspectPolicy policy = AspectPolicy::kStretch;
  std::vector<int64_t> axes;
  int scales_input = -1, sizes_input = -1, roi_input = -1;
  std::vector<float> scales_attr;
};

template <typename E>
E ParseEnum(const GradContext& ctx, const std::string& attr, const std::string& fallback,
            std::initializer_list<std::pair<const char*, E>> names) {
  const std::string value = ctx.node().AttrString(attr, fallback);
  for (const auto& [name, e] : names) {
    if (value == name) return e;
  }
  ctx.Fail("unsupported " + attr + " '" + value + "'");
}

ResizeAttrs ParseResizeAttrs(const GradContext& ctx, bool upsample) {
  const Node& n = ctx.node();
  ResizeAttrs a;
  const std::string mode = n.AttrString("mode", "nearest");
  const bool legacy = upsample || ctx.opset() < 11;
  if (mode == "nearest") {
    a.mode = ResizeMode::kNearest;
  } else if (mode == "linear" || (upsample && mode == "bilinear")) {
    a.mode = ResizeMode::kLinear;
  } else if (mode == "cubic" && !legacy) {
    a.mode = ResizeMode::kCubic;
  } else {
    ctx.Fail("unsupported mode '" + mode + "'");
  }
  if (legacy) {
    a.coord = CoordMode::kAsymmetric;
    a.nearest = NearestMode::kSimple;
    if (upsample && ctx.opset() < 9) {
      a.scales_attr = n.FindAttr("scales") ? n.FindAttr("scales")->floats : std::vector<float>{};
      if (a.scales_attr.empty()) ctx.Fail("attribute 'scales' is required");
    } else {
      a.scales_input = 1;
    }
    return a;
  }
  a.roi_input = 1;
  a.scales_input = 2;
  a.sizes_input = 3;
  a.coord = ParseEnum<CoordMode>(ctx, "coordinate_transformation_mode", "half_pixel",
                                 {{"half_pixel", CoordMode::kHalfPixel},
                                  {"half_pixel_symmetric", CoordMode::kHalfPixelSymmetric},
                                  {"pytorch_half_pixel", CoordMode::kPytorchHalfPixel},
                                  {"align_corners", CoordMode::kAlignCorners},
                                  {"asymmetric", CoordMode::kAsymmetric},
                                  {"tf_half_pixel_for_nn", CoordMode::kTfHalfPixelForNn},
                                  {"tf_crop_and_resize", CoordMode::kTfCropAndResize}});
  a.nearest = ParseEnum<NearestMode>(ctx, "nearest_mode", "round_prefer_floor",
                                     {{"round_prefer_floor", NearestMode::kRoundPreferFloor},
                                      {"round_prefer_ceil", NearestMode::kRoundPreferCeil},
                                      {"floor", NearestMode::kFloor},
                                      {"ceil", NearestMode::kCeil}});
  a.cubic_a = n.AttrFloat("cubic_coeff_a", -0.75f);
  a.exclude_outside = n.AttrInt("exclude_outside", 0) != 0;
  if (ctx.opset() >= 18) {
    a.antialias = n.AttrInt("antialias", 0) != 0;
    a.axes = n.AttrInts("axes", {});
    a.policy = ParseEnum<AspectPolicy>(ctx, "keep_aspect_ratio_policy", "stretch",
                                       {{"stretch", AspectPolicy::kStretch},
                                        {"not_larger", AspectPolicy::kNotLarger},
                                        {"not_smaller", AspectPolicy::kNotSmaller}});
  }
  return a;
}

struct AxisPlan {
  int64_t in = 0, out = 0, taps = 1;
  std::vector<int64_t> index;
  std::vector<double> weight;
  std::vector<uint8_t> outside;
};

double KernelWeight(ResizeMode mode, double d, double a) {
  d = std::fabs(d);
  if (mode == ResizeMode::kLinear) return std::max(0.0, 1.0 - d);
  if (d <= 1.0) return ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0;
  if (d < 2.0) return ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a;
  return 0.0;
}

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
  const double aa_scale = a.antialias ? std::min(scale, 1.0) : 1.0;
  const double support = a.mode == ResizeMode::kCubic ? 2.0 : 1.0;
  const int64_t first =
      a.mode == ResizeMode::kNearest ? 0 : static_cast<int64_t>(std::floor(-support / aa_scale)) + 1;
  p.taps = a.mode == ResizeMode::kNearest ? 1 : 2 - 2 * first;
  p.index.resize(static_cast<size_t>(out * p.taps));
  p.weight.resize(static_cast<size_t>(out * p.taps));
  p.outside.assign(static_cast<size_t>(out), 0);
  auto clamp = [in](int64_t v) { return std::clamp<int64_t>(v, 0, in - 1); };
  for (int64_t i = 0; i < out; ++i) {
    const double x =
        SourceCoordinate(a.coord, static_cast<double>(i), scale, in, out, width, roi_start, roi_end);
    int64_t* idx = &p.index[static_cast<size_t>(i * p.taps)];
    double* w = &p.weight[static_cast<size_t>(i * p.taps)];
    if (a.coord == CoordMode::kTfCropAndResize && (x < 0.0 || x > static_cast<double>(in - 1))) {
      p.outside[static_cast<size_t>(i)] = 1;
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
      continue;
    }
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
    for (int64_t t = 0; t < p.taps; ++t) idx[t] = clamp(idx[t]);
  }
  return p;
}

std::vector<float> ReadFloats(const GradContext& ctx, const Tensor& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  if (t.dtype() == DType::kFloat) {
    for (int64_t i = 0; i < t.numel(); ++i) v[static_cast<size_t>(i)] = t.data<float>()[i];
  } else if (t.dtype() == DType::kDouble) {
    for (int64_t i = 0; i < t.numel(); ++i)
      v[static_cast<size_t>(i)] = static_cast<float>(t.data<double>()[i]);
  } else {
    ctx.Fail(std::string("expected float scales or roi, got ") + DTypeName(t.dtype()));
  }
  return v;
}

std::vector<AxisPlan> PlanResize(const GradContext& ctx, const ResizeAttrs& a,
                                 const std::vector<int64_t>& dims) {
  const size_t rank = dims.size();
  std::vector<size_t> axes;
  for (int64_t axis : a.axes)
    axes.push_back(static_cast<size_t>(NormAxis(ctx, axis, static_cast<int64_t>(rank))));
  if (a.axes.empty()) {
    for (size_t d = 0; d < rank; ++d) axes.push_back(d);
  }
  auto present = [&](int i) {
    return i >= 0 && ctx.input(static_cast<size_t>(i)) != nullptr &&
           ctx.input(static_cast<size_t>(i))->numel() > 0;
  };
  std::vector<float> scales = a.scales_attr;
  if (present(a.scales_input)) scales = ReadFloats(ctx, *ctx.input(static_cast<size_t>(a.scales_input)));
  std::vector<int64_t> sizes;
  if (present(a.sizes_input)) sizes = ReadInts(*ctx.input(static_cast<size_t>(a.sizes_input)));
  if (!scales.empty() && !sizes.empty()) ctx.Fail("only one of scales and sizes may be given");
  if (scales.empty() && sizes.empty()) ctx.Fail("one of scales and sizes is required");
  if ((scales.empty() ? sizes.size() : scales.size()) != axes.size())
    ctx.Fail("scales or sizes do not match the axes");
  std::vector<double> scale(rank, 1.0);
  std::vector<int64_t> out(dims);
  if (!sizes.empty()) {
    for (size_t k = 0; k < axes.size(); ++k) {
      out[axes[k]] = sizes[k];
      scale[axes[k]] = static_cast<double>(sizes[k]) / static_cast<double>(dims[axes[k]]);
    }
    if (a.policy != AspectPolicy::kStretch) {
      double s = scale[axes[0]];
      for (size_t d : axes)
        s = a.policy == AspectPolicy::kNotLarger ? std::min(s, scale[d]) : std::max(s, scale[d]);
      for (size_t d : axes) {
        scale[d] = s;
        out[d] = static_cast<int64_t>(s * static_cast<double>(dims[d]) + 0.5);
      }
    }
  } else {
    for (size_t k = 0; k < axes.size(); ++k) {
      scale[axes[k]] = scales[k];
      out[axes[k]] = static_cast<int64_t>(
          std::floor(static_cast<double>(scales[k]) * static_cast<double>(dims[axes[k]])));
    }
  }
  std::vector<double> roi_start(rank, 0.0), roi_end(rank, 1.0);
  if (a.coord == CoordMode::kTfCropAndResize) {
    if (!present(a.roi_input)) ctx.Fail("roi is required by tf_crop_and_resize");
    const std::vector<float> roi = ReadFloats(ctx, *ctx.input(static_cast<size_t>(a.roi_input)));
    if (roi.size() != 2 * axes.size()) ctx.Fail("roi does not match the axes");
    for (size_t k = 0; k < axes.size(); ++k) {
      roi_start[axes[k]] = roi[k];
      roi_end[axes[k]] = roi[axes.size() + k];
    }
  }
  std::vector<AxisPlan> plans;
  for (size_t d = 0; d < rank; ++d)
    plans.push_back(PlanAxis(a, dims[d], out[d], scale[d], roi_start[d], roi_end[d]));
  return plans;
}

void ResizeBackward(GradContext& ctx, bool upsample) {
  const Tensor* dy = ctx.output_grad(0);
  if (dy == nullptr || !ctx.wanted(0)) return;
  const Tensor& x = ctx.required_input(0);
  const ResizeAttrs a = ParseResizeAttrs(ctx, upsample);
  const std::vector<AxisPlan> plans = PlanResize(ctx, a, x.dims());
  std::vector<int64_t> dims;
  for (const auto& p : plans) dims.push_back(p.out);
  if (dims != dy->dims()) {
    ctx.Fail("output gradient of shape " + ShapeToString(dy->dims()) + ", expected " + ShapeToString(dims));
  }
  DispatchFloat(ctx, dy->dtype(), [&](auto tag) {
    using T = decltype(tag);
    std::vector<double> cur(dy->data<T>(), dy->data<T>() + dy->numel());
    // Transposed per-axis maps, outermost axis first (the maps commute).
    for (size_t d = 0; d < plans.size(); ++d) {
      const AxisPlan& p = plans[d];
      const int64_t outer = ShapeElementCount(
          std::vector<int64_t>(dims.begin(), dims.begin() + static_cast<std::ptrdiff_t>(d)));
      const int64_t inner = ShapeElementCount(
          std::vector<int64_t>(dims.begin() + static_cast<std::ptrdiff_t>(d) + 1, dims.end()));
      std::vector<double> next(static_cast<size_t>(outer * p.in * inner), 0.0);
      for (int64_t o = 0; o < outer; ++o) {
        for (int64_t i = 0; i < p.out; ++i) {
          if (p.outside[static_cast<size_t>(i)]) continue;  // the extrapolation constant
          const double* src = &cur[static_cast<size_t>((o * p.out + i) * inner)];
          for (int64_t t = 0; t < p.taps; ++t) {
            const double w = p.weight[static_cast<size_t>(i * p.taps + t)];
            if (w == 0.0) continue;
            double* dst =
                &next[static_cast<size_t>((o * p.in + p.index[static_cast<size_t>(i * p.taps + t)]) * inner)];
            for (int64_t k = 0; k < inner; ++k) dst[k] += w * src[k];
          }
        }
      }
      dims[d] = p.in;
      cur = std::move(next);
    }
    Tensor dx(x.dtype(), x.dims());
    T* o = dx.mutable_data<T>();
    for (size_t i = 0; i < cur.size(); ++i) o[i] = static_cast<T>(cur[i]);
    ctx.SetInputGrad(0, std::move(dx));
  });
}

}  // namespace

void AddResizeGrads(BackwardRegistry& r) {
  r.Add({"Resize", 10, 1000, [](GradContext& c) { ResizeBackward(c, false); }, {0}});
  r.Add({"Upsample", 7, 9, [](GradContext& c) { ResizeBackward(c, true); }, {0}});
}

}  // namespace compress::train
