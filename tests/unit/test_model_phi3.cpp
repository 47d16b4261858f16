// Phi-3: fused q/k/v and gate/up matrices split on row boundaries into views of the file's bytes
// (block-quantized too), LongRoPE read from HF config.json and GGUF, and the settings greta does
// not run (other RoPE scalings, partial rotary) refused at load with their names.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/quant_blocks.h"
#include "error_test_util.h"
#include "formats_test_util.h"
#include "model/longrope.h"
#include "model/model_file.h"
#include "model/partial_rotary.h"

namespace greta {
namespace {

using test::GGUFBuilder;
using test::SafetensorsBuilder;
using test::TempDir;

// dim 32, 2 heads of 16, 1 kv head, ffn 64, vocab 8, one layer: q 32 rows, k and v 16 each.
constexpr int kDim = 32, kFfn = 64, kVocab = 8;

void set_floats(GGUFBuilder::Tensor& t, const std::vector<float>& v) {
  t.data.resize(v.size() * 4);
  std::memcpy(t.data.data(), v.data(), t.data.size());
}

// A GGUF phi3 as llama.cpp's converter writes it: attn_qkv and ffn_up = [gate; up] of `type`.
GGUFBuilder phi3_gguf(uint32_t type) {
  GGUFBuilder g;
  g.kv_string("general.architecture", "phi3");
  g.kv("phi3.block_count", GGUFType::UINT32, uint32_t(1));
  g.kv("phi3.embedding_length", GGUFType::UINT32, uint32_t(kDim));
  g.kv("phi3.feed_forward_length", GGUFType::UINT32, uint32_t(kFfn));
  g.kv("phi3.attention.head_count", GGUFType::UINT32, uint32_t(2));
  g.kv("phi3.attention.head_count_kv", GGUFType::UINT32, uint32_t(1));
  g.kv("phi3.context_length", GGUFType::UINT32, uint32_t(128));
  g.tensor("token_embd.weight", {kDim, kVocab}, test::kF32);
  g.tensor("output_norm.weight", {kDim}, test::kF32);
  g.tensor("output.weight", {kDim, kVocab}, test::kF32);
  g.tensor("blk.0.attn_norm.weight", {kDim}, test::kF32);
  g.tensor("blk.0.attn_qkv.weight", {kDim, 64}, type);
  g.tensor("blk.0.attn_output.weight", {kDim, kDim}, type);
  g.tensor("blk.0.ffn_norm.weight", {kDim}, test::kF32);
  g.tensor("blk.0.ffn_up.weight", {kDim, 2 * kFfn}, type);
  g.tensor("blk.0.ffn_down.weight", {kFfn, kDim}, type);
  return g;
}

// GGUF with LongRoPE factors: short i+1, long 10(i+1), original context 32.
void add_gguf_longrope(GGUFBuilder& g) {
  std::vector<float> s(8), l(8);
  for (int i = 0; i < 8; ++i) s[i] = float(i + 1), l[i] = 10.0f * float(i + 1);
  set_floats(g.tensor("rope_factors_short.weight", {8}, test::kF32), s);
  set_floats(g.tensor("rope_factors_long.weight", {8}, test::kF32), l);
  g.kv("phi3.rope.scaling.original_context_length", GGUFType::UINT32, uint32_t(32));
}

struct Opened {
  TempDir dir;
  std::unique_ptr<ModelFile> m;
};
std::unique_ptr<Opened> open_gguf(const GGUFBuilder& g) {
  auto o = std::make_unique<Opened>();
  o->dir.write("m.gguf", g.build());
  o->m = ModelFile::open((o->dir.path() / "m.gguf").string());
  return o;
}

using test::error_of;

nlohmann::json phi3_config() {
  std::vector<double> s(8, 1.0), l(8, 4.0);
  return {{"architectures", {"Phi3ForCausalLM"}},
          {"model_type", "phi3"},
          {"num_hidden_layers", 1},
          {"hidden_size", kDim},
          {"intermediate_size", kFfn},
          {"num_attention_heads", 2},
          {"num_key_value_heads", 1},
          {"vocab_size", kVocab},
          {"max_position_embeddings", 131072},
          {"original_max_position_embeddings", 4096},
          {"rope_scaling", {{"type", "longrope"}, {"short_factor", s}, {"long_factor", l}}}};
}

std::string open_hf_error(const nlohmann::json& config) {
  TempDir dir;
  dir.write("config.json", config.dump());
  return error_of([&] { ModelFile::open(dir.path().string()); });
}

}  // namespace

TEST(Phi3, GgufFusedQuantizedTensorsSplitIntoRowViews) {
  auto o = open_gguf(phi3_gguf(test::kQ8_0));
  const ModelFile& m = *o->m;
  EXPECT_EQ(m.config().arch, "phi3");
  EXPECT_TRUE(m.config().rope_neox);
  const size_t rb = row_bytes(DType::Q8_0, kDim);  // 34 bytes: one block per row
  const HostTensor* q = m.layer_tensor(0, Role::Wq);
  const HostTensor* k = m.layer_tensor(0, Role::Wk);
  const HostTensor* v = m.layer_tensor(0, Role::Wv);
  ASSERT_TRUE(q && k && v);
  EXPECT_EQ(q->shape, (std::vector<int64_t>{32, kDim}));
  EXPECT_EQ(k->shape, (std::vector<int64_t>{16, kDim}));
  EXPECT_EQ(v->dtype, DType::Q8_0);
  EXPECT_EQ(k->data, q->data + 32 * rb);
  EXPECT_EQ(v->data, q->data + 48 * rb);
  EXPECT_EQ(v->nbytes, 16 * rb);
  const HostTensor* gate = m.layer_tensor(0, Role::WGate);
  const HostTensor* up = m.layer_tensor(0, Role::WUp);
  ASSERT_TRUE(gate && up);
  EXPECT_EQ(gate->shape, (std::vector<int64_t>{kFfn, kDim}));
  EXPECT_EQ(up->data, gate->data + kFfn * rb);  // [gate; up]: gate first, as llama.cpp's swiglu
  // The parts replace the fused tensors in the listing, each once.
  int n_up = 0, n_qkv = 0;
  for (const HostTensor* t : m.all_tensors()) {
    n_up += t->name == "blk.0.ffn_up.weight";
    n_qkv += t->name == "blk.0.attn_qkv.weight";
  }
  EXPECT_EQ(n_up, 1);
  EXPECT_EQ(n_qkv, 0);
  EXPECT_EQ(m.all_tensors().size(), 12u);  // 3 global + 2 norms, q, k, v, o, gate, up, down
}

TEST(Phi3, FusedTensorOfWrongShapeIsRefusedByName) {
  GGUFBuilder g = phi3_gguf(test::kF32);
  g.tensors[4].dims = {kDim, 60};  // attn_qkv: 60 rows, not 32 + 16 + 16
  g.tensors[4].data.resize(60 * kDim * 4);
  TempDir dir;
  dir.write("m.gguf", g.build());
  EXPECT_ERROR_HAS(
      error_of([&] { ModelFile::open((dir.path() / "m.gguf").string()); }),
      "tensor 'blk.0.attn_qkv.weight' (layer 0 fused q, k, v) has shape [60, 32], expected [32 + 16 + 16, 32]");
}

TEST(Phi3, HfFusedTensorsSplit) {
  TempDir dir;
  nlohmann::json config = phi3_config();
  config["sliding_window"] = 2047;
  dir.write("config.json", config.dump());
  SafetensorsBuilder st;
  st.tensor("model.embed_tokens.weight", "F32", {kVocab, kDim});
  st.tensor("model.norm.weight", "F32", {kDim});
  st.tensor("lm_head.weight", "F32", {kVocab, kDim});
  const std::string p = "model.layers.0.";
  st.tensor(p + "input_layernorm.weight", "F32", {kDim});
  st.tensor(p + "post_attention_layernorm.weight", "F32", {kDim});
  st.tensor(p + "self_attn.qkv_proj.weight", "BF16", {64, kDim});
  st.tensor(p + "self_attn.o_proj.weight", "BF16", {kDim, kDim});
  st.tensor(p + "mlp.gate_up_proj.weight", "BF16", {2 * kFfn, kDim});
  st.tensor(p + "mlp.down_proj.weight", "BF16", {kDim, kFfn});
  dir.write("model.safetensors", st.build());
  auto m = ModelFile::open(dir.path().string());
  const HostTensor* q = m->layer_tensor(0, Role::Wq);
  const HostTensor* v = m->layer_tensor(0, Role::Wv);
  ASSERT_TRUE(q && v);
  EXPECT_EQ(q->name, p + "self_attn.q_proj.weight");
  EXPECT_EQ(v->data, q->data + 48 * kDim * 2);
  EXPECT_EQ(m->layer_tensor(0, Role::WUp)->data, m->layer_tensor(0, Role::WGate)->data + kFfn * kDim * 2);
  // LongRoPE from config.json: factor 131072 / 4096 = 32 gives sqrt(1 + ln 32 / ln 4096).
  const ModelConfig& c = m->config();
  EXPECT_EQ(c.rope_original_context, 4096);
  EXPECT_NEAR(c.rope_attn_factor, std::sqrt(1.0 + std::log(32.0) / std::log(4096.0)), 1e-6);
  EXPECT_EQ(c.rope_long_freq_factors, std::vector<float>(8, 4.0f));
  // The sliding window is read (attention honours it on every backend).
  EXPECT_EQ(c.sliding_window, 2047);
  EXPECT_EQ(c.max_context, 131072);
  EXPECT_TRUE(m->load_notes().empty());
  const std::vector<float> s = c.rope_inv_freq(false), l = c.rope_inv_freq(true);
  for (int i = 0; i < 8; ++i) {
    const double base = 1.0 / std::pow(10000.0, 2.0 * i / 16.0);
    EXPECT_FLOAT_EQ(s[i], float(base));
    EXPECT_FLOAT_EQ(l[i], float(base / 4.0));
  }
}

TEST(Phi3, HfLongRopeSettingsAndRefusals) {
  nlohmann::json c = phi3_config();
  c["rope_scaling"]["long_factor"] = std::vector<double>(7, 1.0);
  EXPECT_ERROR_HAS(open_hf_error(c), "'rope_scaling.long_factor' has 7 values, expected rope_dim/2 = 8");
  c = phi3_config();
  c["rope_scaling"].erase("short_factor");
  EXPECT_ERROR_HAS(open_hf_error(c), "needs 'rope_scaling.short_factor'");
  c = phi3_config();
  c["rope_scaling"]["short_factor"][3] = 0.0;
  EXPECT_ERROR_HAS(open_hf_error(c), "rope_scaling.short_factor value 3 = 0 (expected a finite number > 0)");
  c = phi3_config();
  c["rope_scaling"]["attention_factor"] = -1.0;
  EXPECT_ERROR_HAS(open_hf_error(c), "rope_scaling.attention_factor = -1");
  // RoPE scalings greta does not implement are refused by name, not run unscaled.
  for (const char* type : {"ntk", "longrope2"}) {
    c = phi3_config();
    c["rope_scaling"]["type"] = type;
    EXPECT_ERROR_HAS(open_hf_error(c), "unsupported rope_scaling type '" + std::string(type) + "'");
  }
  // "yarn" is longrope to transformers' Phi3Config (its factor lists required); dynamic is refused.
  c = phi3_config();
  c["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  EXPECT_ERROR_HAS(open_hf_error(c), "needs 'rope_scaling.short_factor'");
  c["rope_scaling"]["rope_type"] = "dynamic";
  EXPECT_ERROR_HAS(open_hf_error(c), "type 'dynamic' on phi3");
  // Partial rotary (Phi-4-mini): the factor lists then cover the rotated dims only (16 * 0.75 / 2).
  c = phi3_config();
  c["partial_rotary_factor"] = 0.75;
  EXPECT_ERROR_HAS(open_hf_error(c), "'rope_scaling.short_factor' has 8 values, expected rope_dim/2 = 6");
  for (double bad : {0.0, 1.5, 0.1}) {  // 0.1: int(1.6) = 1 rotated dim
    c = phi3_config();
    c["partial_rotary_factor"] = bad;
    EXPECT_ERROR_HAS(open_hf_error(c), "partial_rotary_factor = ");
  }
  c = phi3_config();
  c["architectures"] = {"LlamaForCausalLM"};
  c["model_type"] = "llama";
  c.erase("rope_scaling");
  c["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 10000.0}, {"partial_rotary_factor", 0.5}};
  EXPECT_ERROR_HAS(open_hf_error(c),
                   "partial_rotary_factor = 0.5 (partial rotary embedding is supported for phi3 only)");
  // "su" is the older name of longrope; good settings get past to the missing weights.
  c = phi3_config();
  c["rope_scaling"]["type"] = "su";
  c["partial_rotary_factor"] = 1.0;
  EXPECT_ERROR_HAS(open_hf_error(c), "no model.safetensors");
}

TEST(Phi3, GgufLongRope) {
  GGUFBuilder g = phi3_gguf(test::kF32);
  add_gguf_longrope(g);
  g.kv("phi3.rope.scaling.attn_factor", GGUFType::FLOAT32, 1.25f);
  auto o = open_gguf(g);
  const ModelConfig& c = o->m->config();
  EXPECT_EQ(c.rope_original_context, 32);
  EXPECT_FLOAT_EQ(c.rope_attn_factor, 1.25f);
  EXPECT_FLOAT_EQ(c.rope_freq_factors[7], 8.0f);
  EXPECT_FLOAT_EQ(c.rope_long_freq_factors[7], 80.0f);
  // Without attn_factor: the default from context_length / original_context_length = 4.
  g = phi3_gguf(test::kF32);
  add_gguf_longrope(g);
  o = open_gguf(g);
  EXPECT_NEAR(o->m->config().rope_attn_factor, std::sqrt(1.0 + std::log(4.0) / std::log(32.0)), 1e-6);
  EXPECT_EQ(o->m->config().max_context, 128);
  EXPECT_EQ(o->m->config().sliding_window, 0);
  // llama.cpp's converter writes sliding_window 0 for none; a window is read as it is.
  g.kv("phi3.attention.sliding_window", GGUFType::UINT32, uint32_t(0));
  EXPECT_EQ(open_gguf(g)->m->config().sliding_window, 0);
  g = phi3_gguf(test::kF32);
  add_gguf_longrope(g);
  g.kv("phi3.attention.sliding_window", GGUFType::UINT32, uint32_t(100));
  o = open_gguf(g);
  EXPECT_EQ(o->m->config().sliding_window, 100);
  EXPECT_EQ(o->m->config().max_context, 128);
  // A factor table without the original context length, or partial rotary: refused.
  g = phi3_gguf(test::kF32);
  set_floats(g.tensor("rope_factors_short.weight", {8}, test::kF32), std::vector<float>(8, 1.0f));
  set_floats(g.tensor("rope_factors_long.weight", {8}, test::kF32), std::vector<float>(8, 2.0f));
  TempDir dir;
  dir.write("m.gguf", g.build());
  EXPECT_ERROR_HAS(error_of([&] { ModelFile::open((dir.path() / "m.gguf").string()); }),
                   "phi3.rope.scaling.original_context_length");
  g = phi3_gguf(test::kF32);
  g.kv("phi3.rope.dimension_count", GGUFType::UINT32, uint32_t(13));
  dir.write("m.gguf", g.build());
  EXPECT_ERROR_HAS(error_of([&] { ModelFile::open((dir.path() / "m.gguf").string()); }),
                   "phi3.rope.dimension_count = 13 but head_dim = 16 (partial rotary embedding: phi3 only, an even");
  // rope.scaling.type "longrope" (llama.cpp's name for it) with the factor tensors; without them
  // or with YaRN next to them: refused.
  g = phi3_gguf(test::kF32);
  add_gguf_longrope(g);
  g.kv_string("phi3.rope.scaling.type", "longrope");
  EXPECT_FLOAT_EQ(open_gguf(g)->m->config().rope_long_freq_factors[7], 80.0f);
  g = phi3_gguf(test::kF32);
  g.kv_string("phi3.rope.scaling.type", "longrope");
  dir.write("m.gguf", g.build());
  EXPECT_ERROR_HAS(error_of([&] { ModelFile::open((dir.path() / "m.gguf").string()); }),
                   "'longrope' needs tensor 'rope_factors_long.weight'");
  g = phi3_gguf(test::kF32);
  add_gguf_longrope(g);
  g.kv_string("phi3.rope.scaling.type", "yarn");
  dir.write("m.gguf", g.build());
  EXPECT_ERROR_HAS(error_of([&] { ModelFile::open((dir.path() / "m.gguf").string()); }),
                   "YaRN together with LongRoPE factor tensors");
}

TEST(Phi3, PartialRotaryReordersQAndKRowsPerHead) {
  // head_dim 8, 4 rotated: pairs (0, 2) and (1, 3) of the checkpoint go to (0, 4) and (1, 5);
  // the pass-through dims 4..7 fill slots 2, 3, 6, 7, whose frequencies are 0.
  EXPECT_EQ(partial_rotary_order(8, 4), (std::vector<int>{0, 1, 4, 5, 2, 3, 6, 7}));
  EXPECT_EQ(partial_rotary_order(8, 8), (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7}));
  ModelConfig c;
  c.head_dim = 8;
  c.rope_dim = 4;
  c.rope_theta = 100.0f;
  EXPECT_EQ(c.rope_inv_freq(), (std::vector<float>{1.0f, 0.1f, 0.0f, 0.0f}));

  // GGUF phi3 of head_dim 16 rotating 12 dims: q (2 heads) and k (1 head) reordered, v kept.
  GGUFBuilder g = phi3_gguf(test::kF32);
  g.kv("phi3.rope.dimension_count", GGUFType::UINT32, uint32_t(12));
  auto o = open_gguf(g);
  const ModelFile& m = *o->m;
  EXPECT_EQ(m.config().rope_dim, 12);
  const std::vector<int> order = partial_rotary_order(16, 12);
  const size_t rb = kDim * 4;
  const HostTensor* q = m.layer_tensor(0, Role::Wq);
  const HostTensor* k = m.layer_tensor(0, Role::Wk);
  const HostTensor* v = m.layer_tensor(0, Role::Wv);
  // The fused tensor's bytes: v is still a view into it, 48 rows after q's start.
  const uint8_t* qkv = v->data - 48 * rb;
  for (int h = 0; h < 2; ++h)
    for (int j = 0; j < 16; ++j)
      EXPECT_EQ(std::memcmp(q->data + (h * 16 + j) * rb, qkv + (h * 16 + order[j]) * rb, rb), 0) << h << " " << j;
  for (int j = 0; j < 16; ++j) EXPECT_EQ(std::memcmp(k->data + j * rb, qkv + (32 + order[j]) * rb, rb), 0) << j;
  int n_q = 0;
  for (const HostTensor* t : m.all_tensors()) n_q += t->name == "blk.0.attn_q.weight";
  EXPECT_EQ(n_q, 1);
}

TEST(Phi3, PassThroughRowsScaleInEveryWeightType) {
  // head_dim 8 rotating 4: rows 2, 3, 6, 7 of each head pass through. A factor of 0.5 is exact in
  // fp16 and bf16, so each pass-through row dequantizes to exactly half, the others unchanged.
  constexpr int kCols = 256, kRows = 16;
  std::vector<float> x(size_t(kRows) * kCols);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * float(i)) * (1.0f + float(i % 7));
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1,
                  DType::Q4_K, DType::Q5_K, DType::Q6_K}) {
    const size_t rb = row_bytes(t, kCols);
    std::vector<uint8_t> bytes(rb * kRows);
    for (int r = 0; r < kRows; ++r) quantize_row(t, x.data() + r * kCols, bytes.data() + r * rb, kCols);
    const std::vector<uint8_t> before = bytes;
    scale_pass_through_rows(bytes.data(), t, kRows, kCols, 8, 4, 0.5f, "q");
    for (int r = 0; r < kRows; ++r) {
      std::vector<float> a(kCols), b(kCols);
      dequantize_row(t, before.data() + r * rb, a.data(), kCols);
      dequantize_row(t, bytes.data() + r * rb, b.data(), kCols);
      const float want = (r % 8) % 4 >= 2 ? 0.5f : 1.0f;
      for (int i = 0; i < kCols; ++i) ASSERT_EQ(b[i], want * a[i]) << dtype_name(t) << " row " << r << " col " << i;
    }
  }
  std::vector<uint8_t> f8(row_bytes(DType::F8_B64, kCols) * kRows);
  EXPECT_ERROR_HAS(error_of([&] { scale_pass_through_rows(f8.data(), DType::F8_B64, kRows, kCols, 8, 4, 0.5f, "q"); }),
                   "tensor 'q' is ");
}

TEST(Phi3, StepUsesLongFactorsPastTheOriginalContext) {
  ModelConfig c;
  c.rope_original_context = 32;
  Batch b;
  b.seqs.push_back({0, 1, 31, {}, -1});     // the 32nd token: still within
  EXPECT_FALSE(rope_step_uses_long(c, b));  // no long factors: never
  c.rope_long_freq_factors.assign(8, 2.0f);
  EXPECT_FALSE(rope_step_uses_long(c, b));
  b.seqs.push_back({1, 1, 32, {}, -1});  // the 33rd token of another sequence: the whole step
  EXPECT_TRUE(rope_step_uses_long(c, b));
  // The first chunk of a 40-token prompt: long from the start, as one prompt forward would be.
  b.seqs = {{0, 16, 0, {}, 40}};
  EXPECT_TRUE(rope_step_uses_long(c, b));
  b.seqs = {{0, 16, 0, {}, 20}};
  EXPECT_FALSE(rope_step_uses_long(c, b));
  EXPECT_FLOAT_EQ(longrope_default_attn_factor(1.0, 4096), 1.0f);
  EXPECT_NEAR(longrope_default_attn_factor(32.0, 4096), 1.1902380714238083, 1e-6);
}

}  // namespace greta
