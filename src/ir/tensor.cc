#include "compress/ir/tensor.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>

#include "compress/util/error.h"

namespace compress {

namespace {
constexpr size_t kAlignment = 64;  // cache line; also enough for any SIMD width we use
}

struct Tensor::Buffer {
  // Owned, 64-byte aligned, zero-filled unless `zero` is false.
  explicit Buffer(size_t bytes, bool zero = true) : size(bytes) {
    const size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
    data = rounded == 0 ? nullptr : std::aligned_alloc(kAlignment, rounded);
    if (rounded != 0 && data == nullptr) throw std::bad_alloc();
    if (data != nullptr && zero) std::memset(data, 0, rounded);
  }
  // Borrowed: read-only bytes kept alive by `owner`; never written through.
  Buffer(const void* bytes, size_t n, std::shared_ptr<const BorrowedBytes> keep)
      : data(const_cast<void*>(bytes)), size(n), owner(std::move(keep)) {}
  ~Buffer() {
    if (!owner) std::free(data);
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void* data = nullptr;
  size_t size = 0;
  std::shared_ptr<const BorrowedBytes> owner;  // set for borrowed bytes
};

int64_t ShapeElementCount(const std::vector<int64_t>& dims) {
  int64_t count = 1;
  for (int64_t d : dims) {
    if (d < 0) ThrowInvalid("negative dimension " + std::to_string(d) + " in shape " + ShapeToString(dims));
    if (d != 0 && count > std::numeric_limits<int64_t>::max() / d) {
      ThrowInvalid("element count of shape " + ShapeToString(dims) + " overflows");
    }
    count *= d;
  }
  return count;
}

std::string ShapeToString(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i) s += ",";
    s += std::to_string(dims[i]);
  }
  return s + "]";
}

Tensor::Tensor(DType dtype, std::vector<int64_t> dims, std::string name)
    : name_(std::move(name)), dtype_(dtype), dims_(std::move(dims)) {
  if (!IsKnownDType(static_cast<int32_t>(dtype))) {
    ThrowInvalid("tensor '" + name_ + "' has unknown element type " +
                 std::to_string(static_cast<int32_t>(dtype)));
  }
  numel_ = ShapeElementCount(dims_);
  if (dtype_ == DType::kString) {
    strings_ = std::make_shared<std::vector<std::string>>(static_cast<size_t>(numel_));
  } else {
    nbytes_ = DTypeStorageBytes(dtype_, numel_);
    buffer_ = std::make_shared<Buffer>(nbytes_);
  }
}

Tensor Tensor::Uninitialized(DType dtype, std::vector<int64_t> dims) {
  if (dtype == DType::kString || !IsKnownDType(static_cast<int32_t>(dtype))) return Tensor(dtype, std::move(dims));
  Tensor t;
  t.dtype_ = dtype;
  t.dims_ = std::move(dims);
  t.numel_ = ShapeElementCount(t.dims_);
  t.nbytes_ = DTypeStorageBytes(dtype, t.numel_);
  t.buffer_ = std::make_shared<Buffer>(t.nbytes_, false);
  return t;
}

Tensor Tensor::FromBytes(DType dtype, std::vector<int64_t> dims, const void* bytes, size_t size,
                         std::string name) {
  if (dtype == DType::kString) ThrowInternal("Tensor::FromBytes cannot build a string tensor");
  Tensor t = IsKnownDType(static_cast<int32_t>(dtype)) ? Uninitialized(dtype, std::move(dims))
                                                       : Tensor(dtype, std::move(dims), name);
  t.name_ = std::move(name);
  if (size != t.nbytes_) {
    ThrowInvalid("tensor '" + t.name_ + "' of type " + DTypeName(dtype) + " and shape " +
                 ShapeToString(t.dims_) + " needs " + std::to_string(t.nbytes_) + " bytes, got " +
                 std::to_string(size));
  }
  if (size != 0) std::memcpy(t.buffer_->data, bytes, size);
  const size_t rounded = (size + kAlignment - 1) / kAlignment * kAlignment;
  if (rounded != size) std::memset(static_cast<char*>(t.buffer_->data) + size, 0, rounded - size);
  return t;
}

Tensor Tensor::FromBorrowed(DType dtype, std::vector<int64_t> dims, const void* bytes, size_t size,
                            std::shared_ptr<const BorrowedBytes> owner, std::string name) {
  if (dtype == DType::kString) ThrowInternal("Tensor::FromBorrowed cannot build a string tensor");
  if (size == 0 || reinterpret_cast<uintptr_t>(bytes) % kAlignment != 0 || !owner) {
    Tensor copy = FromBytes(dtype, std::move(dims), bytes, size, std::move(name));
    if (owner && size != 0) owner->ReleasePages(bytes, size);
    return copy;
  }
  Tensor t;
  t.name_ = std::move(name);
  t.dtype_ = dtype;
  t.dims_ = std::move(dims);
  if (!IsKnownDType(static_cast<int32_t>(dtype))) {
    ThrowInvalid("tensor '" + t.name_ + "' has unknown element type " +
                 std::to_string(static_cast<int32_t>(dtype)));
  }
  t.numel_ = ShapeElementCount(t.dims_);
  t.nbytes_ = DTypeStorageBytes(dtype, t.numel_);
  if (size != t.nbytes_) {
    ThrowInvalid("tensor '" + t.name_ + "' of type " + DTypeName(dtype) + " and shape " +
                 ShapeToString(t.dims_) + " needs " + std::to_string(t.nbytes_) + " bytes, got " +
                 std::to_string(size));
  }
  t.buffer_ = std::make_shared<Buffer>(bytes, size, std::move(owner));
  return t;
}

bool Tensor::borrowed() const { return buffer_ && buffer_->owner; }

void Tensor::ReleasePages() const {
  if (buffer_ && buffer_->owner && nbytes_ != 0) buffer_->owner->ReleasePages(buffer_->data, nbytes_);
}

Tensor Tensor::FromStrings(std::vector<int64_t> dims, std::vector<std::string> values, std::string name) {
  Tensor t(DType::kString, std::move(dims), std::move(name));
  if (values.size() != static_cast<size_t>(t.numel_)) {
    ThrowInvalid("string tensor '" + t.name_ + "' of shape " + ShapeToString(t.dims_) + " needs " +
                 std::to_string(t.numel_) + " strings, got " + std::to_string(values.size()));
  }
  *t.strings_ = std::move(values);
  return t;
}

const void* Tensor::raw() const { return buffer_ ? buffer_->data : nullptr; }

void* Tensor::mutable_raw() {
  if (!buffer_) return nullptr;
  if (buffer_.use_count() > 1 || buffer_->owner) {
    auto copy = std::make_shared<Buffer>(nbytes_, false);  // every byte is copied next
    if (nbytes_ != 0) std::memcpy(copy->data, buffer_->data, nbytes_);
    ReleasePages();  // the borrowed bytes were read once, for the copy
    buffer_ = std::move(copy);
  }
  return buffer_->data;
}

const std::vector<std::string>& Tensor::strings() const {
  static const std::vector<std::string> kEmpty;
  return strings_ ? *strings_ : kEmpty;
}

std::vector<std::string>& Tensor::mutable_strings() {
  if (dtype_ != DType::kString) ThrowInternal("tensor '" + name_ + "' is not a string tensor");
  if (strings_.use_count() > 1) strings_ = std::make_shared<std::vector<std::string>>(*strings_);
  return *strings_;
}

void Tensor::Reshape(std::vector<int64_t> dims) {
  const int64_t count = ShapeElementCount(dims);
  if (count != numel_) {
    ThrowInvalid("cannot reshape tensor '" + name_ + "' from " + ShapeToString(dims_) + " to " +
                 ShapeToString(dims));
  }
  dims_ = std::move(dims);
}

bool Tensor::SameContent(const Tensor& other) const {
  if (dtype_ != other.dtype_ || dims_ != other.dims_) return false;
  if (dtype_ == DType::kString) return strings() == other.strings();
  if (nbytes_ == 0) return true;
  return std::memcmp(raw(), other.raw(), nbytes_) == 0;
}

void Tensor::CheckType(DType expected) const {
  if (expected != dtype_) {
    ThrowInternal(std::string("tensor '") + name_ + "' holds " + DTypeName(dtype_) + ", accessed as " +
                  DTypeName(expected));
  }
}

}  // namespace compress
