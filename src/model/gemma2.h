// Gemma 2 (GGUF architecture "gemma2"): Gemma 3's layout without the per-head q/k norms, with
// attention and final logit soft-capping, read as llama.cpp reads it (docs/notes/gemma2.md).
#pragma once
#include <string>

#include "model/config.h"

namespace greta {

class GGUFFile;

// Sets c's Gemma 2 fields from `g` (n_layers, dim, n_heads, head_dim, rope_theta and a positive
// sliding_window already read): the layout shared with Gemma 3 (set_gemma_layout), the soft
// caps (llama.cpp's defaults 50 and 30 when the file has none), the window (4096 when the file
// has none) in every other layer from the first, and llama.cpp's attention scale. Throws
// greta::Error naming the key for a cap or window that is not a positive number.
void read_gguf_gemma2(const GGUFFile& g, ModelConfig& c, const std::string& path);

}  // namespace greta
