// The ONNX conformance tests of Debian's libonnx-testdata: which ones the executor promises to pass and
// how outputs are compared. Shared by the compress_conformance tool and the ONNX Runtime cross-check test.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "compress/ir/tensor.h"

namespace compress::conformance {

// ONNX's backend test tolerance (onnx/backend/test/case/node: rtol=1e-3, atol=1e-7).
constexpr double kRtol = 1e-3;
constexpr double kAtol = 1e-7;

constexpr const char* kDefaultDataDir = "/usr/share/libonnx-testdata/data";

// The operators the executor promises (a test is selected when all of its operators are in this set).
const std::set<std::string>& SelectedOps();

struct TestCase {
  std::string name;  // "node/test_relu"
  std::string dir;
  std::vector<std::string> data_sets;  // test_data_set_* folders, sorted
};

struct Selection {
  std::vector<TestCase> selected;
  int skipped = 0;
  std::vector<std::pair<std::string, int>> skipped_for;  // operator -> tests skipped because of it
};

// Scans node, pytorch-converted, pytorch-operator and simple under `root`; `filter` keeps names containing it.
Selection SelectTests(const std::string& root, const std::string& filter = "");

// input_K.pb / output_K.pb of a data set, in K order.
std::vector<std::string> DataFiles(const std::string& data_set, const std::string& prefix);

// Reads input_K.pb / output_K.pb. ONNX 1.12's generated test data stores bfloat16 tensors as uint16 holding
// the bfloat16 bit patterns; where the model declares bfloat16 (`declared`), the bits are re-labelled.
// Files holding an onnx.SequenceProto or OptionalProto are reported as such (the executor runs tensors).
Tensor ReadTestTensor(const std::string& path, DType declared);

// Empty when `got` equals `want` within rtol/atol (NaN equals NaN; integers, bools, strings exactly),
// otherwise the reason, naming the worst element.
std::string Compare(const Tensor& got, const Tensor& want, double rtol = kRtol, double atol = kAtol);

}  // namespace compress::conformance
