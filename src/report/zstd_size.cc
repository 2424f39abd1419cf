#include "compress/report/zstd_size.h"

#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "compress/util/error.h"

namespace compress {

namespace {

struct CctxFree {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};
struct FileClose {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

void Check(size_t rc, const std::string& path) {
  if (ZSTD_isError(rc)) ThrowInternal(path + ": zstd compression failed: " + ZSTD_getErrorName(rc));
}

}  // namespace

int64_t ZstdCompressedSize(const std::string& path, int level, int threads, std::string* compressed) {
  std::unique_ptr<std::FILE, FileClose> f(std::fopen(path.c_str(), "rb"));
  if (!f) ThrowIO(path + ": cannot open for the zstd size: " + std::strerror(errno));
  std::unique_ptr<ZSTD_CCtx, CctxFree> cctx(ZSTD_createCCtx());
  if (!cctx) ThrowInternal(path + ": cannot create a zstd context");
  Check(ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_compressionLevel, level), path);
  Check(ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_checksumFlag, 0), path);
  // Always at least one worker: zstd's output is the same for every worker count >= 1 (but differs from
  // the single-threaded mode 0), so --threads cannot change the size. A libzstd built without threads
  // rejects the parameter; its output is then the single-threaded one, whatever --threads says.
  const int workers = threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  (void)ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_nbWorkers, std::max(1, workers));
  // The source size lets zstd size its tables for small files (less memory, same ratio); it is part of
  // the input, so the output stays deterministic.
  if (std::fseek(f.get(), 0, SEEK_END) == 0) {
    const long size = std::ftell(f.get());
    if (size >= 0) Check(ZSTD_CCtx_setPledgedSrcSize(cctx.get(), static_cast<unsigned long long>(size)), path);
    std::rewind(f.get());
  }
  constexpr size_t kChunk = size_t{1} << 20;
  std::vector<char> in(kChunk), out(ZSTD_CStreamOutSize());
  int64_t total = 0;
  for (;;) {
    const size_t got = std::fread(in.data(), 1, in.size(), f.get());
    if (std::ferror(f.get())) ThrowIO(path + ": read error while computing the zstd size");
    const bool last = got < in.size();
    ZSTD_inBuffer ib{in.data(), got, 0};
    const ZSTD_EndDirective mode = last ? ZSTD_e_end : ZSTD_e_continue;
    for (;;) {
      ZSTD_outBuffer ob{out.data(), out.size(), 0};
      const size_t remaining = ZSTD_compressStream2(cctx.get(), &ob, &ib, mode);
      Check(remaining, path);
      total += static_cast<int64_t>(ob.pos);
      if (compressed != nullptr) compressed->append(out.data(), ob.pos);
      if (last ? remaining == 0 : ib.pos == ib.size) break;
    }
    if (last) break;
  }
  return total;
}

int64_t ZstdCompressedSize(const std::vector<std::string>& paths, int level, int threads) {
  int64_t total = 0;
  for (const auto& p : paths) total += ZstdCompressedSize(p, level, threads);
  return total;
}

}  // namespace compress
