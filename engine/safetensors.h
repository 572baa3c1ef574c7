// engine/safetensors.h: reading and writing the safetensors format, the checkpoint format
// shared with PyTorch (safetensors.torch.save_file / load_file).
//
// Layout: 8-byte little-endian header length N, N bytes of JSON header, then the data buffer.
//   {"__metadata__": {"key": "value", ...},
//    "name": {"dtype": "F32", "shape": [64, 3, 7, 7], "data_offsets": [begin, end]}, ...}
// Offsets are relative to the start of the buffer; tensors are dense, row-major, little-endian
// and together cover the buffer exactly. A scalar has shape [].
//
// What we write is deterministic: tensors in the given order, header keys in that order,
// "__metadata__" first (when there is any), the header padded with spaces to a multiple of 8
// so the buffer starts aligned. The reader accepts any header order and any data order, as
// produced by the Python library.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace unetcu {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

size_t dtype_size(DType dtype);       // bytes per element
const char* dtype_name(DType dtype);  // "F32", as written in headers
// "[64,3,7,7]", "[]" for a scalar: the form used in every shape error message.
std::string shape_string(const std::vector<int64_t>& shape);

using Metadata = std::vector<std::pair<std::string, std::string>>;

// One tensor to write; `data` holds product(shape) * dtype_size(dtype) bytes.
struct TensorView {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const void* data;
};

// The whole file as bytes. Errors on duplicate names, the reserved name "__metadata__",
// negative dimensions and a null data pointer for a non-empty tensor.
std::string encode_safetensors(const std::vector<TensorView>& tensors, const Metadata& metadata);
// encode_safetensors, then write_file_atomic.
void save_safetensors(const std::string& path, const std::vector<TensorView>& tensors,
                      const Metadata& metadata);

struct TensorInfo {
  DType dtype;
  std::vector<int64_t> shape;
  size_t byte_size;  // product(shape) * dtype_size(dtype)
  size_t offset;     // from the start of the data buffer
  int64_t numel() const;
};

// A safetensors file read into memory and fully validated on construction. Every error names
// the file: too short, header length beyond the file, header not JSON or not an object, unknown
// dtype, bad shape, sizes that do not match the shape, offsets out of range, overlapping or
// leaving gaps, metadata that is not string to string.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  // Bytes already in memory; `name` stands in for the file name in error messages.
  static SafetensorsFile from_bytes(std::string bytes, const std::string& name);

  const std::string& path() const { return path_; }
  // Tensor names in the order of the header.
  const std::vector<std::string>& names() const { return names_; }
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;  // throws for an unknown name
  // Start of the tensor's bytes. Alignment is whatever the file gives (our files keep 8
  // bytes; others need not), so copy with memcpy rather than casting to a typed pointer.
  const void* data(const std::string& name) const;
  const Metadata& metadata() const { return metadata_; }

  // Copies a tensor after checking its dtype and shape, e.g.
  //   "<file>: tensor 'x' has shape [64,3,7,7], expected [64,3,3,3]".
  // `dst` must hold product(expected_shape) elements of `dtype`.
  void copy_to(const std::string& name, DType dtype, const std::vector<int64_t>& expected_shape,
               void* dst) const;
  std::vector<float> read_f32(const std::string& name,
                              const std::vector<int64_t>& expected_shape) const;
  std::vector<int64_t> read_i64(const std::string& name,
                                const std::vector<int64_t>& expected_shape) const;

 private:
  SafetensorsFile() = default;
  void parse();

  std::string path_;
  std::string bytes_;
  size_t buffer_start_ = 0;  // 8 + header length
  std::vector<std::string> names_;
  std::unordered_map<std::string, TensorInfo> tensors_;
  Metadata metadata_;
};

}  // namespace unetcu
