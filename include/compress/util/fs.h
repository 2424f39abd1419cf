// File-system helpers: safe path handling and atomic writes.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace compress {

// Splits on '/', dropping empty components and ".".
std::vector<std::string> SplitPath(const std::string& path);
// realpath(3): false when the path does not exist.
bool CanonicalPath(const std::string& path, std::string* out);
// True when canonical `path` is `dir` or lies below it (both canonical).
bool IsInside(const std::string& path, const std::string& dir);
std::string DirName(const std::string& path);   // "a/b.onnx" -> "a", "b.onnx" -> "."
std::string BaseName(const std::string& path);  // "a/b.onnx" -> "b.onnx"
// True when both paths exist and name the same file (same device and inode).
bool SameFile(const std::string& a, const std::string& b);
bool FileExists(const std::string& path);
bool IsDirectory(const std::string& path);

// Reads a whole file; Error(kIO) naming the file on failure. `max_bytes` guards against huge inputs.
std::string ReadFileBytes(const std::string& path, size_t max_bytes);

// Writes to a temporary file in the destination's folder; Commit() flushes it to disk and renames it
// over the destination. Destroying an uncommitted AtomicFile removes the temporary file, so a failed
// write never leaves a partial output behind.
class AtomicFile {
 public:
  explicit AtomicFile(std::string destination);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void Write(const void* data, size_t size);
  void Write(const std::string& s) { Write(s.data(), s.size()); }
  size_t bytes_written() const { return written_; }
  // fsync + rename; the destination then holds exactly what was written.
  void Commit();
  const std::string& destination() const { return destination_; }

 private:
  std::string destination_;
  std::string temp_path_;
  int fd_ = -1;
  size_t written_ = 0;
  bool committed_ = false;
};

// Convenience: atomically replace `path` with `bytes`.
void WriteFileAtomic(const std::string& path, const std::string& bytes);

}  // namespace compress
