// The size a download ships: files compressed with zstd (libzstd).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace compress {

// zstd's level 19: near its best ratio without the "ultra" levels' memory; what release archives use.
inline constexpr int kZstdLevel = 19;

// Level 19 compresses about 2.5 MB/s per core: by default ("auto") the report measures the zstd size only
// when the input's and the output's files each total at most this many bytes (an app-bundle-sized
// model; a few seconds), and says so otherwise. `--zstd-size always` measures any size.
inline constexpr int64_t kZstdAutoMaxBytes = int64_t{16} << 20;

// Bytes of `path` compressed as one zstd frame at `level`, streamed in 1 MiB pieces (memory does not
// grow with the file). Compression runs on `threads` zstd workers (0: one per core) but the output never
// depends on their number: zstd is deterministic for any worker count >= 1, and at least one is always
// used. Throws Error(kIO) naming the file when it cannot be read. With `compressed`, the frame's bytes
// are appended to it too (for tests; the size alone needs no memory beyond zstd's own).
int64_t ZstdCompressedSize(const std::string& path, int level = kZstdLevel, int threads = 0,
                           std::string* compressed = nullptr);

// Sum over `paths` (a model and its external data files, each compressed on its own).
int64_t ZstdCompressedSize(const std::vector<std::string>& paths, int level = kZstdLevel, int threads = 0);

}  // namespace compress
