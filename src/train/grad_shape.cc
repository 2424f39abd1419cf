// Backward rules of operators that move elements without changing them.
//
// Reshape / Flatten / Squeeze / Unsqueeze / Identity keep the element order: dx is dy under x's shape.
//
// Transpose (dy transposed back by the inverse permutation) and Gather (each row of dy added into the row it
// came from) have direct rules, on the training hot path of transformers.
//
// Concat, Split, Slice, Expand, Tile and Pad copy every output element from one input element (or write a
// constant): the gradient of an input element is the sum of the gradients of the output
// elements that copied it. Which element each output copied is found by running the op's own reference
// kernel once on int64 "index" tensors (input element k of the differentiable inputs holds 1 + offset + k)
// with the node's other inputs and attributes unchanged, so every attribute and opset variant the forward
// kernel handles (negative and clamped slice bounds, negative steps, split sizes from attribute, input or
// num_outputs, pad modes, ...) is handled the same way here. A 0 in the index output is a padding constant
// (Pad's constant value is set to 0 for this run). The scatter-add runs in output order, one thread.
#include <memory>
#include <optional>

#include "compress/exec/kernel.h"
#include "compress/exec/thread_pool.h"
#include "train/grad_common.h"

namespace compress::train {

// grad_resize.cc: Resize and Upsample.
void AddResizeGrads(BackwardRegistry& r);

namespace {

void SameElementsBackward(GradContext& ctx) {
  const Tensor* dy = ctx.output_grad(0);
  if (dy == nullptr || !ctx.wanted(0)) return;
  Tensor dx = *dy;
  dx.Reshape(ctx.required_input(0).dims());
  ctx.SetInputGrad(0, std::move(dx));
}

// Runs `node`'s forward kernel (the reference one when `reference`, else the executor's fast one) on
// `inputs` and returns its outputs.
std::vector<Tensor> RunKernel(const GradContext& ctx, const Node& node, const std::vector<const Tensor*>& inputs,
                              bool reference) {
  const KernelEntry* entry = KernelRegistry::Default().Find(node.domain, node.op_type, ctx.opset(), true);
  if (entry == nullptr) ctx.Fail("no forward kernel for " + node.op_type);
  KernelInfo info;
  info.node = &node;
  info.opset = ctx.opset();
  info.constant_inputs = inputs;
  info.reference_kernels = reference;
  std::unique_ptr<ThreadPool> own;
  ThreadPool* pool = ctx.pool();
  if (pool == nullptr) {
    own = std::make_unique<ThreadPool>(1);
    pool = own.get();
  }
  info.pool = pool;
  std::unique_ptr<Kernel> kernel = entry->factory(info);
  KernelContext kctx(node, inputs, ctx.num_outputs(), *pool);
  kernel->Run(kctx);
  return std::move(kctx.outputs());
}

// Runs the node's reference kernel with the inputs in `indexed` replaced by index tensors and returns the
// outputs (int64, 1 + global element number, or 0 for a constant). `offsets[i]` is the global number of input
// i's first element.
std::vector<Tensor> RunIndexMap(const GradContext& ctx, const std::vector<size_t>& indexed,
                                std::vector<int64_t>* offsets) {
  Node node = ctx.node();
  const bool is_pad = node.op_type == "Pad";
  if (is_pad) {
    if (Attribute* v = node.FindAttr("value")) v->f = 0.0f;
  }
  std::vector<Tensor> storage(ctx.num_inputs());
  std::vector<const Tensor*> inputs(ctx.num_inputs());
  for (size_t i = 0; i < ctx.num_inputs(); ++i) inputs[i] = ctx.input(i);
  offsets->assign(ctx.num_inputs(), -1);
  int64_t next = 1;
  for (const size_t i : indexed) {
    const Tensor* in = ctx.input(i);
    if (in == nullptr) continue;
    Tensor t(DType::kInt64, in->dims());
    int64_t* p = t.mutable_data<int64_t>();
    for (int64_t e = 0; e < t.numel(); ++e) p[e] = next + e;
    (*offsets)[i] = next;
    next += t.numel();
    storage[i] = std::move(t);
    inputs[i] = &storage[i];
  }
  // Pad's constant_value input (opset 11+) must have the data's type; 0 marks "no source".
  if (is_pad && ctx.opset() >= 11 && ctx.input(2) != nullptr && ctx.input(2)->numel() > 0) {
    storage[2] = Tensor(DType::kInt64, ctx.input(2)->dims());
    inputs[2] = &storage[2];
  }
  std::vector<Tensor> outs = RunKernel(ctx, node, inputs, true);
  for (const Tensor& o : outs) {
    if (o.dtype() != DType::kInt64) ctx.Fail("the element-copy trace did not give int64 outputs");
  }
  return outs;
}

// dx_i[src] += dy_k[j] for every output element j of every output k with a gradient, src its source.
void CopyBackward(GradContext& ctx, const std::vector<size_t>& differentiable) {
  std::vector<size_t> indexed;
  bool any_grad = false;
  for (size_t k = 0; k < ctx.num_outputs(); ++k) any_grad = any_grad || ctx.output_grad(k) != nullptr;
  bool any_wanted = false;
  for (const size_t i : differentiable) {
    if (ctx.input(i) != nullptr) indexed.push_back(i);
    any_wanted = any_wanted || ctx.wanted(i);
  }
  if (!any_grad || !any_wanted) return;
  std::vector<int64_t> offsets;
  const std::vector<Tensor> maps = RunIndexMap(ctx, indexed, &offsets);
  // Owner of a global element number: the indexed input whose range holds it.
  std::vector<size_t> order;  // indexed inputs by offset (they are assigned in order)
  for (const size_t i : indexed) order.push_back(i);
  std::optional<DType> dtype;
  for (size_t k = 0; k < ctx.num_outputs(); ++k) {
    if (ctx.output_grad(k) != nullptr) dtype = ctx.output_grad(k)->dtype();
  }
  DispatchFloat(ctx, *dtype, [&](auto tag) {
    using T = decltype(tag);
    std::vector<T*> grads(ctx.num_inputs(), nullptr);
    for (const size_t i : order) {
      if (!ctx.wanted(i)) continue;
      Tensor& g = ctx.InputGrad(i);
      if (g.dtype() != *dtype) ctx.Fail("output gradients of different types");
      grads[i] = g.template mutable_data<T>();
    }
    for (size_t k = 0; k < ctx.num_outputs() && k < maps.size(); ++k) {
      const Tensor* dy = ctx.output_grad(k);
      if (dy == nullptr) continue;
      if (dy->dtype() != *dtype || dy->dims() != maps[k].dims()) {
        ctx.Fail("gradient of output " + std::to_string(k) + " has shape " + ShapeToString(dy->dims()) +
                 ", expected " + ShapeToString(maps[k].dims()));
      }
      const T* g = dy->template data<T>();
      const int64_t* src = maps[k].data<int64_t>();
      size_t owner = 0;
      for (int64_t j = 0; j < dy->numel(); ++j) {
        const int64_t s = src[j];
        if (s <= 0) continue;  // a padding constant
        // Inputs are numbered consecutively: find the one holding s (usually the same as the last).
        if (!(s >= offsets[order[owner]] && s < offsets[order[owner]] + ctx.input(order[owner])->numel())) {
          owner = 0;
          while (owner + 1 < order.size() && s >= offsets[order[owner + 1]]) ++owner;
        }
        T* dx = grads[order[owner]];
        if (dx != nullptr) dx[s - offsets[order[owner]]] += g[j];
      }
    }
  });
}

// Transpose moves every element once: dx is dy transposed by the inverse permutation, with the executor's
// own Transpose kernel (a pure copy, so the result does not depend on the thread count).
void TransposeBackward(GradContext& ctx) {
  const Tensor* dy = ctx.output_grad(0);
  if (dy == nullptr || !ctx.wanted(0)) return;
  const int64_t rank = static_cast<int64_t>(dy->rank());
  std::vector<int64_t> reversed(static_cast<size_t>(rank));
  for (int64_t i = 0; i < rank; ++i) reversed[static_cast<size_t>(i)] = rank - 1 - i;
  const std::vector<int64_t> perm = ctx.node().AttrInts("perm", reversed);
  std::vector<int64_t> inverse(static_cast<size_t>(rank), -1);
  for (size_t i = 0; i < perm.size(); ++i) {
    const int64_t p = perm[i] < 0 ? perm[i] + rank : perm[i];
    if (perm.size() != static_cast<size_t>(rank) || p < 0 || p >= rank || inverse[static_cast<size_t>(p)] >= 0) {
      ctx.Fail("perm " + ShapeToString(perm) + " is not a permutation of " + std::to_string(rank) + " axes");
    }
    inverse[static_cast<size_t>(p)] = static_cast<int64_t>(i);
  }
  Node node = ctx.node();
  node.SetAttr(Attribute::Ints("perm", inverse));
  std::vector<Tensor> outs = RunKernel(ctx, node, {dy}, false);
  if (outs.empty() || outs[0].dims() != ctx.required_input(0).dims()) ctx.Fail("transposed gradient has the wrong shape");
  ctx.SetInputGrad(0, std::move(outs[0]));
}

// Gather(data, indices, axis): every output row of `inner` elements is data's row indices[j] along `axis`,
// so dx starts at zero and each row of dy adds into the row it came from (repeated indices sum), in output
// order.
void GatherBackward(GradContext& ctx) {
  const Tensor* dy = ctx.output_grad(0);
  if (dy == nullptr || !ctx.wanted(0)) return;
  const Tensor& x = ctx.required_input(0);
  const Tensor& idx = ctx.required_input(1);
  const int64_t rank = static_cast<int64_t>(x.rank());
  if (rank < 1) ctx.Fail("data must have rank >= 1");
  const size_t axis = static_cast<size_t>(NormAxis(ctx, ctx.node().AttrInt("axis", 0), rank));
  const std::vector<int64_t>& d = x.dims();
  int64_t outer = 1, inner = 1;
  for (size_t i = 0; i < axis; ++i) outer *= d[i];
  for (size_t i = axis + 1; i < d.size(); ++i) inner *= d[i];
  const int64_t len = d[axis];
  // The source row of each index, negatives counted from the end.
  std::vector<int64_t> rows = ReadInts(idx);
  for (int64_t& k : rows) {
    const int64_t raw = k;
    if (k < 0) k += len;
    if (k < 0 || k >= len) {
      ctx.Fail("index " + std::to_string(raw) + " is out of range for axis length " + std::to_string(len));
    }
  }
  const int64_t count = static_cast<int64_t>(rows.size());
  if (dy->numel() != outer * count * inner) {
    ctx.Fail("output gradient " + ShapeToString(dy->dims()) + " does not match data " + ShapeToString(d) +
             " gathered by indices " + ShapeToString(idx.dims()));
  }
  DispatchFloat(ctx, dy->dtype(), [&](auto tag) {
    using T = decltype(tag);
    Tensor dx(x.dtype(), d);  // zeros: rows are added in
    if (x.dtype() != dy->dtype()) ctx.Fail("data and output gradient differ in element type");
    const T* g = dy->template data<T>();
    T* o = dx.template mutable_data<T>();
    for (int64_t a = 0; a < outer; ++a) {
      for (int64_t j = 0; j < count; ++j) {
        const int64_t k = rows[static_cast<size_t>(j)];
        const T* src = g + (a * count + j) * inner;
        T* dst = o + (a * len + k) * inner;
        for (int64_t e = 0; e < inner; ++e) dst[e] += src[e];
      }
    }
    ctx.SetInputGrad(0, std::move(dx));
  });
}

void AddCopyRule(BackwardRegistry& r, const char* op, int64_t since, int64_t until, std::vector<int> diff) {
  std::vector<size_t> d(diff.begin(), diff.end());
  r.Add({op, since, until, [d](GradContext& c) { CopyBackward(c, d); }, diff});
}

// Concat: every input is differentiable; the rule indexes all of them.
void ConcatBackward(GradContext& ctx) {
  std::vector<size_t> all;
  for (size_t i = 0; i < ctx.num_inputs(); ++i) all.push_back(i);
  CopyBackward(ctx, all);
}

}  // namespace

void AddShapeGrads(BackwardRegistry& r) {
  for (const char* op : {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"}) {
    r.Add({op, 1, 1000, SameElementsBackward, {0}});
  }
  r.Add({"Transpose", 1, 1000, TransposeBackward, {0}});
  r.Add({"Concat", 1, 1000, ConcatBackward, {}});
  AddCopyRule(r, "Split", 1, 1000, {0});
  AddCopyRule(r, "Slice", 1, 1000, {0});
  r.Add({"Gather", 1, 1000, GatherBackward, {0}});
  AddCopyRule(r, "Expand", 8, 1000, {0});
  AddCopyRule(r, "Tile", 1, 1000, {0});
  AddCopyRule(r, "Pad", 1, 1000, {0});
  AddResizeGrads(r);
}

}  // namespace compress::train
