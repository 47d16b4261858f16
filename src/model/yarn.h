// YaRN RoPE scaling (HF rope_type "yarn", GGUF <arch>.rope.scaling.type = yarn): a fixed
// frequency table and an attention factor (docs/notes/rope-scaling.md).
//
// For each rotated pair i < d/2 (d = rope_dim), with base frequency b_i = theta^(-2i/d):
//   inv_freq_i = b_i / s * (1 - e_i) + b_i * e_i
// where s is the scaling factor and e_i the extrapolation weight, 1 for the fast-turning pairs
// (kept as trained), 0 for the slow ones (interpolated, divided by s) and a linear ramp between:
//   e_i = ext * (1 - clamp((i - low) / (high - low), 0, 1))
// low and high are the pairs that turn beta_fast and beta_slow times over the original context
// L: dim(r) = d ln(L / (2 pi r)) / (2 ln theta), low = max(floor(dim(beta_fast)), 0),
// high = min(ceil(dim(beta_slow)), d - 1) (no floor/ceil when truncate is off; high - low at
// least 0.001). ext (llama.cpp's yarn_ext_factor) is 1 everywhere but in llama.cpp files.
// greta stores the table as per-pair divisors b_i / inv_freq_i in ModelConfig::rope_freq_factors,
// so every backend's RoPE takes it unchanged.
//
// The attention factor m scales RoPE's cos and sin (transformers' attention_scaling, llama.cpp's
// mscale): 0.1 ln(s) + 1 by default (1 for s <= 1). It reaches the model only as m^2 q.k and is
// folded into the attention score scale through ModelConfig::rope_attn_factor (model/longrope.h).
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/config.h"

namespace greta {

class GGUFFile;

struct YarnParams {
  double factor = 1.0;       // s
  int original_context = 0;  // L, the pretrained context length
  double beta_fast = 32.0;   // rotations over L above which a pair is kept (extrapolated)
  double beta_slow = 1.0;    // rotations over L below which a pair is divided by s
  double ext_factor = 1.0;   // weight of the extrapolated part (llama.cpp's yarn_ext_factor)
  bool truncate = true;      // floor/ceil the ramp's ends to whole pairs (transformers' truncate)
};

// Per-pair divisors b_i / inv_freq_i for i < rope_dim/2 (see the file comment).
std::vector<float> yarn_rope_factors(int rope_dim, double theta, const YarnParams& p);

// transformers' yarn_get_mscale: 0.1 * mscale * ln(factor) + 1, or 1 for factor <= 1.
double yarn_mscale(double factor, double mscale = 1.0);

// HF config: `rs` is the rope_scaling / rope_parameters object (named `rs_name` in errors) of
// type "yarn". Sets c.rope_freq_factors and c.rope_attn_factor (head_dim, rope_dim, rope_theta,
// max_context must be set), as transformers' _compute_yarn_parameters reads them. Throws
// greta::Error naming the key for a bad value.
void read_hf_yarn(const nlohmann::json& rs, const std::string& rs_name, ModelConfig& c, const std::string& where);

// GGUF (rope.scaling.type = yarn): <arch>.rope.scaling.factor, .original_context_length
// (default: context_length), .yarn_beta_fast / .yarn_beta_slow / .yarn_ext_factor (llama.cpp's
// defaults 32 / 1 / 1 when absent), .yarn_attn_factor (the whole attention factor, as the
// converter copies HF's attention_factor; default 0.1 ln(s) + 1) times .attn_factor (default 1).
// Multiplies c.rope_freq_factors (a rope_freqs tensor's divisors, if any) by YaRN's.
void read_gguf_yarn(const GGUFFile& g, ModelConfig& c, const std::string& path);

}  // namespace greta
