// RoPE fused with the paged KV write: one block per token rotates its q heads and k heads in
// place and stores k and v at the token's cache slot. Angles like the CPU reference: the angle
// pos * inv_freq in fp32, its sin/cos in double (angles reach ~1e5 rad at long contexts, where
// fast single-precision sin/cos lose all accuracy).
#include <cuda_bf16.h>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/pdl.cuh"

namespace greta::cuda {
namespace {

__global__ void rope_kv_kernel(bf16* __restrict__ q, bf16* __restrict__ k, const bf16* __restrict__ v, int n_heads,
                               int n_kv, int hd, const float* __restrict__ inv_freq, bool neox,
                               const int32_t* __restrict__ positions, const int32_t* __restrict__ slots,
                               bf16* __restrict__ kc, bf16* __restrict__ vc) {
  pdl_allow_dependents();
  const int64_t t = blockIdx.x;
  const int half = hd / 2;
  const int pos = positions[t];
  const int64_t slot = slots[t];
  const int64_t kv_row = int64_t(n_kv) * hd;
  bf16* qr = q + t * int64_t(n_heads) * hd;
  bf16* kr = k + t * kv_row;
  const int pairs = (n_heads + n_kv) * half;
  for (int p = threadIdx.x; p < pairs; p += blockDim.x) {
    const int h = p / half, i = p % half;
    const bool is_q = h < n_heads;
    bf16* row = is_q ? qr + int64_t(h) * hd : kr + int64_t(h - n_heads) * hd;
    const int i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
    const float angle = float(pos) * inv_freq[i];
    double sd, cd;
    sincos(double(angle), &sd, &cd);
    const float c = float(cd), s = float(sd);
    const float a = __bfloat162float(row[i0]), b = __bfloat162float(row[i1]);
    const bf16 ra = __float2bfloat16_rn(a * c - b * s), rb = __float2bfloat16_rn(a * s + b * c);
    row[i0] = ra;
    row[i1] = rb;
    if (!is_q) {  // rotated k goes to the cache too
      bf16* dst = kc + slot * kv_row + int64_t(h - n_heads) * hd;
      dst[i0] = ra;
      dst[i1] = rb;
    }
  }
  const bf16* vr = v + t * kv_row;
  for (int64_t e = threadIdx.x; e < kv_row; e += blockDim.x) vc[slot * kv_row + e] = vr[e];
}

}  // namespace

void rope_kv_write(bf16* q, bf16* k, const bf16* v, int n_heads, const float* inv_freq, bool neox, const DevStep& st,
                   const KVLayerDev& kv, cudaStream_t s) {
  if (st.n_tokens <= 0) return;
  rope_kv_kernel<<<unsigned(st.n_tokens), 128, 0, s>>>(q, k, v, n_heads, kv.n_kv_heads, kv.head_dim, inv_freq, neox,
                                                        st.positions, st.slot, kv.k, kv.v);
  GRETA_CUDA_LAUNCH_CHECK();
}

}  // namespace greta::cuda
