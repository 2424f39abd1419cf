#include "compress/io/npy.h"

#include <fcntl.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl.h>
#include <google/protobuf/wire_format_lite.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <fstream>
#include <limits>

#include "compress/util/error.h"
#include "compress/util/fs.h"
#include "onnx_proto.h"

namespace compress {

namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLen = 6;
constexpr size_t kArrayAlign = 64;
// numpy reserves room after the dict so that the leading dimension can grow in place; writing the same
// spaces makes our files byte-identical to those of numpy (>= 1.23).
constexpr size_t kGrowthAxisMaxDigits = 21;
// Real headers are ~100 bytes; the cap keeps a corrupt length field from allocating gigabytes.
constexpr uint64_t kMaxHeaderLen = uint64_t{1} << 20;
// protobuf cannot parse messages of 2 GiB or more.
constexpr size_t kMaxProtoBytes = static_cast<size_t>(INT_MAX);

struct DescrCode {
  const char* code;  // without the byte-order character
  DType dtype;
};
constexpr DescrCode kDescrCodes[] = {
    {"f4", DType::kFloat},  {"f2", DType::kFloat16}, {"f8", DType::kDouble}, {"i8", DType::kInt64},
    {"i4", DType::kInt32},  {"i2", DType::kInt16},   {"i1", DType::kInt8},   {"u1", DType::kUInt8},
    {"u2", DType::kUInt16}, {"b1", DType::kBool},
};
constexpr const char* kSupportedDescrs = "<f4 <f2 <f8 <i8 <i4 <i2 |i1 |u1 <u2 |b1";

std::string Printable(const std::string& bytes, size_t max_len) {
  std::string out;
  for (size_t i = 0; i < bytes.size() && i < max_len; ++i) {
    const unsigned char c = static_cast<unsigned char>(bytes[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      static const char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    }
  }
  if (bytes.size() > max_len) out += "...";
  return out;
}

DType DTypeFromDescr(const std::string& descr, const std::string& path) {
  if (descr.size() == 3) {
    const std::string code = descr.substr(1);
    for (const auto& d : kDescrCodes) {
      if (code != d.code) continue;
      const bool one_byte = DTypeBits(d.dtype) == 8;
      // Byte order means nothing for one-byte types; for wider ones '|' leaves it unstated.
      if (descr[0] == '<' || descr[0] == '=' || (one_byte && (descr[0] == '|' || descr[0] == '>'))) {
        return d.dtype;
      }
      if (descr[0] == '>') {
        ThrowInvalid(path + ": big-endian data (descr '" + descr + "') is not supported; expected '<" + code +
                     "' (save with arr.astype(arr.dtype.newbyteorder('<')))");
      }
      break;
    }
  }
  ThrowInvalid(path + ": unsupported .npy descr '" + Printable(descr, 40) + "'; expected one of " +
               kSupportedDescrs);
}

const char* DescrFromDType(DType dtype) {
  switch (dtype) {
    case DType::kFloat:
      return "<f4";
    case DType::kFloat16:
      return "<f2";
    case DType::kDouble:
      return "<f8";
    case DType::kInt64:
      return "<i8";
    case DType::kInt32:
      return "<i4";
    case DType::kInt16:
      return "<i2";
    case DType::kInt8:
      return "|i1";
    case DType::kUInt8:
      return "|u1";
    case DType::kUInt16:
      return "<u2";
    case DType::kBool:
      return "|b1";
    default:
      return nullptr;
  }
}

// The header is a Python dict literal as written by repr(); this accepts what ast.literal_eval would for
// the three keys numpy defines, and nothing else.
class HeaderParser {
 public:
  HeaderParser(const std::string& text, const std::string& path) : text_(text), path_(path) {}

  void Parse(std::string* descr, bool* fortran_order, std::vector<int64_t>* shape) {
    bool have_descr = false, have_fortran = false, have_shape = false;
    SkipSpace();
    Expect('{', "'{' opening the header dict");
    for (;;) {
      SkipSpace();
      if (Consume('}')) break;
      const size_t key_pos = pos_;
      const std::string key = ParseString("a quoted key");
      SkipSpace();
      Expect(':', "':' after key '" + key + "'");
      SkipSpace();
      bool* seen = nullptr;
      if (key == "descr") {
        if (Peek() == '[')
          Fail("structured arrays (a list descr) are not supported; expected a descr string");
        *descr = ParseString("a quoted descr string");
        seen = &have_descr;
      } else if (key == "fortran_order") {
        *fortran_order = ParseBool();
        seen = &have_fortran;
      } else if (key == "shape") {
        *shape = ParseShape();
        seen = &have_shape;
      } else {
        pos_ = key_pos;
        Fail("unknown key '" + Printable(key, 40) + "'; expected only 'descr', 'fortran_order' and 'shape'");
      }
      if (*seen) {
        pos_ = key_pos;
        Fail("key '" + key + "' appears twice");
      }
      *seen = true;
      SkipSpace();
      if (Consume(',')) continue;
      Expect('}', "',' or '}' after the value of '" + key + "'");
      break;
    }
    SkipSpace();
    if (pos_ != text_.size()) Fail("expected only spaces and a newline after the closing '}'");
    if (!have_descr || !have_fortran || !have_shape) {
      std::string missing;
      if (!have_descr) missing += " 'descr'";
      if (!have_fortran) missing += " 'fortran_order'";
      if (!have_shape) missing += " 'shape'";
      ThrowInvalid(path_ + ": .npy header lacks key(s)" + missing + " (header: " + Printable(text_, 200) +
                   ")");
    }
  }

 private:
  char Peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }
  void SkipSpace() {
    while (pos_ < text_.size() &&
           (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' || text_[pos_] == '\r')) {
      ++pos_;
    }
  }
  bool Consume(char c) {
    if (pos_ >= text_.size() || text_[pos_] != c) return false;
    ++pos_;
    return true;
  }
  void Expect(char c, const std::string& expected) {
    if (!Consume(c)) Fail("expected " + expected);
  }
  [[noreturn]] void Fail(const std::string& message) const {
    const std::string found =
        pos_ < text_.size() ? "'" + Printable(text_.substr(pos_, 16), 16) + "'" : std::string("the end");
    ThrowInvalid(path_ + ": malformed .npy header: " + message + ", found " + found + " at offset " +
                 std::to_string(pos_) + " (header: " + Printable(text_, 200) + ")");
  }

  std::string ParseString(const std::string& expected) {
    const char quote = Peek();
    if (quote != '\'' && quote != '"') Fail("expected " + expected);
    const size_t start = ++pos_;
    while (pos_ < text_.size() && text_[pos_] != quote) {
      if (text_[pos_] == '\\') Fail("escape sequences are not supported in " + expected);
      ++pos_;
    }
    if (pos_ >= text_.size()) Fail("unterminated string in " + expected);
    return text_.substr(start, pos_++ - start);
  }

  bool ParseBool() {
    if (text_.compare(pos_, 4, "True") == 0) {
      pos_ += 4;
      return true;
    }
    if (text_.compare(pos_, 5, "False") == 0) {
      pos_ += 5;
      return false;
    }
    Fail("expected True or False for 'fortran_order'");
  }

  int64_t ParseDim() {
    const bool negative = Consume('-');
    if (Peek() < '0' || Peek() > '9') Fail("expected an integer dimension in 'shape'");
    // Accumulate as a negative number so that the magnitude of INT64_MIN fits too.
    int64_t value = 0;
    while (Peek() >= '0' && Peek() <= '9') {
      const int digit = Peek() - '0';
      if (value < (std::numeric_limits<int64_t>::min() + digit) / 10) {
        Fail("dimension in 'shape' does not fit in 64 bits");
      }
      value = value * 10 - digit;
      ++pos_;
    }
    Consume('L');  // Python 2 wrote long integers with a suffix
    if (!negative) {
      if (value == std::numeric_limits<int64_t>::min()) Fail("dimension in 'shape' does not fit in 64 bits");
      value = -value;
    }
    return value;
  }

  std::vector<int64_t> ParseShape() {
    std::vector<int64_t> dims;
    Expect('(', "a tuple such as (2, 3) for 'shape'");
    SkipSpace();
    if (Consume(')')) return dims;
    for (;;) {
      dims.push_back(ParseDim());
      SkipSpace();
      if (Consume(',')) {
        SkipSpace();
        if (Consume(')')) break;
        continue;
      }
      // "(5)" is the integer 5 in Python, not a tuple; numpy rejects it as well.
      if (dims.size() == 1) Fail("expected ',' (a one-element shape is written (5,))");
      Expect(')', "',' or ')' in 'shape'");
      break;
    }
    return dims;
  }

  const std::string& text_;
  const std::string& path_;
  size_t pos_ = 0;
};

uint64_t StatFileSize(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) ThrowIO("cannot read '" + path + "': " + std::strerror(errno));
  if (S_ISDIR(st.st_mode)) ThrowIO("cannot read '" + path + "': it is a directory");
  return static_cast<uint64_t>(st.st_size);
}

void ReadAt(std::ifstream& in, const std::string& path, uint64_t offset, void* dst, size_t size) {
  if (size == 0) return;
  in.seekg(static_cast<std::streamoff>(offset));
  in.read(static_cast<char*>(dst), static_cast<std::streamsize>(size));
  if (!in || static_cast<size_t>(in.gcount()) != size) {
    ThrowIO("could not read " + std::to_string(size) + " bytes at offset " + std::to_string(offset) +
            " of '" + path + "'");
  }
}

std::ifstream OpenForRead(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) ThrowIO("cannot open '" + path + "': " + std::strerror(errno));
  return in;
}

uint32_t LittleEndian(const unsigned char* p, int bytes) {
  uint32_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

std::string ShapeRepr(const std::vector<int64_t>& dims) {
  std::string s = "(";
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(dims[i]);
  }
  if (dims.size() == 1) s += ",";
  return s + ")";
}

std::string EncodeNpyHeader(const Tensor& t) {
  const char* descr = DescrFromDType(t.dtype());
  if (descr == nullptr) {
    ThrowInvalid(
        "tensor '" + t.name() + "' of type " + DTypeName(t.dtype()) +
        " cannot be stored as .npy; supported: float32, float16, float64, int64, int32, int16, int8, "
        "uint8, uint16, bool");
  }
  std::string dict = std::string("{'descr': '") + descr +
                     "', 'fortran_order': False, 'shape': " + ShapeRepr(t.dims()) + ", }";
  if (!t.dims().empty()) dict.append(kGrowthAxisMaxDigits - std::to_string(t.dims()[0]).size(), ' ');
  // Version 1.0 has a 16-bit header length; numpy switches to 2.0 only when the header outgrows it.
  for (const int major : {1, 2}) {
    const size_t preamble = kMagicLen + 2 + (major == 1 ? 2 : 4);
    const size_t with_newline = dict.size() + 1;
    const size_t pad = kArrayAlign - (preamble + with_newline) % kArrayAlign;
    const size_t header_len = with_newline + pad;
    if (major == 1 && header_len > 0xffff) continue;
    std::string out(kMagic, kMagicLen);
    out += static_cast<char>(major);
    out += '\0';
    for (size_t i = 0; i < preamble - kMagicLen - 2; ++i)
      out += static_cast<char>((header_len >> (8 * i)) & 0xff);
    out += dict;
    out.append(pad, ' ');
    out += '\n';
    return out;
  }
  ThrowInvalid("tensor '" + t.name() + "' has a shape too long for a .npy header");
}

}  // namespace

NpyInfo ReadNpyHeader(const std::string& path) {
  const uint64_t file_size = StatFileSize(path);
  std::ifstream in = OpenForRead(path);
  unsigned char pre[12] = {};
  const size_t pre_read = static_cast<size_t>(std::min<uint64_t>(file_size, sizeof(pre)));
  ReadAt(in, path, 0, pre, pre_read);
  const std::string head(reinterpret_cast<const char*>(pre), pre_read);
  if (head.size() < kMagicLen || head.compare(0, kMagicLen, kMagic, kMagicLen) != 0) {
    ThrowInvalid(path + ": not a .npy file: expected magic \\x93NUMPY, found '" +
                 Printable(head.substr(0, kMagicLen), kMagicLen) + "'");
  }
  if (file_size < 10) {
    ThrowInvalid(path + ": truncated .npy file: expected at least 10 bytes of preamble, found " +
                 std::to_string(file_size));
  }
  const int major = pre[6], minor = pre[7];
  if ((major != 1 && major != 2 && major != 3) || minor != 0) {
    ThrowInvalid(path + ": unsupported .npy format version " + std::to_string(major) + "." +
                 std::to_string(minor) + "; expected 1.0, 2.0 or 3.0");
  }
  const uint64_t preamble = major == 1 ? 10 : 12;
  if (file_size < preamble) {
    ThrowInvalid(path + ": truncated .npy file: version " + std::to_string(major) + ".0 needs a " +
                 std::to_string(preamble) + "-byte preamble, the file has " + std::to_string(file_size) +
                 " bytes");
  }
  const uint64_t header_len = LittleEndian(pre + 8, major == 1 ? 2 : 4);
  if (header_len > file_size - preamble) {
    ThrowInvalid(path + ": truncated .npy header: expected " + std::to_string(header_len) +
                 " header bytes, found " + std::to_string(file_size - preamble));
  }
  if (header_len > kMaxHeaderLen) {
    ThrowInvalid(path + ": .npy header of " + std::to_string(header_len) + " bytes; expected at most " +
                 std::to_string(kMaxHeaderLen));
  }
  std::string header(static_cast<size_t>(header_len), '\0');
  ReadAt(in, path, preamble, header.data(), header.size());

  std::string descr;
  bool fortran_order = false;
  NpyInfo info;
  HeaderParser(header, path).Parse(&descr, &fortran_order, &info.shape);
  info.dtype = DTypeFromDescr(descr, path);
  if (fortran_order) {
    ThrowInvalid(path +
                 ": fortran_order is True (column-major data); expected C order (fortran_order False), "
                 "e.g. save np.ascontiguousarray(a)");
  }
  size_t data_bytes = 0;
  try {
    data_bytes = DTypeStorageBytes(info.dtype, ShapeElementCount(info.shape));
  } catch (const Error& e) {
    ThrowInvalid(path + ": invalid .npy shape " + ShapeRepr(info.shape) + ": " + e.what());
  }
  info.data_offset = preamble + header_len;
  const uint64_t have = file_size - info.data_offset;
  if (have != data_bytes) {
    ThrowInvalid(path + ": header promises " + DTypeName(info.dtype) + ShapeToString(info.shape) + " = " +
                 std::to_string(data_bytes) + " bytes of data, found " + std::to_string(have) + " (" +
                 (have < data_bytes ? "truncated file" : "extra bytes at the end") + ")");
  }
  return info;
}

Tensor ReadNpy(const std::string& path) {
  const NpyInfo info = ReadNpyHeader(path);
  Tensor t(info.dtype, info.shape);
  std::ifstream in = OpenForRead(path);
  ReadAt(in, path, info.data_offset, t.mutable_raw(), t.nbytes());
  return t;
}

Tensor ReadNpyRows(const std::string& path, const NpyInfo& info, int64_t first, int64_t count) {
  if (info.shape.empty()) ThrowInvalid(path + ": cannot read rows of a 0-d array");
  const int64_t rows = info.shape[0];
  if (first < 0 || count < 0 || first > rows || count > rows - first) {
    ThrowInvalid(path + ": rows [" + std::to_string(first) + ", " + std::to_string(first + count) +
                 ") requested, the file holds rows [0, " + std::to_string(rows) + ")");
  }
  std::vector<int64_t> dims = info.shape;
  dims[0] = count;
  Tensor t(info.dtype, dims);
  const std::vector<int64_t> row_dims(info.shape.begin() + 1, info.shape.end());
  const uint64_t row_bytes = DTypeStorageBytes(info.dtype, ShapeElementCount(row_dims));
  std::ifstream in = OpenForRead(path);
  ReadAt(in, path, info.data_offset + static_cast<uint64_t>(first) * row_bytes, t.mutable_raw(), t.nbytes());
  return t;
}

std::string EncodeNpy(const Tensor& t) {
  std::string out = EncodeNpyHeader(t);
  out.append(static_cast<const char*>(t.raw()), t.nbytes());
  return out;
}

void WriteNpy(const std::string& path, const Tensor& t) {
  const std::string header = EncodeNpyHeader(t);
  AtomicFile f(path);
  f.Write(header);
  f.Write(t.raw(), t.nbytes());
  f.Commit();
}

TensorProtoInfo ReadTensorProtoHeader(const std::string& path) {
  namespace pb = google::protobuf;
  using Wire = pb::internal::WireFormatLite;
  const uint64_t file_size = StatFileSize(path);
  if (file_size > kMaxProtoBytes) {
    ThrowInvalid("'" + path + "' is " + std::to_string(file_size) + " bytes, more than the " +
                 std::to_string(kMaxProtoBytes) + " a TensorProto file can hold");
  }
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) ThrowIO("cannot open '" + path + "': " + std::strerror(errno));
  pb::io::FileInputStream file(fd);
  file.SetCloseOnDelete(true);
  pb::io::CodedInputStream in(&file);
  const auto malformed = [&path]() {
    ThrowInvalid(path + ": not a valid ONNX TensorProto (malformed protobuf encoding)");
  };

  TensorProtoInfo info;
  int32_t data_type = 0;
  bool has_raw = false, segmented = false, external = false;
  uint64_t raw_size = 0;
  for (;;) {
    const uint32_t tag = in.ReadTag();
    if (tag == 0) break;
    const int field = Wire::GetTagFieldNumber(tag);
    const auto wire_type = Wire::GetTagWireType(tag);
    const bool varint = wire_type == Wire::WIRETYPE_VARINT;
    const bool delimited = wire_type == Wire::WIRETYPE_LENGTH_DELIMITED;
    uint64_t v = 0;
    uint32_t len = 0;
    // Fields with an unexpected wire type are unknown fields to protobuf too, and skipped alike.
    if (field == onnx::TensorProto::kDimsFieldNumber && varint) {
      if (!in.ReadVarint64(&v)) malformed();
      info.shape.push_back(static_cast<int64_t>(v));
    } else if (field == onnx::TensorProto::kDimsFieldNumber && delimited) {
      if (!in.ReadVarint32(&len) || len > static_cast<uint32_t>(INT_MAX)) malformed();
      const auto limit = in.PushLimit(static_cast<int>(len));
      while (in.BytesUntilLimit() > 0) {
        if (!in.ReadVarint64(&v)) malformed();
        info.shape.push_back(static_cast<int64_t>(v));
      }
      in.PopLimit(limit);
    } else if (field == onnx::TensorProto::kDataTypeFieldNumber && varint) {
      if (!in.ReadVarint64(&v)) malformed();
      data_type = static_cast<int32_t>(v);
    } else if (field == onnx::TensorProto::kNameFieldNumber && delimited) {
      if (!in.ReadVarint32(&len) || !in.ReadString(&info.name, static_cast<int>(len))) malformed();
    } else if (field == onnx::TensorProto::kRawDataFieldNumber && delimited) {
      if (!in.ReadVarint32(&len) || !in.Skip(static_cast<int>(len))) malformed();
      has_raw = true;
      raw_size = len;
    } else if (field == onnx::TensorProto::kDataLocationFieldNumber && varint) {
      if (!in.ReadVarint64(&v)) malformed();
      external = static_cast<int32_t>(v) == onnx::TensorProto::EXTERNAL;
    } else {
      if (field == onnx::TensorProto::kSegmentFieldNumber && delimited) segmented = true;
      if (!Wire::SkipField(&in, tag)) malformed();
    }
  }
  // ReadTag() also returns 0 on a corrupt tag; only a clean end consumed the whole file.
  if (static_cast<uint64_t>(in.CurrentPosition()) != file_size) malformed();

  const std::string where = path + ": tensor '" + info.name + "'";
  if (!IsKnownDType(data_type)) ThrowInvalid(where + ": unknown element type " + std::to_string(data_type));
  info.dtype = static_cast<DType>(data_type);
  if (external) ThrowInvalid(where + ": external data is not allowed here (no model folder)");
  if (segmented) ThrowInvalid(where + ": segmented tensors are not supported");
  size_t expected = 0;
  try {
    expected = DTypeStorageBytes(info.dtype, ShapeElementCount(info.shape));
  } catch (const Error& e) {
    ThrowInvalid(where + ": " + e.what());
  }
  if (has_raw && info.dtype != DType::kString && raw_size != expected) {
    ThrowInvalid(where + ": raw_data holds " + std::to_string(raw_size) + " bytes, type " +
                 DTypeName(info.dtype) + " with shape " + ShapeToString(info.shape) + " needs " +
                 std::to_string(expected));
  }
  return info;
}

Tensor ReadTensorProtoFile(const std::string& path) {
  const std::string bytes = ReadFileBytes(path, kMaxProtoBytes);
  onnx::TensorProto proto;
  if (!proto.ParseFromString(bytes)) {
    ThrowInvalid(path + ": not a valid ONNX TensorProto (the protobuf message could not be parsed)");
  }
  io_detail::ReadContext ctx;
  ctx.source = path;  // no base_dir: a data file may not point at external data
  return io_detail::TensorFromProto(proto, ctx, "tensor '" + proto.name() + "'");
}

void WriteTensorProtoFile(const std::string& path, const Tensor& t) {
  onnx::TensorProto proto;
  io_detail::TensorToProto(t, &proto);
  if (proto.ByteSizeLong() > kMaxProtoBytes) {
    ThrowInvalid("cannot write '" + path + "': tensor '" + t.name() + "' needs " +
                 std::to_string(proto.ByteSizeLong()) + " bytes, more than a TensorProto file can hold (" +
                 std::to_string(kMaxProtoBytes) + ")");
  }
  std::string bytes;
  if (!proto.SerializeToString(&bytes)) ThrowInternal("cannot serialize tensor '" + t.name() + "'");
  WriteFileAtomic(path, bytes);
}

}  // namespace compress
