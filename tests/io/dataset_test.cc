#include "compress/io/dataset.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <functional>
#include <string>
#include <vector>

#include "compress/io/npy.h"
#include "compress/io/onnx_io.h"
#include "compress/util/error.h"
#include "compress/util/fs.h"
#include "support/test_support.h"

namespace compress {
namespace {

using compress::testing::TempDir;
using compress::testing::WriteBytes;

// A [rows, 2] (or [2] when rows == 0) float32 tensor whose elements are base, base + 1, ...
Tensor Floats(int64_t rows, float base) {
  const int64_t n = rows == 0 ? 2 : rows * 2;
  std::vector<float> v(static_cast<size_t>(n));
  for (size_t i = 0; i < v.size(); ++i) v[i] = base + static_cast<float>(i);
  return Tensor::FromVector<float>(rows == 0 ? std::vector<int64_t>{2} : std::vector<int64_t>{rows, 2}, v);
}

std::vector<float> Values(const Tensor& t) { return {t.data<float>(), t.data<float>() + t.numel()}; }

InputSpec Spec(const std::string& name, DType dtype, std::vector<Dim> shape) {
  InputSpec s;
  s.name = name;
  s.dtype = dtype;
  s.shape = std::move(shape);
  return s;
}

// input float32[batch,2]
std::vector<InputSpec> OneInput() {
  return {Spec("input", DType::kFloat, {Dim::Symbolic("batch"), Dim::Fixed(2)})};
}

// a float32[N,2], b int64[N]
std::vector<InputSpec> TwoInputs() {
  return {Spec("a", DType::kFloat, {Dim::Symbolic("N"), Dim::Fixed(2)}),
          Spec("b", DType::kInt64, {Dim::Symbolic("N")})};
}

void MakeDir(const std::string& path) { ASSERT_EQ(::mkdir(path.c_str(), 0755), 0) << path; }

std::string ErrorOf(const std::function<void()>& fn, ErrorKind expected_kind = ErrorKind::kInvalidInput) {
  try {
    fn();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), expected_kind) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "expected an error";
  return "";
}

bool Has(const std::string& text, const std::string& fragment) {
  return text.find(fragment) != std::string::npos;
}

class DatasetTest : public ::testing::Test {
 protected:
  std::string Npy(const std::string& name, const Tensor& t) {
    const std::string path = tmp_ / name;
    WriteNpy(path, t);
    return path;
  }
  TempDir tmp_;
};

TEST_F(DatasetTest, FlatFilesOneSampleEachInSortedOrder) {
  // Created out of order; byte order puts "10" before "2" and upper case before lower case.
  Npy("b.npy", Floats(0, 40));
  Npy("2.npy", Floats(0, 20));
  Npy("B.npy", Floats(0, 30));
  Npy("10.npy", Floats(0, 10));
  WriteBytes(tmp_ / "README.md", "not data");
  WriteBytes(tmp_ / ".hidden.npy", "temporary file of an editor");

  const Dataset ds = Dataset::Open(tmp_.path(), OneInput());
  EXPECT_EQ(ds.layout(), "files");
  ASSERT_EQ(ds.num_records(), 4u);
  EXPECT_EQ(ds.num_samples(), 4);
  EXPECT_EQ(ds.record_name(0), "10.npy");
  EXPECT_EQ(ds.record_name(1), "2.npy");
  EXPECT_EQ(ds.record_name(2), "B.npy");
  EXPECT_EQ(ds.record_name(3), "b.npy");
  EXPECT_FALSE(ds.has_labels());
  EXPECT_EQ(ds.files(),
            (std::vector<std::string>{tmp_ / "10.npy", tmp_ / "2.npy", tmp_ / "B.npy", tmp_ / "b.npy"}));

  const std::vector<Tensor> batch = ds.ReadSamples(0, 4);
  ASSERT_EQ(batch.size(), 1u);
  EXPECT_EQ(batch[0].name(), "input");
  EXPECT_EQ(batch[0].dims(), (std::vector<int64_t>{4, 2}));
  EXPECT_EQ(Values(batch[0]), (std::vector<float>{10, 11, 20, 21, 30, 31, 40, 41}));

  const std::vector<Tensor> one = ds.ReadSamples(2, 1);
  EXPECT_EQ(one[0].dims(), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(Values(one[0]), (std::vector<float>{30, 31}));
}

TEST_F(DatasetTest, OneBatchedFile) {
  Npy("all.npy", Floats(5, 0));
  const Dataset ds = Dataset::Open(tmp_.path() + "/", OneInput());
  EXPECT_EQ(ds.dir(), tmp_.path());
  ASSERT_EQ(ds.num_records(), 1u);
  EXPECT_EQ(ds.record_rows(0), 5);
  EXPECT_EQ(ds.num_samples(), 5);
  const std::vector<Tensor> s = ds.ReadSamples(1, 3);
  EXPECT_EQ(s[0].dims(), (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(Values(s[0]), (std::vector<float>{2, 3, 4, 5, 6, 7}));
  EXPECT_EQ(Values(ds.ReadRecord(0)[0]), Values(Floats(5, 0)));
}

TEST_F(DatasetTest, MixedBatchedAndSingleFilesAndReadsSpanningRecords) {
  Npy("a.npy", Floats(3, 0));    // samples 0..2: {0,1} {2,3} {4,5}
  Npy("b.npy", Floats(0, 100));  // sample 3: {100,101}
  Npy("c.npy", Floats(2, 200));  // samples 4..5: {200,201} {202,203}
  const Dataset ds = Dataset::Open(tmp_.path(), OneInput());
  ASSERT_EQ(ds.num_records(), 3u);
  EXPECT_EQ(ds.num_samples(), 6);
  EXPECT_EQ(ds.record_first_sample(1), 3);
  EXPECT_EQ(ds.record_first_sample(2), 4);
  EXPECT_EQ(ds.record_rows(1), 1);

  const std::vector<Tensor> span = ds.ReadSamples(2, 3);
  EXPECT_EQ(span[0].dims(), (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(Values(span[0]), (std::vector<float>{4, 5, 100, 101, 200, 201}));
  EXPECT_EQ(Values(ds.ReadSamples(0, 6)[0]),
            (std::vector<float>{0, 1, 2, 3, 4, 5, 100, 101, 200, 201, 202, 203}));

  // A single-sample record comes back with the model input's rank.
  EXPECT_EQ(ds.ReadRecord(1)[0].dims(), (std::vector<int64_t>{1, 2}));

  EXPECT_TRUE(Has(ErrorOf([&] { ds.ReadSamples(5, 2); }), "samples [5, 7) requested"));
  EXPECT_TRUE(Has(ErrorOf([&] { ds.ReadSamples(0, 0); }), "requested"));
}

TEST_F(DatasetTest, FixedBatchDimensionAcceptsAnyRowCount) {
  Npy("x.npy", Floats(7, 0));
  const Dataset ds = Dataset::Open(tmp_.path(), {Spec("x", DType::kFloat, {Dim::Fixed(1), Dim::Fixed(2)})});
  EXPECT_EQ(ds.num_samples(), 7);
}

TEST_F(DatasetTest, OnnxTestDataLayout) {
  const std::string set1 = tmp_ / "test_data_set_1", set0 = tmp_ / "test_data_set_0";
  MakeDir(set1);
  MakeDir(set0);
  // The file order is swapped against the input order: tensor names decide where input_K goes.
  WriteTensorProtoFile(set1 + "/input_0.pb", Tensor::FromVector<int64_t>({1}, {11}, "b"));
  WriteTensorProtoFile(set1 + "/input_1.pb", Tensor::FromVector<float>({1, 2}, {1, 2}, "a"));
  WriteTensorProtoFile(set1 + "/output_0.pb", Tensor::FromVector<float>({1}, {0}, "y"));
  // Unnamed tensors map by position.
  WriteTensorProtoFile(set0 + "/input_0.pb", Tensor::FromVector<float>({2, 2}, {5, 6, 7, 8}));
  WriteTensorProtoFile(set0 + "/input_1.pb", Tensor::FromVector<int64_t>({2}, {3, 4}));

  const Dataset ds = Dataset::Open(tmp_.path(), TwoInputs());
  EXPECT_EQ(ds.layout(), "onnx-test-data");
  ASSERT_EQ(ds.num_records(), 2u);
  EXPECT_EQ(ds.record_name(0), "test_data_set_0");
  EXPECT_EQ(ds.num_samples(), 3);
  EXPECT_EQ(ds.files(), (std::vector<std::string>{set0 + "/input_0.pb", set0 + "/input_1.pb",
                                                  set1 + "/input_1.pb", set1 + "/input_0.pb"}));

  const std::vector<Tensor> s = ds.ReadSamples(0, 3);
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].name(), "a");
  EXPECT_EQ(Values(s[0]), (std::vector<float>{5, 6, 7, 8, 1, 2}));
  ASSERT_EQ(s[1].dims(), (std::vector<int64_t>{3}));
  EXPECT_EQ(s[1].data<int64_t>()[0], 3);
  EXPECT_EQ(s[1].data<int64_t>()[1], 4);
  EXPECT_EQ(s[1].data<int64_t>()[2], 11);
}

TEST_F(DatasetTest, OnnxTestDataInTheFolderItself) {
  WriteTensorProtoFile(tmp_ / "input_0.pb", Tensor::FromVector<float>({2}, {9, 8}, "input"));
  const Dataset ds = Dataset::Open(tmp_.path(), OneInput());
  EXPECT_EQ(ds.layout(), "onnx-test-data");
  ASSERT_EQ(ds.num_samples(), 1);
  EXPECT_EQ(Values(ds.ReadSamples(0, 1)[0]), (std::vector<float>{9, 8}));
}

TEST_F(DatasetTest, OnnxTestDataMissingInput) {
  const std::string set = tmp_ / "test_data_set_0";
  MakeDir(set);
  WriteTensorProtoFile(set + "/input_0.pb", Tensor::FromVector<float>({1, 2}, {1, 2}));
  const std::string msg = ErrorOf([&] { Dataset::Open(tmp_.path(), TwoInputs()); });
  EXPECT_TRUE(Has(msg, set + ": no file for input 'b'")) << msg;
}

TEST_F(DatasetTest, RealOnnxTestData) {
  const std::string dir = std::string(ONNX_TESTDATA_DIR) + "/node/test_add";
  ASSERT_TRUE(compress::IsDirectory(dir)) << "ONNX test data not installed (tools/setup.sh --tests)";
  const Model model = LoadModel(dir + "/model.onnx");
  const Dataset ds = Dataset::Open(dir, ModelInputSpecs(model));
  EXPECT_EQ(ds.layout(), "onnx-test-data");
  ASSERT_EQ(ds.inputs().size(), 2u);
  const std::vector<Tensor> rec = ds.ReadRecord(0);
  const Tensor x = ReadTensorProtoFile(dir + "/test_data_set_0/input_0.pb");
  EXPECT_TRUE(rec[0].SameContent(x));
}

TEST_F(DatasetTest, PerInputFoldersForATwoInputModel) {
  const std::string r1 = tmp_ / "rec1", r0 = tmp_ / "rec0";
  MakeDir(r1);
  MakeDir(r0);
  WriteNpy(r1 + "/a.npy", Floats(2, 10));
  WriteNpy(r1 + "/b.npy", Tensor::FromVector<int64_t>({2}, {7, 8}));
  WriteNpy(r0 + "/a.npy", Floats(0, 0));
  WriteTensorProtoFile(r0 + "/b.pb", Tensor::FromVector<int64_t>({}, {6}));
  WriteBytes(r0 + "/notes.txt", "ignored");

  const Dataset ds = Dataset::Open(tmp_.path(), TwoInputs());
  EXPECT_EQ(ds.layout(), "per-input-folders");
  ASSERT_EQ(ds.num_records(), 2u);
  EXPECT_EQ(ds.record_name(0), "rec0");
  EXPECT_EQ(ds.record_rows(1), 2);
  const std::vector<Tensor> s = ds.ReadSamples(0, 3);
  EXPECT_EQ(s[0].dims(), (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(Values(s[0]), (std::vector<float>{0, 1, 10, 11, 12, 13}));
  EXPECT_EQ(s[1].name(), "b");
  ASSERT_EQ(s[1].dims(), (std::vector<int64_t>{3}));
  EXPECT_EQ(s[1].data<int64_t>()[0], 6);
  EXPECT_EQ(s[1].data<int64_t>()[2], 8);
}

TEST_F(DatasetTest, MissingInputInRecordFolder) {
  const std::string r0 = tmp_ / "rec0";
  MakeDir(r0);
  WriteNpy(r0 + "/a.npy", Floats(0, 0));
  const std::string msg = ErrorOf([&] { Dataset::Open(tmp_.path(), TwoInputs()); });
  EXPECT_EQ(msg, r0 + ": no file for input 'b'; expected b.npy or b.pb");
}

TEST_F(DatasetTest, RowCountsOfARecordMustAgree) {
  const std::string r0 = tmp_ / "rec0";
  MakeDir(r0);
  WriteNpy(r0 + "/a.npy", Floats(2, 0));
  WriteNpy(r0 + "/b.npy", Tensor::FromVector<int64_t>({3}, {1, 2, 3}));
  const std::string msg = ErrorOf([&] { Dataset::Open(tmp_.path(), TwoInputs()); });
  EXPECT_TRUE(Has(msg, "input 'a' has 2 sample(s)") && Has(msg, "input 'b' has 3")) << msg;
}

TEST_F(DatasetTest, FlatFilesNeedOneInput) {
  Npy("a.npy", Floats(0, 0));
  const std::string msg = ErrorOf([&] { Dataset::Open(tmp_.path(), TwoInputs()); });
  EXPECT_TRUE(Has(msg, "the model has 2 inputs ('a', 'b')")) << msg;
}

TEST_F(DatasetTest, LabelsFromNpy) {
  Npy("x.npy", Floats(3, 0));
  Npy("labels.npy", Tensor::FromVector<int64_t>({3}, {2, 0, 1}));
  const Dataset ds = Dataset::Open(tmp_.path(), OneInput());
  EXPECT_EQ(ds.num_records(), 1u);  // labels.npy is not a data file
  ASSERT_TRUE(ds.has_labels());
  EXPECT_EQ(ds.labels(), (std::vector<int64_t>{2, 0, 1}));
}

TEST_F(DatasetTest, LabelsFromInt32ColumnNpy) {
  Npy("x.npy", Floats(2, 0));
  Npy("labels.npy", Tensor::FromVector<int32_t>({2, 1}, {-1, 9}));
  EXPECT_EQ(Dataset::Open(tmp_.path(), OneInput()).labels(), (std::vector<int64_t>{-1, 9}));
}

TEST_F(DatasetTest, LabelsFromText) {
  Npy("x.npy", Floats(3, 0));
  WriteBytes(tmp_ / "labels.txt", "4\r\n  5 \n+6\n\n");
  EXPECT_EQ(Dataset::Open(tmp_.path(), OneInput()).labels(), (std::vector<int64_t>{4, 5, 6}));

  WriteBytes(tmp_ / "labels.txt", "4\n\n5\n6\n");
  EXPECT_TRUE(Has(ErrorOf([&] { Dataset::Open(tmp_.path(), OneInput()); }), "labels.txt:2: empty line"));
  WriteBytes(tmp_ / "labels.txt", "4\ncat\n6\n");
  EXPECT_TRUE(Has(ErrorOf([&] { Dataset::Open(tmp_.path(), OneInput()); }),
                  "labels.txt:2: expected an integer label, found 'cat'"));
}

TEST_F(DatasetTest, ExplicitLabelsFileOverridesTheFolder) {
  TempDir other;
  const std::string data = tmp_ / "data";
  MakeDir(data);
  WriteNpy(data + "/x.npy", Floats(2, 0));
  WriteBytes(data + "/labels.txt", "1\n1\n");
  const std::string explicit_labels = other / "truth.txt";
  WriteBytes(explicit_labels, "7\n8\n");
  DatasetOptions options;
  options.labels_file = explicit_labels;
  EXPECT_EQ(Dataset::Open(data, OneInput(), options).labels(), (std::vector<int64_t>{7, 8}));

  // An explicit .npy inside the folder is labels, not data.
  WriteNpy(data + "/y.npy", Tensor::FromVector<int64_t>({2}, {3, 4}));
  options.labels_file = data + "/y.npy";
  const Dataset ds = Dataset::Open(data, OneInput(), options);
  EXPECT_EQ(ds.num_records(), 1u);
  EXPECT_EQ(ds.labels(), (std::vector<int64_t>{3, 4}));
}

TEST_F(DatasetTest, LabelsCountMismatch) {
  Npy("x.npy", Floats(3, 0));
  Npy("labels.npy", Tensor::FromVector<int64_t>({2}, {0, 1}));
  const std::string msg = ErrorOf([&] { Dataset::Open(tmp_.path(), OneInput()); });
  EXPECT_TRUE(Has(msg, "holds 2 labels") && Has(msg, "holds 3 samples")) << msg;
}

TEST_F(DatasetTest, BadLabelsNpy) {
  Npy("x.npy", Floats(2, 0));
  Npy("labels.npy", Floats(1, 0));
  EXPECT_TRUE(Has(ErrorOf([&] { Dataset::Open(tmp_.path(), OneInput()); }),
                  "labels must be int64 or int32, found float32"));
}

TEST_F(DatasetTest, ShapeMismatchMessage) {
  const std::string path = Npy("x.npy", Tensor(DType::kFloat, {3, 28, 28}));
  const std::vector<InputSpec> inputs = {
      Spec("input", DType::kFloat, {Dim::Symbolic("batch"), Dim::Fixed(1), Dim::Fixed(28), Dim::Fixed(28)})};
  EXPECT_EQ(ErrorOf([&] { Dataset::Open(tmp_.path(), inputs); }),
            path +
                ": input 'input' expects float32[batch,1,28,28] (one sample [1,28,28] or a batch "
                "[N,1,28,28]), got float32[3,28,28]");
}

TEST_F(DatasetTest, DtypeMismatchMessage) {
  const std::string path = Npy("x.npy", Tensor::FromVector<int64_t>({2}, {1, 2}));
  EXPECT_EQ(
      ErrorOf([&] { Dataset::Open(tmp_.path(), OneInput()); }),
      path + ": input 'input' expects float32[batch,2] (one sample [2] or a batch [N,2]), got int64[2]");
}

TEST_F(DatasetTest, ScalarInputs) {
  Npy("0.npy", Tensor::FromVector<float>({}, {1.5f}));
  Npy("1.npy", Tensor::FromVector<float>({}, {2.5f}));
  const std::vector<InputSpec> inputs = {Spec("t", DType::kFloat, {})};
  const Dataset ds = Dataset::Open(tmp_.path(), inputs);
  EXPECT_EQ(ds.num_samples(), 2);
  const Tensor s = ds.ReadSamples(1, 1)[0];
  EXPECT_EQ(s.rank(), 0);
  EXPECT_EQ(s.data<float>()[0], 2.5f);
  EXPECT_TRUE(Has(ErrorOf([&] { ds.ReadSamples(0, 2); }), "no batch dimension"));

  Npy("2.npy", Tensor::FromVector<float>({1}, {3.5f}));
  EXPECT_TRUE(
      Has(ErrorOf([&] { Dataset::Open(tmp_.path(), inputs); }), "(one scalar per file), got float32[1]"));
}

TEST_F(DatasetTest, FreeDimensionsMustAgreeWithinABatch) {
  Npy("a.npy", Tensor(DType::kFloat, {3}));
  Npy("b.npy", Tensor(DType::kFloat, {2, 3}));
  Npy("c.npy", Tensor(DType::kFloat, {4}));
  const Dataset ds = Dataset::Open(tmp_.path(), {Spec("seq", DType::kFloat, {Dim::Symbolic("N"), Dim{}})});
  EXPECT_EQ(ds.num_samples(), 4);
  EXPECT_EQ(ds.ReadSamples(0, 3)[0].dims(), (std::vector<int64_t>{3, 3}));
  EXPECT_EQ(ds.ReadSamples(3, 1)[0].dims(), (std::vector<int64_t>{1, 4}));
  const std::string msg = ErrorOf([&] { ds.ReadSamples(2, 2); });
  EXPECT_TRUE(Has(msg, "input 'seq' have shapes [3] and [4]") && Has(msg, tmp_ / "c.npy")) << msg;
}

TEST_F(DatasetTest, EmptyFolderAndNoDataFiles) {
  EXPECT_TRUE(Has(ErrorOf([&] { Dataset::Open(tmp_.path(), OneInput()); }), "no data files found"));
  WriteBytes(tmp_ / "README.md", "# data");
  Npy("labels.npy", Tensor::FromVector<int64_t>({1}, {0}));
  EXPECT_TRUE(
      Has(ErrorOf([&] { Dataset::Open(tmp_.path(), OneInput()); }), tmp_.path() + ": no data files found"));
  EXPECT_TRUE(
      Has(ErrorOf([&] { Dataset::Open(tmp_ / "absent", OneInput()); }, ErrorKind::kIO), "does not exist"));
}

TEST_F(DatasetTest, BadFileNamesItself) {
  const std::string path = tmp_ / "x.npy";
  WriteBytes(path, "garbage");
  const std::string msg = ErrorOf([&] { Dataset::Open(tmp_.path(), OneInput()); });
  EXPECT_TRUE(Has(msg, path + ": not a .npy file")) << msg;
}

TEST_F(DatasetTest, OpenReadsOnlyHeaders) {
  // 1 GiB of float32[2^27, 2] as sparse files: opening must not read (or allocate) the element data.
  const int64_t rows = int64_t{1} << 27;
  const std::string npy = tmp_ / "big.npy";
  const std::string header = EncodeNpy(Tensor(DType::kFloat, {0, 2})).substr(0, 128);
  std::string fixed = header;
  const std::string zero_rows = "(0, 2)", many_rows = "(" + std::to_string(rows) + ", 2)";
  fixed.replace(fixed.find(zero_rows), zero_rows.size(), many_rows);
  fixed.erase(fixed.find("}") + 1, many_rows.size() - zero_rows.size());  // keep the header length
  WriteBytes(npy, fixed);
  ASSERT_EQ(::truncate(npy.c_str(), static_cast<off_t>(128 + rows * 8)), 0);

  const Dataset ds = Dataset::Open(tmp_.path(), OneInput());
  EXPECT_EQ(ds.num_samples(), rows);
  const std::vector<float> tail = Values(ds.ReadSamples(rows - 2, 2)[0]);
  EXPECT_EQ(tail, (std::vector<float>{0, 0, 0, 0}));

  // The same for a TensorProto: dims {2^27, 2} (packed), data_type 1, then a 1 GiB raw_data field.
  const std::string pb = tmp_ / "big.pb";
  WriteBytes(pb, std::string("\x0a\x05\x80\x80\x80\x40\x02\x10\x01\x4a\x80\x80\x80\x80\x04", 15));
  ASSERT_EQ(::truncate(pb.c_str(), static_cast<off_t>(15 + rows * 8)), 0);
  const Dataset both = Dataset::Open(tmp_.path(), OneInput());
  EXPECT_EQ(both.num_samples(), 2 * rows);
  EXPECT_EQ(both.record_rows(0), rows);
}

TEST_F(DatasetTest, ModelInputSpecs) {
  Model m = compress::testing::TinyModel();
  // Before IR version 4 weights were listed as graph inputs too; they are not data inputs.
  m.graph.inputs.push_back({"W", TypeInfo::Tensor(DType::kFloat, {Dim::Fixed(4), Dim::Fixed(3)}), ""});
  const std::vector<InputSpec> specs = ModelInputSpecs(m);
  ASSERT_EQ(specs.size(), 1u);
  EXPECT_EQ(specs[0].name, "x");
  EXPECT_EQ(specs[0].dtype, DType::kFloat);
  EXPECT_EQ(specs[0].ToString(), "input 'x' float32[N,4]");

  TypeInfo seq;
  seq.kind = TypeInfo::Kind::kSequence;
  m.graph.inputs.push_back({"s", seq, ""});
  EXPECT_TRUE(Has(ErrorOf([&] { ModelInputSpecs(m); }), "model input 's' has type sequence<?>"));
}

}  // namespace
}  // namespace compress
