// cuBLASLt GEMMs for many tokens (prefill, large decode batches): out [n, m] = x [n, k] @ w [m, k]^T,
// bf16 out, fp32 accumulate; bf16 operands, or e4m3 operands with a scale per weight row and per
// token (W8A8). Holds the handle, a workspace and the chosen algorithm per shape (heuristic query
// once per shape, then reused).
#pragma once
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <tuple>

namespace greta::cuda {

class LtGemm {
 public:
  LtGemm();
  ~LtGemm();
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;

  // x [n, k], w [m, k], out [n, m] with rows ldo apart (0: m; more: out is a column slice of a
  // wider matrix); bias is added separately (add_bias_rows). accumulate: out += x @ w^T in the
  // GEMM's epilogue (beta = 1, C = D = out), which saves the residual add kernel's pass and the
  // temporary.
  void run(const __nv_bfloat16* x, const __nv_bfloat16* w, __nv_bfloat16* out, int64_t n, int64_t m, int64_t k,
           bool accumulate, cudaStream_t s, int64_t ldo = 0);
  // FP8 e4m3 on the tensor cores: out [n, m] (+)= (x_scale[i] xq [n, k]) @ (w_scale[r] wq [m, k])^T,
  // both operands k-major with rows k bytes apart (k % 16 == 0, m % 8 == 0, 16-byte aligned),
  // scales fp32 on the device (cuBLASLt's OUTER_VEC mode), fast accumulation.
  void run_fp8(const uint8_t* xq, const float* x_scale, const uint8_t* wq, const float* w_scale, __nv_bfloat16* out,
               int64_t n, int64_t m, int64_t k, bool accumulate, cudaStream_t s);

 private:
  struct Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };
  // fp8: scales = {weight row scales, token scales}, the first call's (each call sets its own).
  Plan& plan(bool fp8, int64_t n, int64_t m, int64_t k, int64_t ldo, const float* const* scales);
  void set_scales(Plan& p, const float* a, const float* b);
  void destroy(Plan& p);

  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 32u << 20;
  std::map<std::tuple<bool, int64_t, int64_t, int64_t, int64_t>, Plan> plans_;
};

}  // namespace greta::cuda
