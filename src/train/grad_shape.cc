// Backward rules of operators that move elements without changing them.
//
// Reshape / Flatten / Squeeze / Unsqueeze / Identity keep the element order: dx is dy under x's shape.
#include "train/grad_common.h"

namespace compress::train {
namespace {

void SameElementsBackward(GradContext& ctx) {
  const Tensor* dy = ctx.output_grad(0);
  if (dy == nullptr || !ctx.wanted(0)) return;
  Tensor dx = *dy;
  dx.Reshape(ctx.required_input(0).dims());
  ctx.SetInputGrad(0, std::move(dx));
}

}  // namespace

void AddShapeGrads(BackwardRegistry& r) {
  for (const char* op : {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"}) {
    r.Add({op, 1, 1000, SameElementsBackward, {0}});
  }
}

}  // namespace compress::train
