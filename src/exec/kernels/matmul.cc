#include "common.h"
#include "kernels.h"

namespace compress::kernels {

void RegisterMatMulKernels(KernelRegistry& r) { (void)r; }

}  // namespace compress::kernels
