// A fixed pool of worker threads with a deterministic parallel-for.
//
// Work is cut into chunks of a fixed `grain`, never into "one piece per thread": a chunk computes the same
// thing whatever the number of threads, so results do not depend on --threads.
#pragma once

#include <atomic>
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
  // One parallel loop; `tag` tells its chunks from those of the loops before and after it.
  struct Job {
    const std::function<void(int64_t, int64_t)>* fn = nullptr;
    int64_t n = 0, grain = 1, chunks = 0;
    uint64_t tag = 0;
  };
  void WorkerLoop();
  void RunChunks(const Job& job);

  std::vector<std::thread> workers_;
  std::mutex mu_;  // guards job_, error_, busy_, stop_ and the sleeping
  std::condition_variable work_cv_, done_cv_;
  bool stop_ = false;
  bool busy_ = false;
  Job job_;
  std::exception_ptr error_;
  // Workers poll generation_ for a new job for a while before sleeping on work_cv_ (sleepers_ of them).
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<uint64_t> next_{0};  // tag and next chunk of the current job
  std::atomic<int64_t> done_chunks_{0};
};

}  // namespace compress
