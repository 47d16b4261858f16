#include "backend/kv_cache_dtype.h"

#include "core/error.h"

namespace greta {

KVCacheDType parse_kv_cache_dtype(const std::string& name) {
  if (name == "auto") return KVCacheDType::Auto;
  if (name == "f16") return KVCacheDType::F16;
  if (name == "bf16") return KVCacheDType::BF16;
  if (name == "fp8" || name == "fp8_e4m3") return KVCacheDType::FP8;
  throw Error("unknown KV cache type '" + name + "' (accepted: " + kv_cache_dtype_choices() + ")");
}

const char* kv_cache_dtype_choices() {
  return "auto (the device's own: f16 on cpu, bf16 on cuda), f16, bf16, fp8 (= fp8_e4m3: e4m3 with a scale per "
         "token and kv head)";
}

std::string kv_cache_dtype_name(DType t) {
  switch (t) {
    case DType::F16: return "f16";
    case DType::BF16: return "bf16";
    case DType::F8_E4M3: return "fp8_e4m3";
    default: return std::string(dtype_name(t));
  }
}

}  // namespace greta
