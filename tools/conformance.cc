// Runs the ONNX conformance tests of Debian's libonnx-testdata through our executor.
//
// A test is selected when every operator of its model is in kSelectedOps (the operator list the executor
// promises). Outputs are compared with ONNX's own tolerance; any wider tolerance is a named constant
// below with its reason. Prints one line per failing test, the pass / fail / skip counts and the
// operators that made tests be skipped.
//
//   compress_conformance [--data DIR] [--filter SUBSTRING] [--reference] [--threads N] [--verbose]
//                        [--min-pass N]

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "compress/exec/executor.h"
#include "compress/io/npy.h"
#include "compress/io/onnx_io.h"
#include "compress/util/error.h"
#include "compress/util/half.h"

namespace fs = std::filesystem;
using namespace compress;

namespace {

// ONNX's backend test tolerance (onnx/backend/test/case/node: rtol=1e-3, atol=1e-7).
constexpr double kRtol = 1e-3;
constexpr double kAtol = 1e-7;

const std::set<std::string> kSelectedOps = {
    "Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Exp", "Log", "Neg",
    "Abs", "Reciprocal", "Min", "Max", "Sum", "Mean", "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Sigmoid",
    "Tanh", "HardSigmoid", "HardSwish", "Softplus", "Clip", "Erf", "Gelu", "Softmax", "LogSoftmax",
    "BatchNormalization", "LayerNormalization", "InstanceNormalization", "ReduceMean", "ReduceSum", "ReduceMax",
    "ReduceMin", "ReduceProd", "ReduceL2", "ReduceSumSquare", "MaxPool", "AveragePool", "GlobalAveragePool",
    "GlobalMaxPool", "Flatten", "Reshape", "Transpose", "Concat", "Split", "Slice", "Squeeze", "Unsqueeze",
    "Gather", "Shape", "Size", "Cast", "Constant", "ConstantOfShape", "Identity", "Dropout", "Resize", "Upsample",
    "Pad", "Expand", "Where", "Equal", "Less", "Greater", "Not", "And", "Tile", "Range", "ArgMax", "ArgMin",
    "MatMulInteger", "ConvInteger", "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv",
    "QLinearMatMul"};

struct Options {
  std::string data = "/usr/share/libonnx-testdata/data";
  std::string filter;
  bool reference = false;
  bool verbose = false;
  int threads = 1;
  int min_pass = 0;  // exit 1 when fewer tests pass
};

double ToDouble(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::kFloat: return t.data<float>()[i];
    case DType::kDouble: return t.data<double>()[i];
    case DType::kFloat16: return HalfToFloat(static_cast<const uint16_t*>(t.raw())[i]);
    case DType::kBFloat16: return BFloat16ToFloat(static_cast<const uint16_t*>(t.raw())[i]);
    default: return 0.0;
  }
}

// Empty when equal within tolerance, otherwise the reason.
std::string Compare(const Tensor& got, const Tensor& want) {
  if (got.dtype() != want.dtype()) {
    return std::string("dtype ") + DTypeName(got.dtype()) + ", expected " + DTypeName(want.dtype());
  }
  if (got.dims() != want.dims()) return "shape " + ShapeToString(got.dims()) + ", expected " + ShapeToString(want.dims());
  if (want.dtype() == DType::kString) return got.strings() == want.strings() ? "" : "strings differ";
  if (!IsFloatingPoint(want.dtype())) {
    if (std::memcmp(got.raw(), want.raw(), want.nbytes()) == 0) return "";
    return "integer values differ";
  }
  double worst = 0;
  int64_t worst_i = -1;
  for (int64_t i = 0; i < want.numel(); ++i) {
    const double a = ToDouble(got, i), b = ToDouble(want, i);
    if (std::isnan(a) && std::isnan(b)) continue;
    if (std::isinf(a) || std::isinf(b)) {
      if (a == b) continue;
      return "element " + std::to_string(i) + ": " + std::to_string(a) + " vs " + std::to_string(b);
    }
    const double excess = std::fabs(a - b) - (kAtol + kRtol * std::fabs(b));
    if (!(excess <= 0) && (worst_i < 0 || excess > worst)) {
      worst = excess;
      worst_i = i;
    }
  }
  if (worst_i < 0) return "";
  return "element " + std::to_string(worst_i) + ": got " + std::to_string(ToDouble(got, worst_i)) + ", expected " +
         std::to_string(ToDouble(want, worst_i));
}

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

std::vector<std::string> SortedFiles(const fs::path& dir, const std::string& prefix) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
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

// Empty on success, else the failure reason.
std::string RunTest(const std::string& dir, const Options& opt) {
  Model model;
  try {
    model = LoadModel(dir + "/model.onnx");
  } catch (const Error& e) {
    return std::string("load: ") + e.what();
  }
  try {
    ExecutorOptions eo;
    eo.threads = opt.threads;
    eo.reference_kernels = opt.reference;
    Executor exec(model, eo);
    const auto sets = SortedDirs(dir, "test_data_set_");
    if (sets.empty()) return "no test_data_set";
    for (const auto& set : sets) {
      std::vector<Tensor> inputs;
      for (const auto& f : SortedFiles(set, "input_")) inputs.push_back(ReadTensorProtoFile(f));
      const auto want = SortedFiles(set, "output_");
      const std::vector<Tensor> got = exec.Run(inputs);
      if (got.size() != want.size()) return "output count " + std::to_string(got.size());
      for (size_t k = 0; k < want.size(); ++k) {
        const std::string why = Compare(got[k], ReadTensorProtoFile(want[k]));
        if (!why.empty()) return fs::path(set).filename().string() + " output " + std::to_string(k) + ": " + why;
      }
    }
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("exception: ") + e.what();
  }
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << "missing value for " << a << "\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--data") opt.data = value();
    else if (a == "--filter") opt.filter = value();
    else if (a == "--reference") opt.reference = true;
    else if (a == "--verbose") opt.verbose = true;
    else if (a == "--threads") opt.threads = std::stoi(value());
    else if (a == "--min-pass") opt.min_pass = std::stoi(value());
    else {
      std::cerr << "usage: compress_conformance [--data DIR] [--filter S] [--reference] [--threads N] [--verbose]\n";
      return 2;
    }
  }
  int passed = 0, failed = 0, skipped = 0;
  std::map<std::string, int> skipped_for;
  for (const char* folder : {"node", "pytorch-converted", "pytorch-operator", "simple"}) {
    for (const auto& dir : SortedDirs(fs::path(opt.data) / folder, "test_")) {
      const std::string name = std::string(folder) + "/" + fs::path(dir).filename().string();
      if (!opt.filter.empty() && name.find(opt.filter) == std::string::npos) continue;
      if (!fs::exists(dir + "/model.onnx")) continue;
      std::set<std::string> outside;
      try {
        const Model m = LoadModel(dir + "/model.onnx");
        ForEachGraph(m.graph, [&](const Graph& g) {
          for (const auto& n : g.nodes) {
            if (!n.IsDefaultDomain() || !kSelectedOps.count(n.op_type)) {
              outside.insert(n.IsDefaultDomain() ? n.op_type : n.domain + "::" + n.op_type);
            }
          }
        });
      } catch (const Error&) {
        outside.insert("(model does not load)");
      }
      if (!outside.empty()) {
        ++skipped;
        for (const auto& op : outside) ++skipped_for[op];
        continue;
      }
      const std::string why = RunTest(dir, opt);
      if (why.empty()) {
        ++passed;
        if (opt.verbose) std::cout << "PASS " << name << "\n";
      } else {
        ++failed;
        std::cout << "FAIL " << name << ": " << why << "\n";
      }
    }
  }
  std::cout << "operators outside the selected list (tests skipped):";
  for (const auto& [op, n] : skipped_for) std::cout << " " << op << "(" << n << ")";
  std::cout << "\nselected: " << passed + failed << " tests\n";
  std::cout << passed << " passed, " << failed << " failed, " << skipped << " skipped\n";
  if (passed < opt.min_pass) {
    std::cout << "fewer than the required " << opt.min_pass << " tests pass\n";
    return 1;
  }
  return 0;
}
