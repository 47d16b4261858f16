// The decode GEMV over weights kept packed on the device (gemv_weights.cuh WeightQuant): the
// instantiations of gemv_kernel.cuh for each GGUF format. One token tile (8 tokens) and the
// pipelined PDL launch only, which keeps the count of kernels (formats x norm x epilogue) and
// the build time in check: more tokens run as one launch per 8 (each reads the packed weights
// again, still fewer bytes than one pass over bf16 weights up to ~24 tokens for 4-bit formats).
// Steps past CudaOptions::gemv_max_tokens dequantize into a bf16 scratch for cuBLASLt instead.
#include <algorithm>
#include <string>

#include "backend/cuda/gemv_kernel.cuh"

namespace greta::cuda {
namespace {

template <DType T, int NORM>
void launch_epi(const GemvArgs& a, float eps, int epi, cudaStream_t s) {
  using WF = WeightQuant<T>;
  switch (epi) {
    case kEpiStore: launch_mma<WF::kUnroll, kLaunchPipe, kWarps, NORM, kEpiStore, 1, 1, WF>(a, s, eps); break;
    case kEpiAdd: launch_mma<WF::kUnroll, kLaunchPipe, kWarps, NORM, kEpiAdd, 1, 1, WF>(a, s, eps); break;
    case kEpiDual: launch_mma<WF::kUnroll, kLaunchPipe, kWarps, NORM, kEpiDual, 1, 1, WF>(a, s, eps); break;
    default: launch_mma<WF::kUnroll, kLaunchPipe, kWarps, NORM, kEpiRope, 1, 1, WF>(a, s, eps); break;
  }
}
template <DType T>
void launch_norm(const GemvArgs& a, float eps, int norm, int epi, cudaStream_t s) {
  if (norm == kNormPre) launch_epi<T, kNormPre>(a, eps, epi, s);
  else launch_epi<T, kNormNone>(a, eps, epi, s);
}

template <DType T>
void launch_chunks(const GemvArgs& a, float eps, int norm, int epi, cudaStream_t s) {
  // Token chunk c0: every per-token pointer moves on by c0 tokens (the sums of squares are
  // [tile][token] with kGemvMaxTokens tokens a tile, so their token offset is c0 too).
  for (int c0 = 0; c0 < a.n; c0 += 8) {
    GemvArgs b = a;
    b.n = std::min(8, a.n - c0);
    b.x += int64_t(c0) * a.k;
    GemvSeg* segs[3] = {&b.seg0, &b.seg1, &b.seg2};
    for (GemvSeg* g : segs)
      if (g->out) g->out += int64_t(c0) * g->m;
    if (b.norm_ss) b.norm_ss += c0;
    if (b.next_h) b.next_h += int64_t(c0) * a.seg0.m;
    if (b.next_ss) b.next_ss += c0;
    if (b.rope.positions) b.rope.positions += c0, b.rope.slots += c0;
    launch_norm<T>(b, eps, norm, epi, s);
  }
}

}  // namespace

void launch_quant(const GemvArgs& a, float eps, int norm, int epi, cudaStream_t s) {
  if (a.split != 1) throw Error("cuda gemv: packed weights have no split-K launch");
  switch (DType(a.wfmt)) {
    case DType::Q8_0: launch_chunks<DType::Q8_0>(a, eps, norm, epi, s); break;
    case DType::Q4_0: launch_chunks<DType::Q4_0>(a, eps, norm, epi, s); break;
    case DType::Q4_1: launch_chunks<DType::Q4_1>(a, eps, norm, epi, s); break;
    case DType::Q5_0: launch_chunks<DType::Q5_0>(a, eps, norm, epi, s); break;
    case DType::Q5_1: launch_chunks<DType::Q5_1>(a, eps, norm, epi, s); break;
    case DType::Q4_K: launch_chunks<DType::Q4_K>(a, eps, norm, epi, s); break;
    case DType::Q5_K: launch_chunks<DType::Q5_K>(a, eps, norm, epi, s); break;
    case DType::Q6_K: launch_chunks<DType::Q6_K>(a, eps, norm, epi, s); break;
    default: throw Error("cuda gemv: no kernel for " + std::string(dtype_name(DType(a.wfmt))) + " weights");
  }
}

}  // namespace greta::cuda
