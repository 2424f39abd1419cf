#include "compress/util/sha256.h"

#include "compress/util/error.h"

#include <gtest/gtest.h>

#include <string>

#include "support/test_support.h"

namespace compress {
namespace {

std::string Hash(const std::string& s) {
  Sha256 sha;
  sha.Update(s);
  return sha.HexDigest();
}

// Test vectors from FIPS 180-4 / NIST CSRC examples.
TEST(Sha256, KnownVectors) {
  EXPECT_EQ(Hash(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Hash("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(Hash(std::string(1000000, 'a')), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, ChunkingDoesNotMatter) {
  std::string data;
  for (int i = 0; i < 1000; ++i) data += static_cast<char>(i * 7);
  Sha256 pieces;
  for (size_t i = 0; i < data.size(); i += 13) pieces.Update(data.substr(i, 13));
  EXPECT_EQ(pieces.HexDigest(), Hash(data));
}

TEST(Sha256, FileMatchesBytesAndMissingFileIsIOError) {
  testing::TempDir dir;
  const std::string path = dir.path() + "/f.bin";
  testing::WriteBytes(path, "abc");
  EXPECT_EQ(Sha256OfFile(path), Hash("abc"));
  try {
    Sha256OfFile(dir.path() + "/missing");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kIO);
    EXPECT_NE(std::string(e.what()).find("missing"), std::string::npos);
  }
}

}  // namespace
}  // namespace compress
