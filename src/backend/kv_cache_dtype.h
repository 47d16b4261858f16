// The values of --kv-dtype (KVCacheDType, backend_options.h): their names and parsing. Named as
// vLLM's --kv-cache-dtype (auto, fp8, fp8_e4m3) and llama.cpp's -ctk / -ctv (f16, bf16) name them.
#pragma once
#include <string>

#include "backend/backend_options.h"
#include "core/dtype.h"

namespace greta {

// "auto", "f16", "bf16", "fp8" or "fp8_e4m3" (the same as fp8); anything else throws greta::Error
// naming the accepted values.
KVCacheDType parse_kv_cache_dtype(const std::string& name);
// The accepted values, for help texts and errors.
const char* kv_cache_dtype_choices();
// The --kv-dtype name of a cache of element type t (Backend::kv_dtype()): "f16", "bf16", "fp8_e4m3".
std::string kv_cache_dtype_name(DType t);

}  // namespace greta
