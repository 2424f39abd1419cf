#include "support/test_support.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include <gtest/gtest.h>

#include "compress/exec/executor.h"
#include "compress/io/npy.h"
#include "compress/io/onnx_io.h"
#include "onnx/defs/schema.h"
#include "onnx/onnx_pb.h"
#include "onnx/shape_inference/implementation.h"
#include "compress/util/error.h"

namespace compress::testing {

TempDir::TempDir() {
  std::string base = ::testing::TempDir();
  if (base.empty() || base.back() != '/') base += "/";
  std::string templ = base + "compress-test-XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = buf.data();
}

TempDir::~TempDir() {
  std::error_code ec;
  // Restore permissions changed by tests (unwritable folders) so removal works.
  for (auto it = std::filesystem::recursive_directory_iterator(path_, ec);
       it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_directory(ec)) std::filesystem::permissions(it->path(), std::filesystem::perms::owner_all,
                                                           std::filesystem::perm_options::add, ec);
  }
  std::filesystem::permissions(path_, std::filesystem::perms::owner_all, std::filesystem::perm_options::add, ec);
  std::filesystem::remove_all(path_, ec);
}


CommandResult RunCompress(const std::vector<std::string>& args) {
  std::vector<std::string> argv{COMPRESS_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv);
}

CommandResult RunOrt(const std::vector<std::string>& args) {
  std::vector<std::string> argv{"node", SourcePath("tests/ort/ort.js")};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv);
}

CommandResult RunCommand(const std::vector<std::string>& args) {
  TempDir tmp;
  const std::string out_path = tmp / "stdout", err_path = tmp / "stderr";
  const auto start = std::chrono::steady_clock::now();
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    const int out_fd = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const int err_fd = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const int null_fd = ::open("/dev/null", O_RDONLY);
    ::dup2(out_fd, 1);
    ::dup2(err_fd, 2);
    ::dup2(null_fd, 0);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execvp(argv[0], argv.data());
    ::_exit(127);
  }
  int status = 0;
  struct rusage usage {};
  ::wait4(pid, &status, 0, &usage);
  CommandResult r;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.peak_rss_bytes = static_cast<uint64_t>(usage.ru_maxrss) * 1024;  // Linux reports KiB
  r.out = ReadBytes(out_path);
  r.err = ReadBytes(err_path);
  return r;
}

std::string ErrorOf(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!f) throw std::runtime_error("cannot write " + path);
}

std::string ReadBytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

Model TinyModel() {
  Model m;
  m.ir_version = 8;
  m.opset_imports = {{"", 17}};
  m.producer_name = "compress-tests";
  Graph& g = m.graph;
  g.name = "tiny";
  g.inputs.push_back({"x", TypeInfo::Tensor(DType::kFloat, {Dim::Symbolic("N"), Dim::Fixed(4)}), ""});
  g.outputs.push_back({"y", TypeInfo::Tensor(DType::kFloat, {Dim::Symbolic("N"), Dim::Fixed(3)}), ""});
  std::vector<float> w(12), b(3);
  for (size_t i = 0; i < w.size(); ++i) w[i] = 0.1f * static_cast<float>(i) - 0.5f;
  for (size_t i = 0; i < b.size(); ++i) b[i] = 0.25f * static_cast<float>(i);
  g.initializers.push_back(Tensor::FromVector<float>({4, 3}, w, "W"));
  g.initializers.push_back(Tensor::FromVector<float>({3}, b, "b"));
  g.nodes.push_back(Node{"relu", "Relu", "", {"x"}, {"h"}, {}, ""});
  g.nodes.push_back(Node{"matmul", "MatMul", "", {"h", "W"}, {"hw"}, {}, ""});
  g.nodes.push_back(Node{"add", "Add", "", {"hw", "b"}, {"y"}, {}, ""});
  return m;
}

namespace {

Tensor Wave(std::vector<int64_t> dims, float scale, float phase, const std::string& name) {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = scale * std::sin(0.37f * static_cast<float>(i) + phase);
  return Tensor::FromVector<float>(std::move(dims), v, name);
}

}  // namespace

Attribute GraphAttr(const std::string& name, Graph g) {
  Attribute a;
  a.name = name;
  a.type = AttrType::kGraph;
  a.graphs.push_back(std::move(g));
  return a;
}

Model IfConvLstmModel() {
  Model m;
  m.ir_version = 8;
  m.opset_imports = {{"", 17}};
  m.producer_name = "compress-tests";
  Graph& g = m.graph;
  g.name = "if_conv_lstm";
  g.inputs.push_back({"x", TypeInfo::Tensor(DType::kFloat, {Dim::Fixed(1), Dim::Fixed(4), Dim::Fixed(16)}), ""});
  g.inputs.push_back({"flag", TypeInfo::Tensor(DType::kBool, {}), ""});
  const TypeInfo out_type = TypeInfo::Tensor(DType::kFloat, {Dim::Fixed(1), Dim::Fixed(1), Dim::Fixed(6)});
  g.outputs.push_back({"z", out_type, ""});
  g.initializers.push_back(Wave({8, 4, 3}, 0.5f, 0.1f, "Wc"));
  g.initializers.push_back(Wave({8}, 0.2f, 0.7f, "bc"));

  Graph then_g;
  then_g.name = "then";
  then_g.initializers.push_back(Wave({1, 24, 8}, 0.4f, 0.3f, "W_lstm"));
  then_g.initializers.push_back(Wave({1, 24, 6}, 0.4f, 1.1f, "R_lstm"));
  then_g.initializers.push_back(Wave({1, 48}, 0.1f, 0.5f, "B_lstm"));
  Node conv{"conv", "Conv", "", {"x", "Wc", "bc"}, {"conv_out"}, {}, ""};
  conv.attributes.push_back(Attribute::Ints("pads", {1, 1}));
  Node tr{"then_transpose", "Transpose", "", {"conv_out"}, {"seq"}, {}, ""};
  tr.attributes.push_back(Attribute::Ints("perm", {2, 0, 1}));
  Node lstm{"lstm", "LSTM", "", {"seq", "W_lstm", "R_lstm", "B_lstm"}, {"lstm_y", "lstm_h"}, {}, ""};
  lstm.attributes.push_back(Attribute::Int("hidden_size", 6));
  then_g.nodes = {conv, tr, lstm};
  then_g.outputs.push_back({"lstm_h", out_type, ""});

  Graph else_g;
  else_g.name = "else";
  else_g.initializers.push_back(Wave({4, 6}, 0.5f, 0.9f, "Wm"));
  Node etr{"else_transpose", "Transpose", "", {"x"}, {"xt"}, {}, ""};
  etr.attributes.push_back(Attribute::Ints("perm", {2, 0, 1}));
  Node mm{"matmul", "MatMul", "", {"xt", "Wm"}, {"mm_out"}, {}, ""};
  Node mean{"mean", "ReduceMean", "", {"mm_out"}, {"else_out"}, {}, ""};
  mean.attributes.push_back(Attribute::Ints("axes", {0}));
  else_g.nodes = {etr, mm, mean};
  else_g.outputs.push_back({"else_out", out_type, ""});

  Node iff{"if", "If", "", {"flag"}, {"z"}, {}, ""};
  iff.attributes = {GraphAttr("then_branch", std::move(then_g)), GraphAttr("else_branch", std::move(else_g))};
  g.nodes.push_back(std::move(iff));
  return m;
}

std::vector<Tensor> RunNode(const Node& node, const std::vector<Tensor>& inputs, int64_t opset, bool reference,
                            int threads, const std::vector<bool>& constant) {
  Model m;
  m.ir_version = 8;
  m.opset_imports = {{"", opset}};
  Node n = node;
  size_t next = 0;
  for (auto& in : n.inputs) {
    if (in.empty()) continue;
    if (next >= inputs.size()) throw std::runtime_error("RunNode: fewer tensors than node inputs");
    in = "in" + std::to_string(next);
    Tensor t = inputs[next];
    t.set_name(in);
    if (next < constant.size() && constant[next]) {
      m.graph.initializers.push_back(t);
    } else {
      m.graph.inputs.push_back({in, TypeInfo{}, ""});
      m.graph.inputs.back().type.kind = TypeInfo::Kind::kTensor;
      m.graph.inputs.back().type.elem_type = t.dtype();
    }
    ++next;
  }
  for (size_t k = 0; k < n.outputs.size(); ++k) {
    if (n.outputs[k].empty()) continue;
    n.outputs[k] = "out" + std::to_string(k);
    m.graph.outputs.push_back({n.outputs[k], TypeInfo{}, ""});
  }
  m.graph.nodes.push_back(n);
  ExecutorOptions opt;
  opt.reference_kernels = reference;
  opt.threads = threads;
  Executor exec(m, opt);
  std::vector<Tensor> feed;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (i >= constant.size() || !constant[i]) feed.push_back(inputs[i]);
  }
  return exec.Run(feed);
}

std::string SourcePath(const std::string& relative) { return std::string(COMPRESS_SOURCE_DIR) + "/" + relative; }

std::string CheckerAndTypeErrors(const Model& m) {
  TempDir dir;
  SaveModel(m, dir / "m.onnx");
  const CheckResult check = CheckModelFile(dir / "m.onnx");
  if (!check.ok) return "checker: " + check.message;
  onnx::ModelProto proto;
  if (!proto.ParseFromString(ReadBytes(dir / "m.onnx"))) return "unparsable";
  try {
    onnx::ShapeInferenceOptions options(/*check_type=*/true, /*error_mode=*/1, /*data_prop=*/false);
    onnx::shape_inference::InferShapes(proto, onnx::OpSchemaRegistry::Instance(), options);
  } catch (const std::exception& e) {
    return std::string("type check: ") + e.what();
  }
  return "";
}

std::vector<Tensor> RunModelInOrt(const Model& model, const std::vector<Tensor>& inputs) {
  TempDir dir;
  SaveModel(model, dir / "m.onnx");
  std::vector<std::string> args{"run", dir / "m.onnx", dir / "out"};
  for (size_t k = 0; k < inputs.size(); ++k) {
    args.push_back(dir / ("in" + std::to_string(k) + ".npy"));
    WriteNpy(args.back(), inputs[k]);
  }
  const CommandResult r = RunOrt(args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::vector<Tensor> out;
  if (r.exit_code != 0) return out;
  for (size_t k = 0; k < model.graph.outputs.size(); ++k) {
    out.push_back(ReadNpy(dir / ("out/output_" + std::to_string(k) + ".npy")));
  }
  return out;
}

}  // namespace compress::testing
