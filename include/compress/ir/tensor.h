// Tensor: an element type, a shape and an owned, 64-byte aligned buffer.
//
// Copies share the buffer; the first mutable access of a shared buffer copies it (copy on write), so
// that a Model can be cloned cheaply (teacher and student, before and after) without aliasing bugs.
// A tensor may also borrow read-only bytes it does not own (external data mapped from a file): they are
// never written; the first mutable access copies them into a buffer of its own.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "compress/ir/dtype.h"

namespace compress {

// Read-only bytes owned by someone else (e.g. a file mapping) that tensors may borrow. Kept alive as
// long as a tensor points into them.
class BorrowedBytes {
 public:
  virtual ~BorrowedBytes() = default;
  // Hint that [data, data + size) will not be read soon: a file mapping gives the resident pages back to
  // the kernel (the bytes stay valid and are read again from the file on the next access).
  virtual void ReleasePages(const void* data, size_t size) const = 0;
};

// Product of dims; throws Error(kInvalidInput) on a negative dim or when the product overflows int64.
int64_t ShapeElementCount(const std::vector<int64_t>& dims);
std::string ShapeToString(const std::vector<int64_t>& dims);

class Tensor {
 public:
  Tensor() = default;
  // Zero-filled tensor. For kString the elements are empty strings.
  Tensor(DType dtype, std::vector<int64_t> dims, std::string name = {});
  // A tensor whose element bytes are left unset, for code that writes every element before reading any
  // (numeric types only; a string tensor is built as by the constructor). Skips the zero fill, which
  // costs as much as the work itself in light kernels and gradient rules.
  static Tensor Uninitialized(DType dtype, std::vector<int64_t> dims);

  // A tensor holding a copy of `bytes`, which must be exactly the storage size of dtype x dims.
  static Tensor FromBytes(DType dtype, std::vector<int64_t> dims, const void* bytes, size_t size,
                          std::string name = {});
  template <typename T>
  static Tensor FromVector(std::vector<int64_t> dims, const std::vector<T>& values, std::string name = {}) {
    if constexpr (std::is_same_v<T, bool>) {
      // std::vector<bool> is bit-packed; ONNX bool is one byte per element.
      const std::vector<uint8_t> bytes(values.begin(), values.end());
      return FromBytes(DType::kBool, std::move(dims), bytes.data(), bytes.size(), std::move(name));
    } else {
      return FromBytes(DTypeOf<T>::value, std::move(dims), values.data(), values.size() * sizeof(T),
                       std::move(name));
    }
  }
  // A tensor reading `bytes` (exactly the storage size of dtype x dims) in place, kept alive by `owner`.
  // Bytes that are not 64-byte aligned are copied instead.
  static Tensor FromBorrowed(DType dtype, std::vector<int64_t> dims, const void* bytes, size_t size,
                             std::shared_ptr<const BorrowedBytes> owner, std::string name = {});
  static Tensor FromStrings(std::vector<int64_t> dims, std::vector<std::string> values, std::string name = {});

  const std::string& name() const { return name_; }
  void set_name(std::string name) { name_ = std::move(name); }
  const std::string& doc_string() const { return doc_string_; }
  void set_doc_string(std::string doc) { doc_string_ = std::move(doc); }

  DType dtype() const { return dtype_; }
  const std::vector<int64_t>& dims() const { return dims_; }
  int64_t rank() const { return static_cast<int64_t>(dims_.size()); }
  int64_t numel() const { return numel_; }
  // Bytes of element storage (0 for string tensors; see strings()).
  size_t nbytes() const { return nbytes_; }

  const void* raw() const;
  void* mutable_raw();

  template <typename T>
  const T* data() const {
    CheckType(DTypeOf<T>::value);
    return static_cast<const T*>(raw());
  }
  template <typename T>
  T* mutable_data() {
    CheckType(DTypeOf<T>::value);
    return static_cast<T*>(mutable_raw());
  }

  const std::vector<std::string>& strings() const;
  std::vector<std::string>& mutable_strings();

  // True when the bytes are borrowed (see FromBorrowed) rather than owned.
  bool borrowed() const;
  // For a borrowed tensor, BorrowedBytes::ReleasePages over its bytes: call it after reading a large
  // tensor once, so that going through a model's mapped weights one after another does not keep them all
  // resident. No effect on owned tensors.
  void ReleasePages() const;

  // Reinterprets the same elements under a new shape with the same element count.
  void Reshape(std::vector<int64_t> dims);

  // Same dtype, dims and bytes (names and doc strings are not compared).
  bool SameContent(const Tensor& other) const;

 private:
  struct Buffer;
  void CheckType(DType expected) const;

  std::string name_;
  std::string doc_string_;
  DType dtype_ = DType::kUndefined;
  std::vector<int64_t> dims_;
  int64_t numel_ = 0;
  size_t nbytes_ = 0;
  std::shared_ptr<Buffer> buffer_;
  std::shared_ptr<std::vector<std::string>> strings_;
};

// An ONNX sparse tensor: `values` (1-D) at `indices` ([NNZ] linear or [NNZ, rank] coordinates) of a
// dense tensor of shape `dims`.
struct SparseTensor {
  Tensor values;
  Tensor indices;
  std::vector<int64_t> dims;
};

}  // namespace compress
