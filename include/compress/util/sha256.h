// SHA-256 (FIPS 180-4), used to fingerprint the data a model was calibrated or evaluated on so that
// reports and output metadata say exactly which bytes were used.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace compress {

class Sha256 {
 public:
  Sha256();
  void Update(const void* data, size_t size);
  void Update(const std::string& s) { Update(s.data(), s.size()); }
  // Lower-case hex digest; the object must not be updated afterwards.
  std::string HexDigest();

 private:
  void Block(const uint8_t* p);
  std::array<uint32_t, 8> h_;
  std::array<uint8_t, 64> buf_{};
  size_t buf_len_ = 0;
  uint64_t total_ = 0;
};

// Hash of a file's contents (streamed); throws Error(kIO) naming the file when it cannot be read.
std::string Sha256OfFile(const std::string& path);

}  // namespace compress
