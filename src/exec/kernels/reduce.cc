#include "common.h"
#include "kernels.h"

namespace compress::kernels {

void RegisterReduceKernels(KernelRegistry& r) { (void)r; }

}  // namespace compress::kernels
