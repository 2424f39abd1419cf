// Runs the ONNX conformance tests of Debian's libonnx-testdata through our executor.
//
// A test is selected when every operator of its model is in the promised list (conformance_lib.cc).
// Outputs are compared with ONNX's own tolerance. Prints one line per failing test, the pass / fail /
// skip counts and the operators that made tests be skipped.
//
//   compress_conformance [--data DIR] [--filter SUBSTRING] [--reference] [--threads N] [--verbose]
//                        [--min-pass N] [--known-failures FILE]

#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "compress/exec/executor.h"
#include "compress/io/npy.h"
#include "compress/io/onnx_io.h"
#include "compress/util/error.h"
#include "conformance_lib.h"

using namespace compress;
namespace fs = std::filesystem;

namespace {

struct Options {
  std::string data = conformance::kDefaultDataDir;
  std::string filter;
  bool reference = false;
  bool verbose = false;
  int threads = 1;
  int min_pass = 0;  // exit 1 when fewer tests pass
  std::string known_failures;  // file listing the tests expected to fail
};

// "name  reason" lines; '#' starts a comment.
std::map<std::string, std::string> ReadKnownFailures(const std::string& path) {
  std::map<std::string, std::string> known;
  std::ifstream in(path);
  if (!in) {
    std::cerr << "cannot read " << path << "\n";
    std::exit(2);
  }
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const auto space = line.find(' ');
    known[line.substr(0, space)] = space == std::string::npos ? "" : line.substr(line.find_first_not_of(' ', space));
  }
  return known;
}

// Empty on success, else the failure reason.
std::string RunTest(const conformance::TestCase& test, const Options& opt) {
  try {
    const Model model = LoadModel(test.dir + "/model.onnx");
    ExecutorOptions eo;
    eo.threads = opt.threads;
    eo.reference_kernels = opt.reference;
    Executor exec(model, eo);
    if (test.data_sets.empty()) return "no test_data_set";
    for (const auto& v : exec.inputs()) {
      if (v.type.kind != TypeInfo::Kind::kTensor) {
        return "input '" + v.name + "' is a " + v.type.ToString() + "; the executor runs tensor values only";
      }
    }
    for (const auto& set : test.data_sets) {
      std::vector<Tensor> inputs;
      const auto in_files = conformance::DataFiles(set, "input_");
      for (size_t k = 0; k < in_files.size(); ++k) {
        const DType declared = k < exec.inputs().size() ? exec.inputs()[k].type.elem_type : DType::kUndefined;
        inputs.push_back(conformance::ReadTestTensor(in_files[k], declared));
      }
      const auto want = conformance::DataFiles(set, "output_");
      const std::vector<Tensor> got = exec.Run(inputs);
      if (got.size() != want.size()) return "output count " + std::to_string(got.size());
      for (size_t k = 0; k < want.size(); ++k) {
        const std::string why = conformance::Compare(got[k], conformance::ReadTestTensor(want[k], got[k].dtype()));
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
    else if (a == "--known-failures") opt.known_failures = value();
    else {
      std::cerr << "usage: compress_conformance [--data DIR] [--filter S] [--reference] [--threads N] [--verbose]"
                   " [--min-pass N] [--known-failures FILE]\n";
      return 2;
    }
  }
  const conformance::Selection sel = conformance::SelectTests(opt.data, opt.filter);
  const auto known = opt.known_failures.empty() ? std::map<std::string, std::string>{}
                                                : ReadKnownFailures(opt.known_failures);
  int passed = 0, failed = 0, unexpected = 0;
  for (const auto& test : sel.selected) {
    const std::string why = RunTest(test, opt);
    const bool expected_failure = known.count(test.name) > 0;
    if (why.empty()) {
      ++passed;
      if (opt.verbose) std::cout << "PASS " << test.name << "\n";
      if (expected_failure) {
        ++unexpected;
        std::cout << "UNEXPECTED PASS " << test.name << " (listed in " << opt.known_failures << ")\n";
      }
    } else {
      ++failed;
      std::cout << "FAIL " << test.name << ": " << why << "\n";
      if (expected_failure) {
        std::cout << "     known: " << known.at(test.name) << "\n";
      } else if (!opt.known_failures.empty()) {
        ++unexpected;
        std::cout << "     not a known failure\n";
      }
    }
  }
  std::cout << "operators outside the selected list (tests skipped):";
  for (const auto& [op, n] : sel.skipped_for) std::cout << " " << op << "(" << n << ")";
  std::cout << "\nselected: " << sel.selected.size() << " tests\n";
  std::cout << passed << " passed, " << failed << " failed, " << sel.skipped << " skipped\n";
  if (passed < opt.min_pass) {
    std::cout << "fewer than the required " << opt.min_pass << " tests pass\n";
    return 1;
  }
  if (unexpected > 0) {
    std::cout << unexpected << " results differ from " << opt.known_failures << "\n";
    return 1;
  }
  return 0;
}
