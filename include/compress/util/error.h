// Errors that cross module boundaries. Every error carries the exit code the CLI returns for it, so a
// message written deep inside the loader reaches the user unchanged and with the documented status.
#pragma once

#include <stdexcept>
#include <string>

namespace compress {

// Exit codes of the `compress` program (documented in README.md). Values are stable.
enum class ErrorKind : int {
  kInternal = 1,       // a bug or an unexpected condition inside compress
  kUsage = 2,          // bad command line, unknown option or recipe entry
  kInvalidInput = 3,   // malformed or unsupported model, data that does not fit the model
  kIO = 4,             // a file that cannot be read or written
  kAccuracyGate = 5,   // the compressed model violates a requested accuracy gate
};

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }
  int exit_code() const { return static_cast<int>(kind_); }

 private:
  ErrorKind kind_;
};

[[noreturn]] inline void ThrowInvalid(const std::string& message) {
  throw Error(ErrorKind::kInvalidInput, message);
}
[[noreturn]] inline void ThrowIO(const std::string& message) { throw Error(ErrorKind::kIO, message); }
[[noreturn]] inline void ThrowUsage(const std::string& message) { throw Error(ErrorKind::kUsage, message); }
[[noreturn]] inline void ThrowInternal(const std::string& message) {
  throw Error(ErrorKind::kInternal, message);
}

}  // namespace compress
