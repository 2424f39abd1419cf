// low_rank: replaces the constant weight of a Gemm, MatMul or Conv by the product of two smaller ones.
//
//   Before:  x -> MatMul(W[K,N]) -> y
//   After:   x -> MatMul(A[K,r]) -> MatMul(B[r,N]) -> y          (W ~ A B, r(K + N) < K N)
//
// Matrices: W[K,N] is the weight as the product uses it (a Gemm's transB is undone; transA and alpha stay
// on the first Gemm, C and beta go to the second; before opset 11, where Gemm's C is required, the first
// is a MatMul and alpha goes to the second, and a Gemm with transA stays). Batched 3-D activations of
// transformers are fine: the weight is 2-D and both MatMuls broadcast as the original did.
//
// Conv [O, C/g, k...]: two schemes, whichever needs fewer MACs at the rank the budget gives it:
//   channel  a Conv with r filters per group (the original kernel, strides, pads, dilations, group) then a
//            1x1 Conv [O, r, 1...] with the same group and the bias;
//   spatial  (2-D kernels kh, kw > 1 with explicit pads; AIMET's spatial SVD) a kh x 1 Conv with r
//            filters per group, stride (sh, 1), dilation (dh, 1), pads (top, 0, bottom, 0), then a 1 x kw
//            Conv [O, r, 1, kw] with stride (1, sw), dilation (1, dw), pads (0, left, 0, right). The
//            weight viewed as M[(c, i), (o, j)] = W[o, c, i, j] factors exactly into these two, so at full
//            rank the result is the original convolution.
//
// Methods:
//   svd       truncated SVD of the weight (per group): the best rank-r weight in the Frobenius norm.
//   whitened  (SVD-LLM) with X the layer's input on the calibration data (im2col patches for a Conv) and
//             H = X^T X + lambda I = L L^T (lambda = kDamping x mean diagonal, raised tenfold until the
//             Cholesky succeeds, so a singular or ill-conditioned H gives no NaN), the truncated SVD of
//             L^T W, mapped back through L^-T: the rank-r weight with the least output error ||X (W - W')||
//             on the data. The spatial scheme has no such closed form: its first factor comes from plain
//             SVD and its second is re-fitted by least squares on the data for that first factor
//             (method "refit" in the report; see SpatialFactors).
// The singular values are split evenly between the two factors (sqrt(S) on each), so that both are
// quantized well by a later int8 pass.
//
// Rank:
//   ratio       keep at most that fraction of each factorized layer's parameters (weight plus bias): the
//               largest rank on the rank grid that does; `ratio` 0.25 on W[784,256] gives rank 48;
//   energy      the smallest rank (rounded up to the grid) keeping that share of the sum of squared
//               singular values (of L^T W when whitened);
//   params/macs a fraction of the whole model's parameters or MACs (CountMacs, per sample): every layer's
//               error is measured at every rank of the grid (exactly, on the calibration data, as the
//               relative error of the layer's output; without data, of its weight) and ranks are lowered
//               greedily, the step with the least added error per unit saved first, until the budget holds;
//               then the slack the last steps left is spent back where it removes the most error.
//               Throws Error(kAccuracyGate) naming the reachable fraction when even the smallest ranks
//               keep more.
//   The grid: multiples of `rank_multiple` (default 8; 1 for layers whose largest possible rank per group is
//   below 32). A layer whose rank would save no parameters, or no MACs where they are known, stays as it
//   is, with a note.
// Precedence: `params`, `macs`, `energy` (at most one of them, > 0) replace `ratio`.
//
// A layer that computes a graph output with no other product after it (a classifier's logits) stays whole
// unless `keep_output_layers` is false: its rank would bound the rank of the outputs themselves (rank 2 of
// 10 logits keeps two directions of the class scores), for a small share of the parameters.
// Only float32 initializers of the main graph read by exactly one node are factorized (a shared weight, a
// weight that can be fed as a graph input, or one of another type stays, with a note); `exclude_nodes`
// and `only_nodes` select by node name. The first node keeps the name `<name>_lr`, the second the
// original name, so later passes and reports find the layer under its name. The two factors are ordinary
// initializers (`<weight>_lr_a`, `<weight>_lr_b`) that a later pass quantizes and a fine-tune trains.
#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <Eigen/Dense>

#include "compress/eval/macs.h"
#include "compress/io/schema.h"
#include "compress/passes/builders.h"
#include "compress/util/error.h"
#include "pass_util.h"
#include "reconstruct.h"

namespace compress {

namespace {

using nlohmann::json;
using passes::GramAccumulator;
using passes::kDamping;
using passes::kMaxGramEntries;
using passes::kMaxReconstructK;
using passes::Layout;

// Layers whose largest rank per group is below this use a rank grid of 1.
constexpr int64_t kNarrowLayer = 32;
// Gram matrices accumulated in one calibration run (entries, 8 bytes each): 1 GiB.
constexpr int64_t kGramEntriesPerRun = int64_t{1} << 27;
// Budget mode: exact output errors of the spatial scheme probed per layer (flops), about 2 s on one core.
constexpr double kMaxSpatialProbeFlops = 2e10;
// Cholesky of H + lambda I: lambda grows tenfold this many times before the layer falls back to plain SVD.
constexpr int kDampingRetries = 6;

enum class Scheme { kMatrix, kChannel, kSpatial };

const char* SchemeName(Scheme s) {
  switch (s) {
    case Scheme::kMatrix: return "matrix";
    case Scheme::kChannel: return "channel";
    case Scheme::kSpatial: return "spatial";
  }
  return "";
}

// One factorization of one layer: its decomposition per group and what it costs.
struct Factors {
  bool ok = false;
  std::vector<Eigen::MatrixXd> u;  // per group: left singular vectors (of L^T W when whitened)
  std::vector<Eigen::VectorXd> s;  // singular values, descending
  std::vector<Eigen::MatrixXd> v;  // right singular vectors
  std::vector<Eigen::MatrixXd> l;  // whitened: the Cholesky factor L per group (empty: plain)
  std::vector<double> lambda;      // whitened: the damping added to H per group
  // Plain SVD with calibration data: q_i = u_i^T H u_i per group, so that the output error of rank r is
  // sum over i >= r of s_i^2 q_i (the v_i are orthonormal), every rank from one pass.
  std::vector<Eigen::VectorXd> q;
  int64_t max_rank = 0;            // per group
};

struct Layer {
  size_t node = 0;
  std::string key;     // node name, or Describe() for an unnamed node
  std::string op;
  std::string weight;
  std::vector<int64_t> wdims;
  int64_t groups = 1;
  int64_t k = 0, n = 0;            // matrix view per group: W_g[k, n]
  int64_t cg = 0, og = 0, kh = 0, kw = 0;  // Conv
  int64_t bias = 0;                // elements of the bias (Gemm C when constant, Conv B)
  bool spatial_ok = false;
  std::optional<int64_t> macs_before;  // per sample
  // Conv spatial MACs: output positions and positions of the intermediate (H_out x W_in) per sample.
  int64_t positions_out = 0, positions_mid = 0;
  std::vector<Eigen::MatrixXd> w;  // matrix view per group [k, n]
  std::vector<Eigen::MatrixXd> ws; // spatial view per group [cg * kh, og * kw]
  int64_t multiple = 1;
  // Calibration: augmented Gram [X, 1]^T [X, 1] per group (full symmetric), or empty.
  std::vector<Eigen::MatrixXd> h;
  std::string no_data_why;
  Factors channel, spatial;        // channel also serves matrices
  std::string method;              // as applied to the channel/matrix scheme
  bool refit_spatial = false;      // data-aware: the spatial scheme's second factor re-fitted on the data
};

struct Choice {
  Scheme scheme = Scheme::kMatrix;
  int64_t rank = 0;  // 0: not factorized
};

int64_t Params(const Layer& L, const Choice& c) {
  const int64_t before = L.groups * L.k * L.n + L.bias;
  if (c.rank == 0) return before;
  if (c.scheme == Scheme::kSpatial) return L.groups * c.rank * (L.cg * L.kh + L.og * L.kw) + L.bias;
  return L.groups * c.rank * (L.k + L.n) + L.bias;
}

// Per-sample MACs, or nullopt when the layer's count is unknown.
std::optional<int64_t> Macs(const Layer& L, const Choice& c) {
  if (!L.macs_before) return std::nullopt;
  if (c.rank == 0) return L.macs_before;
  const int64_t full = L.groups * L.k * L.n;
  if (c.scheme == Scheme::kSpatial) {
    return L.groups * c.rank * L.cg * L.kh * L.positions_mid + L.og * L.groups * c.rank * L.kw * L.positions_out;
  }
  // Rows (output positions) of the product: MACs / (k x n x groups).
  const int64_t rows = full > 0 ? *L.macs_before / full : 0;
  return rows * L.groups * c.rank * (L.k + L.n);
}

bool IsCandidateOp(const Node& n) {
  return n.IsDefaultDomain() && n.inputs.size() >= 2 &&
         (n.op_type == "Gemm" || n.op_type == "MatMul" || n.op_type == "Conv");
}

std::string KeyOf(const Node& n) { return n.name.empty() ? n.Describe() : n.name; }

// Truncated decomposition W_r = A B of one group (A [rows, r], B [r, cols]) with sqrt(S) on each side.
void GroupFactors(const Factors& f, size_t g, int64_t r, Eigen::MatrixXd* a, Eigen::MatrixXd* b) {
  const Eigen::VectorXd root = f.s[g].head(r).cwiseSqrt();
  Eigen::MatrixXd left = f.u[g].leftCols(r) * root.asDiagonal();
  if (!f.l.empty()) left = f.l[g].transpose().triangularView<Eigen::Upper>().solve(left);
  *a = std::move(left);
  *b = root.asDiagonal() * f.v[g].leftCols(r).transpose();
}

// The spatial view [cg * kh, og * kw] of a rank-r product back in the matrix view [cg * kh * kw, og].
Eigen::MatrixXd SpatialToMatrix(const Layer& L, const Eigen::MatrixXd& m) {
  Eigen::MatrixXd out(L.k, L.n);
  for (int64_t c = 0; c < L.cg; ++c) {
    for (int64_t i = 0; i < L.kh; ++i) {
      for (int64_t o = 0; o < L.og; ++o) {
        for (int64_t j = 0; j < L.kw; ++j) out((c * L.kh + i) * L.kw + j, o) = m(c * L.kh + i, o * L.kw + j);
      }
    }
  }
  return out;
}

// The spatial factors of group g at rank r: A from the SVD; with `refit_spatial`, B is then the least-squares
// best second factor for that A on the calibration data. W_r[:, o] = M beta_o with
// M[(c, i, j), (q, j')] = A[(c, i), q] delta(j, j') and beta_o[(q, j)] = B[q, (o, j)], so
// beta_o = (M^T H M + lambda I)^-1 M^T H W[:, o]: the output error ||X (W - W_r)|| is least for the A kept.
void SpatialFactors(const Layer& L, size_t g, int64_t r, Eigen::MatrixXd* a, Eigen::MatrixXd* b) {
  GroupFactors(L.spatial, g, r, a, b);
  if (!L.refit_spatial || L.h.empty()) return;
  const int64_t kw = L.kw, rows = L.cg * L.kh, p = r * kw;
  Eigen::MatrixXd m = Eigen::MatrixXd::Zero(L.k, p);
  for (int64_t ci = 0; ci < rows; ++ci) {
    for (int64_t q = 0; q < r; ++q) {
      for (int64_t j = 0; j < kw; ++j) m(ci * kw + j, q * kw + j) = (*a)(ci, q);
    }
  }
  const Eigen::MatrixXd hm = L.h[g].topLeftCorner(L.k, L.k) * m;
  Eigen::MatrixXd gram = m.transpose() * hm;
  const double mean_diag = gram.diagonal().mean();
  if (!(mean_diag > 0) || !std::isfinite(mean_diag)) return;
  gram.diagonal().array() += kDamping * mean_diag;
  Eigen::LLT<Eigen::MatrixXd> llt(gram);
  if (llt.info() != Eigen::Success) return;
  const Eigen::MatrixXd beta = llt.solve(hm.transpose() * L.w[g]);  // [r kw, og]
  if (!beta.allFinite()) return;
  for (int64_t q = 0; q < r; ++q) {
    for (int64_t o = 0; o < L.og; ++o) {
      for (int64_t j = 0; j < kw; ++j) (*b)(q, o * kw + j) = beta(q * kw + j, o);
    }
  }
}

// The rank-r weight of group g (matrix view).
Eigen::MatrixXd Approximation(const Layer& L, Scheme scheme, size_t g, int64_t r) {
  Eigen::MatrixXd a, b;
  if (scheme == Scheme::kSpatial) {
    SpatialFactors(L, g, r, &a, &b);
    return SpatialToMatrix(L, a * b);
  }
  GroupFactors(L.channel, g, r, &a, &b);
  return a * b;
}

// ||X (W - W_r)||^2 over the calibration data (with data) or ||W - W_r||^2 (without), summed over the
// groups, and the matching signal ||X W + b||^2 or ||W||^2.
struct OutputError {
  double error = 0, signal = 0;
  double Relative() const { return signal > 0 ? error / signal : (error > 0 ? 1.0 : 0.0); }
};

OutputError ExactError(const Layer& L, Scheme scheme, int64_t r) {
  OutputError e;
  for (size_t g = 0; g < static_cast<size_t>(L.groups); ++g) {
    const Eigen::MatrixXd d = L.w[g] - Approximation(L, scheme, g, r);
    if (L.h.empty()) {
      e.error += d.squaredNorm();
      e.signal += L.w[g].squaredNorm();
    } else {
      const auto hk = L.h[g].topLeftCorner(L.k, L.k);
      e.error += (d.transpose() * hk * d).trace();
      e.signal += (L.w[g].transpose() * hk * L.w[g]).trace();
    }
  }
  return e;
}

double Tail(const Factors& f, int64_t r);

// The output error of a choice on the calibration data and the signal ||X W||^2, exactly, at the cost of
// the factors themselves where the spectrum gives it: whitened, ||L^T dW||^2 is the spectrum's tail and
// dW^T H dW = that - lambda ||dW||^2; plain, sum over i >= r of s_i^2 q_i. Only the spatial scheme needs
// the K x K x N product. Without data: the weight's error and energy.
OutputError LayerError(const Layer& L, Scheme scheme, int64_t r) {
  if (L.h.empty() || scheme == Scheme::kSpatial) return ExactError(L, scheme, r);
  OutputError e;
  const Factors& f = L.channel;
  if (!f.q.empty()) {
    for (size_t g = 0; g < f.q.size(); ++g) {
      for (Eigen::Index i = 0; i < f.s[g].size(); ++i) {
        const double v = f.s[g](i) * f.s[g](i) * f.q[g](i);
        e.signal += v;
        if (i >= r) e.error += v;
      }
    }
    return e;
  }
  if (f.l.empty()) return ExactError(L, scheme, r);
  for (size_t g = 0; g < f.s.size(); ++g) {
    const Eigen::MatrixXd d = L.w[g] - Approximation(L, scheme, g, r);
    double tail = 0, total = 0;
    for (Eigen::Index i = 0; i < f.s[g].size(); ++i) {
      total += f.s[g](i) * f.s[g](i);
      if (i >= r) tail += f.s[g](i) * f.s[g](i);
    }
    e.error += std::max(0.0, tail - f.lambda[g] * d.squaredNorm());
    e.signal += std::max(0.0, total - f.lambda[g] * L.w[g].squaredNorm());
  }
  return e;
}

// Tail energy of a spectrum: error of every rank from one SVD, exact for plain SVD in the weight norm and
// for whitened SVD in the (damped) output norm.
double Tail(const Factors& f, int64_t r) {
  double t = 0;
  for (const auto& s : f.s) {
    for (Eigen::Index i = r; i < s.size(); ++i) t += s(i) * s(i);
  }
  return t;
}
double Total(const Factors& f) { return Tail(f, 0); }

Factors Decompose(const std::vector<Eigen::MatrixXd>& mats, const std::vector<Eigen::MatrixXd>* whiten,
                  const std::vector<double>* lambda = nullptr) {
  Factors f;
  f.ok = true;
  if (lambda != nullptr) f.lambda = *lambda;
  for (size_t g = 0; g < mats.size(); ++g) {
    Eigen::MatrixXd m = mats[g];
    if (whiten != nullptr) {
      f.l.push_back((*whiten)[g]);
      m = (*whiten)[g].transpose() * m;
    }
    Eigen::BDCSVD<Eigen::MatrixXd> svd(m, Eigen::ComputeThinU | Eigen::ComputeThinV);
    if (!svd.matrixU().allFinite() || !svd.matrixV().allFinite() || !svd.singularValues().allFinite()) {
      f.ok = false;
      return f;
    }
    f.u.push_back(svd.matrixU());
    f.s.push_back(svd.singularValues());
    f.v.push_back(svd.matrixV());
    f.max_rank = static_cast<int64_t>(svd.singularValues().size());
  }
  return f;
}

// L with H + lambda I = L L^T for the top-left k x k block of `h`, or false.
bool Whitening(const Eigen::MatrixXd& h, int64_t k, Eigen::MatrixXd* l, double* lambda_out) {
  const Eigen::MatrixXd hk = h.topLeftCorner(k, k);
  const double mean_diag = hk.diagonal().mean();
  if (!(mean_diag > 0) || !std::isfinite(mean_diag)) return false;
  double lambda = kDamping * mean_diag;
  for (int attempt = 0; attempt < kDampingRetries; ++attempt, lambda *= 10) {
    Eigen::MatrixXd damped = hk;
    damped.diagonal().array() += lambda;
    Eigen::LLT<Eigen::MatrixXd> llt(damped);
    if (llt.info() != Eigen::Success) continue;
    Eigen::MatrixXd lm = llt.matrixL();
    if (!lm.allFinite() || lm.diagonal().minCoeff() <= 0) continue;
    *l = std::move(lm);
    *lambda_out = lambda;
    return true;
  }
  return false;
}

class LowRankPass : public Pass {
 public:
  explicit LowRankPass(const json& o)
      : ratio_(o.at("ratio").get<double>()), energy_(o.at("energy").get<double>()),
        params_(o.at("params").get<double>()), macs_(o.at("macs").get<double>()),
        method_(o.at("method").get<std::string>()), multiple_(o.at("rank_multiple").get<int64_t>()),
        keep_output_layers_(o.at("keep_output_layers").get<bool>()) {
    for (const auto& s : o.at("exclude_nodes")) exclude_.insert(s.get<std::string>());
    for (const auto& s : o.at("only_nodes")) only_.insert(s.get<std::string>());
  }

  void Run(Model& model, PassContext& ctx) override {
    Validate();
    std::vector<Layer> layers = Collect(model, ctx);
    if (layers.empty()) return;
    const bool has_data = ctx.calibration() != nullptr && ctx.calibration()->has_data();
    const bool whitened = method_ == "whitened" || (method_ == "auto" && has_data);
    if (method_ == "whitened" && !has_data) {
      ThrowUsage("low_rank: method whitened needs calibration data (--calib DIR)");
    }
    if (has_data) Gather(model, layers, ctx);
    for (Layer& L : layers) Factorize(L, whitened, ctx);

    std::vector<Choice> choices = Choose(model, layers, ctx);
    Rewrite(model, layers, choices, ctx);
  }

 private:
  void Validate() const {
    int set = (energy_ > 0) + (params_ > 0) + (macs_ > 0);
    if (set > 1) ThrowUsage("low_rank: energy, params and macs are alternatives; set one of them");
    auto fraction = [](double v, const char* name, bool closed) {
      if (!(v >= 0 && (closed ? v <= 1 : v < 1)) || !std::isfinite(v)) {
        ThrowUsage(std::string("low_rank: ") + name + " must be a fraction in (0, " + (closed ? "1]" : "1)") +
                   ", got " + std::to_string(v));
      }
    };
    fraction(ratio_, "ratio", false);
    fraction(energy_, "energy", true);
    fraction(params_, "params", false);
    fraction(macs_, "macs", false);
    if (set == 0 && !(ratio_ > 0)) ThrowUsage("low_rank: ratio must be in (0, 1) (or set energy, params or macs)");
    if (method_ != "auto" && method_ != "svd" && method_ != "whitened") {
      ThrowUsage("low_rank: method must be auto, svd or whitened, got '" + method_ + "'");
    }
    if (multiple_ < 1 || multiple_ > 4096) {
      ThrowUsage("low_rank: rank_multiple must be in [1, 4096], got " + std::to_string(multiple_));
    }
  }

  std::vector<Layer> Collect(const Model& model, PassContext& ctx) {
    const Graph& g = model.graph;
    const auto uses = passes::UseCounts(g);
    const auto outputs = passes::GraphOutputNames(g);
    // Per-sample MACs of each node (by key) and input shapes for the spatial scheme.
    std::map<std::string, int64_t> node_macs;
    {
      const MacsCount mc = CountMacs(model);
      model_macs_ = mc.total;
      for (const auto& n : mc.nodes) {
        if (n.graph.empty() && n.macs) node_macs[n.node] = *n.macs;
      }
    }
    Model typed = model;
    const bool inferred = InferShapes(typed);
    const std::set<size_t> output_layers = keep_output_layers_ ? OutputLayers(g) : std::set<size_t>{};
    std::vector<Layer> layers;
    for (size_t i = 0; i < g.nodes.size(); ++i) {
      const Node& n = g.nodes[i];
      if (!IsCandidateOp(n)) continue;
      const std::string key = KeyOf(n);
      if (!only_.empty() && !only_.count(key)) continue;
      const std::string& w = n.inputs[1];
      const Tensor* t = w.empty() ? nullptr : g.FindInitializer(w);
      auto skip = [&](const std::string& why) { ctx.Note("low_rank: " + n.Describe() + " kept: " + why); };
      if (exclude_.count(key)) continue;
      if (output_layers.count(i)) {
        skip("it computes a graph output with no other product after it (a classifier's logits: a rank below "
             "the output width limits the outputs themselves); keep_output_layers false factorizes it too");
        continue;
      }
      if (t == nullptr) {
        if (n.op_type != "MatMul") skip("its weight '" + w + "' is not a constant");
        continue;
      }
      if (g.FindInitializer(n.inputs[0]) != nullptr) {
        skip("input 0 is a constant too (only products of an activation and a weight are factorized)");
        continue;
      }
      if (t->dtype() != DType::kFloat) {
        skip(std::string("weight '") + w + "' is " + DTypeName(t->dtype()) + ", only float32 is factorized");
        continue;
      }
      if (passes::IsOverridable(model, g, w) || outputs.count(w)) {
        skip("weight '" + w + "' can be replaced through a graph input or is a graph output");
        continue;
      }
      const auto u = uses.find(w);
      if (u != uses.end() && u->second != 1) {
        skip("weight '" + w + "' is also read elsewhere (" + std::to_string(u->second) + " uses)");
        continue;
      }
      Layer L;
      L.node = i;
      L.key = key;
      L.op = n.op_type;
      L.weight = w;
      L.wdims = t->dims();
      const float* d = t->data<float>();
      if (t->numel() == 0) continue;
      if (n.op_type == "Conv") {
        if (L.wdims.size() < 3) {
          skip("weight of rank " + std::to_string(L.wdims.size()));
          continue;
        }
        L.groups = n.AttrInt("group", 1);
        if (L.groups < 1 || L.wdims[0] % L.groups != 0) {
          skip("output channels not divisible by group");
          continue;
        }
        int64_t q = 1;
        for (size_t a = 2; a < L.wdims.size(); ++a) q *= L.wdims[a];
        L.og = L.wdims[0] / L.groups;
        L.cg = L.wdims[1];
        L.k = L.cg * q;
        L.n = L.og;
        if (n.inputs.size() > 2 && !n.inputs[2].empty()) {
          const Tensor* b = g.FindInitializer(n.inputs[2]);
          L.bias = b != nullptr ? b->numel() : 0;
        }
        for (int64_t grp = 0; grp < L.groups; ++grp) {
          Eigen::MatrixXd m(L.k, L.n);
          for (int64_t o = 0; o < L.og; ++o) {
            const float* row = d + (grp * L.og + o) * L.k;
            for (int64_t e = 0; e < L.k; ++e) m(e, o) = row[e];
          }
          L.w.push_back(std::move(m));
        }
        if (L.wdims.size() == 4 && L.wdims[2] > 1 && L.wdims[3] > 1) {
          L.kh = L.wdims[2];
          L.kw = L.wdims[3];
          SpatialGeometry(n, typed, inferred, &L);
        }
        if (L.spatial_ok) {
          for (int64_t grp = 0; grp < L.groups; ++grp) {
            Eigen::MatrixXd m(L.cg * L.kh, L.og * L.kw);
            for (int64_t o = 0; o < L.og; ++o) {
              for (int64_t c = 0; c < L.cg; ++c) {
                for (int64_t a = 0; a < L.kh; ++a) {
                  for (int64_t b = 0; b < L.kw; ++b) {
                    m(c * L.kh + a, o * L.kw + b) = d[(((grp * L.og + o) * L.cg + c) * L.kh + a) * L.kw + b];
                  }
                }
              }
            }
            L.ws.push_back(std::move(m));
          }
        }
      } else {
        if (L.wdims.size() != 2) {
          skip("weight of rank " + std::to_string(L.wdims.size()) + ", expected 2");
          continue;
        }
        if (n.op_type == "Gemm" && model.OpsetVersion("") < 11 && n.AttrInt("transA", 0) != 0) {
          skip("a Gemm with transA before opset 11 (the first factor would be a Gemm without its required C)");
          continue;
        }
        const bool trans_b = n.op_type == "Gemm" && n.AttrInt("transB", 0) != 0;
        L.k = trans_b ? L.wdims[1] : L.wdims[0];
        L.n = trans_b ? L.wdims[0] : L.wdims[1];
        if (n.op_type == "Gemm" && n.inputs.size() > 2 && !n.inputs[2].empty()) {
          const Tensor* b = g.FindInitializer(n.inputs[2]);
          L.bias = b != nullptr ? b->numel() : 0;
        }
        Eigen::MatrixXd m(L.k, L.n);
        for (int64_t a = 0; a < L.wdims[0]; ++a) {
          for (int64_t b = 0; b < L.wdims[1]; ++b) {
            if (trans_b) {
              m(b, a) = d[a * L.wdims[1] + b];
            } else {
              m(a, b) = d[a * L.wdims[1] + b];
            }
          }
        }
        L.w.push_back(std::move(m));
      }
      if (!L.w.front().allFinite()) {
        skip("weight '" + w + "' holds Inf or NaN");
        continue;
      }
      const auto mit = node_macs.find(key);
      if (mit != node_macs.end()) L.macs_before = mit->second;
      const int64_t widest = std::min(L.k, L.n);
      L.multiple = widest < kNarrowLayer ? 1 : multiple_;
      layers.push_back(std::move(L));
    }
    return layers;
  }

  // Candidate nodes from which a graph output is reached without another matrix product or convolution.
  static std::set<size_t> OutputLayers(const Graph& g) {
    std::unordered_map<std::string, std::vector<size_t>> consumers;
    for (size_t i = 0; i < g.nodes.size(); ++i) {
      for (const auto& in : g.nodes[i].inputs) {
        if (!in.empty()) consumers[in].push_back(i);
      }
    }
    const auto outputs = passes::GraphOutputNames(g);
    auto is_product = [](const Node& n) {
      static const std::set<std::string> ops = {"Gemm", "MatMul", "Conv", "ConvTranspose", "MatMulInteger",
                                                "ConvInteger", "QLinearConv", "QLinearMatMul", "Einsum",
                                                "LSTM", "GRU", "RNN"};
      return n.IsDefaultDomain() && ops.count(n.op_type) > 0;
    };
    std::set<size_t> out;
    for (size_t i = 0; i < g.nodes.size(); ++i) {
      if (!IsCandidateOp(g.nodes[i])) continue;
      std::vector<std::string> stack(g.nodes[i].outputs.begin(), g.nodes[i].outputs.end());
      std::set<std::string> seen;
      bool reaches = false;
      while (!stack.empty() && !reaches) {
        const std::string v = stack.back();
        stack.pop_back();
        if (v.empty() || !seen.insert(v).second) continue;
        if (outputs.count(v)) reaches = true;
        const auto c = consumers.find(v);
        if (c == consumers.end()) continue;
        for (size_t n : c->second) {
          if (is_product(g.nodes[n])) continue;
          for (const auto& o : g.nodes[n].outputs) stack.push_back(o);
        }
      }
      if (reaches) out.insert(i);
    }
    return out;
  }

  // Output and intermediate positions of the spatial scheme, from the inferred input shape; spatial_ok
  // stays false when they are unknown or the padding is not explicit.
  static void SpatialGeometry(const Node& n, const Model& typed, bool inferred, Layer* L) {
    if (!inferred) return;
    const std::string auto_pad = n.AttrString("auto_pad", "NOTSET");
    if (auto_pad != "NOTSET" && auto_pad != "VALID") return;
    const TypeInfo* ti = FindValueType(typed.graph, n.inputs[0]);
    if (ti == nullptr || !ti->has_shape || ti->shape.size() != 4) return;
    if (!ti->shape[2].is_fixed() || !ti->shape[3].is_fixed()) return;
    const int64_t hin = *ti->shape[2].value, win = *ti->shape[3].value;
    const auto strides = n.AttrInts("strides", {1, 1});
    const auto dil = n.AttrInts("dilations", {1, 1});
    auto pads = n.AttrInts("pads", {0, 0, 0, 0});
    if (auto_pad == "VALID") pads = {0, 0, 0, 0};
    if (strides.size() != 2 || dil.size() != 2 || pads.size() != 4) return;
    auto out = [](int64_t in, int64_t p0, int64_t p1, int64_t k, int64_t s, int64_t dl) -> int64_t {
      const int64_t span = (k - 1) * dl + 1, padded = in + p0 + p1;
      return s > 0 && padded >= span ? (padded - span) / s + 1 : 0;
    };
    const int64_t hout = out(hin, pads[0], pads[2], L->kh, strides[0], dil[0]);
    const int64_t wout = out(win, pads[1], pads[3], L->kw, strides[1], dil[1]);
    if (hout <= 0 || wout <= 0) return;
    L->positions_out = hout * wout;
    L->positions_mid = hout * win;
    L->spatial_ok = true;
  }

  // Accumulates every layer's input Gram matrix on the calibration data, as many layers per run as fit.
  static void Gather(const Model& model, std::vector<Layer>& layers, PassContext& ctx) {
    const Graph& g = model.graph;
    size_t next = 0;
    int64_t runs = 0;
    while (next < layers.size()) {
      std::vector<size_t> batch;
      std::vector<GramAccumulator> acc;
      std::vector<Layout> layouts;
      int64_t entries = 0;
      for (; next < layers.size(); ++next) {
        Layer& L = layers[next];
        const int64_t k1 = L.k + 1;
        if (L.k > kMaxReconstructK || L.groups * k1 * k1 > kMaxGramEntries) {
          L.no_data_why = "its input has " + std::to_string(L.k) + " features per group (more than " +
                          std::to_string(kMaxReconstructK) + " for the Gram matrix)";
          continue;
        }
        const int64_t e = L.groups * k1 * k1;
        if (!batch.empty() && entries + e > kGramEntriesPerRun) break;
        Layout layout;
        std::string why;
        const Node& n = g.nodes[L.node];
        if (!passes::MakeLayout(n, L.wdims, &layout, &why)) {
          L.no_data_why = why;
          continue;
        }
        GramAccumulator a;
        a.gram = true;
        a.ones = true;
        a.k = k1;
        a.groups = L.groups;
        a.h.assign(static_cast<size_t>(L.groups), Eigen::MatrixXd::Zero(k1, k1));
        batch.push_back(next);
        acc.push_back(std::move(a));
        layouts.push_back(layout);
        entries += e;
      }
      if (batch.empty()) continue;
      std::vector<std::string> names;
      for (size_t b : batch) names.push_back(g.nodes[layers[b].node].inputs[0]);
      ctx.calibration()->ForEachBatch(model, names, [&](size_t i, const Tensor& value) {
        const Layer& L = layers[batch[i]];
        passes::Accumulate(g.nodes[L.node], *g.FindInitializer(L.weight), layouts[i], value, &acc[i]);
      });
      ++runs;
      for (size_t i = 0; i < batch.size(); ++i) {
        Layer& L = layers[batch[i]];
        if (!acc[i].gram) {
          L.no_data_why = acc[i].why;
          continue;
        }
        for (auto& h : acc[i].h) L.h.push_back(h.selfadjointView<Eigen::Lower>());
        // Rows of X per group: the count of the constant column.
        const double rows = L.h.front()(L.k, L.k);
        if (rows < static_cast<double>(L.k)) {
          ctx.Note("low_rank: " + L.key + ": the calibration data gives " + std::to_string(static_cast<int64_t>(rows)) +
                   " input rows for " + std::to_string(L.k) + " input features: the whitening is regularized where "
                   "the data says nothing; more calibration samples make it data-aware everywhere");
        }
      }
    }
    ctx.Count("calibration_runs", runs);
  }

  void Factorize(Layer& L, bool whitened, PassContext& ctx) const {
    std::vector<Eigen::MatrixXd> ls;
    std::vector<double> lambdas;
    bool white = whitened && !L.h.empty();
    if (whitened && L.h.empty()) {
      ctx.Note("low_rank: " + L.key + ": plain SVD, no calibration statistics: " +
               (L.no_data_why.empty() ? std::string("none gathered") : L.no_data_why));
    }
    if (white) {
      for (const auto& h : L.h) {
        Eigen::MatrixXd l;
        double lambda = 0;
        if (!Whitening(h, L.k, &l, &lambda)) {
          ctx.Note("low_rank: " + L.key + ": plain SVD: its input is zero or not finite on the calibration data");
          white = false;
          break;
        }
        ls.push_back(std::move(l));
        lambdas.push_back(lambda);
      }
    }
    L.channel = Decompose(L.w, white ? &ls : nullptr, white ? &lambdas : nullptr);
    if (!L.channel.ok && white) {
      ctx.Note("low_rank: " + L.key + ": plain SVD: the whitened decomposition was not finite");
      white = false;
      L.channel = Decompose(L.w, nullptr);
    }
    L.method = white ? "whitened" : "svd";
    if (!white && !L.h.empty() && L.channel.ok) {
      for (size_t g = 0; g < L.h.size(); ++g) {
        const auto hk = L.h[g].topLeftCorner(L.k, L.k);
        L.channel.q.push_back((L.channel.u[g].transpose() * hk * L.channel.u[g]).diagonal());
      }
    }
    if (L.spatial_ok) {
      L.spatial = Decompose(L.ws, nullptr);
      L.spatial_ok = L.spatial.ok;
      L.refit_spatial = whitened && !L.h.empty();
    }
  }

  // The options a layer can take: every grid rank of every scheme that saves parameters (and MACs where
  // they are known), cheapest first.
  static std::vector<Choice> Options(const Layer& L) {
    std::vector<Choice> out;
    auto add = [&](Scheme s, int64_t max_rank) {
      for (int64_t r = L.multiple; r <= max_rank; r += L.multiple) {
        const Choice c{s, r};
        if (Params(L, c) >= Params(L, Choice{})) break;
        const auto m = Macs(L, c);
        if (m && L.macs_before && *m >= *L.macs_before) continue;
        out.push_back(c);
      }
    };
    if (L.channel.ok) add(L.op == "Conv" ? Scheme::kChannel : Scheme::kMatrix, L.channel.max_rank);
    if (L.spatial_ok) add(Scheme::kSpatial, L.spatial.max_rank);
    return out;
  }

  // Relative error of a choice (see Error): spectrum tails where they are exact, else the exact product.
  static double RelativeError(const Layer& L, const Choice& c) {
    if (c.rank == 0) return 0;
    if (L.h.empty()) {  // the weight's relative error, from the spectrum (the Frobenius norm survives reshaping)
      const Factors& f = c.scheme == Scheme::kSpatial ? L.spatial : L.channel;
      const double total = Total(f);
      return total > 0 ? Tail(f, c.rank) / total : 0.0;
    }
    return LayerError(L, c.scheme, c.rank).Relative();
  }

  // Among a layer's options at its rank, the one with fewer MACs (then fewer parameters).
  static Choice Cheaper(const Layer& L, const Choice& a, const Choice& b) {
    if (a.rank == 0) return b;
    if (b.rank == 0) return a;
    const auto ma = Macs(L, a), mb = Macs(L, b);
    if (ma && mb && *ma != *mb) return *ma < *mb ? a : b;
    return Params(L, a) <= Params(L, b) ? a : b;
  }

  std::vector<Choice> Choose(const Model& model, const std::vector<Layer>& layers, PassContext& ctx) const {
    std::vector<Choice> choices(layers.size());
    std::vector<std::vector<Choice>> options(layers.size());
    for (size_t i = 0; i < layers.size(); ++i) options[i] = Options(layers[i]);
    if (params_ > 0 || macs_ > 0) return Budget(model, layers, options, ctx);
    for (size_t i = 0; i < layers.size(); ++i) {
      const Layer& L = layers[i];
      Choice best;
      for (Scheme s : {Scheme::kMatrix, Scheme::kChannel, Scheme::kSpatial}) {
        Choice pick;
        if (energy_ > 0) {
          const Factors& f = s == Scheme::kSpatial ? L.spatial : L.channel;
          const bool available = s == Scheme::kSpatial ? L.spatial_ok : (L.channel.ok && (s == Scheme::kChannel) == (L.op == "Conv"));
          if (!available) continue;
          const double total = Total(f);
          int64_t r = f.max_rank;
          double kept = 0;
          for (int64_t j = 0; j < f.max_rank; ++j) {
            kept = total - Tail(f, j + 1);
            if (total <= 0 || kept >= energy_ * total * (1 - 1e-12)) {
              r = j + 1;
              break;
            }
          }
          r = (r + L.multiple - 1) / L.multiple * L.multiple;
          for (const auto& o : options[i]) {
            if (o.scheme == s && o.rank == r) pick = o;
          }
        } else {
          const int64_t budget = static_cast<int64_t>(std::floor(ratio_ * static_cast<double>(Params(L, Choice{}))));
          for (const auto& o : options[i]) {
            if (o.scheme == s && Params(L, o) <= budget) pick = o;  // options ascend in rank
          }
        }
        best = Cheaper(L, best, pick);
      }
      if (best.rank == 0) {
        ctx.Note("low_rank: " + L.key + " kept: " + NoSavingWhy(L));
      }
      choices[i] = best;
    }
    return choices;
  }

  std::string NoSavingWhy(const Layer& L) const {
    std::string shape = std::to_string(L.k) + " x " + std::to_string(L.n);
    if (L.groups > 1) shape += " in " + std::to_string(L.groups) + " groups";
    if (energy_ > 0) {
      return "keeping " + std::to_string(energy_) + " of the spectrum's energy of its " + shape +
             " weight needs a rank that saves no parameters or MACs";
    }
    return "no rank on its grid (multiples of " + std::to_string(L.multiple) + ") keeps at most " +
           std::to_string(ratio_) + " of its " + shape + " weight's parameters and saves MACs";
  }

  std::vector<Choice> Budget(const Model& model, const std::vector<Layer>& layers,
                             const std::vector<std::vector<Choice>>& options, PassContext& ctx) const {
    const bool by_macs = macs_ > 0;
    const double fraction = by_macs ? macs_ : params_;
    const int64_t total = by_macs ? model_macs_ : CountParameters(model);
    auto cost = [&](const Layer& L, const Choice& c) -> int64_t {
      if (by_macs) {
        const auto m = Macs(L, c);
        return m ? *m : 0;
      }
      return Params(L, c);
    };
    const double limit = fraction * static_cast<double>(total);
    std::vector<Choice> choices(layers.size());
    std::vector<std::vector<double>> errors(layers.size());
    // The exact output error of a spatial option costs a K x K x N product per rank: above
    // kMaxSpatialProbeFlops per layer, only every n-th spatial rank is a candidate.
    std::vector<std::vector<Choice>> probed(options.size());
    for (size_t i = 0; i < layers.size(); ++i) {
      const Layer& L = layers[i];
      int64_t spatial = 0;
      for (const auto& o : options[i]) spatial += o.scheme == Scheme::kSpatial;
      const double per_rank = static_cast<double>(L.groups) * static_cast<double>(L.k) * static_cast<double>(L.k) *
                              static_cast<double>(L.n);
      const int64_t keep = L.h.empty() ? spatial
                                       : std::max<int64_t>(1, static_cast<int64_t>(kMaxSpatialProbeFlops / per_rank));
      const int64_t step = spatial > keep ? (spatial + keep - 1) / keep : 1;
      int64_t seen = 0;
      for (const auto& o : options[i]) {
        if (o.scheme == Scheme::kSpatial && (seen++ % step) != 0) continue;
        probed[i].push_back(o);
      }
    }
    const std::vector<std::vector<Choice>>& candidates = probed;
    for (size_t i = 0; i < layers.size(); ++i) {
      for (const auto& o : candidates[i]) errors[i].push_back(RelativeError(layers[i], o));
    }
    std::vector<double> current(layers.size(), 0.0);
    int64_t now = total;
    int64_t steps = 0;
    while (static_cast<double>(now) > limit) {
      // The move with the least added error per unit saved, over every layer and every cheaper option.
      double best_score = std::numeric_limits<double>::infinity();
      size_t best_layer = 0, best_option = 0;
      int64_t best_saving = 0;
      for (size_t i = 0; i < layers.size(); ++i) {
        const int64_t here = cost(layers[i], choices[i]);
        for (size_t j = 0; j < candidates[i].size(); ++j) {
          const int64_t saving = here - cost(layers[i], candidates[i][j]);
          if (saving <= 0) continue;
          const double added = std::max(0.0, errors[i][j] - current[i]);
          const double score = added / static_cast<double>(saving);
          if (score < best_score || (score == best_score && saving > best_saving)) {
            best_score = score;
            best_layer = i;
            best_option = j;
            best_saving = saving;
          }
        }
      }
      if (best_saving <= 0) break;
      choices[best_layer] = candidates[best_layer][best_option];
      current[best_layer] = errors[best_layer][best_option];
      now -= best_saving;
      ++steps;
    }
    // The greedy steps are whole options and may overshoot: give the slack back, the move that removes the
    // most error per unit spent first (a layer may also return to whole), while the budget still holds.
    int64_t refills = 0;
    while (static_cast<double>(now) <= limit) {
      double best_gain = 0;
      size_t best_layer = 0;
      std::optional<size_t> best_option;  // nullopt: whole again
      int64_t best_extra = 0;
      bool found = false;
      for (size_t i = 0; i < layers.size(); ++i) {
        if (choices[i].rank == 0) continue;
        const int64_t here = cost(layers[i], choices[i]);
        auto consider = [&](std::optional<size_t> j, int64_t to, double error) {
          const int64_t extra = to - here;
          if (extra <= 0 || static_cast<double>(now + extra) > limit) return;
          const double gain = (current[i] - error) / static_cast<double>(extra);
          if (gain > best_gain) {
            best_gain = gain;
            best_layer = i;
            best_option = j;
            best_extra = extra;
            found = true;
          }
        };
        for (size_t j = 0; j < candidates[i].size(); ++j) consider(j, cost(layers[i], candidates[i][j]), errors[i][j]);
        consider(std::nullopt, cost(layers[i], Choice{}), 0.0);
      }
      if (!found) break;
      choices[best_layer] = best_option ? candidates[best_layer][*best_option] : Choice{};
      current[best_layer] = best_option ? errors[best_layer][*best_option] : 0.0;
      now += best_extra;
      ++refills;
    }
    json target;
    target["refills"] = refills;
    target["by"] = by_macs ? "macs" : "params";
    target["fraction"] = fraction;
    target["before"] = total;
    target["after"] = now;
    target["steps"] = steps;
    ctx.details()["budget"] = target;
    if (static_cast<double>(now) > limit) {
      ThrowGate("low_rank: " + std::string(by_macs ? "MACs" : "parameters") + " budget " + Fixed4(fraction) +
                " cannot be met: factorizing every eligible layer at its smallest rank keeps " +
                Fixed4(total > 0 ? static_cast<double>(now) / static_cast<double>(total) : 1.0) + " of " +
                std::to_string(total));
    }
    return choices;
  }

  static std::string Fixed4(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.4f", v);
    return buf;
  }

  [[noreturn]] static void ThrowGate(const std::string& message) {
    throw Error(ErrorKind::kAccuracyGate, message);
  }

  void Rewrite(Model& model, const std::vector<Layer>& layers, const std::vector<Choice>& choices,
               PassContext& ctx) const {
    Graph& g = model.graph;
    passes::NameGenerator names(g);
    std::unordered_map<size_t, std::vector<Node>> replacement;
    std::vector<Tensor> added;
    std::unordered_set<std::string> removed;
    json rows = json::array();
    for (size_t i = 0; i < layers.size(); ++i) {
      const Layer& L = layers[i];
      const Choice& c = choices[i];
      if (c.rank == 0) continue;
      const Node& n = g.nodes[L.node];
      const Factors& f = c.scheme == Scheme::kSpatial ? L.spatial : L.channel;
      const auto r = c.rank;
      const std::string mid = names.Make(L.weight + "_lr");
      const std::string wa = names.Make(L.weight + "_lr_a"), wb = names.Make(L.weight + "_lr_b");
      Node first, second;
      first.name = n.name.empty() ? std::string() : names.Make(n.name + "_lr");
      second.name = n.name;
      first.op_type = second.op_type = n.op_type;
      first.domain = second.domain = n.domain;
      first.inputs = {n.inputs[0], wa};
      first.outputs = {mid};
      second.inputs = {mid, wb};
      second.outputs = n.outputs;
      Tensor ta, tb;
      if (c.scheme == Scheme::kMatrix) {
        Eigen::MatrixXd a, b;
        GroupFactors(f, 0, r, &a, &b);
        ta = ToTensor({L.k, r}, [&](int64_t x, int64_t y) { return a(x, y); });
        tb = ToTensor({r, L.n}, [&](int64_t x, int64_t y) { return b(x, y); });
        if (n.op_type == "Gemm") {
          // Before opset 11 Gemm's C is required: the first product is a MatMul (Collect keeps a
          // Gemm with transA there) and alpha moves to the second Gemm, which has the original C.
          const bool c_required = model.OpsetVersion("") < 11;
          if (c_required) first.op_type = "MatMul";
          if (const Attribute* at = n.FindAttr("transA")) {
            if (!c_required) first.attributes.push_back(*at);
          }
          if (const Attribute* at = n.FindAttr("alpha")) (c_required ? second : first).attributes.push_back(*at);
          if (n.inputs.size() > 2 && !n.inputs[2].empty()) {
            second.inputs.push_back(n.inputs[2]);
            if (const Attribute* at = n.FindAttr("beta")) second.attributes.push_back(*at);
            if (const Attribute* at = n.FindAttr("broadcast")) second.attributes.push_back(*at);  // Gemm < 7
          }
        }
      } else {
        const int64_t rank = static_cast<int64_t>(L.wdims.size()) - 2;
        std::vector<Eigen::MatrixXd> as(static_cast<size_t>(L.groups)), bs(static_cast<size_t>(L.groups));
        for (size_t grp = 0; grp < as.size(); ++grp) {
          if (c.scheme == Scheme::kSpatial) {
            SpatialFactors(L, grp, r, &as[grp], &bs[grp]);
          } else {
            GroupFactors(f, grp, r, &as[grp], &bs[grp]);
          }
        }
        if (n.inputs.size() > 2 && !n.inputs[2].empty()) second.inputs.push_back(n.inputs[2]);
        const Attribute group = Attribute::Int("group", L.groups);
        if (c.scheme == Scheme::kChannel) {
          // First: [g r, cg, k...] with every attribute of the original; second: 1x1 [O, r, 1...].
          std::vector<int64_t> d1 = L.wdims;
          d1[0] = L.groups * r;
          ta = Tensor(DType::kFloat, d1);
          float* p = ta.mutable_data<float>();
          for (int64_t grp = 0; grp < L.groups; ++grp) {
            for (int64_t j = 0; j < r; ++j) {
              for (int64_t e = 0; e < L.k; ++e) p[(grp * r + j) * L.k + e] = static_cast<float>(as[grp](e, j));
            }
          }
          first.attributes = n.attributes;
          std::vector<int64_t> d2(static_cast<size_t>(rank + 2), 1);
          d2[0] = L.wdims[0];
          d2[1] = r;
          tb = Tensor(DType::kFloat, d2);
          float* q = tb.mutable_data<float>();
          for (int64_t grp = 0; grp < L.groups; ++grp) {
            for (int64_t o = 0; o < L.og; ++o) {
              for (int64_t j = 0; j < r; ++j) q[(grp * L.og + o) * r + j] = static_cast<float>(bs[grp](j, o));
            }
          }
          second.attributes.push_back(group);
          second.attributes.push_back(Attribute::Ints("kernel_shape", std::vector<int64_t>(static_cast<size_t>(rank), 1)));
        } else {
          const auto strides = n.AttrInts("strides", {1, 1});
          const auto dil = n.AttrInts("dilations", {1, 1});
          auto pads = n.AttrInts("pads", {0, 0, 0, 0});
          if (n.AttrString("auto_pad", "NOTSET") == "VALID") pads = {0, 0, 0, 0};
          ta = Tensor(DType::kFloat, {L.groups * r, L.cg, L.kh, 1});
          float* p = ta.mutable_data<float>();
          for (int64_t grp = 0; grp < L.groups; ++grp) {
            for (int64_t j = 0; j < r; ++j) {
              for (int64_t e = 0; e < L.cg * L.kh; ++e) p[(grp * r + j) * L.cg * L.kh + e] = static_cast<float>(as[grp](e, j));
            }
          }
          tb = Tensor(DType::kFloat, {L.wdims[0], r, 1, L.kw});
          float* q = tb.mutable_data<float>();
          for (int64_t grp = 0; grp < L.groups; ++grp) {
            for (int64_t o = 0; o < L.og; ++o) {
              for (int64_t j = 0; j < r; ++j) {
                for (int64_t x = 0; x < L.kw; ++x) {
                  q[((grp * L.og + o) * r + j) * L.kw + x] = static_cast<float>(bs[grp](j, o * L.kw + x));
                }
              }
            }
          }
          first.attributes = {group, Attribute::Ints("kernel_shape", {L.kh, 1}),
                              Attribute::Ints("strides", {strides[0], 1}), Attribute::Ints("dilations", {dil[0], 1}),
                              Attribute::Ints("pads", {pads[0], 0, pads[2], 0})};
          second.attributes = {group, Attribute::Ints("kernel_shape", {1, L.kw}),
                               Attribute::Ints("strides", {1, strides[1]}), Attribute::Ints("dilations", {1, dil[1]}),
                               Attribute::Ints("pads", {0, pads[1], 0, pads[3]})};
        }
      }
      ta.set_name(wa);
      tb.set_name(wb);
      added.push_back(std::move(ta));
      added.push_back(std::move(tb));
      removed.insert(L.weight);
      replacement[L.node] = {std::move(first), std::move(second)};

      const OutputError err = LayerError(L, c.scheme, r);
      json row;
      row["node"] = L.key;
      row["op"] = L.op;
      row["weight"] = L.weight;
      row["shape"] = L.wdims;
      row["scheme"] = SchemeName(c.scheme);
      row["method"] = c.scheme != Scheme::kSpatial ? L.method : L.refit_spatial ? "refit" : "svd";
      row["rank"] = r;
      row["max_rank"] = f.max_rank;
      row["groups"] = L.groups;
      row["params_before"] = Params(L, Choice{});
      row["params_after"] = Params(L, c);
      const auto mb = L.macs_before, ma = Macs(L, c);
      row["macs_before"] = mb ? json(*mb) : json(nullptr);
      row["macs_after"] = ma ? json(*ma) : json(nullptr);
      // Fidelity of the layer's own output on the calibration data (the original input fed to both).
      if (!L.h.empty()) {
        // A Gemm computes alpha X W + beta C: ||alpha X W + beta 1 b||^2 = alpha^2 ||X W||^2
        // + 2 alpha beta b^T W^T (X^T 1) + beta^2 rows ||b||^2; the error scales by alpha^2.
        const double alpha = L.op == "Gemm" ? double{n.AttrFloat("alpha", 1.0f)} : 1.0;
        const double beta = L.op == "Gemm" ? double{n.AttrFloat("beta", 1.0f)} : 1.0;
        double signal = alpha * alpha * err.signal;
        const Tensor* bt = L.bias > 0 ? g.FindInitializer(n.inputs[2]) : nullptr;
        if (bt != nullptr && bt->dtype() == DType::kFloat && (bt->numel() == L.groups * L.n || bt->numel() == 1)) {
          for (size_t grp = 0; grp < L.h.size(); ++grp) {
            Eigen::VectorXd b(L.n);
            for (int64_t o = 0; o < L.n; ++o) {
              b(o) = bt->data<float>()[bt->numel() == 1 ? 0 : static_cast<int64_t>(grp) * L.n + o];
            }
            const Eigen::VectorXd sums = L.h[grp].col(L.k).head(L.k);
            signal += 2.0 * alpha * beta * b.dot(L.w[grp].transpose() * sums) +
                      beta * beta * L.h[grp](L.k, L.k) * b.squaredNorm();
          }
        }
        row["sqnr_db"] = Sqnr(signal, alpha * alpha * err.error);
      } else {
        row["sqnr_db"] = nullptr;
      }
      double wsig = 0, werr = 0;
      for (size_t grp = 0; grp < L.w.size(); ++grp) {
        wsig += L.w[grp].squaredNorm();
        werr += (L.w[grp] - Approximation(L, c.scheme, grp, r)).squaredNorm();
      }
      row["weight_sqnr_db"] = Sqnr(wsig, werr);
      rows.push_back(row);
      ctx.Count("factorized_layers");
      ctx.Count("parameters_removed", Params(L, Choice{}) - Params(L, c));
    }
    if (replacement.empty()) return;
    std::vector<Node> nodes;
    nodes.reserve(g.nodes.size() + replacement.size());
    for (size_t i = 0; i < g.nodes.size(); ++i) {
      const auto it = replacement.find(i);
      if (it == replacement.end()) {
        nodes.push_back(std::move(g.nodes[i]));
      } else {
        for (auto& n : it->second) nodes.push_back(std::move(n));
      }
    }
    g.nodes = std::move(nodes);
    passes::EraseInitializers(g, removed);
    passes::EraseValueInfo(g, removed);
    for (auto& t : added) passes::AddInitializer(model, g, std::move(t));
    ctx.details()["layers"] = rows;
  }

  static json Sqnr(double signal, double noise) {
    if (noise <= 0 || signal <= 0) return nullptr;  // identical (+inf) or no signal: null
    return 10.0 * std::log10(signal / noise);
  }

  template <typename Fn>
  static Tensor ToTensor(std::vector<int64_t> dims, Fn at) {
    Tensor t(DType::kFloat, dims);
    float* p = t.mutable_data<float>();
    for (int64_t x = 0; x < dims[0]; ++x) {
      for (int64_t y = 0; y < dims[1]; ++y) p[x * dims[1] + y] = static_cast<float>(at(x, y));
    }
    return t;
  }

  double ratio_, energy_, params_, macs_;
  std::string method_;
  int64_t multiple_;
  bool keep_output_layers_;
  int64_t model_macs_ = 0;  // CountMacs of the model as the pass found it (Collect), for `macs`
  std::set<std::string> exclude_, only_;
};

}  // namespace

std::unique_ptr<Pass> MakeLowRankPass(const json& options) { return std::make_unique<LowRankPass>(options); }

}  // namespace compress
