// GGUF v2/v3 reader (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md).
// Guarantees: every offset, count and size is checked against the file before use;
// a truncated or corrupt file throws greta::Error naming the file, the byte offset
// or key/tensor concerned, and what was expected -- never a crash or a huge allocation.
// Tensor data is not copied: HostTensor views point into the mapping.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "core/host_tensor.h"
#include "core/mapped_file.h"
#include "formats/aligned_copies.h"

namespace greta {

enum class GGUFType : uint32_t {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
};

struct GGUFValue;
struct GGUFArray {
  GGUFType elem_type = GGUFType::UINT8;
  std::vector<GGUFValue> items;
};

// One metadata value. Integers of any width are held as int64/uint64, floats as double.
struct GGUFValue {
  GGUFType type = GGUFType::UINT8;
  std::variant<int64_t, uint64_t, double, bool, std::string, std::shared_ptr<GGUFArray>> v;

  std::optional<int64_t> as_int() const;   // any integer type (uint64 must fit)
  std::optional<double> as_float() const;  // float or integer types
  std::optional<bool> as_bool() const;
  const std::string* as_string() const;
  const GGUFArray* as_array() const;
};

class GGUFFile {
 public:
  static GGUFFile open(const std::string& path);
  static GGUFFile parse(std::shared_ptr<MappedFile> file);  // throws greta::Error

  uint32_t version() const { return version_; }
  size_t alignment() const { return alignment_; }
  // Byte offset of the tensor data section (aligned end of the tensor infos).
  size_t data_offset() const { return data_offset_; }
  const std::string& path() const { return file_->path(); }

  // Metadata in file order and by key.
  const std::vector<std::pair<std::string, GGUFValue>>& metadata() const { return kv_; }
  const GGUFValue* find(std::string_view key) const;
  std::optional<int64_t> get_int(std::string_view key) const;
  std::optional<double> get_float(std::string_view key) const;
  std::optional<bool> get_bool(std::string_view key) const;
  std::optional<std::string> get_string(std::string_view key) const;
  const GGUFArray* get_array(std::string_view key) const;
  // Required variants throw greta::Error("<file>: missing required key 'k' (expected <type>)").
  int64_t require_int(std::string_view key) const;
  double require_float(std::string_view key) const;
  std::string require_string(std::string_view key) const;

  // Tensors, in file order; HostTensor::shape is outermost first (GGUF dims reversed).
  const std::vector<HostTensor>& tensors() const { return tensors_; }
  const HostTensor* find_tensor(std::string_view name) const;

  const std::shared_ptr<MappedFile>& file() const { return file_; }

  // Limits a parse enforces (public so tests and tools can state them).
  static constexpr int kMaxArrayDepth = 8;  // arrays of arrays, outermost = depth 1
  static constexpr uint32_t kMaxDims = 4;   // GGML_MAX_DIMS

  // What the parser in gguf.cpp produces; parse() moves it into a GGUFFile.
  struct ParseState {
    uint32_t version = 0;
    size_t alignment = 32;
    size_t data_offset = 0;
    std::vector<std::pair<std::string, GGUFValue>> kv;
    std::vector<HostTensor> tensors;
  };

 private:
  std::shared_ptr<MappedFile> file_;
  uint32_t version_ = 0;
  size_t alignment_ = 32;
  size_t data_offset_ = 0;
  std::vector<std::pair<std::string, GGUFValue>> kv_;
  std::map<std::string, size_t, std::less<>> kv_index_;
  std::vector<HostTensor> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
  AlignedCopies aligned_;  // tensors the file's alignment left misaligned (general.alignment < 4)
};

// GGML's name for a tensor type id: "Q5_K (type 13)", or "unknown type 99".
std::string ggml_type_describe(uint32_t type_id);

}  // namespace greta
