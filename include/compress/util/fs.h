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

// Checks that a file can be created at `path` before any work is done: its folder exists, is a folder
// and is writable, and `path` is not a directory, a FIFO, a device or a socket (a symbolic link is
// judged by its target, and is then replaced by the new file: the file it pointed to is left as it
// was). Error(kIO) naming the path and the folder otherwise.
void CheckOutputPath(const std::string& path);

// Writes to a temporary file ".<name>.tmp-XXXXXX" in the destination's folder; Commit() flushes it to
// disk and renames it over the destination. Destroying an uncommitted AtomicFile removes the temporary
// file, so a failed write never leaves a partial output behind; so does a SIGINT, SIGTERM or SIGHUP
// once InstallSignalCleanup() runs. A temporary file of the same destination left by a process killed
// with SIGKILL is removed by the next AtomicFile of that destination once it is older than
// kStaleTempSeconds and no process holds its lock (every live temporary file is flock()ed).
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
  const std::string& temp_path() const { return temp_path_; }

 private:
  friend void CommitTogether(const std::vector<AtomicFile*>& files);
  void Flush();
  [[noreturn]] void Fail(int err, const std::string& during) const;
  std::string destination_;
  std::string temp_path_;
  int fd_ = -1;
  size_t written_ = 0;
  bool committed_ = false;
};

// A temporary file of ours older than this, and unlocked, belongs to a killed process.
constexpr int kStaleTempSeconds = 60;

// Commits files that belong together (external data files first, the model that refers to them last)
// so that no moment, not even a kill, shows the last file with companions that do not match it: when
// the last file's destination exists it is removed first, then the companions are renamed into place,
// then the last file. A kill in between leaves the last destination absent, never paired with the
// wrong data. Concurrent processes committing into the same folder are serialized (flock on the
// folder), so the last one to commit wins with a consistent set.
void CommitTogether(const std::vector<AtomicFile*>& files);

// Holds a shared lock on a folder while reading back files committed there: CommitTogether holds the
// exclusive lock while it replaces a set, so a reader never sees the moment between removing a previous
// model and renaming the new one (another process writing the same output). Best effort.
class FolderReadLock {
 public:
  explicit FolderReadLock(const std::string& dir);
  ~FolderReadLock();
  FolderReadLock(const FolderReadLock&) = delete;
  FolderReadLock& operator=(const FolderReadLock&) = delete;

 private:
  int fd_ = -1;
};

// For programs (called first thing in main, before any thread starts): SIGINT, SIGTERM and SIGHUP are
// handled by a dedicated thread that removes every temporary file in flight (waiting for a commit in
// progress to finish) and then ends the process by the same signal, so the exit status is 128 + the
// signal number. SIGXFSZ is ignored, so exceeding the file-size limit is a write error (EFBIG) that is
// reported like a full disk instead of killing the process.
void InstallSignalCleanup();

// Convenience: atomically replace `path` with `bytes`.
void WriteFileAtomic(const std::string& path, const std::string& bytes);

}  // namespace compress
