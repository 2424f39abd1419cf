// Vectorised float32 maths over arrays: exp, erf, tanh, the logistic function, GELU, softmax and layer
// normalisation over rows, and the four arithmetic operations with a broadcast operand.
//
// The library is built for baseline x86-64, so these functions carry their own AVX2+FMA and AVX-512
// versions (intrinsics in functions with a target attribute) next to a portable one, and pick one at run
// time from the CPU's features, once, on first use. Every version evaluates the same formulas; the
// versions differ from each other only by the rounding of fused multiply-adds (and, in the horizontal sums
// of SoftmaxRows and LayerNormRows, by the order the vector width gives).
//
// Determinism: within one version, the value computed for an element depends only on that element (or, for
// the row functions, on its row): array tails go through the same vector code with masked loads and
// stores. Splitting a call into several at any points, as parallel chunks do, gives identical results.
//
// Special values: NaN stays NaN; exp overflows to +inf and underflows through the denormals to 0; the
// bounded functions (erf, tanh, logistic) reach their limits at +-inf.
#pragma once

#include <cstdint>
#include <vector>

namespace compress::kernels::vecmath {

// Error bounds, relative to the exact value (the function evaluated in double), each about 1.5 times the
// largest error measured over all 2^32 float inputs on each version (portable, AVX2, AVX-512; the two with
// FMA agree); the measurements are quoted, the portable one first where it is larger. A result in float's
// denormal range (below 2^-126) is allowed one denormal step (2^-149) more, since it carries fewer
// significant bits.
//
// exp: Cody-Waite reduction to |r| <= ln(2)/2 and Cephes' degree-6 polynomial; measured 8.5e-8 (about 0.7
// ulp).
constexpr double kExpMaxRelError = 1.3e-7;
// erf: Eigen's 13/8-degree rational approximation on [-4, 4]; measured 4.7e-7 (4.5e-7 with FMA).
constexpr double kErfMaxRelError = 7e-7;
// tanh: Eigen's 13/6-degree rational approximation, x itself below |x| = 0.0004; measured 4.0e-7 (3.0e-7
// with FMA).
constexpr double kTanhMaxRelError = 6e-7;
// logistic: exp(-|x|) and one division, 1 / (1 + e) or e / (1 + e); measured 1.8e-7.
constexpr double kSigmoidMaxRelError = 2.7e-7;
// GELU, (x * (erf(x / sqrt 2) + 1)) * 0.5: 1 + erf cancels for negative x, so the error is absolute and
// scales with |x|: |y - gelu(x)| <= kGeluMaxError * max(1, |x|). Measured 3.1e-7 (2.4e-7 with FMA): erf's
// absolute error times |x| / 2, plus the roundings of the division, the sum and the products.
constexpr double kGeluMaxError = 4.7e-7;
// The tanh form 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))), bounded the same way; measured 2.7e-7
// (2.2e-7 with FMA).
constexpr double kGeluTanhMaxError = 4e-7;

enum class Isa { kPortable, kAvx2, kAvx512 };

// "portable", "avx2", "avx512".
const char* IsaName(Isa isa);
// The versions this CPU runs, portable first, the widest last.
const std::vector<Isa>& SupportedIsas();
// The version the functions below use: the widest supported one unless SetIsa chose another.
Isa ActiveIsa();
// Makes the functions below use `isa` (tests and benchmarks compare versions this way) and returns the
// previous choice; throws compress::Error when this CPU does not support `isa`. Takes effect for calls that
// start after it returns.
Isa SetIsa(Isa isa);

// y[i] = f(x[i]) for i < n. y may be x (in place); otherwise the arrays must not overlap.
void Exp(const float* x, float* y, int64_t n);
void Erf(const float* x, float* y, int64_t n);
void Tanh(const float* x, float* y, int64_t n);
void Sigmoid(const float* x, float* y, int64_t n);
// GELU with the exact erf: x * 0.5 * (1 + erf(x / sqrt(2))), evaluated as the exported operator chain
// Div(x, sqrt 2) -> Erf -> Add 1 -> Mul x -> Mul 0.5 evaluates it, in that order and with the same float
// constants, so that it equals the unfused chain run through these functions bit for bit (including its
// overflow to +-inf for |x| > FLT_MAX / 2, where x * 2 overflows before the halving).
void Gelu(const float* x, float* y, int64_t n);
// GELU's tanh approximation: 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3))).
void GeluTanh(const float* x, float* y, int64_t n);

// Softmax (log = false) or LogSoftmax (log = true) over `rows` contiguous rows of `len` >= 1 elements:
// y = exp(x - max) / sum(exp(x - max)), or (x - max) - log(sum(...)). Sums are in float. A row holding NaN
// or +inf, or only -inf, becomes NaN, as the definition gives in double. y may be x.
void SoftmaxRows(const float* x, float* y, int64_t rows, int64_t len, bool log);

// LayerNormalization over `rows` contiguous rows of `len` >= 1 elements, as the fast kernel defines it:
// mean = sum(x) / len and var = sum((x - mean)^2) / len in float, inv = 1 / sqrt(var + epsilon), and
// y[j] = (x[j] - mean) * inv * scale[j] + bias[j]. bias may be null (no bias); mean_out and inv_out, when
// not null, receive each row's mean and inv. y may be x.
void LayerNormRows(const float* x, const float* scale, const float* bias, float* y, int64_t rows, int64_t len,
                   float epsilon, float* mean_out, float* inv_out);

enum class BinaryOp { kAdd, kSub, kMul, kDiv };

// out[r * len + j] = a[r * a_row + j * a_step] op b[r * b_row + j * b_step] for r < rows, j < len, with
// steps 0 (one value per row, broadcast) or 1. Plain IEEE operations: the same values as a scalar loop. out
// may be a or b when that operand has step 1 and row stride len (in place); otherwise no overlap.
void BinaryRows(BinaryOp op, const float* a, int64_t a_row, int64_t a_step, const float* b, int64_t b_row,
                int64_t b_step, float* out, int64_t rows, int64_t len);

}  // namespace compress::kernels::vecmath
