// Hyper-parameters that load silently but make every output NaN (RoPE theta, RMS epsilon and
// RoPE scaling factors that are 0, negative or NaN) are refused at load, naming key and value;
// Qwen3's per-head q/k norms are loaded, and refused when missing or misshapen.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "formats_test_util.h"
#include "model/model_file.h"
#include "model/synthetic.h"

namespace greta {
namespace {

using test::GGUFBuilder;
using test::TempDir;

// A GGUF Llama header of dim 8, 2 heads (head_dim 4), one layer; tensors as the caller adds.
GGUFBuilder llama_header() {
  GGUFBuilder g;
  g.kv_string("general.architecture", "llama");
  g.kv("llama.block_count", GGUFType::UINT32, uint32_t(1));
  g.kv("llama.embedding_length", GGUFType::UINT32, uint32_t(8));
  g.kv("llama.feed_forward_length", GGUFType::UINT32, uint32_t(16));
  g.kv("llama.attention.head_count", GGUFType::UINT32, uint32_t(2));
  return g;
}

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

std::string open_hf_error(const nlohmann::json& config) {
  TempDir dir;
  dir.write("config.json", config.dump());
  try {
    ModelFile::open(dir.path().string());
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

#define EXPECT_ERROR_HAS(expr, needle) EXPECT_NE(std::string(expr).find(needle), std::string::npos) << (expr)

const float kNaN = std::numeric_limits<float>::quiet_NaN();

}  // namespace

TEST(ModelConfig, GgufRefusesBadThetaAndEpsilon) {
  for (const char* key : {"llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon"}) {
    for (float v : {0.0f, -1.0f, kNaN, std::numeric_limits<float>::infinity()}) {
      GGUFBuilder g = llama_header();
      g.kv(key, GGUFType::FLOAT32, v);
      const std::string err = open_error(g);
      EXPECT_ERROR_HAS(err, std::string(key) + " = ");
      EXPECT_ERROR_HAS(err, "expected a finite number > 0");
    }
  }
  GGUFBuilder g = llama_header();
  g.kv("llama.rope.freq_base", GGUFType::FLOAT32, -2.5f);
  EXPECT_ERROR_HAS(open_error(g), "llama.rope.freq_base = -2.5 (expected a finite number > 0)");
  // Good values get past the check (to the missing tensors of this bare file).
  g = llama_header();
  g.kv("llama.rope.freq_base", GGUFType::FLOAT32, 10000.0f);
  g.kv("llama.attention.layer_norm_rms_epsilon", GGUFType::FLOAT32, 1e-5f);
  EXPECT_ERROR_HAS(open_error(g), "token_embd.weight");
}

TEST(ModelConfig, GgufRefusesBadRopeScaling) {
  for (float v : {0.0f, -4.0f, kNaN}) {
    GGUFBuilder g = llama_header();
    g.tensor("token_embd.weight", {8, 4}, test::kF32);
    g.kv_string("llama.rope.scaling.type", "linear");
    g.kv("llama.rope.scaling.factor", GGUFType::FLOAT32, v);
    EXPECT_ERROR_HAS(open_error(g), "llama.rope.scaling.factor = ");
  }
  GGUFBuilder g = llama_header();
  g.tensor("token_embd.weight", {8, 4}, test::kF32);
  auto& rf = g.tensor("rope_freqs.weight", {2}, test::kF32);
  const float factors[2] = {1.0f, 0.0f};
  std::memcpy(rf.data.data(), factors, sizeof factors);
  EXPECT_ERROR_HAS(open_error(g), "tensor 'rope_freqs.weight' value 1 = 0 (expected a finite number > 0)");
}

TEST(ModelConfig, GgufRefusesMathItDoesNotRun) {
  GGUFBuilder g = llama_header();
  g.tensor("token_embd.weight", {8, 4}, test::kF32);
  g.kv_string("llama.rope.scaling.type", "ntk");
  EXPECT_ERROR_HAS(open_error(g), "unsupported llama.rope.scaling.type 'ntk' (supported: none, linear, yarn)");
  for (const char* bias : {"blk.0.attn_output.bias", "blk.0.ffn_down.bias"}) {
    GGUFBuilder b = llama_header();
    b.tensor("token_embd.weight", {8, 4}, test::kF32);
    b.tensor(bias, {4}, test::kF32);
    EXPECT_ERROR_HAS(open_error(b), "tensor '" + std::string(bias) + "': biases of the output and feed-forward");
  }
}

TEST(ModelConfig, HfRefusesBadThetaEpsilonAndScaling) {
  const nlohmann::json base = {{"architectures", {"LlamaForCausalLM"}},
                               {"num_hidden_layers", 1},
                               {"hidden_size", 8},
                               {"intermediate_size", 16},
                               {"num_attention_heads", 2},
                               {"vocab_size", 4}};
  auto with = [&](const std::string& k, nlohmann::json v) {
    nlohmann::json c = base;
    c[k] = std::move(v);
    return c;
  };
  EXPECT_ERROR_HAS(open_hf_error(with("rms_norm_eps", 0)), "rms_norm_eps = 0 (expected a finite number > 0)");
  EXPECT_ERROR_HAS(open_hf_error(with("rope_theta", -10000)), "rope_theta = -10000");
  EXPECT_ERROR_HAS(open_hf_error(with("rope_theta", 1e300)), "rope_theta = 1e+300");  // inf in float
  EXPECT_ERROR_HAS(open_hf_error(with("hidden_act", "gelu")), "hidden_act = \"gelu\" is not implemented");
  EXPECT_ERROR_HAS(open_hf_error(with("hidden_act", "silu")), "no model.safetensors");
  EXPECT_ERROR_HAS(open_hf_error(with("rope_scaling", {{"rope_type", "llama3"}, {"factor", 0}})),
                   "rope_scaling.factor = 0");
  EXPECT_ERROR_HAS(open_hf_error(with("rope_scaling", {{"rope_type", "llama3"}, {"low_freq_factor", -1}})),
                   "rope_scaling.low_freq_factor = -1");
  EXPECT_ERROR_HAS(
      open_hf_error(with("rope_scaling", {{"rope_type", "llama3"}, {"low_freq_factor", 4}, {"high_freq_factor", 4}})),
      "must be greater than low_freq_factor");
  EXPECT_ERROR_HAS(open_hf_error(with("rope_scaling", {{"type", "linear"}, {"factor", -2}})),
                   "rope_scaling.factor = -2");
  EXPECT_ERROR_HAS(open_hf_error(with("rope_scaling", {{"type", "linear"}, {"factor", "two"}})), "must be a number");
  EXPECT_ERROR_HAS(open_hf_error(with("rope_parameters", {{"rope_theta", 0}})), "rope_parameters.rope_theta = 0");
  // Keys of the wrong JSON type name themselves instead of the JSON library's type error.
  EXPECT_ERROR_HAS(open_hf_error(with("tie_word_embeddings", "yes")),
                   "key 'tie_word_embeddings' = \"yes\" must be true or false");
  EXPECT_ERROR_HAS(open_hf_error(with("tie_word_embeddings", 1)),
                   "key 'tie_word_embeddings' = 1 must be true or false");
  EXPECT_ERROR_HAS(open_hf_error(with("model_type", 3)), "key 'model_type' = 3 must be a string");
  EXPECT_ERROR_HAS(open_hf_error(with("tie_word_embeddings", nullptr)), "no model.safetensors");  // null: the default
  // Good values get past the checks (to the missing weights of this bare directory).
  EXPECT_ERROR_HAS(open_hf_error(with("rope_scaling", {{"rope_type", "llama3"}, {"factor", 8}})),
                   "no model.safetensors");
}

TEST(ModelConfig, HfSlidingWindowIsReadOrRefused) {
  nlohmann::json mistral = {{"architectures", {"MistralForCausalLM"}},
                            {"num_hidden_layers", 1},
                            {"hidden_size", 8},
                            {"intermediate_size", 16},
                            {"num_attention_heads", 2},
                            {"vocab_size", 4}};
  for (const nlohmann::json& bad :
       {nlohmann::json(0), nlohmann::json(-4), nlohmann::json(2.5), nlohmann::json("4096")}) {
    nlohmann::json c = mistral;
    c["sliding_window"] = bad;
    EXPECT_ERROR_HAS(open_hf_error(c), "sliding_window = " + bad.dump() + " (expected a positive number");
  }
  // A good window (or none) gets past the checks, to the missing weights of this bare directory.
  for (const nlohmann::json& good : {nlohmann::json(4096), nlohmann::json(nullptr)}) {
    nlohmann::json c = mistral;
    c["sliding_window"] = good;
    EXPECT_ERROR_HAS(open_hf_error(c), "no model.safetensors");
  }
  // Qwen2 applies its window only with use_sliding_window, and then to some layers: refused.
  nlohmann::json qwen = mistral;
  qwen["architectures"] = {"Qwen2ForCausalLM"};
  qwen["sliding_window"] = 4096;
  EXPECT_ERROR_HAS(open_hf_error(qwen), "no model.safetensors");
  qwen["use_sliding_window"] = true;
  EXPECT_ERROR_HAS(open_hf_error(qwen), "use_sliding_window = true");
}

// Qwen3 at load: a GGUF "qwen3" file takes halves RoPE and per-head q/k norms, whose missing or
// misshapen tensors are refused naming layer and role; the synthetic Qwen3 shapes.
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
