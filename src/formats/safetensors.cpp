// safetensors parser. Layout: u64 little-endian header length N, N bytes of JSON
// {"name": {"dtype": "F16", "shape": [..], "data_offsets": [begin, end]}, ..., "__metadata__": {..}},
// then the data section; offsets are relative to its start (byte 8 + N).
// nlohmann::json exceptions never leave this file: they become greta::Error.
#include "formats/safetensors.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <limits>
#include <optional>
#include <set>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace greta {

namespace {

using nlohmann::json;

// Real headers are a few hundred KB even for 70B models; the cap keeps a corrupt
// length from making us parse (or allocate for) gigabytes of "JSON".
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;
// A header nests three levels ({"name": {"shape": [...]}}), an index two. Parsed JSON costs
// tens of bytes per value more than its text, so a hostile header (30 MB of '[') is bounded in
// nesting and in values too, each about ten per tensor.
constexpr int kMaxJsonDepth = 16;
constexpr size_t kMaxJsonValues = size_t(1) << 20;

bool dtype_from_name(const std::string& s, DType* out) {
  if (s == "F32") {
    *out = DType::F32;
    return true;
  }
  if (s == "F16") {
    *out = DType::F16;
    return true;
  }
  if (s == "BF16") {
    *out = DType::BF16;
    return true;
  }
  // Quantized checkpoints: fp8 weights, and the int32 words AWQ / GPTQ pack 4-bit values into.
  if (s == "F8_E4M3") {
    *out = DType::F8_E4M3;
    return true;
  }
  if (s == "I32") {
    *out = DType::I32;
    return true;
  }
  return false;
}

// Parses JSON text; any syntax error becomes greta::Error prefixed by `where`.
// dup_top_key receives the first repeated top-level key (nlohmann would silently keep the last).
json parse_json(const char* begin, const char* end, const std::string& where, std::string* dup_top_key) {
  std::set<std::string> seen;
  size_t values = 0;
  // Called before a container is allocated, so the limits hold before the memory is spent.
  auto cb = [&](int depth, json::parse_event_t ev, json& parsed) {
    if (ev == json::parse_event_t::key && depth == 1 && parsed.is_string() && dup_top_key->empty()) {
      if (!seen.insert(parsed.get_ref<const std::string&>()).second) *dup_top_key = parsed.get<std::string>();
    }
    if ((ev == json::parse_event_t::object_start || ev == json::parse_event_t::array_start) && depth >= kMaxJsonDepth)
      throw Error(where + ": invalid JSON: nested deeper than " + std::to_string(kMaxJsonDepth) +
                  " levels (a safetensors header nests 3)");
    if (ev != json::parse_event_t::object_end && ev != json::parse_event_t::array_end && ++values > kMaxJsonValues)
      throw Error(where + ": JSON of more than " + std::to_string(kMaxJsonValues) +
                  " values (about ten per tensor; expected a safetensors header)");
    return true;
  };
  try {
    return json::parse(begin, end, cb, /*allow_exceptions=*/true);
  } catch (const json::exception& e) {
    throw Error(where + ": invalid JSON: " + e.what());
  }
}

// A non-negative JSON integer, or nullopt (negative, fractional, not a number).
std::optional<uint64_t> as_count(const json& j) {
  if (j.is_number_unsigned()) return j.get<uint64_t>();
  if (j.is_number_integer() && j.get<int64_t>() >= 0) return uint64_t(j.get<int64_t>());
  return std::nullopt;
}

}  // namespace

SafetensorsFile SafetensorsFile::open(const std::string& path) { return parse(MappedFile::open(path)); }

SafetensorsFile SafetensorsFile::parse(std::shared_ptr<MappedFile> file) {
  const std::string& fname = file->path();
  const size_t size = file->size();
  if (size < 8)
    throw Error(fname + ": at byte 0: truncated: file of " + std::to_string(size) +
                " bytes is too short for the 8-byte header length (expected a safetensors file)");
  uint64_t hlen;
  std::memcpy(&hlen, file->data(), 8);  // little-endian, as is every host we target
  if (hlen > kMaxHeaderBytes)
    throw Error(fname + ": at byte 0: header length " + std::to_string(hlen) + " exceeds the limit of " +
                std::to_string(kMaxHeaderBytes) + " bytes (corrupt or not a safetensors file)");
  if (hlen > size - 8)
    throw Error(fname + ": at byte 0: header length " + std::to_string(hlen) + " runs past the end of the file (" +
                std::to_string(size - 8) + " bytes follow it)");
  const char* hbeg = reinterpret_cast<const char*>(file->data() + 8);
  std::string dup;
  json header = parse_json(hbeg, hbeg + hlen, fname + ": header (bytes 8.." + std::to_string(8 + hlen) + ")", &dup);
  if (!dup.empty()) throw Error(fname + ": header names '" + dup + "' twice (expected unique tensor names)");
  if (!header.is_object()) throw Error(fname + ": header is not a JSON object (expected {\"tensor\": {...}, ...})");

  const uint64_t data_start = 8 + hlen;
  const uint64_t data_size = size - data_start;
  struct Span {
    uint64_t begin, end;
    HostTensor t;
  };
  std::vector<Span> spans;
  SafetensorsFile out;
  for (auto it = header.cbegin(); it != header.cend(); ++it) {
    const std::string& name = it.key();  // a plain reference: clang 14 cannot capture structured bindings
    const json& entry = it.value();
    auto fail = [&](const std::string& msg) { throw Error(fname + ": tensor '" + name + "': " + msg); };
    if (name == "__metadata__") {
      if (!entry.is_object()) throw Error(fname + ": '__metadata__' is not an object (expected string map)");
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string())
          throw Error(fname + ": '__metadata__' value of '" + k + "' is " + v.type_name() + " (expected string)");
        out.metadata_.emplace(k, v.get<std::string>());
      }
      continue;
    }
    if (!entry.is_object()) fail(std::string("entry is ") + entry.type_name() + " (expected object)");
    auto dt_it = entry.find("dtype");
    auto shape_it = entry.find("shape");
    auto off_it = entry.find("data_offsets");
    if (dt_it == entry.end() || !dt_it->is_string()) fail("missing or non-string 'dtype'");
    if (shape_it == entry.end() || !shape_it->is_array()) fail("missing or non-array 'shape'");
    if (off_it == entry.end() || !off_it->is_array() || off_it->size() != 2)
      fail("missing 'data_offsets' (expected [begin, end])");

    HostTensor t;
    t.name = name;
    const std::string& dts = dt_it->get_ref<const std::string&>();
    if (!dtype_from_name(dts, &t.dtype))
      fail("unsupported dtype '" + dts + "' (expected F32, F16 or BF16, or F8_E4M3 / I32 of a quantized checkpoint)");
    int64_t numel = 1;
    for (const json& d : *shape_it) {
      auto n = as_count(d);
      if (!n || *n > uint64_t(std::numeric_limits<int64_t>::max()))
        fail(std::string("shape entry of type ") + d.type_name() + " is not a non-negative integer below 2^63");
      if (__builtin_mul_overflow(numel, int64_t(*n), &numel)) fail("element count overflows");
      t.shape.push_back(int64_t(*n));
    }
    uint64_t nbytes;
    if (__builtin_mul_overflow(uint64_t(numel), uint64_t(block_bytes(t.dtype)), &nbytes)) fail("byte size overflows");
    auto b = as_count((*off_it)[0]);
    auto e = as_count((*off_it)[1]);
    if (!b || !e) fail("data_offsets must be non-negative integers");
    if (*b > *e || *e > data_size)
      fail("data_offsets [" + std::to_string(*b) + ", " + std::to_string(*e) + ") are not inside the data section of " +
           std::to_string(data_size) + " bytes at byte " + std::to_string(data_start));
    if (*e - *b != nbytes)
      fail("data_offsets [" + std::to_string(*b) + ", " + std::to_string(*e) + ") span " + std::to_string(*e - *b) +
           " bytes, but " + dts + " shape of " + std::to_string(numel) + " elements needs " + std::to_string(nbytes));
    t.nbytes = size_t(nbytes);
    t.data = file->data() + data_start + *b;
    spans.push_back({*b, *e, std::move(t)});
  }
  // File order = data order; zero-size tensors sort first and overlap nothing.
  std::sort(spans.begin(), spans.end(),
            [](const Span& a, const Span& b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
  uint64_t prev_end = 0;
  const std::string* prev_name = nullptr;
  for (const Span& s : spans) {
    if (s.begin == s.end) continue;
    if (prev_name && s.begin < prev_end)
      throw Error(fname + ": tensor '" + s.t.name + "' data [" + std::to_string(s.begin) + ", " +
                  std::to_string(s.end) + ") overlaps tensor '" + *prev_name + "' (ends at " +
                  std::to_string(prev_end) + ")");
    prev_end = s.end;
    prev_name = &s.t.name;
  }
  out.file_ = std::move(file);
  out.tensors_.reserve(spans.size());
  for (Span& s : spans) {
    out.aligned_.align(s.t);
    out.index_.emplace(s.t.name, out.tensors_.size());
    out.tensors_.push_back(std::move(s.t));
  }
  return out;
}

const HostTensor* SafetensorsFile::find_tensor(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

// ---- model directory ------------------------------------------------------------

namespace {
namespace fs = std::filesystem;

bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

// A shard name from the index must stay inside the model directory.
void check_shard_name(const std::string& index_path, const std::string& tensor, const std::string& shard) {
  if (shard.empty() || shard.find('/') != std::string::npos || shard.find('\\') != std::string::npos ||
      shard.find("..") != std::string::npos || shard.find('\0') != std::string::npos)
    throw Error(index_path + ": weight_map entry for '" + tensor + "' names shard '" + shard +
                "' (expected a plain file name in the model directory, without '/' or '..')");
}
}  // namespace

SafetensorsModel SafetensorsModel::open_dir(const std::string& dir) {
  SafetensorsModel m;
  const fs::path single = fs::path(dir) / "model.safetensors";
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  if (is_file(single)) {
    m.shards_.push_back(std::make_shared<SafetensorsFile>(SafetensorsFile::open(single.string())));
  } else if (is_file(index)) {
    const std::string ipath = index.string();
    auto f = MappedFile::open(ipath);
    if (f->size() > kMaxHeaderBytes)
      throw Error(ipath + ": index of " + std::to_string(f->size()) + " bytes exceeds the limit of " +
                  std::to_string(kMaxHeaderBytes));
    const char* b = reinterpret_cast<const char*>(f->data());
    std::string dup_unused;
    json j = parse_json(b, b + f->size(), ipath, &dup_unused);
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
      throw Error(ipath + ": missing \"weight_map\" object (expected {\"weight_map\": {tensor: shard file}})");
    const json& wm = j["weight_map"];
    if (wm.empty()) throw Error(ipath + ": \"weight_map\" lists no tensors");
    std::map<std::string, size_t> shard_of_file;  // shard file name -> index in shards_
    for (const auto& [tensor, shard] : wm.items()) {
      if (!shard.is_string())
        throw Error(ipath + ": weight_map entry for '" + tensor + "' is " + shard.type_name() +
                    " (expected file name)");
      const std::string& sname = shard.get_ref<const std::string&>();
      check_shard_name(ipath, tensor, sname);
      auto it = shard_of_file.find(sname);
      if (it == shard_of_file.end()) {
        const fs::path sp = fs::path(dir) / sname;
        if (!is_file(sp))
          throw Error(ipath + ": shard '" + sname + "' (for tensor '" + tensor + "') not found at " + sp.string());
        m.shards_.push_back(std::make_shared<SafetensorsFile>(SafetensorsFile::open(sp.string())));
        it = shard_of_file.emplace(sname, m.shards_.size() - 1).first;
      }
      if (!m.shards_[it->second]->find_tensor(tensor))
        throw Error(ipath + ": tensor '" + tensor + "' is listed in shard '" + sname +
                    "' but that shard does not hold it");
    }
  } else {
    std::error_code ec;
    std::string why = fs::is_directory(dir, ec) ? "" : " (the directory does not exist)";
    throw Error(dir + ": no model.safetensors or model.safetensors.index.json found" + why +
                " (expected a Hugging Face model directory)");
  }
  for (const auto& s : m.shards_) {
    for (const HostTensor& t : s->tensors()) {
      if (!m.index_.emplace(t.name, &t).second)
        throw Error(dir + ": tensor '" + t.name + "' appears in more than one shard");
    }
  }
  return m;
}

const HostTensor* SafetensorsModel::find_tensor(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second;
}

std::vector<const HostTensor*> SafetensorsModel::tensors() const {
  std::vector<const HostTensor*> out;
  for (const auto& s : shards_)
    for (const HostTensor& t : s->tensors()) out.push_back(&t);
  return out;
}

}  // namespace greta
