#include <gtest/gtest.h>

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

}  // namespace
}  // namespace compress
