// Backward rules: quant family.
#include "train/grad_common.h"

namespace compress::train {

void AddQuantGrads(BackwardRegistry& /*r*/) {}

}  // namespace compress::train
