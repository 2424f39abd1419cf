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

onnx::TensorProto FloatTensor(const std::string& name, std::vector<float> values, bool typed) {
  onnx::TensorProto t;
  t.set_name(name);
  t.set_data_type(onnx::TensorProto::FLOAT);
  t.add_dims(static_cast<int64_t>(values.size()));
  if (typed) {
    for (float v : values) t.add_float_data(v);
  } else {
    t.set_raw_data(std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float)));
  }
  return t;
}

onnx::GraphProto Body(const std::string& name, const std::string& captured) {
  onnx::GraphProto g;
  g.set_name(name);
  auto* n = g.add_node();
  n->set_op_type("Identity");
  n->add_input(captured);
  n->add_output(name + "_out");
  auto* o = g.add_output();
  o->set_name(name + "_out");
  o->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
  return g;
}

// A model exercising every part of the format the IR must carry.
onnx::ModelProto EveryFeatureModel() {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.set_producer_name("hand");
  m.set_producer_version("1.2");
  m.set_domain("org.example");
  m.set_model_version(7);
  m.set_doc_string("model doc");
  auto* op = m.add_opset_import();
  op->set_version(15);
  op = m.add_opset_import();
  op->set_domain("com.example");
  op->set_version(3);
  auto* kv = m.add_metadata_props();
  kv->set_key("author");
  kv->set_value("someone");
  auto* f = m.add_functions();
  f->set_name("MyFn");
  f->set_domain("com.example");
  f->add_input("a");
  f->add_output("b");
  auto* fn = f->add_node();
  fn->set_op_type("Identity");
  fn->add_input("a");
  fn->add_output("b");
  f->add_opset_import()->set_version(15);

  onnx::GraphProto* g = m.mutable_graph();
  g->set_name("main");
  g->set_doc_string("graph doc");
  auto* in = g->add_input();
  in->set_name("x");
  in->set_doc_string("input doc");
  auto* tt = in->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(onnx::TensorProto::FLOAT);
  auto* d = tt->mutable_shape()->add_dim();
  d->set_dim_param("batch");
  d->set_denotation("DATA_BATCH");
  tt->mutable_shape()->add_dim()->set_dim_value(3);
  tt->mutable_shape()->add_dim();  // unknown dim
  auto* cond = g->add_input();
  cond->set_name("cond");
  cond->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::BOOL);
  *g->add_initializer() = FloatTensor("w", {1, 2, 3}, false);
  *g->add_initializer() = FloatTensor("w_typed", {4, 5}, true);
  auto* sp = g->add_sparse_initializer();
  *sp->mutable_values() = FloatTensor("sp", {9, 8}, false);
  sp->mutable_indices()->set_data_type(onnx::TensorProto::INT64);
  sp->mutable_indices()->add_dims(2);
  sp->mutable_indices()->add_int64_data(1);
  sp->mutable_indices()->add_int64_data(5);
  sp->add_dims(2);
  sp->add_dims(3);

  // Weights in Constant nodes, typed and raw.
  auto* c = g->add_node();
  c->set_op_type("Constant");
  c->set_name("const_w");
  c->add_output("cw");
  auto* ca = c->add_attribute();
  ca->set_name("value");
  ca->set_type(onnx::AttributeProto::TENSOR);
  *ca->mutable_t() = FloatTensor("", {0.5f, -0.5f}, true);
  auto* c2 = g->add_node();
  c2->set_op_type("Constant");
  c2->add_output("ci");
  auto* ca2 = c2->add_attribute();
  ca2->set_name("value_ints");
  ca2->set_type(onnx::AttributeProto::INTS);
  ca2->add_ints(1);
  ca2->add_ints(-2);

  // An op of an unknown domain with one attribute of every kind.
  auto* u = g->add_node();
  u->set_op_type("Mystery");
  u->set_domain("com.example");
  u->set_name("mystery");
  u->set_doc_string("node doc");
  u->add_input("x");
  u->add_input("");  // omitted optional input
  u->add_input("cw");
  u->add_output("u0");
  u->add_output("");
  auto attr = [&](const std::string& name, onnx::AttributeProto::AttributeType type) {
    auto* a = u->add_attribute();
    a->set_name(name);
    a->set_type(type);
    return a;
  };
  attr("f", onnx::AttributeProto::FLOAT)->set_f(1.5f);
  auto* ai = attr("i", onnx::AttributeProto::INT);
  ai->set_i(-7);
  ai->set_doc_string("attribute doc");
  attr("s", onnx::AttributeProto::STRING)->set_s(std::string("bytes\0with nul", 14));
  *attr("t", onnx::AttributeProto::TENSOR)->mutable_t() = FloatTensor("tt", {1}, false);
  *attr("g", onnx::AttributeProto::GRAPH)->mutable_g() = Body("gbody", "x");
  auto* afs = attr("floats", onnx::AttributeProto::FLOATS);
  afs->add_floats(0.25f);
  afs->add_floats(-1e30f);
  auto* ais = attr("ints", onnx::AttributeProto::INTS);
  ais->add_ints(INT64_MIN);
  ais->add_ints(INT64_MAX);
  auto* ass = attr("strings", onnx::AttributeProto::STRINGS);
  ass->add_strings("a");
  ass->add_strings("");
  auto* ats = attr("tensors", onnx::AttributeProto::TENSORS);
  *ats->add_tensors() = FloatTensor("t1", {1, 2}, true);
  *ats->add_tensors() = FloatTensor("t2", {3}, false);
  auto* ags = attr("graphs", onnx::AttributeProto::GRAPHS);
  *ags->add_graphs() = Body("g1", "x");
  *ags->add_graphs() = Body("g2", "cw");
  auto* asp = attr("sparse", onnx::AttributeProto::SPARSE_TENSOR);
  *asp->mutable_sparse_tensor() = *sp;
  auto* asps = attr("sparses", onnx::AttributeProto::SPARSE_TENSORS);
  *asps->add_sparse_tensors() = *sp;
  auto* atp = attr("tp", onnx::AttributeProto::TYPE_PROTO);
  atp->mutable_tp()->mutable_sequence_type()->mutable_elem_type()->mutable_tensor_type()->set_elem_type(
      onnx::TensorProto::INT8);
  auto* atps = attr("tps", onnx::AttributeProto::TYPE_PROTOS);
  auto* map = atps->add_type_protos()->mutable_map_type();
  map->set_key_type(onnx::TensorProto::INT64);
  map->mutable_value_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
  atps->add_type_protos()->mutable_optional_type()->mutable_elem_type()->mutable_tensor_type()->set_elem_type(
      onnx::TensorProto::DOUBLE);

  // Control flow reading values of the enclosing graph.
  auto* iff = g->add_node();
  iff->set_op_type("If");
  iff->add_input("cond");
  iff->add_output("if_out");
  auto* then_a = iff->add_attribute();
  then_a->set_name("then_branch");
  then_a->set_type(onnx::AttributeProto::GRAPH);
  *then_a->mutable_g() = Body("then", "u0");
  auto* else_a = iff->add_attribute();
  else_a->set_name("else_branch");
  else_a->set_type(onnx::AttributeProto::GRAPH);
  *else_a->mutable_g() = Body("else", "w");

  auto* out = g->add_output();
  out->set_name("if_out");
  out->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
  auto* vi = g->add_value_info();
  vi->set_name("u0");
  vi->mutable_type()->set_denotation("TENSOR");
  vi->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
  auto* vs = g->add_value_info();
  vs->set_name("cw");
  vs->mutable_type()->mutable_sparse_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
  auto* ti = m.add_training_info();
  ti->mutable_algorithm()->set_name("train");
  return m;
}

TEST(RoundTrip, KeepsEveryFeatureOfTheFormat) {
  TempDir tmp;
  const onnx::ModelProto original = EveryFeatureModel();
  testing::WriteBytes(tmp / "in.onnx", original.SerializeAsString());
  const Model model = LoadModel(tmp / "in.onnx");
  EXPECT_EQ(model.metadata_props.size(), 1u);
  EXPECT_EQ(model.functions.size(), 1u);
  EXPECT_EQ(model.graph.sparse_initializers.size(), 1u);
  SaveModel(model, tmp / "out.onnx");
  onnx::ModelProto a = original, b;
  ASSERT_TRUE(b.ParseFromString(testing::ReadBytes(tmp / "out.onnx")));
  NormaliseGraph(a.mutable_graph());
  NormaliseGraph(b.mutable_graph());
  google::protobuf::util::MessageDifferencer diff;
  diff.set_message_field_comparison(google::protobuf::util::MessageDifferencer::EQUIVALENT);
  std::string report;
  diff.ReportDifferencesToString(&report);
  EXPECT_TRUE(diff.Compare(a, b)) << report;
  // Typed data became raw bytes with the same values.
  EXPECT_TRUE(b.graph().initializer(1).has_raw_data());
  EXPECT_EQ(b.graph().initializer(1).float_data_size(), 0);
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
