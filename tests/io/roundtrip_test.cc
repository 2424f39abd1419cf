// Load -> save round trip over every model.onnx of Debian's libonnx-testdata.
//
// The oracle is independent of our converter: both files are parsed with protobuf, every tensor is
// normalised to raw little-endian bytes by the small decoder below, and MessageDifferencer compares the
// two messages field by field (unset and default-valued fields count as equal, as ONNX reads them so).

#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <iostream>

#include "compress/io/onnx_io.h"
#include "compress/util/error.h"
#include "onnx/onnx_pb.h"
#include "support/test_support.h"

namespace compress {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

template <typename T, typename Field>
std::string PackAs(const Field& field) {
  std::string out(static_cast<size_t>(field.size()) * sizeof(T), '\0');
  for (int i = 0; i < field.size(); ++i) {
    const T v = static_cast<T>(field.Get(i));
    std::memcpy(out.data() + static_cast<size_t>(i) * sizeof(T), &v, sizeof(T));
  }
  return out;
}

// Moves typed data fields into raw_data, as the ONNX spec defines their encoding.
void NormaliseTensor(onnx::TensorProto* t) {
  if (t->has_raw_data() || t->data_type() == onnx::TensorProto::STRING) return;
  std::string raw;
  switch (t->data_type()) {
    case onnx::TensorProto::FLOAT:
    case onnx::TensorProto::COMPLEX64: raw = PackAs<float>(t->float_data()); break;
    case onnx::TensorProto::DOUBLE:
    case onnx::TensorProto::COMPLEX128: raw = PackAs<double>(t->double_data()); break;
    case onnx::TensorProto::INT64: raw = PackAs<int64_t>(t->int64_data()); break;
    case onnx::TensorProto::UINT32: raw = PackAs<uint32_t>(t->uint64_data()); break;
    case onnx::TensorProto::UINT64: raw = PackAs<uint64_t>(t->uint64_data()); break;
    case onnx::TensorProto::INT32: raw = PackAs<int32_t>(t->int32_data()); break;
    case onnx::TensorProto::INT16: raw = PackAs<int16_t>(t->int32_data()); break;
    case onnx::TensorProto::UINT16:
    case onnx::TensorProto::FLOAT16:
    case onnx::TensorProto::BFLOAT16: raw = PackAs<uint16_t>(t->int32_data()); break;
    case onnx::TensorProto::INT8: raw = PackAs<int8_t>(t->int32_data()); break;
    default: raw = PackAs<uint8_t>(t->int32_data()); break;
  }
  t->clear_float_data();
  t->clear_double_data();
  t->clear_int32_data();
  t->clear_int64_data();
  t->clear_uint64_data();
  t->set_raw_data(raw);
}

void NormaliseGraph(onnx::GraphProto* g);

void NormaliseAttribute(onnx::AttributeProto* a) {
  if (a->has_t()) NormaliseTensor(a->mutable_t());
  for (auto& t : *a->mutable_tensors()) NormaliseTensor(&t);
  if (a->has_sparse_tensor()) {
    NormaliseTensor(a->mutable_sparse_tensor()->mutable_values());
    NormaliseTensor(a->mutable_sparse_tensor()->mutable_indices());
  }
  for (auto& s : *a->mutable_sparse_tensors()) {
    NormaliseTensor(s.mutable_values());
    NormaliseTensor(s.mutable_indices());
  }
  if (a->has_g()) NormaliseGraph(a->mutable_g());
  for (auto& g : *a->mutable_graphs()) NormaliseGraph(&g);
}

void NormaliseGraph(onnx::GraphProto* g) {
  for (auto& t : *g->mutable_initializer()) NormaliseTensor(&t);
  for (auto& s : *g->mutable_sparse_initializer()) {
    NormaliseTensor(s.mutable_values());
    NormaliseTensor(s.mutable_indices());
  }
  for (auto& n : *g->mutable_node()) {
    for (auto& a : *n.mutable_attribute()) NormaliseAttribute(&a);
  }
}

onnx::ModelProto ParseNormalised(const std::string& path) {
  onnx::ModelProto m;
  const std::string bytes = testing::ReadBytes(path);
  EXPECT_TRUE(m.ParseFromString(bytes)) << path;
  NormaliseGraph(m.mutable_graph());
  return m;
}

std::vector<std::string> AllTestModels() {
  std::vector<std::string> paths;
  for (const char* folder : {"node", "pytorch-converted", "pytorch-operator", "real", "simple"}) {
    const fs::path dir = fs::path(ONNX_TESTDATA_DIR) / folder;
    if (!fs::exists(dir)) continue;
    for (const auto& e : fs::recursive_directory_iterator(dir)) {
      if (e.path().filename() == "model.onnx") paths.push_back(e.path().string());
    }
  }
  std::sort(paths.begin(), paths.end());
  return paths;
}

TEST(RoundTrip, EveryConformanceModelSurvivesLoadAndSave) {
  const auto models = AllTestModels();
  ASSERT_GT(models.size(), 1000u) << "libonnx-testdata is not installed (run tools/setup.sh)";
  TempDir tmp;
  int accepted_before = 0, accepted_after = 0, loaded = 0, load_failures = 0;
  int64_t nodes = 0, tensors = 0;
  for (const auto& path : models) {
    SCOPED_TRACE(path);
    const CheckResult before = CheckModelFile(path);
    Model model;
    try {
      model = LoadModel(path);
    } catch (const Error& e) {
      // A model the checker accepts must load; one it rejects may be refused, with a message.
      EXPECT_FALSE(before.ok) << "checker accepts it but loading failed: " << e.what();
      ++load_failures;
      continue;
    }
    ++loaded;
    const std::string out = tmp / "out.onnx";
    SaveModel(model, out);
    const CheckResult after = CheckModelFile(out);
    if (before.ok) {
      ++accepted_before;
      EXPECT_TRUE(after.ok) << after.message;
      if (after.ok) ++accepted_after;
    }
    const onnx::ModelProto a = ParseNormalised(path);
    const onnx::ModelProto b = ParseNormalised(out);
    google::protobuf::util::MessageDifferencer diff;
    diff.set_message_field_comparison(google::protobuf::util::MessageDifferencer::EQUIVALENT);
    std::string report;
    diff.ReportDifferencesToString(&report);
    EXPECT_TRUE(diff.Compare(a, b)) << report.substr(0, 2000);
    nodes += a.graph().node_size();
    tensors += a.graph().initializer_size();
  }
  std::cout << "[round trip] " << models.size() << " models under " << ONNX_TESTDATA_DIR << ": " << loaded
            << " loaded, " << load_failures << " refused; checker accepted " << accepted_before
            << " before and " << accepted_after << " of those after; " << nodes << " nodes and " << tensors
            << " initializers compared\n";
  EXPECT_EQ(accepted_before, accepted_after);
  EXPECT_GT(accepted_before, 1000);
}

// Saving a loaded model and loading it again gives the same IR, and saving twice gives the same bytes.
TEST(RoundTrip, SaveIsDeterministicAndStable) {
  TempDir tmp;
  const Model m = testing::TinyModel();
  SaveModel(m, tmp / "a.onnx");
  SaveModel(LoadModel(tmp / "a.onnx"), tmp / "b.onnx");
  EXPECT_EQ(testing::ReadBytes(tmp / "a.onnx"), testing::ReadBytes(tmp / "b.onnx"));
}

}  // namespace
}  // namespace compress
