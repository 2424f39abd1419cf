#include "compress/util/progress.h"

#include <unistd.h>

#include <cstdio>

namespace compress {

namespace {
int g_mode = -1;  // -1: automatic (terminal), 0: off, 1: on
constexpr auto kRedrawInterval = std::chrono::milliseconds(100);
constexpr int kWidth = 30;
}  // namespace

void ProgressBar::SetEnabled(bool enabled) { g_mode = enabled ? 1 : 0; }

bool ProgressBar::Interactive() { return g_mode == 1 || (g_mode == -1 && ::isatty(STDERR_FILENO) == 1); }

ProgressBar::ProgressBar(std::string label, int64_t total, bool allowed)
    : label_(std::move(label)),
      total_(total),
      enabled_(allowed && Interactive()),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_ - kRedrawInterval) {}

ProgressBar::~ProgressBar() { Finish(); }

void ProgressBar::Advance(int64_t n) {
  done_ += n;
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_draw_ >= kRedrawInterval) {
    last_draw_ = now;
    Draw(false);
  }
}

void ProgressBar::Finish() {
  if (finished_) return;
  finished_ = true;
  if (enabled_) Draw(true);
}

void ProgressBar::Draw(bool final) {
  const double fraction = total_ > 0 ? static_cast<double>(done_) / static_cast<double>(total_) : 1.0;
  const int filled = static_cast<int>(fraction * kWidth + 0.5);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double rate = seconds > 0 ? static_cast<double>(done_) / seconds : 0.0;
  std::string bar(static_cast<size_t>(filled), '#');
  bar.resize(kWidth, '.');
  std::fprintf(stderr, "\r%s [%s] %3d%% %lld/%lld  %.0f/s%s", label_.c_str(), bar.c_str(),
               static_cast<int>(fraction * 100 + 0.5), static_cast<long long>(done_),
               static_cast<long long>(total_), rate, final ? "\n" : "");
  std::fflush(stderr);
}

}  // namespace compress
