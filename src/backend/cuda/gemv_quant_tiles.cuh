// The decode GEMV over weights kept packed on the device (gemv_weights.cuh WeightQuant): how
// one format's instantiations of gemv_kernel.cuh are launched, up to kGemvMaxTokens tokens in
// token tiles of 8, with the pipelined PDL launch only (no plain-launch variants, and split-K
// only for one token's int8 dot products into the residual), which keeps the kernel count
// (formats x norm x epilogue x tiles) and the build time in check.
// Steps of more tokens dequantize slices of the matrix into bf16 for cuBLASLt instead.
// Included by the format families' translation units (gemv_quant_*.cu) only.
#pragma once
#include "backend/cuda/gemv_kernel.cuh"
#include "backend/cuda/gemv_quant_formats.h"
#include "core/error.h"

namespace greta::cuda {
namespace {

template <class WF, int NORM, int NT>
void launch_epi(const GemvArgs& a, float eps, int epi, cudaStream_t s) {
  switch (epi) {
    case kEpiStore: launch_mma<WF::kUnroll, kLaunchPipe, kWarps, NORM, kEpiStore, NT, 1, WF>(a, s, eps); break;
    case kEpiAdd: launch_mma<WF::kUnroll, kLaunchPipe, kWarps, NORM, kEpiAdd, NT, 1, WF>(a, s, eps); break;
    case kEpiDual: launch_mma<WF::kUnroll, kLaunchPipe, kWarps, NORM, kEpiDual, NT, 1, WF>(a, s, eps); break;
    default: launch_mma<WF::kUnroll, kLaunchPipe, kWarps, NORM, kEpiRope, NT, 1, WF>(a, s, eps); break;
  }
}
template <class WF, int NT>
void launch_norm(const GemvArgs& a, float eps, int norm, int epi, cudaStream_t s) {
  if (norm == kNormPre) launch_epi<WF, kNormPre, NT>(a, eps, epi, s);
  else launch_epi<WF, kNormNone, NT>(a, eps, epi, s);
}
// Token tiles of 8 as the bf16 kernel picks them: every weight is read once for all n tokens.
// One token with a.int8_x: int8 activations and dot products where the format has them
// (gemv_dot.cuh).
// a.split == 2 (CudaOptions::packed_split_k_min): k over 2 blocks a row tile, for a token's
// int8 dot products with the plain or residual-add epilogue; anything else has no split launch.
template <DType T>
void launch_token_tiles(const GemvArgs& a, float eps, int norm, int epi, cudaStream_t s) {
  if constexpr (int8_dot_format(T)) {
    const bool dot = a.int8_x && a.n == 1 && a.k <= kDotMaxK;
    if (dot && a.split == 2 && norm == kNormNone && (epi == kEpiAdd || epi == kEpiStore)) {
      using WF = WeightDot<T>;
      if (epi == kEpiAdd) launch_mma<WF::kUnroll, kLaunchPipe, kWarps, kNormNone, kEpiAdd, 1, 2, WF>(a, s, eps);
      else launch_mma<WF::kUnroll, kLaunchPipe, kWarps, kNormNone, kEpiStore, 1, 2, WF>(a, s, eps);
      return;
    }
    if (dot && a.split == 1) {
      launch_norm<WeightDot<T>, 1>(a, eps, norm, epi, s);
      return;
    }
  }
  if (a.split != 1) throw Error("cuda gemv: packed weights take split-K only for one token's int8 dot products");
  using WF = WeightQuant<T>;
  if (a.n <= 8) launch_norm<WF, 1>(a, eps, norm, epi, s);
  else if (a.n <= 16) launch_norm<WF, 2>(a, eps, norm, epi, s);
  else launch_norm<WF, 4>(a, eps, norm, epi, s);
}

}  // namespace
}  // namespace greta::cuda
