// The accuracy gate (--max-accuracy-drop / --min-agreement): its specification and its verdict on one
// comparison. The fallback search that tries to meet it lives in compress/job/fallback.h.
#pragma once

#include <optional>
#include <string>

#include "compress/eval/compare.h"

namespace compress {

struct GateSpec {
  std::optional<double> max_drop_pts;   // labelled data: top-1 may drop by at most this many points
  std::optional<double> min_agreement;  // unlabelled data: top-1 agreement with the original, fraction
  bool auto_fallback = false;
  bool active() const { return max_drop_pts.has_value() || min_agreement.has_value(); }
};

// An accuracy gate's verdict on one comparison (see compress/report/gate.h).
struct GateCheck {
  std::string metric;  // "top1_drop_pts" or "agreement"
  double value = 0;
  double threshold = 0;
  bool passed = false;
  // How far from the threshold, in the metric's unit: positive = margin left, negative = violation.
  double margin = 0;
};

// Judges a comparison. Throws Error(kUsage) for --max-accuracy-drop on unlabelled data.
GateCheck CheckGate(const GateSpec& spec, const ModelComparison& c);

}  // namespace compress
