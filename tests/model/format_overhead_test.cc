// What a compressed file holds beyond its tensors (weights, scales, zero points, biases): nodes, value
// names, attributes, graph I/O and the recipe metadata. Measured with --compact-names, because the names
// an exporter chose are kept by default (they are what people debug with) and are not structure the
// passes add; the bar is 3 KB plus 40 bytes per node, for every sample model and every mode.

#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include "compress/io/onnx_io.h"
#include "support/test_support.h"

namespace compress {
namespace {

constexpr int64_t kFixedOverheadBytes = 3 * 1024;
constexpr int64_t kOverheadBytesPerNode = 40;

int64_t CountNodes(const Graph& g) {
  int64_t n = static_cast<int64_t>(g.nodes.size());
  for (const auto& node : g.nodes) {
    for (const auto& a : node.attributes) {
      for (const auto& sub : a.graphs) n += CountNodes(sub);
    }
  }
  return n;
}

int64_t TensorBytes(const Graph& g) {
  int64_t bytes = 0;
  for (const auto& t : g.initializers) bytes += static_cast<int64_t>(t.nbytes());
  for (const auto& node : g.nodes) {
    for (const auto& a : node.attributes) {
      for (const auto& t : a.tensors) bytes += static_cast<int64_t>(t.nbytes());
      for (const auto& sub : a.graphs) bytes += TensorBytes(sub);
    }
  }
  return bytes;
}

TEST(FormatOverhead, EverySampleModelAndModeStaysWithinThreeKilobytesPlusFortyBytesPerNode) {
  testing::TempDir tmp;
  const std::string calib = testing::SourcePath("models/calib");
  struct Mode {
    std::string name;
    std::vector<std::string> flags;
    bool fmnist_calib;
  };
  const std::vector<Mode> modes = {
      {"fp16", {"--fp16"}, false},
      {"static", {"--int8", "--calib", calib}, true},
      {"qop", {"--int8", "--calib", calib, "--format", "qop"}, true},
      {"dynamic", {"--int8", "--dynamic"}, false},
      {"weights_only", {"--int8", "--weights-only"}, false},
  };
  std::vector<std::string> models;
  for (const std::string m : {"mlp", "cnn", "cnn_bn", "vit"}) models.push_back("models/" + m + ".onnx");
  for (const std::string m : {"attention_op9", "autoencoder_op10", "hardswish_cnn_op11"}) {
    models.push_back("models/other/" + m + ".onnx");
  }
  for (const auto& rel : models) {
    const bool fmnist_input = rel.find("/other/") == std::string::npos;
    for (const auto& mode : modes) {
      // The calibration slice holds Fashion-MNIST images, which only the models in models/ take.
      if (mode.fmnist_calib && !fmnist_input) continue;
      SCOPED_TRACE(rel + " " + mode.name);
      const std::string out = tmp / (std::filesystem::path(rel).stem().string() + "." + mode.name + ".onnx");
      std::vector<std::string> args = {testing::SourcePath(rel), "--compact-names", "-o", out, "-q"};
      args.insert(args.end(), mode.flags.begin(), mode.flags.end());
      const auto r = testing::RunCompress(args);
      ASSERT_EQ(r.exit_code, 0) << r.err;
      const Model m = LoadModel(out);
      const int64_t file = static_cast<int64_t>(std::filesystem::file_size(out));
      const int64_t overhead = file - TensorBytes(m.graph);
      const int64_t nodes = CountNodes(m.graph);
      EXPECT_LT(overhead, kFixedOverheadBytes + kOverheadBytesPerNode * nodes);
      std::cout << "[overhead] " << rel << " " << mode.name << ": " << overhead << " bytes beyond tensors, "
                << nodes << " nodes (bar " << kFixedOverheadBytes + kOverheadBytesPerNode * nodes << ")\n";
    }
  }
}

}  // namespace
}  // namespace compress
