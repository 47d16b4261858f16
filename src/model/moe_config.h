// Mixture-of-experts hyper-parameters (Qwen3-MoE, Mixtral; docs/notes/moe.md), read as llama.cpp
// reads them from GGUF and as transformers reads them from config.json, into ModelConfig's
// n_experts, n_experts_used, expert_weights_norm and ffn_dim (each expert's intermediate size).
// What changes the math and greta does not run (shared experts, layers without experts, another
// gating function) is refused with the key and its value, never run wrong.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "model/config.h"

namespace greta {

class GGUFFile;

// GGUF "qwen3moe" (expert_count required) and "llama" (Mixtral: experts when expert_count > 0);
// c.arch, n_layers, dim and ffn_dim already read. Any other architecture with an expert_count > 0
// or a router tensor is refused. Throws greta::Error naming the key.
void read_gguf_moe(const GGUFFile& g, ModelConfig& c, const std::string& path);

// config.json of c.arch "qwen3moe" (num_experts, or num_local_experts as transformers >= 5
// writes it; num_experts_per_tok, moe_intermediate_size,
// norm_topk_prob, decoder_sparse_step, mlp_only_layers) or "mixtral" (num_local_experts,
// num_experts_per_tok; intermediate_size is the experts'). Throws greta::Error naming the key.
void read_hf_moe(const nlohmann::json& j, ModelConfig& c, const std::string& cfg_path);

}  // namespace greta
