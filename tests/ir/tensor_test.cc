#include "compress/ir/tensor.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <utility>
#include <vector>

#include "compress/util/error.h"

namespace compress {
namespace {

TEST(Tensor, ZeroFilledAndAligned) {
  Tensor t(DType::kFloat, {3, 5}, "t");
  EXPECT_EQ(t.numel(), 15);
  EXPECT_EQ(t.nbytes(), 60u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw()) % 64, 0u);
  for (int i = 0; i < 15; ++i) EXPECT_EQ(t.data<float>()[i], 0.0f);
}

TEST(Tensor, CopiesShareUntilWritten) {
  Tensor a = Tensor::FromVector<float>({2}, {1.0f, 2.0f}, "a");
  Tensor b = a;
  EXPECT_EQ(a.raw(), b.raw());
  b.mutable_data<float>()[0] = 7.0f;
  EXPECT_NE(a.raw(), b.raw());
  EXPECT_EQ(a.data<float>()[0], 1.0f);
  EXPECT_EQ(b.data<float>()[0], 7.0f);
}

TEST(Tensor, FromBytesChecksSize) {
  const float v[3] = {1, 2, 3};
  try {
    Tensor::FromBytes(DType::kFloat, {4}, v, sizeof(v), "w");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput);
    EXPECT_NE(std::string(e.what()).find("'w'"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("needs 16 bytes, got 12"), std::string::npos);
  }
}

TEST(Tensor, RejectsNegativeAndOverflowingShapes) {
  EXPECT_THROW(Tensor(DType::kFloat, {2, -1}), Error);
  const int64_t big = int64_t{1} << 32;
  EXPECT_THROW(Tensor(DType::kFloat, {big, big, big}), Error);
  // The element count fits but the byte count does not.
  EXPECT_THROW(DTypeStorageBytes(DType::kComplex128, std::numeric_limits<int64_t>::max() / 2), Error);
  EXPECT_EQ(ShapeElementCount({}), 1);
  EXPECT_EQ(ShapeElementCount({4, 0, big}), 0);
}

TEST(Tensor, PackedAndBoolStorage) {
  EXPECT_EQ(DTypeStorageBytes(DType::kInt4, 5), 3u);
  EXPECT_EQ(DTypeStorageBytes(DType::kBool, 5), 5u);
  Tensor b = Tensor::FromVector<bool>({3}, {true, false, true});
  EXPECT_EQ(b.nbytes(), 3u);
  EXPECT_EQ(static_cast<const uint8_t*>(b.raw())[2], 1);
}

TEST(Tensor, TypedAccessChecksDType) {
  Tensor t(DType::kInt64, {2});
  EXPECT_THROW(t.data<float>(), Error);
  EXPECT_NO_THROW(t.data<int64_t>());
}

TEST(Tensor, StringsAndContentComparison) {
  Tensor s = Tensor::FromStrings({2}, {"a", "bc"}, "s");
  Tensor s2 = s;
  s2.mutable_strings()[0] = "z";
  EXPECT_EQ(s.strings()[0], "a");
  EXPECT_FALSE(s.SameContent(s2));
  Tensor x = Tensor::FromVector<int32_t>({2, 2}, {1, 2, 3, 4});
  Tensor y = x;
  y.Reshape({4});
  EXPECT_FALSE(x.SameContent(y));
  y.Reshape({2, 2});
  EXPECT_TRUE(x.SameContent(y));
  EXPECT_THROW(y.Reshape({3}), Error);
}

TEST(DType, NamesRoundTrip) {
  for (int32_t v = 1; IsKnownDType(v); ++v) {
    const auto t = static_cast<DType>(v);
    EXPECT_EQ(DTypeFromName(DTypeName(t)), t) << v;
  }
  EXPECT_FALSE(IsKnownDType(0));
  EXPECT_FALSE(IsKnownDType(99));
}

// Bytes owned elsewhere; counts the release hints it gets.
class CountingBytes : public BorrowedBytes {
 public:
  explicit CountingBytes(size_t n) : bytes(n + 64) {}
  void ReleasePages(const void* data, size_t size) const override {
    ++releases;
    last = {data, size};
  }
  const char* aligned() const {
    const auto p = reinterpret_cast<uintptr_t>(bytes.data());
    return bytes.data() + (64 - p % 64) % 64;
  }
  std::vector<char> bytes;
  mutable int releases = 0;
  mutable std::pair<const void*, size_t> last{nullptr, 0};
};

TEST(Tensor, BorrowedBytesAreReadInPlaceAndCopiedOnWrite) {
  auto owner = std::make_shared<CountingBytes>(16);
  char* base = const_cast<char*>(owner->aligned());
  const float values[4] = {1.0f, -2.0f, 3.5f, 0.25f};
  std::memcpy(base, values, sizeof(values));
  Tensor t = Tensor::FromBorrowed(DType::kFloat, {4}, base, 16, owner, "w");
  EXPECT_TRUE(t.borrowed());
  EXPECT_EQ(t.raw(), base);  // no copy
  Tensor shared = t;
  t.ReleasePages();
  EXPECT_EQ(owner->releases, 1);
  EXPECT_EQ(owner->last.first, base);
  EXPECT_EQ(owner->last.second, 16u);
  // Writing copies into an owned, aligned buffer and leaves the borrowed bytes (and other tensors) alone.
  t.mutable_data<float>()[0] = 9.0f;
  EXPECT_FALSE(t.borrowed());
  EXPECT_NE(t.raw(), base);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw()) % 64, 0u);
  EXPECT_EQ(t.data<float>()[1], -2.0f);
  float first = 0;
  std::memcpy(&first, base, sizeof(first));
  EXPECT_EQ(first, 1.0f);
  EXPECT_TRUE(shared.borrowed());
  EXPECT_EQ(shared.data<float>()[0], 1.0f);
  t.ReleasePages();               // owned now: no hint
  EXPECT_EQ(owner->releases, 2);  // one from the copy on write
  // Misaligned bytes are copied at once (and released); a wrong size is refused.
  Tensor odd = Tensor::FromBorrowed(DType::kUInt8, {3}, base + 1, 3, owner);
  EXPECT_FALSE(odd.borrowed());
  EXPECT_EQ(owner->releases, 3);
  EXPECT_THROW(Tensor::FromBorrowed(DType::kFloat, {4}, base, 12, owner), Error);
}

}  // namespace
}  // namespace compress
