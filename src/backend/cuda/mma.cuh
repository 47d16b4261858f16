// Tensor-core helpers: one mma.m16n8k16 with bf16 inputs and fp32 accumulators and bf16x2
// packing (the GEMV and the prefill attention), and mma.m16n8k32 with e4m3 inputs (the FP8 GEMM; its
// fragment order: gemm_w8a8.cu) and with int8 inputs (gemm_int8.cu). m16n8k16 fragment layouts (PTX ISA), lane = 4g +
// t:
//   A (16x16, row): a0 (row g, k 2t..2t+1)  a1 (row g+8, k 2t..)  a2 (row g, k 2t+8..)  a3 (row g+8, k 2t+8..)
//   B (16x8, col):  b0 (k 2t..2t+1, col g)  b1 (k 2t+8..2t+9, col g)
//   C (16x8):       c0, c1 (row g, cols 2t, 2t+1)  c2, c3 (row g+8, cols 2t, 2t+1)
#pragma once
#include <cuda_bf16.h>

#include <cstdint>

namespace greta::cuda {

// c += A B. `asm volatile` keeps it in program order relative to other volatile asm (the GEMV's
// loads rely on that to stay ahead of the mma chain).
__device__ __forceinline__ void mma_bf16(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// c += A B, e4m3 inputs, fp32 accumulators (sm_89+).
__device__ __forceinline__ void mma_e4m3(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// d = c + A B with int8 inputs and int32 sums (the int8 GEMM over packed GGUF weights; its
// fragment order: gemm_int8.cu). c is an input here, not the accumulator: that GEMM passes an
// offset that makes d's bits a float (the 1.5 * 2^23 trick), so d needs no int-to-float
// conversion.
__device__ __forceinline__ void mma_s8(uint32_t (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                       uint32_t b0, uint32_t b1, uint32_t c) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%10,%10,%10,%10};"
      : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1), "r"(c));
}

// Two floats rounded to bf16, lo in the low half (the element with the lower index).
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

}  // namespace greta::cuda
