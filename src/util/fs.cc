#include "compress/util/fs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "compress/util/error.h"

namespace compress {

std::vector<std::string> SplitPath(const std::string& path) {
  std::vector<std::string> parts;
  std::string cur;
  for (char c : path) {
    if (c == '/') {
      if (!cur.empty() && cur != ".") parts.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty() && cur != ".") parts.push_back(cur);
  return parts;
}

bool CanonicalPath(const std::string& path, std::string* out) {
  char buf[PATH_MAX];
  if (::realpath(path.c_str(), buf) == nullptr) return false;
  *out = buf;
  return true;
}

bool IsInside(const std::string& path, const std::string& dir) {
  if (path == dir) return true;
  const std::string prefix = dir == "/" ? dir : dir + "/";
  return path.compare(0, prefix.size(), prefix) == 0;
}

std::string DirName(const std::string& path) {
  const auto pos = path.find_last_of('/');
  if (pos == std::string::npos) return ".";
  if (pos == 0) return "/";
  return path.substr(0, pos);
}

std::string BaseName(const std::string& path) {
  const auto pos = path.find_last_of('/');
  return pos == std::string::npos ? path : path.substr(pos + 1);
}

bool SameFile(const std::string& a, const std::string& b) {
  struct stat sa {}, sb {};
  if (::stat(a.c_str(), &sa) != 0 || ::stat(b.c_str(), &sb) != 0) return false;
  return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

bool FileExists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

bool IsDirectory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string ReadFileBytes(const std::string& path, size_t max_bytes) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) ThrowIO("cannot read '" + path + "': " + std::strerror(errno));
  if (S_ISDIR(st.st_mode)) ThrowIO("cannot read '" + path + "': it is a directory");
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    ThrowInvalid("'" + path + "' is " + std::to_string(st.st_size) + " bytes, more than the " +
                 std::to_string(max_bytes) + " this reader accepts");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) ThrowIO("cannot open '" + path + "': " + std::strerror(errno));
  std::string bytes(static_cast<size_t>(st.st_size), '\0');
  in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (static_cast<size_t>(in.gcount()) != bytes.size()) ThrowIO("could not read all of '" + path + "'");
  return bytes;
}

namespace {
mode_t CurrentUmask() {
  // umask can only be read by setting it; done once, before any threads write files.
  static const mode_t mask = [] {
    const mode_t m = ::umask(0022);
    ::umask(m);
    return m;
  }();
  return mask;
}
}  // namespace

AtomicFile::AtomicFile(std::string destination) : destination_(std::move(destination)) {
  const std::string dir = DirName(destination_);
  if (!IsDirectory(dir)) ThrowIO("cannot write '" + destination_ + "': folder '" + dir + "' does not exist");
  if (IsDirectory(destination_)) ThrowIO("cannot write '" + destination_ + "': it is a directory");
  std::string templ = dir + "/." + BaseName(destination_) + ".tmp-XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  fd_ = ::mkstemp(buf.data());
  if (fd_ < 0) {
    ThrowIO("cannot write '" + destination_ + "': " + std::strerror(errno) + " (folder '" + dir + "')");
  }
  temp_path_ = buf.data();
  (void)CurrentUmask();
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_ && !temp_path_.empty()) ::unlink(temp_path_.c_str());
}

void AtomicFile::Write(const void* data, size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd_, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      ThrowIO("cannot write '" + destination_ + "': " + std::strerror(errno));
    }
    p += n;
    size -= static_cast<size_t>(n);
    written_ += static_cast<size_t>(n);
  }
}

void AtomicFile::Commit() {
  if (::fchmod(fd_, 0666 & ~CurrentUmask()) != 0 || ::fsync(fd_) != 0) {
    ThrowIO("cannot write '" + destination_ + "': " + std::strerror(errno));
  }
  if (::close(fd_) != 0) {
    fd_ = -1;
    ThrowIO("cannot write '" + destination_ + "': " + std::strerror(errno));
  }
  fd_ = -1;
  if (::rename(temp_path_.c_str(), destination_.c_str()) != 0) {
    ThrowIO("cannot write '" + destination_ + "': " + std::strerror(errno));
  }
  committed_ = true;
  // Make the rename itself durable.
  const int dfd = ::open(DirName(destination_).c_str(), O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

void WriteFileAtomic(const std::string& path, const std::string& bytes) {
  AtomicFile f(path);
  f.Write(bytes);
  f.Commit();
}

}  // namespace compress
