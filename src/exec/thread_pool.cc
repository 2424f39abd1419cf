#include "compress/exec/thread_pool.h"

#include <algorithm>

namespace compress {

int ThreadPool::HardwareThreads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

ThreadPool::ThreadPool(int threads) {
  const int n = threads <= 0 ? HardwareThreads() : threads;
  workers_.reserve(static_cast<size_t>(n - 1));
  for (int i = 1; i < n; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& w : workers_) w.join();
}

void ThreadPool::ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int64_t chunks = (n + grain - 1) / grain;
  bool serial = workers_.empty() || chunks == 1;
  if (!serial) {
    std::lock_guard<std::mutex> lock(mu_);
    serial = busy_;  // a nested (or concurrent) call runs on the caller alone
    if (!serial) {
      busy_ = true;
      fn_ = &fn;
      n_ = n;
      grain_ = grain;
      chunks_ = chunks;
      next_chunk_ = 0;
      done_chunks_ = 0;
      error_ = nullptr;
      ++generation_;
    }
  }
  if (serial) {
    for (int64_t c = 0; c < chunks; ++c) fn(c * grain, std::min(n, (c + 1) * grain));
    return;
  }
  work_cv_.notify_all();
  RunChunks();
  std::exception_ptr error;
  {
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [&] { return done_chunks_ == chunks_; });
    error = error_;
    fn_ = nullptr;
    busy_ = false;
  }
  if (error) std::rethrow_exception(error);
}

bool ThreadPool::RunChunks() {
  bool ran_last = false;
  for (;;) {
    int64_t chunk = 0, begin = 0, end = 0;
    const std::function<void(int64_t, int64_t)>* fn = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (fn_ == nullptr || next_chunk_ >= chunks_) return ran_last;
      chunk = next_chunk_++;
      begin = chunk * grain_;
      end = std::min(n_, begin + grain_);
      fn = fn_;
    }
    try {
      (*fn)(begin, end);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!error_) error_ = std::current_exception();
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (++done_chunks_ == chunks_) {
      ran_last = true;
      done_cv_.notify_all();
    }
  }
}

void ThreadPool::WorkerLoop() {
  uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
    }
    RunChunks();
  }
}

}  // namespace compress
