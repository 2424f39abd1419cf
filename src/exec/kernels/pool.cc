#include "common.h"
#include "kernels.h"

namespace compress::kernels {

void RegisterPoolKernels(KernelRegistry& r) { (void)r; }

}  // namespace compress::kernels
