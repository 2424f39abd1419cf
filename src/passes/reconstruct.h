// Least-squares weight reconstruction shared by the pruning passes: the layout of a layer's weight as
// output rows over an input reduction dimension, the Gram matrix H = X^T X of the layer's input on the
// calibration data (im2col patches for a convolution), and the exact re-fit of one output row's kept
// weights, w'_S = w_S + H_SS^-1 H_SP w_P (the minimum of (w' - w)^T H (w' - w) with w'_P = 0).
// `prune` re-fits the weights it zeroes (SparseGPT with a fixed mask); `prune_channels` re-fits the
// consumers of removed channels (ThiNet / He et al. 2017 "channel pruning" reconstruction).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <Eigen/Dense>

#include "compress/ir/graph.h"

namespace compress::passes {

// H is K x K doubles per group: 4096 keeps it at 128 MB (and all groups of a layer together as well).
constexpr int64_t kMaxReconstructK = 4096;
constexpr int64_t kMaxGramEntries = kMaxReconstructK * kMaxReconstructK;
// Accumulating H costs positions x K^2 multiply-adds per group over the calibration data; beyond this
// (minutes on one core) the layer is masked only.
constexpr double kMaxGramFlops = 2e12;
// SparseGPT's dampening: 1 % of the mean diagonal of H keeps H_SS positive definite (dead inputs give
// zero rows) and pulls the fit towards the original weights.
constexpr double kDamping = 0.01;
// Columns of X materialized at a time when accumulating H.
constexpr int64_t kGramChunk = 1024;

// How the elements of a weight map to output rows and input channels. Row r holds `lines` x `len`
// elements: element (l, p) is at flat index RowBase(r) + l * line_stride + p * p_stride and reads input
// channel ChannelBase(r) + p. N:M groups are M consecutive p of one line.
struct Layout {
  enum Kind { kConv, kConvTranspose, kMatrix } kind = kMatrix;
  int64_t rows = 0, lines = 1, len = 0;
  int64_t line_stride = 1, p_stride = 1;
  int64_t rows_per_group = 0;   // Conv/ConvTranspose: output channels per group
  int64_t group_stride = 0;     // ConvTranspose: elements per group block of the weight
  int64_t row_stride = 0;       // Conv: elements per output channel; matrices: distance between rows
  int64_t channels = 0;         // channels of the activation
  std::string act;              // the activation read (input 0)
  int64_t act_axis = 1;

  int64_t RowBase(int64_t r) const {
    if (kind == kConvTranspose) return (r / rows_per_group) * group_stride + (r % rows_per_group) * lines;
    return r * row_stride;
  }
  int64_t ChannelBase(int64_t r) const { return kind == kMatrix ? 0 : (r / rows_per_group) * len; }
  int64_t Index(int64_t r, int64_t l, int64_t p) const { return RowBase(r) + l * line_stride + p * p_stride; }
  std::string Key() const {
    return std::to_string(kind) + ":" + std::to_string(rows) + ":" + std::to_string(lines) + ":" +
           std::to_string(len) + ":" + std::to_string(line_stride) + ":" + std::to_string(p_stride) + ":" +
           std::to_string(rows_per_group) + ":" + std::to_string(group_stride) + ":" + std::to_string(row_stride);
  }
};

// The layout of input 1 of `n` with dims `w`, or an empty string `why` on success.
bool MakeLayout(const Node& n, const std::vector<int64_t>& w, Layout* out, std::string* why);

// Geometry of a Conv's im2col patches for one input shape.
struct ConvGeometry {
  int64_t k = 1;                  // kernel positions
  int64_t positions = 1;          // output positions per sample and group
  std::vector<int64_t> offsets;   // [positions x k]: input spatial index, or -1 for padding
};

// The patch geometry of Conv `n` with weight dims `w` on an input of dims `x`, or false with `why`.
bool MakeConvGeometry(const Node& n, const std::vector<int64_t>& w, const std::vector<int64_t>& x, ConvGeometry* out,
                      std::string* why);

// The Gram matrices H = X^T X of one target's input (one per group for Conv), accumulated over the
// calibration batches and every reader, and the per-channel sums of squares Wanda needs.
struct GramAccumulator {
  bool gram = false;   // H wanted (reconstruction possible so far)
  // With `ones`, X has one more column, the constant 1 (last, index k - 1): fitting its weight fits a
  // bias. k counts it.
  bool ones = false;
  std::string why;     // why not, once it is not
  int64_t k = 0, groups = 1;
  double flops = 0;
  std::vector<Eigen::MatrixXd> h;  // lower triangles
  std::vector<double> sum_sq;      // per channel of the activation
  bool channels_ok = true;
  // Conv geometry, per input shape seen (the batch size may change with the last batch).
  std::vector<int64_t> geometry_dims;
  ConvGeometry geometry;
};

// Adds one batch of reader `n`'s input to `a`.
void Accumulate(const Node& n, const Tensor& weight, const Layout& L, const Tensor& value, GramAccumulator* a);

// The exact least-squares re-fit of one row w (K entries, over the columns of H, full symmetric): the
// entries P go to zero, the entries S move to w_S + (H_SS + lambda I)^-1 H_SP w_P. Returns false (and
// leaves `out` alone) when H_SS + lambda I is not positive definite; entries outside S and P keep w.
bool RefitRow(const Eigen::MatrixXd& h, double lambda, const Eigen::VectorXd& w, const std::vector<int64_t>& S,
              const std::vector<int64_t>& P, Eigen::VectorXd* out);

}  // namespace compress::passes
