// Running a model over a data folder: top-1 accuracy when labels exist, output statistics otherwise, and
// throughput. The basis of `compress eval`, accuracy reports and accuracy gates.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "compress/exec/executor.h"
#include "compress/io/dataset.h"

namespace compress {

struct EvalOptions {
  int64_t batch = 64;
  int64_t limit = 0;            // evaluate only the first `limit` samples (0: all)
  bool progress = true;         // progress bar (drawn only on a terminal)
  bool keep_outputs = false;    // keep output 0 of every sample (for fidelity comparisons)
};

struct OutputStats {
  std::string name;
  std::vector<int64_t> sample_shape;  // per-sample shape of the output (batch dim removed)
  int64_t count = 0;
  double mean = 0, stddev = 0, min = 0, max = 0;
  int64_t non_finite = 0;
};

struct EvalResult {
  int64_t samples = 0;
  int64_t batch = 0;
  int threads = 1;
  bool has_labels = false;
  int64_t correct = 0;
  double top1 = 0;                   // fraction in [0,1], when has_labels
  std::vector<int64_t> predictions;  // argmax of output 0 over its last axis, per sample
  std::vector<OutputStats> outputs;
  std::vector<float> output0;        // when keep_outputs: output 0 of all samples, row-major
  double seconds = 0;                // time inside the executor
  double samples_per_second = 0;
};

// Evaluates samples in batches of options.batch (the last batch may be smaller).
EvalResult Evaluate(Executor& executor, const Dataset& data, const EvalOptions& options = {});

}  // namespace compress
