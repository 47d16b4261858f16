// The CUDA backend's device layout of packed weights (backend/cuda/quant_planes.h) is host
// arithmetic, checked here without a GPU: every format the device keeps packed holds exactly
// its blocks' bytes a row (the same bytes per weight as the file), each plane starts 256-byte
// aligned, and the planes of an [m, k] weight do not overlap.
#include <gtest/gtest.h>

#include <string>

#include "backend/cuda/quant_planes.h"
#include "core/dtype.h"

namespace greta::cuda {
namespace {

TEST(BackendQuantPlanes, SameBytesAWeightAsTheBlocks) {
  int packed = 0;
  for (int i = 0; i <= int(DType::I4_G128); ++i) {
    const auto t = DType(i);
    if (!packed_on_device(t)) continue;
    ++packed;
    const std::string name(dtype_name(t));
    for (int64_t blocks : {1, 3, 11}) {
      const int64_t k = blocks * block_elems(t);
      const size_t q = plane_q_row(t, k), hi = plane_hi_row(t, k), sc = plane_sc_row(t, k), d = plane_d_row(t, k);
      EXPECT_EQ(q + hi + sc + d, row_bytes(t, k)) << name << " k=" << k;
      for (int64_t m : {1, 7, 301}) {
        const QuantPlanes p = quant_planes(t, m, k);
        for (size_t off : {p.q, p.hi, p.sc, p.d, p.total}) EXPECT_EQ(off % 256, 0u) << name;
        EXPECT_GE(p.hi - p.q, q * size_t(m)) << name;
        EXPECT_GE(p.sc - p.hi, hi * size_t(m)) << name;
        EXPECT_GE(p.d - p.sc, sc * size_t(m)) << name;
        EXPECT_GE(p.total - p.d, d * size_t(m)) << name;
        EXPECT_LT(p.total, row_bytes(t, k) * size_t(m) + 4 * 256) << name << " m=" << m << " k=" << k;
      }
    }
  }
  // GGUF's Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K and Hugging Face's F8_B64, I4_G32/64/128.
  EXPECT_EQ(packed, 12);
}

}  // namespace
}  // namespace greta::cuda
