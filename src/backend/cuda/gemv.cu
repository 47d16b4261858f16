// Decode GEMV entry points (cuda_ops.h): the plain GEMV and the fused one, each picking the
// kernel instantiation its arguments need. The kernel and its design notes: gemv_kernel.cuh.
#include "backend/cuda/gemv_kernel.cuh"

namespace greta::cuda {

size_t gemv_split_scratch_floats(int64_t m, int n) {
  const int tiles = n <= 8 ? 1 : n <= 16 ? 2 : 4;
  return size_t(gemv_blocks(m)) * 2 * 128 * size_t(tiles);
}
size_t gemv_split_counters(int64_t m) { return size_t(gemv_blocks(m)); }

bool gemv_fast_path(const void* x, const void* w, int n, int64_t k) {
  return n >= 1 && n <= kGemvMaxTokens && k > 0 && k % 8 == 0 && aligned16(x) && aligned16(w);
}

void gemv(const bf16* x, const bf16* w, const float* bias, bf16* out, int n, int64_t m, int64_t k, int pipeline,
          cudaStream_t s) {
  if (m <= 0 || n <= 0) return;
  if (!gemv_fast_path(x, w, n, k)) {
    launch_fallback(x, w, bias, out, n, m, k, s);
    return;
  }
  GemvArgs a = single(x, w, bias, out, n, m, k);
  a.pipeline = int16_t(pipeline);
  launch_tiles<kNormNone, kEpiStore>(a, 0.f, s);
}

namespace {
// The norm mode of a (see NORM above) picked at run time.
template <int EPI>
void launch_norm_mode(const GemvArgs& a, float eps, cudaStream_t s) {
  if (a.norm_ss) launch_tiles<kNormPre, EPI>(a, eps, s);
  else launch_tiles<kNormNone, EPI>(a, eps, s);
}
}  // namespace

void gemv_fused(GemvArgs a, float eps, cudaStream_t s) {
  if (a.n <= 0) return;
  const bool norm = a.norm_ss != nullptr;
  if (a.swiglu) {  // one segment of outputs, 8 per block; seg1 holds the up matrix
    a.blk1 = a.blk2 = (a.seg0.m + 7) / 8;
    a.seg2 = GemvSeg{};
    launch_norm_mode<kEpiDual>(a, eps, s);
    return;
  }
  // Empty trailing segments: blk1/blk2 mark where segments 1 and 2 start.
  a.blk1 = gemv_blocks(a.seg0.m);
  a.blk2 = a.blk1 + gemv_blocks(a.seg1.m);
  if (a.rope.head_dim > 0) {  // q, k, v with RoPE and the cache write (m of q and k: whole heads)
    launch_norm_mode<kEpiRope>(a, eps, s);
    return;
  }
  if (a.split == 2 && !norm) {  // split-K (the caller provides the workspace)
    if (a.accumulate) launch_tiles<kNormNone, kEpiAdd, 2>(a, eps, s);
    else launch_tiles<kNormNone, kEpiStore, 2>(a, eps, s);
    return;
  }
  if (a.accumulate) launch_norm_mode<kEpiAdd>(a, eps, s);
  else launch_norm_mode<kEpiStore>(a, eps, s);
}

}  // namespace greta::cuda
