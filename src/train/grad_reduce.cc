// Backward rules: reduce family.
#include "train/grad_common.h"

namespace compress::train {

void AddReduceGrads(BackwardRegistry& /*r*/) {}

}  // namespace compress::train
