// Bulk copies from global into shared memory (sm_90 cp.async.bulk), each completing on an
// mbarrier that counts the bytes: the weight stream of the persistent decode step.
#pragma once
#include <cstdint>

#include "backend/cuda/l2_policy.cuh"

namespace greta::cuda {

__device__ __forceinline__ uint32_t shared_addr(const void* p) { return uint32_t(__cvta_generic_to_shared(p)); }

// One arrival completes a phase of the barrier (plus the bytes its copies announce).
__device__ __forceinline__ void mbarrier_init(uint64_t* bar) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(shared_addr(bar)) : "memory");
}
// After every mbarrier_init of the block and before any other thread uses the barriers.
__device__ __forceinline__ void mbarrier_init_fence() {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}

// The calling thread's arrival on bar, announcing `bytes` that copies will bring. Its earlier
// reads of the copies' destinations (and, after a warp or block barrier, its group's) come first.
__device__ __forceinline__ void mbarrier_arrive_expect(uint64_t* bar, int bytes) {
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(shared_addr(bar)), "r"(bytes) : "memory");
}

// A copy of `bytes` (a multiple of 16, both addresses 16-byte aligned) from src to dst whose
// bytes count towards bar's announced ones, its lines kept in the L2 at `policy`'s priority (l2_policy).
__device__ __forceinline__ void bulk_copy_bytes(void* dst, const void* src, int bytes, uint64_t* bar, uint64_t policy) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%0], [%1], %2, [%3], %4;" ::
          "r"(shared_addr(dst)),
      "l"(src), "r"(bytes), "r"(shared_addr(bar)), "l"(policy)
      : "memory");
}

// One thread: copy `bytes` from src to dst and arrive on bar, whose phase completes when the
// bytes land.
__device__ __forceinline__ void bulk_copy_to_shared(void* dst, const void* src, int bytes, uint64_t* bar,
                                                    uint64_t policy) {
  mbarrier_arrive_expect(bar, bytes);
  bulk_copy_bytes(dst, src, bytes, bar, policy);
}

// As bulk_copy_to_shared, for two ranges landing on one barrier: its one arrival announces both.
__device__ __forceinline__ void bulk_copy2_to_shared(void* dst0, const void* src0, int bytes0, void* dst1,
                                                     const void* src1, int bytes1, uint64_t* bar, uint64_t policy) {
  mbarrier_arrive_expect(bar, bytes0 + bytes1);
  bulk_copy_bytes(dst0, src0, bytes0, bar, policy);
  bulk_copy_bytes(dst1, src1, bytes1, bar, policy);
}

// Waits until the barrier's phase of this parity has completed.
__device__ __forceinline__ void mbarrier_wait(uint64_t* bar, uint32_t parity) {
  uint32_t ready = 0;
  while (!ready)
    asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
                 : "=r"(ready)
                 : "r"(shared_addr(bar)), "r"(parity)
                 : "memory");
}

}  // namespace greta::cuda
