#include "reconstruct.h"

#include <algorithm>
#include <cmath>

namespace compress::passes {

// The layout of input 1 of `n` with dims `w`, or an empty string `why` on success.
bool MakeLayout(const Node& n, const std::vector<int64_t>& w, Layout* out, std::string* why) {
  Layout L;
  L.act = n.inputs.empty() ? std::string() : n.inputs[0];
  if (n.op_type == "Conv" || n.op_type == "ConvTranspose") {
    if (w.size() < 3) {
      *why = "weight of rank " + std::to_string(w.size()) + ", expected >= 3";
      return false;
    }
    const int64_t group = n.AttrInt("group", 1);
    int64_t k = 1;
    for (size_t i = 2; i < w.size(); ++i) k *= w[i];
    if (group < 1 || k < 1) {
      *why = "invalid group or kernel";
      return false;
    }
    L.lines = k;
    L.line_stride = 1;
    L.act_axis = 1;
    if (n.op_type == "Conv") {
      L.kind = Layout::kConv;
      if (w[0] % group != 0) {
        *why = "output channels not divisible by group";
        return false;
      }
      L.rows = w[0];
      L.len = w[1];
      L.p_stride = k;
      L.row_stride = w[1] * k;
      L.rows_per_group = w[0] / group;
      L.channels = w[1] * group;
    } else {
      L.kind = Layout::kConvTranspose;
      if (w[0] % group != 0) {
        *why = "input channels not divisible by group";
        return false;
      }
      L.len = w[0] / group;
      L.rows_per_group = w[1];
      L.rows = w[1] * group;
      L.p_stride = w[1] * k;
      L.group_stride = L.len * w[1] * k;
      L.channels = w[0];
    }
  } else {  // Gemm, MatMul
    if (w.size() != 2) {
      *why = "weight of rank " + std::to_string(w.size()) + ", expected 2";
      return false;
    }
    const bool trans_b = n.op_type == "Gemm" && n.AttrInt("transB", 0) != 0;
    const bool trans_a = n.op_type == "Gemm" && n.AttrInt("transA", 0) != 0;
    L.kind = Layout::kMatrix;
    L.rows = trans_b ? w[0] : w[1];
    L.len = trans_b ? w[1] : w[0];
    L.p_stride = trans_b ? 1 : w[1];
    L.row_stride = trans_b ? w[1] : 1;
    L.channels = L.len;
    L.act_axis = n.op_type == "Gemm" ? (trans_a ? 0 : 1) : -1;
  }
  *out = L;
  return true;
}

// The patch geometry of Conv `n` with weight dims `w` on an input of dims `x`, or false with `why`.
bool MakeConvGeometry(const Node& n, const std::vector<int64_t>& w, const std::vector<int64_t>& x, ConvGeometry* out,
                      std::string* why) {
  const size_t r = w.size() - 2;
  if (x.size() != r + 2) {
    *why = "input of rank " + std::to_string(x.size()) + " for a weight of rank " + std::to_string(w.size());
    return false;
  }
  const std::vector<int64_t> strides = n.AttrInts("strides", std::vector<int64_t>(r, 1));
  const std::vector<int64_t> dil = n.AttrInts("dilations", std::vector<int64_t>(r, 1));
  std::vector<int64_t> pads = n.AttrInts("pads", std::vector<int64_t>(2 * r, 0));
  const std::string auto_pad = n.AttrString("auto_pad", "NOTSET");
  if (strides.size() != r || dil.size() != r || pads.size() != 2 * r) {
    *why = "strides, dilations or pads of the wrong length";
    return false;
  }
  std::vector<int64_t> outd(r);
  for (size_t d = 0; d < r; ++d) {
    const int64_t in = x[2 + d], kd = w[2 + d], s = strides[d], dl = dil[d];
    if (in < 1 || kd < 1 || s < 1 || dl < 1) {
      *why = "invalid input size, kernel, stride or dilation";
      return false;
    }
    const int64_t span = (kd - 1) * dl + 1;
    if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
      outd[d] = (in + s - 1) / s;
      const int64_t total = std::max<int64_t>(0, (outd[d] - 1) * s + span - in);
      pads[d] = auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
      pads[d + r] = total - pads[d];
    } else if (auto_pad == "VALID") {
      pads[d] = pads[d + r] = 0;
      outd[d] = in >= span ? (in - span) / s + 1 : 0;
    } else if (auto_pad == "NOTSET") {
      const int64_t padded = in + pads[d] + pads[d + r];
      outd[d] = padded >= span ? (padded - span) / s + 1 : 0;
    } else {
      *why = "auto_pad " + auto_pad;
      return false;
    }
  }
  ConvGeometry G;
  for (size_t d = 0; d < r; ++d) {
    G.k *= w[2 + d];
    G.positions *= outd[d];
  }
  G.offsets.assign(static_cast<size_t>(G.positions * G.k), -1);
  std::vector<int64_t> o(r, 0), kk(r, 0);
  for (int64_t p = 0; p < G.positions; ++p) {
    int64_t rem = p;
    for (size_t d = r; d-- > 0;) {
      o[d] = rem % outd[d];
      rem /= outd[d];
    }
    for (int64_t q = 0; q < G.k; ++q) {
      int64_t qr = q;
      for (size_t d = r; d-- > 0;) {
        kk[d] = qr % w[2 + d];
        qr /= w[2 + d];
      }
      int64_t flat = 0;
      bool inside = true;
      for (size_t d = 0; d < r && inside; ++d) {
        const int64_t i = o[d] * strides[d] - pads[d] + kk[d] * dil[d];
        inside = i >= 0 && i < x[2 + d];
        flat = flat * x[2 + d] + i;
      }
      if (inside) G.offsets[static_cast<size_t>(p * G.k + q)] = flat;
    }
  }
  *out = std::move(G);
  return true;
}

// Adds one batch of reader `n`'s input to `a`.
void Accumulate(const Node& n, const Tensor& weight, const Layout& L, const Tensor& value, GramAccumulator* a) {
  const auto& dims = value.dims();
  const int64_t rank = value.rank();
  const float* v = value.data<float>();
  if (rank == 0) {
    a->channels_ok = false;
    a->gram = false;
    a->why = "scalar input";
    return;
  }
  const int64_t axis = L.act_axis < 0 ? L.act_axis + rank : L.act_axis;
  if (axis < 0 || axis >= rank) {
    a->channels_ok = false;
    a->gram = false;
    a->why = "input of rank " + std::to_string(rank);
    return;
  }
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= dims[static_cast<size_t>(d)];
  for (int64_t d = axis + 1; d < rank; ++d) inner *= dims[static_cast<size_t>(d)];
  const int64_t channels = dims[static_cast<size_t>(axis)];
  if (a->sum_sq.empty() && a->channels_ok) a->sum_sq.assign(static_cast<size_t>(channels), 0.0);
  if (static_cast<int64_t>(a->sum_sq.size()) != channels || channels != L.channels) {
    a->channels_ok = false;
    a->gram = false;
    a->why = "input with " + std::to_string(channels) + " channels, the weight expects " + std::to_string(L.channels);
    return;
  }
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t c = 0; c < channels; ++c) {
      const float* p = v + (o * channels + c) * inner;
      double s = 0;
      for (int64_t k = 0; k < inner; ++k) s += static_cast<double>(p[k]) * static_cast<double>(p[k]);
      a->sum_sq[static_cast<size_t>(c)] += s;
    }
  }
  if (!a->gram) return;
  const int64_t K = a->k;
  const int64_t data_k = a->ones ? K - 1 : K;
  auto budget = [&](double positions) {
    a->flops += positions * static_cast<double>(K) * static_cast<double>(K) * static_cast<double>(a->groups);
    if (a->flops <= kMaxGramFlops) return true;
    a->gram = false;
    a->why = "accumulating its K x K input Gram matrix would take over " + std::to_string(kMaxGramFlops) + " flops";
    a->h.clear();
    return false;
  };
  Eigen::MatrixXd cols;
  if (L.kind == Layout::kMatrix) {
    // Positions are (o, i); column c of X is the value at (o, c, i).
    const int64_t positions = outer * inner;
    if (!budget(static_cast<double>(positions))) return;
    for (int64_t p0 = 0; p0 < positions; p0 += kGramChunk) {
      const int64_t m = std::min(kGramChunk, positions - p0);
      cols.resize(K, m);
      for (int64_t j = 0; j < m; ++j) {
        const int64_t o = (p0 + j) / inner, i = (p0 + j) % inner;
        for (int64_t c = 0; c < data_k; ++c) cols(c, j) = v[(o * channels + c) * inner + i];
        if (a->ones) cols(data_k, j) = 1.0;
      }
      a->h[0].selfadjointView<Eigen::Lower>().rankUpdate(cols);
    }
    return;
  }
  // Conv: im2col patches of each group, patch element c * k + q (the weight's own order within a row).
  if (a->geometry_dims != dims) {
    std::string why;
    if (!MakeConvGeometry(n, weight.dims(), dims, &a->geometry, &why)) {
      a->gram = false;
      a->why = why;
      a->h.clear();
      return;
    }
    a->geometry_dims = dims;
  }
  const ConvGeometry& G = a->geometry;
  const int64_t batch = dims[0];
  const int64_t cg = L.len, spatial = inner;
  if (!budget(static_cast<double>(batch * G.positions))) return;
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t grp = 0; grp < a->groups; ++grp) {
      const float* base = v + (b * channels + grp * cg) * spatial;
      for (int64_t p0 = 0; p0 < G.positions; p0 += kGramChunk) {
        const int64_t m = std::min(kGramChunk, G.positions - p0);
        cols.resize(K, m);
        for (int64_t j = 0; j < m; ++j) {
          const int64_t* off = G.offsets.data() + (p0 + j) * G.k;
          for (int64_t c = 0; c < cg; ++c) {
            const float* ch = base + c * spatial;
            for (int64_t q = 0; q < G.k; ++q) cols(c * G.k + q, j) = off[q] >= 0 ? ch[off[q]] : 0.0f;
          }
          if (a->ones) cols(data_k, j) = 1.0;
        }
        a->h[static_cast<size_t>(grp)].selfadjointView<Eigen::Lower>().rankUpdate(cols);
      }
    }
  }
}

bool RefitRow(const Eigen::MatrixXd& h, double lambda, const Eigen::VectorXd& w, const std::vector<int64_t>& S,
              const std::vector<int64_t>& P, Eigen::VectorXd* out) {
  const auto ns = static_cast<Eigen::Index>(S.size());
  Eigen::MatrixXd hss(ns, ns);
  Eigen::VectorXd rhs = Eigen::VectorXd::Zero(ns);
  for (Eigen::Index x = 0; x < ns; ++x) {
    for (Eigen::Index y = 0; y < ns; ++y) hss(x, y) = h(S[static_cast<size_t>(x)], S[static_cast<size_t>(y)]);
    hss(x, x) += lambda;
    double acc = 0;
    for (int64_t j : P) acc += h(S[static_cast<size_t>(x)], j) * w(j);
    rhs(x) = acc;
  }
  Eigen::LLT<Eigen::MatrixXd> llt(hss);
  if (llt.info() != Eigen::Success) return false;
  const Eigen::VectorXd delta = llt.solve(rhs);
  Eigen::VectorXd wn = w;
  for (int64_t j : P) wn(j) = 0.0;
  for (Eigen::Index x = 0; x < ns; ++x) wn(S[static_cast<size_t>(x)]) = w(S[static_cast<size_t>(x)]) + delta(x);
  *out = std::move(wn);
  return true;
}

}  // namespace compress::passes
