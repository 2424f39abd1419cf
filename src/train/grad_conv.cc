// Backward rules: conv family.
#include "train/grad_common.h"

namespace compress::train {

void AddConvGrads(BackwardRegistry& /*r*/) {}

}  // namespace compress::train
