// Batches for models whose batch is fixed or whose batch axis is not the first: InferBatchLayout,
// Dataset::PlanBatches / ReadSamples along each input's own batch axis, and Evaluate splitting outputs
// along theirs.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <functional>
#include <string>
#include <vector>

#include "compress/eval/evaluate.h"
#include "compress/exec/executor.h"
#include "compress/io/dataset.h"
#include "compress/io/npy.h"
#include "compress/util/error.h"
#include "support/test_support.h"

namespace compress {
namespace {

using compress::testing::TempDir;

InputSpec Spec(const std::string& name, DType dtype, std::vector<Dim> shape) {
  InputSpec s;
  s.name = name;
  s.dtype = dtype;
  s.shape = std::move(shape);
  return s;
}

Dim F(int64_t v) { return Dim::Fixed(v); }
Dim S(const std::string& p) { return Dim::Symbolic(p); }

// Floats base, base+1, ... shaped `dims`.
Tensor Seq(std::vector<int64_t> dims, float base) {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  std::vector<float> v(static_cast<size_t>(n));
  for (size_t i = 0; i < v.size(); ++i) v[i] = base + static_cast<float>(i);
  return Tensor::FromVector<float>(std::move(dims), v);
}

std::vector<float> Values(const Tensor& t) { return {t.data<float>(), t.data<float>() + t.numel()}; }

std::vector<std::pair<int64_t, int64_t>> Ranges(const BatchPlan& p) {
  std::vector<std::pair<int64_t, int64_t>> r;
  for (const auto& b : p.batches) r.emplace_back(b.first, b.count);
  return r;
}

std::string MessageOf(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "expected an error";
  return "";
}

void MakeDir(const std::string& path) { ASSERT_EQ(::mkdir(path.c_str(), 0755), 0) << path; }

using Pairs = std::vector<std::pair<int64_t, int64_t>>;

TEST(InferBatchLayoutTest, SingleInputs) {
  BatchLayout l = InferBatchLayout({Spec("x", DType::kFloat, {F(1), F(16), F(96)})});
  EXPECT_EQ(l.input_axes, (std::vector<int>{0}));
  EXPECT_EQ(l.fixed_batch, 1);
  EXPECT_EQ(l.BatchSize(64), 1);
  EXPECT_EQ(l.OutputAxis({F(1), F(1)}), 0);

  l = InferBatchLayout({Spec("x", DType::kFloat, {F(4), F(2)})});
  EXPECT_EQ(l.fixed_batch, 4);
  EXPECT_EQ(l.BatchSize(1), 4);

  l = InferBatchLayout({Spec("x", DType::kFloat, {S("N"), F(2)})});
  EXPECT_EQ(l.input_axes, (std::vector<int>{0}));
  EXPECT_EQ(l.fixed_batch, 0);
  EXPECT_EQ(l.batch_dim, "N");
  EXPECT_EQ(l.BatchSize(64), 64);

  // Only rank-0 inputs: nothing to stack samples along, one sample per run.
  l = InferBatchLayout({Spec("t", DType::kFloat, {})});
  EXPECT_EQ(l.input_axes, (std::vector<int>{-1}));
  EXPECT_EQ(l.fixed_batch, 1);
}

TEST(InferBatchLayoutTest, SileroLikeStateInputs) {
  // silero_vad.onnx: input[batch,sequence], sr int64 scalar, h and c [2,batch,64].
  const std::vector<InputSpec> inputs = {Spec("input", DType::kFloat, {S("batch"), S("sequence")}),
                                         Spec("sr", DType::kInt64, {}),
                                         Spec("h", DType::kFloat, {F(2), S("batch"), F(64)}),
                                         Spec("c", DType::kFloat, {F(2), S("batch"), F(64)})};
  const BatchLayout l = InferBatchLayout(inputs);
  EXPECT_EQ(l.input_axes, (std::vector<int>{0, -1, 1, 1}));
  EXPECT_EQ(l.fixed_batch, 0);
  EXPECT_EQ(l.batch_dim, "batch");
  EXPECT_EQ(l.OutputAxis({S("batch"), F(1)}), 0);
  EXPECT_EQ(l.OutputAxis({F(2), S("batch"), F(64)}), 1);
  EXPECT_EQ(l.OutputAxis({}), 0);

  // A name that says "batch" wins over an earlier shared one.
  const BatchLayout t = InferBatchLayout({Spec("a", DType::kFloat, {S("T"), S("batch_size")}),
                                          Spec("b", DType::kFloat, {S("T"), S("batch_size"), F(3)})});
  EXPECT_EQ(t.input_axes, (std::vector<int>{1, 1}));
  EXPECT_EQ(t.batch_dim, "batch_size");
}

TEST(InferBatchLayoutTest, FixedAndUnnamedDims) {
  // The same model exported with a fixed batch of 1: the size both declare is the batch.
  const BatchLayout l = InferBatchLayout({Spec("input", DType::kFloat, {F(1), F(512)}),
                                          Spec("sr", DType::kInt64, {}),
                                          Spec("h", DType::kFloat, {F(2), F(1), F(64)})});
  EXPECT_EQ(l.input_axes, (std::vector<int>{0, -1, 1}));
  EXPECT_EQ(l.fixed_batch, 1);
  EXPECT_EQ(l.OutputAxis({F(2), F(1), F(64)}), 1);

  // One unnamed free dim in each input.
  const BatchLayout u = InferBatchLayout({Spec("a", DType::kFloat, {Dim{}, F(3)}),
                                          Spec("b", DType::kFloat, {F(2), Dim{}})});
  EXPECT_EQ(u.input_axes, (std::vector<int>{0, 1}));
  EXPECT_EQ(u.fixed_batch, 0);

  // Nothing shared: the first axis.
  const BatchLayout n = InferBatchLayout({Spec("a", DType::kFloat, {S("N"), F(3)}),
                                          Spec("b", DType::kFloat, {S("M"), F(5)})});
  EXPECT_EQ(n.input_axes, (std::vector<int>{0, 0}));
  EXPECT_EQ(n.fixed_batch, 0);
}

TEST(AxisCopyTest, SliceAndConcatAlongAxis1) {
  const Tensor t = Seq({2, 3, 2}, 0);  // [[0 1][2 3][4 5]] [[6 7][8 9][10 11]]
  const Tensor mid = SliceAlongAxis(t, 1, 1, 2);
  EXPECT_EQ(mid.dims(), (std::vector<int64_t>{2, 2, 2}));
  EXPECT_EQ(Values(mid), (std::vector<float>{2, 3, 4, 5, 8, 9, 10, 11}));
  const Tensor head = SliceAlongAxis(t, 1, 0, 1);
  const Tensor back = ConcatAlongAxis({head, mid}, 1);
  EXPECT_EQ(back.dims(), t.dims());
  EXPECT_EQ(Values(back), Values(t));
}

class BatchDataTest : public ::testing::Test {
 protected:
  void Npy(const std::string& rel, const Tensor& t) { WriteNpy(tmp_ / rel, t); }
  TempDir tmp_;
};

TEST_F(BatchDataTest, FixedBatchOfOneRunsOneSampleAtATime) {
  // x float32[1,2] (like hey_jarvis' [1,16,96]): a sample [2], a batch of one [1,2], a batch of three.
  Npy("a.npy", Seq({2}, 0));
  Npy("b.npy", Seq({1, 2}, 10));
  Npy("c.npy", Seq({3, 2}, 20));
  const Dataset ds = Dataset::Open(tmp_.path(), {Spec("x", DType::kFloat, {F(1), F(2)})});
  EXPECT_EQ(ds.num_samples(), 5);
  EXPECT_EQ(ds.batch_layout().fixed_batch, 1);
  const BatchPlan plan = ds.PlanBatches(0, 64);
  EXPECT_EQ(Ranges(plan), (Pairs{{0, 1}, {1, 1}, {2, 1}, {3, 1}, {4, 1}}));
  EXPECT_EQ(plan.samples, 5);
  EXPECT_EQ(plan.skipped, 0);
  EXPECT_EQ(plan.batch, 1);
  const Tensor s1 = ds.ReadSamples(1, 1)[0];
  EXPECT_EQ(s1.dims(), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(Values(s1), (std::vector<float>{10, 11}));
  EXPECT_EQ(Values(ds.ReadSamples(3, 1)[0]), (std::vector<float>{22, 23}));
  EXPECT_EQ(Ranges(ds.PlanBatches(2, 8)), (Pairs{{0, 1}, {1, 1}}));
}

TEST_F(BatchDataTest, FixedBatchOfFourSkipsTheRemainder) {
  Npy("x.npy", Seq({10, 2}, 0));
  const Dataset ds = Dataset::Open(tmp_.path(), {Spec("x", DType::kFloat, {F(4), F(2)})});
  BatchPlan plan = ds.PlanBatches(0, 64);
  EXPECT_EQ(Ranges(plan), (Pairs{{0, 4}, {4, 4}}));
  EXPECT_EQ(plan.samples, 8);
  EXPECT_EQ(plan.skipped, 2);
  EXPECT_EQ(plan.batch, 4);
  plan = ds.PlanBatches(5, 1);  // --limit 5: one batch of four, one sample left
  EXPECT_EQ(Ranges(plan), (Pairs{{0, 4}}));
  EXPECT_EQ(plan.skipped, 1);
  EXPECT_EQ(MessageOf([&] { ds.PlanBatches(3, 64); }),
            tmp_.path() + ": 3 sample(s) to run (the folder holds 10), fewer than the model's fixed batch of 4; "
                          "expected at least 4");
  const Tensor b = ds.ReadSamples(4, 4)[0];
  EXPECT_EQ(b.dims(), (std::vector<int64_t>{4, 2}));
  EXPECT_EQ(Values(b), (std::vector<float>{8, 9, 10, 11, 12, 13, 14, 15}));
}

// input float32[batch,3], sr int64 scalar, h float32[2,batch,2]: the silero_vad layout in small.
std::vector<InputSpec> StateInputs() {
  return {Spec("input", DType::kFloat, {S("batch"), F(3)}), Spec("sr", DType::kInt64, {}),
          Spec("h", DType::kFloat, {F(2), S("batch"), F(2)})};
}

TEST_F(BatchDataTest, StateInputBatchedAlongAxis1WithAScalar) {
  const auto rec = [&](const std::string& name, const Tensor& input, int64_t sr, const Tensor& h) {
    MakeDir(tmp_ / name);
    Npy(name + "/input.npy", input);
    Npy(name + "/sr.npy", Tensor::FromVector<int64_t>({}, {sr}));
    Npy(name + "/h.npy", h);
  };
  rec("r0", Seq({1, 3}, 0), 16000, Seq({2, 1, 2}, 100));    // full shapes with batch 1
  rec("r1", Seq({3}, 10), 16000, Seq({2, 2}, 200));         // one sample: shapes without the batch axis
  rec("r2", Seq({2, 3}, 20), 16000, Seq({2, 2, 2}, 300));   // two samples
  rec("r3", Seq({1, 3}, 30), 8000, Seq({2, 1, 2}, 400));    // another sample rate
  const Dataset ds = Dataset::Open(tmp_.path(), StateInputs());
  EXPECT_EQ(ds.layout(), "per-input-folders");
  EXPECT_EQ(ds.num_samples(), 5);
  EXPECT_EQ(ds.record_rows(2), 2);
  EXPECT_EQ(ds.batch_layout().input_axes, (std::vector<int>{0, -1, 1}));

  // A batch ends where sr changes value; otherwise at the requested size.
  BatchPlan plan = ds.PlanBatches(0, 64);
  EXPECT_EQ(Ranges(plan), (Pairs{{0, 4}, {4, 1}}));
  EXPECT_EQ(plan.skipped, 0);
  EXPECT_EQ(Ranges(ds.PlanBatches(0, 3)), (Pairs{{0, 3}, {3, 1}, {4, 1}}));
  EXPECT_EQ(Ranges(ds.PlanBatches(4, 2)), (Pairs{{0, 2}, {2, 2}}));

  const std::vector<Tensor> b = ds.ReadSamples(0, 4);
  ASSERT_EQ(b.size(), 3u);
  EXPECT_EQ(b[0].dims(), (std::vector<int64_t>{4, 3}));
  EXPECT_EQ(Values(b[0]), (std::vector<float>{0, 1, 2, 10, 11, 12, 20, 21, 22, 23, 24, 25}));
  EXPECT_EQ(b[1].rank(), 0);
  EXPECT_EQ(b[1].data<int64_t>()[0], 16000);
  // h [2,4,2]: for each of the 2 layers, the 4 samples' rows in order.
  EXPECT_EQ(b[2].dims(), (std::vector<int64_t>{2, 4, 2}));
  EXPECT_EQ(Values(b[2]), (std::vector<float>{100, 101, 200, 201, 300, 301, 302, 303,  //
                                              102, 103, 202, 203, 304, 305, 306, 307}));
  // One sample out of the middle of a record: row 1 of r2's h along axis 1.
  const std::vector<Tensor> one = ds.ReadSamples(3, 1);
  EXPECT_EQ(one[2].dims(), (std::vector<int64_t>{2, 1, 2}));
  EXPECT_EQ(Values(one[2]), (std::vector<float>{302, 303, 306, 307}));
  // The whole record as stored.
  EXPECT_EQ(ds.ReadRecord(1)[2].dims(), (std::vector<int64_t>{2, 1, 2}));

  const std::string msg = MessageOf([&] { ds.ReadSamples(3, 2); });
  EXPECT_NE(msg.find("of input 'sr' hold different values"), std::string::npos) << msg;
  EXPECT_NE(msg.find(tmp_ / "r3/sr.npy"), std::string::npos) << msg;
  EXPECT_NE(msg.find("no batch dimension"), std::string::npos) << msg;
}

TEST_F(BatchDataTest, ErrorsNameFileInputExpectedAndActualShape) {
  MakeDir(tmp_ / "r0");
  Npy("r0/input.npy", Seq({1, 3}, 0));
  Npy("r0/sr.npy", Tensor::FromVector<int64_t>({}, {16000}));
  Npy("r0/h.npy", Seq({2, 1, 3}, 0));
  EXPECT_EQ(MessageOf([&] { Dataset::Open(tmp_.path(), StateInputs()); }),
            tmp_ / "r0/h.npy" +
                ": input 'h' expects float32[2,batch,2] (one sample [2,2] or a batch [2,N,2]), got float32[2,1,3]");

  // Two samples of input but one of h (along h's batch axis 1).
  Npy("r0/input.npy", Seq({2, 3}, 0));
  Npy("r0/h.npy", Seq({2, 1, 2}, 0));
  EXPECT_EQ(MessageOf([&] { Dataset::Open(tmp_.path(), StateInputs()); }),
            tmp_ / "r0" +
                ": input 'input' has 2 sample(s) (input.npy) but input 'h' has 1 (h.npy); expected the same "
                "number along each input's batch axis");

  // A fixed batch of 1 still names the file and both shapes.
  TempDir flat;
  WriteNpy(flat / "x.npy", Seq({3, 16}, 0));
  EXPECT_EQ(MessageOf([&] { Dataset::Open(flat.path(), {Spec("x", DType::kFloat, {F(1), F(16), F(96)})}); }),
            flat / "x.npy" +
                ": input 'x' expects float32[1,16,96] (one sample [16,96] or a batch [N,16,96]), got float32[3,16]");
}

// A model with silero's interface: out = ReduceSum(input, axis 1, keepdims) * sr-as-float, hn = h + 1
// (float32[2,batch,2]) as output 0, so predictions come from the axis-1 output.
Model StateModel() {
  Model m;
  m.ir_version = 8;
  m.opset_imports = {{"", 17}};
  Graph& g = m.graph;
  g.name = "state";
  g.inputs.push_back({"input", TypeInfo::Tensor(DType::kFloat, {S("batch"), F(3)}), ""});
  g.inputs.push_back({"sr", TypeInfo::Tensor(DType::kInt64, {}), ""});
  g.inputs.push_back({"h", TypeInfo::Tensor(DType::kFloat, {F(2), S("batch"), F(2)}), ""});
  g.outputs.push_back({"hn", TypeInfo::Tensor(DType::kFloat, {F(2), S("batch"), F(2)}), ""});
  g.outputs.push_back({"out", TypeInfo::Tensor(DType::kFloat, {S("batch"), F(1)}), ""});
  g.initializers.push_back(Tensor::FromVector<float>({}, {1.0f}, "one"));
  g.initializers.push_back(Tensor::FromVector<int64_t>({1}, {1}, "axes"));
  Node cast{"cast", "Cast", "", {"sr"}, {"srf"}, {}, ""};
  Attribute to;
  to.name = "to";
  to.type = AttrType::kInt;
  to.i = static_cast<int64_t>(DType::kFloat);
  cast.attributes.push_back(to);
  g.nodes.push_back(cast);
  g.nodes.push_back(Node{"add", "Add", "", {"h", "one"}, {"hn"}, {}, ""});
  g.nodes.push_back(Node{"sum", "ReduceSum", "", {"input", "axes"}, {"s"}, {}, ""});
  g.nodes.push_back(Node{"mul", "Mul", "", {"s", "srf"}, {"out"}, {}, ""});
  return m;
}

TEST_F(BatchDataTest, EvaluateSplitsOutputsAlongTheirBatchAxis) {
  // Three samples with one sample rate; h of sample s has its maximum at a different place each time.
  MakeDir(tmp_ / "all");
  Npy("all/input.npy", Seq({3, 3}, 0));
  Npy("all/sr.npy", Tensor::FromVector<int64_t>({}, {2}));
  // h[layer, sample, k]: sample 0 peaks at (1,0) -> class 2, sample 1 at (0,1) -> 1, sample 2 at (0,0) -> 0.
  Npy("all/h.npy", Tensor::FromVector<float>({2, 3, 2}, {0, 1, 5, 9, 8, 2,  //
                                                         7, 3, 4, 0, 1, 6}));
  const Dataset ds = Dataset::Open(tmp_.path(), ModelInputSpecs(StateModel()));
  Executor exec(StateModel(), {});
  EvalOptions opt;
  opt.progress = false;
  opt.keep_outputs = true;
  for (int64_t batch : {64, 1, 2}) {
    opt.batch = batch;
    const EvalResult r = Evaluate(exec, ds, opt);
    EXPECT_EQ(r.samples, 3);
    EXPECT_EQ(r.skipped, 0);
    EXPECT_EQ(r.batch, batch);
    EXPECT_EQ(r.predictions, (std::vector<int64_t>{2, 1, 0})) << "batch " << batch;
    // Output 0 sample by sample: hn[:, s, :] = h[:, s, :] + 1.
    EXPECT_EQ(r.output0, (std::vector<float>{1, 2, 8, 4, 6, 10, 5, 1, 9, 3, 2, 7})) << "batch " << batch;
    ASSERT_EQ(r.outputs.size(), 2u);
    EXPECT_EQ(r.outputs[0].sample_shape, (std::vector<int64_t>{2, 2}));
    EXPECT_EQ(r.outputs[1].sample_shape, (std::vector<int64_t>{1}));
    // out = sum(input) * sr: (0+1+2)*2, (3+4+5)*2, (6+7+8)*2 -> mean 24.
    EXPECT_DOUBLE_EQ(r.outputs[1].mean, 24.0);
  }
}

}  // namespace
}  // namespace compress
