// Malformed and hostile inputs, run through the real `compress` binary (also under ASan/UBSan in the
// sanitizer build). Every case must end with its documented exit code, exactly one line on stderr that
// names the culprit, no file left in the output folder, the input untouched, and no sanitizer report.

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <random>
#include <nlohmann/json.hpp>

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

Tensor I64(std::vector<int64_t> dims, std::vector<int64_t> values, std::string name) {
  return Tensor::FromVector<int64_t>(std::move(dims), values, std::move(name));
}

// x[1,4,8,8] -> Reshape(target shape s) -> y.
std::vector<std::string> ReshapeTo(const TempDir& dir, std::vector<int64_t> target, int64_t opset,
                                   std::vector<Attribute> attrs = {}) {
  const size_t n = target.size();
  return WriteModel(dir, OneNodeModel(opset, Node{"rs", "Reshape", "", {"x", "s"}, {"y"}, std::move(attrs), ""},
                                      {I64({static_cast<int64_t>(n)}, std::move(target), "s")}));
}

// x[1,4,8,8] -> Slice(starts, ends, axes, steps) -> y.
std::vector<std::string> SliceWith(const TempDir& dir, std::vector<int64_t> starts, std::vector<int64_t> ends,
                                   std::vector<int64_t> axes, std::vector<int64_t> steps) {
  auto t = [](std::vector<int64_t> v, const char* name) {
    const auto n = static_cast<int64_t>(v.size());
    return I64({n}, std::move(v), name);
  };
  return WriteModel(dir, OneNodeModel(13, Node{"sl", "Slice", "", {"x", "b", "e", "a", "st"}, {"y"}, {}, ""},
                                      {t(starts, "b"), t(ends, "e"), t(axes, "a"), t(steps, "st")}));
}

// x[2,1,8] -> LSTM(W [1,w_rows,8], R [1,32,8], hidden_size) -> y.
std::vector<std::string> Lstm(const TempDir& dir, int64_t hidden_size, int64_t w_rows, std::vector<Attribute> attrs) {
  attrs.push_back(Attribute::Int("hidden_size", hidden_size));
  return WriteModel(dir, OneNodeModel(14, Node{"lstm", "LSTM", "", {"x", "W", "R"}, {"y"}, attrs, ""},
                                      {Tensor::FromVector<float>({1, w_rows, 8}, std::vector<float>(w_rows * 8, 0.1f), "W"),
                                       Tensor::FromVector<float>({1, 32, 8}, std::vector<float>(256, 0.1f), "R")},
                                      {2, 1, 8}));
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
  // Element types of initializers, graph inputs and Constant outputs against the type constraints.
  cases.push_back({"conv_int64_weight", [](const TempDir& d) {
                     return WriteModel(d, OneNodeModel(13, Node{"conv", "Conv", "", {"x", "W"}, {"y"}, {}, ""},
                                                       {I64({4, 4, 3, 3}, std::vector<int64_t>(144, 1), "W")}));
                   }, kExitInvalid, {"'conv' (Conv)", "input 1 ('W', initializer) has type tensor(int64)",
                                     "for 'W' of Conv-11"}});
  cases.push_back({"add_double_initializer_to_float", [](const TempDir& d) {
                     return WriteModel(d, OneNodeModel(13, Node{"add", "Add", "", {"x", "B"}, {"y"}, {}, ""},
                                                       {Tensor::FromVector<double>({8}, std::vector<double>(8, 1.0), "B")}));
                   }, kExitInvalid, {"'add' (Add)", "input 1 ('B', initializer) has type tensor(double)",
                                     "input 0 ('x') has type tensor(float)", "both are 'T' of Add-13"}});
  cases.push_back({"gather_float_indices", [](const TempDir& d) {
                     return WriteModel(d, OneNodeModel(13, Node{"gather", "Gather", "", {"x", "i"}, {"y"}, {}, ""},
                                                       {Tensor::FromVector<float>({1}, {0.0f}, "i")}));
                   }, kExitInvalid, {"'gather' (Gather)", "('i', initializer) has type tensor(float)",
                                     "expected one of tensor(int32), tensor(int64) for 'indices' of Gather-13"}});
  cases.push_back({"constant_string_into_relu", [](const TempDir& d) {
                     Model m = OneNodeModel(13, Node{"relu", "Relu", "", {"k"}, {"y"}, {}, ""});
                     m.graph.nodes.insert(m.graph.nodes.begin(),
                                          Node{"k", "Constant", "", {}, {"k"}, {Attribute::String("value_string", "a")}, ""});
                     return WriteModel(d, m);
                   }, kExitInvalid, {"'relu' (Relu)", "input 0 ('k', Constant output) has type tensor(string)"}});
  cases.push_back({"graph_input_bool_into_sigmoid", [](const TempDir& d) {
                     Model m = OneNodeModel(13, Node{"sig", "Sigmoid", "", {"x"}, {"y"}, {}, ""});
                     m.graph.inputs[0].type.elem_type = DType::kBool;
                     return WriteModel(d, m);
                   }, kExitInvalid, {"'sig' (Sigmoid)", "input 0 ('x', graph input) has type tensor(bool)",
                                     "for 'X' of Sigmoid-13"}});
  cases.push_back({"initializer_type_differs_from_graph_input", [](const TempDir& d) {
                     Model m = OneNodeModel(13, Node{"add", "Add", "", {"x", "B"}, {"y"}, {}, ""},
                                            {I64({8}, std::vector<int64_t>(8, 1), "B")});
                     m.graph.inputs.push_back({"B", TypeInfo::Tensor(DType::kFloat, {Dim::Fixed(8)}), ""});
                     return WriteModel(d, m);
                   }, kExitInvalid, {"initializer 'B' has type int64", "graph input of the same name declares float32"}});
  cases.push_back({"type_error_inside_subgraph", [](const TempDir& d) {
                     Model m = IfWithoutElse();
                     Attribute e = m.graph.nodes[0].attributes[0];
                     e.name = "else_branch";
                     e.graphs[0].nodes[0] = Node{"g", "Gather", "", {"x", "i"}, {"t"}, {}, ""};
                     e.graphs[0].initializers.push_back(Tensor::FromVector<float>({1}, {0.0f}, "i"));
                     m.graph.nodes[0].attributes.push_back(e);
                     return WriteModel(d, m);
                   }, kExitInvalid, {"node 'g' (Gather) in attribute 'else_branch' of node 'if' (If)",
                                     "('i', initializer) has type tensor(float)"}});
  // Attribute values and constant inputs the schemas cannot express.
  cases.push_back({"attribute_given_twice", [](const TempDir& d) {
                     return ConvWith(d, [](Node& n) { n.attributes.push_back(Attribute::Int("group", 2)); });
                   }, kExitInvalid, {"'conv' (Conv)", "attribute 'group' is given twice"}});
  cases.push_back({"gemm_transA_2", [](const TempDir& d) {
                     return WriteModel(d, OneNodeModel(13, Node{"gemm", "Gemm", "", {"x", "G"}, {"y"},
                                                                {Attribute::Int("transA", 2)}, ""},
                                                       {Tensor::FromVector<float>({4, 3}, std::vector<float>(12, 1), "G")}, {2, 4}));
                   }, kExitInvalid, {"'gemm' (Gemm)", "attribute 'transA' is 2, expected 0 or 1"}});
  cases.push_back({"gemm_rank_4_input", [](const TempDir& d) {
                     return WriteModel(d, OneNodeModel(13, Node{"gemm", "Gemm", "", {"x", "G"}, {"y"}, {}, ""},
                                                       {Tensor::FromVector<float>({8, 3}, std::vector<float>(24, 1), "G")}));
                   }, kExitInvalid, {"'gemm' (Gemm)", "input 0 ('x') has rank 4, expected 2"}});
  cases.push_back({"matmul_inner_dimensions", [](const TempDir& d) {
                     return WriteModel(d, OneNodeModel(13, Node{"mm", "MatMul", "", {"x", "M"}, {"y"}, {}, ""},
                                                       {Tensor::FromVector<float>({5, 3}, std::vector<float>(15, 1), "M")}));
                   }, kExitInvalid, {"'mm' (MatMul)", "inner dimensions differ", "'x' [1,4,8,8] has 8", "'M' [5,3] has 5"}});
  cases.push_back({"softmax_axis_out_of_range", [](const TempDir& d) {
                     return WriteModel(d, OneNodeModel(13, Node{"sm", "Softmax", "", {"x"}, {"y"}, {Attribute::Int("axis", 4)}, ""}));
                   }, kExitInvalid, {"'sm' (Softmax)", "'axis' is 4, expected -4 to 3", "'x' has rank 4"}});
  cases.push_back({"flatten_axis_out_of_range", [](const TempDir& d) {
                     return WriteModel(d, OneNodeModel(13, Node{"fl", "Flatten", "", {"x"}, {"y"}, {Attribute::Int("axis", -5)}, ""}));
                   }, kExitInvalid, {"'fl' (Flatten)", "'axis' is -5, expected -4 to 4"}});
  cases.push_back({"transpose_perm_not_a_permutation", [](const TempDir& d) {
                     return WriteModel(d, OneNodeModel(13, Node{"tr", "Transpose", "", {"x"}, {"y"},
                                                                {Attribute::Ints("perm", {0, 1, 1, 2})}, ""}));
                   }, kExitInvalid, {"'tr' (Transpose)", "'perm' is [0,1,1,2], expected a permutation of 0 to 3"}});
  cases.push_back({"transpose_perm_wrong_length", [](const TempDir& d) {
                     return WriteModel(d, OneNodeModel(13, Node{"tr", "Transpose", "", {"x"}, {"y"},
                                                                {Attribute::Ints("perm", {0, 2, 1})}, ""}));
                   }, kExitInvalid, {"'tr' (Transpose)", "'perm' has 3 values, expected 4", "'x' has rank 4"}});
  cases.push_back({"reshape_two_inferred_dims", [](const TempDir& d) {
                     return ReshapeTo(d, {-1, -1}, 13);
                   }, kExitInvalid, {"'rs' (Reshape)", "target shape [-1,-1] ('s')", "-1 more than once"}});
  cases.push_back({"reshape_element_count", [](const TempDir& d) { return ReshapeTo(d, {3, 5}, 13); },
                   kExitInvalid, {"'rs' (Reshape)", "[3,5]", "cannot hold the 256 elements of input 'x' [1,4,8,8]"}});
  cases.push_back({"reshape_zero_past_input_rank", [](const TempDir& d) { return ReshapeTo(d, {1, 4, 8, 8, 0}, 13); },
                   kExitInvalid, {"'rs' (Reshape)", "holds 0 at position 4", "'x' has rank 4"}});
  cases.push_back({"reshape_size_below_minus_one", [](const TempDir& d) { return ReshapeTo(d, {-2, 128}, 13); },
                   kExitInvalid, {"'rs' (Reshape)", "holds -2, expected sizes, 0 or -1"}});
  cases.push_back({"reshape_allowzero_with_inferred_dim", [](const TempDir& d) {
                     return ReshapeTo(d, {0, -1}, 14, {Attribute::Int("allowzero", 1)});
                   }, kExitInvalid, {"'rs' (Reshape)", "both 0 and -1 with allowzero 1"}});
  cases.push_back({"constant_without_value", [](const TempDir& d) {
                     return WriteModel(d, OneNodeModel(13, Node{"k", "Constant", "", {}, {"y"}, {}, ""}));
                   }, kExitInvalid, {"'k' (Constant)", "has 0 value attributes, expected exactly one"}});
  cases.push_back({"cast_to_unknown_type", [](const TempDir& d) {
                     return WriteModel(d, OneNodeModel(13, Node{"cast", "Cast", "", {"x"}, {"y"}, {Attribute::Int("to", 99)}, ""}));
                   }, kExitInvalid, {"'cast' (Cast)", "'to' is 99, expected an ONNX element type"}});
  cases.push_back({"batchnorm_scale_length", [](const TempDir& d) {
                     std::vector<Tensor> p;
                     for (const char* n : {"s", "b", "m", "v"}) p.push_back(Tensor::FromVector<float>({n[0] == 's' ? 3 : 4}, std::vector<float>(n[0] == 's' ? 3 : 4, 1), n));
                     return WriteModel(d, OneNodeModel(13, Node{"bn", "BatchNormalization", "", {"x", "s", "b", "m", "v"}, {"y"}, {}, ""}, p));
                   }, kExitInvalid, {"'bn' (BatchNormalization)", "input 1 ('s', scale) has 3 values, expected 4"}});
  cases.push_back({"conv_bias_length", [](const TempDir& d) {
                     testing::WriteBytes(d / "model.onnx", SerializeModel(OneNodeModel(
                         13, Node{"conv", "Conv", "", {"x", "W", "B"}, {"y"}, {Attribute::Int("group", 2)}, ""},
                         {Tensor::FromVector<float>({4, 2, 3, 3}, std::vector<float>(72, 0.5f), "W"),
                          Tensor::FromVector<float>({3}, {1, 2, 3}, "B")})));
                     return std::vector<std::string>{d / "model.onnx", "-o", d / "out.onnx"};
                   }, kExitInvalid, {"'conv' (Conv)", "bias 'B' has 3 values, expected 4"}});
  cases.push_back({"lstm_weight_rows", [](const TempDir& d) { return Lstm(d, 8, 16, {}); },
                   kExitInvalid, {"'lstm' (LSTM)", "weight 'W' has 16 rows (axis 1), expected 32 (4 gates x hidden_size 8)"}});
  cases.push_back({"lstm_hidden_size_zero", [](const TempDir& d) { return Lstm(d, 0, 32, {}); },
                   kExitInvalid, {"'lstm' (LSTM)", "'hidden_size' is 0, expected a positive integer"}});
  cases.push_back({"lstm_direction_unknown", [](const TempDir& d) {
                     return Lstm(d, 8, 32, {Attribute::String("direction", "sideways")});
                   }, kExitInvalid, {"'lstm' (LSTM)", "'direction' is 'sideways', expected forward, reverse or bidirectional"}});
  cases.push_back({"split_sizes_do_not_sum", [](const TempDir& d) {
                     return WriteModel(d, OneNodeModel(11, Node{"sp", "Split", "", {"x"}, {"y", "z"},
                                                                {Attribute::Int("axis", 1), Attribute::Ints("split", {1, 2})}, ""}));
                   }, kExitInvalid, {"'sp' (Split)", "split [1,2] sums to 3, expected 4 (axis 1 of input 'x')"}});
  cases.push_back({"split_count_differs_from_outputs", [](const TempDir& d) {
                     return WriteModel(d, OneNodeModel(13, Node{"sp", "Split", "", {"x", "s"}, {"y", "z", "w"},
                                                                {Attribute::Int("axis", 1)}, ""},
                                                       {I64({2}, {2, 2}, "s")}));
                   }, kExitInvalid, {"'sp' (Split)", "split [2,2] has 2 values but the node has 3 outputs"}});
  cases.push_back({"depth_to_space_blocksize_zero", [](const TempDir& d) {
                     return WriteModel(d, OneNodeModel(13, Node{"d2s", "DepthToSpace", "", {"x"}, {"y"},
                                                                {Attribute::Int("blocksize", 0)}, ""}));
                   }, kExitInvalid, {"'d2s' (DepthToSpace)", "'blocksize' is 0, expected a positive integer"}});
  cases.push_back({"tile_repeats_length", [](const TempDir& d) {
                     return WriteModel(d, OneNodeModel(13, Node{"tile", "Tile", "", {"x", "r"}, {"y"}, {}, ""},
                                                       {I64({2}, {1, 2}, "r")}));
                   }, kExitInvalid, {"'tile' (Tile)", "repeats [1,2] has 2 values, expected 4"}});
  cases.push_back({"pad_mode_unknown", [](const TempDir& d) {
                     return WriteModel(d, OneNodeModel(13, Node{"pad", "Pad", "", {"x", "p"}, {"y"},
                                                                {Attribute::String("mode", "mirror")}, ""},
                                                       {I64({8}, std::vector<int64_t>(8, 0), "p")}));
                   }, kExitInvalid, {"'pad' (Pad)", "'mode' is 'mirror', expected constant, reflect or edge"}});
  cases.push_back({"pad_pads_length", [](const TempDir& d) {
                     return WriteModel(d, OneNodeModel(13, Node{"pad", "Pad", "", {"x", "p"}, {"y"}, {}, ""},
                                                       {I64({4}, {0, 0, 1, 1}, "p")}));
                   }, kExitInvalid, {"'pad' (Pad)", "pads [0,0,1,1] has 4 values, expected 8"}});
  cases.push_back({"resize_coordinate_mode_unknown", [](const TempDir& d) {
                     return WriteModel(d, OneNodeModel(13, Node{"rz", "Resize", "", {"x", "", "sc"}, {"y"},
                                                                {Attribute::String("coordinate_transformation_mode", "centre")}, ""},
                                                       {Tensor::FromVector<float>({4}, {1, 1, 2, 2}, "sc")}));
                   }, kExitInvalid, {"'rz' (Resize)", "'coordinate_transformation_mode' is 'centre', expected half_pixel"}});
  cases.push_back({"gather_index_out_of_range", [](const TempDir& d) {
                     return WriteModel(d, OneNodeModel(13, Node{"gather", "Gather", "", {"x", "i"}, {"y"},
                                                                {Attribute::Int("axis", 1)}, ""},
                                                       {I64({1}, {5}, "i")}));
                   }, kExitInvalid, {"'gather' (Gather)", "index 5 of 'i' is out of range, expected -4 to 3"}});
  cases.push_back({"slice_zero_step", [](const TempDir& d) {
                     return SliceWith(d, {0}, {2}, {1}, {0});
                   }, kExitInvalid, {"'sl' (Slice)", "steps [0] hold 0, expected non-zero steps"}});
  cases.push_back({"slice_axis_twice", [](const TempDir& d) {
                     return SliceWith(d, {0, 0}, {1, 1}, {1, -3}, {1, 1});
                   }, kExitInvalid, {"'sl' (Slice)", "axes [1,-3] name axis -3 twice"}});
  cases.push_back({"slice_starts_ends_lengths", [](const TempDir& d) {
                     return SliceWith(d, {0, 0}, {1}, {1}, {1});
                   }, kExitInvalid, {"'sl' (Slice)", "starts [0,0] and ends [1] differ in length"}});
  cases.push_back({"squeeze_axis_out_of_range", [](const TempDir& d) {
                     return WriteModel(d, OneNodeModel(11, Node{"sq", "Squeeze", "", {"x"}, {"y"},
                                                                {Attribute::Ints("axes", {5})}, ""}));
                   }, kExitInvalid, {"'sq' (Squeeze)", "axes [5] hold 5, expected -4 to 3"}});
  cases.push_back({"unsqueeze_axis_twice", [](const TempDir& d) {
                     return WriteModel(d, OneNodeModel(13, Node{"unsq", "Unsqueeze", "", {"x", "a"}, {"y"}, {}, ""},
                                                       {I64({2}, {0, -6}, "a")}));
                   }, kExitInvalid, {"'unsq' (Unsqueeze)", "axes [0,-6] name axis -6 twice"}});
  cases.push_back({"constant_of_shape_negative", [](const TempDir& d) {
                     return WriteModel(d, OneNodeModel(13, Node{"cos", "ConstantOfShape", "", {"s"}, {"y"}, {}, ""},
                                                       {I64({2}, {2, -3}, "s")}));
                   }, kExitInvalid, {"'cos' (ConstantOfShape)", "shape [2,-3] holds -3, expected non-negative sizes"}});
  cases.push_back({"ml_unknown_operator", [](const TempDir& d) {
                     Model m = OneNodeModel(13, Node{"f", "Frobnicate", "ai.onnx.ml", {"x"}, {"y"}, {}, ""});
                     m.opset_imports.push_back({"ai.onnx.ml", 3});
                     return WriteModel(d, m);
                   }, kExitInvalid, {"'f' (ai.onnx.ml::Frobnicate)", "'Frobnicate' is not an operator of ai.onnx.ml"}});
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

TEST(MalformedInputSuite, HasAtLeastSixtyCases) { EXPECT_GE(Cases().size(), 60u); }

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

// The report says which operators went through unchecked: two com.microsoft nodes (one inside an If
// branch) and one of a custom domain; the standard Relu is not listed.
TEST(OperatorChecks, ReportListsUncheckedOperators) {
  TempDir dir;
  Model m = IfWithoutElse();
  Attribute e = m.graph.nodes[0].attributes[0];
  e.name = "else_branch";
  e.graphs[0].nodes[0] = Node{"g2", "Gelu", "com.microsoft", {"x"}, {"t"}, {}, ""};
  m.graph.nodes[0].attributes.push_back(e);
  m.graph.nodes[0].outputs = {"i"};
  m.graph.nodes.push_back(Node{"g1", "Gelu", "com.microsoft", {"i"}, {"j"}, {}, ""});
  m.graph.nodes.push_back(Node{"t", "Thing", "org.example", {"j"}, {"k"}, {}, ""});
  m.graph.nodes.push_back(Node{"relu", "Relu", "", {"k"}, {"y"}, {}, ""});
  m.opset_imports.push_back({"com.microsoft", 1});
  m.opset_imports.push_back({"org.example", 2});
  const auto args = WriteModel(dir, m);
  const auto r = testing::RunCompress({args[0], "--no-optimize", "-o", args[2], "--report", dir / "r.json",
                                       "--report-md", dir / "r.md"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("unchecked   com.microsoft::Gelu (2 nodes), org.example::Thing (1 node)\n"), std::string::npos)
      << r.out;
  const auto report = nlohmann::json::parse(testing::ReadBytes(dir / "r.json"));
  EXPECT_EQ(report["input"]["unchecked_operators"],
            nlohmann::json::parse(R"([{"domain":"com.microsoft","op_type":"Gelu","count":2},)"
                                  R"({"domain":"org.example","op_type":"Thing","count":1}])"));
  EXPECT_NE(testing::ReadBytes(dir / "r.md").find("Not checked against any operator schema (domains ONNX does not "
                                                  "define): com.microsoft::Gelu (2 nodes), org.example::Thing (1 node)."),
            std::string::npos);
  const auto v = testing::RunCommand({"node", testing::SourcePath("tests/ort/validate.js"),
                                      testing::SourcePath("docs/report.schema.json"), dir / "r.json"});
  EXPECT_EQ(v.exit_code, 0) << v.out << v.err;

  // A model of standard operators only: an empty list and no line.
  const auto args2 = WriteModel(dir, OneNodeModel(13, Node{"relu", "Relu", "", {"x"}, {"y"}, {}, ""}));
  const auto r2 = testing::RunCompress({args2[0], "-o", args2[2], "--report", dir / "r2.json"});
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  EXPECT_EQ(r2.out.find("unchecked"), std::string::npos) << r2.out;
  EXPECT_EQ(nlohmann::json::parse(testing::ReadBytes(dir / "r2.json"))["input"]["unchecked_operators"],
            nlohmann::json::array());
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
