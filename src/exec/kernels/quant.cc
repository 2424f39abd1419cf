#include "common.h"
#include "kernels.h"

namespace compress::kernels {

void RegisterQuantKernels(KernelRegistry& r) { (void)r; }

}  // namespace compress::kernels
