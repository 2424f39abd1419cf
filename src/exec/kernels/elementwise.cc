#include "common.h"
#include "kernels.h"

namespace compress::kernels {

void RegisterElementwiseKernels(KernelRegistry& r) { (void)r; }

}  // namespace compress::kernels
