// fuzz_model_structured: structure-aware model fuzzing. The custom mutator parses the input as an
// onnx.ModelProto (a built-in seed model when it does not parse), applies 1-3 structural mutations
// and serializes it again; the test runs the same pipeline as fuzz_model (fuzz_util.h).
//
// Mutations: node inputs/outputs renamed, dropped or duplicated; nodes removed, duplicated or
// swapped; op_type swapped; attributes added, removed, retyped or given hostile values; dims of
// initializers and value infos (0, negative, huge); element types; initializers dropped or their
// raw_data truncated or byte-mutated; external-data entries with hostile location/offset/length;
// graph inputs/outputs dropped or renamed; opset imports changed. Graphs inside If/Loop/Scan
// attributes are picked like the main graph, so subgraphs are mutated recursively.
// Everything is a function of the seed libFuzzer passes in, so runs are reproducible.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "onnx/onnx_pb.h"

extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

namespace {

using Rng = std::mt19937_64;

const char* const kOps[] = {
    "Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Relu", "Sigmoid", "Tanh",
    "Softmax", "LogSoftmax", "BatchNormalization", "MaxPool", "AveragePool", "GlobalAveragePool",
    "Reshape", "Flatten", "Transpose", "Concat", "Split", "Slice", "Gather", "Squeeze", "Unsqueeze", "Shape",
    "Size", "Constant", "ConstantOfShape", "Identity", "Dropout", "Cast", "Clip", "Pad", "Resize", "Upsample",
    "If", "Loop", "Scan", "LSTM", "GRU", "RNN", "ReduceMean", "ReduceSum", "ReduceMax", "Expand", "Tile",
    "Where", "Equal", "Greater", "Less", "Not", "LayerNormalization", "InstanceNormalization",
    "QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger",
    "DynamicQuantizeLinear", "Range", "TopK", "ArgMax", "Einsum", "Erf", "Sqrt", "Pow", "Exp", "Log",
    "LeakyRelu", "HardSigmoid", "HardSwish", "Gelu", "CumSum", "OneHot", "NonZero", "ScatterND",
    "GatherND", "DepthToSpace", "SpaceToDepth", "Neg", "Abs", "Min", "Max", "Sum", "Mean", "LRN", "Celu",
    "Elu", "Selu", "PRelu", "Softplus", "Trilu", "NoSuchOp", ""};
const char* const kAttrs[] = {
    "axis", "axes", "group", "kernel_shape", "strides", "pads", "dilations", "auto_pad", "alpha", "beta",
    "transA", "transB", "epsilon", "momentum", "perm", "keepdims", "value", "to", "then_branch",
    "else_branch", "body", "mode", "split", "starts", "ends", "direction", "hidden_size", "layout",
    "output_padding", "output_shape", "ceil_mode", "count_include_pad", "storage_order", "min", "max",
    "coordinate_transformation_mode", "nearest_mode", "scales", "sizes", "num_scan_inputs",
    "allowzero", "largest", "sorted", "k", "fmod", "blocksize", "saturate", "stash_type", "unknown"};
const char* const kNames[] = {"X", "Y", "W", "B", "", "t0", "t1", "loop_cond", "M", "cond", "x", "y"};
const char* const kDomains[] = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "custom", "ai.onnx.preview.training"};
const char* const kLocations[] = {"weights.bin", "../weights.bin", "/etc/passwd", "", ".", "..",
                                  "missing.bin", "ext/../weights.bin", "/dev/zero", "weights.bin/x",
                                  "/proc/self/mem", "./weights.bin"};
const char* const kNumbers[] = {"0", "1", "-1", "4096", "4095", "4097", "18446744073709551615",
                                "9223372036854775807", "99999999999999999999999", "abc", "", "0x10", " 1",
                                "2147483648", "16", "-9223372036854775808"};

template <typename T, size_t N>
T Pick(Rng& r, T const (&a)[N]) {
  return a[r() % N];
}

size_t Below(Rng& r, size_t n) { return n == 0 ? 0 : static_cast<size_t>(r() % n); }

int64_t HostileInt(Rng& r) {
  static const int64_t kInts[] = {0, 1, -1, 2, 3, -2, 4, 7, 64, 255, 256, 65535, int64_t{1} << 31, int64_t{1} << 32,
                                  -(int64_t{1} << 31), std::numeric_limits<int64_t>::max(),
                                  std::numeric_limits<int64_t>::min(), int64_t{1} << 40};
  if (r() % 4 == 0) return static_cast<int64_t>(r() % 17) - 8;
  return Pick(r, kInts);
}

float HostileFloat(Rng& r) {
  static const float kFloats[] = {0.f, -0.f, 1.f, -1.f, 0.5f, 1e-30f, 1e30f, 3.4e38f, -3.4e38f,
                                  std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                                  std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::denorm_min()};
  return Pick(r, kFloats);
}

// Every graph of the model: the main graph, then the graphs inside node attributes, depth first.
void CollectGraphs(onnx::GraphProto* g, std::vector<onnx::GraphProto*>* out) {
  out->push_back(g);
  for (auto& n : *g->mutable_node()) {
    for (auto& a : *n.mutable_attribute()) {
      if (a.has_g()) CollectGraphs(a.mutable_g(), out);
      for (auto& sub : *a.mutable_graphs()) CollectGraphs(&sub, out);
    }
  }
}

// Value names visible in `g` (inputs, initializers, node outputs), for rewiring.
std::vector<std::string> ValueNames(const onnx::GraphProto& g) {
  std::vector<std::string> names;
  for (const auto& v : g.input()) names.push_back(v.name());
  for (const auto& t : g.initializer()) names.push_back(t.name());
  for (const auto& n : g.node()) {
    for (const auto& o : n.output()) names.push_back(o);
  }
  return names;
}

std::string SomeName(Rng& r, const onnx::GraphProto& g) {
  const auto names = ValueNames(g);
  if (!names.empty() && r() % 4 != 0) return names[Below(r, names.size())];
  return Pick(r, kNames);
}

onnx::GraphProto SmallGraph(Rng& r, const std::string& in, const std::string& out) {
  onnx::GraphProto g;
  g.set_name("sub");
  auto* n = g.add_node();
  n->set_op_type(r() % 2 ? "Identity" : "Relu");
  n->add_input(in);
  n->add_output(out);
  auto* o = g.add_output();
  o->set_name(out);
  o->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
  return g;
}

void RandomAttribute(Rng& r, const onnx::GraphProto& g, onnx::AttributeProto* a) {
  a->Clear();
  a->set_name(Pick(r, kAttrs));
  switch (r() % 8) {
    case 0: a->set_type(onnx::AttributeProto::INT); a->set_i(HostileInt(r)); break;
    case 1: {
      a->set_type(onnx::AttributeProto::INTS);
      const size_t n = Below(r, 6);
      for (size_t i = 0; i < n; ++i) a->add_ints(HostileInt(r));
      break;
    }
    case 2: a->set_type(onnx::AttributeProto::FLOAT); a->set_f(HostileFloat(r)); break;
    case 3: {
      a->set_type(onnx::AttributeProto::FLOATS);
      const size_t n = Below(r, 6);
      for (size_t i = 0; i < n; ++i) a->add_floats(HostileFloat(r));
      break;
    }
    case 4: a->set_type(onnx::AttributeProto::STRING); a->set_s(r() % 2 ? "NOTSET" : "SAME_UPPER"); break;
    case 5: {
      a->set_type(onnx::AttributeProto::TENSOR);
      auto* t = a->mutable_t();
      t->set_data_type(static_cast<int32_t>(r() % 3 == 0 ? onnx::TensorProto::INT64 : onnx::TensorProto::FLOAT));
      const size_t n = Below(r, 4);
      t->add_dims(static_cast<int64_t>(n));
      for (size_t i = 0; i < n; ++i) {
        if (t->data_type() == onnx::TensorProto::INT64) t->add_int64_data(HostileInt(r));
        else t->add_float_data(HostileFloat(r));
      }
      break;
    }
    case 6: {
      a->set_type(onnx::AttributeProto::GRAPH);
      *a->mutable_g() = SmallGraph(r, SomeName(r, g), "sub_out");
      break;
    }
    default: a->set_type(static_cast<onnx::AttributeProto::AttributeType>(r() % 15)); break;
  }
}

void MutateAttribute(Rng& r, const onnx::GraphProto& g, onnx::AttributeProto* a) {
  switch (r() % 6) {
    case 0: a->set_i(HostileInt(r)); break;
    case 1:
      if (a->ints_size() > 0) a->set_ints(static_cast<int>(Below(r, static_cast<size_t>(a->ints_size()))), HostileInt(r));
      else a->add_ints(HostileInt(r));
      break;
    case 2: a->set_f(HostileFloat(r)); break;
    case 3:
      if (r() % 2 && a->ints_size() > 0) a->mutable_ints()->RemoveLast();
      else a->add_ints(HostileInt(r));
      break;
    case 4: {  // retype without touching the values
      a->set_type(static_cast<onnx::AttributeProto::AttributeType>(r() % 15));
      break;
    }
    default:
      if (a->has_t()) {
        auto* t = a->mutable_t();
        if (t->dims_size() > 0) t->set_dims(0, HostileInt(r));
        else t->set_data_type(static_cast<int32_t>(r() % 23));
      } else {
        RandomAttribute(r, g, a);
      }
      break;
  }
}

void MutateTensorType(Rng& r, onnx::TypeProto* type) {
  auto* tt = type->mutable_tensor_type();
  if (r() % 3 == 0) {
    tt->set_elem_type(static_cast<int32_t>(r() % 23));
    return;
  }
  auto* shape = tt->mutable_shape();
  if (shape->dim_size() == 0 || r() % 4 == 0) {
    shape->add_dim()->set_dim_value(HostileInt(r));
    return;
  }
  auto* d = shape->mutable_dim(static_cast<int>(Below(r, static_cast<size_t>(shape->dim_size()))));
  if (r() % 3 == 0) d->set_dim_param("N");
  else d->set_dim_value(HostileInt(r));
}

void MutateInitializer(Rng& r, onnx::TensorProto* t) {
  switch (r() % 7) {
    case 0:
      if (t->dims_size() > 0) t->set_dims(static_cast<int>(Below(r, static_cast<size_t>(t->dims_size()))), HostileInt(r));
      else t->add_dims(HostileInt(r));
      break;
    case 1: t->set_data_type(static_cast<int32_t>(r() % 23)); break;
    case 2:
      if (t->has_raw_data()) t->mutable_raw_data()->resize(Below(r, t->raw_data().size() + 1));
      break;
    case 3:
      if (t->has_raw_data() && !t->raw_data().empty()) {
        std::string& raw = *t->mutable_raw_data();
        const size_t n = std::min<size_t>(raw.size(), 64);
        const size_t at = Below(r, raw.size() - n + 1);
        std::vector<uint8_t> buf(raw.begin() + static_cast<std::ptrdiff_t>(at),
                                 raw.begin() + static_cast<std::ptrdiff_t>(at + n));
        buf.resize(n);
        const size_t m = LLVMFuzzerMutate(buf.data(), n, n);
        std::memcpy(&raw[at], buf.data(), std::min(m, n));
      }
      break;
    case 4: {  // external data with hostile location, offset and length
      t->set_data_location(r() % 4 ? onnx::TensorProto::EXTERNAL : onnx::TensorProto::DEFAULT);
      if (r() % 2) t->clear_raw_data();
      t->clear_external_data();
      const size_t n = 1 + Below(r, 4);
      for (size_t i = 0; i < n; ++i) {
        auto* e = t->add_external_data();
        switch (r() % 5) {
          case 0: case 1: e->set_key("location"); e->set_value(Pick(r, kLocations)); break;
          case 2: e->set_key("offset"); e->set_value(Pick(r, kNumbers)); break;
          case 3: e->set_key("length"); e->set_value(Pick(r, kNumbers)); break;
          default: e->set_key(r() % 2 ? "checksum" : "bogus"); e->set_value(Pick(r, kNumbers)); break;
        }
      }
      break;
    }
    case 5: t->set_name(Pick(r, kNames)); break;
    default: {  // switch between raw_data and typed fields
      if (t->has_raw_data()) {
        t->clear_raw_data();
        const size_t n = Below(r, 5);
        for (size_t i = 0; i < n; ++i) t->add_float_data(HostileFloat(r));
      } else {
        t->set_raw_data(std::string(Below(r, 33), '\x01'));
      }
      break;
    }
  }
}

void MutateGraph(Rng& r, onnx::GraphProto* g) {
  const int nodes = g->node_size();
  onnx::NodeProto* node = nodes > 0 ? g->mutable_node(static_cast<int>(Below(r, static_cast<size_t>(nodes)))) : nullptr;
  switch (r() % 18) {
    case 0:  // rewire an input
      if (node != nullptr && node->input_size() > 0) {
        node->set_input(static_cast<int>(Below(r, static_cast<size_t>(node->input_size()))), SomeName(r, *g));
      }
      break;
    case 1:  // drop an input
      if (node != nullptr && node->input_size() > 0) {
        auto* in = node->mutable_input();
        in->erase(in->begin() + static_cast<int>(Below(r, static_cast<size_t>(in->size()))));
      }
      break;
    case 2:  // add or duplicate an input
      if (node != nullptr) {
        if (node->input_size() > 0 && r() % 2) node->add_input(node->input(static_cast<int>(Below(r, static_cast<size_t>(node->input_size())))));
        else node->add_input(SomeName(r, *g));
      }
      break;
    case 3:  // outputs: rename, drop, duplicate
      if (node != nullptr) {
        const int k = r() % 3;
        if (k == 0 && node->output_size() > 0) node->set_output(static_cast<int>(Below(r, static_cast<size_t>(node->output_size()))), SomeName(r, *g));
        else if (k == 1 && node->output_size() > 0) node->mutable_output()->RemoveLast();
        else node->add_output(node->output_size() > 0 && r() % 2 ? node->output(0) : SomeName(r, *g));
      }
      break;
    case 4:
      if (node != nullptr) node->set_op_type(Pick(r, kOps));
      break;
    case 5:
      if (node != nullptr) RandomAttribute(r, *g, node->add_attribute());
      break;
    case 6:
      if (node != nullptr && node->attribute_size() > 0) {
        auto* attrs = node->mutable_attribute();
        attrs->erase(attrs->begin() + static_cast<int>(Below(r, static_cast<size_t>(attrs->size()))));
      }
      break;
    case 7:
    case 8:
      if (node != nullptr && node->attribute_size() > 0) {
        MutateAttribute(r, *g, node->mutable_attribute(static_cast<int>(Below(r, static_cast<size_t>(node->attribute_size())))));
      } else if (node != nullptr) {
        RandomAttribute(r, *g, node->add_attribute());
      }
      break;
    case 9:
    case 10:
      if (g->initializer_size() > 0) {
        MutateInitializer(r, g->mutable_initializer(static_cast<int>(Below(r, static_cast<size_t>(g->initializer_size())))));
      }
      break;
    case 11:  // drop an initializer
      if (g->initializer_size() > 0) {
        auto* inits = g->mutable_initializer();
        inits->erase(inits->begin() + static_cast<int>(Below(r, static_cast<size_t>(inits->size()))));
      }
      break;
    case 12: {  // value info / input / output types and shapes
      const int k = r() % 3;
      auto* list = k == 0 ? g->mutable_input() : k == 1 ? g->mutable_output() : g->mutable_value_info();
      if (!list->empty()) MutateTensorType(r, (*list)[static_cast<int>(Below(r, static_cast<size_t>(list->size())))].mutable_type());
      break;
    }
    case 13:  // graph inputs/outputs dropped or renamed
      if (r() % 2 && g->output_size() > 0) {
        if (r() % 2) g->mutable_output()->RemoveLast();
        else g->mutable_output(0)->set_name(SomeName(r, *g));
      } else if (g->input_size() > 0) {
        if (r() % 2) g->mutable_input()->RemoveLast();
        else g->mutable_input(0)->set_name(SomeName(r, *g));
      }
      break;
    case 14:  // remove a node
      if (nodes > 0) {
        auto* ns = g->mutable_node();
        ns->erase(ns->begin() + static_cast<int>(Below(r, static_cast<size_t>(ns->size()))));
      }
      break;
    case 15:  // duplicate a node, or swap two (order)
      if (nodes > 0 && r() % 2) {
        *g->add_node() = *node;
      } else if (nodes > 1) {
        g->mutable_node()->SwapElements(static_cast<int>(Below(r, static_cast<size_t>(nodes))),
                                        static_cast<int>(Below(r, static_cast<size_t>(nodes))));
      }
      break;
    case 16:  // node domain
      if (node != nullptr) node->set_domain(Pick(r, kDomains));
      break;
    default: {  // wrap: add an If whose branches read a value of this graph
      auto* n = g->add_node();
      n->set_op_type("If");
      n->add_input(SomeName(r, *g));
      n->add_output("if_out" + std::to_string(r() % 4));
      for (const char* branch : {"then_branch", "else_branch"}) {
        auto* a = n->add_attribute();
        a->set_name(branch);
        a->set_type(onnx::AttributeProto::GRAPH);
        *a->mutable_g() = SmallGraph(r, SomeName(r, *g), "branch_out");
      }
      break;
    }
  }
}

void MutateModel(Rng& r, onnx::ModelProto* m) {
  if (r() % 10 == 0) {  // opset imports
    if (m->opset_import_size() == 0 || r() % 3 == 0) {
      auto* o = m->add_opset_import();
      o->set_domain(Pick(r, kDomains));
      o->set_version(HostileInt(r));
    } else {
      auto* o = m->mutable_opset_import(static_cast<int>(Below(r, static_cast<size_t>(m->opset_import_size()))));
      switch (r() % 4) {
        case 0: o->set_version(static_cast<int64_t>(1 + r() % 22)); break;
        case 1: o->set_version(HostileInt(r)); break;
        case 2: o->set_domain(Pick(r, kDomains)); break;
        default: m->mutable_opset_import()->RemoveLast(); break;
      }
    }
    return;
  }
  if (r() % 20 == 0) {
    m->set_ir_version(HostileInt(r));
    return;
  }
  std::vector<onnx::GraphProto*> graphs;
  CollectGraphs(m->mutable_graph(), &graphs);
  MutateGraph(r, graphs[Below(r, graphs.size())]);
}

// Seed when the input does not parse: X[1,2,4,4] -> Conv(W,B) -> Relu -> If(cond) -> Y, plus a Gemm.
onnx::ModelProto SeedModel() {
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.add_opset_import()->set_version(13);
  auto* g = m.mutable_graph();
  g->set_name("seed");
  auto add_value = [](google::protobuf::RepeatedPtrField<onnx::ValueInfoProto>* list, const std::string& name,
                      int32_t type, std::vector<int64_t> dims) {
    auto* v = list->Add();
    v->set_name(name);
    auto* tt = v->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(type);
    for (int64_t d : dims) tt->mutable_shape()->add_dim()->set_dim_value(d);
  };
  add_value(g->mutable_input(), "X", onnx::TensorProto::FLOAT, {1, 2, 4, 4});
  add_value(g->mutable_input(), "cond", onnx::TensorProto::BOOL, {});
  add_value(g->mutable_output(), "Y", onnx::TensorProto::FLOAT, {1, 3, 4, 4});
  add_value(g->mutable_output(), "Z", onnx::TensorProto::FLOAT, {1, 3});
  auto add_init = [&](const std::string& name, std::vector<int64_t> dims) {
    auto* t = g->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::FLOAT);
    int64_t n = 1;
    for (int64_t d : dims) {
      t->add_dims(d);
      n *= d;
    }
    std::string raw(static_cast<size_t>(n) * 4, '\0');
    for (int64_t i = 0; i < n; ++i) {
      const float v = static_cast<float>((i * 7) % 13) / 13.0f - 0.5f;
      std::memcpy(&raw[static_cast<size_t>(i) * 4], &v, 4);
    }
    t->set_raw_data(raw);
  };
  add_init("W", {3, 2, 3, 3});
  add_init("B", {3});
  add_init("G", {3, 48});
  auto add_node = [&](const std::string& op, std::vector<std::string> in, std::vector<std::string> out) {
    auto* n = g->add_node();
    n->set_op_type(op);
    n->set_name(op + "_" + out[0]);
    for (auto& s : in) n->add_input(s);
    for (auto& s : out) n->add_output(s);
    return n;
  };
  auto* conv = add_node("Conv", {"X", "W", "B"}, {"c"});
  auto* pads = conv->add_attribute();
  pads->set_name("pads");
  pads->set_type(onnx::AttributeProto::INTS);
  for (int i = 0; i < 4; ++i) pads->add_ints(1);
  add_node("Relu", {"c"}, {"r"});
  auto* iff = add_node("If", {"cond"}, {"Y"});
  Rng r(1);
  for (const char* branch : {"then_branch", "else_branch"}) {
    auto* a = iff->add_attribute();
    a->set_name(branch);
    a->set_type(onnx::AttributeProto::GRAPH);
    *a->mutable_g() = SmallGraph(r, "r", "Y_" + std::string(branch));
  }
  add_node("Flatten", {"r"}, {"f"});
  auto* gemm = add_node("Gemm", {"f", "G"}, {"Z"});
  auto* tb = gemm->add_attribute();
  tb->set_name("transB");
  tb->set_type(onnx::AttributeProto::INT);
  tb->set_i(1);
  return m;
}

}  // namespace

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size, unsigned int seed) {
  Rng r(seed);
  onnx::ModelProto m;
  if (size == 0 || !m.ParseFromArray(data, static_cast<int>(size)) || !m.has_graph()) m = SeedModel();
  const int n = 1 + static_cast<int>(r() % 3);
  for (int i = 0; i < n; ++i) MutateModel(r, &m);
  std::string out;
  if (!m.SerializeToString(&out) || out.size() > max_size) return LLVMFuzzerMutate(data, size, max_size);
  std::memcpy(data, out.data(), out.size());
  return out.size();
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > fuzz::kMaxModelBytes) return -1;
  fuzz::RunModelPipeline(std::string(reinterpret_cast<const char*>(data), size));
  return 0;
}
