// cuBLASLt GEMM for many tokens (prefill, large decode batches): out [n, m] = x [n, k] @ w [m, k]^T,
// bf16 in/out, fp32 accumulate. Holds the handle, a workspace and the chosen algorithm per
// shape (heuristic query once per (n, m, k), then reused).
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

 private:
  struct Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };
  Plan& plan(int64_t n, int64_t m, int64_t k, int64_t ldo);
  void destroy(Plan& p);

  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 32u << 20;
  std::map<std::tuple<int64_t, int64_t, int64_t, int64_t>, Plan> plans_;
};

}  // namespace greta::cuda
