#include <gtest/gtest.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "compress/io/onnx_io.h"
#include "compress/util/error.h"
#include "onnx/onnx_pb.h"
#include "support/test_support.h"

namespace compress {
namespace {

using testing::TempDir;

Model ModelWithBigWeight() {
  Model m = testing::TinyModel();
  // A 64x64 weight (16 KiB) next to the tiny W and b, so a threshold can tell them apart.
  std::vector<float> big(64 * 64);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<float>(i) * 0.5f;
  m.graph.initializers.push_back(Tensor::FromVector<float>({64, 64}, big, "big"));
  m.graph.outputs.push_back({"big", TypeInfo::Tensor(DType::kFloat, {Dim::Fixed(64), Dim::Fixed(64)}), ""});
  return m;
}

onnx::ModelProto ReadProto(const std::string& path) {
  onnx::ModelProto p;
  EXPECT_TRUE(p.ParseFromString(testing::ReadBytes(path)));
  return p;
}

TEST(ExternalData, WritesLargeTensorsAlignedAndReadsThemBack) {
  TempDir dir;
  const Model m = ModelWithBigWeight();
  SaveOptions opt;
  opt.external_data = SaveOptions::ExternalData::kAlways;
  opt.external_threshold = 1024;
  const SaveResult r = SaveModel(m, dir / "m.onnx", opt);
  EXPECT_EQ(r.external_path, dir / "m.onnx.data");
  EXPECT_EQ(r.external_bytes, 64u * 64u * 4u);  // only "big" crosses the threshold; offset 0 needs no padding
  EXPECT_EQ(std::filesystem::file_size(dir / "m.onnx.data"), r.external_bytes);

  const onnx::ModelProto p = ReadProto(dir / "m.onnx");
  int external = 0;
  for (const auto& t : p.graph().initializer()) {
    if (t.data_location() != onnx::TensorProto::EXTERNAL) continue;
    ++external;
    EXPECT_EQ(t.name(), "big");
    ASSERT_EQ(t.external_data_size(), 3);
    EXPECT_EQ(t.external_data(0).value(), "m.onnx.data");
    EXPECT_EQ(std::stoull(t.external_data(1).value()) % 64, 0u);
  }
  EXPECT_EQ(external, 1);

  LoadInfo info;
  const Model back = LoadModel(dir / "m.onnx", {}, &info);
  ASSERT_EQ(info.external_files.size(), 1u);
  EXPECT_TRUE(back.graph.FindInitializer("big")->SameContent(*m.graph.FindInitializer("big")));
  EXPECT_TRUE(back.graph.FindInitializer("W")->SameContent(*m.graph.FindInitializer("W")));
  EXPECT_TRUE(CheckModelFile(dir / "m.onnx").ok) << CheckModelFile(dir / "m.onnx").message;
}

TEST(ExternalData, SeveralTensorsGetAlignedOffsets) {
  TempDir dir;
  Model m = ModelWithBigWeight();
  m.graph.initializers.push_back(Tensor(DType::kFloat, {3, 100}, "odd"));  // 1200 bytes: next offset needs padding
  m.graph.initializers.push_back(Tensor(DType::kFloat, {40, 10}, "after"));
  SaveOptions opt;
  opt.external_data = SaveOptions::ExternalData::kAlways;
  opt.external_threshold = 1000;
  SaveModel(m, dir / "m.onnx", opt);
  const onnx::ModelProto p = ReadProto(dir / "m.onnx");
  std::vector<uint64_t> offsets;
  for (const auto& t : p.graph().initializer()) {
    if (t.data_location() == onnx::TensorProto::EXTERNAL) offsets.push_back(std::stoull(t.external_data(1).value()));
  }
  EXPECT_EQ(offsets, (std::vector<uint64_t>{0, 16384, 17600}));  // 16384+1200=17584 -> padded to 17600
  const Model back = LoadModel(dir / "m.onnx");
  EXPECT_TRUE(back.graph.FindInitializer("after")->SameContent(*m.graph.FindInitializer("after")));
}

TEST(ExternalData, NeverAndAutoKeepSmallModelsInline) {
  TempDir dir;
  for (auto mode : {SaveOptions::ExternalData::kNever, SaveOptions::ExternalData::kAuto}) {
    SaveOptions opt;
    opt.external_data = mode;
    const SaveResult r = SaveModel(ModelWithBigWeight(), dir / "m.onnx", opt);
    EXPECT_TRUE(r.external_path.empty());
  }
  EXPECT_EQ(testing::ListDir(dir.path()), std::vector<std::string>{"m.onnx"});
}

TEST(ExternalData, ReadsFromSubfolderAndSymlinkInsideFolder) {
  TempDir dir;
  const Model m = ModelWithBigWeight();
  SaveOptions opt;
  opt.external_data = SaveOptions::ExternalData::kAlways;
  SaveModel(m, dir / "m.onnx", opt);
  // Move the data into a sub-folder and point the model there; also reach it through a link that
  // stays inside the folder. Both are legitimate.
  std::filesystem::create_directory(dir / "weights");
  std::filesystem::rename(dir / "m.onnx.data", dir / "weights/w.bin");
  std::filesystem::create_symlink("weights/w.bin", dir / "link.bin");
  for (const std::string location : {"weights/w.bin", "./weights/w.bin", "link.bin"}) {
    onnx::ModelProto p = ReadProto(dir / "m.onnx");
    for (auto& t : *p.mutable_graph()->mutable_initializer()) {
      if (t.data_location() == onnx::TensorProto::EXTERNAL) t.mutable_external_data(0)->set_value(location);
    }
    testing::WriteBytes(dir / "moved.onnx", p.SerializeAsString());
    const Model back = LoadModel(dir / "moved.onnx");
    EXPECT_TRUE(back.graph.FindInitializer("big")->SameContent(*m.graph.FindInitializer("big"))) << location;
  }
}

TEST(ExternalData, ProtectedPathsAreNotOverwritten) {
  TempDir dir;
  SaveModel(testing::TinyModel(), dir / "in.onnx");
  const std::string before = testing::ReadBytes(dir / "in.onnx");
  SaveOptions opt;
  opt.protected_paths = {dir / "in.onnx"};
  try {
    SaveModel(ModelWithBigWeight(), dir / "in.onnx", opt);
    FAIL() << "expected refusal";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUsage);
  }
  EXPECT_EQ(testing::ReadBytes(dir / "in.onnx"), before);
  // The external data file of the output may not replace a protected file either.
  opt.external_data = SaveOptions::ExternalData::kAlways;
  opt.external_file = "in.onnx";
  EXPECT_THROW(SaveModel(ModelWithBigWeight(), dir / "out.onnx", opt), Error);
  EXPECT_EQ(testing::ListDir(dir.path()), std::vector<std::string>{"in.onnx"});
  // Asked explicitly, overwriting is allowed.
  SaveOptions force;
  force.protected_paths = {dir / "in.onnx"};
  force.allow_overwrite = true;
  SaveModel(ModelWithBigWeight(), dir / "in.onnx", force);
  EXPECT_NE(testing::ReadBytes(dir / "in.onnx"), before);
}

TEST(ExternalData, RejectsUnsafeExternalFileName) {
  TempDir dir;
  SaveOptions opt;
  opt.external_data = SaveOptions::ExternalData::kAlways;
  opt.external_file = "../escape.data";
  EXPECT_THROW(SaveModel(ModelWithBigWeight(), dir / "m.onnx", opt), Error);
  EXPECT_TRUE(testing::ListDir(dir.path()).empty());
}

TEST(ExternalData, ModelWithoutFolderCannotUseExternalData) {
  TempDir dir;
  SaveOptions opt;
  opt.external_data = SaveOptions::ExternalData::kAlways;
  SaveModel(ModelWithBigWeight(), dir / "m.onnx", opt);
  EXPECT_THROW(ParseModel(testing::ReadBytes(dir / "m.onnx"), "", "bytes"), Error);
  LoadOptions no_external;
  no_external.load_external_data = false;
  EXPECT_THROW(LoadModel(dir / "m.onnx", no_external), Error);
}

// ------------------------------------------------------------------------------------------------
// Hostile external data: every case is exit code 3 (ErrorKind::kInvalidInput) with one line naming the
// tensor and the location, found before any data file is opened.
// ------------------------------------------------------------------------------------------------

constexpr int kExitInvalid = 3;

// x float32[1024] -> Add(a) -> Add(b) -> y, with a and b (4096 bytes each) as external data in w.bin
// (16384 bytes: a at 0, b at 4096, the rest zeros) unless edited.
struct TwoWeights {
  TempDir dir;
  onnx::ModelProto proto;

  TwoWeights() {
    Model m;
    m.ir_version = 8;
    m.opset_imports = {{"", 17}};
    m.graph.name = "g";
    const TypeInfo type = TypeInfo::Tensor(DType::kFloat, {Dim::Fixed(1024)});
    m.graph.inputs.push_back({"x", type, ""});
    m.graph.outputs.push_back({"y", type, ""});
    std::vector<float> a(1024), b(1024);
    for (size_t i = 0; i < a.size(); ++i) {
      a[i] = static_cast<float>(i);
      b[i] = -static_cast<float>(i) * 0.25f;
    }
    m.graph.initializers.push_back(Tensor::FromVector<float>({1024}, a, "a"));
    m.graph.initializers.push_back(Tensor::FromVector<float>({1024}, b, "b"));
    Node n1;
    n1.name = "add_a";
    n1.op_type = "Add";
    n1.inputs = {"x", "a"};
    n1.outputs = {"h"};
    Node n2;
    n2.name = "add_b";
    n2.op_type = "Add";
    n2.inputs = {"h", "b"};
    n2.outputs = {"y"};
    m.graph.nodes = {n1, n2};
    EXPECT_TRUE(proto.ParseFromString(SerializeModel(m)));
    std::string data(16384, '\0');
    std::memcpy(data.data(), a.data(), 4096);
    std::memcpy(data.data() + 4096, b.data(), 4096);
    testing::WriteBytes(dir / "w.bin", data);
    SetExternal("a", {{"location", "w.bin"}, {"offset", "0"}, {"length", "4096"}});
    SetExternal("b", {{"location", "w.bin"}, {"offset", "4096"}, {"length", "4096"}});
  }

  onnx::TensorProto* Init(const std::string& name) {
    for (auto& t : *proto.mutable_graph()->mutable_initializer()) {
      if (t.name() == name) return &t;
    }
    ADD_FAILURE() << "no initializer " << name;
    return nullptr;
  }

  static void MakeExternal(onnx::TensorProto* t, const std::vector<std::pair<std::string, std::string>>& kv) {
    t->clear_raw_data();
    t->clear_external_data();
    t->set_data_location(onnx::TensorProto::EXTERNAL);
    for (const auto& [k, v] : kv) {
      auto* e = t->add_external_data();
      e->set_key(k);
      e->set_value(v);
    }
  }

  void SetExternal(const std::string& name, const std::vector<std::pair<std::string, std::string>>& kv) {
    MakeExternal(Init(name), kv);
  }
  void SetLocation(const std::string& name, const std::string& location) {
    for (auto& e : *Init(name)->mutable_external_data()) {
      if (e.key() == "location") e.set_value(location);
    }
  }

  std::string Write() {
    testing::WriteBytes(dir / "m.onnx", proto.SerializeAsString());
    return dir / "m.onnx";
  }
};

struct Failure {
  ErrorKind kind = ErrorKind::kInternal;
  std::string message;  // empty when loading succeeded
};

Failure LoadFailure(const std::string& path) {
  try {
    LoadModel(path);
  } catch (const Error& e) {
    return {e.kind(), e.what()};
  }
  return {};
}

// Expects exit code 3 and one line that names the tensor, the location (when given) and `reason`.
void ExpectRefused(const Failure& f, const std::string& tensor, const std::string& location,
                   const std::string& reason) {
  EXPECT_FALSE(f.message.empty()) << "loaded although it should be refused (" << reason << ")";
  EXPECT_EQ(f.kind, ErrorKind::kInvalidInput) << f.message;
  EXPECT_EQ(f.message.find('\n'), std::string::npos) << f.message;
  EXPECT_NE(f.message.find("'" + tensor + "'"), std::string::npos) << f.message;
  if (!location.empty()) {
    EXPECT_NE(f.message.find(location), std::string::npos) << f.message;
  }
  EXPECT_NE(f.message.find(reason), std::string::npos) << f.message;
}

// Records whether a file is opened (inotify IN_OPEN): stat and realpath do not open, reading must.
class OpenWatch {
 public:
  explicit OpenWatch(const std::string& path) : fd_(inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) {
    EXPECT_GE(fd_, 0);
    EXPECT_GE(inotify_add_watch(fd_, path.c_str(), IN_OPEN | IN_ACCESS), 0) << path;
  }
  ~OpenWatch() { ::close(fd_); }
  OpenWatch(const OpenWatch&) = delete;
  OpenWatch& operator=(const OpenWatch&) = delete;
  bool Opened() {
    alignas(inotify_event) char buf[4096];
    bool any = false;
    while (::read(fd_, buf, sizeof(buf)) > 0) any = true;
    return any;
  }

 private:
  int fd_;
};

TEST(HostileExternalData, ValidTwoWeightModelLoadsAndOpensItsFileOnce) {
  TwoWeights tw;
  OpenWatch watch(tw.dir / "w.bin");
  const Model m = LoadModel(tw.Write());
  EXPECT_TRUE(watch.Opened());  // the control for the "never opened" checks below
  EXPECT_FLOAT_EQ(m.graph.FindInitializer("a")->data<float>()[1023], 1023.0f);
  EXPECT_FLOAT_EQ(m.graph.FindInitializer("b")->data<float>()[4], -1.0f);
  EXPECT_TRUE(m.graph.FindInitializer("a")->borrowed());  // mapped, not copied
}

TEST(HostileExternalData, PathsLeavingTheFolder) {
  TwoWeights tw;
  std::filesystem::create_directory(tw.dir / "sub");
  TempDir outside;
  testing::WriteBytes(outside / "w.bin", std::string(16384, '\0'));
  std::filesystem::create_symlink(outside / "w.bin", tw.dir / "link.bin");
  std::filesystem::create_directory_symlink(outside.path(), tw.dir / "linkdir");
  const struct {
    std::string location, reason;
  } cases[] = {
      {outside / "w.bin", "absolute path"},
      {"/dev/zero", "absolute path"},
      {"../w.bin", "contains '..'"},
      {"sub/../w.bin", "contains '..'"},  // would stay inside, still refused: no '..' at all
      {"./sub/../../w.bin", "contains '..'"},
      {"link.bin", "outside the model's folder"},       // symlink to a file outside
      {"linkdir/w.bin", "outside the model's folder"},  // symlinked folder pointing outside
      {"./linkdir/./w.bin", "outside the model's folder"},
  };
  for (const auto& c : cases) {
    tw.SetLocation("b", c.location);
    const std::string model = tw.Write();
    OpenWatch watch(tw.dir / "w.bin");
    OpenWatch watch_outside(outside / "w.bin");
    ExpectRefused(LoadFailure(model), "b", c.location, c.reason);
    EXPECT_FALSE(watch.Opened()) << c.location;
    EXPECT_FALSE(watch_outside.Opened()) << c.location;
  }
}

TEST(HostileExternalData, HardLinksAreRefused) {
  TwoWeights tw;
  TempDir outside;
  testing::WriteBytes(outside / "secret.bin", std::string(16384, '\x5a'));
  // A hard link inside the folder to a file outside: no path check can tell.
  std::filesystem::create_hard_link(outside / "secret.bin", tw.dir / "inside.bin");
  tw.SetLocation("b", "inside.bin");
  ExpectRefused(LoadFailure(tw.Write()), "b", "inside.bin", "2 hard links");
  // Both names inside the folder are refused just the same: the file itself cannot prove where it lives.
  TwoWeights tw2;
  std::filesystem::create_hard_link(tw2.dir / "w.bin", tw2.dir / "w2.bin");
  ExpectRefused(LoadFailure(tw2.Write()), "a", "w.bin", "hard links");
}

TEST(HostileExternalData, RangesPastTheEndOrOverflowing) {
  const struct {
    std::string offset, length, reason;
  } cases[] = {
      {"16385", "4096", "beyond the end"},
      {"14000", "4096", "lies outside"},
      {"18446744073709551615", "4096", "beyond the end"},
      {"8", "18446744073709551615", "overflows"},
      {"18446744073709551616", "4096", "not a valid byte offset"},  // 2^64
      {"-1", "4096", "not a valid byte offset"},
      {"0x10", "4096", "not a valid byte offset"},
      {"8192", "4000", "need 4096"},
  };
  for (const auto& c : cases) {
    TwoWeights tw;
    tw.SetExternal("b", {{"location", "w.bin"}, {"offset", c.offset}, {"length", c.length}});
    const std::string model = tw.Write();
    OpenWatch watch(tw.dir / "w.bin");
    ExpectRefused(LoadFailure(model), "b", "", c.reason);
    EXPECT_FALSE(watch.Opened()) << c.offset << " " << c.length;
  }
}

TEST(HostileExternalData, OverlappingRangesOfOneFileAreRefused) {
  const struct {
    std::string location_b, offset_b, reason;
  } cases[] = {
      {"w.bin", "2048", "overlaps the range [0, 4096) of initializer 'a'"},
      {"w.bin", "0", "overlaps the range [0, 4096) of initializer 'a'"},  // identical ranges
      {"./w.bin", "4092", "overlaps"},                                    // another spelling
  };
  for (const auto& c : cases) {
    TwoWeights tw;
    tw.SetExternal("b", {{"location", c.location_b}, {"offset", c.offset_b}, {"length", "4096"}});
    const std::string model = tw.Write();
    OpenWatch watch(tw.dir / "w.bin");
    ExpectRefused(LoadFailure(model), "b", "w.bin", c.reason);
    EXPECT_FALSE(watch.Opened());
  }
  // Through a symlink inside the folder: the same file.
  TwoWeights tw;
  std::filesystem::create_symlink("w.bin", tw.dir / "alias.bin");
  tw.SetExternal("b", {{"location", "alias.bin"}, {"offset", "0"}, {"length", "4096"}});
  ExpectRefused(LoadFailure(tw.Write()), "b", "", "overlaps the range [0, 4096) of initializer 'a'");
  // Adjacent ranges do not overlap; a different file never does.
  TwoWeights adjacent;
  adjacent.SetExternal("b", {{"location", "w.bin"}, {"offset", "4096"}, {"length", "4096"}});
  EXPECT_EQ(LoadFailure(adjacent.Write()).message, "");
}

TEST(HostileExternalData, DataFileThatIsNotARegularFile) {
  TwoWeights tw;
  std::filesystem::create_directory(tw.dir / "dir.bin");
  ASSERT_EQ(::mkfifo((tw.dir / "fifo.bin").c_str(), 0600), 0);
  const int sock = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(sock, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string sock_path = tw.dir / "sock.bin";
  ASSERT_LT(sock_path.size(), sizeof(addr.sun_path));
  std::strncpy(addr.sun_path, sock_path.c_str(), sizeof(addr.sun_path) - 1);
  ASSERT_EQ(::bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  std::vector<std::pair<std::string, std::string>> cases = {{"dir.bin", "is a directory"},
                                                            {".", "is a directory"},
                                                            {"fifo.bin", "is a FIFO"},
                                                            {"sock.bin", "is a socket"}};
  // A device node inside the folder (needs root; /dev/zero's numbers).
  if (::mknod((tw.dir / "zero.bin").c_str(), S_IFCHR | 0600, makedev(1, 5)) == 0) {
    cases.push_back({"zero.bin", "is a character device"});
  }
  for (const auto& [location, reason] : cases) {
    tw.SetLocation("b", location);
    ExpectRefused(LoadFailure(tw.Write()), "b", location, reason);
  }
  ::close(sock);
}

TEST(HostileExternalData, StrangeLocations) {
  TwoWeights tw;
  std::filesystem::create_symlink("loop.bin", tw.dir / "loop.bin");
  const struct {
    std::string location, shown, reason;
  } cases[] = {
      {std::string("w.bin\0../../etc/passwd", 22), "w.bin\\x00", "contains a NUL byte"},
      {"", "", "has no location"},
      {std::string(5000, 'a'), "aaaa", "longer than 4095"},
      {std::string(300, 'b') + ".bin", "bbbb", "component longer than 255"},
      {"loop.bin", "loop.bin", "cannot be resolved"},
      {"w.bin/inner", "w.bin/inner", "cannot be resolved"},
  };
  for (const auto& c : cases) {
    tw.SetLocation("b", c.location);
    const Failure f = LoadFailure(tw.Write());
    ExpectRefused(f, "b", c.shown, c.reason);
    EXPECT_LT(f.message.size(), 1000u);  // long locations are shortened in the message
  }
  // A control character cannot break the one-line message; a missing file is an I/O error (exit 4).
  tw.SetLocation("b", "w\nx.bin");
  const Failure f = LoadFailure(tw.Write());
  EXPECT_EQ(f.kind, ErrorKind::kIO) << f.message;
  EXPECT_NE(f.message.find("w\\x0ax.bin"), std::string::npos) << f.message;
  EXPECT_EQ(f.message.find('\n'), std::string::npos);
}

// A Constant node in the main graph and one in an If branch read external data: they are checked with
// the initializers, before any data file is opened.
TEST(HostileExternalData, AttributeAndSubgraphTensorsAreCheckedFirst) {
  auto add_constant = [](google::protobuf::RepeatedPtrField<onnx::NodeProto>* nodes, const std::string& name,
                         const std::string& location, const std::string& offset) {
    auto* n = nodes->Add();
    n->set_name(name);
    n->set_op_type("Constant");
    n->add_output(name + "_out");
    auto* a = n->add_attribute();
    a->set_name("value");
    a->set_type(onnx::AttributeProto::TENSOR);
    auto* t = a->mutable_t();
    t->set_data_type(onnx::TensorProto::FLOAT);
    t->add_dims(1024);
    TwoWeights::MakeExternal(t, {{"location", location}, {"offset", offset}, {"length", "4096"}});
  };
  {
    TwoWeights tw;
    add_constant(tw.proto.mutable_graph()->mutable_node(), "c", "../w.bin", "8192");
    const std::string model = tw.Write();
    OpenWatch watch(tw.dir / "w.bin");
    ExpectRefused(LoadFailure(model), "c", "../w.bin", "contains '..'");
    EXPECT_FALSE(watch.Opened());
  }
  {
    TwoWeights tw;  // overlap between a Constant's tensor and an initializer
    add_constant(tw.proto.mutable_graph()->mutable_node(), "c", "w.bin", "6000");
    const std::string model = tw.Write();
    OpenWatch watch(tw.dir / "w.bin");
    ExpectRefused(LoadFailure(model), "c", "w.bin", "overlaps the range [4096, 8192) of initializer 'b'");
    EXPECT_FALSE(watch.Opened());
  }
  {
    TwoWeights tw;  // inside an If branch, after the valid initializers
    auto* n = tw.proto.mutable_graph()->add_node();
    n->set_name("if");
    n->set_op_type("If");
    n->add_input("x");
    n->add_output("if_out");
    auto* a = n->add_attribute();
    a->set_name("then_branch");
    a->set_type(onnx::AttributeProto::GRAPH);
    a->mutable_g()->set_name("then");
    add_constant(a->mutable_g()->mutable_node(), "inner", "sub/../w.bin", "8192");
    const std::string model = tw.Write();
    OpenWatch watch(tw.dir / "w.bin");
    ExpectRefused(LoadFailure(model), "inner", "sub/../w.bin", "contains '..'");
    EXPECT_FALSE(watch.Opened());
  }
  {
    TwoWeights tw;  // a model-local function is carried over unread: external data there is refused
    auto* f = tw.proto.add_functions();
    f->set_name("fn");
    f->set_domain("local");
    add_constant(f->mutable_node(), "in_fn", "w.bin", "8192");
    const std::string model = tw.Write();
    OpenWatch watch(tw.dir / "w.bin");
    ExpectRefused(LoadFailure(model), "in_fn", "", "function 'fn'");
    EXPECT_FALSE(watch.Opened());
  }
}

// The base folder of a model opened through a symlink is the folder of the link (as in ONNX Runtime and
// the onnx package, which take the folder of the path they are given), not the folder of its target.
TEST(HostileExternalData, ModelOpenedThroughASymlinkUsesTheLinksFolder) {
  TwoWeights tw;
  const std::string model = tw.Write();
  TempDir other;
  std::filesystem::create_symlink(model, other / "link.onnx");
  const Failure missing = LoadFailure(other / "link.onnx");
  EXPECT_EQ(missing.kind, ErrorKind::kIO) << missing.message;
  EXPECT_NE(missing.message.find(other.path() + "/w.bin"), std::string::npos) << missing.message;
  std::filesystem::copy_file(tw.dir / "w.bin", other / "w.bin");
  EXPECT_EQ(LoadFailure(other / "link.onnx").message, "");
  // A data symlink next to the link that points back into the target's folder leaves the link's folder.
  std::filesystem::remove(other / "w.bin");
  std::filesystem::create_symlink(tw.dir / "w.bin", other / "w.bin");
  ExpectRefused(LoadFailure(other / "link.onnx"), "a", "w.bin", "outside the model's folder");
}

// Through the binary: exit code 3, one line on stderr naming tensor and location, no output file, the
// input untouched.
TEST(HostileExternalData, CliRefusesWithExitCode3AndWritesNothing) {
  const struct {
    std::string name;
    std::function<void(TwoWeights&)> edit;
    std::string tensor, reason;
  } cases[] = {
      {"hard_link",
       [](TwoWeights& tw) {
         std::filesystem::create_hard_link(tw.dir / "w.bin", tw.dir / "h.bin");
         tw.SetLocation("b", "h.bin");
       },
       "a", "hard links"},
      {"overlap",
       [](TwoWeights& tw) {
         tw.SetExternal("b", {{"location", "w.bin"}, {"offset", "100"}, {"length", "4096"}});
       },
       "b", "overlaps"},
      {"fifo",
       [](TwoWeights& tw) {
         ASSERT_EQ(::mkfifo((tw.dir / "f.bin").c_str(), 0600), 0);
         tw.SetLocation("b", "f.bin");
       },
       "b", "is a FIFO"},
      {"directory",
       [](TwoWeights& tw) {
         std::filesystem::create_directory(tw.dir / "d.bin");
         tw.SetLocation("b", "d.bin");
       },
       "b", "is a directory"},
      {"symlinked_folder",
       [](TwoWeights& tw) {
         std::filesystem::create_directory_symlink("/etc", tw.dir / "etc");
         tw.SetLocation("b", "etc/passwd");
       },
       "b", "outside the model's folder"},
  };
  for (const auto& c : cases) {
    TwoWeights tw;
    c.edit(tw);
    const std::string model = tw.Write();
    const std::vector<std::string> before = testing::ListDir(tw.dir.path());
    const std::string model_bytes = testing::ReadBytes(model),
                      data_bytes = testing::ReadBytes(tw.dir / "w.bin");
    const testing::CommandResult r =
        testing::RunCompress({model, "-o", tw.dir / "out.onnx", "--external-data"});
    EXPECT_EQ(r.exit_code, kExitInvalid) << c.name << ": " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << c.name << ": " << r.err;
    EXPECT_NE(r.err.find("'" + c.tensor + "'"), std::string::npos) << c.name << ": " << r.err;
    EXPECT_NE(r.err.find(c.reason), std::string::npos) << c.name << ": " << r.err;
    EXPECT_EQ(testing::ListDir(tw.dir.path()), before) << c.name;
    EXPECT_EQ(testing::ReadBytes(model), model_bytes);
    EXPECT_EQ(testing::ReadBytes(tw.dir / "w.bin"), data_bytes);
  }
}

// Saving: the external data file is a plain name in the output's folder and is never the model file.
TEST(HostileExternalData, SavingStaysInTheOutputFolder) {
  TempDir dir;
  SaveOptions opt;
  opt.external_data = SaveOptions::ExternalData::kAlways;
  for (const std::string& name :
       std::vector<std::string>{"m.onnx", "sub/w.bin", "..", ".", std::string("w\0.bin", 6)}) {
    opt.external_file = name;
    const std::string msg = testing::ErrorOf([&] { SaveModel(ModelWithBigWeight(), dir / "m.onnx", opt); });
    EXPECT_NE(msg, "") << name;
  }
  EXPECT_TRUE(testing::ListDir(dir.path()).empty());
  // A data file name that is a symlink to a file elsewhere: that file is never written.
  TempDir outside;
  testing::WriteBytes(outside / "victim.bin", "keep");
  std::filesystem::create_symlink(outside / "victim.bin", dir / "w.bin");
  opt.external_file = "w.bin";
  try {
    SaveModel(ModelWithBigWeight(), dir / "m.onnx", opt);
  } catch (const Error&) {
    // Refusing is as good as replacing the link.
  }
  EXPECT_EQ(testing::ReadBytes(outside / "victim.bin"), "keep");
  EXPECT_EQ(testing::ListDir(outside.path()), std::vector<std::string>{"victim.bin"});
}

// Mapped tensors are read in place, never written: changing one copies it, and the file stays as it was.
TEST(HostileExternalData, MappedTensorsAreCopiedOnWrite) {
  TwoWeights tw;
  const std::string data_before = testing::ReadBytes(tw.dir / "w.bin");
  Model m = LoadModel(tw.Write());
  Tensor* a = m.graph.FindInitializer("a");
  ASSERT_TRUE(a->borrowed());
  a->mutable_data<float>()[0] = 42.0f;
  EXPECT_FALSE(a->borrowed());
  EXPECT_EQ(a->data<float>()[0], 42.0f);
  EXPECT_EQ(testing::ReadBytes(tw.dir / "w.bin"), data_before);
  // Saving the model over its own data file (explicitly allowed) leaves the old bytes readable by the
  // tensors still mapped: the new file replaces the name, not the mapped inode.
  SaveOptions opt;
  opt.external_data = SaveOptions::ExternalData::kAlways;
  opt.external_file = "w.bin";
  opt.allow_overwrite = true;
  SaveModel(m, tw.dir / "m2.onnx", opt);
  EXPECT_FLOAT_EQ(m.graph.FindInitializer("b")->data<float>()[4], -1.0f);
  const Model back = LoadModel(tw.dir / "m2.onnx");
  EXPECT_EQ(back.graph.FindInitializer("a")->data<float>()[0], 42.0f);
  EXPECT_FLOAT_EQ(back.graph.FindInitializer("b")->data<float>()[4], -1.0f);
}

}  // namespace
}  // namespace compress
