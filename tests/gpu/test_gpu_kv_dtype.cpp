// The CUDA backend's KV cache is bf16 only: --kv-dtype fp8 / f16 must be refused when the backend
// is made, naming the values it accepts; auto and bf16 give a bf16 cache.
#include <string>

#include "gpu_test_util.h"

namespace greta::gputest {

using GpuKvDtype = GpuTest;

TEST_F(GpuKvDtype, RefusesWhatItCannotStore) {
  for (KVCacheDType t : {KVCacheDType::FP8, KVCacheDType::F16}) {
    CudaOptions o;
    o.kv_dtype = t;
    try {
      make_cuda_backend(o);
      ADD_FAILURE() << "a CUDA backend with KV cache type " << int(t) << " was made";
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find("--kv-dtype"), std::string::npos) << m;
      EXPECT_NE(m.find("auto, bf16"), std::string::npos) << m;
    }
  }
  for (KVCacheDType t : {KVCacheDType::Auto, KVCacheDType::BF16}) {
    CudaOptions o;
    o.kv_dtype = t;
    EXPECT_EQ(make_cuda_backend(o)->kv_dtype(), DType::BF16);
  }
  EXPECT_EQ(gpu->alloc_kv(KVCacheDesc{1, 2, 16, 2, 64})->dtype, gpu->kv_dtype());
}

}  // namespace greta::gputest
