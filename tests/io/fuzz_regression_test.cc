// Regression tests for inputs the libFuzzer harnesses (fuzz/, tools/fuzz.sh) found to crash, hang or
// throw something other than compress::Error. Each asserts the proper outcome: one compress::Error of
// the right kind (exit code) whose one-line message names the file and what is wrong.
#include <gtest/gtest.h>

#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "compress/calib/calibration.h"
#include "compress/io/onnx_io.h"
#include "compress/io/schema.h"
#include "compress/pipeline/pipeline.h"
#include "compress/pipeline/recipe.h"
#include "compress/util/error.h"
#include "support/test_support.h"

namespace compress {
namespace {

using compress::testing::RunCompress;
using compress::testing::SourcePath;
using compress::testing::TempDir;
using compress::testing::WriteBytes;

// `fn` must throw exactly one compress::Error of `kind`, on one line, containing every fragment.
void ExpectError(const std::function<void()>& fn, ErrorKind kind, const std::vector<std::string>& fragments) {
  try {
    fn();
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(static_cast<int>(e.kind()), static_cast<int>(kind)) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    for (const auto& f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << "'" << f << "' not in: " << msg;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "a foreign exception escaped: " << e.what();
  }
}

// --- models --------------------------------------------------------------------------------------

// fuzz_model_structured: a one-input "Pow" node of another domain reached ONNX's version converter
// (weight-only INT8 upgrades opset 6 to 13), whose Pow adapter ignores the domain and read the missing
// second input through a null pointer (SEGV in assert_numpy_multibroadcastable).
Model ForeignPowModel() {
  Model m = testing::TinyModel();
  m.opset_imports = {{"", 6}, {"com.example", 1}};
  m.graph.nodes.push_back(Node{"custom_pow", "Pow", "com.example", {"y"}, {"z"}, {}, ""});
  m.graph.outputs[0].name = "z";
  return m;
}

TEST(FuzzRegression, ForeignNodeNamedLikeOnnxOpIsNotOpsetConverted) {
  Model m = ForeignPowModel();
  std::string why;
  EXPECT_FALSE(ConvertOpset(m, 13, &why));
  EXPECT_NE(why.find("node 'custom_pow'"), std::string::npos) << why;
  EXPECT_NE(why.find("operator 'Pow' of domain 'com.example'"), std::string::npos) << why;
  EXPECT_EQ(m.OpsetVersion(""), 6);  // untouched

  // Through the tool: the model loads (custom domains pass unchecked), stays float, and is written.
  TempDir dir;
  WriteBytes(dir / "in.onnx", SerializeModel(m));
  const auto r = RunCompress({dir / "in.onnx", "--int8", "--weights-only", "-o", dir / "out.onnx"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  const Model out = LoadModel(dir / "out.onnx");
  EXPECT_EQ(out.OpsetVersion(""), 6);
  ASSERT_EQ(out.graph.nodes.size(), 4u);
  EXPECT_EQ(out.graph.nodes[3].domain, "com.example");
  EXPECT_EQ(out.graph.initializers.size(), 2u);  // W and b stay float32
  EXPECT_EQ(out.graph.initializers[0].dtype(), DType::kFloat);
}

// fuzz_model_structured: a graph whose output is an initializer (no nodes) crashed ONNX's version
// converter (null write in graphProtoToGraph) when weight-only INT8 upgraded opset 12 to 13.
TEST(FuzzRegression, InitializerAsGraphOutputIsNotOpsetConverted) {
  Model m;
  m.ir_version = 8;
  m.opset_imports = {{"", 12}};
  m.graph.name = "g";
  m.graph.inputs.push_back({"x", TypeInfo::Tensor(DType::kFloat, {Dim::Fixed(2)}), ""});
  m.graph.outputs.push_back({"w", TypeInfo::Tensor(DType::kFloat, {Dim::Fixed(2)}), ""});
  m.graph.initializers.push_back(Tensor::FromVector<float>({2}, {1.5f, -2.0f}, "w"));
  std::string why;
  EXPECT_FALSE(ConvertOpset(m, 13, &why));
  EXPECT_EQ(why, "graph output 'w' is an initializer, which the opset converter cannot take");
  EXPECT_EQ(m.OpsetVersion(""), 12);

  TempDir dir;
  WriteBytes(dir / "in.onnx", SerializeModel(m));
  const auto r = RunCompress({dir / "in.onnx", "--int8", "--weights-only", "-o", dir / "out.onnx"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  const Model out = LoadModel(dir / "out.onnx");
  EXPECT_EQ(out.OpsetVersion(""), 12);
  ASSERT_EQ(out.graph.initializers.size(), 1u);
  EXPECT_EQ(out.graph.initializers[0].data<float>()[1], -2.0f);
}

// fuzz_model_structured: the sample ViT with ir_version 1 crashed inside libonnx (SEGV, from
// fold_constants). The cause is general: ONNX 1.12's data propagation for Shape-15 reads its input's
// type without checking there is one. Before IR version 4 an initializer that is not a graph input has
// no type, and neither has the output of a custom-domain operator, a common sight in exported models.
// Shape inference must survive all of them and still type what it can.
Model ShapeAfter(const std::string& what) {
  Model m = testing::TinyModel();  // x -> Relu -> h -> MatMul W -> hw -> Add b -> y
  std::string shaped = "h";
  if (what == "custom") {
    m.opset_imports.push_back({"com.example", 1});
    m.graph.nodes.push_back(Node{"foo", "Foo", "com.example", {"y"}, {"f"}, {}, ""});
    shaped = "f";
  } else if (what == "ir3") {
    m.ir_version = 3;
    m.graph.nodes.push_back(Node{"neg", "Neg", "", {"W"}, {"f"}, {}, ""});
    shaped = "f";
  } else if (what == "untyped_input") {
    m.graph.inputs[0].type = TypeInfo();
  }
  m.graph.nodes.push_back(Node{"shape", "Shape", "", {shaped}, {"s"}, {}, ""});
  m.graph.outputs.push_back({"s", TypeInfo(), ""});
  return m;
}

TEST(FuzzRegression, ShapeOfUntypedValueSurvivesShapeInference) {
  for (const std::string what : {"custom", "ir3", "untyped_input"}) {
    SCOPED_TRACE(what);
    Model m = ShapeAfter(what);
    ASSERT_TRUE(InferShapes(m));
    const TypeInfo* s = FindValueType(m.graph, "s");
    ASSERT_NE(s, nullptr);
    EXPECT_EQ(s->elem_type, DType::kInt64);  // Shape's own inference still ran
    ASSERT_EQ(s->shape.size(), 1u);

    // Through the tool, which runs shape inference in several passes.
    TempDir dir;
    WriteBytes(dir / "in.onnx", SerializeModel(m));
    const auto r = RunCompress({dir / "in.onnx", "--fp16", "-o", dir / "out.onnx"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(std::filesystem::exists(dir / "out.onnx"));
  }
  // Where every Shape input is typed, data propagation still runs: Shape(h) of h [N, 4] has the value
  // (N, 4), so ConstantOfShape of it is [N, 4]; without data propagation only its rank would be known.
  Model typed = ShapeAfter("none");
  typed.graph.nodes.push_back(Node{"fill", "ConstantOfShape", "", {"s"}, {"c"}, {}, ""});
  typed.graph.outputs.push_back({"c", TypeInfo(), ""});
  ASSERT_TRUE(InferShapes(typed));
  const TypeInfo* c = FindValueType(typed.graph, "c");
  ASSERT_NE(c, nullptr);
  ASSERT_EQ(c->shape.size(), 2u);
  EXPECT_EQ(c->shape[0].param, "N");
  ASSERT_TRUE(c->shape[1].value.has_value());
  EXPECT_EQ(*c->shape[1].value, 4);
}

// fuzz_model_structured: an attribute of type TYPE_PROTO without a value was read, and writing it back
// (for shape inference, in the FP16 pass) threw std::out_of_range, which escaped as a foreign exception.
TEST(FuzzRegression, TypeProtoAttributeWithoutValueIsRefused) {
  Model m = testing::TinyModel();
  m.opset_imports.push_back({"custom", 3});
  Attribute a;
  a.name = "strides";
  a.type = AttrType::kTypeProto;
  m.graph.nodes.push_back(Node{"c", "Conv", "custom", {"y"}, {"z"}, {a}, ""});
  m.graph.outputs[0].name = "z";
  std::string bytes;
  ASSERT_NO_THROW(bytes = SerializeModel(m));  // the writer takes it without throwing
  TempDir dir;
  WriteBytes(dir / "in.onnx", bytes);
  ExpectError([&] { (void)LoadModel(dir / "in.onnx"); }, ErrorKind::kInvalidInput,
              {"node 'c'", "attribute 'strides'", "holds no value"});
}

// --- recipes -------------------------------------------------------------------------------------

// fuzz_recipe_json: a number too large for a double made nlohmann::json throw out_of_range, which is
// not a parse_error and escaped LoadRecipeFile.
TEST(FuzzRegression, RecipeJsonNumberOutOfRange) {
  TempDir dir;
  const std::string path = dir / "recipe.json";
  WriteBytes(path, R"({"name": 1e3088, "passes": []})");
  ExpectError([&] { LoadRecipeFile(path); }, ErrorKind::kUsage, {path, "invalid JSON", "number overflow parsing '1e3088'"});
  const auto r = RunCompress({SourcePath("models/mlp.onnx"), "--recipe", path, "-o", dir / "out.onnx"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("invalid JSON"), std::string::npos) << r.err;
  EXPECT_FALSE(std::ifstream(dir / "out.onnx").good());
}

// fuzz_recipe_yaml: a YAML string that is not UTF-8 passed validation; Recipe::ToJson().dump() (the
// output's metadata) or the dump of the value in an "option of the wrong type" message then threw
// json::type_error.
TEST(FuzzRegression, RecipeYamlInvalidUtf8) {
  TempDir dir;
  const std::string path = dir / "recipe.yaml";
  WriteBytes(path, "passes:\n  - pass: fp16\n    options: {block_ops: [S\x9c\x9c]}\n");
  ExpectError([&] { LoadRecipeFile(path); }, ErrorKind::kUsage, {path, "invalid YAML: the text is not valid UTF-8"});
  // The same bytes where an option of another type belongs: the error message quoted the value.
  WriteBytes(path, "passes:\n  - pass: fp16\n    options: {keep_io_types: [S\x9c\x9c]}\n");
  ExpectError([&] { LoadRecipeFile(path); }, ErrorKind::kUsage, {path, "invalid YAML: the text is not valid UTF-8"});
  const auto r = RunCompress({SourcePath("models/mlp.onnx"), "--recipe", path, "-o", dir / "out.onnx"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("not valid UTF-8"), std::string::npos) << r.err;
  EXPECT_FALSE(std::ifstream(dir / "out.onnx").good());
  // The same through a command-line flag: option values must be UTF-8 whatever their origin.
  const auto f = RunCompress({SourcePath("models/mlp.onnx"), "--fp16", "--fp16-block-ops", "Relu,S\x9c",
                              "-o", dir / "out.onnx"});
  EXPECT_EQ(f.exit_code, 2) << f.err;
  EXPECT_NE(f.err.find("must be valid UTF-8 text"), std::string::npos) << f.err;
  EXPECT_FALSE(std::ifstream(dir / "out.onnx").good());
}

// --- calibration tables --------------------------------------------------------------------------

std::string Table(const std::string& header, const std::string& tensor) {
  return R"({"schema": "compress.calib/1", "data_sha256": "00", "samples": 1, )" + header +
         R"("tensors": {"x": )" + tensor + "}}";
}
const char* const kGoodTensor =
    R"({"count": 4, "non_finite": 0, "min": -1, "max": 1, "hist_range": 1, "hist_offset": 2, "hist": [1, 3]})";

TEST(FuzzRegression, CalibTableNumberOutOfRange) {
  TempDir dir;
  const std::string path = dir / "table.json";
  WriteBytes(path, Table(R"("bins": 1e3088, )", kGoodTensor));
  ExpectError([&] { CalibrationTable::Load(path); }, ErrorKind::kInvalidInput, {path, "invalid JSON"});
}

// A schema that is not a string made nlohmann::json::value() throw type_error.
TEST(FuzzRegression, CalibTableSchemaOfWrongType) {
  TempDir dir;
  const std::string path = dir / "table.json";
  WriteBytes(path, R"({"schema": 1, "tensors": {}})");
  ExpectError([&] { CalibrationTable::Load(path); }, ErrorKind::kInvalidInput, {path, "not a calibration table"});
}

// hist_offset -1 became SIZE_MAX, offset + size wrapped to 0 and passed the bounds check: a write
// before the histogram (heap-buffer-overflow).
TEST(FuzzRegression, CalibTableNegativeHistogramOffset) {
  TempDir dir;
  const std::string path = dir / "table.json";
  WriteBytes(path, Table(R"("bins": 8, )", R"({"count": 4, "non_finite": 0, "min": -1, "max": 1, "hist_range": 1,
      "hist_offset": -1, "hist": [5]})"));
  ExpectError([&] { CalibrationTable::Load(path); }, ErrorKind::kInvalidInput,
              {path, "tensor 'x'", "1 counts at offset -1 does not fit 8 bins"});
  WriteBytes(path, Table(R"("bins": 8, )", R"({"count": 4, "non_finite": 0, "min": -1, "max": 1, "hist_range": 1,
      "hist_offset": 7, "hist": [1, 2]})"));
  ExpectError([&] { CalibrationTable::Load(path); }, ErrorKind::kInvalidInput,
              {path, "tensor 'x'", "2 counts at offset 7 does not fit 8 bins"});
}

// Floats where integers belong were converted with static_cast (undefined for 1e300); a negative
// count made the entropy search take the log of a negative mass.
TEST(FuzzRegression, CalibTableNumbersOfWrongKind) {
  TempDir dir;
  const std::string path = dir / "table.json";
  WriteBytes(path, Table(R"("bins": 8, )", R"({"count": 1e300, "non_finite": 0, "min": -1, "max": 1,
      "hist_range": 1, "hist_offset": 0, "hist": []})"));
  ExpectError([&] { CalibrationTable::Load(path); }, ErrorKind::kInvalidInput,
              {path, "tensor 'x'", "'count' must be an integer, got 1e+300"});
  WriteBytes(path, Table(R"("bins": 8.5e9, )", kGoodTensor));
  ExpectError([&] { CalibrationTable::Load(path); }, ErrorKind::kInvalidInput, {path, "'bins' must be an integer"});
  WriteBytes(path, Table(R"("bins": 8, )", R"({"count": 4, "non_finite": 0, "min": -1, "max": 1, "hist_range": 1,
      "hist_offset": 0, "hist": [1, -3]})"));
  ExpectError([&] { CalibrationTable::Load(path); }, ErrorKind::kInvalidInput,
              {path, "tensor 'x'", "counts must be non-negative integers, got -3"});
  WriteBytes(path, Table(R"("bins": 8, )", R"({"count": 4, "non_finite": 0, "min": -1, "max": 1, "hist_range": 1,
      "hist_offset": 0, "hist": [1, 2.5]})"));
  ExpectError([&] { CalibrationTable::Load(path); }, ErrorKind::kInvalidInput, {path, "got 2.5"});
  WriteBytes(path, Table(R"("bins": 8, )", "[1, 2]"));
  ExpectError([&] { CalibrationTable::Load(path); }, ErrorKind::kInvalidInput, {path, "tensor 'x': expected an object"});
}

// bins up to 2^20 were accepted: the entropy search is quadratic in them (a hang), and each tensor of
// the table holds every bin in memory whatever the file lists (a few bytes per tensor, 8 MiB each).
TEST(FuzzRegression, CalibTableSizeLimits) {
  TempDir dir;
  const std::string path = dir / "table.json";
  WriteBytes(path, Table(R"("bins": 1048576, )", kGoodTensor));
  ExpectError([&] { CalibrationTable::Load(path); }, ErrorKind::kInvalidInput,
              {path, "bins must be a multiple of 4 between 4 and 16384, got 1048576"});
  std::string many = R"({"schema": "compress.calib/1", "data_sha256": "", "samples": 1, "bins": 16384, "tensors": {)";
  const int n = static_cast<int>(kMaxTableHistogramEntries / kMaxHistogramBins) + 1;
  for (int i = 0; i < n; ++i) many += (i ? ",\"" : "\"") + std::to_string(i) + "\": {}";
  WriteBytes(path, many + "}}");
  ExpectError([&] { CalibrationTable::Load(path); }, ErrorKind::kInvalidInput,
              {path, "2049 tensors of 16384 bins exceed the limit of 33554432 histogram counts"});
  // The largest accepted table still loads and gives a valid range.
  WriteBytes(path, Table(R"("bins": 16384, )", R"({"count": 4, "non_finite": 0, "min": -1, "max": 1,
      "hist_range": 1, "hist_offset": 16380, "hist": [1, 1, 1, 1]})"));
  const CalibrationTable t = CalibrationTable::Load(path);
  ASSERT_EQ(t.tensors.at("x").hist.size(), 16384u);
  EXPECT_EQ(t.tensors.at("x").hist[16383], 1);
  const QuantRange r = ComputeRange(t.tensors.at("x"), RangeOptions{});
  EXPECT_EQ(r.lo, -1.0f);
  EXPECT_EQ(r.hi, 1.0f);
}

}  // namespace
}  // namespace compress

namespace compress {
namespace {

// The fast stride-1 depthwise Conv copied its rows out in whole vectors of 8 floats, each spilling into the
// next row: with outputs narrower than that, the second-to-last row spilled past the end of the output
// (found by fuzz_model_structured through a training step at batch 2). Equal to the reference, and clean
// under AddressSanitizer, for widths 1 to 9.
TEST(FuzzRegression, NarrowDepthwiseConvStaysInsideItsOutput) {
  for (int64_t width = 1; width <= 9; ++width) {
    Node n;
    n.op_type = "Conv";
    n.name = "dw";
    n.inputs = {"x", "w", "b"};
    n.outputs = {"y"};
    n.attributes = {Attribute::Int("group", 3), Attribute::Ints("pads", {1, 1, 1, 1}),
                    Attribute::Ints("kernel_shape", {3, 3})};
    Tensor x(DType::kFloat, {2, 3, 4, width}), w(DType::kFloat, {3, 1, 3, 3}), b(DType::kFloat, {3});
    for (int64_t i = 0; i < x.numel(); ++i) x.mutable_data<float>()[i] = static_cast<float>(i % 13) - 6.0f;
    for (int64_t i = 0; i < w.numel(); ++i) w.mutable_data<float>()[i] = 0.25f * static_cast<float>(i % 5) - 0.5f;
    for (int64_t i = 0; i < b.numel(); ++i) b.mutable_data<float>()[i] = static_cast<float>(i);
    for (const bool constant_weights : {false, true}) {
      const std::vector<bool> constant = {false, constant_weights, constant_weights};
      const auto fast = testing::RunNode(n, {x, w, b}, 17, false, 1, constant);
      const auto ref = testing::RunNode(n, {x, w, b}, 17, true, 1, constant);
      ASSERT_EQ(fast.size(), 1u);
      ASSERT_EQ(ref.size(), 1u);
      ASSERT_EQ(fast[0].dims(), ref[0].dims());
      for (int64_t i = 0; i < fast[0].numel(); ++i) {
        EXPECT_NEAR(fast[0].data<float>()[i], ref[0].data<float>()[i], 1e-5) << "width " << width << " at " << i;
      }
    }
  }
}

}  // namespace
}  // namespace compress
