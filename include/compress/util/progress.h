// A progress bar on stderr for long work (calibration, evaluation, fine-tuning). It draws only when stderr
// is a terminal and logging is not quiet, so scripts and CI logs stay clean.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace compress {

class ProgressBar {
 public:
  // `allowed` false never draws (e.g. when the caller runs inside another bar).
  ProgressBar(std::string label, int64_t total, bool allowed = true);
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  void Advance(int64_t n);
  void Finish();
  bool enabled() const { return enabled_; }

  // Globally turns bars off (-q) or forces them on (tests).
  static void SetEnabled(bool enabled);
  // True when bars draw (a terminal, not -q): long commands then also say which step they are on.
  static bool Interactive();

 private:
  void Draw(bool final);

  std::string label_;
  int64_t total_;
  int64_t done_ = 0;
  bool enabled_;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace compress
