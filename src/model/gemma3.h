// Gemma 3 (GGUF architecture "gemma3"): what it adds to the Llama decoder, read as llama.cpp
// reads it (docs/notes/gemma3.md): the embedding scaled by sqrt(dim), per-head q/k RMSNorm,
// RMSNorms after attention and after the feed-forward block, GeGLU, and interleaved local
// (sliding-window, own RoPE base) and global layers.
#pragma once
#include <string>
#include <vector>

#include "model/config.h"

namespace greta {

class GGUFFile;

// Sets c's Gemma 3 fields from `g` (n_layers, dim, n_heads, head_dim, rope_theta and
// sliding_window already read). Norm weights are used as stored: llama.cpp's converter writes
// Gemma's (1 + w). Throws greta::Error naming the key for what greta does not run (logit
// soft-capping) or a malformed layer pattern.
void read_gguf_gemma3(const GGUFFile& g, ModelConfig& c, const std::string& path);

// What Gemma 2 shares (model/gemma2.h): halves RoPE, the sqrt(dim) embedding scale, the post
// norms and GeGLU.
void set_gemma_layout(ModelConfig& c);
// The windowed layers from <arch>.attention.sliding_window_pattern: one flag per layer (true =
// windowed), or a period p (layer l global when (l + 1) % p == 0; 0: every layer windowed);
// `default_period` when the file has none. Throws greta::Error naming the key when malformed.
std::vector<bool> gguf_windowed_layers(const GGUFFile& g, const ModelConfig& c, const std::string& path,
                                       int default_period);

}  // namespace greta
