#include "compress/util/fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <mutex>
#include <set>
#include <thread>

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

// Every temporary file in flight, for the signal thread. Leaked on purpose: the signal thread may use
// them while static destructors run at exit.
std::mutex& TempMutex() {
  static std::mutex* m = new std::mutex;
  return *m;
}
std::set<std::string>& Temps() {
  static std::set<std::string>* t = new std::set<std::string>;
  return *t;
}

const char* FileKind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a named pipe (FIFO)";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return nullptr;
}

// Removes ".<base>.tmp-XXXXXX" files in `dir` that a killed process left: regular files of ours, older
// than kStaleTempSeconds, that nobody holds locked (a live AtomicFile keeps its temporary file locked).
void RemoveStaleTemps(const std::string& dir, const std::string& base) {
  const std::string prefix = "." + base + ".tmp-";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return;
  const time_t now = ::time(nullptr);
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.size() != prefix.size() + 6 || name.compare(0, prefix.size(), prefix) != 0) continue;
    if (!std::all_of(name.begin() + static_cast<std::ptrdiff_t>(prefix.size()), name.end(),
                     [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; })) {
      continue;
    }
    const std::string path = dir + "/" + name;
    const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) continue;
    struct stat st {};
    if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == ::geteuid() && st.st_nlink == 1 &&
        now - st.st_mtime > kStaleTempSeconds && ::flock(fd, LOCK_EX | LOCK_NB) == 0) {
      ::unlink(path.c_str());
    }
    ::close(fd);
  }
  ::closedir(d);
}

void SyncDir(const std::string& dir) {
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}
}  // namespace

void CheckOutputPath(const std::string& path) {
  const std::string dir = DirName(path);
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    if (errno == ENOENT) ThrowIO("cannot write '" + path + "': folder '" + dir + "' does not exist");
    ThrowIO("cannot write '" + path + "': folder '" + dir + "': " + std::strerror(errno));
  }
  if (!S_ISDIR(st.st_mode)) ThrowIO("cannot write '" + path + "': '" + dir + "' is not a folder");
  // `-o /dev/stdout` and the like: the rename would replace the system's link, not write to the stream.
  std::string real_dir;
  if (CanonicalPath(dir, &real_dir) && ((IsInside(real_dir, "/dev") && !IsInside(real_dir, "/dev/shm")) || IsInside(real_dir, "/proc"))) {
    ThrowIO("cannot write '" + path + "': folder '" + real_dir +
            "' holds devices and process files; outputs are written to a temporary file and renamed, give a "
            "path in an ordinary folder");
  }
  if (::access(dir.c_str(), W_OK | X_OK) != 0) {
    ThrowIO("cannot write '" + path + "': folder '" + dir + "' is not writable: " + std::strerror(errno));
  }
  // A symbolic link is judged by its target (a dangling link is simply replaced).
  if (::stat(path.c_str(), &st) == 0) {
    if (const char* kind = FileKind(st.st_mode)) {
      ThrowIO("cannot write '" + path + "': it is " + kind +
              ", not a regular file (outputs are written to a temporary file and renamed into place)");
    }
  }
}

AtomicFile::AtomicFile(std::string destination) : destination_(std::move(destination)) {
  CheckOutputPath(destination_);
  const std::string dir = DirName(destination_);
  RemoveStaleTemps(dir, BaseName(destination_));
  std::string templ = dir + "/." + BaseName(destination_) + ".tmp-XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  {
    // Created and registered as one step: the signal thread sees every temporary file that exists.
    std::lock_guard<std::mutex> lock(TempMutex());
    fd_ = ::mkostemp(buf.data(), O_CLOEXEC);
    if (fd_ < 0) Fail(errno, "cannot create a file in folder '" + dir + "'");
    temp_path_ = buf.data();
    Temps().insert(temp_path_);
  }
  // Marks the file as in use for RemoveStaleTemps in other processes; released when fd_ closes.
  ::flock(fd_, LOCK_EX | LOCK_NB);
  (void)CurrentUmask();
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_ && !temp_path_.empty()) {
    std::lock_guard<std::mutex> lock(TempMutex());
    ::unlink(temp_path_.c_str());
    Temps().erase(temp_path_);
  }
}

void AtomicFile::Fail(int err, const std::string& during) const {
  std::string what;
  switch (err) {
    case ENOSPC: what = "no space left on device"; break;
    case EDQUOT: what = "disk quota exceeded"; break;
    case EFBIG:
      what = "file too large (the file-size limit, ulimit -f, or the file system's largest file reached after " +
             std::to_string(written_) + " bytes)";
      break;
    default: what = std::strerror(err); break;
  }
  ThrowIO("cannot write '" + destination_ + "': " + what + (during.empty() ? "" : " (" + during + ")"));
}

void AtomicFile::Write(const void* data, size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd_, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      Fail(errno, "");
    }
    if (n == 0) Fail(ENOSPC, "");
    p += n;
    size -= static_cast<size_t>(n);
    written_ += static_cast<size_t>(n);
  }
}

void AtomicFile::Flush() {
  if (::fchmod(fd_, 0666 & ~CurrentUmask()) != 0 || ::fsync(fd_) != 0) Fail(errno, "");
}

void AtomicFile::Commit() { CommitTogether({this}); }

void CommitTogether(const std::vector<AtomicFile*>& files) {
  if (files.empty()) return;
  for (AtomicFile* f : files) f->Flush();
  AtomicFile& last = *files.back();
  const std::string dir = DirName(last.destination_);
  // Serializes committing processes in this folder; best effort (a file system without flock still
  // gets every other guarantee).
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) ::flock(dfd, LOCK_EX);
  struct DirLock {
    int fd;
    ~DirLock() {
      if (fd >= 0) ::close(fd);  // releases the flock
    }
  } dir_lock{dfd};
  std::vector<std::string> dirs;
  for (AtomicFile* f : files) {
    const std::string d = DirName(f->destination_);
    if (std::find(dirs.begin(), dirs.end(), d) == dirs.end()) dirs.push_back(d);
  }
  // The renames happen as one step for the signal thread: a SIGINT waits for the set to be complete.
  std::lock_guard<std::mutex> lock(TempMutex());
  struct stat st {};
  if (files.size() > 1 && ::lstat(last.destination_.c_str(), &st) == 0 && !S_ISDIR(st.st_mode)) {
    // The previous model would otherwise meet the new data files.
    if (::unlink(last.destination_.c_str()) != 0) last.Fail(errno, "removing the previous file");
    for (const auto& d : dirs) SyncDir(d);
  }
  for (AtomicFile* f : files) {
    if (::rename(f->temp_path_.c_str(), f->destination_.c_str()) != 0) f->Fail(errno, "");
    f->committed_ = true;
    Temps().erase(f->temp_path_);
  }
  // Make the renames themselves durable.
  for (const auto& d : dirs) SyncDir(d);
  for (AtomicFile* f : files) {
    const int fd = f->fd_;
    f->fd_ = -1;
    ::close(fd);
  }
}

FolderReadLock::FolderReadLock(const std::string& dir) {
  fd_ = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd_ >= 0) ::flock(fd_, LOCK_SH);
}

FolderReadLock::~FolderReadLock() {
  if (fd_ >= 0) ::close(fd_);
}

void InstallSignalCleanup() {
  static std::once_flag once;
  std::call_once(once, [] {
    ::signal(SIGXFSZ, SIG_IGN);
    sigset_t set;
    sigemptyset(&set);
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&set, sig);
    // Blocked here, before any thread exists, so every thread inherits the mask and only the thread
    // below receives these signals, outside of any signal-handler context.
    ::pthread_sigmask(SIG_BLOCK, &set, nullptr);
    std::thread([set] {
      int sig = 0;
      while (::sigwait(&set, &sig) != 0) {
      }
      // Never released: no new temporary file can appear while the process ends.
      TempMutex().lock();
      for (const auto& p : Temps()) ::unlink(p.c_str());
      ::signal(sig, SIG_DFL);
      sigset_t one;
      sigemptyset(&one);
      sigaddset(&one, sig);
      ::pthread_sigmask(SIG_UNBLOCK, &one, nullptr);
      ::raise(sig);
      ::_exit(128 + sig);
    }).detach();
  });
}

void WriteFileAtomic(const std::string& path, const std::string& bytes) {
  AtomicFile f(path);
  f.Write(bytes);
  f.Commit();
}

}  // namespace compress
