// In-memory builders for small GGUF and safetensors files (tests and fuzz seeds).
// They write exactly the bytes the specs describe, with knobs to write them wrong.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/dtype.h"
#include "formats/gguf.h"

namespace greta::test {

struct ByteWriter {
  std::vector<uint8_t> b;
  template <class T>
  void put(T v) {
    uint8_t tmp[sizeof(T)];
    std::memcpy(tmp, &v, sizeof(T));
    b.insert(b.end(), tmp, tmp + sizeof(T));
  }
  void u8(uint8_t v) { put(v); }
  void u32(uint32_t v) { put(v); }
  void u64(uint64_t v) { put(v); }
  void str(std::string_view s) {
    u64(s.size());
    b.insert(b.end(), s.begin(), s.end());
  }
  void raw(const std::vector<uint8_t>& v) { b.insert(b.end(), v.begin(), v.end()); }
};

// GGML type ids used by the tests.
enum GGML : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kBF16 = 30
};

// Bytes of a tensor with GGUF dims (innermost first) of a supported type.
inline size_t ggml_nbytes(uint32_t type, const std::vector<uint64_t>& dims) {
  int64_t be = 1;
  size_t bb = 1;
  switch (type) {
    case kF32: bb = 4; break;
    case kF16:
    case kBF16: bb = 2; break;
    case kQ4_0:
      be = 32;
      bb = 18;
      break;
    case kQ4_1:
      be = 32;
      bb = 20;
      break;
    case kQ5_0:
      be = 32;
      bb = 22;
      break;
    case kQ5_1:
      be = 32;
      bb = 24;
      break;
    case kQ8_0:
      be = 32;
      bb = 34;
      break;
    case kQ4_K:
      be = 256;
      bb = 144;
      break;
    case kQ5_K:
      be = 256;
      bb = 176;
      break;
    case kQ6_K:
      be = 256;
      bb = 210;
      break;
    default: bb = 1; break;
  }
  uint64_t n = 1;
  for (uint64_t d : dims) n *= d;
  return size_t(n / be) * bb;
}

class GGUFBuilder {
 public:
  uint32_t version = 3;
  uint32_t magic = 0x46554747;
  uint64_t alignment = 32;                     // where build() places data
  std::optional<uint64_t> n_tensors_override;  // lie about counts
  std::optional<uint64_t> n_kv_override;

  struct Tensor {
    std::string name;
    std::vector<uint64_t> dims;  // GGUF order: innermost first
    uint32_t type;
    std::vector<uint8_t> data;
    std::optional<uint64_t> offset;  // written instead of the computed one
  };
  std::vector<Tensor> tensors;

  // A key with an already-encoded value (type id + bytes).
  void kv_raw(const std::string& key, uint32_t type, const std::vector<uint8_t>& value) {
    kv_.str(key);
    kv_.u32(type);
    kv_.raw(value);
    ++n_kv_;
  }
  template <class T>
  void kv(const std::string& key, GGUFType type, T v) {
    ByteWriter w;
    w.put(v);
    kv_raw(key, uint32_t(type), w.b);
  }
  void kv_string(const std::string& key, const std::string& s) {
    ByteWriter w;
    w.str(s);
    kv_raw(key, uint32_t(GGUFType::STRING), w.b);
  }
  void set_alignment(uint32_t a) {
    alignment = a;
    kv("general.alignment", GGUFType::UINT32, a);
  }
  // Adds a tensor whose bytes are a recognizable pattern (seeded by its index).
  Tensor& tensor(const std::string& name, std::vector<uint64_t> dims, uint32_t type, size_t nbytes = 0) {
    if (nbytes == 0) nbytes = ggml_nbytes(type, dims);
    Tensor t{name, std::move(dims), type, std::vector<uint8_t>(nbytes), std::nullopt};
    for (size_t i = 0; i < nbytes; ++i) t.data[i] = uint8_t(i * 7 + tensors.size() * 31 + 1);
    tensors.push_back(std::move(t));
    return tensors.back();
  }

  std::vector<uint8_t> build() const {
    ByteWriter w;
    w.u32(magic);
    w.u32(version);
    w.u64(n_tensors_override.value_or(tensors.size()));
    w.u64(n_kv_override.value_or(n_kv_));
    w.raw(kv_.b);
    std::vector<uint64_t> offs;
    uint64_t cur = 0;
    for (const Tensor& t : tensors) {
      cur = (cur + alignment - 1) / alignment * alignment;
      offs.push_back(cur);
      cur += t.data.size();
    }
    for (size_t i = 0; i < tensors.size(); ++i) {
      const Tensor& t = tensors[i];
      w.str(t.name);
      w.u32(uint32_t(t.dims.size()));
      for (uint64_t d : t.dims) w.u64(d);
      w.u32(t.type);
      w.u64(t.offset.value_or(offs[i]));
    }
    if (tensors.empty()) return w.b;
    while (w.b.size() % alignment) w.u8(0);
    size_t start = w.b.size();
    w.b.resize(start + cur, 0);  // no trailing padding: the last tensor ends the file
    for (size_t i = 0; i < tensors.size(); ++i)
      std::memcpy(w.b.data() + start + offs[i], tensors[i].data.data(), tensors[i].data.size());
    return w.b;
  }

 private:
  ByteWriter kv_;
  uint64_t n_kv_ = 0;
};

class SafetensorsBuilder {
 public:
  struct Tensor {
    std::string name, dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> data;
  };
  std::vector<Tensor> tensors;
  std::map<std::string, std::string> metadata;

  Tensor& tensor(const std::string& name, const std::string& dtype, std::vector<int64_t> shape) {
    size_t es = dtype == "F32" ? 4 : dtype == "I64" ? 8 : dtype == "F8_E4M3" ? 1 : 2;
    size_t n = 1;
    for (int64_t d : shape) n *= size_t(d);
    Tensor t{name, dtype, std::move(shape), std::vector<uint8_t>(n * es)};
    for (size_t i = 0; i < t.data.size(); ++i) t.data[i] = uint8_t(i * 13 + tensors.size() * 29 + 3);
    tensors.push_back(std::move(t));
    return tensors.back();
  }

  // The JSON header build() would write, for tests that edit it before writing.
  nlohmann::json header() const {
    nlohmann::json h = nlohmann::json::object();
    uint64_t off = 0;
    for (const Tensor& t : tensors) {
      h[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {off, off + t.data.size()}}};
      off += t.data.size();
    }
    if (!metadata.empty()) h["__metadata__"] = metadata;
    return h;
  }
  std::vector<uint8_t> build() const { return build_with(header().dump()); }
  // Writes `header_text` (padded with spaces to 8 bytes, as the reference writer does) + data.
  std::vector<uint8_t> build_with(std::string header_text) const {
    while (header_text.size() % 8) header_text += ' ';
    ByteWriter w;
    w.u64(header_text.size());
    w.b.insert(w.b.end(), header_text.begin(), header_text.end());
    for (const Tensor& t : tensors) w.raw(t.data);
    return w.b;
  }
};

// A fresh directory under the system temp dir, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = std::filesystem::temp_directory_path() /
            ("greta_formats_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }
  void write(const std::string& name, const std::vector<uint8_t>& bytes) const {
    std::ofstream f(path_ / name, std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  }
  void write(const std::string& name, const std::string& text) const {
    write(name, std::vector<uint8_t>(text.begin(), text.end()));
  }

 private:
  std::filesystem::path path_;
};

}  // namespace greta::test
