// engine/safetensors.cpp: safetensors encoder and validating reader (see safetensors.h).
#include "engine/safetensors.h"

#include <algorithm>
#include <cstring>
#include <string_view>
#include <unordered_set>

#include "engine/error.h"
#include "engine/fileio.h"
#include "engine/json.h"

// Tensor bytes are copied as they are, so the host must share the format's byte order.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors I/O assumes a little-endian host");

namespace unetcu {
namespace {

constexpr const char* kMetadataKey = "__metadata__";
constexpr DType kAllDTypes[] = {DType::F64, DType::F32, DType::F16, DType::BF16, DType::I64,
                                DType::I32, DType::I16, DType::I8,  DType::U8,   DType::BOOL};

bool dtype_from_name(const std::string& name, DType* dtype) {
  for (DType d : kAllDTypes) {
    if (name == dtype_name(d)) {
      *dtype = d;
      return true;
    }
  }
  return false;
}

// product(shape) * dtype_size, or false when a dimension is negative or the size overflows.
bool byte_size_of(DType dtype, const std::vector<int64_t>& shape, size_t* bytes) {
  uint64_t n = dtype_size(dtype);
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, uint64_t(d), &n)) return false;
  }
  *bytes = n;
  return true;
}

}  // namespace

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::F64: case DType::I64: return 8;
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: case DType::I16: return 2;
    case DType::I8: case DType::U8: case DType::BOOL: return 1;
  }
  return 0;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::F64: return "F64";
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::I16: return "I16";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::BOOL: return "BOOL";
  }
  return "?";
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// ---- writer -----------------------------------------------------------------------------

std::string encode_safetensors(const std::vector<TensorView>& tensors, const Metadata& metadata) {
  json::Value header{json::Object{}};
  if (!metadata.empty()) {
    json::Value meta{json::Object{}};
    for (const auto& [key, value] : metadata) {
      if (meta.find(key)) fail("safetensors: duplicate metadata key '", key, "'");
      meta.as_object().emplace_back(key, value);
    }
    header.as_object().emplace_back(kMetadataKey, std::move(meta));
  }

  std::unordered_set<std::string> seen;
  std::vector<size_t> sizes;
  size_t offset = 0;
  for (const TensorView& t : tensors) {
    if (t.name == kMetadataKey)
      fail("safetensors: '", kMetadataKey, "' is reserved, not a tensor name");
    if (!seen.insert(t.name).second) fail("safetensors: duplicate tensor name '", t.name, "'");
    size_t bytes = 0;
    if (!byte_size_of(t.dtype, t.shape, &bytes))
      fail("safetensors: tensor '", t.name, "' has an invalid shape ", shape_string(t.shape));
    if (bytes > 0 && !t.data) fail("safetensors: tensor '", t.name, "' has no data");

    json::Array shape(t.shape.begin(), t.shape.end());
    json::Value entry{json::Object{
        {"dtype", dtype_name(t.dtype)},
        {"shape", std::move(shape)},
        {"data_offsets", json::Array{offset, offset + bytes}},
    }};
    header.as_object().emplace_back(t.name, std::move(entry));
    sizes.push_back(bytes);
    offset += bytes;
  }

  // Spaces are JSON whitespace, so padding keeps the header valid while aligning the buffer.
  std::string text = json::dump(header);
  text.append((8 - text.size() % 8) % 8, ' ');

  std::string out;
  out.reserve(8 + text.size() + offset);
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out += char((n >> (8 * i)) & 0xff);
  out += text;
  for (size_t i = 0; i < tensors.size(); ++i)
    out.append(static_cast<const char*>(tensors[i].data), sizes[i]);
  return out;
}

void save_safetensors(const std::string& path, const std::vector<TensorView>& tensors,
                      const Metadata& metadata) {
  write_file_atomic(path, encode_safetensors(tensors, metadata));
}

// ---- reader -----------------------------------------------------------------------------

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path), bytes_(read_file(path)) {
  parse();
}

SafetensorsFile SafetensorsFile::from_bytes(std::string bytes, const std::string& name) {
  SafetensorsFile f;
  f.path_ = name;
  f.bytes_ = std::move(bytes);
  f.parse();
  return f;
}

void SafetensorsFile::parse() {
  const std::string& file = path_;
  if (bytes_.size() < 8)
    fail(file, ": too short to be a safetensors file (", bytes_.size(), " bytes)");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i)
    header_len = (header_len << 8) | static_cast<unsigned char>(bytes_[i]);
  if (header_len > bytes_.size() - 8)
    fail(file, ": header length ", header_len, " is larger than the file (", bytes_.size(),
         " bytes); not a safetensors file, or truncated");
  buffer_start_ = 8 + size_t(header_len);
  const uint64_t buffer_size = bytes_.size() - buffer_start_;

  json::Value header;
  try {
    header = json::parse(std::string_view(bytes_.data() + 8, size_t(header_len)), "header");
  } catch (const Error& e) {
    fail(file, ": header is not valid JSON: ", e.what());
  }
  if (!header.is_object()) fail(file, ": header is not a JSON object");

  for (const auto& [key, value] : header.as_object()) {
    if (key == kMetadataKey) {
      if (!value.is_object()) fail(file, ": ", kMetadataKey, " is not an object");
      for (const auto& [meta_key, meta_value] : value.as_object()) {
        if (!meta_value.is_string())
          fail(file, ": ", kMetadataKey, " value for '", meta_key, "' is not a string");
        metadata_.emplace_back(meta_key, meta_value.as_string());
      }
      continue;
    }

    const std::string where = file + ": tensor '" + key + "'";
    if (!value.is_object()) fail(where, ": entry is not an object");
    const json::Value* dtype = value.find("dtype");
    const json::Value* shape = value.find("shape");
    const json::Value* offsets = value.find("data_offsets");
    if (!dtype || !shape || !offsets) fail(where, ": needs dtype, shape and data_offsets");

    TensorInfo info;
    if (!dtype->is_string()) fail(where, ": dtype is not a string");
    if (!dtype_from_name(dtype->as_string(), &info.dtype))
      fail(where, ": unknown dtype '", dtype->as_string(), "'");

    if (!shape->is_array()) fail(where, ": shape is not an array");
    for (const json::Value& d : shape->as_array()) {
      if (!d.is_integer() || d.as_int64() < 0)
        fail(where, ": shape ", json::dump(*shape), " is not a list of non-negative integers");
      info.shape.push_back(d.as_int64());
    }
    size_t need = 0;
    if (!byte_size_of(info.dtype, info.shape, &need))
      fail(where, ": shape ", shape_string(info.shape), " is too large");

    const json::Array* pair = offsets->is_array() ? &offsets->as_array() : nullptr;
    if (!pair || pair->size() != 2 || !(*pair)[0].is_integer() || !(*pair)[1].is_integer())
      fail(where, ": data_offsets ", json::dump(*offsets), " is not a pair of integers");
    int64_t begin = (*pair)[0].as_int64(), end = (*pair)[1].as_int64();
    if (begin < 0 || end < begin || uint64_t(end) > buffer_size)
      fail(where, ": data_offsets [", begin, ",", end, "] are out of range for a data buffer of ",
           buffer_size, " bytes");
    if (uint64_t(end - begin) != need)
      fail(where, ": holds ", end - begin, " bytes but ", dtype_name(info.dtype), " shape ",
           shape_string(info.shape), " needs ", need);
    info.offset = size_t(begin);
    info.byte_size = need;

    names_.push_back(key);
    tensors_.emplace(key, std::move(info));
  }

  // The tensors must tile the buffer: sorted by offset, each begins where the previous ended.
  std::vector<const std::string*> by_offset;
  for (const std::string& name : names_) by_offset.push_back(&name);
  std::sort(by_offset.begin(), by_offset.end(), [&](const std::string* a, const std::string* b) {
    const TensorInfo& ta = tensors_.at(*a);
    const TensorInfo& tb = tensors_.at(*b);
    return std::make_pair(ta.offset, ta.byte_size) < std::make_pair(tb.offset, tb.byte_size);
  });
  size_t covered = 0;
  const std::string* previous = nullptr;
  for (const std::string* name : by_offset) {
    const TensorInfo& t = tensors_.at(*name);
    if (t.offset < covered)
      fail(file, ": tensors '", *previous, "' and '", *name, "' overlap in the data buffer");
    if (t.offset > covered)
      fail(file, ": bytes ", covered, " to ", t.offset, " of the data buffer belong to no tensor");
    covered = t.offset + t.byte_size;
    previous = name;
  }
  if (covered != buffer_size)
    fail(file, ": the last ", buffer_size - covered,
         " bytes of the data buffer belong to no tensor");
}

const TensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) fail(path_, ": no tensor named '", name, "'");
  return it->second;
}

const void* SafetensorsFile::data(const std::string& name) const {
  return bytes_.data() + buffer_start_ + info(name).offset;
}

void SafetensorsFile::copy_to(const std::string& name, DType dtype,
                              const std::vector<int64_t>& expected_shape, void* dst) const {
  const TensorInfo& t = info(name);
  if (t.dtype != dtype)
    fail(path_, ": tensor '", name, "' has dtype ", dtype_name(t.dtype), ", expected ",
         dtype_name(dtype));
  if (t.shape != expected_shape)
    fail(path_, ": tensor '", name, "' has shape ", shape_string(t.shape), ", expected ",
         shape_string(expected_shape));
  if (t.byte_size > 0) std::memcpy(dst, data(name), t.byte_size);
}

std::vector<float> SafetensorsFile::read_f32(const std::string& name,
                                             const std::vector<int64_t>& expected_shape) const {
  std::vector<float> out(size_t(info(name).numel()));
  copy_to(name, DType::F32, expected_shape, out.data());
  return out;
}

std::vector<int64_t> SafetensorsFile::read_i64(const std::string& name,
                                               const std::vector<int64_t>& expected_shape) const {
  std::vector<int64_t> out(size_t(info(name).numel()));
  copy_to(name, DType::I64, expected_shape, out.data());
  return out;
}

}  // namespace unetcu
