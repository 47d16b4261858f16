// Gemma 3 at load (GGUF "gemma3"): the fields that differ from Llama (embedding scale, post
// norms, GeGLU, per-head q/k norms, halves RoPE), the per-layer sliding window and local RoPE
// base, llama.cpp's attention scale; what is refused (logit soft-capping, a bad layer pattern,
// a missing post norm).
#include <gtest/gtest.h>

#include <cmath>
#include <optional>
#include <vector>

#include "core/error.h"
#include "error_test_util.h"
#include "formats_test_util.h"
#include "model_gguf_test_util.h"
#include "model/model_file.h"
#include "model/synthetic.h"

namespace greta {
namespace {

using test::ByteWriter;
using test::GGUFBuilder;
using test::TempDir;

constexpr uint32_t kF32 = 0;

struct Gemma3File {
  int layers = 7;
  int64_t window = 8;  // 0: no sliding_window key
  std::optional<uint32_t> pattern;
  std::optional<std::vector<bool>> pattern_flags;
  std::optional<float> local_base, final_softcap, linear_rope;
  bool with_ffn_post_norm = true;

  // dim 16, 2 heads of head_dim 16 (q 32 wide), 1 kv head, ffn 8, vocab 4, tied embeddings.
  GGUFBuilder build() const {
    GGUFBuilder g;
    g.kv_string("general.architecture", "gemma3");
    g.kv("gemma3.block_count", GGUFType::UINT32, uint32_t(layers));
    g.kv("gemma3.embedding_length", GGUFType::UINT32, uint32_t(16));
    g.kv("gemma3.feed_forward_length", GGUFType::UINT32, uint32_t(8));
    g.kv("gemma3.attention.head_count", GGUFType::UINT32, uint32_t(2));
    g.kv("gemma3.attention.head_count_kv", GGUFType::UINT32, uint32_t(1));
    g.kv("gemma3.attention.key_length", GGUFType::UINT32, uint32_t(16));
    g.kv("gemma3.rope.freq_base", GGUFType::FLOAT32, 1e6f);
    if (window > 0) g.kv("gemma3.attention.sliding_window", GGUFType::UINT32, uint32_t(window));
    if (pattern) g.kv("gemma3.attention.sliding_window_pattern", GGUFType::UINT32, *pattern);
    if (pattern_flags) {
      ByteWriter w;
      w.u32(uint32_t(GGUFType::BOOL));
      w.u64(pattern_flags->size());
      for (bool b : *pattern_flags) w.u8(b ? 1 : 0);
      g.kv_raw("gemma3.attention.sliding_window_pattern", uint32_t(GGUFType::ARRAY), w.b);
    }
    if (local_base) g.kv("gemma3.rope.freq_base_swa", GGUFType::FLOAT32, *local_base);
    if (final_softcap) g.kv("gemma3.final_logit_softcapping", GGUFType::FLOAT32, *final_softcap);
    if (linear_rope) {  // Gemma 3 4B and larger: the global layers' RoPE slowed by a factor
      g.kv_string("gemma3.rope.scaling.type", "linear");
      g.kv("gemma3.rope.scaling.factor", GGUFType::FLOAT32, *linear_rope);
    }
    g.tensor("token_embd.weight", {16, 4}, kF32);
    g.tensor("output_norm.weight", {16}, kF32);
    for (int l = 0; l < layers; ++l) {
      const std::string b = "blk." + std::to_string(l) + ".";
      g.tensor(b + "attn_norm.weight", {16}, kF32);
      g.tensor(b + "attn_q.weight", {16, 32}, kF32);
      g.tensor(b + "attn_k.weight", {16, 16}, kF32);
      g.tensor(b + "attn_v.weight", {16, 16}, kF32);
      g.tensor(b + "attn_output.weight", {32, 16}, kF32);
      g.tensor(b + "attn_q_norm.weight", {16}, kF32);
      g.tensor(b + "attn_k_norm.weight", {16}, kF32);
      g.tensor(b + "post_attention_norm.weight", {16}, kF32);
      g.tensor(b + "ffn_norm.weight", {16}, kF32);
      g.tensor(b + "ffn_gate.weight", {16, 8}, kF32);
      g.tensor(b + "ffn_up.weight", {16, 8}, kF32);
      g.tensor(b + "ffn_down.weight", {8, 16}, kF32);
      if (with_ffn_post_norm || l != 2) g.tensor(b + "post_ffw_norm.weight", {16}, kF32);
    }
    return g;
  }
};

std::unique_ptr<ModelFile> open(const Gemma3File& spec, TempDir& dir) { return test::open_gguf(spec.build(), dir); }
std::string open_error(const Gemma3File& spec) { return test::open_gguf_error(spec.build()); }
using test::layer_windows;

}  // namespace

TEST(ModelGemma3, GgufLoadsGemmaFields) {
  TempDir dir;
  auto f = open(Gemma3File{}, dir);
  const ModelConfig& c = f->config();
  EXPECT_EQ(c.arch, "gemma3");
  EXPECT_TRUE(c.qk_norm && c.post_norms && c.rope_neox && c.tied_embeddings);
  EXPECT_EQ(c.ffn_act, ModelConfig::FfnAct::GeluTanh);
  EXPECT_EQ(c.embed_scale, 4.0f);           // sqrt(16)
  EXPECT_EQ(c.attn_scale, 0.25f);           // 1 / sqrt(head_dim 16), not 1 / sqrt(dim / heads)
  EXPECT_EQ(c.rope_local_theta, 10000.0f);  // llama.cpp's default local base
  EXPECT_EQ(c.rope_theta, 1e6f);
  // Every 6th layer global (llama.cpp's default pattern); the others windowed with the local base.
  EXPECT_EQ(layer_windows(c), (std::vector<int>{8, 8, 8, 8, 8, 0, 8}));
  EXPECT_TRUE(c.layer_local_rope(0) && !c.layer_local_rope(5) && c.layer_local_rope(6));
  EXPECT_EQ(f->layer_tensor(4, Role::AttnPostNorm)->name, "blk.4.post_attention_norm.weight");
  EXPECT_EQ(f->layer_tensor(4, Role::FfnPostNorm)->name, "blk.4.post_ffw_norm.weight");
  // The local table has the local base; the global one the file's.
  const auto local = c.rope_local_inv_freq(), global = c.rope_inv_freq();
  EXPECT_NEAR(local[1], std::pow(10000.0, -2.0 / 16), 1e-7);
  EXPECT_NEAR(global[1], std::pow(1e6, -2.0 / 16), 1e-7);
}

TEST(ModelGemma3, LayerPatternFromTheFile) {
  TempDir d1, d2, d3, d4;
  Gemma3File every_other;
  every_other.pattern = 2;
  every_other.local_base = 5000.0f;
  auto f = open(every_other, d1);
  EXPECT_EQ(layer_windows(f->config()), (std::vector<int>{8, 0, 8, 0, 8, 0, 8}));
  EXPECT_EQ(f->config().rope_local_theta, 5000.0f);

  Gemma3File flags;
  flags.pattern_flags = std::vector<bool>{false, true, true, false, true, true, true};
  EXPECT_EQ(layer_windows(open(flags, d2)->config()), (std::vector<int>{0, 8, 8, 0, 8, 8, 8}));

  Gemma3File all_windowed;
  all_windowed.pattern = 0;
  EXPECT_EQ(layer_windows(open(all_windowed, d3)->config()), (std::vector<int>(7, 8)));

  // No window: every layer global, with the global RoPE (llama.cpp builds Gemma 3 without SWA).
  Gemma3File no_window;
  no_window.window = 0;
  const ModelConfig c = open(no_window, d4)->config();
  EXPECT_EQ(layer_windows(c), (std::vector<int>(7, 0)));
  EXPECT_FALSE(c.layer_local_rope(0));
}

// Linear RoPE scaling reaches the global layers only (llama.cpp: freq_scale_swa stays 1).
TEST(ModelGemma3, LinearRopeScalingOnlyInGlobalLayers) {
  TempDir dir;
  Gemma3File scaled;
  scaled.linear_rope = 8.0f;
  const ModelConfig c = open(scaled, dir)->config();
  EXPECT_EQ(c.rope_inv_freq()[0], 0.125f);
  EXPECT_EQ(c.rope_local_inv_freq()[0], 1.0f);
  EXPECT_NEAR(c.rope_local_inv_freq()[1], std::pow(10000.0, -2.0 / 16), 1e-7);
}

TEST(ModelGemma3, RefusesWhatItDoesNotRun) {
  Gemma3File softcap;
  softcap.final_softcap = 30.0f;
  EXPECT_ERROR_HAS(open_error(softcap), "gemma3.final_logit_softcapping = 30");
  EXPECT_ERROR_HAS(open_error(softcap), "soft-capping");

  Gemma3File short_flags;
  short_flags.pattern_flags = std::vector<bool>{true, false};
  EXPECT_ERROR_HAS(open_error(short_flags), "sliding_window_pattern has 2 entries (expected one per layer, 7)");

  Gemma3File bad_period;
  bad_period.pattern = 9;
  EXPECT_ERROR_HAS(open_error(bad_period), "sliding_window_pattern = 9");

  Gemma3File bad_base;
  bad_base.local_base = -1.0f;
  EXPECT_ERROR_HAS(open_error(bad_base), "gemma3.rope.freq_base_swa = -1");

  Gemma3File missing;
  missing.with_ffn_post_norm = false;
  EXPECT_ERROR_HAS(open_error(missing), "missing tensor for layer 2 ffn output norm");

  // YaRN's attention factor would reach the local layers too (greta folds it into every layer's
  // score scale); llama.cpp leaves them unscaled.
  GGUFBuilder yarn = Gemma3File{}.build();
  yarn.kv_string("gemma3.rope.scaling.type", "yarn");
  yarn.kv("gemma3.rope.scaling.factor", GGUFType::FLOAT32, 8.0f);
  TempDir dir;
  dir.write("m.gguf", yarn.build());
  EXPECT_ERROR_HAS(test::error_of([&] { ModelFile::open((dir.path() / "m.gguf").string()); }),
                   "a RoPE attention factor (YaRN) with local-RoPE sliding-window layers is not supported");
}

// The synthetic shapes load the same fields as a GGUF file (and validate, post norms included).
TEST(ModelGemma3, SyntheticShapes) {
  const ModelConfig c = synthetic_config("gemma-3-1b");
  EXPECT_EQ(c.arch, "gemma3");
  EXPECT_TRUE(c.qk_norm && c.post_norms && c.rope_neox && c.tied_embeddings);
  EXPECT_EQ(c.ffn_act, ModelConfig::FfnAct::GeluTanh);
  EXPECT_EQ((std::vector<int>{c.n_layers, c.dim, c.n_heads, c.n_kv_heads, c.head_dim, c.ffn_dim, c.vocab_size}),
            (std::vector<int>{26, 1152, 4, 1, 256, 6912, 262144}));
  EXPECT_EQ(c.embed_scale, std::sqrt(1152.0f));
  EXPECT_EQ(c.layer_window(4), 512);
  EXPECT_EQ(c.layer_window(5), 0);
  EXPECT_EQ(c.rope_local_theta, 10000.0f);
  auto f = ModelFile::synthetic("tiny-gemma3", DType::BF16, 1);  // validated on creation
  EXPECT_EQ(f->layer_tensor(5, Role::FfnPostNorm)->shape, std::vector<int64_t>{512});
  EXPECT_EQ(layer_windows(f->config()), (std::vector<int>{512, 512, 512, 512, 512, 0}));
}

}  // namespace greta
