#include "backend/cuda/matmul_lt.h"

#include <string>

#include "backend/cuda/cuda_check.h"

namespace greta::cuda {

LtGemm::LtGemm() {
  GRETA_CUDA_CHECK(cublasLtCreate(&handle_));
  GRETA_CUDA_CHECK(cudaMalloc(&workspace_, workspace_bytes_));
}

LtGemm::~LtGemm() {
  for (auto& [key, p] : plans_) destroy(p);
  cudaFree(workspace_);  // destructor: nothing useful to do on failure
  cublasLtDestroy(handle_);
}

void LtGemm::destroy(Plan& p) {
  if (p.op) cublasLtMatmulDescDestroy(p.op);
  if (p.a) cublasLtMatrixLayoutDestroy(p.a);
  if (p.b) cublasLtMatrixLayoutDestroy(p.b);
  if (p.c) cublasLtMatrixLayoutDestroy(p.c);
}

// Row-major out [n, m] is column-major C (m x n, ld m). With W row-major [m, k] seen as
// column-major (k x m, ld k) and X as column-major (k x n, ld k): C = op_T(W) * X ("TN").
LtGemm::Plan& LtGemm::plan(int64_t n, int64_t m, int64_t k, int64_t ldo) {
  const auto key = std::make_tuple(n, m, k, ldo);
  auto it = plans_.find(key);
  if (it != plans_.end()) return it->second;
  if (plans_.size() > 512) {  // many distinct prompt lengths: start over rather than grow forever
    for (auto& [kk, p] : plans_) destroy(p);
    plans_.clear();
  }
  Plan p;
  GRETA_CUDA_CHECK(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  GRETA_CUDA_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  GRETA_CUDA_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  GRETA_CUDA_CHECK(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_16BF, uint64_t(k), uint64_t(m), k));
  GRETA_CUDA_CHECK(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_16BF, uint64_t(k), uint64_t(n), k));
  GRETA_CUDA_CHECK(cublasLtMatrixLayoutCreate(&p.c, CUDA_R_16BF, uint64_t(m), uint64_t(n), ldo));
  cublasLtMatmulPreference_t pref;
  GRETA_CUDA_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  GRETA_CUDA_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                        &workspace_bytes_, sizeof(workspace_bytes_)));
  cublasLtMatmulHeuristicResult_t res{};
  int found = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(handle_, p.op, p.a, p.b, p.c, p.c, pref, 1, &res, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st != CUBLAS_STATUS_SUCCESS || found == 0) {
    destroy(p);
    throw Error("cuBLASLt: no bf16 GEMM algorithm for n=" + std::to_string(n) + " m=" + std::to_string(m) +
                " k=" + std::to_string(k));
  }
  p.algo = res.algo;
  return plans_.emplace(key, p).first->second;
}

void LtGemm::run(const __nv_bfloat16* x, const __nv_bfloat16* w, __nv_bfloat16* out, int64_t n, int64_t m, int64_t k,
                 bool accumulate, cudaStream_t s, int64_t ldo) {
  if (n <= 0 || m <= 0) return;
  Plan& p = plan(n, m, k, ldo > 0 ? ldo : m);
  const float alpha = 1.f, beta = accumulate ? 1.f : 0.f;
  GRETA_CUDA_CHECK(cublasLtMatmul(handle_, p.op, &alpha, w, p.a, x, p.b, &beta, out, p.c, out, p.c, &p.algo, workspace_,
                                  workspace_bytes_, s));
}

}  // namespace greta::cuda
