// Gemma 2 at load (GGUF "gemma2"): Gemma 3's layout without q/k norms, the soft caps (llama.cpp's
// defaults when the file has none), the window in every other layer from the first (4096 when
// the file has none), one RoPE base, llama.cpp's attention scale; what is refused. The forward
// is checked against llama.cpp in tests/e2e/test_gemma2.py. A backend without the caps (CUDA for
// now) gets the model refused at load.
#include <gtest/gtest.h>

#include <cmath>
#include <optional>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"
#include "cpu_delegate_test_util.h"
#include "formats_test_util.h"
#include "model_gguf_test_util.h"
#include "model/llama.h"
#include "model/model_file.h"
#include "model/synthetic.h"

namespace greta {
namespace {

using test::GGUFBuilder;
using test::TempDir;

constexpr uint32_t kF32 = 0;

struct Gemma2File {
  int layers = 5;
  std::optional<int64_t> window = 8;
  std::optional<float> attn_softcap = 50.0f, final_softcap = 30.0f;
  std::optional<uint32_t> pattern;

  // dim 16, 2 heads of head_dim 8, 1 kv head, ffn 8, vocab 4, tied embeddings.
  GGUFBuilder build() const {
    GGUFBuilder g;
    g.kv_string("general.architecture", "gemma2");
    g.kv("gemma2.block_count", GGUFType::UINT32, uint32_t(layers));
    g.kv("gemma2.embedding_length", GGUFType::UINT32, uint32_t(16));
    g.kv("gemma2.feed_forward_length", GGUFType::UINT32, uint32_t(8));
    g.kv("gemma2.attention.head_count", GGUFType::UINT32, uint32_t(2));
    g.kv("gemma2.attention.head_count_kv", GGUFType::UINT32, uint32_t(1));
    g.kv("gemma2.attention.key_length", GGUFType::UINT32, uint32_t(8));
    g.kv("gemma2.rope.freq_base", GGUFType::FLOAT32, 10000.0f);
    if (window) g.kv("gemma2.attention.sliding_window", GGUFType::INT32, int32_t(*window));
    if (pattern) g.kv("gemma2.attention.sliding_window_pattern", GGUFType::UINT32, *pattern);
    if (attn_softcap) g.kv("gemma2.attn_logit_softcapping", GGUFType::FLOAT32, *attn_softcap);
    if (final_softcap) g.kv("gemma2.final_logit_softcapping", GGUFType::FLOAT32, *final_softcap);
    g.tensor("token_embd.weight", {16, 4}, kF32);
    g.tensor("output_norm.weight", {16}, kF32);
    for (int l = 0; l < layers; ++l) {
      const std::string b = "blk." + std::to_string(l) + ".";
      g.tensor(b + "attn_norm.weight", {16}, kF32);
      g.tensor(b + "attn_q.weight", {16, 16}, kF32);
      g.tensor(b + "attn_k.weight", {16, 8}, kF32);
      g.tensor(b + "attn_v.weight", {16, 8}, kF32);
      g.tensor(b + "attn_output.weight", {16, 16}, kF32);
      g.tensor(b + "post_attention_norm.weight", {16}, kF32);
      g.tensor(b + "ffn_norm.weight", {16}, kF32);
      g.tensor(b + "ffn_gate.weight", {16, 8}, kF32);
      g.tensor(b + "ffn_up.weight", {16, 8}, kF32);
      g.tensor(b + "ffn_down.weight", {8, 16}, kF32);
      g.tensor(b + "post_ffw_norm.weight", {16}, kF32);
    }
    return g;
  }
};

std::unique_ptr<ModelFile> open(const Gemma2File& spec, TempDir& dir) { return test::open_gguf(spec.build(), dir); }
std::string open_error(const Gemma2File& spec) { return test::open_gguf_error(spec.build()); }
using test::layer_windows;

}  // namespace

TEST(ModelGemma2, RefusedOnABackendWithoutSoftCaps) {
  test::CpuWithout be("cpu without soft caps", {.softcapping = false});
  auto gemma2 = ModelFile::synthetic("tiny-gemma2", DType::BF16, 1);
  const std::string error = test::model_load_error(*gemma2, be);
  EXPECT_ERROR_HAS(error, "(gemma2) needs logit soft-capping (attention cap 50, final cap 30)");
  EXPECT_ERROR_HAS(error, "backend cpu without soft caps does not implement");
  // Gemma 3 has no caps: loads
  EXPECT_EQ(test::model_load_error(*ModelFile::synthetic("tiny-gemma3", DType::BF16, 1), be), "<no error>");
  auto cpu = make_cpu_backend({.n_threads = 1});
  EXPECT_NO_THROW(LlamaModel(*gemma2, *cpu));
}

TEST(ModelGemma2, GgufLoadsGemmaFields) {
  TempDir dir;
  auto f = open(Gemma2File{}, dir);
  const ModelConfig& c = f->config();
  EXPECT_EQ(c.arch, "gemma2");
  EXPECT_TRUE(c.post_norms && c.rope_neox && c.tied_embeddings);
  EXPECT_FALSE(c.qk_norm);
  EXPECT_EQ(c.ffn_act, ModelConfig::FfnAct::GeluTanh);
  EXPECT_EQ(c.embed_scale, 4.0f);                   // sqrt(16)
  EXPECT_EQ(c.attn_scale, 1.0f / std::sqrt(8.0f));  // 1 / sqrt(head_dim)
  EXPECT_EQ(c.attn_softcap, 50.0f);
  EXPECT_EQ(c.final_softcap, 30.0f);
  // Layers 0, 2, 4 windowed, 1, 3 global, all with the one RoPE base.
  EXPECT_EQ(layer_windows(c), (std::vector<int>{8, 0, 8, 0, 8}));
  EXPECT_FALSE(c.layer_local_rope(0));
  EXPECT_EQ(f->layer_tensor(4, Role::FfnPostNorm)->name, "blk.4.post_ffw_norm.weight");
}

TEST(ModelGemma2, LlamaCppDefaultsWhenTheFileHasNone) {
  TempDir d1, d2, d3;
  Gemma2File bare;
  bare.window.reset();
  bare.attn_softcap.reset();
  bare.final_softcap.reset();
  const ModelConfig c = open(bare, d1)->config();
  EXPECT_EQ(c.attn_softcap, 50.0f);
  EXPECT_EQ(c.final_softcap, 30.0f);
  EXPECT_EQ(layer_windows(c), (std::vector<int>{4096, 0, 4096, 0, 4096}));

  Gemma2File all_windowed;
  all_windowed.pattern = 0;
  EXPECT_EQ(layer_windows(open(all_windowed, d2)->config()), (std::vector<int>(5, 8)));

  // The 46-layer size (27B) scales by 1 / sqrt(dim / heads), as llama.cpp does.
  Gemma2File big;
  big.layers = 46;
  EXPECT_EQ(open(big, d3)->config().attn_scale, 1.0f / std::sqrt(8.0f));  // dim / heads = head_dim here
}

TEST(ModelGemma2, RefusesWhatItDoesNotRun) {
  Gemma2File zero_cap;
  zero_cap.attn_softcap = 0.0f;
  EXPECT_ERROR_HAS(open_error(zero_cap), "gemma2.attn_logit_softcapping = 0");
  Gemma2File nan_cap;
  nan_cap.final_softcap = NAN;
  EXPECT_ERROR_HAS(open_error(nan_cap), "gemma2.final_logit_softcapping = nan");
  Gemma2File no_window;
  no_window.window = 0;
  EXPECT_ERROR_HAS(open_error(no_window), "gemma2.attention.sliding_window = 0");
  Gemma2File bad_period;
  bad_period.pattern = 9;
  EXPECT_ERROR_HAS(open_error(bad_period), "sliding_window_pattern = 9");
}

TEST(ModelGemma2, SyntheticShapes) {
  const ModelConfig c = synthetic_config("gemma-2-9b");
  EXPECT_EQ(c.arch, "gemma2");
  EXPECT_EQ((std::vector<int>{c.n_layers, c.dim, c.n_heads, c.n_kv_heads, c.head_dim, c.ffn_dim, c.vocab_size}),
            (std::vector<int>{42, 3584, 16, 8, 256, 14336, 256000}));
  EXPECT_EQ(c.layer_window(0), 4096);
  EXPECT_EQ(c.layer_window(1), 0);
  EXPECT_EQ(c.attn_softcap, 50.0f);
  EXPECT_EQ(c.final_softcap, 30.0f);
  EXPECT_FALSE(c.qk_norm);
  auto f = ModelFile::synthetic("tiny-gemma2", DType::BF16, 1);  // validated on creation
  EXPECT_EQ(layer_windows(f->config()), (std::vector<int>{512, 0, 512, 0}));
}

}  // namespace greta
