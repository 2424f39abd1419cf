#include "compress/exec/thread_pool.h"

#include <algorithm>
#include <chrono>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace compress {

namespace {

// How long a worker keeps polling for the next job after finishing one, and a caller for its workers'
// chunks, before sleeping. A model runs one parallel loop after another with a few microseconds in between;
// waking a sleeping thread through the kernel takes longer than that, which made two threads slower than
// one on small models.
constexpr auto kSpin = std::chrono::microseconds(300);

void Pause() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

// Polls `done` until it holds or kSpin has passed; returns whether it holds.
template <typename Done>
bool SpinUntil(Done&& done) {
  const auto deadline = std::chrono::steady_clock::now() + kSpin;
  for (int i = 0;; ++i) {
    if (done()) return true;
    Pause();
    if ((i & 255) == 255 && std::chrono::steady_clock::now() > deadline) return done();
  }
}

constexpr int kTagShift = 40;  // next_ holds (job tag << kTagShift) | next chunk index
constexpr uint64_t kIndexMask = (uint64_t{1} << kTagShift) - 1;

}  // namespace

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
    generation_.fetch_add(1);
  }
  work_cv_.notify_all();
  for (auto& w : workers_) w.join();
}

void ThreadPool::ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int64_t chunks = (n + grain - 1) / grain;
  bool serial = workers_.empty() || chunks == 1 || static_cast<uint64_t>(chunks) > kIndexMask;
  Job job;
  if (!serial) {
    std::lock_guard<std::mutex> lock(mu_);
    serial = busy_;  // a nested (or concurrent) call runs on the caller alone
    if (!serial) {
      busy_ = true;
      job = Job{&fn, n, grain, chunks, (generation_.load() + 1) & ((uint64_t{1} << (64 - kTagShift)) - 1)};
      job_ = job;
      error_ = nullptr;
      done_chunks_.store(0);
      next_.store(job.tag << kTagShift);
      generation_.fetch_add(1);
    }
  }
  if (serial) {
    for (int64_t c = 0; c < chunks; ++c) fn(c * grain, std::min(n, (c + 1) * grain));
    return;
  }
  if (sleepers_.load() > 0) work_cv_.notify_all();
  RunChunks(job);
  if (!SpinUntil([&] { return done_chunks_.load(std::memory_order_acquire) == chunks; })) {
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait(lock, [&] { return done_chunks_.load() == chunks; });
  }
  std::exception_ptr error;
  {
    std::lock_guard<std::mutex> lock(mu_);
    error = error_;
    job_ = Job{};
    busy_ = false;
  }
  if (error) std::rethrow_exception(error);
}

void ThreadPool::RunChunks(const Job& job) {
  for (;;) {
    // Claim the next chunk of this job: the tag keeps a late worker from taking a chunk of a newer one.
    uint64_t v = next_.load();
    do {
      if ((v >> kTagShift) != job.tag || static_cast<int64_t>(v & kIndexMask) >= job.chunks) return;
    } while (!next_.compare_exchange_weak(v, v + 1));
    const int64_t chunk = static_cast<int64_t>(v & kIndexMask);
    const int64_t begin = chunk * job.grain;
    try {
      (*job.fn)(begin, std::min(job.n, begin + job.grain));
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!error_) error_ = std::current_exception();
    }
    if (done_chunks_.fetch_add(1, std::memory_order_acq_rel) + 1 == job.chunks) {
      // The caller may be asleep on done_cv_; notify under the mutex so the wake-up cannot be lost.
      std::lock_guard<std::mutex> lock(mu_);
      done_cv_.notify_all();
    }
  }
}

void ThreadPool::WorkerLoop() {
  uint64_t seen = 0;
  for (;;) {
    if (!SpinUntil([&] { return generation_.load(std::memory_order_acquire) != seen; })) {
      std::unique_lock<std::mutex> lock(mu_);
      sleepers_.fetch_add(1);
      work_cv_.wait(lock, [&] { return generation_.load() != seen; });
      sleepers_.fetch_sub(1);
    }
    Job job;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
      seen = generation_.load();
      job = job_;
    }
    if (job.fn != nullptr) RunChunks(job);
  }
}

}  // namespace compress
