// Hugging Face Gemma 2 (Gemma2ForCausalLM): config.json read onto the configuration the GGUF
// Gemma 2 path produces (model/gemma2.h), so the same forward runs, and the norm weights in the
// form that forward takes (docs/notes/gemma2.md).
#pragma once
#include <memory>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "model/config.h"

namespace greta {

class OwnedTensors;
class SafetensorsModel;

// Sets c's Gemma 2 fields from config.json `j` (n_layers, dim, n_heads and the generic keys
// already read, sliding_window too: 0 for null), with transformers' Gemma2Config defaults for absent keys: head_dim
// 256, query_pre_attn_scalar 256 (attention scale query_pre_attn_scalar^-0.5), soft caps 50 and 30 (null: none),
// sliding_window 4096 on the layers layer_types names "sliding_attention" (without layer_types: 0, 2, 4, ...),
// hidden_activation gelu_pytorch_tanh, tied embeddings. Throws greta::Error naming the key, its value and what was
// expected for what greta does not run (another activation, bidirectional attention) or a malformed value.
void read_hf_gemma2(const nlohmann::json& j, ModelConfig& c, const std::string& cfg_path);

// Gemma's RMSNorm multiplies by (1 + w) and HF checkpoints store w, where llama.cpp's converter
// stores 1 + w, as the forward takes it. Returns F32 copies holding 1 + w (added in float, as
// transformers does) of model.norm.weight and every layer's input_layernorm,
// post_attention_layernorm, pre_feedforward_layernorm and post_feedforward_layernorm, under the
// same names; a missing one is left for validate_model_tensors to name. Throws greta::Error
// naming a norm tensor that is not F32, F16 or BF16.
std::shared_ptr<OwnedTensors> gemma_norms_plus_one(const SafetensorsModel& st, int n_layers, const std::string& where);

}  // namespace greta
