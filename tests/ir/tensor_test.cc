#include "compress/ir/tensor.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>

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

}  // namespace
}  // namespace compress
