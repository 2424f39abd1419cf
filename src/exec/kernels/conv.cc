#include "common.h"
#include "kernels.h"

namespace compress::kernels {

void RegisterConvKernels(KernelRegistry& r) { (void)r; }

}  // namespace compress::kernels
