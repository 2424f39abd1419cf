#include "compress/eval/gate.h"

#include "compress/util/error.h"

namespace compress {

GateCheck CheckGate(const GateSpec& spec, const ModelComparison& c) {
  GateCheck g;
  if (spec.max_drop_pts) {
    if (!c.labelled) {
      ThrowUsage("--max-accuracy-drop needs labelled data (" + c.data +
                 " has no labels); use --min-agreement for unlabelled data");
    }
    g.metric = "top1_drop_pts";
    g.value = (c.top1_before - c.top1_after) * 100.0;
    g.threshold = *spec.max_drop_pts;
    g.margin = g.threshold - g.value;
  } else if (spec.min_agreement) {
    g.metric = "agreement";
    g.value = c.agreement;
    g.threshold = *spec.min_agreement;
    g.margin = g.value - g.threshold;
  } else {
    g.passed = true;
    return g;
  }
  // Accuracies are ratios of integer counts: a margin within rounding of zero is a pass, not a failure.
  g.passed = g.margin >= -1e-9;
  return g;
}

}  // namespace compress
