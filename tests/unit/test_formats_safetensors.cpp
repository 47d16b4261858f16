// safetensors reader: single files built in memory, corruption of every checked field,
// and model directories (single file, sharded index) written under a temp dir.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include "core/error.h"
#include "formats/aligned_copies.h"
#include "formats/safetensors.h"
#include "formats_test_util.h"

namespace greta {
namespace {

using nlohmann::json;
using test::SafetensorsBuilder;
using test::TempDir;

SafetensorsFile parse_bytes(const std::vector<uint8_t>& b) {
  return SafetensorsFile::parse(MappedFile::from_bytes(b, "test.safetensors"));
}

// `fn` must throw greta::Error whose message contains every one of `parts`.
template <class Fn>
void expect_error_of(Fn fn, std::initializer_list<std::string> parts) {
  try {
    fn();
    ADD_FAILURE() << "expected greta::Error mentioning '" << *parts.begin() << "'";
  } catch (const Error& e) {
    std::string msg = e.what();
    for (const std::string& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "missing '" << p << "' in: " << msg;
  }
}
void expect_error(const std::vector<uint8_t>& bytes, std::initializer_list<std::string> parts) {
  expect_error_of([&] { parse_bytes(bytes); }, parts);
  // Every file-level error names the file.
  expect_error_of([&] { parse_bytes(bytes); }, {"test.safetensors"});
}

SafetensorsBuilder small_file() {
  SafetensorsBuilder b;
  b.tensor("model.embed_tokens.weight", "F32", {3, 4});
  b.tensor("model.norm.weight", "F16", {5});
  b.tensor("lm_head.weight", "BF16", {2, 3});
  b.metadata["format"] = "pt";
  return b;
}

// Replaces one field of one tensor in the header and rebuilds.
std::vector<uint8_t> with_field(const SafetensorsBuilder& b, const std::string& tensor, const std::string& field,
                                json value) {
  json h = b.header();
  h[tensor][field] = std::move(value);
  return b.build_with(h.dump());
}

TEST(Safetensors, ReadsTensorsAndMetadata) {
  SafetensorsBuilder b = small_file();
  b.tensor("scalar", "F32", {});
  b.tensor("empty", "F16", {0, 7});
  auto bytes = b.build();
  SafetensorsFile f = parse_bytes(bytes);
  ASSERT_EQ(f.tensors().size(), 5u);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  const DType want[] = {DType::F32, DType::F16, DType::BF16, DType::F32, DType::F16};
  for (size_t i = 0; i < b.tensors.size(); ++i) {
    const HostTensor* t = f.find_tensor(b.tensors[i].name);
    ASSERT_NE(t, nullptr) << b.tensors[i].name;
    EXPECT_EQ(t->dtype, want[i]);
    EXPECT_EQ(t->shape, b.tensors[i].shape);
    ASSERT_EQ(t->nbytes, b.tensors[i].data.size());
    EXPECT_EQ(std::vector<uint8_t>(t->data, t->data + t->nbytes), b.tensors[i].data) << t->name;
  }
  EXPECT_EQ(f.find_tensor("scalar")->numel(), 1);
  EXPECT_EQ(f.find_tensor("empty")->numel(), 0);
  EXPECT_EQ(f.find_tensor("model.embed_tokens.weight")->rows(), 3);
  EXPECT_EQ(f.find_tensor("missing"), nullptr);
  // Tensors come back in data order (the order the writer laid them out).
  EXPECT_EQ(f.tensors()[0].name, "model.embed_tokens.weight");
  EXPECT_EQ(f.tensors()[2].name, "lm_head.weight");
}

TEST(Safetensors, TruncationSweep) {
  auto bytes = small_file().build();
  ASSERT_NO_THROW(parse_bytes(bytes));
  for (size_t n = 0; n < bytes.size(); ++n) {
    std::vector<uint8_t> prefix(bytes.begin(), bytes.begin() + n);
    EXPECT_THROW(parse_bytes(prefix), Error) << "prefix of " << n << " bytes parsed";
  }
}

TEST(Safetensors, HeaderLength) {
  expect_error({1, 2, 3}, {"at byte 0", "too short", "8-byte header length"});
  test::ByteWriter w;
  w.u64(200ull << 20);
  w.raw(std::vector<uint8_t>(64, ' '));
  expect_error(w.b, {"header length 209715200 exceeds the limit"});
  test::ByteWriter w2;
  w2.u64(65);
  w2.raw(std::vector<uint8_t>(64, ' '));
  expect_error(w2.b, {"header length 65 runs past the end", "64 bytes follow"});
}

TEST(Safetensors, BadJson) {
  SafetensorsBuilder b = small_file();
  expect_error(b.build_with("{\"a\": [1, 2"), {"invalid JSON", "header (bytes 8..", "parse error"});
  expect_error(b.build_with("[1, 2, 3]"), {"not a JSON object"});
  expect_error(b.build_with(""), {"invalid JSON"});
  // Nesting deep enough to overflow a recursive parser must be an ordinary error.
  expect_error(b.build_with(std::string(100000, '[')), {"invalid JSON"});
}

// Peak resident memory of this process so far, in MB.
long peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024;
}

TEST(Safetensors, HostileJsonIsBoundedInNestingAndValues) {
  // 30 MB of '[' used to parse into 30M nested arrays (2.4 GB) before failing.
  const long before = peak_rss_mb();
  SafetensorsBuilder b;
  expect_error(b.build_with(std::string(30u << 20, '[')), {"invalid JSON", "nested deeper than 16 levels"});
  EXPECT_LT(peak_rss_mb() - before, 200) << "MB of peak memory for a 30 MB header";
  // Flat but huge: one value per two bytes.
  std::string many = "{\"a\": [0";
  for (int k = 0; k < (1 << 20); ++k) many += ",0";
  expect_error(b.build_with(many + "]}"), {"JSON of more than 1048576 values"});
  // Real headers nest three levels.
  EXPECT_NO_THROW(parse_bytes(small_file().build()));
}

TEST(Safetensors, OddOffsetsAreReadFromAnAlignedCopy) {
  // The data section starts right after a header of any length: an odd length puts every
  // tensor off its alignment, which typed reads (float*, uint16_t*) must never see.
  SafetensorsBuilder b = small_file();
  for (size_t pad = 0; pad < 4; ++pad) {
    std::string header = b.header().dump() + std::string(pad, ' ');
    test::ByteWriter w;
    w.u64(header.size());
    w.b.insert(w.b.end(), header.begin(), header.end());
    for (const auto& t : b.tensors) w.raw(t.data);
    SafetensorsFile f = parse_bytes(w.b);
    for (const auto& bt : b.tensors) {
      const HostTensor* t = f.find_tensor(bt.name);
      ASSERT_NE(t, nullptr);
      EXPECT_EQ(reinterpret_cast<uintptr_t>(t->data) % tensor_data_alignment(t->dtype), 0u)
          << t->name << " pad " << pad;
      EXPECT_EQ(std::vector<uint8_t>(t->data, t->data + t->nbytes), bt.data) << t->name << " pad " << pad;
    }
  }
}

TEST(Safetensors, QuantizedCheckpointDtypes) {
  // FP8 weights (1 byte a value) and the int32 words AWQ / GPTQ pack int4 values into; an odd
  // fp8 tensor first leaves the int32 one misaligned, and it must still be read from 4-byte
  // aligned memory.
  SafetensorsBuilder b;
  b.tensor("w.weight", "F8_E4M3", {3, 3});
  b.tensor("w.qweight", "I32", {2, 2});
  SafetensorsFile f = parse_bytes(b.build());
  const HostTensor* w = f.find_tensor("w.weight");
  const HostTensor* q = f.find_tensor("w.qweight");
  ASSERT_TRUE(w && q);
  EXPECT_EQ(w->dtype, DType::F8_E4M3);
  EXPECT_EQ(w->nbytes, 9u);
  EXPECT_EQ(q->dtype, DType::I32);
  EXPECT_EQ(q->nbytes, 16u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(q->data) % 4, 0u);
  EXPECT_EQ(std::vector<uint8_t>(q->data, q->data + 16), b.tensors[1].data);
}

TEST(Safetensors, DuplicateTensorName) {
  SafetensorsBuilder b;
  b.tensor("x", "F32", {1});
  std::string h = R"({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                      "x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})";
  expect_error(b.build_with(h), {"'x' twice"});
}

TEST(Safetensors, UnsupportedDtype) {
  SafetensorsBuilder b;
  b.tensor("ids", "I64", {2});
  expect_error(b.build(), {"tensor 'ids'", "unsupported dtype 'I64'", "F32, F16 or BF16"});
  SafetensorsBuilder b8;
  b8.tensor("w8", "F8_E5M2", {4});
  expect_error(b8.build(), {"tensor 'w8'", "'F8_E5M2'"});
  SafetensorsBuilder s = small_file();
  expect_error(with_field(s, "model.norm.weight", "dtype", 16), {"tensor 'model.norm.weight'", "'dtype'"});
}

TEST(Safetensors, BadShape) {
  SafetensorsBuilder b = small_file();
  expect_error(with_field(b, "model.norm.weight", "shape", {-5}),
               {"tensor 'model.norm.weight'", "non-negative integer"});
  expect_error(with_field(b, "model.norm.weight", "shape", {2.5}), {"non-negative integer"});
  expect_error(with_field(b, "model.norm.weight", "shape", "5"), {"non-array 'shape'"});
  expect_error(with_field(b, "model.norm.weight", "shape", {uint64_t(1) << 40, uint64_t(1) << 40}),
               {"element count overflows"});
  expect_error(with_field(b, "model.embed_tokens.weight", "shape", {uint64_t(1) << 62}), {"byte size overflows"});
  // A shape that disagrees with the byte range.
  expect_error(with_field(b, "model.norm.weight", "shape", {6}),
               {"tensor 'model.norm.weight'", "span 10 bytes", "needs 12"});
}

TEST(Safetensors, BadOffsets) {
  SafetensorsBuilder b = small_file();  // embed [0,48) norm [48,58) lm_head [58,70)
  expect_error(with_field(b, "lm_head.weight", "data_offsets", {58, 700}),
               {"tensor 'lm_head.weight'", "[58, 700)", "not inside the data section of 70 bytes"});
  expect_error(with_field(b, "lm_head.weight", "data_offsets", {60, 58}), {"not inside the data section"});
  expect_error(with_field(b, "lm_head.weight", "data_offsets", {58}), {"data_offsets", "[begin, end]"});
  expect_error(with_field(b, "lm_head.weight", "data_offsets", {-2, 10}), {"non-negative integers"});
  expect_error(with_field(b, "model.norm.weight", "data_offsets", {40, 50}), {"overlaps", "model.embed_tokens.weight"});
  json h = b.header();
  h.erase("lm_head.weight");
  h["lm_head.weight"] = 7;
  expect_error(b.build_with(h.dump()), {"tensor 'lm_head.weight'", "expected object"});
}

TEST(Safetensors, BadMetadata) {
  SafetensorsBuilder b = small_file();
  json h = b.header();
  h["__metadata__"] = {{"format", 1}};
  expect_error(b.build_with(h.dump()), {"'__metadata__' value of 'format'", "expected string"});
  h["__metadata__"] = json::array();
  expect_error(b.build_with(h.dump()), {"'__metadata__' is not an object"});
}

// ---- model directories ------------------------------------------------------------

TEST(SafetensorsModel, SingleFile) {
  TempDir d;
  SafetensorsBuilder b = small_file();
  d.write("model.safetensors", b.build());
  SafetensorsModel m = SafetensorsModel::open_dir(d.path().string());
  EXPECT_EQ(m.tensors().size(), 3u);
  const HostTensor* t = m.find_tensor("model.norm.weight");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(std::vector<uint8_t>(t->data, t->data + t->nbytes), b.tensors[1].data);
  EXPECT_EQ(m.find_tensor("nope"), nullptr);
}

// Two shards and an index, as transformers' save_pretrained writes them.
struct Sharded {
  TempDir d;
  SafetensorsBuilder s1, s2;
  json index;
  Sharded() {
    s1.tensor("a", "F32", {2, 2});
    s1.tensor("b", "BF16", {3});
    s2.tensor("c", "F16", {4, 1});
    d.write("model-00001-of-00002.safetensors", s1.build());
    d.write("model-00002-of-00002.safetensors", s2.build());
    index = {{"metadata", {{"total_size", 28}}},
             {"weight_map",
              {{"a", "model-00001-of-00002.safetensors"},
               {"b", "model-00001-of-00002.safetensors"},
               {"c", "model-00002-of-00002.safetensors"}}}};
  }
  void write_index() const { d.write("model.safetensors.index.json", index.dump()); }
  SafetensorsModel open() const { return SafetensorsModel::open_dir(d.path().string()); }
};

TEST(SafetensorsModel, ShardedIndex) {
  Sharded s;
  s.write_index();
  SafetensorsModel m = s.open();
  ASSERT_EQ(m.tensors().size(), 3u);
  const HostTensor* c = m.find_tensor("c");
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->shape, (std::vector<int64_t>{4, 1}));
  EXPECT_EQ(std::vector<uint8_t>(c->data, c->data + c->nbytes), s.s2.tensors[0].data);
  EXPECT_EQ(m.find_tensor("b")->dtype, DType::BF16);
  // The model keeps its shards alive after being copied or moved.
  SafetensorsModel copy = m;
  m = SafetensorsModel();
  EXPECT_EQ(copy.find_tensor("a")->nbytes, 16u);
}

TEST(SafetensorsModel, IndexNamesMissingTensor) {
  Sharded s;
  s.index["weight_map"]["ghost"] = "model-00002-of-00002.safetensors";
  s.write_index();
  expect_error_of([&] { s.open(); }, {"model.safetensors.index.json", "tensor 'ghost'", "model-00002-of-00002"});
}

TEST(SafetensorsModel, ShardEscapingDirectory) {
  for (const char* bad : {"../model-00001-of-00002.safetensors", "sub/x.safetensors", "..", ""}) {
    Sharded s;
    s.index["weight_map"]["a"] = bad;
    s.write_index();
    expect_error_of([&] { s.open(); }, {"weight_map entry for 'a'", "without '/' or '..'"});
  }
}

TEST(SafetensorsModel, MissingShardAndBadIndex) {
  Sharded s;
  s.index["weight_map"]["c"] = "model-00003-of-00002.safetensors";
  s.write_index();
  expect_error_of([&] { s.open(); }, {"shard 'model-00003-of-00002.safetensors'", "not found"});

  Sharded s2;
  s2.index.erase("weight_map");
  s2.write_index();
  expect_error_of([&] { s2.open(); }, {"missing \"weight_map\""});

  Sharded s3;
  s3.d.write("model.safetensors.index.json", std::string("{\"weight_map\": "));
  expect_error_of([&] { s3.open(); }, {"model.safetensors.index.json", "invalid JSON"});

  Sharded s4;  // a tensor held by two shards
  s4.d.write("model-00002-of-00002.safetensors", s4.s1.build());
  s4.index["weight_map"] = {{"a", "model-00001-of-00002.safetensors"}, {"b", "model-00002-of-00002.safetensors"}};
  s4.write_index();
  expect_error_of([&] { s4.open(); }, {"appears in more than one shard"});
}

TEST(SafetensorsModel, NeitherFile) {
  TempDir d;
  expect_error_of([&] { SafetensorsModel::open_dir(d.path().string()); },
                  {d.path().string(), "model.safetensors", "model.safetensors.index.json"});
  expect_error_of([&] { SafetensorsModel::open_dir((d.path() / "nope").string()); }, {"does not exist"});
}

TEST(SafetensorsModel, CorruptShardNamesItself) {
  Sharded s;
  s.write_index();
  s.d.write("model-00002-of-00002.safetensors", std::vector<uint8_t>{1, 2, 3});
  expect_error_of([&] { s.open(); }, {"model-00002-of-00002.safetensors", "too short"});
}

}  // namespace
}  // namespace greta
