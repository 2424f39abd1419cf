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
  int64_t batch = 64;           // samples per run, unless the model declares a fixed batch
  int64_t limit = 0;            // evaluate only the first `limit` samples (0: all)
  bool progress = true;         // progress bar (drawn only on a terminal)
  bool keep_outputs = false;    // keep output 0 of every sample (for fidelity comparisons)
};

struct OutputStats {
  std::string name;
  std::vector<int64_t> sample_shape;  // per-sample shape of the output (batch axis removed)
  int64_t count = 0;
  double mean = 0, stddev = 0, min = 0, max = 0;
  int64_t non_finite = 0;
};

struct EvalResult {
  int64_t samples = 0;               // samples evaluated
  int64_t skipped = 0;               // trailing samples too few to fill the model's fixed batch
  int64_t batch = 0;                 // samples per run (the model's fixed batch, if it has one)
  int threads = 1;
  bool has_labels = false;
  int64_t correct = 0;
  double top1 = 0;                   // fraction in [0,1], when has_labels
  std::vector<int64_t> predictions;  // argmax of output 0 over its last axis, per sample
  std::vector<OutputStats> outputs;
  std::vector<float> output0;        // when keep_outputs: output 0 of all samples, sample by sample
  double seconds = 0;                // time inside the executor
  size_t integer_groups = 0;         // products the executor ran in integers (Executor::integer_products)
  double samples_per_second = 0;
};

// Evaluates samples in the batches Dataset::PlanBatches forms (options.batch, or the model's fixed batch).
// Outputs are split per sample along their batch axis (BatchLayout::OutputAxis; hn of float32[2,batch,64]
// along axis 1); with one sample per run an output without that axis is the sample's output as a whole.
EvalResult Evaluate(Executor& executor, const Dataset& data, const EvalOptions& options = {});

}  // namespace compress
