// A fixed pool of worker threads with a deterministic parallel-for.
//
// Work is cut into chunks of a fixed `grain`, never into "one piece per thread": a chunk computes the same
// thing whatever the number of threads, so results do not depend on --threads.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace compress {

class ThreadPool {
 public:
  // threads <= 0: one per hardware core.
  explicit ThreadPool(int threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(begin, end) for consecutive chunks [k*grain, min((k+1)*grain, n)) covering [0, n), on the
  // calling thread and the workers. Returns when all chunks are done; rethrows the first exception.
  // Nested calls run serially on the calling thread.
  void ParallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

  static int HardwareThreads();

 private:
  void WorkerLoop();
  bool RunChunks();  // returns true if this thread ran the last chunk

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable work_cv_, done_cv_;
  bool stop_ = false;
  uint64_t generation_ = 0;
  // Current job.
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0, grain_ = 1, chunks_ = 0;
  int64_t next_chunk_ = 0, done_chunks_ = 0;
  std::exception_ptr error_;
  bool busy_ = false;
};

}  // namespace compress
