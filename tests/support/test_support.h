// Helpers shared by the test suites.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "compress/exec/isa.h"
#include "compress/ir/graph.h"

namespace compress::testing {

// A fresh empty folder under the test temp dir, removed by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
  uint64_t peak_rss_bytes = 0;  // the child's peak resident memory (wait4)
  double seconds = 0;           // wall time of the run
};
// Runs argv[0] (looked up in PATH) with the rest as arguments, no shell involved; captures its output.
CommandResult RunCommand(const std::vector<std::string>& argv);
// Runs the real compress binary with `args`.
CommandResult RunCompress(const std::vector<std::string>& args);
// Runs tests/ort/ort.js (ONNX Runtime) with `args`.
CommandResult RunOrt(const std::vector<std::string>& args);

// The message of the compress::Error `fn` throws, or "" when it throws nothing.
std::string ErrorOf(const std::function<void()>& fn);

void WriteBytes(const std::string& path, const std::string& bytes);
std::string ReadBytes(const std::string& path);
std::vector<std::string> ListDir(const std::string& dir);  // sorted names, without . and ..

// A small valid model: input x float32[N,4] -> Relu -> MatMul(W [4,3]) -> Add(b [3]) -> y.
Model TinyModel();

// A model whose weights sit in If branches and an enclosing scope (opset 17, IR 8), like exported
// voice-activity detectors:
//   inputs x float32[1,4,16], flag bool[]; output z float32[1,1,6]
//   main graph: initializers Wc [8,4,3], bc [8] (read by the then branch only); If(flag) -> z
//   then ("then"):  Conv(x, Wc, bc; pads 1) -> Transpose [16,1,8] -> LSTM(W [1,24,8], R [1,24,6],
//                   B [1,48]; hidden 6; node "lstm") -> Y_h [1,1,6]        (node names "conv", "lstm")
//   else ("else"):  Transpose(x) [16,1,4] -> MatMul(Wm [4,6]) -> ReduceMean(axis 0) -> [1,1,6]
//                   (node name "matmul")
// Weights are deterministic, of magnitude up to about 0.5.
// A graph-valued attribute (then_branch, else_branch, body).
Attribute GraphAttr(const std::string& name, Graph g);

Model IfConvLstmModel();

std::string SourcePath(const std::string& relative);  // path inside the source tree

// "" when the saved model passes the ONNX checker and then shape inference with type checking in strict
// mode (what ONNX Runtime does when it loads a model: every type parameter binds one type, declared
// types match); otherwise what failed.
std::string CheckerAndTypeErrors(const Model& m);

// The model's outputs in ONNX Runtime for `inputs` (in the order of its real inputs); empty, with a test
// failure, when ONNX Runtime rejects it.
std::vector<Tensor> RunModelInOrt(const Model& model, const std::vector<Tensor>& inputs);

// Runs one node in a model of its own (default domain, given opset) through the executor. Inputs are
// bound to the node's inputs in order ("" entries of node.inputs are omitted optional inputs and take no
// tensor); inputs flagged in `constant` become initializers, so kernels see them at build time.
std::vector<Tensor> RunNode(const Node& node, const std::vector<Tensor>& inputs, int64_t opset,
                            bool reference = false, int threads = 1, const std::vector<bool>& constant = {});

// Calls body once with each kernel instruction set this CPU supports active (the caller adds the set's name
// to failure messages with SCOPED_TRACE inside), then restores the default. Every fast path gets checked
// on machines that have it; the ones a CPU lacks cannot run there.
template <typename Body>
void ForEachKernelIsa(Body&& body) {
  const KernelIsa saved = ActiveKernelIsa();
  for (KernelIsa isa : SupportedKernelIsas()) {
    UseKernelIsa(isa);
    body(isa);
  }
  UseKernelIsa(saved);
}

}  // namespace compress::testing
