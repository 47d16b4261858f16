// GGUF v2/v3 parser. Layout (little-endian):
//   "GGUF" u32 version, u64 n_tensors, u64 n_kv,
//   n_kv x { string key, u32 type, value },
//   n_tensors x { string name, u32 n_dims, u64 dims[n_dims] (innermost first), u32 ggml_type, u64 offset },
//   padding to general.alignment, then the data section; tensor offsets are relative to it.
// Every count is checked against the bytes left before anything is allocated for it.
#include "formats/gguf.h"

#include <algorithm>
#include <limits>
#include <set>

#include "core/error.h"
#include "formats/byte_reader.h"

namespace greta {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint64_t kDefaultAlignment = 32;

// Smallest number of bytes any value of type t can occupy; used to reject counts a
// file cannot possibly hold (a u64 array length of 2^60 in a 1 KB file) up front.
size_t min_value_bytes(GGUFType t) {
  switch (t) {
    case GGUFType::UINT8:
    case GGUFType::INT8:
    case GGUFType::BOOL: return 1;
    case GGUFType::UINT16:
    case GGUFType::INT16: return 2;
    case GGUFType::UINT32:
    case GGUFType::INT32:
    case GGUFType::FLOAT32: return 4;
    case GGUFType::UINT64:
    case GGUFType::INT64:
    case GGUFType::FLOAT64: return 8;
    case GGUFType::STRING: return 8;  // u64 length, possibly no bytes
    case GGUFType::ARRAY: return 12;  // u32 element type + u64 count
  }
  return 1;
}

const char* value_type_name(GGUFType t) {
  switch (t) {
    case GGUFType::UINT8: return "UINT8";
    case GGUFType::INT8: return "INT8";
    case GGUFType::UINT16: return "UINT16";
    case GGUFType::INT16: return "INT16";
    case GGUFType::UINT32: return "UINT32";
    case GGUFType::INT32: return "INT32";
    case GGUFType::FLOAT32: return "FLOAT32";
    case GGUFType::BOOL: return "BOOL";
    case GGUFType::STRING: return "STRING";
    case GGUFType::ARRAY: return "ARRAY";
    case GGUFType::UINT64: return "UINT64";
    case GGUFType::INT64: return "INT64";
    case GGUFType::FLOAT64: return "FLOAT64";
  }
  return "?";
}

// The ggml type ids we load, and what they become: the one list both the loader and its
// "unsupported tensor type" message read.
struct GgmlType {
  uint32_t id;
  DType dtype;
};
constexpr GgmlType kLoadable[] = {
    {0, DType::F32},  {1, DType::F16},  {30, DType::BF16}, {2, DType::Q4_0},  {3, DType::Q4_1},  {6, DType::Q5_0},
    {7, DType::Q5_1}, {8, DType::Q8_0}, {12, DType::Q4_K}, {13, DType::Q5_K}, {14, DType::Q6_K},
};

bool ggml_to_dtype(uint32_t id, DType* out) {
  for (const GgmlType& t : kLoadable)
    if (t.id == id) {
      *out = t.dtype;
      return true;
    }
  return false;
}

std::string loadable_type_names() {
  std::string s;
  for (const GgmlType& t : kLoadable) s += (s.empty() ? "" : ", ") + std::string(dtype_name(t.dtype));
  return s;
}

// Reads one file. Holds the cursor and the file name for error messages.
class Parser {
 public:
  explicit Parser(const MappedFile& f) : f_(f), r_(f.data(), f.size(), f.path()) {}

  std::string read_string(const char* what) {
    size_t at = r_.pos();
    uint64_t len = r_.u64(what);
    if (len > r_.remaining())
      r_.fail_at(at, std::string(what) + " length " + std::to_string(len) + " runs past the end of the file (" +
                         std::to_string(r_.remaining()) + " bytes remain)");
    return std::string(r_.bytes(len, what));
  }

  GGUFType read_type(const char* what) {
    size_t at = r_.pos();
    uint32_t t = r_.u32(what);
    if (t > uint32_t(GGUFType::FLOAT64))
      r_.fail_at(at, "invalid " + std::string(what) + " " + std::to_string(t) + " (expected 0..12)");
    return GGUFType(t);
  }

  // depth: how many arrays enclose this value (0 for a top-level value).
  GGUFValue read_value(GGUFType t, int depth) {
    GGUFValue v;
    v.type = t;
    switch (t) {
      case GGUFType::UINT8: v.v = uint64_t(r_.u8("UINT8 value")); break;
      case GGUFType::INT8: v.v = int64_t(r_.read<int8_t>("INT8 value")); break;
      case GGUFType::UINT16: v.v = uint64_t(r_.read<uint16_t>("UINT16 value")); break;
      case GGUFType::INT16: v.v = int64_t(r_.read<int16_t>("INT16 value")); break;
      case GGUFType::UINT32: v.v = uint64_t(r_.u32("UINT32 value")); break;
      case GGUFType::INT32: v.v = int64_t(r_.read<int32_t>("INT32 value")); break;
      case GGUFType::UINT64: v.v = r_.u64("UINT64 value"); break;
      case GGUFType::INT64: v.v = r_.read<int64_t>("INT64 value"); break;
      case GGUFType::FLOAT32: v.v = double(r_.read<float>("FLOAT32 value")); break;
      case GGUFType::FLOAT64: v.v = r_.read<double>("FLOAT64 value"); break;
      case GGUFType::BOOL: {
        size_t at = r_.pos();
        uint8_t b = r_.u8("BOOL value");
        if (b > 1) r_.fail_at(at, "invalid BOOL value " + std::to_string(b) + " (expected 0 or 1)");
        v.v = (b == 1);
        break;
      }
      case GGUFType::STRING: v.v = read_string("string"); break;
      case GGUFType::ARRAY: v.v = read_array(depth + 1); break;
    }
    return v;
  }

  std::shared_ptr<GGUFArray> read_array(int depth) {
    size_t at = r_.pos();
    if (depth > GGUFFile::kMaxArrayDepth)
      r_.fail_at(at, "arrays nested " + std::to_string(depth) + " deep (expected at most " +
                         std::to_string(GGUFFile::kMaxArrayDepth) + ")");
    auto arr = std::make_shared<GGUFArray>();
    arr->elem_type = read_type("array element type");
    size_t count_at = r_.pos();
    uint64_t n = r_.u64("array length");
    size_t min = min_value_bytes(arr->elem_type);
    if (n > r_.remaining() / min)
      r_.fail_at(count_at, "array of " + std::to_string(n) + " " + value_type_name(arr->elem_type) +
                               " values cannot fit in the " + std::to_string(r_.remaining()) +
                               " bytes that remain (each needs at least " + std::to_string(min) + ")");
    arr->items.reserve(size_t(n));  // bounded by the file size just above
    for (uint64_t i = 0; i < n; ++i) arr->items.push_back(read_value(arr->elem_type, depth));
    return arr;
  }

  GGUFFile::ParseState parse();

  const MappedFile& f_;
  ByteReader r_;
};

}  // namespace

std::string ggml_type_describe(uint32_t id) {
  // Index = ggml type id; ids 4, 5, 31..33 and 36..38 were removed from ggml but keep their names.
  static const char* const kNames[] = {
      "F32",    "F16",      "Q4_0",     "Q4_1",     "Q4_2",  "Q4_3",  "Q5_0",       "Q5_1",       "Q8_0",       "Q8_1",
      "Q2_K",   "Q3_K",     "Q4_K",     "Q5_K",     "Q6_K",  "Q8_K",  "IQ2_XXS",    "IQ2_XS",     "IQ3_XXS",    "IQ1_S",
      "IQ4_NL", "IQ3_S",    "IQ2_S",    "IQ4_XS",   "I8",    "I16",   "I32",        "I64",        "F64",        "IQ1_M",
      "BF16",   "Q4_0_4_4", "Q4_0_4_8", "Q4_0_8_8", "TQ1_0", "TQ2_0", "IQ4_NL_4_4", "IQ4_NL_4_8", "IQ4_NL_8_8", "MXFP4",
  };
  if (id < std::size(kNames)) return std::string(kNames[id]) + " (type " + std::to_string(id) + ")";
  return "unknown type " + std::to_string(id);
}

// ---- GGUFValue --------------------------------------------------------------------

std::optional<int64_t> GGUFValue::as_int() const {
  if (auto* i = std::get_if<int64_t>(&v)) return *i;
  if (auto* u = std::get_if<uint64_t>(&v)) {
    if (*u <= uint64_t(std::numeric_limits<int64_t>::max())) return int64_t(*u);
  }
  return std::nullopt;
}
std::optional<double> GGUFValue::as_float() const {
  if (auto* d = std::get_if<double>(&v)) return *d;
  if (auto* i = std::get_if<int64_t>(&v)) return double(*i);
  if (auto* u = std::get_if<uint64_t>(&v)) return double(*u);
  return std::nullopt;
}
std::optional<bool> GGUFValue::as_bool() const {
  if (auto* b = std::get_if<bool>(&v)) return *b;
  return std::nullopt;
}
const std::string* GGUFValue::as_string() const { return std::get_if<std::string>(&v); }
const GGUFArray* GGUFValue::as_array() const {
  if (auto* a = std::get_if<std::shared_ptr<GGUFArray>>(&v)) return a->get();
  return nullptr;
}

// ---- GGUFFile ---------------------------------------------------------------------

GGUFFile GGUFFile::open(const std::string& path) { return parse(MappedFile::open(path)); }

GGUFFile GGUFFile::parse(std::shared_ptr<MappedFile> file) {
  Parser p(*file);
  ParseState st = p.parse();
  GGUFFile g;
  g.file_ = std::move(file);
  g.version_ = st.version;
  g.alignment_ = st.alignment;
  g.data_offset_ = st.data_offset;
  g.kv_ = std::move(st.kv);
  g.tensors_ = std::move(st.tensors);
  for (HostTensor& t : g.tensors_) g.aligned_.align(t);
  for (size_t i = 0; i < g.kv_.size(); ++i) g.kv_index_.emplace(g.kv_[i].first, i);
  for (size_t i = 0; i < g.tensors_.size(); ++i) g.tensor_index_.emplace(g.tensors_[i].name, i);
  return g;
}

GGUFFile::ParseState Parser::parse() {
  GGUFFile::ParseState st;
  const std::string& fname = f_.path();

  uint32_t magic = r_.u32("magic");
  if (magic != kMagic) r_.fail_at(0, "bad magic (expected \"GGUF\"); not a GGUF file");
  st.version = r_.u32("version");
  if (st.version != 2 && st.version != 3) {
    std::string hint = (st.version & 0xffffu) == 0 ? " (a big-endian file? those are not supported)" : "";
    r_.fail_at(4, "unsupported GGUF version " + std::to_string(st.version) + " (expected 2 or 3)" + hint);
  }
  uint64_t n_tensors = r_.u64("tensor count");
  uint64_t n_kv = r_.u64("metadata count");
  // Each key/value needs >= 13 bytes (u64 key length, u32 type, 1-byte value); each tensor
  // info >= 32 (u64 name length, u32 n_dims, one u64 dim, u32 type, u64 offset).
  if (n_kv > r_.remaining() / 13)
    r_.fail_at(16, "metadata count " + std::to_string(n_kv) + " cannot fit in the " + std::to_string(r_.remaining()) +
                       " bytes that remain (each needs at least 13)");
  if (n_tensors > r_.remaining() / 32 || n_kv * 13 + n_tensors * 32 > r_.remaining())
    r_.fail_at(8, "tensor count " + std::to_string(n_tensors) + " (with " + std::to_string(n_kv) +
                      " metadata entries) cannot fit in the " + std::to_string(r_.remaining()) +
                      " bytes that remain (each tensor info needs at least 32)");

  // ---- metadata
  std::set<std::string, std::less<>> keys;
  uint64_t alignment = kDefaultAlignment;
  for (uint64_t i = 0; i < n_kv; ++i) {
    size_t at = r_.pos();
    std::string key = read_string("metadata key");
    if (!keys.insert(key).second) r_.fail_at(at, "duplicate metadata key '" + key + "'");
    GGUFValue val;
    try {
      GGUFType t = read_type("value type");
      val = read_value(t, 0);
    } catch (const Error& e) {
      throw Error(std::string(e.what()) + " (in the value of key '" + key + "')");
    }
    if (key == "general.alignment") {
      auto a = val.as_int();
      if (!a || val.type == GGUFType::BOOL || *a <= 0 || (*a & (*a - 1)) != 0)
        r_.fail_at(at, "key 'general.alignment' must be a positive power-of-two integer");
      alignment = uint64_t(*a);
    }
    st.kv.emplace_back(std::move(key), std::move(val));
  }
  st.alignment = size_t(alignment);

  // ---- tensor infos
  struct Span {
    uint64_t begin, end;
    size_t idx;
  };
  std::vector<Span> spans;
  spans.reserve(size_t(n_tensors));  // bounded by the file size (checked above)
  std::set<std::string, std::less<>> names;
  for (uint64_t i = 0; i < n_tensors; ++i) {
    size_t at = r_.pos();
    std::string name = read_string("tensor name");
    auto fail = [&](const std::string& msg) {
      throw Error(fname + ": tensor '" + name + "' (info at byte " + std::to_string(at) + "): " + msg);
    };
    if (!names.insert(name).second) fail("duplicate tensor name");
    uint32_t n_dims = r_.u32("n_dims of tensor '" + name + "'");
    if (n_dims == 0 || n_dims > GGUFFile::kMaxDims)
      fail("n_dims is " + std::to_string(n_dims) + " (expected 1.." + std::to_string(GGUFFile::kMaxDims) + ")");
    uint64_t dims[GGUFFile::kMaxDims];
    int64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      dims[d] = r_.u64("dimension of tensor '" + name + "'");
      if (dims[d] == 0 || dims[d] > uint64_t(std::numeric_limits<int64_t>::max()))
        fail("dimension " + std::to_string(d) + " is " + std::to_string(int64_t(dims[d])) + " (expected > 0)");
      if (__builtin_mul_overflow(numel, int64_t(dims[d]), &numel))
        fail("element count overflows (dimensions too large)");
    }
    uint32_t type_id = r_.u32("type of tensor '" + name + "'");
    DType dt;
    if (!ggml_to_dtype(type_id, &dt))
      fail("unsupported tensor type " + ggml_type_describe(type_id) + " (supported: " + loadable_type_names() + ")");
    uint64_t offset = r_.u64("data offset of tensor '" + name + "'");
    if (int64_t(dims[0]) % block_elems(dt) != 0)
      fail("first dimension " + std::to_string(dims[0]) + " is not a multiple of the " + std::string(dtype_name(dt)) +
           " block size " + std::to_string(block_elems(dt)));
    if (offset % alignment != 0)
      fail("data offset " + std::to_string(offset) + " is not a multiple of the alignment " +
           std::to_string(alignment));
    uint64_t nbytes;
    if (__builtin_mul_overflow(uint64_t(numel / block_elems(dt)), uint64_t(block_bytes(dt)), &nbytes))
      fail("byte size overflows");
    uint64_t end;
    if (__builtin_add_overflow(offset, nbytes, &end)) fail("data offset + size overflows");

    HostTensor t;
    t.name = std::move(name);
    t.dtype = dt;
    for (uint32_t d = n_dims; d-- > 0;) t.shape.push_back(int64_t(dims[d]));  // outermost first
    t.nbytes = size_t(nbytes);
    spans.push_back({offset, end, st.tensors.size()});
    st.tensors.push_back(std::move(t));
  }

  // ---- data section: starts at the first aligned offset after the infos
  uint64_t pos = r_.pos();
  uint64_t pad = (alignment - pos % alignment) % alignment;
  st.data_offset = size_t(pos + pad);  // pos <= file size and alignment <= 2^62: no overflow
  uint64_t data_size = f_.size() > st.data_offset ? f_.size() - st.data_offset : 0;
  for (const Span& s : spans) {
    const HostTensor& t = st.tensors[s.idx];
    if (s.end > data_size)
      throw Error(fname + ": tensor '" + t.name + "': data [" + std::to_string(s.begin) + ", " + std::to_string(s.end) +
                  ") of the data section at byte " + std::to_string(st.data_offset) +
                  " runs past the end of the file (data section holds " + std::to_string(data_size) + " bytes)");
  }
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < spans.size(); ++i) {
    if (spans[i].begin < spans[i - 1].end)
      throw Error(fname + ": tensor '" + st.tensors[spans[i].idx].name + "' data at offset " +
                  std::to_string(spans[i].begin) + " overlaps tensor '" + st.tensors[spans[i - 1].idx].name + "' [" +
                  std::to_string(spans[i - 1].begin) + ", " + std::to_string(spans[i - 1].end) + ")");
  }
  for (const Span& s : spans) st.tensors[s.idx].data = f_.data() + st.data_offset + s.begin;
  return st;
}

// ---- lookups ------------------------------------------------------------------------

const GGUFValue* GGUFFile::find(std::string_view key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}
std::optional<int64_t> GGUFFile::get_int(std::string_view key) const {
  const GGUFValue* v = find(key);
  return v ? v->as_int() : std::nullopt;
}
std::optional<double> GGUFFile::get_float(std::string_view key) const {
  const GGUFValue* v = find(key);
  return v ? v->as_float() : std::nullopt;
}
std::optional<bool> GGUFFile::get_bool(std::string_view key) const {
  const GGUFValue* v = find(key);
  return v ? v->as_bool() : std::nullopt;
}
std::optional<std::string> GGUFFile::get_string(std::string_view key) const {
  const GGUFValue* v = find(key);
  const std::string* s = v ? v->as_string() : nullptr;
  return s ? std::optional<std::string>(*s) : std::nullopt;
}
const GGUFArray* GGUFFile::get_array(std::string_view key) const {
  const GGUFValue* v = find(key);
  return v ? v->as_array() : nullptr;
}

namespace {
[[noreturn]] void missing_or_wrong(const std::string& file, std::string_view key, const GGUFValue* v,
                                   const char* expected) {
  if (!v) throw Error(file + ": missing required key '" + std::string(key) + "' (expected " + expected + ")");
  throw Error(file + ": key '" + std::string(key) + "' has type " + value_type_name(v->type) + " (expected " +
              expected + ")");
}
}  // namespace

int64_t GGUFFile::require_int(std::string_view key) const {
  const GGUFValue* v = find(key);
  if (v && v->type != GGUFType::BOOL) {
    if (auto i = v->as_int()) return *i;
  }
  missing_or_wrong(path(), key, v, "integer");
}
double GGUFFile::require_float(std::string_view key) const {
  const GGUFValue* v = find(key);
  if (v) {
    if (auto d = v->as_float()) return *d;
  }
  missing_or_wrong(path(), key, v, "number");
}
std::string GGUFFile::require_string(std::string_view key) const {
  const GGUFValue* v = find(key);
  if (v) {
    if (auto* s = v->as_string()) return *s;
  }
  missing_or_wrong(path(), key, v, "string");
}

const HostTensor* GGUFFile::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace greta
