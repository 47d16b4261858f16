#include "model/gemma2.h"

#include <cmath>

#include "core/error.h"
#include "formats/gguf.h"
#include "model/gemma3.h"

namespace greta {

namespace {

// llama.cpp's values when the file carries none (the Gemma 2 paper's).
constexpr double kDefaultAttnSoftcap = 50.0, kDefaultFinalSoftcap = 30.0;
constexpr int kDefaultWindow = 4096;
// Layers 0, 2, 4, ... are windowed, 1, 3, 5, ... global (transformers: layer_idx % 2 == 0 slides).
constexpr int kDefaultWindowPattern = 2;
// Gemma 2 27B, the one size whose query_pre_attn_scalar is dim / heads (144), not head_dim:
// llama.cpp tells it by its layer count, as the files carry no query_pre_attn_scalar.
constexpr int k27BLayers = 46;

}  // namespace

void read_gguf_gemma2(const GGUFFile& g, ModelConfig& c, const std::string& path) {
  const std::string a = c.arch + ".";
  set_gemma_layout(c);
  c.attn_softcap = positive_finite(g.get_float(a + "attn_logit_softcapping").value_or(kDefaultAttnSoftcap),
                                   a + "attn_logit_softcapping", path);
  c.final_softcap = positive_finite(g.get_float(a + "final_logit_softcapping").value_or(kDefaultFinalSoftcap),
                                    a + "final_logit_softcapping", path);
  const std::string wkey = a + "attention.sliding_window";
  if (auto w = g.get_int(wkey); !w) c.sliding_window = kDefaultWindow;
  else if (*w <= 0) throw Error(path + ": " + wkey + " = " + std::to_string(*w) + " (expected a window > 0)");
  c.windowed_layers = gguf_windowed_layers(g, c, path, kDefaultWindowPattern);
  // One RoPE base in every layer unless the file names one for the windowed layers (newer
  // llama.cpp reads rope.freq_base_swa for Gemma 2 too; converters write none).
  if (auto b = g.get_float(a + "rope.freq_base_swa"))
    c.rope_local_theta = positive_finite(*b, a + "rope.freq_base_swa", path);
  c.attn_scale = c.n_layers == k27BLayers ? 1.0f / std::sqrt(float(c.dim / c.n_heads))
                                          : 1.0f / std::sqrt(float(c.head_dim));
}

}  // namespace greta
