// tests/cpu/test_safetensors.cpp: engine/safetensors and engine/fileio. Files that Python's
// safetensors would write are built here byte by byte, so the tests need no Python.
#include <doctest/doctest.h>

#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/fileio.h"
#include "engine/safetensors.h"
#include "test_util.h"

namespace fs = std::filesystem;
using unetcu::DType;
using unetcu::Error;
using unetcu::SafetensorsFile;
using unetcu::TensorView;

namespace {

// A fresh folder per test, removed with everything in it afterwards.
struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    path = fs::temp_directory_path() /
           ("unetcu-test-st-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::permissions(path, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
  std::vector<std::string> listing() const {
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(path)) names.push_back(entry.path().filename());
    std::sort(names.begin(), names.end());
    return names;
  }
};

// A file as the format defines it: u64 little-endian header length, header, data buffer.
std::string raw_file(const std::string& header, const std::string& data) {
  std::string out;
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out += char((n >> (8 * i)) & 0xff);
  return out + header + data;
}

template <typename T>
std::string bytes_of(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

std::string tensor_bytes(const SafetensorsFile& f, const std::string& name) {
  return std::string(static_cast<const char*>(f.data(name)), f.info(name).byte_size);
}

// The message of the Error that reading `bytes` throws, or "" when it reads fine. Any other
// exception type escapes and fails the test.
std::string read_error(const std::string& bytes) {
  try {
    SafetensorsFile::from_bytes(bytes, "bad.safetensors");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

using unetcu::test::contains;

// Two F32 tensors, 'w' [2,2] and 'b' [2], data in that order; for the corruption tests.
std::string small_valid_file() {
  std::vector<float> w = {1, 2, 3, 4}, b = {5, 6};
  return unetcu::encode_safetensors(
      {{"w", DType::F32, {2, 2}, w.data()}, {"b", DType::F32, {2}, b.data()}}, {{"format", "pt"}});
}

}  // namespace

TEST_SUITE("safetensors") {

TEST_CASE("round-trip of every dtype, a scalar, an empty tensor and metadata") {
  TempDir dir;
  std::vector<float> f32 = {1.5f, -2.0f, 3.25f, 0.0f, -0.0f, 1e-30f};
  std::vector<double> f64 = {0.1, -1e300, 42.0};
  std::vector<uint16_t> f16 = {0x3c00, 0xc000};  // raw halves: 1.0, -2.0
  std::vector<uint16_t> bf16 = {0x3f80};         // raw bfloat16: 1.0
  std::vector<int64_t> i64_scalar = {123456789012345};
  std::vector<int32_t> i32 = {-1, 2, -3, 4};
  std::vector<int16_t> i16 = {-32768, 32767};
  std::vector<int8_t> i8 = {-128, 0, 127};
  std::vector<uint8_t> u8 = {0, 1, 255, 7, 9};
  std::vector<uint8_t> flags = {1, 0, 1};
  std::vector<TensorView> tensors = {
      {"encoder.conv1.weight", DType::F32, {2, 3}, f32.data()},
      {"f64", DType::F64, {3}, f64.data()},
      {"half", DType::F16, {2, 1}, f16.data()},
      {"brain", DType::BF16, {1, 1, 1}, bf16.data()},
      {"encoder.bn1.num_batches_tracked", DType::I64, {}, i64_scalar.data()},
      {"i32", DType::I32, {2, 2}, i32.data()},
      {"empty", DType::F32, {0, 4}, nullptr},
      {"i16", DType::I16, {2}, i16.data()},
      {"i8", DType::I8, {3}, i8.data()},
      {"u8", DType::U8, {5}, u8.data()},
      {"flags", DType::BOOL, {3}, flags.data()},
  };
  unetcu::Metadata meta = {{"format", "pt"}, {"epoch", "12"}, {"note", "caf\xc3\xa9 \"quoted\"\n"}};
  const std::string path = dir / "model.safetensors";
  unetcu::save_safetensors(path, tensors, meta);

  SafetensorsFile f(path);
  CHECK(f.path() == path);
  CHECK(f.metadata() == meta);
  REQUIRE(f.names().size() == tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorView& t = tensors[i];
    CAPTURE(t.name);
    CHECK(f.names()[i] == t.name);
    CHECK(f.contains(t.name));
    const unetcu::TensorInfo& info = f.info(t.name);
    CHECK(info.dtype == t.dtype);
    CHECK(info.shape == t.shape);
    size_t expect_bytes = unetcu::dtype_size(t.dtype);
    for (int64_t d : t.shape) expect_bytes *= size_t(d);
    CHECK(info.byte_size == expect_bytes);
    if (expect_bytes) CHECK(std::memcmp(f.data(t.name), t.data, expect_bytes) == 0);
  }
  CHECK_FALSE(f.contains("missing"));
  CHECK(f.info("encoder.bn1.num_batches_tracked").numel() == 1);
  CHECK(f.read_i64("encoder.bn1.num_batches_tracked", {}) == i64_scalar);
  CHECK(f.read_f32("encoder.conv1.weight", {2, 3}) == f32);
  CHECK(f.read_f32("empty", {0, 4}).empty());
  CHECK(dir.listing() == std::vector<std::string>{"model.safetensors"});
}

TEST_CASE("exact bytes: compact header, metadata first, space padding to 8") {
  std::vector<float> w = {1.0f, 2.0f};
  std::string bytes =
      unetcu::encode_safetensors({{"w", DType::F32, {2}, w.data()}}, {{"format", "pt"}});
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})"
      "   ";
  REQUIRE(header.size() == 88);
  CHECK(bytes == raw_file(header, bytes_of(w)));

  // Without metadata there is no "__metadata__" entry; an empty file list is still valid.
  std::string empty = unetcu::encode_safetensors({}, {});
  CHECK(empty == raw_file("{}      ", ""));
  CHECK(SafetensorsFile::from_bytes(empty, "empty").names().empty());
}

TEST_CASE("the header length is a multiple of 8 whatever the names") {
  std::vector<uint8_t> one = {1};
  for (int len = 1; len <= 16; ++len) {
    std::string name(size_t(len), 'x');
    std::string bytes = unetcu::encode_safetensors({{name, DType::U8, {1}, one.data()}}, {});
    uint64_t n = 0;
    std::memcpy(&n, bytes.data(), 8);
    CHECK(n % 8 == 0);
    CHECK(SafetensorsFile::from_bytes(bytes, "p").names().size() == 1);
  }
}

TEST_CASE("same input, same bytes") {
  TempDir dir;
  std::vector<float> a(1000), b(17);
  for (size_t i = 0; i < a.size(); ++i) a[i] = float(i) * 0.5f;
  for (size_t i = 0; i < b.size(); ++i) b[i] = -float(i);
  std::vector<TensorView> tensors = {{"a", DType::F32, {10, 100}, a.data()},
                                     {"b", DType::F32, {17}, b.data()}};
  unetcu::Metadata meta = {{"step", "5"}};
  unetcu::save_safetensors(dir / "1.safetensors", tensors, meta);
  unetcu::save_safetensors(dir / "2.safetensors", tensors, meta);
  std::string first = unetcu::read_file(dir / "1.safetensors");
  CHECK(first == unetcu::read_file(dir / "2.safetensors"));
  CHECK(first == unetcu::encode_safetensors(tensors, meta));
}

TEST_CASE("a file with shuffled header order and data order reads correctly") {
  // As the Python library may write it: keys sorted, data laid out in another order.
  std::vector<float> a = {1, 2, 3};
  std::vector<int64_t> n = {7};
  std::vector<float> z = {9, 8};
  const std::string header =
      R"({"a": {"dtype": "F32", "shape": [3], "data_offsets": [24, 36]},)"
      R"( "__metadata__": {"format": "pt"},)"
      R"( "n": {"data_offsets": [16, 24], "shape": [], "dtype": "I64"},)"
      R"( "z": {"shape": [2, 1], "dtype": "F32", "data_offsets": [8, 16]},)"
      R"( "zero": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]},)"
      R"( "u": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]}})";
  std::string data = std::string("abcdefgh") + bytes_of(z) + bytes_of(n) + bytes_of(a);
  SafetensorsFile f = SafetensorsFile::from_bytes(raw_file(header, data), "shuffled");
  CHECK(f.names() == std::vector<std::string>{"a", "n", "z", "zero", "u"});
  CHECK(f.read_f32("a", {3}) == a);
  CHECK(f.read_i64("n", {}) == n);
  CHECK(f.read_f32("z", {2, 1}) == z);
  CHECK(f.read_f32("zero", {0}).empty());
  CHECK(tensor_bytes(f, "u") == "abcdefgh");
  CHECK(f.metadata() == unetcu::Metadata{{"format", "pt"}});
}

TEST_CASE("typed reads check dtype, shape and name") {
  std::vector<float> w(64 * 3 * 7 * 7, 0.5f);
  std::string bytes = unetcu::encode_safetensors({{"x", DType::F32, {64, 3, 7, 7}, w.data()}}, {});
  SafetensorsFile f = SafetensorsFile::from_bytes(bytes, "ckpt.safetensors");
  CHECK_THROWS_WITH_AS(f.read_f32("x", {64, 3, 3, 3}),
                       "ckpt.safetensors: tensor 'x' has shape [64,3,7,7], expected [64,3,3,3]",
                       Error);
  CHECK_THROWS_WITH_AS(f.read_i64("x", {64, 3, 7, 7}),
                       "ckpt.safetensors: tensor 'x' has dtype F32, expected I64", Error);
  CHECK_THROWS_WITH_AS(f.read_f32("y", {1}), "ckpt.safetensors: no tensor named 'y'", Error);
  CHECK_THROWS_WITH_AS(f.data("y"), "ckpt.safetensors: no tensor named 'y'", Error);
  CHECK(f.read_f32("x", {64, 3, 7, 7}) == w);
}

TEST_CASE("writer refuses bad input") {
  std::vector<float> v = {1};
  CHECK_THROWS_WITH_AS(unetcu::encode_safetensors({{"a", DType::F32, {1}, v.data()},
                                                   {"a", DType::F32, {1}, v.data()}}, {}),
                       "safetensors: duplicate tensor name 'a'", Error);
  CHECK_THROWS_AS(unetcu::encode_safetensors({{"__metadata__", DType::F32, {1}, v.data()}}, {}),
                  Error);
  CHECK_THROWS_AS(unetcu::encode_safetensors({{"a", DType::F32, {-1}, v.data()}}, {}), Error);
  CHECK_THROWS_AS(unetcu::encode_safetensors({{"a", DType::F32, {1}, nullptr}}, {}), Error);
  CHECK_THROWS_AS(unetcu::encode_safetensors({}, {{"k", "1"}, {"k", "2"}}), Error);
}

TEST_CASE("truncation at every length is an error, never a crash") {
  const std::string good = small_valid_file();
  REQUIRE(read_error(good) == "");
  uint64_t header_len = 0;
  std::memcpy(&header_len, good.data(), 8);
  for (size_t len = 0; len < good.size(); ++len) {
    CAPTURE(len);
    std::string message = read_error(good.substr(0, len));
    REQUIRE(message != "");
    CHECK(contains(message, "bad.safetensors: "));
    if (len < 8) CHECK(contains(message, "too short to be a safetensors file"));
    else if (len < 8 + header_len) CHECK(contains(message, "is larger than the file"));
    else if (len < good.size()) CHECK(contains(message, "out of range for a data buffer"));
  }
  // Extra bytes after the last tensor are an error too.
  CHECK(contains(read_error(good + "x"),
                 "the last 1 bytes of the data buffer belong to no tensor"));
}

TEST_CASE("each kind of corruption gives its own message naming the file") {
  const std::string f4 = std::string(4, '\0'), f8 = std::string(8, '\0');
  auto one = [](const std::string& entry) { return R"({"t": )" + entry + "}"; };
  struct Case {
    std::string bytes;
    std::string message;
  };
  const Case cases[] = {
      {"", "bad.safetensors: too short to be a safetensors file (0 bytes)"},
      {std::string(8, '\xff'), "bad.safetensors: header length 18446744073709551615 is larger than "
                               "the file (8 bytes); not a safetensors file, or truncated"},
      {raw_file("{not json}", ""), "bad.safetensors: header is not valid JSON: header:1:2: "
                                   "expected a string key, got 'n'"},
      {raw_file("", ""), "bad.safetensors: header is not valid JSON: header:1:1: expected a value"},
      {raw_file("[]", ""), "bad.safetensors: header is not a JSON object"},
      {raw_file(R"({"t": 1})", ""), "bad.safetensors: tensor 't': entry is not an object"},
      {raw_file(one(R"({"dtype": "F8", "shape": [1], "data_offsets": [0, 1]})"), "x"),
       "bad.safetensors: tensor 't': unknown dtype 'F8'"},
      {raw_file(one(R"({"dtype": "f32", "shape": [1], "data_offsets": [0, 4]})"), f4),
       "bad.safetensors: tensor 't': unknown dtype 'f32'"},
      {raw_file(one(R"({"dtype": 1, "shape": [1], "data_offsets": [0, 4]})"), f4),
       "bad.safetensors: tensor 't': dtype is not a string"},
      {raw_file(one(R"({"shape": [1], "data_offsets": [0, 4]})"), f4),
       "bad.safetensors: tensor 't': needs dtype, shape and data_offsets"},
      {raw_file(one(R"({"dtype": "F32", "shape": [3], "data_offsets": [0, 8]})"), f8),
       "bad.safetensors: tensor 't': holds 8 bytes but F32 shape [3] needs 12"},
      {raw_file(one(R"({"dtype": "F32", "shape": [], "data_offsets": [0, 8]})"), f8),
       "bad.safetensors: tensor 't': holds 8 bytes but F32 shape [] needs 4"},
      {raw_file(one(R"({"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]})"), f8),
       "bad.safetensors: tensor 't': shape [-2] is not a list of non-negative integers"},
      {raw_file(one(R"({"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]})"), f8),
       "bad.safetensors: tensor 't': shape [2.0] is not a list of non-negative integers"},
      {raw_file(one(R"({"dtype": "F32", "shape": "2", "data_offsets": [0, 8]})"), f8),
       "bad.safetensors: tensor 't': shape is not an array"},
      {raw_file(one(R"({"dtype": "F32", "shape": [4611686018427387904, 4],)"
                    R"( "data_offsets": [0, 8]})"),
                f8),
       "bad.safetensors: tensor 't': shape [4611686018427387904,4] is too large"},
      {raw_file(one(R"({"dtype": "F32", "shape": [4], "data_offsets": [0, 16]})"), f8),
       "bad.safetensors: tensor 't': data_offsets [0,16] are out of range for a data buffer of 8 "
       "bytes"},
      {raw_file(one(R"({"dtype": "F32", "shape": [2], "data_offsets": [8, 0]})"), f8),
       "bad.safetensors: tensor 't': data_offsets [8,0] are out of range for a data buffer of 8 "
       "bytes"},
      {raw_file(one(R"({"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]})"), f8),
       "bad.safetensors: tensor 't': data_offsets [-8,0] are out of range for a data buffer of 8 "
       "bytes"},
      {raw_file(one(R"({"dtype": "F32", "shape": [2], "data_offsets": [0, 8, 9]})"), f8),
       "bad.safetensors: tensor 't': data_offsets [0,8,9] is not a pair of integers"},
      {raw_file(one(R"({"dtype": "F32", "shape": [2], "data_offsets": [0, "8"]})"), f8),
       "bad.safetensors: tensor 't': data_offsets [0,\"8\"] is not a pair of integers"},
      {raw_file(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
                R"( "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
                std::string(12, '\0')),
       "bad.safetensors: tensors 'a' and 'b' overlap in the data buffer"},
      {raw_file(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},)"
                R"( "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}})",
                std::string(12, '\0')),
       "bad.safetensors: bytes 4 to 8 of the data buffer belong to no tensor"},
      {raw_file(one(R"({"dtype": "F32", "shape": [1], "data_offsets": [4, 8]})"), f8),
       "bad.safetensors: bytes 0 to 4 of the data buffer belong to no tensor"},
      {raw_file(one(R"({"dtype": "F32", "shape": [1], "data_offsets": [0, 4]})"), f8),
       "bad.safetensors: the last 4 bytes of the data buffer belong to no tensor"},
      {raw_file(R"({"t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},)"
                R"( "t": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", f4),
       "bad.safetensors: header is not valid JSON: header:1:63: duplicate key 't' in object"},
      {raw_file(R"({"__metadata__": {"epoch": 3}})", ""),
       "bad.safetensors: __metadata__ value for 'epoch' is not a string"},
      {raw_file(R"({"__metadata__": ["a"]})", ""),
       "bad.safetensors: __metadata__ is not an object"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.message);
    std::string got = read_error(c.bytes);
    CHECK(got.substr(0, c.message.size()) == c.message);
  }
}

TEST_CASE("random damage to a valid file is an error or a valid read, never a crash") {
  const std::string good = small_valid_file();
  std::mt19937_64 gen(2024);
  int errors = 0;
  for (int iter = 0; iter < 5000; ++iter) {
    std::string bytes = good;
    int flips = 1 + int(gen() % 4);
    for (int k = 0; k < flips; ++k) {
      size_t at = gen() % bytes.size();
      bytes[at] = char(gen() & 0xff);
    }
    if (gen() % 4 == 0) bytes.resize(gen() % bytes.size());
    if (read_error(bytes) != "") ++errors;
  }
  CHECK(errors > 0);
}

TEST_CASE("reading a missing file or a folder says so") {
  TempDir dir;
  CHECK_THROWS_WITH_AS(SafetensorsFile(dir / "nope.safetensors"),
                       ("cannot read " + (dir / "nope.safetensors") + ": no such file").c_str(),
                       Error);
  CHECK_THROWS_WITH_AS(SafetensorsFile(dir.path.string()),
                       ("cannot read " + dir.path.string() + ": is a directory").c_str(), Error);
}

}  // TEST_SUITE

TEST_SUITE("fileio") {

TEST_CASE("write_file_atomic writes, replaces, and leaves no temporary behind") {
  TempDir dir;
  const std::string path = dir / "out.bin";
  unetcu::write_file_atomic(path, std::string("first"));
  CHECK(unetcu::read_file(path) == "first");
  std::string binary("a\0b\xff", 4);
  unetcu::write_file_atomic(path, binary.data(), binary.size());
  CHECK(unetcu::read_file(path) == binary);
  unetcu::write_file_atomic(path, std::string());
  CHECK(unetcu::read_file(path) == "");
  CHECK(dir.listing() == std::vector<std::string>{"out.bin"});

  // A large file crosses many write() calls and read() chunks.
  std::string big(3 << 20, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = char(i * 2654435761u >> 24);
  unetcu::write_file_atomic(path, big);
  CHECK(unetcu::read_file(path) == big);
}

TEST_CASE("write_file_atomic into a missing folder fails with path and reason") {
  TempDir dir;
  const std::string path = dir / "no/such/folder/out.bin";
  try {
    unetcu::write_file_atomic(path, std::string("x"));
    FAIL("no error");
  } catch (const Error& e) {
    std::string message = e.what();
    CHECK(contains(message, "cannot write " + path));
    CHECK(contains(message, "No such file or directory"));
  }
  CHECK(dir.listing().empty());
}

TEST_CASE("a failed rename leaves the target and the folder as they were") {
  TempDir dir;
  fs::create_directories(dir / "target");
  unetcu::write_file_atomic(dir / "target/keep", std::string("kept"));
  try {
    unetcu::write_file_atomic(dir / "target", std::string("new"));
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(contains(e.what(), "cannot write " + (dir / "target") + ": rename from"));
  }
  CHECK(dir.listing() == std::vector<std::string>{"target"});
  CHECK(unetcu::read_file(dir / "target/keep") == "kept");
}

TEST_CASE("a write that fails half-way leaves the old file intact") {
  TempDir dir;
  const std::string path = dir / "ckpt.safetensors";
  unetcu::write_file_atomic(path, std::string("old contents"));

  // Limit file size for this process so that write() fails with EFBIG part-way through;
  // this works for root too, unlike permission tricks.
  struct rlimit saved;
  REQUIRE(getrlimit(RLIMIT_FSIZE, &saved) == 0);
  auto saved_handler = std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit small = saved;
  small.rlim_cur = 4096;
  REQUIRE(setrlimit(RLIMIT_FSIZE, &small) == 0);
  std::string message;
  try {
    unetcu::write_file_atomic(path, std::string(1 << 16, 'n'));
  } catch (const Error& e) {
    message = e.what();
  }
  setrlimit(RLIMIT_FSIZE, &saved);
  std::signal(SIGXFSZ, saved_handler);

  CHECK(contains(message, "cannot write " + path + ": write failed: File too large"));
  CHECK(unetcu::read_file(path) == "old contents");
  CHECK(dir.listing() == std::vector<std::string>{"ckpt.safetensors"});
}

TEST_CASE("read_file errors: missing, folder, unreadable") {
  TempDir dir;
  CHECK_THROWS_WITH_AS(unetcu::read_file(dir / "missing"),
                       ("cannot read " + (dir / "missing") + ": no such file").c_str(), Error);
  CHECK_THROWS_WITH_AS(unetcu::read_file(dir.path.string()),
                       ("cannot read " + dir.path.string() + ": is a directory").c_str(), Error);
  unetcu::write_file_atomic(dir / "secret", std::string("s"));
  ::chmod((dir / "secret").c_str(), 0);
  if (::geteuid() != 0) {  // root reads anything
    CHECK_THROWS_WITH_AS(unetcu::read_file(dir / "secret"),
                         ("cannot read " + (dir / "secret") + ": Permission denied").c_str(),
                         Error);
  }
}

TEST_CASE("read_file reads files whose size is not known in advance") {
  if (fs::exists("/proc/self/status"))
    CHECK(contains(unetcu::read_file("/proc/self/status"), "Pid:"));
}

}  // TEST_SUITE
