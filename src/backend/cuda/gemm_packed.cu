// The batched GEMM over weights kept packed on the device (quant_planes.h): out [n, m] (+)=
// x [n, k] @ w [m, k]^T for steps of more tokens than the decode GEMV takes and fewer than a
// prefill (large decode batches, serving), with the weights dequantized in registers and fed
// to tensor cores.
//
// Why not the decode GEMV at 32 tokens: a GEMV block owns 16 rows, so every block re-reads all
// of x ([n, k]) through L2: for n = 32 that is 4 bytes of x for every weight, ~28 GB a
// Llama-2-7B step against 3.8 GB of 4-bit weights, and the step is bound by L2 instead of
// DRAM. Why not the dequantized slices and cuBLASLt: they write and re-read every weight as
// bf16, 4x the bytes of a 4-bit weight twice.
//
// The kernel (gemm_packed_kernel.cuh) stages each chunk of k, x's tile and the block's packed
// weights, in shared memory by cp.async several chunks deep: with each lane's next chunk held in
// registers instead, 4-8 warps an SM had one chunk each in flight, and the kernel was bound by
// load latency (docs/notes/quantized-weights.md). Row tiles x token tiles rarely fill the GPU,
// so k is split over blocks (the plan below).
#include <algorithm>
#include <string>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/gemm_packed.h"
#include "backend/cuda/gemm_packed_kernel.cuh"

namespace greta::cuda {
namespace {

constexpr int kStages = 4;
// Accumulator sets a tile (gemm_packed_kernel.cuh): a second set measured no faster, and it
// costs registers.
constexpr int kAcc = 1;
// Blocks an SM the k split aims at (the shared memory of kStages stages allows 2).
constexpr int64_t kBlocksPerSm = 2;
// 16-row slabs a warp: 2 for the 4/5/6-bit formats (half the shared-memory reads of x a
// weight), 1 for the 8-bit ones, whose second slab's registers measured slower.
constexpr int slabs_of(DType t) { return byte_quants(t) ? 1 : 2; }

template <DType T, int NT>
constexpr int smem_bytes() {
  return gemm_packed_smem<T, NT, slabs_of(T), kStages>();
}

template <DType T>
struct LaunchPacked {
  static void run(const PackedGemmArgs& a, const PackedGemmPlan& plan, cudaStream_t s) {
    const dim3 grid(unsigned(plan.token_tiles), unsigned(plan.row_tiles), unsigned(plan.splits));
    if (plan.slabs != slabs_of(T)) throw Error("cuda packed gemm: a plan made for another format");
    if (plan.tile_tokens == 16)
      gemm_packed_kernel<T, 2, slabs_of(T), kStages, kAcc><<<grid, kGemmWarps * 32, smem_bytes<T, 2>(), s>>>(a);
    else gemm_packed_kernel<T, 4, slabs_of(T), kStages, kAcc><<<grid, kGemmWarps * 32, smem_bytes<T, 4>(), s>>>(a);
    GRETA_CUDA_LAUNCH_CHECK();
  }
};

template <DType T>
struct AllowSmem {  // past the 48 KB default
  static void run() {
    GRETA_CUDA_CHECK(cudaFuncSetAttribute(gemm_packed_kernel<T, 2, slabs_of(T), kStages, kAcc>,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes<T, 2>()));
    GRETA_CUDA_CHECK(cudaFuncSetAttribute(gemm_packed_kernel<T, 4, slabs_of(T), kStages, kAcc>,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes<T, 4>()));
  }
};

template <DType T>
struct ChunkOf {
  static void run(int& out) { out = 32 * WeightQuant<T, true>::kSub; }
};

}  // namespace

void packed_gemm_setup() {
  for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q4_K, DType::Q5_K,
                  DType::Q6_K, DType::F8_B64, DType::I4_G32, DType::I4_G64, DType::I4_G128})
    on_packed_format<AllowSmem>(t);
}

bool packed_gemm_fits(DType t, int64_t n, int64_t m, int64_t k) {
  constexpr int64_t kMax = int64_t(1) << 32;
  return int64_t(quant_planes(t, m, k).total) < kMax && n * k < kMax;
}

PackedGemmPlan packed_gemm_plan(DType t, int64_t n, int64_t m, int64_t k, int n_sms) {
  PackedGemmPlan p;
  int chunk = 0;
  on_packed_format<ChunkOf>(t, chunk);
  p.tile_tokens = n <= 16 ? 16 : 32;
  p.slabs = slabs_of(t);
  p.token_tiles = (n + p.tile_tokens - 1) / p.tile_tokens;
  const int64_t tile_rows = 16 * kGemmWarps * p.slabs;
  p.row_tiles = (m + tile_rows - 1) / tile_rows;
  const int64_t chunks = (k + chunk - 1) / chunk;
  // About kBlocksPerSm blocks an SM, each keeping at least 8 chunks of k (fewer and the ramp of
  // its weight stream dominates).
  const int64_t base = p.row_tiles * p.token_tiles;
  const int64_t want = (kBlocksPerSm * std::max(n_sms, 1) + base - 1) / base;
  p.splits = int(std::clamp<int64_t>(std::min(want, chunks / 8), 1, 64));
  p.chunks_per_split = (chunks + p.splits - 1) / p.splits;
  p.splits = int((chunks + p.chunks_per_split - 1) / p.chunks_per_split);  // no empty part
  return p;
}

size_t packed_gemm_scratch_floats(const PackedGemmPlan& p) {
  return p.splits > 1
             ? size_t(p.row_tiles * p.token_tiles * p.splits) * kGemmWarps * p.slabs * (p.tile_tokens / 8) * 4 * 32
             : 0;
}

size_t packed_gemm_counters(const PackedGemmPlan& p) { return p.splits > 1 ? size_t(p.row_tiles * p.token_tiles) : 0; }

void packed_gemm(DType t, PackedGemmArgs a, PackedGemmPlan plan, cudaStream_t s) {
  if (a.n <= 0 || a.m <= 0) return;
  if (!packed_gemm_fits(t, a.n, a.m, a.k))
    throw Error("cuda packed gemm: a weight of " + std::to_string(a.m) + " x " + std::to_string(a.k) +
                " is past the kernel's 32-bit offsets");
  a.chunks_per_split = plan.chunks_per_split;
  on_packed_format<LaunchPacked>(t, a, plan, s);
}

}  // namespace greta::cuda
