#include "compress/io/npy.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "compress/util/error.h"
#include "onnx/onnx_pb.h"
#include "support/test_support.h"

namespace compress {
namespace {

using compress::testing::ReadBytes;
using compress::testing::TempDir;
using compress::testing::WriteBytes;

// The bytes np.save writes before the element data for `dict` (version 1.0, padded to 64 bytes).
std::string NumpyHeaderV1(const std::string& dict) {
  const size_t pad = 64 - (10 + dict.size() + 1) % 64;
  const size_t len = dict.size() + pad + 1;
  std::string out("\x93NUMPY\x01\x00", 8);
  out += static_cast<char>(len & 0xff);
  out += static_cast<char>(len >> 8);
  return out + dict + std::string(pad, ' ') + "\n";
}

std::string NumpyHeaderV2(const std::string& dict, char major) {
  const size_t pad = 64 - (12 + dict.size() + 1) % 64;
  const size_t len = dict.size() + pad + 1;
  std::string out("\x93NUMPY", 6);
  out += major;
  out += '\0';
  for (int i = 0; i < 4; ++i) out += static_cast<char>((len >> (8 * i)) & 0xff);
  return out + dict + std::string(pad, ' ') + "\n";
}

template <typename T>
std::string Bytes(const std::vector<T>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

// Runs `fn`, which must throw Error of `kind` whose message names `path` and contains `fragment`.
template <typename Fn>
void ExpectError(Fn fn, ErrorKind kind, const std::string& path, const std::string& fragment) {
  try {
    fn();
    FAIL() << "expected an error containing '" << fragment << "'";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

class NpyTest : public ::testing::Test {
 protected:
  std::string Write(const std::string& name, const std::string& bytes) {
    const std::string path = tmp_ / name;
    WriteBytes(path, bytes);
    return path;
  }
  void ExpectInvalid(const std::string& name, const std::string& bytes, const std::string& fragment) {
    const std::string path = Write(name, bytes);
    ExpectError([&] { ReadNpy(path); }, ErrorKind::kInvalidInput, path, fragment);
  }
  TempDir tmp_;
};

TEST_F(NpyTest, RoundTripEveryDtype) {
  const std::vector<Tensor> tensors = {
      Tensor::FromVector<float>({2, 3}, {1.5f, -2.25f, 0.0f, 3e38f, -1e-30f, 7.0f}),
      Tensor::FromVector<double>({3}, {3.141592653589793, -1e300, 5e-324}),
      Tensor::FromVector<int64_t>({2, 2}, {INT64_MIN, INT64_MAX, -1, 42}),
      Tensor::FromVector<int32_t>({1, 3}, {INT32_MIN, 0, INT32_MAX}),
      Tensor::FromVector<int16_t>({2}, {-32768, 32767}),
      Tensor::FromVector<int8_t>({4}, {-128, -1, 0, 127}),
      Tensor::FromVector<uint8_t>({2, 1, 2}, {0, 1, 128, 255}),
      Tensor::FromVector<uint16_t>({3}, {0, 1234, 65535}),
      Tensor::FromVector<bool>({3}, {true, false, true}),
      Tensor::FromBytes(DType::kFloat16, {2}, "\x00\x3c\x00\xc0", 4),  // 1.0, -2.0
      Tensor::FromVector<float>({}, {9.5f}),                           // 0-d array
      Tensor(DType::kInt32, {0, 3}),                                   // empty
  };
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i];
    SCOPED_TRACE(std::string(DTypeName(t.dtype())) + ShapeToString(t.dims()));
    const std::string path = tmp_ / ("t" + std::to_string(i) + ".npy");
    WriteNpy(path, t);
    EXPECT_EQ(ReadBytes(path), EncodeNpy(t));

    const NpyInfo info = ReadNpyHeader(path);
    EXPECT_EQ(info.dtype, t.dtype());
    EXPECT_EQ(info.shape, t.dims());
    EXPECT_EQ(info.data_offset % 64, 0u);

    const Tensor back = ReadNpy(path);
    EXPECT_EQ(back.dtype(), t.dtype());
    EXPECT_EQ(back.dims(), t.dims());
    ASSERT_EQ(back.nbytes(), t.nbytes());
    if (t.nbytes() != 0) {
      EXPECT_EQ(std::memcmp(back.raw(), t.raw(), t.nbytes()), 0);
    }
  }
}

TEST_F(NpyTest, EncodesExactlyLikeNumpy) {
  // np.save(f, np.arange(6, dtype='<f4').reshape(2, 3)) with numpy >= 1.23, which leaves 20 spare spaces
  // (21 digits minus the length of "2") for in-place growth of the leading dimension.
  const std::vector<float> values = {0, 1, 2, 3, 4, 5};
  const std::string expected = std::string("\x93NUMPY\x01\x00\x76\x00", 10) +
                               "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }" +
                               std::string(20, ' ') + std::string(38, ' ') + "\n" + Bytes(values);
  ASSERT_EQ(expected.size(), 128u + 24u);
  EXPECT_EQ(EncodeNpy(Tensor::FromVector<float>({2, 3}, values)), expected);

  const std::string scalar = EncodeNpy(Tensor::FromVector<int8_t>({}, {-3}));
  EXPECT_EQ(scalar.substr(10, 56), "{'descr': '|i1', 'fortran_order': False, 'shape': (), } ");
  EXPECT_EQ(scalar.size(), 129u);
  const std::string vec = EncodeNpy(Tensor::FromVector<bool>({5}, {true, false, true, false, true}));
  EXPECT_NE(vec.find("'descr': '|b1'"), std::string::npos);
  EXPECT_NE(vec.find("'shape': (5,), }"), std::string::npos);
}

TEST_F(NpyTest, ReadsNumpyWrittenBytes) {
  // np.save(f, np.array([1, 2, 3], dtype=np.int64)) as written by numpy < 1.23 (no spare spaces).
  const std::string bytes = std::string("\x93NUMPY\x01\x00\x76\x00", 10) +
                            "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }" +
                            std::string(60, ' ') + "\n" + Bytes(std::vector<int64_t>{1, 2, 3});
  ASSERT_EQ(bytes.size(), 128u + 24u);
  const std::string path = Write("numpy.npy", bytes);
  const NpyInfo info = ReadNpyHeader(path);
  EXPECT_EQ(info.data_offset, 128u);
  const Tensor t = ReadNpy(path);
  ASSERT_EQ(t.dtype(), DType::kInt64);
  ASSERT_EQ(t.dims(), (std::vector<int64_t>{3}));
  EXPECT_EQ(t.data<int64_t>()[0], 1);
  EXPECT_EQ(t.data<int64_t>()[1], 2);
  EXPECT_EQ(t.data<int64_t>()[2], 3);
}

TEST_F(NpyTest, AcceptsHeaderVariations) {
  // Keys in any order, double quotes, no trailing comma, '=' byte order, Python 2 long suffixes.
  const std::string path =
      Write("var.npy", NumpyHeaderV1("{\"shape\": (2L,1L), 'fortran_order':False,'descr':'=i2'}") +
                           Bytes(std::vector<int16_t>{-7, 300}));
  const Tensor t = ReadNpy(path);
  ASSERT_EQ(t.dtype(), DType::kInt16);
  EXPECT_EQ(t.dims(), (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(t.data<int16_t>()[0], -7);
  EXPECT_EQ(t.data<int16_t>()[1], 300);

  const std::string one_byte = Write(
      "u1.npy", NumpyHeaderV1("{'descr': '<u1', 'fortran_order': False, 'shape': (2,), }") + "\x05\xff");
  const Tensor u = ReadNpy(one_byte);
  ASSERT_EQ(u.dtype(), DType::kUInt8);
  EXPECT_EQ(u.data<uint8_t>()[1], 255);
}

TEST_F(NpyTest, ReadsVersion2And3Headers) {
  const std::string dict = "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }";
  const std::string data = Bytes(std::vector<double>{0.5, -4.0});
  for (const char major : {'\x02', '\x03'}) {
    const std::string path = Write("v" + std::to_string(major) + ".npy", NumpyHeaderV2(dict, major) + data);
    const NpyInfo info = ReadNpyHeader(path);
    EXPECT_EQ(info.data_offset, 128u);
    const Tensor t = ReadNpy(path);
    ASSERT_EQ(t.dtype(), DType::kDouble);
    EXPECT_EQ(t.data<double>()[0], 0.5);
    EXPECT_EQ(t.data<double>()[1], -4.0);
  }
}

TEST_F(NpyTest, RejectsMalformedFiles) {
  const std::string f4 = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
  const std::string two_floats = Bytes(std::vector<float>{1, 2});
  const std::string good = NumpyHeaderV1(f4) + two_floats;

  ExpectInvalid("magic.npy", "PK\x03\x04 this is a zip file", "expected magic \\x93NUMPY");
  ExpectInvalid("short.npy", "\x93NUM", "expected magic");
  ExpectInvalid("truncated_header.npy", good.substr(0, 40),
                "truncated .npy header: expected 118 header bytes");
  ExpectInvalid("truncated_data.npy", good.substr(0, good.size() - 1),
                "= 8 bytes of data, found 7 (truncated");
  ExpectInvalid("extra_data.npy", good + "x", "found 9 (extra bytes");
  ExpectInvalid("version.npy", std::string("\x93NUMPY\x04\x00", 8) + good.substr(8),
                "version 4.0; expected 1.0");
  ExpectInvalid("big_endian.npy",
                NumpyHeaderV1("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }") + two_floats,
                "big-endian data (descr '>f4')");
  ExpectInvalid("fortran.npy",
                NumpyHeaderV1("{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }") + two_floats,
                "fortran_order is True");
  ExpectInvalid("negative.npy", NumpyHeaderV1("{'descr': '<f4', 'fortran_order': False, 'shape': (2, -1), }"),
                "negative dimension -1");
  ExpectInvalid(
      "overflow.npy",
      NumpyHeaderV1("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }"),
      "overflows");
  ExpectInvalid("huge_dim.npy",
                NumpyHeaderV1("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }"),
                "does not fit in 64 bits");
  ExpectInvalid("descr.npy",
                NumpyHeaderV1("{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }") + two_floats,
                "unsupported .npy descr '<c8'; expected one of <f4");
  ExpectInvalid("wide_pipe.npy",
                NumpyHeaderV1("{'descr': '|f4', 'fortran_order': False, 'shape': (2,), }") + two_floats,
                "unsupported .npy descr '|f4'");
  ExpectInvalid(
      "structured.npy",
      NumpyHeaderV1("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }") + two_floats,
      "structured arrays");
  ExpectInvalid("missing_key.npy", NumpyHeaderV1("{'descr': '<f4', 'shape': (2,), }") + two_floats,
                "lacks key(s) 'fortran_order'");
  ExpectInvalid("extra_key.npy",
                NumpyHeaderV1("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}") + two_floats,
                "unknown key 'x'");
  ExpectInvalid(
      "dup_key.npy",
      NumpyHeaderV1("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}") + two_floats,
      "key 'descr' appears twice");
  ExpectInvalid("not_tuple.npy",
                NumpyHeaderV1("{'descr': '<f4', 'fortran_order': False, 'shape': (2), }") + two_floats,
                "a one-element shape is written (5,)");
  ExpectInvalid("trailing.npy",
                NumpyHeaderV1("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), } junk") + two_floats,
                "after the closing '}'");
}

TEST_F(NpyTest, MissingFileIsAnIOError) {
  const std::string path = tmp_ / "absent.npy";
  ExpectError([&] { ReadNpyHeader(path); }, ErrorKind::kIO, path, "cannot read");
}

TEST_F(NpyTest, RefusesToEncodeUnsupportedTypes) {
  ExpectError([] { EncodeNpy(Tensor::FromStrings({1}, {"a"}, "names")); }, ErrorKind::kInvalidInput,
              "'names'", "cannot be stored as .npy");
  ExpectError([] { EncodeNpy(Tensor(DType::kBFloat16, {2}, "w")); }, ErrorKind::kInvalidInput, "'w'",
              "bfloat16");
}

TEST_F(NpyTest, ReadNpyRowsReadsOnlyTheSlice) {
  std::vector<int32_t> values(10);
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<int32_t>(100 + i);
  const std::string path = tmp_ / "rows.npy";
  WriteNpy(path, Tensor::FromVector<int32_t>({5, 2}, values));
  const NpyInfo info = ReadNpyHeader(path);

  const Tensor mid = ReadNpyRows(path, info, 1, 3);
  ASSERT_EQ(mid.dims(), (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(std::vector<int32_t>(mid.data<int32_t>(), mid.data<int32_t>() + 6),
            (std::vector<int32_t>{102, 103, 104, 105, 106, 107}));
  const Tensor last = ReadNpyRows(path, info, 4, 1);
  EXPECT_EQ(last.dims(), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(last.data<int32_t>()[0], 108);
  EXPECT_EQ(last.data<int32_t>()[1], 109);
  EXPECT_EQ(ReadNpyRows(path, info, 5, 0).dims(), (std::vector<int64_t>{0, 2}));

  ExpectError([&] { ReadNpyRows(path, info, 4, 2); }, ErrorKind::kInvalidInput, path,
              "rows [4, 6) requested");
  ExpectError([&] { ReadNpyRows(path, info, -1, 1); }, ErrorKind::kInvalidInput, path, "requested");
}

TEST_F(NpyTest, TensorProtoFileRoundTrip) {
  const Tensor t = Tensor::FromVector<float>({2, 2}, {1.0f, -2.0f, 3.5f, 0.25f}, "pixel_values");
  const std::string path = tmp_ / "input_0.pb";
  WriteTensorProtoFile(path, t);

  const TensorProtoInfo info = ReadTensorProtoHeader(path);
  EXPECT_EQ(info.name, "pixel_values");
  EXPECT_EQ(info.dtype, DType::kFloat);
  EXPECT_EQ(info.shape, (std::vector<int64_t>{2, 2}));

  const Tensor back = ReadTensorProtoFile(path);
  EXPECT_EQ(back.name(), "pixel_values");
  EXPECT_TRUE(back.SameContent(t));

  const Tensor ints = Tensor::FromVector<int64_t>({3}, {7, -8, 9}, "ids");
  WriteTensorProtoFile(path, ints);
  EXPECT_TRUE(ReadTensorProtoFile(path).SameContent(ints));
}

TEST_F(NpyTest, TensorProtoWithTypedFieldsAndUnpackedDims) {
  onnx::TensorProto p;
  p.set_name("x");
  p.set_data_type(onnx::TensorProto::FLOAT);
  p.add_dims(1);
  p.add_dims(3);
  for (float v : {1.0f, 2.0f, 3.0f}) p.add_float_data(v);
  const std::string path = Write("typed.pb", p.SerializeAsString());
  const TensorProtoInfo info = ReadTensorProtoHeader(path);
  EXPECT_EQ(info.shape, (std::vector<int64_t>{1, 3}));
  const Tensor t = ReadTensorProtoFile(path);
  EXPECT_EQ(t.dims(), (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(t.data<float>()[2], 3.0f);

  // dims written one varint at a time (the unpacked encoding older writers used): field 1, wire type 0.
  const std::string unpacked =
      std::string("\x08\x02\x08\x01\x10\x07\x4a\x10", 8) + Bytes(std::vector<int64_t>{5, 6});
  const std::string unpacked_path = Write("unpacked.pb", unpacked);
  EXPECT_EQ(ReadTensorProtoHeader(unpacked_path).shape, (std::vector<int64_t>{2, 1}));
  const Tensor u = ReadTensorProtoFile(unpacked_path);
  EXPECT_EQ(u.dims(), (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(u.data<int64_t>()[1], 6);
}

TEST_F(NpyTest, RejectsBadTensorProtoFiles) {
  const std::string garbage = Write("garbage.pb", "\xff\xff\xff\xff this is not protobuf");
  ExpectError([&] { ReadTensorProtoFile(garbage); }, ErrorKind::kInvalidInput, garbage,
              "not a valid ONNX TensorProto");
  ExpectError([&] { ReadTensorProtoHeader(garbage); }, ErrorKind::kInvalidInput, garbage,
              "not a valid ONNX TensorProto");

  onnx::TensorProto p;
  p.set_name("x");
  p.set_data_type(onnx::TensorProto::FLOAT);
  p.add_dims(4);
  p.set_raw_data(std::string(12, '\0'));
  const std::string short_raw = Write("short.pb", p.SerializeAsString());
  ExpectError([&] { ReadTensorProtoHeader(short_raw); }, ErrorKind::kInvalidInput, short_raw,
              "raw_data holds 12 bytes, type float32 with shape [4] needs 16");
  ExpectError([&] { ReadTensorProtoFile(short_raw); }, ErrorKind::kInvalidInput, short_raw,
              "raw_data holds 12");

  p.clear_raw_data();
  p.set_data_location(onnx::TensorProto::EXTERNAL);
  auto* kv = p.add_external_data();
  kv->set_key("location");
  kv->set_value("weights.bin");
  const std::string external = Write("external.pb", p.SerializeAsString());
  ExpectError([&] { ReadTensorProtoHeader(external); }, ErrorKind::kInvalidInput, external, "external data");
  ExpectError([&] { ReadTensorProtoFile(external); }, ErrorKind::kInvalidInput, external, "external data");

  onnx::TensorProto unknown;
  unknown.set_data_type(1000);
  const std::string bad_type = Write("type.pb", unknown.SerializeAsString());
  ExpectError([&] { ReadTensorProtoHeader(bad_type); }, ErrorKind::kInvalidInput, bad_type,
              "unknown element type 1000");
}

}  // namespace
}  // namespace compress
