#include "conformance_lib.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>

#include "compress/io/npy.h"
#include "compress/io/onnx_io.h"
#include "compress/util/error.h"
#include "compress/util/half.h"

namespace compress::conformance {

namespace fs = std::filesystem;

const std::set<std::string>& SelectedOps() {
  static const std::set<std::string> ops = {
      "Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Exp", "Log", "Neg",
      "Abs", "Reciprocal", "Min", "Max", "Sum", "Mean", "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Sigmoid",
      "Tanh", "HardSigmoid", "HardSwish", "Softplus", "Clip", "Erf", "Gelu", "Softmax", "LogSoftmax",
      "BatchNormalization", "LayerNormalization", "InstanceNormalization", "ReduceMean", "ReduceSum",
      "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2", "ReduceSumSquare", "MaxPool", "AveragePool",
      "GlobalAveragePool", "GlobalMaxPool", "Flatten", "Reshape", "Transpose", "Concat", "Split", "Slice",
      "Squeeze", "Unsqueeze", "Gather", "Shape", "Size", "Cast", "Constant", "ConstantOfShape", "Identity",
      "Dropout", "Resize", "Upsample", "Pad", "Expand", "Where", "Equal", "Less", "Greater", "Not", "And", "Tile",
      "Range", "ArgMax", "ArgMin", "MatMulInteger", "ConvInteger", "QuantizeLinear", "DequantizeLinear",
      "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul", "GreaterOrEqual", "LessOrEqual", "If", "Loop",
      "LSTM"};
  return ops;
}

namespace {

std::vector<std::string> SortedDirs(const fs::path& dir, const std::string& prefix) {
  std::vector<std::string> out;
  if (!fs::is_directory(dir)) return out;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (e.is_directory() && name.rfind(prefix, 0) == 0) out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

double ToDouble(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::kFloat: return t.data<float>()[i];
    case DType::kDouble: return t.data<double>()[i];
    case DType::kFloat16: return HalfToFloat(static_cast<const uint16_t*>(t.raw())[i]);
    case DType::kBFloat16: return BFloat16ToFloat(static_cast<const uint16_t*>(t.raw())[i]);
    default: return 0.0;
  }
}

}  // namespace

Selection SelectTests(const std::string& root, const std::string& filter) {
  Selection sel;
  std::map<std::string, int> skipped_for;
  for (const char* folder : {"node", "pytorch-converted", "pytorch-operator", "simple"}) {
    for (const auto& dir : SortedDirs(fs::path(root) / folder, "test_")) {
      const std::string name = std::string(folder) + "/" + fs::path(dir).filename().string();
      if (!filter.empty() && name.find(filter) == std::string::npos) continue;
      if (!fs::exists(dir + "/model.onnx")) continue;
      std::set<std::string> outside;
      try {
        const Model m = LoadModel(dir + "/model.onnx");
        ForEachGraph(m.graph, [&](const Graph& g) {
          for (const auto& n : g.nodes) {
            if (!n.IsDefaultDomain() || !SelectedOps().count(n.op_type)) {
              outside.insert(n.IsDefaultDomain() ? n.op_type : n.domain + "::" + n.op_type);
            }
          }
        });
      } catch (const Error&) {
        outside.insert("(model does not load)");
      }
      if (!outside.empty()) {
        ++sel.skipped;
        for (const auto& op : outside) ++skipped_for[op];
        continue;
      }
      sel.selected.push_back({name, dir, SortedDirs(dir, "test_data_set_")});
    }
  }
  sel.skipped_for.assign(skipped_for.begin(), skipped_for.end());
  return sel;
}

std::vector<std::string> DataFiles(const std::string& data_set, const std::string& prefix) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(data_set)) {
    const std::string name = e.path().filename().string();
    if (e.is_regular_file() && name.rfind(prefix, 0) == 0 && e.path().extension() == ".pb") {
      out.push_back(e.path().string());
    }
  }
  // input_10 sorts after input_9.
  std::sort(out.begin(), out.end(), [](const std::string& a, const std::string& b) {
    return a.size() != b.size() ? a.size() < b.size() : a < b;
  });
  return out;
}

Tensor ReadTestTensor(const std::string& path, DType declared) {
  Tensor t = ReadTensorProtoFile(path);
  if (declared == DType::kBFloat16 && t.dtype() == DType::kUInt16) {
    Tensor relabelled(DType::kBFloat16, t.dims(), t.name());
    std::memcpy(relabelled.mutable_raw(), t.raw(), t.nbytes());
    return relabelled;
  }
  return t;
}

std::string Compare(const Tensor& got, const Tensor& want, double rtol, double atol) {
  if (got.dtype() != want.dtype()) {
    return std::string("dtype ") + DTypeName(got.dtype()) + ", expected " + DTypeName(want.dtype());
  }
  if (got.dims() != want.dims()) {
    return "shape " + ShapeToString(got.dims()) + ", expected " + ShapeToString(want.dims());
  }
  if (want.dtype() == DType::kString) return got.strings() == want.strings() ? "" : "strings differ";
  if (!IsFloatingPoint(want.dtype())) {
    if (want.nbytes() == 0 || std::memcmp(got.raw(), want.raw(), want.nbytes()) == 0) return "";
    return "integer values differ";
  }
  double worst = 0;
  int64_t worst_i = -1;
  for (int64_t i = 0; i < want.numel(); ++i) {
    const double a = ToDouble(got, i), b = ToDouble(want, i);
    if (std::isnan(a) && std::isnan(b)) continue;
    if (std::isinf(a) || std::isinf(b)) {
      if (a == b) continue;
      return "element " + std::to_string(i) + ": got " + std::to_string(a) + ", expected " + std::to_string(b);
    }
    const double excess = std::fabs(a - b) - (atol + rtol * std::fabs(b));
    if (!(excess <= 0) && (worst_i < 0 || excess > worst)) {
      worst = excess;
      worst_i = i;
    }
  }
  if (worst_i < 0) return "";
  return "element " + std::to_string(worst_i) + ": got " + std::to_string(ToDouble(got, worst_i)) + ", expected " +
         std::to_string(ToDouble(want, worst_i));
}

}  // namespace compress::conformance
