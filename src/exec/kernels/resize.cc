#include "common.h"
#include "kernels.h"

namespace compress::kernels {

void RegisterResizeKernels(KernelRegistry& r) { (void)r; }

}  // namespace compress::kernels
