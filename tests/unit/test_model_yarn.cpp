// RoPE scaling beside llama3/linear/LongRoPE: YaRN's frequency table and attention factor read
// from HF config.json and GGUF, dynamic NTK's grown base and the step that uses it, and the
// unknown types refused by name with the supported list.
//
// The expected tables are not computed by greta's code: they come from this numpy transcription
// of transformers' _compute_yarn_parameters / _compute_dynamic_ntk_parameters (ext is llama.cpp's
// yarn_ext_factor, weighting the extrapolated part as ggml's rope_yarn does):
//
//   def yarn_inv_freq(dim, base, factor, omp, beta_fast=32, beta_slow=1, truncate=True, ext=1.0):
//       def corr(r): return dim * math.log(omp / (r * 2 * math.pi)) / (2 * math.log(base))
//       low, high = corr(beta_fast), corr(beta_slow)
//       if truncate: low, high = math.floor(low), math.ceil(high)
//       low, high = max(low, 0), min(high, dim - 1)
//       if low == high: high += 0.001
//       ramp = np.clip((np.arange(dim // 2) - low) / (high - low), 0, 1)
//       extrap_w = (1 - ramp) * ext
//       pos = base ** (np.arange(0, dim, 2) / dim)
//       return (1 / (factor * pos)) * (1 - extrap_w) + (1 / pos) * extrap_w
//   def dyn_inv_freq(dim, base, factor, M, L):
//       L = max(L, M)
//       b = base * ((factor * L / M) - (factor - 1)) ** (dim / (dim - 2))
//       return 1.0 / b ** (np.arange(0, dim, 2) / dim)
//
//   kHfDefault = yarn_inv_freq(32, 10000.0, 4.0, 64)
//   kHfCustom  = yarn_inv_freq(32, 500000.0, 8.0, 256, beta_fast=16, beta_slow=2, truncate=False)
//   kGgufExt   = yarn_inv_freq(32, 10000.0, 4.0, 64, ext=0.5)
//   kDyn300    = dyn_inv_freq(32, 10000.0, 2.0, 128, 300)
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <utility>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"
#include "error_test_util.h"
#include "formats_test_util.h"
#include "model/dynamic_ntk.h"
#include "model/llama.h"
#include "model/model_file.h"
#include "model/rope_step.h"
#include "model/yarn.h"

namespace greta {
namespace {

using test::GGUFBuilder;
using test::SafetensorsBuilder;
using test::TempDir;

const double kHfDefault[] = {1.0000000000e+00, 4.7799012641e-01, 2.2135943621e-01, 9.7805367552e-02,
                             4.0000000000e-02, 1.4058533130e-02, 7.9056941504e-03, 4.4456985251e-03,
                             2.5000000000e-03, 1.4058533130e-03, 7.9056941504e-04, 4.4456985251e-04,
                             2.5000000000e-04, 1.4058533130e-04, 7.9056941504e-05, 4.4456985251e-05};
const double kHfCustom[] = {1.0000000000e+00, 4.4036660267e-01, 1.3634711897e-01, 3.0571604496e-02,
                            4.7007538664e-03, 2.0700550101e-03, 9.1158309215e-04, 4.0143074934e-04,
                            1.7677669530e-04, 7.7846552739e-05, 3.4281021960e-05, 1.5096217176e-05,
                            6.6478698712e-06, 2.9274998702e-06, 1.2891731722e-06, 5.6770881008e-07};
const double kGgufExt[] = {6.2500000000e-01, 3.0928772885e-01, 1.5020818886e-01, 7.1131176402e-02,
                           3.2500000000e-02, 1.4058533130e-02, 7.9056941504e-03, 4.4456985251e-03,
                           2.5000000000e-03, 1.4058533130e-03, 7.9056941504e-04, 4.4456985251e-04,
                           2.5000000000e-04, 1.4058533130e-04, 7.9056941504e-05, 4.4456985251e-05};
const double kDyn300[] = {1.0000000000e+00, 5.1548717495e-01, 2.6572702754e-01, 1.3697887473e-01,
                          7.0610853163e-02, 3.6398989218e-02, 1.8763212123e-02, 9.6721952102e-03,
                          4.9858925845e-03, 2.5701636830e-03, 1.3248864161e-03, 6.8296195575e-04,
                          3.5205812917e-04, 1.8148145042e-04, 9.3551360184e-05, 4.8224526374e-05};

// dim 64, 2 heads of 32 (16 rotated pairs), ffn 32, vocab 16, one layer, tied embeddings.
constexpr int kDim = 64, kFfn = 32, kVocab = 16;

void expect_table(const std::vector<float>& got, const double* want, const char* what) {
  ASSERT_EQ(got.size(), 16u) << what;
  for (size_t i = 0; i < 16; ++i) EXPECT_NEAR(got[i], want[i], 1e-6 * want[i]) << what << " pair " << i;
}

// Small random floats (or ones, for norms) from a fixed generator.
void fill(std::vector<uint8_t>& bytes, uint32_t seed, bool ones) {
  std::vector<float> v(bytes.size() / 4);
  uint32_t x = seed * 2654435761u + 1;
  for (float& f : v) {
    x = x * 1664525u + 1013904223u;
    f = ones ? 1.0f : (float(x >> 8) / float(1 << 24) - 0.5f);
  }
  std::memcpy(bytes.data(), v.data(), bytes.size());
}

GGUFBuilder llama_gguf() {
  GGUFBuilder g;
  g.kv_string("general.architecture", "llama");
  g.kv("llama.block_count", GGUFType::UINT32, uint32_t(1));
  g.kv("llama.embedding_length", GGUFType::UINT32, uint32_t(kDim));
  g.kv("llama.feed_forward_length", GGUFType::UINT32, uint32_t(kFfn));
  g.kv("llama.attention.head_count", GGUFType::UINT32, uint32_t(2));
  g.kv("llama.context_length", GGUFType::UINT32, uint32_t(256));
  g.tensor("token_embd.weight", {kDim, kVocab}, test::kF32);
  g.tensor("output_norm.weight", {kDim}, test::kF32);
  g.tensor("blk.0.attn_norm.weight", {kDim}, test::kF32);
  for (const char* w : {"attn_q", "attn_k", "attn_v", "attn_output"})
    g.tensor("blk.0." + std::string(w) + ".weight", {kDim, kDim}, test::kF32);
  g.tensor("blk.0.ffn_norm.weight", {kDim}, test::kF32);
  g.tensor("blk.0.ffn_gate.weight", {kDim, kFfn}, test::kF32);
  g.tensor("blk.0.ffn_up.weight", {kDim, kFfn}, test::kF32);
  g.tensor("blk.0.ffn_down.weight", {kFfn, kDim}, test::kF32);
  return g;
}

nlohmann::json llama_config() {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"num_hidden_layers", 1},
          {"hidden_size", kDim},
          {"intermediate_size", kFfn},
          {"num_attention_heads", 2},
          {"vocab_size", kVocab},
          {"max_position_embeddings", 256},
          {"rope_theta", 10000.0},
          {"tie_word_embeddings", true}};
}

// An HF directory of `config` with random F32 weights (the same for every config).
struct HfModel {
  TempDir dir;
  std::unique_ptr<ModelFile> file;
};
std::unique_ptr<HfModel> hf_model(const nlohmann::json& config) {
  auto m = std::make_unique<HfModel>();
  m->dir.write("config.json", config.dump());
  SafetensorsBuilder st;
  const std::string p = "model.layers.0.";
  uint32_t seed = 0;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, bool ones = false) {
    fill(st.tensor(name, "F32", std::move(shape)).data, ++seed, ones);
  };
  add("model.embed_tokens.weight", {kVocab, kDim});
  add("model.norm.weight", {kDim}, true);
  add(p + "input_layernorm.weight", {kDim}, true);
  add(p + "post_attention_layernorm.weight", {kDim}, true);
  for (const char* w : {"q_proj", "k_proj", "v_proj", "o_proj"}) add(p + "self_attn." + w + ".weight", {kDim, kDim});
  add(p + "mlp.gate_proj.weight", {kFfn, kDim});
  add(p + "mlp.up_proj.weight", {kFfn, kDim});
  add(p + "mlp.down_proj.weight", {kDim, kFfn});
  m->dir.write("model.safetensors", st.build());
  m->file = ModelFile::open(m->dir.path().string());
  return m;
}

using test::error_of;

std::string open_gguf_error(const GGUFBuilder& g) {
  TempDir dir;
  dir.write("m.gguf", g.build());
  return error_of([&] { ModelFile::open((dir.path() / "m.gguf").string()); });
}
ModelConfig open_gguf_config(const GGUFBuilder& g) {
  TempDir dir;
  dir.write("m.gguf", g.build());
  return ModelFile::open((dir.path() / "m.gguf").string())->config();
}
std::string open_hf_error(const nlohmann::json& config) {
  TempDir dir;
  dir.write("config.json", config.dump());
  return error_of([&] { ModelFile::open(dir.path().string()); });
}

// Runs `prompt` as one step, then one decode step of `next`, over one cache (CPU); the prompt
// step by `first`, the decode step by `second` (the same weights: the cache layouts agree; the
// same file: one model runs both).
// Returns the last logits of each step.
std::pair<std::vector<float>, std::vector<float>> two_steps(const ModelFile& first, const ModelFile& second,
                                                            const std::vector<int32_t>& prompt, int32_t next) {
  auto backend = make_cpu_backend({.n_threads = 1});
  // One model object when both are the same file: it keeps its state (its tables) across steps.
  LlamaModel a(first, *backend);
  std::unique_ptr<LlamaModel> other = &first == &second ? nullptr : std::make_unique<LlamaModel>(second, *backend);
  LlamaModel& b = other ? *other : a;
  const int bs = 16, n = int(prompt.size());
  auto kv = a.make_kv(n / bs + 1, bs);
  SeqSlice s;
  for (int i = 0; i <= n / bs; ++i) s.block_table.push_back(i);
  Batch p, d;
  s.n_tokens = n;
  p.seqs = {s};
  p.tokens = prompt;
  p.logit_rows = {n - 1};
  s.n_past = n;
  s.n_tokens = 1;
  d.seqs = {s};
  d.tokens = {next};
  d.logit_rows = {0};
  std::vector<float> out_p(kVocab), out_d(kVocab);
  a.forward(p, *kv, LlamaModel::HostLogits{out_p.data()});
  b.forward(d, *kv, LlamaModel::HostLogits{out_d.data()});
  return {out_p, out_d};
}
std::vector<float> last_logits(const ModelFile& f, const std::vector<int32_t>& prompt) {
  return two_steps(f, f, prompt, 1).first;
}

std::vector<int32_t> prompt_of(int n) {
  std::vector<int32_t> t(size_t(n), 0);
  for (int i = 0; i < n; ++i) t[size_t(i)] = int32_t((7 * i + 3) % kVocab);
  return t;
}

}  // namespace

TEST(RopeYarn, HfTableAndDefaultAttentionFactor) {
  nlohmann::json c = llama_config();
  c["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 64}};
  auto m = hf_model(c);
  const ModelConfig& cfg = m->file->config();
  expect_table(cfg.rope_inv_freq(), kHfDefault, "yarn defaults");
  EXPECT_NEAR(cfg.rope_attn_factor, 0.1 * std::log(4.0) + 1.0, 1e-6);
  // transformers >= 5's rope_parameters; a top-level original_max_position_embeddings does not
  // count for LlamaConfig (standardize_rope_params reads the scaling object's).
  c = llama_config();
  c.erase("rope_theta");
  c["original_max_position_embeddings"] = 4096;
  c["rope_parameters"] = {{"rope_type", "yarn"},
                          {"rope_theta", 10000.0},
                          {"factor", 4.0},
                          {"original_max_position_embeddings", 64}};
  expect_table(hf_model(c)->file->config().rope_inv_freq(), kHfDefault, "rope_parameters");
}

TEST(RopeYarn, HfBetasTruncateAndAttentionFactors) {
  nlohmann::json c = llama_config();
  c["rope_theta"] = 500000.0;
  c["rope_scaling"] = {{"type", "yarn"},  {"factor", 8.0},        {"original_max_position_embeddings", 256},
                       {"beta_fast", 16}, {"beta_slow", 2},       {"truncate", false},
                       {"mscale", 1.0},   {"mscale_all_dim", 0.5}};
  auto m = hf_model(c);
  expect_table(m->file->config().rope_inv_freq(), kHfCustom, "betas 16/2, no truncation");
  // (0.1 * 1 * ln 8 + 1) / (0.1 * 0.5 * ln 8 + 1)
  EXPECT_NEAR(m->file->config().rope_attn_factor, 1.094179988101349, 1e-6);
  // mscale alone counts for nothing; attention_factor wins over both.
  c["rope_scaling"].erase("mscale_all_dim");
  EXPECT_NEAR(hf_model(c)->file->config().rope_attn_factor, 0.1 * std::log(8.0) + 1.0, 1e-6);
  c["rope_scaling"]["attention_factor"] = 0.75;
  EXPECT_FLOAT_EQ(hf_model(c)->file->config().rope_attn_factor, 0.75f);
}

TEST(RopeYarn, HfRefusesBadValues) {
  auto with = [](nlohmann::json rs) {
    nlohmann::json c = llama_config();
    rs["rope_type"] = "yarn";
    c["rope_scaling"] = std::move(rs);
    return c;
  };
  EXPECT_ERROR_HAS(open_hf_error(with({{"factor", -4.0}})), "rope_scaling.factor = -4");
  EXPECT_ERROR_HAS(open_hf_error(with({{"factor", 4.0}, {"beta_fast", -1}})), "rope_scaling.beta_fast = -1");
  EXPECT_ERROR_HAS(open_hf_error(with({{"factor", 4.0}, {"original_max_position_embeddings", 0.5}})),
                   "rope_scaling.original_max_position_embeddings = 0.5");
  EXPECT_ERROR_HAS(open_hf_error(with({{"factor", 4.0}, {"truncate", "no"}})), "truncate' must be true or false");
  EXPECT_ERROR_HAS(open_hf_error(with({{"factor", 4.0}, {"attention_factor", 0}})), "attention_factor = 0");
  // Good values get past to the missing weights.
  EXPECT_ERROR_HAS(open_hf_error(with({{"factor", 4.0}})), "no model.safetensors");
}

TEST(RopeYarn, GgufTableAndAttentionFactor) {
  GGUFBuilder g = llama_gguf();
  g.kv_string("llama.rope.scaling.type", "yarn");
  g.kv("llama.rope.scaling.factor", GGUFType::FLOAT32, 4.0f);
  g.kv("llama.rope.scaling.original_context_length", GGUFType::UINT32, uint32_t(64));
  ModelConfig c = open_gguf_config(g);
  expect_table(c.rope_inv_freq(), kHfDefault, "gguf yarn defaults");
  EXPECT_NEAR(c.rope_attn_factor, 0.1 * std::log(4.0) + 1.0, 1e-6);
  // llama.cpp's yarn_ext_factor weights the extrapolated part; yarn_attn_factor is the whole
  // factor (the converter's copy of attention_factor), times rope.scaling.attn_factor.
  g.kv("llama.rope.scaling.yarn_ext_factor", GGUFType::FLOAT32, 0.5f);
  g.kv("llama.rope.scaling.yarn_attn_factor", GGUFType::FLOAT32, 1.25f);
  g.kv("llama.rope.scaling.attn_factor", GGUFType::FLOAT32, 2.0f);
  c = open_gguf_config(g);
  expect_table(c.rope_inv_freq(), kGgufExt, "gguf yarn_ext_factor 0.5");
  EXPECT_FLOAT_EQ(c.rope_attn_factor, 2.5f);
  // Without original_context_length the file's context (256): a different ramp.
  GGUFBuilder h = llama_gguf();
  h.kv_string("llama.rope.scaling.type", "yarn");
  h.kv("llama.rope.scaling.factor", GGUFType::FLOAT32, 4.0f);
  EXPECT_NE(open_gguf_config(h).rope_inv_freq()[2], float(kHfDefault[2]));
}

TEST(RopeYarn, GgufRefusesBadValuesAndUnknownTypes) {
  auto yarn = [](const char* key, float v) {
    GGUFBuilder g = llama_gguf();
    g.kv_string("llama.rope.scaling.type", "yarn");
    if (std::string(key) != "llama.rope.scaling.factor") g.kv("llama.rope.scaling.factor", GGUFType::FLOAT32, 4.0f);
    g.kv(key, GGUFType::FLOAT32, v);
    return g;
  };
  EXPECT_ERROR_HAS(open_gguf_error(yarn("llama.rope.scaling.yarn_beta_slow", 0.0f)),
                   "llama.rope.scaling.yarn_beta_slow = 0");
  EXPECT_ERROR_HAS(open_gguf_error(yarn("llama.rope.scaling.yarn_ext_factor", 1.5f)), "yarn_ext_factor = 1.5");
  EXPECT_ERROR_HAS(open_gguf_error(yarn("llama.rope.scaling.yarn_log_multiplier", 0.1f)), "yarn_log_multiplier = 0.1");
  EXPECT_ERROR_HAS(open_gguf_error(yarn("llama.rope.scaling.factor", -2.0f)), "llama.rope.scaling.factor = -2");
  for (const char* type : {"dynamic", "longrope", "ntk"}) {
    GGUFBuilder g = llama_gguf();
    g.kv_string("llama.rope.scaling.type", type);
    EXPECT_ERROR_HAS(open_gguf_error(g),
                     "unsupported llama.rope.scaling.type '" + std::string(type) + "' (supported: none, linear, yarn)");
  }
}

TEST(RopeYarn, HfUnknownTypesAreRefusedWithTheSupportedList) {
  for (const char* type : {"ntk", "longrope2", "su2"}) {
    nlohmann::json c = llama_config();
    c["rope_scaling"] = {{"rope_type", type}, {"factor", 2.0}};
    EXPECT_ERROR_HAS(open_hf_error(c), "unsupported rope_scaling type '" + std::string(type) +
                                           "' (supported: default, linear, llama3, longrope, yarn, dynamic)");
  }
}

TEST(RopeDynamicNtk, BaseGrowsPastMaxPositionEmbeddings) {
  nlohmann::json cj = llama_config();
  cj["max_position_embeddings"] = 128;
  cj["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", 2.0}};
  auto m = hf_model(cj);
  const ModelConfig& c = m->file->config();
  EXPECT_FLOAT_EQ(c.rope_dynamic_factor, 2.0f);
  EXPECT_EQ(c.rope_inv_freq(), dynamic_ntk_inv_freq(c, 128));  // up to M: the unscaled table
  EXPECT_EQ(dynamic_ntk_theta(c, 100), 10000.0);
  expect_table(dynamic_ntk_inv_freq(c, 300), kDyn300, "dynamic L=300");
  cj["rope_scaling"].erase("factor");
  EXPECT_ERROR_HAS(open_hf_error(cj), "dynamic RoPE scaling needs 'rope_scaling.factor'");
}

TEST(RopeDynamicNtk, StepLengthIsTheLongestSequenceOrWholePrompt) {
  Batch b;
  SeqSlice a, p;
  a.n_past = 40;
  a.n_tokens = 1;
  p.n_past = 0;
  p.n_tokens = 16;
  p.n_prompt = 70;  // a 70-token prompt's first chunk
  b.seqs = {a};
  EXPECT_EQ(rope_step_length(b), 41);
  b.seqs = {a, p};
  EXPECT_EQ(rope_step_length(b), 70);
}

// A step longer than max_position_embeddings rotates with the grown base: the same logits as the
// unscaled model whose rope_theta is that base; a step within it, the unscaled model's.
TEST(RopeDynamicNtk, ForwardUsesTheStepsBase) {
  nlohmann::json dyn = llama_config();
  dyn["max_position_embeddings"] = 16;
  dyn["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", 4.0}};
  auto md = hf_model(dyn);
  nlohmann::json plain = llama_config();
  plain["max_position_embeddings"] = 16;
  auto mp = hf_model(plain);
  nlohmann::json grown = plain;
  grown["rope_theta"] = double(float(dynamic_ntk_theta(md->file->config(), 40)));
  auto mg = hf_model(grown);

  const std::vector<float> long_dyn = last_logits(*md->file, prompt_of(40));
  EXPECT_EQ(long_dyn, last_logits(*mg->file, prompt_of(40)));
  EXPECT_NE(long_dyn, last_logits(*mp->file, prompt_of(40)));  // the scaling changes the result
  EXPECT_EQ(last_logits(*md->file, prompt_of(12)), last_logits(*mp->file, prompt_of(12)));
}

}  // namespace greta

namespace greta {

// A decode step past M rotates its token with the base of its own length and leaves the cached
// keys as the prompt step rotated them (transformers' generate): the same logits as a prompt step
// by the model of base theta'(40) followed by a decode step by the model of base theta'(41).
TEST(RopeDynamicNtk, DecodeStepTakesANewBaseAndKeepsTheCachedKeys) {
  nlohmann::json dyn = llama_config();
  dyn["max_position_embeddings"] = 16;
  dyn["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", 4.0}};
  auto md = hf_model(dyn);
  auto base_model = [&](int64_t length) {
    nlohmann::json c = llama_config();
    c["max_position_embeddings"] = 16;
    c["rope_theta"] = double(float(dynamic_ntk_theta(md->file->config(), length)));
    return hf_model(c);
  };
  auto m40 = base_model(40), m41 = base_model(41);
  const auto dynamic = two_steps(*md->file, *md->file, prompt_of(40), 5);
  const auto reference = two_steps(*m40->file, *m41->file, prompt_of(40), 5);
  EXPECT_EQ(dynamic.first, reference.first);
  EXPECT_EQ(dynamic.second, reference.second);
  // Neither the prompt's base kept nor the whole sequence re-rotated gives it.
  EXPECT_NE(dynamic.second, two_steps(*m40->file, *m40->file, prompt_of(40), 5).second);
  EXPECT_NE(dynamic.second, two_steps(*m41->file, *m41->file, prompt_of(40), 5).second);
}

}  // namespace greta
