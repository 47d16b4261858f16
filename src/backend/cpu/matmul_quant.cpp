// Quantized-weight matmul: out [n, m] = x [n, k] @ w^T with w in its GGML block format,
// straight from the file mapping (never dequantized as a whole).
//
// x is quantized once per call to int8 blocks of 32 (quantize_acts.cpp), so every weight
// block meets an activation block and the dot product is integer: 32 u8*s8 products summed
// by one VNNI dpbusd (or AVX2 maddubs+madd), converted to float once per block and scaled by
// d_w * d_x. Zero points never enter the inner product:
//   Q4_1, Q5_1: sum (d q + m) x  = d dx sum(q xq) + m * (dx sum xq)   -> m * s, s stored per act block
//   Q4_0: sum d (q - 8) x  = d dx (sum(q xq) - 8 isum)   -> dpbusd seeded with -8 * (lane's x sum)
//   Q8_0, Q5_0 (as signed q - 16): dpbusd(|q|, sign(xq, q))
//   Q4_K, Q5_K: per 32-value sub-block as Q4_1, with 6-bit sub-scales and mins
// Rounding follows llama.cpp's CPU vec_dot kernels (ggml_vec_dot_q4_1_q8_1 / q5_1_q8_1 /
// q4_0_q8_0 / q5_0_q8_0 / q8_0_q8_0): each 32-bit lane holds the integer sum of 4 adjacent byte
// products, is converted to float and fmadd-ed with fp32(d_w) * fp32(d_x) into 8 float lanes;
// Q4_1 / Q5_1 add m_w * s_x in a separate scalar sum, in block order; the end is hsum(lanes) +
// that sum. With the activation scales rounded as ggml rounds them (quantize_acts.cpp) the
// results are bit-identical to llama.cpp's for these formats. The K-quants are not: llama.cpp
// quantizes their activations in blocks of 256 (Q8_K) and sums in another order.
//
// Tiling: a micro-kernel computes NW weight rows x NX activation rows, so each weight block
// is decoded once for NX tokens (prefill) and each activation block load serves NW rows
// (decode). Threads split the output rows m in chunks of >= 16 rows (64 B of float output),
// handed out dynamically by the pool.
#include <algorithm>
#include <cstring>
#include <type_traits>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/simd.h"
#include "core/error.h"
#include "core/quant_blocks.h"

namespace greta::cpu {
namespace {

// Micro-kernel interface shared by all formats:
//   w   : first of NW weight rows, row stride ws bytes
//   xq  : quants of the first of NX activation rows, row stride k
//   xb  : block metadata of the same rows, row stride k/32
//   res : [NW][NX] dot products

#ifdef GRETA_AVX2
inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

template <int NW, int NX>
inline void reduce_store(__m256 (&acc)[NW][NX], const float (&extra)[NW][NX], float* res) {
  for (int i = 0; i < NW; ++i)
    for (int j = 0; j < NX; ++j) res[i * NX + j] = hsum(acc[i][j]) + extra[i][j];
}
#else
inline float h2f(uint16_t h) { return fp16_to_float(h); }
#endif

// Weight decoders of the 32-value formats: Block, the block's 32 quants in element order
// (bytes(): one vector; quant(): one at a time, for the scalar path).
struct DecQ8_0 {  // signed quants
  using Block = BlockQ8_0;
#ifdef GRETA_AVX2
  static __m256i bytes(const Block* b) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b->qs)); }
#endif
  static int quant(const Block* b, int l) { return b->qs[l]; }
};
struct DecQ5_0 {  // signed q - 16: bytes whose bit 4 is clear become nibble - 16 (top bits set)
  using Block = BlockQ5_0;
#ifdef GRETA_AVX2
  static __m256i bytes(const Block* b) {
    return _mm256_or_si256(nibbles_to_bytes(b->qs),
                           _mm256_andnot_si256(bits_to_bytes(b->qh), _mm256_set1_epi8(int8_t(0xf0))));
  }
#endif
  static int quant(const Block* b, int l) { return q5_quant(b->qs, b->qh, l) - 16; }
};
struct DecQ4_1 {  // unsigned quants
  using Block = BlockQ4_1;
#ifdef GRETA_AVX2
  static __m256i bytes(const Block* b) { return nibbles_to_bytes(b->qs); }
#endif
  static int quant(const Block* b, int l) { return l < 16 ? (b->qs[l] & 0x0f) : (b->qs[l - 16] >> 4); }
};
struct DecQ5_1 {
  using Block = BlockQ5_1;
#ifdef GRETA_AVX2
  static __m256i bytes(const Block* b) {
    return _mm256_or_si256(nibbles_to_bytes(b->qs), _mm256_and_si256(bits_to_bytes(b->qh), _mm256_set1_epi8(0x10)));
  }
#endif
  static int quant(const Block* b, int l) { return q5_quant(b->qs, b->qh, l); }
};

// Unsigned quants with an fp16 step d and offset m in the block's first 4 bytes (Q4_1, Q5_1).
template <class Dec>
struct KOffset {
  template <int NW, int NX>
  static void run(const uint8_t* w, size_t ws, const int8_t* xq, const ActBlock* xb, int64_t k, float* res) {
    const int64_t nb = k / 32;
    using Block = typename Dec::Block;
#ifdef GRETA_AVX2
    __m256 acc[NW][NX];
    __m128 accm[NW][NX];  // lane 1 accumulates m_w * s_x (lane 0 is a by-product, ignored)
    for (int i = 0; i < NW; ++i)
      for (int j = 0; j < NX; ++j) acc[i][j] = _mm256_setzero_ps(), accm[i][j] = _mm_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
      __m256i xv[NX];
      __m128 xds[NX];  // [d_x, s_x, 0, 0]
      for (int j = 0; j < NX; ++j) {
        xv[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + j * k + 32 * b));
        xds[j] = _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(xb + j * nb + b)));
      }
      for (int i = 0; i < NW; ++i) {
        const auto* blk = reinterpret_cast<const Block*>(w + i * ws) + b;
        const __m256i wq = Dec::bytes(blk);
        int32_t dm_bits;
        std::memcpy(&dm_bits, blk, 4);
        const __m128 dm = _mm_cvtph_ps(_mm_cvtsi32_si128(dm_bits));  // [d_w, m_w, 0, 0]
        for (int j = 0; j < NX; ++j) {
          const __m256i p = dot_u8s8(_mm256_setzero_si256(), wq, xv[j]);
          const __m128 sc = _mm_mul_ps(dm, xds[j]);  // [d_w d_x, m_w s_x]
          acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_broadcastss_ps(sc), acc[i][j]);
          accm[i][j] = _mm_add_ps(accm[i][j], sc);
        }
      }
    }
    float extra[NW][NX];
    for (int i = 0; i < NW; ++i)
      for (int j = 0; j < NX; ++j) extra[i][j] = _mm_cvtss_f32(_mm_movehdup_ps(accm[i][j]));
    reduce_store(acc, extra, res);
#else
    for (int i = 0; i < NW; ++i)
      for (int j = 0; j < NX; ++j) {
        const auto* blk = reinterpret_cast<const Block*>(w + i * ws);
        float sum = 0.0f;
        for (int64_t b = 0; b < nb; ++b) {
          const int8_t* x = xq + j * k + 32 * b;
          int32_t isum = 0;
          for (int l = 0; l < 32; ++l) isum += Dec::quant(blk + b, l) * x[l];
          const ActBlock& a = xb[j * nb + b];
          sum += h2f(blk[b].d) * a.d * float(isum) + h2f(blk[b].m) * a.s;
        }
        res[i * NX + j] = sum;
      }
#endif
  }
};

struct KQ4_0 {
  template <int NW, int NX>
  static void run(const uint8_t* w, size_t ws, const int8_t* xq, const ActBlock* xb, int64_t k, float* res) {
    const int64_t nb = k / 32;
#ifdef GRETA_AVX2
    __m256 acc[NW][NX];
    for (int i = 0; i < NW; ++i)
      for (int j = 0; j < NX; ++j) acc[i][j] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
      __m256i xv[NX], seed[NX];
      for (int j = 0; j < NX; ++j) {
        xv[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + j * k + 32 * b));
        // -8 * (sum of the lane's 4 activation bytes): each lane then holds exactly ggml's
        // lane sum of (q - 8) * x, so the float conversion and fmadd round as llama.cpp does.
        seed[j] = _mm256_sub_epi32(_mm256_setzero_si256(),
                                   dot_u8s8(_mm256_setzero_si256(), _mm256_set1_epi8(8), xv[j]));
      }
      for (int i = 0; i < NW; ++i) {
        const auto* blk = reinterpret_cast<const BlockQ4_0*>(w + i * ws) + b;
        const __m256i wq = nibbles_to_bytes(blk->qs);
        const float dw = h2f(blk->d);
        for (int j = 0; j < NX; ++j) {
          const __m256i p = dot_u8s8(seed[j], wq, xv[j]);
          acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw * xb[j * nb + b].d), acc[i][j]);
        }
      }
    }
    const float extra[NW][NX] = {};
    reduce_store(acc, extra, res);
#else
    for (int i = 0; i < NW; ++i)
      for (int j = 0; j < NX; ++j) {
        const auto* blk = reinterpret_cast<const BlockQ4_0*>(w + i * ws);
        float sum = 0.0f;
        for (int64_t b = 0; b < nb; ++b) {
          const int8_t* x = xq + j * k + 32 * b;
          int32_t isum = 0;
          for (int l = 0; l < 16; ++l)
            isum += ((blk[b].qs[l] & 0x0f) - 8) * x[l] + ((blk[b].qs[l] >> 4) - 8) * x[l + 16];
          sum += h2f(blk[b].d) * xb[j * nb + b].d * float(isum);
        }
        res[i * NX + j] = sum;
      }
#endif
  }
};

// Signed quants with an fp16 step d (Q8_0, Q5_0).
template <class Dec>
struct KSigned {
  template <int NW, int NX>
  static void run(const uint8_t* w, size_t ws, const int8_t* xq, const ActBlock* xb, int64_t k, float* res) {
    const int64_t nb = k / 32;
    using Block = typename Dec::Block;
#ifdef GRETA_AVX2
    __m256 acc[NW][NX];
    for (int i = 0; i < NW; ++i)
      for (int j = 0; j < NX; ++j) acc[i][j] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
      __m256i xv[NX];
      for (int j = 0; j < NX; ++j) xv[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + j * k + 32 * b));
      for (int i = 0; i < NW; ++i) {
        const auto* blk = reinterpret_cast<const Block*>(w + i * ws) + b;
        const __m256i wq = Dec::bytes(blk);
        // |w| * sign(x, w): lanes hold the plain 4-byte sums of w*x (as ggml's lanes do, so the
        // float rounding matches), and |w| <= 128 keeps maddubs pairs unsaturated without VNNI.
        const __m256i wa = _mm256_abs_epi8(wq);
        const float dw = h2f(blk->d);
        for (int j = 0; j < NX; ++j) {
          const __m256i p = dot_u8s8(_mm256_setzero_si256(), wa, _mm256_sign_epi8(xv[j], wq));
          acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw * xb[j * nb + b].d), acc[i][j]);
        }
      }
    }
    const float extra[NW][NX] = {};
    reduce_store(acc, extra, res);
#else
    for (int i = 0; i < NW; ++i)
      for (int j = 0; j < NX; ++j) {
        const auto* blk = reinterpret_cast<const Block*>(w + i * ws);
        float sum = 0.0f;
        for (int64_t b = 0; b < nb; ++b) {
          const int8_t* x = xq + j * k + 32 * b;
          int32_t isum = 0;
          for (int l = 0; l < 32; ++l) isum += Dec::quant(blk + b, l) * x[l];
          sum += h2f(blk[b].d) * xb[j * nb + b].d * float(isum);
        }
        res[i * NX + j] = sum;
      }
#endif
  }
};

// Q4_K / Q5_K: per super-block of 256, sub-block s (32 values, = activation block 8B+s)
// contributes d sc_s dx sum(q xq) - dmin mn_s s_x.
template <class Block>
struct KQ45_K {
  static constexpr bool kHighBit = std::is_same_v<Block, BlockQ5_K>;
  template <int NW, int NX>
  static void run(const uint8_t* w, size_t ws, const int8_t* xq, const ActBlock* xb, int64_t k, float* res) {
    const int64_t nb = k / 32, nsb = k / 256;
    float mins[NW][NX] = {};
#ifdef GRETA_AVX2
    __m256 acc[NW][NX];
    for (int i = 0; i < NW; ++i)
      for (int j = 0; j < NX; ++j) acc[i][j] = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(0x0f), bit0 = _mm256_set1_epi8(1), bit1 = _mm256_set1_epi8(2);
#else
    float acc[NW][NX] = {};
#endif
    for (int64_t B = 0; B < nsb; ++B) {
      for (int i = 0; i < NW; ++i) {
        const auto* blk = reinterpret_cast<const Block*>(w + i * ws) + B;
        const float d = h2f(blk->d), dmin = h2f(blk->dmin);
        float sc[8], mn[8];
        for (int s = 0; s < 8; ++s) {
          uint8_t a, c;
          q4k_scale_min(s, blk->scales, &a, &c);
          sc[s] = d * a;
          mn[s] = dmin * c;
        }
#ifdef GRETA_AVX2
        // Q5_K: bits 2p and 2p+1 of qh[l] are bit 4 of element l of sub-blocks 2p and 2p+1;
        // shifted down by 2 per pair (16-bit shifts: bits 0..1 of a byte only ever come from
        // the same byte for the four pairs).
        __m256i qh = _mm256_setzero_si256();
        if constexpr (kHighBit) qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk->qh));
#endif
        for (int p = 0; p < 4; ++p) {
#ifdef GRETA_AVX2
          const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk->qs + 32 * p));
          __m256i lo = _mm256_and_si256(q, m4);
          __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
          if constexpr (kHighBit) {
            lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(qh, bit0), 4));
            hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(qh, bit1), 3));
            qh = _mm256_srli_epi16(qh, 2);
          }
#endif
          for (int j = 0; j < NX; ++j) {
            const int64_t a0 = 8 * B + 2 * p;  // activation block of sub-block 2p
            const int8_t* x = xq + j * k + 32 * a0;
            const ActBlock* xa = xb + j * nb + a0;
            // The min correction from the exact quant sums: .s is rounded to fp16 for Q4_1's
            // ggml rounding, which cost up to ~3e-4 of an output here.
            mins[i][j] += mn[2 * p] * (xa[0].d * float(xa[0].isum)) + mn[2 * p + 1] * (xa[1].d * float(xa[1].isum));
#ifdef GRETA_AVX2
            const __m256i p0 = dot_u8s8(_mm256_setzero_si256(), lo,
                                        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x)));
            const __m256i p1 = dot_u8s8(_mm256_setzero_si256(), hi,
                                        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 32)));
            acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p0), _mm256_set1_ps(sc[2 * p] * xa[0].d), acc[i][j]);
            acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p1), _mm256_set1_ps(sc[2 * p + 1] * xa[1].d), acc[i][j]);
#else
            int32_t s0 = 0, s1 = 0;
            for (int l = 0; l < 32; ++l) {
              s0 += k_quant(*blk, 2 * p, l) * x[l];
              s1 += k_quant(*blk, 2 * p + 1, l) * x[l + 32];
            }
            acc[i][j] += sc[2 * p] * xa[0].d * float(s0) + sc[2 * p + 1] * xa[1].d * float(s1);
#endif
          }
        }
      }
    }
    for (int i = 0; i < NW; ++i)
      for (int j = 0; j < NX; ++j) mins[i][j] = -mins[i][j];
#ifdef GRETA_AVX2
    reduce_store(acc, mins, res);
#else
    for (int i = 0; i < NW; ++i)
      for (int j = 0; j < NX; ++j) res[i * NX + j] = acc[i][j] + mins[i][j];
#endif
  }
};

// Q6_K: 6-bit quants recentred to signed (q - 32) in [-32, 31]; the dot uses |w| * sign(x, w)
// so maddubs stays exact. Each 32-value group spans two 16-value sub-blocks with their own
// int8 scales: lanes 0..3 of the dpbusd result cover the first, lanes 4..7 the second.
struct KQ6_K {
  template <int NW, int NX>
  static void run(const uint8_t* w, size_t ws, const int8_t* xq, const ActBlock* xb, int64_t k, float* res) {
    const int64_t nb = k / 32, nsb = k / 256;
#ifdef GRETA_AVX2
    __m256 acc[NW][NX];
    for (int i = 0; i < NW; ++i)
      for (int j = 0; j < NX; ++j) acc[i][j] = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(0x0f), m2 = _mm256_set1_epi8(3), c32 = _mm256_set1_epi8(32);
    for (int64_t B = 0; B < nsb; ++B) {
      for (int i = 0; i < NW; ++i) {
        const auto* blk = reinterpret_cast<const BlockQ6_K*>(w + i * ws) + B;
        const float d = h2f(blk->d);
        for (int h = 0; h < 2; ++h) {
          const __m256i ql0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk->ql + 64 * h));
          const __m256i ql1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk->ql + 64 * h + 32));
          const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk->qh + 32 * h));
          __m256i g[4];
          g[0] = _mm256_or_si256(_mm256_and_si256(ql0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4));
          g[1] = _mm256_or_si256(_mm256_and_si256(ql1, m4),
                                 _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), m2), 4));
          g[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4),
                                 _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), m2), 4));
          g[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4),
                                 _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), m2), 4));
          for (int gi = 0; gi < 4; ++gi) {
            const __m256i wv = _mm256_sub_epi8(g[gi], c32);
            const __m256i wa = _mm256_abs_epi8(wv);
            const int G = 4 * h + gi;  // 32-value group in the super-block
            const __m256i scv = _mm256_setr_m128i(_mm_set1_epi32(blk->scales[2 * G]),
                                                  _mm_set1_epi32(blk->scales[2 * G + 1]));
            for (int j = 0; j < NX; ++j) {
              const int64_t a = 8 * B + G;
              const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + j * k + 32 * a));
              __m256i p = dot_u8s8(_mm256_setzero_si256(), wa, _mm256_sign_epi8(xv, wv));
              p = _mm256_mullo_epi32(p, scv);
              acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(d * xb[j * nb + a].d), acc[i][j]);
            }
          }
        }
      }
    }
    const float extra[NW][NX] = {};
    reduce_store(acc, extra, res);
#else
    for (int i = 0; i < NW; ++i)
      for (int j = 0; j < NX; ++j) {
        float sum = 0.0f;
        for (int64_t B = 0; B < nsb; ++B) {
          const auto* blk = reinterpret_cast<const BlockQ6_K*>(w + i * ws) + B;
          for (int G = 0; G < 8; ++G) {  // 32-value groups, see dequantize_row for the layout
            const int h = G / 4, gi = G % 4;
            const uint8_t* ql = blk->ql + 64 * h + ((gi & 1) ? 32 : 0);
            const uint8_t* qh = blk->qh + 32 * h;
            const int8_t* x = xq + j * k + 32 * (8 * B + G);
            int32_t s0 = 0, s1 = 0;
            for (int l = 0; l < 32; ++l) {
              const int lo = (gi & 2) ? (ql[l] >> 4) : (ql[l] & 0x0f);
              const int q = (lo | (((qh[l] >> (2 * gi)) & 3) << 4)) - 32;
              (l < 16 ? s0 : s1) += q * x[l];
            }
            const int32_t isum = blk->scales[2 * G] * s0 + blk->scales[2 * G + 1] * s1;
            sum += h2f(blk->d) * xb[j * nb + 8 * B + G].d * float(isum);
          }
        }
        res[i * NX + j] = sum;
      }
#endif
  }
};

template <class K>
void run_tiles(const QuantActs& xa, const WeightView& w, const float* bias, float* out, ThreadPool& pool) {
  const int64_t m = w.n_out, n = xa.n, k = xa.k, nb = k / 32;
  const size_t ws = w.row_stride;
  // Chunks of whole 16-row groups, about 4 per thread so dynamic hand-out can even out load.
  const int64_t target = std::max<int64_t>(1, int64_t(pool.size()) * 4);
  const int64_t chunk = std::max<int64_t>(16, (m + target - 1) / target + 15) / 16 * 16;
  const int64_t n_chunks = (m + chunk - 1) / chunk;
  const int64_t n4 = n / 4 * 4;  // activation rows handled 4 at a time (prefill)
  pool.run(n_chunks, [&](int64_t c, int) {
    const int64_t r0 = c * chunk, r1 = std::min(m, r0 + chunk);
    float res[16];
    auto emit = [&](int64_t r, int64_t x0, int nw, int nx) {
      for (int i = 0; i < nw; ++i)
        for (int j = 0; j < nx; ++j) out[(x0 + j) * m + r + i] = res[i * nx + j] + (bias ? bias[r + i] : 0.0f);
    };
    auto wrow = [&](int64_t r) { return w.data + size_t(r) * ws; };
    if (n4 > 0) {
      int64_t r = r0;
      for (; r + 2 <= r1; r += 2)
        for (int64_t x0 = 0; x0 < n4; x0 += 4) {
          K::template run<2, 4>(wrow(r), ws, xa.q + x0 * k, xa.blk + x0 * nb, k, res);
          emit(r, x0, 2, 4);
        }
      for (; r < r1; ++r)
        for (int64_t x0 = 0; x0 < n4; x0 += 4) {
          K::template run<1, 4>(wrow(r), ws, xa.q + x0 * k, xa.blk + x0 * nb, k, res);
          emit(r, x0, 1, 4);
        }
    }
    if (n4 < n) {  // decode (n = 1) and the last n % 4 rows of a prefill
      int64_t r = r0;
      for (; r + 4 <= r1; r += 4) {
#ifdef GRETA_AVX2
        // Decode streams the weights once: ask for the next tile while this one computes, so
        // more cache-line misses are in flight than the hardware prefetcher alone keeps.
        if (r + 12 <= r1)
          for (size_t off = 0; off < 4 * ws; off += 64)
            _mm_prefetch(reinterpret_cast<const char*>(wrow(r + 8)) + off, _MM_HINT_T0);
#endif
        for (int64_t x0 = n4; x0 < n; ++x0) {
          K::template run<4, 1>(wrow(r), ws, xa.q + x0 * k, xa.blk + x0 * nb, k, res);
          emit(r, x0, 4, 1);
        }
      }
      for (; r < r1; ++r)
        for (int64_t x0 = n4; x0 < n; ++x0) {
          K::template run<1, 1>(wrow(r), ws, xa.q + x0 * k, xa.blk + x0 * nb, k, res);
          emit(r, x0, 1, 1);
        }
    }
  });
}

}  // namespace

void matmul_quant(const QuantActs& xa, const WeightView& w, const float* bias, float* out, ThreadPool& pool) {
  switch (w.dtype) {
    case DType::Q4_1: return run_tiles<KOffset<DecQ4_1>>(xa, w, bias, out, pool);
    case DType::Q5_1: return run_tiles<KOffset<DecQ5_1>>(xa, w, bias, out, pool);
    case DType::Q8_0: return run_tiles<KSigned<DecQ8_0>>(xa, w, bias, out, pool);
    case DType::Q5_0: return run_tiles<KSigned<DecQ5_0>>(xa, w, bias, out, pool);
    case DType::Q4_0: return run_tiles<KQ4_0>(xa, w, bias, out, pool);
    case DType::Q4_K: return run_tiles<KQ45_K<BlockQ4_K>>(xa, w, bias, out, pool);
    case DType::Q5_K: return run_tiles<KQ45_K<BlockQ5_K>>(xa, w, bias, out, pool);
    case DType::Q6_K: return run_tiles<KQ6_K>(xa, w, bias, out, pool);
    default: break;
  }
  throw Error("cpu matmul: weight dtype " + std::string(dtype_name(w.dtype)) + " is not a quantized type");
}

void matmul(const float* x, int64_t n, const WeightView& w, const float* bias, float* out, Scratch& scratch,
            ThreadPool& pool) {
  if (!is_quantized(w.dtype)) return matmul_float(x, n, w, bias, out, pool);
  // Hugging Face FP8 / int4 weights run on float activations (matmul_hf_quant.cpp says why).
  if (is_hf_quant_block(w.dtype)) return matmul_hf_quant(x, n, w, bias, out, pool);
  const QuantActs xa = quantize_acts(x, n, w.n_in, scratch, pool);
  matmul_quant(xa, w, bias, out, pool);
}

}  // namespace greta::cpu
