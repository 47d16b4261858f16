// Hugging Face quantized checkpoints: reads `quantization_config` of config.json and turns each
// quantized linear layer's tensors into one weight "<layer>.weight" of a block type
// (core/quant_blocks.h), row-major [out, in] like every other weight:
//   - FP8 e4m3 (quant_method "compressed-tensors" with float 8-bit weights, "fp8", "fbgemm_fp8"):
//     "<layer>.weight" F8_E4M3 with "<layer>.weight_scale" (or "weight_scale_inv") per tensor,
//     per output channel or per tile -> F8_B64.
//   - AWQ (GEMM packing) and GPTQ int4, group size 32 / 64 / 128: "<layer>.qweight", ".qzeros",
//     ".scales" (and GPTQ ".g_idx") -> I4_G32 / I4_G64 / I4_G128.
// Anything else -- other bits, group sizes or packings, GPTQ act-order with a permuting g_idx, a
// malformed config or tensors of the wrong shape or type -- is an error naming the key or tensor
// and what was expected. Nothing falls back to another format silently.
#pragma once
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace greta {

class OwnedTensors;
class SafetensorsModel;

struct HfQuantized {
  std::shared_ptr<OwnedTensors> tensors;        // null: the checkpoint is not quantized
  std::set<std::string, std::less<>> consumed;  // file tensors folded into `tensors`
  std::vector<std::string> notes;               // for the load log: what was converted or left unused
};

// config: the parsed config.json (an object); cfg_path names it in errors. Without a
// quantization_config, returns no tensors, but throws if the files hold quantized tensors.
HfQuantized load_hf_quantized(const nlohmann::json& config, const std::string& cfg_path, const SafetensorsModel& st);

}  // namespace greta
