#include "common.h"
#include "kernels.h"

namespace compress::kernels {

void RegisterShapeKernels(KernelRegistry& r) { (void)r; }

}  // namespace compress::kernels
