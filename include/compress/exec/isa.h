// Instruction sets the executor's float kernels (GEMM micro-kernels, direct convolution sums, row copies)
// have versions for. The best one the CPU supports is chosen at start-up; tests and benchmarks switch with
// UseKernelIsa to check and time each against the reference kernels (never while kernels run).
#pragma once

#include <vector>

namespace compress {

enum class KernelIsa { kPortable, kAvx2, kAvx512 };

std::vector<KernelIsa> SupportedKernelIsas();  // best first, always ending with kPortable
KernelIsa ActiveKernelIsa();
void UseKernelIsa(KernelIsa isa);  // isa must be in SupportedKernelIsas()
const char* KernelIsaName(KernelIsa isa);
// The integer GEMM's instruction set (avx512-vnni, avx2-maddubs, scalar, ...), chosen at start-up.
const char* IntegerKernelIsaName();

}  // namespace compress
