// Weight blocks -> device planes (quant_planes.h) at upload, and planes -> bf16 rows (the
// dequantized weights the many-token GEMM reads, and embedding rows). The block layouts are
// GGML's and the Hugging Face block types', byte for byte (core/quant_blocks.h); the
// dequantization is the GEMV's own (gemv_weights.cuh), so the two paths cannot disagree about
// a format.
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/gemv_weights.cuh"
#include "backend/cuda/mma.cuh"

namespace greta::cuda {
namespace {

__device__ __forceinline__ uint32_t u16_at(const uint8_t* p) { return uint32_t(p[0]) | uint32_t(p[1]) << 8; }

// One thread per 32-value group g of row r (of the rows being uploaded, [0, rows)): decodes the
// group's quants from its block and writes them, its high bits and its scales to the planes
// of the [m, k] weight at `dst`, whose rows start at row0.
template <DType T>
__global__ void repack_kernel(const uint8_t* __restrict__ src, size_t src_row_bytes, int64_t rows, int64_t row0,
                              int64_t m, int64_t k, uint8_t* __restrict__ dst) {
  const int64_t groups = k / 32;
  const int64_t id = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (id >= rows * groups) return;
  const int64_t rl = id / groups, g = id % groups, r = row0 + rl;
  const uint8_t* row = src + rl * src_row_bytes;
  const QuantPlanes P = quant_planes(T, m, k);
  uint8_t* q = dst + P.q + r * int64_t(plane_q_row(T, k));
  uint8_t* hi = dst + P.hi + r * int64_t(plane_hi_row(T, k));
  uint8_t* sc = dst + P.sc + r * int64_t(plane_sc_row(T, k));
  if constexpr (T == DType::Q8_0) {
    const uint8_t* b = row + g * 34;
    for (int i = 0; i < 32; ++i) q[32 * g + i] = b[2 + i];
    sc[2 * g] = b[0];
    sc[2 * g + 1] = b[1];
    return;
  }
  if constexpr (T == DType::F8_B64) {  // group g is half g % 2 of block g / 2: scale, then 64 bytes
    const uint8_t* b = row + (g / 2) * 68;
    for (int i = 0; i < 32; ++i) q[32 * g + i] = b[4 + 32 * (g % 2) + i];
    if (g % 2 == 0)
      for (int i = 0; i < 4; ++i) sc[4 * (g / 2) + i] = b[i];
    return;
  }
  uint8_t lo[32], hb[32];  // low 4 bits and the bits above them, value by value
  if constexpr (T == DType::Q4_0 || T == DType::Q4_1 || T == DType::Q5_0 || T == DType::Q5_1) {
    constexpr int kBytes = T == DType::Q4_0 ? 18 : T == DType::Q4_1 ? 20 : T == DType::Q5_0 ? 22 : 24;
    constexpr bool kMin = T == DType::Q4_1 || T == DType::Q5_1;
    constexpr bool kHi = T == DType::Q5_0 || T == DType::Q5_1;
    const uint8_t* b = row + g * kBytes;
    const int qs = (kMin ? 4 : 2) + (kHi ? 4 : 0);
    const uint32_t qh = kHi ? u16_at(b + qs - 4) | u16_at(b + qs - 2) << 16 : 0u;
    for (int j = 0; j < 16; ++j) lo[j] = b[qs + j] & 15, lo[j + 16] = b[qs + j] >> 4;
    for (int j = 0; j < 32; ++j) hb[j] = (qh >> j) & 1u;
    for (int i = 0; i < (kMin ? 4 : 2); ++i) sc[(kMin ? 4 : 2) * g + i] = b[i];
  } else if constexpr (int4_format(T)) {
    // Group g is 32-value run g % kRuns of block g / kRuns: (fp16 d, zero, pad), then 16 bytes
    // a run with Q4_0's nibble order.
    constexpr int kGroup = int4_group(T), kRuns = kGroup / 32;
    const uint8_t* b = row + (g / kRuns) * (4 + kGroup / 2);
    const uint8_t* qs = b + 4 + 16 * (g % kRuns);
    for (int j = 0; j < 16; ++j) lo[j] = qs[j] & 15, lo[j + 16] = qs[j] >> 4;
    for (int j = 0; j < 32; ++j) hb[j] = 0;
    if (g % kRuns == 0)
      for (int i = 0; i < 4; ++i) sc[4 * (g / kRuns) + i] = b[i];
  } else if constexpr (T == DType::Q4_K || T == DType::Q5_K) {
    constexpr int kBytes = T == DType::Q4_K ? 144 : 176;
    const int64_t sb = g / 8;
    const int j = int(g % 8);
    const uint8_t* b = row + sb * kBytes;
    const uint8_t* qs = b + (T == DType::Q4_K ? 16 : 48);
    for (int l = 0; l < 32; ++l) {
      lo[l] = (qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 15;
      hb[l] = T == DType::Q5_K ? (b[16 + l] >> j) & 1 : 0;
    }
    if (j == 0)
      for (int i = 0; i < 16; ++i) sc[16 * sb + i] = b[i];
  } else {  // Q6_K
    const int64_t sb = g / 8;
    const int gg = int(g % 8), h = gg / 4, qq = gg % 4;
    const uint8_t* b = row + sb * 210;
    for (int l = 0; l < 32; ++l) {
      const uint8_t ql = b[64 * h + l + (qq & 1) * 32];
      lo[l] = qq >= 2 ? ql >> 4 : ql & 15;
      hb[l] = (b[128 + 32 * h + l] >> (2 * qq)) & 3;
    }
    if (gg == 0) {
      for (int i = 0; i < 16; ++i) sc[16 * sb + i] = b[192 + i];
      uint8_t* d = dst + P.d + r * int64_t(plane_d_row(T, k));
      d[2 * sb] = b[208];
      d[2 * sb + 1] = b[209];
    }
  }
  uint32_t words[4] = {0, 0, 0, 0}, h1 = 0, h2[2] = {0, 0};
  for (int s = 0; s < 4; ++s)
    for (int p = 0; p < 4; ++p) {
      const int ev = 8 * s + 2 * p, od = ev + 1;  // the pair (even, odd) shares one shift
      words[s] |= uint32_t(lo[ev]) << (4 * p) | uint32_t(lo[od]) << (16 + 4 * p);
      h1 |= uint32_t(hb[ev] & 1) << (4 * s + p) | uint32_t(hb[od] & 1) << (16 + 4 * s + p);
      const int f = 2 * (4 * (s % 2) + p);
      h2[s / 2] |= uint32_t(hb[ev]) << f | uint32_t(hb[od]) << (16 + f);
    }
  reinterpret_cast<uint4*>(q)[g] = make_uint4(words[0], words[1], words[2], words[3]);
  if constexpr (T == DType::Q5_0 || T == DType::Q5_1 || T == DType::Q5_K) reinterpret_cast<uint32_t*>(hi)[g] = h1;
  if constexpr (T == DType::Q6_K) reinterpret_cast<uint2*>(hi)[g] = make_uint2(h2[0], h2[1]);
}

// One thread per lane granule (8 * kSub values) of an output row: out row i = weight row
// ids[i] (ids null: row0 + i), dequantized.
template <DType T>
__global__ void dequant_rows_kernel(const bf16* __restrict__ w, int64_t m, int64_t k, const int32_t* __restrict__ ids,
                                    int64_t row0, int64_t n_rows, bf16* __restrict__ out) {
  using WF = WeightQuant<T, true>;  // fp32 d q + m: rounded once, like the CPU's dequantization
  constexpr int kGran = 8 * WF::kSub;
  const int64_t per_row = k / kGran;
  const int64_t id = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (id >= n_rows * per_row) return;
  const int64_t i = id / per_row, gi = id % per_row;
  const int64_t row = ids ? ids[i] : row0 + i;
  const int64_t c = gi / 4;
  const int t = int(gi % 4);
  const typename WF::Lane l = WF::lane(w, row, m, k, 0, t);
  uint4 o[WF::kSub];
  WF::dequant(l, WF::load(l, c), c, o);
  auto* dst = reinterpret_cast<uint4*>(out + i * k + gi * kGran);
#pragma unroll
  for (int s = 0; s < WF::kSub; ++s) dst[s] = o[s];
}

template <DType T>
struct Repack {
  static void run(const uint8_t* src, size_t rb, int64_t rows, int64_t row0, int64_t m, int64_t k, uint8_t* dst,
                  cudaStream_t s) {
    const int64_t n = rows * (k / 32);
    repack_kernel<T><<<unsigned((n + 127) / 128), 128, 0, s>>>(src, rb, rows, row0, m, k, dst);
  }
};
template <DType T>
struct DequantRows {
  static void run(const bf16* w, int64_t m, int64_t k, const int32_t* ids, int64_t row0, int64_t n_rows, bf16* out,
                  cudaStream_t s) {
    const int64_t n = n_rows * (k / (8 * WeightQuant<T>::kSub));
    dequant_rows_kernel<T><<<unsigned((n + 127) / 128), 128, 0, s>>>(w, m, k, ids, row0, n_rows, out);
  }
};

}  // namespace

void repack_quant(DType t, const void* src, size_t src_row_bytes, int64_t rows, int64_t row0, int64_t m, int64_t k,
                  void* dst, cudaStream_t s) {
  if (rows <= 0) return;
  on_packed_format<Repack>(t, static_cast<const uint8_t*>(src), src_row_bytes, rows, row0, m, k,
                           static_cast<uint8_t*>(dst), s);
  GRETA_CUDA_LAUNCH_CHECK();
}

void dequant_rows(DType t, const void* w, int64_t m, int64_t k, const int32_t* ids, int64_t row0, int64_t n_rows,
                  bf16* out, cudaStream_t s) {
  if (n_rows <= 0) return;
  on_packed_format<DequantRows>(t, static_cast<const bf16*>(w), m, k, ids, row0, n_rows, out, s);
  GRETA_CUDA_LAUNCH_CHECK();
}

}  // namespace greta::cuda
