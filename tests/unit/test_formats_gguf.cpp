// GGUF reader: round trip of every value type and supported tensor type through an
// in-memory builder, then one test per validation rule checking what the error names.
#include <gtest/gtest.h>

#include <filesystem>
#include <limits>

#include "core/error.h"
#include "formats/aligned_copies.h"
#include "formats/gguf.h"
#include "formats_test_util.h"

namespace greta {
namespace {

using test::GGUFBuilder;
using namespace test;  // GGML type ids

GGUFFile parse_bytes(const std::vector<uint8_t>& b) { return GGUFFile::parse(MappedFile::from_bytes(b, "test.gguf")); }

// Parsing must throw greta::Error whose message contains every one of `parts`.
void expect_error(const std::vector<uint8_t>& bytes, std::initializer_list<std::string> parts) {
  try {
    parse_bytes(bytes);
    ADD_FAILURE() << "expected greta::Error mentioning '" << *parts.begin() << "'";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("test.gguf"), std::string::npos) << msg;
    for (const std::string& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "missing '" << p << "' in: " << msg;
  }
}

std::vector<uint8_t> array_bytes(GGUFType elem, uint64_t n, const std::vector<uint8_t>& items) {
  ByteWriter w;
  w.u32(uint32_t(elem));
  w.u64(n);
  w.raw(items);
  return w.b;
}

// A small valid file with a few tensors; shared by the truncation and corruption tests.
GGUFBuilder small_file() {
  GGUFBuilder g;
  g.kv_string("general.architecture", "llama");
  g.kv("llama.block_count", GGUFType::UINT32, uint32_t(2));
  g.tensor("a.weight", {8, 2}, kF32);
  g.tensor("b.weight", {32, 3}, kQ8_0);
  g.tensor("c.weight", {4}, kF16);
  return g;
}

TEST(GGUF, EveryValueType) {
  GGUFBuilder g;
  g.kv("u8", GGUFType::UINT8, uint8_t(200));
  g.kv("i8", GGUFType::INT8, int8_t(-5));
  g.kv("u16", GGUFType::UINT16, uint16_t(60000));
  g.kv("i16", GGUFType::INT16, int16_t(-30000));
  g.kv("u32", GGUFType::UINT32, uint32_t(4000000000u));
  g.kv("i32", GGUFType::INT32, int32_t(-2000000000));
  g.kv("u64", GGUFType::UINT64, uint64_t(1) << 40);
  g.kv("u64big", GGUFType::UINT64, std::numeric_limits<uint64_t>::max());
  g.kv("i64", GGUFType::INT64, int64_t(-(int64_t(1) << 50)));
  g.kv("f32", GGUFType::FLOAT32, 1.5f);
  g.kv("f64", GGUFType::FLOAT64, -2.25);
  g.kv("t", GGUFType::BOOL, uint8_t(1));
  g.kv("f", GGUFType::BOOL, uint8_t(0));
  g.kv_string("s", "héllo");
  g.kv_string("empty", "");
  {
    ByteWriter items;
    for (int32_t v : {1, -2, 3}) items.put(v);
    g.kv_raw("ints", uint32_t(GGUFType::ARRAY), array_bytes(GGUFType::INT32, 3, items.b));
  }
  {
    ByteWriter items;
    for (const char* s : {"a", "", "ccc"}) items.str(s);
    g.kv_raw("strs", uint32_t(GGUFType::ARRAY), array_bytes(GGUFType::STRING, 3, items.b));
  }
  {  // [[1.0, 2.0], []] as an array of FLOAT32 arrays
    ByteWriter items;
    ByteWriter inner;
    inner.put(1.0f);
    inner.put(2.0f);
    items.raw(array_bytes(GGUFType::FLOAT32, 2, inner.b));
    items.raw(array_bytes(GGUFType::FLOAT32, 0, {}));
    g.kv_raw("nested", uint32_t(GGUFType::ARRAY), array_bytes(GGUFType::ARRAY, 2, items.b));
  }
  g.kv_raw("empty_arr", uint32_t(GGUFType::ARRAY), array_bytes(GGUFType::UINT64, 0, {}));

  GGUFFile f = parse_bytes(g.build());
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.metadata().size(), 19u);
  EXPECT_EQ(f.metadata()[0].first, "u8");  // file order kept
  EXPECT_EQ(f.get_int("u8"), 200);
  EXPECT_EQ(f.get_int("i8"), -5);
  EXPECT_EQ(f.get_int("u16"), 60000);
  EXPECT_EQ(f.get_int("i16"), -30000);
  EXPECT_EQ(f.get_int("u32"), 4000000000ll);
  EXPECT_EQ(f.get_int("i32"), -2000000000);
  EXPECT_EQ(f.get_int("u64"), int64_t(1) << 40);
  EXPECT_EQ(f.get_int("u64big"), std::nullopt);  // does not fit int64
  EXPECT_EQ(f.find("u64big")->type, GGUFType::UINT64);
  EXPECT_EQ(f.get_int("i64"), -(int64_t(1) << 50));
  EXPECT_EQ(f.get_float("f32"), 1.5);
  EXPECT_EQ(f.get_float("f64"), -2.25);
  EXPECT_EQ(f.get_float("u16"), 60000.0);  // integers read as floats
  EXPECT_EQ(f.get_int("f32"), std::nullopt);
  EXPECT_EQ(f.get_bool("t"), true);
  EXPECT_EQ(f.get_bool("f"), false);
  EXPECT_EQ(f.get_int("t"), std::nullopt);
  EXPECT_EQ(f.get_string("s"), "héllo");
  EXPECT_EQ(f.get_string("empty"), "");
  EXPECT_EQ(f.get_string("u8"), std::nullopt);
  EXPECT_EQ(f.find("missing"), nullptr);

  const GGUFArray* ints = f.get_array("ints");
  ASSERT_NE(ints, nullptr);
  EXPECT_EQ(ints->elem_type, GGUFType::INT32);
  ASSERT_EQ(ints->items.size(), 3u);
  EXPECT_EQ(ints->items[1].as_int(), -2);
  const GGUFArray* strs = f.get_array("strs");
  ASSERT_NE(strs, nullptr);
  ASSERT_EQ(strs->items.size(), 3u);
  EXPECT_EQ(*strs->items[0].as_string(), "a");
  EXPECT_EQ(*strs->items[1].as_string(), "");
  EXPECT_EQ(*strs->items[2].as_string(), "ccc");
  const GGUFArray* nested = f.get_array("nested");
  ASSERT_NE(nested, nullptr);
  EXPECT_EQ(nested->elem_type, GGUFType::ARRAY);
  ASSERT_EQ(nested->items.size(), 2u);
  const GGUFArray* inner0 = nested->items[0].as_array();
  ASSERT_NE(inner0, nullptr);
  ASSERT_EQ(inner0->items.size(), 2u);
  EXPECT_EQ(inner0->items[1].as_float(), 2.0);
  EXPECT_EQ(nested->items[1].as_array()->items.size(), 0u);
  EXPECT_EQ(f.get_array("empty_arr")->items.size(), 0u);
  EXPECT_EQ(f.get_array("s"), nullptr);
  EXPECT_TRUE(f.tensors().empty());
}

TEST(GGUF, RequireNamesKeyAndType) {
  GGUFBuilder g;
  g.kv_string("name", "x");
  g.kv("n", GGUFType::INT32, int32_t(7));
  g.kv("flag", GGUFType::BOOL, uint8_t(1));
  GGUFFile f = parse_bytes(g.build());
  EXPECT_EQ(f.require_int("n"), 7);
  EXPECT_EQ(f.require_float("n"), 7.0);
  EXPECT_EQ(f.require_string("name"), "x");
  try {
    f.require_int("llama.block_count");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing required key 'llama.block_count' (expected integer)"),
              std::string::npos)
        << e.what();
  }
  try {
    f.require_int("name");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'name' has type STRING"), std::string::npos) << e.what();
  }
  EXPECT_THROW(f.require_int("flag"), Error);  // a bool is not an integer
  EXPECT_THROW(f.require_string("n"), Error);
  EXPECT_THROW(f.require_float("name"), Error);
}

TEST(GGUF, TensorsOfEveryType) {
  GGUFBuilder g;
  g.version = 2;  // v2 has the same layout for little-endian files
  g.tensor("f32", {5, 3}, kF32);
  g.tensor("f16", {7}, kF16);
  g.tensor("bf16", {2, 2, 2}, kBF16);
  g.tensor("q4_0", {64, 2}, kQ4_0);
  g.tensor("q4_1", {32, 1, 3}, kQ4_1);
  g.tensor("q8_0", {96, 2}, kQ8_0);
  g.tensor("q4_k", {256, 2}, kQ4_K);
  g.tensor("q6_k", {512, 1, 1, 2}, kQ6_K);
  g.tensor("q5_0", {576, 3}, kQ5_0);  // rows that are not a multiple of 256, as Q4_K_M files have
  g.tensor("q5_1", {32, 5}, kQ5_1);
  g.tensor("q5_k", {768, 2}, kQ5_K);
  auto bytes = g.build();
  GGUFFile f = parse_bytes(bytes);
  EXPECT_EQ(f.version(), 2u);
  EXPECT_EQ(f.alignment(), 32u);
  EXPECT_EQ(f.data_offset() % 32, 0u);
  const DType want[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q4_0, DType::Q4_1, DType::Q8_0,
                        DType::Q4_K, DType::Q6_K, DType::Q5_0, DType::Q5_1, DType::Q5_K};
  ASSERT_EQ(f.tensors().size(), std::size(want));
  const uint8_t* base = f.file()->data();
  for (size_t i = 0; i < std::size(want); ++i) {
    const HostTensor& t = f.tensors()[i];
    EXPECT_EQ(t.name, g.tensors[i].name);
    EXPECT_EQ(t.dtype, want[i]) << t.name;
    ASSERT_EQ(t.nbytes, g.tensors[i].data.size()) << t.name;
    ASSERT_GE(t.data, base + f.data_offset());
    ASSERT_LE(t.data + t.nbytes, base + f.file()->size());
    EXPECT_EQ(size_t(t.data - base - f.data_offset()) % 32, 0u) << t.name;
    EXPECT_EQ(std::vector<uint8_t>(t.data, t.data + t.nbytes), g.tensors[i].data) << t.name;
    EXPECT_EQ(f.find_tensor(t.name), &t);
  }
  EXPECT_EQ(f.find_tensor("f32")->shape, (std::vector<int64_t>{3, 5}));  // outermost first
  EXPECT_EQ(f.find_tensor("f32")->rows(), 3);
  EXPECT_EQ(f.find_tensor("f32")->cols(), 5);
  EXPECT_EQ(f.find_tensor("bf16")->shape, (std::vector<int64_t>{2, 2, 2}));
  EXPECT_EQ(f.find_tensor("q4_1")->shape, (std::vector<int64_t>{3, 1, 32}));
  EXPECT_EQ(f.find_tensor("q6_k")->shape, (std::vector<int64_t>{2, 1, 1, 512}));
  EXPECT_EQ(f.find_tensor("q6_k")->nbytes, 4u * 210u);
  EXPECT_EQ(f.find_tensor("q5_0")->shape, (std::vector<int64_t>{3, 576}));
  EXPECT_EQ(f.find_tensor("q5_0")->nbytes, 3u * 18u * 22u);
  EXPECT_EQ(f.find_tensor("q5_1")->nbytes, 5u * 24u);
  EXPECT_EQ(f.find_tensor("q5_k")->nbytes, 2u * 3u * 176u);
  EXPECT_EQ(f.find_tensor("nope"), nullptr);
}

TEST(GGUF, CustomAlignment) {
  for (uint32_t a : {1u, 8u, 64u, 256u}) {
    GGUFBuilder g;
    g.set_alignment(a);
    g.tensor("x", {3}, kF32);  // 12 bytes: the next tensor needs padding unless a <= 4
    g.tensor("y", {5}, kF16);
    GGUFFile f = parse_bytes(g.build());
    EXPECT_EQ(f.alignment(), a);
    EXPECT_EQ(f.data_offset() % a, 0u);
    const HostTensor* y = f.find_tensor("y");
    if (a >= 4) {
      EXPECT_EQ(size_t(y->data - f.file()->data() - f.data_offset()), (12 + a - 1) / a * a);
    }
    EXPECT_EQ(std::vector<uint8_t>(y->data, y->data + y->nbytes), g.tensors[1].data);
  }
}

TEST(GGUF, MisalignedDataIsReadFromAnAlignedCopy) {
  // general.alignment = 1 lets data start at any byte; the backends read it through float* and
  // uint16_t* (UB when misaligned), so such tensors come back as aligned copies of their bytes.
  int misaligned = 0;
  for (const std::string name : {"a", "ab", "abc", "abcd"}) {
    GGUFBuilder g;
    g.set_alignment(1);
    g.tensor(name, {3}, kF16);  // 6 bytes: the F32 after it is 2 bytes off a 4-byte boundary
    g.tensor("f32", {5}, kF32);
    g.tensor("q8", {32}, kQ8_0);
    auto bytes = g.build();
    GGUFFile f = parse_bytes(bytes);
    const uint8_t* mapped = f.file()->data() + f.data_offset();
    for (size_t i = 0; i < g.tensors.size(); ++i) {
      const HostTensor* t = f.find_tensor(g.tensors[i].name);
      ASSERT_NE(t, nullptr);
      EXPECT_EQ(reinterpret_cast<uintptr_t>(t->data) % tensor_data_alignment(t->dtype), 0u) << t->name;
      EXPECT_EQ(std::vector<uint8_t>(t->data, t->data + t->nbytes), g.tensors[i].data) << t->name;
    }
    const HostTensor* f32 = f.find_tensor("f32");
    if (reinterpret_cast<uintptr_t>(mapped + 6) % 4 != 0) {
      ++misaligned;
      EXPECT_TRUE(f32->data < f.file()->data() || f32->data >= f.file()->data() + f.file()->size());
    }
  }
  EXPECT_GT(misaligned, 0);  // some layout above put the F32 data off its alignment in the file
}

TEST(GGUF, TruncationSweep) {
  auto bytes = small_file().build();
  ASSERT_NO_THROW(parse_bytes(bytes));
  for (size_t n = 0; n < bytes.size(); ++n) {
    std::vector<uint8_t> prefix(bytes.begin(), bytes.begin() + n);
    EXPECT_THROW(parse_bytes(prefix), Error) << "prefix of " << n << " bytes parsed";
  }
  // A cut inside a tensor info names the tensor and the field.
  GGUFBuilder g;
  const std::string name = "blk.0.attn_q.weight.with.a.long.name";  // 36 bytes: passes the count check
  g.tensor(name, {4, 4}, kF32);
  auto one = g.build();
  one.resize(24 + 8 + 36 + 4 + 3);  // header, name, n_dims, then 3 bytes of the first dim
  expect_error(one, {"at byte 72", "truncated", "dimension of tensor '" + name + "'"});
}

TEST(GGUF, BadMagicAndVersion) {
  GGUFBuilder g = small_file();
  g.magic = 0x46554746;
  expect_error(g.build(), {"at byte 0", "magic", "GGUF"});
  g = small_file();
  g.version = 1;
  expect_error(g.build(), {"at byte 4", "version 1", "expected 2 or 3"});
  g.version = 0x03000000;  // a v3 file written big-endian
  expect_error(g.build(), {"big-endian"});
  expect_error({}, {"at byte 0", "truncated", "magic"});
}

TEST(GGUF, AbsurdCountsFailBeforeAllocating) {
  GGUFBuilder g = small_file();
  g.n_kv_override = uint64_t(1) << 60;
  expect_error(g.build(), {"at byte 16", "metadata count 1152921504606846976", "cannot fit"});
  g = small_file();
  g.n_tensors_override = std::numeric_limits<uint64_t>::max();
  expect_error(g.build(), {"at byte 8", "tensor count", "cannot fit"});

  g = small_file();  // array length far beyond the file
  g.kv_raw("big", uint32_t(GGUFType::ARRAY), array_bytes(GGUFType::UINT32, uint64_t(1) << 62, {}));
  expect_error(g.build(), {"array of 4611686018427387904 UINT32", "cannot fit", "key 'big'"});
}

TEST(GGUF, StringPastEnd) {
  GGUFBuilder g;
  ByteWriter w;
  w.u64(1000);  // claims 1000 bytes, has 3
  w.raw({'a', 'b', 'c'});
  g.kv_raw("s", uint32_t(GGUFType::STRING), w.b);
  expect_error(g.build(), {"string length 1000 runs past the end", "key 's'", "at byte 37"});

  ByteWriter hdr;  // a key whose own length runs past the end
  hdr.u32(0x46554747);
  hdr.u32(3);
  hdr.u64(0);
  hdr.u64(1);
  hdr.u64(uint64_t(1) << 40);
  hdr.raw(std::vector<uint8_t>(16, 'k'));
  expect_error(hdr.b, {"at byte 24", "metadata key length 1099511627776 runs past the end"});
}

TEST(GGUF, BadValueTypeAndBool) {
  GGUFBuilder g;
  g.kv_raw("weird", 13, {0, 0, 0, 0});
  expect_error(g.build(), {"invalid value type 13", "key 'weird'"});
  GGUFBuilder g2;
  g2.kv("b", GGUFType::BOOL, uint8_t(2));
  expect_error(g2.build(), {"invalid BOOL value 2", "key 'b'"});
  GGUFBuilder g3;
  g3.kv_raw("arr", uint32_t(GGUFType::ARRAY), array_bytes(GGUFType(77), 0, {}));
  expect_error(g3.build(), {"invalid array element type 77", "key 'arr'"});
}

TEST(GGUF, NestingDepthLimit) {
  // depth d: d arrays each holding one array, the innermost holding nothing.
  auto nested = [](int depth) {
    std::vector<uint8_t> v = array_bytes(GGUFType::UINT8, 0, {});
    for (int d = 1; d < depth; ++d) v = array_bytes(GGUFType::ARRAY, 1, v);
    return v;
  };
  GGUFBuilder ok;
  ok.kv_raw("deep", uint32_t(GGUFType::ARRAY), nested(GGUFFile::kMaxArrayDepth));
  EXPECT_NO_THROW(parse_bytes(ok.build()));
  GGUFBuilder bad;
  bad.kv_raw("deep", uint32_t(GGUFType::ARRAY), nested(GGUFFile::kMaxArrayDepth + 1));
  expect_error(bad.build(), {"nested 9 deep", "at most 8", "key 'deep'"});
}

TEST(GGUF, DuplicateKeysAndTensors) {
  GGUFBuilder g = small_file();
  g.kv("llama.block_count", GGUFType::UINT32, uint32_t(3));
  expect_error(g.build(), {"duplicate metadata key 'llama.block_count'"});
  g = small_file();
  g.tensor("a.weight", {4}, kF32);
  expect_error(g.build(), {"tensor 'a.weight'", "duplicate tensor name"});
}

TEST(GGUF, BadAlignment) {
  for (uint32_t a : {0u, 48u}) {
    GGUFBuilder g = small_file();
    g.kv("general.alignment", GGUFType::UINT32, a);
    expect_error(g.build(), {"general.alignment", "power-of-two"});
  }
  GGUFBuilder g = small_file();
  g.kv_string("general.alignment", "32");
  expect_error(g.build(), {"general.alignment", "power-of-two"});
}

TEST(GGUF, BadDims) {
  GGUFBuilder g = small_file();
  g.tensor("scalar", {}, kF32, 4);
  expect_error(g.build(), {"tensor 'scalar'", "n_dims is 0", "expected 1..4"});
  g = small_file();
  g.tensor("five", {1, 1, 1, 1, 1}, kF32, 4);
  expect_error(g.build(), {"tensor 'five'", "n_dims is 5"});
  g = small_file();
  g.tensor("zero", {4, 0}, kF32, 4);
  expect_error(g.build(), {"tensor 'zero'", "dimension 1 is 0", "expected > 0"});
  g = small_file();
  g.tensor("neg", {uint64_t(-3)}, kF32, 4);
  expect_error(g.build(), {"tensor 'neg'", "dimension 0 is -3"});
  g = small_file();
  g.tensor("huge", {uint64_t(1) << 32, uint64_t(1) << 32}, kF32, 4);
  expect_error(g.build(), {"tensor 'huge'", "element count overflows"});
  g = small_file();
  g.tensor("bytes", {uint64_t(1) << 62}, kF32, 4);  // numel fits, bytes do not
  expect_error(g.build(), {"tensor 'bytes'", "byte size overflows"});
  g = small_file();
  g.tensor("ragged", {48, 2}, kQ8_0, 34 * 3);
  expect_error(g.build(), {"tensor 'ragged'", "first dimension 48", "Q8_0 block size 32"});
  g = small_file();
  g.tensor("ragged_k", {128}, kQ4_K, 144);
  expect_error(g.build(), {"tensor 'ragged_k'", "Q4_K block size 256"});
  g = small_file();
  g.tensor("ragged_q5_k", {576}, kQ5_K, 176 * 2);  // a 576-wide row cannot be Q5_K
  expect_error(g.build(), {"tensor 'ragged_q5_k'", "first dimension 576", "Q5_K block size 256"});
  g = small_file();
  g.tensor("ragged_q5_0", {48}, kQ5_0, 22 * 2);
  expect_error(g.build(), {"tensor 'ragged_q5_0'", "Q5_0 block size 32"});
}

TEST(GGUF, UnsupportedTensorType) {
  // The message names the type and lists every type the loader takes.
  const std::string supported = "(supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K)";
  GGUFBuilder g = small_file();
  g.tensor("blk.0.ffn_down.weight", {256}, kQ3_K, 110);
  expect_error(g.build(), {"tensor 'blk.0.ffn_down.weight'", "unsupported tensor type Q3_K (type 11)", supported});
  g = small_file();
  g.tensor("odd", {4}, 99, 4);
  expect_error(g.build(), {"tensor 'odd'", "unknown type 99", supported});
  EXPECT_EQ(ggml_type_describe(30), "BF16 (type 30)");
  EXPECT_EQ(ggml_type_describe(39), "MXFP4 (type 39)");
  EXPECT_EQ(ggml_type_describe(40), "unknown type 40");
}

TEST(GGUF, MisalignedOffset) {
  GGUFBuilder g = small_file();
  g.tensors[1].offset = 36;
  expect_error(g.build(), {"tensor 'b.weight'", "data offset 36", "alignment 32"});
}

TEST(GGUF, DataPastEnd) {
  GGUFBuilder g = small_file();
  g.tensors[2].offset = 4096;
  expect_error(g.build(), {"tensor 'c.weight'", "runs past the end of the file"});
  g = small_file();
  g.tensors[0].offset = uint64_t(-32);  // aligned, but offset + size wraps
  expect_error(g.build(), {"tensor 'a.weight'", "overflows"});
}

TEST(GGUF, OverlappingTensors) {
  GGUFBuilder g = small_file();
  g.tensors[2].offset = 64;  // inside b.weight [64, 166)
  expect_error(g.build(), {"overlaps", "b.weight", "c.weight"});
}

TEST(GGUF, SmolLM2Model) {
  const std::string path = std::string(GRETA_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!std::filesystem::exists(path))
    GTEST_SKIP() << "default model not found at " << path << " (scripts/fetch-default-model.sh)";
  GGUFFile f = GGUFFile::open(path);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.tensors().size(), 272u);
  EXPECT_EQ(f.require_string("general.architecture"), "llama");
  EXPECT_EQ(f.require_int("llama.block_count"), 30);
  EXPECT_EQ(f.require_int("llama.embedding_length"), 576);
  const GGUFArray* tokens = f.get_array("tokenizer.ggml.tokens");
  ASSERT_NE(tokens, nullptr);
  EXPECT_EQ(tokens->items.size(), 49152u);
  const HostTensor* emb = f.find_tensor("token_embd.weight");
  ASSERT_NE(emb, nullptr);
  EXPECT_EQ(emb->shape, (std::vector<int64_t>{49152, 576}));
  EXPECT_EQ(emb->dtype, DType::Q8_0);
  EXPECT_EQ(emb->nbytes, size_t(49152) * 576 / 32 * 34);
  const HostTensor* q = f.find_tensor("blk.0.attn_q.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->dtype, DType::Q4_1);
  EXPECT_EQ(q->shape, (std::vector<int64_t>{576, 576}));
  EXPECT_EQ(f.find_tensor("blk.29.attn_norm.weight")->dtype, DType::F32);
}

}  // namespace
}  // namespace greta
