// Backward rules: pool family.
#include "train/grad_common.h"

namespace compress::train {

void AddPoolGrads(BackwardRegistry& /*r*/) {}

}  // namespace compress::train
