// gpu_fp8_gemm_bench: which cuBLASLt FP8 e4m3 scaling modes run on this card, how fast and how
// accurate, on the prefill GEMMs of Llama-2-7B: out [n, m] = x [n, k] @ W [m, k]^T. Modes (TN,
// A = W, B = x, bf16 C and D, fp32 compute; the first four also with FAST_ACCUM, suffix _fast):
//   tensor                 SCALAR_32F both: one scale for W, one for x (amax over all of x)
//   outer_vec              OUTER_VEC_32F both: one scale per weight row, one per token
//   vec128                 VEC128_32F both: one scale per 128 values along k of a row / token
//   blk128_vec128          BLK128x128_32F for W (a scale per 128 x 128 tile), VEC128_32F for x
//   vec128_blk128_swapped  the same with A = x, B = W (D = out^T [m, n]), as NVIDIA's sample
// fp32 scale tensors of an operand of `outer` rows (m or n) of k values, k-major:
//   OUTER_VEC_32F  [outer]            (cublasLt.h: "vectors ... M and N elements")
//   VEC128_32F     [k / 128][outer]   scale of (row i, block b) at b * outer + i
//   BLK128x128_32F [outer / 128][L4]  scale of (tile o, block b) at o * L4 + b, L4 = k / 128 rounded
//                                     up to a multiple of 4
// Sources: cuBLAS docs (cublasLtMatmulMatrixScale_t; block scaling factors layout,
// https://docs.nvidia.com/cuda/cublas/index.html#d-block-scaling-factors-layout); NVIDIA
// CUDALibrarySamples cuBLASLt/Common/helpers.h getScaleTensorSize and LtBlk128x128Fp8Matmul;
// PyTorch scaled_mm (1x128 scales outer-dim-major, 128x128 scales as [outer/128, L4] rows). A
// block mode far off with these is retried with transposed layouts ("layout" names the match).
// What each JSON line holds: docs/notes/fp8-gemm.md. Stderr: a table of the times and per-layer
// sums. Exit status 1 when a mode that runs misses rms_rel < 2e-2 against the GEMM of its
// dequantized operands, or matched only a transposed layout.
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/device_buffer.h"
#include "backend/cuda/launch_commands.h"
#include "backend/cuda/matmul_lt.h"
#include "backend/cuda/quant_planes.h"
#include "gpu_bench_timing.h"

using greta::DType;
using greta::cuda::bf16;
using greta::cuda::DeviceBuffer;

namespace {

constexpr float kE4M3Max = 448.f;

// ---- inputs ----
__device__ float hash_normal(uint64_t i, uint32_t seed) {  // Box-Muller on a splitmix64 hash
  uint64_t z = i * 0x9E3779B97F4A7C15ull + (uint64_t(seed) << 32) + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  const float u1 = (float(uint32_t(z >> 40)) + 1.f) / 16777217.f, u2 = float(uint32_t(z) >> 8) / 16777216.f;
  return sqrtf(-2.f * logf(u1)) * cospif(2.f * u2);
}

// p[i, j] = sd * exp(row_sigma * N_i) * N_ij, times gain on every outlier_every-th channel.
__global__ void fill_normal(bf16* p, int64_t rows, int64_t k, uint32_t seed, float sd, float row_sigma,
                            int outlier_every, float gain) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < rows * k; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = t / k, j = t % k;
    float v = sd * expf(row_sigma * hash_normal(uint64_t(i), seed ^ 0x5bd1e995u)) * hash_normal(uint64_t(t), seed);
    if (outlier_every > 0 && j % outlier_every == 7) v *= gain;
    p[t] = __float2bfloat16(v);
  }
}

// ---- quantization ----
__device__ __forceinline__ uint8_t to_e4m3(float v) { return __nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3); }
__device__ __forceinline__ float from_e4m3(uint8_t q) {
  return __half2float(__half(__nv_cvt_fp8_to_halfraw(q, __NV_E4M3)));
}
__device__ __forceinline__ float warp_max(float a, int width = 32) {
  for (int o = width / 2; o > 0; o >>= 1) a = fmaxf(a, __shfl_xor_sync(0xffffffffu, a, o));
  return a;
}
__device__ __forceinline__ float scale_of(float amax) { return amax > 0.f ? amax / kE4M3Max : 1.f; }
__device__ __forceinline__ float amax8(const bf16* p, float a) {  // max(a, |p[0..7]|), p 16-byte aligned
  const uint4 u = *reinterpret_cast<const uint4*>(p);
  const bf16* v = reinterpret_cast<const bf16*>(&u);
  for (int e = 0; e < 8; ++e) a = fmaxf(a, fabsf(__bfloat162float(v[e])));
  return a;
}
__device__ __forceinline__ void quant8(const bf16* p, float inv, uint8_t* q) {  // q[0..7] = e4m3(p[0..7] * inv)
  const uint4 u = *reinterpret_cast<const uint4*>(p);
  const bf16* v = reinterpret_cast<const bf16*>(&u);
  uint2 o;
  uint8_t* ob = reinterpret_cast<uint8_t*>(&o);
  for (int e = 0; e < 8; ++e) ob[e] = to_e4m3(__bfloat162float(v[e]) * inv);
  *reinterpret_cast<uint2*>(q) = o;
}

// Dynamic per-token quantization in 1 x 128 groups (VEC128_32F): 8 values a thread, 16 threads
// a group (n k / 8 is a multiple of 32: only whole warps leave early); the scale of token i's
// group g goes to scale[i * s_tok + g * s_grp] (cuBLAS: s_tok 1, s_grp n; row-major: k / 128, 1).
__global__ void quant_tokens_g128(const bf16* x, int64_t n, int64_t k, uint8_t* q, float* scale, int64_t s_tok,
                                  int64_t s_grp) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x, per_row = k / 8;
  if (c >= n * per_row) return;
  const int64_t i = c / per_row, j = c % per_row * 8;
  const float s = scale_of(warp_max(amax8(x + i * k + j, 0.f), 16));
  quant8(x + i * k + j, 1.f / s, q + i * k + j);
  if (threadIdx.x % 16 == 0) scale[i * s_tok + j / 128 * s_grp] = s;
}

// Dynamic per-token quantization, one scale a token (OUTER_VEC_32F): a block of 256 per token.
__global__ void quant_tokens_row(const bf16* x, int64_t k, uint8_t* q, float* scale) {
  const bf16* xr = x + blockIdx.x * k;
  uint8_t* qr = q + blockIdx.x * k;
  float a = 0.f;
  for (int64_t j = threadIdx.x * 8; j < k; j += blockDim.x * 8) a = amax8(xr + j, a);
  __shared__ float part[32];
  a = warp_max(a);
  if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = a;
  __syncthreads();
  a = threadIdx.x % 32 < blockDim.x / 32 ? part[threadIdx.x % 32] : 0.f;  // every warp reduces all parts
  const float s = scale_of(warp_max(a)), inv = 1.f / s;
  for (int64_t j = threadIdx.x * 8; j < k; j += blockDim.x * 8) quant8(xr + j, inv, qr + j);
  if (threadIdx.x == 0) scale[blockIdx.x] = s;
}

// Generic scale groups of rd rows x cd columns (rd = rows, cd = k: one per tensor), scales
// row-major [ceil(rows / rd)][k / cd]. 8 values a thread; a warp stays inside one row because
// k % 256 == 0, and the cd / 8 lanes of a group are adjacent. amax must start at 0.
__global__ void group_amax(const bf16* x, int64_t rows, int64_t k, int64_t rd, int64_t cd, float* amax) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x, per_row = k / 8;
  const bool live = c < rows * per_row;
  const int64_t i = live ? c / per_row : 0, j = live ? c % per_row * 8 : 0;
  float a = live ? amax8(x + i * k + j, 0.f) : 0.f;
  const int width = cd >= 256 ? 32 : int(cd / 8);
  a = warp_max(a, width);
  if (live && threadIdx.x % width == 0)  // non-negative floats order as their bits do
    atomicMax(reinterpret_cast<int*>(amax + (i / rd) * (k / cd) + j / cd), __float_as_int(a));
}

__global__ void amax_to_scale(float* s, int64_t count) {
  const int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (t < count) s[t] = scale_of(s[t]);
}

__global__ void quant_apply(const bf16* x, int64_t rows, int64_t k, int64_t rd, int64_t cd, const float* scale,
                            uint8_t* q) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x, per_row = k / 8;
  if (c >= rows * per_row) return;
  const int64_t i = c / per_row, j = c % per_row * 8;
  quant8(x + i * k + j, 1.f / scale[(i / rd) * (k / cd) + j / cd], q + i * k + j);
}

__global__ void dequant_f32(const uint8_t* q, int64_t rows, int64_t k, int64_t rd, int64_t cd, const float* scale,
                            float* out) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < rows * k; t += int64_t(gridDim.x) * blockDim.x)
    out[t] = from_e4m3(q[t]) * scale[(t / k / rd) * (k / cd) + t % k / cd];
}

// Row-major scales [outer][kb] -> dst[o * ld_o + b * ld_b].
__global__ void place_scales(const float* src, int64_t outer, int64_t kb, int64_t ld_o, int64_t ld_b, float* dst) {
  const int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (t < outer * kb) dst[(t / kb) * ld_o + (t % kb) * ld_b] = src[t];
}

// ---- errors ----
struct Err {
  double sse, ssr;            // sum of squared errors, of squared reference values
  unsigned max_err, max_ref;  // float bits
};

// out [n, m] (transposed: [m, n]) against ref [n, m]; an output that is not finite counts as an
// infinite error.
__global__ void compare(const bf16* out, const float* ref, int64_t n, int64_t m, int transposed, Err* e) {
  double se = 0, sr = 0;
  float me = 0.f, mr = 0.f;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < n * m; t += int64_t(gridDim.x) * blockDim.x) {
    const float o = __bfloat162float(out[transposed ? (t % m) * n + t / m : t]), r = ref[t];
    const float d = isfinite(o) ? o - r : INFINITY;
    se += double(d) * d;
    sr += double(r) * r;
    me = fmaxf(me, fabsf(d));
    mr = fmaxf(mr, fabsf(r));
  }
  for (int o = 16; o > 0; o >>= 1) {
    se += __shfl_xor_sync(0xffffffffu, se, o);
    sr += __shfl_xor_sync(0xffffffffu, sr, o);
  }
  me = warp_max(me);
  mr = warp_max(mr);
  if (threadIdx.x % 32 == 0) {
    atomicAdd(&e->sse, se);
    atomicAdd(&e->ssr, sr);
    atomicMax(&e->max_err, __float_as_uint(me));
    atomicMax(&e->max_ref, __float_as_uint(mr));
  }
}

// ---- host side ----
enum Scheme { kTensor, kRow, kVec128, kBlk128, kB64, kSchemes };
const char* const kSchemeName[] = {"tensor", "row", "vec128", "blk128x128", "b64"};

struct Grid {
  int64_t rd, cd;  // rows and columns per scale
};
Grid grid_of(Scheme s, int64_t rows, int64_t k) {
  return s == kTensor   ? Grid{rows, k}
         : s == kRow    ? Grid{1, k}
         : s == kBlk128 ? Grid{128, 128}
                        : Grid{1, s == kB64 ? 64 : 128};
}

int blocks_for(int64_t threads) { return int((threads + 255) / 256); }
template <class T>
T* as(DeviceBuffer& b) {
  return static_cast<T*>(b.get());
}

// x [rows, k] -> q, with the scales of groups g row-major [rows / g.rd][k / g.cd].
void quantize_groups(const bf16* x, int64_t rows, int64_t k, Grid g, uint8_t* q, float* scales, cudaStream_t s) {
  const int64_t count = (rows + g.rd - 1) / g.rd * (k / g.cd);
  GRETA_CUDA_CHECK(cudaMemsetAsync(scales, 0, size_t(count) * 4, s));
  group_amax<<<blocks_for(rows * k / 8), 256, 0, s>>>(x, rows, k, g.rd, g.cd, scales);
  amax_to_scale<<<blocks_for(count), 256, 0, s>>>(scales, count);
  quant_apply<<<blocks_for(rows * k / 8), 256, 0, s>>>(x, rows, k, g.rd, g.cd, scales, q);
  GRETA_CUDA_LAUNCH_CHECK();
}

// One operand under one scheme: e4m3 values [rows, k]; scales row-major over the groups (what
// the reference reads) and lt_scales, the same in cuBLAS's layout.
struct Quantized {
  Scheme scheme = kTensor;
  int64_t rows = 0, k = 0;
  DeviceBuffer q, scales, lt_scales;
  Grid grid() const { return grid_of(scheme, rows, k); }
  int64_t outer() const { return (rows + grid().rd - 1) / grid().rd; }
  int64_t kb() const { return k / grid().cd; }
  const float* lt() { return scheme == kVec128 || scheme == kBlk128 ? as<float>(lt_scales) : as<float>(scales); }
  void init(Scheme sc, int64_t r, int64_t kk) {
    scheme = sc, rows = r, k = kk;
    q.reset(size_t(rows * k));
    // Padded beyond any layout's reach: a wrong layout guess reads garbage, not out of bounds.
    scales.reset(size_t((outer() + 128) * (kb() + 4)) * 4);
    lt_scales.reset(scales.size());
  }
};

// scales -> lt_scales in the documented layout, or its transpose (alt).
void place(Quantized& qz, bool alt, cudaStream_t s) {
  if (qz.scheme != kVec128 && qz.scheme != kBlk128) return;
  const int64_t outer = qz.outer(), kb = qz.kb();
  const bool blk = qz.scheme == kBlk128;
  const int64_t ld_o = blk ? (alt ? 1 : (kb + 3) / 4 * 4) : (alt ? kb : 1);
  const int64_t ld_b = blk ? (alt ? outer : 1) : (alt ? 1 : outer);
  place_scales<<<blocks_for(outer * kb), 256, 0, s>>>(as<float>(qz.scales), outer, kb, ld_o, ld_b,
                                                      as<float>(qz.lt_scales));
  GRETA_CUDA_LAUNCH_CHECK();
}

// The dynamic activation quantization as a prefill would run it; vec128 scales go straight to
// cuBLAS's layout.
void quantize_tokens(const bf16* x, Quantized& qz, cudaStream_t s) {
  const int64_t n = qz.rows, k = qz.k;
  if (qz.scheme == kVec128)
    quant_tokens_g128<<<blocks_for(n * k / 8), 256, 0, s>>>(x, n, k, as<uint8_t>(qz.q), as<float>(qz.lt_scales), 1, n);
  else if (qz.scheme == kRow) quant_tokens_row<<<int(n), 256, 0, s>>>(x, k, as<uint8_t>(qz.q), as<float>(qz.scales));
  else quantize_groups(x, n, k, qz.grid(), as<uint8_t>(qz.q), as<float>(qz.scales), s);
  GRETA_CUDA_LAUNCH_CHECK();
}

struct Mode {
  const char* name;
  cublasLtMatmulMatrixScale_t w_mode, x_mode;
  Scheme w, x;
  bool fast, swapped;  // swapped: A = x, B = W, D = out^T
};
constexpr cublasLtMatmulMatrixScale_t kScalar = CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F,
                                      kOuter = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F,
                                      kV128 = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F,
                                      kB128 = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
const Mode kModes[] = {{"tensor", kScalar, kScalar, kTensor, kTensor, false, false},
                       {"tensor_fast", kScalar, kScalar, kTensor, kTensor, true, false},
                       {"outer_vec", kOuter, kOuter, kRow, kRow, false, false},
                       {"outer_vec_fast", kOuter, kOuter, kRow, kRow, true, false},
                       {"vec128", kV128, kV128, kVec128, kVec128, false, false},
                       {"vec128_fast", kV128, kV128, kVec128, kVec128, true, false},
                       {"blk128_vec128", kB128, kV128, kBlk128, kVec128, false, false},
                       {"blk128_vec128_fast", kB128, kV128, kBlk128, kVec128, true, false},
                       {"vec128_blk128_swapped", kB128, kV128, kBlk128, kVec128, false, true}};
constexpr double kOkRel = 2e-2, kLayoutWrongRel = 5e-2;
constexpr int kReps = 20, kMaxAlgos = 4;

struct ErrStats {
  double max_abs = 0, max_rel = 0, rms_rel = 0;
};

struct Ctx {
  std::string dev;
  cudaStream_t s = nullptr;
  cublasLtHandle_t lt = nullptr;
  cublasHandle_t blas = nullptr;
  DeviceBuffer ws, flush, err;
  size_t ws_bytes = size_t(32) << 20;

  // Median of kReps runs of f after one warm-up, L2 flushed before each (outside the timed span).
  template <class F>
  double cold_ms(F&& f) {
    cudaEvent_t a, b;
    GRETA_CUDA_CHECK(cudaEventCreate(&a));
    GRETA_CUDA_CHECK(cudaEventCreate(&b));
    f();
    std::vector<double> t;
    for (int r = 0; r < kReps; ++r) {
      GRETA_CUDA_CHECK(cudaMemsetAsync(flush.get(), r, flush.size(), s));
      GRETA_CUDA_CHECK(cudaEventRecord(a, s));
      f();
      GRETA_CUDA_CHECK(cudaEventRecord(b, s));
      GRETA_CUDA_CHECK(cudaEventSynchronize(b));
      float ms = 0;
      GRETA_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
      t.push_back(ms);
    }
    GRETA_CUDA_CHECK(cudaEventDestroy(a));
    GRETA_CUDA_CHECK(cudaEventDestroy(b));
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  }
  // ref [n, m] = x [n, k] @ w [m, k]^T in fp32, no tensor cores (pedantic: no TF32).
  void ref_gemm(const float* w, const float* x, float* ref, int64_t n, int64_t m, int64_t k) {
    const float one = 1.f, zero = 0.f;
    GRETA_CUDA_CHECK(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, int(m), int(n), int(k), &one, w, CUDA_R_32F, int(k),
                                  x, CUDA_R_32F, int(k), &zero, ref, CUDA_R_32F, int(m), CUBLAS_COMPUTE_32F_PEDANTIC,
                                  CUBLAS_GEMM_DEFAULT));
  }
  ErrStats compare_out(const bf16* out, const float* ref, int64_t n, int64_t m, bool transposed) {
    GRETA_CUDA_CHECK(cudaMemsetAsync(err.get(), 0, sizeof(Err), s));
    compare<<<1024, 256, 0, s>>>(out, ref, n, m, transposed ? 1 : 0, as<Err>(err));
    GRETA_CUDA_LAUNCH_CHECK();
    Err e;
    GRETA_CUDA_CHECK(cudaMemcpyAsync(&e, err.get(), sizeof(e), cudaMemcpyDeviceToHost, s));
    GRETA_CUDA_CHECK(cudaStreamSynchronize(s));
    float me, mr;
    std::memcpy(&me, &e.max_err, 4);
    std::memcpy(&mr, &e.max_ref, 4);
    return {me, me / std::max(mr, 1e-30f), std::sqrt(e.sse / std::max(e.ssr, 1e-30))};
  }
};

std::string err_json(const char* tag, const ErrStats& e) {  // JSON has no inf: null
  std::string r;
  const std::pair<const char*, double> kv[] = {{"max_abs", e.max_abs}, {"max_rel", e.max_rel}, {"rms_rel", e.rms_rel}};
  for (const auto& [name, v] : kv) {
    char b[64];
    std::snprintf(b, sizeof b, std::isfinite(v) ? "%s\"%s_%s\":%.3e" : "%s\"%s_%s\":null", r.empty() ? "" : ",", tag,
                  name, v);
    r += b;
  }
  return r;
}

struct ModeResult {
  bool supported = false, ok = false;
  double us = 0;
};

// Builds, checks and times one mode on one shape; prints its JSON line.
ModeResult run_mode(Ctx& c, const Mode& md, const char* what, int64_t n, int64_t m, int64_t k, Quantized& w,
                    Quantized& x, bf16* out, const float* ref_deq, const float* ref_exact) {
  char head[384];
  std::snprintf(head, sizeof head,
                "{\"bench\":\"fp8_gemm\",\"device\":\"%s\",\"mode\":\"%s\",\"w_scale\":\"%s\",\"x_scale\":\"%s\","
                "\"fast_accum\":%s,\"a_operand\":\"%s\",\"shape\":\"%s\",\"n\":%lld,\"m\":%lld,\"k\":%lld",
                c.dev.c_str(), md.name, kSchemeName[md.w], kSchemeName[md.x], md.fast ? "true" : "false",
                md.swapped ? "x" : "W", what, (long long)n, (long long)m, (long long)k);
  ModeResult res;
  auto unsupported = [&](const char* stage, cublasStatus_t st) {
    std::printf("%s,\"supported\":false,\"stage\":\"%s\",\"status\":%d,\"status_name\":\"%s\"}\n", head, stage, int(st),
                cublasGetStatusName(st));
    return res;
  };
  Quantized& qa = md.swapped ? x : w;
  Quantized& qb = md.swapped ? w : x;
  const int64_t rows_a = md.swapped ? n : m, cols_b = md.swapped ? m : n;
  struct Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
    cublasLtMatmulPreference_t pref = nullptr;
    ~Plan() {
      if (op) cublasLtMatmulDescDestroy(op);
      for (cublasLtMatrixLayout_t l : {a, b, d})
        if (l) cublasLtMatrixLayoutDestroy(l);
      if (pref) cublasLtMatmulPreferenceDestroy(pref);
    }
  } p;
  cublasStatus_t st;
  if ((st = cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F))) return unsupported("desc_create", st);
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  const int32_t a_mode = md.swapped ? md.x_mode : md.w_mode, b_mode = md.swapped ? md.w_mode : md.x_mode;
  const int8_t fast = md.fast ? 1 : 0;
  const void* sa = qa.lt();
  const void* sb = qb.lt();
  const std::tuple<cublasLtMatmulDescAttributes_t, const void*, size_t> attrs[] = {
      {CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta},
      {CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb},
      {CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &a_mode, 4},
      {CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &b_mode, 4},
      {CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &sa, sizeof sa},
      {CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &sb, sizeof sb},
      {CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fast, 1}};
  for (const auto& [attr, v, bytes] : attrs)
    if ((st = cublasLtMatmulDescSetAttribute(p.op, attr, v, bytes))) return unsupported("set_attribute", st);
  if ((st = cublasLtMatrixLayoutCreate(&p.a, CUDA_R_8F_E4M3, uint64_t(k), uint64_t(rows_a), k)) ||
      (st = cublasLtMatrixLayoutCreate(&p.b, CUDA_R_8F_E4M3, uint64_t(k), uint64_t(cols_b), k)) ||
      (st = cublasLtMatrixLayoutCreate(&p.d, CUDA_R_16BF, uint64_t(rows_a), uint64_t(cols_b), rows_a)))
    return unsupported("layout_create", st);
  GRETA_CUDA_CHECK(cublasLtMatmulPreferenceCreate(&p.pref));
  GRETA_CUDA_CHECK(cublasLtMatmulPreferenceSetAttribute(p.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &c.ws_bytes,
                                                        sizeof c.ws_bytes));
  cublasLtMatmulHeuristicResult_t algos[kMaxAlgos] = {};
  int found = 0;
  if ((st = cublasLtMatmulAlgoGetHeuristic(c.lt, p.op, p.a, p.b, p.d, p.d, p.pref, kMaxAlgos, algos, &found)))
    return unsupported("heuristic", st);
  if (found == 0) return unsupported("no_algorithm", st);
  const float alpha = 1.f, beta = 0.f;
  auto matmul = [&](int i) {
    return cublasLtMatmul(c.lt, p.op, &alpha, qa.q.get(), p.a, qb.q.get(), p.b, &beta, out, p.d, out, p.d,
                          &algos[i].algo, c.ws.get(), c.ws_bytes, c.s);
  };
  // Accuracy of the first algorithm; a block mode far off with the documented scale layouts is
  // retried with transposed ones.
  static const char* const kLayouts[] = {"documented", "alt_w", "alt_x", "alt_both"};
  const bool blocky = md.w == kVec128 || md.w == kBlk128 || md.x == kVec128;
  ErrStats deq, exact;
  int layout = 0;
  for (; layout < (blocky ? 4 : 1); ++layout) {
    place(w, layout == 1 || layout == 3, c.s);
    place(x, layout == 2 || layout == 3, c.s);
    GRETA_CUDA_CHECK(cudaMemsetAsync(out, 0xff, size_t(n * m) * 2, c.s));  // NaN: what is not written shows
    if ((st = matmul(0))) return unsupported("matmul", st);
    deq = c.compare_out(out, ref_deq, n, m, md.swapped);
    exact = c.compare_out(out, ref_exact, n, m, md.swapped);
    if (deq.rms_rel < kLayoutWrongRel) break;
  }
  layout = std::min(layout, blocky ? 3 : 0);
  place(w, false, c.s);
  place(x, false, c.s);
  res.supported = true;
  res.ok = deq.rms_rel < kOkRel && layout == 0;
  res.us = c.cold_ms([&] { GRETA_CUDA_CHECK(matmul(0)); }) * 1e3;
  double best = res.us;
  int best_i = 0;
  for (int i = 1; i < found; ++i) {
    if (matmul(i)) continue;  // an algorithm that refuses these operands
    const double us = c.cold_ms([&] { GRETA_CUDA_CHECK(matmul(i)); }) * 1e3;
    if (us < best) best = us, best_i = i;
  }
  std::printf(
      "%s,\"supported\":true,\"algos\":%d,\"us\":%.2f,\"tflops\":%.1f,\"us_best\":%.2f,\"best_algo\":%d,%s,%s,"
      "\"layout\":\"%s\",\"ok\":%s}\n",
      head, found, res.us, 2.0 * double(n * m) * double(k) / (res.us * 1e6), best, best_i, err_json("deq", deq).c_str(),
      err_json("exact", exact).c_str(), kLayouts[layout], res.ok ? "true" : "false");
  std::fflush(stdout);
  return res;
}

}  // namespace

int main() {
  try {
    Ctx c;
    cudaDeviceProp prop{};
    GRETA_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    c.dev = prop.name;
    int rt = 0;
    GRETA_CUDA_CHECK(cudaRuntimeGetVersion(&rt));
    std::printf(
        "{\"bench\":\"device\",\"device\":\"%s\",\"sm\":\"%d.%d\",\"sms\":%d,\"l2_mb\":%.1f,"
        "\"cuda_runtime\":%d,\"cublaslt_version\":%zu}\n",
        c.dev.c_str(), prop.major, prop.minor, prop.multiProcessorCount, prop.l2CacheSize / 1048576.0, rt,
        cublasLtGetVersion());
    GRETA_CUDA_CHECK(cudaStreamCreateWithFlags(&c.s, cudaStreamNonBlocking));
    GRETA_CUDA_CHECK(cublasLtCreate(&c.lt));
    GRETA_CUDA_CHECK(cublasCreate(&c.blas));
    GRETA_CUDA_CHECK(cublasSetStream(c.blas, c.s));
    c.ws.reset(c.ws_bytes);
    c.flush.reset(std::max<size_t>(size_t(256) << 20, size_t(prop.l2CacheSize) * 4));
    c.err.reset(sizeof(Err));
    greta::cuda::LtGemm engine_gemm;

    // Llama-2-7B: q/k/v fused, o, gate+up fused, down, for prompts of 512 and 2048 tokens; the
    // small-batch end on a gate-sized weight.
    struct WShape {
      int64_t m, k;
      const char* what;
      std::vector<int64_t> ns;
    };
    const WShape wshapes[] = {{12288, 4096, "qkv", {512, 2048}},
                              {4096, 4096, "o", {512, 2048}},
                              {22016, 4096, "gate_up", {512, 2048}},
                              {4096, 11008, "down", {512, 2048}},
                              {11008, 4096, "gate", {64, 256}}};
    std::map<std::tuple<std::string, int64_t, int64_t, int64_t>, ModeResult> results;  // (column, n, m, k)
    std::map<std::tuple<int, int64_t, int64_t>, double> quant_us;                      // (scheme, n, k)
    bool all_ok = true;
    for (const WShape& ws : wshapes) {
      const int64_t m = ws.m, k = ws.k, nmax = ws.ns.back();
      if (k % 256 || m % 128) throw greta::Error("shapes need k % 256 == 0 and m % 128 == 0");
      DeviceBuffer w, wf, x, xf, out, ref_exact, ref_deq, planes, scratch;
      const std::pair<DeviceBuffer*, int64_t> sizes[] = {
          {&w, m * k * 2},      {&wf, m * k * 4},           {&x, nmax * k * 2},      {&xf, nmax * k * 4},
          {&out, nmax * m * 2}, {&ref_exact, nmax * m * 4}, {&ref_deq, nmax * m * 4}};
      for (const auto& [b, bytes] : sizes) b->reset(size_t(bytes));
      fill_normal<<<4096, 256, 0, c.s>>>(as<bf16>(w), m, k, 11u + uint32_t(m + k), 0.02f, 0.3f, 0, 1.f);
      fill_normal<<<4096, 256, 0, c.s>>>(as<bf16>(x), nmax, k, 7u + uint32_t(k), 1.f, 0.5f, 512, 16.f);
      GRETA_CUDA_LAUNCH_CHECK();
      Quantized wq[kSchemes];
      for (Scheme sc : {kTensor, kRow, kVec128, kBlk128}) {
        wq[sc].init(sc, m, k);
        quantize_groups(as<bf16>(w), m, k, wq[sc].grid(), as<uint8_t>(wq[sc].q), as<float>(wq[sc].scales), c.s);
        place(wq[sc], false, c.s);
      }
      // The engine's F8_B64 weight: the e4m3 plane and the plane of per-64 scales (quant_planes.h).
      const greta::cuda::QuantPlanes qp = greta::cuda::quant_planes(DType::F8_B64, m, k);
      planes.reset(qp.total);
      quantize_groups(as<bf16>(w), m, k, grid_of(kB64, m, k), as<uint8_t>(planes) + qp.q,
                      reinterpret_cast<float*>(as<uint8_t>(planes) + qp.sc), c.s);
      // Rows per dequantized slice, as CudaBackend::weight_gemm picks them (32 Mi values).
      const int64_t per = std::min(m, std::max<int64_t>(16, (int64_t(32) << 20) / k / 16 * 16));
      scratch.reset(size_t(per * k) * 2);

      for (const int64_t n : ws.ns) {
        greta::cuda::bf16_to_f32(as<bf16>(w), as<float>(wf), m * k, c.s);
        greta::cuda::bf16_to_f32(as<bf16>(x), as<float>(xf), n * k, c.s);
        c.ref_gemm(as<float>(wf), as<float>(xf), as<float>(ref_exact), n, m, k);
        // The bf16 GEMM on the original weight, and the current FP8 path.
        for (const char* path : {"bf16", "f8_b64_dequant"}) {
          auto run = [&] {
            if (path[0] == 'b') engine_gemm.run(as<bf16>(x), as<bf16>(w), as<bf16>(out), n, m, k, false, c.s);
            else
              greta::cuda::packed_gemm_cmd(&engine_gemm, as<bf16>(x), DType::F8_B64, planes.get(), as<bf16>(scratch),
                                           per, as<bf16>(out), n, m, k, 0, c.s);
          };
          run();
          const ErrStats e = c.compare_out(as<bf16>(out), as<float>(ref_exact), n, m, false);
          const double us = c.cold_ms(run) * 1e3;
          results[{path, n, m, k}] = {true, true, us};
          std::printf(
              "{\"bench\":\"bf16_gemm\",\"device\":\"%s\",\"path\":\"%s\",\"shape\":\"%s\",\"n\":%lld,"
              "\"m\":%lld,\"k\":%lld,\"us\":%.2f,\"tflops\":%.1f,%s}\n",
              c.dev.c_str(), path, ws.what, (long long)n, (long long)m, (long long)k, us,
              2.0 * double(n * m) * double(k) / (us * 1e6), err_json("exact", e).c_str());
        }
        // Activations, timed warm (x was just written by the op before).
        Quantized xq[kSchemes];
        for (Scheme sc : {kTensor, kRow, kVec128}) {
          xq[sc].init(sc, n, k);
          if (sc == kVec128)  // the reference's row-major copy of the scales
            quant_tokens_g128<<<blocks_for(n * k / 8), 256, 0, c.s>>>(as<bf16>(x), n, k, as<uint8_t>(xq[sc].q),
                                                                      as<float>(xq[sc].scales), k / 128, 1);
          quantize_tokens(as<bf16>(x), xq[sc], c.s);
          const double us = median_ms([&](int) { quantize_tokens(as<bf16>(x), xq[sc], c.s); }, 15, 10, c.s) * 1e3;
          quant_us[{sc, n, k}] = us;
          std::printf(
              "{\"bench\":\"act_quant\",\"device\":\"%s\",\"scheme\":\"%s\",\"n\":%lld,\"k\":%lld,\"us\":%.2f,"
              "\"GBps\":%.1f}\n",
              c.dev.c_str(), kSchemeName[sc], (long long)n, (long long)k, us, 3.0 * double(n * k) / (us * 1e3));
        }
        int ref_w = -1, ref_x = -1;
        for (const Mode& md : kModes) {
          if (md.w != ref_w || md.x != ref_x) {  // fp32 GEMM of this pair's dequantized operands
            ref_w = md.w, ref_x = md.x;
            const Grid gw = wq[md.w].grid(), gx = xq[md.x].grid();
            dequant_f32<<<4096, 256, 0, c.s>>>(as<uint8_t>(wq[md.w].q), m, k, gw.rd, gw.cd, as<float>(wq[md.w].scales),
                                               as<float>(wf));
            dequant_f32<<<4096, 256, 0, c.s>>>(as<uint8_t>(xq[md.x].q), n, k, gx.rd, gx.cd, as<float>(xq[md.x].scales),
                                               as<float>(xf));
            GRETA_CUDA_LAUNCH_CHECK();
            c.ref_gemm(as<float>(wf), as<float>(xf), as<float>(ref_deq), n, m, k);
          }
          const ModeResult r = run_mode(c, md, ws.what, n, m, k, wq[md.w], xq[md.x], as<bf16>(out), as<float>(ref_deq),
                                        as<float>(ref_exact));
          results[{md.name, n, m, k}] = r;
          all_ok = all_ok && (!r.supported || r.ok);
        }
      }
      GRETA_CUDA_CHECK(cudaStreamSynchronize(c.s));
    }

    // ---- summary on stderr (stdout stays JSON lines) ----
    std::fprintf(stderr,
                 "\nus (32L: ms) on %s; - unsupported, ! inaccurate; layer = qkv + o + gate_up + down + x_quant\n%22s",
                 c.dev.c_str(), "at n = 2048:");
    for (const char* h : {"qkv", "o", "gate_up", "down", "x_quant", "layer", "32L", "layer@512", "gate@64", "gate@256"})
      std::fprintf(stderr, " %9s", h);
    auto cell = [](const ModeResult& r, double v) {
      char b[32] = "-";
      if (r.supported) std::snprintf(b, sizeof b, "%.1f%s", v, r.ok ? "" : "!");
      std::fprintf(stderr, " %9s", b);
    };
    std::vector<std::string> cols = {"bf16", "f8_b64_dequant"};
    for (const Mode& md : kModes) cols.push_back(md.name);
    for (const std::string& col : cols) {
      const Mode* md = nullptr;
      for (const Mode& mm : kModes) md = col == mm.name ? &mm : md;
      std::fprintf(stderr, "\n%22s", col.c_str());
      double layer[2] = {0, 0}, quant = 0;  // n = 2048, 512
      ModeResult all{true, true, 0};
      for (const WShape& ws : wshapes)
        for (int i = 0; i < 2 && ws.ns.back() == 2048; ++i) {
          const ModeResult& r = results[{col, i ? 512 : 2048, ws.m, ws.k}];
          const double q = md ? quant_us[{md->x, i ? 512 : 2048, ws.k}] : 0.0;
          layer[i] += r.us + q;
          all.supported = all.supported && r.supported, all.ok = all.ok && r.ok;
          if (i == 0) quant += q, cell(r, r.us);
        }
      for (const double v : {quant, layer[0], layer[0] * 32 / 1e3, layer[1]}) cell(all, v);
      for (const int64_t n : {64, 256}) cell(results[{col, n, 11008, 4096}], results[{col, n, 11008, 4096}].us);
    }
    std::fprintf(stderr, "\n");
    return all_ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpu_fp8_gemm_bench: %s\n", e.what());
    return 2;
  }
}
