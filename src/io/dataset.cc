#include "compress/io/dataset.h"

#include "compress/util/sha256.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <cctype>

#include "compress/io/npy.h"
#include "compress/util/error.h"
#include "compress/util/fs.h"

namespace compress {

namespace {

namespace stdfs = std::filesystem;

constexpr size_t kMaxLabelsTextBytes = size_t{1} << 30;
constexpr char kTestSetPrefix[] = "test_data_set_";

bool StartsWith(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}
bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
bool IsDataFile(const std::string& name) { return EndsWith(name, ".npy") || EndsWith(name, ".pb"); }
bool Contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

std::string Join(const std::string& dir, const std::string& name) {
  return dir == "/" ? "/" + name : dir + "/" + name;
}

struct Listing {
  std::vector<std::string> files;  // regular files (or links to them)
  std::vector<std::string> folders;
};

// Sorted by bytes so that sample order does not depend on the file system. Names starting with '.' are
// skipped: editors and atomic writers keep their temporary files there.
Listing ListFolder(const std::string& dir) {
  Listing out;
  std::error_code ec;
  stdfs::directory_iterator it(dir, ec);
  if (ec) ThrowIO("cannot list folder '" + dir + "': " + ec.message());
  for (; it != stdfs::directory_iterator(); it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.empty() || name[0] == '.') continue;
    std::error_code type_ec;
    if (it->is_directory(type_ec)) {
      out.folders.push_back(name);
    } else if (it->is_regular_file(type_ec)) {
      out.files.push_back(name);
    }
  }
  if (ec) ThrowIO("cannot list folder '" + dir + "': " + ec.message());
  std::sort(out.files.begin(), out.files.end());
  std::sort(out.folders.begin(), out.folders.end());
  return out;
}

// K of "input_K.pb", or -1 for any other name.
int64_t TestDataInputIndex(const std::string& name) {
  static const std::string kPrefix = "input_", kSuffix = ".pb";
  if (!StartsWith(name, kPrefix) || !EndsWith(name, kSuffix)) return -1;
  const std::string digits = name.substr(kPrefix.size(), name.size() - kPrefix.size() - kSuffix.size());
  if (digits.empty() || digits.size() > 9) return -1;
  int64_t k = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return -1;
    k = k * 10 + (c - '0');
  }
  return k;
}

std::string DimsToString(const std::vector<Dim>& dims, size_t from) {
  std::string s = "[";
  for (size_t i = from; i < dims.size(); ++i) s += (i > from ? "," : "") + dims[i].ToString();
  return s + "]";
}

// The shape of one sample: the file's shape without the batch axis when it holds a batch.
std::vector<int64_t> SampleDims(const std::vector<int64_t>& shape, bool batched, int axis) {
  std::vector<int64_t> dims = shape;
  if (batched && axis >= 0) dims.erase(dims.begin() + axis);
  return dims;
}

// The declared shape without the batch axis ("[16,96]"), and with N there ("[N,16,96]", "[2,N,64]").
std::string SampleShapeString(const std::vector<Dim>& dims, int axis) {
  std::string s = "[";
  bool first = true;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (static_cast<int>(i) == axis) continue;
    s += (first ? "" : ",") + dims[i].ToString();
    first = false;
  }
  return s + "]";
}
std::string BatchShapeString(const std::vector<Dim>& dims, int axis) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) {
    s += (i > 0 ? "," : "") + (static_cast<int>(i) == axis ? std::string("N") : dims[i].ToString());
  }
  return s + "]";
}

struct FileHeader {
  bool is_npy = true;
  DType dtype = DType::kUndefined;
  std::vector<int64_t> shape;
  uint64_t data_offset = 0;
  std::string tensor_name;  // .pb only
};

FileHeader ReadFileHeader(const std::string& path) {
  FileHeader h;
  h.is_npy = EndsWith(path, ".npy");
  if (h.is_npy) {
    const NpyInfo info = ReadNpyHeader(path);
    h.dtype = info.dtype;
    h.shape = info.shape;
    h.data_offset = info.data_offset;
  } else {
    TensorProtoInfo info = ReadTensorProtoHeader(path);
    h.dtype = info.dtype;
    h.shape = std::move(info.shape);
    h.tensor_name = std::move(info.name);
  }
  return h;
}

// Whether the file holds a batch (full rank, `axis` = rows) rather than one sample (the declared shape
// without `axis`); throws when it fits neither.
bool CheckFileFitsInput(const std::string& path, const InputSpec& input, int axis, const FileHeader& h) {
  const size_t rank = input.shape.size();
  bool fits = h.dtype == input.dtype;
  const bool batched = rank > 0 && h.shape.size() == rank;
  if (fits) {
    if (rank == 0) {
      fits = h.shape.empty();
    } else if (!batched && h.shape.size() != rank - 1) {
      fits = false;
    } else {
      for (size_t k = 0, f = 0; k < rank && fits; ++k) {
        if (static_cast<int>(k) == axis) {
          if (batched) ++f;  // any number of samples
          continue;
        }
        const Dim& d = input.shape[k];
        fits = !d.value || *d.value == h.shape[f];
        ++f;
      }
    }
  }
  if (!fits) {
    const std::string declared = std::string(DTypeName(input.dtype)) + DimsToString(input.shape, 0);
    const std::string forms = rank == 0 ? "one scalar per file"
                                        : "one sample " + SampleShapeString(input.shape, axis) + " or a batch " +
                                              BatchShapeString(input.shape, axis);
    ThrowInvalid(path + ": input '" + input.name + "' expects " + declared + " (" + forms + "), got " +
                 DTypeName(h.dtype) + ShapeToString(h.shape));
  }
  if (batched && h.shape[static_cast<size_t>(axis)] == 0) {
    ThrowInvalid(path + ": holds a batch of 0 samples for input '" + input.name + "'; expected at least one");
  }
  return batched;
}

// Axis `axis` of `dims` splits the elements into outer blocks of dims[axis] rows of `inner` elements.
void AxisExtents(const std::vector<int64_t>& dims, int axis, int64_t* outer, int64_t* inner) {
  *outer = 1;
  *inner = 1;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (static_cast<int>(i) < axis) *outer *= dims[i];
    if (static_cast<int>(i) > axis) *inner *= dims[i];
  }
}

// Bytes per element of a type that can be sliced by rows (not the packed 4-bit types, not strings).
size_t ElemBytes(DType t) {
  const int bits = DTypeBits(t);
  if (bits <= 0 || bits % 8 != 0) ThrowInvalid(std::string("cannot batch tensors of element type ") + DTypeName(t));
  return static_cast<size_t>(bits / 8);
}

bool LooksLikeBatchName(const std::string& name) {
  std::string lower;
  for (char c : name) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return lower.find("batch") != std::string::npos || lower == "n";
}

std::vector<int64_t> LabelsFromNpy(const std::string& path) {
  const Tensor t = ReadNpy(path);
  if (t.dtype() != DType::kInt64 && t.dtype() != DType::kInt32) {
    ThrowInvalid(path + ": labels must be int64 or int32, found " + DTypeName(t.dtype()));
  }
  if (!(t.rank() == 1 || (t.rank() == 2 && t.dims()[1] == 1))) {
    ThrowInvalid(path + ": labels must have shape [N] or [N,1], found " + ShapeToString(t.dims()));
  }
  std::vector<int64_t> labels(static_cast<size_t>(t.numel()));
  for (size_t i = 0; i < labels.size(); ++i) {
    labels[i] = t.dtype() == DType::kInt64 ? t.data<int64_t>()[i] : t.data<int32_t>()[i];
  }
  return labels;
}

std::vector<int64_t> LabelsFromText(const std::string& path) {
  const std::string text = ReadFileBytes(path, kMaxLabelsTextBytes);
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    const size_t first = line.find_first_not_of(" \t\r");
    const size_t last = line.find_last_not_of(" \t\r");
    lines.push_back(first == std::string::npos ? std::string() : line.substr(first, last - first + 1));
    start = end + 1;
  }
  // Blank lines at the end are what editors leave behind; one in the middle would shift every later label.
  while (!lines.empty() && lines.back().empty()) lines.pop_back();
  std::vector<int64_t> labels;
  labels.reserve(lines.size());
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string& line = lines[i];
    const std::string where = path + ":" + std::to_string(i + 1);
    if (line.empty()) ThrowInvalid(where + ": empty line; expected one integer label per line");
    const char* begin = line.data() + (line[0] == '+' ? 1 : 0);
    int64_t value = 0;
    const auto [ptr, ec] = std::from_chars(begin, line.data() + line.size(), value);
    if (ec != std::errc() || ptr != line.data() + line.size()) {
      ThrowInvalid(where + ": expected an integer label, found '" + line.substr(0, 40) + "'");
    }
    labels.push_back(value);
  }
  return labels;
}

}  // namespace

std::string InputSpec::ToString() const {
  TypeInfo type = TypeInfo::Tensor(dtype, shape);
  type.has_shape = has_shape;
  return "input '" + name + "' " + type.ToString();
}

std::vector<InputSpec> ModelInputSpecs(const Model& model) {
  std::vector<InputSpec> specs;
  for (const ValueInfo* v : model.graph.RealInputs()) {
    if (v->type.kind != TypeInfo::Kind::kTensor) {
      ThrowInvalid("model input '" + v->name + "' has type " + v->type.ToString() +
                   "; only tensor inputs can be fed from data files");
    }
    InputSpec spec;
    spec.name = v->name;
    spec.dtype = v->type.elem_type;
    spec.shape = v->type.shape;
    spec.has_shape = v->type.has_shape;
    specs.push_back(std::move(spec));
  }
  return specs;
}

int BatchLayout::OutputAxis(const std::vector<Dim>& shape) const {
  if (!batch_dim.empty()) {
    for (size_t i = 0; i < shape.size(); ++i) {
      if (!shape[i].value && shape[i].param == batch_dim) return static_cast<int>(i);
    }
  }
  if (fixed_batch > 0) {
    for (size_t i = 0; i < shape.size(); ++i) {
      if (shape[i].value && *shape[i].value == fixed_batch) return static_cast<int>(i);
    }
  }
  return 0;
}

BatchLayout InferBatchLayout(const std::vector<InputSpec>& inputs) {
  BatchLayout layout;
  layout.input_axes.assign(inputs.size(), -1);
  std::vector<size_t> batched;  // inputs of rank >= 1
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].shape.empty()) batched.push_back(i);
  }
  if (batched.empty()) {
    layout.fixed_batch = 1;  // nothing to stack samples along: one sample per run
    return layout;
  }
  // Sets every batched input's axis to the first of its dims `match` accepts; false when one has none.
  const auto assign = [&](const std::function<bool(const Dim&)>& match) {
    std::vector<int> axes;
    for (size_t i : batched) {
      const auto& shape = inputs[i].shape;
      const auto it = std::find_if(shape.begin(), shape.end(), match);
      if (it == shape.end()) return false;
      axes.push_back(static_cast<int>(it - shape.begin()));
    }
    for (size_t k = 0; k < batched.size(); ++k) layout.input_axes[batched[k]] = axes[k];
    return true;
  };
  const std::vector<Dim>& first = inputs[batched[0]].shape;
  if (batched.size() > 1) {
    // 1. A symbolic dim every batched input declares; names that say "batch" first.
    for (int pass = 0; pass < 2; ++pass) {
      for (const Dim& d : first) {
        if (d.value || d.param.empty() || (pass == 0 && !LooksLikeBatchName(d.param))) continue;
        if (assign([&](const Dim& o) { return !o.value && o.param == d.param; })) {
          layout.batch_dim = d.param;
          return layout;
        }
      }
    }
    // 2. Exactly one unnamed free dim per input.
    const auto unnamed = [](const Dim& o) { return !o.value && o.param.empty(); };
    if (std::all_of(batched.begin(), batched.end(), [&](size_t i) {
          return std::count_if(inputs[i].shape.begin(), inputs[i].shape.end(), unnamed) == 1;
        })) {
      assign(unnamed);
      return layout;
    }
    // 3. A fixed size every batched input declares: the model's fixed batch.
    for (const Dim& d : first) {
      if (!d.value) continue;
      const int64_t v = *d.value;
      if (assign([&](const Dim& o) { return o.value && *o.value == v; })) {
        layout.fixed_batch = v;
        return layout;
      }
    }
  }
  // 4. The first axis.
  // Fixed when every input declares the same size there.
  const int64_t fixed = first[0].value.value_or(0);
  bool same = fixed > 0;
  for (size_t i : batched) {
    layout.input_axes[i] = 0;
    same = same && inputs[i].shape[0].value.value_or(0) == fixed;
  }
  if (same) layout.fixed_batch = fixed;
  if (!first[0].value) layout.batch_dim = first[0].param;
  return layout;
}

Tensor SliceAlongAxis(const Tensor& t, int axis, int64_t first, int64_t count) {
  if (axis < 0 || axis >= t.rank() || first < 0 || count < 0 || first > t.dims()[static_cast<size_t>(axis)] ||
      count > t.dims()[static_cast<size_t>(axis)] - first) {
    ThrowInternal("slice [" + std::to_string(first) + ", " + std::to_string(first + count) + ") along axis " +
                  std::to_string(axis) + " of " + ShapeToString(t.dims()) + " is out of range");
  }
  int64_t outer = 0, inner = 0;
  AxisExtents(t.dims(), axis, &outer, &inner);
  const int64_t rows = t.dims()[static_cast<size_t>(axis)];
  std::vector<int64_t> dims = t.dims();
  dims[static_cast<size_t>(axis)] = count;
  Tensor out(t.dtype(), std::move(dims), t.name());
  const size_t block = static_cast<size_t>(count * inner) * ElemBytes(t.dtype());
  const size_t row_bytes = static_cast<size_t>(inner) * ElemBytes(t.dtype());
  const char* src = static_cast<const char*>(t.raw());
  char* dst = static_cast<char*>(out.mutable_raw());
  for (int64_t o = 0; o < outer && block > 0; ++o) {
    std::memcpy(dst + static_cast<size_t>(o) * block,
                src + static_cast<size_t>(o * rows + first) * row_bytes, block);
  }
  return out;
}

Tensor ConcatAlongAxis(const std::vector<Tensor>& pieces, int axis) {
  if (pieces.empty()) ThrowInternal("nothing to concatenate");
  if (pieces.size() == 1) return pieces[0];
  const Tensor& head = pieces[0];
  if (axis < 0 || axis >= head.rank()) {
    ThrowInternal("cannot concatenate " + ShapeToString(head.dims()) + " along axis " + std::to_string(axis));
  }
  std::vector<int64_t> dims = head.dims();
  dims[static_cast<size_t>(axis)] = 0;
  for (const Tensor& p : pieces) {
    std::vector<int64_t> a = p.dims(), b = head.dims();
    if (p.dtype() != head.dtype() || a.size() != b.size()) {
      ThrowInternal("cannot concatenate " + ShapeToString(a) + " and " + ShapeToString(b));
    }
    a[static_cast<size_t>(axis)] = b[static_cast<size_t>(axis)] = 0;
    if (a != b) ThrowInternal("cannot concatenate " + ShapeToString(p.dims()) + " and " + ShapeToString(head.dims()));
    dims[static_cast<size_t>(axis)] += p.dims()[static_cast<size_t>(axis)];
  }
  int64_t outer = 0, inner = 0;
  AxisExtents(dims, axis, &outer, &inner);
  Tensor out(head.dtype(), std::move(dims), head.name());
  const size_t elem = ElemBytes(head.dtype());
  char* dst = static_cast<char*>(out.mutable_raw());
  for (int64_t o = 0; o < outer; ++o) {
    for (const Tensor& p : pieces) {
      const size_t block = static_cast<size_t>(p.dims()[static_cast<size_t>(axis)] * inner) * elem;
      if (block == 0) continue;
      std::memcpy(dst, static_cast<const char*>(p.raw()) + static_cast<size_t>(o) * block, block);
      dst += block;
    }
  }
  return out;
}

Dataset Dataset::Open(const std::string& dir, const std::vector<InputSpec>& inputs,
                      const DatasetOptions& options) {
  Dataset ds;
  ds.dir_ = dir;
  while (ds.dir_.size() > 1 && ds.dir_.back() == '/') ds.dir_.pop_back();
  ds.inputs_ = inputs;
  if (inputs.empty()) ThrowInvalid("the model has no inputs to feed with the data in '" + ds.dir_ + "'");
  for (const auto& in : inputs) {
    if (!in.has_shape) {
      ThrowInvalid(in.ToString() + " has no declared shape, so samples cannot be told from batches in '" +
                   ds.dir_ + "'");
    }
    if (in.dtype == DType::kString || !IsKnownDType(static_cast<int32_t>(in.dtype))) {
      ThrowInvalid(in.ToString() + " cannot be fed from data files (element type " + DTypeName(in.dtype) +
                   ")");
    }
  }
  ds.batching_ = InferBatchLayout(inputs);
  if (!FileExists(ds.dir_)) ThrowIO("data folder '" + ds.dir_ + "' does not exist");
  if (!IsDirectory(ds.dir_)) ThrowIO("'" + ds.dir_ + "' is not a folder; expected a folder of data files");
  const Listing top = ListFolder(ds.dir_);

  std::string labels_path = options.labels_file;
  if (labels_path.empty()) {
    const bool npy = Contains(top.files, "labels.npy"), txt = Contains(top.files, "labels.txt");
    if (npy && txt) {
      ThrowInvalid(ds.dir_ + ": both labels.npy and labels.txt exist; keep one or name the labels file " +
                   "explicitly");
    }
    if (npy) labels_path = Join(ds.dir_, "labels.npy");
    if (txt) labels_path = Join(ds.dir_, "labels.txt");
  }
  const auto is_labels_file = [&](const std::string& path) {
    return BaseName(path) == "labels.npy" || (!labels_path.empty() && SameFile(path, labels_path));
  };

  const auto add_source = [&](Record* rec, size_t input, const std::string& path, const FileHeader& h) {
    Source& s = rec->sources[input];
    s.path = path;
    s.is_npy = h.is_npy;
    s.axis = ds.batching_.input_axes[input];
    s.batched = CheckFileFitsInput(path, ds.inputs_[input], s.axis, h);
    s.data_offset = h.data_offset;
    s.dtype = h.dtype;
    s.shape = h.shape;
    if (s.axis < 0) {
      // A rank-0 input's value decides which samples may share a batch: read it now (a few bytes).
      const Tensor t = h.is_npy ? ReadNpy(path) : ReadTensorProtoFile(path);
      s.scalar.assign(static_cast<const char*>(t.raw()), t.nbytes());
    }
  };
  // Every batched input of a record feeds the same samples, so all must hold the same number of rows
  // along their batch axes. A rank-0 input's value applies to every sample of the record.
  const auto finish_record = [&](Record rec, const std::string& where) {
    size_t head = rec.sources.size();
    rec.rows = 1;
    for (size_t i = 0; i < rec.sources.size(); ++i) {
      const Source& s = rec.sources[i];
      if (s.axis < 0) continue;
      const int64_t rows = s.batched ? s.shape[static_cast<size_t>(s.axis)] : 1;
      if (head == rec.sources.size()) {
        head = i;
        rec.rows = rows;
      } else if (rows != rec.rows) {
        ThrowInvalid(where + ": input '" + inputs[head].name + "' has " + std::to_string(rec.rows) +
                     " sample(s) (" + BaseName(rec.sources[head].path) + ") but input '" + inputs[i].name +
                     "' has " + std::to_string(rows) + " (" + BaseName(s.path) + "); expected the same number" +
                     " along each input's batch axis");
      }
    }
    rec.first_sample = ds.num_samples_;
    ds.num_samples_ += rec.rows;
    ds.records_.push_back(std::move(rec));
  };

  std::vector<std::string> test_sets;
  for (const auto& f : top.folders) {
    if (StartsWith(f, kTestSetPrefix)) test_sets.push_back(f);
  }
  const bool top_test_inputs = std::any_of(top.files.begin(), top.files.end(),
                                           [](const std::string& f) { return TestDataInputIndex(f) >= 0; });
  std::vector<std::string> flat_files;
  for (const auto& f : top.files) {
    if (IsDataFile(f) && !is_labels_file(Join(ds.dir_, f))) flat_files.push_back(f);
  }

  if (!test_sets.empty() || top_test_inputs) {
    ds.layout_ = "onnx-test-data";
    const std::vector<std::string> folders = test_sets.empty() ? std::vector<std::string>{""} : test_sets;
    for (const auto& name : folders) {
      const std::string folder = name.empty() ? ds.dir_ : Join(ds.dir_, name);
      Record rec;
      rec.name = name.empty() ? BaseName(ds.dir_) : name;
      rec.sources.resize(inputs.size());
      std::vector<std::string> given_by(inputs.size());
      for (const auto& f : ListFolder(folder).files) {
        const int64_t k = TestDataInputIndex(f);
        if (k < 0) continue;  // output_K.pb holds reference outputs, not inputs
        const std::string path = Join(folder, f);
        const FileHeader h = ReadFileHeader(path);
        size_t input = inputs.size();
        for (size_t i = 0; i < inputs.size(); ++i) {
          if (!h.tensor_name.empty() && inputs[i].name == h.tensor_name) input = i;
        }
        if (input == inputs.size()) {
          if (static_cast<size_t>(k) >= inputs.size()) {
            ThrowInvalid(path + ": tensor '" + h.tensor_name +
                         "' names no model input and the model has no input #" + std::to_string(k) +
                         " (it has " + std::to_string(inputs.size()) + ")");
          }
          input = static_cast<size_t>(k);
        }
        if (!given_by[input].empty()) {
          ThrowInvalid(folder + ": input '" + inputs[input].name + "' is given twice, by " + given_by[input] +
                       " and " + f);
        }
        given_by[input] = f;
        add_source(&rec, input, path, h);
      }
      for (size_t i = 0; i < inputs.size(); ++i) {
        if (given_by[i].empty()) {
          ThrowInvalid(folder + ": no file for input '" + inputs[i].name + "'; expected input_" +
                       std::to_string(i) + ".pb or an input_K.pb whose tensor is named '" + inputs[i].name +
                       "'");
        }
      }
      finish_record(std::move(rec), folder);
    }
  } else if (inputs.size() == 1 && !flat_files.empty()) {
    ds.layout_ = "files";
    for (const auto& f : flat_files) {
      const std::string path = Join(ds.dir_, f);
      Record rec;
      rec.name = f;
      rec.sources.resize(1);
      add_source(&rec, 0, path, ReadFileHeader(path));
      finish_record(std::move(rec), path);
    }
  } else if (!top.folders.empty()) {
    ds.layout_ = "per-input-folders";
    for (const auto& name : top.folders) {
      const std::string folder = Join(ds.dir_, name);
      const Listing listing = ListFolder(folder);
      Record rec;
      rec.name = name;
      rec.sources.resize(inputs.size());
      for (size_t i = 0; i < inputs.size(); ++i) {
        const std::string npy = inputs[i].name + ".npy", pb = inputs[i].name + ".pb";
        const bool has_npy = Contains(listing.files, npy), has_pb = Contains(listing.files, pb);
        if (has_npy && has_pb) {
          ThrowInvalid(folder + ": both " + npy + " and " + pb + " exist for input '" + inputs[i].name +
                       "'; expected one");
        }
        if (!has_npy && !has_pb) {
          ThrowInvalid(folder + ": no file for input '" + inputs[i].name + "'; expected " + npy + " or " +
                       pb);
        }
        const std::string path = Join(folder, has_npy ? npy : pb);
        add_source(&rec, i, path, ReadFileHeader(path));
      }
      finish_record(std::move(rec), folder);
    }
  } else if (!flat_files.empty()) {
    std::string names, files;
    for (const auto& in : inputs) {
      names += (names.empty() ? "'" : ", '") + in.name + "'";
      files += (files.empty() ? "" : ", ") + in.name + ".npy";
    }
    ThrowInvalid(ds.dir_ + ": the model has " + std::to_string(inputs.size()) + " inputs (" + names +
                 "), so flat data files are ambiguous; expected one sub-folder per record holding " + files +
                 " (or .pb), or test_data_set_*/input_K.pb");
  } else {
    ThrowInvalid(ds.dir_ +
                 ": no data files found; expected *.npy or *.pb files (one model input), sub-folders "
                 "holding <input>.npy per record, or test_data_set_*/input_K.pb");
  }

  if (!labels_path.empty()) {
    ds.labels_ = EndsWith(labels_path, ".npy") ? LabelsFromNpy(labels_path) : LabelsFromText(labels_path);
    if (static_cast<int64_t>(ds.labels_.size()) != ds.num_samples_) {
      ThrowInvalid(labels_path + ": holds " + std::to_string(ds.labels_.size()) + " labels but '" + ds.dir_ +
                   "' holds " + std::to_string(ds.num_samples_) + " samples; expected one label per sample");
    }
  }
  return ds;
}

Tensor Dataset::ReadSourceRows(const Source& s, size_t input, int64_t first, int64_t count) const {
  Tensor t;
  if (s.is_npy && s.batched && s.axis == 0) {
    NpyInfo info;
    info.dtype = s.dtype;
    info.shape = s.shape;
    info.data_offset = s.data_offset;
    t = ReadNpyRows(s.path, info, first, count);
  } else {
    t = s.is_npy ? ReadNpy(s.path) : ReadTensorProtoFile(s.path);
    if (t.dtype() != s.dtype || t.dims() != s.shape) {
      ThrowInvalid(s.path + ": changed while in use: expected " + DTypeName(s.dtype) +
                   ShapeToString(s.shape) + ", found " + DTypeName(t.dtype()) + ShapeToString(t.dims()));
    }
    if (!s.batched && s.axis >= 0) {
      std::vector<int64_t> dims = t.dims();
      dims.insert(dims.begin() + s.axis, 1);
      t.Reshape(std::move(dims));
    }
    if (s.batched && (first != 0 || count != s.shape[static_cast<size_t>(s.axis)])) {
      t = SliceAlongAxis(t, s.axis, first, count);
    }
  }
  t.set_name(inputs_[input].name);
  return t;
}

bool Dataset::Compatible(size_t a, size_t b) const {
  for (size_t i = 0; i < inputs_.size(); ++i) {
    const Source& x = records_[a].sources[i];
    const Source& y = records_[b].sources[i];
    if (x.axis < 0 ? x.scalar != y.scalar
                   : SampleDims(x.shape, x.batched, x.axis) != SampleDims(y.shape, y.batched, y.axis)) {
      return false;
    }
  }
  return true;
}

std::vector<Tensor> Dataset::ReadSamples(int64_t first, int64_t count) const {
  if (first < 0 || count <= 0 || first > num_samples_ || count > num_samples_ - first) {
    ThrowInvalid(dir_ + ": samples [" + std::to_string(first) + ", " + std::to_string(first + count) +
                 ") requested; the data holds samples [0, " + std::to_string(num_samples_) + ")");
  }
  struct Piece {
    size_t record;
    int64_t first;  // row inside the record
    int64_t count;
  };
  std::vector<Piece> pieces;
  auto it = std::upper_bound(records_.begin(), records_.end(), first,
                             [](int64_t sample, const Record& r) { return sample < r.first_sample; });
  size_t r = static_cast<size_t>(it - records_.begin()) - 1;
  for (int64_t pos = first; pos < first + count; ++r) {
    const Record& rec = records_[r];
    const int64_t row = pos - rec.first_sample;
    const int64_t n = std::min(rec.rows - row, first + count - pos);
    pieces.push_back({r, row, n});
    pos += n;
  }

  std::vector<Tensor> out;
  out.reserve(inputs_.size());
  for (size_t i = 0; i < inputs_.size(); ++i) {
    // Shapes (and rank-0 values) are known from opening: refuse a mixed batch before reading any data.
    const Source& head = records_[pieces[0].record].sources[i];
    const std::vector<int64_t> sample = SampleDims(head.shape, head.batched, head.axis);
    for (const Piece& p : pieces) {
      const Source& s = records_[p.record].sources[i];
      const std::string where = dir_ + ": samples " + std::to_string(first) + " (" + head.path + ") and " +
                                std::to_string(records_[p.record].first_sample + p.first) + " (" + s.path +
                                ") of input '" + inputs_[i].name + "'";
      if (head.axis < 0 && s.scalar != head.scalar) {
        ThrowInvalid(where + " hold different values; the input has no batch dimension, so samples with " +
                     "different values cannot share a batch");
      }
      const std::vector<int64_t> other = SampleDims(s.shape, s.batched, s.axis);
      if (other != sample) {
        ThrowInvalid(where + " have shapes " + ShapeToString(sample) + " and " + ShapeToString(other) +
                     "; samples whose free dimensions differ cannot share a batch (use batch size 1)");
      }
    }
    if (pieces.size() == 1 || head.axis < 0) {
      out.push_back(ReadSourceRows(head, i, pieces[0].first, head.axis < 0 ? 1 : pieces[0].count));
      continue;
    }
    std::vector<Tensor> parts;
    parts.reserve(pieces.size());
    for (const Piece& p : pieces) parts.push_back(ReadSourceRows(records_[p.record].sources[i], i, p.first, p.count));
    out.push_back(ConcatAlongAxis(parts, head.axis));
  }
  return out;
}

BatchPlan Dataset::PlanBatches(int64_t total, int64_t batch) const {
  if (batch <= 0) ThrowUsage("batch size must be positive, got " + std::to_string(batch));
  total = total > 0 ? std::min(total, num_samples_) : num_samples_;
  BatchPlan plan;
  plan.batch = batching_.BatchSize(batch);
  if (batching_.fixed_batch > 0) {
    const int64_t f = batching_.fixed_batch;
    for (int64_t first = 0; first + f <= total; first += f) plan.batches.push_back({first, f});
    plan.samples = total / f * f;
    plan.skipped = total - plan.samples;
    if (plan.samples == 0) {
      ThrowInvalid(dir_ + ": " + std::to_string(total) + " sample(s) to run (the folder holds " +
                   std::to_string(num_samples_) + "), fewer than the model's fixed batch of " + std::to_string(f) +
                   "; expected at least " + std::to_string(f));
    }
    return plan;
  }
  size_t r = 0;
  for (int64_t pos = 0; pos < total;) {
    while (records_[r].first_sample + records_[r].rows <= pos) ++r;
    const size_t head = r;
    SampleRange range{pos, 0};
    while (true) {
      const Record& rec = records_[r];
      const int64_t n = std::min({rec.first_sample + rec.rows - pos, total - pos, batch - range.count});
      range.count += n;
      pos += n;
      if (range.count == batch || pos == total) break;
      ++r;  // the record is used up: does the next one fit with this batch?
      if (!Compatible(head, r)) break;
    }
    plan.batches.push_back(range);
  }
  plan.samples = total;
  return plan;
}

std::vector<Tensor> Dataset::ReadRecord(size_t i) const {
  const Record& rec = records_.at(i);
  std::vector<Tensor> out;
  out.reserve(rec.sources.size());
  for (size_t k = 0; k < rec.sources.size(); ++k) out.push_back(ReadSourceRows(rec.sources[k], k, 0, rec.rows));
  return out;
}

std::vector<std::string> Dataset::files() const {
  std::vector<std::string> paths;
  for (const auto& rec : records_) {
    for (const auto& s : rec.sources) paths.push_back(s.path);
  }
  return paths;
}

namespace {

std::string RelativeTo(const std::string& dir, const std::string& path) {
  if (!dir.empty() && path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 &&
      path[dir.size()] == '/') {
    return path.substr(dir.size() + 1);
  }
  return BaseName(path);
}

}  // namespace

std::string DatasetSha256(const Dataset& data) {
  Sha256 sha;
  for (const auto& path : data.files()) {
    const std::string rel = RelativeTo(data.dir(), path);
    sha.Update(rel.data(), rel.size() + 1);  // with its terminating NUL: names cannot run into bytes
    sha.Update(Sha256OfFile(path));
  }
  if (data.has_labels()) {
    sha.Update("labels", 7);
    sha.Update(data.labels().data(), data.labels().size() * sizeof(int64_t));
  }
  return sha.HexDigest();
}

}  // namespace compress
