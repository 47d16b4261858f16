// Qwen3 (dense) at load: a GGUF "qwen3" file takes halves RoPE and per-head q/k norms, whose
// missing or misshapen tensors are refused naming layer and role; the synthetic Qwen3 shapes.
#include <gtest/gtest.h>

#include "core/error.h"
#include "formats_test_util.h"
#include "model/model_file.h"
#include "model/synthetic.h"

namespace greta {
namespace {

using test::GGUFBuilder;
using test::TempDir;

constexpr uint32_t kF32 = 0;

// One qwen3 layer: dim 16, 2 heads of head_dim 16 (q 32 wide: head_dim is not dim / heads),
// 1 kv head, ffn 8, vocab 4, tied embeddings. q/k norm tensors of `norm_dim` values; the k norm
// is left out when with_k_norm is false.
GGUFBuilder qwen3_gguf(uint64_t norm_dim, bool with_k_norm) {
  GGUFBuilder g;
  g.kv_string("general.architecture", "qwen3");
  g.kv("qwen3.block_count", GGUFType::UINT32, uint32_t(1));
  g.kv("qwen3.embedding_length", GGUFType::UINT32, uint32_t(16));
  g.kv("qwen3.feed_forward_length", GGUFType::UINT32, uint32_t(8));
  g.kv("qwen3.attention.head_count", GGUFType::UINT32, uint32_t(2));
  g.kv("qwen3.attention.head_count_kv", GGUFType::UINT32, uint32_t(1));
  g.kv("qwen3.attention.key_length", GGUFType::UINT32, uint32_t(16));
  g.tensor("token_embd.weight", {16, 4}, kF32);
  g.tensor("output_norm.weight", {16}, kF32);
  g.tensor("blk.0.attn_norm.weight", {16}, kF32);
  g.tensor("blk.0.attn_q.weight", {16, 32}, kF32);
  g.tensor("blk.0.attn_k.weight", {16, 16}, kF32);
  g.tensor("blk.0.attn_v.weight", {16, 16}, kF32);
  g.tensor("blk.0.attn_output.weight", {32, 16}, kF32);
  g.tensor("blk.0.attn_q_norm.weight", {norm_dim}, kF32);
  if (with_k_norm) g.tensor("blk.0.attn_k_norm.weight", {norm_dim}, kF32);
  g.tensor("blk.0.ffn_norm.weight", {16}, kF32);
  g.tensor("blk.0.ffn_gate.weight", {16, 8}, kF32);
  g.tensor("blk.0.ffn_up.weight", {16, 8}, kF32);
  g.tensor("blk.0.ffn_down.weight", {8, 16}, kF32);
  return g;
}

std::string open_error(const GGUFBuilder& g) {
  TempDir dir;
  dir.write("m.gguf", g.build());
  try {
    ModelFile::open((dir.path() / "m.gguf").string());
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

#define EXPECT_ERROR_HAS(expr, needle) EXPECT_NE(std::string(expr).find(needle), std::string::npos) << (expr)

}  // namespace

TEST(ModelQwen3, GgufLoadsPerHeadNormsAndHalvesRope) {
  TempDir dir;
  dir.write("m.gguf", qwen3_gguf(16, true).build());
  auto f = ModelFile::open((dir.path() / "m.gguf").string());
  const ModelConfig& c = f->config();
  EXPECT_EQ(c.arch, "qwen3");
  EXPECT_TRUE(c.qk_norm);
  EXPECT_TRUE(c.rope_neox);  // llama.cpp's converter does not permute Qwen3's Q/K rows
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_TRUE(c.tied_embeddings);
  ASSERT_NE(f->layer_tensor(0, Role::QNorm), nullptr);
  EXPECT_EQ(f->layer_tensor(0, Role::KNorm)->name, "blk.0.attn_k_norm.weight");
}

TEST(ModelQwen3, GgufRefusesMissingOrMisshapenQkNorm) {
  EXPECT_ERROR_HAS(open_error(qwen3_gguf(16, false)), "missing tensor for layer 0 k norm");
  EXPECT_ERROR_HAS(open_error(qwen3_gguf(8, true)), "'blk.0.attn_q_norm.weight' (layer 0 q norm) has shape [8]");
}

TEST(ModelQwen3, SyntheticShapes) {
  const ModelConfig c = synthetic_config("qwen3-8b");
  EXPECT_EQ(c.arch, "qwen3");
  EXPECT_TRUE(c.qk_norm && c.rope_neox && !c.tied_embeddings);
  EXPECT_EQ(c.n_layers, 36);
  EXPECT_EQ(c.dim, 4096);
  EXPECT_EQ(c.n_heads, 32);
  EXPECT_EQ(c.n_kv_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.ffn_dim, 12288);
  EXPECT_EQ(c.vocab_size, 151936);
  EXPECT_FLOAT_EQ(c.norm_eps, 1e-6f);
  EXPECT_FLOAT_EQ(c.rope_theta, 1e6f);
  auto f = ModelFile::synthetic("tiny-qwen3", DType::BF16, 1);  // validated on creation
  EXPECT_EQ(f->config().head_dim, 128);
  EXPECT_EQ(f->layer_tensor(3, Role::KNorm)->shape, std::vector<int64_t>{128});
  EXPECT_EQ(synthetic_config("tiny").qk_norm, false);
}

}  // namespace greta
