// Malformed nodes that only a model built in memory can hold: LoadModel rejects them (VerifyOperators), but
// the executor, shape inference, the opset converter and every pass must still fail with a compress::Error
// on them, never crash (this suite also runs under ASan + UBSan).

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "compress/calib/calibration.h"
#include "compress/exec/executor.h"
#include "compress/io/schema.h"
#include "compress/passes/pass.h"
#include "compress/pipeline/pipeline.h"
#include "compress/util/error.h"
#include "support/test_support.h"

namespace compress {
namespace {

using json = nlohmann::json;

// x[1,4,6,6] -> Conv(W [4,2,3,3], B [4], group 2) -> c -> BatchNormalization -> y, at `opset`.
Model ConvBnModel(int64_t opset, const std::function<void(Node&)>& edit, const std::string& op = "Conv") {
  Model m;
  m.ir_version = 8;
  m.opset_imports = {{"", opset}};
  m.graph.name = "g";
  m.graph.inputs.push_back({"x", TypeInfo::Tensor(DType::kFloat, {Dim::Fixed(1), Dim::Fixed(4), Dim::Fixed(6),
                                                                   Dim::Fixed(6)}), ""});
  TypeInfo out;
  out.kind = TypeInfo::Kind::kTensor;
  out.elem_type = DType::kFloat;
  m.graph.outputs.push_back({"y", out, ""});
  std::vector<float> w(72);
  for (size_t i = 0; i < w.size(); ++i) w[i] = 0.01f * static_cast<float>(i % 13) - 0.05f;
  m.graph.initializers.push_back(Tensor::FromVector<float>({4, 2, 3, 3}, w, "W"));
  m.graph.initializers.push_back(Tensor::FromVector<float>({4}, {0.1f, 0.2f, 0.3f, 0.4f}, "B"));
  for (const char* name : {"scale", "bias", "mean", "var"}) {
    m.graph.initializers.push_back(Tensor::FromVector<float>({4}, {1.0f, 0.5f, 2.0f, 1.5f}, name));
  }
  Node conv{"conv", op, "", {"x", "W", "B"}, {"c"}, {Attribute::Int("group", 2)}, ""};
  edit(conv);
  m.graph.nodes.push_back(conv);
  m.graph.nodes.push_back(Node{"bn", "BatchNormalization", "", {"c", "scale", "bias", "mean", "var"}, {"y"}, {}, ""});
  return m;
}

struct Bad {
  std::string name;
  Model model;
};

std::vector<Bad> BadModels() {
  std::vector<Bad> bad;
  for (int64_t opset : {11, 13}) {
    const std::string v = "_op" + std::to_string(opset);
    for (const char* op : {"Conv", "ConvTranspose"}) {
      const std::string o = std::string("_") + op;
      bad.push_back({"group_negative" + o + v, ConvBnModel(opset, [](Node& n) { n.SetAttr(Attribute::Int("group", -2)); }, op)});
      bad.push_back({"group_zero" + o + v, ConvBnModel(opset, [](Node& n) { n.SetAttr(Attribute::Int("group", 0)); }, op)});
      bad.push_back({"group_float" + o + v, ConvBnModel(opset, [](Node& n) { n.SetAttr(Attribute::Float("group", 2.0f)); }, op)});
      bad.push_back({"group_string" + o + v, ConvBnModel(opset, [](Node& n) { n.SetAttr(Attribute::String("group", "2")); }, op)});
      bad.push_back({"group_3" + o + v, ConvBnModel(opset, [](Node& n) { n.SetAttr(Attribute::Int("group", 3)); }, op)});
      bad.push_back({"kernel_shape_int" + o + v,
                     ConvBnModel(opset, [](Node& n) { n.SetAttr(Attribute::Int("kernel_shape", 3)); }, op)});
      bad.push_back({"strides_zero" + o + v,
                     ConvBnModel(opset, [](Node& n) { n.SetAttr(Attribute::Ints("strides", {0, 0})); }, op)});
      bad.push_back({"strides_short" + o + v,
                     ConvBnModel(opset, [](Node& n) { n.SetAttr(Attribute::Ints("strides", {1})); }, op)});
      bad.push_back({"dilations_negative" + o + v,
                     ConvBnModel(opset, [](Node& n) { n.SetAttr(Attribute::Ints("dilations", {-1, 1})); }, op)});
      bad.push_back({"pads_negative" + o + v,
                     ConvBnModel(opset, [](Node& n) { n.SetAttr(Attribute::Ints("pads", {-5, -5, -5, -5})); }, op)});
      bad.push_back({"pads_short" + o + v,
                     ConvBnModel(opset, [](Node& n) { n.SetAttr(Attribute::Ints("pads", {1})); }, op)});
      bad.push_back({"kernel_shape_mismatch" + o + v,
                     ConvBnModel(opset, [](Node& n) { n.SetAttr(Attribute::Ints("kernel_shape", {5, 5})); }, op)});
      bad.push_back({"no_weight" + o + v, ConvBnModel(opset, [](Node& n) { n.inputs = {"x"}; }, op)});
      bad.push_back({"empty_weight" + o + v, ConvBnModel(opset, [](Node& n) { n.inputs = {"x", "", "B"}; }, op)});
    }
    Model gemm = ConvBnModel(opset, [](Node&) {});
    gemm.graph.nodes[0] = Node{"gemm", "Gemm", "", {"x"}, {"c"}, {}, ""};
    bad.push_back({"gemm_one_input" + v, gemm});
  }
  Model up = ConvBnModel(9, [](Node&) {});
  up.graph.nodes[0] = Node{"up", "Upsample", "", {"x"}, {"c"}, {Attribute::String("mode", "nearest")}, ""};
  bad.push_back({"upsample9_without_scales", up});
  Model up_float = up;
  up_float.graph.nodes[0].attributes = {Attribute::Float("mode", 1.0f)};
  up_float.graph.nodes[0].inputs = {"x", "scale"};
  bad.push_back({"upsample9_mode_float", up_float});

  // Nodes whose attributes or constant inputs contradict the shapes: node 'bad' replaces the convolution.
  auto replaced = [](int64_t opset, Node node, std::vector<Tensor> inits = {}) {
    Model m = ConvBnModel(opset, [](Node&) {});
    node.name = "bad";
    if (node.outputs.empty()) node.outputs = {"c"};
    m.graph.nodes[0] = std::move(node);
    for (auto& t : inits) m.graph.initializers.push_back(std::move(t));
    return m;
  };
  auto i64 = [](std::vector<int64_t> v, const char* name) {
    const auto n = static_cast<int64_t>(v.size());
    return Tensor::FromVector<int64_t>({n}, v, name);
  };
  bad.push_back({"transpose_perm_repeat", replaced(13, Node{"", "Transpose", "", {"x"}, {}, {Attribute::Ints("perm", {0, 1, 1, 2})}, ""})});
  bad.push_back({"transpose_perm_short", replaced(13, Node{"", "Transpose", "", {"x"}, {}, {Attribute::Ints("perm", {0, 2, 1})}, ""})});
  bad.push_back({"reshape_two_inferred", replaced(13, Node{"", "Reshape", "", {"x", "s"}, {}, {}, ""}, {i64({-1, -1}, "s")})});
  bad.push_back({"reshape_count", replaced(13, Node{"", "Reshape", "", {"x", "s"}, {}, {}, ""}, {i64({3, 5}, "s")})});
  bad.push_back({"reshape_zero_past_rank", replaced(13, Node{"", "Reshape", "", {"x", "s"}, {}, {}, ""}, {i64({1, 4, 6, 6, 0}, "s")})});
  bad.push_back({"reshape_below_minus_one", replaced(13, Node{"", "Reshape", "", {"x", "s"}, {}, {}, ""}, {i64({-2, 72}, "s")})});
  bad.push_back({"gather_index_out_of_range", replaced(13, Node{"", "Gather", "", {"x", "i"}, {}, {Attribute::Int("axis", 1)}, ""}, {i64({5}, "i")})});
  bad.push_back({"gather_float_indices", replaced(13, Node{"", "Gather", "", {"x", "i"}, {}, {}, ""}, {Tensor::FromVector<float>({1}, {0.0f}, "i")})});
  bad.push_back({"softmax_axis", replaced(13, Node{"", "Softmax", "", {"x"}, {}, {Attribute::Int("axis", 4)}, ""})});
  bad.push_back({"flatten_axis", replaced(13, Node{"", "Flatten", "", {"x"}, {}, {Attribute::Int("axis", -5)}, ""})});
  bad.push_back({"concat_axis", replaced(13, Node{"", "Concat", "", {"x", "x"}, {}, {Attribute::Int("axis", 9)}, ""})});
  bad.push_back({"split_count", replaced(13, Node{"", "Split", "", {"x", "s"}, {"c", "c2", "c3"}, {Attribute::Int("axis", 1)}, ""}, {i64({2, 2}, "s")})});
  bad.push_back({"split_sum", replaced(11, Node{"", "Split", "", {"x"}, {"c", "c2"}, {Attribute::Int("axis", 1), Attribute::Ints("split", {1, 5})}, ""})});
  bad.push_back({"slice_zero_step", replaced(13, Node{"", "Slice", "", {"x", "b", "e", "a", "st"}, {}, {}, ""},
                                             {i64({0}, "b"), i64({2}, "e"), i64({1}, "a"), i64({0}, "st")})});
  bad.push_back({"slice_axis_twice", replaced(13, Node{"", "Slice", "", {"x", "b", "e", "a"}, {}, {}, ""},
                                              {i64({0, 0}, "b"), i64({1, 1}, "e"), i64({1, -3}, "a")})});
  bad.push_back({"gemm_transA_2", replaced(13, Node{"", "Gemm", "", {"x", "W"}, {}, {Attribute::Int("transA", 2)}, ""})});
  bad.push_back({"matmul_inner", replaced(13, Node{"", "MatMul", "", {"x", "M"}, {}, {}, ""},
                                          {Tensor::FromVector<float>({5, 3}, std::vector<float>(15, 1.0f), "M")})});
  bad.push_back({"tile_repeats", replaced(13, Node{"", "Tile", "", {"x", "r"}, {}, {}, ""}, {i64({1, 2}, "r")})});
  bad.push_back({"tile_negative", replaced(13, Node{"", "Tile", "", {"x", "r"}, {}, {}, ""}, {i64({1, -2, 1, 1}, "r")})});
  bad.push_back({"pad_length", replaced(13, Node{"", "Pad", "", {"x", "p"}, {}, {}, ""}, {i64({0, 0, 1, 1}, "p")})});
  bad.push_back({"squeeze_axis", replaced(11, Node{"", "Squeeze", "", {"x"}, {}, {Attribute::Ints("axes", {5})}, ""})});
  bad.push_back({"unsqueeze_axis_twice", replaced(13, Node{"", "Unsqueeze", "", {"x", "a"}, {}, {}, ""}, {i64({0, -6}, "a")})});
  bad.push_back({"cast_to_99", replaced(13, Node{"", "Cast", "", {"x"}, {}, {Attribute::Int("to", 99)}, ""})});
  bad.push_back({"depth_to_space_zero", replaced(13, Node{"", "DepthToSpace", "", {"x"}, {}, {Attribute::Int("blocksize", 0)}, ""})});
  bad.push_back({"constant_of_shape_negative", replaced(13, Node{"", "ConstantOfShape", "", {"s"}, {}, {}, ""}, {i64({2, -3}, "s")})});
  bad.push_back({"add_double", replaced(13, Node{"", "Add", "", {"x", "d"}, {}, {}, ""},
                                        {Tensor::FromVector<double>({6}, std::vector<double>(6, 1.0), "d")})});
  Model bias = ConvBnModel(13, [](Node&) {});
  bias.graph.initializers[1] = Tensor::FromVector<float>({3}, {1, 2, 3}, "B");
  bias.graph.nodes[0].name = "bad";
  bad.push_back({"conv_bias_length", bias});
  bad.push_back({"batchnorm_scale_length",
                 replaced(13, Node{"", "BatchNormalization", "", {"x", "s3", "bias", "mean", "var"}, {}, {}, ""},
                          {Tensor::FromVector<float>({3}, {1, 2, 3}, "s3")})});
  return bad;
}

// Runs `fn`: it may succeed or throw compress::Error; anything else is a failure (a crash ends the test).
void Survives(const std::string& what, const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error&) {
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << ": threw a non-compress exception: " << e.what();
  }
}

class RunSource : public CalibrationSource {
 public:
  const CalibrationTable& Get(const Model& model, const std::vector<std::string>& tensors) override {
    table_ = CalibrationTable{};
    Executor exec(model);
    const Tensor x = Tensor::FromVector<float>({1, 4, 6, 6}, std::vector<float>(144, 0.5f), "x");
    const ValueObserver observe = [&](const std::string& name, const Tensor& v) {
      for (const auto& t : tensors) {
        if (t == name && v.dtype() == DType::kFloat) table_.tensors[name].Observe(v.data<float>(), v.numel());
      }
    };
    observe("x", x);
    exec.Run({x}, &observe);
    return table_;
  }
  std::string data_sha256() const override { return "run"; }

 private:
  CalibrationTable table_;
};

class UnverifiedGraph : public ::testing::TestWithParam<Bad> {};

TEST_P(UnverifiedGraph, IsRefusedByVerificationAndNeverCrashesLaterStages) {
  const Model& model = GetParam().model;
  // What LoadModel runs: the operator checks name the node.
  const std::string why = testing::ErrorOf([&] { VerifyOperators(model); });
  EXPECT_FALSE(why.empty());
  EXPECT_EQ(why.find('\n'), std::string::npos) << why;
  EXPECT_TRUE(why.find("'conv'") != std::string::npos || why.find("'gemm'") != std::string::npos ||
              why.find("'up'") != std::string::npos || why.find("'bad'") != std::string::npos)
      << why;

  Survives("executor", [&] {
    Executor exec(model);
    exec.Run({Tensor::FromVector<float>({1, 4, 6, 6}, std::vector<float>(144, 0.5f), "x")});
  });
  Survives("reference executor", [&] {
    ExecutorOptions eo;
    eo.reference_kernels = true;
    Executor exec(model, eo);
    exec.Run({Tensor::FromVector<float>({1, 4, 6, 6}, std::vector<float>(144, 0.5f), "x")});
  });
  Survives("shape inference", [&] {
    Model m = model;
    InferShapes(m);
  });
  Survives("opset conversion", [&] {
    Model m = model;
    std::string failure;
    EXPECT_FALSE(ConvertOpset(m, m.OpsetVersion("") == 13 ? 14 : 13, &failure));
    EXPECT_EQ(failure, why);
    EXPECT_EQ(m.OpsetVersion(""), model.OpsetVersion(""));
  });
  const std::vector<std::pair<std::string, json>> recipes = {
      {"fp16", json::object()},
      {"quantize", {{"mode", "dynamic"}}},
      {"quantize", {{"mode", "weights_only"}}},
      {"quantize", {{"mode", "static"}, {"min_conv_depth", 0}}},
      {"quantize", {{"mode", "static"}, {"format", "qop"}, {"min_conv_depth", 0}}},
      {"compact_names", json::object()},
  };
  for (const auto& [pass, options] : recipes) {
    Survives(pass + " " + options.dump(), [&] {
      Model m = model;
      Recipe recipe;
      recipe.steps.push_back(MakeRecipeStep(pass, options, "test"));
      RunSource source;
      PipelineOptions po;
      po.calibration = &source;
      RunPipeline(m, recipe, po);
    });
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, UnverifiedGraph, ::testing::ValuesIn(BadModels()),
                         [](const ::testing::TestParamInfo<Bad>& param) { return param.param.name; });

}  // namespace
}  // namespace compress
