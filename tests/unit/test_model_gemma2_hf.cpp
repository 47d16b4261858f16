// Gemma 2 from a Hugging Face directory (Gemma2ForCausalLM): config.json mapped onto the fields
// the GGUF Gemma 2 path sets (query_pre_attn_scalar as the attention scale, the soft caps, the
// window on the layers layer_types names, GeGLU, post norms), transformers' Gemma2Config defaults
// for absent keys, Gemma's norm names with their weights read as 1 + w, and what is refused. The
// forward is checked against a float64 reference and transformers in tests/e2e/test_gemma2_hf.py.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "formats_test_util.h"
#include "model_gguf_test_util.h"
#include "model/model_file.h"

namespace greta {
namespace {

using test::layer_windows;
using test::SafetensorsBuilder;
using test::TempDir;

// dim 16, 2 heads of `head_dim`, 1 kv head, ffn 8, vocab 4, `layers` layers, no lm_head. Every
// norm weight holds `norm_value` (F32, or BF16 when `bf16_norms`); the other tensors hold the
// builder's byte pattern.
struct Gemma2Dir {
  nlohmann::json config = {{"architectures", {"Gemma2ForCausalLM"}},
                           {"model_type", "gemma2"},
                           {"hidden_size", 16},
                           {"intermediate_size", 8},
                           {"num_hidden_layers", 3},
                           {"num_attention_heads", 2},
                           {"num_key_value_heads", 1},
                           {"head_dim", 8},
                           {"vocab_size", 4},
                           {"rms_norm_eps", 1e-6},
                           {"rope_theta", 10000.0},
                           {"query_pre_attn_scalar", 32},
                           {"attn_logit_softcapping", 50.0},
                           {"final_logit_softcapping", 30.0},
                           {"sliding_window", 8},
                           {"hidden_act", "gelu_pytorch_tanh"},
                           {"hidden_activation", "gelu_pytorch_tanh"},
                           {"tie_word_embeddings", true}};
  float norm_value = 0.25f;
  bool bf16_norms = false;

  SafetensorsBuilder tensors() const {
    const int64_t layers = config["num_hidden_layers"], hd = config.value("head_dim", 256);
    SafetensorsBuilder st;
    auto norm = [&](const std::string& name) {
      auto& t = st.tensor(name, bf16_norms ? "BF16" : "F32", {16});
      for (size_t i = 0; i < 16; ++i) {
        if (bf16_norms) {
          const uint16_t b = float_to_bf16(norm_value);
          std::memcpy(t.data.data() + 2 * i, &b, 2);
        } else {
          std::memcpy(t.data.data() + 4 * i, &norm_value, 4);
        }
      }
    };
    st.tensor("model.embed_tokens.weight", "F32", {4, 16});
    norm("model.norm.weight");
    for (int64_t l = 0; l < layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      for (const char* n :
           {"input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm"})
        norm(p + n + ".weight");
      st.tensor(p + "self_attn.q_proj.weight", "F32", {2 * hd, 16});
      st.tensor(p + "self_attn.k_proj.weight", "F32", {hd, 16});
      st.tensor(p + "self_attn.v_proj.weight", "F32", {hd, 16});
      st.tensor(p + "self_attn.o_proj.weight", "F32", {16, 2 * hd});
      st.tensor(p + "mlp.gate_proj.weight", "F32", {8, 16});
      st.tensor(p + "mlp.up_proj.weight", "F32", {8, 16});
      st.tensor(p + "mlp.down_proj.weight", "F32", {16, 8});
    }
    return st;
  }
  std::unique_ptr<ModelFile> open(TempDir& dir) const {
    dir.write("config.json", config.dump());
    dir.write("model.safetensors", tensors().build());
    return ModelFile::open(dir.path().string());
  }
  std::string error() const {
    TempDir dir;
    try {
      open(dir);
    } catch (const Error& e) {
      return e.what();
    }
    return "<no error>";
  }
  Gemma2Dir with(const std::string& key, nlohmann::json v) const {
    Gemma2Dir d = *this;
    d.config[key] = std::move(v);
    return d;
  }
  Gemma2Dir without(const std::string& key) const {
    Gemma2Dir d = *this;
    d.config.erase(key);
    return d;
  }
};

}  // namespace

TEST(ModelGemma2Hf, ConfigMapsOntoTheGgufFields) {
  TempDir dir;
  auto f = Gemma2Dir{}.open(dir);
  const ModelConfig& c = f->config();
  EXPECT_EQ(f->format(), "safetensors");
  EXPECT_EQ(c.arch, "gemma2");
  EXPECT_TRUE(c.post_norms && c.rope_neox && c.tied_embeddings);
  EXPECT_FALSE(c.qk_norm || c.qkv_bias);
  EXPECT_EQ(c.ffn_act, ModelConfig::FfnAct::GeluTanh);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.embed_scale, 4.0f);                        // sqrt(16)
  EXPECT_EQ(c.attn_scale, float(std::pow(32.0, -0.5)));  // query_pre_attn_scalar^-0.5, not 1 / sqrt(head_dim)
  EXPECT_EQ(c.attn_softcap, 50.0f);
  EXPECT_EQ(c.final_softcap, 30.0f);
  EXPECT_EQ(layer_windows(c), (std::vector<int>{8, 0, 8}));  // layers 0, 2, ... as the GGUF path
  EXPECT_EQ(c.rope_local_theta, 0.0f);                       // one RoPE base
  EXPECT_EQ(f->output(), nullptr);
}

TEST(ModelGemma2Hf, NormsAreGemmaNamesReadAsOnePlusW) {
  for (bool bf16 : {false, true}) {
    TempDir dir;
    Gemma2Dir d;
    d.bf16_norms = bf16;
    auto f = d.open(dir);
    const std::vector<std::pair<Role, const char*>> roles = {{Role::AttnNorm, "input_layernorm"},
                                                             {Role::AttnPostNorm, "post_attention_layernorm"},
                                                             {Role::FfnNorm, "pre_feedforward_layernorm"},
                                                             {Role::FfnPostNorm, "post_feedforward_layernorm"}};
    std::vector<const HostTensor*> norms = {f->output_norm()};
    for (const auto& [role, name] : roles) {
      const HostTensor* t = f->layer_tensor(2, role);
      ASSERT_NE(t, nullptr) << name;
      EXPECT_EQ(t->name, std::string("model.layers.2.") + name + ".weight");
      norms.push_back(t);
    }
    for (const HostTensor* t : norms) {
      ASSERT_EQ(t->dtype, DType::F32) << t->name;
      ASSERT_EQ(t->shape, (std::vector<int64_t>{16}));
      const float* w = reinterpret_cast<const float*>(t->data);
      for (int i = 0; i < 16; ++i) EXPECT_EQ(w[i], 1.25f) << t->name << "[" << i << "]";
    }
    // all_tensors() lists the rewritten norms in place of the file's (greta info, uploads).
    int norms_listed = 0;
    for (const HostTensor* t : f->all_tensors())
      if (t->name.find("norm") != std::string::npos) {
        ++norms_listed;
        EXPECT_EQ(t->dtype, DType::F32) << t->name;
        EXPECT_EQ(reinterpret_cast<const float*>(t->data)[0], 1.25f) << t->name;
      }
    EXPECT_EQ(norms_listed, 1 + 3 * 4);
  }
}

TEST(ModelGemma2Hf, Gemma2ConfigDefaultsForAbsentKeys) {
  Gemma2Dir bare;
  for (const char* k :
       {"architectures", "head_dim", "query_pre_attn_scalar", "attn_logit_softcapping", "final_logit_softcapping",
        "sliding_window", "hidden_act", "hidden_activation", "tie_word_embeddings", "rope_theta", "rms_norm_eps"})
    bare.config.erase(k);
  TempDir dir;
  const ModelConfig c = bare.open(dir)->config();  // model_type alone names the architecture
  EXPECT_EQ(c.arch, "gemma2");
  EXPECT_EQ(c.head_dim, 256);
  EXPECT_EQ(c.max_context, 8192);
  EXPECT_EQ(c.attn_scale, 1.0f / 16.0f);  // query_pre_attn_scalar 256
  EXPECT_EQ(c.attn_softcap, 50.0f);
  EXPECT_EQ(c.final_softcap, 30.0f);
  EXPECT_EQ(layer_windows(c), (std::vector<int>{4096, 0, 4096}));
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_EQ(c.rope_theta, 10000.0f);
  EXPECT_EQ(c.norm_eps, 1e-6f);
}

TEST(ModelGemma2Hf, NullCapsAndLayerTypes) {
  TempDir d1, d2;
  Gemma2Dir uncapped = Gemma2Dir{}.with("attn_logit_softcapping", nullptr).with("final_logit_softcapping", nullptr);
  const ModelConfig c = uncapped.open(d1)->config();
  EXPECT_EQ(c.attn_softcap, 0.0f);  // None: transformers applies no cap
  EXPECT_EQ(c.final_softcap, 0.0f);
  // layer_types, as newer transformers write it, decides the windowed layers; with every layer
  // full, a null window is fine.
  const ModelConfig t =
      Gemma2Dir{}.with("layer_types", {"full_attention", "sliding_attention", "sliding_attention"}).open(d2)->config();
  EXPECT_EQ(layer_windows(t), (std::vector<int>{0, 8, 8}));
  TempDir d3;
  const ModelConfig g = Gemma2Dir{}
                            .with("layer_types", {"full_attention", "full_attention", "full_attention"})
                            .with("sliding_window", nullptr)
                            .open(d3)
                            ->config();
  EXPECT_EQ(layer_windows(g), (std::vector<int>{0, 0, 0}));
}

TEST(ModelGemma2Hf, RefusesWhatItDoesNotRun) {
  const Gemma2Dir d;
  EXPECT_ERROR_HAS(d.with("hidden_activation", "gelu").error(),
                   "config.json: hidden_activation = \"gelu\" is not implemented for gemma2 (supported: "
                   "gelu_pytorch_tanh)");
  EXPECT_ERROR_HAS(d.with("hidden_activation", nullptr).error(), "hidden_activation = null is not implemented");
  EXPECT_ERROR_HAS(d.with("use_bidirectional_attention", true).error(),
                   "use_bidirectional_attention = true is not implemented");
  EXPECT_EQ(d.with("use_bidirectional_attention", false).error(), "<no error>");
  EXPECT_ERROR_HAS(d.with("attn_logit_softcapping", 0.0).error(),
                   "attn_logit_softcapping = 0 (expected a finite number > 0)");
  EXPECT_ERROR_HAS(d.with("final_logit_softcapping", -30.0).error(), "final_logit_softcapping = -30");
  EXPECT_ERROR_HAS(d.with("final_logit_softcapping", "30").error(),
                   "final_logit_softcapping = \"30\" (expected a finite number > 0 or null)");
  EXPECT_ERROR_HAS(d.with("query_pre_attn_scalar", 0).error(), "query_pre_attn_scalar = 0 (expected a finite");
  EXPECT_ERROR_HAS(d.with("query_pre_attn_scalar", "256").error(), "query_pre_attn_scalar = \"256\"");
  EXPECT_ERROR_HAS(d.with("sliding_window", 0).error(), "sliding_window = 0 (expected a positive number");
  EXPECT_ERROR_HAS(d.with("sliding_window", nullptr).error(),
                   "sliding_window = null, but layers attend within a window");
  EXPECT_ERROR_HAS(d.with("layer_types", {"sliding_attention"}).error(),
                   "layer_types has 1 entries (expected one entry per layer, 3,");
  EXPECT_ERROR_HAS(d.with("layer_types", {"full_attention", "chunked_attention", "full_attention"}).error(),
                   "layer_types[1] = \"chunked_attention\" (expected");
  EXPECT_ERROR_HAS(d.with("layer_types", "sliding_attention").error(), "layer_types = \"sliding_attention\"");
  // A Gemma 2 layer's norms are all needed: one left out is named.
  TempDir dir;
  Gemma2Dir missing;
  SafetensorsBuilder st = missing.tensors();
  std::erase_if(st.tensors, [](const SafetensorsBuilder::Tensor& t) {
    return t.name == "model.layers.1.pre_feedforward_layernorm.weight";
  });
  dir.write("config.json", missing.config.dump());
  dir.write("model.safetensors", st.build());
  try {
    ModelFile::open(dir.path().string());
    ADD_FAILURE() << "opened without a pre_feedforward_layernorm";
  } catch (const Error& e) {
    EXPECT_ERROR_HAS(e.what(), "missing tensor for layer 1 ffn norm");
  }
}

}  // namespace greta
