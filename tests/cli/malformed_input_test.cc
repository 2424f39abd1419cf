// Malformed and hostile inputs, run through the real `compress` binary (also under ASan/UBSan in the
// sanitizer build). Every case must end with its documented exit code, exactly one line on stderr that
// names the culprit, no file left in the output folder, the input untouched, and no sanitizer report.

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <random>

#include "compress/io/onnx_io.h"
#include "onnx/onnx_pb.h"
#include "support/test_support.h"

namespace compress {
namespace {

using testing::TempDir;

constexpr int kExitUsage = 2;
constexpr int kExitInvalid = 3;
constexpr int kExitIO = 4;

onnx::ModelProto ValidProto() {
  onnx::ModelProto p;
  EXPECT_TRUE(p.ParseFromString(SerializeModel(testing::TinyModel())));
  return p;
}

onnx::TensorProto* Weight(onnx::ModelProto& p) {
  for (auto& t : *p.mutable_graph()->mutable_initializer()) {
    if (t.name() == "W") return &t;
  }
  ADD_FAILURE() << "no W";
  return nullptr;
}

onnx::NodeProto* NodeNamed(onnx::ModelProto& p, const std::string& name) {
  for (auto& n : *p.mutable_graph()->mutable_node()) {
    if (n.name() == name) return &n;
  }
  ADD_FAILURE() << "no node " << name;
  return nullptr;
}

// Moves W's 48 bytes to external data with the given key/value pairs.
void MakeExternal(onnx::ModelProto& p, const std::vector<std::pair<std::string, std::string>>& kv) {
  onnx::TensorProto* w = Weight(p);
  w->clear_raw_data();
  w->set_data_location(onnx::TensorProto::EXTERNAL);
  for (const auto& [k, v] : kv) {
    auto* e = w->add_external_data();
    e->set_key(k);
    e->set_value(v);
  }
}

std::string WeightBytes() { return std::string(48, '\x01'); }


// One-node models for the operator checks. The graph reads x (float32 of `x_dims`) and writes y.
Model OneNodeModel(int64_t opset, Node node, std::vector<Tensor> initializers = {},
                   std::vector<int64_t> x_dims = {1, 4, 8, 8}) {
  Model m;
  m.ir_version = 8;
  m.opset_imports = {{"", opset}};
  m.graph.name = "g";
  std::vector<Dim> dims;
  for (int64_t d : x_dims) dims.push_back(Dim::Fixed(d));
  m.graph.inputs.push_back({"x", TypeInfo::Tensor(DType::kFloat, dims), ""});
  TypeInfo out;
  out.kind = TypeInfo::Kind::kTensor;
  out.elem_type = DType::kFloat;
  m.graph.outputs.push_back({"y", out, ""});
  m.graph.initializers = std::move(initializers);
  m.graph.nodes.push_back(std::move(node));
  return m;
}

// x[1,4,8,8] -> Conv(W [4,2,3,3], group 2) -> y: valid until `edit` changes it.
std::vector<std::string> ConvWith(const TempDir& dir, const std::function<void(Node&)>& edit) {
  Node conv{"conv", "Conv", "", {"x", "W"}, {"y"}, {Attribute::Int("group", 2)}, ""};
  edit(conv);
  const Model m = OneNodeModel(13, conv, {Tensor::FromVector<float>({4, 2, 3, 3}, std::vector<float>(72, 0.5f), "W")});
  testing::WriteBytes(dir / "model.onnx", SerializeModel(m));
  return {dir / "model.onnx", "-o", dir / "out.onnx"};
}

// An opset-9 Upsample without its second input (scales), which the ONNX version converter crashes on.
std::vector<std::string> UpsampleWithoutScales(const TempDir& dir, std::vector<std::string> flags) {
  Node up{"up", "Upsample", "", {"x"}, {"y"}, {Attribute::String("mode", "nearest")}, ""};
  testing::WriteBytes(dir / "model.onnx", SerializeModel(OneNodeModel(9, up, {}, {1, 1, 4, 4})));
  std::vector<std::string> args = {dir / "model.onnx"};
  args.insert(args.end(), flags.begin(), flags.end());
  args.insert(args.end(), {"-o", dir / "out.onnx"});
  return args;
}

std::vector<std::string> WriteModel(const TempDir& dir, const Model& m) {
  testing::WriteBytes(dir / "model.onnx", SerializeModel(m));
  return {dir / "model.onnx", "-o", dir / "out.onnx"};
}

// cond -> If(then_branch: Identity(x)) -> y, without else_branch.
Model IfWithoutElse() {
  Model m = OneNodeModel(13, Node{"if", "If", "", {"cond"}, {"y"}, {}, ""});
  m.graph.inputs.push_back({"cond", TypeInfo::Tensor(DType::kBool, {}), ""});
  Graph then_branch;
  then_branch.name = "then";
  then_branch.nodes.push_back(Node{"", "Identity", "", {"x"}, {"t"}, {}, ""});
  then_branch.outputs.push_back({"t", m.graph.outputs[0].type, ""});
  Attribute a;
  a.name = "then_branch";
  a.type = AttrType::kGraph;
  a.graphs.push_back(then_branch);
  m.graph.nodes[0].attributes.push_back(a);
  return m;
}

struct Case {
  std::string name;
  // Prepares the folder and returns the arguments (the model path is <dir>/model.onnx unless changed).
  std::function<std::vector<std::string>(const TempDir& dir)> setup;
  int exit_code;
  std::vector<std::string> message_parts;  // each must appear in the one-line error
};

std::vector<std::string> WriteModelArgs(const TempDir& dir, const onnx::ModelProto& p) {
  testing::WriteBytes(dir / "model.onnx", p.SerializeAsString());
  return {dir / "model.onnx", "-o", dir / "out.onnx"};
}

std::vector<std::string> ModelWith(const TempDir& dir, const std::function<void(onnx::ModelProto&)>& edit) {
  onnx::ModelProto p = ValidProto();
  edit(p);
  return WriteModelArgs(dir, p);
}

std::vector<Case> Cases() {
  std::vector<Case> cases;
  cases.push_back({"empty_file",
                   [](const TempDir& d) {
                     testing::WriteBytes(d / "model.onnx", "");
                     return std::vector<std::string>{d / "model.onnx", "-o", d / "out.onnx"};
                   },
                   kExitInvalid, {"model.onnx", "empty"}});
  cases.push_back({"truncated_file",
                   [](const TempDir& d) {
                     Model m = testing::TinyModel();
                     m.graph.initializers[0] = Tensor(DType::kFloat, {4, 3}, "W");
                     m.graph.initializers.push_back(Tensor(DType::kFloat, {64, 64}, "unused_big"));
                     const std::string bytes = SerializeModel(m);
                     testing::WriteBytes(d / "model.onnx", bytes.substr(0, bytes.size() / 2));
                     return std::vector<std::string>{d / "model.onnx", "-o", d / "out.onnx"};
                   },
                   kExitInvalid, {"model.onnx", "truncated"}});
  cases.push_back({"random_bytes",
                   [](const TempDir& d) {
                     std::mt19937 rng(1234);
                     std::string bytes(4096, '\0');
                     for (auto& c : bytes) c = static_cast<char>(rng() & 0xff);
                     testing::WriteBytes(d / "model.onnx", bytes);
                     return std::vector<std::string>{d / "model.onnx", "-o", d / "out.onnx"};
                   },
                   kExitInvalid, {"model.onnx"}});
  cases.push_back({"raw_data_short", [](const TempDir& d) {
                     return ModelWith(d, [](onnx::ModelProto& p) { Weight(p)->set_raw_data(std::string(44, 'a')); });
                   }, kExitInvalid, {"'W'", "raw_data holds 44 bytes", "needs 48"}});
  cases.push_back({"raw_data_long", [](const TempDir& d) {
                     return ModelWith(d, [](onnx::ModelProto& p) { Weight(p)->set_raw_data(std::string(52, 'a')); });
                   }, kExitInvalid, {"'W'", "raw_data holds 52 bytes", "needs 48"}});
  cases.push_back({"negative_dim", [](const TempDir& d) {
                     return ModelWith(d, [](onnx::ModelProto& p) { Weight(p)->set_dims(0, -4); });
                   }, kExitInvalid, {"'W'", "negative dimension -4"}});
  cases.push_back({"overflowing_dims", [](const TempDir& d) {
                     return ModelWith(d, [](onnx::ModelProto& p) {
                       Weight(p)->set_dims(0, int64_t{1} << 40);
                       Weight(p)->set_dims(1, int64_t{1} << 40);
                     });
                   }, kExitInvalid, {"'W'", "overflows"}});
  cases.push_back({"unknown_dtype", [](const TempDir& d) {
                     return ModelWith(d, [](onnx::ModelProto& p) { Weight(p)->set_data_type(99); });
                   }, kExitInvalid, {"'W'", "unknown element type 99"}});
  cases.push_back({"typed_data_count", [](const TempDir& d) {
                     return ModelWith(d, [](onnx::ModelProto& p) {
                       Weight(p)->clear_raw_data();
                       for (int i = 0; i < 5; ++i) Weight(p)->add_float_data(1.0f);
                     });
                   }, kExitInvalid, {"'W'", "float_data holds 5 values", "needs 12"}});
  cases.push_back({"input_nobody_produces", [](const TempDir& d) {
                     return ModelWith(d, [](onnx::ModelProto& p) { NodeNamed(p, "matmul")->set_input(0, "ghost"); });
                   }, kExitInvalid, {"'matmul'", "'ghost'"}});
  cases.push_back({"cycle", [](const TempDir& d) {
                     return ModelWith(d, [](onnx::ModelProto& p) { NodeNamed(p, "relu")->set_input(0, "y"); });
                   }, kExitInvalid, {"cycle"}});
  cases.push_back({"duplicate_output_name", [](const TempDir& d) {
                     return ModelWith(d, [](onnx::ModelProto& p) {
                       NodeNamed(p, "matmul")->set_output(0, "h");
                       NodeNamed(p, "add")->set_input(0, "h");
                     });
                   }, kExitInvalid, {"'h'", "more than once", "'matmul'"}});
  cases.push_back({"graph_output_not_produced", [](const TempDir& d) {
                     return ModelWith(d, [](onnx::ModelProto& p) { NodeNamed(p, "add")->set_output(0, "other"); });
                   }, kExitInvalid, {"output 'y'", "not produced"}});
  cases.push_back({"missing_graph", [](const TempDir& d) {
                     return ModelWith(d, [](onnx::ModelProto& p) { p.clear_graph(); });
                   }, kExitInvalid, {"model.onnx", "no graph"}});
  cases.push_back({"missing_opset", [](const TempDir& d) {
                     return ModelWith(d, [](onnx::ModelProto& p) { p.clear_opset_import(); });
                   }, kExitInvalid, {"model.onnx", "opset"}});
  cases.push_back({"unknown_attribute_type", [](const TempDir& d) {
                     return ModelWith(d, [](onnx::ModelProto& p) {
                       auto* a = NodeNamed(p, "relu")->add_attribute();
                       a->set_name("weird");
                       // Through reflection, an out-of-range enum is stored as a file would carry it (set_type
                       // asserts on it).
                       a->GetReflection()->SetEnumValue(a, a->GetDescriptor()->FindFieldByName("type"), 99);
                     });
                   }, kExitInvalid, {"'relu'", "'weird'", "unknown or missing attribute type"}});
  cases.push_back({"sparse_index_out_of_range", [](const TempDir& d) {
                     return ModelWith(d, [](onnx::ModelProto& p) {
                       auto* s = p.mutable_graph()->add_sparse_initializer();
                       auto* v = s->mutable_values();
                       v->set_name("S");
                       v->set_data_type(onnx::TensorProto::FLOAT);
                       v->add_dims(1);
                       v->add_float_data(1.0f);
                       auto* i = s->mutable_indices();
                       i->set_data_type(onnx::TensorProto::INT64);
                       i->add_dims(1);
                       i->add_int64_data(1000);
                       s->add_dims(10);
                     });
                   }, kExitInvalid, {"'S'", "sparse index 1000 is out of range"}});
  // Operators checked against their ONNX schema (arity, attributes, opset) and convolution attributes.
  cases.push_back({"upsample9_without_scales", [](const TempDir& d) { return UpsampleWithoutScales(d, {}); },
                   kExitInvalid, {"model.onnx", "'up' (Upsample)", "1 input", "expected exactly 2"}});
  cases.push_back({"upsample9_without_scales_int8_dynamic",
                   [](const TempDir& d) { return UpsampleWithoutScales(d, {"--int8", "--dynamic"}); },
                   kExitInvalid, {"model.onnx", "'up' (Upsample)", "1 input", "expected exactly 2"}});
  cases.push_back({"upsample9_without_scales_int8_weights_only",
                   [](const TempDir& d) { return UpsampleWithoutScales(d, {"--int8", "--weights-only"}); },
                   kExitInvalid, {"model.onnx", "'up' (Upsample)", "1 input", "expected exactly 2"}});
  cases.push_back({"conv_without_weight", [](const TempDir& d) {
                     return ConvWith(d, [](Node& n) { n.inputs = {"x"}; });
                   }, kExitInvalid, {"model.onnx", "'conv' (Conv)", "1 input", "expected 2 to 3"}});
  cases.push_back({"conv_weight_empty_name", [](const TempDir& d) {
                     return ConvWith(d, [](Node& n) { n.inputs = {"x", ""}; });
                   }, kExitInvalid, {"'conv' (Conv)", "input 1 ('W')", "required but given as an empty name"}});
  cases.push_back({"gemm_one_input", [](const TempDir& d) {
                     return WriteModel(d, OneNodeModel(13, Node{"gemm", "Gemm", "", {"x"}, {"y"}, {}, ""}, {}, {2, 4}));
                   }, kExitInvalid, {"'gemm' (Gemm)", "1 input", "expected 2 to 3"}});
  cases.push_back({"if_without_else_branch", [](const TempDir& d) { return WriteModel(d, IfWithoutElse()); },
                   kExitInvalid, {"'if' (If)", "required attribute 'else_branch' (GRAPH)", "missing"}});
  cases.push_back({"conv_group_float", [](const TempDir& d) {
                     return ConvWith(d, [](Node& n) { n.attributes = {Attribute::Float("group", 2.0f)}; });
                   }, kExitInvalid, {"'conv' (Conv)", "'group'", "type FLOAT, expected INT"}});
  cases.push_back({"conv_group_string", [](const TempDir& d) {
                     return ConvWith(d, [](Node& n) { n.attributes = {Attribute::String("group", "two")}; });
                   }, kExitInvalid, {"'conv' (Conv)", "'group'", "type STRING, expected INT"}});
  cases.push_back({"conv_group_negative", [](const TempDir& d) {
                     return ConvWith(d, [](Node& n) { n.attributes = {Attribute::Int("group", -2)}; });
                   }, kExitInvalid, {"'conv' (Conv)", "'group' is -2", "expected a positive integer"}});
  cases.push_back({"conv_group_not_dividing_channels", [](const TempDir& d) {
                     return ConvWith(d, [](Node& n) { n.attributes = {Attribute::Int("group", 3)}; });
                   }, kExitInvalid, {"'conv' (Conv)", "4 channels", "group 3 does not divide"}});
  cases.push_back({"conv_kernel_shape_int", [](const TempDir& d) {
                     return ConvWith(d, [](Node& n) { n.attributes.push_back(Attribute::Int("kernel_shape", 3)); });
                   }, kExitInvalid, {"'conv' (Conv)", "'kernel_shape'", "type INT, expected INTS"}});
  cases.push_back({"conv_zero_stride", [](const TempDir& d) {
                     return ConvWith(d, [](Node& n) { n.attributes.push_back(Attribute::Ints("strides", {1, 0})); });
                   }, kExitInvalid, {"'conv' (Conv)", "'strides' is [1,0]", "expected positive values"}});
  cases.push_back({"conv_negative_pads", [](const TempDir& d) {
                     return ConvWith(d, [](Node& n) { n.attributes.push_back(Attribute::Ints("pads", {0, -1, 0, 0})); });
                   }, kExitInvalid, {"'conv' (Conv)", "'pads' is [0,-1,0,0]", "expected non-negative values"}});
  cases.push_back({"conv_pads_wrong_length", [](const TempDir& d) {
                     return ConvWith(d, [](Node& n) { n.attributes.push_back(Attribute::Ints("pads", {1, 1})); });
                   }, kExitInvalid, {"'conv' (Conv)", "'pads' has 2 values", "expected 4", "2 spatial axes"}});
  cases.push_back({"conv_kernel_shape_not_weight", [](const TempDir& d) {
                     return ConvWith(d, [](Node& n) { n.attributes.push_back(Attribute::Ints("kernel_shape", {5, 5})); });
                   }, kExitInvalid, {"'conv' (Conv)", "'kernel_shape' is [5,5]", "spatial size 3"}});
  cases.push_back({"op_not_in_declared_opset", [](const TempDir& d) {
                     return WriteModel(d, OneNodeModel(9, Node{"round", "Round", "", {"x"}, {"y"}, {}, ""}));
                   }, kExitInvalid, {"'round' (Round)", "not in opset 9", "first appears in opset 11"}});
  cases.push_back({"unknown_operator", [](const TempDir& d) {
                     return WriteModel(d, OneNodeModel(13, Node{"", "Frobnicate", "", {"x"}, {"y"}, {}, ""}));
                   }, kExitInvalid, {"node #0 (Frobnicate)", "not an operator of ai.onnx"}});
  cases.push_back({"ml_domain_not_imported", [](const TempDir& d) {
                     return WriteModel(d, OneNodeModel(13, Node{"norm", "Normalizer", "ai.onnx.ml", {"x"}, {"y"}, {}, ""}));
                   }, kExitInvalid, {"'norm' (ai.onnx.ml::Normalizer)", "domain 'ai.onnx.ml'", "does not import"}});
  cases.push_back({"custom_domain_not_imported", [](const TempDir& d) {
                     return WriteModel(d, OneNodeModel(13, Node{"", "Thing", "foo", {"x"}, {"y"}, {}, ""}));
                   }, kExitInvalid, {"node #0 (foo::Thing)", "domain 'foo'", "does not import"}});
  cases.push_back({"opset_99", [](const TempDir& d) {
                     return WriteModel(d, OneNodeModel(99, Node{"relu", "Relu", "", {"x"}, {"y"}, {}, ""}));
                   }, kExitInvalid, {"model.onnx", "domain 'ai.onnx' has version 99", "expected 1 to 17"}});
  cases.push_back({"relu_unknown_attribute", [](const TempDir& d) {
                     return WriteModel(d, OneNodeModel(14, Node{"relu", "Relu", "", {"x"}, {"y"},
                                                                {Attribute::Float("alpha", 0.1f)}, ""}));
                   }, kExitInvalid, {"'relu' (Relu)", "unknown attribute 'alpha'", "Relu-14 has no attributes"}});
  cases.push_back({"bad_node_inside_subgraph", [](const TempDir& d) {
                     Model m = IfWithoutElse();
                     Attribute e = m.graph.nodes[0].attributes[0];
                     e.name = "else_branch";
                     e.graphs[0].nodes[0].op_type = "Relu";
                     e.graphs[0].nodes[0].attributes.push_back(Attribute::Int("beta", 1));
                     m.graph.nodes[0].attributes.push_back(e);
                     return WriteModel(d, m);
                   }, kExitInvalid, {"node #0 (Relu) in attribute 'else_branch' of node 'if' (If)",
                                     "unknown attribute 'beta'"}});
  // External data.
  cases.push_back({"external_parent_dir", [](const TempDir& d) {
                     return ModelWith(d, [](onnx::ModelProto& p) { MakeExternal(p, {{"location", "../w.bin"}}); });
                   }, kExitInvalid, {"'W'", "'../w.bin'", ".."}});
  cases.push_back({"external_dotdot_inside", [](const TempDir& d) {
                     std::filesystem::create_directory(d / "sub");
                     testing::WriteBytes(d / "w.bin", WeightBytes());
                     return ModelWith(d, [](onnx::ModelProto& p) { MakeExternal(p, {{"location", "sub/../w.bin"}}); });
                   }, kExitInvalid, {"'W'", "'sub/../w.bin'", ".."}});
  cases.push_back({"external_absolute", [](const TempDir& d) {
                     return ModelWith(d, [](onnx::ModelProto& p) { MakeExternal(p, {{"location", "/etc/passwd"}}); });
                   }, kExitInvalid, {"'W'", "'/etc/passwd'", "absolute"}});
  cases.push_back({"external_symlink_escape", [](const TempDir& d) {
                     std::filesystem::create_directory(d / "model");
                     testing::WriteBytes(d / "outside.bin", WeightBytes());
                     std::filesystem::create_symlink(d / "outside.bin", d / "model/w.bin");
                     onnx::ModelProto p = ValidProto();
                     MakeExternal(p, {{"location", "w.bin"}});
                     testing::WriteBytes(d / "model/model.onnx", p.SerializeAsString());
                     return std::vector<std::string>{d / "model/model.onnx", "-o", d / "model/out.onnx"};
                   }, kExitInvalid, {"'W'", "outside the model's folder"}});
  cases.push_back({"external_offset_beyond_file", [](const TempDir& d) {
                     testing::WriteBytes(d / "w.bin", WeightBytes());
                     return ModelWith(d, [](onnx::ModelProto& p) {
                       MakeExternal(p, {{"location", "w.bin"}, {"offset", "100"}, {"length", "48"}});
                     });
                   }, kExitInvalid, {"'W'", "offset 100 is beyond the end", "48 bytes"}});
  cases.push_back({"external_offset_length_overflow", [](const TempDir& d) {
                     testing::WriteBytes(d / "w.bin", WeightBytes());
                     return ModelWith(d, [](onnx::ModelProto& p) {
                       MakeExternal(p, {{"location", "w.bin"}, {"offset", "8"}, {"length", "18446744073709551615"}});
                     });
                   }, kExitInvalid, {"'W'", "overflows"}});
  cases.push_back({"external_length_mismatch", [](const TempDir& d) {
                     testing::WriteBytes(d / "w.bin", WeightBytes());
                     return ModelWith(d, [](onnx::ModelProto& p) {
                       MakeExternal(p, {{"location", "w.bin"}, {"offset", "0"}, {"length", "40"}});
                     });
                   }, kExitInvalid, {"'W'", "holds 40 bytes", "need 48"}});
  cases.push_back({"external_unknown_key", [](const TempDir& d) {
                     testing::WriteBytes(d / "w.bin", WeightBytes());
                     return ModelWith(d, [](onnx::ModelProto& p) {
                       MakeExternal(p, {{"location", "w.bin"}, {"sneaky", "1"}});
                     });
                   }, kExitInvalid, {"'W'", "unknown external data key 'sneaky'"}});
  cases.push_back({"external_file_missing", [](const TempDir& d) {
                     return ModelWith(d, [](onnx::ModelProto& p) { MakeExternal(p, {{"location", "gone.bin"}}); });
                   }, kExitIO, {"'W'", "gone.bin", "does not exist"}});
  // Paths.
  cases.push_back({"input_missing", [](const TempDir& d) {
                     return std::vector<std::string>{d / "nothere.onnx", "-o", d / "out.onnx"};
                   }, kExitIO, {"nothere.onnx"}});
  cases.push_back({"input_is_directory", [](const TempDir& d) {
                     std::filesystem::create_directory(d / "dir.onnx");
                     return std::vector<std::string>{d / "dir.onnx", "-o", d / "out.onnx"};
                   }, kExitIO, {"dir.onnx", "directory"}});
  cases.push_back({"output_equals_input", [](const TempDir& d) {
                     auto args = ModelWith(d, [](onnx::ModelProto&) {});
                     args[2] = args[0];
                     return args;
                   }, kExitUsage, {"refusing to overwrite", "model.onnx"}});
  cases.push_back({"output_equals_input_other_spelling", [](const TempDir& d) {
                     auto args = ModelWith(d, [](onnx::ModelProto&) {});
                     args[2] = d / "./model.onnx";
                     return args;
                   }, kExitUsage, {"refusing to overwrite"}});
  cases.push_back({"output_folder_missing", [](const TempDir& d) {
                     auto args = ModelWith(d, [](onnx::ModelProto&) {});
                     args[2] = d / "no/such/out.onnx";
                     return args;
                   }, kExitIO, {"no/such/out.onnx", "does not exist"}});
  cases.push_back({"output_folder_unwritable", [](const TempDir& d) {
                     auto args = ModelWith(d, [](onnx::ModelProto&) {});
                     // /proc refuses new files even to root; a 0555 folder only stops other users.
                     args[2] = "/proc/compress-out.onnx";
                     return args;
                   }, kExitIO, {"/proc/compress-out.onnx", "cannot write"}});
  if (::geteuid() != 0) {
    cases.push_back({"output_folder_read_only", [](const TempDir& d) {
                       auto args = ModelWith(d, [](onnx::ModelProto&) {});
                       std::filesystem::create_directory(d / "ro");
                       std::filesystem::permissions(d / "ro", std::filesystem::perms::owner_read |
                                                                  std::filesystem::perms::owner_exec);
                       args[2] = d / "ro/out.onnx";
                       return args;
                     }, kExitIO, {"ro/out.onnx", "cannot write"}});
  }
  return cases;
}

class MalformedInput : public ::testing::TestWithParam<Case> {};

void CheckOneLineError(const testing::CommandResult& r, const Case& c) {
  EXPECT_EQ(r.exit_code, c.exit_code) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "expected exactly one line:\n" << r.err;
  EXPECT_NE(r.err.find("error"), std::string::npos) << r.err;
  for (const auto& part : c.message_parts) EXPECT_NE(r.err.find(part), std::string::npos) << part << " in " << r.err;
  EXPECT_EQ(r.err.find("Sanitizer"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("runtime error"), std::string::npos) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
}

TEST_P(MalformedInput, FailsCleanlyWithDocumentedCode) {
  const Case& c = GetParam();
  TempDir dir;
  const auto args = c.setup(dir);
  const auto files_before = testing::ListDir(dir.path());
  std::vector<std::string> contents_before;
  for (const auto& f : files_before) {
    contents_before.push_back(std::filesystem::is_regular_file(dir / f) ? testing::ReadBytes(dir / f) : "");
  }

  // The rewrite command.
  CheckOneLineError(testing::RunCompress(args), c);
  EXPECT_EQ(testing::ListDir(dir.path()), files_before) << "files were created or removed";
  for (size_t i = 0; i < files_before.size(); ++i) {
    if (std::filesystem::is_regular_file(dir / files_before[i])) {
      EXPECT_EQ(testing::ReadBytes(dir / files_before[i]), contents_before[i]) << files_before[i] << " changed";
    }
  }
  // inspect must refuse the same inputs with the same code (output-path cases do not apply to it).
  if (c.exit_code == kExitInvalid || c.name == "input_missing") {
    CheckOneLineError(testing::RunCompress({"inspect", args[0]}), c);
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, MalformedInput, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<Case>& param) { return param.param.name; });

TEST(MalformedInputSuite, HasAtLeastTwentyCases) { EXPECT_GE(Cases().size(), 20u); }

// Operators outside the ONNX domains are not checked against any schema: a com.microsoft node with
// attributes of its own loads and is written back unchanged.
TEST(OperatorChecks, ContribNodePasses) {
  TempDir dir;
  Model m = OneNodeModel(13, Node{"gelu", "Gelu", "com.microsoft", {"x"}, {"y"}, {Attribute::Int("whatever", 1)}, ""});
  m.opset_imports.push_back({"com.microsoft", 1});
  const auto args = WriteModel(dir, m);
  const auto r = testing::RunCompress({args[0], "--no-optimize", "-o", args[2]});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err.find("Sanitizer"), std::string::npos) << r.err;
  const Model out = LoadModel(args[2]);
  ASSERT_EQ(out.graph.nodes.size(), 1u);
  EXPECT_EQ(out.graph.nodes[0].domain, "com.microsoft");
  EXPECT_EQ(out.graph.nodes[0].AttrInt("whatever", 0), 1);
}

// ONNX Runtime writes ai.onnx.ml version 5 into the models it optimizes: newer than ONNX 1.12 knows, but
// accepted (only the default domain's opset is capped).
TEST(OperatorChecks, NewerMlOpsetImportPasses) {
  TempDir dir;
  Model m = OneNodeModel(13, Node{"relu", "Relu", "", {"x"}, {"y"}, {}, ""});
  m.opset_imports.push_back({"ai.onnx.ml", 5});
  const auto args = WriteModel(dir, m);
  const auto r = testing::RunCompress({args[0], "--no-optimize", "-o", args[2]});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(LoadModel(args[2]).OpsetVersion("ai.onnx.ml"), 5);
}

// Valid uses the checks must keep accepting: an omitted optional input given as an empty name, trailing
// optional outputs, a variadic operator, and a grouped convolution with every window attribute.
TEST(OperatorChecks, ValidOptionalAndVariadicUsesPass) {
  TempDir dir;
  Model m = OneNodeModel(13, Node{"conv", "Conv", "", {"x", "W", ""}, {"c"},
                                  {Attribute::Int("group", 2), Attribute::Ints("kernel_shape", {3, 3}),
                                   Attribute::Ints("strides", {1, 1}), Attribute::Ints("dilations", {1, 1}),
                                   Attribute::Ints("pads", {1, 1, 1, 1})},
                                  ""},
                         {Tensor::FromVector<float>({4, 2, 3, 3}, std::vector<float>(72, 0.5f), "W")});
  m.graph.nodes.push_back(Node{"drop", "Dropout", "", {"c", "", ""}, {"d", ""}, {}, ""});
  m.graph.nodes.push_back(Node{"sum", "Sum", "", {"d", "c", "x"}, {"y"}, {}, ""});
  const auto args = WriteModel(dir, m);
  const auto r = testing::RunCompress({args[0], "--no-optimize", "-o", args[2]});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(LoadModel(args[2]).graph.nodes.size(), 3u);
}

}  // namespace
}  // namespace compress
