#include "onnx_proto.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <unordered_set>

#include "compress/util/error.h"
#include "compress/util/fs.h"

namespace compress::io_detail {

namespace {

// ----------------------------------------------------------------------------------------------
// External data
// ----------------------------------------------------------------------------------------------

struct ExternalInfo {
  std::string location;
  std::string path;  // resolved, canonical
  uint64_t offset = 0;
  uint64_t length = 0;
  dev_t device = 0;  // of the file validated, so that the file opened later is provably the same
  ino_t inode = 0;
};

// Longest location accepted: a path the kernel can resolve (PATH_MAX, terminating NUL included), each
// component at most NAME_MAX bytes.
constexpr size_t kMaxLocationBytes = PATH_MAX - 1;
constexpr size_t kMaxNameBytes = NAME_MAX;

bool ParseUnsigned(const std::string& text, uint64_t* out) {
  if (text.empty() || text.size() > 20) return false;
  uint64_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    const uint64_t digit = static_cast<uint64_t>(c - '0');
    if (v > (std::numeric_limits<uint64_t>::max() - digit) / 10) return false;
    v = v * 10 + digit;
  }
  *out = v;
  return true;
}

uint64_t ExpectedBytes(const onnx::TensorProto& p, const std::string& what) {
  if (!IsKnownDType(p.data_type())) {
    ThrowInvalid(what + ": unknown element type " + std::to_string(p.data_type()));
  }
  if (p.data_type() == onnx::TensorProto::STRING) {
    ThrowInvalid(what + ": string tensors cannot be stored as external data");
  }
  std::vector<int64_t> dims(p.dims().begin(), p.dims().end());
  try {
    return DTypeStorageBytes(static_cast<DType>(p.data_type()), ShapeElementCount(dims));
  } catch (const Error& e) {
    ThrowInvalid(what + ": " + e.what());
  }
}

// `text` fit for a one-line message: control bytes as \xNN, at most kShownBytes bytes.
std::string Printable(const std::string& text) {
  constexpr size_t kShownBytes = 200;
  std::string out;
  for (size_t i = 0; i < text.size() && i < kShownBytes; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c == 0x7f) {
      static const char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (text.size() > kShownBytes) out += "...";
  return out;
}

// What a file that is not a regular file is, for messages.
const char* FileKind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

// Checks the file behind a location: a regular file with one link. A file with several hard links may be
// the same inode as a file outside the model's folder, which no path check can rule out, so it is
// refused.
void CheckDataFile(const struct stat& st, const std::string& what, const std::string& loc) {
  if (!S_ISREG(st.st_mode)) {
    ThrowInvalid(what + ": external data location '" + loc + "' is " + FileKind(st.st_mode) +
                 ", not a regular file");
  }
  if (st.st_nlink > 1) {
    ThrowInvalid(
        what + ": external data file '" + loc + "' has " + std::to_string(st.st_nlink) +
        " hard links; a hard-linked file may live outside the model's folder, so it is refused (use a copy)");
  }
}

// Checks one external-data reference without opening the file (stat and realpath only).
ExternalInfo ResolveExternal(const onnx::TensorProto& p, const ReadContext& ctx, const std::string& what) {
  ExternalInfo info;
  bool has_location = false, has_offset = false, has_length = false;
  std::set<std::string> seen;
  for (const auto& kv : p.external_data()) {
    if (!seen.insert(kv.key()).second) ThrowInvalid(what + ": external data key '" + kv.key() + "' repeated");
    if (kv.key() == "location") {
      info.location = kv.value();
      has_location = true;
    } else if (kv.key() == "offset") {
      if (!ParseUnsigned(kv.value(), &info.offset)) {
        ThrowInvalid(what + ": external data offset '" + kv.value() + "' is not a valid byte offset");
      }
      has_offset = true;
    } else if (kv.key() == "length") {
      if (!ParseUnsigned(kv.value(), &info.length)) {
        ThrowInvalid(what + ": external data length '" + kv.value() + "' is not a valid byte count");
      }
      has_length = true;
    } else if (kv.key() == "checksum") {
      // Optional SHA-1 of the bytes; allowed by the format, not verified.
    } else {
      ThrowInvalid(what + ": unknown external data key '" + kv.key() +
                   "' (expected location, offset, length or checksum)");
    }
  }
  if (!has_location || info.location.empty()) ThrowInvalid(what + ": external data has no location");
  if (p.has_raw_data()) ThrowInvalid(what + ": tensor has both raw_data and external data");
  const std::string& raw_loc = info.location;
  const std::string loc = Printable(raw_loc);  // for messages
  if (raw_loc.find('\0') != std::string::npos) {
    ThrowInvalid(what + ": external data location '" + loc + "' contains a NUL byte");
  }
  if (raw_loc.size() > kMaxLocationBytes) {
    ThrowInvalid(what + ": external data location of " + std::to_string(raw_loc.size()) +
                 " bytes is longer than " + std::to_string(kMaxLocationBytes) + ": '" + loc + "'");
  }
  if (raw_loc.front() == '/') {
    ThrowInvalid(what + ": external data location '" + loc + "' is an absolute path; it must be relative to "
                 "the model's folder");
  }
  for (const auto& part : SplitPath(raw_loc)) {
    if (part == "..") {
      ThrowInvalid(what + ": external data location '" + loc + "' contains '..'; it must stay inside the "
                   "model's folder");
    }
    if (part.size() > kMaxNameBytes) {
      ThrowInvalid(what + ": external data location '" + loc + "' has a component longer than " +
                   std::to_string(kMaxNameBytes) + " bytes");
    }
  }
  if (ctx.base_dir.empty()) ThrowInvalid(what + ": external data is not allowed here (no model folder)");
  if (!ctx.load_external_data) ThrowInvalid(what + ": model uses external data, which was not requested");

  const std::string joined = ctx.base_dir + "/" + raw_loc;
  std::string resolved;
  if (!CanonicalPath(joined, &resolved)) {
    const int err = errno;
    if (err == ENOENT) {
      ThrowIO(what + ": external data file '" + Printable(joined) + "' (location '" + loc +
              "') does not exist");
    }
    if (err == EACCES) {
      ThrowIO(what + ": external data location '" + loc + "' cannot be accessed: " + std::strerror(err));
    }
    // A symlink loop, a component that is not a folder, a name too long: the location itself is bad.
    ThrowInvalid(what + ": external data location '" + loc + "' cannot be resolved: " + std::strerror(err));
  }
  if (!IsInside(resolved, ctx.base_dir)) {
    ThrowInvalid(what + ": external data location '" + loc + "' resolves to '" + Printable(resolved) +
                 "', outside the model's folder '" + ctx.base_dir + "'");
  }
  struct stat st {};
  if (::stat(resolved.c_str(), &st) != 0) {
    ThrowIO(what + ": external data location '" + loc + "': cannot stat '" + Printable(resolved) +
            "': " + std::strerror(errno));
  }
  CheckDataFile(st, what, loc);
  info.path = resolved;
  info.device = st.st_dev;
  info.inode = st.st_ino;
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  const uint64_t expected = ExpectedBytes(p, what);
  if (!has_offset) info.offset = 0;
  if (info.offset > file_size) {
    ThrowInvalid(what + ": external data offset " + std::to_string(info.offset) + " is beyond the end of '" +
                 loc + "' (" + std::to_string(file_size) + " bytes)");
  }
  if (!has_length) info.length = file_size - info.offset;
  if (info.length > std::numeric_limits<uint64_t>::max() - info.offset) {
    ThrowInvalid(what + ": external data offset + length overflows (" + std::to_string(info.offset) + " + " +
                 std::to_string(info.length) + ") in '" + loc + "'");
  }
  if (info.offset + info.length > file_size) {
    ThrowInvalid(what + ": external data range [" + std::to_string(info.offset) + ", " +
                 std::to_string(info.offset + info.length) + ") lies outside '" + loc + "' (" +
                 std::to_string(file_size) + " bytes)");
  }
  if (info.length != expected) {
    ThrowInvalid(what + ": external data in '" + loc + "' holds " + std::to_string(info.length) +
                 " bytes, the tensor's type and shape need " + std::to_string(expected));
  }
  return info;
}

// A data file mapped read-only (private: nothing is ever written to it) for the tensors that read it.
class MappedFile : public BorrowedBytes {
 public:
  MappedFile(void* base, size_t size) : base_(base), size_(size) {}
  ~MappedFile() override { ::munmap(base_, size_); }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const char* data() const { return static_cast<const char*>(base_); }
  size_t size() const { return size_; }

  // Drops the whole pages inside the range from this process; they are read again from the file (or the
  // page cache) on the next access. The mapping is private and never written, so nothing is lost.
  void ReleasePages(const void* data, size_t size) const override {
    static const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
    const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + page - 1) / page * page;
    const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + size) / page * page;
    if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
  }

 private:
  void* base_;
  size_t size_;
};

}  // namespace

// The data files of one model, each opened and mapped once.
struct ExternalFiles {
  std::map<std::string, std::shared_ptr<const MappedFile>> mapped;

  // Opens the file `info` was validated against: the same inode (a file swapped in since then is
  // refused), still regular, one link and long enough; never follows a symlink, never blocks on a FIFO.
  std::shared_ptr<const MappedFile> Map(const ExternalInfo& info, const std::string& what) {
    auto it = mapped.find(info.path);
    if (it != mapped.end()) {
      // Mapped for an earlier tensor: the range checked against the file then must lie in the mapping.
      if (info.offset + info.length > it->second->size()) {
        ThrowInvalid(what + ": external data file '" + Printable(info.location) + "' shrank to " +
                     std::to_string(it->second->size()) + " bytes while the model was read");
      }
      return it->second;
    }
    const int fd = ::open(info.path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
      ThrowIO(what + ": cannot open external data file '" + Printable(info.path) +
              "': " + std::strerror(errno));
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      const int err = errno;
      ::close(fd);
      ThrowIO(what + ": cannot stat external data file '" + Printable(info.path) +
              "': " + std::strerror(err));
    }
    try {
      CheckDataFile(st, what, Printable(info.location));
      if (st.st_dev != info.device || st.st_ino != info.inode) {
        ThrowInvalid(what + ": external data file '" + Printable(info.location) +
                     "' was replaced while the model was read");
      }
      if (static_cast<uint64_t>(st.st_size) < info.offset + info.length) {
        ThrowInvalid(what + ": external data file '" + Printable(info.location) + "' shrank to " +
                     std::to_string(st.st_size) + " bytes while the model was read");
      }
    } catch (...) {
      ::close(fd);
      throw;
    }
    const size_t size = static_cast<size_t>(st.st_size);
    void* base = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    const int err = errno;
    ::close(fd);
    if (base == MAP_FAILED) {
      ThrowIO(what + ": cannot map external data file '" + Printable(info.path) + "' (" +
              std::to_string(size) + " bytes): " + std::strerror(err));
    }
    auto file = std::make_shared<const MappedFile>(base, size);
    mapped.emplace(info.path, file);
    return file;
  }
};

namespace {

bool IsExternal(const onnx::TensorProto& p) { return p.data_location() == onnx::TensorProto::EXTERNAL; }

std::string Quoted(const std::string& name) { return "'" + name + "'"; }

using TensorVisitor = std::function<void(const onnx::TensorProto&, const std::string&)>;

void VisitTensors(const onnx::GraphProto& g, const TensorVisitor& fn);

// Visits the TensorProtos in the attributes of `nodes` (tensors, sparse tensors, subgraphs).
void VisitNodeTensors(const google::protobuf::RepeatedPtrField<onnx::NodeProto>& nodes,
                      const TensorVisitor& fn) {
  for (const auto& n : nodes) {
    const std::string node_desc = "node " + Quoted(n.name().empty() ? n.op_type() : n.name());
    for (const auto& a : n.attribute()) {
      const std::string what = node_desc + " attribute " + Quoted(a.name());
      if (a.has_t()) fn(a.t(), what);
      for (const auto& t : a.tensors()) fn(t, what);
      if (a.has_sparse_tensor()) {
        fn(a.sparse_tensor().values(), what + " (values)");
        fn(a.sparse_tensor().indices(), what + " (indices)");
      }
      for (const auto& st : a.sparse_tensors()) {
        fn(st.values(), what + " (values)");
        fn(st.indices(), what + " (indices)");
      }
      if (a.has_g()) VisitTensors(a.g(), fn);
      for (const auto& sub : a.graphs()) VisitTensors(sub, fn);
    }
  }
}

// Visits every TensorProto of a graph (initializers, sparse initializers, attribute tensors, subgraphs).
void VisitTensors(const onnx::GraphProto& g, const TensorVisitor& fn) {
  for (const auto& t : g.initializer()) fn(t, "initializer " + Quoted(t.name()));
  for (const auto& s : g.sparse_initializer()) {
    fn(s.values(), "sparse initializer " + Quoted(s.values().name()) + " (values)");
    fn(s.indices(), "sparse initializer " + Quoted(s.values().name()) + " (indices)");
  }
  VisitNodeTensors(g.node(), fn);
}

// ----------------------------------------------------------------------------------------------
// Tensors
// ----------------------------------------------------------------------------------------------

template <typename Dst, typename Field>
void CopyTyped(const Field& field, Tensor* t) {
  Dst* out = static_cast<Dst*>(t->mutable_raw());
  for (int i = 0; i < field.size(); ++i) out[i] = static_cast<Dst>(field.Get(i));
}

void CheckTypedCount(int have, int64_t need, const std::string& what, const char* field) {
  if (static_cast<int64_t>(have) != need) {
    ThrowInvalid(what + ": " + field + " holds " + std::to_string(have) + " values, the shape needs " +
                 std::to_string(need));
  }
}

// ----------------------------------------------------------------------------------------------
// Types
// ----------------------------------------------------------------------------------------------

std::vector<Dim> ShapeFromProto(const onnx::TensorShapeProto& s) {
  std::vector<Dim> dims;
  dims.reserve(s.dim_size());
  for (const auto& d : s.dim()) {
    Dim dim;
    if (d.has_dim_value()) dim.value = d.dim_value();
    if (d.has_dim_param()) dim.param = d.dim_param();
    dim.denotation = d.denotation();
    dims.push_back(std::move(dim));
  }
  return dims;
}

void ShapeToProto(const std::vector<Dim>& dims, onnx::TensorShapeProto* s) {
  for (const auto& d : dims) {
    auto* pd = s->add_dim();
    if (d.value) pd->set_dim_value(*d.value);
    else if (!d.param.empty()) pd->set_dim_param(d.param);
    if (!d.denotation.empty()) pd->set_denotation(d.denotation);
  }
}

TypeInfo TypeFromProto(const onnx::TypeProto& p, const std::string& what, int depth = 0) {
  if (depth > 32) ThrowInvalid(what + ": type nested too deeply");
  TypeInfo t;
  t.denotation = p.denotation();
  auto elem_of = [&](int32_t v) {
    if (v != 0 && !IsKnownDType(v)) ThrowInvalid(what + ": unknown element type " + std::to_string(v));
    return static_cast<DType>(v);
  };
  switch (p.value_case()) {
    case onnx::TypeProto::kTensorType:
      t.kind = TypeInfo::Kind::kTensor;
      t.elem_type = elem_of(p.tensor_type().elem_type());
      t.has_shape = p.tensor_type().has_shape();
      if (t.has_shape) t.shape = ShapeFromProto(p.tensor_type().shape());
      break;
    case onnx::TypeProto::kSparseTensorType:
      t.kind = TypeInfo::Kind::kSparseTensor;
      t.elem_type = elem_of(p.sparse_tensor_type().elem_type());
      t.has_shape = p.sparse_tensor_type().has_shape();
      if (t.has_shape) t.shape = ShapeFromProto(p.sparse_tensor_type().shape());
      break;
    case onnx::TypeProto::kSequenceType:
      t.kind = TypeInfo::Kind::kSequence;
      if (p.sequence_type().has_elem_type()) {
        t.elem = std::make_shared<TypeInfo>(TypeFromProto(p.sequence_type().elem_type(), what, depth + 1));
      }
      break;
    case onnx::TypeProto::kOptionalType:
      t.kind = TypeInfo::Kind::kOptional;
      if (p.optional_type().has_elem_type()) {
        t.elem = std::make_shared<TypeInfo>(TypeFromProto(p.optional_type().elem_type(), what, depth + 1));
      }
      break;
    case onnx::TypeProto::kMapType:
      t.kind = TypeInfo::Kind::kMap;
      t.map_key = elem_of(p.map_type().key_type());
      if (p.map_type().has_value_type()) {
        t.elem = std::make_shared<TypeInfo>(TypeFromProto(p.map_type().value_type(), what, depth + 1));
      }
      break;
    default:
      t.kind = TypeInfo::Kind::kNone;
      break;
  }
  return t;
}

void TypeToProto(const TypeInfo& t, onnx::TypeProto* p) {
  if (!t.denotation.empty()) p->set_denotation(t.denotation);
  switch (t.kind) {
    case TypeInfo::Kind::kNone:
      break;
    case TypeInfo::Kind::kTensor: {
      auto* tt = p->mutable_tensor_type();
      tt->set_elem_type(static_cast<int32_t>(t.elem_type));
      if (t.has_shape) ShapeToProto(t.shape, tt->mutable_shape());
      break;
    }
    case TypeInfo::Kind::kSparseTensor: {
      auto* tt = p->mutable_sparse_tensor_type();
      tt->set_elem_type(static_cast<int32_t>(t.elem_type));
      if (t.has_shape) ShapeToProto(t.shape, tt->mutable_shape());
      break;
    }
    case TypeInfo::Kind::kSequence: {
      auto* s = p->mutable_sequence_type();
      if (t.elem) TypeToProto(*t.elem, s->mutable_elem_type());
      break;
    }
    case TypeInfo::Kind::kOptional: {
      auto* s = p->mutable_optional_type();
      if (t.elem) TypeToProto(*t.elem, s->mutable_elem_type());
      break;
    }
    case TypeInfo::Kind::kMap: {
      auto* m = p->mutable_map_type();
      m->set_key_type(static_cast<int32_t>(t.map_key));
      if (t.elem) TypeToProto(*t.elem, m->mutable_value_type());
      break;
    }
  }
}

ValueInfo ValueInfoFromProto(const onnx::ValueInfoProto& p, const std::string& kind) {
  ValueInfo v;
  v.name = p.name();
  v.doc_string = p.doc_string();
  if (p.has_type()) v.type = TypeFromProto(p.type(), kind + " " + Quoted(p.name()));
  return v;
}

void ValueInfoToProto(const ValueInfo& v, onnx::ValueInfoProto* p) {
  p->set_name(v.name);
  if (!v.doc_string.empty()) p->set_doc_string(v.doc_string);
  if (v.type.kind != TypeInfo::Kind::kNone || !v.type.denotation.empty()) TypeToProto(v.type, p->mutable_type());
}

// ----------------------------------------------------------------------------------------------
// Graphs
// ----------------------------------------------------------------------------------------------

Graph GraphFromProto(const onnx::GraphProto& g, const ReadContext& ctx, int depth);

SparseTensor SparseFromProto(const onnx::SparseTensorProto& p, const ReadContext& ctx, const std::string& what) {
  SparseTensor s;
  s.values = TensorFromProto(p.values(), ctx, what + " (values)");
  s.indices = TensorFromProto(p.indices(), ctx, what + " (indices)");
  s.dims.assign(p.dims().begin(), p.dims().end());
  int64_t dense = 0;
  try {
    dense = ShapeElementCount(s.dims);
  } catch (const Error& e) {
    ThrowInvalid(what + ": " + e.what());
  }
  if (s.values.rank() != 1) ThrowInvalid(what + ": sparse values must be 1-D, got " + ShapeToString(s.values.dims()));
  const int64_t nnz = s.values.dims()[0];
  if (s.indices.dtype() != DType::kInt64) ThrowInvalid(what + ": sparse indices must be int64");
  const int64_t rank = static_cast<int64_t>(s.dims.size());
  const auto& idims = s.indices.dims();
  const bool linear = idims.size() == 1 && idims[0] == nnz;
  const bool coords = idims.size() == 2 && idims[0] == nnz && idims[1] == rank;
  if (!linear && !coords) {
    ThrowInvalid(what + ": sparse indices have shape " + ShapeToString(idims) + ", expected [" +
                 std::to_string(nnz) + "] or [" + std::to_string(nnz) + "," + std::to_string(rank) + "]");
  }
  const int64_t* idx = s.indices.data<int64_t>();
  for (int64_t k = 0; k < s.indices.numel(); ++k) {
    const int64_t bound = linear ? dense : s.dims[static_cast<size_t>(k % rank)];
    if (idx[k] < 0 || idx[k] >= bound) {
      ThrowInvalid(what + ": sparse index " + std::to_string(idx[k]) + " is out of range [0, " +
                   std::to_string(bound) + ")");
    }
  }
  return s;
}

void SparseToProto(const SparseTensor& s, onnx::SparseTensorProto* p) {
  TensorToProto(s.values, p->mutable_values());
  TensorToProto(s.indices, p->mutable_indices());
  for (int64_t d : s.dims) p->add_dims(d);
}

AttrType InferAttrType(const onnx::AttributeProto& a) {
  // Very old files may omit `type`; the populated field tells.
  if (a.has_f()) return AttrType::kFloat;
  if (a.has_i()) return AttrType::kInt;
  if (a.has_s()) return AttrType::kString;
  if (a.has_t()) return AttrType::kTensor;
  if (a.has_g()) return AttrType::kGraph;
  if (a.has_sparse_tensor()) return AttrType::kSparseTensor;
  if (a.has_tp()) return AttrType::kTypeProto;
  if (a.floats_size()) return AttrType::kFloats;
  if (a.ints_size()) return AttrType::kInts;
  if (a.strings_size()) return AttrType::kStrings;
  if (a.tensors_size()) return AttrType::kTensors;
  if (a.graphs_size()) return AttrType::kGraphs;
  if (a.sparse_tensors_size()) return AttrType::kSparseTensors;
  if (a.type_protos_size()) return AttrType::kTypeProtos;
  return AttrType::kUndefined;
}

Attribute AttributeFromProto(const onnx::AttributeProto& a, const ReadContext& ctx, const std::string& node_desc,
                             int depth) {
  Attribute out;
  out.name = a.name();
  out.doc_string = a.doc_string();
  out.ref_attr_name = a.ref_attr_name();
  const std::string what = node_desc + " attribute " + Quoted(a.name());
  const int raw_type = static_cast<int>(a.type());
  if (raw_type < 0 || raw_type > static_cast<int>(AttrType::kTypeProtos)) {
    ThrowInvalid(what + ": unknown attribute type " + std::to_string(raw_type));
  }
  out.type = raw_type == 0 ? InferAttrType(a) : static_cast<AttrType>(raw_type);
  // protobuf turns an out-of-range enum into an unknown field, so a bad type arrives here as "no type".
  if (out.type == AttrType::kUndefined) ThrowInvalid(what + ": unknown or missing attribute type");
  // All fields are carried over, not only the one `type` names, so nothing is lost on a round trip.
  out.f = a.f();
  out.i = a.i();
  out.s = a.s();
  out.floats.assign(a.floats().begin(), a.floats().end());
  out.ints.assign(a.ints().begin(), a.ints().end());
  out.strings.assign(a.strings().begin(), a.strings().end());
  if (a.has_t()) out.tensors.push_back(TensorFromProto(a.t(), ctx, what));
  for (const auto& t : a.tensors()) out.tensors.push_back(TensorFromProto(t, ctx, what));
  if (a.has_g()) out.graphs.push_back(GraphFromProto(a.g(), ctx, depth + 1));
  for (const auto& g : a.graphs()) out.graphs.push_back(GraphFromProto(g, ctx, depth + 1));
  if (a.has_sparse_tensor()) out.sparse_tensors.push_back(SparseFromProto(a.sparse_tensor(), ctx, what));
  for (const auto& s : a.sparse_tensors()) out.sparse_tensors.push_back(SparseFromProto(s, ctx, what));
  if (a.has_tp()) out.type_protos.push_back(TypeFromProto(a.tp(), what));
  for (const auto& tp : a.type_protos()) out.type_protos.push_back(TypeFromProto(tp, what));
  // A reference to an attribute of the enclosing function carries no value of its own.
  if (out.ref_attr_name.empty() &&
      ((out.type == AttrType::kTensor && out.tensors.size() != 1) ||
       (out.type == AttrType::kGraph && out.graphs.size() != 1) ||
       (out.type == AttrType::kSparseTensor && out.sparse_tensors.size() != 1) ||
       (out.type == AttrType::kTypeProto && out.type_protos.size() != 1))) {
    ThrowInvalid(what + ": declared " + AttrTypeName(out.type) + " but holds no value of that kind");
  }
  return out;
}

Graph GraphFromProto(const onnx::GraphProto& g, const ReadContext& ctx, int depth) {
  if (depth > 64) ThrowInvalid(ctx.source + ": subgraphs nested too deeply");
  Graph out;
  out.name = g.name();
  out.doc_string = g.doc_string();
  for (const auto& v : g.input()) out.inputs.push_back(ValueInfoFromProto(v, "input"));
  for (const auto& v : g.output()) out.outputs.push_back(ValueInfoFromProto(v, "output"));
  for (const auto& v : g.value_info()) out.value_info.push_back(ValueInfoFromProto(v, "value_info"));
  out.initializers.reserve(g.initializer_size());
  for (const auto& t : g.initializer()) {
    if (t.name().empty()) ThrowInvalid(ctx.source + ": an initializer has no name");
    out.initializers.push_back(TensorFromProto(t, ctx, "initializer " + Quoted(t.name())));
  }
  for (const auto& s : g.sparse_initializer()) {
    out.sparse_initializers.push_back(SparseFromProto(s, ctx, "sparse initializer " + Quoted(s.values().name())));
  }
  out.nodes.reserve(g.node_size());
  for (int i = 0; i < g.node_size(); ++i) {
    const auto& n = g.node(i);
    Node node;
    node.name = n.name();
    node.op_type = n.op_type();
    node.domain = n.domain();
    node.doc_string = n.doc_string();
    node.inputs.assign(n.input().begin(), n.input().end());
    node.outputs.assign(n.output().begin(), n.output().end());
    const std::string desc = "node " + node.Describe();
    node.attributes.reserve(n.attribute_size());
    for (const auto& a : n.attribute()) node.attributes.push_back(AttributeFromProto(a, ctx, desc, depth));
    out.nodes.push_back(std::move(node));
  }
  return out;
}

void AttributeToProto(const Attribute& a, onnx::AttributeProto* p) {
  p->set_name(a.name);
  if (!a.doc_string.empty()) p->set_doc_string(a.doc_string);
  if (!a.ref_attr_name.empty()) p->set_ref_attr_name(a.ref_attr_name);
  p->set_type(static_cast<onnx::AttributeProto::AttributeType>(a.type));
  switch (a.type) {
    case AttrType::kFloat: p->set_f(a.f); break;
    case AttrType::kInt: p->set_i(a.i); break;
    case AttrType::kString: p->set_s(a.s); break;
    case AttrType::kTensor:
      if (!a.tensors.empty()) TensorToProto(a.tensors.front(), p->mutable_t());
      break;
    case AttrType::kSparseTensor:
      if (!a.sparse_tensors.empty()) SparseToProto(a.sparse_tensors.front(), p->mutable_sparse_tensor());
      break;
    case AttrType::kTypeProto:
      if (!a.type_protos.empty()) TypeToProto(a.type_protos.front(), p->mutable_tp());
      break;
    case AttrType::kFloats: for (float v : a.floats) p->add_floats(v); break;
    case AttrType::kInts: for (int64_t v : a.ints) p->add_ints(v); break;
    case AttrType::kStrings: for (const auto& v : a.strings) p->add_strings(v); break;
    case AttrType::kTensors: for (const auto& t : a.tensors) TensorToProto(t, p->add_tensors()); break;
    case AttrType::kSparseTensors:
      for (const auto& s : a.sparse_tensors) SparseToProto(s, p->add_sparse_tensors());
      break;
    case AttrType::kTypeProtos: for (const auto& t : a.type_protos) TypeToProto(t, p->add_type_protos()); break;
    case AttrType::kGraph:
    case AttrType::kGraphs:
    case AttrType::kUndefined:
      break;  // graphs are written by the caller, which knows about external data
  }
}

void GraphToProto(const Graph& g, onnx::GraphProto* p, const ExternalSink& sink, bool main_graph) {
  if (!g.name.empty()) p->set_name(g.name);
  if (!g.doc_string.empty()) p->set_doc_string(g.doc_string);
  for (const auto& n : g.nodes) {
    auto* pn = p->add_node();
    for (const auto& i : n.inputs) pn->add_input(i);
    for (const auto& o : n.outputs) pn->add_output(o);
    if (!n.name.empty()) pn->set_name(n.name);
    pn->set_op_type(n.op_type);
    if (!n.domain.empty()) pn->set_domain(n.domain);
    if (!n.doc_string.empty()) pn->set_doc_string(n.doc_string);
    for (const auto& a : n.attributes) {
      auto* pa = pn->add_attribute();
      AttributeToProto(a, pa);
      if (a.type == AttrType::kGraph && !a.graphs.empty()) GraphToProto(a.graphs.front(), pa->mutable_g(), sink, false);
      if (a.type == AttrType::kGraphs) {
        for (const auto& sub : a.graphs) GraphToProto(sub, pa->add_graphs(), sink, false);
      }
    }
  }
  for (const auto& t : g.initializers) {
    auto* pt = p->add_initializer();
    ExternalRef ref;
    if (main_graph && sink && t.dtype() != DType::kString && sink(t, &ref)) {
      pt->set_name(t.name());
      if (!t.doc_string().empty()) pt->set_doc_string(t.doc_string());
      pt->set_data_type(static_cast<int32_t>(t.dtype()));
      for (int64_t d : t.dims()) pt->add_dims(d);
      pt->set_data_location(onnx::TensorProto::EXTERNAL);
      auto add_kv = [pt](const char* k, const std::string& v) {
        auto* kv = pt->add_external_data();
        kv->set_key(k);
        kv->set_value(v);
      };
      add_kv("location", ref.location);
      add_kv("offset", std::to_string(ref.offset));
      add_kv("length", std::to_string(ref.length));
    } else {
      TensorToProto(t, pt);
    }
  }
  for (const auto& s : g.sparse_initializers) SparseToProto(s, p->add_sparse_initializer());
  for (const auto& v : g.inputs) ValueInfoToProto(v, p->add_input());
  for (const auto& v : g.outputs) ValueInfoToProto(v, p->add_output());
  for (const auto& v : g.value_info) ValueInfoToProto(v, p->add_value_info());
}

}  // namespace

// ----------------------------------------------------------------------------------------------
// Public (module-internal) entry points
// ----------------------------------------------------------------------------------------------

Tensor TensorFromProto(const onnx::TensorProto& p, const ReadContext& ctx, const std::string& what) {
  if (!IsKnownDType(p.data_type())) {
    ThrowInvalid(ctx.source + ": " + what + ": unknown element type " + std::to_string(p.data_type()));
  }
  if (p.has_segment()) ThrowInvalid(ctx.source + ": " + what + ": segmented tensors are not supported");
  const DType dtype = static_cast<DType>(p.data_type());
  std::vector<int64_t> dims(p.dims().begin(), p.dims().end());
  int64_t numel = 0;
  size_t expected = 0;
  try {
    numel = ShapeElementCount(dims);
    expected = DTypeStorageBytes(dtype, numel);
  } catch (const Error& e) {
    ThrowInvalid(ctx.source + ": " + what + ": " + e.what());
  }
  const std::string where = ctx.source + ": " + what;

  if (dtype == DType::kString) {
    if (IsExternal(p)) ThrowInvalid(where + ": string tensors cannot be stored as external data");
    CheckTypedCount(p.string_data_size(), numel, where, "string_data");
    Tensor t = Tensor::FromStrings(dims, {p.string_data().begin(), p.string_data().end()}, p.name());
    t.set_doc_string(p.doc_string());
    return t;
  }

  if (IsExternal(p)) {
    // Checked again (ValidateExternalData ran first): this is also reachable for a lone TensorProto.
    const ExternalInfo info = ResolveExternal(p, ctx, where);
    if (expected == 0) {
      Tensor t(dtype, dims, p.name());
      t.set_doc_string(p.doc_string());
      return t;
    }
    if (!ctx.mapped_files) ctx.mapped_files = std::make_shared<ExternalFiles>();
    const auto file = ctx.mapped_files->Map(info, where);
    Tensor t = Tensor::FromBorrowed(dtype, dims, file->data() + info.offset, expected, file, p.name());
    t.set_doc_string(p.doc_string());
    return t;
  }

  if (p.has_raw_data()) {
    if (p.raw_data().size() != expected) {
      ThrowInvalid(where + ": raw_data holds " + std::to_string(p.raw_data().size()) + " bytes, type " +
                   DTypeName(dtype) + " with shape " + ShapeToString(dims) + " needs " + std::to_string(expected));
    }
    Tensor t = Tensor::FromBytes(dtype, dims, p.raw_data().data(), p.raw_data().size(), p.name());
    t.set_doc_string(p.doc_string());
    return t;
  }

  // Typed fields: check the count before allocating anything.
  int have = 0;
  const char* field = "";
  int64_t need = numel;
  switch (dtype) {
    case DType::kFloat: have = p.float_data_size(); field = "float_data"; break;
    case DType::kComplex64: have = p.float_data_size(); field = "float_data"; need = 2 * numel; break;
    case DType::kDouble: have = p.double_data_size(); field = "double_data"; break;
    case DType::kComplex128: have = p.double_data_size(); field = "double_data"; need = 2 * numel; break;
    case DType::kInt64: have = p.int64_data_size(); field = "int64_data"; break;
    case DType::kUInt32:
    case DType::kUInt64: have = p.uint64_data_size(); field = "uint64_data"; break;
    case DType::kUInt4:
    case DType::kInt4: have = p.int32_data_size(); field = "int32_data"; need = (numel + 1) / 2; break;
    default: have = p.int32_data_size(); field = "int32_data"; break;
  }
  CheckTypedCount(have, need, where, field);
  Tensor t(dtype, dims, p.name());
  t.set_doc_string(p.doc_string());
  if (numel == 0) return t;
  switch (dtype) {
    case DType::kFloat:
    case DType::kComplex64: CopyTyped<float>(p.float_data(), &t); break;
    case DType::kDouble:
    case DType::kComplex128: CopyTyped<double>(p.double_data(), &t); break;
    case DType::kInt64: CopyTyped<int64_t>(p.int64_data(), &t); break;
    case DType::kUInt32: CopyTyped<uint32_t>(p.uint64_data(), &t); break;
    case DType::kUInt64: CopyTyped<uint64_t>(p.uint64_data(), &t); break;
    case DType::kInt32: CopyTyped<int32_t>(p.int32_data(), &t); break;
    case DType::kInt16: CopyTyped<int16_t>(p.int32_data(), &t); break;
    case DType::kUInt16:
    case DType::kFloat16:
    case DType::kBFloat16: CopyTyped<uint16_t>(p.int32_data(), &t); break;  // 16-bit patterns
    case DType::kBool:
    case DType::kUInt8:
    case DType::kFloat8E4M3FN:
    case DType::kFloat8E4M3FNUZ:
    case DType::kFloat8E5M2:
    case DType::kFloat8E5M2FNUZ:
    case DType::kUInt4:
    case DType::kInt4: CopyTyped<uint8_t>(p.int32_data(), &t); break;
    case DType::kInt8: CopyTyped<int8_t>(p.int32_data(), &t); break;
    case DType::kString:
    case DType::kUndefined: break;
  }
  return t;
}

void TensorToProto(const Tensor& t, onnx::TensorProto* p) {
  if (!t.name().empty()) p->set_name(t.name());
  if (!t.doc_string().empty()) p->set_doc_string(t.doc_string());
  p->set_data_type(static_cast<int32_t>(t.dtype()));
  for (int64_t d : t.dims()) p->add_dims(d);
  if (t.dtype() == DType::kString) {
    for (const auto& s : t.strings()) p->add_string_data(s);
  } else {
    p->set_raw_data(static_cast<const char*>(t.raw()), t.nbytes());
    t.ReleasePages();
  }
}

void ModelToProtoWithoutWeights(const Model& model, onnx::ModelProto* proto, size_t min_bytes) {
  ModelToProto(model, proto, [min_bytes](const Tensor& t, ExternalRef* ref) {
    if (t.nbytes() < min_bytes) return false;
    ref->location = "(weights not serialized)";
    ref->offset = 0;
    ref->length = t.nbytes();
    return true;
  });
}

void ValidateExternalData(const onnx::ModelProto& proto, const ReadContext& ctx) {
  struct Range {
    uint64_t offset, length;
    std::string what;
  };
  std::map<std::pair<dev_t, ino_t>, std::vector<Range>> by_file;
  std::map<std::pair<dev_t, ino_t>, std::string> location_of;
  VisitTensors(proto.graph(), [&](const onnx::TensorProto& t, const std::string& what) {
    if (!IsExternal(t)) return;
    const ExternalInfo info = ResolveExternal(t, ctx, ctx.source + ": " + what);
    const auto key = std::make_pair(info.device, info.inode);
    by_file[key].push_back({info.offset, info.length, what});
    location_of.emplace(key, info.location);
    if (ctx.external_files != nullptr &&
        std::find(ctx.external_files->begin(), ctx.external_files->end(), info.path) == ctx.external_files->end()) {
      ctx.external_files->push_back(info.path);
    }
  });
  // Two tensors reading the same bytes (even the very same range) are refused: a writer never produces
  // that, and a reader that trusted it could be made to alias or double-count data.
  for (auto& [key, ranges] : by_file) {
    std::stable_sort(ranges.begin(), ranges.end(),
                     [](const Range& a, const Range& b) { return a.offset < b.offset; });
    const Range* reach = nullptr;  // the non-empty range ending furthest so far
    for (const Range& r : ranges) {
      if (r.length == 0) continue;
      if (reach != nullptr && r.offset < reach->offset + reach->length) {
        ThrowInvalid(ctx.source + ": " + r.what + ": external data range [" + std::to_string(r.offset) +
                     ", " + std::to_string(r.offset + r.length) + ") of '" + Printable(location_of[key]) +
                     "' overlaps the range [" + std::to_string(reach->offset) + ", " +
                     std::to_string(reach->offset + reach->length) + ") of " + reach->what);
      }
      if (reach == nullptr || r.offset + r.length > reach->offset + reach->length) reach = &r;
    }
  }
  // Model-local functions and training_info are carried over as they are, never read: external data there
  // would be neither checked nor found next to the output.
  const auto refuse = [&](const std::string& where) {
    return [&ctx, where](const onnx::TensorProto& t, const std::string& what) {
      if (IsExternal(t)) {
        ThrowInvalid(ctx.source + ": " + where + ": " + what +
                     " uses external data, which is not supported there");
      }
    };
  };
  for (const auto& f : proto.functions()) VisitNodeTensors(f.node(), refuse("function " + Quoted(f.name())));
  for (const auto& ti : proto.training_info()) {
    VisitTensors(ti.initialization(), refuse("training_info initialization"));
    VisitTensors(ti.algorithm(), refuse("training_info algorithm"));
  }
}

Model ModelFromProto(const onnx::ModelProto& proto, const ReadContext& ctx) {
  if (!proto.has_graph()) ThrowInvalid(ctx.source + ": model has no graph");
  if (proto.ir_version() <= 0) ThrowInvalid(ctx.source + ": model has no ir_version");
  if (proto.opset_import_size() == 0) ThrowInvalid(ctx.source + ": model has no opset_import");
  ValidateExternalData(proto, ctx);

  Model m;
  m.ir_version = proto.ir_version();
  std::unordered_set<std::string> domains;
  for (const auto& o : proto.opset_import()) {
    const std::string key = o.domain() == "ai.onnx" ? "" : o.domain();
    if (!domains.insert(key).second) {
      ThrowInvalid(ctx.source + ": opset for domain '" + o.domain() + "' is imported twice");
    }
    if (o.version() <= 0) {
      ThrowInvalid(ctx.source + ": opset version " + std::to_string(o.version()) + " for domain '" + o.domain() +
                   "' is not positive");
    }
    m.opset_imports.push_back({o.domain(), o.version()});
  }
  m.producer_name = proto.producer_name();
  m.producer_version = proto.producer_version();
  m.domain = proto.domain();
  m.model_version = proto.model_version();
  m.doc_string = proto.doc_string();
  for (const auto& kv : proto.metadata_props()) m.metadata_props.emplace_back(kv.key(), kv.value());
  for (const auto& f : proto.functions()) m.functions.push_back(f.SerializeAsString());
  for (const auto& t : proto.training_info()) m.training_info.push_back(t.SerializeAsString());
  m.graph = GraphFromProto(proto.graph(), ctx, 0);
  return m;
}

void ModelToProto(const Model& m, onnx::ModelProto* p, const ExternalSink& sink) {
  p->set_ir_version(m.ir_version);
  for (const auto& o : m.opset_imports) {
    auto* po = p->add_opset_import();
    po->set_domain(o.domain);
    po->set_version(o.version);
  }
  if (!m.producer_name.empty()) p->set_producer_name(m.producer_name);
  if (!m.producer_version.empty()) p->set_producer_version(m.producer_version);
  if (!m.domain.empty()) p->set_domain(m.domain);
  if (m.model_version != 0) p->set_model_version(m.model_version);
  if (!m.doc_string.empty()) p->set_doc_string(m.doc_string);
  for (const auto& kv : m.metadata_props) {
    auto* pk = p->add_metadata_props();
    pk->set_key(kv.first);
    pk->set_value(kv.second);
  }
  GraphToProto(m.graph, p->mutable_graph(), sink, true);
  for (const auto& f : m.functions) {
    if (!p->add_functions()->ParseFromString(f)) ThrowInternal("could not re-encode a model-local function");
  }
  for (const auto& t : m.training_info) {
    if (!p->add_training_info()->ParseFromString(t)) ThrowInternal("could not re-encode training_info");
  }
}

}  // namespace compress::io_detail
