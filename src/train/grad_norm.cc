// Backward rules: norm family.
#include "train/grad_common.h"

namespace compress::train {

void AddNormGrads(BackwardRegistry& /*r*/) {}

}  // namespace compress::train
