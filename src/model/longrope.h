// LongRoPE (Phi-3 / Phi-3.5 / Phi-4-mini "longrope", called "su" by older checkpoints): two sets
// of per-frequency divisors, "short" and "long", and an attention factor scaling RoPE's cos/sin.
//
// Which set a step uses follows transformers (longrope_frequency_update) and vLLM: one set for
// the whole forward, the long one once the sequence length exceeds
// original_max_position_embeddings. Keys already in the cache keep the rotation they were
// written with (in transformers too). The length greta compares is each sequence's length after
// the step or, where known, its whole prompt length, so a long prompt cut into chunks uses the
// long set from its first chunk, as transformers' single prompt forward does.
//
// The attention factor s multiplies q and k after RoPE, so it only ever reaches the model as the
// product s^2 * q.k: greta folds s^2 into the attention score scale instead (no kernel change;
// with partial rotary, model/partial_rotary.h undoes it for the dims RoPE leaves alone).
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "model/config.h"
#include "runtime/batch.h"

namespace greta {

class GGUFFile;

// HF config: `rs` is the rope_scaling / rope_parameters object (named `rs_name` in errors) of
// type "longrope" or "su"; `config` the whole config.json. Fills c's short and long factors,
// original context and attention factor (head_dim, rope_dim, max_context must be set). Throws
// greta::Error naming the key for a missing, mis-sized or non-positive value.
void read_hf_longrope(const nlohmann::json& rs, const std::string& rs_name, const nlohmann::json& config,
                      ModelConfig& c, const std::string& where);

// GGUF (llama.cpp's converter): tensors rope_factors_short / rope_factors_long (F32, rope_dim/2),
// <arch>.rope.scaling.original_context_length and <arch>.rope.scaling.attn_factor. Does nothing
// when the file has no rope_factors_long tensor.
void read_gguf_longrope(const GGUFFile& g, ModelConfig& c, const std::string& path);

// sqrt(1 + ln(factor) / ln(original_context)), 1 for factor <= 1: the LongRoPE paper's default.
float longrope_default_attn_factor(double factor, int original_context);

// Whether a step over `b` uses the long factors (see the file comment).
bool rope_step_uses_long(const ModelConfig& c, const Batch& b);

}  // namespace greta
