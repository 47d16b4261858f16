// Dynamic NTK RoPE scaling (HF rope_type "dynamic"; docs/notes/rope-scaling.md).
//
// Past max_position_embeddings (ModelConfig::max_context, M) positions the RoPE base grows with
// the sequence length L: theta' = theta * (s * L / M - (s - 1))^(d / (d - 2)), d = rope_dim, s the
// factor; up to M the table is the unscaled one. transformers recomputes the table once per
// forward from max(position_ids) + 1 and keeps the keys already in its cache as they were
// rotated, so each decode step past M rotates its new token with a base of its own. greta does
// the same per step: the step's length is rope_step_length (model/rope_step.h), and the keys in
// the paged cache keep the rotation they were written with. A single sequence therefore matches
// transformers' generate step for step; a step that batches sequences of different lengths
// rotates all of them with the longest one's base, as transformers does to a padded batch.
// llama.cpp has no dynamic NTK (its converter writes none).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/config.h"

namespace greta {

// HF config: `rs` is the rope_scaling / rope_parameters object (named `rs_name` in errors) of
// type "dynamic". Sets c.rope_dynamic_factor; throws greta::Error for a missing or bad factor.
void read_hf_dynamic_ntk(const nlohmann::json& rs, const std::string& rs_name, ModelConfig& c,
                         const std::string& where);

// The RoPE base for a sequence of `length` tokens (c.rope_theta up to c.max_context).
double dynamic_ntk_theta(const ModelConfig& c, int64_t length);

// The inverse frequencies (ModelConfig::rope_inv_freq layout) for that base.
std::vector<float> dynamic_ntk_inv_freq(const ModelConfig& c, int64_t length);

}  // namespace greta
